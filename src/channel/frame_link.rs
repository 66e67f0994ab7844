//! The primary's end of one child's messenger channel: a task that splits what the child writes
//! into frames (src/channel/frames.rs) and writes the frames routed to it. What waits to be
//! written is bounded in bytes per child, so a child that stops reading costs a bounded amount of
//! memory and never slows delivery to the others.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::fd_socket::FdSocket;
use super::frames::{Decoder, Frame};

const READ_CHUNK: usize = 256 * 1024;
/// Small frames waiting for one child are written together, up to this many bytes per write;
/// a larger frame is written from its shared buffer as it is.
const BATCH_BYTES: usize = 64 * 1024;

pub enum FrameEvent {
    /// A batch of frames from one read.
    Frames(Vec<Frame>),
    /// The child broke the frame format; its channel is closed after this.
    ProtocolError(String),
    Closed,
}

pub type FrameSink = Box<dyn Fn(FrameEvent) + Send + Sync>;

/// Frames are shared: one broadcast is one allocation, written to every target.
pub type SharedBytes = Arc<Vec<u8>>;

/// The queue to one child.
#[derive(Clone)]
pub struct FrameLink {
    tx: mpsc::UnboundedSender<SharedBytes>,
    queued: Arc<AtomicUsize>,
    limit: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The child's queue holds `limit` bytes already: it is not reading.
    Full {
        limit: usize,
    },
    Closed,
}

impl FrameLink {
    pub fn send(&self, bytes: SharedBytes) -> Result<(), SendError> {
        let len = bytes.len();
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        // One frame always fits an empty queue, however large it is.
        if before > 0 && before + len > self.limit {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return Err(SendError::Full { limit: self.limit });
        }
        self.tx.send(bytes).map_err(|_| {
            self.queued.fetch_sub(len, Ordering::AcqRel);
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
    tokio::spawn(run(
        socket,
        Decoder::new(max_frame),
        rx,
        queued.clone(),
        sink,
    ));
    Ok(FrameLink {
        tx,
        queued,
        limit: queue_limit,
    })
}

async fn run(
    socket: FdSocket,
    mut decoder: Decoder,
    mut outbox: mpsc::UnboundedReceiver<SharedBytes>,
    queued: Arc<AtomicUsize>,
    sink: FrameSink,
) {
    let mut scratch = vec![0u8; READ_CHUNK];
    let mut pending: VecDeque<SharedBytes> = VecDeque::new();
    // What is being written now, and how much of it is out.
    let mut current: Option<SharedBytes> = None;
    let mut written = 0usize;
    let mut outbox_open = true;
    loop {
        if current.is_none() {
            current = next_write(&mut pending, &queued);
            written = 0;
        }
        let head = current.clone();
        tokio::select! {
            read = socket.recv(&mut scratch) => match read {
                Ok(r) if r.len > 0 => {
                    decoder.push(&scratch[..r.len]);
                    let mut batch = Vec::new();
                    let failed = loop {
                        match decoder.next_frame() {
                            Ok(Some(frame)) => batch.push(frame),
                            Ok(None) => break None,
                            Err(e) => break Some(e.to_string()),
                        }
                    };
                    if !batch.is_empty() {
                        sink(FrameEvent::Frames(batch));
                    }
                    if let Some(why) = failed {
                        socket.shutdown();
                        sink(FrameEvent::ProtocolError(why));
                        sink(FrameEvent::Closed);
                        return;
                    }
                }
                // End of stream, a reset: the child is gone or closed its end.
                _ => break,
            },
            wrote = async {
                match &head {
                    Some(bytes) => socket.send(&bytes[written..], None).await,
                    None => std::future::pending().await,
                }
            } => match wrote {
                Ok(n) => {
                    written += n;
                    if head.as_ref().is_some_and(|bytes| written == bytes.len()) {
                        current = None;
                    }
                }
                Err(_) => break,
            },
            next = outbox.recv(), if outbox_open => match next {
                Some(bytes) => pending.push_back(bytes),
                None => outbox_open = false,
            },
        }
    }
    socket.shutdown();
    sink(FrameEvent::Closed);
}

/// The next bytes to write: a large frame as it is, or small frames joined into one write.
fn next_write(pending: &mut VecDeque<SharedBytes>, queued: &AtomicUsize) -> Option<SharedBytes> {
    let first = pending.pop_front()?;
    queued.fetch_sub(first.len(), Ordering::AcqRel);
    if first.len() >= BATCH_BYTES
        || pending
            .front()
            .is_none_or(|next| first.len() + next.len() > BATCH_BYTES)
    {
        return Some(first);
    }
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    batch.extend_from_slice(&first);
    while let Some(next) = pending.front() {
        if batch.len() + next.len() > BATCH_BYTES {
            break;
        }
        batch.extend_from_slice(next);
        queued.fetch_sub(next.len(), Ordering::AcqRel);
        pending.pop_front();
    }
    Some(Arc::new(batch))
}
