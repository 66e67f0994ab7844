//! The agent lease's timing, pure: when a leader renews, when it must start stopping its agent
//! (self-fencing), when its agent may start. `campaign.rs` runs it against Redis.
//!
//! The rule that keeps two agents from running at once: a leader measures, on its monotonic
//! clock, from the moment it *sent* the last renewal that succeeded. Redis set the lease's expiry
//! no earlier than that moment, so the lease lives at least `lease` after it. The leader starts
//! stopping its agent `lease - killTimeout - margin` after it: SIGTERM, then SIGKILL after
//! `killTimeout`, so the agent is gone `margin` before anyone else can take the lease. This holds
//! as long as the clocks of this host and of Redis run at about the same rate (not the same
//! time: rates), as in client-go's leader election.

use std::time::{Duration, Instant};

/// The shortest lease taken.
pub const MIN_LEASE: Duration = Duration::from_secs(1);
/// The lease when none is given.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// How often a candidate tries to take the lease, besides at once when its holder gives it up.
pub const CANDIDATE_RETRY: Duration = Duration::from_secs(1);
/// The longest lease an option takes (as every ms option, about 24 days).
const MAX_LEASE_MS: u64 = 2_147_483_647;

/// Room between the moment the agent is surely dead and the moment the lease can expire: for the
/// loop to act on the deadline, for the SIGKILL to land, and for clocks that run at slightly
/// different rates. A tenth of the lease, at most one second.
pub fn margin(lease: Duration) -> Duration {
    (lease / 10).min(Duration::from_secs(1))
}

/// A lease and the time its holder needs to stop its agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    pub lease: Duration,
    pub kill_timeout: Duration,
}

impl LeaseTiming {
    /// Refused unless the leader can renew at least once (every `lease / 3`) before it would have
    /// to start stopping its agent; the reason (to follow the lease's name and value) says which
    /// lease would do.
    pub fn new(lease: Duration, kill_timeout: Duration) -> Result<LeaseTiming, String> {
        let timing = LeaseTiming {
            lease,
            kill_timeout,
        };
        if lease < MIN_LEASE {
            return Err(format!("must be at least {} ms", MIN_LEASE.as_millis()));
        }
        if !timing.leaves_a_renewal() {
            let shortest = match shortest_lease(kill_timeout) {
                Some(lease) => format!("a lease of at least {} ms", lease.as_millis()),
                None => "a lease long enough".into(),
            };
            return Err(format!(
                "leaves no time to renew it with killTimeout {} ms: its holder renews it every lease/3 and must start stopping its agent lease - killTimeout - {} ms after its last renewal; use {shortest}, or a shorter killTimeout",
                kill_timeout.as_millis(),
                margin(lease).as_millis(),
            ));
        }
        Ok(timing)
    }

    fn leaves_a_renewal(&self) -> bool {
        self.fence_after_checked()
            .is_some_and(|fence| fence > self.renew_every())
    }

    fn fence_after_checked(&self) -> Option<Duration> {
        self.lease
            .checked_sub(self.kill_timeout)?
            .checked_sub(margin(self.lease))
    }

    /// How often the leader renews.
    pub fn renew_every(&self) -> Duration {
        self.lease / 3
    }

    /// How long after sending its last successful renewal the leader starts stopping its agent.
    pub fn fence_after(&self) -> Duration {
        self.fence_after_checked().unwrap_or(Duration::ZERO)
    }

    /// A renewal that failed is tried again this soon, while the fence deadline is ahead.
    pub fn retry_renewal(&self) -> Duration {
        (self.lease / 20).clamp(Duration::from_millis(50), Duration::from_millis(500))
    }
}

/// The shortest lease `LeaseTiming::new` takes with this kill timeout, if any within the bounds
/// of an option.
pub fn shortest_lease(kill_timeout: Duration) -> Option<Duration> {
    let fits = |ms: u64| {
        LeaseTiming {
            lease: Duration::from_millis(ms),
            kill_timeout,
        }
        .leaves_a_renewal()
    };
    let (mut low, mut high) = (MIN_LEASE.as_millis() as u64, MAX_LEASE_MS);
    if !fits(high) {
        return None;
    }
    // What fits grows with the lease: the first that fits, by bisection.
    while low < high {
        let middle = low + (high - low) / 2;
        if fits(middle) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    Some(Duration::from_millis(low))
}

/// What a leader must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// No renewal succeeded in time: stop the agent now (or never start it).
    Fence,
    /// The agent may start.
    Start,
    /// Send a renewal.
    Renew,
    /// Nothing until then.
    Wait(Instant),
}

