//! A batch's body: protobuf, compressed as configured. The exact bytes the pipeline spools and
//! the shipper POSTs; a spool file holds one behind its header.

use std::io::{Read, Write};

use stormwatch_model::{Batch, Encoding};

use crate::config::Compression;

/// Encodes and compresses a batch: the exact bytes POSTed and spooled.
pub fn encode_body(batch: &Batch, c: Compression) -> std::io::Result<Vec<u8>> {
    let raw = batch.encode(Encoding::Protobuf);
    match c {
        Compression::None => Ok(raw),
        Compression::Zstd => zstd::bulk::compress(&raw, 1),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&raw)?;
            e.finish()
        }
    }
}

/// The inverse of [`encode_body`], refusing to inflate beyond `limit` bytes.
pub fn decode_body(body: &[u8], c: Compression, limit: usize) -> std::io::Result<Batch> {
    let raw = match c {
        Compression::None => body.to_vec(),
        Compression::Zstd => zstd::bulk::decompress(body, limit)?,
        Compression::Gzip => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .take(limit as u64 + 1)
                .read_to_end(&mut out)?;
            out
        }
    };
    Batch::decode(&raw, Encoding::Protobuf)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}
