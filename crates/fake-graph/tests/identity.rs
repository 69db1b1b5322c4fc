//! Identity platform flows end to end (device code, auth code + PKCE over a loopback redirect, refresh
//! rotation and revocation, client credentials) and the bearer check of Graph routes.

mod common;

use base64::Engine as _;
use common::*;
use fake_graph::{FakeGraph, FakeGraphConfig, Flavour};
use serde_json::Value;
use sha2::Digest as _;
use std::time::Duration;

struct Login {
    http: reqwest::Client,
    base: String,
    tenant: String,
    client_id: String,
}

impl Login {
    fn new(g: &FakeGraph, tenant: &str) -> Login {
        Login {
            http: http(),
            base: g.login_url(),
            tenant: tenant.into(),
            client_id: g.client_id(),
        }
    }

    async fn post(&self, endpoint: &str, form: &[(&str, &str)]) -> Resp {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in form {
            ser.append_pair(k, v);
        }
        let r = self
            .http
            .post(format!("{}/{}/oauth2/v2.0/{endpoint}", self.base, self.tenant))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(ser.finish())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        Resp {
            status,
            headers,
            body: r.bytes().await.unwrap(),
        }
    }

    async fn token(&self, form: &[(&str, &str)]) -> Resp {
        let mut f = vec![("client_id", self.client_id.as_str())];
        f.extend_from_slice(form);
        self.post("token", &f).await
    }
}

/// Identity error body: `error`, `error_codes`, and the other fields of the identity platform's error body.
fn aad(r: &Resp) -> (String, Option<u64>) {
    let v = r.json();
    for k in ["error_description", "timestamp", "trace_id", "correlation_id"] {
        assert!(v[k].is_string(), "{k} missing in {v}");
    }
    let code = v["error_codes"][0].as_u64();
    if let Some(c) = code {
        assert!(v["error_description"]
            .as_str()
            .unwrap()
            .starts_with(&format!("AADSTS{c}:")));
        assert_eq!(
            v["error_uri"],
            format!("https://login.microsoftonline.com/error?code={c}")
        );
    }
    (v["error"].as_str().unwrap().to_string(), code)
}

async fn graph_status(g: &FakeGraph, token: &str, path: &str) -> Resp {
    let api = Api {
        http: http(),
        graph: g.graph_url(),
        token: Some(token.into()),
    };
    api.get(path).await
}

#[tokio::test]
async fn device_code_flow() {
    let mut cfg = FakeGraphConfig::for_flavour(Flavour::Business);
    cfg.device_code_interval = 1;
    let (g, _) = start(cfg).await;
    let login = Login::new(&g, "organizations");
    let r = login
        .post(
            "devicecode",
            &[
                ("client_id", &g.client_id()),
                ("scope", "Files.ReadWrite.All offline_access openid"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let dc = r.json();
    for k in ["device_code", "user_code", "verification_uri", "message"] {
        assert!(dc[k].is_string(), "{k}");
    }
    assert_eq!(dc["interval"], 1);
    assert_eq!(dc["expires_in"], 900);
    assert!(dc.get("verification_uri_complete").is_none());
    let user_code = dc["user_code"].as_str().unwrap();
    assert!(dc["message"].as_str().unwrap().contains(user_code));
    let device_code = dc["device_code"].as_str().unwrap();
    let grant = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", device_code),
    ];
    let r = login.token(&grant).await;
    assert_eq!(r.status, 400);
    assert_eq!(aad(&r), ("authorization_pending".into(), Some(70016)));
    // slow_down can be injected (A23).
    g.faults().slow_down_next(1);
    assert_eq!(aad(&login.token(&grant).await).0, "slow_down");
    assert_eq!(g.pending_device_codes(), vec![user_code.to_string()]);
    assert!(g.approve_device_code(&user_code.to_lowercase()));
    // Forced extra pending answers even after approval.
    g.faults().authorization_pending_next(1);
    assert_eq!(aad(&login.token(&grant).await).0, "authorization_pending");
    let r = login.token(&grant).await;
    assert_eq!(r.status, 200, "{r:?}");
    let t = r.json();
    assert_eq!(t["token_type"], "Bearer");
    assert!(t["expires_in"].as_u64().unwrap() > 3000);
    assert!(t["refresh_token"].is_string() && t["id_token"].is_string());
    assert!(t["scope"]
        .as_str()
        .unwrap()
        .contains("https://graph.microsoft.com/Files.ReadWrite.All"));
    let access = t["access_token"].as_str().unwrap();
    assert_eq!(graph_status(&g, access, "/me/drive").await.status, 200);
    // A device code is single use.
    assert_eq!(aad(&login.token(&grant).await).0, "invalid_grant");
    // Decline and expiry.
    let dc2 = login
        .post("devicecode", &[("client_id", &g.client_id()), ("scope", "Files.Read")])
        .await
        .json();
    assert!(g.decline_device_code(dc2["user_code"].as_str().unwrap()));
    let r = login
        .token(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", dc2["device_code"].as_str().unwrap()),
        ])
        .await;
    assert_eq!(aad(&r).0, "authorization_declined");
    let dc3 = login
        .post("devicecode", &[("client_id", &g.client_id()), ("scope", "Files.Read")])
        .await
        .json();
    g.faults().expire_device_codes();
    let r = login
        .token(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", dc3["device_code"].as_str().unwrap()),
        ])
        .await;
    assert_eq!(aad(&r), ("expired_token".into(), Some(70019)));
    // Without offline_access there is no refresh token.
    let dc4 = login
        .post("devicecode", &[("client_id", &g.client_id()), ("scope", "Files.Read")])
        .await
        .json();
    assert_eq!(g.approve_all_device_codes(), 1);
    let r = login
        .token(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", dc4["device_code"].as_str().unwrap()),
        ])
        .await;
    assert!(r.json().get("refresh_token").is_none());
    // The approval page works for humans too.
    let dc5 = login
        .post("devicecode", &[("client_id", &g.client_id()), ("scope", "Files.Read")])
        .await
        .json();
    let page = http()
        .get(format!(
            "{}?otc={}",
            dc5["verification_uri"].as_str().unwrap(),
            dc5["user_code"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert!(page.text().await.unwrap().contains("signed in"));
    assert!(g.pending_device_codes().is_empty());
}

/// A one-shot loopback HTTP listener that captures the request line of the redirect.
async fn loopback() -> (String, tokio::task::JoinHandle<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let h = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        let n = s.read(&mut buf).await.unwrap();
        let req = String::from_utf8_lossy(&buf[..n]).into_owned();
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .await
            .unwrap();
        req.lines().next().unwrap_or_default().to_string()
    });
    (format!("http://127.0.0.1:{port}/callback"), h)
}

