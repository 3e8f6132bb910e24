//! [`Totals`]: the counts and latency histogram of some spans, summed from stored rows. The
//! overview and dependencies pages add up a step's rollup rows into one.

use stormwatch_model::Histogram;

use crate::histogram_codec;
use crate::StoreError;

/// Counts and latency of some spans over some window. Stored rows' packed histograms are
/// added into one array indexed by bucket key (`Totals::add_packed`): each row costs a pass
/// over its own buckets, not over everything gathered so far, so long windows (thousands of
/// rows a step) stay cheap. Other histograms are merged as sorted arrays.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub count: u64,
    pub errors: u64,
    pub sum_ns: u64,
    pub http_5xx: u64,
    pub http_503: u64,
    hist: Histogram,
    /// Counts by bucket key from `dense_base`, not yet folded into `hist`.
    dense: Vec<u64>,
    dense_base: i32,
}

/// Widest key range the dense array covers (a latency histogram at 1 % spans about 3,000
/// keys from a nanosecond to a day); wider input is merged as sorted arrays instead.
const DENSE_SPAN: i64 = 1 << 14;

impl Totals {
    /// Test shorthand: a row of `status_class` with the histogram `h` (key, count pairs).
    #[cfg(test)]
    fn add(
        &mut self,
        status_class: &str,
        count: u64,
        errors: u64,
        sum_ns: u64,
        h: &[(i32, u64)],
        zero: u64,
    ) {
        let (x5, x503) = crate::aggregates::http_counts(status_class, count);
        self.add_counts(count, errors, sum_ns, x5, x503);
        self.add_histogram(Histogram {
            keys: h.iter().map(|p| p.0).collect(),
            counts: h.iter().map(|p| p.1).collect(),
            zero_count: zero,
        });
    }

    pub(crate) fn add_counts(
        &mut self,
        count: u64,
        errors: u64,
        sum_ns: u64,
        http_5xx: u64,
        http_503: u64,
    ) {
        self.count += count;
        self.errors += errors;
        self.sum_ns += sum_ns;
        self.http_5xx += http_5xx;
        self.http_503 += http_503;
    }

    /// Merges a stored histogram (sorted-array merge: far cheaper than a bucket map on this
    /// hot path); one whose keys do not ascend is sorted first. Into an empty one it is moved.
    pub(crate) fn add_histogram(&mut self, mut other: Histogram) {
        if other.keys.windows(2).any(|w| w[0] >= w[1]) {
            let mut sorted: Vec<(i32, u64)> =
                other.keys.iter().copied().zip(other.counts).collect();
            sorted.sort_unstable();
            let mut merged = Histogram {
                zero_count: other.zero_count,
                ..Default::default()
            };
            for (k, c) in sorted {
                match merged.keys.last() {
                    Some(last) if *last == k => {
                        *merged.counts.last_mut().expect("same length") += c
                    }
                    _ => {
                        merged.keys.push(k);
                        merged.counts.push(c);
                    }
                }
            }
            other = merged;
        }
        if self.hist.keys.is_empty() && self.hist.zero_count == 0 {
            self.hist = other;
        } else {
            self.hist.merge(&other);
        }
    }

    /// Adds a stored histogram: its zero count and `hist_packed` bytes (see
    /// [`histogram_codec::packed_pairs`]).
    pub(crate) fn add_packed(&mut self, zero: i64, packed: &[u8]) -> Result<(), StoreError> {
        if self.hist.keys.is_empty() && self.hist.zero_count == 0 && self.dense.is_empty() {
            // The first row is taken as it is (a minute's step of the dependencies page has
            // one row): no dense array to fill and read back.
            self.add_histogram(histogram_codec::unpack(zero, packed)?);
            return Ok(());
        }
        let pairs = histogram_codec::packed_pairs(packed)?;
        self.hist.zero_count += zero.max(0) as u64;
        let (lo, hi) = pairs
            .clone()
            .fold((i32::MAX, i32::MIN), |(lo, hi), (k, _)| {
                (lo.min(k), hi.max(k))
            });
        if packed.is_empty() || !self.dense_cover(lo, hi) {
            if !packed.is_empty() {
                self.add_histogram(histogram_codec::unpack(0, packed)?);
            }
            return Ok(());
        }
        for (key, count) in pairs {
            self.dense[(key - self.dense_base) as usize] += count;
        }
        Ok(())
    }

