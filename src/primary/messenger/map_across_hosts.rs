//! `map` / `mapSettled` across hosts (option `redis`). The caller's host sends the request to
//! every other member as the map starts and runs it on its own workers; its first list of whom
//! to wait for names those hosts. Each host runs its part as a local map for a proxy of the
//! caller (src/primary/messenger/proxies.rs): it lists its workers, then their answers follow.
//! A host that dies (or cannot be reached, or cannot run its part) before its part is done is
//! a failed part: the caller gets it as an error list naming that host, and its workers that
//! did not answer become `ERR_RCLUSTER_HOST_DIED` entries, never a shorter array.

use std::collections::{BTreeMap, HashMap};

use serde_json::json;

use super::proxies::{ForHost, Running};
use super::{Bound, Cx, Messenger};
use crate::channel::frame_link::{Frame, Outgoing};
use crate::errors;
use crate::primary::requests::{RequestKey, Requester, MAX_OPEN_REQUESTS};
use crate::primary::router::{Dest, Undeliverable};
use crate::primary::WorkerId;
use crate::remote::{HostInfo, NOBODY_LISTENS};
use crate::wire::frames::{self, Header, Kind, Target, FLAG_ERROR};

/// One host's part of a map asked here.
struct Part {
    incarnation: u64,
    /// How many workers it listed, once it has.
    listed: Option<usize>,
    answered: usize,
}

/// The maps asked here that other hosts take part in, by caller: the order they were asked in,
/// and each host's part until done.
#[derive(Default)]
pub struct Maps {
    asked: HashMap<RequestKey, (u64, BTreeMap<String, Part>)>,
    per_requester: HashMap<Requester, usize>,
    asked_so_far: u64,
}

impl Maps {
    fn remove(&mut self, key: &RequestKey) {
        if self.asked.remove(key).is_some() {
            if let Some(open) = self.per_requester.get_mut(&key.0) {
                *open -= 1;
                if *open == 0 {
                    self.per_requester.remove(&key.0);
                }
            }
        }
    }

    /// The requester leaves: nobody waits for its maps.
    pub fn forget_requester(&mut self, requester: Requester) {
        self.asked.retain(|key, _| key.0 != requester);
        self.per_requester.remove(&requester);
    }

    /// The other hosts of the map `key`, to name in the caller's first list.
    pub fn hosts_of(&self, key: &RequestKey) -> Option<Vec<String>> {
        self.asked
            .get(key)
            .map(|(_, parts)| parts.keys().cloned().collect())
    }

    /// Follows a new map. A caller at the bound loses its oldest: a part whose last frames
    /// Redis lost (its caller settled by its timeout) would otherwise be followed for good.
    fn add(&mut self, key: RequestKey, parts: BTreeMap<String, Part>) {
        if self.per_requester.get(&key.0).copied().unwrap_or(0) >= MAX_OPEN_REQUESTS {
            let oldest = self
                .asked
                .iter()
                .filter(|(k, _)| k.0 == key.0)
                .min_by_key(|(_, (order, _))| *order)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                self.remove(&oldest);
            }
        }
        self.asked_so_far += 1;
        if self.asked.insert(key, (self.asked_so_far, parts)).is_none() {
            *self.per_requester.entry(key.0).or_default() += 1;
        }
    }

    fn parts_mut(&mut self, key: &RequestKey) -> Option<&mut BTreeMap<String, Part>> {
        self.asked.get_mut(key).map(|(_, parts)| parts)
    }
}

impl Messenger {
    /// A map, when the cluster spans hosts: sent to the other members, and returned to run
    /// here, with the hosts it could not be sent to (told to the caller after its first list).
    pub(super) fn map_across_hosts(
        &mut self,
        cx: &mut Cx<'_>,
        from: Option<WorkerId>,
        frame: Frame,
    ) -> Option<(Frame, Vec<(String, Undeliverable)>)> {
        let members = self.hosts.as_ref().map(|h| h.remote.hosts())?;
        if members.is_empty() {
            return Some((frame, Vec::new()));
        }
        let header = frame.header.clone();
        let key = (from, header.correlation);
        let bytes = match self.for_other_hosts(&header, &Outgoing::new(frame)) {
            Ok(bytes) => bytes,
            Err(why) => {
                self.undeliverable(cx, from, &header, why);
                return None;
            }
        };
        // This host's part, as if it had named no host.
        let here = match frames::with_host(&bytes, None).map(frames::parse) {
            Ok(Ok(frame)) => frame,
            _ => return None,
        };
        let hosts = self.hosts.as_mut()?;
        let mut parts = BTreeMap::new();
        let mut failed = Vec::new();
        for member in members {
            match hosts.remote.send(&member.host, bytes.clone()) {
                Ok(()) => {
                    parts.insert(
                        member.host,
                        Part {
                            incarnation: member.incarnation,
                            listed: None,
                            answered: 0,
                        },
                    );
                }
                Err(e) => {
                    let whom = format!("host '{}'", member.host);
                    failed.push((
                        member.host,
                        super::not_sent::not_sent(e, &header.action, &whom),
                    ));
                }
            }
        }
        // The caller's first list names the hosts that failed at once too: their parts come
        // after it.
        for (host, _) in &failed {
            parts.insert(
                host.clone(),
                Part {
                    incarnation: 0,
                    listed: Some(0),
                    answered: 0,
                },
            );
        }
        hosts.maps.add(key, parts);
        Some((here, failed))
    }

