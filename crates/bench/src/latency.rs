//! Latency recording in microseconds with HdrHistogram, sharded so that tasks on
//! different worker threads rarely wait for the same lock.

use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest recorded latency: one hour in microseconds; larger values count as this.
const HIGHEST_MICROS: u64 = 3_600_000_000;

/// Significant decimal digits kept: 2 keeps every value within 1 %.
const SIGNIFICANT_DIGITS: u8 = 2;

/// Number of independently locked histograms in a `ShardedHistogram`.
const SHARDS: usize = 16;

/// Returns an empty histogram with the bench's bounds and precision.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_MICROS, SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// A latency histogram that many tasks record into at once.
pub struct ShardedHistogram {
    /// One histogram per shard; a recorder picks its shard by a key of its own.
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Default for ShardedHistogram {
    fn default() -> Self {
        ShardedHistogram {
            shards: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
        }
    }
}

impl ShardedHistogram {
    /// Records `micros` in the shard chosen by `key` (a subscriber or client number).
    pub fn record(&self, key: usize, micros: u64) {
        let mut shard = self.shards[key % SHARDS]
            .lock()
            .expect("histogram lock is not poisoned");
        shard.saturating_record(micros.max(1));
    }

    /// Returns every shard added together.
    pub fn merged(&self) -> Histogram<u64> {
        let mut total = new_histogram();
        for shard in &self.shards {
            let shard = shard.lock().expect("histogram lock is not poisoned");
            total.add(&*shard).expect("shards share bounds");
        }
        total
    }
}

/// Summary of a latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
pub struct Percentiles {
    /// Number of recorded values.
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Percentiles {
    /// Summarises a histogram of microseconds; all zero when it is empty.
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Percentiles {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            max_ms: ms(histogram.max()),
            mean_ms: histogram.mean() / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharded_percentiles() {
        let histogram = ShardedHistogram::default();
        for value in 1..=1000u64 {
            histogram.record(value as usize, value * 1000);
        }
        let summary = Percentiles::of(&histogram.merged());
        assert_eq!(summary.count, 1000);
        assert!((summary.p50_ms - 500.0).abs() <= 5.0, "{summary:?}");
        assert!((summary.p99_ms - 990.0).abs() <= 10.0, "{summary:?}");
        assert!((summary.max_ms - 1000.0).abs() <= 10.0, "{summary:?}");
    }

    #[test]
    fn empty_histogram_is_zero() {
        let summary = Percentiles::of(&new_histogram());
        assert_eq!(summary.count, 0);
        assert_eq!(summary.p99_ms, 0.0);
    }
}