    /// Grows the dense array to cover keys `lo..=hi`; false when that would be too wide.
    fn dense_cover(&mut self, lo: i32, hi: i32) -> bool {
        if self.dense.is_empty() {
            if i64::from(hi) - i64::from(lo) >= DENSE_SPAN {
                return false;
            }
            self.dense_base = lo;
            self.dense = vec![0; (hi - lo) as usize + 1];
            return true;
        }
        let end = i64::from(self.dense_base) + self.dense.len() as i64 - 1;
        let (new_lo, new_hi) = (
            i64::from(lo).min(i64::from(self.dense_base)),
            i64::from(hi).max(end),
        );
        if new_hi - new_lo >= DENSE_SPAN {
            self.settle();
            return self.dense_cover(lo, hi);
        }
        if new_lo < i64::from(self.dense_base) {
            let grow = (i64::from(self.dense_base) - new_lo) as usize;
            self.dense.splice(0..0, std::iter::repeat_n(0, grow));
            self.dense_base = new_lo as i32;
        }
        if new_hi > end {
            self.dense
                .resize(self.dense.len() + (new_hi - end) as usize, 0);
        }
        true
    }

    /// The dense array's non-zero buckets as a histogram (no zero count).
    fn dense_histogram(&self) -> Histogram {
        let mut h = Histogram::default();
        for (i, c) in self.dense.iter().enumerate().filter(|(_, c)| **c > 0) {
            h.keys.push(self.dense_base + i as i32);
            h.counts.push(*c);
        }
        h
    }

    /// Folds the dense array into the histogram.
    pub(crate) fn settle(&mut self) {
        if !self.dense.is_empty() {
            let h = self.dense_histogram();
            self.dense = Vec::new();
            self.add_histogram(h);
        }
    }

    /// Adds another's counts and histogram, taking it.
    pub fn absorb(&mut self, o: Totals) {
        self.add_counts(o.count, o.errors, o.sum_ns, o.http_5xx, o.http_503);
        self.add_histogram(o.into_histogram());
    }

    /// Adds another's counts and histogram: into the dense array when it covers both (a
    /// pass over the other's buckets; the dependencies page adds thousands of steps so),
    /// else as sorted arrays.
    pub fn merge(&mut self, o: &Totals) {
        self.add_counts(o.count, o.errors, o.sum_ns, o.http_5xx, o.http_503);
        let lo = o.hist.keys.first().copied().into_iter();
        let hi = o.hist.keys.last().copied().into_iter();
        let (lo, hi) = if o.dense.is_empty() {
            (lo.min(), hi.max())
        } else {
            (
                lo.chain([o.dense_base]).min(),
                hi.chain([o.dense_base + (o.dense.len() - 1) as i32]).max(),
            )
        };
        let (Some(lo), Some(hi)) = (lo, hi) else {
            self.hist.zero_count += o.hist.zero_count;
            return;
        };
        if !self.dense_cover(lo, hi) {
            self.hist.merge(&o.histogram());
            return;
        }
        self.hist.zero_count += o.hist.zero_count;
        for (k, c) in o.hist.keys.iter().zip(&o.hist.counts) {
            self.dense[(k - self.dense_base) as usize] += c;
        }
        if !o.dense.is_empty() {
            let offset = (o.dense_base - self.dense_base) as usize;
            for (d, c) in self.dense[offset..].iter_mut().zip(&o.dense) {
                *d += c;
            }
        }
    }

    /// The latency histogram of these spans.
    pub fn histogram(&self) -> Histogram {
        let mut h = self.hist.clone();
        if !self.dense.is_empty() {
            h.merge(&self.dense_histogram());
        }
        h
    }

    fn into_histogram(mut self) -> Histogram {
        self.settle();
        self.hist
    }

