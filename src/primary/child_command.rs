//! Turns a child's settings into the command that starts it: Node's executable, the script, and
//! the environment and descriptors that make it a Node cluster worker (NODE_UNIQUE_ID,
//! NODE_CHANNEL_FD) with its IPC channel in place.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use super::options::{ChildSpec, StdioEntry};
use crate::os::fd_socket::stream_pair;
use crate::os::spawner::{ChildCommand, StdioSlot};

/// What the primary keeps of a child it is about to start.
pub struct Prepared {
    pub command: ChildCommand,
    /// Our end of the child's Node IPC channel.
    pub ipc: OwnedFd,
    /// Our ends of the child's `'pipe'` stdio entries, by index.
    pub pipes: Vec<(usize, OwnedFd)>,
    /// Our end of the child's messenger channel (supervised children only).
    pub messenger: Option<OwnedFd>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerKind {
    App,
    Agent,
}

impl WorkerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerKind::App => "app",
            WorkerKind::Agent => "agent",
        }
    }
}

/// Environment variables a primary sets for its children; stale copies are never passed on.
const CHANNEL_VARS: &[&str] = &[
    "NODE_UNIQUE_ID",
    "NODE_CHANNEL_FD",
    "NODE_CHANNEL_SERIALIZATION_MODE",
    "RCLUSTER_WORKER_KIND",
    "RCLUSTER_WORKER_ID",
    "RCLUSTER_CHANNEL_FD",
];

pub struct Role {
    pub id: u32,
    pub kind: WorkerKind,
    /// Started by `rcluster.start()`: told its kind, and put in its own process group.
    pub supervised: bool,
}

pub fn prepare(spec: &ChildSpec, role: &Role) -> io::Result<Prepared> {
    let program = match &spec.exec_path {
        Some(path) => path.clone(),
        None => std::env::current_exe()?,
    };
    let mut args: Vec<OsString> = spec.exec_argv.iter().map(OsString::from).collect();
    args.push(spec.exec.clone().into_os_string());
    args.extend(spec.args.iter().map(OsString::from));

    let ipc_fd = spec.ipc_fd();
    let mut env: Vec<(OsString, OsString)> = spec
        .env
        .iter()
        .filter(|(k, _)| !CHANNEL_VARS.iter().any(|v| k == v))
        .cloned()
        .collect();
    env.push(("NODE_CHANNEL_FD".into(), ipc_fd.to_string().into()));
    env.push((
        "NODE_CHANNEL_SERIALIZATION_MODE".into(),
        spec.serialization.env_value().into(),
    ));
    if role.kind == WorkerKind::App {
        // This one variable is what makes an unmodified app a cluster worker.
        env.push(("NODE_UNIQUE_ID".into(), role.id.to_string().into()));
    }
    if role.supervised {
        env.push(("RCLUSTER_WORKER_KIND".into(), role.kind.as_str().into()));
        env.push(("RCLUSTER_WORKER_ID".into(), role.id.to_string().into()));
    }

    let mut ipc = None;
    let mut pipes = Vec::new();
    let mut stdio: Vec<StdioSlot> = Vec::new();
    let mut fds = Vec::new();
    for (i, entry) in spec.stdio.iter().enumerate() {
        let theirs: Option<OwnedFd> = match entry {
            StdioEntry::Ignore => None,
            StdioEntry::Ipc => {
                let (ours, theirs) = stream_pair()?;
                ipc = Some(ours);
                Some(theirs)
            }
            StdioEntry::Pipe => {
                // libuv makes 'pipe' entries socketpairs too, the child's end blocking: a program
                // that is not Node (a shell, `execSync` with inherited stdio) would otherwise get
                // EAGAIN whenever we read slower than it writes.
                let (ours, theirs) = stream_pair()?;
                crate::os::fd_socket::set_blocking(&theirs)?;
                pipes.push((i, ours));
                Some(theirs)
            }
            StdioEntry::Fd(n) if *n == i as i32 && i < 3 => {
                stdio.push(StdioSlot::Inherit);
                continue;
            }
            StdioEntry::Fd(n) => Some(duplicate_ours(*n)?),
        };
        if i < 3 {
            stdio.push(theirs.map_or(StdioSlot::Null, StdioSlot::Fd));
        } else if let Some(fd) = theirs {
            fds.push((i as i32, fd));
        }
    }
    let ipc =
        ipc.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no 'ipc' entry in stdio"))?;
    // rcluster's own channel sits on the first number after the stdio entries.
    let messenger = if role.supervised {
        let (ours, theirs) = stream_pair()?;
        let at = spec.stdio.len() as i32;
        fds.push((at, theirs));
        env.push(("RCLUSTER_CHANNEL_FD".into(), at.to_string().into()));
        Some(ours)
    } else {
        None
    };
    let mut stdio = stdio.into_iter();
    let mut next = || stdio.next().unwrap_or(StdioSlot::Null);
    let (stdin, stdout, stderr) = (next(), next(), next());
    Ok(Prepared {
        command: ChildCommand {
            program,
            args,
            env,
            cwd: spec.cwd.clone(),
            stdin,
            stdout,
            stderr,
            fds,
            uid: spec.uid,
            gid: spec.gid,
            own_process_group: role.supervised,
        },
        ipc,
        pipes,
        messenger,
    })
}

