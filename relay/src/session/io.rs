//! Control and chat streams, and one connection's worth of plumbing ([`Attachment`]):
//! read, write, bounded queues. Nothing here decides anything; readers turn bytes into
//! [`Input`]s for the state machine, writers turn messages into bytes.

use super::handshake::{close_session, Handoff};
use super::state::{Fatal, Input};
use super::ws::{self, MediaQueue, WsStatsProbe, WsWire};
use crate::forward::{forward_media, DatagramCounts, Forwarder, Link, LinkTx, Route};
use crate::limits::*;
use crate::matching::MatchId;
use crate::metrics::Metrics;
use crate::peer::Peer;
use crate::Connection;
use duet_proto::frame::FrameReader;
use duet_proto::limits::MAX_CHAT_BYTES;
use duet_proto::ws::close_code as ws_close_code;
use duet_proto::*;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use web_transport_quinn::{RecvStream, SendStream, SessionError, WebTransportError};

/// What the reader tasks hand the session: inputs for the state machine.
pub type ReaderInput = Input<Arc<Peer>>;

/// One connection's worth of plumbing. A session has one while its client is connected and
/// gets a new one when the client resumes on a new connection (on either transport).
pub struct Attachment {
    pub link: Arc<Link>,
    out: mpsc::Sender<Box<ServerMsg>>,
    writer: JoinHandle<()>,
    pub in_tx: mpsc::Sender<ReaderInput>,
    pub inbox: mpsc::Receiver<ReaderInput>,
    /// QUIC: the datagram forwarder; WebSocket: the reader (media arrives in messages).
    media: JoinHandle<()>,
    wire: Wire,
}

/// The transport under an [`Attachment`].
enum Wire {
    Quic {
        conn: Connection,
        stats: StatsProbe,
    },
    Ws {
        wire: Arc<WsWire>,
        stats: WsStatsProbe,
    },
}

/// An owned handle on the connection for the session's wait: when it ends, and (QUIC)
/// the chat streams the client opens.
#[derive(Clone)]
pub enum ConnWatch {
    Quic(Connection),
    Ws(Arc<WsWire>),
}

impl ConnWatch {
    /// Resolves when the connection has ended: `true` if the client ended it on purpose.
    pub async fn closed(&self) -> bool {
        match self {
            ConnWatch::Quic(conn) => client_closed(conn, &quinn::Connection::closed(conn).await),
            ConnWatch::Ws(wire) => wire.closed().await,
        }
    }

    /// The next chat stream the client opens (QUIC); a WebSocket carries chat in its own
    /// messages, so this never resolves there. `None`: the connection is gone.
    pub async fn accept_chat(&self) -> Option<RecvStream> {
        match self {
            ConnWatch::Quic(conn) => conn.accept_uni().await.ok(),
            ConnWatch::Ws(_) => std::future::pending().await,
        }
    }
}

impl Attachment {
    /// Starts the connection's tasks. `idle`: how long a WebSocket may be silent before it
    /// counts as lost (QUIC has its own idle timeout).
    pub fn start(
        h: Handoff,
        route: Route,
        metrics: Arc<Metrics>,
        kbps: u32,
        idle: Duration,
    ) -> Self {
        let (out, out_rx) = mpsc::channel::<Box<ServerMsg>>(CONTROL_OUTBOX);
        let (in_tx, inbox) = mpsc::channel::<ReaderInput>(CONTROL_INBOX);
        let forwarder = Forwarder::new(route, metrics, kbps);
        match h {
            Handoff::Quic(h) => {
                let writer = tokio::spawn(control_writer(h.send, out_rx));
                tokio::spawn(control_reader(h.recv, h.reader, in_tx.clone()));
                let link = Arc::new(Link {
                    to: LinkTx::Quic(h.conn.clone()),
                    counts: DatagramCounts::default(),
                });
                let media = tokio::spawn(forward_media(link.clone(), h.conn.clone(), forwarder));
                Self {
                    wire: Wire::Quic {
                        stats: StatsProbe::new(&h.conn),
                        conn: h.conn,
                    },
                    link,
                    out,
                    writer,
                    in_tx,
                    inbox,
                    media,
                }
            }
            Handoff::Ws(h) => {
                let queue = Arc::new(MediaQueue::default());
                let link = Arc::new(Link {
                    to: LinkTx::Ws(queue.clone()),
                    counts: DatagramCounts::default(),
                });
                let tasks = ws::start(
                    h,
                    link.clone(),
                    queue,
                    forwarder,
                    out_rx,
                    in_tx.clone(),
                    idle,
                );
                Self {
                    wire: Wire::Ws {
                        wire: tasks.wire,
                        stats: WsStatsProbe::new(),
                    },
                    link,
                    out,
                    writer: tasks.writer,
                    in_tx,
                    inbox,
                    media: tasks.reader,
                }
            }
        }
    }

