//! Starting children, off the loop. The loop asks for a child (`LaunchRequest`); the launcher
//! spawns it on a task and answers (`Done`, which the loop turns into `Input::Spawned`); the loop then attaches the child's
//! channels (`Launched::attach`) while it handles that input, so that nothing the child says can
//! arrive before the loop knows it. Tests put a fake launcher here (src/primary/scenarios.rs).

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::child_command::{self, Role, WorkerKind};
use super::child_output::{Capture, ChildOutput, StderrTail};
use super::options::{ChildSpec, ClusterOptions, StdioEntry};
use super::output::OutputLog;
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
    /// What is done with its stdout and stderr pipes, if `spec` asks for pipes.
    pub capture: Capture,
}

/// Variables of the service manager, meant for the primary alone: a child that saw them would
/// speak to systemd as the service (NOTIFY_SOCKET, the watchdog's) or take the sockets the
/// primary was given (socket activation's) for its own.
const SERVICE_MANAGER_VARS: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// Set for each app worker as PM2 sets it; never passed on from the primary's environment.
const APP_INSTANCE_VAR: &str = "NODE_APP_INSTANCE";
/// This host's id, for a child of a cluster that spans hosts (option `redis`).
const HOST_ID_VAR: &str = "RCLUSTER_HOST_ID";
/// A cluster agent's epoch (`agent.scope: 'cluster'`), set by the supervision for the agent.
pub const AGENT_EPOCH_VAR: &str = "RCLUSTER_AGENT_EPOCH";

/// What a supervised child runs: the app's (or the agent's) settings, and what the cluster tells
/// every child through its stdio and environment. `instance` is an app worker's index among the
/// app workers (`NODE_APP_INSTANCE`, src/primary/slots.rs); the agent has none.
pub fn supervised_spec(
    options: &ClusterOptions,
    kind: WorkerKind,
    instance: Option<usize>,
) -> ChildSpec {
    let mut spec = match (&options.agent, kind) {
        (Some(agent), WorkerKind::Agent) => agent.child.clone(),
        _ => options.child.clone(),
    };
    // A cluster's workers do not share the terminal's input.
    if let Some(stdin) = spec.stdio.first_mut() {
        *stdin = StdioEntry::Ignore;
    }
    // Captured output passes through the primary (src/primary/child_output.rs); so does the
    // agent's stderr always, so that its last words can be quoted if it dies at startup.
    let capture = Capture::of(&options.operations);
    for (index, entry) in spec.stdio.iter_mut().enumerate().take(3).skip(1) {
        if capture.on || (kind == WorkerKind::Agent && index == 2) {
            *entry = StdioEntry::Pipe;
        }
    }
    spec.env.retain(|(name, _)| {
        !SERVICE_MANAGER_VARS.iter().any(|v| name == v)
            && name != APP_INSTANCE_VAR
            && name != HOST_ID_VAR
            && name != AGENT_EPOCH_VAR
    });
    if let (WorkerKind::App, Some(instance)) = (kind, instance) {
        spec.env
            .push((APP_INSTANCE_VAR.into(), instance.to_string().into()));
    }
    // With `redis`, a child names its host in `meta.from` and knows which `{ host, id }` is here.
    if let Some(remote) = &options.remote {
        spec.env
            .push((HOST_ID_VAR.into(), remote.host_id.clone().into()));
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

/// A real child: its Node channel, its messenger channel (supervised children) and the stdout
/// and stderr pipes that pass through the primary, if any (src/primary/child_output.rs).
pub fn real_child(
    process: Arc<ChildProcess>,
    ipc: OwnedFd,
    messenger: Option<OwnedFd>,
    output: Option<ChildOutput>,
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
                stderr_tail: output.and_then(ChildOutput::start),
            })
        }),
    )
}

/// Spawns real children. What they print is kept in `output` too (src/primary/output.rs).
pub struct ProcessLauncher {
    pub output: OutputLog,
}

impl Launcher for ProcessLauncher {
    fn launch(&mut self, request: LaunchRequest, done: Done) {
        let output = self.output.clone();
        tokio::spawn(async move {
            let result = spawn_child(request, output)
                .await
                .map_err(|e| e.to_string());
            done.finish(result);
        });
    }
}

