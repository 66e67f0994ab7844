//! The primary's control loop. One task owns every worker, every listening socket and every
//! restart decision; JavaScript, the per-child channel tasks, the acceptors and timers all talk to
//! it through one queue, so its state needs no locks and its decisions happen in a fixed order.
//!
//! Two plans: `Supervised` (`rcluster.start()`: N worker slots kept filled, within a restart
//! budget) and `Manual` (`require('rcluster/cluster')`: JavaScript forks, nothing is restarted).

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::child_command::{self, Role, WorkerKind};
use super::events::{Event, EventQueue, WorkerId};
use super::listeners::{Distribution, Listeners, Retention};
use super::options::{AgentReadiness, ClusterOptions, Readiness, StdioEntry};
use super::restart::{Decision, RestartHistory};
use super::router::Router;
use super::stderr_tail::StderrTail;
use crate::channel::connection::{
    self, Backlog, ChannelEvent, ConnectionSpec, Outbound, ReceivedHandle, Ticket,
};
use crate::channel::frame_link::{Frame, FrameEvent, FrameLink, Outgoing};
use crate::errors;
use crate::os::process::{ChildProcess, ExitStatus};
use crate::os::spawner;
use crate::wire::node_ipc::{self, Incoming, Payload, Serialization};

/// The largest message a child of the Node-compatible primary may send on Node's channel. Node
/// itself has no limit; without one, a child that writes a line with no end would make the
/// primary buffer it for good. A supervised cluster uses `maxMessageSize` instead.
pub const NODE_IPC_MAX_MESSAGE: usize = 64 << 20;
/// What the primary's answers may pile up for a worker that does not read its channel.
const MAX_UNREAD_BYTES: usize = 64 << 20;
const MAX_UNREAD_FDS: usize = 64;
/// However small `maxMessageSize` is, Node's own cluster messages must fit.
const NODE_IPC_MIN_MESSAGE: usize = 64 << 10;
/// What the child runtime (lib/child-runtime.js) sends: the agent's main module has run; its
/// event loop turns; an exception nobody caught; a call for a rolling reload.
const AGENT_STARTED: &str = "NODE_RCLUSTER_AGENT_STARTED";
const HEARTBEAT: &str = "NODE_RCLUSTER_HEARTBEAT";
const UNCAUGHT: &str = "NODE_RCLUSTER_UNCAUGHT";
const RELOAD: &str = "NODE_RCLUSTER_RELOAD";
/// ThinkJS's way for a worker to ask for a reload, kept so its apps work unchanged.
const THINK_RELOAD: &str = "\"think-cluster-reload-workers\"";
/// How long a failed agent's last words may take to come out of its stderr pipe.
const AGENT_STDERR_WAIT: Duration = Duration::from_millis(500);
/// How long the Node-compatible primary waits for a child that broke the protocol to exit.
const MANUAL_KILL_TIMEOUT: Duration = Duration::from_secs(5);

pub enum Plan {
    Supervised(Box<ClusterOptions>),
    Manual { distribution: Distribution },
}

/// A child the JavaScript thread started (`fork()` of the Node-compatible primary).
pub struct NewChild {
    pub id: WorkerId,
    pub process: Arc<ChildProcess>,
    pub ipc: OwnedFd,
    pub mode: Serialization,
}

pub enum Command {
    Start,
    Register(Box<NewChild>),
    /// A message serialized by JavaScript for the worker's channel, maybe with a descriptor.
    Send {
        id: WorkerId,
        payload: Vec<u8>,
        fd: Option<OwnedFd>,
        ticket: Option<Ticket>,
    },
    /// `worker.disconnect()`: ask the worker to close its servers and its channel.
    Disconnect {
        id: WorkerId,
    },
    /// `worker.process.disconnect()`: close the channel from our side.
    CloseChannel {
        id: WorkerId,
    },
    Stop {
        timeout: Option<Duration>,
    },
    /// A messenger frame from the primary's JavaScript, encoded by the binding.
    SendFrame(Frame),
    /// The primary's JavaScript added (`on`) or removed a handler for an action.
    Handler {
        action: String,
        on: bool,
    },
    Reload(ReloadRequest),
    Scale {
        workers: usize,
        ticket: u64,
    },
}

/// A call for a rolling reload; `ticket` is the JavaScript promise waiting for it, if any.
pub struct ReloadRequest {
    pub ticket: Option<u64>,
    pub parallel: Option<usize>,
    pub agent: Option<bool>,
    /// Who asked, for the log: 'reload()', 'SIGHUP', 'worker 3'.
    pub trigger: String,
}

pub enum Input {
    Command(Command),
    Channel(WorkerId, ChannelEvent),
    Frames(WorkerId, FrameEvent),
    Accepted {
        generation: u64,
        key: String,
        conn: OwnedFd,
    },
    Timer(Timer),
}

