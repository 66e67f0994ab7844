//! Reads and checks what JavaScript passes to `start()` and `fork()`. Every bad value is an error
//! with a code, found before anything is spawned.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::errors::{self, RcError, RcResult};
use crate::wire::node_ipc::Serialization;

/// Where the child's stdio entry `i` comes from (Node's `stdio` option, after JavaScript has turned
/// streams into descriptor numbers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StdioEntry {
    Pipe,
    Ignore,
    Ipc,
    /// A descriptor of this process, shared with the child (`'inherit'` at index i is `Fd(i)`).
    Fd(i32),
}

/// How to start one child.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// Absolute path of the script.
    pub exec: PathBuf,
    pub args: Vec<String>,
    pub exec_argv: Vec<String>,
    /// The Node binary the child runs (`execPath`); None: this process's own.
    pub exec_path: Option<PathBuf>,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: PathBuf,
    pub stdio: Vec<StdioEntry>,
    pub serialization: Serialization,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl ChildSpec {
    /// Where the Node IPC channel sits in the child (`NODE_CHANNEL_FD`).
    pub fn ipc_fd(&self) -> i32 {
        self.stdio
            .iter()
            .position(|e| *e == StdioEntry::Ipc)
            .map_or(3, |i| i as i32)
    }

    pub fn script_name(&self) -> String {
        self.exec
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.exec.display().to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// One listening socket per address, its accept queue shared by all workers.
    Shared,
    /// One SO_REUSEPORT socket per worker slot: the kernel spreads connections.
    ReusePort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Listening,
    Online,
    Message,
}

/// When the agent counts as ready (app workers start only then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentReadiness {
    /// Its main module has run (reported by the preload that JavaScript adds to its execArgv).
    Started,
    /// It calls `rcluster.ready()` or `process.send('ready')`.
    Message,
}

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub child: ChildSpec,
    pub readiness: AgentReadiness,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// More restarts than this within `window`, for one worker slot, and the cluster gives up.
    pub max_restarts: u32,
    pub window: Duration,
    /// The delay before a restart that follows other restarts in the window; doubles each time.
    pub delay: Duration,
    pub max_delay: Duration,
}

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub child: ChildSpec,
    pub workers: usize,
    pub schedule: Schedule,
    pub kill_timeout: Duration,
    pub readiness: Readiness,
    pub ready_timeout: Duration,
    pub restart: RestartPolicy,
    /// The largest messenger payload, in bytes.
    pub max_message: usize,
    pub agent: Option<AgentOptions>,
    pub reload: ReloadPolicy,
    pub watchdog: Watchdog,
    /// Descriptors of this process that workers may listen on with `listen({ fd })`.
    pub listen_fds: Vec<i32>,
}

/// How a rolling reload proceeds unless the call says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadPolicy {
    /// Slots replaced at once.
    pub parallel: usize,
    /// Whether the agent is replaced too (first, before the app workers).
    pub agent: bool,
}

/// What the primary watches in a running child besides its exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watchdog {
    /// Whether children get rcluster's child runtime (lib/child-runtime.js): heartbeats and the
    /// graceful handling of an uncaught exception.
    pub child_runtime: bool,
    pub heartbeat_interval: Duration,
    /// A child silent for longer is killed and replaced; None turns liveness checks off.
    pub heartbeat_timeout: Option<Duration>,
    /// A worker whose resident memory passes this many bytes is replaced gracefully.
    pub max_memory: Option<u64>,
}

pub const DEFAULT_KILL_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_READY_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_MAX_RESTARTS: u64 = 5;
pub const DEFAULT_RESTART_WINDOW_MS: u64 = 60_000;
pub const DEFAULT_RESTART_DELAY_MS: u64 = 100;
pub const DEFAULT_MAX_RESTART_DELAY_MS: u64 = 10_000;
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 64 << 20;
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 1_000;
pub const DEFAULT_HEARTBEAT_TIMEOUT_MS: u64 = 30_000;
/// V8 cannot hold a string much larger than this; a message must fit one.
const MAX_MESSAGE_SIZE: u64 = 512 << 20;
const MAX_WORKERS: u64 = 4096;
/// About 24 days: beyond this a millisecond count is surely a mistake (and overflows JS timers).
const MAX_MS: u64 = 2_147_483_647;
/// 8 PiB, JavaScript's largest exact integer: a byte count beyond it cannot have been meant.
const MAX_MEMORY: u64 = (1 << 53) - 1;

