//! The primary: starts and supervises children, owns the listening sockets, speaks Node's cluster
//! protocol. `supervisor` is the control loop; the other modules are its parts. It imports
//! `errors`, `os`, `wire` and `channel`, never `binding`, `child` or `js_error`: the napi class
//! in `binding` drives it.

pub mod child_command;
pub mod events;
mod guard;
mod housekeeping;
pub mod listeners;
mod messenger;
pub mod options;
mod orphans;
mod reload;
pub mod restart;
pub mod round_robin;
pub mod router;
mod scale;
mod stderr_tail;
pub mod supervisor;
mod watchdog;
mod worker_protocol;

/// A child's id: Node's `worker.id`, unique for the life of the primary process.
pub type WorkerId = u32;
