//! An event's evaluation budget, counted in the CPU time of the thread evaluating it.
//!
//! The budget exists so that a crafted event (thousands of containers, deep bodies) cannot
//! slow a detector without bound: past it, the rules not yet evaluated are skipped and an alert
//! says which. Wall-clock time would also count the moments the thread was not running — a
//! detector sharing two cores with a broker under load is descheduled for tens of milliseconds
//! at a time — and so skip rules on ordinary events. The thread's CPU clock only counts the
//! event's own work. Reading it costs a system call (about 0.3 µs, against 0.03 µs for the
//! monotonic clock), so it is read at the event's start and, afterwards, only once the wall
//! clock says the budget could be spent (CPU time never runs ahead of wall time).

use std::time::{Duration, Instant};

/// One event's budget, started when its evaluation starts.
pub struct Budget {
    limit: Duration,
    wall: Instant,
    cpu: Option<Duration>,
}

impl Budget {
    pub fn start(limit: Duration) -> Budget {
        Budget {
            limit,
            wall: Instant::now(),
            cpu: thread_cpu_time(),
        }
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Whether the event has used its budget of this thread's CPU time (of wall time where the
    /// platform has no thread clock).
    pub fn spent(&self) -> bool {
        if self.wall.elapsed() < self.limit {
            return false;
        }
        match (self.cpu, thread_cpu_time()) {
            (Some(start), Some(now)) => now.saturating_sub(start) >= self.limit,
            _ => true,
        }
    }
}

#[cfg(unix)]
fn thread_cpu_time() -> Option<Duration> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Some(Duration::new(t.tv_sec as u64, t.tv_nsec as u32))
}

#[cfg(not(unix))]
fn thread_cpu_time() -> Option<Duration> {
    None
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn time_spent_off_the_cpu_does_not_count() {
        let budget = Budget::start(Duration::from_millis(20));
        // Waiting (as a descheduled thread does) passes the wall clock, not the budget.
        std::thread::sleep(Duration::from_millis(60));
        assert!(!budget.spent());
        // Work does.
        let mut x = 0u64;
        while !budget.spent() {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let cpu = thread_cpu_time().unwrap() - budget.cpu.unwrap();
        assert!(cpu >= Duration::from_millis(20), "{cpu:?}");
    }

    #[test]
    fn a_zero_budget_is_spent_at_once() {
        assert!(Budget::start(Duration::ZERO).spent());
    }
}
