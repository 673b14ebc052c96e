//! What partners share: a session's id, name, media capabilities, mailbox, and its
//! swappable connection handle.
//!
//! One [`Peer`] per session, behind an `Arc`, held by the session itself, the engine and
//! the partner's route. A resume swaps the connection inside it in one step, so a partner
//! forwarding media reads the new connection on its next datagram: there is no "re-point
//! your route" message that could be lost or arrive after a new pairing was made.
//! The engine sees only ids and mailboxes (`events`, `evict`), never a connection.

use crate::forward::Link;
use crate::matching::{MatchId, SessionId};
use crate::reputation::Person;
use crate::session::state::Fatal;
use duet_proto::{LeaveReason, MediaCaps, ServerMsg};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Notify};

/// What the engine and the partner's session tell a session.
#[derive(Debug)]
pub enum SessionEvent {
    Queued {
        waiting: u32,
    },
    Paired {
        match_id: MatchId,
        partner: Arc<Peer>,
        shared_interests: Vec<String>,
        /// The partner's key registered ahead for this pairing (`ClientMsg::NextKey`).
        partner_key: Option<PublicKey>,
        /// This session's own registered key, given to the partner.
        own_key: Option<PublicKey>,
    },
    PartnerLeft {
        match_id: MatchId,
        reason: LeaveReason,
    },
    /// A control message from the partner's session (keyframe request, receiver report,
    /// PeerReconnecting, PeerReturned), valid only while `match_id` is still the pairing.
    FromPartner {
        match_id: MatchId,
        msg: Box<ServerMsg>,
    },
    /// A chat line from the partner, already checked against the limits.
    Chat {
        match_id: MatchId,
        line: duet_proto::ChatFrame,
    },
}

#[derive(Debug)]
pub struct Peer {
    pub id: SessionId,
    pub name: Arc<str>,
    /// What the client can encode and decode, updated by `ClientMsg::Caps`; read by the
    /// partner's session when the pair is made, to pick each direction's codec.
    caps: Mutex<MediaCaps>,
    /// The client's connection now; `None` while it is away. A per-session lock, held
    /// only to clone or replace the `Arc`, never across an await.
    link: Mutex<Option<Arc<Link>>>,
    pub events: mpsc::Sender<SessionEvent>,
    /// Set by the engine when it drops the session (its event queue was full): the
    /// session ends at once instead of running on unheard.
    evicted: Notify,
    /// Who the client is across reconnects (visitor id, address prefix), for reports.
    pub person: Person,
    /// Set by the operator (admin listener) or the engine (cooling-off) to end the session
    /// with a reason.
    kicked: Notify,
    kick_reason: Mutex<Option<Fatal>>,
    /// The public key the client registered for its next pairing (`ClientMsg::NextKey`),
    /// taken by the engine when it makes that pairing, so each key serves one pairing.
    next_key: Mutex<Option<PublicKey>>,
}

/// An X25519 public key (end-to-end encryption; the relay only passes them on).
pub type PublicKey = [u8; duet_proto::e2ee::PUBLIC_KEY_BYTES];

impl Peer {
    pub fn new(
        id: SessionId,
        name: &str,
        caps: MediaCaps,
        link: Arc<Link>,
        events: mpsc::Sender<SessionEvent>,
        person: Person,
    ) -> Self {
        Self {
            id,
            name: Arc::from(name),
            caps: Mutex::new(caps),
            link: Mutex::new(Some(link)),
            events,
            evicted: Notify::new(),
            person,
            kicked: Notify::new(),
            kick_reason: Mutex::new(None),
            next_key: Mutex::new(None),
        }
    }

    /// The client's key for its next pairing (a newer one replaces one not used yet).
    pub fn register_next_key(&self, public: PublicKey) {
        *self.next_key.lock().unwrap_or_else(|e| e.into_inner()) = Some(public);
    }

    /// Takes the registered key for the pairing being made (the engine, when it pairs).
    pub fn take_next_key(&self) -> Option<PublicKey> {
        self.next_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    pub fn caps(&self) -> MediaCaps {
        self.caps.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_caps(&self, caps: MediaCaps) {
        *self.caps.lock().unwrap_or_else(|e| e.into_inner()) = caps;
    }

    /// The connection media for this session goes to now.
    pub fn link(&self) -> Option<Arc<Link>> {
        self.link.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Swaps the connection in one step (resume), or clears it (lost, ended).
    pub fn set_link(&self, link: Option<Arc<Link>>) {
        *self.link.lock().unwrap_or_else(|e| e.into_inner()) = link;
    }

    /// The engine gives up on this session. The permit is kept until the session looks.
    pub fn evict(&self) {
        self.evicted.notify_one();
    }

    pub async fn evicted(&self) {
        self.evicted.notified().await;
    }

    /// Ends the session with `fatal` (the first reason given wins).
    pub fn kick(&self, fatal: Fatal) {
        let mut reason = self.kick_reason.lock().unwrap_or_else(|e| e.into_inner());
        if reason.is_none() {
            *reason = Some(fatal);
        }
        self.kicked.notify_one();
    }

    pub async fn kicked(&self) -> Fatal {
        self.kicked.notified().await;
        self.kick_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| Fatal::new(duet_proto::ErrorCode::Blocked, "Session ended."))
    }
}
