//! The wire: Node's IPC channel (JSON lines or V8 frames, with descriptors), the task that
//! serves one child's channel, and rcluster's own messenger frames.

pub mod connection;
pub mod fd_socket;
pub mod frame_link;
pub mod frames;
pub mod node_ipc;
pub mod v8_wire;
