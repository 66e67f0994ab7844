//! The primary: starts and supervises children, owns the listening sockets, speaks Node's cluster
//! protocol, routes the messenger.
//!
//! Its layers, each using only those below it:
//! - the loop: `supervisor` (one task, one queue: handle, settle, flush), and `linger`, which
//!   keeps its I/O thread awake while frames come close together;
//! - the supervised cluster's policy: `supervision`, using `readiness`, `reload`, `scale`,
//!   `watchdog`, `restart`, `slots`, `housekeeping`, `orphans`, `reports`;
//! - what both primaries share: `cluster` (the loop's state), `worker_protocol` (Node's
//!   cluster messages), `messenger` (with `router` and `requests`), `listeners` (with
//!   `round_robin`, and `inherited`: systemd's sockets), `launcher` (with `child_command`,
//!   and `child_output` with `foreground` for what children print);
//! - the vocabulary: `inputs`, `events`, `timers`, `workers`, `options`.
//!
//! `Supervisor` is the loop, whichever the plan; `Supervision` is the policy only a supervised
//! cluster (`rcluster.start()`) has. The Node-compatible primary (`require('rcluster/cluster')`,
//! `Plan::Manual`) runs the same loop without it: its JavaScript forks, nothing is restarted.
//!
//! It imports `errors`, `os`, `wire` and `channel`, never `binding`, `child` or `js_error`: the
//! napi class in `binding` drives it.

pub mod child_command;
pub mod child_output;
mod cluster;
pub mod events;
mod foreground;
mod guard;
mod housekeeping;
pub mod inherited;
pub mod inputs;
pub mod launcher;
mod linger;
pub mod listeners;
mod messenger;
pub mod options;
mod orphans;
pub mod output;
mod readiness;
mod reload;
mod reports;
mod requests;
pub mod restart;
pub mod round_robin;
pub mod router;
mod scale;
#[cfg(test)]
mod scenarios;
mod slots;
pub mod snapshot;
mod supervision;
pub mod supervisor;
mod timers;
mod watchdog;
mod worker_protocol;
pub mod workers;

/// A child's id: Node's `worker.id`, unique for the life of the primary process.
pub type WorkerId = u32;
