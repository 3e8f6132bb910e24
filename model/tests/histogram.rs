//! The latency histogram against exact quantiles of the raw values, on distributions chosen to
//! break it: two far-apart modes, heavy tails, nanosecond values, mostly zeros, a single value,
//! all values equal, values at the documented maximum and at every bucket edge.
//!
//! Quantile definition. `Histogram::quantile(q)` returns the value of the sample at 0-based rank
//! `⌊q·(n − 1)⌋` of the sorted values (numpy's `method="lower"`): no interpolation, `q = 0` is
//! the minimum and `q = 1` the maximum. The exact quantile here is that same rank of the sorted
//! raw values, so the only difference left is the bucket's representative value, which the
//! README promises is within 1 % ("Read API"). `rank_edges_use_the_lower_rank` pins the
//! definition: a histogram that rounded the rank up, or to nearest, fails it by 1,500×.
//!
//! Every comparison asserts `|estimate − exact| ≤ 1 % · exact` (an exact 0 must be read as 0).
//! The only slack is [`FLOAT_SLACK`]: a value exactly on a bucket edge (1 ns is one) is, in real
//! numbers, exactly 1 % from its representative, and `ln`/`exp` in `f64` may land a few ulps
//! over.

use stormwatch_model::histogram::RELATIVE_ERROR;
use stormwatch_model::limits::MAX_DURATION_NS;
use stormwatch_model::Histogram;

/// Floating-point rounding of the bucket mapping, relative (a few ulps of 1 %; far below any
/// real error, which would be a whole bucket: 2 %).
const FLOAT_SLACK: f64 = 1e-12;

/// The quantiles read by the API and the dashboard, plus the minimum and the maximum.
const QUANTILES: [f64; 7] = [0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0];

/// SplitMix64: a deterministic, dependency-free generator; one seed per distribution.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: never 0, so `ln` and negative powers stay finite.
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
    }
}

/// A duration in ns from a float, clamped to what a span may last.
fn ns(x: f64) -> u64 {
    x.round().clamp(1.0, MAX_DURATION_NS as f64) as u64
}

/// The exact quantile under the histogram's definition: rank `⌊q·(n − 1)⌋` of `sorted`.
fn exact_quantile(sorted: &[u64], q: f64) -> f64 {
    sorted[(q * (sorted.len() - 1) as f64).floor() as usize] as f64
}

/// Relative error of `estimate` against `exact`; an exact 0 must be estimated as 0.
fn relative_error(estimate: f64, exact: f64) -> f64 {
    if exact == 0.0 {
        if estimate == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        (estimate - exact).abs() / exact
    }
}

/// Asserts every quantile of `h` is within 1 % of the exact one of `sorted`; returns the
/// largest relative error seen.
fn assert_within_bound(name: &str, h: &Histogram, sorted: &[u64]) -> f64 {
    assert_eq!(h.count(), sorted.len() as u64, "{name}: count");
    let mut worst = 0.0f64;
    for q in QUANTILES {
        let estimate = h.quantile(q).expect("not empty");
        let exact = exact_quantile(sorted, q);
        let err = relative_error(estimate, exact);
        assert!(
            err <= RELATIVE_ERROR * (1.0 + FLOAT_SLACK),
            "{name}: q={q} estimate={estimate} exact={exact} relative error={err:e}"
        );
        worst = worst.max(err);
    }
    worst
}

fn histogram_of(values: &[u64]) -> Histogram {
    let mut h = Histogram::default();
    for v in values {
        h.record(*v);
    }
    h
}

/// `values` dealt at random into 2..=12 histograms, merged in a random order (some parts may
/// be empty).
fn merged_from_random_parts(values: &[u64], rng: &mut Rng) -> Histogram {
    let parts = 2 + rng.below(11) as usize;
    let mut hs = vec![Histogram::default(); parts];
    for v in values {
        hs[rng.below(parts as u64) as usize].record(*v);
    }
    let mut merged = Histogram::default();
    while !hs.is_empty() {
        let h = hs.swap_remove(rng.below(hs.len() as u64) as usize);
        merged.merge(&h);
    }
    merged
}

/// Checks one distribution recorded whole and merged from random parts (three splits);
/// returns the largest relative error.
fn check(name: &str, mut values: Vec<u64>, rng: &mut Rng) -> f64 {
    let whole = histogram_of(&values);
    let splits: Vec<Histogram> = (0..3)
        .map(|_| merged_from_random_parts(&values, rng))
        .collect();
    values.sort_unstable();
    let mut worst = assert_within_bound(name, &whole, &values);
    for merged in &splits {
        worst = worst.max(assert_within_bound(
            &format!("{name} (merged)"),
            merged,
            &values,
        ));
        assert_eq!(
            merged, &whole,
            "{name}: merging parts must equal recording once"
        );
        merged.check().unwrap();
    }
    eprintln!(
        "{name:<28} n={:<7} max relative error {worst:.6e}",
        values.len()
    );
    worst
}

const N: usize = 50_000;

