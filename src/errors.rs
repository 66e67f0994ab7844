//! Errors that reach users. Each carries a stable `code` that JavaScript sees as `err.code`.

use std::fmt;

pub const INVALID_OPTION: &str = "ERR_RCLUSTER_INVALID_OPTION";
pub const EXEC_NOT_FOUND: &str = "ERR_RCLUSTER_EXEC_NOT_FOUND";
pub const EXEC_UNREADABLE: &str = "ERR_RCLUSTER_EXEC_UNREADABLE";
pub const SPAWN_FAILED: &str = "ERR_RCLUSTER_SPAWN_FAILED";
pub const UNKNOWN_WORKER: &str = "ERR_RCLUSTER_UNKNOWN_WORKER";
pub const NOT_RUNNING: &str = "ERR_RCLUSTER_NOT_RUNNING";
pub const RESTART_BUDGET: &str = "ERR_RCLUSTER_RESTART_BUDGET";
pub const READY_TIMEOUT: &str = "ERR_RCLUSTER_READY_TIMEOUT";
pub const PROTOCOL: &str = "ERR_RCLUSTER_PROTOCOL";
pub const MESSAGE_TOO_LARGE: &str = "ERR_RCLUSTER_MESSAGE_TOO_LARGE";
pub const UNKNOWN_TARGET: &str = "ERR_RCLUSTER_UNKNOWN_TARGET";
pub const NO_HANDLER: &str = "ERR_RCLUSTER_NO_HANDLER";
/// A receiver's queue is full: it has not read what was sent to it.
pub const QUEUE_FULL: &str = "ERR_RCLUSTER_QUEUE_FULL";
/// The process running a request died before it answered.
pub const WORKER_DIED: &str = "ERR_RCLUSTER_WORKER_DIED";
/// The agent died before it was ready, so the cluster could not start.
pub const AGENT_FAILED: &str = "ERR_RCLUSTER_AGENT_FAILED";
/// A rolling reload stopped before it replaced every worker; the rest keep serving.
pub const RELOAD_ABORTED: &str = "ERR_RCLUSTER_RELOAD_ABORTED";
/// A child's event loop sent no heartbeat within the heartbeat timeout.
pub const UNRESPONSIVE: &str = "ERR_RCLUSTER_UNRESPONSIVE";
/// A worker's resident memory passed `maxMemory`.
pub const MEMORY_LIMIT: &str = "ERR_RCLUSTER_MEMORY_LIMIT";
/// A worker threw an exception nobody caught; it is replaced gracefully.
pub const UNCAUGHT_EXCEPTION: &str = "ERR_RCLUSTER_UNCAUGHT_EXCEPTION";
/// A worker's `queryServer` was refused: a descriptor the operator did not give the cluster, or
/// more listening sockets than a worker, the cluster or the primary's descriptors allow.
pub const LISTEN_REFUSED: &str = "ERR_RCLUSTER_LISTEN_REFUSED";
/// A worker that had been ready exited unexpectedly; it is replaced (with a delay if it keeps
/// doing so), however often.
pub const WORKER_CRASHED: &str = "ERR_RCLUSTER_WORKER_CRASHED";
/// A serving worker closed its Node channel itself (`process.disconnect()`,
/// `cluster.worker.disconnect()`): it is replaced at once and let go.
pub const WORKER_DISCONNECTED: &str = "ERR_RCLUSTER_WORKER_DISCONNECTED";
/// Another running cluster of this user holds the name (its control socket's lock).
pub const NAME_IN_USE: &str = "ERR_RCLUSTER_NAME_IN_USE";
/// The control folder is not this user's alone (another owner, or access for others).
pub const CONTROL_UNSAFE: &str = "ERR_RCLUSTER_CONTROL_UNSAFE";
/// A control request from a process of another user.
pub const CONTROL_FORBIDDEN: &str = "ERR_RCLUSTER_CONTROL_FORBIDDEN";
/// A control request that is not JSON, has no known command or bad arguments.
pub const CONTROL_BAD_REQUEST: &str = "ERR_RCLUSTER_CONTROL_BAD_REQUEST";
/// A control request line longer than the limit; the connection is closed.
pub const CONTROL_REQUEST_TOO_LARGE: &str = "ERR_RCLUSTER_CONTROL_REQUEST_TOO_LARGE";
/// More control connections at once than the primary serves.
pub const CONTROL_BUSY: &str = "ERR_RCLUSTER_CONTROL_BUSY";
/// The metrics address cannot be served (in use, say): the cluster does not start.
pub const METRICS_UNAVAILABLE: &str = "ERR_RCLUSTER_METRICS_UNAVAILABLE";
/// A worker asked to listen on an address that a socket systemd passed (`LISTEN_FDS`) serves,
/// under the reuseport schedule: it gets the shared inherited socket instead.
pub const LISTEN_INHERITED: &str = "ERR_RCLUSTER_LISTEN_INHERITED";
/// Redis cannot be reached (or this host is cut off from it): what crosses hosts fails at once;
/// what stays on this host goes on.
pub const REMOTE_UNAVAILABLE: &str = "ERR_RCLUSTER_REMOTE_UNAVAILABLE";
/// Messages of another host that this host will never see (a Redis restart, a trimmed stream),
/// reported with their count.
/// A host died with a call of this one (option `redis`); `ran` says whether it may have run.
pub const HOST_DIED: &str = "ERR_RCLUSTER_HOST_DIED";
pub const MESSAGES_LOST: &str = "ERR_RCLUSTER_MESSAGES_LOST";
/// Node's own code for an unknown signal name, kept so `worker.kill('SIGFOO')` fails as under Node.
pub const UNKNOWN_SIGNAL: &str = "ERR_UNKNOWN_SIGNAL";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcError {
    pub code: &'static str,
    pub message: String,
}

impl RcError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        RcError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_option(name: &str, expected: &str, got: &serde_json::Value) -> Self {
        RcError::new(
            INVALID_OPTION,
            format!("option `{name}` must be {expected}, got {}", describe(got)),
        )
    }
}

/// A short rendering of a JSON value for error messages (never the whole of a large value).
pub fn describe(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if text.len() > 60 {
        let cut = (0..=60)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        format!("{}...", &text[..cut])
    } else {
        text
    }
}

impl fmt::Display for RcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for RcError {}

pub type RcResult<T> = Result<T, RcError>;
