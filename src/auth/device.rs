//! Device code sign-in: show a URL and a code, poll the token endpoint until the person has
//! signed in elsewhere. `oauth2` does the polling: it waits `interval` between polls, keeps going on
//! `authorization_pending`, adds 5 s on `slow_down`, and stops on `expired_token`, a refusal or when
//! the code's `expires_in` has passed.

use std::time::{Duration, SystemTime};

use oauth2::{DeviceCodeErrorResponseType, RequestTokenError, StandardDeviceAuthorizationResponse};

use super::login::LoginError;
use super::oauth::{self, Issued};
use super::OAuthConfig;
use crate::http::HttpClient;

/// What the person has to do, for the prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevicePrompt {
    /// The page to open.
    pub verification_uri: String,
    /// The code to enter there (not a secret by itself: it is useless without the sign-in).
    pub user_code: String,
    /// How long the code stays valid.
    pub expires_in: Duration,
}

/// Run the device code flow: `prompt` is called once with the URL and code.
pub async fn device_code(
    cfg: &OAuthConfig,
    http: &HttpClient,
    prompt: &(dyn Fn(&DevicePrompt) + Send + Sync),
) -> Result<Issued, LoginError> {
    let client = oauth::token_client(cfg)?.set_device_authorization_url(oauth::device_url(cfg)?);
    let oauth_http = oauth::oauth_http(http);
    let details: StandardDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scopes(oauth::scopes(cfg))
        .request_async(&oauth_http)
        .await
        .map_err(|e| LoginError::Token(oauth::classify(e)))?;
    prompt(&DevicePrompt {
        verification_uri: details.verification_uri().to_string(),
        user_code: details.user_code().secret().clone(),
        expires_in: details.expires_in(),
    });
    let resp = client
        .exchange_device_access_token(&details)
        .request_async(&oauth_http, tokio::time::sleep, None)
        .await
        .map_err(|e| match e {
            RequestTokenError::ServerResponse(r) => match r.error() {
                DeviceCodeErrorResponseType::ExpiredToken => LoginError::Expired,
                DeviceCodeErrorResponseType::AccessDenied => LoginError::Declined,
                DeviceCodeErrorResponseType::Basic(b) if b.as_ref() == "authorization_declined" => LoginError::Declined,
                other => LoginError::Refused(oauth::describe_code(other.as_ref(), r.error_description())),
            },
            other => LoginError::Token(oauth::classify(other)),
        })?;
    // The token was issued by the last poll, which has just answered.
    Ok(Issued::from_response(&resp, SystemTime::now()))
}
