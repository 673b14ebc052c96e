//! Control-stream messages: [`ClientMsg`] from a client, [`ServerMsg`] from the relay.
//!
//! Field order is wire order (postcard writes fields in declaration order, enums as a
//! varint variant index), so reordering a field or a variant is a protocol change: bump
//! [`crate::PROTOCOL_VERSION`] and regenerate the test vectors. Only integer, bool, string,
//! sequence, option and fixed-array types appear here, which keeps the web client's codec
//! small.

use crate::error::{DecodeError, ErrorCode};
use crate::limits::{
    MAX_CODECS, MAX_INTERESTS, MAX_INTEREST_BYTES, MAX_NACK_FRAGMENTS, MAX_NAME_BYTES,
};
use serde::{Deserialize, Serialize};

/// An unguessable, single-use secret that lets a client whose connection was lost take its
/// session (and partner) back within the grace period.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResumeToken(pub [u8; 16]);

impl std::fmt::Debug for ResumeToken {
    // A token is a credential: never print it whole.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ResumeToken({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

/// A stable, random identity a client keeps across visits (the web client stores it in
/// `localStorage`). Not a credential: it only lets the relay remember "do not pair these
/// two again" past a reconnect. A client may omit it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VisitorId(pub [u8; 16]);

impl std::fmt::Debug for VisitorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VisitorId({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

/// Messages a client sends on the control stream.
///
/// Every message about a pairing names its `match_id`: a message the client sent while it
/// still saw one partner must never act on the next one (the partner may have pressed Next
/// first, and the relay may have paired this client again before the message arrived).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// First message of every session: who I am, what I like, what media I handle, and
    /// (optionally) which session I am resuming. A fresh session joins the queue at once.
    Hello(Hello),
    /// Leave the pairing `match_id` (or, with `None` while idle, join the queue) and find
    /// someone new. A `Next` naming a pairing that has already ended is ignored.
    Next { match_id: Option<u64> },
    /// Leave the partner and the queue; the session stays open and idle until `Next`.
    Leave,
    /// Ask the partner's encoder for a keyframe (a frame was lost beyond repair).
    RequestKeyframe { match_id: u64 },
    /// How the partner's media is arriving; relayed to the partner for rate adaptation.
    ReceiverReport(ReceiverReport),
    /// An abuse report on the partner of `match_id`: they are not paired again.
    Report(AbuseReport),
    /// What this client can encode and decode now (a codec failed on this machine, say).
    /// Takes effect from the next pairing.
    Caps(MediaCaps),
    /// Ask the partner to send these fragments of a video frame again (from its short send
    /// history); relayed as [`ServerMsg::PeerNack`].
    Nack(Nack),
    /// The person is typing a chat line to the partner of `match_id`; relayed as
    /// [`ServerMsg::PeerTyping`]. Sent at most every few seconds while they type.
    Typing { match_id: u64 },
    /// What happens when the partner leaves: `true` (the default) puts this session back in
    /// the queue at once; `false` leaves it idle, told by `PeerLeft`, until it sends `Next`
    /// (so the person can read the last messages first).
    RequeueWhenLeft(bool),
    /// This client's public key for the pairing `match_id` (end-to-end encryption,
    /// [`crate::e2ee`]): sent once at `Matched` (again after a resume), relayed as
    /// [`ServerMsg::PeerKey`]. A new key pair for every pairing.
    KeyShare {
        match_id: u64,
        public: [u8; crate::e2ee::PUBLIC_KEY_BYTES],
    },
    /// The public key this client will use for its next pairing, registered ahead so that
    /// the relay can put it in the partner's `Matched` ([`Matched::partner_key`]) and
    /// neither side waits for a `KeyShare` to cross the relay. The relay uses a registered
    /// key for one pairing only and tells the client which ([`Matched::your_key`]); a
    /// newer registration replaces an unused one.
    NextKey {
        public: [u8; crate::e2ee::PUBLIC_KEY_BYTES],
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u16,
    pub name: String,
    pub interests: Vec<String>,
    pub resume: Option<ResumeToken>,
    pub visitor: Option<VisitorId>,
    pub media: MediaCaps,
}

impl Hello {
    /// Checks the size limits a decoder cannot: postcard only bounds the whole frame.
    pub fn validate(&self) -> Result<(), DecodeError> {
        if self.name.len() > MAX_NAME_BYTES {
            return Err(DecodeError::FieldTooLarge { field: "name" });
        }
        if self.interests.len() > MAX_INTERESTS {
            return Err(DecodeError::FieldTooLarge { field: "interests" });
        }
        if self.interests.iter().any(|i| i.len() > MAX_INTEREST_BYTES) {
            return Err(DecodeError::FieldTooLarge { field: "interest" });
        }
        self.media.validate()
    }
}

/// A video codec family. The browser maps each to a full WebCodecs codec string; the
/// relay only needs the family to pick one both partners handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VideoCodec {
    Vp8,
    Vp9,
    Av1,
    H264,
}

impl VideoCodec {
    pub const ALL: [VideoCodec; 4] = [
        VideoCodec::Vp8,
        VideoCodec::Vp9,
        VideoCodec::Av1,
        VideoCodec::H264,
    ];
}

/// What a client can do with video. `encode` is in the client's order of preference (it
/// knows its CPU); `hardware_encode` lists the codecs it encodes in hardware, which win.
/// Audio is Opus everywhere and needs no negotiation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MediaCaps {
    pub decode: Vec<VideoCodec>,
    pub encode: Vec<VideoCodec>,
    pub hardware_encode: Vec<VideoCodec>,
}

impl MediaCaps {
    pub fn validate(&self) -> Result<(), DecodeError> {
        let lists = [&self.decode, &self.encode, &self.hardware_encode];
        if lists.iter().any(|l| l.len() > MAX_CODECS) {
            return Err(DecodeError::FieldTooLarge { field: "codecs" });
        }
        Ok(())
    }

