//! Property tests: every message round-trips through its encoder and decoder, and no
//! decoder panics or over-reads on arbitrary bytes (the fuzzing floor that runs in CI).

use duet_proto::media::peek_match_id;
use duet_proto::*;
use proptest::prelude::*;

fn token() -> impl Strategy<Value = ResumeToken> {
    any::<[u8; 16]>().prop_map(ResumeToken)
}

fn report() -> impl Strategy<Value = ReceiverReport> {
    (
        any::<u64>(),
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
        any::<u32>(),
        any::<u16>(),
    )
        .prop_map(|(m, l, j, f, b, q)| ReceiverReport {
            match_id: m,
            loss_permille: l,
            jitter_ms: j,
            frames_decoded: f,
            bitrate_kbps: b,
            queue_delay_ms: q,
        })
}

fn codecs() -> impl Strategy<Value = Vec<VideoCodec>> {
    proptest::collection::vec(proptest::sample::select(VideoCodec::ALL.to_vec()), 0..=4)
}

fn caps() -> impl Strategy<Value = MediaCaps> {
    (codecs(), codecs(), codecs()).prop_map(|(decode, encode, hardware_encode)| MediaCaps {
        decode,
        encode,
        hardware_encode,
    })
}

fn nack() -> impl Strategy<Value = Nack> {
    (
        any::<u64>(),
        any::<u32>(),
        proptest::collection::vec(any::<u16>(), 0..=limits::MAX_NACK_FRAGMENTS),
    )
        .prop_map(|(match_id, frame, fragments)| Nack {
            match_id,
            frame,
            fragments,
        })
}

fn client_msg() -> impl Strategy<Value = ClientMsg> {
    prop_oneof![
        (
            any::<u16>(),
            "\\PC{0,16}",
            proptest::collection::vec("[a-z]{1,32}", 0..8),
            proptest::option::of(token()),
            proptest::option::of(any::<[u8; 16]>().prop_map(VisitorId)),
            caps(),
        )
            .prop_map(|(version, name, interests, resume, visitor, media)| {
                ClientMsg::Hello(Hello {
                    version,
                    name,
                    interests,
                    resume,
                    visitor,
                    media,
                })
            }),
        proptest::option::of(any::<u64>()).prop_map(|match_id| ClientMsg::Next { match_id }),
        Just(ClientMsg::Leave),
        any::<u64>().prop_map(|match_id| ClientMsg::RequestKeyframe { match_id }),
        report().prop_map(ClientMsg::ReceiverReport),
        any::<u64>().prop_map(|match_id| ClientMsg::Report(AbuseReport {
            match_id,
            reason: ReportReason::Spam
        })),
        caps().prop_map(ClientMsg::Caps),
        nack().prop_map(ClientMsg::Nack),
        (any::<u64>(), any::<[u8; 32]>())
            .prop_map(|(match_id, public)| ClientMsg::KeyShare { match_id, public }),
        any::<[u8; 32]>().prop_map(|public| ClientMsg::NextKey { public }),
    ]
}

fn server_msg() -> impl Strategy<Value = ServerMsg> {
    prop_oneof![
        (any::<u64>(), token(), any::<bool>()).prop_map(|(session_id, resume_token, resumed)| {
            ServerMsg::Welcome(Welcome {
                session_id,
                resume_token,
                resumed,
            })
        }),
        any::<u32>().prop_map(|waiting| ServerMsg::Queued { waiting }),
        (
            any::<u64>(),
            "\\PC{0,64}",
            proptest::collection::vec("\\PC{0,8}", 0..4),
            proptest::option::of(proptest::sample::select(VideoCodec::ALL.to_vec())),
            proptest::option::of(proptest::sample::select(VideoCodec::ALL.to_vec())),
            proptest::option::of(any::<[u8; 32]>()),
            proptest::option::of(any::<[u8; 32]>()),
        )
            .prop_map(
                |(
                    match_id,
                    partner_name,
                    shared_interests,
                    send_codec,
                    recv_codec,
                    partner_key,
                    your_key,
                )| {
                    ServerMsg::Matched(Matched {
                        match_id,
                        partner_name,
                        shared_interests,
                        send_codec,
                        recv_codec,
                        partner_key,
                        your_key,
                    })
                }
            ),
        nack().prop_map(ServerMsg::PeerNack),
        any::<u32>().prop_map(|within_ms| ServerMsg::Draining { within_ms }),
        Just(ServerMsg::PeerLeft {
            reason: LeaveReason::Disconnected
        }),
        Just(ServerMsg::PeerReconnecting),
        report().prop_map(ServerMsg::PeerReport),
        (0usize..ErrorCode::ALL.len(), "\\PC{0,100}", any::<bool>())
            .prop_map(|(i, m, fatal)| ServerMsg::error(ErrorCode::ALL[i], m, fatal)),
    ]
}

