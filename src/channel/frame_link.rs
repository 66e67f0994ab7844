//! The primary's end of one child's messenger channel: a task that splits what the child writes
//! into frames (src/wire/frames.rs) and writes the frames routed to it. What waits to be
//! written is bounded in bytes per child, so a child that stops reading costs a bounded amount of
//! memory and never slows delivery to the others.
//!
//! Reading is paced: the task does not read a child whose own queue is over its bound (a process
//! that does not read what it is sent cannot send more; what it sends waits in its socket and
//! then in its own bounded write queue), nor more than READ_AHEAD bytes the supervisor has not
//! routed yet.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

use crate::os::fd_socket::FdSocket;
use crate::os::memory_file::SealedFile;
use crate::wire::frames::{
    self, next_file, Decoder, FrameError, FLAG_SHARED, PREFIX_LEN, SHARED_LEN_BYTES,
};

const READ_CHUNK: usize = 256 * 1024;
/// Small frames waiting for one child are written together, up to this many bytes per write;
/// a larger frame is written from its shared buffer as it is.
const BATCH_BYTES: usize = 64 * 1024;

/// A frame as a link reads it: a FLAG_SHARED frame holds its payload's memory file, checked.
pub type Frame = frames::Frame<SealedFile>;

impl Frame {
    /// The memory this frame holds: its bytes and the payload in its memory file.
    pub fn weight(&self) -> usize {
        self.bytes.len() + self.shared.as_ref().map_or(0, SealedFile::size)
    }
}

pub enum FrameEvent {
    /// A batch of frames from one read. The link reads on once the batch is dropped (routed).
    Frames(ReadBatch),
    /// The child broke the frame format; its channel is closed after this.
    ProtocolError(String),
    Closed,
}

pub type FrameSink = Box<dyn Fn(FrameEvent) + Send + Sync>;

/// The frames of one read, and their share of the read-ahead, given back when they are dropped.
pub struct ReadBatch {
    pub frames: Vec<Frame>,
    _credit: ReadCredit,
}

/// Bytes and memory files read from a child and not routed yet; dropping it lets the link read
/// again.
struct ReadCredit {
    bytes: usize,
    files: usize,
    unrouted: Arc<Unrouted>,
    wake: Arc<Notify>,
}

#[derive(Default)]
struct Unrouted {
    bytes: AtomicUsize,
    files: AtomicUsize,
}

impl Drop for ReadCredit {
    fn drop(&mut self) {
        self.unrouted.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        self.unrouted.files.fetch_sub(self.files, Ordering::AcqRel);
        self.wake.notify_one();
    }
}

/// What the link reads ahead of the supervisor's routing: enough to keep it busy, while a child
/// that floods cannot pile its frames (or memory files, each a descriptor) up in the primary
/// faster than they are routed.
const READ_AHEAD: usize = 4 * READ_CHUNK;
const READ_AHEAD_FILES: usize = 64;

/// What a queued frame costs beyond its bytes: its queue slot, its shared buffer's header and
/// allocation. Counted so that a flood of tiny frames is bounded by the memory it really holds.
pub const ENTRY_OVERHEAD: usize = 128;

/// A queue that held this much of the heap, once drained, gives its memory back to the system.
const TRIM_AFTER: usize = 4 << 20;

/// How long the heap must have been left alone before it is trimmed: a trim costs the next
/// allocations their pages again, so a queue that fills and drains all the time is not trimmed
/// each time, only once it rests. (glibc only: musl's allocator has no trim.)
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

/// A frame ready to write, shared by every target: one broadcast is one allocation (and at most
/// one memory file), written to each.
#[derive(Clone)]
pub struct Outgoing {
    pub bytes: Arc<Vec<u8>>,
    pub shared: Option<SealedFile>,
    /// The memory it holds while it waits (Frame::weight).
    pub weight: usize,
}

/// What `out` counts for in a queue.
fn cost(out: &Outgoing) -> usize {
    out.weight + ENTRY_OVERHEAD
}

/// What `out` holds of the primary's heap while it waits: a memory file's payload is not there.
fn heap_cost(out: &Outgoing) -> usize {
    out.bytes.len() + ENTRY_OVERHEAD
}

