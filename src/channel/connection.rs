//! One task per child owns its Node IPC channel and its pidfd: it reads and decodes what the child
//! sends, writes what the primary sends (descriptors one at a time, each until the child ACKs it,
//! as Node's protocol requires), and reports, in this order, the child's messages, the channel's
//! end and the process's exit.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::json;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;

use crate::os::fd_socket::{self, FdSocket, Received};
use crate::os::process::{ChildProcess, ExitStatus};
use crate::wire::node_ipc::{self, DecodeError, Incoming, Serialization};

/// Node retransmits a NACKed handle this many times before giving up.
const HANDLE_RETRIES: u32 = 3;
/// Descriptors that arrived without the message that claims them; more means a misbehaving child.
const MAX_UNCLAIMED_FDS: usize = 8;
const READ_CHUNK: usize = 256 * 1024;

/// Identifies a send whose completion someone waits for (a `worker.send(msg, callback)`).
pub type Ticket = u64;

pub enum Outbound {
    Frame {
        bytes: Vec<u8>,
        fd: Option<OwnedFd>,
        ticket: Option<Ticket>,
    },
    /// Close the channel from our side (`worker.process.disconnect()`).
    Close,
}

/// A descriptor that came with a message, now ours.
#[derive(Debug)]
pub struct ReceivedHandle {
    pub handle_type: String,
    pub key: Option<String>,
    pub fd: OwnedFd,
}

#[derive(Debug)]
pub enum ChannelEvent {
    Message(Incoming),
    /// A message that came with a descriptor, which is now ours.
    MessageWithFd {
        msg: Incoming,
        handle: ReceivedHandle,
    },
    Sent {
        ticket: Ticket,
        error: Option<String>,
    },
    /// The child broke the protocol; the channel is closed after this.
    ProtocolError(String),
    Disconnected,
    Exited(ExitStatus),
}

pub type EventSink = Box<dyn Fn(ChannelEvent) + Send + Sync>;

pub struct ConnectionSpec {
    pub socket: OwnedFd,
    pub process: Arc<ChildProcess>,
    pub mode: Serialization,
    pub max_message: usize,
    /// What the primary has queued for the child and the task has not taken yet, kept by the
    /// sender (`Backlog::add`) and taken off here.
    pub backlog: Backlog,
}

/// Bytes and descriptors queued for a child. The queue itself is unbounded (the supervisor must
/// never wait on a child); the sender reads this to refuse a child that does not read.
#[derive(Clone, Default)]
pub struct Backlog {
    bytes: Arc<AtomicUsize>,
    fds: Arc<AtomicUsize>,
}

