//! Read-pattern detection for one open file: decides how many blocks beyond the current read to
//! download ahead.
//!
//! A read that starts where the previous one ended (or inside the window just read, since the
//! kernel may reorder concurrent reads a little) is sequential. The first read at offset 0 counts as
//! sequential, so `cat` and `cp` start prefetching at once; elsewhere two sequential reads in a row
//! are needed, so a lone random read (plus the kernel's own small readahead) fetches only the blocks
//! it touches. While reads stay sequential the window doubles up to its maximum; a seek resets it.

/// Prefetch state of one file handle.
#[derive(Debug, Clone)]
pub struct ReadPattern {
    next_offset: Option<u64>,
    streak: u32,
    window_blocks: u64,
    max_window_blocks: u64,
    /// Highest block index a prefetch was already started for (exclusive).
    prefetched_until: u64,
}

impl ReadPattern {
    /// A fresh handle that may prefetch at most `max_window_blocks` blocks ahead.
    pub fn new(max_window_blocks: u64) -> Self {
        ReadPattern {
            next_offset: None,
            streak: 0,
            window_blocks: 0,
            max_window_blocks,
            prefetched_until: 0,
        }
    }

    /// Record a read of `[offset, offset + len)` with blocks of `block_size` bytes, and return the
    /// block range to prefetch (possibly empty), never reaching `block_count`.
    pub fn on_read(&mut self, offset: u64, len: u64, block_size: u64, block_count: u64) -> std::ops::Range<u64> {
        let sequential = match self.next_offset {
            None => offset == 0,
            Some(next) => {
                let slack = block_size.max(len);
                offset <= next.saturating_add(slack) && offset.saturating_add(slack) >= next
            }
        };
        let end = offset.saturating_add(len);
        self.next_offset = Some(self.next_offset.map_or(end, |n| n.max(end)));
        if sequential {
            self.streak += 1;
        } else {
            // This read may begin a new run.
            self.streak = 1;
            self.window_blocks = 0;
            self.next_offset = Some(end);
            self.prefetched_until = 0;
        }
        let started = offset == 0 && self.streak >= 1 || self.streak >= 2;
        if !started || self.max_window_blocks == 0 {
            return 0..0;
        }
        self.window_blocks = (self.window_blocks * 2).clamp(1, self.max_window_blocks);
        let last_read_block = end.saturating_sub(1) / block_size;
        let from = (last_read_block + 1).max(self.prefetched_until);
        let to = (last_read_block + 1 + self.window_blocks).min(block_count);
        if from >= to {
            return 0..0;
        }
        self.prefetched_until = to;
        from..to
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BS: u64 = 1024;

    #[test]
    fn sequential_from_start_grows_window_to_its_cap() {
        let mut p = ReadPattern::new(8);
        let mut windows = Vec::new();
        let mut off = 0;
        for _ in 0..6 {
            let r = p.on_read(off, BS, BS, 1000);
            windows.push(r.end - (off / BS + 1));
            off += BS;
        }
        assert_eq!(windows, vec![1, 2, 4, 8, 8, 8]);
    }

    #[test]
    fn a_random_read_prefetches_nothing() {
        let mut p = ReadPattern::new(8);
        assert_eq!(p.on_read(48 * BS, 4, BS, 64), 0..0);
        assert_eq!(p.on_read(3 * BS, 4, BS, 64), 0..0);
    }

    #[test]
    fn seek_resets_and_two_sequential_reads_restart_prefetch() {
        let mut p = ReadPattern::new(8);
        p.on_read(0, BS, BS, 1000);
        p.on_read(BS, BS, BS, 1000);
        assert_eq!(p.on_read(500 * BS, BS, BS, 1000), 0..0);
        let r = p.on_read(501 * BS, BS, BS, 1000);
        assert_eq!(r, 502..503);
    }

    #[test]
    fn never_prefetches_past_the_end_or_twice() {
        let mut p = ReadPattern::new(8);
        assert_eq!(p.on_read(0, BS, BS, 3), 1..2);
        assert_eq!(p.on_read(BS, BS, BS, 3), 2..3);
        assert_eq!(p.on_read(2 * BS, BS, BS, 3), 0..0);
    }
}
