//! Reads and checks what JavaScript passes to `start()` and `fork()`. Every bad value is an error
//! with a code, found before anything is spawned.
//!
//! Two steps: serde reads the options into `raw::RawOptions`, whose field types each refuse a bad
//! value of their kind, naming the option; then `ClusterOptions` and `ChildSpec` are built from
//! it, with the defaults and the checks that look at the file system or at two options at once.

mod raw;
mod remote;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use self::raw::{Descriptor, Ms, PathText, RawAgent, RawOptions, RawStdio, Text, Whole, Workers};
use crate::errors::{self, RcError, RcResult};
use crate::remote::lease::{LeaseTiming, DEFAULT_LEASE};
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
    pub scope: AgentScope,
}

/// Where agents run (`agent.scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentScope {
    /// One per host: each cluster has its own, started before its app workers.
    Host,
    /// One in the whole namespace (option `redis`): the host that holds the agent lease runs it
    /// (src/remote/lease.rs), and app workers do not wait for it.
    Cluster(LeaseTiming),
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
    /// Listening sockets systemd passed (`LISTEN_FDS`), which serve the workers that listen on
    /// their addresses (src/primary/inherited.rs).
    pub systemd_fds: Vec<i32>,
    /// Sent to each app worker the primary sends away, right after its disconnect.
    pub stop_signal: Option<nix::sys::signal::Signal>,
    pub operations: Operations,
    /// The namespace this cluster joins with clusters on other hosts; None without `redis`.
    pub remote: Option<RemoteOptions>,
}

/// `redis`, `namespace` and `hostId`: where clusters on several hosts meet, under which name, and
/// who this host is among them.
#[derive(Clone, PartialEq, Eq)]
pub struct RemoteOptions {
    /// As given: `redis://...`, `unix://...` or `redis+unix://...` (src/primary/options/remote.rs).
    pub url: String,
    /// Default: the cluster's `name`.
    pub namespace: String,
    /// Default: `<hostname>-<pid>-<4 hex digits>`.
    pub host_id: String,
}

// By hand: the URL may hold a password, and options are printed when debugging.
impl std::fmt::Debug for RemoteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteOptions")
            .field("url", &remote::hide_password(&self.url))
            .field("namespace", &self.namespace)
            .field("host_id", &self.host_id)
            .finish()
    }
}

/// How operators reach the running cluster (src/operate/).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operations {
    /// The cluster's name; given, or the script's file name without its extension.
    pub name: String,
    /// Whether the cluster serves a control socket.
    pub control: bool,
    /// Where to serve Prometheus metrics (`metrics: 'HOST:PORT'`); `:PORT` is every interface,
    /// given as `[::]:PORT` (src/operate/metrics.rs falls back to IPv4 where IPv6 is off).
    pub metrics: Option<SocketAddr>,
    /// Every line a child prints gets its worker id and a timestamp in front.
    pub log_prefix: bool,
}

/// A name the control folder can hold as a file name: 1 to 64 of `[A-Za-z0-9._-]`, not starting
/// with `.` or `-` (no hidden files, nothing a CLI takes for a flag), and no `..`.
pub fn is_cluster_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.starts_with(['.', '-'])
        && !name.contains("..")
}

/// The name a cluster gets when none is given: its script's file name without the extension,
/// with what a name cannot hold replaced by `-`.
pub fn default_cluster_name(exec: &Path) -> String {
    let stem = exec
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut name: String = stem
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '-' | '.' => c,
            _ => '-',
        })
        .take(64)
        .collect();
    while name.contains("..") {
        name = name.replace("..", ".");
    }
    let name = name.trim_start_matches(['.', '-']).to_string();
    if name.is_empty() {
        "app".into()
    } else {
        name
    }
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
    /// Whether children get rcluster's child runtime (lib/child/child-runtime.js): heartbeats and the
    /// graceful handling of an uncaught exception.
    pub child_runtime: bool,
    pub heartbeat_interval: Duration,
    /// A child silent for longer is killed and replaced; None turns liveness checks off.
    pub heartbeat_timeout: Option<Duration>,
    /// A worker whose resident memory passes this many bytes is replaced gracefully.
    pub max_memory: Option<u64>,
}

