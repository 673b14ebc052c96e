//! The WebSocket fallback ([`duet_proto::ws`]) for networks that block UDP and browsers
//! without WebTransport: the upgrade on the HTTP side, `Hello`, and one WebSocket's
//! plumbing. A reader turns messages into the state machine's inputs (control, chat) and
//! hands media to the same [`Forwarder`] QUIC datagrams go through; a writer sends control
//! and chat first, then media from a short [`MediaQueue`].
//!
//! TCP delivers everything in order, so a receiver that cannot keep up (a slow uplink, a
//! lost packet being resent) would let media pile up in the relay and in the socket
//! without bound. The queue toward each WebSocket client holds a few hundred milliseconds
//! at most; once it is full the relay drops, and keeps dropping video until the next
//! keyframe (a frame whose reference was lost cannot be shown). The client drops at its
//! own end too, by `bufferedAmount`.

use super::handshake::Handoff;
use super::io::ReaderInput;
use super::state::{Fatal, Input};
use super::{Lifecycle, Shared};
use crate::admission::{HandshakeSlot, IncomingDecision};
use crate::forward::{Forwarder, Link};
use crate::limits::ERROR_FLUSH_TIMEOUT;
use crate::metrics::{Drop, Metrics};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use duet_proto::limits::{MAX_CHAT_BYTES, MAX_MEDIA_DATAGRAM_BYTES};
use duet_proto::ws::{
    close_code, CLOSE_NORMAL, KIND_CHAT, KIND_CONTROL, KIND_MEDIA, MAX_WS_MESSAGE_BYTES,
};
use duet_proto::*;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::{timeout, Instant};
use tokio_util::task::TaskTracker;

/// Datagrams queued toward one WebSocket client before the relay drops. A 1.5 Mbit/s call
/// is about 170 datagrams a second, so 48 is under 300 ms of it, and a keyframe (up to ~40
/// datagrams) still fits whole into an empty queue.
pub const WS_MEDIA_QUEUE: usize = 48;
/// The same bound in bytes (48 full datagrams).
pub const WS_MEDIA_QUEUE_BYTES: usize = WS_MEDIA_QUEUE * MAX_MEDIA_DATAGRAM_BYTES;
/// Chat frames queued toward the writer (lines are also bounded by the session's chat
/// queue; this only decouples the two).
const WS_CHAT_QUEUE: usize = 8;
/// How often the relay pings a WebSocket client: the RTT it reports in `Stats`, and
/// traffic that keeps a live but quiet connection from looking dead.
const PING_EVERY: Duration = Duration::from_secs(1);
/// The longest reason a WebSocket close frame carries (125 bytes of payload, 2 for the code).
const MAX_CLOSE_REASON: usize = 123;

/// Unsent bytes a TCP socket of the HTTP side may hold (`TCP_NOTSENT_LOWAT`): the kernel
/// then refuses more, so media waits in [`MediaQueue`] (which drops) rather than in a
/// socket buffer that autotunes to megabytes, seconds of a call. Bytes in flight are still
/// bounded only by the path's window, so this caps delay, not throughput.
const TCP_UNSENT_BYTES: u32 = 16 * 1024;

/// Sets up an HTTP connection for the WebSocket fallback: no Nagle delay (small media and
/// control messages must leave at once) and a small unsent-bytes limit. Set on a listening
/// socket, Linux passes both on to every connection it accepts (how the HTTPS side, whose
/// accept loop is axum-server's, gets them).
pub fn tune_tcp(socket: socket2::SockRef<'_>) {
    let _ = socket.set_tcp_nodelay(true);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = socket.set_tcp_notsent_lowat(TCP_UNSENT_BYTES);
}

/// What the upgrade handler needs: the relay's sessions and the tracker that lets a drain
/// wait for them.
#[derive(Clone)]
pub struct WsEntry {
    pub shared: Arc<Shared>,
    pub tracker: TaskTracker,
}

