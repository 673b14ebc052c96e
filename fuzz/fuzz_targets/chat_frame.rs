//! Fuzz target: `ChatFrame::decode`, the relay's and client's decoder of chat stream
//! frames (`Open { match_id }`, `Line { text }`). Any input must decode or fail cleanly; a
//! decoded frame survives encode → decode unchanged, and a line is within the chat limit.
#![no_main]

use duet_proto::limits::MAX_CHAT_BYTES;
use duet_proto::ChatFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = ChatFrame::decode(data) else {
        return;
    };
    if let ChatFrame::Line { text } = &frame {
        assert!(text.len() <= MAX_CHAT_BYTES, "an over-long line decoded");
    }
    let bytes = frame.encode();
    let again = ChatFrame::decode(&bytes).expect("an encoded ChatFrame decodes");
    assert_eq!(again, frame, "decode → encode → decode changed the frame");
    assert_eq!(again.encode(), bytes, "encoding is not stable");
    assert!(bytes.len() <= data.len(), "re-encoding grew the frame");
});
