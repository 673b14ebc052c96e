// @ts-check
/**
 * @file Camera and microphone to datagrams, and datagrams to canvas and speakers, with
 * WebCodecs and no WebRTC.
 *
 * Sending: `getUserMedia` → `MediaStreamTrackProcessor` → `VideoEncoder` (codec picked by
 * probing `isConfigSupported`: VP9, then AV1, then VP8 as the floor; `latencyMode:
 * "realtime"`) / `AudioEncoder` (Opus, mono, 20 ms frames) → `Fragmenter` → the session's
 * datagrams. Every datagram is stamped with the current pairing's match id and the
 * frame's capture time (µs since the Unix epoch, from `performance.timeOrigin +
 * performance.now()`), so a receiver on the same clock can measure capture-to-render
 * latency. The first frame after a pairing, and the first after a `KeyframeRequested`, is
 * a keyframe.
 *
 * Receiving: `Reassembler` (fragment.js) → `VideoDecoder` → canvas, and `AudioDecoder` →
 * `JitterBuffer` → Web Audio, scheduled ahead on the `AudioContext` clock.
 *
 * Each video keyframe carries its decoder description (codec string and colour space)
 * in-band (keyframe.js), so a receiver configures its decoder from the media itself and a
 * new partner's video appears without any negotiation. Audio is always Opus 48 kHz mono,
 * one 20 ms frame per datagram.
 */

import { Fragmenter } from "./fragment.js";
import { JitterBuffer } from "./jitter.js";
import { describeDecoder, unwrapKeyframe, wrapKeyframe } from "./keyframe.js";
import { TRACK_AUDIO, TRACK_VIDEO } from "./protocol.js";
import { START_VIDEO_KBPS } from "./quality.js";

/** Video codecs in order of preference: better compression first, VP8 as the floor everyone decodes. */
export const VIDEO_CODECS = [
  { codec: "vp09.00.10.08", label: "VP9" },
  { codec: "av01.0.04M.08", label: "AV1" },
  { codec: "vp8", label: "VP8" },
];
const AUDIO_CODEC = "opus";
const AUDIO_SAMPLE_RATE = 48_000;
/** Opus frame length: 20 ms, one datagram each. */
export const AUDIO_FRAME_US = 20_000;
const AUDIO_BITRATE = 32_000;
/** A keyframe at least this often even without requests, so a receiver that lost one recovers. */
const KEYFRAME_INTERVAL_MS = 10_000;
/** Frames waiting in the encoder beyond which new camera frames are dropped (keeps latency low on a slow CPU). */
const MAX_ENCODE_QUEUE = 2;
/** Frames waiting in the decoder beyond which delta frames are skipped until a keyframe. */
const MAX_DECODE_QUEUE = 8;
/** A held camera frame older than this is not worth sending as a first keyframe (two frame intervals at 20 fps). */
const HELD_FRAME_MAX_AGE_US = 100_000;
/** Capture stamps kept for frames inside the encoder (they come back in order, few at a time). */
const MAX_PENDING_STAMPS = 64;
/** Web Audio scheduling: how far ahead of the audio clock frames are queued, and the tick. */
const AUDIO_LOOKAHEAD_S = 0.06;
const AUDIO_TICK_MS = 10;
/** Capture-to-render latency samples kept for the figures. */
const MAX_LATENCY_SAMPLES = 1000;

/** Microseconds since the Unix epoch, on the clock both pages of a test share. */
export function nowUs() {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000));
}

/**
 * Where senders put their datagrams: the session, as it is at the moment of sending.
 * @typedef {object} MediaSink
 * @property {() => bigint | null} matchId the current pairing, or null when not paired
 * @property {() => number} maxDatagramSize
 * @property {(datagram: Uint8Array) => boolean} send
 */

/**
 * @typedef {object} Capture
 * @property {MediaStream | null} stream
 * @property {MediaStreamTrack | null} video
 * @property {MediaStreamTrack | null} audio
 * @property {string | null} problem what is missing, for a person (null: both work)
 */

