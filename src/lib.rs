//! rcluster's native core: a Node.js cluster primary in Rust, loaded into Node as an addon.
//!
//! Its modules are layers, and a layer imports only the layers below it, never one above or
//! beside it, so that there are no import circles. From the bottom up: `errors` (the error codes
//! users see) and `os` (operating-system primitives: descriptor passing, sealed memory files,
//! pidfd processes, the spawner, listening sockets) import nothing of the crate; `wire` (the wire
//! formats, pure: bytes in, values out) imports nothing of the crate either, nor does `remote`
//! (the link to the other hosts of a namespace, through Redis); `channel` (the tasks
//! serving one child's channels) imports `os` and `wire`; `primary` (the supervisor and its
//! parts) imports `errors`, `os`, `wire`, `channel` and `remote`; `operate` (the operator's side: the
//! control socket) imports `primary` and what it imports; `js_error` (how an error reaches
//! JavaScript) imports `errors`. On top, the two native classes that JavaScript sees: `binding`
//! (the primary) may import anything, and `child` (a child's messenger channel) anything but
//! `primary` and `binding`.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod binding;
pub mod channel;
mod child;
pub mod errors;
mod js_error;
pub mod operate;
pub mod os;
pub mod primary;
pub mod remote;
pub mod wire;
