// @ts-check
/**
 * @file Duet against WebRTC in one headless Chromium, glass to glass (issue 8's benchmark).
 *
 * Three pages (A, B, C) whose camera is a stamped canvas (camera.js). First WebRTC: A and B
 * call over a fresh RTCPeerConnection (VP8, 1 Mbit/s, relay-only ICE through coturn on
 * 127.0.0.1, signalling through this script) while C waits with its camera running; then A
 * hangs up and calls C on a new peer connection, as a WebRTC random chat does for "Next".
 * Then the same three pages through the real Duet app served by the relay: A and B paired,
 * C starts, A presses Next and meets C. Each receiving page reads the stamp back off the
 * partner element it renders. Then the whole thing again through the project's shaper
 * (duet-impair) in front of coturn and in front of the relay.
 *
 * Run it with scripts/bench-browser, which puts it in a network namespace of its own.
 * After the clean run, two more Duet calls beside the first: A on the WebSocket fallback,
 * and A in Firefox ESR (puppeteer-core) with B in Chromium.
 *
 * Options: --seconds N (window per call, default 20), --smoke (3 s windows), --no-impaired, --no-firefox,
 * --profile NAME (shaper profile, default loss1-rtt80: 1 % loss, 40 ms each way), --json PATH, --txt PATH.
 * Env: DUET_RELAY_BIN, DUET_IMPAIR_BIN, DUET_CHROMIUM, DUET_FIREFOX, DUET_TURNSERVER, DUET_TEST_PATIENCE.
 *
 * It fails (exit 1) only when the benchmark cannot measure: a service that does not start,
 * a call that shows no partner picture in time, a WebRTC call not crossing the TURN relay.
 * It never fails on a speed figure.
 */

import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { REPO, launchFirefox, patient, relayBinary, startRelay } from "../helpers.js";
import { direction, table, targetTable, targets } from "./figures.js";
import { Children, TURN_PASSWORD, TURN_USER, browserPid, childPid, cpuSeconds, launchChromium, machineTicks, processStates, startCoturn, startPageServer, startShaper } from "./services.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CAMERA = readFileSync(path.join(HERE, "camera.js"), "utf8");
const IDS = { A: 1, B: 2, C: 3 };

// ------------------------------------------------------------------ options

/** @param {string[]} argv */
function parseArgs(argv) {
  const o = { seconds: 20, smoke: false, impaired: true, firefox: true, profile: "loss1-rtt80", json: "", txt: "" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "--seconds") o.seconds = Number(value());
    else if (a === "--smoke") o.smoke = true;
    else if (a === "--no-impaired") o.impaired = false;
    else if (a === "--no-firefox") o.firefox = false;
    else if (a === "--profile") o.profile = value();
    else if (a === "--json") o.json = value();
    else if (a === "--txt") o.txt = value();
    else if (a === "-h" || a === "--help") {
      console.log("usage: scripts/bench-browser [--seconds N] [--smoke] [--no-impaired] [--no-firefox] [--profile NAME] [--json PATH] [--txt PATH]");
      process.exit(0);
    } else throw new Error(`unknown option ${a}`);
  }
  if (o.smoke && !argv.includes("--seconds")) o.seconds = 3;
  if (!(o.seconds > 0 && o.seconds <= 600)) throw new Error("--seconds must be in (0, 600]");
  const base = o.smoke ? path.join(REPO, "target", "bench-browser-smoke") : path.join(REPO, "bench", "browser-vs-webrtc");
  o.json ||= `${base}.json`;
  o.txt ||= `${base}.txt`;
  return o;
}

const opts = parseArgs(process.argv.slice(2));
/** How long starting a service, a page load or a first picture may take. */
const START_MS = patient(30_000);
const FIRST_FRAME_MS = patient(20_000);
/** The whole run: starts, two systems × two conditions × two windows, the fallback and Firefox calls, and slack. */
const RUN_MS = patient(300_000) + opts.seconds * 10 * 1000;

// ------------------------------------------------------------------ run state

const children = new Children();
/** @type {import("playwright-core").Browser | null} */
let browser = null;
/** @type {import("puppeteer-core").Browser | null} */
let firefox = null;
/** @type {(() => void)[]} */
const closers = [];
/** @type {string[]} */
const notes = [];

async function cleanup() {
  if (browser) await Promise.race([browser.close().catch(() => {}), sleep(10_000)]);
  browser = null;
  if (firefox) await Promise.race([firefox.close().catch(() => {}), sleep(10_000)]);
  firefox = null;
  for (const close of closers.splice(0).reverse()) {
    try {
      await close();
    } catch {
      // Best effort: the processes are killed below anyway.
    }
  }
  await children.killAll();
}

let stopping = false;
for (const sig of /** @type {const} */ (["SIGINT", "SIGTERM"])) {
  process.on(sig, () => {
    if (stopping) return;
    stopping = true;
    console.error(`bench-browser: ${sig}, stopping`);
    cleanup().finally(() => process.exit(130));
  });
}

// ------------------------------------------------------------------ pages

/**
 * Opens one page in its own browser context with the stamped camera.
 * @param {string} url @param {keyof typeof IDS} name
 * @param {{signal?: (msg: any) => void, quicPort?: number}} [hooks]
 */
