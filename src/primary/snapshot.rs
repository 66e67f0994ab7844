//! What the cluster looks like at one moment, for operators: `rcluster status`, the metrics. The
//! loop takes it when asked (`Command::Snapshot`, `Supervisor::snapshot`) and hands it over;
//! reading each process's memory and CPU is left to the one who asked, off the loop. Only the
//! vocabulary lives here, so that `inputs` can name it without importing the loop's state.

use std::time::{Duration, SystemTime};

use super::child_command::WorkerKind;
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
    /// With option `redis`: this host's id and the other hosts of the namespace now.
    pub hosts: Option<HostsSnapshot>,
}

#[derive(Debug, Clone)]
pub struct HostsSnapshot {
    pub me: String,
    /// Id and incarnation of each other member.
    pub others: Vec<(String, u64)>,
    /// Messages of other hosts reported lost here since the cluster started.
    pub lost: u64,
    /// With `agent.scope: 'cluster'`: the host that holds the agent lease as last seen here, and
    /// its epoch.
    pub agent: Option<(String, u64)>,
}
