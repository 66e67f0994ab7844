//! The tasks serving one child's channels in the primary: `connection` owns its Node IPC channel
//! and its pidfd (messages, descriptors and the exit, in order), `frame_link` its messenger
//! channel (frames in, bounded queue out, large payloads as sealed memory files). They speak the
//! formats of `wire` over the primitives of `os`, and import nothing else of the crate: what the
//! frames and messages mean is the primary's business.

pub mod connection;
pub mod frame_link;
