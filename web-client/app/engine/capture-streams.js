// @ts-check
/**
 * @file The worker's end of a capture source: what the page sent (engine/messages.js
 * `VideoSource`, `AudioSource`) as the streams of `VideoFrame` and `AudioData` the senders
 * read.
 *
 * Video: a stream the page made (its processor's, or from its `<video>`) arrives ready;
 * a transferred camera track (Safari, whose `MediaStreamTrackProcessor` lives in workers
 * only) is read here with the worker's own processor, at most one frame waiting, and
 * stopped when the sender is done with it.
 *
 * Audio: where the browser has `MediaStreamTrackProcessor` the page sent that stream
 * itself; elsewhere (Firefox, Safari) it sent the port of its capture worklet
 * (engine/audio-capture.js), whose 20 ms blocks become `AudioData` here. The stream holds a
 * few blocks at most: past that a block is dropped, never queued, so a busy encoder cannot
 * build up delay.
 */

/** Whether this worker can read a transferred track itself (reported to the page as `caps`). */
export function hasTrackProcessor() {
  return typeof MediaStreamTrackProcessor === "function";
}

/**
 * @param {import("./messages.js").VideoSource} source
 * @returns {ReadableStream<VideoFrame>}
 */
export function videoStream(source) {
  if (source.kind !== "track") return source.readable;
  const track = source.track;
  /** @type {ReadableStreamDefaultReader<VideoFrame>} */
  let reader;
  try {
    reader = /** @type {ReadableStream<VideoFrame>} */ (new MediaStreamTrackProcessor({ track, maxBufferSize: 1 }).readable).getReader();
  } catch (e) {
    track.stop();
    throw e;
  }
  return new ReadableStream(
    {
      async pull(controller) {
        const { done, value } = await reader.read();
        if (done) {
          track.stop();
          controller.close();
        } else controller.enqueue(value);
      },
      async cancel() {
        track.stop();
        await reader.cancel().catch(() => {});
      },
    },
    { highWaterMark: 0 },
  );
}

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
