//! Node's child-process IPC as a foreign primary speaks it (docs/node-ipc.md):
//! framing, and sorting what a child sends into cluster traffic, handle bookkeeping and user messages.

use serde_json::{Map, Value};

use super::v8_wire;

/// `NODE_CHANNEL_SERIALIZATION_MODE`: how every message on one channel is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serialization {
    /// `JSON.stringify(msg) + "\n"`.
    Json,
    /// `[u32 big-endian length][V8 ValueSerializer payload]`.
    Advanced,
}

impl Serialization {
    pub fn env_value(self) -> &'static str {
        match self {
            Serialization::Json => "json",
            Serialization::Advanced => "advanced",
        }
    }
}

/// A user message as it travelled: JSON text, or a V8-serialized buffer for JavaScript to decode.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Json(String),
    V8(Vec<u8>),
}

#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// `{cmd: 'NODE_CLUSTER', ...}`: the cluster state machine.
    Cluster(Map<String, Value>),
    /// `{cmd: 'NODE_HANDLE', type, msg, key?}`: a message that came with a descriptor. `key`
    /// names the server a sent socket came from (Node's socket-list bookkeeping).
    Handle {
        handle_type: String,
        key: Option<String>,
        msg: Box<Incoming>,
    },
    HandleAck,
    HandleNack,
    /// Other `NODE_*` traffic: Node's own bookkeeping that no user code sees (for instance
    /// `NODE_SOCKET_NOTIFY_CLOSE`, which JavaScript answers).
    OtherInternal(Map<String, Value>),
    User(Payload),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    TooLarge { limit: usize },
    Malformed(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::TooLarge { limit } => {
                write!(f, "a message on the IPC channel exceeded {limit} bytes")
            }
            DecodeError::Malformed(why) => write!(f, "malformed message on the IPC channel: {why}"),
        }
    }
}

/// Splits the byte stream from a child into whole frames.
pub struct Decoder {
    mode: Serialization,
    buf: Vec<u8>,
    /// Where the bytes not yet decoded begin. Frames are taken by moving it, and the buffer is
    /// compacted once per read: draining each frame would move the rest of the buffer each time,
    /// quadratic in the frames one read brings.
    start: usize,
    /// JSON mode: how far `buf` is known to hold no newline, so a large message is scanned once.
    scanned: usize,
    max_message: usize,
}

impl Decoder {
    pub fn new(mode: Serialization, max_message: usize) -> Self {
        Decoder {
            mode,
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            max_message,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned = self.scanned.saturating_sub(self.start);
            self.start = 0;
            self.release_spare();
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, if the buffer holds one.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        match self.mode {
            Serialization::Json => self.next_line(),
            Serialization::Advanced => self.next_length_prefixed(),
        }
    }

    fn next_line(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        let from = self.scanned.max(self.start);
        match self.buf[from..].iter().position(|&b| b == b'\n') {
            Some(at) => {
                let end = from + at;
                if end - self.start > self.max_message {
                    return Err(DecodeError::TooLarge {
                        limit: self.max_message,
                    });
                }
                let line = self.buf[self.start..end].to_vec();
                self.start = end + 1;
                self.scanned = self.start;
                self.reset_if_empty();
                Ok(Some(line))
            }
            None => {
                self.scanned = self.buf.len();
                if self.buf.len() - self.start > self.max_message {
                    return Err(DecodeError::TooLarge {
                        limit: self.max_message,
                    });
                }
                Ok(None)
            }
        }
    }

    fn next_length_prefixed(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        let rest = &self.buf[self.start..];
        if rest.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len > self.max_message {
            return Err(DecodeError::TooLarge {
                limit: self.max_message,
            });
        }
        if rest.len() < 4 + len {
            return Ok(None);
        }
        let frame = rest[4..4 + len].to_vec();
        self.start += 4 + len;
        self.reset_if_empty();
        Ok(Some(frame))
    }

    /// Everything read has been decoded: start over at the front, cheaply.
    fn reset_if_empty(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            self.scanned = 0;
            self.release_spare();
        }
    }

    /// After a large message, gives its memory back: a worker that once sent 60 MiB must not keep
    /// 60 MiB of the primary for the rest of its life.
    fn release_spare(&mut self) {
        if self.buf.capacity() > KEPT_CAPACITY && self.buf.len() <= KEPT_CAPACITY / 2 {
            self.buf.shrink_to(KEPT_CAPACITY / 2);
        }
    }

    /// The channel is closed: whatever is buffered will never be read.
    pub fn discard(&mut self) {
        self.buf = Vec::new();
        self.start = 0;
        self.scanned = 0;
    }

    /// Bytes held for messages not yet complete, with the spare room kept for them.
    pub fn held(&self) -> usize {
        self.buf.capacity()
    }
}