async fn spawn_child(request: LaunchRequest, log: OutputLog) -> io::Result<Launched> {
    let role = Role {
        id: request.id,
        kind: request.kind,
        supervised: true,
    };
    let prepared = child_command::prepare(&request.spec, &role)?;
    let mut output = ChildOutput {
        id: request.id,
        kind: request.kind,
        stdout: None,
        stderr: None,
        log: request.capture.on.then_some(log),
        prefix: request.capture.prefix,
    };
    for (index, fd) in prepared.pipes {
        match index {
            1 => output.stdout = Some(fd),
            2 => output.stderr = Some(fd),
            _ => {}
        }
    }
    let process = spawner::spawn(prepared.command).await?;
    Ok(real_child(
        Arc::new(process),
        prepared.ipc,
        prepared.messenger,
        Some(output),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primary::options::parse_cluster_options;
    use serde_json::json;

    fn options(extra: serde_json::Value) -> ClusterOptions {
        let script =
            std::env::temp_dir().join(format!("rcluster-launcher-{}.js", std::process::id()));
        std::fs::write(&script, "").unwrap();
        let mut value = json!({ "exec": script.display().to_string(), "workers": 2 });
        for (k, v) in extra.as_object().unwrap() {
            value[k] = if v == &json!("SCRIPT") {
                json!(script.display().to_string())
            } else {
                v.clone()
            };
        }
        let env = [
            ("HOME", "/root"),
            ("NOTIFY_SOCKET", "/run/systemd/notify"),
            ("LISTEN_FDS", "1"),
            ("LISTEN_PID", "1"),
            ("LISTEN_FDNAMES", "http"),
            ("WATCHDOG_USEC", "1000000"),
            ("WATCHDOG_PID", "1"),
            ("NODE_APP_INSTANCE", "9"),
        ];
        let env = env.iter().map(|(k, v)| (k.into(), v.into())).collect();
        parse_cluster_options(&value, env).unwrap_or_else(|e| panic!("{}", e.message))
    }

    fn env(spec: &ChildSpec) -> Vec<(String, String)> {
        spec.env
            .iter()
            .map(|(k, v)| (k.to_string_lossy().into(), v.to_string_lossy().into()))
            .collect()
    }

    #[test]
    fn children_get_their_app_instance_and_nothing_of_systemd() {
        let o = options(json!({ "agent": "SCRIPT" }));
        let app = env(&supervised_spec(&o, WorkerKind::App, Some(1)));
        let agent = env(&supervised_spec(&o, WorkerKind::Agent, None));
        for var in SERVICE_MANAGER_VARS {
            assert!(!app.iter().any(|(k, _)| k == var), "{var}");
            assert!(!agent.iter().any(|(k, _)| k == var), "{var}");
        }
        let instances = |e: &[(String, String)]| {
            e.iter()
                .filter(|(k, _)| k == APP_INSTANCE_VAR)
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(instances(&app), ["1"]);
        assert!(instances(&agent).is_empty());
        assert!(app.contains(&("HOME".into(), "/root".into())));
    }

    #[test]
    fn stdout_and_stderr_are_pipes_when_captured() {
        let captured = options(json!({ "agent": "SCRIPT" }));
        assert!(
            Capture::of(&captured.operations).on,
            "control is on by default"
        );
        for kind in [WorkerKind::App, WorkerKind::Agent] {
            let spec = supervised_spec(&captured, kind, Some(0));
            assert_eq!(
                spec.stdio[..3],
                [StdioEntry::Ignore, StdioEntry::Pipe, StdioEntry::Pipe]
            );
        }
        let plain = options(json!({ "agent": "SCRIPT", "control": false }));
        assert!(!Capture::of(&plain.operations).on);
        let app = supervised_spec(&plain, WorkerKind::App, Some(0));
        assert_eq!(
            app.stdio[..3],
            [StdioEntry::Ignore, StdioEntry::Fd(1), StdioEntry::Fd(2)]
        );
        // The agent's stderr passes through the primary in any case, for its startup error.
        let agent = supervised_spec(&plain, WorkerKind::Agent, None);
        assert_eq!(
            agent.stdio[..3],
            [StdioEntry::Ignore, StdioEntry::Fd(1), StdioEntry::Pipe]
        );
        let prefixed = options(json!({ "control": false, "logPrefix": true }));
        assert_eq!(
            Capture::of(&prefixed.operations),
            Capture {
                on: true,
                prefix: true
            }
        );
    }
}