fn query_param(url_or_line: &str, name: &str) -> Option<String> {
    let q = url_or_line.split_once('?')?.1.split_whitespace().next()?;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[tokio::test]
async fn auth_code_with_pkce_over_loopback() {
    let (g, _) = business().await;
    let login = Login::new(&g, "common");
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-extra-chars";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let (redirect, captured) = loopback().await;
    let authorize = |redirect: &str, challenge: &str| {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        ser.append_pair("client_id", &g.client_id());
        ser.append_pair("response_type", "code");
        ser.append_pair("redirect_uri", redirect);
        ser.append_pair("response_mode", "query");
        ser.append_pair("scope", "Files.ReadWrite.All offline_access");
        ser.append_pair("state", "st4te/+=");
        ser.append_pair("code_challenge", challenge);
        ser.append_pair("code_challenge_method", "S256");
        format!("{}/common/oauth2/v2.0/authorize?{}", g.login_url(), ser.finish())
    };
    // The browser step: a plain GET that follows the redirect to the loopback listener.
    let follower = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = follower.get(authorize(&redirect, &challenge)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let line = captured.await.unwrap();
    assert!(line.starts_with("GET /callback?"), "{line}");
    let code = query_param(&line, "code").expect("code");
    assert_eq!(query_param(&line, "state").unwrap(), "st4te/+=");
    // Redeem: wrong verifier → invalid_grant 501481 (and the code is burnt).
    let base = [
        ("grant_type", "authorization_code"),
        ("redirect_uri", redirect.as_str()),
    ];
    let mut wrong = base.to_vec();
    wrong.extend([
        ("code", code.as_str()),
        ("code_verifier", "not-the-verifier-not-the-verifier-not-the-ver"),
    ]);
    assert_eq!(aad(&login.token(&wrong).await), ("invalid_grant".into(), Some(501481)));
    // A fresh code; redeem correctly; reuse → 54005; different redirect → 50011.
    let r = http().get(authorize(&redirect, &challenge)).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.starts_with(&redirect));
    let code = query_param(&loc, "code").unwrap();
    let mut other = base.to_vec();
    other[1] = ("redirect_uri", "http://localhost:1/other");
    other.extend([("code", code.as_str()), ("code_verifier", verifier)]);
    assert_eq!(aad(&login.token(&other).await).1, Some(50011));
    let mut good = base.to_vec();
    good.extend([("code", code.as_str()), ("code_verifier", verifier)]);
    let r = login.token(&good).await;
    assert_eq!(r.status, 200, "{r:?}");
    let t = r.json();
    assert!(t["refresh_token"].is_string());
    assert_eq!(
        graph_status(&g, t["access_token"].as_str().unwrap(), "/me")
            .await
            .status,
        200
    );
    assert_eq!(aad(&login.token(&good).await), ("invalid_grant".into(), Some(54005)));
    // Missing verifier when a challenge was given.
    let r = http().get(authorize(&redirect, &challenge)).send().await.unwrap();
    let code = query_param(r.headers()["location"].to_str().unwrap(), "code").unwrap();
    let mut missing = base.to_vec();
    missing.push(("code", code.as_str()));
    assert_eq!(
        aad(&login.token(&missing).await),
        ("invalid_request".into(), Some(900144))
    );
    // Non-loopback redirect → error page, no redirect.
    let r = http()
        .get(authorize("https://evil.example/cb", &challenge))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("AADSTS50011"));
    // The user refuses → redirect with error=access_denied and the state.
    g.faults().deny_next_authorize(1);
    let r = http().get(authorize(&redirect, &challenge)).send().await.unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(query_param(&loc, "error").unwrap(), "access_denied");
    assert_eq!(query_param(&loc, "state").unwrap(), "st4te/+=");
    assert!(query_param(&loc, "code").is_none());
}

