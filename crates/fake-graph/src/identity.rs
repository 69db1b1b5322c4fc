//! Microsoft identity platform v2 endpoints (`docs/onedrive.md`, Sign-in): device code, authorization code + PKCE,
//! refresh with rotation, client credentials; and the bearer check of the Graph routes.
//!
//! Choices where the spec is silent (all errors keyed on `error`, AADSTS codes are hints):
//! * unknown tenant → `400 invalid_request` AADSTS90002; unknown client id → `400 unauthorized_client`
//!   AADSTS700016; missing parameter → `400 invalid_request` AADSTS900144.
//! * wrong client secret → `401 invalid_client` AADSTS7000215; client credentials without a secret →
//!   `401 invalid_client` AADSTS7000216; certificate assertions are not modelled (AADSTS700027).
//! * authorization code: unknown → `invalid_grant` AADSTS70000, expired → AADSTS70008, reused → AADSTS54005,
//!   different `redirect_uri` than at `/authorize` → AADSTS50011, PKCE mismatch → AADSTS501481.
//! * refresh token: unknown → `invalid_grant` AADSTS9002313; reused after rotation (strict mode) or revoked →
//!   `invalid_grant` with AADSTS70008 or the revocation code.
//! * `/authorize` auto-approves (no login page) and redirects to loopback `http://localhost[:port]/…`,
//!   `http://127.0.0.1[:port]/…` or the native-client URI; anything else is an error page (AADSTS50011),
//!   as for an unregistered redirect URI.
//! * The device code `verification_uri` points at this server's `/devicelogin` page, where a person can
//!   approve a code by hand (tests call [`FakeGraph::approve_device_code`](crate::FakeGraph::approve_device_code)).

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::Digest as _;
use std::collections::HashMap;
use std::time::SystemTime;

use crate::config::Flavour;
use crate::error::{AadError, GraphError};
use crate::state::State;
use crate::util;

/// Who a token speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Principal {
    /// Delegated (signed-in user).
    User,
    /// Application-only (client credentials).
    App,
}

#[derive(Clone, Debug)]
pub(crate) struct AccessToken {
    pub expires: SystemTime,
    pub principal: Principal,
    /// Normalised scopes (`Files.ReadWrite.All`, …) for delegated tokens; empty for app tokens (all roles).
    pub scopes: Vec<String>,
}

struct RefreshToken {
    scopes: Vec<String>,
    revoked: Option<u32>,
    used: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DcStatus {
    Pending,
    Approved,
    Declined,
    Redeemed,
}

struct DeviceCode {
    device_code: String,
    user_code: String,
    scopes: Vec<String>,
    expires: SystemTime,
    status: DcStatus,
}

struct AuthCode {
    redirect_uri: String,
    challenge: Option<(String, String)>,
    scopes: Vec<String>,
    expires: SystemTime,
    used: bool,
}

#[derive(Default)]
pub(crate) struct AuthState {
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshToken>,
    device: Vec<DeviceCode>,
    codes: HashMap<String, AuthCode>,
}

/// Scopes granted for `.default` and by [`FakeGraph::issue_tokens`](crate::FakeGraph::issue_tokens).
pub(crate) const ALL_SCOPES: &[&str] = &[
    "Files.ReadWrite.All",
    "Sites.ReadWrite.All",
    "User.Read",
    "offline_access",
];

/// Splits and normalises a scope string (`https://graph.microsoft.com/Files.Read` → `Files.Read`).
pub(crate) fn parse_scopes(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    for sc in s.split_whitespace() {
        let lower = sc.to_ascii_lowercase();
        let short = if lower.starts_with("https://graph.microsoft.com/") {
            &sc["https://graph.microsoft.com/".len()..]
        } else {
            sc
        };
        if short == ".default" {
            out.extend(ALL_SCOPES.iter().map(|s| s.to_string()));
        } else if !out.iter().any(|o: &String| o.eq_ignore_ascii_case(short)) {
            out.push(short.to_string());
        }
    }
    out
}

fn has_scope(scopes: &[String], name: &str) -> bool {
    scopes.iter().any(|s| s.eq_ignore_ascii_case(name))
}

/// What a Graph route needs from the token.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Need {
    pub write: bool,
    /// The drive is not the user's own OneDrive (needs `Files.*.All` or `Sites.*`).
    pub other_drive: bool,
    /// A `/sites/...` lookup (needs `Sites.*`).
    pub sites: bool,
}

