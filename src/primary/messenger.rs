//! The primary's side of the messenger: children join, frames are routed on their header
//! (src/primary/router.rs decides where), and consume/map requests are followed until every
//! process asked has answered or died, so that a request never hangs and never runs twice
//! (src/primary/requests.rs decides how; this module writes what it decides).
//! See docs/messenger-frames.md.

mod across_hosts;
mod agent_across_hosts;
mod consume_across_hosts;
mod map_across_hosts;
mod not_sent;
mod proxies;
mod random_across_hosts;

use std::collections::HashMap;
use std::fmt::Write;

use nix::sys::signal::Signal;
use serde_json::json;

use super::child_command::WorkerKind;
use super::events::{Event, EventQueue};
use super::requests::{Decision, RequestKey, Requests, Source};
use super::router::{Dest, Router, Undeliverable};
use super::timers::{Timer, Timers};
use super::workers::Workers;
use super::WorkerId;
use crate::channel::frame_link::{Frame, FrameEvent, Outgoing, SendError, ENTRY_OVERHEAD};
use crate::errors;
use crate::wire::frames::{self, Header, Kind, Target, FLAG_ANSWER_HERE, FLAG_ERROR};

/// How long after a child's exit its channel may take to drain before its requests are settled.
const DRAIN_AFTER_EXIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A child's messenger queue may hold this many bytes, or two of the largest frames.
const MIN_FRAME_QUEUE: usize = 64 << 20;

/// What was sent to children while the cluster was starting, delivered once it is up.
#[derive(Default)]
pub struct Held {
    frames: Vec<(Option<WorkerId>, Frame)>,
    bytes: usize,
}

/// The most the primary keeps for one child that has not opened its messenger yet (or never
/// will: a worker that does not load rcluster).
const MAX_BEFORE_HELLO: usize = 8 << 20;

/// The most the primary holds for a starting cluster.
const MAX_HELD_BYTES: usize = 64 << 20;

/// Messages that did not fit a receiver's queue, reported to their senders once the batch they
/// came in is routed: those from one sender to one receiver for one action are one report with a
/// count, so that a flood against a full queue costs its sender a few reports.
#[derive(Default)]
pub struct Reports(Vec<Report>);

struct Report {
    to: Option<WorkerId>,
    about: Header,
    /// None: the other hosts (option `redis`).
    receiver: Option<Dest>,
    why: Undeliverable,
    count: u64,
    /// Stands for messages of other actions too: a batch of many actions has at most
    /// MAX_REPORTS reports, whatever the sender made up.
    others: bool,
}

impl Reports {
    fn add(
        &mut self,
        to: Option<WorkerId>,
        about: &Header,
        receiver: Option<Dest>,
        why: Undeliverable,
    ) {
        let same = |r: &&mut Report| {
            r.to == to
                && r.receiver == receiver
                && r.why.code == why.code
                && (r.others || r.about.action == about.action)
        };
        if let Some(report) = self.0.iter_mut().rev().find(same) {
            report.count += 1;
            return;
        }
        if self.0.len() >= MAX_REPORTS {
            // The first report of this sender and receiver now stands for the rest as well.
            if let Some(report) = self
                .0
                .iter_mut()
                .find(|r| r.to == to && r.receiver == receiver && r.why.code == why.code)
            {
                report.count += 1;
                report.others = true;
                return;
            }
        }
        self.0.push(Report {
            to,
            about: about.clone(),
            receiver,
            why,
            count: 1,
            others: false,
        });
    }
}

const MAX_REPORTS: usize = 256;

/// Whether a frame may be queued past its receiver's bound (see FrameLink::send_past_bound).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bound {
    Applies,
    /// The primary's news to a process about what it sent: never dropped.
    Waived,
}

/// The requester named by a Received or Reply frame.
fn requester_of(header: &Header) -> Option<WorkerId> {
    match header.target {
        Target::Primary => None,
        _ => Some(header.target_id),
    }
}

/// The primary's pid, which its own frames carry: read once (every call is a system call).
fn own_pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// The worker a destination names, if it is one.
fn worker_of(dest: Dest) -> Option<WorkerId> {
    match dest {
        Dest::Worker(id) => Some(id),
        Dest::Primary => None,
    }
}

