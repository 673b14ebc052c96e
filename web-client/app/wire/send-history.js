// @ts-check
/**
 * @file The sender's short memory of the video datagrams it sent, so a receiver that lost
 * some can have exactly those again (`Nack`, relayed as `PeerNack`) instead of waiting for a
 * new keyframe. Bounded by frames, bytes and age; each frame is resent a limited number of
 * times, so a hostile or confused partner cannot turn one frame into a flood.
 *
 * No browser API here: Node's test runner covers it. Times are milliseconds, passed in.
 */

/** Frames remembered (about three seconds at 30 fps). */
export const MAX_FRAMES = 90;
/** Bytes remembered at most (a few keyframes). */
export const MAX_BYTES = 2 * 1024 * 1024;
/** A frame older than this is past any use to the receiver (its wait for it is shorter). */
export const MAX_AGE_MS = 1000;
/** Times one frame's datagrams may be sent again. */
export const MAX_RESENDS = 2;

export class SendHistory {
  constructor() {
    /** @type {Map<number, {datagrams: Uint8Array[], bytes: number, atMs: number, resends: number}>} */
    this.frames = new Map();
    this.bytes = 0;
    this.stats = { resent: 0, refused: 0 };
  }

  /** A new pairing: nothing sent before it is ever sent again. */
  reset() {
    this.frames.clear();
    this.bytes = 0;
  }

  /**
   * @param {number} frame the frame number the datagrams carry
   * @param {Uint8Array[]} datagrams in fragment order
   * @param {number} nowMs
   */
  record(frame, datagrams, nowMs) {
    let bytes = 0;
    for (const d of datagrams) bytes += d.length;
    if (bytes > MAX_BYTES) return;
    this.forget(frame);
    this.frames.set(frame, { datagrams, bytes, atMs: nowMs, resends: 0 });
    this.bytes += bytes;
    // Oldest first (a Map iterates in insertion order).
    for (const [n, f] of this.frames) {
      if (this.frames.size <= MAX_FRAMES && this.bytes <= MAX_BYTES && nowMs - f.atMs <= MAX_AGE_MS) break;
      this.forget(n);
    }
  }

  /** @param {number} frame */
  forget(frame) {
    const f = this.frames.get(frame);
    if (!f) return;
    this.bytes -= f.bytes;
    this.frames.delete(frame);
  }

  /**
   * The datagrams to send again for a `Nack`: the fragments named (all of them when the list
   * is empty: the receiver saw none), or nothing when the frame is unknown, too old or
   * already resent MAX_RESENDS times.
   * @param {number} frame
   * @param {number[]} fragments
   * @param {number} nowMs
   * @returns {Uint8Array[]}
   */
  take(frame, fragments, nowMs) {
    const f = this.frames.get(frame);
    if (!f || nowMs - f.atMs > MAX_AGE_MS || f.resends >= MAX_RESENDS) {
      this.stats.refused++;
      return [];
    }
    f.resends++;
    const out = fragments.length === 0 ? f.datagrams : [...new Set(fragments)].filter((i) => i < f.datagrams.length).map((i) => f.datagrams[i]);
    this.stats.resent += out.length;
    return out;
  }
}
