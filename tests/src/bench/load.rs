//! The load generator: many native sessions on a few shared client endpoints, one sender
//! task that paces every session's video and audio, and one receive task per session that
//! tracks frames and latency.
//!
//! Efficiency decides whether the figures describe the relay or the generator, so:
//!
//! * sessions share client endpoints (one UDP socket and one QUIC driver task per
//!   [`LoadOptions::sessions_per_endpoint`] sessions), with socket buffers sized like the
//!   relay's;
//! * one sender task serves every session: it wakes when the earliest frame is due, sends
//!   what is due and sleeps again, so there is no timer per session. Sessions' schedules
//!   are spread evenly over a frame interval, as independent people's cameras are;
//! * payloads are one shared buffer, headers are written into one reused buffer, and the
//!   receive side reads the header in place and counts fragments in a fixed ring: nothing
//!   on the per-datagram path allocates (quinn and wtransport allocate their own packet
//!   buffers, which is part of what is measured);
//! * the sender measures how late it sends against its schedule and counts frames it had
//!   to skip; the report says when the generator fell behind.
//!
//! The same sender and receive tracking drive the floor (plain UDP) transport, so the two
//! carry byte-for-byte the same load.
//!
//! With [`MediaSpec::adaptive`] each session's video follows its partner's receiver
//! reports, its connection's send estimate and its own RTT, as the apps' senders do: the
//! receive task meters the partner's media and reports it every second
//! ([`duet_client::quality`]), runs the session's own [`BitrateController`] on the
//! partner's reports about it and on its connection's figures, and leaves the target in the
//! session's [`Slot`], where the sender sizes the next frame from it.

use super::stats::LatencyHistogram;
use duet_client::quality::{
    BitrateController, ReceiveMeter, MAX_VIDEO_KBPS, REPORT_INTERVAL_MS, RTT_SAMPLE_MS,
};
use duet_client::{Client, ClientEndpoint, ConnectOptions};
use duet_proto::e2ee::{Aad, KeyPair, Kind, PairKeys};
use duet_proto::limits::MAX_MEDIA_DATAGRAM_BYTES;
use duet_proto::media::{peek_match_id, MediaHeader, Track};
use duet_proto::{ClientMsg, ServerMsg};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::time::Instant;

/// `Slot::match_id` when the session has no partner.
pub const NO_MATCH: u64 = u64::MAX;

/// Frames of one track tracked at once by a receiver. A frame still incomplete when a
/// frame this many numbers later arrives is lost. 64 frames is two seconds of 30 fps
/// video, more than the deepest queue of any profile.
const FRAME_RING: usize = 64;

/// The sender gives up on a session's backlog beyond this many frame intervals and skips
/// ahead, counting the skipped frames: a generator that far behind is the bottleneck.
const MAX_BACKLOG_FRAMES: u32 = 3;

/// Most gap windows a receiver keeps (one per handover): a ten-minute run with a handover
/// every second.
const MAX_GAP_WINDOWS: usize = 600;

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What every session sends while paired.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct MediaSpec {
    pub video_kbps: u32,
    pub fps: u32,
    pub audio_pps: u32,
    pub audio_bytes: usize,
    /// A keyframe (twice the size) this often.
    pub keyframe_every: Duration,
    /// Video follows the partner's reports and the send estimate, from `video_kbps` up to
    /// [`MAX_VIDEO_KBPS`]; otherwise it stays at `video_kbps`.
    pub adaptive: bool,
    /// An adaptive sender also follows its own connection's RTT every [`RTT_SAMPLE_MS`]
    /// ([`BitrateController::on_rtt`]), as the apps do.
    pub rtt_signal: bool,
    /// Every frame sealed end to end before it is fragmented, as the apps do (AES-256-GCM
    /// with the header as associated data, 16 bytes of tag). The receivers do not open
    /// them: what this measures is the forwarder's cost, which must not change.
    pub sealed: bool,
}

impl MediaSpec {
    pub fn frame_bytes(&self) -> usize {
        self.frame_bytes_at(self.video_kbps)
    }

    fn frame_bytes_at(&self, kbps: u32) -> usize {
        (u64::from(kbps) * 1000 / 8 / u64::from(self.fps.max(1))) as usize
    }

    /// The highest video rate a sender may reach.
    pub fn max_kbps(&self) -> u32 {
        if self.adaptive {
            self.video_kbps.max(MAX_VIDEO_KBPS)
        } else {
            self.video_kbps
        }
    }

