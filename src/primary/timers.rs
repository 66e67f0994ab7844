//! The loop's one timer queue. Every delayed decision of the primary (a restart's backoff, a
//! readiness deadline, a kill after `killTimeout`, the watchdog's tick) is an entry here, fired by
//! the loop itself: no task per timer, and a test with a paused clock sees them all.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::WorkerId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    /// A worker asked to leave has had `killTimeout`.
    KillIfAlive { id: WorkerId },
    /// An exited child's messenger channel had time to drain (src/primary/messenger.rs).
    MessengerDrained { id: WorkerId },
    /// Messages wait for the namespace's agent (src/primary/messenger/agent_across_hosts.rs).
    LookForAgent,
    /// The supervised cluster's (src/primary/supervision.rs).
    Supervision(Due),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// A slot's restart backoff is over; `generation` tells a stale one from the current one.
    Restart {
        slot: usize,
        generation: u64,
    },
    ReadyDeadline {
        id: WorkerId,
    },
    StopDeadline,
    /// A worker's Node channel closed unasked a moment ago: if it has not exited meanwhile (a
    /// dying process closes its channel too), it disconnected itself.
    ChannelClosed {
        id: WorkerId,
    },
    /// Check heartbeats and memory (src/primary/watchdog.rs).
    Watchdog,
    /// Close unused sockets, reap orphans (src/primary/housekeeping.rs).
    Housekeeping,
}

/// Now, on tokio's clock: the same as the system's, except under a test's paused clock.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

#[derive(Default)]
pub struct Timers {
    /// By due time, then by the order they were set in.
    due: BTreeMap<(Instant, u64), Timer>,
    next_seq: u64,
}

impl Timers {
    pub fn after(&mut self, delay: Duration, timer: Timer) {
        let at = now() + delay;
        self.due.insert((at, self.next_seq), timer);
        self.next_seq += 1;
    }

    /// When the loop must wake next, if anything is set.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.keys().next().map(|(at, _)| *at)
    }

    /// The first timer whose time has come, in due order.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let entry = self.due.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        Some(entry.remove())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn timers_fire_in_due_order_then_in_the_order_they_were_set() {
        let mut timers = Timers::default();
        let kill = |id| Timer::KillIfAlive { id };
        timers.after(Duration::from_millis(20), kill(1));
        timers.after(Duration::from_millis(10), kill(2));
        timers.after(Duration::from_millis(10), kill(3));
        assert_eq!(timers.pop_due(now()), None);
        tokio::time::advance(Duration::from_millis(10)).await;
        assert_eq!(timers.pop_due(now()), Some(kill(2)));
        assert_eq!(timers.pop_due(now()), Some(kill(3)));
        assert_eq!(timers.pop_due(now()), None);
        assert!(timers.next_due().is_some_and(|at| at > now()));
        tokio::time::advance(Duration::from_millis(10)).await;
        assert_eq!(timers.pop_due(now()), Some(kill(1)));
        assert_eq!(timers.next_due(), None);
    }
}
