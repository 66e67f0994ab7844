//! The child's side of rcluster's messenger channel, loaded by `require('rcluster')` in a worker
//! or the agent. The JavaScript thread reads the channel when Node's event loop sees it readable
//! (event_loop.rs) and hands JavaScript the whole frames of each read in one batch. It writes
//! from JavaScript's buffers while the socket takes them; what it does not take goes to a writer
//! thread, so a send never blocks the event loop. What waits for the writer is bounded, in bytes
//! and in memory files: past that, a send fails with ERR_RCLUSTER_QUEUE_FULL, and JavaScript can
//! wait until the queue has drained (`wait_drained`).
//!
//! A layer of its own, beside `binding`: it imports `os`, `wire`, `channel` (for a bound it
//! shares with the primary's link), `errors` and `js_error`, never `primary` or `binding`.

mod event_loop;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi::{JsString, JsStringLatin1};
use napi_derive::napi;

use self::event_loop::{AsyncWake, LoopCallback, ReadWatch, Waker};
use crate::errors::{self, RcError};
use crate::js_error::{js_error, Code};
use crate::os::fd_socket::{recv_with_fds, send_with_fd};
use crate::os::memory_file::{self, Mapping};
use crate::wire::frames::{next_file, Decoder, HEADER_LEN, MAX_ACTION_LEN, PREFIX_LEN};

/// What has been read for JavaScript: whole frames back to back, already checked by the decoder
/// (JavaScript reads their headers at the fixed offsets of docs/messenger-frames.md), and
/// whether the channel has ended.
#[derive(Default)]
struct Inbox {
    frames: Vec<u8>,
    /// The payloads of the FLAG_SHARED frames among them, mapped, in order.
    shared: VecDeque<Mapping>,
    closed: Option<String>,
}

/// What waits for the writer thread: bytes, and the descriptor that rides on their first write.
struct Outgoing {
    bytes: Vec<u8>,
    fd: Option<OwnedFd>,
    /// What it counts for in the queue: its bytes, and its memory file's.
    cost: usize,
}

/// What waits for the writer thread, shared with it.
#[derive(Default)]
struct WriteQueue {
    bytes: AtomicUsize,
    /// Memory files among it: each holds a descriptor of this process.
    files: AtomicUsize,
    /// Whether JavaScript waits for the queue to be empty.
    waited_for: AtomicBool,
    /// The writer thread has stopped (the channel is broken): nothing more goes out.
    broken: AtomicBool,
}

/// Memory files that may wait for the writer thread: each holds a descriptor, and a process has a
/// limited number of them (the primary's bound for one child is the same).
const MAX_QUEUED_FILES: usize = crate::channel::frame_link::MAX_QUEUED_FILES;

/// While a process sends without returning to its event loop, it still reads what comes, up to
/// this much: past it, what is sent to it waits in the primary, which then stops reading this
/// process (its sends fail with ERR_RCLUSTER_QUEUE_FULL) until it gets back to its event loop.
const MAX_INBOX_WHILE_SENDING: usize = 64 << 20;
const MAX_MAPPINGS_WHILE_SENDING: usize = 1024;

/// One `take()`: the frames received since the last one, and the end of the channel if it came.
#[napi(object)]
pub struct Batch {
    pub frames: Buffer,
    /// Set once the channel has ended: empty for an orderly end, else why it was dropped.
    pub closed: Option<String>,
}

#[napi]
pub struct ChildChannel {
    outbox: std_mpsc::Sender<Outgoing>,
    /// The socket, for writes straight from the JavaScript thread while the writer is idle.
    direct: UnixStream,
    /// What was handed to the writer thread and is not written yet.
    queued: Arc<WriteQueue>,
    /// The bound on `queued.bytes`.
    limit: usize,
    reader: Rc<RefCell<Reader>>,
    watch: ReadWatch,
    /// Tells JavaScript, from the writer thread, that the queue it waited for is empty.
    drained: AsyncWake,
    /// Where string payloads are written before they go into a memory file.
    scratch: Vec<u8>,
}

