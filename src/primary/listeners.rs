//! Every socket that workers listen on, owned by the primary. A worker's `queryServer` is answered
//! from here: with a shared descriptor (shared), its slot's own SO_REUSEPORT descriptor
//! (reuseport), or a promise of connections that the primary accepts itself (round-robin).

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use serde_json::{Map, Value};
use tokio::io::Interest;
use tokio::task::AbortHandle;

use super::inherited::{self, Inherited};
use super::round_robin::{Handoff, RoundRobin};
use crate::os::sockets::{self, Bound, Endpoint, Kind};

pub use super::WorkerId;

/// Listening sockets one worker may hold at once. An app listens on a handful of ports; a worker
/// that asks for more is flooding the primary with sockets.
pub const MAX_SOCKETS_PER_WORKER: usize = 64;
/// Listening sockets the whole cluster may hold.
pub const MAX_SOCKETS: usize = 256;
/// Descriptors kept free for the primary's own needs: a replacement worker needs a few (its
/// channels, its pidfd, pipes) and must always be able to start.
pub const DESCRIPTOR_RESERVE: usize = 128;

/// Why a `queryServer` was refused before any socket was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `listen({ fd })` on a descriptor the operator did not give the cluster.
    NotGiven(i32),
    AlreadyHeld,
    WorkerLimit,
    ClusterLimit,
    DescriptorReserve,
}

impl Refusal {
    fn errno(self) -> Errno {
        match self {
            Refusal::NotGiven(_) => Errno::EACCES,
            Refusal::AlreadyHeld => Errno::EADDRINUSE,
            Refusal::WorkerLimit | Refusal::ClusterLimit | Refusal::DescriptorReserve => {
                Errno::EMFILE
            }
        }
    }

