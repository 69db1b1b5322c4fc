//! The delta poller (Microsoft Graph docs: "driveItem: delta"): a [`ChangeSource`] over `root/delta`.
//!
//! - A round follows every `@odata.nextLink` up to the `@odata.deltaLink`; only then is the new
//!   link stored (in memory and, when a state file is set, on disk, written atomically), so a failed
//!   round (a 5xx mid-paging, a timeout) leaves the position where it was and the next round
//!   yields the same changes again. A restart continues from the stored link.
//! - With no stored link, the round is a full enumeration, handed over as a
//!   [`ChangeBatch::Resync`]: the mount's cache is reconciled with the whole tree once, and no change
//!   made between mounting and the first round is missed (`token=latest` would miss them).
//! - `410 Gone` (token expired or invalidated): the round starts over as a full enumeration
//!   (`root/delta` without token) and is reported as a resync, so items known locally but absent
//!   from it are dropped.
//! - Records carry no paths: each becomes a [`Change`] keyed by item id with its
//!   `parentReference.id`. Deleted records, and items the mount hides (packages, shortcuts), are
//!   deletions. Business drives omit `cTag` in delta: such file records carry no version, and the
//!   applier treats them as content changes only when size or mtime moved.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::error::{RemoteError, RemoteResult};
use crate::remote::{Change, ChangeBatch, ChangeSource, EntryKind, ItemId};

use super::client::GraphClient;
use super::download::UrlCache;
use super::drive::next_url;
use super::item::{DriveItem, ITEM_SELECT};
use super::path::{with_query, Urls};

/// One delta record: a driveItem with the fields only delta needs.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeltaItem {
    #[serde(flatten)]
    item: DriveItem,
    #[serde(default)]
    parent_reference: Option<ParentRef>,
    #[serde(default)]
    deleted: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ParentRef {
    #[serde(default)]
    id: Option<String>,
}

/// One delta page.
#[derive(Debug, Deserialize)]
struct DeltaPage {
    value: Vec<DeltaItem>,
    #[serde(default, rename = "@odata.nextLink")]
    next_link: Option<String>,
    #[serde(default, rename = "@odata.deltaLink")]
    delta_link: Option<String>,
}

/// Called with the number of pages read so far in a round (tests inject faults mid-paging).
pub type PageHook = Box<dyn Fn(usize) + Send + Sync>;

/// Polls `root/delta` of one drive. See the module doc.
pub struct DeltaPoller {
    client: GraphClient,
    urls: Urls,
    drive_id: String,
    root_id: String,
    state_file: Option<PathBuf>,
    link: tokio::sync::Mutex<Option<String>>,
    page_hook: Mutex<Option<PageHook>>,
    page_size: String,
    downloads: Arc<UrlCache>,
}

impl std::fmt::Debug for DeltaPoller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaPoller")
            .field("drive", &self.drive_id)
            .field("state_file", &self.state_file)
            .finish_non_exhaustive()
    }
}

impl DeltaPoller {
    /// A poller of drive `drive_id` (root `root_id`), keeping its position in `state_file` when
    /// given (read now if it exists), asking for `page_size` records per page, and keeping the
    /// remote's download URL cache `downloads` in step with the changes it sees.
    pub fn new(
        client: GraphClient,
        urls: Urls,
        drive_id: &str,
        root_id: &str,
        state_file: Option<PathBuf>,
        page_size: usize,
        downloads: Arc<UrlCache>,
    ) -> Self {
        let link = state_file.as_deref().and_then(load_link);
        DeltaPoller {
            client,
            urls,
            drive_id: drive_id.to_string(),
            root_id: root_id.to_string(),
            state_file,
            link: tokio::sync::Mutex::new(link),
            page_hook: Mutex::new(None),
            page_size: page_size.clamp(1, 1000).to_string(),
            downloads,
        }
    }

