//! Fuzz target: the media datagram header, read by every receiver (`MediaHeader::read`)
//! and peeked by the relay on every datagram it forwards (`media::peek_match_id`).
//!
//! Properties: a datagram that reads gives back the same header and payload after
//! `write_datagram`; its fields are within the limits `read` promises; and the relay's
//! one-varint peek agrees with postcard's own decoding of a leading `u64` on every input
//! (the relay routes by the peek, the receiver trusts the full header: they must never
//! disagree about which pairing a datagram belongs to).
#![no_main]

use duet_proto::limits::{MAX_FRAGMENTS, MAX_MEDIA_DATAGRAM_BYTES};
use duet_proto::media::peek_match_id;
use duet_proto::MediaHeader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let peeked = peek_match_id(data);
    let reference = postcard::take_from_bytes::<u64>(data).ok().map(|(v, _)| v);
    assert_eq!(peeked, reference, "peek_match_id disagrees with postcard");

    let Ok((header, offset)) = MediaHeader::read(data) else {
        return;
    };
    assert!(data.len() <= MAX_MEDIA_DATAGRAM_BYTES);
    assert!(offset <= data.len(), "payload offset past the end");
    assert!(header.frag_count >= 1 && header.frag_count <= MAX_FRAGMENTS);
    assert!(header.frag_index < header.frag_count);
    assert_eq!(peeked, Some(header.match_id), "peek and read disagree");

    let payload = &data[offset..];
    let mut out = Vec::new();
    header.write_datagram(payload, &mut out);
    assert!(out.len() <= data.len(), "re-encoding grew the datagram");
    let (again, again_offset) = MediaHeader::read(&out).expect("a written datagram reads");
    assert_eq!(again, header, "read → write → read changed the header");
    assert_eq!(&out[again_offset..], payload, "the payload changed");
});
