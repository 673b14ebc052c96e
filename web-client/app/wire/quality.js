// @ts-check
/**
 * @file Connection quality: what a receiver measures about incoming media (for its
 * `ReceiverReport`), how a connection is classed for the indicator (good / fair / poor),
 * and the sender's bitrate controller that follows the partner's reports and the
 * transport's send-rate estimate.
 *
 * The controller is additive-increase / multiplicative-decrease, like the congestion
 * controllers it sits on top of: it backs off at once and hard when the partner reports
 * loss with a queue building, loss in two reports in a row (one burst on an empty queue is
 * a handover's blackout, not congestion), or the estimate falls below what we send (a cut
 * goes at once under 85% of what the partner received: the rate the path carried), and
 * creeps up slowly while the reports are clean, so a call settles just under what the path
 * carries instead of oscillating. Between reports, the sender's own smoothed RTT (sampled
 * every 100 ms) catches a queue rising on its uplink within a few hundred ms (`onRtt`).
 * When a cut would go well under the video's floor (a radio fade, a tunnel), video pauses
 * and the voice goes on alone (`videoPaused`), until the pause's hold has passed and the
 * queue has drained; a pause that follows a resume lasts twice as long. The native
 * controller also pauses when ACKs starve for half a second while it sends; a page cannot
 * (`getStats` counts no ACKs), so it has its RTT and its partner's reports.
 *
 * It must not collapse on a busy machine: a receiver starved of CPU stamps arrivals late,
 * which looks like queue delay for a moment. So the receiver reports the *standing* queue
 * (the lowest transit of the interval above the path's base: a real queue raises every
 * packet's transit, a late timer only some), a mild queue must be seen in two reports in
 * a row, and after a false alarm the rate climbs back fast (×1.25 a report) up to just
 * under the highest rate it backed off from in the last RECOVERY_MEMORY_MS, then creeps.
 * A real queue (a rate-limited link) keeps raising the standing queue, so it still backs
 * the rate off; unit tests drive both cases with time passed in.
 *
 * No browser API here: Node's test runner covers all of it. Times are milliseconds on
 * any monotonic clock, passed in.
 */

import { TRACK_AUDIO } from "./protocol.js";

/** @typedef {"good" | "fair" | "poor" | "unknown"} Quality */

/** Below both: good. Above either poor line: poor. In between: fair. */
export const GOOD_RTT_MS = 150;
export const POOR_RTT_MS = 400;
export const GOOD_LOSS_PERMILLE = 20;
export const POOR_LOSS_PERMILLE = 80;

/**
 * @param {{rttMs: number | null, lossPermille: number | null}} m the latest measurements;
 *   null where nothing is known yet
 * @returns {Quality}
 */
export function classifyQuality(m) {
  if (m.rttMs === null && m.lossPermille === null) return "unknown";
  const rtt = m.rttMs ?? 0;
  const loss = m.lossPermille ?? 0;
  if (rtt > POOR_RTT_MS || loss > POOR_LOSS_PERMILLE) return "poor";
  if (rtt > GOOD_RTT_MS || loss > GOOD_LOSS_PERMILLE) return "fair";
  return "good";
}

