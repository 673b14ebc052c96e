// @ts-check
/**
 * @file The encoder's size: the camera's size times the CPU step, kept under 640×480 pixels
 * on a weak machine (a few rows dropped when just over, scaled whole when far over), and
 * left alone on a machine with more cores.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { TWO_THREAD_PIXELS, encodeSize } from "../app/wire/encode-size.js";

test("a 640×480 camera on a two-core machine is encoded two rows short, under the two-thread size", () => {
  assert.deepEqual(encodeSize(640, 480, 1, 2), { width: 640, height: 478 });
  assert.deepEqual(encodeSize(640, 480, 1, 4), { width: 640, height: 478 });
});

test("a machine with more cores keeps the camera's size", () => {
  assert.deepEqual(encodeSize(640, 480, 1, 8), { width: 640, height: 480 });
  assert.deepEqual(encodeSize(1280, 720, 1, 8), { width: 1280, height: 720 });
});

test("sizes under the threshold, and the CPU steps, are left as they are", () => {
  assert.deepEqual(encodeSize(640, 360, 1, 2), { width: 640, height: 360 });
  assert.deepEqual(encodeSize(640, 480, 0.75, 2), { width: 480, height: 360 });
  assert.deepEqual(encodeSize(640, 480, 0.25, 2), { width: 160, height: 120 });
});

test("a larger camera on a weak machine is scaled whole to fit, keeping its shape", () => {
  const { width, height } = encodeSize(1280, 720, 1, 2);
  assert.ok(width * height < TWO_THREAD_PIXELS, `${width}×${height}`);
  assert.ok(width * height > TWO_THREAD_PIXELS * 0.97, `${width}×${height} fills the budget`);
  assert.ok(Math.abs(width / height - 16 / 9) < 0.01, `${width}×${height} keeps 16:9`);
  assert.equal(width % 2, 0);
  assert.equal(height % 2, 0);
  const big = encodeSize(1920, 1080, 0.75, 2);
  assert.ok(big.width * big.height < TWO_THREAD_PIXELS);
});

test("odd and tiny sizes come out even and at least 2×2", () => {
  assert.deepEqual(encodeSize(3, 3, 0.25, 2), { width: 2, height: 2 });
  const s = encodeSize(641, 481, 1, 2);
  assert.equal(s.width % 2, 0);
  assert.equal(s.height % 2, 0);
  assert.ok(s.width * s.height < TWO_THREAD_PIXELS);
});