impl AccessToken {
    /// Scope check for delegated tokens (app-only tokens hold every application permission).
    pub fn allows(&self, need: Need) -> bool {
        if self.principal == Principal::App {
            return true;
        }
        let lower: Vec<String> = self.scopes.iter().map(|s| s.to_ascii_lowercase()).collect();
        let files = |all: bool| {
            lower.iter().any(|s| {
                s.starts_with("files.")
                    && (!all || s.ends_with(".all"))
                    && (!need.write || s.contains("readwrite"))
                    && !s.ends_with(".appfolder")
            })
        };
        let sites = lower.iter().any(|s| {
            s.starts_with("sites.")
                && (!need.write || s.contains("readwrite") || s.contains("manage") || s.contains("fullcontrol"))
        });
        if need.sites {
            return sites;
        }
        if need.other_drive {
            return files(true) || sites;
        }
        files(false) || sites
    }
}

impl AuthState {
    fn new_access(
        &mut self,
        principal: Principal,
        scopes: Vec<String>,
        flavour: Flavour,
        lifetime: std::time::Duration,
        now: SystemTime,
    ) -> String {
        let tok = match flavour {
            Flavour::Business => format!(
                "eyJ0eXAiOiJKV1QiLCJub25jZSI6ImZha2UiLCJhbGciOiJub25lIn0.{}",
                util::random_token(96)
            ),
            Flavour::Personal => format!("EwB{}", util::random_token(96)),
        };
        self.access.insert(
            tok.clone(),
            AccessToken {
                expires: now + lifetime,
                principal,
                scopes,
            },
        );
        tok
    }

    fn new_refresh(&mut self, scopes: Vec<String>) -> String {
        let tok = format!("M.C5{}", util::random_token(120));
        self.refresh.insert(
            tok.clone(),
            RefreshToken {
                scopes,
                revoked: None,
                used: false,
            },
        );
        tok
    }

    /// Issues a delegated access token (+ refresh token when `offline_access` is among the scopes).
    pub fn issue_delegated(
        &mut self,
        scopes: Vec<String>,
        flavour: Flavour,
        lifetime: std::time::Duration,
        now: SystemTime,
    ) -> (String, Option<String>) {
        let at = self.new_access(Principal::User, scopes.clone(), flavour, lifetime, now);
        let rt = has_scope(&scopes, "offline_access").then(|| self.new_refresh(scopes));
        (at, rt)
    }

    /// Issues an application-only access token.
    pub fn issue_app(&mut self, flavour: Flavour, lifetime: std::time::Duration, now: SystemTime) -> String {
        self.new_access(Principal::App, Vec::new(), flavour, lifetime, now)
    }

    pub fn expire_access_tokens(&mut self) {
        let past = SystemTime::UNIX_EPOCH;
        self.access.values_mut().for_each(|t| t.expires = past);
    }

    pub fn revoke_refresh_tokens(&mut self, code: u32) {
        self.refresh.values_mut().for_each(|t| t.revoked = Some(code));
    }

    pub fn expire_device_codes(&mut self) {
        let past = SystemTime::UNIX_EPOCH;
        self.device.iter_mut().for_each(|d| d.expires = past);
    }

