//! quickXorHash, the content hash OneDrive gives for every file on every flavour
//! (`file.hashes.quickXorHash`, Microsoft docs: "QuickXorHash").
//!
//! The byte at stream offset `i` is XORed into a 160-bit value rotated left by `(11 * i) mod 160`
//! bits; the result is that value as 20 little-endian bytes with the total length (`u64`,
//! little-endian) XORed into the last 8, in padded standard Base64.
//!
//! Offsets 160 apart land on the same bits (`11 * 160 ≡ 0 mod 160`), so the state is 160 one-byte
//! cells, cell `i mod 160` collecting byte `i`, and the bits are placed once at the end. That makes
//! the hash *addressable*: bytes can be fed at their absolute offset in any order
//! ([`QuickXor::xor_at`]), which is what an upload that resumes mid-file needs. Each byte must be
//! fed exactly once (feeding it twice cancels it out); [`Watermark`] takes care of that for bytes
//! that arrive in order, possibly repeated.

use base64::Engine as _;

const CELLS: usize = 160;
const SHIFT: usize = 11;

/// The hash state: the XOR of every byte fed, by offset modulo 160.
#[derive(Clone)]
pub struct QuickXor {
    cells: [u8; CELLS],
}

impl Default for QuickXor {
    fn default() -> Self {
        QuickXor { cells: [0; CELLS] }
    }
}

impl std::fmt::Debug for QuickXor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QuickXor")
    }
}

impl QuickXor {
    /// The state of the empty input.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed `data`, the bytes at stream offset `offset` onwards.
    pub fn xor_at(&mut self, offset: u64, mut data: &[u8]) {
        let mut idx = (offset % CELLS as u64) as usize;
        // Up to the next multiple of 160, then whole strides, eight bytes at a time.
        if idx != 0 {
            let n = (CELLS - idx).min(data.len());
            for &b in &data[..n] {
                self.cells[idx] ^= b;
                idx += 1;
            }
            data = &data[n..];
        }
        let mut strides = data.chunks_exact(CELLS);
        for stride in &mut strides {
            for (cell, word) in self.cells.chunks_exact_mut(8).zip(stride.chunks_exact(8)) {
                let mut c = [0u8; 8];
                c.copy_from_slice(cell);
                let mut w = [0u8; 8];
                w.copy_from_slice(word);
                cell.copy_from_slice(&(u64::from_ne_bytes(c) ^ u64::from_ne_bytes(w)).to_ne_bytes());
            }
        }
        for (c, b) in self.cells.iter_mut().zip(strides.remainder()) {
            *c ^= *b;
        }
    }

    /// The hash of a stream of `len` bytes whose every byte was fed once, in Base64.
    pub fn finish(&self, len: u64) -> String {
        // Place cell j at bit (11 * j) mod 160 of the 160-bit value, wrapping.
        let mut out = [0u8; 20];
        for (j, &b) in self.cells.iter().enumerate() {
            if b == 0 {
                continue;
            }
            let bit = (SHIFT * j) % (CELLS);
            let (byte, shift) = (bit / 8, bit % 8);
            let v = u16::from(b) << shift;
            out[byte] ^= v as u8;
            out[(byte + 1) % 20] ^= (v >> 8) as u8;
        }
        for (o, l) in out[12..].iter_mut().zip(len.to_le_bytes()) {
            *o ^= l;
        }
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    /// The hash of `data` in one go.
    pub fn of(data: &[u8]) -> String {
        let mut h = QuickXor::new();
        h.xor_at(0, data);
        h.finish(data.len() as u64)
    }
}

/// Hashes a stream whose bytes may be shown more than once (a retried request) or with gaps (a
/// resumed upload): only bytes right after the last one hashed count, so each is hashed once.
/// [`Watermark::fill_from`] hashes what is still missing from the local file at the end.
#[derive(Debug, Default)]
pub struct Watermark {
    hash: QuickXor,
    upto: u64,
}

impl Watermark {
    /// Nothing hashed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes `[offset, offset + data.len())` went out.
    pub fn saw(&mut self, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        if offset <= self.upto && self.upto < end {
            let skip = (self.upto - offset) as usize;
            self.hash.xor_at(self.upto, &data[skip..]);
            self.upto = end;
        }
    }

    /// Bytes hashed so far (from the start).
    pub fn upto(&self) -> u64 {
        self.upto
    }

    /// Hash the bytes of `file` from where the stream stopped to `len`, then the whole hash.
    pub fn fill_from(&mut self, file: &std::path::Path, len: u64) -> std::io::Result<String> {
        use std::io::{Read, Seek, SeekFrom};
        if self.upto < len {
            let mut f = std::fs::File::open(file)?;
            f.seek(SeekFrom::Start(self.upto))?;
            let mut buf = vec![0u8; 1 << 20];
            while self.upto < len {
                let want = buf.len().min((len - self.upto) as usize);
                let n = f.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file is shorter than the upload",
                    ));
                }
                self.hash.xor_at(self.upto, &buf[..n]);
                self.upto += n as u64;
            }
        }
        Ok(self.hash.finish(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    /// Published vectors (which agree with rclone's and Microsoft's C# reference).
    #[test]
    fn published_vectors() {
        let b64 = |s: &str| STANDARD.decode(s).unwrap();
        assert_eq!(QuickXor::of(b""), "AAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        assert_eq!(QuickXor::of(&b64("Sg==")), "SgAAAAAAAAAAAAAAAQAAAAAAAAA=");
        assert_eq!(QuickXor::of(&b64("tbQ=")), "taAFAAAAAAAAAAAAAgAAAAAAAAA=");
        assert_eq!(QuickXor::of(b"abc"), "YRDDGAAAAAAAAAAAAwAAAAAAAAA=");
        assert_eq!(QuickXor::of(b"hello world"), "aCgDG9jwBhDc4Q1yawMZAAAAAAA=");
        assert_eq!(
            QuickXor::of(b"The quick brown fox jumps over the lazy dog"),
            "bMSlbysmxJL6S75XwfMcQZOpcr4="
        );
        assert_eq!(
            QuickXor::of(&b64("2fuxhBJXtpWFe8dOfdGeHw==")),
            "O9tHLAghgSvYohKFyMMxnNCHaHg="
        );
        assert_eq!(
            QuickXor::of(&b64("T6LYJIfDh81JrAK309H2JMJTXis=")),
            "zBTHrspn3mEcohlJdIUAbjGNaNg="
        );
        let mib: Vec<u8> = (0..1usize << 20).map(|k| (k % 256) as u8).collect();
        assert_eq!(QuickXor::of(&mib), "QkGEfSisZcA7k+FCh7x72dbCayY=");
    }

    #[test]
    fn chunking_order_and_repeats_do_not_matter() {
        let data: Vec<u8> = (0..100_000u32)
            .map(|k| (k.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let whole = QuickXor::of(&data);
        // Out of order, odd boundaries.
        let mut h = QuickXor::new();
        h.xor_at(777, &data[777..50_001]);
        h.xor_at(50_001, &data[50_001..]);
        h.xor_at(0, &data[..777]);
        assert_eq!(h.finish(data.len() as u64), whole);
        // A watermark sees chunks repeated and overlapping, then fills a gap from the file.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, &data).unwrap();
        let mut w = Watermark::new();
        w.saw(0, &data[..1000]);
        w.saw(0, &data[..1000]);
        w.saw(500, &data[500..3000]);
        w.saw(9000, &data[9000..9100]); // a gap: ignored, filled from the file at the end
        assert_eq!(w.upto(), 3000);
        assert_eq!(w.fill_from(&file, data.len() as u64).unwrap(), whole);
    }
}
