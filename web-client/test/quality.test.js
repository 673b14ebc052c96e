// @ts-check
/**
 * @file Quality classification, the bitrate controller and the receive meter.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { BitrateController, ReceiveMeter, classifyQuality, MIN_VIDEO_KBPS, MAX_VIDEO_KBPS } from "../app/wire/quality.js";
import { TRACK_AUDIO, TRACK_VIDEO } from "../app/wire/protocol.js";

test("quality classes: good, fair, poor, unknown", () => {
  assert.equal(classifyQuality({ rttMs: null, lossPermille: null }), "unknown");
  assert.equal(classifyQuality({ rttMs: 20, lossPermille: 0 }), "good");
  assert.equal(classifyQuality({ rttMs: 200, lossPermille: 0 }), "fair");
  assert.equal(classifyQuality({ rttMs: 20, lossPermille: 50 }), "fair");
  assert.equal(classifyQuality({ rttMs: 500, lossPermille: 0 }), "poor");
  assert.equal(classifyQuality({ rttMs: 20, lossPermille: 200 }), "poor");
  assert.equal(classifyQuality({ rttMs: null, lossPermille: 5 }), "good");
});

test("loss reports lower the bitrate at once, heavy loss harder, at most once a second", () => {
  const c = new BitrateController({ start: 1000 });
  assert.equal(c.onPeerReport({ loss_permille: 50 }, 0), 850);
  assert.equal(c.onPeerReport({ loss_permille: 50 }, 500), 850, "holdoff");
  assert.equal(c.onPeerReport({ loss_permille: 200 }, 1000), 510);
  for (let t = 2000; t < 30_000; t += 1000) c.onPeerReport({ loss_permille: 500 }, t);
  assert.equal(c.target, MIN_VIDEO_KBPS, "never below the floor");
});

test("clean reports raise the bitrate slowly, only after a quiet spell, up to the ceiling", () => {
  const c = new BitrateController({ start: 1000 });
  c.onPeerReport({ loss_permille: 50 }, 0); // 850
  assert.equal(c.onPeerReport({ loss_permille: 0 }, 1000), 850, "too soon after a decrease");
  assert.equal(c.onPeerReport({ loss_permille: 0 }, 3000), 893);
  const before = c.target;
  c.onPeerReport({ loss_permille: 0 }, 4000);
  assert.ok(c.target - before <= Math.max(20, before * 0.05) + 1, "at most 5% a step");
  for (let t = 5000; t < 200_000; t += 1000) c.onPeerReport({ loss_permille: 0 }, t);
  assert.equal(c.target, MAX_VIDEO_KBPS);
  // Moderate loss (between the clean and backoff lines) holds the rate.
  const held = new BitrateController({ start: 1000 });
  held.onPeerReport({ loss_permille: 20 }, 10_000);
  assert.equal(held.target, 1000);
});

test("a falling send-rate estimate caps the bitrate; increases stay under the estimate", () => {
  const c = new BitrateController({ start: 1500 });
  assert.equal(c.onSendEstimate(1000, 0), 850);
  assert.equal(c.onSendEstimate(null, 100), 850, "no estimate: no change");
  assert.equal(c.onSendEstimate(0, 100), 850);
  for (let t = 5000; t < 60_000; t += 1000) c.onPeerReport({ loss_permille: 0 }, t);
  assert.ok(c.target <= 850, `target ${c.target} climbed past 85% of the estimate`);
  c.onSendEstimate(4000, 61_000);
  for (let t = 62_000; t < 120_000; t += 1000) c.onPeerReport({ loss_permille: 0 }, t);
  assert.ok(c.target > 850);
  c.reset();
  assert.equal(c.target, 1500);
});

test("the receive meter counts loss from sequence gaps per track, bitrate and frames decoded", () => {
  const m = new ReceiveMeter();
  const t0 = 1_700_000_000_000;
  // Audio seq 0..49 minus 5 lost; video seq 0..99 minus 10 lost.
  for (let s = 0; s < 50; s++) if (s % 10 !== 3) m.onDatagram({ track: TRACK_AUDIO, seq: s, capture_us: BigInt((t0 + s * 20) * 1000) }, 100, t0 + s * 20 + 5);
  for (let s = 0; s < 100; s++) if (s % 10 !== 7) m.onDatagram({ track: TRACK_VIDEO, seq: s, capture_us: BigInt(t0 * 1000) }, 1000, t0 + s * 10);
  const r = m.report(t0 + 1000, 42);
  assert.equal(r.loss_permille, 100, "15 lost of 150 expected");
  assert.equal(r.frames_decoded, 42);
  // The interval starts at the first arrival (t0 + 5 ms).
  assert.equal(r.bitrate_kbps, Math.round(((45 * 100 + 90 * 1000) * 8) / 995));
  assert.equal(r.jitter_ms, 0, "constant transit time: no jitter");
  // The next interval starts from where this one ended.
  m.onDatagram({ track: TRACK_AUDIO, seq: 50, capture_us: BigInt((t0 + 1000) * 1000) }, 100, t0 + 1005);
  m.onDatagram({ track: TRACK_AUDIO, seq: 52, capture_us: BigInt((t0 + 1040) * 1000) }, 100, t0 + 1045);
  assert.equal(m.report(t0 + 2000, 43).loss_permille, 333);
  assert.equal(m.report(t0 + 3000, 43).loss_permille, 0, "nothing expected, nothing lost");
});

test("the receive meter's jitter follows variable transit time", () => {
  const m = new ReceiveMeter();
  const t0 = 1_700_000_000_000;
  for (let s = 0; s < 200; s++) m.onDatagram({ track: TRACK_AUDIO, seq: s, capture_us: BigInt((t0 + s * 20) * 1000) }, 80, t0 + s * 20 + (s % 2 ? 30 : 0));
  const r = m.report(t0 + 4000, 0);
  assert.ok(r.jitter_ms >= 25 && r.jitter_ms <= 30, `jitter ${r.jitter_ms}`);
});

test("a growing queue delay backs the rate off like loss does, and blocks increases, so a deep buffer cannot fill", async () => {
  const { BitrateController, BACKOFF_QUEUE_MS, HEAVY_QUEUE_MS } = await import("../app/wire/quality.js");
  const c = new BitrateController({ start: 1000 });
  let t = 0;
  const start = c.target;
  c.onPeerReport({ loss_permille: 0, queue_delay_ms: BACKOFF_QUEUE_MS + 5 }, (t += 1000));
  assert.ok(c.target < start, "backs off on queue delay alone");
  assert.equal(c.limited, true);
  const mild = c.target;
  c.onPeerReport({ loss_permille: 0, queue_delay_ms: HEAVY_QUEUE_MS }, (t += 1000));
  assert.ok(c.target <= mild * 0.6 + 1, "a deep queue backs off hard");
  const low = c.target;
  for (let i = 0; i < 10; i++) c.onPeerReport({ loss_permille: 0, queue_delay_ms: BACKOFF_QUEUE_MS / 2 + 1 }, (t += 1000));
  assert.equal(c.target, low, "no increase while a queue is still there");
  for (let i = 0; i < 10; i++) c.onPeerReport({ loss_permille: 0, queue_delay_ms: 0 }, (t += 1000));
  assert.ok(c.target > low, "increases again once the queue has drained");
});