pub enum Timer {
    Restart {
        slot: usize,
        generation: u64,
    },
    ReadyDeadline {
        id: WorkerId,
    },
    StopDeadline,
    KillIfAlive {
        id: WorkerId,
    },
    StartApps,
    MessengerDrained {
        id: WorkerId,
    },
    /// Start the next replacements of a rolling reload.
    ReloadStep,
    /// Check heartbeats and memory.
    Watchdog,
    /// Close unused sockets, reap orphans (src/primary/housekeeping.rs).
    Housekeeping,
}

/// The children's processes by id, for signals sent straight from the JavaScript thread.
#[derive(Clone, Default)]
pub struct ProcessTable(Arc<Mutex<HashMap<WorkerId, Arc<ChildProcess>>>>);

impl ProcessTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<WorkerId, Arc<ChildProcess>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn insert(&self, id: WorkerId, p: Arc<ChildProcess>) {
        self.lock().insert(id, p);
    }
    pub fn remove(&self, id: WorkerId) {
        self.lock().remove(&id);
    }
    pub fn get(&self, id: WorkerId) -> Option<Arc<ChildProcess>> {
        self.lock().get(&id).cloned()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Idle,
    Starting,
    Running,
    Stopping,
    Stopped,
}

pub(super) struct Worker {
    pub slot: Option<usize>,
    pub kind: WorkerKind,
    /// The last lines the agent wrote to stderr, for the error if it dies at startup.
    pub stderr_tail: Option<StderrTail>,
    pub process: Arc<ChildProcess>,
    pub conn: mpsc::UnboundedSender<Outbound>,
    /// What waits in `conn` for the child (src/channel/connection.rs).
    pub backlog: Backlog,
    pub mode: Serialization,
    /// Our counter for the cluster messages we send it.
    pub seq: u64,
    pub connected: bool,
    /// Asked to disconnect: its later `queryServer`s go unanswered, as under Node.
    pub disconnecting: bool,
    /// A `queryServer` of its was refused and the operator was told (once per worker).
    pub listen_refused: bool,
    pub ready: bool,
    /// The primary asked it to go (stop, replacement): its exit is no failure.
    pub leaving: bool,
    /// Round-robin connections sent as `newconn`, awaiting `accepted`, by our seq.
    pub rr_in_flight: HashMap<u64, (String, OwnedFd)>,
    /// When its event loop last sent a heartbeat (src/primary/watchdog.rs); None before the first.
    pub last_beat: Option<Instant>,
    /// The messenger channel (supervised children).
    pub frames: Option<FrameLink>,
    /// Frames for it from before it opened its messenger, and their size.
    pub before_hello: Option<(Vec<Outgoing>, usize)>,
}

#[derive(Default)]
pub(super) struct Slot {
    pub current: Option<WorkerId>,
    /// Its replacement during a rolling reload, until that is ready (src/primary/reload.rs).
    pub incoming: Option<WorkerId>,
    /// Removed by scaling down; a later scale-up may use it again (src/primary/scale.rs).
    pub retired: bool,
    pub history: RestartHistory,
    /// Bumped on every scheduled restart, so that a stale timer does nothing.
    pub generation: u64,
}

pub struct Supervisor {
    plan: Plan,
    pub(super) workers: BTreeMap<WorkerId, Worker>,
    pub(super) slots: Vec<Slot>,
    pub(super) listeners: Listeners,
    pub(super) events: EventQueue,
    pub(super) inputs: mpsc::UnboundedSender<Input>,
    processes: ProcessTable,
    ids: Arc<AtomicU32>,
    pub(super) phase: Phase,
    pub(super) router: Router,
    /// The agent's slot (the last one), when there is an agent.
    pub(super) agent_slot: Option<usize>,
    /// App workers are started once the agent is ready.
    apps_started: bool,
    /// Messenger frames sent to children before the cluster was up (src/primary/messenger.rs).
    pub(super) held: super::messenger::Held,
    /// Children that exited while their messenger channel may still hold frames: pid and kind.
    pub(super) departing: HashMap<WorkerId, (u32, WorkerKind)>,
    /// consume/map requests in flight (src/primary/messenger.rs).
    pub(super) requests: super::messenger::Requests,
    /// Messages that did not fit their receivers' queues, to report (src/primary/messenger.rs).
    pub(super) reports: super::messenger::Reports,
    /// The rolling reload under way, if any.
    pub(super) reload: Option<super::reload::Reload>,
    /// `scale()` calls waiting for the workers to match the new count.
    pub(super) scale_tickets: Vec<u64>,
    /// Since when every slot has had a ready worker (src/primary/housekeeping.rs).
    pub(super) settled_since: Option<Instant>,
    /// Process groups of workers that are gone, whose members may live on (src/primary/orphans.rs).
    pub(super) orphan_groups: super::orphans::OrphanGroups,
}

