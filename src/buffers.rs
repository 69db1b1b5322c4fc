//! Reusable 1 MiB buffers for the blocks read from the server and the chunks sent to it.
//!
//! The daemon sets glibc's mmap threshold low so that freed blocks go back to the system (see
//! `cli::run`), which makes every fresh 1 MiB buffer a new mapping whose pages fault in zeroed,
//! one at a time: a fifth of the CPU time of a cold sequential read went there. Buffers taken
//! here come back when the last [`Bytes`] made from them is dropped (a block evicted from the
//! cache, a chunk the connection has sent), and the next taker gets them warm. At most
//! [`POOL_MAX`] idle buffers are kept, so memory stays bounded by what is in use plus that.

use std::sync::Mutex;

use bytes::Bytes;

/// Capacity of a pooled buffer: the block size and the upload chunk size.
pub const BUFFER_SIZE: usize = 1 << 20;

/// Idle buffers kept at most (16 MiB).
pub const POOL_MAX: usize = 16;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn pool() -> std::sync::MutexGuard<'static, Vec<Vec<u8>>> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// An empty buffer with room for `len` bytes: a pooled one when `len` is [`BUFFER_SIZE`].
pub fn with_capacity(len: usize) -> Vec<u8> {
    if len == BUFFER_SIZE {
        if let Some(mut buf) = pool().pop() {
            buf.clear();
            return buf;
        }
    }
    Vec::with_capacity(len)
}

/// `buf` as [`Bytes`]; a buffer of the pooled size goes back to the pool when the last `Bytes`
/// made from it is dropped.
pub fn freeze(buf: Vec<u8>) -> Bytes {
    if buf.capacity() == BUFFER_SIZE {
        Bytes::from_owner(Pooled(buf))
    } else {
        Bytes::from(buf)
    }
}

/// Owner of a pooled buffer inside a [`Bytes`].
struct Pooled(Vec<u8>);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut pool = pool();
        if pool.len() < POOL_MAX {
            pool.push(std::mem::take(&mut self.0));
        }
    }
}

/// Idle buffers in the pool (for tests).
pub fn idle() -> usize {
    pool().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_when_the_last_bytes_is_dropped() {
        let mut buf = with_capacity(BUFFER_SIZE);
        buf.extend_from_slice(b"block");
        let ptr = buf.as_ptr();
        let bytes = freeze(buf);
        let slice = bytes.slice(1..3);
        drop(bytes);
        assert_eq!(&slice[..], b"lo", "a slice keeps the buffer alive");
        drop(slice);
        // Other tests may use the pool meanwhile: look for our buffer among the idle ones.
        let mut taken = Vec::new();
        let mut found = false;
        for _ in 0..POOL_MAX {
            let b = with_capacity(BUFFER_SIZE);
            found |= b.as_ptr() == ptr;
            assert!(b.is_empty());
            taken.push(b);
        }
        assert!(found, "the buffer went back to the pool");
    }

    #[test]
    fn other_sizes_are_not_pooled() {
        let b = with_capacity(4096);
        assert!(b.capacity() >= 4096);
        let bytes = freeze(vec![1, 2, 3]);
        assert_eq!(&bytes[..], &[1, 2, 3]);
    }
}
