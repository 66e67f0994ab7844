//! The remote transport: connects this primary ("host") to the other hosts of its namespace
//! through Redis. Membership with heartbeats and timeouts, a broadcast stream whose losses are
//! counted per sender, and one inbox per host. See docs/remote-transport.md for the keys,
//! channels and formats.
//!
//! Its files: `types` (what the caller sees), `config` (settings and their checks), `keys`,
//! `envelope`, `packing`, `membership`, `sequences` and `lease` (pure logic), `scripts` and
//! `redis_transport` (everything Redis-specific), `host` (the tasks), `campaign` (the agent
//! lease's task), `ids`; this file is the caller's handle.

mod campaign;
mod claims;
mod config;
mod envelope;
mod host;
mod ids;
mod keys;
pub mod lease;
mod membership;
mod packing;
mod redis_transport;
mod scripts;
mod sequences;
mod types;

#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod redis_tests;
#[cfg(test)]
mod test_server;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use config::RemoteConfig;
pub use host::NOBODY_LISTENS;
pub use lease::{LeaseTiming, CANDIDATE_RETRY};
pub use types::{ClaimKind, HostInfo, LeaseEvent, LeaveReason, RemoteError, RemoteEvent};

use campaign::LeaseCommand;
use host::{Outgoing, Shared};
use redis_transport::RedisTransport;

/// A handle on the transport of this host; clones share it. Dropping the last clone stops the
/// tasks without a leave (the others see this host time out).
#[derive(Clone)]
pub struct Remote {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// The campaign for the agent lease, once started.
    campaign: Mutex<Option<Campaign>>,
}

struct Campaign {
    commands: mpsc::UnboundedSender<LeaseCommand>,
    task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
        if let Some(campaign) = self
            .campaign
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            campaign.task.abort();
        }
    }
}

