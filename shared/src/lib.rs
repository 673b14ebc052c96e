//! `duet-proto`: the wire protocol every Rust side of Duet speaks.
//!
//! One WebTransport session per user carries three kinds of traffic:
//!
//! * the **control stream** (the first bidirectional stream the client opens):
//!   length-prefixed postcard frames, [`ClientMsg`] upward and [`ServerMsg`] downward;
//! * one **chat stream** per pairing in each direction: length-prefixed [`ChatFrame`]s,
//!   opened by `ChatFrame::Open { match_id }` so a line never reaches the wrong partner;
//! * **media datagrams**: a postcard [`MediaHeader`] followed by the encoded payload.
//!
//! This crate performs no I/O and reads no clock: time comes in as an argument. Every
//! decoder takes `&[u8]` and returns a `Result`; none of them can panic on any input
//! (the fuzz targets and property tests hold it to that).
//!
//! The browser cannot run this crate, so `web-client/` carries its own postcard codec;
//! [`vectors`] generates the byte-exact test vectors that codec is checked against.

pub mod chat;
pub mod control;
pub mod e2ee;
pub mod error;
pub mod frame;
pub mod limits;
pub mod media;
pub mod vectors;
pub mod ws;

pub use chat::ChatFrame;
pub use control::{
    AbuseReport, ClientMsg, ErrorMsg, Hello, LeaveReason, Matched, MediaCaps, Nack, ReceiverReport,
    RelayStats, ReportReason, ResumeToken, ServerMsg, VideoCodec, VisitorId, Welcome,
};
pub use error::{DecodeError, ErrorCode};
pub use frame::{encode_frame, FrameReader};
pub use media::{MediaHeader, Reassembler, Track};

/// The protocol version a client states in `Hello`. A relay refuses any other version with
/// [`ErrorCode::UnsupportedVersion`] and a message naming the version it speaks.
pub const PROTOCOL_VERSION: u16 = 4;

/// The WebTransport path on the relay's QUIC port.
pub const SESSION_PATH: &str = "/chat";
