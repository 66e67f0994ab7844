//! What the supervision tells the operator when a worker or the cluster fails: the sentences a
//! person reads, and the details a program reads (`warning.details`, `error.details`). Kept apart
//! so that src/primary/supervision.rs reads as the decisions alone.

use serde_json::{json, Value};

use super::child_command::WorkerKind;
use super::options::{ClusterOptions, Readiness};
use super::restart::RestartHistory;
use super::WorkerId;
use crate::os::process::ExitStatus;

/// A report: its message and its details.
pub type Report = (String, Value);

/// A worker was not ready `readyTimeout` after it started.
pub fn not_ready(options: &ClusterOptions, id: WorkerId, pid: u32, kind: WorkerKind) -> Report {
    let what = match options.readiness {
        _ if kind == WorkerKind::Agent => "the agent never reported ready (readiness 'started': its main module never finished loading; 'message': it never called rcluster.ready())",
        Readiness::Listening => "it never listened on a port (readiness: 'listening'; use 'online' for workers that do not serve)",
        Readiness::Online => "it never came online",
        Readiness::Message => "it never sent 'ready' (readiness: 'message')",
    };
    let message = format!(
        "worker {id} (pid {pid}) of {} was not ready {} ms after it started: {what}",
        options.child.script_name(),
        options.ready_timeout.as_millis()
    );
    let details =
        json!({ "id": id, "pid": pid, "readyTimeout": options.ready_timeout.as_millis() as u64 });
    (message, details)
}

/// A worker that had been ready exited, and a replacement is starting.
pub fn worker_crashed(
    options: &ClusterOptions,
    (id, pid): (WorkerId, u32),
    status: ExitStatus,
    slot: usize,
    restarts: u64,
) -> Report {
    let message = format!(
        "worker {id} (pid {pid}) of {} exited with {} after it was ready; a replacement is starting (restart {restarts} of slot {slot})",
        options.child.script_name(),
        status.describe_long(),
    );
    let details = json!({
        "slot": slot,
        "pid": pid,
        "exitCode": status.code,
        "signal": status.signal.map(|s| s.as_str()),
        "restarts": restarts,
    });
    (message, details)
}

/// A slot's boot failures spent the restart budget.
pub fn budget_spent(options: &ClusterOptions, slot: usize, history: &RestartHistory) -> Report {
    let exits = history.recent_exits();
    let window = options.restart.window.as_secs_f64();
    let message = format!(
        "{} keeps exiting: worker slot {slot} exited {} times within {window} s (last exit codes, oldest first: {}); \
         not restarting it again (restart budget: {} restarts per {window} s)",
        options.child.script_name(),
        history.exits_in_window(),
        exits.join(", "),
        options.restart.max_restarts,
    );
    let codes: Vec<Value> = exits
        .iter()
        .map(|e| e.parse::<i64>().map_or(json!(e), |n| json!(n)))
        .collect();
    let details = json!({
        "script": options.child.exec.display().to_string(),
        "slot": slot,
        "exitCodes": codes,
        "maxRestarts": options.restart.max_restarts,
        "restartWindow": options.restart.window.as_millis() as u64,
    });
    (message, details)
}

/// The agent died before it was ready; `stderr`: its last lines.
pub fn agent_failed(
    options: &ClusterOptions,
    (id, pid): (WorkerId, u32),
    status: ExitStatus,
    stderr: Vec<String>,
) -> Report {
    let script = options
        .agent
        .as_ref()
        .map_or_else(String::new, |a| a.child.script_name());
    let mut message = format!(
        "the agent {script} (worker {id}, pid {pid}) exited with {} before it was ready",
        status.describe_long(),
    );
    if !stderr.is_empty() {
        message.push_str("; its last lines of stderr:\n");
        message.push_str(&stderr.join("\n"));
    }
    let details = json!({
        "script": script,
        "exitCode": status.code,
        "signal": status.signal.map(|s| s.as_str()),
        "stderr": stderr,
    });
    (message, details)
}