/// The messenger's state: who is a member and handles what, what is held or followed.
pub struct Messenger {
    router: Router,
    /// Frames sent to children before the cluster was up.
    held: Held,
    /// Children that exited while their messenger channel may still hold frames: pid and kind.
    departing: HashMap<WorkerId, (u32, WorkerKind)>,
    /// The consume and map requests followed until answered, with the frame of a consume that
    /// may still move.
    requests: Requests<Outgoing>,
    /// Messages that did not fit their receivers' queues, to report.
    reports: Reports,
    /// The largest frame a child may send.
    max_frame: usize,
    /// Workers that said `rcluster.ready()` on this channel, for the loop to take.
    ready_signals: Vec<WorkerId>,
    /// Messages, requests and replies routed since the cluster started (the metrics).
    routed: u64,
    /// The other hosts of the namespace (option `redis`).
    hosts: Option<across_hosts::AcrossHosts>,
}

/// What the messenger works with, lent by the loop for one call.
pub struct Cx<'a> {
    pub workers: &'a mut Workers,
    pub events: &'a EventQueue,
    pub timers: &'a mut Timers,
    /// The cluster is starting: what is addressed to children is held until it is up.
    pub starting: bool,
}

impl Messenger {
    /// `max_message`: the largest payload a process may send (`maxMessageSize`).
    pub fn new(max_message: usize, seed: u64) -> Self {
        Messenger {
            router: Router::new(seed),
            held: Held::default(),
            departing: HashMap::new(),
            requests: Requests::default(),
            reports: Reports::default(),
            max_frame: max_message
                + frames::PREFIX_LEN
                + frames::HEADER_LEN
                + frames::MAX_ACTION_LEN,
            ready_signals: Vec::new(),
            routed: 0,
            hosts: None,
        }
    }

