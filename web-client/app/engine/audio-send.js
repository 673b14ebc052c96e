// @ts-check
/**
 * @file Microphone → `AudioEncoder` (Opus, mono, 20 ms frames) → sealed end to end
 * (engine/pairing-crypto.js) → one datagram per frame, in the worker. Frames are numbered
 * before they are sealed and sent in number order once sealed; nothing goes before the
 * pairing's keys are agreed (the sink says no pairing until then).
 */

import { Fragmenter, refFrameOf } from "../wire/fragment.js";
import { InOrder, MAX_IN_ORDER } from "./pairing-crypto.js";
import { TRACK_AUDIO } from "../wire/protocol.js";
import { nowUs } from "../wire/clock.js";
import { pump } from "./pump.js";

/** Opus frame length: 20 ms, one datagram each. */
export const AUDIO_FRAME_US = 20_000;
const AUDIO_BITRATE = 32_000;

export class AudioSender {
  /**
   * @param {ReadableStream<AudioData>} samples
   * @param {import("./video-send.js").MediaSink} sink
   * @param {(problem: string) => void} onProblem
   */
  constructor(samples, sink, onProblem) {
    this.samples = samples;
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
    /** Frames being sealed, sent in number order. */
    this.sealing = new InOrder(MAX_IN_ORDER);
    /** sealDropped: frames dropped because too many waited to be sealed, or a seal failed. */
    this.stats = { framesEncoded: 0, bytesSent: 0, sealDropped: 0 };
    /** @type {ReadableStreamDefaultReader<AudioData> | undefined} */
    this.reader = undefined;
  }

  async run() {
    await pump(this.samples, this, (data) => this.onData(data));
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
      const config = { codec: "opus", sampleRate: data.sampleRate, numberOfChannels: 1, bitrate: AUDIO_BITRATE, opus: { frameDuration: AUDIO_FRAME_US } };
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
    if (this.sealing.full) {
      // Sealing has fallen far behind (it never should): this frame would play late anyway.
      this.stats.sealDropped++;
      return;
    }
    const frame = this.fragmenter.reserve();
    // Each Opus frame stands alone: a "keyframe" referencing itself, as the fragmenter writes it.
    const header = { frame, keyframe: true, captureUs, refFrame: refFrameOf(frame, true, 1) };
    const turn = this.sealing.push(this.sink.seal(matchId, TRACK_AUDIO, header, payload), (sealed) => {
      if (this.sink.matchId() !== matchId) return; // sealed for the last partner
      const datagrams = this.fragmenter.fragment(matchId, sealed, true, captureUs, this.sink.maxDatagramSize(), 1, false, frame);
      if (!datagrams) return;
      this.stats.framesEncoded++;
      for (const d of datagrams) if (this.sink.send(d)) this.stats.bytesSent += d.length;
    });
    turn?.catch((e) => {
      if (this.sink.matchId() !== matchId) return; // the pairing ended meanwhile
      this.stats.sealDropped++;
      console.warn("duet: an audio frame could not be sealed", e);
    });
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