    /// Errors / count, 0 without spans.
    pub fn error_rate(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.errors as f64 / self.count as f64
        }
    }

    /// Quantile `q` in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        self.histogram().quantile(q).map(|ns| ns / 1e6)
    }

    /// Mean latency in milliseconds.
    pub fn mean_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ns as f64 / self.count as f64 / 1e6)
    }
}

/// The sum of `steps`.
pub(crate) fn sum(steps: &[Totals]) -> Totals {
    let mut t = Totals::default();
    for s in steps {
        t.merge(s);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic generator: `next(n)` is in `0..n`.
    fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        }
    }

    fn pack(keys: &[i32], counts: &[i64]) -> Vec<u8> {
        keys.iter()
            .zip(counts)
            .flat_map(|(k, c)| k.to_be_bytes().into_iter().chain(c.to_be_bytes()))
            .collect()
    }

    #[test]
    fn packed_rows_add_up_as_merged_histograms() {
        // Rows as stored: ascending keys, in narrow and wide ranges, negative keys, keys far
        // apart (beyond the dense array), empty rows; the dense path must give exactly what
        // merging every row's histogram gives.
        let mut next = xorshift(0x2545_f491_4f6c_dd1du64);
        for round in 0..50 {
            let mut t = Totals::default();
            let mut want = Histogram::default();
            for _ in 0..40 {
                let base = match next(6) {
                    0 => -(next(500) as i32),
                    1 if round % 5 == 0 => i32::MAX - 10,
                    2 if round % 7 == 0 => i32::MIN + 3,
                    _ => next(3_000) as i32,
                };
                let mut keys: Vec<i32> = (0..next(30))
                    .map(|_| {
                        base.saturating_add(next(40) as i32 * if next(9) == 0 { 500 } else { 1 })
                    })
                    .collect();
                keys.sort_unstable();
                keys.dedup();
                let counts: Vec<i64> = keys.iter().map(|_| 1 + next(1_000) as i64).collect();
                let zero = next(3) as i64;
                t.add_packed(zero, &pack(&keys, &counts)).unwrap();
                want.merge(&histogram_codec::unpack(zero, &pack(&keys, &counts)).unwrap());
            }
            assert_eq!(t.histogram(), want, "round {round}");
            let mut merged = Totals::default();
            merged.merge(&t);
            assert_eq!(merged.histogram(), want);
            t.settle();
            assert_eq!(t.histogram(), want);
        }
        assert!(Totals::default().add_packed(0, &[0; 13]).is_err());
    }

    #[test]
    fn merging_totals_gives_the_merged_histograms() {
        // Steps of one row each (dense or settled, narrow or wide, empty) merged into a sum,
        // as the dependencies page adds peers into classes: the same histogram as merging
        // every row's histogram.
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15u64);
        for round in 0..50 {
            let mut sum = Totals::default();
            let mut want = Histogram::default();
            for i in 0..40 {
                let base = if next(8) == 0 {
                    20_000 + next(1_000) as i32
                } else {
                    next(3_000) as i32 - 200
                };
                let keys: Vec<i32> = (0..next(30) as i32).map(|k| base + k * 3).collect();
                let counts: Vec<i64> = keys.iter().map(|_| 1 + next(1_000) as i64).collect();
                let zero = next(3) as i64;
                let mut step = Totals::default();
                step.add_packed(zero, &pack(&keys, &counts)).unwrap();
                if (round + i) % 3 == 0 {
                    step.settle();
                }
                sum.merge(&step);
                want.merge(&histogram_codec::unpack(zero, &pack(&keys, &counts)).unwrap());
            }
            assert_eq!(sum.histogram(), want, "round {round}");
        }
    }

    #[test]
    fn totals_merge_histograms_and_status_counts() {
        let mut t = Totals::default();
        t.add("503", 4, 4, 40, &[(5, 1), (3, 2)], 1);
        t.add("200", 1, 0, 10, &[(5, 1)], 0);
        let h = t.histogram();
        assert_eq!(
            (h.keys, h.counts, h.zero_count),
            (vec![3, 5], vec![2, 2], 1)
        );
        assert_eq!((t.http_5xx, t.http_503, t.count), (4, 4, 5));
    }
}
