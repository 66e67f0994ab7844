//! Where a messenger frame goes, decided from its header alone: who is in the cluster, of which
//! kind, and who handles which action (children tell the primary when they add or remove a
//! handler). Pure bookkeeping: the supervisor does the writing.

use std::collections::{BTreeMap, HashMap};

use super::child_command::WorkerKind;
use super::events::WorkerId;
use crate::errors;
use crate::wire::frames::{Header, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dest {
    Primary,
    Worker(WorkerId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undeliverable {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug)]
struct Member {
    pid: u32,
    kind: WorkerKind,
    handlers: HashMap<String, u32>,
    /// An agent asked to stop: what is sent to the agent no longer goes to it.
    stopping: bool,
}

#[derive(Debug, Default)]
pub struct Router {
    members: BTreeMap<WorkerId, Member>,
    primary_handlers: HashMap<String, u32>,
    /// Spreads `AnyApp` requests over the workers that handle them.
    turn: usize,
    random: u64,
}

impl Router {
    pub fn new(seed: u64) -> Self {
        Router {
            random: seed | 1,
            ..Router::default()
        }
    }

    pub fn join(&mut self, id: WorkerId, pid: u32, kind: WorkerKind) {
        self.members.insert(
            id,
            Member {
                pid,
                kind,
                handlers: HashMap::new(),
                stopping: false,
            },
        );
    }

    /// The agent `id` is asked to stop: sent to no more, though it may still send.
    pub fn agent_stopping(&mut self, id: WorkerId) {
        if let Some(member) = self.members.get_mut(&id) {
            member.stopping = member.kind == WorkerKind::Agent;
        }
    }

    pub fn leave(&mut self, id: WorkerId) {
        self.members.remove(&id);
    }

    pub fn source(&self, id: WorkerId) -> Option<(u32, WorkerKind)> {
        self.members.get(&id).map(|m| (m.pid, m.kind))
    }

    /// A handler for `action` was added (`on`) or removed (`off`) in `who` (None: the primary).
    pub fn handler(&mut self, who: Option<WorkerId>, action: &str, on: bool) {
        let handlers = match who {
            None => &mut self.primary_handlers,
            Some(id) => match self.members.get_mut(&id) {
                Some(m) => &mut m.handlers,
                None => return,
            },
        };
        let count = handlers.entry(action.to_owned()).or_insert(0);
        if on {
            *count += 1;
        } else {
            *count = count.saturating_sub(1);
            if *count == 0 {
                handlers.remove(action);
            }
        }
    }

    fn apps(&self) -> impl Iterator<Item = (&WorkerId, &Member)> {
        self.members
            .iter()
            .filter(|(_, m)| m.kind == WorkerKind::App)
    }

    fn apps_handling(&self, action: &str) -> Vec<WorkerId> {
        self.apps()
            .filter(|(_, m)| m.handlers.contains_key(action))
            .map(|(id, _)| *id)
            .collect()
    }

    fn by_pid(&self, pid: u32) -> Option<WorkerId> {
        self.members
            .iter()
            .find(|(_, m)| m.pid == pid)
            .map(|(id, _)| *id)
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: spreading messages needs no cryptographic randomness.
        let mut x = self.random;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random = x;
        x
    }

    /// Whether an app worker handles `action`: a consume could run here (without taking a turn).
    pub fn handles(&self, action: &str) -> bool {
        !self.apps_handling(action).is_empty()
    }

    /// The processes a frame goes to.
    pub fn route(&mut self, header: &Header) -> Result<Vec<Dest>, Undeliverable> {
        let no_handler = || Undeliverable {
            code: errors::NO_HANDLER,
            message: format!("no app worker handles '{}'", header.action),
        };
        Ok(match header.target {
            Target::Primary => vec![Dest::Primary],
            Target::Broadcast => self.members.keys().map(|id| Dest::Worker(*id)).collect(),
            Target::Apps => self.apps().map(|(id, _)| Dest::Worker(*id)).collect(),
            Target::Agent => {
                // During a reload of the agent, the new one (its id is larger) gets what is sent
                // from then on; the old one is leaving.
                let agent = self
                    .members
                    .iter()
                    .rev()
                    .find(|(_, m)| m.kind == WorkerKind::Agent && !m.stopping)
                    .map(|(id, _)| Dest::Worker(*id));
                vec![agent.ok_or_else(|| Undeliverable {
                    code: errors::UNKNOWN_TARGET,
                    message: "the cluster has no agent".into(),
                })?]
            }
            // An id, or else a pid: ids are small and pids rarely are, and a user holding
            // either means the same process.
            Target::One => {
                let found = Some(header.target_id)
                    .filter(|id| self.members.contains_key(id))
                    .or_else(|| self.by_pid(header.target_id));
                vec![Dest::Worker(found.ok_or_else(|| Undeliverable {
                    code: errors::UNKNOWN_TARGET,
                    message: format!("no worker with id or pid {}", header.target_id),
                })?)]
            }
            Target::Pid => vec![Dest::Worker(self.by_pid(header.target_id).ok_or_else(
                || Undeliverable {
                    code: errors::UNKNOWN_TARGET,
                    message: format!("no worker with pid {}", header.target_id),
                },
            )?)],
            Target::RandomApp => {
                let candidates = self.apps_handling(&header.action);
                if candidates.is_empty() {
                    return Err(no_handler());
                }
                let pick = (self.next_random() % candidates.len() as u64) as usize;
                vec![Dest::Worker(candidates[pick])]
            }
            Target::AnyApp => {
                let candidates = self.apps_handling(&header.action);
                if candidates.is_empty() {
                    return Err(no_handler());
                }
                self.turn = self.turn.wrapping_add(1);
                vec![Dest::Worker(candidates[self.turn % candidates.len()])]
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frames::Kind;

    fn to(target: Target, target_id: u32, action: &str) -> Header {
        Header {
            kind: Kind::Message,
            target,
            flags: 0,
            target_id,
            source_id: 0,
            source_pid: 0,
            correlation: 0,
            action: action.into(),
            host: None,
        }
    }

    fn cluster() -> Router {
        let mut r = Router::new(7);
        r.join(1, 101, WorkerKind::Agent);
        r.join(2, 102, WorkerKind::App);
        r.join(3, 103, WorkerKind::App);
        r
    }

    #[test]
    fn fan_out_targets() {
        let mut r = cluster();
        let w = Dest::Worker;
        assert_eq!(
            r.route(&to(Target::Broadcast, 0, "a")).unwrap(),
            vec![w(1), w(2), w(3)]
        );
        assert_eq!(
            r.route(&to(Target::Apps, 0, "a")).unwrap(),
            vec![w(2), w(3)]
        );
        assert_eq!(r.route(&to(Target::Agent, 0, "a")).unwrap(), vec![w(1)]);
        assert_eq!(r.route(&to(Target::One, 3, "a")).unwrap(), vec![w(3)]);
        assert_eq!(r.route(&to(Target::One, 103, "a")).unwrap(), vec![w(3)]);
        assert_eq!(r.route(&to(Target::Pid, 102, "a")).unwrap(), vec![w(2)]);
        assert_eq!(
            r.route(&to(Target::Primary, 0, "a")).unwrap(),
            vec![Dest::Primary]
        );
    }

    #[test]
    fn unknown_targets_and_missing_handlers_are_reported() {
        let mut r = cluster();
        assert_eq!(
            r.route(&to(Target::One, 9, "a")).unwrap_err().code,
            errors::UNKNOWN_TARGET
        );
        assert_eq!(
            r.route(&to(Target::Pid, 9, "a")).unwrap_err().code,
            errors::UNKNOWN_TARGET
        );
        assert_eq!(
            r.route(&to(Target::RandomApp, 0, "a")).unwrap_err().code,
            errors::NO_HANDLER
        );
        r.leave(1);
        assert_eq!(
            r.route(&to(Target::Agent, 0, "a")).unwrap_err().code,
            errors::UNKNOWN_TARGET
        );
    }

    #[test]
    fn handlers_steer_random_and_any() {
        let mut r = cluster();
        r.handler(Some(3), "job", true);
        r.handler(Some(1), "job", true); // the agent is no app worker
        for _ in 0..10 {
            assert_eq!(
                r.route(&to(Target::RandomApp, 0, "job")).unwrap(),
                vec![Dest::Worker(3)]
            );
        }
        r.handler(Some(2), "job", true);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..4 {
            seen.extend(r.route(&to(Target::AnyApp, 0, "job")).unwrap());
        }
        assert_eq!(seen.len(), 2, "consume spreads over both handlers");
        r.handler(Some(2), "job", false);
        r.handler(Some(3), "job", false);
        assert!(r.route(&to(Target::AnyApp, 0, "job")).is_err());
    }
}
