//! Starts child processes. Every child is forked by one thread that lives as long as the primary
//! process, because PR_SET_PDEATHSIG fires when the *thread* that forked a child exits: forked from
//! here, a child is killed exactly when the primary process dies, even if it is too busy to notice
//! its IPC channel closing.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{mpsc, OnceLock};

use super::process::ChildProcess;

/// Extra descriptors a child may get beside stdio (Node allows arbitrary `stdio` arrays).
pub const MAX_EXTRA_FDS: usize = 64;

pub enum StdioSlot {
    Inherit,
    Null,
    Fd(OwnedFd),
}

pub struct ChildCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The complete environment; nothing is inherited implicitly.
    pub env: Vec<(OsString, OsString)>,
    pub cwd: PathBuf,
    pub stdin: StdioSlot,
    pub stdout: StdioSlot,
    pub stderr: StdioSlot,
    /// `(number in the child, descriptor here)`; numbers are 3 and up.
    pub fds: Vec<(RawFd, OwnedFd)>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Own process group, so a terminal's Ctrl-C reaches only the primary, which stops gracefully.
    pub own_process_group: bool,
}

struct Job {
    command: ChildCommand,
    reply: tokio::sync::oneshot::Sender<io::Result<ChildProcess>>,
}

static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();

fn spawner() -> io::Result<&'static mpsc::Sender<Job>> {
    if let Some(tx) = SPAWNER.get() {
        return Ok(tx);
    }
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("rcluster-spawner".into())
        .spawn(move || {
            // Runs until the process ends: the static sender is never dropped.
            for job in rx {
                let _ = job.reply.send(spawn_here(job.command));
            }
        })?;
    // If another thread won the race, its spawner serves everyone and ours ends with its sender.
    let _ = SPAWNER.set(tx);
    SPAWNER
        .get()
        .ok_or_else(|| io::Error::other("spawner unavailable"))
}

fn submit(
    command: ChildCommand,
) -> io::Result<tokio::sync::oneshot::Receiver<io::Result<ChildProcess>>> {
    if command.fds.len() > MAX_EXTRA_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("at most {MAX_EXTRA_FDS} extra descriptors"),
        ));
    }
    let (reply, rx) = tokio::sync::oneshot::channel();
    spawner()?
        .send(Job { command, reply })
        .map_err(|_| io::Error::other("spawner thread is gone"))?;
    Ok(rx)
}

/// From a thread outside the async runtime (the JavaScript thread).
pub fn spawn_blocking(command: ChildCommand) -> io::Result<ChildProcess> {
    submit(command)?
        .blocking_recv()
        .map_err(|_| io::Error::other("spawner thread is gone"))?
}

/// From the supervisor's tasks.
pub async fn spawn(command: ChildCommand) -> io::Result<ChildProcess> {
    submit(command)?
        .await
        .map_err(|_| io::Error::other("spawner thread is gone"))?
}

fn stdio(slot: StdioSlot) -> Stdio {
    match slot {
        StdioSlot::Inherit => Stdio::inherit(),
        StdioSlot::Null => Stdio::null(),
        StdioSlot::Fd(fd) => Stdio::from(fd),
    }
}

fn spawn_here(command: ChildCommand) -> io::Result<ChildProcess> {
    let ChildCommand {
        program,
        args,
        env,
        cwd,
        stdin,
        stdout,
        stderr,
        fds,
        uid,
        gid,
        own_process_group,
    } = command;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env)
        .current_dir(cwd)
        .stdin(stdio(stdin))
        .stdout(stdio(stdout))
        .stderr(stdio(stderr));
    if let Some(uid) = uid {
        cmd.uid(uid);
    }
    if let Some(gid) = gid {
        cmd.gid(gid);
    }
    if own_process_group {
        cmd.process_group(0);
    }
    let moves: Vec<(RawFd, RawFd)> = fds.iter().map(|(to, fd)| (*to, fd.as_raw_fd())).collect();
    let above = moves.iter().map(|(to, _)| *to).max().unwrap_or(2) + 1;
    let mut kept: Vec<RawFd> = moves.iter().map(|(to, _)| *to).collect();
    kept.sort_unstable();
    let parent = std::process::id();
    let max_signal = libc::SIGRTMAX();
    let max_fd = descriptor_limit();
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (signal, fcntl, dup2, close_range, prctl, getppid, raise) on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            prepare_child(&moves, above, parent, max_signal)?;
            close_on_exec_except(&kept, max_fd);
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let process = ChildProcess::open(child.id());
    // The descriptors meant for the child close here, in the primary, once it has them.
    drop(fds);
    process
}

/// The highest descriptor number this process may have, for the fallback below.
fn descriptor_limit() -> RawFd {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft.min(1 << 20) as RawFd)
}

/// In the forked child: every descriptor from 3 up that the child is not meant to have closes at
/// exec. The primary's process may hold descriptors without CLOEXEC that it inherited (from a
/// shell, a supervisor, a library); a worker, which is untrusted code, must not get them.
/// Node's primary passes them on; here a child gets exactly its stdio and the descriptors placed
/// for it (`stdio` entries, its channels).
fn close_on_exec_except(kept: &[RawFd], max_fd: RawFd) {
    let mut from: RawFd = 3;
    for &fd in kept.iter().chain(std::iter::once(&RawFd::MAX)) {
        if fd < from {
            continue;
        }
        if fd > from {
            mark_close_on_exec(from, fd - 1, max_fd);
        }
        from = fd.saturating_add(1);
    }
}

