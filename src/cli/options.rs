//! [`MountOptions`]: every setting of a mount, and [`DEFAULTS`], the one place their defaults live.
//!
//! The command line (`cloudmount mount --flags`) and the mount helper (`-o` options from mount(8),
//! mount.fuse3 and fstab, mapped to the same flags by [`super::helper`]) parse into this struct
//! through clap, whose defaults are read from [`DEFAULTS`]; tests start from
//! [`MountOptions::default`]. The core's own settings ([`FsConfig`]) come out of
//! [`MountOptions::fs_config`], and the defaults the core needs are [`FsConfig`]'s, so
//! `FsConfig::default()` is the core of a mount made with no options.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::heading;
use crate::vfs::{FsConfig, Ownership};

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;

/// The defaults of every mount option. The core's come from [`FsConfig`]'s constants, in the
/// units the command line speaks (MiB, KiB, seconds, percent).
pub const DEFAULTS: MountOptions = MountOptions {
    read_only: false,
    allow_other: false,
    no_metadata: false,
    uid: None,
    gid: None,
    umask: Umask(Ownership::DEFAULT_UMASK),
    ttl: FsConfig::DEFAULT_TTL.as_secs_f64(),
    negative_ttl: NegativeTtl::FollowTtl,
    poll_interval: 30.0,
    timeout: 30.0,
    ca_cert: None,
    wait_online: 0.0,
    cache_size: FsConfig::DEFAULT_CACHE_BYTES / MIB,
    disk_cache_size: FsConfig::DEFAULT_DISK_CACHE_BYTES / MIB,
    disk_cache_dir: None,
    disk_cache_min_free: FsConfig::DEFAULT_DISK_CACHE_MIN_FREE * 100.0,
    block_size: FsConfig::DEFAULT_BLOCK_SIZE / KIB,
    prefetch: FsConfig::DEFAULT_PREFETCH_BYTES / MIB,
    state_dir: None,
    uploads: 4,
    min_free: 256,
    foreground: false,
    log_file: None,
};