/** Video bitrate bounds, in kbit/s: the floor still shows a face; the ceiling is plenty for 640×480. */
export const MIN_VIDEO_KBPS = 150;
export const MAX_VIDEO_KBPS = 2500;
export const START_VIDEO_KBPS = 800;
/** Loss the partner may report before we back off (a few lost packets are normal). */
const BACKOFF_LOSS_PERMILLE = 30;
/** Loss at which we back off hard. */
const HEAVY_LOSS_PERMILLE = 100;
/** At most one decrease per this long: each report covers about a second. */
const DECREASE_HOLDOFF_MS = 1000;
/** The RTT rule may cut again this soon: its samples come ten times a second, and a link that keeps falling (a walk down into a fade) keeps the queue growing after a cut. */
const RTT_DECREASE_HOLDOFF_MS = 500;
/** Clean time after a decrease before increasing again. */
const INCREASE_HOLDOFF_MS = 2000;
/** A rate we backed off from is remembered this long: climbing back to just under it is fast. */
export const RECOVERY_MEMORY_MS = 10_000;
/** Backoffs remembered for fast recovery (at most one a second, so 10 s of them and more). */
const MAX_BACKOFFS_REMEMBERED = 16;
/** Fast recovery climbs to this share of the remembered rate. */
const RECOVERY_SHARE = 0.85;
/** Growth per clean report while recovering. */
const RECOVERY_GROWTH = 1.25;
/** Queue delay the partner may report before we back off: a queue this deep is building up ahead of us. */
export const BACKOFF_QUEUE_MS = 60;
/** Queue delay at which we back off hard (the uplink buffer is deep: seconds of delay would follow). */
export const HEAVY_QUEUE_MS = 200;
/** On congestion, video goes under this share of what the partner received (media and audio): the rate the path carried (as GCC does with its incoming-rate estimate). */
const DELIVERED_SHARE = 0.85;
/** Increase per clean report: 5%, at least this many kbit/s. */
const MIN_INCREASE_KBPS = 20;
/** The sender's own queue signal (`onRtt`): the connection's smoothed RTT above its lowest of the last RTT_BASE_MS, sampled about this often. */
export const RTT_SAMPLE_MS = 100;
/**
 * The base a queue is measured from is the lowest smoothed RTT of this long: short, so a move
 * to a path with a longer round trip (Wi-Fi to cellular) is a new base within seconds rather
 * than a queue for good. A queue that stands longer is the receiver reports' to see.
 */
export const RTT_BASE_MS = 2000;
/** RTT above the base that backs off when seen in two samples in a row while rising (above a radio path's own jitter). */
export const RTT_BACKOFF_QUEUE_MS = 60;
/** RTT above the base that backs off hard at once. */
export const RTT_HEAVY_QUEUE_MS = 200;
/** A mild queue counts only if it rose by this much over the slope samples: a growing queue is a link carrying less than we send; a step that holds is a longer path. */
export const RTT_RISE_MS = 20;
/** The samples a queue's growth is measured over (about 500 ms). */
const RTT_SLOPE_SAMPLES = 6;
/**
 * Video pauses (audio goes on alone) when a congestion cut would go under this share of the
 * floor: the path carries less than the least video we send, so every frame would wait
 * behind the last and hold the voice back with it (a radio fade, a tunnel, a lift). WebRTC
 * suspends video below its minimum bitrate for the same reason.
 */
const PAUSE_BELOW_FLOOR_SHARE = 0.75;
/** The RTT rule pauses only on a queue seen in this many samples in a row (about 300 ms): a new path's first sample after a move can read far above the base once. */
export const PAUSE_RTT_SAMPLES = 3;
/** A pause lasts at least this long; one that follows a resume within PAUSE_REPEAT_MS (the fade went on) twice the last, up to PAUSE_MAX_MS. */
export const PAUSE_MIN_MS = 1000;
export const PAUSE_MAX_MS = 8000;
const PAUSE_REPEAT_MS = 3000;
/**
 * The first clean report of video after a pause (the fade is over) takes the rate back at
 * once to this share of the rate before the pause, rather than climbing from the floor for
 * ten seconds: radio links come back from a fade about where they were.
 */
const RESUME_SHARE = 0.5;

