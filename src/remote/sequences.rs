//! Per-sender sequence accounting for the broadcast stream: every broadcast of another host's
//! incarnation is either delivered here or reported lost, never silently missing.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How many closed accounts are kept, so that a late entry of a sender that left, or the final
/// count its successor tells, is still measured against what was already reported. Incarnations
/// are never reused, so dropping the oldest is safe once nothing can still mention them.
const CLOSED_KEPT: usize = 1024;

type SenderKey = (String, u64);

struct Account {
    /// The highest sequence delivered or reported lost.
    settled: u64,
    /// The highest sequence the sender is known to have written (its member hash, a leave
    /// notice, or what arrived).
    advertised: u64,
    /// Since when `advertised` is ahead of `settled` with nothing arriving.
    behind_since: Option<Instant>,
    /// The sender left; its account is closed after the grace.
    departed_at: Option<Instant>,
    /// Closed: what it wrote is settled; only late entries and a successor's count still count.
    closed: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Deliver it, but for its first `skip` sequences (delivered or reported lost already);
    /// `lost_before` sequences between the last one and it are gone.
    Deliver { lost_before: u64, skip: u64 },
    /// Already delivered or reported lost: skip it.
    Stale,
}

#[derive(Default)]
pub(crate) struct SequenceTracker {
    accounts: HashMap<SenderKey, Account>,
    closed_order: VecDeque<SenderKey>,
}

impl SequenceTracker {
    fn account(&mut self, host: &str, incarnation: u64) -> &mut Account {
        self.accounts
            .entry((host.to_owned(), incarnation))
            .or_insert(Account {
                settled: 0,
                advertised: 0,
                behind_since: None,
                departed_at: None,
                closed: false,
            })
    }

    fn open_account(&mut self, host: &str, incarnation: u64) -> Option<&mut Account> {
        Some(self.account(host, incarnation)).filter(|account| !account.closed)
    }

    /// A sender that was a member when this host joined: what it wrote before is not for us.
    pub fn baseline(&mut self, host: &str, incarnation: u64, written: u64) {
        if let Some(account) = self.open_account(host, incarnation) {
            account.settled = account.settled.max(written);
            account.advertised = account.advertised.max(written);
        }
    }

    /// The sender says it wrote `written` broadcasts so far.
    pub fn advertise(&mut self, host: &str, incarnation: u64, written: u64, now: Instant) {
        if let Some(account) = self.open_account(host, incarnation) {
            account.advertised = account.advertised.max(written);
            if account.advertised > account.settled && account.behind_since.is_none() {
                account.behind_since = Some(now);
            }
        }
    }

    /// An entry of `count` broadcasts numbered from `first` arrived.
    pub fn on_entry(
        &mut self,
        host: &str,
        incarnation: u64,
        first: u64,
        count: u64,
        now: Instant,
    ) -> Verdict {
        let account = self.account(host, incarnation);
        // Numbers no sender reaches (a damaged or hostile entry) are refused where entries are
        // parsed; past u64 they would wrap.
        let Some(last) = first.checked_add(count.max(1) - 1) else {
            return Verdict::Stale;
        };
        if last <= account.settled {
            return Verdict::Stale;
        }
        let lost_before = first.saturating_sub(account.settled + 1);
        let skip = (account.settled + 1).saturating_sub(first);
        account.settled = last;
        account.advertised = account.advertised.max(last);
        account.behind_since = (account.advertised > account.settled).then_some(now);
        Verdict::Deliver { lost_before, skip }
    }

    /// The sender left or died: its account closes after the grace, when what it wrote and did
    /// not arrive is reported lost.
    pub fn depart(&mut self, host: &str, incarnation: u64, now: Instant) {
        if let Some(account) = self.open_account(host, incarnation) {
            account.departed_at.get_or_insert(now);
        }
    }

    /// The sender's final count is known (its successor told it): closes the account and returns
    /// how many are lost beyond what was reported already. Nothing for a sender never seen.
    pub fn finish(&mut self, host: &str, incarnation: u64, written: u64) -> u64 {
        let key = (host.to_owned(), incarnation);
        let Some(account) = self.accounts.get_mut(&key) else {
            return 0;
        };
        let lost = account
            .advertised
            .max(written)
            .saturating_sub(account.settled);
        account.settled += lost;
        account.advertised = account.settled;
        if !account.closed {
            account.closed = true;
            self.remember_closed(key);
        }
        lost
    }

    /// Losses that are due: senders behind for longer than `grace` with nothing arriving, and
    /// departed senders whose grace is over. Returns (host, count) pairs.
    pub fn due(&mut self, now: Instant, grace: Duration) -> Vec<(String, u64)> {
        let mut losses = Vec::new();
        let mut closed = Vec::new();
        for (key, account) in &mut self.accounts {
            if account.closed {
                continue;
            }
            let overdue = |since: Option<Instant>| {
                since.is_some_and(|since| now.saturating_duration_since(since) >= grace)
            };
            let behind = account.advertised.saturating_sub(account.settled);
            let departed = overdue(account.departed_at);
            if departed || (behind > 0 && overdue(account.behind_since)) {
                account.settled = account.advertised;
                account.behind_since = None;
                if behind > 0 {
                    losses.push((key.0.clone(), behind));
                }
            }
            if departed {
                account.closed = true;
                closed.push(key.clone());
            }
        }
        for key in closed {
            self.remember_closed(key);
        }
        losses
    }

