//! The WebSocket fallback's framing: the same control, chat and media messages as the
//! WebTransport session, one WebSocket binary message each, for networks that block UDP
//! and browsers without WebTransport.
//!
//! Every message is one kind byte and a body:
//!
//! * [`KIND_MEDIA`]: a media datagram exactly as WebTransport carries it (a
//!   [`crate::MediaHeader`] and the payload), at most
//!   [`crate::limits::MAX_MEDIA_DATAGRAM_BYTES`]. The relay forwards it to the partner
//!   unchanged, over whichever transport the partner uses.
//! * [`KIND_CONTROL`]: one postcard `ClientMsg` (up) or `ServerMsg` (down), without the
//!   2-byte length prefix of the QUIC control stream (the message is the frame), at most
//!   [`crate::limits::MAX_FRAME_BYTES`]. The first message a client sends is `Hello`.
//! * [`KIND_CHAT`]: one postcard `ChatFrame`, at most [`crate::limits::MAX_FRAME_BYTES`].
//!   Each side sends `Open { match_id }` before the first line of a pairing; a `Line`
//!   belongs to the last `Open`.
//!
//! Text messages, unknown kinds and oversized messages are fatal (`malformed`,
//! `too_large`). The relay ends a session with a fatal `Error` on the control kind and then
//! a close frame whose code is [`CLOSE_CODE_BASE`] plus the error code
//! ([`crate::ErrorCode::to_code`]); a client that leaves on purpose closes with 1000
//! (anything else, or a lost connection, is a connection lost and may be resumed).

/// The relay's WebSocket path, on its HTTP (or, with a real certificate, HTTPS) port.
pub const WS_PATH: &str = "/ws";

pub const KIND_MEDIA: u8 = 0;
pub const KIND_CONTROL: u8 = 1;
pub const KIND_CHAT: u8 = 2;

/// WebSocket close codes 4000–4999 are the application's; the relay's error code `n` is
/// sent as `4000 + n`.
pub const CLOSE_CODE_BASE: u16 = 4000;

/// The normal close a client sends when it leaves on purpose.
pub const CLOSE_NORMAL: u16 = 1000;

/// Largest WebSocket message either side accepts: a control or chat frame at its limit and
/// the kind byte (media datagrams are smaller).
pub const MAX_WS_MESSAGE_BYTES: usize = crate::limits::MAX_FRAME_BYTES + 1;

/// The close code for a relay error code.
pub const fn close_code(code: u32) -> u16 {
    if code > 999 {
        CLOSE_CODE_BASE
    } else {
        CLOSE_CODE_BASE + code as u16
    }
}

/// The relay error code a close code carries, if it is one of the relay's.
pub const fn error_code_of(close: u16) -> Option<u32> {
    if close > CLOSE_CODE_BASE && close < CLOSE_CODE_BASE + 1000 {
        Some((close - CLOSE_CODE_BASE) as u32)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{MAX_FRAME_BYTES, MAX_MEDIA_DATAGRAM_BYTES};
    use crate::ErrorCode;

    #[test]
    fn close_codes_round_trip_every_error_code() {
        for code in ErrorCode::ALL {
            let close = close_code(code.to_code());
            assert!((4001..5000).contains(&close));
            assert_eq!(error_code_of(close), Some(code.to_code()));
        }
        assert_eq!(error_code_of(CLOSE_NORMAL), None);
        assert_eq!(error_code_of(CLOSE_CODE_BASE), None);
    }

    #[test]
    fn every_message_fits_the_cap() {
        const { assert!(MAX_MEDIA_DATAGRAM_BYTES < MAX_WS_MESSAGE_BYTES) };
        assert_eq!(MAX_WS_MESSAGE_BYTES, MAX_FRAME_BYTES + 1);
    }
}
