//! A child process seen through a pidfd: signals can never reach a recycled pid, and its exit is
//! a readable descriptor, so there is no SIGCHLD handler to share with libuv.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::Signal;
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

pub struct ChildProcess {
    pid: Pid,
    pidfd: OwnedFd,
    reaped: AtomicBool,
}

/// How a child ended, in Node's terms: `exit(code, signal)` has exactly one of them set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<Signal>,
}

impl ExitStatus {
    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (_, Some(sig)) => sig.as_str().to_owned(),
            (Some(code), None) => code.to_string(),
            (None, None) => "?".to_owned(),
        }
    }

    /// "code 3", "signal SIGKILL": for sentences.
    pub fn describe_long(&self) -> String {
        match (self.code, self.signal) {
            (_, Some(sig)) => format!("signal {}", sig.as_str()),
            (Some(code), None) => format!("code {code}"),
            (None, None) => "an unknown status".to_owned(),
        }
    }
}

impl ChildProcess {
    /// Takes a freshly spawned child. Called before anyone could have reaped it, so the pid is
    /// still ours even if the child already exited (it stays a zombie until `reap`).
    pub fn open(pid: u32) -> io::Result<Self> {
        let pid_t = libc::pid_t::try_from(pid)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid_t, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the syscall returned a new descriptor that nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        set_cloexec(&pidfd)?;
        Ok(ChildProcess {
            pid: Pid::from_raw(pid_t),
            pidfd,
            reaped: AtomicBool::new(false),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Sends a signal. `Ok(false)` when the child is already gone, as `process.kill` reports it.
    pub fn signal(&self, signal: Signal) -> io::Result<bool> {
        if self.reaped.load(Ordering::Acquire) {
            return Ok(false);
        }
        // SAFETY: pidfd_send_signal(pidfd, sig, info = NULL, flags = 0).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ESRCH) => Ok(false),
            _ => Err(err),
        }
    }

    /// Collects the exit status once the pidfd has become readable. `None` if it has not exited.
    pub fn try_reap(&self) -> io::Result<Option<ExitStatus>> {
        let status = match waitid(
            Id::PIDFd(self.pidfd_borrowed()),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
        ) {
            Ok(s) => s,
            Err(nix::errno::Errno::EINTR) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let exit = match status {
            WaitStatus::Exited(_, code) => ExitStatus {
                code: Some(code),
                signal: None,
            },
            WaitStatus::Signaled(_, signal, _) => ExitStatus {
                code: None,
                signal: Some(signal),
            },
            WaitStatus::StillAlive => return Ok(None),
            _ => return Ok(None),
        };
        self.reaped.store(true, Ordering::Release);
        Ok(Some(exit))
    }

    fn pidfd_borrowed(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.pidfd.as_fd()
    }
}

impl AsRawFd for ChildProcess {
    fn as_raw_fd(&self) -> RawFd {
        self.pidfd.as_raw_fd()
    }
}

fn set_cloexec(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(io::Error::from)?;
    Ok(())
}

/// Parses a signal given as Node accepts it: a name (`'SIGTERM'`) or a number.
pub fn parse_signal(value: &serde_json::Value) -> Option<Signal> {
    use std::str::FromStr;
    match value {
        serde_json::Value::String(name) => Signal::from_str(name).ok(),
        serde_json::Value::Number(n) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .and_then(|n| Signal::try_from(n).ok()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    #[allow(clippy::zombie_processes)] // reaped through the pidfd, which is what is tested
    fn reaps_exit_code_and_signal() {
        let child = Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
        let p = ChildProcess::open(child.id()).unwrap();
        let status = loop {
            if let Some(s) = p.try_reap().unwrap() {
                break s;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(
            status,
            ExitStatus {
                code: Some(7),
                signal: None
            }
        );
        // Signalling a reaped child is a quiet `false`, never a signal to a recycled pid.
        assert!(!p.signal(Signal::SIGTERM).unwrap());

        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let p = ChildProcess::open(child.id()).unwrap();
        assert!(p.signal(Signal::SIGKILL).unwrap());
        let status = loop {
            if let Some(s) = p.try_reap().unwrap() {
                break s;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(status.signal, Some(Signal::SIGKILL));
        assert_eq!(status.describe(), "SIGKILL");
    }

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(
            parse_signal(&serde_json::json!("SIGINT")),
            Some(Signal::SIGINT)
        );
        assert_eq!(parse_signal(&serde_json::json!(9)), Some(Signal::SIGKILL));
        assert_eq!(parse_signal(&serde_json::json!("SIGNOPE")), None);
        assert_eq!(parse_signal(&serde_json::json!(null)), None);
    }
}
