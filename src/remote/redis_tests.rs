//! The transport against a real redis-server: hosts in one test, short timings.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::test_server::RedisServer;
use super::*;

const HEARTBEAT: Duration = Duration::from_millis(100);
const HOST_TIMEOUT: Duration = Duration::from_millis(500);
/// Room for a loaded machine on top of what the protocol promises.
const SLACK: Duration = Duration::from_millis(700);

fn config(url: &str, namespace: &str, host: &str) -> RemoteConfig {
    RemoteConfig {
        heartbeat: HEARTBEAT,
        host_timeout: HOST_TIMEOUT,
        max_message: 64 * 1024,
        ..RemoteConfig::new(url, namespace, host)
    }
}

/// A host under test and every event it emitted so far.
struct Host {
    remote: Remote,
    events: mpsc::UnboundedReceiver<RemoteEvent>,
    seen: Vec<RemoteEvent>,
}

impl Host {
    fn start(config: RemoteConfig) -> Host {
        let (sender, events) = mpsc::unbounded_channel();
        let remote = Remote::start(config, sender).unwrap();
        Host {
            remote,
            events,
            seen: Vec::new(),
        }
    }

    /// Waits for an event that `pick` accepts, recording every event on the way.
    async fn until<T>(
        &mut self,
        what: &str,
        within: Duration,
        mut pick: impl FnMut(&RemoteEvent) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{}: no {what} within {within:?}; saw {:?}",
                        self.remote.me(),
                        self.seen
                    )
                })
                .expect("the transport's tasks ended");
            let picked = pick(&event);
            self.seen.push(event);
            if let Some(picked) = picked {
                return picked;
            }
        }
    }

    /// Takes whatever arrived, without waiting.
    fn drain(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.seen.push(event);
        }
    }

    async fn joined(&mut self) -> HostInfo {
        self.until("Joined", Duration::from_secs(5), |event| match event {
            RemoteEvent::Joined { me, .. } => Some(me.clone()),
            _ => None,
        })
        .await
    }

    /// Waits until the members are exactly `hosts` (by host id).
    async fn sees(&mut self, hosts: &[&str]) {
        let mut expected: Vec<String> = hosts.iter().map(|host| host.to_string()).collect();
        expected.sort();
        let members = |remote: &Remote| {
            let mut names: Vec<String> = remote.hosts().into_iter().map(|info| info.host).collect();
            names.sort();
            names
        };
        if members(&self.remote) == expected {
            return;
        }
        let remote = self.remote.clone();
        self.until("the expected members", Duration::from_secs(5), |_| {
            (members(&remote) == expected).then_some(())
        })
        .await
    }

    fn broadcasts_from(&self, host: &str) -> Vec<Vec<u8>> {
        self.seen
            .iter()
            .filter_map(|event| match event {
                RemoteEvent::Broadcast { from, bytes } if from.host == host => Some(bytes.clone()),
                _ => None,
            })
            .collect()
    }

    fn lost_from(&self, host: &str) -> u64 {
        self.seen
            .iter()
            .map(|event| match event {
                RemoteEvent::Lost { from, count } if from == host => *count,
                _ => 0,
            })
            .sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_join_broadcast_send_leave_and_time_out() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    let mut a = Host::start(config(&url, "t1", "a"));
    a.joined().await;
    let mut b = Host::start(config(&url, "t1", "b"));
    let mut c = Host::start(config(&url, "t1", "c"));
    let b_me = b.joined().await;
    let c_me = c.joined().await;
    a.sees(&["b", "c"]).await;
    b.sees(&["a", "c"]).await;
    c.sees(&["a", "b"]).await;
    assert!(a.seen.contains(&RemoteEvent::HostJoined(b_me.clone())));

    // 1000 broadcasts reach the others in order, and not their sender.
    let sent: Vec<Vec<u8>> = (0..1000).map(|i| format!("m{i}").into_bytes()).collect();
    for bytes in &sent {
        a.remote.broadcast(bytes.clone()).unwrap();
    }
    for receiver in [&mut b, &mut c] {
        let mut count = receiver.broadcasts_from("a").len();
        while count < sent.len() {
            receiver
                .until("the broadcasts", Duration::from_secs(10), |event| {
                    matches!(event, RemoteEvent::Broadcast { .. }).then_some(())
                })
                .await;
            count += 1;
        }
        assert_eq!(receiver.broadcasts_from("a"), sent);
        assert_eq!(receiver.lost_from("a"), 0);
    }
    a.drain();
    assert!(a.broadcasts_from("a").is_empty());

    // An inbox message reaches its host only.
    b.remote.send("a", b"hello a".to_vec()).unwrap();
    let (from, bytes) = a
        .until(
            "the inbox message",
            Duration::from_secs(2),
            |event| match event {
                RemoteEvent::Inbox { from, bytes } => Some((from.clone(), bytes.clone())),
                _ => None,
            },
        )
        .await;
    assert_eq!((from, bytes), (b_me.clone(), b"hello a".to_vec()));
    assert_eq!(
        b.remote.send("nobody", b"x".to_vec()),
        Err(RemoteError::UnknownHost("nobody".into()))
    );
    assert_eq!(
        a.remote.broadcast(vec![0; 64 * 1024 + 1]),
        Err(RemoteError::TooLarge { limit: 64 * 1024 })
    );

    // A graceful leave is seen at once (well before a heartbeat could tell).
    let left_at = Instant::now();
    c.remote.leave().await;
    let reason = a
        .until("c's leave", HOST_TIMEOUT, |event| match event {
            RemoteEvent::HostLeft { host, reason } if *host == c_me => Some(*reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, LeaveReason::Left);
    assert!(left_at.elapsed() < HOST_TIMEOUT, "{:?}", left_at.elapsed());

    // A host that stops without leaving times out.
    let stopped_at = Instant::now();
    b.remote.abort();
    let reason = a
        .until(
            "b's timeout",
            HOST_TIMEOUT + HEARTBEAT + SLACK,
            |event| match event {
                RemoteEvent::HostLeft { host, reason } if *host == b_me => Some(*reason),
                _ => None,
            },
        )
        .await;
    assert_eq!(reason, LeaveReason::TimedOut);
    assert!(stopped_at.elapsed() >= HOST_TIMEOUT - HEARTBEAT);
    a.sees(&[]).await;
    a.remote.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_is_survived_and_its_losses_are_counted() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    let mut a = Host::start(config(&url, "t2", "a"));
    let mut b = Host::start(config(&url, "t2", "b"));
    let a_first = a.joined().await;
    let b_first = b.joined().await;
    a.sees(&["b"]).await;
    b.sees(&["a"]).await;

    // Redis dies while broadcasts flow: each broadcast accepted is then received, reported
    // lost, or came back as failed.
    let mut accepted = 0u64;
    for i in 0..1000 {
        a.remote.broadcast(format!("m{i}").into_bytes()).unwrap();
        accepted += 1;
    }
    while b.broadcasts_from("a").len() < 300 {
        b.until("some broadcasts", Duration::from_secs(5), |event| {
            matches!(event, RemoteEvent::Broadcast { .. }).then_some(())
        })
        .await;
    }
    server.kill();
    for i in 0..200 {
        if a.remote.broadcast(format!("n{i}").into_bytes()).is_ok() {
            accepted += 1;
        }
    }
    for host in [&mut a, &mut b] {
        host.until(
            "Unavailable",
            HOST_TIMEOUT + HEARTBEAT + SLACK * 3,
            |event| matches!(event, RemoteEvent::Unavailable { .. }).then_some(()),
        )
        .await;
    }
    // While unavailable, calls fail at once.
    let asked = Instant::now();
    assert!(matches!(
        a.remote.broadcast(b"x".to_vec()),
        Err(RemoteError::Unavailable(_))
    ));
    assert!(matches!(
        a.remote.send("b", b"x".to_vec()),
        Err(RemoteError::Unavailable(_))
    ));
    assert!(asked.elapsed() < Duration::from_millis(50));

    server.restart();
    let a_again = a.joined().await;
    let b_again = b.joined().await;
    assert_ne!(a_again, a_first);
    assert_ne!(b_again, b_first);
    a.sees(&["b"]).await;
    b.sees(&["a"]).await;

    a.drain();
    let failed = a
        .seen
        .iter()
        .filter(|event| matches!(event, RemoteEvent::Failed { .. }))
        .count() as u64;
    let sent = accepted - failed;
    let accounted = |b: &Host| b.broadcasts_from("a").len() as u64 + b.lost_from("a");
    let deadline = Instant::now() + Duration::from_secs(5);
    while accounted(&b) < sent {
        let within = deadline.saturating_duration_since(Instant::now());
        b.until("every broadcast accounted for", within, |event| {
            matches!(
                event,
                RemoteEvent::Broadcast { .. } | RemoteEvent::Lost { .. }
            )
            .then_some(())
        })
        .await;
    }
    let lost = b.lost_from("a");
    eprintln!("restart: accepted {accepted}, failed {failed}, lost {lost}");
    // The one write in flight when the server died may have reached b although its answer
    // never reached a (which reported it failed, "it may have been written"); nothing else may
    // differ.
    let accounted = accounted(&b);
    assert!(
        (sent..=sent + 1).contains(&accounted),
        "accepted {accepted}, failed {failed}, lost {lost}, received and lost {accounted}"
    );

    // And the namespace works again.
    a.remote.broadcast(b"after".to_vec()).unwrap();
    b.until(
        "the broadcast after the restart",
        Duration::from_secs(2),
        |event| {
            matches!(event, RemoteEvent::Broadcast { bytes, .. } if bytes == b"after").then_some(())
        },
    )
    .await;
    a.remote.leave().await;
    b.remote.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_and_damaged_messages_are_reported() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    let mut b = Host::start(config(&url, "t3", "b"));
    b.joined().await;
    // Entries as another host's transport would write them, with sequences 2 and 3 missing.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let entries = [
        ("1", vec![b"one".to_vec()]),
        ("4", vec![b"four".to_vec(), b"five".to_vec()]),
    ];
    for (seq, frames) in entries {
        let _: String = redis::cmd("XADD")
            .arg("rc:{t3}:bcast")
            .arg("*")
            .arg("h")
            .arg("ghost")
            .arg("i")
            .arg("0000000000000001")
            .arg("s")
            .arg(seq)
            .arg("f")
            .arg(super::packing::pack(&frames))
            .query(&mut connection)
            .unwrap();
    }
    let _: String = redis::cmd("XADD")
        .arg("rc:{t3}:bcast")
        .arg("*")
        .arg("h")
        .arg("ghost")
        .query(&mut connection)
        .unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg("rc:{t3}:in:b")
        .arg(&[9u8, 9, 9][..])
        .query(&mut connection)
        .unwrap();
    for _ in 0..2 {
        b.until("a malformed message", Duration::from_secs(2), |event| {
            matches!(event, RemoteEvent::Malformed { .. }).then_some(())
        })
        .await;
    }
    b.drain();
    assert!(b.seen.iter().any(|event| matches!(
        event,
        RemoteEvent::Malformed { from: Some(from), .. } if from == "ghost"
    )));
    assert_eq!(
        b.broadcasts_from("ghost"),
        [b"one".to_vec(), b"four".to_vec(), b"five".to_vec()]
    );
    assert_eq!(b.lost_from("ghost"), 2);

    // A member whose hash says it wrote more than arrived: the rest is reported lost once
    // nothing more comes for a heartbeat and a little.
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query(&mut connection).unwrap();
    let expiry = seconds * 1000 + micros / 1000 + 60_000;
    let _: i64 = redis::cmd("ZADD")
        .arg("rc:{t3}:hosts")
        .arg(expiry)
        .arg("spectre/0000000000000002")
        .query(&mut connection)
        .unwrap();
    b.sees(&["spectre"]).await;
    for seq in 1..=3 {
        let _: String = redis::cmd("XADD")
            .arg("rc:{t3}:bcast")
            .arg("*")
            .arg("h")
            .arg("spectre")
            .arg("i")
            .arg("0000000000000002")
            .arg("s")
            .arg(seq)
            .arg("f")
            .arg(super::packing::pack(&[b"x".to_vec()]))
            .query(&mut connection)
            .unwrap();
    }
    let _: i64 = redis::cmd("HSET")
        .arg("rc:{t3}:h:spectre/0000000000000002")
        .arg("seq")
        .arg(5)
        .query(&mut connection)
        .unwrap();
    let count = b
        .until(
            "the trailing loss",
            Duration::from_secs(3),
            |event| match event {
                RemoteEvent::Lost { from, count } if from == "spectre" => Some(*count),
                _ => None,
            },
        )
        .await;
    assert_eq!(count, 2);
    assert_eq!(b.broadcasts_from("spectre").len(), 3);

    // A successor incarnation tells what its predecessor wrote (here 6; 1, 4 and 5 arrived, 2
    // and 3 were reported): the rest is lost.
    let _: i64 = redis::cmd("ZADD")
        .arg("rc:{t3}:hosts")
        .arg(expiry)
        .arg("ghost/0000000000000005")
        .query(&mut connection)
        .unwrap();
    let _: i64 = redis::cmd("HSET")
        .arg("rc:{t3}:h:ghost/0000000000000005")
        .arg("seq")
        .arg(0)
        .arg("prev")
        .arg("0000000000000001:6")
        .query(&mut connection)
        .unwrap();
    let count = b
        .until(
            "the predecessor's loss",
            Duration::from_secs(3),
            |event| match event {
                RemoteEvent::Lost { from, count } if from == "ghost" => Some(*count),
                _ => None,
            },
        )
        .await;
    assert_eq!(count, 1);
    b.sees(&["ghost", "spectre"]).await;

    // A pub/sub connection killed under the host is made again.
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut connection)
        .unwrap();
    assert_eq!(killed, 1);
    let ghost = HostInfo {
        host: "ghost".into(),
        incarnation: 5,
    };
    let envelope = super::envelope::encode(&ghost, b"again");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg("rc:{t3}:in:b")
            .arg(&envelope)
            .query(&mut connection)
            .unwrap();
        if receivers == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "b did not subscribe again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let from = b
        .until(
            "the inbox message",
            Duration::from_secs(2),
            |event| match event {
                RemoteEvent::Inbox { from, bytes } if bytes == b"again" => Some(from.clone()),
                _ => None,
            },
        )
        .await;
    assert_eq!(from, ghost);
    b.remote.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_calls_fail_fast_and_unavailable_is_reported() {
    let dir = std::env::temp_dir().join(format!("rcluster-no-redis-{}", std::process::id()));
    let url = format!("unix://{}/absent.sock", dir.display());
    let mut a = Host::start(config(&url, "t4", "a"));
    let asked = Instant::now();
    assert!(matches!(
        a.remote.broadcast(b"x".to_vec()),
        Err(RemoteError::Unavailable(_))
    ));
    assert!(asked.elapsed() < Duration::from_millis(50));
    a.until("Unavailable", HOST_TIMEOUT + SLACK * 2, |event| {
        matches!(event, RemoteEvent::Unavailable { .. }).then_some(())
    })
    .await;
    a.remote.leave().await;
    let (sender, _events) = mpsc::unbounded_channel();
    let refused = Remote::start(config("rediss://localhost", "t4", "a"), sender)
        .err()
        .unwrap();
    assert!(refused.contains("TLS"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_restart_that_lost_the_data_makes_the_hosts_rejoin() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    let mut a = Host::start(config(&url, "t5", "a"));
    let mut b = Host::start(config(&url, "t5", "b"));
    let a_first = a.joined().await;
    b.joined().await;
    b.sees(&["a"]).await;
    // Back before the host timeout, but empty: the generation tells the hosts.
    server.restart();
    for host in [&mut a, &mut b] {
        host.until("Unavailable", HOST_TIMEOUT + SLACK * 2, |event| {
            matches!(event, RemoteEvent::Unavailable { .. }).then_some(())
        })
        .await;
    }
    let a_again = a.joined().await;
    b.joined().await;
    assert_ne!(a_again, a_first);
    b.sees(&["a"]).await;
    assert_eq!(b.remote.hosts(), [a_again]);
    a.remote.leave().await;
    b.remote.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut a = Host::start(RemoteConfig {
        max_queued: 128 * 1024,
        ..config(&server.url(), "t6", "a")
    });
    a.joined().await;
    // Not alone: a host alone writes no broadcasts.
    let mut b = Host::start(config(&server.url(), "t6", "b"));
    b.joined().await;
    a.sees(&["b"]).await;
    // A hung server: what is queued stays queued (the one in flight counts too).
    server.pause();
    let big = vec![7u8; 64 * 1024];
    assert_eq!(a.remote.broadcast(big.clone()), Ok(()));
    assert_eq!(a.remote.broadcast(big.clone()), Ok(()));
    let asked = Instant::now();
    assert_eq!(a.remote.broadcast(big), Err(RemoteError::QueueFull));
    assert_eq!(a.remote.broadcast(vec![1]), Err(RemoteError::QueueFull));
    assert!(asked.elapsed() < Duration::from_millis(50));
    server.resume();
    a.remote.leave().await;
    b.remote.leave().await;
}
