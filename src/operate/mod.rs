//! The operator's side of a running cluster: its control socket (`control`, with `home` where
//! it lives and `protocol` its wire format), and what it reports to others: Prometheus metrics
//! (`metrics`) and systemd's notifications (`notify`).
//!
//! It sits above `primary` and reaches the loop only as JavaScript does: commands on the loop's
//! queue, and the events the loop pushes, which it observes before JavaScript takes them. So it
//! answers while the primary's JavaScript is busy, and it changes nothing in the loop.

pub mod control;
mod home;
pub mod metrics;
pub mod notify;
mod protocol;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tokio::sync::{oneshot, watch};

use crate::errors::{RcError, RcResult};
use crate::primary::events::{Event, EventQueue};
use crate::primary::inputs::{Command, Input, InputSender};
use crate::primary::options::ClusterOptions;
use crate::primary::output::OutputLog;
use crate::primary::snapshot::Snapshot;
use crate::primary::WorkerId;

use self::home::Claim;

/// Tickets of the operator's requests, far above those JavaScript counts from 1 (and beyond
/// JavaScript's exact integers, so that the two can never meet).
const FIRST_TICKET: u64 = 1 << 60;

/// A worker reports its own addresses: what it may make the primary keep is bounded.
const MAX_ADDRESSES_PER_WORKER: usize = 64;
const MAX_ADDRESS: usize = 256;

/// How an operator's reload, restart or scale ended: the event's details, or its error.
type Outcome = Result<Value, RcError>;

/// The loop answers a snapshot at once unless it is stuck; past this, the answer says so.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(5);

/// What the control socket, the metrics and the event observer share.
struct Shared {
    name: String,
    script: String,
    started_at: SystemTime,
    started: Instant,
    inputs: InputSender,
    events: EventQueue,
    output: OutputLog,
    next_ticket: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Outcome>>>,
    /// The addresses each worker listens on, as `rcluster status` shows them.
    addresses: Mutex<BTreeMap<WorkerId, BTreeSet<String>>>,
    /// Held until the cluster has stopped; dropping it removes the socket and frees the name.
    claim: Mutex<Option<Claim>>,
    stopped: watch::Sender<bool>,
    /// What the metrics count from the events (reloads).
    counts: metrics::Counts,
    /// systemd's notification socket, if it gave one.
    notifier: Option<notify::Notifier>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each map is changed in one step: a panic elsewhere cannot leave it half-changed.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What an operator reaches, taken before the cluster's loop starts: a start whose name or
/// metrics address is in use fails before any child is spawned.
pub struct Claimed {
    /// The cluster's name and its control socket (`control`, on by default).
    control: Option<(Claim, std::os::unix::net::UnixListener)>,
    /// The metrics' listening socket (`metrics`).
    metrics: Option<std::net::TcpListener>,
    /// systemd's notification socket (`NOTIFY_SOCKET`).
    notifier: Option<notify::Notifier>,
}

/// Takes what the cluster serves its operators: its name and control socket, its metrics
/// address, systemd's notification socket. None if it serves none of them.
pub fn claim(options: &ClusterOptions) -> RcResult<Option<Claimed>> {
    let metrics = options.operations.metrics.map(metrics::bind).transpose()?;
    let control = if options.operations.control {
        let home = home::home(|name| std::env::var(name).ok())?;
        Some(Claim::take(&home, &options.operations.name)?)
    } else {
        None
    };
    let notifier = notify::Notifier::from_env(|name| std::env::var_os(name));
    if control.is_none() && metrics.is_none() && notifier.is_none() {
        return Ok(None);
    }
    Ok(Some(Claimed {
        control,
        metrics,
        notifier,
    }))
}

/// Serves the control socket and the metrics on the current runtime, tells systemd, and
/// observes the loop's events.
pub fn serve(
    claimed: Claimed,
    options: &ClusterOptions,
    inputs: InputSender,
    events: EventQueue,
    output: OutputLog,
) -> RcResult<()> {
    let (claim, control) = claimed.control.unzip();
    let shared = Arc::new(Shared {
        name: options.operations.name.clone(),
        script: options.child.exec.display().to_string(),
        started_at: SystemTime::now(),
        started: Instant::now(),
        inputs,
        events: events.clone(),
        output,
        next_ticket: AtomicU64::new(FIRST_TICKET),
        waiting: Mutex::new(HashMap::new()),
        addresses: Mutex::new(BTreeMap::new()),
        claim: Mutex::new(claim),
        stopped: watch::channel(false).0,
        counts: metrics::Counts::default(),
        notifier: claimed.notifier,
    });
    let observer = shared.clone();
    events.observe(Arc::new(move |event| observer.observe(event)));
    if let Some(listener) = control {
        control::spawn(listener, shared.clone())?;
    }
    if let Some(listener) = claimed.metrics {
        metrics::spawn(listener, shared.clone())?;
    }
    if let Some(interval) = shared
        .notifier
        .as_ref()
        .and_then(notify::Notifier::watchdog)
    {
        tokio::spawn(notify::watchdog(shared, interval));
    }
    Ok(())
}

impl Shared {
    /// Called by the loop for every event, before JavaScript sees it: it must not wait.
    fn observe(&self, event: &Event) {
        self.counts.observe(event);
        if let Some(notifier) = &self.notifier {
            notifier.observe(event);
        }
        match event {
            Event::Listening { id, address } => {
                // What a worker says it listens on: bounded per worker, forgotten at its exit.
                let mut addresses = lock(&self.addresses);
                let own = addresses.entry(*id).or_default();
                let text = describe_address(address);
                if own.len() < MAX_ADDRESSES_PER_WORKER && text.len() <= MAX_ADDRESS {
                    own.insert(text);
                }
            }
            Event::Exit { id, .. } => {
                lock(&self.addresses).remove(id);
            }
            Event::Reloaded {
                tickets,
                error,
                details,
            } => self.settle(tickets, error, || details.clone()),
            Event::Scaled {
                tickets,
                workers,
                error,
            } => self.settle(tickets, error, || serde_json::json!({ "workers": workers })),
            Event::Stopped => {
                // The socket goes and the name is free before JavaScript hears of the stop: a
                // process that exits right after leaves nothing behind.
                lock(&self.claim).take();
                // Whatever still waits will never settle now.
                for (_, answer) in lock(&self.waiting).drain() {
                    let _ = answer.send(Err(not_running()));
                }
                self.stopped.send_replace(true);
            }
            _ => {}
        }
    }