    /// Approves a pending device code by its user code (case-insensitive). False if unknown or not pending.
    pub fn set_device_code(&mut self, user_code: &str, approve: bool) -> bool {
        match self
            .device
            .iter_mut()
            .find(|d| d.user_code.eq_ignore_ascii_case(user_code.trim()) && d.status == DcStatus::Pending)
        {
            Some(d) => {
                d.status = if approve {
                    DcStatus::Approved
                } else {
                    DcStatus::Declined
                };
                true
            }
            None => false,
        }
    }

    /// User codes of device codes still waiting for approval.
    pub fn pending_user_codes(&self, now: SystemTime) -> Vec<String> {
        self.device
            .iter()
            .filter(|d| d.status == DcStatus::Pending && d.expires > now)
            .map(|d| d.user_code.clone())
            .collect()
    }

    /// Bearer check of a Graph request.
    pub fn authenticate(&self, header: Option<&str>, now: SystemTime) -> Result<AccessToken, GraphError> {
        let www = r#"Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000""#;
        let err = |msg: &str| GraphError::new(401, "InvalidAuthenticationToken", msg).header("WWW-Authenticate", www);
        let h = header.map(str::trim).unwrap_or("");
        let tok = match h.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => t.trim(),
            _ => return Err(err("Access token is empty.")),
        };
        match self.access.get(tok) {
            Some(t) if t.expires > now => Ok(t.clone()),
            _ => Err(err("Access token has expired or is not yet valid.")),
        }
    }
}

fn param<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn required<'a>(form: &'a [(String, String)], name: &str) -> Result<&'a str, AadError> {
    param(form, name).ok_or_else(|| {
        AadError::new(
            "invalid_request",
            Some(900144),
            format!("The request body must contain the following parameter: '{name}'."),
        )
    })
}

