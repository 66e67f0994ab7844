//! The wire: Node's IPC channel (JSON lines or V8 frames, with descriptors), the task that
//! serves one child's channel, rcluster's own messenger frames, and the sealed memory files that
//! carry their large payloads.

pub mod connection;
pub mod frame_link;
