//! Everything that speaks to Redis. The host logic (`host.rs`) calls only the methods of
//! `RedisTransport` and the plain types below, so that another transport (NATS, say) could offer
//! the same methods.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ProtocolVersion, PushInfo, PushKind, Script, Value};
use tokio::sync::mpsc;

use super::keys::Keys;
use super::packing;
use super::scripts;
use super::types::HostInfo;

/// Approximate length the broadcast stream is trimmed to: a host further behind than this loses
/// (and reports) the oldest entries. An entry holds at most about 64 KiB of broadcasts, or one
/// larger one (src/remote/host.rs), so a flood keeps some 64 MiB in Redis.
const STREAM_MAX_LEN: u64 = 1_000;
/// Entries taken by one read of the stream.
const READ_BATCH: usize = 64;

pub(crate) type Connection = MultiplexedConnection;

/// One member as a membership script returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberRecord {
    pub info: HostInfo,
    /// How many broadcasts this incarnation wrote.
    pub written: u64,
    /// The incarnation of the same host before this one, and how many it wrote.
    pub predecessor: Option<(u64, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MembershipStatus {
    Ok,
    /// The namespace's generation changed: Redis lost its data.
    DataLost,
    /// This member was removed by the others (timed out).
    Gone,
}

#[derive(Debug)]
pub(crate) struct MembershipReply {
    pub status: MembershipStatus,
    pub generation: String,
    /// The id of the last entry of the broadcast stream (join only).
    pub stream_end: String,
    pub members: Vec<MemberRecord>,
    pub recently_left: HashSet<HostInfo>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BroadcastEntry {
    pub from: HostInfo,
    /// The sequence number of the first frame; the others follow it.
    pub seq: u64,
    pub frames: Vec<Vec<u8>>,
}

/// An entry that does not decode: its sender if that much can be read, and why.
#[derive(Debug)]
pub(crate) struct Damaged {
    pub from: Option<String>,
    pub why: String,
}

#[derive(Debug)]
pub(crate) struct WriteFailure {
    pub reason: String,
    pub maybe_written: bool,
}

/// A notice of the control channel.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ControlNotice {
    /// `left <member> <written>` (graceful) or `expired <member> <written>` (timed out).
    Member {
        member: HostInfo,
        graceful: bool,
        written: u64,
    },
    /// `agent <host> <epoch>`: the host took the agent lease.
    AgentLead { host: String, epoch: u64 },
    /// `released <host> <epoch>`: the holder gave the agent lease up; candidates try at once.
    AgentReleased { host: String, epoch: u64 },
}

/// What an attempt to take the agent lease found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// Taken: its value in Redis, its epoch, and whether the epoch counter was new.
    Won {
        value: String,
        epoch: u64,
        fresh: bool,
    },
    /// Someone holds it: its value (`<epoch> <host> <token>`).
    Held(String),
}

/// What arrives on the pub/sub connection.
pub(crate) enum Incoming {
    Inbox(Vec<u8>),
    Control(Result<ControlNotice, String>),
    /// The pub/sub connection closed: subscribe again.
    Disconnected,
}

pub(crate) struct RedisTransport {
    commands: redis::Client,
    /// RESP3, so that pub/sub messages arrive as pushes on a plain channel.
    pushes: redis::Client,
    keys: Keys,
    op_timeout: Duration,
    read_block: Duration,
    membership: Script,
    broadcast: Script,
    leave: Script,
    agent_acquire: Script,
    agent_renew: Script,
    agent_release: Script,
}

fn describe(error: redis::RedisError) -> String {
    error.to_string()
}

