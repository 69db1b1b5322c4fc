//! Graph routes under `/v1.0`: parsing of the addressing forms (`docs/onedrive.md`, Addressing) and the handlers for
//! drives, sites, items, children, content, folders, rename/move, delete and copy (`docs/onedrive.md`). Upload sessions
//! are in `upload.rs`, delta in `delta.rs`.
//!
//! Addressing: the raw (still percent-encoded) URL path is split on literal `:` and `/`; each path segment is
//! percent-decoded exactly once (`+` stays a plus, `%3A` is a colon inside a name, not a delimiter) and looked
//! up case-insensitively. Keywords (`root`, `items`, `children`, …) are matched case-insensitively.

use axum::body::Body;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::Flavour;
use crate::error::{GraphError, ReqIds};
use crate::identity::{AccessToken, Need, Principal};
use crate::model::{tag_matches, Conflict, Hasher, Hashes, Patch, PutTarget, MAX_SIMPLE_PUT};
use crate::server::{empty, graph_error, header_str, json_resp, quote_etag, set_header};
use crate::state::{drive_not_found, JobStatus, Shared, State};
use crate::stats::RouteClass;
use crate::util;

/// A site reference in `/sites/...`.
#[derive(Clone, Debug)]
pub(crate) enum SiteRef {
    Root,
    Host(String),
    HostPath(String, String),
    Id(String),
}

/// How the drive is named in the URL.
#[derive(Clone, Debug)]
pub(crate) enum DriveRef {
    Me,
    Id(String),
    User(String),
    Site(SiteRef),
}

/// The item the address starts from.
#[derive(Clone, Debug)]
pub(crate) enum Base {
    Root,
    Id(String),
}

/// What follows the item address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Suffix {
    None,
    Children,
    Content,
    CreateUploadSession,
    Copy,
    Delta,
}

#[derive(Clone, Debug)]
pub(crate) struct ItemAddr {
    pub drive: DriveRef,
    pub base: Base,
    /// Decoded path segments after the first `:` (empty when addressed by id/root only).
    pub path: Vec<String>,
    pub suffix: Suffix,
}

/// A parsed Graph route.
#[derive(Clone, Debug)]
pub(crate) enum Route {
    Me,
    MeDrives,
    User(String),
    UserDrives(String),
    Drive(DriveRef),
    Site(SiteRef),
    SiteDrives(SiteRef),
    Item(ItemAddr),
}

impl Route {
    /// Route class for counters and faults.
    pub fn class(&self, method: &str) -> RouteClass {
        let read = method == "GET" || method == "HEAD";
        match self {
            Route::Item(a) => match a.suffix {
                Suffix::None if read => RouteClass::Metadata,
                Suffix::Children if read => RouteClass::Children,
                Suffix::Content if read => RouteClass::Content,
                Suffix::Content if method == "PUT" => RouteClass::SimpleUpload,
                Suffix::CreateUploadSession => RouteClass::CreateSession,
                Suffix::Delta => RouteClass::Delta,
                _ => RouteClass::Write,
            },
            _ => RouteClass::DriveInfo,
        }
    }
}

fn segment_error(seg: &str) -> GraphError {
    GraphError::bad_request(format!("Resource not found for the segment '{seg}'."))
}

fn decode(raw: &str) -> Result<String, GraphError> {
    util::decode_segment(raw).ok_or_else(|| {
        GraphError::invalid("The path segment is not valid UTF-8 after percent-decoding").inner("invalidPath")
    })
}

fn starts_kw(s: &str, kw: &str) -> bool {
    s.len() >= kw.len() && s[..kw.len()].eq_ignore_ascii_case(kw)
}

