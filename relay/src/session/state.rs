//! The pure session state machine: `(state, input, now) -> actions`.
//!
//! Every decision about one session lives here, the way [`crate::matching::MatchQueue`]
//! holds every decision about pairing: which pairing the session is in, whether its client
//! is connected or away, which control messages act and which are stale, what the partner
//! and the engine are told, where media may go. The I/O around it (`session::run`) only
//! feeds it inputs (control messages, engine events, connection events) and carries out
//! the [`Action`]s it returns, in order. Time comes in as an argument; nothing here
//! touches a socket, a channel or a clock.
//!
//! The state is generic over `P`, the handle of a partner (the relay uses an
//! `Arc<crate::peer::Peer>`; the tests use plain numbers), so the rules can be tested
//! without a relay.
//!
//! Rules that close the races found in review (issue 9):
//! * a `Next`, `Report` or relayed message naming a pairing other than the current one is
//!   ignored: it was sent while the client saw an earlier partner;
//! * the side that presses Next, Leave or Report drops its own route at once, in the same
//!   step, before the engine has even heard of it;
//! * an evicted session ends at once (it is not parked), whatever phase it is in;
//! * a resume is the same step whether or not the old connection is still up, and it never
//!   asks the partner to re-point anything: the partner's route holds this session's
//!   shared handle, whose connection the I/O swaps in one step.

use crate::limits::TokenBucket;
use crate::matching::{MatchId, SessionId};
use duet_proto::{ChatFrame, ErrorCode, LeaveReason, Matched, ReportReason, ServerMsg, VideoCodec};
use std::time::Instant;

/// Why the session ends, as the client will be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal {
    pub code: ErrorCode,
    pub message: String,
}

impl Fatal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn from_decode(e: &duet_proto::DecodeError, what: &str) -> Self {
        Fatal::new(e.code(), format!("{what}: {e}"))
    }
}

/// One pairing as this session sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pairing<P> {
    pub match_id: MatchId,
    pub partner: P,
    pub partner_id: SessionId,
    pub partner_name: String,
    pub shared_interests: Vec<String>,
    /// The codecs chosen at pairing time, re-sent as they were on resume.
    pub send_codec: Option<VideoCodec>,
    pub recv_codec: Option<VideoCodec>,
    /// The partner's public key for this pairing (registered ahead and given by the
    /// engine, or its first `KeyShare`), in `Matched` and re-sent on resume: a client away
    /// when it came, or one that lost it with its connection, still gets it.
    pub partner_key: Option<[u8; duet_proto::e2ee::PUBLIC_KEY_BYTES]>,
    /// This client's own key registered ahead and given to the partner (`Matched`'s
    /// `your_key`, so the client knows which key pair the pairing uses).
    pub own_key: Option<[u8; duet_proto::e2ee::PUBLIC_KEY_BYTES]>,
}

impl<P> Pairing<P> {
    fn matched(&self) -> ServerMsg {
        ServerMsg::Matched(Matched {
            match_id: self.match_id,
            partner_name: self.partner_name.clone(),
            shared_interests: self.shared_interests.clone(),
            send_codec: self.send_codec,
            recv_codec: self.recv_codec,
            partner_key: self.partner_key,
            your_key: self.own_key,
        })
    }
}

/// Everything that can happen to a session.
#[derive(Debug, Clone, PartialEq)]
pub enum Input<P> {
    /// A control message from the client (after `Hello`).
    Control(duet_proto::ClientMsg),
    /// A chat line from the client, on its chat stream for `match_id` (a `Line` or a
    /// `Sealed` frame, already checked against the limits).
    Chat { match_id: MatchId, line: ChatFrame },
    /// The client sent a chat line over the size limit (not fatal).
    ChatTooLarge(Fatal),
    /// The client broke the protocol (bad frame, bad stream).
    Broken(Fatal),
    /// The client finished its control stream or closed its connection on purpose.
    ClientLeft,
    /// The engine put this session in the queue.
    Queued { waiting: u32 },
    /// The engine paired this session.
    Paired(Pairing<P>),
    /// The partner of `match_id` left (Next, Leave, Report, gone).
    PartnerLeft {
        match_id: MatchId,
        reason: LeaveReason,
    },
    /// The partner of `match_id` lost its connection and is held for a resume.
    PartnerAway { match_id: MatchId },
    /// The partner of `match_id` is back on a new connection.
    PartnerReturned { match_id: MatchId },
    /// A control message relayed from the partner (keyframe request, report, nack).
    FromPartner { match_id: MatchId, msg: ServerMsg },
    /// A chat line from the partner, already checked against the partner's limits.
    PartnerChat { match_id: MatchId, line: ChatFrame },
    /// The client's connection was lost (timed out, reset): hold the session.
    ConnectionLost,
    /// A new connection took the session over with its resume token. The old connection,
    /// if still up, has been detached by the I/O.
    Resumed,
    /// The resume grace ran out with the client still away.
    GraceOver,
    /// The engine could not reach this session (its event queue was full) and dropped it.
    Evicted,
    /// The relay is draining: calls go on for at most `within_ms`.
    Draining { within_ms: u32 },
    /// The drain time is over.
    ShuttingDown,
    /// The operator (admin listener) or the engine (cooling-off) ended this session.
    Kicked(Fatal),
    /// Time to send the client the relay's view of its connection.
    StatsDue,
}

