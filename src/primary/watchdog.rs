//! Workers that are alive but useless: one whose event loop stopped sending heartbeats (a
//! `while (true) {}`, a deadlock in native code) is killed and replaced; one that grew past
//! `maxMemory` is replaced gracefully; one that threw an exception nobody caught is replaced at
//! once while it finishes what it serves. Each replacement follows the restart rule of a crash
//! (src/primary/restart.rs): a worker that was ready is always replaced, one that was not spends
//! the slot's budget.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::child_command::WorkerKind;
use super::events::WorkerId;
use super::supervisor::{Phase, Supervisor, Timer};
use crate::errors;

/// How often heartbeats and memory are checked: memory is sampled at least once a second.
const TICK: Duration = Duration::from_millis(500);

impl Supervisor {
    pub(super) fn start_watchdog(&self) {
        let watching = self.options().is_some_and(|o| {
            o.watchdog.heartbeat_timeout.is_some() || o.watchdog.max_memory.is_some()
        });
        if watching {
            self.after(TICK, Timer::Watchdog);
        }
    }

    pub(super) fn on_watchdog(&mut self) {
        if !matches!(self.phase, Phase::Starting | Phase::Running) {
            return;
        }
        let Some(watchdog) = self.options().map(|o| o.watchdog) else {
            return;
        };
        let now = Instant::now();
        let mut silent = Vec::new();
        let mut heavy = Vec::new();
        for (id, w) in &self.workers {
            let in_slot = w
                .slot
                .and_then(|s| self.slots.get(s))
                .is_some_and(|s| s.current == Some(*id));
            if w.leaving || !in_slot {
                continue;
            }
            if let (Some(timeout), Some(beat)) = (watchdog.heartbeat_timeout, w.last_beat) {
                let quiet = now.saturating_duration_since(beat);
                if quiet > timeout {
                    silent.push((*id, quiet));
                    continue;
                }
            }
            if let Some(limit) = watchdog.max_memory.filter(|_| w.kind == WorkerKind::App) {
                if let Some(rss) = resident_bytes(w.process.pid()) {
                    if rss > limit {
                        heavy.push((*id, rss, limit));
                    }
                }
            }
        }
        for (id, quiet) in silent {
            self.replace_unresponsive(id, quiet);
        }
        for (id, rss, limit) in heavy {
            let pid = self.workers.get(&id).map_or(0, |w| w.process.pid());
            self.replace_gracefully(
                id,
                errors::MEMORY_LIMIT,
                format!(
                    "worker {id} (pid {pid}) uses {} MiB of memory, over maxMemory ({} MiB)",
                    rss >> 20,
                    limit >> 20
                ),
                "memory limit",
                true,
            );
        }
        self.after(TICK, Timer::Watchdog);
    }

    /// The child runtime reported an exception nobody caught. The worker has stopped accepting
    /// and finishes what it serves on its own; its replacement starts now.
    pub(super) fn on_uncaught_exception(&mut self, id: WorkerId, error: &str) {
        let pid = self.workers.get(&id).map_or(0, |w| w.process.pid());
        let first_line = error.lines().next().unwrap_or("");
        self.replace_gracefully(
            id,
            errors::UNCAUGHT_EXCEPTION,
            format!("worker {id} (pid {pid}) threw an uncaught exception: {first_line}"),
            "uncaught exception",
            false,
        );
    }

    /// A blocked event loop cannot finish anything: the worker is killed at once.
    fn replace_unresponsive(&mut self, id: WorkerId, quiet: Duration) {
        let Some(slot) = self.detach(id) else {
            return;
        };
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        w.leaving = true;
        let was_ready = w.ready;
        let _ = w.process.signal(Signal::SIGKILL);
        let message = format!(
            "worker {id} (pid {}) is unresponsive: no heartbeat from its event loop for {} ms; killed, a replacement is starting",
            w.process.pid(),
            quiet.as_millis()
        );
        self.warn(Some(id), errors::UNRESPONSIVE, message);
        self.on_slot_vacated(slot, "unresponsive".into(), was_ready);
    }

    /// Its replacement starts now (within the restart budget); the worker itself leaves
    /// gracefully, asked to if `ask`, and is killed after `killTimeout` if it has not.
    fn replace_gracefully(
        &mut self,
        id: WorkerId,
        code: &'static str,
        message: String,
        exit: &str,
        ask: bool,
    ) {
        let Some(slot) = self.detach(id) else {
            return;
        };
        let was_ready = self.workers.get(&id).is_some_and(|w| w.ready);
        self.warn(
            Some(id),
            code,
            format!("{message}; it finishes what it serves while a replacement starts"),
        );
        if ask {
            self.retire(id);
        } else if let Some(w) = self.workers.get_mut(&id) {
            w.leaving = true;
            w.disconnecting = true;
            self.after(self.kill_timeout(), Timer::KillIfAlive { id });
        }
        self.on_slot_vacated(slot, exit.into(), was_ready);
    }

    /// Takes a working worker out of its slot; None if it is not one (already leaving, a reload's
    /// replacement, the Node-compatible primary's).
    fn detach(&mut self, id: WorkerId) -> Option<usize> {
        let w = self.workers.get(&id)?;
        if w.leaving || !matches!(self.phase, Phase::Starting | Phase::Running) {
            return None;
        }
        let slot = w.slot?;
        let s = self.slots.get_mut(slot)?;
        if s.current != Some(id) {
            return None;
        }
        s.current = None;
        Some(slot)
    }
}

/// The resident set size of a process, from /proc/<pid>/statm (in pages).
fn resident_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(4096);
    Some(pages * page_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_memory() {
        let rss = resident_bytes(std::process::id()).unwrap_or(0);
        assert!(rss > 1 << 20, "{rss}");
        assert_eq!(resident_bytes(u32::MAX), None);
    }
}