const CLUSTER_KEYS: &[&str] = &[
    "listenFds",
    "execPath",
    "exec",
    "args",
    "execArgv",
    "env",
    "cwd",
    "workers",
    "schedule",
    "killTimeout",
    "readiness",
    "readyTimeout",
    "maxRestarts",
    "restartWindow",
    "restartDelay",
    "maxRestartDelay",
    "maxMessageSize",
    "agent",
    "reloadParallel",
    "reloadAgent",
    "childRuntime",
    "heartbeatInterval",
    "heartbeatTimeout",
    "maxMemory",
    "serialization",
    "uid",
    "gid",
];

/// Options of `rcluster.start()`.
pub fn parse_cluster_options(
    value: &Value,
    process_env: Vec<(OsString, OsString)>,
) -> RcResult<ClusterOptions> {
    let obj = value
        .as_object()
        .ok_or_else(|| RcError::invalid_option("options", "an object", value))?;
    if let Some(unknown) = obj.keys().find(|k| !CLUSTER_KEYS.contains(&k.as_str())) {
        return Err(RcError::new(
            errors::INVALID_OPTION,
            format!(
                "unknown option `{unknown}` (known options: {})",
                CLUSTER_KEYS.join(", ")
            ),
        ));
    }
    let child = parse_child_spec(obj, process_env, true)?;
    let restart = RestartPolicy {
        max_restarts: u32::try_from(uint(
            obj,
            "maxRestarts",
            DEFAULT_MAX_RESTARTS,
            u64::from(u32::MAX),
        )?)
        .unwrap_or(u32::MAX),
        // A zero window forgets every restart at once: no budget and no backoff, a fork loop.
        window: positive_millis(obj, "restartWindow", DEFAULT_RESTART_WINDOW_MS)?,
        delay: millis(obj, "restartDelay", DEFAULT_RESTART_DELAY_MS)?,
        max_delay: millis(obj, "maxRestartDelay", DEFAULT_MAX_RESTART_DELAY_MS)?,
    };
    Ok(ClusterOptions {
        workers: parse_workers(obj.get("workers"))?,
        schedule: match obj.get("schedule") {
            None | Some(Value::Null) => Schedule::Shared,
            Some(Value::String(s)) if s == "shared" => Schedule::Shared,
            Some(Value::String(s)) if s == "reuseport" => Schedule::ReusePort,
            Some(other) => {
                return Err(RcError::invalid_option(
                    "schedule",
                    "'shared' or 'reuseport'",
                    other,
                ))
            }
        },
        kill_timeout: millis(obj, "killTimeout", DEFAULT_KILL_TIMEOUT_MS)?,
        readiness: match obj.get("readiness") {
            None | Some(Value::Null) => Readiness::Listening,
            Some(Value::String(s)) if s == "listening" => Readiness::Listening,
            Some(Value::String(s)) if s == "online" => Readiness::Online,
            Some(Value::String(s)) if s == "message" => Readiness::Message,
            Some(other) => {
                return Err(RcError::invalid_option(
                    "readiness",
                    "'listening', 'online' or 'message'",
                    other,
                ))
            }
        },
        // Zero would fail every worker before it could start.
        ready_timeout: positive_millis(obj, "readyTimeout", DEFAULT_READY_TIMEOUT_MS)?,
        restart,
        // Zero would refuse every message that carries data.
        max_message: uint_in(
            obj,
            "maxMessageSize",
            DEFAULT_MAX_MESSAGE_SIZE,
            1..=MAX_MESSAGE_SIZE,
        )? as usize,
        agent: match obj.get("agent") {
            None | Some(Value::Null) => None,
            Some(value) => Some(parse_agent(value, &child)?),
        },
        reload: ReloadPolicy {
            parallel: parse_reload_parallel(obj.get("reloadParallel"))?,
            agent: boolean(obj, "reloadAgent", false)?,
        },
        watchdog: parse_watchdog(obj)?,
        listen_fds: parse_listen_fds(obj.get("listenFds"))?,
        child,
    })
}

