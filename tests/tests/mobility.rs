//! Calls survive network changes with the same partner: NAT rebinding (QUIC migration,
//! followed by the relay with nothing keyed by address), and a lost connection resumed with
//! the token from `Welcome` within the grace period. After the grace period the partner is
//! re-queued; a forged or reused token is refused. A phone that moves to a new IP address
//! (a new path for quinn, not a rebinding) keeps its call too.

use duet_client::Client;
use duet_proto::*;
use duet_tests::harness::*;
use duet_tests::impair::{Profile, Shaper, ShaperConfig, ShaperHandle};
use std::time::Duration;

/// Media from `from` reaches `to` (resending while it does not: datagrams are unreliable,
/// and during a handover some are lost by design).
async fn media_flows(from: &Client, to: &Client, match_id: u64, seq: u32) {
    deliver(
        from,
        to,
        &media_datagram(match_id, seq, format!("hello {seq}").as_bytes()),
    )
    .await;
}

async fn through_shaper(relay: &TestRelay) -> ShaperHandle {
    Shaper::start(ShaperConfig::new(
        "127.0.0.1:0".parse().expect("literal"),
        relay.relay.quic_addr,
        Profile::lan(),
    ))
    .await
    .expect("shaper starts")
}

async fn client_via(relay: &TestRelay, shaper: &ShaperHandle, name: &str) -> (Client, Welcome) {
    let mut opts = relay.opts();
    opts.relay = format!("https://{}", shaper.local_addr());
    let mut c = within("connect", Client::connect(&opts))
        .await
        .expect("connects");
    let w = within("hello", c.hello(name, &[], None))
        .await
        .expect("welcome");
    (c, w)
}

fn no_rematch_or_leave(msg: &ServerMsg, match_id: u64) {
    match msg {
        ServerMsg::PeerLeft { .. } => panic!("the partner must not be told {msg:?}"),
        ServerMsg::Matched(m) => assert_eq!(m.match_id, match_id, "no new pairing"),
        _ => {}
    }
}

#[tokio::test]
async fn nat_rebinding_keeps_the_call() {
    let relay = TestRelay::default().await;
    let shaper = through_shaper(&relay).await;
    let mut a = relay.client("Stays", &[]).await;
    let (mut b, _) = client_via(&relay, &shaper, "Moves").await;
    let m = matched(&mut a).await.match_id;
    matched(&mut b).await;
    media_flows(&a, &b, m, 1).await;

    for round in 0..3u32 {
        shaper.rebind().expect("rebind");
        media_flows(&b, &a, m, 10 + round).await;
        media_flows(&a, &b, m, 20 + round).await;
    }
    assert!(shaper.stats().rebinds >= 3);
    // Nothing happened to the call as far as either side was told.
    while let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_millis(1), a.recv()).await {
        no_rematch_or_leave(&msg, m);
    }
    while let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_millis(1), b.recv()).await {
        no_rematch_or_leave(&msg, m);
    }
    let s = relay.status().await;
    assert_eq!(s["matches_made"], 1);
    assert_eq!(s["pairs"], 1);
}

