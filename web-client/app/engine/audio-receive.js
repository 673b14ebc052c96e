// @ts-check
/**
 * @file Reassembled Opus frames → `AudioDecoder` → the playout worklet (audio-playout.js),
 * in the worker. Decoded samples go straight to the worklet through a MessagePort, never
 * through the page's main thread. The frame number rides along so the worklet's jitter
 * buffer plays frames in order, whatever order they arrived in.
 */

const AUDIO_SAMPLE_RATE = 48_000;
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
    if (playout) {
      playout.onmessage = (ev) => {
        if (ev.data && typeof ev.data === "object") this.playoutStats = ev.data;
      };
    }
  }

  /** A new partner (or none): their audio starts from an empty jitter buffer. */
  reset() {
    this.generation++;
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
