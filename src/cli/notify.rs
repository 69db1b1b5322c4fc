//! systemd readiness (`sd_notify`): one datagram such as `READY=1` to the unix socket named by
//! `NOTIFY_SOCKET`, a path or an abstract name (leading `@`). Our own twenty lines rather than a
//! crate: the protocol is one `sendto`, and std has abstract socket addresses.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Where readiness goes, taken from the environment once at start.
#[derive(Debug, Default)]
pub struct Notifier {
    socket: Option<String>,
}

impl Notifier {
    /// Take `NOTIFY_SOCKET` out of the environment (so that programs we start, such as a password
    /// command, do not notify in our name). Call before any thread starts.
    pub fn from_env() -> Notifier {
        let socket = std::env::var("NOTIFY_SOCKET").ok().filter(|s| !s.is_empty());
        std::env::remove_var("NOTIFY_SOCKET");
        Notifier { socket }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Send `state` (e.g. `READY=1`); nothing when no socket was given.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let Some(name) = &self.socket else { return Ok(()) };
        let addr = match name.strip_prefix('@') {
            Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes())?,
            None if name.starts_with('/') => SocketAddr::from_pathname(name)?,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("NOTIFY_SOCKET={name:?} is neither a path nor an abstract name"),
                ))
            }
        };
        UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
        Ok(())
    }
}
