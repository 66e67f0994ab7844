//! The options as JavaScript wrote them, read by serde. Each field's type accepts one kind of value
//! and refuses anything else with "must be <what>, got <value>"; `read` puts the option's path in
//! front (`agent.env.PORT`, `listenFds[1]`). Null counts as left out, as undefined does.

use std::collections::BTreeMap;
use std::fmt::{self, Display};
use std::path::PathBuf;

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use serde_path_to_error::{Path, Segment};

use super::{AgentReadiness, Readiness, Schedule, StdioEntry};
use super::{MAX_MEMORY, MAX_MESSAGE_SIZE, MAX_MS, MAX_WORKERS};
use crate::errors::{self, describe, RcError, RcResult};
use crate::wire::node_ipc::Serialization;

/// The options of `start()`. `fork()` (the Node-compatible primary) passes the child's part of
/// them, and `stdio`, which `start()` refuses.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawOptions {
    pub exec: Option<PathText>,
    pub args: Option<Vec<Text>>,
    pub exec_argv: Option<Vec<Text>>,
    pub exec_path: Option<PathText>,
    pub env: Option<Env>,
    pub cwd: Option<PathText>,
    pub stdio: Option<Vec<RawStdio>>,
    pub serialization: Option<Serialization>,
    pub uid: Option<Whole<0, U32_MAX>>,
    pub gid: Option<Whole<0, U32_MAX>>,

    pub workers: Option<Workers>,
    pub schedule: Option<Schedule>,
    pub kill_timeout: Option<Ms<0>>,
    pub readiness: Option<Readiness>,
    /// Zero would fail every worker before it could start.
    pub ready_timeout: Option<Ms<1>>,
    pub max_restarts: Option<Whole<0, U32_MAX>>,
    /// Zero would forget every restart at once: no budget and no backoff, a fork loop.
    pub restart_window: Option<Ms<1>>,
    pub restart_delay: Option<Ms<0>>,
    pub max_restart_delay: Option<Ms<0>>,
    /// Zero would refuse every message that carries data.
    pub max_message_size: Option<Whole<1, MAX_MESSAGE_SIZE>>,
    pub agent: Option<Agent>,
    pub reload_parallel: Option<Whole<1, MAX_WORKERS>>,
    pub reload_agent: Option<bool>,
    pub child_runtime: Option<bool>,
    /// Zero would mean no heartbeats: every child would be killed as unresponsive.
    pub heartbeat_interval: Option<Ms<1>>,
    /// Zero turns liveness checks off.
    pub heartbeat_timeout: Option<Ms<0>>,
    pub max_memory: Option<Memory>,
    pub listen_fds: Option<Vec<Descriptor>>,
    pub stop_signal: Option<StopSignal>,
    /// The cluster's name: its control socket's and the CLI's handle.
    pub name: Option<ClusterName>,
    /// The control socket (src/operate/control.rs); on unless false.
    pub control: Option<bool>,
    /// `HOST:PORT` to serve Prometheus metrics on (src/operate/metrics.rs).
    pub metrics: Option<Text>,
    /// Prefix every line a worker prints with its id and a timestamp.
    pub log_prefix: Option<bool>,
    /// The Redis server through which clusters on several hosts form one namespace.
    pub redis: Option<RedisUrl>,
    /// The cluster that spans hosts; only with `redis`.
    pub namespace: Option<Namespace>,
    /// This host's id within the namespace; only with `redis`.
    pub host_id: Option<HostId>,
}

/// `agent` as an object: what the agent runs differently from the app workers.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawAgent {
    pub exec: Option<PathText>,
    pub args: Option<Vec<Text>>,
    pub exec_argv: Option<Vec<Text>>,
    pub exec_path: Option<PathText>,
    pub env: Option<Env>,
    pub readiness: Option<AgentReadiness>,
    /// 'host': one agent per host; 'cluster': one in the namespace (with `redis`).
    pub scope: Option<Scope>,
    /// With scope 'cluster': how long the agent lease lives without a renewal.
    pub lease: Option<Ms<0>>,
}

