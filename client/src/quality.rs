//! The native sender's bitrate control: what a receiver measures about incoming media for
//! its `ReceiverReport` ([`ReceiveMeter`]), and the sender's controller that follows the
//! partner's reports and the transport's send-rate estimate ([`BitrateController`]).
//!
//! The same rules as the web client's `web-client/app/wire/quality.js`, so a native client
//! and a browser back off and recover alike: additive increase, multiplicative decrease on
//! loss or a standing queue (a mild queue counts when seen twice in a row, a receiver short
//! of CPU stamps some arrivals late and must not read as congestion; loss on an empty queue
//! counts when seen twice in a row, as a handover's blackout loses a burst once), a cut
//! that goes at once under 85 % of what the partner received, fast recovery to just under a
//! rate backed off from in the last 10 s, never above 85 % of what the transport
//! estimates it can send, and a cut within a few hundred ms when the sender's own smoothed
//! RTT shows a queue rising on its uplink ([`BitrateController::on_rtt`]), and video paused
//! (audio going on alone) while the path carries less than the video's floor or ACKs starve
//! for half a second while we send ([`BitrateController::video_paused`],
//! [`BitrateController::on_acks`]: native only, as a page's `getStats` counts no ACKs).
//! Pure: time is passed in (milliseconds on any monotonic clock), and the unit tests below
//! drive it without sockets.

use duet_proto::{MediaHeader, ReceiverReport, Track};
use std::collections::VecDeque;

/// Video bitrate bounds, kbit/s (the web client's).
pub const MIN_VIDEO_KBPS: u32 = 150;
pub const MAX_VIDEO_KBPS: u32 = 2500;
pub const START_VIDEO_KBPS: u32 = 800;
/// Loss the partner may report before we back off, and the loss that backs off hard.
const BACKOFF_LOSS_PERMILLE: u16 = 30;
const HEAVY_LOSS_PERMILLE: u16 = 100;
/// Standing queue that backs off (seen twice), and the queue that backs off hard at once.
pub const BACKOFF_QUEUE_MS: u16 = 60;
pub const HEAVY_QUEUE_MS: u16 = 200;
/// At most one decrease per this long; clean time after a decrease before increasing.
const DECREASE_HOLDOFF_MS: f64 = 1000.0;
/// The RTT rule may cut again this soon: its samples come ten times a second, and a link
/// that keeps falling (a walk down into a fade) keeps the queue growing after a cut.
const RTT_DECREASE_HOLDOFF_MS: f64 = 500.0;
const INCREASE_HOLDOFF_MS: f64 = 2000.0;
/// A rate backed off from is remembered this long, at most this many of them.
const RECOVERY_MEMORY_MS: f64 = 10_000.0;
const MAX_BACKOFFS_REMEMBERED: usize = 16;
/// Fast recovery climbs to this share of the remembered rate, by this much a report.
const RECOVERY_SHARE: f64 = 0.85;
const RECOVERY_GROWTH: f64 = 1.25;
/// Increase per clean report: 5 %, at least this many kbit/s.
const MIN_INCREASE_KBPS: f64 = 20.0;
/// Video keeps under this share of the transport's estimate (audio and overhead ride on it).
const ESTIMATE_SHARE: f64 = 0.85;
/// On congestion, video goes under this share of what the partner received (media and
/// audio): the rate the path carried (as GCC does with its incoming-rate estimate).
const DELIVERED_SHARE: f64 = 0.85;
/// Receivers report about this often.
pub const REPORT_INTERVAL_MS: u64 = 1000;
/// Intervals whose lowest transit make the base delay: 10 s, long enough to see an empty queue.
const QUEUE_BASE_INTERVALS: usize = 10;
/// The sender's own queue signal ([`BitrateController::on_rtt`]): the connection's smoothed
/// RTT above its lowest of the last [`RTT_BASE_MS`], sampled about this often.
pub const RTT_SAMPLE_MS: u64 = 100;
/// The base a queue is measured from is the lowest smoothed RTT of this long: short, so a
/// move to a path with a longer round trip (Wi-Fi to cellular) is a new base within
/// seconds rather than a queue for good. A queue that stands longer than this is the
/// receiver reports' to see (their base is 10 s).
pub const RTT_BASE_MS: f64 = 2000.0;
/// RTT above the base that backs off when seen in two samples in a row while rising, and
/// that backs off hard at once. Above the path's own jitter (tens of ms on a radio link).
pub const RTT_BACKOFF_QUEUE_MS: f64 = 60.0;
pub const RTT_HEAVY_QUEUE_MS: f64 = 200.0;
/// A mild queue counts only if it rose by this much over the slope samples: a queue that
/// grows is a link carrying less than we send; a step that then holds is a longer path.
pub const RTT_RISE_MS: f64 = 20.0;
/// The samples a queue's growth is measured over (about 500 ms).
const RTT_SLOPE_SAMPLES: usize = 6;
/// Video pauses (audio goes on alone) when a congestion cut would go under this share of
/// the floor: the path carries less than the least video we send, so every frame would
/// wait behind the last and hold the voice back with it (a radio fade, a tunnel, a lift).
/// WebRTC suspends video below its minimum bitrate for the same reason.
const PAUSE_BELOW_FLOOR_SHARE: f64 = 0.75;
/// The RTT rule pauses only on a queue seen in this many samples in a row (about 300 ms): a
/// new path's first sample after a move can read far above the base once.
const PAUSE_RTT_SAMPLES: usize = 3;
/// A pause lasts at least this long; one that follows a resume within
/// [`PAUSE_REPEAT_MS`] (the fade went on) lasts twice the last, up to [`PAUSE_MAX_MS`].
pub const PAUSE_MIN_MS: f64 = 1000.0;
pub const PAUSE_MAX_MS: f64 = 8000.0;
const PAUSE_REPEAT_MS: f64 = 3000.0;
/// A receiver report this soon after a resume covers the pause (its rate is audio's): it
/// may cut, but not pause again.
const REPORT_AFTER_RESUME_MS: f64 = REPORT_INTERVAL_MS as f64 + 250.0;
/// The first clean report of video after a pause (the fade is over) takes the rate back at
/// once to this share of the rate before the pause, rather than climbing from the floor for
/// ten seconds: radio links come back from a fade about where they were.
const RESUME_SHARE: f64 = 0.5;
/// ACKs starve ([`BitrateController::on_acks`]) when the samples of about 500 ms in which we
/// kept sending bring this many ACK frames or fewer. Flowing, they come every other packet
/// or every 25 ms (a dozen a sample at 1 Mbit/s, two or three for audio alone). A handover's
/// blackout is shorter than the window; a fade that fills the queues both ways lets a
/// trickle through, so none-at-all would miss it.
pub const ACK_STARVED_SAMPLES: usize = 5;
pub const ACK_STARVED_FRAMES: u64 = 2;

