//! What the primary tidies up on a slow tick, once a second: listening sockets that no current
//! worker uses (src/primary/listeners.rs) and processes that workers left behind
//! (src/primary/orphans.rs).

use std::time::{Duration, Instant};

use super::listeners::Listeners;
use super::orphans::OrphanGroups;
use super::workers::Workers;

pub const TICK: Duration = Duration::from_secs(1);
/// How long the cluster must have been fully up, and a socket unheld, before the socket closes:
/// time for every worker to ask for all of its sockets again after a restart or a reload.
pub const SOCKET_LINGER: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Housekeeping {
    /// Since when every slot has had a ready worker.
    settled_since: Option<Instant>,
}

impl Housekeeping {
    /// `settled`: every slot has its worker, ready, and nothing is being replaced, so whatever
    /// sockets the app uses, its workers have asked for them.
    pub fn tick(
        &mut self,
        now: Instant,
        settled: bool,
        listeners: &mut Listeners,
        orphans: &mut OrphanGroups,
        workers: &Workers,
    ) {
        if settled {
            let since = *self.settled_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= SOCKET_LINGER {
                listeners.sweep(now, SOCKET_LINGER);
            }
        } else {
            self.settled_since = None;
        }
        orphans.reap(workers, now);
    }
}