/// `listenFds`: descriptors of the primary that the operator gives the cluster (an inherited
/// listening socket, say), each an open socket.
fn parse_listen_fds(value: Option<&Value>) -> RcResult<Vec<i32>> {
    const EXPECTED: &str = "an array of descriptor numbers, each an open socket of this process";
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(RcError::invalid_option("listenFds", EXPECTED, other)),
    };
    items
        .iter()
        .map(|item| {
            let fd = item
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| RcError::invalid_option("listenFds", EXPECTED, item))?;
            // SAFETY: borrowed for one getsockopt; fails with EBADF if the number is not open.
            let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            nix::sys::socket::getsockopt(&borrowed, nix::sys::socket::sockopt::SockType).map_err(
                |e| {
                    RcError::new(
                        errors::INVALID_OPTION,
                        format!("option `listenFds`: descriptor {fd} is not an open socket ({e})"),
                    )
                },
            )?;
            Ok(fd)
        })
        .collect()
}

/// `reloadParallel` (and `reload({ parallel })`): how many slots are replaced at once.
pub fn parse_reload_parallel(value: Option<&Value>) -> RcResult<usize> {
    match value {
        None | Some(Value::Null) => Ok(1),
        Some(v @ Value::Number(n)) => match n.as_u64() {
            Some(n) if (1..=MAX_WORKERS).contains(&n) => Ok(n as usize),
            _ => Err(RcError::invalid_option(
                "reloadParallel",
                &format!("an integer from 1 to {MAX_WORKERS}"),
                v,
            )),
        },
        Some(other) => Err(RcError::invalid_option(
            "reloadParallel",
            &format!("an integer from 1 to {MAX_WORKERS}"),
            other,
        )),
    }
}

fn parse_watchdog(obj: &Map<String, Value>) -> RcResult<Watchdog> {
    let child_runtime = boolean(obj, "childRuntime", true)?;
    let heartbeat_interval =
        positive_millis(obj, "heartbeatInterval", DEFAULT_HEARTBEAT_INTERVAL_MS)?;
    let timeout = millis(obj, "heartbeatTimeout", DEFAULT_HEARTBEAT_TIMEOUT_MS)?;
    let heartbeat_timeout = (child_runtime && !timeout.is_zero()).then_some(timeout);
    if heartbeat_timeout.is_some_and(|t| t <= heartbeat_interval) {
        return Err(RcError::new(
            errors::INVALID_OPTION,
            format!(
                "option `heartbeatTimeout` ({} ms) must be longer than `heartbeatInterval` ({} ms), or 0 to turn liveness checks off",
                timeout.as_millis(),
                heartbeat_interval.as_millis()
            ),
        ));
    }
    Ok(Watchdog {
        child_runtime,
        heartbeat_interval,
        heartbeat_timeout,
        max_memory: parse_memory(obj.get("maxMemory"))?,
    })
}

/// `maxMemory`: bytes, or a string with a binary unit as PM2 takes it ('300M', '1.5G', '512MB').
/// Null or left out: no limit. Zero is an error rather than a second way to say "no limit": it
/// reads as a limit that every worker passes.
fn parse_memory(value: Option<&Value>) -> RcResult<Option<u64>> {
    const EXPECTED: &str =
        "a size from 1 byte to 8 PiB: a number of bytes, or a string such as '512M' or '1G'";
    let bytes = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(v @ Value::Number(n)) => {
            whole(n).ok_or_else(|| RcError::invalid_option("maxMemory", EXPECTED, v))?
        }
        Some(v @ Value::String(s)) => {
            let text = s.trim().to_ascii_uppercase();
            let text = text.strip_suffix('B').unwrap_or(&text);
            let (number, unit) = match text.char_indices().last() {
                Some((i, 'K')) => (&text[..i], 1u64 << 10),
                Some((i, 'M')) => (&text[..i], 1 << 20),
                Some((i, 'G')) => (&text[..i], 1 << 30),
                _ => (text, 1),
            };
            match number.trim().parse::<f64>().map(|n| n * unit as f64) {
                // Checked as a float: the cast to u64 would clamp a huge size silently.
                Ok(n) if (1.0..=MAX_MEMORY as f64).contains(&n) => n as u64,
                _ => return Err(RcError::invalid_option("maxMemory", EXPECTED, v)),
            }
        }
        Some(other) => return Err(RcError::invalid_option("maxMemory", EXPECTED, other)),
    };
    if !(1..=MAX_MEMORY).contains(&bytes) {
        return Err(RcError::invalid_option(
            "maxMemory",
            EXPECTED,
            value.unwrap_or(&Value::Null),
        ));
    }
    Ok(Some(bytes))
}

