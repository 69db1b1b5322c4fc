//! The stateful drive model: item tree, tags, hashes, quota, name rules, change sequence for delta, and the
//! mutations shared by the HTTP routes and the in-process [`DriveHandle`](crate::DriveHandle).
//!
//! Tag rules (`docs/onedrive.md`, Items and versions):
//! * `eTag` changes on any change of the item's own metadata or content, never because a descendant changed.
//! * `cTag` (files) changes on content changes only. Folders have a `cTag` only on personal drives, where it
//!   changes whenever a descendant changes (created, modified, renamed, moved in or out, deleted).
//! * Every change of an item bumps the drive's change sequence and stamps the item with it; deletes leave a
//!   tombstone. Delta rounds are computed from these (see `delta.rs`).

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use sha1::Digest as _;
use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use crate::error::GraphError;
use crate::quickxorhash::QuickXorHash;
use crate::util;

/// Largest simple PUT body (A1: 250 MB).
pub const MAX_SIMPLE_PUT: u64 = 262_144_000;
/// Largest file (250 GB).
pub const MAX_FILE_SIZE: u64 = 250 * 1024 * 1024 * 1024;
/// Longest decoded path (folder path + name).
pub const MAX_PATH_CHARS: usize = 400;
/// Longest single name (PROJ).
pub const MAX_NAME_CHARS: usize = 255;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DriveType {
    Personal,
    Business,
    DocumentLibrary,
}

impl DriveType {
    pub fn as_str(self) -> &'static str {
        match self {
            DriveType::Personal => "personal",
            DriveType::Business => "business",
            DriveType::DocumentLibrary => "documentLibrary",
        }
    }
}

/// `@microsoft.graph.conflictBehavior`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Conflict {
    Fail,
    Replace,
    Rename,
}

impl Conflict {
    pub fn parse(s: &str) -> Result<Conflict, GraphError> {
        match s.to_ascii_lowercase().as_str() {
            "fail" => Ok(Conflict::Fail),
            "replace" => Ok(Conflict::Replace),
            "rename" => Ok(Conflict::Rename),
            _ => Err(GraphError::invalid(format!(
                "Invalid value for @microsoft.graph.conflictBehavior: {s}"
            ))),
        }
    }
}

/// Content hashes of a file.
#[derive(Clone, Debug)]
pub(crate) struct Hashes {
    pub quick_xor: String,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
}

/// Incremental hasher (upload sessions feed it fragment by fragment).
#[derive(Clone)]
pub(crate) struct Hasher {
    qx: QuickXorHash,
    sha1: Option<sha1::Sha1>,
    sha256: Option<sha2::Sha256>,
}

impl Hasher {
    pub fn new(personal: bool) -> Self {
        Hasher {
            qx: QuickXorHash::new(),
            sha1: personal.then(sha1::Sha1::new),
            sha256: personal.then(sha2::Sha256::new),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.qx.update(data);
        if let Some(h) = &mut self.sha1 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha256 {
            h.update(data);
        }
    }

    pub fn finish(self) -> Hashes {
        Hashes {
            quick_xor: self.qx.finalize(),
            sha1: self.sha1.map(|h| util::hex_upper(&h.finalize())),
            sha256: self.sha256.map(|h| util::hex_upper(&h.finalize())),
        }
    }

    pub fn of(data: &[u8], personal: bool) -> Hashes {
        let mut h = Hasher::new(personal);
        h.update(data);
        h.finish()
    }
}

#[derive(Clone)]
pub(crate) struct FileData {
    pub content: Bytes,
    pub mime: &'static str,
    pub hashes: Hashes,
}

pub(crate) enum Kind {
    File(FileData),
    /// Children keyed by lower-cased name (names are case-insensitive, stored case-preserved).
    Folder(BTreeMap<String, String>),
}

pub(crate) struct Item {
    pub id: String,
    pub name: String,
    pub parent: Option<String>,
    pub kind: Kind,
    pub guid: String,
    pub created: SystemTime,
    pub modified: SystemTime,
    pub fs_created: SystemTime,
    pub fs_modified: SystemTime,
    pub etag_ver: u64,
    pub ctag_ver: u64,
    pub change_seq: u64,
    pub locked: bool,
}

impl Item {
    pub fn is_folder(&self) -> bool {
        matches!(self.kind, Kind::Folder(_))
    }

    pub fn file(&self) -> Option<&FileData> {
        match &self.kind {
            Kind::File(f) => Some(f),
            Kind::Folder(_) => None,
        }
    }

