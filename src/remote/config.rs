//! The remote transport's settings, and the checks made before anything connects.

use std::time::Duration;

use redis::IntoConnectionInfo;

/// Host ids and namespaces travel in a one-byte length (the inbox envelope) and inside key names.
pub const MAX_NAME_LEN: usize = 200;

#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// `redis://[user:pass@]host[:port][/db]`, `unix:///path/to/sock` or `redis+unix:///path`.
    pub url: String,
    /// Hosts of one namespace see each other; its keys share one hash slot.
    pub namespace: String,
    /// This host's id, unique in the namespace.
    pub host_id: String,
    /// How often this host renews its membership.
    pub heartbeat: Duration,
    /// How long a host without heartbeat stays a member; also how long Redis may fail before this
    /// host reports itself unavailable.
    pub host_timeout: Duration,
    /// The largest broadcast or inbox message, in bytes.
    pub max_message: usize,
    /// The most bytes queued for sending; beyond, `broadcast` and `send` refuse (`QueueFull`).
    pub max_queued: usize,
}

impl RemoteConfig {
    pub fn new(url: &str, namespace: &str, host_id: &str) -> RemoteConfig {
        RemoteConfig {
            url: url.to_owned(),
            namespace: namespace.to_owned(),
            host_id: host_id.to_owned(),
            heartbeat: Duration::from_secs(1),
            host_timeout: Duration::from_secs(5),
            max_message: 1024 * 1024,
            max_queued: 64 * 1024 * 1024,
        }
    }

    /// Everything `start` refuses, with a sentence saying why.
    pub(crate) fn check(&self) -> Result<redis::ConnectionInfo, String> {
        check_name("namespace", &self.namespace, &['{', '}'])?;
        check_name("host id", &self.host_id, &[])?;
        if self.heartbeat.is_zero() {
            return Err("remote: heartbeat must be longer than zero".into());
        }
        if self.host_timeout <= self.heartbeat {
            return Err("remote: host timeout must be longer than the heartbeat".into());
        }
        if self.max_message == 0 || self.max_queued < self.max_message {
            return Err(
                "remote: max message must be at least one byte, and max queued at least that"
                    .into(),
            );
        }
        // Frames are packed with a u32 length (src/remote/packing.rs).
        if u32::try_from(self.max_message).is_err() {
            return Err("remote: max message must be below 4 GiB".into());
        }
        check_url(&self.url)
    }
}

/// Names go into key names, channel names and the text messages of the control channel, so
/// whitespace and control characters are refused; the namespace may not hold the braces of the
/// hash tag that keeps all its keys in one slot.
fn check_name(what: &str, name: &str, forbidden: &[char]) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "remote: the {what} must have 1 to {MAX_NAME_LEN} bytes"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || forbidden.contains(c))
    {
        return Err(format!(
            "remote: the {what} {name:?} may not contain {bad:?}"
        ));
    }
    Ok(())
}

/// The URL forms this transport supports, parsed by the Redis client itself so that what passes
/// here is what it will connect to.
pub(crate) fn check_url(url: &str) -> Result<redis::ConnectionInfo, String> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some("redis" | "unix" | "redis+unix") => {}
        Some("rediss") => {
            return Err(format!(
                "remote: {url:?}: TLS (rediss://) is not supported by this build"
            ))
        }
        _ => {
            return Err(format!(
                "remote: {url:?} is not a Redis URL (redis://[user:pass@]host[:port][/db], unix:///path/to/sock)"
            ))
        }
    }
    url.into_connection_info()
        .map_err(|error| format!("remote: {url:?}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_supported_url_forms_pass() {
        for url in [
            "redis://localhost",
            "redis://user:secret@127.0.0.1:6380/2",
            "unix:///run/redis.sock",
            "redis+unix:///run/redis.sock",
        ] {
            assert!(check_url(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn other_urls_are_refused_with_a_reason() {
        let tls = check_url("rediss://localhost").unwrap_err();
        assert!(tls.contains("TLS"), "{tls}");
        let http = check_url("http://localhost").unwrap_err();
        assert!(http.contains("not a Redis URL"), "{http}");
        assert!(check_url("localhost:6379").is_err());
        assert!(check_url("redis://localhost/notadb").is_err());
    }

    #[test]
    fn names_and_timings_are_checked() {
        let good = RemoteConfig::new("redis://localhost", "app", "web-1");
        assert!(good.check().is_ok());
        let mut config = good.clone();
        config.namespace = "a{b}".into();
        assert!(config.check().is_err());
        let mut config = good.clone();
        config.host_id = "two words".into();
        assert!(config.check().is_err());
        let mut config = good.clone();
        config.host_id = "x".repeat(MAX_NAME_LEN + 1);
        assert!(config.check().is_err());
        let mut config = good.clone();
        config.host_timeout = config.heartbeat;
        assert!(config.check().is_err());
    }
}
