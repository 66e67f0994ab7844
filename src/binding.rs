//! The native class that the JavaScript facade drives: `new NativeCluster(plan, options, onWake)`.
//! It is thin on purpose: it checks arguments, hands commands to the supervisor's loop, and turns
//! the supervisor's events into plain objects. See lib/primary/primary-core.js for its one caller.

use std::os::fd::{IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use tokio::sync::mpsc::UnboundedSender;

use crate::channel::frame_link::Frame;
use crate::errors::{self, RcError};
use crate::js_error::{js_error, Code};
use crate::os::process::parse_signal;
use crate::os::spawner;
use crate::primary::child_command::{self, Role, WorkerKind};
use crate::primary::events::{Event, EventQueue};
use crate::primary::inputs::{Command, Input, NewChild, ReloadRequest};
use crate::primary::launcher;
use crate::primary::listeners::Distribution;
use crate::primary::options;
use crate::primary::supervisor::{self, Plan};
use crate::primary::workers::ProcessTable;
use crate::wire::frames;
use crate::wire::node_ipc::Payload;

fn runtime() -> Result<&'static tokio::runtime::Runtime, Code> {
    static RUNTIME: OnceLock<std::io::Result<tokio::runtime::Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            // One thread does all of the primary's I/O: it only routes control traffic, never
            // connections, so more threads would only compete with the workers for CPUs.
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("rcluster-io")
                .enable_all()
                .build()
        })
        .as_ref()
        .map_err(|e| {
            js_error(RcError::new(
                errors::SPAWN_FAILED,
                format!("cannot start the I/O thread: {e}"),
            ))
        })
}

/// A weak wake-up call into JavaScript: it does not keep the event loop alive by itself.
type Wake = ThreadsafeFunction<(), (), (), Status, false, true>;

#[napi]
pub struct NativeCluster {
    inputs: UnboundedSender<Input>,
    events: EventQueue,
    processes: ProcessTable,
    ids: Arc<AtomicU32>,
    wake: Arc<Wake>,
    holds_loop: bool,
    /// The largest messenger payload; None without a messenger (the Node-compatible primary).
    max_message: Option<usize>,
}

/// One event for JavaScript; which fields are set depends on `kind`.
#[napi(object)]
pub struct JsEvent {
    pub kind: String,
    pub id: Option<u32>,
    pub pid: Option<u32>,
    pub slot: Option<u32>,
    pub worker_kind: Option<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    /// JSON text: a message, a listening address, error details.
    pub json: Option<String>,
    /// A message in V8 serialization (`serialization: 'advanced'`).
    pub buffer: Option<Buffer>,
    pub handle_type: Option<String>,
    /// The server a received socket came from (Node's `NODE_HANDLE` `key`).
    pub handle_key: Option<String>,
    /// A descriptor that now belongs to JavaScript.
    pub fd: Option<i32>,
    pub ticket: Option<i64>,
    /// The `reload()` / `scale()` calls an outcome settles.
    pub tickets: Option<Vec<i64>>,
    /// A number of app workers (reload, scale).
    pub workers: Option<u32>,
    pub code: Option<String>,
    pub message: Option<String>,
    /// Messenger frames: the header fields JavaScript needs; `buffer` is the payload.
    pub frame_kind: Option<u32>,
    pub flags: Option<u32>,
    pub correlation: Option<u32>,
    pub action: Option<String>,
}

impl JsEvent {
    fn new(kind: &str) -> Self {
        JsEvent {
            kind: kind.to_owned(),
            id: None,
            pid: None,
            slot: None,
            worker_kind: None,
            exit_code: None,
            signal: None,
            json: None,
            buffer: None,
            handle_type: None,
            handle_key: None,
            fd: None,
            ticket: None,
            tickets: None,
            workers: None,
            code: None,
            message: None,
            frame_kind: None,
            flags: None,
            correlation: None,
            action: None,
        }
    }

