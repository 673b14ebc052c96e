// @ts-check
/**
 * @file The audio jitter buffer: waits for its target depth, plays in order, conceals a
 * gap, drops late and duplicate frames, rebuffers (with a larger target) after running
 * dry, sheds delay after a burst, and never holds more than its capacity.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { JitterBuffer } from "../app/wire/jitter.js";

/** @param {JitterBuffer<string>} jb @param {number} n */
function popN(jb, n) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const p = jb.pop();
    out.push(p === null ? "-" : p.kind === "gap" ? `gap${p.seq}` : p.item);
  }
  return out;
}

test("waits for the target depth, then plays in order even when frames arrived out of order", () => {
  const jb = new JitterBuffer({ target: 3 });
  jb.push(11, "b");
  assert.equal(jb.pop(), null);
  jb.push(10, "a");
  assert.equal(jb.pop(), null, "two frames are not enough");
  jb.push(12, "c");
  assert.deepEqual(popN(jb, 3), ["a", "b", "c"]);
});

test("a missing frame is a gap once later frames are queued; it is late if it shows up after", () => {
  const jb = new JitterBuffer({ target: 2 });
  jb.push(0, "a");
  jb.push(2, "c");
  jb.push(3, "d");
  assert.deepEqual(popN(jb, 4), ["a", "gap1", "c", "d"]);
  assert.equal(jb.push(1, "b"), "late");
  assert.equal(jb.stats.gaps, 1);
  assert.equal(jb.stats.late, 1);
});

test("duplicates are dropped", () => {
  const jb = new JitterBuffer({ target: 1 });
  assert.equal(jb.push(5, "x"), "queued");
  assert.equal(jb.push(5, "x"), "duplicate");
  assert.deepEqual(popN(jb, 1), ["x"]);
  assert.equal(jb.push(5, "x"), "late");
});

test("running dry rebuffers with a larger target, and resumes at the oldest queued frame", () => {
  const jb = new JitterBuffer({ target: 3, maxTarget: 5 });
  for (let i = 0; i < 3; i++) jb.push(i, `f${i}`);
  assert.deepEqual(popN(jb, 4), ["f0", "f1", "f2", "-"]);
  assert.equal(jb.stats.underruns, 1);
  assert.equal(jb.target, 4);
  // Frames 3..5 were lost in a stall; 6.. arrive.
  for (let i = 6; i < 9; i++) jb.push(i, `f${i}`);
  assert.equal(jb.pop(), null, "needs 4 now");
  jb.push(9, "f9");
  assert.deepEqual(popN(jb, 4), ["f6", "f7", "f8", "f9"]);
});

test("the target never grows past maxTarget", () => {
  const jb = new JitterBuffer({ target: 3, maxTarget: 4 });
  let seq = 0;
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < jb.target; i++) jb.push(seq++, "x");
    while (jb.pop() !== null);
  }
  assert.equal(jb.target, 4);
});

test("the target shrinks back after a long stretch without underruns", () => {
  const jb = new JitterBuffer({ target: 3, maxTarget: 6 });
  jb.target = 6;
  let seq = 0;
  for (let i = 0; i < 6; i++) jb.push(seq++, "x");
  for (let tick = 0; tick < 500; tick++) {
    jb.push(seq++, "x");
    assert.notEqual(jb.pop(), null);
  }
  assert.equal(jb.target, 4, "two shrink steps in 500 steady ticks (one per 200)");
});

test("a burst after a stall is shed down to near the target instead of adding delay for good", () => {
  const jb = new JitterBuffer({ target: 3 });
  for (let i = 0; i < 3; i++) jb.push(i, `f${i}`);
  popN(jb, 1);
  for (let i = 3; i < 20; i++) jb.push(i, `f${i}`); // 17 frames land at once
  const played = popN(jb, 3);
  assert.ok(jb.depth <= jb.target * 2 + 2, `depth ${jb.depth}`);
  assert.ok(jb.stats.skipped > 0);
  // What plays is still in order.
  const nums = played.map((s) => Number(s.slice(1)));
  assert.deepEqual([...nums].sort((a, b) => a - b), nums);
});

test("capacity bounds memory whatever is pushed", () => {
  const jb = new JitterBuffer({ target: 3, capacity: 50 });
  for (let i = 0; i < 10_000; i++) jb.push(i * 3, "x");
  assert.ok(jb.depth <= 50);
  assert.ok(jb.stats.overflow > 0);
});

test("reset forgets the previous partner's frames", () => {
  const jb = new JitterBuffer({ target: 1 });
  jb.push(500, "old");
  jb.reset();
  assert.equal(jb.depth, 0);
  jb.push(0, "new");
  assert.deepEqual(popN(jb, 1), ["new"]);
});

test("steady arrival with random jitter plays every frame, in order, without gaps", () => {
  let seed = 7;
  const rand = () => {
    seed = (seed * 48271) % 0x7fffffff;
    return seed / 0x7fffffff;
  };
  const jb = new JitterBuffer({ target: 3 });
  // Frame i is sent at 20*i ms and arrives 0-50 ms later; playout ticks every 20 ms.
  const arrivals = Array.from({ length: 500 }, (_, i) => ({ seq: i, at: 20 * i + rand() * 50 }));
  arrivals.sort((a, b) => a.at - b.at);
  /** @type {number[]} */
  const played = [];
  let k = 0;
  for (let t = 0; t < 20 * 520; t += 20) {
    while (k < arrivals.length && arrivals[k].at <= t) jb.push(arrivals[k].seq, arrivals[k++].seq);
    const p = jb.pop();
    if (p && p.kind === "frame") played.push(p.item);
  }
  const inOrder = played.every((v, i) => i === 0 || v > played[i - 1]);
  assert.ok(inOrder);
  assert.ok(played.length >= 490, `played ${played.length} of 500`);
});

test("a queue standing above the target is brought down a frame a second, and no lower", () => {
  const jb = new JitterBuffer({ target: 2 });
  let seq = 0;
  // Six frames arrive before playout starts (a burst), then one per tick, as many as are played.
  for (let i = 0; i < 6; i++) jb.push(seq++, "x");
  const depths = [];
  for (let tick = 0; tick < 400; tick++) {
    const p = jb.pop();
    assert.notEqual(p, null);
    jb.push(seq++, "x");
    if (tick % 50 === 49) depths.push(jb.depth);
  }
  assert.equal(jb.depth, 2, `depth after 8 s: ${jb.depth} (each second: ${depths.join(", ")})`);
  assert.ok(jb.stats.trimmed >= 3 && jb.stats.trimmed <= 5, `trimmed ${jb.stats.trimmed}`);
  assert.equal(jb.stats.gaps, 0);
  assert.equal(jb.stats.underruns, 0);
});

test("a queue at the target is never trimmed", () => {
  const jb = new JitterBuffer({ target: 2 });
  let seq = 0;
  jb.push(seq++, "x");
  jb.push(seq++, "x");
  for (let tick = 0; tick < 500; tick++) {
    assert.notEqual(jb.pop(), null);
    jb.push(seq++, "x");
  }
  assert.equal(jb.stats.trimmed, 0);
});
