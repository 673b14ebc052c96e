// @ts-check
/**
 * @file How long to hold decoded video before showing it, so that frames recovered by a
 * resend (`Nack`) are shown in time instead of after a freeze.
 *
 * Without loss nothing is held: every frame is shown as soon as it is decoded. When a gap
 * is recovered, the frames that waited behind it come out late by about the recovery's
 * round trip; showing them then means the picture stood still meanwhile (a freeze). So
 * each recovery's lateness is remembered for WINDOW_MS, and while any is, frames are shown
 * at their capture time plus the path's base delay plus what covers most recoveries seen
 * (the COVERED quantile, a little more, capped): the picture is later by that much but
 * moves evenly through the losses, as WebRTC's jitter buffer does; a rare slow recovery
 * still freezes rather than delaying everything. A quiet WINDOW_MS later the delay is gone.
 *
 * No browser API here: Node's test runner covers it. Times are milliseconds, passed in.
 */

/** A recovery counts this long. */
export const WINDOW_MS = 10_000;
/** The hold never exceeds this (past it a freeze is the lesser evil). */
export const MAX_DELAY_MS = 300;
/** The share of recoveries the hold covers. */
export const COVERED = 0.8;
/** Added to the covered recovery, for its jitter. */
const MARGIN_MS = 15;
/** Recoveries remembered at most. */
const MAX_SAMPLES = 64;

export class PlayoutDelay {
  constructor() {
    /** @type {{atMs: number, latenessMs: number}[]} */
    this.samples = [];
  }

  reset() {
    this.samples = [];
  }

  /**
   * A frame that waited behind a recovered gap came out of the decoder this late.
   * @param {number} latenessMs from lateness.js
   * @param {number} nowMs
   */
  onRecovered(latenessMs, nowMs) {
    this.samples.push({ atMs: nowMs, latenessMs });
    if (this.samples.length > MAX_SAMPLES) this.samples.shift();
  }

  /** The hold to apply now, in ms past the path's base delay. @param {number} nowMs */
  delayMs(nowMs) {
    while (this.samples.length && nowMs - this.samples[0].atMs > WINDOW_MS) this.samples.shift();
    if (!this.samples.length) return 0;
    const sorted = this.samples.map((s) => s.latenessMs).sort((a, b) => a - b);
    const covered = sorted[Math.min(sorted.length - 1, Math.ceil(COVERED * sorted.length) - 1)];
    return Math.min(MAX_DELAY_MS, covered + MARGIN_MS);
  }
}
