//! The token endpoint through the `oauth2` crate, driven by our own [`HttpClient`] (oauth2's own
//! reqwest feature targets reqwest 0.12; we use 0.13 and one client with one retry policy), and
//! the grants a running mount needs: refresh and client credentials. Token endpoint answers are
//! classified once here into "sign in again", "try later" and "broken".

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use oauth2::basic::{BasicClient, BasicTokenResponse};
use oauth2::{
    AuthType, AuthUrl, ClientId, ClientSecret, DeviceAuthorizationUrl, EndpointNotSet, EndpointSet, ErrorResponse,
    RefreshToken, RequestTokenError, Scope, StandardErrorResponse, TokenResponse, TokenUrl,
};
use url::Url;

use super::config::OAuthConfig;
use super::secret::Secret;
use super::store::StoredTokens;
use crate::error::RemoteError;
use crate::http::{HttpClient, HttpRequest};

/// The future our oauth2 HTTP adapter returns.
pub type HttpFuture = Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, RemoteError>> + Send>>;

/// An `oauth2` async HTTP client over our [`HttpClient`]: token requests get its retry policy
/// (backoff on connection errors and 5xx, `Retry-After` on 429/503, a deadline); answers 400, 401
/// and 403 go back to `oauth2` as responses so that it parses the error body.
pub fn oauth_http(client: &HttpClient) -> impl Fn(oauth2::HttpRequest) -> HttpFuture + Send + Sync + 'static {
    let client = client.clone();
    move |req| Box::pin(send(client.clone(), req))
}

async fn send(client: HttpClient, req: oauth2::HttpRequest) -> Result<oauth2::HttpResponse, RemoteError> {
    let (parts, body) = req.into_parts();
    let url = Url::parse(&parts.uri.to_string())
        .map_err(|e| RemoteError::Protocol(format!("invalid identity endpoint URL: {e}")))?;
    // Token requests may be repeated: a repeated refresh or device-code poll at worst gets an
    // `invalid_grant` for a grant already redeemed, which the caller handles like any refusal.
    let mut r = HttpRequest::idempotent(parts.method, url);
    for (name, value) in parts.headers.iter() {
        r = r.header(name.clone(), value.clone());
    }
    let r = r
        .body(body)
        .accept_status(reqwest::StatusCode::BAD_REQUEST)
        .accept_status(reqwest::StatusCode::UNAUTHORIZED)
        .accept_status(reqwest::StatusCode::FORBIDDEN);
    let label = format!("{} {}", r.method(), r.url().path());
    client
        .execute(&r, |resp| {
            let label = label.clone();
            async move {
                let status = resp.status();
                let headers = resp.headers().clone();
                let bytes = crate::graph::client::read_json_body(resp, &label).await?;
                let mut out = oauth2::http::Response::builder().status(status);
                if let Some(h) = out.headers_mut() {
                    *h = headers;
                }
                out.body(bytes.to_vec())
                    .map_err(|e| RemoteError::Protocol(format!("{label}: {e}")))
            }
        })
        .await
}

/// Why the token endpoint did not give us a token.
#[derive(Clone, Debug, thiserror::Error)]
pub enum TokenError {
    /// The grant is gone (revoked, expired, MFA or consent needed, client rejected): only a new
    /// interactive sign-in helps. The text names the OAuth error and its AADSTS code.
    #[error("sign-in needed: {0}")]
    LoginNeeded(String),
    /// No usable answer (network, timeout, 5xx, throttling, `temporarily_unavailable`): try again.
    #[error(transparent)]
    Transient(RemoteError),
    /// Anything else (misconfiguration, an answer we cannot read).
    #[error(transparent)]
    Failed(RemoteError),
}

impl TokenError {
    /// The error a [`super::TokenSource`] caller sees.
    pub fn into_remote(self) -> RemoteError {
        match self {
            TokenError::LoginNeeded(why) => RemoteError::Unauthorized(why),
            TokenError::Transient(e) | TokenError::Failed(e) => e,
        }
    }
}