#[test]
fn bimodal_one_millisecond_and_one_and_a_half_seconds() {
    let mut rng = Rng(1);
    // 94 % near 1 ms, 6 % near 1.5 s (±5 % jitter): p50 and p90 in the low mode, p95 and
    // above in the high one.
    let values = (0..N)
        .map(|_| {
            let base = if rng.below(100) < 94 { 1e6 } else { 1.5e9 };
            ns(base * (0.95 + 0.1 * rng.unit()))
        })
        .collect();
    check("bimodal 1 ms / 1.5 s", values, &mut rng);
    // Exactly two values, the gap right between p90 and p95.
    let values = (0..N)
        .map(|i| {
            if i % 100 < 92 {
                1_000_000
            } else {
                1_500_000_000
            }
        })
        .collect();
    check("two points 1 ms / 1.5 s", values, &mut rng);
}

#[test]
fn heavy_tails() {
    let mut rng = Rng(2);
    // Pareto, α = 0.8 (no mean), from 50 µs: p99.9 is ~ 1,000× p50.
    let values = (0..N)
        .map(|_| ns(50_000.0 * rng.unit().powf(-1.0 / 0.8)))
        .collect();
    check("pareto alpha=0.8", values, &mut rng);
    // Lognormal, median 1 ms, σ = 3: from nanoseconds to hours.
    let values = (0..N)
        .map(|_| ns((1e6f64.ln() + 3.0 * rng.normal()).exp()))
        .collect();
    check("lognormal sigma=3", values, &mut rng);
}

#[test]
fn nanosecond_values() {
    let mut rng = Rng(3);
    let values = (0..N).map(|_| 1 + rng.below(10)).collect();
    check("1..=10 ns", values, &mut rng);
    let values = (0..N).map(|_| 1 + rng.below(2)).collect();
    check("1..=2 ns", values, &mut rng);
}

#[test]
fn mostly_zeros() {
    let mut rng = Rng(4);
    // 99 % zeros: p99 is still 0 (rank ⌊0.99·(n−1)⌋ < the zero count), p99.9 is not.
    let values = (0..N)
        .map(|_| {
            if rng.below(100) < 99 {
                0
            } else {
                ns((1e6f64.ln() + 2.0 * rng.normal()).exp())
            }
        })
        .collect();
    check("99 % zeros", values, &mut rng);
    let mut values = vec![0; N];
    values[N / 2] = 3;
    check("all zeros but one", values, &mut rng);
    check("all zeros", vec![0; N], &mut rng);
}

#[test]
fn single_value_and_all_equal() {
    let mut rng = Rng(5);
    for v in [0, 1, 7, 999, 123_456_789, MAX_DURATION_NS as u64] {
        check(&format!("single value {v}"), vec![v], &mut rng);
        check(&format!("all equal {v}"), vec![v; N], &mut rng);
    }
}

#[test]
fn huge_values_near_the_documented_maximum() {
    let mut rng = Rng(6);
    // The longest accepted span is a day (limits::MAX_DURATION_NS).
    let max = MAX_DURATION_NS as u64;
    let values = (0..N).map(|_| max - rng.below(max / 10)).collect();
    check("last 10 % below 1 day", values, &mut rng);
    // Beyond it, up to i64::MAX (what a duration can hold at all): the mapping must not
    // overflow or lose precision.
    let values = (0..N).map(|_| (i64::MAX as u64) >> rng.below(20)).collect();
    check("up to i64::MAX", values, &mut rng);
}

/// Values on both sides of every bucket boundary γᵏ from 1 ns to a day: where `ln` rounding
/// would put a value into the neighbouring bucket.
#[test]
fn values_at_every_bucket_edge() {
    let mut rng = Rng(7);
    let gamma = (1.0 + RELATIVE_ERROR) / (1.0 - RELATIVE_ERROR);
    let mut values = Vec::new();
    let mut edge = 1.0f64;
    while edge <= MAX_DURATION_NS as f64 {
        for v in [
            edge.floor() - 1.0,
            edge.floor(),
            edge.ceil(),
            edge.ceil() + 1.0,
        ] {
            if v >= 1.0 {
                values.push(v as u64);
            }
        }
        edge *= gamma;
    }
    values.sort_unstable();
    values.dedup();
    // Each value alone: its own quantiles are itself.
    let mut worst = 0.0f64;
    for v in &values {
        worst = worst.max(assert_within_bound(
            &format!("edge value {v}"),
            &histogram_of(&[*v]),
            &[*v],
        ));
    }
    eprintln!(
        "{:<28} n={:<7} max relative error {worst:.6e}",
        "each edge value alone",
        values.len()
    );
    check("all bucket edges", values, &mut rng);
}

/// The histogram reads rank ⌊q·(n − 1)⌋, not the next one: for each quantile a two-point sample
/// whose low value ends exactly at that rank, and one whose high value starts there.
#[test]
fn rank_edges_use_the_lower_rank() {
    let (low, high) = (1_000_000u64, 1_500_000_000u64);
    for n in [2usize, 3, 10, 11, 100, 101, 1_000, 1_001, 10_000, 10_001] {
        for q in QUANTILES {
            let r = (q * (n - 1) as f64).floor() as usize;
            for first_high in [r + 1, r] {
                let values: Vec<u64> = (0..n)
                    .map(|i| if i < first_high { low } else { high })
                    .collect();
                assert_within_bound(
                    &format!("n={n} q={q} first high at {first_high}"),
                    &histogram_of(&values),
                    &values,
                );
            }
        }
    }
}

#[test]
fn empty_histogram_has_no_quantile() {
    let h = Histogram::default();
    for q in QUANTILES {
        assert_eq!(h.quantile(q), None);
    }
}
