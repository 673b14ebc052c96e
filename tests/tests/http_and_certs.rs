//! The relay's HTTP side counts what happened, and its development certificate is what
//! browsers need: the fingerprint it serves is the one QUIC presents, and rotating it keeps
//! every open session.

use duet_client::call::{self, CallOptions};
use duet_client::{connect_raw, Client};
use duet_proto::media::MediaHeader;
use duet_proto::*;
use duet_tests::harness::*;
use std::time::Duration;

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

#[tokio::test]
async fn status_and_metrics_count_what_happened() {
    let relay = TestRelay::default().await;
    let (code, body) = relay.http_get("/health").await;
    assert_eq!((code, body.trim()), (200, "ok"));
    let s = relay.status().await;
    for key in [
        "sessions",
        "waiting",
        "pairs",
        "datagrams_forwarded",
        "bytes_forwarded",
        "datagrams_dropped",
        "uptime_s",
    ] {
        assert!(s[key].is_u64(), "/status has {key}: {s}");
    }
    assert_eq!(s["sessions"], 0);

    let mk = |name: &str| {
        let mut o = CallOptions::new(relay.opts(), name);
        o.duration = Duration::from_secs(1);
        o.video_kbps = 300;
        o
    };
    let waiting = relay.client("Waiting", &["only-me"]).await;
    let (a, b) = tokio::join!(call::run(mk("A")), call::run(mk("B")));
    let (a, b) = (a.expect("A"), b.expect("B"));
    let received = a.datagrams_received + b.datagrams_received;
    let s = relay
        .status_until("the call's sessions closed", |s| s["sessions"] == 1)
        .await;
    assert_eq!(s["waiting"], 1, "{s}");
    assert_eq!(s["pairs"], 0);
    assert_eq!(s["matches_made"], 1);
    assert_eq!(s["sessions_opened"], 3);
    let forwarded = s["datagrams_forwarded"].as_u64().expect("number");
    assert!(
        forwarded >= received,
        "forwarded {forwarded} < received {received}"
    );
    assert!(forwarded <= a.datagrams_sent + b.datagrams_sent);
    assert!(s["bytes_forwarded"].as_u64() > Some(forwarded * 50));
    // Nothing was dropped, except that wtransport's own reader may hold at most one
    // datagram per connection (see the relay's forward_media).
    let held = s["drops"]["held_by_transport"].as_u64().unwrap_or(0);
    assert!(held <= 2, "{s}");
    assert_eq!(s["datagrams_dropped"].as_u64(), Some(held), "{s}");

    let (code, text) = relay.http_get("/metrics").await;
    assert_eq!(code, 200);
    assert_eq!(metric(&text, "duet_datagrams_forwarded_total"), forwarded);
    assert_eq!(metric(&text, "duet_sessions"), 1);
    assert_eq!(metric(&text, "duet_waiting"), 1);
    assert_eq!(metric(&text, "duet_matches_made_total"), 1);
    assert!(text.contains("# TYPE duet_bytes_forwarded_total counter"));
    drop(waiting);
}

#[tokio::test]
async fn the_served_fingerprint_is_the_certificate_quic_presents() {
    let relay = TestRelay::default().await;
    let (code, served) = relay.http_get("/certificate.sha256").await;
    assert_eq!(code, 200);
    assert_eq!(served.trim(), relay.relay.fingerprint().expect("dev cert"));
    assert_eq!(served.trim().len(), 64);
    // Trusting exactly that hash works (clients in these tests all do); another does not.
    let mut wrong = relay.opts();
    wrong.cert_hash = Some([7u8; 32]);
    assert!(connect_raw(&wrong).await.is_err());
    // The page learns the QUIC port and hash from /config.json.
    let (_, cfg) = relay.http_get("/config.json").await;
    let cfg: serde_json::Value = serde_json::from_str(&cfg).expect("json");
    assert_eq!(cfg["quic_port"], relay.relay.quic_addr.port());
    assert_eq!(cfg["certificate_sha256"], served.trim());
}

#[tokio::test]
async fn rotating_the_certificate_keeps_open_sessions() {
    let relay = TestRelay::default().await;
    let old_opts = relay.opts();
    let mut a = relay.client("A", &[]).await;
    let mut b = relay.client("B", &[]).await;
    let m = matched(&mut a).await.match_id;
    matched(&mut b).await;

    let new_hash = relay.relay.rotate_certificate().expect("rotates");
    let (_, served) = relay.http_get("/certificate.sha256").await;
    assert_eq!(served.trim(), new_hash);
    assert_ne!(Some(new_hash.clone()), old_opts.cert_hash.map(hex_of));

    // The pair on the old certificate keeps talking.
    let mut buf = Vec::new();
    MediaHeader {
        match_id: m,
        track: Track::Audio,
        seq: 1,
        frame: 1,
        frag_index: 0,
        frag_count: 1,
        keyframe: true,
        capture_us: 0,
    }
    .write_datagram(b"after rotation", &mut buf);
    within("media after rotation", async {
        loop {
            a.send_datagram(&buf).expect("send");
            if let Ok(d) = tokio::time::timeout(Duration::from_millis(500), b.recv_datagram()).await
            {
                if d.expect("recv")[..] == buf[..] {
                    break;
                }
            }
        }
    })
    .await;
    a.send_chat(m, "still here").await.expect("chat");
    assert_eq!(
        within("chat", b.recv_chat()).await.map(|x| x.1).as_deref(),
        Some("still here")
    );

    // New sessions get the new certificate: the old hash no longer works, the new one does.
    assert!(connect_raw(&old_opts).await.is_err());
    let mut c = within("connect with the new hash", Client::connect(&relay.opts()))
        .await
        .expect("connects");
    c.hello("C", &[], None).await.expect("welcome");
    let s = relay.status().await;
    assert_eq!(s["certificate_rotations"], 1);
}

fn hex_of(h: [u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}