/** Picks the video encoder's target bitrate. */
export class BitrateController {
  /** @param {{min?: number, max?: number, start?: number}} [options] kbit/s */
  constructor(options = {}) {
    this.min = options.min ?? MIN_VIDEO_KBPS;
    this.max = options.max ?? MAX_VIDEO_KBPS;
    this.startKbps = Math.min(this.max, Math.max(this.min, options.start ?? START_VIDEO_KBPS));
    this.target = this.startKbps;
    this.lastDecreaseMs = -Infinity;
    this.lastIncreaseMs = -Infinity;
    /** @type {number | null} */
    this.estimateKbps = null;
    /** The network held the rate back at the last decision (loss, queue delay or the send estimate). */
    this.limited = false;
    /** Rates we backed off from, with when: the fast-recovery ceiling (bounded by MAX_BACKOFFS_REMEMBERED). @type {{atMs: number, kbps: number}[]} */
    this.backedOffFrom = [];
    /** The last report showed a mild queue (a second one in a row backs off). */
    this.queueSeen = false;
    /** The last report showed loss (a second one in a row backs off, on an empty queue too). */
    this.lossSeen = false;
    /** Recent RTT samples, newest last (at most RTT_SLOPE_SAMPLES). @type {{atMs: number, queueMs: number, sentKbps: number | null}[]} */
    this.rttSamples = [];
    /** Smoothed RTTs of the last RTT_BASE_MS, oldest first. @type {{atMs: number, rttMs: number}[]} */
    this.rttBase = [];
    /** RTT samples in a row with a queue at least RTT_BACKOFF_QUEUE_MS deep. */
    this.queueRun = 0;
    /** When video paused, while it is paused. @type {number | null} */
    this.pausedAt = null;
    /** How long this pause lasts at least. */
    this.pauseHoldMs = PAUSE_MIN_MS;
    /** When the last pause ended. */
    this.resumedAt = -Infinity;
    /** The rate before the last pause, until the first clean report after it (0: none). */
    this.pausedFrom = 0;
  }

  /**
   * Whether video is paused: the sender encodes none (audio goes on) until the pause has
   * lasted its hold and our own queue has drained, then resumes at the floor. The encoder
   * simply gets no frames meanwhile, so the next one references the last one sent.
   */
  get videoPaused() {
    return this.pausedAt !== null;
  }

  /**
   * A congestion cut to `wanted` kbit/s at most once per `holdoffMs`; under the floor's
   * pause share (and `mayPause`) video pauses, even within the holdoff of the last cut.
   * @param {number} wanted @param {boolean} mayPause @param {number} holdoffMs @param {number} nowMs
   */
  cut(wanted, mayPause, holdoffMs, nowMs) {
    this.limited = true;
    if (mayPause && wanted < this.min * PAUSE_BELOW_FLOOR_SHARE) this.pause(nowMs);
    else if (nowMs - this.lastDecreaseMs >= holdoffMs) {
      this.decrease(1, nowMs, wanted);
      this.pausedFrom = 0; // congested since: no jump back
    }
  }

  /** @param {number} nowMs */
  pause(nowMs) {
    if (this.pausedAt !== null) return;
    this.pauseHoldMs = nowMs - this.resumedAt < PAUSE_REPEAT_MS ? Math.min(PAUSE_MAX_MS, this.pauseHoldMs * 2) : PAUSE_MIN_MS;
    this.pausedAt = nowMs;
    // The rate before the fade is remembered: fast recovery climbs back toward it.
    if (this.target > this.min) {
      this.pausedFrom = this.target;
      this.decrease(0, nowMs);
    }
    this.lastDecreaseMs = nowMs;
    this.target = this.min;
  }

  /** Ends a pause that has lasted its hold once our own queue has drained. @param {number} nowMs @returns {boolean} video stays paused */
  stillPaused(nowMs) {
    if (this.pausedAt === null) return false;
    if (nowMs - this.pausedAt < this.pauseHoldMs || this.ownQueueStanding()) return true;
    this.pausedAt = null;
    this.resumedAt = nowMs;
    this.queueSeen = false;
    this.lossSeen = false;
    return false;
  }

