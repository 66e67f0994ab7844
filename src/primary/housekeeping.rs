//! What the primary tidies up on a slow tick, once a second: listening sockets that no current
//! worker uses (src/primary/listeners.rs) and processes that workers left behind
//! (src/primary/orphans.rs).

use std::time::{Duration, Instant};

use super::supervisor::{Phase, Supervisor, Timer};

const TICK: Duration = Duration::from_secs(1);
/// How long the cluster must have been fully up, and a socket unheld, before the socket closes:
/// time for every worker to ask for all of its sockets again after a restart or a reload.
pub const SOCKET_LINGER: Duration = Duration::from_secs(10);

impl Supervisor {
    pub(super) fn start_housekeeping(&self) {
        self.after(TICK, Timer::Housekeeping);
    }

    pub(super) fn on_housekeeping(&mut self) {
        let now = Instant::now();
        self.sweep_listeners(now);
        self.reap_orphans();
        // After a stop, only until what the workers left behind has been reaped.
        if self.phase != Phase::Stopped || self.orphan_groups.pending() {
            self.after(TICK, Timer::Housekeeping);
        }
    }

    fn sweep_listeners(&mut self, now: Instant) {
        if !self.settled() {
            self.settled_since = None;
            return;
        }
        let since = *self.settled_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= SOCKET_LINGER {
            self.listeners.sweep(now, SOCKET_LINGER);
        }
    }

    /// Every slot has its worker, ready, and nothing is being replaced: whatever sockets the
    /// app uses, its workers have asked for them.
    fn settled(&self) -> bool {
        self.phase == Phase::Running
            && self.reload.is_none()
            && self.slots.iter().filter(|s| !s.retired).all(|s| {
                s.incoming.is_none()
                    && s.current
                        .and_then(|id| self.workers.get(&id))
                        .is_some_and(|w| w.ready && !w.leaving)
            })
    }
}