/// V8 cannot hold a string much larger than this; a message must fit one.
const MAX_MESSAGE_SIZE: u64 = 512 << 20;
const MAX_WORKERS: u64 = 4096;
/// About 24 days: beyond this a millisecond count is surely a mistake (and overflows JS timers).
const MAX_MS: u64 = 2_147_483_647;
/// 8 PiB, JavaScript's largest exact integer: a byte count beyond it cannot have been meant.
const MAX_MEMORY: u64 = (1 << 53) - 1;

/// What systemd tells the service's main process, the primary: its sockets (src/primary/
/// inherited.rs) and its notification socket and watchdog (src/operate/notify.rs). The workers
/// do not inherit them: a worker that said `READY=1` would speak for the whole service.
const SERVICE_VARIABLES: [&str; 6] = [
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// Options of `rcluster.start()`.
pub fn parse_cluster_options(
    value: &Value,
    process_env: Vec<(OsString, OsString)>,
) -> RcResult<ClusterOptions> {
    // Checked first: serde would take an array for the fields in order.
    if !value.is_object() {
        return Err(RcError::invalid_option("options", "an object", value));
    }
    let raw: RawOptions = raw::read("options", value)?;
    if raw.stdio.is_some() {
        // The supervisor decides: a worker's stdin is not the terminal's, and the agent's stderr
        // passes through the primary.
        let message = "unknown option `stdio`: start() sets its workers' stdio itself";
        return Err(invalid(message));
    }
    // systemd's sockets are the primary's; the workers do not inherit its variables.
    let systemd_fds = super::inherited::from_env(&process_env, std::process::id());
    let process_env = process_env
        .into_iter()
        .filter(|(k, _)| !SERVICE_VARIABLES.iter().any(|v| k == v))
        .collect();
    let child = child_spec(&raw, process_env, true)?;
    let child_runtime = raw.child_runtime.unwrap_or(true);
    let heartbeat_interval = millis(raw.heartbeat_interval, 1_000);
    let timeout = millis(raw.heartbeat_timeout, 30_000);
    let heartbeat_timeout = (child_runtime && !timeout.is_zero()).then_some(timeout);
    if heartbeat_timeout.is_some_and(|t| t <= heartbeat_interval) {
        return Err(invalid(format!(
            "option `heartbeatTimeout` ({} ms) must be longer than `heartbeatInterval` ({} ms), or 0 to turn liveness checks off",
            timeout.as_millis(),
            heartbeat_interval.as_millis()
        )));
    }
    let kill_timeout = millis(raw.kill_timeout, 5_000);
    let name = raw
        .name
        .map_or_else(|| default_cluster_name(&child.exec), |n| n.0);
    let spans_hosts = raw.redis.is_some();
    let agent = raw
        .agent
        .as_ref()
        .map(|a| agent_options(&a.0, &child, kill_timeout, spans_hosts));
    let remote = remote_options(raw.redis, raw.namespace, raw.host_id, &name)?;
    Ok(ClusterOptions {
        workers: raw.workers.map_or_else(raw::cpus, |w| w.0),
        schedule: raw.schedule.unwrap_or(Schedule::Shared),
        kill_timeout,
        readiness: raw.readiness.unwrap_or(Readiness::Listening),
        ready_timeout: millis(raw.ready_timeout, 30_000),
        restart: RestartPolicy {
            max_restarts: raw.max_restarts.map_or(5, |n| n.0 as u32),
            window: millis(raw.restart_window, 60_000),
            delay: millis(raw.restart_delay, 100),
            max_delay: millis(raw.max_restart_delay, 10_000),
        },
        max_message: raw.max_message_size.map_or(64 << 20, |n| n.0 as usize),
        agent: agent.transpose()?,
        reload: ReloadPolicy {
            parallel: raw.reload_parallel.map_or(1, |n| n.0 as usize),
            agent: raw.reload_agent.unwrap_or(false),
        },
        watchdog: Watchdog {
            child_runtime,
            heartbeat_interval,
            heartbeat_timeout,
            max_memory: raw.max_memory.map(|m| m.0),
        },
        listen_fds: listen_fds(raw.listen_fds.as_deref().unwrap_or_default())?,
        systemd_fds,
        stop_signal: raw.stop_signal.as_ref().map(|s| s.0),
        operations: Operations {
            name,
            control: raw.control.unwrap_or(true),
            metrics: raw.metrics.map(|m| metrics_address(&m.0)).transpose()?,
            log_prefix: raw.log_prefix.unwrap_or(false),
        },
        remote,
        child,
    })
}

/// The remote options, or None without `redis`; `namespace` and `hostId` mean nothing without
/// it, so either alone is a mistake (a forgotten `redis`), not something to ignore.
fn remote_options(
    redis: Option<raw::RedisUrl>,
    namespace: Option<raw::Namespace>,
    host_id: Option<raw::HostId>,
    name: &str,
) -> RcResult<Option<RemoteOptions>> {
    let Some(url) = redis else {
        let given = [
            ("namespace", namespace.is_some()),
            ("hostId", host_id.is_some()),
        ];
        return match given.into_iter().find(|(_, given)| *given) {
            Some((option, _)) => Err(invalid(format!(
                "option `{option}` needs `redis`: it only means something to clusters that meet through a Redis server"
            ))),
            None => Ok(None),
        };
    };
    Ok(Some(RemoteOptions {
        url: url.0,
        // A cluster name always makes a valid namespace (its rule is the stricter one).
        namespace: namespace.map_or_else(|| name.to_string(), |n| n.0),
        host_id: host_id.map_or_else(remote::default_host_id, |h| h.0),
    }))
}

/// A child's settings: the compat primary's `cluster.settings` for `fork()`. `check_exec` makes a
/// missing script an error here; Node's own `fork()` leaves that to the child.
pub fn parse_child_spec(
    obj: &Map<String, Value>,
    process_env: Vec<(OsString, OsString)>,
    check_exec: bool,
) -> RcResult<ChildSpec> {
    let raw: RawOptions = raw::read("settings", &Value::Object(obj.clone()))?;
    child_spec(&raw, process_env, check_exec)
}

/// `workers` (as `scale()` takes it too): a count, or 0 / 'max' for one per CPU.
pub fn parse_workers(value: Option<&Value>) -> RcResult<usize> {
    let workers: Option<Workers> = raw::read("workers", value.unwrap_or(&Value::Null))?;
    Ok(workers.map_or_else(raw::cpus, |w| w.0))
}

/// `reloadParallel` (and `reload({ parallel })`): how many slots are replaced at once.
pub fn parse_reload_parallel(value: Option<&Value>) -> RcResult<usize> {
    let parallel: Option<Whole<1, MAX_WORKERS>> =
        raw::read("reloadParallel", value.unwrap_or(&Value::Null))?;
    Ok(parallel.map_or(1, |n| n.0 as usize))
}

fn invalid(message: impl Into<String>) -> RcError {
    RcError::new(errors::INVALID_OPTION, message)
}

fn millis<const MIN: u64>(value: Option<Ms<MIN>>, default: u64) -> Duration {
    Duration::from_millis(value.map_or(default, |ms| ms.0))
}

fn texts(value: &Option<Vec<Text>>) -> Vec<String> {
    value.iter().flatten().map(|t| t.0.clone()).collect()
}

fn child_spec(
    raw: &RawOptions,
    process_env: Vec<(OsString, OsString)>,
    check_exec: bool,
) -> RcResult<ChildSpec> {
    let cwd = match &raw.cwd {
        Some(PathText(path)) => std::path::absolute(path),
        None => std::env::current_dir(),
    };
    let cwd = cwd.map_err(|e| invalid(format!("the current directory is unusable: {e}")))?;
    if !cwd.is_dir() {
        let message = format!("option `cwd`: {} is not a directory", cwd.display());
        return Err(invalid(message));
    }
    let Some(PathText(exec)) = &raw.exec else {
        return Err(invalid(
            "option `exec` is required: the script each worker runs",
        ));
    };
    let exec = cwd.join(exec);
    if check_exec {
        check_script(&exec)?;
    }
    Ok(ChildSpec {
        exec,
        args: texts(&raw.args),
        exec_argv: texts(&raw.exec_argv),
        exec_path: exec_path("execPath", raw.exec_path.as_ref(), &cwd)?,
        env: merge_env("env", process_env, raw.env.as_ref())?,
        stdio: stdio(raw.stdio.as_deref())?,
        serialization: raw.serialization.unwrap_or(Serialization::Json),
        uid: raw.uid.map(|id| id.0 as u32),
        gid: raw.gid.map(|id| id.0 as u32),
        cwd,
    })
}

/// The agent runs with the app workers' settings unless its own say otherwise; its `env` is added
/// to theirs, and its `args` replace theirs (they were meant for another script).
fn agent_options(
    raw: &RawAgent,
    app: &ChildSpec,
    kill_timeout: Duration,
    spans_hosts: bool,
) -> RcResult<AgentOptions> {
    let Some(PathText(exec)) = &raw.exec else {
        return Err(invalid(
            "option `agent.exec` is required: the script the agent runs",
        ));
    };
    let mut child = app.clone();
    child.exec = app.cwd.join(exec);
    check_script(&child.exec)?;
    child.args = texts(&raw.args);
    if raw.exec_argv.is_some() {
        child.exec_argv = texts(&raw.exec_argv);
    }
    if raw.exec_path.is_some() {
        child.exec_path = exec_path("agent.execPath", raw.exec_path.as_ref(), &app.cwd)?;
    }
    child.env = merge_env("agent.env", app.env.clone(), raw.env.as_ref())?;
    let readiness = raw.readiness.unwrap_or(AgentReadiness::Started);
    let scope = agent_scope(raw, kill_timeout, spans_hosts)?;
    Ok(AgentOptions {
        child,
        readiness,
        scope,
    })
}

/// `agent.scope` and `agent.lease`. Scope 'cluster' needs `redis`, without which there is no
/// namespace to elect one agent in: refused rather than run as 'host', which would start one
/// agent per host where the app counts on one in all. A lease means nothing to scope 'host'.
fn agent_scope(raw: &RawAgent, kill_timeout: Duration, spans_hosts: bool) -> RcResult<AgentScope> {
    match raw.scope.unwrap_or(raw::Scope::Host) {
        raw::Scope::Host => match raw.lease {
            Some(_) => Err(invalid(
                "option `agent.lease` only means something with `agent.scope: 'cluster'`",
            )),
            None => Ok(AgentScope::Host),
        },
        raw::Scope::Cluster if !spans_hosts => Err(invalid(
            "option `agent.scope` 'cluster' needs `redis`: one agent in a whole namespace is elected through a Redis server (without it, leave `scope` out: one agent per cluster)",
        )),
        raw::Scope::Cluster => {
            let lease = raw.lease.map(|ms| Duration::from_millis(ms.0));
            let (lease, default) = match lease {
                Some(lease) => (lease, ""),
                None => (DEFAULT_LEASE, ", the default"),
            };
            LeaseTiming::new(lease, kill_timeout)
                .map(AgentScope::Cluster)
                .map_err(|why| {
                    invalid(format!(
                        "option `agent.lease` ({} ms{default}) {why}",
                        lease.as_millis()
                    ))
                })
        }
    }
}

/// `execPath`, as `child_process.fork` takes it: the Node binary the children run (another
/// version of Node, or a wrapper around one), resolved against `cwd`; an executable file.
fn exec_path(name: &str, path: Option<&PathText>, cwd: &Path) -> RcResult<Option<PathBuf>> {
    use std::os::unix::fs::PermissionsExt;
    let Some(PathText(path)) = path else {
        return Ok(None);
    };
    let path = cwd.join(path);
    let shown = path.display();
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(Some(path)),
        Ok(_) => Err(invalid(format!(
            "option `{name}`: {shown} is not an executable file"
        ))),
        Err(e) => Err(invalid(format!("option `{name}`: {shown}: {e}"))),
    }
}