#[tokio::test]
async fn a_client_that_moves_to_a_new_socket_keeps_the_call() {
    let relay = TestRelay::default().await;
    let mut a = relay.client("Stays", &[]).await;
    let mut opts = relay.opts();
    opts.mobile = true;
    let mut b = within("connect", Client::connect(&opts))
        .await
        .expect("connects");
    within("hello", b.hello("Phone", &[], None))
        .await
        .expect("welcome");
    let m = matched(&mut a).await.match_id;
    matched(&mut b).await;
    media_flows(&a, &b, m, 1).await;
    for round in 0..3u32 {
        let new_addr = b.migrate().await.expect("migrates");
        assert_ne!(new_addr.port(), 0);
        media_flows(&b, &a, m, 10 + round).await;
        media_flows(&a, &b, m, 20 + round).await;
    }
    while let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_millis(1), a.recv()).await {
        no_rematch_or_leave(&msg, m);
    }
    let s = relay.status().await;
    assert_eq!(s["matches_made"], 1);
    assert_eq!(s["pairs"], 1);

    // The same through the synthetic call: a call that moves every 300 ms loses nothing
    // that matters and never re-matches.
    let mk = |name: &str, every: Option<Duration>| {
        let mut o = duet_client::call::CallOptions::new(relay.opts(), name);
        o.duration = Duration::from_secs(2);
        o.video_kbps = 300;
        o.migrate_every = every;
        o
    };
    a.close().await;
    b.close().await;
    relay
        .status_until("both gone", |s| s["sessions"] == 0)
        .await;
    let (x, y) = tokio::join!(
        duet_client::call::run(mk("X", Some(Duration::from_millis(300)))),
        duet_client::call::run(mk("Y", None))
    );
    let (x, y) = (x.expect("X"), y.expect("Y"));
    assert!(x.migrations >= 3, "{x:?}");
    assert_eq!((x.matches, y.matches), (1, 1));
    assert!(x.errors.is_empty() && y.errors.is_empty(), "{x:?} {y:?}");
    assert!(
        y.video_frames_received > 0 && x.video_frames_received > 0,
        "{x:?} {y:?}"
    );
    // The keys survive the moves: one pairing, one safety code, every frame opened.
    assert_eq!(x.safety_codes.len(), 1, "{x:?}");
    assert_eq!(x.safety_codes, y.safety_codes);
    assert_eq!(
        (x.frames_unopened, y.frames_unopened),
        (0, 0),
        "{x:?} {y:?}"
    );
}

/// Sends `n` datagrams from `from` and counts how many reach `to` within the patience
/// (no resending: the count is what arrived of what was sent).
async fn arrivals(from: &Client, to: &Client, match_id: u64, first_seq: u32, n: u32) -> u32 {
    for seq in first_seq..first_seq + n {
        from.send_datagram(&media_datagram(match_id, seq, b"after the move"))
            .expect("send");
    }
    let mut got = 0;
    while got < n {
        match tokio::time::timeout(Duration::from_secs(5), to.recv_datagram()).await {
            Ok(Ok(_)) => got += 1,
            _ => break,
        }
    }
    got
}

#[tokio::test]
async fn a_phone_that_moves_to_a_new_ip_address_keeps_the_call() {
    let relay = TestRelay::default().await;
    let mut a = relay.client("Stays", &[]).await;
    let mut opts = relay.opts();
    opts.mobile = true;
    let mut b = within("connect", Client::connect(&opts))
        .await
        .expect("connects");
    within("hello", b.hello("Phone", &[], None))
        .await
        .expect("welcome");
    let m = matched(&mut a).await.match_id;
    matched(&mut b).await;
    media_flows(&a, &b, m, 1).await;
    for (round, ip) in [[127, 0, 0, 2], [127, 0, 0, 3], [127, 0, 0, 2]]
        .into_iter()
        .enumerate()
    {
        let round = round as u32;
        let moved = within("migrate", b.migrate_to(std::net::IpAddr::from(ip)))
            .await
            .expect("migrates");
        assert_eq!(moved.ip(), std::net::IpAddr::from(ip));
        // The first packets from the new address carry the path to the relay (which
        // validates it); after that, nothing sent either way is lost on loopback.
        media_flows(&b, &a, m, 100 * round + 10).await;
        assert_eq!(
            arrivals(&b, &a, m, 100 * round + 20, 20).await,
            20,
            "phone to partner, move {round}"
        );
        assert_eq!(
            arrivals(&a, &b, m, 100 * round + 50, 20).await,
            20,
            "partner to phone, move {round}"
        );
    }
    while let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_millis(1), a.recv()).await {
        no_rematch_or_leave(&msg, m);
    }
    while let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_millis(1), b.recv()).await {
        no_rematch_or_leave(&msg, m);
    }
    let s = relay.status().await;
    assert_eq!(
        (
            s["matches_made"].clone(),
            s["pairs"].clone(),
            s["sessions"].clone()
        ),
        (1.into(), 1.into(), 2.into())
    );
    // A client that was not connected as mobile cannot move.
    assert!(a
        .migrate_to(std::net::IpAddr::from([127, 0, 0, 2]))
        .await
        .is_err());
}