/// `GET /ws`: the same admission checks as a QUIC connection attempt (block list, handshakes
/// in flight, handshake rate per address), then the upgrade. A TCP peer has proven its
/// address, so there is no Retry.
pub async fn upgrade(
    State(entry): State<WsEntry>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    let shared = entry.shared.clone();
    if *shared.lifecycle.borrow() == Lifecycle::Closing {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the relay is shutting down\n",
        )
            .into_response();
    }
    let (decision, slot) =
        shared
            .admissions
            .on_incoming(addr.ip(), true, std::time::Instant::now());
    let (IncomingDecision::Accept, Some(slot)) = (decision, slot) else {
        tracing::debug!(ip = %addr.ip(), ?decision, "WebSocket refused before the handshake");
        shared.metrics.connections_refused.fetch_add(1, Relaxed);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many connection attempts\n",
        )
            .into_response();
    };
    let tracker = entry.tracker.clone();
    ws.max_message_size(MAX_WS_MESSAGE_BYTES)
        .max_frame_size(MAX_WS_MESSAGE_BYTES)
        .on_upgrade(move |socket| tracker.track_future(handle(socket, addr, shared, slot)))
}

/// A WebSocket that has said `Hello`, waiting to become (or resume) a session.
pub struct WsHandoff {
    pub socket: WebSocket,
    pub addr: SocketAddr,
}

/// From an upgraded WebSocket to a session: `Hello` within the hello timeout, then a resume
/// or admission, as [`super::handshake::handle_incoming`] does for QUIC.
async fn handle(mut socket: WebSocket, addr: SocketAddr, shared: Arc<Shared>, slot: HandshakeSlot) {
    let started = Instant::now();
    let metrics = shared.metrics.clone();
    metrics.sessions_opened.fetch_add(1, Relaxed);
    let admission = shared.admissions.admit(addr.ip());
    let within = match &admission {
        Ok(_) => Duration::from_millis(shared.config.hello_timeout_ms),
        Err(_) => ERROR_FLUSH_TIMEOUT,
    };
    let hello = await_hello(&mut socket, within, &metrics).await;
    drop(slot);
    let hello = match hello {
        Ok(h) => h,
        Err(Some(fatal)) => {
            let fatal = match admission {
                Err(refusal) => {
                    metrics.sessions_refused.fetch_add(1, Relaxed);
                    refusal
                }
                Ok(_) => fatal,
            };
            return close_socket(socket, &fatal, &metrics).await;
        }
        Err(None) => return,
    };
    metrics.hist.handshake_time.record(started.elapsed());
    let handoff = Handoff::Ws(Box::new(WsHandoff { socket, addr }));
    if let Some(token) = hello.resume {
        drop(admission);
        return super::resume::hand_over(&shared, token, handoff).await;
    }
    match admission {
        Ok(admission) => super::run(shared, hello, handoff, admission).await,
        Err(refusal) => {
            metrics.sessions_refused.fetch_add(1, Relaxed);
            handoff.refuse(&refusal, &metrics).await;
        }
    }
}

/// The first message, which must be a control `Hello` of this protocol version.
/// `Err(None)`: the socket went away before saying anything worth answering.
async fn await_hello(
    socket: &mut WebSocket,
    within: Duration,
    metrics: &Metrics,
) -> Result<Hello, Option<Fatal>> {
    let deadline = Instant::now() + within;
    loop {
        let msg = match tokio::time::timeout_at(deadline, socket.recv()).await {
            Err(_) => {
                return Err(Some(Fatal::new(
                    ErrorCode::HelloTimeout,
                    format!("no Hello within {} ms", within.as_millis()),
                )))
            }
            Ok(None) => return Err(None),
            Ok(Some(Err(e))) => return Err(read_failure(&e)),
            Ok(Some(Ok(m))) => m,
        };
        let body = match msg {
            Message::Binary(b) => b,
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => return Err(None),
            Message::Text(_) => return Err(Some(text_message())),
        };
        return match body.split_first() {
            Some((&KIND_CONTROL, frame)) => match ClientMsg::decode(frame) {
                Ok(ClientMsg::Hello(hello)) if hello.version == PROTOCOL_VERSION => Ok(hello),
                Ok(ClientMsg::Hello(hello)) => Err(Some(Fatal::new(
                    ErrorCode::UnsupportedVersion,
                    format!(
                        "This relay speaks protocol version {PROTOCOL_VERSION}, the app sent {}. Reload the page or update the app.",
                        hello.version
                    ),
                ))),
                Ok(_) => Err(Some(Fatal::new(
                    ErrorCode::WrongState,
                    "the first message must be Hello",
                ))),
                Err(e) => Err(Some(Fatal::from_decode(&e, "first message"))),
            },
            Some((&KIND_MEDIA, _)) => {
                metrics.dropped(Drop::BeforeHello);
                Err(Some(Fatal::new(
                    ErrorCode::WrongState,
                    "media sent before Hello",
                )))
            }
            _ => Err(Some(unknown_kind())),
        };
    }
}

