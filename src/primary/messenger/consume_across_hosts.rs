//! `consume` across hosts (option `redis`). The asking host picks where a call runs, in turn
//! among this host (if one of its workers handles the action) and the other members; a host
//! that has no handler says so and the call moves on to the next. The host that is to run it
//! first claims the call in Redis (src/remote/claims.rs), then runs it as a local consume on
//! behalf of the caller (a "proxy" requester stands for it in the local bookkeeping), and sends
//! the answer back. If that host dies first, the asking host claims the call as cancelled: if
//! it is first, the call never ran (`err.ran === false`) and never will; if not, it may have run
//! (`'unknown'`). Either way nothing runs a call twice.

use std::collections::HashMap;

use serde_json::json;

use super::proxies::{ForHost, Running};
use super::{Bound, Cx, Messenger};
use crate::channel::frame_link::{Frame, Outgoing};
use crate::errors;
use crate::primary::requests::{RequestKey, Requester, MAX_OPEN_REQUESTS};
use crate::primary::router::{Dest, Undeliverable};
use crate::primary::WorkerId;
use crate::remote::{ClaimKind, HostInfo, NOBODY_LISTENS};
use crate::wire::frames::{self, Header, Kind, FLAG_ERROR};

/// The most bytes of calls this host keeps, asked of others or waiting for their claim.
const MAX_CALL_BYTES: usize = 64 << 20;

/// A consume this host sent to another one to run.
struct Asked {
    host: HostInfo,
    /// The frame as sent (naming this host), kept to send it elsewhere if that host cannot run it.
    bytes: Vec<u8>,
    header: Header,
    /// Hosts that said they have no handler, or did not listen.
    tried: Vec<String>,
    /// Its name in the namespace, as the host that runs it claims it.
    call: String,
    /// Its claim is being set to "cancel", and why.
    cancelling: Option<Cancel>,
}

#[derive(Clone, PartialEq)]
enum Cancel {
    /// Its host died.
    HostDied,
    /// It may not have been sent (Redis did not say).
    NotSent(String),
}

/// Both sides of the consumes that cross hosts.
#[derive(Default)]
pub struct Calls {
    /// By the caller here (requester and its number).
    asked: HashMap<RequestKey, Asked>,
    asked_per_requester: HashMap<Requester, usize>,
    /// Calls of other hosts waiting for this host's claim, by call name: the caller's host, and
    /// the frame.
    claiming: HashMap<String, (HostInfo, Frame)>,
    bytes: usize,
    /// Where the next call goes, in turn.
    turn: usize,
}

/// A call's name in the namespace: the asking host's incarnation, the caller and its number.
fn call_name(origin: &HostInfo, source_id: WorkerId, correlation: u32) -> String {
    format!(
        "{}/{:016x}/{source_id}/{correlation}",
        origin.host, origin.incarnation
    )
}

impl Calls {
    fn room_for(&self, requester: Requester, size: usize) -> Result<(), Undeliverable> {
        let open = self
            .asked_per_requester
            .get(&requester)
            .copied()
            .unwrap_or(0);
        if open >= MAX_OPEN_REQUESTS || self.bytes + size > MAX_CALL_BYTES {
            return Err(Undeliverable {
                code: errors::QUEUE_FULL,
                message: "this host has too many consume calls on other hosts in flight".into(),
            });
        }
        Ok(())
    }

    fn add_asked(&mut self, key: RequestKey, asked: Asked) {
        self.bytes += asked.bytes.len();
        if let Some(old) = self.asked.insert(key, asked) {
            self.bytes -= old.bytes.len();
        } else {
            *self.asked_per_requester.entry(key.0).or_default() += 1;
        }
    }

    fn take_asked(&mut self, key: &RequestKey) -> Option<Asked> {
        let asked = self.asked.remove(key)?;
        self.bytes -= asked.bytes.len();
        if let Some(open) = self.asked_per_requester.get_mut(&key.0) {
            *open -= 1;
            if *open == 0 {
                self.asked_per_requester.remove(&key.0);
            }
        }
        Some(asked)
    }

    /// The requester leaves: nobody waits for its calls on other hosts any more.
    pub fn forget_requester(&mut self, requester: Requester) {
        let keys: Vec<RequestKey> = self
            .asked
            .keys()
            .filter(|key| key.0 == requester)
            .copied()
            .collect();
        for key in keys {
            self.take_asked(&key);
        }
    }
}

