//! What the cluster looks like at one moment, for operators: `rcluster status`, the metrics. The
//! loop takes it when asked (`Command::Snapshot`) and hands it over; reading each process's
//! memory and CPU is left to the one who asked, off the loop.

use std::time::{Duration, SystemTime};

use super::child_command::WorkerKind;
use super::cluster::Cluster;
use super::supervision::{Phase, Supervision};
use super::timers::now;
use super::workers::{Worker, WorkerState};
use super::WorkerId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    Starting,
    Running,
    Reloading,
    Stopping,
    Stopped,
}

impl ClusterState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterState::Starting => "starting",
            ClusterState::Running => "running",
            ClusterState::Reloading => "reloading",
            ClusterState::Stopping => "stopping",
            ClusterState::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone)]
pub struct WorkerSnapshot {
    pub id: WorkerId,
    pub pid: u32,
    pub kind: WorkerKind,
    pub slot: Option<usize>,
    /// Its `NODE_APP_INSTANCE`; None for the agent.
    pub instance: Option<usize>,
    /// `starting`, `ready`, `disconnecting` or `leaving`.
    pub state: &'static str,
    /// Restarts of its slot since the cluster started.
    pub restarts: u64,
    pub started_at: SystemTime,
    pub uptime: Duration,
    /// How late its last heartbeat timer fired: its event loop's delay.
    pub loop_delay: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub state: ClusterState,
    /// App workers the cluster should run (its slots in service).
    pub target_workers: usize,
    /// Ordered by id.
    pub workers: Vec<WorkerSnapshot>,
    /// Each worker slot in use: its number, its kind, its restarts since the cluster started.
    pub slots: Vec<(usize, WorkerKind, u64)>,
    /// Messages, requests and replies the messenger has routed since the cluster started.
    pub messages: u64,
}

fn state_name(state: WorkerState) -> &'static str {
    match state {
        WorkerState::Starting => "starting",
        WorkerState::Ready => "ready",
        WorkerState::Disconnecting { .. } => "disconnecting",
        WorkerState::Leaving => "leaving",
    }
}

fn worker(id: WorkerId, w: &Worker, restarts: u64, instance: Option<usize>) -> WorkerSnapshot {
    let uptime = now().saturating_duration_since(w.started);
    WorkerSnapshot {
        id,
        pid: w.pid(),
        kind: w.kind,
        slot: w.slot,
        instance,
        state: state_name(w.state),
        restarts,
        started_at: SystemTime::now() - uptime,
        uptime,
        loop_delay: w.loop_delay,
    }
}

pub fn take(c: &Cluster, supervision: Option<&Supervision>) -> Snapshot {
    let mut workers: Vec<WorkerSnapshot> = c
        .workers
        .iter()
        .map(|(id, w)| {
            let (restarts, instance) = match (supervision, w.slot) {
                (Some(s), Some(slot)) => (s.restarts(slot), s.instance(slot)),
                _ => (0, None),
            };
            worker(*id, w, restarts, instance)
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
    }
}