impl RedisTransport {
    /// `op_timeout` bounds every call; a stream read blocks up to `read_block` on top of it.
    pub fn new(
        info: redis::ConnectionInfo,
        namespace: &str,
        op_timeout: Duration,
        read_block: Duration,
    ) -> Result<RedisTransport, String> {
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let pushes =
            redis::Client::open(info.clone().set_redis_settings(resp3)).map_err(describe)?;
        let commands = redis::Client::open(info).map_err(describe)?;
        Ok(RedisTransport {
            commands,
            pushes,
            keys: Keys::new(namespace),
            op_timeout,
            read_block,
            membership: Script::new(scripts::MEMBERSHIP),
            broadcast: Script::new(scripts::BROADCAST),
            leave: Script::new(scripts::LEAVE),
            agent_acquire: Script::new(scripts::AGENT_ACQUIRE),
            agent_renew: Script::new(scripts::AGENT_RENEW),
            agent_release: Script::new(scripts::AGENT_RELEASE),
        })
    }

    async fn bounded<T>(
        &self,
        limit: Duration,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(limit, call).await {
            Ok(result) => result.map_err(describe),
            Err(_) => Err(format!("redis did not answer within {limit:?}")),
        }
    }

    fn connection_config(&self, response_timeout: Duration) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.op_timeout))
            .set_response_timeout(Some(response_timeout))
    }

    /// A connection for commands that answer at once (shared by clones).
    pub async fn connect(&self) -> Result<Connection, String> {
        let config = self.connection_config(self.op_timeout);
        self.bounded(
            self.op_timeout * 2,
            self.commands
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
    }

    /// A connection of its own for the blocking stream reads, which would stall any other command
    /// queued behind them.
    pub async fn connect_reader(&self) -> Result<Connection, String> {
        let config = self.connection_config(self.read_block + self.op_timeout);
        self.bounded(
            self.op_timeout * 2,
            self.commands
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
    }

    /// A pub/sub connection subscribed to this host's inbox and the control channel, and the
    /// receiver of what arrives on it (each connection has its own, so that the closing of a
    /// replaced one is not taken for the closing of its successor). Returns once both
    /// subscriptions are confirmed, so a message published after that reaches this host.
    pub async fn subscribe(
        &self,
        host: &str,
    ) -> Result<(Connection, mpsc::UnboundedReceiver<Incoming>), String> {
        let (incoming, received) = mpsc::unbounded_channel();
        let inbox = self.keys.inbox(host);
        let control = self.keys.control.clone();
        let forward = move |push: PushInfo| -> Result<(), ()> {
            let message = match push.kind {
                PushKind::Disconnection => Some(Incoming::Disconnected),
                PushKind::Message => classify(&push.data, &inbox, &control),
                _ => None,
            };
            match message {
                Some(message) => incoming.send(message).map_err(|_| ()),
                None => Ok(()),
            }
        };
        let config = self
            .connection_config(self.op_timeout)
            .set_push_sender(forward);
        let mut connection = self
            .bounded(
                self.op_timeout * 2,
                self.pushes
                    .get_multiplexed_async_connection_with_config(&config),
            )
            .await?;
        let channels = [self.keys.inbox(host), self.keys.control.clone()];
        self.bounded(self.op_timeout, connection.subscribe(&channels))
            .await?;
        Ok((connection, received))
    }

    async fn run_membership(
        &self,
        connection: &mut Connection,
        me: &HostInfo,
        host_timeout: Duration,
        generation: &str,
        mode: &str,
        predecessor: &str,
    ) -> Result<MembershipReply, String> {
        let member = me.member();
        let mut invocation = self.membership.prepare_invoke();
        invocation
            .key(&self.keys.hosts)
            .key(&self.keys.generation)
            .key(&self.keys.control)
            .key(&self.keys.left)
            .key(&self.keys.broadcast)
            .key(self.keys.member_hash(&member))
            .arg(&member)
            .arg(millis(host_timeout))
            .arg(generation)
            .arg(mode)
            .arg(&self.keys.member_prefix)
            .arg(predecessor);
        let reply: (String, String, String, Vec<String>, Vec<String>) = self
            .bounded(self.op_timeout, invocation.invoke_async(connection))
            .await?;
        parse_membership(reply)
    }

    /// Announces `me` (a new incarnation); `predecessor` is this host's previous incarnation and
    /// what it wrote, so that the others can close its account exactly.
    pub async fn join(
        &self,
        connection: &mut Connection,
        me: &HostInfo,
        host_timeout: Duration,
        candidate_generation: &str,
        predecessor: Option<(u64, u64)>,
    ) -> Result<MembershipReply, String> {
        let predecessor = predecessor
            .map(|(incarnation, written)| format!("{incarnation:016x}:{written}"))
            .unwrap_or_default();
        self.run_membership(
            connection,
            me,
            host_timeout,
            candidate_generation,
            "join",
            &predecessor,
        )
        .await
    }

    pub async fn heartbeat(
        &self,
        connection: &mut Connection,
        me: &HostInfo,
        host_timeout: Duration,
        generation: &str,
    ) -> Result<MembershipReply, String> {
        self.run_membership(connection, me, host_timeout, generation, "beat", "")
            .await
    }

    /// Writes `frames`, numbered from `first_seq`, to the stream as one entry. A failure tells
    /// whether it may have been written all the same (the answer, not the command, was lost).
    pub async fn broadcast(
        &self,
        connection: &mut Connection,
        me: &HostInfo,
        first_seq: u64,
        frames: &[Vec<u8>],
    ) -> Result<(), WriteFailure> {
        let mut invocation = self.broadcast.prepare_invoke();
        invocation
            .key(&self.keys.broadcast)
            .key(self.keys.member_hash(&me.member()))
            .arg(&me.host)
            .arg(format!("{:016x}", me.incarnation))
            .arg(STREAM_MAX_LEN)
            .arg(first_seq)
            .arg(first_seq + frames.len().saturating_sub(1) as u64)
            .arg(packing::pack(frames));
        match tokio::time::timeout(self.op_timeout, invocation.invoke_async::<i64>(connection))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(WriteFailure {
                maybe_written: error.is_timeout()
                    || error.is_connection_dropped()
                    || (error.is_io_error() && !error.is_connection_refusal()),
                reason: describe(error),
            }),
            Err(_) => Err(WriteFailure {
                reason: format!("redis did not answer within {:?}", self.op_timeout),
                maybe_written: true,
            }),
        }
    }

    /// Publishes enveloped messages to hosts' inboxes in one round trip, in order; returns how
    /// many subscribers got each.
    pub async fn publish_inboxes(
        &self,
        connection: &mut Connection,
        messages: &[(String, Vec<u8>)],
    ) -> Result<Vec<u64>, String> {
        let mut pipe = redis::pipe();
        for (host, envelope) in messages {
            pipe.cmd("PUBLISH").arg(self.keys.inbox(host)).arg(envelope);
        }
        self.bounded(self.op_timeout, pipe.query_async(connection))
            .await
    }

    /// `SET claim value NX PX ttl`: whether it was set (false: someone claimed it first).
    pub async fn claim(
        &self,
        connection: &mut Connection,
        call: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, String> {
        let mut command = redis::cmd("SET");
        command
            .arg(self.keys.claim(call))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl));
        let set: Option<String> = self
            .bounded(self.op_timeout, command.query_async(connection))
            .await?;
        Ok(set.is_some())
    }

    /// Shortens a claim's life once its call is answered.
    pub async fn expire_claim(
        &self,
        connection: &mut Connection,
        call: &str,
        ttl: Duration,
    ) -> Result<(), String> {
        let mut command = redis::cmd("PEXPIRE");
        command.arg(self.keys.claim(call)).arg(millis(ttl));
        let _: i64 = self
            .bounded(self.op_timeout, command.query_async(connection))
            .await?;
        Ok(())
    }

    pub async fn leave(
        &self,
        connection: &mut Connection,
        me: &HostInfo,
        written: u64,
        host_timeout: Duration,
    ) -> Result<(), String> {
        let member = me.member();
        let mut invocation = self.leave.prepare_invoke();
        invocation
            .key(&self.keys.hosts)
            .key(self.keys.member_hash(&member))
            .key(&self.keys.left)
            .key(&self.keys.control)
            .arg(&member)
            .arg(written)
            .arg(millis(host_timeout));
        let _: i64 = self
            .bounded(self.op_timeout, invocation.invoke_async(connection))
            .await?;
        Ok(())
    }

    /// Takes the agent lease for `holder` (`<host> <token>`) if it is free; the call is bounded by
    /// `limit`.
    pub async fn acquire_agent(
        &self,
        connection: &mut Connection,
        holder: &str,
        host: &str,
        lease: Duration,
        limit: Duration,
    ) -> Result<Acquired, String> {
        let mut invocation = self.agent_acquire.prepare_invoke();
        invocation
            .key(&self.keys.agent)
            .key(&self.keys.agent_epoch)
            .key(&self.keys.control)
            .arg(holder)
            .arg(millis(lease))
            .arg(host);
        let (taken, value, fresh): (i64, String, i64) = self
            .bounded(limit, invocation.invoke_async(connection))
            .await?;
        if taken != 1 {
            return Ok(Acquired::Held(value));
        }
        let epoch = super::lease::parse_holder(&value)
            .map(|holder| holder.epoch)
            .ok_or_else(|| format!("the lease script wrote a value it cannot read: {value:?}"))?;
        Ok(Acquired::Won {
            value,
            epoch,
            fresh: fresh == 1,
        })
    }

    /// Renews the agent lease if its value is still `value`. `Ok(None)`: renewed; `Ok(Some(v))`:
    /// not ours any more, `v` being the holder's value (empty if none).
    pub async fn renew_agent(
        &self,
        connection: &mut Connection,
        value: &str,
        lease: Duration,
        limit: Duration,
    ) -> Result<Option<String>, String> {
        let mut invocation = self.agent_renew.prepare_invoke();
        invocation
            .key(&self.keys.agent)
            .arg(value)
            .arg(millis(lease));
        let (renewed, holder): (i64, String) = self
            .bounded(limit, invocation.invoke_async(connection))
            .await?;
        Ok((renewed != 1).then_some(holder))
    }

    /// Deletes the agent lease if its value is still `value`, and tells the others. Returns
    /// whether it was ours.
    pub async fn release_agent(
        &self,
        connection: &mut Connection,
        value: &str,
        host: &str,
        epoch: u64,
    ) -> Result<bool, String> {
        let mut invocation = self.agent_release.prepare_invoke();
        invocation
            .key(&self.keys.agent)
            .key(&self.keys.control)
            .arg(value)
            .arg(host)
            .arg(epoch);
        let released: i64 = self
            .bounded(self.op_timeout, invocation.invoke_async(connection))
            .await?;
        Ok(released == 1)
    }

    /// The entries after `cursor`, waiting up to the read block for some. Each entry comes with
    /// its id (the next cursor) and what it decoded to.
    pub async fn read(
        &self,
        connection: &mut Connection,
        cursor: &str,
    ) -> Result<Vec<(String, Result<BroadcastEntry, Damaged>)>, String> {
        let mut command = redis::cmd("XREAD");
        command
            .arg("COUNT")
            .arg(READ_BATCH)
            .arg("BLOCK")
            .arg(millis(self.read_block))
            .arg("STREAMS")
            .arg(&self.keys.broadcast)
            .arg(cursor);
        let reply: Option<redis::streams::StreamReadReply> = self
            .bounded(
                self.read_block + self.op_timeout,
                command.query_async(connection),
            )
            .await?;
        Ok(reply
            .into_iter()
            .flat_map(|reply| reply.keys)
            .flat_map(|key| key.ids)
            .map(|entry| {
                let decoded = parse_entry(&entry.map).map_err(|why| Damaged {
                    from: text_field(&entry.map, "h").ok().map(str::to_owned),
                    why,
                });
                (entry.id, decoded)
            })
            .collect())
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn parse_membership(
    (status, generation, stream_end, flat_members, left): (
        String,
        String,
        String,
        Vec<String>,
        Vec<String>,
    ),
) -> Result<MembershipReply, String> {
    let status = match status.as_str() {
        "ok" => MembershipStatus::Ok,
        "lost" => MembershipStatus::DataLost,
        "gone" => MembershipStatus::Gone,
        other => return Err(format!("membership script answered {other:?}")),
    };
    let mut members = Vec::with_capacity(flat_members.len() / 3);
    for record in flat_members.chunks(3) {
        let [member, written, predecessor] = record else {
            return Err("membership script answered a cut member list".into());
        };
        // A member that does not parse was not written by this transport: it is skipped, not
        // fatal to the heartbeat.
        let Some(info) = HostInfo::from_member(member) else {
            continue;
        };
        members.push(MemberRecord {
            info,
            written: written.parse().unwrap_or(0),
            predecessor: parse_predecessor(predecessor),
        });
    }
    Ok(MembershipReply {
        status,
        generation,
        stream_end,
        members,
        recently_left: left
            .iter()
            .filter_map(|member| HostInfo::from_member(member))
            .collect(),
    })
}

fn parse_predecessor(text: &str) -> Option<(u64, u64)> {
    let (incarnation, written) = text.split_once(':')?;
    Some((
        u64::from_str_radix(incarnation, 16).ok()?,
        written.parse().ok()?,
    ))
}

fn field<'a>(map: &'a HashMap<String, Value>, name: &str) -> Result<&'a [u8], String> {
    match map.get(name) {
        Some(Value::BulkString(bytes)) => Ok(bytes),
        Some(Value::SimpleString(text)) => Ok(text.as_bytes()),
        Some(_) => Err(format!("field {name:?} is not a string")),
        None => Err(format!("field {name:?} is missing")),
    }
}