#[tokio::test]
async fn refresh_rotation_and_revocation() {
    let (g, _) = business().await;
    let login = Login::new(&g, &g.tenant_id());
    let (_, rt1) = g.issue_tokens();
    let refresh = |rt: String| {
        [
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", rt),
            ("scope", "Files.ReadWrite.All offline_access".into()),
        ]
    };
    let form = |f: &[(&'static str, String)]| f.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>();
    let send = |f: Vec<(&'static str, String)>| {
        let login = &login;
        async move {
            let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
            login.token(&pairs).await
        }
    };
    let r = send(form(&refresh(rt1.clone()))).await;
    assert_eq!(r.status, 200, "{r:?}");
    let t = r.json();
    let rt2 = t["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt2, rt1, "a new refresh token is issued");
    assert_eq!(
        graph_status(&g, t["access_token"].as_str().unwrap(), "/me/drive")
            .await
            .status,
        200
    );
    // Rotation: the old refresh token is single use.
    let r = send(form(&refresh(rt1))).await;
    assert_eq!(aad(&r), ("invalid_grant".into(), Some(70008)));
    // The new one works (and is rotated again).
    let r = send(form(&refresh(rt2.clone()))).await;
    assert_eq!(r.status, 200);
    let rt3 = r.json()["refresh_token"].as_str().unwrap().to_string();
    // Revocation with a chosen AADSTS code.
    g.faults().revoke_refresh_tokens(700082);
    let r = send(form(&refresh(rt3))).await;
    assert_eq!(r.status, 400);
    assert_eq!(aad(&r), ("invalid_grant".into(), Some(700082)));
    let (_, fresh) = g.issue_tokens();
    g.faults().revoke_refresh_tokens(50076);
    assert_eq!(
        aad(&send(form(&refresh(fresh))).await),
        ("interaction_required".into(), Some(50076))
    );
    // Unknown refresh token.
    assert_eq!(
        aad(&send(form(&refresh("M.C5garbage".into()))).await).0,
        "invalid_grant"
    );

    // Lenient rotation: the old token stays valid.
    let mut cfg = FakeGraphConfig::for_flavour(Flavour::Personal);
    cfg.strict_refresh_rotation = false;
    let (g2, _) = start(cfg).await;
    let login2 = Login::new(&g2, "consumers");
    let (_, rt) = g2.issue_tokens();
    for _ in 0..2 {
        let r = login2
            .token(&[("grant_type", "refresh_token"), ("refresh_token", &rt)])
            .await;
        assert_eq!(r.status, 200);
    }
}

#[tokio::test]
async fn client_credentials_and_app_only_access() {
    let (g, _) = business().await;
    let login = Login::new(&g, &g.tenant_id());
    let secret = g.client_secret();
    let scope = "https://graph.microsoft.com/.default";
    let r = login
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_secret", &secret),
            ("scope", scope),
        ])
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let t = r.json();
    assert!(t.get("refresh_token").is_none());
    assert_eq!(t["token_type"], "Bearer");
    let at = t["access_token"].as_str().unwrap();
    let r = graph_status(&g, at, "/me/drive").await;
    assert_eq!((r.status, r.code().as_str()), (400, "BadRequest"));
    let upn = g.config().user_principal_name;
    assert_eq!(
        graph_status(&g, at, &format!("/users/{}/drive", enc(&upn)))
            .await
            .status,
        200
    );
    assert_eq!(graph_status(&g, at, "/sites/root/drives").await.status, 200);
    // Errors.
    let r = login
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_secret", "wrong"),
            ("scope", scope),
        ])
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(aad(&r), ("invalid_client".into(), Some(7000215)));
    let r = login
        .token(&[("grant_type", "client_credentials"), ("scope", scope)])
        .await;
    assert_eq!(aad(&r), ("invalid_client".into(), Some(7000216)));
    let r = login
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_secret", &secret),
            ("scope", "Files.Read.All"),
        ])
        .await;
    assert_eq!(aad(&r), ("invalid_scope".into(), Some(1002012)));
    let common = Login::new(&g, "common");
    let r = common
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_secret", &secret),
            ("scope", scope),
        ])
        .await;
    assert_eq!(aad(&r).1, Some(9001023));
    // Unknown client, tenant, grant; missing parameter.
    let r = login
        .post(
            "token",
            &[
                ("client_id", "00000000-0000-0000-0000-000000000000"),
                ("grant_type", "client_credentials"),
            ],
        )
        .await;
    assert_eq!(aad(&r), ("unauthorized_client".into(), Some(700016)));
    let r = Login::new(&g, "nosuchtenant.example")
        .token(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        .await;
    assert_eq!(aad(&r), ("invalid_request".into(), Some(90002)));
    let r = login.token(&[("grant_type", "password")]).await;
    assert_eq!(aad(&r), ("unsupported_grant_type".into(), Some(70003)));
    let r = login.token(&[("grant_type", "refresh_token")]).await;
    assert_eq!(aad(&r), ("invalid_request".into(), Some(900144)));
}

