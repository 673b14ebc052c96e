// @ts-check
/**
 * @file The order stage: frames reach the decoder in frame order; a gap nothing depends on
 * is skipped at once, a gap frames depend on is asked for again once and waited for, then
 * given up; late frames are dropped. The send history answers a Nack with exactly the
 * datagrams named, a bounded number of times. The reassembler, recovering video, keeps an
 * incomplete frame for a resend and completes frames in any order.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { MAX_HELD, VideoOrder } from "../app/wire/video-order.js";
import { MAX_AGE_MS, MAX_FRAMES, MAX_RESENDS, SendHistory } from "../app/wire/send-history.js";
import { Fragmenter, Reassembler } from "../app/wire/fragment.js";
import { TRACK_VIDEO, readDatagram } from "../app/wire/protocol.js";

/** @param {number} frame @param {number} refFrame */
const delta = (frame, refFrame) => ({ frame, keyframe: false, refFrame });
/** @param {number} frame */
const key = (frame) => ({ frame, keyframe: true, refFrame: frame });

/** A decoder's view: which frames were decoded (as reference.js would accept them). */
function decoder() {
  /** @type {Set<number>} */
  const decoded = new Set();
  return {
    decoded,
    /** @param {{frame: number, keyframe: boolean, refFrame: number}} f */
    decodable: (f) => f.keyframe || decoded.has(f.refFrame),
    /** @param {{frame: number}[]} fs */
    take: (fs) => fs.forEach((f) => decoded.add(f.frame)),
  };
}

test("frames in order go straight through", () => {
  const o = new VideoOrder();
  const d = decoder();
  for (const f of [key(0), delta(1, 0), delta(2, 1)]) o.push(f);
  const p = o.poll(0, 100, d.decodable);
  assert.deepEqual(p.release.map((f) => f.frame), [0, 1, 2]);
  assert.deepEqual(p.nack, []);
});

test("a missing frame nothing depends on (a top layer) is skipped at once", () => {
  const o = new VideoOrder();
  const d = decoder();
  o.push(key(0));
  d.take(o.poll(0, 100, d.decodable).release);
  o.push(delta(2, 0)); // frame 1 (layer 1) lost; frame 2 references frame 0
  const p = o.poll(1, 100, d.decodable);
  assert.deepEqual(p.release.map((f) => f.frame), [2]);
  assert.equal(p.skipped, 1);
  assert.deepEqual(p.nack, []);
  assert.equal(o.push(delta(1, 0)), false, "frame 1 arriving now is late: the decoder is past it");
});

test("a missing frame others depend on is asked for once, waited for, and decoded in order when it comes", () => {
  const o = new VideoOrder();
  const d = decoder();
  o.push(key(0));
  d.take(o.poll(0, 100, d.decodable).release);
  o.push(delta(2, 1));
  o.push(delta(3, 2));
  let p = o.poll(10, 100, d.decodable);
  assert.deepEqual(p.release, []);
  assert.deepEqual(p.nack, [1]);
  p = o.poll(50, 100, d.decodable);
  assert.deepEqual(p.nack, [], "asked once");
  o.push(delta(1, 0)); // the resend
  p = o.poll(60, 100, d.decodable);
  assert.deepEqual(p.release.map((f) => f.frame), [1, 2, 3]);
  assert.equal(o.stats.gapsRecovered, 1);
});

test("a frame asked for again as soon as its loss showed counts as recovered when its resend completes it", () => {
  const o = new VideoOrder();
  const d = decoder();
  o.push(key(0));
  d.take(o.poll(0, 100, d.decodable).release);
  o.markNacked(1); // the reassembler saw a fragment of frame 1 missing
  o.push(delta(1, 0)); // the resend completed it before anything behind it
  const p = o.poll(20, 100, d.decodable);
  assert.deepEqual(p.release.map((f) => f.frame), [1]);
  assert.equal(o.stats.nacks, 1);
  assert.equal(o.stats.gapsRecovered, 1);
  o.push(delta(1, 0));
  assert.equal(o.stats.gapsRecovered, 1, "a late duplicate is not a second recovery");
});

test("past the wait the gap is given up and what follows goes to the decoder (which refuses it)", () => {
  const o = new VideoOrder();
  const d = decoder();
  o.push(key(0));
  d.take(o.poll(0, 100, d.decodable).release);
  o.push(delta(2, 1));
  assert.deepEqual(o.poll(10, 100, d.decodable).release, []);
  const p = o.poll(110, 100, d.decodable);
  assert.deepEqual(p.release.map((f) => f.frame), [2]);
  assert.equal(p.skipped, 1);
  assert.equal(o.stats.gapsGivenUp, 1);
});

test("a keyframe behind a gap ends the wait at once", () => {
  const o = new VideoOrder();
  const d = decoder();
  o.push(key(0));
  d.take(o.poll(0, 100, d.decodable).release);
  o.push(delta(2, 1));
  assert.deepEqual(o.poll(10, 100, d.decodable).nack, [1]);
  o.push(key(3));
  const p = o.poll(20, 100, d.decodable);
  assert.deepEqual(p.release.map((f) => f.frame), [3], "frame 2 needs the lost frame 1: dropped with it");
});

