//! Creating the sockets workers listen on, the way Node's primary (libuv) creates them, so that a
//! worker sees the same addresses, options and errors as under Node's own cluster.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::socket::{
    bind, getsockname, getsockopt, listen, setsockopt, socket, sockopt, AddressFamily, Backlog,
    SockFlag, SockType, SockaddrLike, SockaddrStorage, UnixAddr,
};
use serde_json::{json, Value};

/// libuv's flag bits that Node passes along in `queryServer.flags`.
pub const UV_TCP_IPV6ONLY: u64 = 1;
pub const UV_UDP_IPV6ONLY: u64 = 1;
pub const UV_UDP_REUSEADDR: u64 = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `listen(port[, host])`. No host means Node's default: `::` dual-stack, else `0.0.0.0`.
    Tcp {
        ip: Option<IpAddr>,
        port: u16,
        ipv6_only: bool,
    },
    Udp {
        ip: IpAddr,
        port: u16,
        reuse_addr: bool,
        ipv6_only: bool,
    },
    Unix(PathBuf),
    /// `listen({ fd })`: a descriptor of the primary process.
    Fd(i32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Udp,
    Unix,
}

impl Kind {
    /// The handle type Node's child expects in the `NODE_HANDLE` wrapper.
    pub fn handle_type(self) -> &'static str {
        match self {
            Kind::Udp => "dgram.Native",
            Kind::Tcp | Kind::Unix => "net.Native",
        }
    }
}

pub struct Bound {
    pub fd: OwnedFd,
    pub kind: Kind,
    /// A Unix socket file we created and must remove when the socket closes, as libuv does.
    pub path: Option<SocketFile>,
}

/// The file a Unix socket was bound to, and which file it was (device and inode).
pub struct SocketFile {
    pub path: PathBuf,
    identity: Option<(u64, u64)>,
}

impl SocketFile {
    fn bound_at(path: &std::path::Path) -> SocketFile {
        SocketFile {
            path: path.to_path_buf(),
            identity: identity(path),
        }
    }
}

fn identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::symlink_metadata(path).ok()?;
    meta.file_type()
        .is_socket()
        .then(|| (meta.dev(), meta.ino()))
}

impl Drop for Bound {
    fn drop(&mut self) {
        // libuv removes a Unix socket's file when it closes the socket; so do we, but only if
        // the path still names the very socket file we made. The path came from a worker, which
        // may since have swapped a directory on it for a link to somewhere else: a primary
        // running as root must not remove whatever the path names now.
        if let Some(file) = &self.path {
            if file.identity.is_some() && identity(&file.path) == file.identity {
                let _ = std::fs::remove_file(&file.path);
            }
        }
    }
}

/// libuv reports errors as negative errno values; so does the cluster protocol.
pub fn uv_errno(e: Errno) -> i64 {
    -(e as i64)
}

/// Binds (does not listen: the worker calls listen() with its own backlog).
pub fn bind_endpoint(endpoint: &Endpoint, reuse_port: bool) -> Result<Bound, Errno> {
    match endpoint {
        Endpoint::Tcp {
            ip: None,
            port,
            ipv6_only,
        } => {
            // Node's primary: try `::` first; on any error fall back to `0.0.0.0`.
            bind_tcp(
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), *port),
                *ipv6_only,
                reuse_port,
            )
            .or_else(|_| {
                bind_tcp(
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), *port),
                    false,
                    reuse_port,
                )
            })
        }
        Endpoint::Tcp {
            ip: Some(ip),
            port,
            ipv6_only,
        } => bind_tcp(SocketAddr::new(*ip, *port), *ipv6_only, reuse_port),
        Endpoint::Udp {
            ip,
            port,
            reuse_addr,
            ipv6_only,
        } => bind_udp(SocketAddr::new(*ip, *port), *reuse_addr, *ipv6_only),
        Endpoint::Unix(path) => bind_unix(path),
        Endpoint::Fd(fd) => adopt_fd(*fd),
    }
}

