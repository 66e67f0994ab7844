//! The primary's loop. One task owns every worker, every listening socket and every decision;
//! JavaScript, the children's channel tasks, the acceptors and the launcher talk to it through
//! one queue, so its state needs no locks and its decisions happen in a fixed order.
//!
//! Each turn reads like this: take an input (or a timer that is due) and handle it, without
//! waiting on anything; settle, comparing what should be with what is; flush, spawning the
//! children asked for. Everything else a handler does (a message on a channel, an event for
//! JavaScript, a timer) is a queue push that does not wait either.
//!
//! Two plans: `Supervised` (`rcluster.start()`, src/primary/supervision.rs) and `Manual`
//! (`require('rcluster/cluster')`: JavaScript forks, nothing is restarted).

use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::child_command::WorkerKind;
use super::cluster::Cluster;
use super::events::{Event, EventQueue};
use super::inherited;
use super::inputs::{Command, Input, InputSender, NewChild, ReloadRequest};
use super::launcher::{Done, Launcher, ProcessLauncher};
use super::linger;
use super::listeners::{Distribution, Listeners, Retention};
use super::messenger::Messenger;
use super::options::{AgentScope, ClusterOptions, Schedule};
use super::output::OutputLog;
use super::readiness::Sign;
use super::snapshot::{ClusterState, HostsSnapshot, Snapshot, WorkerSnapshot};
use super::supervision::{Phase, Supervision};
use super::timers::{now, Timer, Timers};
use super::worker_protocol::{Progress, WorkerProtocol};
use super::workers::{ProcessTable, Worker, WorkerState};
use super::WorkerId;
use crate::channel::connection::{ChannelEvent, Outbound, ReceivedHandle};
use crate::errors;
use crate::os::process::ExitStatus;
use crate::remote::{Remote, RemoteConfig, RemoteEvent};
use crate::wire::node_ipc::{self, Incoming, Payload};

/// The largest message a child of the Node-compatible primary may send on Node's channel. Node
/// itself has no limit; without one, a child that writes a line with no end would make the
/// primary buffer it for good. A supervised cluster uses `maxMessageSize` instead.
pub const NODE_IPC_MAX_MESSAGE: usize = 64 << 20;
/// However small `maxMessageSize` is, Node's own cluster messages must fit.
const NODE_IPC_MIN_MESSAGE: usize = 64 << 10;
/// How long the Node-compatible primary waits for a child that broke the protocol to exit.
const MANUAL_KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// What the child runtime (lib/child/child-runtime.js) sends: the agent's main module has run; its
/// event loop turns; an exception nobody caught; a call for a rolling reload.
const AGENT_STARTED: &str = "NODE_RCLUSTER_AGENT_STARTED";
const HEARTBEAT: &str = "NODE_RCLUSTER_HEARTBEAT";
/// The largest event loop delay a heartbeat may report: an hour.
const MAX_LOOP_DELAY_MS: f64 = 3_600_000.0;
const UNCAUGHT: &str = "NODE_RCLUSTER_UNCAUGHT";
const RELOAD: &str = "NODE_RCLUSTER_RELOAD";
/// ThinkJS's way for a worker to ask for a reload, kept so its apps work unchanged.
const THINK_RELOAD: &str = "\"think-cluster-reload-workers\"";

pub enum Plan {
    Supervised(Box<ClusterOptions>),
    Manual { distribution: Distribution },
}

pub struct Supervisor {
    cluster: Cluster,
    /// The supervised cluster's policy; None for the Node-compatible primary.
    supervision: Option<Supervision>,
    launcher: Box<dyn Launcher>,
    /// The link to the other hosts (option `redis`), for the agent lease; the messenger has it too.
    remote: Option<Remote>,
}

/// Starts the loop on the current runtime; returns the queue that feeds it.
pub fn start(
    plan: Plan,
    events: EventQueue,
    processes: ProcessTable,
    ids: Arc<AtomicU32>,
    output: OutputLog,
) -> InputSender {
    // Real children only: the scenario tests (start_with) run on a paused clock.
    linger::start();
    start_with(
        plan,
        events,
        processes,
        ids,
        Box::new(ProcessLauncher { output }),
    )
}

