//! `scale(n)`: more or fewer app worker slots while the cluster runs. A new slot is filled as at
//! startup; a removed slot's worker leaves gracefully, as in `stop()`. The call settles once every
//! slot in use has a ready worker and the removed ones have exited.

use super::events::Event;
use super::supervisor::{Slot, Supervisor};
use crate::errors;

impl Supervisor {
    pub(super) async fn scale(&mut self, workers: usize, ticket: u64) {
        if let Some(why) = self.not_running() {
            self.events.push(Event::Scaled {
                tickets: vec![ticket],
                workers: self.app_slots().len(),
                error: Some((errors::NOT_RUNNING, format!("cannot scale: {why}"))),
            });
            return;
        }
        self.scale_tickets.push(ticket);
        let active = self.app_slots();
        if workers > active.len() {
            for _ in active.len()..workers {
                let slot = self.add_slot();
                self.start_slot(slot).await;
            }
        } else {
            // The newest slots go first.
            for slot in active.into_iter().skip(workers).rev() {
                self.remove_slot(slot);
            }
        }
        self.scale_progress();
    }

    /// A slot scaled away earlier, or a new one.
    fn add_slot(&mut self) -> usize {
        let reusable = (0..self.slots.len()).find(|s| {
            let slot = &self.slots[*s];
            slot.retired && slot.current.is_none() && slot.incoming.is_none()
        });
        match reusable {
            Some(slot) => {
                // A fresh slot: the restarts of its earlier life do not count against it.
                let generation = self.slots[slot].generation + 1;
                self.slots[slot] = Slot {
                    generation,
                    ..Slot::default()
                };
                slot
            }
            None => {
                self.slots.push(Slot::default());
                self.slots.len() - 1
            }
        }
    }

    fn remove_slot(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        s.retired = true;
        // A restart it was waiting for will not happen.
        s.generation += 1;
        let leaving = [s.current.take(), s.incoming.take()];
        for id in leaving.into_iter().flatten() {
            self.retire(id);
        }
        self.close_retired_slot(slot);
    }

    /// A retired slot whose workers are gone gives up its own listening sockets (reuseport).
    pub(super) fn close_retired_slot(&mut self, slot: usize) {
        let retired = self.slots.get(slot).is_some_and(|s| s.retired);
        let occupied = self.workers.values().any(|w| w.slot == Some(slot));
        if retired && !occupied {
            self.listeners.close_slot(slot);
        }
    }

    /// Settles the waiting `scale()` calls once the workers match the count asked for.
    pub(super) fn scale_progress(&mut self) {
        if self.scale_tickets.is_empty() {
            return;
        }
        let active = self.app_slots();
        let filled = active.iter().all(|s| {
            self.slots[*s]
                .current
                .and_then(|id| self.workers.get(&id))
                .is_some_and(|w| w.ready)
        });
        let removed_gone = !self.workers.values().any(|w| {
            w.slot
                .is_some_and(|s| self.slots.get(s).is_some_and(|s| s.retired))
        });
        if filled && removed_gone {
            self.scale_ended(None);
        }
    }

    /// Settles the waiting `scale()` calls; with a reason, they fail.
    pub(super) fn scale_ended(&mut self, failure: Option<&str>) {
        if self.scale_tickets.is_empty() {
            return;
        }
        self.events.push(Event::Scaled {
            tickets: std::mem::take(&mut self.scale_tickets),
            workers: self.app_slots().len(),
            error: failure.map(|why| (errors::NOT_RUNNING, format!("scale stopped: {why}"))),
        });
    }
}