fn text_message() -> Fatal {
    Fatal::new(
        ErrorCode::Malformed,
        "text WebSocket messages are not part of Duet's protocol",
    )
}

fn unknown_kind() -> Fatal {
    Fatal::new(ErrorCode::Malformed, "a WebSocket message of unknown kind")
}

/// A read error: a message over the size cap or a protocol violation is the client's
/// fault and is said; anything else (a reset, a lost connection) is not answered.
fn read_failure(e: &axum::Error) -> Option<Fatal> {
    let text = e.to_string();
    // tungstenite's errors, as axum passes them on: "Space limit exceeded: Message too
    // long: … > …" for the size cap, "WebSocket protocol error: …" for a broken frame
    // (except "… Connection reset without closing handshake": a connection lost).
    if text.contains("Space limit exceeded") {
        Some(Fatal::new(
            ErrorCode::TooLarge,
            format!("a WebSocket message over {MAX_WS_MESSAGE_BYTES} bytes"),
        ))
    } else if text.contains("protocol error") && !text.contains("without closing handshake") {
        Some(Fatal::new(
            ErrorCode::Malformed,
            format!("a broken WebSocket frame ({text})"),
        ))
    } else {
        None
    }
}

/// Says `fatal` on the control kind, then closes with its code, bounded by
/// [`ERROR_FLUSH_TIMEOUT`].
pub async fn close_socket(mut socket: WebSocket, fatal: &Fatal, metrics: &Metrics) {
    metrics.error_sent(fatal.code);
    tracing::debug!(code = %fatal.code, "closing WebSocket session: {}", fatal.message);
    let error = ServerMsg::error(fatal.code, fatal.message.clone(), true);
    let goodbye = async {
        socket.send(control_message(&error)).await.ok()?;
        socket
            .send(close_message(
                close_code(fatal.code.to_code()),
                &fatal.message,
            ))
            .await
            .ok()
    };
    let _ = timeout(ERROR_FLUSH_TIMEOUT, goodbye).await;
}

fn control_message(msg: &ServerMsg) -> Message {
    let body = msg.encode();
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(KIND_CONTROL);
    out.extend_from_slice(&body);
    Message::Binary(out.into())
}

pub(super) fn chat_message(frame: &ChatFrame) -> Bytes {
    let body = frame.encode();
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(KIND_CHAT);
    out.extend_from_slice(&body);
    out.into()
}

fn close_message(code: u16, reason: &str) -> Message {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: reason[..end].into(),
    }))
}

/// The relay's short queue of media toward one WebSocket client (see the module docs).
/// Partners' forwarders push into it from their tasks; the client's writer pops.
#[derive(Debug, Default)]
pub struct MediaQueue {
    state: Mutex<QueueState>,
    ready: Notify,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Bytes>,
    bytes: usize,
    /// A video datagram was dropped: drop video until the next keyframe starts.
    skipping_video: bool,
    /// Dropped here since the writer last sampled (`Stats` says it as loss).
    dropped: u64,
    queued: u64,
    closed: bool,
}

