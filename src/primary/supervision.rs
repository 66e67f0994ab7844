//! The supervised cluster's policy (`rcluster.start()`): N worker slots kept filled within a
//! restart budget, readiness, start order (the agent first) and stop order (the agent last),
//! rolling reload, scale and the watchdog's verdicts. The Node-compatible primary has none of it:
//! its JavaScript forks and nothing is restarted.
//!
//! Handlers change state and record what is due; `settle` compares what should be with what is
//! (slots to fill, the reload's next step, a scale, the start or the stop that has finished);
//! `take_launches` hands the loop the children to spawn.
//!
//! An agent of scope 'cluster' (one in the namespace, option `redis`) has its slot here too, but
//! the slot wants a worker only while this host holds the agent lease (`on_lease`); app workers
//! neither wait for it at start nor count it for readiness, and it stops at once on a stop, then
//! the lease is given up (`take_lease_release`).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::child_command::WorkerKind;
use super::child_output::Capture;
use super::cluster::Cluster;
use super::events::Event;
use super::housekeeping::{self, Housekeeping};
use super::launcher::{self, LaunchRequest, Launched};
use super::options::{AgentScope, ClusterOptions};
use super::orphans::OrphanGroups;
use super::readiness::{self, Sign};
use super::reload::{Reload, Step};
use super::reports;
use super::restart::Decision;
use super::scale::{self, Change, Scale};
use super::slots::Slots;
use super::timers::{now, Due, Timer};
use super::watchdog::{self, Finding};
use super::workers::{Worker, WorkerState};
use super::WorkerId;
use crate::errors;
use crate::os::process::ExitStatus;
use crate::remote::LeaseEvent;
use crate::wire::node_ipc::Serialization;

/// How long after a worker's channel closed unasked its exit is waited for, before the worker is
/// taken to have disconnected itself: a process that dies closes its channel a moment before its
/// exit is seen.
const CHANNEL_CLOSED_GRACE: Duration = Duration::from_millis(200);
/// How long a failed agent's last words may take to come out of its stderr pipe.
const AGENT_STDERR_WAIT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Idle,
    Starting,
    Running,
    Stopping,
    Stopped,
}

/// A child being spawned: for which slot, to do what, speaking which serialization.
struct Launching {
    slot: usize,
    purpose: Purpose,
    mode: Serialization,
}

/// What a child being spawned is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// To fill its empty slot.
    Fill,
    /// To replace the slot's worker once ready (a rolling reload).
    Replace,
}

pub struct Supervision {
    options: Box<ClusterOptions>,
    phase: Phase,
    slots: Slots,
    /// App workers are started once the agent is ready.
    apps_started: bool,
    /// Children asked for and not spawned yet.
    launching: HashMap<WorkerId, Launching>,
    /// Children to spawn, for the loop to take.
    launches: Vec<LaunchRequest>,
    reload: Option<Reload>,
    scale: Scale,
    orphans: OrphanGroups,
    housekeeping: Housekeeping,
    /// Ids taken at start for the first worker of each slot: app workers are 1..N whether or
    /// not there is an agent (which is started first and has N+1).
    first_ids: HashMap<usize, WorkerId>,
    /// With `agent.scope: 'cluster'`: this host's part in the agent lease.
    lease: Option<Lease>,
}

/// This host and the agent lease (`agent.scope: 'cluster'`).
#[derive(Debug, Default)]
struct Lease {
    /// The epoch under which this host leads; None while it does not.
    leading: Option<u64>,
    release: Release,
}

/// Giving the lease up once the cluster has stopped its agent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Release {
    #[default]
    NotYet,
    /// Due: for the loop to take (`take_lease_release`).
    Due,
    /// Asked of the link to the other hosts; waiting for it to be done.
    Asked,
    Done,
}

