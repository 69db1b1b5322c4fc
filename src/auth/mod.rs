//! Where Graph requests get their bearer token. The Graph client only sees [`TokenSource`]; the OAuth
//! flows, the token store and the background refresher live behind it, so the client can be tested
//! with a fixed token and the auth code can be tested without Graph.
//!
//! - [`config`]: what a OneDrive remote's sign-in needs (endpoints, client id, flow, scopes);
//! - [`store`]: the 0600 token file per remote, replaced atomically;
//! - [`oauth`]: the token endpoint through `oauth2` over our HTTP client, error classification,
//!   refresh and client credentials;
//! - [`device`], [`browser`], [`login`]: the interactive sign-ins;
//! - [`source`]: [`OAuthTokenSource`], the refreshing token source a mount uses.

pub mod browser;
pub mod config;
pub mod device;
pub mod login;
pub mod oauth;
mod secret;
pub mod source;
pub mod store;

pub use config::{Flow, OAuthConfig, SecretSource, DEFAULT_CLIENT_ID};
pub use login::{login, LoginError, LoginUi};
pub use secret::Secret;
pub use source::{AuthState, AuthStateHandle, OAuthTokenSource};
pub use store::{StoredTokens, TokenStore};

use async_trait::async_trait;

use crate::error::RemoteResult;

/// A supplier of OAuth access tokens for one remote.
///
/// Errors: `RemoteError::Unauthorized` when a login is needed (revoked or expired refresh token,
/// `invalid_grant`, `interaction_required`); transient errors (`Connect`, `Timeout`, 5xx) when the
/// token endpoint could not be reached, which callers surface as such and never as "login needed".
#[async_trait]
pub trait TokenSource: Send + Sync + 'static {
    /// A token valid for at least a little while (implementations refresh ahead of expiry).
    async fn access_token(&self) -> RemoteResult<String>;

    /// The server answered 401 to a request made with `rejected`: get a new token (once per
    /// rejected token, even when many requests report it at the same time) and return it.
    async fn token_rejected(&self, rejected: &str) -> RemoteResult<String>;
}

/// A fixed token, for tests and for callers that obtained a token elsewhere.
pub struct StaticToken(pub String);

#[async_trait]
impl TokenSource for StaticToken {
    async fn access_token(&self) -> RemoteResult<String> {
        Ok(self.0.clone())
    }

    async fn token_rejected(&self, _rejected: &str) -> RemoteResult<String> {
        Err(crate::error::RemoteError::Unauthorized(
            "the access token was rejected and cannot be refreshed".into(),
        ))
    }
}
