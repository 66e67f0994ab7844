//! `sendToAgent` when the namespace has one agent (`agent: { scope: 'cluster' }`): to this
//! host's agent if it runs here, else to the host that holds the agent lease. While no host
//! does (a handover, a crash until the lease expires), what is sent waits here, in order and
//! bounded, and goes out as soon as an agent leads; past AGENT_WAIT its sender is told.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Cx, Messenger};
use crate::channel::frame_link::{Frame, Outgoing};
use crate::errors;
use crate::primary::router::Undeliverable;
use crate::primary::timers::{self, Timer};
use crate::primary::WorkerId;
use crate::remote::NOBODY_LISTENS;
use crate::wire::frames::{self, Target};

/// How long a message for the agent waits for one to lead: a crashed leader's lease (10 s by
/// default) runs out well within it.
const AGENT_WAIT: Duration = Duration::from_secs(15);

/// How often what waits looks for an agent again.
const AGENT_LOOK: Duration = Duration::from_millis(50);

/// How long a lease holder whose inbox nobody read is not sent to (a reconnect of its
/// subscription takes less; a dead one's lease expires meanwhile).
const UNREACHABLE_FOR: Duration = Duration::from_secs(1);

/// The most bytes that wait for an agent.
const MAX_WAITING_BYTES: usize = 8 << 20;

/// Messages for the namespace's agent while none leads.
#[derive(Default)]
pub struct ForAgent {
    waiting: VecDeque<(Option<WorkerId>, Frame, Instant)>,
    bytes: usize,
    /// A Timer::LookForAgent is set: one at a time, however many wait.
    looking: bool,
    /// The lease's holder (host, epoch) whose inbox nobody read (it died, and its lease has not
    /// expired yet), and until when not to try it again.
    unreachable: Option<(String, u64, Instant)>,
}

/// Where the agent is now.
enum AgentAt {
    Here,
    Host(String),
    Nowhere,
}

impl Messenger {
    /// The namespace's agent on this host is asked to stop (its lease is lost or given up): what
    /// is sent to the agent waits for the next one, or is reported to its sender, rather than
    /// written to a process about to exit.
    pub fn cluster_agent_stopping(&mut self, id: WorkerId) {
        if self.agent_spans_hosts() {
            self.router.agent_stopping(id);
        }
    }

    /// Whether `sendToAgent` goes to the namespace's one agent.
    pub(super) fn agent_spans_hosts(&self) -> bool {
        self.hosts.as_ref().is_some_and(|h| h.cluster_agent)
    }

    fn agent_at(&mut self, frame: &Frame) -> AgentAt {
        if self.router.route(&frame.header).is_ok() {
            return AgentAt::Here;
        }
        let Some(hosts) = &self.hosts else {
            return AgentAt::Nowhere;
        };
        let Some((host, epoch)) = hosts.remote.agent_leader() else {
            return AgentAt::Nowhere;
        };
        let unreachable = hosts
            .for_agent
            .unreachable
            .as_ref()
            .is_some_and(|(h, e, until)| *h == host && *e == epoch && timers::now() < *until);
        // A holder seen gone is not sent to: its lease is about to expire.
        let member = hosts.remote.hosts().iter().any(|m| m.host == host);
        if host == hosts.me || unreachable || !member {
            return AgentAt::Nowhere;
        }
        AgentAt::Host(host)
    }

    /// A message for the namespace's agent, behind any that wait.
    pub(super) fn send_to_agent(&mut self, cx: &mut Cx<'_>, from: Option<WorkerId>, frame: Frame) {
        let Some(hosts) = &mut self.hosts else {
            return;
        };
        let waiting = &mut hosts.for_agent;
        // A payload in a memory file counts for its size (Frame::weight).
        if waiting.bytes + frame.weight() > MAX_WAITING_BYTES {
            let why = Undeliverable {
                code: errors::QUEUE_FULL,
                message: format!(
                    "no host runs the agent yet, and {MAX_WAITING_BYTES} bytes of messages already wait for one"
                ),
            };
            return self.reports.add(from, &frame.header, None, why);
        }
        waiting.bytes += frame.weight();
        waiting
            .waiting
            .push_back((from, frame, timers::now() + AGENT_WAIT));
        self.look_for_agent(cx);
    }

