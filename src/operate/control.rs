//! The control socket's server (docs/control-protocol.md): one task accepts, one task per
//! connection reads requests and answers them in order. Everything is bounded: the connections,
//! a request's length, the time a silent connection is kept.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast;

use super::protocol::{self, Request, MAX_REQUEST};
use super::Shared;
use crate::errors::{self, RcError, RcResult};
use crate::os::proc_stat;
use crate::primary::inputs::{Command, ReloadRequest};
use crate::primary::output::LogLine;
use crate::primary::snapshot::{Snapshot, WorkerSnapshot};

/// Connections served at once; a local client that opens more is refused, not queued.
const MAX_CONNECTIONS: usize = 64;
/// A connection that sends no request for this long is closed.
const IDLE: Duration = Duration::from_secs(60);
/// How long a client may leave an answer unread.
const WRITE_WAIT: Duration = Duration::from_secs(30);
/// How long `status` watches each process to measure its CPU use.
const CPU_SAMPLE: Duration = Duration::from_millis(200);

pub(super) fn spawn(
    listener: std::os::unix::net::UnixListener,
    shared: Arc<Shared>,
) -> RcResult<()> {
    let cannot = |e: std::io::Error| {
        RcError::new(
            errors::CONTROL_UNSAFE,
            format!("cannot serve the control socket: {e}"),
        )
    };
    listener.set_nonblocking(true).map_err(cannot)?;
    let listener = UnixListener::from_std(listener).map_err(cannot)?;
    tokio::spawn(accept(listener, shared));
    Ok(())
}

async fn accept(listener: UnixListener, shared: Arc<Shared>) {
    let open = Arc::new(AtomicUsize::new(0));
    let mut stopped = shared.stopped.subscribe();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors, say: the next accept may work.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = until_stopped(&mut stopped) => return,
        };
        if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::AcqRel);
            let refusal = RcError::new(
                errors::CONTROL_BUSY,
                format!(
                    "the cluster serves {MAX_CONNECTIONS} control connections at once; try again"
                ),
            );
            tokio::spawn(refuse(stream, refusal));
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

pub(super) async fn until_stopped(stopped: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, not held across the caller's awaits.
    let _ = stopped.wait_for(|s| *s).await;
}

async fn refuse(mut stream: UnixStream, error: RcError) {
    let line = protocol::error(&Value::Null, &error);
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(line.as_bytes())).await;
    linger(stream).await;
}

