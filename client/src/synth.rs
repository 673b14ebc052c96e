//! Synthetic media: deterministic frame contents that a receiver can regenerate, so tests
//! check that every forwarded byte arrived unchanged without shipping a real codec.

/// The bytes of frame `frame` of `track_tag` from a sender, `len` long. A cheap
/// xorshift stream seeded by the frame number: different for every frame, same on both ends.
pub fn fill(track_tag: u8, frame: u32, out: &mut Vec<u8>, len: usize) {
    out.clear();
    let mut x: u64 = (u64::from(frame) << 8 | u64::from(track_tag)) ^ 0x9E37_79B9_7F4A_7C15;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        let take = (len - out.len()).min(8);
        out.extend_from_slice(&bytes[..take]);
    }
}

/// Whether `data` is exactly what [`fill`] makes for this frame.
pub fn verify(track_tag: u8, frame: u32, data: &[u8], scratch: &mut Vec<u8>) -> bool {
    fill(track_tag, frame, scratch, data.len());
    scratch.as_slice() == data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_differ_and_verify() {
        let (mut a, mut b, mut s) = (Vec::new(), Vec::new(), Vec::new());
        fill(1, 7, &mut a, 1000);
        fill(1, 8, &mut b, 1000);
        assert_ne!(a, b);
        assert!(verify(1, 7, &a, &mut s));
        a[500] ^= 1;
        assert!(!verify(1, 7, &a, &mut s));
    }
}