/** @param {unknown} e */
function errorName(e) {
  return e instanceof DOMException || e instanceof Error ? e.name : "";
}

/**
 * Asks for the camera and microphone. Never throws: whatever is refused or missing is
 * described in `problem`, and the call goes on with what there is (text chat at least).
 * @returns {Promise<Capture>}
 */
export async function captureMedia() {
  if (!navigator.mediaDevices?.getUserMedia) {
    return { stream: null, video: null, audio: null, problem: "This page cannot use a camera here (it needs https or localhost). You can still text chat." };
  }
  const video = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30, max: 30 } };
  const audio = { channelCount: { ideal: 1 }, echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video, audio });
    return { stream, video: stream.getVideoTracks()[0] ?? null, audio: stream.getAudioTracks()[0] ?? null, problem: null };
  } catch (e) {
    if (errorName(e) === "NotAllowedError" || errorName(e) === "SecurityError") {
      return { stream: null, video: null, audio: null, problem: "Camera and microphone were refused, so your partner won't see or hear you. You can still text chat." };
    }
    // One of the two may be missing or busy: try each alone.
    /** @type {MediaStreamTrack[]} */
    const tracks = [];
    for (const constraints of [{ video }, { audio }]) {
      try {
        const s = await navigator.mediaDevices.getUserMedia(constraints);
        tracks.push(...s.getTracks());
      } catch {
        // Described below by what is missing.
      }
    }
    const v = tracks.find((t) => t.kind === "video") ?? null;
    const a = tracks.find((t) => t.kind === "audio") ?? null;
    const stream = tracks.length ? new MediaStream(tracks) : null;
    const problem = !v && !a
      ? "No camera or microphone could be used. You can still text chat."
      : !v
        ? "No camera could be used, so your partner won't see you."
        : "No microphone could be used, so your partner won't hear you.";
    return { stream, video: v, audio: a, problem };
  }
}

/**
 * The video codecs this browser can both encode and decode, best first.
 * @param {number} width
 * @param {number} height
 * @returns {Promise<string[]>}
 */
export async function probeVideoCodecs(width = 640, height = 480) {
  if (typeof VideoEncoder === "undefined" || typeof VideoDecoder === "undefined") return [];
  /** @type {string[]} */
  const out = [];
  for (const { codec } of VIDEO_CODECS) {
    try {
      const enc = await VideoEncoder.isConfigSupported({
        codec,
        width,
        height,
        bitrate: START_VIDEO_KBPS * 1000,
        framerate: 30,
        latencyMode: "realtime",
      });
      const dec = await VideoDecoder.isConfigSupported({ codec });
      if (enc.supported && dec.supported) out.push(codec);
    } catch {
      // An invalid or unknown codec string: not supported.
    }
  }
  return out;
}

/**
 * The video codecs this browser can decode, best first (a page without a camera still
 * decodes its partner).
 * @returns {Promise<string[]>}
 */
export async function probeVideoDecoders() {
  if (typeof VideoDecoder === "undefined") return [];
  /** @type {string[]} */
  const out = [];
  for (const { codec } of VIDEO_CODECS) {
    try {
      if ((await VideoDecoder.isConfigSupported({ codec })).supported) out.push(codec);
    } catch {
      // An invalid or unknown codec string: not supported.
    }
  }
  return out;
}

/** The protocol's codec family of a WebCodecs codec string, or null. */
const FAMILIES = /** @type {const} */ ([
  ["vp8", "Vp8"],
  ["vp09", "Vp9"],
  ["av01", "Av1"],
  ["avc1", "H264"],
]);

/** @param {string} codec @returns {import("./protocol.js").VideoCodec | null} */
export function codecFamily(codec) {
  const prefix = codec.split(".")[0].toLowerCase();
  return FAMILIES.find(([p]) => p === prefix)?.[1] ?? null;
}

/**
 * What `Hello` says this browser handles.
 * @param {string[]} encodable codec strings this browser encodes (and decodes), best first
 * @param {string[]} decodable codec strings this browser decodes
 * @returns {import("./protocol.js").MediaCaps}
 */