/// A descriptor of this process that the child should share (a stdio entry given as a number).
fn duplicate_ours(fd: i32) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: borrowed only to duplicate it; an unknown number fails with EBADF.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD).map_err(io::Error::from)?;
    borrowed.as_fd().try_clone_to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::node_ipc::Serialization;

    fn spec(stdio: Vec<StdioEntry>) -> ChildSpec {
        ChildSpec {
            exec: "/srv/app.js".into(),
            args: vec!["--port".into(), "1".into()],
            exec_argv: vec!["--no-warnings".into()],
            exec_path: None,
            env: vec![
                ("NODE_UNIQUE_ID".into(), "stale".into()),
                ("HOME".into(), "/root".into()),
            ],
            cwd: "/".into(),
            stdio,
            serialization: Serialization::Json,
            uid: None,
            gid: None,
        }
    }

    fn env_of(p: &Prepared) -> Vec<(String, String)> {
        p.command
            .env
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn a_cluster_worker_command() {
        let s = spec(vec![
            StdioEntry::Fd(0),
            StdioEntry::Fd(1),
            StdioEntry::Fd(2),
            StdioEntry::Ipc,
        ]);
        let p = prepare(
            &s,
            &Role {
                id: 7,
                kind: WorkerKind::App,
                supervised: true,
            },
        )
        .unwrap();
        let args: Vec<_> = p
            .command
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args, ["--no-warnings", "/srv/app.js", "--port", "1"]);
        let env = env_of(&p);
        assert!(env.contains(&("NODE_UNIQUE_ID".into(), "7".into())));
        assert!(!env.contains(&("NODE_UNIQUE_ID".into(), "stale".into())));
        assert!(env.contains(&("NODE_CHANNEL_FD".into(), "3".into())));
        assert!(env.contains(&("RCLUSTER_WORKER_KIND".into(), "app".into())));
        // The Node channel at 3, rcluster's messenger channel right after the stdio entries.
        let targets: Vec<i32> = p.command.fds.iter().map(|(to, _)| *to).collect();
        assert_eq!(targets, [3, 4]);
        assert!(env.contains(&("RCLUSTER_CHANNEL_FD".into(), "4".into())));
        assert!(p.messenger.is_some());
        assert!(p.command.own_process_group);
        assert!(matches!(p.command.stdin, StdioSlot::Inherit));
    }

    #[test]
    fn node_style_stdio_arrays() {
        let s = spec(vec![
            StdioEntry::Pipe,
            StdioEntry::Ignore,
            StdioEntry::Fd(2),
            StdioEntry::Ipc,
            StdioEntry::Pipe,
        ]);
        let p = prepare(
            &s,
            &Role {
                id: 1,
                kind: WorkerKind::App,
                supervised: false,
            },
        )
        .unwrap();
        assert_eq!(
            p.pipes.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![0, 4]
        );
        assert!(matches!(p.command.stdin, StdioSlot::Fd(_)));
        assert!(matches!(p.command.stdout, StdioSlot::Null));
        assert!(matches!(p.command.stderr, StdioSlot::Inherit));
        assert_eq!(
            p.command.fds.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert!(!env_of(&p).iter().any(|(k, _)| k == "RCLUSTER_WORKER_KIND"));
    }
}
