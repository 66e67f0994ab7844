//! What the remote transport tells its caller, and how its calls fail.

use std::fmt;

/// One incarnation of a host: the host id is chosen by the operator and stays the same across
/// restarts; the incarnation is new each time the host (re)joins, so that the others can tell a
/// restarted host from the one they knew.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostInfo {
    pub host: String,
    pub incarnation: u64,
}

impl HostInfo {
    /// The name under which this incarnation is a member of the namespace: `<host>/<incarnation hex>`.
    pub fn member(&self) -> String {
        format!("{}/{:016x}", self.host, self.incarnation)
    }

    /// The inverse of `member`. The host id may itself hold a `/`, so the split is at the last one.
    pub fn from_member(member: &str) -> Option<HostInfo> {
        let (host, incarnation) = member.rsplit_once('/')?;
        if host.is_empty() {
            return None;
        }
        let incarnation = u64::from_str_radix(incarnation, 16).ok()?;
        Some(HostInfo {
            host: host.to_owned(),
            incarnation,
        })
    }
}

impl fmt::Display for HostInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.member())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// It said goodbye (a graceful leave).
    Left,
    /// Its heartbeats stopped for longer than the host timeout.
    TimedOut,
    /// The same host id came back with another incarnation: the one we knew is gone.
    NewIncarnation,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteEvent {
    /// This host joined (again, after `Unavailable`, with a new incarnation); `hosts` are the
    /// other members now.
    Joined {
        me: HostInfo,
        hosts: Vec<HostInfo>,
    },
    HostJoined(HostInfo),
    HostLeft {
        host: HostInfo,
        reason: LeaveReason,
    },
    /// Redis cannot be reached (or lost this host's membership); `broadcast` and `send` fail
    /// until the next `Joined`.
    Unavailable {
        reason: String,
    },
    Broadcast {
        from: HostInfo,
        bytes: Vec<u8>,
    },
    Inbox {
        from: HostInfo,
        bytes: Vec<u8>,
    },
    /// `count` broadcasts of host `from` will never arrive here (trimmed from the stream, or lost
    /// by Redis).
    Lost {
        from: String,
        count: u64,
    },
    /// A `send` found nobody listening on the host's inbox, or could not be published.
    NotDelivered {
        host: String,
        bytes: Vec<u8>,
        reason: String,
    },
    /// A queued `broadcast` could not be written to Redis.
    Failed {
        bytes: Vec<u8>,
        reason: String,
    },
    /// A claim on a consume that crosses hosts (src/remote/claims.rs) was tried: `Ok(true)` if
    /// this host set it, `Ok(false)` if the other side had, `Err` if Redis did not say.
    Claim {
        call: String,
        kind: ClaimKind,
        outcome: Result<bool, String>,
    },
    /// An entry or inbox message that does not decode was skipped.
    Malformed {
        from: Option<String>,
        why: String,
    },
}

/// Who tried a claim: the host about to run the call, or the one that asked for it and gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    Run,
    Cancel,
}

/// What the campaign for the agent lease tells its caller (`Remote::campaign`). On a channel of
/// its own: a caller that spans hosts without a cluster agent never sees one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    /// This host holds the lease: start the agent, with this epoch (its fencing token; larger
    /// than every epoch before it in the namespace).
    Won { epoch: u64 },
    /// Stop the agent now (SIGTERM, SIGKILL after the kill timeout): the lease of `epoch` is
    /// lost, or would expire before another renewal could save it.
    Lost { epoch: u64, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteError {
    Unavailable(String),
    TooLarge { limit: usize },
    QueueFull,
    UnknownHost(String),
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteError::Unavailable(reason) => write!(f, "remote transport unavailable: {reason}"),
            RemoteError::TooLarge { limit } => {
                write!(f, "message larger than the limit of {limit} bytes")
            }
            RemoteError::QueueFull => f.write_str("outgoing queue full"),
            RemoteError::UnknownHost(host) => write!(f, "host {host:?} is not a member"),
        }
    }
}

impl std::error::Error for RemoteError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_name_parses_back() {
        let info = HostInfo {
            host: "web/1".into(),
            incarnation: 0xdead_beef,
        };
        assert_eq!(info.member(), "web/1/00000000deadbeef");
        assert_eq!(HostInfo::from_member(&info.member()), Some(info));
    }

    #[test]
    fn a_bad_member_name_is_refused() {
        assert_eq!(HostInfo::from_member("nohex"), None);
        assert_eq!(HostInfo::from_member("/12"), None);
        assert_eq!(HostInfo::from_member("a/xyz"), None);
    }
}
