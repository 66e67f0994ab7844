//! The tasks of one host. A session is one incarnation's membership: it joins, then runs a
//! heartbeat (here), a sender, a stream reader and an inbox reader until Redis fails for longer
//! than the host timeout, loses its data, or the host leaves; then the next session rejoins with
//! a new incarnation.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::MissedTickBehavior;

use super::config::RemoteConfig;
use super::envelope;
use super::ids::random_id;
use super::lease::Holder;
use super::membership::{Change, Membership};
use super::packing;
use super::redis_transport::{
    Connection, ControlNotice, Incoming, MemberRecord, MembershipReply, MembershipStatus,
    RedisTransport,
};
use super::sequences::{SequenceTracker, Verdict};
use super::types::{HostInfo, LeaveReason, RemoteEvent};

/// Why a `NotDelivered` message surely reached nobody (every other reason leaves a doubt).
pub const NOBODY_LISTENS: &str = "no host listens on that inbox";

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

pub(crate) enum Outgoing {
    Broadcast(Vec<u8>),
    Direct {
        host: String,
        bytes: Vec<u8>,
    },
    /// Leave once everything queued before is sent; answer when done.
    Leave(oneshot::Sender<()>),
}

pub(crate) struct State {
    pub me: HostInfo,
    pub membership: Membership,
    pub tracker: SequenceTracker,
    /// Why `broadcast` and `send` fail now; `None` while joined.
    pub unavailable: Option<String>,
    /// Who holds the agent lease, as last seen (src/remote/campaign.rs).
    pub agent: Option<Holder>,
}

impl State {
    /// News of the agent lease: a holder of a lower epoch than the one known is old news.
    pub fn agent_led(&mut self, holder: Holder) {
        if self
            .agent
            .as_ref()
            .is_none_or(|known| known.epoch <= holder.epoch)
        {
            self.agent = Some(holder);
        }
    }

    /// The lease of `epoch` is over (released, lost or expired).
    pub fn agent_gone(&mut self, epoch: u64) {
        if self
            .agent
            .as_ref()
            .is_some_and(|known| known.epoch <= epoch)
        {
            self.agent = None;
        }
    }
}

pub(crate) struct Shared {
    pub config: RemoteConfig,
    pub transport: RedisTransport,
    pub events: mpsc::UnboundedSender<RemoteEvent>,
    pub state: Mutex<State>,
    /// Bytes of the messages queued and not yet handled by the sender.
    pub queued_bytes: AtomicUsize,
    /// Woken when a holder gives the agent lease up: candidates try at once.
    pub lease_released: tokio::sync::Notify,
    /// The connection of the consume claims (src/remote/claims.rs), once made.
    pub claims: tokio::sync::Mutex<Option<Connection>>,
}

impl Shared {
    pub fn new(
        config: RemoteConfig,
        transport: RedisTransport,
        events: mpsc::UnboundedSender<RemoteEvent>,
    ) -> Shared {
        let me = HostInfo {
            host: config.host_id.clone(),
            incarnation: 0,
        };
        Shared {
            config,
            transport,
            events,
            state: Mutex::new(State {
                me,
                membership: Membership::default(),
                tracker: SequenceTracker::default(),
                unavailable: Some("not joined yet".into()),
                agent: None,
            }),
            queued_bytes: AtomicUsize::new(0),
            lease_released: tokio::sync::Notify::new(),
            claims: tokio::sync::Mutex::new(None),
        }
    }

    /// A panic elsewhere must not silence the transport: the state stays usable.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Nobody listening is the caller's choice, not an error of the transport.
    fn emit(&self, event: RemoteEvent) {
        let _ = self.events.send(event);
    }

