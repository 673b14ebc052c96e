// @ts-check
/**
 * @file The partner's audio on the audio thread: an `AudioWorkletProcessor` that takes
 * decoded 20 ms frames from the worker (through a MessagePort, never through the page's
 * main thread), orders them in a jitter buffer (wire/jitter.js), and plays them out 128
 * samples at a time. A frame missing when its turn comes is concealed: the last frame is
 * played again, fading, so a single lost 20 ms frame is a soft dip rather than a click.
 *
 * Loaded by the page with `audioWorklet.addModule`; registered as "duet-playout".
 */

import { JitterBuffer } from "../wire/jitter.js";

/** Stats are sent to the worker this often (in 128-sample render quanta: ~250 ms). */
const STATS_EVERY_QUANTA = 94;
/** Each concealed repeat of the last frame is this much quieter than the one before. */
const CONCEAL_GAIN = 0.5;

/** @typedef {{seq: number, samples: Float32Array}} PcmFrame */

// AudioWorkletGlobalScope names (not in TypeScript's DOM library).
/** @type {any} */
const scope = globalThis;

class DuetPlayout extends scope.AudioWorkletProcessor {
  constructor() {
    super();
    /** @type {JitterBuffer<Float32Array>} */
    this.jitter = new JitterBuffer();
    /** The frame being played, and how far into it. @type {Float32Array | null} */
    this.current = null;
    this.offset = 0;
    /** The last real frame, for concealment, and the gain of the next repeat. @type {Float32Array | null} */
    this.last = null;
    this.concealGain = CONCEAL_GAIN;
    this.lastSeq = -1;
    this.quanta = 0;
    this.stats = { framesPlayed: 0, gaps: 0, concealed: 0, outOfOrder: 0, late: 0, depth: 0 };
    /** @type {MessagePort | null} the worker's end */
    this.worker = null;
    this.port.onmessage = (/** @type {MessageEvent} */ ev) => {
      if (ev.data?.type === "port" && ev.data.port) {
        this.worker = ev.data.port;
        /** @type {MessagePort} */ (this.worker).onmessage = (/** @type {MessageEvent} */ e) => this.onWorker(e.data);
      }
    };
  }

  /** @param {any} msg */
  onWorker(msg) {
    if (msg?.type === "frame" && msg.samples instanceof Float32Array && Number.isInteger(msg.seq)) {
      if (this.jitter.push(msg.seq, msg.samples) === "late") this.stats.late++;
    } else if (msg?.type === "reset") {
      this.jitter.reset();
      this.current = null;
      this.last = null;
      this.lastSeq = -1;
    }
  }

  /** The next 20 ms to play, or null to play silence while the buffer fills. */
  nextFrame() {
    const p = this.jitter.pop();
    if (!p) return null;
    if (p.kind === "gap") {
      this.stats.gaps++;
      if (!this.last) return null;
      this.stats.concealed++;
      const out = new Float32Array(this.last.length);
      for (let i = 0; i < out.length; i++) out[i] = this.last[i] * this.concealGain;
      this.concealGain *= CONCEAL_GAIN;
      return out;
    }
    if (p.seq <= this.lastSeq) this.stats.outOfOrder++;
    this.lastSeq = p.seq;
    this.stats.framesPlayed++;
    this.last = p.item;
    this.concealGain = CONCEAL_GAIN;
    return p.item;
  }

  /** @param {Float32Array[][]} _inputs @param {Float32Array[][]} outputs */
  process(_inputs, outputs) {
    const out = outputs[0]?.[0];
    if (out) {
      let i = 0;
      while (i < out.length) {
        if (!this.current || this.offset >= this.current.length) {
          this.current = this.nextFrame();
          this.offset = 0;
          if (!this.current) break;
        }
        const n = Math.min(out.length - i, this.current.length - this.offset);
        out.set(this.current.subarray(this.offset, this.offset + n), i);
        i += n;
        this.offset += n;
      }
      for (let ch = 1; ch < outputs[0].length; ch++) outputs[0][ch].set(out);
    }
    if (++this.quanta >= STATS_EVERY_QUANTA) {
      this.quanta = 0;
      this.stats.depth = this.jitter.depth;
      // What is playing now (the worker turns it into capture-to-playout delay, for A/V sync).
      // `renderedTime`: the context time just past what this call rendered, which is where
      // `offset` points in the frame being played.
      const rendered = scope.currentTime + (out?.length ?? 0) / scope.sampleRate;
      const playing = this.lastSeq >= 0 && this.current ? { playingSeq: this.lastSeq, playingOffsetMs: (this.offset / scope.sampleRate) * 1000, renderedTime: rendered } : {};
      this.worker?.postMessage({ ...this.stats, ...playing, ...Object.fromEntries(Object.entries(this.jitter.stats).map(([k, v]) => [`jitter_${k}`, v])) });
    }
    return true;
  }
}

scope.registerProcessor("duet-playout", DuetPlayout);