export function mediaCaps(encodable, decodable) {
  const fam = (/** @type {string[]} */ list) =>
    /** @type {import("./protocol.js").VideoCodec[]} */ (list.map(codecFamily).filter((f) => f !== null));
  return { decode: fam(decodable), encode: fam(encodable), hardware_encode: [] };
}

/**
 * The codec string to encode for the family the relay chose (`Matched.send_codec`), or
 * null when the relay chose none (the partner decodes nothing we encode).
 * @param {string[]} supported from probeVideoCodecs
 * @param {import("./protocol.js").VideoCodec | null} family
 * @returns {string | null}
 */
export function chooseVideoCodec(supported, family) {
  if (family === null) return null;
  return supported.find((s) => codecFamily(s) === family) ?? null;
}

/** @param {string} codec @returns {string} e.g. "VP9" */
export function codecLabel(codec) {
  const family = codec.split(".")[0].toLowerCase();
  return VIDEO_CODECS.find((c) => c.codec.split(".")[0] === family)?.label ?? codec;
}

/** Camera → VideoEncoder → datagrams. */

/**
 * Reads a camera or microphone track item by item (through `MediaStreamTrackProcessor`)
 * until the track ends or the sender stops, handing each item to `handle` and always
 * closing it afterwards: an unclosed VideoFrame or AudioData stalls the capture pipeline.
 * @template {{ close(): void }} T
 * @param {{ track: MediaStreamTrack, stopped: boolean, reader?: ReadableStreamDefaultReader<any>, fail(e: unknown): void }} sender
 * @param {(item: T) => void} handle
 */
async function pumpTrack(sender, handle) {
  const processor = /** @type {MediaStreamTrackProcessor<any>} */ (new MediaStreamTrackProcessor({ track: sender.track }));
  const reader = processor.readable.getReader();
  sender.reader = reader;
  while (!sender.stopped) {
    let result;
    try {
      result = await reader.read();
    } catch {
      return;
    }
    if (result.done) return;
    const item = /** @type {T} */ (result.value);
    try {
      handle(item);
    } catch (e) {
      sender.fail(e);
    } finally {
      item.close();
    }
  }
}

export class VideoSender {
  /**
   * @param {MediaStreamTrack} track
   * @param {MediaSink} sink
   * @param {string[]} codecs supported codecs, best first
   * @param {(problem: string) => void} onProblem
   */
  constructor(track, sink, codecs, onProblem) {
    this.track = track;
    this.sink = sink;
    this.codecs = codecs;
    /** @type {string | null} */
    this.codec = codecs[0] ?? null;
    this.onProblem = onProblem;
    this.fragmenter = new Fragmenter(TRACK_VIDEO);
    /** @type {VideoEncoder | null} */
    this.encoder = null;
    this.encoderKey = "";
    this.bitrateKbps = START_VIDEO_KBPS;
    this.configuredKbps = 0;
    this.forceKey = true;
    this.lastKeyAt = -Infinity;
    this.enabled = true;
    this.stopped = false;
    this.failures = 0;
    /**
     * The newest camera frame while not paired (a clone), so the first keyframe for a new
     * partner can be encoded the moment they are announced instead of at the next capture.
     * @type {{frame: VideoFrame, captureUs: bigint} | null}
     */
    this.held = null;
    /** The description keyframes carry (codec and colour space), once the encoder has said. */
    this.description = "";
    /** Capture stamp and pairing of each frame inside the encoder, by frame timestamp. @type {Map<number, {captureUs: bigint, matchId: bigint}>} */
    this.pending = new Map();
    this.stats = { framesEncoded: 0, keyframes: 0, framesDropped: 0, bytesSent: 0, datagramsSent: 0, oversized: 0, width: 0, height: 0, lastKeyframeSentAt: 0 };
    /** @type {ReadableStreamDefaultReader<any> | undefined} */
    this.reader = undefined;
  }

  /** Starts reading the camera; resolves when the track ends or `stop()` is called. */
  async run() {
    await pumpTrack(this, /** @type {(frame: VideoFrame) => void} */ ((frame) => this.onFrame(frame)));
  }

