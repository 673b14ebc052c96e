//! One user's WebTransport session, from the first byte to the last.
//!
//! Phases: admission (total and per-address limits), `Hello` (within the hello timeout;
//! anything else first is refused), then the session proper. The session proper is a few
//! tasks, each with one job, so that a slow stream never stalls media:
//!
//! * the **main loop** owns the session's state (its pairing, rate limits) and handles
//!   control messages, chat lines and engine events;
//! * the **media task** reads datagrams and forwards them straight to the partner's
//!   connection, checking only the header and the match id ([`Route`] is the one piece of
//!   state it shares with the main loop: a per-session lock, never a global one);
//! * a **control reader** and a **control writer** turn the control stream into messages;
//! * a **chat reader** per incoming chat stream, and one **chat writer** per pairing.
//!
//! Every refusal is an [`ErrorCode`] with a message: sent on the control stream when
//! there is one, and as the close reason too.

use crate::engine::{Matchmaker, PeerLink, SessionEvent, SharedCaps};
use crate::limits::*;
use crate::matching::{MatchId, SessionId};
use crate::metrics::{Drop, Metrics};
use crate::Config;
use crate::Connection;
use duet_proto::frame::FrameReader;
use duet_proto::limits::{MAX_CHAT_BYTES, MAX_MEDIA_DATAGRAM_BYTES};
use duet_proto::media::peek_match_id;
use duet_proto::*;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use web_transport_quinn::{RecvStream, SendStream, SessionError, WebTransportError};

/// State shared by every session of one relay.
pub struct Shared {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub matchmaker: Matchmaker,
    next_session_id: AtomicU64,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Live resume tokens: one per session, removed when used or when the session ends,
    /// so the map is bounded by the session limit.
    resumes: Mutex<HashMap<ResumeToken, mpsc::Sender<Box<Handoff>>>>,
}

impl Shared {
    pub fn new(config: Config, metrics: Arc<Metrics>, matchmaker: Matchmaker) -> Self {
        Self {
            config,
            metrics,
            matchmaker,
            next_session_id: AtomicU64::new(1),
            per_ip: Mutex::new(HashMap::new()),
            resumes: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a session slot for `ip`, or says why not.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, Fatal> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = per_ip.values().sum();
        if total >= self.config.max_sessions {
            return Err(Fatal::new(
                ErrorCode::ServerFull,
                format!(
                    "The relay is full ({} people). Please try again in a minute.",
                    self.config.max_sessions
                ),
            ));
        }
        let mine = per_ip.entry(ip).or_insert(0);
        if *mine >= self.config.max_sessions_per_ip {
            return Err(Fatal::new(
                ErrorCode::TooManyFromAddress,
                format!(
                    "Too many sessions from your address (limit {}). Close another tab and retry.",
                    self.config.max_sessions_per_ip
                ),
            ));
        }
        *mine += 1;
        self.metrics.sessions.fetch_add(1, Relaxed);
        Ok(Admission {
            shared: self.clone(),
            ip,
        })
    }
}

/// A taken session slot, given back on drop whatever way the session ends.
struct Admission {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl std::ops::Drop for Admission {
    fn drop(&mut self) {
        let mut per_ip = self.shared.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
        self.shared.metrics.sessions.fetch_sub(1, Relaxed);
    }
}

/// A reason to end a session.
#[derive(Debug, Clone)]
pub struct Fatal {
    code: ErrorCode,
    message: String,
}

impl Fatal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn from_decode(e: &DecodeError, what: &str) -> Self {
        Fatal::new(e.code(), format!("{what}: {e}"))
    }
}

/// Handles one incoming QUIC connection to the end.
pub async fn handle_incoming(incoming: quinn::Incoming, shared: Arc<Shared>) {
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("QUIC handshake failed: {e}");
            return;
        }
    };
    // The HTTP/3 SETTINGS exchange and the WebTransport CONNECT request, bounded like Hello.
    let deadline = Duration::from_millis(shared.config.hello_timeout_ms);
    let request = match timeout(deadline, web_transport_quinn::Request::accept(conn.clone())).await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::debug!("WebTransport handshake failed: {e}");
            close_conn(&conn, ErrorCode::Malformed, "WebTransport handshake failed");
            return;
        }
        Err(_) => {
            close_conn(
                &conn,
                ErrorCode::HelloTimeout,
                "no WebTransport CONNECT request in time",
            );
            return;
        }
    };
    if request.url.path() != SESSION_PATH {
        let _ = timeout(
            ERROR_FLUSH_TIMEOUT,
            request.reject(web_transport_quinn::http::StatusCode::NOT_FOUND),
        )
        .await;
        close_conn(&conn, ErrorCode::Malformed, "unknown WebTransport path");
        return;
    }
    let admission = shared.admit(conn.remote_address().ip());
    let conn = match request.ok().await {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::debug!("session accept failed: {e}");
            return;
        }
    };
    shared.metrics.sessions_opened.fetch_add(1, Relaxed);
    match admission {
        Err(fatal) => {
            shared.metrics.sessions_refused.fetch_add(1, Relaxed);
            // Give the client a moment to open its control stream so it can read why.
            let control = timeout(ERROR_FLUSH_TIMEOUT, conn.accept_bi()).await;
            let send = match control {
                Ok(Ok((send, _recv))) => Some(send),
                _ => None,
            };
            close_with(&conn, send, &fatal, &shared.metrics).await;
        }
        Ok(admission) => run(conn, shared, admission).await,
    }
}

