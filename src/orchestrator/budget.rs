//! The host's capacity, shared by every pool of one krunner: vCPUs and RAM that guests may
//! take in all (`--host-cpus`, `--host-memory`). A guest takes a [`Lease`] of its size before
//! it starts and gives it back when it ends, so a burst on one pool can use what the others
//! leave idle, and gets it back to them when it is over.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// What a guest takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// vCPUs.
    pub cpus: u32,
    /// RAM in MiB.
    pub memory_mib: u64,
}

/// The host's capacity and what leases hold of it.
#[derive(Debug)]
pub struct Budget {
    total: Size,
    used: Mutex<Size>,
    freed: Notify,
}

/// A guest's share of the budget; given back when dropped.
#[derive(Debug)]
pub struct Lease {
    budget: Arc<Budget>,
    size: Size,
}

impl Budget {
    /// A budget of `total`.
    pub fn new(total: Size) -> Arc<Budget> {
        Arc::new(Budget {
            total,
            used: Mutex::new(Size {
                cpus: 0,
                memory_mib: 0,
            }),
            freed: Notify::new(),
        })
    }

    /// What the host has, less a reserve for itself (one CPU of four or more, and 1 GiB or
    /// an eighth of the RAM, whichever is more).
    pub fn host_default() -> Size {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        let mem = nix::sys::sysinfo::sysinfo()
            .map(|i| i.ram_total() / (1024 * 1024))
            .unwrap_or(4096);
        Size {
            cpus: if cpus >= 4 { cpus - 1 } else { cpus },
            memory_mib: mem.saturating_sub((mem / 8).max(1024)).max(256),
        }
    }

    /// The whole budget.
    pub fn total(&self) -> Size {
        self.total
    }

    fn used(&self) -> std::sync::MutexGuard<'_, Size> {
        self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A lease of `size`, if that much is free.
    pub fn try_take(self: &Arc<Budget>, size: Size) -> Option<Lease> {
        let mut used = self.used();
        if used.cpus + size.cpus > self.total.cpus
            || used.memory_mib + size.memory_mib > self.total.memory_mib
        {
            return None;
        }
        used.cpus += size.cpus;
        used.memory_mib += size.memory_mib;
        Some(Lease {
            budget: self.clone(),
            size,
        })
    }

    /// How many more guests of `size` fit now.
    pub fn fits(&self, size: Size) -> u32 {
        let used = *self.used();
        let by_cpu = (self.total.cpus - used.cpus.min(self.total.cpus))
            .checked_div(size.cpus)
            .unwrap_or(u32::MAX);
        let by_mem = (self.total.memory_mib - used.memory_mib.min(self.total.memory_mib))
            .checked_div(size.memory_mib)
            .map_or(u32::MAX, |n| u32::try_from(n).unwrap_or(u32::MAX));
        by_cpu.min(by_mem)
    }

    /// Waits until some lease is given back.
    pub async fn freed(&self) {
        self.freed.notified().await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut used = self.budget.used();
        used.cpus = used.cpus.saturating_sub(self.size.cpus);
        used.memory_mib = used.memory_mib.saturating_sub(self.size.memory_mib);
        drop(used);
        self.budget.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_take_and_give_back() {
        let b = Budget::new(Size {
            cpus: 4,
            memory_mib: 8192,
        });
        let small = Size {
            cpus: 1,
            memory_mib: 2048,
        };
        let big = Size {
            cpus: 2,
            memory_mib: 6144,
        };
        assert_eq!(b.fits(small), 4);
        let a = b.try_take(big).unwrap();
        assert_eq!(b.fits(small), 1, "memory binds: 2 GiB left");
        assert!(b.try_take(big).is_none());
        let s = b.try_take(small).unwrap();
        assert!(b.try_take(small).is_none());
        drop(a);
        assert_eq!(b.fits(small), 3);
        drop(s);
        assert_eq!(b.fits(big), 1);
        assert!(Budget::host_default().cpus >= 1);
    }
}
