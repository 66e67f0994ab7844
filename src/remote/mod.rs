//! The remote transport: connects this primary ("host") to the other hosts of its namespace
//! through Redis. This part holds its pure logic; the Redis side and the tasks follow.
// The pure parts are used by the transport, which is not here yet.
#![allow(dead_code)]

mod config;
mod envelope;
mod ids;
mod keys;
mod membership;
mod sequences;
mod types;

pub use config::RemoteConfig;
pub use types::{HostInfo, LeaveReason, RemoteError, RemoteEvent};