/// Sends `fatal` on the control stream (if any), waits briefly for it to arrive, then
/// closes the connection with the same code and message.
async fn close_with(conn: &Connection, send: Option<SendStream>, fatal: &Fatal, metrics: &Metrics) {
    metrics.error_sent(fatal.code);
    tracing::debug!(code = %fatal.code, "closing session: {}", fatal.message);
    if let Some(mut send) = send {
        let msg = ServerMsg::error(fatal.code, fatal.message.clone(), true);
        if let Ok(frame) = encode_frame(&msg.encode()) {
            let flushed = async {
                send.write_all(&frame).await.ok()?;
                send.finish().ok()?;
                // Resolves once the peer has acknowledged everything written.
                let _ = send.stopped().await;
                Some(())
            };
            let _ = timeout(ERROR_FLUSH_TIMEOUT, flushed).await;
        }
    }
    close_conn(conn, fatal.code, &fatal.message);
}

/// Closes the QUIC connection itself with `code` as the application error code, so any
/// client (not only one that reads WebTransport close capsules) learns the code and why.
pub(crate) fn close_conn(conn: &quinn::Connection, code: ErrorCode, message: &str) {
    conn.close(quinn::VarInt::from_u32(code.to_code()), message.as_bytes());
}

/// Waits for the control stream and its first frame, which must be `Hello`.
/// `Err(None)`: the connection went away before saying anything worth answering.
async fn await_hello(
    conn: &Connection,
    config: &Config,
    metrics: &Metrics,
) -> Result<(SendStream, RecvStream, FrameReader, Hello), Option<(Fatal, Option<SendStream>)>> {
    let mut control: Option<(SendStream, RecvStream)> = None;
    let mut reader = FrameReader::new();
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + Duration::from_millis(config.hello_timeout_ms);
    loop {
        let step = async {
            match &mut control {
                None => tokio::select! {
                    bi = conn.accept_bi() => match bi {
                        Ok(streams) => Step::Control(streams),
                        Err(_) => Step::Gone,
                    },
                    dg = conn.read_datagram() => match dg {
                        Ok(_) => Step::EarlyMedia,
                        Err(_) => Step::Gone,
                    },
                },
                Some((_, recv)) => tokio::select! {
                    n = recv.read(&mut buf) => match n {
                        Ok(Some(n)) => Step::Read(n),
                        _ => Step::Gone,
                    },
                    dg = conn.read_datagram() => match dg {
                        Ok(_) => Step::EarlyMedia,
                        Err(_) => Step::Gone,
                    },
                },
            }
        };
        let step = match tokio::time::timeout_at(deadline, step).await {
            Ok(s) => s,
            Err(_) => Step::TimedOut,
        };
        let send_of = |c: Option<(SendStream, RecvStream)>| c.map(|(s, _)| s);
        match step {
            Step::Control(streams) => control = Some(streams),
            Step::Read(n) => {
                reader.push(&buf[..n]);
                let frame = match reader.next_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => continue,
                    Err(e) => {
                        return Err(Some((
                            Fatal::from_decode(&e, "control frame"),
                            send_of(control),
                        )))
                    }
                };
                let msg = match ClientMsg::decode(&frame) {
                    Ok(m) => m,
                    Err(e) => {
                        return Err(Some((
                            Fatal::from_decode(&e, "first message"),
                            send_of(control),
                        )))
                    }
                };
                let ClientMsg::Hello(hello) = msg else {
                    let fatal = Fatal::new(
                        ErrorCode::WrongState,
                        format!("the first message must be Hello, not {}", msg_name(&msg)),
                    );
                    return Err(Some((fatal, send_of(control))));
                };
                if hello.version != PROTOCOL_VERSION {
                    let fatal = Fatal::new(
                        ErrorCode::UnsupportedVersion,
                        format!(
                            "This relay speaks protocol version {PROTOCOL_VERSION}, the app sent {}. Reload the page or update the app.",
                            hello.version
                        ),
                    );
                    return Err(Some((fatal, send_of(control))));
                }
                let Some((send, recv)) = control else {
                    continue;
                };
                return Ok((send, recv, reader, hello));
            }
            Step::EarlyMedia => {
                metrics.dropped(Drop::BeforeHello);
                let fatal = Fatal::new(ErrorCode::WrongState, "media sent before Hello");
                return Err(Some((fatal, send_of(control))));
            }
            Step::TimedOut => {
                let fatal = Fatal::new(
                    ErrorCode::HelloTimeout,
                    format!("no Hello within {} ms", config.hello_timeout_ms),
                );
                return Err(Some((fatal, send_of(control))));
            }
            Step::Gone => return Err(None),
        }
    }
}

