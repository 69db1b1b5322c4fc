//! Command-line arguments, configuration, and the mount lifecycle the binary runs. Errors here are
//! for people: they say what failed and what to do.

pub mod config;
mod connect;
pub mod daemon;
pub mod helper;
pub mod install;
pub mod login;
pub mod notify;
pub mod options;
pub mod plan;
pub mod progress;
pub mod registry;
pub mod resolve;
pub mod run;
pub mod state;
pub mod status;
pub mod unmount;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use options::{MountOptions, NegativeTtl, Umask};

/// cloudmount: mount OneDrive and WebDAV drives as a folder.
#[derive(Debug, Parser)]
#[command(
    name = "cloudmount",
    version,
    about,
    long_about = None,
    after_help = "Also a mount helper: `cloudmount REMOTE DIR -o OPTIONS` (as mount.fuse3 runs it) and \
                  `mount.fuse.cloudmount REMOTE DIR [-sfnv] -o OPTIONS` (as mount(8) runs it; see \
                  `cloudmount install`). Options: docs/fstab.md."
)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = heading::DAEMON)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
// Parsed once per run; boxing the mount arguments would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount a remote on a folder. Returns once the mount is live, unless --foreground.
    Mount(MountArgs),
    /// Unmount a folder, then wait for its uploads, showing their progress.
    ///
    /// Waits while the daemon finishes the uploads it still owes the server. Exits non-zero,
    /// naming each file, when some stay queued (refused by the server, or a sign-in is needed).
    Unmount {
        /// The mounted folder.
        mountpoint: PathBuf,
        /// Return once unmounted; pending uploads go on in the background (or at the next mount).
        #[arg(long)]
        no_wait: bool,
        /// Accepted for older scripts; mounts are found whatever their state directory.
        #[arg(long, value_name = "PATH", hide = true)]
        state_dir: Option<PathBuf>,
    },
    /// Sign a remote in and save its tokens (creates or updates the remote in the config).
    Login {
        /// The kind of remote.
        #[command(subcommand)]
        target: LoginTarget,
    },
    /// Show every live mount of this user and the uploads it has not finished.
    ///
    /// A file counts from the moment its close returned. Mounts are found whatever their state
    /// directory (they register in $XDG_RUNTIME_DIR/cloudmount, /run/cloudmount for root).
    Status {
        /// Only the mount at this folder.
        mountpoint: Option<PathBuf>,
        /// Print the status records as JSON, for scripts.
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Keep showing the uploads, with bytes sent, rate and time left, until the mounts are
        /// gone (Ctrl-C stops).
        #[arg(long)]
        watch: bool,
        /// Only the mounts using this state directory (without it: every mount of this user,
        /// whatever its state directory).
        #[arg(long, value_name = "PATH")]
        state_dir: Option<PathBuf>,
    },
    /// Install the binary, the mount helper link and the man pages.
    ///
    /// So that `mount -t fuse.cloudmount`, /etc/fstab entries and `man cloudmount-mount` work:
    /// copies this binary
    /// to PREFIX/usr/local/bin/cloudmount, links PREFIX/sbin/mount.fuse.cloudmount to
    /// /usr/local/bin/cloudmount, writes PREFIX/usr/local/share/man/man1/cloudmount*.1 and lists
    /// what it put in place in PREFIX/usr/local/share/cloudmount/installed.
    Install {
        /// Install under this folder instead of / (for packaging and tests; the link still points
        /// at /usr/local/bin/cloudmount, where the binary will be at run time).
        #[arg(long, value_name = "DIR", default_value = "/")]
        prefix: PathBuf,
    },
    /// Remove what `cloudmount install` put in place (by its list), and nothing else.
    Uninstall {
        /// The folder given to `install --prefix`.
        #[arg(long, value_name = "DIR", default_value = "/")]
        prefix: PathBuf,
    },
}

/// `s` as one shell word, quoted only when it needs to be: hints print commands to paste.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:@=,".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// What `cloudmount login` signs in.
#[derive(Debug, Subcommand)]
pub enum LoginTarget {
    /// OneDrive or SharePoint through Microsoft Graph. Device code sign-in by default.
    Onedrive(OneDriveLoginArgs),
}

