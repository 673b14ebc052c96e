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
 * has room to spare. A worker whose own timers run late (LAG_OVERUSE_MS) is short of CPU
 * too, however quick each encode is. Decisions come at most once per CHECK_MS; going down is quick
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
/**
 * The media worker's timers firing this late on average over a check, ms: the CPU is short
 * even though each encode is quick (every stage waits for its turn, the camera's frames
 * come late and fewer). Seen with the browser held to 0.2 of a core: the encoder kept up
 * (5 ms a frame at 640×478) while the frame rate fell to 12 and the stats blamed the
 * network. A healthy worker, even on a busy two-core machine, runs its timers a few ms late.
 */
export const LAG_OVERUSE_MS = 20;
/** Below this mean lateness the CPU shows no sign of being short. */
export const LAG_UNDERUSE_MS = 5;
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
    /** Lateness of the worker's timers in the current check: sum and count. */
    this.lagSum = 0;
    this.lagCount = 0;
    /** Mean lateness over the last check, ms. */
    this.lagMs = 0;
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

  /**
   * One of the worker's periodic timers fired `lagMs` after it was due.
   * @param {number} lagMs @param {number} nowMs
   */
  onLag(lagMs, nowMs) {
    this.lagSum += Math.max(0, lagMs);
    this.lagCount++;
    this.evaluate(nowMs);
  }

  /** @param {number} nowMs */
  evaluate(nowMs) {
    if (this.checkStart === null) this.checkStart = nowMs;
    if (nowMs - this.checkStart < CHECK_MS) return;
    const usage = this.encodeMs / (1000 / LADDER[this.step].fps);
    this.lagMs = this.lagCount > 0 ? this.lagSum / this.lagCount : 0;
    const overused = usage > OVERUSE || this.drops >= OVERUSE_DROPS || this.lagMs > LAG_OVERUSE_MS;
    const underused = usage < UNDERUSE && this.drops === 0 && this.lagMs < LAG_UNDERUSE_MS;
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
    this.lagSum = 0;
    this.lagCount = 0;
  }
}