    pub fn watch(&self) -> ConnWatch {
        match &self.wire {
            Wire::Quic { conn, .. } => ConnWatch::Quic(conn.clone()),
            Wire::Ws { wire, .. } => ConnWatch::Ws(wire.clone()),
        }
    }

    /// Queues a message for the control stream. `false`: the queue is full, the client is
    /// not reading its control stream.
    pub fn send(&self, msg: ServerMsg) -> bool {
        self.out.try_send(Box::new(msg)).is_ok()
    }

    /// The relay's view of the connection since the last sample; also adds the datagrams
    /// sent on it to `datagrams_forwarded`.
    pub fn sample(&mut self, metrics: &Metrics) -> RelayStats {
        match &mut self.wire {
            Wire::Quic { conn, stats } => stats.sample(conn, metrics),
            Wire::Ws { wire, stats } => stats.sample(wire, metrics),
        }
    }

    /// Stops this connection's tasks and closes it: with `fatal`'s code and message (sent
    /// on the control stream first, then as the WebTransport or WebSocket close), or
    /// normally.
    pub async fn detach(mut self, fatal: Option<Fatal>, metrics: &Metrics) {
        match fatal {
            Some(fatal) => {
                metrics.error_sent(fatal.code);
                if let Wire::Ws { wire, .. } = &self.wire {
                    wire.close_with(ws_close_code(fatal.code.to_code()), &fatal.message);
                }
                // The writer sends this last message, then finishes the stream (QUIC) or
                // sends the close frame (WebSocket), and waits for it.
                let _ = self.out.try_send(Box::new(ServerMsg::error(
                    fatal.code,
                    fatal.message.clone(),
                    true,
                )));
                drop(self.out);
                let _ = timeout(ERROR_FLUSH_TIMEOUT, &mut self.writer).await;
                self.writer.abort();
                if let Wire::Quic { conn, .. } = &self.wire {
                    close_session(conn, fatal.code.to_code(), &fatal.message).await;
                }
            }
            None => match &self.wire {
                Wire::Quic { conn, .. } => {
                    self.writer.abort();
                    web_transport_quinn::Session::close(conn, 0, b"bye");
                }
                Wire::Ws { .. } => {
                    // The writer sends a normal close once its queue is closed; it gets a
                    // bounded while to do so, without holding the session up.
                    drop(self.out);
                    let mut writer = self.writer;
                    tokio::spawn(async move {
                        if timeout(ERROR_FLUSH_TIMEOUT, &mut writer).await.is_err() {
                            writer.abort();
                        }
                    });
                }
            },
        }
        // The media task ends by itself once the connection is closed; abort covers a
        // connection replaced while still up.
        self.media.abort();
        match &mut self.wire {
            Wire::Quic { stats, .. } => stats.finish(&self.link, metrics),
            Wire::Ws { wire, stats } => stats.finish(wire, metrics),
        }
    }
}

