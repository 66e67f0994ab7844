//! The wire: Node's IPC channel (JSON lines or V8 frames, with descriptors) and the task that
//! serves one child's channel.

pub mod connection;
pub mod fd_socket;
pub mod node_ipc;
pub mod v8_wire;