impl State {
    fn check_tenant(&self, tenant: &str) -> Result<(), AadError> {
        let t = tenant.to_ascii_lowercase();
        let ok = ["common", "organizations", "consumers"].contains(&t.as_str())
            || t == self.cfg.tenant_id.to_ascii_lowercase()
            || t == self.cfg.tenant_domain.to_ascii_lowercase();
        if ok {
            Ok(())
        } else {
            Err(AadError::new("invalid_request", Some(90002), format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.")))
        }
    }

    fn check_client(&self, form: &[(String, String)]) -> Result<(), AadError> {
        let id = required(form, "client_id")?;
        if id != self.cfg.client_id {
            return Err(AadError::new(
                "unauthorized_client",
                Some(700016),
                format!(
                    "Application with identifier '{id}' was not found in the directory '{}'.",
                    self.cfg.tenant_domain
                ),
            ));
        }
        if let Some(secret) = param(form, "client_secret") {
            if secret != self.cfg.client_secret {
                return Err(self.bad_secret());
            }
        }
        Ok(())
    }

    fn bad_secret(&self) -> AadError {
        AadError::new(
            "invalid_client",
            Some(7000215),
            format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.", self.cfg.client_id),
        )
        .status(401)
    }

    fn token_response(&mut self, principal: Principal, scopes: Vec<String>, now: SystemTime) -> Value {
        let lifetime = self.cfg.token_lifetime;
        let flavour = self.cfg.flavour;
        let expires_in = lifetime.as_secs();
        match principal {
            Principal::App => {
                let at = self.auth.issue_app(flavour, lifetime, now);
                json!({ "token_type": "Bearer", "expires_in": expires_in, "ext_expires_in": expires_in, "access_token": at })
            }
            Principal::User => {
                let (at, rt) = self.auth.issue_delegated(scopes.clone(), flavour, lifetime, now);
                let granted: Vec<String> = scopes
                    .iter()
                    .filter(|s| {
                        !["offline_access", "openid", "profile", "email"]
                            .iter()
                            .any(|x| s.eq_ignore_ascii_case(x))
                    })
                    .map(|s| format!("https://graph.microsoft.com/{s}"))
                    .collect();
                let mut v = json!({
                    "token_type": "Bearer",
                    "scope": granted.join(" "),
                    "expires_in": expires_in,
                    "ext_expires_in": expires_in,
                    "access_token": at,
                });
                if let Some(rt) = rt {
                    v["refresh_token"] = json!(rt);
                }
                if has_scope(&scopes, "openid") {
                    v["id_token"] = json!(self.id_token(now));
                }
                v
            }
        }
    }

    /// An unsigned JWT-shaped id token (clients treat tokens as opaque).
    fn id_token(&self, now: SystemTime) -> String {
        let e = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let iat = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let header = e(json!({ "typ": "JWT", "alg": "none" }));
        let body = e(json!({
            "aud": self.cfg.client_id,
            "iss": format!("https://login.microsoftonline.com/{}/v2.0", self.cfg.tenant_id),
            "iat": iat, "nbf": iat, "exp": iat + 3600,
            "name": self.user.display_name,
            "oid": self.user.id,
            "preferred_username": self.user.upn,
            "tid": self.cfg.tenant_id,
        }));
        format!("{header}.{body}.")
    }

    /// `POST /{tenant}/oauth2/v2.0/devicecode`.
    pub fn devicecode(&mut self, tenant: &str, form: &[(String, String)], now: SystemTime) -> Result<Value, AadError> {
        self.check_tenant(tenant)?;
        self.check_client(form)?;
        let scopes = parse_scopes(required(form, "scope")?);
        let device_code = util::random_token(64);
        let user_code = util::random_from(b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789", 8);
        let lifetime = self.cfg.device_code_lifetime;
        self.auth
            .device
            .retain(|d| d.expires > now && d.status != DcStatus::Redeemed);
        self.auth.device.push(DeviceCode {
            device_code: device_code.clone(),
            user_code: user_code.clone(),
            scopes,
            expires: now + lifetime,
            status: DcStatus::Pending,
        });
        let uri = format!("{}/devicelogin", self.base);
        Ok(json!({
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": uri,
            "expires_in": lifetime.as_secs(),
            "interval": self.cfg.device_code_interval,
            "message": format!("To sign in, use a web browser to open the page {uri} and enter the code {user_code} to authenticate."),
        }))
    }

    /// `POST /{tenant}/oauth2/v2.0/token`.
    pub fn token(&mut self, tenant: &str, form: &[(String, String)], now: SystemTime) -> Result<Value, AadError> {
        self.check_tenant(tenant)?;
        let grant = required(form, "grant_type")?.to_string();
        self.check_client(form)?;
        match grant.as_str() {
            "urn:ietf:params:oauth:grant-type:device_code" | "device_code" => self.grant_device_code(form, now),
            "authorization_code" => self.grant_auth_code(form, now),
            "refresh_token" => self.grant_refresh(form, now),
            "client_credentials" => self.grant_client_credentials(tenant, form, now),
            other => Err(AadError::new(
                "unsupported_grant_type",
                Some(70003),
                format!("The app requested an unsupported grant type '{other}'."),
            )),
        }
    }

    fn grant_device_code(&mut self, form: &[(String, String)], now: SystemTime) -> Result<Value, AadError> {
        let code = required(form, "device_code")?;
        let Some(idx) = self.auth.device.iter().position(|d| d.device_code == code) else {
            return Err(AadError::new(
                "bad_verification_code",
                None,
                "The device code is not recognised.",
            ));
        };
        if self.auth.device[idx].expires <= now {
            return Err(AadError::new(
                "expired_token",
                Some(70019),
                "Verification code expired.",
            ));
        }
        if self.faults.slow_down > 0 {
            self.faults.slow_down -= 1;
            return Err(AadError::new(
                "slow_down",
                None,
                "Polling too frequently; add 5 seconds to the interval.",
            ));
        }
        let pending = || {
            AadError::new(
                "authorization_pending",
                Some(70016),
                "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
            )
        };
        if self.faults.pending > 0 && self.auth.device[idx].status == DcStatus::Approved {
            self.faults.pending -= 1;
            return Err(pending());
        }
        match self.auth.device[idx].status {
            DcStatus::Pending => Err(pending()),
            DcStatus::Declined => Err(AadError::new(
                "authorization_declined",
                None,
                "The end user denied the authorization request.",
            )),
            DcStatus::Redeemed => Err(AadError::new(
                "invalid_grant",
                Some(54005),
                "The device code was already redeemed.",
            )),
            DcStatus::Approved => {
                self.auth.device[idx].status = DcStatus::Redeemed;
                let scopes = self.auth.device[idx].scopes.clone();
                Ok(self.token_response(Principal::User, scopes, now))
            }
        }
    }

    fn grant_auth_code(&mut self, form: &[(String, String)], now: SystemTime) -> Result<Value, AadError> {
        let code = required(form, "code")?.to_string();
        let redirect = required(form, "redirect_uri")?.to_string();
        let Some(ac) = self.auth.codes.get_mut(&code) else {
            return Err(AadError::new(
                "invalid_grant",
                Some(70000),
                "The provided value for the 'code' parameter is not valid.",
            ));
        };
        if ac.used {
            return Err(AadError::new("invalid_grant", Some(54005), "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token."));
        }
        if ac.expires <= now {
            return Err(AadError::new("invalid_grant", Some(70008), "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource."));
        }
        if ac.redirect_uri != redirect {
            return Err(AadError::new("invalid_grant", Some(50011), format!("The redirect URI '{redirect}' specified in the request does not match the redirect URI used to obtain the authorization code.")));
        }
        if let Some((challenge, method)) = ac.challenge.clone() {
            let verifier = param(form, "code_verifier").ok_or_else(|| {
                AadError::new(
                    "invalid_request",
                    Some(900144),
                    "The request body must contain the following parameter: 'code_verifier'.",
                )
            })?;
            let computed = if method.eq_ignore_ascii_case("S256") {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
            } else {
                verifier.to_string()
            };
            if computed != challenge {
                // The code stays unusable after a failed PKCE check, as a stolen code would.
                ac.used = true;
                return Err(AadError::new(
                    "invalid_grant",
                    Some(501481),
                    "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
                ));
            }
        }
        ac.used = true;
        let scopes = ac.scopes.clone();
        Ok(self.token_response(Principal::User, scopes, now))
    }

    fn grant_refresh(&mut self, form: &[(String, String)], now: SystemTime) -> Result<Value, AadError> {
        let rt = required(form, "refresh_token")?.to_string();
        let strict = self.cfg.strict_refresh_rotation;
        let Some(entry) = self.auth.refresh.get_mut(&rt) else {
            return Err(AadError::new(
                "invalid_grant",
                Some(9002313),
                "Invalid request. Request is malformed or invalid.",
            ));
        };
        if let Some(code) = entry.revoked {
            let (error, msg) = match code {
                700082 => ("invalid_grant", "The refresh token has expired due to inactivity. The token was issued on a date and was inactive for 90.00:00:00."),
                50173 => ("invalid_grant", "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password."),
                50076 | 50079 => ("interaction_required", "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access this resource."),
                65001 => ("invalid_grant", "The user or administrator has not consented to use the application."),
                70043 => ("invalid_grant", "The refresh token has expired or is invalid due to sign-in frequency checks by conditional access."),
                _ => ("invalid_grant", "The refresh token has expired or was revoked. Send a new interactive authorization request for this user and resource."),
            };
            return Err(AadError::new(error, Some(code), msg));
        }
        if entry.used && strict {
            return Err(AadError::new("invalid_grant", Some(70008), "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource."));
        }
        entry.used = true;
        let mut scopes = match param(form, "scope") {
            Some(s) => parse_scopes(s),
            None => entry.scopes.clone(),
        };
        if !has_scope(&scopes, "offline_access") {
            // A refresh grant always returns a new refresh token (the original grant had offline_access).
            scopes.push("offline_access".into());
        }
        Ok(self.token_response(Principal::User, scopes, now))
    }

    fn grant_client_credentials(
        &mut self,
        tenant: &str,
        form: &[(String, String)],
        now: SystemTime,
    ) -> Result<Value, AadError> {
        if ["common", "organizations", "consumers"].contains(&tenant.to_ascii_lowercase().as_str()) {
            return Err(AadError::new("invalid_request", Some(9001023), "The grant type 'client_credentials' is not supported over the /common or /consumers endpoints. Please use the /organizations or tenant-specific endpoint."));
        }
        if param(form, "client_assertion").is_some() {
            return Err(AadError::new("invalid_client", Some(700027), "Client assertion failed signature validation (certificate credentials are not modelled by the fake server).").status(401));
        }
        if param(form, "client_secret").is_none() {
            return Err(AadError::new(
                "invalid_client",
                Some(7000216),
                "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
            )
            .status(401));
        }
        let scope = required(form, "scope")?;
        if !scope.split_whitespace().all(|s| s.ends_with("/.default")) {
            return Err(AadError::new("invalid_scope", Some(1002012), format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).")));
        }
        Ok(self.token_response(Principal::App, Vec::new(), now))
    }

    /// `GET /{tenant}/oauth2/v2.0/authorize`: Ok(redirect location) or Err((status, html page)).
    pub fn authorize(
        &mut self,
        tenant: &str,
        q: &[(String, String)],
        now: SystemTime,
    ) -> Result<String, (u16, String)> {
        let page = |code: u32, msg: &str| {
            (
                400u16,
                format!("<html><body><h1>Sign in</h1><p>AADSTS{code}: {msg}</p></body></html>"),
            )
        };
        if let Err(e) = self.check_tenant(tenant) {
            return Err(page(90002, &e.description));
        }
        let Some(client_id) = param(q, "client_id") else {
            return Err(page(
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            ));
        };
        if client_id != self.cfg.client_id {
            return Err(page(
                700016,
                &format!("Application with identifier '{client_id}' was not found in the directory."),
            ));
        }
        let Some(redirect) = param(q, "redirect_uri") else {
            return Err(page(
                900144,
                "The request body must contain the following parameter: 'redirect_uri'.",
            ));
        };
        if !redirect_allowed(redirect) {
            return Err(page(50011, &format!("The redirect URI '{redirect}' specified in the request does not match the redirect URIs configured for the application '{client_id}'.")));
        }
        let fragment = param(q, "response_mode") == Some("fragment");
        let state = param(q, "state").map(str::to_string);
        let redirect_with = |pairs: Vec<(&str, String)>| {
            let mut ser = form_urlencoded::Serializer::new(String::new());
            for (k, v) in pairs {
                ser.append_pair(k, &v);
            }
            if let Some(s) = &state {
                ser.append_pair("state", s);
            }
            let sep = if fragment {
                '#'
            } else if redirect.contains('?') {
                '&'
            } else {
                '?'
            };
            format!("{}{sep}{}", with_root_path(redirect), ser.finish())
        };
        if param(q, "response_type") != Some("code") {
            return Ok(redirect_with(vec![
                ("error", "unsupported_response_type".into()),
                (
                    "error_description",
                    "AADSTS700054: response_type 'code' is required by the fake server.".into(),
                ),
            ]));
        }
        let Some(scope) = param(q, "scope") else {
            return Ok(redirect_with(vec![
                ("error", "invalid_request".into()),
                (
                    "error_description",
                    "AADSTS900144: The request body must contain the following parameter: 'scope'.".into(),
                ),
            ]));
        };
        if self.faults.deny_authorize > 0 {
            self.faults.deny_authorize -= 1;
            return Ok(redirect_with(vec![
                ("error", "access_denied".into()),
                (
                    "error_description",
                    "AADSTS65004: User declined to consent to access the app.".into(),
                ),
            ]));
        }
        let challenge = param(q, "code_challenge").map(|c| {
            let method = param(q, "code_challenge_method").unwrap_or("plain");
            (c.to_string(), method.to_string())
        });
        if let Some((_, m)) = &challenge {
            if !m.eq_ignore_ascii_case("S256") && !m.eq_ignore_ascii_case("plain") {
                return Ok(redirect_with(vec![
                    ("error", "invalid_request".into()),
                    (
                        "error_description",
                        "AADSTS501491: Invalid code_challenge_method.".into(),
                    ),
                ]));
            }
        }
        let code = format!("M.C5{}", util::random_token(64));
        let lifetime = self.cfg.auth_code_lifetime;
        self.auth.codes.retain(|_, c| c.expires > now);
        self.auth.codes.insert(
            code.clone(),
            AuthCode {
                redirect_uri: redirect.to_string(),
                challenge,
                scopes: parse_scopes(scope),
                expires: now + lifetime,
                used: false,
            },
        );
        Ok(redirect_with(vec![("code", code)]))
    }
}

/// A redirect URI without a path gets a trailing `/` (`http://127.0.0.1:5000` → `http://127.0.0.1:5000/`).
fn with_root_path(uri: &str) -> String {
    let scheme_end = uri.find("://").map(|i| i + 3).unwrap_or(0);
    let rest = &uri[scheme_end..];
    match rest.find(['/', '?', '#']) {
        Some(i) if rest.as_bytes()[i] == b'/' => uri.to_string(),
        Some(i) => format!("{}/{}", &uri[..scheme_end + i], &rest[i..]),
        None => format!("{uri}/"),
    }
}

/// Loopback `http://localhost` / `http://127.0.0.1` (any port, any path) or the native-client URI.
fn redirect_allowed(uri: &str) -> bool {
    if uri.eq_ignore_ascii_case("https://login.microsoftonline.com/common/oauth2/nativeclient") {
        return true;
    }
    let Some(rest) = uri.strip_prefix("http://") else {
        return false;
    };
    let host_port = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host_port
        .rsplit_once(':')
        .map(|(h, p)| {
            if p.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host_port
            }
        })
        .unwrap_or(host_port);
    host.eq_ignore_ascii_case("localhost") || host == "127.0.0.1"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects() {
        assert!(redirect_allowed("http://localhost:53682/"));
        assert!(redirect_allowed("http://127.0.0.1:8400/callback"));
        assert!(redirect_allowed("http://localhost"));
        assert!(!redirect_allowed("http://[::1]:8080/"));
        assert!(!redirect_allowed("https://localhost:8080/"));
        assert!(!redirect_allowed("http://evil.example/"));
        assert!(!redirect_allowed("http://localhost.evil.example:80/"));
        assert_eq!(with_root_path("http://127.0.0.1:5000"), "http://127.0.0.1:5000/");
        assert_eq!(with_root_path("http://localhost:5000/cb"), "http://localhost:5000/cb");
        assert_eq!(with_root_path("http://localhost?x=1"), "http://localhost/?x=1");
    }

    #[test]
    fn scopes() {
        let s = parse_scopes("https://graph.microsoft.com/Files.ReadWrite.All offline_access files.readwrite.all");
        assert_eq!(s, vec!["Files.ReadWrite.All", "offline_access"]);
        let t = AccessToken {
            expires: SystemTime::now(),
            principal: Principal::User,
            scopes: vec!["Files.Read".into()],
        };
        assert!(t.allows(Need {
            write: false,
            other_drive: false,
            sites: false
        }));
        assert!(!t.allows(Need {
            write: true,
            other_drive: false,
            sites: false
        }));
        assert!(!t.allows(Need {
            write: false,
            other_drive: true,
            sites: false
        }));
        assert!(!t.allows(Need {
            write: false,
            other_drive: false,
            sites: true
        }));
    }
}
