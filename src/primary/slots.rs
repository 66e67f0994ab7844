//! The supervised cluster's worker slots: what should run. Slot i holds the app worker that
//! serves as the i-th (its reuseport sockets are the slot's), the agent has the last slot, and
//! each slot keeps its own restart budget (src/primary/restart.rs).

use super::restart::RestartHistory;
use super::workers::Workers;
use super::WorkerId;

#[derive(Default)]
pub struct Slot {
    pub current: Option<WorkerId>,
    /// Its replacement during a rolling reload, until that is ready (src/primary/reload.rs).
    pub incoming: Option<WorkerId>,
    /// It wants a worker: its restart backoff is over, or it was never filled. The loop fills it
    /// when it settles and the slot is free.
    pub due: bool,
    /// Removed by scaling down; a later scale-up may use it again (src/primary/scale.rs).
    pub retired: bool,
    pub history: RestartHistory,
    /// Bumped on every scheduled restart, so that a stale timer does nothing.
    pub generation: u64,
}

impl Slot {
    /// No worker serves in it or is about to take it over (a child being spawned for it aside).
    pub fn is_empty(&self) -> bool {
        self.current.is_none() && self.incoming.is_none()
    }
}

pub struct Slots {
    list: Vec<Slot>,
    /// The agent's slot (the last one at start), when there is an agent.
    agent: Option<usize>,
}

impl Slots {
    pub fn new(apps: usize, agent: bool) -> Self {
        let count = apps + usize::from(agent);
        Slots {
            list: (0..count).map(|_| Slot::default()).collect(),
            agent: agent.then_some(apps),
        }
    }

    pub fn agent(&self) -> Option<usize> {
        self.agent
    }

    pub fn is_agent(&self, slot: usize) -> bool {
        self.agent == Some(slot)
    }

    /// An app slot's index among the app slots (`NODE_APP_INSTANCE`, as PM2 counts): the agent's
    /// slot follows the first app slots, and the slots a scale-up adds follow it. None for the
    /// agent's slot.
    pub fn app_instance(&self, slot: usize) -> Option<usize> {
        match self.agent {
            Some(agent) if slot == agent => None,
            Some(agent) if slot > agent => Some(slot - 1),
            _ => Some(slot),
        }
    }

    pub fn get(&self, slot: usize) -> Option<&Slot> {
        self.list.get(slot)
    }

    pub fn get_mut(&mut self, slot: usize) -> Option<&mut Slot> {
        self.list.get_mut(slot)
    }

    pub fn iter(&self) -> impl Iterator<Item = (usize, &Slot)> {
        self.list.iter().enumerate()
    }

    /// Slots in use, the agent's included.
    pub fn active(&self) -> impl Iterator<Item = (usize, &Slot)> {
        self.iter().filter(|(_, s)| !s.retired)
    }

    /// App worker slots in use (scaling down retires some), in order.
    pub fn apps(&self) -> Vec<usize> {
        self.active()
            .filter(|(i, _)| !self.is_agent(*i))
            .map(|(i, _)| i)
            .collect()
    }

    /// Whether the worker serving in `slot` is ready.
    pub fn has_ready_worker(&self, slot: usize, workers: &Workers) -> bool {
        self.get(slot)
            .and_then(|s| s.current)
            .and_then(|id| workers.get(&id))
            .is_some_and(|w| w.is_ready())
    }

    /// Whether `id` is the worker serving in `slot`.
    pub fn holds(&self, slot: usize, id: WorkerId) -> bool {
        self.get(slot).is_some_and(|s| s.current == Some(id))
    }

    /// A slot scaled away earlier, or a new one.
    pub fn add(&mut self) -> usize {
        let reusable = self.list.iter().position(|s| s.retired && s.is_empty());
        match reusable {
            Some(slot) => {
                // A fresh slot: the restarts of its earlier life do not count against it.
                let generation = self.list[slot].generation + 1;
                self.list[slot] = Slot {
                    generation,
                    ..Slot::default()
                };
                slot
            }
            None => {
                self.list.push(Slot::default());
                self.list.len() - 1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retired_slot_is_reused_with_a_fresh_budget() {
        let mut slots = Slots::new(2, true);
        assert_eq!(slots.apps(), vec![0, 1]);
        assert_eq!(slots.agent(), Some(2));
        if let Some(s) = slots.get_mut(1) {
            s.retired = true;
            s.generation = 4;
        }
        assert_eq!(slots.apps(), vec![0]);
        assert_eq!(slots.add(), 1);
        assert_eq!(
            slots.get(1).map(|s| (s.retired, s.generation)),
            Some((false, 5))
        );
        assert_eq!(slots.add(), 3);
        assert_eq!(slots.apps(), vec![0, 1, 3]);
    }

    #[test]
    fn app_instances_count_app_slots_only() {
        let mut slots = Slots::new(2, true);
        assert_eq!(slots.app_instance(0), Some(0));
        assert_eq!(slots.app_instance(1), Some(1));
        assert_eq!(slots.app_instance(2), None);
        // A scale-up adds slots after the agent's.
        assert_eq!(slots.add(), 3);
        assert_eq!(slots.app_instance(3), Some(2));
        let plain = Slots::new(3, false);
        assert_eq!(plain.app_instance(2), Some(2));
    }
}
