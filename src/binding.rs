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
use crate::operate;
use crate::os::process::parse_signal;
use crate::os::spawner;
use crate::primary::child_command::{self, Role, WorkerKind};
use crate::primary::events::{Event, EventQueue};
use crate::primary::inputs::{Command, Input, NewChild, ReloadRequest};
use crate::primary::launcher;
use crate::primary::listeners::Distribution;
use crate::primary::options;
use crate::primary::output::OutputLog;
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
    /// With option `redis`: this host's id in its namespace.
    host_id: Option<String>,
}

/// One event for JavaScript: an object whose `kind` ('fork', 'exit', ...) says which fields it
/// has. The field names are the ones the JavaScript facades read.
#[napi(
    discriminant = "kind",
    discriminant_case = "camelCase",
    object_from_js = false
)]
pub enum JsEvent {
    Fork {
        id: u32,
        pid: u32,
        worker_kind: String,
        slot: Option<u32>,
    },
    Online {
        id: u32,
    },
    /// `json`: `{ addressType, address, port, fd }`.
    Listening {
        id: u32,
        json: String,
    },
    /// A message in JSON (`json`) or V8 serialization (`buffer`), maybe with a descriptor that
    /// now belongs to JavaScript; `handle_key` names the server a received socket came from
    /// (Node's `NODE_HANDLE` `key`).
    Message {
        id: u32,
        json: Option<String>,
        buffer: Option<Buffer>,
        handle_type: Option<String>,
        handle_key: Option<String>,
        fd: Option<i32>,
    },
    /// A messenger frame for the primary's JavaScript: the header fields it needs, and the
    /// payload in `buffer`. `id` and `pid` name its sender.
    Frame {
        id: u32,
        pid: u32,
        frame_kind: u32,
        flags: u32,
        correlation: u32,
        action: String,
        buffer: Buffer,
        /// The host it came from, when that is another host.
        host: Option<String>,
    },
    InternalMessage {
        id: u32,
        json: String,
    },
    ExitedAfterDisconnect {
        id: u32,
    },
    Disconnect {
        id: u32,
    },
    Exit {
        id: u32,
        exit_code: Option<i32>,
        signal: Option<String>,
    },
    /// A message with a `ticket` was written, or `code` says why not.
    Sent {
        ticket: i64,
        code: Option<String>,
    },
    WorkerReady {
        id: u32,
    },
    Ready,
    /// `json`: the error's details.
    Error {
        code: String,
        message: String,
        json: String,
    },
    Warning {
        id: Option<u32>,
        code: String,
        message: String,
        json: Option<String>,
    },
    /// `message`: who asked; `workers`: how many slots it replaces.
    ReloadStarted {
        message: String,
        workers: u32,
    },
    /// The `reload()` calls it settles; `code` and `message` if it failed; `json`: its figures.
    Reloaded {
        tickets: Vec<i64>,
        code: Option<String>,
        message: Option<String>,
        json: String,
    },
    Scaled {
        tickets: Vec<i64>,
        workers: u32,
        code: Option<String>,
        message: Option<String>,
    },
    Stopping {
        message: String,
    },
    Stopped,
    /// `message`: the host's id; `json`: `{ host, incarnation }` (and `reason` when it left).
    HostJoined {
        message: String,
        json: String,
    },
    HostLeft {
        message: String,
        json: String,
    },
    /// `json`: `{ epoch }`.
    AgentLead {
        json: String,
    },
    /// `message`: why; `json`: `{ epoch, reason }`.
    AgentLose {
        message: String,
        json: String,
    },
}