/// Parses the part after `/v1.0/` (raw, percent-encoded).
pub(crate) fn parse_route(rest: &str) -> Result<Route, GraphError> {
    let (first, tail) = match rest.split_once('/') {
        Some((f, t)) => (f, Some(t)),
        None => (rest, None),
    };
    match first.to_ascii_lowercase().as_str() {
        "me" => match tail {
            None | Some("") => Ok(Route::Me),
            Some(t) => {
                let (seg, more) = split1(t);
                match (seg.to_ascii_lowercase().as_str(), more) {
                    ("drive", None) | ("drive", Some("")) => Ok(Route::Drive(DriveRef::Me)),
                    ("drives", None) | ("drives", Some("")) => Ok(Route::MeDrives),
                    ("drive", Some(m)) => parse_item(DriveRef::Me, m),
                    _ => Err(segment_error(seg)),
                }
            }
        },
        "drives" => {
            let t = tail
                .filter(|t| !t.is_empty())
                .ok_or_else(|| GraphError::bad_request("A drive id is required"))?;
            let (d, more) = split1(t);
            let d = decode(d)?;
            match more {
                None | Some("") => Ok(Route::Drive(DriveRef::Id(d))),
                Some(m) => parse_item(DriveRef::Id(d), m),
            }
        }
        "users" => {
            let t = tail
                .filter(|t| !t.is_empty())
                .ok_or_else(|| GraphError::bad_request("A user id is required"))?;
            let (u, more) = split1(t);
            let u = decode(u)?;
            match more {
                None | Some("") => Ok(Route::User(u)),
                Some(m) => {
                    let (seg, more) = split1(m);
                    match (seg.to_ascii_lowercase().as_str(), more) {
                        ("drive", None) | ("drive", Some("")) => Ok(Route::Drive(DriveRef::User(u))),
                        ("drives", None) | ("drives", Some("")) => Ok(Route::UserDrives(u)),
                        ("drive", Some(m)) => parse_item(DriveRef::User(u), m),
                        _ => Err(segment_error(seg)),
                    }
                }
            }
        }
        "sites" => {
            let t = tail
                .filter(|t| !t.is_empty())
                .ok_or_else(|| GraphError::bad_request("A site id is required"))?;
            let (site, more) = parse_site(t)?;
            match more {
                None => Ok(Route::Site(site)),
                Some(m) => {
                    let (seg, more) = split1(m);
                    match (seg.to_ascii_lowercase().as_str(), more) {
                        ("", None) => Ok(Route::Site(site)),
                        ("drive", None) | ("drive", Some("")) => Ok(Route::Drive(DriveRef::Site(site))),
                        ("drives", None) | ("drives", Some("")) => Ok(Route::SiteDrives(site)),
                        ("drive", Some(m)) => parse_item(DriveRef::Site(site), m),
                        _ => Err(segment_error(seg)),
                    }
                }
            }
        }
        _ => Err(segment_error(first)),
    }
}

fn split1(s: &str) -> (&str, Option<&str>) {
    match s.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    }
}

/// `root`, `{host}`, `{host}:/{path}[:]`, `{site-id}` — returns the site and what follows (after a `/`).
fn parse_site(t: &str) -> Result<(SiteRef, Option<&str>), GraphError> {
    if starts_kw(t, "root") && (t.len() == 4 || t.as_bytes()[4] == b'/') {
        return Ok((SiteRef::Root, t.get(5..)));
    }
    let colon = t.find(':');
    let slash = t.find('/');
    match (colon, slash) {
        (Some(c), s) if s.is_none_or(|s| c < s) => {
            let host = decode(&t[..c])?;
            let after = &t[c + 1..];
            let (path_raw, rest) = match after.find(':') {
                Some(i) => (&after[..i], Some(&after[i + 1..])),
                None => (after, None),
            };
            let segs: Result<Vec<String>, GraphError> =
                path_raw.split('/').filter(|s| !s.is_empty()).map(decode).collect();
            let path = format!("/{}", segs?.join("/"));
            let rest = match rest {
                None | Some("") => None,
                Some(r) => Some(r.strip_prefix('/').ok_or_else(|| segment_error(r))?),
            };
            Ok((SiteRef::HostPath(host, path), rest))
        }
        _ => {
            let (seg, more) = split1(t);
            let seg = decode(seg)?;
            let site = if seg.contains(',') {
                SiteRef::Id(seg)
            } else {
                SiteRef::Host(seg)
            };
            Ok((site, more))
        }
    }
}

/// `root[…]`, `items/{id}[…]` followed by `:/path[:]` and/or `/suffix`.
fn parse_item(drive: DriveRef, s: &str) -> Result<Route, GraphError> {
    let (base, after) = if starts_kw(s, "root") && (s.len() == 4 || matches!(s.as_bytes()[4], b':' | b'/')) {
        (Base::Root, &s[4..])
    } else if starts_kw(s, "items/") {
        let rest = &s[6..];
        let end = rest.find(['/', ':']).unwrap_or(rest.len());
        let id = decode(&rest[..end])?;
        if id.is_empty() {
            return Err(GraphError::bad_request("An item id is required"));
        }
        (Base::Id(id), &rest[end..])
    } else if starts_kw(s, "special") {
        return Err(GraphError::not_supported(
            "Special folders are not modelled by the fake Graph server",
        ));
    } else {
        return Err(segment_error(s.split(['/', ':']).next().unwrap_or(s)));
    };
    let (path, suffix_raw) = if let Some(p) = after.strip_prefix(':') {
        let (path_raw, suffix_raw) = match p.find(':') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (p, ""),
        };
        let segs: Result<Vec<String>, GraphError> = path_raw.split('/').filter(|x| !x.is_empty()).map(decode).collect();
        (segs?, suffix_raw)
    } else {
        (Vec::new(), after)
    };
    let suffix_name = match suffix_raw {
        "" | "/" => "",
        s if s.starts_with('/') => s[1..].trim_end_matches('/'),
        s => return Err(segment_error(s)),
    };
    let suffix = match suffix_name.to_ascii_lowercase().as_str() {
        "" => Suffix::None,
        "children" => Suffix::Children,
        "content" => Suffix::Content,
        "createuploadsession" => Suffix::CreateUploadSession,
        "copy" => Suffix::Copy,
        "delta" => Suffix::Delta,
        _ => return Err(segment_error(suffix_name)),
    };
    Ok(Route::Item(ItemAddr {
        drive,
        base,
        path,
        suffix,
    }))
}

