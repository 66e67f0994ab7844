//! Rolling reload: every worker slot gets a new process, a few slots at a time. A slot's old
//! worker is asked to leave only once its replacement is ready, and the listening sockets stay
//! in the primary throughout, so no connection is refused. A replacement that exits or is not
//! ready in time stops the reload: it is sent away, the workers not yet replaced keep serving,
//! and the callers hear `ERR_RCLUSTER_RELOAD_ABORTED` with the cause.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::json;

use super::child_command::WorkerKind;
use super::events::{Event, WorkerId};
use super::supervisor::{ReloadRequest, Supervisor, Timer, Worker};
use crate::errors;
use crate::os::process::ExitStatus;

pub(super) struct Reload {
    /// Slots still to replace, in order.
    pending: VecDeque<usize>,
    /// Replacements started and not yet ready, with their slot.
    incoming: HashMap<WorkerId, usize>,
    parallel: usize,
    /// How many slots the reload set out to replace, and how many it has.
    total: usize,
    replaced: usize,
    /// The JavaScript calls waiting for the outcome.
    tickets: Vec<u64>,
    started: Instant,
}

impl Supervisor {
    pub(super) async fn begin_reload(&mut self, request: ReloadRequest) {
        let Some(policy) = self.options().map(|o| o.reload) else {
            return;
        };
        if let Some(why) = self.not_running() {
            self.events.push(Event::Reloaded {
                tickets: request.ticket.into_iter().collect(),
                error: Some((errors::NOT_RUNNING, format!("cannot reload: {why}"))),
                details: json!({}),
            });
            return;
        }
        // A call while a reload runs joins it.
        if let Some(reload) = &mut self.reload {
            reload.tickets.extend(request.ticket);
            return;
        }
        let parallel = request.parallel.unwrap_or(policy.parallel);
        let with_agent = request.agent.unwrap_or(policy.agent);
        // The agent first, as at startup: the app workers may depend on it.
        let mut pending: VecDeque<usize> =
            self.agent_slot.filter(|_| with_agent).into_iter().collect();
        pending.extend(self.app_slots());
        self.events.push(Event::ReloadStarted {
            trigger: request.trigger,
            workers: pending.len(),
        });
        self.reload = Some(Reload {
            total: pending.len(),
            pending,
            incoming: HashMap::new(),
            parallel,
            replaced: 0,
            tickets: request.ticket.into_iter().collect(),
            started: Instant::now(),
        });
        self.advance_reload().await;
    }

    /// `rcluster.reload()` or ThinkJS's reload message from a child.
    pub(super) fn reload_requested_by(&mut self, id: WorkerId) {
        let request = ReloadRequest {
            ticket: None,
            parallel: None,
            agent: None,
            trigger: format!("worker {id}"),
        };
        let _ = self.inputs.send(super::supervisor::Input::Command(
            super::supervisor::Command::Reload(request),
        ));
    }

    /// Starts replacements until `parallel` are on their way; finishes once none is left.
    pub(super) async fn advance_reload(&mut self) {
        loop {
            let Some(reload) = &mut self.reload else {
                return;
            };
            if reload.incoming.len() >= reload.parallel {
                return;
            }
            let Some(slot) = reload.pending.pop_front() else {
                if reload.incoming.is_empty() {
                    self.finish_reload();
                }
                return;
            };
            // A slot scaled away, or empty and waiting for its restart, gets new code anyway.
            let Some(current) = self.slots.get(slot) else {
                continue;
            };
            if current.retired || current.current.is_none() {
                if let Some(reload) = &mut self.reload {
                    reload.total -= 1;
                }
                continue;
            }
            match self.spawn_in_slot(slot).await {
                Ok(id) => {
                    self.slots[slot].incoming = Some(id);
                    if let Some(reload) = &mut self.reload {
                        reload.incoming.insert(id, slot);
                    }
                }
                Err(e) => {
                    self.abort_reload(e);
                    return;
                }
            }
        }
    }

    pub(super) fn is_reload_replacement(&self, id: WorkerId) -> bool {
        self.reload
            .as_ref()
            .is_some_and(|r| r.incoming.contains_key(&id))
    }

    /// A replacement is ready: it takes its slot and the old worker leaves gracefully.
    pub(super) fn reload_on_ready(&mut self, id: WorkerId) {
        let Some(slot) = self.reload.as_mut().and_then(|r| r.incoming.remove(&id)) else {
            return;
        };
        if let Some(reload) = &mut self.reload {
            reload.replaced += 1;
        }
        self.slots[slot].incoming = None;
        if let Some(old) = self.slots[slot].current.replace(id) {
            self.retire(old);
        }
        self.after(Duration::ZERO, Timer::ReloadStep);
    }

    /// A replacement exited before it was ready: the deploy is broken, the reload stops.
    pub(super) fn reload_on_exit(&mut self, id: WorkerId, worker: &Worker, status: ExitStatus) {
        if !self.is_reload_replacement(id) {
            return;
        }
        let name = match worker.kind {
            WorkerKind::Agent => "the new agent",
            WorkerKind::App => "a new worker",
        };
        self.abort_reload(format!(
            "{name} (worker {id}, pid {}) exited with {} before it was ready",
            worker.process.pid(),
            status.describe_long()
        ));
    }

    /// Ends the reload where it stands. Replacements still on their way are sent away; every
    /// slot keeps the worker it had.
    pub(super) fn abort_reload(&mut self, cause: String) {
        let Some(reload) = self.reload.take() else {
            return;
        };
        for (id, slot) in &reload.incoming {
            self.slots[*slot].incoming = None;
            self.retire(*id);
            // Its old worker died meanwhile: the slot is filled again, as after a crash.
            let s = &self.slots[*slot];
            if s.current.is_none() && !s.retired {
                self.schedule_restart(*slot, Duration::ZERO);
            }
        }
        let message = format!(
            "reload aborted: {cause}; {} of {} workers were replaced, the others keep serving",
            reload.replaced, reload.total
        );
        self.events.push(Event::Reloaded {
            tickets: reload.tickets,
            error: Some((errors::RELOAD_ABORTED, message)),
            details: json!({ "replaced": reload.replaced, "workers": reload.total }),
        });
    }

    fn finish_reload(&mut self) {
        let Some(reload) = self.reload.take() else {
            return;
        };
        self.events.push(Event::Reloaded {
            tickets: reload.tickets,
            error: None,
            details: json!({
                "replaced": reload.replaced,
                "workers": reload.total,
                "duration": reload.started.elapsed().as_millis() as u64,
            }),
        });
    }
}