    pub fn size_if_file(&self) -> u64 {
        self.file().map(|f| f.content.len() as u64).unwrap_or(0)
    }
}

/// A deleted item, kept for delta.
#[derive(Clone, Debug)]
pub(crate) struct Tombstone {
    pub id: String,
    pub name: String,
    pub parent_id: Option<String>,
    /// Ancestor ids at deletion time, nearest first (for folder-scoped delta).
    pub ancestors: Vec<String>,
    pub is_folder: bool,
    pub seq: u64,
}

/// Properties a PATCH may change.
#[derive(Default, Debug)]
pub(crate) struct Patch {
    pub name: Option<String>,
    pub parent: Option<String>,
    pub fs_created: Option<SystemTime>,
    pub fs_modified: Option<SystemTime>,
}

/// What a content write targets.
#[derive(Clone, Debug)]
pub(crate) enum PutTarget {
    /// An existing item, addressed by id: its content is replaced.
    Existing(String),
    /// A name inside a folder: created, or handled by the conflict behaviour if the name exists.
    Child { parent: String, name: String },
}

/// A detached copy of a subtree (for `/copy`, possibly into another drive).
pub(crate) struct CopyNode {
    pub name: String,
    pub file: Option<FileData>,
    pub fs_created: SystemTime,
    pub fs_modified: SystemTime,
    pub children: Vec<CopyNode>,
}

/// One drive (a OneDrive or a document library).
pub(crate) struct Drive {
    pub id: String,
    pub drive_type: DriveType,
    pub name: String,
    /// Personal-drive conventions (ids, tags, hashes, timestamp precision).
    pub personal: bool,
    pub owner: Value,
    pub web_url: String,
    pub created: SystemTime,
    pub root_id: String,
    pub items: HashMap<String, Item>,
    pub tombstones: Vec<Tombstone>,
    pub seq: u64,
    /// (seq, time) of every change, for timestamp delta tokens.
    pub seq_log: Vec<(u64, SystemTime)>,
    pub used: u64,
    pub quota_total: u64,
    pub quota_forced: bool,
    pub user_name: String,
    pub user_id: String,
    id_counter: u64,
    cid: String,
}

const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

impl Drive {
    pub fn new(
        drive_type: DriveType,
        name: &str,
        owner: Value,
        web_url: &str,
        quota_total: u64,
        user: (&str, &str),
        now: SystemTime,
    ) -> Drive {
        let personal = drive_type == DriveType::Personal;
        let cid = util::random_from(b"0123456789ABCDEF", 16);
        let id = if personal {
            cid.to_ascii_lowercase()
        } else {
            format!(
                "b!{}",
                util::random_from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", 64)
            )
        };
        let mut d = Drive {
            id,
            drive_type,
            name: name.into(),
            personal,
            owner,
            web_url: web_url.into(),
            created: now,
            root_id: String::new(),
            items: HashMap::new(),
            tombstones: Vec::new(),
            seq: 1,
            seq_log: vec![(1, now)],
            used: 0,
            quota_total,
            quota_forced: false,
            user_name: user.0.into(),
            user_id: user.1.into(),
            id_counter: 100,
            cid,
        };
        let root_id = d.new_item_id();
        let now = d.trunc(now);
        d.items.insert(
            root_id.clone(),
            Item {
                id: root_id.clone(),
                name: "root".into(),
                parent: None,
                kind: Kind::Folder(BTreeMap::new()),
                guid: util::random_guid(),
                created: now,
                modified: now,
                fs_created: now,
                fs_modified: now,
                etag_ver: 1,
                ctag_ver: 1,
                change_seq: 1,
                locked: false,
            },
        );
        d.root_id = root_id;
        d
    }

    /// Truncates a time to the precision this flavour stores.
    pub fn trunc(&self, t: SystemTime) -> SystemTime {
        if self.personal {
            util::trunc_millis(t)
        } else {
            util::trunc_secs(t)
        }
    }

    pub fn fmt_time(&self, t: SystemTime) -> String {
        util::fmt_time(t, self.personal)
    }

    fn new_item_id(&mut self) -> String {
        self.id_counter += 1;
        if self.personal {
            format!("{}!{}", self.cid, self.id_counter)
        } else {
            format!("01{}", util::random_from(BASE32, 32))
        }
    }

    /// Starts a new change: returns the sequence number to stamp changed items with.
    fn bump(&mut self, now: SystemTime) -> u64 {
        self.seq += 1;
        self.seq_log.push((self.seq, now));
        self.seq
    }

