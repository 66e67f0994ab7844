//! Claims on the consumes that cross hosts: the host that is to run one first sets its claim
//! (`SET NX`), and runs it only if the claim is its own; the host that asked, once the other has
//! died (or cannot be told apart from dead), sets the same claim to "cancel". Whoever is first
//! wins, so a consume never starts after its caller gave up on it, and the caller knows whether
//! it may have run (`err.ran`). Each call is a task of its own; the outcome comes back to the
//! caller as `RemoteEvent::Claim`.

use std::sync::Arc;
use std::time::Duration;

use super::host::Shared;
use super::redis_transport::Connection;
use super::types::{ClaimKind, RemoteEvent};

/// How long a claim lives while its call runs: past it, a caller whose host died would be told
/// the call never ran. Calls that run longer are not expected of a consume.
pub(crate) const RUNNING_TTL: Duration = Duration::from_secs(3600);

/// How long a claim stays once its call is answered: long enough for a caller that missed the
/// answer (and saw the host die) to find it, short enough that claims do not pile up.
fn answered_ttl(shared: &Shared) -> Duration {
    shared.config.host_timeout * 4 + Duration::from_secs(10)
}

pub(crate) enum ClaimOp {
    /// This host is about to run `call`.
    Claim,
    /// This host asked for `call`, and gives up on it.
    Cancel,
    /// This host ran `call` and answered.
    Answered,
}

/// One connection for the claims, made when first needed and again after a failure.
async fn connection(shared: &Shared) -> Result<Connection, String> {
    let mut link = shared.claims.lock().await;
    if let Some(connection) = &*link {
        return Ok(connection.clone());
    }
    let connection = shared.transport.connect().await?;
    *link = Some(connection.clone());
    Ok(connection)
}

pub(crate) async fn run(shared: Arc<Shared>, call: String, op: ClaimOp) {
    let outcome = async {
        let mut connection = connection(&shared).await?;
        let transport = &shared.transport;
        match op {
            ClaimOp::Claim => {
                let me = shared.state().me.member();
                transport
                    .claim(&mut connection, &call, &me, RUNNING_TTL)
                    .await
            }
            ClaimOp::Cancel => {
                transport
                    .claim(&mut connection, &call, "cancel", RUNNING_TTL)
                    .await
            }
            ClaimOp::Answered => transport
                .expire_claim(&mut connection, &call, answered_ttl(&shared))
                .await
                .map(|()| true),
        }
    }
    .await;
    if outcome.is_err() {
        // It may be dead: the next call makes a new one.
        *shared.claims.lock().await = None;
    }
    let kind = match op {
        ClaimOp::Claim => ClaimKind::Run,
        ClaimOp::Cancel => ClaimKind::Cancel,
        // Nobody waits on it: a claim not shortened expires with RUNNING_TTL.
        ClaimOp::Answered => return,
    };
    let _ = shared.events.send(RemoteEvent::Claim {
        call,
        kind,
        outcome,
    });
}
