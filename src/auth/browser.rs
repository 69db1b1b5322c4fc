//! Authorization code + PKCE sign-in with a loopback redirect: listen on an ephemeral localhost
//! port, send the person's browser to the authorize page, take the `code` the identity platform
//! redirects back with (after checking `state`), and redeem it with the PKCE verifier.

use std::time::{Duration, SystemTime};

use oauth2::{AuthorizationCode, CsrfToken, PkceCodeChallenge, RedirectUrl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::login::LoginError;
use super::oauth::{self, Issued};
use super::OAuthConfig;
use crate::http::HttpClient;

/// Largest request head the redirect listener reads.
const MAX_HEAD: usize = 16 * 1024;

/// What came back on the redirect.
enum Callback {
    Code {
        code: String,
        state: Option<String>,
    },
    Error {
        error: String,
        description: Option<String>,
        state: Option<String>,
    },
}

/// Run the flow. `open` gets the authorize URL (print it, start a browser); the flow then waits up
/// to `wait` for the redirect.
pub async fn browser(
    cfg: &OAuthConfig,
    http: &HttpClient,
    open: &(dyn Fn(&str) + Send + Sync),
    wait: Duration,
) -> Result<Issued, LoginError> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| LoginError::Local(format!("cannot listen on localhost for the sign-in redirect: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| LoginError::Local(e.to_string()))?
        .port();
    // `localhost` matches a registered `http://localhost` redirect on any port.
    let redirect = RedirectUrl::new(format!("http://localhost:{port}/"))
        .map_err(|e| LoginError::Local(format!("redirect URL: {e}")))?;
    let client = oauth::token_client(cfg)?
        .set_auth_uri(oauth::auth_url(cfg)?)
        .set_redirect_uri(redirect);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf) = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(oauth::scopes(cfg))
        .add_extra_param("response_mode", "query")
        .set_pkce_challenge(challenge)
        .url();
    open(url.as_str());
    let callback = tokio::time::timeout(wait, accept_callback(&listener))
        .await
        .map_err(|_| LoginError::Local(format!("no sign-in came back within {} s", wait.as_secs())))??;
    let (code, state) = match callback {
        Callback::Code { code, state } => (code, state),
        Callback::Error {
            error,
            description,
            state,
        } => {
            if state.as_deref() != Some(csrf.secret().as_str()) {
                return Err(LoginError::StateMismatch);
            }
            return Err(if error == "access_denied" {
                LoginError::Declined
            } else {
                LoginError::Refused(oauth::describe_code(&error, description.as_ref()))
            });
        }
    };
    if state.as_deref() != Some(csrf.secret().as_str()) {
        return Err(LoginError::StateMismatch);
    }
    let obtained = SystemTime::now();
    let resp = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&oauth::oauth_http(http))
        .await
        .map_err(|e| LoginError::Token(oauth::classify(e)))?;
    Ok(Issued::from_response(&resp, obtained))
}

/// Serve the listener until a request for `/` with `code` or `error` arrives; other requests
/// (favicon, probes) get a 404.
async fn accept_callback(listener: &TcpListener) -> Result<Callback, LoginError> {
    loop {
        let (mut sock, _) = listener
            .accept()
            .await
            .map_err(|e| LoginError::Local(format!("redirect listener: {e}")))?;
        let Some(target) = read_target(&mut sock).await else {
            continue;
        };
        let parsed = url::Url::parse(&format!("http://localhost{target}")).ok();
        let callback = parsed.filter(|u| u.path() == "/").and_then(|u| {
            let get = |k: &str| u.query_pairs().find(|(n, _)| n == k).map(|(_, v)| v.into_owned());
            let state = get("state");
            if let Some(code) = get("code") {
                Some(Callback::Code { code, state })
            } else {
                get("error").map(|error| Callback::Error {
                    error,
                    description: get("error_description"),
                    state,
                })
            }
        });
        match callback {
            Some(cb) => {
                let body = match &cb {
                    Callback::Code { .. } => "cloudmount: sign-in received. You can close this window.",
                    Callback::Error { .. } => "cloudmount: sign-in failed; see the terminal.",
                };
                respond(&mut sock, "200 OK", body).await;
                return Ok(cb);
            }
            None => respond(&mut sock, "404 Not Found", "not found").await,
        }
    }
}

/// The request target of the first line of an HTTP request, or `None` if it is not one.
async fn read_target(sock: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_HEAD {
        let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut first = head.lines().next()?.split_whitespace();
    if first.next()? != "GET" {
        return None;
    }
    first.next().map(str::to_string)
}

async fn respond(sock: &mut TcpStream, status: &str, body: &str) {
    let msg = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = sock.write_all(msg.as_bytes()).await;
    let _ = sock.shutdown().await;
}