    /// The least a sender sends: its lowest video rate (an adaptive one's floor) and its
    /// audio, payload only, kbit/s.
    pub fn floor_kbps(&self) -> u32 {
        let video = if self.adaptive {
            duet_client::quality::MIN_VIDEO_KBPS
        } else {
            self.video_kbps
        };
        let audio = u64::from(self.audio_pps) * self.audio_bytes as u64 * 8 / 1000;
        video.saturating_add(u32::try_from(audio).unwrap_or(u32::MAX))
    }

    /// A controller for one adaptive session (`None` at a fixed rate).
    pub fn controller(&self) -> Option<BitrateController> {
        self.adaptive.then(|| {
            BitrateController::new(
                duet_client::quality::MIN_VIDEO_KBPS,
                self.max_kbps(),
                self.video_kbps,
            )
        })
    }

    fn video_period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.fps.max(1)))
    }

    fn audio_period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.audio_pps.max(1)))
    }
}

/// The measured interval, by capture time (µs since the Unix epoch): frames captured in it
/// are counted on both ends, so in-flight frames at the edges are never miscounted.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start_us: u64,
    pub end_us: u64,
}

impl Window {
    pub fn contains(&self, us: u64) -> bool {
        us >= self.start_us && us < self.end_us
    }
}

/// How one session sends: over its WebTransport session, or as plain UDP to the floor.
pub enum Transport {
    Quic(wtransport::Connection),
    Udp {
        socket: Arc<tokio::net::UdpSocket>,
        to: SocketAddr,
    },
}

impl Transport {
    fn send(&self, datagram: &[u8]) -> bool {
        match self {
            Transport::Quic(c) => c.send_datagram(datagram).is_ok(),
            Transport::Udp { socket, to } => socket.try_send_to(datagram, *to).is_ok(),
        }
    }

    /// Payload per datagram. Both transports use the protocol's datagram limit so that the
    /// relay and the floor carry the same datagrams.
    fn max_payload(&self) -> usize {
        let limit = match self {
            Transport::Quic(c) => c
                .max_datagram_size()
                .unwrap_or(MAX_MEDIA_DATAGRAM_BYTES)
                .min(MAX_MEDIA_DATAGRAM_BYTES),
            Transport::Udp { .. } => MAX_MEDIA_DATAGRAM_BYTES,
        };
        MediaHeader::max_payload(limit)
    }
}

/// What the sender and a session's receive task share.
pub struct Slot {
    pub transport: Transport,
    /// The current pairing, [`NO_MATCH`] while unpaired. Set by the receive task.
    pub match_id: AtomicU64,
    /// The video target, kbit/s, set by an adaptive session's receive task (0: the spec's).
    pub video_kbps: AtomicU32,
    /// An adaptive session's video is paused ([`BitrateController::video_paused`]): its
    /// sender sends audio alone.
    pub video_paused: AtomicBool,
    /// Media datagram bytes sent (headers included), and those of video alone.
    pub bytes_sent: AtomicU64,
    pub video_bytes_sent: AtomicU64,
    /// When the pair's link carried less than a sender's floor (both directions of a
    /// shaped pair share its trace): media captured then is counted apart.
    pub fades: Fades,
}

/// Spans of capture time (wall clock, µs) in which a pair's link carried less than the
/// least its senders send, widened by the link's delay before and the time its queue takes
/// to drain after: media captured then cannot arrive on time, whatever a sender does.
#[derive(Debug, Clone, Default)]
pub struct Fades(Arc<[(u64, u64)]>);

impl Fades {
    pub fn new(spans: Vec<(u64, u64)>) -> Self {
        Self(Arc::from(spans))
    }

    pub fn contains(&self, us: u64) -> bool {
        self.0.iter().any(|&(a, b)| us >= a && us < b)
    }
}

impl Slot {
    pub fn new(transport: Transport, match_id: u64) -> Arc<Slot> {
        Self::with_fades(transport, match_id, Fades::default())
    }

    /// A slot whose pair's link fades at these times.
    pub fn with_fades(transport: Transport, match_id: u64, fades: Fades) -> Arc<Slot> {
        Arc::new(Slot {
            transport,
            match_id: AtomicU64::new(match_id),
            video_kbps: AtomicU32::new(0),
            video_paused: AtomicBool::new(false),
            bytes_sent: AtomicU64::new(0),
            video_bytes_sent: AtomicU64::new(0),
            fades,
        })
    }

    /// What the session's controller decided: the video rate, and whether video is paused.
    fn follow(&self, c: &BitrateController) {
        self.video_kbps.store(c.target_kbps(), Relaxed);
        self.video_paused.store(c.video_paused(), Relaxed);
    }

