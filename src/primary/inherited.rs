//! Listening sockets systemd passed (socket activation, sd_listen_fds(3)): with `LISTEN_PID`
//! our pid and `LISTEN_FDS=n`, descriptors 3 to 3+n-1 are ours. A worker that listens on an
//! address one of them is bound to gets that socket instead of a new one
//! (src/primary/listeners.rs), so the service keeps its port across restarts of the cluster and
//! can start before it.

use std::ffi::{OsStr, OsString};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::BorrowedFd;

use crate::os::sockets;

/// sd_listen_fds(3)'s first descriptor.
const FIRST: i32 = 3;
/// More than any service passes; beyond it the variable is surely wrong.
const MAX_FDS: i32 = 1024;

/// The descriptors systemd passed to `pid` according to `env` (the primary's own environment),
/// marked close-on-exec so that nothing the primary spawns inherits them. Empty unless
/// `LISTEN_PID` is `pid`.
pub fn from_env(env: &[(OsString, OsString)], pid: u32) -> Vec<i32> {
    let get = |name: &str| {
        env.iter()
            .find(|(k, _)| k == OsStr::new(name))
            .and_then(|(_, v)| v.to_str())
    };
    if get("LISTEN_PID").and_then(|p| p.parse::<u32>().ok()) != Some(pid) {
        return Vec::new();
    }
    let Some(count) = get("LISTEN_FDS").and_then(|n| n.parse::<i32>().ok()) else {
        return Vec::new();
    };
    let fds: Vec<i32> = (FIRST..FIRST + count.clamp(0, MAX_FDS)).collect();
    for fd in &fds {
        // SAFETY: fcntl(F_SETFD) only sets a flag; on a number that is not open it fails.
        unsafe { libc::fcntl(*fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    fds
}

/// A passed socket that listens on TCP, and its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inherited {
    pub fd: i32,
    pub addr: SocketAddr,
}

/// The passed descriptors that are listening TCP sockets; others (UDP, Unix, FIFOs) are left.
pub fn listening_tcp(fds: &[i32]) -> Vec<Inherited> {
    fds.iter()
        .filter(|&&fd| fd >= 0)
        .filter_map(|&fd| {
            // SAFETY: borrowed for the queries; systemd's descriptors stay open for the process,
            // and on a number that is not open they fail with EBADF.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            let addr = sockets::listening_tcp_address(borrowed)?;
            Some(Inherited { fd, addr })
        })
        .collect()
}

/// The passed socket that serves `listen(port[, ip])`: the same port, and the same address or a
/// wildcard one that covers it (`0.0.0.0` for IPv4, `::` for either). No IP, Node's default,
/// is every interface: only a wildcard socket serves it.
pub fn find(inherited: &[Inherited], ip: Option<IpAddr>, port: u16) -> Option<Inherited> {
    if port == 0 {
        return None;
    }
    let serves = |s: &&Inherited| {
        let theirs = s.addr.ip();
        s.addr.port() == port
            && match ip {
                None => theirs.is_unspecified(),
                Some(ip) if theirs == ip => true,
                Some(ip) => theirs.is_unspecified() && (theirs.is_ipv6() || ip.is_ipv4()),
            }
    };
    // An exact match first: systemd may pass both `127.0.0.1:80` and `[::]:80`.
    let exact = inherited
        .iter()
        .find(|s| ip.is_some_and(|ip| s.addr == SocketAddr::new(ip, port)));
    exact.or_else(|| inherited.iter().find(serves)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    #[test]
    fn takes_the_descriptors_only_when_they_are_for_us() {
        let ours = env(&[("LISTEN_PID", "42"), ("LISTEN_FDS", "2")]);
        assert_eq!(from_env(&ours, 42), vec![3, 4]);
        assert_eq!(from_env(&ours, 43), Vec::<i32>::new());
        assert!(from_env(&env(&[("LISTEN_PID", "42")]), 42).is_empty());
        assert!(from_env(&env(&[("LISTEN_PID", "42"), ("LISTEN_FDS", "x")]), 42).is_empty());
        assert!(from_env(&env(&[("LISTEN_PID", "42"), ("LISTEN_FDS", "-1")]), 42).is_empty());
    }

    #[test]
    fn matches_the_same_port_and_a_covering_address() {
        let at = |a: &str| Inherited {
            fd: 3,
            addr: a.parse().unwrap(),
        };
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let any4 = [at("0.0.0.0:80")];
        assert!(find(&any4, None, 80).is_some());
        assert!(find(&any4, ip("127.0.0.1"), 80).is_some());
        assert!(find(&any4, ip("::1"), 80).is_none());
        assert!(find(&any4, None, 81).is_none());
        assert!(find(&any4, None, 0).is_none());
        let any6 = [at("[::]:80")];
        assert!(find(&any6, ip("127.0.0.1"), 80).is_some());
        assert!(find(&any6, ip("::1"), 80).is_some());
        let local = [at("127.0.0.1:80")];
        assert!(find(&local, ip("127.0.0.1"), 80).is_some());
        assert!(find(&local, None, 80).is_none());
        assert!(find(&local, ip("10.0.0.1"), 80).is_none());
        let both = [
            Inherited {
                fd: 3,
                addr: "[::]:80".parse().unwrap(),
            },
            Inherited {
                fd: 4,
                addr: "127.0.0.1:80".parse().unwrap(),
            },
        ];
        assert_eq!(find(&both, ip("127.0.0.1"), 80).map(|s| s.fd), Some(4));
    }

    #[test]
    fn keeps_listening_tcp_sockets_only() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let found = listening_tcp(&[tcp.as_raw_fd(), udp.as_raw_fd(), -1]);
        assert_eq!(
            found,
            vec![Inherited {
                fd: tcp.as_raw_fd(),
                addr: tcp.local_addr().unwrap()
            }]
        );
    }
}