/// Picks the video encoder's target bitrate, kbit/s.
#[derive(Debug, Clone)]
pub struct BitrateController {
    min: f64,
    max: f64,
    start: f64,
    target: f64,
    last_decrease_ms: f64,
    estimate_kbps: Option<f64>,
    /// Rates backed off from, with when (the fast-recovery ceiling).
    backed_off_from: VecDeque<(f64, f64)>,
    queue_seen: bool,
    /// The last report showed loss (a second one in a row backs off).
    loss_seen: bool,
    /// Recent RTT samples: (time, RTT above the base, what we sent, kbit/s).
    rtt_samples: VecDeque<(f64, f64, Option<f64>)>,
    /// Smoothed RTTs of the last [`RTT_BASE_MS`]: (time, ms).
    rtt_base: VecDeque<(f64, f64)>,
    /// RTT samples in a row with a queue at least [`RTT_BACKOFF_QUEUE_MS`] deep.
    queue_run: usize,
    /// ACK frames received in each of the last samples in which we sent (at most
    /// [`ACK_STARVED_SAMPLES`]).
    ack_counts: VecDeque<u64>,
    /// When video paused, while it is paused; how long this pause lasts at least.
    paused_at: Option<f64>,
    pause_hold_ms: f64,
    /// When the last pause ended.
    resumed_at: f64,
    /// The rate before the last pause, until the first clean report after it (0: none).
    paused_from: f64,
    /// The network held the rate back at the last decision.
    pub limited: bool,
}

impl Default for BitrateController {
    fn default() -> Self {
        Self::new(MIN_VIDEO_KBPS, MAX_VIDEO_KBPS, START_VIDEO_KBPS)
    }
}

impl BitrateController {
    pub fn new(min_kbps: u32, max_kbps: u32, start_kbps: u32) -> Self {
        let (min, max) = (f64::from(min_kbps), f64::from(max_kbps.max(min_kbps)));
        let start = f64::from(start_kbps).clamp(min, max);
        Self {
            min,
            max,
            start,
            target: start,
            last_decrease_ms: f64::NEG_INFINITY,
            estimate_kbps: None,
            backed_off_from: VecDeque::new(),
            queue_seen: false,
            loss_seen: false,
            rtt_samples: VecDeque::new(),
            rtt_base: VecDeque::new(),
            queue_run: 0,
            ack_counts: VecDeque::new(),
            paused_at: None,
            pause_hold_ms: PAUSE_MIN_MS,
            resumed_at: f64::NEG_INFINITY,
            paused_from: 0.0,
            limited: false,
        }
    }

    /// The current target, kbit/s.
    pub fn target_kbps(&self) -> u32 {
        self.target as u32
    }

    /// A new partner: start again from the starting rate (their path is not ours).
    pub fn reset(&mut self) {
        *self = Self {
            target: self.start,
            ..Self::new(self.min as u32, self.max as u32, self.start as u32)
        };
    }

    fn clamp(&self, kbps: f64) -> f64 {
        kbps.clamp(self.min, self.max).round()
    }

    /// Whether video is paused: the sender sends none (audio goes on) until the pause has
    /// lasted its hold and our own queue has drained, then resumes at the floor. The encoder
    /// simply gets no frames meanwhile, so the next one references the last one sent.
    pub fn video_paused(&self) -> bool {
        self.paused_at.is_some()
    }

    /// A congestion cut to `wanted` kbit/s at most once per `holdoff_ms`; under the floor's
    /// pause share (and `may_pause`) video pauses, even within the holdoff of the last cut.
    fn cut(&mut self, wanted: f64, may_pause: bool, holdoff_ms: f64, now_ms: f64) {
        self.limited = true;
        if may_pause && wanted < self.min * PAUSE_BELOW_FLOOR_SHARE {
            self.pause(now_ms);
        } else if now_ms - self.last_decrease_ms >= holdoff_ms {
            self.remember_backoff(now_ms);
            self.target = self.clamp(wanted);
            self.paused_from = 0.0; // congested since: no jump back
        }
    }