    /// Messages, requests and replies routed so far, whether or not each reached its receivers.
    pub fn routed(&self) -> u64 {
        self.routed
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// What may wait for one process, its messenger queue: a child's, or the primary's own.
    pub fn queue_limit(&self) -> usize {
        MIN_FRAME_QUEUE.max(2 * self.max_frame)
    }

    /// A child with a messenger channel: a target from the start. What is sent to it before it
    /// opens its messenger waits for it (see `on_hello`).
    pub fn join(&mut self, id: WorkerId, pid: u32, kind: WorkerKind) {
        self.router.join(id, pid, kind);
    }

    /// The primary's JavaScript added or removed a handler.
    pub fn primary_handler(&mut self, action: &str, on: bool) {
        self.router.handler(None, action, on);
    }

    /// The workers that said they are ready since the last call.
    pub fn take_ready_signals(&mut self) -> Vec<WorkerId> {
        std::mem::take(&mut self.ready_signals)
    }

    pub fn on_frames(&mut self, cx: &mut Cx<'_>, id: WorkerId, event: FrameEvent) {
        match event {
            FrameEvent::Frames(batch) => {
                // The link reads on once `batch` is dropped, after this.
                for frame in batch.frames {
                    self.route_frame(cx, Some(id), frame);
                }
                self.send_reports(cx);
            }
            FrameEvent::ProtocolError(why) => self.broke_protocol(cx, id, &why),
            FrameEvent::Closed => self.member_gone(cx, id),
        }
    }

    /// A child that broke the frame format is replaced; nothing more of it is read.
    fn broke_protocol(&mut self, cx: &mut Cx<'_>, id: WorkerId, why: &str) {
        let pid = cx.workers.get(&id).map_or(0, |w| w.process.pid());
        cx.events.warn(
            Some(id),
            errors::PROTOCOL,
            format!("worker {id} (pid {pid}) broke the messenger protocol: {why}; it is replaced"),
        );
        self.member_gone(cx, id);
        if let Some(w) = cx.workers.get_mut(&id) {
            w.frames = None;
            let _ = w.process.signal(Signal::SIGKILL);
        }
    }

    /// Routes a frame from a child (`Some(id)`) or the primary (`None`).
    pub fn route_frame(&mut self, cx: &mut Cx<'_>, from: Option<WorkerId>, mut frame: Frame) {
        match from {
            Some(id) => {
                // A child that has exited may still have frames in its channel.
                let Some((pid, kind)) = self
                    .router
                    .source(id)
                    .or_else(|| self.departing.get(&id).copied())
                else {
                    return;
                };
                self.on_hello(cx, id);
                frame.set_source(id, pid, kind == WorkerKind::Agent);
            }
            None => frame.set_source(0, own_pid(), false),
        }
        // Counted once: one held at startup is counted when it is released and routed.
        let held = cx.starting && frame.header.target != Target::Primary;
        let counts = match frame.header.kind {
            Kind::Message => !frame.header.action.is_empty() && !held,
            Kind::Request => !held,
            Kind::Reply => true,
            _ => false,
        };
        self.routed += u64::from(counts);
        // Only a message or a request names a host: a reply or a subscription that does would
        // show a receiver a host it did not come from.
        if frame.header.host.is_some()
            && !matches!(frame.header.kind, Kind::Message | Kind::Request)
        {
            let answer = matches!(frame.header.kind, Kind::Reply | Kind::Received);
            match from {
                // A worker's receipt or answer for a consume of another host goes to the proxy
                // that stands for its caller here; one for a call that is over is dropped.
                Some(id) if answer => match self.to_proxy(&frame.header) {
                    Some(proxy) => {
                        frame.header.host = None;
                        frame.header.target = Target::One;
                        frame.header.target_id = proxy;
                    }
                    // The call ends with its answer, and a worker answers once.
                    None => {
                        return self.broke_protocol(
                            cx,
                            id,
                            "an answer that names a host must answer a call of that host",
                        )
                    }
                },
                Some(id) => {
                    return self.broke_protocol(
                        cx,
                        id,
                        "only a message, a request or its answer may name a host",
                    )
                }
                None => return,
            }
        }
        match frame.header.kind {
            // The empty action is the child's hello: it has joined, nothing more.
            Kind::Subscribe if frame.header.action.is_empty() => {}
            Kind::Subscribe | Kind::Unsubscribe => {
                let on = frame.header.kind == Kind::Subscribe;
                self.router.handler(from, &frame.header.action, on);
            }
            // A message with no action is `rcluster.ready()`: on this channel it arrives after
            // the handlers the child registered before it, so a ready worker can be asked.
            Kind::Message if frame.header.action.is_empty() => {
                if let Some(id) = from {
                    self.ready_signals.push(id);
                }
            }
            // Only the primary writes these.
            Kind::Undeliverable | Kind::Expect => {}
            Kind::Received => {
                if let Some(id) = from {
                    let key = (requester_of(&frame.header), frame.header.correlation);
                    self.requests.received(key, id);
                }
            }
            Kind::Reply => self.forward_reply(cx, from, frame),
            // `sendTo({ host, id })`: for another host, held at startup like the rest, whatever
            // its target (a frame naming a host never reaches a receiver as it came).
            Kind::Message | Kind::Request if frame.header.host.is_some() => {
                if cx.starting {
                    self.hold(cx, from, frame)
                } else {
                    self.send_to_host(cx, from, frame)
                }
            }
            // Nothing is lost at startup: what is addressed to children waits until all are up.
            Kind::Message | Kind::Request
                if cx.starting && frame.header.target != Target::Primary =>
            {
                self.hold(cx, from, frame)
            }
            // With one agent in the namespace, it may be on another host, or between hosts.
            Kind::Message if frame.header.target == Target::Agent && self.agent_spans_hosts() => {
                self.send_to_agent(cx, from, frame)
            }
            // Prefer this host: another one only if no worker here handles it.
            Kind::Message
                if frame.header.target == Target::RandomApp
                    && self.hosts.is_some()
                    && !self.router.handles(&frame.header.action) =>
            {
                self.send_random_elsewhere(from, frame)
            }
            Kind::Request if matches!(frame.header.target, Target::AnyApp | Target::Apps) => {
                self.start_request(cx, from, frame)
            }
            Kind::Message | Kind::Request => self.route_message(cx, from, frame),
        }
        // The primary's own sends are routed one by one: report at once.
        if from.is_none() {
            self.send_reports(cx);
        }
    }

    fn route_message(&mut self, cx: &mut Cx<'_>, from: Option<WorkerId>, frame: Frame) {
        if let Some((header, out)) = self.route_here(cx, from, frame) {
            self.send_to_other_hosts(from, &header, &out);
        }
    }

    /// Routes a message to the processes of this host; returns it for the other hosts.
    fn route_here(
        &mut self,
        cx: &mut Cx<'_>,
        from: Option<WorkerId>,
        frame: Frame,
    ) -> Option<(Header, Outgoing)> {
        let dests = match self.router.route(&frame.header) {
            Ok(dests) => dests,
            Err(why) => {
                self.undeliverable(cx, from, &frame.header, why);
                return None;
            }
        };
        let header = frame.header.clone();
        let out = Outgoing::new(frame);
        for dest in dests {
            if let Err(why) = self.deliver(cx, dest, &out, &header, Bound::Applies) {
                if why.code == errors::QUEUE_FULL {
                    self.report_full(from, &header, dest, why);
                } else {
                    self.undeliverable(cx, from, &header, why);
                }
            }
        }
        Some((header, out))
    }

    /// `about` did not fit `receiver`'s queue: its sender will be told, with the others like it.
    fn report_full(
        &mut self,
        to: Option<WorkerId>,
        about: &Header,
        receiver: Dest,
        why: Undeliverable,
    ) {
        self.reports.add(to, about, Some(receiver), why);
    }

    /// Sends the reports gathered while a batch was routed (see Reports).
    fn send_reports(&mut self, cx: &mut Cx<'_>) {
        for report in std::mem::take(&mut self.reports.0) {
            let Report {
                to,
                about,
                receiver,
                why,
                count,
                others,
            } = report;
            let receiver = receiver.map(|receiver| match receiver {
                Dest::Primary => (0, own_pid()),
                Dest::Worker(id) => (id, self.router.source(id).map_or(0, |(pid, _)| pid)),
            });
            let message = if others {
                format!(
                    "{}; with it, {count} messages of this and other actions were not delivered",
                    why.message
                )
            } else if count == 1 {
                why.message
            } else {
                // "...; 'x' was not delivered to it" becomes "...; 57 messages 'x' were not ...".
                why.message.replacen(
                    &format!("; '{}' was not", about.action),
                    &format!("; {count} messages '{}' were not", about.action),
                    1,
                )
            };
            let mut payload = json!({
                "code": why.code,
                "message": message,
                "count": count,
            });
            if let Some((id, pid)) = receiver {
                payload["workerId"] = json!(id);
                payload["pid"] = json!(pid);
            }
            let payload = payload.to_string();
            self.send_from_primary(cx, to, Kind::Undeliverable, FLAG_ERROR, &about, payload);
        }
    }

    /// consume (target AnyApp) or map (target Apps): deliver, and follow until answered. When
    /// the cluster spans hosts, a consume may run on another host, and a map runs on all.
    fn start_request(&mut self, cx: &mut Cx<'_>, from: Option<WorkerId>, frame: Frame) {
        if self.hosts.is_none() {
            return self.start_request_here(cx, from, frame);
        }
        if frame.header.target == Target::AnyApp {
            if let Some(frame) = self.consume_across_hosts(cx, from, frame) {
                self.start_request_here(cx, from, frame);
            }
            return;
        }
        let key = (from, frame.header.correlation);
        let action = frame.header.action.clone();
        if let Some((frame, failed)) = self.map_across_hosts(cx, from, frame) {
            self.start_request_here(cx, from, frame);
            // After the caller's first list, which names these hosts.
            for (host, why) in failed {
                self.part_failed(cx, key, &host, &action, why);
            }
        }
    }

    /// A request for the workers of this host.
    fn start_request_here(&mut self, cx: &mut Cx<'_>, from: Option<WorkerId>, frame: Frame) {
        if let Err(why) = self.requests.room_for(from) {
            return self.undeliverable(cx, from, &frame.header, why);
        }
        let dests = match self.router.route(&frame.header) {
            Ok(dests) => dests,
            Err(why) => return self.undeliverable(cx, from, &frame.header, why),
        };
        let header = frame.header.clone();
        let out = Outgoing::new(frame);
        let targets: Vec<WorkerId> = dests.into_iter().filter_map(worker_of).collect();
        if header.target == Target::Apps {
            self.expect(cx, from, &header, &targets);
        }
        let key = (from, header.correlation);
        self.requests
            .open(from, header.clone(), out.clone(), &targets);
        for id in targets {
            match self.deliver(cx, Dest::Worker(id), &out, &header, Bound::Applies) {
                Err(why) => self.undelivered(cx, key, id, why),
                // A map's requester answers its own copy itself (FLAG_ANSWER_HERE). (A consume
                // that goes to its requester is answered through the primary like any other.)
                Ok(()) if header.target == Target::Apps && from == Some(id) => {
                    self.requests.answered_here(key)
                }
                Ok(()) => {}
            }
        }
    }

    /// A map's requester learns whose answers to wait for before any answer arrives, and
    /// whether it is one of them: then it answers its own copy without sending the answer.
    fn expect(
        &mut self,
        cx: &mut Cx<'_>,
        from: Option<WorkerId>,
        header: &Header,
        targets: &[WorkerId],
    ) {
        // `[[id, pid], ...]`, written out: one is made for every map, and a list of numbers needs
        // no JSON values built and dropped.
        let mut expected = String::with_capacity(2 + targets.len() * 20);
        expected.push('[');
        for (i, id) in targets.iter().enumerate() {
            let comma = if i == 0 { "" } else { "," };
            let _ = write!(expected, "{comma}[{id},{}]", self.pid_of(*id));
        }
        expected.push(']');
        // Across hosts, it also names this host and the others whose lists will follow.
        let payload = match self.map_hosts(&(from, header.correlation)) {
            Some((me, hosts)) => format!(
                r#"{{"host":{},"workers":{expected},"hosts":{}}}"#,
                json!(me),
                json!(hosts)
            ),
            None => expected,
        };
        let answer_here = from.is_some_and(|id| targets.contains(&id));
        let flags = if answer_here { FLAG_ANSWER_HERE } else { 0 };
        self.send_from_primary(cx, from, Kind::Expect, flags, header, payload);
    }

    fn forward_reply(&mut self, cx: &mut Cx<'_>, from: Option<WorkerId>, frame: Frame) {
        let requester = requester_of(&frame.header);
        let key = (requester, frame.header.correlation);
        let Some(id) = from else {
            return;
        };
        let Decision::Forward { to } = self.requests.answered(key, id) else {
            return;
        };
        let dest = to.map_or(Dest::Primary, Dest::Worker);
        let header = frame.header.clone();
        // A requester that has gone needs no answer. One that does not read what it is sent
        // gets, past its bound, a short error in place of the answer that did not fit.
        if let Err(why) = self.deliver(cx, dest, &Outgoing::new(frame), &header, Bound::Applies) {
            if why.code == errors::QUEUE_FULL {
                let pid = self.pid_of(id);
                let why = Undeliverable {
                    code: why.code,
                    message: format!(
                        "the answer of worker {id} (pid {pid}) to '{}' did not fit this process's messenger queue: {}",
                        header.action, why.message
                    ),
                };
                self.answer_in_name_of(cx, key, (id, pid), &header.action, why);
            }
        }
    }

    /// A child exited. Nothing more is routed to it, but what it wrote before it died is still
    /// read: its requests are settled once its channel has been drained (FrameEvent::Closed),
    /// so that a consume it acknowledged is never run again elsewhere.
    pub fn member_exited(&mut self, cx: &mut Cx<'_>, id: WorkerId) {
        let Some(source) = self.router.source(id) else {
            return;
        };
        self.router.leave(id);
        self.departing.insert(id, source);
        let has_link = cx.workers.get(&id).is_some_and(|w| w.frames.is_some());
        if has_link {
            // Should its channel outlive it (a grandchild holding the descriptor), settle anyway.
            cx.timers
                .after(DRAIN_AFTER_EXIT, Timer::MessengerDrained { id });
        } else {
            self.member_gone(cx, id);
        }
    }

    /// An exited child's channel had its time to drain (its `Closed` may never come if a
    /// grandchild holds the descriptor).
    pub fn drained(&mut self, cx: &mut Cx<'_>, id: WorkerId) {
        if self.departing.contains_key(&id) {
            self.member_gone(cx, id);
        }
    }

    /// The child's channel is drained (or it broke the protocol): its requests are settled.
    pub fn member_gone(&mut self, cx: &mut Cx<'_>, id: WorkerId) {
        let pid = self
            .router
            .source(id)
            .or_else(|| self.departing.remove(&id))
            .map_or(0, |(pid, _)| pid);
        self.router.leave(id);
        self.forget_calls_of(Some(id));
        let router = &mut self.router;
        let decisions = self.requests.gone((id, pid), |header| {
            router.route(header).ok()?.into_iter().find_map(worker_of)
        });
        for decision in decisions {
            self.carry_out(cx, decision);
        }
    }

    /// The request could not be written to `id`: the requester gets why, in `id`'s name.
    fn undelivered(&mut self, cx: &mut Cx<'_>, key: RequestKey, id: WorkerId, why: Undeliverable) {
        let decision = self.requests.undelivered(key, (id, self.pid_of(id)), why);
        self.carry_out(cx, decision);
    }

    /// Writes what the requests' bookkeeping decided about a worker gone or not written to.
    fn carry_out(&mut self, cx: &mut Cx<'_>, decision: Decision<Outgoing>) {
        match decision {
            Decision::MoveTo {
                worker,
                request,
                header,
                frame,
            } => {
                let to = Dest::Worker(worker);
                if let Err(why) = self.deliver(cx, to, &frame, &header, Bound::Applies) {
                    self.undelivered(cx, request, worker, why);
                }
            }
            Decision::AnswerInNameOf {
                request,
                source,
                action,
                why,
            } => self.answer_in_name_of(cx, request, source, &action, why),
            // Answers are forwarded by forward_reply, which has their frame.
            Decision::Forward { .. } | Decision::Nothing => {}
        }
    }

    /// An error answer to a request, written as if `source` had sent it.
    fn answer_in_name_of(
        &mut self,
        cx: &mut Cx<'_>,
        key: RequestKey,
        source: Source,
        action: &str,
        why: Undeliverable,
    ) {
        let payload = json!({ "code": why.code, "message": why.message }).to_string();
        self.write_frame(
            cx,
            key.0,
            Kind::Reply,
            FLAG_ERROR,
            source,
            key.1,
            action,
            payload,
        );
    }

    fn pid_of(&self, id: WorkerId) -> u32 {
        self.router.source(id).map_or(0, |(pid, _)| pid)
    }

    /// Writes a frame to one process: a child's queue, or the primary's JavaScript.
    /// `header` is the header of `out`.
    fn deliver(
        &mut self,
        cx: &mut Cx<'_>,
        dest: Dest,
        out: &Outgoing,
        header: &Header,
        bound: Bound,
    ) -> Result<(), Undeliverable> {
        let action = &header.action;
        match dest {
            Dest::Primary => {
                let (waiting, limit) = (cx.events.frame_bytes(), self.queue_limit());
                let cost = out.weight + ENTRY_OVERHEAD;
                if bound == Bound::Applies && waiting > 0 && waiting + cost > limit {
                    return Err(Undeliverable {
                        code: errors::QUEUE_FULL,
                        message: format!(
                            "the primary has {limit} bytes of messages it has not read; '{action}' was not delivered to it"
                        ),
                    });
                }
                // The primary's JavaScript takes payloads in line.
                let frame = out
                    .in_line()
                    .map_err(|e| e.to_string())
                    .and_then(|o| frames::parse(o.bytes.to_vec()).map_err(|e| e.to_string()))
                    .map_err(|why| Undeliverable {
                        code: errors::PROTOCOL,
                        message: format!(
                            "the primary could not read the payload of '{action}': {why}"
                        ),
                    })?;
                cx.events.push(Event::Frame(frame));
                Ok(())
            }
            Dest::Worker(target) if proxies::is_proxy(dest) => {
                self.answer_to_host(target, out, header)
            }
            Dest::Worker(target) => {
                let result = match cx.workers.get_mut(&target) {
                    Some(w) => match (w.before_hello.as_mut(), w.frames.as_ref()) {
                        // It has not opened its messenger yet: the frame waits, within a bound.
                        (Some((held, size)), _) => {
                            if *size + out.weight > MAX_BEFORE_HELLO {
                                return Err(Undeliverable {
                                    code: errors::QUEUE_FULL,
                                    message: format!(
                                        "worker {target} has not opened its messenger and already has {MAX_BEFORE_HELLO} bytes waiting; '{action}' was not delivered to it"
                                    ),
                                });
                            }
                            *size += out.weight;
                            held.push(out.clone());
                            Ok(())
                        }
                        (None, Some(link)) if bound == Bound::Waived => {
                            link.send_past_bound(out.clone())
                        }
                        (None, Some(link)) => link.send(out.clone()),
                        (None, None) => Err(SendError::Closed),
                    },
                    None => Err(SendError::Closed),
                };
                result.map_err(|e| match e {
                    SendError::Full { limit } => Undeliverable {
                        code: errors::QUEUE_FULL,
                        message: format!(
                            "worker {target} has {limit} bytes of messages it has not read; '{action}' was not delivered to it"
                        ),
                    },
                    SendError::Unreadable(why) => Undeliverable {
                        code: errors::PROTOCOL,
                        message: format!("the primary could not read the payload of '{action}': {why}"),
                    },
                    SendError::Closed => Undeliverable {
                        code: errors::UNKNOWN_TARGET,
                        message: format!("worker {target} has gone"),
                    },
                })
            }
        }
    }

    /// A frame the primary writes itself to `to` (None: its own JavaScript).
    fn send_from_primary(
        &mut self,
        cx: &mut Cx<'_>,
        to: Option<WorkerId>,
        kind: Kind,
        flags: u8,
        about: &Header,
        payload: String,
    ) {
        let source = (0, own_pid());
        self.write_frame(
            cx,
            to,
            kind,
            flags,
            source,
            about.correlation,
            &about.action,
            payload,
        );
    }

    /// Builds a frame in the primary and writes it to `to` (None: the primary's JavaScript).
    #[allow(clippy::too_many_arguments)]
    fn write_frame(
        &mut self,
        cx: &mut Cx<'_>,
        to: Option<WorkerId>,
        kind: Kind,
        flags: u8,
        (source_id, source_pid): (WorkerId, u32),
        correlation: u32,
        action: &str,
        payload: String,
    ) {
        let header = Header {
            kind,
            target: if to.is_some() {
                Target::One
            } else {
                Target::Primary
            },
            flags,
            target_id: to.unwrap_or(0),
            source_id,
            source_pid,
            correlation,
            action: action.to_owned(),
            host: None,
        };
        if let Ok(frame) = frames::encode(&header, payload.as_bytes()).and_then(frames::parse) {
            let dest = to.map_or(Dest::Primary, Dest::Worker);
            // A requester or sender that has gone needs no answer.
            let _ = self.deliver(cx, dest, &Outgoing::new(frame), &header, Bound::Waived);
        }
    }

    /// Tells the sender that its frame could not be delivered (same action and correlation id).
    fn undeliverable(
        &mut self,
        cx: &mut Cx<'_>,
        to: Option<WorkerId>,
        about: &Header,
        why: Undeliverable,
    ) {
        let payload = json!({ "code": why.code, "message": why.message }).to_string();
        self.send_from_primary(cx, to, Kind::Undeliverable, FLAG_ERROR, about, payload);
    }
}

/// The messenger action that tells every process the whole cluster is up (Egg.js's
/// `egg-ready`); a process that comes up later, as a replacement, is told when it is ready.
pub const CLUSTER_READY_ACTION: &str = "rcluster-ready";

impl Messenger {
    /// Sends `rcluster-ready` to every process (None) or to one that has just become ready.
    pub fn announce_ready(&mut self, cx: &mut Cx<'_>, to: Option<WorkerId>) {
        let header = Header {
            kind: Kind::Message,
            target: if to.is_some() {
                Target::One
            } else {
                Target::Broadcast
            },
            flags: 0,
            target_id: to.unwrap_or(0),
            source_id: 0,
            source_pid: 0,
            correlation: 0,
            action: CLUSTER_READY_ACTION.into(),
            host: None,
        };
        // Each host tells its own processes: this one stays here.
        if let Ok(mut frame) = frames::encode(&header, b"").and_then(frames::parse::<_>) {
            frame.set_source(0, own_pid(), false);
            self.routed += 1;
            self.route_here(cx, None, frame);
            self.send_reports(cx);
        }
    }
}

impl Messenger {
    fn hold(&mut self, cx: &mut Cx<'_>, from: Option<WorkerId>, frame: Frame) {
        let weight = frame.weight();
        if self.held.bytes + weight > MAX_HELD_BYTES {
            let why = Undeliverable {
                code: errors::QUEUE_FULL,
                message: format!(
                    "the cluster is starting and already holds {MAX_HELD_BYTES} bytes of messages for it"
                ),
            };
            return self.undeliverable(cx, from, &frame.header, why);
        }
        self.held.bytes += weight;
        self.held.frames.push((from, frame));
    }