/// Whether the client ended its connection on purpose (rather than losing it).
///
/// quinn's reason alone does not say: web-transport-quinn closes the connection itself as
/// soon as the session's CONNECT stream ends, which happens on a WebTransport close
/// capsule but also when the connection has just timed out or been reset, and that local
/// close replaces quinn's `TimedOut`. So a local close counts as the client's only when the
/// client did close: with a capsule, or with a QUIC `CONNECTION_CLOSE` of its own.
pub fn client_closed(conn: &Connection, why: &quinn::ConnectionError) -> bool {
    match why {
        quinn::ConnectionError::ApplicationClosed(_) => true,
        quinn::ConnectionError::LocallyClosed => {
            matches!(
                conn.close_reason(),
                Some(SessionError::WebTransportError(WebTransportError::Closed(
                    ..
                )))
            ) || quinn::Connection::stats(conn).frame_rx.connection_close > 0
        }
        _ => false,
    }
}

/// Reads control frames and hands decoded messages to the session. Awaiting the inbox
/// lets QUIC flow control slow a client that sends faster than the relay handles.
async fn control_reader(
    mut recv: RecvStream,
    mut reader: FrameReader,
    inbox: mpsc::Sender<ReaderInput>,
) {
    // Control messages are tens of bytes; a large frame just takes several reads.
    let mut buf = vec![0u8; 512];
    loop {
        loop {
            let input = match reader.next_frame() {
                Ok(None) => break,
                Ok(Some(frame)) => match ClientMsg::decode(&frame) {
                    Ok(msg) => Input::Control(msg),
                    Err(e) => Input::Broken(Fatal::from_decode(&e, "control message")),
                },
                Err(e) => Input::Broken(Fatal::from_decode(&e, "control frame")),
            };
            let fatal = matches!(input, Input::Broken(_));
            if inbox.send(input).await.is_err() || fatal {
                return;
            }
        }
        match recv.read(&mut buf).await {
            Ok(Some(n)) => reader.push(&buf[..n]),
            // The client finished its control stream: it is leaving on purpose.
            Ok(None) => {
                let _ = inbox.send(Input::ClientLeft).await;
                return;
            }
            // A read error means the connection itself failed or was reset; the session
            // learns that (and whether it was deliberate) from the connection.
            Err(_) => return,
        }
    }
}

/// Writes queued messages to the control stream; when the queue closes, finishes the
/// stream and waits (bounded by the caller) until the client has it all.
async fn control_writer(mut send: SendStream, mut out: mpsc::Receiver<Box<ServerMsg>>) {
    while let Some(msg) = out.recv().await {
        let Ok(frame) = encode_frame(&msg.encode()) else {
            continue;
        };
        if send.write_all(&frame).await.is_err() {
            return;
        }
    }
    if send.finish().is_ok() {
        let _ = send.stopped().await;
    }
}

/// Reads one incoming chat stream: `Open { match_id }` first, then lines.
pub async fn chat_reader(mut recv: RecvStream, inbox: mpsc::Sender<ReaderInput>) {
    let mut reader = FrameReader::new();
    let mut buf = vec![0u8; 4096];
    let mut match_id: Option<MatchId> = None;
    let opened_by = Instant::now() + CHAT_OPEN_TIMEOUT;
    loop {
        loop {
            let frame = match reader.next_frame() {
                Ok(None) => break,
                Ok(Some(f)) => f,
                Err(e) => {
                    let _ = inbox
                        .send(Input::Broken(Fatal::from_decode(&e, "chat frame")))
                        .await;
                    return;
                }
            };
            let input = match (ChatFrame::decode(&frame), match_id) {
                (Ok(ChatFrame::Open { match_id: m }), None) => {
                    match_id = Some(m);
                    continue;
                }
                (Ok(line @ (ChatFrame::Line { .. } | ChatFrame::Sealed { .. })), Some(m)) => {
                    Input::Chat { match_id: m, line }
                }
                (Ok(_), _) => Input::Broken(Fatal::new(
                    ErrorCode::WrongState,
                    "a chat stream must start with Open and then carry lines",
                )),
                (Err(DecodeError::FieldTooLarge { .. }), Some(_)) => {
                    Input::ChatTooLarge(Fatal::new(
                        ErrorCode::TooLarge,
                        format!("That message is over {MAX_CHAT_BYTES} bytes and was not sent."),
                    ))
                }
                (Err(e), _) => Input::Broken(Fatal::from_decode(&e, "chat frame")),
            };
            let fatal = matches!(input, Input::Broken(_));
            if inbox.send(input).await.is_err() || fatal {
                return;
            }
        }
        let read = if match_id.is_none() {
            match tokio::time::timeout_at(opened_by, recv.read(&mut buf)).await {
                Ok(r) => r,
                Err(_) => return, // never named its pairing: just drop the stream
            }
        } else {
            recv.read(&mut buf).await
        };
        match read {
            Ok(Some(n)) => reader.push(&buf[..n]),
            _ => return,
        }
    }
}

