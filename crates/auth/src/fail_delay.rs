//! Per-IP delay after failed authentications, which slows down guessing of
//! access tokens and secrets.
//!
//! Behaviour of the reference (Nightscout 15.x `lib/authorization/delaylist.js`):
//! every failure pushes the IP's "delayed until" time `step` further, starting
//! from now when the previous delay has already passed. Any request from that
//! IP, with good credentials or bad, first waits until that time. A
//! successful authentication removes the IP's entry. An entry is dropped one minute
//! after its delay has passed.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Time an entry is kept after its delay has passed (`FAIL_AGE` in the reference).
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// Minimum time between two sweeps for forgotten entries.
const PRUNE_INTERVAL: Duration = Duration::from_secs(30);

/// Maximum number of IPs tracked at once. When a failure from a new IP
/// arrives at this size, the entry whose delay ends first is evicted, so a
/// flood from many addresses cannot grow memory without bound.
pub const MAX_TRACKED_IPS: usize = 100_000;

/// Tracker of failed authentications per client IP.
///
/// Built with [`FailDelay::new`] from the `AUTH_FAIL_DELAY` step. All
/// methods take `&self` and lock one mutex, so one tracker can be shared
/// between request handlers.
#[derive(Debug)]
pub struct FailDelay {
    /// Delay added by each failure; zero disables tracking.
    step: Duration,
    /// Tracked IPs and the time of the last sweep.
    state: Mutex<State>,
}

/// Mutable part of a [`FailDelay`].
#[derive(Debug)]
struct State {
    /// Time until which each IP is delayed.
    delayed_until: HashMap<String, Instant>,
    /// Time of the last sweep for forgotten entries.
    last_prune: Instant,
}

impl FailDelay {
    /// Step the reference uses when `AUTH_FAIL_DELAY` is not set: 5 seconds.
    pub const DEFAULT_STEP: Duration = Duration::from_millis(5000);

    /// Creates a tracker that adds `step` per failure. A zero step disables
    /// the delay, as `AUTH_FAIL_DELAY=0` does in the reference.
    pub fn new(step: Duration) -> Self {
        Self {
            step,
            state: Mutex::new(State {
                delayed_until: HashMap::new(),
                last_prune: Instant::now(),
            }),
        }
    }

    /// Returns the delay added per failure.
    pub fn step(&self) -> Duration {
        self.step
    }

    /// Returns how long a request from `ip` must wait before its credentials
    /// are checked; zero when the IP has no pending delay.
    pub fn delay_for(&self, ip: &str) -> Duration {
        self.delay_at(ip, Instant::now())
    }

    /// Records a failed authentication from `ip`, extending its delay by one step.
    pub fn record_failure(&self, ip: &str) {
        self.record_failure_at(ip, Instant::now());
    }

    /// Records a successful authentication from `ip`, which clears its delay.
    pub fn record_success(&self, ip: &str) {
        if self.step.is_zero() {
            return;
        }

        self.lock().delayed_until.remove(ip);
    }

    /// Returns the number of IPs currently tracked.
    pub fn tracked_ips(&self) -> usize {
        self.lock().delayed_until.len()
    }

    /// Computes [`FailDelay::delay_for`] at the instant `now`.
    fn delay_at(&self, ip: &str, now: Instant) -> Duration {
        if self.step.is_zero() {
            return Duration::ZERO;
        }

        match self.lock().delayed_until.get(ip) {
            Some(&until) => until.saturating_duration_since(now),
            None => Duration::ZERO,
        }
    }

    /// Records a failure as [`FailDelay::record_failure`] does, at the instant `now`.
    fn record_failure_at(&self, ip: &str, now: Instant) {
        if self.step.is_zero() {
            return;
        }

        let mut state = self.lock();

        // 1. Sweep forgotten entries from time to time, and whenever a new IP
        //    would exceed the limit.
        let is_new = !state.delayed_until.contains_key(ip);
        let is_full = state.delayed_until.len() >= MAX_TRACKED_IPS;
        if now.saturating_duration_since(state.last_prune) >= PRUNE_INTERVAL || (is_new && is_full)
        {
            state.prune(now);
        }

        // 2. Still full: evict the entry whose delay ends first.
        if is_new && state.delayed_until.len() >= MAX_TRACKED_IPS {
            state.evict_earliest();
        }

        // 3. Extend the delay from now, or from its end when still pending.
        let start = match state.delayed_until.get(ip) {
            Some(&until) if until > now => until,
            _ => now,
        };
        let until = start.checked_add(self.step).unwrap_or(start);
        state.delayed_until.insert(ip.to_owned(), until);
    }

    /// Locks the state. A panic in another thread cannot leave the map
    /// inconsistent, so a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for FailDelay {
    /// Creates a tracker with [`FailDelay::DEFAULT_STEP`].
    fn default() -> Self {
        Self::new(Self::DEFAULT_STEP)
    }
}

impl State {
    /// Drops the entries whose delay ended more than a minute before `now`.
    fn prune(&mut self, now: Instant) {
        self.delayed_until
            .retain(|_, until| now.saturating_duration_since(*until) <= FORGET_AFTER);
        self.last_prune = now;
    }

