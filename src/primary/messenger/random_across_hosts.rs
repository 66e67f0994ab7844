//! `sendRandom` across hosts (option `redis`): a worker of this host if one handles the action
//! (the local router picks it); otherwise the other hosts in turn. A host with no handler sends
//! it back as NO_HANDLER, and it goes on to the next host; when none is left, its sender is told.
//! To send it on, this host keeps what it sent for a moment (a refusal comes back within a round
//! trip or two); past that moment, or past the bound, a refusal reaches the sender as it is.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::Messenger;
use crate::channel::frame_link::{Frame, Outgoing};
use crate::errors;
use crate::primary::requests::RequestKey;
use crate::primary::router::Undeliverable;
use crate::primary::timers;
use crate::primary::WorkerId;
use crate::wire::frames::{self, Header, Kind, Target};

/// How long a message sent to another host is kept to send it on.
const KEEP: Duration = Duration::from_secs(2);

/// The most bytes (and messages) kept.
const MAX_KEPT_BYTES: usize = 8 << 20;
const MAX_KEPT: usize = 8192;

struct Sent {
    bytes: Vec<u8>,
    header: Header,
    /// The host it went to last, and those that had no handler before.
    host: String,
    tried: Vec<String>,
    at: Instant,
}

/// What went to other hosts, kept for a moment, by sender and number; oldest first.
#[derive(Default)]
pub struct Randoms {
    sent: HashMap<RequestKey, Sent>,
    order: VecDeque<RequestKey>,
    bytes: usize,
    turn: usize,
}

impl Randoms {
    fn forget_old(&mut self, now: Instant) {
        while let Some(key) = self.order.front().copied() {
            let old = self
                .sent
                .get(&key)
                .is_none_or(|sent| now.duration_since(sent.at) >= KEEP);
            if !old {
                break;
            }
            self.order.pop_front();
            self.take(&key);
        }
    }

    fn take(&mut self, key: &RequestKey) -> Option<Sent> {
        let sent = self.sent.remove(key)?;
        self.bytes -= sent.bytes.len();
        Some(sent)
    }

    fn keep(&mut self, key: RequestKey, sent: Sent) {
        if self.sent.len() >= MAX_KEPT || self.bytes + sent.bytes.len() > MAX_KEPT_BYTES {
            return;
        }
        self.bytes += sent.bytes.len();
        if let Some(old) = self.sent.insert(key, sent) {
            self.bytes -= old.bytes.len();
        } else {
            self.order.push_back(key);
        }
    }
}

impl Messenger {
    /// `sendRandom` with no handler on this host: to another host.
    pub(super) fn send_random_elsewhere(&mut self, from: Option<WorkerId>, frame: Frame) {
        let header = frame.header.clone();
        match self.for_other_hosts(&header, &Outgoing::new(frame)) {
            Ok(bytes) => self.send_random_to_next(from, header, bytes, Vec::new()),
            Err(why) => self.reports.add(from, &header, None, why),
        }
    }

    /// Sends to the next host not tried, in turn; none left: its sender is told.
    fn send_random_to_next(
        &mut self,
        from: Option<WorkerId>,
        header: Header,
        bytes: Vec<u8>,
        tried: Vec<String>,
    ) {
        let Some(hosts) = &mut self.hosts else {
            return;
        };
        let mut members: Vec<String> = hosts
            .remote
            .hosts()
            .into_iter()
            .map(|m| m.host)
            .filter(|host| !tried.contains(host))
            .collect();
        members.sort();
        members.dedup();
        if members.is_empty() {
            let why = Undeliverable {
                code: errors::NO_HANDLER,
                message: format!("no app worker of any host handles '{}'", header.action),
            };
            return self.reports.add(from, &header, None, why);
        }
        let randoms = &mut hosts.randoms;
        randoms.turn = randoms.turn.wrapping_add(1);
        let host = members.swap_remove(randoms.turn % members.len());
        if let Err(e) = hosts.remote.send(&host, bytes.clone()) {
            let why = super::not_sent::not_sent(e, &header.action, &format!("host '{host}'"));
            return self.reports.add(from, &header, None, why);
        }
        let now = timers::now();
        randoms.forget_old(now);
        let key = (from, header.correlation);
        let sent = Sent {
            bytes,
            header,
            host,
            tried,
            at: now,
        };
        randoms.keep(key, sent);
    }

    /// A host had no handler for what this host sent it at random (or nobody read its
    /// inbox): on to the next host. False if it is no such message kept here.
    pub(super) fn random_refused(&mut self, key: RequestKey, host: &str) -> bool {
        let Some(hosts) = &mut self.hosts else {
            return false;
        };
        if hosts
            .randoms
            .sent
            .get(&key)
            .is_none_or(|sent| sent.host != host)
        {
            return false;
        }
        let Some(mut sent) = hosts.randoms.take(&key) else {
            return false;
        };
        sent.tried.push(sent.host.clone());
        self.send_random_to_next(key.0, sent.header, sent.bytes, sent.tried);
        true
    }
}

/// The sender and number of a `sendRandom` message, if `bytes` are one.
pub(super) fn random_key(bytes: &[u8]) -> Option<RequestKey> {
    let header = frames::parse::<()>(bytes.to_vec()).ok()?.header;
    (header.kind == Kind::Message && header.target == Target::RandomApp).then(|| {
        (
            (header.source_id != 0).then_some(header.source_id),
            header.correlation,
        )
    })
}
