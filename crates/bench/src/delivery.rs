//! Bookkeeping of deliveries: which subscriber received which write, so that lost
//! and duplicated events are counted exactly, and how long each delivery took.
//!
//! Writes are numbered by `benchSeq` and grouped into steps (one per offered
//! rate, say). Each subscriber has one bit per write; setting a bit that is
//! already set is a duplicate, and a bit still clear after the drain for a write
//! the server acknowledged is a lost event.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::document::{clock_ns, read_marks};
use crate::latency::{Percentiles, ShardedHistogram};

/// A fixed-size set of sequence numbers that many tasks update at once.
struct Bitset {
    words: Box<[AtomicU64]>,
}

impl Bitset {
    fn new(bits: u64) -> Bitset {
        let words = bits.div_ceil(64) as usize;
        Bitset {
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Sets bit `index` and returns whether it was already set.
    fn insert(&self, index: u64) -> bool {
        let mask = 1u64 << (index % 64);
        let previous = self.words[(index / 64) as usize].fetch_or(mask, Ordering::Relaxed);
        previous & mask != 0
    }

    fn contains(&self, index: u64) -> bool {
        let mask = 1u64 << (index % 64);
        self.words[(index / 64) as usize].load(Ordering::Relaxed) & mask != 0
    }
}

/// One step's range of sequence numbers and what happened to them.
struct Step {
    /// First sequence number of the step.
    start: u64,
    /// One past the last sequence number of the step.
    end: u64,
    /// Writes of this step that the server acknowledged.
    acknowledged: AtomicU64,
    /// Deliveries of this step's writes, each (subscriber, write) pair counted once.
    delivered: AtomicU64,
    /// Deliveries of a (subscriber, write) pair that had already been delivered.
    duplicated: AtomicU64,
    /// Bench clock of the latest delivery, in nanoseconds.
    last_delivery_ns: AtomicU64,
    /// Delivery latency in microseconds.
    latency: ShardedHistogram,
}

/// Delivery ledger of one run: the writes, the subscribers and every delivery.
pub struct Ledger {
    /// Sequence numbers the server acknowledged.
    acknowledged: Bitset,
    /// Per subscriber, the sequence numbers it received.
    received: Vec<Bitset>,
    /// Per subscriber, whether it never subscribed and so is owed nothing.
    excluded: Vec<AtomicBool>,
    /// The steps, in sequence-number order.
    steps: Vec<Step>,
    /// Events without marks, or with a sequence number outside every step.
    unexpected: AtomicU64,
    /// Bench clock of the latest event of any kind, in nanoseconds.
    last_event_ns: AtomicU64,
}

/// What a step's writes turned into, once the drain is over.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Deliveries {
    /// Writes the server acknowledged.
    pub acknowledged_writes: u64,
    /// Deliveries owed: acknowledged writes times subscribers that subscribed.
    pub expected: u64,
    /// Distinct (subscriber, write) deliveries received.
    pub delivered: u64,
    /// Deliveries owed but never received.
    pub lost: u64,
    /// Deliveries received more than once (each extra copy counts).
    pub duplicated: u64,
    /// Deliveries of writes whose request failed (the server broadcast them anyway).
    pub unacknowledged_delivered: u64,
    /// Latency from sending the write to receiving the event.
    pub latency: Percentiles,
}

impl Ledger {
    /// Creates a ledger for `subscribers` and steps of the given sizes, numbered
    /// from sequence number 0 in order.
    pub fn new(subscribers: usize, step_sizes: &[u64]) -> Ledger {
        let mut steps = Vec::with_capacity(step_sizes.len());
        let mut start = 0;
        for size in step_sizes {
            steps.push(Step {
                start,
                end: start + size,
                acknowledged: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
                duplicated: AtomicU64::new(0),
                last_delivery_ns: AtomicU64::new(0),
                latency: ShardedHistogram::default(),
            });
            start += size;
        }
        Ledger {
            acknowledged: Bitset::new(start),
            received: (0..subscribers).map(|_| Bitset::new(start)).collect(),
            excluded: (0..subscribers).map(|_| AtomicBool::new(false)).collect(),
            steps,
            unexpected: AtomicU64::new(0),
            last_event_ns: AtomicU64::new(0),
        }
    }

    /// Returns the sequence numbers of step `step`.
    pub fn range(&self, step: usize) -> std::ops::Range<u64> {
        self.steps[step].start..self.steps[step].end
    }

    fn step_of(&self, seq: u64) -> Option<&Step> {
        self.steps
            .iter()
            .find(|step| step.start <= seq && seq < step.end)
    }

    /// Marks `subscriber` as never subscribed: no delivery is owed to it.
    pub fn exclude(&self, subscriber: usize) {
        self.excluded[subscriber].store(true, Ordering::Relaxed);
    }

    /// Returns the number of subscribers owed deliveries.
    fn owed_subscribers(&self) -> u64 {
        self.excluded
            .iter()
            .filter(|excluded| !excluded.load(Ordering::Relaxed))
            .count() as u64
    }