    /// For the operator's warning: "worker 3 (pid 42) <this>".
    pub fn describe(self) -> String {
        match self {
            Refusal::NotGiven(fd) => format!(
                "asked to listen on descriptor {fd} of the primary, which is not one of listenFds; refused (EACCES)"
            ),
            Refusal::AlreadyHeld => {
                "asked again for a listening socket it already holds; refused (EADDRINUSE)".into()
            }
            Refusal::WorkerLimit => format!(
                "asked for more than {MAX_SOCKETS_PER_WORKER} listening sockets at once; refused (EMFILE)"
            ),
            Refusal::ClusterLimit => format!(
                "asked for a listening socket while the cluster holds {MAX_SOCKETS}; refused (EMFILE)"
            ),
            Refusal::DescriptorReserve => format!(
                "asked for a listening socket while the primary has fewer than {DESCRIPTOR_RESERVE} descriptors left; refused (EMFILE)"
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    Shared,
    ReusePort,
    RoundRobin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// `start()`: sockets stay open until the cluster stops, so a worker that dies or is replaced
    /// never gets a connection refused.
    ForService,
    /// Node's cluster: a socket closes when its last worker lets go.
    WhileHeld,
}

/// A worker's `queryServer`, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenRequest {
    /// Node's handle key, unique among one worker's handles.
    pub key: String,
    pub endpoint: Endpoint,
    pub backlog: i32,
    /// Opaque data the first worker attaches (TLS session ticket keys); every worker gets it back.
    pub data: Value,
}

pub enum Grant {
    Handle {
        fd: OwnedFd,
        handle_type: &'static str,
        data: Value,
    },
    RoundRobin {
        sockname: Option<Value>,
        data: Value,
    },
    Error {
        errno: i64,
        data: Value,
    },
    /// Refused by policy; the worker gets `errno`, the operator a warning.
    Refused {
        errno: i64,
        data: Value,
        why: Refusal,
    },
}

/// A connection accepted on a round-robin socket: `(generation, key, connection)`.
pub type AcceptSink = Arc<dyn Fn(u64, String, OwnedFd) + Send + Sync>;

struct Shared {
    bound: Bound,
    holders: BTreeSet<WorkerId>,
    data: Value,
    /// Since when no worker holds it (`ForService`): see `sweep`.
    unheld_since: Option<Instant>,
}

struct ReusePortGroup {
    ip: Option<IpAddr>,
    port: u16,
    ipv6_only: bool,
    per_slot: HashMap<usize, Bound>,
    holders: BTreeSet<WorkerId>,
    data: Value,
    unheld_since: Option<Instant>,
}

struct RoundRobinSocket {
    /// Held for the socket's lifetime; the acceptor task works on a duplicate of it.
    _bound: Bound,
    generation: u64,
    acceptor: AbortHandle,
    rr: RoundRobin<OwnedFd>,
    sockname: Option<Value>,
    data: Value,
}

impl Drop for RoundRobinSocket {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

enum Entry {
    Shared(Shared),
    ReusePort(ReusePortGroup),
    RoundRobin(RoundRobinSocket),
}

pub struct Listeners {
    distribution: Distribution,
    retention: Retention,
    entries: HashMap<String, Entry>,
    on_accept: AcceptSink,
    next_generation: u64,
    /// Descriptors of the primary that workers may listen on with `listen({ fd })`: those the
    /// operator gave the cluster (`listenFds`). Any other number would hand a worker one of the
    /// primary's own descriptors (another worker's channel, say), so it is refused.
    given_fds: BTreeSet<i32>,
    /// Listening sockets systemd passed: a worker that listens on one's address gets it.
    inherited: Vec<Inherited>,
    /// Whether the operator was told that reuseport falls back to a shared inherited socket.
    told_reuseport: bool,
    /// What the operator should hear about the last query (see `take_notice`).
    notice: Option<String>,
}

impl Entry {
    fn holds(&self, worker: WorkerId) -> bool {
        match self {
            Entry::Shared(s) => s.holders.contains(&worker),
            Entry::ReusePort(g) => g.holders.contains(&worker),
            Entry::RoundRobin(s) => s.rr.has(worker),
        }
    }

    fn unheld_since(&self) -> Option<Instant> {
        match self {
            Entry::Shared(s) => s.unheld_since,
            Entry::ReusePort(g) => g.unheld_since,
            Entry::RoundRobin(_) => None,
        }
    }
}

impl Listeners {
    pub fn new(distribution: Distribution, retention: Retention, on_accept: AcceptSink) -> Self {
        Listeners {
            distribution,
            retention,
            entries: HashMap::new(),
            on_accept,
            next_generation: 1,
            given_fds: BTreeSet::new(),
            inherited: Vec::new(),
            told_reuseport: false,
            notice: None,
        }
    }

    pub fn with_inherited(mut self, sockets: Vec<Inherited>) -> Self {
        self.inherited = sockets;
        self
    }

    /// What the operator should hear about the last `query`, once.
    pub fn take_notice(&mut self) -> Option<String> {
        self.notice.take()
    }

    pub fn with_given_fds(mut self, fds: impl IntoIterator<Item = i32>) -> Self {
        self.given_fds = fds.into_iter().collect();
        self
    }

    /// Whether answering this request is allowed: a descriptor the operator gave, and room for
    /// one more socket within the worker's, the cluster's and the process's limits.
    fn refusal(
        &self,
        worker: WorkerId,
        slot: Option<usize>,
        req: &ListenRequest,
    ) -> Option<Refusal> {
        if let Endpoint::Fd(fd) = req.endpoint {
            // Node's cluster lets a worker take any socket of its primary's by number, and the
            // Node-compatible primary keeps that for sockets the primary's script made; but never
            // a connected one, such as another worker's channel.
            let compatible = self.retention == Retention::WhileHeld && is_unconnected_socket(fd);
            if !self.given_fds.contains(&fd) && !compatible {
                return Some(Refusal::NotGiven(fd));
            }
        }
        let existing = self.entries.get(&req.key);
        // Node gives each server of a worker its own key: asking again for a key it holds gets
        // nothing a worker needs, only another duplicate of the socket.
        if existing.is_some_and(|e| e.holds(worker)) {
            return Some(Refusal::AlreadyHeld);
        }
        if self.entries.values().filter(|e| e.holds(worker)).count() >= MAX_SOCKETS_PER_WORKER {
            return Some(Refusal::WorkerLimit);
        }
        let new_socket = match existing {
            None => true,
            Some(Entry::ReusePort(g)) => slot.is_some_and(|s| !g.per_slot.contains_key(&s)),
            Some(_) => false,
        };
        if new_socket && self.entries.len() >= MAX_SOCKETS {
            return Some(Refusal::ClusterLimit);
        }
        // Even an existing socket is duplicated for the worker, for a moment.
        if descriptors_left().is_some_and(|left| left < DESCRIPTOR_RESERVE) {
            return Some(Refusal::DescriptorReserve);
        }
        None
    }

    /// Answers a worker's `queryServer`. `slot` is its place in a supervised cluster, if any.
    pub fn query(&mut self, worker: WorkerId, slot: Option<usize>, req: &ListenRequest) -> Grant {
        let mut refused = self.refusal(worker, slot, req);
        if matches!(
            refused,
            Some(Refusal::ClusterLimit | Refusal::DescriptorReserve)
        ) {
            // Short of room: sockets that no worker holds go first, even within their linger
            // time, rather than a worker that asks now going without.
            self.sweep(Instant::now(), Duration::ZERO);
            refused = self.refusal(worker, slot, req);
        }
        if let Some(why) = refused {
            return Grant::Refused {
                errno: sockets::uv_errno(why.errno()),
                data: req.data.clone(),
                why,
            };
        }
        if let Some(socket) = self.inherited_for(&req.endpoint) {
            return self
                .grant_shared(worker, req, || {
                    // SAFETY: systemd's descriptors stay open for the life of the process.
                    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(socket.fd) };
                    Ok(Bound {
                        fd: fd.try_clone_to_owned().map_err(|e| {
                            Errno::from_raw(e.raw_os_error().unwrap_or(libc::EBADF))
                        })?,
                        kind: Kind::Tcp,
                        path: None,
                    })
                })
                .unwrap_or_else(|e| Grant::Error {
                    errno: sockets::uv_errno(e),
                    data: req.data.clone(),
                });
        }
        let result = match (&req.endpoint, self.distribution, slot) {
            // Datagram sockets and adopted descriptors are always shared, as under Node.
            (Endpoint::Udp { .. } | Endpoint::Fd(_), _, _) => {
                self.grant_shared(worker, req, || sockets::bind_endpoint(&req.endpoint, false))
            }
            (
                Endpoint::Tcp {
                    ip,
                    port,
                    ipv6_only,
                },
                Distribution::ReusePort,
                Some(slot),
            ) => self.grant_reuseport(worker, slot, req, *ip, *port, *ipv6_only),
            (_, Distribution::RoundRobin, _) => self.grant_round_robin(worker, req),
            _ => self.grant_shared(worker, req, || sockets::bind_endpoint(&req.endpoint, false)),
        };
        result.unwrap_or_else(|e| Grant::Error {
            errno: sockets::uv_errno(e),
            data: req.data.clone(),
        })
    }

    /// The socket systemd passed for a TCP address, if any; under reuseport, the operator hears
    /// once that the address is served by that one shared socket instead.
    fn inherited_for(&mut self, endpoint: &Endpoint) -> Option<Inherited> {
        let Endpoint::Tcp { ip, port, .. } = endpoint else {
            return None;
        };
        let socket = inherited::find(&self.inherited, *ip, *port)?;
        if self.distribution == Distribution::ReusePort && !self.told_reuseport {
            self.told_reuseport = true;
            self.notice = Some(format!(
                "listens on {}, which a socket systemd passed serves: the workers share that socket (schedule 'reuseport' does not apply to it)",
                socket.addr
            ));
        }
        Some(socket)
    }

    /// `make` gives the socket when the key is new: a new bind, or a passed socket's duplicate.
    fn grant_shared(
        &mut self,
        worker: WorkerId,
        req: &ListenRequest,
        make: impl FnOnce() -> Result<Bound, Errno>,
    ) -> Result<Grant, Errno> {
        let entry = match self.entries.get_mut(&req.key) {
            Some(Entry::Shared(s)) => s,
            Some(_) => return Err(Errno::EADDRINUSE),
            None => {
                // On a bind error nothing is kept, so the next worker tries again (as Node does).
                let bound = make()?;
                let shared = Shared {
                    bound,
                    holders: BTreeSet::new(),
                    data: req.data.clone(),
                    unheld_since: None,
                };
                match self
                    .entries
                    .entry(req.key.clone())
                    .or_insert(Entry::Shared(shared))
                {
                    Entry::Shared(s) => s,
                    _ => return Err(Errno::EINVAL),
                }
            }
        };
        entry.holders.insert(worker);
        entry.unheld_since = None;
        if entry.data.is_null() {
            entry.data = req.data.clone();
        }
        Ok(Grant::Handle {
            fd: sockets::duplicate(&entry.bound.fd)?,
            handle_type: entry.bound.kind.handle_type(),
            data: entry.data.clone(),
        })
    }

    fn grant_reuseport(
        &mut self,
        worker: WorkerId,
        slot: usize,
        req: &ListenRequest,
        ip: Option<IpAddr>,
        port: u16,
        ipv6_only: bool,
    ) -> Result<Grant, Errno> {
        // A second server on a port already served under another key: Node would fail to bind it.
        let clash = self.entries.iter().any(|(key, e)| {
            key != &req.key
                && port != 0
                && matches!(e, Entry::ReusePort(g) if g.port == port && g.ip == ip)
        });
        if clash {
            return Err(Errno::EADDRINUSE);
        }
        let group = match self.entries.entry(req.key.clone()).or_insert_with(|| {
            Entry::ReusePort(ReusePortGroup {
                ip,
                port,
                ipv6_only,
                per_slot: HashMap::new(),
                holders: BTreeSet::new(),
                data: req.data.clone(),
                unheld_since: None,
            })
        }) {
            Entry::ReusePort(g) => g,
            _ => return Err(Errno::EADDRINUSE),
        };
        if !group.per_slot.contains_key(&slot) {
            let endpoint = Endpoint::Tcp {
                ip: group.ip,
                port: group.port,
                ipv6_only: group.ipv6_only,
            };
            let bound = match sockets::bind_endpoint(&endpoint, true) {
                Ok(b) => b,
                Err(e) => {
                    if group.per_slot.is_empty() {
                        self.entries.remove(&req.key);
                    }
                    return Err(e);
                }
            };
            // `listen(0)`: the first slot's socket picks the port, the others join it.
            if group.port == 0 {
                group.port = sockets::local_port(&bound.fd).unwrap_or(0);
            }
            group.per_slot.insert(slot, bound);
        }
        group.holders.insert(worker);
        group.unheld_since = None;
        let bound = group.per_slot.get(&slot).ok_or(Errno::EINVAL)?;
        Ok(Grant::Handle {
            fd: sockets::duplicate(&bound.fd)?,
            handle_type: Kind::Tcp.handle_type(),
            data: group.data.clone(),
        })
    }

    fn grant_round_robin(&mut self, worker: WorkerId, req: &ListenRequest) -> Result<Grant, Errno> {
        if !self.entries.contains_key(&req.key) {
            let bound = sockets::listen_endpoint(&req.endpoint, req.backlog)?;
            let generation = self.next_generation;
            self.next_generation += 1;
            let acceptor = spawn_acceptor(
                sockets::duplicate(&bound.fd)?,
                generation,
                req.key.clone(),
                self.on_accept.clone(),
            )
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
            let sockname = if bound.kind == Kind::Tcp {
                sockets::sockname(&bound.fd)
            } else {
                None
            };
            self.entries.insert(
                req.key.clone(),
                Entry::RoundRobin(RoundRobinSocket {
                    _bound: bound,
                    generation,
                    acceptor,
                    rr: RoundRobin::default(),
                    sockname,
                    data: req.data.clone(),
                }),
            );
        }
        match self.entries.get_mut(&req.key) {
            Some(Entry::RoundRobin(s)) => {
                s.rr.add(worker);
                Ok(Grant::RoundRobin {
                    sockname: s.sockname.clone(),
                    data: s.data.clone(),
                })
            }
            _ => Err(Errno::EADDRINUSE),
        }
    }

    /// After the reply to its `queryServer`: the worker is ready for a round-robin connection.
    pub fn rr_ready(&mut self, key: &str, worker: WorkerId) -> Option<Handoff<OwnedFd>> {
        match self.entries.get_mut(key) {
            Some(Entry::RoundRobin(s)) => s.rr.handoff(worker),
            _ => None,
        }
    }

    /// A connection the acceptor took; stale generations (a closed socket) are dropped.
    pub fn rr_accepted(
        &mut self,
        generation: u64,
        key: &str,
        conn: OwnedFd,
    ) -> Option<Handoff<OwnedFd>> {
        match self.entries.get_mut(key) {
            Some(Entry::RoundRobin(s)) if s.generation == generation => s.rr.distribute(conn),
            _ => None,
        }
    }

    /// A worker refused a connection (it is closing): pass it on. Dropped if the socket is gone.
    pub fn rr_refused(&mut self, key: &str, conn: OwnedFd) -> Option<Handoff<OwnedFd>> {
        match self.entries.get_mut(key) {
            Some(Entry::RoundRobin(s)) => s.rr.distribute(conn),
            _ => None,
        }
    }

    /// The worker closed this server (`close`).
    pub fn release(&mut self, worker: WorkerId, key: &str) {
        let now = Instant::now();
        let mark = |holders: &BTreeSet<WorkerId>, since: &mut Option<Instant>| {
            if holders.is_empty() && since.is_none() {
                *since = Some(now);
            }
            holders.is_empty()
        };
        let now_unused = match self.entries.get_mut(key) {
            Some(Entry::Shared(s)) => {
                s.holders.remove(&worker);
                mark(&s.holders, &mut s.unheld_since)
            }
            Some(Entry::ReusePort(g)) => {
                g.holders.remove(&worker);
                mark(&g.holders, &mut g.unheld_since)
            }
            Some(Entry::RoundRobin(s)) => s.rr.remove(worker),
            None => false,
        };
        // A round-robin socket lives in the primary's hands only: unused, nobody would accept.
        let is_rr = matches!(self.entries.get(key), Some(Entry::RoundRobin(_)));
        if now_unused && (self.retention == Retention::WhileHeld || is_rr) {
            self.entries.remove(key);
        }
    }

    /// The worker disconnected or died: it holds nothing any more.
    pub fn release_all(&mut self, worker: WorkerId) {
        let keys: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.holds(worker))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.release(worker, &key);
        }
    }

