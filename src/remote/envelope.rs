//! The envelope of an inbox message: who sent it, then the caller's bytes untouched.
//!
//! Layout: version (u8, 1), length of the source host id (u8), the host id, the source
//! incarnation (u64 little-endian), then the payload to the end.

use super::types::HostInfo;

const VERSION: u8 = 1;

/// `source.host` has at most `config::MAX_NAME_LEN` bytes (checked at start), so its length fits
/// the one-byte field.
pub(crate) fn encode(source: &HostInfo, payload: &[u8]) -> Vec<u8> {
    let host = source.host.as_bytes();
    let host_len = u8::try_from(host.len()).unwrap_or(u8::MAX);
    let host = &host[..usize::from(host_len)];
    let mut out = Vec::with_capacity(2 + host.len() + 8 + payload.len());
    out.push(VERSION);
    out.push(host_len);
    out.extend_from_slice(host);
    out.extend_from_slice(&source.incarnation.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

pub(crate) fn decode(message: &[u8]) -> Result<(HostInfo, Vec<u8>), String> {
    let (&version, rest) = message.split_first().ok_or("empty inbox message")?;
    if version != VERSION {
        return Err(format!("inbox message of unknown version {version}"));
    }
    let (&host_len, rest) = rest
        .split_first()
        .ok_or("inbox message cut in its header")?;
    let host_len = usize::from(host_len);
    if rest.len() < host_len + 8 {
        return Err("inbox message cut in its header".into());
    }
    let (host, rest) = rest.split_at(host_len);
    let host = std::str::from_utf8(host)
        .map_err(|_| "inbox message with a source host id that is not UTF-8".to_string())?;
    let (incarnation, payload) = rest.split_at(8);
    let mut le = [0u8; 8];
    le.copy_from_slice(incarnation);
    Ok((
        HostInfo {
            host: host.to_owned(),
            incarnation: u64::from_le_bytes(le),
        },
        payload.to_vec(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_layout_is_as_documented() {
        let source = HostInfo {
            host: "ab".into(),
            incarnation: 0x0102,
        };
        assert_eq!(
            encode(&source, b"xy"),
            [1, 2, b'a', b'b', 2, 1, 0, 0, 0, 0, 0, 0, b'x', b'y']
        );
    }

    #[test]
    fn damaged_messages_are_refused() {
        assert!(decode(b"").is_err());
        assert!(decode(&[2, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(decode(&[1, 5, b'a']).is_err());
        assert!(decode(&[1, 1, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    proptest! {
        #[test]
        fn what_is_encoded_decodes_the_same(host in "[a-z0-9/-]{1,40}", incarnation: u64, payload: Vec<u8>) {
            let source = HostInfo { host, incarnation };
            let (back, bytes) = decode(&encode(&source, &payload)).unwrap();
            prop_assert_eq!(back, source);
            prop_assert_eq!(bytes, payload);
        }

        #[test]
        fn any_bytes_decode_without_panic(bytes: Vec<u8>) {
            let _ = decode(&bytes);
        }
    }
}
