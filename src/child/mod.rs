//! The child's side of rcluster's messenger channel, loaded by `require('rcluster')` in a worker
//! or the agent. One thread reads and splits frames and wakes JavaScript once per batch; another
//! writes, so a send never blocks the child's event loop.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::*;
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi_derive::napi;

use crate::binding::{hold_event_loop, weak_wake, Code, Wake};
use crate::channel::frames::{Decoder, HEADER_LEN, MAX_ACTION_LEN, PREFIX_LEN};
use crate::errors::{self, RcError};

/// What the reader thread has for JavaScript: whole frames back to back, already checked by the
/// decoder (JavaScript reads their headers at the fixed offsets of docs/messenger-frames.md), and
/// whether the channel has ended.
#[derive(Default)]
struct Inbox {
    frames: Vec<u8>,
    closed: Option<String>,
}

/// One `take()`: the frames received since the last one, and the end of the channel if it came.
#[napi(object)]
pub struct Batch {
    pub frames: Buffer,
    /// Set once the channel has ended: empty for an orderly end, else why it was dropped.
    pub closed: Option<String>,
}

#[napi]
pub struct ChildChannel {
    outbox: std_mpsc::Sender<Vec<u8>>,
    /// The socket, for writes straight from the JavaScript thread while the writer is idle.
    direct: UnixStream,
    /// Frames handed to the writer thread and not yet written.
    queued: Arc<AtomicUsize>,
    inbox: Arc<Mutex<Inbox>>,
    wake: Arc<Wake>,
    holds_loop: bool,
}

/// The largest payload a cluster allows (maxMessageSize's upper bound).
const MAX_FRAME_FROM_PRIMARY: usize = 512 << 20;

fn rc(e: RcError) -> napi::Error<Code> {
    crate::binding::js_error(e)
}

#[napi]
impl ChildChannel {
    /// `fd` is RCLUSTER_CHANNEL_FD. Frames are read up to the largest the primary may send.
    #[napi(constructor)]
    pub fn new(fd: i32, on_wake: Function<(), ()>) -> Result<Self, Code> {
        let io_error = |what: &str, e: std::io::Error| {
            rc(RcError::new(
                errors::NOT_RUNNING,
                format!("the messenger channel (fd {fd}): {what}: {e}"),
            ))
        };
        // SAFETY: fstat only reads the descriptor's metadata; it fails cleanly if fd is not open.
        let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
        if fd < 0 || unsafe { libc::fstat(fd, stat.as_mut_ptr()) } != 0 {
            return Err(io_error("not open", std::io::Error::last_os_error()));
        }
        // Processes this child starts must not inherit the channel: it would outlive the child.
        // SAFETY: fcntl(F_SETFD) on a descriptor just checked to be open.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        // SAFETY: the primary put this descriptor here for us and nothing else in this process uses it.
        let reader = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
        reader
            .set_nonblocking(false)
            .map_err(|e| io_error("blocking mode", e))?;
        let writer = reader.try_clone().map_err(|e| io_error("dup", e))?;
        let direct = reader.try_clone().map_err(|e| io_error("dup", e))?;
        let queued = Arc::new(AtomicUsize::new(0));
        let wake = weak_wake(on_wake)?;
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        // The primary has checked what it forwards; this bound only keeps a broken stream from
        // growing without end.
        let max_frame = MAX_FRAME_FROM_PRIMARY + PREFIX_LEN + HEADER_LEN + MAX_ACTION_LEN;
        let (outbox, rx) = std_mpsc::channel::<Vec<u8>>();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map(|_| ())
                .map_err(|e| io_error("thread", e))
        };
        let writer_queued = queued.clone();
        spawn(
            "rcluster-channel-write",
            Box::new(move || write_loop(writer, rx, writer_queued)),
        )?;
        let (thread_inbox, thread_wake) = (inbox.clone(), wake.clone());
        spawn(
            "rcluster-channel-read",
            Box::new(move || read_loop(reader, max_frame, thread_inbox, thread_wake)),
        )?;
        Ok(ChildChannel {
            outbox,
            direct,
            queued,
            inbox,
            wake,
            holds_loop: false,
        })
    }

    /// Writes frames that JavaScript built (lib/frames.js), in order. The primary checks every
    /// frame it reads, so a mistake here costs this child its channel, never the primary.
    #[napi]
    pub fn write(&self, frames: Buffer) -> Result<(), Code> {
        // While nothing waits for the writer thread, write here, from JavaScript's own buffer:
        // no copy and no thread handoff. What the socket does not take now is copied for the
        // writer, which keeps the order.
        let mut sent = 0;
        if self.queued.load(Ordering::Acquire) == 0 {
            sent = send_now(&self.direct, &frames).unwrap_or(0);
            if sent == frames.len() {
                return Ok(());
            }
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.outbox.send(frames[sent..].to_vec()).map_err(|_| {
            rc(RcError::new(
                errors::NOT_RUNNING,
                "the messenger channel is closed",
            ))
        })
    }

    #[napi]
    pub fn take(&self) -> Batch {
        let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        Batch {
            frames: std::mem::take(&mut inbox.frames).into(),
            closed: inbox.closed.clone(),
        }
    }

    /// Whether the channel keeps the event loop alive (while the child has handlers).
    #[napi]
    pub fn set_ref(&mut self, env: Env, hold: bool) -> Result<(), Code> {
        if hold != self.holds_loop {
            hold_event_loop(&env, &self.wake, hold)?;
            self.holds_loop = hold;
        }
        Ok(())
    }
}