  stop() {
    this.stopped = true;
    this.reader?.cancel().catch(() => {});
    this.dropHeld();
    this.closeEncoder();
  }

  dropHeld() {
    this.held?.frame.close();
    this.held = null;
  }

  /**
   * Paired just now: encode the held camera frame as the new partner's first keyframe,
   * if it is recent, rather than wait up to a frame interval for the next capture.
   */
  sendHeldFrame() {
    const held = this.held;
    this.held = null;
    if (!held) return;
    try {
      const matchId = this.sink.matchId();
      const enc = this.encoder;
      const fresh = Number(nowUs() - held.captureUs) < HELD_FRAME_MAX_AGE_US;
      if (matchId !== null && fresh && enc && enc.state === "configured" && this.enabled && this.forceKey) {
        if (this.pending.size >= MAX_PENDING_STAMPS) this.pending.clear();
        this.pending.set(held.frame.timestamp, { captureUs: held.captureUs, matchId });
        enc.encode(held.frame, { keyFrame: true });
        this.forceKey = false;
        this.lastKeyAt = performance.now();
      }
    } catch (e) {
      this.fail(e);
    } finally {
      held.frame.close();
    }
  }

  /** The next frame is a keyframe (a new partner, or the partner asked). */
  requestKeyframe() {
    this.forceKey = true;
  }

  /** A new pairing (or none): number frames from zero and start with a keyframe. */
  newPairing() {
    this.fragmenter.reset();
    this.pending.clear();
    this.forceKey = true;
  }

  /** @param {string | null} codec */
  setCodec(codec) {
    if (codec && codec !== this.codec) {
      this.codec = codec;
      this.closeEncoder();
    }
  }

  /** @param {boolean} on camera on (sending) or off (sending nothing) */
  setEnabled(on) {
    this.enabled = on;
    this.track.enabled = on;
    if (on) this.forceKey = true;
    else this.dropHeld();
  }

  /** @param {number} kbps */
  setBitrate(kbps) {
    this.bitrateKbps = kbps;
  }

  closeEncoder() {
    const enc = this.encoder;
    this.encoder = null;
    this.encoderKey = "";
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
    if (this.failures >= 3) {
      // This codec does not work here after all: fall back to the next one.
      const i = this.codec ? this.codecs.indexOf(this.codec) : -1;
      const next = this.codecs[i + 1];
      this.failures = 0;
      if (next) {
        this.codec = next;
      } else {
        this.codec = null;
        this.onProblem("Your video could not be encoded, so your partner won't see you. Chat and sound still work.");
      }
    }
  }

  /** @param {VideoFrame} frame */
  onFrame(frame) {
    if (!this.enabled || !this.codec) return;
    const width = frame.displayWidth & ~1;
    const height = frame.displayHeight & ~1;
    if (width < 2 || height < 2) return;
    const key = `${this.codec} ${width}x${height}`;
    const bitrateMoved = Math.abs(this.bitrateKbps - this.configuredKbps) > this.configuredKbps * 0.1;
    // Configured even while waiting, so the first frame after Matched does not also pay
    // for starting the encoder.
    if (!this.encoder || this.encoder.state === "closed" || this.encoderKey !== key || bitrateMoved) {
      this.configure(width, height, key);
    }
    const matchId = this.sink.matchId();
    if (matchId === null) {
      this.dropHeld();
      this.held = { frame: frame.clone(), captureUs: nowUs() };
      return;
    }
    this.dropHeld();
    const enc = /** @type {VideoEncoder} */ (this.encoder);
    if (enc.encodeQueueSize > MAX_ENCODE_QUEUE) {
      this.stats.framesDropped++;
      return;
    }
    const now = performance.now();
    const keyFrame = this.forceKey || now - this.lastKeyAt > KEYFRAME_INTERVAL_MS;
    if (this.pending.size >= MAX_PENDING_STAMPS) this.pending.clear();
    this.pending.set(frame.timestamp, { captureUs: nowUs(), matchId });
    enc.encode(frame, { keyFrame });
    if (keyFrame) {
      this.forceKey = false;
      this.lastKeyAt = now;
    }
  }

