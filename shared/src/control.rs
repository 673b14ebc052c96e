//! Control-stream messages: [`ClientMsg`] from a client, [`ServerMsg`] from the relay.
//!
//! Field order is wire order (postcard writes fields in declaration order, enums as a
//! varint variant index), so reordering a field or a variant is a protocol change: bump
//! [`crate::PROTOCOL_VERSION`] and regenerate the test vectors. Only integer, bool, string,
//! sequence, option and fixed-array types appear here, which keeps the web client's codec
//! small.

use crate::error::{DecodeError, ErrorCode};
use crate::limits::{MAX_INTERESTS, MAX_INTEREST_BYTES, MAX_NAME_BYTES};
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

/// Messages a client sends on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// First message of every session: who I am, what I like, and (optionally) which
    /// session I am resuming. A fresh session joins the queue at once.
    Hello(Hello),
    /// Leave the current partner (or, when idle, join the queue) and find someone new.
    Next,
    /// Leave the partner and the queue; the session stays open and idle until `Next`.
    Leave,
    /// Ask the partner's encoder for a keyframe (a fragment went missing).
    RequestKeyframe,
    /// How the partner's media is arriving; relayed to the partner for bitrate adaptation.
    ReceiverReport(ReceiverReport),
    /// An abuse report on the current partner: they are not paired with the reporter again.
    Report(AbuseReport),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u16,
    pub name: String,
    pub interests: Vec<String>,
    pub resume: Option<ResumeToken>,
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
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReceiverReport {
    /// Media lost over the last report interval, in thousandths.
    pub loss_permille: u16,
    /// Inter-arrival jitter, in milliseconds.
    pub jitter_ms: u16,
    /// Video frames decoded since the session began.
    pub frames_decoded: u32,
    /// Media bitrate received over the last interval, in kbit/s.
    pub bitrate_kbps: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbuseReport {
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
    /// Codecs the relay suggests, best first (the partner decodes what the sender encodes;
    /// WebCodecs decoders describe themselves in the first keyframe's config).
    pub codec_hints: Vec<String>,
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
        if let ClientMsg::Hello(hello) = &msg {
            hello.validate()?;
        }
        Ok(msg)
    }

    pub fn encode(&self) -> Vec<u8> {
        encode_body(self)
    }
}

impl ServerMsg {
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        Ok(postcard::from_bytes(body)?)
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