    /// The video rate to send at now.
    fn video_kbps(&self, spec: &MediaSpec) -> u32 {
        match self.video_kbps.load(Relaxed) {
            0 => spec.video_kbps,
            k if spec.adaptive => k,
            _ => spec.video_kbps,
        }
    }
}

/// The sender's side of the figures.
#[derive(Debug, Default)]
pub struct SendReport {
    pub frames_in_window: u64,
    /// Of those, frames captured during the pair's link fades.
    pub frames_in_fades: u64,
    pub datagrams_in_window: u64,
    pub datagrams_sent: u64,
    pub send_errors: u64,
    pub frames_skipped: u64,
    /// Video frames captured in the window, and of those, the ones not sent because the
    /// session's video was paused (the link carried less than its floor).
    pub video_frames_in_window: u64,
    pub video_frames_paused: u64,
    /// How late frames went out against their schedule.
    pub lag: LatencyHistogram,
}

impl SendReport {
    /// Adds another sender's figures.
    pub fn merge(&mut self, other: SendReport) {
        self.frames_in_window += other.frames_in_window;
        self.frames_in_fades += other.frames_in_fades;
        self.datagrams_in_window += other.datagrams_in_window;
        self.datagrams_sent += other.datagrams_sent;
        self.send_errors += other.send_errors;
        self.frames_skipped += other.frames_skipped;
        self.video_frames_in_window += other.video_frames_in_window;
        self.video_frames_paused += other.video_frames_paused;
        self.lag.merge(&other.lag);
    }
}

struct Schedule {
    next_video: Instant,
    next_audio: Instant,
    vseq: u32,
    aseq: u32,
    vframe: u32,
    aframe: u32,
    last_key: Instant,
    /// This sender's keys, with `spec.sealed`.
    keys: Option<PairKeys>,
}

/// Keys for one sender (its own pair of key pairs: nobody opens what it seals here).
fn sender_keys() -> PairKeys {
    let (mine, theirs) = (
        KeyPair::from_secret(rand::random()),
        KeyPair::from_secret(rand::random()),
    );
    PairKeys::derive(&mine, &theirs.public(), 0).expect("two fresh X25519 key pairs agree")
}

/// Sends every paired slot's media from `start` until `stop`, on schedule.
pub async fn send_media(
    slots: Vec<Arc<Slot>>,
    spec: MediaSpec,
    window: Window,
    stop: Instant,
) -> SendReport {
    let mut report = SendReport::default();
    let vp = spec.video_period();
    let ap = spec.audio_period();
    let start = Instant::now();
    let n = slots.len().max(1) as f64;
    // Phases spread evenly over a frame interval: independent cameras do not tick together.
    let mut sched: Vec<Schedule> = (0..slots.len())
        .map(|i| Schedule {
            next_video: start + vp.mul_f64(i as f64 / n),
            next_audio: start + ap.mul_f64(((i as f64 * 0.618_034) % 1.0).abs()),
            vseq: 0,
            aseq: 0,
            vframe: 0,
            aframe: 0,
            last_key: start,
            keys: spec.sealed.then(sender_keys),
        })
        .collect();
    let frame = spec.frame_bytes_at(spec.max_kbps()).max(1);
    // One payload buffer for everything: the bytes' values do not matter to any forwarder.
    let payload: Vec<u8> = (0..frame * 2 + spec.audio_bytes)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut buf = Vec::with_capacity(MAX_MEDIA_DATAGRAM_BYTES);
    let mut sealed = Vec::with_capacity(payload.len() + 16);
    loop {
        let now = Instant::now();
        if now >= stop {
            break;
        }
        let mut earliest = stop;
        for (slot, s) in slots.iter().zip(sched.iter_mut()) {
            let match_id = slot.match_id.load(Relaxed);
            for video in [true, false] {
                let (next, period) = if video {
                    (&mut s.next_video, vp)
                } else {
                    (&mut s.next_audio, ap)
                };
                if *next <= now {
                    let late = now - *next;
                    if late > period * MAX_BACKLOG_FRAMES {
                        let behind = (late.as_secs_f64() / period.as_secs_f64()) as u64;
                        report.frames_skipped += behind;
                        *next += period.mul_f64(behind as f64);
                    }
                    report.lag.record_us(late.as_micros() as u64);
                    *next += period;
                    if match_id != NO_MATCH {
                        let capture_us = now_us();
                        let in_window = window.contains(capture_us);
                        if video && in_window {
                            report.video_frames_in_window += 1;
                        }
                        if video && slot.video_paused.load(Relaxed) {
                            // Not sent, not numbered: the next frame sent follows the last.
                            report.video_frames_paused += u64::from(in_window);
                            earliest = earliest.min(*next);
                            continue;
                        }
                        let (track, len, key, frame_no, seq) = if video {
                            let key = now.duration_since(s.last_key) >= spec.keyframe_every
                                || s.vframe == 0;
                            if key {
                                s.last_key = now;
                            }
                            s.vframe += 1;
                            let frame = spec.frame_bytes_at(slot.video_kbps(&spec)).max(1);
                            let len = if key { frame * 2 } else { frame };
                            (Track::Video, len, key, s.vframe - 1, &mut s.vseq)
                        } else {
                            s.aframe += 1;
                            (
                                Track::Audio,
                                spec.audio_bytes.max(1),
                                true,
                                s.aframe - 1,
                                &mut s.aseq,
                            )
                        };
                        let header = frame_header(match_id, track, frame_no, key, capture_us);
                        let mut data = payload.get(..len).unwrap_or(&payload);
                        if let Some(keys) = s.keys.as_mut() {
                            let kind = Kind::of_track(track).unwrap_or(Kind::Video);
                            if keys
                                .seal(&Aad::media(&header, kind), data, &mut sealed)
                                .is_ok()
                            {
                                data = &sealed;
                            }
                        }
                        let sent = send_frame(&slot.transport, header, data, seq, &mut buf);
                        report.datagrams_sent += sent.0;
                        report.send_errors += sent.1;
                        slot.bytes_sent.fetch_add(sent.2, Relaxed);
                        if video {
                            slot.video_bytes_sent.fetch_add(sent.2, Relaxed);
                        }
                        if in_window {
                            report.frames_in_window += 1;
                            report.frames_in_fades += u64::from(slot.fades.contains(capture_us));
                            report.datagrams_in_window += sent.0 + sent.1;
                        }
                    }
                }
                earliest = earliest.min(*next);
            }
        }
        // Yield even when something is already due, so receive tasks on this worker run.
        if earliest <= Instant::now() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep_until(earliest).await;
        }
    }
    report
}

