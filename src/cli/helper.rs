//! The mount helper forms of the command line, as mount(8) and mount.fuse3 call them:
//!
//! ```text
//! /sbin/mount.fuse.cloudmount SOURCE DIR [-sfnv] [-o OPTIONS] [-t fuse.cloudmount]   # mount(8)
//! cloudmount SOURCE DIR -o OPTIONS                                                   # mount.fuse3
//! ```
//!
//! Both become an ordinary daemonised `cloudmount mount SOURCE DIR --flags...`: each `-o` option
//! maps to a flag, and clap checks the values exactly as it does on the command line.

use std::ffi::OsString;
use std::path::Path;

use super::{Cli, Command, MountArgs};

/// `-o` options that map to a flag with a value: (option, flag).
const VALUED: &[(&str, &str)] = &[
    ("cache_size", "--cache-size"),
    ("disk_cache_size", "--disk-cache-size"),
    ("disk_cache_dir", "--disk-cache-dir"),
    ("disk_cache_min_free", "--disk-cache-min-free"),
    ("poll_interval", "--poll-interval"),
    ("uid", "--uid"),
    ("gid", "--gid"),
    ("umask", "--umask"),
    ("config", "--config"),
    ("state_dir", "--state-dir"),
    ("log_file", "--log-file"),
    ("timeout", "--timeout"),
    ("ca_cert", "--ca-cert"),
    ("ttl", "--ttl"),
    ("block_size", "--block-size"),
    ("prefetch", "--prefetch"),
    ("uploads", "--uploads"),
    ("min_free", "--min-free"),
    ("wait_online", "--wait-online"),
    ("drive_id", "--drive-id"),
    ("drive_user", "--drive-user"),
    ("sharepoint", "--sharepoint"),
    ("library", "--library"),
    // mount(8) keeps x-* options from helpers; mount.fuse3 passes them on.
    ("x-cloudmount.wait-online", "--wait-online"),
];

/// `-o` options that map to a flag without a value.
const SWITCHES: &[(&str, &str)] = &[
    ("ro", "--read-only"),
    ("allow_other", "--allow-other"),
    ("nometadata", "--no-metadata"),
];

/// Options for mount(8), systemd or the kernel defaults that mean nothing to cloudmount, accepted
/// and ignored (cloudmount always mounts nodev,nosuid,noatime).
const IGNORED: &[&str] = &[
    "_netdev", "noauto", "auto", "nofail", "user", "users", "nouser", "owner", "group", "defaults", "rw", "dev",
    "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime", "relatime", "async",
];

/// Ignored options with a value (`user=NAME` is what mount(8) adds for fstab `user` mounts;
/// mount.fuse3 may pass `subtype=` and `fsname=`).
const IGNORED_VALUED: &[&str] = &["user", "comment", "subtype", "fsname"];

/// A mount asked for through the helper form.
#[derive(Debug)]
pub struct HelperMount {
    /// The mount, as `cloudmount mount` would get it.
    pub args: MountArgs,
    /// `-f`: check everything, mount nothing.
    pub fake: bool,
    /// `-v` count.
    pub verbose: u8,
    /// Options ignored because of `-s` (sloppy), for a warning.
    pub sloppy_ignored: Vec<String>,
}

/// Whether `word` names a subcommand of the top-level clap parser (or `help`), which the
/// `cloudmount SOURCE DIR` form must not shadow. Asked of clap itself, so a new subcommand can
/// never be mistaken for a remote name.
fn is_subcommand(word: &str) -> bool {
    use clap::CommandFactory;
    word == "help"
        || super::Cli::command()
            .get_subcommands()
            .any(|c| c.get_name() == word || c.get_all_aliases().any(|a| a == word))
}

/// Whether `argv` is a helper form: the program is called as `mount.*`, or its first argument is
/// neither a flag nor a subcommand (`cloudmount SOURCE DIR -o OPTS`).
pub fn is_helper_form(argv: &[OsString]) -> bool {
    let invoked_as = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if invoked_as.starts_with("mount.") {
        return true;
    }
    match argv.get(1).map(|a| a.to_string_lossy()) {
        Some(first) => argv.len() >= 3 && !first.starts_with('-') && !is_subcommand(&first),
        None => false,
    }
}