fn mark_close_on_exec(first: RawFd, last: RawFd, max_fd: RawFd) {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC (Linux 5.11) only sets flags in our table.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            last as libc::c_uint,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return;
    }
    // Older kernels: one descriptor at a time, up to the descriptor limit.
    for fd in first..=last.min(max_fd) {
        // SAFETY: fcntl(F_SETFD) takes no pointers; EBADF for a closed number is harmless.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// In the forked child, before exec.
fn prepare_child(
    moves: &[(RawFd, RawFd)],
    above: RawFd,
    parent: u32,
    max_signal: libc::c_int,
) -> io::Result<()> {
    // Start from default signal dispositions, as libuv does for Node's children: an ignored signal
    // in the primary would otherwise stay ignored across exec. glibc refuses its two reserved
    // real-time signals here (and sets them up itself in every new process).
    for sig in 1..=max_signal {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: signal() is async-signal-safe.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    // First copy every descriptor above all target numbers, then into place, so that a source
    // that happens to sit on another's target number is never overwritten. dup2 clears CLOEXEC.
    let mut temps = [0 as RawFd; MAX_EXTRA_FDS];
    for (i, (_, from)) in moves.iter().enumerate() {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor we own.
        let t = unsafe { libc::fcntl(*from, libc::F_DUPFD_CLOEXEC, above) };
        if t < 0 {
            return Err(io::Error::last_os_error());
        }
        temps[i] = t;
    }
    for (i, (to, _)) in moves.iter().enumerate() {
        // SAFETY: dup2 onto a number the child is meant to have.
        if unsafe { libc::dup2(temps[i], *to) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // An inherited stdio descriptor may be close-on-exec in the primary (libuv marks the pipes it
    // opens for process.stdout so): clear the flag, as libuv does for Node's children, or the
    // child would start with its stdout closed. Rust's Stdio has set up 0-2 before this runs.
    for fd in 0..=2 {
        // SAFETY: fcntl(F_SETFD) takes no pointers; EBADF for a closed descriptor is harmless.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    }
    // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid() take no pointers.
    unsafe {
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        // The primary may have died between fork and prctl: then nobody would send the signal.
        if libc::getppid() as u32 != parent {
            libc::raise(libc::SIGKILL);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn command(script: &str) -> ChildCommand {
        ChildCommand {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("GREETING".into(), "hi".into()),
            ],
            cwd: std::env::temp_dir(),
            stdin: StdioSlot::Null,
            stdout: StdioSlot::Inherit,
            stderr: StdioSlot::Inherit,
            fds: vec![],
            uid: None,
            gid: None,
            own_process_group: false,
        }
    }

    fn wait(p: &ChildProcess) -> super::super::process::ExitStatus {
        loop {
            if let Some(s) = p.try_reap().unwrap() {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn descriptors_land_on_their_numbers_even_when_they_overlap() {
        // Two pipes whose write ends we ask for at 3 and 4; whatever numbers they have here.
        let (mut r1, w1) = std::io::pipe().unwrap();
        let (mut r2, w2) = std::io::pipe().unwrap();
        let mut cmd = command("echo three >&3; echo four >&4; echo $GREETING >&3");
        cmd.fds = vec![(4, OwnedFd::from(w2)), (3, OwnedFd::from(w1))];
        let p = spawn_blocking(cmd).unwrap();
        assert_eq!(wait(&p).code, Some(0));
        let (mut a, mut b) = (String::new(), String::new());
        r1.read_to_string(&mut a).unwrap();
        r2.read_to_string(&mut b).unwrap();
        assert_eq!(a, "three\nhi\n");
        assert_eq!(b, "four\n");
    }

    #[test]
    fn inherited_descriptors_stay_behind_unless_placed() {
        // A descriptor of ours without CLOEXEC, as a shell or a supervisor may leave one.
        let (mut r, w) = std::io::pipe().unwrap();
        let (_leak_r, leak_w) = std::io::pipe().unwrap();
        let leaked = leak_w.as_raw_fd();
        nix::fcntl::fcntl(
            &leak_w,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .unwrap();
        let mut cmd = command(&format!(
            "if [ -e /proc/self/fd/{leaked} ]; then echo leaked >&3; else echo kept-out >&3; fi"
        ));
        cmd.fds = vec![(3, OwnedFd::from(w))];
        let p = spawn_blocking(cmd).unwrap();
        assert_eq!(wait(&p).code, Some(0));
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        assert_eq!(out, "kept-out\n");
    }

    #[test]
    fn a_missing_program_is_an_error_not_a_child() {
        let mut cmd = command("true");
        cmd.program = "/nonexistent/node".into();
        assert!(spawn_blocking(cmd).is_err());
    }

    #[test]
    fn children_start_with_default_signal_dispositions() {
        // The kernel's mask of ignored signals, as the child's own child (grep) sees it.
        let (mut r, w) = std::io::pipe().unwrap();
        let mut cmd = command("grep SigIgn /proc/self/status >&3");
        cmd.fds = vec![(3, OwnedFd::from(w))];
        // SAFETY: a test-only change to this process's disposition of SIGUSR2.
        unsafe { libc::signal(libc::SIGUSR2, libc::SIG_IGN) };
        let p = spawn_blocking(cmd).unwrap();
        unsafe { libc::signal(libc::SIGUSR2, libc::SIG_DFL) };
        wait(&p);
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        let mask =
            u64::from_str_radix(out.trim().trim_start_matches("SigIgn:").trim(), 16).unwrap();
        // Bits 31 and 32 are glibc's reserved signals 32 and 33; SIGUSR2 is bit 11.
        assert_eq!(
            mask & !(0b11 << 31),
            0,
            "ignored signals leaked into the child: {mask:#x}"
        );
    }
}