    /// A frame from another host about a map asked here: its list, an answer, or why its part
    /// failed. The frame comes back if it is about no map that host takes part in.
    pub(super) fn map_answer_from_host(
        &mut self,
        cx: &mut Cx<'_>,
        from: &HostInfo,
        frame: Frame,
    ) -> Result<(), Frame> {
        let key = (super::requester_of(&frame.header), frame.header.correlation);
        let Some(hosts) = &mut self.hosts else {
            return Err(frame);
        };
        let Some(part) = hosts
            .maps
            .parts_mut(&key)
            .and_then(|parts| parts.get_mut(&from.host))
            .filter(|part| {
                part.incarnation == from.incarnation
                    && part.listed.is_none_or(|n| part.answered < n)
            })
        else {
            return Err(frame);
        };
        let header = frame.header.clone();
        let failed = header.flags & FLAG_ERROR != 0;
        match header.kind {
            Kind::Expect if failed => {}
            Kind::Expect if part.listed.is_none() => {
                part.listed = Some(
                    serde_json::from_slice::<Vec<serde_json::Value>>(frame.payload())
                        .map_or(0, |list| list.len()),
                );
            }
            Kind::Reply if part.listed.is_some() => part.answered += 1,
            // Refused before its part started (a full host): the part failed.
            Kind::Undeliverable => {
                let why = serde_json::from_slice::<serde_json::Value>(frame.payload())
                    .ok()
                    .map(|v| Undeliverable {
                        code: v["code"]
                            .as_str()
                            .map_or(errors::UNKNOWN_TARGET, known_code),
                        message: v["message"].as_str().unwrap_or("").to_owned(),
                    })
                    .unwrap_or(Undeliverable {
                        code: errors::PROTOCOL,
                        message: "an unreadable refusal".into(),
                    });
                self.part_failed(cx, key, &from.host, &header.action, why);
                return Ok(());
            }
            _ => return Err(frame),
        }
        let to = key.0.map_or(Dest::Primary, Dest::Worker);
        // A caller that has gone needs nothing more.
        let _ = self.deliver(cx, to, &Outgoing::new(frame), &header, Bound::Waived);
        if failed {
            self.forget_part(&key, &from.host);
        } else {
            self.forget_part_if_done(&key, &from.host);
        }
        Ok(())
    }

    /// Another host died (or left, or restarted): its parts not done fail.
    pub(super) fn maps_host_gone(&mut self, cx: &mut Cx<'_>, host: &HostInfo) {
        let Some(hosts) = &self.hosts else {
            return;
        };
        let keys: Vec<RequestKey> = hosts
            .maps
            .asked
            .iter()
            .filter(|(_, (_, parts))| {
                parts
                    .get(&host.host)
                    .is_some_and(|part| part.incarnation == host.incarnation)
            })
            .map(|(key, _)| *key)
            .collect();
        for key in keys {
            let why = Undeliverable {
                code: errors::HOST_DIED,
                message: format!(
                    "host '{}' (incarnation {:016x}) died before all its workers answered",
                    host.host, host.incarnation
                ),
            };
            self.part_failed(cx, key, &host.host, "", why);
        }
    }

    /// A map request this host sent did not reach a host: that part failed. Returns the bytes
    /// back if they are no map's.
    pub(super) fn map_not_delivered(
        &mut self,
        cx: &mut Cx<'_>,
        host: &str,
        reason: &str,
        bytes: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let Ok(frame) = frames::parse::<()>(bytes.clone()) else {
            return Some(bytes);
        };
        let header = &frame.header;
        if header.kind != Kind::Request || header.target != Target::Apps {
            return Some(bytes);
        }
        let key = (
            (header.source_id != 0).then_some(header.source_id),
            header.correlation,
        );
        let code = if reason == NOBODY_LISTENS {
            errors::UNKNOWN_TARGET
        } else {
            errors::REMOTE_UNAVAILABLE
        };
        let why = Undeliverable {
            code,
            message: format!("'{}' did not reach host '{host}' ({reason})", header.action),
        };
        let action = header.action.clone();
        self.part_failed(cx, key, host, &action, why);
        None
    }

