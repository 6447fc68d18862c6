//! Memory budget for buffered bodies (issue 13, resource budgets): at most
//! `gateway.limits.max_buffered_bytes` of request and response bodies held
//! for inspection at once, all exchanges together. Each body takes its
//! bytes from the budget *before* they are read: the declared length up
//! front when there is one, otherwise step by step as the body grows (the
//! buffer's capacity, which is what the allocator holds). A body the budget
//! cannot take is refused with 503 and `Retry-After`: the gateway sheds the
//! work instead of growing without bound.
//!
//! A [`Reservation`] gives its bytes back when dropped, so every way out of
//! an exchange (answer, refusal, failure, client gone, task cancelled)
//! releases it. The limit is passed at each call (it comes from the policy
//! in force, which a reload may change); bytes already reserved stay.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes reserved by all live [`Reservation`]s.
#[derive(Default, Debug)]
pub struct BufferBudget {
    used: AtomicU64,
}

/// A body did not fit: what was in use, what it asked for, the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBuffered {
    pub in_use: u64,
    pub wanted: u64,
    pub limit: u64,
}

impl std::fmt::Display for OverBuffered {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        // The words before the colon are the metrics' reason label.
        write!(
            f,
            "body buffer budget exceeded: {} bytes buffered, {} more wanted, limit {} (gateway.limits.max_buffered_bytes)",
            self.in_use, self.wanted, self.limit
        )
    }
}

impl BufferBudget {
    /// Bytes reserved right now.
    pub fn in_use(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Takes `bytes` if the total stays within `limit`.
    fn take(&self, bytes: u64, limit: u64) -> Result<(), OverBuffered> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= limit)
            })
            .map(|_| ())
            .map_err(|in_use| OverBuffered {
                in_use,
                wanted: bytes,
                limit,
            })
    }

    fn give_back(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// An empty reservation, grown with [`Reservation::grow_to`].
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            held: 0,
        }
    }
}

/// Bytes one body holds from the budget; released on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<BufferBudget>,
    held: u64,
}

impl Reservation {
    /// Holds at least `total` bytes (never shrinks): takes the difference
    /// from the budget, or nothing when it does not fit.
    pub fn grow_to(&mut self, total: u64, limit: u64) -> Result<(), OverBuffered> {
        if total <= self.held {
            return Ok(());
        }
        self.budget.take(total - self.held, limit)?;
        self.held = total;
        Ok(())
    }

    pub fn held(&self) -> u64 {
        self.held
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_within_the_limit_and_come_back_on_drop() {
        let b = Arc::new(BufferBudget::default());
        let mut first = b.reservation();
        first.grow_to(60, 100).unwrap();
        let mut second = b.reservation();
        assert_eq!(
            second.grow_to(41, 100),
            Err(OverBuffered {
                in_use: 60,
                wanted: 41,
                limit: 100
            })
        );
        // A refused request takes nothing.
        assert_eq!((b.in_use(), second.held()), (60, 0));
        second.grow_to(40, 100).unwrap();
        assert_eq!(b.in_use(), 100);
        drop(first);
        assert_eq!(b.in_use(), 40);
        drop(second);
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn growing_takes_only_the_difference_and_never_shrinks() {
        let b = Arc::new(BufferBudget::default());
        let mut r = b.reservation();
        r.grow_to(10, 50).unwrap();
        r.grow_to(30, 50).unwrap();
        assert_eq!(b.in_use(), 30);
        // Asking for less keeps what is held.
        r.grow_to(5, 50).unwrap();
        assert_eq!((b.in_use(), r.held()), (30, 30));
        // 30 held + 21 more would pass 50: refused, the 30 stay.
        let e = r.grow_to(51, 50).unwrap_err();
        assert_eq!((e.in_use, e.wanted), (30, 21));
        assert_eq!(r.held(), 30);
        r.grow_to(50, 50).unwrap();
        drop(r);
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn a_lower_limit_after_a_reload_refuses_new_bytes_but_keeps_held_ones() {
        let b = Arc::new(BufferBudget::default());
        let mut r = b.reservation();
        r.grow_to(80, 100).unwrap();
        let mut other = b.reservation();
        assert!(other.grow_to(1, 50).is_err());
        assert_eq!(r.held(), 80);
        drop(r);
        other.grow_to(50, 50).unwrap();
    }

    #[test]
    fn concurrent_reservations_never_pass_the_limit() {
        let b = Arc::new(BufferBudget::default());
        let granted = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        let mut r = b.reservation();
                        if r.grow_to(7, 20).is_ok() {
                            assert!(b.in_use() <= 20);
                            granted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert!(granted.load(Ordering::Relaxed) > 0);
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn the_reason_names_the_setting() {
        let e = OverBuffered {
            in_use: 1,
            wanted: 2,
            limit: 3,
        };
        let text = e.to_string();
        assert!(text.starts_with("body buffer budget exceeded: "));
        assert!(text.contains("gateway.limits.max_buffered_bytes"));
    }
}
