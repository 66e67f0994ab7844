//! systemd's notifications (sd_notify(3)): with `NOTIFY_SOCKET` set, the primary says when the
//! cluster is ready, reloading and stopping, with a status line; with `WATCHDOG_USEC` set, it
//! pings systemd's watchdog, but only while its loop answers, so that a stuck primary gets its
//! service restarted.
//!
//! One datagram of `KEY=VALUE` lines on a Unix socket, path or abstract (`@name`), is the whole
//! protocol; std's `UnixDatagram` sends it. The variables are read once and left in place:
//! unsetting them from inside a Node process would race Node's own threads reading the
//! environment.

use std::ffi::OsString;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::Shared;
use crate::primary::events::Event;
use crate::primary::inputs::Command;

/// The watchdog's ping interval, however odd `WATCHDOG_USEC` is.
const MIN_PING: Duration = Duration::from_millis(1);
const MAX_PING: Duration = Duration::from_secs(86_400);

pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// How often to ping the watchdog: half its timeout.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`; None without a usable socket.
    pub fn from_env(var: impl Fn(&str) -> Option<OsString>) -> Option<Notifier> {
        let path = var("NOTIFY_SOCKET")?;
        let addr = address(path.as_encoded_bytes())?;
        let socket = UnixDatagram::unbound().ok()?;
        socket.set_nonblocking(true).ok()?;
        let ours = var("WATCHDOG_PID")
            .is_none_or(|pid| pid.to_str() == Some(&std::process::id().to_string()));
        let watchdog = var("WATCHDOG_USEC")
            .and_then(|usec| usec.to_str()?.parse::<u64>().ok())
            .filter(|usec| *usec > 0 && ours)
            // Half the timeout, as systemd advises; kept within reason, since a zero interval
            // would panic the timer and a huge one overflow it.
            .map(|usec| Duration::from_micros(usec / 2).clamp(MIN_PING, MAX_PING));
        Some(Notifier {
            socket,
            addr,
            watchdog,
        })
    }

    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Best effort, never waits: systemd gone or its queue full, the line is dropped.
    pub fn send(&self, text: &str) {
        let _ = self.socket.send_to_addr(text.as_bytes(), &self.addr);
    }

    /// Called by the loop for every event: it must not wait.
    pub fn observe(&self, event: &Event) {
        if let Some(text) = message(event) {
            self.send(&text);
        }
    }
}

/// A path, or `@name` for an abstract socket.
fn address(bytes: &[u8]) -> Option<SocketAddr> {
    match bytes.split_first()? {
        (b'@', name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name).ok()
        }
        (b'/', _) => {
            use std::os::unix::ffi::OsStrExt;
            SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(bytes)).ok()
        }
        _ => None,
    }
}

/// What systemd hears of an event.
fn message(event: &Event) -> Option<String> {
    if matches!(event, Event::Reloaded { .. }) && !event.ends_a_reload() {
        // A refused reload or one worker's replace: systemd heard of no reload starting.
        return None;
    }
    Some(match event {
        Event::Ready => "READY=1\nSTATUS=ready".into(),
        Event::ReloadStarted { trigger, workers } => format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading {workers} workers ({})",
            monotonic_usec(),
            one_line(trigger)
        ),
        Event::Reloaded {
            error: None,
            details,
            ..
        } => format!(
            "READY=1\nSTATUS=ready: reloaded {} workers",
            details.get("replaced").unwrap_or(&serde_json::Value::Null)
        ),
        Event::Reloaded {
            error: Some((_, why)),
            ..
        } => format!("READY=1\nSTATUS=ready: reload aborted: {}", one_line(why)),
        Event::Scaled {
            workers,
            error: None,
            ..
        } => format!("STATUS=ready: {workers} workers"),
        Event::Error { message, .. } => format!("STATUS=failed: {}", one_line(message)),
        Event::Stopping { trigger } => {
            format!("STOPPING=1\nSTATUS=stopping ({})", one_line(trigger))
        }
        _ => return None,
    })
}

/// A status is one line: what a worker or an operator wrote may hold newlines.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect()
}

/// CLOCK_MONOTONIC in microseconds, as `RELOADING=1` wants it beside.
fn monotonic_usec() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own; CLOCK_MONOTONIC always exists on Linux.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) } != 0 {
        return 0;
    }
    (t.tv_sec as u64)
        .saturating_mul(1_000_000)
        .saturating_add(t.tv_nsec as u64 / 1_000)
}

/// Pings the watchdog every `interval`, each time only once the loop has answered a ping.
pub(super) async fn watchdog(shared: Arc<Shared>, interval: Duration) {
    let mut stopped = shared.stopped.subscribe();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = super::control::until_stopped(&mut stopped) => return,
        }
        let (tx, rx) = oneshot::channel();
        if shared.send(Command::Ping(tx)).is_err() {
            return;
        }
        // A loop that does not answer within the interval gets no ping: systemd's timeout runs.
        if let Ok(Ok(())) = tokio::time::timeout(interval, rx).await {
            if let Some(notifier) = &shared.notifier {
                notifier.send("WATCHDOG=1");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.into())
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("rcluster-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::from_env(env(&[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ]))
        .unwrap();
        assert_eq!(n.watchdog(), Some(Duration::from_millis(100)));
        n.observe(&Event::Ready);
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=ready");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reads_abstract_names_and_the_watchdog_of_another_pid() {
        let n = Notifier::from_env(env(&[
            ("NOTIFY_SOCKET", "@rcluster-test"),
            ("WATCHDOG_USEC", "1000000"),
            ("WATCHDOG_PID", "1"),
        ]))
        .unwrap();
        assert_eq!(n.watchdog(), None);
        assert!(Notifier::from_env(env(&[("NOTIFY_SOCKET", "relative")])).is_none());
        assert!(Notifier::from_env(env(&[])).is_none());
    }

    #[test]
    fn says_what_happens() {
        let m = message(&Event::ReloadStarted {
            trigger: "SIGHUP\nx".into(),
            workers: 2,
        })
        .unwrap();
        assert!(m.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{m}");
        assert!(m.ends_with("STATUS=reloading 2 workers (SIGHUP x)"), "{m}");
        assert_eq!(
            message(&Event::Stopping {
                trigger: "SIGTERM".into()
            })
            .as_deref(),
            Some("STOPPING=1\nSTATUS=stopping (SIGTERM)")
        );
        assert_eq!(message(&Event::Stopped), None);
    }
}
