//! The part of V8's ValueSerializer format that Node's internal IPC messages use, for channels in
//! `advanced` serialization mode: null, booleans, numbers, strings, arrays and plain objects.
//! Anything else (Maps, Dates, references, host objects, BigInts) is reported as unsupported,
//! and the caller hands that message to JavaScript whole, which decodes it with `v8`.

use serde_json::{Map, Number, Value};

const VERSION: u8 = 15;
const NESTING_LIMIT: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V8Error {
    Truncated,
    BadHeader,
    Unsupported(u8),
    TooDeep,
}

pub fn decode(bytes: &[u8]) -> Result<Value, V8Error> {
    let mut r = Reader { bytes, pos: 0 };
    if r.byte()? != 0xFF {
        return Err(V8Error::BadHeader);
    }
    let _version = r.varint()?;
    let value = r.value(0)?;
    Ok(value)
}

pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = vec![0xFF, VERSION];
    write_value(&mut out, value);
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, V8Error> {
        let b = *self.bytes.get(self.pos).ok_or(V8Error::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], V8Error> {
        let end = self.pos.checked_add(n).ok_or(V8Error::Truncated)?;
        let slice = self.bytes.get(self.pos..end).ok_or(V8Error::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn varint(&mut self) -> Result<u64, V8Error> {
        let mut result = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            result |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(result);
            }
        }
        Err(V8Error::Unsupported(0x80))
    }

    /// A tag, skipping the padding V8 inserts to align two-byte strings.
    fn tag(&mut self) -> Result<u8, V8Error> {
        loop {
            match self.byte()? {
                0 => continue,
                t => return Ok(t),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, V8Error> {
        if depth > NESTING_LIMIT {
            return Err(V8Error::TooDeep);
        }
        let tag = self.tag()?;
        self.value_with_tag(tag, depth)
    }

    fn value_with_tag(&mut self, tag: u8, depth: usize) -> Result<Value, V8Error> {
        Ok(match tag {
            b'_' | b'0' => Value::Null,
            b'T' => Value::Bool(true),
            b'F' => Value::Bool(false),
            b'I' => {
                let z = self.varint()? as u32;
                let n = ((z >> 1) as i32) ^ -((z & 1) as i32);
                Value::from(n)
            }
            b'U' => Value::from(self.varint()? as u32),
            b'N' => {
                let raw = self.take(8)?;
                let mut eight = [0u8; 8];
                eight.copy_from_slice(raw);
                let f = f64::from_le_bytes(eight);
                // JavaScript has one number type: an integral double is an integer to JSON.
                if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                    Value::from(f as i64)
                } else {
                    Number::from_f64(f).map_or(Value::Null, Value::Number)
                }
            }
            b'"' | b'S' | b'c' => Value::String(self.string_body(tag)?),
            b'o' => self.object(depth)?,
            b'A' => self.dense_array(depth)?,
            other => return Err(V8Error::Unsupported(other)),
        })
    }

    fn string_body(&mut self, tag: u8) -> Result<String, V8Error> {
        let len = self.varint()? as usize;
        let raw = self.take(len)?;
        match tag {
            b'"' => Ok(raw.iter().map(|&b| char::from(b)).collect()),
            b'S' => String::from_utf8(raw.to_vec()).map_err(|_| V8Error::Unsupported(tag)),
            _ => {
                if !len.is_multiple_of(2) {
                    return Err(V8Error::Unsupported(tag));
                }
                let units: Vec<u16> = raw
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                String::from_utf16(&units).map_err(|_| V8Error::Unsupported(tag))
            }
        }
    }

    /// Property keys are strings or (for integer-like names) numbers, never nested values.
    fn key(&mut self, tag: u8) -> Result<String, V8Error> {
        match tag {
            b'"' | b'S' | b'c' => self.string_body(tag),
            b'I' | b'U' | b'N' => match self.value_with_tag(tag, 0)? {
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(V8Error::Unsupported(tag)),
            },
            other => Err(V8Error::Unsupported(other)),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, V8Error> {
        let mut map = Map::new();
        loop {
            let tag = self.tag()?;
            if tag == b'{' {
                let _count = self.varint()?;
                return Ok(Value::Object(map));
            }
            let key = self.key(tag)?;
            let value = self.value(depth + 1)?;
            map.insert(key, value);
        }
    }

    fn dense_array(&mut self, depth: usize) -> Result<Value, V8Error> {
        let len = self.varint()? as usize;
        // Each element takes at least one byte: a length beyond the input is a lie.
        if len > self.bytes.len() - self.pos {
            return Err(V8Error::Truncated);
        }
        let mut items = Vec::with_capacity(len);
        for _ in 0..len {
            let tag = self.tag()?;
            // '-' is a hole in a dense array; JSON has only null for it.
            items.push(if tag == b'-' {
                Value::Null
            } else {
                self.value_with_tag(tag, depth + 1)?
            });
        }
        // Extra named properties of an array are not part of any message we route.
        match self.tag()? {
            b'$' => {
                let _props = self.varint()?;
                let _len = self.varint()?;
                Ok(Value::Array(items))
            }
            other => Err(V8Error::Unsupported(other)),
        }
    }
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    if s.chars().all(|c| (c as u32) < 0x100) {
        out.push(b'"');
        write_varint(out, s.chars().count() as u64);
        out.extend(s.chars().map(|c| c as u8));
    } else {
        out.push(b'S');
        write_varint(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(b'0'),
        Value::Bool(true) => out.push(b'T'),
        Value::Bool(false) => out.push(b'F'),
        Value::Number(n) => match n.as_i64().and_then(|i| i32::try_from(i).ok()) {
            Some(i) => {
                out.push(b'I');
                write_varint(out, u64::from(((i << 1) ^ (i >> 31)) as u32));
            }
            None => {
                out.push(b'N');
                out.extend_from_slice(&n.as_f64().unwrap_or(f64::NAN).to_le_bytes());
            }
        },
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'A');
            write_varint(out, items.len() as u64);
            for item in items {
                write_value(out, item);
            }
            out.push(b'$');
            write_varint(out, 0);
            write_varint(out, items.len() as u64);
        }
        Value::Object(map) => {
            out.push(b'o');
            for (k, v) in map {
                write_string(out, k);
                write_value(out, v);
            }
            out.push(b'{');
            write_varint(out, map.len() as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_the_values_node_uses() {
        let v = json!({"cmd":"NODE_CLUSTER","act":"queryServer","seq":3,"port":-1,
                       "address":null,"flag":true,"big":4294967296u64,"f":1.5,
                       "list":[1,"two",{"é":"ü"}],"uni":"日本"});
        assert_eq!(decode(&encode(&v)).unwrap(), v);
    }

    /// Bytes as Node 20's `v8.serialize({cmd:'NODE_CLUSTER', seq: 1, ok: true, n: -2})` writes them.
    #[test]
    fn reads_what_v8_writes() {
        let bytes = [
            0xFF, 0x0F, b'o', b'"', 3, b'c', b'm', b'd', b'"', 12, b'N', b'O', b'D', b'E', b'_',
            b'C', b'L', b'U', b'S', b'T', b'E', b'R', b'"', 3, b's', b'e', b'q', b'I', 2, b'"', 2,
            b'o', b'k', b'T', b'"', 1, b'n', b'I', 3, b'{', 4,
        ];
        assert_eq!(
            decode(&bytes).unwrap(),
            json!({"cmd":"NODE_CLUSTER","seq":1,"ok":true,"n":-2})
        );
    }

    #[test]
    fn two_byte_strings_after_padding() {
        // '\0' padding, then 'c' with 4 bytes of UTF-16LE "日本".
        let bytes = [0xFF, 0x0F, 0, b'c', 4, 0xE5, 0x65, 0x2C, 0x67];
        assert_eq!(decode(&bytes).unwrap(), json!("日本"));
    }

    #[test]
    fn richer_values_are_unsupported_not_misread() {
        // A Map (';') and an object reference ('^').
        assert_eq!(
            decode(&[0xFF, 0x0F, b';', b':', 0]),
            Err(V8Error::Unsupported(b';'))
        );
        assert!(decode(&[0xFF, 0x0F, b'o', b'"', 1, b'a', b'^', 0, b'{', 1]).is_err());
    }

    #[test]
    fn hostile_input_never_panics() {
        let samples: &[&[u8]] = &[
            &[],
            &[0xFF],
            &[0xFF, 0x0F, b'A', 0xFF, 0xFF, 0xFF, 0xFF, 0x0F],
            &[
                0xFF, 0x0F, b'"', 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01,
            ],
            &[0xFF, 0x0F, b'N', 1, 2],
            &[0x00, 0x0F, b'0'],
        ];
        for s in samples {
            assert!(decode(s).is_err(), "{s:?}");
        }
        let deep: Vec<u8> = [0xFF, 0x0F]
            .into_iter()
            .chain(std::iter::repeat_n(b'o', 10_000))
            .collect();
        assert!(decode(&deep).is_err());
    }

    mod properties {
        use super::*;
        use crate::wire::test_inputs::json_value;
        use proptest::prelude::*;

        proptest! {
            // Whatever a child sends, decoding fails cleanly or yields a value: never a panic.
            #[test]
            fn any_bytes_decode_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
                let _ = decode(&bytes);
                // Behind a valid header too, where the values are read.
                let _ = decode(&[&[0xFF, VERSION][..], &bytes].concat());
            }

            #[test]
            fn encode_decode_round_trip(value in json_value()) {
                prop_assert_eq!(decode(&encode(&value)), Ok(value));
            }

            // A message cut short is an error, not a misread value.
            #[test]
            fn a_truncated_value_is_an_error(value in json_value(), cut: prop::sample::Index) {
                let bytes = encode(&value);
                let cut = cut.index(bytes.len());
                prop_assert!(decode(&bytes[..cut]).is_err());
            }
        }
    }
}
