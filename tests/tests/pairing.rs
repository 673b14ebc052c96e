//! Strangers get paired and talk: names, media both ways byte for byte, chat both ways,
//! Next, and a partner who leaves. Real relay, real QUIC on loopback.

use duet_client::call::{self, CallOptions};
use duet_client::Client;
use duet_proto::media::MediaHeader;
use duet_proto::*;
use duet_tests::harness::*;
use std::collections::HashSet;
use std::time::Duration;

/// Sends `count` datagrams from `from` one at a time, each with a distinct payload, and
/// checks `to` receives each exactly as sent. Datagrams are unreliable by contract, so a
/// datagram not seen within half a second is sent again (never observed on loopback).
async fn exchange(
    from: &duet_client::Client,
    to: &duet_client::Client,
    match_id: u64,
    count: u32,
    tag: u8,
) {
    let mut buf = Vec::new();
    for i in 0..count {
        let header = MediaHeader {
            match_id,
            track: if i % 2 == 0 {
                Track::Video
            } else {
                Track::Audio
            },
            seq: i,
            frame: i,
            frag_index: 0,
            frag_count: 1,
            keyframe: i == 0,
            capture_us: 1,
            ref_frame: i.saturating_sub(1),
        };
        let payload: Vec<u8> = (0..(100 + i * 30))
            .map(|b| (b as u8) ^ tag ^ (i as u8))
            .collect();
        header.write_datagram(&payload, &mut buf);
        let got = within("a forwarded datagram", async {
            loop {
                from.send_datagram(&buf).expect("send");
                if let Ok(got) =
                    tokio::time::timeout(Duration::from_millis(500), to.recv_datagram()).await
                {
                    break got.expect("receive");
                }
            }
        })
        .await;
        assert_eq!(&got[..], &buf[..], "datagram {i} arrived changed");
    }
}

#[tokio::test]
async fn two_strangers_see_names_and_exchange_media_and_chat_both_ways() {
    let relay = TestRelay::default().await;
    let mut ana = relay.client("Ana", &[]).await;
    let queued = expect_msg(&mut ana, "Queued", |m| match m {
        ServerMsg::Queued { waiting } => Some(*waiting),
        _ => None,
    })
    .await
    .expect("Ana waits");
    assert_eq!(queued, 1);
    let mut bob = relay.client("Bob 🎸", &[]).await;
    let a = matched(&mut ana).await;
    let b = matched(&mut bob).await;
    assert_eq!(a.partner_name, "Bob 🎸");
    assert_eq!(b.partner_name, "Ana");
    assert_eq!(a.match_id, b.match_id);
    // Both sides are native clients: VP8 each way, and each knows what it will receive.
    assert_eq!(b.send_codec, Some(VideoCodec::Vp8));
    assert_eq!(b.recv_codec, Some(VideoCodec::Vp8));

    exchange(&ana, &bob, a.match_id, 20, 0xA5).await;
    exchange(&bob, &ana, b.match_id, 20, 0x5A).await;

    ana.send_chat(a.match_id, "hi Bob — ça va? 👋")
        .await
        .expect("chat");
    let (m, text) = within("chat to Bob", bob.recv_chat()).await.expect("line");
    assert_eq!((m, text.as_str()), (a.match_id, "hi Bob — ça va? 👋"));
    let long = "é".repeat(limits::MAX_CHAT_BYTES / 2);
    bob.send_chat(b.match_id, &long).await.expect("chat");
    let (_, text) = within("chat to Ana", ana.recv_chat()).await.expect("line");
    assert_eq!(text, long, "a line at the size limit arrives whole");

    // The relay's counters saw it.
    let s = relay
        .status_until("forwarded counters", |s| {
            s["datagrams_forwarded"].as_u64() >= Some(40)
        })
        .await;
    assert_eq!(s["pairs"], 1);
    assert!(s["chat_lines_forwarded"].as_u64() >= Some(2));
}

