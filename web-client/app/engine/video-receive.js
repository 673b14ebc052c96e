// @ts-check
/**
 * @file Reassembled video frames → `VideoDecoder` → the partner's display (engine/
 * video-display.js: a video track, or a canvas), in the worker.
 *
 * Loss never shows a broken picture: a frame goes to the decoder only if it is a keyframe
 * or its reference was decoded (reference.js); otherwise it is dropped and a keyframe is
 * asked for (rate-limited by the caller). Delay is bounded: a decoder that falls behind
 * (`decodeQueueSize`) skips to the next keyframe; a decoded frame later than the target
 * (lateness.js) is not shown; and only the newest decoded frame is handed to the display,
 * one at a time, however many came out together. The decoder is configured from
 * `Matched.recv_codec` before the first keyframe arrives and stays configured across
 * partners while the codec is the same; a keyframe's in-band description reconfigures it
 * only when it differs. Output is shown from the first keyframe of the current pairing
 * that comes out of the decoder: frames still inside it from the last partner are not.
 * After a gap recovered by a resend, decoded frames are held to an even schedule for a
 * while (wire/playout.js), so the losses show as a little more delay, not as freezes.
 */

import { unwrapKeyframe } from "../wire/keyframe.js";
import { ReferenceTracker } from "../wire/reference.js";
import { syncHoldMs } from "../wire/av-sync.js";
import { Lateness } from "../wire/lateness.js";
import { PlayoutDelay } from "../wire/playout.js";
import { epochMs } from "../wire/clock.js";
import { codecFamily, codecString } from "../wire/codecs.js";
import { framePixels } from "./video-display.js";

/** Frames waiting in the decoder beyond which delta frames are skipped until a keyframe (each is a frame interval of delay). */
const MAX_DECODE_QUEUE = 3;
/** Capture-to-paint latency samples kept for the figures. */
const MAX_LATENCY_SAMPLES = 1000;
/** Paint times kept (for the tests: frames painted while the page's main thread was blocked). */
const MAX_PAINT_TIMES = 600;
/** Decoder errors after which the codec counts as failed on this machine. */
const FAILURES_BEFORE_GIVING_UP = 3;
/** Paired this long with nothing decoded (or nothing since): ask for a keyframe again, whatever was lost. */
const STALL_MS = 1000;
/** Decoded frames held for their playout time at most (a third of a second at 30 fps). */
const MAX_WAITING = 10;
/** Keyframes of one pairing remembered while waiting for the first of them to come out of the decoder. */
const MAX_PENDING_KEYS = 16;

