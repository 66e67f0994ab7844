//! What the primary tells JavaScript. Events queue here and JavaScript takes them in batches: the
//! queue wakes it once when it goes from empty to non-empty, however many events follow.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use serde_json::Value;

use super::child_command::WorkerKind;
use crate::channel::connection::{ReceivedHandle, Ticket};
use crate::channel::frame_link::Frame;
use crate::os::process::ExitStatus;
use crate::wire::node_ipc::Payload;

pub use super::WorkerId;

#[derive(Debug)]
pub enum Event {
    Fork {
        id: WorkerId,
        pid: u32,
        kind: WorkerKind,
        slot: Option<usize>,
    },
    Online {
        id: WorkerId,
    },
    /// `address` holds `{ addressType, address, port, fd }` as the worker reported them.
    Listening {
        id: WorkerId,
        address: Value,
    },
    Message {
        id: WorkerId,
        payload: Payload,
        handle: Option<ReceivedHandle>,
    },
    /// A messenger frame for the primary's JavaScript (a message, or news that one of its own
    /// could not be delivered).
    Frame(Frame),
    /// A `NODE_*` message outside the cluster protocol (Node's socket-list bookkeeping).
    Internal {
        id: WorkerId,
        message: Value,
    },
    ExitedAfterDisconnect {
        id: WorkerId,
    },
    Disconnect {
        id: WorkerId,
    },
    Exit {
        id: WorkerId,
        status: ExitStatus,
    },
    Sent {
        ticket: Ticket,
        error: Option<String>,
    },
    /// The worker met the readiness condition.
    WorkerReady {
        id: WorkerId,
    },
    /// Every worker of the cluster is ready, for the first time.
    Ready,
    /// A failure of the cluster as a whole; it is stopping.
    Error {
        code: &'static str,
        message: String,
        details: Value,
    },
    /// Something went wrong with one worker, and the primary dealt with it.
    Warning {
        code: &'static str,
        message: String,
        id: Option<WorkerId>,
        /// Facts for programs (`warning.details`), or null.
        details: Value,
    },
    /// A rolling reload began: who asked, and how many slots it replaces.
    ReloadStarted {
        trigger: String,
        workers: usize,
    },
    /// A rolling reload ended: the `reload()` calls it settles, and its failure if it stopped.
    Reloaded {
        tickets: Vec<u64>,
        error: Option<(&'static str, String)>,
        details: Value,
    },
    /// The app workers match the count `scale()` asked for (or never will: `error`).
    Scaled {
        tickets: Vec<u64>,
        workers: usize,
        error: Option<(&'static str, String)>,
    },
    /// A stop began: who asked.
    Stopping {
        trigger: String,
    },
    Stopped,
    /// Another host of the namespace is a member (option `redis`).
    HostJoined {
        host: String,
        incarnation: u64,
    },
    /// Another host left the namespace: `reason` 'left', 'timeout' or 'restarted'.
    HostLeft {
        host: String,
        incarnation: u64,
        reason: &'static str,
    },
    /// This host holds the agent lease (`agent.scope: 'cluster'`) and starts the agent.
    AgentLead {
        epoch: u64,
    },
    /// This host lost the agent lease, or is about to, and stops the agent now.
    AgentLose {
        epoch: u64,
        reason: String,
    },
}

impl Event {
    /// It ends a rolling reload that began (`ReloadStarted`), done or aborted; not a refusal
    /// (which carries no figures) nor the end of one worker's `replace()`.
    pub fn ends_a_reload(&self) -> bool {
        match self {
            Event::Reloaded { details, .. } => {
                details.get("workers").is_some()
                    && details.get("replacedWorker").is_none_or(Value::is_null)
            }
            _ => false,
        }
    }
}

#[derive(Clone)]
pub struct EventQueue {
    events: Arc<Mutex<Vec<Event>>>,
    wake: Arc<dyn Fn() + Send + Sync>,
    /// Bytes of messenger frames waiting for JavaScript: the primary's own messenger queue,
    /// bounded like a child's (src/primary/messenger.rs).
    frame_bytes: Arc<AtomicUsize>,
    /// Sees every event before JavaScript does: the operator's side (src/operate/) answers its
    /// own requests and tells systemd from here, on the loop, without waiting on JavaScript.
    observer: Arc<OnceLock<Observer>>,
}

pub type Observer = Arc<dyn Fn(&Event) + Send + Sync>;

/// What a frame counts for while it waits for JavaScript.
fn frame_cost(event: &Event) -> usize {
    match event {
        Event::Frame(frame) => frame.bytes.len() + crate::channel::frame_link::ENTRY_OVERHEAD,
        _ => 0,
    }
}

impl EventQueue {
    pub fn new(wake: Arc<dyn Fn() + Send + Sync>) -> Self {
        EventQueue {
            events: Arc::new(Mutex::new(Vec::new())),
            wake,
            frame_bytes: Arc::new(AtomicUsize::new(0)),
            observer: Arc::new(OnceLock::new()),
        }
    }

    /// Sets the one observer; it must not block, as the loop calls it. A second one is refused.
    pub fn observe(&self, observer: Observer) -> bool {
        self.observer.set(observer).is_ok()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Event>> {
        // A panic while holding this lock cannot leave the Vec half-changed: keep using it.
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, event: Event) {
        if let Some(observe) = self.observer.get() {
            observe(&event);
        }
        self.frame_bytes
            .fetch_add(frame_cost(&event), Ordering::AcqRel);
        let was_empty = {
            let mut events = self.lock();
            let was_empty = events.is_empty();
            events.push(event);
            was_empty
        };
        if was_empty {
            (self.wake)();
        }
    }

    pub fn take(&self) -> Vec<Event> {
        let events = std::mem::take(&mut *self.lock());
        let taken: usize = events.iter().map(frame_cost).sum();
        self.frame_bytes.fetch_sub(taken, Ordering::AcqRel);
        events
    }

    /// Something went wrong with one worker (or none), and the primary dealt with it.
    pub fn warn(&self, id: Option<WorkerId>, code: &'static str, message: String) {
        self.push(Event::Warning {
            code,
            message,
            id,
            details: Value::Null,
        });
    }

    /// Bytes of messenger frames JavaScript has not taken yet.
    pub fn frame_bytes(&self) -> usize {
        self.frame_bytes.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn wakes_once_per_batch() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = wakes.clone();
        let q = EventQueue::new(Arc::new(move || {
            w.fetch_add(1, Ordering::SeqCst);
        }));
        q.push(Event::Ready);
        q.push(Event::Stopped);
        assert_eq!(wakes.load(Ordering::SeqCst), 1);
        assert_eq!(q.take().len(), 2);
        q.push(Event::Ready);
        assert_eq!(wakes.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn counts_the_frames_javascript_has_not_taken() {
        use crate::wire::frames::{encode, parse, Header, Kind, Target};
        let q = EventQueue::new(Arc::new(|| {}));
        let header = Header {
            kind: Kind::Message,
            target: Target::Primary,
            flags: 0,
            target_id: 0,
            source_id: 1,
            source_pid: 2,
            correlation: 0,
            action: "a".into(),
            host: None,
        };
        let frame = parse(encode(&header, &[7; 100]).unwrap()).unwrap();
        let len = frame.bytes.len();
        q.push(Event::Frame(frame.clone()));
        q.push(Event::Ready);
        q.push(Event::Frame(frame));
        assert_eq!(
            q.frame_bytes(),
            2 * (len + crate::channel::frame_link::ENTRY_OVERHEAD)
        );
        assert_eq!(q.take().len(), 3);
        assert_eq!(q.frame_bytes(), 0);
    }
}
