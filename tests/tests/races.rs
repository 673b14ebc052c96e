//! The races found in review (issue 9), over real QUIC: a Next sent while the client still
//! saw its last partner, the presser's media after Next, Leave or Report, and resumes
//! that overlap a live connection or each other. Every delivery check counts what arrived
//! against what was sent.

use duet_client::Client;
use duet_proto::*;
use duet_tests::harness::*;

async fn queued(c: &mut Client) {
    expect_msg(c, "Queued", |m| {
        matches!(m, ServerMsg::Queued { .. }).then_some(())
    })
    .await
    .expect("queued");
}

#[tokio::test]
async fn a_next_for_the_last_pairing_leaves_the_new_one_untouched() {
    let relay = TestRelay::default().await;
    let mut a = relay.client("A", &[]).await;
    let mut b = relay.client("B", &[]).await;
    let ab = matched(&mut a).await.match_id;
    matched(&mut b).await;
    let mut c = relay.client("C", &[]).await;
    queued(&mut c).await;

    // B presses Next: B takes the waiting C, A waits; D arrives and gets A.
    b.send(&ClientMsg::Next { match_id: Some(ab) })
        .await
        .expect("Next");
    assert_eq!(matched(&mut b).await.partner_name, "C");
    let left = expect_msg(&mut a, "PeerLeft", |m| match m {
        ServerMsg::PeerLeft { reason } => Some(*reason),
        _ => None,
    })
    .await
    .expect("A told");
    assert_eq!(left, LeaveReason::Next);
    let mut d = relay.client("D", &[]).await;
    let ad = matched(&mut a).await;
    assert_eq!(ad.partner_name, "D");
    matched(&mut d).await;

    // A's Next and Report, sent while A still saw B, arrive only now, followed on the same
    // (ordered) control stream by a keyframe request for the new pairing.
    a.send(&ClientMsg::Next { match_id: Some(ab) })
        .await
        .expect("stale Next");
    a.send(&ClientMsg::Report(AbuseReport {
        match_id: ab,
        reason: ReportReason::Spam,
    }))
    .await
    .expect("stale Report");
    a.send(&ClientMsg::RequestKeyframe {
        match_id: ad.match_id,
    })
    .await
    .expect("keyframe request");
    // D hears the keyframe request and nothing about the pairing ending before it.
    expect_msg(&mut d, "KeyframeRequested", |m| {
        assert!(
            !matches!(m, ServerMsg::PeerLeft { .. } | ServerMsg::Matched(_)),
            "the new pairing was touched: {m:?}"
        );
        matches!(m, ServerMsg::KeyframeRequested).then_some(())
    })
    .await
    .expect("D still paired");
    // And A and D still talk both ways: every datagram sent arrives.
    exchange_counted(&a, &d, ad.match_id, 0, 20).await;
    exchange_counted(&d, &a, ad.match_id, 100, 20).await;
    let s = relay.status().await;
    assert_eq!(s["reports"], 0, "the stale report was ignored: {s}");
    assert_eq!(s["pairs"], 2);
}

#[derive(Clone, Copy, Debug)]
enum Press {
    Next,
    Leave,
    Report,
}