    /// How a `reload()` or `scale()` ended, for the calls waiting on it.
    fn outcome(kind: &str, tickets: Vec<u64>, error: Option<(&'static str, String)>) -> Self {
        let (code, message) = error.map_or((None, None), |(c, m)| (Some(c.into()), Some(m)));
        JsEvent {
            tickets: Some(tickets.into_iter().map(|t| t as i64).collect()),
            code,
            message,
            ..JsEvent::new(kind)
        }
    }

    fn of(kind: &str, id: u32) -> Self {
        JsEvent {
            id: Some(id),
            ..JsEvent::new(kind)
        }
    }
}

impl From<Event> for JsEvent {
    fn from(event: Event) -> Self {
        match event {
            Event::Fork {
                id,
                pid,
                kind,
                slot,
            } => JsEvent {
                pid: Some(pid),
                worker_kind: Some(kind.as_str().into()),
                slot: slot.map(|s| s as u32),
                ..JsEvent::of("fork", id)
            },
            Event::Online { id } => JsEvent::of("online", id),
            Event::Listening { id, address } => JsEvent {
                json: Some(address.to_string()),
                ..JsEvent::of("listening", id)
            },
            Event::Message {
                id,
                payload,
                handle,
            } => {
                let (json, buffer) = match payload {
                    Payload::Json(text) => (Some(text), None),
                    Payload::V8(bytes) => (None, Some(bytes.into())),
                };
                let (handle_type, handle_key, fd) = match handle {
                    Some(h) => (Some(h.handle_type), h.key, Some(OwnedFd::into_raw_fd(h.fd))),
                    None => (None, None, None),
                };
                JsEvent {
                    json,
                    buffer,
                    handle_type,
                    handle_key,
                    fd,
                    ..JsEvent::of("message", id)
                }
            }
            Event::Frame(frame) => JsEvent {
                pid: Some(frame.header.source_pid),
                frame_kind: Some(frame.header.kind as u32),
                flags: Some(u32::from(frame.header.flags)),
                correlation: Some(frame.header.correlation),
                buffer: Some(frame.payload().to_vec().into()),
                action: Some(frame.header.action),
                ..JsEvent::of("frame", frame.header.source_id)
            },
            Event::Internal { id, message } => JsEvent {
                json: Some(message.to_string()),
                ..JsEvent::of("internalMessage", id)
            },
            Event::ExitedAfterDisconnect { id } => JsEvent::of("exitedAfterDisconnect", id),
            Event::Disconnect { id } => JsEvent::of("disconnect", id),
            Event::Exit { id, status } => JsEvent {
                exit_code: status.code,
                signal: status.signal.map(|s| s.as_str().to_owned()),
                ..JsEvent::of("exit", id)
            },
            Event::Sent { ticket, error } => JsEvent {
                ticket: Some(ticket as i64),
                code: error,
                ..JsEvent::new("sent")
            },
            Event::WorkerReady { id } => JsEvent::of("workerReady", id),
            Event::Ready => JsEvent::new("ready"),
            Event::Error {
                code,
                message,
                details,
            } => JsEvent {
                code: Some(code.into()),
                message: Some(message),
                json: Some(details.to_string()),
                ..JsEvent::new("error")
            },
            Event::Warning {
                code,
                message,
                id,
                details,
            } => JsEvent {
                id,
                code: Some(code.into()),
                message: Some(message),
                json: (!details.is_null()).then(|| details.to_string()),
                ..JsEvent::new("warning")
            },
            Event::ReloadStarted { trigger, workers } => JsEvent {
                message: Some(trigger),
                workers: Some(workers as u32),
                ..JsEvent::new("reloadStarted")
            },
            Event::Reloaded {
                tickets,
                error,
                details,
            } => JsEvent {
                json: Some(details.to_string()),
                ..JsEvent::outcome("reloaded", tickets, error)
            },
            Event::Scaled {
                tickets,
                workers,
                error,
            } => JsEvent {
                workers: Some(workers as u32),
                ..JsEvent::outcome("scaled", tickets, error)
            },
            Event::Stopped => JsEvent::new("stopped"),
        }
    }
}

#[napi(object)]
pub struct PipeEnd {
    pub index: u32,
    pub fd: i32,
}

#[napi(object)]
pub struct Forked {
    pub id: u32,
    pub pid: u32,
    /// Our ends of the child's `'pipe'` stdio entries; JavaScript owns them now.
    pub pipes: Vec<PipeEnd>,
}

fn process_env() -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    std::env::vars_os().collect()
}

