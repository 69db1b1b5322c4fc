//! A throttling TCP relay: a "slow link" between a mount and a real server.
//!
//! `Relay::start(target, bytes_per_sec)` listens on a loopback port and forwards every connection to `target`,
//! sending at most `bytes_per_sec` in each direction (summed over all connections, as a shared link would). Tests
//! mount `http://127.0.0.1:{relay.port()}/...` instead of the server's own port to make uploads and listings slow
//! enough that races with them happen on purpose. The relay can also be cut ([`Relay::cut`]): every open
//! connection is closed at once and new ones are refused until [`Relay::restore`].

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A token bucket shared by the connections of one direction.
struct Bucket {
    rate: u64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(rate: u64) -> Bucket {
        Bucket {
            rate,
            state: Mutex::new((0.0, Instant::now())),
        }
    }

    /// Waits until `n` bytes may go out.
    fn take(&self, n: usize) {
        if self.rate == 0 {
            return;
        }
        loop {
            let wait = {
                let mut s = self.state.lock().unwrap();
                let now = Instant::now();
                // Allow a burst of at most 1/20 s worth of bytes.
                let cap = (self.rate as f64 / 20.0).max(n as f64);
                s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate as f64).min(cap);
                s.1 = now;
                if s.0 >= n as f64 {
                    s.0 -= n as f64;
                    return;
                }
                Duration::from_secs_f64((n as f64 - s.0) / self.rate as f64)
            };
            thread::sleep(wait.min(Duration::from_millis(50)));
        }
    }
}

/// A running relay; stops accepting when dropped (open connections end when either side closes).
pub struct Relay {
    port: u16,
    stop: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    /// Relays `127.0.0.1:{port}` to `target` at `bytes_per_sec` each way (0: unlimited).
    pub fn start(target: SocketAddr, bytes_per_sec: u64) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().expect("relay addr").port();
        listener.set_nonblocking(true).expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let up = Arc::new(Bucket::new(bytes_per_sec));
        let down = Arc::new(Bucket::new(bytes_per_sec));
        let (stop2, cut2, open2) = (stop.clone(), cut.clone(), open.clone());
        thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if cut2.load(Ordering::SeqCst) {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        }
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect(target) else {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        };
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        {
                            let mut o = open2.lock().unwrap();
                            o.retain(|s| s.peer_addr().is_ok());
                            o.push(client.try_clone().expect("clone"));
                            o.push(server.try_clone().expect("clone"));
                        }
                        pipe(
                            client.try_clone().expect("clone"),
                            server.try_clone().expect("clone"),
                            up.clone(),
                        );
                        pipe(server, client, down.clone());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(5)),
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Relay { port, stop, cut, open }
    }

    /// The loopback port to connect to instead of the target's.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Rewrites a URL on `target`'s port to go through the relay (`http://127.0.0.1:PORT/...`).
    pub fn url_for(&self, url: &str) -> String {
        let u = url::Url::parse(url).expect("url");
        let mut u2 = u.clone();
        u2.set_host(Some("127.0.0.1")).expect("host");
        u2.set_port(Some(self.port)).expect("port");
        u2.to_string()
    }

    /// Closes every open connection and refuses new ones (a dropped network, seen as resets).
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Accepts connections again after [`Relay::cut`].
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}

/// Copies `from` to `to` through `bucket` on its own thread until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream, bucket: Arc<Bucket>) {
    thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // Send in small slices so a slow rate is smooth rather than bursty.
            for chunk in buf[..n].chunks(4096) {
                bucket.take(chunk.len());
                if to.write_all(chunk).is_err() {
                    let _ = from.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