    fn settle(
        &self,
        tickets: &[u64],
        error: &Option<(&'static str, String)>,
        result: impl Fn() -> Value,
    ) {
        let mut waiting = lock(&self.waiting);
        for ticket in tickets {
            if let Some(answer) = waiting.remove(ticket) {
                let outcome = match error {
                    Some((code, message)) => Err(RcError::new(code, message.clone())),
                    None => Ok(result()),
                };
                let _ = answer.send(outcome);
            }
        }
    }

    /// Sends a command that settles with a ticket, and waits for its outcome.
    async fn ask(&self, command: impl FnOnce(u64) -> Command) -> Outcome {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(ticket, tx);
        if let Err(error) = self.send(command(ticket)) {
            lock(&self.waiting).remove(&ticket);
            return Err(error);
        }
        rx.await.unwrap_or_else(|_| Err(not_running()))
    }

    /// What the cluster looks like now, as the loop sees it.
    async fn snapshot(&self) -> RcResult<Snapshot> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Snapshot(tx))?;
        match tokio::time::timeout(SNAPSHOT_WAIT, rx).await {
            Ok(Ok(snapshot)) => Ok(snapshot),
            Ok(Err(_)) => Err(not_running()),
            Err(_) => Err(RcError::new(
                crate::errors::NOT_RUNNING,
                format!("the primary's loop did not answer within {SNAPSHOT_WAIT:?}"),
            )),
        }
    }

    fn send(&self, command: Command) -> RcResult<()> {
        self.inputs
            .send(Input::Command(command))
            .map_err(|_| not_running())
    }
}

fn not_running() -> RcError {
    RcError::new(crate::errors::NOT_RUNNING, "the cluster's loop has ended")
}

/// `{ addressType, address, port }` as a worker reported it, as a person reads it: `*:3000`,
/// `127.0.0.1:8080`, `[::1]:80`, `unix:/run/app.sock`, `udp *:53`.
fn describe_address(info: &Value) -> String {
    let port = info.get("port").map_or_else(String::new, |p| match p {
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    });
    let kind = info.get("addressType");
    let address = info.get("address").and_then(Value::as_str);
    if kind == Some(&Value::from(-1)) {
        return format!("unix:{}", address.unwrap_or(""));
    }
    let host = match address {
        None => "*".to_string(),
        Some(a) if a.contains(':') => format!("[{a}]"),
        Some(a) => a.to_string(),
    };
    let udp = matches!(kind.and_then(Value::as_str), Some("udp4" | "udp6"));
    format!("{}{host}:{port}", if udp { "udp " } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn addresses_read_as_a_person_writes_them() {
        let cases = [
            (
                json!({"addressType": 4, "address": null, "port": 3000}),
                "*:3000",
            ),
            (
                json!({"addressType": 4, "address": "127.0.0.1", "port": 80}),
                "127.0.0.1:80",
            ),
            (
                json!({"addressType": 6, "address": "::1", "port": 80}),
                "[::1]:80",
            ),
            (
                json!({"addressType": -1, "address": "/run/a.sock"}),
                "unix:/run/a.sock",
            ),
            (
                json!({"addressType": "udp4", "address": "0.0.0.0", "port": 53}),
                "udp 0.0.0.0:53",
            ),
        ];
        for (info, text) in cases {
            assert_eq!(describe_address(&info), text);
        }
    }
}
