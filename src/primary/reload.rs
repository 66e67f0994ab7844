//! Rolling reload: every worker slot gets a new process, a few slots at a time. A slot's old
//! worker is asked to leave only once its replacement is ready, and the listening sockets stay
//! in the primary throughout, so no connection is refused. The reload is done once every old
//! worker has stopped taking connections: after it, every new connection meets the new code.
//! A replacement that exits or is not ready in time stops the reload: it is sent away, the
//! workers not yet replaced keep serving, and the callers hear `ERR_RCLUSTER_RELOAD_ABORTED`
//! with the cause.
//!
//! This type keeps the reload's own state and decides its next step; the loop
//! (src/primary/supervision.rs) starts the replacements and moves the slots.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use serde_json::json;

use super::events::Event;
use super::slots::Slots;
use super::WorkerId;
use crate::errors;

pub struct Reload {
    /// Slots still to replace, in order.
    pending: VecDeque<usize>,
    /// Replacements asked for and not yet ready, with their slot.
    incoming: HashMap<WorkerId, usize>,
    parallel: usize,
    /// How many slots the reload set out to replace, and how many it has.
    total: usize,
    replaced: usize,
    /// The workers it replaced: it is done once none of them takes connections any more.
    replaced_workers: Vec<WorkerId>,
    /// The JavaScript calls waiting for the outcome.
    tickets: Vec<u64>,
    started: Instant,
    /// The workers that took the replaced ones' places.
    new_workers: Vec<WorkerId>,
    /// A `replace(id)`: the one worker it replaces.
    only: Option<WorkerId>,
}

/// What the reload wants next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A replacement for this slot.
    Replace(usize),
    /// As many replacements as allowed are on their way.
    Wait,
    /// Every slot has its new worker.
    Done,
}

impl Reload {
    /// `order`: the slots to replace, the agent's first (the app workers may depend on it).
    pub fn new(order: Vec<usize>, parallel: usize, ticket: Option<u64>, now: Instant) -> Self {
        Reload {
            total: order.len(),
            pending: order.into(),
            incoming: HashMap::new(),
            parallel,
            replaced: 0,
            replaced_workers: Vec::new(),
            tickets: ticket.into_iter().collect(),
            started: now,
            new_workers: Vec::new(),
            only: None,
        }
    }

    /// `cluster.replace(id)`: one step of a reload, for the slot of worker `id`.
    pub fn replace(slot: usize, id: WorkerId, ticket: u64, now: Instant) -> Self {
        Reload {
            only: Some(id),
            ..Reload::new(vec![slot], 1, Some(ticket), now)
        }
    }

    /// A call to `reload()` may join this reload; not a `replace(id)`.
    pub fn is_replace(&self) -> bool {
        self.only.is_some()
    }

    /// A call while a reload runs joins it.
    pub fn join(&mut self, ticket: Option<u64>) {
        self.tickets.extend(ticket);
    }

    /// `listening(id)`: whether a worker still takes connections.
    pub fn next_step(&mut self, slots: &Slots, listening: impl Fn(WorkerId) -> bool) -> Step {
        while self.incoming.len() < self.parallel {
            let Some(slot) = self.pending.pop_front() else {
                break;
            };
            // A slot scaled away, or empty and waiting for its restart, gets new code anyway.
            if slots
                .get(slot)
                .is_none_or(|s| s.retired || s.current.is_none())
            {
                self.total -= 1;
                continue;
            }
            return Step::Replace(slot);
        }
        if self.replaced_all() && !self.replaced_workers.iter().any(|id| listening(*id)) {
            Step::Done
        } else {
            Step::Wait
        }
    }

    /// A replacement for `slot` was asked for, as worker `id`.
    pub fn replacing(&mut self, id: WorkerId, slot: usize) {
        self.incoming.insert(id, slot);
    }

    pub fn is_replacement(&self, id: WorkerId) -> bool {
        self.incoming.contains_key(&id)
    }

    /// Every slot has its new worker; the old ones may still be finishing.
    pub fn replaced_all(&self) -> bool {
        self.pending.is_empty() && self.incoming.is_empty()
    }

