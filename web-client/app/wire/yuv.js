// @ts-check
/**
 * @file Decoded YUV pictures (I420, NV12: what VP8, VP9 and H.264 software decoders give)
 * to RGBA, on the CPU, for the worker's partner canvas.
 *
 * Why by hand: in a worker, Chromium's own conversions (`drawImage(videoFrame)`,
 * `VideoFrame.copyTo` with an RGB format) first ask the shared GPU context, which on a
 * worker thread is a synchronous round trip to the page's main thread; a busy page then
 * froze the partner video. Copying the planes as they are and converting here does not.
 * BT.601 limited range, the colour space these decoders output for camera video.
 *
 * No browser API here: Node's test runner covers it.
 */

/**
 * @typedef {object} Plane where one plane lies in the copied buffer
 * @property {number} offset
 * @property {number} stride
 */

/**
 * Converts one picture. Returns false for a layout it does not know (the caller then
 * uses the browser's conversion).
 * @param {Uint8Array} src the planes, as `VideoFrame.copyTo` wrote them
 * @param {Plane[]} layout the plane layout `copyTo` returned
 * @param {string | null} format `VideoFrame.format`
 * @param {number} width
 * @param {number} height
 * @param {Uint8ClampedArray} out width × height × 4 bytes (clamping does the saturation)
 * @returns {boolean}
 */
export function yuvToRgba(src, layout, format, width, height, out) {
  const interleaved = format === "NV12";
  if (!(format === "I420" || format === "I420A" || interleaved) || layout.length < (interleaved ? 2 : 3)) return false;
  const y = layout[0];
  const u = layout[1];
  const v = interleaved ? { offset: u.offset + 1, stride: u.stride } : layout[2];
  const step = interleaved ? 2 : 1;
  for (let row = 0; row < height; row++) {
    const yRow = y.offset + row * y.stride;
    const cRow = row >> 1;
    const uRow = u.offset + cRow * u.stride;
    const vRow = v.offset + cRow * v.stride;
    let o = row * width * 4;
    for (let col = 0; col < width; col++) {
      const c = 298 * (src[yRow + col] - 16);
      const ci = (col >> 1) * step;
      const d = src[uRow + ci] - 128;
      const e = src[vRow + ci] - 128;
      out[o] = (c + 409 * e + 128) >> 8;
      out[o + 1] = (c - 100 * d - 208 * e + 128) >> 8;
      out[o + 2] = (c + 516 * d + 128) >> 8;
      out[o + 3] = 255;
      o += 4;
    }
  }
  return true;
}