    /// Records that the server acknowledged write `seq`.
    pub fn acknowledge(&self, seq: u64) {
        if let Some(step) = self.step_of(seq)
            && !self.acknowledged.insert(seq)
        {
            step.acknowledged.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records an event text received by `subscriber`.
    pub fn record_event(&self, subscriber: usize, text: &str) {
        let now = clock_ns();
        self.last_event_ns.fetch_max(now, Ordering::Relaxed);
        let Some(marks) = read_marks(text) else {
            self.unexpected.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(step) = self.step_of(marks.seq) else {
            self.unexpected.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if self.received[subscriber].insert(marks.seq) {
            step.duplicated.fetch_add(1, Ordering::Relaxed);
            return;
        }
        step.delivered.fetch_add(1, Ordering::Relaxed);
        step.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
        let micros = now.saturating_sub(marks.sent_ns) / 1000;
        step.latency.record(subscriber, micros);
    }

    /// Returns the number of events that carried no usable marks.
    pub fn unexpected(&self) -> u64 {
        self.unexpected.load(Ordering::Relaxed)
    }

    /// Returns the bench clock of the latest delivery of step `step`, 0 when none.
    pub fn last_delivery_ns(&self, step: usize) -> u64 {
        self.steps[step].last_delivery_ns.load(Ordering::Relaxed)
    }

    /// Waits until every acknowledged write of `step` reached every subscriber, or
    /// `timeout` passed; returns whether everything arrived.
    pub async fn drain(&self, step: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let step = &self.steps[step];
        let subscribers = self.owed_subscribers();
        loop {
            let owed = step.acknowledged.load(Ordering::Relaxed) * subscribers;
            if step.delivered.load(Ordering::Relaxed) >= owed {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until no event has arrived for `quiet`, or `timeout` passed; returns
    /// whether it went quiet. Events still queued in the server after an
    /// overloaded step would otherwise land in the next step's time.
    pub async fn settle(&self, quiet: Duration, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let silent_ns = clock_ns().saturating_sub(self.last_event_ns.load(Ordering::Relaxed));
            if silent_ns >= quiet.as_nanos() as u64 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Counts what step `step` delivered; call it after the drain.
    pub fn deliveries(&self, step: usize) -> Deliveries {
        let range = self.range(step);
        let step = &self.steps[step];
        let mut lost = 0;
        let mut unacknowledged_delivered = 0;
        let owed = self
            .received
            .iter()
            .zip(&self.excluded)
            .filter(|(_, excluded)| !excluded.load(Ordering::Relaxed));
        for (received, _) in owed {
            for seq in range.clone() {
                match (self.acknowledged.contains(seq), received.contains(seq)) {
                    (true, false) => lost += 1,
                    (false, true) => unacknowledged_delivered += 1,
                    _ => {}
                }
            }
        }
        let acknowledged_writes = step.acknowledged.load(Ordering::Relaxed);
        Deliveries {
            acknowledged_writes,
            expected: acknowledged_writes * self.owed_subscribers(),
            delivered: step.delivered.load(Ordering::Relaxed),
            lost,
            duplicated: step.duplicated.load(Ordering::Relaxed),
            unacknowledged_delivered,
            latency: Percentiles::of(&step.latency.merged()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::marked_entry;

    fn event(seq: u64) -> String {
        marked_entry("d", 1_733_300_000_000 + seq as i64, seq, clock_ns())
    }

    #[test]
    fn counts_lost_and_duplicated() {
        let ledger = Ledger::new(2, &[3, 2]);
        for seq in 0..5 {
            ledger.acknowledge(seq);
        }
        // Subscriber 0 gets everything, write 1 twice; subscriber 1 misses write 2.
        for seq in [0, 1, 1, 2, 3, 4] {
            ledger.record_event(0, &event(seq));
        }
        for seq in [0, 1, 3, 4] {
            ledger.record_event(1, &event(seq));
        }

        let first = ledger.deliveries(0);
        assert_eq!(first.expected, 6);
        assert_eq!(first.delivered, 5);
        assert_eq!(first.lost, 1);
        assert_eq!(first.duplicated, 1);
        assert_eq!(first.latency.count, 5);

        let second = ledger.deliveries(1);
        assert_eq!(second.delivered, 4);
        assert_eq!(second.lost, 0);
        assert_eq!(second.duplicated, 0);
    }

    #[test]
    fn unacknowledged_write_is_not_lost() {
        let ledger = Ledger::new(1, &[2]);
        ledger.acknowledge(0);
        ledger.record_event(0, &event(0));
        ledger.record_event(0, &event(1));
        let deliveries = ledger.deliveries(0);
        assert_eq!(deliveries.lost, 0);
        assert_eq!(deliveries.unacknowledged_delivered, 1);
    }

    #[test]
    fn excluded_subscriber_is_owed_nothing() {
        let ledger = Ledger::new(2, &[1]);
        ledger.exclude(1);
        ledger.acknowledge(0);
        ledger.record_event(0, &event(0));
        let deliveries = ledger.deliveries(0);
        assert_eq!(deliveries.expected, 1);
        assert_eq!(deliveries.lost, 0);
    }

    #[test]
    fn event_outside_steps_is_unexpected() {
        let ledger = Ledger::new(1, &[1]);
        ledger.record_event(0, &event(7));
        ledger.record_event(0, "42/storage,[\"create\",{}]");
        assert_eq!(ledger.unexpected(), 2);
    }
}
