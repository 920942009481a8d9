//! Per-slot backoff after a failure: capped exponential steps with jitter, and a count of
//! failures in a row that stops the slot once it reaches `--max-failures`.
//!
//! Step `k` (the k-th failure in a row, from 1) waits a random time in
//! `[d/2, d]` where `d = min(base * 2^(k-1), cap)` ("equal jitter"): slots that failed together
//! (an API outage) do not retry together, and the wait never falls below half the step.

use std::time::Duration;

/// How long to back off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// First step.
    pub base: Duration,
    /// Largest step.
    pub cap: Duration,
    /// Failures in a row that stop the slot (at least 1).
    pub max_failures: u32,
}

impl Default for BackoffPolicy {
    /// 2 s base, 5 min cap, 5 failures.
    fn default() -> Self {
        BackoffPolicy {
            base: Duration::from_secs(2),
            cap: Duration::from_secs(300),
            max_failures: 5,
        }
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Wait this long, then try again.
    Retry(Duration),
    /// Too many failures in a row: stop the slot.
    GiveUp,
}

/// One slot's failure count.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    in_a_row: u32,
}

impl Backoff {
    /// A fresh count.
    pub fn new(policy: BackoffPolicy) -> Backoff {
        Backoff {
            policy,
            in_a_row: 0,
        }
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.in_a_row
    }

    /// A run went well: the count starts again.
    pub fn success(&mut self) {
        self.in_a_row = 0;
    }

    /// A failure: how long to wait, or give up.
    pub fn failure(&mut self) -> Verdict {
        self.in_a_row = self.in_a_row.saturating_add(1);
        if self.in_a_row >= self.policy.max_failures.max(1) {
            return Verdict::GiveUp;
        }
        let full = self.step(self.in_a_row);
        let half = full / 2;
        let jitter = rand::random_range(0..=duration_millis(full - half));
        Verdict::Retry(half + Duration::from_millis(jitter))
    }

    /// The un-jittered step for the `k`-th failure in a row.
    fn step(&self, k: u32) -> Duration {
        let factor = 1u32
            .checked_shl(k.saturating_sub(1).min(31))
            .unwrap_or(u32::MAX);
        self.policy
            .base
            .checked_mul(factor)
            .unwrap_or(self.policy.cap)
            .min(self.policy.cap)
    }
}

fn duration_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max: u32) -> BackoffPolicy {
        BackoffPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(10),
            max_failures: max,
        }
    }

    #[test]
    fn steps_double_up_to_the_cap_with_jitter_in_the_upper_half() {
        let mut b = Backoff::new(policy(100));
        for (k, full) in [1u64, 2, 4, 8, 10, 10, 10].into_iter().enumerate() {
            let Verdict::Retry(d) = b.failure() else {
                panic!("gave up at {k}")
            };
            let full = Duration::from_secs(full);
            assert!(
                d >= full / 2 && d <= full,
                "step {k}: {d:?} not in [{:?}, {full:?}]",
                full / 2
            );
        }
        assert_eq!(b.failures(), 7);
    }

    #[test]
    fn gives_up_after_max_failures_in_a_row_and_success_resets() {
        let mut b = Backoff::new(policy(3));
        assert!(matches!(b.failure(), Verdict::Retry(_)));
        assert!(matches!(b.failure(), Verdict::Retry(_)));
        b.success();
        assert!(matches!(b.failure(), Verdict::Retry(_)));
        assert!(matches!(b.failure(), Verdict::Retry(_)));
        assert_eq!(b.failure(), Verdict::GiveUp);
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let b = Backoff::new(policy(u32::MAX));
        assert_eq!(b.step(200), Duration::from_secs(10));
    }
}
