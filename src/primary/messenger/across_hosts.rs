//! The messenger across hosts (option `redis`). What a process sends to every app worker
//! (`broadcast`, `sendToApp`) is routed here first, then goes to the other hosts of the namespace;
//! `sendTo({ host, id })` goes to one worker of another host; what comes from another host is
//! routed here as if it had been sent here, with that host's id in the frame (FLAG_HOST), so that
//! `meta.from.host` names it. src/remote/ carries the bytes and keeps the membership; this module
//! decides what crosses, and tells each sender what did not arrive: nothing is lost in silence.

use serde_json::json;

use super::agent_across_hosts::ForAgent;
use super::consume_across_hosts::Calls;
use super::map_across_hosts::Maps;
use super::not_sent::not_sent;
use super::proxies::Proxies;
use super::random_across_hosts::{random_key, Randoms};
use super::{Bound, Cx, Messenger};
use crate::channel::frame_link::{Frame, Outgoing};
use crate::errors;
use crate::primary::events::Event;
use crate::primary::requests::RequestKey;
use crate::primary::router::{Dest, Undeliverable};
use crate::primary::WorkerId;
use crate::remote::{HostInfo, LeaveReason, Remote, RemoteError, RemoteEvent, NOBODY_LISTENS};
use crate::wire::frames::{self, Header, Kind, Target, FLAG_ERROR};

/// This host's side of the namespace.
pub struct AcrossHosts {
    pub(super) remote: Remote,
    pub(super) me: String,
    /// Messages of other hosts reported lost here (the metrics).
    lost: u64,
    /// Reports for senders of other hosts that could not be sent since the last that could.
    untold: u64,
    /// A graceful stop has begun: this host has left, or is leaving.
    leaving: bool,
    /// What other hosts sent while this one was starting, routed once it is up: the host, the
    /// frame, whether it was a broadcast. Bounded by `held_bytes`.
    held: Vec<(HostInfo, Vec<u8>, bool)>,
    held_bytes: usize,
    /// Frames of other hosts this host refused (malformed, or not for it): warned about at the
    /// 1st, 2nd, 4th, 8th... so that a faulty host cannot flood the warnings.
    refused: u64,
    /// The consumes that cross hosts, asked here or claimed here.
    pub(super) calls: Calls,
    /// The requests of other hosts that run here.
    pub(super) proxies: Proxies,
    /// The maps asked here that other hosts take part in.
    pub(super) maps: Maps,
    /// What went to other hosts at random, kept a moment to send it on.
    pub(super) randoms: Randoms,
    /// The namespace has one agent (`agent: { scope: 'cluster' }`).
    pub(super) cluster_agent: bool,
    /// What waits for that agent while no host runs it.
    pub(super) for_agent: ForAgent,
}

/// The most held for other hosts while this one starts.
const MAX_HELD_FROM_HOSTS: usize = 64 << 20;

impl AcrossHosts {
    pub fn new(remote: Remote, cluster_agent: bool) -> Self {
        AcrossHosts {
            me: remote.me().host,
            remote,
            lost: 0,
            untold: 0,
            leaving: false,
            held: Vec::new(),
            held_bytes: 0,
            refused: 0,
            calls: Calls::default(),
            proxies: Proxies::default(),
            maps: Maps::default(),
            randoms: Randoms::default(),
            cluster_agent,
            for_agent: ForAgent::default(),
        }
    }
}

/// The same frame, naming `host` (FLAG_HOST) instead of what it named: its payload in line.
fn naming_host(out: &Outgoing, host: Option<&str>) -> Result<Vec<u8>, String> {
    let in_line = out.in_line().map_err(|e| e.to_string())?;
    frames::with_host(&in_line.bytes, host).map_err(|e| e.to_string())
}

/// The local sender a frame names (its source id; 0 is the primary's JavaScript).
fn sender(header: &Header) -> Option<WorkerId> {
    (header.source_id != 0).then_some(header.source_id)
}

impl Messenger {
    /// From now on the messenger spans the hosts `remote` reaches; `cluster_agent`: with one
    /// agent in the namespace.
    pub fn span_hosts(&mut self, remote: Remote, cluster_agent: bool) {
        self.hosts = Some(AcrossHosts::new(remote, cluster_agent));
    }

    /// This host's id and the others', when the cluster spans hosts.
    pub fn hosts(&self) -> Option<(String, Vec<HostInfo>)> {
        self.hosts
            .as_ref()
            .map(|h| (h.me.clone(), h.remote.hosts()))
    }

