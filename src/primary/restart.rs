//! What follows a worker's unexpected exit, per slot. The rule is gunicorn's (stop on boot
//! errors, restart runtime crashes), with Erlang/OTP's intensity and period for the boot errors:
//! - A worker that exits before it was ready (a crash at boot: a broken deploy, a missing
//!   dependency) spends the slot's restart budget: at most `maxRestarts` in `restartWindow`, with
//!   a delay that doubles; then the cluster gives up, with an error that names the script.
//! - A worker that exits after it was ready (a request that crashes it, an out-of-memory kill)
//!   was working: it is always replaced, at once the first time, then with the same doubling
//!   delay (capped at `maxRestartDelay`) while such crashes keep coming within the window. A
//!   request that crashes workers must not be a way to end the service.

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
    /// Restarts after boot failures, within the window: the budget.
    restarts: VecDeque<Instant>,
    /// Restarts after crashes of ready workers, within the window: the backoff.
    crashes: VecDeque<Instant>,
    exits: VecDeque<String>,
    /// Every replacement of this slot's worker since the cluster started, for operators.
    total: u64,
}

impl RestartHistory {
    /// Records an exit that nobody asked for and decides what follows. `was_ready`: whether the
    /// worker that exited had become ready.
    pub fn on_unexpected_exit(
        &mut self,
        now: Instant,
        policy: &RestartPolicy,
        exit: String,
        was_ready: bool,
    ) -> Decision {
        if self.exits.len() == REMEMBERED_EXITS {
            self.exits.pop_front();
        }
        self.exits.push_back(exit);
        for times in [&mut self.restarts, &mut self.crashes] {
            while times
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= policy.window)
            {
                times.pop_front();
            }
        }
        let times = if was_ready {
            &mut self.crashes
        } else {
            &mut self.restarts
        };
        let recent = times.len() as u32;
        if !was_ready && recent >= policy.max_restarts {
            return Decision::GiveUp;
        }
        times.push_back(now);
        self.total += 1;
        let delay = match recent {
            0 => Duration::ZERO,
            n => policy
                .delay
                .saturating_mul(1u32.checked_shl(n - 1).unwrap_or(u32::MAX))
                .min(policy.max_delay),
        };
        Decision::RestartAfter(delay)
    }

    /// Replacements of this slot's worker after unexpected exits, since the cluster started.
    pub fn total(&self) -> u64 {
        self.total
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
            .map(|i| {
                h.on_unexpected_exit(t0 + Duration::from_millis(i), &policy(), "1".into(), false)
            })
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
            h.on_unexpected_exit(t0 + Duration::from_secs(i), &policy(), "1".into(), false);
        }
        // 60.5 s after the first restart, four remain in the window: a fifth is allowed, delayed.
        assert_eq!(
            h.on_unexpected_exit(
                t0 + Duration::from_millis(60_500),
                &policy(),
                "1".into(),
                false
            ),
            Decision::RestartAfter(Duration::from_millis(500))
        );
        // Long after all of them, a crash is replaced at once.
        assert_eq!(
            h.on_unexpected_exit(
                t0 + Duration::from_secs(600),
                &policy(),
                "SIGKILL".into(),
                false
            ),
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
            h.on_unexpected_exit(Instant::now(), &p, "1".into(), false),
            Decision::GiveUp
        );
    }

    #[test]
    fn crashes_after_ready_are_replaced_forever_with_a_capped_delay() {
        let mut h = RestartHistory::default();
        let t0 = Instant::now();
        // The scenario: a crash every 0.3 s, far more than the budget allows.
        let delays: Vec<_> = (0..50)
            .map(|i| {
                match h.on_unexpected_exit(
                    t0 + Duration::from_millis(300 * i),
                    &policy(),
                    "1".into(),
                    true,
                ) {
                    Decision::RestartAfter(d) => d,
                    Decision::GiveUp => panic!("gave up on a slot whose workers were ready"),
                }
            })
            .collect();
        assert_eq!(delays[0], Duration::ZERO);
        assert_eq!(delays[1], Duration::from_millis(100));
        assert_eq!(delays[2], Duration::from_millis(200));
        assert!(delays[3..].iter().all(|d| *d <= policy().max_delay));
        assert_eq!(h.total(), 50);
        // The crashes did not touch the boot budget: a boot failure now is the first.
        assert_eq!(
            h.on_unexpected_exit(t0 + Duration::from_secs(16), &policy(), "1".into(), false),
            Decision::RestartAfter(Duration::ZERO)
        );
    }
}
