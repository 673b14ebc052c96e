//! Fuzz target: `ClientMsg::decode`, the relay's decoder of every control frame a client
//! sends (Hello with its resume token, visitor id and media caps; Next, Report, Caps,
//! Nack, ...). Any input must decode or fail cleanly, and a decoded message must survive
//! encode → decode unchanged (and still pass the limits `decode` checks).
#![no_main]

use duet_proto::ClientMsg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = ClientMsg::decode(data) else {
        return;
    };
    let bytes = msg.encode();
    let again = ClientMsg::decode(&bytes).expect("an encoded ClientMsg decodes");
    assert_eq!(again, msg, "decode → encode → decode changed the message");
    assert_eq!(again.encode(), bytes, "encoding is not stable");
    // The canonical encoding is never longer than what was read.
    assert!(bytes.len() <= data.len(), "re-encoding grew the message");
});
