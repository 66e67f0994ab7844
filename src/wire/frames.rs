//! rcluster's own channel: length-prefixed frames with a small fixed header, routed by the primary
//! on the header alone. The payload (JSON text or raw bytes) is never parsed by the primary and is
//! written as the same bytes to every target. The format is described in docs/messenger-frames.md.
//!
//! ```text
//! u32 LE  length of everything after this field (header + action + payload)
//! u8      version (1)
//! u8      kind      (Kind)
//! u8      target    (Target)
//! u8      flags     (FLAG_*)
//! u32 LE  target id (worker id for Target::One; 0 otherwise)
//! u32 LE  source id (stamped by the primary when it routes; 0 = the primary)
//! u32 LE  source pid (stamped by the primary)
//! u32 LE  correlation id (request/reply pairing; 0 when unused)
//! u16 LE  action length, then the action (UTF-8), then the payload
//! ```
//!
//! With FLAG_HOST, a host id (u8 length, then that many bytes of `[A-Za-z0-9._-]`) comes between
//! the action and the payload: the host a child's frame is for, or the host a frame came from.

use std::collections::VecDeque;
use std::fmt;

pub const VERSION: u8 = 1;
/// Bytes of the length prefix.
pub const PREFIX_LEN: usize = 4;
/// Bytes of the fixed header after the prefix (up to and including the action length).
pub const HEADER_LEN: usize = 22;
/// The longest action name.
pub const MAX_ACTION_LEN: usize = 1024;

/// The payload is raw bytes (a Buffer), not JSON text.
pub const FLAG_BINARY: u8 = 0b0000_0001;
/// A reply that carries an error (`{ message, code }` as JSON) instead of a value.
pub const FLAG_ERROR: u8 = 0b0000_0010;
/// Stamped by the primary: the source is the agent.
pub const FLAG_FROM_AGENT: u8 = 0b0000_0100;
/// The payload is a string value as UTF-8 text, without JSON's quotes and escapes.
pub const FLAG_STRING: u8 = 0b0000_1000;
/// With FLAG_STRING: every byte is ASCII, so the receiver may decode it as Latin-1, a plain copy,
/// where UTF-8 decoding costs about three times as much.
pub const FLAG_ASCII: u8 = 0b0001_0000;
/// The payload is in a sealed memory file sent with the frame (see docs/messenger-frames.md); the
/// frame itself carries only its length, a u32 LE.
pub const FLAG_SHARED: u8 = 0b0010_0000;
/// A host id precedes the payload: from a child, the host the frame is for (`sendTo({ host, id })`);
/// to a child, the host it came from. Never with FLAG_SHARED: frames between hosts carry their
/// payload in line.
pub const FLAG_HOST: u8 = 0b0100_0000;
/// Only on an expect frame: the requester is one of the workers listed, and answers its own copy
/// of the request in its own process. The primary neither waits for that answer nor forwards it:
/// a map costs its requester two frames fewer, and the primary two fewer to route.
pub const FLAG_ANSWER_HERE: u8 = 0b1000_0000;
const KNOWN_FLAGS: u8 =
    FLAG_BINARY | FLAG_ERROR | FLAG_FROM_AGENT | FLAG_STRING | FLAG_ASCII | FLAG_SHARED | FLAG_HOST;
/// The longest host id.
pub const MAX_HOST_LEN: usize = 128;

