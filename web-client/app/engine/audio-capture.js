// @ts-check
/**
 * @file The microphone on the audio thread, for browsers without `MediaStreamTrackProcessor`
 * (Firefox): an `AudioWorkletProcessor` that gathers the microphone's 128-sample quanta into
 * 20 ms blocks of mono samples and posts each, with the audio clock's frame number, straight
 * to the media worker through a MessagePort (never through the page's main thread). The
 * worker turns them into `AudioData` for its Opus encoder (engine/capture-streams.js).
 *
 * Loaded by the page with `audioWorklet.addModule`; registered as "duet-capture".
 */

/** 20 ms at 48 kHz: one Opus frame. */
const BLOCK_MS = 20;

// AudioWorkletGlobalScope names (not in TypeScript's DOM library).
/** @type {any} */
const scope = globalThis;

class DuetCapture extends scope.AudioWorkletProcessor {
  constructor() {
    super();
    this.blockFrames = Math.round((scope.sampleRate * BLOCK_MS) / 1000);
    this.block = new Float32Array(this.blockFrames);
    this.filled = 0;
    /** Audio-clock frame of the block's first sample. */
    this.blockStart = 0;
    /** @type {MessagePort | null} the worker's end */
    this.worker = null;
    this.port.onmessage = (/** @type {MessageEvent} */ ev) => {
      if (ev.data?.type === "port") this.worker = ev.data.port;
      if (ev.data?.type === "stop") {
        this.worker?.close();
        this.worker = null;
      }
    };
  }

  /** @param {Float32Array[][]} inputs */
  process(inputs) {
    const channels = inputs[0] ?? [];
    const n = channels[0]?.length ?? 0;
    for (let i = 0; i < n; i++) {
      if (this.filled === 0) this.blockStart = scope.currentFrame + i;
      let sum = 0;
      for (const ch of channels) sum += ch[i];
      this.block[this.filled++] = sum / channels.length;
      if (this.filled === this.blockFrames) {
        const samples = this.block;
        this.worker?.postMessage({ samples, frame: this.blockStart }, [samples.buffer]);
        this.block = new Float32Array(this.blockFrames);
        this.filled = 0;
      }
    }
    return true;
  }
}

scope.registerProcessor("duet-capture", DuetCapture);