#[tokio::test]
async fn a_synthetic_call_delivers_every_frame_intact() {
    let relay = TestRelay::default().await;
    let mk = |name: &str| {
        let mut o = CallOptions::new(relay.opts(), name);
        o.duration = Duration::from_secs(2);
        o.video_kbps = 500;
        o
    };
    let (a, b) = tokio::join!(call::run(mk("Ana")), call::run(mk("Bob")));
    let (a, b) = (a.expect("Ana's call"), b.expect("Bob's call"));
    for (me, other) in [(&a, &b), (&b, &a)] {
        assert_eq!(me.partner.as_deref(), Some(other.name.as_str()));
        assert_eq!(me.frames_corrupt, 0, "{me:?}");
        assert!(
            me.video_frames_received > 0 && me.audio_frames_received > 0,
            "{me:?}"
        );
        assert!(me.frames_received <= other.frames_sent);
        assert!(me.chat_received > 0, "{me:?}");
        assert!(me.latency_ms.is_some());
        assert!(me.errors.is_empty(), "{:?}", me.errors);
        // Sealed end to end: both sides agreed the same keys, and everything opened.
        assert!(me.e2ee, "{me:?}");
        assert_eq!((me.frames_unopened, me.chat_unopened), (0, 0), "{me:?}");
        assert!(me.safety_code.is_some(), "{me:?}");
        assert_eq!(
            me.safety_code, other.safety_code,
            "both see one safety code"
        );
    }
}

#[tokio::test]
async fn next_pairs_with_the_waiting_stranger_and_the_old_partner_reaches_nobody() {
    let relay = TestRelay::default().await;
    let mut a = relay.client("A", &[]).await;
    let mut b = relay.client("B", &[]).await;
    let ab = matched(&mut a).await;
    matched(&mut b).await;
    let mut c = relay.client("C", &[]).await;
    expect_msg(&mut c, "C queued", |m| {
        matches!(m, ServerMsg::Queued { .. }).then_some(())
    })
    .await
    .expect("C waits");

    a.send(&ClientMsg::Next {
        match_id: Some(ab.match_id),
    })
    .await
    .expect("Next");
    let ac = matched(&mut a).await;
    assert_eq!(
        ac.partner_name, "C",
        "A is paired with the waiting C, not B again"
    );
    assert_ne!(ac.match_id, ab.match_id);
    let ca = matched(&mut c).await;
    assert_eq!(ca.partner_name, "A");
    let reason = expect_msg(&mut b, "PeerLeft", |m| match m {
        ServerMsg::PeerLeft { reason } => Some(*reason),
        _ => None,
    })
    .await
    .expect("B is told");
    assert_eq!(reason, LeaveReason::Next);
    expect_msg(&mut b, "B re-queued", |m| {
        matches!(m, ServerMsg::Queued { .. }).then_some(())
    })
    .await
    .expect("B waits again");

    // B keeps sending on the old pairing: the relay drops all of it.
    let before = relay.status().await;
    let mut buf = Vec::new();
    for seq in 0..50u32 {
        MediaHeader {
            match_id: ab.match_id,
            track: Track::Video,
            seq,
            frame: seq,
            frag_index: 0,
            frag_count: 1,
            keyframe: false,
            capture_us: 0,
            ref_frame: 0,
        }
        .write_datagram(b"from the last call", &mut buf);
        b.send_datagram(&buf).expect("send");
    }
    // All 50 are dropped.
    let dropped = |s: &serde_json::Value| s["drops"]["no_partner"].as_u64().unwrap_or(0);
    let base = dropped(&before);
    let after = relay
        .status_until("B's datagrams dropped", |s| dropped(s) == base + 50)
        .await;
    assert_eq!(after["datagrams_forwarded"], before["datagrams_forwarded"]);
    // A and C still talk; nothing of B's shows up on either side.
    exchange(&a, &c, ac.match_id, 3, 1).await;
    for side in [&a, &c] {
        while let Ok(Ok(d)) =
            tokio::time::timeout(Duration::from_millis(1), side.recv_datagram()).await
        {
            assert_ne!(media::peek_match_id(&d), Some(ab.match_id));
        }
    }
    b.close().await;
    relay.status_until("B gone", |s| s["sessions"] == 2).await;
}