impl Supervision {
    pub fn new(options: Box<ClusterOptions>) -> Self {
        let slots = Slots::new(options.workers, options.agent.is_some());
        let lease = options
            .agent
            .as_ref()
            .filter(|agent| matches!(agent.scope, AgentScope::Cluster(_)))
            .map(|_| Lease::default());
        Supervision {
            options,
            phase: Phase::Idle,
            slots,
            apps_started: false,
            launching: HashMap::new(),
            launches: Vec::new(),
            reload: None,
            scale: Scale::default(),
            orphans: OrphanGroups::default(),
            housekeeping: Housekeeping::default(),
            first_ids: HashMap::new(),
            lease,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn is_reloading(&self) -> bool {
        self.reload.is_some()
    }

    /// Restarts of the slot since the cluster started (`rcluster status`).
    pub fn restarts(&self, slot: usize) -> u64 {
        self.slots.get(slot).map_or(0, |s| s.history.total())
    }

    /// Each slot in use with its kind and its restarts since the cluster started (the metrics).
    pub fn slot_restarts(&self) -> Vec<(usize, WorkerKind, u64)> {
        self.slots
            .active()
            .map(|(i, s)| {
                let kind = if self.slots.is_agent(i) {
                    WorkerKind::Agent
                } else {
                    WorkerKind::App
                };
                (i, kind, s.history.total())
            })
            .collect()
    }

    /// An app slot's `NODE_APP_INSTANCE`; None for the agent's.
    pub fn instance(&self, slot: usize) -> Option<usize> {
        self.slots.app_instance(slot)
    }

    /// The app worker slots in service: the count the cluster keeps running.
    pub fn app_slots(&self) -> usize {
        self.slots.apps().len()
    }

    pub fn take_launches(&mut self) -> Vec<LaunchRequest> {
        std::mem::take(&mut self.launches)
    }

    /// Whether the agent lease is to be given up now (once: the loop asks the link to the other
    /// hosts, and reports back with `on_lease_released`).
    pub fn take_lease_release(&mut self) -> bool {
        match &mut self.lease {
            Some(lease) if lease.release == Release::Due => {
                lease.release = Release::Asked;
                true
            }
            _ => false,
        }
    }

    /// The epoch under which this host runs the cluster agent, if it does.
    pub fn agent_epoch(&self) -> Option<u64> {
        self.lease.as_ref().and_then(|lease| lease.leading)
    }

    /// Whether the agent's slot wants a worker: always for an agent of each host; for the
    /// cluster's agent, while this host holds the lease and the cluster is up.
    fn agent_wanted(&self) -> bool {
        match &self.lease {
            None => true,
            Some(lease) => lease.leading.is_some() && self.is_up(),
        }
    }

    /// Whether a process of the cluster's agent (`agent.scope: 'cluster'`) is still alive here,
    /// leaving or not.
    fn cluster_agent_alive(&self, c: &Cluster) -> bool {
        self.lease.is_some() && c.workers.values().any(|w| w.kind == WorkerKind::Agent)
    }

    /// Whether `slot` counts for the cluster's readiness: the cluster's agent, which may run on
    /// another host, never does.
    fn counts_for_readiness(&self, slot: usize) -> bool {
        self.lease.is_none() || !self.slots.is_agent(slot)
    }
    // ---- starting ----

    pub fn start(&mut self, c: &mut Cluster) {
        if self.phase != Phase::Idle {
            return;
        }
        self.phase = Phase::Starting;
        if watchdog::is_on(&self.options.watchdog) {
            c.timers
                .after(watchdog::TICK, Timer::Supervision(Due::Watchdog));
        }
        c.timers
            .after(housekeeping::TICK, Timer::Supervision(Due::Housekeeping));
        self.orphans.guard_worker_trees(&c.events);
        // `cluster.worker.id === 1` is the app's first worker, as under Node's cluster. The
        // cluster's agent gets an id when this host comes to run it.
        let host_agent = self.slots.agent().filter(|_| self.lease.is_none());
        let order = self.slots.apps().into_iter().chain(host_agent);
        for slot in order {
            self.first_ids.insert(slot, c.next_id());
        }
        match (host_agent, self.slots.agent()) {
            // The agent first; the app workers once it is ready (see settle).
            (Some(agent), _) => self.fill_later(agent),
            // The cluster's agent, if this host already holds the lease, with the app workers.
            (None, Some(agent)) => {
                if self.agent_wanted() {
                    self.fill_later(agent);
                }
                self.start_apps();
            }
            (None, None) => self.start_apps(),
        }
    }

    fn start_apps(&mut self) {
        self.apps_started = true;
        for slot in self.slots.apps() {
            self.fill_later(slot);
        }
    }

    /// The slot is filled when the loop next settles.
    fn fill_later(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot) {
            s.due = true;
        }
    }

    fn is_up(&self) -> bool {
        matches!(self.phase, Phase::Starting | Phase::Running)
    }

    fn kind_of(&self, slot: usize) -> WorkerKind {
        if self.slots.is_agent(slot) {
            WorkerKind::Agent
        } else {
            WorkerKind::App
        }
    }

    /// A child is being spawned for the slot.
    fn is_launching(&self, slot: usize) -> bool {
        self.launching.values().any(|l| l.slot == slot)
    }

    /// Asks for a child for `slot`.
    fn ask_for_child(&mut self, c: &Cluster, slot: usize, purpose: Purpose) -> WorkerId {
        let kind = self.kind_of(slot);
        let instance = self.slots.app_instance(slot);
        let mut spec = launcher::supervised_spec(&self.options, kind, instance);
        if let (WorkerKind::Agent, Some(epoch)) = (kind, self.agent_epoch()) {
            spec.env
                .push((launcher::AGENT_EPOCH_VAR.into(), epoch.to_string().into()));
        }
        let capture = Capture::of(&self.options.operations);
        let id = match (purpose, self.first_ids.remove(&slot)) {
            (Purpose::Fill, Some(id)) => id,
            (_, reserved) => {
                if let Some(id) = reserved {
                    self.first_ids.insert(slot, id);
                }
                c.next_id()
            }
        };
        let mode = spec.serialization;
        self.launching.insert(
            id,
            Launching {
                slot,
                purpose,
                mode,
            },
        );
        self.launches.push(LaunchRequest {
            id,
            kind,
            spec,
            capture,
        });
        id
    }

    /// Whether a child spawned for `slot` is still wanted there.
    fn still_wanted(&self, id: WorkerId, slot: usize, purpose: Purpose) -> bool {
        let Some(s) = self.slots.get(slot) else {
            return false;
        };
        self.is_up()
            && !s.retired
            && (!self.slots.is_agent(slot) || self.agent_wanted())
            && match purpose {
                Purpose::Fill => s.current.is_none(),
                Purpose::Replace => self.reload.as_ref().is_some_and(|r| r.is_replacement(id)),
            }
    }

    /// A child asked for has been spawned, or could not be.
    pub fn on_spawned(&mut self, c: &mut Cluster, id: WorkerId, result: Result<Launched, String>) {
        let Some(Launching {
            slot,
            purpose,
            mode,
        }) = self.launching.remove(&id)
        else {
            // Not ours to place (it cannot happen; if it did, the child must not linger).
            if let Ok(launched) = result {
                c.discard(launched);
            }
            return;
        };
        if !self.still_wanted(id, slot, purpose) {
            // Stopped, scaled away or aborted while it was being spawned: JavaScript never hears
            // of it. Its slot, if it still wants a worker, is filled when the loop settles.
            if let Ok(launched) = result {
                self.orphans
                    .worker_group_left(launched.process.pid(), now(), c.kill_timeout);
                c.discard(launched);
            }
            return;
        }
        let kind = self.kind_of(slot);
        let attached = result.and_then(|launched| {
            let pid = launched.process.pid();
            c.attach(id, Some(slot), kind, launched, mode)
                .map(|w| w.pid())
                .inspect_err(|_| {
                    // Whatever it started goes with it.
                    self.orphans.worker_group_left(pid, now(), c.kill_timeout);
                })
        });
        let pid = match attached {
            Ok(pid) => pid,
            Err(e) => {
                let why = format!("could not start a worker for slot {slot}: {e}");
                return self.spawn_failed(c, slot, purpose, why);
            }
        };
        if let Some(guard) = self.orphans.guard() {
            guard.watch(pid as i32);
        }
        c.events.push(Event::Fork {
            id,
            pid,
            kind,
            slot: Some(slot),
        });
        let deadline = Due::ReadyDeadline { id };
        c.timers
            .after(self.options.ready_timeout, Timer::Supervision(deadline));
        if let Some(s) = self.slots.get_mut(slot) {
            match purpose {
                Purpose::Fill => {
                    s.current = Some(id);
                    s.due = false;
                }
                Purpose::Replace => s.incoming = Some(id),
            }
        }
    }

    /// A wanted child could not be started (or its channels not watched).
    fn spawn_failed(&mut self, c: &mut Cluster, slot: usize, purpose: Purpose, error: String) {
        match purpose {
            Purpose::Replace => self.abort_reload(c, &error),
            Purpose::Fill => {
                c.events.warn(None, errors::SPAWN_FAILED, error.clone());
                self.on_slot_vacated(c, slot, format!("spawn failed ({error})"), false);
            }
        }
    }

    // ---- readiness ----

    /// A worker did something that may make it ready (src/primary/readiness.rs).
    pub fn on_sign(&mut self, c: &mut Cluster, id: WorkerId, sign: Sign) {
        let Some(kind) = c.workers.get(&id).map(|w| w.kind) else {
            return;
        };
        let agent = self.options.agent.as_ref().map(|a| a.readiness);
        if readiness::is_ready_by(sign, kind, self.options.readiness, agent) {
            self.mark_ready(c, id);
        }
    }

    fn mark_ready(&mut self, c: &mut Cluster, id: WorkerId) {
        let Some(w) = c.workers.get_mut(&id) else {
            return;
        };
        w.state = match w.state {
            WorkerState::Starting => WorkerState::Ready,
            WorkerState::Disconnecting { was_ready: false } => {
                WorkerState::Disconnecting { was_ready: true }
            }
            // Ready already, or on its way out: nothing changes.
            _ => return,
        };
        c.events.push(Event::WorkerReady { id });
        // A reload's replacement takes its slot; the worker it replaces leaves gracefully.
        if let Some(reload) = &mut self.reload {
            if let Some(s) = reload
                .on_ready(id)
                .and_then(|slot| self.slots.get_mut(slot))
            {
                s.incoming = None;
                s.due = false;
                if let Some(old) = s.current.replace(id) {
                    reload.replaced_worker(old);
                    c.retire(old);
                }
            }
        }
        if self.phase == Phase::Running {
            // A replacement is up: it is told, as everybody was when the cluster came up.
            let (messenger, mut cx) = c.messenger_cx(false);
            messenger.announce_ready(&mut cx, Some(id));
        }
    }

    fn on_ready_deadline(&mut self, c: &mut Cluster, id: WorkerId) {
        let Some(w) = c.workers.get(&id) else {
            return;
        };
        // One that JavaScript asked to disconnect is still held to it; one sent away is not.
        if w.is_ready() || w.is_leaving() {
            return;
        }
        let (message, details) = reports::not_ready(&self.options, id, w.pid(), w.kind);
        if self.reload.as_ref().is_some_and(|r| r.is_replacement(id)) {
            // The reload stops here; the worker it would have replaced keeps serving.
            self.abort_reload(c, &message);
        } else if self.phase == Phase::Starting {
            self.fail(c, errors::READY_TIMEOUT, message, details);
        } else {
            // A replacement that hangs at boot: kill it; its exit counts against the budget.
            c.kill(id);
            c.events.warn(
                Some(id),
                errors::READY_TIMEOUT,
                format!("{message}; killing it"),
            );
        }
    }

    // ---- exits and restarts ----

    /// A worker has exited (the loop has removed it already).
    pub fn on_exit(&mut self, c: &mut Cluster, id: WorkerId, worker: &Worker, status: ExitStatus) {
        if worker.slot.is_some() {
            self.orphans
                .worker_group_left(worker.pid(), now(), c.kill_timeout);
        }
        let asked = worker.is_leaving();
        // The app workers wait for an agent of their own host: its failure fails the start. The
        // cluster's agent is restarted within its budget instead, as a worker is.
        let host_agent = worker.kind == WorkerKind::Agent && self.lease.is_none();
        if host_agent && self.phase == Phase::Starting && !asked {
            self.agent_failed(c, id, worker, status);
        }
        if self.reload.as_ref().is_some_and(|r| r.is_replacement(id)) {
            let name = match worker.kind {
                WorkerKind::Agent => "the new agent",
                WorkerKind::App => "a new worker",
            };
            let cause = format!(
                "{name} (worker {id}, pid {}) exited with {} before it was ready",
                worker.pid(),
                status.describe_long()
            );
            self.abort_reload(c, &cause);
        }
        let Some(slot) = worker.slot else {
            return;
        };
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        if s.current == Some(id) {
            s.current = None;
            // A slot whose replacement is on its way is filled by it.
            if !asked && s.incoming.is_none() {
                self.on_worker_crashed(c, slot, id, worker, status);
            }
        }
        self.close_if_retired(c, slot);
    }

    /// A worker exited unexpectedly. One that had been ready crashed at work: the operator is
    /// told each time, with the slot's count of restarts to alert on (src/primary/restart.rs).
    fn on_worker_crashed(
        &mut self,
        c: &mut Cluster,
        slot: usize,
        id: WorkerId,
        worker: &Worker,
        status: ExitStatus,
    ) {
        let was_ready = worker.is_ready();
        self.on_slot_vacated(c, slot, status.describe(), was_ready);
        if !was_ready || !self.is_up() {
            return;
        }
        let restarts = self.slots.get(slot).map_or(0, |s| s.history.total());
        let who = (id, worker.pid());
        let (message, details) =
            reports::worker_crashed(&self.options, who, status, slot, restarts);
        c.events.push(Event::Warning {
            code: errors::WORKER_CRASHED,
            message,
            id: Some(id),
            details,
        });
    }

    /// The slot's worker is gone and nobody asked for it: restart it, or give up if boot
    /// failures spent the budget. `was_ready`: whether the worker that left had been ready.
    fn on_slot_vacated(&mut self, c: &mut Cluster, slot: usize, exit: String, was_ready: bool) {
        if !self.is_up() {
            return;
        }
        let policy = self.options.restart;
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        match s
            .history
            .on_unexpected_exit(now(), &policy, exit, was_ready)
        {
            Decision::RestartAfter(delay) => self.schedule_restart(c, slot, delay),
            Decision::GiveUp => self.give_up(c, slot),
        }
    }

    /// Fills the slot after `delay`, unless something else fills or retires it first.
    fn schedule_restart(&mut self, c: &mut Cluster, slot: usize, delay: Duration) {
        if let Some(s) = self.slots.get_mut(slot) {
            s.generation += 1;
            let generation = s.generation;
            let due = Due::Restart { slot, generation };
            c.timers.after(delay, Timer::Supervision(due));
        }
    }

    fn give_up(&mut self, c: &mut Cluster, slot: usize) {
        let Some(history) = self.slots.get(slot).map(|s| &s.history) else {
            return;
        };
        let (message, details) = reports::budget_spent(&self.options, slot, history);
        self.fail(c, errors::RESTART_BUDGET, message, details);
    }

    /// The cluster as a whole failed: the error goes to JavaScript and everything stops.
    fn fail(&mut self, c: &mut Cluster, code: &'static str, message: String, details: Value) {
        c.events.push(Event::Error {
            code,
            message,
            details,
        });
        self.stop(c, c.kill_timeout, format!("the failure ({code})"));
    }

    /// The agent died before it was ready: the cluster cannot start. The error quotes its exit
    /// and the last lines it wrote to stderr.
    fn agent_failed(&mut self, c: &mut Cluster, id: WorkerId, worker: &Worker, status: ExitStatus) {
        let stderr = worker
            .stderr_tail
            .as_ref()
            .map(|t| t.lines_after_end(AGENT_STDERR_WAIT))
            .unwrap_or_default();
        let who = (id, worker.pid());
        let (message, details) = reports::agent_failed(&self.options, who, status, stderr);
        self.fail(c, errors::AGENT_FAILED, message, details);
    }

    // ---- the watchdog and uncaught exceptions ----

    fn on_watchdog(&mut self, c: &mut Cluster) {
        if !self.is_up() {
            return;
        }
        for finding in watchdog::check(now(), &self.options.watchdog, &c.workers, &self.slots) {
            match finding {
                Finding::Unresponsive { id, quiet } => self.replace_unresponsive(c, id, quiet),
                Finding::OverMemory { id, rss, limit } => {
                    let pid = c.workers.get(&id).map_or(0, |w| w.pid());
                    let message = format!(
                        "worker {id} (pid {pid}) uses {} MiB of memory, over maxMemory ({} MiB)",
                        rss >> 20,
                        limit >> 20
                    );
                    self.replace_gracefully(
                        c,
                        id,
                        errors::MEMORY_LIMIT,
                        message,
                        "memory limit",
                        true,
                    );
                }
            }
        }
        c.timers
            .after(watchdog::TICK, Timer::Supervision(Due::Watchdog));
    }

    /// The child runtime reported an exception nobody caught. The worker has stopped accepting
    /// and finishes what it serves on its own; its replacement starts now.
    pub fn on_uncaught_exception(&mut self, c: &mut Cluster, id: WorkerId, error: &str) {
        let pid = c.workers.get(&id).map_or(0, |w| w.pid());
        let first_line = error.lines().next().unwrap_or("");
        let message = format!("worker {id} (pid {pid}) threw an uncaught exception: {first_line}");
        self.replace_gracefully(
            c,
            id,
            errors::UNCAUGHT_EXCEPTION,
            message,
            "uncaught exception",
            false,
        );
    }

    /// A worker's Node channel closed. Unless the primary or JavaScript asked it to leave, it
    /// may have disconnected itself (Egg's and ThinkJS's graceful exit, often after an
    /// exception): that is decided once its exit had a moment to show.
    pub fn on_channel_closed(&mut self, c: &mut Cluster, id: WorkerId) {
        let unasked = |w: &Worker| !w.is_closing() && !w.closed_by_primary;
        if c.workers.get(&id).is_some_and(unasked) && self.is_up() {
            let due = Due::ChannelClosed { id };
            c.timers
                .after(CHANNEL_CLOSED_GRACE, Timer::Supervision(due));
        }
    }

    /// A worker that closed its own channel serves on for a while, but can no longer be told
    /// anything nor heard (no heartbeats): its replacement starts now and it is let go.
    fn on_disconnected_itself(&mut self, c: &mut Cluster, id: WorkerId) {
        let Some(w) = c.workers.get(&id) else {
            return;
        };
        if w.connected || w.is_closing() {
            return;
        }
        let message = format!(
            "worker {id} (pid {}) disconnected itself (closed its IPC channel)",
            w.pid()
        );
        self.replace_gracefully(
            c,
            id,
            errors::WORKER_DISCONNECTED,
            message,
            "disconnected itself",
            false,
        );
    }

    /// A blocked event loop cannot finish anything: the worker is killed at once.
    fn replace_unresponsive(&mut self, c: &mut Cluster, id: WorkerId, quiet: Duration) {
        let Some((slot, was_ready)) = self.detach(c, id) else {
            return;
        };
        if let Some(w) = c.workers.get_mut(&id) {
            w.state = WorkerState::Leaving;
            w.kill();
            let message = format!(
                "worker {id} (pid {}) is unresponsive: no heartbeat from its event loop for {} ms; killed, a replacement is starting",
                w.pid(),
                quiet.as_millis()
            );
            c.events.warn(Some(id), errors::UNRESPONSIVE, message);
        }
        self.on_slot_vacated(c, slot, "unresponsive".into(), was_ready);
    }

    /// Its replacement starts now (within the restart budget); the worker itself leaves
    /// gracefully, asked to if `ask`, and is killed after `killTimeout` if it has not.
    fn replace_gracefully(
        &mut self,
        c: &mut Cluster,
        id: WorkerId,
        code: &'static str,
        message: String,
        exit: &str,
        ask: bool,
    ) {
        let Some((slot, was_ready)) = self.detach(c, id) else {
            return;
        };
        c.events.warn(
            Some(id),
            code,
            format!("{message}; it finishes what it serves while a replacement starts"),
        );
        if ask {
            c.retire(id);
        } else {
            c.let_go(id);
        }
        self.on_slot_vacated(c, slot, exit.into(), was_ready);
    }

    /// Takes a working worker out of its slot: its slot, and whether it was ready. None if it is
    /// not one (already leaving, a reload's replacement).
    fn detach(&mut self, c: &Cluster, id: WorkerId) -> Option<(usize, bool)> {
        let w = c.workers.get(&id)?;
        if w.is_leaving() || !self.is_up() {
            return None;
        }
        let slot = w.slot?;
        let s = self.slots.get_mut(slot)?;
        if s.current != Some(id) {
            return None;
        }
        s.current = None;
        Some((slot, w.is_ready()))
    }

    // ---- reload and scale ----

    pub fn reload(
        &mut self,
        c: &mut Cluster,
        ticket: Option<u64>,
        parallel: Option<usize>,
        agent: Option<bool>,
        trigger: String,
    ) {
        if let Some(why) = self.not_running() {
            c.events.push(Event::Reloaded {
                tickets: ticket.into_iter().collect(),
                error: Some((errors::NOT_RUNNING, format!("cannot reload: {why}"))),
                details: json!({}),
            });
            return;
        }
        if let Some(reload) = &mut self.reload {
            if reload.is_replace() {
                let why = "a replace() is under way";
                c.events.push(Event::Reloaded {
                    tickets: ticket.into_iter().collect(),
                    error: Some((errors::NOT_RUNNING, format!("cannot reload: {why}"))),
                    details: json!({}),
                });
                return;
            }
            reload.join(ticket);
            return;
        }
        let policy = self.options.reload;
        let with_agent = agent.unwrap_or(policy.agent);
        if with_agent && self.lease.is_some() {
            self.restart_cluster_agent(c);
        }
        // The agent first, as at startup: the app workers may depend on it. (Not the cluster's:
        // a replacement would run beside it.)
        let mut order: Vec<usize> = self
            .slots
            .agent()
            .filter(|_| with_agent && self.lease.is_none())
            .into_iter()
            .collect();
        order.extend(self.slots.apps());
        c.events.push(Event::ReloadStarted {
            trigger,
            workers: order.len(),
        });
        let parallel = parallel.unwrap_or(policy.parallel);
        self.reload = Some(Reload::new(order, parallel, ticket, now()));
    }

    /// A reload of the cluster's agent, on the host that runs it: never two at once, so the old
    /// one stops first (SIGTERM, SIGKILL after killTimeout) and the new one starts once it has
    /// exited, under the same lease and epoch.
    fn restart_cluster_agent(&mut self, c: &mut Cluster) {
        let Some(slot) = self.slots.agent() else {
            return;
        };
        let current = self.slots.get(slot).and_then(|s| s.current);
        let Some(id) = current.filter(|id| c.workers.get(id).is_some_and(|w| !w.is_leaving()))
        else {
            return;
        };
        c.retire(id);
        self.fill_later(slot);
    }

    /// `cluster.replace(id)`: a new worker starts in the slot of worker `id`, which leaves once
    /// that one is ready, as in one step of a rolling reload.
    pub fn replace(&mut self, c: &mut Cluster, ticket: u64, id: WorkerId) {
        let refuse = |c: &mut Cluster, code, message: String| {
            c.events.push(Event::Reloaded {
                tickets: vec![ticket],
                error: Some((code, message)),
                details: json!({}),
            });
        };
        if let Some(why) = self.not_running() {
            return refuse(
                c,
                errors::NOT_RUNNING,
                format!("cannot replace worker {id}: {why}"),
            );
        }
        if self.reload.is_some() {
            let why = "a reload or another replace() is under way";
            return refuse(
                c,
                errors::NOT_RUNNING,
                format!("cannot replace worker {id}: {why}"),
            );
        }
        let slot = c
            .workers
            .get(&id)
            .filter(|w| !w.is_leaving())
            .and_then(|w| w.slot)
            .filter(|slot| self.slots.get(*slot).is_some_and(|s| s.current == Some(id)));
        let Some(slot) = slot else {
            let message = format!("worker {id} is not a current worker of the cluster");
            return refuse(c, errors::UNKNOWN_WORKER, message);
        };
        if self.lease.is_some() && self.slots.is_agent(slot) {
            // A replacement would run beside it: two agents of the namespace at once.
            let message = format!(
                "worker {id} is the cluster's agent, which is never replaced beside itself; reload({{ agent: true }}) restarts it (the old one stops first)"
            );
            return refuse(c, errors::UNKNOWN_WORKER, message);
        }
        self.reload = Some(Reload::replace(slot, id, ticket, now()));
    }

    /// Ends the reload where it stands. Replacements on their way are sent away; every slot keeps
    /// the worker it had.
    fn abort_reload(&mut self, c: &mut Cluster, cause: &str) {
        let Some(reload) = self.reload.take() else {
            return;
        };
        let (incoming, event) = reload.abort(cause);
        for (id, slot) in incoming {
            let Some(s) = self.slots.get_mut(slot) else {
                continue;
            };
            // One still being spawned is sent away once it is (see on_spawned).
            if s.incoming == Some(id) {
                s.incoming = None;
                c.retire(id);
            }
            // Its old worker died meanwhile: the slot is filled again, as after a crash.
            if s.current.is_none() && !s.retired {
                self.schedule_restart(c, slot, Duration::ZERO);
            }
        }
        c.events.push(event);
    }

    pub fn scale(&mut self, c: &mut Cluster, workers: usize, ticket: u64) {
        if let Some(why) = self.not_running() {
            c.events.push(Event::Scaled {
                tickets: vec![ticket],
                workers: self.slots.apps().len(),
                error: Some((errors::NOT_RUNNING, format!("cannot scale: {why}"))),
            });
            return;
        }
        self.scale.wait(ticket);
        match scale::change(&self.slots.apps(), workers) {
            Change::Add(n) => {
                for _ in 0..n {
                    let slot = self.slots.add();
                    self.fill_later(slot);
                }
            }
            Change::Remove(slots) => {
                for slot in slots {
                    self.remove_slot(c, slot);
                }
            }
        }
    }

    fn remove_slot(&mut self, c: &mut Cluster, slot: usize) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        s.retired = true;
        s.due = false;
        // A restart it was waiting for will not happen.
        s.generation += 1;
        // A child still being spawned for it is discarded once it is (see on_spawned).
        let leaving = [s.current.take(), s.incoming.take()];
        // A reload under way does not wait for this slot's replacement.
        if let Some(reload) = &mut self.reload {
            reload.slot_removed(slot);
        }
        for id in leaving.into_iter().flatten() {
            c.retire(id);
        }
        self.close_if_retired(c, slot);
    }