fn new_socket(family: AddressFamily, ty: SockType) -> Result<OwnedFd, Errno> {
    socket(
        family,
        ty,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
}

fn family_of(addr: &SocketAddr) -> AddressFamily {
    match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn bind_tcp(addr: SocketAddr, ipv6_only: bool, reuse_port: bool) -> Result<Bound, Errno> {
    let fd = new_socket(family_of(&addr), SockType::Stream)?;
    // libuv sets SO_REUSEADDR on every TCP socket it binds, and IPV6_V6ONLY explicitly.
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &ipv6_only)?;
    }
    if reuse_port {
        setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    Ok(Bound {
        fd,
        kind: Kind::Tcp,
        path: None,
    })
}

fn bind_udp(addr: SocketAddr, reuse_addr: bool, ipv6_only: bool) -> Result<Bound, Errno> {
    let fd = new_socket(family_of(&addr), SockType::Datagram)?;
    if reuse_addr {
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    if addr.is_ipv6() && ipv6_only {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    Ok(Bound {
        fd,
        kind: Kind::Udp,
        path: None,
    })
}

fn bind_unix(path: &std::path::Path) -> Result<Bound, Errno> {
    let fd = new_socket(AddressFamily::Unix, SockType::Stream)?;
    let addr = UnixAddr::new(&shortest_name(path))?;
    bind(fd.as_raw_fd(), &addr)?;
    Ok(Bound {
        fd,
        kind: Kind::Unix,
        path: Some(SocketFile::bound_at(path)),
    })
}

/// A socket path must fit in sun_path (108 bytes); as Node's primary does, bind by the path
/// relative to our working directory when that is shorter.
fn shortest_name(path: &std::path::Path) -> PathBuf {
    let relative = std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(PathBuf::from));
    match relative {
        Some(r) if !r.as_os_str().is_empty() && r.as_os_str().len() < path.as_os_str().len() => r,
        _ => path.to_path_buf(),
    }
}

/// A descriptor of ours named by number: shared as it is, its kind read from the socket itself.
fn adopt_fd(fd: i32) -> Result<Bound, Errno> {
    if fd < 0 {
        return Err(Errno::EBADF);
    }
    // SAFETY: borrowed only to duplicate it; fcntl fails with EBADF if the number is not open.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD)?;
    let owned = borrowed
        .try_clone_to_owned()
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EBADF)))?;
    let ty = getsockopt(&owned, sockopt::SockType).map_err(|_| Errno::EINVAL)?;
    let addr: SockaddrStorage = getsockname(owned.as_raw_fd())?;
    let kind = match (addr.family(), ty) {
        (Some(AddressFamily::Unix), SockType::Stream) => Kind::Unix,
        (Some(AddressFamily::Inet | AddressFamily::Inet6), SockType::Stream) => Kind::Tcp,
        (Some(AddressFamily::Inet | AddressFamily::Inet6), SockType::Datagram) => Kind::Udp,
        _ => return Err(Errno::EINVAL),
    };
    super::fd_socket::set_nonblocking(owned.as_fd()).map_err(|_| Errno::EINVAL)?;
    Ok(Bound {
        fd: owned,
        kind,
        path: None,
    })
}

/// Binds and listens, for sockets the primary accepts on itself (round-robin).
pub fn listen_endpoint(endpoint: &Endpoint, backlog: i32) -> Result<Bound, Errno> {
    let bound = bind_endpoint(endpoint, false)?;
    let backlog = Backlog::new(backlog).unwrap_or(Backlog::MAXCONN);
    listen(&bound.fd, backlog)?;
    Ok(bound)
}

/// The port a bound TCP/UDP socket got (for `listen(0)`).
pub fn local_port(fd: &OwnedFd) -> Option<u16> {
    let addr: SockaddrStorage = getsockname(fd.as_raw_fd()).ok()?;
    addr.as_sockaddr_in()
        .map(|a| a.port())
        .or_else(|| addr.as_sockaddr_in6().map(|a| a.port()))
}

/// `handle.getsockname()` as Node reports it: `{ address, family, port }`.
pub fn sockname(fd: &OwnedFd) -> Option<Value> {
    let addr: SockaddrStorage = getsockname(fd.as_raw_fd()).ok()?;
    if let Some(a) = addr.as_sockaddr_in() {
        return Some(json!({ "address": a.ip().to_string(), "family": "IPv4", "port": a.port() }));
    }
    addr.as_sockaddr_in6()
        .map(|a| json!({ "address": a.ip().to_string(), "family": "IPv6", "port": a.port() }))
}

/// The address a TCP socket listens on, if it is one: a listening IPv4 or IPv6 stream socket.
pub fn listening_tcp_address(fd: std::os::fd::BorrowedFd<'_>) -> Option<std::net::SocketAddr> {
    use nix::sys::socket::{getsockopt, sockopt, SockType};
    let listening = getsockopt(&fd, sockopt::AcceptConn).ok()?;
    let stream = getsockopt(&fd, sockopt::SockType).ok()? == SockType::Stream;
    let addr: SockaddrStorage = getsockname(fd.as_raw_fd()).ok()?;
    let addr = match (addr.as_sockaddr_in(), addr.as_sockaddr_in6()) {
        (Some(v4), _) => std::net::SocketAddr::from(std::net::SocketAddrV4::from(*v4)),
        (_, Some(v6)) => std::net::SocketAddr::from(std::net::SocketAddrV6::from(*v6)),
        _ => return None,
    };
    (listening && stream).then_some(addr)
}

