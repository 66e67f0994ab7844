//! A non-blocking AF_UNIX stream socket that carries file descriptors (SCM_RIGHTS) beside its bytes.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Descriptors one read may carry. Node sends one per message; a child that sends more is cut off
/// when the kernel truncates them (MSG_CTRUNC), which we report as a protocol error.
const MAX_FDS_PER_READ: usize = 8;

/// A connected pair for a child: `(ours, theirs)`. Both ends are close-on-exec; the spawner
/// re-creates `theirs` at the wanted number in the child without that flag.
pub fn stream_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(io::Error::from)
}

/// Clears O_NONBLOCK on this descriptor's open file description (the other end of a pair keeps
/// its own flags).
pub fn set_blocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?);
    fcntl(fd, FcntlArg::F_SETFL(flags & !OFlag::O_NONBLOCK)).map_err(io::Error::from)?;
    Ok(())
}

/// Registers a descriptor with the runtime's reactor. Only for types that own their descriptor
/// (`OwnedFd`, a pidfd held in an `Arc`): it then stays open, and the same, for the watch's life.
pub fn watch<T: AsRawFd>(inner: T, interest: Interest) -> io::Result<AsyncFd<T>> {
    // SAFETY: per this function's contract, `inner` owns an open descriptor until it is dropped,
    // which happens only when the AsyncFd itself is dropped.
    unsafe { AsyncFd::register_with_interest(inner, interest) }.map_err(|e| e.into_parts().1)
}

pub struct FdSocket {
    inner: AsyncFd<OwnedFd>,
}

/// What one read brought: bytes (0 means end of stream) and any descriptors that came with them.
pub struct Received {
    pub len: usize,
    pub fds: Vec<OwnedFd>,
    pub fds_truncated: bool,
}