fn text_field<'a>(map: &'a HashMap<String, Value>, name: &str) -> Result<&'a str, String> {
    std::str::from_utf8(field(map, name)?).map_err(|_| format!("field {name:?} is not UTF-8"))
}

pub(crate) fn parse_entry(map: &HashMap<String, Value>) -> Result<BroadcastEntry, String> {
    let host = text_field(map, "h")?;
    let incarnation = u64::from_str_radix(text_field(map, "i")?, 16)
        .map_err(|_| "field \"i\" is not a hex incarnation".to_string())?;
    let seq: u64 = text_field(map, "s")?
        .parse()
        .map_err(|_| "field \"s\" is not a sequence number".to_string())?;
    let frames = packing::unpack(field(map, "f")?)?;
    // Numbers start at 1, and the last of the entry must be a number too.
    if seq == 0 || seq.checked_add(frames.len() as u64).is_none() {
        return Err(format!(
            "field \"s\" ({seq}) is no sequence number for {} frames",
            frames.len()
        ));
    }
    Ok(BroadcastEntry {
        from: HostInfo {
            host: host.to_owned(),
            incarnation,
        },
        seq,
        frames,
    })
}

/// A push of kind `message`: `[channel, payload]`.
fn classify(data: &[Value], inbox: &str, control: &str) -> Option<Incoming> {
    let [Value::BulkString(channel), Value::BulkString(payload)] = data else {
        return None;
    };
    if channel == inbox.as_bytes() {
        Some(Incoming::Inbox(payload.clone()))
    } else if channel == control.as_bytes() {
        Some(Incoming::Control(parse_control(payload)))
    } else {
        None
    }
}

