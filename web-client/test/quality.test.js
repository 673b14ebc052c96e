// @ts-check
/**
 * @file Quality classification, the bitrate controller and the receive meter.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { BitrateController, ReceiveMeter, classifyQuality, MIN_VIDEO_KBPS, MAX_VIDEO_KBPS, PAUSE_MIN_MS, PAUSE_RTT_SAMPLES } from "../app/wire/quality.js";
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

test("loss with a queue lowers the bitrate at once, heavy loss harder, at most once a second", () => {
  const c = new BitrateController({ start: 1000 });
  assert.equal(c.onPeerReport({ loss_permille: 50, queue_delay_ms: 40 }, 0), 850);
  assert.equal(c.onPeerReport({ loss_permille: 50 }, 500), 850, "holdoff");
  assert.equal(c.onPeerReport({ loss_permille: 200 }, 1000), 510);
  for (let t = 2000; t < 30_000; t += 1000) c.onPeerReport({ loss_permille: 500 }, t);
  assert.equal(c.target, MIN_VIDEO_KBPS, "never below the floor");
});

test("a burst of loss on an empty queue (a handover's blackout) holds the rate; loss again backs off", () => {
  const c = new BitrateController({ start: 800 });
  assert.equal(c.onPeerReport({ loss_permille: 300, queue_delay_ms: 0 }, 0), 800);
  assert.ok(c.limited);
  assert.equal(c.onPeerReport({ loss_permille: 0, queue_delay_ms: 0 }, 1000), 840, "clean: climbs again");
  // Loss report after report (a policer, a lossy radio): the second one backs off.
  assert.equal(c.onPeerReport({ loss_permille: 50, queue_delay_ms: 0 }, 2000), 840);
  assert.equal(c.onPeerReport({ loss_permille: 50, queue_delay_ms: 0 }, 3000), 714);
});

test("congestion cuts to under what the partner received when that is lower", () => {
  const c = new BitrateController({ start: 2000 });
  // The link fell to about 1 Mbit/s: the partner got 1000 kbit/s, with loss and a queue.
  assert.equal(c.onPeerReport({ loss_permille: 50, queue_delay_ms: 100, bitrate_kbps: 1000 }, 0), 850, "not 2000 × 0.85");
  // A false alarm at a rate the path carries: the usual × 0.6 for a deep queue.
  const d = new BitrateController({ start: 1000 });
  assert.equal(d.onPeerReport({ loss_permille: 0, queue_delay_ms: 250, bitrate_kbps: 1040 }, 0), 600);
});

test("clean reports raise the bitrate slowly, only after a quiet spell, up to the ceiling", () => {
  const c = new BitrateController({ start: 1000 });
  c.onPeerReport({ loss_permille: 50, queue_delay_ms: 40 }, 0); // 850
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

test("an RTT queue seen twice while rising cuts under what the uplink carried, and blocks climbing until it drains", () => {
  const c = new BitrateController({ start: 2000 });
  assert.equal(c.onRtt(80, 2100, 0), 2000, "the base");
  assert.equal(c.onRtt(110, 2100, 100), 2000, "jitter: nothing");
  assert.equal(c.onRtt(160, 2100, 200), 2000, "once may be noise");
  // The queue grew 180 ms in 300 ms while we sent 2100 kbit/s: the link carried 2100 / 1.6.
  assert.equal(c.onRtt(260, 2100, 300), 1116);
  assert.equal(c.onRtt(300, 900, 400), 1116, "one RTT cut per half second");
  assert.ok(c.limited);
  assert.equal(c.onPeerReport({ loss_permille: 0, queue_delay_ms: 0 }, 3000), 1116, "no climbing into our own queue");
  assert.equal(c.onRtt(90, 900, 3100), 1116);
  assert.equal(c.onPeerReport({ loss_permille: 0, queue_delay_ms: 0 }, 4000), 1395, "fast recovery once drained");
});

test("a deep RTT queue cuts at once; samples without rates cut by a share; no RTT, no change", () => {
  const c = new BitrateController({ start: 2000 });
  c.onRtt(80, null, 0);
  assert.equal(c.onRtt(300, null, 100), 1200);
  const d = new BitrateController({ start: 2000 });
  d.onRtt(80, null, 0);
  assert.equal(d.onRtt(150, null, 100), 2000);
  assert.equal(d.onRtt(150, null, 200), 1700, "× 0.85");
  assert.equal(d.onRtt(null, null, 2000), 1700);
  assert.equal(d.onRtt(Number.NaN, null, 2000), 1700);
  d.reset();
  assert.equal(d.rttSamples.length + d.rttBase.length, 0);
});

test("a move to a path with a longer round trip cuts once at most, then becomes the base", () => {
  const c = new BitrateController({ start: 2000 });
  let t = 0;
  for (let i = 0; i < 20; i++, t += 100) c.onRtt(20, 2100, t);
  let cuts = 0;
  let last = c.target;
  for (let i = 0; i < 40; i++, t += 100) {
    const now = c.onRtt(100, 2100, t);
    if (now < last) cuts++;
    last = now;
  }
  assert.equal(cuts, 1, "one cut for the step, none while it holds");
  assert.ok(!c.ownQueueStanding(), "the longer round trip is the base");
  assert.ok(c.onPeerReport({ loss_permille: 0, queue_delay_ms: 0 }, t + 2000) > last, "climbs again");
});

test("a fade below the floor pauses video until the queue drains, then it resumes at the floor (as the native controller)", () => {
  const c = new BitrateController({ start: 1200 });
  let t = 0;
  for (let i = 0; i < 10; i++, t += 100) c.onRtt(40, 1300, t);
  assert.ok(!c.videoPaused);
  // The link falls to 100 kbit/s: the queue grows as fast as its ACKs show it, and once the
  // congestion window is full the ACKs clock what we send to the link's.
  const fade = [
    [100, 1300],
    [250, 400],
    [400, 120],
    [500, 110],
    [550, 110],
    [550, 110],
  ];
  let pausedSample = 0;
  let pausedAt = 0;
  for (const [i, [queue, sent]] of fade.entries()) {
    c.onRtt(40 + queue, sent, t);
    if (c.videoPaused && pausedSample === 0) [pausedSample, pausedAt] = [i + 1, t];
    t += 100;
  }
  assert.equal(pausedSample, PAUSE_RTT_SAMPLES, "paused, on the third sample of the queue");
  assert.equal(c.target, MIN_VIDEO_KBPS);
  assert.equal(c.onPeerReport({ loss_permille: 300, queue_delay_ms: 0 }, t), MIN_VIDEO_KBPS);
  assert.ok(c.videoPaused, "a report does not end a pause");
  while (c.videoPaused) {
    c.onRtt(45, 60, t);
    if (c.videoPaused) t += 100;
    assert.ok(t < 20_000, "never resumed");
  }
  const after = t - pausedAt;
  assert.ok(after >= PAUSE_MIN_MS && after < PAUSE_MIN_MS + 200, `resumed ${after} ms after pausing`);
  assert.equal(c.target, MIN_VIDEO_KBPS);
  for (let i = 0; i < 4; i++) c.onPeerReport({ loss_permille: 0, queue_delay_ms: 0 }, (t += 1000));
  assert.ok(c.target > 250, `fast recovery toward the rate before the fade: ${c.target}`);
});

test("one high RTT reading after a move cuts but does not pause; nor does a step to a much longer path at the floor", () => {
  const c = new BitrateController({ start: 200 });
  let t = 0;
  for (let i = 0; i < 10; i++, t += 100) c.onRtt(40, 60, t);
  c.onRtt(333, 10, t);
  c.onRtt(70, 250, t + 100);
  c.onRtt(70, 250, t + 200);
  assert.ok(!c.videoPaused);
  assert.equal(c.target, MIN_VIDEO_KBPS, "the heavy cut, to the floor");
  const d = new BitrateController({ start: MIN_VIDEO_KBPS });
  t = 0;
  for (let i = 0; i < 10; i++, t += 100) d.onRtt(40, 200, t);
  for (let i = 0; i < 30; i++, t += 100) {
    d.onRtt(250, 200, t);
    assert.ok(!d.videoPaused, `at ${t} ms`);
  }
});

test("the first clean report of video after a pause goes back to half the rate before it; congestion since, no jump", () => {
  const faded = { loss_permille: 200, queue_delay_ms: 150, bitrate_kbps: 90 };
  const clean = { loss_permille: 0, queue_delay_ms: 0 };
  const c = new BitrateController({ start: 800 });
  c.onPeerReport(faded, 0);
  assert.ok(c.videoPaused);
  assert.equal(c.onPeerReport(clean, 1000), MIN_VIDEO_KBPS, "resumed");
  assert.ok(!c.videoPaused);
  assert.equal(c.onPeerReport(clean, 2000), 188, "a report of the pause: fast recovery's step only");
  assert.equal(c.onPeerReport(clean, 3000), 400, "800 × 0.5");
  assert.equal(c.onPeerReport(clean, 4000), 500, "then × 1.25");
  const d = new BitrateController({ start: 800 });
  d.onPeerReport(faded, 0);
  d.onPeerReport(clean, 1000);
  d.onPeerReport({ loss_permille: 50, queue_delay_ms: 100, bitrate_kbps: 400 }, 2500);
  assert.ok(!d.videoPaused);
  assert.ok(d.onPeerReport(clean, 5000) < 300);
});

test("a report far under the floor pauses; a report of the pause does not pause again; a pause after a resume lasts longer", () => {
  const c = new BitrateController({ start: 800 });
  const faded = { loss_permille: 200, queue_delay_ms: 150, bitrate_kbps: 90 };
  const clean = { loss_permille: 0, queue_delay_ms: 0 };
  c.onPeerReport(clean, 0);
  c.onPeerReport(faded, 1000);
  assert.ok(c.videoPaused, "heavy loss at 90 kbit/s received");
  assert.equal(c.onPeerReport(clean, 2000), MIN_VIDEO_KBPS);
  assert.ok(!c.videoPaused, "no RTT signal: the hold alone ends the pause");
  c.onPeerReport(faded, 3000);
  assert.ok(!c.videoPaused, "a report of the pause itself");
  c.onPeerReport(faded, 4000);
  assert.ok(c.videoPaused, "the fade goes on");
  c.onPeerReport(clean, 5500);
  assert.ok(c.videoPaused, "twice the hold");
  c.onPeerReport(clean, 6000);
  assert.ok(!c.videoPaused);
  c.reset();
  assert.ok(!c.videoPaused && c.target === 800);
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
  assert.equal(c.target, start, "one mild report alone may be a receiver short of CPU");
  c.onPeerReport({ loss_permille: 0, queue_delay_ms: BACKOFF_QUEUE_MS + 5 }, (t += 1000));
  assert.ok(c.target < start, "backs off on queue delay alone, seen twice");
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

test("on a clean path the rate climbs back within seconds after false alarms, even from the floor", async () => {
  const { BitrateController, HEAVY_QUEUE_MS, BACKOFF_QUEUE_MS } = await import("../app/wire/quality.js");
  const c = new BitrateController({ start: 800 });
  let t = 0;
  // A busy machine: single mild spikes among clean reports never back off...
  for (let i = 0; i < 20; i++) c.onPeerReport({ loss_permille: 0, queue_delay_ms: i % 3 === 0 ? BACKOFF_QUEUE_MS + 20 : 5 }, (t += 1000));
  assert.ok(c.target >= 800, `isolated spikes lowered the rate to ${c.target}`);
  // ...and a burst of heavy ones (a receiver stalled for seconds) that drove it to the floor:
  for (let i = 0; i < 6; i++) c.onPeerReport({ loss_permille: 0, queue_delay_ms: HEAVY_QUEUE_MS + 50 }, (t += 1000));
  assert.equal(c.target, MIN_VIDEO_KBPS);
  const cleanFrom = t;
  while (c.target < 0.85 * 800 && t - cleanFrom < 60_000) c.onPeerReport({ loss_permille: 0, queue_delay_ms: 2 }, (t += 1000));
  assert.ok(t - cleanFrom <= 10_000, `back to ${c.target} kbit/s only after ${(t - cleanFrom) / 1000} s of clean reports`);
});

test("a real queue (a link slower than the rate) still backs the rate off, and the queue stays bounded", async () => {
  const { BitrateController } = await import("../app/wire/quality.js");
  const linkKbps = 400;
  const c = new BitrateController({ start: 800 });
  let queueMs = 0;
  /** @type {{target: number, queue: number}[]} */
  const trace = [];
  for (let t = 1000; t <= 90_000; t += 1000) {
    // A rate-limited link with a deep buffer: a second at `target` adds (target - link) / link seconds of queue.
    queueMs = Math.max(0, queueMs + ((c.target - linkKbps) / linkKbps) * 1000);
    c.onPeerReport({ loss_permille: 0, queue_delay_ms: Math.round(queueMs) }, t);
    trace.push({ target: c.target, queue: queueMs });
  }
  const third = Math.floor(trace.length / 3);
  const mean = (/** @type {number[]} */ xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const first = trace.slice(0, third);
  const last = trace.slice(-third);
  const lastRate = mean(last.map((x) => x.target));
  assert.ok(lastRate <= linkKbps * 1.1, `settled at ${lastRate} kbit/s over a ${linkKbps} kbit/s link`);
  assert.ok(lastRate >= linkKbps * 0.5, `collapsed to ${lastRate} kbit/s on a ${linkKbps} kbit/s link`);
  assert.ok(mean(last.map((x) => x.queue)) <= mean(first.map((x) => x.queue)) + 50, "the queue does not grow");
  assert.ok(Math.max(...last.map((x) => x.queue)) < 500, `queue reached ${Math.max(...last.map((x) => x.queue))} ms`);
});

test("the receive meter reports the standing queue: late arrivals on a busy receiver are not a queue", () => {
  const m = new ReceiveMeter();
  const t0 = 1_700_000_000_000;
  let seq = 0;
  /** One second of audio, every 20 ms, at transit `base` ms, some of it `late` ms later. */
  const second = (/** @type {number} */ s, /** @type {number} */ base, /** @type {(i: number) => number} */ late) => {
    for (let i = 0; i < 50; i++) {
      const capture = t0 + s * 1000 + i * 20;
      m.onDatagram({ track: TRACK_AUDIO, seq: seq++, capture_us: BigInt(capture * 1000) }, 80, capture + base + late(i));
    }
    return m.report(t0 + (s + 1) * 1000, 0).queue_delay_ms;
  };
  assert.equal(second(0, 10, () => 0), 0);
  // The receiver's thread was busy: a burst of arrivals stamped up to 150 ms late, the last one too.
  assert.equal(second(1, 10, (i) => (i >= 40 ? 150 - (49 - i) * 10 : 0)), 0, "a stall is not a queue");
  // A queue: every packet 120 ms later than the path's base.
  assert.equal(second(2, 130, () => 0), 120);
});
