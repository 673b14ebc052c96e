// @ts-check
/**
 * @file CPU adaptation: slow encoding steps resolution and frame rate down and says "cpu";
 * fast encoding steps back up, slowly; drops count as overuse; the bottom step holds.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { EncoderLoad, LADDER, LAG_OVERUSE_MS, LAG_UNDERUSE_MS } from "../app/wire/encoder-load.js";

/** Feeds `seconds` of 30 fps frames taking `ms` each. @param {EncoderLoad} l @param {number} ms @param {number} from @param {number} seconds */
function run(l, ms, from, seconds) {
  let t = from;
  for (; t < from + seconds * 1000; t += 33) l.onEncoded(ms, t);
  return t;
}

test("a fast encoder stays at full quality and says none", () => {
  const l = new EncoderLoad();
  run(l, 5, 0, 20);
  assert.equal(l.step, 0);
  assert.equal(l.scale, 1);
  assert.equal(l.limitation, "none");
  l.bandwidthLimited = true;
  assert.equal(l.limitation, "bandwidth");
});

test("an encoder slower than the frame interval steps down and says cpu, then back up once it is fast again", () => {
  const l = new EncoderLoad();
  let t = run(l, 40, 0, 10);
  assert.ok(l.step >= 3, `stepped down to ${l.step}`);
  assert.ok(l.scale < 1);
  assert.equal(l.limitation, "cpu");
  assert.ok(l.minIntervalMs > 0, "a frame-rate cap once low enough on the ladder");
  const low = l.step;
  const changedAt = l.lastChangeMs;
  t = run(l, 3, t, 1);
  assert.ok(t - changedAt < 8000);
  assert.equal(l.step, low, "does not go up in the first seconds");
  run(l, 3, t, 60);
  assert.equal(l.step, 0);
  assert.equal(l.limitation, "none");
});

test("frames dropped because the encoder is behind count as overuse", () => {
  const l = new EncoderLoad();
  for (let t = 0; t < 3000; t += 33) {
    l.onEncoded(5, t);
    l.onDropped(t);
  }
  assert.ok(l.step > 0);
});

test("the bottom step holds however slow the encoder", () => {
  const l = new EncoderLoad();
  run(l, 500, 0, 60);
  assert.equal(l.step, LADDER.length - 1);
});

/** Feeds `seconds` of quick 30 fps encodes and 20 ms timer ticks running `lagMs` late. @param {EncoderLoad} l @param {number} lagMs @param {number} from @param {number} seconds */
function runLagging(l, lagMs, from, seconds) {
  let t = from;
  for (; t < from + seconds * 1000; t += 20) {
    l.onLag(lagMs, t);
    if (t % 33 < 20) l.onEncoded(4, t);
  }
  return t;
}

test("a worker whose timers run late is short of CPU even when each encode is quick: it steps down and says cpu, and back up once on time", () => {
  const l = new EncoderLoad();
  let t = runLagging(l, 35, 0, 4);
  assert.ok(l.step > 0, `stepped down to ${l.step} with quick encodes and late timers`);
  assert.equal(l.limitation, "cpu");
  assert.ok(l.lagMs > LAG_OVERUSE_MS);
  t = runLagging(l, 10, t, 30);
  assert.ok(l.step > 0, "a lateness between the thresholds neither steps down further nor up");
  const held = l.step;
  t = runLagging(l, 10, t, 10);
  assert.equal(l.step, held);
  runLagging(l, 1, t, 60);
  assert.equal(l.step, 0, "on time again: back to full quality");
  assert.equal(l.limitation, "none");
});

test("a busy but healthy worker (timers a few ms late) keeps full quality", () => {
  const l = new EncoderLoad();
  runLagging(l, LAG_UNDERUSE_MS - 1, 0, 30);
  assert.equal(l.step, 0);
});