    /// Drops the entry whose delay ends first.
    fn evict_earliest(&mut self) {
        let earliest = self
            .delayed_until
            .iter()
            .min_by_key(|(_, until)| **until)
            .map(|(ip, _)| ip.clone());
        if let Some(ip) = earliest {
            self.delayed_until.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const STEP: Duration = Duration::from_millis(5000);

    #[test]
    fn unknown_ip_has_no_delay() {
        let delay = FailDelay::default();
        assert_eq!(delay.step(), STEP);
        assert_eq!(delay.delay_for("192.0.2.1"), Duration::ZERO);
    }

    #[test]
    fn failures_accumulate() {
        let delay = FailDelay::new(STEP);
        let now = Instant::now();

        delay.record_failure_at("192.0.2.1", now);
        assert_eq!(delay.delay_at("192.0.2.1", now), STEP);

        delay.record_failure_at("192.0.2.1", now + Duration::from_secs(1));
        assert_eq!(
            delay.delay_at("192.0.2.1", now + Duration::from_secs(1)),
            Duration::from_secs(9)
        );

        delay.record_failure_at("192.0.2.1", now + Duration::from_secs(2));
        assert_eq!(
            delay.delay_at("192.0.2.1", now + Duration::from_secs(2)),
            Duration::from_secs(13)
        );
    }

    #[test]
    fn delay_counts_down() {
        let delay = FailDelay::new(STEP);
        let now = Instant::now();
        delay.record_failure_at("192.0.2.1", now);

        assert_eq!(
            delay.delay_at("192.0.2.1", now + Duration::from_secs(3)),
            Duration::from_secs(2)
        );
        assert_eq!(
            delay.delay_at("192.0.2.1", now + Duration::from_secs(5)),
            Duration::ZERO
        );
        assert_eq!(
            delay.delay_at("192.0.2.1", now + Duration::from_secs(50)),
            Duration::ZERO
        );
    }

    #[test]
    fn failure_after_delay_restarts_from_now() {
        let delay = FailDelay::new(STEP);
        let now = Instant::now();
        delay.record_failure_at("192.0.2.1", now);
        delay.record_failure_at("192.0.2.1", now);

        let later = now + Duration::from_secs(20);
        delay.record_failure_at("192.0.2.1", later);
        assert_eq!(delay.delay_at("192.0.2.1", later), STEP);
    }

    #[test]
    fn ips_tracked_separately() {
        let delay = FailDelay::new(STEP);
        let now = Instant::now();
        delay.record_failure_at("192.0.2.1", now);
        assert_eq!(delay.delay_at("192.0.2.2", now), Duration::ZERO);
        assert_eq!(delay.delay_at("2001:db8::1", now), Duration::ZERO);
    }

    #[test]
    fn success_clears_delay() {
        let delay = FailDelay::new(STEP);
        delay.record_failure("192.0.2.1");
        assert!(delay.delay_for("192.0.2.1") > Duration::ZERO);

        delay.record_success("192.0.2.1");
        assert_eq!(delay.delay_for("192.0.2.1"), Duration::ZERO);
        assert_eq!(delay.tracked_ips(), 0);
    }

    #[test]
    fn zero_step_disables_delay() {
        let delay = FailDelay::new(Duration::ZERO);
        for _ in 0..10 {
            delay.record_failure("192.0.2.1");
        }
        assert_eq!(delay.delay_for("192.0.2.1"), Duration::ZERO);
        assert_eq!(delay.tracked_ips(), 0);
    }

    #[test]
    fn entries_forgotten_after_a_minute() {
        let delay = FailDelay::new(STEP);
        let now = Instant::now();
        delay.record_failure_at("192.0.2.1", now);

        // The first IP's delay ends at +5 s. The sweep at +64 s keeps it
        // (59 s after the end), the sweep at +100 s drops it (95 s after).
        delay.record_failure_at("192.0.2.2", now + Duration::from_secs(64));
        assert_eq!(delay.tracked_ips(), 2);
        delay.record_failure_at("192.0.2.3", now + Duration::from_secs(100));
        assert_eq!(delay.tracked_ips(), 2);
        assert_eq!(
            delay.delay_at("192.0.2.1", now + Duration::from_secs(100)),
            Duration::ZERO
        );
    }

    #[test]
    fn memory_is_bounded() {
        let delay = FailDelay::new(STEP);
        let now = Instant::now();
        for index in 0..MAX_TRACKED_IPS {
            delay.record_failure_at(
                &format!("ip-{index}"),
                now + Duration::from_micros(index as u64),
            );
        }
        assert_eq!(delay.tracked_ips(), MAX_TRACKED_IPS);

        delay.record_failure_at("one more", now + Duration::from_secs(1));
        assert_eq!(delay.tracked_ips(), MAX_TRACKED_IPS);
        assert_eq!(
            delay.delay_at("one more", now + Duration::from_secs(1)),
            STEP
        );
        // The entry whose delay ended first was evicted.
        assert_eq!(delay.delay_at("ip-0", now), Duration::ZERO);
        assert_eq!(delay.delay_at("ip-1", now), STEP + Duration::from_micros(1));
    }

    #[test]
    fn shared_between_threads() {
        let delay = Arc::new(FailDelay::new(STEP));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let delay = Arc::clone(&delay);
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        delay.record_failure("192.0.2.1");
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }

        // 100 failures within a moment add up to about 500 s.
        let pending = delay.delay_for("192.0.2.1");
        assert!(pending > Duration::from_secs(490), "{pending:?}");
        assert!(pending <= Duration::from_secs(500), "{pending:?}");
    }
}
