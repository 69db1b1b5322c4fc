//! The `cloudmount` binary: parses arguments (the clap subcommands, or the mount helper forms that
//! mount(8) and mount.fuse3 use), forks into the background before any thread starts, and runs
//! the mount lifecycle. `anyhow` lives only here and in `cli`.

use std::process::ExitCode;

use cloudmount::cli::daemon::{fork_daemon, stderr_is_journal, Forked, Readiness};
use cloudmount::cli::notify::Notifier;
use cloudmount::cli::{helper, install, plan, run, status, unmount, Cli, Command, LoginTarget, MountArgs};

/// A journald line: `<priority>target: message fields`, no timestamp (the journal adds one).
struct JournaldFormat;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JournaldFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        // sd-daemon(3) priorities.
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        // The spans in force (a FUSE request's op, inode, handle and pid), as fmt's own format
        // shows them.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                match ext.get::<tracing_subscriber::fmt::FormattedFields<N>>() {
                    Some(fields) if !fields.is_empty() => write!(writer, "{}{{{fields}}}: ", span.name())?,
                    _ => write!(writer, "{}: ", span.name())?,
                }
            }
        }
        write!(writer, "{}: ", event.metadata().target())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Logs to stderr: on the systemd journal as `<N>` lines without timestamps or colours; elsewhere
/// with timestamps (a daemon's log file has nothing else to date its lines), colours only on a
/// terminal.
fn init_logging(verbose: u8) {
    use std::io::IsTerminal;
    let default = match verbose {
        0 => "cloudmount=info,fuser=error",
        1 => "cloudmount=debug,fuser=info",
        _ => "cloudmount=trace,fuser=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if stderr_is_journal() {
        builder.with_ansi(false).event_format(JournaldFormat).init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// `cloudmount mount` (also reached through the helper forms): returns once the mount is live,
/// with 0, or with a message and non-zero.
fn mount(args: MountArgs, verbose: u8, notifier: Notifier) -> ExitCode {
    let plan = match plan::plan(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cloudmount: {e:#}");
            return ExitCode::from(2);
        }
    };
    let foreground = plan.options.foreground;
    let readiness = if foreground {
        Readiness::foreground(notifier)
    } else {
        let keep_stderr = plan.options.log_file.is_none() && stderr_is_journal();
        match fork_daemon(&plan.log_file, keep_stderr, notifier) {
            Ok(Forked::Parent(code)) => return ExitCode::from(code as u8),
            Ok(Forked::Child(r)) => r,
            Err(e) => {
                eprintln!("cloudmount: cannot start the daemon: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    init_logging(verbose);
    match run::serve(plan, readiness) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            if foreground {
                eprintln!("cloudmount: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    // Before any thread: NOTIFY_SOCKET leaves the environment here.
    let notifier = Notifier::from_env();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if helper::is_helper_form(&argv) {
        let m = match helper::parse(&argv) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("cloudmount: {e}");
                return ExitCode::from(2);
            }
        };
        if !m.sloppy_ignored.is_empty() {
            eprintln!(
                "cloudmount: ignoring unknown options (-s): {}",
                m.sloppy_ignored.join(",")
            );
        }
        if m.fake {
            // -f: check what can be checked without mounting.
            return match plan::plan(&m.args) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("cloudmount: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        return mount(m.args, m.verbose, notifier);
    }
    let cli = Cli::try_parse_args(argv).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Mount(args) => mount(args, cli.verbose, notifier),
        Command::Unmount {
            mountpoint, no_wait, ..
        } => {
            init_logging(cli.verbose);
            match unmount::unmount(&mountpoint, no_wait) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("cloudmount: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Login {
            target: LoginTarget::Onedrive(args),
        } => {
            init_logging(cli.verbose);
            match cloudmount::cli::login::login_onedrive(&args) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("cloudmount: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Status {
            mountpoint,
            watch: true,
            state_dir,
            ..
        } => match status::status_watch(mountpoint.as_deref(), state_dir.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cloudmount: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Status {
            mountpoint,
            json,
            state_dir,
            ..
        } => match status::status(mountpoint.as_deref(), state_dir.as_deref(), json) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cloudmount: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Install { prefix } => report(
            std::env::current_exe()
                .map_err(anyhow::Error::from)
                .and_then(|exe| install::install(&exe, &prefix)),
        ),
        Command::Uninstall { prefix } => report(install::uninstall(&prefix)),
    }
}

/// Print what was done, one line each, or the error.
fn report(done: anyhow::Result<Vec<String>>) -> ExitCode {
    match done {
        Ok(lines) => {
            for l in lines {
                println!("cloudmount: {l}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cloudmount: {e:#}");
            ExitCode::FAILURE
        }
    }
}