impl Outgoing {
    /// The same frame with its payload in line, read from its memory file.
    pub fn in_line(&self) -> std::io::Result<Outgoing> {
        let Some(shared) = &self.shared else {
            return Ok(self.clone());
        };
        let payload = shared.read()?;
        let header_and_action = &self.bytes[..self.bytes.len() - SHARED_LEN_BYTES];
        let mut bytes = Vec::with_capacity(header_and_action.len() + payload.len());
        bytes.extend_from_slice(header_and_action);
        bytes.extend_from_slice(&payload);
        let body = u32::try_from(bytes.len() - PREFIX_LEN).map_err(std::io::Error::other)?;
        bytes[..PREFIX_LEN].copy_from_slice(&body.to_le_bytes());
        bytes[PREFIX_LEN + 3] &= !FLAG_SHARED;
        Ok(Outgoing {
            weight: bytes.len(),
            bytes: Arc::new(bytes),
            shared: None,
        })
    }

    pub fn new(frame: Frame) -> Self {
        Outgoing {
            weight: frame.weight(),
            bytes: Arc::new(frame.bytes),
            shared: frame.shared,
        }
    }
}

/// Memory files (large payloads) that may wait for one child: each holds a descriptor in the
/// primary, and the primary's descriptors are also its listening sockets' connections. Past
/// this, payloads are queued in line (read from their files), under the bound on bytes.
pub const MAX_QUEUED_FILES: usize = 512;

/// Descriptors a child may send ahead of the frames they belong to.
const MAX_PENDING_FDS: usize = 16;

/// The queue to one child.
#[derive(Clone)]
pub struct FrameLink {
    tx: mpsc::UnboundedSender<Outgoing>,
    queued: Arc<AtomicUsize>,
    /// Of what is queued, the frames with a memory file.
    files: Arc<AtomicUsize>,
    /// A frame was refused for a full queue since the queue was last half empty.
    refused: Arc<AtomicBool>,
    limit: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The child's queue holds `limit` bytes already: it is not reading.
    Full {
        limit: usize,
    },
    /// A payload could not be read from its memory file to be queued in line.
    Unreadable(String),
    Closed,
}

impl FrameLink {
    pub fn send(&self, frame: Outgoing) -> Result<(), SendError> {
        self.queue(frame, true)
    }

    /// Queues a frame past the bound: the primary's own news to a sender (what it sent could not
    /// be delivered, its request failed) must never be lost. What it costs is bounded all the
    /// same: it answers what the child sent, and a child over its bound is not read.
    pub fn send_past_bound(&self, frame: Outgoing) -> Result<(), SendError> {
        self.queue(frame, false)
    }

    fn queue(&self, mut frame: Outgoing, bounded: bool) -> Result<(), SendError> {
        if frame.shared.is_some() && self.files.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED_FILES {
            self.files.fetch_sub(1, Ordering::AcqRel);
            frame = frame
                .in_line()
                .map_err(|e| SendError::Unreadable(e.to_string()))?;
        }
        let shared = frame.shared.is_some();
        let unqueue_file = || {
            if shared {
                self.files.fetch_sub(1, Ordering::AcqRel);
            }
        };
        let len = cost(&frame);
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        // One frame always fits an empty queue, however large it is.
        if bounded && before > 0 && before + len > self.limit {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            unqueue_file();
            self.refused.store(true, Ordering::Release);
            return Err(SendError::Full { limit: self.limit });
        }
        self.tx.send(frame).map_err(|_| {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            unqueue_file();
            SendError::Closed
        })
    }
}

/// Starts the task for one child's channel. `max_frame` bounds what the child may send;
/// `queue_limit` bounds what may wait to be written to it.
pub fn start(
    socket: OwnedFd,
    max_frame: usize,
    queue_limit: usize,
    sink: FrameSink,
) -> io::Result<FrameLink> {
    let socket = FdSocket::new(socket)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let files = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicBool::new(false));
    let task = Task {
        socket,
        max_frame,
        limit: queue_limit,
        queued: queued.clone(),
        files: files.clone(),
        refused: refused.clone(),
        unrouted: Arc::new(Unrouted::default()),
        routed: Arc::new(Notify::new()),
        sink,
    };
    tokio::spawn(task.run(rx));
    Ok(FrameLink {
        tx,
        queued,
        files,
        refused,
        limit: queue_limit,
    })
}