    /// The codec `sender` should encode for `receiver`: one the sender encodes and the
    /// receiver decodes, a hardware encoder first, then in the sender's own order of
    /// preference. `None`: no video this way (text and audio still work).
    pub fn choose(sender: &MediaCaps, receiver: &MediaCaps) -> Option<VideoCodec> {
        let usable = |c: &&VideoCodec| receiver.decode.contains(c);
        let hardware = sender
            .encode
            .iter()
            .filter(|c| sender.hardware_encode.contains(c))
            .find(usable);
        hardware
            .or_else(|| sender.encode.iter().find(usable))
            .copied()
    }
}

/// A request to resend missing fragments of one video frame of the pairing `match_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    pub match_id: u64,
    pub frame: u32,
    /// Fragment indices, at most [`MAX_NACK_FRAGMENTS`]; empty asks for the whole frame
    /// (the receiver saw none of it, so it does not know how many there are).
    pub fragments: Vec<u16>,
}

impl Nack {
    pub fn validate(&self) -> Result<(), DecodeError> {
        if self.fragments.len() > MAX_NACK_FRAGMENTS {
            return Err(DecodeError::FieldTooLarge { field: "fragments" });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReceiverReport {
    /// The pairing whose media this describes; a report for another is not relayed.
    pub match_id: u64,
    /// Media lost over the last report interval, in thousandths.
    pub loss_permille: u16,
    /// Inter-arrival jitter, in milliseconds.
    pub jitter_ms: u16,
    /// Video frames decoded since the session began.
    pub frames_decoded: u32,
    /// Media bitrate received over the last interval, in kbit/s.
    pub bitrate_kbps: u32,
    /// How far the latest one-way delay sits above the lowest seen recently, in
    /// milliseconds: a queue building on the path (the sender's delay signal).
    pub queue_delay_ms: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbuseReport {
    /// The pairing whose partner is reported; a report for a pairing that ended is ignored.
    pub match_id: u64,
    pub reason: ReportReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReportReason {
    Nudity,
    Harassment,
    Spam,
    Underage,
    Other,
}

/// Messages the relay sends on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMsg {
    /// Answer to `Hello`.
    Welcome(Welcome),
    /// In the queue; `waiting` is how many people are waiting including you.
    Queued {
        waiting: u32,
    },
    Matched(Matched),
    PeerLeft {
        reason: LeaveReason,
    },
    /// The partner's connection dropped; the relay is holding the pairing for them.
    PeerReconnecting,
    /// The partner is back on a new connection.
    PeerReturned,
    /// The partner asked for a keyframe.
    KeyframeRequested,
    /// The partner's receiver report about your media.
    PeerReport(ReceiverReport),
    /// The relay's view of your connection.
    Stats(RelayStats),
    Error(ErrorMsg),
    /// The partner asks for these fragments again.
    PeerNack(Nack),
    /// The relay is shutting down: calls go on for at most `within_ms`, then the session
    /// closes with [`ErrorCode::ShuttingDown`]; the client should resume (with its token)
    /// on the relay when it is back, or on another.
    Draining {
        within_ms: u32,
    },
    /// The partner is typing (see [`ClientMsg::Typing`]).
    PeerTyping,
    /// The partner's public key for the pairing `match_id` (see [`ClientMsg::KeyShare`]);
    /// sent again after this client resumes. A client keeps the first key of a pairing and
    /// refuses another one.
    PeerKey {
        match_id: u64,
        public: [u8; crate::e2ee::PUBLIC_KEY_BYTES],
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub session_id: u64,
    pub resume_token: ResumeToken,
    /// True when this `Hello` resumed an existing session.
    pub resumed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matched {
    /// Carried in every media datagram and chat stream of this pairing.
    pub match_id: u64,
    pub partner_name: String,
    pub shared_interests: Vec<String>,
    /// The video codec to encode for this partner ([`MediaCaps::choose`]); `None`: send no
    /// video (the partner cannot decode anything this client encodes).
    pub send_codec: Option<VideoCodec>,
    /// The video codec the partner will send, so the decoder can be ready before the first
    /// keyframe arrives.
    pub recv_codec: Option<VideoCodec>,
    /// The partner's public key for this pairing, when the partner registered one ahead
    /// ([`ClientMsg::NextKey`]) or has sent it since (a resume): the keys can be derived at
    /// once. `None`: it comes as [`ServerMsg::PeerKey`].
    pub partner_key: Option<[u8; crate::e2ee::PUBLIC_KEY_BYTES]>,
    /// Which of this client's registered keys the partner was given (`None`: none was
    /// registered when the pair was made; the client makes a key pair for this pairing and
    /// sends it in a `KeyShare`).
    pub your_key: Option<[u8; crate::e2ee::PUBLIC_KEY_BYTES]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaveReason {
    /// The partner pressed Next.
    Next,
    /// The partner pressed Stop or closed the app.
    Left,
    /// The partner's connection was lost and did not come back in time.
    Disconnected,
    /// The partner reported you, or you them.
    Reported,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RelayStats {
    pub rtt_us: u32,
    pub lost_permille: u16,
    pub send_rate_kbps: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMsg {
    pub code: ErrorCode,
    pub message: String,
    /// True when the relay closes the session right after this message.
    pub fatal: bool,
}

impl ClientMsg {
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let msg: ClientMsg = postcard::from_bytes(body)?;
        match &msg {
            ClientMsg::Hello(hello) => hello.validate()?,
            ClientMsg::Caps(caps) => caps.validate()?,
            ClientMsg::Nack(nack) => nack.validate()?,
            _ => {}
        }
        Ok(msg)
    }

    pub fn encode(&self) -> Vec<u8> {
        encode_body(self)
    }
}

impl ServerMsg {
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let msg: ServerMsg = postcard::from_bytes(body)?;
        if let ServerMsg::PeerNack(nack) = &msg {
            nack.validate()?;
        }
        Ok(msg)
    }

    pub fn encode(&self) -> Vec<u8> {
        encode_body(self)
    }

    /// A refusal the client can show as it is.
    pub fn error(code: ErrorCode, message: impl Into<String>, fatal: bool) -> Self {
        ServerMsg::Error(ErrorMsg {
            code,
            message: message.into(),
            fatal,
        })
    }
}

/// Encodes a message body. Serializing these plain data types into a growable buffer has
/// no failure mode (postcard fails only on a full fixed buffer or a non-serializable type).
pub(crate) fn encode_body<T: Serialize>(msg: &T) -> Vec<u8> {
    postcard::to_allocvec(msg).unwrap_or_default()
}
