// @ts-check
/**
 * @file How late a received frame is, and whether it is too late to show.
 *
 * Sender and receiver clocks need not agree, so lateness is measured against the path
 * itself: transit (arrival on our clock minus capture on theirs) above the lowest transit
 * seen in the last WINDOW_MS. A frame whose lateness passes the target is dropped rather
 * than shown late: the picture gets less fluid, never later. The base follows a clock
 * drift or a new route because it is the minimum over a sliding window.
 *
 * No browser API here: Node's test runner covers it.
 */

/** The base delay is the lowest transit over this long (long enough to see an empty queue). */
export const WINDOW_MS = 5000;
/** Samples of the window's minimum kept, one per slot. */
const SLOTS = 10;
/** Default: a frame more than this far behind the path's base delay is not shown. */
export const DEFAULT_TARGET_MS = 150;

export class Lateness {
  /** @param {number} [targetMs] */
  constructor(targetMs = DEFAULT_TARGET_MS) {
    this.targetMs = targetMs;
    /** Lowest transit per slot of WINDOW_MS / SLOTS, newest last. @type {{start: number, min: number}[]} */
    this.slots = [];
  }

  reset() {
    this.slots = [];
  }

  /**
   * Records a frame's transit and returns how late it is, in ms (0 for the fastest).
   * @param {number} transitMs arrival (or now) minus capture, any fixed clock offset included
   * @param {number} nowMs a monotonic clock
   */
  observe(transitMs, nowMs) {
    const slotMs = WINDOW_MS / SLOTS;
    const last = this.slots[this.slots.length - 1];
    if (!last || nowMs - last.start >= slotMs) {
      this.slots.push({ start: nowMs, min: transitMs });
      while (this.slots.length > SLOTS) this.slots.shift();
    } else if (transitMs < last.min) {
      last.min = transitMs;
    }
    let base = Infinity;
    for (const s of this.slots) base = Math.min(base, s.min);
    return Math.max(0, transitMs - base);
  }

  /** @param {number} latenessMs from observe @returns {boolean} */
  tooLate(latenessMs) {
    return latenessMs > this.targetMs;
  }
}