  /** The highest rate we backed off from lately, or null. @param {number} nowMs */
  recoveryCeiling(nowMs) {
    // A burst of backoffs is remembered by its top until RECOVERY_MEMORY_MS of quiet.
    if (nowMs - this.lastDecreaseMs > RECOVERY_MEMORY_MS) this.backedOffFrom = [];
    let top = null;
    for (const b of this.backedOffFrom) top = Math.max(top ?? 0, b.kbps);
    return top;
  }

  /** @param {number} factor @param {number} nowMs @param {number} [atMost] kbit/s */
  decrease(factor, nowMs, atMost = Infinity) {
    this.backedOffFrom.push({ atMs: nowMs, kbps: this.target });
    if (this.backedOffFrom.length > MAX_BACKOFFS_REMEMBERED) this.backedOffFrom.shift();
    this.target = this.clamp(Math.min(this.target * factor, atMost));
    this.lastDecreaseMs = nowMs;
  }

  /** A new partner: start again from the starting rate (their path is not ours). */
  reset() {
    this.target = this.startKbps;
    this.lastDecreaseMs = -Infinity;
    this.lastIncreaseMs = -Infinity;
    this.estimateKbps = null;
    this.limited = false;
    this.backedOffFrom = [];
    this.queueSeen = false;
    this.lossSeen = false;
    this.rttSamples = [];
    this.rttBase = [];
    this.queueRun = 0;
    this.pausedAt = null;
    this.pauseHoldMs = PAUSE_MIN_MS;
    this.resumedAt = -Infinity;
    this.pausedFrom = 0;
  }

  /** @param {number} kbps */
  clamp(kbps) {
    return Math.round(Math.min(this.max, Math.max(this.min, kbps)));
  }

  /**
   * The partner's receiver report about our media.
   * Loss and queue delay are both congestion: a deep queue (a big uplink buffer that never
   * drops) shows as delay long before loss, so it backs the rate off the same way.
   * @param {{loss_permille: number, queue_delay_ms?: number, bitrate_kbps?: number}} report
   * @param {number} nowMs
   * @returns {number} the new target
   */
  onPeerReport(report, nowMs) {
    if (this.stillPaused(nowMs)) return this.target; // a report of audio alone says nothing of video's rate
    const loss = report.loss_permille;
    const queue = report.queue_delay_ms ?? 0;
    const queued = queue >= BACKOFF_QUEUE_MS;
    // A mild queue in one report alone may be a receiver that was short of CPU; twice is a queue.
    const queueCounts = queue >= HEAVY_QUEUE_MS || (queued && this.queueSeen);
    this.queueSeen = queued;
    // Loss with a queue building is congestion at once. Loss alone counts when it comes again
    // in the next report: one burst on an empty queue is a handover's blackout or a radio
    // fade, which says nothing about the rate the path carries.
    const lossy = loss >= BACKOFF_LOSS_PERMILLE;
    const lossCounts = lossy && (this.lossSeen || queue >= BACKOFF_QUEUE_MS / 2);
    this.lossSeen = lossy;
    if (lossCounts || queueCounts) {
      // What reached the partner is what the path carried: a link that fell far below our
      // rate is met in one step, not in a cut a second.
      const delivered = (report.bitrate_kbps ?? 0) > 0 ? (report.bitrate_kbps ?? 0) * DELIVERED_SHARE : Infinity;
      const heavy = loss >= HEAVY_LOSS_PERMILLE || queue >= HEAVY_QUEUE_MS;
      // A report this soon after a resume covers the pause (its rate is audio's): it may cut, but not pause again.
      this.cut(Math.min(this.target * (heavy ? 0.6 : 0.85), delivered), nowMs - this.resumedAt >= REPORT_INTERVAL_MS + 250, DECREASE_HOLDOFF_MS, nowMs);
    } else if (lossy) {
      this.limited = true; // held, not cut: see above
    } else if (
      loss <= BACKOFF_LOSS_PERMILLE / 2 &&
      queue < BACKOFF_QUEUE_MS / 2 &&
      nowMs - this.lastDecreaseMs >= INCREASE_HOLDOFF_MS &&
      !this.ownQueueStanding()
    ) {
      this.limited = this.estimateKbps !== null && this.target >= this.estimateKbps * 0.85 && this.target < this.max;
      const ceiling = this.recoveryCeiling(nowMs);
      const recoverTo = ceiling === null ? 0 : ceiling * RECOVERY_SHARE;
      let next = this.target + Math.max(MIN_INCREASE_KBPS, this.target * 0.05);
      // Back to where we were before a backoff quickly: the path carried that a moment ago.
      if (this.target < recoverTo) next = Math.max(next, Math.min(recoverTo, this.target * RECOVERY_GROWTH));
      // The first clean report of video after a pause: the fade is over.
      if (this.pausedFrom > 0 && nowMs - this.resumedAt >= REPORT_INTERVAL_MS + 250) {
        next = Math.max(next, this.pausedFrom * RESUME_SHARE);
        this.pausedFrom = 0;
      }
      // Never climb past what the transport says it can send.
      if (this.estimateKbps !== null) next = Math.min(next, Math.max(this.target, this.estimateKbps * 0.85));
      this.target = this.clamp(next);
      this.lastIncreaseMs = nowMs;
    }
    return this.target;
  }