pub fn duplicate(fd: &OwnedFd) -> Result<OwnedFd, Errno> {
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3)).map(|raw| {
        // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
        unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_host_binds_dual_stack_and_reports_ports() {
        let b = bind_endpoint(
            &Endpoint::Tcp {
                ip: None,
                port: 0,
                ipv6_only: false,
            },
            false,
        )
        .unwrap();
        let port = local_port(&b.fd).unwrap();
        assert!(port > 0);
        // With SO_REUSEADDR a second bind is allowed until the first socket listens, then refused.
        listen(&b.fd, Backlog::new(8).unwrap()).unwrap();
        let again = bind_endpoint(
            &Endpoint::Tcp {
                ip: Some("127.0.0.1".parse().unwrap()),
                port,
                ipv6_only: false,
            },
            false,
        );
        assert_eq!(again.err(), Some(Errno::EADDRINUSE));
        assert_eq!(uv_errno(Errno::EADDRINUSE), -98);
    }

    #[test]
    fn reuseport_sockets_share_a_port() {
        let ip = Some("127.0.0.1".parse().unwrap());
        let a = bind_endpoint(
            &Endpoint::Tcp {
                ip,
                port: 0,
                ipv6_only: false,
            },
            true,
        )
        .unwrap();
        listen(&a.fd, Backlog::new(8).unwrap()).unwrap();
        let port = local_port(&a.fd).unwrap();
        let b = bind_endpoint(
            &Endpoint::Tcp {
                ip,
                port,
                ipv6_only: false,
            },
            true,
        )
        .unwrap();
        listen(&b.fd, Backlog::new(8).unwrap()).unwrap();
        assert_eq!(local_port(&b.fd), Some(port));
    }

    #[test]
    fn unix_sockets_and_adopted_descriptors() {
        let path = std::env::temp_dir().join(format!("rcluster-sock-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let b = bind_endpoint(&Endpoint::Unix(path.clone()), false).unwrap();
        assert_eq!(b.kind, Kind::Unix);
        assert_eq!(b.path.as_ref().map(|f| &f.path), Some(&path));
        assert_eq!(
            bind_endpoint(&Endpoint::Unix(path.clone()), false).err(),
            Some(Errno::EADDRINUSE)
        );
        let adopted = bind_endpoint(&Endpoint::Fd(b.fd.as_raw_fd()), false).unwrap();
        assert_eq!(adopted.kind, Kind::Unix);
        assert!(adopted.path.is_none());
        drop(adopted);
        assert!(
            path.exists(),
            "an adopted descriptor's file is not ours to remove"
        );
        drop(b);
        assert!(
            !path.exists(),
            "closing a bound Unix socket removes its file"
        );
        assert_eq!(
            bind_endpoint(&Endpoint::Fd(-1), false).err(),
            Some(Errno::EBADF)
        );
        assert_eq!(
            bind_endpoint(&Endpoint::Fd(987_654), false).err(),
            Some(Errno::EBADF)
        );
    }

    #[test]
    fn a_socket_file_swapped_for_another_file_is_not_removed() {
        let dir = std::env::temp_dir().join(format!("rcluster-swap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let b = bind_endpoint(&Endpoint::Unix(path.clone()), false).unwrap();
        // The worker replaces the socket file with a file of the same name.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "not ours").unwrap();
        drop(b);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not ours");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn udp_and_sockname() {
        let b = bind_endpoint(
            &Endpoint::Udp {
                ip: "127.0.0.1".parse().unwrap(),
                port: 0,
                reuse_addr: true,
                ipv6_only: false,
            },
            false,
        )
        .unwrap();
        assert_eq!(b.kind.handle_type(), "dgram.Native");
        let l = listen_endpoint(
            &Endpoint::Tcp {
                ip: Some("127.0.0.1".parse().unwrap()),
                port: 0,
                ipv6_only: false,
            },
            511,
        )
        .unwrap();
        let name = sockname(&l.fd).unwrap();
        assert_eq!(name["address"], "127.0.0.1");
        assert_eq!(name["family"], "IPv4");
        assert!(name["port"].as_u64().unwrap() > 0);
    }
}
