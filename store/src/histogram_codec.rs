//! How a latency histogram is stored, in one place. Every table with a histogram keeps it as
//! `hist_zero` (the zero count), `hist_keys integer[]` (keys ascending) and
//! `hist_counts bigint[]`: appended in binary by COPY (`copy.rs`), sent as array literals by
//! the upserts ([`histogram_literals`]) and read back in binary ([`histogram_of`]). The rollups keep it packed as well, in
//! `hist_packed bytea`: 12-byte big-endian (key i32, count i64) pairs, keys ascending, as
//! `sw_hist_pack` (migration 0004) makes them ([`pack`], [`packed_pairs`], [`unpack`]).
//!
//! Counts are `u64` in Rust and `bigint` in PostgreSQL: they are capped at `i64::MAX` on the
//! way in ([`saturating_i64`](crate::saturating_i64)), and a negative one reads as 0.

use stormwatch_model::Histogram;

use crate::{saturating_i64, StoreError};

/// Bytes of one packed (key, count) pair.
const PAIR_BYTES: usize = 12;

/// `hist_packed` of a histogram (as `sw_hist_pack` in migration 0004 makes it).
pub(crate) fn pack(h: &Histogram) -> Vec<u8> {
    let mut out = Vec::with_capacity(h.keys.len() * PAIR_BYTES);
    for (k, c) in h.keys.iter().zip(&h.counts) {
        out.extend_from_slice(&k.to_be_bytes());
        out.extend_from_slice(&saturating_i64(*c).to_be_bytes());
    }
    out
}

/// The (key, count) pairs of `hist_packed`, in stored order; an error when the bytes are not
/// whole pairs.
pub(crate) fn packed_pairs(
    packed: &[u8],
) -> Result<impl Iterator<Item = (i32, u64)> + Clone + '_, StoreError> {
    if !packed.len().is_multiple_of(PAIR_BYTES) {
        return Err(StoreError::Corrupt(format!(
            "packed histogram of {} bytes is not whole (key, count) pairs",
            packed.len()
        )));
    }
    Ok(packed.chunks_exact(PAIR_BYTES).map(|pair| {
        let (k, c) = pair.split_at(4);
        (
            i32::from_be_bytes(k.try_into().expect("4 bytes")),
            i64::from_be_bytes(c.try_into().expect("8 bytes")).max(0) as u64,
        )
    }))
}

/// A histogram from its zero count and `hist_packed`.
pub(crate) fn unpack(zero: i64, packed: &[u8]) -> Result<Histogram, StoreError> {
    let n = packed.len() / PAIR_BYTES;
    let (mut keys, mut counts) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for (k, c) in packed_pairs(packed)? {
        keys.push(k);
        counts.push(c);
    }
    Ok(Histogram {
        keys,
        counts,
        zero_count: zero.max(0) as u64,
    })
}

/// A histogram's counts as stored (`bigint`, capped at `i64::MAX`), into `out` (cleared first):
/// one buffer reused row after row by the COPY writers.
pub(crate) fn counts_i64(h: &Histogram, out: &mut Vec<i64>) {
    out.clear();
    out.extend(h.counts.iter().map(|c| saturating_i64(*c)));
}

/// A histogram's keys and counts as array literals for an upsert: (`{k,k,…}`, `{c,c,…}`).
pub(crate) fn histogram_literals(h: &Histogram) -> (String, String) {
    let join = |v: Vec<String>| format!("{{{}}}", v.join(","));
    (
        join(h.keys.iter().map(|k| k.to_string()).collect()),
        join(
            h.counts
                .iter()
                .map(|c| saturating_i64(*c).to_string())
                .collect(),
        ),
    )
}

/// The histogram read in columns `at` (zero count), `at + 1` (keys), `at + 2` (counts).
pub(crate) fn histogram_of(r: &tokio_postgres::Row, at: usize) -> Result<Histogram, StoreError> {
    let keys: Vec<i32> = r.get(at + 1);
    let counts: Vec<i64> = r.get(at + 2);
    if keys.len() != counts.len() {
        return Err(StoreError::Corrupt(
            "histogram keys and counts differ in length".into(),
        ));
    }
    Ok(Histogram {
        keys,
        counts: counts.into_iter().map(|c| c.max(0) as u64).collect(),
        zero_count: r.get::<_, i64>(at).max(0) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(keys: &[i32], counts: &[u64], zero: u64) -> Histogram {
        Histogram {
            keys: keys.to_vec(),
            counts: counts.to_vec(),
            zero_count: zero,
        }
    }

    #[test]
    fn pack_and_unpack_round_trip() {
        let h = hist(&[-7, 0, 1_500], &[1, 3, u64::from(u32::MAX) + 9], 2);
        assert_eq!(pack(&h).len(), 36);
        assert_eq!(unpack(2, &pack(&h)).unwrap(), h);
    }

    #[test]
    fn unpack_reads_big_endian_pairs_and_rejects_a_partial_one() {
        let mut bytes = Vec::new();
        for (k, c) in [(-3i32, 2i64), (700, 1 << 40)] {
            bytes.extend(k.to_be_bytes());
            bytes.extend(c.to_be_bytes());
        }
        assert_eq!(
            unpack(4, &bytes).unwrap(),
            hist(&[-3, 700], &[2, 1 << 40], 4)
        );
        assert_eq!(unpack(0, &[]).unwrap(), Histogram::default());
        assert!(matches!(
            unpack(0, &bytes[..13]),
            Err(StoreError::Corrupt(_))
        ));
    }
}