async function openPage(url, name, hooks = {}) {
  if (!browser) throw new Error("no browser");
  const context = await browser.newContext({ viewport: { width: 900, height: 800 }, deviceScaleFactor: 1 });
  context.setDefaultTimeout(START_MS);
  await context.addInitScript({ content: `window.__benchId = ${IDS[name]};\n${CAMERA}` });
  if (hooks.signal) {
    const signal = hooks.signal;
    await context.exposeBinding("benchSignal", (_source, msg) => signal(msg));
  }
  const page = await context.newPage();
  // Playwright's evaluate has no timeout of its own; every one of this benchmark gets one.
  const evaluate = page.evaluate.bind(page);
  /** @type {any} */ (page).evaluate = (/** @type {any} */ fn, /** @type {any} */ arg) => withTimeout(evaluate(fn, arg), START_MS, `${name}: a page call`);
  /** @type {string[]} */
  const problems = [];
  page.on("pageerror", (e) => problems.length < 50 && problems.push(`pageerror: ${e.message}`));
  page.on("crash", () => problems.push("the page crashed"));
  page.on("console", (m) => {
    if (process.env.DUET_BENCH_VERBOSE) console.error(`[${name}] ${m.type()}: ${m.text()} @ ${JSON.stringify(m.location())}`);
    if (m.type() === "error" && problems.length < 50) problems.push(`console.error: ${m.text()}`);
  });
  if (hooks.quicPort) {
    const port = hooks.quicPort;
    await page.route("**/config.json", async (route) => {
      const res = await route.fetch();
      await route.fulfill({ response: res, json: { ...(await res.json()), quic_port: port } });
    });
  }
  await page.goto(url);
  return { name, id: IDS[name], page, problems, close: () => context.close() };
}

/** @typedef {Awaited<ReturnType<typeof openPage>>} BenchPage */

/**
 * Opens one page in Firefox (its own browser context, the stamped camera), driven by
 * puppeteer-core: `page` offers the few Playwright calls this benchmark makes, so the
 * measuring code is the same for both browsers.
 * @param {string} url @param {keyof typeof IDS} name
 * @returns {Promise<BenchPage>}
 */
async function openFirefoxPage(url, name) {
  if (!firefox) throw new Error("no Firefox");
  const context = await firefox.createBrowserContext();
  const page = await context.newPage();
  page.setDefaultTimeout(START_MS);
  await page.evaluateOnNewDocument(`window.__benchId = ${IDS[name]}; window.__benchWorkerReader = true;\n${CAMERA}`);
  /** @type {string[]} */
  const problems = [];
  page.on("pageerror", (/** @type {unknown} */ e) => problems.length < 50 && problems.push(`pageerror: ${e instanceof Error ? e.message : e}`));
  page.on("error", (/** @type {unknown} */ e) => problems.push(`the page crashed: ${e instanceof Error ? e.message : e}`));
  page.on("close", () => problems.push("the page closed"));
  page.on("console", (m) => {
    if (process.env.DUET_BENCH_VERBOSE) console.error(`[${name}, Firefox] ${m.type()}: ${m.text()}`);
    if (m.type() === "error" && problems.length < 50) problems.push(`console.error: ${m.text()}`);
  });
  await page.goto(url);
  const like = {
    /** @param {any} fn @param {any} [arg] */
    evaluate: (fn, arg) => withTimeout(page.evaluate(fn, arg), START_MS, `${name} (Firefox): a page call`),
    /** @param {any} fn @param {any} arg @param {{timeout: number, polling: number}} o */
    waitForFunction: (fn, arg, o) => page.waitForFunction(fn, { timeout: o.timeout, polling: o.polling }, arg),
    /** @param {string} selector @param {string} value */
    fill: (selector, value) => page.locator(selector).fill(value),
    /** @param {string} selector */
    check: (selector) => page.locator(selector).click(),
    /** @param {string} selector */
    click: (selector) => page.locator(selector).click(),
  };
  return { name, id: IDS[name], page: /** @type {any} */ (like), problems, close: () => context.close() };
}

/**
 * @template T
 * @param {Promise<T>} promise @param {number} ms @param {string} what
 * @returns {Promise<T>}
 */
function withTimeout(promise, ms, what) {
  /** @type {NodeJS.Timeout | undefined} */
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  return /** @type {Promise<T>} */ (Promise.race([promise, timeout]).finally(() => clearTimeout(timer)));
}

/** @param {BenchPage} p @returns {Promise<number>} the shared page clock, ms */
function pageNow(p) {
  return p.page.evaluate(() => /** @type {any} */ (window).__bench.now());
}

/**
 * What a page's engine says about itself, for a failure message: the phase, and for a Duet
 * page the pairing timeline and the video counters of `window.duet.snapshot()`.
 * @param {BenchPage} p @returns {Promise<string>}
 */
async function engineState(p) {
  return p.page
    .evaluate(async () => {
      const w = /** @type {any} */ (window);
      const s = await w.duet?.snapshot?.();
      return JSON.stringify({
        phase: document.body.dataset.phase,
        status: document.getElementById("status")?.textContent,
        partner: s?.partnerName,
        matchId: s?.matchId,
        engineMatchId: s?.engineMatchId,
        matches: s?.timeline?.matches?.slice(-2),
        send: s?.send?.video,
        receive: s?.receive?.video,
        reassembly: s?.receive?.reassembly,
        otherMatch: s?.receive?.datagramsOtherMatch,
      });
    })
    .catch((/** @type {unknown} */ e) => `unreadable: ${e}`);
}

