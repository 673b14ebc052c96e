// @ts-check
/**
 * @file The sender's CPU adaptation: from how long each frame takes to encode and how
 * often the encoder is too far behind to take a frame, step resolution and frame rate down
 * when encoding cannot keep up and back up when it can — as libwebrtc's overuse detector
 * does, and reporting why the way `qualityLimitationReason` does ("cpu", "bandwidth",
 * "none").
 *
 * Usage is encode time over the frame interval of the current step: above OVERUSE the
 * encoder cannot keep up (every frame would wait for the one before it), below UNDERUSE it
 * has room to spare. Decisions come at most once per CHECK_MS; going down is quick
 * (DOWN_HOLDOFF_MS), going up is slow (UP_HOLDOFF_MS), so the picture does not pump.
 *
 * No browser API here: Node's test runner covers it. Times are milliseconds, passed in.
 */

/** Resolution scale and frame rate, from full quality down. */
export const LADDER = Object.freeze([
  { scale: 1, fps: 30 },
  { scale: 0.75, fps: 30 },
  { scale: 0.5, fps: 30 },
  { scale: 0.5, fps: 20 },
  { scale: 0.5, fps: 15 },
  { scale: 0.25, fps: 15 },
]);
/** Encode time above this share of the frame interval: overused. */
export const OVERUSE = 0.85;
/** Below this share (and no drops): room to go back up a step. */
export const UNDERUSE = 0.4;
/** Frames dropped because the encoder was behind, within one check, that count as overuse. */
export const OVERUSE_DROPS = 3;
const CHECK_MS = 1000;
const DOWN_HOLDOFF_MS = 1500;
const UP_HOLDOFF_MS = 8000;
/** Weight of each new encode time in the moving average. */
const ALPHA = 0.1;
/** Encoded-frame times kept for the frame-rate figure (one second at 30 fps, plus room). */
const MAX_FRAME_TIMES = 64;

export class EncoderLoad {
  constructor() {
    this.step = 0;
    /** Moving average of encode time, ms. */
    this.encodeMs = 0;
    this.samples = 0;
    this.drops = 0;
    /** @type {number | null} */
    this.checkStart = null;
    this.lastChangeMs = -Infinity;
    /** Set by the sender when the bitrate controller, not the CPU, holds it back. */
    this.bandwidthLimited = false;
    /** @type {number[]} */
    this.frameTimes = [];
    this.stats = { stepsDown: 0, stepsUp: 0 };
  }

  get scale() {
    return LADDER[this.step].scale;
  }

  /** Shortest interval between frames the current step allows, with slack for capture jitter. */
  get minIntervalMs() {
    const fps = LADDER[this.step].fps;
    return fps >= 30 ? 0 : (1000 / fps) * 0.85;
  }

  /** @returns {"cpu" | "bandwidth" | "none"} */
  get limitation() {
    if (this.step > 0) return "cpu";
    return this.bandwidthLimited ? "bandwidth" : "none";
  }

  /** Encoded frames per second over the last second. @param {number} nowMs */
  fps(nowMs) {
    return this.frameTimes.filter((t) => nowMs - t <= 1000).length;
  }

  /**
   * One frame came out of the encoder.
   * @param {number} encodeMs from `encode()` to its output
   * @param {number} nowMs
   */
  onEncoded(encodeMs, nowMs) {
    this.encodeMs = this.samples === 0 ? encodeMs : this.encodeMs + ALPHA * (encodeMs - this.encodeMs);
    this.samples++;
    this.frameTimes.push(nowMs);
    if (this.frameTimes.length > MAX_FRAME_TIMES) this.frameTimes.shift();
    this.evaluate(nowMs);
  }

  /** A camera frame was dropped because the encoder was still busy. @param {number} nowMs */
  onDropped(nowMs) {
    this.drops++;
    this.evaluate(nowMs);
  }

  /** @param {number} nowMs */
  evaluate(nowMs) {
    if (this.checkStart === null) this.checkStart = nowMs;
    if (nowMs - this.checkStart < CHECK_MS) return;
    const usage = this.encodeMs / (1000 / LADDER[this.step].fps);
    const overused = usage > OVERUSE || this.drops >= OVERUSE_DROPS;
    const underused = usage < UNDERUSE && this.drops === 0;
    if (overused && this.step < LADDER.length - 1 && nowMs - this.lastChangeMs >= DOWN_HOLDOFF_MS) {
      this.step++;
      this.lastChangeMs = nowMs;
      this.stats.stepsDown++;
    } else if (underused && this.step > 0 && nowMs - this.lastChangeMs >= UP_HOLDOFF_MS) {
      this.step--;
      this.lastChangeMs = nowMs;
      this.stats.stepsUp++;
    }
    this.checkStart = nowMs;
    this.drops = 0;
  }
}