/// The buffer a channel keeps between messages; beyond it, room is given back once used.
const KEPT_CAPACITY: usize = 1 << 20;

/// Turns one frame into what it means.
pub fn decode(mode: Serialization, frame: Vec<u8>) -> Result<Incoming, DecodeError> {
    match mode {
        Serialization::Json => {
            let text =
                String::from_utf8(frame).map_err(|_| DecodeError::Malformed("not UTF-8".into()))?;
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| DecodeError::Malformed(format!("not JSON ({e})")))?;
            Ok(classify(value, || Payload::Json(text)))
        }
        Serialization::Advanced => match v8_wire::decode(&frame) {
            // Node's internal messages are plain objects; anything richer is a user message.
            Ok(value) => Ok(classify(value, || Payload::V8(frame))),
            Err(_) => Ok(Incoming::User(Payload::V8(frame))),
        },
    }
}

/// Node's rule (`internal/child_process.js`): a message is internal when `cmd` is a string longer
/// than `NODE_` that starts with it.
fn classify(value: Value, as_user: impl FnOnce() -> Payload) -> Incoming {
    let cmd = match value.get("cmd").and_then(Value::as_str) {
        Some(cmd) if cmd.len() > 5 && cmd.starts_with("NODE_") => cmd.to_owned(),
        _ => return Incoming::User(as_user()),
    };
    match (cmd.as_str(), value) {
        ("NODE_CLUSTER", Value::Object(map)) => Incoming::Cluster(map),
        ("NODE_HANDLE_ACK", _) => Incoming::HandleAck,
        ("NODE_HANDLE_NACK", _) => Incoming::HandleNack,
        ("NODE_HANDLE", Value::Object(mut map)) => {
            let handle_type = map
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let key = map.get("key").and_then(Value::as_str).map(str::to_owned);
            let inner = map.remove("msg").unwrap_or(Value::Null);
            let msg = classify_inner(inner);
            Incoming::Handle {
                handle_type,
                key,
                msg: Box::new(msg),
            }
        }
        (_, Value::Object(map)) => Incoming::OtherInternal(map),
        _ => Incoming::OtherInternal(Map::new()),
    }
}

/// The message inside a `NODE_HANDLE` wrapper has no text of its own: re-encode it as JSON.
fn classify_inner(inner: Value) -> Incoming {
    let text = inner.to_string();
    classify(inner, || Payload::Json(text))
}

/// Frames a message that the primary builds (cluster replies, handle wrappers, acks).
pub fn encode(mode: Serialization, value: &Value) -> Vec<u8> {
    match mode {
        Serialization::Json => {
            let mut out = value.to_string().into_bytes();
            out.push(b'\n');
            out
        }
        Serialization::Advanced => frame_payload(mode, &v8_wire::encode(value)),
    }
}

/// Frames a payload that JavaScript already serialized for this channel's mode.
pub fn frame_payload(mode: Serialization, payload: &[u8]) -> Vec<u8> {
    match mode {
        Serialization::Json => {
            let mut out = Vec::with_capacity(payload.len() + 1);
            out.extend_from_slice(payload);
            out.push(b'\n');
            out
        }
        Serialization::Advanced => {
            let mut out = Vec::with_capacity(payload.len() + 4);
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            out.extend_from_slice(payload);
            out
        }
    }
}