    fn release(&self, bytes: usize) {
        self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// How long a sender may seem behind before what it wrote and did not arrive is reported
    /// lost: one heartbeat (its count is at most that old) and a little for the stream read.
    fn loss_grace(&self) -> Duration {
        self.config.heartbeat + self.config.heartbeat / 2 + Duration::from_millis(100)
    }
}

/// Every Redis call is bounded by this: long enough for a loaded server, short enough that a
/// dead one is noticed well within the host timeout.
pub(crate) fn op_timeout(config: &RemoteConfig) -> Duration {
    (config.host_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(2))
}

/// Aborts a session's task when the session ends, however it ends (also when the host's task
/// is aborted).
struct AbortOnDrop(AbortHandle);

impl AbortOnDrop {
    fn spawn<T: Send + 'static>(task: impl Future<Output = T> + Send + 'static) -> AbortOnDrop {
        AbortOnDrop(tokio::spawn(task).abort_handle())
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The host's life: sessions one after the other until it leaves (or its handle is dropped).
pub(crate) async fn run(shared: Arc<Shared>, mut outgoing: mpsc::UnboundedReceiver<Outgoing>) {
    let mut predecessor: Option<(u64, u64)> = None;
    let mut outage_since = Instant::now();
    let mut outage_reported = false;
    let mut backoff = FIRST_BACKOFF;
    loop {
        match join(&shared, predecessor).await {
            Ok(session) => {
                backoff = FIRST_BACKOFF;
                let incarnation = session.me.incarnation;
                let (end, written, returned) = session.run(&shared, outgoing).await;
                outgoing = returned;
                predecessor = Some((incarnation, written));
                let Some(reason) = end else {
                    return;
                };
                shared.state().unavailable = Some(reason.clone());
                shared.emit(RemoteEvent::Unavailable { reason });
                outage_since = Instant::now();
                outage_reported = true;
            }
            Err(reason) => {
                if !outage_reported && outage_since.elapsed() >= shared.config.host_timeout {
                    shared.state().unavailable = Some(reason.clone());
                    shared.emit(RemoteEvent::Unavailable { reason });
                    outage_reported = true;
                }
            }
        }
        // Down: what is queued fails now, and so does whatever comes while waiting to retry.
        let retry = tokio::time::sleep(backoff);
        tokio::pin!(retry);
        loop {
            tokio::select! {
                _ = &mut retry => break,
                next = outgoing.recv() => match next {
                    Some(Outgoing::Leave(done)) => {
                        let _ = done.send(());
                        return;
                    }
                    Some(message) => fail(&shared, message, "redis unavailable"),
                    None => return,
                },
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A message that will not be sent goes back to the caller as an event, never dropped silently.
fn fail(shared: &Shared, message: Outgoing, reason: &str) {
    match message {
        Outgoing::Broadcast(bytes) => {
            shared.release(bytes.len());
            shared.emit(RemoteEvent::Failed {
                bytes,
                reason: reason.to_owned(),
            });
        }
        Outgoing::Direct { host, bytes } => {
            shared.release(bytes.len());
            shared.emit(RemoteEvent::NotDelivered {
                host,
                bytes,
                reason: reason.to_owned(),
            });
        }
        Outgoing::Leave(done) => {
            let _ = done.send(());
        }
    }
}

struct Session {
    me: HostInfo,
    commands: Connection,
    reader: Connection,
    /// Kept open: dropping it ends the subscriptions.
    pubsub: Connection,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    generation: String,
    stream_end: String,
}

/// Subscribes to the inbox first (a message sent once we are a member must reach us), then
/// announces a new incarnation.
async fn join(shared: &Arc<Shared>, predecessor: Option<(u64, u64)>) -> Result<Session, String> {
    let transport = &shared.transport;
    let config = &shared.config;
    let mut commands = transport.connect().await?;
    let (pubsub, incoming) = transport.subscribe(&config.host_id).await?;
    let reader = transport.connect_reader().await?;
    let me = HostInfo {
        host: config.host_id.clone(),
        incarnation: random_id(),
    };
    let candidate_generation = format!("{:016x}", random_id());
    let reply = transport
        .join(
            &mut commands,
            &me,
            config.host_timeout,
            &candidate_generation,
            predecessor,
        )
        .await?;
    if reply.status != MembershipStatus::Ok {
        return Err("redis refused the join".into());
    }
    let now = Instant::now();
    let mut state = shared.state();
    state.me = me.clone();
    state.membership.set_me(me.clone());
    let known = state.membership.members();
    for record in others(&reply.members, &me) {
        if known.contains(&record.info) {
            // Known from before the outage: this session reads from the stream's end, so what it
            // wrote meanwhile and did not arrive is lost.
            state.tracker.advertise(
                &record.info.host,
                record.info.incarnation,
                record.written,
                now,
            );
        } else {
            state
                .tracker
                .baseline(&record.info.host, record.info.incarnation, record.written);
        }
    }
    let changes = settle_view(shared, &mut state, &reply, now);
    for change in changes {
        if let Change::Left(host, reason) = change {
            shared.emit(RemoteEvent::HostLeft { host, reason });
        }
    }
    state.unavailable = None;
    shared.emit(RemoteEvent::Joined {
        me: me.clone(),
        hosts: state.membership.members(),
    });
    drop(state);
    Ok(Session {
        me,
        commands,
        reader,
        pubsub,
        incoming,
        generation: reply.generation,
        stream_end: reply.stream_end,
    })
}

fn others<'a>(
    members: &'a [MemberRecord],
    me: &'a HostInfo,
) -> impl Iterator<Item = &'a MemberRecord> + 'a {
    members
        .iter()
        .filter(move |record| record.info.host != me.host)
}

/// Applies a view read from Redis: predecessors' final counts, what each member wrote, and who
/// came and went. Returns the membership changes (their sequence bookkeeping done).
fn settle_view(
    shared: &Shared,
    state: &mut State,
    reply: &MembershipReply,
    now: Instant,
) -> Vec<Change> {
    let me = state.me.clone();
    for record in others(&reply.members, &me) {
        if let Some((incarnation, written)) = record.predecessor {
            let lost = state
                .tracker
                .finish(&record.info.host, incarnation, written);
            if lost > 0 {
                shared.emit(RemoteEvent::Lost {
                    from: record.info.host.clone(),
                    count: lost,
                });
            }
        }
        state.tracker.advertise(
            &record.info.host,
            record.info.incarnation,
            record.written,
            now,
        );
    }
    let view: Vec<HostInfo> = reply
        .members
        .iter()
        .map(|record| record.info.clone())
        .collect();
    let changes = state.membership.apply_view(&view, &reply.recently_left);
    for change in &changes {
        if let Change::Left(host, _) = change {
            state.tracker.depart(&host.host, host.incarnation, now);
        }
    }
    changes
}

impl Session {
    /// Runs until the session ends: `None` when the host left, else why it ended. Returns the
    /// session's written count and the queue.
    async fn run(
        self,
        shared: &Arc<Shared>,
        outgoing: mpsc::UnboundedReceiver<Outgoing>,
    ) -> (Option<String>, u64, mpsc::UnboundedReceiver<Outgoing>) {
        let Session {
            me,
            commands,
            reader,
            pubsub,
            incoming,
            mut generation,
            stream_end,
        } = self;
        let written = Arc::new(AtomicU64::new(0));
        let commands = Arc::new(Mutex::new(commands));
        let (gone_sender, mut gone) = mpsc::unbounded_channel::<String>();
        let _reader =
            AbortOnDrop::spawn(read_stream(shared.clone(), me.clone(), reader, stream_end));
        let _inbox = AbortOnDrop::spawn(read_pubsub(
            shared.clone(),
            me.clone(),
            pubsub,
            incoming,
            gone_sender,
        ));
        let (stop_sender, stop) = oneshot::channel();
        let mut sender = tokio::spawn(send_queued(
            shared.clone(),
            me.clone(),
            commands.clone(),
            written.clone(),
            outgoing,
            stop,
        ));
        let _sender = AbortOnDrop(sender.abort_handle());
        let config = &shared.config;
        let mut ticks = tokio::time::interval_at(
            tokio::time::Instant::now() + config.heartbeat,
            config.heartbeat,
        );
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_beat = Instant::now();
        let end = loop {
            tokio::select! {
                _ = ticks.tick() => {
                    match beat(shared, &me, &commands, &mut generation, &mut last_beat).await {
                        Ok(()) => {}
                        Err(reason) => break reason,
                    }
                }
                Some(reason) = gone.recv() => break reason,
                finished = &mut sender => {
                    // The sender ends by itself only after a leave (or if the handle is gone).
                    let outgoing = match finished {
                        Ok((outgoing, _)) => outgoing,
                        Err(_) => mpsc::unbounded_channel().1,
                    };
                    return (None, written.load(Ordering::Acquire), outgoing);
                }
            }
        };
        let _ = stop_sender.send(());
        let outgoing = match sender.await {
            Ok((outgoing, left)) if !left => outgoing,
            Ok((outgoing, _)) => return (None, written.load(Ordering::Acquire), outgoing),
            Err(_) => mpsc::unbounded_channel().1,
        };
        (Some(end), written.load(Ordering::Acquire), outgoing)
    }
}

/// One heartbeat; `Err` ends the session.
async fn beat(
    shared: &Shared,
    me: &HostInfo,
    commands: &Mutex<Connection>,
    generation: &mut String,
    last_beat: &mut Instant,
) -> Result<(), String> {
    let config = &shared.config;
    let transport = &shared.transport;
    let mut connection = lock(commands).clone();
    match transport
        .heartbeat(&mut connection, me, config.host_timeout, generation)
        .await
    {
        Ok(reply) => match reply.status {
            MembershipStatus::Ok => {
                *last_beat = Instant::now();
                *generation = reply.generation.clone();
                let now = Instant::now();
                let mut state = shared.state();
                let changes = settle_view(shared, &mut state, &reply, now);
                for change in changes {
                    shared.emit(match change {
                        Change::Joined(host) => RemoteEvent::HostJoined(host),
                        Change::Left(host, reason) => RemoteEvent::HostLeft { host, reason },
                    });
                }
                for (from, count) in state.tracker.due(now, shared.loss_grace()) {
                    shared.emit(RemoteEvent::Lost { from, count });
                }
                Ok(())
            }
            MembershipStatus::DataLost => Err("redis lost its data (generation changed)".into()),
            MembershipStatus::Gone => Err("the other hosts declared this host gone".into()),
        },
        Err(error) => {
            if last_beat.elapsed() >= config.host_timeout {
                return Err(format!(
                    "no heartbeat for {:?}: {error}",
                    config.host_timeout
                ));
            }
            // The connection may be dead: the next heartbeat (and the sender) use a new one.
            if let Ok(fresh) = transport.connect().await {
                *lock(commands) = fresh;
            }
            Ok(())
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The most broadcasts, and about the most bytes, written in one round trip, as one stream
/// entry: enough to spread a round trip and an entry over hundreds of small broadcasts, small
/// enough that the trimmed stream stays small (see STREAM_MAX_LEN).
const BATCH_BROADCASTS: usize = packing::MAX_FRAMES;
const BATCH_BYTES: usize = 64 << 10;

/// The one task that writes, so that a host's broadcasts keep their order. Returns the queue,
/// and whether it left.
async fn send_queued(
    shared: Arc<Shared>,
    me: HostInfo,
    commands: Arc<Mutex<Connection>>,
    written: Arc<AtomicU64>,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    mut stop: oneshot::Receiver<()>,
) -> (mpsc::UnboundedReceiver<Outgoing>, bool) {
    let transport = &shared.transport;
    let mut next_seq = 1;
    // A message taken from the queue after a run of broadcasts, to be sent next.
    let mut pending = None;
    loop {
        let next = match pending.take() {
            Some(message) => Some(message),
            None => tokio::select! {
                biased;
                _ = &mut stop => return (outgoing, false),
                next = outgoing.recv() => next,
            },
        };
        let Some(message) = next else {
            return (outgoing, false);
        };
        let mut connection = lock(&commands).clone();
        match message {
            Outgoing::Broadcast(bytes) => {
                // The broadcasts queued meanwhile go in the same round trip, in order: one
                // round trip each would cap a host at some ten thousand a second.
                let mut batch = vec![bytes];
                let mut size = batch[0].len();
                while batch.len() < BATCH_BROADCASTS && size < BATCH_BYTES {
                    match outgoing.try_recv() {
                        Ok(Outgoing::Broadcast(bytes)) => {
                            size += bytes.len();
                            batch.push(bytes);
                        }
                        Ok(other) => {
                            pending = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let first = next_seq;
                let count = batch.len() as u64;
                match transport
                    .broadcast(&mut connection, &me, first, &batch)
                    .await
                {
                    Ok(()) => {
                        written.store(first + count - 1, Ordering::Release);
                        next_seq = first + count;
                        shared.release(size);
                    }
                    Err(failure) if failure.maybe_written => {
                        // Their answer was lost, not necessarily the entries: their numbers are
                        // not used again, or a receiver that got them would skip the next ones
                        // as stale. Receivers get them, or report them lost if a later one
                        // arrives.
                        next_seq = first + count;
                        let reason = format!("{} (it may have been written)", failure.reason);
                        for bytes in batch {
                            fail(&shared, Outgoing::Broadcast(bytes), &reason);
                        }
                    }
                    // Refused by Redis, so not written: their numbers go to the next ones, and
                    // the receivers see no gap to report on top of these `Failed`.
                    Err(failure) => {
                        for bytes in batch {
                            fail(&shared, Outgoing::Broadcast(bytes), &failure.reason);
                        }
                    }
                }
            }
            Outgoing::Direct { host, bytes } => {
                // As broadcasts: those queued meanwhile go in the same round trip, in order (a
                // map's part is a list and an answer per worker, each a message back).
                let mut batch = vec![(host, bytes)];
                let mut size = batch[0].1.len();
                while batch.len() < BATCH_BROADCASTS && size < BATCH_BYTES {
                    match outgoing.try_recv() {
                        Ok(Outgoing::Direct { host, bytes }) => {
                            size += bytes.len();
                            batch.push((host, bytes));
                        }
                        Ok(other) => {
                            pending = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let envelopes: Vec<(String, Vec<u8>)> = batch
                    .iter()
                    .map(|(host, bytes)| (host.clone(), envelope::encode(&me, bytes)))
                    .collect();
                match transport.publish_inboxes(&mut connection, &envelopes).await {
                    Ok(receivers) if receivers.len() == batch.len() => {
                        for ((host, bytes), got) in batch.into_iter().zip(receivers) {
                            if got == 0 {
                                fail(&shared, Outgoing::Direct { host, bytes }, NOBODY_LISTENS);
                            } else {
                                shared.release(bytes.len());
                            }
                        }
                    }
                    answer => {
                        let reason = answer.err().unwrap_or_else(|| {
                            "redis answered a batch of messages with a count of another".into()
                        });
                        for (host, bytes) in batch {
                            fail(&shared, Outgoing::Direct { host, bytes }, &reason);
                        }
                    }
                }
            }
            Outgoing::Leave(done) => {
                let _ = transport
                    .leave(
                        &mut connection,
                        &me,
                        written.load(Ordering::Acquire),
                        shared.config.host_timeout,
                    )
                    .await;
                {
                    let mut state = shared.state();
                    state.unavailable = Some("left".into());
                }
                let _ = done.send(());
                return (outgoing, true);
            }
        }
    }
}

/// Reads the broadcast stream from the cursor taken at join, so that nothing written after the
/// join is missed, however long the first read takes to start.
async fn read_stream(
    shared: Arc<Shared>,
    me: HostInfo,
    mut reader: Connection,
    mut cursor: String,
) {
    let transport = &shared.transport;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let entries = match transport.read(&mut reader, &cursor).await {
            Ok(entries) => entries,
            Err(_) => {
                // The heartbeat decides when Redis is unavailable; here, just retry.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                if let Ok(fresh) = transport.connect_reader().await {
                    reader = fresh;
                }
                continue;
            }
        };
        backoff = FIRST_BACKOFF;
        let now = Instant::now();
        for (id, decoded) in entries {
            cursor = id;
            let entry = match decoded {
                Ok(entry) => entry,
                Err(damaged) => {
                    shared.emit(RemoteEvent::Malformed {
                        from: damaged.from,
                        why: damaged.why,
                    });
                    continue;
                }
            };
            if entry.from.host == me.host {
                continue;
            }
            let count = entry.frames.len() as u64;
            let verdict = shared.state().tracker.on_entry(
                &entry.from.host,
                entry.from.incarnation,
                entry.seq,
                count,
                now,
            );
            if let Verdict::Deliver { lost_before, skip } = verdict {
                if lost_before > 0 {
                    shared.emit(RemoteEvent::Lost {
                        from: entry.from.host.clone(),
                        count: lost_before,
                    });
                }
                for bytes in entry.frames.into_iter().skip(skip as usize) {
                    shared.emit(RemoteEvent::Broadcast {
                        from: entry.from.clone(),
                        bytes,
                    });
                }
            }
        }
    }
}

/// The inbox and the control channel. A lost pub/sub connection is made again; what was
/// published meanwhile was counted by its sender as not delivered.
async fn read_pubsub(
    shared: Arc<Shared>,
    me: HostInfo,
    mut pubsub: Connection,
    mut incoming: mpsc::UnboundedReceiver<Incoming>,
    gone: mpsc::UnboundedSender<String>,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match incoming.recv().await {
            Some(Incoming::Inbox(message)) => match envelope::decode(&message) {
                Ok((from, bytes)) => shared.emit(RemoteEvent::Inbox { from, bytes }),
                Err(why) => shared.emit(RemoteEvent::Malformed { from: None, why }),
            },
            Some(Incoming::Control(Err(why))) => {
                shared.emit(RemoteEvent::Malformed { from: None, why })
            }
            Some(Incoming::Control(Ok(ControlNotice::AgentLead { host, epoch }))) => {
                shared.state().agent_led(Holder { epoch, host });
            }
            Some(Incoming::Control(Ok(ControlNotice::AgentReleased { epoch, .. }))) => {
                shared.state().agent_gone(epoch);
                // A permit is kept if the campaign is busy: it tries once it is free.
                shared.lease_released.notify_one();
            }
            Some(Incoming::Control(Ok(ControlNotice::Member {
                member,
                graceful,
                written,
            }))) => {
                if member == me {
                    if !graceful {
                        let _ = gone.send("the other hosts declared this host timed out".into());
                    }
                    continue;
                }
                let reason = if graceful {
                    LeaveReason::Left
                } else {
                    LeaveReason::TimedOut
                };
                let now = Instant::now();
                let mut state = shared.state();
                state
                    .tracker
                    .advertise(&member.host, member.incarnation, written, now);
                if let Some(Change::Left(host, reason)) = state.membership.remove(&member, reason) {
                    state.tracker.depart(&host.host, host.incarnation, now);
                    shared.emit(RemoteEvent::HostLeft { host, reason });
                }
            }
            Some(Incoming::Disconnected) | None => loop {
                match shared.transport.subscribe(&me.host).await {
                    Ok((fresh, received)) => {
                        pubsub = fresh;
                        incoming = received;
                        backoff = FIRST_BACKOFF;
                        break;
                    }
                    Err(_) => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            },
        }
        // Held so that the subscriptions live as long as this task.
        let _ = &pubsub;
    }
}