/// Every setting of a mount (all but which remote, where, and its credentials). The config file
/// may hold them per remote under the same names (`[remotes.NAME.mount]`); what it leaves out is
/// [`DEFAULTS`]'s.
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MountOptions {
    /// Refuse every change with EROFS.
    #[arg(long, help_heading = heading::COMMON)]
    pub read_only: bool,
    /// Let other users access the mount (non-root needs user_allow_other in /etc/fuse.conf). The
    /// kernel still checks --uid, --gid and --umask for them.
    #[arg(long, help_heading = heading::COMMON)]
    pub allow_other: bool,
    /// Keep no modes, owners or times of our own (mount option `nometadata`): items show
    /// --uid, --gid, --umask and the server's times, and chmod, chown and utimens the remote
    /// cannot keep succeed without effect.
    #[arg(long, help_heading = heading::COMMON)]
    pub no_metadata: bool,
    /// Owner shown for every file and folder [default: the user who mounts].
    #[arg(long, value_name = "UID", help_heading = heading::COMMON)]
    pub uid: Option<u32>,
    /// Group shown for every file and folder [default: the group of the user who mounts].
    #[arg(long, value_name = "GID", help_heading = heading::COMMON)]
    pub gid: Option<u32>,
    /// Permission bits taken away from files (0666) and folders (0777), in octal.
    #[arg(long, value_name = "OCTAL", default_value_t = DEFAULTS.umask, help_heading = heading::COMMON)]
    pub umask: Umask,
    /// How long attributes and folder listings are trusted before asking the server again.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULTS.ttl, help_heading = heading::COMMON)]
    #[serde(deserialize_with = "number")]
    pub ttl: f64,
    /// How long a missing name is remembered as missing, in seconds (`ttl`: as long as --ttl).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULTS.negative_ttl, help_heading = heading::COMMON)]
    pub negative_ttl: NegativeTtl,
    /// How often to look for changes made elsewhere, in seconds. OneDrive: a delta round; WebDAV:
    /// the folders the mount has listed are listed again (on Nextcloud/ownCloud only when the
    /// root's ETag moved). Changed files and names are invalidated in the kernel, so --ttl may be
    /// long.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULTS.poll_interval, help_heading = heading::COMMON)]
    #[serde(deserialize_with = "number")]
    pub poll_interval: f64,
    /// Deadline of one network operation, retries included: past it the caller gets an error.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULTS.timeout, help_heading = heading::COMMON)]
    #[serde(deserialize_with = "number")]
    pub timeout: f64,
    /// A PEM file of CA certificates to trust besides the system's, for a server whose certificate
    /// comes from a private CA or is self-signed (overrides the remote's `ca_cert` in the config).
    #[arg(long, value_name = "FILE", help_heading = heading::COMMON)]
    pub ca_cert: Option<PathBuf>,
    /// When the server cannot be reached at mount time (no network yet at boot), keep trying for
    /// this long before failing (mount option wait_online=SECS). 0: fail at once.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULTS.wait_online, help_heading = heading::COMMON)]
    #[serde(deserialize_with = "number")]
    pub wait_online: f64,
    /// Memory cap of the block cache, in MiB.
    #[arg(long, value_name = "MiB", default_value_t = DEFAULTS.cache_size, help_heading = heading::CACHE)]
    pub cache_size: u64,
    /// Cap of the on-disk block cache, in MiB (0: no disk cache). Blocks downloaded once are
    /// read from local disk afterwards, also by the next mount of the same remote.
    #[arg(long, value_name = "MiB", default_value_t = DEFAULTS.disk_cache_size, help_heading = heading::CACHE)]
    pub disk_cache_size: u64,
    /// Folder of the disk cache, used by one mount at a time [default: a folder per remote under
    /// $XDG_CACHE_HOME/cloudmount/blocks, or /var/cache/cloudmount/blocks for root].
    #[arg(long, value_name = "DIR", help_heading = heading::CACHE)]
    pub disk_cache_dir: Option<PathBuf>,
    /// Share of the disk cache's filesystem left free, in percent: no block is stored that would
    /// leave less.
    #[arg(long, value_name = "PERCENT", default_value_t = DEFAULTS.disk_cache_min_free, help_heading = heading::CACHE)]
    #[serde(deserialize_with = "number")]
    pub disk_cache_min_free: f64,
    /// Size of one cached block (and of one ranged download), in KiB.
    #[arg(long, value_name = "KiB", default_value_t = DEFAULTS.block_size, help_heading = heading::CACHE)]
    pub block_size: u64,
    /// How far ahead sequential reads prefetch, in MiB.
    #[arg(long, value_name = "MiB", default_value_t = DEFAULTS.prefetch, help_heading = heading::CACHE)]
    pub prefetch: u64,
    /// Where upload journals and staged content live; a second mount of a remote that is already
    /// mounted needs one of its own [default: $XDG_STATE_HOME/cloudmount].
    #[arg(long, value_name = "PATH", help_heading = heading::UPLOADS)]
    #[serde(skip)]
    pub state_dir: Option<PathBuf>,
    /// Uploads running at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULTS.uploads, help_heading = heading::UPLOADS)]
    pub uploads: usize,
    /// Free space the state disk must keep; writes that would eat into it get ENOSPC.
    #[arg(long, value_name = "MiB", default_value_t = DEFAULTS.min_free, help_heading = heading::UPLOADS)]
    pub min_free: u64,
    /// Stay attached to the terminal and log to stderr.
    #[arg(long, help_heading = heading::DAEMON)]
    #[serde(skip)]
    pub foreground: bool,
    /// Where the daemon logs when not in the foreground [default: a file per mountpoint under
    /// $XDG_CACHE_HOME/cloudmount/logs; the journal when started by systemd].
    #[arg(long, value_name = "PATH", help_heading = heading::DAEMON)]
    pub log_file: Option<PathBuf>,
}