#[tokio::test]
async fn a_partner_who_closes_is_noticed_and_the_other_requeued() {
    let relay = TestRelay::default().await;
    let mut a = relay.client("A", &[]).await;
    let b = relay.client("B", &[]).await;
    matched(&mut a).await;
    // Closing the connection outright (no Leave, as a closed tab does): the relay sees the
    // close at once, and a deliberate close is leaving, not a network failure to wait out.
    b.connection()
        .close(wtransport::VarInt::from_u32(0), b"closing the tab");
    let reason = expect_msg(&mut a, "PeerLeft", |m| match m {
        ServerMsg::PeerLeft { reason } => Some(*reason),
        _ => None,
    })
    .await
    .expect("A is told");
    assert_eq!(reason, LeaveReason::Left);
    expect_msg(&mut a, "re-queued", |m| {
        matches!(m, ServerMsg::Queued { .. }).then_some(())
    })
    .await
    .expect("A waits again");
    let mut c = relay.client("C", &[]).await;
    assert_eq!(matched(&mut c).await.partner_name, "A");

    // Stop (Leave) tells the partner "left" and keeps the leaver's session idle.
    c.send(&ClientMsg::Leave).await.expect("Leave");
    let reason = expect_msg(&mut a, "PeerLeft", |m| match m {
        ServerMsg::PeerLeft { reason } => Some(*reason),
        _ => None,
    })
    .await
    .expect("A is told");
    assert_eq!(reason, LeaveReason::Left);
    relay
        .status_until("C idle, A waiting", |s| {
            s["waiting"] == 1 && s["sessions"] == 2
        })
        .await;
    // Next from idle re-joins the queue (and C may meet A again only after the cooldown).
    c.send(&ClientMsg::Next { match_id: None })
        .await
        .expect("Next");
    relay
        .status_until("both waiting", |s| s["waiting"] == 2)
        .await;
}

