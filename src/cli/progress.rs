//! Progress where a user waits (`cloudmount unmount`, `cloudmount status --watch`): bytes sent,
//! rate and time left per file, as bars redrawn in place on a terminal, or as plain lines (at
//! most one per file every few seconds) in a log or a pipe.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use super::state::UploadLine;

/// How far back the rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Plain lines: at most one per file this often.
const PLAIN_EVERY: Duration = Duration::from_secs(3);

/// `1536` as `1.5 KiB`: sizes for people, where exact byte counts only get in the way.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `75` s as `1:15`.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// The rate of each upload, from the bytes sent seen over the last few seconds.
#[derive(Default)]
pub struct Rates {
    samples: HashMap<String, Vec<(Instant, u64)>>,
}

impl Rates {
    /// Record what `u` has sent now; returns its rate in bytes per second, once known.
    pub fn observe(&mut self, u: &UploadLine, now: Instant) -> Option<f64> {
        let s = self.samples.entry(format!("{}/{}", u.folder, u.name)).or_default();
        if !u.running || s.last().is_some_and(|&(_, sent)| sent > u.sent) {
            // Not sending, or a new attempt started from zero.
            s.clear();
        }
        if !u.running {
            return None;
        }
        s.push((now, u.sent));
        s.retain(|&(t, _)| now.duration_since(t) <= RATE_WINDOW);
        let (t0, b0) = *s.first()?;
        let secs = now.duration_since(t0).as_secs_f64();
        (secs >= 0.5).then(|| (u.sent.saturating_sub(b0)) as f64 / secs)
    }
}

/// One upload in words: `sending a.bin: 3.0 MiB of 20.0 MiB (15%), 1.0 MiB/s, 0:17 left`.
pub fn describe(u: &UploadLine, rate: Option<f64>) -> String {
    if u.failed {
        return format!(
            "stays queued {}: {}",
            u.name,
            u.error.as_deref().unwrap_or("refused by the server")
        );
    }
    if !u.running {
        let mut s = format!("waiting {}: {}", u.name, human_bytes(u.size));
        if let Some(e) = &u.error {
            s.push_str(&format!(" (retrying after {} attempt(s): {e})", u.attempts));
        }
        return s;
    }
    let sent = u.sent.min(u.size);
    let pct = (sent * 100).checked_div(u.size).unwrap_or(100);
    let mut s = format!(
        "sending {}: {} of {} ({pct}%)",
        u.name,
        human_bytes(sent),
        human_bytes(u.size)
    );
    match rate {
        Some(r) if r >= 1.0 => {
            let left = Duration::from_secs_f64((u.size - sent) as f64 / r);
            s.push_str(&format!(", {}/s, {} left", human_bytes(r as u64), clock(left)));
        }
        Some(_) => s.push_str(", stalled"),
        None => {}
    }
    s
}

/// A bar of `width` cells for `u`.
fn bar(u: &UploadLine, width: usize) -> String {
    let done = if u.size == 0 {
        width
    } else {
        (u.sent.min(u.size) as u128 * width as u128 / u.size as u128) as usize
    };
    format!("[{}{}]", "#".repeat(done), "-".repeat(width - done))
}

/// Where progress goes: redrawn in place on a terminal, plain lines elsewhere.
pub struct Screen<W: Write> {
    out: W,
    terminal: bool,
    drawn: usize,
    rates: Rates,
    last_plain: HashMap<String, (Instant, String)>,
    last_header: String,
}

impl<W: Write> Screen<W> {
    /// Progress on `out`; `terminal` picks bars redrawn in place.
    pub fn new(out: W, terminal: bool) -> Screen<W> {
        Screen {
            out,
            terminal,
            drawn: 0,
            rates: Rates::default(),
            last_plain: HashMap::new(),
            last_header: String::new(),
        }
    }

    /// Show `header` and the uploads now.
    pub fn show(&mut self, header: &str, uploads: &[UploadLine]) {
        let now = Instant::now();
        let lines: Vec<(String, String)> = uploads
            .iter()
            .map(|u| {
                let rate = self.rates.observe(u, now);
                let key = format!("{}/{}", u.folder, u.name);
                let text = describe(u, rate);
                let text = if self.terminal && u.running {
                    format!("{} {text}", bar(u, 20))
                } else {
                    text
                };
                (key, text)
            })
            .collect();
        if self.terminal {
            // Up to the first line drawn last time, clear to the end of the screen, draw again.
            if self.drawn > 0 {
                let _ = write!(self.out, "\x1b[{}A\r\x1b[J", self.drawn);
            }
            let _ = writeln!(self.out, "{header}");
            for (_, l) in &lines {
                let _ = writeln!(self.out, "  {l}");
            }
            self.drawn = header.lines().count().max(1) + lines.len();
        } else {
            if !header.is_empty() && self.last_header != header {
                let _ = writeln!(self.out, "{header}");
                self.last_header = header.to_string();
            }
            for (key, l) in lines {
                // The same words again, or any words too soon, are not worth a line.
                let fresh = match self.last_plain.get(&key) {
                    Some((t, said)) => said != &l && now.duration_since(*t) >= PLAIN_EVERY,
                    None => true,
                };
                if fresh {
                    let _ = writeln!(self.out, "cloudmount: {l}");
                    self.last_plain.insert(key, (now, l));
                }
            }
        }
        let _ = self.out.flush();
    }

    /// Forget what was drawn, so the next output starts below it.
    pub fn release(&mut self) {
        self.drawn = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sent: u64, running: bool) -> UploadLine {
        UploadLine {
            name: "a.bin".into(),
            folder: "root".into(),
            size: 10 << 20,
            attempts: 0,
            running,
            sent,
            error: None,
            failed: false,
        }
    }

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_bytes(0), "0 bytes");
        assert_eq!(human_bytes(1023), "1023 bytes");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(20 << 20), "20.0 MiB");
    }

    #[test]
    fn rate_and_time_left_come_from_what_was_sent() {
        let mut r = Rates::default();
        let t0 = Instant::now();
        assert_eq!(r.observe(&line(0, true), t0), None);
        let rate = r.observe(&line(2 << 20, true), t0 + Duration::from_secs(2)).unwrap();
        assert!((rate - (1 << 20) as f64).abs() < 1.0, "{rate}");
        let text = describe(&line(2 << 20, true), Some(rate));
        assert_eq!(text, "sending a.bin: 2.0 MiB of 10.0 MiB (20%), 1.0 MiB/s, 0:08 left");
        // A new attempt starts from zero: no rate until it has run a while.
        assert_eq!(r.observe(&line(1000, true), t0 + Duration::from_secs(3)), None);
    }

    #[test]
    fn plain_lines_are_not_repeated_and_bars_redraw_in_place() {
        let mut plain = Screen::new(Vec::new(), false);
        plain.show("h", &[line(0, true)]);
        plain.show("h", &[line(0, true)]);
        let text = String::from_utf8(plain.out).unwrap();
        assert_eq!(text.lines().count(), 2, "the header and one line: {text}");
        let mut tty = Screen::new(Vec::new(), true);
        tty.show("h", &[line(5 << 20, true)]);
        tty.show("h", &[line(6 << 20, true)]);
        let text = String::from_utf8(tty.out).unwrap();
        assert!(text.contains("[##########----------]"), "{text}");
        assert!(text.contains("\x1b[2A"), "{text}");
    }
}