/// The header of one frame, before fragmenting (each frame references the one before it;
/// a keyframe itself).
fn frame_header(
    match_id: u64,
    track: Track,
    frame: u32,
    keyframe: bool,
    capture_us: u64,
) -> MediaHeader {
    MediaHeader {
        match_id,
        track,
        seq: 0,
        frame,
        frag_index: 0,
        frag_count: 1,
        keyframe,
        capture_us,
        ref_frame: if keyframe {
            frame
        } else {
            frame.wrapping_sub(1)
        },
    }
}

/// Sends one frame as fragments; returns (datagrams sent, datagrams refused, bytes sent).
fn send_frame(
    transport: &Transport,
    header: MediaHeader,
    data: &[u8],
    seq: &mut u32,
    buf: &mut Vec<u8>,
) -> (u64, u64, u64) {
    let (mut sent, mut failed, mut bytes) = (0, 0, 0);
    let fragments =
        duet_proto::media::fragment(header, data, transport.max_payload(), seq, buf, |d| {
            if transport.send(d) {
                sent += 1;
                bytes += d.len() as u64;
            } else {
                failed += 1;
            }
        });
    if fragments.is_none() {
        failed += 1;
    }
    (sent, failed, bytes)
}

#[derive(Debug, Clone, Copy, Default)]
struct FrameSlot {
    live: bool,
    frame: u32,
    count: u16,
    got: u16,
    /// Fragments seen, for the first 64 (duplicates beyond that are not expected: QUIC
    /// never delivers a datagram twice, and plain UDP on loopback does not duplicate).
    seen: u64,
}

/// Counts fragments into whole frames with no allocation: a fixed ring per track.
#[derive(Debug)]
pub struct FrameTracker {
    tracks: [[FrameSlot; FRAME_RING]; 2],
}

impl Default for FrameTracker {
    fn default() -> Self {
        Self {
            tracks: [[FrameSlot::default(); FRAME_RING]; 2],
        }
    }
}

impl FrameTracker {
    /// Forgets everything (a new pairing starts its frame numbers over).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Takes one fragment; true when it completes its frame.
    pub fn push(&mut self, h: &MediaHeader) -> bool {
        let t = usize::from(h.track == Track::Video);
        let Some(slot) = self.tracks[t].get_mut(h.frame as usize % FRAME_RING) else {
            return false;
        };
        if !slot.live || slot.frame != h.frame {
            // A newer frame takes the place of whatever was there (complete or lost).
            if slot.live && h.frame < slot.frame {
                return false; // a straggler of a frame already replaced
            }
            *slot = FrameSlot {
                live: true,
                frame: h.frame,
                count: h.frag_count,
                got: 0,
                seen: 0,
            };
        }
        if slot.got >= slot.count {
            return false; // already complete: a duplicate
        }
        if h.frag_index < 64 {
            let bit = 1u64 << h.frag_index;
            if slot.seen & bit != 0 {
                return false;
            }
            slot.seen |= bit;
        }
        slot.got += 1;
        slot.got == slot.count
    }
}

