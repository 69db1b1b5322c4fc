//! Error values of the Graph side (`docs/onedrive.md`, Errors) and of the identity platform (Sign-in), and how they
//! are rendered into HTTP responses.

use serde_json::{json, Map, Value};
use std::time::SystemTime;

use crate::util;

/// A Graph error: HTTP status, top-level `code`, `message`, and the chain of nested `innerError` codes
/// (outermost first). Also returned by the in-process [`DriveHandle`](crate::DriveHandle) operations, which
/// run exactly the checks the HTTP routes run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphError {
    /// HTTP status code.
    pub status: u16,
    /// Top-level error code, e.g. `itemNotFound`.
    pub code: String,
    /// Human-readable message (clients must not branch on it).
    pub message: String,
    /// Nested inner codes, outermost first (e.g. `["fragmentOverlap"]`).
    pub inner: Vec<String>,
    /// Extra response headers (e.g. `Retry-After`, `Location`).
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Display for GraphError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)?;
        for c in &self.inner {
            write!(f, " / {c}")?;
        }
        Ok(())
    }
}

impl std::error::Error for GraphError {}

impl GraphError {
    /// A new error without inner codes.
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        GraphError {
            status,
            code: code.into(),
            message: message.into(),
            inner: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// Adds a nested inner code (call repeatedly for deeper nesting).
    pub fn inner(mut self, code: &str) -> Self {
        self.inner.push(code.into());
        self
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// True if the top-level code or any inner code equals `code`.
    pub fn has_code(&self, code: &str) -> bool {
        self.code == code || self.inner.iter().any(|c| c == code)
    }

    pub(crate) fn not_found() -> Self {
        GraphError::new(404, "itemNotFound", "The resource could not be found.")
    }

    pub(crate) fn name_exists(name: &str) -> Self {
        GraphError::new(
            409,
            "nameAlreadyExists",
            format!("The specified item name already exists. Name: {name}"),
        )
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        GraphError::new(400, "invalidRequest", message)
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        GraphError::new(400, "BadRequest", message)
    }

    pub(crate) fn precondition() -> Self {
        GraphError::new(412, "resourceModified", "ETag does not match current item's value")
            .inner("entityTagDoesNotMatch")
    }

    pub(crate) fn locked() -> Self {
        GraphError::new(423, "accessDenied", "Lock token does not match existing lock").inner("resourceLocked")
    }

    pub(crate) fn quota() -> Self {
        GraphError::new(507, "quotaLimitReached", "Insufficient Space Available")
    }

    pub(crate) fn access_denied(message: impl Into<String>) -> Self {
        GraphError::new(403, "accessDenied", message)
    }

    pub(crate) fn not_supported(message: impl Into<String>) -> Self {
        GraphError::new(400, "notSupported", message)
    }

    /// JSON body: `{"error":{"code","message","innerError":{"code"?,"date","request-id","client-request-id",
    /// "innerError":{"code"}…}}}` (spelling `innerError`, decision A19).
    pub(crate) fn body(&self, ctx: &ReqIds) -> Value {
        // Build the innermost levels first.
        let mut nested: Option<Value> = None;
        for code in self.inner.iter().skip(1).rev() {
            let mut m = Map::new();
            m.insert("code".into(), json!(code));
            if let Some(n) = nested.take() {
                m.insert("innerError".into(), n);
            }
            nested = Some(Value::Object(m));
        }
        let mut first = Map::new();
        if let Some(c) = self.inner.first() {
            first.insert("code".into(), json!(c));
        }
        first.insert(
            "date".into(),
            json!(util::fmt_time(ctx.date, false).trim_end_matches('Z')),
        );
        first.insert("request-id".into(), json!(ctx.request_id));
        first.insert(
            "client-request-id".into(),
            json!(ctx.client_request_id.clone().unwrap_or_else(|| ctx.request_id.clone())),
        );
        if let Some(n) = nested {
            first.insert("innerError".into(), n);
        }
        json!({ "error": { "code": self.code, "message": self.message, "innerError": Value::Object(first) } })
    }
}

/// Correlation ids of one request (response headers `request-id` / `client-request-id`, repeated in errors).
#[derive(Clone, Debug)]
pub(crate) struct ReqIds {
    pub request_id: String,
    pub client_request_id: Option<String>,
    pub date: SystemTime,
}

/// An identity-platform error (token / devicecode endpoints), rendered as in `docs/onedrive.md`, Sign-in.
#[derive(Clone, Debug)]
pub(crate) struct AadError {
    pub status: u16,
    pub error: String,
    pub aadsts: Option<u32>,
    pub description: String,
    pub headers: Vec<(String, String)>,
}

impl AadError {
    pub fn new(error: &str, aadsts: Option<u32>, description: impl Into<String>) -> Self {
        AadError {
            status: 400,
            error: error.into(),
            aadsts,
            description: description.into(),
            headers: Vec::new(),
        }
    }

    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn body(&self, ids: &ReqIds) -> Value {
        let ts = util::fmt_aad_time(ids.date);
        let prefix = self.aadsts.map(|c| format!("AADSTS{c}: ")).unwrap_or_default();
        let desc = format!(
            "{prefix}{}\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: {ts}",
            self.description,
            ids.request_id,
            ids.client_request_id.clone().unwrap_or_else(|| ids.request_id.clone()),
        );
        let mut m = Map::new();
        m.insert("error".into(), json!(self.error));
        m.insert("error_description".into(), json!(desc));
        if let Some(c) = self.aadsts {
            m.insert("error_codes".into(), json!([c]));
        }
        m.insert("timestamp".into(), json!(ts));
        m.insert("trace_id".into(), json!(ids.request_id));
        m.insert(
            "correlation_id".into(),
            json!(ids.client_request_id.clone().unwrap_or_else(|| ids.request_id.clone())),
        );
        if let Some(c) = self.aadsts {
            m.insert(
                "error_uri".into(),
                json!(format!("https://login.microsoftonline.com/error?code={c}")),
            );
        }
        Value::Object(m)
    }
}