/// The largest scratch buffer kept between sends.
const MAX_KEPT_SCRATCH: usize = 16 << 20;

/// The largest payload a cluster allows (maxMessageSize's upper bound).
const MAX_FRAME_FROM_PRIMARY: usize = 512 << 20;

fn rc(e: RcError) -> napi::Error<Code> {
    js_error(e)
}

#[napi]
impl ChildChannel {
    /// `fd` is RCLUSTER_CHANNEL_FD. Frames are read up to the largest the primary may send.
    /// `on_wake` is called when frames were read, `on_drained` when the write queue JavaScript
    /// waited for is empty; `limit` bounds that queue, in bytes.
    #[napi(constructor)]
    pub fn new(
        env: Env,
        fd: i32,
        on_wake: Function<(), ()>,
        on_drained: Function<(), ()>,
        limit: f64,
    ) -> Result<Self, Code> {
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
        let writer = reader.try_clone().map_err(|e| io_error("dup", e))?;
        let direct = reader.try_clone().map_err(|e| io_error("dup", e))?;
        let queued = Arc::new(WriteQueue::default());
        let drained_callback =
            LoopCallback::new(env.raw(), on_drained.raw()).map_err(|e| io_error("callback", e))?;
        let drained = AsyncWake::start(env.raw(), Box::new(move || drained_callback.call()))
            .map_err(|e| io_error("wake", e))?;
        let (outbox, rx) = std_mpsc::channel::<Outgoing>();
        let (writer_queued, waker) = (queued.clone(), drained.waker());
        // Open means running: the writer has started (and is named, which a thread does itself
        // as it starts) before this returns.
        let (started, running) = std_mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("rcluster-channel-write".into())
            .spawn(move || {
                let _ = started.send(());
                write_loop(writer, rx, writer_queued, waker)
            })
            .map_err(|e| io_error("thread", e))?;
        let _ = running.recv();
        let reader = Rc::new(RefCell::new(Reader::new(reader)));
        let callback =
            LoopCallback::new(env.raw(), on_wake.raw()).map_err(|e| io_error("callback", e))?;
        let watched = reader.clone();
        let on_readable = Box::new(move || {
            let (news, open) = {
                let mut reader = watched.borrow_mut();
                let news = reader.read_available();
                (news, reader.inbox.closed.is_none())
            };
            // JavaScript takes what was read; nothing of the reader is borrowed meanwhile.
            if news {
                callback.call();
            }
            open
        });
        let watch =
            ReadWatch::start(env.raw(), fd, on_readable).map_err(|e| io_error("watch", e))?;
        Ok(ChildChannel {
            outbox,
            direct,
            queued,
            limit: limit as usize,
            reader,
            watch,
            drained,
            scratch: Vec::new(),
        })
    }

    /// Writes frames that JavaScript built (lib/messenger/frames.js), in order. The primary checks every
    /// frame it reads, so a mistake here costs this child its channel, never the primary.
    /// JavaScript keeps to the bound on the queue (it knows what it batches); this never refuses.
    /// Like every write here, returns the bytes queued, doubled, plus 1 if frames were read
    /// meanwhile (see `send`): one number, as this is the hot path.
    #[napi]
    pub fn write(&self, frames: BufferSlice) -> Result<f64, Code> {
        self.send(&frames, None)
    }

    /// Bytes waiting for the writer thread now.
    #[napi]
    pub fn queued_bytes(&self) -> f64 {
        self.queued.bytes.load(Ordering::Acquire) as f64
    }

