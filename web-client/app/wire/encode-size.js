// @ts-check
/**
 * @file The size the video encoder is configured at: the camera's size times the CPU
 * adaptation's scale (wire/encoder-load.js), kept under 640×480 pixels on a weak machine.
 *
 * Why the cap: Chromium's software encoders give an encode of 640×480 pixels or more two
 * threads, and on a two-core machine libvpx's threads spend their waits spinning. Measured
 * here (Chromium 156, two cores, VP8 at 1 Mbit/s, 30 fps, one page): 640×480 cost 16–40 % of a
 * core, 640×478 7–10 %, 638×480 8–9 %. libwebrtc makes the same choice for its own VP8
 * encoder (one thread up to 640×480 on a desktop), which is much of why a WebRTC call used
 * less CPU than Duet's on this machine. So on a weak machine a size at or just over the
 * threshold loses a few rows (640×480 → 640×478: the encoder scales, invisibly), and a
 * larger one is scaled down whole to fit.
 *
 * No browser API here: Node's test runner covers it.
 */

import { WEAK_CPU_CORES } from "./codecs.js";

/** Pixels from which Chromium's software encoders use two threads. */
export const TWO_THREAD_PIXELS = 640 * 480;
/** Up to this share of the rows may go to fit under the cap; beyond it the picture is scaled whole. */
const MAX_ROWS_DROPPED = 0.02;

/** @param {number} x @returns {number} x rounded down to an even number, at least 2 */
function evenDown(x) {
  return Math.max(2, Math.floor(x / 2) * 2);
}

/**
 * @param {number} frameWidth the camera frame's displayed width
 * @param {number} frameHeight
 * @param {number} scale the CPU adaptation's resolution scale (1 = full)
 * @param {number} cores `navigator.hardwareConcurrency`
 * @returns {{width: number, height: number}} even, at least 2×2
 */
export function encodeSize(frameWidth, frameHeight, scale, cores) {
  const width = Math.max(2, Math.round((frameWidth * scale) / 2) * 2);
  const height = Math.max(2, Math.round((frameHeight * scale) / 2) * 2);
  if (cores > WEAK_CPU_CORES || width * height < TWO_THREAD_PIXELS) return { width, height };
  const rows = evenDown((TWO_THREAD_PIXELS - 1) / width);
  if (rows >= height * (1 - MAX_ROWS_DROPPED)) return { width, height: rows };
  const shrink = Math.sqrt((TWO_THREAD_PIXELS - 1) / (width * height));
  return { width: evenDown(width * shrink), height: evenDown(height * shrink) };
}
