//! Starting children, off the loop. The loop asks for a child (`LaunchRequest`); the launcher
//! spawns it on a task and answers (`Done`, which the loop turns into `Input::Spawned`); the loop then attaches the child's
//! channels (`Launched::attach`) while it handles that input, so that nothing the child says can
//! arrive before the loop knows it. Tests put a fake launcher here (src/primary/scenarios.rs).

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::child_command::{self, Role, WorkerKind};
use super::options::{ChildSpec, ClusterOptions, StdioEntry};
use super::output::OutputLog;
use super::stderr_tail::StderrTail;
use super::workers::Process;
use super::WorkerId;
use crate::channel::connection::{self, Backlog, ChannelEvent, ConnectionSpec, Outbound};
use crate::channel::frame_link::{self, FrameEvent, FrameLink};
use crate::os::process::ChildProcess;
use crate::os::spawner;
use crate::wire::node_ipc::Serialization;

/// A child for a slot of the supervised cluster.
pub struct LaunchRequest {
    pub id: WorkerId,
    pub kind: WorkerKind,
    /// What to run, with the cluster's adjustments made (`supervised_spec`).
    pub spec: ChildSpec,
}

/// What a supervised child runs: the app's (or the agent's) settings, and what the cluster tells
/// every child through its stdio and environment.
pub fn supervised_spec(options: &ClusterOptions, kind: WorkerKind) -> ChildSpec {
    let mut spec = match (&options.agent, kind) {
        (Some(agent), WorkerKind::Agent) => agent.child.clone(),
        _ => options.child.clone(),
    };
    // A cluster's workers do not share the terminal's input.
    if let Some(stdin) = spec.stdio.first_mut() {
        *stdin = StdioEntry::Ignore;
    }
    // The agent's stderr passes through the primary, so that its last words can be quoted if
    // it dies at startup (src/primary/stderr_tail.rs).
    if kind == WorkerKind::Agent {
        if let Some(stderr) = spec.stdio.get_mut(2) {
            *stderr = StdioEntry::Pipe;
        }
    }
    // The child's messenger refuses, at the sender, what the primary would refuse.
    let max_message = options.max_message.to_string();
    spec.env
        .push(("RCLUSTER_MAX_MESSAGE_SIZE".into(), max_message.into()));
    if !options.watchdog.child_runtime {
        // An agent may preload the runtime for its 'started' report alone.
        spec.env.push(("RCLUSTER_CHILD_RUNTIME".into(), "0".into()));
    }
    // The metrics show each worker's event loop delay, which its heartbeats report.
    if options.watchdog.heartbeat_timeout.is_some() || options.operations.metrics.is_some() {
        let interval = options.watchdog.heartbeat_interval.as_millis().to_string();
        spec.env
            .push(("RCLUSTER_HEARTBEAT_INTERVAL".into(), interval.into()));
    }
    spec
}

/// Where a launch's outcome goes: back to the loop, as `Input::Spawned`. A launch that ends
/// without an answer (a panic in its task) answers with an error as it is dropped: the loop never
/// waits for good on a slot.
pub struct Done(Option<Answer>);

type Answer = Box<dyn FnOnce(Result<Launched, String>) + Send>;

impl Done {
    pub fn new(answer: impl FnOnce(Result<Launched, String>) + Send + 'static) -> Self {
        Done(Some(Box::new(answer)))
    }

    pub fn finish(mut self, result: Result<Launched, String>) {
        if let Some(answer) = self.0.take() {
            answer(result);
        }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        if let Some(answer) = self.0.take() {
            answer(Err("its launch ended without an answer".into()));
        }
    }
}

pub trait Launcher: Send {
    /// Starts the child, and calls `done` with the outcome.
    fn launch(&mut self, request: LaunchRequest, done: Done);
}

/// Where a child's channels report to, and their bounds.
pub struct Sinks {
    pub channel: Box<dyn Fn(ChannelEvent) + Send + Sync>,
    pub frames: Box<dyn Fn(FrameEvent) + Send + Sync>,
    pub mode: Serialization,
    pub max_message: usize,
    pub max_frame: usize,
    pub queue_limit: usize,
}

/// A running child's channels, watched.
pub struct Attached {
    pub conn: mpsc::UnboundedSender<Outbound>,
    /// What waits in `conn` for the child (src/channel/connection.rs).
    pub backlog: Backlog,
    /// The messenger channel (supervised children); its error, if it could not be watched.
    pub frames: Result<Option<FrameLink>, String>,
    pub stderr_tail: Option<StderrTail>,
}

type Attach = Box<dyn FnOnce(Sinks) -> io::Result<Attached> + Send>;

/// A child that runs, whose channels are not watched yet.
pub struct Launched {
    pub process: Arc<dyn Process>,
    attach: Attach,
}

impl Launched {
    pub fn new(process: Arc<dyn Process>, attach: Attach) -> Self {
        Launched { process, attach }
    }

    /// Watches the child's channels. On failure the child is of no use and would never be
    /// reaped through them: the caller kills it.
    pub fn attach(self, sinks: Sinks) -> (Arc<dyn Process>, io::Result<Attached>) {
        (self.process, (self.attach)(sinks))
    }
}

/// A real child: its Node channel, its messenger channel (supervised children) and, for the
/// agent, the stderr pipe whose last lines explain a failed start.
pub fn real_child(
    process: Arc<ChildProcess>,
    ipc: OwnedFd,
    messenger: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
) -> Launched {
    let watched = process.clone();
    Launched::new(
        process,
        Box::new(move |sinks: Sinks| {
            let backlog = Backlog::default();
            let spec = ConnectionSpec {
                socket: ipc,
                process: watched,
                mode: sinks.mode,
                max_message: sinks.max_message,
                backlog: backlog.clone(),
            };
            let conn = connection::start(spec, sinks.channel)?;
            let frames = match messenger {
                Some(socket) => {
                    frame_link::start(socket, sinks.max_frame, sinks.queue_limit, sinks.frames)
                        .map(Some)
                        .map_err(|e| e.to_string())
                }
                None => Ok(None),
            };
            Ok(Attached {
                conn,
                backlog,
                frames,
                stderr_tail: stderr.map(StderrTail::forward),
            })
        }),
    )
}

/// Spawns real processes.
/// Spawns real children. What they print is kept in `output` too (src/primary/output.rs).
pub struct ProcessLauncher {
    pub output: OutputLog,
}

impl Launcher for ProcessLauncher {
    fn launch(&mut self, request: LaunchRequest, done: Done) {
        tokio::spawn(async move {
            let result = spawn_child(request).await.map_err(|e| e.to_string());
            done.finish(result);
        });
    }
}

async fn spawn_child(request: LaunchRequest) -> io::Result<Launched> {
    let role = Role {
        id: request.id,
        kind: request.kind,
        supervised: true,
    };
    let prepared = child_command::prepare(&request.spec, &role)?;
    let stderr = prepared
        .pipes
        .into_iter()
        .find(|(index, _)| *index == 2)
        .map(|(_, fd)| fd);
    let process = spawner::spawn(prepared.command).await?;
    Ok(real_child(
        Arc::new(process),
        prepared.ipc,
        prepared.messenger,
        stderr,
    ))
}