/// What the engine is asked to do for this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineCmd {
    Next {
        expected: Option<MatchId>,
    },
    Leave,
    Report {
        match_id: MatchId,
        partner: SessionId,
        reason: ReportReason,
    },
    Hold,
    Release,
    /// Whether this session goes back in the queue by itself when its partner leaves.
    RequeueWhenLeft(bool),
}

/// What the I/O must do, in the order returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Action<P> {
    /// Queue a message for the client's control stream. While the client is away there is
    /// nowhere to send it; what matters is replayed on resume.
    Send(ServerMsg),
    /// Issue a fresh single-use resume token and send `Welcome`.
    Welcome {
        resumed: bool,
    },
    /// Point this session's media at `partner` for `match_id`, or at nobody.
    Route(Option<(MatchId, P)>),
    /// Tell the engine.
    Engine(EngineCmd),
    /// Queue a control message for the partner's session (not waiting; a full queue drops
    /// it: those messages are hints, and a stuck partner is evicted by the engine).
    ToPartner {
        partner: P,
        match_id: MatchId,
        msg: ServerMsg,
    },
    /// Queue a chat line for the partner's session.
    ChatToPartner {
        partner: P,
        match_id: MatchId,
        line: ChatFrame,
    },
    /// Write a partner's chat line toward this client (on this pairing's chat stream).
    ChatToClient {
        match_id: MatchId,
        line: ChatFrame,
    },
    /// The pairing's chat toward this client is over: stop its writer.
    EndChat,
    /// Send a non-fatal error (rate limits, chat too large).
    Refuse(Fatal),
    /// Report an abuse report in the log, naming both sessions and the match.
    LogReport {
        reporter: SessionId,
        reported: SessionId,
        match_id: MatchId,
        reason: ReportReason,
    },
    SendStats,
    /// Close the client's connection (if any) with this error and end the session.
    Close(Fatal),
    /// End the session: its client left on purpose, or was away past the grace.
    End {
        reason: LeaveReason,
    },
}

/// Rates a session's client may act at.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    pub next_burst: u32,
    pub next_per_minute: u32,
    pub chat_burst: u32,
    pub chat_per_minute: u32,
    pub report_burst: u32,
    pub report_per_minute: u32,
}

/// Relayed control messages (keyframe requests, receiver reports, nacks): far above any
/// real client's rate, so a flood is dropped quietly rather than passed to the partner.
const RELAYED_BURST: f64 = 100.0;
const RELAYED_PER_S: f64 = 50.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The client is connected.
    Live,
    /// The connection was lost; waiting for a resume.
    Away,
    /// The session is over; every input is ignored.
    Ended,
}

#[derive(Debug)]
pub struct SessionState<P> {
    id: SessionId,
    phase: Phase,
    current: Option<Pairing<P>>,
    /// The partner left while the client was away: told when it comes back.
    left_while_away: Option<LeaveReason>,
    /// The partner is away (lost its connection): told again on this client's resume.
    partner_away: bool,
    draining: Option<u32>,
    next_bucket: TokenBucket,
    chat_bucket: TokenBucket,
    report_bucket: TokenBucket,
    relayed_bucket: TokenBucket,
}

fn bucket(burst: u32, per_minute: u32, now: Instant) -> TokenBucket {
    TokenBucket::new(f64::from(burst.max(1)), f64::from(per_minute) / 60.0, now)
}

impl<P: Clone> SessionState<P> {
    /// A session that has just said `Hello`. The I/O sends `Welcome` and joins the queue.
    pub fn new(id: SessionId, rates: Rates, now: Instant) -> Self {
        Self {
            id,
            phase: Phase::Live,
            current: None,
            left_while_away: None,
            partner_away: false,
            draining: None,
            next_bucket: bucket(rates.next_burst, rates.next_per_minute, now),
            chat_bucket: bucket(rates.chat_burst, rates.chat_per_minute, now),
            report_bucket: bucket(rates.report_burst, rates.report_per_minute, now),
            relayed_bucket: TokenBucket::new(RELAYED_BURST, RELAYED_PER_S, now),
        }
    }

    pub fn id(&self) -> SessionId {
        self.id
    }

    pub fn is_away(&self) -> bool {
        self.phase == Phase::Away
    }

    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    pub fn current(&self) -> Option<&Pairing<P>> {
        self.current.as_ref()
    }

    fn current_is(&self, match_id: MatchId) -> bool {
        self.current
            .as_ref()
            .is_some_and(|c| c.match_id == match_id)
    }

