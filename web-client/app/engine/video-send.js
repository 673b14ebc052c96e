// @ts-check
/**
 * @file Camera frames → `VideoEncoder` → fragments → the session's datagrams, in the worker.
 *
 * The codec is the one the relay chose for this direction (`Matched.send_codec`). Frames
 * are dropped, never queued, when the encoder falls behind (`encodeQueueSize`). Where the
 * encoder takes temporal layers (L1T2), each frame's `ref_frame` comes from its layer, so
 * a receiver that loses a top-layer frame carries on. The newest camera frame is held
 * while unpaired and encoded as the keyframe the moment `Matched` arrives; ahead of it goes
 * the standby keyframe (standby.js), encoded before `Matched` came, so the new partner has
 * a face without waiting for any encode. A codec that fails here is reported
 * (`onCodecFailed`) so it is never offered again. While the partner reports loss, each
 * frame of two or more datagrams is followed by a parity datagram (wire/fragment.js), so
 * one lost fragment costs no round trip.
 *
 * Every frame is sealed end to end before it is cut (engine/pairing-crypto.js): its number
 * is taken first (the nonce and the associated data bind it), the seal runs in WebCrypto,
 * and frames are cut and sent in number order (`InOrder`) whatever order the seals finish
 * in. The sink says no pairing (`matchId()` null) until the pairing's keys are agreed, so
 * nothing goes before that, and the first frame after it is a keyframe.
 */

import { Fragmenter, refFrameOf } from "../wire/fragment.js";
import { describeDecoder, wrapKeyframe } from "../wire/keyframe.js";
import { TRACK_VIDEO } from "../wire/protocol.js";
import { START_VIDEO_KBPS } from "../wire/quality.js";
import { LayerReferences } from "../wire/reference.js";
import { EncoderLoad } from "../wire/encoder-load.js";
import { encodeSize } from "../wire/encode-size.js";
import { epochMs, nowUs } from "../wire/clock.js";
import { codecFamily } from "../wire/codecs.js";
import { pump } from "./pump.js";
import { StandbyKeyframe } from "./standby.js";
import { SendHistory } from "../wire/send-history.js";
import { InOrder, MAX_IN_ORDER } from "./pairing-crypto.js";

/** A keyframe at least this often even without requests, so a receiver that lost one recovers. */
const KEYFRAME_INTERVAL_MS = 10_000;
/** Frames waiting in the encoder beyond which new camera frames are dropped: each one waiting is a frame interval of delay. */
const MAX_ENCODE_QUEUE = 1;
/** A held camera frame older than this is not worth sending as a first keyframe (two frame intervals at 20 fps). */
const HELD_FRAME_MAX_AGE_US = 100_000;
/** Frames inside the encoder whose stamps we keep (they come back in order, one or two at a time). */
const MAX_PENDING_STAMPS = 64;
/** Loss the partner reports (‰, datagrams) from which frames get a parity datagram. */
const PROTECT_FROM_LOSS_PERMILLE = 3;
/** Frames stay protected this long after the last report of such loss. */
const PROTECT_FOR_MS = 15_000;
/** Encoder errors in a row after which the codec counts as failed on this machine. */
const FAILURES_BEFORE_GIVING_UP = 3;
/** Logical cores (wire/encode-size.js keeps the encode under two threads' size on a weak machine). */
const CORES = navigator.hardwareConcurrency || 2;

/**
 * Where senders put their datagrams: the session, as it is at the moment of sending.
 * @typedef {object} MediaSink
 * @property {() => bigint | null} matchId the current pairing once its keys are agreed, else null (send nothing)
 * @property {() => number} maxDatagramSize
 * @property {(datagram: Uint8Array) => boolean} send
 * @property {(matchId: bigint, track: number, header: import("./pairing-crypto.js").FrameHeader, payload: Uint8Array) => Promise<Uint8Array>} seal
 *   seals a frame for `matchId`'s partner (rejects if that pairing is no longer current)
 */

/**
 * @typedef {object} EncoderChoice one codec this browser encodes, from the page's probes
 * @property {string} codec
 * @property {string | null} scalabilityMode
 * @property {boolean} hardware
 */

