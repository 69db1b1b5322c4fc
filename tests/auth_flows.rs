//! The OAuth flows, the token store and the refreshing token source against the fake Graph and
//! identity server, over HTTP. Waits are on conditions with generous timeouts (a loaded 2-core box).

use cloudmount::fuse::ToErrno;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use cloudmount::auth::device::DevicePrompt;
use cloudmount::auth::{
    login, AuthState, Flow, LoginError, LoginUi, OAuthConfig, OAuthTokenSource, Secret, SecretSource, StoredTokens,
    TokenSource, TokenStore,
};
use cloudmount::error::RemoteError;
use cloudmount::http::{HttpClient, HttpConfig, RetryPolicy};
use fake_graph::{FakeGraph, FakeGraphConfig, RouteClass};
use tokio::sync::mpsc;

/// Log lines of every test in this binary (a global subscriber: the refresher logs from its task).
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        struct W(&'static Mutex<Vec<u8>>);
        impl std::io::Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sub = tracing_subscriber::fmt()
            .with_env_filter("cloudmount=info")
            .with_ansi(false)
            .with_writer(move || W(buf))
            .finish();
        let _ = tracing::subscriber::set_global_default(sub);
        buf
    })
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

async fn fake(lifetime: Duration) -> FakeGraph {
    FakeGraph::start(FakeGraphConfig {
        token_lifetime: lifetime,
        device_code_interval: 1,
        ..Default::default()
    })
    .await
}

fn http() -> HttpClient {
    HttpClient::new(HttpConfig {
        policy: RetryPolicy {
            deadline: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(5),
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        },
        ..Default::default()
    })
    .unwrap()
}

fn oauth(g: &FakeGraph, remote: &str, flow: Flow) -> OAuthConfig {
    let mut c = OAuthConfig::new(remote);
    c.login_url = g.login_url().parse().unwrap();
    c.graph_url = g.graph_url().parse().unwrap();
    c.client_id = g.client_id();
    c.flow = flow;
    if flow == Flow::ClientCredentials {
        c.tenant = g.tenant_id();
    }
    c
}

/// A UI whose device prompt sends the user code down a channel and whose "browser" is `open`.
fn test_ui(open: impl Fn(&str) + Send + Sync + 'static) -> (LoginUi, mpsc::UnboundedReceiver<DevicePrompt>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        LoginUi {
            device_prompt: Box::new(move |p| {
                let _ = tx.send(p.clone());
            }),
            open_browser: Box::new(open),
            browser_wait: Duration::from_secs(60),
        },
        rx,
    )
}