struct Task {
    socket: FdSocket,
    max_frame: usize,
    limit: usize,
    /// Shared with the FrameLink: what waits to be written to the child, and its memory files.
    queued: Arc<AtomicUsize>,
    files: Arc<AtomicUsize>,
    refused: Arc<AtomicBool>,
    /// What was read and handed to the supervisor, not routed yet (see ReadCredit).
    unrouted: Arc<Unrouted>,
    routed: Arc<Notify>,
    sink: FrameSink,
}

impl Task {
    /// Whether to read the child now (see the module's doc).
    fn may_read(&self, writable: bool) -> bool {
        let queued = self.queued.load(Ordering::Acquire);
        let mut own_queue_ok =
            queued <= self.limit && self.files.load(Ordering::Acquire) < MAX_QUEUED_FILES;
        // A full queue refuses what would overfill it, so it seldom goes over its bound: once it
        // has refused something, the child is read again only when half of it is free.
        if own_queue_ok && self.refused.load(Ordering::Acquire) {
            own_queue_ok = queued <= self.limit / 2;
            if own_queue_ok {
                self.refused.store(false, Ordering::Release);
            }
        }
        (!writable || own_queue_ok)
            && self.unrouted.bytes.load(Ordering::Acquire) <= READ_AHEAD
            && self.unrouted.files.load(Ordering::Acquire) <= READ_AHEAD_FILES
    }

    /// A frame routed to the child: queued to be written, or dropped if it never will be.
    fn queue_for_write(
        &self,
        out: Outgoing,
        writable: bool,
        pending: &mut VecDeque<Outgoing>,
        in_heap: &mut usize,
    ) {
        if writable {
            *in_heap += heap_cost(&out);
            pending.push_back(out);
        } else {
            self.discard(&out);
        }
    }

    /// Drops a frame that will never be written: the child's end is broken.
    fn discard(&self, out: &Outgoing) {
        self.queued.fetch_sub(cost(out), Ordering::AcqRel);
        if out.shared.is_some() {
            self.files.fetch_sub(1, Ordering::AcqRel);
        }
    }