/// The calls an outcome settles, and its failure.
fn outcome(
    tickets: Vec<u64>,
    error: Option<(&'static str, String)>,
) -> (Vec<i64>, Option<String>, Option<String>) {
    let (code, message) = error.map_or((None, None), |(c, m)| (Some(c.into()), Some(m)));
    (
        tickets.into_iter().map(|t| t as i64).collect(),
        code,
        message,
    )
}

impl From<Event> for JsEvent {
    fn from(event: Event) -> Self {
        match event {
            Event::Fork {
                id,
                pid,
                kind,
                slot,
            } => JsEvent::Fork {
                id,
                pid,
                worker_kind: kind.as_str().into(),
                slot: slot.map(|s| s as u32),
            },
            Event::Online { id } => JsEvent::Online { id },
            Event::Listening { id, address } => JsEvent::Listening {
                id,
                json: address.to_string(),
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
                JsEvent::Message {
                    id,
                    json,
                    buffer,
                    handle_type,
                    handle_key,
                    fd,
                }
            }
            Event::Frame(frame) => JsEvent::Frame {
                id: frame.header.source_id,
                pid: frame.header.source_pid,
                frame_kind: frame.header.kind as u32,
                flags: u32::from(frame.header.flags),
                correlation: frame.header.correlation,
                buffer: frame.payload().to_vec().into(),
                action: frame.header.action,
                host: frame.header.host,
            },
            Event::Internal { id, message } => JsEvent::InternalMessage {
                id,
                json: message.to_string(),
            },
            Event::ExitedAfterDisconnect { id } => JsEvent::ExitedAfterDisconnect { id },
            Event::Disconnect { id } => JsEvent::Disconnect { id },
            Event::Exit { id, status } => JsEvent::Exit {
                id,
                exit_code: status.code,
                signal: status.signal.map(|s| s.as_str().to_owned()),
            },
            Event::Sent { ticket, error } => JsEvent::Sent {
                ticket: ticket as i64,
                code: error,
            },
            Event::WorkerReady { id } => JsEvent::WorkerReady { id },
            Event::Ready => JsEvent::Ready,
            Event::Error {
                code,
                message,
                details,
            } => JsEvent::Error {
                code: code.into(),
                message,
                json: details.to_string(),
            },
            Event::Warning {
                code,
                message,
                id,
                details,
            } => JsEvent::Warning {
                id,
                code: code.into(),
                message,
                json: (!details.is_null()).then(|| details.to_string()),
            },
            Event::ReloadStarted { trigger, workers } => JsEvent::ReloadStarted {
                message: trigger,
                workers: workers as u32,
            },
            Event::Reloaded {
                tickets,
                error,
                details,
            } => {
                let (tickets, code, message) = outcome(tickets, error);
                JsEvent::Reloaded {
                    tickets,
                    code,
                    message,
                    json: details.to_string(),
                }
            }
            Event::Scaled {
                tickets,
                workers,
                error,
            } => {
                let (tickets, code, message) = outcome(tickets, error);
                JsEvent::Scaled {
                    tickets,
                    workers: workers as u32,
                    code,
                    message,
                }
            }
            Event::Stopping { trigger } => JsEvent::Stopping { message: trigger },
            Event::Stopped => JsEvent::Stopped,
            Event::HostJoined { host, incarnation } => JsEvent::HostJoined {
                json: serde_json::json!({ "host": host, "incarnation": format!("{incarnation:016x}") })
                    .to_string(),
                message: host,
            },
            Event::HostLeft {
                host,
                incarnation,
                reason,
            } => JsEvent::HostLeft {
                json: serde_json::json!({
                    "host": host,
                    "incarnation": format!("{incarnation:016x}"),
                    "reason": reason,
                })
                .to_string(),
                message: host,
            },
            Event::AgentLead { epoch } => JsEvent::AgentLead {
                json: serde_json::json!({ "epoch": epoch }).to_string(),
            },
            Event::AgentLose { epoch, reason } => JsEvent::AgentLose {
                json: serde_json::json!({ "epoch": epoch, "reason": reason }).to_string(),
                message: reason,
            },
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
        let mut host_id = None;
        let mut operations = None;
        let plan = match plan.as_str() {
            "supervised" => {
                let parsed =
                    options::parse_cluster_options(&options, process_env()).map_err(js_error)?;
                max_message = Some(parsed.max_message);
                host_id = parsed.remote.as_ref().map(|r| r.host_id.clone());
                // Before anything starts: a name in use fails the start here.
                let claimed = operate::claim(&parsed).map_err(js_error)?;
                operations = Some((claimed, parsed.clone()));
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
        let output = OutputLog::default();
        let inputs = supervisor::start(
            plan,
            events.clone(),
            processes.clone(),
            ids.clone(),
            output.clone(),
        );
        if let Some((Some(claimed), options)) = operations {
            if let Err(error) =
                operate::serve(claimed, &options, inputs.clone(), events.clone(), output)
            {
                // Nothing has started yet; the loop ends with nothing to stop.
                let _ = inputs.send(Input::Command(Command::Stop {
                    timeout: None,
                    trigger: "a failed start".into(),
                }));
                return Err(js_error(error));
            }
        }
        Ok(NativeCluster {
            inputs,
            events,
            processes,
            ids,
            wake,
            holds_loop: false,
            max_message,
            host_id,
        })
    }

    /// With option `redis`: this host's id in its namespace (given, or made up at start).
    #[napi(getter)]
    pub fn host_id(&self) -> Option<String> {
        self.host_id.clone()
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
            trigger: "stop()".into(),
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

    /// Replaces one worker: a new one starts in its slot, and it leaves once that one is ready;
    /// a `reloaded` event with `ticket` follows (its figures name both workers).
    #[napi]
    pub fn replace(&self, ticket: i64, id: u32) -> Result<(), Code> {
        self.command(Command::Replace {
            ticket: u64::try_from(ticket).unwrap_or(0),
            id,
        })
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
