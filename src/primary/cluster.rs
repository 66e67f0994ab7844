//! What the loop owns and every part of the primary works with: the workers, the listening
//! sockets, the messenger, the timers and the queue of events for JavaScript. The operations here
//! are the ones both primaries share (the supervised one and the Node-compatible one).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;

use super::child_command::WorkerKind;
use super::events::{Event, EventQueue};
use super::inputs::{Input, InputSender};
use super::launcher::{Launched, Sinks};
use super::listeners::Listeners;
use super::messenger::{Cx, Messenger};
use super::timers::{now, Timer, Timers};
use super::workers::{self, Process, ProcessTable, Worker, WorkerState, Workers};
use super::WorkerId;
use crate::wire::node_ipc::Serialization;

/// How often a killed child whose channels could not be watched is checked for its exit.
const REAP_POLL: Duration = Duration::from_millis(20);
const REAP_POLLS: u32 = 3000;

pub struct Cluster {
    pub workers: Workers,
    pub listeners: Listeners,
    pub messenger: Messenger,
    pub events: EventQueue,
    pub timers: Timers,
    pub inputs: InputSender,
    /// The children's processes, for signals from the JavaScript thread.
    pub processes: ProcessTable,
    /// Worker ids, shared with the JavaScript thread's `fork()`.
    pub ids: Arc<AtomicU32>,
    /// How long a worker asked to leave gets before SIGKILL.
    pub kill_timeout: Duration,
    /// `stopSignal`: sent to an app worker right after the disconnect that sends it away.
    pub stop_signal: Option<Signal>,
    /// The largest message a child may send on its Node channel.
    pub max_ipc_message: usize,
}

impl Cluster {
    pub fn next_id(&self) -> WorkerId {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Lends the messenger what it works with.
    pub fn messenger_cx(&mut self, starting: bool) -> (&mut Messenger, Cx<'_>) {
        (
            &mut self.messenger,
            Cx {
                workers: &mut self.workers,
                events: &self.events,
                timers: &mut self.timers,
                starting,
            },
        )
    }

    /// Watches a new child's channels and makes it a worker. On failure the child is killed
    /// and reaped, and the reason returned: it never becomes a worker.
    pub fn attach(
        &mut self,
        id: WorkerId,
        slot: Option<usize>,
        kind: WorkerKind,
        launched: Launched,
        mode: Serialization,
    ) -> Result<&Worker, String> {
        let (tx, frames_tx) = (self.inputs.clone(), self.inputs.clone());
        let sinks = Sinks {
            channel: Box::new(move |event| {
                let _ = tx.send(Input::Channel(id, event));
            }),
            frames: Box::new(move |event| {
                let _ = frames_tx.send(Input::Frames(id, event));
            }),
            mode,
            max_message: self.max_ipc_message,
            max_frame: self.messenger.max_frame(),
            queue_limit: self.messenger.queue_limit(),
        };
        let (process, attached) = launched.attach(sinks);
        let attached = match attached {
            Ok(attached) => attached,
            Err(e) => {
                reap_after_kill(process);
                return Err(format!("cannot watch its channel: {e}"));
            }
        };
        let frames = match attached.frames {
            Ok(frames) => frames,
            Err(e) => {
                // It runs on without a messenger; what is sent to it is reported undeliverable.
                self.events.warn(
                    Some(id),
                    crate::errors::SPAWN_FAILED,
                    format!("worker {id}: cannot watch its messenger channel: {e}"),
                );
                None
            }
        };
        if frames.is_some() {
            self.messenger.join(id, process.pid(), kind);
        }
        self.processes.insert(id, process.clone());
        let worker = Worker {
            slot,
            kind,
            state: WorkerState::Starting,
            process,
            conn: attached.conn,
            backlog: attached.backlog,
            mode,
            seq: 0,
            connected: true,
            closed_by_primary: false,
            listen_refused: false,
            rr_in_flight: Default::default(),
            last_beat: None,
            loop_delay: None,
            started: now(),
            frames,
            before_hello: Some((Vec::new(), 0)),
            stderr_tail: attached.stderr_tail,
        };
        // Ids are unique for the life of the primary (`next_id`).
        debug_assert!(!self.workers.contains_key(&id), "worker {id} twice");
        self.workers.insert(id, worker);
        self.workers
            .get(&id)
            .ok_or_else(|| format!("worker {id} was not kept"))
    }

    /// A child spawned for nothing any more (the cluster stopped, its slot went meanwhile): it
    /// has not been told anything or given anything, so it is killed, and reaped.
    pub fn discard(&self, launched: Launched) {
        reap_after_kill(launched.process);
    }

    /// A worker has exited: it leaves the messenger (whose requests settle once its channel is
    /// drained), its sockets and the tables. Returns it, if it was one.
    pub fn remove_worker(&mut self, id: WorkerId) -> Option<Worker> {
        self.processes.remove(id);
        // Before it leaves `workers`: the messenger looks at its channel.
        let (messenger, mut cx) = self.messenger_cx(false);
        messenger.member_exited(&mut cx, id);
        let worker = self.workers.remove(&id)?;
        self.listeners.release_all(id);
        Some(worker)
    }

    pub fn send_cluster(&mut self, id: WorkerId, fields: serde_json::Value) -> Option<u64> {
        workers::send_cluster(&mut self.workers, &self.events, id, fields, None)
    }

    /// Graceful: the worker closes its servers, finishes what it serves, then exits.
    pub fn ask_to_leave(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        // Asked once: Node's worker fails on a second `disconnect`.
        if w.is_leaving() {
            return;
        }
        w.state = WorkerState::Leaving;
        if w.kind == WorkerKind::Agent {
            self.messenger.cluster_agent_stopping(id);
        }
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        if w.kind == WorkerKind::Agent || !w.connected {
            // The agent is no cluster worker: it is asked to stop as any service is.
            let _ = w.process.signal(Signal::SIGTERM);
        } else {
            // As Node's primary does in worker.disconnect(): the exit that follows was asked for.
            self.events.push(Event::ExitedAfterDisconnect { id });
            self.send_cluster(id, json!({ "act": "disconnect" }));
            // For apps that leave on a signal rather than on the disconnect (Egg's workers).
            if let (Some(signal), Some(w)) = (self.stop_signal, self.workers.get(&id)) {
                let _ = w.process.signal(signal);
            }
        }
    }

    /// A worker the primary is done with: asked to leave, killed if it is still there after
    /// `killTimeout`.
    pub fn retire(&mut self, id: WorkerId) {
        self.ask_to_leave(id);
        self.timers
            .after(self.kill_timeout, Timer::KillIfAlive { id });
    }

    /// A worker that leaves on its own (after an exception nobody caught it closes its servers
    /// itself): its exit is no failure, and it is killed if it is still there after `killTimeout`.
    pub fn let_go(&mut self, id: WorkerId) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.state = WorkerState::Leaving;
            self.timers
                .after(self.kill_timeout, Timer::KillIfAlive { id });
        }
    }

    pub fn kill(&self, id: WorkerId) {
        if let Some(w) = self.workers.get(&id) {
            w.kill();
        }
    }
}

/// Kills a child whose channels are not watched, and collects its exit status, so that it does
/// not stay a zombie.
fn reap_after_kill(process: Arc<dyn Process>) {
    let _ = process.signal(Signal::SIGKILL);
    tokio::spawn(async move {
        for _ in 0..REAP_POLLS {
            match process.try_reap() {
                Ok(None) => tokio::time::sleep(REAP_POLL).await,
                Ok(Some(_)) | Err(_) => return,
            }
        }
    });
}