/// Arguments of `cloudmount login onedrive`. Settings given here are written into the remote's
/// config entry; settings not given keep their configured value. Secrets are never arguments.
#[derive(Debug, Clone, Args)]
pub struct OneDriveLoginArgs {
    /// Name of the remote (created in the config if missing).
    pub name: String,
    /// Sign in in a browser (authorization code + PKCE with a localhost redirect).
    #[arg(long, conflicts_with_all = ["client_credentials", "device"])]
    pub browser: bool,
    /// Sign in as an application with a client secret (from --client-secret-file or
    /// --client-secret-env); needs --tenant and a drive (--drive-id, --drive-user or --sharepoint).
    #[arg(long, conflicts_with = "device")]
    pub client_credentials: bool,
    /// Sign in with a device code (the default; switches back from --browser).
    #[arg(long)]
    pub device: bool,
    /// Tenant id or domain (default: common).
    #[arg(long, value_name = "T")]
    pub tenant: Option<String>,
    /// Application (client) id.
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// A SharePoint site URL to mount a library of.
    #[arg(long, value_name = "URL", conflicts_with_all = ["drive_id", "drive_user"])]
    pub sharepoint: Option<String>,
    /// The document library of --sharepoint (default: the site's default library).
    #[arg(long, value_name = "NAME", requires = "sharepoint")]
    pub library: Option<String>,
    /// Mount the drive with this id.
    #[arg(long, value_name = "ID", conflicts_with = "drive_user")]
    pub drive_id: Option<String>,
    /// Mount this user's OneDrive (UPN or id).
    #[arg(long, value_name = "UPN")]
    pub drive_user: Option<String>,
    /// A file holding the client secret (client credentials).
    #[arg(long, value_name = "PATH", conflicts_with = "client_secret_env")]
    pub client_secret_file: Option<PathBuf>,
    /// An environment variable holding the client secret (client credentials).
    #[arg(long, value_name = "VAR")]
    pub client_secret_env: Option<String>,
    /// The config file (default: $XDG_CONFIG_HOME/cloudmount/config.toml).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The state directory holding the tokens (default: $XDG_STATE_HOME/cloudmount).
    #[arg(long, value_name = "PATH")]
    pub state_dir: Option<PathBuf>,
    /// Identity platform base (national clouds, test servers).
    #[arg(long, value_name = "URL")]
    pub login_url: Option<String>,
    /// Graph service root (national clouds, test servers).
    #[arg(long, value_name = "URL")]
    pub graph_url: Option<String>,
}

/// Headings of `cloudmount mount --help`.
pub mod heading {
    /// What most mounts set.
    pub const COMMON: &str = "Common";
    /// Memory and disk caches.
    pub const CACHE: &str = "Cache";
    /// The upload queue and its journal.
    pub const UPLOADS: &str = "Uploads";
    /// WebDAV remotes only.
    pub const WEBDAV: &str = "WebDAV";
    /// OneDrive and SharePoint remotes only.
    pub const ONEDRIVE: &str = "OneDrive";
    /// The background daemon.
    pub const DAEMON: &str = "Daemon and logs";
}

/// Arguments of `cloudmount mount`.
#[derive(Debug, Clone, Args)]
pub struct MountArgs {
    /// An http(s) URL of a WebDAV share, or the name of a remote in the config file.
    pub remote: String,
    /// The folder to mount on (must exist).
    pub mountpoint: PathBuf,
    /// The config file naming the remotes [default: $XDG_CONFIG_HOME/cloudmount/config.toml].
    #[arg(long, value_name = "PATH", help_heading = heading::COMMON)]
    pub config: Option<PathBuf>,
    /// User for HTTP Basic auth (overrides the config). For a OneDrive user's drive, see
    /// --drive-user.
    #[arg(long, help_heading = heading::WEBDAV)]
    pub user: Option<String>,
    /// A shell command printing the password (overrides the config; env CLOUDMOUNT_PASSWORD also
    /// works).
    #[arg(long, value_name = "CMD", help_heading = heading::WEBDAV)]
    pub password_command: Option<String>,
    /// Mount the drive with this id (overrides the remote's drive in the config).
    #[arg(long, value_name = "ID", conflicts_with_all = ["drive_user", "sharepoint"], help_heading = heading::ONEDRIVE)]
    pub drive_id: Option<String>,
    /// Mount this user's OneDrive, by UPN or id (overrides the config; what app-only sign-ins
    /// use).
    #[arg(long, value_name = "UPN", conflicts_with = "sharepoint", help_heading = heading::ONEDRIVE)]
    pub drive_user: Option<String>,
    /// Mount a library of this SharePoint site (overrides the config).
    #[arg(long, value_name = "SITE-URL", help_heading = heading::ONEDRIVE)]
    pub sharepoint: Option<String>,
    /// The document library of --sharepoint [default: the site's default library].
    #[arg(long, value_name = "NAME", requires = "sharepoint", help_heading = heading::ONEDRIVE)]
    pub library: Option<String>,
    /// Every setting of the mount, with its default.
    #[command(flatten)]
    pub options: MountOptions,
    /// The options given on the command line (or as mount helper `-o` options), by field name:
    /// they win over the remote's `[remotes.NAME.mount]` in the config file.
    #[arg(skip)]
    pub given: Vec<String>,
}

impl Cli {
    /// Parse `argv`, noting which mount options it gave (see [`MountArgs::given`]).
    pub fn try_parse_args<I, T>(argv: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command().try_get_matches_from(argv)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        if let (Command::Mount(args), Some(sub)) = (&mut cli.command, matches.subcommand_matches("mount")) {
            args.given = sub
                .ids()
                .filter(|id| sub.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine))
                .map(|id| id.as_str().to_string())
                .collect();
        }
        Ok(cli)
    }
}
