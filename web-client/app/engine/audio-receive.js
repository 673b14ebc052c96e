// @ts-check
/**
 * @file Reassembled Opus frames → `AudioDecoder` → the playout worklet (audio-playout.js),
 * in the worker. Decoded samples go straight to the worklet through a MessagePort, never
 * through the page's main thread. The frame number rides along so the worklet's jitter
 * buffer plays frames in order, whatever order they arrived in. From the worklet's
 * reports of what it is playing and the capture stamps of the frames it was given, the
 * receiver knows the sound's capture-to-playout delay (for A/V sync): to when it is handed
 * to the audio device, where the page has said how the audio clock maps to the wall clock.
 */

import { epochMs } from "../wire/clock.js";

const AUDIO_SAMPLE_RATE = 48_000;
/** Capture stamps kept by frame number (a few seconds of frames), for the playout delay. */
const MAX_CAPTURE_STAMPS = 256;
/** Playout-delay samples kept (the worklet reports about four times a second). */
const MAX_DELAY_SAMPLES = 20;
/** No report of a frame being played for this long (the partner's microphone off): no delay to sync to. */
const DELAY_STALE_MS = 1000;
/** One Opus frame is 20 ms; its frame number in the decoder's timestamp orders its output. */
const FRAME_US = 20_000;

export class AudioReceiver {
  /** @param {MessagePort | null} playout the worklet's port; null where the page has no Web Audio */
  constructor(playout) {
    this.playout = playout;
    /** @type {AudioDecoder | null} */
    this.decoder = null;
    this.generation = 0;
    this.stats = { framesDecoded: 0, decodeErrors: 0 };
    /** What the worklet last said about its playout. @type {Record<string, number>} */
    this.playoutStats = { framesPlayed: 0, gaps: 0, concealed: 0, outOfOrder: 0, late: 0, depth: 0 };
    /** Capture time (epoch ms) of this partner's frames, by frame number. @type {Map<number, number>} */
    this.captureMs = new Map();
    /** Capture-to-playout delay of the sound, newest last, ms. @type {number[]} */
    this.delays = [];
    /** Wall-clock ms at which the output plays audio-context time 0 (the page says), or null. @type {number | null} */
    this.clockOffsetMs = null;
    /** When the newest delay sample came (epoch ms), and the samples' median (null: not yet computed). */
    this.delayAt = 0;
    /** @type {number | null} */
    this.delayMedian = null;
    if (playout) {
      playout.onmessage = (ev) => {
        if (ev.data && typeof ev.data === "object") this.onPlayout(ev.data);
      };
    }
  }

  /** The worklet's report: its counters, and which frame it is playing how far in. @param {Record<string, number>} report */
  onPlayout(report) {
    this.playoutStats = report;
    const captured = report.playingSeq === undefined ? undefined : this.captureMs.get(report.playingSeq);
    if (captured === undefined) return;
    if (this.delays.length >= MAX_DELAY_SAMPLES) this.delays.shift();
    const now = epochMs();
    // When that sample left for the device: from the audio clock where the page told us how
    // it maps (this also leaves out how long the report took to reach this busy thread);
    // else now.
    const heard = this.clockOffsetMs !== null && typeof report.renderedTime === "number" ? report.renderedTime * 1000 + this.clockOffsetMs : now;
    this.delays.push(heard - (captured + (report.playingOffsetMs ?? 0)));
    this.delayAt = now;
    this.delayMedian = null;
  }

  /** Median capture-to-playout delay over the last few seconds, ms; null while no sound plays. */
  get delayMs() {
    if (!this.delays.length || epochMs() - this.delayAt > DELAY_STALE_MS) return null;
    if (this.delayMedian === null) this.delayMedian = [...this.delays].sort((a, b) => a - b)[this.delays.length >> 1];
    return this.delayMedian;
  }

  /** A new partner (or none): their audio starts from an empty jitter buffer. */
  reset() {
    this.generation++;
    this.captureMs.clear();
    this.delays = [];
    this.delayMedian = null;
    this.playout?.postMessage({ type: "reset" });
    this.closeDecoder();
  }

  stop() {
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

  /** @param {import("../wire/fragment.js").Frame} frame */
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
      this.decoder.configure({ codec: "opus", sampleRate: AUDIO_SAMPLE_RATE, numberOfChannels: 1 });
    }
    if (this.captureMs.size >= MAX_CAPTURE_STAMPS) this.captureMs.delete(/** @type {number} */ (this.captureMs.keys().next().value));
    this.captureMs.set(frame.frame, Number(frame.captureUs) / 1000);
    try {
      this.decoder.decode(new EncodedAudioChunk({ type: "key", timestamp: frame.frame * FRAME_US, data: frame.data }));
    } catch {
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
      const seq = Math.round(data.timestamp / FRAME_US);
      this.playout?.postMessage({ type: "frame", seq, samples }, [samples.buffer]);
    } finally {
      data.close();
    }
  }
}
