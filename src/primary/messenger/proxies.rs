//! Requests of other hosts that this host runs (a consume it claimed, its part of a map). A proxy
//! id stands for the caller in the local bookkeeping (src/primary/requests.rs), so that the
//! local rules hold (a worker that dies before it received a consume hands it on); what that
//! bookkeeping delivers to the proxy goes back to the caller's host, naming this one.

use std::collections::HashMap;

use serde_json::json;

use super::{worker_of, Messenger};
use crate::channel::frame_link::Outgoing;
use crate::errors;
use crate::primary::router::{Dest, Undeliverable};
use crate::primary::WorkerId;
use crate::remote::HostInfo;
use crate::wire::frames::{self, Header, Kind, Target, FLAG_ERROR};

/// Requester ids from here up stand for callers on other hosts: no worker ever has one.
const PROXY_IDS: WorkerId = 0xF000_0000;

/// A request of another host that this host runs.
pub struct ForHost {
    pub origin: HostInfo,
    /// The caller's worker id (0: its primary) and its number for the request.
    pub source_id: WorkerId,
    pub correlation: u32,
    pub what: Running,
}

pub enum Running {
    /// A consume, under its claim: one answer ends it.
    Consume { call: String },
    /// This host's part of a map: its list of workers, then an answer from each.
    Map { answers_left: Option<usize> },
}

#[derive(Default)]
pub struct Proxies {
    running: HashMap<WorkerId, ForHost>,
    /// The proxy of a caller: its host, worker id and number.
    by_caller: HashMap<(String, WorkerId, u32), WorkerId>,
    next: WorkerId,
}

impl Proxies {
    pub fn count(&self) -> usize {
        self.running.len()
    }

    /// Whether a request of that caller runs here already.
    pub fn runs(&self, host: &str, source_id: WorkerId, correlation: u32) -> bool {
        self.by_caller
            .contains_key(&(host.to_owned(), source_id, correlation))
    }

    /// A proxy for `for_host`: the requester to open its request under.
    pub fn open(&mut self, for_host: ForHost) -> WorkerId {
        let proxy = loop {
            let id = PROXY_IDS + self.next % (WorkerId::MAX - PROXY_IDS);
            self.next = self.next.wrapping_add(1);
            if !self.running.contains_key(&id) {
                break id;
            }
        };
        let caller = (
            for_host.origin.host.clone(),
            for_host.source_id,
            for_host.correlation,
        );
        self.by_caller.insert(caller, proxy);
        self.running.insert(proxy, for_host);
        proxy
    }

    fn close(&mut self, proxy: WorkerId) -> Option<ForHost> {
        let for_host = self.running.remove(&proxy)?;
        self.by_caller.remove(&(
            for_host.origin.host.clone(),
            for_host.source_id,
            for_host.correlation,
        ));
        Some(for_host)
    }
}

/// Whether `dest` stands for a caller on another host.
pub fn is_proxy(dest: Dest) -> bool {
    worker_of(dest).is_some_and(|id| id >= PROXY_IDS)
}

impl Messenger {
    /// A worker's receipt or answer naming a host: the proxy of that host's caller, if a request
    /// of it runs here.
    pub(super) fn to_proxy(&self, header: &Header) -> Option<WorkerId> {
        let hosts = self.hosts.as_ref()?;
        let host = header.host.clone()?;
        hosts
            .proxies
            .by_caller
            .get(&(host, header.target_id, header.correlation))
            .copied()
    }

