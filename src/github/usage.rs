//! How many requests the client sent: in total, and in the last hour (GitHub's rate-limit
//! window), for the metrics endpoint.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Minutes kept: one hour.
const WINDOW_MINUTES: u64 = 60;

/// Requests counted in total and per minute over the last hour.
#[derive(Debug)]
pub(crate) struct CallLog {
    total: AtomicU64,
    /// (minute since `start`, requests in it), oldest first.
    minutes: Mutex<VecDeque<(u64, u64)>>,
    start: Instant,
}

impl Default for CallLog {
    fn default() -> Self {
        CallLog {
            total: AtomicU64::new(0),
            minutes: Mutex::new(VecDeque::new()),
            start: Instant::now(),
        }
    }
}

impl CallLog {
    /// Counts one request now.
    pub(crate) fn record(&self) {
        self.record_at(self.minute_now());
    }

    /// Requests in total.
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Requests in the current minute and the 59 before it.
    pub(crate) fn last_hour(&self) -> u64 {
        self.last_hour_at(self.minute_now())
    }

    fn minute_now(&self) -> u64 {
        self.start.elapsed().as_secs() / 60
    }

    fn record_at(&self, minute: u64) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut m = self.lock();
        match m.back_mut() {
            Some((at, n)) if *at == minute => *n += 1,
            _ => m.push_back((minute, 1)),
        }
        while m
            .front()
            .is_some_and(|(at, _)| *at + WINDOW_MINUTES <= minute)
        {
            m.pop_front();
        }
    }

    fn last_hour_at(&self, minute: u64) -> u64 {
        self.lock()
            .iter()
            .filter(|(at, _)| *at + WINDOW_MINUTES > minute)
            .map(|(_, n)| n)
            .sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, u64)>> {
        // Counting must survive a panic elsewhere.
        self.minutes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hour_slides() {
        let log = CallLog::default();
        log.record_at(0);
        log.record_at(0);
        log.record_at(30);
        assert_eq!(log.last_hour_at(30), 3);
        assert_eq!(log.last_hour_at(59), 3);
        // Minute 0 leaves the window at minute 60.
        assert_eq!(log.last_hour_at(60), 1);
        log.record_at(95);
        assert_eq!(log.last_hour_at(95), 1);
        assert_eq!(log.total(), 4);
        assert_eq!(log.lock().len(), 1, "old minutes are dropped");
    }
}