impl Default for MountOptions {
    fn default() -> Self {
        DEFAULTS
    }
}

/// A number in the config file, written with or without a decimal point (`ttl = 60`, `ttl = 0.5`).
fn number<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Int(i64),
        Float(f64),
    }
    let number = Number::deserialize(d).map_err(|_| serde::de::Error::custom("expected a number"))?;
    Ok(match number {
        Number::Int(i) => i as f64,
        Number::Float(f) => f,
    })
}

/// Written as the command line writes it, so the config file and the flags read the same.
fn as_text<T: fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Read as the command line reads it (a string), or from a number for `--negative-ttl`.
fn from_text<'de, T, D>(d: D) -> Result<T, D::Error>
where
    T: std::str::FromStr<Err = String>,
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Str(String),
        Int(i64),
        Float(f64),
    }
    let text = match Text::deserialize(d)? {
        Text::Str(s) => s,
        Text::Int(i) => i.to_string(),
        Text::Float(f) => f.to_string(),
    };
    text.parse().map_err(serde::de::Error::custom)
}

/// A umask, shown and parsed in octal (`022`, `0027`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Umask(pub u16);

impl fmt::Display for Umask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03o}", self.0)
    }
}

impl std::str::FromStr for Umask {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match u16::from_str_radix(s.trim_start_matches("0o"), 8) {
            Ok(v) if v <= 0o777 => Ok(Umask(v)),
            _ => Err(format!("{s:?} is not an octal umask between 000 and 777")),
        }
    }
}

/// `--negative-ttl`: seconds, or `ttl` to follow `--ttl`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NegativeTtl {
    /// As long as `--ttl`.
    FollowTtl,
    /// This many seconds.
    Secs(f64),
}

impl fmt::Display for NegativeTtl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NegativeTtl::FollowTtl => f.write_str("ttl"),
            NegativeTtl::Secs(s) => write!(f, "{s}"),
        }
    }
}

impl std::str::FromStr for NegativeTtl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "ttl" {
            return Ok(NegativeTtl::FollowTtl);
        }
        s.parse::<f64>()
            .map(NegativeTtl::Secs)
            .map_err(|_| format!("{s:?} is neither a number of seconds nor `ttl`"))
    }
}

/// Serialize and deserialize `$t` as its text form (`Display` / `FromStr`), as the flags take it.
macro_rules! as_text_form {
    ($($t:ty),+) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                as_text(self, s)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                from_text(d)
            }
        }
    )+};
}

as_text_form!(Umask, NegativeTtl);

/// `v` seconds of option `--name`, refused when negative or not a number.
pub(super) fn secs(name: &str, v: f64) -> Result<Duration> {
    if !v.is_finite() || v < 0.0 {
        bail!("--{name} must be a non-negative number of seconds");
    }
    Ok(Duration::from_secs_f64(v))
}

impl MountOptions {
    /// The options a remote's `[remotes.NAME.mount]` table gives, [`DEFAULTS`] for the rest.
    pub fn from_config(table: &toml::Table) -> Result<MountOptions> {
        MountOptions::deserialize(toml::Value::Table(table.clone())).map_err(|e| anyhow::anyhow!("{}", e.message()))
    }