#[napi]
impl NativeCluster {
    /// `plan` is `'supervised'` (options of `rcluster.start()`) or `'manual'` (the
    /// Node-compatible primary; options `{ schedulingPolicy: 'rr' | 'none' }`).
    #[napi(constructor)]
    pub fn new(
        plan: String,
        options: serde_json::Value,
        on_wake: Function<(), ()>,
    ) -> Result<Self, Code> {
        let mut max_message = None;
        let plan = match plan.as_str() {
            "supervised" => {
                let parsed =
                    options::parse_cluster_options(&options, process_env()).map_err(js_error)?;
                max_message = Some(parsed.max_message);
                Plan::Supervised(Box::new(parsed))
            }
            "manual" => Plan::Manual {
                distribution: match options.get("schedulingPolicy").and_then(|v| v.as_str()) {
                    Some("rr") => Distribution::RoundRobin,
                    _ => Distribution::Shared,
                },
            },
            other => {
                return Err(js_error(RcError::new(
                    errors::INVALID_OPTION,
                    format!("unknown plan {other:?}"),
                )))
            }
        };
        let wake = weak_wake(on_wake)?;
        let caller = wake.clone();
        let events = EventQueue::new(Arc::new(move || {
            caller.call((), ThreadsafeFunctionCallMode::NonBlocking);
        }));
        let processes = ProcessTable::default();
        // Worker ids start at 1, as Node's do.
        let ids = Arc::new(AtomicU32::new(1));
        let rt = runtime()?;
        let _guard = rt.enter();
        let inputs = supervisor::launch(plan, events.clone(), processes.clone(), ids.clone());
        Ok(NativeCluster {
            inputs,
            events,
            processes,
            ids,
            wake,
            holds_loop: false,
            max_message,
        })
    }

    fn command(&self, command: Command) -> Result<(), Code> {
        self.inputs.send(Input::Command(command)).map_err(|_| {
            js_error(RcError::new(
                errors::NOT_RUNNING,
                "the primary's control loop has ended",
            ))
        })
    }

    /// Starts the supervised cluster's workers.
    #[napi]
    pub fn start(&self) -> Result<(), Code> {
        self.command(Command::Start)
    }

    /// Starts one worker now (the Node-compatible `cluster.fork()`); `spec` is `cluster.settings`
    /// with the environment already merged.
    #[napi]
    pub fn fork(&self, spec: serde_json::Value) -> Result<Forked, Code> {
        let map = spec
            .as_object()
            .ok_or_else(|| js_error(RcError::invalid_option("settings", "an object", &spec)))?;
        let spec = options::parse_child_spec(map, Vec::new(), false).map_err(js_error)?;
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let role = Role {
            id,
            kind: WorkerKind::App,
            supervised: false,
        };
        let spawn_error = |e: std::io::Error| {
            js_error(RcError::new(
                errors::SPAWN_FAILED,
                format!("cannot start a worker: {e}"),
            ))
        };
        let prepared = child_command::prepare(&spec, &role).map_err(spawn_error)?;
        let process = Arc::new(spawner::spawn_blocking(prepared.command).map_err(spawn_error)?);
        let pid = process.pid();
        self.processes.insert(id, process.clone());
        self.command(Command::Register(Box::new(NewChild {
            id,
            launched: launcher::real_child(process, prepared.ipc, None, None),
            mode: spec.serialization,
        })))?;
        let pipes = prepared
            .pipes
            .into_iter()
            .map(|(index, fd)| PipeEnd {
                index: index as u32,
                fd: fd.into_raw_fd(),
            })
            .collect();
        Ok(Forked { id, pid, pipes })
    }

