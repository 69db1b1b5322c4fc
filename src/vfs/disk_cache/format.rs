//! The block file format: a header naming the block (item id, version, index, data length), a
//! CRC-32C per [`SEGMENT`] of the data, then the data; and the checked reads of it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;

use super::{io_err, DiskCacheError};
use crate::vfs::cache::BlockKey;

/// What a block file starts with.
pub(super) const MAGIC: &[u8; 8] = b"CMDISKBK";
/// Format of the header; files of another format are removed on sight.
pub(super) const FORMAT: u32 = 1;
/// Checksum granularity: a random 4 KiB read checks (and reads) 64 KiB, not the whole block.
pub const SEGMENT: u64 = 64 * 1024;
/// Bytes of the header before the variable part (id, version, checksums).
pub(super) const FIXED_HEADER: usize = 44;
/// First read of a header: big enough for any usual id and version, so a read takes two preads.
pub(super) const HEADER_PROBE: usize = 4096;
/// A header longer than this is corrupt (ids and versions are short).
pub(super) const MAX_HEADER: usize = 1 << 20;

// -----------------------------------------------------------------------------------------------
// File format
// -----------------------------------------------------------------------------------------------

/// A decoded header.
pub(super) struct Header {
    /// Header bytes (data starts here).
    pub(super) len: usize,
    pub(super) index: u64,
    pub(super) data_len: u64,
    pub(super) id: String,
    pub(super) version: String,
    /// CRC-32C of each [`SEGMENT`] of the data.
    pub(super) crcs: Vec<u32>,
}

pub(super) fn segment_count(data_len: u64) -> u64 {
    data_len.div_ceil(SEGMENT)
}

/// magic, format, header length, block index, data length, id length, version length, segment
/// count, id, version, segment CRCs, and a CRC of all that.
pub(super) fn encode_header(key: &BlockKey, data: &[u8]) -> Vec<u8> {
    let (id, version) = (key.id.as_str().as_bytes(), key.version.as_str().as_bytes());
    let segments: Vec<u32> = data.chunks(SEGMENT as usize).map(crc32c::crc32c).collect();
    let len = FIXED_HEADER + id.len() + version.len() + 4 * segments.len() + 4;
    let mut h = Vec::with_capacity(len);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&FORMAT.to_le_bytes());
    h.extend_from_slice(&(len as u32).to_le_bytes());
    h.extend_from_slice(&key.index.to_le_bytes());
    h.extend_from_slice(&(data.len() as u64).to_le_bytes());
    h.extend_from_slice(&(id.len() as u32).to_le_bytes());
    h.extend_from_slice(&(version.len() as u32).to_le_bytes());
    h.extend_from_slice(&(segments.len() as u32).to_le_bytes());
    h.extend_from_slice(id);
    h.extend_from_slice(version);
    for c in &segments {
        h.extend_from_slice(&c.to_le_bytes());
    }
    let crc = crc32c::crc32c(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(h.len(), len);
    h
}

pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Read exactly `buf.len()` bytes at `offset`; a short file is an error.
pub(super) fn pread_exact(file: &File, buf: &mut [u8], offset: u64, path: &Path) -> Result<(), DiskCacheError> {
    file.read_exact_at(buf, offset).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => DiskCacheError::Corrupt {
            path: path.to_path_buf(),
            why: "shorter than its header says",
        },
        _ => DiskCacheError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    })
}

pub(super) fn read_header(file: &File, path: &Path) -> Result<Header, DiskCacheError> {
    let corrupt = |why| DiskCacheError::Corrupt {
        path: path.to_path_buf(),
        why,
    };
    let mut buf = vec![0u8; HEADER_PROBE];
    let got = file.read_at(&mut buf, 0).map_err(io_err(path))?;
    if got < FIXED_HEADER {
        return Err(corrupt("shorter than a header"));
    }
    if &buf[..8] != MAGIC || u32_at(&buf, 8) != FORMAT {
        return Err(corrupt("not a block file of this format"));
    }
    let len = u32_at(&buf, 12) as usize;
    let (index, data_len) = (u64_at(&buf, 16), u64_at(&buf, 24));
    let (id_len, ver_len, segs) = (
        u32_at(&buf, 32) as usize,
        u32_at(&buf, 36) as usize,
        u32_at(&buf, 40) as u64,
    );
    if len > MAX_HEADER
        || segs != segment_count(data_len)
        || len as u64 != FIXED_HEADER as u64 + id_len as u64 + ver_len as u64 + 4 * segs + 4
    {
        return Err(corrupt("inconsistent header"));
    }
    if len > got {
        buf.resize(len, 0);
        pread_exact(file, &mut buf[got..], got as u64, path)?;
    }
    buf.truncate(len);
    if crc32c::crc32c(&buf[..len - 4]) != u32_at(&buf, len - 4) {
        return Err(corrupt("header checksum mismatch"));
    }
    let mut at = FIXED_HEADER;
    let id = String::from_utf8(buf[at..at + id_len].to_vec()).map_err(|_| corrupt("id is not UTF-8"))?;
    at += id_len;
    let version = String::from_utf8(buf[at..at + ver_len].to_vec()).map_err(|_| corrupt("version is not UTF-8"))?;
    at += ver_len;
    let crcs = (0..segs as usize).map(|i| u32_at(&buf, at + 4 * i)).collect();
    Ok(Header {
        len,
        index,
        data_len,
        id,
        version,
        crcs,
    })
}

/// `len` bytes at `offset` of the block stored at `path`, checked against `key`, `block_len` and
/// the checksums of the segments read.
pub(super) fn read_range(
    path: &Path,
    key: &BlockKey,
    block_len: u64,
    offset: u64,
    len: u64,
) -> Result<Bytes, DiskCacheError> {
    let corrupt = |why| DiskCacheError::Corrupt {
        path: path.to_path_buf(),
        why,
    };
    let file = File::open(path).map_err(io_err(path))?;
    let header = read_header(&file, path)?;
    if header.id != key.id.as_str() || header.version != key.version.as_str() || header.index != key.index {
        return Err(corrupt("holds another block"));
    }
    if header.data_len != block_len {
        return Err(corrupt("length differs from the block's"));
    }
    let file_len = file.metadata().map_err(io_err(path))?.len();
    if file_len != header.len as u64 + header.data_len {
        return Err(corrupt("length differs from the header's"));
    }
    let end = offset.checked_add(len).filter(|e| *e <= block_len && len > 0);
    let Some(end) = end else {
        return Err(corrupt("range outside the block"));
    };
    let (first, last) = (offset / SEGMENT, (end - 1) / SEGMENT);
    let from = first * SEGMENT;
    let to = ((last + 1) * SEGMENT).min(header.data_len);
    let mut buf = vec![0u8; (to - from) as usize];
    pread_exact(&file, &mut buf, header.len as u64 + from, path)?;
    for (i, seg) in buf.chunks(SEGMENT as usize).enumerate() {
        if crc32c::crc32c(seg) != header.crcs[first as usize + i] {
            return Err(corrupt("data checksum mismatch"));
        }
    }
    let start = (offset - from) as usize;
    Ok(Bytes::from(buf).slice(start..start + len as usize))
}