  /** @param {number} width @param {number} height @param {string} key */
  configure(width, height, key) {
    const codec = /** @type {string} */ (this.codec);
    if (!this.encoder || this.encoder.state === "closed" || this.encoderKey.split(" ")[0] !== codec) {
      this.closeEncoder();
      this.encoder = new VideoEncoder({
        output: (chunk, metadata) => this.onChunk(chunk, codec, metadata),
        error: (e) => this.fail(e),
      });
      this.forceKey = true;
    }
    // Reconfiguring the same codec keeps the encoder (a bitrate change needs no keyframe).
    this.encoder.configure({
      codec,
      width,
      height,
      bitrate: this.bitrateKbps * 1000,
      framerate: 30,
      latencyMode: "realtime",
      // "constant": Chromium's VP9 encoder in "variable" mode inserts a keyframe every ~12 frames.
      bitrateMode: "constant",
    });
    this.encoderKey = key;
    this.configuredKbps = this.bitrateKbps;
    this.stats.width = width;
    this.stats.height = height;
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
    const matchId = this.sink.matchId();
    // A frame encoded for the previous partner is never sent to the next one.
    if (!stamp || matchId === null || stamp.matchId !== matchId) return;
    const data = new Uint8Array(chunk.byteLength);
    chunk.copyTo(data);
    const isKey = chunk.type === "key";
    const payload = isKey ? wrapKeyframe(this.description || codec, data) : data;
    const datagrams = this.fragmenter.fragment(matchId, payload, isKey, stamp.captureUs, this.sink.maxDatagramSize());
    if (!datagrams) {
      // Bigger than 256 datagrams: far past any sane bitrate. Ask for a keyframe at a lower rate.
      this.stats.oversized++;
      this.bitrateKbps = Math.max(100, Math.round(this.bitrateKbps / 2));
      this.forceKey = true;
      return;
    }
    this.failures = 0;
    this.stats.framesEncoded++;
    if (isKey) {
      this.stats.keyframes++;
      this.stats.lastKeyframeSentAt = performance.timeOrigin + performance.now();
    }
    for (const d of datagrams) {
      if (this.sink.send(d)) {
        this.stats.datagramsSent++;
        this.stats.bytesSent += d.length;
      }
    }
  }
}

/** Microphone → AudioEncoder (Opus) → one datagram per 20 ms frame. */
export class AudioSender {
  /**
   * @param {MediaStreamTrack} track
   * @param {MediaSink} sink
   * @param {(problem: string) => void} onProblem
   */
  constructor(track, sink, onProblem) {
    this.track = track;
    this.sink = sink;
    this.onProblem = onProblem;
    this.fragmenter = new Fragmenter(TRACK_AUDIO);
    /** @type {AudioEncoder | null} */
    this.encoder = null;
    this.inputRate = 0;
    this.enabled = true;
    this.stopped = false;
    this.failed = false;
    /** Wall clock minus the capture clock, µs: turns an AudioData timestamp into a capture stamp. */
    this.clockOffsetUs = 0;
    /** @type {bigint | null} */
    this.encodingFor = null;
    this.stats = { framesEncoded: 0, bytesSent: 0 };
    /** @type {ReadableStreamDefaultReader<any> | undefined} */
    this.reader = undefined;
  }

  async run() {
    await pumpTrack(this, /** @type {(data: AudioData) => void} */ ((data) => this.onData(data)));
  }

  stop() {
    this.stopped = true;
    this.reader?.cancel().catch(() => {});
    this.closeEncoder();
  }

  newPairing() {
    this.fragmenter.reset();
  }

  /** @param {boolean} on */
  setEnabled(on) {
    this.enabled = on;
    this.track.enabled = on;
  }

  closeEncoder() {
    const enc = this.encoder;
    this.encoder = null;
    if (enc && enc.state !== "closed") {
      try {
        enc.close();
      } catch {
        // Already closed.
      }
    }
  }