    /// Tells the caller that `host`'s part of its map failed: a list from that host, with the
    /// error in place of its workers.
    pub(super) fn part_failed(
        &mut self,
        cx: &mut Cx<'_>,
        key: RequestKey,
        host: &str,
        action: &str,
        why: Undeliverable,
    ) {
        let known = self
            .hosts
            .as_ref()
            .and_then(|h| h.maps.asked.get(&key))
            .is_some_and(|(_, parts)| parts.contains_key(host));
        if !known {
            return;
        }
        self.forget_part(&key, host);
        let header = Header {
            kind: Kind::Expect,
            target: if key.0.is_some() {
                Target::One
            } else {
                Target::Primary
            },
            flags: FLAG_ERROR,
            target_id: key.0.unwrap_or(0),
            source_id: 0,
            source_pid: 0,
            correlation: key.1,
            action: action.to_owned(),
            host: Some(host.to_owned()),
        };
        let payload = json!({ "code": why.code, "message": why.message, "host": host });
        if let Ok(frame) =
            frames::encode(&header, payload.to_string().as_bytes()).and_then(frames::parse)
        {
            let to = key.0.map_or(Dest::Primary, Dest::Worker);
            let _ = self.deliver(cx, to, &Outgoing::new(frame), &header, Bound::Waived);
        }
    }

    fn forget_part_if_done(&mut self, key: &RequestKey, host: &str) {
        let done = self
            .hosts
            .as_ref()
            .and_then(|h| h.maps.asked.get(key))
            .and_then(|(_, parts)| parts.get(host))
            .is_some_and(|part| part.listed == Some(part.answered));
        if done {
            self.forget_part(key, host);
        }
    }

    fn forget_part(&mut self, key: &RequestKey, host: &str) {
        let Some(hosts) = &mut self.hosts else {
            return;
        };
        let Some(parts) = hosts.maps.parts_mut(key) else {
            return;
        };
        parts.remove(host);
        if parts.is_empty() {
            hosts.maps.remove(key);
        }
    }

    /// A map from another host: this host's part runs for a proxy of its caller.
    pub(super) fn run_map_for_host(&mut self, cx: &mut Cx<'_>, from: &HostInfo, frame: Frame) {
        let header = frame.header.clone();
        let Some(hosts) = &mut self.hosts else {
            return;
        };
        let full = hosts.proxies.count() >= MAX_OPEN_REQUESTS;
        if full
            || hosts
                .proxies
                .runs(&from.host, header.source_id, header.correlation)
        {
            let why = Undeliverable {
                code: errors::QUEUE_FULL,
                message: format!(
                    "host '{}' has too many requests of other hosts in flight",
                    hosts.me
                ),
            };
            return self.tell_origin(cx, &from.host, &header, why);
        }
        let proxy = hosts.proxies.open(ForHost {
            origin: from.clone(),
            source_id: header.source_id,
            correlation: header.correlation,
            what: Running::Map { answers_left: None },
        });
        self.start_request_here(cx, Some(proxy), frame);
    }
}

/// The code another host reported, as one of rcluster's (anything else reads UNKNOWN_TARGET).
fn known_code(code: &str) -> &'static str {
    [
        errors::QUEUE_FULL,
        errors::NO_HANDLER,
        errors::UNKNOWN_TARGET,
        errors::REMOTE_UNAVAILABLE,
        errors::MESSAGE_TOO_LARGE,
        errors::PROTOCOL,
    ]
    .into_iter()
    .find(|known| *known == code)
    .unwrap_or(errors::UNKNOWN_TARGET)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part() -> Part {
        Part {
            incarnation: 1,
            listed: None,
            answered: 0,
        }
    }

    #[test]
    fn a_map_names_its_hosts_in_order_and_is_forgotten_with_its_requester() {
        let mut maps = Maps::default();
        let parts: BTreeMap<String, Part> = [("c".to_string(), part()), ("b".to_string(), part())]
            .into_iter()
            .collect();
        maps.add((Some(4), 9), parts);
        assert_eq!(
            maps.hosts_of(&(Some(4), 9)),
            Some(vec!["b".to_string(), "c".to_string()])
        );
        assert_eq!(maps.hosts_of(&(None, 9)), None);
        maps.forget_requester(Some(4));
        assert_eq!(maps.hosts_of(&(Some(4), 9)), None);
        assert!(maps.per_requester.is_empty());
    }

    #[test]
    fn a_caller_at_the_bound_loses_its_oldest_map() {
        let mut maps = Maps::default();
        for correlation in 0..MAX_OPEN_REQUESTS as u32 + 1 {
            maps.add((None, correlation), BTreeMap::new());
        }
        assert_eq!(maps.per_requester[&None], MAX_OPEN_REQUESTS);
        assert_eq!(maps.hosts_of(&(None, 0)), None);
        assert!(maps.hosts_of(&(None, 1)).is_some());
    }

    #[test]
    fn only_rclusters_codes_are_taken_from_another_host() {
        assert_eq!(known_code(errors::QUEUE_FULL), errors::QUEUE_FULL);
        assert_eq!(known_code("ERR_MADE_UP"), errors::UNKNOWN_TARGET);
    }
}
