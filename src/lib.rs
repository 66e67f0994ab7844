//! rcluster's native core: a Node.js cluster primary in Rust, loaded into Node as an addon.
//! `binding` (the primary) and `child` (a child's messenger channel) are all that JavaScript sees;
//! `primary` supervises children; `channel` is the wire.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod binding;
pub mod channel;
mod child;
pub mod errors;
mod js_error;
pub mod os;
pub mod primary;
pub mod wire;
