//! `scale(n)`: more or fewer app worker slots while the cluster runs. A new slot is filled as at
//! startup; a removed slot's worker leaves gracefully, as in `stop()`. The call settles once every
//! slot in use has a ready worker and the removed ones have exited.

use super::events::Event;
use super::slots::Slots;
use super::workers::Workers;
use crate::errors;

/// The `scale()` calls waiting for the workers to match the count they asked for.
#[derive(Default)]
pub struct Scale {
    tickets: Vec<u64>,
}

/// How the slots change for a new count of app workers.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Add(usize),
    /// These slots go, the newest first.
    Remove(Vec<usize>),
}

pub fn change(active: &[usize], wanted: usize) -> Change {
    if wanted >= active.len() {
        Change::Add(wanted - active.len())
    } else {
        Change::Remove(active.iter().skip(wanted).rev().copied().collect())
    }
}

impl Scale {
    pub fn wait(&mut self, ticket: u64) {
        self.tickets.push(ticket);
    }

    /// Settles the waiting calls if the workers match the slots; the event to send, if any.
    /// `launching_for_removed`: a child is being spawned for a removed slot.
    pub fn progress(
        &mut self,
        slots: &Slots,
        workers: &Workers,
        launching_for_removed: bool,
    ) -> Option<Event> {
        if self.tickets.is_empty() {
            return None;
        }
        let filled = slots
            .apps()
            .iter()
            .all(|s| slots.has_ready_worker(*s, workers));
        let removed_gone = !launching_for_removed
            && !workers.values().any(|w| {
                w.slot
                    .is_some_and(|s| slots.get(s).is_some_and(|s| s.retired))
            });
        (filled && removed_gone).then(|| self.end(slots, None))
    }

    /// Settles the waiting calls; with a reason, they fail.
    pub fn end(&mut self, slots: &Slots, failure: Option<&str>) -> Event {
        Event::Scaled {
            tickets: std::mem::take(&mut self.tickets),
            workers: slots.apps().len(),
            error: failure.map(|why| (errors::NOT_RUNNING, format!("scale stopped: {why}"))),
        }
    }

    pub fn is_waiting(&self) -> bool {
        !self.tickets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_slots_go_first() {
        assert_eq!(change(&[0, 1, 3], 1), Change::Remove(vec![3, 1]));
        assert_eq!(change(&[0, 1], 4), Change::Add(2));
        assert_eq!(change(&[0, 1], 2), Change::Add(0));
    }
}