    pub fn get(&self, id: &str) -> Result<&Item, GraphError> {
        self.items.get(id).ok_or_else(GraphError::not_found)
    }

    fn get_mut(&mut self, id: &str) -> &mut Item {
        self.items.get_mut(id).expect("item id checked before")
    }

    /// Case-insensitive child lookup.
    pub fn child(&self, parent: &str, name: &str) -> Option<&str> {
        match &self.items.get(parent)?.kind {
            Kind::Folder(ch) => ch.get(&fold(name)).map(|s| s.as_str()),
            Kind::File(_) => None,
        }
    }

    /// Walks decoded path segments from `base` (case-insensitive).
    pub fn resolve(&self, base: &str, segs: &[String]) -> Result<String, GraphError> {
        let mut cur = self.get(base)?.id.clone();
        for s in segs {
            cur = self.child(&cur, s).ok_or_else(GraphError::not_found)?.to_string();
        }
        Ok(cur)
    }

    /// Ancestors, nearest first, ending with the root.
    pub fn ancestors(&self, id: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = self.items.get(id).and_then(|i| i.parent.clone());
        while let Some(p) = cur {
            cur = self.items.get(&p).and_then(|i| i.parent.clone());
            out.push(p);
        }
        out
    }

    /// Names from the root down to `id` (root itself excluded).
    pub fn path_names(&self, id: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut cur = Some(id.to_string());
        while let Some(c) = cur {
            let it = &self.items[&c];
            if it.parent.is_some() {
                names.push(it.name.clone());
            }
            cur = it.parent.clone();
        }
        names.reverse();
        names
    }

    /// Human path `/a/b` of an item (`/` for the root).
    pub fn path_string(&self, id: &str) -> String {
        let names = self.path_names(id);
        if names.is_empty() {
            "/".into()
        } else {
            names.iter().map(|n| format!("/{n}")).collect()
        }
    }

    pub fn depth(&self, id: &str) -> usize {
        self.ancestors(id).len()
    }

    /// True if `id` is `of` or lies below it.
    pub fn is_within(&self, id: &str, of: &str) -> bool {
        id == of || self.ancestors(id).iter().any(|a| a == of)
    }

    /// Pre-order ids of the subtree rooted at `id` (parents before children, children by name).
    pub fn subtree(&self, id: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![id.to_string()];
        while let Some(c) = stack.pop() {
            if let Some(Kind::Folder(ch)) = self.items.get(&c).map(|i| &i.kind) {
                stack.extend(ch.values().rev().cloned());
            }
            out.push(c);
        }
        out
    }

    /// Size: file length, or the total size of a folder's descendants.
    pub fn size_of(&self, id: &str) -> u64 {
        match &self.items[id].kind {
            Kind::File(f) => f.content.len() as u64,
            Kind::Folder(_) => {
                if id == self.root_id {
                    self.used
                } else {
                    self.subtree(id).iter().map(|c| self.items[c].size_if_file()).sum()
                }
            }
        }
    }

    /// Children ids (unsorted order = by lower-cased name).
    pub fn children(&self, id: &str) -> Vec<String> {
        match &self.items[id].kind {
            Kind::Folder(ch) => ch.values().cloned().collect(),
            Kind::File(_) => Vec::new(),
        }
    }

    fn any_locked(&self, id: &str) -> bool {
        self.subtree(id).iter().any(|c| self.items[c].locked)
    }

    fn check_quota(&self, added: i64, new_items: bool) -> Result<(), GraphError> {
        if self.quota_forced && (added > 0 || new_items) {
            return Err(GraphError::quota());
        }
        if added > 0 && self.used.saturating_add(added as u64) > self.quota_total {
            return Err(GraphError::quota());
        }
        Ok(())
    }

    /// Quota facet of the drive resource.
    pub fn quota_json(&self) -> Value {
        let remaining = self.quota_total.saturating_sub(self.used);
        let state = if self.quota_forced || remaining == 0 {
            "exceeded"
        } else if remaining * 100 < self.quota_total {
            "critical"
        } else if remaining * 10 < self.quota_total {
            "nearing"
        } else {
            "normal"
        };
        let mut q = json!({
            "total": self.quota_total,
            "used": self.used,
            "remaining": if self.quota_forced { 0 } else { remaining },
            "deleted": 0,
            "state": state,
        });
        if !self.personal {
            let files = self.items.values().filter(|i| !i.is_folder()).count();
            q["fileCount"] = json!(files);
        }
        q
    }

