//! Turning a [`DriveSelector`] into a drive id, once, at connect time. Everything after is
//! addressed as `/drives/{id}/...`, so `/me` (which app-only tokens cannot use) and site lookups
//! are confined to this module, and their failures can be told apart clearly.

use serde::Deserialize;

use crate::error::RemoteError;

use super::client::GraphClient;
use super::config::DriveSelector;
use super::item::Page;
use super::path::{encode_id, encode_segment, with_query, Urls};

/// Why connecting to a drive failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// `/me` was used with a token that has no signed-in user (client credentials).
    #[error(
        "/me/drive works only with a user sign-in (delegated token); with an app-only token \
         (client credentials) name a drive id, a user or a SharePoint site instead ({0})"
    )]
    MeNeedsUser(RemoteError),
    /// The drive id is unknown.
    #[error("drive {0} was not found")]
    DriveNotFound(String),
    /// The user is unknown or has no OneDrive.
    #[error("user {0} was not found or has no OneDrive")]
    UserNotFound(String),
    /// The SharePoint site does not exist (or is not visible to us).
    #[error("SharePoint site {0} was not found")]
    SiteNotFound(String),
    /// The site has no library of that name.
    #[error("SharePoint site {site} has no library named {library:?} (it has: {available})")]
    LibraryNotFound {
        /// The site URL.
        site: String,
        /// The library asked for.
        library: String,
        /// The libraries the site does have, comma separated.
        available: String,
    },
    /// The configuration cannot work (a site URL without a host...).
    #[error("invalid Graph configuration: {0}")]
    Config(String),
    /// Anything else the server or the network said.
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

impl From<ConnectError> for RemoteError {
    fn from(e: ConnectError) -> RemoteError {
        match e {
            ConnectError::Remote(r) => r,
            ConnectError::DriveNotFound(_)
            | ConnectError::UserNotFound(_)
            | ConnectError::SiteNotFound(_)
            | ConnectError::LibraryNotFound { .. } => RemoteError::NotFound,
            other => RemoteError::Http {
                status: 400,
                message: other.to_string(),
            },
        }
    }
}

/// The drive resource fields we use.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriveInfo {
    /// Drive id.
    pub id: String,
    /// `personal`, `business` or `documentLibrary`.
    #[serde(default)]
    pub drive_type: Option<String>,
    /// Drive (library) name.
    #[serde(default)]
    pub name: Option<String>,
    /// Space use.
    #[serde(default)]
    pub quota: Option<QuotaFacet>,
}

/// The drive's `quota` facet.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub struct QuotaFacet {
    /// Bytes in use.
    #[serde(default)]
    pub used: Option<i64>,
    /// Bytes left.
    #[serde(default)]
    pub remaining: Option<i64>,
    /// Total bytes.
    #[serde(default)]
    pub total: Option<i64>,
}

#[derive(Deserialize)]
struct Site {
    id: String,
}

const DRIVE_SELECT: &str = "id,driveType,name";

/// Resolve `selector` to the drive it names.
pub async fn resolve(client: &GraphClient, urls: &Urls, selector: &DriveSelector) -> Result<DriveInfo, ConnectError> {
    let select = [("$select", DRIVE_SELECT)];
    match selector {
        DriveSelector::Me => {
            let url = with_query(urls.at("/me/drive")?, &select);
            client.get_json(url).await.map_err(|e| match e {
                // `/me` with an app-only token is a 400 BadRequest (`docs/onedrive.md`,
                // Conventions); a user token never gets one.
                e @ RemoteError::Http { status: 400, .. } => ConnectError::MeNeedsUser(e),
                other => other.into(),
            })
        }
        DriveSelector::DriveId(id) => {
            let url = with_query(urls.drive(id)?, &select);
            client.get_json(url).await.map_err(|e| match e {
                RemoteError::NotFound => ConnectError::DriveNotFound(id.clone()),
                other => other.into(),
            })
        }
        DriveSelector::User(user) => {
            let url = with_query(urls.at(&format!("/users/{}/drive", encode_id(user)))?, &select);
            client.get_json(url).await.map_err(|e| match e {
                RemoteError::NotFound => ConnectError::UserNotFound(user.clone()),
                other => other.into(),
            })
        }
        DriveSelector::SharePoint { site_url, library } => {
            let host = site_url
                .host_str()
                .ok_or_else(|| ConnectError::Config(format!("SharePoint site URL without a host: {site_url}")))?;
            // `/sites/{host}` is the root site; `/sites/{host}:/{path}` a site by its path.
            let segments: Vec<String> = site_url
                .path_segments()
                .map(|s| {
                    s.filter(|x| !x.is_empty())
                        .map(|x| encode_segment(&percent_encoding::percent_decode_str(x).decode_utf8_lossy()))
                        .collect()
                })
                .unwrap_or_default();
            let path = if segments.is_empty() {
                format!("/sites/{}", encode_id(host))
            } else {
                format!("/sites/{}:/{}", encode_id(host), segments.join("/"))
            };
            let shown = format!("{host}{}", site_url.path().trim_end_matches('/'));
            let site: Site = client
                .get_json(with_query(urls.at(&path)?, &[("$select", "id")]))
                .await
                .map_err(|e| match e {
                    RemoteError::NotFound => ConnectError::SiteNotFound(shown.clone()),
                    other => other.into(),
                })?;
            let Some(library) = library else {
                // The site's default library, whatever its name in the site's language.
                let url = with_query(urls.at(&format!("/sites/{}/drive", encode_id(&site.id)))?, &select);
                return client.get_json(url).await.map_err(|e| match e {
                    RemoteError::NotFound => ConnectError::LibraryNotFound {
                        site: shown.clone(),
                        library: "(default)".into(),
                        available: String::new(),
                    },
                    other => other.into(),
                });
            };
            let mut url = with_query(urls.at(&format!("/sites/{}/drives", encode_id(&site.id)))?, &select);
            let mut names = Vec::new();
            loop {
                let page: Page<DriveInfo> = client.get_json(url).await?;
                for d in page.value {
                    if d.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(library)) {
                        return Ok(d);
                    }
                    names.extend(d.name);
                }
                match page.next_link {
                    Some(next) => url = next_url(urls, &next)?,
                    None => break,
                }
            }
            Err(ConnectError::LibraryNotFound {
                site: shown,
                library: library.clone(),
                available: names.join(", "),
            })
        }
    }
}

/// A `@odata.nextLink` as a URL we may send our token to: it must point at our service.
pub fn next_url(urls: &Urls, link: &str) -> Result<url::Url, RemoteError> {
    let url = url::Url::parse(link).map_err(|e| RemoteError::Protocol(format!("unreadable @odata.nextLink: {e}")))?;
    if !urls.is_ours(&url) {
        return Err(RemoteError::Protocol(format!(
            "@odata.nextLink points away from the Graph service ({})",
            url.host_str().unwrap_or("?")
        )));
    }
    Ok(url)
}