  /** @param {unknown} e */
  fail(e) {
    console.warn("duet: audio encoder failed", e);
    this.closeEncoder();
    if (!this.failed) {
      this.failed = true;
      this.onProblem("Your microphone's sound could not be encoded, so your partner won't hear you.");
    }
  }

  /** @param {AudioData} data */
  onData(data) {
    const matchId = this.sink.matchId();
    if (matchId === null || !this.enabled || this.failed) return;
    if (!this.encoder || this.encoder.state === "closed" || this.inputRate !== data.sampleRate) {
      this.closeEncoder();
      this.inputRate = data.sampleRate;
      this.encoder = new AudioEncoder({ output: (chunk) => this.onChunk(chunk), error: (e) => this.fail(e) });
      /** @type {AudioEncoderConfig & {opus?: any}} */
      const config = {
        codec: AUDIO_CODEC,
        sampleRate: data.sampleRate,
        numberOfChannels: 1,
        bitrate: AUDIO_BITRATE,
        opus: { frameDuration: AUDIO_FRAME_US },
      };
      this.encoder.configure(config);
    }
    this.clockOffsetUs = Number(nowUs()) - data.timestamp;
    const mono = data.numberOfChannels === 1 ? null : downmix(data);
    try {
      this.encoder.encode(mono ?? data);
    } finally {
      mono?.close();
    }
  }

  /** @param {EncodedAudioChunk} chunk */
  onChunk(chunk) {
    const matchId = this.sink.matchId();
    if (matchId === null) return;
    const payload = new Uint8Array(chunk.byteLength);
    chunk.copyTo(payload);
    const captureUs = BigInt(Math.round(chunk.timestamp + this.clockOffsetUs));
    const datagrams = this.fragmenter.fragment(matchId, payload, true, captureUs, this.sink.maxDatagramSize());
    if (!datagrams) return;
    this.stats.framesEncoded++;
    for (const d of datagrams) if (this.sink.send(d)) this.stats.bytesSent += d.length;
  }
}

/**
 * Averages all channels into one.
 * @param {AudioData} data
 * @returns {AudioData}
 */
function downmix(data) {
  const n = data.numberOfFrames;
  const out = new Float32Array(n);
  const plane = new Float32Array(n);
  for (let ch = 0; ch < data.numberOfChannels; ch++) {
    data.copyTo(plane, { planeIndex: ch, format: "f32-planar" });
    for (let i = 0; i < n; i++) out[i] += plane[i] / data.numberOfChannels;
  }
  return new AudioData({ format: "f32-planar", sampleRate: data.sampleRate, numberOfFrames: n, numberOfChannels: 1, timestamp: data.timestamp, data: out });
}

/** Reassembled video frames → VideoDecoder → the partner canvas. */
export class VideoReceiver {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {object} hooks
   * @param {() => void} hooks.requestKeyframe ask the partner for a keyframe (the caller rate-limits)
   * @param {(info: {latencyMs: number, width: number, height: number}) => void} hooks.onFrame a frame was drawn
   * @param {(problem: string) => void} hooks.onProblem
   */
  constructor(canvas, hooks) {
    this.canvas = canvas;
    this.ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d", { alpha: false }));
    this.hooks = hooks;
    /** @type {VideoDecoder | null} */
    this.decoder = null;
    /** @type {string | null} */
    this.codec = null;
    /** The keyframe description the decoder is configured from. @type {string | null} */
    this.description = null;
    /** @type {VideoDecoderConfig | null} */
    this.config = null;
    this.waitingForKey = true;
    /**
     * Output is drawn only from the first keyframe decoded after a reset (by its
     * timestamp), so no frame of the previous partner still inside the decoder is shown
     * or counted for the next one.
     * @type {number | null}
     */
    this.keyTimestamp = null;
    this.accepting = true;
    this.failures = 0;
    this.stats = { framesDecoded: 0, framesDropped: 0, decodeErrors: 0, keyframes: 0 };
    /** @type {number[]} */
    this.latencies = [];
  }