/// A whole non-negative number. Node-API hands over integers past u32 as floats (5 GiB arrives as
/// 5368709120.0), which `as_u64` alone would refuse.
fn whole(n: &serde_json::Number) -> Option<u64> {
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..=MAX_MEMORY as f64).contains(f))
            .map(|f| f as u64)
    })
}

fn boolean(obj: &Map<String, Value>, name: &str, default: bool) -> RcResult<bool> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(RcError::invalid_option(name, "true or false", other)),
    }
}

const AGENT_KEYS: &[&str] = &["exec", "args", "execArgv", "execPath", "env", "readiness"];

/// `agent`: a script path, or `{ exec, args, execArgv, env, readiness }`. It runs with the app
/// workers' settings unless these say otherwise; its `env` is added to theirs.
fn parse_agent(value: &Value, app: &ChildSpec) -> RcResult<AgentOptions> {
    let obj = match value {
        Value::String(s) => {
            let mut m = Map::new();
            m.insert("exec".into(), Value::String(s.clone()));
            m
        }
        Value::Object(m) => m.clone(),
        other => {
            return Err(RcError::invalid_option(
                "agent",
                "a script path or { exec, args, execArgv, env, readiness }",
                other,
            ))
        }
    };
    if let Some(unknown) = obj.keys().find(|k| !AGENT_KEYS.contains(&k.as_str())) {
        return Err(RcError::new(
            errors::INVALID_OPTION,
            format!(
                "unknown option `agent.{unknown}` (known: {})",
                AGENT_KEYS.join(", ")
            ),
        ));
    }
    let exec = match obj.get("exec") {
        Some(Value::String(s)) if !s.is_empty() => app.cwd.join(s),
        other => {
            return Err(RcError::invalid_option(
                "agent.exec",
                "a path to a script",
                other.unwrap_or(&Value::Null),
            ))
        }
    };
    check_script(&exec)?;
    let readiness = match obj.get("readiness") {
        None | Some(Value::Null) => AgentReadiness::Started,
        Some(Value::String(s)) if s == "started" => AgentReadiness::Started,
        Some(Value::String(s)) if s == "message" => AgentReadiness::Message,
        Some(other) => {
            return Err(RcError::invalid_option(
                "agent.readiness",
                "'started' or 'message'",
                other,
            ))
        }
    };
    let mut child = app.clone();
    child.exec = exec;
    child.args = strings(&obj, "args")?;
    if obj.contains_key("execArgv") {
        child.exec_argv = strings(&obj, "execArgv")?;
    }
    if obj.contains_key("execPath") {
        child.exec_path = parse_exec_path(obj.get("execPath"), &app.cwd)?;
    }
    child.env = merge_env(app.env.clone(), obj.get("env"))?;
    Ok(AgentOptions { child, readiness })
}

/// `workers`: a count, or 0 / 'max' for one per CPU this process may run on.
pub fn parse_workers(value: Option<&Value>) -> RcResult<usize> {
    let cpus = || std::thread::available_parallelism().map_or(1, |n| n.get());
    match value {
        None | Some(Value::Null) => Ok(cpus()),
        Some(Value::String(s)) if s == "max" => Ok(cpus()),
        Some(v @ Value::Number(n)) => match n.as_u64() {
            Some(0) => Ok(cpus()),
            Some(n) if n <= MAX_WORKERS => Ok(n as usize),
            _ => Err(RcError::invalid_option(
                "workers",
                &format!("an integer from 0 to {MAX_WORKERS}, or 'max'"),
                v,
            )),
        },
        Some(other) => Err(RcError::invalid_option(
            "workers",
            &format!("an integer from 0 to {MAX_WORKERS}, or 'max'"),
            other,
        )),
    }
}