impl MediaQueue {
    /// Queues one media message (kind byte first, as the forwarder has it), whose header
    /// the forwarder has already read.
    pub fn push(&self, raw: Bytes, header: &MediaHeader) -> Result<(), Drop> {
        let video = header.track != Track::Audio;
        let keyframe_start =
            header.track == Track::Video && header.keyframe && header.frag_index == 0;
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.closed {
            return Err(Drop::SendFailed);
        }
        if video && s.skipping_video && !keyframe_start {
            s.dropped += 1;
            return Err(Drop::SlowReceiver);
        }
        if s.items.len() >= WS_MEDIA_QUEUE || s.bytes + raw.len() > WS_MEDIA_QUEUE_BYTES {
            if video {
                s.skipping_video = true;
            }
            s.dropped += 1;
            return Err(Drop::SlowReceiver);
        }
        if keyframe_start {
            s.skipping_video = false;
        }
        s.bytes += raw.len();
        s.queued += 1;
        s.items.push_back(raw);
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// The oldest queued message, waiting for one. Cancel-safe: a message leaves the queue
    /// only in the poll that returns it.
    async fn pop(&self) -> Bytes {
        loop {
            let notified = self.ready.notified();
            {
                let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(b) = s.items.pop_front() {
                    s.bytes -= b.len();
                    return b;
                }
            }
            notified.await;
        }
    }

    /// No more pushes; what is left is never sent. Returns how many were left.
    fn close(&self) -> u64 {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.closed = true;
        let left = s.items.len() as u64;
        s.items.clear();
        s.bytes = 0;
        left
    }

    /// (queued, dropped) since the last call.
    fn take_counts(&self) -> (u64, u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let counts = (s.queued, s.dropped);
        s.queued = 0;
        s.dropped = 0;
        counts
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .items
            .len()
    }
}

/// What one WebSocket's reader, writer and session share.
#[derive(Debug)]
pub struct WsWire {
    pub media: Arc<MediaQueue>,
    /// Chat frames toward the client (kind byte first).
    pub chat: mpsc::Sender<Bytes>,
    /// `Some(on_purpose)` once the client's side has ended (close 1000 is on purpose).
    closed: watch::Sender<Option<bool>>,
    /// The close frame the writer sends when the session lets go of the connection.
    close_with: Mutex<Option<(u16, String)>>,
    /// Last RTT measured by ping, microseconds (0: none yet).
    rtt_us: AtomicU64,
    /// Bytes and media messages the writer has sent.
    bytes_sent: AtomicU64,
    media_sent: AtomicU64,
    epoch: std::time::Instant,
    remote: SocketAddr,
}

impl WsWire {
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// Resolves once the client's side has ended: `true` if it closed on purpose.
    pub async fn closed(&self) -> bool {
        let mut rx = self.closed.subscribe();
        let ended = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.unwrap_or(false),
            Err(_) => false,
        };
        ended
    }

    /// Sets the close frame the writer sends once its control queue is closed.
    pub fn close_with(&self, code: u16, reason: &str) {
        *self.close_with.lock().unwrap_or_else(|e| e.into_inner()) = Some((code, reason.into()));
    }
}

/// The tasks of one WebSocket connection, started by [`super::io::Attachment::start`].
pub struct WsTasks {
    pub wire: Arc<WsWire>,
    pub writer: tokio::task::JoinHandle<()>,
    pub reader: tokio::task::JoinHandle<()>,
}