/**
 * The Duet page's `window.duet.snapshot()`, for the JSON (null when unreadable or too big).
 * @param {BenchPage} p
 */
function duetSnapshot(p) {
  return p.page
    .evaluate(async () => {
      const s = await /** @type {any} */ (window).duet?.snapshot?.();
      const text = s ? JSON.stringify(s) : "";
      return text && text.length < 50_000 ? JSON.parse(text) : null;
    })
    .catch(() => null);
}

/** Waits for a page to be in the queue, or says where it is. @param {BenchPage} p */
async function waiting(p) {
  try {
    await p.page.waitForFunction(() => document.body.dataset.phase === "waiting", null, { timeout: START_MS, polling: 20 });
  } catch (e) {
    const where = await p.page
      .evaluate(() => `phase ${document.body.dataset.phase}, status "${document.getElementById("status")?.textContent}"`)
      .catch((/** @type {unknown} */ e) => `the page did not answer: ${e instanceof Error ? e.message : e}`);
    throw new Error(`${p.name} did not reach the queue (${where}; page problems: ${p.problems.slice(0, 5).join(" | ")})\n${e}`);
  }
}

/**
 * Waits for the first picture from `sender` seen by `receiver` at or after `from`.
 * @param {BenchPage} receiver @param {BenchPage} sender @param {number} from
 * @returns {Promise<number>} ms from `from` to that picture on screen
 */
async function firstFrame(receiver, sender, from) {
  try {
    await receiver.page.waitForFunction(([s, f]) => /** @type {any} */ (window).__bench.firstFrom(s, f) !== null, [sender.id, from], { timeout: FIRST_FRAME_MS, polling: 10 });
  } catch (e) {
    const seen = await receiver.page.evaluate(() => /** @type {any} */ (window).__bench.take(0, Infinity)).catch(() => null);
    const last = seen?.shown?.slice(-3);
    const engines = await Promise.all([receiver, sender].map((p) => engineState(p)));
    throw new Error(
      `${receiver.name} saw no picture from ${sender.name} within ${FIRST_FRAME_MS} ms (last pictures seen: ${JSON.stringify(last)}, reads: ${seen?.reads}, unreadable: ${seen?.broken?.length}, read errors: ${JSON.stringify(seen?.errors?.slice(0, 2))}; page problems: ${receiver.problems.slice(0, 5).join(" | ")})\n` +
        `${receiver.name}: ${engines[0]}\n${sender.name}: ${engines[1]}\n${e}`,
    );
  }
  const ff = await receiver.page.evaluate(([s, f]) => /** @type {any} */ (window).__bench.firstFrom(s, f), [sender.id, from]);
  return Math.round((ff.at - from) * 10) / 10;
}

/**
 * Measures one call for the window: both directions and the CPU used meanwhile.
 * @param {BenchPage} x @param {BenchPage} y
 * @param {Record<string, number[]>} cpuRoots
 */
async function measure(x, y, cpuRoots) {
  const cpu0 = cpuSeconds(cpuRoots);
  const m0 = machineTicks();
  const from = await pageNow(x);
  await sleep(opts.seconds * 1000); // the measuring window itself, not a wait for readiness
  const to = await pageNow(x);
  const cpu1 = cpuSeconds(cpuRoots);
  const m1 = machineTicks();
  const seconds = (to - from) / 1000;
  /** @type {Record<string, number>} */
  const cpu = {};
  for (const k of Object.keys(cpu1)) cpu[k] = Math.round(((cpu1[k] - cpu0[k]) / seconds) * 1000) / 10; // % of one core
  const machineBusy = Math.round(((m1.busy - m0.busy) / Math.max(1, m1.total - m0.total)) * 1000) / 10;
  const take = (/** @type {BenchPage} */ p) => p.page.evaluate(([f, t]) => /** @type {any} */ (window).__bench.take(f, t), [from, to]);
  const [rx, ry] = await Promise.all([take(x), take(y)]);
  for (const r of [rx, ry]) if (r.errors.length) notes.push(`reading the partner picture failed: ${r.errors[0][1]}`);
  return {
    seconds: Math.round(seconds * 10) / 10,
    [`${y.name}→${x.name}`]: direction(rx, ry.drawn, y.id, from, to),
    [`${x.name}→${y.name}`]: direction(ry, rx.drawn, x.id, from, to),
    readsPerSecond: { [x.name]: Math.round(rx.reads / seconds), [y.name]: Math.round(ry.reads / seconds) },
    cpuPercentOfOneCore: cpu,
    machineBusyPercent: machineBusy,
  };
}

// ------------------------------------------------------------------ WebRTC