/// A child's settings: the cluster options, or the compat primary's `cluster.settings` for `fork()`.
/// `check_exec` makes a missing script an error here; Node's own `fork()` leaves that to the child.
pub fn parse_child_spec(
    obj: &Map<String, Value>,
    process_env: Vec<(OsString, OsString)>,
    check_exec: bool,
) -> RcResult<ChildSpec> {
    let cwd = match obj.get("cwd") {
        None | Some(Value::Null) => std::env::current_dir().map_err(|e| {
            RcError::new(
                errors::INVALID_OPTION,
                format!("the current directory is unusable: {e}"),
            )
        })?,
        Some(Value::String(s)) if !s.is_empty() => absolute(Path::new(s))?,
        Some(other) => return Err(RcError::invalid_option("cwd", "a directory path", other)),
    };
    if !cwd.is_dir() {
        return Err(RcError::new(
            errors::INVALID_OPTION,
            format!("option `cwd`: {} is not a directory", cwd.display()),
        ));
    }
    let exec = match obj.get("exec") {
        Some(Value::String(s)) if !s.is_empty() => cwd.join(s),
        Some(other) => return Err(RcError::invalid_option("exec", "a path to a script", other)),
        None => {
            return Err(RcError::new(
                errors::INVALID_OPTION,
                "option `exec` is required: the script each worker runs",
            ))
        }
    };
    if check_exec {
        check_script(&exec)?;
    }
    let serialization = match obj.get("serialization") {
        None | Some(Value::Null) => Serialization::Json,
        Some(Value::String(s)) if s == "json" => Serialization::Json,
        Some(Value::String(s)) if s == "advanced" => Serialization::Advanced,
        Some(other) => {
            return Err(RcError::invalid_option(
                "serialization",
                "'json' or 'advanced'",
                other,
            ))
        }
    };
    Ok(ChildSpec {
        exec,
        args: strings(obj, "args")?,
        exec_argv: strings(obj, "execArgv")?,
        exec_path: parse_exec_path(obj.get("execPath"), &cwd)?,
        env: merge_env(process_env, obj.get("env"))?,
        cwd,
        stdio: parse_stdio(obj.get("stdio"))?,
        serialization,
        uid: optional_id(obj, "uid")?,
        gid: optional_id(obj, "gid")?,
    })
}

/// `execPath`, as `child_process.fork` takes it: the Node binary the children run (another
/// version of Node, or a wrapper around one), resolved against `cwd`; an executable file.
fn parse_exec_path(value: Option<&Value>, cwd: &Path) -> RcResult<Option<PathBuf>> {
    use std::os::unix::fs::PermissionsExt;
    let path = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if !s.is_empty() => cwd.join(s),
        Some(other) => {
            return Err(RcError::invalid_option(
                "execPath",
                "the path of a Node binary",
                other,
            ))
        }
    };
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(Some(path)),
        Ok(_) => Err(RcError::new(
            errors::INVALID_OPTION,
            format!(
                "option `execPath`: {} is not an executable file",
                path.display()
            ),
        )),
        Err(e) => Err(RcError::new(
            errors::INVALID_OPTION,
            format!("option `execPath`: {}: {e}", path.display()),
        )),
    }
}

fn absolute(p: &Path) -> RcResult<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    std::env::current_dir().map(|d| d.join(p)).map_err(|e| {
        RcError::new(
            errors::INVALID_OPTION,
            format!("the current directory is unusable: {e}"),
        )
    })
}

/// The script must exist and be readable by us; Node would otherwise fail in every worker, in a loop.
pub fn check_script(exec: &Path) -> RcResult<()> {
    let meta = std::fs::metadata(exec).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => RcError::new(
            errors::EXEC_NOT_FOUND,
            format!("the worker script {} does not exist", exec.display()),
        ),
        _ => RcError::new(
            errors::EXEC_UNREADABLE,
            format!("cannot read the worker script {}: {e}", exec.display()),
        ),
    })?;
    if !meta.is_file() {
        return Err(RcError::new(
            errors::EXEC_UNREADABLE,
            format!("the worker script {} is not a file", exec.display()),
        ));
    }
    std::fs::File::open(exec).map(drop).map_err(|e| {
        RcError::new(
            errors::EXEC_UNREADABLE,
            format!("cannot read the worker script {}: {e}", exec.display()),
        )
    })
}

fn strings(obj: &Map<String, Value>, name: &str) -> RcResult<Vec<String>> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) if !s.contains('\0') => Ok(s.clone()),
                other => Err(RcError::invalid_option(name, "an array of strings", other)),
            })
            .collect(),
        Some(other) => Err(RcError::invalid_option(name, "an array of strings", other)),
    }
}