    /// Messages of other hosts reported lost here.
    pub fn lost_across_hosts(&self) -> u64 {
        self.hosts.as_ref().map_or(0, |h| h.lost)
    }

    /// The link to the other hosts, once, for a graceful stop (`Remote::leave`).
    pub fn take_hosts_to_leave(&mut self) -> Option<Remote> {
        let hosts = self.hosts.as_mut()?;
        if std::mem::replace(&mut hosts.leaving, true) {
            return None;
        }
        Some(hosts.remote.clone())
    }

    /// A message for every app worker, routed here: now for the other hosts.
    pub(super) fn send_to_other_hosts(
        &mut self,
        from: Option<WorkerId>,
        header: &Header,
        out: &Outgoing,
    ) {
        if self.hosts.as_ref().is_none_or(|h| h.remote.alone())
            || header.kind != Kind::Message
            || !matches!(header.target, Target::Broadcast | Target::Apps)
        {
            return;
        }
        let sent = self.for_other_hosts(header, out).and_then(|bytes| {
            let Some(hosts) = &self.hosts else {
                return Ok(());
            };
            hosts
                .remote
                .broadcast(bytes)
                .map_err(|e| not_sent(e, &header.action, "the other hosts"))
        });
        if let Err(why) = sent {
            // A flood while Redis is away is one report per sender and action, with a count.
            self.reports.add(from, header, None, why);
        }
    }

    /// A frame as it goes to other hosts: naming this host, its payload in line, within the
    /// limit between hosts.
    pub(super) fn for_other_hosts(
        &self,
        header: &Header,
        out: &Outgoing,
    ) -> Result<Vec<u8>, Undeliverable> {
        let Some(hosts) = &self.hosts else {
            return Err(not_sent(
                RemoteError::Unavailable("stopped".into()),
                &header.action,
                "the other hosts",
            ));
        };
        // Refused before a memory file's payload is read back: the frame only grows by the host
        // id, and loses the 4 bytes that stand for a payload in a file.
        let limit = hosts.remote.max_message();
        if out.weight.saturating_sub(frames::SHARED_LEN_BYTES) > limit {
            return Err(not_sent(
                RemoteError::TooLarge { limit },
                &header.action,
                "the other hosts",
            ));
        }
        naming_host(out, Some(&hosts.me)).map_err(|why| Undeliverable {
            code: errors::PROTOCOL,
            message: format!(
                "'{}' could not be sent to other hosts: {why}",
                header.action
            ),
        })
    }

    /// The caller `requester` has gone: nobody waits for its requests on other hosts.
    pub(super) fn forget_calls_of(&mut self, requester: Option<WorkerId>) {
        if let Some(hosts) = &mut self.hosts {
            hosts.calls.forget_requester(requester);
            hosts.maps.forget_requester(requester);
        }
    }

    /// This host and the other hosts of a map asked here, if the cluster spans hosts (none for
    /// this host's part of another host's map).
    pub(super) fn map_hosts(&self, key: &RequestKey) -> Option<(String, Vec<String>)> {
        let hosts = self.hosts.as_ref()?;
        if key
            .0
            .is_some_and(|id| super::proxies::is_proxy(Dest::Worker(id)))
        {
            return None;
        }
        Some((
            hosts.me.clone(),
            hosts.maps.hosts_of(key).unwrap_or_default(),
        ))
    }

    /// A child's frame that names a host (`sendTo({ host, id })`): sent there, or routed here if
    /// it names this host.
    pub(super) fn send_to_host(&mut self, cx: &mut Cx<'_>, from: Option<WorkerId>, frame: Frame) {
        let header = frame.header.clone();
        let host = header.host.clone().unwrap_or_default();
        let plain =
            header.kind == Kind::Message && matches!(header.target, Target::One | Target::Pid);
        let Some(hosts) = &self.hosts else {
            let why = Undeliverable {
                code: errors::UNKNOWN_TARGET,
                message: format!(
                    "no host '{host}': this cluster spans one host (no redis option); '{}' was not delivered",
                    header.action
                ),
            };
            return self.reports.add(from, &header, None, why);
        };
        if !plain {
            let why = Undeliverable {
                code: errors::UNKNOWN_TARGET,
                message: format!(
                    "only sendTo names a host; '{}' was not delivered",
                    header.action
                ),
            };
            return self.reports.add(from, &header, None, why);
        }
        let out = Outgoing::new(frame);
        if host == hosts.me {
            // Routed here, as if it had named no host.
            // A frame this host cannot read again was checked as it came: none is dropped here.
            if let Ok(frame) =
                naming_host(&out, None).and_then(|b| frames::parse(b).map_err(|e| e.to_string()))
            {
                self.route_message(cx, from, frame);
            }
            return;
        }
        let whom = format!("host '{host}'");
        let sent = naming_host(&out, Some(&hosts.me))
            .map_err(|why| Undeliverable {
                code: errors::PROTOCOL,
                message: format!("'{}' could not be sent to {whom}: {why}", header.action),
            })
            .and_then(|bytes| {
                hosts
                    .remote
                    .send(&host, bytes)
                    .map_err(|e| not_sent(e, &header.action, &whom))
            });
        if let Err(why) = sent {
            // A flood while Redis is away is one report per sender and action, with a count.
            self.reports.add(from, &header, None, why);
        }
    }

