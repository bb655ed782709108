//! How evenly load is spread over replicas.

use serde::Serialize;

/// Summary of per-replica counts (or shares).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// Number of replicas.
    pub n: usize,
    /// Sum of the counts.
    pub total: f64,
    /// Mean per replica (`total / n`).
    pub avg: f64,
    /// Largest count.
    pub max: f64,
    /// Smallest count.
    pub min: f64,
    /// `max / avg`: 1 is perfect balance, `n` means one replica gets everything.
    pub max_over_avg: f64,
    /// Coefficient of variation: population standard deviation / mean (0 is perfect balance).
    pub cv: f64,
}

impl Spread {
    /// The spread of `counts`; `None` when there are none or they sum to 0.
    pub fn of(counts: &[f64]) -> Option<Spread> {
        let n = counts.len();
        let total: f64 = counts.iter().sum();
        if n == 0 || total <= 0.0 {
            return None;
        }
        let avg = total / n as f64;
        let max = counts.iter().copied().fold(f64::MIN, f64::max);
        let min = counts.iter().copied().fold(f64::MAX, f64::min);
        let variance = counts.iter().map(|c| (c - avg).powi(2)).sum::<f64>() / n as f64;
        Some(Spread {
            n,
            total,
            avg,
            max,
            min,
            max_over_avg: max / avg,
            cv: variance.sqrt() / avg,
        })
    }

    /// Same, for integer counts.
    pub fn of_counts(counts: &[u64]) -> Option<Spread> {
        Spread::of(&counts.iter().map(|&c| c as f64).collect::<Vec<_>>())
    }
}

/// Order statistics of a set of values (latencies, times to an event).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// How many values.
    pub count: usize,
    /// Smallest.
    pub min: f64,
    /// Median (nearest rank).
    pub median: f64,
    /// 99th percentile (nearest rank: the smallest value at least 99 % of them do not exceed).
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Summary {
    /// The summary of `values`; `None` when there are none (NaNs are ignored).
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let n = sorted.len();
            sorted[((p * n as f64).ceil() as usize).clamp(1, n) - 1]
        };
        Some(Summary {
            count: sorted.len(),
            min: sorted[0],
            median: rank(0.5),
            p99: rank(0.99),
            max: sorted[sorted.len() - 1],
        })
    }
}

/// Mean of `values` (0 for none).
pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_balance() {
        let s = Spread::of_counts(&[10, 10, 10]).unwrap();
        assert_eq!((s.avg, s.max_over_avg, s.cv), (10.0, 1.0, 0.0));
    }

    #[test]
    fn one_replica_gets_everything() {
        let s = Spread::of_counts(&[0, 30, 0]).unwrap();
        assert_eq!(s.max_over_avg, 3.0);
        assert!((s.cv - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(s.min, 0.0);
    }

    #[test]
    fn summaries_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=200).rev().map(f64::from).collect();
        let s = Summary::of(&values).unwrap();
        assert_eq!(
            (s.count, s.min, s.median, s.p99, s.max),
            (200, 1.0, 100.0, 198.0, 200.0)
        );
        let one = Summary::of(&[7.0]).unwrap();
        assert_eq!((one.median, one.p99), (7.0, 7.0));
        assert!(Summary::of(&[]).is_none());
        assert!(Summary::of(&[f64::NAN]).is_none());
    }

    #[test]
    fn nothing_to_spread() {
        assert!(Spread::of_counts(&[]).is_none());
        assert!(Spread::of_counts(&[0, 0]).is_none());
    }
}
