//! Chat streams: one unidirectional stream per pairing and direction, so a long chat line
//! never delays a control message (or a Next) behind it.
//!
//! A stream opens with `Open { match_id }`; every later frame is a `Line`. The relay checks
//! the match id against the sender's current pairing and the line against
//! [`crate::limits::MAX_CHAT_BYTES`], then writes the same frames to a stream it opens
//! toward the partner.

use crate::control::encode_body;
use crate::error::DecodeError;
use crate::limits::MAX_CHAT_BYTES;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatFrame {
    Open { match_id: u64 },
    Line { text: String },
}

impl ChatFrame {
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let frame: ChatFrame = postcard::from_bytes(body)?;
        if let ChatFrame::Line { text } = &frame {
            if text.len() > MAX_CHAT_BYTES {
                return Err(DecodeError::FieldTooLarge { field: "chat line" });
            }
        }
        Ok(frame)
    }

    pub fn encode(&self) -> Vec<u8> {
        encode_body(self)
    }
}