  /** Whether the last RTT sample showed a queue on our own uplink (no climbing into one). */
  ownQueueStanding() {
    const last = this.rttSamples[this.rttSamples.length - 1];
    return last !== undefined && last.queueMs >= RTT_BACKOFF_QUEUE_MS;
  }

  /**
   * The connection's smoothed RTT (WebTransport `getStats`), and what the session sent
   * since the last sample, if known: the sender's own sub-second view of a queue on its
   * uplink, about every RTT_SAMPLE_MS. A receiver's report measures a second and arrives a
   * second later; a link that falls from 3 Mbit/s to 0.5 has built half a second of queue
   * by then. The queue is the RTT above its lowest of the last RTT_BASE_MS. Seen in two
   * samples in a row while rising (or far above the base once), it cuts as a report
   * would, and at once under what the link carried: what we sent, less the share the queue
   * grew by (a queue that grows 0.5 s a second means the link carries two thirds of what
   * goes in). The same rule as the native client's `BitrateController::on_rtt`.
   * @param {number | null} srttMs
   * @param {number | null} sentKbps all of this session's sending since the last sample
   * @param {number} nowMs
   * @returns {number} the new target
   */
  onRtt(srttMs, sentKbps, nowMs) {
    if (srttMs === null || !Number.isFinite(srttMs) || srttMs <= 0) return this.target;
    while (this.rttBase.length > 0 && nowMs - this.rttBase[0].atMs > RTT_BASE_MS) this.rttBase.shift();
    this.rttBase.push({ atMs: nowMs, rttMs: srttMs });
    const base = this.rttBase.reduce((m, b) => Math.min(m, b.rttMs), srttMs);
    const queueMs = srttMs - base;
    const seenBefore = this.ownQueueStanding();
    this.rttSamples.push({ atMs: nowMs, queueMs, sentKbps: sentKbps !== null && Number.isFinite(sentKbps) && sentKbps > 0 ? sentKbps : null });
    while (this.rttSamples.length > RTT_SLOPE_SAMPLES) this.rttSamples.shift();
    this.queueRun = queueMs >= RTT_BACKOFF_QUEUE_MS ? this.queueRun + 1 : 0;
    if (this.stillPaused(nowMs)) return this.target;
    const rising = queueMs - this.rttSamples[0].queueMs >= RTT_RISE_MS;
    const heavy = queueMs >= RTT_HEAVY_QUEUE_MS;
    if (!heavy && !(queueMs >= RTT_BACKOFF_QUEUE_MS && seenBefore && rising)) return this.target;
    const carried = this.carriedKbps(RTT_SLOPE_SAMPLES);
    let next = Math.min(this.target * (heavy ? 0.6 : 0.85), carried === null ? Infinity : carried * DELIVERED_SHARE);
    // Pausing wants a queue that has stood for a few samples while rising, and what the link
    // carried meanwhile under the floor: not one high reading after a move, nor a step to a
    // longer path (its queue does not grow within the run).
    if (this.queueRun >= PAUSE_RTT_SAMPLES && rising) {
      const recent = this.carriedKbps(Math.min(this.queueRun, RTT_SLOPE_SAMPLES));
      if (recent !== null && recent * DELIVERED_SHARE < this.min * PAUSE_BELOW_FLOOR_SHARE) {
        this.cut(Math.min(next, recent * DELIVERED_SHARE), true, RTT_DECREASE_HOLDOFF_MS, nowMs);
        return this.target;
      }
    }
    this.cut(next, false, RTT_DECREASE_HOLDOFF_MS, nowMs);
    return this.target;
  }