export class VideoReceiver {
  /**
   * @param {import("./video-display.js").VideoDisplay} display
   * @param {object} hooks
   * @param {() => void} hooks.requestKeyframe ask the partner for a keyframe (the caller rate-limits)
   * @param {(info: {latencyMs: number, width: number, height: number}) => void} hooks.onPainted
   * @param {() => void} hooks.onDecoded the first decoded frame of a pairing is timed
   * @param {(codec: string) => void} hooks.onCodecFailed
   * @param {() => number | null} [hooks.audioDelayMs] the partner's sound's capture-to-playout delay now (for lip sync)
   * @param {() => boolean} [hooks.inspecting] test hook: whether each picture shown is checked now
   * @param {(pixels: ImageData) => boolean} [hooks.inspect] test hook: checks a picture about to be shown
   */
  constructor(display, hooks) {
    this.display = display;
    this.hooks = hooks;
    /** @type {VideoDecoder | null} */
    this.decoder = null;
    /** @type {string | null} */
    this.codec = null;
    /** @type {string | null} the in-band description the decoder was configured from (null: from Matched) */
    this.description = null;
    this.refs = new ReferenceTracker();
    this.lateness = new Lateness();
    this.playout = new PlayoutDelay();
    /** Capture stamps of frames that waited behind a recovered gap (their lateness sets the hold). @type {Set<number>} */
    this.recovered = new Set();
    /** Decoded frames held until their playout time, oldest first. @type {{frame: VideoFrame, dueMs: number}[]} */
    this.waiting = [];
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.waitTimer = null;
    /** Timestamps of this pairing's keyframes sent to the decoder: output is shown from the first of them to come out. @type {Set<number>} */
    this.keyTimestamps = new Set();
    this.accepting = false;
    /** When a frame of this pairing last came out of the decoder (performance.now()), or null. @type {number | null} */
    this.lastDecodedAt = null;
    /** When the current pairing began (performance.now()), or null while unpaired. @type {number | null} */
    this.pairedAt = null;
    this.failures = 0;
    /** The newest decoded frame not yet painted. @type {VideoFrame | null} */
    this.latest = null;
    this.paintScheduled = false;
    /** A frame is being handed to the display (one at a time: a newer frame waits in `latest`). */
    this.painting = false;
    /** Bumped when the picture must go blank: a frame inspected meanwhile is not shown. */
    this.generation = 0;
    /** Buffers for the test hook's pixel copy. @type {{planes: Uint8Array, pixels: ImageData | null}} */
    this.scratch = { planes: new Uint8Array(0), pixels: null };
    const channel = new MessageChannel();
    channel.port1.onmessage = () => this.paint();
    this.paintPort = channel.port2;
    this.stats = { framesDecoded: 0, framesPainted: 0, framesDropped: 0, undecodable: 0, droppedLate: 0, droppedQueue: 0, held: 0, playoutDelayMs: 0, syncHoldMs: 0, notPainted: 0, decodeErrors: 0, keyframes: 0, stalls: 0, width: 0, height: 0, inspected: 0, inspectFailed: 0 };
    /** @type {number[]} */
    this.latencies = [];
    /** Epoch ms of recent paints. @type {number[]} */
    this.paintTimes = [];
  }

  /**
   * A new pairing: nothing from the last partner is shown, nothing is decoded before the
   * new partner's keyframe. The decoder is kept when the codec is the same.
   * @param {import("../wire/protocol.js").VideoCodec | null} family what the partner will send
   */
  newPairing(family) {
    this.unpair();
    this.pairedAt = performance.now();
    this.lateness.reset();
    if (family !== null && codecFamily(this.codec ?? "") !== family) this.configure({ codec: codecString(family), optimizeForLatency: true }, null);
  }

  /** Nobody: stop showing anything. */
  unpair() {
    this.generation++;
    this.refs.reset();
    this.accepting = false;
    this.keyTimestamps.clear();
    this.lastDecodedAt = null;
    this.pairedAt = null;
    this.latest?.close();
    this.latest = null;
    for (const w of this.waiting) w.frame.close();
    this.waiting = [];
    if (this.waitTimer !== null) clearTimeout(this.waitTimer);
    this.waitTimer = null;
    this.recovered.clear();
    this.playout.reset();
    this.display.blank();
  }

  /**
   * Whether the picture has stalled: paired for a while and nothing decoded for as long (a
   * lost keyframe and a lost request, a decoder that dropped its output). The caller then
   * asks for a keyframe, so no loss leaves the picture frozen for good.
   * @param {number} now performance.now()
   */
  stalled(now) {
    if (this.pairedAt === null || now - this.pairedAt < STALL_MS) return false;
    return this.lastDecodedAt === null || now - this.lastDecodedAt >= STALL_MS;
  }

  /** @param {VideoDecoderConfig} config @param {string | null} description @returns {boolean} */
  configure(config, description) {
    try {
      if (!this.decoder || this.decoder.state === "closed") {
        this.decoder = new VideoDecoder({ output: (f) => this.onOutput(f), error: (e) => this.onError(e) });
      }
      this.decoder.configure(config);
    } catch (e) {
      this.onError(e, config.codec);
      return false;
    }
    this.codec = config.codec;
    this.description = description;
    this.refs.reset();
    return true;
  }

  closeDecoder() {
    const dec = this.decoder;
    this.decoder = null;
    this.codec = null;
    this.description = null;
    if (dec && dec.state !== "closed") {
      try {
        dec.close();
      } catch {
        // Already closed by an error.
      }
    }
  }

