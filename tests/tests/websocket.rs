//! The WebSocket fallback (duet_proto::ws) against a real relay: a WebSocket client and a
//! QUIC client pair and talk both ways; a WebSocket receiver that stops reading for 2 s
//! leaves the relay's heap flat, gets only a bounded backlog after, and video from a
//! keyframe; bad input is refused with a code; with a healthy pair beside, and a session
//! lost on a WebSocket resumes over QUIC with its token.

use duet_proto::media::MediaHeader;
use duet_proto::ws::{CLOSE_NORMAL, KIND_CHAT, KIND_CONTROL, KIND_MEDIA};
use duet_proto::*;
use duet_tests::harness::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// What a WebSocket client receives, decoded.
#[derive(Debug)]
enum In {
    Control(ServerMsg),
    Chat(ChatFrame),
    Media(Vec<u8>),
    Closed(Option<u16>),
}

/// A test's WebSocket client: the wire format by hand, so the test checks the format too.
struct WsClient {
    ws: WebSocketStream<TcpStream>,
}

impl WsClient {
    /// Connects to the relay's `/ws`. `rcvbuf`: a small TCP receive buffer, for a client
    /// whose socket backs up quickly when it stops reading.
    async fn connect(relay: &TestRelay, rcvbuf: Option<usize>) -> WsClient {
        Self::connect_to(relay.relay.http_addr, rcvbuf).await
    }

    async fn connect_to(addr: std::net::SocketAddr, rcvbuf: Option<usize>) -> WsClient {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Some(size) = rcvbuf {
            socket.set_recv_buffer_size(size as u32).expect("rcvbuf");
        }
        let tcp = within("TCP connect", socket.connect(addr))
            .await
            .expect("connects");
        let (ws, _) = within(
            "WebSocket upgrade",
            tokio_tungstenite::client_async(format!("ws://{addr}/ws"), tcp),
        )
        .await
        .expect("upgrades");
        WsClient { ws }
    }

    async fn send_raw(&mut self, kind: u8, body: &[u8]) {
        let mut m = vec![kind];
        m.extend_from_slice(body);
        self.ws.send(Message::binary(m)).await.expect("send");
    }

    async fn send(&mut self, msg: &ClientMsg) {
        self.send_raw(KIND_CONTROL, &msg.encode()).await;
    }

    async fn hello(&mut self, name: &str, resume: Option<ResumeToken>) -> Welcome {
        let mut hello = hello(name);
        hello.resume = resume;
        self.send(&ClientMsg::Hello(hello)).await;
        self.wait_for("Welcome", |m| match m {
            ServerMsg::Welcome(w) => Some(w.clone()),
            _ => None,
        })
        .await
    }

    async fn recv(&mut self) -> In {
        loop {
            let msg = within("a WebSocket message", self.ws.next()).await;
            let msg = match msg {
                None | Some(Err(_)) => return In::Closed(None),
                Some(Ok(m)) => m,
            };
            return match msg {
                Message::Binary(b) => match b.split_first() {
                    Some((&KIND_CONTROL, body)) => {
                        In::Control(ServerMsg::decode(body).expect("a valid ServerMsg"))
                    }
                    Some((&KIND_CHAT, body)) => {
                        In::Chat(ChatFrame::decode(body).expect("a valid ChatFrame"))
                    }
                    Some((&KIND_MEDIA, body)) => In::Media(body.to_vec()),
                    other => panic!("a message of unknown kind from the relay: {other:?}"),
                },
                Message::Close(f) => In::Closed(f.map(|f| u16::from(f.code))),
                _ => continue,
            };
        }
    }

    /// Reads until `pick` accepts a control message (skipping media and chat).
    async fn wait_for<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&ServerMsg) -> Option<T>,
    ) -> T {
        loop {
            match self.recv().await {
                In::Control(m) => {
                    if let Some(t) = pick(&m) {
                        return t;
                    }
                }
                In::Closed(code) => panic!("closed ({code:?}) while waiting for {what}"),
                _ => {}
            }
        }
    }

    /// Reads to the end: the fatal error said first and the close code.
    async fn fatal_and_close(&mut self) -> (ErrorCode, Option<u16>) {
        let mut fatal = None;
        loop {
            match self.recv().await {
                In::Control(ServerMsg::Error(e)) if e.fatal => fatal = Some(e.code),
                In::Closed(code) => return (fatal.expect("a fatal Error before the close"), code),
                _ => {}
            }
        }
    }
}

fn hello(name: &str) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        name: name.into(),
        interests: vec![],
        resume: None,
        visitor: None,
        media: duet_client::native_caps(),
    }
}