/// Small frames queued together go out in one write.
const BATCH_BYTES: usize = 64 * 1024;

/// A write that never blocks (the socket itself is in blocking mode for the threads).
fn send_now(socket: &UnixStream, bytes: &[u8]) -> std::io::Result<usize> {
    nix::sys::socket::send(
        socket.as_raw_fd(),
        bytes,
        nix::sys::socket::MsgFlags::MSG_DONTWAIT | nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
    )
    .map_err(std::io::Error::from)
}

fn write_loop(mut writer: UnixStream, rx: std_mpsc::Receiver<Vec<u8>>, queued: Arc<AtomicUsize>) {
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    while let Ok(first) = rx.recv() {
        let mut taken = 1;
        let result = if first.len() >= BATCH_BYTES {
            writer.write_all(&first)
        } else {
            batch.clear();
            batch.extend_from_slice(&first);
            let mut large = None;
            while batch.len() < BATCH_BYTES {
                match rx.try_recv() {
                    Ok(next) if next.len() >= BATCH_BYTES => {
                        taken += 1;
                        large = Some(next);
                        break;
                    }
                    Ok(next) => {
                        taken += 1;
                        batch.extend_from_slice(&next);
                    }
                    Err(_) => break,
                }
            }
            writer
                .write_all(&batch)
                .and_then(|()| large.map_or(Ok(()), |next| writer.write_all(&next)))
        };
        if result.is_err() {
            return;
        }
        queued.fetch_sub(taken, Ordering::AcqRel);
    }
}

fn read_loop(mut reader: UnixStream, max_frame: usize, inbox: Arc<Mutex<Inbox>>, wake: Arc<Wake>) {
    let mut decoder = Decoder::new(max_frame);
    let mut buf = vec![0u8; 256 * 1024];
    // Adds frames (and maybe the end) to the inbox; one wake per batch: JavaScript takes
    // everything queued when it runs.
    let deliver = |frames: &[u8], closed: Option<String>| {
        let was_empty = {
            let mut inbox = inbox.lock().unwrap_or_else(|e| e.into_inner());
            let was_empty = inbox.frames.is_empty() && inbox.closed.is_none();
            inbox.frames.extend_from_slice(frames);
            if closed.is_some() {
                inbox.closed = closed;
            }
            was_empty
        };
        if was_empty {
            wake.call((), ThreadsafeFunctionCallMode::NonBlocking);
        }
    };
    let mut batch = Vec::new();
    loop {
        let n = match reader.read(&mut buf) {
            // A signal handled by the process interrupted the wait; nothing was lost.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) | Err(_) => {
                deliver(&[], Some(String::new()));
                return;
            }
            Ok(n) => n,
        };
        decoder.push(&buf[..n]);
        batch.clear();
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => batch.extend_from_slice(&frame.bytes),
                Ok(None) => break,
                Err(e) => {
                    deliver(&batch, Some(e.to_string()));
                    return;
                }
            }
        }
        if !batch.is_empty() {
            deliver(&batch, None);
        }
    }
}
