//! What wakes the primary's loop: calls from JavaScript, news from the children's channels, a
//! connection accepted for round-robin, a child that has been spawned, news from other hosts. Everything reaches the
//! loop on one queue, so it needs no locks and sees things in the order they happened.

use std::os::fd::OwnedFd;
use std::time::Duration;

use super::launcher::Launched;
use super::snapshot::Snapshot;
use super::WorkerId;
use crate::channel::connection::{ChannelEvent, Ticket};
use crate::channel::frame_link::Frame;
use crate::channel::frame_link::FrameEvent;
use crate::remote::{LeaseEvent, RemoteEvent};
use crate::wire::node_ipc::Serialization;

pub type InputSender = tokio::sync::mpsc::UnboundedSender<Input>;

pub enum Input {
    Command(Command),
    Channel(WorkerId, ChannelEvent),
    Frames(WorkerId, FrameEvent),
    Accepted {
        generation: u64,
        key: String,
        conn: OwnedFd,
    },
    /// A child the loop asked for has started, or could not be.
    Spawned {
        id: WorkerId,
        result: Result<Launched, String>,
    },
    /// News from the other hosts of the namespace (option `redis`), as much as had come: routed
    /// in one wake-up of the loop, as a child's batch of frames is.
    Remote(Vec<RemoteEvent>),
    /// News of the agent lease (`agent.scope: 'cluster'`).
    Lease(LeaseEvent),
    /// The agent lease has been given up, as the supervision asked.
    LeaseReleased,
}

/// A child the JavaScript thread started (`fork()` of the Node-compatible primary).
pub struct NewChild {
    pub id: WorkerId,
    pub launched: Launched,
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
        /// Who asked, for the log: 'stop()', 'rcluster stop'.
        trigger: String,
    },
    /// A messenger frame from the primary's JavaScript.
    SendFrame(Frame),
    /// The primary's JavaScript added (`on`) or removed a handler for an action.
    Handler {
        action: String,
        on: bool,
    },
    Reload(ReloadRequest),
    /// `cluster.replace(id)`: one step of a rolling reload, for that worker's slot.
    Replace {
        ticket: u64,
        id: WorkerId,
    },
    Scale {
        workers: usize,
        ticket: u64,
    },
    /// An operator asks what the cluster looks like (src/primary/snapshot.rs).
    Snapshot(tokio::sync::oneshot::Sender<Snapshot>),
    /// Answered at once: the loop is turning (systemd's watchdog, src/operate/notify.rs).
    Ping(tokio::sync::oneshot::Sender<()>),
}

/// A call for a rolling reload; `ticket` is the JavaScript promise waiting for it, if any.
pub struct ReloadRequest {
    pub ticket: Option<u64>,
    pub parallel: Option<usize>,
    pub agent: Option<bool>,
    /// Who asked, for the log: 'reload()', 'SIGHUP', 'worker 3'.
    pub trigger: String,
}