    /// A retired slot whose workers are gone gives up its own listening sockets (reuseport).
    fn close_if_retired(&mut self, c: &mut Cluster, slot: usize) {
        let retired = self.slots.get(slot).is_some_and(|s| s.retired);
        let occupied = c.workers.values().any(|w| w.slot == Some(slot)) || self.is_launching(slot);
        if retired && !occupied {
            c.listeners.close_slot(slot);
        }
    }

    /// Why a reload or a scale cannot run now, if it cannot.
    fn not_running(&self) -> Option<&'static str> {
        match self.phase {
            Phase::Running => None,
            Phase::Idle | Phase::Starting => Some("the cluster is still starting"),
            Phase::Stopping | Phase::Stopped => Some("the cluster is stopping"),
        }
    }

    // ---- stopping ----

    pub fn stop(&mut self, c: &mut Cluster, timeout: Duration, trigger: String) {
        match self.phase {
            // A second, more urgent stop: its deadline applies too.
            Phase::Stopping => {
                c.timers
                    .after(timeout, Timer::Supervision(Due::StopDeadline));
                return;
            }
            Phase::Stopped => {
                c.events.push(Event::Stopped);
                return;
            }
            _ => {}
        }
        // A reload that has replaced every worker and waits for the old ones to let go of their
        // sockets is done; any other is aborted.
        if self.reload.as_ref().is_some_and(Reload::replaced_all) {
            if let Some(reload) = self.reload.take() {
                c.events.push(reload.finish(now()));
            }
        }
        self.abort_reload(c, "the cluster is stopping");
        self.phase = Phase::Stopping;
        c.events.push(Event::Stopping { trigger });
        if self.scale.is_waiting() {
            let event = self.scale.end(&self.slots, Some("the cluster is stopping"));
            c.events.push(event);
        }
        // App workers first; the agent once they are gone (see settle). The cluster's agent at
        // once: no app worker here depends on it, and another host takes over sooner.
        let cluster_agent = self.lease.is_some();
        let apps: Vec<WorkerId> = c
            .workers
            .iter()
            .filter(|(_, w)| w.kind == WorkerKind::App || cluster_agent)
            .map(|(id, _)| *id)
            .collect();
        for id in apps {
            c.ask_to_leave(id);
        }
        c.timers
            .after(timeout, Timer::Supervision(Due::StopDeadline));
    }

    // ---- the agent lease (`agent.scope: 'cluster'`) ----

    /// News of the agent lease: this host starts the agent when it wins it, and stops it at once
    /// when it loses it (SIGTERM, SIGKILL after killTimeout: before the lease can expire).
    pub fn on_lease(&mut self, c: &mut Cluster, event: LeaseEvent) {
        let Some(lease) = &mut self.lease else {
            return;
        };
        match event {
            // Won while the lease was being given up (the news crossed): this host is stopping
            // and leads nothing; the lease expires.
            LeaseEvent::Won { .. } if lease.release != Release::NotYet => {}
            LeaseEvent::Won { epoch } => {
                lease.leading = Some(epoch);
                c.events.push(Event::AgentLead { epoch });
                if let Some(slot) = self.slots.agent().filter(|_| self.is_up()) {
                    // Filled once a former agent of this host has exited (see settle).
                    self.fill_later(slot);
                }
            }
            LeaseEvent::Lost { epoch, reason } => {
                if lease.leading != Some(epoch) {
                    return;
                }
                lease.leading = None;
                c.events.push(Event::AgentLose { epoch, reason });
                if let Some(s) = self.slots.agent().and_then(|slot| self.slots.get_mut(slot)) {
                    // A restart it was waiting for will not happen.
                    s.due = false;
                    s.generation += 1;
                }
                // One being spawned is sent away once it is (see on_spawned).
                let agents: Vec<WorkerId> = c
                    .workers
                    .iter()
                    .filter(|(_, w)| w.kind == WorkerKind::Agent && !w.is_leaving())
                    .map(|(id, _)| *id)
                    .collect();
                for id in agents {
                    c.retire(id);
                }
            }
        }
    }

    /// The lease has been given up (or could not be: it expires).
    pub fn on_lease_released(&mut self) {
        if let Some(lease) = &mut self.lease {
            lease.release = Release::Done;
            lease.leading = None;
        }
    }

    // ---- timers ----

    pub fn on_timer(&mut self, c: &mut Cluster, due: Due) {
        match due {
            Due::Restart { slot, generation } => {
                let up = self.is_up();
                // The slot wants a worker; if one is still on its way out or in, it gets one when
                // that has settled (see settle).
                if let Some(s) = self.slots.get_mut(slot) {
                    if up && s.generation == generation && !s.retired {
                        s.due = true;
                    }
                }
            }
            Due::ReadyDeadline { id } => self.on_ready_deadline(c, id),
            Due::ChannelClosed { id } => self.on_disconnected_itself(c, id),
            Due::StopDeadline => {
                if self.phase == Phase::Stopping {
                    c.workers.values().for_each(Worker::kill);
                }
            }
            Due::Watchdog => self.on_watchdog(c),
            Due::Housekeeping => {
                let settled = self.settled(c);
                self.housekeeping.tick(
                    now(),
                    settled,
                    &mut c.listeners,
                    &mut self.orphans,
                    &c.workers,
                );
                // After a stop, only until what the workers left behind has been reaped.
                if self.phase != Phase::Stopped || self.orphans.pending() {
                    c.timers
                        .after(housekeeping::TICK, Timer::Supervision(Due::Housekeeping));
                }
            }
        }
    }

    /// Every slot has its worker, ready, and nothing is being replaced.
    fn settled(&self, c: &Cluster) -> bool {
        self.phase == Phase::Running
            && self.reload.is_none()
            && self.launching.is_empty()
            && self.slots.active().all(|(i, s)| {
                (self.slots.is_agent(i) && !self.agent_wanted())
                    || s.incoming.is_none()
                        && self.slots.has_ready_worker(i, &c.workers)
                        && s.current
                            .and_then(|id| c.workers.get(&id))
                            .is_some_and(|w| !w.is_leaving())
            })
    }

    fn all_ready(&self, c: &Cluster) -> bool {
        self.slots
            .active()
            .filter(|(i, _)| self.counts_for_readiness(*i))
            .all(|(i, _)| self.slots.has_ready_worker(i, &c.workers))
    }

    // ---- what should be against what is ----

    pub fn settle(&mut self, c: &mut Cluster) {
        // Settling runs after every input, messenger batches included: each check below costs
        // nothing unless a start, a scale or a reload is under way.
        if self.phase == Phase::Starting && !self.apps_started {
            let agent = self.slots.agent();
            if agent.is_some_and(|slot| self.slots.has_ready_worker(slot, &c.workers)) {
                self.start_apps();
            }
        }
        if self.is_up() {
            self.fill_due_slots(c);
        }
        self.step_reload(c);
        if self.scale.is_waiting() {
            let launching_for_removed = self
                .launching
                .values()
                .any(|l| self.slots.get(l.slot).is_some_and(|s| s.retired));
            if let Some(event) = self
                .scale
                .progress(&self.slots, &c.workers, launching_for_removed)
            {
                c.events.push(event);
            }
        }
        if self.phase == Phase::Starting && self.all_ready(c) {
            self.phase = Phase::Running;
            c.events.push(Event::Ready);
            let (messenger, mut cx) = c.messenger_cx(false);
            messenger.release_held(&mut cx);
            messenger.announce_ready(&mut cx, None);
        }
        if self.phase == Phase::Stopping {
            self.settle_stop(c);
        }
    }

    /// Slots that want a worker get one, once nothing else is on its way to them.
    fn fill_due_slots(&mut self, c: &Cluster) {
        // The cluster's agent is never started beside one still alive (one leaving after a
        // crash of its channel, or an unresponsive one being killed): never two at once.
        let agent_wanted = self.agent_wanted() && !self.cluster_agent_alive(c);
        let free: Vec<usize> = self
            .slots
            .active()
            .filter(|(i, s)| s.due && s.is_empty() && !self.is_launching(*i))
            .filter(|(i, _)| agent_wanted || !self.slots.is_agent(*i))
            .map(|(i, _)| i)
            .collect();
        for slot in free {
            if let Some(s) = self.slots.get_mut(slot) {
                s.due = false;
            }
            self.ask_for_child(c, slot, Purpose::Fill);
        }
    }

    fn step_reload(&mut self, c: &mut Cluster) {
        while let Some(reload) = &mut self.reload {
            let listening = |id| c.workers.contains_key(&id) && c.listeners.held_by(id);
            match reload.next_step(&self.slots, listening) {
                Step::Replace(slot) => {
                    let id = self.ask_for_child(c, slot, Purpose::Replace);
                    if let Some(reload) = &mut self.reload {
                        reload.replacing(id, slot);
                    }
                }
                Step::Wait => break,
                Step::Done => {
                    if let Some(reload) = self.reload.take() {
                        c.events.push(reload.finish(now()));
                    }
                }
            }
        }
    }

    /// App workers go first; the agent once none is left or on its way.
    fn settle_stop(&mut self, c: &mut Cluster) {
        let apps_launching = self
            .launching
            .values()
            .any(|l| !self.slots.is_agent(l.slot));
        if !apps_launching && c.workers.values().all(|w| w.kind == WorkerKind::Agent) {
            let agents: Vec<WorkerId> = c.workers.keys().copied().collect();
            for id in agents {
                c.ask_to_leave(id);
            }
        }
        // The cluster's agent has stopped: the lease can go now, without waiting for the app
        // workers, so that another host takes over sooner. The stop ends once it has gone.
        let agent_gone = !c.workers.values().any(|w| w.kind == WorkerKind::Agent)
            && !self.launching.values().any(|l| self.slots.is_agent(l.slot));
        if let Some(lease) = &mut self.lease {
            if agent_gone && lease.release == Release::NotYet {
                lease.release = Release::Due;
            }
        }
        if c.workers.is_empty() && self.launching.is_empty() {
            if self
                .lease
                .as_ref()
                .is_some_and(|l| l.release != Release::Done)
            {
                return;
            }
            c.listeners.close_all();
            self.orphans.end(&c.workers, now());
            self.phase = Phase::Stopped;
            c.events.push(Event::Stopped);
        }
    }
}
