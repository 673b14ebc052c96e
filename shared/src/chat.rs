//! Chat streams: one unidirectional stream per pairing and direction, so a long chat line
//! never delays a control message (or a Next) behind it.
//!
//! A stream opens with `Open { match_id }`; every later frame is a `Sealed` line (a `Line`
//! in clear is part of the protocol, but clients send and show only sealed ones: a relay
//! could write a `Line` itself). The relay checks the match id against the sender's
//! current pairing and the line against [`crate::limits::MAX_CHAT_BYTES`], then writes the
//! same frames to a stream it opens toward the partner.

use crate::control::encode_body;
use crate::error::DecodeError;
use crate::limits::{MAX_CHAT_BYTES, MAX_SEALED_CHAT_BYTES};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatFrame {
    Open {
        match_id: u64,
    },
    Line {
        text: String,
    },
    /// A line sealed end to end ([`crate::e2ee`]): its UTF-8 text, encrypted under the
    /// pairing's key with `number` (counted per pairing and direction, from 0, never
    /// reused: a resume keeps counting) as the nonce.
    Sealed {
        number: u32,
        sealed: Vec<u8>,
    },
}

impl ChatFrame {
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let frame: ChatFrame = postcard::from_bytes(body)?;
        let too_large = match &frame {
            ChatFrame::Line { text } => text.len() > MAX_CHAT_BYTES,
            ChatFrame::Sealed { sealed, .. } => sealed.len() > MAX_SEALED_CHAT_BYTES,
            ChatFrame::Open { .. } => false,
        };
        if too_large {
            return Err(DecodeError::FieldTooLarge { field: "chat line" });
        }
        Ok(frame)
    }

    pub fn encode(&self) -> Vec<u8> {
        encode_body(self)
    }
}