  /**
   * @param {import("../wire/fragment.js").Frame} frame
   * @param {number} [burst] frames handed over together with this one (the order stage
   *   releasing what waited behind a recovered gap): the decoder may queue that many more
   *   before the delay bound skips to a keyframe, since only the newest of them is shown
   */
  push(frame, burst = 1) {
    let data = frame.data;
    if (frame.keyframe) {
      const parsed = unwrapKeyframe(frame.data);
      if (!parsed) {
        this.stats.framesDropped++;
        return;
      }
      data = parsed.data;
      const sameCodec = !!this.decoder && this.decoder.state === "configured" && this.codec === parsed.config.codec;
      if (sameCodec && this.description === null && !parsed.config.colorSpace) {
        // Configured from Matched before this keyframe and nothing to add: keep it.
        this.description = parsed.description;
      } else if (!sameCodec || parsed.description !== this.description) {
        /** @type {VideoDecoderConfig} */
        const config = { codec: parsed.config.codec, optimizeForLatency: true };
        if (parsed.config.colorSpace) config.colorSpace = /** @type {VideoColorSpaceInit} */ (parsed.config.colorSpace);
        if (!this.configure(config, parsed.description)) return;
      }
      if (!this.accepting && this.keyTimestamps.size < MAX_PENDING_KEYS) this.keyTimestamps.add(Number(frame.captureUs));
      this.stats.keyframes++;
    }
    const dec = this.decoder;
    if (!dec || dec.state !== "configured" || !this.refs.accept(frame)) {
      this.stats.undecodable++;
      this.hooks.requestKeyframe();
      return;
    }
    if (!frame.keyframe && dec.decodeQueueSize > MAX_DECODE_QUEUE + burst - 1) {
      // The decoder cannot keep up: every frame queued is shown later. Skip to a keyframe.
      this.stats.droppedQueue++;
      this.refs.reset();
      this.hooks.requestKeyframe();
      return;
    }
    if (burst > 1) {
      if (this.recovered.size > 64) this.recovered.clear();
      this.recovered.add(Number(frame.captureUs));
    }
    try {
      dec.decode(new EncodedVideoChunk({ type: frame.keyframe ? "key" : "delta", timestamp: Number(frame.captureUs), data }));
    } catch (e) {
      this.refs.forget(frame.frame);
      this.onError(e);
    }
  }

  /** @param {unknown} e @param {string | null} [codec] the codec that failed (default: the configured one) */
  onError(e, codec = this.codec) {
    console.warn("duet: video decoder failed", e);
    this.stats.decodeErrors++;
    this.closeDecoder();
    this.refs.reset();
    this.keyTimestamps.clear();
    this.failures++;
    if (this.failures >= FAILURES_BEFORE_GIVING_UP && codec) {
      this.failures = 0;
      this.hooks.onCodecFailed(codec);
    }
    this.hooks.requestKeyframe();
  }

  /** @param {VideoFrame} frame */
  onOutput(frame) {
    if (!this.accepting) {
      if (!this.keyTimestamps.has(frame.timestamp)) {
        frame.close(); // still the last partner's, or before this pairing's first keyframe
        return;
      }
      this.accepting = true;
      this.keyTimestamps.clear();
    }
    this.lastDecodedAt = performance.now();
    this.failures = 0;
    this.stats.framesDecoded++;
    if (this.stats.framesDecoded === 1 || this.latest === null) this.hooks.onDecoded();
    const now = performance.now();
    const transitMs = epochMs() - frame.timestamp / 1000;
    const late = this.lateness.observe(transitMs, now);
    if (this.recovered.delete(frame.timestamp)) this.playout.onRecovered(late, now);
    const hold = this.playout.delayMs(now);
    this.stats.playoutDelayMs = hold;
    if (this.lateness.tooLate(late - hold) && this.latest === null && this.waiting.length === 0 && this.stats.framesPainted > 0) {
      // Later than the target: showing it would show the past. The next one may be on time.
      this.stats.droppedLate++;
      frame.close();
      return;
    }
    // Lip sync: a picture far ahead of the partner's voice waits for it (wire/av-sync.js).
    const sync = syncHoldMs(this.hooks.audioDelayMs?.() ?? null, transitMs);
    this.stats.syncHoldMs = Math.round(sync);
    const wait = Math.max(hold - late, sync);
    if (wait > 1) {
      // Shown at its place in the schedule, so frames that waited for a resend keep pace.
      this.stats.held++;
      this.waiting.push({ frame, dueMs: now + wait });
      if (this.waiting.length > MAX_WAITING) /** @type {{frame: VideoFrame}} */ (this.waiting.shift()).frame.close();
      this.scheduleWaiting(now);
      return;
    }
    this.show(frame);
  }