    /// News from the other hosts; what it could not deliver is reported once they are all routed.
    pub fn on_remote(&mut self, cx: &mut Cx<'_>, events: Vec<RemoteEvent>) {
        for event in events {
            self.on_remote_event(cx, event);
        }
        self.send_reports(cx);
    }

    fn on_remote_event(&mut self, cx: &mut Cx<'_>, event: RemoteEvent) {
        match event {
            RemoteEvent::Broadcast { from, bytes } if cx.starting => {
                self.hold_from_host(cx, from, bytes, true)
            }
            RemoteEvent::Inbox { from, bytes } if cx.starting => {
                self.hold_from_host(cx, from, bytes, false)
            }
            RemoteEvent::Broadcast { from, bytes } => self.route_from_host(cx, &from, bytes, true),
            RemoteEvent::Inbox { from, bytes } => self.route_from_host(cx, &from, bytes, false),
            RemoteEvent::Lost { from, count } => {
                if let Some(hosts) = &mut self.hosts {
                    hosts.lost = hosts.lost.saturating_add(count);
                }
                cx.events.push(Event::Warning {
                    code: errors::MESSAGES_LOST,
                    message: format!(
                        "{count} messages that host '{from}' sent to every worker never reached this host (Redis lost them: a restart, or a stream trimmed while this host lagged)"
                    ),
                    id: None,
                    details: json!({ "fromHost": from, "count": count }),
                });
            }
            RemoteEvent::NotDelivered { host, bytes, reason } => {
                let why = Undeliverable {
                    code: errors::UNKNOWN_TARGET,
                    message: format!("host '{host}' is not connected ({reason})"),
                };
                // A consume nobody received may go to another host; a message for the agent
                // waits for the next one.
                // Nobody read that inbox: a message sent at random goes to the next host.
                let random = random_key(&bytes).filter(|_| reason == NOBODY_LISTENS);
                if random.is_some_and(|key| self.random_refused(key, &host)) {
                    return;
                }
                let bytes = self
                    .call_not_delivered(cx, bytes, &reason, why.clone())
                    .and_then(|bytes| self.map_not_delivered(cx, &host, &reason, bytes))
                    .and_then(|bytes| self.agent_host_unreachable(cx, &host, &reason, bytes));
                // An answer or report for a host that has gone: nobody is left to tell.
                let answer = |bytes: &[u8]| {
                    frames::parse::<()>(bytes.to_vec()).is_ok_and(|f| {
                        matches!(f.header.kind, Kind::Reply | Kind::Expect | Kind::Undeliverable)
                    })
                };
                if let Some(bytes) = bytes.filter(|b| !answer(b)) {
                    self.tell_sender(bytes, why);
                }
            }
            RemoteEvent::Claim {
                call,
                kind,
                outcome,
            } => self.on_claim(cx, call, kind, outcome),
            RemoteEvent::Failed { bytes, reason } => {
                let why = Undeliverable {
                    code: errors::REMOTE_UNAVAILABLE,
                    message: format!("Redis did not take it ({reason})"),
                };
                self.tell_sender(bytes, why);
            }
            RemoteEvent::Unavailable { reason } => cx.events.warn(
                None,
                errors::REMOTE_UNAVAILABLE,
                format!("Redis cannot be reached ({reason}): messages for other hosts fail until it is back; this host goes on"),
            ),
            RemoteEvent::Joined { me, hosts } => {
                if let Some(h) = &mut self.hosts {
                    h.me = me.host.clone();
                }
                for host in hosts {
                    cx.events.push(Event::HostJoined {
                        host: host.host,
                        incarnation: host.incarnation,
                    });
                }
            }
            RemoteEvent::HostJoined(host) => cx.events.push(Event::HostJoined {
                host: host.host,
                incarnation: host.incarnation,
            }),
            RemoteEvent::HostLeft { host, reason } => {
                self.calls_host_gone(&host);
                self.maps_host_gone(cx, &host);
                cx.events.push(Event::HostLeft {
                host: host.host,
                incarnation: host.incarnation,
                reason: match reason {
                    LeaveReason::Left => "left",
                    LeaveReason::TimedOut => "timeout",
                    LeaveReason::NewIncarnation => "restarted",
                },
                })
            }
            RemoteEvent::Malformed { from, why } => {
                let host = from.unwrap_or_else(|| "?".into());
                self.refuse(cx, &host, &format!("a malformed message ({why})"));
            }
        }
    }