    fn remember_closed(&mut self, key: SenderKey) {
        self.closed_order.push_back(key);
        if self.closed_order.len() > CLOSED_KEPT {
            if let Some(oldest) = self.closed_order.pop_front() {
                self.accounts.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_millis(200);

    #[test]
    fn a_gap_is_reported_once_and_late_entries_are_skipped() {
        let mut tracker = SequenceTracker::default();
        let now = Instant::now();
        assert_eq!(
            tracker.on_entry("a", 1, 1, 1, now),
            Verdict::Deliver {
                lost_before: 0,
                skip: 0
            }
        );
        assert_eq!(
            tracker.on_entry("a", 1, 5, 1, now),
            Verdict::Deliver {
                lost_before: 3,
                skip: 0
            }
        );
        assert_eq!(tracker.on_entry("a", 1, 3, 1, now), Verdict::Stale);
        assert_eq!(tracker.on_entry("a", 1, 5, 1, now), Verdict::Stale);
        assert_eq!(
            tracker.on_entry("a", 2, 2, 1, now),
            Verdict::Deliver {
                lost_before: 1,
                skip: 0
            }
        );
    }

    #[test]
    fn an_entry_of_many_counts_each_of_them() {
        let mut tracker = SequenceTracker::default();
        let now = Instant::now();
        assert_eq!(
            tracker.on_entry("a", 1, 1, 3, now),
            Verdict::Deliver {
                lost_before: 0,
                skip: 0
            }
        );
        assert_eq!(
            tracker.on_entry("a", 1, 6, 3, now),
            Verdict::Deliver {
                lost_before: 2,
                skip: 0
            }
        );
        assert_eq!(tracker.on_entry("a", 1, 7, 2, now), Verdict::Stale);
        // A baseline in the middle of an entry: only what follows it is delivered.
        tracker.baseline("b", 1, 40);
        assert_eq!(
            tracker.on_entry("b", 1, 39, 4, now),
            Verdict::Deliver {
                lost_before: 0,
                skip: 2
            }
        );
    }

    #[test]
    fn what_was_written_before_the_baseline_is_not_lost() {
        let mut tracker = SequenceTracker::default();
        tracker.baseline("a", 1, 40);
        assert_eq!(
            tracker.on_entry("a", 1, 41, 1, Instant::now()),
            Verdict::Deliver {
                lost_before: 0,
                skip: 0
            }
        );
    }

    #[test]
    fn trailing_losses_wait_for_the_grace_and_progress_restarts_it() {
        let mut tracker = SequenceTracker::default();
        let start = Instant::now();
        tracker.advertise("a", 1, 3, start);
        tracker.on_entry("a", 1, 1, 1, start + GRACE / 2);
        assert!(tracker.due(start + GRACE, GRACE).is_empty());
        assert_eq!(
            tracker.due(start + GRACE * 2, GRACE),
            [("a".to_string(), 2)]
        );
        assert!(tracker.due(start + GRACE * 3, GRACE).is_empty());
        assert_eq!(tracker.on_entry("a", 1, 3, 1, start), Verdict::Stale);
    }

    #[test]
    fn a_departed_sender_is_closed_after_the_grace() {
        let mut tracker = SequenceTracker::default();
        let start = Instant::now();
        tracker.on_entry("a", 1, 1, 1, start);
        tracker.advertise("a", 1, 4, start);
        tracker.depart("a", 1, start);
        tracker.on_entry("a", 1, 2, 1, start);
        assert!(tracker.due(start + GRACE / 2, GRACE).is_empty());
        assert_eq!(tracker.due(start + GRACE, GRACE), [("a".to_string(), 2)]);
        assert_eq!(tracker.on_entry("a", 1, 4, 1, start), Verdict::Stale);
        assert_eq!(
            tracker.on_entry("a", 1, 6, 1, start),
            Verdict::Deliver {
                lost_before: 1,
                skip: 0
            }
        );
    }

    #[test]
    fn a_successor_closes_its_predecessor_exactly_once() {
        let mut tracker = SequenceTracker::default();
        let now = Instant::now();
        tracker.on_entry("a", 1, 1, 1, now);
        assert_eq!(tracker.finish("a", 1, 10), 9);
        assert_eq!(tracker.finish("a", 1, 10), 0);
        assert_eq!(tracker.finish("a", 1, 12), 2);
        assert_eq!(tracker.finish("b", 1, 10), 0);
    }

    #[test]
    fn a_timed_out_sender_is_settled_again_by_its_successor() {
        let mut tracker = SequenceTracker::default();
        let start = Instant::now();
        tracker.on_entry("a", 1, 2, 1, start);
        tracker.advertise("a", 1, 5, start);
        tracker.depart("a", 1, start);
        assert_eq!(tracker.due(start + GRACE, GRACE), [("a".to_string(), 3)]);
        assert_eq!(tracker.finish("a", 1, 8), 3);
    }
}