enum Step {
    Control((SendStream, RecvStream)),
    Read(usize),
    EarlyMedia,
    TimedOut,
    Gone,
}

fn msg_name(msg: &ClientMsg) -> &'static str {
    match msg {
        ClientMsg::Hello(_) => "Hello",
        ClientMsg::Next { .. } => "Next",
        ClientMsg::Leave => "Leave",
        ClientMsg::RequestKeyframe { .. } => "RequestKeyframe",
        ClientMsg::Caps(_) => "Caps",
        ClientMsg::Nack(_) => "Nack",
        ClientMsg::ReceiverReport(_) => "ReceiverReport",
        ClientMsg::Report(_) => "Report",
    }
}

/// Where this session's media goes: the partner's session, for one pairing.
struct Route {
    match_id: MatchId,
    partner: Connection,
}

impl Route {
    fn new(match_id: MatchId, partner: &Connection) -> Self {
        Self {
            match_id,
            partner: partner.clone(),
        }
    }
}

type SharedRoute = Arc<Mutex<Option<Route>>>;

/// What the reader tasks hand the main loop.
/// Large payloads are boxed: a channel allocates room for 32 of its items up front, and
/// thousands of sessions each hold several channels.
enum Input {
    Control(Box<ClientMsg>),
    ControlClosed,
    Chat { match_id: MatchId, text: String },
    ChatRefused(Fatal),
    Fatal(Fatal),
}

struct Current {
    match_id: MatchId,
    partner: PeerLink,
    shared_interests: Vec<String>,
    /// The codecs chosen at pairing time, re-sent as they were on resume.
    send_codec: Option<VideoCodec>,
    recv_codec: Option<VideoCodec>,
    chat_out: Option<mpsc::Sender<String>>,
}

/// A new connection taking over a session with its resume token.
pub struct Handoff {
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
    reader: FrameReader,
    admission: Admission,
}

/// One connection's worth of plumbing. A session has one while its client is connected and
/// gets a new one when the client resumes on a new connection.
struct Attachment {
    conn: Connection,
    out: mpsc::Sender<Box<ServerMsg>>,
    writer: tokio::task::JoinHandle<()>,
    in_tx: mpsc::Sender<Input>,
    inbox: mpsc::Receiver<Input>,
    media: tokio::task::JoinHandle<()>,
    stats: StatsProbe,
    _admission: Admission,
}

impl Attachment {
    fn start(h: Handoff, route: SharedRoute, shared: &Shared) -> Self {
        let (out, out_rx) = mpsc::channel::<Box<ServerMsg>>(CONTROL_OUTBOX);
        let writer = tokio::spawn(control_writer(h.send, out_rx));
        let (in_tx, inbox) = mpsc::channel::<Input>(CONTROL_INBOX);
        tokio::spawn(control_reader(h.recv, h.reader, in_tx.clone()));
        let media = tokio::spawn(forward_media(
            h.conn.clone(),
            route,
            shared.metrics.clone(),
            shared.config.max_media_kbps,
        ));
        Self {
            stats: StatsProbe::new(&h.conn),
            conn: h.conn,
            out,
            writer,
            in_tx,
            inbox,
            media,
            _admission: h.admission,
        }
    }

