//! One user's session, from `Hello` to the end: the thin I/O around the pure
//! [`state::SessionState`].
//!
//! The session task waits for the next thing that happens (a control message or chat line
//! from its readers, an engine or partner event, its connection closing, a resume, the
//! grace running out, an eviction, the relay draining), hands it to the state machine, and
//! carries out the actions it returns. Around it, each with one job:
//!
//! * [`handshake`]: WebTransport request, `Hello`, admission, refusals and closes;
//! * [`resume`]: resume tokens and handing a new connection to its session;
//! * [`io`]: the control and chat streams and one connection's plumbing;
//! * [`crate::forward`]: the datagram path, which runs on its own per connection.

pub mod handshake;
pub mod io;
pub mod resume;
pub mod state;
pub mod ws;

use crate::admission::{Admission, Admissions};
use crate::engine::Matchmaker;
use crate::forward::Route;
use crate::limits::{REPORTS_PER_MINUTE, REPORT_BURST, SESSION_EVENTS};
use crate::matching::SessionId;
use crate::metrics::Metrics;
use crate::peer::{Peer, SessionEvent};
use crate::reputation::Person;
use crate::Config;
use duet_proto::{ErrorCode, Hello, LeaveReason, MediaCaps, ResumeToken, ServerMsg, Welcome};
use handshake::Handoff;
use io::{Attachment, ChatOut};
use resume::ResumeTokens;
use state::{Action, EngineCmd, Fatal, Input, Pairing, Rates, SessionState};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument;

/// Where the relay is in its life, as every session sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Serving,
    /// Calls go on for at most `within_ms`; no new pairs are made.
    Draining {
        within_ms: u32,
    },
    /// Every session closes with `shutting_down` now.
    Closing,
}

/// What the admin listener sees of a live session.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionInfo {
    pub id: SessionId,
    pub name: String,
    pub addr: String,
    pub age_s: u64,
    pub match_id: Option<u64>,
    pub partner: Option<SessionId>,
    pub away: bool,
}

struct Registered {
    name: Arc<str>,
    addr: SocketAddr,
    started: std::time::Instant,
    pairing: Option<(u64, SessionId)>,
    away: bool,
    peer: Arc<Peer>,
}

/// State shared by every session of one relay.
pub struct Shared {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub matchmaker: Matchmaker,
    pub admissions: Arc<Admissions>,
    pub resumes: ResumeTokens,
    pub lifecycle: watch::Receiver<Lifecycle>,
    next_session_id: AtomicU64,
    /// Live sessions, for the admin listener. Bounded by the session limit.
    registry: Mutex<HashMap<SessionId, Registered>>,
}

impl Shared {
    pub fn new(
        config: Config,
        metrics: Arc<Metrics>,
        matchmaker: Matchmaker,
        admissions: Arc<Admissions>,
        lifecycle: watch::Receiver<Lifecycle>,
    ) -> Self {
        Self {
            config,
            metrics,
            matchmaker,
            admissions,
            resumes: ResumeTokens::default(),
            lifecycle,
            next_session_id: AtomicU64::new(1),
            registry: Mutex::new(HashMap::new()),
        }
    }

    pub fn list_sessions(&self) -> Vec<SessionInfo> {
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<SessionInfo> = registry
            .iter()
            .map(|(id, r)| SessionInfo {
                id: *id,
                name: r.name.to_string(),
                addr: r.addr.to_string(),
                age_s: r.started.elapsed().as_secs(),
                match_id: r.pairing.map(|p| p.0),
                partner: r.pairing.map(|p| p.1),
                away: r.away,
            })
            .collect();
        out.sort_by_key(|s| s.id);
        out
    }

    /// Ends a session (admin). `false`: no such session.
    pub fn kick(&self, id: SessionId) -> bool {
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        match registry.get(&id) {
            Some(r) => {
                r.peer.kick(Fatal::new(
                    ErrorCode::Blocked,
                    "The operator ended this session.",
                ));
                true
            }
            None => false,
        }
    }