    /// Sends a message that JavaScript serialized for the worker's channel. `fd`, if given, is
    /// duplicated now: the caller may close its own copy at once.
    #[napi]
    pub fn send(
        &self,
        id: u32,
        payload: Either<String, Buffer>,
        ticket: Option<i64>,
        fd: Option<i32>,
    ) -> Result<(), Code> {
        let payload = match payload {
            Either::A(text) => text.into_bytes(),
            Either::B(buffer) => buffer.to_vec(),
        };
        let fd = match fd {
            Some(fd) => Some(duplicate(fd)?),
            None => None,
        };
        let ticket = ticket.and_then(|t| u64::try_from(t).ok());
        self.command(Command::Send {
            id,
            payload,
            fd,
            ticket,
        })
    }

    /// `worker.disconnect()`: the worker closes its servers, then its channel.
    #[napi]
    pub fn disconnect(&self, id: u32) -> Result<(), Code> {
        self.command(Command::Disconnect { id })
    }

    /// `worker.process.disconnect()`: close the channel from this side.
    #[napi]
    pub fn close_channel(&self, id: u32) -> Result<(), Code> {
        self.command(Command::CloseChannel { id })
    }

    /// Sends a signal (a name or a number; 0 only tests that the worker lives). False when the
    /// worker is gone.
    #[napi]
    pub fn kill(&self, id: u32, signal: serde_json::Value) -> Result<bool, Code> {
        let Some(process) = self.processes.get(id) else {
            return Ok(false);
        };
        if signal == serde_json::json!(0) {
            return Ok(true);
        }
        let sig = parse_signal(&signal).ok_or_else(|| {
            js_error(RcError::new(
                errors::UNKNOWN_SIGNAL,
                format!("Unknown signal: {}", errors::describe(&signal)),
            ))
        })?;
        process.signal(sig).map_err(|e| {
            js_error(RcError::new(
                errors::UNKNOWN_WORKER,
                format!("cannot signal worker {id}: {e}"),
            ))
        })
    }

    /// Graceful stop: no more restarts, every worker asked to disconnect, SIGKILL after the
    /// timeout. A `stopped` event follows once every child has exited.
    #[napi]
    pub fn stop(&self, timeout_ms: Option<u32>) -> Result<(), Code> {
        self.command(Command::Stop {
            timeout: timeout_ms.map(|ms| Duration::from_millis(u64::from(ms))),
        })
    }

    /// Sends a messenger frame from the primary: its bytes, built by JavaScript as a child builds
    /// its own (lib/messenger/frames.js, docs/messenger-frames.md), checked here by the one parser.
    #[napi]
    pub fn send_frame(&self, frame: Buffer) -> Result<(), Code> {
        let Some(max_message) = self.max_message else {
            return Err(js_error(RcError::new(
                errors::NOT_RUNNING,
                "this primary has no messenger",
            )));
        };
        let frame = messenger_frame(frame.to_vec(), max_message).map_err(js_error)?;
        self.command(Command::SendFrame(frame))
    }

