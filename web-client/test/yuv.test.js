// Tests of wire/yuv.js: the worker's CPU conversion of decoded pictures to RGBA.
import { test } from "node:test";
import assert from "node:assert/strict";
import { yuvToRgba } from "../app/wire/yuv.js";

/** A 4×2 I420 picture: left half one colour, right half another (each 2×2 chroma block one colour). */
function i420(/** @type {number[]} */ ys, /** @type {number[]} */ us, /** @type {number[]} */ vs) {
  const src = new Uint8Array([...ys, ...us, ...vs]);
  return { src, layout: [{ offset: 0, stride: 4 }, { offset: 8, stride: 2 }, { offset: 10, stride: 2 }] };
}

test("black, white and grey convert to themselves (limited range)", () => {
  const { src, layout } = i420([16, 16, 235, 235, 16, 16, 235, 235], [128, 128], [128, 128]);
  const out = new Uint8ClampedArray(4 * 2 * 4);
  assert.equal(yuvToRgba(src, layout, "I420", 4, 2, out), true);
  assert.deepEqual([...out.subarray(0, 4)], [0, 0, 0, 255]);
  assert.deepEqual([...out.subarray(8, 12)], [255, 255, 255, 255]);
  assert.deepEqual([...out.subarray(16 + 12, 32)], [255, 255, 255, 255]);
});

test("a saturated red reads as red, and NV12 gives what I420 gives", () => {
  // BT.601 limited range red: Y 81, U 90, V 240.
  const { src, layout } = i420([81, 81, 81, 81, 81, 81, 81, 81], [90, 90], [240, 240]);
  const a = new Uint8ClampedArray(32);
  yuvToRgba(src, layout, "I420", 4, 2, a);
  assert.ok(a[0] > 250 && a[1] < 5 && a[2] < 5, `red: ${[...a.subarray(0, 3)]}`);
  const nv12 = new Uint8Array([81, 81, 81, 81, 81, 81, 81, 81, 90, 240, 90, 240]);
  const b = new Uint8ClampedArray(32);
  assert.equal(yuvToRgba(nv12, [{ offset: 0, stride: 4 }, { offset: 8, stride: 4 }], "NV12", 4, 2, b), true);
  assert.deepEqual([...b], [...a]);
});

test("an unknown layout is refused, not guessed", () => {
  assert.equal(yuvToRgba(new Uint8Array(32), [{ offset: 0, stride: 16 }], "RGBA", 4, 2, new Uint8ClampedArray(32)), false);
});
