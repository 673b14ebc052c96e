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
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
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
