//! Scenario tests for the loop: a fake launcher (no processes), real queues, tokio's paused clock.
//! Each test drives the inputs a real cluster would see (a child online, an exit, a call from
//! JavaScript) and checks the loop's decisions: what it launches, signals and tells JavaScript.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::events::{Event, EventQueue};
use super::inputs::{Command, Input, ReloadRequest};
use super::launcher::{Attached, Done, LaunchRequest, Launched, Launcher};
use super::options::parse_cluster_options;
use super::supervisor::{start_with, Plan};
use super::workers::{Process, ProcessTable};
use super::WorkerId;
use crate::channel::connection::{ChannelEvent, Outbound};
use crate::os::process::ExitStatus;
use crate::remote::LeaseEvent;
use crate::wire::node_ipc::Incoming;

/// A child that is not there: it records the signals it gets.
struct FakeProcess {
    pid: u32,
    signals: Mutex<Vec<Signal>>,
}

impl Process for FakeProcess {
    fn pid(&self) -> u32 {
        self.pid
    }
    fn signal(&self, signal: Signal) -> io::Result<bool> {
        self.signals.lock().map_or(Ok(false), |mut s| {
            s.push(signal);
            Ok(true)
        })
    }
    fn try_reap(&self) -> io::Result<Option<ExitStatus>> {
        Ok(Some(ExitStatus {
            code: None,
            signal: Some(Signal::SIGKILL),
        }))
    }
}

#[derive(Default)]
struct Children {
    launched: Vec<WorkerId>,
    processes: HashMap<WorkerId, Arc<FakeProcess>>,
    /// What the loop wrote to each child's Node channel.
    outboxes: HashMap<WorkerId, mpsc::UnboundedReceiver<Outbound>>,
    /// The next launches whose channels cannot be watched.
    failing_attaches: usize,
    /// Launches are answered when the test says so (`release`), not at once.
    hold: bool,
    held: HashMap<WorkerId, Done>,
    /// The environment each launch asked for.
    envs: HashMap<WorkerId, Vec<(std::ffi::OsString, std::ffi::OsString)>>,
}

#[derive(Clone, Default)]
struct FakeLauncher(Arc<Mutex<Children>>);

impl Launcher for FakeLauncher {
    fn launch(&mut self, request: LaunchRequest, done: Done) {
        let id = request.id;
        let hold = {
            let mut c = lock(&self.0);
            c.launched.push(id);
            c.envs.insert(id, request.spec.env.clone());
            c.processes.insert(
                id,
                Arc::new(FakeProcess {
                    pid: 10_000 + id,
                    signals: Mutex::new(Vec::new()),
                }),
            );
            c.hold
        };
        if hold {
            lock(&self.0).held.insert(id, done);
        } else {
            answer(&self.0, id, done, true);
        }
    }
}

/// Answers a launch: the child runs (`spawned`), or could not be started.
fn answer(children: &Arc<Mutex<Children>>, id: WorkerId, done: Done, spawned: bool) {
    if !spawned {
        return done.finish(Err("injected: no such file".into()));
    }
    let (process, fail) = {
        let mut c = lock(children);
        let fail = c.failing_attaches > 0;
        c.failing_attaches = c.failing_attaches.saturating_sub(1);
        (c.processes.get(&id).cloned(), fail)
    };
    let Some(process) = process else {
        return done.finish(Err("no process".into()));
    };
    let children = children.clone();
    done.finish(Ok(Launched::new(
        process,
        Box::new(move |_sinks| {
            if fail {
                return Err(io::Error::other("injected: cannot watch the channel"));
            }
            let (conn, outbox) = mpsc::unbounded_channel();
            lock(&children).outboxes.insert(id, outbox);
            Ok(Attached {
                conn,
                backlog: Default::default(),
                frames: Ok(None),
                stderr_tail: None,
            })
        }),
    )));
}

fn lock(children: &Arc<Mutex<Children>>) -> std::sync::MutexGuard<'_, Children> {
    children.lock().unwrap_or_else(|e| e.into_inner())
}

/// A cluster driven by a test.
struct Scenario {
    inputs: mpsc::UnboundedSender<Input>,
    events: EventQueue,
    children: Arc<Mutex<Children>>,
    /// Everything JavaScript was told, in order.
    seen: Vec<Event>,
    _script: TempScript,
}

/// A script path that exists, for the options' check.
struct TempScript(std::path::PathBuf);

impl TempScript {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "rcluster-scenario-{}-{}.js",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::write(&path, "");
        TempScript(path)
    }
}

