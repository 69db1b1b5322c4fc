//! The two ways we talk to Graph, on top of the one [`HttpClient`]:
//!
//! - [`GraphClient::authorized`]: a Graph API call with `Authorization: Bearer`. A 401 hands the
//!   rejected token to [`TokenSource::token_rejected`] and sends the request once more with the
//!   new token; a second 401 is `Unauthorized`. Errors go through the shared decoder
//!   ([`super::error::decode_error`]).
//! - [`GraphClient::preauthenticated`]: a request to a URL that carries its own authorisation
//!   (`@microsoft.graph.downloadUrl`, later upload-session and monitor URLs). It never carries our
//!   token (sending it may even be refused) and a failure there never refreshes the token.
//!
//! Writes (PATCH moves, DELETE, createUploadSession) are meant to use `authorized` with their own
//! [`Retry`] choice; fragment uploads `preauthenticated`.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, Response, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use crate::auth::TokenSource;
use crate::error::{RemoteError, RemoteResult};
use crate::http::{map_reqwest_error, HttpClient, HttpRequest, Retry};

use super::error::{decode_error, DECODED_STATUSES};

/// A successful Graph answer, body read.
#[derive(Debug)]
pub struct GraphResponse {
    /// 2xx status.
    pub status: StatusCode,
    /// Response headers (`Location` of a 202, `ETag`...).
    pub headers: HeaderMap,
    /// The whole body (Graph's JSON answers are small; content never comes this way).
    pub body: Bytes,
}

impl GraphResponse {
    /// The body as JSON of type `T`.
    pub fn json<T: DeserializeOwned>(&self, context: &str) -> RemoteResult<T> {
        serde_json::from_slice(&self.body)
            .map_err(|e| RemoteError::Protocol(format!("{context}: unexpected JSON answer: {e}")))
    }
}

/// Graph calls with a bearer token, and calls to pre-authenticated URLs.
#[derive(Clone)]
pub struct GraphClient {
    http: HttpClient,
    tokens: Arc<dyn TokenSource>,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

impl GraphClient {
    /// Wrap the shared HTTP client and the token supplier.
    pub fn new(http: HttpClient, tokens: Arc<dyn TokenSource>) -> GraphClient {
        GraphClient { http, tokens }
    }

    /// The shared HTTP client.
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// `GET url` with the bearer token, as JSON of type `T`.
    pub async fn get_json<T: DeserializeOwned>(&self, url: Url) -> RemoteResult<T> {
        let req = HttpRequest::idempotent(Method::GET, url);
        let context = format!("GET {}", req.url().path());
        self.authorized(&req).await?.json(&context)
    }

    /// Send `method url` with a JSON body and the bearer token; `retry` says whether the request
    /// may be repeated (see [`Retry`]).
    pub async fn send_json(
        &self,
        method: Method,
        url: Url,
        body: &serde_json::Value,
        retry: Retry,
    ) -> RemoteResult<GraphResponse> {
        let bytes = serde_json::to_vec(body).map_err(|e| RemoteError::Protocol(format!("cannot encode JSON: {e}")))?;
        let req = HttpRequest::new(method, url, retry)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(bytes);
        self.authorized(&req).await
    }

    /// Send `req` (which must not carry an `Authorization` header) with the bearer token. A 401
    /// makes the token source replace the token once; see the module doc.
    pub async fn authorized(&self, req: &HttpRequest) -> RemoteResult<GraphResponse> {
        let token = self.tokens.access_token().await?;
        match self.send_with_token(req, &token).await {
            Err(RemoteError::Unauthorized(first)) => {
                tracing::debug!(request = %first, "Graph refused the access token; getting a new one");
                let fresh = self.tokens.token_rejected(&token).await?;
                self.send_with_token(req, &fresh).await
            }
            other => other,
        }
    }

    async fn send_with_token(&self, req: &HttpRequest, token: &str) -> RemoteResult<GraphResponse> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| RemoteError::Unauthorized("the access token is not a valid header value".into()))?;
        auth.set_sensitive(true);
        let mut req = req
            .clone()
            .header(AUTHORIZATION, auth)
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        for s in DECODED_STATUSES {
            if let Ok(status) = StatusCode::from_u16(*s) {
                req = req.accept_status(status);
            }
        }
        let context = format!("{} {}", req.method(), req.url().path());
        self.http.execute(&req, |resp| read_answer(resp, context.clone())).await
    }

    /// Send `req` to a pre-authenticated URL: no bearer token, and a 401 there is the URL's
    /// problem (it expired), never the token's. `handle` consumes accepted answers as in
    /// [`HttpClient::execute`].
    pub async fn preauthenticated<T, F, Fut>(&self, req: &HttpRequest, handle: F) -> RemoteResult<T>
    where
        F: FnMut(Response) -> Fut,
        Fut: Future<Output = RemoteResult<T>>,
    {
        self.http.execute(req, handle).await
    }
}

/// Most bytes a JSON answer of Graph (or of its token endpoint) may hold. A page of children or
/// of delta holds at most a few hundred items of a few KiB each; an answer past this is a server
/// that lies or never ends, and reading it whole would take memory without bound.
pub const MAX_JSON_ANSWER: usize = 32 << 20;

/// The body of a JSON answer, read up to [`MAX_JSON_ANSWER`] bytes: a longer one (announced or
/// streamed) is a protocol error as soon as it passes the cap, before more of it is read.
pub async fn read_json_body(mut resp: Response, context: &str) -> RemoteResult<Bytes> {
    let too_long = |len: u64| {
        RemoteError::Protocol(format!(
            "{context}: an answer of {len} bytes or more, over the {MAX_JSON_ANSWER} a JSON answer may hold"
        ))
    };
    if let Some(len) = resp.content_length().filter(|l| *l > MAX_JSON_ANSWER as u64) {
        return Err(too_long(len));
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| map_reqwest_error(context, &e))? {
        if body.len() + chunk.len() > MAX_JSON_ANSWER {
            return Err(too_long((body.len() + chunk.len()) as u64));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Read a Graph answer: the body of a success, or the decoded error.
pub(super) async fn read_answer(resp: Response, context: String) -> RemoteResult<GraphResponse> {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = read_json_body(resp, &context).await?;
    if status.is_success() {
        Ok(GraphResponse { status, headers, body })
    } else {
        Err(decode_error(status, &headers, &body, &context))
    }
}