#[tokio::test]
async fn after_next_leave_or_report_the_pressers_media_reaches_nobody() {
    let relay = TestRelay::default().await;
    for press in [Press::Next, Press::Leave, Press::Report] {
        let tag = format!("{press:?}");
        let mut a = relay.client("A", &[&tag]).await;
        let mut b = relay.client("B", &[&tag]).await;
        let m = matched(&mut a).await.match_id;
        matched(&mut b).await;
        exchange_counted(&a, &b, m, 0, 10).await;

        let before = relay.status().await;
        let msg = match press {
            Press::Next => ClientMsg::Next { match_id: Some(m) },
            Press::Leave => ClientMsg::Leave,
            Press::Report => ClientMsg::Report(AbuseReport {
                match_id: m,
                reason: ReportReason::Harassment,
            }),
        };
        a.send(&msg).await.expect("press");
        // Once B is told, the relay has acted on the press (A's session drops its route
        // before it tells the engine). A has heard nothing back; 50 datagrams on the
        // pairing it just left.
        expect_msg(&mut b, "PeerLeft", |msg| {
            matches!(msg, ServerMsg::PeerLeft { .. }).then_some(())
        })
        .await
        .expect("B told");
        send_burst(&a, m, 1000, 50, b"after I left");

        let not_sent = |s: &serde_json::Value| {
            s["drops"]["no_partner"].as_u64().unwrap_or(0)
                + s["drops"]["stale_match"].as_u64().unwrap_or(0)
        };
        let base = not_sent(&before);
        let after = relay
            .status_until("the presser's 50 datagrams accounted for", |s| {
                not_sent(s) >= base + 50
            })
            .await;
        assert_eq!(not_sent(&after), base + 50, "{press:?}: {after}");
        assert_eq!(
            after["datagrams_queued"], before["datagrams_queued"],
            "{press:?}: nothing was handed to any connection"
        );
        assert_eq!(drain_datagrams(&b, m).await, 0, "{press:?}");
        a.close().await;
        b.close().await;
    }
}

/// A paired with B, and B's `Welcome` (with the resume token the test uses) and match id.
async fn paired_with_token(relay: &TestRelay) -> (Client, Client, Welcome, u64) {
    let mut a = relay.client("A", &[]).await;
    let mut b = Client::connect(&relay.opts()).await.expect("connect");
    let w = b.hello("B", &[], None).await.expect("welcome");
    let m = matched(&mut a).await.match_id;
    matched(&mut b).await;
    (a, b, w, m)
}

#[tokio::test]
async fn resuming_while_the_old_connection_is_live_moves_media_to_the_new_one() {
    let relay = TestRelay::default().await;
    let (a, b, w, m) = paired_with_token(&relay).await;

    let mut b2 = Client::connect(&relay.opts()).await.expect("connect");
    let w2 = within("resume", b2.hello("B", &[], Some(w.resume_token)))
        .await
        .expect("resumed");
    assert!(w2.resumed);
    assert_eq!(matched(&mut b2).await.match_id, m);
    within("old connection closed", b.connection().closed()).await;
    // A's media goes to the new connection from the first datagram on, both ways.
    exchange_counted(&a, &b2, m, 0, 30).await;
    exchange_counted(&b2, &a, m, 100, 30).await;
    let s = relay.status().await;
    assert_eq!(s["matches_made"], 1);
    assert_eq!(s["sessions"], 2, "one session each: {s}");
}

#[tokio::test]
async fn two_resumes_at_once_with_one_token_one_wins() {
    let relay = TestRelay::default().await;
    let (a, _b, w, m) = paired_with_token(&relay).await;

    let mut x = Client::connect(&relay.opts()).await.expect("connect");
    let mut y = Client::connect(&relay.opts()).await.expect("connect");
    let (rx, ry) = tokio::join!(
        x.hello("B", &[], Some(w.resume_token)),
        y.hello("B", &[], Some(w.resume_token)),
    );
    let (mut winner, loser) = match (rx, ry) {
        (Ok(w), Err(e)) => {
            assert!(w.resumed);
            (x, e)
        }
        (Err(e), Ok(w)) => {
            assert!(w.resumed);
            (y, e)
        }
        other => panic!("exactly one resume must win: {other:?}"),
    };
    let text = loser.to_string();
    assert!(
        text.contains("bad_resume_token") || text.contains("BadResumeToken"),
        "the loser is told why: {text}"
    );
    assert_eq!(matched(&mut winner).await.match_id, m);
    exchange_counted(&a, &winner, m, 0, 30).await;
    exchange_counted(&winner, &a, m, 100, 30).await;
    assert_eq!(relay.status().await["sessions"], 2);
}