/// Status of `GET /me/drive` with `token` (401 = expired or unknown token).
async fn graph_status(g: &FakeGraph, path: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{}{path}", g.graph_url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Store a delegated token pair issued by the fake (skipping the sign-in).
fn seed_store(g: &FakeGraph, cfg: &OAuthConfig, store: &TokenStore) -> (String, String) {
    let (at, rt) = g.issue_tokens();
    let t = StoredTokens::new(
        Flow::Device,
        &cfg.client_id,
        &cfg.endpoint("token"),
        &cfg.scopes,
        Secret::new(at.clone()),
        SystemTime::now(),
        g.config().token_lifetime,
        Some(Secret::new(rt.clone())),
    );
    store.save(&t).unwrap();
    (at, rt)
}

fn stored(store: &TokenStore) -> StoredTokens {
    store.load().unwrap().unwrap().0
}

async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Run a device-code login in the background and approve it from "the user's phone".
async fn device_login_approved(g: &FakeGraph, cfg: &OAuthConfig, store: &TokenStore) -> StoredTokens {
    let (ui, mut prompts) = test_ui(|_| {});
    let (cfg2, store2, http) = (cfg.clone(), store.clone(), http());
    let task = tokio::spawn(async move { login(&cfg2, &http, &store2, &ui).await });
    let p = tokio::time::timeout(Duration::from_secs(30), prompts.recv())
        .await
        .expect("device prompt")
        .unwrap();
    assert!(p.verification_uri.ends_with("/devicelogin"), "{p:?}");
    assert!(g.approve_device_code(&p.user_code));
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("device login finishes")
        .unwrap()
        .expect("device login succeeds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_end_to_end_with_pending_polls() {
    let g = fake(Duration::from_secs(3599)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = oauth(&g, "dev", Flow::Device);
    let store = TokenStore::new(dir.path(), "dev").unwrap();
    g.faults().authorization_pending_next(3);
    let started = Instant::now();
    let tokens = device_login_approved(&g, &cfg, &store).await;
    // devicecode + 3 forced `authorization_pending` + the successful poll (+ pending polls before
    // the approval landed), each at least `interval` (1 s) apart.
    let polls = g.stats().count(RouteClass::Token) - 1;
    assert!(polls >= 4, "polls: {polls}");
    assert!(started.elapsed() >= Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(tokens.refresh_token.is_some());
    assert_eq!(stored(&store), tokens);
    assert_eq!(mode(store.path()), 0o600);
    assert_eq!(graph_status(&g, "/me/drive", tokens.access_token.expose()).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_slow_down_raises_the_interval() {
    let g = fake(Duration::from_secs(3599)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = oauth(&g, "slow", Flow::Device);
    let store = TokenStore::new(dir.path(), "slow").unwrap();
    g.faults().slow_down_next(1);
    let started = Instant::now();
    device_login_approved(&g, &cfg, &store).await;
    // First poll: slow_down, so the interval goes from 1 s to 6 s; the next poll succeeds.
    assert!(
        started.elapsed() >= Duration::from_millis(5500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        g.stats().count(RouteClass::Token),
        3,
        "devicecode + slow_down poll + success"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_declined_and_expired() {
    let g = fake(Duration::from_secs(3599)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = oauth(&g, "no", Flow::Device);
    let store = TokenStore::new(dir.path(), "no").unwrap();
    for decline in [true, false] {
        let (ui, mut prompts) = test_ui(|_| {});
        let (cfg2, store2, http) = (cfg.clone(), store.clone(), http());
        let task = tokio::spawn(async move { login(&cfg2, &http, &store2, &ui).await });
        let p = prompts.recv().await.unwrap();
        if decline {
            assert!(g.decline_device_code(&p.user_code));
        } else {
            g.faults().expire_device_codes();
        }
        let err = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        if decline {
            assert!(matches!(err, LoginError::Declined), "{err:?}");
        } else {
            assert!(matches!(err, LoginError::Expired), "{err:?}");
        }
    }
    assert!(store.load().unwrap().is_none());
}

/// The "browser": follows the authorize URL (the fake auto-approves and redirects to our listener).
fn follow_browser() -> impl Fn(&str) + Send + Sync + 'static {
    |url: &str| {
        let url = url.to_string();
        assert!(url.contains("code_challenge_method=S256"), "{url}");
        assert!(url.contains("state="), "{url}");
        tokio::spawn(async move {
            let _ = reqwest::Client::new().get(url).send().await;
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkce_end_to_end() {
    let g = fake(Duration::from_secs(3599)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = oauth(&g, "web", Flow::Browser);
    let store = TokenStore::new(dir.path(), "web").unwrap();
    let (ui, _) = test_ui(follow_browser());
    let tokens = login(&cfg, &http(), &store, &ui).await.unwrap();
    assert!(tokens.refresh_token.is_some());
    assert_eq!(mode(store.path()), 0o600);
    assert_eq!(graph_status(&g, "/me/drive", tokens.access_token.expose()).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkce_rejects_a_wrong_state_and_a_refusal() {
    let g = fake(Duration::from_secs(3599)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = oauth(&g, "web2", Flow::Browser);
    let store = TokenStore::new(dir.path(), "web2").unwrap();
    // A forged redirect: the real code, someone else's state.
    let (ui, _) = test_ui(|url: &str| {
        let url = url.to_string();
        tokio::spawn(async move {
            let no_redirect = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let resp = no_redirect.get(url).send().await.unwrap();
            let loc = resp.headers()["location"].to_str().unwrap().to_string();
            let mut forged = url::Url::parse(&loc).unwrap();
            let pairs: Vec<(String, String)> = forged
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "state" { "forged".into() } else { v.into_owned() };
                    (k.into_owned(), v)
                })
                .collect();
            forged.query_pairs_mut().clear().extend_pairs(pairs);
            let _ = reqwest::Client::new().get(forged).send().await;
        });
    });
    let err = login(&cfg, &http(), &store, &ui).await.unwrap_err();
    assert!(matches!(err, LoginError::StateMismatch), "{err:?}");
    g.faults().deny_next_authorize(1);
    let (ui, _) = test_ui(follow_browser());
    let err = login(&cfg, &http(), &store, &ui).await.unwrap_err();
    assert!(matches!(err, LoginError::Declined), "{err:?}");
    assert!(store.load().unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_end_to_end() {
    let g = fake(Duration::from_secs(3599)).await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{}\n", g.client_secret())).unwrap();
    let mut cfg = oauth(&g, "app", Flow::ClientCredentials);
    cfg.client_secret = Some(SecretSource::File(secret_file));
    let store = TokenStore::new(dir.path(), "app").unwrap();
    let (ui, _) = test_ui(|_| {});
    let tokens = login(&cfg, &http(), &store, &ui).await.unwrap();
    assert!(tokens.refresh_token.is_none());
    let drive = &g.drives()[0].id;
    assert_eq!(
        graph_status(&g, &format!("/drives/{drive}"), tokens.access_token.expose()).await,
        200
    );
    // The source asks for a new app token when the old one is rejected.
    let src = OAuthTokenSource::new(cfg.clone(), store.clone(), http()).unwrap();
    let at1 = src.access_token().await.unwrap();
    assert_eq!(at1, tokens.access_token.expose());
    g.faults().expire_access_tokens();
    let at2 = src.token_rejected(&at1).await.unwrap();
    assert_ne!(at1, at2);
    assert_eq!(graph_status(&g, &format!("/drives/{drive}"), &at2).await, 200);
    // A wrong secret from the environment is `invalid_client`: sign-in needed.
    std::env::set_var("CLOUDMOUNT_TEST_BAD_SECRET", "wrong");
    cfg.client_secret = Some(SecretSource::Env("CLOUDMOUNT_TEST_BAD_SECRET".into()));
    let (ui, _) = test_ui(|_| {});
    let err = login(&cfg, &http(), &TokenStore::new(dir.path(), "bad").unwrap(), &ui)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid_client"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_ahead_of_expiry_with_5s_tokens() {
    let g = fake(Duration::from_secs(5)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = oauth(&g, "short", Flow::Device);
    let store = TokenStore::new(dir.path(), "short").unwrap();
    let (_, rt0) = seed_store(&g, &cfg, &store);
    let src = OAuthTokenSource::new(cfg, store.clone(), http()).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let end = Instant::now() + Duration::from_secs(12);
    while Instant::now() < end {
        let at = src.access_token().await.unwrap();
        // The fake answers 401 to an expired token: none may be handed out.
        assert_eq!(
            graph_status(&g, "/me/drive", &at).await,
            200,
            "an expired token was handed out"
        );
        seen.insert(at);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen.len() >= 2, "the token never changed");
    // Renewal does not wait for callers: with nobody asking, the stored token still changes
    // before the current one expires.
    let before = stored(&store);
    let s = store.clone();
    let expires = before.expires_at_ms;
    wait_until("a renewal without callers", Duration::from_secs(15), move || {
        stored(&s).access_token != before.access_token
    })
    .await;
    assert!(stored(&store).obtained_at_ms < expires, "renewed only after expiry");
    let on_disk = stored(&store);
    assert_ne!(on_disk.refresh_token.as_ref().unwrap().expose(), rt0);
    assert_eq!(mode(store.path()), 0o600);
    assert!(
        g.stats().recent.iter().all(|r| r.status != 401),
        "a request was refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rejections_share_one_refresh() {
    let g = fake(Duration::from_secs(3599)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = oauth(&g, "many", Flow::Device);
    let store = TokenStore::new(dir.path(), "many").unwrap();
    seed_store(&g, &cfg, &store);
    let (src, _state) = OAuthTokenSource::from_store(&cfg, dir.path(), http()).unwrap();
    let at = src.access_token().await.unwrap();
    g.faults().expire_access_tokens();
    let before = g.stats().count(RouteClass::Token);
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let (src, at) = (src.clone(), at.clone());
            tokio::spawn(async move { src.token_rejected(&at).await.unwrap() })
        })
        .collect();
    let mut got = std::collections::BTreeSet::new();
    for c in calls {
        got.insert(c.await.unwrap());
    }
    assert_eq!(got.len(), 1, "every caller gets the one new token");
    assert!(!got.contains(&at));
    assert_eq!(
        g.stats().count(RouteClass::Token) - before,
        1,
        "one refresh for one rejected token"
    );
    // A caller reporting the old token late gets the new one without another refresh.
    let late = src.token_rejected(&at).await.unwrap();
    assert!(got.contains(&late));
    assert_eq!(g.stats().count(RouteClass::Token) - before, 1);
    // Rejecting the new token refreshes again.
    let newer = src.token_rejected(&late).await.unwrap();
    assert_ne!(newer, late);
    assert_eq!(g.stats().count(RouteClass::Token) - before, 2);
    assert_eq!(graph_status(&g, "/me/drive", &newer).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_survives_a_restart() {
    let g = fake(Duration::from_secs(5)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = oauth(&g, "rot", Flow::Device);
    let store = TokenStore::new(dir.path(), "rot").unwrap();
    let (_, rt0) = seed_store(&g, &cfg, &store);
    {
        let (src, _state) = OAuthTokenSource::from_store(&cfg, dir.path(), http()).unwrap();
        src.access_token().await.unwrap();
        let s = store.clone();
        wait_until("a rotated refresh token on disk", Duration::from_secs(30), move || {
            stored(&s).refresh_token.unwrap().expose() != rt0
        })
        .await;
    }
    let rt1 = stored(&store).refresh_token.unwrap();
    let (src, state) = OAuthTokenSource::from_store(&cfg, dir.path(), http()).unwrap();
    let at = src.access_token().await.unwrap();
    assert_eq!(graph_status(&g, "/me/drive", &at).await, 200);
    // Force a refresh: it must redeem the refresh token that is on disk (strict rotation would
    // refuse the old one).
    let at2 = src.token_rejected(&at).await.unwrap();
    assert_ne!(at, at2);
    assert_eq!(graph_status(&g, "/me/drive", &at2).await, 200);
    assert_eq!(state.get(), AuthState::Ok);
    assert_ne!(stored(&store).refresh_token.unwrap(), rt1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_needs_login_and_a_new_login_recovers_the_same_source() {
    logs();
    let g = fake(Duration::from_secs(3599)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = oauth(&g, "revoked-remote", Flow::Device);
    let store = TokenStore::new(dir.path(), "revoked-remote").unwrap();
    seed_store(&g, &cfg, &store);
    let (src, mut state) = OAuthTokenSource::from_store(&cfg, dir.path(), http()).unwrap();
    let at = src.access_token().await.unwrap();
    g.faults().revoke_refresh_tokens(50173);
    g.faults().expire_access_tokens();
    assert_eq!(graph_status(&g, "/me/drive", &at).await, 401);
    let err = src.token_rejected(&at).await.unwrap_err();
    assert!(matches!(err, RemoteError::Unauthorized(_)), "{err:?}");
    assert_eq!(err.errno(), libc::EACCES);
    assert!(
        err.to_string().contains("cloudmount login onedrive revoked-remote"),
        "{err}"
    );
    match state.get() {
        AuthState::LoginNeeded { command, reason } => {
            assert_eq!(command, "cloudmount login onedrive revoked-remote");
            assert!(reason.contains("invalid_grant") && reason.contains("50173"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // Further calls fail the same way without asking the server, and the log says it once.
    let before = g.stats().count(RouteClass::Token);
    for _ in 0..3 {
        assert!(matches!(src.access_token().await, Err(RemoteError::Unauthorized(_))));
    }
    assert_eq!(g.stats().count(RouteClass::Token), before);
    let logged = log_text()
        .matches("run `cloudmount login onedrive revoked-remote`")
        .count();
    assert_eq!(logged, 1, "{}", log_text());
    // The person signs in again (another process, same store): the same source recovers.
    device_login_approved(&g, &cfg, &store).await;
    let at2 = src.access_token().await.unwrap();
    assert_eq!(graph_status(&g, "/me/drive", &at2).await, 200);
    state.wait_for(|s| *s == AuthState::Ok).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresher_notices_interaction_required_without_callers() {
    let g = fake(Duration::from_secs(5)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = oauth(&g, "mfa", Flow::Browser);
    let store = TokenStore::new(dir.path(), "mfa").unwrap();
    seed_store(&g, &cfg, &store);
    let (src, mut state) = OAuthTokenSource::from_store(&cfg, dir.path(), http()).unwrap();
    g.faults().revoke_refresh_tokens(50076);
    let s = tokio::time::timeout(
        Duration::from_secs(30),
        state.wait_for(|s| matches!(s, AuthState::LoginNeeded { .. })),
    )
    .await
    .expect("login needed");
    assert_eq!(
        s,
        AuthState::LoginNeeded {
            command: "cloudmount login onedrive mfa --browser".into(),
            reason: "interaction_required (AADSTS50076)".into(),
        }
    );
    assert!(matches!(src.access_token().await, Err(RemoteError::Unauthorized(_))));
    // What `status` shows, also after a round trip through a status file.
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<AuthState>(&json).unwrap(), s);
    assert_eq!(
        s.summary(),
        "sign-in needed (interaction_required (AADSTS50076)): run `cloudmount login onedrive mfa --browser`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_5xx_is_retried_and_never_means_login() {
    let g = fake(Duration::from_secs(3599)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = oauth(&g, "flaky", Flow::Device);
    let store = TokenStore::new(dir.path(), "flaky").unwrap();
    seed_store(&g, &cfg, &store);
    let (src, state) = OAuthTokenSource::from_store(&cfg, dir.path(), http()).unwrap();
    let mut watcher = state.clone();
    let saw_login = tokio::spawn(async move {
        watcher.wait_for(|s| matches!(s, AuthState::LoginNeeded { .. })).await;
    });
    let at = src.access_token().await.unwrap();
    g.faults().fail_next(RouteClass::Token, 3, 500);
    g.faults().fail_next(RouteClass::Token, 1, 503);
    let at2 = src.token_rejected(&at).await.unwrap();
    assert_ne!(at, at2);
    assert!(g.stats().injected_failures >= 4);
    assert_eq!(state.get(), AuthState::Ok);
    assert!(!saw_login.is_finished());
    saw_login.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_token_endpoint_is_transient() {
    let g = fake(Duration::from_secs(3599)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = oauth(&g, "down", Flow::Device);
    let store = TokenStore::new(dir.path(), "down").unwrap();
    seed_store(&g, &cfg, &store);
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    cfg.login_url = format!("http://127.0.0.1:{port}").parse().unwrap();
    let short = HttpClient::new(HttpConfig {
        policy: RetryPolicy {
            deadline: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
        },
        ..Default::default()
    })
    .unwrap();
    let (src, mut state) = OAuthTokenSource::from_store(&cfg, dir.path(), short).unwrap();
    let at = src.access_token().await.unwrap();
    let err = src.token_rejected(&at).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(!matches!(err, RemoteError::Unauthorized(_)));
    let s = state.wait_for(|s| matches!(s, AuthState::Retrying { .. })).await;
    assert!(!state.login_needed(), "{s:?}");
    // The token it still has keeps being served.
    assert_eq!(src.access_token().await.unwrap(), at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_debug_output() {
    let g = fake(Duration::from_secs(3599)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = oauth(&g, "dbg", Flow::Device);
    let store = TokenStore::new(dir.path(), "dbg").unwrap();
    let (at, rt) = seed_store(&g, &cfg, &store);
    let (src, state) = OAuthTokenSource::from_store(&cfg, dir.path(), http()).unwrap();
    let tokens = stored(&store);
    let text = format!(
        "{tokens:?} {store:?} {cfg:?} {:?} {:?} {}",
        state.get(),
        Secret::new(at.clone()),
        Secret::new(rt.clone())
    );
    let src_dbg = format!("{:?}", src.access_token().await.map(|_| ()));
    for s in [&text, &src_dbg] {
        assert!(!s.contains(&at) && !s.contains(&rt), "{s}");
    }
    assert_eq!(mode(store.path()), 0o600);
    assert_eq!(mode(store.path().parent().unwrap()), 0o700);
    assert!(!log_text().contains(&at) && !log_text().contains(&rt));
}

/// Run `cloudmount login onedrive ARGS`, approving the device code it prints (if any).
/// Returns (success, stdout, stderr).
fn run_cli_login(g: &FakeGraph, args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cloudmount"))
        .args(["login", "onedrive"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 {
        printed.push_str(&line);
        if let Some(rest) = line.split("enter the code ").nth(1) {
            let code = rest.split_whitespace().next().unwrap();
            assert!(g.approve_device_code(code), "{printed}");
        }
        line.clear();
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.success(), printed, err)
}

/// `cloudmount login onedrive NAME` as a user runs it: device code, approved by reading the code
/// the command prints; then again for the same remote, which only renews its tokens.
#[test]
fn cli_login_device_code() {
    let g = FakeGraph::spawn(FakeGraphConfig {
        device_code_interval: 1,
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("conf/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "[remotes.nas]\ntype = \"webdav\"\nurl = \"http://nas/dav/\"\n").unwrap();
    let state_dir = dir.path().join("state");
    let (login_url, graph_url, client_id) = (g.login_url(), g.graph_url(), g.client_id());
    let common: Vec<&std::ffi::OsStr> = vec![
        "--config".as_ref(),
        config.as_os_str(),
        "--state-dir".as_ref(),
        state_dir.as_os_str(),
    ];
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "work".as_ref(),
        "--login-url".as_ref(),
        login_url.as_ref(),
        "--graph-url".as_ref(),
        graph_url.as_ref(),
        "--client-id".as_ref(),
        client_id.as_ref(),
    ];
    args.extend(&common);
    let (ok, out, err) = run_cli_login(&g, &args);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("enter the code") && out.contains("Signed in remote work"),
        "{out}"
    );
    let token_file = state_dir.join("tokens/work.json");
    assert_eq!(mode(&token_file), 0o600);
    let tokens: StoredTokens = serde_json::from_slice(&std::fs::read(&token_file).unwrap()).unwrap();
    assert!(tokens.refresh_token.is_some());
    for text in [&out, &err] {
        assert!(!text.contains(tokens.access_token.expose()));
        assert!(!text.contains(tokens.refresh_token.as_ref().unwrap().expose()));
    }
    let cfg = cloudmount::cli::config::ConfigFile::load(&config, true).unwrap();
    assert_eq!(cfg.remote("nas").unwrap().url.as_deref(), Some("http://nas/dav/"));
    let settings = cfg.remote("work").unwrap().onedrive("work").unwrap();
    assert_eq!(settings.oauth.login_url.as_str().trim_end_matches('/'), g.login_url());
    assert_eq!(settings.graph_url.as_str(), g.graph_url());
    assert_eq!(settings.oauth.client_id, g.client_id());
    assert_eq!(settings.oauth.flow, Flow::Device);

    // Again, with only the name: the settings come from the config, the tokens are replaced.
    let mut again: Vec<&std::ffi::OsStr> = vec!["work".as_ref()];
    again.extend(&common);
    let (ok, out, err) = run_cli_login(&g, &again);
    assert!(ok, "{out}{err}");
    assert!(out.contains("Updated the remote"), "{out}");
    let renewed: StoredTokens = serde_json::from_slice(&std::fs::read(&token_file).unwrap()).unwrap();
    assert_ne!(renewed.refresh_token, tokens.refresh_token);
    let cfg2 = cloudmount::cli::config::ConfigFile::load(&config, true).unwrap();
    assert_eq!(cfg2.remotes, cfg.remotes);

    // Client credentials without a secret source or tenant: a clear error, nothing changed.
    let mut bad: Vec<&std::ffi::OsStr> = vec![
        "app".as_ref(),
        "--client-credentials".as_ref(),
        "--drive-id".as_ref(),
        "d".as_ref(),
    ];
    bad.extend(&common);
    let (ok, out, err) = run_cli_login(&g, &bad);
    assert!(!ok, "{out}");
    assert!(err.contains("client_secret_file or client_secret_env"), "{err}");
    let cfg3 = cloudmount::cli::config::ConfigFile::load(&config, true).unwrap();
    assert_eq!(cfg3.remotes, cfg.remotes);
    assert!(!state_dir.join("tokens/app.json").exists());
}