fn drops_total(status: &serde_json::Value) -> u64 {
    status["drops"]
        .as_object()
        .map(|d| d.values().filter_map(|v| v.as_u64()).sum())
        .unwrap_or(0)
}

/// One video datagram: frames of four fragments, a keyframe every `gop` frames.
fn video(match_id: u64, seq: u32, gop: u32) -> Vec<u8> {
    let frame = seq / 4;
    let mut buf = Vec::new();
    MediaHeader {
        match_id,
        track: Track::Video,
        seq,
        frame,
        frag_index: (seq % 4) as u16,
        frag_count: 4,
        keyframe: frame.is_multiple_of(gop),
        capture_us: 0,
        ref_frame: frame - frame % gop,
    }
    .write_datagram(&[seq as u8; 1000], &mut buf);
    buf
}

#[tokio::test]
async fn a_websocket_client_and_a_quic_client_pair_see_names_exchange_media_and_chat_and_leave() {
    let relay = TestRelay::default().await;
    let mut web = WsClient::connect(&relay, None).await;
    let welcome = web.hello("Wes", None).await;
    assert!(!welcome.resumed);
    let mut quic = relay.client("Quinn", &[]).await;
    let m_quic = matched(&mut quic).await;
    let m_web = web
        .wait_for("Matched", |m| match m {
            ServerMsg::Matched(m) => Some(m.clone()),
            _ => None,
        })
        .await;
    assert_eq!(m_web.match_id, m_quic.match_id);
    assert_eq!(m_web.partner_name, "Quinn");
    assert_eq!(m_quic.partner_name, "Wes");
    let match_id = m_web.match_id;

    // QUIC → WebSocket: every datagram, byte for byte (TCP loses nothing, and 40 small
    // datagrams are far under the relay's queue).
    let sent: Vec<Vec<u8>> = (0..40)
        .map(|i| media_datagram(match_id, i, &[i as u8; 200]))
        .collect();
    for d in &sent {
        quic.send_datagram(d).expect("send");
    }
    let mut got = Vec::new();
    while got.len() < sent.len() {
        if let In::Media(d) = web.recv().await {
            got.push(d);
        }
    }
    assert_eq!(
        got, sent,
        "QUIC → WebSocket media arrived changed or out of order"
    );

    // WebSocket → QUIC: counted, not resent.
    for i in 0..40u32 {
        web.send_raw(
            KIND_MEDIA,
            &media_datagram(match_id, 100 + i, b"from the web"),
        )
        .await;
    }
    assert_eq!(receive_exactly(&quic, match_id, 40).await, 0);

    // Chat both ways, with the pairing named first.
    web.send_raw(KIND_CHAT, &ChatFrame::Open { match_id }.encode())
        .await;
    web.send_raw(
        KIND_CHAT,
        &ChatFrame::Line {
            text: "hi from TCP".into(),
        }
        .encode(),
    )
    .await;
    let line = within("chat over QUIC", quic.recv_chat()).await;
    assert_eq!(line, Some((match_id, "hi from TCP".to_string())));
    quic.send_chat(match_id, "hi from UDP").await.expect("chat");
    let mut frames = Vec::new();
    while frames.len() < 2 {
        if let In::Chat(f) = web.recv().await {
            frames.push(f);
        }
    }
    assert_eq!(
        frames,
        vec![
            ChatFrame::Open { match_id },
            ChatFrame::Line {
                text: "hi from UDP".into()
            }
        ]
    );

    // A close with 1000 is leaving on purpose: the partner hears it at once, not
    // "reconnecting".
    web.ws
        .close(Some(CloseFrame {
            code: CloseCode::from(CLOSE_NORMAL),
            reason: "bye".into(),
        }))
        .await
        .expect("close");
    let left = expect_msg(&mut quic, "PeerLeft or PeerReconnecting", |m| match m {
        ServerMsg::PeerLeft { .. } => Some(true),
        ServerMsg::PeerReconnecting => Some(false),
        _ => None,
    })
    .await
    .expect("told");
    assert!(
        left,
        "a WebSocket closed with 1000 counted as lost, not left"
    );
}

async fn status_of(addr: std::net::SocketAddr) -> serde_json::Value {
    let (code, body) = http_get(addr, "/status").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status is JSON")
}