/// `agent.scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Host,
    Cluster,
}

/// `agent`: a script path, or a `RawAgent`.
pub struct Agent(pub RawAgent);

impl<'de> Deserialize<'de> for Agent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AgentVisitor)
    }
}

struct AgentVisitor;

impl<'de> Visitor<'de> for AgentVisitor {
    type Value = Agent;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "a script path or { exec, args, execArgv, execPath, env, readiness, scope, lease }",
        )
    }

    fn visit_str<E: de::Error>(self, path: &str) -> Result<Agent, E> {
        let exec = PathText::deserialize(de::value::StrDeserializer::<E>::new(path))?;
        let raw = RawAgent {
            exec: Some(exec),
            ..RawAgent::default()
        };
        Ok(Agent(raw))
    }

    // Through the map access that records the path, so that errors name `agent.exec` and so on.
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Agent, A::Error> {
        RawAgent::deserialize(de::value::MapAccessDeserializer::new(map)).map(Agent)
    }
}

/// Reads `value` as `T`; a bad field becomes ERR_RCLUSTER_INVALID_OPTION naming it by its path,
/// or by `name` if it is `value` itself.
pub fn read<T: DeserializeOwned>(name: &str, value: &Value) -> RcResult<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path();
        let option = match path.iter().next() {
            None => name.to_string(),
            Some(_) => path.to_string(),
        };
        // Our types word their own errors; these are serde's, for containers and booleans.
        let message = e.inner().to_string();
        let message = if let Some(rest) = message.strip_prefix("unknown field ") {
            let known = rest.split_once(", ").map_or("", |(_, known)| known);
            format!("unknown option `{option}` ({known})")
        } else if let Some(rest) = message.strip_prefix("invalid type: ") {
            let expected = match rest.split_once(", expected ").map(|(_, e)| e) {
                Some("a sequence") => "an array",
                Some("a map") => "an object",
                other => other.unwrap_or("something else"),
            };
            let got = at(value, path).map_or_else(String::new, describe);
            format!("option `{option}` must be {expected}, got {got}")
        } else {
            format!("option `{option}` {message}")
        };
        RcError::new(errors::INVALID_OPTION, message)
    })
}

fn at<'v>(root: &'v Value, path: &Path) -> Option<&'v Value> {
    path.iter().try_fold(root, |value, segment| match segment {
        Segment::Seq { index } => value.get(index),
        Segment::Map { key } => value.get(key),
        _ => None,
    })
}

/// Reads one value and checks it with `parse`.
fn check<'de, D: Deserializer<'de>, T>(
    d: D,
    expected: impl Display,
    parse: impl FnOnce(&Value) -> Option<T>,
) -> Result<T, D::Error> {
    let value = Value::deserialize(d)?;
    parse(&value)
        .ok_or_else(|| de::Error::custom(format!("must be {expected}, got {}", describe(&value))))
}

const U32_MAX: u64 = u32::MAX as u64;
const FD_MAX: u64 = i32::MAX as u64;

/// A whole number from MIN to MAX (so casting it to a type that holds MAX is exact).
#[derive(Clone, Copy)]
pub struct Whole<const MIN: u64, const MAX: u64>(pub u64);

/// Milliseconds, up to about 24 days.
pub type Ms<const MIN: u64> = Whole<MIN, MAX_MS>;
pub type Descriptor = Whole<0, FD_MAX>;

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Whole<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        check(d, format_args!("an integer from {MIN} to {MAX}"), |v| {
            let n = whole(v.as_number()?)?;
            (MIN..=MAX).contains(&n).then_some(Whole(n))
        })
    }
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

/// `workers`: a count, or 0 / 'max' for one per CPU this process may run on.
pub struct Workers(pub usize);

pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let expected = format_args!("an integer from 0 to {MAX_WORKERS}, or 'max'");
        check(d, expected, |v| match v {
            Value::String(s) if s == "max" => Some(Workers(cpus())),
            Value::Number(n) => match whole(n)? {
                0 => Some(Workers(cpus())),
                n => (n <= MAX_WORKERS).then_some(Workers(n as usize)),
            },
            _ => None,
        })
    }
}

/// `stopSignal`: a signal name such as 'SIGTERM', sent to each leaving worker after its
/// disconnect. SIGKILL and SIGSTOP are refused: neither lets a worker finish what it serves.
pub struct StopSignal(pub nix::sys::signal::Signal);

impl<'de> Deserialize<'de> for StopSignal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use nix::sys::signal::Signal;
        use std::str::FromStr;
        let expected = "a signal name such as 'SIGTERM' (not SIGKILL or SIGSTOP)";
        check(d, expected, |v| {
            let signal = Signal::from_str(v.as_str()?).ok()?;
            (!matches!(signal, Signal::SIGKILL | Signal::SIGSTOP)).then_some(StopSignal(signal))
        })
    }
}

/// `maxMemory`: bytes, or a string with a binary unit as PM2 takes it ('300M', '1.5G', '512MB').
/// Zero is refused rather than taken as a second way to say "no limit": it reads as a limit that
/// every worker passes.
pub struct Memory(pub u64);

impl<'de> Deserialize<'de> for Memory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let expected =
            "a size from 1 byte to 8 PiB: a number of bytes, or a string such as '512M' or '1G'";
        check(d, expected, |v| {
            let bytes = match v {
                Value::Number(n) => whole(n)?,
                Value::String(s) => size(s)?,
                _ => return None,
            };
            (1..=MAX_MEMORY).contains(&bytes).then_some(Memory(bytes))
        })
    }
}

fn size(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_uppercase();
    let text = text.strip_suffix('B').unwrap_or(&text);
    let (number, unit) = [('K', 1u64 << 10), ('M', 1 << 20), ('G', 1 << 30)]
        .into_iter()
        .find_map(|(suffix, unit)| Some((text.strip_suffix(suffix)?, unit)))
        .unwrap_or((text, 1));
    let bytes = number.trim().parse::<f64>().ok()? * unit as f64;
    // Checked as a float: the cast to u64 would clamp a huge size silently.
    (1.0..=MAX_MEMORY as f64)
        .contains(&bytes)
        .then_some(bytes as u64)
}

/// A cluster's name: a file name in the control folder, so no `/`, no `..`, no leading dot.
pub struct ClusterName(pub String);

impl<'de> Deserialize<'de> for ClusterName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let expected = "a name of 1 to 64 letters, digits, '.', '_' or '-', not starting with '.' or '-' and without '..'";
        check(d, expected, |v| {
            let name = v.as_str()?;
            super::is_cluster_name(name).then(|| ClusterName(name.into()))
        })
    }
}

/// `redis`: a URL of a form `super::remote::check_redis_url` takes. A refused one is shown with
/// its password hidden: the message may end up in a log.
pub struct RedisUrl(pub String);

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use super::remote::{check_redis_url, hide_password, REDIS_FORMS};
        let value = Value::deserialize(d)?;
        let Some(url) = value.as_str() else {
            let got = describe(&value);
            return Err(de::Error::custom(format!(
                "must be {REDIS_FORMS}, got {got}"
            )));
        };
        check_redis_url(url)
            .map(|()| RedisUrl(url.into()))
            .map_err(|why| {
                let got = describe(&Value::from(hide_password(url)));
                de::Error::custom(format!("must be {REDIS_FORMS}, got {got} ({why})"))
            })
    }
}

/// `namespace`: a Redis key component shared by every host, so none of the characters Redis
/// Cluster (`{`, `}`) or a key layout (`:`, `/`) gives a meaning to.
pub struct Namespace(pub String);