  /**
   * What the uplink carried over the last `n` RTT samples (all of them when fewer), kbit/s:
   * the mean of what we sent over 1 + the queue's growth per unit of time (a queue that
   * holds steady means the link carried what we sent); null without send rates or with
   * fewer than two samples. The queue's growth as seen through the RTT is at most about one
   * second a second (its ACKs are late too), so a link far below our rate shows in what we
   * send once the congestion window is full: the ACKs clock it to the link's.
   * @param {number} n
   * @returns {number | null}
   */
  carriedKbps(n) {
    const recent = this.rttSamples.slice(Math.max(0, this.rttSamples.length - Math.max(2, n)));
    const first = recent[0];
    const last = recent[recent.length - 1];
    if (!first || !last || last.atMs <= first.atMs) return null;
    const sent = recent.slice(1).flatMap((x) => (x.sentKbps === null ? [] : [x.sentKbps]));
    if (sent.length === 0) return null;
    const mean = sent.reduce((a, b) => a + b, 0) / sent.length;
    const growth = Math.max(0, (last.queueMs - first.queueMs) / (last.atMs - first.atMs));
    return mean / (1 + growth);
  }

  /**
   * The transport's estimate of what it can send (WebTransport `estimatedSendRate`), for
   * the whole session: audio and overhead ride on it too, so video keeps under 85% of it.
   * @param {number | null} kbps
   * @param {number} nowMs
   * @returns {number} the new target
   */
  onSendEstimate(kbps, nowMs) {
    if (kbps === null || !Number.isFinite(kbps) || kbps <= 0 || this.stillPaused(nowMs)) return this.target;
    const previous = this.estimateKbps;
    this.estimateKbps = kbps;
    const ceiling = kbps * 0.85;
    if (this.target > ceiling && (previous === null || kbps < previous || nowMs - this.lastDecreaseMs >= DECREASE_HOLDOFF_MS)) {
      this.backedOffFrom.push({ atMs: nowMs, kbps: this.target });
      if (this.backedOffFrom.length > MAX_BACKOFFS_REMEMBERED) this.backedOffFrom.shift();
      this.target = this.clamp(ceiling);
      this.lastDecreaseMs = nowMs;
      this.limited = true;
    }
    return this.target;
  }
}

/** Reports cover about this long. */
export const REPORT_INTERVAL_MS = 1000;
/** Intervals whose lowest transit make the base delay: 10 s, long enough to see an empty queue. */
const QUEUE_BASE_INTERVALS = 10;

/**
 * Measures incoming media for `ReceiverReport`: loss from sequence-number gaps (per
 * track), interarrival jitter (RFC 3550 style, from capture stamps against arrival) and
 * the bitrate received. Reset on a new pairing.
 */