async fn status_of_until(
    addr: std::net::SocketAddr,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    within(what, async {
        loop {
            let s = status_of(addr).await;
            if check(&s) {
                return s;
            }
            // Polling interval for readiness, not a wait for the event itself.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
}

/// A relay process (its `/status` counts its own heap), a QUIC sender and a WebSocket
/// receiver that reads nothing for two seconds while 8 Mbit/s of video goes its way: the
/// relay's heap stays flat (a queue that held the stall would grow by its 2 MB), then, once
/// it reads again, what reaches it from before is bounded by the relay's queue and the
/// socket buffers (so the delay is back to normal at once, not after the backlog), and
/// after every gap the next video starts a keyframe.
#[tokio::test]
async fn a_websocket_receiver_that_stops_reading_keeps_relay_memory_flat_and_gets_fresh_video_from_a_keyframe_after(
) {
    let relay = RelayProcess::spawn(&["--max-media-kbps", "400000"]).await;
    let addr = relay.http_addr;
    let mut slow = WsClient::connect_to(addr, Some(4096)).await;
    slow.hello("Slow", None).await;
    let mut sender = relay.client("Sender").await;
    let match_id = matched(&mut sender).await.match_id;
    slow.wait_for("Matched", |m| {
        matches!(m, ServerMsg::Matched(_)).then_some(())
    })
    .await;

    const STALLED: u32 = 2000; // 2 s at 1,000 datagrams (8 Mbit/s)
    const AFTER: u32 = 400;
    const GOP: u32 = 25;
    let before = status_of(addr).await;
    let received_before = before["datagrams_received"].as_u64().unwrap_or(0);
    let heap_before = before["heap_live_bytes"]
        .as_u64()
        .expect("the relay counts its heap");
    let started = tokio::time::Instant::now();
    let (got_tx, mut got) = tokio::sync::mpsc::unbounded_channel();
    let mut slow = Some(slow);
    let mut reader = None;
    let mut heap_stalled = 0;
    for seq in 0..STALLED + AFTER {
        sender
            .send_datagram(&video(match_id, seq, GOP))
            .expect("send");
        // In steps of 50 datagrams, paced to 1,000 a second, each read by the relay before
        // the next is sent (so no QUIC buffer on the way drops any).
        if seq % 50 == 49 {
            let want = received_before + u64::from(seq) + 1;
            status_of_until(addr, "the relay read the step", |s| {
                s["datagrams_received"].as_u64().unwrap_or(0) >= want
            })
            .await;
            tokio::time::sleep_until(
                started + std::time::Duration::from_millis(u64::from(seq + 1)),
            )
            .await;
        }
        if seq + 1 == STALLED {
            let s = status_of(addr).await;
            heap_stalled = s["heap_live_bytes"].as_u64().unwrap_or(0);
            assert!(
                s["drops"]["slow_receiver"].as_u64().unwrap_or(0) > 0,
                "nothing was dropped toward a receiver that reads nothing"
            );
            let (mut slow, got_tx) = (slow.take().expect("once"), got_tx.clone());
            reader = Some(tokio::spawn(async move {
                loop {
                    match slow.recv().await {
                        In::Media(d) => {
                            let (h, _) = MediaHeader::read(&d).expect("a valid header");
                            if got_tx.send((h.seq, h.keyframe, h.frag_index)).is_err() {
                                return;
                            }
                        }
                        In::Closed(_) => return,
                        _ => {}
                    }
                }
            }));
        }
    }
    let heap_growth = heap_stalled.saturating_sub(heap_before);
    assert!(
        heap_growth < 512 * 1024,
        "the relay's heap grew by {heap_growth} bytes over a 2 MB stall"
    );

    // Every datagram has reached the relay and been queued toward the slow side or dropped.
    let total = STALLED + AFTER;
    let settled = |s: &serde_json::Value| {
        let queued = s["datagrams_queued"].as_u64().unwrap_or(0)
            - before["datagrams_queued"].as_u64().unwrap_or(0);
        queued + drops_total(s) - drops_total(&before)
    };
    let status = status_of_until(addr, "every datagram queued or dropped", |s| {
        settled(s) == u64::from(total)
    })
    .await;
    let dropped = drops_total(&status) - drops_total(&before);
    let slow_dropped = status["drops"]["slow_receiver"].as_u64().unwrap_or(0);
    assert_eq!(
        dropped, slow_dropped,
        "drops other than the slow receiver's: {status}"
    );

    // It receives exactly what was queued toward it.
    let expected = (u64::from(total) - slow_dropped) as usize;
    let mut seqs = Vec::new();
    while seqs.len() < expected {
        seqs.push(
            within("queued media", got.recv())
                .await
                .expect("the reader runs"),
        );
    }
    if let Some(r) = reader {
        r.abort();
    }
    // Of the stall, only what the relay's queue and the two socket buffers hold arrives
    // late: a bounded backlog, so the picture is current again as soon as it drains.
    let stale = seqs.iter().filter(|(seq, _, _)| *seq < STALLED).count();
    let bound = duet_relay::session::ws::WS_MEDIA_QUEUE + 64;
    assert!(
        stale <= bound,
        "{stale} datagrams from the stall reached the receiver (bound {bound})"
    );
    let fresh = seqs.iter().filter(|(seq, _, _)| *seq >= STALLED).count();
    eprintln!(
        "slow WebSocket receiver: heap +{heap_growth} B over the stall; {slow_dropped} of {total} dropped; {stale} from the stall and {fresh} after it delivered"
    );
    assert!(fresh > 0, "nothing sent after the stall arrived");
    let mut gaps = 0;
    for pair in seqs.windows(2) {
        let ((a, _, _), (b, key, frag)) = (pair[0], pair[1]);
        assert!(b > a, "media out of order: {a} then {b}");
        if b != a + 1 {
            gaps += 1;
            assert!(
                key && frag == 0,
                "after a gap ({a} → {b}) the next video is not the start of a keyframe"
            );
        }
    }
    assert!(gaps > 0, "no gap in what the slow side received: {seqs:?}");
}

#[tokio::test]
async fn bad_websocket_input_is_refused_with_a_code_and_others_are_unaffected() {
    let relay = TestRelay::default().await;
    let mut healthy = HealthyPair::new(&relay).await;

    // A text message, before or after Hello.
    let mut c = WsClient::connect(&relay, None).await;
    c.ws.send(Message::text("hello?")).await.expect("send");
    assert_eq!(
        c.fatal_and_close().await,
        (ErrorCode::Malformed, Some(4001))
    );

    let mut c = WsClient::connect(&relay, None).await;
    c.hello("Texter", None).await;
    c.ws.send(Message::text("hello?")).await.expect("send");
    assert_eq!(
        c.fatal_and_close().await,
        (ErrorCode::Malformed, Some(4001))
    );

    // An unknown kind.
    let mut c = WsClient::connect(&relay, None).await;
    c.hello("Kinder", None).await;
    c.send_raw(9, b"what").await;
    assert_eq!(
        c.fatal_and_close().await,
        (ErrorCode::Malformed, Some(4001))
    );

    // Over the message cap.
    let mut c = WsClient::connect(&relay, None).await;
    c.hello("Big", None).await;
    c.send_raw(KIND_CONTROL, &vec![0u8; 10_000]).await;
    assert_eq!(c.fatal_and_close().await, (ErrorCode::TooLarge, Some(4002)));

    // Media before Hello.
    let mut c = WsClient::connect(&relay, None).await;
    c.send_raw(KIND_MEDIA, &media_datagram(1, 0, b"early"))
        .await;
    assert_eq!(
        c.fatal_and_close().await,
        (ErrorCode::WrongState, Some(4003))
    );

    // A wrong protocol version.
    let mut c = WsClient::connect(&relay, None).await;
    let mut hello = hello("Old");
    hello.version = PROTOCOL_VERSION + 1;
    c.send(&ClientMsg::Hello(hello)).await;
    assert_eq!(
        c.fatal_and_close().await,
        (ErrorCode::UnsupportedVersion, Some(4004))
    );

    healthy.still_talks().await;
}

#[tokio::test]
async fn a_call_lost_on_a_websocket_resumes_over_quic_with_its_token() {
    let relay = TestRelay::default().await;
    let mut web = WsClient::connect(&relay, None).await;
    let welcome = web.hello("Roamer", None).await;
    let mut quic = relay.client("Stayer", &[]).await;
    let match_id = matched(&mut quic).await.match_id;
    web.wait_for("Matched", |m| {
        matches!(m, ServerMsg::Matched(_)).then_some(())
    })
    .await;

    // The TCP connection goes away without a close frame (a network that vanished).
    drop(web);
    expect_msg(&mut quic, "PeerReconnecting", |m| {
        matches!(m, ServerMsg::PeerReconnecting).then_some(())
    })
    .await
    .expect("told the partner is reconnecting");

    let mut back = within("connect", duet_client::Client::connect(&relay.opts()))
        .await
        .expect("connects");
    let mut hello = hello("Roamer");
    hello.resume = Some(welcome.resume_token);
    let w = within("Welcome", back.hello_as(hello))
        .await
        .expect("welcome");
    assert!(w.resumed, "the token did not resume the session");
    expect_msg(&mut quic, "PeerReturned", |m| {
        matches!(m, ServerMsg::PeerReturned).then_some(())
    })
    .await
    .expect("told the partner is back");
    exchange_counted(&quic, &back, match_id, 0, 20).await;
    exchange_counted(&back, &quic, match_id, 100, 20).await;
}
