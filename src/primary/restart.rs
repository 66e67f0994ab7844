//! The restart budget of one worker slot: Erlang/OTP's intensity and period as a sliding window,
//! with a delay that doubles with each restart already in the window. A worker that crashes once
//! after a long life is replaced at once; one that crashes at boot is retried a bounded number of
//! times, ever more slowly, and then the cluster gives up.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::options::RestartPolicy;

/// How many exits the error message lists.
const REMEMBERED_EXITS: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    RestartAfter(Duration),
    GiveUp,
}

#[derive(Debug, Default)]
pub struct RestartHistory {
    restarts: VecDeque<Instant>,
    exits: VecDeque<String>,
}

impl RestartHistory {
    /// Records an exit that nobody asked for and decides what follows.
    pub fn on_unexpected_exit(
        &mut self,
        now: Instant,
        policy: &RestartPolicy,
        exit: String,
    ) -> Decision {
        if self.exits.len() == REMEMBERED_EXITS {
            self.exits.pop_front();
        }
        self.exits.push_back(exit);
        while self
            .restarts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= policy.window)
        {
            self.restarts.pop_front();
        }
        let recent = self.restarts.len() as u32;
        if recent >= policy.max_restarts {
            return Decision::GiveUp;
        }
        self.restarts.push_back(now);
        let delay = match recent {
            0 => Duration::ZERO,
            n => policy
                .delay
                .saturating_mul(1u32.checked_shl(n - 1).unwrap_or(u32::MAX))
                .min(policy.max_delay),
        };
        Decision::RestartAfter(delay)
    }

    /// Exit codes or signals, oldest first, of the last exits.
    pub fn recent_exits(&self) -> Vec<String> {
        self.exits.iter().cloned().collect()
    }

    /// Exits counted against the budget right now (the window's restarts plus the one that gave up).
    pub fn exits_in_window(&self) -> usize {
        self.restarts.len() + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            max_restarts: 5,
            window: Duration::from_secs(60),
            delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
        }
    }

    #[test]
    fn a_crash_loop_backs_off_then_gives_up() {
        let mut h = RestartHistory::default();
        let t0 = Instant::now();
        let delays: Vec<_> = (0..6)
            .map(|i| h.on_unexpected_exit(t0 + Duration::from_millis(i), &policy(), "1".into()))
            .collect();
        assert_eq!(
            delays,
            vec![
                Decision::RestartAfter(Duration::ZERO),
                Decision::RestartAfter(Duration::from_millis(100)),
                Decision::RestartAfter(Duration::from_millis(200)),
                Decision::RestartAfter(Duration::from_millis(400)),
                Decision::RestartAfter(Duration::from_millis(500)),
                Decision::GiveUp,
            ]
        );
        assert_eq!(h.recent_exits(), vec!["1"; 6]);
        assert_eq!(h.exits_in_window(), 6);
    }

    #[test]
    fn old_restarts_leave_the_window() {
        let mut h = RestartHistory::default();
        let t0 = Instant::now();
        for i in 0..5 {
            h.on_unexpected_exit(t0 + Duration::from_secs(i), &policy(), "1".into());
        }
        // 60.5 s after the first restart, four remain in the window: a fifth is allowed, delayed.
        assert_eq!(
            h.on_unexpected_exit(t0 + Duration::from_millis(60_500), &policy(), "1".into()),
            Decision::RestartAfter(Duration::from_millis(500))
        );
        // Long after all of them, a crash is replaced at once.
        assert_eq!(
            h.on_unexpected_exit(t0 + Duration::from_secs(600), &policy(), "SIGKILL".into()),
            Decision::RestartAfter(Duration::ZERO)
        );
    }

    #[test]
    fn a_zero_budget_never_restarts() {
        let mut h = RestartHistory::default();
        let p = RestartPolicy {
            max_restarts: 0,
            ..policy()
        };
        assert_eq!(
            h.on_unexpected_exit(Instant::now(), &p, "1".into()),
            Decision::GiveUp
        );
    }
}
