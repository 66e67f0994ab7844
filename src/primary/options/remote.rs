//! The options that join a cluster to others on other hosts: `redis`, `namespace`, `hostId`.
//! Only their form is checked here; nothing connects while options are read.

use std::hash::BuildHasher;
use std::net::Ipv6Addr;

/// What `redis` takes, as the error for a bad one says it.
pub const REDIS_FORMS: &str =
    "'redis://[user:pass@]host[:port][/db]' or 'unix:///path' (also 'redis+unix:///path')";

/// Checks that `url` is one of `REDIS_FORMS`; the error says what is wrong with it. TLS
/// (`rediss://`) is refused rather than taken for plain text: a connection the operator believes
/// encrypted must not silently be otherwise.
pub fn check_redis_url(url: &str) -> Result<(), &'static str> {
    if url.is_empty() {
        return Err("it is empty");
    }
    if url.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err("it holds a space or a control character");
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("it has no scheme");
    };
    match scheme.to_ascii_lowercase().as_str() {
        "redis" => check_tcp(rest),
        "unix" | "redis+unix" => check_unix(rest),
        "rediss" => Err("TLS (rediss://) is not supported"),
        _ => Err("its scheme is not redis, unix or redis+unix"),
    }
}

/// What follows `redis://`: `[user:pass@]host[:port][/db]`.
fn check_tcp(rest: &str) -> Result<(), &'static str> {
    if rest.contains(['?', '#']) {
        return Err("a query or fragment is not taken");
    }
    // As URL parsers do: the authority ends at the first `/` (a `/` in a password is `%2F`), and
    // the user information at its last `@`.
    let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
    if !db.is_empty() && (!db.bytes().all(|b| b.is_ascii_digit()) || db.parse::<u32>().is_err()) {
        return Err("the database must be a number");
    }
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => {
            let (ip, after) = v6.split_once(']').ok_or("an IPv6 address lacks its ']'")?;
            ip.parse::<Ipv6Addr>()
                .map_err(|_| "the host is not an IPv6 address")?;
            match after {
                "" => (ip, None),
                _ => (ip, Some(after.strip_prefix(':').ok_or("junk after ']'")?)),
            }
        }
        None => match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    if host.is_empty() {
        return Err("it has no host");
    }
    let host_byte = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':');
    if !host.bytes().all(host_byte) {
        return Err("the host is not a host name or an IP address");
    }
    if let Some(port) = port {
        let number = port
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| port.parse::<u16>());
        if !matches!(number, Some(Ok(1..))) {
            return Err("the port must be from 1 to 65535");
        }
    }
    Ok(())
}

/// What follows `unix://`: an absolute path (so three slashes in all), no host.
fn check_unix(rest: &str) -> Result<(), &'static str> {
    if !rest.starts_with('/') {
        return Err("a unix socket URL has no host: unix:///path");
    }
    if rest.len() < 2 || rest.ends_with('/') {
        return Err("the path names no socket");
    }
    if rest.contains(['?', '#']) {
        return Err("a query or fragment is not taken");
    }
    Ok(())
}

/// `url` with its password replaced by `***`, for messages.
pub fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    // Without a `:`, some clients take the whole user information for a password.
    let user = user_info.split_once(':').map_or("", |(user, _)| user);
    format!("{scheme}://{user}:***@{host}{path}")
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// A namespace: 1 to 64 of `[A-Za-z0-9._-]`, not starting with `.`.
pub fn is_namespace(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(is_name_byte) && !name.starts_with('.')
}

/// A host id: 1 to 128 of `[A-Za-z0-9._-]`, as the messenger's frames carry it.
pub fn is_host_id(id: &str) -> bool {
    crate::wire::frames::is_host_id(id.as_bytes())
}

/// The host id when none is given: `<hostname>-<pid>-<4 hex digits>`. The pid tells apart two
/// clusters of one host; the random digits, two hosts that share a hostname and whose primaries
/// got the same pid (containers, each its own pid 1, on the host's network).
pub fn default_host_id() -> String {
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    // 100 leaves room for the rest within 128 (a pid has at most 10 digits).
    let mut host: String = hostname
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '-',
        })
        .take(100)
        .collect();
    if host.is_empty() {
        host = "host".into();
    }
    // RandomState is seeded from the OS's randomness: enough for 16 bits, without a crate.
    let random =
        std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now());
    format!("{host}-{}-{:04x}", std::process::id(), random & 0xffff)
}