/// Splits the socket and starts its reader and writer. `control` is the session's control
/// queue (the writer sends it first); `inbox` gets the reader's inputs.
pub fn start(
    h: Box<WsHandoff>,
    link: Arc<Link>,
    media: Arc<MediaQueue>,
    forwarder: Forwarder,
    control: mpsc::Receiver<Box<ServerMsg>>,
    inbox: mpsc::Sender<ReaderInput>,
    idle: Duration,
) -> WsTasks {
    let (sink, stream) = h.socket.split();
    let (chat, chat_rx) = mpsc::channel(WS_CHAT_QUEUE);
    let wire = Arc::new(WsWire {
        media,
        chat,
        closed: watch::Sender::new(None),
        close_with: Mutex::new(None),
        rtt_us: AtomicU64::new(0),
        bytes_sent: AtomicU64::new(0),
        media_sent: AtomicU64::new(0),
        epoch: std::time::Instant::now(),
        remote: h.addr,
    });
    let writer = tokio::spawn(writer(sink, control, chat_rx, wire.clone()));
    let reader = tokio::spawn(reader(stream, inbox, link, forwarder, wire.clone(), idle));
    WsTasks {
        wire,
        writer,
        reader,
    }
}

/// Sends control first, then chat, then media; pings once a second; when the control
/// queue closes, sends the close frame the session chose and ends.
async fn writer(
    mut sink: SplitSink<WebSocket, Message>,
    mut control: mpsc::Receiver<Box<ServerMsg>>,
    mut chat: mpsc::Receiver<Bytes>,
    wire: Arc<WsWire>,
) {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (msg, media) = tokio::select! {
            biased;
            m = control.recv() => match m {
                Some(m) => (control_message(&m), false),
                None => break,
            },
            Some(c) = chat.recv() => (Message::Binary(c), false),
            _ = ping.tick() => {
                let now = wire.epoch.elapsed().as_micros() as u64;
                (Message::Ping(Bytes::copy_from_slice(&now.to_le_bytes())), false)
            }
            d = wire.media.pop() => (Message::Binary(d), true),
        };
        let len = match &msg {
            Message::Binary(b) => b.len() as u64,
            _ => 0,
        };
        if sink.send(msg).await.is_err() {
            wire.media.close();
            return;
        }
        wire.bytes_sent.fetch_add(len, Relaxed);
        if media {
            wire.media_sent.fetch_add(1, Relaxed);
        }
    }
    wire.media.close();
    let (code, reason) = wire
        .close_with
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or((CLOSE_NORMAL, "bye".into()));
    let _ = sink.send(close_message(code, &reason)).await;
}

/// Reads the client's messages: control and chat become inputs, media goes to the
/// forwarder. Ends when the client closes (on purpose with 1000), the connection fails,
/// nothing arrives for `idle` (the client answers the relay's pings, so silence means the
/// path is gone), or the client breaks the protocol.
async fn reader(
    mut stream: SplitStream<WebSocket>,
    inbox: mpsc::Sender<ReaderInput>,
    link: Arc<Link>,
    mut fwd: Forwarder,
    wire: Arc<WsWire>,
    idle: Duration,
) {
    let mut chat_match: Option<u64> = None;
    let on_purpose = loop {
        let msg = match timeout(idle, stream.next()).await {
            Err(_) | Ok(None) => break false,
            Ok(Some(Err(e))) => match read_failure(&e) {
                Some(fatal) => {
                    let _ = inbox.send(Input::Broken(fatal)).await;
                    return;
                }
                None => break false,
            },
            Ok(Some(Ok(m))) => m,
        };
        let input = match msg {
            Message::Binary(b) => match b.first() {
                Some(&KIND_MEDIA) => {
                    link.counts.read.fetch_add(1, Relaxed);
                    fwd.forward(b);
                    continue;
                }
                Some(&KIND_CONTROL) => match ClientMsg::decode(&b[1..]) {
                    Ok(msg) => Input::Control(msg),
                    Err(e) => Input::Broken(Fatal::from_decode(&e, "control message")),
                },
                Some(&KIND_CHAT) => match (ChatFrame::decode(&b[1..]), chat_match) {
                    (Ok(ChatFrame::Open { match_id }), _) => {
                        chat_match = Some(match_id);
                        continue;
                    }
                    (
                        Ok(line @ (ChatFrame::Line { .. } | ChatFrame::Sealed { .. })),
                        Some(match_id),
                    ) => Input::Chat { match_id, line },
                    (Ok(ChatFrame::Line { .. } | ChatFrame::Sealed { .. }), None) => Input::Broken(
                        Fatal::new(ErrorCode::WrongState, "a chat line before any Open"),
                    ),
                    (Err(DecodeError::FieldTooLarge { .. }), Some(_)) => {
                        Input::ChatTooLarge(Fatal::new(
                            ErrorCode::TooLarge,
                            format!(
                                "That message is over {MAX_CHAT_BYTES} bytes and was not sent."
                            ),
                        ))
                    }
                    (Err(e), _) => Input::Broken(Fatal::from_decode(&e, "chat frame")),
                },
                _ => Input::Broken(unknown_kind()),
            },
            Message::Text(_) => Input::Broken(text_message()),
            Message::Pong(p) => {
                record_rtt(&wire, &p);
                continue;
            }
            // tungstenite answers pings itself on the next write.
            Message::Ping(_) => continue,
            Message::Close(frame) => break frame.is_some_and(|f| f.code == CLOSE_NORMAL),
        };
        let fatal = matches!(input, Input::Broken(_));
        if inbox.send(input).await.is_err() || fatal {
            return;
        }
    };
    wire.closed.send_replace(Some(on_purpose));
}