/** @param {string} pagesUrl @param {number} turnPort @param {Record<string, number[]>} cpuRoots */
async function runWebrtc(pagesUrl, turnPort, cpuRoots) {
  const turn = { urls: [`turn:127.0.0.1:${turnPort}?transport=udp`], username: TURN_USER, credential: TURN_PASSWORD };
  /** @type {Map<BenchPage, BenchPage>} */
  const partner = new Map();
  let dropped = 0;
  /** @type {string[]} */
  const signalErrors = [];
  /** @type {Record<string, BenchPage>} */
  const pages = {};
  /** The signalling server: forwards to the partner, only relay candidates on 127.0.0.1. @param {BenchPage} from @param {any} msg */
  const route = (from, msg) => {
    const to = partner.get(from);
    if (!to) return;
    const line = msg.candidate?.candidate ?? "";
    if (msg.candidate && !(/ typ relay/.test(line) && / 127\.0\.0\.1 /.test(line))) {
      dropped += 1;
      return;
    }
    to.page.evaluate((m) => /** @type {any} */ (window).rtc.onSignal(m), msg).catch((e) => signalErrors.length < 10 && signalErrors.push(String(e)));
  };
  for (const name of /** @type {const} */ (["A", "B", "C"])) {
    /** @type {BenchPage | undefined} */
    let self;
    self = await openPage(`${pagesUrl}webrtc.html`, name, { signal: (msg) => self && route(/** @type {BenchPage} */ (self), msg) });
    pages[name] = self;
  }
  const { A, B, C } = pages;
  try {
    for (const p of [A, B, C]) {
      await p.page.evaluate(() => /** @type {any} */ (window).__bench.watch("#partner"));
      // Every page holds its camera from the start, as a Duet page waiting in the queue does.
      await p.page.evaluate(() => /** @type {any} */ (window).rtc.camera().then(() => true));
    }
    let callId = 0;
    /** A fresh peer connection between x (the offerer) and y; returns when both see each other. @param {BenchPage} x @param {BenchPage} y */
    const call = async (x, y) => {
      callId += 1;
      partner.set(x, y);
      partner.set(y, x);
      const t0 = await pageNow(x);
      await Promise.all([x, y].map((p) => p.page.evaluate(([id, t, offerer]) => /** @type {any} */ (window).rtc.open(id, t, offerer), /** @type {const} */ ([callId, turn, p === x]))));
      await x.page.evaluate(() => /** @type {any} */ (window).rtc.offer());
      const [xy, yx] = await Promise.all([firstFrame(y, x, t0), firstFrame(x, y, t0)]).catch(async (e) => {
        const states = await Promise.all([x, y].map((p) => p.page.evaluate(() => /** @type {any} */ (window).rtc.describe()).catch(() => null)));
        throw new Error(`${e.message}\nWebRTC states: ${JSON.stringify(states)}; candidates dropped by the filter: ${dropped}; signalling errors: ${signalErrors.join(" | ")}`);
      });
      const how = await x.page.evaluate(() => /** @type {any} */ (window).rtc.describe());
      if (!/^relay 127\.0\.0\.1:/.test(how?.localCandidate ?? "") || !/^relay 127\.0\.0\.1:/.test(how?.remoteCandidate ?? "")) {
        throw new Error(`WebRTC call ${x.name}–${y.name} does not cross the TURN relay: ${JSON.stringify(how)}`);
      }
      return { firstFrameMs: { [`${x.name}→${y.name}`]: xy, [`${y.name}→${x.name}`]: yx }, connection: how };
    };
    const first = await call(A, B);
    const firstWindow = await measure(A, B, cpuRoots);
    first.connection = await A.page.evaluate(() => /** @type {any} */ (window).rtc.describe());
    // "Next": A hangs up on B and calls C, who has been waiting with the camera on.
    await Promise.all([A, B].map((p) => p.page.evaluate(() => /** @type {any} */ (window).rtc.close())));
    partner.clear();
    const next = await call(A, C);
    const nextWindow = await measure(A, C, cpuRoots);
    next.connection = await A.page.evaluate(() => /** @type {any} */ (window).rtc.describe());
    if (signalErrors.length) notes.push(`WebRTC signalling errors: ${signalErrors.join(" | ")}`);
    return { first: { ...first, ...firstWindow }, next: { ...next, ...nextWindow }, candidatesDropped: dropped, pageProblems: [A, B, C].flatMap((p) => p.problems.map((x) => `${p.name}: ${x}`)) };
  } finally {
    for (const p of [A, B, C]) await p.close().catch(() => {});
  }
}

// ------------------------------------------------------------------ Duet

/** @param {string} relayUrl @param {number | undefined} quicPort @param {Record<string, number[]>} cpuRoots */
async function runDuet(relayUrl, quicPort, cpuRoots) {
  /** @type {Record<string, BenchPage>} */
  const pages = {};
  for (const name of /** @type {const} */ (["A", "B", "C"])) pages[name] = await openPage(relayUrl, name, { quicPort });
  const { A, B, C } = pages;
  /** Presses a button in the page and returns the page time just before. @param {BenchPage} p @param {string} id */
  const press = (p, id) =>
    p.page.evaluate((bid) => {
      const t = /** @type {any} */ (window).__bench.now();
      /** @type {HTMLButtonElement} */ (document.getElementById(bid)).click();
      return t;
    }, id);
  try {
    for (const p of [A, B, C]) {
      await p.page.fill("#name", p.name);
      await p.page.check("#adult");
      await p.page.evaluate(() => /** @type {any} */ (window).__bench.watch("#partner-video"));
    }
    await press(A, "start");
    await waiting(A);
    const t0 = await press(B, "start");
    const [ab, ba] = await Promise.all([firstFrame(B, A, t0), firstFrame(A, B, t0)]);
    const firstWindow = await measure(A, B, cpuRoots);
    await press(C, "start");
    await waiting(C);
    // C waits as WebRTC's C does: with the camera live (its engine has encoded a picture).
    await C.page.waitForFunction(async () => ((await /** @type {any} */ (window).duet.snapshot()).send.video?.standby?.encoded ?? 0) > 0, null, { timeout: START_MS, polling: 50 });
    const t1 = await press(A, "next");
    const [ac, ca] = await Promise.all([firstFrame(C, A, t1), firstFrame(A, C, t1)]);
    const nextWindow = await measure(A, C, cpuRoots);
    const [snapshot, snapshotC] = await Promise.all([duetSnapshot(A), duetSnapshot(C)]);
    return {
      first: { firstFrameMs: { "A→B": ab, "B→A": ba }, ...firstWindow },
      next: { firstFrameMs: { "A→C": ac, "C→A": ca }, ...nextWindow, steps: nextSteps(t1, snapshot, snapshotC) },
      snapshotA: snapshot,
      snapshotC,
      pageProblems: [A, B, C].flatMap((p) => p.problems.map((x) => `${p.name}: ${x}`)),
    };
  } finally {
    for (const p of [A, B, C]) await p.close().catch(() => {});
  }
}