/// Starts the loop on the current runtime; returns the queue that feeds it.
pub fn launch(
    plan: Plan,
    events: EventQueue,
    processes: ProcessTable,
    ids: Arc<AtomicU32>,
) -> mpsc::UnboundedSender<Input> {
    let (tx, rx) = mpsc::unbounded_channel();
    let accept_tx = tx.clone();
    let (distribution, retention) = match &plan {
        Plan::Supervised(o) => (
            match o.schedule {
                super::options::Schedule::Shared => Distribution::Shared,
                super::options::Schedule::ReusePort => Distribution::ReusePort,
            },
            Retention::ForService,
        ),
        Plan::Manual { distribution } => (*distribution, Retention::WhileHeld),
    };
    let listeners = Listeners::new(
        distribution,
        retention,
        Arc::new(move |generation, key, conn| {
            let _ = accept_tx.send(Input::Accepted {
                generation,
                key,
                conn,
            });
        }),
    )
    .with_given_fds(match &plan {
        Plan::Supervised(o) => o.listen_fds.clone(),
        Plan::Manual { .. } => Vec::new(),
    });
    let (slots, agent_slot) = match &plan {
        Plan::Supervised(o) => {
            let agent = o.agent.as_ref().map(|_| o.workers);
            let count = o.workers + usize::from(agent.is_some());
            ((0..count).map(|_| Slot::default()).collect(), agent)
        }
        Plan::Manual { .. } => (Vec::new(), None),
    };
    let supervisor = Supervisor {
        plan,
        workers: BTreeMap::new(),
        slots,
        listeners,
        events,
        inputs: tx.clone(),
        processes,
        ids,
        phase: Phase::Idle,
        router: Router::new(u64::from(std::process::id()) ^ now_nanos()),
        agent_slot,
        apps_started: false,
        held: Default::default(),
        departing: HashMap::new(),
        requests: Default::default(),
        reports: Default::default(),
        reload: None,
        scale_tickets: Vec::new(),
        settled_since: None,
        orphan_groups: Default::default(),
    };
    tokio::spawn(supervisor.run(rx));
    tx
}