    fn pause(&mut self, now_ms: f64) {
        if self.paused_at.is_some() {
            return;
        }
        self.pause_hold_ms = if now_ms - self.resumed_at < PAUSE_REPEAT_MS {
            (self.pause_hold_ms * 2.0).min(PAUSE_MAX_MS)
        } else {
            PAUSE_MIN_MS
        };
        self.paused_at = Some(now_ms);
        // The rate before the fade is remembered: fast recovery climbs back toward it.
        if self.target > self.min {
            self.remember_backoff(now_ms);
            self.paused_from = self.target;
        }
        self.last_decrease_ms = now_ms;
        self.target = self.min;
    }

    /// Ends a pause that has lasted its hold once our own queue has drained. True while
    /// video stays paused.
    fn still_paused(&mut self, now_ms: f64) -> bool {
        let Some(at) = self.paused_at else {
            return false;
        };
        if now_ms - at < self.pause_hold_ms || self.own_queue_standing() || self.acks_starved() {
            return true;
        }
        self.paused_at = None;
        self.resumed_at = now_ms;
        self.queue_seen = false;
        self.loss_seen = false;
        false
    }

    fn remember_backoff(&mut self, now_ms: f64) {
        self.backed_off_from.push_back((now_ms, self.target));
        if self.backed_off_from.len() > MAX_BACKOFFS_REMEMBERED {
            self.backed_off_from.pop_front();
        }
        self.last_decrease_ms = now_ms;
    }

    fn recovery_ceiling(&mut self, now_ms: f64) -> Option<f64> {
        if now_ms - self.last_decrease_ms > RECOVERY_MEMORY_MS {
            self.backed_off_from.clear();
        }
        self.backed_off_from.iter().map(|b| b.1).reduce(f64::max)
    }

    /// The partner's receiver report about our media. Returns the new target.
    pub fn on_peer_report(&mut self, report: &ReceiverReport, now_ms: f64) -> u32 {
        if self.still_paused(now_ms) {
            return self.target_kbps(); // a report of audio alone says nothing of video's rate
        }
        let (loss, queue) = (report.loss_permille, report.queue_delay_ms);
        let queued = queue >= BACKOFF_QUEUE_MS;
        let queue_counts = queue >= HEAVY_QUEUE_MS || (queued && self.queue_seen);
        self.queue_seen = queued;
        // Loss with a queue building is congestion at once. Loss alone counts when it comes
        // again in the next report: one burst on an empty queue is a handover's blackout or
        // a radio fade, which says nothing about the rate the path carries.
        let lossy = loss >= BACKOFF_LOSS_PERMILLE;
        let loss_counts = lossy && (self.loss_seen || queue >= BACKOFF_QUEUE_MS / 2);
        self.loss_seen = lossy;
        if loss_counts || queue_counts {
            let heavy = loss >= HEAVY_LOSS_PERMILLE || queue >= HEAVY_QUEUE_MS;
            let mut next = self.target * if heavy { 0.6 } else { 0.85 };
            // What reached the partner is what the path carried: a link that fell far
            // below our rate is met in one step, not in a cut a second.
            if report.bitrate_kbps > 0 {
                next = next.min(f64::from(report.bitrate_kbps) * DELIVERED_SHARE);
            }
            let may_pause = now_ms - self.resumed_at >= REPORT_AFTER_RESUME_MS;
            self.cut(next, may_pause, DECREASE_HOLDOFF_MS, now_ms);
        } else if lossy {
            self.limited = true; // held, not cut: see above
        } else if loss <= BACKOFF_LOSS_PERMILLE / 2
            && queue < BACKOFF_QUEUE_MS / 2
            && now_ms - self.last_decrease_ms >= INCREASE_HOLDOFF_MS
            && !self.own_queue_standing()
        {
            self.limited = self
                .estimate_kbps
                .is_some_and(|e| self.target >= e * ESTIMATE_SHARE && self.target < self.max);
            let recover_to = self
                .recovery_ceiling(now_ms)
                .map_or(0.0, |c| c * RECOVERY_SHARE);
            let mut next = self.target + (self.target * 0.05).max(MIN_INCREASE_KBPS);
            if self.target < recover_to {
                next = next.max(recover_to.min(self.target * RECOVERY_GROWTH));
            }
            if self.paused_from > 0.0 && now_ms - self.resumed_at >= REPORT_AFTER_RESUME_MS {
                next = next.max(self.paused_from * RESUME_SHARE);
                self.paused_from = 0.0;
            }
            if let Some(e) = self.estimate_kbps {
                next = next.min(self.target.max(e * ESTIMATE_SHARE));
            }
            self.target = self.clamp(next);
        }
        self.target_kbps()
    }

    /// Whether the last RTT sample showed a queue on our own uplink (no climbing into one).
    fn own_queue_standing(&self) -> bool {
        self.rtt_samples
            .back()
            .is_some_and(|s| s.1 >= RTT_BACKOFF_QUEUE_MS)
    }