export class VideoSender {
  /**
   * @param {ReadableStream<VideoFrame>} frames
   * @param {MediaSink} sink
   * @param {EncoderChoice[]} encoders
   * @param {{onProblem(text: string): void, onCodecFailed(codec: string): void, onKeyframeSent(): void}} hooks
   */
  constructor(frames, sink, encoders, hooks) {
    this.frames = frames;
    this.sink = sink;
    this.encoders = encoders;
    this.hooks = hooks;
    /** The encoder in use; before the first pairing the best one, so it is warm when `Matched` comes. @type {EncoderChoice | null} */
    this.choice = encoders[0] ?? null;
    this.fragmenter = new Fragmenter(TRACK_VIDEO);
    /** Frames get a parity datagram until then (performance.now()). */
    this.protectUntil = 0;
    this.layers = new LayerReferences();
    this.load = new EncoderLoad();
    this.standby = new StandbyKeyframe();
    /** What was sent lately, for the partner's `Nack`s. */
    this.history = new SendHistory();
    /** Frames being sealed, sent in number order. */
    this.sealing = new InOrder(MAX_IN_ORDER);
    /** @type {VideoEncoder | null} */
    this.encoder = null;
    this.encoderKey = "";
    this.bitrateKbps = START_VIDEO_KBPS;
    /** Video paused by the bitrate controller (wire/quality.js `videoPaused`). */
    this.paused = false;
    this.configuredKbps = 0;
    this.forceKey = true;
    this.lastKeyAt = -Infinity;
    this.lastFrameAt = -Infinity;
    /** The encoder has encoded once (warmed up) since it was made. */
    this.warmed = false;
    this.enabled = true;
    this.stopped = false;
    this.failures = 0;
    /** @type {{frame: VideoFrame, captureUs: bigint} | null} */
    this.held = null;
    this.description = "";
    /** Capture stamp, pairing and encode start of each frame inside the encoder, by frame timestamp. @type {Map<number, {captureUs: bigint, matchId: bigint, startedMs: number}>} */
    this.pending = new Map();
    this.stats = {
      framesEncoded: 0,
      keyframes: 0,
      framesDropped: 0,
      framesSkippedForRate: 0,
      /** Camera frames not encoded while video was paused for the network. */
      framesPaused: 0,
      bytesSent: 0,
      datagramsSent: 0,
      datagramsResent: 0,
      oversized: 0,
      width: 0,
      height: 0,
      captureWidth: 0,
      captureHeight: 0,
      fps: 0,
      encodeMs: 0,
      parityDatagrams: 0,
      /** Frames dropped because too many waited to be sealed (or a seal failed). */
      sealDropped: 0,
      limitation: /** @type {string} */ ("none"),
      scalabilityMode: /** @type {string | null} */ (null),
      lastKeyframeSentAt: 0,
    };
    /** @type {ReadableStreamDefaultReader<VideoFrame> | undefined} */
    this.reader = undefined;
  }

  /** Reads the camera until it ends or `stop()`. */
  async run() {
    await pump(this.frames, this, (frame) => this.onFrame(frame));
  }

  stop() {
    this.stopped = true;
    this.reader?.cancel().catch(() => {});
    this.dropHeld();
    this.closeEncoder();
    this.standby.close();
  }

  dropHeld() {
    this.held?.frame.close();
    this.held = null;
  }

  /** The codec string for the relay's choice, or null (send no video). @param {import("../wire/protocol.js").VideoCodec | null} family */
  setFamily(family) {
    const choice = family === null ? null : (this.encoders.find((e) => codecFamily(e.codec) === family) ?? null);
    if (choice?.codec !== this.choice?.codec) {
      this.choice = choice;
      this.closeEncoder();
    }
  }