/// A pong carries the relay's own ping time back; anything else (a client's unsolicited
/// pong, a time in the future) is ignored.
fn record_rtt(wire: &WsWire, payload: &[u8]) {
    let Ok(sent) = <[u8; 8]>::try_from(payload).map(u64::from_le_bytes) else {
        return;
    };
    let now = wire.epoch.elapsed().as_micros() as u64;
    if let Some(rtt) = now.checked_sub(sent).filter(|r| *r < 60_000_000) {
        wire.rtt_us.store(rtt.max(1), Relaxed);
    }
}

/// `Stats` for a WebSocket client: the ping RTT, media the relay dropped toward it as
/// loss, and the rate the writer sent.
#[derive(Debug)]
pub struct WsStatsProbe {
    at: std::time::Instant,
    bytes: u64,
    media_sent: u64,
}

impl Default for WsStatsProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl WsStatsProbe {
    pub fn new() -> Self {
        Self {
            at: std::time::Instant::now(),
            bytes: 0,
            media_sent: 0,
        }
    }

    pub fn sample(&mut self, wire: &WsWire, metrics: &Metrics) -> RelayStats {
        let now = std::time::Instant::now();
        let secs = now.duration_since(self.at).as_secs_f64().max(0.001);
        let bytes = wire.bytes_sent.load(Relaxed);
        let media_sent = wire.media_sent.load(Relaxed);
        metrics
            .datagrams_forwarded
            .fetch_add(media_sent.saturating_sub(self.media_sent), Relaxed);
        let rate = bytes.saturating_sub(self.bytes) as f64 * 8.0 / 1000.0 / secs;
        let (queued, dropped) = wire.media.take_counts();
        let rtt_us = wire.rtt_us.load(Relaxed);
        if rtt_us > 0 {
            metrics.hist.rtt.record(Duration::from_micros(rtt_us));
        }
        *self = Self {
            at: now,
            bytes,
            media_sent,
        };
        RelayStats {
            rtt_us: u32::try_from(rtt_us).unwrap_or(u32::MAX),
            lost_permille: (dropped * 1000)
                .checked_div(queued + dropped)
                .map_or(0, |p| u16::try_from(p).unwrap_or(1000)),
            send_rate_kbps: rate as u32,
        }
    }