/// The child's environment: ours, overlaid with `env`. Values are strings, numbers or booleans,
/// as Node accepts them; `null` removes a variable.
fn merge_env(
    process_env: Vec<(OsString, OsString)>,
    env: Option<&Value>,
) -> RcResult<Vec<(OsString, OsString)>> {
    let mut merged: BTreeMap<OsString, OsString> = process_env.into_iter().collect();
    let overrides = match env {
        None | Some(Value::Null) => return Ok(merged.into_iter().collect()),
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(RcError::invalid_option(
                "env",
                "an object of strings",
                other,
            ))
        }
    };
    for (key, value) in overrides {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(RcError::new(
                errors::INVALID_OPTION,
                format!("option `env`: invalid variable name {key:?}"),
            ));
        }
        let text = match value {
            Value::Null => {
                merged.remove(&OsString::from(key));
                continue;
            }
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(RcError::invalid_option(
                    &format!("env.{key}"),
                    "a string",
                    other,
                ))
            }
        };
        if text.contains('\0') {
            return Err(RcError::new(
                errors::INVALID_OPTION,
                format!("option `env.{key}` contains a NUL byte"),
            ));
        }
        merged.insert(key.into(), text.into());
    }
    Ok(merged.into_iter().collect())
}

fn parse_stdio(value: Option<&Value>) -> RcResult<Vec<StdioEntry>> {
    let items = match value {
        None | Some(Value::Null) => {
            return Ok(vec![
                StdioEntry::Fd(0),
                StdioEntry::Fd(1),
                StdioEntry::Fd(2),
                StdioEntry::Ipc,
            ])
        }
        Some(Value::Array(items)) => items,
        Some(other) => return Err(RcError::invalid_option("stdio", "an array", other)),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        out.push(match item {
            Value::String(s) if s == "pipe" || s == "overlapped" => StdioEntry::Pipe,
            Value::String(s) if s == "ignore" => StdioEntry::Ignore,
            Value::String(s) if s == "ipc" => StdioEntry::Ipc,
            Value::String(s) if s == "inherit" => StdioEntry::Fd(i as i32),
            // Node: a missing entry means a pipe for 0-2 and nothing above.
            Value::Null if i < 3 => StdioEntry::Pipe,
            Value::Null => StdioEntry::Ignore,
            Value::Number(n) => match n.as_i64().and_then(|n| i32::try_from(n).ok()) {
                Some(fd) if fd >= 0 => StdioEntry::Fd(fd),
                _ => {
                    return Err(RcError::invalid_option(
                        "stdio",
                        "entries 'pipe', 'ignore', 'inherit', 'ipc' or a descriptor",
                        item,
                    ))
                }
            },
            other => {
                return Err(RcError::invalid_option(
                    "stdio",
                    "entries 'pipe', 'ignore', 'inherit', 'ipc' or a descriptor",
                    other,
                ))
            }
        });
    }
    while out.len() < 3 {
        out.push(StdioEntry::Pipe);
    }
    match out.iter().filter(|e| **e == StdioEntry::Ipc).count() {
        1 => {}
        0 => out.push(StdioEntry::Ipc),
        _ => {
            return Err(RcError::new(
                errors::INVALID_OPTION,
                "option `stdio` may name 'ipc' only once",
            ))
        }
    }
    if out
        .iter()
        .position(|e| *e == StdioEntry::Ipc)
        .is_some_and(|i| i < 3)
    {
        return Err(RcError::new(
            errors::INVALID_OPTION,
            "option `stdio`: 'ipc' must come after stdin, stdout and stderr",
        ));
    }
    if out.len() > 3 + crate::os::spawner::MAX_EXTRA_FDS {
        return Err(RcError::new(
            errors::INVALID_OPTION,
            "option `stdio` has too many entries",
        ));
    }
    Ok(out)
}

fn optional_id(obj: &Map<String, Value>, name: &str) -> RcResult<Option<u32>> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| RcError::invalid_option(name, "a non-negative integer", v)),
        Some(other) => Err(RcError::invalid_option(
            name,
            "a non-negative integer",
            other,
        )),
    }
}

fn uint(obj: &Map<String, Value>, name: &str, default: u64, max: u64) -> RcResult<u64> {
    uint_in(obj, name, default, 0..=max)
}

fn uint_in(
    obj: &Map<String, Value>,
    name: &str,
    default: u64,
    range: RangeInclusive<u64>,
) -> RcResult<u64> {
    let expected = || format!("an integer from {} to {}", range.start(), range.end());
    match obj.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(v @ Value::Number(n)) => match whole(n) {
            Some(n) if range.contains(&n) => Ok(n),
            _ => Err(RcError::invalid_option(name, &expected(), v)),
        },
        Some(other) => Err(RcError::invalid_option(name, &expected(), other)),
    }
}