    pub fn handle(&mut self, input: Input<P>, now: Instant) -> Vec<Action<P>> {
        let mut out = Vec::new();
        if self.phase == Phase::Ended {
            return out;
        }
        match input {
            Input::Control(msg) => self.on_control(msg, now, &mut out),
            Input::Chat { match_id, line } => {
                let Some(cur) = self.current.as_ref().filter(|c| c.match_id == match_id) else {
                    return out; // a line for a pairing that has ended
                };
                if !self.chat_bucket.try_take(1.0, now) {
                    out.push(Action::Refuse(Fatal::new(
                        ErrorCode::RateLimited,
                        "You are sending messages too fast; that one was not delivered.",
                    )));
                    return out;
                }
                out.push(Action::ChatToPartner {
                    partner: cur.partner.clone(),
                    match_id,
                    line,
                });
            }
            Input::ChatTooLarge(f) => out.push(Action::Refuse(f)),
            Input::Broken(f) => self.close(f, &mut out),
            Input::ClientLeft => self.end(LeaveReason::Left, &mut out),
            Input::Queued { waiting } => out.push(Action::Send(ServerMsg::Queued { waiting })),
            Input::Paired(p) => {
                out.push(Action::EndChat);
                out.push(Action::Route(Some((p.match_id, p.partner.clone()))));
                out.push(Action::Send(p.matched()));
                self.current = Some(p);
                self.left_while_away = None;
                self.partner_away = false;
            }
            Input::PartnerLeft { match_id, reason } => {
                if !self.current_is(match_id) {
                    return out; // about a pairing this session already left
                }
                self.current = None;
                self.partner_away = false;
                out.push(Action::Route(None));
                out.push(Action::EndChat);
                if self.phase == Phase::Away {
                    self.left_while_away = Some(reason);
                }
                out.push(Action::Send(ServerMsg::PeerLeft { reason }));
            }
            Input::PartnerAway { match_id } => {
                if self.current_is(match_id) {
                    self.partner_away = true;
                    out.push(Action::Send(ServerMsg::PeerReconnecting));
                }
            }
            Input::PartnerReturned { match_id } => {
                if self.current_is(match_id) {
                    self.partner_away = false;
                    out.push(Action::Send(ServerMsg::PeerReturned));
                }
            }
            Input::FromPartner { match_id, msg } => {
                let Some(cur) = self.current.as_mut().filter(|c| c.match_id == match_id) else {
                    return out;
                };
                if let ServerMsg::PeerKey { public, .. } = &msg {
                    // The first key of a pairing stands: another one is a client changing
                    // keys mid-call, which no honest client does (its partner would refuse it).
                    match cur.partner_key {
                        None => cur.partner_key = Some(*public),
                        Some(k) if k == *public => {}
                        Some(_) => return out,
                    }
                }
                out.push(Action::Send(msg));
            }
            Input::PartnerChat { match_id, line } => {
                // Away: the line is lost, like any datagram.
                if self.current_is(match_id) && self.phase == Phase::Live {
                    out.push(Action::ChatToClient { match_id, line });
                }
            }
            Input::ConnectionLost => {
                if self.phase != Phase::Live {
                    return out;
                }
                self.phase = Phase::Away;
                // The chat stream toward the client went down with its connection.
                out.push(Action::EndChat);
                out.push(Action::Engine(EngineCmd::Hold));
                if let Some(cur) = &self.current {
                    out.push(Action::ToPartner {
                        partner: cur.partner.clone(),
                        match_id: cur.match_id,
                        msg: ServerMsg::PeerReconnecting,
                    });
                }
            }
            Input::Resumed => {
                let was_away = self.phase == Phase::Away;
                self.phase = Phase::Live;
                out.push(Action::EndChat);
                out.push(Action::Welcome { resumed: true });
                if let Some(reason) = self.left_while_away.take() {
                    out.push(Action::Send(ServerMsg::PeerLeft { reason }));
                }
                if let Some(cur) = &self.current {
                    // The same match id: the client carries on with the same partner, with
                    // the same keys.
                    out.push(Action::Send(cur.matched()));
                    if let Some(public) = cur.partner_key {
                        out.push(Action::Send(ServerMsg::PeerKey {
                            match_id: cur.match_id,
                            public,
                        }));
                    }
                    if self.partner_away {
                        out.push(Action::Send(ServerMsg::PeerReconnecting));
                    }
                    // Said even when the old connection was still up: the partner's app
                    // learns the call is on a new connection (its media path may have
                    // changed), and the message is only a notice: media needs nothing.
                    out.push(Action::ToPartner {
                        partner: cur.partner.clone(),
                        match_id: cur.match_id,
                        msg: ServerMsg::PeerReturned,
                    });
                }
                if let Some(within_ms) = self.draining {
                    out.push(Action::Send(ServerMsg::Draining { within_ms }));
                }
                if was_away {
                    out.push(Action::Engine(EngineCmd::Release));
                }
            }
            Input::GraceOver => {
                if self.phase == Phase::Away {
                    self.end(LeaveReason::Disconnected, &mut out);
                }
            }
            Input::Evicted => self.close(
                Fatal::new(
                    ErrorCode::Overloaded,
                    "The relay could not keep up with this session and ended it. Start again.",
                ),
                &mut out,
            ),
            Input::Draining { within_ms } => {
                self.draining = Some(within_ms);
                out.push(Action::Send(ServerMsg::Draining { within_ms }));
            }
            Input::ShuttingDown => self.close(
                Fatal::new(
                    ErrorCode::ShuttingDown,
                    "The relay is restarting. Reconnecting will bring you back.",
                ),
                &mut out,
            ),
            Input::Kicked(fatal) => self.close(fatal, &mut out),
            Input::StatsDue => {
                if self.phase == Phase::Live {
                    out.push(Action::SendStats);
                }
            }
        }
        out
    }