/// Where a consume goes.
enum Pick {
    Here,
    Host(HostInfo),
    Nowhere,
}

impl Messenger {
    /// A consume, when the cluster spans hosts: here or on another host, in turn. Returns the
    /// frame if it is to run here.
    pub(super) fn consume_across_hosts(
        &mut self,
        cx: &mut Cx<'_>,
        from: Option<WorkerId>,
        frame: Frame,
    ) -> Option<Frame> {
        let handled_here = self.router.handles(&frame.header.action);
        match self.pick_host(handled_here, &[]) {
            Pick::Here | Pick::Nowhere => Some(frame),
            Pick::Host(host) => {
                let header = frame.header.clone();
                let bytes = match self.for_other_hosts(&header, &Outgoing::new(frame)) {
                    Ok(bytes) => bytes,
                    Err(why) => {
                        self.undeliverable(cx, from, &header, why);
                        return None;
                    }
                };
                let hosts = self.hosts.as_mut()?;
                if let Err(why) = hosts.calls.room_for(from, bytes.len()) {
                    self.undeliverable(cx, from, &header, why);
                    return None;
                }
                let call = call_name(&hosts.remote.me(), from.unwrap_or(0), header.correlation);
                let asked = Asked {
                    host,
                    bytes,
                    header,
                    tried: Vec::new(),
                    call,
                    cancelling: None,
                };
                self.ask(cx, (from, asked.header.correlation), asked);
                None
            }
        }
    }

    /// The next host to run a consume, in turn: this one (if it handles it) or a member not
    /// tried yet.
    fn pick_host(&mut self, handled_here: bool, tried: &[String]) -> Pick {
        let Some(hosts) = &mut self.hosts else {
            return Pick::Here;
        };
        let mut choices: Vec<Option<HostInfo>> = Vec::new();
        if handled_here && !tried.contains(&hosts.me) {
            choices.push(None);
        }
        let mut members = hosts.remote.hosts();
        members.sort();
        choices.extend(
            members
                .into_iter()
                .filter(|m| !tried.contains(&m.host))
                .map(Some),
        );
        if choices.is_empty() {
            return Pick::Nowhere;
        }
        hosts.calls.turn = hosts.calls.turn.wrapping_add(1);
        match choices.swap_remove(hosts.calls.turn % choices.len()) {
            None => Pick::Here,
            Some(host) => Pick::Host(host),
        }
    }

    /// Sends a consume to `asked.host`; what fails at once moves on to another host.
    fn ask(&mut self, cx: &mut Cx<'_>, key: RequestKey, asked: Asked) {
        let Some(hosts) = &mut self.hosts else {
            return;
        };
        match hosts.remote.send(&asked.host.host, asked.bytes.clone()) {
            Ok(()) => hosts.calls.add_asked(key, asked),
            Err(error) => {
                let why = super::not_sent::not_sent(
                    error,
                    &asked.header.action,
                    &format!("host '{}'", asked.host.host),
                );
                self.try_elsewhere(cx, key, asked, why);
            }
        }
    }

    /// `asked.host` will not run the call (no handler there, nobody listening, refused): the
    /// next host, this one included, or `why` to the caller if none is left.
    fn try_elsewhere(
        &mut self,
        cx: &mut Cx<'_>,
        key: RequestKey,
        mut asked: Asked,
        why: Undeliverable,
    ) {
        asked.tried.push(asked.host.host.clone());
        let handled_here = self.router.handles(&asked.header.action);
        match self.pick_host(handled_here, &asked.tried) {
            Pick::Host(host) => {
                asked.host = host;
                self.ask(cx, key, asked);
            }
            Pick::Here => match frames::with_host(&asked.bytes, None)
                .map_err(|e| e.to_string())
                .and_then(|bytes| frames::parse(bytes).map_err(|e| e.to_string()))
            {
                Ok(frame) => self.start_request_here(cx, key.0, frame),
                Err(_) => self.undeliverable(cx, key.0, &asked.header, why),
            },
            Pick::Nowhere => self.undeliverable(cx, key.0, &asked.header, why),
        }
    }