  /**
   * A new pairing: drop whatever the decoder still holds from the last partner and blank
   * the canvas. The decoder itself is kept, configured, so the next partner's first
   * keyframe (usually the same codec) does not wait for a new one to start.
   */
  reset() {
    const dec = this.decoder;
    if (dec && dec.state === "configured" && this.config) {
      try {
        dec.reset();
        dec.configure(this.config);
      } catch (e) {
        this.closeDecoder();
      }
    }
    this.accepting = false;
    this.keyTimestamp = null;
    this.waitingForKey = true;
    this.ctx.fillStyle = "#000";
    this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
  }

  closeDecoder() {
    const dec = this.decoder;
    this.decoder = null;
    this.codec = null;
    this.description = null;
    this.config = null;
    if (dec && dec.state !== "closed") {
      try {
        dec.close();
      } catch {
        // Already closed by an error.
      }
    }
  }

  /** @param {import("./fragment.js").Frame} frame */
  push(frame) {
    let data = frame.data;
    if (frame.keyframe) {
      const parsed = unwrapKeyframe(frame.data);
      if (!parsed) {
        this.stats.framesDropped++;
        return;
      }
      data = parsed.data;
      if (!this.decoder || this.decoder.state === "closed" || parsed.description !== this.description) {
        /** @type {VideoDecoderConfig} */
        const config = { codec: parsed.config.codec, optimizeForLatency: true };
        if (parsed.config.colorSpace) config.colorSpace = /** @type {VideoColorSpaceInit} */ (parsed.config.colorSpace);
        try {
          if (!this.decoder || this.decoder.state === "closed") {
            this.decoder = new VideoDecoder({ output: (f) => this.draw(f), error: (e) => this.onError(e) });
          }
          this.decoder.configure(config);
        } catch (e) {
          // A description this browser refuses outright (TypeError): like a decode error.
          this.onError(e);
          return;
        }
        this.codec = parsed.config.codec;
        this.description = parsed.description;
        this.config = config;
      }
      this.waitingForKey = false;
      if (!this.accepting && this.keyTimestamp === null) this.keyTimestamp = Number(frame.captureUs);
      this.stats.keyframes++;
    } else if (this.waitingForKey || !this.decoder || this.decoder.state !== "configured") {
      this.stats.framesDropped++;
      this.hooks.requestKeyframe();
      return;
    }
    const dec = /** @type {VideoDecoder} */ (this.decoder);
    if (!frame.keyframe && dec.decodeQueueSize > MAX_DECODE_QUEUE) {
      // The decoder cannot keep up: skip to the next keyframe rather than fall behind.
      this.stats.framesDropped++;
      this.waitingForKey = true;
      this.hooks.requestKeyframe();
      return;
    }
    try {
      dec.decode(new EncodedVideoChunk({ type: frame.keyframe ? "key" : "delta", timestamp: Number(frame.captureUs), data }));
    } catch (e) {
      this.onError(e);
    }
  }

  /** @param {unknown} e */
  onError(e) {
    console.warn("duet: video decoder failed", e);
    this.stats.decodeErrors++;
    this.closeDecoder();
    this.waitingForKey = true;
    this.keyTimestamp = null;
    this.failures++;
    if (this.failures === 5) this.hooks.onProblem("Your partner's video cannot be decoded here. Chat and sound still work.");
    this.hooks.requestKeyframe();
  }

  /** @param {VideoFrame} frame */
  draw(frame) {
    try {
      if (!this.accepting) {
        if (frame.timestamp !== this.keyTimestamp) return;
        this.accepting = true;
      }
      const w = frame.displayWidth;
      const h = frame.displayHeight;
      if (this.canvas.width !== w || this.canvas.height !== h) {
        this.canvas.width = w;
        this.canvas.height = h;
      }
      this.ctx.drawImage(frame, 0, 0, w, h);
      this.failures = 0;
      this.stats.framesDecoded++;
      const latencyMs = (Number(nowUs()) - frame.timestamp) / 1000;
      if (this.latencies.length >= MAX_LATENCY_SAMPLES) this.latencies.shift();
      this.latencies.push(latencyMs);
      this.hooks.onFrame({ latencyMs, width: w, height: h });
    } finally {
      frame.close();
    }
  }
}

