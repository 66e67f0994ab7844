//! The consume and map requests the primary follows, as bookkeeping only: facts go in (a request
//! was sent to these workers; a worker received it, answered it, is gone; a delivery failed) and
//! decisions come out as values. The messenger (src/primary/messenger.rs) writes the frames.
//!
//! What it keeps: a request never hangs (each process asked answers, or the requester gets an
//! error in its name) and never runs twice (a consume moves on only while no worker has it).

use std::collections::{BTreeMap, HashMap};

use super::router::Undeliverable;
use super::WorkerId;
use crate::errors;
use crate::wire::frames::{Header, Target};

/// Who asked: a child, or None for the primary's JavaScript.
pub type Requester = Option<WorkerId>;

/// Who asked, and the number they gave the request.
pub type RequestKey = (Requester, u32);

/// A process by its id and pid, as an error answer names it.
pub type Source = (WorkerId, u32);

/// The most requests one process may have open: a request nobody answers (a handler that never
/// settles) is followed until the worker that has it dies, so without a bound a process that
/// keeps asking would grow the primary without end.
pub const MAX_OPEN_REQUESTS: usize = 8192;

/// What the messenger is to do about a fact.
#[derive(Debug)]
#[must_use]
pub enum Decision<F> {
    /// Nobody waits for it: a second answer, or a requester that has gone.
    Nothing,
    /// The worker's answer goes on to whoever asked.
    Forward { to: Requester },
    /// The consume goes to `worker`: the one that had it died before receiving it.
    MoveTo {
        worker: WorkerId,
        request: RequestKey,
        header: Header,
        frame: F,
    },
    /// The requester gets `why` as `source`'s answer.
    AnswerInNameOf {
        request: RequestKey,
        source: Source,
        action: String,
        why: Undeliverable,
    },
}

struct Request<F> {
    header: Header,
    /// A consume's frame, kept only while no worker has received it: it may have to move.
    unreceived: Option<F>,
    /// The processes that have not answered yet, and whether each has received the request.
    outstanding: BTreeMap<WorkerId, bool>,
}

/// The open requests, and how many each requester has. `F` is a request's frame as the
/// messenger delivers it.
pub struct Requests<F> {
    open: HashMap<RequestKey, Request<F>>,
    per_requester: HashMap<Requester, usize>,
}

impl<F> Default for Requests<F> {
    fn default() -> Self {
        Requests {
            open: HashMap::new(),
            per_requester: HashMap::new(),
        }
    }
}

impl<F: Clone> Requests<F> {
    /// Whether `requester` may open one more request.
    pub fn room_for(&self, requester: Requester) -> Result<(), Undeliverable> {
        if self.open_for(requester) < MAX_OPEN_REQUESTS {
            return Ok(());
        }
        Err(Undeliverable {
            code: errors::QUEUE_FULL,
            message: format!(
                "this process has {MAX_OPEN_REQUESTS} requests that are not answered yet"
            ),
        })
    }

    /// `requester` sent the request `frame` (with `header`) to `targets`: follow it.
    pub fn open(&mut self, requester: Requester, header: Header, frame: F, targets: &[WorkerId]) {
        // A map of no workers (none handles it) is answered by its empty list of whom to wait
        // for; kept, it would count against its requester for good.
        if targets.is_empty() {
            return;
        }
        let key = (requester, header.correlation);
        // A map is never sent again, so it keeps no copy.
        let consume = header.target == Target::AnyApp;
        let request = Request {
            header,
            unreceived: consume.then_some(frame),
            outstanding: targets.iter().map(|id| (*id, false)).collect(),
        };
        if self.open.insert(key, request).is_none() {
            *self.per_requester.entry(requester).or_default() += 1;
        }
    }

    /// `by` acknowledged the request: from now on it runs there or nowhere.
    pub fn received(&mut self, key: RequestKey, by: WorkerId) {
        let Some(request) = self.open.get_mut(&key) else {
            return;
        };
        if let Some(received) = request.outstanding.get_mut(&by) {
            *received = true;
            request.unreceived = None;
        }
    }

    /// `by` answered the request.
    pub fn answered(&mut self, key: RequestKey, by: WorkerId) -> Decision<F> {
        if self.take_outstanding(key, by).is_none() {
            return Decision::Nothing;
        }
        self.close_if_answered(key);
        Decision::Forward { to: key.0 }
    }

    /// The requester is one of a map's targets and has its copy: it answers that copy itself
    /// (FLAG_ANSWER_HERE), so it is not waited for.
    pub fn answered_here(&mut self, key: RequestKey) {
        let Some(requester) = key.0 else {
            return;
        };
        if self.take_outstanding(key, requester).is_some() {
            self.close_if_answered(key);
        }
    }

