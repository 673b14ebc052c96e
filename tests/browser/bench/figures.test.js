// @ts-check
/**
 * @file Unit tests of the browser benchmark's arithmetic (figures.js): which pictures count,
 * what a freeze is, and the ratio column. Run: node --test tests/browser/bench/
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { direction, ratio, table, targets } from "./figures.js";

/** A picture seen at `at` from `sender`, frame `seq` drawn at `t` (0.1 ms units), `delay` ms late. */
const seen = (/** @type {number} */ at, /** @type {number} */ sender, /** @type {number} */ seq, /** @type {number} */ t, /** @type {number} */ delay) => [at, sender, seq, t, delay];

test("counts only the sender's pictures inside the window, and their delays", () => {
  const drawn = [[1, 10], [2, 20], [3, 30], [4, 40]];
  const received = {
    shown: [seen(900, 2, 1, 10, 5), seen(1000, 2, 2, 20, 10), seen(1100, 3, 9, 99, 1), seen(1150, 2, 3, 30, 30), seen(1190, 2, 4, 40, 20)],
    broken: [],
  };
  const d = direction(received, drawn, 2, 950, 1200);
  assert.equal(d.frames, 3);
  assert.equal(d.fps, 12);
  assert.deepEqual([d.p50, d.p95, d.max], [20, 30, 30]);
  assert.equal(d.neverDrawn, 0);
});

test("a readable stamp the sender never drew, and an unreadable picture, both count as never drawn", () => {
  const drawn = [[1, 10]];
  /** @type {{shown: number[][], broken: [number, unknown][]}} the unreadable pictures' luminances do not matter here */
  const received = { shown: [seen(1000, 2, 1, 10, 5), seen(1010, 2, 7, 70, 5)], broken: [[1020, []], [5000, []]] };
  assert.equal(direction(received, drawn, 2, 0, 2000).neverDrawn, 2);
});

test("a gap over 200 ms is a freeze, including at the window's ends; older pictures count as out of order", () => {
  const drawn = [[1, 10], [2, 20], [3, 30]];
  const received = { shown: [seen(100, 1, 1, 10, 0), seen(250, 1, 3, 30, 0), seen(600, 1, 2, 20, 0)], broken: [] };
  const d = direction(received, drawn, 1, 0, 1000);
  assert.equal(d.freezes, 2); // 250 → 600 and 600 → 1000
  assert.equal(d.frozenMs, 750);
  assert.equal(d.outOfOrder, 1);
});

test("nothing shown is one freeze over the whole window and no delay figures", () => {
  const d = direction({ shown: [], broken: [] }, [], 1, 0, 1000);
  assert.deepEqual([d.frames, d.p50, d.freezes, d.frozenMs], [0, null, 1, 1000]);
});

test("ratio and table", () => {
  assert.equal(ratio(50, 25), 2);
  assert.equal(ratio(0, 0), 1);
  assert.equal(ratio(3, 0), null);
  assert.equal(ratio(null, 1), null);
  const t = table("T", [{ label: "heading" }, { label: "p50", webrtc: 20, duet: 10 }]);
  assert.match(t, /p50 +20\.0 +10\.0 +0\.50/);
});

test("targets are judged on the worst direction, and Next against a quarter of WebRTC's", () => {
  const dir = (/** @type {number} */ p50, /** @type {number} */ fps, neverDrawn = 0, freezes = 0) => ({ frames: 1, fps, p50, p95: p50 * 2, max: p50 * 3, neverDrawn, outOfOrder: 0, freezes, frozenMs: 0, unreadableExamples: [] });
  const call = (/** @type {any} */ a, /** @type {any} */ b, /** @type {number} */ next, /** @type {number} */ cpu) => ({
    first: { firstFrameMs: { "A→B": 500, "B→A": 500 }, "A→B": a, "B→A": b, cpuPercentOfOneCore: { browser: cpu } },
    next: { firstFrameMs: { "A→C": next, "C→A": next / 2 }, "A→C": a, "C→A": b, cpuPercentOfOneCore: { browser: cpu } },
  });
  const clean = { webrtc: call(dir(30, 29), dir(30, 29), 400, 100), duet: call(dir(20, 28.5), dir(31, 29), 90, 90) };
  const rows = targets(clean);
  const met = Object.fromEntries(rows.map((r) => [r.target.split(" ")[0] + (r.target.includes("p95") ? "95" : ""), r.met]));
  assert.equal(met["capture→screen"], false); // 31 ms in one direction > 30
  assert.equal(met["frame"], true); // 28.5 ≥ 29 − 1
  assert.equal(met["browser"], true);
  assert.equal(met["Next"], true); // 90 ≤ 400 / 4 and < 100
  assert.equal(met["sound"], false); // no engine snapshot: lip sync not shown, so not met
  assert.equal(rows.length, 7);
});

test("lip sync is met when both directions are within 45 ms, either way round", () => {
  const dir = { frames: 1, fps: 30, p50: 10, p95: 20, max: 30, neverDrawn: 0, outOfOrder: 0, freezes: 0, frozenMs: 0, unreadableExamples: [] };
  const call = { first: { firstFrameMs: { "A→B": 1 }, "A→B": dir, cpuPercentOfOneCore: { browser: 1 } }, next: { firstFrameMs: { "A→C": 1 }, "A→C": dir, cpuPercentOfOneCore: { browser: 1 } } };
  const snap = (/** @type {number} */ offsetMs) => ({ receive: { avSync: { offsetMs } } });
  const sound = (/** @type {number} */ a, /** @type {number} */ c) => targets({ webrtc: call, duet: { ...call, snapshotA: snap(a), snapshotC: snap(c) } }).find((r) => r.target.startsWith("sound"));
  assert.equal(sound(24.8, -30)?.met, true);
  assert.equal(sound(24.8, -46)?.met, false);
  assert.equal(sound(24.8, -46)?.duet, "-46.0 ms");
  assert.equal(sound(50, 10)?.met, false);
});
