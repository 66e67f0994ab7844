//! The control socket's wire format (docs/control-protocol.md): JSON lines. Pure: a line in, a
//! request out; an outcome in, a line out.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::errors::{self, RcError};

/// The longest request line, without its newline.
pub const MAX_REQUEST: usize = 64 << 10;
/// The most log lines one `logs` request gets from the ring.
pub const MAX_LOG_LINES: usize = 2000;
const MAX_WORKERS: u64 = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Info,
    Status,
    Reload { parallel: Option<usize> },
    Scale { workers: usize },
    Restart { id: u32 },
    Stop { timeout: Option<Duration> },
    Logs { lines: usize, follow: bool },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    command: String,
    parallel: Option<Value>,
    workers: Option<Value>,
    timeout: Option<Value>,
    lines: Option<Value>,
    follow: Option<Value>,
    worker: Option<Value>,
}

fn bad(message: impl Into<String>) -> RcError {
    RcError::new(errors::CONTROL_BAD_REQUEST, message)
}

/// A whole number from `min` to `max`, or an error naming `what`.
fn whole(value: Option<&Value>, what: &str, min: u64, max: u64) -> Result<Option<u64>, RcError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64().filter(|n| (min..=max).contains(n)) {
            Some(n) => Ok(Some(n)),
            None => Err(bad(format!(
                "`{what}` must be a whole number from {min} to {max}, got {}",
                errors::describe(v)
            ))),
        },
    }
}

/// Reads one request line: the request's `id` (echoed in the answers; null if it had none) and
/// the request, or why it is refused.
pub fn parse(line: &[u8]) -> (Value, Result<Request, RcError>) {
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => return (Value::Null, Err(bad(format!("not JSON: {e}")))),
    };
    let Value::Object(mut map) = value else {
        return (Value::Null, Err(bad("a request is a JSON object")));
    };
    let id = map.remove("id").unwrap_or(Value::Null);
    (id, read(Value::Object(map)))
}

fn read(value: Value) -> Result<Request, RcError> {
    let raw: RawRequest = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    let request = match raw.command.as_str() {
        "info" => Request::Info,
        "status" => Request::Status,
        "reload" => Request::Reload {
            parallel: whole(raw.parallel.as_ref(), "parallel", 1, MAX_WORKERS)?.map(|n| n as usize),
        },
        "scale" => match whole(raw.workers.as_ref(), "workers", 1, MAX_WORKERS)? {
            Some(n) => Request::Scale {
                workers: n as usize,
            },
            None => return Err(bad("`scale` needs `workers`, from 1 to 4096")),
        },
        "restart" => match whole(raw.worker.as_ref(), "worker", 1, u64::from(u32::MAX))? {
            Some(n) => Request::Restart { id: n as u32 },
            None => return Err(bad("`restart` needs `worker`, a worker id")),
        },
        "stop" => Request::Stop {
            timeout: whole(raw.timeout.as_ref(), "timeout", 0, 2_147_483_647)?
                .map(Duration::from_millis),
        },
        "logs" => Request::Logs {
            lines: whole(raw.lines.as_ref(), "lines", 0, MAX_LOG_LINES as u64)?
                .map_or(100, |n| n as usize),
            follow: match raw.follow {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => b,
                Some(v) => {
                    return Err(bad(format!(
                        "`follow` must be true or false, got {}",
                        errors::describe(&v)
                    )))
                }
            },
        },
        other => {
            return Err(bad(format!(
                "unknown command {}: info, status, reload, scale, restart, stop or logs",
                errors::describe(&Value::String(other.into()))
            )))
        }
    };
    Ok(request)
}

/// The answer line (with its newline) for a request that succeeded.
pub fn ok(id: &Value, result: Value) -> String {
    line(json!({ "id": id, "ok": true, "result": result }))
}

/// The answer line for a request that failed.
pub fn error(id: &Value, error: &RcError) -> String {
    line(
        json!({ "id": id, "ok": false, "error": { "code": error.code, "message": error.message } }),
    )
}

/// One line of a `logs` answer.
pub fn log(id: &Value, entry: Value) -> String {
    line(json!({ "id": id, "log": entry }))
}

/// A follower missed `count` lines.
pub fn skipped(id: &Value, count: u64) -> String {
    line(json!({ "id": id, "skipped": count }))
}

fn line(value: Value) -> String {
    let mut text = value.to_string();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> Result<Request, &'static str> {
        parse(text.as_bytes()).1.map_err(|e| e.code)
    }

    #[test]
    fn reads_each_command() {
        assert_eq!(request(r#"{"command":"info"}"#), Ok(Request::Info));
        assert_eq!(
            request(r#"{"id":3,"command":"status"}"#),
            Ok(Request::Status)
        );
        assert_eq!(
            request(r#"{"command":"reload","parallel":2}"#),
            Ok(Request::Reload { parallel: Some(2) })
        );
        assert_eq!(
            request(r#"{"command":"scale","workers":3}"#),
            Ok(Request::Scale { workers: 3 })
        );
        assert_eq!(
            request(r#"{"command":"restart","worker":1}"#),
            Ok(Request::Restart { id: 1 })
        );
        assert_eq!(
            request(r#"{"command":"stop","timeout":0}"#),
            Ok(Request::Stop {
                timeout: Some(Duration::ZERO)
            })
        );
        assert_eq!(
            request(r#"{"command":"logs","follow":true}"#),
            Ok(Request::Logs {
                lines: 100,
                follow: true
            })
        );
    }

    #[test]
    fn echoes_the_id_whatever_it_is() {
        let (id, _) = parse(br#"{"id":"a-1","command":"info"}"#);
        assert_eq!(id, json!("a-1"));
        assert_eq!(
            ok(&id, json!({})),
            "{\"id\":\"a-1\",\"ok\":true,\"result\":{}}\n"
        );
    }

    #[test]
    fn refuses_what_is_not_a_request() {
        let bad_request = Err(errors::CONTROL_BAD_REQUEST);
        for text in [
            "",
            "not json",
            "[]",
            "42",
            r#"{"command":"format-disk"}"#,
            r#"{"command":"scale"}"#,
            r#"{"command":"scale","workers":0}"#,
            r#"{"command":"scale","workers":"3"}"#,
            r#"{"command":"scale","workers":4097}"#,
            r#"{"command":"scale","workers":1.5}"#,
            r#"{"command":"restart"}"#,
            r#"{"command":"restart","worker":-1}"#,
            r#"{"command":"logs","lines":100000}"#,
            r#"{"command":"logs","follow":"yes"}"#,
            r#"{"command":"info","extra":1}"#,
            r#"{"command":7}"#,
        ] {
            assert_eq!(request(text), bad_request, "{text}");
        }
    }

    #[test]
    fn an_error_line_carries_code_and_message() {
        let line = error(
            &json!(1),
            &RcError::new(errors::UNKNOWN_WORKER, "no worker 9"),
        );
        let back: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back["ok"], json!(false));
        assert_eq!(back["error"]["code"], json!(errors::UNKNOWN_WORKER));
    }
}