/** Reassembled Opus frames → AudioDecoder → JitterBuffer → Web Audio. */
export class AudioReceiver {
  /** @param {AudioContext | null} ctx null when Web Audio is unavailable (frames are still decoded and counted) */
  constructor(ctx) {
    this.ctx = ctx;
    /** @type {JitterBuffer<Float32Array<ArrayBuffer>>} */
    this.jitter = new JitterBuffer();
    /** @type {AudioDecoder | null} */
    this.decoder = null;
    this.generation = 0;
    this.playHead = 0;
    this.muted = false;
    this.stats = { framesDecoded: 0, decodeErrors: 0, framesPlayed: 0 };
    this.timer = setInterval(() => this.tick(), AUDIO_TICK_MS);
    if (ctx) {
      this.gain = ctx.createGain();
      this.gain.connect(ctx.destination);
    }
  }

  reset() {
    this.generation++;
    this.jitter.reset();
    this.closeDecoder();
  }

  stop() {
    clearInterval(this.timer);
    this.closeDecoder();
  }

  closeDecoder() {
    const dec = this.decoder;
    this.decoder = null;
    if (dec && dec.state !== "closed") {
      try {
        dec.close();
      } catch {
        // Already closed.
      }
    }
  }

  /** @param {import("./fragment.js").Frame} frame */
  push(frame) {
    if (typeof AudioDecoder === "undefined") return;
    if (!this.decoder || this.decoder.state === "closed") {
      const generation = this.generation;
      this.decoder = new AudioDecoder({
        output: (d) => this.onDecoded(d, generation),
        error: (e) => {
          console.warn("duet: audio decoder failed", e);
          this.stats.decodeErrors++;
          this.closeDecoder();
        },
      });
      this.decoder.configure({ codec: AUDIO_CODEC, sampleRate: AUDIO_SAMPLE_RATE, numberOfChannels: 1 });
    }
    try {
      // The frame number rides in the timestamp so the jitter buffer can order the output.
      this.decoder.decode(new EncodedAudioChunk({ type: "key", timestamp: frame.frame * AUDIO_FRAME_US, data: frame.data }));
    } catch (e) {
      this.stats.decodeErrors++;
      this.closeDecoder();
    }
  }

  /** @param {AudioData} data @param {number} generation */
  onDecoded(data, generation) {
    try {
      if (generation !== this.generation) return;
      const samples = new Float32Array(data.numberOfFrames);
      data.copyTo(samples, { planeIndex: 0, format: "f32-planar" });
      this.stats.framesDecoded++;
      this.sampleRate = data.sampleRate;
      this.jitter.push(Math.round(data.timestamp / AUDIO_FRAME_US), samples);
    } finally {
      data.close();
    }
  }

  tick() {
    const ctx = this.ctx;
    if (!ctx || !this.gain) {
      // No Web Audio: keep the buffer draining so it does not just fill up.
      while (this.jitter.depth > 0 && this.jitter.pop());
      return;
    }
    const now = ctx.currentTime;
    // Fell behind the audio clock (a stall, or first start): re-anchor a little ahead.
    if (this.playHead < now) this.playHead = now + 0.02;
    while (this.playHead < now + AUDIO_LOOKAHEAD_S) {
      const p = this.jitter.pop();
      if (!p) break;
      if (p.kind === "gap") {
        this.playHead += AUDIO_FRAME_US / 1e6;
        continue;
      }
      const rate = this.sampleRate ?? AUDIO_SAMPLE_RATE;
      const buf = ctx.createBuffer(1, p.item.length, rate);
      buf.copyToChannel(p.item, 0);
      const src = ctx.createBufferSource();
      src.buffer = buf;
      src.connect(this.gain);
      src.start(this.playHead);
      this.playHead += p.item.length / rate;
      this.stats.framesPlayed++;
    }
  }
}