/// The chat stream toward this client for one pairing: a bounded queue and the task that
/// writes it. Dropping it (the pairing ended, or the connection changed) aborts the task,
/// so a client that withholds stream credit pins at most one writer and
/// [`CHAT_OUTBOX`] lines, never one per pairing.
pub struct ChatOut {
    pub match_id: MatchId,
    lines: mpsc::Sender<ChatFrame>,
    task: JoinHandle<()>,
}

impl ChatOut {
    pub fn start(att: &Attachment, match_id: MatchId, metrics: Arc<Metrics>) -> Self {
        let (lines, rx) = mpsc::channel(CHAT_OUTBOX);
        metrics.chat_writers.fetch_add(1, Relaxed);
        let queue = WriterQueue { rx, metrics };
        let task = match &att.wire {
            Wire::Quic { conn, .. } => tokio::spawn(chat_writer(conn.clone(), match_id, queue)),
            Wire::Ws { wire, .. } => {
                tokio::spawn(ws_chat_writer(wire.chat.clone(), match_id, queue))
            }
        };
        Self {
            match_id,
            lines,
            task,
        }
    }

    /// Queues a line. Full: the client's chat stream is blocked; the line is lost (and
    /// counted), not queued without bound.
    pub fn push(&self, line: ChatFrame, metrics: &Metrics) -> bool {
        // Counted before the send so the writer's decrement can never run first.
        metrics.chat_lines_queued.fetch_add(1, Relaxed);
        if self.lines.try_send(line).is_ok() {
            return true;
        }
        metrics.chat_lines_queued.fetch_sub(1, Relaxed);
        metrics.chat_lines_dropped.fetch_add(1, Relaxed);
        false
    }
}