    /// A frame from another host: routed here as if sent here, naming that host.
    fn route_from_host(
        &mut self,
        cx: &mut Cx<'_>,
        from: &HostInfo,
        bytes: Vec<u8>,
        broadcast: bool,
    ) {
        let frame: Frame = match frames::parse(bytes) {
            Ok(frame) => frame,
            Err(e) => return self.refuse(cx, &from.host, &format!("a malformed frame: {e}")),
        };
        let header = frame.header.clone();
        if header.host.as_deref() != Some(from.host.as_str()) {
            return self.refuse(cx, &from.host, "a frame naming another host");
        }
        let fits = matches!(
            (broadcast, header.kind, header.target),
            (true, Kind::Message, Target::Broadcast | Target::Apps)
                | (
                    false,
                    Kind::Message,
                    Target::One | Target::Pid | Target::Agent | Target::RandomApp
                )
                | (false, Kind::Request, Target::AnyApp | Target::Apps)
                | (
                    false,
                    Kind::Reply | Kind::Expect | Kind::Undeliverable,
                    Target::One | Target::Primary
                )
        );
        if !fits {
            return self.refuse(
                cx,
                &from.host,
                "a frame this host does not take from other hosts",
            );
        }
        if frame.bytes.len() > self.max_frame {
            // Within what crosses hosts, but over this host's own maxMessageSize.
            let why = Undeliverable {
                code: errors::MESSAGE_TOO_LARGE,
                message: format!(
                    "a message of {} bytes exceeds maxMessageSize on host '{}'",
                    frame.payload().len(),
                    self.hosts.as_ref().map_or("", |h| h.me.as_str())
                ),
            };
            return self.tell_origin(cx, &from.host, &header, why);
        }
        self.routed += u64::from(matches!(header.kind, Kind::Message | Kind::Request));
        if header.kind == Kind::Request && header.target == Target::Apps {
            return self.run_map_for_host(cx, from, frame);
        }
        if header.kind == Kind::Request {
            return self.run_for_host(cx, from, frame);
        }
        let frame = if matches!(
            header.kind,
            Kind::Reply | Kind::Expect | Kind::Undeliverable
        ) {
            match self
                .answer_from_host(cx, from, frame)
                .or_else(|frame| self.map_answer_from_host(cx, from, frame))
            {
                Ok(()) => return,
                Err(frame) => frame,
            }
        } else {
            frame
        };
        // An answer to a request this host no longer waits for (its caller gave up, or has gone).
        if matches!(header.kind, Kind::Reply | Kind::Expect) {
            return;
        }
        // A message sent at random to a host with no handler: on to the next one.
        let no_handler = || {
            serde_json::from_slice::<serde_json::Value>(frame.payload())
                .is_ok_and(|why| why["code"] == errors::NO_HANDLER)
        };
        if header.kind == Kind::Undeliverable
            && no_handler()
            && self.random_refused(
                (super::requester_of(&header), header.correlation),
                &from.host,
            )
        {
            return;
        }
        if header.kind == Kind::Undeliverable {
            // The answer to what a process of this host sent there: within the receiver's
            // bound, as anything else another host sends; past it, its sender still learns
            // that something was not delivered.
            let to = match header.target {
                Target::Primary => Dest::Primary,
                _ => Dest::Worker(header.target_id),
            };
            if let Err(why) = self.deliver(cx, to, &Outgoing::new(frame), &header, Bound::Applies) {
                self.reports.add(super::worker_of(to), &header, None, why);
            }
            return;
        }
        let dests = match self.router.route(&header) {
            Ok(dests) => dests,
            Err(why) => return self.tell_origin(cx, &from.host, &header, why),
        };
        let out = Outgoing::new(frame);
        for dest in dests {
            if let Err(why) = self.deliver(cx, dest, &out, &header, Bound::Applies) {
                self.tell_origin(cx, &from.host, &header, why);
            }
        }
    }