    /// Starts a rolling reload, or joins the one under way; a `reloaded` event with `ticket`
    /// follows. `options`: `{ parallel, agent }`, each optional; `trigger` names who asked.
    #[napi]
    pub fn reload(
        &self,
        ticket: i64,
        options: serde_json::Value,
        trigger: String,
    ) -> Result<(), Code> {
        let parallel = match options.get("parallel") {
            None | Some(serde_json::Value::Null) => None,
            Some(value) => Some(options::parse_reload_parallel(Some(value)).map_err(js_error)?),
        };
        let agent = match options.get("agent") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Bool(b)) => Some(*b),
            Some(other) => {
                return Err(js_error(RcError::invalid_option(
                    "agent",
                    "true or false",
                    other,
                )))
            }
        };
        self.command(Command::Reload(ReloadRequest {
            ticket: u64::try_from(ticket).ok(),
            parallel,
            agent,
            trigger,
        }))
    }

    /// Changes the number of app workers (`workers` as `start()` takes it: 0 or 'max' = CPUs);
    /// a `scaled` event with `ticket` follows.
    #[napi]
    pub fn scale(&self, ticket: i64, workers: serde_json::Value) -> Result<(), Code> {
        let workers = options::parse_workers(Some(&workers)).map_err(js_error)?;
        self.command(Command::Scale {
            workers,
            ticket: u64::try_from(ticket).unwrap_or(0),
        })
    }

    /// The primary's JavaScript added (`on = true`) or removed a handler for `action`.
    #[napi]
    pub fn handler(&self, action: String, on: bool) -> Result<(), Code> {
        self.command(Command::Handler { action, on })
    }

    #[napi]
    pub fn take_events(&self) -> Vec<JsEvent> {
        self.events.take().into_iter().map(JsEvent::from).collect()
    }

    /// Whether this cluster keeps Node's event loop alive (it should while children run).
    #[napi]
    pub fn set_ref(&mut self, env: Env, hold: bool) -> Result<(), Code> {
        if hold != self.holds_loop {
            hold_event_loop(&env, &self.wake, hold)?;
            self.holds_loop = hold;
        }
        Ok(())
    }
}

/// A JavaScript function that native threads may call to wake the JavaScript thread.
fn weak_wake(on_wake: Function<(), ()>) -> Result<Arc<Wake>, Code> {
    on_wake
        .build_threadsafe_function()
        .callee_handled::<false>()
        .weak::<true>()
        .build()
        .map(Arc::new)
        .map_err(|e| js_error(RcError::new(errors::NOT_RUNNING, e.reason.clone())))
}

/// Makes a wake-up function keep Node's event loop alive, or stop keeping it.
fn hold_event_loop(env: &Env, wake: &Wake, hold: bool) -> Result<(), Code> {
    // SAFETY: called on the JavaScript thread with its env, on a live threadsafe function.
    let status = unsafe {
        if hold {
            napi::sys::napi_ref_threadsafe_function(env.raw(), wake.raw())
        } else {
            napi::sys::napi_unref_threadsafe_function(env.raw(), wake.raw())
        }
    };
    if status != napi::sys::Status::napi_ok {
        return Err(js_error(RcError::new(
            errors::NOT_RUNNING,
            "cannot change the event loop's hold",
        )));
    }
    Ok(())
}

fn duplicate(fd: i32) -> Result<OwnedFd, Code> {
    if fd < 0 {
        return Err(js_error(RcError::new(
            errors::INVALID_OPTION,
            "a handle without a descriptor cannot be sent",
        )));
    }
    // SAFETY: borrowed only to duplicate it; fcntl fails if the number is not open.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
        .map(|raw| {
            // SAFETY: a new descriptor that nothing else owns.
            unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) }
        })
        .map_err(|e| {
            js_error(RcError::new(
                errors::INVALID_OPTION,
                format!("cannot send descriptor {fd}: {e}"),
            ))
        })
}

/// Checks a frame that the primary's JavaScript built: the one parser, then what a sender may get
/// wrong that a well-formed frame can still carry.
fn messenger_frame(bytes: Vec<u8>, max_message: usize) -> std::result::Result<Frame, RcError> {
    let frame =
        frames::parse(bytes).map_err(|e| RcError::new(errors::INVALID_OPTION, e.to_string()))?;
    let len = frame.payload().len();
    if len > max_message {
        return Err(RcError::new(
            errors::MESSAGE_TOO_LARGE,
            format!(
                "a message of {len} bytes for '{}' exceeds maxMessageSize ({max_message} bytes)",
                frame.header.action
            ),
        ));
    }
    // A memory file comes only with a child's frames, attached by the link that read them.
    if frame.header.flags & frames::FLAG_SHARED != 0 {
        return Err(RcError::new(
            errors::INVALID_OPTION,
            "the primary's frames carry their payload",
        ));
    }
    Ok(frame)
}