impl Backlog {
    pub fn add(&self, bytes: usize, fd: bool) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if fd {
            self.fds.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn take(&self, bytes: usize, fd: bool) {
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        if fd {
            self.fds.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// `(bytes, descriptors)` waiting.
    pub fn size(&self) -> (usize, usize) {
        (
            self.bytes.load(Ordering::Relaxed),
            self.fds.load(Ordering::Relaxed),
        )
    }
}

/// Starts the task; returns the queue of what to send to the child.
pub fn start(
    spec: ConnectionSpec,
    events: EventSink,
) -> io::Result<mpsc::UnboundedSender<Outbound>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let socket = FdSocket::new(spec.socket)?;
    let exit_watch = fd_socket::watch(spec.process, Interest::READABLE)?;
    let conn = Connection {
        socket,
        exit_watch,
        mode: spec.mode,
        decoder: node_ipc::Decoder::new(spec.mode, spec.max_message),
        backlog: spec.backlog,
        scratch: vec![0; READ_CHUNK],
        unclaimed_fds: VecDeque::new(),
        outbox: rx,
        outbox_open: true,
        control: VecDeque::new(),
        current: None,
        awaiting_ack: None,
        open: true,
        events,
    };
    tokio::spawn(conn.run());
    Ok(tx)
}

struct OutFrame {
    bytes: Vec<u8>,
    written: usize,
    fd: Option<OwnedFd>,
    fd_sent: bool,
    ticket: Option<Ticket>,
    retries: u32,
}

struct Connection {
    backlog: Backlog,
    socket: FdSocket,
    exit_watch: AsyncFd<Arc<ChildProcess>>,
    mode: Serialization,
    decoder: node_ipc::Decoder,
    scratch: Vec<u8>,
    unclaimed_fds: VecDeque<OwnedFd>,
    outbox: mpsc::UnboundedReceiver<Outbound>,
    outbox_open: bool,
    /// ACK/NACK frames: Node lets them pass while a handle of its own waits for an ACK.
    control: VecDeque<Vec<u8>>,
    current: Option<OutFrame>,
    awaiting_ack: Option<OutFrame>,
    /// False once either side has closed the channel.
    open: bool,
    events: EventSink,
}

enum Wake {
    Exited(io::Result<ExitStatus>),
    Read(io::Result<Received>),
    Wrote(io::Result<usize>),
    Outbound(Option<Outbound>),
}

async fn write_some(socket: &FdSocket, frame: Option<&OutFrame>) -> io::Result<usize> {
    match frame {
        Some(f) => {
            let fd = if f.fd_sent {
                None
            } else {
                f.fd.as_ref().map(|fd| fd.as_fd())
            };
            socket.send(&f.bytes[f.written..], fd).await
        }
        None => std::future::pending().await,
    }
}

impl Connection {
    async fn run(mut self) {
        loop {
            self.pick_next_frame();
            let want_outbox =
                self.outbox_open && self.current.is_none() && self.awaiting_ack.is_none();
            let wake = tokio::select! {
                biased;
                status = self.exit_watch.async_io(Interest::READABLE, |p| match p.try_reap() {
                    Ok(Some(status)) => Ok(status),
                    Ok(None) => Err(io::ErrorKind::WouldBlock.into()),
                    Err(e) => Err(e),
                }) => Wake::Exited(status),
                r = self.socket.recv(&mut self.scratch), if self.open => Wake::Read(r),
                w = write_some(&self.socket, self.current.as_ref()), if self.open && self.current.is_some() => Wake::Wrote(w),
                m = self.outbox.recv(), if want_outbox => Wake::Outbound(m),
            };
            match wake {
                Wake::Exited(status) => {
                    self.on_exit(status);
                    return;
                }
                Wake::Read(Ok(read)) => self.on_read(read),
                // A reset or broken pipe is the channel ending, not the child misbehaving.
                Wake::Read(Err(_)) | Wake::Wrote(Err(_)) => self.close(None),
                Wake::Wrote(Ok(n)) => self.on_written(n),
                Wake::Outbound(Some(Outbound::Frame { bytes, fd, ticket })) => {
                    self.backlog.take(bytes.len(), fd.is_some());
                    self.current = Some(OutFrame {
                        bytes,
                        written: 0,
                        fd,
                        fd_sent: false,
                        ticket,
                        retries: 0,
                    });
                }
                Wake::Outbound(Some(Outbound::Close)) => self.close(None),
                Wake::Outbound(None) => self.outbox_open = false,
            }
            if !self.open {
                self.fail_pending();
            }
        }
    }

    fn pick_next_frame(&mut self) {
        if self.current.is_some() || !self.open {
            return;
        }
        if let Some(bytes) = self.control.pop_front() {
            self.current = Some(OutFrame {
                bytes,
                written: 0,
                fd: None,
                fd_sent: false,
                ticket: None,
                retries: 0,
            });
        }
    }

    fn on_read(&mut self, read: Received) {
        if read.len == 0 {
            self.close(None);
            return;
        }
        if read.fds_truncated {
            self.close(Some(
                "the child sent more descriptors than one message may carry".into(),
            ));
            return;
        }
        self.unclaimed_fds.extend(read.fds);
        self.decoder.push(&self.scratch[..read.len]);
        self.decode_frames();
    }

    fn decode_frames(&mut self) {
        while self.open {
            let frame = match self.decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return self.protocol_error(e),
            };
            match node_ipc::decode(self.mode, frame) {
                Ok(msg) => self.on_message(msg),
                Err(e) => return self.protocol_error(e),
            }
        }
        if self.unclaimed_fds.len() > MAX_UNCLAIMED_FDS {
            self.close(Some(
                "the child sent descriptors that no message claims".into(),
            ));
        }
    }

    fn protocol_error(&mut self, e: DecodeError) {
        self.close(Some(e.to_string()));
    }

    fn on_message(&mut self, msg: Incoming) {
        match msg {
            Incoming::HandleAck => {
                if let Some(frame) = self.awaiting_ack.take() {
                    self.report_sent(frame.ticket, None);
                }
            }
            Incoming::HandleNack => {
                if let Some(mut frame) = self.awaiting_ack.take() {
                    if frame.retries < HANDLE_RETRIES {
                        frame.retries += 1;
                        frame.written = 0;
                        frame.fd_sent = false;
                        self.current = Some(frame);
                    } else {
                        self.report_sent(frame.ticket, Some("the child refused the handle".into()));
                    }
                }
            }
            Incoming::Handle {
                handle_type,
                key,
                msg,
            } => match self.unclaimed_fds.pop_front() {
                Some(fd) => {
                    self.control.push_back(node_ipc::encode(
                        self.mode,
                        &json!({"cmd": "NODE_HANDLE_ACK"}),
                    ));
                    (self.events)(ChannelEvent::MessageWithFd {
                        msg: *msg,
                        handle: ReceivedHandle {
                            handle_type,
                            key,
                            fd,
                        },
                    });
                }
                // Node answers a handle message without a descriptor with NACK and drops it; the
                // sender retransmits.
                None => self.control.push_back(node_ipc::encode(
                    self.mode,
                    &json!({"cmd": "NODE_HANDLE_NACK"}),
                )),
            },
            other => (self.events)(ChannelEvent::Message(other)),
        }
    }

    fn on_written(&mut self, n: usize) {
        let Some(frame) = self.current.as_mut() else {
            return;
        };
        frame.written += n;
        if frame.fd.is_some() {
            frame.fd_sent = true;
        }
        if frame.written < frame.bytes.len() {
            return;
        }
        let Some(frame) = self.current.take() else {
            return;
        };
        if frame.fd.is_some() {
            self.awaiting_ack = Some(frame);
        } else {
            self.report_sent(frame.ticket, None);
        }
    }

    fn report_sent(&self, ticket: Option<Ticket>, error: Option<String>) {
        if let Some(ticket) = ticket {
            (self.events)(ChannelEvent::Sent { ticket, error });
        }
    }

    /// Closes the channel once; `why` is set when the child broke the protocol.
    fn close(&mut self, why: Option<String>) {
        if !self.open {
            return;
        }
        self.open = false;
        self.decoder.discard();
        self.unclaimed_fds.clear();
        if let Some(why) = why {
            (self.events)(ChannelEvent::ProtocolError(why));
        }
        self.socket.shutdown();
        (self.events)(ChannelEvent::Disconnected);
    }

    /// Everything not yet written will never be: tell whoever waits.
    fn fail_pending(&mut self) {
        let closed = || Some("ERR_IPC_CHANNEL_CLOSED".to_string());
        if let Some(f) = self.current.take() {
            self.report_sent(f.ticket, closed());
        }
        if let Some(f) = self.awaiting_ack.take() {
            self.report_sent(f.ticket, closed());
        }
        self.control.clear();
        while let Ok(out) = self.outbox.try_recv() {
            if let Outbound::Frame { ticket, .. } = out {
                self.report_sent(ticket, closed());
            }
        }
    }

    fn on_exit(&mut self, status: io::Result<ExitStatus>) {
        // The child is gone, so what it wrote is all in the socket now: read it before saying so.
        while self.open {
            match self.socket.try_recv(&mut self.scratch) {
                Ok(read) => self.on_read(read),
                Err(_) => break,
            }
        }
        self.close(None);
        self.fail_pending();
        let status = status.unwrap_or(ExitStatus {
            code: None,
            signal: None,
        });
        (self.events)(ChannelEvent::Exited(status));
    }
}