impl Drop for TempScript {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Scenario {
    /// A supervised cluster with these options (besides `exec`; `agent: true` for an agent),
    /// started.
    fn start(options: Value) -> Scenario {
        let script = TempScript::new();
        let mut options = options;
        let path = json!(script.0.display().to_string());
        if options["agent"] == json!(true) {
            options["agent"] = path.clone();
        }
        if options["agent"]["scope"].is_string() {
            options["agent"]["exec"] = path.clone();
        }
        options["exec"] = path;
        let mut options = match parse_cluster_options(&options, Vec::new()) {
            Ok(o) => o,
            Err(e) => panic!("{}", e.message),
        };
        // No Redis: the tests play the link's part (`Input::Lease`).
        options.remote = None;
        let events = EventQueue::new(Arc::new(|| {}));
        let launcher = FakeLauncher::default();
        let children = launcher.0.clone();
        let inputs = start_with(
            Plan::Supervised(Box::new(options)),
            events.clone(),
            ProcessTable::default(),
            Arc::new(AtomicU32::new(1)),
            Box::new(launcher),
        );
        let cluster = Scenario {
            inputs,
            events,
            children,
            seen: Vec::new(),
            _script: script,
        };
        cluster.command(Command::Start);
        cluster
    }

    fn command(&self, command: Command) {
        let _ = self.inputs.send(Input::Command(command));
    }

    fn channel(&self, id: WorkerId, event: ChannelEvent) {
        let _ = self.inputs.send(Input::Channel(id, event));
    }

    fn online(&self, id: WorkerId) {
        let msg = json!({ "cmd": "NODE_CLUSTER", "act": "online" });
        if let Value::Object(map) = msg {
            self.channel(id, ChannelEvent::Message(Incoming::Cluster(map)));
        }
    }

    fn exit(&self, id: WorkerId, code: i32) {
        self.channel(
            id,
            ChannelEvent::Exited(ExitStatus {
                code: Some(code),
                signal: None,
            }),
        );
    }

    /// Lets the loop run for `ms` of (paused, so instant) time.
    async fn run_for(&mut self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.seen.extend(self.events.take());
    }

    /// From now on, launches wait for `release`.
    fn hold_launches(&self) {
        lock(&self.children).hold = true;
    }

    /// Answers a held launch: spawned, or not.
    fn release(&self, id: WorkerId, spawned: bool) {
        let done = lock(&self.children).held.remove(&id);
        match done {
            Some(done) => answer(&self.children, id, done, spawned),
            None => panic!("launch {id} is not held"),
        }
    }

    fn lease(&self, event: LeaseEvent) {
        let _ = self.inputs.send(Input::Lease(event));
    }

    /// A variable of the environment a launch asked for.
    fn env(&self, id: WorkerId, name: &str) -> Option<String> {
        lock(&self.children).envs.get(&id).and_then(|env| {
            env.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.to_string_lossy().into_owned())
        })
    }

    fn forks(&self) -> Vec<WorkerId> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                Event::Fork { id, .. } => Some(*id),
                _ => None,
            })
            .collect()
    }

    fn reloads_aborted(&self) -> usize {
        self.count(|e| {
            matches!(e, Event::Reloaded { error: Some((code, _)), .. } if *code == crate::errors::RELOAD_ABORTED)
        })
    }

    fn launched(&self) -> Vec<WorkerId> {
        lock(&self.children).launched.clone()
    }

    fn signals(&self, id: WorkerId) -> Vec<Signal> {
        lock(&self.children)
            .processes
            .get(&id)
            .map(|p| p.signals.lock().map(|s| s.clone()).unwrap_or_default())
            .unwrap_or_default()
    }

    /// The `act`s of the cluster messages the loop wrote to a child.
    fn acts(&self, id: WorkerId) -> Vec<String> {
        let mut children = lock(&self.children);
        let mut acts = Vec::new();
        if let Some(outbox) = children.outboxes.get_mut(&id) {
            while let Ok(Outbound::Frame { bytes, .. }) = outbox.try_recv() {
                let text = String::from_utf8_lossy(&bytes);
                let value: Value = serde_json::from_str(text.trim()).unwrap_or(Value::Null);
                if let Some(act) = value["act"].as_str() {
                    acts.push(act.to_owned());
                }
            }
        }
        acts
    }

    fn count(&self, what: impl Fn(&Event) -> bool) -> usize {
        self.seen.iter().filter(|e| what(e)).count()
    }

    fn error_code(&self) -> Option<&'static str> {
        self.seen.iter().find_map(|e| match e {
            Event::Error { code, .. } => Some(*code),
            _ => None,
        })
    }

    fn warnings(&self) -> Vec<&'static str> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                Event::Warning { code, .. } => Some(*code),
                _ => None,
            })
            .collect()
    }
}

fn is_ready(e: &Event) -> bool {
    matches!(e, Event::Ready)
}

fn is_stopped(e: &Event) -> bool {
    matches!(e, Event::Stopped)
}