/// Longest silence per handover: gaps between whole frames, filed under the handover
/// window in which they started.
#[derive(Debug, Clone)]
pub struct GapWindows {
    /// When each handover happens, in order: window k runs from `times[k]` to the next.
    pub times: Vec<Instant>,
    /// A gap belongs to a handover if it starts at most this long before it.
    pub lead: Duration,
    /// How long media needs after a handover to have come back: a handover closer than
    /// this to the end of sending is not complete.
    pub settle: Duration,
    pub max_gap: Vec<Option<Duration>>,
    /// When media stopped being sent: handovers too close to it are not complete.
    pub until: Option<Instant>,
}

impl GapWindows {
    /// Windows for handovers at `times` (sorted here; at most [`MAX_GAP_WINDOWS`] kept).
    pub fn new(mut times: Vec<Instant>) -> Self {
        times.sort();
        times.truncate(MAX_GAP_WINDOWS);
        let closest = times
            .windows(2)
            .map(|w| w[1] - w[0])
            .min()
            .unwrap_or(Duration::from_secs(4));
        Self {
            max_gap: vec![None; times.len()],
            times,
            lead: Duration::from_millis(250),
            settle: (closest / 2).min(Duration::from_secs(2)),
            until: None,
        }
    }

    /// Files a silence from `from` to `to` under the handover it began around: from `lead`
    /// before it to `settle` after it. A silence that begins later (a fade on the new
    /// network seconds after the move) is the network's, not the handover's.
    pub fn record(&mut self, from: Instant, to: Instant) {
        let k = self.times.partition_point(|t| *t <= from + self.lead);
        let Some(k) = k.checked_sub(1) else {
            return; // before the first handover
        };
        if self.times.get(k).is_none_or(|t| from > *t + self.settle) {
            return;
        }
        let Some(slot) = self.max_gap.get_mut(k) else {
            return;
        };
        let gap = to - from;
        if slot.is_none_or(|g| gap > g) {
            *slot = Some(gap);
        }
    }

    /// The longest gap of each handover that media had time to come back from.
    pub fn complete(&self) -> Vec<Duration> {
        self.times
            .iter()
            .zip(&self.max_gap)
            .filter(|(t, _)| self.until.is_some_and(|u| **t + self.settle <= u))
            .filter_map(|(_, gap)| *gap)
            .collect()
    }
}

/// A receiver's side of the figures.
#[derive(Debug, Default)]
pub struct RecvReport {
    pub frames_in_window: u64,
    /// Of those, frames captured during the pair's link fades, and the latency of the
    /// others.
    pub frames_in_fades: u64,
    pub latency_outside_fades: LatencyHistogram,
    pub datagrams_received: u64,
    pub datagrams_in_window: u64,
    pub stale: u64,
    pub latency: LatencyHistogram,
    /// Longest time between two whole frames over the whole run.
    pub max_gap: Duration,
    pub gaps: Option<GapWindows>,
    pub matches: u32,
    pub peer_left: u32,
    pub peer_reconnecting: u32,
    pub errors: Vec<String>,
    /// The session ended before the benchmark did.
    pub lost: bool,
}

/// Receive-side state shared by the QUIC and UDP receive tasks.
struct Receiver {
    window: Window,
    fades: Fades,
    tracker: FrameTracker,
    tracker_match: u64,
    last_frame: Option<Instant>,
    /// For an adaptive session: what the partner's media looks like, for its reports.
    meter: Option<ReceiveMeter>,
    /// Whole video frames from the current partner (the report's `frames_decoded`).
    frames: u32,
    report: RecvReport,
}

impl Receiver {
    fn new(window: Window, fades: Fades, gaps: Option<GapWindows>) -> Self {
        Self {
            window,
            fades,
            tracker: FrameTracker::default(),
            tracker_match: NO_MATCH,
            last_frame: None,
            meter: None,
            frames: 0,
            report: RecvReport {
                gaps,
                ..RecvReport::default()
            },
        }
    }

