//! The token store: one JSON file per remote (`<state>/tokens/<remote>.json`), mode 0600, replaced
//! atomically (temp file, fsync, rename, fsync of the folder), so a crash never leaves half a file
//! and a read-only config dir never loses a rotated refresh token.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::config::Flow;
use super::secret::Secret;

/// Format version written into each file.
const VERSION: u32 = 1;

/// What one token file holds. `Debug` shows no secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTokens {
    /// File format version.
    pub version: u32,
    /// The flow that obtained the tokens.
    pub flow: Flow,
    /// Application the tokens belong to (a refresh must use the same one).
    pub client_id: String,
    /// Token endpoint the tokens came from (a refresh must use the same one).
    pub token_url: String,
    /// Scopes asked for.
    pub scopes: Vec<String>,
    /// Current access token.
    pub access_token: Secret,
    /// When the access token was obtained (ms since the epoch).
    pub obtained_at_ms: u64,
    /// When the access token expires (ms since the epoch).
    pub expires_at_ms: u64,
    /// The latest refresh token (absent for client credentials).
    pub refresh_token: Option<Secret>,
}

/// Milliseconds since the epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

impl StoredTokens {
    /// Build a record; `lifetime` is the server's `expires_in`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        flow: Flow,
        client_id: &str,
        token_url: &str,
        scopes: &[String],
        access_token: Secret,
        obtained: SystemTime,
        lifetime: Duration,
        refresh_token: Option<Secret>,
    ) -> StoredTokens {
        let obtained_at_ms = unix_ms(obtained);
        StoredTokens {
            version: VERSION,
            flow,
            client_id: client_id.into(),
            token_url: token_url.into(),
            scopes: scopes.to_vec(),
            access_token,
            obtained_at_ms,
            expires_at_ms: obtained_at_ms + lifetime.as_millis() as u64,
            refresh_token,
        }
    }

    /// How long the access token lives in total.
    pub fn lifetime(&self) -> Duration {
        Duration::from_millis(self.expires_at_ms.saturating_sub(self.obtained_at_ms))
    }

    /// Time left before the access token expires (zero when expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        Duration::from_millis(self.expires_at_ms.saturating_sub(unix_ms(now)))
    }

    /// When the refresher should renew the access token: at 80% of its lifetime.
    pub fn refresh_due(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.obtained_at_ms + self.lifetime().as_millis() as u64 * 4 / 5)
    }

    /// Whether the access token can still be handed out: it has more than a fifth of its lifetime
    /// (at most a minute) left, so that a request made with it does not arrive after it expired.
    pub fn usable(&self, now: SystemTime) -> bool {
        let margin = (self.lifetime() / 5).min(Duration::from_secs(60));
        self.remaining(now) > margin
    }
}

/// Identity of the file's current content, to notice when another process (a `login`) replaced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    ino: u64,
    mtime_ns: i128,
    len: u64,
}

/// The token file of one remote.
#[derive(Clone, Debug)]
pub struct TokenStore {
    path: PathBuf,
}

impl TokenStore {
    /// The store of remote `remote` under state dir `state_dir` (`<state>/tokens/<remote>.json`).
    pub fn new(state_dir: &Path, remote: &str) -> io::Result<TokenStore> {
        if remote.is_empty() || remote.contains(['/', '\0']) || remote.starts_with('.') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{remote:?} is not a usable remote name"),
            ));
        }
        Ok(TokenStore {
            path: state_dir.join("tokens").join(format!("{remote}.json")),
        })
    }

    /// A store at an explicit path.
    pub fn at(path: impl Into<PathBuf>) -> TokenStore {
        TokenStore { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stamp of the file as it is now (`None` if missing).
    pub fn stamp(&self) -> Option<Stamp> {
        let m = fs::metadata(&self.path).ok()?;
        Some(Stamp {
            ino: m.ino(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            len: m.len(),
        })
    }

    /// Read the tokens; `Ok(None)` when there is no file yet.
    pub fn load(&self) -> io::Result<Option<(StoredTokens, Option<Stamp>)>> {
        let stamp = self.stamp();
        let text = match fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let tokens: StoredTokens = serde_json::from_slice(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a token file: {e}", self.path.display()),
            )
        })?;
        Ok(Some((tokens, stamp)))
    }

    /// Replace the file atomically with `tokens` (mode 0600, folder 0700) and return its new stamp.
    pub fn save(&self, tokens: &StoredTokens) -> io::Result<Option<Stamp>> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        crate::private_fs::create_private_dir_all(dir)?;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        let body = serde_json::to_vec_pretty(tokens).map_err(io::Error::other)?;
        let name = self.path.file_name().and_then(|n| n.to_str()).unwrap_or("tokens");
        let tmp = dir.join(format!(".{name}.{}.{}.tmp", std::process::id(), rand::random::<u32>()));
        let result = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|()| self.stamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StoredTokens {
        StoredTokens::new(
            Flow::Device,
            "cid",
            "http://h/t/oauth2/v2.0/token",
            &["Files.ReadWrite.All".into()],
            Secret::new("AT-secret-value"),
            SystemTime::now(),
            Duration::from_secs(100),
            Some(Secret::new("RT-secret-value")),
        )
    }

    #[test]
    fn save_load_mode_and_debug() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path(), "work").unwrap();
        assert!(store.load().unwrap().is_none());
        let t = sample();
        let s1 = store.save(&t).unwrap();
        let (back, s2) = store.load().unwrap().unwrap();
        assert_eq!(back, t);
        assert_eq!(s1, s2);
        let mode = fs::metadata(store.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dbg = format!("{t:?} {store:?}");
        assert!(
            !dbg.contains("AT-secret-value") && !dbg.contains("RT-secret-value"),
            "{dbg}"
        );
        // No temp files are left behind.
        assert_eq!(fs::read_dir(store.path().parent().unwrap()).unwrap().count(), 1);
        // A rewrite changes the stamp even within the same second (new inode).
        let s3 = store.save(&t).unwrap();
        assert_ne!(s1, s3);
        assert!(TokenStore::new(dir.path(), "../x").is_err());
    }

    #[test]
    fn timing() {
        let t = sample();
        let now = SystemTime::now();
        assert!(t.usable(now));
        assert!(t.usable(now + Duration::from_secs(75)));
        assert!(!t.usable(now + Duration::from_secs(85)));
        let due = t.refresh_due().duration_since(now).unwrap_or_default();
        assert!(
            due > Duration::from_secs(75) && due <= Duration::from_secs(80),
            "{due:?}"
        );
    }
}
