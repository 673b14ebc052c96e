// @ts-check
/**
 * @file The playout hold: nothing without recoveries; after some, what covers most of
 * them plus a margin, capped; gone once no recovery was seen for a window.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { MAX_DELAY_MS, PlayoutDelay, WINDOW_MS } from "../app/wire/playout.js";

test("no recovery, no hold", () => {
  assert.equal(new PlayoutDelay().delayMs(0), 0);
});

test("the hold covers most recoveries in the window, not a rare slow one, capped, and ends after them", () => {
  const p = new PlayoutDelay();
  p.onRecovered(120, 1000);
  p.onRecovered(170, 2000);
  const d = p.delayMs(2500);
  assert.ok(d > 170 && d < 200, `${d}`);
  for (let i = 0; i < 8; i++) p.onRecovered(150, 2100 + i);
  p.onRecovered(5000, 3000);
  const covered = p.delayMs(3000);
  assert.ok(covered > 150 && covered < 200, `one slow recovery of eleven does not set the hold (${covered})`);
  for (let i = 0; i < 5; i++) p.onRecovered(900, 3001 + i);
  assert.equal(p.delayMs(3010), MAX_DELAY_MS, "capped");
  assert.equal(p.delayMs(3010 + WINDOW_MS), 0, "a quiet window later: no hold");
  p.onRecovered(100, 0);
  p.reset();
  assert.equal(p.delayMs(0), 0);
});