#[tokio::test]
async fn a_lost_connection_resumes_with_its_token_and_the_same_partner() {
    let mut config = test_config();
    config.idle_timeout_ms = 1_500;
    config.resume_grace_s = 30;
    let relay = TestRelay::start(config).await;
    let shaper = through_shaper(&relay).await;
    let mut a = relay.client("Stays", &[]).await;
    let (mut b, welcome) = client_via(&relay, &shaper, "Phone").await;
    let m = matched(&mut a).await.match_id;
    matched(&mut b).await;

    // The phone's network dies; the relay notices within its idle timeout.
    shaper.blackout(true);
    expect_msg(&mut a, "PeerReconnecting", |msg| {
        no_rematch_or_leave(msg, m);
        matches!(msg, ServerMsg::PeerReconnecting).then_some(())
    })
    .await
    .expect("partner told");
    drop(b); // the old process is gone

    // A new process (or a new network) comes back with the token.
    let mut b2 = within("connect", Client::connect(&relay.opts()))
        .await
        .expect("connects");
    let w2 = within("resume", b2.hello("Phone", &[], Some(welcome.resume_token)))
        .await
        .expect("resumed");
    assert!(w2.resumed);
    assert_eq!(w2.session_id, welcome.session_id);
    assert_ne!(
        w2.resume_token, welcome.resume_token,
        "tokens are single-use"
    );
    let again = matched(&mut b2).await;
    assert_eq!(again.match_id, m, "same pairing");
    assert_eq!(again.partner_name, "Stays");
    expect_msg(&mut a, "PeerReturned", |msg| {
        no_rematch_or_leave(msg, m);
        matches!(msg, ServerMsg::PeerReturned).then_some(())
    })
    .await
    .expect("partner told");
    media_flows(&a, &b2, m, 1).await;
    media_flows(&b2, &a, m, 2).await;
    b2.send_chat(m, "back!").await.expect("chat");
    assert_eq!(
        within("chat", a.recv_chat()).await.map(|x| x.1).as_deref(),
        Some("back!")
    );
    a.send_chat(m, "welcome back").await.expect("chat");
    assert_eq!(
        within("chat", b2.recv_chat()).await.map(|x| x.1).as_deref(),
        Some("welcome back")
    );

    // Resuming before the relay noticed anything (a fast network switch): the new
    // connection takes over at once and the old one is closed.
    let mut b3 = within("connect", Client::connect(&relay.opts()))
        .await
        .expect("connects");
    let w3 = within("resume", b3.hello("Phone", &[], Some(w2.resume_token)))
        .await
        .expect("resumed while the old connection was still up");
    assert!(w3.resumed);
    assert_eq!(matched(&mut b3).await.match_id, m);
    within("old connection closed", b2.connection().closed()).await;
    expect_msg(&mut a, "PeerReturned", |msg| {
        no_rematch_or_leave(msg, m);
        matches!(msg, ServerMsg::PeerReturned).then_some(())
    })
    .await
    .expect("partner re-pointed");
    media_flows(&a, &b3, m, 3).await;
    media_flows(&b3, &a, m, 4).await;
    let s = relay.status().await;
    assert_eq!(s["matches_made"], 1, "never re-matched");
}