  /** @param {number} now */
  scheduleWaiting(now) {
    if (this.waitTimer !== null || this.waiting.length === 0) return;
    const next = Math.min(...this.waiting.map((w) => w.dueMs));
    this.waitTimer = setTimeout(() => {
      this.waitTimer = null;
      const t = performance.now();
      const due = this.waiting.filter((w) => w.dueMs <= t + 1);
      this.waiting = this.waiting.filter((w) => w.dueMs > t + 1);
      // Only the newest of those due is worth showing.
      due.sort((a, b) => a.frame.timestamp - b.frame.timestamp);
      const newest = due.pop();
      for (const w of due) {
        this.stats.notPainted++;
        w.frame.close();
      }
      if (newest) this.show(newest.frame);
      this.scheduleWaiting(t);
    }, Math.max(0, next - now));
  }

  /** The newest decoded frame goes to the display at the next paint. @param {VideoFrame} frame */
  show(frame) {
    if (this.latest) {
      // Two frames came out before a paint: only the newest is worth showing.
      this.stats.notPainted++;
      this.latest.close();
    }
    this.latest = frame;
    if (!this.paintScheduled) {
      this.paintScheduled = true;
      this.paintPort.postMessage(null);
    }
  }

  paint() {
    this.paintScheduled = false;
    if (this.painting) return; // the hand-over under way schedules the next paint when it ends
    const frame = this.latest;
    this.latest = null;
    if (!frame) return;
    this.painting = true;
    this.draw(frame, this.generation)
      .catch((e) => console.warn("duet: could not show a video frame", e))
      .finally(() => {
        this.painting = false;
        if (this.latest && !this.paintScheduled) {
          this.paintScheduled = true;
          this.paintPort.postMessage(null);
        }
      });
  }

  /** Hands the frame (owned from here) to the display. @param {VideoFrame} frame @param {number} generation */
  async draw(frame, generation) {
    const w = frame.visibleRect?.width ?? frame.displayWidth;
    const h = frame.visibleRect?.height ?? frame.displayHeight;
    const timestampUs = frame.timestamp;
    if (this.hooks.inspect && this.hooks.inspecting?.()) {
      // Test hook: the very pixels about to be shown, checked before the hand-over.
      let pixels;
      try {
        pixels = await framePixels(frame, this.scratch);
      } catch (e) {
        frame.close();
        throw e;
      }
      if (generation !== this.generation) {
        frame.close(); // the partner changed meanwhile: stay blank
        return;
      }
      this.stats.inspected++;
      if (!this.hooks.inspect(pixels)) this.stats.inspectFailed++;
    }
    await this.display.show(frame);
    this.stats.framesPainted++;
    this.stats.width = w;
    this.stats.height = h;
    const now = epochMs();
    const latencyMs = now - timestampUs / 1000;
    if (this.latencies.length >= MAX_LATENCY_SAMPLES) this.latencies.shift();
    this.latencies.push(latencyMs);
    if (this.paintTimes.length >= MAX_PAINT_TIMES) this.paintTimes.shift();
    this.paintTimes.push(now);
    this.hooks.onPainted({ latencyMs, width: w, height: h });
  }
}
