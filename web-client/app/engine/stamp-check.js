// @ts-check
/**
 * @file Checks a painted VideoFrame against wire/stamp.js (the browser tests' checksummed
 * camera): reads it through a small OffscreenCanvas. Off unless a test turns it on.
 */

import { readStamp } from "../wire/stamp.js";

/** Frames are read at this size: enough pixels per block and tile, cheap to read back. */
const W = 192;
const H = 144;
/** @type {OffscreenCanvasRenderingContext2D | null} */
let ctx = null;

/** @param {VideoFrame} frame @returns {boolean} the picture is one the sender drew */
export function checkStamp(frame) {
  ctx ??= /** @type {OffscreenCanvasRenderingContext2D} */ (new OffscreenCanvas(W, H).getContext("2d", { willReadFrequently: true }));
  ctx.drawImage(frame, 0, 0, W, H);
  const { data } = ctx.getImageData(0, 0, W, H);
  const luma = (/** @type {number} */ fx, /** @type {number} */ fy) => {
    const i = (Math.min(H - 1, Math.floor(fy * H)) * W + Math.min(W - 1, Math.floor(fx * W))) * 4;
    return 0.2126 * data[i] + 0.7152 * data[i + 1] + 0.0722 * data[i + 2];
  };
  return readStamp(luma) !== null;
}