    /// A worker slot was removed (the cluster scaled down): its own SO_REUSEPORT sockets close,
    /// so that the kernel stops queueing connections that nobody would accept.
    pub fn close_slot(&mut self, slot: usize) {
        for entry in self.entries.values_mut() {
            if let Entry::ReusePort(group) = entry {
                group.per_slot.remove(&slot);
            }
        }
    }

    /// Closes the sockets (kept for the service) that no worker has held for `linger`. The caller
    /// says when: once every worker of the cluster is up and has had the time to ask for its
    /// sockets again, one that nobody asked for belongs to no current worker (a socket asked for
    /// by a worker long gone, or a flood of them) and would only hold a port and a descriptor.
    pub fn sweep(&mut self, now: Instant, linger: Duration) {
        self.entries.retain(|_, e| {
            e.unheld_since()
                .is_none_or(|since| now.saturating_duration_since(since) < linger)
        });
    }

    /// The cluster stopped: close everything.
    pub fn close_all(&mut self) {
        self.entries.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the worker still listens on any socket (it sends `close` as it stops).
    pub fn held_by(&self, worker: WorkerId) -> bool {
        self.entries.values().any(|e| e.holds(worker))
    }
}

/// A socket with no peer: a listening stream socket, or an unconnected datagram socket.
fn is_unconnected_socket(fd: i32) -> bool {
    if fd < 0 {
        return false;
    }
    // SAFETY: borrowed for two queries; both fail cleanly if the number is not an open socket.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    use nix::sys::socket::{getpeername, getsockopt, sockopt, SockType, SockaddrStorage};
    // A stream socket must be listening: one that is still connecting has no peer either.
    match getsockopt(&borrowed, sockopt::SockType) {
        Ok(SockType::Stream) => getsockopt(&borrowed, sockopt::AcceptConn).unwrap_or(false),
        Ok(_) => getpeername::<SockaddrStorage>(fd) == Err(Errno::ENOTCONN),
        Err(_) => false,
    }
}

/// Descriptors this process may still open, if it can tell.
fn descriptors_left() -> Option<usize> {
    let (soft, _) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).ok()?;
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count();
    Some(
        usize::try_from(soft)
            .unwrap_or(usize::MAX)
            .saturating_sub(open),
    )
}