    /// The request could not be written to `to`: that is its answer. A consume does not move
    /// on, so that a worker whose queue is full is not picked again and again.
    pub fn undelivered(&mut self, key: RequestKey, to: Source, why: Undeliverable) -> Decision<F> {
        if self.take_outstanding(key, to.0).is_none() {
            return Decision::Nothing;
        }
        self.answer_in_name_of(key, to, why)
    }

    /// `worker` is gone for good (its channel drained): nobody waits for its own requests, and
    /// those it owed an answer are settled. `another` picks a worker, other than the one gone,
    /// to take a consume it never received.
    #[must_use]
    pub fn gone(
        &mut self,
        worker: Source,
        mut another: impl FnMut(&Header) -> Option<WorkerId>,
    ) -> Vec<Decision<F>> {
        self.forget_requester(Some(worker.0));
        self.waiting_for(worker.0)
            .into_iter()
            .map(|key| self.target_gone(key, worker, &mut another))
            .collect()
    }

    fn target_gone(
        &mut self,
        key: RequestKey,
        (id, pid): Source,
        another: &mut impl FnMut(&Header) -> Option<WorkerId>,
    ) -> Decision<F> {
        let Some(received) = self.take_outstanding(key, id) else {
            return Decision::Nothing;
        };
        let Some(request) = self.open.get_mut(&key) else {
            return Decision::Nothing;
        };
        if let Some(moved) = request.move_on(key, another) {
            return moved;
        }
        let why = died((id, pid), &request.header.action, received);
        self.answer_in_name_of(key, (id, pid), why)
    }

    /// Removes `id` from what the request waits for; whether it had received it. The request
    /// stays open, even with nobody left, for the caller to move or close.
    fn take_outstanding(&mut self, key: RequestKey, id: WorkerId) -> Option<bool> {
        self.open.get_mut(&key)?.outstanding.remove(&id)
    }

    fn answer_in_name_of(
        &mut self,
        key: RequestKey,
        source: Source,
        why: Undeliverable,
    ) -> Decision<F> {
        let Some(action) = self.open.get(&key).map(|r| r.header.action.clone()) else {
            return Decision::Nothing;
        };
        self.close_if_answered(key);
        Decision::AnswerInNameOf {
            request: key,
            source,
            action,
            why,
        }
    }

    fn close_if_answered(&mut self, key: RequestKey) {
        if self
            .open
            .get(&key)
            .is_some_and(|r| r.outstanding.is_empty())
        {
            self.close(&key);
        }
    }

    fn close(&mut self, key: &RequestKey) {
        if self.open.remove(key).is_none() {
            return;
        }
        if let Some(count) = self.per_requester.get_mut(&key.0) {
            *count -= 1;
            if *count == 0 {
                self.per_requester.remove(&key.0);
            }
        }
    }

    fn open_for(&self, requester: Requester) -> usize {
        self.per_requester.get(&requester).copied().unwrap_or(0)
    }

    fn forget_requester(&mut self, requester: Requester) {
        self.open.retain(|(r, _), _| *r != requester);
        self.per_requester.remove(&requester);
    }

    fn waiting_for(&self, id: WorkerId) -> Vec<RequestKey> {
        self.open
            .iter()
            .filter(|(_, r)| r.outstanding.contains_key(&id))
            .map(|(k, _)| *k)
            .collect()
    }
}

/// The answer of a process that died owing one.
fn died((id, pid): Source, action: &str, received: bool) -> Undeliverable {
    let message = if received {
        format!("worker {id} (pid {pid}) died while it ran '{action}'")
    } else {
        format!("worker {id} (pid {pid}) died before it received '{action}', and no other worker handles it")
    };
    Undeliverable {
        code: errors::WORKER_DIED,
        message,
    }
}