fn method_not_allowed() -> GraphError {
    GraphError::new(405, "BadRequest", "The HTTP method is not allowed on this resource.")
}

/// Reads a query option (names are case-sensitive).
pub(crate) fn qget<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// `$select` list, if given.
pub(crate) fn select_of(q: &[(String, String)]) -> Option<Vec<String>> {
    qget(q, "$select").map(|s| {
        s.split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect()
    })
}

/// Applies `$select` to a driveItem: keeps the listed properties, always `id` (and `deleted` in delta).
/// `@microsoft.graph.downloadUrl` is only kept when listed explicitly (`docs/onedrive.md`, Items and versions).
pub(crate) fn apply_select(v: Value, select: Option<&[String]>) -> Value {
    let Some(sel) = select else { return v };
    let Value::Object(m) = v else { return v };
    let keep = |k: &str| k == "id" || k == "deleted" || sel.iter().any(|s| s.eq_ignore_ascii_case(k));
    Value::Object(m.into_iter().filter(|(k, _)| keep(k)).collect())
}

/// Query/body `@microsoft.graph.conflictBehavior` (A3: query wins).
fn conflict_of(q: &[(String, String)], body: Option<&Value>, default: Conflict) -> Result<Conflict, GraphError> {
    if let Some(c) = qget(q, "@microsoft.graph.conflictBehavior") {
        return Conflict::parse(c);
    }
    if let Some(c) = body
        .and_then(|b| b.get("@microsoft.graph.conflictBehavior"))
        .and_then(Value::as_str)
    {
        return Conflict::parse(c);
    }
    Ok(default)
}

fn parse_json_body(body: &Bytes, required: bool) -> Result<Option<Value>, GraphError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return if required {
            Err(GraphError::invalid("A request body is required"))
        } else {
            Ok(None)
        };
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(Some(v)),
        Ok(_) => Err(GraphError::invalid("The request body must be a JSON object")),
        Err(e) => Err(GraphError::invalid(format!("Unable to read JSON request payload: {e}"))),
    }
}

fn parse_time_field(v: &Value, what: &str) -> Result<SystemTime, GraphError> {
    v.as_str()
        .and_then(util::parse_time)
        .ok_or_else(|| GraphError::invalid(format!("Invalid value for {what}")))
}

/// The async entry point for `/v1.0/...`: authenticate, read the body (with the simple-upload limit for
/// `PUT …/content`), then run the handler under the state lock.
pub(crate) async fn handle(shared: Arc<Shared>, route: Route, req: Request, ids: &ReqIds, now: SystemTime) -> Response {
    let (parts, body) = req.into_parts();
    let tok = match shared
        .lock()
        .auth
        .authenticate(header_str(&parts.headers, "authorization"), now)
    {
        Ok(t) => t,
        Err(e) => return graph_error(&e, ids),
    };
    let is_put_content = matches!(&route, Route::Item(a) if a.suffix == Suffix::Content) && parts.method == "PUT";
    let too_big = || {
        GraphError::new(
            413,
            "invalidRequest",
            "The request body exceeds the maximum size of a simple upload (250 MB); use an upload session",
        )
        .inner("maxFileSizeExceeded")
    };
    if is_put_content {
        let declared = header_str(&parts.headers, "content-length").and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_SIMPLE_PUT) {
            return graph_error(&too_big(), ids);
        }
    }
    let limit = if is_put_content {
        MAX_SIMPLE_PUT as usize
    } else {
        4 << 20
    };
    let body = match axum::body::to_bytes(Body::new(body), limit).await {
        Ok(b) if is_put_content => crate::faults::maybe_corrupt(&shared, b),
        Ok(b) => b,
        Err(_) if is_put_content => return graph_error(&too_big(), ids),
        Err(_) => {
            return graph_error(
                &GraphError::invalid("The request body is too large or could not be read"),
                ids,
            )
        }
    };
    let hashes = if is_put_content {
        let personal = shared.lock().cfg.flavour == Flavour::Personal;
        let b = body.clone();
        // Hash outside the lock (files up to 250 MB).
        Some(
            tokio::task::spawn_blocking(move || Hasher::of(&b, personal))
                .await
                .expect("hash task"),
        )
    } else {
        None
    };
    let mut st = shared.lock();
    match st.route(&shared, &route, &tok, &parts, body, hashes, now) {
        Ok(r) => r,
        Err(e) => graph_error(&e, ids),
    }
}

impl State {
    fn user_json(&self) -> Value {
        json!({
            "id": self.user.id,
            "displayName": self.user.display_name,
            "userPrincipalName": self.user.upn,
            "mail": self.user.upn,
        })
    }

    fn require_user(&self, tok: &AccessToken) -> Result<(), GraphError> {
        if tok.principal == Principal::App {
            return Err(GraphError::bad_request(
                "/me request is only valid with delegated authentication flow.",
            ));
        }
        Ok(())
    }

    fn check_user(&self, u: &str) -> Result<(), GraphError> {
        if u.eq_ignore_ascii_case(&self.user.id) || u.eq_ignore_ascii_case(&self.user.upn) {
            Ok(())
        } else {
            Err(GraphError::new(
                404,
                "itemNotFound",
                format!("User '{u}' was not found"),
            ))
        }
    }

