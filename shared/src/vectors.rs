//! Test vectors: every message kind, a few chat frames and media headers, each with its
//! exact bytes. The web client's codec must decode each one to the same value and encode
//! it back to the same bytes. `shared/vectors.json` is generated from [`all`]; a test fails
//! if the committed file is stale (`DUET_UPDATE_VECTORS=1 cargo test -p duet-proto`
//! rewrites it). Adding a message means adding its vector here.

use crate::chat::ChatFrame;
use crate::control::*;
use crate::error::ErrorCode;
use crate::limits;
use crate::media::{MediaHeader, Track};
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Debug, Serialize)]
pub struct Vector {
    pub name: String,
    /// `ClientMsg`, `ServerMsg`, `ChatFrame` or `MediaHeader`.
    pub kind: &'static str,
    /// The value as serde's JSON (externally tagged enums, arrays for byte arrays).
    pub value: Value,
    /// The postcard body (for `MediaHeader`: the header alone), as lowercase hex.
    pub hex: String,
    /// The same body as a length-prefixed stream frame (absent for media headers).
    pub frame_hex: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn vector<T: Serialize>(name: &str, kind: &'static str, value: &T, body: Vec<u8>) -> Vector {
    let frame_hex = (kind != "MediaHeader")
        .then(|| crate::frame::encode_frame(&body).ok().map(|f| hex(&f)))
        .flatten();
    Vector {
        name: name.to_string(),
        kind,
        value: serde_json::to_value(value).unwrap_or(Value::Null),
        hex: hex(&body),
        frame_hex,
    }
}

const TOKEN: ResumeToken = ResumeToken([
    0x00, 0x01, 0x7f, 0x80, 0xff, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0xa0, 0xb0, 0xc0, 0xd0,
]);

/// Every vector, in a stable order.
pub fn all() -> Vec<Vector> {
    let mut v = Vec::new();
    let client = |name: &str, m: ClientMsg| vector(name, "ClientMsg", &m, m.encode());
    let server = |name: &str, m: ServerMsg| vector(name, "ServerMsg", &m, m.encode());

    v.push(client(
        "hello",
        ClientMsg::Hello(Hello {
            version: crate::PROTOCOL_VERSION,
            name: "Ana".into(),
            interests: vec!["music".into(), "chess".into()],
            resume: None,
            visitor: Some(VisitorId([7; 16])),
            media: MediaCaps {
                decode: VideoCodec::ALL.to_vec(),
                encode: vec![VideoCodec::Vp9, VideoCodec::Vp8, VideoCodec::H264],
                hardware_encode: vec![VideoCodec::H264],
            },
        }),
    ));
    v.push(client(
        "hello_resume_unicode",
        ClientMsg::Hello(Hello {
            version: 300,
            name: "Zoë 🎸 Łukasz".into(),
            interests: vec![],
            resume: Some(TOKEN),
            visitor: None,
            media: MediaCaps::default(),
        }),
    ));
    v.push(client("next_idle", ClientMsg::Next { match_id: None }));
    v.push(client(
        "next",
        ClientMsg::Next {
            match_id: Some(1 << 40),
        },
    ));
    v.push(client("leave", ClientMsg::Leave));
    v.push(client("typing", ClientMsg::Typing { match_id: 300 }));
    v.push(client(
        "requeue_when_left_off",
        ClientMsg::RequeueWhenLeft(false),
    ));
    v.push(client(
        "requeue_when_left_on",
        ClientMsg::RequeueWhenLeft(true),
    ));
    v.push(client(
        "key_share",
        ClientMsg::KeyShare {
            match_id: 1 << 33,
            public: e2ee_sample::pair().0.public(),
        },
    ));
    v.push(client(
        "next_key",
        ClientMsg::NextKey {
            public: e2ee_sample::pair().1.public(),
        },
    ));
    v.push(client(
        "request_keyframe",
        ClientMsg::RequestKeyframe { match_id: 77 },
    ));
    v.push(client(
        "receiver_report",
        ClientMsg::ReceiverReport(ReceiverReport {
            match_id: u64::MAX,
            loss_permille: 1000,
            jitter_ms: 65535,
            frames_decoded: 4_000_000_000,
            bitrate_kbps: 128,
            queue_delay_ms: 300,
        }),
    ));
    v.push(client(
        "caps",
        ClientMsg::Caps(MediaCaps {
            decode: vec![VideoCodec::Vp8, VideoCodec::Av1],
            encode: vec![VideoCodec::Vp8],
            hardware_encode: vec![],
        }),
    ));
    v.push(client(
        "nack",
        ClientMsg::Nack(Nack {
            match_id: 300,
            frame: 70_000,
            fragments: vec![0, 5, limits::MAX_FRAGMENTS - 1],
        }),
    ));
    for (name, reason) in [
        ("report_nudity", ReportReason::Nudity),
        ("report_harassment", ReportReason::Harassment),
        ("report_spam", ReportReason::Spam),
        ("report_underage", ReportReason::Underage),
        ("report_other", ReportReason::Other),
    ] {
        v.push(client(
            name,
            ClientMsg::Report(AbuseReport {
                match_id: 1 << 20,
                reason,
            }),
        ));
    }

    v.push(server(
        "welcome",
        ServerMsg::Welcome(Welcome {
            session_id: u64::MAX,
            resume_token: TOKEN,
            resumed: true,
        }),
    ));
    v.push(server("queued", ServerMsg::Queued { waiting: 129 }));
    v.push(server(
        "matched",
        ServerMsg::Matched(Matched {
            match_id: 1 << 40,
            partner_name: "Sam".into(),
            shared_interests: vec!["chess".into()],
            send_codec: Some(VideoCodec::H264),
            recv_codec: Some(VideoCodec::Vp9),
            partner_key: None,
            your_key: None,
        }),
    ));
    v.push(server(
        "matched_with_keys",
        ServerMsg::Matched(Matched {
            match_id: 1 << 40,
            partner_name: "Sam".into(),
            shared_interests: vec![],
            send_codec: Some(VideoCodec::Vp8),
            recv_codec: Some(VideoCodec::Vp8),
            partner_key: Some(e2ee_sample::pair().1.public()),
            your_key: Some(e2ee_sample::pair().0.public()),
        }),
    ));
    v.push(server(
        "matched_text_only",
        ServerMsg::Matched(Matched {
            match_id: 2,
            partner_name: "".into(),
            shared_interests: vec![],
            send_codec: None,
            recv_codec: Some(VideoCodec::Av1),
            partner_key: None,
            your_key: None,
        }),
    ));
    for (name, reason) in [
        ("peer_left_next", LeaveReason::Next),
        ("peer_left_left", LeaveReason::Left),
        ("peer_left_disconnected", LeaveReason::Disconnected),
        ("peer_left_reported", LeaveReason::Reported),
    ] {
        v.push(server(name, ServerMsg::PeerLeft { reason }));
    }
    v.push(server("peer_reconnecting", ServerMsg::PeerReconnecting));
    v.push(server("peer_returned", ServerMsg::PeerReturned));
    v.push(server("keyframe_requested", ServerMsg::KeyframeRequested));
    v.push(server("peer_typing", ServerMsg::PeerTyping));
    v.push(server(
        "peer_key",
        ServerMsg::PeerKey {
            match_id: 7,
            public: e2ee_sample::pair().1.public(),
        },
    ));
    v.push(server(
        "peer_report",
        ServerMsg::PeerReport(ReceiverReport {
            match_id: 5,
            loss_permille: 12,
            jitter_ms: 3,
            frames_decoded: 900,
            bitrate_kbps: 1500,
            queue_delay_ms: 0,
        }),
    ));
    v.push(server(
        "peer_nack",
        ServerMsg::PeerNack(Nack {
            match_id: 9,
            frame: 1,
            fragments: vec![2],
        }),
    ));
    v.push(server(
        "draining",
        ServerMsg::Draining { within_ms: 30_000 },
    ));
    v.push(server(
        "stats",
        ServerMsg::Stats(RelayStats {
            rtt_us: 23_456,
            lost_permille: 0,
            send_rate_kbps: 2_000_000,
        }),
    ));
    for code in ErrorCode::ALL {
        v.push(server(
            &format!("error_{}", code.name()),
            ServerMsg::error(
                code,
                format!("{code}: something went wrong"),
                code.to_code() % 2 == 0,
            ),
        ));
    }

    let chat = |name: &str, f: ChatFrame| vector(name, "ChatFrame", &f, f.encode());
    v.push(chat("chat_open", ChatFrame::Open { match_id: 300 }));
    v.push(chat(
        "chat_line",
        ChatFrame::Line {
            text: "hi 👋 — ça va?".into(),
        },
    ));
    v.push(chat(
        "chat_line_at_limit",
        ChatFrame::Line {
            text: "é".repeat(limits::MAX_CHAT_BYTES / 2),
        },
    ));

    v.push(chat(
        "chat_sealed",
        ChatFrame::Sealed {
            number: 70_000,
            sealed: (0..40).map(|i| i * 6 + 1).collect(),
        },
    ));
    for (name, h) in [
        (
            "media_audio",
            MediaHeader {
                match_id: 1,
                track: Track::Audio,
                seq: 0,
                frame: 0,
                frag_index: 0,
                frag_count: 1,
                keyframe: true,
                capture_us: 1_763_700_000_000_000,
                ref_frame: 0,
            },
        ),
        (
            "media_video_fragment",
            MediaHeader {
                match_id: 987_654_321,
                track: Track::Video,
                seq: 70_000,
                frame: 2_333,
                frag_index: 4,
                frag_count: 9,
                keyframe: false,
                capture_us: 1_763_700_000_123_456,
                ref_frame: 2_331,
            },
        ),
        (
            "media_video_parity",
            MediaHeader {
                match_id: 987_654_321,
                track: Track::VideoParity,
                seq: 12,
                frame: 2_333,
                frag_index: 0,
                frag_count: 9,
                keyframe: false,
                capture_us: 1_763_700_000_123_456,
                ref_frame: 2_331,
            },
        ),
        (
            "media_max",
            MediaHeader {
                match_id: u64::MAX,
                track: Track::Video,
                seq: u32::MAX,
                frame: u32::MAX,
                frag_index: limits::MAX_FRAGMENTS - 1,
                frag_count: limits::MAX_FRAGMENTS,
                keyframe: true,
                capture_us: u64::MAX,
                ref_frame: u32::MAX,
            },
        ),
    ] {
        let mut body = Vec::new();
        h.write_datagram(&[], &mut body);
        v.push(vector(name, "MediaHeader", &h, body));
    }
    v
}

/// The whole vectors file: the limits and error codes the web client mirrors, and vectors.
pub fn file_json() -> String {
    let codes: serde_json::Map<String, Value> = ErrorCode::ALL
        .iter()
        .map(|c| (c.name().to_string(), json!(c.to_code())))
        .collect();
    let doc = json!({
        "generated_by": "duet-proto (cargo test -p duet-proto; DUET_UPDATE_VECTORS=1 rewrites)",
        "protocol_version": crate::PROTOCOL_VERSION,
        "limits": {
            "MAX_FRAME_BYTES": limits::MAX_FRAME_BYTES,
            "MAX_NAME_BYTES": limits::MAX_NAME_BYTES,
            "MAX_INTERESTS": limits::MAX_INTERESTS,
            "MAX_INTEREST_BYTES": limits::MAX_INTEREST_BYTES,
            "MAX_CHAT_BYTES": limits::MAX_CHAT_BYTES,
            "MAX_SEALED_CHAT_BYTES": limits::MAX_SEALED_CHAT_BYTES,
            "MAX_MEDIA_DATAGRAM_BYTES": limits::MAX_MEDIA_DATAGRAM_BYTES,
            "MAX_MEDIA_HEADER_BYTES": limits::MAX_MEDIA_HEADER_BYTES,
            "MAX_FRAGMENTS": limits::MAX_FRAGMENTS,
            "MAX_CODECS": limits::MAX_CODECS,
            "MAX_NACK_FRAGMENTS": limits::MAX_NACK_FRAGMENTS,
        },
        "error_codes": codes,
        "websocket": {
            "WS_PATH": crate::ws::WS_PATH,
            "KIND_MEDIA": crate::ws::KIND_MEDIA,
            "KIND_CONTROL": crate::ws::KIND_CONTROL,
            "KIND_CHAT": crate::ws::KIND_CHAT,
            "CLOSE_CODE_BASE": crate::ws::CLOSE_CODE_BASE,
            "MAX_WS_MESSAGE_BYTES": crate::ws::MAX_WS_MESSAGE_BYTES,
        },
        "vectors": all(),
        "e2ee": e2ee_sample::json(),
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// End-to-end encryption, step by step for two fixed key pairs: the public keys, both
/// directions' keys, the safety code, and frames and a chat line sealed each way. The web
/// client runs the same steps with WebCrypto and must get the same bytes.
mod e2ee_sample {
    use super::hex;
    use crate::e2ee::{Aad, KeyPair, Kind, PairKeys, SAFETY_SYMBOLS};
    use serde_json::{json, Value};

    pub const MATCH_ID: u64 = 0x0123_4567_89ab_cdef;
    const SECRET_A: [u8; 32] = [0x11; 32];

    fn secret_b() -> [u8; 32] {
        std::array::from_fn(|i| i as u8 * 7 + 3)
    }

    pub fn pair() -> (KeyPair, KeyPair) {
        (
            KeyPair::from_secret(SECRET_A),
            KeyPair::from_secret(secret_b()),
        )
    }

    fn aad_json(a: &Aad) -> Value {
        json!({
            "match_id": a.match_id.to_string(),
            "kind": a.kind as u8,
            "number": a.number,
            "keyframe": a.keyframe,
            "capture_us": a.capture_us.to_string(),
            "ref_frame": a.ref_frame,
            "aad_hex": hex(&a.bytes()),
            "nonce_hex": hex(&a.nonce()),
        })
    }

    pub fn json() -> Value {
        let (a, b) = pair();
        let (Ok(mut ka), Ok(mut kb)) = (
            PairKeys::derive(&a, &b.public(), MATCH_ID),
            PairKeys::derive(&b, &a.public(), MATCH_ID),
        ) else {
            return Value::Null;
        };
        let media = |kind, number: u32, keyframe| Aad {
            match_id: MATCH_ID,
            kind,
            number,
            keyframe,
            capture_us: 1_763_700_000_000_000 + u64::from(number) * 33_333,
            ref_frame: if keyframe { number } else { number - 1 },
        };
        let samples: [(&str, Aad, Vec<u8>); 4] = [
            (
                "a",
                media(Kind::Video, 0, true),
                (0..300u32).map(|i| (i * 31 % 251) as u8).collect(),
            ),
            ("a", media(Kind::Audio, 17, true), vec![0xfc; 80]),
            ("b", media(Kind::Video, 2, false), vec![]),
            (
                "b",
                Aad::chat(MATCH_ID, 0),
                "hello from b — ça va? 🦊".as_bytes().to_vec(),
            ),
        ];
        let mut out = Vec::new();
        let sealed: Vec<Value> = samples
            .into_iter()
            .map(|(from, aad, plain)| {
                let keys = if from == "a" { &mut ka } else { &mut kb };
                let _ = keys.seal(&aad, &plain, &mut out);
                json!({
                    "from": from,
                    "aad": aad_json(&aad),
                    "plaintext_hex": hex(&plain),
                    "sealed_hex": hex(&out),
                })
            })
            .collect();
        let (a_send, b_send) = (ka.raw().0, kb.raw().0);
        json!({
            "salt_prefix": String::from_utf8_lossy(crate::e2ee::SALT_PREFIX),
            "safety_code_domain": String::from_utf8_lossy(crate::e2ee::SAFETY_CODE_DOMAIN),
            "match_id": MATCH_ID.to_string(),
            "a": { "secret_hex": hex(&SECRET_A), "public_hex": hex(&a.public()), "send_key_hex": hex(&a_send) },
            "b": { "secret_hex": hex(&secret_b()), "public_hex": hex(&b.public()), "send_key_hex": hex(&b_send) },
            "safety_code": {
                "indices": ka.safety_code.0,
                "words": ka.safety_code.words(),
                "emoji": ka.safety_code.emoji(),
            },
            "safety_symbols": SAFETY_SYMBOLS.iter().map(|(e, w)| json!([e, w])).collect::<Vec<_>>(),
            "sealed": sealed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChatFrame, ClientMsg, ServerMsg};

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn every_vector_decodes_back_to_its_value() {
        for v in all() {
            let bytes = unhex(&v.hex);
            let back = match v.kind {
                "ClientMsg" => serde_json::to_value(ClientMsg::decode(&bytes).expect(&v.name)),
                "ServerMsg" => serde_json::to_value(ServerMsg::decode(&bytes).expect(&v.name)),
                "ChatFrame" => serde_json::to_value(ChatFrame::decode(&bytes).expect(&v.name)),
                _ => serde_json::to_value(MediaHeader::read(&bytes).expect(&v.name).0),
            }
            .expect("json");
            assert_eq!(back, v.value, "{}", v.name);
        }
    }

    #[test]
    fn committed_vectors_file_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors.json");
        let fresh = file_json();
        if std::env::var_os("DUET_UPDATE_VECTORS").is_some() {
            std::fs::write(&path, &fresh).expect("write vectors.json");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == fresh,
            "shared/vectors.json is stale: run DUET_UPDATE_VECTORS=1 cargo test -p duet-proto"
        );
    }
}