    fn on_datagram(&mut self, bytes: &[u8], current: u64) {
        self.report.datagrams_received += 1;
        let Ok((h, _)) = MediaHeader::read(bytes) else {
            return;
        };
        if h.match_id != current {
            self.report.stale += 1;
            return;
        }
        if h.match_id != self.tracker_match {
            self.tracker.reset();
            self.tracker_match = h.match_id;
            self.frames = 0;
            if let Some(m) = self.meter.as_mut() {
                m.reset();
            }
        }
        if let Some(m) = self.meter.as_mut() {
            m.on_datagram(&h, bytes.len(), now_us() as f64 / 1000.0);
        }
        let in_window = self.window.contains(h.capture_us);
        if in_window {
            self.report.datagrams_in_window += 1;
        }
        if !self.tracker.push(&h) {
            return;
        }
        self.frames = self.frames.wrapping_add(1);
        let now = Instant::now();
        if let Some(prev) = self.last_frame {
            let gap = now - prev;
            self.report.max_gap = self.report.max_gap.max(gap);
            if let Some(g) = self.report.gaps.as_mut() {
                g.record(prev, now);
            }
        }
        self.last_frame = Some(now);
        if in_window {
            let us = now_us().saturating_sub(h.capture_us);
            self.report.frames_in_window += 1;
            self.report.latency.record_us(us);
            if self.fades.contains(h.capture_us) {
                self.report.frames_in_fades += 1;
            } else {
                self.report.latency_outside_fades.record_us(us);
            }
        }
    }

    /// Closes the last gap at `end` (when the partner stopped sending), so media that
    /// never came back shows.
    fn finish(mut self, end: Instant) -> RecvReport {
        if let Some(prev) = self.last_frame {
            let gap = end.saturating_duration_since(prev);
            self.report.max_gap = self.report.max_gap.max(gap);
            if let Some(g) = self.report.gaps.as_mut() {
                g.record(prev, end);
            }
        }
        if let Some(g) = self.report.gaps.as_mut() {
            g.until = Some(end);
        }
        self.report
    }
}

/// The connection's own estimate of what it can send, kbit/s: its congestion window over
/// its smoothed RTT (what `estimatedSendRate` gives a page).
fn send_estimate_kbps(conn: &wtransport::Connection) -> f64 {
    let path = conn.quic_connection().stats().path;
    let rtt_ms = path.rtt.as_secs_f64() * 1000.0;
    if rtt_ms <= 0.0 {
        return f64::NAN;
    }
    path.cwnd as f64 * 8.0 / rtt_ms
}

/// What the connection says of its own uplink for [`BitrateController::on_rtt`] and
/// [`BitrateController::on_acks`]: its smoothed RTT, ms, the bytes it has sent in
/// all, and the ACK frames it has received in all.
fn rtt_sample(conn: &wtransport::Connection) -> (f64, u64, u64) {
    let stats = conn.quic_connection().stats();
    (
        stats.path.rtt.as_secs_f64() * 1000.0,
        stats.udp_tx.bytes,
        stats.frame_rx.acks,
    )
}