fn spawn_acceptor(
    listener: OwnedFd,
    generation: u64,
    key: String,
    on_accept: AcceptSink,
) -> io::Result<AbortHandle> {
    let listener = crate::os::fd_socket::watch(listener, Interest::READABLE)?;
    let task = tokio::spawn(async move {
        loop {
            let accepted = listener
                .async_io(Interest::READABLE, |fd| {
                    nix::sys::socket::accept4(
                        fd.as_raw_fd(),
                        nix::sys::socket::SockFlag::SOCK_CLOEXEC
                            | nix::sys::socket::SockFlag::SOCK_NONBLOCK,
                    )
                    .map_err(io::Error::from)
                })
                .await;
            match accepted {
                // SAFETY: accept4 returned a new descriptor that nothing else owns.
                Ok(raw) => on_accept(generation, key.clone(), unsafe {
                    OwnedFd::from_raw_fd(raw)
                }),
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
                // Out of descriptors or memory: wait rather than spin on a readable socket.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    Ok(task.abort_handle())
}

/// JavaScript's `String(value)` for the parts of a handle key.
fn js_string(value: Option<&Value>) -> String {
    match value {
        None => "undefined".into(),
        Some(Value::Null) => "null".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Node's handle key: `${address}:${port}:${addressType}:${fd}:${index}`.
pub fn handle_key(msg: &Map<String, Value>) -> String {
    format!(
        "{}:{}:{}:{}:{}",
        js_string(msg.get("address")),
        js_string(msg.get("port")),
        js_string(msg.get("addressType")),
        js_string(msg.get("fd")),
        js_string(msg.get("index")),
    )
}

/// Reads a worker's `queryServer` message.
pub fn parse_query(msg: &Map<String, Value>) -> Result<ListenRequest, String> {
    let key = handle_key(msg);
    let address = msg.get("address").and_then(Value::as_str);
    let port = msg.get("port").and_then(Value::as_i64);
    let flags = msg.get("flags").and_then(Value::as_u64).unwrap_or(0);
    let tcp_port = || {
        port.and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| format!("bad port in queryServer: {key}"))
    };
    let ip = |a: &str| {
        a.parse::<IpAddr>()
            .map_err(|_| format!("bad address in queryServer: {a}"))
    };
    let endpoint = match (
        msg.get("fd").and_then(Value::as_i64),
        msg.get("addressType"),
    ) {
        (Some(fd), _) if fd >= 0 => {
            Endpoint::Fd(i32::try_from(fd).map_err(|_| "bad fd".to_string())?)
        }
        (_, Some(Value::String(t))) if t == "udp4" || t == "udp6" => Endpoint::Udp {
            ip: ip(address.unwrap_or(if t == "udp4" { "0.0.0.0" } else { "::" }))?,
            port: tcp_port()?,
            reuse_addr: flags & sockets::UV_UDP_REUSEADDR != 0,
            ipv6_only: flags & sockets::UV_UDP_IPV6ONLY != 0,
        },
        _ if port.is_some_and(|p| p < 0) => match address {
            Some(path) => Endpoint::Unix(PathBuf::from(path)),
            None => return Err("a pipe listen without a path".into()),
        },
        _ => Endpoint::Tcp {
            ip: address.map(ip).transpose()?,
            port: tcp_port()?,
            ipv6_only: flags & sockets::UV_TCP_IPV6ONLY != 0,
        },
    };
    let backlog = msg
        .get("backlog")
        .and_then(Value::as_i64)
        .and_then(|b| i32::try_from(b).ok())
        .filter(|b| *b > 0)
        .unwrap_or(511);
    Ok(ListenRequest {
        key,
        endpoint,
        backlog,
        data: msg.get("data").cloned().unwrap_or(Value::Null),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn query(v: Value) -> ListenRequest {
        parse_query(v.as_object().unwrap()).unwrap()
    }

    fn no_accept() -> AcceptSink {
        Arc::new(|_, _, _| {})
    }

    #[test]
    fn keys_are_built_as_node_builds_them() {
        let r = query(
            json!({"act":"queryServer","index":0,"data":null,"address":null,"port":0,"addressType":4,"backlog":511}),
        );
        assert_eq!(r.key, "null:0:4:undefined:0");
        assert_eq!(
            r.endpoint,
            Endpoint::Tcp {
                ip: None,
                port: 0,
                ipv6_only: false
            }
        );
        let r = query(json!({"index":1,"address":"/tmp/x.sock","port":-1,"addressType":-1}));
        assert_eq!(r.key, "/tmp/x.sock:-1:-1:undefined:1");
        assert_eq!(r.endpoint, Endpoint::Unix("/tmp/x.sock".into()));
        let r = query(json!({"index":0,"address":"::","port":53,"addressType":"udp6","flags":5}));
        assert_eq!(
            r.endpoint,
            Endpoint::Udp {
                ip: "::".parse().unwrap(),
                port: 53,
                reuse_addr: true,
                ipv6_only: true
            }
        );
        let r = query(json!({"index":0,"address":null,"port":null,"addressType":null,"fd":9}));
        assert_eq!(r.key, "null:null:null:9:0");
        assert_eq!(r.endpoint, Endpoint::Fd(9));
        assert!(parse_query(
            json!({"address":"not-an-ip","port":80,"addressType":4})
                .as_object()
                .unwrap()
        )
        .is_err());
        assert!(parse_query(
            json!({"address":null,"port":70000,"addressType":4})
                .as_object()
                .unwrap()
        )
        .is_err());
    }

    fn handle_port(g: &Grant) -> u16 {
        match g {
            Grant::Handle { fd, .. } => sockets::local_port(fd).unwrap(),
            _ => panic!("not a handle"),
        }
    }

    #[test]
    fn shared_sockets_are_one_socket() {
        let mut l = Listeners::new(Distribution::Shared, Retention::WhileHeld, no_accept());
        let r = query(
            json!({"index":0,"address":"127.0.0.1","port":0,"addressType":4,"data":"tickets"}),
        );
        let a = l.query(1, None, &r);
        let b = l.query(
            2,
            None,
            &ListenRequest {
                data: Value::Null,
                ..r.clone()
            },
        );
        assert_eq!(handle_port(&a), handle_port(&b));
        assert!(matches!(b, Grant::Handle { ref data, .. } if data == "tickets"));
        // The same key again from a worker that holds it: no second duplicate.
        assert!(matches!(
            l.query(1, None, &r),
            Grant::Refused {
                why: Refusal::AlreadyHeld,
                ..
            }
        ));
        l.release(1, &r.key);
        assert!(!l.is_empty());
        l.release_all(2);
        assert!(
            l.is_empty(),
            "Node closes a shared socket with its last worker"
        );
    }

    #[test]
    fn for_the_service_a_socket_outlives_its_workers() {
        let mut l = Listeners::new(Distribution::Shared, Retention::ForService, no_accept());
        let r = query(json!({"index":0,"address":"127.0.0.1","port":0,"addressType":4}));
        let port = handle_port(&l.query(1, Some(0), &r));
        l.release_all(1);
        assert!(!l.is_empty());
        assert_eq!(handle_port(&l.query(2, Some(0), &r)), port);
        l.close_all();
        assert!(l.is_empty());
    }

    #[test]
    fn reuseport_gives_each_slot_its_own_socket_on_one_port() {
        let mut l = Listeners::new(Distribution::ReusePort, Retention::ForService, no_accept());
        let r = query(json!({"index":0,"address":"127.0.0.1","port":0,"addressType":4}));
        let (a, b) = (l.query(1, Some(0), &r), l.query(2, Some(1), &r));
        assert_eq!(handle_port(&a), handle_port(&b));
        let (Grant::Handle { fd: fa, .. }, Grant::Handle { fd: fb, .. }) = (&a, &b) else {
            panic!()
        };
        let same_socket = |x: &OwnedFd, y: &OwnedFd| {
            let (sx, sy) = (
                nix::sys::stat::fstat(x).unwrap(),
                nix::sys::stat::fstat(y).unwrap(),
            );
            sx.st_ino == sy.st_ino
        };
        assert!(!same_socket(fa, fb));
        // A replacement in slot 0 gets slot 0's socket back.
        let Grant::Handle { fd: again, .. } = l.query(3, Some(0), &r) else {
            panic!()
        };
        assert!(same_socket(fa, &again));
        // A removed slot's socket closes; a slot added later gets a new one on the same port.
        l.close_slot(0);
        let Grant::Handle { fd: fresh, .. } = l.query(4, Some(0), &r) else {
            panic!()
        };
        assert!(!same_socket(fa, &fresh));
        assert_eq!(handle_port(&l.query(5, Some(0), &r)), handle_port(&a));
    }

    #[test]
    fn descriptors_by_number_only_when_given_or_unconnected_under_node_rules() {
        let (channel, _peer) = crate::os::fd_socket::stream_pair().unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let ask = |fd: i32| {
            query(json!({"index":0,"address":null,"port":null,"addressType":null,"fd":fd}))
        };
        let refused = |g: &Grant| {
            matches!(
                g,
                Grant::Refused {
                    why: Refusal::NotGiven(_),
                    ..
                }
            )
        };
        let mut supervised =
            Listeners::new(Distribution::Shared, Retention::ForService, no_accept());
        assert!(refused(&supervised.query(
            1,
            Some(0),
            &ask(udp.as_raw_fd())
        )));
        assert!(refused(&supervised.query(
            1,
            Some(0),
            &ask(channel.as_raw_fd())
        )));
        let mut given = Listeners::new(Distribution::Shared, Retention::ForService, no_accept())
            .with_given_fds([udp.as_raw_fd()]);
        assert!(matches!(
            given.query(1, Some(0), &ask(udp.as_raw_fd())),
            Grant::Handle { .. }
        ));
        let mut node = Listeners::new(Distribution::Shared, Retention::WhileHeld, no_accept());
        assert!(matches!(
            node.query(1, None, &ask(udp.as_raw_fd())),
            Grant::Handle { .. }
        ));
        assert!(refused(&node.query(1, None, &ask(channel.as_raw_fd()))));
    }

    #[test]
    fn bind_errors_are_reported_and_not_kept() {
        let mut l = Listeners::new(Distribution::Shared, Retention::WhileHeld, no_accept());
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let r = query(json!({"index":0,"address":"127.0.0.1","port":port,"addressType":4}));
        assert!(matches!(
            l.query(1, None, &r),
            Grant::Error { errno: -98, .. }
        ));
        assert!(l.is_empty());
    }

    #[test]
    fn an_address_systemd_passed_is_served_by_its_socket() {
        use std::os::fd::AsFd;
        // Bound without SO_REUSEADDR or SO_REUSEPORT: a new bind on its port would fail.
        let passed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = passed.local_addr().unwrap();
        let inherited = inherited::listening_tcp(&[passed.as_raw_fd()]);
        let mut l = Listeners::new(Distribution::ReusePort, Retention::ForService, no_accept())
            .with_inherited(inherited);
        let ask = json!({"index":0,"address":"127.0.0.1","port":addr.port(),"addressType":4});
        let same_socket = |g: &Grant| match g {
            Grant::Handle { fd, .. } => {
                let ino = |f: std::os::fd::BorrowedFd<'_>| {
                    nix::sys::stat::fstat(f).map(|s| s.st_ino).unwrap()
                };
                ino(fd.as_fd()) == ino(passed.as_fd())
            }
            _ => false,
        };
        let first = l.query(1, Some(0), &query(ask.clone()));
        assert!(same_socket(&first));
        assert!(l.take_notice().is_some_and(|n| n.contains("reuseport")));
        let second = l.query(2, Some(1), &query(ask));
        assert!(same_socket(&second));
        assert_eq!(l.take_notice(), None, "told once");
        // Another port binds as before.
        let other = l.query(
            1,
            Some(0),
            &query(json!({"index":0,"address":"127.0.0.1","port":0,"addressType":4})),
        );
        assert!(matches!(other, Grant::Handle { .. }) && !same_socket(&other));
    }
}