/// Parse a helper form into a mount. Errors are for people, and name the offending option.
pub fn parse(argv: &[OsString]) -> Result<HelperMount, String> {
    let mut positional: Vec<OsString> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    let (mut fake, mut sloppy, mut verbose) = (false, false, 0u8);
    let mut it = argv.iter().skip(1);
    while let Some(arg) = it.next() {
        let s = arg.to_string_lossy();
        if s == "-o" {
            let v = it.next().ok_or("-o needs a list of options")?;
            options.extend(split_options(&v.to_string_lossy()));
        } else if let Some(v) = s.strip_prefix("-o") {
            options.extend(split_options(v));
        } else if s == "-t" {
            let t = it.next().ok_or("-t needs a type")?.to_string_lossy().into_owned();
            if !matches!(t.as_str(), "fuse.cloudmount" | "cloudmount" | "fuse3.cloudmount") {
                return Err(format!("this helper mounts fuse.cloudmount, not {t}"));
            }
        } else if s == "-N" || s.starts_with("--namespace") {
            return Err("mounting in another namespace (-N) is not supported".into());
        } else if s.starts_with('-') && s.len() > 1 && !s.starts_with("--") {
            for c in s[1..].chars() {
                match c {
                    'f' => fake = true,
                    's' => sloppy = true,
                    'v' => verbose = verbose.saturating_add(1),
                    'n' => {} // no /etc/mtab to write
                    other => return Err(format!("unknown flag -{other} (mount helper flags: -f -s -n -v -o -t)")),
                }
            }
        } else {
            positional.push(arg.clone());
        }
    }
    let [source, dir] = <[OsString; 2]>::try_from(positional)
        .map_err(|p| format!("expected SOURCE DIR, got {} argument(s): {p:?}", p.len()))?;
    // mount.fuse3 style `cloudmount#SOURCE` sources.
    let source = match source.to_string_lossy().strip_prefix("cloudmount#") {
        Some(rest) => OsString::from(rest),
        None => source,
    };

    let mut flags: Vec<OsString> = Vec::new();
    let mut sloppy_ignored = Vec::new();
    for opt in options {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_str(), None),
        };
        if let Some((_, flag)) = VALUED.iter().find(|(k, _)| *k == key) {
            let Some(value) = value else {
                return Err(format!("option {key} needs a value ({key}=...)"));
            };
            flags.push((*flag).into());
            flags.push(value.into());
        } else if let Some((_, flag)) = SWITCHES.iter().find(|(k, _)| *k == key) {
            if value.is_some() {
                return Err(format!("option {key} takes no value"));
            }
            flags.push((*flag).into());
        } else if (value.is_none() && IGNORED.contains(&key))
            || (value.is_some() && IGNORED_VALUED.contains(&key))
            || (key.starts_with("x-") && !key.starts_with("x-cloudmount."))
        {
            // Meant for mount(8), systemd or other programs.
        } else if sloppy {
            sloppy_ignored.push(opt.clone());
        } else {
            return Err(format!(
                "unknown mount option {opt:?}; cloudmount understands {}, {}, and ignores {}, x-systemd.*",
                VALUED
                    .iter()
                    .map(|(k, _)| format!("{k}="))
                    .collect::<Vec<_>>()
                    .join(", "),
                SWITCHES.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", "),
                IGNORED.join(", "),
            ));
        }
    }

    let mut clap_argv: Vec<OsString> = vec!["cloudmount".into(), "mount".into(), source, dir];
    clap_argv.extend(flags);
    let cli = Cli::try_parse_from_args(clap_argv).map_err(|e| format!("in the mount options: {e}"))?;
    match cli.command {
        Command::Mount(args) => Ok(HelperMount {
            args,
            fake,
            verbose: verbose.max(cli.verbose),
            sloppy_ignored,
        }),
        _ => unreachable!("the argv built above is a mount"),
    }
}

/// Split `a,b=c,d` into options, skipping empty ones.
fn split_options(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split(',').filter(|o| !o.is_empty()).map(str::to_owned)
}

