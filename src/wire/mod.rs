//! The wire formats, pure: bytes in, values out, with no I/O and no descriptors of their own.
//! `node_ipc` is Node's child-process IPC (JSON lines, or V8-serialized messages behind a length;
//! docs/node-ipc.md), `v8_wire` the part of V8's serialization format that Node's own messages
//! use, `frames` rcluster's messenger frames (docs/messenger-frames.md). Their decoders must
//! survive any bytes a child sends: each is property-tested against arbitrary input. They import
//! nothing of the crate but each other.

pub mod frames;
pub mod node_ipc;
#[cfg(test)]
mod test_inputs;
pub mod v8_wire;