/// Receives one WebTransport session's media and control until `stop` turns true. With
/// adaptive `media` the session adapts (see the module docs).
pub async fn receive_quic(
    mut client: Client,
    slot: Arc<Slot>,
    window: Window,
    gaps: Option<GapWindows>,
    media_end: Instant,
    media: MediaSpec,
    mut stop: watch::Receiver<bool>,
) -> RecvReport {
    let mut controller = media.controller();
    let conn = client.connection().clone();
    let mut rx = Receiver::new(window, slot.fades.clone(), gaps);
    let started = Instant::now();
    let ms = || started.elapsed().as_secs_f64() * 1000.0;
    if let Some(c) = &controller {
        rx.meter = Some(ReceiveMeter::default());
        slot.follow(c);
    }
    let mut reports = tokio::time::interval(Duration::from_millis(REPORT_INTERVAL_MS));
    reports.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rtt_ticks = tokio::time::interval(Duration::from_millis(RTT_SAMPLE_MS));
    rtt_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let rtt_signal = media.rtt_signal && controller.is_some();
    let mut last_sent: Option<(f64, u64)> = None;
    let mut acks_seen = 0u64;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = rtt_ticks.tick(), if rtt_signal => {
                let (srtt, bytes, acks) = rtt_sample(&conn);
                let acked = acks.saturating_sub(std::mem::replace(&mut acks_seen, acks));
                let now = ms();
                let sent_kbps = last_sent
                    .filter(|(t, _)| now > *t)
                    .map(|(t, b)| bytes.saturating_sub(b) as f64 * 8.0 / (now - t));
                last_sent = Some((now, bytes));
                if let (Some(c), true) = (controller.as_mut(), slot.match_id.load(Relaxed) != NO_MATCH) {
                    c.on_acks(acked, sent_kbps.is_some_and(|k| k > 0.0), now);
                    c.on_rtt(srtt, sent_kbps, now);
                    slot.follow(c);
                }
            }
            _ = reports.tick(), if controller.is_some() => {
                let current = slot.match_id.load(Relaxed);
                if let (Some(meter), true) = (rx.meter.as_mut(), current != NO_MATCH) {
                    let r = meter.report(current, now_us() as f64 / 1000.0, rx.frames);
                    // A report that cannot be sent now is skipped: the next one follows.
                    let _ = client.send(&ClientMsg::ReceiverReport(r)).await;
                }
                if let Some(c) = controller.as_mut() {
                    c.on_send_estimate(send_estimate_kbps(&conn), ms());
                    slot.follow(c);
                }
            }
            dg = conn.receive_datagram() => match dg {
                Ok(dg) => rx.on_datagram(&dg.payload(), slot.match_id.load(Relaxed)),
                Err(e) => {
                    rx.report.errors.push(format!("datagrams: {e}"));
                    rx.report.lost = true;
                    break;
                }
            },
            msg = client.recv() => match msg {
                Ok(ServerMsg::Matched(m)) => {
                    rx.report.matches += 1;
                    slot.match_id.store(m.match_id, Relaxed);
                    if let Some(c) = controller.as_mut() {
                        c.reset();
                        slot.follow(c);
                    }
                }
                Ok(ServerMsg::PeerReport(r)) => {
                    if let (Some(c), true) = (controller.as_mut(), r.match_id == slot.match_id.load(Relaxed)) {
                        c.on_peer_report(&r, ms());
                        slot.follow(c);
                    }
                }
                Ok(ServerMsg::PeerLeft { .. }) => {
                    rx.report.peer_left += 1;
                    slot.match_id.store(NO_MATCH, Relaxed);
                }
                Ok(ServerMsg::PeerReconnecting) => rx.report.peer_reconnecting += 1,
                Ok(ServerMsg::Error(e)) => {
                    rx.report.errors.push(format!("{}: {}", e.code, e.message));
                }
                Ok(_) => {}
                Err(e) => {
                    rx.report.errors.push(e.to_string());
                    rx.report.lost = true;
                    break;
                }
            },
        }
    }
    let report = rx.finish(media_end.min(Instant::now()));
    client.close().await;
    report
}

/// Receives one plain-UDP session's media until `stop` turns true.
pub async fn receive_udp(
    slot: Arc<Slot>,
    window: Window,
    mut stop: watch::Receiver<bool>,
) -> RecvReport {
    let Transport::Udp { socket, .. } = &slot.transport else {
        return RecvReport::default();
    };
    let socket = socket.clone();
    let mut rx = Receiver::new(window, slot.fades.clone(), None);
    let mut buf = vec![0u8; 2048];
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            r = socket.recv(&mut buf) => match r {
                Ok(n) => rx.on_datagram(buf.get(..n).unwrap_or_default(), slot.match_id.load(Relaxed)),
                Err(e) => {
                    rx.report.errors.push(e.to_string());
                    break;
                }
            },
        }
    }
    rx.finish(Instant::now())
}

/// A client endpoint (one UDP socket) with its buffers sized like the relay's.
pub fn endpoint(
    cert_hash: [u8; 32],
    socket_buffer: usize,
    idle_timeout: Duration,
) -> Result<ClientEndpoint, super::BenchError> {
    let socket = super::floor::sized_socket(SocketAddr::from(([127, 0, 0, 1], 0)), socket_buffer)
        .and_then(|s| s.set_nonblocking(true).map(|_| s))
        .map_err(|e| super::BenchError::Process(format!("client socket: {e}")))?;
    let config = wtransport::ClientConfig::builder()
        .with_bind_socket(socket)
        .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(cert_hash)])
        .max_idle_timeout(Some(idle_timeout))
        .map_err(|e| super::BenchError::Process(format!("idle timeout: {e}")))?
        .keep_alive_interval(Some(idle_timeout / 3))
        .build();
    let mut config = config;
    // The same transport as duet-client's (BBR; see `duet_client::transport_config`).
    config
        .quic_config_mut()
        .transport_config(std::sync::Arc::new(duet_client::transport_config(
            idle_timeout,
        )));
    wtransport::Endpoint::client(config)
        .map_err(|e| super::BenchError::Process(format!("client endpoint: {e}")))
}

