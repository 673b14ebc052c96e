//! Fuzz target: `frame::FrameReader`, which cuts the control and chat streams into frames
//! from whatever chunks QUIC delivers.
//!
//! Input: records `[n][n bytes]`, each one `push` (n = 255 means "the rest of the input",
//! so a single read can be larger than a frame). After every push the reader is drained.
//! Properties: the frames (and the oversize error) are exactly those a plain reference
//! parser finds in the concatenated bytes, however they were chunked; and after draining,
//! the reader holds less than one whole frame (its buffer cannot be grown by a peer).
#![no_main]

use duet_proto::limits::MAX_FRAME_BYTES;
use duet_proto::FrameReader;
use libfuzzer_sys::fuzz_target;

const PREFIX: usize = 2;

/// The frames in `all`, and whether an oversized length prefix ends the stream.
fn reference(all: &[u8]) -> (Vec<Vec<u8>>, bool) {
    let mut frames = Vec::new();
    let mut rest = all;
    while rest.len() >= PREFIX {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        if len > MAX_FRAME_BYTES {
            return (frames, true);
        }
        if rest.len() < PREFIX + len {
            break;
        }
        frames.push(rest[PREFIX..PREFIX + len].to_vec());
        rest = &rest[PREFIX + len..];
    }
    (frames, false)
}

fuzz_target!(|data: &[u8]| {
    let mut reader = FrameReader::new();
    let mut pushed = Vec::new();
    let mut frames = Vec::new();
    let mut refused = false;
    let mut rest = data;
    'chunks: while let Some((&n, tail)) = rest.split_first() {
        let take = if n == 255 {
            tail.len()
        } else {
            usize::from(n).min(tail.len())
        };
        let (chunk, after) = tail.split_at(take);
        rest = after;
        reader.push(chunk);
        pushed.extend_from_slice(chunk);
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) => {
                    assert!(
                        frame.len() <= MAX_FRAME_BYTES,
                        "an oversized frame came out"
                    );
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(_) => {
                    refused = true;
                    break 'chunks;
                }
            }
        }
        assert!(
            reader.pending() < PREFIX + MAX_FRAME_BYTES,
            "the reader holds {} bytes after draining",
            reader.pending()
        );
    }
    let (expected, expected_refused) = reference(&pushed);
    assert_eq!(refused, expected_refused, "oversize detection differs");
    assert_eq!(frames, expected, "frames differ from the reference parser");
});