/// Whether `id` can name a host: 1 to MAX_HOST_LEN bytes of `[A-Za-z0-9._-]`, so that it is safe
/// in Redis keys and channel names, in logs and in file names.
pub fn is_host_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_HOST_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
/// The in-band payload of a FLAG_SHARED frame.
pub const SHARED_LEN_BYTES: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Fire and forget.
    Message = 1,
    /// Expects a Reply with the same correlation id (consume, map).
    Request = 2,
    Reply = 3,
    /// The sender now handles `action` (payload empty).
    Subscribe = 4,
    /// The sender no longer handles `action`.
    Unsubscribe = 5,
    /// The primary's answer to a frame it could not deliver (payload: `{ message, code }`).
    Undeliverable = 6,
    /// A child got a Request (target id: the requester); sent before its handler runs.
    Received = 7,
    /// The primary tells a map's requester whose replies to expect (payload: `[[id, pid], ...]`).
    Expect = 8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Target {
    Primary = 0,
    /// Every app worker and the agent.
    Broadcast = 1,
    /// Every app worker.
    Apps = 2,
    Agent = 3,
    /// One app worker with a handler for the action, picked at random.
    RandomApp = 4,
    /// The process whose id is `target_id`.
    One = 5,
    /// One app worker with a handler, spreading calls among them (consume).
    AnyApp = 6,
    /// The process whose pid is `target_id`.
    Pid = 7,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Message,
            2 => Kind::Request,
            3 => Kind::Reply,
            4 => Kind::Subscribe,
            5 => Kind::Unsubscribe,
            6 => Kind::Undeliverable,
            7 => Kind::Received,
            8 => Kind::Expect,
            _ => return None,
        })
    }
}

