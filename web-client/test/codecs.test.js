// @ts-check
/**
 * @file Codec preference: on a weak machine the cheapest software encoder is offered first,
 * elsewhere the probe order (best compression first) stays; capabilities leave out failed
 * codecs and keep that order.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { VIDEO_CODECS, WEAK_CPU_CORES, mediaCaps, preferenceOrder } from "../app/wire/codecs.js";

/** Every codec decodes and encodes in software, as on a headless Chromium. */
const probes = VIDEO_CODECS.map(({ family, codec }) => ({ family, codec, decode: true, encode: true, hardwareEncode: false, scalabilityMode: null }));

test("a weak machine offers the cheapest software encoders first", () => {
  const order = preferenceOrder(probes, 2).map((p) => p.family);
  assert.deepEqual(order, ["Vp8", "H264", "Vp9", "Av1"]);
  assert.deepEqual(mediaCaps(preferenceOrder(probes, WEAK_CPU_CORES), []).encode, ["Vp8", "H264", "Vp9", "Av1"]);
});

test("a machine with more cores keeps the compression order", () => {
  const order = preferenceOrder(probes, WEAK_CPU_CORES + 1).map((p) => p.family);
  assert.deepEqual(order, VIDEO_CODECS.map((c) => c.family));
});

test("a failed codec is left out and the order of the rest stays", () => {
  const caps = mediaCaps(preferenceOrder(probes, 2), ["Vp8"]);
  assert.deepEqual(caps.encode, ["H264", "Vp9", "Av1"]);
  assert.deepEqual(caps.decode, ["H264", "Vp9", "Av1"]);
  assert.deepEqual(caps.hardware_encode, []);
});