impl Supervisor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>) {
        while let Some(input) = rx.recv().await {
            match input {
                Input::Command(c) => self.on_command(c).await,
                Input::Channel(id, e) => self.on_channel(id, e),
                Input::Frames(id, e) => self.on_frames(id, e),
                Input::Accepted {
                    generation,
                    key,
                    conn,
                } => {
                    if let Some(h) = self.listeners.rr_accepted(generation, &key, conn) {
                        self.send_newconn(h.worker, key, h.conn);
                    }
                }
                Input::Timer(t) => self.on_timer(t).await,
            }
        }
    }

    pub(super) fn options(&self) -> Option<&ClusterOptions> {
        match &self.plan {
            Plan::Supervised(o) => Some(o),
            Plan::Manual { .. } => None,
        }
    }

    pub(super) fn kill_timeout(&self) -> Duration {
        self.options()
            .map_or(MANUAL_KILL_TIMEOUT, |o| o.kill_timeout)
    }

    /// A worker the primary is done with, outside of `stop()`: asked to leave, killed if it is
    /// still there after `killTimeout`.
    pub(super) fn retire(&mut self, id: WorkerId) {
        self.ask_to_leave(id);
        self.after(self.kill_timeout(), Timer::KillIfAlive { id });
    }

    pub(super) fn after(&self, delay: Duration, timer: Timer) {
        let tx = self.inputs.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Input::Timer(timer));
        });
    }

    pub(super) fn warn(&self, id: Option<WorkerId>, code: &'static str, message: String) {
        self.events.push(Event::Warning {
            code,
            message,
            id,
            details: Value::Null,
        });
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Start => self.start().await,
            Command::Register(child) => {
                let NewChild {
                    id,
                    process,
                    ipc,
                    mode,
                } = *child;
                self.register(id, None, process, ipc, None, mode);
            }
            Command::Send {
                id,
                payload,
                fd,
                ticket,
            } => match self.workers.get(&id) {
                Some(w) if w.connected => {
                    let bytes = node_ipc::frame_payload(w.mode, &payload);
                    w.backlog.add(bytes.len(), fd.is_some());
                    let _ = w.conn.send(Outbound::Frame { bytes, fd, ticket });
                }
                _ => {
                    if let Some(ticket) = ticket {
                        self.events.push(Event::Sent {
                            ticket,
                            error: Some("ERR_IPC_CHANNEL_CLOSED".into()),
                        });
                    }
                }
            },
            Command::Disconnect { id } => {
                if let Some(w) = self.workers.get_mut(&id) {
                    w.disconnecting = true;
                }
                self.send_cluster(id, json!({ "act": "disconnect" }), None);
                self.listeners.release_all(id);
            }
            Command::CloseChannel { id } => {
                if let Some(w) = self.workers.get(&id) {
                    let _ = w.conn.send(Outbound::Close);
                }
            }
            Command::Stop { timeout } => {
                let timeout = timeout.unwrap_or_else(|| self.kill_timeout());
                self.begin_stop(timeout);
            }
            Command::SendFrame(frame) => self.route_frame(None, frame),
            Command::Handler { action, on } => self.router.handler(None, &action, on),
            Command::Reload(request) => self.begin_reload(request).await,
            Command::Scale { workers, ticket } => self.scale(workers, ticket).await,
        }
    }

    // ---- starting workers ----

    async fn start(&mut self) {
        if self.phase != Phase::Idle || self.options().is_none() {
            return;
        }
        self.phase = Phase::Starting;
        self.start_watchdog();
        self.start_housekeeping();
        self.guard_worker_trees();
        match self.agent_slot {
            // The agent first; the app workers once it is ready (see mark_ready).
            Some(agent) => self.start_slot(agent).await,
            None => self.start_apps().await,
        }
    }

    async fn start_apps(&mut self) {
        if self.apps_started {
            return;
        }
        self.apps_started = true;
        for slot in self.app_slots() {
            self.start_slot(slot).await;
        }
    }

    /// App worker slots in use (scaling down retires some), in order.
    pub(super) fn app_slots(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|s| Some(*s) != self.agent_slot && !self.slots[*s].retired)
            .collect()
    }

    /// Fills an empty slot with a new worker.
    pub(super) async fn start_slot(&mut self, slot: usize) {
        match self.spawn_in_slot(slot).await {
            Ok(id) => self.slots[slot].current = Some(id),
            Err(e) => {
                self.warn(None, errors::SPAWN_FAILED, e.clone());
                self.on_slot_vacated(slot, format!("spawn failed ({e})"), false);
            }
        }
    }

    /// Starts a worker for `slot` without putting it in the slot: the caller decides whether it
    /// fills the slot now or replaces its worker once ready.
    pub(super) async fn spawn_in_slot(
        &mut self,
        slot: usize,
    ) -> std::result::Result<WorkerId, String> {
        let Some(options) = self.options() else {
            return Err("this primary supervises no slots".into());
        };
        let kind = if Some(slot) == self.agent_slot {
            WorkerKind::Agent
        } else {
            WorkerKind::App
        };
        let mut spec = match (&options.agent, kind) {
            (Some(agent), WorkerKind::Agent) => agent.child.clone(),
            _ => options.child.clone(),
        };
        // A cluster's workers do not share the terminal's input.
        if let Some(stdin) = spec.stdio.first_mut() {
            *stdin = StdioEntry::Ignore;
        }
        // The agent's stderr passes through us, so that its last words can be quoted if it
        // dies at startup.
        if kind == WorkerKind::Agent {
            if let Some(stderr) = spec.stdio.get_mut(2) {
                *stderr = StdioEntry::Pipe;
            }
        }
        // The child's messenger refuses, at the sender, what the primary would refuse.
        spec.env.push((
            "RCLUSTER_MAX_MESSAGE_SIZE".into(),
            options.max_message.to_string().into(),
        ));
        if !options.watchdog.child_runtime {
            // An agent may preload the runtime for its 'started' report alone.
            spec.env.push(("RCLUSTER_CHILD_RUNTIME".into(), "0".into()));
        }
        if options.watchdog.heartbeat_timeout.is_some() {
            spec.env.push((
                "RCLUSTER_HEARTBEAT_INTERVAL".into(),
                options
                    .watchdog
                    .heartbeat_interval
                    .as_millis()
                    .to_string()
                    .into(),
            ));
        }
        let ready_timeout = options.ready_timeout;
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let role = Role {
            id,
            kind,
            supervised: true,
        };
        let spawned = match child_command::prepare(&spec, &role) {
            Ok(prepared) => {
                let stderr = prepared
                    .pipes
                    .into_iter()
                    .find(|(index, _)| *index == 2)
                    .map(|(_, fd)| fd);
                spawner::spawn(prepared.command)
                    .await
                    .map(|p| (p, (prepared.ipc, prepared.messenger, stderr)))
            }
            Err(e) => Err(e),
        };
        match spawned {
            Ok((process, (ipc, messenger, stderr))) => {
                let pid = process.pid();
                let registered = self.register(
                    id,
                    Some(slot),
                    Arc::new(process),
                    ipc,
                    messenger,
                    spec.serialization,
                );
                if !registered {
                    // register() killed it: its group is reaped with the groups of gone workers.
                    self.worker_group_left(pid);
                    return Err(format!(
                        "could not start a worker for slot {slot}: cannot watch its channel"
                    ));
                }
                if let Some(w) = self.workers.get_mut(&id) {
                    w.kind = kind;
                    w.stderr_tail = stderr.map(StderrTail::forward);
                    // A messenger target from the start: what is sent to it before it opens its
                    // messenger waits for it (src/primary/messenger.rs).
                    if w.frames.is_some() {
                        self.router.join(id, pid, kind);
                    }
                }
                if let Some(guard) = self.orphan_groups.guard() {
                    guard.watch(pid as i32);
                }
                self.events.push(Event::Fork {
                    id,
                    pid,
                    kind,
                    slot: Some(slot),
                });
                self.after(ready_timeout, Timer::ReadyDeadline { id });
                Ok(id)
            }
            Err(e) => Err(format!("could not start a worker for slot {slot}: {e}")),
        }
    }

    fn register(
        &mut self,
        id: WorkerId,
        slot: Option<usize>,
        process: Arc<ChildProcess>,
        ipc: OwnedFd,
        messenger: Option<OwnedFd>,
        mode: Serialization,
    ) -> bool {
        let frames = messenger.and_then(|socket| self.start_frame_link(id, socket));
        let tx = self.inputs.clone();
        let sink = Box::new(move |event| {
            let _ = tx.send(Input::Channel(id, event));
        });
        let spec = ConnectionSpec {
            socket: ipc,
            process: process.clone(),
            mode,
            max_message: self.options().map_or(NODE_IPC_MAX_MESSAGE, |o| {
                o.max_message.max(NODE_IPC_MIN_MESSAGE)
            }),
            backlog: Backlog::default(),
        };
        let backlog = spec.backlog.clone();
        let conn = match connection::start(spec, sink) {
            Ok(conn) => conn,
            Err(e) => {
                // Without a channel the child is useless to us and would never be reaped.
                let _ = process.signal(Signal::SIGKILL);
                self.warn(
                    Some(id),
                    errors::SPAWN_FAILED,
                    format!("worker {id}: cannot watch its channel: {e}"),
                );
                return false;
            }
        };
        self.processes.insert(id, process.clone());
        self.workers.insert(
            id,
            Worker {
                slot,
                process,
                conn,
                backlog,
                mode,
                seq: 0,
                connected: true,
                disconnecting: false,
                listen_refused: false,
                ready: false,
                leaving: false,
                rr_in_flight: HashMap::new(),
                last_beat: None,
                frames,
                before_hello: Some((Vec::new(), 0)),
                kind: WorkerKind::App,
                stderr_tail: None,
            },
        );
        true
    }

    // ---- what the channels report ----

    fn on_channel(&mut self, id: WorkerId, event: ChannelEvent) {
        match event {
            ChannelEvent::Message(Incoming::Cluster(msg)) => self.on_cluster_message(id, msg),
            ChannelEvent::Message(Incoming::User(payload)) => {
                self.on_user_message(id, payload, None)
            }
            ChannelEvent::Message(Incoming::OtherInternal(message)) => {
                match message.get("cmd").and_then(Value::as_str) {
                    Some(AGENT_STARTED) => self.on_agent_started(id),
                    Some(HEARTBEAT) => {
                        if let Some(w) = self.workers.get_mut(&id) {
                            w.last_beat = Some(Instant::now());
                        }
                    }
                    Some(UNCAUGHT) => {
                        let error = message.get("error").and_then(Value::as_str).unwrap_or("");
                        self.on_uncaught_exception(id, error);
                    }
                    Some(RELOAD) => self.reload_requested_by(id),
                    _ => self.events.push(Event::Internal {
                        id,
                        message: Value::Object(message),
                    }),
                }
            }
            ChannelEvent::Message(_) => {}
            ChannelEvent::MessageWithFd { msg, handle } => {
                if let Incoming::User(payload) = msg {
                    self.on_user_message(id, payload, Some(handle));
                }
            }
            ChannelEvent::Sent { ticket, error } => self.events.push(Event::Sent { ticket, error }),
            ChannelEvent::ProtocolError(why) => {
                let pid = self.workers.get(&id).map_or(0, |w| w.process.pid());
                self.warn(
                    Some(id),
                    errors::PROTOCOL,
                    format!("worker {id} (pid {pid}) broke the IPC protocol: {why}; its channel is closed"),
                );
                // A Node worker exits when its channel closes; one that does not is killed.
                self.after(self.kill_timeout(), Timer::KillIfAlive { id });
            }
            ChannelEvent::Disconnected => {
                if let Some(w) = self.workers.get_mut(&id) {
                    w.connected = false;
                    w.rr_in_flight.clear();
                }
                self.listeners.release_all(id);
                self.events.push(Event::Disconnect { id });
            }
            ChannelEvent::Exited(status) => self.on_exit(id, status),
        }
    }

    fn on_user_message(&mut self, id: WorkerId, payload: Payload, handle: Option<ReceivedHandle>) {
        if self.ready_by_message(id) && is_ready_message(&payload) {
            self.mark_ready(id);
        }
        if matches!(&payload, Payload::Json(text) if text == THINK_RELOAD) {
            self.reload_requested_by(id);
        }
        self.events.push(Event::Message {
            id,
            payload,
            handle,
        });
    }

    /// Why a reload or a scale cannot run now, if it cannot.
    pub(super) fn not_running(&self) -> Option<&'static str> {
        match self.phase {
            Phase::Running => None,
            Phase::Idle | Phase::Starting => Some("the cluster is still starting"),
            Phase::Stopping | Phase::Stopped => Some("the cluster is stopping"),
        }
    }

    pub(super) fn starting(&self) -> bool {
        self.phase == Phase::Starting
    }

    /// Whether a 'ready' message makes this worker ready. An agent may always say it is ready.
    pub(super) fn ready_by_message(&self, id: WorkerId) -> bool {
        let agent = self
            .workers
            .get(&id)
            .is_some_and(|w| w.kind == WorkerKind::Agent);
        agent || self.options().map(|o| o.readiness) == Some(Readiness::Message)
    }

    /// The agent's preload reports that its main module has run.
    fn on_agent_started(&mut self, id: WorkerId) {
        let started = self
            .options()
            .and_then(|o| o.agent.as_ref())
            .is_some_and(|a| a.readiness == AgentReadiness::Started);
        if started
            && self
                .workers
                .get(&id)
                .is_some_and(|w| w.kind == WorkerKind::Agent)
        {
            self.mark_ready(id);
        }
    }

    pub(super) fn on_online(&mut self, id: WorkerId) {
        self.events.push(Event::Online { id });
        if self.options().map(|o| o.readiness) == Some(Readiness::Online) {
            self.mark_ready(id);
        }
    }

    pub(super) fn on_listening(&mut self, id: WorkerId, address: Value) {
        self.events.push(Event::Listening { id, address });
        if self.options().map(|o| o.readiness) == Some(Readiness::Listening) {
            self.mark_ready(id);
        }
    }

    pub(super) fn mark_ready(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        if w.ready {
            return;
        }
        w.ready = true;
        let kind = w.kind;
        self.events.push(Event::WorkerReady { id });
        self.reload_on_ready(id);
        self.scale_progress();
        if kind == WorkerKind::Agent && self.phase == Phase::Starting {
            self.after(Duration::ZERO, Timer::StartApps);
        }
        if self.phase == Phase::Running {
            // A replacement is up: it is told, as everybody was when the cluster came up.
            self.announce_ready(Some(id));
        }
        let all_ready = self.slots.iter().all(|s| {
            s.current
                .and_then(|c| self.workers.get(&c))
                .is_some_and(|w| w.ready)
        });
        if self.phase == Phase::Starting && all_ready {
            self.phase = Phase::Running;
            self.events.push(Event::Ready);
            self.release_held();
            self.announce_ready(None);
        }
    }

    fn on_exit(&mut self, id: WorkerId, status: ExitStatus) {
        self.processes.remove(id);
        self.messenger_member_exited(id);
        let Some(worker) = self.workers.remove(&id) else {
            return;
        };
        self.listeners.release_all(id);
        if worker.slot.is_some() {
            self.worker_group_left(worker.process.pid());
        }
        self.events.push(Event::Exit { id, status });
        if worker.kind == WorkerKind::Agent && self.phase == Phase::Starting && !worker.leaving {
            self.agent_failed(id, &worker, status);
        }
        self.reload_on_exit(id, &worker, status);
        if let Some(slot) = worker.slot {
            if self.slots.get(slot).and_then(|s| s.current) == Some(id) {
                self.slots[slot].current = None;
                // A slot whose replacement is on its way is filled by it.
                if !worker.leaving && self.slots[slot].incoming.is_none() {
                    self.on_slot_vacated_by(slot, id, &worker, status);
                }
            }
            self.close_retired_slot(slot);
        }
        self.scale_progress();
        self.maybe_finish_stop();
    }

    // ---- restarts ----

    /// A worker exited unexpectedly. One that had been ready crashed at work: the operator is
    /// told each time, with the slot's count of restarts to alert on (src/primary/restart.rs).
    fn on_slot_vacated_by(
        &mut self,
        slot: usize,
        id: WorkerId,
        worker: &Worker,
        status: ExitStatus,
    ) {
        self.on_slot_vacated(slot, status.describe(), worker.ready);
        if !worker.ready || !matches!(self.phase, Phase::Starting | Phase::Running) {
            return;
        }
        let Some(options) = self.options() else {
            return;
        };
        let restarts = self.slots[slot].history.total();
        let message = format!(
            "worker {id} (pid {}) of {} exited with {} after it was ready; a replacement is starting (restart {restarts} of slot {slot})",
            worker.process.pid(),
            options.child.script_name(),
            status.describe_long(),
        );
        let details = json!({
            "slot": slot,
            "pid": worker.process.pid(),
            "exitCode": status.code,
            "signal": status.signal.map(|s| s.as_str()),
            "restarts": restarts,
        });
        self.events.push(Event::Warning {
            code: errors::WORKER_CRASHED,
            message,
            id: Some(id),
            details,
        });
    }

    /// The slot's worker is gone and nobody asked for it: restart it, or give up if boot
    /// failures spent the budget. `was_ready`: whether the worker that left had been ready.
    pub(super) fn on_slot_vacated(&mut self, slot: usize, exit: String, was_ready: bool) {
        if !matches!(self.phase, Phase::Starting | Phase::Running) {
            return;
        }
        let Some(policy) = self.options().map(|o| o.restart) else {
            return;
        };
        let decision =
            self.slots[slot]
                .history
                .on_unexpected_exit(Instant::now(), &policy, exit, was_ready);
        match decision {
            Decision::RestartAfter(delay) => self.schedule_restart(slot, delay),
            Decision::GiveUp => self.give_up(slot),
        }
    }

    /// Fills the slot after `delay`, unless something else fills or retires it first.
    pub(super) fn schedule_restart(&mut self, slot: usize, delay: Duration) {
        self.slots[slot].generation += 1;
        let generation = self.slots[slot].generation;
        self.after(delay, Timer::Restart { slot, generation });
    }

    /// The cluster as a whole failed: the error goes to JavaScript and everything stops.
    fn fail(&mut self, code: &'static str, message: String, details: Value) {
        self.events.push(Event::Error {
            code,
            message,
            details,
        });
        self.begin_stop(self.kill_timeout());
    }

    fn give_up(&mut self, slot: usize) {
        let Some(options) = self.options() else {
            return;
        };
        let history = &self.slots[slot].history;
        let exits = history.recent_exits();
        let message = format!(
            "{} keeps exiting: worker slot {slot} exited {} times within {} s (last exit codes, oldest first: {}); \
             not restarting it again (restart budget: {} restarts per {} s)",
            options.child.script_name(),
            history.exits_in_window(),
            options.restart.window.as_secs_f64(),
            exits.join(", "),
            options.restart.max_restarts,
            options.restart.window.as_secs_f64(),
        );
        let details = json!({
            "script": options.child.exec.display().to_string(),
            "slot": slot,
            "exitCodes": exits.iter().map(|e| e.parse::<i64>().map_or(json!(e), |n| json!(n))).collect::<Vec<_>>(),
            "maxRestarts": options.restart.max_restarts,
            "restartWindow": options.restart.window.as_millis() as u64,
        });
        self.fail(errors::RESTART_BUDGET, message, details);
    }

    async fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::Restart { slot, generation } => {
                let due = self.slots.get(slot).is_some_and(|s| {
                    s.generation == generation
                        && s.current.is_none()
                        && s.incoming.is_none()
                        && !s.retired
                });
                if due && matches!(self.phase, Phase::Starting | Phase::Running) {
                    self.start_slot(slot).await;
                }
            }
            Timer::ReadyDeadline { id } => self.on_ready_deadline(id),
            Timer::StopDeadline => {
                if self.phase == Phase::Stopping {
                    for w in self.workers.values() {
                        let _ = w.process.signal(Signal::SIGKILL);
                    }
                }
            }
            Timer::MessengerDrained { id } => {
                if self.departing.contains_key(&id) {
                    self.messenger_member_gone(id);
                }
            }
            Timer::StartApps => {
                if self.phase == Phase::Starting {
                    self.start_apps().await;
                }
            }
            Timer::ReloadStep => self.advance_reload().await,
            Timer::Watchdog => self.on_watchdog(),
            Timer::Housekeeping => self.on_housekeeping(),
            Timer::KillIfAlive { id } => {
                if let Some(w) = self.workers.get(&id) {
                    let _ = w.process.signal(Signal::SIGKILL);
                }
            }
        }
    }

    fn on_ready_deadline(&mut self, id: WorkerId) {
        let Some(options) = self.options() else {
            return;
        };
        let Some(w) = self.workers.get(&id) else {
            return;
        };
        if w.ready || w.leaving {
            return;
        }
        let agent = w.kind == WorkerKind::Agent;
        let incoming = self.is_reload_replacement(id);
        let what = match options.readiness {
            _ if agent => "the agent never reported ready (readiness 'started': its main module never finished loading; 'message': it never called rcluster.ready())",
            Readiness::Listening => "it never listened on a port (readiness: 'listening'; use 'online' for workers that do not serve)",
            Readiness::Online => "it never came online",
            Readiness::Message => "it never sent 'ready' (readiness: 'message')",
        };
        let message = format!(
            "worker {id} (pid {}) of {} was not ready {} ms after it started: {what}",
            w.process.pid(),
            options.child.script_name(),
            options.ready_timeout.as_millis()
        );
        if incoming {
            // The reload stops here; the worker it would have replaced keeps serving.
            self.abort_reload(message);
        } else if self.phase == Phase::Starting {
            let details = json!({ "id": id, "pid": w.process.pid(), "readyTimeout": options.ready_timeout.as_millis() as u64 });
            self.fail(errors::READY_TIMEOUT, message, details);
        } else {
            // A replacement that hangs at boot: kill it; its exit counts against the budget.
            let _ = w.process.signal(Signal::SIGKILL);
            self.warn(
                Some(id),
                errors::READY_TIMEOUT,
                format!("{message}; killing it"),
            );
        }
    }

    // ---- stopping ----

    fn begin_stop(&mut self, timeout: Duration) {
        match self.phase {
            // A second, more urgent stop: its deadline applies too.
            Phase::Stopping => {
                self.after(timeout, Timer::StopDeadline);
                return;
            }
            Phase::Stopped => {
                self.events.push(Event::Stopped);
                return;
            }
            _ => {}
        }
        self.abort_reload("the cluster is stopping".into());
        self.phase = Phase::Stopping;
        self.scale_ended(Some("the cluster is stopping"));
        // App workers first; the agent once they are gone (maybe_finish_stop).
        let apps: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.kind == WorkerKind::App)
            .map(|(id, _)| *id)
            .collect();
        for id in apps {
            self.ask_to_leave(id);
        }
        self.after(timeout, Timer::StopDeadline);
        self.maybe_finish_stop();
    }

    /// Graceful: the worker closes its servers, finishes what it serves, then exits.
    pub(super) fn ask_to_leave(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        // Asked once: Node's worker fails on a second `disconnect`.
        if w.leaving {
            return;
        }
        w.leaving = true;
        w.disconnecting = true;
        if w.kind == WorkerKind::Agent {
            // The agent is no cluster worker: it is asked to stop as any service is.
            let _ = w.process.signal(Signal::SIGTERM);
        } else if w.connected {
            // As Node's primary does in worker.disconnect(): the exit that follows was asked for.
            self.events.push(Event::ExitedAfterDisconnect { id });
            self.send_cluster(id, json!({ "act": "disconnect" }), None);
        } else if let Some(w) = self.workers.get(&id) {
            let _ = w.process.signal(Signal::SIGTERM);
        }
    }

    fn maybe_finish_stop(&mut self) {
        if self.phase != Phase::Stopping {
            return;
        }
        if self.workers.values().all(|w| w.kind == WorkerKind::Agent) {
            let agents: Vec<WorkerId> = self
                .workers
                .iter()
                .filter(|(_, w)| !w.leaving)
                .map(|(id, _)| *id)
                .collect();
            for id in agents {
                self.ask_to_leave(id);
            }
        }
        if self.workers.is_empty() {
            self.listeners.close_all();
            self.end_orphan_groups();
            self.phase = Phase::Stopped;
            self.events.push(Event::Stopped);
        }
    }

    // ---- sending ----

    /// Sends `{cmd: 'NODE_CLUSTER', ...fields, seq}`, wrapped with a descriptor if one is given.
    /// Returns the seq used, or None if the worker is gone.
    pub(super) fn send_cluster(
        &mut self,
        id: WorkerId,
        fields: Value,
        handle: Option<(&str, OwnedFd)>,
    ) -> Option<u64> {
        let w = self.workers.get_mut(&id)?;
        if !w.connected {
            return None;
        }
        let seq = w.seq;
        w.seq += 1;
        let mut msg = Map::new();
        msg.insert("cmd".into(), json!("NODE_CLUSTER"));
        if let Value::Object(fields) = fields {
            msg.extend(fields);
        }
        msg.insert("seq".into(), json!(seq));
        let (value, fd) = match handle {
            Some((handle_type, fd)) => (
                node_ipc::handle_wrapper(handle_type, Value::Object(msg)),
                Some(fd),
            ),
            None => (Value::Object(msg), None),
        };
        let bytes = node_ipc::encode(w.mode, &value);
        let (queued, queued_fds) = w.backlog.size();
        if queued > MAX_UNREAD_BYTES || queued_fds >= MAX_UNREAD_FDS {
            // What the primary sends a worker answers what it asked; one that keeps asking and
            // does not read the answers would make the primary hold them without end.
            let pid = w.process.pid();
            let _ = w.process.signal(Signal::SIGKILL);
            self.warn(
                Some(id),
                errors::PROTOCOL,
                format!("worker {id} (pid {pid}) does not read its IPC channel: {queued} bytes and {queued_fds} descriptors wait for it; killed"),
            );
            return None;
        }
        w.backlog.add(bytes.len(), fd.is_some());
        w.conn
            .send(Outbound::Frame {
                bytes,
                fd,
                ticket: None,
            })
            .ok()?;
        Some(seq)
    }
}

