//! Every byte from the network is untrusted: each kind of bad input gets its error code
//! and message, ends only the offending session (or, for datagrams, is dropped and
//! counted), and leaves a healthy pair on the same relay untouched.

use duet_client::{connect_raw, Client};
use duet_proto::media::MediaHeader;
use duet_proto::*;
use duet_tests::harness::*;

/// The relay must refuse with `code` and a message: on the control stream when the client
/// has one open (then the close repeats it), or in the close itself when it has none yet.
async fn expect_refusal(c: &mut Client, code: ErrorCode) -> String {
    let first = within("a refusal", async {
        loop {
            match c.recv().await {
                Ok(ServerMsg::Error(e)) if e.fatal => break Ok((e.code, e.message)),
                Ok(_) => continue,
                Err(e) => break Err(e),
            }
        }
    })
    .await;
    let (message, end) = match first {
        Ok((got, message)) => {
            assert_eq!(got, code, "{message}");
            let end = within("session close", async {
                loop {
                    if let Err(e) = c.recv().await {
                        break e;
                    }
                }
            })
            .await;
            (message, end)
        }
        Err(end) => match &end {
            duet_client::ClientError::Refused { message, .. } => (message.clone(), end),
            other => panic!("expected a refusal with {code}, got {other}"),
        },
    };
    let text = end.to_string();
    assert!(
        text.contains(code.name()),
        "close says {text}, expected {}",
        code.name()
    );
    assert!(!message.is_empty());
    message
}

#[tokio::test]
async fn each_bad_control_input_ends_only_its_own_session_with_a_clear_error() {
    let mut config = test_config();
    config.hello_timeout_ms = 500;
    let relay = TestRelay::start(config).await;
    let mut healthy = HealthyPair::new(&relay).await;
    healthy.still_talks().await;

    // 1. A frame whose body does not decode.
    let mut c = Client::connect(&relay.opts()).await.expect("connect");
    c.write_control(&encode_frame(&[0xff, 0xff, 0xff]).expect("frame"))
        .await
        .expect("write");
    expect_refusal(&mut c, ErrorCode::Malformed).await;
    healthy.still_talks().await;

    // 2. A frame announcing more than the cap: refused before the body is buffered.
    let mut c = Client::connect(&relay.opts()).await.expect("connect");
    c.write_control(&[0xff, 0xff, 0, 0, 0])
        .await
        .expect("write");
    expect_refusal(&mut c, ErrorCode::TooLarge).await;
    healthy.still_talks().await;

    // 3. Next before Hello.
    let mut c = Client::connect(&relay.opts()).await.expect("connect");
    c.send(&ClientMsg::Next { match_id: None })
        .await
        .expect("write");
    let msg = expect_refusal(&mut c, ErrorCode::WrongState).await;
    assert!(msg.contains("Hello"), "{msg}");
    healthy.still_talks().await;

    // 4. Media before Hello.
    let mut c = Client::connect(&relay.opts()).await.expect("connect");
    let mut buf = Vec::new();
    MediaHeader {
        match_id: healthy.match_id,
        track: Track::Video,
        seq: 0,
        frame: 0,
        frag_index: 0,
        frag_count: 1,
        keyframe: true,
        capture_us: 0,
        ref_frame: 0,
    }
    .write_datagram(b"sneaky", &mut buf);
    c.send_datagram(&buf).expect("send");
    let msg = expect_refusal(&mut c, ErrorCode::WrongState).await;
    assert!(msg.contains("media"), "{msg}");
    healthy.still_talks().await;

    // 5. No Hello at all.
    let mut c = Client::connect(&relay.opts()).await.expect("connect");
    expect_refusal(&mut c, ErrorCode::HelloTimeout).await;

    // 6. A protocol version this relay does not speak.
    let mut c = Client::connect(&relay.opts()).await.expect("connect");
    c.send(&ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION + 1,
        name: "Future".into(),
        interests: vec![],
        resume: None,
        visitor: None,
        media: duet_client::native_caps(),
    }))
    .await
    .expect("write");
    let msg = expect_refusal(&mut c, ErrorCode::UnsupportedVersion).await;
    assert!(msg.contains(&PROTOCOL_VERSION.to_string()), "{msg}");

    // 7. A name over the limit.
    let mut c = Client::connect(&relay.opts()).await.expect("connect");
    c.send(&ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        name: "x".repeat(limits::MAX_NAME_BYTES + 1),
        interests: vec![],
        resume: None,
        visitor: None,
        media: duet_client::native_caps(),
    }))
    .await
    .expect("write");
    expect_refusal(&mut c, ErrorCode::TooLarge).await;

    // 8. Hello twice.
    let mut c = relay.client("Twice", &[]).await;
    c.send(&ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        name: "Twice".into(),
        interests: vec![],
        resume: None,
        visitor: None,
        media: duet_client::native_caps(),
    }))
    .await
    .expect("write");
    expect_refusal(&mut c, ErrorCode::WrongState).await;

    // 9. A garbage chat frame after Hello ends the session too.
    let mut c = relay.client("Chatty", &[]).await;
    let conn = c.connection().clone();
    let mut s = conn.open_uni().await.expect("open").await.expect("opened");
    s.write_all(&encode_frame(&[0x09, 0x09]).expect("frame"))
        .await
        .expect("write");
    expect_refusal(&mut c, ErrorCode::Malformed).await;

    healthy.still_talks().await;
    let s = relay.status().await;
    for code in [
        "malformed",
        "too_large",
        "wrong_state",
        "hello_timeout",
        "unsupported_version",
    ] {
        assert!(
            s["errors_sent"][code].as_u64() >= Some(1),
            "{code} counted: {s}"
        );
    }
}