impl Target {
    fn from_u8(v: u8) -> Option<Target> {
        Some(match v {
            0 => Target::Primary,
            1 => Target::Broadcast,
            2 => Target::Apps,
            3 => Target::Agent,
            4 => Target::RandomApp,
            5 => Target::One,
            6 => Target::AnyApp,
            7 => Target::Pid,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub target: Target,
    pub flags: u8,
    pub target_id: u32,
    pub source_id: u32,
    pub source_pid: u32,
    pub correlation: u32,
    pub action: String,
    /// With FLAG_HOST: the host it is for (from a child) or from (to a child).
    pub host: Option<String>,
}

/// One frame: its header, and where the payload starts in `bytes` (the whole frame, prefix
/// included, so that it can be forwarded as it came). A FLAG_SHARED frame's payload is not in
/// `bytes` but in `shared`, attached by whoever received the frame's file: this module parses
/// bytes only, so `F`, the type of that file, is the receiver's (the channel's link uses a
/// sealed memory file; see `channel::frame_link::Frame`). Parsing leaves `shared` empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<F> {
    pub header: Header,
    pub bytes: Vec<u8>,
    pub payload_at: usize,
    pub shared: Option<F>,
}

impl<F> Frame<F> {
    pub fn payload(&self) -> &[u8] {
        &self.bytes[self.payload_at..]
    }

    /// The length of the payload in a memory file, for a FLAG_SHARED frame.
    pub fn shared_len(&self) -> Option<usize> {
        if self.header.flags & FLAG_SHARED == 0 {
            return None;
        }
        Some(u32_at(self.payload(), 0) as usize)
    }

    /// Stamps who sent it into the header in place; the rest of the bytes stay as they are.
    pub fn set_source(&mut self, id: u32, pid: u32, agent: bool) {
        self.header.source_id = id;
        self.header.source_pid = pid;
        if agent {
            self.header.flags |= FLAG_FROM_AGENT;
        } else {
            self.header.flags &= !FLAG_FROM_AGENT;
        }
        self.bytes[PREFIX_LEN + 3] = self.header.flags;
        self.bytes[PREFIX_LEN + 8..PREFIX_LEN + 12].copy_from_slice(&id.to_le_bytes());
        self.bytes[PREFIX_LEN + 12..PREFIX_LEN + 16].copy_from_slice(&pid.to_le_bytes());
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    TooLarge {
        len: usize,
        limit: usize,
    },
    Malformed(&'static str),
    /// The file sent for a FLAG_SHARED frame's payload was refused: why.
    SharedFile(&'static str),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, limit } => {
                write!(f, "a frame of {len} bytes exceeds the limit of {limit}")
            }
            FrameError::Malformed(why) => write!(f, "malformed frame: {why}"),
            FrameError::SharedFile(why) => write!(f, "malformed frame: shared payload: {why}"),
        }
    }
}

/// Builds a frame. Fails only when the action is too long or the frame exceeds `u32`.
pub fn encode(header: &Header, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let action = header.action.as_bytes();
    if action.len() > MAX_ACTION_LEN {
        return Err(FrameError::Malformed("action name too long"));
    }
    let host = header.host.as_deref().map(str::as_bytes);
    if host.is_some_and(|h| !is_host_id(h)) {
        return Err(FrameError::Malformed("not a host id"));
    }
    let host_len = host.map_or(0, |h| 1 + h.len());
    let flags = match host {
        Some(_) => header.flags | FLAG_HOST,
        None => header.flags & !FLAG_HOST,
    };
    let body = HEADER_LEN + action.len() + host_len + payload.len();
    let len = u32::try_from(body).map_err(|_| FrameError::TooLarge {
        len: body,
        limit: u32::MAX as usize,
    })?;
    let mut out = Vec::with_capacity(PREFIX_LEN + body);
    out.extend_from_slice(&len.to_le_bytes());
    out.push(VERSION);
    out.push(header.kind as u8);
    out.push(header.target as u8);
    out.push(flags);
    out.extend_from_slice(&header.target_id.to_le_bytes());
    out.extend_from_slice(&header.source_id.to_le_bytes());
    out.extend_from_slice(&header.source_pid.to_le_bytes());
    out.extend_from_slice(&header.correlation.to_le_bytes());
    out.extend_from_slice(&(action.len() as u16).to_le_bytes());
    out.extend_from_slice(action);
    if let Some(host) = host {
        out.push(host.len() as u8);
        out.extend_from_slice(host);
    }
    out.extend_from_slice(payload);
    Ok(out)
}

/// The same frame naming `host` (FLAG_HOST) instead of what it named, or naming none: its
/// header, action and payload unchanged. The frame must carry its payload in line.
pub fn with_host(frame: &[u8], host: Option<&str>) -> Result<Vec<u8>, FrameError> {
    if frame.len() < PREFIX_LEN + HEADER_LEN {
        return Err(FrameError::Malformed("shorter than a header"));
    }
    let checked = check(&frame[PREFIX_LEN..])?;
    if checked.flags & FLAG_SHARED != 0 {
        return Err(FrameError::Malformed(
            "a frame for or from another host carries its payload in line",
        ));
    }
    let host = host.map(str::as_bytes);
    if host.is_some_and(|h| !is_host_id(h)) {
        return Err(FrameError::Malformed("not a host id"));
    }
    let head = &frame[..PREFIX_LEN + checked.action_end];
    let payload = &frame[PREFIX_LEN + checked.payload_start..];
    let host_len = host.map_or(0, |h| 1 + h.len());
    let body = head.len() - PREFIX_LEN + host_len + payload.len();
    let len = u32::try_from(body).map_err(|_| FrameError::TooLarge {
        len: body,
        limit: u32::MAX as usize,
    })?;
    let mut out = Vec::with_capacity(PREFIX_LEN + body);
    out.extend_from_slice(head);
    out[..PREFIX_LEN].copy_from_slice(&len.to_le_bytes());
    match host {
        Some(host) => {
            out[PREFIX_LEN + 3] |= FLAG_HOST;
            out.push(host.len() as u8);
            out.extend_from_slice(host);
        }
        None => out[PREFIX_LEN + 3] &= !FLAG_HOST,
    }
    out.extend_from_slice(payload);
    Ok(out)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

/// The fields of a header, checked: what every reader of frames relies on.
struct Checked {
    kind: Kind,
    target: Target,
    flags: u8,
    /// Where the action ends, from the start of the header.
    action_end: usize,
    /// Where the host id is (FLAG_HOST), from the start of the header.
    host: Option<std::ops::Range<usize>>,
    /// Where the payload starts, from the start of the header.
    payload_start: usize,
}

/// Checks the header of a complete frame `h` (without its prefix).
fn check(h: &[u8]) -> Result<Checked, FrameError> {
    if h.len() < HEADER_LEN {
        return Err(FrameError::Malformed("shorter than a header"));
    }
    if h[0] != VERSION {
        return Err(FrameError::Malformed("unknown version"));
    }
    let kind = Kind::from_u8(h[1]).ok_or(FrameError::Malformed("unknown kind"))?;
    let target = Target::from_u8(h[2]).ok_or(FrameError::Malformed("unknown target"))?;
    let flags = h[3];
    let known = match kind {
        Kind::Expect => KNOWN_FLAGS | FLAG_ANSWER_HERE,
        _ => KNOWN_FLAGS,
    };
    if flags & !known != 0 {
        return Err(FrameError::Malformed("unknown flags"));
    }
    let action_len = u16::from_le_bytes([h[20], h[21]]) as usize;
    if action_len > MAX_ACTION_LEN {
        return Err(FrameError::Malformed("action name too long"));
    }
    let action_end = HEADER_LEN + action_len;
    if action_end > h.len() {
        return Err(FrameError::Malformed("action runs past the frame"));
    }
    if flags & FLAG_SHARED != 0 && h.len() - action_end != SHARED_LEN_BYTES {
        return Err(FrameError::Malformed(
            "a shared payload's frame carries only its length",
        ));
    }
    let (host, payload_start) = if flags & FLAG_HOST != 0 {
        if flags & FLAG_SHARED != 0 {
            return Err(FrameError::Malformed(
                "a frame for or from another host carries its payload in line",
            ));
        }
        let len =
            *h.get(action_end)
                .ok_or(FrameError::Malformed("host id runs past the frame"))? as usize;
        let range = action_end + 1..action_end + 1 + len;
        if range.end > h.len() {
            return Err(FrameError::Malformed("host id runs past the frame"));
        }
        if !is_host_id(&h[range.clone()]) {
            return Err(FrameError::Malformed(
                "a host id is 1 to 128 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        let end = range.end;
        (Some(range), end)
    } else {
        (None, action_end)
    };
    Ok(Checked {
        kind,
        target,
        flags,
        action_end,
        host,
        payload_start,
    })
}

/// Parses one complete frame (prefix included).
pub fn parse<F>(bytes: Vec<u8>) -> Result<Frame<F>, FrameError> {
    if bytes.len() < PREFIX_LEN + HEADER_LEN {
        return Err(FrameError::Malformed("shorter than a header"));
    }
    if u32_at(&bytes, 0) as usize != bytes.len() - PREFIX_LEN {
        return Err(FrameError::Malformed("length prefix does not match"));
    }
    let h = &bytes[PREFIX_LEN..];
    let Checked {
        kind,
        target,
        flags,
        action_end,
        host,
        payload_start,
    } = check(h)?;
    let action = std::str::from_utf8(&h[HEADER_LEN..action_end])
        .map_err(|_| FrameError::Malformed("action is not UTF-8"))?
        .to_owned();
    // Checked: ASCII only.
    let host = host.map(|range| String::from_utf8_lossy(&h[range]).into_owned());
    let header = Header {
        kind,
        target,
        flags,
        target_id: u32_at(h, 4),
        source_id: u32_at(h, 8),
        source_pid: u32_at(h, 12),
        correlation: u32_at(h, 16),
        action,
        host,
    };
    Ok(Frame {
        header,
        payload_at: PREFIX_LEN + payload_start,
        bytes,
        shared: None,
    })
}

/// Splits a byte stream into frames. A frame larger than `max_frame` is an error as soon as its
/// prefix arrives: nothing of it is buffered.
pub struct Decoder {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf`: consumed bytes are dropped in one go, not per
    /// frame, so a read full of small frames costs one copy, not one per frame.
    start: usize,
    max_frame: usize,
}

impl Decoder {
    pub fn new(max_frame: usize) -> Self {
        Decoder {
            buf: Vec::new(),
            start: 0,
            max_frame,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    pub fn next_frame<F>(&mut self) -> Result<Option<Frame<F>>, FrameError> {
        let available = &self.buf[self.start..];
        if available.len() < PREFIX_LEN {
            return Ok(None);
        }
        let body = u32_at(available, 0) as usize;
        if body < HEADER_LEN {
            return Err(FrameError::Malformed("shorter than a header"));
        }
        let total = PREFIX_LEN + body;
        if total > self.max_frame {
            return Err(FrameError::TooLarge {
                len: total,
                limit: self.max_frame,
            });
        }
        if available.len() < total {
            return Ok(None);
        }
        let frame = available[..total].to_vec();
        self.start += total;
        parse(frame).map(Some)
    }

    /// Takes every whole frame buffered, checked as `next_frame` checks them but not copied one
    /// by one: returns their bytes, back to back, and the length of each FLAG_SHARED frame's
    /// payload, in order. (For a reader that hands frames on as they are: a child's channel.)
    pub fn whole_frames(&mut self) -> Result<(&[u8], Vec<usize>), FrameError> {
        let available = &self.buf[self.start..];
        let mut at = 0;
        let mut shared = Vec::new();
        while available.len() - at >= PREFIX_LEN {
            let body = u32_at(available, at) as usize;
            let total = PREFIX_LEN + body;
            if total > self.max_frame {
                return Err(FrameError::TooLarge {
                    len: total,
                    limit: self.max_frame,
                });
            }
            if available.len() - at < total {
                break;
            }
            let h = &available[at + PREFIX_LEN..at + total];
            let checked = check(h)?;
            if checked.flags & FLAG_SHARED != 0 {
                shared.push(u32_at(h, checked.action_end) as usize);
            }
            at += total;
        }
        self.start += at;
        Ok((&available[..at], shared))
    }
}

/// The file of the next FLAG_SHARED frame: the next descriptor received. Descriptors and flagged
/// frames pair up in order, and a descriptor arrives with or before its frame's bytes.
pub fn next_file<D>(received: &mut VecDeque<D>) -> Result<D, FrameError> {
    received.pop_front().ok_or(FrameError::Malformed(
        "a shared payload came without its memory file",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A frame with nothing attached: all that this module makes on its own.
    fn parse(bytes: Vec<u8>) -> Result<Frame<()>, FrameError> {
        super::parse(bytes)
    }

    fn header(action: &str) -> Header {
        Header {
            kind: Kind::Request,
            target: Target::One,
            flags: FLAG_BINARY,
            target_id: 7,
            source_id: 0,
            source_pid: 0,
            correlation: 42,
            action: action.into(),
            host: None,
        }
    }

    #[test]
    fn round_trip_and_source_stamp() {
        let bytes = encode(&header("jobs:run"), b"\x00\x01raw").unwrap();
        let mut frame = parse(bytes).unwrap();
        assert_eq!(frame.header, header("jobs:run"));
        assert_eq!(frame.payload(), b"\x00\x01raw");
        frame.set_source(9, 1234, true);
        let again = parse(frame.bytes.clone()).unwrap();
        assert_eq!(again.header.source_id, 9);
        assert_eq!(again.header.source_pid, 1234);
        assert_eq!(again.header.flags, FLAG_BINARY | FLAG_FROM_AGENT);
        assert_eq!(again.payload(), b"\x00\x01raw");
    }

    #[test]
    fn decoder_splits_a_stream_and_refuses_big_frames_early() {
        let a = encode(&header("a"), b"1").unwrap();
        let b = encode(&header("bb"), &[0u8; 100]).unwrap();
        let mut d = Decoder::new(1000);
        let stream: Vec<u8> = [a.clone(), b.clone()].concat();
        for byte in &stream {
            d.push(std::slice::from_ref(byte));
        }
        assert_eq!(d.next_frame::<()>().unwrap().unwrap().bytes, a);
        assert_eq!(d.next_frame::<()>().unwrap().unwrap().bytes, b);
        assert_eq!(d.next_frame::<()>().unwrap(), None);

        let mut small = Decoder::new(64);
        small.push(&b[..4]);
        assert!(matches!(
            small.next_frame::<()>(),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn whole_frames_come_out_together_with_their_shared_lengths() {
        let a = encode(&header("a"), b"1").unwrap();
        let mut shared = header("big");
        shared.flags = FLAG_BINARY | FLAG_SHARED;
        let b = encode(&shared, &70_000u32.to_le_bytes()).unwrap();
        let c = encode(&header("c"), b"333").unwrap();
        let stream = [a.clone(), b.clone(), c.clone()].concat();
        let mut d = Decoder::new(1000);
        // Up to the middle of the last frame: the first two only.
        d.push(&stream[..a.len() + b.len() + 5]);
        let (bytes, lens) = d.whole_frames().unwrap();
        assert_eq!(bytes, [a.clone(), b.clone()].concat().as_slice());
        assert_eq!(lens, vec![70_000]);
        d.push(&stream[a.len() + b.len() + 5..]);
        let (bytes, lens) = d.whole_frames().unwrap();
        assert_eq!(bytes, c.as_slice());
        assert!(lens.is_empty());
        assert_eq!(d.whole_frames().unwrap().0.len(), 0);

        // A shared frame must carry exactly its length; a bad header is an error here too.
        let mut bad = Decoder::new(1000);
        bad.push(&encode(&shared, b"12345").unwrap());
        assert!(bad.whole_frames().is_err());
    }

    #[test]
    fn malformed_headers_are_errors() {
        let good = encode(&header("x"), b"").unwrap();
        let mut bad_version = good.clone();
        bad_version[4] = 9;
        assert!(parse(bad_version).is_err());
        let mut bad_kind = good.clone();
        bad_kind[5] = 0;
        assert!(parse(bad_kind).is_err());
        let mut long_action = good.clone();
        long_action[24] = 200;
        assert!(parse(long_action).is_err());
        let mut bad_flags = good.clone();
        bad_flags[7] = 0x80;
        assert!(parse(bad_flags).is_err());
        // The one flag of the expect frame only.
        let mut expect = good;
        expect[5] = Kind::Expect as u8;
        expect[7] = FLAG_ANSWER_HERE;
        assert!(parse(expect).is_ok());
    }

    #[test]
    fn a_frame_renamed_for_a_host_is_the_frame_encode_makes() {
        let plain = header("x");
        let mut named = header("x");
        named.host = Some("b".into());
        let mut other = header("x");
        other.host = Some("host-c".into());
        let bytes = encode(&plain, b"data").unwrap();
        assert_eq!(
            with_host(&bytes, Some("b")).unwrap(),
            encode(&named, b"data").unwrap()
        );
        let for_b = encode(&named, b"data").unwrap();
        assert_eq!(
            with_host(&for_b, Some("host-c")).unwrap(),
            encode(&other, b"data").unwrap()
        );
        assert_eq!(with_host(&for_b, None).unwrap(), bytes);
        assert!(with_host(&bytes, Some("a/b")).is_err());
        let mut shared = header("x");
        shared.flags |= FLAG_SHARED;
        assert!(with_host(&encode(&shared, &[0, 0, 0, 0]).unwrap(), Some("b")).is_err());
    }

    #[test]
    fn frames_name_hosts_only_with_ids_that_are_safe_everywhere() {
        let mut to_b = header("x");
        to_b.host = Some("host-b.1".into());
        let frame = parse(encode(&to_b, b"payload").unwrap()).unwrap();
        assert_eq!(frame.header.host.as_deref(), Some("host-b.1"));
        assert_ne!(frame.header.flags & FLAG_HOST, 0);
        assert_eq!(frame.payload(), b"payload");

        for bad in ["", "a/b", "a:b", "{ns}", "a b", &"x".repeat(129)] {
            to_b.host = Some(bad.into());
            assert!(encode(&to_b, b"").is_err(), "{bad:?}");
        }
        // Written by hand, as a hostile child could: each is refused by the parser.
        let mut frame = encode(&header("x"), b"").unwrap();
        frame[7] |= FLAG_HOST;
        assert!(
            parse(frame.clone()).is_err(),
            "the host id's length is missing"
        );
        let with_host = |host: &[u8], len: u8, flags: u8| {
            let mut bytes =
                encode(&header("x"), &[&[len][..], host, &[0, 0, 0, 0]].concat()).unwrap();
            bytes[7] |= flags;
            parse(bytes)
        };
        assert!(with_host(b"b", 1, FLAG_HOST).is_ok());
        assert!(
            with_host(b"b", 9, FLAG_HOST).is_err(),
            "runs past the frame"
        );
        assert!(with_host(b"b/", 2, FLAG_HOST).is_err(), "not a host id");
        assert!(
            with_host(b"b", 1, FLAG_HOST | FLAG_SHARED).is_err(),
            "shared"
        );
    }

    proptest! {
        // The decoder never panics, whatever a child writes, however it is split.
        #[test]
        fn decoder_survives_garbage(data in proptest::collection::vec(any::<u8>(), 0..512), cut in 0usize..512) {
            let mut d = Decoder::new(256);
            let cut = cut.min(data.len());
            d.push(&data[..cut]);
            let _ = d.next_frame::<()>();
            d.push(&data[cut..]);
            while let Ok(Some(_)) = d.next_frame::<()>() {}
        }

        #[test]
        fn encode_parse_round_trip(action in "[a-z:._-]{0,40}", payload in proptest::collection::vec(any::<u8>(), 0..300),
                                   target_id: u32, correlation: u32, binary: bool,
                                   host in proptest::option::of("[A-Za-z0-9._-]{1,128}")) {
            let flags = if binary { FLAG_BINARY } else { 0 } | if host.is_some() { FLAG_HOST } else { 0 };
            let h = Header { kind: Kind::Message, target: Target::Apps, flags,
                             target_id, source_id: 0, source_pid: 0, correlation, action, host };
            let frame = parse(encode(&h, &payload).unwrap()).unwrap();
            prop_assert_eq!(frame.payload(), &payload[..]);
            prop_assert_eq!(frame.header, h);
        }
    }

    mod properties {
        use super::*;
        use crate::wire::test_inputs::split;

        fn any_kind() -> impl Strategy<Value = Kind> {
            (1u8..=8).prop_map(|v| Kind::from_u8(v).unwrap())
        }

        fn any_target() -> impl Strategy<Value = Target> {
            (0u8..=7).prop_map(|v| Target::from_u8(v).unwrap())
        }

        /// Any valid frame: its header, and a payload that fits its flags (a FLAG_SHARED frame
        /// carries only the length of its payload, which is elsewhere).
        fn any_frame() -> impl Strategy<Value = (Header, Vec<u8>)> {
            (
                (any_kind(), any_target(), any::<u8>()),
                any::<[u32; 4]>(),
                any::<String>(),
                prop::collection::vec(any::<u8>(), 0..300),
                any::<u32>(),
            )
                .prop_map(
                    |((kind, target, flags), ids, action, payload, shared_len)| {
                        // Host ids: encode_parse_round_trip and frames_name_hosts.
                        let flags = flags & KNOWN_FLAGS & !FLAG_HOST;
                        let header = Header {
                            kind,
                            target,
                            flags,
                            target_id: ids[0],
                            source_id: ids[1],
                            source_pid: ids[2],
                            correlation: ids[3],
                            action,
                            host: None,
                        };
                        let payload = if flags & FLAG_SHARED != 0 {
                            shared_len.to_le_bytes().to_vec()
                        } else {
                            payload
                        };
                        (header, payload)
                    },
                )
        }

        fn encoded(frames: &[(Header, Vec<u8>)]) -> Vec<Vec<u8>> {
            frames.iter().map(|(h, p)| encode(h, p).unwrap()).collect()
        }

        fn shared_lens(frames: &[(Header, Vec<u8>)]) -> Vec<usize> {
            frames
                .iter()
                .filter(|(h, _)| h.flags & FLAG_SHARED != 0)
                .map(|(_, p)| u32_at(p, 0) as usize)
                .collect()
        }

        proptest! {
            #[test]
            fn any_frame_round_trips((header, payload) in any_frame()) {
                let frame = parse(encode(&header, &payload).unwrap()).unwrap();
                prop_assert_eq!(frame.payload(), &payload[..]);
                let shared = (header.flags & FLAG_SHARED != 0).then(|| u32_at(&payload, 0) as usize);
                prop_assert_eq!(frame.shared_len(), shared);
                prop_assert_eq!(frame.shared, None);
                prop_assert_eq!(frame.header, header);
            }

            // The primary stamps the source in place: the rest of the frame is as it came.
            #[test]
            fn stamping_the_source_changes_nothing_else((header, payload) in any_frame(),
                                                        id: u32, pid: u32, agent: bool) {
                let mut frame = parse(encode(&header, &payload).unwrap()).unwrap();
                frame.set_source(id, pid, agent);
                let again = parse(frame.bytes.clone()).unwrap();
                prop_assert_eq!(&again.header, &frame.header);
                prop_assert_eq!(again.payload(), &payload[..]);
                let mut expected = header;
                expected.source_id = id;
                expected.source_pid = pid;
                expected.flags = if agent { expected.flags | FLAG_FROM_AGENT } else { expected.flags & !FLAG_FROM_AGENT };
                prop_assert_eq!(again.header, expected);
            }

            // However the reads cut a stream of frames, the decoder yields the same frames, one
            // by one (the primary) or in batches of whole frames (a child).
            #[test]
            fn a_stream_split_anywhere_decodes_the_same(frames in prop::collection::vec(any_frame(), 0..6),
                                                        cuts in prop::collection::vec(any::<usize>(), 0..8)) {
                let encoded = encoded(&frames);
                let stream = encoded.concat();

                let mut one_by_one = Decoder::new(1 << 20);
                let mut got = Vec::new();
                for read in split(&stream, cuts.clone()) {
                    one_by_one.push(read);
                    while let Some(frame) = one_by_one.next_frame::<()>().unwrap() {
                        got.push(frame);
                    }
                }
                prop_assert_eq!(got.len(), frames.len());
                for ((frame, (header, payload)), bytes) in got.iter().zip(&frames).zip(&encoded) {
                    prop_assert_eq!(&frame.bytes, bytes);
                    prop_assert_eq!(&frame.header, header);
                    prop_assert_eq!(frame.payload(), &payload[..]);
                }

                let mut batches = Decoder::new(1 << 20);
                let (mut bytes, mut lens) = (Vec::new(), Vec::new());
                for read in split(&stream, cuts) {
                    batches.push(read);
                    let (whole, shared) = batches.whole_frames().unwrap();
                    bytes.extend_from_slice(whole);
                    lens.extend(shared);
                }
                prop_assert_eq!(bytes, stream);
                prop_assert_eq!(lens, shared_lens(&frames));
            }

            // Valid frames with bytes changed, cut anywhere: errors maybe, panics never.
            #[test]
            fn corrupted_frames_never_panic(frames in prop::collection::vec(any_frame(), 1..4),
                                            changes in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
                                            cuts in prop::collection::vec(any::<usize>(), 0..8)) {
                let mut stream = encoded(&frames).concat();
                for (at, byte) in changes {
                    let at = at.index(stream.len());
                    stream[at] = byte;
                }
                let _ = parse(stream.clone());
                let mut one_by_one = Decoder::new(4096);
                let mut batches = Decoder::new(4096);
                let (mut failed, mut batch_failed) = (false, false);
                for read in split(&stream, cuts) {
                    one_by_one.push(read);
                    while !failed {
                        match one_by_one.next_frame::<()>() {
                            Ok(Some(_)) => {}
                            Ok(None) => break,
                            Err(_) => failed = true,
                        }
                    }
                    batches.push(read);
                    batch_failed = batch_failed || batches.whole_frames().is_err();
                }
            }

            #[test]
            fn any_bytes_parse_without_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
                let _ = parse(data.clone());
                let mut d = Decoder::new(256);
                d.push(&data);
                let _ = d.whole_frames();
            }
        }
    }
}