    fn on_control(&mut self, msg: duet_proto::ClientMsg, now: Instant, out: &mut Vec<Action<P>>) {
        use duet_proto::ClientMsg;
        match msg {
            ClientMsg::Hello(_) => self.close(
                Fatal::new(
                    ErrorCode::WrongState,
                    "Hello was already sent on this session",
                ),
                out,
            ),
            ClientMsg::Next { match_id } => {
                let current = self.current.as_ref().map(|c| c.match_id);
                if match_id != current {
                    // Sent while the client saw another pairing (its partner pressed Next
                    // first, and this client may already be paired again): acting on it
                    // would end a pairing the client has not seen yet.
                    return;
                }
                if !self.next_bucket.try_take(1.0, now) {
                    out.push(Action::Refuse(Fatal::new(
                        ErrorCode::RateLimited,
                        "Too many Next presses; wait a moment and try again.",
                    )));
                    return;
                }
                self.end_own_pairing(out);
                out.push(Action::Engine(EngineCmd::Next { expected: current }));
            }
            ClientMsg::Leave => {
                self.end_own_pairing(out);
                out.push(Action::Engine(EngineCmd::Leave));
            }
            ClientMsg::Report(report) => {
                let Some(cur) = self
                    .current
                    .as_ref()
                    .filter(|c| c.match_id == report.match_id)
                else {
                    return; // about a pairing that has ended: nobody to report
                };
                let (partner, match_id) = (cur.partner_id, cur.match_id);
                // The reporter moves on at once, rate-limited or not: nobody should have to
                // stay in a call they wanted to report.
                self.end_own_pairing(out);
                if self.report_bucket.try_take(1.0, now) {
                    out.push(Action::LogReport {
                        reporter: self.id,
                        reported: partner,
                        match_id,
                        reason: report.reason,
                    });
                    out.push(Action::Engine(EngineCmd::Report {
                        match_id,
                        partner,
                        reason: report.reason,
                    }));
                } else {
                    // Too many reports: this one counts as a Next (the pair still never
                    // meets again for the cooldown), not as a report against the partner.
                    out.push(Action::Refuse(Fatal::new(
                        ErrorCode::RateLimited,
                        "Too many reports in a short time; this one was treated as Next.",
                    )));
                    out.push(Action::Engine(EngineCmd::Next {
                        expected: Some(match_id),
                    }));
                }
            }
            // Stored by the I/O in the handle: the caps the partner reads, the key the engine
            // takes when it pairs.
            ClientMsg::Caps(_) | ClientMsg::NextKey { .. } => {}
            ClientMsg::RequeueWhenLeft(on) => {
                out.push(Action::Engine(EngineCmd::RequeueWhenLeft(on)));
            }
            ClientMsg::RequestKeyframe { .. }
            | ClientMsg::ReceiverReport(_)
            | ClientMsg::Nack(_)
            | ClientMsg::Typing { .. }
            | ClientMsg::KeyShare { .. } => {
                if !self.relayed_bucket.try_take(1.0, now) {
                    return; // far above any real client's rate: drop quietly
                }
                let (match_id, relayed) = match msg {
                    ClientMsg::ReceiverReport(r) => (r.match_id, ServerMsg::PeerReport(r)),
                    ClientMsg::Nack(n) => (n.match_id, ServerMsg::PeerNack(n)),
                    ClientMsg::RequestKeyframe { match_id } => {
                        (match_id, ServerMsg::KeyframeRequested)
                    }
                    ClientMsg::Typing { match_id } => (match_id, ServerMsg::PeerTyping),
                    ClientMsg::KeyShare { match_id, public } => {
                        (match_id, ServerMsg::PeerKey { match_id, public })
                    }
                    _ => return,
                };
                if let Some(cur) = self.current.as_ref().filter(|c| c.match_id == match_id) {
                    out.push(Action::ToPartner {
                        partner: cur.partner.clone(),
                        match_id,
                        msg: relayed,
                    });
                }
            }
        }
    }

    /// This client left its pairing (Next, Leave, Report): from now on its media and
    /// messages reach nobody, whatever the partner's session has yet to hear.
    fn end_own_pairing(&mut self, out: &mut Vec<Action<P>>) {
        self.current = None;
        self.partner_away = false;
        out.push(Action::Route(None));
        out.push(Action::EndChat);
    }

    fn close(&mut self, fatal: Fatal, out: &mut Vec<Action<P>>) {
        self.phase = Phase::Ended;
        self.current = None;
        out.push(Action::Route(None));
        out.push(Action::EndChat);
        out.push(Action::Close(fatal));
    }