#[tokio::test]
async fn bad_datagrams_are_dropped_and_counted_and_the_session_lives_on() {
    let relay = TestRelay::default().await;
    let mut healthy = HealthyPair::new(&relay).await;
    let mut x = relay.client("X", &[]).await;
    let mut y = relay.client("Y", &[]).await;
    let m = matched(&mut x).await.match_id;
    matched(&mut y).await;

    x.send_datagram(&[0xff; 40]).expect("send"); // undecodable header
    x.send_datagram(&[]).ok(); // empty
    let mut buf = Vec::new();
    MediaHeader {
        match_id: m,
        track: Track::Video,
        seq: 0,
        frame: 0,
        frag_index: 5,
        frag_count: 2, // index past the count
        keyframe: false,
        capture_us: 0,
        ref_frame: 0,
    }
    .write_datagram(b"x", &mut buf);
    x.send_datagram(&buf).expect("send");
    let big = vec![0u8; limits::MAX_MEDIA_DATAGRAM_BYTES + 50];
    let mut big_dg = Vec::new();
    MediaHeader {
        match_id: m,
        track: Track::Video,
        seq: 1,
        frame: 1,
        frag_index: 0,
        frag_count: 1,
        keyframe: false,
        capture_us: 0,
        ref_frame: 0,
    }
    .write_datagram(&big, &mut big_dg);
    x.send_datagram(&big_dg)
        .expect("QUIC carries it; the relay refuses it");

    let s = relay
        .status_until("bad datagrams counted", |s| {
            s["drops"]["malformed"].as_u64() >= Some(2)
                && s["drops"]["too_large"].as_u64() >= Some(1)
        })
        .await;
    assert_eq!(
        s["errors_sent"]["malformed"], 0,
        "datagrams are dropped, not fatal"
    );
    // X and Y are still paired and talking.
    exchange_counted(&x, &y, m, 9, 10).await;
    healthy.still_talks().await;
}

#[tokio::test]
async fn chat_over_the_limit_and_floods_are_refused_without_ending_the_call() {
    let mut config = test_config();
    config.chat_burst = 5;
    config.chat_per_minute = 1;
    let relay = TestRelay::start(config).await;
    let mut a = relay.client("A", &[]).await;
    let mut b = relay.client("B", &[]).await;
    let m = matched(&mut a).await.match_id;
    matched(&mut b).await;

    a.send_chat(m, &"x".repeat(limits::MAX_CHAT_BYTES + 1))
        .await
        .expect("write");
    let (code, msg) = expect_msg(&mut a, "a refusal", |m| match m {
        ServerMsg::Error(e) => Some((e.code, e.message.clone())),
        _ => None,
    })
    .await
    .expect("refused");
    assert_eq!(code, ErrorCode::TooLarge);
    assert!(msg.contains(&limits::MAX_CHAT_BYTES.to_string()), "{msg}");

    // The burst gets through, the flood beyond it is refused, the call goes on.
    for i in 0..10 {
        a.send_chat(m, &format!("line {i}")).await.expect("write");
    }
    let e = expect_msg(&mut a, "rate limit", |m| match m {
        ServerMsg::Error(e) if e.code == ErrorCode::RateLimited => Some(e.clone()),
        _ => None,
    })
    .await
    .expect("flood refused");
    assert!(!e.fatal);
    for i in 0..5 {
        let (_, line) = within("chat", b.recv_chat()).await.expect("line");
        assert_eq!(line, format!("line {i}"));
    }
    assert!(
        b.try_recv_chat().is_none(),
        "nothing past the burst was delivered"
    );
}

#[tokio::test]
async fn a_full_relay_and_a_busy_address_are_refused_with_a_reason() {
    let mut config = test_config();
    config.max_sessions = 2;
    let relay = TestRelay::start(config).await;
    let _a = relay.client("A", &[]).await;
    let _b = relay.client("B", &[]).await;
    let mut c = Client::connect(&relay.opts())
        .await
        .expect("the handshake itself works");
    let msg = expect_refusal(&mut c, ErrorCode::ServerFull).await;
    assert!(msg.contains("full"), "{msg}");

    let mut config = test_config();
    config.max_sessions_per_ip = 1;
    let relay = TestRelay::start(config).await;
    let _a = relay.client("A", &[]).await;
    let mut c = Client::connect(&relay.opts()).await.expect("connect");
    expect_refusal(&mut c, ErrorCode::TooManyFromAddress).await;
    // A refused session frees nothing it did not take: after A leaves, B gets in.
    drop(_a);
    relay.status_until("A gone", |s| s["sessions"] == 0).await;
    let _b = relay.client("B", &[]).await;
    let s = relay.status().await;
    assert_eq!(s["sessions_refused"], 1);
}

#[tokio::test]
async fn a_wrong_path_or_wrong_certificate_gets_nowhere() {
    let relay = TestRelay::default().await;
    let mut opts = relay.opts();
    opts.cert_hash = Some([0u8; 32]);
    assert!(
        connect_raw(&opts).await.is_err(),
        "a wrong fingerprint is not trusted"
    );
}
