//! A mergeable latency histogram with bounded relative error (the DDSketch log mapping).
//!
//! A duration `x` (ns, ≥ 1) falls in bucket `k = ceil(ln x / ln γ)` with
//! `γ = (1 + α) / (1 − α)`; the bucket's representative value `2γᵏ / (γ + 1)` is within a
//! relative error `α` of every value in it. With [`RELATIVE_ERROR`] = 1 % any quantile read from
//! the histogram is within 1 % of the true sample at that rank — the bound the README promises
//! ("Read API") — and merging two histograms is adding counts per bucket, so per-minute
//! histograms from many agents (and many minutes) combine without losing that bound.
//! [`Histogram::quantile`] reads rank `⌊q·(n − 1)⌋` (0-based, no interpolation); the tests
//! against exact quantiles are in `model/tests/histogram.rs`. Durations from 1 ns to 10⁴ s
//! need at most ~1,500 buckets; a minute of one endpoint typically fills a few dozen.

use serde::{Deserialize, Serialize};

/// α: the largest relative error of a quantile read from a [`Histogram`].
pub const RELATIVE_ERROR: f64 = 0.01;

fn gamma_ln() -> f64 {
    ((1.0 + RELATIVE_ERROR) / (1.0 - RELATIVE_ERROR)).ln()
}

/// Sparse buckets: `keys[i]` holds `counts[i]` values; keys ascend with no repeats.
/// Durations of zero are counted in `zero_count`.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Histogram {
    #[prost(sint32, repeated, tag = "1")]
    #[serde(default)]
    pub keys: Vec<i32>,
    #[prost(uint64, repeated, tag = "2")]
    #[serde(default)]
    pub counts: Vec<u64>,
    #[prost(uint64, tag = "3")]
    #[serde(default)]
    pub zero_count: u64,
}

/// The bucket key of a duration in nanoseconds (must be ≥ 1).
pub fn key_of(duration_ns: u64) -> i32 {
    ((duration_ns as f64).ln() / gamma_ln()).ceil() as i32
}

/// The representative value of bucket `key`, in nanoseconds.
pub fn value_of(key: i32) -> f64 {
    let gamma = gamma_ln().exp();
    2.0 * (key as f64 * gamma_ln()).exp() / (gamma + 1.0)
}

impl Histogram {
    /// Adds one duration.
    pub fn record(&mut self, duration_ns: u64) {
        self.record_n(duration_ns, 1);
    }

    /// Adds `n` values of the same duration.
    pub fn record_n(&mut self, duration_ns: u64, n: u64) {
        if duration_ns == 0 {
            self.zero_count += n;
            return;
        }
        let key = key_of(duration_ns);
        match self.keys.binary_search(&key) {
            Ok(i) => self.counts[i] += n,
            Err(i) => {
                self.keys.insert(i, key);
                self.counts.insert(i, n);
            }
        }
    }

    /// Total number of values.
    pub fn count(&self) -> u64 {
        self.zero_count + self.counts.iter().sum::<u64>()
    }

    /// Adds every bucket of `other` into `self`, in place: a histogram accumulating many
    /// others (a service's minute, a rule's group) grows only by the buckets it lacks.
    pub fn merge(&mut self, other: &Histogram) {
        self.zero_count += other.zero_count;
        if other.keys.is_empty() {
            return;
        }
        if self.keys.is_empty() {
            self.keys.clone_from(&other.keys);
            self.counts.clone_from(&other.counts);
            return;
        }
        // Keys of `other` that `self` lacks (both ascending).
        let (mut i, mut missing) = (0, 0);
        for k in &other.keys {
            while i < self.keys.len() && self.keys[i] < *k {
                i += 1;
            }
            if i < self.keys.len() && self.keys[i] == *k {
                i += 1;
            } else {
                missing += 1;
            }
        }
        if missing == 0 {
            let mut i = 0;
            for (k, c) in other.keys.iter().zip(&other.counts) {
                while self.keys[i] < *k {
                    i += 1;
                }
                self.counts[i] += c;
                i += 1;
            }
            return;
        }
        // Grow by the missing buckets and merge from the back, each bucket moved once.
        let n = self.keys.len();
        self.keys.resize(n + missing, 0);
        self.counts.resize(n + missing, 0);
        let (mut i, mut j, mut w) = (n, other.keys.len(), n + missing);
        while j > 0 {
            w -= 1;
            let (ok, oc) = (other.keys[j - 1], other.counts[j - 1]);
            if i > 0 && self.keys[i - 1] > ok {
                self.keys[w] = self.keys[i - 1];
                self.counts[w] = self.counts[i - 1];
                i -= 1;
            } else if i > 0 && self.keys[i - 1] == ok {
                self.keys[w] = ok;
                self.counts[w] = self.counts[i - 1] + oc;
                i -= 1;
                j -= 1;
            } else {
                self.keys[w] = ok;
                self.counts[w] = oc;
                j -= 1;
            }
        }
        // Buckets of `self` below every key of `other` are where they were.
        debug_assert_eq!(w, i);
    }

