//! A non-blocking AF_UNIX stream socket that carries file descriptors (SCM_RIGHTS) beside its bytes.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

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
    /// Watched for reading only: see `room`.
    inner: AsyncFd<OwnedFd>,
    /// The same socket (a duplicate descriptor, made with the socket so that waiting for room
    /// never needs a new descriptor), watched for room to write only while a write waits for
    /// it. A socket always watched for writing would wake the primary's thread each time its
    /// peer reads: the kernel signals room to write on every read, which on a channel of small
    /// messages is as many wake-ups as there are messages.
    writer: Arc<OwnedFd>,
    room: Mutex<Option<Arc<AsyncFd<Arc<OwnedFd>>>>>,
}

/// How long a write waits before it tries again when the socket cannot be watched for room
/// (the reactor refused it: out of memory).
const ROOM_UNWATCHED_RETRY: std::time::Duration = std::time::Duration::from_millis(1);

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
        let writer = Arc::new(fd.try_clone()?);
        Ok(FdSocket {
            inner: watch(fd, Interest::READABLE)?,
            writer,
            room: Mutex::new(None),
        })
    }

    /// Waits for data and reads it.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        loop {
            let mut ready = self.inner.readable().await?;
            match ready.try_io(|fd| recv_with_fds(fd.as_raw_fd(), buf)) {
                Ok(Ok(read)) => {
                    // A read that did not fill `buf` took all there was: the next one would
                    // only find the socket empty. (Data that comes meanwhile is signalled anew.)
                    // Not so for a read that brought descriptors: the kernel ends a read after
                    // the bytes that carried them, whatever follows.
                    if read.len > 0
                        && read.len < buf.len()
                        && read.fds.is_empty()
                        && !read.fds_truncated
                    {
                        ready.clear_ready();
                    }
                    return Ok(read);
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    }

    /// Reads what is there now; `WouldBlock` when nothing is.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        recv_with_fds(self.inner.as_raw_fd(), buf)
    }

    /// Writes some of `data`, waiting until the socket takes bytes; `fd` rides on this write.
    pub async fn send(&self, data: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<usize> {
        let (sock, fd) = (self.inner.as_raw_fd(), fd.map(|f| f.as_raw_fd()));
        let mut waited = false;
        loop {
            match send_with_fd(sock, data, fd) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => {
                    // The socket takes bytes without waiting again: stop watching for room.
                    if !waited {
                        self.lock_room().take();
                    }
                    return done;
                }
            }
            match self.room_watch() {
                // Cleared before the next try, which alone says whether there is room now: room
                // made after it is signalled anew.
                Ok(room) => room.writable().await?.clear_ready(),
                Err(_) => tokio::time::sleep(ROOM_UNWATCHED_RETRY).await,
            }
            waited = true;
        }
    }

    /// The watch for room to write, registered the first time a write has to wait.
    fn room_watch(&self) -> io::Result<Arc<AsyncFd<Arc<OwnedFd>>>> {
        let mut room = self.lock_room();
        if let Some(watch) = room.as_ref() {
            return Ok(watch.clone());
        }
        let watched = watch(self.writer.clone(), Interest::WRITABLE)?;
        Ok(room.insert(Arc::new(watched)).clone())
    }

    fn lock_room(&self) -> std::sync::MutexGuard<'_, Option<Arc<AsyncFd<Arc<OwnedFd>>>>> {
        self.room.lock().unwrap_or_else(|e| e.into_inner())
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
    use std::time::Duration;

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
    fn what_follows_a_descriptor_is_read_too() {
        // The kernel ends a read after the bytes that carried descriptors: the short read is
        // not the socket's end, and what follows must still wake the reader.
        runtime().block_on(async {
            let (a, b) = stream_pair().unwrap();
            let (a, b) = (FdSocket::new(a).unwrap(), FdSocket::new(b).unwrap());
            let (passed, _keep) = stream_pair().unwrap();
            a.send(b"one", Some(passed.as_fd())).await.unwrap();
            a.send(b"two", Some(passed.as_fd())).await.unwrap();
            a.send(b"three", None).await.unwrap();
            let mut buf = [0u8; 64];
            let mut got = Vec::new();
            while got.len() < 11 {
                let read = tokio::time::timeout(Duration::from_secs(5), b.recv(&mut buf))
                    .await
                    .expect("what was sent is read")
                    .unwrap();
                got.extend_from_slice(&buf[..read.len]);
            }
            assert_eq!(got, b"onetwothree");
        });
    }

    #[test]
    fn a_full_socket_takes_bytes_again_once_its_peer_reads() {
        runtime().block_on(async {
            let (a, b) = stream_pair().unwrap();
            let (a, b) = (FdSocket::new(a).unwrap(), FdSocket::new(b).unwrap());
            let chunk = vec![7u8; 64 * 1024];
            // Fill the socket until a write has to wait.
            let mut filled = 0;
            loop {
                let write = a.send(&chunk, None);
                match tokio::time::timeout(Duration::from_millis(50), write).await {
                    Ok(n) => filled += n.unwrap(),
                    Err(_) => break,
                }
            }
            let reader = async {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0;
                while total < filled + (2 << 20) {
                    total += b.recv(&mut buf).await.unwrap().len;
                }
            };
            let writer = async {
                let mut sent = 0;
                while sent < 2 << 20 {
                    let left = (2 << 20) - sent;
                    sent += a.send(&chunk[..left.min(chunk.len())], None).await.unwrap();
                }
            };
            tokio::time::timeout(Duration::from_secs(10), async {
                tokio::join!(reader, writer);
            })
            .await
            .expect("the writer waited for room and got it");
        });
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
