//! Abuse controls over real QUIC: a report moves the reporter on at once; someone
//! reported by enough distinct people is cooled off (told `cooling_off`, and refused the
//! same way on reconnecting with the same visitor id); the operator's admin listener lists
//! sessions and ends one. A healthy pair beside them is untouched.

use duet_client::Client;
use duet_proto::*;
use duet_tests::harness::*;

async fn visitor(relay: &TestRelay, name: &str, id: u8, interests: &[&str]) -> Client {
    let mut c = within("connect", Client::connect(&relay.opts()))
        .await
        .expect("connects");
    within(
        "Welcome",
        c.hello_as(Hello {
            version: PROTOCOL_VERSION,
            name: name.into(),
            interests: interests.iter().map(|s| s.to_string()).collect(),
            resume: None,
            visitor: Some(VisitorId([id; 16])),
            media: duet_client::native_caps(),
        }),
    )
    .await
    .expect("welcome");
    c
}

async fn report(c: &mut Client, match_id: u64) {
    c.send(&ClientMsg::Report(AbuseReport {
        match_id,
        reason: ReportReason::Harassment,
    }))
    .await
    .expect("report");
}

#[tokio::test]
async fn reported_by_two_people_means_cooling_off_even_after_reconnecting() {
    let mut config = test_config();
    config.cooling_reports = 2;
    let relay = TestRelay::start(config).await;
    let mut h1 = visitor(&relay, "Healthy A", 100, &["unique-healthy"]).await;
    let mut h2 = visitor(&relay, "Healthy B", 101, &["unique-healthy"]).await;
    let hm = matched(&mut h1).await.match_id;
    matched(&mut h2).await;

    let mut rude = visitor(&relay, "Rude", 9, &[]).await;
    for (n, reporter) in [(1u8, "First"), (2, "Second")] {
        let mut p = visitor(&relay, reporter, n, &[]).await;
        let m = matched(&mut p).await;
        assert_eq!(m.partner_name, "Rude");
        assert_eq!(matched(&mut rude).await.match_id, m.match_id);
        report(&mut p, m.match_id).await;
        // The reporter moves on at once: back in the queue, no waiting for the other.
        expect_msg(&mut p, "Queued", |msg| {
            assert!(!matches!(msg, ServerMsg::Matched(_)), "{msg:?}");
            matches!(msg, ServerMsg::Queued { .. }).then_some(())
        })
        .await
        .expect("reporter re-queued");
        if n == 1 {
            let why = expect_msg(&mut rude, "PeerLeft", |msg| match msg {
                ServerMsg::PeerLeft { reason } => Some(*reason),
                _ => None,
            })
            .await
            .expect("told");
            assert_eq!(why, LeaveReason::Reported);
        }
        p.close().await;
    }
    let (code, message) = fatal_error(&mut rude).await;
    assert_eq!(code, ErrorCode::CoolingOff, "{message}");
    assert!(message.contains("minutes"), "{message}");

    // Coming back with the same visitor id: told the same, at once.
    let mut again = visitor(&relay, "Rude again", 9, &[]).await;
    let (code, _) = fatal_error(&mut again).await;
    assert_eq!(code, ErrorCode::CoolingOff);

    exchange_counted(&h1, &h2, hm, 0, 20).await;
    exchange_counted(&h2, &h1, hm, 100, 20).await;
    let s = relay.status().await;
    assert_eq!(s["reports"], 2, "{s}");
    assert_eq!(s["cooling_offs"], 1, "{s}");
}

#[tokio::test]
async fn the_admin_listener_lists_sessions_and_ends_one_and_needs_its_token() {
    let mut config = test_config();
    config.admin_addr = Some("127.0.0.1:0".parse().expect("addr"));
    config.admin_token = Some("s3cret".into());
    let relay = TestRelay::start(config).await;
    let admin = relay.relay.admin_addr.expect("admin listener");
    let mut a = relay.client("Ana", &[]).await;
    let mut b = relay.client("Bob", &[]).await;
    matched(&mut a).await;
    matched(&mut b).await;

    let request = |method: &str, path: &str, token: Option<&str>| {
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        format!("{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")
    };
    let send = |req: String| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(admin).await.expect("tcp");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    let denied = within("admin", send(request("GET", "/sessions", None))).await;
    assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");
    let wrong = within("admin", send(request("GET", "/sessions", Some("nope")))).await;
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    let list = within("admin", send(request("GET", "/sessions", Some("s3cret")))).await;
    assert!(list.starts_with("HTTP/1.1 200"), "{list}");
    let body = list.split("\r\n\r\n").nth(1).unwrap_or("");
    let sessions: serde_json::Value = serde_json::from_str(body).expect("JSON");
    let ana = sessions
        .as_array()
        .expect("a list")
        .iter()
        .find(|s| s["name"] == "Ana")
        .expect("Ana listed")
        .clone();
    assert!(ana["match_id"].is_u64(), "{ana}");
    let id = ana["id"].as_u64().expect("id");
    let ended = within(
        "admin",
        send(request(
            "POST",
            &format!("/sessions/{id}/end"),
            Some("s3cret"),
        )),
    )
    .await;
    assert!(ended.starts_with("HTTP/1.1 200"), "{ended}");
    let (code, _) = fatal_error(&mut a).await;
    assert_eq!(code, ErrorCode::Blocked);
    // Bob is told his partner left, and stays.
    expect_msg(&mut b, "PeerLeft", |m| {
        matches!(m, ServerMsg::PeerLeft { .. }).then_some(())
    })
    .await
    .expect("Bob told");
    let metrics = within("admin", send(request("GET", "/metrics", Some("s3cret")))).await;
    assert!(metrics.contains("duet_sessions 1"), "{metrics}");
}
