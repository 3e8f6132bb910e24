//! Small helpers without a better home: clock and randomness.

use std::hash::{BuildHasher, Hasher};

pub use stormwatch_model::now_ns;

/// A random number from the OS-seeded hasher keys std already has: enough for ids and jitter,
/// without a dependency on a random-number crate.
pub fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(now_ns());
    h.finish()
}

/// A hasher for keys that are already uniformly random (our own hashes, trace ids): it folds
/// the bytes written into a u64 without mixing, skipping SipHash on the hot path.
#[derive(Default)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// A fast non-cryptographic hash: two independent multiply-rotate lanes over 64-bit words,
/// eight bytes per step instead of FNV's one. Not keyed (as FNV was not): the agent's clients
/// are the apps beside it; the aggregator compares whole keys within a bucket, and the statement
/// cache checks the second lane.
pub struct Mix {
    pub a: u64,
    pub b: u64,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            a: 0x243f_6a88_85a3_08d3,
            b: 0x1319_8a2e_0370_7344,
        }
    }
}

impl Mix {
    pub fn word(&mut self, w: u64) {
        self.a = (self.a ^ w)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
        self.b = (self.b ^ w)
            .wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
            .rotate_left(31);
    }

    pub fn bytes(&mut self, s: &[u8]) {
        let mut chunks = s.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
        }
        // The tail as a little-endian word, without a variable-length copy (a memcpy call).
        let tail = chunks
            .remainder()
            .iter()
            .rev()
            .fold(0u64, |w, b| w << 8 | u64::from(*b));
        self.word(tail);
        // The length separates `ab` + `c` from `a` + `bc` and trailing zero bytes.
        self.word(s.len() as u64);
    }
}

/// Appends the decimal digits of `v`.
pub fn push_int(out: &mut String, v: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = v.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push('-');
    }
    for &d in &buf[i..] {
        out.push(char::from(d));
    }
}

#[cfg(test)]
mod tests {
    use super::Mix;

    #[test]
    fn mix_hashes_a_tail_as_the_zero_padded_little_endian_word() {
        let data: Vec<u8> = (1..=40).collect();
        for len in 0..=data.len() {
            let s = &data[..len];
            let mut reference = Mix::default();
            let mut chunks = s.chunks_exact(8);
            for c in &mut chunks {
                reference.word(u64::from_le_bytes(c.try_into().unwrap()));
            }
            let mut tail = [0u8; 8];
            tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
            reference.word(u64::from_le_bytes(tail));
            reference.word(len as u64);
            let mut h = Mix::default();
            h.bytes(s);
            assert_eq!((h.a, h.b), (reference.a, reference.b), "{len} bytes");
        }
    }
}
