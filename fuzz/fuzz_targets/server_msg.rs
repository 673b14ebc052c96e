//! Fuzz target: `ServerMsg::decode`, the native client's decoder of every control frame
//! the relay sends (Welcome with the resume token, Matched with codecs, PeerNack,
//! Draining, errors, ...). Any input must decode or fail cleanly, and a decoded message
//! must survive encode → decode unchanged.
#![no_main]

use duet_proto::ServerMsg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = ServerMsg::decode(data) else {
        return;
    };
    let bytes = msg.encode();
    let again = ServerMsg::decode(&bytes).expect("an encoded ServerMsg decodes");
    assert_eq!(again, msg, "decode → encode → decode changed the message");
    assert_eq!(again.encode(), bytes, "encoding is not stable");
    assert!(bytes.len() <= data.len(), "re-encoding grew the message");
});
