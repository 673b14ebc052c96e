//! Length-prefixed framing for the control and chat streams: a 2-byte big-endian body
//! length, then the postcard body. [`FrameReader`] reassembles frames from whatever chunks
//! a stream delivers and refuses an oversized frame as soon as its prefix is read, before
//! buffering any of it.

use crate::error::DecodeError;
use crate::limits::MAX_FRAME_BYTES;

const PREFIX: usize = 2;

/// Prefixes `body` with its length. A body over [`MAX_FRAME_BYTES`] is refused: the peer
/// would end the session for it.
pub fn encode_frame(body: &[u8]) -> Result<Vec<u8>, DecodeError> {
    if body.len() > MAX_FRAME_BYTES {
        return Err(DecodeError::TooLarge {
            len: body.len(),
            max: MAX_FRAME_BYTES,
        });
    }
    let mut out = Vec::with_capacity(PREFIX + body.len());
    // The cast cannot truncate: the length was checked against MAX_FRAME_BYTES < 65536.
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// Incremental frame decoder. Its buffer never holds more than one frame plus one read.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame body, `Ok(None)` if more bytes are needed, or an error if
    /// the announced length is over the limit (the stream is then unusable).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        let Some(prefix) = self.buf.get(..PREFIX) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
        if len > MAX_FRAME_BYTES {
            return Err(DecodeError::TooLarge {
                len,
                max: MAX_FRAME_BYTES,
            });
        }
        if self.buf.len() < PREFIX + len {
            return Ok(None);
        }
        let body = self.buf[PREFIX..PREFIX + len].to_vec();
        self.buf.drain(..PREFIX + len);
        Ok(Some(body))
    }

    /// Bytes held that do not yet form a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_reads_come_out_whole() {
        let a = encode_frame(b"hello").expect("small frame");
        let b = encode_frame(&[7u8; 300]).expect("small frame");
        let mut all = a.clone();
        all.extend_from_slice(&b);
        let mut r = FrameReader::new();
        let mut out = Vec::new();
        for chunk in all.chunks(3) {
            r.push(chunk);
            while let Some(f) = r.next_frame().expect("valid") {
                out.push(f);
            }
        }
        assert_eq!(out, vec![b"hello".to_vec(), vec![7u8; 300]]);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn oversized_prefix_is_refused_before_the_body_arrives() {
        let mut r = FrameReader::new();
        r.push(&[0xff, 0xff]);
        assert!(matches!(
            r.next_frame(),
            Err(DecodeError::TooLarge { len: 65535, .. })
        ));
        assert!(encode_frame(&vec![0u8; MAX_FRAME_BYTES + 1]).is_err());
        assert!(encode_frame(&vec![0u8; MAX_FRAME_BYTES]).is_ok());
    }
}
