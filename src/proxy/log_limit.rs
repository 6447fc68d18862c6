//! Rate limit for refusal log lines: a flood of refused connections or
//! exchanges (over a budget, a loop, a transparent destination that is not
//! an instance, a bad CONNECT) must not fill the journal. Each reason gets
//! at most `per_second` lines in a one-second window; what is left out is
//! counted and reported by one summary line when the next line of that
//! reason is written in a later window (saying which second it was when
//! that is not the last one: there is no timer, the limiter is pure).
//!
//! The limiter is pure: the caller passes the time, so tests drive it
//! without a clock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(1);

/// Lines per reason per second the gateway writes for refusals.
pub const REFUSAL_LINES_PER_SECOND: u32 = 10;

/// What the caller should write for one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogPermit {
    /// Write the line; first, when `suppressed > 0`, the summary of lines
    /// left out in the earlier window, which began `window_age` ago.
    Write {
        suppressed: u64,
        window_age: Duration,
    },
    /// Leave it out (counted for the next summary).
    Skip,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    written: u32,
    skipped: u64,
}

/// Per-reason windows. Reasons are a small fixed set of `&'static str`, so
/// the map stays as small as that set.
#[derive(Debug)]
pub struct LogLimiter {
    per_second: u32,
    windows: HashMap<&'static str, Window>,
}

impl LogLimiter {
    pub fn new(per_second: u32) -> Self {
        LogLimiter {
            per_second,
            windows: HashMap::new(),
        }
    }

    /// The summary line for lines left out of a window `age` ago.
    pub fn summary(kind: &str, suppressed: u64, age: Duration) -> String {
        if age < 2 * WINDOW {
            format!("{kind}: … {suppressed} more refused in the last second (not logged)")
        } else {
            format!(
                "{kind}: … {suppressed} more refused in the second that began {} s ago (not logged)",
                age.as_secs()
            )
        }
    }

    /// May a line for `reason` be written at `now`?
    pub fn permit(&mut self, reason: &'static str, now: Instant) -> LogPermit {
        let w = self.windows.entry(reason).or_insert(Window {
            start: now,
            written: 0,
            skipped: 0,
        });
        let mut suppressed = 0;
        let window_age = now.saturating_duration_since(w.start);
        if window_age >= WINDOW {
            suppressed = std::mem::take(&mut w.skipped);
            w.start = now;
            w.written = 0;
        }
        if w.written < self.per_second {
            w.written += 1;
            LogPermit::Write {
                suppressed,
                window_age,
            }
        } else {
            w.skipped += 1;
            LogPermit::Skip
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    /// The summary count a written line carries, None when skipped.
    fn written_after(l: &mut LogLimiter, reason: &'static str, now: Instant) -> Option<u64> {
        match l.permit(reason, now) {
            LogPermit::Write { suppressed, .. } => Some(suppressed),
            LogPermit::Skip => None,
        }
    }

    #[test]
    fn at_most_n_lines_per_second_then_one_summary() {
        let mut l = LogLimiter::new(3);
        let t0 = Instant::now();
        let mut written = 0;
        for i in 0..100 {
            match l.permit("budget", ms(t0, i)) {
                LogPermit::Write { suppressed, .. } => {
                    assert_eq!(suppressed, 0);
                    written += 1;
                }
                LogPermit::Skip => {}
            }
        }
        assert_eq!(written, 3);
        // The next window's first line carries the 97 left out.
        assert_eq!(
            l.permit("budget", ms(t0, 1000)),
            LogPermit::Write {
                suppressed: 97,
                window_age: Duration::from_secs(1)
            }
        );
        assert_eq!(written_after(&mut l, "budget", ms(t0, 1001)), Some(0));
    }

    #[test]
    fn reasons_have_their_own_windows() {
        let mut l = LogLimiter::new(1);
        let t0 = Instant::now();
        assert_eq!(written_after(&mut l, "a", t0), Some(0));
        assert_eq!(l.permit("a", t0), LogPermit::Skip);
        assert_eq!(written_after(&mut l, "b", t0), Some(0));
        assert_eq!(l.permit("a", ms(t0, 999)), LogPermit::Skip);
        assert_eq!(written_after(&mut l, "b", ms(t0, 1500)), Some(0));
        assert_eq!(written_after(&mut l, "a", ms(t0, 1500)), Some(2));
    }

    #[test]
    fn a_quiet_reason_is_never_limited() {
        let mut l = LogLimiter::new(2);
        let t0 = Instant::now();
        for i in 0..50 {
            assert_eq!(written_after(&mut l, "loop", ms(t0, i * 600)), Some(0));
        }
    }

    #[test]
    fn a_clock_going_backwards_does_not_panic_or_reset() {
        let mut l = LogLimiter::new(1);
        let t0 = Instant::now() + Duration::from_secs(5);
        assert_eq!(written_after(&mut l, "x", t0), Some(0));
        assert_eq!(l.permit("x", t0 - Duration::from_secs(1)), LogPermit::Skip);
    }

    #[test]
    fn a_late_summary_says_when_its_second_was() {
        let mut l = LogLimiter::new(1);
        let t0 = Instant::now();
        for _ in 0..3 {
            l.permit("loop", t0);
        }
        let LogPermit::Write {
            suppressed,
            window_age,
        } = l.permit("loop", ms(t0, 30_000))
        else {
            panic!("a new window writes");
        };
        assert_eq!(suppressed, 2);
        assert_eq!(
            LogLimiter::summary("loop", suppressed, window_age),
            "loop: … 2 more refused in the second that began 30 s ago (not logged)"
        );
        assert_eq!(
            LogLimiter::summary("loop", 5, Duration::from_millis(1200)),
            "loop: … 5 more refused in the last second (not logged)"
        );
    }
}