    async fn run(self, mut outbox: mpsc::UnboundedReceiver<Outgoing>) {
        let mut decoder = Decoder::new(self.max_frame);
        let mut scratch = vec![0u8; READ_CHUNK];
        let mut pending: VecDeque<Outgoing> = VecDeque::new();
        // Descriptors received and not yet claimed by their (shared payload) frames, in order.
        let mut fds: VecDeque<OwnedFd> = VecDeque::new();
        // What is being written now, and how much of it is out.
        let mut current: Option<Outgoing> = None;
        let mut written = 0usize;
        let mut outbox_open = true;
        // A failed write (the child is gone) ends writing, not reading: what the child wrote
        // before it died is still read, up to the end of the stream.
        let mut writable = true;
        // What the frames in `pending` hold of the heap, and the most they held since the queue
        // was last empty.
        let (mut in_heap, mut peak) = (0usize, 0usize);
        loop {
            // Frames routed in one go (a map's list of workers and its request, say) are all
            // taken before the next write, so that they leave together: one wake-up of the child.
            while outbox_open {
                match outbox.try_recv() {
                    Ok(out) => self.queue_for_write(out, writable, &mut pending, &mut in_heap),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => outbox_open = false,
                }
            }
            if current.is_none() {
                current = next_write(&mut pending, &self.queued, &mut in_heap);
                if current.as_ref().is_some_and(|out| out.shared.is_some()) {
                    self.files.fetch_sub(1, Ordering::AcqRel);
                }
                written = 0;
                if current.is_none() && peak > 0 && self.queued.load(Ordering::Acquire) == 0 {
                    if peak >= TRIM_AFTER {
                        give_back(&mut pending);
                    }
                    peak = 0;
                }
            }
            peak = peak.max(in_heap);
            let head = current.clone();
            let may_read = self.may_read(writable);
            tokio::select! {
                read = self.socket.recv(&mut scratch), if may_read => match read {
                    Ok(r) if r.len > 0 => {
                        decoder.push(&scratch[..r.len]);
                        fds.extend(r.fds);
                        let mut batch = Vec::new();
                        let failed = loop {
                            match decoder.next_frame().and_then(|f| claim_shared(f, &mut fds, self.max_frame)) {
                                Ok(Some(frame)) => batch.push(frame),
                                Ok(None) if r.fds_truncated || fds.len() > MAX_PENDING_FDS => {
                                    break Some("descriptors without shared payloads".to_string())
                                }
                                Ok(None) => break None,
                                Err(e) => break Some(e.to_string()),
                            }
                        };
                        if !batch.is_empty() {
                            let bytes = batch.iter().map(|f| f.bytes.len() + ENTRY_OVERHEAD).sum();
                            let files = batch.iter().filter(|f| f.shared.is_some()).count();
                            self.unrouted.bytes.fetch_add(bytes, Ordering::AcqRel);
                            self.unrouted.files.fetch_add(files, Ordering::AcqRel);
                            let credit = ReadCredit {
                                bytes,
                                files,
                                unrouted: self.unrouted.clone(),
                                wake: self.routed.clone(),
                            };
                            (self.sink)(FrameEvent::Frames(ReadBatch { frames: batch, _credit: credit }));
                        }
                        if let Some(why) = failed {
                            self.socket.shutdown();
                            (self.sink)(FrameEvent::ProtocolError(why));
                            (self.sink)(FrameEvent::Closed);
                            return;
                        }
                    }
                    // End of stream, a reset: the child is gone or closed its end.
                    _ => break,
                },
                // Routing caught up, or the child's queue shrank: may_read is looked at again.
                () = self.routed.notified(), if !may_read => {}
                wrote = async {
                    match &head {
                        // A shared payload's descriptor rides on the first bytes of its frame.
                        Some(out) => {
                            let fd = out.shared.as_ref().filter(|_| written == 0).map(SealedFile::fd);
                            self.socket.send(&out.bytes[written..], fd).await
                        }
                        None => std::future::pending().await,
                    }
                }, if writable => match wrote {
                    Ok(n) => {
                        written += n;
                        if head.as_ref().is_some_and(|out| written == out.bytes.len()) {
                            current = None;
                        }
                    }
                    Err(_) => {
                        writable = false;
                        for out in pending.drain(..) {
                            self.discard(&out);
                        }
                        pending = VecDeque::new();
                        in_heap = 0;
                        current = None;
                    }
                },
                next = outbox.recv(), if outbox_open => match next {
                    Some(out) => self.queue_for_write(out, writable, &mut pending, &mut in_heap),
                    None => outbox_open = false,
                },
            }
        }
        self.socket.shutdown();
        (self.sink)(FrameEvent::Closed);
        if peak >= TRIM_AFTER {
            drop(pending);
            trim_heap();
        }
    }
}

/// A queue that held a burst gives its memory back once drained: the deque's slots, and the
/// heap pages its frames were in, which the allocator would otherwise keep for this process.
fn give_back(pending: &mut VecDeque<Outgoing>) {
    pending.shrink_to(64);
    trim_heap();
}

/// Returns the allocator's free pages to the system, off the routing thread, once no queue has
/// asked for it for TRIM_DELAY.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::sync::atomic::{AtomicBool, AtomicU64};
        use std::sync::OnceLock;
        use std::time::Instant;
        static START: OnceLock<Instant> = OnceLock::new();
        static LAST_ASKED: AtomicU64 = AtomicU64::new(0);
        static SCHEDULED: AtomicBool = AtomicBool::new(false);
        let now = || START.get_or_init(Instant::now).elapsed().as_millis() as u64;
        LAST_ASKED.store(now(), Ordering::Release);
        if SCHEDULED.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(async move {
            let delay = TRIM_DELAY.as_millis() as u64;
            loop {
                tokio::time::sleep(TRIM_DELAY).await;
                let asked = LAST_ASKED.load(Ordering::Acquire);
                if now() < asked + delay {
                    continue;
                }
                // SAFETY: malloc_trim only walks the allocator's own free lists; any thread may
                // call it.
                let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
                SCHEDULED.store(false, Ordering::Release);
                // Asked again while it ran: once more, unless another pass is already due.
                if LAST_ASKED.load(Ordering::Acquire) == asked
                    || SCHEDULED.swap(true, Ordering::AcqRel)
                {
                    break;
                }
            }
        });
    }
}

