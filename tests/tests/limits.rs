//! Limits crossed on purpose, each with a healthy pair beside it that must not notice: a
//! datagram flood at ten times the media cap, a slow receiver (a tenth of the rate it is
//! sent), a client that withholds chat stream credit, a stream flood, 500 connections that
//! finish the QUIC handshake and never send the WebTransport request, and the operator's
//! block list reloaded while sessions run.

use duet_client::Client;
use duet_proto::*;
use duet_tests::harness::*;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_datagram_flood_at_ten_times_the_cap_is_held_at_the_cap() {
    const KBPS: u32 = 400; // 50 000 bytes a second, with a one-second burst
    let mut config = test_config();
    config.max_media_kbps = KBPS;
    let relay = TestRelay::start(config).await;
    let mut healthy = HealthyPair::new(&relay).await;
    let mut x = relay.client("Flooder", &["flood"]).await;
    let mut y = relay.client("Flooded", &["flood"]).await;
    let m = matched(&mut x).await.match_id;
    matched(&mut y).await;

    // Ten times the cap for two seconds: 1 000 datagrams of ~1 000 bytes.
    let cap_bytes_per_s = f64::from(KBPS) * 1000.0 / 8.0;
    let payload = vec![7u8; 990];
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for i in 0..200u32 {
        tick.tick().await;
        send_burst(&x, m, i * 5, 5, &payload);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sent = relay
        .status_until("the flood read by the relay", |s| {
            s["drops"]["rate_limited"].as_u64() > Some(0)
        })
        .await;
    // Everything the relay passed on, it passed within the cap (plus the burst), however
    // fast the flooder sent.
    let forwarded_bytes = sent["bytes_forwarded"].as_u64().expect("number") as f64;
    let allowed = cap_bytes_per_s * (elapsed + 1.0) + 40.0 * 1000.0; // healthy pair's share
    assert!(
        forwarded_bytes <= allowed,
        "forwarded {forwarded_bytes} bytes in {elapsed:.2} s; the cap allows {allowed}"
    );
    let received = drain_datagrams(&y, m).await;
    let most = ((cap_bytes_per_s * (elapsed + 1.0)) / 1000.0).ceil() as usize;
    assert!(
        received <= most,
        "{received} datagrams arrived, at most {most}"
    );
    assert!(received > 0, "the cap is a rate, not a cut-off");
    healthy.still_talks().await;
}

#[tokio::test]
async fn a_stream_flood_costs_only_the_flooder() {
    let relay = TestRelay::default().await;
    let mut healthy = HealthyPair::new(&relay).await;
    let flooder = relay.client("Streams", &[]).await;
    let conn = flooder.connection().clone();
    // Far more streams than the relay allows open at once (16): each open past the limit
    // waits for credit, which the relay gives back only as it drops idle streams.
    let opened = tokio::spawn(async move {
        let mut opened = 0u32;
        for _ in 0..200 {
            let open = async {
                let mut s = conn.open_uni().await.ok()?.await.ok()?;
                s.write_all(&[0x01]).await.ok()?; // half a frame, never finished
                Some(s)
            };
            match tokio::time::timeout(Duration::from_millis(200), open).await {
                Ok(Some(s)) => {
                    opened += 1;
                    std::mem::forget(s); // keep it open: that is the flood
                }
                _ => break, // out of stream credit: the relay's bound held
            }
        }
        opened
    });
    healthy.still_talks().await;
    let opened = within("the flood to stall", opened).await.expect("task");
    assert!(
        opened < 200,
        "the relay bounds open streams ({opened} opened)"
    );
    healthy.still_talks().await;
    assert_eq!(relay.status().await["sessions"], 3);
}

/// QUIC connections that complete the TLS handshake and then say nothing: no HTTP/3
/// SETTINGS, no WebTransport CONNECT.
async fn bare_connection(
    endpoint: &wtransport::quinn::Endpoint,
    config: wtransport::quinn::ClientConfig,
    to: std::net::SocketAddr,
) -> Option<wtransport::quinn::Connection> {
    endpoint
        .connect_with(config, to, "localhost")
        .ok()?
        .await
        .ok()
}

#[tokio::test]
async fn five_hundred_silent_connections_cost_at_most_the_handshake_cap() {
    const CAP: usize = 100;
    let mut config = test_config();
    config.max_handshakes = CAP;
    config.retry_above = CAP; // no Retry: count the cap itself
    config.hello_timeout_ms = 1_500;
    let relay = TestRelay::start(config).await;
    let mut healthy = HealthyPair::new(&relay).await;

    let quic = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(relay.hash())])
        .build()
        .quic_config()
        .clone();
    let endpoint = wtransport::quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr"))
        .expect("endpoint");
    let to = relay.relay.quic_addr;
    let attempts: Vec<_> = (0..500)
        .map(|_| {
            let (endpoint, quic) = (endpoint.clone(), quic.clone());
            tokio::spawn(async move { bare_connection(&endpoint, quic, to).await })
        })
        .collect();
    let mut conns = Vec::new();
    for a in attempts {
        if let Some(c) = within("a connection attempt", a).await.expect("task") {
            conns.push(c);
        }
    }
    let during = relay.status().await;
    assert!(
        during["handshakes"].as_u64() <= Some(CAP as u64),
        "in flight: {during}"
    );
    assert!(
        during["connections_refused"].as_u64() > Some(0),
        "the cap was crossed: {during}"
    );
    assert!(!conns.is_empty(), "some got their handshake");
    healthy.still_talks().await;

    // Each one that got in is closed at the hello timeout, with that reason.
    for c in &conns {
        let why = within("silent connection closed", c.closed()).await;
        assert!(
            matches!(why, wtransport::quinn::ConnectionError::ApplicationClosed(ref a)
                if a.error_code == wtransport::quinn::VarInt::from_u32(ErrorCode::HelloTimeout.to_code())),
            "{why}"
        );
    }
    let after = relay
        .status_until("every slot given back", |s| s["handshakes"] == 0)
        .await;
    assert_eq!(after["sessions"], 2, "{after}");
    healthy.still_talks().await;
}