    /// Stops this connection's tasks and closes it: with `fatal`'s code and message (sent
    /// on the control stream first), or normally.
    async fn detach(self, fatal: Option<Fatal>, metrics: &Metrics) {
        // The media task ends by itself once the connection is closed (below).
        drop(self.media);
        match fatal {
            Some(fatal) => {
                metrics.error_sent(fatal.code);
                // The writer sends this last message, finishes the stream and waits for it.
                let _ = self.out.try_send(Box::new(ServerMsg::error(
                    fatal.code,
                    fatal.message.clone(),
                    true,
                )));
                drop(self.out);
                let _ = timeout(ERROR_FLUSH_TIMEOUT, self.writer).await;
                close_conn(&self.conn, fatal.code, &fatal.message);
            }
            None => {
                self.writer.abort();
                quinn::Connection::close(&self.conn, 0u32.into(), b"bye");
            }
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
fn client_closed(conn: &Connection, why: &quinn::ConnectionError) -> bool {
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

/// How an attachment ended.
enum Ended {
    /// The client broke the protocol: close with this error and end the session.
    Fatal(Fatal),
    /// The client left on purpose (closed the connection or its control stream).
    Left,
    /// The connection was lost (timed out, reset): hold the session for a resume.
    Lost,
}

async fn run(conn: Connection, shared: Arc<Shared>, admission: Admission) {
    let metrics = shared.metrics.clone();
    let (send, recv, reader, hello) = match await_hello(&conn, &shared.config, &metrics).await {
        Ok(x) => x,
        Err(Some((fatal, send))) => return close_with(&conn, send, &fatal, &metrics).await,
        Err(None) => return,
    };
    let handoff = Handoff {
        conn,
        send,
        recv,
        reader,
        admission,
    };
    if let Some(token) = hello.resume {
        return resume_elsewhere(&shared, token, handoff).await;
    }
    let id: SessionId = shared.next_session_id.fetch_add(1, Relaxed);
    let span = tracing::debug_span!("session", id);
    let _enter = span.enter();
    tracing::debug!(name = %hello.name, "hello");

    let (events_tx, mut events) = mpsc::channel::<SessionEvent>(SESSION_EVENTS);
    let (handoff_tx, mut handoffs) = mpsc::channel::<Box<Handoff>>(1);
    let route: SharedRoute = Arc::new(Mutex::new(None));
    let link = PeerLink {
        session_id: id,
        name: Arc::from(hello.name.as_str()),
        caps: Arc::new(Mutex::new(hello.media.clone())),
        conn: handoff.conn.clone(),
        events: events_tx,
    };
    let caps = link.caps.clone();
    let mut session = Session {
        id,
        caps,
        shared: shared.clone(),
        att: Some(Attachment::start(handoff, route.clone(), &shared)),
        route,
        current: None,
        left_while_away: None,
        token: None,
        handoff_tx,
        next_bucket: bucket(shared.config.next_burst, shared.config.next_per_minute),
        chat_bucket: bucket(shared.config.chat_burst, shared.config.chat_per_minute),
        control_bucket: TokenBucket::new(100.0, 50.0, Instant::now().into_std()),
    };
    session.welcome(false);
    shared.matchmaker.join(link, hello.interests.clone()).await;

    let mut stats_tick = tokio::time::interval(Duration::from_millis(
        shared.config.stats_interval_ms.max(50),
    ));
    stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let grace = Duration::from_secs(shared.config.resume_grace_s);

    let leave_reason = loop {
        let ended = session
            .serve(&mut events, &mut handoffs, &mut stats_tick)
            .await;
        let att = session.att.take();
        match ended {
            Ended::Fatal(f) => {
                if let Some(att) = att {
                    att.detach(Some(f), &metrics).await;
                }
                break LeaveReason::Left;
            }
            Ended::Left => {
                if let Some(att) = att {
                    att.detach(None, &metrics).await;
                }
                break LeaveReason::Left;
            }
            Ended::Lost => {
                if let Some(att) = att {
                    att.detach(None, &metrics).await;
                }
                if grace.is_zero() {
                    break LeaveReason::Disconnected;
                }
                session.hold().await;
                match session.park(&mut events, &mut handoffs, grace).await {
                    Some(h) => session.resume(h).await,
                    None => break LeaveReason::Disconnected,
                }
            }
        }
    };
    session.forget_token();
    session.set_route(None);
    shared.matchmaker.gone(id, leave_reason).await;
}

/// A `Hello` with a resume token: hand this connection to the session it names.
async fn resume_elsewhere(shared: &Shared, token: ResumeToken, handoff: Handoff) {
    let slot = shared
        .resumes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&token);
    let refused = match slot {
        Some(tx) => match tx.try_send(Box::new(handoff)) {
            Ok(()) => return,
            Err(e) => *e.into_inner(),
        },
        None => handoff,
    };
    let fatal = Fatal::new(
        ErrorCode::BadResumeToken,
        "This call can no longer be resumed (it ended, the wait for you ran out, or the link was already used). Start again to meet someone.",
    );
    close_with(&refused.conn, Some(refused.send), &fatal, &shared.metrics).await;
}

fn bucket(burst: u32, per_minute: u32) -> TokenBucket {
    TokenBucket::new(
        f64::from(burst.max(1)),
        f64::from(per_minute) / 60.0,
        Instant::now().into_std(),
    )
}

enum Stop {
    Normal,
    Fatal(Fatal),
}

struct Session {
    id: SessionId,
    /// This client's media capabilities, shared with the engine's view of it.
    caps: SharedCaps,
    shared: Arc<Shared>,
    /// The client's current connection; `None` while it is away.
    att: Option<Attachment>,
    route: SharedRoute,
    current: Option<Current>,
    /// The partner left while the client was away: told when it comes back.
    left_while_away: Option<LeaveReason>,
    /// The resume token the client holds now (each use issues a new one).
    token: Option<ResumeToken>,
    handoff_tx: mpsc::Sender<Box<Handoff>>,
    next_bucket: TokenBucket,
    chat_bucket: TokenBucket,
    control_bucket: TokenBucket,
}

impl Session {
    /// Serves the current attachment until it ends. A resume that arrives meanwhile (the
    /// client reconnected before the relay noticed the old connection die) replaces the
    /// attachment in place.
    async fn serve(
        &mut self,
        events: &mut mpsc::Receiver<SessionEvent>,
        handoffs: &mut mpsc::Receiver<Box<Handoff>>,
        stats_tick: &mut tokio::time::Interval,
    ) -> Ended {
        loop {
            let Some(att) = self.att.as_mut() else {
                return Ended::Lost;
            };
            let conn = att.conn.clone();
            let step = tokio::select! {
                input = att.inbox.recv() => match input {
                    Some(input) => self.on_input(input).await,
                    None => Ok(()),
                },
                event = events.recv() => match event {
                    Some(event) => self.on_event(event),
                    None => Ok(()),
                },
                uni = conn.accept_uni() => {
                    if let Ok(stream) = uni {
                        tokio::spawn(chat_reader(stream, att.in_tx.clone()));
                    }
                    Ok(())
                }
                _ = stats_tick.tick() => {
                    let stats = att.stats.sample(&conn);
                    self.send(ServerMsg::Stats(stats));
                    Ok(())
                }
                h = handoffs.recv() => {
                    if let (Some(h), Some(old)) = (h, self.att.take()) {
                        old.detach(None, &self.shared.metrics).await;
                        self.resume(h).await;
                    }
                    Ok(())
                }
                why = quinn::Connection::closed(&conn) => {
                    return if client_closed(&conn, &why) { Ended::Left } else { Ended::Lost };
                }
            };
            match step {
                Ok(()) => {}
                Err(Stop::Normal) => return Ended::Left,
                Err(Stop::Fatal(f)) => return Ended::Fatal(f),
            }
        }
    }

    /// The connection is gone: keep the pairing, tell the partner, offer nobody new.
    async fn hold(&mut self) {
        self.shared.matchmaker.hold(self.id).await;
        if let Some(cur) = &self.current {
            let _ = cur.partner.events.try_send(SessionEvent::FromPartner {
                match_id: cur.match_id,
                msg: Box::new(ServerMsg::PeerReconnecting),
            });
        }
    }

    /// Waits up to `grace` for the client to come back, keeping track of what happens to
    /// its pairing meanwhile.
    async fn park(
        &mut self,
        events: &mut mpsc::Receiver<SessionEvent>,
        handoffs: &mut mpsc::Receiver<Box<Handoff>>,
        grace: Duration,
    ) -> Option<Box<Handoff>> {
        let deadline = Instant::now() + grace;
        loop {
            tokio::select! {
                h = handoffs.recv() => return h,
                event = events.recv() => {
                    if let Some(event) = event {
                        let _ = self.on_event(event);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }

    /// Takes the client back on a new connection: a new token, the call's state, and the
    /// partner told (and re-pointed at the new connection).
    async fn resume(&mut self, h: Box<Handoff>) {
        let conn = h.conn.clone();
        if let Some(cur) = self.current.as_mut() {
            // The chat stream toward the client went to the old connection.
            cur.chat_out = None;
        }
        self.att = Some(Attachment::start(*h, self.route.clone(), &self.shared));
        self.welcome(true);
        if let Some(reason) = self.left_while_away.take() {
            self.send(ServerMsg::PeerLeft { reason });
        }
        if let Some(cur) = &self.current {
            // The same match id: the client carries on with the same partner.
            self.send(ServerMsg::Matched(Matched {
                match_id: cur.match_id,
                partner_name: cur.partner.name.to_string(),
                shared_interests: cur.shared_interests.clone(),
                send_codec: cur.send_codec,
                recv_codec: cur.recv_codec,
            }));
            let _ = cur.partner.events.try_send(SessionEvent::PartnerReturned {
                match_id: cur.match_id,
                conn: conn.clone(),
            });
        }
        self.shared.matchmaker.release(self.id, conn).await;
    }

    /// Sends `Welcome` with a fresh single-use resume token, registered for this session.
    fn welcome(&mut self, resumed: bool) {
        self.forget_token();
        let token = ResumeToken(rand::random());
        self.shared
            .resumes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token, self.handoff_tx.clone());
        self.token = Some(token);
        self.send(ServerMsg::Welcome(Welcome {
            session_id: self.id,
            resume_token: token,
            resumed,
        }));
    }

    fn forget_token(&mut self) {
        if let Some(old) = self.token.take() {
            self.shared
                .resumes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&old);
        }
    }

    /// Queues a message for the control stream. While the client is away there is nowhere
    /// to send it; what matters is replayed on resume. A full queue means the client is not
    /// reading its control stream; the message is dropped and `must_send` closes it.
    fn send(&self, msg: ServerMsg) -> bool {
        match &self.att {
            Some(att) => att.out.try_send(Box::new(msg)).is_ok(),
            None => true,
        }
    }

    fn must_send(&self, msg: ServerMsg) -> Result<(), Stop> {
        if self.send(msg) {
            Ok(())
        } else {
            Err(Stop::Fatal(Fatal::new(
                ErrorCode::Internal,
                "the control stream is not being read",
            )))
        }
    }

    fn refuse(&self, code: ErrorCode, message: impl Into<String>) {
        self.shared.metrics.error_sent(code);
        self.send(ServerMsg::error(code, message, false));
    }

    /// This client left its pairing (Next, Leave, Report): from now on its media and
    /// messages reach nobody, whatever the partner's session has yet to hear.
    fn end_own_pairing(&mut self) {
        self.current = None;
        self.set_route(None);
    }

    fn set_route(&self, route: Option<Route>) {
        *self.route.lock().unwrap_or_else(|e| e.into_inner()) = route;
    }

    async fn on_input(&mut self, input: Input) -> Result<(), Stop> {
        let now = Instant::now().into_std();
        match input {
            Input::Fatal(f) => Err(Stop::Fatal(f)),
            Input::ControlClosed => Err(Stop::Normal),
            Input::ChatRefused(f) => {
                self.refuse(f.code, f.message);
                Ok(())
            }
            Input::Chat { match_id, text } => {
                let Some(cur) = self.current.as_ref().filter(|c| c.match_id == match_id) else {
                    return Ok(()); // a line for a pairing that has ended
                };
                if !self.chat_bucket.try_take(1.0, now) {
                    self.refuse(
                        ErrorCode::RateLimited,
                        "You are sending messages too fast; that one was not delivered.",
                    );
                    return Ok(());
                }
                let delivered = cur
                    .partner
                    .events
                    .try_send(SessionEvent::Chat { match_id, text })
                    .is_ok();
                if delivered {
                    self.shared
                        .metrics
                        .chat_lines_forwarded
                        .fetch_add(1, Relaxed);
                }
                Ok(())
            }
            Input::Control(msg) => self.on_control(*msg, now).await,
        }
    }

    async fn on_control(&mut self, msg: ClientMsg, now: std::time::Instant) -> Result<(), Stop> {
        let matchmaker = &self.shared.matchmaker;
        match msg {
            ClientMsg::Hello(_) => {
                return Err(Stop::Fatal(Fatal::new(
                    ErrorCode::WrongState,
                    "Hello was already sent on this session",
                )))
            }
            ClientMsg::Next { match_id } => {
                let current = self.current.as_ref().map(|c| c.match_id);
                if match_id != current {
                    // Sent while the client saw another pairing (its partner pressed Next
                    // first, and this client may already be paired again): acting on it
                    // would end a pairing the client has not seen yet.
                    return Ok(());
                }
                if !self.next_bucket.try_take(1.0, now) {
                    self.refuse(
                        ErrorCode::RateLimited,
                        "Too many Next presses; wait a moment and try again.",
                    );
                    return Ok(());
                }
                matchmaker.next(self.id, current).await;
                self.end_own_pairing();
            }
            ClientMsg::Leave => {
                matchmaker.leave(self.id).await;
                self.end_own_pairing();
            }
            ClientMsg::Report(report) => {
                if self.current.as_ref().map(|c| c.match_id) != Some(report.match_id) {
                    return Ok(()); // about a pairing that has ended: nobody to report
                }
                tracing::info!(session = self.id, reason = ?report.reason, "abuse report");
                matchmaker.report(self.id).await;
                self.end_own_pairing();
            }
            ClientMsg::Caps(caps) => {
                *self.caps.lock().unwrap_or_else(|e| e.into_inner()) = caps;
            }
            ClientMsg::RequestKeyframe { .. }
            | ClientMsg::ReceiverReport(_)
            | ClientMsg::Nack(_) => {
                if !self.control_bucket.try_take(1.0, now) {
                    return Ok(()); // far above any real client's rate: drop quietly
                }
                let (match_id, relayed) = match msg {
                    ClientMsg::ReceiverReport(r) => (r.match_id, ServerMsg::PeerReport(r)),
                    ClientMsg::Nack(n) => (n.match_id, ServerMsg::PeerNack(n)),
                    ClientMsg::RequestKeyframe { match_id } => {
                        (match_id, ServerMsg::KeyframeRequested)
                    }
                    _ => return Ok(()),
                };
                if let Some(cur) = self.current.as_ref().filter(|c| c.match_id == match_id) {
                    let _ = cur.partner.events.try_send(SessionEvent::FromPartner {
                        match_id: cur.match_id,
                        msg: Box::new(relayed),
                    });
                }
            }
        }
        Ok(())
    }

    fn on_event(&mut self, event: SessionEvent) -> Result<(), Stop> {
        match event {
            SessionEvent::Queued { waiting } => self.must_send(ServerMsg::Queued { waiting }),
            SessionEvent::Paired {
                match_id,
                partner,
                shared_interests,
            } => {
                self.set_route(Some(Route::new(match_id, &partner.conn)));
                let (send_codec, recv_codec) = {
                    let mine = self.caps.lock().unwrap_or_else(|e| e.into_inner());
                    let theirs = partner.caps.lock().unwrap_or_else(|e| e.into_inner());
                    (
                        MediaCaps::choose(&mine, &theirs),
                        MediaCaps::choose(&theirs, &mine),
                    )
                };
                let msg = ServerMsg::Matched(Matched {
                    match_id,
                    partner_name: partner.name.to_string(),
                    shared_interests: shared_interests.clone(),
                    send_codec,
                    recv_codec,
                });
                self.current = Some(Current {
                    match_id,
                    partner: *partner,
                    shared_interests,
                    send_codec,
                    recv_codec,
                    chat_out: None,
                });
                self.left_while_away = None;
                self.must_send(msg)
            }
            SessionEvent::PartnerLeft { match_id, reason } => {
                if self
                    .current
                    .as_ref()
                    .is_some_and(|c| c.match_id == match_id)
                {
                    self.current = None;
                    self.set_route(None);
                    if self.att.is_none() {
                        self.left_while_away = Some(reason);
                    }
                }
                self.must_send(ServerMsg::PeerLeft { reason })
            }
            SessionEvent::PartnerReturned { match_id, conn } => {
                let Some(cur) = self.current.as_mut().filter(|c| c.match_id == match_id) else {
                    return Ok(());
                };
                cur.partner.conn = conn.clone();
                self.set_route(Some(Route::new(match_id, &conn)));
                self.send(ServerMsg::PeerReturned);
                Ok(())
            }
            SessionEvent::FromPartner { match_id, msg } => {
                if self
                    .current
                    .as_ref()
                    .is_some_and(|c| c.match_id == match_id)
                {
                    self.send(*msg);
                }
                Ok(())
            }
            SessionEvent::Chat { match_id, text } => {
                let Some(cur) = self.current.as_mut().filter(|c| c.match_id == match_id) else {
                    return Ok(());
                };
                let Some(att) = &self.att else {
                    return Ok(()); // away: the line is lost, like any datagram
                };
                let conn = att.conn.clone();
                let tx = cur.chat_out.get_or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(CHAT_OUTBOX);
                    tokio::spawn(chat_writer(conn, match_id, rx));
                    tx
                });
                // Full: the partner's chat stream is blocked; the line is lost, not queued.
                let _ = tx.try_send(text);
                Ok(())
            }
        }
    }
}

/// Reads control frames and hands decoded messages to the main loop. Awaiting the inbox
/// lets QUIC flow control slow a client that sends faster than the relay handles.
async fn control_reader(mut recv: RecvStream, mut reader: FrameReader, inbox: mpsc::Sender<Input>) {
    // Control messages are tens of bytes; a large frame just takes several reads.
    let mut buf = vec![0u8; 512];
    loop {
        loop {
            let input = match reader.next_frame() {
                Ok(None) => break,
                Ok(Some(frame)) => match ClientMsg::decode(&frame) {
                    Ok(msg) => Input::Control(Box::new(msg)),
                    Err(e) => Input::Fatal(Fatal::from_decode(&e, "control message")),
                },
                Err(e) => Input::Fatal(Fatal::from_decode(&e, "control frame")),
            };
            let fatal = matches!(input, Input::Fatal(_));
            if inbox.send(input).await.is_err() || fatal {
                return;
            }
        }
        match recv.read(&mut buf).await {
            Ok(Some(n)) => reader.push(&buf[..n]),
            // The client finished its control stream: it is leaving on purpose.
            Ok(None) => {
                let _ = inbox.send(Input::ControlClosed).await;
                return;
            }
            // A read error means the connection itself failed or was reset; the main loop
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
async fn chat_reader(mut recv: RecvStream, inbox: mpsc::Sender<Input>) {
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
                        .send(Input::Fatal(Fatal::from_decode(&e, "chat frame")))
                        .await;
                    return;
                }
            };
            let input = match (ChatFrame::decode(&frame), match_id) {
                (Ok(ChatFrame::Open { match_id: m }), None) => {
                    match_id = Some(m);
                    continue;
                }
                (Ok(ChatFrame::Line { text }), Some(m)) => Input::Chat { match_id: m, text },
                (Ok(_), _) => Input::Fatal(Fatal::new(
                    ErrorCode::WrongState,
                    "a chat stream must start with Open and then carry lines",
                )),
                (Err(DecodeError::FieldTooLarge { .. }), Some(_)) => {
                    Input::ChatRefused(Fatal::new(
                        ErrorCode::TooLarge,
                        format!("That message is over {MAX_CHAT_BYTES} bytes and was not sent."),
                    ))
                }
                (Err(e), _) => Input::Fatal(Fatal::from_decode(&e, "chat frame")),
            };
            let fatal = matches!(input, Input::Fatal(_));
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

/// Opens this pairing's chat stream toward the client and writes the partner's lines.
async fn chat_writer(conn: Connection, match_id: MatchId, mut lines: mpsc::Receiver<String>) {
    let Ok(mut send) = conn.open_uni().await else {
        return;
    };
    let Ok(open) = encode_frame(&ChatFrame::Open { match_id }.encode()) else {
        return;
    };
    if send.write_all(&open).await.is_err() {
        return;
    }
    while let Some(text) = lines.recv().await {
        let Ok(frame) = encode_frame(&ChatFrame::Line { text }.encode()) else {
            continue;
        };
        if send.write_all(&frame).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}

/// The HTTP/3 datagram prefix (RFC 9297: the quarter stream id of the session's CONNECT
/// stream) of every session here. web-transport-quinn takes the connection's first
/// client bidirectional stream as the CONNECT stream, and that is stream 0, so every
/// session has id 0 and every datagram starts with this one byte. That is what lets the
/// relay forward the bytes it received as they are, prefix included, with no copy.
const DATAGRAM_PREFIX: u8 = 0;

/// The forwarding hot path: read a datagram, check its header and match id, hand the same
/// bytes to the partner's connection. No global lock; the only shared state is this
/// session's route.
///
/// This task is the only reader of the connection's datagrams, so none is taken from
/// under it. (wtransport, used before, had its own driver read datagrams into a channel;
/// reading around it lost one datagram per connection, reading through it cost a third
/// more CPU per datagram.)
async fn forward_media(conn: Connection, route: SharedRoute, metrics: Arc<Metrics>, kbps: u32) {
    // One second of the allowed rate as burst: enough for a keyframe at that bitrate.
    let bytes_per_s = f64::from(kbps) * 1000.0 / 8.0;
    let mut budget = TokenBucket::new(bytes_per_s, bytes_per_s, Instant::now().into_std());
    loop {
        let Ok(raw) = quinn::Connection::read_datagram(&conn).await else {
            break;
        };
        let Some((&DATAGRAM_PREFIX, payload)) = raw.split_first() else {
            // Empty, or for a WebTransport session that does not exist.
            metrics.datagrams_received.fetch_add(1, Relaxed);
            metrics.dropped(Drop::Malformed);
            continue;
        };
        metrics.datagrams_received.fetch_add(1, Relaxed);
        if payload.len() > MAX_MEDIA_DATAGRAM_BYTES {
            metrics.dropped(Drop::TooLarge);
            continue;
        }
        if MediaHeader::read(payload).is_err() {
            metrics.dropped(Drop::Malformed);
            continue;
        }
        let Some(match_id) = peek_match_id(payload) else {
            metrics.dropped(Drop::Malformed);
            continue;
        };
        if !budget.try_take(payload.len() as f64, Instant::now().into_std()) {
            metrics.dropped(Drop::RateLimited);
            continue;
        }
        let len = payload.len() as u64;
        let sent = {
            let guard = route.lock().unwrap_or_else(|e| e.into_inner());
            match guard.as_ref() {
                None => Err(Drop::NoPartner),
                Some(r) if r.match_id != match_id => Err(Drop::StaleMatch),
                Some(r) => {
                    quinn::Connection::send_datagram(&r.partner, raw).map_err(|_| Drop::SendFailed)
                }
            }
        };
        match sent {
            Ok(()) => {
                metrics.datagrams_forwarded.fetch_add(1, Relaxed);
                metrics.bytes_forwarded.fetch_add(len, Relaxed);
            }
            Err(why) => metrics.dropped(why),
        }
    }
}

/// Turns quinn's connection counters into the per-interval figures of `Stats`.
struct StatsProbe {
    at: std::time::Instant,
    lost: u64,
    sent: u64,
    bytes: u64,
}

impl StatsProbe {
    fn new(conn: &Connection) -> Self {
        let s = quinn::Connection::stats(conn);
        Self {
            at: std::time::Instant::now(),
            lost: s.path.lost_packets,
            sent: s.path.sent_packets,
            bytes: s.udp_tx.bytes,
        }
    }

    fn sample(&mut self, conn: &Connection) -> RelayStats {
        let s = quinn::Connection::stats(conn);
        let now = std::time::Instant::now();
        let secs = now.duration_since(self.at).as_secs_f64().max(0.001);
        let sent = s.path.sent_packets.saturating_sub(self.sent);
        let lost = s.path.lost_packets.saturating_sub(self.lost);
        let bytes = s.udp_tx.bytes.saturating_sub(self.bytes);
        *self = Self {
            at: now,
            lost: s.path.lost_packets,
            sent: s.path.sent_packets,
            bytes: s.udp_tx.bytes,
        };
        RelayStats {
            rtt_us: u32::try_from(s.path.rtt.as_micros()).unwrap_or(u32::MAX),
            lost_permille: (lost * 1000)
                .checked_div(sent)
                .map_or(0, |p| u16::try_from(p).unwrap_or(1000)),
            send_rate_kbps: (bytes as f64 * 8.0 / 1000.0 / secs) as u32,
        }
    }
}
