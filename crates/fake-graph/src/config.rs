//! Server configuration.

use std::net::SocketAddr;
use std::time::Duration;

/// Which kind of OneDrive the server emulates (personal or business: `docs/onedrive.md`).
///
/// | | `Business` | `Personal` |
/// |---|---|---|
/// | drive id | `b!` + 64 chars | 16 lower-case hex |
/// | item id | `01` + 32 base32 chars | `ABCDEF0123456789!123` |
/// | eTag / cTag | `"{GUID},N"` / `"c:{GUID},N"` | unquoted base64 strings |
/// | cTag on folders | never | yes, changes when a descendant changes |
/// | hashes (A25) | `quickXorHash` | `quickXorHash`, `sha1Hash`, `sha256Hash` |
/// | timestamps | whole seconds | milliseconds |
/// | delta on a non-root folder (A15) | `400 notSupported` | supported |
/// | delta delete records | no `name`, no `cTag` | no `size`, no `cTag` |
/// | SharePoint sites | `contoso.sharepoint.com` root site + `/sites/eng` | none (`400 BadRequest`) |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// OneDrive for Business (work/school) plus SharePoint sites.
    Business,
    /// OneDrive personal (Microsoft account).
    Personal,
}

impl std::str::FromStr for Flavour {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "business" => Ok(Flavour::Business),
            "personal" => Ok(Flavour::Personal),
            _ => Err(format!("unknown flavour {s:?} (business|personal)")),
        }
    }
}

/// Everything configurable at start. Fault injection and out-of-band changes happen later through
/// [`FakeGraph::faults`](crate::FakeGraph::faults) and [`FakeGraph::drive`](crate::FakeGraph::drive).
#[derive(Clone, Debug)]
pub struct FakeGraphConfig {
    /// Listen address. Default `127.0.0.1:0` (ephemeral port).
    pub addr: SocketAddr,
    /// Drive flavour. Default [`Flavour::Business`].
    pub flavour: Flavour,
    /// Default page size of `children` listings when the request has no `$top` (real service: 200).
    pub page_size: usize,
    /// Page size of delta rounds when the request has no `$top` (real service: about 200; `$top` is
    /// honoured up to 1000 and clamped above).
    pub delta_page_size: usize,
    /// Lifetime of `@microsoft.graph.downloadUrl` URLs (A5; default 3600 s).
    pub download_url_ttl: Duration,
    /// Lifetime of access tokens; also the `expires_in` the token endpoint reports (default 3599 s).
    pub token_lifetime: Duration,
    /// Upload session lifetime, extended by every accepted fragment (A10; default 24 h).
    pub upload_session_ttl: Duration,
    /// A8: reject non-final fragments whose length is not a multiple of 320 KiB (default true).
    pub strict_fragment_alignment: bool,
    /// A9: answer 401 when an `Authorization` header is sent to an `uploadUrl` (default true).
    pub strict_upload_auth: bool,
    /// Refresh tokens are single use: redeeming one invalidates it (`invalid_grant`, AADSTS70008 on reuse).
    /// Default true. The real service keeps the old token valid for a while; false emulates that.
    pub strict_refresh_rotation: bool,
    /// Check delegated scopes: drive routes need a `Files.*` or `Sites.*` scope (writes need `ReadWrite`),
    /// `/sites/...` lookups need `Sites.*` (`docs/onedrive.md`, Sign-in). Default true.
    pub enforce_scopes: bool,
    /// Time a copy or an asynchronous move (A16/A17) takes before its monitor reports `completed`
    /// (default 0: the first poll already says completed).
    pub async_op_delay: Duration,
    /// Quota of each drive in bytes (default 1 TiB).
    pub quota_total: u64,
    /// Delta tokens older than this answer `410 Gone` (default: never).
    pub delta_token_max_age: Option<Duration>,
    /// Inner code of the 410 resync error (A13; default `resyncChangesApplyDifferences`).
    pub resync_inner_code: String,
    /// `interval` returned by the device code endpoint, seconds (real: 5).
    pub device_code_interval: u64,
    /// Device code lifetime (real: 900 s).
    pub device_code_lifetime: Duration,
    /// Authorization code lifetime (real: about 10 min).
    pub auth_code_lifetime: Duration,
    /// Application (client) id the identity endpoints accept.
    pub client_id: String,
    /// Client secret for confidential flows (client credentials).
    pub client_secret: String,
    /// Directory (tenant) id; also accepted: `common`, `organizations`, `consumers`, [`tenant_domain`](Self::tenant_domain).
    pub tenant_id: String,
    /// Tenant domain, e.g. `contoso.onmicrosoft.com`.
    pub tenant_domain: String,
    /// The signed-in user's principal name (business) or e-mail (personal).
    pub user_principal_name: String,
    /// The signed-in user's display name.
    pub user_display_name: String,
}

impl Default for FakeGraphConfig {
    fn default() -> Self {
        FakeGraphConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            flavour: Flavour::Business,
            page_size: 200,
            delta_page_size: 200,
            download_url_ttl: Duration::from_secs(3600),
            token_lifetime: Duration::from_secs(3599),
            upload_session_ttl: Duration::from_secs(24 * 3600),
            strict_fragment_alignment: true,
            strict_upload_auth: true,
            strict_refresh_rotation: true,
            enforce_scopes: true,
            async_op_delay: Duration::ZERO,
            quota_total: 1 << 40,
            delta_token_max_age: None,
            resync_inner_code: "resyncChangesApplyDifferences".into(),
            device_code_interval: 5,
            device_code_lifetime: Duration::from_secs(900),
            auth_code_lifetime: Duration::from_secs(600),
            client_id: "c10d0a11-fa4e-4b7a-9e61-5f2a3b4c5d6e".into(),
            client_secret: "fake-graph-client-secret".into(),
            tenant_id: "5c3b8a1e-2d4f-4e6a-8b9c-0d1e2f3a4b5c".into(),
            tenant_domain: "contoso.onmicrosoft.com".into(),
            user_principal_name: "megan@contoso.onmicrosoft.com".into(),
            user_display_name: "Megan Bowen".into(),
        }
    }
}

impl FakeGraphConfig {
    /// Default configuration for the given flavour (personal uses an outlook.com user).
    pub fn for_flavour(flavour: Flavour) -> Self {
        let mut c = FakeGraphConfig {
            flavour,
            ..Default::default()
        };
        if flavour == Flavour::Personal {
            c.user_principal_name = "megan@outlook.com".into();
            // The consumers tenant of Microsoft accounts.
            c.tenant_id = "9188040d-6c67-4c5b-b112-36a304b66dad".into();
        }
        c
    }
}