    /// Whether the write queue is empty; if not, `on_drained` is called once it is (and the
    /// event loop is kept alive meanwhile). Throws ERR_RCLUSTER_NOT_RUNNING once the channel is
    /// broken: the queue will never drain.
    #[napi]
    pub fn wait_drained(&self) -> Result<bool, Code> {
        self.queued.waited_for.store(true, Ordering::Release);
        if self.queued.broken.load(Ordering::Acquire) {
            self.queued.waited_for.store(false, Ordering::Release);
            return Err(closed());
        }
        if self.queued.bytes.load(Ordering::Acquire) == 0 {
            self.queued.waited_for.store(false, Ordering::Release);
            self.drained.hold(false);
            return Ok(true);
        }
        self.drained.hold(true);
        Ok(false)
    }

    /// Waits, blocking, up to `timeout_ms` for the writer thread to write what it has: the
    /// process is exiting, and the thread ends with it. Returns the bytes left unwritten.
    #[napi]
    pub fn finish(&self, timeout_ms: u32) -> f64 {
        let deadline =
            std::time::Instant::now() + std::time::Duration::from_millis(u64::from(timeout_ms));
        loop {
            let left = self.queued.bytes.load(Ordering::Acquire);
            if left == 0
                || self.queued.broken.load(Ordering::Acquire)
                || std::time::Instant::now() >= deadline
            {
                return left as f64;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// A memory file for `len` payload bytes and `frame`, if the queue has room for them:
    /// checked before the file is made, so that a full queue costs no file.
    fn room_for_file(&self, frame: usize, len: usize) -> Result<(), Code> {
        let (bytes, files) = (
            self.queued.bytes.load(Ordering::Acquire),
            self.queued.files.load(Ordering::Acquire),
        );
        if files >= MAX_QUEUED_FILES || (bytes > 0 && bytes + frame + len > self.limit) {
            return Err(rc(RcError::new(
                errors::QUEUE_FULL,
                format!(
                    "messenger: {bytes} bytes ({files} memory files) of this process's messages wait to be written; the bound is {} bytes and {MAX_QUEUED_FILES} files",
                    self.limit
                ),
            )));
        }
        Ok(())
    }

    /// Writes a FLAG_SHARED frame (lib/messenger/frames.js built it) whose payload, `payload`'s bytes, goes
    /// in a sealed memory file. Throws ERR_RCLUSTER_QUEUE_FULL, and makes no file, when the
    /// queue is full.
    #[napi]
    pub fn write_shared_bytes(
        &self,
        frame: BufferSlice,
        payload: BufferSlice,
    ) -> Result<f64, Code> {
        self.room_for_file(frame.len(), payload.len())?;
        let file = memory_file::create(&payload).map_err(|e| shared_failed(&e))?;
        self.send(&frame, Some((file, payload.len())))
    }

    /// Like `write_shared_bytes` for a string of `len` bytes as Latin-1 (ASCII), or as UTF-8.
    #[napi]
    pub fn write_shared_string(
        &mut self,
        env: Env,
        frame: BufferSlice,
        payload: JsString,
        utf8: bool,
        len: u32,
    ) -> Result<f64, Code> {
        let len = len as usize;
        self.room_for_file(frame.len(), len)?;
        // The string's bytes go through a scratch buffer that is kept (when not too large):
        // memory written again is much cheaper than fresh pages.
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize(len + 1, 0);
        let mut written = 0usize;
        let (raw_env, value, at) = (env.raw(), payload.raw(), scratch.as_mut_ptr().cast());
        // SAFETY: napi writes at most `scratch.len()` bytes (with a NUL) into `scratch`.
        let status = unsafe {
            if utf8 {
                napi::sys::napi_get_value_string_utf8(raw_env, value, at, len + 1, &mut written)
            } else {
                napi::sys::napi_get_value_string_latin1(raw_env, value, at, len + 1, &mut written)
            }
        };
        let file = if status != napi::sys::Status::napi_ok || written != len {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the string is not the {len} bytes it was said to be"),
            ))
        } else {
            memory_file::create(&scratch[..len])
        };
        if scratch.capacity() <= MAX_KEPT_SCRATCH {
            self.scratch = scratch;
        }
        self.send(&frame, Some((file.map_err(|e| shared_failed(&e))?, len)))
    }

    /// The payload of the next FLAG_SHARED frame taken, mapped: a Buffer over the sender's pages.
    #[napi]
    pub fn next_shared<'env>(&self, env: &'env Env) -> Result<Option<BufferSlice<'env>>, Code> {
        let Some(map) = self.next_mapping(env) else {
            return Ok(None);
        };
        let (at, len) = (map.as_mut_ptr(), map.size());
        // SAFETY: the mapping is `len` bytes and lives as long as the Buffer: it is the hint,
        // dropped (unmapped) by the finalizer.
        unsafe { BufferSlice::from_external(env, at, len, map, release_mapping) }
            .map(Some)
            .map_err(|e| rc(RcError::new(errors::NOT_RUNNING, e.to_string())))
    }

    /// Like `next_shared`, for an ASCII string payload: a string over the sender's pages, which
    /// the seals keep from changing, as V8 requires of an external string. No copy is made.
    #[napi]
    pub fn next_shared_latin1<'env>(
        &self,
        env: &'env Env,
    ) -> Result<Option<JsStringLatin1<'env>>, Code> {
        let Some(map) = self.next_mapping(env) else {
            return Ok(None);
        };
        let (at, len) = (map.as_mut_ptr(), map.size());
        // SAFETY: as in `next_shared`; the bytes are ASCII (the sender checked), so Latin-1.
        unsafe { JsStringLatin1::from_external(env, at, len, map, release_mapping) }
            .map(Some)
            .map_err(|e| rc(RcError::new(errors::NOT_RUNNING, e.to_string())))
    }

    /// The next mapped payload, counted as memory V8 holds, so that its garbage collector
    /// frees the Buffers and strings over mappings as it would large ones of its own.
    fn next_mapping(&self, env: &Env) -> Option<Mapping> {
        let map = self.reader.borrow_mut().inbox.shared.pop_front()?;
        let _ = env.adjust_external_memory(map.size() as i64);
        Some(map)
    }

    /// While nothing waits for the writer thread, write here, from JavaScript's own buffer: no
    /// copy and no thread handoff. What the socket does not take now is copied for the writer,
    /// which keeps the order. A descriptor (with its payload's length) rides on the first byte
    /// written.
    ///
    /// Then it reads what has come meanwhile: a process that sends a long burst is also a
    /// receiver (of its own broadcasts, say) that does not get back to its event loop until the
    /// burst ends, and what the primary holds for it is bounded. Returns the bytes queued for
    /// the writer, doubled, plus 1 if frames were read for JavaScript to take (the event loop
    /// will not say so: the socket has been read).
    fn send(&self, bytes: &[u8], mut file: Option<(OwnedFd, usize)>) -> Result<f64, Code> {
        let mut sent = 0;
        let queue = &self.queued;
        if queue.bytes.load(Ordering::Acquire) == 0 {
            let raw = file.as_ref().map(|(f, _)| f.as_raw_fd());
            sent = send_with_fd(self.direct.as_raw_fd(), bytes, raw).unwrap_or(0);
            if sent > 0 {
                // The kernel holds the file now; our descriptor can go.
                file = None;
            }
        }
        if sent < bytes.len() {
            let rest = &bytes[sent..];
            let cost = rest.len() + file.as_ref().map_or(0, |(_, len)| *len);
            queue.bytes.fetch_add(cost, Ordering::AcqRel);
            let fd = file.map(|(fd, _)| {
                queue.files.fetch_add(1, Ordering::AcqRel);
                fd
            });
            let has_file = fd.is_some();
            let out = Outgoing {
                bytes: rest.to_vec(),
                fd,
                cost,
            };
            if self.outbox.send(out).is_err() {
                queue.bytes.fetch_sub(cost, Ordering::AcqRel);
                if has_file {
                    queue.files.fetch_sub(1, Ordering::AcqRel);
                }
                return Err(closed());
            }
        }
        let read = self.reader.borrow_mut().read_while_sending();
        let queued = queue.bytes.load(Ordering::Acquire) as f64;
        Ok(queued * 2.0 + if read { 1.0 } else { 0.0 })
    }

    #[napi]
    pub fn take(&self) -> Batch {
        let inbox = &mut self.reader.borrow_mut().inbox;
        Batch {
            frames: std::mem::take(&mut inbox.frames).into(),
            closed: inbox.closed.clone(),
        }
    }

    /// The common case of `take`: the frames received are copied into `into`, JavaScript's own
    /// buffer, kept from one read to the next, and their length returned. A Buffer made for each
    /// read would be an ArrayBuffer with a finalizer, which V8's young-generation collections
    /// sweep one by one: a process that receives often paid milliseconds a collection for them.
    /// Returns -1, and takes nothing, when the frames do not fit or the channel has ended: then
    /// `take` it is.
    #[napi]
    pub fn take_into(&self, mut into: BufferSlice) -> f64 {
        let inbox = &mut self.reader.borrow_mut().inbox;
        let len = inbox.frames.len();
        if inbox.closed.is_some() || len > into.len() {
            return -1.0;
        }
        into[..len].copy_from_slice(&inbox.frames);
        // Kept for the next reads; a batch too large for `into` leaves with its Vec (`take`).
        inbox.frames.clear();
        len as f64
    }

    /// Whether the channel keeps the event loop alive (while the child has handlers).
    #[napi]
    pub fn set_ref(&self, hold: bool) {
        self.watch.hold(hold);
    }
}