    /// These options (from the command line, where `given` names the flags it gave) over the
    /// remote's `[remotes.NAME.mount]` table: a flag given wins, then the table, then [`DEFAULTS`].
    pub fn over_config(&self, given: &[String], table: &toml::Table) -> Result<MountOptions> {
        let mine = match toml::Value::try_from(self).context("cannot write the mount options as TOML")? {
            toml::Value::Table(t) => t,
            other => bail!("the mount options are not a table: {other}"),
        };
        let mut merged = table.clone();
        for key in given {
            match mine.get(key) {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        let mut options = MountOptions::from_config(&merged)?;
        // Never from the config file: whether this process stays in the foreground, and the
        // state directory (where `cloudmount login` also keeps the remote's tokens).
        options.foreground = self.foreground;
        options.state_dir.clone_from(&self.state_dir);
        Ok(options)
    }

    /// The core's settings for these options, checked. Without `--uid` / `--gid` items show the
    /// user who mounts as their owner.
    pub fn fs_config(&self) -> Result<FsConfig> {
        if !(4..=16384).contains(&self.block_size) {
            bail!("--block-size must be between 4 and 16384 KiB");
        }
        let block_size = self.block_size * KIB;
        let cache_bytes = self.cache_size.saturating_mul(MIB);
        if cache_bytes < 4 * block_size {
            bail!("--cache-size must hold at least 4 blocks ({} KiB)", 4 * self.block_size);
        }
        if !(0.0..=100.0).contains(&self.disk_cache_min_free) {
            bail!("--disk-cache-min-free must be a percentage between 0 and 100");
        }
        let attr_ttl = secs("ttl", self.ttl)?;
        let negative_ttl = match self.negative_ttl {
            NegativeTtl::Secs(v) => secs("negative-ttl", v)?,
            NegativeTtl::FollowTtl => attr_ttl,
        };
        let me = Ownership::current_user();
        Ok(FsConfig {
            ownership: Ownership::new(self.uid.unwrap_or(me.uid), self.gid.unwrap_or(me.gid), self.umask.0),
            attr_ttl,
            negative_ttl,
            block_size,
            cache_bytes,
            disk_cache_dir: self.disk_cache_dir.clone(),
            disk_cache_bytes: self.disk_cache_size.saturating_mul(MIB),
            disk_cache_min_free: self.disk_cache_min_free / 100.0,
            max_prefetch_bytes: self.prefetch.saturating_mul(MIB),
            read_only: self.read_only,
            keep_metadata: !self.no_metadata,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use clap::CommandFactory;

    use super::*;
    use crate::cli::{helper, Cli, Command};

    fn cli_args(argv: &[&str]) -> crate::cli::MountArgs {
        match Cli::try_parse_args(argv).unwrap().command {
            Command::Mount(a) => a,
            other => panic!("{other:?}"),
        }
    }

    fn cli_options(argv: &[&str]) -> MountOptions {
        cli_args(argv).options
    }

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    fn helper_options(argv: &[&str]) -> MountOptions {
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        helper::parse(&argv).unwrap().args.options
    }

    /// A mount with no options gets the same settings from the command line, from both mount
    /// helper forms and from `MountOptions::default()`, and the core gets `FsConfig::default()`.
    #[test]
    fn defaults_are_one_source() {
        assert_eq!(cli_options(&["cloudmount", "mount", "r", "/m"]), DEFAULTS);
        assert_eq!(helper_options(&["/sbin/mount.fuse.cloudmount", "r", "/m"]), DEFAULTS);
        assert_eq!(helper_options(&["cloudmount", "r", "/m", "-o", "rw,_netdev"]), DEFAULTS);
        assert_eq!(MountOptions::default(), DEFAULTS);
        assert_eq!(MountOptions::from_config(&toml::Table::new()).unwrap(), DEFAULTS);
        assert_eq!(
            format!("{:?}", DEFAULTS.fs_config().unwrap()),
            format!("{:?}", FsConfig::default())
        );
        // The values the README and `--help` promise.
        let d = DEFAULTS;
        assert_eq!(
            (d.ttl, d.poll_interval, d.timeout, d.wait_online),
            (5.0, 30.0, 30.0, 0.0)
        );
        assert_eq!(
            (d.cache_size, d.disk_cache_size, d.block_size, d.prefetch),
            (128, 1024, 1024, 32)
        );
        assert_eq!((d.uploads, d.min_free, d.disk_cache_min_free), (4, 256, 5.0));
        assert_eq!(
            (d.umask, d.negative_ttl, d.read_only),
            (Umask(0o022), NegativeTtl::FollowTtl, false)
        );
    }

    #[test]
    fn help_shows_the_defaults_in_the_units_given() {
        let mut cmd = Cli::command();
        let help = cmd.find_subcommand_mut("mount").unwrap().render_long_help().to_string();
        for shown in [
            "[default: 022]",
            "[default: ttl]",
            "[default: 128]",
            "[default: 1024]",
            "[default: 30]",
        ] {
            assert!(help.contains(shown), "{shown} missing from:\n{help}");
        }
    }

    #[test]
    fn options_convert_to_the_core_settings() {
        let o = cli_options(&[
            "cloudmount",
            "mount",
            "r",
            "/m",
            "--ttl",
            "2",
            "--negative-ttl",
            "0.5",
            "--block-size",
            "64",
            "--cache-size",
            "8",
            "--umask",
            "077",
            "--uid",
            "7",
            "--disk-cache-min-free",
            "10",
            "--read-only",
        ]);
        let c = o.fs_config().unwrap();
        assert_eq!(
            (c.attr_ttl, c.negative_ttl),
            (Duration::from_secs(2), Duration::from_millis(500))
        );
        assert_eq!((c.block_size, c.cache_bytes), (64 << 10, 8 << 20));
        assert_eq!(
            (c.ownership.uid, c.ownership.file_mode, c.ownership.dir_mode),
            (7, 0o600, 0o700)
        );
        assert_eq!(c.disk_cache_min_free, 0.1);
        assert!(c.read_only);
        let small = cli_options(&[
            "cloudmount",
            "mount",
            "r",
            "/m",
            "--cache-size",
            "1",
            "--block-size",
            "1024",
        ]);
        assert!(small.fs_config().unwrap_err().to_string().contains("at least 4 blocks"));
    }

    /// A remote's `[remotes.NAME.mount]` options apply where the command line gives none; a flag
    /// given wins even when it says the default, and what neither gives is the default.
    #[test]
    fn config_options_sit_between_the_flags_and_the_defaults() {
        let config = table("cache_size = 512\nttl = 60\numask = \"027\"\nnegative_ttl = 1\nread_only = true\n");
        let args = cli_args(&[
            "cloudmount",
            "mount",
            "r",
            "/m",
            "--ttl",
            "2",
            "--cache-size",
            "128",
            "--foreground",
        ]);
        for given in ["ttl", "cache_size", "foreground"] {
            assert!(args.given.iter().any(|g| g == given), "{given} not in {:?}", args.given);
        }
        assert!(!args.given.iter().any(|g| g == "uploads"), "{:?}", args.given);
        let o = args.options.over_config(&args.given, &config).unwrap();
        assert_eq!((o.ttl, o.cache_size), (2.0, 128));
        assert_eq!(
            (o.umask, o.negative_ttl, o.read_only),
            (Umask(0o027), NegativeTtl::Secs(1.0), true)
        );
        assert!(o.foreground);
        assert_eq!(o.prefetch, DEFAULTS.prefetch);
        // The mount helper's -o options count as given too.
        let argv: Vec<OsString> = ["cloudmount", "r", "/m", "-o", "ttl=3"]
            .iter()
            .map(OsString::from)
            .collect();
        let m = helper::parse(&argv).unwrap();
        let o = m.args.options.over_config(&m.args.given, &config).unwrap();
        assert_eq!((o.ttl, o.cache_size), (3.0, 512));
    }

    #[test]
    fn config_options_are_checked() {
        let err = |text: &str| MountOptions::from_config(&table(text)).unwrap_err().to_string();
        assert!(err("cache_sise = 1\n").contains("cache_sise"));
        assert!(err("umask = \"999\"\n").contains("octal umask"));
        assert!(err("ttl = \"soon\"\n").contains("expected a number"));
        // Not per remote: the foreground and the state directory (the tokens' too).
        assert!(err("foreground = true\n").contains("foreground"));
        assert!(err("state_dir = \"/x\"\n").contains("state_dir"));
        let o = MountOptions::from_config(&table("poll_interval = 0.5\ndisk_cache_size = 0\n")).unwrap();
        assert_eq!((o.poll_interval, o.disk_cache_size), (0.5, 0));
    }
}