impl<F: Clone> Request<F> {
    /// A consume nobody has received may still run, once, on another worker. It keeps its frame
    /// there too, until that worker receives it.
    fn move_on(
        &mut self,
        key: RequestKey,
        another: &mut impl FnMut(&Header) -> Option<WorkerId>,
    ) -> Option<Decision<F>> {
        let frame = self.unreceived.clone()?;
        let worker = another(&self.header)?;
        self.outstanding.insert(worker, false);
        Some(Decision::MoveTo {
            worker,
            request: key,
            header: self.header.clone(),
            frame,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frames::Kind;

    const REQUESTER: Requester = Some(1);

    fn request(target: Target, correlation: u32) -> Header {
        Header {
            kind: Kind::Request,
            target,
            flags: 0,
            target_id: 0,
            source_id: 1,
            source_pid: 101,
            correlation,
            action: "job".into(),
            host: None,
        }
    }

    /// A map from REQUESTER (correlation 7) to `targets`.
    fn map(targets: &[WorkerId]) -> Requests<&'static str> {
        let mut requests = Requests::default();
        requests.open(REQUESTER, request(Target::Apps, 7), "map", targets);
        requests
    }

    /// A consume from REQUESTER (correlation 7) sent to worker 2.
    fn consume() -> Requests<&'static str> {
        let mut requests = Requests::default();
        requests.open(REQUESTER, request(Target::AnyApp, 7), "consume", &[2]);
        requests
    }

    const KEY: RequestKey = (REQUESTER, 7);

    fn nobody_else(_: &Header) -> Option<WorkerId> {
        None
    }

    /// The code and source of an error answer, or None for any other decision.
    fn answer(decision: &Decision<&str>) -> Option<(&'static str, Source)> {
        match decision {
            Decision::AnswerInNameOf {
                request,
                source,
                action,
                why,
            } => {
                assert_eq!((*request, action.as_str()), (KEY, "job"));
                Some((why.code, *source))
            }
            _ => None,
        }
    }

    fn message(decision: &Decision<&str>) -> String {
        match decision {
            Decision::AnswerInNameOf { why, .. } => why.message.clone(),
            other => panic!("not an error answer: {other:?}"),
        }
    }

    fn is_forward(decision: &Decision<&str>) -> bool {
        matches!(decision, Decision::Forward { to: REQUESTER })
    }

    #[test]
    fn a_map_is_closed_once_all_its_targets_answered() {
        let mut requests = map(&[2, 3]);
        requests.received(KEY, 2);
        assert!(is_forward(&requests.answered(KEY, 2)));
        assert_eq!(requests.open_for(REQUESTER), 1);
        assert!(is_forward(&requests.answered(KEY, 3)));
        assert_eq!(requests.open_for(REQUESTER), 0);
    }

    #[test]
    fn a_requester_that_answers_its_own_copy_is_not_waited_for() {
        let mut requests = map(&[1, 2]);
        requests.answered_here(KEY);
        assert_eq!(requests.open_for(REQUESTER), 1);
        // Its answer, were it sent all the same, goes nowhere.
        assert!(matches!(requests.answered(KEY, 1), Decision::Nothing));
        assert!(is_forward(&requests.answered(KEY, 2)));
        assert_eq!(requests.open_for(REQUESTER), 0);
        // Alone among the targets, it closes the map.
        let mut alone = map(&[1]);
        alone.answered_here(KEY);
        assert_eq!(alone.open_for(REQUESTER), 0);
    }

    #[test]
    fn a_map_target_that_dies_is_answered_for_whether_or_not_it_received() {
        let mut requests = map(&[2, 3, 4]);
        requests.received(KEY, 3);
        let before = requests.gone((2, 102), nobody_else);
        assert_eq!(before.len(), 1);
        assert_eq!(answer(&before[0]), Some((errors::WORKER_DIED, (2, 102))));
        assert!(message(&before[0]).contains("before it received 'job'"));
        let after = requests.gone((3, 103), |_| panic!("a map never moves"));
        assert_eq!(answer(&after[0]), Some((errors::WORKER_DIED, (3, 103))));
        assert!(message(&after[0]).contains("while it ran 'job'"));
        // Still open for the one that has not answered.
        assert!(is_forward(&requests.answered(KEY, 4)));
        assert_eq!(requests.open_for(REQUESTER), 0);
    }

    #[test]
    fn a_consume_not_received_moves_to_another_worker() {
        let mut requests = consume();
        let decisions = requests.gone((2, 102), |header| {
            assert_eq!(header.action, "job");
            Some(3)
        });
        let [Decision::MoveTo {
            worker: 3,
            request: KEY,
            frame: "consume",
            ..
        }] = decisions.as_slice()
        else {
            panic!("not moved to 3: {decisions:?}");
        };
        // It waits for the new worker alone now.
        assert!(matches!(requests.answered(KEY, 2), Decision::Nothing));
        assert!(is_forward(&requests.answered(KEY, 3)));
        assert_eq!(requests.open_for(REQUESTER), 0);
    }

    #[test]
    fn a_consume_nobody_else_handles_is_answered_with_worker_died() {
        let mut requests = consume();
        let decisions = requests.gone((2, 102), nobody_else);
        assert_eq!(answer(&decisions[0]), Some((errors::WORKER_DIED, (2, 102))));
        assert!(message(&decisions[0]).contains("no other worker handles it"));
        assert_eq!(requests.open_for(REQUESTER), 0);
    }

    #[test]
    fn a_consume_received_is_never_run_again() {
        let mut requests = consume();
        requests.received(KEY, 2);
        let decisions = requests.gone((2, 102), |_| panic!("asked for another worker"));
        assert_eq!(answer(&decisions[0]), Some((errors::WORKER_DIED, (2, 102))));
        assert!(message(&decisions[0]).contains("while it ran 'job'"));
    }

    #[test]
    fn a_consume_moved_and_received_there_is_not_moved_again() {
        let mut requests = consume();
        let _ = requests.gone((2, 102), |_| Some(3));
        requests.received(KEY, 3);
        let decisions = requests.gone((3, 103), |_| panic!("asked for another worker"));
        assert_eq!(answer(&decisions[0]), Some((errors::WORKER_DIED, (3, 103))));
    }

    #[test]
    fn a_request_that_cannot_be_written_is_answered_in_the_name_of_its_target() {
        let mut requests = consume();
        let full = Undeliverable {
            code: errors::QUEUE_FULL,
            message: "full".into(),
        };
        let decision = requests.undelivered(KEY, (2, 102), full.clone());
        assert_eq!(answer(&decision), Some((errors::QUEUE_FULL, (2, 102))));
        assert_eq!(requests.open_for(REQUESTER), 0);
        // Once answered, nothing more for it.
        assert!(matches!(
            requests.undelivered(KEY, (2, 102), full),
            Decision::Nothing
        ));
        assert!(requests.gone((2, 102), |_| Some(3)).is_empty());
    }

    #[test]
    fn a_second_answer_or_one_from_a_process_not_asked_is_ignored() {
        let mut requests = map(&[2, 3]);
        assert!(is_forward(&requests.answered(KEY, 2)));
        assert!(matches!(requests.answered(KEY, 2), Decision::Nothing));
        assert!(matches!(requests.answered(KEY, 9), Decision::Nothing));
        assert!(matches!(
            requests.answered((REQUESTER, 8), 3),
            Decision::Nothing
        ));
        assert_eq!(requests.open_for(REQUESTER), 1);
    }

    #[test]
    fn a_requester_that_died_is_forgotten() {
        let mut requests = map(&[2, 3]);
        requests.open(Some(2), request(Target::AnyApp, 7), "theirs", &[3]);
        assert!(requests.gone((1, 101), nobody_else).is_empty());
        assert_eq!(requests.open_for(REQUESTER), 0);
        assert!(matches!(requests.answered(KEY, 2), Decision::Nothing));
        // Worker 2's own request is still followed.
        assert!(matches!(
            requests.answered((Some(2), 7), 3),
            Decision::Forward { to: Some(2) }
        ));
    }

    #[test]
    fn open_requests_are_bounded_per_requester() {
        let mut requests: Requests<()> = Requests::default();
        for n in 0..MAX_OPEN_REQUESTS as u32 {
            assert!(requests.room_for(REQUESTER).is_ok());
            requests.open(REQUESTER, request(Target::Apps, n), (), &[2]);
        }
        let refused = requests.room_for(REQUESTER).map_err(|why| why.code);
        assert_eq!(refused, Err(errors::QUEUE_FULL));
        assert!(requests.room_for(Some(2)).is_ok());
        assert!(requests.room_for(None).is_ok());
        let _ = requests.answered((REQUESTER, 0), 2);
        assert!(requests.room_for(REQUESTER).is_ok());
    }

    #[test]
    fn a_map_of_no_workers_is_not_kept() {
        let requests = map(&[]);
        assert_eq!(requests.open_for(REQUESTER), 0);
    }

    #[test]
    fn open_requests_are_counted_per_requester() {
        let mut requests: Requests<()> = Requests::default();
        requests.open(Some(1), request(Target::Apps, 1), (), &[3]);
        requests.open(Some(1), request(Target::Apps, 2), (), &[3]);
        // The same key again (a correlation id reused) replaces, and counts once.
        requests.open(Some(1), request(Target::Apps, 2), (), &[3]);
        requests.open(None, request(Target::Apps, 1), (), &[3]);
        assert_eq!(requests.open_for(Some(1)), 2);
        assert_eq!(requests.open_for(None), 1);
        assert!(matches!(
            requests.answered((Some(1), 1), 3),
            Decision::Forward { .. }
        ));
        assert!(matches!(
            requests.answered((Some(1), 1), 3),
            Decision::Nothing
        ));
        assert_eq!(requests.open_for(Some(1)), 1);
        assert_eq!(requests.waiting_for(3).len(), 2);
        requests.forget_requester(Some(1));
        assert_eq!(requests.open_for(Some(1)), 0);
        assert_eq!(requests.waiting_for(3), vec![(None, 1)]);
    }
}
