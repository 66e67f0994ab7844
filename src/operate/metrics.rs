//! Prometheus metrics (option `metrics: 'HOST:PORT'`): `GET /metrics` answers the text format
//! 0.0.4, built from a snapshot the loop hands out and from /proc, never from the primary's
//! JavaScript, so it answers while that is busy.
//!
//! The HTTP side is a small HTTP/1.0-style responder: one path, GET and HEAD, no request body,
//! one request per connection. It is bounded like the control socket: a request head of at most
//! `MAX_HEAD` bytes, read within `READ_TIMEOUT`, and `MAX_CONNECTIONS` connections at once.
//! The text is written here too: the format is a handful of rules (HELP and label escaping,
//! the number forms), tested below.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{lock, Shared};
use crate::errors::{self, RcError, RcResult};
use crate::os::proc_stat;
use crate::primary::events::Event;
use crate::primary::snapshot::Snapshot;

/// The longest request head (request line and headers) read; a longer one is refused.
const MAX_HEAD: usize = 8 << 10;
/// A connection that has not sent its request head by then is closed.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that does not take the answer by then is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 16;
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds the metrics address before the cluster starts: an address in use fails the start.
/// `[::]` (every interface) falls back to `0.0.0.0` where IPv6 is off.
pub fn bind(addr: SocketAddr) -> RcResult<StdTcpListener> {
    let result = StdTcpListener::bind(addr).or_else(|e| {
        let no_ipv6 = addr.ip().is_unspecified()
            && addr.is_ipv6()
            && e.kind() != std::io::ErrorKind::AddrInUse;
        if no_ipv6 {
            StdTcpListener::bind((Ipv4Addr::UNSPECIFIED, addr.port()))
        } else {
            Err(e)
        }
    });
    let listener = result.map_err(|e| {
        RcError::new(
            errors::METRICS_UNAVAILABLE,
            format!("cannot serve metrics on {addr} (option `metrics`): {e}"),
        )
    })?;
    listener.set_nonblocking(true).map_err(|e| {
        RcError::new(
            errors::METRICS_UNAVAILABLE,
            format!("cannot serve metrics on {addr}: {e}"),
        )
    })?;
    Ok(listener)
}

pub(super) fn spawn(listener: StdTcpListener, shared: Arc<Shared>) -> RcResult<()> {
    let listener = TcpListener::from_std(listener).map_err(|e| {
        RcError::new(
            errors::METRICS_UNAVAILABLE,
            format!("cannot serve metrics: {e}"),
        )
    })?;
    tokio::spawn(accept(listener, shared));
    Ok(())
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    let open = Arc::new(AtomicUsize::new(0));
    let mut stopped = shared.stopped.subscribe();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = super::control::until_stopped(&mut stopped) => return,
        };
        if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let shared = shared.clone();
        let open = open.clone();
        tokio::spawn(async move {
            serve_connection(stream, &shared).await;
            open.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics { head_only: bool },
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Reads the head up to its blank line; None if the client went or was too slow, Err if the
/// head is too large.
async fn read_head(stream: &mut TcpStream) -> Option<Result<Vec<u8>, ()>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = find_end(&head) {
            head.truncate(end);
            return Some(Ok(head));
        }
        if head.len() > MAX_HEAD {
            return Some(Err(()));
        }
    }
}

fn find_end(head: &[u8]) -> Option<usize> {
    let crlf = head.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = head.windows(2).position(|w| w == b"\n\n");
    crlf.into_iter().chain(lf).min()
}

fn route(head: &[u8]) -> Route {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split(['?', '#']).next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics { head_only: false },
        ("HEAD", "/metrics") => Route::Metrics { head_only: true },
        (_, "/metrics") => Route::MethodNotAllowed,
        _ => Route::NotFound,
    }
}

async fn serve_connection(mut stream: TcpStream, shared: &Shared) {
    let answer = match read_head(&mut stream).await {
        None => return,
        Some(Err(())) => response(431, "Request Header Fields Too Large", "", false),
        Some(Ok(head)) => match route(&head) {
            Route::Metrics { head_only } => match shared.snapshot().await {
                Ok(snapshot) => response(200, "OK", &render(shared, &snapshot), head_only),
                Err(e) => response(503, "Service Unavailable", &e.message, head_only),
            },
            Route::NotFound => response(404, "Not Found", "only /metrics is served\n", false),
            Route::MethodNotAllowed => response(405, "Method Not Allowed", "GET or HEAD\n", false),
            Route::BadRequest => response(400, "Bad Request", "", false),
        },
    };
    let write = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, write).await;
}

fn response(status: u16, reason: &str, body: &str, head_only: bool) -> String {
    let allow = if status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut text = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        if status == 200 { CONTENT_TYPE } else { "text/plain; charset=utf-8" },
        body.len()
    );
    if !head_only {
        text.push_str(body);
    }
    text
}

/// What the metrics count from the loop's events, since the cluster started.
#[derive(Default)]
pub struct Counts {
    inner: Mutex<Reloads>,
}