/// `left <member> <written>` (graceful), `expired <member> <written>` (timed out),
/// `agent <host> <epoch>` (took the agent lease), `released <host> <epoch>` (gave it up).
pub(crate) fn parse_control(payload: &[u8]) -> Result<ControlNotice, String> {
    let text = std::str::from_utf8(payload).map_err(|_| "control notice is not UTF-8")?;
    let mut words = text.split(' ');
    let (Some(kind), Some(who), Some(number), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(format!(
            "control notice {text:?} is not `<kind> <member or host> <number>`"
        ));
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("control notice with a bad number: {number:?}"))?;
    let graceful = match kind {
        "left" => true,
        "expired" => false,
        "agent" | "released" => {
            if who.is_empty() {
                return Err("control notice names no host".into());
            }
            let (host, epoch) = (who.to_owned(), number);
            return Ok(if kind == "agent" {
                ControlNotice::AgentLead { host, epoch }
            } else {
                ControlNotice::AgentReleased { host, epoch }
            });
        }
        _ => return Err(format!("control notice of unknown kind {kind:?}")),
    };
    let member = HostInfo::from_member(who)
        .ok_or_else(|| format!("control notice names no member: {who:?}"))?;
    Ok(ControlNotice::Member {
        member,
        graceful,
        written: number,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn an_entry_decodes_with_binary_frames() {
        let mut map = HashMap::new();
        map.insert("h".to_string(), bulk("web"));
        map.insert("i".to_string(), bulk("00000000000000ff"));
        map.insert("s".to_string(), bulk("7"));
        map.insert(
            "f".to_string(),
            Value::BulkString(packing::pack(&[vec![0, 255, 10], vec![1]])),
        );
        let entry = parse_entry(&map).unwrap();
        assert_eq!(
            entry,
            BroadcastEntry {
                from: HostInfo {
                    host: "web".into(),
                    incarnation: 255
                },
                seq: 7,
                frames: vec![vec![0, 255, 10], vec![1]],
            }
        );
        map.insert("s".to_string(), bulk(&u64::MAX.to_string()));
        assert!(parse_entry(&map).is_err());
        map.insert("s".to_string(), bulk("0"));
        assert!(parse_entry(&map).is_err());
        map.insert("s".to_string(), bulk("7"));
        map.insert("f".to_string(), Value::BulkString(vec![9, 0, 0, 0, 1]));
        assert!(parse_entry(&map).is_err());
        map.insert("s".to_string(), bulk("x"));
        assert!(parse_entry(&map).is_err());
        map.remove("f");
        assert!(parse_entry(&map).is_err());
    }

    #[test]
    fn control_notices_parse() {
        assert_eq!(
            parse_control(b"left a/0f 12").unwrap(),
            ControlNotice::Member {
                member: HostInfo {
                    host: "a".into(),
                    incarnation: 15
                },
                graceful: true,
                written: 12
            }
        );
        assert!(matches!(
            parse_control(b"expired a/0f 0").unwrap(),
            ControlNotice::Member {
                graceful: false,
                ..
            }
        ));
        assert_eq!(
            parse_control(b"agent web-1 1712345678901").unwrap(),
            ControlNotice::AgentLead {
                host: "web-1".into(),
                epoch: 1_712_345_678_901
            }
        );
        assert_eq!(
            parse_control(b"released web-1 7").unwrap(),
            ControlNotice::AgentReleased {
                host: "web-1".into(),
                epoch: 7
            }
        );
        assert!(parse_control(b"released web-1 x").is_err());
        assert!(parse_control(b"joined a/0f 0").is_err());
        assert!(parse_control(b"left a/0f").is_err());
        assert!(parse_control(b"left a/0f 1 2").is_err());
    }

    #[test]
    fn membership_replies_parse() {
        let reply = parse_membership((
            "ok".into(),
            "g".into(),
            "0-0".into(),
            vec![
                "a/01".into(),
                "3".into(),
                "".into(),
                "b/02".into(),
                "0".into(),
                "00000000000000aa:9".into(),
            ],
            vec!["c/03".into()],
        ))
        .unwrap();
        assert_eq!(reply.status, MembershipStatus::Ok);
        assert_eq!(reply.members.len(), 2);
        assert_eq!(reply.members[0].written, 3);
        assert_eq!(reply.members[1].predecessor, Some((0xaa, 9)));
        assert!(reply.recently_left.contains(&HostInfo {
            host: "c".into(),
            incarnation: 3
        }));
        assert!(parse_membership(("??".into(), "".into(), "".into(), vec![], vec![])).is_err());
    }
}