proptest! {
    #[test]
    fn client_messages_round_trip(msg in client_msg()) {
        let body = msg.encode();
        prop_assert!(body.len() <= limits::MAX_FRAME_BYTES);
        prop_assert_eq!(ClientMsg::decode(&body).expect("round trip"), msg);
    }

    #[test]
    fn server_messages_round_trip(msg in server_msg()) {
        prop_assert_eq!(ServerMsg::decode(&msg.encode()).expect("round trip"), msg);
    }

    #[test]
    fn chat_lines_round_trip(text in "\\PC{0,500}") {
        let f = ChatFrame::Line { text };
        prop_assert_eq!(ChatFrame::decode(&f.encode()).expect("round trip"), f);
    }

    #[test]
    fn media_headers_round_trip(
        match_id in any::<u64>(), seq in any::<u32>(), frame in any::<u32>(),
        count in 1u16..=limits::MAX_FRAGMENTS, idx_seed in any::<u16>(), keyframe in any::<bool>(),
        capture_us in any::<u64>(), payload in proptest::collection::vec(any::<u8>(), 0..900),
    ) {
        let h = MediaHeader { match_id, track: Track::Video, seq, frame,
            frag_index: idx_seed % count, frag_count: count, keyframe, capture_us,
            ref_frame: frame.wrapping_sub(1) };
        let mut dg = Vec::new();
        h.write_datagram(&payload, &mut dg);
        let (back, off) = MediaHeader::read(&dg).expect("round trip");
        prop_assert_eq!(back, h);
        prop_assert_eq!(&dg[off..], &payload[..]);
        prop_assert_eq!(peek_match_id(&dg), Some(match_id));
    }

    #[test]
    fn no_decoder_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = ClientMsg::decode(&bytes);
        let _ = ServerMsg::decode(&bytes);
        let _ = ChatFrame::decode(&bytes);
        let _ = MediaHeader::read(&bytes);
        let _ = peek_match_id(&bytes);
        let mut r = FrameReader::new();
        r.push(&bytes);
        while let Ok(Some(_)) = r.next_frame() {}
    }

    #[test]
    fn reassembler_survives_arbitrary_fragments(
        frags in proptest::collection::vec((0u32..20, 0u16..8, 1u16..8, any::<bool>()), 0..200)
    ) {
        let mut r = Reassembler::new();
        for (frame, idx, count, audio) in frags {
            let h = MediaHeader { match_id: 1, track: if audio { Track::Audio } else { Track::Video },
                seq: 0, frame, frag_index: idx % count, frag_count: count, keyframe: false, capture_us: 0,
                ref_frame: 0 };
            let _ = r.push(&h, b"x");
        }
    }
}

#[test]
fn oversized_fields_in_hello_are_refused() {
    let hello = |name: String, interests: Vec<String>| {
        ClientMsg::Hello(Hello {
            version: PROTOCOL_VERSION,
            name,
            interests,
            resume: None,
            visitor: None,
            media: MediaCaps::default(),
        })
        .encode()
    };
    let long_name = "x".repeat(limits::MAX_NAME_BYTES + 1);
    assert_eq!(
        ClientMsg::decode(&hello(long_name, vec![])).map_err(|e| e.code()),
        Err(ErrorCode::TooLarge)
    );
    let many = vec!["a".to_string(); limits::MAX_INTERESTS + 1];
    assert!(ClientMsg::decode(&hello("ok".into(), many)).is_err());
    let long_chat = ChatFrame::Line {
        text: "x".repeat(limits::MAX_CHAT_BYTES + 1),
    };
    assert!(ChatFrame::decode(&long_chat.encode()).is_err());
}

#[test]
fn codec_choice_prefers_hardware_then_the_senders_order() {
    use VideoCodec::*;
    let caps = |decode: &[VideoCodec], encode: &[VideoCodec], hw: &[VideoCodec]| MediaCaps {
        decode: decode.to_vec(),
        encode: encode.to_vec(),
        hardware_encode: hw.to_vec(),
    };
    let phone = caps(&[Vp8, H264], &[Vp9, Vp8, H264], &[H264]);
    let desktop = caps(&[Vp8, Vp9, Av1, H264], &[Vp9, Vp8], &[]);
    // The phone encodes H.264 in hardware and the desktop decodes it.
    assert_eq!(MediaCaps::choose(&phone, &desktop), Some(H264));
    // The desktop prefers VP9, but the phone cannot decode it: VP8.
    assert_eq!(MediaCaps::choose(&desktop, &phone), Some(Vp8));
    // Nothing in common: no video that way.
    let text_only = caps(&[], &[], &[]);
    assert_eq!(MediaCaps::choose(&desktop, &text_only), None);
    assert_eq!(MediaCaps::choose(&text_only, &desktop), None);
}

#[test]
fn oversized_codec_lists_and_nacks_are_refused() {
    let caps = MediaCaps {
        decode: vec![VideoCodec::Vp8; limits::MAX_CODECS + 1],
        ..MediaCaps::default()
    };
    assert!(ClientMsg::decode(&ClientMsg::Caps(caps).encode()).is_err());
    let nack = Nack {
        match_id: 1,
        frame: 1,
        fragments: vec![0; limits::MAX_NACK_FRAGMENTS + 1],
    };
    assert!(ClientMsg::decode(&ClientMsg::Nack(nack.clone()).encode()).is_err());
    assert!(ServerMsg::decode(&ServerMsg::PeerNack(nack).encode()).is_err());
}