fn millis(obj: &Map<String, Value>, name: &str, default: u64) -> RcResult<Duration> {
    uint(obj, name, default, MAX_MS).map(Duration::from_millis)
}

/// A duration where zero would switch a safeguard off or fail every worker.
fn positive_millis(obj: &Map<String, Value>, name: &str, default: u64) -> RcResult<Duration> {
    uint_in(obj, name, default, 1..=MAX_MS).map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn script() -> (tempdir::Dir, String) {
        let dir = tempdir::Dir::new();
        let path = dir.path.join("app.js");
        std::fs::write(&path, "").unwrap();
        (dir, path.to_string_lossy().into_owned())
    }

    /// A throwaway directory, removed on drop.
    mod tempdir {
        pub struct Dir {
            pub path: std::path::PathBuf,
        }
        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let path = std::env::temp_dir().join(format!(
                    "rcluster-options-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&path).unwrap();
                Dir { path }
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }

    fn parse(v: Value) -> RcResult<ClusterOptions> {
        parse_cluster_options(
            &v,
            vec![("HOME".into(), "/root".into()), ("X".into(), "1".into())],
        )
    }

    #[test]
    fn defaults() {
        let (_d, exec) = script();
        let o = parse(json!({ "exec": exec })).unwrap();
        assert_eq!(
            o.workers,
            std::thread::available_parallelism().unwrap().get()
        );
        assert_eq!(o.schedule, Schedule::Shared);
        assert_eq!(o.kill_timeout, Duration::from_secs(5));
        assert_eq!(o.readiness, Readiness::Listening);
        assert_eq!(o.restart.max_restarts, 5);
        assert_eq!(o.child.ipc_fd(), 3);
        assert_eq!(o.child.serialization, Serialization::Json);
        assert_eq!(
            o.reload,
            ReloadPolicy {
                parallel: 1,
                agent: false
            }
        );
        assert!(o.watchdog.child_runtime);
        assert_eq!(o.watchdog.heartbeat_timeout, Some(Duration::from_secs(30)));
        assert_eq!(o.watchdog.max_memory, None);
    }

    #[test]
    fn memory_sizes_take_units() {
        let (_d, exec) = script();
        for (given, bytes) in [
            (json!(1000), Some(1000)),
            (json!("300M"), Some(300 << 20)),
            (json!("1.5G"), Some(3 << 29)),
            (json!("512mb"), Some(512 << 20)),
            (json!("64k"), Some(64 << 10)),
            (json!(null), None),
            // Node-API passes integers past u32 as floats.
            (json!(5_368_709_120.0), Some(5 << 30)),
        ] {
            let o = parse(json!({ "exec": exec, "maxMemory": given })).unwrap();
            assert_eq!(o.watchdog.max_memory, bytes, "{given}");
        }
        for bad in [
            json!("lots"),
            json!("-1M"),
            json!(-5),
            json!(true),
            json!(0),
            json!("0M"),
            json!("0.1"),
            json!(1.5),
            json!("1e30G"),
            json!("inf"),
            json!(9_007_199_254_740_992.0),
        ] {
            let e = parse(json!({ "exec": exec, "maxMemory": bad })).unwrap_err();
            assert_eq!(e.code, errors::INVALID_OPTION, "{bad}");
            assert!(e.message.contains("`maxMemory`"), "{}", e.message);
        }
    }

    #[test]
    fn heartbeat_timeout_must_exceed_its_interval() {
        let (_d, exec) = script();
        let e = parse(json!({ "exec": exec, "heartbeatInterval": 1000, "heartbeatTimeout": 500 }))
            .unwrap_err();
        assert!(e.message.contains("heartbeatTimeout"), "{}", e.message);
        let o = parse(json!({ "exec": exec, "heartbeatTimeout": 0 })).unwrap();
        assert_eq!(o.watchdog.heartbeat_timeout, None);
        let o = parse(json!({ "exec": exec, "childRuntime": false })).unwrap();
        assert_eq!(o.watchdog.heartbeat_timeout, None);
        assert!(parse(json!({ "exec": exec, "reloadParallel": 0 })).is_err());
    }

    #[test]
    fn exec_is_resolved_against_cwd_and_must_exist() {
        let (d, _exec) = script();
        let o = parse(json!({ "exec": "app.js", "cwd": d.path })).unwrap();
        assert_eq!(o.child.exec, d.path.join("app.js"));
        let e = parse(json!({ "exec": "nope.js", "cwd": d.path })).unwrap_err();
        assert_eq!(e.code, errors::EXEC_NOT_FOUND);
        let e = parse(json!({ "exec": ".", "cwd": d.path })).unwrap_err();
        assert_eq!(e.code, errors::EXEC_UNREADABLE);
        assert_eq!(parse(json!({})).unwrap_err().code, errors::INVALID_OPTION);
    }

    #[test]
    fn bad_values_name_the_option() {
        let (_d, exec) = script();
        for (key, bad) in [
            ("workers", json!(-1)),
            ("workers", json!(1.5)),
            ("workers", json!("many")),
            ("schedule", json!("round-robin")),
            ("killTimeout", json!(-5)),
            ("killTimeout", json!("5s")),
            ("readiness", json!("soon")),
            ("args", json!("a b")),
            ("args", json!([1])),
            ("env", json!({"A": {"nested": 1}})),
            ("env", json!(["A=1"])),
            ("cwd", json!("/definitely/not/here")),
            ("serialization", json!("v8")),
            ("uid", json!(-1)),
            ("restartWindow", json!(0)),
            ("restartWindow", json!(1.5)),
            ("restartWindow", json!(1e20)),
            ("readyTimeout", json!(0)),
            ("heartbeatInterval", json!(0)),
            ("killTimeout", json!(MAX_MS + 1)),
            ("maxRestarts", json!(-1)),
            ("maxRestarts", json!(u64::from(u32::MAX) + 1)),
            ("maxMessageSize", json!(0)),
            ("maxMessageSize", json!(MAX_MESSAGE_SIZE + 1)),
        ] {
            let mut o = json!({ "exec": exec });
            o[key] = bad.clone();
            let e = parse(o).unwrap_err();
            assert_eq!(e.code, errors::INVALID_OPTION, "{key}={bad}");
            assert!(e.message.contains(&format!("`{key}")), "{}", e.message);
        }
        let e = parse(json!({ "exec": exec, "worker": 2 })).unwrap_err();
        assert!(
            e.message.contains("unknown option `worker`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn env_overlays_the_process_environment() {
        let (_d, exec) = script();
        let o =
            parse(json!({ "exec": exec, "env": {"X": null, "PORT": 3000, "ON": true} })).unwrap();
        let env: BTreeMap<_, _> = o.child.env.into_iter().collect();
        assert_eq!(
            env.get(&OsString::from("HOME")),
            Some(&OsString::from("/root"))
        );
        assert_eq!(
            env.get(&OsString::from("PORT")),
            Some(&OsString::from("3000"))
        );
        assert_eq!(
            env.get(&OsString::from("ON")),
            Some(&OsString::from("true"))
        );
        assert!(!env.contains_key(&OsString::from("X")));
    }

    #[test]
    fn workers_max_and_zero_mean_cpus() {
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(parse_workers(Some(&json!("max"))).unwrap(), cpus);
        assert_eq!(parse_workers(Some(&json!(0))).unwrap(), cpus);
        assert_eq!(parse_workers(Some(&json!(3))).unwrap(), 3);
        assert!(parse_workers(Some(&json!(100000))).is_err());
    }

    #[test]
    fn stdio_like_node() {
        assert_eq!(
            parse_stdio(Some(&json!(["pipe", "pipe", "pipe", "ipc", "pipe"]))).unwrap(),
            vec![
                StdioEntry::Pipe,
                StdioEntry::Pipe,
                StdioEntry::Pipe,
                StdioEntry::Ipc,
                StdioEntry::Pipe
            ]
        );
        assert_eq!(
            parse_stdio(Some(&json!(["ignore", "inherit", 2]))).unwrap(),
            vec![
                StdioEntry::Ignore,
                StdioEntry::Fd(1),
                StdioEntry::Fd(2),
                StdioEntry::Ipc
            ]
        );
        assert!(parse_stdio(Some(&json!(["ipc", "pipe", "pipe"]))).is_err());
        assert!(parse_stdio(Some(&json!(["pipe", "pipe", "pipe", "ipc", "ipc"]))).is_err());
        assert!(parse_stdio(Some(&json!(["pipe", "pipe", "pipe", -3]))).is_err());
    }
}
