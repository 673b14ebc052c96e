//! Fuzz target: the receiver's `Reassembler` fed an arbitrary sequence of fragments
//! (any pairing, track, frame number, index and count, duplicates, reordering, frame
//! numbers near the `u32` wrap), each first checked by `MediaHeader::read` exactly as a
//! receiver does.
//!
//! Input: 9-byte records `[match][flags][frame u16][index u16][count u16][len]`; each
//! fragment's payload carries a tag naming its pairing, track, frame and index.
//! Properties:
//! * memory: the bytes the reassembler holds (counted by a global allocator that wraps
//!   the system one) never exceed its bound of `MAX_FRAMES_IN_REASSEMBLY` partial frames
//!   of `MAX_FRAGMENTS` largest payloads per track;
//! * a completed frame is exactly fragments 0..n of one frame of the current pairing and
//!   track, in order, with nothing from any other frame, track or pairing;
//! * per track and pairing, frames complete at most once and in increasing order, and
//!   `frames_completed` counts them.
#![no_main]

use duet_proto::limits::{MAX_FRAGMENTS, MAX_FRAMES_IN_REASSEMBLY, MAX_MEDIA_DATAGRAM_BYTES};
use duet_proto::media::Frame;
use duet_proto::{MediaHeader, Reassembler, Track};
use libfuzzer_sys::fuzz_target;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

/// The system allocator, counting the bytes live at any moment.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const RECORD: usize = 9;
/// Tag at the front of every payload: match id (8), track (1), frame (4), index (2),
/// filler length (2).
const TAG: usize = 17;
const FILLER: u8 = 0xab;

fn max_payload() -> usize {
    MediaHeader::max_payload(MAX_MEDIA_DATAGRAM_BYTES)
}

/// The most the reassembler may hold: per track, `MAX_FRAMES_IN_REASSEMBLY` partial frames
/// of `MAX_FRAGMENTS` slots, every slot a full payload; plus a little for the lists.
fn bound() -> isize {
    let slot = std::mem::size_of::<Option<Vec<u8>>>() + max_payload();
    let partial = 128 + usize::from(MAX_FRAGMENTS) * slot;
    (2 * MAX_FRAMES_IN_REASSEMBLY * partial + 4096) as isize
}

fn track_tag(t: Track) -> u8 {
    match t {
        Track::Audio => 0,
        Track::Video => 1,
        // The reassembler drops parity datagrams; a tag keeps the check's input total.
        Track::VideoParity => 2,
    }
}

fn payload(h: &MediaHeader, filler: usize, out: &mut Vec<u8>) {
    let filler = filler.min(max_payload() - TAG);
    out.clear();
    out.extend_from_slice(&h.match_id.to_le_bytes());
    out.push(track_tag(h.track));
    out.extend_from_slice(&h.frame.to_le_bytes());
    out.extend_from_slice(&h.frag_index.to_le_bytes());
    out.extend_from_slice(&(filler as u16).to_le_bytes());
    out.resize(TAG + filler, FILLER);
}

/// Checks that `f` is fragments 0..n of frame `f.frame` of pairing `match_id`, in order.
/// Allocates nothing (it runs inside the measured window).
fn check_frame(f: &Frame, match_id: u64) {
    let mut rest = &f.data[..];
    let mut index = 0u16;
    while !rest.is_empty() {
        assert!(
            rest.len() >= TAG,
            "a fragment of a completed frame is cut short"
        );
        let u64_at = |i: usize| u64::from_le_bytes(rest[i..i + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |i: usize| u32::from_le_bytes(rest[i..i + 4].try_into().unwrap_or([0; 4]));
        let u16_at = |i: usize| u16::from_le_bytes([rest[i], rest[i + 1]]);
        assert_eq!(u64_at(0), match_id, "a fragment of another pairing");
        assert_eq!(rest[8], track_tag(f.track), "a fragment of the other track");
        assert_eq!(u32_at(9), f.frame, "a fragment of another frame");
        assert_eq!(u16_at(13), index, "fragments out of order or missing");
        let filler = usize::from(u16_at(15));
        assert!(rest.len() >= TAG + filler, "a fragment cut short");
        assert!(rest[TAG..TAG + filler].iter().all(|b| *b == FILLER));
        rest = &rest[TAG + filler..];
        index += 1;
    }
    assert!(index >= 1, "an empty frame");
    assert!(index <= MAX_FRAGMENTS, "more fragments than allowed");
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reassembler::new();
    let (mut pay, mut dg) = (Vec::new(), Vec::new());
    let mut held: isize = 0;
    let mut completed = 0u64;
    // Per track, the last frame completed in the current pairing.
    let mut current_match = None;
    let mut last: [Option<u32>; 3] = [None, None, None];
    for rec in data.chunks_exact(RECORD) {
        let flags = rec[1];
        let match_id = if rec[0] & 0x80 != 0 {
            u64::MAX - u64::from(rec[0] & 3)
        } else {
            u64::from(rec[0] & 3)
        };
        let mut frame = u32::from(u16::from_le_bytes([rec[2], rec[3]]));
        if flags & 4 != 0 {
            frame = frame.wrapping_add(u32::MAX - 0xffff);
        }
        let h = MediaHeader {
            match_id,
            track: if flags & 16 != 0 {
                Track::VideoParity
            } else if flags & 1 != 0 {
                Track::Video
            } else {
                Track::Audio
            },
            seq: 0,
            frame,
            frag_index: u16::from_le_bytes([rec[4], rec[5]]),
            frag_count: u16::from_le_bytes([rec[6], rec[7]]),
            keyframe: flags & 2 != 0,
            capture_us: u64::from(rec[8]),
            ref_frame: frame,
        };
        let filler = usize::from(rec[8]) * if flags & 8 != 0 { 4 } else { 1 };
        payload(&h, filler, &mut pay);
        h.write_datagram(&pay, &mut dg);
        // A receiver only ever pushes what `read` accepted.
        let Ok((h, offset)) = MediaHeader::read(&dg) else {
            continue;
        };
        let before = LIVE.load(Relaxed);
        let out = r.push(&h, &dg[offset..]);
        if h.track == Track::VideoParity {
            assert!(out.is_none(), "a parity datagram completed a frame");
        }
        let done = out.as_ref().map(|f| {
            assert_eq!(f.track, h.track, "completed on the wrong track");
            assert_eq!(f.frame, h.frame, "completed a frame it was not given");
            check_frame(f, h.match_id);
            f.frame
        });
        drop(out);
        held += LIVE.load(Relaxed) - before;
        assert!(
            held <= bound(),
            "reassembler holds {held} bytes, bound {}",
            bound()
        );

        if current_match != Some(h.match_id) {
            current_match = Some(h.match_id);
            last = [None, None, None];
        }
        if let Some(frame) = done {
            completed += 1;
            let t = usize::from(track_tag(h.track));
            if let Some(prev) = last[t] {
                assert!(frame > prev, "frame {frame} completed after {prev}");
            }
            last[t] = Some(frame);
        }
        assert_eq!(
            r.stats.frames_completed, completed,
            "frames_completed is off"
        );
    }
});