    /// Sends what waits for the agent, in order, as far as an agent leads; sets the timer to
    /// look again while something waits.
    pub fn look_for_agent(&mut self, cx: &mut Cx<'_>) {
        loop {
            let Some(hosts) = &mut self.hosts else {
                return;
            };
            let Some((from, frame, deadline)) = hosts.for_agent.waiting.pop_front() else {
                break;
            };
            hosts.for_agent.bytes -= frame.weight();
            match self.agent_at(&frame) {
                AgentAt::Here => self.route_message(cx, from, frame),
                AgentAt::Host(host) => self.send_to_agent_host(from, &host, frame),
                AgentAt::Nowhere if timers::now() >= deadline => {
                    let why = Undeliverable {
                        code: errors::UNKNOWN_TARGET,
                        message: format!(
                            "no host of the namespace ran the agent within {} s; '{}' was not delivered",
                            AGENT_WAIT.as_secs(),
                            frame.header.action
                        ),
                    };
                    self.reports.add(from, &frame.header, None, why);
                }
                AgentAt::Nowhere => {
                    if let Some(hosts) = &mut self.hosts {
                        hosts.for_agent.bytes += frame.weight();
                        hosts.for_agent.waiting.push_front((from, frame, deadline));
                    }
                    break;
                }
            }
        }
        self.send_reports(cx);
        if let Some(hosts) = &mut self.hosts {
            let waiting = &mut hosts.for_agent;
            if !waiting.waiting.is_empty() && !waiting.looking {
                waiting.looking = true;
                cx.timers.after(AGENT_LOOK, Timer::LookForAgent);
            }
        }
    }

    /// The timer: look again.
    pub fn on_look_for_agent(&mut self, cx: &mut Cx<'_>) {
        if let Some(hosts) = &mut self.hosts {
            hosts.for_agent.looking = false;
            self.look_for_agent(cx);
        }
    }

    /// What went to the agent's host did not reach it (nobody reads its inbox: it died): it
    /// waits for the next agent. Returns the bytes back if they are not for the agent.
    pub(super) fn agent_host_unreachable(
        &mut self,
        cx: &mut Cx<'_>,
        host: &str,
        reason: &str,
        bytes: Vec<u8>,
    ) -> Option<Vec<u8>> {
        // Any other failure may have reached it: reported to its sender, not sent again.
        if !self.agent_spans_hosts() || reason != NOBODY_LISTENS {
            return Some(bytes);
        }
        let frame: Frame = match frames::parse(bytes) {
            Ok(frame) if frame.header.target == Target::Agent => frame,
            Ok(frame) => return Some(frame.bytes),
            Err(_) => return None,
        };
        let frame = match frames::with_host(&frame.bytes, None).map(frames::parse) {
            Ok(Ok(frame)) => frame,
            _ => return Some(frame.bytes),
        };
        if let Some(hosts) = &mut self.hosts {
            if let Some((leader, epoch)) = hosts.remote.agent_leader().filter(|(h, _)| h == host) {
                hosts.for_agent.unreachable =
                    Some((leader, epoch, timers::now() + UNREACHABLE_FOR));
            }
        }
        let from = (frame.header.source_id != 0).then_some(frame.header.source_id);
        self.send_to_agent(cx, from, frame);
        None
    }

    fn send_to_agent_host(&mut self, from: Option<WorkerId>, host: &str, frame: Frame) {
        let header = frame.header.clone();
        let sent = self
            .for_other_hosts(&header, &Outgoing::new(frame))
            .and_then(|bytes| {
                let Some(hosts) = &self.hosts else {
                    return Ok(());
                };
                hosts.remote.send(host, bytes).map_err(|e| {
                    super::not_sent::not_sent(
                        e,
                        &header.action,
                        &format!("the agent on host '{host}'"),
                    )
                })
            });
        if let Err(why) = sent {
            self.reports.add(from, &header, None, why);
        }
    }
}