/// This host's hold on the lease, from the moment it won it.
#[derive(Debug, Clone)]
pub struct Tenure {
    pub epoch: u64,
    timing: LeaseTiming,
    /// When the last renewal that succeeded (at first, the acquisition) was sent.
    confirmed: Instant,
    /// When the agent may start.
    start_at: Instant,
    started: bool,
    next_renewal: Instant,
}

impl Tenure {
    /// The lease was won by a call sent at `sent` and answered at `answered`. `fresh_counter`: the
    /// epoch counter did not exist, so Redis may have lost its data and with it the lease of a
    /// leader that does not know yet: the agent then waits one whole lease (answered + lease),
    /// by which time such a leader has stopped its own.
    pub fn new(
        epoch: u64,
        timing: LeaseTiming,
        sent: Instant,
        answered: Instant,
        fresh_counter: bool,
    ) -> Tenure {
        let start_at = if fresh_counter {
            answered + timing.lease
        } else {
            answered
        };
        Tenure {
            epoch,
            timing,
            confirmed: sent,
            start_at,
            started: false,
            next_renewal: sent + timing.renew_every(),
        }
    }

    /// When the agent must start stopping unless a renewal succeeds first.
    pub fn fence_at(&self) -> Instant {
        self.confirmed + self.timing.fence_after()
    }

    /// When the agent may start.
    pub fn start_at(&self) -> Instant {
        self.start_at
    }

    pub fn is_started(&self) -> bool {
        self.started
    }

    /// What is due at `now`: fencing before anything else.
    pub fn due(&self, now: Instant) -> Step {
        let fence_at = self.fence_at();
        if now >= fence_at {
            return Step::Fence;
        }
        if !self.started && now >= self.start_at {
            return Step::Start;
        }
        if now >= self.next_renewal {
            return Step::Renew;
        }
        let mut wake = fence_at.min(self.next_renewal);
        if !self.started {
            wake = wake.min(self.start_at);
        }
        Step::Wait(wake)
    }

    /// The agent was started.
    pub fn start(&mut self) {
        self.started = true;
    }

    /// A renewal sent at `sent` succeeded.
    pub fn renewed(&mut self, sent: Instant) {
        self.confirmed = self.confirmed.max(sent);
        self.next_renewal = sent + self.timing.renew_every();
    }

    /// A renewal failed (Redis did not answer, or refused) at `now`: another soon.
    pub fn renewal_failed(&mut self, now: Instant) {
        self.next_renewal = now + self.timing.retry_renewal();
    }

    /// How long a call sent at `now` may take before the fence deadline passes.
    pub fn time_left(&self, now: Instant) -> Duration {
        self.fence_at().saturating_duration_since(now)
    }
}

/// The lease's value in Redis: `<epoch> <host> <token>` (a host id holds no space).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub epoch: u64,
    pub host: String,
}

