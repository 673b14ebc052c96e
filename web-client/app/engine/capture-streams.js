// @ts-check
/**
 * @file The worker's end of a capture source: what the page sent (engine/messages.js
 * `AudioSource`) as the stream of `AudioData` the audio sender reads. Where the browser has
 * `MediaStreamTrackProcessor` the page sent that stream itself; elsewhere (Firefox) it sent
 * the port of its capture worklet (engine/audio-capture.js), whose 20 ms blocks become
 * `AudioData` here. The stream holds a few blocks at most: past that a block is dropped,
 * never queued, so a busy encoder cannot build up delay.
 */

/** Blocks (20 ms each) a worklet-fed stream holds before it drops. */
const MAX_QUEUED_BLOCKS = 10;

/**
 * @param {import("./messages.js").AudioSource} source
 * @returns {ReadableStream<AudioData>}
 */
export function audioStream(source) {
  if (source.kind === "stream") return source.readable;
  const { port, sampleRate } = source;
  return new ReadableStream(
    {
      start(controller) {
        port.onmessage = (/** @type {MessageEvent<{samples: Float32Array, frame: number}>} */ ev) => {
          const { samples, frame } = ev.data;
          if ((controller.desiredSize ?? 0) <= 0) return;
          controller.enqueue(
            new AudioData({
              format: "f32-planar",
              sampleRate,
              numberOfFrames: samples.length,
              numberOfChannels: 1,
              timestamp: Math.round((frame / sampleRate) * 1e6),
              data: /** @type {Float32Array<ArrayBuffer>} */ (samples),
            }),
          );
        };
      },
      cancel() {
        port.onmessage = null;
        port.close();
      },
    },
    { highWaterMark: MAX_QUEUED_BLOCKS },
  );
}