/// Pairs a shared payload's frame with the next descriptor the child sent, and checks both.
fn claim_shared(
    frame: Option<Frame>,
    fds: &mut VecDeque<OwnedFd>,
    max_frame: usize,
) -> Result<Option<Frame>, FrameError> {
    let Some(mut frame) = frame else {
        return Ok(None);
    };
    if let Some(len) = frame.shared_len() {
        if len > max_frame {
            return Err(FrameError::TooLarge {
                len,
                limit: max_frame,
            });
        }
        let file = SealedFile::verify(next_file(fds)?, len)
            .map_err(|refused| FrameError::SharedFile(refused.0))?;
        frame.shared = Some(file);
    }
    Ok(Some(frame))
}

/// The next write: a large frame or one with a descriptor as it is, or small frames joined.
/// `in_heap` follows what the frames in `pending` hold in the primary's heap (not memory files).
fn next_write(
    pending: &mut VecDeque<Outgoing>,
    queued: &AtomicUsize,
    in_heap: &mut usize,
) -> Option<Outgoing> {
    let joinable = |out: &Outgoing| out.shared.is_none() && out.bytes.len() < BATCH_BYTES;
    let first = pending.pop_front()?;
    queued.fetch_sub(cost(&first), Ordering::AcqRel);
    *in_heap -= heap_cost(&first);
    if !joinable(&first)
        || pending.front().is_none_or(|next| {
            !joinable(next) || first.bytes.len() + next.bytes.len() > BATCH_BYTES
        })
    {
        return Some(first);
    }
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    batch.extend_from_slice(&first.bytes);
    while let Some(next) = pending.front() {
        if !joinable(next) || batch.len() + next.bytes.len() > BATCH_BYTES {
            break;
        }
        batch.extend_from_slice(&next.bytes);
        queued.fetch_sub(cost(next), Ordering::AcqRel);
        *in_heap -= heap_cost(next);
        pending.pop_front();
    }
    Some(Outgoing {
        weight: batch.len(),
        bytes: Arc::new(batch),
        shared: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::memory_file;
    use crate::wire::frames::{encode, parse, Header, Kind, Target, FLAG_BINARY};

    #[test]
    fn a_shared_payload_put_in_line_is_the_same_message() {
        let payload: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
        let header = Header {
            kind: Kind::Message,
            target: Target::Apps,
            flags: FLAG_BINARY | FLAG_SHARED,
            target_id: 0,
            source_id: 3,
            source_pid: 99,
            correlation: 7,
            action: "bytes".into(),
            host: None,
        };
        let mut frame =
            parse(encode(&header, &(payload.len() as u32).to_le_bytes()).unwrap()).unwrap();
        let file = memory_file::create(&payload).unwrap();
        frame.shared = Some(SealedFile::verify(file, payload.len()).unwrap());
        let out = Outgoing::new(frame);
        assert_eq!(out.weight, out.bytes.len() + payload.len());
        let inline = out.in_line().unwrap();
        assert!(inline.shared.is_none());
        let back: Frame = parse(inline.bytes.to_vec()).unwrap();
        assert_eq!(back.payload(), &payload[..]);
        assert_eq!(back.header.flags, FLAG_BINARY);
        assert_eq!((back.header.source_id, back.header.correlation), (3, 7));
    }

    #[test]
    fn a_shared_payload_without_a_fit_file_is_a_protocol_error() {
        let header = Header {
            kind: Kind::Message,
            target: Target::Apps,
            flags: FLAG_BINARY | FLAG_SHARED,
            target_id: 0,
            source_id: 0,
            source_pid: 0,
            correlation: 0,
            action: "bytes".into(),
            host: None,
        };
        let frame = || parse(encode(&header, &100u32.to_le_bytes()).unwrap()).ok();
        let mut fds = VecDeque::new();
        let missing = claim_shared(frame(), &mut fds, 1000).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "malformed frame: a shared payload came without its memory file"
        );
        let (socket, _other) = crate::os::fd_socket::stream_pair().unwrap();
        fds.push_back(socket);
        let refused = claim_shared(frame(), &mut fds, 1000).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "malformed frame: shared payload: not a memory file"
        );
        fds.push_back(memory_file::create(&[7; 100]).unwrap());
        let claimed = claim_shared(frame(), &mut fds, 1000).unwrap().unwrap();
        assert_eq!(claimed.weight(), claimed.bytes.len() + 100);
    }
}
