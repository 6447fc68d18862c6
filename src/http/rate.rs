//! Minimum transfer rate for a body (slowloris on the body): the per-read
//! timeout limits each pause, so a body dripping one byte every half second
//! would stay open forever. A body may instead wait `grace` plus one second
//! per `bytes_per_sec` bytes received, in total (Apache's mod_reqtimeout
//! rule): a fast body never meets the limit, a large body on a slow but
//! honest link earns its time as it goes, and a drip is cut after about
//! `grace`.
//!
//! Only time spent waiting for the peer counts (the caller adds up its
//! reads), so a slow receiver on the other side of a streamed body — back
//! pressure — is not blamed on the sender. Pure: the caller measures.

use std::time::Duration;

/// The rule for one body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    pub bytes_per_sec: u64,
    pub grace: Duration,
}

/// One body's account: bytes received and time spent waiting for them.
#[derive(Debug, Clone, Copy)]
pub struct RateClock {
    min: MinRate,
    bytes: u64,
    waited: Duration,
}

impl RateClock {
    pub fn new(min: MinRate) -> Self {
        RateClock {
            min,
            bytes: 0,
            waited: Duration::ZERO,
        }
    }

    pub fn min(&self) -> MinRate {
        self.min
    }

    /// Total waiting the bytes so far have earned.
    fn allowed(&self) -> Duration {
        let rate = self.min.bytes_per_sec.max(1);
        let earned = Duration::from_secs(self.bytes / rate)
            + Duration::from_nanos((self.bytes % rate) * 1_000_000_000 / rate);
        self.min.grace.saturating_add(earned)
    }

    /// How long the next read may wait before the body is too slow.
    pub fn remaining(&self) -> Duration {
        self.allowed().saturating_sub(self.waited)
    }

    /// A read that waited `took` and brought `bytes`.
    pub fn record(&mut self, bytes: u64, took: Duration) {
        self.bytes += bytes;
        self.waited += took;
    }

    /// Has the body waited longer than it earned?
    pub fn exceeded(&self) -> bool {
        self.waited > self.allowed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(rate: u64, grace: u64) -> RateClock {
        RateClock::new(MinRate {
            bytes_per_sec: rate,
            grace: Duration::from_secs(grace),
        })
    }

    #[test]
    fn a_drip_is_cut_after_the_grace_window() {
        // One byte every half second against 1 KiB/s and 10 s of grace.
        let mut c = rule(1024, 10);
        let mut reads = 0;
        while !c.exceeded() {
            c.record(1, Duration::from_millis(500));
            reads += 1;
            assert!(reads < 1000, "never cut");
        }
        // 10 s of grace plus 21 s/1024: cut at the 21st read (10.5 s).
        assert_eq!(reads, 21);
    }

    #[test]
    fn each_rate_worth_of_bytes_earns_a_second() {
        let mut c = rule(1000, 2);
        assert_eq!(c.remaining(), Duration::from_secs(2));
        c.record(5000, Duration::from_secs(1));
        // 2 s + 5 s earned - 1 s waited.
        assert_eq!(c.remaining(), Duration::from_secs(6));
        c.record(500, Duration::from_millis(6500));
        assert_eq!(c.remaining(), Duration::ZERO);
        assert!(!c.exceeded());
        c.record(0, Duration::from_millis(1));
        assert!(c.exceeded());
    }

    #[test]
    fn a_fast_large_body_never_meets_the_limit() {
        // 8 MiB in 64 KiB reads, each waiting 10 ms (6.4 MB/s) at 1 KiB/s.
        let mut c = rule(1024, 10);
        for _ in 0..128 {
            assert!(c.remaining() >= Duration::from_secs(10));
            c.record(64 * 1024, Duration::from_millis(10));
        }
        assert!(!c.exceeded());
    }

    #[test]
    fn sub_second_remainders_count() {
        let mut c = rule(3, 0);
        c.record(1, Duration::ZERO);
        assert_eq!(c.remaining(), Duration::from_nanos(333_333_333));
    }
}