/// The child's environment: `base`, overlaid with `env`.
fn merge_env(
    name: &str,
    base: Vec<(OsString, OsString)>,
    env: Option<&raw::Env>,
) -> RcResult<Vec<(OsString, OsString)>> {
    let mut merged: BTreeMap<OsString, OsString> = base.into_iter().collect();
    for (key, value) in env.into_iter().flatten() {
        if key.is_empty() || key.contains(['=', '\0']) {
            return Err(invalid(format!(
                "option `{name}`: invalid variable name {key:?}"
            )));
        }
        match &value.0 {
            Some(text) => merged.insert(key.into(), text.into()),
            None => merged.remove(OsStr::new(key)),
        };
    }
    Ok(merged.into_iter().collect())
}

/// `stdio` as Node takes it (after JavaScript has turned streams into descriptor numbers).
fn stdio(raw: Option<&[RawStdio]>) -> RcResult<Vec<StdioEntry>> {
    use StdioEntry::{Fd, Ignore, Ipc, Pipe};
    let Some(raw) = raw else {
        return Ok(vec![Fd(0), Fd(1), Fd(2), Ipc]);
    };
    let mut out: Vec<StdioEntry> = (0..)
        .zip(raw)
        .map(|(i, entry)| match entry {
            RawStdio::Entry(entry) => entry.clone(),
            RawStdio::Inherit => Fd(i),
            // Node: a missing entry means a pipe for 0-2 and nothing above.
            RawStdio::Missing if i < 3 => Pipe,
            RawStdio::Missing => Ignore,
        })
        .collect();
    while out.len() < 3 {
        out.push(Pipe);
    }
    match out.iter().filter(|e| **e == Ipc).count() {
        0 => out.push(Ipc),
        1 => {}
        _ => return Err(invalid("option `stdio` may name 'ipc' only once")),
    }
    if out.iter().position(|e| *e == Ipc).is_some_and(|i| i < 3) {
        let message = "option `stdio`: 'ipc' must come after stdin, stdout and stderr";
        return Err(invalid(message));
    }
    if out.len() > 3 + crate::os::spawner::MAX_EXTRA_FDS {
        return Err(invalid("option `stdio` has too many entries"));
    }
    Ok(out)
}

