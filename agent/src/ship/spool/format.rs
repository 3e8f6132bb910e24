//! The batch file format (`SWB2`, and the older `SWB1`, still read): header, checks, names.
//! The layout is in the [spool](super)'s documentation.

use crate::config::Compression;
use crate::ship::body::decode_body;

/// Magic of an `SWB2` file.
pub(super) const MAGIC: &[u8; 4] = b"SWB2";
/// Header length of an `SWB2` file.
pub const HEADER: usize = 33;
/// The previous version's format, still read.
pub(super) const MAGIC_V1: &[u8; 4] = b"SWB1";
pub(super) const HEADER_V1: usize = 9;
/// Largest decompressed body read from an `SWB1` file to count its aggregates.
pub(super) const MAX_V1_BODY: usize = 512 * 1024 * 1024;

/// What a batch holds, as counted into its header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Kept spans.
    pub spans: u32,
    /// Spans its aggregates count.
    pub aggregated: u64,
}

/// Why a batch file cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Corrupt {
    #[error("shorter than its header ({0} bytes)")]
    Short(usize),
    #[error("not a spool file (magic {0:?})")]
    Magic([u8; 4]),
    #[error("header checksum mismatch")]
    HeaderCrc,
    #[error("unknown compression {0}")]
    Compression(u8),
    #[error("body is {file} bytes, header says {header} (truncated or appended to)")]
    Length { header: u64, file: u64 },
    #[error("body checksum mismatch")]
    BodyCrc,
    #[error("body cannot be decoded: {0}")]
    Undecodable(String),
}

/// A checked batch file: its counts, compression and where its body starts. `counts` is also
/// given with a [`Corrupt`] body when the header itself checked out.
#[derive(Debug)]
pub(super) struct Parsed {
    pub(super) counts: Counts,
    pub(super) compression: Compression,
    pub(super) header: usize,
}

/// Encodes the `SWB2` header of `body`.
pub(super) fn header(counts: Counts, compression: Compression, body: &[u8]) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&(body.len() as u64).to_le_bytes());
    h[16..20].copy_from_slice(&counts.spans.to_le_bytes());
    h[20..28].copy_from_slice(&counts.aggregated.to_le_bytes());
    h[28] = compression_byte(compression);
    h[29..33].copy_from_slice(&crc32c::crc32c(body).to_le_bytes());
    let crc = crc32c::crc32c(&h[8..]);
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    h
}

pub(super) fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().unwrap_or([0; 4]))
}

pub(super) fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
}

/// Checks a whole batch file (either format). On error, the counts are those of a header that
/// checked out, if any: a corrupt body's spans can still be counted as lost.
pub(super) fn parse(data: &[u8]) -> Result<Parsed, (Corrupt, Option<Counts>)> {
    if data.len() < HEADER_V1 {
        return Err((Corrupt::Short(data.len()), None));
    }
    let magic: [u8; 4] = data[..4].try_into().unwrap_or_default();
    if &magic == MAGIC_V1 {
        return parse_v1(data);
    }
    if &magic != MAGIC {
        return Err((Corrupt::Magic(magic), None));
    }
    if data.len() < HEADER {
        return Err((Corrupt::Short(data.len()), None));
    }
    if le_u32(&data[4..8]) != crc32c::crc32c(&data[8..HEADER]) {
        return Err((Corrupt::HeaderCrc, None));
    }
    let counts = Counts {
        spans: le_u32(&data[16..20]),
        aggregated: le_u64(&data[20..28]),
    };
    let Some(compression) = compression_of(data[28]) else {
        return Err((Corrupt::Compression(data[28]), Some(counts)));
    };
    let (want, body) = (le_u64(&data[8..16]), &data[HEADER..]);
    if want != body.len() as u64 {
        let file = body.len() as u64;
        return Err((Corrupt::Length { header: want, file }, Some(counts)));
    }
    if le_u32(&data[29..33]) != crc32c::crc32c(body) {
        return Err((Corrupt::BodyCrc, Some(counts)));
    }
    Ok(Parsed {
        counts,
        compression,
        header: HEADER,
    })
}

/// An `SWB1` file: no length or checksum, and no aggregated count, so the body is decoded
/// (which checks it as well as anything can).
pub(super) fn parse_v1(data: &[u8]) -> Result<Parsed, (Corrupt, Option<Counts>)> {
    let spans = le_u32(&data[4..8]);
    let Some(compression) = compression_of(data[8]) else {
        return Err((Corrupt::Compression(data[8]), None));
    };
    match decode_body(&data[HEADER_V1..], compression, MAX_V1_BODY) {
        Ok(batch) => Ok(Parsed {
            counts: Counts {
                spans,
                aggregated: batch.aggregates.iter().map(|a| a.count).sum(),
            },
            compression,
            header: HEADER_V1,
        }),
        Err(e) => Err((Corrupt::Undecodable(e.to_string()), None)),
    }
}

pub(super) fn compression_byte(c: Compression) -> u8 {
    match c {
        Compression::None => 0,
        Compression::Zstd => 1,
        Compression::Gzip => 2,
    }
}

pub(super) fn compression_of(b: u8) -> Option<Compression> {
    match b {
        0 => Some(Compression::None),
        1 => Some(Compression::Zstd),
        2 => Some(Compression::Gzip),
        _ => None,
    }
}

pub(super) fn file_name(ordinal: u64, level: u8) -> String {
    format!("{ordinal:020}.{level:02}.swb")
}

/// `(ordinal, level)` from a file name's stem, `{ordinal}.{level}`.
pub(super) fn parse_name(stem: &str) -> Option<(u64, u8)> {
    let (ord, level) = stem.split_once('.')?;
    Some((ord.parse().ok()?, level.parse().ok()?))
}