    /// The value at quantile `q` (0 ≤ q ≤ 1), in nanoseconds; `None` when empty: the bucket of
    /// the value at 0-based rank `⌊q·(n − 1)⌋` of the sorted values (`q = 0` the minimum,
    /// `q = 1` the maximum), read as that bucket's representative.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (total - 1) as f64).floor() as u64;
        if rank < self.zero_count {
            return Some(0.0);
        }
        let mut seen = self.zero_count;
        for (k, c) in self.keys.iter().zip(&self.counts) {
            seen += c;
            if seen > rank {
                return Some(value_of(*k));
            }
        }
        self.keys.last().map(|k| value_of(*k))
    }

    /// Checks the invariants a decoded histogram must hold; names what is wrong.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.keys.len() != self.counts.len() {
            return Err("keys and counts differ in length");
        }
        if self.keys.windows(2).any(|w| w[0] >= w[1]) {
            return Err("keys must ascend without repeats");
        }
        if self.keys.len() > crate::limits::MAX_HISTOGRAM_BUCKETS {
            return Err("too many buckets");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact_quantile(sorted: &[u64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize] as f64
    }

    #[test]
    fn quantiles_within_the_documented_error() {
        // A skewed, deterministic sample: 1 µs .. ~2 s.
        let mut values: Vec<u64> = (1..=20_000u64)
            .map(|i| 1_000 + (i * i * 7919) % 2_000_000_000)
            .collect();
        let mut h = Histogram::default();
        for v in &values {
            h.record(*v);
        }
        values.sort_unstable();
        for q in [0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let est = h.quantile(q).unwrap();
            let exact = exact_quantile(&values, q);
            let err = (est - exact).abs() / exact;
            assert!(
                err <= RELATIVE_ERROR + 1e-9,
                "q={q} est={est} exact={exact} err={err}"
            );
        }
        assert_eq!(h.count(), 20_000);
    }

    #[test]
    fn merge_equals_recording_everything_once() {
        let (mut a, mut b, mut all) = (
            Histogram::default(),
            Histogram::default(),
            Histogram::default(),
        );
        for i in 0..5_000u64 {
            let v = (i * 104_729) % 900_000_000;
            if i % 3 == 0 {
                a.record(v)
            } else {
                b.record(v)
            }
            all.record(v);
        }
        a.merge(&b);
        assert_eq!(a, all);
        a.check().unwrap();
    }

    fn record(values: &[u64]) -> Histogram {
        let mut h = Histogram::default();
        for v in values {
            h.record(*v);
        }
        h
    }

    /// `a` merged with `b` is what recording all their values in one histogram gives.
    fn assert_merge_records_both(a: &[u64], b: &[u64]) {
        let mut merged = record(a);
        merged.merge(&record(b));
        let both: Vec<u64> = a.iter().chain(b).copied().collect();
        assert_eq!(merged, record(&both), "{a:?} + {b:?}");
        merged.check().unwrap();
    }

    #[test]
    fn merging_an_empty_side_or_the_same_buckets_equals_recording_both() {
        let some = [0, 5, 1_000, 1_000, 70_000, 3_000_000];
        let same_buckets = [0, 5, 1_000, 70_000, 70_000, 3_000_000];
        let other = [40, 90_000];
        for (a, b) in [
            (&some[..], &[][..]),
            (&[][..], &some[..]),
            (&[0, 0][..], &some[..]),
            (&some[..], &same_buckets[..]),
            (&some[..], &other[..]),
        ] {
            assert_merge_records_both(a, b);
        }
    }

    #[test]
    fn merging_in_place_equals_recording_both_whatever_the_overlap() {
        let wide = [1, 30, 1_000, 50_000, 2_000_000, 90_000_000];
        let cases: [(&[u64], &[u64]); 6] = [
            // Every bucket of the right side already on the left: added in place.
            (&wide, &[30, 2_000_000, 2_000_000]),
            // Only new buckets, below, above and between the left's.
            (&[1_000, 50_000], &[1, 5_000, 900_000_000]),
            // Some shared, some new, the lowest shared.
            (&[1, 1_000, 90_000_000], &[1, 40, 1_000, 3_000, 200_000_000]),
            // The right side wider than the left.
            (&[50_000], &wide),
            (&wide, &[0, 0, 3]),
            (&[7], &[7]),
        ];
        for (a, b) in cases {
            assert_merge_records_both(a, b);
        }
    }

    #[test]
    fn empty_and_zero() {
        assert_eq!(Histogram::default().quantile(0.5), None);
        let mut h = Histogram::default();
        h.record(0);
        h.record(0);
        h.record(10);
        assert_eq!(h.quantile(0.5), Some(0.0));
        assert!((h.quantile(1.0).unwrap() - 10.0).abs() / 10.0 <= RELATIVE_ERROR);
    }
}