#[tokio::test]
async fn the_block_list_is_reloaded_without_a_restart() {
    let dir = std::env::temp_dir().join(format!("duet-blocklist-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("blocked.txt");
    std::fs::write(&path, "# nobody yet\n").expect("write");
    let mut config = test_config();
    config.block_list = Some(path.clone());
    let relay = TestRelay::start(config).await;
    let mut healthy = HealthyPair::new(&relay).await;

    // Block loopback itself: sessions already open are not touched, newcomers are told.
    std::fs::write(&path, "127.0.0.0/8\n").expect("write");
    relay
        .relay
        .reload()
        .await
        .expect("reload (what SIGHUP does)");
    let mut c = Client::connect(&relay.opts()).await.expect("handshake");
    let err = c
        .hello("Blocked", &[], None)
        .await
        .expect_err("refused at admission");
    assert!(err.to_string().contains("blocked"), "{err}");
    healthy.still_talks().await;

    std::fs::write(&path, "203.0.113.0/24\n").expect("write");
    relay.relay.reload().await.expect("reload");
    let _back = relay.client("Welcome again", &[]).await;
    healthy.still_talks().await;
    assert!(relay.status().await["errors_sent"]["blocked"].as_u64() >= Some(1));
}

#[tokio::test]
async fn a_slow_receiver_costs_the_relay_a_bounded_buffer_and_nobody_else_anything() {
    use duet_tests::impair::{Profile, RateLimit, Shaper, ShaperConfig};
    let relay = TestRelay::default().await;
    let mut healthy = HealthyPair::new(&relay).await;
    // The receiver's downlink carries 100 kbit/s, a tenth of what its partner sends.
    let shaper = Shaper::start(ShaperConfig::new(
        "127.0.0.1:0".parse().expect("literal"),
        relay.relay.quic_addr,
        Profile::lan().with_rate(RateLimit::with_queue_time(
            100_000,
            Duration::from_millis(100),
        )),
    ))
    .await
    .expect("shaper starts");
    let mut opts = relay.opts();
    opts.relay = format!("https://{}", shaper.local_addr());
    let mut slow = within("connect", Client::connect(&opts))
        .await
        .expect("connects");
    within("hello", slow.hello("Slow", &["slow".to_string()], None))
        .await
        .expect("welcome");
    let mut fast = relay.client("Fast", &["slow"]).await;
    let m = matched(&mut fast).await.match_id;
    matched(&mut slow).await;

    // 1 Mbit/s for three seconds: 375 datagrams of ~1 000 bytes.
    let payload = vec![3u8; 990];
    let mut tick = tokio::time::interval(Duration::from_millis(8));
    for i in 0..375u32 {
        tick.tick().await;
        send_burst(&fast, m, i, 1, &payload);
    }
    healthy.still_talks().await;
    let received = drain_datagrams(&slow, m).await;
    assert!(received < 375 / 2, "the path carried {received} of 375");
    slow.close().await;
    let s = relay
        .status_until("every datagram accounted for", |s| {
            // Live sessions add quinn's sent count at each stats interval, so this holds
            // within a second of the last datagram.
            let n = |k: &str| s[k].as_u64().unwrap_or(0);
            s["sessions"] == 3
                && n("datagrams_forwarded") + n("send_buffer_drops") == n("datagrams_queued")
        })
        .await;
    // Nothing is held for the slow receiver: every datagram queued toward it was either
    // sent (and lost on its slow path) or dropped by quinn's bounded send buffer.
    healthy.still_talks().await;
    // The fast sender's session is untouched: no error was sent to anyone.
    let errors: u64 = s["errors_sent"]
        .as_object()
        .expect("map")
        .values()
        .filter_map(|v| v.as_u64())
        .sum();
    assert_eq!(errors, 0, "{s}");
    drop(fast);
}

/// How many of `lines` a chat writer takes from its queue before a receive window of
/// `window` bytes stops it: every line whose first byte lies inside the window (the last
/// of them is written only in part, and the writer waits on it for credit forever).
fn lines_started_within(window: usize, open: usize, line: usize) -> usize {
    (window - open).div_ceil(line)
}

#[tokio::test]
async fn a_client_that_withholds_chat_credit_pins_one_bounded_queue_until_next() {
    /// The relay's bound on lines queued toward one client (`CHAT_OUTBOX`).
    const CAP: u64 = 32;
    const WINDOW: u32 = 1024;
    const SENT: u64 = 320;
    const ROUNDS: usize = 4;
    let mut config = test_config();
    config.chat_burst = 10_000;
    config.chat_per_minute = 60_000;
    config.skip_cooldown_s = 0; // the same two meet again at once after Next
    let relay = TestRelay::start(config).await;
    let mut healthy = HealthyPair::new(&relay).await;
    healthy.still_talks().await;
    // The healthy pair's own writer (toward its B) is the base.
    let base = relay.status().await;
    let n = |s: &serde_json::Value, k: &str| s[k].as_u64().expect("a number");
    let base_writers = n(&base, "chat_writers");
    assert_eq!(n(&base, "chat_lines_queued"), 0, "{base}");

    let mut opts = relay.opts();
    opts.stream_receive_window = Some(WINDOW);
    opts.read_chat = false;
    let mut w = within("connect", Client::connect(&opts))
        .await
        .expect("connects");
    within(
        "hello",
        w.hello("Withholder", &["withhold".to_string()], None),
    )
    .await
    .expect("welcome");
    let mut p = relay.client("Talker", &["withhold"]).await;
    let text = "x".repeat(900);
    let line_len = encode_frame(&ChatFrame::Line { text: text.clone() }.encode())
        .expect("frame")
        .len();

    for round in 0..ROUNDS {
        let m = matched(&mut w).await.match_id;
        assert_eq!(matched(&mut p).await.match_id, m);
        let open_len = encode_frame(&ChatFrame::Open { match_id: m }.encode())
            .expect("frame")
            .len();
        let taken = lines_started_within(WINDOW as usize, open_len, line_len) as u64;
        let before = relay.status().await;
        for _ in 0..SENT {
            p.send_chat(m, &text).await.expect("chat");
        }
        // The stream the relay opened toward W, held and not read.
        let mut held = within("the relay's chat stream", w.connection().accept_uni())
            .await
            .expect("a chat stream");
        // Every line sent is queued, dropped, or taken by the writer (which the window
        // stops after `taken`).
        let s = relay
            .status_until("every line sent accounted for", |s| {
                n(s, "chat_lines_dropped") - n(&before, "chat_lines_dropped")
                    + n(s, "chat_lines_queued")
                    == SENT - taken
            })
            .await;
        let dropped = n(&s, "chat_lines_dropped") - n(&before, "chat_lines_dropped");
        assert_eq!(n(&s, "chat_lines_queued"), CAP, "held at the cap: {s}");
        assert_eq!(dropped, SENT - taken - CAP, "round {round}: {s}");
        assert_eq!(n(&s, "chat_writers"), base_writers + 1, "one writer: {s}");
        healthy.still_talks().await;

        // Next ends the pairing: its writer and its queued lines are gone.
        w.send(&ClientMsg::Next { match_id: Some(m) })
            .await
            .expect("next");
        let after = relay
            .status_until("the writer and its lines released", |s| {
                n(s, "chat_writers") == base_writers && n(s, "chat_lines_queued") == 0
            })
            .await;
        assert_eq!(
            n(&after, "chat_lines_dropped") - n(&before, "chat_lines_dropped"),
            dropped,
            "lines discarded with the writer are not counted as dropped on the way: {after}"
        );
        // What reached W: the lines inside its window, the last of them cut off where
        // the writer stopped (the stream is finished, not reset).
        let mut reader = duet_proto::frame::FrameReader::new();
        let mut buf = vec![0u8; 4096];
        while let Some(k) = within("the held stream to end", held.read(&mut buf))
            .await
            .expect("read")
        {
            reader.push(&buf[..k]);
        }
        let mut delivered = 0u64;
        while let Ok(Some(frame)) = reader.next_frame() {
            if matches!(ChatFrame::decode(&frame), Ok(ChatFrame::Line { .. })) {
                delivered += 1;
            }
        }
        assert_eq!(
            delivered + 1 + CAP + dropped,
            SENT,
            "delivered {delivered}, one cut off, {CAP} queued, {dropped} dropped"
        );
    }
    healthy.still_talks().await;
    let end = relay.status().await;
    assert_eq!(
        n(&end, "chat_writers"),
        base_writers,
        "no writer left: {end}"
    );
}