    /// The connection is done: the last media sent, and what was queued and never sent.
    pub fn finish(&mut self, wire: &WsWire, metrics: &Metrics) {
        let left = wire.media.close();
        let media_sent = wire.media_sent.load(Relaxed);
        metrics
            .datagrams_forwarded
            .fetch_add(media_sent.saturating_sub(self.media_sent), Relaxed);
        self.media_sent = media_sent;
        metrics.send_buffer_drops.fetch_add(left, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(track: Track, frame: u32, frag_index: u16, keyframe: bool) -> (Bytes, MediaHeader) {
        let h = MediaHeader {
            match_id: 1,
            track,
            seq: frame * 10 + u32::from(frag_index),
            frame,
            frag_index,
            frag_count: 4,
            keyframe,
            capture_us: 0,
            ref_frame: frame,
        };
        let mut body = Vec::new();
        h.write_datagram(&[0u8; 900], &mut body);
        let mut out = vec![KIND_MEDIA];
        out.extend_from_slice(&body);
        (out.into(), h)
    }

    fn push(q: &MediaQueue, (raw, header): (Bytes, MediaHeader)) -> Result<(), Drop> {
        q.push(raw, &header)
    }

    #[test]
    fn a_full_queue_drops_video_until_the_next_keyframe() {
        let q = MediaQueue::default();
        for i in 0..WS_MEDIA_QUEUE as u32 {
            assert!(push(&q, datagram(Track::Video, i / 4, (i % 4) as u16, false)).is_ok());
        }
        // Full: this delta fragment is dropped, and so are later ones even after the
        // writer has made room.
        assert_eq!(
            push(&q, datagram(Track::Video, 100, 0, false)),
            Err(Drop::SlowReceiver)
        );
        q.close_for_test_drain();
        assert_eq!(
            push(&q, datagram(Track::Video, 101, 0, false)),
            Err(Drop::SlowReceiver)
        );
        assert_eq!(
            push(&q, datagram(Track::VideoParity, 101, 0, false)),
            Err(Drop::SlowReceiver)
        );
        // Audio goes on as soon as there is room.
        assert!(push(&q, datagram(Track::Audio, 7, 0, false)).is_ok());
        // A keyframe's second fragment is not a start; its first is.
        assert_eq!(
            push(&q, datagram(Track::Video, 102, 1, true)),
            Err(Drop::SlowReceiver)
        );
        assert!(push(&q, datagram(Track::Video, 103, 0, true)).is_ok());
        assert!(push(&q, datagram(Track::Video, 103, 1, true)).is_ok());
        assert!(push(&q, datagram(Track::Video, 104, 0, false)).is_ok());
        assert_eq!(q.len(), 4);
        assert_eq!(q.take_counts(), (WS_MEDIA_QUEUE as u64 + 4, 4));
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_and_refuses_after_close() {
        let q = MediaQueue::default();
        let mut accepted = 0;
        for i in 0..1000 {
            if push(&q, datagram(Track::Audio, i, 0, false)).is_ok() {
                accepted += 1;
            }
        }
        assert_eq!(accepted, WS_MEDIA_QUEUE);
        assert_eq!(q.close(), WS_MEDIA_QUEUE as u64);
        assert_eq!(
            push(&q, datagram(Track::Audio, 1, 0, false)),
            Err(Drop::SendFailed)
        );
    }

    #[tokio::test]
    async fn pop_returns_in_order_and_waits_for_a_push() {
        let q = Arc::new(MediaQueue::default());
        let (a, ha) = datagram(Track::Audio, 1, 0, false);
        let (b, hb) = datagram(Track::Audio, 2, 0, false);
        q.push(a.clone(), &ha).ok();
        assert_eq!(q.pop().await, a);
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.pop().await })
        };
        tokio::task::yield_now().await;
        q.push(b.clone(), &hb).ok();
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(matches!(got, Ok(Ok(x)) if x == b));
    }

    #[test]
    fn close_reasons_are_cut_at_a_character_boundary() {
        let long = "é".repeat(100);
        let Message::Close(Some(frame)) = close_message(4006, &long) else {
            panic!("not a close frame");
        };
        assert!(frame.reason.len() <= MAX_CLOSE_REASON);
        assert_eq!(frame.code, 4006);
    }

    impl MediaQueue {
        /// Empties the queue as a writer would, without ending it.
        fn close_for_test_drain(&self) {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.items.clear();
            s.bytes = 0;
        }
    }
}