pub fn parse_holder(value: &str) -> Option<Holder> {
    let mut words = value.split(' ');
    let (Some(epoch), Some(host), Some(_token), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return None;
    };
    if host.is_empty() {
        return None;
    }
    Some(Holder {
        epoch: epoch.parse().ok()?,
        host: host.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn timing(lease: u64, kill: u64) -> LeaseTiming {
        LeaseTiming::new(Duration::from_millis(lease), Duration::from_millis(kill)).unwrap()
    }

    #[test]
    fn the_default_lease_fences_four_seconds_after_the_last_renewal_with_the_default_kill_timeout()
    {
        let t = timing(10_000, 5_000);
        assert_eq!(margin(t.lease), 1_000 * MS);
        assert_eq!(t.renew_every(), Duration::from_nanos(3_333_333_333));
        assert_eq!(t.fence_after(), 4_000 * MS);
        let short = timing(2_000, 500);
        assert_eq!(margin(short.lease), 200 * MS);
        assert_eq!(short.fence_after(), 1_300 * MS);
        assert_eq!(short.retry_renewal(), 100 * MS);
    }

    #[test]
    fn a_lease_that_leaves_no_renewal_before_the_fence_is_refused_with_one_that_would_do() {
        let error = LeaseTiming::new(10_000 * MS, 8_000 * MS).unwrap_err();
        assert!(error.contains("at least 13501 ms"), "{error}");
        assert!(LeaseTiming::new(13_501 * MS, 8_000 * MS).is_ok());
        assert!(LeaseTiming::new(13_500 * MS, 8_000 * MS).is_err());
        assert!(LeaseTiming::new(999 * MS, Duration::ZERO).is_err());
        assert!(LeaseTiming::new(2_000 * MS, 2_000 * MS).is_err());
        let shortest = shortest_lease(500 * MS).unwrap();
        assert!(LeaseTiming::new(shortest, 500 * MS).is_ok());
        assert!(LeaseTiming::new(shortest - MS, 500 * MS).is_err());
        assert_eq!(shortest_lease(Duration::ZERO), Some(MIN_LEASE));
        assert_eq!(shortest_lease(Duration::from_secs(2_000_000)), None);
    }

    #[test]
    fn a_leader_renews_every_third_of_the_lease_and_fences_when_renewals_fail() {
        let t = timing(3_000, 500);
        let won = Instant::now();
        let mut tenure = Tenure::new(7, t, won, won + 10 * MS, false);
        assert_eq!(tenure.due(won + 10 * MS), Step::Start);
        tenure.start();
        assert_eq!(tenure.due(won + 20 * MS), Step::Wait(won + 1_000 * MS));
        assert_eq!(tenure.due(won + 1_000 * MS), Step::Renew);
        // Renewed: counted from when it was sent, not answered.
        tenure.renewed(won + 1_000 * MS);
        assert_eq!(tenure.fence_at(), won + 1_000 * MS + 2_200 * MS);
        assert_eq!(tenure.due(won + 1_500 * MS), Step::Wait(won + 2_000 * MS));
        // Then Redis stops answering: retries, until the deadline.
        tenure.renewal_failed(won + 2_100 * MS);
        assert_eq!(tenure.due(won + 2_150 * MS), Step::Wait(won + 2_250 * MS));
        assert_eq!(tenure.due(won + 2_250 * MS), Step::Renew);
        tenure.renewal_failed(won + 3_150 * MS);
        assert_eq!(tenure.due(won + 3_199 * MS), Step::Wait(won + 3_200 * MS));
        assert_eq!(tenure.due(won + 3_200 * MS), Step::Fence);
        assert_eq!(tenure.time_left(won + 3_000 * MS), 200 * MS);
        assert_eq!(tenure.time_left(won + 4_000 * MS), Duration::ZERO);
    }

    #[test]
    fn a_late_answer_to_an_older_renewal_does_not_move_the_deadline_back() {
        let t = timing(3_000, 500);
        let won = Instant::now();
        let mut tenure = Tenure::new(1, t, won, won, false);
        tenure.renewed(won + 2_000 * MS);
        tenure.renewed(won + 1_000 * MS);
        assert_eq!(tenure.fence_at(), won + 2_000 * MS + t.fence_after());
    }

    #[test]
    fn the_stop_is_over_before_the_lease_can_expire() {
        for (lease, kill) in [(10_000, 5_000), (2_000, 500), (1_000, 0), (60_000, 30_000)] {
            let t = timing(lease, kill);
            let sent = Instant::now();
            let tenure = Tenure::new(1, t, sent, sent, false);
            // Killed by fence + killTimeout; the lease lives at least `lease` after `sent`.
            let killed = tenure.fence_at() + t.kill_timeout;
            assert_eq!(sent + t.lease - killed, margin(t.lease), "{lease}/{kill}");
        }
    }

    #[test]
    fn after_a_new_epoch_counter_the_agent_waits_one_lease_and_never_starts_if_fenced_first() {
        let t = timing(2_000, 500);
        let sent = Instant::now();
        let answered = sent + 5 * MS;
        let mut tenure = Tenure::new(1, t, sent, answered, true);
        assert_eq!(tenure.start_at(), answered + 2_000 * MS);
        let renewal = sent + Duration::from_nanos(666_666_666);
        assert_eq!(tenure.due(sent + 10 * MS), Step::Wait(renewal));
        // Renewed along the way, it starts once the lease has passed.
        tenure.renewed(sent + 700 * MS);
        tenure.renewed(sent + 1_400 * MS);
        assert_eq!(tenure.due(answered + 2_000 * MS), Step::Start);
        // Not renewed, the fence comes first: it never starts.
        let tenure = Tenure::new(1, t, sent, answered, true);
        assert_eq!(tenure.due(sent + 1_300 * MS), Step::Fence);
        assert!(!tenure.is_started());
    }

    #[test]
    fn holders_parse() {
        assert_eq!(
            parse_holder("1712345678901 web-1 00000000deadbeef"),
            Some(Holder {
                epoch: 1_712_345_678_901,
                host: "web-1".into()
            })
        );
        assert_eq!(parse_holder(""), None);
        assert_eq!(parse_holder("x web-1 t"), None);
        assert_eq!(parse_holder("1 web-1"), None);
        assert_eq!(parse_holder("1 web-1 t extra"), None);
    }
}