/**
 * One more Duet call, A–B, measured both ways the way the first Duet call was, for a
 * figure beside it from the same run: A on the WebSocket fallback (`?transport=websocket`,
 * as on a network that blocks UDP), or A in Firefox. C's page is open (its camera drawing,
 * not started) as in the first Duet call, so the machine carries the same three pages.
 * @param {BenchPage} A @param {BenchPage} B @param {BenchPage} C
 * @param {Record<string, number[]>} cpuRoots
 * @param {() => string} [diagnose] more to say on a failure, read before the pages close
 */
async function runPair(A, B, C, cpuRoots, diagnose) {
  try {
    for (const p of [A, B]) {
      await p.page.fill("#name", p.name);
      await p.page.check("#adult");
      await p.page.evaluate(() => /** @type {any} */ (window).__bench.watch("#partner-video"));
    }
    await A.page.click("#start");
    await waiting(A);
    const t0 = await pageNow(B);
    await B.page.click("#start");
    const [ab, ba] = await Promise.all([firstFrame(B, A, t0), firstFrame(A, B, t0)]);
    const measured = await measure(A, B, cpuRoots);
    const [snapshotA, snapshotB] = await Promise.all([duetSnapshot(A), duetSnapshot(B)]);
    /** What the page ran on, from its snapshot. @param {any} snap */
    const how = (snap) => ({ transport: snap?.transport ?? null, capture: snap?.capture ?? null, codec: snap?.send?.codec ?? null });
    return { A: how(snapshotA), B: how(snapshotB), firstFrameMs: { "A→B": ab, "B→A": ba }, ...measured, snapshotA, snapshotB, pageProblems: [A, B, C].flatMap((p) => p.problems.map((x) => `${p.name}: ${x}`)) };
  } catch (e) {
    if (!diagnose) throw e;
    throw new Error(`${e instanceof Error ? e.message : e}\n${diagnose()}`);
  } finally {
    for (const p of [A, B, C]) await p.close().catch(() => {});
  }
}

/** A on the WebSocket fallback, B and C as in the first Duet call. @param {string} relayUrl @param {Record<string, number[]>} cpuRoots */
async function runFallback(relayUrl, cpuRoots) {
  const result = await runPair(await openPage(`${relayUrl}?transport=websocket`, "A"), await openPage(relayUrl, "B"), await openPage(relayUrl, "C"), cpuRoots);
  if (result.A.transport !== "websocket" || result.B.transport !== "webtransport") notes.push(`the fallback call ran on ${result.A.transport} and ${result.B.transport}, not websocket and webtransport`);
  return result;
}

/**
 * A in Firefox, B and C in Chromium, all on WebTransport.
 * @param {string} relayUrl @param {Record<string, number[]>} cpuRoots @param {() => string} diagnose
 */
async function runFirefox(relayUrl, cpuRoots, diagnose) {
  const result = await runPair(await openFirefoxPage(relayUrl, "A"), await openPage(relayUrl, "B"), await openPage(relayUrl, "C"), cpuRoots, diagnose);
  if (result.A.transport !== "webtransport" || result.B.transport !== "webtransport") notes.push(`the Firefox call ran on ${result.A.transport} and ${result.B.transport}, not WebTransport both`);
  return result;
}

/**
 * A runPair call against the first Duet call of the same run.
 * @param {string} title @param {[string, string]} columns @param {[string, string]} dirLabels
 * @param {any} webTransport the clean Duet result @param {any} other runPair's result
 */
