//! The `cloudmount` binary: parses arguments, forks into the background before any thread starts,
//! and runs the mount lifecycle. `anyhow` lives only here and in `cli`.

use std::process::ExitCode;

use clap::Parser;
use cloudmount::cli::daemon::{fork_daemon, Forked, Readiness};
use cloudmount::cli::{run, Cli, Command, LoginTarget};

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "cloudmount=info,fuser=error",
        1 => "cloudmount=debug,fuser=info",
        _ => "cloudmount=trace,fuser=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Mount(args) => {
            let plan = match run::plan(&args) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("cloudmount: {e:#}");
                    return ExitCode::from(2);
                }
            };
            let readiness = if args.foreground {
                Readiness::foreground()
            } else {
                match fork_daemon(&plan.log_file) {
                    Ok(Forked::Parent(code)) => return ExitCode::from(code as u8),
                    Ok(Forked::Child(r)) => r,
                    Err(e) => {
                        eprintln!("cloudmount: cannot start the daemon: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            };
            init_logging(cli.verbose);
            match run::serve(plan, readiness) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    if args.foreground {
                        eprintln!("cloudmount: {e:#}");
                    }
                    ExitCode::FAILURE
                }
            }
        }
        Command::Unmount {
            mountpoint,
            no_wait,
            state_dir,
        } => {
            init_logging(cli.verbose);
            match run::unmount(&mountpoint, no_wait, state_dir.as_deref()) {
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
        Command::Status { mountpoint, state_dir } => match run::status(mountpoint.as_deref(), state_dir.as_deref()) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cloudmount: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