/// Wraps a message so that a descriptor can travel with it.
pub fn handle_wrapper(handle_type: &str, msg: Value) -> Value {
    serde_json::json!({ "cmd": "NODE_HANDLE", "type": handle_type, "msg": msg })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frames(d: &mut Decoder) -> Vec<Vec<u8>> {
        let mut out = vec![];
        while let Some(f) = d.next_frame().unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn many_small_messages_in_one_read_take_linear_time() {
        let mut d = Decoder::new(Serialization::Json, 1 << 20);
        let lines = b"0\n".repeat(1 << 17);
        let began = std::time::Instant::now();
        d.push(&lines);
        assert_eq!(frames(&mut d).len(), 1 << 17);
        // Draining each line took some 300 ms for this read; taking them in place, a few ms.
        assert!(
            began.elapsed() < std::time::Duration::from_millis(100),
            "{:?}",
            began.elapsed()
        );
        d.push(b"1\n");
        assert_eq!(frames(&mut d), vec![b"1".to_vec()]);
    }

    #[test]
    fn a_large_message_gives_its_memory_back() {
        for mode in [Serialization::Json, Serialization::Advanced] {
            let mut d = Decoder::new(mode, 64 << 20);
            let big = encode(mode, &json!("x".repeat(16 << 20)));
            d.push(&big);
            assert_eq!(frames(&mut d).len(), 1);
            assert!(
                d.held() <= KEPT_CAPACITY,
                "{mode:?} kept {} bytes",
                d.held()
            );
        }
    }

    #[test]
    fn a_line_without_end_stops_at_the_limit() {
        let mut d = Decoder::new(Serialization::Json, 1 << 20);
        let chunk = vec![b'a'; 256 << 10];
        let mut failed = false;
        for _ in 0..16 {
            d.push(&chunk);
            if d.next_frame().is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
        assert!(
            d.held() <= 2 << 20,
            "Vec growth stays within twice the limit"
        );
        d.discard();
        assert_eq!(d.held(), 0);
    }

    #[test]
    fn lines_split_across_reads() {
        let mut d = Decoder::new(Serialization::Json, 1024);
        d.push(b"{\"a\":1}\n{\"b\"");
        assert_eq!(frames(&mut d), vec![b"{\"a\":1}".to_vec()]);
        d.push(b":2}\n\"x\"\n");
        assert_eq!(
            frames(&mut d),
            vec![b"{\"b\":2}".to_vec(), b"\"x\"".to_vec()]
        );
    }

    #[test]
    fn a_line_over_the_limit_is_an_error_even_before_its_newline() {
        let mut d = Decoder::new(Serialization::Json, 8);
        d.push(b"0123456789");
        assert_eq!(d.next_frame(), Err(DecodeError::TooLarge { limit: 8 }));
    }

    #[test]
    fn length_prefixed_frames() {
        let mut d = Decoder::new(Serialization::Advanced, 1024);
        let mut bytes = frame_payload(Serialization::Advanced, b"abc");
        bytes.extend(frame_payload(Serialization::Advanced, b""));
        d.push(&bytes[..5]);
        assert!(d.next_frame().unwrap().is_none());
        d.push(&bytes[5..]);
        assert_eq!(frames(&mut d), vec![b"abc".to_vec(), vec![]]);
    }

    #[test]
    fn classifies_like_node() {
        let j = |v: Value| decode(Serialization::Json, v.to_string().into_bytes()).unwrap();
        assert!(
            matches!(j(json!({"cmd":"NODE_CLUSTER","act":"online","seq":0})), Incoming::Cluster(m) if m["act"] == "online")
        );
        assert_eq!(j(json!({"cmd":"NODE_HANDLE_ACK"})), Incoming::HandleAck);
        assert!(
            matches!(j(json!({"cmd":"NODE_X"})), Incoming::OtherInternal(m) if m["cmd"] == "NODE_X")
        );
        // Exactly "NODE_" is not internal, nor is a non-string cmd.
        assert!(matches!(j(json!({"cmd":"NODE_"})), Incoming::User(_)));
        assert!(matches!(j(json!({"cmd":1})), Incoming::User(_)));
        assert_eq!(
            j(json!("hi")),
            Incoming::User(Payload::Json("\"hi\"".into()))
        );
        match j(json!({"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"x":1},"key":"4:null:0"})) {
            Incoming::Handle {
                handle_type,
                key,
                msg,
            } => {
                assert_eq!(handle_type, "net.Socket");
                assert_eq!(key.as_deref(), Some("4:null:0"));
                assert_eq!(*msg, Incoming::User(Payload::Json("{\"x\":1}".into())));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for bad in [&b"{"[..], b"", b"\xff\xfe", b"nul", b"[1,"] {
            assert!(matches!(
                decode(Serialization::Json, bad.to_vec()),
                Err(DecodeError::Malformed(_))
            ));
        }
    }

    #[test]
    fn encodes_one_line_per_message() {
        let out = encode(
            Serialization::Json,
            &json!({"cmd":"NODE_CLUSTER","text":"a\nb"}),
        );
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(out.last(), Some(&b'\n'));
    }

    mod properties {
        use super::*;
        use crate::wire::test_inputs::{json_value, split};
        use proptest::prelude::*;

        const MODES: [Serialization; 2] = [Serialization::Json, Serialization::Advanced];

        fn any_mode() -> impl Strategy<Value = Serialization> {
            prop::sample::select(&MODES[..])
        }

        /// Node's rule for internal messages, as `classify` applies it.
        fn is_internal(value: &Value) -> bool {
            value
                .get("cmd")
                .and_then(Value::as_str)
                .is_some_and(|cmd| cmd.len() > 5 && cmd.starts_with("NODE_"))
        }

        /// The value a user message carries, as JavaScript would deserialize it.
        fn user_value(incoming: Incoming) -> Option<Value> {
            match incoming {
                Incoming::User(Payload::Json(text)) => serde_json::from_str(&text).ok(),
                Incoming::User(Payload::V8(bytes)) => v8_wire::decode(&bytes).ok(),
                _ => None,
            }
        }

        /// Every frame the decoder finds in `stream` when it comes in the reads `cuts` makes.
        fn decode_stream(mode: Serialization, stream: &[u8], cuts: Vec<usize>) -> Vec<Vec<u8>> {
            let mut d = Decoder::new(mode, 1 << 20);
            let mut out = Vec::new();
            for read in split(stream, cuts) {
                d.push(read);
                while let Some(frame) = d.next_frame().unwrap() {
                    out.push(frame);
                }
            }
            out
        }

        proptest! {
            // Whatever a child writes, however it is cut, in either mode: errors maybe, panics
            // never.
            #[test]
            fn any_bytes_decode_without_panic(mode in any_mode(),
                                              data in prop::collection::vec(any::<u8>(), 0..512),
                                              cuts in prop::collection::vec(any::<usize>(), 0..8)) {
                let _ = decode(mode, data.clone());
                let mut d = Decoder::new(mode, 64);
                'reads: for read in split(&data, cuts) {
                    d.push(read);
                    loop {
                        match d.next_frame() {
                            Ok(Some(frame)) => { let _ = decode(mode, frame); }
                            Ok(None) => break,
                            Err(_) => break 'reads,
                        }
                    }
                }
            }

            // A user message comes out as the value that went in, in either mode.
            #[test]
            fn user_messages_round_trip(mode in any_mode(), value in json_value()) {
                prop_assume!(!is_internal(&value));
                let frames = decode_stream(mode, &encode(mode, &value), vec![]);
                prop_assert_eq!(frames.len(), 1);
                let incoming = decode(mode, frames[0].clone()).unwrap();
                if mode == Serialization::Json {
                    prop_assert_eq!(&incoming, &Incoming::User(Payload::Json(value.to_string())));
                }
                prop_assert_eq!(user_value(incoming), Some(value));
            }

            // Node's cluster messages are recognized with all their fields, in either mode.
            #[test]
            fn cluster_messages_round_trip(mode in any_mode(),
                                           fields in prop::collection::vec(("[a-z]{1,8}", json_value()), 0..6)) {
                let mut map: Map<String, Value> = fields.into_iter().collect();
                map.insert("cmd".into(), "NODE_CLUSTER".into());
                let frames = decode_stream(mode, &encode(mode, &Value::Object(map.clone())), vec![]);
                prop_assert_eq!(frames.len(), 1);
                prop_assert_eq!(decode(mode, frames[0].clone()), Ok(Incoming::Cluster(map)));
            }

            // A message wrapped to carry a descriptor is unwrapped with its type and message.
            #[test]
            fn handle_wrappers_round_trip(mode in any_mode(), handle_type in "[a-zA-Z.]{1,12}", value in json_value()) {
                prop_assume!(!is_internal(&value));
                let wrapped = encode(mode, &handle_wrapper(&handle_type, value.clone()));
                let frames = decode_stream(mode, &wrapped, vec![]);
                prop_assert_eq!(frames.len(), 1);
                match decode(mode, frames[0].clone()).unwrap() {
                    Incoming::Handle { handle_type: got, key, msg } => {
                        prop_assert_eq!(got, handle_type);
                        prop_assert_eq!(key, None);
                        prop_assert_eq!(user_value(*msg), Some(value));
                    }
                    other => prop_assert!(false, "{:?}", other),
                }
            }

            // However the reads cut a stream of messages, the same messages come out.
            #[test]
            fn a_stream_split_anywhere_decodes_the_same(mode in any_mode(),
                                                        values in prop::collection::vec(json_value(), 0..6),
                                                        cuts in prop::collection::vec(any::<usize>(), 0..8)) {
                prop_assume!(!values.iter().any(is_internal));
                let stream: Vec<u8> = values.iter().flat_map(|v| encode(mode, v)).collect();
                let frames = decode_stream(mode, &stream, cuts);
                prop_assert_eq!(frames.len(), values.len());
                for (frame, value) in frames.into_iter().zip(values) {
                    prop_assert_eq!(user_value(decode(mode, frame).unwrap()), Some(value));
                }
            }

            // A payload JavaScript serialized comes out as the same bytes.
            #[test]
            fn framed_payloads_round_trip(payload in prop::collection::vec(any::<u8>(), 0..300),
                                          cuts in prop::collection::vec(any::<usize>(), 0..4)) {
                let framed = frame_payload(Serialization::Advanced, &payload);
                prop_assert_eq!(decode_stream(Serialization::Advanced, &framed, cuts.clone()), vec![payload.clone()]);
                let line: Vec<u8> = payload.into_iter().filter(|&b| b != b'\n').collect();
                let framed = frame_payload(Serialization::Json, &line);
                prop_assert_eq!(decode_stream(Serialization::Json, &framed, cuts), vec![line]);
            }
        }
    }
}