    /// What the local bookkeeping delivers to a proxy goes back to its caller's host, naming
    /// this one; the last of it closes the proxy.
    /// `header` is the header of `out`.
    pub(super) fn answer_to_host(
        &mut self,
        proxy: WorkerId,
        out: &Outgoing,
        header: &Header,
    ) -> Result<(), Undeliverable> {
        let lost = || Undeliverable {
            code: errors::UNKNOWN_TARGET,
            message: "the caller's host is gone".into(),
        };
        // A payload that cannot be read back still counts as the answer it was, as an error.
        let (mut header, payload) = match out
            .in_line()
            .map_err(|e| e.to_string())
            .and_then(|o| frames::parse::<()>(o.bytes.to_vec()).map_err(|e| e.to_string()))
        {
            Ok(frame) => (frame.header.clone(), frame.payload().to_vec()),
            Err(why) => {
                let mut header = header.clone();
                header.flags = FLAG_ERROR;
                let message = format!("the answer to '{}' could not be read: {why}", header.action);
                let error = json!({ "code": errors::PROTOCOL, "message": message });
                (header, error.to_string().into_bytes())
            }
        };
        let hosts = self.hosts.as_mut().ok_or_else(lost)?;
        let running = hosts.proxies.running.get_mut(&proxy).ok_or_else(lost)?;
        let last = match &mut running.what {
            Running::Consume { .. } => {
                // Claimed here, it ends here: what did not reach a worker is the call's error,
                // not a reason to try another host (which could not claim it).
                if header.kind == Kind::Undeliverable {
                    header.kind = Kind::Reply;
                    header.flags |= FLAG_ERROR;
                }
                true
            }
            Running::Map { answers_left } => match header.kind {
                Kind::Expect => {
                    let listed = serde_json::from_slice::<Vec<serde_json::Value>>(&payload)
                        .map_or(0, |list| list.len());
                    *answers_left = Some(listed);
                    listed == 0
                }
                // The map could not start here: this host's part failed as a whole.
                Kind::Undeliverable => {
                    header.kind = Kind::Expect;
                    header.flags |= FLAG_ERROR;
                    true
                }
                _ => match answers_left {
                    Some(left) => {
                        *left = left.saturating_sub(1);
                        *left == 0
                    }
                    None => false,
                },
            },
        };
        let (origin, source_id, correlation) = (
            running.origin.host.clone(),
            running.source_id,
            running.correlation,
        );
        if last {
            if let Some(ForHost {
                what: Running::Consume { call },
                ..
            }) = hosts.proxies.close(proxy)
            {
                hosts.remote.claim_answered(call);
            }
        }
        header.target = if source_id == 0 {
            Target::Primary
        } else {
            Target::One
        };
        header.target_id = source_id;
        header.correlation = correlation;
        header.host = Some(hosts.me.clone());
        let sent = frames::encode(&header, &payload)
            .map_err(|e| Undeliverable {
                code: errors::PROTOCOL,
                message: e.to_string(),
            })
            .and_then(|bytes| {
                hosts
                    .remote
                    .send(&origin, bytes)
                    .map_err(|e| super::not_sent::not_sent(e, &header.action, "its caller's host"))
            });
        let Err(why) = sent else {
            return Ok(());
        };
        // An answer too large to cross hosts: its caller gets why, in its place.
        header.flags = FLAG_ERROR;
        let message = format!(
            "the answer to '{}' could not be sent back: {}",
            header.action, why.message
        );
        let error = json!({ "code": why.code, "message": message }).to_string();
        if let Ok(bytes) = frames::encode(&header, error.as_bytes()) {
            let _ = hosts.remote.send(&origin, bytes);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn for_host(host: &str, source_id: WorkerId, correlation: u32) -> ForHost {
        ForHost {
            origin: HostInfo {
                host: host.into(),
                incarnation: 1,
            },
            source_id,
            correlation,
            what: Running::Map { answers_left: None },
        }
    }

    #[test]
    fn a_proxy_is_no_worker_and_is_found_from_its_caller_until_closed() {
        let mut proxies = Proxies::default();
        let first = proxies.open(for_host("b", 3, 7));
        let second = proxies.open(for_host("c", 3, 7));
        assert_ne!(first, second);
        assert!(is_proxy(Dest::Worker(first)) && is_proxy(Dest::Worker(second)));
        assert!(!is_proxy(Dest::Worker(1)) && !is_proxy(Dest::Primary));
        assert!(proxies.runs("b", 3, 7) && proxies.runs("c", 3, 7));
        assert!(!proxies.runs("b", 3, 8));
        assert_eq!(proxies.count(), 2);
        assert!(proxies.close(first).is_some());
        assert!(!proxies.runs("b", 3, 7));
        assert!(proxies.close(first).is_none());
        assert_eq!(proxies.count(), 1);
    }

    #[test]
    fn proxy_ids_wrap_within_their_range_and_skip_those_in_use() {
        let mut proxies = Proxies {
            next: WorkerId::MAX - PROXY_IDS - 1,
            ..Proxies::default()
        };
        let last = proxies.open(for_host("b", 1, 1));
        assert_eq!(last, WorkerId::MAX - 1);
        let wrapped = proxies.open(for_host("b", 1, 2));
        assert_eq!(wrapped, PROXY_IDS);
        proxies.next = WorkerId::MAX - PROXY_IDS - 1;
        // The id of the first is still in use: the next one is taken.
        assert_eq!(proxies.open(for_host("b", 1, 3)), PROXY_IDS + 1);
    }
}