test("holding is bounded: a path that loses everything does not grow memory", () => {
  const o = new VideoOrder();
  const d = decoder();
  o.push(key(0));
  d.take(o.poll(0, 1e9, d.decodable).release);
  for (let n = 2; n < 2 + MAX_HELD * 3; n++) {
    o.push(delta(n, n - 1)); // frame 1 never comes
    o.poll(n, 1e9, d.decodable);
    assert.ok(o.held.size <= MAX_HELD + 1);
  }
});

test("a new pairing starts clean", () => {
  const o = new VideoOrder();
  o.push(key(5));
  o.poll(0, 100, () => true);
  o.reset();
  assert.equal(o.push(key(0)), true, "frame 0 of the next pairing is not late");
});

/** @param {number} frame @param {number} n @returns {Uint8Array[]} */
function datagrams(frame, n) {
  return Array.from({ length: n }, (_, i) => new Uint8Array([frame, i]));
}

test("the history resends exactly the fragments asked for, the whole frame for an empty list, a bounded number of times", () => {
  const h = new SendHistory();
  h.record(7, datagrams(7, 5), 0);
  assert.deepEqual(h.take(7, [1, 3, 3, 9], 10).map((d) => d[1]), [1, 3]);
  assert.equal(h.take(7, [], 20).length, 5);
  for (let i = MAX_RESENDS; i < 5; i++) assert.deepEqual(h.take(7, [0], 30), []);
  assert.deepEqual(h.take(8, [0], 30), [], "an unknown frame");
});

test("the history forgets old frames, by count and by age, and everything at a new pairing", () => {
  const h = new SendHistory();
  for (let f = 0; f < MAX_FRAMES + 10; f++) h.record(f, datagrams(f & 0xff, 1), f);
  assert.equal(h.frames.size, MAX_FRAMES);
  assert.deepEqual(h.take(0, [], MAX_FRAMES + 10), []);
  h.record(500, datagrams(1, 1), 10_000);
  assert.deepEqual(h.take(500, [], 10_000 + MAX_AGE_MS + 1), [], "too old to help");
  h.record(501, datagrams(1, 1), 20_000);
  h.reset();
  assert.deepEqual(h.take(501, [], 20_000), []);
  assert.equal(h.bytes, 0);
});

test("recovering video: an incomplete frame waits for its resend while later frames complete, in any order", () => {
  const f = new Fragmenter(TRACK_VIDEO);
  const r = new Reassembler({ recoverVideo: true });
  const payload = (/** @type {number} */ n) => new Uint8Array(2500).fill(n);
  const frames = [0, 1, 2].map((n) => /** @type {Uint8Array[]} */ (f.fragment(3n, payload(n), n === 0, BigInt(n), 1100)));
  const feed = (/** @type {Uint8Array} */ d) => {
    const { header, offset } = readDatagram(d);
    return r.push(header, d.subarray(offset));
  };
  assert.ok(feed(frames[0][0]) === null && feed(frames[0][1]) === null && feed(frames[0][2])?.frame === 0);
  feed(frames[1][0]);
  feed(frames[1][2]); // fragment 1 of frame 1 lost
  for (const d of frames[2].slice(0, -1)) assert.equal(feed(d), null);
  assert.equal(feed(frames[2][frames[2].length - 1])?.frame, 2, "frame 2 completes while frame 1 is still open");
  assert.deepEqual(r.missing(1, 64), [1]);
  assert.deepEqual(r.missing(9, 64), [], "unknown: the whole frame");
  const late = feed(frames[1][1]);
  assert.equal(late?.frame, 1, "the resent fragment completes frame 1");
  assert.deepEqual(late?.data, payload(1));
  assert.equal(feed(frames[1][1]), null, "a second copy is a duplicate");
  r.abandonBefore(3);
  assert.equal(feed(frames[2][0]), null, "behind the order stage: late");
});

test("recovering video: gaps are known as soon as a later datagram shows them", () => {
  const f = new Fragmenter(TRACK_VIDEO);
  const r = new Reassembler({ recoverVideo: true });
  const frames = [0, 1, 2, 3].map((n) => /** @type {Uint8Array[]} */ (f.fragment(3n, new Uint8Array(3000).fill(n), n === 0, BigInt(n), 1100)));
  const feed = (/** @type {Uint8Array} */ d) => {
    const { header, offset } = readDatagram(d);
    return r.push(header, d.subarray(offset));
  };
  for (const d of frames[0]) feed(d);
  feed(frames[1][0]); // fragments 1 and 2 of frame 1 lost, then all of frame 2 lost
  assert.deepEqual(r.gaps(64), [], "nothing after fragment 0 yet: nothing known missing");
  feed(frames[3][1]);
  assert.deepEqual(r.gaps(64), [
    { frame: 1, fragments: [1, 2] },
    { frame: 2, fragments: [] },
    { frame: 3, fragments: [0] },
  ]);
  r.abandonBefore(3);
  assert.deepEqual(r.gaps(64), [{ frame: 3, fragments: [0] }]);
});