/// Small frames queued together go out in one write.
const BATCH_BYTES: usize = 64 * 1024;

/// The finalizer of a Buffer or string over a mapping.
fn release_mapping(env: Env, map: Mapping) {
    let _ = env.adjust_external_memory(-(map.size() as i64));
    drop(map);
}

fn closed() -> napi::Error<Code> {
    rc(RcError::new(
        errors::NOT_RUNNING,
        "the messenger channel is closed",
    ))
}

fn shared_failed(e: &io::Error) -> napi::Error<Code> {
    rc(RcError::new(
        errors::NOT_RUNNING,
        format!("messenger: cannot make the memory file of a large payload: {e}"),
    ))
}

/// Writes all of `bytes`, `fd` riding on the first byte. The socket is non-blocking (Node's
/// event loop watches it), so the writer thread waits for room with poll(2).
fn send_all(socket: &UnixStream, bytes: &[u8], mut fd: Option<&OwnedFd>) -> io::Result<()> {
    let mut at = 0;
    while at < bytes.len() {
        let raw = fd.map(|f| f.as_raw_fd());
        match send_with_fd(socket.as_raw_fd(), &bytes[at..], raw) {
            Ok(n) => {
                at += n;
                fd = None;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut room = libc::pollfd {
                    fd: socket.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one pollfd, ours, for the length of the call.
                unsafe { libc::poll(&mut room, 1, -1) };
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_loop(
    writer: UnixStream,
    rx: std_mpsc::Receiver<Outgoing>,
    queue: Arc<WriteQueue>,
    drained: Waker,
) {
    let joinable = |out: &Outgoing| out.fd.is_none() && out.bytes.len() < BATCH_BYTES;
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    while let Ok(first) = rx.recv() {
        let (mut cost, mut files) = (first.cost, usize::from(first.fd.is_some()));
        let result = if !joinable(&first) {
            send_all(&writer, &first.bytes, first.fd.as_ref())
        } else {
            batch.clear();
            batch.extend_from_slice(&first.bytes);
            let mut other = None;
            while batch.len() < BATCH_BYTES {
                match rx.try_recv() {
                    Ok(next) if !joinable(&next) => {
                        cost += next.cost;
                        files += usize::from(next.fd.is_some());
                        other = Some(next);
                        break;
                    }
                    Ok(next) => {
                        cost += next.cost;
                        batch.extend_from_slice(&next.bytes);
                    }
                    Err(_) => break,
                }
            }
            send_all(&writer, &batch, None).and_then(|()| {
                other.map_or(Ok(()), |next| {
                    send_all(&writer, &next.bytes, next.fd.as_ref())
                })
            })
        };
        if result.is_err() {
            break;
        }
        queue.files.fetch_sub(files, Ordering::AcqRel);
        let left = queue.bytes.fetch_sub(cost, Ordering::AcqRel) - cost;
        if left == 0 && queue.waited_for.swap(false, Ordering::AcqRel) {
            drained.wake();
        }
    }
    // The channel is broken (or closed): whoever waits for the queue must hear it never drains.
    queue.broken.store(true, Ordering::Release);
    if queue.waited_for.swap(false, Ordering::AcqRel) {
        drained.wake();
    }
}

/// The reading side: what the socket has, split into whole frames for JavaScript.
struct Reader {
    socket: UnixStream,
    decoder: Decoder,
    buf: Vec<u8>,
    /// Descriptors received and not yet claimed by their FLAG_SHARED frames, in order.
    fds: VecDeque<OwnedFd>,
    inbox: Inbox,
}

/// Reads per wake-up, at most: what is left waits for the next turn of the event loop.
const READS_PER_WAKE: usize = 16;

impl Reader {
    fn new(socket: UnixStream) -> Self {
        // The primary has checked what it forwards; this bound only keeps a broken stream from
        // growing without end.
        let max_frame = MAX_FRAME_FROM_PRIMARY + PREFIX_LEN + HEADER_LEN + MAX_ACTION_LEN;
        Reader {
            socket,
            decoder: Decoder::new(max_frame),
            buf: vec![0u8; 256 * 1024],
            fds: VecDeque::new(),
            inbox: Inbox::default(),
        }
    }

    /// `read_available` from within a send, unless JavaScript already has more than it should
    /// hold before it gets back to its event loop.
    fn read_while_sending(&mut self) -> bool {
        if self.inbox.frames.len() > MAX_INBOX_WHILE_SENDING
            || self.inbox.shared.len() > MAX_MAPPINGS_WHILE_SENDING
        {
            return false;
        }
        self.read_available()
    }

    /// Reads what the socket has now, without waiting. Returns whether JavaScript has anything
    /// new: frames, or the end of the channel.
    fn read_available(&mut self) -> bool {
        if self.inbox.closed.is_some() {
            return false;
        }
        let mut read_any = false;
        for _ in 0..READS_PER_WAKE {
            match recv_with_fds(self.socket.as_raw_fd(), &mut self.buf) {
                Ok(r) if r.len > 0 => {
                    self.fds.extend(r.fds);
                    self.decoder.push(&self.buf[..r.len]);
                    read_any = true;
                    if r.len < self.buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(_) => return self.end(String::new()),
                Err(e) => return self.end(e.to_string()),
            }
        }
        if !read_any {
            return false;
        }
        let (frames, shared) = match self.decoder.whole_frames() {
            Ok((frames, shared)) => (frames, shared),
            Err(e) => return self.end(e.to_string()),
        };
        let had = self.inbox.frames.len();
        self.inbox.frames.extend_from_slice(frames);
        for len in shared {
            match map_shared(&mut self.fds, len) {
                Ok(map) => self.inbox.shared.push_back(map),
                Err(why) => return self.end(why),
            }
        }
        self.inbox.frames.len() > had
    }

    fn end(&mut self, why: String) -> bool {
        self.inbox.closed = Some(why);
        true
    }
}

/// Maps the payload of a FLAG_SHARED frame from the next descriptor received.
fn map_shared(fds: &mut VecDeque<OwnedFd>, len: usize) -> std::result::Result<Mapping, String> {
    let fd = next_file(fds).map_err(|e| e.to_string())?;
    Mapping::receive(&fd, len).map_err(|e| format!("cannot map a shared payload: {e}"))
}
