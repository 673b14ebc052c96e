// @ts-check
/**
 * @file Where decoded partner frames go to be seen, in the worker: a video track the page
 * shows in a `<video>`, or, where the browser has no track generator, an `OffscreenCanvas`.
 *
 * The track (Chromium's `MediaStreamTrackGenerator`, made on the page, its `writable`
 * transferred here) is the path WebRTC's own remote video takes: the decoded frame goes to
 * the compositor as it is, with no conversion on the CPU and no upload by script, and the
 * compositor presents it without the page's main thread (measured: 13 frames presented
 * during a 500 ms busy loop on the page). A frame written is owned by the track.
 *
 * The canvas (Firefox) is painted the way that survives a busy main thread in a worker:
 * the planes copied as they are (`copyTo` with no format), converted on the CPU
 * (wire/yuv.js) and written with `putImageData`. `drawImage(videoFrame)` on a worker's
 * canvas asks Chromium's shared GPU context about compositing, a synchronous round trip to
 * the main thread, so it froze with a busy page.
 *
 * Both show one frame at a time: `show` resolves when the frame is handed over, and the
 * receiver hands over only the newest frame decoded meanwhile.
 */

import { yuvToRgba } from "../wire/yuv.js";

/** Size of the black picture that replaces the partner's when a pairing ends. */
const BLANK_WIDTH = 64;
const BLANK_HEIGHT = 48;

/**
 * Copies a frame into RGBA pixels, on the CPU when the layout is a known YUV one.
 * @param {VideoFrame} frame
 * @param {{planes: Uint8Array, pixels: ImageData | null}} scratch reused buffers, grown as needed
 * @returns {Promise<ImageData>}
 */
export async function framePixels(frame, scratch) {
  const w = frame.visibleRect?.width ?? frame.displayWidth;
  const h = frame.visibleRect?.height ?? frame.displayHeight;
  if (!scratch.pixels || scratch.pixels.width !== w || scratch.pixels.height !== h) scratch.pixels = new ImageData(w, h);
  const pixels = scratch.pixels;
  const size = frame.allocationSize();
  if (scratch.planes.length < size) scratch.planes = new Uint8Array(size);
  const planes = scratch.planes.subarray(0, size);
  const layout = await frame.copyTo(planes);
  if (!yuvToRgba(planes, layout, frame.format, w, h, pixels.data)) {
    // A layout wire/yuv.js does not know (RGB from some hardware decoders): the browser converts.
    await frame.copyTo(pixels.data, { format: "RGBA", colorSpace: "srgb" });
  }
  return pixels;
}

/** Frames to a video track the page shows (`MediaStreamTrackGenerator.writable`). */
export class TrackDisplay {
  /** @param {WritableStream<VideoFrame>} writable */
  constructor(writable) {
    this.writer = writable.getWriter();
    this.kind = "track";
    /** The track is gone (the page closed it): frames are dropped. */
    this.broken = false;
    // A black frame now, so the page's <video> has started playing before the first
    // partner's face arrives: a never-played element took 30-50 ms more to show it.
    this.blank();
  }

  /**
   * Hands the frame to the track. The caller keeps no reference; the handle is closed here
   * once the track has taken the frame (the track keeps the picture itself), so no frame is
   * ever left for the garbage collector whatever the track does with it.
   * @param {VideoFrame} frame @returns {Promise<void>}
   */
  async show(frame) {
    if (this.broken) {
      frame.close();
      return;
    }
    try {
      await this.writer.write(frame);
    } catch (e) {
      this.broken = true;
      throw e;
    } finally {
      frame.close();
    }
  }

  /** The partner's last picture gives way to black at once. */
  blank() {
    if (this.broken) return;
    const y = BLANK_WIDTH * BLANK_HEIGHT;
    const data = new Uint8Array(y * 1.5);
    data.fill(16, 0, y); // limited-range black
    data.fill(128, y); // no colour
    const frame = new VideoFrame(data, { format: "I420", codedWidth: BLANK_WIDTH, codedHeight: BLANK_HEIGHT, timestamp: 0 });
    this.writer.write(frame).then(
      () => frame.close(),
      () => {
        this.broken = true;
        frame.close();
      },
    );
  }
}

/** Frames painted into an `OffscreenCanvas` (browsers without a track generator). */
export class CanvasDisplay {
  /** @param {OffscreenCanvas} canvas */
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = /** @type {OffscreenCanvasRenderingContext2D} */ (canvas.getContext("2d", { alpha: false }));
    this.kind = "canvas";
    /** @type {{planes: Uint8Array, pixels: ImageData | null}} */
    this.scratch = { planes: new Uint8Array(0), pixels: null };
    /** Bumped by `blank()`: a copy that finishes after it is not painted. */
    this.generation = 0;
  }

  /** @param {VideoFrame} frame @returns {Promise<void>} */
  async show(frame) {
    const generation = this.generation;
    try {
      const pixels = await framePixels(frame, this.scratch);
      if (generation !== this.generation) return; // the partner changed meanwhile: stay blank
      if (this.canvas.width !== pixels.width || this.canvas.height !== pixels.height) {
        this.canvas.width = pixels.width;
        this.canvas.height = pixels.height;
      }
      this.ctx.putImageData(pixels, 0, 0);
    } finally {
      frame.close();
    }
  }

  blank() {
    this.generation++;
    this.ctx.fillStyle = "#000";
    this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
  }
}

/** @typedef {TrackDisplay | CanvasDisplay} VideoDisplay */