    /// The connection's smoothed RTT, and what the session sent since the last sample
    /// (kbit/s, all of its media) if known: the sender's own, sub-second view of a queue on
    /// its uplink, about every [`RTT_SAMPLE_MS`]. A receiver's report measures a second and
    /// arrives a second later; a link that falls from 3 Mbit/s to 0.5 has built half a
    /// second of queue by then. The queue is the RTT above its lowest of the last
    /// [`RTT_BASE_MS`]. Seen in two samples in a row while rising (or far above the base
    /// once), it cuts as a report would, and at once under what the link carried: what we
    /// sent, less the share the queue grew by (a queue that grows 0.5 s a second means the
    /// link carries two thirds of what goes in). Returns the new target.
    pub fn on_rtt(&mut self, srtt_ms: f64, sent_kbps: Option<f64>, now_ms: f64) -> u32 {
        if !(srtt_ms.is_finite() && srtt_ms > 0.0) {
            return self.target_kbps();
        }
        while self
            .rtt_base
            .front()
            .is_some_and(|b| now_ms - b.0 > RTT_BASE_MS)
        {
            self.rtt_base.pop_front();
        }
        self.rtt_base.push_back((now_ms, srtt_ms));
        let base = self.rtt_base.iter().map(|b| b.1).fold(srtt_ms, f64::min);
        let queue = srtt_ms - base;
        let seen_before = self.own_queue_standing();
        self.rtt_samples.push_back((
            now_ms,
            queue,
            sent_kbps.filter(|k| k.is_finite() && *k > 0.0),
        ));
        while self.rtt_samples.len() > RTT_SLOPE_SAMPLES {
            self.rtt_samples.pop_front();
        }
        self.queue_run = if queue >= RTT_BACKOFF_QUEUE_MS {
            self.queue_run + 1
        } else {
            0
        };
        if self.still_paused(now_ms) {
            return self.target_kbps();
        }
        let rising = self
            .rtt_samples
            .front()
            .is_some_and(|f| queue - f.1 >= RTT_RISE_MS);
        let heavy = queue >= RTT_HEAVY_QUEUE_MS;
        let counts = heavy || (queue >= RTT_BACKOFF_QUEUE_MS && seen_before && rising);
        if !counts {
            return self.target_kbps();
        }
        let mut next = self.target * if heavy { 0.6 } else { 0.85 };
        if let Some(c) = self.carried_kbps(RTT_SLOPE_SAMPLES) {
            next = next.min(c * DELIVERED_SHARE);
        }
        // Pausing wants a queue that has stood for a few samples while rising, and what the
        // link carried meanwhile under the floor: not one high reading after a move, nor a
        // step to a longer path (its queue does not grow within the run).
        if self.queue_run >= PAUSE_RTT_SAMPLES && rising {
            if let Some(c) = self.carried_kbps(self.queue_run.min(RTT_SLOPE_SAMPLES)) {
                if c * DELIVERED_SHARE < self.min * PAUSE_BELOW_FLOOR_SHARE {
                    next = next.min(c * DELIVERED_SHARE);
                    self.cut(next, true, RTT_DECREASE_HOLDOFF_MS, now_ms);
                    return self.target_kbps();
                }
            }
        }
        self.cut(next, false, RTT_DECREASE_HOLDOFF_MS, now_ms);
        self.target_kbps()
    }

    /// The ACK frames received since the last sample, and whether we sent meanwhile (quinn
    /// counts the ACK frames it receives), about every [`RTT_SAMPLE_MS`]. In a fade that
    /// fills the queues both ways the ACKs wait behind the partner's media, so the smoothed
    /// RTT stands still or moves late and [`on_rtt`](Self::on_rtt) sees the queue late;
    /// meanwhile a large congestion window (quinn's BBR grows it to megabytes on a fast
    /// path) keeps the media going into the fade. ACKs starving while we send (see
    /// [`ACK_STARVED_FRAMES`]) pause video, which resumes after the pause's hold once ACKs
    /// flow again and the RTT shows no queue. Returns the target.
    pub fn on_acks(&mut self, acks: u64, sent: bool, now_ms: f64) -> u32 {
        if !sent {
            self.ack_counts.clear(); // nothing to acknowledge: no expectation
            return self.target_kbps();
        }
        self.ack_counts.push_back(acks);
        while self.ack_counts.len() > ACK_STARVED_SAMPLES {
            self.ack_counts.pop_front();
        }
        if self.acks_starved() {
            self.limited = true;
            self.pause(now_ms);
        }
        self.target_kbps()
    }

    fn acks_starved(&self) -> bool {
        self.ack_counts.len() >= ACK_STARVED_SAMPLES
            && self.ack_counts.iter().sum::<u64>() <= ACK_STARVED_FRAMES
    }

    /// What the uplink carried over the last `n` samples (all of them when fewer), kbit/s:
    /// the mean of what we sent over 1 + the queue's growth per unit of time (a queue that
    /// holds steady means the link carried what we sent). `None` without send rates or with
    /// fewer than two samples. The queue's growth as seen through the RTT is at most about
    /// one second a second (its ACKs are late too), so a link far below our rate shows in
    /// what we send once the congestion window is full: the ACKs clock it to the link's.
    fn carried_kbps(&self, n: usize) -> Option<f64> {
        let skip = self.rtt_samples.len().saturating_sub(n.max(2));
        let mut recent = self.rtt_samples.iter().skip(skip);
        let first = recent.next()?;
        let last = self.rtt_samples.back()?;
        let span = last.0 - first.0;
        if span <= 0.0 {
            return None;
        }
        let (sum, n) = recent
            .filter_map(|s| s.2)
            .fold((0.0, 0usize), |(sum, n), k| (sum + k, n + 1));
        if n == 0 {
            return None;
        }
        let mean = sum / n as f64;
        let growth = ((last.1 - first.1) / span).max(0.0);
        Some(mean / (1.0 + growth))
    }