/// `start` with a launcher of the caller's (tests start no processes).
pub fn start_with(
    plan: Plan,
    events: EventQueue,
    processes: ProcessTable,
    ids: Arc<AtomicU32>,
    launcher: Box<dyn Launcher>,
) -> InputSender {
    let (tx, rx) = mpsc::unbounded_channel();
    let accept_tx = tx.clone();
    let (distribution, retention) = match &plan {
        Plan::Supervised(o) => (
            match o.schedule {
                Schedule::Shared => Distribution::Shared,
                Schedule::ReusePort => Distribution::ReusePort,
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
    })
    .with_inherited(match &plan {
        Plan::Supervised(o) => inherited::listening_tcp(&o.systemd_fds),
        Plan::Manual { .. } => Vec::new(),
    });
    let stop_signal = match &plan {
        Plan::Supervised(o) => o.stop_signal,
        Plan::Manual { .. } => None,
    };
    let (max_message, kill_timeout, max_ipc_message) = match &plan {
        Plan::Supervised(o) => (
            o.max_message,
            o.kill_timeout,
            o.max_message.max(NODE_IPC_MIN_MESSAGE),
        ),
        Plan::Manual { .. } => (0, MANUAL_KILL_TIMEOUT, NODE_IPC_MAX_MESSAGE),
    };
    let cluster = Cluster {
        workers: Default::default(),
        listeners,
        messenger: Messenger::new(max_message, u64::from(std::process::id()) ^ now_nanos()),
        events,
        timers: Timers::default(),
        inputs: tx.clone(),
        processes,
        ids,
        kill_timeout,
        stop_signal,
        max_ipc_message,
    };
    let mut cluster = cluster;
    let remote = match &plan {
        Plan::Supervised(options) => span_hosts(&mut cluster, options),
        Plan::Manual { .. } => None,
    };
    let supervision = match plan {
        Plan::Supervised(options) => Some(Supervision::new(options)),
        Plan::Manual { .. } => None,
    };
    let supervisor = Supervisor {
        cluster,
        supervision,
        launcher,
        remote,
    };
    tokio::spawn(supervisor.run(rx));
    tx
}

/// The most news from other hosts routed in one wake-up of the loop: enough to spread its cost
/// over many messages, few enough that a flood from other hosts does not keep the loop from its
/// children for long.
const NEWS_BATCH: usize = 256;

/// Joins the namespace on Redis (option `redis`); the other hosts' news comes to the loop as
/// `Input::Remote`, and with a cluster agent, the agent lease's as `Input::Lease`. A link that
/// cannot even start (the options were checked; this is rare) leaves the cluster on this host
/// alone, with a warning: a host never fails to serve because of Redis (nor runs the cluster's
/// agent without the lease).
fn span_hosts(cluster: &mut Cluster, options: &ClusterOptions) -> Option<Remote> {
    let remote_options = options.remote.as_ref()?;
    let namespace = &remote_options.namespace;
    let config = RemoteConfig::new(&remote_options.url, namespace, &remote_options.host_id);
    let (news, from_hosts) = mpsc::unbounded_channel();
    let remote = match Remote::start(config, news) {
        Ok(remote) => remote,
        Err(why) => {
            cluster.events.warn(
                None,
                errors::REMOTE_UNAVAILABLE,
                format!("this host cannot join namespace '{namespace}': {why}"),
            );
            return None;
        }
    };
    let lease = options.agent.as_ref().and_then(|agent| match agent.scope {
        AgentScope::Cluster(timing) => Some(timing),
        AgentScope::Host => None,
    });
    cluster
        .messenger
        .span_hosts(remote.clone(), lease.is_some());
    forward_news(from_hosts, cluster.inputs.clone());
    if let Some(timing) = lease {
        let (news, from_lease) = mpsc::unbounded_channel();
        match remote.campaign(timing, news) {
            Ok(()) => forward(from_lease, cluster.inputs.clone(), Input::Lease),
            Err(why) => cluster.events.warn(
                None,
                errors::REMOTE_UNAVAILABLE,
                format!("this host cannot run the agent of namespace '{namespace}': {why}"),
            ),
        }
    }
    Some(remote)
}

/// Forwards the other hosts' news to the loop, as much as has come in one `Input::Remote`: routed
/// in one wake-up of the loop, as a child's batch of frames is.
fn forward_news(mut from: mpsc::UnboundedReceiver<RemoteEvent>, inputs: InputSender) {
    tokio::spawn(async move {
        while let Some(event) = from.recv().await {
            let mut batch = vec![event];
            while batch.len() < NEWS_BATCH {
                match from.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
            if inputs.send(Input::Remote(batch)).is_err() {
                return;
            }
        }
    });
}

/// Forwards what a task of the link says to the loop, as `Input`s.
fn forward<T: Send + 'static>(
    mut from: mpsc::UnboundedReceiver<T>,
    inputs: InputSender,
    input: fn(T) -> Input,
) {
    tokio::spawn(async move {
        while let Some(event) = from.recv().await {
            if inputs.send(input(event)).is_err() {
                return;
            }
        }
    });
}

impl Supervisor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>) {
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        let mut sleeping_until = None;
        loop {
            let next_due = self.cluster.timers.next_due();
            if next_due != sleeping_until {
                if let Some(at) = next_due {
                    sleep.as_mut().reset(at.into());
                }
                sleeping_until = next_due;
            }
            tokio::select! {
                input = rx.recv() => match input {
                    Some(input) => self.handle(input),
                    None => return,
                },
                () = &mut sleep, if sleeping_until.is_some() => sleeping_until = None,
            }
            while let Some(timer) = self.cluster.timers.pop_due(now()) {
                self.on_timer(timer);
            }
            self.settle();
            self.flush();
            self.leave_hosts_when_stopping();
        }
    }

    /// Once the cluster is stopping, the other hosts see this one leave at once (not after its
    /// heartbeats stop); what its workers send to them from then on is reported as not sent.
    fn leave_hosts_when_stopping(&mut self) {
        let stopping = self
            .supervision
            .as_ref()
            .is_some_and(|s| matches!(s.phase(), Phase::Stopping | Phase::Stopped));
        if stopping {
            if let Some(remote) = self.cluster.messenger.take_hosts_to_leave() {
                tokio::spawn(async move { remote.leave().await });
            }
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Command(c) => self.on_command(c),
            Input::Channel(id, e) => self.on_channel(id, e),
            Input::Frames(id, e) => {
                linger::frames_arrived();
                let starting = self.is_starting();
                let (messenger, mut cx) = self.cluster.messenger_cx(starting);
                messenger.on_frames(&mut cx, id, e);
                self.take_ready_signals();
            }
            Input::Accepted {
                generation,
                key,
                conn,
            } => {
                if let Some(h) = self.cluster.listeners.rr_accepted(generation, &key, conn) {
                    self.worker_protocol().send_newconn(h.worker, key, h.conn);
                }
            }
            Input::Remote(events) => {
                let starting = self.is_starting();
                let (messenger, mut cx) = self.cluster.messenger_cx(starting);
                messenger.on_remote(&mut cx, events);
            }
            Input::Lease(event) => {
                if let Some(s) = &mut self.supervision {
                    s.on_lease(&mut self.cluster, event);
                }
            }
            Input::LeaseReleased => {
                if let Some(s) = &mut self.supervision {
                    s.on_lease_released();
                }
            }
            Input::Spawned { id, result } => match (&mut self.supervision, result) {
                (Some(s), result) => s.on_spawned(&mut self.cluster, id, result),
                // Only the supervision asks for children; none may linger.
                (None, Ok(launched)) => self.cluster.discard(launched),
                (None, Err(_)) => {}
            },
        }
    }

    fn settle(&mut self) {
        if let Some(s) = &mut self.supervision {
            s.settle(&mut self.cluster);
        }
    }

    fn flush(&mut self) {
        if let Some(s) = &mut self.supervision {
            for request in s.take_launches() {
                let (id, inputs) = (request.id, self.cluster.inputs.clone());
                let done = Done::new(move |result| {
                    let _ = inputs.send(Input::Spawned { id, result });
                });
                self.launcher.launch(request, done);
            }
            if s.take_lease_release() {
                let inputs = self.cluster.inputs.clone();
                let remote = self.remote.clone();
                tokio::spawn(async move {
                    if let Some(remote) = remote {
                        remote.release_agent_lease().await;
                    }
                    let _ = inputs.send(Input::LeaseReleased);
                });
            }
        }
    }

    fn is_starting(&self) -> bool {
        self.supervision
            .as_ref()
            .is_some_and(|s| s.phase() == Phase::Starting)
    }

    fn worker_protocol(&mut self) -> WorkerProtocol<'_> {
        WorkerProtocol {
            workers: &mut self.cluster.workers,
            listeners: &mut self.cluster.listeners,
            events: &self.cluster.events,
        }
    }

    /// Workers that said `rcluster.ready()` on the messenger.
    fn take_ready_signals(&mut self) {
        for id in self.cluster.messenger.take_ready_signals() {
            if let Some(s) = &mut self.supervision {
                s.on_sign(&mut self.cluster, id, Sign::SaidReady);
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        let c = &mut self.cluster;
        match command {
            Command::Start => {
                if let Some(s) = &mut self.supervision {
                    s.start(c);
                }
            }
            Command::Register(child) => {
                let NewChild { id, launched, mode } = *child;
                if let Err(e) = c.attach(id, None, WorkerKind::App, launched, mode) {
                    c.events
                        .warn(Some(id), errors::SPAWN_FAILED, format!("worker {id}: {e}"));
                }
            }
            Command::Send {
                id,
                payload,
                fd,
                ticket,
            } => match c.workers.get(&id) {
                Some(w) if w.connected => {
                    let bytes = node_ipc::frame_payload(w.mode, &payload);
                    w.backlog.add(bytes.len(), fd.is_some());
                    let _ = w.conn.send(Outbound::Frame { bytes, fd, ticket });
                }
                _ => {
                    if let Some(ticket) = ticket {
                        c.events.push(Event::Sent {
                            ticket,
                            error: Some("ERR_IPC_CHANNEL_CLOSED".into()),
                        });
                    }
                }
            },
            Command::Disconnect { id } => {
                if let Some(w) = c.workers.get_mut(&id) {
                    w.state = match w.state {
                        WorkerState::Leaving => WorkerState::Leaving,
                        _ => WorkerState::Disconnecting {
                            was_ready: w.is_ready(),
                        },
                    };
                }
                c.send_cluster(id, json!({ "act": "disconnect" }));
                c.listeners.release_all(id);
            }
            Command::CloseChannel { id } => {
                if let Some(w) = c.workers.get_mut(&id) {
                    w.closed_by_primary = true;
                    let _ = w.conn.send(Outbound::Close);
                }
            }
            Command::Stop { timeout, trigger } => {
                if let Some(s) = &mut self.supervision {
                    s.stop(c, timeout.unwrap_or(c.kill_timeout), trigger);
                }
            }
            Command::SendFrame(frame) => {
                let starting = self.is_starting();
                let (messenger, mut cx) = self.cluster.messenger_cx(starting);
                messenger.route_frame(&mut cx, None, frame);
            }
            Command::Handler { action, on } => c.messenger.primary_handler(&action, on),
            Command::Reload(ReloadRequest {
                ticket,
                parallel,
                agent,
                trigger,
            }) => {
                if let Some(s) = &mut self.supervision {
                    s.reload(c, ticket, parallel, agent, trigger);
                }
            }
            Command::Replace { ticket, id } => {
                if let Some(s) = &mut self.supervision {
                    s.replace(c, ticket, id);
                }
            }
            Command::Scale { workers, ticket } => {
                if let Some(s) = &mut self.supervision {
                    s.scale(c, workers, ticket);
                }
            }
            Command::Snapshot(answer) => {
                let agent = self.remote.as_ref().and_then(Remote::agent_leader);
                let _ = answer.send(snapshot(c, self.supervision.as_ref(), agent));
            }
            Command::Ping(answer) => {
                let _ = answer.send(());
            }
        }
    }

    // ---- what the channels report ----

    fn on_channel(&mut self, id: WorkerId, event: ChannelEvent) {
        match event {
            ChannelEvent::Message(Incoming::Cluster(msg)) => {
                let progress = self.worker_protocol().on_message(id, msg);
                self.on_progress(id, progress);
            }
            ChannelEvent::Message(Incoming::User(payload)) => {
                self.on_user_message(id, payload, None)
            }
            ChannelEvent::Message(Incoming::OtherInternal(message)) => {
                self.on_runtime_message(id, message)
            }
            ChannelEvent::Message(_) => {}
            ChannelEvent::MessageWithFd { msg, handle } => {
                if let Incoming::User(payload) = msg {
                    self.on_user_message(id, payload, Some(handle));
                }
            }
            ChannelEvent::Sent { ticket, error } => {
                self.cluster.events.push(Event::Sent { ticket, error })
            }
            ChannelEvent::ProtocolError(why) => {
                let c = &mut self.cluster;
                let pid = c.workers.get_mut(&id).map_or(0, |w| {
                    w.closed_by_primary = true;
                    w.pid()
                });
                c.events.warn(
                    Some(id),
                    errors::PROTOCOL,
                    format!("worker {id} (pid {pid}) broke the IPC protocol: {why}; its channel is closed"),
                );
                // A Node worker exits when its channel closes; one that does not is killed.
                c.timers.after(c.kill_timeout, Timer::KillIfAlive { id });
            }
            ChannelEvent::Disconnected => {
                let c = &mut self.cluster;
                if let Some(w) = c.workers.get_mut(&id) {
                    w.connected = false;
                    w.rr_in_flight.clear();
                }
                c.listeners.release_all(id);
                c.events.push(Event::Disconnect { id });
                if let Some(s) = &mut self.supervision {
                    s.on_channel_closed(c, id);
                }
            }
            ChannelEvent::Exited(status) => self.on_exit(id, status),
        }
    }

    /// Node's cluster messages that move a worker towards ready.
    fn on_progress(&mut self, id: WorkerId, progress: Option<Progress>) {
        let c = &mut self.cluster;
        match progress {
            Some(Progress::Online) => {
                c.events.push(Event::Online { id });
                if let Some(s) = &mut self.supervision {
                    s.on_sign(c, id, Sign::Online);
                }
            }
            Some(Progress::Listening(address)) => {
                c.events.push(Event::Listening { id, address });
                if let Some(s) = &mut self.supervision {
                    s.on_sign(c, id, Sign::Listening);
                }
            }
            None => {}
        }
    }

    /// What rcluster's child runtime (lib/child/child-runtime.js) reports.
    fn on_runtime_message(&mut self, id: WorkerId, message: serde_json::Map<String, Value>) {
        let c = &mut self.cluster;
        let cmd = message.get("cmd").and_then(Value::as_str);
        match (cmd, &mut self.supervision) {
            (Some(HEARTBEAT), _) => {
                if let Some(w) = c.workers.get_mut(&id) {
                    w.last_beat = Some(now());
                    if let Some(delay) = message.get("delay").and_then(loop_delay) {
                        w.loop_delay = Some(delay);
                    }
                }
            }
            (Some(AGENT_STARTED), Some(s)) => s.on_sign(c, id, Sign::AgentStarted),
            (Some(UNCAUGHT), Some(s)) => {
                let error = message.get("error").and_then(Value::as_str).unwrap_or("");
                s.on_uncaught_exception(c, id, error);
            }
            (Some(RELOAD), Some(s)) => s.reload(c, None, None, None, format!("worker {id}")),
            // The Node-compatible primary's children have no runtime to speak for.
            (Some(AGENT_STARTED | UNCAUGHT | RELOAD), None) => {}
            _ => c.events.push(Event::Internal {
                id,
                message: Value::Object(message),
            }),
        }
    }

    fn on_user_message(&mut self, id: WorkerId, payload: Payload, handle: Option<ReceivedHandle>) {
        let c = &mut self.cluster;
        if let Some(s) = &mut self.supervision {
            if is_ready_message(&payload) {
                s.on_sign(c, id, Sign::SaidReady);
            }
            if matches!(&payload, Payload::Json(text) if text == THINK_RELOAD) {
                s.reload(c, None, None, None, format!("worker {id}"));
            }
        }
        c.events.push(Event::Message {
            id,
            payload,
            handle,
        });
    }

    fn on_exit(&mut self, id: WorkerId, status: ExitStatus) {
        let c = &mut self.cluster;
        let Some(worker) = c.remove_worker(id) else {
            return;
        };
        c.events.push(Event::Exit { id, status });
        if let Some(s) = &mut self.supervision {
            s.on_exit(c, id, &worker, status);
        }
    }

    fn on_timer(&mut self, timer: Timer) {
        let c = &mut self.cluster;
        match timer {
            Timer::KillIfAlive { id } => c.kill(id),
            Timer::LookForAgent => {
                let (messenger, mut cx) = c.messenger_cx(false);
                messenger.on_look_for_agent(&mut cx);
            }
            Timer::MessengerDrained { id } => {
                let (messenger, mut cx) = c.messenger_cx(false);
                messenger.drained(&mut cx, id);
            }
            Timer::Supervision(due) => {
                if let Some(s) = &mut self.supervision {
                    s.on_timer(c, due);
                }
            }
        }
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

/// A heartbeat's `delay` (ms) as the worker reported it. A worker is not trusted: anything but
/// a number from 0 to an hour is ignored.
fn loop_delay(value: &Value) -> Option<Duration> {
    let ms = value.as_f64()?;
    (ms.is_finite() && (0.0..=MAX_LOOP_DELAY_MS).contains(&ms))
        .then(|| Duration::from_secs_f64(ms / 1000.0))
}

// ---- for operators ----

fn worker_snapshot(
    id: WorkerId,
    w: &Worker,
    restarts: u64,
    instance: Option<usize>,
) -> WorkerSnapshot {
    let uptime = now().saturating_duration_since(w.started);
    WorkerSnapshot {
        id,
        pid: w.pid(),
        kind: w.kind,
        slot: w.slot,
        instance,
        state: w.state.as_str(),
        restarts,
        started_at: SystemTime::now() - uptime,
        uptime,
        loop_delay: w.loop_delay,
    }
}

/// What the cluster looks like now (`Command::Snapshot`); `agent`: who holds the agent lease.
fn snapshot(
    c: &Cluster,
    supervision: Option<&Supervision>,
    agent: Option<(String, u64)>,
) -> Snapshot {
    let mut workers: Vec<WorkerSnapshot> = c
        .workers
        .iter()
        .map(|(id, w)| {
            let (restarts, instance) = match (supervision, w.slot) {
                (Some(s), Some(slot)) => (s.restarts(slot), s.instance(slot)),
                _ => (0, None),
            };
            worker_snapshot(*id, w, restarts, instance)
        })
        .collect();
    workers.sort_by_key(|w| w.id);
    let state = match supervision.map(|s| (s.phase(), s.is_reloading())) {
        None => ClusterState::Running,
        Some((Phase::Idle | Phase::Starting, _)) => ClusterState::Starting,
        Some((Phase::Running, true)) => ClusterState::Reloading,
        Some((Phase::Running, false)) => ClusterState::Running,
        Some((Phase::Stopping, _)) => ClusterState::Stopping,
        Some((Phase::Stopped, _)) => ClusterState::Stopped,
    };
    let target_workers = supervision.map_or_else(
        || workers.iter().filter(|w| w.kind == WorkerKind::App).count(),
        Supervision::app_slots,
    );
    Snapshot {
        state,
        target_workers,
        workers,
        slots: supervision.map_or_else(Vec::new, Supervision::slot_restarts),
        messages: c.messenger.routed(),
        hosts: c.messenger.hosts().map(|(me, others)| HostsSnapshot {
            me,
            others: others
                .into_iter()
                .map(|h| (h.host, h.incarnation))
                .collect(),
            lost: c.messenger.lost_across_hosts(),
            agent,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_delay_is_taken_only_when_sane() {
        assert_eq!(
            loop_delay(&json!(12.5)),
            Some(Duration::from_micros(12_500))
        );
        assert_eq!(loop_delay(&json!(0)), Some(Duration::ZERO));
        for bad in [json!(-1), json!("5"), json!(null), json!(1e300), json!([1])] {
            assert_eq!(loop_delay(&bad), None, "{bad}");
        }
    }
}