    fn update_registry(&self, id: SessionId, f: impl FnOnce(&mut Registered)) {
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = registry.get_mut(&id) {
            f(r);
        }
    }
}

type P = Arc<Peer>;

/// The session task's own state: the state machine and the I/O it drives.
struct Session {
    shared: Arc<Shared>,
    state: SessionState<P>,
    peer: P,
    /// The client's current connection; `None` while it is away.
    att: Option<Attachment>,
    route: Route,
    chat: Option<ChatOut>,
    /// The resume token the client holds now (each use issues a new one).
    token: Option<ResumeToken>,
    handoff_tx: resume::HandoffSender,
    /// Kept for the whole session, parked or not.
    _admission: Admission,
    /// When the client last became away, for the grace.
    away_until: Option<Instant>,
    paired_at: Option<Instant>,
    joined_at: Instant,
}

/// What woke the session task.
enum Wake {
    Input(Input<P>),
    Handoff(Box<Handoff>),
    ChatStream(web_transport_quinn::RecvStream),
    ConnClosed(bool),
    Lifecycle(Lifecycle),
    Nothing,
}

/// Serves a new session to its end.
pub async fn run(shared: Arc<Shared>, hello: Hello, handoff: Handoff, admission: Admission) {
    let id: SessionId = shared.next_session_id.fetch_add(1, Relaxed);
    let span = tracing::info_span!("session", id);
    serve(shared, id, hello, handoff, admission)
        .instrument(span)
        .await;
}