    /// A frame of another host that this host does not take: dropped, and said at the 1st, 2nd,
    /// 4th, 8th... time, with the count, so that a faulty host cannot flood the warnings.
    fn refuse(&mut self, cx: &mut Cx<'_>, host: &str, what: &str) {
        let Some(hosts) = &mut self.hosts else {
            return;
        };
        hosts.refused += 1;
        if hosts.refused.is_power_of_two() {
            cx.events.warn(
                None,
                errors::PROTOCOL,
                format!(
                    "host '{host}' sent {what}; it was dropped ({} frames of other hosts dropped so far)",
                    hosts.refused
                ),
            );
        }
    }

    /// While this host starts, what other hosts send waits for it, as what its own processes
    /// send does; past the bound, their senders are told.
    fn hold_from_host(&mut self, cx: &mut Cx<'_>, from: HostInfo, bytes: Vec<u8>, broadcast: bool) {
        let Some(hosts) = &mut self.hosts else {
            return;
        };
        if hosts.held_bytes + bytes.len() <= MAX_HELD_FROM_HOSTS {
            hosts.held_bytes += bytes.len();
            hosts.held.push((from, bytes, broadcast));
            return;
        }
        if let Ok(frame) = frames::parse::<()>(bytes) {
            let why = Undeliverable {
                code: errors::QUEUE_FULL,
                message: format!(
                    "host '{}' is starting and already holds {MAX_HELD_FROM_HOSTS} bytes of messages from other hosts",
                    hosts.me
                ),
            };
            self.tell_origin(cx, &from.host, &frame.header, why);
        }
    }

    /// This host is up: what other hosts sent while it started is routed now.
    pub(super) fn release_held_from_hosts(&mut self, cx: &mut Cx<'_>) {
        let Some(hosts) = &mut self.hosts else {
            return;
        };
        let held = std::mem::take(&mut hosts.held);
        hosts.held_bytes = 0;
        for (from, bytes, broadcast) in held {
            self.route_from_host(cx, &from, bytes, broadcast);
        }
    }

    /// A sender of another host is told that what it sent did not reach a process of this one.
    pub(super) fn tell_origin(
        &mut self,
        cx: &mut Cx<'_>,
        origin: &str,
        about: &Header,
        why: Undeliverable,
    ) {
        let Some(hosts) = &mut self.hosts else {
            return;
        };
        let payload = json!({ "code": why.code, "message": why.message, "host": hosts.me });
        let header = Header {
            kind: Kind::Undeliverable,
            // Source 0 is the primary's JavaScript.
            target: if about.source_id == 0 {
                Target::Primary
            } else {
                Target::One
            },
            flags: FLAG_ERROR,
            target_id: about.source_id,
            source_id: 0,
            source_pid: std::process::id(),
            correlation: about.correlation,
            action: about.action.clone(),
            host: Some(hosts.me.clone()),
        };
        let Ok(bytes) = frames::encode(&header, payload.to_string().as_bytes()) else {
            return;
        };
        if hosts.remote.send(origin, bytes).is_err() {
            // Its host is gone or cut off: there is no one left to tell. Counted, and said once
            // until a report gets through again.
            hosts.untold += 1;
            if hosts.untold == 1 {
                cx.events.warn(
                    None,
                    errors::UNKNOWN_TARGET,
                    format!(
                        "'{}' from host '{origin}' was not delivered here ({}), and that host cannot be told",
                        about.action, why.message
                    ),
                );
            }
        } else {
            hosts.untold = 0;
        }
    }

    /// What this host sent did not reach another host: its sender (named in the frame) is told.
    fn tell_sender(&mut self, bytes: Vec<u8>, why: Undeliverable) {
        let Ok(frame) = frames::parse::<()>(bytes) else {
            return;
        };
        let why = Undeliverable {
            code: why.code,
            message: format!(
                "{}; '{}' was not delivered there",
                why.message, frame.header.action
            ),
        };
        // Sent with the others of the news it came in (see on_remote).
        self.reports
            .add(sender(&frame.header), &frame.header, None, why);
    }
}