/// `listenFds`: descriptors of the primary that the operator gives the cluster (an inherited
/// listening socket, say), each an open socket.
fn listen_fds(fds: &[Descriptor]) -> RcResult<Vec<i32>> {
    use nix::sys::socket::{getsockopt, sockopt::SockType};
    let check = |(i, fd): (usize, &Descriptor)| {
        let fd = fd.0 as i32;
        // SAFETY: borrowed for one getsockopt; fails with EBADF if the number is not open.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        match getsockopt(&borrowed, SockType) {
            Ok(_) => Ok(fd),
            Err(e) => Err(invalid(format!(
                "option `listenFds[{i}]`: descriptor {fd} is not an open socket ({e})"
            ))),
        }
    };
    fds.iter().enumerate().map(check).collect()
}

/// `metrics`: `HOST:PORT` with an IP address (`[::1]` for IPv6) or `localhost` as the host, or
/// `:PORT` for every interface; the port from 1 to 65535.
pub fn metrics_address(text: &str) -> RcResult<SocketAddr> {
    let bad = || {
        invalid(format!(
            "option `metrics` must be HOST:PORT (an IP address or localhost, and a port from 1 to 65535) or :PORT, got {}",
            errors::describe(&Value::from(text))
        ))
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0 && !port.starts_with('+'))
        .ok_or_else(bad)?;
    let ip: IpAddr = match host {
        "" => Ipv6Addr::UNSPECIFIED.into(),
        "localhost" => Ipv4Addr::LOCALHOST.into(),
        _ => match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => v6.parse::<Ipv6Addr>().map_err(|_| bad())?.into(),
            None => host.parse::<Ipv4Addr>().map_err(|_| bad())?.into(),
        },
    };
    Ok(SocketAddr::new(ip, port))
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
