// @ts-check
/**
 * @file Fragmentation and reassembly: frames survive being cut into datagrams, reordered
 * and duplicated; a frame with a lost fragment is dropped and a keyframe asked for; memory
 * stays bounded; a new pairing starts clean. The same cases as duet-proto's Rust tests,
 * plus randomized ones.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { AUDIO_REORDER_FRAMES, Fragmenter, Reassembler, maxPayload, refFrameOf } from "../app/wire/fragment.js";
import {
  MAX_FRAGMENTS,
  MAX_FRAMES_IN_REASSEMBLY,
  MAX_MEDIA_DATAGRAM_BYTES,
  TRACK_AUDIO,
  TRACK_VIDEO,
  TRACK_VIDEO_PARITY,
  readDatagram,
} from "../app/wire/protocol.js";

/** @param {number} n @param {number} seed */
function bytes(n, seed) {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed * 17) & 0xff;
  return out;
}

/** @param {Reassembler} r @param {Uint8Array} dg */
function feed(r, dg) {
  const { header, offset } = readDatagram(dg);
  return r.push(header, dg.subarray(offset));
}

/** @param {number} frame @param {number} idx @param {number} count */
function header(frame, idx, count) {
  return { match_id: 7n, track: TRACK_VIDEO, seq: 0, frame, frag_index: idx, frag_count: count, keyframe: frame === 0, capture_us: 1_700_000_000_000_000n, ref_frame: Math.max(0, frame - 1) };
}

/** The parity datagram the fragmenter made for its last frame. @param {Fragmenter} f @returns {Uint8Array} */
function parityOf(f) {
  assert.ok(f.lastParity, "a parity datagram");
  return f.lastParity;
}

const te = new TextEncoder();

test("a frame is cut into datagrams no bigger than the session allows and comes back whole", () => {
  for (const maxDg of [MAX_MEDIA_DATAGRAM_BYTES, 1200, 600, 100]) {
    const f = new Fragmenter(TRACK_VIDEO);
    const r = new Reassembler();
    for (const size of [0, 1, maxPayload(maxDg), maxPayload(maxDg) + 1, Math.min(25_000, maxPayload(maxDg) * MAX_FRAGMENTS)]) {
      const payload = bytes(size, size);
      const dgs = f.fragment(42n, payload, true, 123n, maxDg);
      assert.ok(dgs);
      assert.equal(dgs.length, Math.max(1, Math.ceil(size / maxPayload(maxDg))));
      for (const dg of dgs) assert.ok(dg.length <= Math.min(maxDg, MAX_MEDIA_DATAGRAM_BYTES), `${dg.length} > ${maxDg}`);
      let out = null;
      for (const dg of dgs) {
        assert.equal(out, null, "complete only after the last fragment");
        out = feed(r, dg);
      }
      assert.ok(out);
      assert.deepEqual(out.data, payload);
      assert.equal(out.keyframe, true);
      assert.equal(out.captureUs, 123n);
    }
  }
});

test("sequence numbers count datagrams, frame numbers count frames", () => {
  const f = new Fragmenter(TRACK_AUDIO);
  const a = /** @type {Uint8Array[]} */ (f.fragment(1n, bytes(2000, 1), false, 0n, 1100));
  const b = /** @type {Uint8Array[]} */ (f.fragment(1n, bytes(10, 2), false, 0n, 1100));
  const hs = [...a, ...b].map((d) => readDatagram(d).header);
  assert.deepEqual(hs.map((h) => h.seq), [0, 1, 2]);
  assert.deepEqual(hs.map((h) => h.frame), [0, 0, 1]);
  assert.deepEqual(hs.map((h) => [h.frag_index, h.frag_count]), [[0, 2], [1, 2], [0, 1]]);
  assert.ok(hs.every((h) => h.match_id === 1n && h.track === TRACK_AUDIO));
  f.reset();
  const c = /** @type {Uint8Array[]} */ (f.fragment(2n, bytes(1, 3), false, 0n, 1100));
  assert.equal(readDatagram(c[0]).header.frame, 0);
});