impl FdSocket {
    /// Wraps an already non-blocking stream socket. Must be called inside a tokio runtime.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        set_nonblocking(fd.as_fd())?;
        Ok(FdSocket {
            inner: watch(fd, Interest::READABLE | Interest::WRITABLE)?,
        })
    }

    /// Waits for data and reads it.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        self.inner
            .async_io(Interest::READABLE, |fd| recv_with_fds(fd.as_raw_fd(), buf))
            .await
    }

    /// Reads what is there now; `WouldBlock` when nothing is.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        recv_with_fds(self.inner.as_raw_fd(), buf)
    }

    /// Waits until the socket takes bytes, then writes some of `data`; `fd` rides on this write.
    pub async fn send(&self, data: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<usize> {
        self.inner
            .async_io(Interest::WRITABLE, |sock| {
                send_with_fd(sock.as_raw_fd(), data, fd.map(|f| f.as_raw_fd()))
            })
            .await
    }

    /// Ends both directions: the peer reads end-of-stream, our pending reads return 0.
    pub fn shutdown(&self) {
        // ENOTCONN when the peer is already gone: nothing to do.
        let _ =
            nix::sys::socket::shutdown(self.inner.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    }
}

/// One read, without waiting, with the descriptors that came with it; `WouldBlock` when there is
/// nothing to read.
///
/// Written on libc rather than nix's `recvmsg`: when the kernel truncates the control data
/// (MSG_CTRUNC: more descriptors than fit), nix refuses to walk it, and the descriptors that did
/// arrive would stay open in our table for good. Here every one of them is taken over, so that
/// dropping `Received` closes them.
pub fn recv_with_fds(fd: RawFd, buf: &mut [u8]) -> io::Result<Received> {
    // u64 elements keep the buffer aligned for cmsghdr.
    const SPACE: usize = cmsg_space_for(MAX_FDS_PER_READ);
    let mut control = [0u64; SPACE.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty one; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = SPACE as _;
    // SAFETY: recvmsg writes at most iov_len bytes into buf and msg_controllen into control.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the CMSG_* walk stays within msg_controllen, which the kernel set to what it wrote;
    // each SCM_RIGHTS entry holds whole c_ints, each a descriptor just installed in our table.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let bytes = (*c).cmsg_len as usize - (data as usize - c as usize);
                for i in 0..bytes / std::mem::size_of::<libc::c_int>() {
                    let raw = std::ptr::read_unaligned(data.cast::<libc::c_int>().add(i));
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(Received {
        len: n as usize,
        fds,
        fds_truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

const fn cmsg_space_for(fds: usize) -> usize {
    // CMSG_SPACE is not const in libc; this is its definition on Linux.
    let align = std::mem::size_of::<usize>();
    let header = (std::mem::size_of::<libc::cmsghdr>() + align - 1) & !(align - 1);
    let data = (fds * std::mem::size_of::<libc::c_int>() + align - 1) & !(align - 1);
    header + data
}

/// One write, without waiting, of some of `data`, `fd` riding on it; `WouldBlock` when the
/// socket takes nothing now.
pub fn send_with_fd(sock: RawFd, data: &[u8], fd: Option<RawFd>) -> io::Result<usize> {
    let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
    let iov = [IoSlice::new(data)];
    let fds;
    let cmsgs: &[ControlMessage] = match fd {
        Some(f) => {
            fds = [f];
            &[ControlMessage::ScmRights(&fds)]
        }
        None => &[],
    };
    sendmsg::<()>(sock, &iov, cmsgs, flags, None).map_err(io::Error::from)
}

pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?);
    if !flags.contains(OFlag::O_NONBLOCK) {
        fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map_err(io::Error::from)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn bytes_and_a_descriptor_cross_together() {
        runtime().block_on(async {
            let (a, b) = stream_pair().unwrap();
            let (a, b) = (FdSocket::new(a).unwrap(), FdSocket::new(b).unwrap());
            let (passed, _keep) = stream_pair().unwrap();
            let n = a.send(b"hello\n", Some(passed.as_fd())).await.unwrap();
            assert_eq!(n, 6);
            let mut buf = [0u8; 64];
            let got = b.recv(&mut buf).await.unwrap();
            assert_eq!(&buf[..got.len], b"hello\n");
            assert_eq!(got.fds.len(), 1);
            assert!(!got.fds_truncated);
        });
    }

    #[test]
    fn too_many_descriptors_are_reported_and_none_is_kept() {
        let (a, b) = stream_pair().unwrap();
        // Pass the write ends of 20 pipes: a read end reads end-of-file only once every copy of
        // its write end is closed, ours and any the receiver kept.
        let pipes: Vec<_> = (0..20).map(|_| std::io::pipe().unwrap()).collect();
        let raw: Vec<RawFd> = pipes.iter().map(|(_, w)| w.as_raw_fd()).collect();
        sendmsg::<()>(
            a.as_raw_fd(),
            &[IoSlice::new(b"x")],
            &[ControlMessage::ScmRights(&raw)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        let readers: Vec<_> = pipes.into_iter().map(|(r, _)| r).collect();
        let mut buf = [0u8; 8];
        let got = recv_with_fds(b.as_raw_fd(), &mut buf).unwrap();
        assert!(got.fds_truncated);
        assert_eq!(got.fds.len(), MAX_FDS_PER_READ);
        drop(got);
        for r in &readers {
            set_nonblocking(r.as_fd()).unwrap();
            let n = nix::unistd::read(r, &mut buf);
            assert_eq!(n, Ok(0), "a received descriptor is still open");
        }
    }

    #[test]
    fn shutdown_reads_as_end_of_stream() {
        runtime().block_on(async {
            let (a, b) = stream_pair().unwrap();
            let (a, b) = (FdSocket::new(a).unwrap(), FdSocket::new(b).unwrap());
            a.shutdown();
            let mut buf = [0u8; 8];
            assert_eq!(b.recv(&mut buf).await.unwrap().len, 0);
        });
    }

    #[test]
    fn try_recv_would_block_when_empty() {
        runtime().block_on(async {
            let (a, _b) = stream_pair().unwrap();
            let a = FdSocket::new(a).unwrap();
            let mut buf = [0u8; 8];
            let err = a.try_recv(&mut buf).err().unwrap();
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        });
    }
}
