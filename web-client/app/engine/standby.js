// @ts-check
/**
 * @file A keyframe of the person's camera encoded ahead of time, so the next partner sees
 * their face the moment `Matched` arrives instead of after a keyframe encode.
 *
 * A keyframe is the most expensive frame to encode; on a busy two-core machine the first
 * one after `Matched` was measured taking 160–290 ms, most of Next's time to a face. So a
 * second, small encoder keeps a recent keyframe ready: twice a second while waiting (the
 * main encoder is idle then), once a second during a call (so Next has one too). It is
 * encoded at most 320×240 (a quarter of the work of 640×480 or less) and is only the
 * opening picture: the live stream starts with its own keyframe right behind it, so
 * nothing ever references this one. It is used once, and only if it is recent and in the
 * codec the relay chose for the new partner.
 */

import { describeDecoder, wrapKeyframe } from "../wire/keyframe.js";
import { codecFamily } from "../wire/codecs.js";

/** Refresh interval while waiting for a partner. */
const WAITING_EVERY_MS = 500;
/** Refresh interval during a call (what Next will send). */
const PAIRED_EVERY_MS = 1000;
/** Older than this, the picture is not worth showing as the first one. */
const MAX_AGE_MS = 1200;
/** The standby picture fits in this box. */
const MAX_WIDTH = 320;
const MAX_HEIGHT = 240;
/** Failures after which this browser goes without a standby picture. */
const MAX_FAILURES = 3;
/** Bits per second at two pictures a second: ~19 KB a keyframe, sharp at 320×240. */
const BITRATE = 300_000;

export class StandbyKeyframe {
  constructor() {
    /** @type {VideoEncoder | null} */
    this.encoder = null;
    this.key = "";
    /** The latest keyframe ready to send. @type {{codec: string, payload: Uint8Array, captureUs: bigint, atMs: number} | null} */
    this.ready = null;
    /** Capture stamps of frames inside the encoder, by frame timestamp. @type {Map<number, {captureUs: bigint, codec: string}>} */
    this.pending = new Map();
    this.lastEncodeAt = -Infinity;
    this.stats = { encoded: 0, used: 0, stale: 0, failed: 0 };
  }

  /**
   * Sees each camera frame; now and then encodes it. The frame stays the caller's.
   * @param {VideoFrame} frame
   * @param {string} codec the codec a new partner would most likely get (the sender's current one)
   * @param {bigint} captureUs
   * @param {boolean} paired
   * @param {number} nowMs performance.now()
   */
  offer(frame, codec, captureUs, paired, nowMs) {
    if (this.stats.failed >= MAX_FAILURES) return;
    if (nowMs - this.lastEncodeAt < (paired ? PAIRED_EVERY_MS : WAITING_EVERY_MS)) return;
    const enc = this.ensureEncoder(frame, codec);
    if (!enc || enc.encodeQueueSize > 0) return;
    this.lastEncodeAt = nowMs;
    if (this.pending.size > 4) this.pending.clear();
    this.pending.set(frame.timestamp, { captureUs, codec });
    try {
      enc.encode(frame, { keyFrame: true });
    } catch (e) {
      this.fail(e);
    }
  }

  /**
   * The ready keyframe if it is recent and in `codec`, once; null otherwise.
   * @param {string} codec the codec the relay chose for the new partner
   * @param {number} nowMs
   * @returns {{payload: Uint8Array, captureUs: bigint} | null}
   */
  take(codec, nowMs) {
    const r = this.ready;
    this.ready = null;
    if (!r || r.codec !== codec) return null;
    if (nowMs - r.atMs > MAX_AGE_MS) {
      this.stats.stale++;
      return null;
    }
    this.stats.used++;
    return { payload: r.payload, captureUs: r.captureUs };
  }

  /** @param {VideoFrame} frame @param {string} codec @returns {VideoEncoder | null} */
  ensureEncoder(frame, codec) {
    const scale = Math.min(1, MAX_WIDTH / frame.displayWidth, MAX_HEIGHT / frame.displayHeight);
    const width = Math.max(2, Math.round((frame.displayWidth * scale) / 2) * 2);
    const height = Math.max(2, Math.round((frame.displayHeight * scale) / 2) * 2);
    const key = `${codec} ${width}x${height}`;
    if (this.encoder && this.encoder.state === "configured" && this.key === key) return this.encoder;
    this.close();
    try {
      const encoder = new VideoEncoder({
        output: (chunk, metadata) => this.onChunk(chunk, metadata),
        error: (e) => this.fail(e),
      });
      /** @type {VideoEncoderConfig} */
      const config = { codec, width, height, bitrate: BITRATE, framerate: 2, latencyMode: "realtime" };
      if (codecFamily(codec) === "H264") /** @type {any} */ (config).avc = { format: "annexb" };
      encoder.configure(config);
      this.encoder = encoder;
      this.key = key;
      return encoder;
    } catch (e) {
      this.fail(e);
      return null;
    }
  }

  /** @param {EncodedVideoChunk} chunk @param {EncodedVideoChunkMetadata | undefined} metadata */
  onChunk(chunk, metadata) {
    const stamp = this.pending.get(chunk.timestamp);
    this.pending.delete(chunk.timestamp);
    if (!stamp || chunk.type !== "key") return;
    const data = new Uint8Array(chunk.byteLength);
    chunk.copyTo(data);
    const config = metadata?.decoderConfig;
    const description = describeDecoder(config?.codec || stamp.codec, config?.colorSpace);
    this.ready = { codec: stamp.codec, payload: wrapKeyframe(description, data), captureUs: stamp.captureUs, atMs: performance.now() };
    this.stats.encoded++;
  }

  /** @param {unknown} e */
  fail(e) {
    // Only an optimisation: without it the live keyframe is the first picture, as before.
    console.warn("duet: standby keyframe encoder failed", e);
    this.stats.failed++;
    this.close();
  }

  close() {
    const enc = this.encoder;
    this.encoder = null;
    this.key = "";
    this.pending.clear();
    if (enc && enc.state !== "closed") {
      try {
        enc.close();
      } catch {
        // Already closed by an error.
      }
    }
  }
}
