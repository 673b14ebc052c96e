//! Regression tests from fuzzing (`fuzz/`): every input a fuzz target ever failed on is
//! kept here as a test, with the property it broke, so the fix stays fixed without
//! libFuzzer. And the committed seed corpus (`fuzz/corpus/<target>/`) must still be real
//! protocol messages: seeds that stopped decoding (the vectors changed) would leave the
//! fuzzers starting from noise, so this fails until `python3 fuzz/make-corpus.py` is re-run.
//!
//! Crashes found so far: none (each target fuzzed for three minutes and more, and in CI
//! for 20 s a run). Add one as `fn <target>_<what>()` with the input as a byte literal.

use duet_proto::limits::MAX_FRAME_BYTES;
use duet_proto::media::peek_match_id;
use duet_proto::*;
use std::path::PathBuf;

/// The seed files of one fuzz target, sorted by name.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let bytes = std::fs::read(&path).expect("a seed file");
            (path.display().to_string(), bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

#[test]
fn control_and_chat_seeds_decode_and_round_trip() {
    for (name, bytes) in seeds("client_msg") {
        let msg = ClientMsg::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(msg.encode(), bytes, "{name}");
    }
    for (name, bytes) in seeds("server_msg") {
        let msg = ServerMsg::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(msg.encode(), bytes, "{name}");
    }
    for (name, bytes) in seeds("chat_frame") {
        let frame = ChatFrame::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(frame.encode(), bytes, "{name}");
    }
}

#[test]
fn media_seeds_read_and_peek_the_same_match_id() {
    for (name, bytes) in seeds("media_header") {
        let (header, offset) = MediaHeader::read(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(peek_match_id(&bytes), Some(header.match_id), "{name}");
        let mut again = Vec::new();
        header.write_datagram(&bytes[offset..], &mut again);
        assert_eq!(again, bytes, "{name}");
    }
}

#[test]
fn frame_reader_seeds_hold_whole_frames() {
    // Each seed is records [n][n bytes] (255: the rest); the stream is their concatenation.
    let mut frames = 0;
    for (name, bytes) in seeds("frame_reader") {
        let mut reader = FrameReader::new();
        let mut rest = &bytes[..];
        let mut refused = false;
        while let Some((&n, tail)) = rest.split_first() {
            let take = if n == 255 {
                tail.len()
            } else {
                usize::from(n).min(tail.len())
            };
            reader.push(&tail[..take]);
            rest = &tail[take..];
            loop {
                match reader.next_frame() {
                    Ok(Some(f)) => {
                        assert!(f.len() <= MAX_FRAME_BYTES, "{name}");
                        frames += 1;
                    }
                    Ok(None) => break,
                    Err(_) => {
                        refused = true;
                        break;
                    }
                }
            }
            if refused {
                break;
            }
        }
        assert_eq!(refused, name.ends_with("oversized_prefix"), "{name}");
    }
    assert!(frames > 20, "the seeds carry real frames ({frames})");
}

/// The relay routes by `peek_match_id`, the receiver by the full header: at the edges of
/// a 10-byte varint they must agree (an input class the media_header target checks
/// against postcard on every run).
#[test]
fn peek_agrees_with_the_header_at_the_varint_limits() {
    let mut dg = Vec::new();
    for match_id in [0, 127, 128, u64::from(u32::MAX), u64::MAX - 1, u64::MAX] {
        MediaHeader {
            match_id,
            track: Track::Video,
            seq: 1,
            frame: 2,
            frag_index: 0,
            frag_count: 1,
            keyframe: true,
            capture_us: 3,
            ref_frame: 2,
        }
        .write_datagram(b"x", &mut dg);
        assert_eq!(peek_match_id(&dg), Some(match_id));
        assert_eq!(
            MediaHeader::read(&dg).map(|(h, _)| h.match_id).ok(),
            Some(match_id)
        );
    }
    // A tenth byte above 1 overflows 64 bits: neither side may accept it.
    let overflow = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0,
    ];
    assert_eq!(peek_match_id(&overflow), None);
    assert!(MediaHeader::read(&overflow).is_err());
}
