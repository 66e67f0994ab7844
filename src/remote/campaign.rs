//! The campaign for the agent lease (`agent: { scope: 'cluster' }`). A candidate tries to take the
//! lease every second, and at once when its holder gives it up (a `released` notice on the
//! control channel); the leader renews it every third of the lease, and tells its caller to stop
//! the agent before the lease can expire (the timing is src/remote/lease.rs). It runs on a Redis
//! connection of its own, apart from the host's sessions: a leave does not end it, a release
//! does, and a membership that comes and goes does not move the lease.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::host::{op_timeout, Shared};
use super::ids::random_id;
use super::lease::{parse_holder, Holder, LeaseTiming, Step, Tenure, CANDIDATE_RETRY};
use super::redis_transport::{Acquired, Connection};
use super::types::LeaseEvent;

pub(crate) enum LeaseCommand {
    /// Stop campaigning; if this host holds the lease, delete it (if it is still ours) and tell
    /// the others. Answered when done.
    Release(oneshot::Sender<()>),
}

/// How a tenure ended.
enum Ended {
    /// The lease was lost (taken, expired, or not renewed in time): campaign again.
    Lost,
    /// Given up on request, or the handle is gone: the campaign is over.
    Over,
}

/// A Redis connection made when first needed, and again after a failure.
#[derive(Default)]
struct Link {
    connection: Option<Connection>,
}

impl Link {
    /// Runs `call` on the connection (made first if need be), the whole bounded by `limit`.
    async fn run<T, F, Fut>(
        &mut self,
        shared: &Shared,
        limit: Duration,
        call: F,
    ) -> Result<T, String>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let attempt = async {
            let connection = match &self.connection {
                Some(connection) => connection.clone(),
                None => {
                    let connection = shared.transport.connect().await?;
                    self.connection = Some(connection.clone());
                    connection
                }
            };
            call(connection).await
        };
        let result = match tokio::time::timeout(limit, attempt).await {
            Ok(result) => result,
            Err(_) => Err(format!("redis did not answer within {limit:?}")),
        };
        if result.is_err() {
            // It may be dead: the next call makes a new one.
            self.connection = None;
        }
        result
    }
}

/// The campaign, until it is released (or its handle dropped).
pub(crate) async fn run(
    shared: Arc<Shared>,
    timing: LeaseTiming,
    events: mpsc::UnboundedSender<LeaseEvent>,
    mut commands: mpsc::UnboundedReceiver<LeaseCommand>,
) {
    let host = shared.config.host_id.clone();
    // The token tells this campaign's lease from one of this host id's earlier life.
    let holder = format!("{host} {:016x}", random_id());
    let call_limit = op_timeout(&shared.config).min(CANDIDATE_RETRY);
    let mut link = Link::default();
    loop {
        let sent = Instant::now();
        let attempt = link
            .run(&shared, call_limit, |mut connection| {
                let transport = &shared.transport;
                let (holder, host) = (&holder, &host);
                async move {
                    transport
                        .acquire_agent(&mut connection, holder, host, timing.lease, call_limit)
                        .await
                }
            })
            .await;
        match attempt {
            Ok(Acquired::Won {
                value,
                epoch,
                fresh,
            }) => {
                let answered = Instant::now();
                shared.state().agent_led(Holder {
                    epoch,
                    host: host.clone(),
                });
                let tenure =
                    Tenure::new(epoch, timing, sent.into_std(), answered.into_std(), fresh);
                let leader = Leader {
                    shared: &shared,
                    timing,
                    host: &host,
                    value,
                    events: &events,
                };
                match leader.lead(tenure, &mut link, &mut commands).await {
                    Ended::Lost => continue,
                    Ended::Over => return,
                }
            }
            Ok(Acquired::Held(value)) => shared.state().agent = parse_holder(&value),
            // Redis cannot be reached: nothing to do but try again (the host's session says
            // Redis is unavailable; this host never starts the agent meanwhile).
            Err(_) => {}
        }
        tokio::select! {
            biased;
            command = commands.recv() => match command {
                Some(LeaseCommand::Release(done)) => {
                    let _ = done.send(());
                    return;
                }
                None => return,
            },
            () = shared.lease_released.notified() => {}
            () = tokio::time::sleep(CANDIDATE_RETRY) => {}
        }
    }
}

