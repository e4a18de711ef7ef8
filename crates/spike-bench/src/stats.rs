//! Latency samples to percentiles (exact, nearest-rank on a sorted vector).

use serde::Serialize;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Number of samples.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest sample.
    pub max_us: u64,
}

/// The nearest-rank `p`-th percentile (0 < p <= 100) of `sorted` (ascending); 0 when empty.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let n = sorted.len();
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "rank is within 1..=n for p in (0, 100]"
    )]
    // The epsilon keeps 99.9 % of 1000 at rank 999 despite binary floating point.
    let rank = ((p * n as f64) / 100.0 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

impl Summary {
    /// Summarizes `samples` (microseconds); sorts them in place.
    pub fn from_samples(samples: &mut [u64]) -> Summary {
        samples.sort_unstable();
        let count = samples.len() as u64;
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        #[expect(
            clippy::cast_precision_loss,
            reason = "a mean of microsecond latencies needs no more than f64 precision"
        )]
        let mean_us = if count == 0 {
            0.0
        } else {
            sum as f64 / count as f64
        };
        Summary {
            count,
            mean_us,
            p50_us: percentile(samples, 50.0),
            p90_us: percentile(samples, 90.0),
            p99_us: percentile(samples, 99.0),
            p999_us: percentile(samples, 99.9),
            max_us: samples.last().copied().unwrap_or(0),
        }
    }
}

/// The median of `values` (the lower middle for an even count); `None` when empty.
pub fn median<T: Copy + PartialOrd>(values: &[T]) -> Option<T> {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len().saturating_sub(1) / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 50.0), 500);
        assert_eq!(percentile(&v, 99.0), 990);
        assert_eq!(percentile(&v, 99.9), 999);
        assert_eq!(percentile(&v, 100.0), 1000);
        assert_eq!(percentile(&[7], 99.9), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn summary_sorts_and_orders() {
        let mut v = vec![5, 1, 4, 2, 3, 100];
        let s = Summary::from_samples(&mut v);
        assert_eq!(s.count, 6);
        assert_eq!(s.p50_us, 3);
        assert_eq!(s.max_us, 100);
        assert!(s.p50_us <= s.p99_us && s.p99_us <= s.p999_us && s.p999_us <= s.max_us);
        assert!((s.mean_us - 115.0 / 6.0).abs() < 1e-9);
        assert_eq!(Summary::from_samples(&mut []), Summary::default());
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3, 1, 2]), Some(2));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.0));
        assert_eq!(median::<u64>(&[]), None);
    }
}