#[tokio::test]
async fn bearer_checks_and_token_expiry() {
    let mut cfg = FakeGraphConfig::for_flavour(Flavour::Business);
    cfg.token_lifetime = Duration::from_secs(2);
    let (g, api) = start(cfg).await;
    assert_eq!(api.get("/me/drive").await.status, 200);
    // Missing header.
    let r = anon(&api).get("/me/drive").await;
    assert_eq!((r.status, r.code().as_str()), (401, "InvalidAuthenticationToken"));
    assert_eq!(r.json()["error"]["message"], "Access token is empty.");
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    // Unknown token.
    let bad = Api {
        http: http(),
        graph: g.graph_url(),
        token: Some("nope".into()),
    };
    let r = bad.get("/me/drive").await;
    assert_eq!(
        r.json()["error"]["message"],
        "Access token has expired or is not yet valid."
    );
    // Expiry by lifetime.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = api.get("/me/drive").await;
    assert_eq!((r.status, r.code().as_str()), (401, "InvalidAuthenticationToken"));
    // The token endpoint reports the configured lifetime.
    let login = Login::new(&g, "common");
    let (_, rt) = g.issue_tokens();
    let t = login
        .token(&[("grant_type", "refresh_token"), ("refresh_token", &rt)])
        .await
        .json();
    assert_eq!(t["expires_in"], 2);
    // Knob: expire every access token now.
    let mut cfg = FakeGraphConfig::for_flavour(Flavour::Business);
    cfg.token_lifetime = Duration::from_secs(3600);
    let (g, api) = start(cfg).await;
    assert_eq!(api.get("/me").await.status, 200);
    g.faults().expire_access_tokens();
    assert_eq!(api.get("/me").await.status, 401);
    // Pre-authenticated URLs do not care.
    g.drive().put_file("/f.txt", &b"x"[..]).unwrap();
    let (fresh, _) = g.issue_tokens();
    let api = Api {
        http: http(),
        graph: g.graph_url(),
        token: Some(fresh),
    };
    let url = api.get_ok("/me/drive/root:/f.txt").await["@microsoft.graph.downloadUrl"]
        .as_str()
        .unwrap()
        .to_string();
    g.faults().expire_access_tokens();
    assert_eq!(anon(&api).get(&url).await.status, 200);
}

#[tokio::test]
async fn delegated_scopes_are_enforced() {
    let (g, _) = business().await;
    let with = |scopes: &str| Api {
        http: http(),
        graph: g.graph_url(),
        token: Some(g.issue_tokens_with_scopes(scopes).0),
    };
    let read_only = with("Files.Read");
    assert_eq!(read_only.get("/me/drive/root").await.status, 200);
    let r = read_only.put("/me/drive/root:/x.txt:/content", b"x").await;
    assert_eq!((r.status, r.code().as_str()), (403, "accessDenied"));
    // Libraries of other sites need *.All; site lookups need Sites.*.
    let lib = g.library("/sites/eng", "Documents").unwrap().id();
    assert_eq!(read_only.get(&format!("/drives/{}/root", enc(&lib))).await.status, 403);
    let files_all = with("Files.ReadWrite.All");
    assert_eq!(files_all.get(&format!("/drives/{}/root", enc(&lib))).await.status, 200);
    assert_eq!(files_all.get("/sites/root").await.status, 403);
    let sites = with("Files.ReadWrite.All Sites.Read.All");
    assert_eq!(sites.get("/sites/contoso.sharepoint.com:/sites/eng").await.status, 200);
    let v: Value = sites.get_ok("/sites/root/drives").await;
    assert_eq!(v["value"].as_array().unwrap().len(), 1);
}
