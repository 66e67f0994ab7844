//! The children the primary knows, each with its channels and the one state field that says
//! where it is in its life.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::child_command::WorkerKind;
use super::child_output::StderrTail;
use super::events::EventQueue;
use super::WorkerId;
use crate::channel::connection::{Backlog, Outbound};
use crate::channel::frame_link::{FrameLink, Outgoing};
use crate::errors;
use crate::os::process::{ChildProcess, ExitStatus};
use crate::wire::node_ipc::{self, Serialization};

/// What the primary may do to a child process: a real one (a pidfd), or a test's stand-in.
pub trait Process: Send + Sync {
    fn pid(&self) -> u32;
    /// Sends a signal. `Ok(false)` when the child is already gone, as `process.kill` reports it.
    fn signal(&self, signal: Signal) -> io::Result<bool>;
    /// Collects its exit status if it has exited. Only for a child whose channel is not watched
    /// (its channel's task reaps it otherwise).
    fn try_reap(&self) -> io::Result<Option<ExitStatus>>;
}

impl Process for ChildProcess {
    fn pid(&self) -> u32 {
        ChildProcess::pid(self)
    }
    fn signal(&self, signal: Signal) -> io::Result<bool> {
        ChildProcess::signal(self, signal)
    }
    fn try_reap(&self) -> io::Result<Option<ExitStatus>> {
        ChildProcess::try_reap(self)
    }
}

/// Where a worker is in its life. Its channel is another matter (`Worker::connected`): a worker
/// in any state may have closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Started; not ready yet.
    Starting,
    /// It met the readiness condition.
    Ready,
    /// Asked by JavaScript to disconnect (`worker.disconnect()`): its later `queryServer`s go
    /// unanswered, as under Node. Its exit, unless the primary asks it to leave, is unexpected.
    Disconnecting { was_ready: bool },
    /// The primary sent it away (a stop, a replacement, a scale-down): its exit is no failure.
    Leaving,
}

impl WorkerState {
    /// As operators read it (`rcluster status`).
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Ready => "ready",
            WorkerState::Disconnecting { .. } => "disconnecting",
            WorkerState::Leaving => "leaving",
        }
    }
}

pub struct Worker {
    pub slot: Option<usize>,
    pub kind: WorkerKind,
    pub state: WorkerState,
    pub process: Arc<dyn Process>,
    pub conn: mpsc::UnboundedSender<Outbound>,
    /// What waits in `conn` for the child (src/channel/connection.rs).
    pub backlog: Backlog,
    pub mode: Serialization,
    /// Our counter for the cluster messages we send it.
    pub seq: u64,
    /// Its Node channel is open.
    pub connected: bool,
    /// The primary closed its Node channel (JavaScript asked, or the child broke the protocol):
    /// the child did not disconnect itself.
    pub closed_by_primary: bool,
    /// A `queryServer` of its was refused and the operator was told (once per worker).
    pub listen_refused: bool,
    /// Round-robin connections sent as `newconn`, awaiting `accepted`, by our seq.
    pub rr_in_flight: HashMap<u64, (String, OwnedFd)>,
    /// When its event loop last sent a heartbeat (src/primary/watchdog.rs); None before the first.
    pub last_beat: Option<Instant>,
    /// How late its last heartbeat timer fired (its event loop's delay), as it reported.
    pub loop_delay: Option<Duration>,
    /// When the primary attached it.
    pub started: Instant,
    /// The messenger channel (supervised children).
    pub frames: Option<FrameLink>,
    /// Frames for it from before it opened its messenger, and their size.
    pub before_hello: Option<(Vec<Outgoing>, usize)>,
    /// The last lines the agent wrote to stderr, for the error if it dies at startup.
    pub stderr_tail: Option<StderrTail>,
}

/// What the primary's answers may pile up for a worker that does not read its channel.
const MAX_UNREAD_BYTES: usize = 64 << 20;
const MAX_UNREAD_FDS: usize = 64;

/// Why a cluster message was not sent.
pub enum NotSent {
    /// The worker is gone or its channel is closed.
    Closed,
    /// It does not read its channel: `(bytes, descriptors)` wait for it. The caller kills it.
    Unread(usize, usize),
}

impl Worker {
    /// It met the readiness condition and the primary has not sent it away.
    pub fn is_ready(&self) -> bool {
        matches!(
            self.state,
            WorkerState::Ready | WorkerState::Disconnecting { was_ready: true }
        )
    }

    pub fn is_leaving(&self) -> bool {
        self.state == WorkerState::Leaving
    }

    /// Asked to close its servers, by JavaScript or by the primary: as under Node, its later
    /// `queryServer`s go unanswered.
    pub fn is_closing(&self) -> bool {
        matches!(
            self.state,
            WorkerState::Disconnecting { .. } | WorkerState::Leaving
        )
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn kill(&self) {
        let _ = self.process.signal(Signal::SIGKILL);
    }

    /// Sends `{cmd: 'NODE_CLUSTER', ...fields, seq}`, wrapped with a descriptor if one is given.
    /// Returns the seq used.
    pub fn send_cluster(
        &mut self,
        fields: Value,
        handle: Option<(&str, OwnedFd)>,
    ) -> Result<u64, NotSent> {
        if !self.connected {
            return Err(NotSent::Closed);
        }
        let (queued, queued_fds) = self.backlog.size();
        if queued > MAX_UNREAD_BYTES || queued_fds >= MAX_UNREAD_FDS {
            // What the primary sends a worker answers what it asked; one that keeps asking and
            // does not read the answers would make the primary hold them without end.
            return Err(NotSent::Unread(queued, queued_fds));
        }
        let seq = self.seq;
        self.seq += 1;
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
        let bytes = node_ipc::encode(self.mode, &value);
        self.backlog.add(bytes.len(), fd.is_some());
        self.conn
            .send(Outbound::Frame {
                bytes,
                fd,
                ticket: None,
            })
            .map_err(|_| NotSent::Closed)?;
        Ok(seq)
    }
}

pub type Workers = BTreeMap<WorkerId, Worker>;

/// The children's processes by id, for signals sent straight from the JavaScript thread.
#[derive(Clone, Default)]
pub struct ProcessTable(Arc<Mutex<HashMap<WorkerId, Arc<dyn Process>>>>);

impl ProcessTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<WorkerId, Arc<dyn Process>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn insert(&self, id: WorkerId, p: Arc<dyn Process>) {
        self.lock().insert(id, p);
    }
    pub fn remove(&self, id: WorkerId) {
        self.lock().remove(&id);
    }
    pub fn get(&self, id: WorkerId) -> Option<Arc<dyn Process>> {
        self.lock().get(&id).cloned()
    }
}

/// Sends a cluster message to a worker (see `Worker::send_cluster`); one that does not read its
/// channel is killed, and the operator told. None if nothing was sent.
pub fn send_cluster(
    workers: &mut Workers,
    events: &EventQueue,
    id: WorkerId,
    fields: Value,
    handle: Option<(&str, OwnedFd)>,
) -> Option<u64> {
    let w = workers.get_mut(&id)?;
    match w.send_cluster(fields, handle) {
        Ok(seq) => Some(seq),
        Err(NotSent::Closed) => None,
        Err(NotSent::Unread(bytes, fds)) => {
            w.kill();
            events.warn(
                Some(id),
                errors::PROTOCOL,
                format!("worker {id} (pid {}) does not read its IPC channel: {bytes} bytes and {fds} descriptors wait for it; killed", w.pid()),
            );
            None
        }
    }
}
