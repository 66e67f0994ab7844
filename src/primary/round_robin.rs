//! SCHED_RR, for the Node-compatible primary: the primary accepts connections and hands each to a
//! worker (`newconn`), one at a time per worker, in the order workers became free. A worker that
//! answers `accepted: false` (it is closing) has the connection passed on to another. This is the
//! distribution logic alone; the supervisor does the sending.

use std::collections::VecDeque;

pub use super::WorkerId;

/// What the supervisor must do: send this connection to this worker as `newconn`.
#[derive(Debug, PartialEq, Eq)]
pub struct Handoff<C> {
    pub worker: WorkerId,
    pub conn: C,
}

#[derive(Debug)]
pub struct RoundRobin<C> {
    /// Every worker that listens here, in the order they came.
    all: Vec<WorkerId>,
    /// Workers waiting for a connection, first come first served.
    free: VecDeque<WorkerId>,
    /// Connections accepted but not yet handed to anyone.
    pending: VecDeque<C>,
}

impl<C> Default for RoundRobin<C> {
    fn default() -> Self {
        RoundRobin {
            all: Vec::new(),
            free: VecDeque::new(),
            pending: VecDeque::new(),
        }
    }
}

impl<C> RoundRobin<C> {
    /// Registers a listening worker. It gets connections from its first `handoff`, once the
    /// reply to its `queryServer` is on its way.
    pub fn add(&mut self, worker: WorkerId) {
        if !self.all.contains(&worker) {
            self.all.push(worker);
        }
    }

    /// Forgets a worker; true when nobody listens any more (the caller closes the socket).
    pub fn remove(&mut self, worker: WorkerId) -> bool {
        self.all.retain(|w| *w != worker);
        self.free.retain(|w| *w != worker);
        self.all.is_empty()
    }

    pub fn has(&self, worker: WorkerId) -> bool {
        self.all.contains(&worker)
    }

    /// A new connection (or one a worker refused): give it to the first free worker.
    pub fn distribute(&mut self, conn: C) -> Option<Handoff<C>> {
        self.pending.push_back(conn);
        let worker = self.free.pop_front()?;
        self.handoff(worker)
    }

    /// `worker` is ready for another connection: the next pending one, or it waits as free.
    pub fn handoff(&mut self, worker: WorkerId) -> Option<Handoff<C>> {
        if !self.all.contains(&worker) {
            return None;
        }
        match self.pending.pop_front() {
            Some(conn) => Some(Handoff { worker, conn }),
            None => {
                if !self.free.contains(&worker) {
                    self.free.push_back(worker);
                }
                None
            }
        }
    }

    /// Connections that will now never be handed out (the socket is closing).
    pub fn drain_pending(&mut self) -> Vec<C> {
        self.pending.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_alternate_among_free_workers() {
        let mut rr: RoundRobin<&str> = RoundRobin::default();
        rr.add(1);
        rr.add(2);
        assert_eq!(rr.handoff(1), None);
        assert_eq!(rr.handoff(2), None);
        assert_eq!(
            rr.distribute("a"),
            Some(Handoff {
                worker: 1,
                conn: "a"
            })
        );
        assert_eq!(
            rr.distribute("b"),
            Some(Handoff {
                worker: 2,
                conn: "b"
            })
        );
        // Both busy: the next one waits until a worker answers.
        assert_eq!(rr.distribute("c"), None);
        assert_eq!(
            rr.handoff(2),
            Some(Handoff {
                worker: 2,
                conn: "c"
            })
        );
        assert_eq!(rr.handoff(1), None);
        assert_eq!(
            rr.distribute("d"),
            Some(Handoff {
                worker: 1,
                conn: "d"
            })
        );
    }

    #[test]
    fn a_refused_connection_goes_to_another_worker() {
        let mut rr: RoundRobin<&str> = RoundRobin::default();
        rr.add(1);
        rr.add(2);
        rr.handoff(1);
        rr.handoff(2);
        assert_eq!(
            rr.distribute("a"),
            Some(Handoff {
                worker: 1,
                conn: "a"
            })
        );
        // Worker 1 refuses (it is closing): the supervisor redistributes, then frees worker 1.
        assert_eq!(
            rr.distribute("a"),
            Some(Handoff {
                worker: 2,
                conn: "a"
            })
        );
        rr.remove(1);
        assert_eq!(rr.handoff(1), None);
        assert!(!rr.has(1));
    }

    #[test]
    fn connections_wait_for_the_first_worker() {
        let mut rr: RoundRobin<&str> = RoundRobin::default();
        assert_eq!(rr.distribute("early"), None);
        rr.add(7);
        assert_eq!(
            rr.handoff(7),
            Some(Handoff {
                worker: 7,
                conn: "early"
            })
        );
        assert!(rr.remove(7));
        assert!(rr.drain_pending().is_empty());
    }
}
