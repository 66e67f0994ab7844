//! A small process that outlives the primary, so that a primary killed with SIGKILL still takes
//! its workers' trees with it.
//!
//! The workers die with the primary (PR_SET_PDEATHSIG), but what they started does not: the
//! signal reaches direct children only. The guard is forked (without exec) when a supervised
//! cluster starts; the primary tells it, over a pipe, which process groups are its workers'. When
//! the pipe closes, because the primary stopped or died, the guard SIGKILLs every group it still
//! knows and exits. Between fork and exit it makes raw system calls only: the primary has other
//! threads, and no lock or allocator state can be trusted in a forked copy of it.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// Process groups the guard can remember at once; a cluster has at most a few hundred workers.
const MAX_GROUPS: usize = 4096;

pub struct Guard {
    pid: i32,
    /// The primary's end of the pipe; closing it (drop) tells the guard to act and exit.
    to_guard: Option<OwnedFd>,
}

impl Guard {
    pub fn start() -> io::Result<Guard> {
        let (from_primary, to_guard) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // A guard that stops reading must never block the supervisor: records are dropped
        // instead (the guard then misses a group, the cluster runs on).
        crate::os::fd_socket::set_nonblocking(std::os::fd::AsFd::as_fd(&to_guard))?;
        let keep = from_primary.as_raw_fd();
        // SAFETY: fork in a threaded process; the child runs only `guard_main`, which makes raw
        // system calls on data prepared before the fork and never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: in the forked child, see above.
            unsafe { guard_main(keep) }
        }
        drop(from_primary);
        Ok(Guard {
            pid,
            to_guard: Some(to_guard),
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A worker's process group to end if the primary dies.
    pub fn watch(&mut self, pgid: i32) {
        self.send(pgid);
    }

    /// A group that is empty now: its number may be reused by somebody else's group.
    pub fn forget(&mut self, pgid: i32) {
        self.send(-pgid);
    }

    fn send(&mut self, record: i32) {
        if let Some(fd) = &self.to_guard {
            // Four bytes are written whole or not at all on a pipe.
            let _ = nix::unistd::write(fd, &record.to_ne_bytes());
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        drop(self.to_guard.take());
        // The guard exits at once on end-of-file; collect it so that it is not left a zombie.
        // SAFETY: waitpid on our own child; the status pointer may be null.
        unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), 0) };
    }
}

/// The guard's whole life, in the forked child.
///
/// # Safety
/// Only in a child just forked by `Guard::start`.
unsafe fn guard_main(from_primary: libc::c_int) -> ! {
    // Ctrl-C on the terminal reaches the guard too; it must outlast the primary's graceful stop.
    for sig in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGPIPE,
    ] {
        libc::signal(sig, libc::SIG_IGN);
    }
    // Every descriptor but the pipe: a listening socket or a worker's channel kept open here
    // would outlive the primary.
    close_all_but(from_primary);
    libc::prctl(
        libc::PR_SET_NAME,
        c"rcluster-guard".as_ptr() as libc::c_ulong,
        0,
        0,
        0,
    );
    let mut groups = [0i32; MAX_GROUPS];
    let mut count = 0usize;
    let mut buf = [0u8; 1024];
    let mut have = 0usize;
    loop {
        let n = libc::read(
            from_primary,
            buf.as_mut_ptr().add(have).cast(),
            buf.len() - have,
        );
        if n < 0 && *libc::__errno_location() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            break;
        }
        have += n as usize;
        let whole = have - have % 4;
        for chunk in buf[..whole].chunks_exact(4) {
            let record = i32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let pgid = record.wrapping_abs();
            let at = groups[..count].iter().position(|g| *g == pgid);
            match (record > 0, at) {
                (true, None) if count < MAX_GROUPS => {
                    groups[count] = pgid;
                    count += 1;
                }
                (false, Some(i)) => {
                    count -= 1;
                    groups[i] = groups[count];
                }
                _ => {}
            }
        }
        buf.copy_within(whole..have, 0);
        have -= whole;
    }
    for pgid in &groups[..count] {
        if *pgid > 1 {
            libc::kill(-*pgid, libc::SIGKILL);
        }
    }
    libc::_exit(0)
}

unsafe fn close_all_but(keep: libc::c_int) {
    let ranges = [(0, keep - 1), (keep + 1, libc::c_int::MAX)];
    for (first, last) in ranges {
        if first > last {
            continue;
        }
        if libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            last as libc::c_uint,
            0,
        ) != 0
        {
            // Older kernels: the usual limit is enough for a process that opened few.
            for fd in first..=last.min(65_535) {
                libc::close(fd);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};

    #[test]
    fn the_guard_ends_the_groups_it_knows_when_the_pipe_closes() {
        let mut watched = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let mut forgotten = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let mut guard = Guard::start().unwrap();
        guard.watch(watched.id() as i32);
        guard.watch(forgotten.id() as i32);
        guard.forget(forgotten.id() as i32);
        drop(guard);
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(s) = watched.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the watched group was not killed"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(
            forgotten.try_wait().unwrap().is_none(),
            "a forgotten group lives on"
        );
        forgotten.kill().unwrap();
        forgotten.wait().unwrap();
    }
}