    /// Checks a name against `docs/onedrive.md` (Names and limits) for a new or renamed item in `parent`.
    pub fn validate_name(&self, parent: &str, name: &str, is_folder: bool) -> Result<(), GraphError> {
        let bad = || GraphError::invalid(format!("The name '{name}' is not valid")).inner("invalidPath");
        if name.is_empty() || name == "." || name == ".." {
            return Err(bad());
        }
        if name
            .chars()
            .any(|c| matches!(c, '"' | '*' | ':' | '<' | '>' | '?' | '/' | '\\' | '|'))
        {
            return Err(bad());
        }
        if name.starts_with(' ') || name.ends_with(' ') || name.ends_with('.') {
            return Err(bad());
        }
        if name.starts_with("~$") || (is_folder && !self.personal && name.starts_with('~')) {
            return Err(bad());
        }
        let lower = name.to_lowercase();
        if lower == ".lock" || lower == "desktop.ini" || lower.contains("_vti_") {
            return Err(bad());
        }
        let stem = lower.split('.').next().unwrap_or("");
        let device = matches!(stem, "con" | "prn" | "aux" | "nul")
            || ((stem.starts_with("com") || stem.starts_with("lpt"))
                && stem.len() == 4
                && stem.as_bytes()[3].is_ascii_digit());
        if device {
            return Err(bad());
        }
        if is_folder && !self.personal && parent == self.root_id && lower == "forms" {
            return Err(bad());
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(GraphError::invalid("The name is too long").inner("pathIsTooLong"));
        }
        let parent_len: usize = self.path_names(parent).iter().map(|n| n.chars().count() + 1).sum();
        if parent_len + 1 + name.chars().count() > MAX_PATH_CHARS {
            return Err(GraphError::invalid("The path is too long").inner("pathIsTooLong"));
        }
        Ok(())
    }

    /// `name 1.ext`, `name 2.ext`, … — the first free variant (conflictBehavior `rename`).
    pub fn free_name(&self, parent: &str, name: &str, is_folder: bool) -> String {
        let (stem, ext) = match name.rfind('.') {
            Some(i) if i > 0 && !is_folder => (&name[..i], &name[i..]),
            _ => (name, ""),
        };
        (1..)
            .map(|n| format!("{stem} {n}{ext}"))
            .find(|cand| self.child(parent, cand).is_none())
            .expect("some number is free")
    }

    fn check_if_match(&self, id: &str, if_match: Option<&str>) -> Result<(), GraphError> {
        if let Some(want) = if_match {
            if !tag_matches(&self.etag(id), &self.ctag(id), want) {
                return Err(GraphError::precondition());
            }
        }
        Ok(())
    }

    pub fn etag(&self, id: &str) -> String {
        let it = &self.items[id];
        if self.personal {
            let b = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}.{}", it.id, it.etag_ver));
            format!("a{b}")
        } else {
            format!("\"{{{}}},{}\"", it.guid, it.etag_ver)
        }
    }