    /// What came back from another host about a call: its answer, or why it did not run there.
    /// The frame comes back if it is about no call this host asked of that host.
    pub(super) fn answer_from_host(
        &mut self,
        cx: &mut Cx<'_>,
        from: &HostInfo,
        frame: Frame,
    ) -> Result<(), Frame> {
        let key = (super::requester_of(&frame.header), frame.header.correlation);
        let Some(hosts) = &mut self.hosts else {
            return Err(frame);
        };
        let is_ours = hosts
            .calls
            .asked
            .get(&key)
            .is_some_and(|asked| asked.host.host == from.host);
        if !is_ours {
            return Err(frame);
        }
        let Some(asked) = hosts.calls.take_asked(&key) else {
            return Err(frame);
        };
        let header = frame.header.clone();
        if header.kind == Kind::Undeliverable && asked.cancelling.is_none() {
            if let Ok(why) = serde_json::from_slice::<serde_json::Value>(frame.payload()) {
                if why["code"] == errors::NO_HANDLER || why["code"] == errors::UNKNOWN_TARGET {
                    let why = Undeliverable {
                        code: errors::NO_HANDLER,
                        message: format!("no app worker of any host handles '{}'", header.action),
                    };
                    self.try_elsewhere(cx, key, asked, why);
                    return Ok(());
                }
            }
        }
        let to = key.0.map_or(Dest::Primary, Dest::Worker);
        // A caller that has gone needs no answer.
        let _ = self.deliver(cx, to, &Outgoing::new(frame), &header, Bound::Waived);
        Ok(())
    }

    /// A consume this host sent did not reach its host's inbox: nobody has it, it may go
    /// elsewhere. Returns the bytes back if it is no such call.
    pub(super) fn call_not_delivered(
        &mut self,
        cx: &mut Cx<'_>,
        bytes: Vec<u8>,
        reason: &str,
        why: Undeliverable,
    ) -> Option<Vec<u8>> {
        let Ok(frame) = frames::parse::<()>(bytes.clone()) else {
            return Some(bytes);
        };
        let header = &frame.header;
        if header.kind != Kind::Request {
            return Some(bytes);
        }
        let key = (
            (header.source_id != 0).then_some(header.source_id),
            header.correlation,
        );
        let hosts = self.hosts.as_mut()?;
        let Some(asked) = hosts.calls.asked.get_mut(&key) else {
            return Some(bytes);
        };
        if asked.cancelling.is_some() {
            return None;
        }
        if reason != NOBODY_LISTENS {
            // It may have arrived: it goes nowhere else unless its claim says it never will run.
            asked.cancelling = Some(Cancel::NotSent(reason.to_owned()));
            hosts.remote.cancel_claim(asked.call.clone());
            return None;
        }
        if let Some(asked) = hosts.calls.take_asked(&key) {
            self.try_elsewhere(cx, key, asked, why);
        }
        None
    }

    /// Another host died (or left, or restarted): the calls it had are cancelled, each settled
    /// once its claim says whether it may have run.
    pub(super) fn calls_host_gone(&mut self, host: &HostInfo) {
        let Some(hosts) = &mut self.hosts else {
            return;
        };
        for asked in hosts.calls.asked.values_mut() {
            if asked.host != *host {
                continue;
            }
            // A cancel already on its way says, when it comes back, that the host died.
            if asked.cancelling.replace(Cancel::HostDied).is_none() {
                hosts.remote.cancel_claim(asked.call.clone());
            }
        }
    }

    /// The outcome of a claim this host tried.
    pub(super) fn on_claim(
        &mut self,
        cx: &mut Cx<'_>,
        call: String,
        kind: ClaimKind,
        outcome: Result<bool, String>,
    ) {
        match kind {
            ClaimKind::Run => self.claimed(cx, call, outcome),
            ClaimKind::Cancel => self.cancelled(cx, &call, outcome),
        }
    }

    /// This host tried to claim a call of another host: it runs it only if the claim is its own.
    fn claimed(&mut self, cx: &mut Cx<'_>, call: String, outcome: Result<bool, String>) {
        let Some(hosts) = &mut self.hosts else {
            return;
        };
        let Some((origin, frame)) = hosts.calls.claiming.remove(&call) else {
            return;
        };
        hosts.calls.bytes -= frame.bytes.len();
        match outcome {
            Ok(true) => {
                let proxy = hosts.proxies.open(ForHost {
                    origin,
                    source_id: frame.header.source_id,
                    correlation: frame.header.correlation,
                    what: Running::Consume { call },
                });
                self.start_request_here(cx, Some(proxy), frame);
            }
            // Its caller gave up on it first.
            Ok(false) => {}
            Err(reason) => {
                let why = Undeliverable {
                    code: errors::REMOTE_UNAVAILABLE,
                    message: format!(
                        "host '{}' could not claim '{}' in Redis ({reason}); it did not run it",
                        hosts.me, frame.header.action
                    ),
                };
                self.tell_origin(cx, &origin.host, &frame.header, why);
            }
        }
    }