/// Enough client endpoints for `sessions` sessions, `sessions_per_endpoint` on each;
/// session `i` uses endpoint `i / sessions_per_endpoint`.
pub fn endpoints(
    cert_hash: [u8; 32],
    common: &super::Common,
    sessions: usize,
) -> Result<Vec<Arc<ClientEndpoint>>, super::BenchError> {
    let per = common.sessions_per_endpoint.max(1);
    (0..sessions.div_ceil(per))
        .map(|_| endpoint(cert_hash, common.socket_buffer, common.idle_timeout()).map(Arc::new))
        .collect()
}

/// Options to reach the relay (or a shaper in front of it) at `addr`.
pub fn connect_options(
    addr: SocketAddr,
    cert_hash: [u8; 32],
    idle_timeout: Duration,
) -> ConnectOptions {
    let mut o = ConnectOptions::new(format!("https://{addr}"), Some(cert_hash));
    o.idle_timeout = idle_timeout;
    o
}

/// A media datagram of one small frame, sent the moment a pairing starts (as a real client
/// sends its first keyframe), so "time to first media" measures the relay, not a timer.
pub fn hello_datagram(match_id: u64, buf: &mut Vec<u8>) {
    MediaHeader {
        match_id,
        track: Track::Audio,
        seq: 0,
        frame: 0,
        frag_index: 0,
        frag_count: 1,
        keyframe: true,
        capture_us: now_us(),
        ref_frame: 0,
    }
    .write_datagram(&[0u8; 80], buf);
}

/// The match id a datagram belongs to, if it has one.
pub fn datagram_match(bytes: &[u8]) -> Option<u64> {
    peek_match_id(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(track: Track, frame: u32, idx: u16, count: u16) -> MediaHeader {
        MediaHeader {
            match_id: 1,
            track,
            seq: 0,
            frame,
            frag_index: idx,
            frag_count: count,
            keyframe: false,
            capture_us: 0,
            ref_frame: frame.wrapping_sub(1),
        }
    }

    #[test]
    fn tracker_completes_frames_once_in_any_order() {
        let mut t = FrameTracker::default();
        assert!(!t.push(&h(Track::Video, 0, 2, 3)));
        assert!(!t.push(&h(Track::Video, 0, 0, 3)));
        assert!(!t.push(&h(Track::Video, 0, 0, 3)), "duplicate");
        assert!(t.push(&h(Track::Video, 0, 1, 3)));
        assert!(!t.push(&h(Track::Video, 0, 1, 3)), "already complete");
        assert!(t.push(&h(Track::Audio, 0, 0, 1)), "tracks are separate");
    }

    #[test]
    fn tracker_drops_an_incomplete_frame_when_its_slot_is_reused() {
        let mut t = FrameTracker::default();
        assert!(!t.push(&h(Track::Video, 1, 0, 2)));
        let later = 1 + FRAME_RING as u32;
        assert!(t.push(&h(Track::Video, later, 0, 1)));
        assert!(!t.push(&h(Track::Video, 1, 1, 2)), "the old frame is gone");
    }

    #[test]
    fn gaps_are_filed_under_their_handover() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let ms = Duration::from_millis;
        let mut g = GapWindows::new(vec![t0 + s * 3, t0 + s, t0 + s * 2]);
        assert_eq!(g.settle, ms(500));
        g.record(t0, t0 + ms(20)); // before the first handover
        g.record(t0 + s, t0 + s + ms(400));
        g.record(t0 + s * 2 - ms(100), t0 + s * 2 + ms(50)); // just before handover 2
        g.record(t0 + s * 3 + ms(200), t0 + s * 3 + ms(270)); // just after the last
        g.record(t0 + s + ms(600), t0 + s * 2 - ms(200)); // long after handover 1: not its
        g.record(t0 + s * 9, t0 + s * 9 + ms(900)); // long after the last: not its
        assert_eq!(g.max_gap, vec![Some(ms(400)), Some(ms(150)), Some(ms(70))]);
        g.until = Some(t0 + s * 3 + ms(100));
        assert_eq!(
            g.complete(),
            vec![ms(400), ms(150)],
            "the last had no time to settle"
        );
    }

    #[test]
    fn window_is_half_open() {
        let w = Window {
            start_us: 10,
            end_us: 20,
        };
        assert!(w.contains(10) && w.contains(19));
        assert!(!w.contains(20) && !w.contains(9));
    }

    #[test]
    fn frame_bytes_follow_the_bitrate() {
        let spec = MediaSpec {
            video_kbps: 1000,
            fps: 25,
            audio_pps: 50,
            audio_bytes: 80,
            keyframe_every: Duration::from_secs(2),
            adaptive: false,
            rtt_signal: true,
            sealed: false,
        };
        assert_eq!(spec.frame_bytes(), 5000);
    }
}