    /// Call `hook` after each page read (for tests).
    pub fn set_page_hook(&self, hook: PageHook) {
        *self.page_hook.lock().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    /// The stored deltaLink, if any.
    pub async fn stored_link(&self) -> Option<String> {
        self.link.lock().await.clone()
    }

    fn start_url(&self) -> RemoteResult<Url> {
        let select = format!("{ITEM_SELECT},parentReference,deleted");
        Ok(with_query(
            self.urls.at(&format!(
                "/drives/{}/root/delta",
                super::path::encode_id(&self.drive_id)
            ))?,
            &[("$select", select.as_str()), ("$top", self.page_size.as_str())],
        ))
    }

    fn record(&self, d: DeltaItem) -> Option<Change> {
        let id = ItemId::new(d.item.id.as_str());
        if d.deleted.is_some() || d.item.kind().is_none() {
            return Some(Change::Deleted { id });
        }
        let mut entry = d.item.to_entry()?;
        if entry.kind == EntryKind::File && self.downloads.remember(&d.item).is_none() {
            // A URL cached earlier serves the version it was issued for, and reads of a record
            // without a cTag (business) ask for no version: it must not outlive this change.
            self.downloads.remove(&id);
        }
        if d.item.root.is_some() || d.item.id == self.root_id {
            return Some(Change::Upsert {
                parent: ItemId::new(self.root_id.as_str()),
                entry,
            });
        }
        if entry.kind == EntryKind::File && d.item.c_tag.is_none() {
            // Business delta omits cTag; its eTag also moves on renames. No version here.
            entry.version = None;
        }
        let parent = ItemId::new(d.parent_reference?.id?);
        Some(Change::Upsert { parent, entry })
    }

    async fn round(&self, stored: Option<&str>) -> RemoteResult<(ChangeBatch, String)> {
        let (mut url, mut resync) = match stored {
            Some(link) => (next_url(&self.urls, link)?, false),
            None => (self.start_url()?, true),
        };
        let mut records = Vec::new();
        let mut pages = 0;
        let mut restarted = false;
        loop {
            let page: DeltaPage = match self.client.get_json(url.clone()).await {
                Ok(p) => p,
                Err(RemoteError::Http { status: 410, message }) if !restarted => {
                    tracing::info!(%message, "delta token no longer valid; enumerating the drive again");
                    records.clear();
                    (url, resync, restarted) = (self.start_url()?, true, true);
                    continue;
                }
                Err(e) => return Err(e),
            };
            pages += 1;
            if let Some(hook) = self.page_hook.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                hook(pages);
            }
            records.extend(page.value.into_iter().filter_map(|d| self.record(d)));
            match (page.next_link, page.delta_link) {
                (Some(next), _) => url = next_url(&self.urls, &next)?,
                (None, Some(done)) => {
                    let batch = if resync {
                        ChangeBatch::Resync(records)
                    } else {
                        ChangeBatch::Changes(records)
                    };
                    return Ok((batch, done));
                }
                (None, None) => {
                    return Err(RemoteError::Protocol(
                        "a delta page had neither @odata.nextLink nor @odata.deltaLink".into(),
                    ))
                }
            }
        }
    }
}

#[async_trait]
impl ChangeSource for DeltaPoller {
    async fn poll_round(&self) -> RemoteResult<ChangeBatch> {
        // One round at a time; the position moves only when a round finished.
        let mut link = self.link.lock().await;
        let (batch, next) = self.round(link.as_deref()).await?;
        if let Some(path) = &self.state_file {
            if let Err(e) = store_link(path, &next) {
                tracing::warn!(file = %path.display(), error = %e, "cannot save the delta position; a restart enumerates again");
            }
        }
        *link = Some(next);
        Ok(batch)
    }
}

fn load_link(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn store_link(path: &Path, link: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        crate::private_fs::create_private_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = crate::private_fs::create_private_file(&tmp)?;
        f.write_all(link.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}
