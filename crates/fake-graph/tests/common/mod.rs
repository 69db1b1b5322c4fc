//! Shared helpers of the fake-graph integration tests: a reqwest client that never follows redirects and
//! never uses a proxy, and small accessors for status / headers / JSON error codes.
#![allow(dead_code)]

use fake_graph::{FakeGraph, FakeGraphConfig, Flavour};
use reqwest::Method;
use serde_json::Value;

pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_string())
    }

    /// Top-level error code.
    pub fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_string()
    }

    /// Every nested innerError code, outermost first.
    pub fn inner_codes(&self) -> Vec<String> {
        let mut out = Vec::new();
        let v = self.json();
        let mut cur = &v["error"]["innerError"];
        while cur.is_object() {
            if let Some(c) = cur["code"].as_str() {
                out.push(c.to_string());
            }
            cur = &cur["innerError"];
        }
        out
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}",
            self.status,
            String::from_utf8_lossy(&self.body[..self.body.len().min(600)])
        )
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .unwrap()
}

/// A client bound to one server and one access token.
pub struct Api {
    pub http: reqwest::Client,
    pub graph: String,
    pub token: Option<String>,
}

impl Api {
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{}", self.graph, path)
        }
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>, headers: &[(&str, &str)]) -> Resp {
        let mut rb = self.http.request(method, self.url(path));
        if let Some(t) = &self.token {
            rb = rb.header("Authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.body(b);
        }
        let r = rb.send().await.expect("request failed");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.expect("body");
        Resp { status, headers, body }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None, &[]).await
    }

    /// GET that must answer 200; returns the JSON.
    pub async fn get_ok(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status, 200, "GET {path}: {r:?}");
        r.json()
    }

    pub async fn put(&self, path: &str, body: &[u8]) -> Resp {
        self.send(
            Method::PUT,
            path,
            Some(body.to_vec()),
            &[("Content-Type", "application/octet-stream")],
        )
        .await
    }

    pub async fn json(&self, method: Method, path: &str, v: &Value) -> Resp {
        self.send(
            method,
            path,
            Some(v.to_string().into_bytes()),
            &[("Content-Type", "application/json")],
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, None, &[]).await
    }

    /// Follows `@odata.nextLink` until the end; returns every item.
    pub async fn list_all(&self, first: &str) -> (Vec<Value>, usize) {
        let mut out = Vec::new();
        let mut pages = 0;
        let mut next = Some(first.to_string());
        while let Some(u) = next {
            let v = self.get_ok(&u).await;
            pages += 1;
            assert!(pages < 1000, "listing never ends");
            out.extend(v["value"].as_array().unwrap().iter().cloned());
            next = v["@odata.nextLink"].as_str().map(str::to_string);
        }
        (out, pages)
    }
}

/// Starts a server with `cfg` and returns it with an Api holding a full-scope delegated token.
pub async fn start(cfg: FakeGraphConfig) -> (FakeGraph, Api) {
    let g = FakeGraph::start(cfg).await;
    let (token, _) = g.issue_tokens();
    let api = Api {
        http: http(),
        graph: g.graph_url(),
        token: Some(token),
    };
    (g, api)
}

pub async fn business() -> (FakeGraph, Api) {
    start(FakeGraphConfig::for_flavour(Flavour::Business)).await
}

pub async fn personal() -> (FakeGraph, Api) {
    start(FakeGraphConfig::for_flavour(Flavour::Personal)).await
}

/// Same server, no Authorization header.
pub fn anon(api: &Api) -> Api {
    Api {
        http: api.http.clone(),
        graph: api.graph.clone(),
        token: None,
    }
}

/// Percent-encodes one path segment the way the client must (everything but unreserved).
pub fn enc(seg: &str) -> String {
    let mut out = String::new();
    for b in seg.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Encodes a `/a/b c` path segment by segment.
pub fn enc_path(p: &str) -> String {
    p.split('/')
        .filter(|s| !s.is_empty())
        .map(enc)
        .collect::<Vec<_>>()
        .join("/")
}

/// Sends a raw HTTP/1.1 request (headers only) and returns the status code of the response; used where a
/// client library would insist on sending a body that matches Content-Length.
pub async fn raw_status(base: &str, request_head: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hostport = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(hostport).await.unwrap();
    s.write_all(request_head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Deterministic test content.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 24) as u8 ^ seed)
        .collect()
}