function pairReport(title, columns, dirLabels, webTransport, other) {
  /** @type {{label: string, webrtc?: number | null, duet?: number | null, digits?: number}[]} */
  const rows = [];
  for (const [i, dir] of ["A→B", "B→A"].entries()) {
    const a = webTransport.first[dir];
    const b = other[dir];
    rows.push({ label: `${dir} (${dirLabels[i]})` });
    rows.push({ label: `  ${dir} time to first frame, ms`, webrtc: webTransport.first.firstFrameMs[dir], duet: other.firstFrameMs[dir], digits: 0 });
    rows.push({ label: `  ${dir} capture→screen p50, ms`, webrtc: a.p50, duet: b.p50 });
    rows.push({ label: `  ${dir} capture→screen p95, ms`, webrtc: a.p95, duet: b.p95 });
    rows.push({ label: `  ${dir} capture→screen max, ms`, webrtc: a.max, duet: b.max });
    rows.push({ label: `  ${dir} frames shown per second`, webrtc: a.fps, duet: b.fps });
    rows.push({ label: `  ${dir} shown that the sender never drew`, webrtc: a.neverDrawn, duet: b.neverDrawn, digits: 0 });
  }
  for (const page of Object.keys(other.readsPerSecond)) {
    rows.push({ label: `${page}'s animation frames (reads) per second`, webrtc: webTransport.first.readsPerSecond[page], duet: other.readsPerSecond[page], digits: 0 });
  }
  for (const [key, what] of Object.entries({ browser: "Chromium", firefox: "Firefox", relay: "relay" })) {
    const x = webTransport.first.cpuPercentOfOneCore[key];
    const y = other.cpuPercentOfOneCore[key];
    if (x || y) rows.push({ label: `${what} CPU, % of one core`, webrtc: x ?? null, duet: y ?? null });
  }
  rows.push({ label: "whole machine busy, %", webrtc: webTransport.first.machineBusyPercent, duet: other.machineBusyPercent });
  const sent = (/** @type {any} */ p) => `${p.transport}, ${p.codec ?? "?"}, camera via ${p.capture?.video ?? "?"}, microphone via ${p.capture?.audio ?? "?"}`;
  return `${table(title, rows, columns)}\nA: ${sent(other.A)}; B: ${sent(other.B)}`;
}

/**
 * What each step after A's Next cost, in ms from the click, from both pages' timelines
 * (`window.duet.snapshot().timeline`, on the page clock the click was read from).
 * @param {number} click @param {any} a A's snapshot @param {any} c C's snapshot
 */
function nextSteps(click, a, c) {
  const pairing = (/** @type {any} */ s) => s?.timeline?.matches?.find((/** @type {any} */ m) => m.partner === (s === a ? "C" : "A"));
  const ma = pairing(a);
  const mc = pairing(c);
  const at = (/** @type {number | null | undefined} */ t) => (typeof t === "number" ? Math.round((t - click) * 10) / 10 : null);
  if (!ma || !mc) return null;
  return {
    "Matched reaches A": at(ma.matchedAt),
    "Matched reaches C": at(mc.matchedAt),
    "A's first keyframe sent": at(ma.firstKeyframeSentAt),
    "C's first keyframe sent": at(mc.firstKeyframeSentAt),
    "A's keyframe whole at C": at(mc.firstKeyframeAt),
    "C's keyframe whole at A": at(ma.firstKeyframeAt),
    "A's picture decoded at C": at(mc.firstDecodedAt),
    "C's picture decoded at A": at(ma.firstDecodedAt),
    "A's picture handed to C's screen": at(mc.firstFrameAt),
    "C's picture handed to A's screen": at(ma.firstFrameAt),
  };
}

// ------------------------------------------------------------------ report