test("a frame needing more than MAX_FRAGMENTS datagrams is refused, not truncated", () => {
  const f = new Fragmenter(TRACK_VIDEO);
  const room = maxPayload(1100);
  assert.ok(f.fragment(1n, new Uint8Array(room * MAX_FRAGMENTS), true, 0n, 1100));
  assert.equal(f.fragment(1n, new Uint8Array(room * MAX_FRAGMENTS + 1), true, 0n, 1100), null);
  assert.equal(f.fragment(1n, new Uint8Array(10), true, 0n, 20), null, "no room for any payload");
});

test("reordered and duplicated fragments reassemble once", () => {
  const r = new Reassembler();
  assert.equal(r.push(header(0, 2, 3), te.encode("c")), null);
  assert.equal(r.push(header(0, 0, 3), te.encode("a")), null);
  assert.equal(r.push(header(0, 0, 3), te.encode("a")), null);
  const f = r.push(header(0, 1, 3), te.encode("b"));
  assert.ok(f);
  assert.equal(new TextDecoder().decode(f.data), "abc");
  assert.equal(r.push(header(0, 1, 3), te.encode("b")), null);
  assert.equal(r.stats.fragmentsDuplicate, 1);
  assert.equal(r.stats.fragmentsLate, 1);
});

test("a frame with a missing fragment is dropped, and the next frame still comes out with its reference", () => {
  const r = new Reassembler();
  assert.ok(r.push(header(0, 0, 1), te.encode("k")));
  assert.equal(r.push(header(1, 0, 2), te.encode("x")), null); // fragment 1 of frame 1 lost
  const f = r.push(header(2, 0, 1), te.encode("y"));
  assert.ok(f);
  assert.equal(f.frame, 2);
  assert.equal(f.refFrame, 1, "frame 2 names frame 1, which never came: reference.js drops it");
  assert.equal(r.stats.framesLost, 1);
  assert.equal(r.push(header(1, 1, 2), te.encode("z")), null, "the late fragment of frame 1 is ignored");
});

test("audio frames reordered within the window are passed on (the jitter buffer orders them); older ones are late", () => {
  const r = new Reassembler();
  const h = (/** @type {number} */ frame) => ({ ...header(frame, 0, 1), track: TRACK_AUDIO });
  assert.ok(r.push(h(0), te.encode("a")));
  assert.ok(r.push(h(2), te.encode("c")));
  const late = r.push(h(1), te.encode("b"));
  assert.ok(late, "frame 1 arrived after frame 2 and still comes out");
  assert.equal(new TextDecoder().decode(late.data), "b");
  assert.equal(r.stats.audioReordered, 1);
  assert.ok(r.push(h(2 + AUDIO_REORDER_FRAMES), te.encode("d")));
  assert.equal(r.push(h(1), te.encode("b")), null, "more than the window behind the newest: late");
  assert.equal(r.stats.fragmentsLate, 1);
});

test("audio and video are reassembled independently", () => {
  const r = new Reassembler();
  assert.equal(r.push(header(5, 0, 2), te.encode("v")), null);
  assert.ok(r.push({ ...header(5, 0, 1), track: TRACK_AUDIO }, te.encode("a")));
  assert.ok(r.push(header(5, 1, 2), te.encode("w")));
});

test("reassembly is bounded: a stream of never-completed frames does not grow memory", () => {
  const r = new Reassembler();
  for (let frame = 0; frame < 100; frame++) assert.equal(r.push(header(frame, 0, 2), te.encode("half")), null);
  assert.ok(r.video.partial.length <= MAX_FRAMES_IN_REASSEMBLY);
  assert.ok(r.stats.framesLost >= 95);
  // A fragment index the first fragment's count does not allow is ignored.
  assert.equal(r.push(header(200, 0, 2), te.encode("a")), null);
  assert.equal(r.push(header(200, 5, 8), te.encode("b")), null);
});