#[tokio::test]
async fn shared_interests_pair_first_and_the_wait_for_them_is_bounded() {
    let mut config = test_config();
    config.interest_wait_ms = 400;
    let relay = TestRelay::start(config).await;
    let mut plain = relay.client("Plain", &[]).await;
    expect_msg(&mut plain, "queued", |m| {
        matches!(m, ServerMsg::Queued { .. }).then_some(())
    })
    .await
    .expect("queued");
    let mut chess1 = relay.client("Chess1", &["chess", "go"]).await;
    expect_msg(&mut chess1, "queued", |m| {
        matches!(m, ServerMsg::Queued { .. }).then_some(())
    })
    .await
    .expect("Chess1 holds out for a shared interest rather than pairing with Plain");
    let mut chess2 = relay.client("Chess2", &["jazz", "chess"]).await;
    let m = matched(&mut chess2).await;
    assert_eq!(m.partner_name, "Chess1");
    assert_eq!(m.shared_interests, vec!["chess".to_string()]);
    assert_eq!(matched(&mut chess1).await.partner_name, "Chess2");

    // Nobody else likes jazz: after the bounded wait, the jazz fan gets the stranger.
    let mut jazz = relay.client("Jazz", &["jazz"]).await;
    expect_msg(&mut jazz, "queued", |m| {
        matches!(m, ServerMsg::Queued { .. }).then_some(())
    })
    .await
    .expect("Jazz waits first");
    let m = matched(&mut jazz).await;
    assert_eq!(m.partner_name, "Plain");
    assert!(m.shared_interests.is_empty());
    assert_eq!(matched(&mut plain).await.partner_name, "Jazz");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_at_once_end_in_one_hundred_pairs_that_all_talk() {
    const N: usize = 200;
    let relay = TestRelay::default().await;
    let opts = relay.opts();
    let mut tasks = Vec::new();
    for i in 0..N {
        let opts = opts.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = duet_client::Client::connect(&opts).await.expect("connect");
            let name = format!("user{i}");
            c.hello(&name, &[], None).await.expect("hello");
            let m = matched(&mut c).await;
            // Say something on the media path and hear the partner.
            let mut buf = Vec::new();
            MediaHeader {
                match_id: m.match_id,
                track: Track::Audio,
                seq: 0,
                frame: 0,
                frag_index: 0,
                frag_count: 1,
                keyframe: true,
                capture_us: 0,
                ref_frame: 0,
            }
            .write_datagram(name.as_bytes(), &mut buf);
            let heard = loop {
                c.send_datagram(&buf).expect("send");
                if let Ok(d) =
                    tokio::time::timeout(Duration::from_millis(500), c.recv_datagram()).await
                {
                    let d = d.expect("datagram");
                    let (_, off) = MediaHeader::read(&d).expect("header");
                    break String::from_utf8_lossy(&d[off..]).into_owned();
                }
            };
            // Keep saying it a while in case our first datagram was the one lost: the
            // partner may still be listening. Bounded, and ends with the test.
            let conn = c.connection().clone();
            tokio::spawn(async move {
                for _ in 0..150 {
                    if conn.send_datagram(&buf).is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
            (name, m, heard, c)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(
            within("200 clients paired and talking", t)
                .await
                .expect("client task"),
        );
    }
    let mut by_match: std::collections::HashMap<u64, Vec<(String, String, String)>> =
        Default::default();
    for (name, m, heard, _) in &results {
        by_match.entry(m.match_id).or_default().push((
            name.clone(),
            m.partner_name.clone(),
            heard.clone(),
        ));
    }
    assert_eq!(by_match.len(), N / 2, "100 pairings");
    let mut seen = HashSet::new();
    for members in by_match.values() {
        assert_eq!(members.len(), 2, "exactly two people per pairing");
        let (x, y) = (&members[0], &members[1]);
        assert_eq!(x.1, y.0, "x's partner is y");
        assert_eq!(y.1, x.0, "y's partner is x");
        assert_eq!(x.2, y.0, "x heard y's media");
        assert_eq!(y.2, x.0, "y heard x's media");
        assert!(
            seen.insert(x.0.clone()) && seen.insert(y.0.clone()),
            "nobody in two pairs"
        );
    }
    let s = relay.status().await;
    assert_eq!(s["pairs"], 100);
    assert_eq!(s["sessions"], 200);
}

#[tokio::test]
async fn a_codec_withdrawn_with_caps_is_not_chosen_for_the_next_partner() {
    use VideoCodec::*;
    let relay = TestRelay::default().await;
    let caps = |decode: &[VideoCodec], encode: &[VideoCodec]| MediaCaps {
        decode: decode.to_vec(),
        encode: encode.to_vec(),
        hardware_encode: vec![],
    };
    let hello = |name: &str, media: MediaCaps| Hello {
        version: PROTOCOL_VERSION,
        name: name.into(),
        interests: vec![],
        resume: None,
        visitor: None,
        media,
    };
    let connect = |name: &'static str, media: MediaCaps| {
        let relay = &relay;
        let hello = hello(name, media);
        async move {
            let mut c = within("connect", Client::connect(&relay.opts()))
                .await
                .expect("connects");
            within("Welcome", c.hello_as(hello)).await.expect("welcome");
            c
        }
    };
    let vp9_first = caps(&[Vp8, Vp9], &[Vp9, Vp8]);
    let mut a = connect("A", vp9_first.clone()).await;
    let mut b = connect("B", caps(&[Vp8, Vp9], &[Vp8])).await;
    let ab = matched(&mut a).await;
    assert_eq!(ab.send_codec, Some(Vp9), "A encodes its first choice");
    assert_eq!(matched(&mut b).await.recv_codec, Some(Vp9));

    // VP9 failed to decode on B's machine: B withdraws it, then moves on.
    b.send(&ClientMsg::Caps(caps(&[Vp8], &[Vp8])))
        .await
        .expect("Caps");
    b.send(&ClientMsg::Next {
        match_id: Some(ab.match_id),
    })
    .await
    .expect("Next");
    a.send(&ClientMsg::Leave).await.expect("Leave");
    relay
        .status_until("B alone in the queue", |s| s["waiting"] == 1)
        .await;
    let mut c = connect("C", vp9_first).await;
    let bc = matched(&mut c).await;
    assert_eq!(bc.partner_name, "B");
    assert_eq!(bc.send_codec, Some(Vp8), "C is not sent to B in VP9 again");
    let b_sees = expect_msg(&mut b, "Matched with C", |m| match m {
        ServerMsg::Matched(m) if m.partner_name == "C" => Some(m.clone()),
        _ => None,
    })
    .await
    .expect("B is paired with C");
    assert_eq!(b_sees.recv_codec, Some(Vp8));
}
