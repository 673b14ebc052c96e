// @ts-check
/** @file The receiver's lip-sync hold (wire/av-sync.js). */

import { test } from "node:test";
import assert from "node:assert/strict";
import { LEAD_MS, MAX_HOLD_MS, syncHoldMs } from "../app/wire/av-sync.js";

test("without sound playing, video is never held", () => {
  assert.equal(syncHoldMs(null, 5), 0);
  assert.equal(syncHoldMs(Number.NaN, 5), 0);
});

test("a picture far ahead of the sound waits until it leads by LEAD_MS only", () => {
  // Sound 70 ms behind capture, picture 6 ms: held 39 ms, so it leads the sound by LEAD_MS.
  assert.equal(syncHoldMs(70, 6), 70 - LEAD_MS - 6);
  assert.equal(6 + syncHoldMs(70, 6), 70 - LEAD_MS);
});

test("a picture already within the lead, or later than the sound, is shown at once", () => {
  assert.equal(syncHoldMs(LEAD_MS + 20, 20), 0);
  assert.equal(syncHoldMs(LEAD_MS + 15, 20), 0);
  assert.equal(syncHoldMs(40, 90), 0);
  assert.ok(LEAD_MS <= 45, "within the 45 ms target");
});

test("the hold is capped: a sound that fell far behind does not make the picture late", () => {
  assert.equal(syncHoldMs(1000, 10), MAX_HOLD_MS);
  assert.ok(MAX_HOLD_MS <= 50, "a bounded cost to the picture");
});
