//! Processes that workers leave behind.
//!
//! Every supervised worker leads its own process group, and what it starts stays in that group
//! unless it moves out on purpose (`setsid`, `detached: true`). So a worker's tree is its group:
//! - when a worker exits, its group gets SIGTERM, and SIGKILL `killTimeout` later (or when the
//!   cluster has stopped) if anything of it is left;
//! - if the primary itself is killed, a guard process (src/primary/guard.rs) SIGKILLs the groups;
//! - the primary is a child subreaper (`PR_SET_CHILD_SUBREAPER`), so a process orphaned inside a
//!   worker's tree becomes its child rather than init's, and is reaped here. When the primary is
//!   PID 1 (a container without an init), so is any other child nobody reaps, once it has been a
//!   zombie for a while. Elsewhere such a child is left alone: it may be one of the primary's
//!   JavaScript's own, whose exit status is libuv's to take, even when its event loop is busy.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::events::EventQueue;
use super::guard::Guard;
use super::workers::Workers;
use crate::os::proc_stat;

/// How long a zombie child that belongs to no worker stays before a primary that is PID 1 reaps it.
const UNKNOWN_ZOMBIE_GRACE: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct OrphanGroups {
    /// Groups of exited workers that may still have members, with when SIGKILL is due.
    left: HashMap<i32, Instant>,
    /// Zombie children of no worker's group, with when they were first seen.
    unknown_zombies: HashMap<i32, Instant>,
    guard: Option<Guard>,
    /// Whether this cluster counts in SUBREAPING_CLUSTERS.
    subreaping: bool,
}

impl OrphanGroups {
    /// Groups of exited workers that still have members.
    pub fn pending(&self) -> bool {
        !self.left.is_empty()
    }

    pub fn guard(&mut self) -> Option<&mut Guard> {
        self.guard.as_mut()
    }
}

/// Supervised clusters running in this process: the process is a subreaper while there is one,
/// and gives the role back after, so that a primary script's own children are left as they were.
static SUBREAPING_CLUSTERS: AtomicUsize = AtomicUsize::new(0);

fn set_subreaper(on: bool) -> std::io::Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, n) takes no pointers.
    if unsafe {
        libc::prctl(
            libc::PR_SET_CHILD_SUBREAPER,
            libc::c_ulong::from(on),
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl OrphanGroups {
    /// At start: orphans of the workers' trees come to us, and a guard ends the trees if we die.
    pub fn guard_worker_trees(&mut self, events: &EventQueue) {
        if SUBREAPING_CLUSTERS.fetch_add(1, Ordering::AcqRel) == 0 {
            if let Err(e) = set_subreaper(true) {
                events.warn(
                    None,
                    crate::errors::SPAWN_FAILED,
                    format!("cannot become the reaper of the workers' orphans: {e}"),
                );
            }
        }
        self.subreaping = true;
        match Guard::start() {
            Ok(guard) => self.guard = Some(guard),
            Err(e) => events.warn(
                None,
                crate::errors::SPAWN_FAILED,
                format!("cannot start the guard that ends the workers' processes if the primary dies: {e}"),
            ),
        }
    }

    /// A worker (a group leader) exited: what it started is told to go.
    /// `kill_timeout`: how long its members get before SIGKILL.
    pub fn worker_group_left(&mut self, pid: u32, now: Instant, kill_timeout: Duration) {
        let Ok(pgid) = i32::try_from(pid) else {
            return;
        };
        let pgid_pid = Pid::from_raw(pgid);
        // ESRCH: the group is empty, the worker started nothing that is still running.
        if killpg(pgid_pid, Signal::SIGTERM).is_ok() {
            self.left.insert(pgid, now + kill_timeout);
        } else if let Some(guard) = self.guard() {
            guard.forget(pgid);
        }
    }

    /// The cluster has stopped: nothing of a worker's tree may outlive it.
    pub fn end(&mut self, workers: &Workers, now: Instant) {
        for pgid in self.left.keys() {
            let _ = killpg(Pid::from_raw(*pgid), Signal::SIGKILL);
        }
        self.reap(workers, now);
        // Closing its pipe, the guard kills whatever is left and exits; it is collected here.
        self.guard = None;
        if std::mem::take(&mut self.subreaping)
            && SUBREAPING_CLUSTERS.fetch_sub(1, Ordering::AcqRel) == 1
        {
            let _ = set_subreaper(false);
        }
    }

    /// On the housekeeping tick: SIGKILL what outstayed its group's deadline, reap what exited.
    pub fn reap(&mut self, workers: &Workers, now: Instant) {
        let mut empty = Vec::new();
        for (pgid, due) in &self.left {
            let group = Pid::from_raw(*pgid);
            if now >= *due {
                let _ = killpg(group, Signal::SIGKILL);
            }
            reap_group(*pgid);
            // A group id stays ours only while the group has members: once it is empty, the
            // number may come back as somebody else's group.
            if killpg(group, None) == Err(Errno::ESRCH) {
                empty.push(*pgid);
            }
        }
        for pgid in empty {
            self.left.remove(&pgid);
            if let Some(guard) = self.guard() {
                guard.forget(pgid);
            }
        }
        self.reap_zombie_children(workers, now);
    }

    fn reap_zombie_children(&mut self, workers: &Workers, now: Instant) {
        let workers: BTreeSet<i32> = workers.values().map(|w| w.pid() as i32).collect();
        let guard = self.guard.as_ref().map(Guard::pid);
        // Only PID 1 takes children of no worker, so only it needs to know how long they waited.
        let init = std::process::id() == 1;
        let mut seen = HashMap::new();
        for pid in zombie_children() {
            // A worker and the guard are reaped through their pidfds.
            if workers.contains(&pid) || Some(pid) == guard {
                continue;
            }
            let of_a_worker = process_group(pid)
                .is_some_and(|g| workers.contains(&g) || self.left.contains_key(&g));
            let abandoned = init && {
                let first_seen = *self.unknown_zombies.get(&pid).unwrap_or(&now);
                seen.insert(pid, first_seen);
                now.saturating_duration_since(first_seen) >= UNKNOWN_ZOMBIE_GRACE
            };
            if of_a_worker || abandoned {
                seen.remove(&pid);
                let _ = waitid(
                    Id::Pid(Pid::from_raw(pid)),
                    WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
                );
            }
        }
        self.unknown_zombies = seen;
    }
}

/// Reaps the exited children of one process group (orphans the primary adopted).
fn reap_group(pgid: i32) {
    loop {
        match waitid(
            Id::PGid(Pid::from_raw(pgid)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
        ) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// This process's children that have exited and wait to be reaped.
fn zombie_children() -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut zombies = Vec::new();
    for task in tasks.flatten() {
        let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            if stat_fields(pid).is_some_and(|f| f.first() == Some(&"Z".to_string())) {
                zombies.push(pid);
            }
        }
    }
    zombies
}

fn process_group(pid: i32) -> Option<i32> {
    proc_stat::process_group(u32::try_from(pid).ok()?)
}

fn stat_fields(pid: i32) -> Option<Vec<String>> {
    proc_stat::stat_fields(u32::try_from(pid).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::zombie_processes)] // reaped through its group, which is what is tested
    fn a_group_is_reaped_once_its_members_exit() {
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 0"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !zombie_children().contains(&pgid) {
            assert!(Instant::now() < deadline, "the child never became a zombie");
            std::thread::sleep(Duration::from_millis(5));
        }
        reap_group(pgid);
        assert!(!zombie_children().contains(&pgid));
        assert_eq!(killpg(Pid::from_raw(pgid), None), Err(Errno::ESRCH));
    }
}