    /// The transport's estimate of what it can send for the whole session, kbit/s (for
    /// QUIC, the congestion window over the smoothed RTT). Returns the new target.
    pub fn on_send_estimate(&mut self, kbps: f64, now_ms: f64) -> u32 {
        if !kbps.is_finite() || kbps <= 0.0 || self.still_paused(now_ms) {
            return self.target_kbps();
        }
        let previous = self.estimate_kbps.replace(kbps);
        let ceiling = kbps * ESTIMATE_SHARE;
        if self.target > ceiling
            && (previous.is_none_or(|p| kbps < p)
                || now_ms - self.last_decrease_ms >= DECREASE_HOLDOFF_MS)
        {
            self.remember_backoff(now_ms);
            self.target = self.clamp(ceiling);
            self.limited = true;
        }
        self.target_kbps()
    }
}

#[derive(Debug, Clone, Copy)]
struct TrackCount {
    highest: i64,
    /// The highest sequence number at the last report (the first seen, less one, at first).
    at_report: i64,
    received: u64,
}

/// Measures incoming media for `ReceiverReport`: loss from sequence gaps per track, jitter
/// and the standing queue from audio's capture stamps against arrival, and the bitrate.
/// Reset on a new pairing.
#[derive(Debug, Clone, Default)]
pub struct ReceiveMeter {
    tracks: [Option<TrackCount>; 3],
    bytes: u64,
    jitter_ms: f64,
    last_transit_ms: Option<f64>,
    interval_start_ms: Option<f64>,
    min_transits: VecDeque<f64>,
    interval_min_transit: Option<f64>,
}

impl ReceiveMeter {
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// One datagram arrived at `arrival_ms` (wall clock, the epoch of `capture_us`).
    pub fn on_datagram(&mut self, h: &MediaHeader, size: usize, arrival_ms: f64) {
        self.interval_start_ms.get_or_insert(arrival_ms);
        self.bytes += size as u64;
        let slot = &mut self.tracks[match h.track {
            Track::Audio => 0,
            Track::Video => 1,
            _ => 2,
        }];
        let seq = i64::from(h.seq);
        match slot {
            None => {
                *slot = Some(TrackCount {
                    highest: seq,
                    at_report: seq - 1,
                    received: 1,
                })
            }
            Some(t) => {
                t.received += 1;
                t.highest = t.highest.max(seq);
            }
        }
        if h.track != Track::Audio {
            return; // a video frame's datagrams share a stamp: audio keeps a steady rhythm
        }
        let transit = arrival_ms - h.capture_us as f64 / 1000.0;
        self.interval_min_transit = Some(
            self.interval_min_transit
                .map_or(transit, |m| m.min(transit)),
        );
        if let Some(last) = self.last_transit_ms {
            self.jitter_ms += ((transit - last).abs() - self.jitter_ms) / 16.0;
        }
        self.last_transit_ms = Some(transit);
    }

