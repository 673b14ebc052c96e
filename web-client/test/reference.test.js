// @ts-check
/**
 * @file Reference tracking: after a lost frame nothing that depends on it is decoded; with
 * temporal layers a lost top-layer frame breaks nothing; a keyframe starts a clean chain.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { LayerReferences, MAX_REFERENCE_DISTANCE, ReferenceTracker } from "../app/wire/reference.js";

/** @param {number} frame @param {number} refFrame */
const delta = (frame, refFrame) => ({ frame, keyframe: false, refFrame });
/** @param {number} frame */
const key = (frame) => ({ frame, keyframe: true, refFrame: frame });

test("nothing before the first keyframe is decoded", () => {
  const t = new ReferenceTracker();
  assert.equal(t.accept(delta(3, 2)), false);
  assert.equal(t.accept(key(4)), true);
  assert.equal(t.accept(delta(5, 4)), true);
});

test("without layers, a lost frame stops the chain until the next keyframe", () => {
  const t = new ReferenceTracker();
  assert.ok(t.accept(key(0)));
  assert.ok(t.accept(delta(1, 0)));
  // frame 2 lost
  assert.equal(t.accept(delta(3, 2)), false);
  assert.equal(t.accept(delta(4, 3)), false, "4 references 3, which was dropped");
  assert.ok(t.accept(key(5)));
  assert.ok(t.accept(delta(6, 5)));
  assert.equal(t.stats.undecodable, 2);
});

test("L1T2: the sender's references let a lost top-layer frame break nothing, and a lost base frame stop its dependants", () => {
  const refs = new LayerReferences();
  // Frames 0..7, layers 0 1 0 1 ...; frame 0 a keyframe.
  const sent = [0, 1, 2, 3, 4, 5, 6, 7].map((n) => ({ frame: n, keyframe: n === 0, refFrame: refs.refFor(n, n === 0, n % 2) }));
  assert.deepEqual(sent.map((f) => f.refFrame), [0, 0, 0, 2, 2, 4, 4, 6]);
  const t = new ReferenceTracker();
  const lost = new Set([3, 4]); // a top-layer frame, then a base frame
  const shown = sent.filter((f) => !lost.has(f.frame) && t.accept(f)).map((f) => f.frame);
  assert.deepEqual(shown, [0, 1, 2], "3 lost breaks nothing; 4 lost stops 5, 6 and 7 (6 references 4)");
});

test("a frame the decoder refused is forgotten, so its dependants are not decoded", () => {
  const t = new ReferenceTracker();
  assert.ok(t.accept(key(0)));
  assert.ok(t.accept(delta(1, 0)));
  t.forget(1);
  assert.equal(t.accept(delta(2, 1)), false);
});

test("memory is bounded: a reference further back than the bound counts as missing", () => {
  const t = new ReferenceTracker();
  assert.ok(t.accept(key(0)));
  for (let n = 1; n <= MAX_REFERENCE_DISTANCE + 10; n++) assert.ok(t.accept(delta(n, n - 1)));
  assert.ok(t.decoded.length <= MAX_REFERENCE_DISTANCE);
  assert.equal(t.accept(delta(1000, 1)), false);
});

test("reset: after a new pairing nothing is decoded before a keyframe", () => {
  const t = new ReferenceTracker();
  assert.ok(t.accept(key(0)));
  t.reset();
  assert.equal(t.accept(delta(1, 0)), false);
});