impl Cli {
    fn try_parse_from_args(argv: Vec<OsString>) -> Result<Cli, String> {
        Cli::try_parse_args(argv).map_err(|e| {
            // clap's rendering ends with a usage hint for the long flags; keep the first line.
            e.to_string().lines().next().unwrap_or("invalid option").to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Umask;

    fn argv(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn forms_are_recognised() {
        assert!(is_helper_form(&argv(&["/sbin/mount.fuse.cloudmount", "work", "/mnt"])));
        assert!(is_helper_form(&argv(&["cloudmount", "https://x/", "/mnt", "-o", "ro"])));
        assert!(!is_helper_form(&argv(&["cloudmount", "mount", "work", "/mnt"])));
        assert!(!is_helper_form(&argv(&["cloudmount", "status"])));
        assert!(!is_helper_form(&argv(&["cloudmount", "login", "onedrive", "work"])));
        assert!(!is_helper_form(&argv(&["cloudmount", "unmount", "/mnt", "--no-wait"])));
        assert!(!is_helper_form(&argv(&["cloudmount", "-v", "status", "/mnt"])));
    }

    #[test]
    fn options_map_to_flags() {
        let m = parse(&argv(&[
            "mount.fuse.cloudmount",
            "work",
            "/mnt/work",
            "-n",
            "-o",
            "rw,_netdev,noauto,nofail,defaults,x-systemd.automount,x-systemd.idle-timeout=60,allow_other",
            "-o",
            "cache_size=64,poll_interval=30,uid=1000,gid=100,umask=027,config=/etc/c.toml,ro",
            "-o",
            "disk_cache_size=2048,disk_cache_dir=/var/cache/work-blocks,disk_cache_min_free=10,nometadata",
            "-v",
        ]))
        .unwrap();
        let (a, o) = (&m.args, &m.args.options);
        assert!(o.no_metadata && !o.fs_config().unwrap().keep_metadata);
        assert_eq!(a.remote, "work");
        assert_eq!(a.mountpoint, Path::new("/mnt/work"));
        assert!(o.allow_other && o.read_only && !o.foreground);
        assert_eq!(
            (o.cache_size, o.uid, o.gid, o.umask),
            (64, Some(1000), Some(100), Umask(0o027))
        );
        assert_eq!(o.poll_interval, 30.0);
        assert_eq!(a.config.as_deref(), Some(Path::new("/etc/c.toml")));
        assert_eq!(o.disk_cache_size, 2048);
        assert_eq!(o.disk_cache_dir.as_deref(), Some(Path::new("/var/cache/work-blocks")));
        assert_eq!(o.disk_cache_min_free, 10.0);
        assert_eq!((m.fake, m.verbose), (false, 1));

        let m = parse(&argv(&[
            "cloudmount",
            "team",
            "/mnt/eng",
            "-o",
            "sharepoint=https://contoso.sharepoint.com/sites/eng,library=Archive,user=nobody",
        ]))
        .unwrap();
        assert_eq!(
            m.args.sharepoint.as_deref(),
            Some("https://contoso.sharepoint.com/sites/eng")
        );
        assert_eq!(m.args.library.as_deref(), Some("Archive"));
        // `user` is mount(8)'s, not a drive user nor a WebDAV user.
        assert_eq!(m.args.user, None);
    }

    #[test]
    fn wait_online_and_fake() {
        let m = parse(&argv(&[
            "cloudmount",
            "cloudmount#http://h/",
            "/m",
            "-f",
            "-owait_online=30",
        ]))
        .unwrap();
        assert!(m.fake);
        assert_eq!(m.args.remote, "http://h/");
        assert_eq!(m.args.options.wait_online, 30.0);
        let m = parse(&argv(&["cloudmount", "h", "/m", "-o", "x-cloudmount.wait-online=5"])).unwrap();
        assert_eq!(m.args.options.wait_online, 5.0);
    }

    #[test]
    fn unknown_and_bad_options_are_clear_errors() {
        let e = parse(&argv(&[
            "mount.fuse.cloudmount",
            "w",
            "/m",
            "-o",
            "allow_other,frobnicate",
        ]))
        .unwrap_err();
        assert!(e.contains("unknown mount option \"frobnicate\""), "{e}");
        let e = parse(&argv(&[
            "mount.fuse.cloudmount",
            "w",
            "/m",
            "-o",
            "x-cloudmount.nope=1",
        ]))
        .unwrap_err();
        assert!(e.contains("x-cloudmount.nope"), "{e}");
        let e = parse(&argv(&["mount.fuse.cloudmount", "w", "/m", "-o", "umask=999"])).unwrap_err();
        assert!(e.contains("umask"), "{e}");
        let e = parse(&argv(&["mount.fuse.cloudmount", "w", "/m", "-o", "uid"])).unwrap_err();
        assert!(e.contains("uid needs a value"), "{e}");
        let e = parse(&argv(&["mount.fuse.cloudmount", "w"])).unwrap_err();
        assert!(e.contains("expected SOURCE DIR"), "{e}");
        let m = parse(&argv(&["mount.fuse.cloudmount", "w", "/m", "-s", "-o", "frobnicate"])).unwrap();
        assert_eq!(m.sloppy_ignored, vec!["frobnicate".to_string()]);
    }
}