    /// The report for the interval since the last one, and starts a new interval.
    pub fn report(&mut self, match_id: u64, now_ms: f64, frames_decoded: u32) -> ReceiverReport {
        let (mut expected, mut received) = (0u64, 0u64);
        for t in self.tracks.iter_mut().flatten() {
            expected += (t.highest - t.at_report).max(0) as u64;
            received += t.received;
            t.at_report = t.highest;
            t.received = 0;
        }
        let lost = expected.saturating_sub(received);
        let loss_permille = (lost * 1000)
            .checked_div(expected)
            .map_or(0, |l| l.min(1000) as u16);
        let elapsed = self
            .interval_start_ms
            .map_or(REPORT_INTERVAL_MS as f64, |s| (now_ms - s).max(1.0));
        let bitrate_kbps = (self.bytes as f64 * 8.0 / elapsed)
            .round()
            .min(f64::from(u32::MAX)) as u32;
        self.bytes = 0;
        self.interval_start_ms = Some(now_ms);
        let interval_min = self.interval_min_transit.take();
        if let Some(m) = interval_min {
            self.min_transits.push_back(m);
            if self.min_transits.len() > QUEUE_BASE_INTERVALS {
                self.min_transits.pop_front();
            }
        }
        let base = self.min_transits.iter().copied().reduce(f64::min);
        let queue = match (base, interval_min) {
            (Some(b), Some(m)) => (m - b).max(0.0),
            _ => 0.0,
        };
        ReceiverReport {
            match_id,
            loss_permille,
            jitter_ms: self.jitter_ms.round().min(f64::from(u16::MAX)) as u16,
            frames_decoded,
            bitrate_kbps,
            queue_delay_ms: queue.round().min(f64::from(u16::MAX)) as u16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(loss: u16, queue: u16) -> ReceiverReport {
        ReceiverReport {
            match_id: 1,
            loss_permille: loss,
            jitter_ms: 0,
            frames_decoded: 0,
            bitrate_kbps: 0,
            queue_delay_ms: queue,
        }
    }

    #[test]
    fn loss_backs_off_and_clean_reports_creep_back_after_a_holdoff() {
        let mut c = BitrateController::default();
        // Loss with a queue building: at once.
        assert_eq!(c.on_peer_report(&report(50, 40), 0.0), 680); // 800 × 0.85
        assert_eq!(
            c.on_peer_report(&report(50, 0), 500.0),
            680,
            "one decrease a second"
        );
        assert_eq!(c.on_peer_report(&report(150, 0), 1000.0), 408); // heavy: × 0.6
        assert_eq!(
            c.on_peer_report(&report(0, 0), 2000.0),
            408,
            "clean, but within the holdoff"
        );
        // Fast recovery toward 85 % of the highest rate backed off from (800): × 1.25.
        assert_eq!(c.on_peer_report(&report(0, 0), 3000.0), 510);
        assert_eq!(c.on_peer_report(&report(0, 0), 4000.0), 638);
        assert_eq!(c.on_peer_report(&report(0, 0), 5000.0), 680);
        // Past the ceiling: 5 % a report.
        assert_eq!(c.on_peer_report(&report(0, 0), 6000.0), 714);
        assert!(
            !c.limited,
            "clean reports and no estimate: nothing holds the rate back"
        );
    }

    #[test]
    fn a_burst_of_loss_on_an_empty_queue_holds_the_rate_and_loss_again_backs_off() {
        let mut c = BitrateController::default();
        // A handover's 300 ms blackout: 30 % of a report's packets, no queue.
        assert_eq!(c.on_peer_report(&report(300, 0), 0.0), 800);
        assert!(c.limited);
        assert_eq!(
            c.on_peer_report(&report(0, 0), 1000.0),
            840,
            "clean: climbs again"
        );
        // Loss report after report (a policer, a lossy radio): the second one backs off.
        assert_eq!(c.on_peer_report(&report(50, 0), 2000.0), 840);
        assert_eq!(c.on_peer_report(&report(50, 0), 3000.0), 714);
    }

    #[test]
    fn congestion_cuts_to_under_what_the_partner_received_when_that_is_lower() {
        let mut c = BitrateController::new(150, 2500, 2000);
        // The link fell to about 1 Mbit/s: the partner got 1000 kbit/s, with loss and a queue.
        let congested = ReceiverReport {
            bitrate_kbps: 1000,
            ..report(50, 100)
        };
        assert_eq!(c.on_peer_report(&congested, 0.0), 850, "not 2000 × 0.85");
        // A false alarm at a rate the path carries: the usual × 0.85.
        let mut c = BitrateController::new(150, 2500, 1000);
        let carried = ReceiverReport {
            bitrate_kbps: 1040,
            ..report(0, 250)
        };
        assert_eq!(c.on_peer_report(&carried, 0.0), 600, "heavy: × 0.6");
    }

    #[test]
    fn a_mild_queue_counts_twice_in_a_row_a_deep_one_at_once() {
        let mut c = BitrateController::default();
        assert_eq!(
            c.on_peer_report(&report(0, 80), 0.0),
            800,
            "one mild report may be a busy receiver"
        );
        assert_eq!(c.on_peer_report(&report(0, 80), 1000.0), 680);
        let mut c = BitrateController::default();
        assert_eq!(c.on_peer_report(&report(0, 250), 0.0), 480);
    }

    #[test]
    fn the_send_estimate_caps_the_target_and_the_climb() {
        let mut c = BitrateController::default();
        assert_eq!(c.on_send_estimate(600.0, 0.0), 510);
        assert_eq!(
            c.on_peer_report(&report(0, 0), 5000.0),
            510,
            "no climb past 85 % of the estimate"
        );
        assert_eq!(c.on_send_estimate(4000.0, 6000.0), 510);
        assert_eq!(
            c.on_peer_report(&report(0, 0), 7000.0),
            638,
            "fast recovery toward 85 % of 800"
        );
        assert_eq!(c.on_send_estimate(f64::NAN, 7000.0), 638);
        assert_eq!(BitrateController::new(150, 2500, 100).target_kbps(), 150);
        c.reset();
        assert_eq!(c.target_kbps(), 800);
    }

    #[test]
    fn an_rtt_queue_seen_twice_while_rising_cuts_under_what_the_uplink_carried() {
        let mut c = BitrateController::new(150, 2500, 2000);
        assert_eq!(c.on_rtt(80.0, Some(2100.0), 0.0), 2000, "the base");
        assert_eq!(
            c.on_rtt(110.0, Some(2100.0), 100.0),
            2000,
            "jitter: nothing"
        );
        assert_eq!(
            c.on_rtt(160.0, Some(2100.0), 200.0),
            2000,
            "once may be noise"
        );
        // The queue grew 180 ms in 300 ms while we sent 2100 kbit/s: the link carried
        // 2100 / 1.6, and the cut goes under 85 % of that.
        assert_eq!(c.on_rtt(260.0, Some(2100.0), 300.0), 1116);
        assert_eq!(
            c.on_rtt(300.0, Some(900.0), 400.0),
            1116,
            "one RTT cut per half second"
        );
        assert!(c.limited);
        assert_eq!(
            c.on_peer_report(&report(0, 0), 3000.0),
            1116,
            "no climbing into our own queue"
        );
        assert_eq!(c.on_rtt(90.0, Some(900.0), 3100.0), 1116);
        assert_eq!(
            c.on_peer_report(&report(0, 0), 4000.0),
            1395,
            "fast recovery once drained"
        );
    }

    #[test]
    fn a_deep_rtt_queue_cuts_at_once_and_samples_without_rates_cut_by_a_share() {
        let mut c = BitrateController::new(150, 2500, 2000);
        c.on_rtt(80.0, None, 0.0);
        assert_eq!(c.on_rtt(300.0, None, 100.0), 1200, "× 0.6 at once");
        let mut c = BitrateController::new(150, 2500, 2000);
        c.on_rtt(80.0, None, 0.0);
        assert_eq!(c.on_rtt(150.0, None, 100.0), 2000);
        assert_eq!(c.on_rtt(150.0, None, 200.0), 1700, "× 0.85");
        assert_eq!(c.on_rtt(f64::NAN, None, 2000.0), 1700);
    }

    #[test]
    fn a_move_to_a_longer_path_cuts_once_at_most_and_becomes_the_base() {
        let mut c = BitrateController::new(150, 2500, 2000);
        let mut t = 0.0;
        for _ in 0..20 {
            c.on_rtt(20.0, Some(2100.0), t);
            t += 100.0;
        }
        // Wi-Fi to cellular: 80 ms more round trip, then steady.
        let mut cuts = 0;
        let mut last = c.target_kbps();
        for _ in 0..40 {
            let now = c.on_rtt(100.0, Some(2100.0), t);
            cuts += usize::from(now < last);
            last = now;
            t += 100.0;
        }
        assert_eq!(cuts, 1, "one cut for the step, none while it holds");
        assert!(
            !c.own_queue_standing(),
            "after {RTT_BASE_MS} ms the longer round trip is the base"
        );
        assert!(
            c.on_peer_report(&report(0, 0), t + 2000.0) > last,
            "climbs again"
        );
    }

    /// Feeds RTT samples every 100 ms from `t`: a queue growing by `grow_ms` a sample while
    /// sending `sent` kbit/s. Returns the time after the last sample.
    fn rtt_ramp(c: &mut BitrateController, t: f64, samples: usize, grow_ms: f64, sent: f64) -> f64 {
        let mut t = t;
        for i in 0..samples {
            c.on_rtt(40.0 + grow_ms * i as f64, Some(sent), t);
            t += 100.0;
        }
        t
    }

    #[test]
    fn a_fade_below_the_floor_pauses_video_until_the_queue_drains_then_resumes_at_the_floor() {
        let mut c = BitrateController::new(150, 2500, 1200);
        let mut t = rtt_ramp(&mut c, 0.0, 10, 0.0, 1300.0);
        assert!(!c.video_paused());
        // The link falls to 100 kbit/s. The queue grows as fast as its ACKs can show it,
        // and once the congestion window is full the ACKs clock what we send to the link's.
        let fade = [
            (100.0, 1300.0),
            (250.0, 400.0),
            (400.0, 120.0),
            (500.0, 110.0),
            (550.0, 110.0),
            (550.0, 110.0),
        ];
        let mut paused_at = None;
        for (i, (queue, sent)) in fade.into_iter().enumerate() {
            c.on_rtt(40.0 + queue, Some(sent), t);
            if c.video_paused() && paused_at.is_none() {
                paused_at = Some((i + 1, t));
            }
            t += 100.0;
        }
        let (first, paused_ms) = paused_at.expect("a fade below the floor pauses video");
        assert_eq!(first, PAUSE_RTT_SAMPLES, "on the third sample of the queue");
        assert_eq!(c.target_kbps(), 150);
        // Paused: reports of audio alone change nothing, the queue drains, and after the
        // hold video comes back at the floor.
        assert_eq!(c.on_peer_report(&report(300, 0), t), 150);
        assert!(c.video_paused(), "a report does not end a pause");
        let resumed = loop {
            c.on_rtt(45.0, Some(60.0), t);
            if !c.video_paused() {
                break t;
            }
            t += 100.0;
            assert!(t < 20_000.0, "never resumed");
        };
        assert!(
            (PAUSE_MIN_MS..PAUSE_MIN_MS + 200.0).contains(&(resumed - paused_ms)),
            "resumed {} ms after pausing",
            resumed - paused_ms
        );
        assert_eq!(c.target_kbps(), 150);
        // Fast recovery toward the rate before the fade once reports are clean.
        let mut now = resumed;
        for _ in 0..4 {
            now += 1000.0;
            c.on_peer_report(&report(0, 0), now);
        }
        assert!(c.target_kbps() > 250, "{}", c.target_kbps());
    }

    #[test]
    fn one_high_rtt_reading_after_a_move_cuts_but_does_not_pause() {
        let mut c = BitrateController::new(150, 2500, 200);
        let t = rtt_ramp(&mut c, 0.0, 10, 0.0, 60.0);
        // A new path's first smoothed RTT is quinn's initial 333 ms, then the real one.
        c.on_rtt(333.0, Some(10.0), t);
        c.on_rtt(70.0, Some(250.0), t + 100.0);
        c.on_rtt(70.0, Some(250.0), t + 200.0);
        assert!(!c.video_paused());
        assert_eq!(c.target_kbps(), 150, "the heavy cut, to the floor");
    }

    #[test]
    fn acks_starving_for_half_a_second_while_sending_pause_until_they_flow_again() {
        let mut c = BitrateController::new(150, 2500, 1200);
        let mut t = rtt_ramp(&mut c, 0.0, 10, 0.0, 1300.0);
        // A handover's blackout: 300 ms without ACKs, then they come again.
        for acks in [12, 0, 0, 0, 14, 12] {
            c.on_acks(acks, true, t);
            t += 100.0;
        }
        assert!(!c.video_paused(), "a blackout is shorter than the window");
        assert_eq!(c.target_kbps(), 1200);
        // Nothing sent, nothing acknowledged: no expectation.
        for _ in 0..10 {
            c.on_acks(0, false, t);
            t += 100.0;
        }
        assert!(!c.video_paused());
        // A fade: a trickle of ACKs while we send.
        for acks in [1, 0, 1, 0, 0] {
            c.on_acks(acks, true, t);
            c.on_rtt(40.0, Some(1300.0), t);
            t += 100.0;
        }
        assert!(c.video_paused());
        let paused_at = t - 100.0;
        // Still starved after the hold: still paused.
        while t < paused_at + 2.0 * PAUSE_MIN_MS {
            c.on_acks(0, true, t);
            c.on_rtt(40.0, Some(60.0), t);
            t += 100.0;
        }
        assert!(c.video_paused(), "ACKs still starved");
        c.on_acks(3, true, t);
        c.on_rtt(45.0, Some(60.0), t);
        assert!(
            !c.video_paused(),
            "ACKs flow again and no queue: video resumes"
        );
        assert_eq!(c.target_kbps(), 150);
    }

    #[test]
    fn the_first_clean_report_of_video_after_a_pause_goes_back_to_half_the_rate_before_it() {
        let mut c = BitrateController::new(150, 2500, 800);
        let faded = ReceiverReport {
            bitrate_kbps: 90,
            ..report(200, 150)
        };
        c.on_peer_report(&faded, 0.0);
        assert!(c.video_paused());
        assert_eq!(c.on_peer_report(&report(0, 0), 1000.0), 150, "resumed");
        assert!(!c.video_paused());
        assert_eq!(
            c.on_peer_report(&report(0, 0), 2000.0),
            188,
            "a report of the pause: fast recovery's step only"
        );
        assert_eq!(c.on_peer_report(&report(0, 0), 3000.0), 400, "800 × 0.5");
        assert_eq!(c.on_peer_report(&report(0, 0), 4000.0), 500, "then × 1.25");
        // Congestion after a resume: no jump back.
        let mut c = BitrateController::new(150, 2500, 800);
        c.on_peer_report(&faded, 0.0);
        c.on_peer_report(&report(0, 0), 1000.0);
        let congested = ReceiverReport {
            bitrate_kbps: 400,
            ..report(50, 100)
        };
        c.on_peer_report(&congested, 2500.0);
        assert!(!c.video_paused());
        assert!(c.on_peer_report(&report(0, 0), 5000.0) < 300);
    }

    #[test]
    fn a_step_to_a_much_longer_path_at_the_floor_does_not_pause() {
        let mut c = BitrateController::new(150, 2500, 150);
        let mut t = rtt_ramp(&mut c, 0.0, 10, 0.0, 200.0);
        for _ in 0..30 {
            c.on_rtt(250.0, Some(200.0), t);
            assert!(!c.video_paused(), "at {t} ms");
            t += 100.0;
        }
    }

    #[test]
    fn a_report_far_under_the_floor_pauses_and_a_pause_that_follows_a_resume_lasts_longer() {
        let mut c = BitrateController::new(150, 2500, 800);
        let faded = ReceiverReport {
            bitrate_kbps: 90,
            ..report(200, 150)
        };
        c.on_peer_report(&report(0, 0), 0.0);
        c.on_peer_report(&faded, 1000.0);
        assert!(c.video_paused(), "heavy loss at 90 kbit/s received");
        assert!(c.on_peer_report(&faded, 1500.0) == 150 && c.video_paused());
        // No RTT signal: the hold alone ends the pause.
        assert_eq!(c.on_peer_report(&report(0, 0), 2000.0), 150);
        assert!(!c.video_paused(), "after {PAUSE_MIN_MS} ms");
        // The next report covers the pause: it may not pause again; the one after may.
        c.on_peer_report(&faded, 3000.0);
        assert!(!c.video_paused(), "a report of the pause itself");
        c.on_peer_report(&faded, 4000.0);
        assert!(c.video_paused(), "the fade goes on");
        assert_eq!(c.on_peer_report(&report(0, 0), 5500.0), 150);
        assert!(
            c.video_paused(),
            "twice the hold: {} ms",
            2.0 * PAUSE_MIN_MS
        );
        c.on_peer_report(&report(0, 0), 6000.0);
        assert!(!c.video_paused());
        c.reset();
        assert!(!c.video_paused() && c.target_kbps() == 800);
    }

    fn header(track: Track, seq: u32, capture_ms: u64) -> MediaHeader {
        MediaHeader {
            match_id: 1,
            track,
            seq,
            frame: seq,
            frag_index: 0,
            frag_count: 1,
            keyframe: false,
            capture_us: capture_ms * 1000,
            ref_frame: seq,
        }
    }

    #[test]
    fn the_meter_counts_loss_per_track_and_the_standing_queue_above_the_base() {
        let mut m = ReceiveMeter::default();
        // Interval 1: audio 0..10 every 20 ms, 20 ms in transit; video 0..10 with 3 lost.
        for seq in 0..10u32 {
            m.on_datagram(
                &header(Track::Audio, seq, u64::from(seq) * 20),
                100,
                f64::from(seq * 20 + 20),
            );
            if ![3, 4, 7].contains(&seq) {
                m.on_datagram(
                    &header(Track::Video, seq, u64::from(seq) * 20),
                    1000,
                    f64::from(seq * 20 + 20),
                );
            }
        }
        let r = m.report(1, 1000.0, 5);
        // 20 expected (the first of each track counts as the start), 17 arrived.
        assert_eq!(
            (r.loss_permille, r.queue_delay_ms, r.frames_decoded),
            (150, 0, 5)
        );
        // Over 980 ms: from the first arrival (at 20 ms) to the report.
        assert_eq!(r.bitrate_kbps, 65);
        // Interval 2: every audio packet 70 ms in transit: a standing queue of 50 ms.
        for seq in 10..20u32 {
            m.on_datagram(
                &header(Track::Audio, seq, 1000 + u64::from(seq) * 20),
                100,
                f64::from(1000 + seq * 20 + 70),
            );
        }
        let r = m.report(1, 2000.0, 5);
        assert_eq!((r.loss_permille, r.queue_delay_ms), (0, 50));
        m.reset();
        assert_eq!(m.report(1, 3000.0, 0).loss_permille, 0);
    }
}