/** @param {string} title @param {any} w WebRTC result @param {any} d Duet result @param {boolean} impaired */
function report(title, w, d, impaired) {
  /** @type {{label: string, webrtc?: number | null, duet?: number | null, digits?: number}[]} */
  const rows = [];
  const calls = [
    ["first call (A–B, C waiting)", "first", ["A→B", "B→A"]],
    ["after Next (A–C, B waiting)", "next", ["A→C", "C→A"]],
  ];
  for (const [label, key, dirs] of /** @type {[string, "first" | "next", string[]][]} */ (calls)) {
    rows.push({ label: `${label}` });
    for (const dir of dirs) {
      const a = w[key][dir];
      const b = d[key][dir];
      rows.push({ label: `  ${dir} frames shown in the window`, webrtc: a.frames, duet: b.frames, digits: 0 });
      rows.push({ label: `  ${dir} time to first frame, ms`, webrtc: w[key].firstFrameMs[dir], duet: d[key].firstFrameMs[dir], digits: 0 });
      rows.push({ label: `  ${dir} capture→screen p50, ms`, webrtc: a.p50, duet: b.p50 });
      rows.push({ label: `  ${dir} capture→screen p95, ms`, webrtc: a.p95, duet: b.p95 });
      rows.push({ label: `  ${dir} capture→screen max, ms`, webrtc: a.max, duet: b.max });
      rows.push({ label: `  ${dir} frames shown per second`, webrtc: a.fps, duet: b.fps });
      rows.push({ label: `  ${dir} shown that the sender never drew`, webrtc: a.neverDrawn, duet: b.neverDrawn, digits: 0 });
      if (impaired) rows.push({ label: `  ${dir} freezes > 200 ms`, webrtc: a.freezes, duet: b.freezes, digits: 0 });
      if (impaired) rows.push({ label: `  ${dir} time frozen, ms`, webrtc: a.frozenMs, duet: b.frozenMs, digits: 0 });
    }
    for (const page of Object.keys(w[key].readsPerSecond)) {
      rows.push({ label: `  ${page}'s animation frames (reads) per second`, webrtc: w[key].readsPerSecond[page], duet: d[key].readsPerSecond[page], digits: 0 });
    }
    rows.push({ label: "  browser CPU, % of one core", webrtc: w[key].cpuPercentOfOneCore.browser, duet: d[key].cpuPercentOfOneCore.browser });
    rows.push({ label: "  server CPU (coturn | relay), % of one core", webrtc: w[key].cpuPercentOfOneCore.coturn, duet: d[key].cpuPercentOfOneCore.relay });
    if (impaired) rows.push({ label: "  shaper CPU, % of one core", webrtc: w[key].cpuPercentOfOneCore.shaper, duet: d[key].cpuPercentOfOneCore.shaper });
    rows.push({ label: "  whole machine busy, %", webrtc: w[key].machineBusyPercent, duet: d[key].machineBusyPercent });
  }
  const steps = d.next.steps;
  if (steps) {
    rows.push({ label: "after Next, ms from A's click (Duet's own timeline)" });
    for (const [label, ms] of Object.entries(steps)) rows.push({ label: `  ${label}`, duet: ms });
  }
  rows.push({ label: "lip sync at the end (Duet's engines: sound's capture→playout − picture's capture→screen)" });
  for (const [dir, s] of /** @type {[string, any][]} */ ([["C→A", d.snapshotA], ["A→C", d.snapshotC]])) {
    const av = s?.receive?.avSync;
    rows.push({ label: `  ${dir} sound after picture, ms (sound ${av?.audioMs ?? "?"}, picture ${av?.videoMs ?? "?"})`, duet: av?.offsetMs ?? null });
  }
  rows.push({ label: "end-to-end encryption at the end (Duet's engines: WebCrypto AES-256-GCM in the media worker, video and sound)" });
  for (const [page, s] of /** @type {[string, any][]} */ ([["A", d.snapshotA], ["C", d.snapshotC]])) {
    const e = s?.e2ee;
    rows.push({ label: `  ${page} seals a frame, µs (mean of ${e?.sealed ?? "?"})`, duet: e?.sealUs ?? null });
    rows.push({ label: `  ${page} opens a frame, µs (mean of ${e?.opened ?? "?"})`, duet: e?.openUs ?? null });
    rows.push({ label: `  ${page}: frames and lines that did not open`, duet: e ? e.unopened.audio + e.unopened.video + e.unopened.chat : null, digits: 0 });
  }
  const rtc = w.next.connection;
  const sent = d.snapshotA?.send;
  const duetSent = sent ? `${sent.codec ?? "?"} ${sent.video?.width ?? "?"}×${sent.video?.height ?? "?"}, limited by ${sent.video?.limitation ?? "?"}` : "not reported by window.duet.snapshot()";
  return `${table(title, rows)}\nA's sender at the end: WebRTC ${rtc?.codec ?? "?"} ${rtc?.frameWidth ?? "?"}×${rtc?.frameHeight ?? "?"}, limited by ${rtc?.qualityLimitationReason ?? "?"}; Duet ${duetSent}`;
}

// ------------------------------------------------------------------ main