impl<'de> Deserialize<'de> for Namespace {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let expected = "a name of 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'";
        check(d, expected, |v| {
            let name = v.as_str()?;
            super::remote::is_namespace(name).then(|| Namespace(name.into()))
        })
    }
}

/// `hostId`: this host's part of the keys it writes in the namespace.
pub struct HostId(pub String);

impl<'de> Deserialize<'de> for HostId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let expected = "an id of 1 to 128 letters, digits, '.', '_' or '-'";
        check(d, expected, |v| {
            let id = v.as_str()?;
            super::remote::is_host_id(id).then(|| HostId(id.into()))
        })
    }
}

/// An argument: argv cannot carry a NUL byte.
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        check(d, "a string without NUL bytes", |v| {
            Some(Text(v.as_str().filter(|s| !s.contains('\0'))?.into()))
        })
    }
}

/// A path, resolved later against `cwd`.
pub struct PathText(pub PathBuf);

impl<'de> Deserialize<'de> for PathText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        check(d, "a non-empty path", |v| {
            Some(PathText(v.as_str().filter(|s| !s.is_empty())?.into()))
        })
    }
}

/// `env`: variables added to the environment the child would otherwise get.
pub type Env = BTreeMap<String, EnvValue>;

/// A string, or a number or boolean as Node turns them into one; None (null) removes the variable.
pub struct EnvValue(pub Option<String>);

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let expected = "a string, number, boolean or null, without NUL bytes";
        check(d, expected, |v| {
            let text = match v {
                Value::Null => return Some(EnvValue(None)),
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            (!text.contains('\0')).then_some(EnvValue(Some(text)))
        })
    }
}

/// A `stdio` entry as given: what 'inherit' and a missing entry mean depends on its index.
pub enum RawStdio {
    Entry(StdioEntry),
    Inherit,
    Missing,
}

impl<'de> Deserialize<'de> for RawStdio {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use StdioEntry::{Fd, Ignore, Ipc, Pipe};
        let expected = "'pipe', 'ignore', 'inherit', 'ipc', null or a descriptor";
        check(d, expected, |v| match v {
            Value::Null => Some(RawStdio::Missing),
            Value::String(s) => match s.as_str() {
                "pipe" | "overlapped" => Some(RawStdio::Entry(Pipe)),
                "ignore" => Some(RawStdio::Entry(Ignore)),
                "ipc" => Some(RawStdio::Entry(Ipc)),
                "inherit" => Some(RawStdio::Inherit),
                _ => None,
            },
            _ => {
                let fd = i32::try_from(v.as_i64()?).ok().filter(|fd| *fd >= 0)?;
                Some(RawStdio::Entry(Fd(fd)))
            }
        })
    }
}

/// One of a few words, each standing for a value.
fn word<'de, D: Deserializer<'de>, T: Copy>(d: D, words: &[(&str, T)]) -> Result<T, D::Error> {
    let mut quoted: Vec<String> = words.iter().map(|(w, _)| format!("'{w}'")).collect();
    let last = quoted.pop().unwrap_or_default();
    let expected = format!("{} or {last}", quoted.join(", "));
    check(d, expected, |v| {
        let found = words.iter().find(|(w, _)| v.as_str() == Some(w));
        found.map(|(_, value)| *value)
    })
}

macro_rules! words {
    ($($ty:ty { $($word:literal => $variant:ident),+ })+) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                word(d, &[$(($word, Self::$variant)),+])
            }
        }
    )+};
}

words! {
    Schedule { "shared" => Shared, "reuseport" => ReusePort }
    Readiness { "listening" => Listening, "online" => Online, "message" => Message }
    AgentReadiness { "started" => Started, "message" => Message }
    Scope { "host" => Host, "cluster" => Cluster }
    Serialization { "json" => Json, "advanced" => Advanced }
}