async fn serve(
    shared: Arc<Shared>,
    id: SessionId,
    hello: Hello,
    handoff: Handoff,
    admission: Admission,
) {
    tracing::debug!(name = %hello.name, "hello");
    let metrics = shared.metrics.clone();
    let addr = handoff.remote_addr();
    let (events_tx, mut events) = mpsc::channel::<SessionEvent>(SESSION_EVENTS);
    let (handoff_tx, mut handoffs) = mpsc::channel::<Box<Handoff>>(1);
    let route: Route = Arc::default();
    let idle = Duration::from_millis(shared.config.idle_timeout_ms);
    let att = Attachment::start(
        handoff,
        route.clone(),
        metrics.clone(),
        shared.config.max_media_kbps,
        idle,
    );
    let peer = Arc::new(Peer::new(
        id,
        &hello.name,
        hello.media.clone(),
        att.link.clone(),
        events_tx,
        Person::new(hello.visitor.map(|v| v.0), admission.prefix),
    ));
    shared
        .registry
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            id,
            Registered {
                name: peer.name.clone(),
                addr,
                started: std::time::Instant::now(),
                pairing: None,
                away: false,
                peer: peer.clone(),
            },
        );
    let c = &shared.config;
    let rates = Rates {
        next_burst: c.next_burst,
        next_per_minute: c.next_per_minute,
        chat_burst: c.chat_burst,
        chat_per_minute: c.chat_per_minute,
        report_burst: REPORT_BURST,
        report_per_minute: REPORTS_PER_MINUTE,
    };
    let now = Instant::now();
    let mut s = Session {
        shared: shared.clone(),
        state: SessionState::new(id, rates, now.into_std()),
        peer: peer.clone(),
        att: Some(att),
        route,
        chat: None,
        token: None,
        handoff_tx,
        _admission: admission,
        away_until: None,
        paired_at: None,
        joined_at: now,
    };
    let mut lifecycle = shared.lifecycle.clone();
    let mut pending = vec![Action::Welcome { resumed: false }];
    // A relay already draining tells a newcomer at once.
    if let Lifecycle::Draining { within_ms } = *lifecycle.borrow_and_update() {
        pending.extend(
            s.state
                .handle(Input::Draining { within_ms }, now.into_std()),
        );
    }
    let mut end = s.exec(pending).await;
    if end.is_none() {
        shared
            .matchmaker
            .join(peer.clone(), hello.interests.clone())
            .await;
    }

    let mut stats_tick = tokio::time::interval(Duration::from_millis(
        shared.config.stats_interval_ms.max(50),
    ));
    stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    while end.is_none() {
        let wake = s
            .next_wake(&mut events, &mut handoffs, &mut stats_tick, &mut lifecycle)
            .await;
        let input = match wake {
            Wake::Input(i) => i,
            Wake::Nothing => continue,
            Wake::ChatStream(stream) => {
                if let Some(att) = &s.att {
                    tokio::spawn(io::chat_reader(stream, att.in_tx.clone()));
                }
                continue;
            }
            Wake::Handoff(h) => {
                // Swap the connection in one step: the partner's forwarder reads the new
                // one on its next datagram. The old one (if still up) is closed.
                if let Some(old) = s.att.take() {
                    old.detach(None, &metrics).await;
                }
                s.chat = None;
                let att = Attachment::start(
                    *h,
                    s.route.clone(),
                    metrics.clone(),
                    shared.config.max_media_kbps,
                    idle,
                );
                s.peer.set_link(Some(att.link.clone()));
                s.att = Some(att);
                s.away_until = None;
                shared.update_registry(id, |r| r.away = false);
                Input::Resumed
            }
            Wake::ConnClosed(on_purpose) => {
                if on_purpose {
                    Input::ClientLeft
                } else {
                    if let Some(att) = s.att.take() {
                        att.detach(None, &metrics).await;
                    }
                    s.peer.set_link(None);
                    let grace = Duration::from_secs(shared.config.resume_grace_s);
                    if grace.is_zero() {
                        Input::GraceOver
                    } else {
                        s.away_until = Some(Instant::now() + grace);
                        shared.update_registry(id, |r| r.away = true);
                        Input::ConnectionLost
                    }
                }
            }
            Wake::Lifecycle(Lifecycle::Draining { within_ms }) => Input::Draining { within_ms },
            Wake::Lifecycle(Lifecycle::Closing) => Input::ShuttingDown,
            Wake::Lifecycle(Lifecycle::Serving) => continue,
        };
        match &input {
            // The state machine ignores Caps and NextKey: the handle is where the partner's
            // session reads the caps, and the engine takes the key, when the next pair is made.
            Input::Control(duet_proto::ClientMsg::Caps(caps)) => s.peer.set_caps(caps.clone()),
            Input::Control(duet_proto::ClientMsg::NextKey { public }) => {
                s.peer.register_next_key(*public)
            }
            _ => {}
        }
        // A session lost with no grace goes straight from Lost to the end.
        let immediate_end = matches!(input, Input::GraceOver) && !s.state.is_away();
        let actions = if immediate_end {
            let mut a = s
                .state
                .handle(Input::ConnectionLost, Instant::now().into_std());
            a.extend(s.state.handle(Input::GraceOver, Instant::now().into_std()));
            a
        } else {
            s.state.handle(input, Instant::now().into_std())
        };
        end = s.exec(actions).await;
    }

    let reason = end.unwrap_or(LeaveReason::Left);
    if let Some(t) = s.token.take() {
        shared.resumes.forget(t);
    }
    *s.route.lock().unwrap_or_else(|e| e.into_inner()) = None;
    s.chat = None;
    s.peer.set_link(None);
    if let Some(at) = s.paired_at {
        metrics.hist.call_length.record(at.elapsed());
    }
    shared
        .registry
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id);
    shared.matchmaker.gone(id, reason).await;
    tracing::debug!(?reason, "session ended");
}