impl Remote {
    /// Validates the configuration (the URL included), then spawns the tasks on the current
    /// tokio runtime; events go to `events`. The first event is `Joined` once Redis answered (or
    /// `Unavailable` if it does not within the host timeout).
    pub fn start(
        config: RemoteConfig,
        events: mpsc::UnboundedSender<RemoteEvent>,
    ) -> Result<Remote, String> {
        let connection_info = config.check()?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "remote: start must be called inside a tokio runtime".to_string())?;
        let op_timeout = host::op_timeout(&config);
        let transport = RedisTransport::new(
            connection_info,
            &config.namespace,
            op_timeout,
            config.heartbeat.max(Duration::from_millis(100)),
        )?;
        let shared = Arc::new(Shared::new(config, transport, events));
        let (outgoing, queue) = mpsc::unbounded_channel();
        let task = runtime.spawn(host::run(shared.clone(), queue));
        Ok(Remote {
            inner: Arc::new(Inner {
                shared,
                outgoing,
                task: Mutex::new(Some(task)),
                campaign: Mutex::new(None),
            }),
        })
    }

    /// Campaigns for the namespace's agent lease (`agent: { scope: 'cluster' }`): `Won` when this
    /// host may start the agent, `Lost` when it must stop it (src/remote/lease.rs says when). The
    /// campaign outlives `leave` and `abort`, since a leader must keep its lease until its agent
    /// has stopped: it ends with `release_agent_lease` (or when the last handle is dropped). A
    /// second call is refused.
    pub fn campaign(
        &self,
        timing: LeaseTiming,
        events: mpsc::UnboundedSender<LeaseEvent>,
    ) -> Result<(), String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "remote: campaign must be called inside a tokio runtime".to_string())?;
        let mut campaign = self
            .inner
            .campaign
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if campaign.is_some() {
            return Err("remote: this host campaigns for the agent lease already".into());
        }
        let (commands, received) = mpsc::unbounded_channel();
        let task = runtime.spawn(campaign::run(
            self.inner.shared.clone(),
            timing,
            events,
            received,
        ));
        *campaign = Some(Campaign { commands, task });
        Ok(())
    }

    /// Ends the campaign. If this host holds the agent lease, deletes it (if it is still this
    /// host's) and tells the others, who try to take it at once: call it only once the agent has
    /// stopped. Returns when done; a Redis that does not answer leaves the lease to expire.
    pub async fn release_agent_lease(&self) {
        let campaign = self
            .inner
            .campaign
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(Campaign { commands, task }) = campaign else {
            return;
        };
        let (done, released) = oneshot::channel();
        if commands.send(LeaseCommand::Release(done)).is_ok() {
            // A renewal in flight finishes first: each call is bounded by the operation timeout.
            let wait = host::op_timeout(&self.inner.shared.config) * 3;
            if tokio::time::timeout(wait, released).await.is_err() {
                task.abort();
            }
        }
    }

    /// The host that holds the agent lease, as this host last saw it (each attempt to take it,
    /// each renewal, and the others' notices tell); None while it is free, or unknown. For
    /// routing what is sent to a cluster agent.
    pub fn agent_host(&self) -> Option<String> {
        self.agent_leader().map(|(host, _)| host)
    }

    /// `agent_host` with the lease's epoch.
    pub fn agent_leader(&self) -> Option<(String, u64)> {
        self.inner
            .shared
            .state()
            .agent
            .as_ref()
            .map(|holder| (holder.host.clone(), holder.epoch))
    }

    fn check_size(&self, bytes: &[u8]) -> Result<(), RemoteError> {
        let limit = self.inner.shared.config.max_message;
        if bytes.len() > limit {
            return Err(RemoteError::TooLarge { limit });
        }
        Ok(())
    }

    fn enqueue(&self, size: usize, message: Outgoing) -> Result<(), RemoteError> {
        let shared = &self.inner.shared;
        let queued = shared.queued_bytes.fetch_add(size, Ordering::AcqRel);
        if queued + size > shared.config.max_queued {
            shared.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            return Err(RemoteError::QueueFull);
        }
        if self.inner.outgoing.send(message).is_err() {
            shared.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            return Err(RemoteError::Unavailable("stopped".into()));
        }
        Ok(())
    }

    /// Queues a broadcast to every other host. Once queued it is written in order, or comes back
    /// as `Failed`. With no other member as this host last saw them, there is nobody to write it
    /// for: a host that joins gets what is sent once this one has seen it join (at its next
    /// heartbeat), and counts from there, so nothing is lost to it.
    pub fn broadcast(&self, bytes: Vec<u8>) -> Result<(), RemoteError> {
        self.check_size(&bytes)?;
        {
            let state = self.inner.shared.state();
            if let Some(reason) = &state.unavailable {
                return Err(RemoteError::Unavailable(reason.clone()));
            }
            if state.membership.is_alone() {
                return Ok(());
            }
        }
        self.enqueue(bytes.len(), Outgoing::Broadcast(bytes))
    }

    /// Joined, with no other member as this host last saw them: a broadcast has nobody to go to.
    pub fn alone(&self) -> bool {
        let state = self.inner.shared.state();
        state.unavailable.is_none() && state.membership.is_alone()
    }

    /// Queues a message for one host's inbox; if nobody listens there it comes back as
    /// `NotDelivered`.
    pub fn send(&self, host: &str, bytes: Vec<u8>) -> Result<(), RemoteError> {
        self.check_size(&bytes)?;
        {
            let state = self.inner.shared.state();
            if let Some(reason) = &state.unavailable {
                return Err(RemoteError::Unavailable(reason.clone()));
            }
            if !state.membership.has_host(host) {
                return Err(RemoteError::UnknownHost(host.to_owned()));
            }
        }
        let size = bytes.len();
        self.enqueue(
            size,
            Outgoing::Direct {
                host: host.to_owned(),
                bytes,
            },
        )
    }

    /// Claims `call` for this host, which is about to run it; the outcome comes back as
    /// `RemoteEvent::Claim` (src/remote/claims.rs).
    pub fn claim(&self, call: String) {
        self.claim_op(call, claims::ClaimOp::Claim);
    }

    /// Gives up on `call`, which this host asked another to run: claimed as "cancel" unless the
    /// other claimed it first; the outcome comes back as `RemoteEvent::Claim`.
    pub fn cancel_claim(&self, call: String) {
        self.claim_op(call, claims::ClaimOp::Cancel);
    }

    /// `call`, claimed by this host, is answered: its claim need not live much longer.
    pub fn claim_answered(&self, call: String) {
        self.claim_op(call, claims::ClaimOp::Answered);
    }

    fn claim_op(&self, call: String, op: claims::ClaimOp) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(claims::run(self.inner.shared.clone(), call, op));
        }
    }

    /// The other members now, as this host last saw them.
    pub fn hosts(&self) -> Vec<HostInfo> {
        self.inner.shared.state().membership.members()
    }

    /// The largest broadcast or inbox message, in bytes (`RemoteError::TooLarge` past it).
    pub fn max_message(&self) -> usize {
        self.inner.shared.config.max_message
    }

    /// This host; its incarnation is 0 until it first joined.
    pub fn me(&self) -> HostInfo {
        self.inner.shared.state().me.clone()
    }

    /// Leaves gracefully: sends what is queued (waiting at most the host timeout), removes this
    /// host from the members and tells the others, then stops the tasks.
    pub async fn leave(&self) {
        let wait = self
            .inner
            .shared
            .config
            .host_timeout
            .max(Duration::from_secs(1));
        // Nothing queued after the leave could be sent.
        self.inner.shared.state().unavailable = Some("leaving".into());
        let (done, left) = oneshot::channel();
        if self.inner.outgoing.send(Outgoing::Leave(done)).is_ok() {
            let _ = tokio::time::timeout(wait, left).await;
        }
        self.abort();
    }

    /// Stops the tasks at once, without a leave: the others see this host time out. What is
    /// still queued is dropped.
    pub fn abort(&self) {
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.abort();
        }
        let mut state = self.inner.shared.state();
        if state.unavailable.is_none() {
            state.unavailable = Some("stopped".into());
        }
    }
}
