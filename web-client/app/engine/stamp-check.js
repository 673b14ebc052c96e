// @ts-check
/**
 * @file Checks a painted picture against wire/stamp.js (the browser tests' checksummed
 * camera). It reads the very RGBA pixels the receiver wrote to the partner canvas, so what
 * is checked is what was shown. Off unless a test turns it on.
 */

import { readStamp } from "../wire/stamp.js";

/** @param {ImageData} pixels the painted picture @returns {boolean} the picture is one the sender drew */
export function checkStamp(pixels) {
  const { data, width: W, height: H } = pixels;
  const n = readStamp((fx, fy, fw, fh) => {
    // The mean luma over the sampled box: a block edge blurred by the codec or the scaler
    // moves a single pixel, hardly the mean of the block's middle.
    const x0 = Math.max(0, Math.floor((fx - fw / 2) * W));
    const x1 = Math.min(W - 1, Math.ceil((fx + fw / 2) * W));
    const y0 = Math.max(0, Math.floor((fy - fh / 2) * H));
    const y1 = Math.min(H - 1, Math.ceil((fy + fh / 2) * H));
    let sum = 0;
    let count = 0;
    for (let y = y0; y <= y1; y++) {
      for (let x = x0; x <= x1; x++) {
        const i = (y * W + x) * 4;
        sum += 0.2126 * data[i] + 0.7152 * data[i + 1] + 0.0722 * data[i + 2];
        count++;
      }
    }
    return count ? sum / count : 0;
  });
  return n !== null;
}