    fn check_scope(&self, tok: &AccessToken, need: Need) -> Result<(), GraphError> {
        if self.cfg.enforce_scopes && !tok.allows(need) {
            return Err(GraphError::access_denied(
                "Access denied. The token does not carry a scope for this request.",
            ));
        }
        Ok(())
    }

    fn resolve_site(&self, s: &SiteRef) -> Result<usize, GraphError> {
        if self.cfg.flavour == Flavour::Personal {
            return Err(GraphError::bad_request("Tenant does not have a SPO license."));
        }
        let host_ok = |h: &str| h.eq_ignore_ascii_case("contoso.sharepoint.com");
        let found = match s {
            SiteRef::Root => self.sites.iter().position(|x| x.is_root),
            SiteRef::Host(h) if host_ok(h) => self.sites.iter().position(|x| x.is_root),
            SiteRef::Host(_) => None,
            SiteRef::Id(id) => self.sites.iter().position(|x| x.id.eq_ignore_ascii_case(id)),
            SiteRef::HostPath(h, p) if host_ok(h) => {
                let p = p.trim_end_matches('/').to_lowercase();
                self.sites.iter().position(|x| x.server_path == p)
            }
            SiteRef::HostPath(..) => None,
        };
        found.ok_or_else(|| GraphError::new(404, "itemNotFound", "Requested site could not be found"))
    }

