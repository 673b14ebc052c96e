// @ts-check
/**
 * @file The audio jitter buffer: decoded 20 ms audio frames go in, in whatever order and
 * rhythm the network delivered them; the playout clock takes them out in frame order,
 * one per tick.
 *
 * It waits until `target` frames are queued before it starts (or restarts after running
 * dry), so ordinary network jitter does not make audio stutter. A frame that is missing
 * when its turn comes is reported as a gap (the player plays silence for it) and a frame
 * that arrives after its turn is dropped as late. The target grows by one frame after
 * each underrun and shrinks back after a long stretch without one, so the delay follows
 * the network. A target only sets where playout starts; what sets the delay is the queue
 * that stands once playing, so when the queue's lowest level over a second stays above
 * the target (a rebuffer at a higher target that has since shrunk, a burst), one frame
 * is dropped, a second at a time, until it is back. If the queue grows well past the
 * target (a burst after a stall), the oldest frames are skipped at once. The queue never
 * holds more than `capacity` frames.
 *
 * Generic over the item type and free of browser APIs: Node's test runner covers it.
 */

/**
 * Default frames to hold before playing: 2 × 20 ms = 40 ms of delay. Three (60 ms) left the
 * sound 60 ms behind a picture shown in 6 ms on a clean path; the target grows after an
 * underrun anyway, so a jittery path still gets its cushion.
 */
export const DEFAULT_TARGET_FRAMES = 2;
/** Most the target may grow to after repeated underruns (200 ms). */
export const MAX_TARGET_FRAMES = 10;
/** Hard cap on frames held (1 s): a sender that floods never grows memory past this. */
export const DEFAULT_CAPACITY = 50;
/**
 * Ticks without an underrun after which the target shrinks by one frame (4 s): one busy
 * moment must not keep the sound 20 ms later (and the picture, held for lip sync, with it)
 * for long.
 */
const STABLE_TICKS_TO_SHRINK = 200;

/** Ticks over which the queue's lowest level is watched (1 s). */
const LEVEL_WINDOW_TICKS = 50;

/**
 * @template T
 * @typedef {{kind: "frame", seq: number, item: T} | {kind: "gap", seq: number}} Playout
 */

/** @template T */
export class JitterBuffer {
  /**
   * @param {{target?: number, minTarget?: number, maxTarget?: number, capacity?: number}} [options]
   */
  constructor(options = {}) {
    this.minTarget = Math.max(1, options.minTarget ?? Math.min(DEFAULT_TARGET_FRAMES, options.target ?? DEFAULT_TARGET_FRAMES));
    this.maxTarget = options.maxTarget ?? MAX_TARGET_FRAMES;
    this.target = Math.min(this.maxTarget, Math.max(this.minTarget, options.target ?? this.minTarget));
    this.capacity = Math.max(this.maxTarget * 2, options.capacity ?? DEFAULT_CAPACITY);
    /** @type {Map<number, T>} */
    this.frames = new Map();
    /** Sequence number to play next; null before the first frame. @type {number | null} */
    this.next = null;
    this.playing = false;
    this.stableTicks = 0;
    /** The queue's lowest level over the current window, and the window's ticks so far. */
    this.windowMin = Infinity;
    this.windowTicks = 0;
    this.stats = { pushed: 0, played: 0, late: 0, duplicate: 0, gaps: 0, underruns: 0, skipped: 0, overflow: 0, trimmed: 0 };
  }

  /** Frames currently held. */
  get depth() {
    return this.frames.size;
  }

  /** Forgets everything (a new partner). Stats are kept. */
  reset() {
    this.frames.clear();
    this.next = null;
    this.playing = false;
    this.stableTicks = 0;
    this.windowMin = Infinity;
    this.windowTicks = 0;
    this.target = this.minTarget;
  }

  /** @returns {number} the lowest sequence number held (the buffer must not be empty) */
  oldest() {
    let min = Infinity;
    for (const k of this.frames.keys()) if (k < min) min = k;
    return min;
  }

  /**
   * Adds a decoded frame.
   * @param {number} seq the frame's sequence number (consecutive frames differ by one)
   * @param {T} item
   * @returns {"queued" | "late" | "duplicate"}
   */
  push(seq, item) {
    if (this.next !== null && seq < this.next) {
      this.stats.late++;
      return "late";
    }
    if (this.frames.has(seq)) {
      this.stats.duplicate++;
      return "duplicate";
    }
    this.frames.set(seq, item);
    this.stats.pushed++;
    while (this.frames.size > this.capacity) {
      const oldest = this.oldest();
      this.frames.delete(oldest);
      this.next = oldest + 1;
      this.stats.overflow++;
    }
    return "queued";
  }

  /**
   * Takes what should be played for the next 20 ms.
   * @returns {Playout<T> | null} null while (re)buffering: play nothing, the player restarts later
   */
  pop() {
    if (!this.playing) {
      if (this.frames.size < this.target) return null;
      this.playing = true;
      const oldest = this.oldest();
      if (this.next === null || this.next < oldest) this.next = oldest;
    }
    if (this.frames.size === 0) {
      // Ran dry: rebuffer, with a little more delay than before.
      this.playing = false;
      this.stats.underruns++;
      this.stableTicks = 0;
      this.target = Math.min(this.maxTarget, this.target + 1);
      return null;
    }
    if (++this.stableTicks >= STABLE_TICKS_TO_SHRINK) {
      this.stableTicks = 0;
      this.target = Math.max(this.minTarget, this.target - 1);
    }
    // The standing queue: more than the target for a whole second is delay nobody needs.
    this.windowMin = Math.min(this.windowMin, this.frames.size);
    if (++this.windowTicks >= LEVEL_WINDOW_TICKS) {
      const standing = this.windowMin > this.target;
      this.windowTicks = 0;
      this.windowMin = Infinity;
      if (standing) {
        const oldest = this.oldest();
        this.frames.delete(oldest);
        this.stats.trimmed++;
        // Still not empty: the lowest level included this tick's, above a target of one at least.
        this.next = Math.max(/** @type {number} */ (this.next), oldest + 1);
      }
    }
    const next = /** @type {number} */ (this.next);
    // Far more queued than the target: a burst after a stall. Skip the oldest frame so
    // the delay comes back down instead of staying high for the rest of the call.
    if (this.frames.size > this.target * 2 + 2) {
      const oldest = this.oldest();
      this.frames.delete(oldest);
      this.stats.skipped++;
      this.next = Math.max(next, oldest + 1);
      return this.pop();
    }
    this.next = next + 1;
    const item = this.frames.get(next);
    if (item === undefined) {
      this.stats.gaps++;
      return { kind: "gap", seq: next };
    }
    this.frames.delete(next);
    this.stats.played++;
    return { kind: "frame", seq: next, item };
  }
}