  /** Paired just now: encode the held camera frame as the new partner's first keyframe. */
  sendHeldFrame() {
    const matchId = this.sink.matchId();
    const standby = this.enabled && this.choice && matchId !== null ? this.standby.take(this.choice.codec, performance.now()) : null;
    // The face first: the keyframe encoded before Matched, then the live stream's own
    // keyframe (forced by newPairing), which nothing here has to wait for.
    if (standby && matchId !== null) this.sendFrame(matchId, standby.payload, true, standby.captureUs, 0);
    const held = this.held;
    this.held = null;
    if (!held) return;
    try {
      const fresh = Number(nowUs() - held.captureUs) < HELD_FRAME_MAX_AGE_US;
      if (matchId !== null && fresh && this.enabled && this.choice) {
        const enc = this.ensureEncoder(held.frame);
        if (enc) this.encode(enc, held.frame, held.captureUs, matchId, true);
      }
    } catch (e) {
      this.fail(e);
    } finally {
      held.frame.close();
    }
  }

  requestKeyframe() {
    this.forceKey = true;
  }

  /**
   * The partner lost some of a frame's datagrams: send those again from the history.
   * @param {number} frame @param {number[]} fragments empty: the whole frame
   */
  resend(frame, fragments) {
    for (const d of this.history.take(frame, fragments, performance.now())) {
      if (this.sink.send(d)) {
        this.stats.datagramsResent++;
        this.stats.bytesSent += d.length;
      }
    }
  }

  /** A new pairing (or none): number frames from zero and start with a keyframe. */
  newPairing() {
    this.fragmenter.reset();
    this.history.reset();
    this.layers.reset();
    this.pending.clear();
    this.forceKey = true;
  }

  /** @param {boolean} on */
  setEnabled(on) {
    this.enabled = on;
    if (on) this.forceKey = true;
    else this.dropHeld();
  }

  /**
   * The partner's report of loss on what we send: protect frames with parity while there is.
   * @param {number} lossPermille @param {number} nowMs
   */
  onPeerLoss(lossPermille, nowMs) {
    if (lossPermille >= PROTECT_FROM_LOSS_PERMILLE) this.protectUntil = nowMs + PROTECT_FOR_MS;
  }

  /**
   * The bitrate controller's decision: the target, and whether video is paused (the path
   * carries less than its floor: no frame is encoded, audio goes on; the next frame after
   * the pause references the last one sent, so nothing else changes).
   * @param {number} kbps @param {boolean} paused
   */
  setBitrate(kbps, paused) {
    this.bitrateKbps = kbps;
    this.paused = paused;
  }

  closeEncoder() {
    const enc = this.encoder;
    this.encoder = null;
    this.encoderKey = "";
    this.warmed = false;
    if (enc && enc.state !== "closed") {
      try {
        enc.close();
      } catch {
        // Already closed by an error.
      }
    }
  }

  /** @param {unknown} e */
  fail(e) {
    console.warn("duet: video encoder failed", e);
    this.closeEncoder();
    this.failures++;
    this.forceKey = true;
    if (this.failures >= FAILURES_BEFORE_GIVING_UP && this.choice) {
      // This codec does not work here after all: never offer it again (the page sends Caps).
      const failed = this.choice.codec;
      this.encoders = this.encoders.filter((c) => c.codec !== failed);
      this.choice = null;
      this.failures = 0;
      this.hooks.onCodecFailed(failed);
    }
  }

  /**
   * An encoder configured for this frame's size (scaled by the CPU adaptation, and under the
   * two-thread size on a weak machine: wire/encode-size.js), or null.
   * @param {VideoFrame} frame
   * @returns {VideoEncoder | null}
   */
  ensureEncoder(frame) {
    const choice = this.choice;
    if (!choice) return null;
    this.stats.captureWidth = frame.displayWidth;
    this.stats.captureHeight = frame.displayHeight;
    const { width, height } = encodeSize(frame.displayWidth, frame.displayHeight, this.load.scale, CORES);
    const key = `${choice.codec} ${width}x${height}`;
    const bitrateMoved = Math.abs(this.bitrateKbps - this.configuredKbps) > this.configuredKbps * 0.1;
    if (this.encoder && this.encoder.state === "configured" && this.encoderKey === key && !bitrateMoved) return this.encoder;
    if (!this.encoder || this.encoder.state === "closed" || this.encoderKey.split(" ")[0] !== choice.codec) {
      this.closeEncoder();
      const codec = choice.codec;
      this.encoder = new VideoEncoder({
        output: (chunk, metadata) => this.onChunk(chunk, codec, metadata),
        error: (e) => this.fail(e),
      });
      this.forceKey = true;
    }
    if (this.encoderKey && this.encoderKey !== key) this.forceKey = true; // a new size starts with a keyframe
    /** @type {VideoEncoderConfig} */
    const config = {
      codec: choice.codec,
      width,
      height,
      bitrate: this.bitrateKbps * 1000,
      framerate: 30,
      latencyMode: "realtime",
      // "constant": Chromium's VP9 encoder in "variable" mode inserts a keyframe every ~12 frames.
      bitrateMode: "constant",
      hardwareAcceleration: choice.hardware ? "prefer-hardware" : "no-preference",
    };
    if (choice.scalabilityMode) config.scalabilityMode = choice.scalabilityMode;
    // H.264 in Annex B carries its parameter sets in-band, so the decoder needs no description.
    if (codecFamily(choice.codec) === "H264") /** @type {any} */ (config).avc = { format: "annexb" };
    this.encoder.configure(config);
    this.encoderKey = key;
    this.configuredKbps = this.bitrateKbps;
    this.stats.width = width;
    this.stats.height = height;
    this.stats.scalabilityMode = choice.scalabilityMode;
    return this.encoder;
  }

