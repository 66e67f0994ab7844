//! This host's view of the other members, and what changed between two views.

use std::collections::{HashSet, VecDeque};

use super::types::{HostInfo, LeaveReason};

/// How many departed incarnations are remembered, so that a view read before a leave notice
/// arrived cannot bring a departed member back. Incarnations are never reused, so forgetting
/// the oldest is safe once no stale view can still mention them.
const DEPARTED_KEPT: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Joined(HostInfo),
    Left(HostInfo, LeaveReason),
}

#[derive(Default)]
pub(crate) struct Membership {
    me: Option<HostInfo>,
    /// The other members, sorted.
    members: Vec<HostInfo>,
    departed: HashSet<HostInfo>,
    departed_order: VecDeque<HostInfo>,
}

impl Membership {
    pub fn set_me(&mut self, me: HostInfo) {
        self.me = Some(me);
    }

    /// This host under any incarnation: a former one of ours may linger in Redis until it times
    /// out, and is no other member.
    fn is_me(&self, member: &HostInfo) -> bool {
        self.me.as_ref().is_some_and(|me| me.host == member.host)
    }

    pub fn members(&self) -> Vec<HostInfo> {
        self.members.clone()
    }

    pub fn is_alone(&self) -> bool {
        self.members.is_empty()
    }

    pub fn has_host(&self, host: &str) -> bool {
        self.members.iter().any(|member| member.host == host)
    }

    /// Takes a view read from Redis (self included or not). `recently_left` are the members that
    /// left gracefully lately: absent and among them means `Left`, absent otherwise `TimedOut`,
    /// and replaced by the same host id `NewIncarnation`.
    pub fn apply_view(
        &mut self,
        view: &[HostInfo],
        recently_left: &HashSet<HostInfo>,
    ) -> Vec<Change> {
        let mut next: Vec<HostInfo> = view
            .iter()
            .filter(|member| !self.is_me(member))
            .filter(|member| !self.departed.contains(*member))
            .cloned()
            .collect();
        next.sort();
        next.dedup();
        let mut changes = Vec::new();
        for old in &self.members {
            if next.binary_search(old).is_ok() {
                continue;
            }
            let reason = if next.iter().any(|member| member.host == old.host) {
                LeaveReason::NewIncarnation
            } else if recently_left.contains(old) {
                LeaveReason::Left
            } else {
                LeaveReason::TimedOut
            };
            changes.push(Change::Left(old.clone(), reason));
        }
        for new in &next {
            if self.members.binary_search(new).is_err() {
                changes.push(Change::Joined(new.clone()));
            }
        }
        for change in &changes {
            if let Change::Left(old, _) = change {
                self.remember_departed(old.clone());
            }
        }
        self.members = next;
        changes
    }

    /// A leave notice for one member (from the control channel).
    pub fn remove(&mut self, member: &HostInfo, reason: LeaveReason) -> Option<Change> {
        if self.is_me(member) {
            return None;
        }
        self.remember_departed(member.clone());
        let index = self.members.binary_search(member).ok()?;
        self.members.remove(index);
        Some(Change::Left(member.clone(), reason))
    }

    fn remember_departed(&mut self, member: HostInfo) {
        if self.departed.insert(member.clone()) {
            self.departed_order.push_back(member);
            if self.departed_order.len() > DEPARTED_KEPT {
                if let Some(oldest) = self.departed_order.pop_front() {
                    self.departed.remove(&oldest);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(host: &str, incarnation: u64) -> HostInfo {
        HostInfo {
            host: host.into(),
            incarnation,
        }
    }

    fn membership_of(me: HostInfo) -> Membership {
        let mut membership = Membership::default();
        membership.set_me(me);
        membership
    }

    #[test]
    fn joins_and_leaves_are_the_difference_of_two_views() {
        let mut view = membership_of(info("me", 1));
        let none = HashSet::new();
        let changes = view.apply_view(
            &[info("me", 1), info("me", 0), info("a", 1), info("b", 1)],
            &none,
        );
        assert_eq!(
            changes,
            [Change::Joined(info("a", 1)), Change::Joined(info("b", 1))]
        );
        assert!(view.has_host("a"));
        assert!(!view.has_host("me"));
        let left: HashSet<_> = [info("b", 1)].into();
        let changes = view.apply_view(&[info("me", 1), info("a", 2), info("c", 1)], &left);
        assert_eq!(
            changes,
            [
                Change::Left(info("a", 1), LeaveReason::NewIncarnation),
                Change::Left(info("b", 1), LeaveReason::Left),
                Change::Joined(info("a", 2)),
                Change::Joined(info("c", 1)),
            ]
        );
        let changes = view.apply_view(&[info("me", 1), info("a", 2)], &none);
        assert_eq!(changes, [Change::Left(info("c", 1), LeaveReason::TimedOut)]);
    }

    #[test]
    fn a_departed_member_is_not_brought_back_by_a_stale_view() {
        let mut view = membership_of(info("me", 1));
        view.apply_view(&[info("a", 1)], &HashSet::new());
        assert_eq!(
            view.remove(&info("a", 1), LeaveReason::Left),
            Some(Change::Left(info("a", 1), LeaveReason::Left))
        );
        assert_eq!(view.remove(&info("a", 1), LeaveReason::Left), None);
        assert!(view.apply_view(&[info("a", 1)], &HashSet::new()).is_empty());
        assert!(view.members().is_empty());
    }
}