/// Closes our side, then reads (and drops) what the client still sends, for a second at most:
/// closing with unread bytes would reset the connection, and the client would lose the answer.
async fn linger(mut stream: impl tokio::io::AsyncRead + AsyncWrite + Unpin) {
    use tokio::io::AsyncReadExt;
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async {
        let mut left = 1 << 20;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left -= n.min(left),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

async fn serve_connection(stream: UnixStream, shared: &Shared) {
    let me = nix::unistd::geteuid().as_raw();
    match stream.peer_cred() {
        Ok(peer) if peer.uid() == me => {}
        peer => {
            let (uid, pid) = peer.map_or((None, None), |p| (Some(p.uid()), p.pid()));
            let message = format!(
                "refused a control request from uid {} (pid {}): only uid {me} may control cluster '{}'",
                uid.map_or("unknown".into(), |u| u.to_string()),
                pid.map_or("unknown".into(), |p| p.to_string()),
                shared.name
            );
            shared.events.push(crate::primary::events::Event::Warning {
                code: errors::CONTROL_FORBIDDEN,
                message: message.clone(),
                id: None,
                details: json!({ "uid": uid, "pid": pid }),
            });
            return refuse(stream, RcError::new(errors::CONTROL_FORBIDDEN, message)).await;
        }
    }
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut stopped = shared.stopped.subscribe();
    loop {
        let line = tokio::select! {
            line = tokio::time::timeout(IDLE, read_line(&mut read)) => line,
            () = until_stopped(&mut stopped) => return,
        };
        let line = match line {
            Err(_) | Ok(Ok(None)) => return,
            Ok(Err(too_large)) => {
                let _ = write
                    .write_all(protocol::error(&Value::Null, &too_large).as_bytes())
                    .await;
                if let Ok(stream) = read.into_inner().reunite(write) {
                    linger(stream).await;
                }
                return;
            }
            Ok(Ok(Some(line))) => line,
        };
        let (id, request) = protocol::parse(&line);
        let answered = match request {
            Err(error) => send(&mut write, protocol::error(&id, &error)).await,
            Ok(Request::Logs { lines, follow }) => {
                logs(&mut write, shared, &id, lines, follow).await
            }
            Ok(Request::Stop { timeout }) => {
                let answer = shared
                    .send(Command::Stop {
                        timeout,
                        trigger: "rcluster stop".into(),
                    })
                    .map(|()| json!({ "stopping": true }));
                let _ = send(&mut write, answer_line(&id, answer)).await;
                // The client waits for the connection to close: the cluster has stopped.
                until_stopped(&mut stopped).await;
                return;
            }
            Ok(request) => {
                let answer = answer(shared, request).await;
                send(&mut write, answer_line(&id, answer)).await
            }
        };
        if !answered {
            return;
        }
    }
}

fn answer_line(id: &Value, answer: RcResult<Value>) -> String {
    match answer {
        Ok(result) => protocol::ok(id, result),
        Err(error) => protocol::error(id, &error),
    }
}

/// Writes one line; false if the client is gone or has not read for `WRITE_WAIT` (a client that
/// stops reading must not hold its connection, one of `MAX_CONNECTIONS`, for good).
async fn send(write: &mut (impl AsyncWrite + Unpin), line: String) -> bool {
    matches!(
        tokio::time::timeout(WRITE_WAIT, write.write_all(line.as_bytes())).await,
        Ok(Ok(()))
    )
}

/// The next line without its newline; None at the end; an error past `MAX_REQUEST` bytes, before
/// more of it is read.
async fn read_line(read: &mut (impl AsyncBufRead + Unpin)) -> Result<Option<Vec<u8>>, RcError> {
    let mut line = Vec::new();
    loop {
        let buf = match read.fill_buf().await {
            Ok(buf) => buf,
            Err(_) => return Ok(None),
        };
        if buf.is_empty() {
            return Ok((!line.is_empty()).then_some(line));
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(end) => (end, true),
            None => (buf.len(), false),
        };
        line.extend_from_slice(&buf[..take]);
        read.consume(take + usize::from(done));
        if line.len() > MAX_REQUEST {
            return Err(RcError::new(
                errors::CONTROL_REQUEST_TOO_LARGE,
                format!("a request line is at most {MAX_REQUEST} bytes"),
            ));
        }
        if done {
            return Ok(Some(line));
        }
    }
}

async fn answer(shared: &Shared, request: Request) -> RcResult<Value> {
    match request {
        Request::Info => {
            let snapshot = shared.snapshot().await?;
            Ok(info(shared, &snapshot))
        }
        Request::Status => {
            let snapshot = shared.snapshot().await?;
            // `workers` becomes the list; the count the cluster keeps stays as `target`.
            let mut status = info(shared, &snapshot);
            status["target"] = status["workers"].take();
            status["workers"] = Value::Array(workers(&snapshot.workers).await);
            Ok(status)
        }
        Request::Reload { parallel } => {
            let details = shared
                .ask(|ticket| {
                    Command::Reload(ReloadRequest {
                        ticket: Some(ticket),
                        parallel,
                        agent: None,
                        trigger: "rcluster reload".into(),
                    })
                })
                .await?;
            Ok(json!({ "replaced": details["replaced"], "duration": details["duration"] }))
        }
        Request::Scale { workers } => {
            shared
                .ask(|ticket| Command::Scale { workers, ticket })
                .await
        }
        Request::Restart { id } => {
            let details = shared.ask(|ticket| Command::Replace { ticket, id }).await?;
            Ok(json!({
                "id": details["newWorkers"].get(0),
                "replaced": details["replacedWorker"],
                "duration": details["duration"],
            }))
        }
        // Answered by the connection itself.
        Request::Logs { .. } | Request::Stop { .. } => Ok(Value::Null),
    }
}

pub(super) fn millis_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn info(shared: &Shared, snapshot: &Snapshot) -> Value {
    json!({
        "name": shared.name,
        "pid": std::process::id(),
        "version": env!("CARGO_PKG_VERSION"),
        "state": snapshot.state.as_str(),
        "startedAt": millis_since_epoch(shared.started_at),
        "uptime": shared.started.elapsed().as_millis() as u64,
        "workers": snapshot.target_workers,
        "addresses": super::lock(&shared.addresses)
            .values()
            .flatten()
            .collect::<BTreeSet<_>>(),
        "script": shared.script,
        "hosts": snapshot.hosts.as_ref().map(|h| json!({
            "me": h.me,
            "others": h.others.iter().map(|(host, incarnation)| json!({
                "host": host,
                "incarnation": format!("{incarnation:016x}"),
            })).collect::<Vec<_>>(),
            "lost": h.lost,
            "agent": h.agent.as_ref().map(|(host, epoch)| json!({ "host": host, "epoch": epoch })),
        })),
    })
}

/// Each worker with its memory and its CPU use over `CPU_SAMPLE`, all measured at once.
async fn workers(list: &[WorkerSnapshot]) -> Vec<Value> {
    let before: Vec<_> = list.iter().map(|w| proc_stat::cpu_time(w.pid)).collect();
    let start = std::time::Instant::now();
    tokio::time::sleep(CPU_SAMPLE).await;
    let elapsed = start.elapsed().as_secs_f64();
    list.iter()
        .zip(before)
        .map(|(w, before)| {
            let cpu = before.zip(proc_stat::cpu_time(w.pid)).map(|(b, a)| {
                (a.saturating_sub(b).as_secs_f64() / elapsed * 1000.0).round() / 10.0
            });
            json!({
                "id": w.id,
                "pid": w.pid,
                "kind": w.kind.as_str(),
                "slot": w.slot,
                "instance": w.instance,
                "state": w.state,
                "restarts": w.restarts,
                "startedAt": millis_since_epoch(w.started_at),
                "uptime": w.uptime.as_millis() as u64,
                "memory": proc_stat::resident_bytes(w.pid),
                "cpu": cpu,
                "loopDelay": w.loop_delay.map(|d| d.as_secs_f64() * 1000.0),
            })
        })
        .collect()
}

fn log_entry(line: &LogLine) -> Value {
    json!({
        "id": line.id,
        "kind": line.kind.as_str(),
        "stream": line.stream.as_str(),
        "time": millis_since_epoch(line.time),
        "text": &*line.text,
    })
}

/// The recent lines, then (following) every new one until the client or the cluster goes.
/// Returns whether the connection can take another request.
async fn logs(
    write: &mut (impl AsyncWrite + Unpin),
    shared: &Shared,
    id: &Value,
    lines: usize,
    follow: bool,
) -> bool {
    let (recent, mut feed) = shared.output.follow(lines);
    for line in &recent {
        if !send(write, protocol::log(id, log_entry(line))).await {
            return false;
        }
    }
    if !follow {
        let end = protocol::ok(id, json!({ "lines": recent.len() }));
        return send(write, end).await;
    }
    let mut stopped = shared.stopped.subscribe();
    loop {
        let next = tokio::select! {
            next = feed.recv() => next,
            () = until_stopped(&mut stopped) => return false,
        };
        let line = match next {
            Ok(line) => protocol::log(id, log_entry(&line)),
            Err(broadcast::error::RecvError::Lagged(missed)) => protocol::skipped(id, missed),
            Err(broadcast::error::RecvError::Closed) => return false,
        };
        if !send(write, line).await {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_lines_and_refuses_one_too_long() {
        let text = format!(
            "{{\"command\":\"info\"}}\nsecond\n{}\n",
            "x".repeat(MAX_REQUEST + 1)
        );
        let mut read = BufReader::with_capacity(1024, text.as_bytes());
        assert_eq!(
            read_line(&mut read).await.map_err(|e| e.code),
            Ok(Some(b"{\"command\":\"info\"}".to_vec()))
        );
        assert_eq!(
            read_line(&mut read).await.map_err(|e| e.code),
            Ok(Some(b"second".to_vec()))
        );
        assert_eq!(
            read_line(&mut read).await.map_err(|e| e.code),
            Err(errors::CONTROL_REQUEST_TOO_LARGE)
        );
        let mut last = BufReader::new(&b"no newline"[..]);
        assert_eq!(
            read_line(&mut last).await.map_err(|e| e.code),
            Ok(Some(b"no newline".to_vec()))
        );
        assert_eq!(read_line(&mut last).await.map_err(|e| e.code), Ok(None));
    }
}