/// `AADSTS70008` from an `error_description`, as a hint for people (logic keys on `error`).
pub fn aadsts(description: Option<&str>) -> Option<String> {
    let d = description?;
    let i = d.find("AADSTS")?;
    let digits: String = d[i + 6..].chars().take_while(char::is_ascii_digit).collect();
    (!digits.is_empty()).then(|| format!("AADSTS{digits}"))
}

/// "invalid_grant (AADSTS70008)".
pub fn describe<T: oauth2::ErrorResponseType + AsRef<str>>(e: &StandardErrorResponse<T>) -> String {
    describe_code(e.error().as_ref(), e.error_description())
}

/// "invalid_grant (AADSTS70008)" from the parts.
pub fn describe_code(code: &str, description: Option<&String>) -> String {
    match aadsts(description.map(String::as_str)) {
        Some(hint) => format!("{code} ({hint})"),
        None => code.to_string(),
    }
}

/// Sort an `error` code of the token endpoint.
pub fn classify_code(code: &str, text: String) -> TokenError {
    match code {
        "invalid_grant" | "interaction_required" | "invalid_client" | "unauthorized_client" | "consent_required" => {
            TokenError::LoginNeeded(text)
        }
        "temporarily_unavailable" => TokenError::Transient(RemoteError::Http {
            status: 503,
            message: format!("token endpoint: {text}"),
        }),
        _ => TokenError::Failed(RemoteError::Protocol(format!("token endpoint refused: {text}"))),
    }
}

/// Sort a failed token request.
pub fn classify<T>(err: RequestTokenError<RemoteError, StandardErrorResponse<T>>) -> TokenError
where
    T: oauth2::ErrorResponseType + AsRef<str>,
    StandardErrorResponse<T>: ErrorResponse,
{
    match err {
        RequestTokenError::ServerResponse(e) => classify_code(e.error().as_ref(), describe(&e)),
        RequestTokenError::Request(e) if e.is_transient() => TokenError::Transient(e),
        RequestTokenError::Request(e) => TokenError::Failed(e),
        // Never the body or serde's message: both may quote a token.
        RequestTokenError::Parse(e, _body) => TokenError::Failed(RemoteError::Protocol(format!(
            "unreadable token endpoint answer (at {})",
            e.path()
        ))),
        RequestTokenError::Other(s) => TokenError::Failed(RemoteError::Protocol(format!("token endpoint: {s}"))),
    }
}

/// A token the endpoint just issued.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The access token.
    pub access_token: Secret,
    /// Its lifetime (`expires_in`; one hour when the server does not say).
    pub lifetime: Duration,
    /// A new refresh token, if one came.
    pub refresh_token: Option<Secret>,
    /// When the request was sent (expiry counts from there, to be safe).
    pub obtained: SystemTime,
}

impl Issued {
    /// Read a token response.
    pub fn from_response(resp: &BasicTokenResponse, obtained: SystemTime) -> Issued {
        Issued {
            access_token: Secret::new(resp.access_token().secret().clone()),
            lifetime: resp.expires_in().unwrap_or(Duration::from_secs(3600)),
            refresh_token: resp.refresh_token().map(|t| Secret::new(t.secret().clone())),
            obtained,
        }
    }

    /// The record to store. Without a new refresh token the previous one is kept.
    pub fn into_stored(self, cfg: &OAuthConfig, previous_refresh: Option<Secret>) -> StoredTokens {
        StoredTokens::new(
            cfg.flow,
            &cfg.client_id,
            &cfg.endpoint("token"),
            &cfg.request_scopes(),
            self.access_token,
            self.obtained,
            self.lifetime,
            self.refresh_token.or(previous_refresh),
        )
    }
}

