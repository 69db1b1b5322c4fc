//! A body reader that refuses answers too large for our memory (see the limits in
//! [`super`]), while the XML reader is still buffering them.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};

/// Why a body was refused by [`Limited`]; carried inside the `io::Error` that stops the reader.
#[derive(Debug)]
pub(super) struct AnswerTooLarge(String);

impl std::fmt::Display for AnswerTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AnswerTooLarge {}

/// Bytes read so far: in the current XML event (reset by the parser after each event) and in all.
#[derive(Default)]
pub(super) struct Counts {
    pub(super) event: AtomicU64,
    total: AtomicU64,
}

/// A reader that fails once the current XML event or the whole body has been read past its limit.
/// The XML reader consumes exactly the bytes of the event it is assembling, so counting what it
/// consumes since the parser last reset the count measures that event while it is being buffered.
pub(super) struct Limited<R> {
    pub(super) inner: R,
    pub(super) counts: Arc<Counts>,
    pub(super) max_event: u64,
    pub(super) max_total: u64,
}

impl<R> Limited<R> {
    fn check(&self) -> io::Result<()> {
        let event = self.counts.event.load(Ordering::Relaxed);
        let total = self.counts.total.load(Ordering::Relaxed);
        let why = if event > self.max_event {
            format!("an XML text node or tag longer than {} bytes", self.max_event)
        } else if total > self.max_total {
            format!("an answer longer than {} bytes", self.max_total)
        } else {
            return Ok(());
        };
        Err(io::Error::new(io::ErrorKind::InvalidData, AnswerTooLarge(why)))
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Limited<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        // Only the buffered interface is used by the XML reader; reading directly is still bounded.
        let this = self.get_mut();
        this.check()?;
        let before = buf.filled().len();
        let out = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        this.counts.event.fetch_add(n, Ordering::Relaxed);
        this.counts.total.fetch_add(n, Ordering::Relaxed);
        out
    }
}

impl<R: AsyncBufRead + Unpin> AsyncBufRead for Limited<R> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_fill_buf(cx)
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.counts.event.fetch_add(amt as u64, Ordering::Relaxed);
        this.counts.total.fetch_add(amt as u64, Ordering::Relaxed);
        Pin::new(&mut this.inner).consume(amt)
    }
}
