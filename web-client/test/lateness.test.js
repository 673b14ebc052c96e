// @ts-check
/** @file Lateness: measured against the path's lowest recent transit, whatever the clock offset. */

import { test } from "node:test";
import assert from "node:assert/strict";
import { Lateness, WINDOW_MS } from "../app/wire/lateness.js";

test("lateness is transit above the window's minimum, so a constant clock offset does not count", () => {
  const l = new Lateness(150);
  const offset = 123_456; // the sender's clock is two minutes off
  assert.equal(l.observe(offset + 20, 0), 0);
  assert.equal(l.observe(offset + 25, 33), 5);
  const late = l.observe(offset + 400, 66);
  assert.equal(late, 380);
  assert.ok(l.tooLate(late));
  assert.equal(l.tooLate(l.observe(offset + 60, 99)), false);
});

test("the base follows the path: an old minimum leaves the window", () => {
  const l = new Lateness(150);
  l.observe(10, 0);
  let t = 0;
  for (; t < WINDOW_MS * 2; t += 100) l.observe(300, t);
  assert.equal(l.observe(300, t), 0, "a new route 290 ms slower is the new base after the window");
});