#[derive(Default)]
struct Reloads {
    /// Since when a rolling reload runs.
    started: Option<Instant>,
    done: u64,
    aborted: u64,
    seconds: f64,
}

impl Counts {
    /// Called by the loop for every event: it must not wait.
    pub fn observe(&self, event: &Event) {
        match event {
            Event::ReloadStarted { .. } => lock(&self.inner).started = Some(Instant::now()),
            Event::Reloaded { error, .. } if event.ends_a_reload() => {
                let mut reloads = lock(&self.inner);
                if let Some(started) = reloads.started.take() {
                    reloads.seconds += started.elapsed().as_secs_f64();
                    if error.is_some() {
                        reloads.aborted += 1;
                    } else {
                        reloads.done += 1;
                    }
                }
            }
            _ => {}
        }
    }
}

/// The text format 0.0.4, one family at a time; every sample gets the cluster's name.
struct Text {
    out: String,
    cluster: String,
}

#[derive(Clone, Copy)]
enum Type {
    Gauge,
    Counter,
    Summary,
}

impl Text {
    fn family(&mut self, name: &str, kind: Type, help: &str) {
        let kind = match kind {
            Type::Gauge => "gauge",
            Type::Counter => "counter",
            Type::Summary => "summary",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let _ = write!(self.out, "{name}{{cluster=\"{}\"", escape(&self.cluster));
        for (key, value) in labels {
            let _ = write!(self.out, ",{key}=\"{}\"", escape(value));
        }
        let _ = writeln!(self.out, "}} {}", number(value));
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        // Rust writes no exponent and the shortest digits that read back the same.
        format!("{value}")
    }
}

const STATES: [&str; 4] = ["starting", "ready", "disconnecting", "leaving"];

fn render(shared: &Shared, snapshot: &Snapshot) -> String {
    let mut t = Text {
        out: String::with_capacity(4096),
        cluster: shared.name.clone(),
    };
    t.family(
        "rcluster_up",
        Type::Gauge,
        "1 while the cluster's primary answers.",
    );
    t.sample("rcluster_up", &[], 1.0);
    t.family(
        "rcluster_start_time_seconds",
        Type::Gauge,
        "When the cluster started, in seconds since the Unix epoch.",
    );
    let start = shared
        .started_at
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    t.sample("rcluster_start_time_seconds", &[], start);

    t.family(
        "rcluster_workers",
        Type::Gauge,
        "Workers by kind and state (starting, ready, disconnecting, leaving).",
    );
    let mut by_state: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for state in STATES {
        by_state.insert(("app", state), 0);
    }
    for w in &snapshot.workers {
        *by_state.entry((w.kind.as_str(), w.state)).or_default() += 1;
    }
    for ((kind, state), n) in by_state {
        t.sample(
            "rcluster_workers",
            &[("kind", kind), ("state", state)],
            n as f64,
        );
    }
    t.family(
        "rcluster_workers_target",
        Type::Gauge,
        "App workers the cluster keeps running.",
    );
    t.sample(
        "rcluster_workers_target",
        &[],
        snapshot.target_workers as f64,
    );

    t.family(
        "rcluster_worker_restarts_total",
        Type::Counter,
        "Restarts of each worker slot since the cluster started.",
    );
    for (slot, kind, restarts) in &snapshot.slots {
        t.sample(
            "rcluster_worker_restarts_total",
            &[("slot", &slot.to_string()), ("kind", kind.as_str())],
            *restarts as f64,
        );
    }

    // Each worker's labels: id, pid, kind, and its NODE_APP_INSTANCE (app workers).
    let labels: Vec<Vec<(&str, String)>> = snapshot
        .workers
        .iter()
        .map(|w| {
            let mut pairs = vec![
                ("id", w.id.to_string()),
                ("pid", w.pid.to_string()),
                ("kind", w.kind.as_str().to_string()),
            ];
            if let Some(instance) = w.instance {
                pairs.push(("instance", instance.to_string()));
            }
            pairs
        })
        .collect();
    let per_worker = |t: &mut Text, name: &str, value: &dyn Fn(usize) -> Option<f64>| {
        for (i, pairs) in labels.iter().enumerate() {
            if let Some(v) = value(i) {
                let borrowed: Vec<(&str, &str)> =
                    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
                t.sample(name, &borrowed, v);
            }
        }
    };
    let workers = &snapshot.workers;
    t.family(
        "rcluster_worker_resident_memory_bytes",
        Type::Gauge,
        "Resident memory of each worker process.",
    );
    per_worker(&mut t, "rcluster_worker_resident_memory_bytes", &|i| {
        proc_stat::resident_bytes(workers[i].pid).map(|b| b as f64)
    });
    t.family(
        "rcluster_worker_cpu_seconds_total",
        Type::Counter,
        "CPU time (user and system) each worker process has used.",
    );
    per_worker(&mut t, "rcluster_worker_cpu_seconds_total", &|i| {
        proc_stat::cpu_time(workers[i].pid).map(|d| d.as_secs_f64())
    });
    t.family(
        "rcluster_worker_event_loop_delay_seconds",
        Type::Gauge,
        "How late each worker's last heartbeat timer fired: its event loop's delay.",
    );
    per_worker(&mut t, "rcluster_worker_event_loop_delay_seconds", &|i| {
        workers[i].loop_delay.map(|d| d.as_secs_f64())
    });

    t.family(
        "rcluster_messenger_messages_total",
        Type::Counter,
        "Messages, requests and replies the messenger routed.",
    );
    t.sample(
        "rcluster_messenger_messages_total",
        &[],
        snapshot.messages as f64,
    );

    if let Some(hosts) = &snapshot.hosts {
        t.family(
            "rcluster_hosts",
            Type::Gauge,
            "Hosts of the namespace this host sees, itself included (option redis).",
        );
        t.sample("rcluster_hosts", &[], (hosts.others.len() + 1) as f64);
        t.family(
            "rcluster_messenger_lost_total",
            Type::Counter,
            "Messages of other hosts that never reached this host, as reported here.",
        );
        t.sample("rcluster_messenger_lost_total", &[], hosts.lost as f64);
    }

    let reloads = lock(&shared.counts.inner);
    t.family(
        "rcluster_reloads_total",
        Type::Counter,
        "Rolling reloads that ended, by outcome (done or aborted).",
    );
    t.sample(
        "rcluster_reloads_total",
        &[("outcome", "done")],
        reloads.done as f64,
    );
    t.sample(
        "rcluster_reloads_total",
        &[("outcome", "aborted")],
        reloads.aborted as f64,
    );
    t.family(
        "rcluster_reload_duration_seconds",
        Type::Summary,
        "How long rolling reloads took, done or aborted.",
    );
    t.sample("rcluster_reload_duration_seconds_sum", &[], reloads.seconds);
    t.sample(
        "rcluster_reload_duration_seconds_count",
        &[],
        (reloads.done + reloads.aborted) as f64,
    );
    t.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_method_and_path() {
        let cases: [(&[u8], Route); 7] = [
            (
                b"GET /metrics HTTP/1.1\r\nHost: x",
                Route::Metrics { head_only: false },
            ),
            (
                b"GET /metrics?x=1 HTTP/1.0",
                Route::Metrics { head_only: false },
            ),
            (
                b"HEAD /metrics HTTP/1.1",
                Route::Metrics { head_only: true },
            ),
            (b"POST /metrics HTTP/1.1", Route::MethodNotAllowed),
            (b"GET / HTTP/1.1", Route::NotFound),
            (b"GET /metrics", Route::BadRequest),
            (b"GET /metrics SPDY/3", Route::BadRequest),
        ];
        for (head, want) in cases {
            assert_eq!(route(head), want, "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn finds_the_end_of_a_head() {
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(20));
        assert_eq!(find_end(b"GET / HTTP/1.0\n\n"), Some(14));
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }

    #[test]
    fn escapes_and_writes_numbers_as_the_format_says() {
        let mut t = Text {
            out: String::new(),
            cluster: "a\"b\\c\nd".into(),
        };
        t.family("x_total", Type::Counter, "line\\one\ntwo");
        t.sample("x_total", &[("k", "v")], 3.0);
        t.sample("x_total", &[], 0.25);
        assert_eq!(
            t.out,
            "# HELP x_total line\\\\one\\ntwo\n# TYPE x_total counter\n\
             x_total{cluster=\"a\\\"b\\\\c\\nd\",k=\"v\"} 3\n\
             x_total{cluster=\"a\\\"b\\\\c\\nd\"} 0.25\n"
        );
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(1e-7), "0.0000001");
        assert_eq!(number(1234567890123.0), "1234567890123");
    }

    #[test]
    fn a_taken_port_fails_with_a_clear_message() {
        let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let taken = first.local_addr().unwrap();
        let e = bind(taken).unwrap_err();
        assert_eq!(e.code, errors::METRICS_UNAVAILABLE);
        assert!(e.message.contains(&taken.to_string()), "{}", e.message);
    }

    #[test]
    fn counts_reloads_that_began() {
        let counts = Counts::default();
        // A replacement ends like a reload, but none began.
        counts.observe(&Event::Reloaded {
            tickets: vec![],
            error: None,
            details: serde_json::json!({ "workers": 1, "replacedWorker": 3 }),
        });
        counts.observe(&Event::ReloadStarted {
            trigger: "t".into(),
            workers: 2,
        });
        // A replace() refused while the reload runs does not end it.
        counts.observe(&Event::Reloaded {
            tickets: vec![],
            error: Some(("E", "refused".into())),
            details: serde_json::json!({}),
        });
        counts.observe(&Event::Reloaded {
            tickets: vec![],
            error: Some(("E", "m".into())),
            details: serde_json::json!({ "replaced": 1, "workers": 2 }),
        });
        let r = lock(&counts.inner);
        assert_eq!((r.done, r.aborted), (0, 1));
    }
}
