//! Media datagrams: a compact postcard [`MediaHeader`] followed by the encoded payload, and
//! the receiver's [`Reassembler`] that turns fragments back into frames.
//!
//! `match_id` comes first so that the relay can read just that varint
//! ([`peek_match_id`]) and forward the datagram's bytes unchanged. A frame bigger than one
//! datagram is split into `frag_count` fragments; a frame with a missing fragment is
//! dropped whole and the receiver asks for a keyframe, because a decoder fed a frame with
//! a hole shows garbage until the next keyframe anyway.

use crate::error::DecodeError;
use crate::limits::{
    MAX_FRAGMENTS, MAX_FRAMES_IN_REASSEMBLY, MAX_MEDIA_DATAGRAM_BYTES, MAX_MEDIA_HEADER_BYTES,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Track {
    Audio,
    Video,
    /// Forward error correction for one video frame, sent after its fragments while the
    /// path loses datagrams: the XOR of the frame's fragments (each zero-padded to the
    /// longest), after a `u32` little-endian total payload length. With it a receiver
    /// rebuilds any one missing fragment without a round trip. `frame`, `frag_count`,
    /// `keyframe`, `capture_us` and `ref_frame` are the frame's; `frag_index` is 0; `seq`
    /// counts parity datagrams on their own. A receiver may ignore it.
    VideoParity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaHeader {
    /// The pairing this datagram belongs to; the relay drops any other.
    pub match_id: u64,
    pub track: Track,
    /// Per-track datagram sequence number, for loss and reorder accounting.
    pub seq: u32,
    /// Per-track frame number; all fragments of a frame share it.
    pub frame: u32,
    pub frag_index: u16,
    pub frag_count: u16,
    pub keyframe: bool,
    /// When the frame was captured, in microseconds on the sender's clock (Unix epoch).
    pub capture_us: u64,
    /// The frame this one references (its own number for a keyframe). A receiver decodes
    /// a frame only when its reference was decoded, so a lost frame that nothing refers to
    /// (a top temporal layer, `L1T2`/`L1T3`) costs one frame, never a broken picture.
    pub ref_frame: u32,
}

impl MediaHeader {
    /// Writes the header followed by `payload` into `out` (cleared first).
    pub fn write_datagram(&self, payload: &[u8], out: &mut Vec<u8>) {
        out.clear();
        let mut header = [0u8; MAX_MEDIA_HEADER_BYTES];
        // Cannot fail: MAX_MEDIA_HEADER_BYTES is every field at its widest encoding.
        let used = postcard::to_slice(self, &mut header)
            .map(|s| s.len())
            .unwrap_or(0);
        out.extend_from_slice(&header[..used]);
        out.extend_from_slice(payload);
    }

    /// Reads a datagram: the header and the offset where the payload starts. Checks what a
    /// receiver relies on (fragment index inside the count, count within the limit, size).
    pub fn read(datagram: &[u8]) -> Result<(MediaHeader, usize), DecodeError> {
        if datagram.len() > MAX_MEDIA_DATAGRAM_BYTES {
            return Err(DecodeError::TooLarge {
                len: datagram.len(),
                max: MAX_MEDIA_DATAGRAM_BYTES,
            });
        }
        let (header, rest): (MediaHeader, _) = postcard::take_from_bytes(datagram)?;
        if header.frag_count == 0
            || header.frag_count > MAX_FRAGMENTS
            || header.frag_index >= header.frag_count
        {
            return Err(DecodeError::Malformed(format!(
                "fragment {} of {}",
                header.frag_index, header.frag_count
            )));
        }
        Ok((header, datagram.len() - rest.len()))
    }

    /// Largest payload per datagram given the session's datagram size.
    pub fn max_payload(max_datagram: usize) -> usize {
        max_datagram
            .min(MAX_MEDIA_DATAGRAM_BYTES)
            .saturating_sub(MAX_MEDIA_HEADER_BYTES)
    }
}

/// Splits a frame into media datagrams of at most `max_payload` payload bytes each.
/// `frame` gives the frame's fields (`seq`, `frag_index` and `frag_count` are filled in
/// here); `seq` is the track's next sequence number and advances per datagram. Each
/// datagram is written into `buf` and handed to `send`. A frame that would need more than
/// [`MAX_FRAGMENTS`] fragments is not sent at all (`None`): the relay would drop it.
pub fn fragment(
    frame: MediaHeader,
    data: &[u8],
    max_payload: usize,
    seq: &mut u32,
    buf: &mut Vec<u8>,
    mut send: impl FnMut(&[u8]),
) -> Option<u16> {
    let max_payload = max_payload.max(1);
    let count = u16::try_from(data.len().div_ceil(max_payload).max(1))
        .ok()
        .filter(|c| *c <= MAX_FRAGMENTS)?;
    // An empty frame still goes out as one (empty) fragment.
    let chunks = data
        .chunks(max_payload)
        .chain(data.is_empty().then_some(&[][..]));
    for (i, chunk) in chunks.enumerate() {
        let header = MediaHeader {
            seq: *seq,
            frag_index: i as u16,
            frag_count: count,
            ..frame
        };
        *seq = seq.wrapping_add(1);
        header.write_datagram(chunk, buf);
        send(buf);
    }
    Some(count)
}

/// Reads only the leading `match_id` varint: all the relay needs to route a datagram.
pub fn peek_match_id(datagram: &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    for (i, byte) in datagram.iter().take(10).enumerate() {
        let bits = u64::from(byte & 0x7f);
        if i == 9 && *byte > 1 {
            return None; // more than 64 bits
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// A whole frame out of the reassembler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub track: Track,
    pub frame: u32,
    pub keyframe: bool,
    pub capture_us: u64,
    pub ref_frame: u32,
    pub data: Vec<u8>,
}

#[derive(Debug)]
struct Partial {
    frame: u32,
    keyframe: bool,
    capture_us: u64,
    ref_frame: u32,
    parts: Vec<Option<Vec<u8>>>,
    received: u16,
}

#[derive(Debug, Default)]
struct TrackState {
    /// Highest frame number delivered (or given up on); older fragments are late.
    last_done: Option<u32>,
    partial: Vec<Partial>,
}

/// Counters a receiver reports (and the native client prints).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    pub frames_completed: u64,
    pub frames_lost: u64,
    pub fragments_late: u64,
    pub fragments_duplicate: u64,
}

/// Per-pairing reassembly of fragmented frames, for both tracks. Bounded: at most
/// [`MAX_FRAMES_IN_REASSEMBLY`] partial frames per track, each at most [`MAX_FRAGMENTS`].
#[derive(Debug, Default)]
pub struct Reassembler {
    match_id: Option<u64>,
    audio: TrackState,
    video: TrackState,
    pub stats: ReassemblyStats,
    keyframe_wanted: bool,
}

impl Reassembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// True once after a video frame was lost: ask the sender for a keyframe.
    pub fn take_keyframe_request(&mut self) -> bool {
        std::mem::take(&mut self.keyframe_wanted)
    }

    /// Feeds one fragment. Returns the frame it completed, if any.
    pub fn push(&mut self, header: &MediaHeader, payload: &[u8]) -> Option<Frame> {
        if self.match_id != Some(header.match_id) {
            // A new pairing starts from a clean slate; nothing carries over.
            self.match_id = Some(header.match_id);
            self.audio = TrackState::default();
            self.video = TrackState::default();
        }
        let state = match header.track {
            Track::Audio => &mut self.audio,
            Track::Video => &mut self.video,
            // This reassembler repairs nothing: a lost fragment costs the frame (and a
            // keyframe request), as its module says.
            Track::VideoParity => return None,
        };
        if let Some(done) = state.last_done {
            if header.frame <= done {
                self.stats.fragments_late += 1;
                return None;
            }
        }
        let idx = match state.partial.iter().position(|p| p.frame == header.frame) {
            Some(i) => i,
            None => {
                if state.partial.len() >= MAX_FRAMES_IN_REASSEMBLY {
                    if state
                        .partial
                        .first()
                        .is_some_and(|p| p.frame > header.frame)
                    {
                        // Older than everything in flight while the buffer is full: late.
                        self.stats.fragments_late += 1;
                        return None;
                    }
                    // The oldest partial frame is too late to show: give up on it.
                    let oldest = state.partial.remove(0);
                    state.last_done = Some(oldest.frame);
                    self.stats.frames_lost += 1;
                    self.keyframe_wanted |= header.track == Track::Video;
                    state.partial.retain(|p| p.frame > oldest.frame);
                }
                state.partial.push(Partial {
                    frame: header.frame,
                    keyframe: header.keyframe,
                    capture_us: header.capture_us,
                    ref_frame: header.ref_frame,
                    parts: vec![None; usize::from(header.frag_count)],
                    received: 0,
                });
                state.partial.sort_by_key(|p| p.frame);
                state.partial.iter().position(|p| p.frame == header.frame)?
            }
        };
        let partial = &mut state.partial[idx];
        let slot = partial.parts.get_mut(usize::from(header.frag_index))?;
        if slot.is_some() {
            self.stats.fragments_duplicate += 1;
            return None;
        }
        *slot = Some(payload.to_vec());
        partial.received += 1;
        if usize::from(partial.received) < partial.parts.len() {
            return None;
        }
        // Complete. Older partial frames can no longer be decoded in order: drop them.
        let done = state.partial.remove(idx);
        let skipped = match state.last_done {
            Some(prev) => u64::from(done.frame.saturating_sub(prev).saturating_sub(1)),
            None => 0,
        };
        state.partial.retain(|p| p.frame > done.frame);
        state.last_done = Some(done.frame);
        if skipped > 0 {
            self.stats.frames_lost += skipped;
            self.keyframe_wanted |= header.track == Track::Video && !done.keyframe;
        }
        self.stats.frames_completed += 1;
        let data = done.parts.into_iter().flatten().flatten().collect();
        Some(Frame {
            track: header.track,
            frame: done.frame,
            keyframe: done.keyframe,
            capture_us: done.capture_us,
            ref_frame: done.ref_frame,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(frame: u32, idx: u16, count: u16) -> MediaHeader {
        MediaHeader {
            match_id: 7,
            track: Track::Video,
            seq: 0,
            frame,
            frag_index: idx,
            frag_count: count,
            keyframe: frame == 0,
            capture_us: 1_700_000_000_000_000,
            ref_frame: frame.saturating_sub(1),
        }
    }

    #[test]
    fn header_round_trips_and_match_id_peeks() {
        let h = MediaHeader {
            match_id: u64::MAX,
            seq: u32::MAX,
            frame: u32::MAX,
            frag_index: MAX_FRAGMENTS - 1,
            frag_count: MAX_FRAGMENTS,
            capture_us: u64::MAX,
            ..header(0, 0, 1)
        };
        let mut dg = Vec::new();
        h.write_datagram(b"payload", &mut dg);
        assert!(dg.len() <= MAX_MEDIA_HEADER_BYTES + 7);
        let (back, off) = MediaHeader::read(&dg).expect("valid");
        assert_eq!(back, h);
        assert_eq!(&dg[off..], b"payload");
        assert_eq!(peek_match_id(&dg), Some(u64::MAX));
        assert_eq!(peek_match_id(&[0x80; 11]), None);
        assert_eq!(peek_match_id(&[]), None);
    }

    #[test]
    fn bad_fragment_fields_are_refused() {
        let mut dg = Vec::new();
        header(0, 3, 3).write_datagram(b"", &mut dg);
        assert!(MediaHeader::read(&dg).is_err());
        header(0, 0, 0).write_datagram(b"", &mut dg);
        assert!(MediaHeader::read(&dg).is_err());
        header(0, 0, 1).write_datagram(&[0; MAX_MEDIA_DATAGRAM_BYTES], &mut dg);
        assert!(MediaHeader::read(&dg).is_err());
    }

    #[test]
    fn reordered_and_duplicated_fragments_reassemble_once() {
        let mut r = Reassembler::new();
        assert!(r.push(&header(0, 2, 3), b"c").is_none());
        assert!(r.push(&header(0, 0, 3), b"a").is_none());
        assert!(r.push(&header(0, 0, 3), b"a").is_none());
        let f = r.push(&header(0, 1, 3), b"b").expect("complete");
        assert_eq!(f.data, b"abc");
        assert!(r.push(&header(0, 1, 3), b"b").is_none());
        assert_eq!(r.stats.fragments_duplicate, 1);
        assert_eq!(r.stats.fragments_late, 1);
        assert!(!r.take_keyframe_request());
    }

    #[test]
    fn a_frame_with_a_missing_fragment_is_dropped_and_a_keyframe_asked_for() {
        let mut r = Reassembler::new();
        assert!(r.push(&header(0, 0, 1), b"k").is_some());
        assert!(r.push(&header(1, 0, 2), b"x").is_none()); // fragment 1 of frame 1 lost
        let f = r.push(&header(2, 0, 1), b"y").expect("frame 2");
        assert_eq!(f.frame, 2);
        assert_eq!(r.stats.frames_lost, 1);
        assert!(r.take_keyframe_request());
        assert!(!r.take_keyframe_request());
        // The late fragment of frame 1 is ignored.
        assert!(r.push(&header(1, 1, 2), b"z").is_none());
    }

    #[test]
    fn reassembly_is_bounded() {
        let mut r = Reassembler::new();
        for frame in 0..100 {
            assert!(r.push(&header(frame, 0, 2), b"half").is_none());
        }
        assert!(r.video.partial.len() <= MAX_FRAMES_IN_REASSEMBLY);
        assert!(r.stats.frames_lost >= 95);
    }

    #[test]
    fn fragmenting_then_reassembling_gives_the_frame_back() {
        let data: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let (mut seq, mut buf, mut datagrams) = (10, Vec::new(), Vec::new());
        let count = fragment(header(3, 0, 1), &data, 1000, &mut seq, &mut buf, |d| {
            datagrams.push(d.to_vec())
        });
        assert_eq!(count, Some(3));
        assert_eq!(seq, 13);
        let mut r = Reassembler::new();
        let mut out = None;
        for d in datagrams.iter().rev() {
            let (h, off) = MediaHeader::read(d).expect("valid");
            out = out.or(r.push(&h, &d[off..]));
        }
        assert_eq!(out.map(|f| f.data), Some(data));
        // Too many fragments: nothing is sent.
        let mut sent = 0;
        let big = vec![0u8; usize::from(MAX_FRAGMENTS) + 1];
        assert_eq!(
            fragment(header(4, 0, 1), &big, 1, &mut seq, &mut buf, |_| sent += 1),
            None
        );
        assert_eq!(sent, 0);
    }

    #[test]
    fn a_new_match_id_resets_state() {
        let mut r = Reassembler::new();
        assert!(r.push(&header(5, 0, 1), b"a").is_some());
        let mut h = header(0, 0, 1);
        h.match_id = 8;
        assert!(
            r.push(&h, b"b").is_some(),
            "frame 0 of a new pairing is not late"
        );
    }
}