    /// The cluster is up: what was held goes out, in the order it came.
    pub fn release_held(&mut self, cx: &mut Cx<'_>) {
        let held = std::mem::take(&mut self.held);
        for (from, frame) in held.frames {
            if from.is_none() || from.is_some_and(|id| cx.workers.contains_key(&id)) {
                self.route_frame(cx, from, frame);
            }
        }
        self.release_held_from_hosts(cx);
        // What the released frames of children could not deliver is told now, not with the
        // next batch a child happens to send.
        self.send_reports(cx);
    }
}

impl Messenger {
    /// A child's first frame: it has opened its messenger; what waited for it goes out first.
    fn on_hello(&mut self, cx: &mut Cx<'_>, id: WorkerId) {
        let Some(w) = cx.workers.get_mut(&id) else {
            return;
        };
        let Some((held, _)) = w.before_hello.take() else {
            return;
        };
        if let Some(link) = w.frames.as_ref() {
            for out in held {
                // Bounded already: at most MAX_BEFORE_HELLO bytes waited. Closed is the only
                // error left, and then the child is gone.
                let _ = link.send_past_bound(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn about(action: &str) -> Header {
        Header {
            kind: Kind::Message,
            target: Target::Broadcast,
            flags: 0,
            target_id: 0,
            source_id: 1,
            source_pid: 10,
            correlation: 0,
            action: action.into(),
            host: None,
        }
    }

    fn full() -> Undeliverable {
        Undeliverable {
            code: errors::QUEUE_FULL,
            message: "full".into(),
        }
    }

    #[test]
    fn reports_count_the_messages_of_one_sender_receiver_and_action() {
        let mut reports = Reports::default();
        for action in ["a", "b", "a", "a", "b"] {
            reports.add(Some(1), &about(action), Some(Dest::Worker(3)), full());
        }
        reports.add(Some(1), &about("a"), Some(Dest::Worker(4)), full());
        reports.add(Some(2), &about("a"), Some(Dest::Worker(3)), full());
        reports.add(None, &about("a"), Some(Dest::Primary), full());
        let seen: Vec<_> = reports
            .0
            .iter()
            .map(|r| {
                (
                    r.to,
                    r.receiver.expect("a process"),
                    r.about.action.as_str(),
                    r.count,
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (Some(1), Dest::Worker(3), "a", 3),
                (Some(1), Dest::Worker(3), "b", 2),
                (Some(1), Dest::Worker(4), "a", 1),
                (Some(2), Dest::Worker(3), "a", 1),
                (None, Dest::Primary, "a", 1),
            ]
        );
    }

    #[test]
    fn made_up_actions_cannot_multiply_the_reports() {
        let mut reports = Reports::default();
        let sent = 10 * MAX_REPORTS as u64;
        for n in 0..sent {
            reports.add(
                Some(1),
                &about(&format!("a{n}")),
                Some(Dest::Worker(3)),
                full(),
            );
        }
        reports.add(Some(1), &about("other"), Some(Dest::Worker(4)), full());
        assert!(reports.0.len() <= MAX_REPORTS + 1);
        assert_eq!(reports.0.iter().map(|r| r.count).sum::<u64>(), sent + 1);
        assert!(reports.0[0].others);
        assert_eq!(
            reports.0.last().map(|r| r.receiver),
            Some(Some(Dest::Worker(4)))
        );
    }
}