async function main() {
  const started = new Date();
  const loadAtStart = os.loadavg();
  const coturn = await startCoturn(children, START_MS);
  const pageServer = await startPageServer();
  closers.push(pageServer.close);
  const relay = await startRelay();
  closers.push(() => relay.stop());
  const launched = await launchChromium(START_MS);
  browser = launched.browser;
  closers.push(launched.cleanup);
  const bpid = browserPid();
  const relayPid = childPid(relayBinary());
  const roots = (/** @type {number | undefined} */ shaperPid = undefined) => ({
    browser: [bpid],
    coturn: [coturn.proc.pid ?? 0],
    relay: relayPid ? [relayPid] : [],
    ...(shaperPid ? { shaper: [shaperPid] } : {}),
  });
  if (!relayPid) notes.push("relay CPU not measured: its process was not found");

  /** @type {any} */
  const results = { started: started.toISOString(), seconds: opts.seconds, smoke: opts.smoke, relayBin: process.env.DUET_RELAY_BIN, profile: opts.impaired ? opts.profile : null, conditions: {} };
  const text = [];
  const conditions = /** @type {[string, string | null][]} */ ([["clean", null]]);
  if (opts.impaired) conditions.push(["impaired", opts.profile]);
  for (const [name, profile] of conditions) {
    console.error(`bench-browser: ${name}: WebRTC`);
    let shaper = profile ? await startShaper(children, `127.0.0.1:${coturn.port}`, profile, START_MS) : null;
    const webrtc = await runWebrtc(pageServer.url, shaper?.port ?? coturn.port, roots(shaper?.proc.pid));
    shaper?.proc.kill("SIGTERM");
    console.error(`bench-browser: ${name}: Duet`);
    shaper = profile ? await startShaper(children, relay.quic, profile, START_MS) : null;
    const duet = await runDuet(relay.url, shaper?.port, roots(shaper?.proc.pid));
    shaper?.proc.kill("SIGTERM");
    results.conditions[name] = { webrtc, duet };
    const title = profile ? `Through duet-impair --profile ${profile} (in front of coturn | the relay), ${opts.seconds} s per call` : `Loopback, no shaper, ${opts.seconds} s per call`;
    const t = report(title, webrtc, duet, !!profile);
    console.log(`\n${t}\n`);
    text.push(t);
    if (!profile) {
      console.error("bench-browser: clean: Duet with one page on the WebSocket fallback");
      const fallback = await runFallback(relay.url, roots());
      results.fallback = fallback;
      const f = pairReport(`The WebSocket fallback: A on WebSocket (?transport=websocket), B on WebTransport, loopback, ${opts.seconds} s, against the first Duet call above (both on WebTransport; C's page open and not started in both)`, ["both WT", "A on WS"], ["A sends over the WebSocket", "A receives over the WebSocket"], duet, fallback);
      console.log(`\n${f}\n`);
      text.push(f);
      if (opts.firefox) {
        console.error("bench-browser: clean: Duet with page A in Firefox");
        const launchedFirefox = await launchFirefox({ "privacy.reduceTimerPrecision": false });
        firefox = launchedFirefox;
        const ffPid = launchedFirefox.process()?.pid;
        // Firefox's own messages, kept for a failure message (its last lines say what it did).
        /** @type {string[]} */
        const ffLog = [];
        launchedFirefox.process()?.stderr?.on("data", (/** @type {Buffer} */ d) => {
          for (const line of d.toString().split("\n")) if (line.trim()) ffLog.push(line.slice(0, 300));
          ffLog.splice(0, Math.max(0, ffLog.length - 40));
        });
        const diagnose = () => `Firefox's processes:\n  ${(ffPid ? processStates(ffPid) : ["(no pid)"]).join("\n  ")}\nFirefox's last messages:\n  ${ffLog.slice(-20).join("\n  ") || "(none)"}`;
        /** @type {any} */
        let withFirefox;
        try {
          withFirefox = await runFirefox(relay.url, { ...roots(), ...(ffPid ? { firefox: [ffPid] } : {}) }, diagnose);
        } catch (e) {
          const why = e instanceof Error ? e.message : String(e);
          // A smoke run checks that the benchmark works: a Firefox page that stops answering
          // is reported in full (the call is checked by tests/browser/firefox.test.js), and the
          // rest of the run goes on. A measuring run stops, as it would with no figures.
          if (!opts.smoke) throw new Error(why);
          console.error(`bench-browser: the Firefox call was NOT MEASURED: ${why}`);
          notes.push(`the Firefox call was not measured: ${why.split("\n")[0]}`);
          results.firefox = { failed: why };
        }
        await Promise.race([launchedFirefox.close().catch(() => {}), sleep(10_000)]);
        firefox = null;
        if (withFirefox) results.firefox = withFirefox;
        const ff = withFirefox && pairReport(`Firefox: A in Firefox ESR, B in Chromium, both on WebTransport, loopback, ${opts.seconds} s, against the first Duet call above (all Chromium; C's page open in Chromium)`, ["Chromium", "A Firefox"], ["Firefox sends", "Firefox receives"], duet, withFirefox);
        if (ff) {
          console.log(`\n${ff}\n`);
          text.push(ff);
        }
      }
    }
  }
  const goals = targets(results.conditions.clean, results.conditions.impaired);
  results.targets = goals;
  const goalText = targetTable(goals);
  console.log(`${goalText}\n`);
  text.push(goalText);
  const problems = [...Object.values(results.conditions).flatMap((c) => [...c.webrtc.pageProblems, ...c.duet.pageProblems]), ...(results.fallback?.pageProblems ?? []), ...(results.firefox?.pageProblems ?? [])];
  // The same message from several pages (or many times) is one note, with who said it.
  const byText = new Map();
  for (const line of problems) {
    const [who, ...rest] = line.split(": ");
    const what = rest.join(": ");
    byText.set(what, [...new Set([...(byText.get(what) ?? []), who])]);
  }
  for (const [what, who] of [...byText].slice(0, 10)) notes.push(`page problem (${who.join(", ")}): ${what}`);
  results.notes = notes;
  const load = (/** @type {number[]} */ l) => l.map((x) => x.toFixed(1)).join(" ");
  results.loadAverage = { atStart: loadAtStart, atEnd: os.loadavg() };
  const header = `Duet vs WebRTC in one headless Chromium (scripts/bench-browser${process.argv.slice(2).length ? ` ${process.argv.slice(2).join(" ")}` : ""}), ${started.toISOString()}
relay ${process.env.DUET_RELAY_BIN}; ${os.cpus().length} cores; load average ${load(loadAtStart)} at the start, ${load(os.loadavg())} at the end
`;
  mkdirSync(path.dirname(opts.json), { recursive: true });
  mkdirSync(path.dirname(opts.txt), { recursive: true });
  writeFileSync(opts.json, `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(opts.txt, `${header}\n${text.join("\n\n")}\n${notes.length ? `\nnotes:\n${notes.map((n) => `- ${n}`).join("\n")}\n` : ""}`);
  for (const n of notes) console.log(`note: ${n}`);
  console.log(`figures written to ${opts.txt} and ${opts.json}`);
}

const watchdog = setTimeout(() => {
  console.error(`bench-browser: the run took longer than ${RUN_MS} ms; stopping`);
  cleanup().finally(() => process.exit(1));
}, RUN_MS);

main()
  .then(async () => {
    clearTimeout(watchdog);
    await cleanup();
  })
  .catch(async (e) => {
    clearTimeout(watchdog);
    if (stopping) return; // a signal closed the browser under the run: not a failure to report
    console.error(`bench-browser: FAILED: ${e instanceof Error ? e.stack : e}`);
    await cleanup();
    process.exitCode = 1;
  });
