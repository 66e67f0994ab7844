//! Why a frame did not go to another host, as its sender is told.

use crate::errors;
use crate::primary::router::Undeliverable;
use crate::remote::RemoteError;

/// Why a frame did not go to `whom`, as its sender is told.
pub fn not_sent(error: RemoteError, action: &str, whom: &str) -> Undeliverable {
    match error {
        RemoteError::Unavailable(why) => Undeliverable {
            code: errors::REMOTE_UNAVAILABLE,
            message: format!(
                "{}; '{action}' was not sent to {whom}",
                match why.as_str() {
                    "leaving" | "stopped" => "this host is stopping".to_owned(),
                    "not joined yet" => "this host has not joined its namespace yet".to_owned(),
                    _ => format!("Redis cannot be reached ({why})"),
                }
            ),
        },
        RemoteError::TooLarge { limit } => Undeliverable {
            code: errors::MESSAGE_TOO_LARGE,
            message: format!(
                "messages between hosts are at most {limit} bytes; '{action}' was not sent to {whom}"
            ),
        },
        RemoteError::QueueFull => Undeliverable {
            code: errors::QUEUE_FULL,
            message: format!(
                "this host's queue for other hosts is full; '{action}' was not sent to {whom}"
            ),
        },
        RemoteError::UnknownHost(host) => Undeliverable {
            code: errors::UNKNOWN_TARGET,
            message: format!("no host '{host}' in the namespace"),
        },
    }
}
