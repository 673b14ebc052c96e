//! The protocol's hard limits, shared by the relay, the native client and (through the test
//! vectors file) the web client. Each number says why it is what it is.

/// Largest control or chat frame body in bytes (the length prefix not included). A `Hello`
/// with a full name and every interest is under 500 bytes and a chat line at its limit is
/// about 2 KiB, so 4 KiB leaves room without letting a peer make the relay buffer much.
pub const MAX_FRAME_BYTES: usize = 4096;

/// Largest display name, in bytes of UTF-8. Long enough for any real name, short enough
/// for a status line on a phone.
pub const MAX_NAME_BYTES: usize = 64;

/// Most interests one `Hello` may carry, and the longest one in bytes.
pub const MAX_INTERESTS: usize = 8;
pub const MAX_INTEREST_BYTES: usize = 32;

/// Longest chat line, in bytes of UTF-8 (about a tweet and a half of emoji-heavy text).
pub const MAX_CHAT_BYTES: usize = 2000;
/// A sealed chat line: the longest line and its tag.
pub const MAX_SEALED_CHAT_BYTES: usize = MAX_CHAT_BYTES + crate::e2ee::TAG_BYTES;

/// Largest media datagram a client may send (header plus payload). The relay forwards bytes
/// unchanged, so every datagram must also fit the *partner's* path: QUIC guarantees a little
/// over a kilobyte of datagram on any path (1200-byte packets), so 1100 always fits.
pub const MAX_MEDIA_DATAGRAM_BYTES: usize = 1100;

/// Upper bound of an encoded [`crate::MediaHeader`]: every varint at its widest.
pub const MAX_MEDIA_HEADER_BYTES: usize = 10 + 1 + 5 + 5 + 3 + 3 + 1 + 10 + 5;

/// Most codecs in one list of `MediaCaps`: there are four families today; room for more
/// without letting a `Hello` carry a long list.
pub const MAX_CODECS: usize = 8;

/// Most fragment indices in one `Nack`. A frame that lost more than this is better
/// recovered by a keyframe than by resending.
pub const MAX_NACK_FRAGMENTS: usize = 64;

/// Most fragments one video frame may be split into: 256 × ~1 KB is a 256 KB frame, well
/// above a 4K keyframe at realtime bitrates, and it bounds the receiver's reassembly buffer.
pub const MAX_FRAGMENTS: u16 = 256;

/// Frames a receiver keeps in reassembly at once per track. A frame still incomplete when
/// this many newer ones have started is counted lost (it would be too late to show anyway).
pub const MAX_FRAMES_IN_REASSEMBLY: usize = 4;
