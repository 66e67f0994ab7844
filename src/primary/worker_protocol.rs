//! The primary's side of Node's cluster state machine (`NODE_CLUSTER` messages), as the child's
//! `internal/cluster/child.js` expects it. See docs/node-ipc.md for the messages and their fields.

use std::os::fd::OwnedFd;

use serde_json::{json, Map, Value};

use super::events::{Event, EventQueue};
use super::listeners::{self, Grant, Listeners};
use super::workers::{self, Workers};
use super::WorkerId;
use crate::errors;
use crate::os::sockets;

/// libuv's EINVAL, for a `queryServer` we cannot make sense of.
const UV_EINVAL: i64 = -(libc::EINVAL as i64);

/// What a worker's cluster messages tell the loop about its readiness.
#[derive(Debug, PartialEq)]
pub enum Progress {
    Online,
    /// `{ addressType, address, port, fd }` as the worker reported them.
    Listening(Value),
}

/// The workers' Node channels and the listening sockets, lent by the loop for one message.
pub struct WorkerProtocol<'a> {
    pub workers: &'a mut Workers,
    pub listeners: &'a mut Listeners,
    pub events: &'a EventQueue,
}

impl WorkerProtocol<'_> {
    pub fn on_message(&mut self, id: WorkerId, msg: Map<String, Value>) -> Option<Progress> {
        let seq = msg.get("seq").cloned().unwrap_or(Value::Null);
        match msg.get("act").and_then(Value::as_str) {
            Some("online") => return Some(Progress::Online),
            Some("queryServer") => self.on_query_server(id, &msg, seq),
            Some("listening") => {
                return Some(Progress::Listening(json!({
                    "addressType": msg.get("addressType"),
                    "address": msg.get("address"),
                    "port": msg.get("port"),
                    "fd": msg.get("fd"),
                })));
            }
            Some("close") => {
                if let Some(key) = msg.get("key").and_then(Value::as_str) {
                    self.listeners.release(id, key);
                }
            }
            Some("exitedAfterDisconnect") => {
                self.events.push(Event::ExitedAfterDisconnect { id });
                // The worker waits for this reply before it disconnects.
                self.send_cluster(id, json!({ "ack": seq }), None);
            }
            // Unknown acts are ignored, as Node's primary ignores them.
            Some(_) => {}
            None => self.on_reply(id, &msg),
        }
        None
    }

    fn send_cluster(
        &mut self,
        id: WorkerId,
        fields: Value,
        handle: Option<(&str, OwnedFd)>,
    ) -> Option<u64> {
        workers::send_cluster(self.workers, self.events, id, fields, handle)
    }

    fn on_query_server(&mut self, id: WorkerId, msg: &Map<String, Value>, seq: Value) {
        // Node's primary ignores a disconnecting worker's query; the worker exits without an answer.
        if self.workers.get(&id).is_none_or(|w| w.is_closing()) {
            return;
        }
        let request = match listeners::parse_query(msg) {
            Ok(r) => r,
            Err(why) => {
                self.events
                    .warn(Some(id), errors::PROTOCOL, format!("worker {id}: {why}"));
                let key = listeners::handle_key(msg);
                self.send_cluster(
                    id,
                    json!({ "errno": UV_EINVAL, "key": key, "ack": seq, "data": null }),
                    None,
                );
                return;
            }
        };
        let slot = self.workers.get(&id).and_then(|w| w.slot);
        let key = request.key.clone();
        let grant = self.listeners.query(id, slot, &request);
        if let Some(notice) = self.listeners.take_notice() {
            self.events.warn(
                Some(id),
                errors::LISTEN_INHERITED,
                format!("worker {id} {notice}"),
            );
        }
        match grant {
            Grant::Handle {
                fd,
                handle_type,
                data,
            } => {
                self.send_cluster(
                    id,
                    json!({ "errno": 0, "key": key, "ack": seq, "data": data }),
                    Some((handle_type, fd)),
                );
            }
            Grant::RoundRobin { sockname, data } => {
                let mut reply = json!({ "errno": null, "key": key, "ack": seq, "data": data });
                if let Some(sockname) = sockname {
                    reply["sockname"] = sockname;
                }
                self.send_cluster(id, reply, None);
                if let Some(h) = self.listeners.rr_ready(&key, id) {
                    self.send_newconn(h.worker, key, h.conn);
                }
            }
            Grant::Refused { errno, data, why } => {
                self.warn_refusal(id, why);
                self.send_cluster(
                    id,
                    json!({ "errno": errno, "key": key, "ack": seq, "data": data }),
                    None,
                );
            }
            Grant::Error { errno, data } => {
                self.send_cluster(
                    id,
                    json!({ "errno": errno, "key": key, "ack": seq, "data": data }),
                    None,
                );
            }
        }
    }

    /// Once per worker: a worker that floods `queryServer` must not flood the operator too.
    fn warn_refusal(&mut self, id: WorkerId, why: listeners::Refusal) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        if std::mem::replace(&mut w.listen_refused, true) {
            return;
        }
        let pid = w.pid();
        self.events.warn(
            Some(id),
            errors::LISTEN_REFUSED,
            format!("worker {id} (pid {pid}) {}", why.describe()),
        );
    }

    /// A message with `ack` and no `act`: the worker's answer to a `newconn`.
    fn on_reply(&mut self, id: WorkerId, msg: &Map<String, Value>) {
        let (Some(ack), Some(accepted)) = (
            msg.get("ack").and_then(Value::as_u64),
            msg.get("accepted").and_then(Value::as_bool),
        ) else {
            return;
        };
        let Some((key, conn)) = self
            .workers
            .get_mut(&id)
            .and_then(|w| w.rr_in_flight.remove(&ack))
        else {
            return;
        };
        if !accepted {
            if let Some(h) = self.listeners.rr_refused(&key, conn) {
                self.send_newconn(h.worker, key.clone(), h.conn);
            }
        }
        // Accepted: our copy of the connection closes here; the worker has its own.
        if let Some(h) = self.listeners.rr_ready(&key, id) {
            self.send_newconn(h.worker, key, h.conn);
        }
    }

    /// Hands a round-robin connection to a worker. If it cannot be sent, it goes to another.
    pub fn send_newconn(&mut self, worker: WorkerId, key: String, conn: OwnedFd) {
        let sent = sockets::duplicate(&conn).ok().and_then(|copy| {
            self.send_cluster(
                worker,
                json!({ "act": "newconn", "key": key }),
                Some(("net.Native", copy)),
            )
        });
        match sent {
            Some(seq) => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.rr_in_flight.insert(seq, (key, conn));
                }
            }
            None => {
                self.listeners.release_all(worker);
                if let Some(h) = self.listeners.rr_refused(&key, conn) {
                    self.send_newconn(h.worker, key, h.conn);
                }
            }
        }
    }
}