    /// The host that had a call of this host died, and the call's claim was tried as "cancel":
    /// the caller learns whether the call may have run.
    fn cancelled(&mut self, cx: &mut Cx<'_>, call: &str, outcome: Result<bool, String>) {
        let Some(hosts) = &mut self.hosts else {
            return;
        };
        let key = hosts
            .calls
            .asked
            .iter()
            .find(|(_, asked)| asked.cancelling.is_some() && asked.call == call)
            .map(|(key, _)| *key);
        let Some(key) = key else {
            return;
        };
        let Some(mut asked) = hosts.calls.take_asked(&key) else {
            return;
        };
        let action = &asked.header.action;
        let host = &asked.host;
        if let Some(Cancel::NotSent(reason)) = asked.cancelling.clone() {
            let (ran, message) = match outcome {
                // It arrived, and runs there: its answer will come.
                Ok(false) => {
                    asked.cancelling = None;
                    hosts.calls.add_asked(key, asked);
                    return;
                }
                Ok(true) => (
                    json!(false),
                    format!("'{action}' could not be sent to host '{}' ({reason}); it will not run", host.host),
                ),
                Err(why) => (
                    json!("unknown"),
                    format!("'{action}' may not have reached host '{}' ({reason}), and Redis could not say whether it runs ({why})", host.host),
                ),
            };
            let payload = json!({ "code": errors::REMOTE_UNAVAILABLE, "message": message, "ran": ran, "host": host.host });
            return self.write_frame(
                cx,
                key.0,
                Kind::Reply,
                FLAG_ERROR,
                (0, 0),
                key.1,
                &asked.header.action.clone(),
                payload.to_string(),
            );
        }
        let (ran, message) = match outcome {
            Ok(true) => (
                json!(false),
                format!("host '{}' died before it ran '{action}'; it will not run it", host.host),
            ),
            Ok(false) => (
                json!("unknown"),
                format!("host '{}' (incarnation {:016x}) died while it ran '{action}'", host.host, host.incarnation),
            ),
            Err(reason) => (
                json!("unknown"),
                format!("host '{}' died with '{action}', and Redis could not say whether it ran it ({reason})", host.host),
            ),
        };
        let payload =
            json!({ "code": errors::HOST_DIED, "message": message, "ran": ran, "host": host.host });
        self.write_frame(
            cx,
            key.0,
            Kind::Reply,
            FLAG_ERROR,
            (0, 0),
            key.1,
            action,
            payload.to_string(),
        );
    }

    /// A consume from another host, for this one to run: claimed first, run once claimed.
    pub(super) fn run_for_host(&mut self, cx: &mut Cx<'_>, from: &HostInfo, frame: Frame) {
        let header = frame.header.clone();
        if !self.router.handles(&header.action) {
            let why = Undeliverable {
                code: errors::NO_HANDLER,
                message: format!("no app worker handles '{}'", header.action),
            };
            return self.tell_origin(cx, &from.host, &header, why);
        }
        let Some(hosts) = &mut self.hosts else {
            return;
        };
        let call = call_name(from, header.source_id, header.correlation);
        let busy = hosts.calls.claiming.len() + hosts.proxies.count() >= MAX_OPEN_REQUESTS
            || hosts.calls.bytes + frame.bytes.len() > MAX_CALL_BYTES;
        if busy
            || hosts.calls.claiming.contains_key(&call)
            || hosts
                .proxies
                .runs(&from.host, header.source_id, header.correlation)
        {
            let why = Undeliverable {
                code: errors::QUEUE_FULL,
                message: format!(
                    "host '{}' has too many calls of other hosts in flight",
                    hosts.me
                ),
            };
            return self.tell_origin(cx, &from.host, &header, why);
        }
        hosts.calls.bytes += frame.bytes.len();
        hosts
            .calls
            .claiming
            .insert(call.clone(), (from.clone(), frame));
        hosts.remote.claim(call);
    }
}