#[tokio::test]
async fn after_the_grace_period_the_partner_is_requeued_and_the_token_is_dead() {
    let mut config = test_config();
    config.idle_timeout_ms = 1_000;
    config.resume_grace_s = 1;
    let relay = TestRelay::start(config).await;
    let shaper = through_shaper(&relay).await;
    let mut a = relay.client("Stays", &[]).await;
    let (mut b, welcome) = client_via(&relay, &shaper, "Gone").await;
    matched(&mut a).await;
    matched(&mut b).await;
    shaper.blackout(true);
    expect_msg(&mut a, "PeerReconnecting", |m| {
        matches!(m, ServerMsg::PeerReconnecting).then_some(())
    })
    .await
    .expect("reconnecting first");
    let reason = expect_msg(&mut a, "PeerLeft", |m| match m {
        ServerMsg::PeerLeft { reason } => Some(*reason),
        _ => None,
    })
    .await
    .expect("then left");
    assert_eq!(reason, LeaveReason::Disconnected);
    expect_msg(&mut a, "Queued", |m| {
        matches!(m, ServerMsg::Queued { .. }).then_some(())
    })
    .await
    .expect("re-queued");

    let mut late = within("connect", Client::connect(&relay.opts()))
        .await
        .expect("connects");
    let err = late
        .hello("Gone", &[], Some(welcome.resume_token))
        .await
        .expect_err("too late");
    assert!(
        matches!(&err, duet_client::ClientError::Server(e) if e.code == ErrorCode::BadResumeToken),
        "{err}"
    );
}

#[tokio::test]
async fn forged_and_reused_tokens_are_refused() {
    let relay = TestRelay::default().await;
    let mut a = relay.client("A", &[]).await;
    let mut forged = within("connect", Client::connect(&relay.opts()))
        .await
        .expect("connects");
    let err = forged
        .hello("Mallory", &[], Some(ResumeToken([0x42; 16])))
        .await
        .expect_err("forged");
    assert!(
        matches!(&err, duet_client::ClientError::Server(e) if e.code == ErrorCode::BadResumeToken && e.fatal),
        "{err}"
    );

    // A token works once; the second use is refused.
    let mut b = within("connect", Client::connect(&relay.opts()))
        .await
        .expect("connects");
    let wb = b.hello("B", &[], None).await.expect("welcome");
    let mut b2 = within("connect", Client::connect(&relay.opts()))
        .await
        .expect("connects");
    assert!(
        b2.hello("B", &[], Some(wb.resume_token))
            .await
            .expect("first use")
            .resumed
    );
    let mut b3 = within("connect", Client::connect(&relay.opts()))
        .await
        .expect("connects");
    let err = b3
        .hello("B", &[], Some(wb.resume_token))
        .await
        .expect_err("replayed");
    assert!(
        matches!(&err, duet_client::ClientError::Server(e) if e.code == ErrorCode::BadResumeToken),
        "{err}"
    );
    matched(&mut a).await; // A and B were paired all along
}

#[tokio::test]
async fn the_client_library_resumes_by_itself_when_the_network_returns() {
    let mut config = test_config();
    config.idle_timeout_ms = 800;
    let relay = TestRelay::start(config).await;
    let shaper = through_shaper(&relay).await;
    let mut a = relay.client("Stays", &[]).await;
    let mut opts = relay.opts();
    opts.relay = format!("https://{}", shaper.local_addr());
    opts.idle_timeout = Duration::from_millis(800);
    let mut b = within("connect", Client::connect(&opts))
        .await
        .expect("connects");
    let w = within("hello", b.hello("Tunnel", &[], None))
        .await
        .expect("welcome");
    let m = matched(&mut a).await.match_id;
    matched(&mut b).await;

    shaper.blackout(true);
    // The phone's own connection dies within its idle timeout...
    within("the old connection to die", async {
        while b.recv().await.is_ok() {}
    })
    .await;
    // ...and it keeps trying while the network is down; the network comes back once
    // the relay has noticed too.
    let resuming = tokio::spawn({
        let opts = opts.clone();
        async move {
            duet_client::resume(&opts, "Tunnel", w.resume_token, Duration::from_secs(20)).await
        }
    });
    expect_msg(&mut a, "PeerReconnecting", |msg| {
        matches!(msg, ServerMsg::PeerReconnecting).then_some(())
    })
    .await
    .expect("partner told");
    shaper.blackout(false);
    let (mut b2, w2) = within("resume", resuming)
        .await
        .expect("task")
        .expect("resumed");
    assert!(w2.resumed);
    assert_eq!(matched(&mut b2).await.match_id, m);
    media_flows(&a, &b2, m, 1).await;
    media_flows(&b2, &a, m, 2).await;
}