test("a new match id resets state: frame 0 of the next pairing is not late", () => {
  const r = new Reassembler();
  assert.ok(r.push(header(5, 0, 1), te.encode("a")));
  assert.ok(r.push({ ...header(0, 0, 1), match_id: 8n }, te.encode("b")));
});

test("randomized loss, reordering and duplication: every frame that fully arrives comes out intact, in order", () => {
  let seed = 12345;
  const rand = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x80000000;
  };
  for (let round = 0; round < 20; round++) {
    const f = new Fragmenter(TRACK_VIDEO);
    const r = new Reassembler();
    /** @type {Map<number, Uint8Array>} */
    const sent = new Map();
    /** @type {Uint8Array[]} */
    let wire = [];
    for (let frame = 0; frame < 60; frame++) {
      const payload = bytes(Math.floor(rand() * 5000), frame + round * 1000);
      sent.set(frame, payload);
      wire.push(.../** @type {Uint8Array[]} */ (f.fragment(9n, payload, frame % 30 === 0, BigInt(frame), 1100)));
    }
    const lossRate = round / 100; // 0%..19%
    wire = wire.filter(() => rand() >= lossRate);
    wire = wire.flatMap((d) => (round > 0 && rand() < 0.05 ? [d, d] : [d]));
    // Local reordering: swap neighbours now and then (a network reorders within a window).
    // Round 0 is a clean network: nothing lost, duplicated or reordered.
    const reorder = round === 0 ? 0 : 0.1;
    for (let i = 0; i + 1 < wire.length; i++) if (rand() < reorder) [wire[i], wire[i + 1]] = [wire[i + 1], wire[i]];
    let last = -1;
    let completed = 0;
    for (const dg of wire) {
      const out = feed(r, dg);
      if (!out) continue;
      assert.ok(out.frame > last, "frames come out in order");
      last = out.frame;
      assert.deepEqual(out.data, sent.get(out.frame));
      completed++;
    }
    if (round === 0) assert.equal(completed, 60, "clean network: every frame arrives");
    else assert.ok(completed > 0);
    assert.equal(r.stats.framesCompleted, completed);
  }
});

test("with parity, any one lost fragment of a frame is rebuilt at once, whichever it is and whatever the order", () => {
  for (const size of [2_500, 3_600, 1_201]) {
    const payload = bytes(size, size);
    const probe = new Fragmenter(TRACK_VIDEO).fragment(7n, payload, true, 1n, 1200, 1, true);
    const count = /** @type {Uint8Array[]} */ (probe).length;
    assert.ok(count >= 2);
    for (let lost = 0; lost < count; lost++) {
      for (const parityFirst of [false, true]) {
        const f = new Fragmenter(TRACK_VIDEO);
        const dgs = /** @type {Uint8Array[]} */ (f.fragment(7n, payload, true, 1n, 1200, 1, true));
        const parity = parityOf(f);
        assert.ok(parity.length <= 1200, "the parity datagram fits the same size");
        assert.equal(readDatagram(parity).header.track, TRACK_VIDEO_PARITY);
        const r = new Reassembler({ recoverVideo: true });
        const order = dgs.filter((_, i) => i !== lost);
        if (parityFirst) order.unshift(parity);
        else order.push(parity);
        const out = order.map((d) => feed(r, d)).filter((x) => x !== null);
        assert.equal(out.length, 1, `size ${size}, fragment ${lost} lost, parity ${parityFirst ? "first" : "last"}`);
        assert.deepEqual(out[0]?.data, payload);
        assert.equal(out[0]?.track, TRACK_VIDEO);
        assert.equal(r.stats.framesRepaired, 1);
      }
    }
  }
});