/// The cluster is up with `n` app workers (ids 1..=n), online being the readiness.
async fn running(n: usize, extra: Value) -> Scenario {
    let mut options = json!({ "workers": n, "readiness": "online" });
    if let (Value::Object(o), Value::Object(e)) = (&mut options, extra) {
        o.extend(e);
    }
    let mut cluster = Scenario::start(options);
    cluster.run_for(1).await;
    for id in cluster.launched() {
        cluster.online(id);
    }
    cluster.run_for(1).await;
    assert_eq!(cluster.count(is_ready), 1, "{:?}", cluster.seen);
    cluster
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_at_boot_spends_the_budget_then_the_cluster_fails() {
    let mut cluster = Scenario::start(json!({
        "workers": 1, "readiness": "online", "maxRestarts": 2, "restartDelay": 100,
    }));
    cluster.run_for(1).await;
    // Each worker dies before it is ready; the delay doubles: 0, 100, 200 ms.
    for round in 0..3 {
        let launched = cluster.launched();
        assert_eq!(launched.len(), round + 1, "round {round}: {launched:?}");
        cluster.exit(launched[round], 1);
        cluster.run_for(1).await;
        if round == 1 {
            // The second restart waits its delay.
            assert_eq!(cluster.launched().len(), 2);
        }
        cluster.run_for(300).await;
    }
    assert_eq!(cluster.launched().len(), 3);
    assert_eq!(cluster.error_code(), Some(crate::errors::RESTART_BUDGET));
    assert_eq!(cluster.count(is_stopped), 1);
    assert_eq!(cluster.count(is_ready), 0);
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_crashes_after_it_was_ready_is_always_replaced() {
    let mut cluster = running(1, json!({ "maxRestarts": 1 })).await;
    for round in 0..4 {
        let id = *cluster.launched().last().unwrap_or(&0);
        cluster.exit(id, 1);
        cluster.run_for(10_000).await;
        let next = *cluster.launched().last().unwrap_or(&0);
        assert_ne!(next, id, "round {round}: no replacement");
        cluster.online(next);
        cluster.run_for(1).await;
    }
    assert_eq!(cluster.error_code(), None);
    let crashes = cluster
        .warnings()
        .iter()
        .filter(|c| **c == crate::errors::WORKER_CRASHED)
        .count();
    assert_eq!(crashes, 4);
}

#[tokio::test(start_paused = true)]
async fn a_worker_not_ready_in_time_fails_the_start_and_is_killed() {
    let mut cluster = Scenario::start(json!({
        "workers": 2, "readiness": "online", "readyTimeout": 1000, "killTimeout": 500,
    }));
    cluster.run_for(1).await;
    cluster.online(1);
    cluster.run_for(999).await;
    assert_eq!(cluster.error_code(), None);
    cluster.run_for(2).await;
    assert_eq!(cluster.error_code(), Some(crate::errors::READY_TIMEOUT));
    // Both are asked to leave; the silent one ignores it and is killed at the stop's deadline.
    assert_eq!(cluster.acts(1), vec!["disconnect"]);
    assert_eq!(cluster.acts(2), vec!["disconnect"]);
    cluster.exit(1, 0);
    cluster.run_for(600).await;
    assert_eq!(cluster.signals(2), vec![Signal::SIGKILL]);
    cluster.exit(2, 137);
    cluster.run_for(1).await;
    assert_eq!(cluster.count(is_stopped), 1);
}

#[tokio::test(start_paused = true)]
async fn a_replacement_that_dies_aborts_the_reload_and_the_old_workers_serve_on() {
    let mut cluster = running(2, json!({})).await;
    cluster.command(Command::Reload(ReloadRequest {
        ticket: Some(9),
        parallel: Some(1),
        agent: None,
        trigger: "test".into(),
    }));
    cluster.run_for(1).await;
    assert_eq!(cluster.launched(), vec![1, 2, 3]);
    cluster.exit(3, 1);
    cluster.run_for(1).await;
    let aborted = cluster.seen.iter().any(|e| {
        matches!(e, Event::Reloaded { tickets, error: Some((code, _)), .. }
            if tickets == &vec![9] && *code == crate::errors::RELOAD_ABORTED)
    });
    assert!(aborted, "{:?}", cluster.seen);
    // Nobody was asked to leave, nothing else was started.
    assert!(cluster.acts(1).is_empty() && cluster.acts(2).is_empty());
    cluster.run_for(10_000).await;
    assert_eq!(cluster.launched(), vec![1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn scaling_down_during_a_reload_settles_both() {
    let mut cluster = running(2, json!({})).await;
    cluster.command(Command::Reload(ReloadRequest {
        ticket: Some(1),
        parallel: Some(1),
        agent: None,
        trigger: "test".into(),
    }));
    cluster.run_for(1).await;
    assert_eq!(cluster.launched(), vec![1, 2, 3]);
    cluster.command(Command::Scale {
        workers: 1,
        ticket: 2,
    });
    cluster.run_for(1).await;
    // Slot 1's worker leaves; slot 0's replacement comes up and its old worker leaves too.
    assert_eq!(cluster.acts(2), vec!["disconnect"]);
    cluster.online(3);
    cluster.run_for(1).await;
    assert_eq!(cluster.acts(1), vec!["disconnect"]);
    let reloaded = cluster.seen.iter().any(|e| {
        matches!(e, Event::Reloaded { error: None, details, .. } if details["workers"] == 1 && details["replaced"] == 1)
    });
    assert!(reloaded, "{:?}", cluster.seen);
    // The scale settles once the removed slot's worker is gone.
    assert_eq!(cluster.count(|e| matches!(e, Event::Scaled { .. })), 0);
    cluster.exit(2, 0);
    cluster.exit(1, 0);
    cluster.run_for(1).await;
    let scaled = cluster.seen.iter().any(
        |e| matches!(e, Event::Scaled { tickets, workers: 1, error: None } if tickets == &vec![2]),
    );
    assert!(scaled, "{:?}", cluster.seen);
    assert_eq!(cluster.launched(), vec![1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_stop_while_starting_starts_nothing_more_and_ends() {
    let mut cluster = Scenario::start(json!({ "workers": 2, "readiness": "online" }));
    cluster.run_for(1).await;
    cluster.online(1);
    cluster.command(Command::Stop {
        timeout: None,
        trigger: "stop()".into(),
    });
    cluster.run_for(1).await;
    cluster.exit(1, 0);
    cluster.exit(2, 0);
    cluster.run_for(60_000).await;
    assert_eq!(cluster.launched(), vec![1, 2]);
    assert_eq!(cluster.count(is_stopped), 1);
    assert_eq!(cluster.count(is_ready), 0);
}

#[tokio::test(start_paused = true)]
async fn a_child_whose_channel_cannot_be_watched_is_killed_and_its_slot_filled_again() {
    let mut cluster = {
        let cluster = Scenario::start(json!({ "workers": 1, "readiness": "online" }));
        // The first launch was asked for by Start already; fail the one that answers it.
        lock(&cluster.children).failing_attaches = 1;
        cluster
    };
    cluster.run_for(1).await;
    assert_eq!(cluster.signals(1), vec![Signal::SIGKILL]);
    assert!(cluster.warnings().contains(&crate::errors::SPAWN_FAILED));
    // No fork event for it: JavaScript never heard of worker 1.
    assert_eq!(cluster.forks(), vec![2]);
    cluster.online(2);
    cluster.run_for(1).await;
    assert_eq!(cluster.count(is_ready), 1);
}

fn reload(ticket: u64, parallel: usize) -> Command {
    Command::Reload(ReloadRequest {
        ticket: Some(ticket),
        parallel: Some(parallel),
        agent: None,
        trigger: "test".into(),
    })
}

#[tokio::test(start_paused = true)]
async fn a_slot_whose_replacement_was_on_its_way_when_a_reload_aborted_is_filled_again() {
    let mut cluster = running(2, json!({})).await;
    cluster.hold_launches();
    cluster.command(reload(1, 2));
    cluster.run_for(1).await;
    assert_eq!(cluster.launched(), vec![1, 2, 3, 4]);
    cluster.release(3, true);
    cluster.run_for(1).await;
    // Slot 1's old worker crashes while its replacement (4) is still being spawned, then the
    // other replacement dies at boot: the reload aborts.
    cluster.exit(2, 1);
    cluster.run_for(1).await;
    cluster.exit(3, 1);
    cluster.run_for(1).await;
    assert_eq!(cluster.reloads_aborted(), 1);
    // 4 arrives for nothing: killed, never announced; slot 1 gets a worker of its own.
    cluster.release(4, true);
    cluster.run_for(1).await;
    assert_eq!(cluster.signals(4), vec![Signal::SIGKILL]);
    assert_eq!(cluster.launched(), vec![1, 2, 3, 4, 5]);
    cluster.release(5, true);
    cluster.run_for(1).await;
    assert_eq!(cluster.forks(), vec![1, 2, 3, 5]);
}

#[tokio::test(start_paused = true)]
async fn a_stop_while_app_workers_are_being_spawned_stops_the_agent_last() {
    let mut cluster =
        Scenario::start(json!({ "workers": 2, "readiness": "online", "agent": true }));
    cluster.run_for(1).await;
    // The agent starts first, with the id after the app workers'.
    assert_eq!(cluster.launched(), vec![3]);
    cluster.hold_launches();
    let started = json!({ "cmd": "NODE_RCLUSTER_AGENT_STARTED" });
    if let Value::Object(map) = started {
        cluster.channel(3, ChannelEvent::Message(Incoming::OtherInternal(map)));
    }
    cluster.run_for(1).await;
    assert_eq!(cluster.launched(), vec![3, 1, 2]);
    cluster.command(Command::Stop {
        timeout: None,
        trigger: "stop()".into(),
    });
    cluster.run_for(1).await;
    assert!(cluster.signals(3).is_empty(), "the agent went first");
    cluster.release(1, true);
    cluster.release(2, true);
    cluster.run_for(1).await;
    assert_eq!(cluster.signals(1), vec![Signal::SIGKILL]);
    assert_eq!(cluster.signals(3), vec![Signal::SIGTERM]);
    cluster.exit(3, 0);
    cluster.run_for(1).await;
    assert_eq!(cluster.count(is_stopped), 1);
    assert_eq!(cluster.forks(), vec![3]);
}

#[tokio::test(start_paused = true)]
async fn app_workers_are_numbered_from_1_with_an_agent_too_and_replacements_take_new_ids() {
    let mut cluster =
        Scenario::start(json!({ "workers": 2, "readiness": "online", "agent": true }));
    cluster.run_for(1).await;
    let started = json!({ "cmd": "NODE_RCLUSTER_AGENT_STARTED" });
    if let Value::Object(map) = started {
        cluster.channel(3, ChannelEvent::Message(Incoming::OtherInternal(map)));
    }
    cluster.run_for(1).await;
    cluster.online(1);
    cluster.online(2);
    cluster.run_for(1).await;
    assert_eq!(cluster.count(is_ready), 1, "{:?}", cluster.seen);
    assert_eq!(cluster.forks(), vec![3, 1, 2]);
    // A crashed worker's replacement and the agent's take ids never used before.
    cluster.exit(1, 1);
    cluster.exit(3, 1);
    cluster.run_for(1).await;
    let mut forks = cluster.forks();
    forks.sort_unstable();
    assert_eq!(forks, vec![1, 2, 3, 4, 5]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_launch_of_an_aborted_reload_does_not_abort_the_next_one() {
    let mut cluster = running(2, json!({})).await;
    cluster.hold_launches();
    cluster.command(reload(1, 2));
    cluster.run_for(1).await;
    cluster.release(3, true);
    cluster.run_for(1).await;
    cluster.exit(3, 1);
    cluster.run_for(1).await;
    assert_eq!(cluster.reloads_aborted(), 1);
    cluster.command(reload(2, 1));
    cluster.run_for(1).await;
    cluster.release(4, false);
    cluster.run_for(1).await;
    assert_eq!(cluster.reloads_aborted(), 1, "{:?}", cluster.seen);
    assert!(!cluster.warnings().contains(&crate::errors::SPAWN_FAILED));
}

#[tokio::test(start_paused = true)]
async fn a_launch_for_a_slot_scaled_away_neither_spends_the_budget_nor_settles_the_scale_early() {
    let mut cluster = running(2, json!({ "maxRestarts": 0 })).await;
    cluster.hold_launches();
    // Worker 2 crashes at work; its replacement (3) is on its way when its slot is scaled away.
    cluster.exit(2, 1);
    cluster.run_for(1).await;
    assert_eq!(cluster.launched(), vec![1, 2, 3]);
    cluster.command(Command::Scale {
        workers: 1,
        ticket: 5,
    });
    cluster.run_for(1).await;
    assert_eq!(cluster.count(|e| matches!(e, Event::Scaled { .. })), 0);
    cluster.release(3, false);
    cluster.run_for(1).await;
    assert_eq!(cluster.error_code(), None);
    assert!(!cluster.warnings().contains(&crate::errors::SPAWN_FAILED));
    let scaled = cluster.seen.iter().any(
        |e| matches!(e, Event::Scaled { tickets, workers: 1, error: None } if tickets == &vec![5]),
    );
    assert!(scaled, "{:?}", cluster.seen);
}

#[tokio::test(start_paused = true)]
async fn a_launch_that_ends_without_an_answer_counts_as_a_failed_spawn() {
    let mut cluster = Scenario::start(json!({ "workers": 1, "readiness": "online" }));
    cluster.hold_launches();
    cluster.run_for(1).await;
    // The launch's task is gone (a panic, say): its answer is dropped.
    drop(lock(&cluster.children).held.remove(&1));
    cluster.run_for(1).await;
    assert!(cluster.warnings().contains(&crate::errors::SPAWN_FAILED));
    assert_eq!(cluster.launched(), vec![1, 2]);
}

#[tokio::test(start_paused = true)]
async fn scaling_away_the_slot_being_replaced_does_not_abort_the_reload() {
    let mut cluster = running(2, json!({})).await;
    cluster.command(reload(1, 1));
    cluster.run_for(1).await;
    cluster.online(3);
    cluster.run_for(1).await;
    // Slot 1's replacement (4) is starting when slot 1 is scaled away.
    assert_eq!(cluster.launched(), vec![1, 2, 3, 4]);
    cluster.command(Command::Scale {
        workers: 1,
        ticket: 2,
    });
    cluster.run_for(1).await;
    cluster.exit(4, 0);
    cluster.exit(2, 0);
    cluster.exit(1, 0);
    cluster.run_for(1).await;
    assert_eq!(cluster.reloads_aborted(), 0, "{:?}", cluster.seen);
    let reloaded = cluster.seen.iter().any(|e| {
        matches!(e, Event::Reloaded { error: None, details, .. } if details["workers"] == 1 && details["replaced"] == 1)
    });
    assert!(reloaded, "{:?}", cluster.seen);
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_disconnects_itself_is_replaced_at_once_let_go_and_never_called_unresponsive()
{
    let mut cluster = running(
        2,
        json!({ "killTimeout": 3000, "heartbeatTimeout": 2000, "heartbeatInterval": 100 }),
    )
    .await;
    let beat = json!({ "cmd": "NODE_RCLUSTER_HEARTBEAT" });
    let Value::Object(beat) = beat else {
        unreachable!()
    };
    let heartbeats = |cluster: &Scenario, ids: &[WorkerId]| {
        for id in ids {
            let message = Incoming::OtherInternal(beat.clone());
            cluster.channel(*id, ChannelEvent::Message(message));
        }
    };
    heartbeats(&cluster, &[1, 2]);
    cluster.channel(1, ChannelEvent::Disconnected);
    cluster.run_for(500).await;
    assert_eq!(
        cluster.launched(),
        vec![1, 2, 3],
        "its replacement starts now"
    );
    assert_eq!(
        cluster.warnings(),
        vec![crate::errors::WORKER_DISCONNECTED],
        "{:?}",
        cluster.seen
    );
    assert!(
        cluster.signals(1).is_empty(),
        "it may finish what it serves"
    );
    cluster.online(3);
    for _ in 0..6 {
        heartbeats(&cluster, &[2, 3]);
        cluster.run_for(500).await;
    }
    // killTimeout after it was let go, and no heartbeat from it for 3.5 s: killed, not as
    // unresponsive.
    assert_eq!(cluster.signals(1), vec![Signal::SIGKILL]);
    assert_eq!(cluster.warnings(), vec![crate::errors::WORKER_DISCONNECTED]);
    cluster.exit(1, 0);
    cluster.run_for(1000).await;
    assert_eq!(cluster.launched(), vec![1, 2, 3], "its exit was no failure");
    assert_eq!(cluster.error_code(), None);
}

#[tokio::test(start_paused = true)]
async fn a_worker_whose_channel_closes_as_it_dies_is_a_crash() {
    let mut cluster = running(1, json!({})).await;
    cluster.channel(1, ChannelEvent::Disconnected);
    cluster.run_for(5).await;
    cluster.exit(1, 1);
    cluster.run_for(1000).await;
    assert_eq!(cluster.warnings(), vec![crate::errors::WORKER_CRASHED]);
    assert_eq!(cluster.launched(), vec![1, 2]);
}

#[tokio::test(start_paused = true)]
async fn stop_signal_follows_the_disconnect_of_each_worker_sent_away() {
    let mut plain = running(1, json!({})).await;
    plain.command(Command::Stop {
        timeout: None,
        trigger: "stop()".into(),
    });
    plain.run_for(1).await;
    assert_eq!(plain.acts(1), vec!["disconnect"]);
    assert!(plain.signals(1).is_empty());

    let mut cluster = running(2, json!({ "stopSignal": "SIGTERM" })).await;
    cluster.command(Command::Scale {
        workers: 1,
        ticket: 1,
    });
    cluster.run_for(1).await;
    assert_eq!(cluster.acts(2), vec!["disconnect"]);
    assert_eq!(cluster.signals(2), vec![Signal::SIGTERM]);
    cluster.command(Command::Stop {
        timeout: None,
        trigger: "stop()".into(),
    });
    cluster.run_for(1).await;
    assert_eq!(cluster.signals(1), vec![Signal::SIGTERM]);
}

/// The outcome of the `reloaded` event that settles `ticket`: its error code, or its figures.
fn settled(cluster: &Scenario, ticket: u64) -> Option<Result<Value, &'static str>> {
    cluster.seen.iter().find_map(|e| match e {
        Event::Reloaded {
            tickets,
            error,
            details,
        } if tickets.contains(&ticket) => Some(match error {
            Some((code, _)) => Err(*code),
            None => Ok(details.clone()),
        }),
        _ => None,
    })
}

#[tokio::test(start_paused = true)]
async fn replace_starts_a_worker_in_the_slot_and_sends_the_old_one_away_once_it_is_ready() {
    let mut cluster = running(2, json!({})).await;
    cluster.command(Command::Replace { ticket: 1, id: 9 });
    cluster.command(Command::Replace { ticket: 2, id: 1 });
    cluster.command(Command::Replace { ticket: 3, id: 2 });
    cluster.run_for(1).await;
    assert_eq!(
        settled(&cluster, 1),
        Some(Err(crate::errors::UNKNOWN_WORKER))
    );
    assert_eq!(settled(&cluster, 3), Some(Err(crate::errors::NOT_RUNNING)));
    assert_eq!(cluster.launched(), vec![1, 2, 3]);
    assert!(
        cluster.acts(1).is_empty(),
        "the old one serves until the new one is ready"
    );
    cluster.online(3);
    cluster.run_for(1).await;
    assert_eq!(cluster.acts(1), vec!["disconnect"]);
    // (It holds no socket here: it is done at once.)
    cluster.exit(1, 0);
    cluster.run_for(1).await;
    let details = settled(&cluster, 2)
        .and_then(Result::ok)
        .unwrap_or_default();
    assert_eq!(details["newWorkers"], json!([3]));
    assert_eq!(details["replacedWorker"], json!(1));
    assert_eq!(cluster.warnings(), Vec::<&str>::new());

    // A replacement that dies aborts it; the worker keeps serving.
    cluster.command(Command::Replace { ticket: 4, id: 2 });
    cluster.run_for(1).await;
    cluster.exit(4, 3);
    cluster.run_for(1).await;
    assert_eq!(
        settled(&cluster, 4),
        Some(Err(crate::errors::RELOAD_ABORTED))
    );
    assert!(cluster.acts(2).is_empty());
    assert_eq!(cluster.launched(), vec![1, 2, 3, 4]);
}

/// App workers 1 and 2 up, with an agent of scope 'cluster' (lease 2 s, killTimeout 500 ms).
async fn with_a_cluster_agent() -> Scenario {
    let mut cluster = Scenario::start(json!({
        "workers": 2, "readiness": "online", "killTimeout": 500, "redis": "redis://localhost",
        "agent": { "scope": "cluster", "lease": 2000 },
    }));
    cluster.run_for(1).await;
    // The app workers start at once, and the cluster is ready without an agent.
    assert_eq!(cluster.launched(), vec![1, 2]);
    cluster.online(1);
    cluster.online(2);
    cluster.run_for(1).await;
    assert_eq!(cluster.count(is_ready), 1, "{:?}", cluster.seen);
    cluster
}

fn agent_events(cluster: &Scenario) -> Vec<String> {
    cluster
        .seen
        .iter()
        .filter_map(|e| match e {
            Event::AgentLead { epoch } => Some(format!("lead {epoch}")),
            Event::AgentLose { epoch, .. } => Some(format!("lose {epoch}")),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_cluster_agent_runs_while_this_host_holds_the_lease_and_stops_at_once_when_it_does_not() {
    let mut cluster = with_a_cluster_agent().await;
    cluster.run_for(5_000).await;
    assert_eq!(cluster.launched(), vec![1, 2], "no lease, no agent");

    cluster.lease(LeaseEvent::Won { epoch: 42 });
    cluster.run_for(1).await;
    assert_eq!(cluster.launched(), vec![1, 2, 3]);
    assert_eq!(
        cluster.env(3, "RCLUSTER_AGENT_EPOCH").as_deref(),
        Some("42")
    );
    assert_eq!(cluster.env(1, "RCLUSTER_AGENT_EPOCH"), None);
    assert_eq!(cluster.forks(), vec![1, 2, 3]);

    // It crashes while this host leads: restarted under the restart policy (the first at once).
    cluster.exit(3, 1);
    cluster.run_for(1).await;
    assert_eq!(cluster.launched(), vec![1, 2, 3, 4]);
    assert_eq!(
        cluster.env(4, "RCLUSTER_AGENT_EPOCH").as_deref(),
        Some("42")
    );

    // The lease is lost: SIGTERM at once, SIGKILL after killTimeout; never restarted.
    cluster.lease(LeaseEvent::Lost {
        epoch: 42,
        reason: "test".into(),
    });
    cluster.run_for(1).await;
    assert_eq!(cluster.signals(4), vec![Signal::SIGTERM]);
    cluster.run_for(500).await;
    assert_eq!(cluster.signals(4), vec![Signal::SIGTERM, Signal::SIGKILL]);
    cluster.exit(4, 137);
    cluster.run_for(10_000).await;
    assert_eq!(cluster.launched(), vec![1, 2, 3, 4]);
    assert_eq!(agent_events(&cluster), ["lead 42", "lose 42"]);
    assert_eq!(cluster.error_code(), None);
    // The app workers were never touched.
    assert!(cluster.signals(1).is_empty() && cluster.acts(1).is_empty());

    // Won again, under a new epoch.
    cluster.lease(LeaseEvent::Won { epoch: 43 });
    cluster.run_for(1).await;
    assert_eq!(cluster.launched(), vec![1, 2, 3, 4, 5]);
    assert_eq!(
        cluster.env(5, "RCLUSTER_AGENT_EPOCH").as_deref(),
        Some("43")
    );
}

#[tokio::test(start_paused = true)]
async fn an_agent_being_spawned_when_the_lease_is_lost_is_killed_and_a_new_one_waits_for_the_old_to_exit(
) {
    let mut cluster = with_a_cluster_agent().await;
    cluster.hold_launches();
    cluster.lease(LeaseEvent::Won { epoch: 7 });
    cluster.run_for(1).await;
    cluster.lease(LeaseEvent::Lost {
        epoch: 7,
        reason: "test".into(),
    });
    cluster.run_for(1).await;
    cluster.release(3, true);
    cluster.run_for(1).await;
    assert_eq!(cluster.signals(3), vec![Signal::SIGKILL]);
    assert_eq!(cluster.forks(), vec![1, 2], "it never became a worker");

    // Won, lost and won again while the first agent is still on its way out: the next starts
    // once it has exited.
    cluster.lease(LeaseEvent::Won { epoch: 8 });
    cluster.run_for(1).await;
    cluster.release(4, true);
    cluster.run_for(1).await;
    cluster.lease(LeaseEvent::Lost {
        epoch: 8,
        reason: "test".into(),
    });
    cluster.lease(LeaseEvent::Won { epoch: 9 });
    cluster.run_for(100).await;
    assert_eq!(cluster.signals(4), vec![Signal::SIGTERM]);
    assert_eq!(
        cluster.launched(),
        vec![1, 2, 3, 4],
        "not beside the old one"
    );
    cluster.exit(4, 0);
    cluster.run_for(1).await;
    assert_eq!(cluster.launched(), vec![1, 2, 3, 4, 5]);
    // A stale loss (an epoch this host no longer leads under) changes nothing.
    cluster.lease(LeaseEvent::Lost {
        epoch: 8,
        reason: "late".into(),
    });
    cluster.run_for(1).await;
    assert!(cluster.signals(5).is_empty());
}

/// The launches that were agents.
fn agents(cluster: &Scenario) -> Vec<WorkerId> {
    let launched = cluster.launched();
    launched
        .into_iter()
        .filter(|id| cluster.env(*id, "RCLUSTER_AGENT_EPOCH").is_some())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_reload_restarts_the_cluster_agent_in_place_the_old_one_stopped_first() {
    let mut cluster = with_a_cluster_agent().await;
    cluster.lease(LeaseEvent::Won { epoch: 1 });
    cluster.run_for(1).await;
    cluster.command(Command::Reload(ReloadRequest {
        ticket: Some(1),
        parallel: Some(1),
        agent: Some(true),
        trigger: "test".into(),
    }));
    cluster.run_for(1).await;
    assert_eq!(cluster.signals(3), vec![Signal::SIGTERM]);
    assert_eq!(agents(&cluster), vec![3], "not beside the old one");
    cluster.exit(3, 0);
    cluster.run_for(1).await;
    let agents = agents(&cluster);
    assert_eq!(agents.len(), 2, "{agents:?}");
    assert_eq!(
        cluster.env(agents[1], "RCLUSTER_AGENT_EPOCH").as_deref(),
        Some("1")
    );
}

#[tokio::test(start_paused = true)]
async fn a_stop_stops_the_cluster_agent_with_the_app_workers_then_gives_the_lease_up() {
    let mut cluster = with_a_cluster_agent().await;
    cluster.lease(LeaseEvent::Won { epoch: 1 });
    cluster.run_for(1).await;
    cluster.command(Command::Stop {
        timeout: None,
        trigger: "stop()".into(),
    });
    cluster.run_for(1).await;
    // The agent is asked at once, not after the app workers.
    assert_eq!(cluster.signals(3), vec![Signal::SIGTERM]);
    assert_eq!(cluster.acts(1), vec!["disconnect"]);
    cluster.exit(1, 0);
    cluster.exit(2, 0);
    cluster.run_for(1).await;
    assert_eq!(cluster.count(is_stopped), 0, "the agent still runs");
    cluster.exit(3, 0);
    cluster.run_for(1).await;
    // Without a link to Redis here, the lease's release is answered at once.
    assert_eq!(cluster.count(is_stopped), 1);
}