    /// cTag; folders on business drives have none (returned as an empty string, never rendered).
    pub fn ctag(&self, id: &str) -> String {
        let it = &self.items[id];
        if self.personal {
            let b = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("c:{}.{}", it.id, it.ctag_ver));
            format!("ad{b}")
        } else if it.is_folder() {
            String::new()
        } else {
            format!("\"c:{{{}}},{}\"", it.guid, it.ctag_ver)
        }
    }

    fn attach(&mut self, id: &str) {
        let (parent, key) = {
            let it = &self.items[id];
            (it.parent.clone().expect("non-root"), fold(&it.name))
        };
        if let Kind::Folder(ch) = &mut self.get_mut(&parent).kind {
            ch.insert(key, id.to_string());
        }
    }

    fn detach(&mut self, id: &str) {
        let (parent, key) = {
            let it = &self.items[id];
            (it.parent.clone().expect("non-root"), fold(&it.name))
        };
        if let Kind::Folder(ch) = &mut self.get_mut(&parent).kind {
            ch.remove(&key);
        }
    }

    /// Personal drives: a descendant changed, so the folder cTags of `from` and its ancestors change.
    fn descendant_changed(&mut self, from: &str) {
        if !self.personal {
            return;
        }
        let mut chain = vec![from.to_string()];
        chain.extend(self.ancestors(from));
        for a in chain {
            if let Some(it) = self.items.get_mut(&a) {
                it.ctag_ver += 1;
            }
        }
    }

    fn new_item(
        &mut self,
        parent: &str,
        name: &str,
        kind: Kind,
        fs: (SystemTime, SystemTime),
        now: SystemTime,
    ) -> String {
        let id = self.new_item_id();
        let now = self.trunc(now);
        let seq = self.seq;
        let item = Item {
            id: id.clone(),
            name: name.into(),
            parent: Some(parent.into()),
            kind,
            guid: util::random_guid(),
            created: now,
            modified: now,
            fs_created: self.trunc(fs.0),
            fs_modified: self.trunc(fs.1),
            etag_ver: 1,
            ctag_ver: 1,
            change_seq: seq,
            locked: false,
        };
        self.used += item.size_if_file();
        self.items.insert(id.clone(), item);
        self.attach(&id);
        id
    }

    fn parent_folder(&self, parent: &str) -> Result<(), GraphError> {
        let p = self.get(parent)?;
        if !p.is_folder() {
            return Err(GraphError::invalid("The parent item is not a folder"));
        }
        Ok(())
    }

    /// Creates a folder (`POST …/children`). Returns the new id.
    pub fn create_folder(
        &mut self,
        parent: &str,
        name: &str,
        conflict: Conflict,
        now: SystemTime,
    ) -> Result<String, GraphError> {
        self.parent_folder(parent)?;
        self.validate_name(parent, name, true)?;
        self.check_quota(0, true)?;
        let mut name = name.to_string();
        if let Some(existing) = self.child(parent, &name).map(str::to_string) {
            match conflict {
                Conflict::Fail => return Err(GraphError::name_exists(&name)),
                Conflict::Rename => name = self.free_name(parent, &name, true),
                Conflict::Replace => self.delete(&existing, None, now)?,
            }
        }
        self.bump(now);
        let id = self.new_item(parent, &name, Kind::Folder(BTreeMap::new()), (now, now), now);
        self.descendant_changed(parent);
        Ok(id)
    }

    /// Writes file content (simple PUT, upload session commit, out-of-band writes). Returns (id, created).
    #[allow(clippy::too_many_arguments)]
    pub fn put_content(
        &mut self,
        target: &PutTarget,
        content: Bytes,
        hashes: Hashes,
        fs: (Option<SystemTime>, Option<SystemTime>),
        conflict: Conflict,
        if_match: Option<&str>,
        now: SystemTime,
    ) -> Result<(String, bool), GraphError> {
        let (existing, parent, mut name) = match target {
            PutTarget::Existing(id) => {
                let it = self.get(id)?;
                if it.is_folder() {
                    return Err(GraphError::invalid("Cannot upload content to a folder"));
                }
                (Some(id.clone()), it.parent.clone().unwrap_or_default(), it.name.clone())
            }
            PutTarget::Child { parent, name } => {
                self.parent_folder(parent)?;
                let existing = self.child(parent, name).map(str::to_string);
                if let Some(e) = &existing {
                    if self.items[e].is_folder() {
                        return Err(GraphError::name_exists(name));
                    }
                }
                (existing, parent.clone(), name.clone())
            }
        };
        let len = content.len() as u64;
        if len > MAX_FILE_SIZE {
            return Err(
                GraphError::new(413, "invalidRequest", "Maximum file size exceeded").inner("maxFileSizeExceeded")
            );
        }
        let mime = util::mime_for(&name);
        match existing {
            Some(id) if matches!(target, PutTarget::Existing(_)) || conflict == Conflict::Replace => {
                self.check_if_match(&id, if_match)?;
                if self.items[&id].locked {
                    return Err(GraphError::locked());
                }
                let old = self.items[&id].size_if_file();
                self.check_quota(len as i64 - old as i64, false)?;
                let seq = self.bump(now);
                let t = self.trunc(now);
                let fs_c = fs.0.map(|t| self.trunc(t));
                let fs_m = self.trunc(fs.1.unwrap_or(now));
                self.used = self.used - old + len;
                let it = self.get_mut(&id);
                it.kind = Kind::File(FileData { content, mime, hashes });
                it.etag_ver += 1;
                it.ctag_ver += 1;
                it.modified = t;
                it.fs_modified = fs_m;
                if let Some(c) = fs_c {
                    it.fs_created = c;
                }
                it.change_seq = seq;
                self.descendant_changed(&parent);
                Ok((id, false))
            }
            Some(_) if conflict == Conflict::Fail => Err(GraphError::name_exists(&name)),
            other => {
                if if_match.is_some() && other.is_none() {
                    return Err(GraphError::precondition());
                }
                if other.is_some() {
                    name = self.free_name(&parent, &name, false);
                }
                self.validate_name(&parent, &name, false)?;
                self.check_quota(len as i64, true)?;
                self.bump(now);
                let fs_c = fs.0.unwrap_or(now);
                let fs_m = fs.1.unwrap_or(now);
                let id = self.new_item(
                    &parent,
                    &name,
                    Kind::File(FileData { content, mime, hashes }),
                    (fs_c, fs_m),
                    now,
                );
                self.descendant_changed(&parent);
                Ok((id, true))
            }
        }
    }

    /// Checks a PATCH without applying it; returns the final (parent, name) and the id of a file that
    /// `replace` would overwrite.
    pub fn check_patch(
        &self,
        id: &str,
        patch: &Patch,
        conflict: Conflict,
        if_match: Option<&str>,
    ) -> Result<(String, String, Option<String>), GraphError> {
        let it = self.get(id)?;
        if it.parent.is_none() {
            return Err(GraphError::access_denied("The root item cannot be modified"));
        }
        self.check_if_match(id, if_match)?;
        let cur_parent = it.parent.clone().unwrap_or_default();
        let parent = patch.parent.clone().unwrap_or_else(|| cur_parent.clone());
        let mut name = patch.name.clone().unwrap_or_else(|| it.name.clone());
        let moving = parent != cur_parent;
        let renaming = name != it.name;
        if moving || renaming {
            if self.any_locked(id) {
                return Err(GraphError::locked());
            }
        } else if it.locked {
            return Err(GraphError::locked());
        }
        if moving {
            let p = self.get(&parent)?;
            if !p.is_folder() {
                return Err(GraphError::invalid("The destination is not a folder"));
            }
            if self.is_within(&parent, id) {
                return Err(GraphError::invalid(
                    "Cannot move a folder into itself or one of its descendants",
                ));
            }
        }
        let mut replaced = None;
        if moving || renaming {
            self.validate_name(&parent, &name, it.is_folder())?;
            if let Some(other) = self.child(&parent, &name).filter(|o| *o != id) {
                match conflict {
                    Conflict::Fail => return Err(GraphError::name_exists(&name)),
                    Conflict::Rename => name = self.free_name(&parent, &name, it.is_folder()),
                    Conflict::Replace => {
                        if it.is_folder() || self.items[other].is_folder() {
                            return Err(GraphError::name_exists(&name));
                        }
                        if self.items[other].locked {
                            return Err(GraphError::locked());
                        }
                        replaced = Some(other.to_string());
                    }
                }
            }
        }
        Ok((parent, name, replaced))
    }

    /// Applies a PATCH (rename, move, fileSystemInfo).
    pub fn update(
        &mut self,
        id: &str,
        patch: &Patch,
        conflict: Conflict,
        if_match: Option<&str>,
        now: SystemTime,
    ) -> Result<(), GraphError> {
        let (parent, name, replaced) = self.check_patch(id, patch, conflict, if_match)?;
        if let Some(r) = replaced {
            self.delete(&r, None, now)?;
        }
        let seq = self.bump(now);
        let old_parent = self.items[id].parent.clone().unwrap_or_default();
        let structural = parent != old_parent || name != self.items[id].name;
        if structural {
            self.detach(id);
        }
        let fs_c = patch.fs_created.map(|t| self.trunc(t));
        let fs_m = patch.fs_modified.map(|t| self.trunc(t));
        let t = self.trunc(now);
        let it = self.get_mut(id);
        it.name = name;
        it.parent = Some(parent.clone());
        if let Some(c) = fs_c {
            it.fs_created = c;
        }
        if let Some(m) = fs_m {
            it.fs_modified = m;
        }
        it.etag_ver += 1;
        it.modified = t;
        it.change_seq = seq;
        if structural {
            self.attach(id);
            self.descendant_changed(&old_parent);
            if parent != old_parent {
                self.descendant_changed(&parent);
            }
        }
        Ok(())
    }

    /// Checks a delete without applying it.
    pub fn check_delete(&self, id: &str, if_match: Option<&str>) -> Result<(), GraphError> {
        let it = self.get(id)?;
        if it.parent.is_none() {
            return Err(GraphError::access_denied("The root item cannot be deleted"));
        }
        self.check_if_match(id, if_match)?;
        if self.any_locked(id) {
            return Err(GraphError::locked());
        }
        Ok(())
    }

    /// Deletes an item and everything below it, leaving tombstones.
    pub fn delete(&mut self, id: &str, if_match: Option<&str>, now: SystemTime) -> Result<(), GraphError> {
        self.check_delete(id, if_match)?;
        let seq = self.bump(now);
        let parent = self.items[id].parent.clone().unwrap_or_default();
        self.detach(id);
        for c in self.subtree(id) {
            let ancestors = self.ancestors(&c);
            let it = self.items.remove(&c).expect("in subtree");
            self.used -= it.size_if_file();
            self.tombstones.push(Tombstone {
                id: it.id,
                name: it.name,
                parent_id: it.parent,
                ancestors,
                is_folder: matches!(it.kind, Kind::Folder(_)),
                seq,
            });
        }
        self.descendant_changed(&parent);
        Ok(())
    }

    /// Detached copy of a subtree.
    pub fn export(&self, id: &str) -> CopyNode {
        let it = &self.items[id];
        CopyNode {
            name: it.name.clone(),
            file: it.file().cloned(),
            fs_created: it.fs_created,
            fs_modified: it.fs_modified,
            children: self.children(id).iter().map(|c| self.export(c)).collect(),
        }
    }

    pub fn export_size(node: &CopyNode) -> u64 {
        node.file.as_ref().map(|f| f.content.len() as u64).unwrap_or(0)
            + node.children.iter().map(Drive::export_size).sum::<u64>()
    }

    /// Checks that a copy named `name` can be created in `parent`; returns the final name.
    pub fn check_copy_target(
        &self,
        parent: &str,
        name: &str,
        is_folder: bool,
        size: u64,
        conflict: Conflict,
    ) -> Result<String, GraphError> {
        self.parent_folder(parent)?;
        self.validate_name(parent, name, is_folder)?;
        self.check_quota(size as i64, true)?;
        match self.child(parent, name) {
            None => Ok(name.into()),
            Some(_) if conflict == Conflict::Rename => Ok(self.free_name(parent, name, is_folder)),
            Some(existing) if conflict == Conflict::Replace && !is_folder && !self.items[existing].is_folder() => {
                Ok(name.into())
            }
            Some(_) => Err(GraphError::name_exists(name)),
        }
    }

    /// Inserts a copied subtree under `parent` with the given name. Returns the new root id of the copy.
    pub fn import(
        &mut self,
        parent: &str,
        name: &str,
        node: &CopyNode,
        conflict: Conflict,
        now: SystemTime,
    ) -> Result<String, GraphError> {
        let is_folder = node.file.is_none();
        let name = self.check_copy_target(parent, name, is_folder, Drive::export_size(node), conflict)?;
        if let Some(existing) = self.child(parent, &name).map(str::to_string) {
            // replace (file over file)
            self.delete(&existing, None, now)?;
        }
        self.bump(now);
        let id = self.import_rec(parent, &name, node, now);
        self.descendant_changed(parent);
        Ok(id)
    }

    fn import_rec(&mut self, parent: &str, name: &str, node: &CopyNode, now: SystemTime) -> String {
        let kind = match &node.file {
            Some(f) => Kind::File(f.clone()),
            None => Kind::Folder(BTreeMap::new()),
        };
        let id = self.new_item(parent, name, kind, (node.fs_created, node.fs_modified), now);
        for c in &node.children {
            self.import_rec(&id, &c.name, c, now);
        }
        id
    }

    /// Marks an item locked/unlocked (423 on writes).
    pub fn set_locked(&mut self, id: &str, locked: bool) -> Result<(), GraphError> {
        self.items.get_mut(id).ok_or_else(GraphError::not_found)?.locked = locked;
        Ok(())
    }

    /// Renders a driveItem. `delta`: delta conventions (no `parentReference.path`; business: no `cTag`).
    pub fn render(&self, id: &str, delta: bool, download_url: Option<String>) -> Value {
        let it = &self.items[id];
        let mut m = Map::new();
        m.insert("id".into(), json!(it.id));
        m.insert("name".into(), json!(it.name));
        m.insert("eTag".into(), json!(self.etag(id)));
        let with_ctag = if self.personal { true } else { !it.is_folder() && !delta };
        if with_ctag {
            m.insert("cTag".into(), json!(self.ctag(id)));
        }
        m.insert("size".into(), json!(self.size_of(id)));
        m.insert("createdDateTime".into(), json!(self.fmt_time(it.created)));
        m.insert("lastModifiedDateTime".into(), json!(self.fmt_time(it.modified)));
        let path_enc: String = self
            .path_names(id)
            .iter()
            .map(|n| format!("/{}", util::encode_segment(n)))
            .collect();
        m.insert("webUrl".into(), json!(format!("{}{}", self.web_url, path_enc)));
        let user = json!({ "user": { "displayName": self.user_name, "id": self.user_id } });
        m.insert("createdBy".into(), user.clone());
        m.insert("lastModifiedBy".into(), user);
        m.insert(
            "fileSystemInfo".into(),
            json!({ "createdDateTime": self.fmt_time(it.fs_created), "lastModifiedDateTime": self.fmt_time(it.fs_modified) }),
        );
        match &it.parent {
            Some(p) => {
                let mut pr = Map::new();
                pr.insert("driveId".into(), json!(self.id));
                pr.insert("driveType".into(), json!(self.drive_type.as_str()));
                pr.insert("id".into(), json!(p));
                if !delta {
                    let parent_path: String = self
                        .path_names(p)
                        .iter()
                        .map(|n| format!("/{}", util::encode_segment(n)))
                        .collect();
                    let prefix = if self.personal {
                        "/drive/root:".to_string()
                    } else {
                        format!("/drives/{}/root:", self.id)
                    };
                    pr.insert("path".into(), json!(format!("{prefix}{parent_path}")));
                }
                m.insert("parentReference".into(), Value::Object(pr));
            }
            None => {
                if !self.personal {
                    m.insert(
                        "parentReference".into(),
                        json!({ "driveId": self.id, "driveType": self.drive_type.as_str() }),
                    );
                }
                m.insert("root".into(), json!({}));
            }
        }
        match &it.kind {
            Kind::File(f) => {
                let mut h = Map::new();
                h.insert("quickXorHash".into(), json!(f.hashes.quick_xor));
                if let Some(s) = &f.hashes.sha1 {
                    h.insert("sha1Hash".into(), json!(s));
                }
                if let Some(s) = &f.hashes.sha256 {
                    h.insert("sha256Hash".into(), json!(s));
                }
                m.insert("file".into(), json!({ "mimeType": f.mime, "hashes": Value::Object(h) }));
                if let Some(u) = download_url {
                    m.insert("@microsoft.graph.downloadUrl".into(), json!(u));
                }
            }
            Kind::Folder(ch) => {
                m.insert("folder".into(), json!({ "childCount": ch.len() }));
            }
        }
        Value::Object(m)
    }

    /// Renders a delta delete record.
    pub fn render_tombstone(&self, t: &Tombstone) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(t.id));
        if self.personal {
            m.insert("name".into(), json!(t.name));
        }
        m.insert("deleted".into(), json!({ "state": "deleted" }));
        if let Some(p) = &t.parent_id {
            m.insert(
                "parentReference".into(),
                json!({ "driveId": self.id, "driveType": self.drive_type.as_str(), "id": p }),
            );
        }
        if t.is_folder {
            m.insert("folder".into(), json!({}));
        } else {
            m.insert("file".into(), json!({}));
        }
        Value::Object(m)
    }

    /// Renders the drive resource.
    pub fn render_drive(&self) -> Value {
        json!({
            "id": self.id,
            "driveType": self.drive_type.as_str(),
            "name": self.name,
            "description": "",
            "createdDateTime": self.fmt_time(self.created),
            "lastModifiedDateTime": self.fmt_time(self.items[&self.root_id].modified),
            "webUrl": self.web_url,
            "owner": self.owner,
            "quota": self.quota_json(),
        })
    }
}

/// Case folding for name comparison: each character's lowercase mapping, one character at a time
/// (no context rules such as a word-final sigma), the same folding cloudmount's Graph remote uses,
/// so that both sides agree on which names are one.
pub(crate) fn fold(name: &str) -> String {
    name.chars().flat_map(char::to_lowercase).collect()
}

/// `If-Match` / `If-None-Match` comparison against an eTag or cTag: exact, or equal after removing one level of
/// surrounding quotes and a weak `W/` prefix; `*` matches anything.
pub(crate) fn tag_matches(etag: &str, ctag: &str, header: &str) -> bool {
    let h = header.trim();
    if h == "*" {
        return true;
    }
    let norm = |s: &str| -> String {
        let s = s.strip_prefix("W/").unwrap_or(s);
        s.strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .unwrap_or(s)
            .to_string()
    };
    let hn = norm(h);
    [etag, ctag].iter().any(|t| !t.is_empty() && (*t == h || norm(t) == hn))
}