fn is_ready_message(payload: &Payload) -> bool {
    match payload {
        Payload::Json(text) => text == "\"ready\"",
        Payload::V8(bytes) => crate::wire::v8_wire::decode(bytes).is_ok_and(|v| v == "ready"),
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64 ^ d.as_secs())
}

impl Supervisor {
    /// The agent died before it was ready: the cluster cannot start. The error quotes its exit
    /// and the last lines it wrote to stderr.
    fn agent_failed(&mut self, id: WorkerId, worker: &Worker, status: ExitStatus) {
        let Some(options) = self.options() else {
            return;
        };
        let script = options
            .agent
            .as_ref()
            .map_or_else(String::new, |a| a.child.script_name());
        let lines = worker
            .stderr_tail
            .as_ref()
            .map(|t| t.lines_after_end(AGENT_STDERR_WAIT))
            .unwrap_or_default();
        let mut message = format!(
            "the agent {script} (worker {id}, pid {}) exited with {} before it was ready",
            worker.process.pid(),
            status.describe_long(),
        );
        if !lines.is_empty() {
            message.push_str("; its last lines of stderr:\n");
            message.push_str(&lines.join("\n"));
        }
        let details = json!({
            "script": script,
            "exitCode": status.code,
            "signal": status.signal.map(|s| s.as_str()),
            "stderr": lines,
        });
        self.fail(errors::AGENT_FAILED, message, details);
    }
}
