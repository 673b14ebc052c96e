// @ts-check
/**
 * @file Puts whole video frames back in frame order for the decoder, and decides when a
 * missing frame is worth waiting for (and asking again with a `Nack`) and when to give up.
 *
 * A decoder must see frames in the order they were encoded: a frame decoded after a later
 * one breaks the picture. So complete frames wait here until every frame before them is
 * decoded or known to be unneeded. When a frame is missing:
 * - if the frame waiting behind the gap does not depend on it (a lost top temporal layer),
 *   or a keyframe waits anywhere behind it, the gap is skipped at once: nothing is held up;
 * - otherwise a `Nack` goes out for the missing frames (once each), and the frames behind
 *   wait up to `waitMs` (about two round trips) for the resent datagrams;
 * - past that, the gap is skipped: what depends on it is refused by reference.js, which
 *   asks for a keyframe as before.
 * A frame arriving for a number already decoded or skipped is late and dropped.
 *
 * No browser API here: Node's test runner covers it. Times are milliseconds, passed in.
 */

/** Complete frames held at most; past it the gap is given up at once (the path is worse than any wait helps). */
export const MAX_HELD = 32;

/**
 * @typedef {object} OrderedFrame
 * @property {number} frame
 * @property {boolean} keyframe
 * @property {number} refFrame
 */

/**
 * @template {OrderedFrame} F
 * @typedef {object} Poll
 * @property {F[]} release frames to decode now, in order
 * @property {number[]} nack frame numbers to ask for again now
 * @property {number} skipped frames given up (never to be decoded)
 */

/** @template {OrderedFrame} F */
export class VideoOrder {
  constructor() {
    /** @type {Map<number, F>} */
    this.held = new Map();
    /** The next frame number to decode, or null before the first frame of a pairing. @type {number | null} */
    this.next = null;
    /** When the current gap was first seen, or null. @type {number | null} */
    this.gapSince = null;
    /** Frames already asked for again. @type {Set<number>} */
    this.nacked = new Set();
    /** nacks: frames asked for again, here or as soon as the loss showed (markNacked);
     * gapsRecovered: of those, the ones that came in time to be decoded. */
    this.stats = { held: 0, gapsSkipped: 0, gapsRecovered: 0, gapsGivenUp: 0, late: 0, nacks: 0 };
  }

  /** A new pairing (or the decoder was reset): nothing held, numbering starts again. */
  reset() {
    this.held.clear();
    this.next = null;
    this.gapSince = null;
    this.nacked.clear();
  }

  /**
   * A frame was asked for again already (as soon as its loss showed): the gap's own
   * `Nack` is not sent a second time.
   * @param {number} frame
   */
  markNacked(frame) {
    if (this.next !== null && frame < this.next) return;
    if (!this.nacked.has(frame)) this.stats.nacks++;
    this.nacked.add(frame);
  }

  /**
   * A whole frame out of the reassembler.
   * @param {F} f
   * @returns {boolean} false when it is late (its number was decoded or skipped already)
   */
  push(f) {
    if (this.next !== null && f.frame < this.next) {
      this.stats.late++;
      return false;
    }
    // Asked for again (by the order stage or as soon as the reassembler saw the loss) and here in time.
    if (this.nacked.has(f.frame) && !this.held.has(f.frame)) this.stats.gapsRecovered++;
    this.held.set(f.frame, f);
    this.stats.held = Math.max(this.stats.held, this.held.size);
    return true;
  }

  /**
   * What may be decoded now.
   * @param {number} nowMs
   * @param {number} waitMs how long a gap that frames depend on may hold them
   * @param {(f: F) => boolean} decodable whether a frame's reference is decoded (reference.js)
   * @returns {Poll<F>}
   */
  poll(nowMs, waitMs, decodable) {
    /** @type {Poll<F>} */
    const out = { release: [], nack: [], skipped: 0 };
    /** Frames released in this poll: their references count as decoded for what follows. */
    const released = new Set();
    const ready = (/** @type {F} */ f) => f.keyframe || released.has(f.refFrame) || decodable(f);
    for (;;) {
      if (this.held.size === 0) break;
      if (this.next === null) this.next = Math.min(...this.held.keys());
      const now = this.held.get(this.next);
      if (now) {
        this.held.delete(this.next);
        out.release.push(now);
        released.add(now.frame);
        this.next = this.next + 1;
        this.gapSince = null;
        continue;
      }
      // `next` is missing, and something behind it is here. A keyframe anywhere behind the
      // gap makes the wait pointless: go to it (what lies between is older anyway).
      const keys = [...this.held.values()].filter((f) => f.keyframe).map((f) => f.frame);
      const later = /** @type {F} */ (this.held.get(keys.length ? Math.min(...keys) : Math.min(...this.held.keys())));
      if (later.keyframe) for (const n of this.held.keys()) if (n < later.frame) this.held.delete(n);
      const giveUp = this.held.size > MAX_HELD || (this.gapSince !== null && nowMs - this.gapSince >= waitMs);
      if (ready(later) || giveUp) {
        out.skipped += later.frame - this.next;
        if (ready(later)) this.stats.gapsSkipped++;
        else this.stats.gapsGivenUp++;
        this.next = later.frame;
        this.gapSince = null;
        continue;
      }
      if (this.gapSince === null) this.gapSince = nowMs;
      for (let n = this.next; n < later.frame && out.nack.length < 8; n++) {
        if (this.nacked.has(n)) continue;
        this.nacked.add(n);
        out.nack.push(n);
      }
      this.stats.nacks += out.nack.length;
      break;
    }
    if (this.nacked.size > 256) {
      // Only recent gaps matter: drop what is behind the decoder.
      for (const n of this.nacked) if (this.next !== null && n < this.next) this.nacked.delete(n);
    }
    return out;
  }
}