impl Session {
    async fn next_wake(
        &mut self,
        events: &mut mpsc::Receiver<SessionEvent>,
        handoffs: &mut mpsc::Receiver<Box<Handoff>>,
        stats_tick: &mut tokio::time::Interval,
        lifecycle: &mut watch::Receiver<Lifecycle>,
    ) -> Wake {
        let away_until = self.away_until;
        let grace = async move {
            match away_until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let peer = self.peer.clone();
        match self.att.as_mut() {
            Some(att) => {
                let conn = att.watch();
                tokio::select! {
                    input = att.inbox.recv() => match input {
                        Some(i) => Wake::Input(i),
                        // Every reader is gone; the connection's close says why.
                        None => Wake::ConnClosed(conn.closed().await),
                    },
                    event = events.recv() => on_event(&peer, event),
                    uni = conn.accept_chat() => match uni {
                        Some(stream) => Wake::ChatStream(stream),
                        None => Wake::Nothing,
                    },
                    _ = stats_tick.tick() => Wake::Input(Input::StatsDue),
                    h = handoffs.recv() => match h {
                        Some(h) => Wake::Handoff(h),
                        None => Wake::Nothing,
                    },
                    on_purpose = conn.closed() => Wake::ConnClosed(on_purpose),
                    _ = peer.evicted() => Wake::Input(Input::Evicted),
                    f = peer.kicked() => Wake::Input(Input::Kicked(f)),
                    changed = lifecycle.changed() => match changed {
                        Ok(()) => Wake::Lifecycle(*lifecycle.borrow_and_update()),
                        Err(_) => Wake::Lifecycle(Lifecycle::Closing),
                    },
                }
            }
            None => tokio::select! {
                event = events.recv() => on_event(&peer, event),
                h = handoffs.recv() => match h {
                    Some(h) => Wake::Handoff(h),
                    None => Wake::Nothing,
                },
                _ = grace => Wake::Input(Input::GraceOver),
                _ = peer.evicted() => Wake::Input(Input::Evicted),
                f = peer.kicked() => Wake::Input(Input::Kicked(f)),
                changed = lifecycle.changed() => match changed {
                    Ok(()) => Wake::Lifecycle(*lifecycle.borrow_and_update()),
                    Err(_) => Wake::Lifecycle(Lifecycle::Closing),
                },
            },
        }
    }
}

/// Turns an engine or partner event into the state machine's input.
fn on_event(me: &Peer, event: Option<SessionEvent>) -> Wake {
    {
        let Some(event) = event else {
            return Wake::Nothing; // never: this task holds a sender in its own Peer
        };
        Wake::Input(match event {
            SessionEvent::Queued { waiting } => Input::Queued { waiting },
            SessionEvent::Paired {
                match_id,
                partner,
                shared_interests,
                partner_key,
                own_key,
            } => {
                let (mine, theirs) = (me.caps(), partner.caps());
                Input::Paired(Pairing {
                    match_id,
                    partner_id: partner.id,
                    partner_name: partner.name.to_string(),
                    shared_interests,
                    send_codec: MediaCaps::choose(&mine, &theirs),
                    recv_codec: MediaCaps::choose(&theirs, &mine),
                    partner_key,
                    own_key,
                    partner,
                })
            }
            SessionEvent::PartnerLeft { match_id, reason } => {
                Input::PartnerLeft { match_id, reason }
            }
            SessionEvent::FromPartner { match_id, msg } => match *msg {
                ServerMsg::PeerReconnecting => Input::PartnerAway { match_id },
                ServerMsg::PeerReturned => Input::PartnerReturned { match_id },
                msg => Input::FromPartner { match_id, msg },
            },
            SessionEvent::Chat { match_id, line } => Input::PartnerChat { match_id, line },
        })
    }
}

impl Session {
    /// Carries out the state machine's actions in order. `Some(reason)`: the session is
    /// over (its partner is told `reason`).
    async fn exec(&mut self, actions: Vec<Action<P>>) -> Option<LeaveReason> {
        let mut queue: std::collections::VecDeque<Action<P>> = actions.into();
        let metrics = self.shared.metrics.clone();
        let id = self.state.id();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Send(msg) => {
                    if !self.send(msg) {
                        // The client is not reading its control stream.
                        let f = Fatal::new(
                            ErrorCode::Overloaded,
                            "This app is not reading the relay's messages (its control stream is full).",
                        );
                        queue.clear();
                        queue.extend(
                            self.state
                                .handle(Input::Broken(f), Instant::now().into_std()),
                        );
                    }
                }
                Action::Welcome { resumed } => {
                    if let Some(old) = self.token.take() {
                        self.shared.resumes.forget(old);
                    }
                    let token = self.shared.resumes.issue(self.handoff_tx.clone());
                    self.token = Some(token);
                    queue.push_front(Action::Send(ServerMsg::Welcome(Welcome {
                        session_id: id,
                        resume_token: token,
                        resumed,
                    })));
                }
                Action::Route(r) => {
                    let pairing = r.as_ref().map(|(m, p)| (*m, p.id));
                    if pairing.is_some() {
                        metrics.hist.time_to_match.record(self.joined_at.elapsed());
                        self.paired_at = Some(Instant::now());
                    } else if let Some(at) = self.paired_at.take() {
                        metrics.hist.call_length.record(at.elapsed());
                        self.joined_at = Instant::now();
                    }
                    *self.route.lock().unwrap_or_else(|e| e.into_inner()) = r;
                    self.shared.update_registry(id, |reg| reg.pairing = pairing);
                }
                Action::Engine(cmd) => {
                    let mm = &self.shared.matchmaker;
                    match cmd {
                        EngineCmd::Next { expected } => mm.next(id, expected).await,
                        EngineCmd::Leave => mm.leave(id).await,
                        EngineCmd::Report { .. } => mm.report(id).await,
                        EngineCmd::Hold => mm.hold(id).await,
                        EngineCmd::Release => mm.release(id).await,
                        EngineCmd::RequeueWhenLeft(on) => mm.requeue_when_left(id, on).await,
                    }
                }
                Action::ToPartner {
                    partner,
                    match_id,
                    msg,
                } => {
                    let _ = partner.events.try_send(SessionEvent::FromPartner {
                        match_id,
                        msg: Box::new(msg),
                    });
                }
                Action::ChatToPartner {
                    partner,
                    match_id,
                    line,
                } => {
                    // A partner whose event queue is full loses the line; it is counted
                    // with the lines its chat queue drops, so every line is accounted for.
                    match partner
                        .events
                        .try_send(SessionEvent::Chat { match_id, line })
                    {
                        Ok(()) => &metrics.chat_lines_forwarded,
                        Err(_) => &metrics.chat_lines_dropped,
                    }
                    .fetch_add(1, Relaxed);
                }
                Action::ChatToClient { match_id, line } => {
                    let Some(att) = &self.att else {
                        metrics.chat_lines_dropped.fetch_add(1, Relaxed);
                        continue;
                    };
                    if self.chat.as_ref().map(|c| c.match_id) != Some(match_id) {
                        self.chat = Some(ChatOut::start(att, match_id, metrics.clone()));
                    }
                    if let Some(chat) = &self.chat {
                        chat.push(line, &metrics);
                    }
                }
                Action::EndChat => self.chat = None,
                Action::Refuse(f) => {
                    metrics.error_sent(f.code);
                    self.send(ServerMsg::error(f.code, f.message, false));
                }
                Action::LogReport {
                    reporter,
                    reported,
                    match_id,
                    reason,
                } => {
                    metrics.reports.fetch_add(1, Relaxed);
                    tracing::info!(reporter, reported, match_id, ?reason, "abuse report");
                }
                Action::SendStats => {
                    if let Some(att) = self.att.as_mut() {
                        let stats = att.sample(&metrics);
                        self.send(ServerMsg::Stats(stats));
                    }
                }
                Action::Close(fatal) => {
                    tracing::debug!(code = %fatal.code, "closing: {}", fatal.message);
                    metrics.ended_error.fetch_add(1, Relaxed);
                    if let Some(att) = self.att.take() {
                        att.detach(Some(fatal), &metrics).await;
                    } else {
                        metrics.error_sent(fatal.code);
                    }
                    return Some(LeaveReason::Left);
                }
                Action::End { reason } => {
                    match reason {
                        LeaveReason::Disconnected => &metrics.ended_disconnected,
                        _ => &metrics.ended_left,
                    }
                    .fetch_add(1, Relaxed);
                    if let Some(att) = self.att.take() {
                        att.detach(None, &metrics).await;
                    }
                    return Some(reason);
                }
            }
        }
        None
    }

    /// Queues a message for the control stream; `true` while away (nowhere to send it;
    /// what matters is replayed on resume).
    fn send(&self, msg: ServerMsg) -> bool {
        match &self.att {
            Some(att) => att.send(msg),
            None => true,
        }
    }
}
