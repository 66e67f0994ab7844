//! Workers that are alive but useless: one whose event loop stopped sending heartbeats (a
//! `while (true) {}`, a deadlock in native code) is killed and replaced; one that grew past
//! `maxMemory` is replaced gracefully; one that threw an exception nobody caught is replaced at
//! once while it finishes what it serves. Each replacement follows the restart rule of a crash
//! (src/primary/restart.rs): a worker that was ready is always replaced, one that was not spends
//! the slot's budget. This module finds them; the loop (src/primary/supervision.rs) acts.

use std::time::{Duration, Instant};

use super::child_command::WorkerKind;
use super::options::Watchdog;
use super::slots::Slots;
use super::workers::Workers;
use super::WorkerId;
use crate::os::proc_stat;

/// How often heartbeats and memory are checked: memory is sampled at least once a second.
pub const TICK: Duration = Duration::from_millis(500);

/// A worker the watchdog found useless.
#[derive(Debug, PartialEq, Eq)]
pub enum Finding {
    /// No heartbeat for this long: its event loop is blocked. It is killed.
    Unresponsive { id: WorkerId, quiet: Duration },
    /// Its memory passed `maxMemory`: it is replaced gracefully.
    OverMemory { id: WorkerId, rss: u64, limit: u64 },
}

pub fn is_on(watchdog: &Watchdog) -> bool {
    watchdog.heartbeat_timeout.is_some() || watchdog.max_memory.is_some()
}

/// Looks at every worker serving in a slot.
pub fn check(now: Instant, watchdog: &Watchdog, workers: &Workers, slots: &Slots) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (id, w) in workers {
        let serving = w.slot.is_some_and(|s| slots.holds(s, *id));
        if w.is_leaving() || !serving {
            continue;
        }
        // Heartbeats come on the Node channel: one that closed its channel sends none.
        let heard = w.connected;
        if let (Some(timeout), Some(beat), true) = (watchdog.heartbeat_timeout, w.last_beat, heard)
        {
            let quiet = now.saturating_duration_since(beat);
            if quiet > timeout {
                findings.push(Finding::Unresponsive { id: *id, quiet });
                continue;
            }
        }
        if let Some(limit) = watchdog.max_memory.filter(|_| w.kind == WorkerKind::App) {
            if let Some(rss) = proc_stat::resident_bytes(w.pid()) {
                if rss > limit {
                    findings.push(Finding::OverMemory {
                        id: *id,
                        rss,
                        limit,
                    });
                }
            }
        }
    }
    findings
}
