//! The agent lease against a real redis-server: candidates in one test, a short lease.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::test_server::RedisServer;
use super::*;

const LEASE: Duration = Duration::from_millis(1000);
const KILL: Duration = Duration::from_millis(200);
/// Room for a loaded machine on top of what the protocol promises.
const SLACK: Duration = Duration::from_millis(700);

/// A host that campaigns, and the lease events it got.
struct Candidate {
    remote: Remote,
    events: mpsc::UnboundedReceiver<LeaseEvent>,
}

impl Candidate {
    fn start(url: &str, namespace: &str, host: &str) -> Candidate {
        let config = RemoteConfig {
            heartbeat: Duration::from_millis(100),
            host_timeout: Duration::from_millis(500),
            ..RemoteConfig::new(url, namespace, host)
        };
        let (news, _from_hosts) = mpsc::unbounded_channel();
        let remote = Remote::start(config, news).unwrap();
        let (sender, events) = mpsc::unbounded_channel();
        let timing = LeaseTiming::new(LEASE, KILL).unwrap();
        remote.campaign(timing, sender).unwrap();
        Candidate { remote, events }
    }

    /// The next lease event within `within`, if any.
    async fn next(&mut self, within: Duration) -> Option<LeaseEvent> {
        tokio::time::timeout(within, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    async fn won(&mut self, within: Duration) -> u64 {
        match self.next(within).await {
            Some(LeaseEvent::Won { epoch }) => epoch,
            other => panic!("expected Won within {within:?}, got {other:?}"),
        }
    }
}

/// Which of the two wins first (the other must not win meanwhile), and its epoch.
async fn first_winner(a: &mut Candidate, b: &mut Candidate, within: Duration) -> (bool, u64) {
    tokio::select! {
        event = a.events.recv() => match event {
            Some(LeaseEvent::Won { epoch }) => (true, epoch),
            other => panic!("a: {other:?}"),
        },
        event = b.events.recv() => match event {
            Some(LeaseEvent::Won { epoch }) => (false, epoch),
            other => panic!("b: {other:?}"),
        },
        () = tokio::time::sleep(within) => panic!("nobody won the lease within {within:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_then_a_graceful_handoff_and_a_takeover_after_a_crash() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    let mut a = Candidate::start(&url, "l1", "a");
    let mut b = Candidate::start(&url, "l1", "b");
    // The namespace's first lease: its epoch counter is new, so its agent waits one lease.
    let started = Instant::now();
    let (a_leads, first) = first_winner(&mut a, &mut b, LEASE + SLACK * 2).await;
    assert!(started.elapsed() >= LEASE, "{:?}", started.elapsed());
    let (mut leader, mut other) = if a_leads { (a, b) } else { (b, a) };
    let (leader_id, other_id) = if a_leads { ("a", "b") } else { ("b", "a") };
    assert_eq!(leader.remote.agent_host().as_deref(), Some(leader_id));
    // Renewed: nobody else wins, for several leases.
    assert_eq!(other.next(LEASE * 3).await, None);
    assert_eq!(other.remote.agent_host().as_deref(), Some(leader_id));

    // A graceful release: the other takes over at once (on the notice, not its 1 s retry).
    let released = Instant::now();
    leader.remote.release_agent_lease().await;
    let second = other.won(SLACK).await;
    let handoff = released.elapsed();
    assert!(handoff < Duration::from_millis(500), "{handoff:?}");
    assert!(second > first, "{second} after {first}");
    assert_eq!(other.remote.agent_host().as_deref(), Some(other_id));
    assert_eq!(leader.next(Duration::from_millis(50)).await, None);
    let leader_id = other_id;

    // The leader's process dies (its handle, and so its tasks, gone): a third host takes over
    // once the lease has expired, within the lease and a retry.
    let mut third = Candidate::start(&url, "l1", "c");
    assert_eq!(third.next(LEASE).await, None);
    assert_eq!(third.remote.agent_host().as_deref(), Some(leader_id));
    let crashed = Instant::now();
    drop(other);
    let third_epoch = third.won(LEASE + CANDIDATE_RETRY + SLACK).await;
    eprintln!(
        "lease: graceful handoff {handoff:?}, takeover after a crash {:?}",
        crashed.elapsed()
    );
    assert!(third_epoch > second);
    third.remote.release_agent_lease().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_redis_stops_its_agent_before_the_lease_can_expire() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    let mut a = Candidate::start(&url, "l2", "a");
    let first = a.won(LEASE + SLACK * 2).await;
    // Renewed for a while.
    assert_eq!(a.next(LEASE * 2).await, None);
    // Redis hangs: no renewal succeeds. The leader's last renewal was sent before the pause, so
    // its lease lives at least LEASE after the pause: the agent must be dead (Lost + KILL) by then.
    server.pause();
    let paused = Instant::now();
    let lost = a.next(LEASE * 2).await;
    let after = paused.elapsed();
    server.resume();
    match lost {
        Some(LeaseEvent::Lost { epoch, reason }) => {
            assert_eq!(epoch, first);
            assert!(reason.contains("no renewal"), "{reason}");
        }
        other => panic!("expected Lost, got {other:?}"),
    }
    assert!(after + KILL < LEASE, "Lost {after:?} after the pause");
    // Redis back: the lease is taken again, under a new epoch.
    let second = a.won(LEASE * 2 + SLACK).await;
    assert!(second > first);
    a.remote.release_agent_lease().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_lost_its_data_the_new_leader_starts_only_once_the_old_one_stopped() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    let mut a = Candidate::start(&url, "l3", "a");
    let first = a.won(LEASE + SLACK * 2).await;
    let mut b = Candidate::start(&url, "l3", "b");
    assert_eq!(b.next(LEASE).await, None);
    // A new, empty Redis: the lease and the epoch counter are gone.
    server.restart();
    let restarted = Instant::now();
    let lost_at = match a.next(LEASE * 2).await {
        Some(LeaseEvent::Lost { epoch, .. }) => {
            assert_eq!(epoch, first);
            restarted.elapsed()
        }
        other => panic!("expected Lost, got {other:?}"),
    };
    assert!(lost_at + KILL < LEASE, "{lost_at:?}");
    let (winner, second) = tokio::select! {
        event = a.events.recv() => (Some("a"), event),
        event = b.events.recv() => (Some("b"), event),
        () = tokio::time::sleep(LEASE * 3) => (None, None),
    };
    let won_at = restarted.elapsed();
    let Some(LeaseEvent::Won { epoch: second }) = second else {
        panic!("expected Won, got {second:?} from {winner:?}");
    };
    // Whoever won waited one whole lease: the old agent had stopped long before.
    assert!(won_at >= LEASE, "{won_at:?}");
    assert!(won_at > lost_at + KILL);
    assert!(second > first, "{second} after {first}");
    a.remote.release_agent_lease().await;
    b.remote.release_agent_lease().await;
}