    fn end(&mut self, reason: LeaveReason, out: &mut Vec<Action<P>>) {
        self.phase = Phase::Ended;
        self.current = None;
        out.push(Action::Route(None));
        out.push(Action::EndChat);
        out.push(Action::End { reason });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duet_proto::{AbuseReport, ClientMsg, Hello, MediaCaps, ReceiverReport};
    use std::time::Duration;

    type S = SessionState<u32>;

    const RATES: Rates = Rates {
        next_burst: 3,
        next_per_minute: 60,
        chat_burst: 2,
        chat_per_minute: 60,
        report_burst: 1,
        report_per_minute: 1,
    };

    fn pairing(match_id: MatchId, partner: u32) -> Pairing<u32> {
        Pairing {
            match_id,
            partner,
            partner_id: u64::from(partner),
            partner_name: format!("p{partner}"),
            shared_interests: vec![],
            send_codec: Some(VideoCodec::Vp8),
            recv_codec: Some(VideoCodec::Vp8),
            partner_key: None,
            own_key: None,
        }
    }

    fn paired(t0: Instant, match_id: MatchId, partner: u32) -> S {
        let mut s = S::new(1, RATES, t0);
        s.handle(Input::Paired(pairing(match_id, partner)), t0);
        s
    }

    fn routes(actions: &[Action<u32>]) -> Vec<Option<(MatchId, u32)>> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Route(r) => Some(*r),
                _ => None,
            })
            .collect()
    }

    fn engine(actions: &[Action<u32>]) -> Vec<EngineCmd> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Engine(c) => Some(*c),
                _ => None,
            })
            .collect()
    }

    fn sent(actions: &[Action<u32>]) -> Vec<ServerMsg> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    fn closes(actions: &[Action<u32>]) -> Vec<ErrorCode> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Close(f) => Some(f.code),
                _ => None,
            })
            .collect()
    }

    fn report(match_id: MatchId) -> Input<u32> {
        Input::Control(ClientMsg::Report(AbuseReport {
            match_id,
            reason: ReportReason::Spam,
        }))
    }

    #[test]
    fn paired_routes_media_and_tells_the_client() {
        let t0 = Instant::now();
        let mut s = S::new(1, RATES, t0);
        let a = s.handle(Input::Queued { waiting: 1 }, t0);
        assert_eq!(sent(&a), vec![ServerMsg::Queued { waiting: 1 }]);
        let a = s.handle(Input::Paired(pairing(7, 2)), t0);
        assert_eq!(routes(&a), vec![Some((7, 2))]);
        assert!(matches!(sent(&a)[..], [ServerMsg::Matched(ref m)] if m.match_id == 7));
        assert_eq!(s.current().map(|c| c.match_id), Some(7));
    }

    #[test]
    fn next_race_a_next_for_the_old_pairing_leaves_the_new_one_untouched() {
        let t0 = Instant::now();
        let mut s = paired(t0, 7, 2);
        // B pressed Next: A hears PartnerLeft, then is paired with C at once.
        s.handle(
            Input::PartnerLeft {
                match_id: 7,
                reason: LeaveReason::Next,
            },
            t0,
        );
        s.handle(Input::Paired(pairing(8, 3)), t0);
        // A's Next, sent while A still saw B, arrives now.
        let a = s.handle(Input::Control(ClientMsg::Next { match_id: Some(7) }), t0);
        assert!(a.is_empty(), "{a:?}");
        // So does a report sent in the same window.
        assert!(s.handle(report(7), t0).is_empty());
        assert_eq!(s.current().map(|c| c.match_id), Some(8));
    }

    #[test]
    fn next_leave_and_report_drop_the_pressers_route_in_the_same_step() {
        let t0 = Instant::now();
        for (input, cmd) in [
            (
                Input::Control(ClientMsg::Next { match_id: Some(7) }),
                EngineCmd::Next { expected: Some(7) },
            ),
            (Input::Control(ClientMsg::Leave), EngineCmd::Leave),
            (
                report(7),
                EngineCmd::Report {
                    match_id: 7,
                    partner: 2,
                    reason: ReportReason::Spam,
                },
            ),
        ] {
            let mut s = paired(t0, 7, 2);
            let a = s.handle(input, t0);
            assert_eq!(routes(&a), vec![None], "{a:?}");
            // The route goes before the engine hears: no datagram slips through meanwhile.
            let route_at = a.iter().position(|x| matches!(x, Action::Route(None)));
            let engine_at = a.iter().position(|x| matches!(x, Action::Engine(_)));
            assert!(route_at < engine_at, "{a:?}");
            assert_eq!(engine(&a), vec![cmd]);
            assert!(s.current().is_none());
            // Anything the old partner still relays is dropped.
            let late = s.handle(
                Input::FromPartner {
                    match_id: 7,
                    msg: ServerMsg::KeyframeRequested,
                },
                t0,
            );
            assert!(late.is_empty());
            let late = s.handle(
                Input::PartnerChat {
                    match_id: 7,
                    line: ChatFrame::Line { text: "hi".into() },
                },
                t0,
            );
            assert!(late.is_empty());
        }
    }

    #[test]
    fn next_while_idle_joins_the_queue_and_is_rate_limited() {
        let t0 = Instant::now();
        let mut s = S::new(1, RATES, t0);
        for _ in 0..3 {
            let a = s.handle(Input::Control(ClientMsg::Next { match_id: None }), t0);
            assert_eq!(engine(&a), vec![EngineCmd::Next { expected: None }]);
        }
        let a = s.handle(Input::Control(ClientMsg::Next { match_id: None }), t0);
        assert!(engine(&a).is_empty());
        assert!(matches!(&a[..], [Action::Refuse(f)] if f.code == ErrorCode::RateLimited));
        let later = t0 + Duration::from_secs(1);
        let a = s.handle(Input::Control(ClientMsg::Next { match_id: None }), later);
        assert_eq!(engine(&a).len(), 1);
    }

    #[test]
    fn reports_are_rate_limited_but_the_reporter_still_moves_on() {
        let t0 = Instant::now();
        let mut s = paired(t0, 7, 2);
        let a = s.handle(report(7), t0);
        assert!(a.iter().any(|x| matches!(
            x,
            Action::LogReport {
                reporter: 1,
                reported: 2,
                match_id: 7,
                ..
            }
        )));
        s.handle(Input::Paired(pairing(8, 3)), t0);
        let a = s.handle(report(8), t0);
        assert_eq!(routes(&a), vec![None]);
        assert_eq!(engine(&a), vec![EngineCmd::Next { expected: Some(8) }]);
        assert!(!a.iter().any(|x| matches!(x, Action::LogReport { .. })));
        assert!(a
            .iter()
            .any(|x| matches!(x, Action::Refuse(f) if f.code == ErrorCode::RateLimited)));
    }

    #[test]
    fn partner_left_ends_the_pairing_only_if_it_is_the_current_one() {
        let t0 = Instant::now();
        let mut s = paired(t0, 8, 3);
        let stale = s.handle(
            Input::PartnerLeft {
                match_id: 7,
                reason: LeaveReason::Next,
            },
            t0,
        );
        assert!(stale.is_empty());
        let a = s.handle(
            Input::PartnerLeft {
                match_id: 8,
                reason: LeaveReason::Left,
            },
            t0,
        );
        assert_eq!(routes(&a), vec![None]);
        assert_eq!(
            sent(&a),
            vec![ServerMsg::PeerLeft {
                reason: LeaveReason::Left
            }]
        );
    }

    #[test]
    fn relayed_messages_reach_only_the_current_partner() {
        let t0 = Instant::now();
        let mut s = paired(t0, 7, 2);
        let a = s.handle(
            Input::Control(ClientMsg::RequestKeyframe { match_id: 7 }),
            t0,
        );
        assert_eq!(
            a,
            vec![Action::ToPartner {
                partner: 2,
                match_id: 7,
                msg: ServerMsg::KeyframeRequested
            }]
        );
        let stale = s.handle(
            Input::Control(ClientMsg::ReceiverReport(ReceiverReport {
                match_id: 6,
                ..Default::default()
            })),
            t0,
        );
        assert!(stale.is_empty());
        // A flood is dropped quietly past the relayed-message bucket.
        let forwarded = (0..1000)
            .map(|_| {
                s.handle(
                    Input::Control(ClientMsg::RequestKeyframe { match_id: 7 }),
                    t0,
                )
            })
            .filter(|a| !a.is_empty())
            .count();
        // Two tokens went on the first two messages (a stale one costs like any other).
        assert_eq!(forwarded, RELAYED_BURST as usize - 2);
    }

    #[test]
    fn typing_reaches_only_the_current_partner_and_the_requeue_choice_goes_to_the_engine() {
        let t0 = Instant::now();
        let mut s = paired(t0, 7, 2);
        let a = s.handle(Input::Control(ClientMsg::Typing { match_id: 7 }), t0);
        assert_eq!(
            a,
            vec![Action::ToPartner {
                partner: 2,
                match_id: 7,
                msg: ServerMsg::PeerTyping
            }]
        );
        let stale = s.handle(Input::Control(ClientMsg::Typing { match_id: 6 }), t0);
        assert!(
            stale.is_empty(),
            "typing about an ended pairing reaches nobody"
        );
        let a = s.handle(Input::Control(ClientMsg::RequeueWhenLeft(false)), t0);
        assert_eq!(a, vec![Action::Engine(EngineCmd::RequeueWhenLeft(false))]);
    }

    #[test]
    fn chat_goes_to_the_current_partner_within_the_rate() {
        let t0 = Instant::now();
        let mut s = paired(t0, 7, 2);
        let line = |m| Input::Chat {
            match_id: m,
            line: ChatFrame::Line { text: "hi".into() },
        };
        assert!(s.handle(line(6), t0).is_empty());
        assert!(matches!(
            &s.handle(line(7), t0)[..],
            [Action::ChatToPartner {
                partner: 2,
                match_id: 7,
                ..
            }]
        ));
        s.handle(line(7), t0);
        assert!(matches!(
            &s.handle(line(7), t0)[..],
            [Action::Refuse(f)] if f.code == ErrorCode::RateLimited
        ));
        let a = s.handle(
            Input::PartnerChat {
                match_id: 7,
                line: ChatFrame::Line { text: "yo".into() },
            },
            t0,
        );
        assert!(matches!(&a[..], [Action::ChatToClient { match_id: 7, .. }]));
    }

    #[test]
    fn a_public_key_reaches_the_current_partner_and_is_replayed_on_resume() {
        let t0 = Instant::now();
        let mut s = paired(t0, 7, 2);
        let share = |match_id, b| ClientMsg::KeyShare {
            match_id,
            public: [b; 32],
        };
        assert_eq!(
            s.handle(Input::Control(share(7, 1)), t0),
            vec![Action::ToPartner {
                partner: 2,
                match_id: 7,
                msg: ServerMsg::PeerKey {
                    match_id: 7,
                    public: [1; 32]
                }
            }]
        );
        assert!(
            s.handle(Input::Control(share(6, 1)), t0).is_empty(),
            "stale"
        );
        // The partner's key, while this client is away: kept, and sent after the
        // re-sent Matched when it resumes.
        s.handle(Input::ConnectionLost, t0);
        let from_partner = |b| Input::FromPartner {
            match_id: 7,
            msg: ServerMsg::PeerKey {
                match_id: 7,
                public: [b; 32],
            },
        };
        s.handle(from_partner(2), t0);
        // Another key for the same pairing is not passed on, nor kept.
        assert!(s.handle(from_partner(3), t0).is_empty());
        let a = s.handle(Input::Resumed, t0);
        assert!(matches!(
            &sent(&a)[..],
            [ServerMsg::Matched(m), ServerMsg::PeerKey { match_id: 7, public }]
                if m.match_id == 7 && *public == [2; 32]
        ));
        // The same key again (a partner resending after its own resume) passes.
        assert_eq!(s.handle(from_partner(2), t0).len(), 1);
        // A new pairing starts without a key.
        s.handle(
            Input::PartnerLeft {
                match_id: 7,
                reason: LeaveReason::Next,
            },
            t0,
        );
        s.handle(Input::Paired(pairing(9, 4)), t0);
        let a = s.handle(Input::Resumed, t0);
        assert!(!sent(&a)
            .iter()
            .any(|m| matches!(m, ServerMsg::PeerKey { .. })));
    }

    #[test]
    fn keys_registered_ahead_go_in_matched_and_stand_for_the_pairing() {
        let t0 = Instant::now();
        let mut s = S::new(1, RATES, t0);
        let a = s.handle(
            Input::Paired(Pairing {
                partner_key: Some([2; 32]),
                own_key: Some([1; 32]),
                ..pairing(7, 2)
            }),
            t0,
        );
        assert!(matches!(
            &sent(&a)[..],
            [ServerMsg::Matched(m)]
                if m.partner_key == Some([2; 32]) && m.your_key == Some([1; 32])
        ));
        // The partner's registered key is the pairing's: another one is not passed on.
        let from_partner = |b| Input::FromPartner {
            match_id: 7,
            msg: ServerMsg::PeerKey {
                match_id: 7,
                public: [b; 32],
            },
        };
        assert!(s.handle(from_partner(3), t0).is_empty());
        assert_eq!(
            s.handle(from_partner(2), t0).len(),
            1,
            "the same key passes"
        );
        // A resume gets both again in Matched.
        s.handle(Input::ConnectionLost, t0);
        let a = s.handle(Input::Resumed, t0);
        assert!(matches!(
            sent(&a).first(),
            Some(ServerMsg::Matched(m))
                if m.partner_key == Some([2; 32]) && m.your_key == Some([1; 32])
        ));
    }

    #[test]
    fn a_lost_connection_holds_the_pairing_and_tells_the_partner() {
        let t0 = Instant::now();
        let mut s = paired(t0, 7, 2);
        let a = s.handle(Input::ConnectionLost, t0);
        assert!(s.is_away());
        assert_eq!(engine(&a), vec![EngineCmd::Hold]);
        assert!(a.contains(&Action::ToPartner {
            partner: 2,
            match_id: 7,
            msg: ServerMsg::PeerReconnecting
        }));
        // The route stays: the pairing is held, and the partner's media just finds no
        // connection until the client is back.
        assert!(routes(&a).is_empty());
        // Chat from the partner while away is lost, not queued.
        let a = s.handle(
            Input::PartnerChat {
                match_id: 7,
                line: ChatFrame::Line {
                    text: "hello?".into(),
                },
            },
            t0,
        );
        assert!(a.is_empty());
    }

    #[test]
    fn resume_after_loss_replays_the_call_and_releases_the_hold() {
        let t0 = Instant::now();
        let mut s = paired(t0, 7, 2);
        s.handle(Input::ConnectionLost, t0);
        let a = s.handle(Input::Resumed, t0);
        assert!(!s.is_away());
        assert_eq!(a[1], Action::Welcome { resumed: true });
        assert!(matches!(&sent(&a)[..], [ServerMsg::Matched(m)] if m.match_id == 7));
        assert!(a.contains(&Action::ToPartner {
            partner: 2,
            match_id: 7,
            msg: ServerMsg::PeerReturned
        }));
        assert_eq!(engine(&a), vec![EngineCmd::Release]);
        // Never a route change: the partner's route holds this session's handle, whose
        // connection the I/O has already swapped.
        assert!(routes(&a).is_empty());
    }

    #[test]
    fn resume_while_the_old_connection_is_live_is_the_same_step_without_a_hold() {
        let t0 = Instant::now();
        let mut s = paired(t0, 7, 2);
        let a = s.handle(Input::Resumed, t0);
        assert!(a.contains(&Action::Welcome { resumed: true }));
        assert!(matches!(&sent(&a)[..], [ServerMsg::Matched(m)] if m.match_id == 7));
        // The engine never heard of a hold, so there is nothing to release; the partner
        // is told PeerReturned as a notice.
        assert!(engine(&a).is_empty());
        assert!(a.contains(&Action::ToPartner {
            partner: 2,
            match_id: 7,
            msg: ServerMsg::PeerReturned
        }));
        assert!(routes(&a).is_empty());
        // A pairing made right after the resume routes as usual.
        s.handle(
            Input::PartnerLeft {
                match_id: 7,
                reason: LeaveReason::Next,
            },
            t0,
        );
        let a = s.handle(Input::Paired(pairing(9, 4)), t0);
        assert_eq!(routes(&a), vec![Some((9, 4))]);
    }

    #[test]
    fn the_partner_leaving_while_away_is_told_on_resume() {
        let t0 = Instant::now();
        let mut s = paired(t0, 7, 2);
        s.handle(Input::ConnectionLost, t0);
        s.handle(
            Input::PartnerLeft {
                match_id: 7,
                reason: LeaveReason::Next,
            },
            t0,
        );
        let a = s.handle(Input::Resumed, t0);
        assert_eq!(
            sent(&a),
            vec![ServerMsg::PeerLeft {
                reason: LeaveReason::Next
            }]
        );
    }

    #[test]
    fn a_partner_away_when_this_client_resumes_is_said_again() {
        let t0 = Instant::now();
        let mut s = paired(t0, 7, 2);
        s.handle(Input::PartnerAway { match_id: 7 }, t0);
        s.handle(Input::ConnectionLost, t0);
        let a = s.handle(Input::Resumed, t0);
        assert!(sent(&a).contains(&ServerMsg::PeerReconnecting));
        let a = s.handle(Input::PartnerReturned { match_id: 7 }, t0);
        assert_eq!(sent(&a), vec![ServerMsg::PeerReturned]);
    }

    #[test]
    fn grace_over_ends_an_away_session_only() {
        let t0 = Instant::now();
        let mut s = paired(t0, 7, 2);
        assert!(s.handle(Input::GraceOver, t0).is_empty());
        s.handle(Input::ConnectionLost, t0);
        let a = s.handle(Input::GraceOver, t0);
        assert!(a.contains(&Action::End {
            reason: LeaveReason::Disconnected
        }));
        assert!(s.is_ended());
        // Nothing after the end does anything: no zombie.
        assert!(s.handle(Input::Resumed, t0).is_empty());
        assert!(s.handle(Input::Paired(pairing(9, 3)), t0).is_empty());
    }

    #[test]
    fn an_evicted_session_ends_at_once_live_or_away() {
        let t0 = Instant::now();
        for away in [false, true] {
            let mut s = paired(t0, 7, 2);
            if away {
                s.handle(Input::ConnectionLost, t0);
            }
            let a = s.handle(Input::Evicted, t0);
            assert_eq!(closes(&a), vec![ErrorCode::Overloaded]);
            assert_eq!(routes(&a), vec![None]);
            assert!(s.is_ended());
            assert!(s.handle(Input::GraceOver, t0).is_empty());
        }
    }

    #[test]
    fn protocol_breaks_close_with_their_code() {
        let t0 = Instant::now();
        let mut s = paired(t0, 7, 2);
        let hello = Hello {
            version: duet_proto::PROTOCOL_VERSION,
            name: "again".into(),
            interests: vec![],
            resume: None,
            visitor: None,
            media: MediaCaps::default(),
        };
        let a = s.handle(Input::Control(ClientMsg::Hello(hello)), t0);
        assert_eq!(closes(&a), vec![ErrorCode::WrongState]);
        let mut s = paired(t0, 7, 2);
        let a = s.handle(
            Input::Broken(Fatal::new(ErrorCode::Malformed, "bad frame")),
            t0,
        );
        assert_eq!(closes(&a), vec![ErrorCode::Malformed]);
        let mut s = paired(t0, 7, 2);
        let a = s.handle(Input::ClientLeft, t0);
        assert!(a.contains(&Action::End {
            reason: LeaveReason::Left
        }));
    }

    #[test]
    fn drain_tells_the_client_and_repeats_on_resume_then_closes() {
        let t0 = Instant::now();
        let mut s = paired(t0, 7, 2);
        let a = s.handle(Input::Draining { within_ms: 5000 }, t0);
        assert_eq!(sent(&a), vec![ServerMsg::Draining { within_ms: 5000 }]);
        s.handle(Input::ConnectionLost, t0);
        let a = s.handle(Input::Resumed, t0);
        assert!(sent(&a).contains(&ServerMsg::Draining { within_ms: 5000 }));
        let a = s.handle(Input::ShuttingDown, t0);
        assert_eq!(closes(&a), vec![ErrorCode::ShuttingDown]);
    }

    #[test]
    fn stats_only_while_connected() {
        let t0 = Instant::now();
        let mut s = paired(t0, 7, 2);
        assert_eq!(s.handle(Input::StatsDue, t0), vec![Action::SendStats]);
        s.handle(Input::ConnectionLost, t0);
        assert!(s.handle(Input::StatsDue, t0).is_empty());
    }
}