test("parity cannot repair two losses, and is late once the frame is whole; parity numbers leave no gap in the video track's", () => {
  const f = new Fragmenter(TRACK_VIDEO);
  const payload = bytes(4_000, 3);
  const dgs = /** @type {Uint8Array[]} */ (f.fragment(7n, payload, false, 1n, 1200, 1, true));
  const parity = parityOf(f);
  const r = new Reassembler({ recoverVideo: true });
  for (const d of [dgs[0], dgs[2], parity]) assert.equal(feed(r, d), null);
  assert.deepEqual(r.missing(0, 8), [1, 3].slice(0, dgs.length - 2));
  // The resend of one of them completes it through the parity.
  assert.deepEqual(feed(r, dgs[1])?.data, payload);
  assert.equal(r.stats.framesRepaired, 1);
  // A whole frame, then its parity: late, nothing comes out twice.
  const dgs2 = /** @type {Uint8Array[]} */ (f.fragment(7n, payload, false, 2n, 1200, 1, true));
  const parity2 = parityOf(f);
  assert.ok(dgs2.map((d) => feed(r, d)).some((x) => x !== null));
  assert.equal(feed(r, parity2), null);
  // Video sequence numbers run on without the parity datagrams; parity has its own.
  assert.deepEqual([...dgs, ...dgs2].map((d) => readDatagram(d).header.seq), [...Array(dgs.length * 2).keys()]);
  assert.deepEqual([parity, parity2].map((d) => readDatagram(d).header.seq), [0, 1]);
});

test("no parity for a one-fragment frame, none without asking, and a parity that disagrees with what arrived is dropped", () => {
  const f = new Fragmenter(TRACK_VIDEO);
  f.fragment(7n, bytes(500, 1), false, 1n, 1200, 1, true);
  assert.equal(f.lastParity, null);
  f.fragment(7n, bytes(5_000, 1), false, 1n, 1200, 1, false);
  assert.equal(f.lastParity, null);
  const dgs = /** @type {Uint8Array[]} */ (f.fragment(7n, bytes(3_000, 2), false, 1n, 1200, 1, true));
  const parity = parityOf(f);
  const { header: h, offset } = readDatagram(parity);
  const bad = parity.slice(offset);
  new DataView(bad.buffer).setUint32(0, 1_000_000, true); // a total no frame of these fragments has
  const r = new Reassembler({ recoverVideo: true });
  feed(r, dgs[0]);
  assert.equal(r.push(h, bad), null);
  assert.equal(r.stats.framesRepaired, 0);
  assert.deepEqual(feed(r, dgs[1]), null, "still waiting for the real fragment");
  assert.ok(dgs.slice(2).map((d) => feed(r, d)).some((x) => x !== null));
});

test("a number reserved before sealing is the one the frame is cut with, and numbers carry on after it", () => {
  const f = new Fragmenter(TRACK_VIDEO);
  const first = f.reserve();
  const second = f.reserve();
  assert.deepEqual([first, second], [0, 1]);
  // Sealing may finish in any order; each frame keeps its own number and reference.
  const b = /** @type {Uint8Array[]} */ (f.fragment(4n, new Uint8Array(50), false, 9n, 1100, 1, false, second));
  const a = /** @type {Uint8Array[]} */ (f.fragment(4n, new Uint8Array(50), true, 8n, 1100, 1, false, first));
  assert.equal(readDatagram(a[0]).header.frame, 0);
  assert.equal(readDatagram(a[0]).header.ref_frame, refFrameOf(0, true, 1));
  assert.equal(readDatagram(b[0]).header.frame, 1);
  assert.equal(readDatagram(b[0]).header.ref_frame, 0);
  const c = /** @type {Uint8Array[]} */ (f.fragment(4n, new Uint8Array(50), false, 10n, 1100));
  assert.equal(readDatagram(c[0]).header.frame, 2, "the next unreserved frame follows the reserved ones");
  assert.equal(refFrameOf(5, false, 3), 2);
  assert.equal(refFrameOf(1, false, 3), 2 ** 32 - 2, "wraps as u32");
});