export class ReceiveMeter {
  constructor() {
    /** Per track: highest sequence number seen, at the last report, and datagrams since. @type {Map<number, {highest: number, atReport: number, received: number}>} */
    this.tracks = new Map();
    this.bytes = 0;
    this.jitterMs = 0;
    /** @type {number | null} */
    this.lastTransitMs = null;
    /** @type {number | null} */
    this.intervalStartMs = null;
    /** Lowest transit of each recent interval, newest last (the path's base delay). @type {number[]} */
    this.minTransits = [];
    this.intervalMinTransit = Infinity;
  }

  reset() {
    this.tracks.clear();
    this.bytes = 0;
    this.jitterMs = 0;
    this.lastTransitMs = null;
    this.intervalStartMs = null;
    this.minTransits = [];
    this.intervalMinTransit = Infinity;
  }

  /**
   * One datagram arrived.
   * @param {{track: number, seq: number, capture_us: bigint}} header
   * @param {number} size bytes
   * @param {number} arrivalMs the receiver's wall clock (same epoch as capture_us, in ms)
   */
  onDatagram(header, size, arrivalMs) {
    if (this.intervalStartMs === null) this.intervalStartMs = arrivalMs;
    this.bytes += size;
    const t = this.tracks.get(header.track);
    if (!t) {
      // The first datagram seen counts as the start: earlier ones were never expected.
      this.tracks.set(header.track, { highest: header.seq, atReport: header.seq - 1, received: 1 });
    } else {
      t.received++;
      if (header.seq > t.highest) t.highest = header.seq;
    }
    if (header.track !== TRACK_AUDIO) return; // a video frame's datagrams share a stamp: use audio's steady rhythm
    const transit = arrivalMs - Number(header.capture_us) / 1000;
    if (transit < this.intervalMinTransit) this.intervalMinTransit = transit;
    if (this.lastTransitMs !== null) {
      const d = Math.abs(transit - this.lastTransitMs);
      this.jitterMs += (d - this.jitterMs) / 16;
    }
    this.lastTransitMs = transit;
  }

  /**
   * The report for the interval since the last one, and starts a new interval.
   * @param {number} nowMs same clock as `arrivalMs`
   * @param {number} framesDecoded video frames decoded since the session began
   * @returns {Omit<import("./protocol.js").ReceiverReport, "match_id">}
   */
  report(nowMs, framesDecoded) {
    let expected = 0;
    let received = 0;
    for (const t of this.tracks.values()) {
      expected += Math.max(0, t.highest - t.atReport);
      received += t.received;
      t.atReport = t.highest;
      t.received = 0;
    }
    const lost = Math.max(0, expected - received);
    const loss_permille = expected > 0 ? Math.min(1000, Math.round((lost * 1000) / expected)) : 0;
    const elapsed = this.intervalStartMs === null ? REPORT_INTERVAL_MS : Math.max(1, nowMs - this.intervalStartMs);
    const bitrate_kbps = Math.min(0xffffffff, Math.round((this.bytes * 8) / elapsed));
    this.bytes = 0;
    this.intervalStartMs = nowMs;
    // Queue delay: the standing queue, how far this interval's lowest transit sits above the
    // lowest of the last QUEUE_BASE_INTERVALS intervals (clock offset cancels out). The
    // interval's lowest, not its latest: a queue delays every packet, while a receiver
    // short of CPU stamps only some arrivals late, and must not read as congestion.
    const intervalMin = this.intervalMinTransit;
    if (Number.isFinite(intervalMin)) {
      this.minTransits.push(intervalMin);
      if (this.minTransits.length > QUEUE_BASE_INTERVALS) this.minTransits.shift();
    }
    this.intervalMinTransit = Infinity;
    const base = this.minTransits.length ? Math.min(...this.minTransits) : null;
    const queue = base !== null && Number.isFinite(intervalMin) ? Math.max(0, intervalMin - base) : 0;
    return {
      loss_permille,
      jitter_ms: Math.min(0xffff, Math.round(this.jitterMs)),
      frames_decoded: framesDecoded >>> 0,
      bitrate_kbps,
      queue_delay_ms: Math.min(0xffff, Math.round(queue)),
    };
  }
}