  /** @param {VideoFrame} frame */
  onFrame(frame) {
    if (!this.enabled || !this.choice) return;
    if (frame.displayWidth < 2 || frame.displayHeight < 2) return;
    const now = performance.now();
    const matchId = this.sink.matchId();
    this.standby.offer(frame, this.choice.codec, nowUs(), matchId !== null, now);
    if (matchId === null) {
      // Configured even while waiting, so the first frame after Matched does not also pay for starting the encoder.
      const enc = this.ensureEncoder(frame);
      if (enc && !this.warmed && enc.encodeQueueSize === 0) {
        // One throwaway frame, so the first real keyframe does not also pay for the
        // encoder's start-up (its output has no stamp and is never sent).
        this.warmed = true;
        enc.encode(frame, { keyFrame: true });
      }
      this.dropHeld();
      this.held = { frame: frame.clone(), captureUs: nowUs() };
      return;
    }
    this.dropHeld();
    if (this.paused) {
      this.stats.framesPaused++;
      return;
    }
    // The CPU adaptation's frame-rate cap: skip frames that come sooner than it allows.
    if (now - this.lastFrameAt < this.load.minIntervalMs && !this.forceKey) {
      this.stats.framesSkippedForRate++;
      return;
    }
    const enc = this.ensureEncoder(frame);
    if (!enc) return;
    if (enc.encodeQueueSize > MAX_ENCODE_QUEUE) {
      // The encoder is behind: this frame would leave late. Drop it, and tell the adaptation.
      this.stats.framesDropped++;
      this.load.onDropped(now);
      return;
    }
    const keyFrame = this.forceKey || now - this.lastKeyAt > KEYFRAME_INTERVAL_MS;
    this.encode(enc, frame, nowUs(), matchId, keyFrame);
  }

  /**
   * @param {VideoEncoder} enc
   * @param {VideoFrame} frame
   * @param {bigint} captureUs
   * @param {bigint} matchId
   * @param {boolean} keyFrame
   */
  encode(enc, frame, captureUs, matchId, keyFrame) {
    const now = performance.now();
    if (this.pending.size >= MAX_PENDING_STAMPS) this.pending.clear();
    this.pending.set(frame.timestamp, { captureUs, matchId, startedMs: now });
    enc.encode(frame, { keyFrame });
    this.lastFrameAt = now;
    if (keyFrame) {
      this.forceKey = false;
      this.lastKeyAt = now;
    }
  }