impl std::ops::Drop for ChatOut {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A writer's end of its queue. It lives inside the writer task, so it is dropped however
/// the task ends (returned, or aborted while blocked on stream credit), and that is when
/// the writer and its unsent lines leave the gauges.
struct WriterQueue {
    rx: mpsc::Receiver<ChatFrame>,
    metrics: Arc<Metrics>,
}

impl WriterQueue {
    async fn recv(&mut self) -> Option<ChatFrame> {
        let line = self.rx.recv().await;
        if line.is_some() {
            self.metrics.chat_lines_queued.fetch_sub(1, Relaxed);
        }
        line
    }
}

impl std::ops::Drop for WriterQueue {
    fn drop(&mut self) {
        self.rx.close();
        let mut left = 0;
        while self.rx.try_recv().is_ok() {
            left += 1;
        }
        self.metrics.chat_lines_queued.fetch_sub(left, Relaxed);
        self.metrics.chat_writers.fetch_sub(1, Relaxed);
    }
}

/// Opens this pairing's chat stream toward the client and writes the partner's lines.
async fn chat_writer(conn: Connection, match_id: MatchId, mut lines: WriterQueue) {
    let Ok(mut send) = conn.open_uni().await else {
        return;
    };
    let Ok(open) = encode_frame(&ChatFrame::Open { match_id }.encode()) else {
        return;
    };
    if send.write_all(&open).await.is_err() {
        return;
    }
    while let Some(line) = lines.recv().await {
        let Ok(frame) = encode_frame(&line.encode()) else {
            continue;
        };
        if send.write_all(&frame).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}

/// The WebSocket's version of [`chat_writer`]: `Open`, then the lines, as chat messages
/// through the socket's writer.
async fn ws_chat_writer(
    out: mpsc::Sender<bytes::Bytes>,
    match_id: MatchId,
    mut lines: WriterQueue,
) {
    if out
        .send(ws::chat_message(&ChatFrame::Open { match_id }))
        .await
        .is_err()
    {
        return;
    }
    while let Some(line) = lines.recv().await {
        if out.send(ws::chat_message(&line)).await.is_err() {
            return;
        }
    }
}

/// Turns quinn's connection counters into the per-interval figures of `Stats`, and
/// quinn's datagram counts into the relay's metrics.
struct StatsProbe {
    at: std::time::Instant,
    lost: u64,
    sent: u64,
    bytes: u64,
    /// DATAGRAM frames quinn had sent on this connection at the last sample.
    datagrams_sent: u64,
}

impl StatsProbe {
    fn new(conn: &Connection) -> Self {
        let s = quinn::Connection::stats(conn);
        Self {
            at: std::time::Instant::now(),
            lost: s.path.lost_packets,
            sent: s.path.sent_packets,
            bytes: s.udp_tx.bytes,
            datagrams_sent: s.frame_tx.datagram,
        }
    }

    fn sample(&mut self, conn: &Connection, metrics: &Metrics) -> RelayStats {
        let s = quinn::Connection::stats(conn);
        let now = std::time::Instant::now();
        let secs = now.duration_since(self.at).as_secs_f64().max(0.001);
        let sent = s.path.sent_packets.saturating_sub(self.sent);
        let lost = s.path.lost_packets.saturating_sub(self.lost);
        let bytes = s.udp_tx.bytes.saturating_sub(self.bytes);
        metrics.datagrams_forwarded.fetch_add(
            s.frame_tx.datagram.saturating_sub(self.datagrams_sent),
            Relaxed,
        );
        metrics.hist.rtt.record(s.path.rtt);
        *self = Self {
            at: now,
            lost: s.path.lost_packets,
            sent: s.path.sent_packets,
            bytes: s.udp_tx.bytes,
            datagrams_sent: s.frame_tx.datagram,
        };
        RelayStats {
            rtt_us: u32::try_from(s.path.rtt.as_micros()).unwrap_or(u32::MAX),
            lost_permille: (lost * 1000)
                .checked_div(sent)
                .map_or(0, |p| u16::try_from(p).unwrap_or(1000)),
            send_rate_kbps: (bytes as f64 * 8.0 / 1000.0 / secs) as u32,
        }
    }

    /// The connection is done: the last datagrams sent, and what quinn's buffers dropped
    /// (queued toward this client and never sent; received from it and never read).
    fn finish(&mut self, link: &Link, metrics: &Metrics) {
        let LinkTx::Quic(conn) = &link.to else {
            return;
        };
        let s = quinn::Connection::stats(conn);
        let sent = s.frame_tx.datagram;
        metrics
            .datagrams_forwarded
            .fetch_add(sent.saturating_sub(self.datagrams_sent), Relaxed);
        self.datagrams_sent = sent;
        let queued = link.counts.queued.load(Relaxed);
        metrics
            .send_buffer_drops
            .fetch_add(queued.saturating_sub(sent), Relaxed);
        let read = link.counts.read.load(Relaxed);
        metrics
            .receive_buffer_drops
            .fetch_add(s.frame_rx.datagram.saturating_sub(read), Relaxed);
    }
}