/// This host while it holds the lease.
struct Leader<'a> {
    shared: &'a Shared,
    timing: LeaseTiming,
    host: &'a str,
    /// The lease's value in Redis: what renewals and the release compare with.
    value: String,
    events: &'a mpsc::UnboundedSender<LeaseEvent>,
}

impl Leader<'_> {
    async fn lead(
        &self,
        mut tenure: Tenure,
        link: &mut Link,
        commands: &mut mpsc::UnboundedReceiver<LeaseCommand>,
    ) -> Ended {
        let mut last_error = String::new();
        loop {
            let now = Instant::now();
            match tenure.due(now.into_std()) {
                Step::Fence => {
                    let reason = format!(
                        "no renewal of the lease succeeded for {} ms ({})",
                        self.timing.fence_after().as_millis(),
                        if last_error.is_empty() {
                            "renewals were late"
                        } else {
                            &last_error
                        }
                    );
                    self.lose(&tenure, reason);
                    return Ended::Lost;
                }
                Step::Start => {
                    tenure.start();
                    let _ = self.events.send(LeaseEvent::Won {
                        epoch: tenure.epoch,
                    });
                }
                Step::Renew => {
                    let sent = Instant::now();
                    let limit = tenure
                        .time_left(sent.into_std())
                        .min(op_timeout(&self.shared.config));
                    let value = &self.value;
                    let lease = self.timing.lease;
                    let renewal = link
                        .run(self.shared, limit, |mut connection| async move {
                            self.shared
                                .transport
                                .renew_agent(&mut connection, value, lease, limit)
                                .await
                        })
                        .await;
                    match renewal {
                        Ok(None) => tenure.renewed(sent.into_std()),
                        Ok(Some(other)) => {
                            let holder = parse_holder(&other);
                            let reason = match &holder {
                                Some(holder) => format!(
                                    "the lease is held by host '{}' (epoch {})",
                                    holder.host, holder.epoch
                                ),
                                None => "the lease expired in Redis, or Redis lost it".into(),
                            };
                            self.lose(&tenure, reason);
                            self.shared.state().agent = holder;
                            return Ended::Lost;
                        }
                        Err(error) => {
                            last_error = error;
                            tenure.renewal_failed(Instant::now().into_std());
                        }
                    }
                }
                Step::Wait(until) => {
                    tokio::select! {
                        biased;
                        command = commands.recv() => {
                            if let Some(LeaseCommand::Release(done)) = command {
                                self.release(&tenure, link).await;
                                let _ = done.send(());
                            }
                            return Ended::Over;
                        }
                        () = tokio::time::sleep_until(until.into()) => {}
                    }
                }
            }
        }
    }

    /// The agent must stop now (if it was started).
    fn lose(&self, tenure: &Tenure, reason: String) {
        self.shared.state().agent_gone(tenure.epoch);
        if tenure.is_started() {
            let _ = self.events.send(LeaseEvent::Lost {
                epoch: tenure.epoch,
                reason,
            });
        }
    }

    /// Deletes the lease if it is still ours, and tells the others; a failure leaves it to
    /// expire.
    async fn release(&self, tenure: &Tenure, link: &mut Link) {
        let limit = op_timeout(&self.shared.config);
        let (value, host, epoch) = (&self.value, self.host, tenure.epoch);
        let _ = link
            .run(self.shared, limit, |mut connection| async move {
                self.shared
                    .transport
                    .release_agent(&mut connection, value, host, epoch)
                    .await
            })
            .await;
        self.shared.state().agent_gone(epoch);
    }
}
