//! Wire formats.
pub mod frames;
pub mod node_ipc;
pub mod v8_wire;
