// @ts-check
/**
 * @file The in-band decoder description on video keyframes: round trip, colour space,
 * and refusal of malformed or hostile descriptions.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { MAX_DESCRIPTION_BYTES, describeDecoder, parseDescription, unwrapKeyframe, wrapKeyframe } from "../app/wire/keyframe.js";

test("a keyframe carries codec and colour space and gives back the bitstream untouched", () => {
  const cs = { primaries: "smpte170m", transfer: "smpte170m", matrix: "smpte170m", fullRange: false };
  const desc = describeDecoder("vp09.00.10.08", cs);
  assert.equal(desc, "vp09.00.10.08;smpte170m,smpte170m,smpte170m,0");
  const bits = Uint8Array.of(0x82, 0x49, 0x83, 0x42, 0x00);
  const out = unwrapKeyframe(wrapKeyframe(desc, bits));
  assert.ok(out);
  assert.deepEqual(out.config, { codec: "vp09.00.10.08", colorSpace: cs });
  assert.deepEqual(Array.from(out.data), Array.from(bits));
  assert.equal(out.description, desc);
});

test("a codec alone, and partial colour spaces, are fine", () => {
  assert.equal(describeDecoder("vp8", null), "vp8");
  assert.equal(describeDecoder("vp8", { primaries: null, transfer: null, matrix: null, fullRange: null }), "vp8");
  assert.deepEqual(parseDescription("vp8"), { codec: "vp8" });
  assert.deepEqual(parseDescription(describeDecoder("av01.0.04M.08", { matrix: "bt709", fullRange: true })), {
    codec: "av01.0.04M.08",
    colorSpace: { matrix: "bt709", fullRange: true },
  });
});

test("colour-space names outside the WebCodecs enums are dropped, not passed to configure()", () => {
  assert.deepEqual(parseDescription("vp8;evil,bt709,nope,"), { codec: "vp8", colorSpace: { transfer: "bt709" } });
  assert.deepEqual(parseDescription("vp8;x,y,z,"), { codec: "vp8" });
});

test("malformed descriptions are refused", () => {
  for (const bad of ["", "vp8 ", "vp8;a,b", "vp8;A,B,C,0", "<script>", "vp8;a,b,c,2", "vp8;;", "vp09\u0000"]) {
    assert.equal(parseDescription(bad), null, JSON.stringify(bad));
  }
  assert.equal(unwrapKeyframe(new Uint8Array(0)), null);
  assert.equal(unwrapKeyframe(Uint8Array.of(0, 1, 2)), null, "zero-length description");
  assert.equal(unwrapKeyframe(Uint8Array.of(10, 0x76, 0x70)), null, "description past the end");
  assert.equal(unwrapKeyframe(Uint8Array.of(MAX_DESCRIPTION_BYTES + 1, ...new Uint8Array(200).fill(0x61))), null, "too long");
  assert.equal(unwrapKeyframe(Uint8Array.of(2, 0xff, 0xfe, 1)), null, "not ASCII");
  assert.throws(() => wrapKeyframe("", new Uint8Array(1)), RangeError);
});