    fn resolve_drive(&self, dr: &DriveRef, tok: &AccessToken) -> Result<usize, GraphError> {
        match dr {
            DriveRef::Me => {
                self.require_user(tok)?;
                Ok(0)
            }
            DriveRef::Id(id) => self.drive_index(id).ok_or_else(drive_not_found),
            DriveRef::User(u) => {
                self.check_user(u)?;
                Ok(0)
            }
            DriveRef::Site(s) => {
                let si = self.resolve_site(s)?;
                Ok(self.sites[si].drives[0])
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        shared: &Arc<Shared>,
        route: &Route,
        tok: &AccessToken,
        parts: &Parts,
        body: Bytes,
        hashes: Option<Hashes>,
        now: SystemTime,
    ) -> Result<Response, GraphError> {
        let method = parts.method.as_str();
        let read = method == "GET" || method == "HEAD";
        let q = util::parse_query(parts.uri.query());
        let read_need = |sites: bool, other: bool| Need {
            write: false,
            other_drive: other,
            sites,
        };
        match route {
            Route::Item(addr) => self.item_route(shared, addr, tok, parts, &q, body, hashes, now),
            _ if !read => Err(method_not_allowed()),
            Route::Me => {
                self.require_user(tok)?;
                Ok(json_resp(200, &self.user_json()))
            }
            Route::User(u) => {
                self.check_user(u)?;
                Ok(json_resp(200, &self.user_json()))
            }
            Route::MeDrives | Route::UserDrives(_) => {
                match route {
                    Route::UserDrives(u) => self.check_user(u)?,
                    _ => self.require_user(tok)?,
                }
                self.check_scope(tok, read_need(false, false))?;
                Ok(json_resp(200, &json!({ "value": [self.drives[0].render_drive()] })))
            }
            Route::Drive(dr) => {
                let di = self.resolve_drive(dr, tok)?;
                self.check_scope(tok, read_need(matches!(dr, DriveRef::Site(_)), di != 0))?;
                Ok(json_resp(200, &self.drives[di].render_drive()))
            }
            Route::Site(s) => {
                let si = self.resolve_site(s)?;
                self.check_scope(tok, read_need(true, true))?;
                Ok(json_resp(200, &self.render_site(si)))
            }
            Route::SiteDrives(s) => {
                let si = self.resolve_site(s)?;
                self.check_scope(tok, read_need(true, true))?;
                let v: Vec<Value> = self.sites[si]
                    .drives
                    .iter()
                    .map(|&d| self.drives[d].render_drive())
                    .collect();
                Ok(json_resp(200, &json!({ "value": v })))
            }
        }
    }

    /// (parent, name) target of a content write addressed by `base` + `path`.
    fn write_target(&self, di: usize, base: &str, path: &[String]) -> Result<PutTarget, GraphError> {
        match path.split_last() {
            None => Ok(PutTarget::Existing(base.to_string())),
            Some((name, parents)) => {
                // A18: missing parent folders are not created → 404.
                let parent = self.drives[di].resolve(base, parents)?;
                Ok(PutTarget::Child {
                    parent,
                    name: name.clone(),
                })
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn item_route(
        &mut self,
        shared: &Arc<Shared>,
        addr: &ItemAddr,
        tok: &AccessToken,
        parts: &Parts,
        q: &[(String, String)],
        body: Bytes,
        hashes: Option<Hashes>,
        now: SystemTime,
    ) -> Result<Response, GraphError> {
        let method = parts.method.as_str();
        let read = method == "GET" || method == "HEAD";
        let di = self.resolve_drive(&addr.drive, tok)?;
        self.check_scope(
            tok,
            Need {
                write: !read,
                other_drive: di != 0,
                sites: matches!(addr.drive, DriveRef::Site(_)),
            },
        )?;
        let drive = &self.drives[di];
        let base = match &addr.base {
            Base::Root => drive.root_id.clone(),
            Base::Id(id) if id.eq_ignore_ascii_case("root") => drive.root_id.clone(),
            Base::Id(id) => drive.get(id)?.id.clone(),
        };
        let headers = &parts.headers;
        let if_match = header_str(headers, "if-match").map(str::to_string);
        let resolve = |st: &State| st.drives[di].resolve(&base, &addr.path);
        match (addr.suffix, method) {
            (Suffix::None, "GET" | "HEAD") => {
                let id = resolve(self)?;
                self.get_item(di, &id, q, headers, now)
            }
            (Suffix::None, "PATCH") => {
                let id = resolve(self)?;
                self.patch_item(shared, di, &id, q, &body, if_match.as_deref(), now)
            }
            (Suffix::None, "DELETE") => {
                let id = resolve(self)?;
                self.drives[di].delete(&id, if_match.as_deref(), now)?;
                Ok(empty(204))
            }
            (Suffix::None, "PUT") => Err(GraphError::new(
                501,
                "notSupported",
                "Committing an upload session by sourceUrl is not supported by the fake server",
            )),
            (Suffix::Children, "GET" | "HEAD") => {
                let id = resolve(self)?;
                let v = self.list_children(di, &id, q, now)?;
                Ok(json_resp(200, &v))
            }
            (Suffix::Children, "POST") => {
                let parent = resolve(self)?;
                let body = parse_json_body(&body, true)?.unwrap_or_default();
                let name = body
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| GraphError::invalid("The 'name' property is required"))?
                    .to_string();
                if body.get("folder").is_none() {
                    return Err(GraphError::invalid(
                        "Only folders can be created with POST …/children (the 'folder' facet is required)",
                    ));
                }
                let conflict = conflict_of(q, Some(&body), Conflict::Fail)?;
                let id = self.drives[di].create_folder(&parent, &name, conflict, now)?;
                let v = self.render_item(di, &id, false, now);
                Ok(json_resp(201, &v))
            }
            (Suffix::Content, "GET" | "HEAD") => {
                let id = resolve(self)?;
                let d = &self.drives[di];
                if d.items[&id].is_folder() {
                    return Err(GraphError::invalid("Content is only available for files"));
                }
                if let Some(inm) = header_str(headers, "if-none-match") {
                    if tag_matches(&d.etag(&id), &d.ctag(&id), inm) {
                        let mut r = empty(304);
                        set_header(&mut r, "ETag", &quote_etag(&d.etag(&id)));
                        return Ok(r);
                    }
                }
                let tok = self
                    .downloads
                    .issue(&self.drives[di], &id, self.cfg.download_url_ttl, now);
                let mut r = empty(302);
                set_header(&mut r, "Location", &format!("{}/_dl/{tok}", self.base));
                Ok(r)
            }
            (Suffix::Content, "PUT") => {
                let target = self.write_target(di, &base, &addr.path)?;
                let conflict = conflict_of(q, None, Conflict::Replace)?;
                let hashes = hashes.unwrap_or_else(|| Hasher::of(&body, self.drives[di].personal));
                let (id, created) = self.drives[di].put_content(
                    &target,
                    body,
                    hashes,
                    (None, None),
                    conflict,
                    if_match.as_deref(),
                    now,
                )?;
                let v = self.render_item(di, &id, false, now);
                Ok(json_resp(if created { 201 } else { 200 }, &v))
            }
            (Suffix::CreateUploadSession, "POST") => {
                let target = self.write_target(di, &base, &addr.path)?;
                let body = parse_json_body(&body, false)?;
                let inm = header_str(headers, "if-none-match");
                let v = self.create_upload_session(di, target, body.as_ref(), q, if_match.as_deref(), inm, now)?;
                Ok(json_resp(200, &v))
            }
            (Suffix::Copy, "POST") => {
                let id = resolve(self)?;
                let body = parse_json_body(&body, false)?;
                self.copy_item(shared, di, &id, body.as_ref(), q, now)
            }
            (Suffix::Delta, "GET" | "HEAD") => {
                let id = resolve(self)?;
                let v = self.delta(di, &id, q, now)?;
                Ok(json_resp(200, &v))
            }
            _ => Err(method_not_allowed()),
        }
    }

    fn get_item(
        &mut self,
        di: usize,
        id: &str,
        q: &[(String, String)],
        headers: &axum::http::HeaderMap,
        now: SystemTime,
    ) -> Result<Response, GraphError> {
        let d = &self.drives[di];
        let etag = d.etag(id);
        if let Some(inm) = header_str(headers, "if-none-match") {
            if tag_matches(&etag, &d.ctag(id), inm) {
                let mut r = empty(304);
                set_header(&mut r, "ETag", &quote_etag(&etag));
                return Ok(r);
            }
        }
        let select = select_of(q);
        let v = self.render_item(di, id, false, now);
        let mut v = self.drop_selected_download_url(apply_select(v, select.as_deref()), select.is_some());
        let expand_children = qget(q, "$expand").is_some_and(|e| e.split(',').any(|x| starts_kw(x.trim(), "children")));
        if expand_children && self.drives[di].items[id].is_folder() {
            // First page of children; further pages through `children@odata.nextLink`.
            let page = self.list_children(di, id, &[], now)?;
            v["children"] = page["value"].clone();
            if let Some(n) = page.get("@odata.nextLink") {
                v["children@odata.nextLink"] = n.clone();
            }
        }
        let mut r = json_resp(200, &v);
        set_header(&mut r, "ETag", &quote_etag(&etag));
        Ok(r)
    }

    /// The [`omit_selected_download_urls`](crate::Faults::omit_selected_download_urls) mode.
    fn drop_selected_download_url(&self, mut v: Value, selected: bool) -> Value {
        if selected && self.faults.omit_selected_download_urls {
            if let Some(m) = v.as_object_mut() {
                m.remove("@microsoft.graph.downloadUrl");
            }
        }
        v
    }

    /// `GET …/children` with `$top` (1..=1000, A20), `$skiptoken`, `$orderby`, `$select`.
    pub(crate) fn list_children(
        &mut self,
        di: usize,
        id: &str,
        q: &[(String, String)],
        now: SystemTime,
    ) -> Result<Value, GraphError> {
        let top = match qget(q, "$top") {
            None => self.cfg.page_size,
            Some(t) => match t.trim().parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => n,
                _ => {
                    return Err(GraphError::invalid(format!(
                        "Invalid $top value '{t}': must be between 1 and 1000"
                    )))
                }
            },
        };
        let skip = match qget(q, "$skiptoken") {
            None => 0,
            Some(t) => decode_skiptoken(t).ok_or_else(|| GraphError::invalid("Invalid $skiptoken"))?,
        };
        let d = &self.drives[di];
        let mut kids = d.children(id);
        if let Some(ob) = qget(q, "$orderby") {
            let mut it = ob.split_whitespace();
            let field = it.next().unwrap_or("");
            let desc = match it.next() {
                None => false,
                Some(o) if o.eq_ignore_ascii_case("asc") => false,
                Some(o) if o.eq_ignore_ascii_case("desc") => true,
                Some(_) => return Err(GraphError::invalid(format!("Invalid $orderby '{ob}'"))),
            };
            match field {
                "name" => {}
                "size" | "lastModifiedDateTime" if d.personal => {
                    if field == "size" {
                        kids.sort_by_key(|k| d.size_of(k));
                    } else {
                        kids.sort_by_key(|k| d.items[k].modified);
                    }
                }
                _ => {
                    return Err(GraphError::invalid(format!(
                        "$orderby is not supported on '{field}' for this drive"
                    )))
                }
            }
            if desc {
                kids.reverse();
            }
        }
        let total = kids.len();
        let page: Vec<String> = kids.into_iter().skip(skip).take(top).collect();
        let select = select_of(q);
        let mut value = Vec::with_capacity(page.len());
        for k in &page {
            let v = self.render_item(di, k, false, now);
            value.push(self.drop_selected_download_url(apply_select(v, select.as_deref()), select.is_some()));
        }
        let mut out = json!({ "value": value });
        if skip + page.len() < total {
            let mut ser = form_urlencoded::Serializer::new(String::new());
            for (k, v) in q.iter().filter(|(k, _)| k != "$skiptoken") {
                ser.append_pair(k, v);
            }
            ser.append_pair("$skiptoken", &encode_skiptoken(skip + page.len()));
            let d = &self.drives[di];
            out["@odata.nextLink"] = json!(format!(
                "{}/drives/{}/items/{}/children?{}",
                self.graph_base(),
                util::encode_query(&d.id),
                util::encode_query(id),
                ser.finish()
            ));
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn patch_item(
        &mut self,
        shared: &Arc<Shared>,
        di: usize,
        id: &str,
        q: &[(String, String)],
        body: &Bytes,
        if_match: Option<&str>,
        now: SystemTime,
    ) -> Result<Response, GraphError> {
        let body = parse_json_body(body, true)?.unwrap_or_default();
        let obj = body.as_object().cloned().unwrap_or_default();
        let d = &self.drives[di];
        let mut patch = Patch::default();
        for (k, v) in &obj {
            match k.as_str() {
                "name" => {
                    patch.name = Some(
                        v.as_str()
                            .ok_or_else(|| GraphError::invalid("'name' must be a string"))?
                            .to_string(),
                    )
                }
                "parentReference" => patch.parent = Some(self.parent_from_reference(di, v)?),
                "fileSystemInfo" => {
                    let m = v
                        .as_object()
                        .ok_or_else(|| GraphError::invalid("'fileSystemInfo' must be an object"))?;
                    if let Some(c) = m.get("createdDateTime") {
                        patch.fs_created = Some(parse_time_field(c, "fileSystemInfo.createdDateTime")?);
                    }
                    if let Some(c) = m.get("lastModifiedDateTime") {
                        patch.fs_modified = Some(parse_time_field(c, "fileSystemInfo.lastModifiedDateTime")?);
                    }
                }
                "id" if v.as_str() == Some(id) => {}
                "id"
                | "size"
                | "eTag"
                | "cTag"
                | "createdDateTime"
                | "lastModifiedDateTime"
                | "file"
                | "folder"
                | "root"
                | "webUrl"
                | "createdBy"
                | "lastModifiedBy"
                | "deleted"
                | "@microsoft.graph.downloadUrl" => {
                    return Err(
                        GraphError::invalid(format!("Property '{k}' is read-only")).inner("propertyNotUpdateable")
                    );
                }
                _ => {}
            }
        }
        let conflict = conflict_of(q, Some(&body), Conflict::Fail)?;
        let moving = patch
            .parent
            .as_ref()
            .is_some_and(|p| Some(p) != d.items[id].parent.as_ref());
        if moving && self.faults.async_moves {
            // A17: asynchronous move — validated now, applied after `async_op_delay`; 202 + monitor URL.
            self.drives[di].check_patch(id, &patch, conflict, if_match)?;
            let fail = self.take_async_failure();
            let (job, url) = self.new_job("ItemMove", JobStatus::InProgress, now);
            let item_id = id.to_string();
            self.run_job(shared, move |st: &mut State| {
                let status = if fail {
                    JobStatus::Failed {
                        code: "generalException".into(),
                        message: "The move failed (injected)".into(),
                    }
                } else {
                    match st.drives[di].update(&item_id, &patch, conflict, None, SystemTime::now()) {
                        Ok(()) => JobStatus::Completed {
                            resource_id: item_id.clone(),
                        },
                        Err(e) => JobStatus::Failed {
                            code: e.code,
                            message: e.message,
                        },
                    }
                };
                if let Some(j) = st.jobs.get_mut(&job) {
                    j.status = status;
                }
            });
            let mut r = empty(202);
            set_header(&mut r, "Location", &url);
            return Ok(r);
        }
        self.drives[di].update(id, &patch, conflict, if_match, now)?;
        let v = self.render_item(di, id, false, now);
        Ok(json_resp(200, &v))
    }

    /// `parentReference` of a PATCH: `id` (a real id — `root` is not an alias here), or `path`
    /// (`/drive/root:/a/b`); `driveId`, if given, must be this drive (cross-drive moves are not supported).
    fn parent_from_reference(&self, di: usize, v: &Value) -> Result<String, GraphError> {
        let d = &self.drives[di];
        let m = v
            .as_object()
            .ok_or_else(|| GraphError::invalid("'parentReference' must be an object"))?;
        if let Some(drive_id) = m.get("driveId").and_then(Value::as_str) {
            if drive_id != d.id {
                return Err(GraphError::invalid("Moving items between drives is not supported"));
            }
        }
        if let Some(pid) = m.get("id").and_then(Value::as_str) {
            if pid.eq_ignore_ascii_case("root") && !d.items.contains_key(pid) {
                return Err(GraphError::invalid(
                    "parentReference.id must be a real item id ('root' is not an alias here)",
                ));
            }
            return Ok(d.get(pid)?.id.clone());
        }
        if let Some(path) = m.get("path").and_then(Value::as_str) {
            let rel = path.split_once(':').map(|(_, r)| r).unwrap_or("");
            let segs: Result<Vec<String>, GraphError> = rel.split('/').filter(|s| !s.is_empty()).map(decode).collect();
            return d.resolve(&d.root_id, &segs?);
        }
        Err(GraphError::invalid("parentReference needs an 'id'"))
    }

    /// Runs a long-running operation now (`async_op_delay` zero) or after the delay on a task.
    fn run_job(&mut self, shared: &Arc<Shared>, finish: impl FnOnce(&mut State) + Send + 'static) {
        let delay = self.cfg.async_op_delay;
        if delay.is_zero() {
            finish(self);
        } else {
            let shared = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                finish(&mut shared.lock());
            });
        }
    }

    pub(crate) fn take_async_failure(&mut self) -> bool {
        if self.faults.fail_async_ops > 0 {
            self.faults.fail_async_ops -= 1;
            true
        } else {
            false
        }
    }

    fn copy_item(
        &mut self,
        shared: &Arc<Shared>,
        di: usize,
        id: &str,
        body: Option<&Value>,
        q: &[(String, String)],
        now: SystemTime,
    ) -> Result<Response, GraphError> {
        let pr = body.and_then(|b| b.get("parentReference"));
        let dest_di = match pr.and_then(|p| p.get("driveId")).and_then(Value::as_str) {
            Some(d) => self.drive_index(d).ok_or_else(drive_not_found)?,
            None => di,
        };
        let src = &self.drives[di];
        let dest_parent = match pr.and_then(|p| p.get("id")).and_then(Value::as_str) {
            Some(p) => self.drives[dest_di].get(p)?.id.clone(),
            None => {
                if dest_di != di {
                    return Err(GraphError::invalid(
                        "parentReference.id is required when copying to another drive",
                    ));
                }
                src.items[id]
                    .parent
                    .clone()
                    .ok_or_else(|| GraphError::invalid("The root cannot be copied"))?
            }
        };
        let name = match body.and_then(|b| b.get("name")) {
            Some(n) => n
                .as_str()
                .ok_or_else(|| GraphError::invalid("'name' must be a string"))?
                .to_string(),
            None => src.items[id].name.clone(),
        };
        // conflictBehavior on copy is not supported on personal drives (always fail there).
        let conflict = if src.personal {
            Conflict::Fail
        } else {
            conflict_of(q, None, Conflict::Fail)?
        };
        let node = src.export(id);
        let is_folder = node.file.is_none();
        let size = crate::model::Drive::export_size(&node);
        self.drives[dest_di].check_copy_target(&dest_parent, &name, is_folder, size, conflict)?;
        let fail = self.take_async_failure();
        let (job, url) = self.new_job("ItemCopy", JobStatus::InProgress, now);
        let finish = move |st: &mut State| {
            let status = if fail {
                JobStatus::Failed {
                    code: "generalException".into(),
                    message: "The copy failed (injected)".into(),
                }
            } else {
                match st.drives[dest_di].import(&dest_parent, &name, &node, conflict, SystemTime::now()) {
                    Ok(new_id) => JobStatus::Completed { resource_id: new_id },
                    Err(e) => JobStatus::Failed {
                        code: e.code,
                        message: e.message,
                    },
                }
            };
            if let Some(j) = st.jobs.get_mut(&job) {
                j.status = status;
            }
        };
        self.run_job(shared, finish);
        let mut r = empty(202);
        set_header(&mut r, "Location", &url);
        Ok(r)
    }
}

fn encode_skiptoken(offset: usize) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("o.{offset}"))
}

fn decode_skiptoken(t: &str) -> Option<usize> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t.trim()).ok()?;
    String::from_utf8(raw).ok()?.strip_prefix("o.")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(r: Route) -> ItemAddr {
        match r {
            Route::Item(a) => a,
            other => panic!("not an item route: {other:?}"),
        }
    }

    #[test]
    fn addressing() {
        let a = item(parse_route("me/drive/root:/a%20b/c%23d%25e+f%3Ag.txt:/content").unwrap());
        assert!(matches!(a.drive, DriveRef::Me));
        assert!(matches!(a.base, Base::Root));
        assert_eq!(a.path, vec!["a b", "c#d%e+f:g.txt"]);
        assert_eq!(a.suffix, Suffix::Content);

        let a = item(parse_route("drives/b%21abc/items/01XYZ:/sub/x.bin:").unwrap());
        assert!(matches!(&a.drive, DriveRef::Id(d) if d == "b!abc"));
        assert!(matches!(&a.base, Base::Id(i) if i == "01XYZ"));
        assert_eq!(a.path, vec!["sub", "x.bin"]);
        assert_eq!(a.suffix, Suffix::None);

        let a = item(parse_route("drives/d/items/ABC!12/children").unwrap());
        assert!(matches!(&a.base, Base::Id(i) if i == "ABC!12"));
        assert_eq!(a.suffix, Suffix::Children);

        let a = item(parse_route("me/drive/root:/a/b").unwrap());
        assert_eq!(a.path, vec!["a", "b"]);
        let a = item(parse_route("me/drive/root:").unwrap());
        assert!(a.path.is_empty());
        let a = item(parse_route("me/drive/root/delta").unwrap());
        assert_eq!(a.suffix, Suffix::Delta);
        let a = item(parse_route("me/drive/root:/big.bin:/createUploadSession").unwrap());
        assert_eq!(a.suffix, Suffix::CreateUploadSession);

        assert!(matches!(parse_route("sites/root").unwrap(), Route::Site(SiteRef::Root)));
        assert!(matches!(
            parse_route("sites/root/drives").unwrap(),
            Route::SiteDrives(SiteRef::Root)
        ));
        match parse_route("sites/contoso.sharepoint.com:/sites/eng").unwrap() {
            Route::Site(SiteRef::HostPath(h, p)) => {
                assert_eq!((h.as_str(), p.as_str()), ("contoso.sharepoint.com", "/sites/eng"))
            }
            other => panic!("{other:?}"),
        }
        match parse_route("sites/contoso.sharepoint.com:/sites/eng:/drives").unwrap() {
            Route::SiteDrives(SiteRef::HostPath(_, p)) => assert_eq!(p, "/sites/eng"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_route("sites/contoso.sharepoint.com,1,2/drive").unwrap(),
            Route::Drive(DriveRef::Site(SiteRef::Id(_)))
        ));
        assert!(
            matches!(parse_route("users/u%40x.com/drive").unwrap(), Route::Drive(DriveRef::User(u)) if u == "u@x.com")
        );
        assert!(parse_route("me/drive/root:/a:/bogus").is_err());
        assert!(parse_route("bogus").is_err());
        assert!(parse_route("me/drive/root:/%FF").is_err());
    }
}