  /**
   * @param {EncodedVideoChunk} chunk
   * @param {string} codec
   * @param {EncodedVideoChunkMetadata | undefined} metadata
   */
  onChunk(chunk, codec, metadata) {
    const config = metadata?.decoderConfig;
    if (config) this.description = describeDecoder(config.codec || codec, config.colorSpace);
    const stamp = this.pending.get(chunk.timestamp);
    this.pending.delete(chunk.timestamp);
    const now = performance.now();
    if (stamp) {
      this.load.onEncoded(now - stamp.startedMs, now);
      this.stats.encodeMs = Math.round(this.load.encodeMs * 10) / 10;
      this.stats.fps = Math.round(this.load.fps(now) * 10) / 10;
    }
    this.stats.limitation = this.load.limitation;
    const matchId = this.sink.matchId();
    // A frame encoded for the previous partner is never sent to the next one.
    if (!stamp || matchId === null || stamp.matchId !== matchId) return;
    const data = new Uint8Array(chunk.byteLength);
    chunk.copyTo(data);
    const isKey = chunk.type === "key";
    const payload = isKey ? wrapKeyframe(this.description || codec, data) : data;
    const layer = /** @type {any} */ (metadata)?.svc?.temporalLayerId ?? 0;
    // The encoder works again (a seal or a send that fails later is not its failure).
    if (this.sendFrame(matchId, payload, isKey, stamp.captureUs, layer)) this.failures = 0;
  }

  /**
   * One encoded frame of the current pairing → sealed → fragments → datagrams. Its number
   * and reference are taken now; it is cut and sent once sealed, after the frames before it.
   * @param {bigint} matchId @param {Uint8Array} payload @param {boolean} isKey
   * @param {bigint} captureUs @param {number} layer temporal layer id (0 without layers)
   * @returns {boolean} on its way (false: dropped, and a keyframe asked for)
   */
  sendFrame(matchId, payload, isKey, captureUs, layer) {
    const frameNo = this.fragmenter.reserve();
    const refBack = (frameNo - this.layers.refFor(frameNo, isKey, layer)) >>> 0;
    if (this.sealing.full) {
      // Sealing has fallen far behind (it never should): a frame now would only add delay.
      // Its number stays taken, so the partner sees a gap and decodes nothing that
      // referenced it; the next frame is a keyframe.
      this.dropForKeyframe();
      return false;
    }
    const header = { frame: frameNo, keyframe: isKey, captureUs, refFrame: refFrameOf(frameNo, isKey, refBack) };
    const turn = this.sealing.push(this.sink.seal(matchId, TRACK_VIDEO, header, payload), (sealed) => this.sendSealed(matchId, frameNo, sealed, isKey, captureUs, refBack));
    turn?.catch((e) => {
      // The pairing ended while the frame was sealed (nothing to send), or the seal failed.
      if (this.sink.matchId() !== matchId) return;
      console.warn("duet: a video frame could not be sealed", e);
      this.dropForKeyframe();
    });
    return true;
  }

  /** A frame was dropped on its way: the next one is a keyframe, which references nothing. */
  dropForKeyframe() {
    this.stats.sealDropped++;
    this.forceKey = true;
    this.layers.reset();
  }

  /**
   * A sealed frame, in number order: cut into datagrams and sent (not when the pairing
   * changed meanwhile: the frame is for the last partner).
   * @param {bigint} matchId @param {number} frameNo @param {Uint8Array} sealed @param {boolean} isKey
   * @param {bigint} captureUs @param {number} refBack
   */
  sendSealed(matchId, frameNo, sealed, isKey, captureUs, refBack) {
    if (this.sink.matchId() !== matchId) return;
    const protect = performance.now() < this.protectUntil;
    const datagrams = this.fragmenter.fragment(matchId, sealed, isKey, captureUs, this.sink.maxDatagramSize(), refBack, protect, frameNo);
    if (!datagrams) {
      // Bigger than 256 datagrams: far past any sane bitrate. Ask for a keyframe at a lower rate.
      this.stats.oversized++;
      this.bitrateKbps = Math.max(100, Math.round(this.bitrateKbps / 2));
      this.forceKey = true;
      this.layers.reset();
      return;
    }
    this.history.record(frameNo, datagrams, performance.now());
    this.stats.framesEncoded++;
    if (isKey) {
      this.stats.keyframes++;
      this.stats.lastKeyframeSentAt = epochMs();
      this.hooks.onKeyframeSent();
    }
    for (const d of datagrams) {
      if (this.sink.send(d)) {
        this.stats.datagramsSent++;
        this.stats.bytesSent += d.length;
      }
    }
    const parity = this.fragmenter.lastParity;
    if (parity && this.sink.send(parity)) {
      this.stats.parityDatagrams++;
      this.stats.bytesSent += parity.length;
    }
  }
}
