//! The child's side of rcluster's messenger channel, loaded by `require('rcluster')` in a worker
//! or the agent. One thread reads and splits frames and wakes JavaScript once per batch; another
//! writes, so a send never blocks the child's event loop.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

use crate::binding::{messenger_frame, Code};
use crate::channel::frames::{Decoder, Frame, HEADER_LEN, MAX_ACTION_LEN, PREFIX_LEN};
use crate::errors::{self, RcError};

type Wake = ThreadsafeFunction<(), (), (), Status, false, true>;

/// A frame for JavaScript; `closed` marks the end of the channel instead.
#[napi(object)]
pub struct ChildFrame {
    pub kind: u32,
    pub flags: u32,
    pub source_id: u32,
    pub source_pid: u32,
    pub correlation: u32,
    pub action: String,
    pub payload: Buffer,
    pub closed: bool,
}

enum Received {
    Frame(Frame),
    Closed(Option<String>),
}

#[napi]
pub struct ChildChannel {
    outbox: std_mpsc::Sender<Vec<u8>>,
    inbox: Arc<Mutex<VecDeque<Received>>>,
    wake: Arc<Wake>,
    holds_loop: bool,
    max_message: usize,
}

fn rc(e: RcError) -> napi::Error<Code> {
    crate::binding::js_error(e)
}

#[napi]
impl ChildChannel {
    /// `fd` is RCLUSTER_CHANNEL_FD; `max_message` the cluster's maxMessageSize.
    #[napi(constructor)]
    pub fn new(fd: i32, max_message: u32, on_wake: Function<(), ()>) -> Result<Self, Code> {
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
        // SAFETY: the primary put this descriptor here for us and nothing else in this process uses it.
        let reader = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
        reader
            .set_nonblocking(false)
            .map_err(|e| io_error("blocking mode", e))?;
        let writer = reader.try_clone().map_err(|e| io_error("dup", e))?;
        let wake: Wake = on_wake
            .build_threadsafe_function()
            .callee_handled::<false>()
            .weak::<true>()
            .build()
            .map_err(|e| rc(RcError::new(errors::NOT_RUNNING, e.reason.clone())))?;
        let wake = Arc::new(wake);
        let inbox = Arc::new(Mutex::new(VecDeque::new()));
        let max_frame = max_message as usize + PREFIX_LEN + HEADER_LEN + MAX_ACTION_LEN;
        let (outbox, rx) = std_mpsc::channel::<Vec<u8>>();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map(|_| ())
                .map_err(|e| io_error("thread", e))
        };
        spawn(
            "rcluster-channel-write",
            Box::new(move || write_loop(writer, rx)),
        )?;
        let (thread_inbox, thread_wake) = (inbox.clone(), wake.clone());
        spawn(
            "rcluster-channel-read",
            Box::new(move || read_loop(reader, max_frame, thread_inbox, thread_wake)),
        )?;
        Ok(ChildChannel {
            outbox,
            inbox,
            wake,
            holds_loop: false,
            max_message: max_message as usize,
        })
    }

    // The header's fields, passed flat: no object to build and unpack per message.
    #[allow(clippy::too_many_arguments)]
    #[napi]
    pub fn send(
        &self,
        kind: u32,
        target: u32,
        target_id: u32,
        correlation: u32,
        action: String,
        flags: u32,
        payload: Buffer,
    ) -> Result<(), Code> {
        let frame = messenger_frame(
            kind,
            target,
            target_id,
            correlation,
            action,
            flags,
            &payload,
            self.max_message,
        )
        .map_err(rc)?;
        self.outbox.send(frame.bytes).map_err(|_| {
            rc(RcError::new(
                errors::NOT_RUNNING,
                "the messenger channel is closed",
            ))
        })
    }

    #[napi]
    pub fn take(&self) -> Vec<ChildFrame> {
        let drained: Vec<Received> = {
            let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
            inbox.drain(..).collect()
        };
        drained
            .into_iter()
            .map(|r| match r {
                Received::Frame(f) => ChildFrame {
                    kind: f.header.kind as u32,
                    flags: u32::from(f.header.flags),
                    source_id: f.header.source_id,
                    source_pid: f.header.source_pid,
                    correlation: f.header.correlation,
                    payload: f.payload().to_vec().into(),
                    action: f.header.action,
                    closed: false,
                },
                Received::Closed(why) => ChildFrame {
                    kind: 0,
                    flags: 0,
                    source_id: 0,
                    source_pid: 0,
                    correlation: 0,
                    action: why.unwrap_or_default(),
                    payload: Vec::new().into(),
                    closed: true,
                },
            })
            .collect()
    }

    /// Whether the channel keeps the event loop alive (while the child has handlers).
    #[napi]
    pub fn set_ref(&mut self, env: Env, hold: bool) -> Result<(), Code> {
        if hold == self.holds_loop {
            return Ok(());
        }
        // SAFETY: called on the JavaScript thread with its env, on a live threadsafe function.
        let status = unsafe {
            if hold {
                napi::sys::napi_ref_threadsafe_function(env.raw(), self.wake.raw())
            } else {
                napi::sys::napi_unref_threadsafe_function(env.raw(), self.wake.raw())
            }
        };
        if status != napi::sys::Status::napi_ok {
            return Err(rc(RcError::new(
                errors::NOT_RUNNING,
                "cannot change the event loop's hold",
            )));
        }
        self.holds_loop = hold;
        Ok(())
    }
}

fn write_loop(mut writer: UnixStream, rx: std_mpsc::Receiver<Vec<u8>>) {
    while let Ok(bytes) = rx.recv() {
        if writer.write_all(&bytes).is_err() {
            return;
        }
    }
}

fn read_loop(
    mut reader: UnixStream,
    max_frame: usize,
    inbox: Arc<Mutex<VecDeque<Received>>>,
    wake: Arc<Wake>,
) {
    let mut decoder = Decoder::new(max_frame);
    let mut buf = vec![0u8; 256 * 1024];
    let deliver = |items: Vec<Received>| {
        let was_empty = {
            let mut inbox = inbox.lock().unwrap_or_else(|e| e.into_inner());
            let was_empty = inbox.is_empty();
            inbox.extend(items);
            was_empty
        };
        // One wake per batch: JavaScript takes everything queued when it runs.
        if was_empty {
            wake.call((), ThreadsafeFunctionCallMode::NonBlocking);
        }
    };
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) | Err(_) => {
                deliver(vec![Received::Closed(None)]);
                return;
            }
            Ok(n) => n,
        };
        decoder.push(&buf[..n]);
        let mut batch = Vec::new();
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => batch.push(Received::Frame(frame)),
                Ok(None) => break,
                Err(e) => {
                    batch.push(Received::Closed(Some(e.to_string())));
                    deliver(batch);
                    return;
                }
            }
        }
        if !batch.is_empty() {
            deliver(batch);
        }
    }
}