/// The oauth2 client with the token endpoint set.
pub type TokenClient = BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// The oauth2 client for `cfg`'s token endpoint (client id and secret, if any, go in the body).
pub fn token_client(cfg: &OAuthConfig) -> Result<TokenClient, RemoteError> {
    let token = TokenUrl::new(cfg.endpoint("token"))
        .map_err(|e| RemoteError::Protocol(format!("invalid token endpoint URL: {e}")))?;
    Ok(BasicClient::new(ClientId::new(cfg.client_id.clone()))
        .set_auth_type(AuthType::RequestBody)
        .set_token_uri(token))
}

/// Parse `cfg`'s authorize endpoint.
pub fn auth_url(cfg: &OAuthConfig) -> Result<AuthUrl, RemoteError> {
    AuthUrl::new(cfg.endpoint("authorize"))
        .map_err(|e| RemoteError::Protocol(format!("invalid authorize endpoint URL: {e}")))
}

/// Parse `cfg`'s device code endpoint.
pub fn device_url(cfg: &OAuthConfig) -> Result<DeviceAuthorizationUrl, RemoteError> {
    DeviceAuthorizationUrl::new(cfg.endpoint("devicecode"))
        .map_err(|e| RemoteError::Protocol(format!("invalid device code endpoint URL: {e}")))
}

/// The scopes as oauth2 values.
pub fn scopes(cfg: &OAuthConfig) -> Vec<Scope> {
    cfg.request_scopes().into_iter().map(Scope::new).collect()
}

/// Redeem a refresh token (the answer carries a rotated one, which the caller must store).
pub async fn refresh(cfg: &OAuthConfig, http: &HttpClient, refresh_token: &Secret) -> Result<Issued, TokenError> {
    let client = token_client(cfg).map_err(TokenError::Failed)?;
    let http = oauth_http(http);
    let obtained = SystemTime::now();
    let rt = RefreshToken::new(refresh_token.expose().to_string());
    let resp = client
        .exchange_refresh_token(&rt)
        .add_scopes(scopes(cfg))
        .request_async(&http)
        .await
        .map_err(classify)?;
    Ok(Issued::from_response(&resp, obtained))
}

/// Ask for an app-only token with the client secret.
pub async fn client_credentials(cfg: &OAuthConfig, http: &HttpClient, secret: &Secret) -> Result<Issued, TokenError> {
    let client = token_client(cfg)
        .map_err(TokenError::Failed)?
        .set_client_secret(ClientSecret::new(secret.expose().to_string()));
    let http = oauth_http(http);
    let obtained = SystemTime::now();
    let resp = client
        .exchange_client_credentials()
        .add_scopes(scopes(cfg))
        .request_async(&http)
        .await
        .map_err(classify::<oauth2::basic::BasicErrorResponseType>)?;
    Ok(Issued::from_response(&resp, obtained))
}

/// Read the client secret of a client-credentials remote.
pub fn read_secret(cfg: &OAuthConfig) -> Result<Secret, TokenError> {
    let source = cfg.client_secret.as_ref().ok_or_else(|| {
        TokenError::Failed(RemoteError::Protocol(
            "client credentials need client_secret_file or client_secret_env".into(),
        ))
    })?;
    source.read().map_err(|e| TokenError::Failed(RemoteError::Protocol(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert!(matches!(
            classify_code("invalid_grant", "x".into()),
            TokenError::LoginNeeded(_)
        ));
        assert!(matches!(
            classify_code("interaction_required", "x".into()),
            TokenError::LoginNeeded(_)
        ));
        assert!(matches!(
            classify_code("invalid_client", "x".into()),
            TokenError::LoginNeeded(_)
        ));
        assert!(matches!(
            classify_code("temporarily_unavailable", "x".into()),
            TokenError::Transient(_)
        ));
        assert!(matches!(
            classify_code("invalid_scope", "x".into()),
            TokenError::Failed(_)
        ));
        assert_eq!(
            aadsts(Some("AADSTS700082: The refresh token has expired")).as_deref(),
            Some("AADSTS700082")
        );
        assert_eq!(aadsts(Some("no code")), None);
    }
}
