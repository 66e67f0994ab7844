//! The frames of one broadcast entry: a host writes the broadcasts queued meanwhile as one stream
//! entry, so that Redis stores, and each receiver parses, one value per batch rather than one per
//! message (most of a receiver's time went to parsing entries one by one).
//!
//! Layout: for each frame, its length (u32 little-endian) then its bytes; nothing else.

/// The most frames in one entry: what a host writes at most in one round trip. An entry of more
/// is refused, so that a hostile entry of tiny frames cannot make a receiver hold millions of them.
pub(crate) const MAX_FRAMES: usize = 512;

/// The frames packed in order.
pub(crate) fn pack(frames: &[Vec<u8>]) -> Vec<u8> {
    let size = frames.iter().map(|f| 4 + f.len()).sum();
    let mut out = Vec::with_capacity(size);
    for frame in frames {
        // A frame is at most the cross-host limit, which RemoteConfig::check keeps below 4 GiB.
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&frame[..len as usize]);
    }
    out
}

/// The frames of a packed entry, or why it does not unpack (then none of it is used).
pub(crate) fn unpack(mut packed: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut frames = Vec::new();
    while !packed.is_empty() {
        let Some((len, rest)) = packed.split_first_chunk::<4>() else {
            return Err("an entry cut in a frame's length".into());
        };
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(format!(
                "an entry cut in a frame: {len} bytes announced, {} left",
                rest.len()
            ));
        }
        if frames.len() == MAX_FRAMES {
            return Err(format!("an entry of more than {MAX_FRAMES} frames"));
        }
        let (frame, rest) = rest.split_at(len);
        frames.push(frame.to_vec());
        packed = rest;
    }
    if frames.is_empty() {
        return Err("an entry with no frame".into());
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_layout_is_as_documented() {
        assert_eq!(
            pack(&[vec![7], vec![], vec![1, 2]]),
            vec![1, 0, 0, 0, 7, 0, 0, 0, 0, 2, 0, 0, 0, 1, 2]
        );
    }

    #[test]
    fn a_cut_or_empty_entry_is_refused() {
        assert!(unpack(&[]).is_err());
        assert!(unpack(&[1, 0, 0]).is_err());
        assert!(unpack(&[2, 0, 0, 0, 9]).is_err());
        assert_eq!(
            unpack(&pack(&vec![vec![]; MAX_FRAMES])).map(|f| f.len()),
            Ok(MAX_FRAMES)
        );
        assert!(unpack(&pack(&vec![vec![]; MAX_FRAMES + 1])).is_err());
    }

    proptest! {
        #[test]
        fn frames_unpack_as_packed(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..16)) {
            prop_assert_eq!(unpack(&pack(&frames)).ok(), Some(frames));
        }

        #[test]
        fn any_bytes_unpack_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = unpack(&bytes);
        }
    }
}