    /// A slot was scaled away: it is not replaced; its replacement, if it has one on its way,
    /// is returned, to be sent away.
    pub fn slot_removed(&mut self, slot: usize) -> Option<WorkerId> {
        if let Some(at) = self.pending.iter().position(|s| *s == slot) {
            self.pending.remove(at);
            self.total -= 1;
            return None;
        }
        let id = self
            .incoming
            .iter()
            .find_map(|(id, s)| (*s == slot).then_some(*id))?;
        self.incoming.remove(&id);
        self.total -= 1;
        Some(id)
    }

    /// A replacement is ready: the slot it takes.
    pub fn on_ready(&mut self, id: WorkerId) -> Option<usize> {
        let slot = self.incoming.remove(&id)?;
        self.replaced += 1;
        self.new_workers.push(id);
        Some(slot)
    }

    /// The worker a replacement took the place of, now sent away.
    pub fn replaced_worker(&mut self, id: WorkerId) {
        self.replaced_workers.push(id);
    }

    /// Ends the reload where it stands: the replacements on their way, to send away, and the
    /// event that settles the callers.
    pub fn abort(self, cause: &str) -> (Vec<(WorkerId, usize)>, Event) {
        let message = match self.only {
            Some(id) => format!("replace aborted: {cause}; worker {id} keeps serving"),
            None => format!(
                "reload aborted: {cause}; {} of {} workers were replaced, the others keep serving",
                self.replaced, self.total
            ),
        };
        let event = Event::Reloaded {
            tickets: self.tickets,
            error: Some((errors::RELOAD_ABORTED, message)),
            details: json!({ "replaced": self.replaced, "workers": self.total }),
        };
        (self.incoming.into_iter().collect(), event)
    }

    pub fn finish(self, now: Instant) -> Event {
        Event::Reloaded {
            tickets: self.tickets,
            error: None,
            details: json!({
                "replaced": self.replaced,
                "workers": self.total,
                "duration": now.saturating_duration_since(self.started).as_millis() as u64,
                "newWorkers": self.new_workers,
                "replacedWorker": self.only,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_a_few_slots_at_a_time_and_skips_empty_ones() {
        let mut slots = Slots::new(3, false);
        for (i, id) in [(0, 10), (2, 12)] {
            if let Some(s) = slots.get_mut(i) {
                s.current = Some(id);
            }
        }
        let mut reload = Reload::new(vec![0, 1, 2], 1, Some(7), Instant::now());
        assert_eq!(reload.next_step(&slots, |_| false), Step::Replace(0));
        reload.replacing(20, 0);
        assert_eq!(reload.next_step(&slots, |_| false), Step::Wait);
        assert_eq!(reload.on_ready(20), Some(0));
        // Slot 1 has no worker: it is not counted.
        assert_eq!(reload.next_step(&slots, |_| false), Step::Replace(2));
        assert_eq!(reload.total, 2);
        reload.replacing(22, 2);
        assert_eq!(reload.on_ready(22), Some(2));
        reload.replaced_worker(12);
        // Done once the worker it sent away has stopped listening.
        assert_eq!(reload.next_step(&slots, |id| id == 12), Step::Wait);
        assert_eq!(reload.next_step(&slots, |_| false), Step::Done);
        match reload.finish(Instant::now()) {
            Event::Reloaded {
                tickets,
                error,
                details,
            } => {
                assert_eq!(tickets, vec![7]);
                assert!(error.is_none());
                assert_eq!(details["replaced"], 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_abort_names_the_replacements_to_send_away() {
        let mut slots = Slots::new(2, false);
        for i in 0..2 {
            if let Some(s) = slots.get_mut(i) {
                s.current = Some(i as u32 + 1);
            }
        }
        let mut reload = Reload::new(vec![0, 1], 2, None, Instant::now());
        assert_eq!(reload.next_step(&slots, |_| false), Step::Replace(0));
        reload.replacing(5, 0);
        assert_eq!(reload.next_step(&slots, |_| false), Step::Replace(1));
        reload.replacing(6, 1);
        assert_eq!(reload.on_ready(5), Some(0));
        let (leaving, event) = reload.abort("a new worker exited");
        assert_eq!(leaving, vec![(6, 1)]);
        assert!(
            matches!(event, Event::Reloaded { error: Some((code, _)), .. } if code == errors::RELOAD_ABORTED)
        );
    }
}
