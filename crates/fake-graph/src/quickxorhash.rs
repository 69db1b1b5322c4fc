//! quickXorHash, the content hash OneDrive returns in `file.hashes.quickXorHash` on every flavour
//! (`docs/onedrive.md`, quickXorHash).
//!
//! Definition: a 160-bit accumulator `A`; the byte at stream offset `i` is XORed into `A` rotated left by
//! `(11 * i) mod 160` bits (wrapping at bit 160). The result is `A` as 20 little-endian bytes with the total
//! length (`u64`, little-endian) XORed into the last 8 bytes, encoded as padded standard Base64.
//!
//! Because `11 * 160 ≡ 0 (mod 160)`, every byte whose offset is congruent modulo 160 lands at the same bit
//! position. The hasher therefore only XORs bytes into 160 one-byte cells while streaming (fast, vectorisable)
//! and does the bit placement once in [`QuickXorHash::finalize`].

use base64::Engine as _;

const WIDTH_BYTES: usize = 160; // positions repeat every 160 input bytes
const SHIFT: usize = 11;
const WIDTH_BITS: usize = 160;

/// Streaming quickXorHash state. Chunk boundaries do not matter.
#[derive(Clone)]
pub struct QuickXorHash {
    cells: [u8; WIDTH_BYTES],
    len: u64,
}

impl Default for QuickXorHash {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for QuickXorHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuickXorHash")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl QuickXorHash {
    /// A fresh hasher (hash of the empty input until [`update`](Self::update) is called).
    pub fn new() -> Self {
        QuickXorHash {
            cells: [0; WIDTH_BYTES],
            len: 0,
        }
    }

    /// Feeds the next bytes of the stream.
    pub fn update(&mut self, mut data: &[u8]) {
        let mut idx = (self.len % WIDTH_BYTES as u64) as usize;
        self.len += data.len() as u64;
        // Bring the cell index back to 0 so the bulk loop works on whole 160-byte strides.
        if idx != 0 {
            let n = (WIDTH_BYTES - idx).min(data.len());
            for &b in &data[..n] {
                self.cells[idx] ^= b;
                idx += 1;
            }
            data = &data[n..];
        }
        let mut strides = data.chunks_exact(WIDTH_BYTES);
        for stride in &mut strides {
            for (c, b) in self.cells.iter_mut().zip(stride) {
                *c ^= *b;
            }
        }
        for (c, b) in self.cells.iter_mut().zip(strides.remainder()) {
            *c ^= *b;
        }
    }

    /// Number of bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when no byte was hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The 20 raw digest bytes.
    pub fn digest(&self) -> [u8; 20] {
        let mut out = [0u8; 20];
        for (j, &cell) in self.cells.iter().enumerate() {
            if cell == 0 {
                continue;
            }
            let p = (SHIFT * j) % WIDTH_BITS;
            for k in 0..8 {
                if (cell >> k) & 1 == 1 {
                    let q = (p + k) % WIDTH_BITS;
                    out[q / 8] ^= 1 << (q % 8);
                }
            }
        }
        for (k, b) in self.len.to_le_bytes().iter().enumerate() {
            out[12 + k] ^= b;
        }
        out
    }

    /// The digest as OneDrive prints it: padded standard Base64 (28 characters).
    pub fn finalize(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.digest())
    }
}

/// One-shot quickXorHash of `data`, Base64 encoded.
pub fn quick_xor_hash(data: &[u8]) -> String {
    let mut h = QuickXorHash::new();
    h.update(data);
    h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.decode(s).unwrap()
    }

    /// Literal transcription of the definition (bit by bit), used to cross-check the fast path.
    fn reference(data: &[u8]) -> String {
        let mut a = [0u8; 20];
        for (i, &b) in data.iter().enumerate() {
            let p = (11 * i) % 160;
            for k in 0..8 {
                if (b >> k) & 1 == 1 {
                    let q = (p + k) % 160;
                    a[q / 8] ^= 1 << (q % 8);
                }
            }
        }
        for (k, b) in (data.len() as u64).to_le_bytes().iter().enumerate() {
            a[12 + k] ^= b;
        }
        base64::engine::general_purpose::STANDARD.encode(a)
    }

    #[test]
    fn spec_vectors() {
        let one_mib: Vec<u8> = (0..1024 * 1024).map(|k| (k % 256) as u8).collect();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            (b64("Sg=="), "SgAAAAAAAAAAAAAAAQAAAAAAAAA="),
            (b64("tbQ="), "taAFAAAAAAAAAAAAAgAAAAAAAAA="),
            (b"abc".to_vec(), "YRDDGAAAAAAAAAAAAwAAAAAAAAA="),
            (b"hello world".to_vec(), "aCgDG9jwBhDc4Q1yawMZAAAAAAA="),
            (
                b"The quick brown fox jumps over the lazy dog".to_vec(),
                "bMSlbysmxJL6S75XwfMcQZOpcr4=",
            ),
            (b64("2fuxhBJXtpWFe8dOfdGeHw=="), "O9tHLAghgSvYohKFyMMxnNCHaHg="),
            (b64("T6LYJIfDh81JrAK309H2JMJTXis="), "zBTHrspn3mEcohlJdIUAbjGNaNg="),
            (one_mib, "QkGEfSisZcA7k+FCh7x72dbCayY="),
        ];
        for (data, want) in cases {
            assert_eq!(quick_xor_hash(&data), want, "len {}", data.len());
            if data.len() < 5000 {
                assert_eq!(reference(&data), want);
            }
        }
    }

    #[test]
    fn chunking_does_not_matter() {
        let data: Vec<u8> = (0..5000u32).map(|k| (k.wrapping_mul(2654435761) >> 13) as u8).collect();
        let want = reference(&data);
        for chunk in [1, 7, 159, 160, 161, 333, 4999] {
            let mut h = QuickXorHash::new();
            for c in data.chunks(chunk) {
                h.update(c);
            }
            assert_eq!(h.finalize(), want, "chunk {chunk}");
            assert_eq!(h.len(), 5000);
        }
    }
}
