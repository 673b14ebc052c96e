// @ts-check
/**
 * @file Helpers for Duet's browser end-to-end tests: start the real relay binary on
 * ephemeral ports, launch Debian's headless Chromium with a fake camera and microphone
 * through playwright-core (and Firefox ESR through puppeteer-core), drive a page as a
 * person would (by accessible names), and wait for things with a timeout — never a fixed
 * sleep.
 *
 * Environment:
 *   DUET_RELAY_BIN      relay binary (default: target/release/duet-relay, else target/debug/duet-relay)
 *   DUET_CHROMIUM       browser binary (default: /usr/bin/chromium)
 *   DUET_FIREFOX        Firefox binary (default: /usr/bin/firefox-esr)
 *   DUET_TEST_PATIENCE  multiplies every timeout (slow machines, CI under load); default 1
 *   DUET_BROWSER_EMBEDDED=1  test the page embedded in the relay binary instead of web-client/app on disk
 */

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const OUTPUT_DIR = path.join(REPO, "test-output");
export const SCREENSHOT_DIR = path.join(OUTPUT_DIR, "screenshots");
const FIGURES_FILE = path.join(OUTPUT_DIR, "browser-figures.json");

// playwright-core lives in web-client/node_modules (the only npm package in the repo).
const require = createRequire(path.join(REPO, "web-client", "package.json"));
/** @type {typeof import("playwright-core")} */
const playwright = require("playwright-core");
/** @type {import("puppeteer-core").PuppeteerNode} */
const puppeteer = require("puppeteer-core");

export const PATIENCE = Number(process.env.DUET_TEST_PATIENCE ?? "1") || 1;

/** @param {number} ms */
export function patient(ms) {
  return Math.round(ms * PATIENCE);
}

/** Chromium flags for every test browser; `--use-fake-ui-for-media-stream` is added unless a test wants media refused. */
export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--headless=new",
  "--use-fake-device-for-media-stream",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--autoplay-policy=no-user-gesture-required",
  // Several pages share two cores here: keep background tabs running at full speed.
  "--disable-background-timer-throttling",
  "--disable-renderer-backgrounding",
  "--disable-backgrounding-occluded-windows",
];

export function relayBinary() {
  return builtBinary("duet-relay", "DUET_RELAY_BIN");
}

/**
 * A workspace binary: the one `envVar` names, else the newer of its release and debug
 * builds (an old release binary must not shadow today's debug one).
 * @param {string} name e.g. "duet-client"
 * @param {string} envVar e.g. "DUET_CLIENT_BIN"
 */
export function builtBinary(name, envVar) {
  const named = process.env[envVar];
  if (named) return named;
  const built = ["release", "debug"]
    .map((profile) => path.join(REPO, "target", profile, name))
    .filter((p) => existsSync(p))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  if (!built.length) throw new Error(`No ${name} binary: run \`cargo build -p ${name}\` (or set ${envVar}).`);
  return built[0];
}

/**
 * @typedef {object} Relay
 * @property {string} url the page's address, e.g. http://127.0.0.1:41234/
 * @property {string} quic host:port of the WebTransport endpoint
 * @property {string} certSha256
 * @property {() => string} log everything the relay printed so far
 * @property {() => Promise<any>} status GET /status
 * @property {(signal?: NodeJS.Signals) => Promise<void>} stop
 */

/**
 * Starts the real relay on ephemeral ports and waits for its "listening" line.
 * @param {string[]} [extraArgs]
 * @returns {Promise<Relay>}
 */
export async function startRelay(extraArgs = []) {
  const bin = relayBinary();
  const args = ["--quic-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"];
  if (process.env.DUET_BROWSER_EMBEDDED !== "1") args.push("--web-root", path.join(REPO, "web-client", "app"));
  args.push(...extraArgs);
  const proc = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "duet_relay=info,warn" } });
  let out = "";
  /** @type {Promise<number | null>} */
  const exited = new Promise((resolve) => proc.once("exit", (code) => resolve(code)));
  const listening = new Promise((resolve, reject) => {
    const onData = (/** @type {Buffer} */ d) => {
      out += d.toString();
      // Keep the log bounded: a long test must not grow memory with relay chatter.
      if (out.length > 200_000) out = out.slice(-100_000);
      const m = /listening http=(\S+) quic=(\S+) cert_sha256=(\S+)/.exec(out);
      if (m) resolve({ http: m[1], quic: m[2], cert: m[3] });
    };
    proc.stdout.on("data", onData);
    proc.stderr.on("data", onData);
    exited.then((code) => reject(new Error(`relay exited (${code}) before listening:\n${out}`)));
    setTimeout(() => reject(new Error(`relay did not print its listening line within ${patient(15_000)} ms:\n${out}`)), patient(15_000));
  });
  /** @type {any} */
  let where;
  try {
    where = await listening;
  } catch (e) {
    proc.kill("SIGKILL");
    throw e;
  }
  const url = where.http.endsWith("/") ? where.http : `${where.http}/`;
  return {
    url,
    quic: where.quic,
    certSha256: where.cert,
    log: () => out,
    status: async () => (await fetch(new URL("/status", url), { signal: AbortSignal.timeout(patient(5000)) })).json(),
    stop: async (signal = "SIGTERM") => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill(signal);
      const timer = setTimeout(() => proc.kill("SIGKILL"), patient(5000));
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * @param {{fakeUi?: boolean}} [options] fakeUi false: no auto-accept of camera and
 *   microphone, so headless Chromium refuses them (NotAllowedError) as a person's "Block" would
 * @returns {Promise<import("playwright-core").Browser>}
 */
export async function launchBrowser(options = {}) {
  const args = [...CHROMIUM_ARGS];
  if (options.fakeUi !== false) args.push("--use-fake-ui-for-media-stream");
  return playwright.chromium.launch({
    executablePath: process.env.DUET_CHROMIUM ?? "/usr/bin/chromium",
    args,
    timeout: patient(30_000),
  });
}

/** A PulseAudio daemon with its null sink, unless one answers already. */
function ensureSoundServer() {
  if (spawnSync("pactl", ["info"], { stdio: "ignore" }).status === 0) return;
  // A server of our own in a fresh runtime directory: the default one may hold the pid file
  // of a server that is gone (killed with the benchmark's PID namespace, say), and then
  // `pulseaudio --start` takes another process with that pid for it and starts nothing.
  // Firefox and pactl, started from here, inherit where it is.
  const dir = mkdtempSync(path.join(tmpdir(), "duet-pulse-"));
  process.env.PULSE_RUNTIME_PATH = dir;
  const started = spawnSync("pulseaudio", ["--start", "--exit-idle-time=-1", `--log-target=file:${path.join(dir, "log")}`], { encoding: "utf8" });
  const deadline = Date.now() + patient(10_000);
  while (spawnSync("pactl", ["info"], { stdio: "ignore" }).status !== 0) {
    if (Date.now() > deadline) {
      const log = existsSync(path.join(dir, "log")) ? readFileSync(path.join(dir, "log"), "utf8") : started.stderr;
      throw new Error(`PulseAudio did not start (exit ${started.status}): ${(log ?? "").trim().slice(-600)}`);
    }
    spawnSync("sleep", ["0.1"]);
  }
}

/**
 * Debian's headless Firefox ESR (`DUET_FIREFOX`), driven by puppeteer-core over WebDriver
 * BiDi, with a fake camera and microphone allowed without a prompt and nothing else talking
 * to the network. Firefox needs a sound server to run an `AudioContext` (without one,
 * starting audio closes the browser), so PulseAudio is started first, with its null sink,
 * as a desktop has a real one.
 * @param {Record<string, unknown>} [prefs] more preferences
 * @returns {Promise<import("puppeteer-core").Browser>}
 */
export async function launchFirefox(prefs = {}) {
  ensureSoundServer();
  return puppeteer.launch({
    browser: "firefox",
    executablePath: process.env.DUET_FIREFOX ?? "/usr/bin/firefox-esr",
    headless: true,
    protocolTimeout: patient(60_000),
    extraPrefsFirefox: {
      "media.navigator.streams.fake": true,
      "media.navigator.permission.disabled": true,
      "media.autoplay.default": 0,
      "app.update.enabled": false,
      "browser.safebrowsing.malware.enabled": false,
      "browser.safebrowsing.phishing.enabled": false,
      "network.captive-portal-service.enabled": false,
      "network.connectivity-service.enabled": false,
      "datareporting.policy.dataSubmissionEnabled": false,
      "toolkit.telemetry.enabled": false,
      ...prefs,
    },
  });
}

/**
 * A browser whose every process runs in a CPU cgroup of its own, so a test can give it less
 * CPU than a core, as a weak phone or a busy laptop would: the whole browser slows (the
 * page, its worker, the encoder's threads), which DevTools' CPU throttling cannot do (it
 * slows a page's main thread only, and refuses workers). Uses cgroup v2's `cpu.max` where
 * the cpu controller is there, else v1's `cpu.cfs_quota_us`; needs root, as the tests run.
 * @returns {Promise<{browser: import("playwright-core").Browser, limit: (cores: number | null) => void, close: () => Promise<void>} | {unavailable: string}>}
 */
export async function launchCpuLimitedBrowser() {
  const v2 = "/sys/fs/cgroup";
  const v1 = "/sys/fs/cgroup/cpu";
  const name = `duet-test-${process.pid}-${Date.now()}`;
  /** @type {{dir: string, write: (cores: number | null) => void} | null} */
  let group = null;
  try {
    if (existsSync(path.join(v2, "cgroup.subtree_control")) && readFileSync(path.join(v2, "cgroup.subtree_control"), "utf8").split(/\s+/).includes("cpu")) {
      const dir = path.join(v2, name);
      mkdirSync(dir);
      group = { dir, write: (cores) => writeFileSync(path.join(dir, "cpu.max"), cores === null ? "max 100000" : `${Math.round(cores * 100000)} 100000`) };
    } else if (existsSync(path.join(v1, "cpu.cfs_quota_us"))) {
      const dir = path.join(v1, name);
      mkdirSync(dir);
      group = { dir, write: (cores) => writeFileSync(path.join(dir, "cpu.cfs_quota_us"), cores === null ? "-1" : String(Math.round(cores * 100000))) };
    }
  } catch (e) {
    return { unavailable: `cannot make a CPU cgroup: ${e instanceof Error ? e.message : e}` };
  }
  if (!group) return { unavailable: "no cgroup cpu controller (neither v2 cpu.max nor v1 cpu.cfs_quota_us)" };
  // The browser joins the group before it starts, so every process it forks is in it too.
  mkdirSync(OUTPUT_DIR, { recursive: true });
  const wrapper = path.join(OUTPUT_DIR, `chromium-in-cgroup-${process.pid}.sh`);
  writeFileSync(wrapper, `#!/bin/sh\necho $$ > '${group.dir}/cgroup.procs'\nexec '${process.env.DUET_CHROMIUM ?? "/usr/bin/chromium"}' "$@"\n`, { mode: 0o755 });
  const browser = await playwright.chromium.launch({
    executablePath: wrapper,
    args: [...CHROMIUM_ARGS, "--use-fake-ui-for-media-stream"],
    timeout: patient(30_000),
  });
  const dir = group.dir;
  return {
    browser,
    limit: group.write,
    close: async () => {
      await browser.close().catch(() => {});
      unlinkSync(wrapper);
      // A cgroup can be removed once its last process has exited.
      const deadline = Date.now() + patient(10_000);
      for (;;) {
        try {
          rmdirSync(dir);
          break;
        } catch (e) {
          if (Date.now() > deadline) throw e;
          await new Promise((resolve) => setTimeout(resolve, 100)); // polling an exit, not a wait for readiness
        }
      }
    },
  };
}

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

/**
 * One person with their own browser profile (context), on the app's page.
 */
export class Person {
  /**
   * @param {import("playwright-core").Page} page
   * @param {string} name
   */
  constructor(page, name) {
    this.page = page;
    this.name = name;
    /** @type {string[]} */
    this.problems = [];
    page.on("pageerror", (/** @type {Error} */ e) => this.problems.push(`pageerror: ${e.message}`));
    page.on("console", (/** @type {import("playwright-core").ConsoleMessage} */ m) => {
      if (m.type() === "error") this.problems.push(`console.error: ${m.text()}`);
      if (process.env.DUET_TEST_VERBOSE) console.log(`[${name}] ${m.type()}: ${m.text()}`);
    });
  }

  /**
   * @param {import("playwright-core").Browser} browser
   * @param {string} url
   * @param {string} name
   * @param {{viewport?: {width: number, height: number}, isMobile?: boolean, beforeLoad?: (page: import("playwright-core").Page) => Promise<unknown>}} [options]
   *   beforeLoad: runs on the page before it loads the app (init scripts, routes, emulation)
   */
  static async open(browser, url, name, options = {}) {
    const context = await browser.newContext({
      viewport: options.viewport ?? DESKTOP,
      isMobile: options.isMobile ?? false,
      hasTouch: options.isMobile ?? false,
      deviceScaleFactor: 1,
    });
    context.setDefaultTimeout(patient(15_000));
    const page = await context.newPage();
    await options.beforeLoad?.(page);
    await page.goto(url);
    return new Person(page, name);
  }

  /**
   * Opens a person's page and adds them to `people` (whom `withRelay` closes after the test).
   * @param {import("playwright-core").Browser} browser
   * @param {Person[]} people
   * @param {string} url
   * @param {string} name
   * @param {{viewport?: {width: number, height: number}, isMobile?: boolean, beforeLoad?: (page: import("playwright-core").Page) => Promise<unknown>}} [options]
   */
  static async join(browser, people, url, name, options = {}) {
    const p = await Person.open(browser, url, name, options);
    people.push(p);
    return p;
  }

  /**
   * Points this page's WebTransport at `port` on the relay's host (a proxy or shaper in
   * front of the relay's QUIC port) by rewriting the config the app fetches. Call before
   * Start.
   * @param {number} port
   */
  async quicVia(port) {
    await this.page.route("**/config.json", async (route) => {
      const res = await route.fetch();
      await route.fulfill({ response: res, json: { ...(await res.json()), quic_port: port } });
    });
  }

  /**
   * Types the name (and interests), confirms the age and rules, and presses Start (or Text only).
   * @param {string} [interests]
   * @param {"Start" | "Text only"} [how]
   */
  async start(interests = "", how = "Start") {
    await this.page.getByLabel("Display name").fill(this.name);
    if (interests) await this.page.getByLabel(/Interests/).fill(interests);
    await this.page.getByLabel("I am 18 or older and agree to the rules").check();
    await this.button(how).click();
  }

  /** @param {string} name an accessible name */
  button(name) {
    return this.page.getByRole("button", { name, exact: true });
  }

  /** @returns {Promise<any>} window.duet.snapshot() */
  snapshot() {
    return this.page.evaluate(() => /** @type {any} */ (window).duet.snapshot());
  }

  /**
   * Waits until `predicate(snapshot)` holds, polling the page.
   * @param {(s: any) => boolean} predicate
   * @param {string} what for the error message
   * @param {number} [timeoutMs]
   */
  async until(predicate, what, timeoutMs = 20_000) {
    const deadline = Date.now() + patient(timeoutMs);
    let last;
    while (Date.now() < deadline) {
      last = await this.snapshot();
      if (predicate(last)) return last;
      await this.page.waitForTimeout(50); // a poll interval, not a wait for readiness
    }
    throw new Error(`${this.name}: timed out after ${patient(timeoutMs)} ms waiting for ${what}. Last snapshot: ${JSON.stringify(last)?.slice(0, 3000)}\nPage problems: ${this.problems.join("\n")}`);
  }

  /** The live status line's text. */
  async statusText() {
    return (await this.page.getByRole("status").filter({ hasText: /./ }).first().textContent()) ?? "";
  }

  /**
   * Waits until the visible status line matches.
   * @param {RegExp} re
   * @param {number} [timeoutMs]
   */
  async waitStatus(re, timeoutMs = 20_000) {
    await this.page.waitForFunction(
      (/** @type {string[]} */ [source, flags]) => new RegExp(source, flags).test(document.getElementById("status")?.textContent ?? ""),
      [re.source, re.flags],
      { timeout: patient(timeoutMs), polling: 50 },
    );
  }

  /**
   * A coarse signature of the partner's picture: mean brightness and a 16×12 grid of
   * luminance samples, read from the element labelled "Partner video" (a `<video>` fed by
   * the media worker's track, or a canvas it draws into).
   * @returns {Promise<{mean: number, grid: number[], width: number, height: number}>}
   */
  async canvasSignature() {
    const shown = this.page.getByLabel("Partner video", { exact: true });
    return shown.evaluate((/** @type {Element} */ el) => {
      // The worker draws, so the element has no context of its own here: read what it
      // shows by drawing it, as the comparison benchmark does.
      const video = el instanceof HTMLVideoElement ? el : null;
      const canvas = /** @type {HTMLCanvasElement} */ (el);
      const c = document.createElement("canvas");
      c.width = video ? video.videoWidth || 2 : canvas.width;
      c.height = video ? video.videoHeight || 2 : canvas.height;
      const ctx = /** @type {CanvasRenderingContext2D} */ (c.getContext("2d"));
      ctx.drawImage(/** @type {CanvasImageSource} */ (el), 0, 0);
      const { data } = ctx.getImageData(0, 0, c.width, c.height);
      const grid = [];
      let sum = 0;
      for (let gy = 0; gy < 12; gy++) {
        for (let gx = 0; gx < 16; gx++) {
          const x = Math.floor(((gx + 0.5) * c.width) / 16);
          const y = Math.floor(((gy + 0.5) * c.height) / 12);
          const i = (y * c.width + x) * 4;
          const lum = Math.round(0.2126 * data[i] + 0.7152 * data[i + 1] + 0.0722 * data[i + 2]);
          grid.push(lum);
          sum += lum;
        }
      }
      return { mean: sum / grid.length, grid, width: c.width, height: c.height };
    });
  }

  /**
   * Median luminance of the person's own camera preview, the same way as canvasSignature
   * samples the partner canvas: both pages' fake cameras draw the same picture, so the
   * two must agree (a colour-space mix-up shows as a much darker partner picture).
   */
  async previewMedianLuma() {
    return this.page.locator("#self-view").evaluate((/** @type {Element} */ el) => {
      const v = /** @type {HTMLVideoElement} */ (el);
      const c = document.createElement("canvas");
      c.width = v.videoWidth;
      c.height = v.videoHeight;
      const ctx = /** @type {CanvasRenderingContext2D} */ (c.getContext("2d"));
      ctx.drawImage(v, 0, 0);
      const { data } = ctx.getImageData(0, 0, c.width, c.height);
      const lums = [];
      for (let gy = 0; gy < 12; gy++) {
        for (let gx = 0; gx < 16; gx++) {
          const i = (Math.floor(((gy + 0.5) * c.height) / 12) * c.width + Math.floor(((gx + 0.5) * c.width) / 16)) * 4;
          lums.push(0.2126 * data[i] + 0.7152 * data[i + 1] + 0.0722 * data[i + 2]);
        }
      }
      lums.sort((a, b) => a - b);
      return lums[lums.length >> 1];
    });
  }

  async close() {
    await this.page.context().close();
  }
}

/**
 * Runs `body` with a fresh relay (started with `relayArgs`) and the people it opens, and
 * closes them all after, whatever happens. A page error in any of them fails the test; a
 * failure carries the tail of the relay's log. `afterStop` sees the relay once it has
 * stopped (its whole log, shutdown included).
 * @param {(relay: Relay, people: Person[]) => Promise<void>} body
 * @param {string[]} [relayArgs]
 * @param {(relay: Relay) => void} [afterStop]
 */
export async function withRelay(body, relayArgs = [], afterStop = () => {}) {
  const relay = await startRelay(relayArgs);
  /** @type {Person[]} */
  const people = [];
  try {
    await body(relay, people);
    for (const p of people) assert.deepEqual(p.problems.filter((x) => x.startsWith("pageerror")), [], `${p.name} had page errors`);
  } catch (e) {
    const tail = relay.log().split("\n").slice(-40).join("\n");
    throw new Error(`${e instanceof Error ? e.stack : e}\n--- relay log (tail) ---\n${tail}`);
  } finally {
    for (const p of people) await p.close().catch(() => {});
    await relay.stop();
    afterStop(relay);
  }
}

/**
 * Waits until the partner canvas shows a picture that changes: the pixels, not just the
 * element or a counter. Returns how many grid cells changed between two samples.
 * @param {Person} p
 */
export async function expectMovingPicture(p) {
  const before = await p.snapshot();
  const first = await p.canvasSignature();
  const framesAtFirst = before.receive.video.framesDecoded;
  // At least a dozen more frames (over half a second of the fake camera) before comparing.
  await p.until((s) => s.receive.video.framesDecoded >= framesAtFirst + 12, "a dozen more decoded frames");
  const deadline = Date.now() + patient(10_000);
  for (;;) {
    const second = await p.canvasSignature();
    const changed = first.grid.filter((v, i) => Math.abs(v - second.grid[i]) > 8).length;
    if (first.mean > 5 && second.mean > 5 && changed > 0) return { changed, mean: second.mean, width: second.width, height: second.height };
    if (Date.now() > deadline) {
      throw new Error(`${p.name}: partner canvas does not show a moving picture (mean ${first.mean.toFixed(1)} → ${second.mean.toFixed(1)}, ${changed} cells changed)`);
    }
    await p.page.waitForTimeout(100);
  }
}

/** @param {number[]} xs @param {number} q */
export function quantile(xs, q) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))] : null;
}

/**
 * Records a figure: merged into test-output/browser-figures.json and printed as a
 * `FIGURES {...}` line.
 * @param {string} key
 * @param {any} value
 */
export function recordFigure(key, value) {
  mkdirSync(OUTPUT_DIR, { recursive: true });
  /** @type {any} */
  let all = {};
  try {
    all = JSON.parse(readFileSync(FIGURES_FILE, "utf8"));
  } catch {
    all = {};
  }
  all[key] = value;
  all.recorded_at = new Date().toISOString();
  writeFileSync(FIGURES_FILE, `${JSON.stringify(all, null, 2)}\n`);
  console.log(`FIGURES ${JSON.stringify({ [key]: value })}`);
}

export function figuresFile() {
  return FIGURES_FILE;
}

/**
 * Saves a screenshot under test-output/screenshots/ and prints where.
 * @param {import("playwright-core").Page} page
 * @param {string} name
 */
export async function screenshot(page, name) {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  const file = path.join(SCREENSHOT_DIR, `${name}.png`);
  await page.screenshot({ path: file });
  console.log(`SCREENSHOT ${file}`);
  return file;
}

/** Clients one UdpProxy serves at most (a test has a handful of pages). */
const MAX_PROXY_CLIENTS = 64;

/**
 * A UDP forwarder between browser and relay that can black out, so a test can make a
 * page's QUIC connection die (both sides hit their idle timeout) without closing the page.
 * One upstream socket per client address, as a NAT would. Loopback only.
 * With `reorder`, every `every`-th packet toward the client is held back `holdMs` (so the
 * packets after it overtake it), as a network with several paths reorders.
 * @param {string} target host:port of the relay's QUIC endpoint
 * @param {{reorder?: {every: number, holdMs: number}}} [options]
 * @returns {Promise<{port: number, blackout: (on: boolean) => void, rebind: () => void, close: () => void, reordered: () => number}>}
 */
export async function startUdpProxy(target, options = {}) {
  const dgram = await import("node:dgram");
  const [host, portText] = [target.slice(0, target.lastIndexOf(":")), target.slice(target.lastIndexOf(":") + 1)];
  const targetPort = Number(portText);
  let dark = false;
  let closed = false;
  let toClient = 0;
  let held = 0;
  const front = dgram.createSocket("udp4");
  /** @type {Map<string, import("node:dgram").Socket>} */
  const upstream = new Map();
  front.on("message", (msg, from) => {
    if (dark) return;
    const key = `${from.address}:${from.port}`;
    let back = upstream.get(key);
    if (!back) {
      if (upstream.size >= MAX_PROXY_CLIENTS) return;
      back = openUpstream(from);
      upstream.set(key, back);
    }
    back.send(msg, targetPort, host);
  });
  /** A socket toward the relay for one client, bound to a fresh port. @param {import("node:dgram").RemoteInfo} from */
  function openUpstream(from) {
    const sock = dgram.createSocket("udp4");
    sock.bind(0, "127.0.0.1");
    sock.on("message", (reply) => {
      if (dark) return;
      const r = options.reorder;
      if (r && ++toClient % r.every === 0) {
        held++;
        setTimeout(() => {
          if (!dark && !closed) front.send(reply, from.port, from.address);
        }, r.holdMs);
        return;
      }
      front.send(reply, from.port, from.address);
    });
    /** @type {any} */ (sock).client = from;
    return sock;
  }
  await new Promise((resolve) => front.bind(0, "127.0.0.1", () => resolve(undefined)));
  return {
    port: front.address().port,
    blackout: (on) => {
      dark = on;
    },
    /** Every client's traffic leaves from a new port, as after a NAT rebinding. */
    rebind: () => {
      for (const [key, old] of upstream) {
        upstream.set(key, openUpstream(/** @type {any} */ (old).client));
        old.close();
      }
    },
    close: () => {
      closed = true;
      for (const s of upstream.values()) s.close();
      front.close();
    },
    reordered: () => held,
  };
}

/** The impaired-network shaper (tests/src/bin/duet-impair.rs): DUET_IMPAIR_BIN, else the newest cargo build. */
export function impairBinary() {
  if (process.env.DUET_IMPAIR_BIN) return process.env.DUET_IMPAIR_BIN;
  const built = ["release", "debug"]
    .map((profile) => path.join(REPO, "target", profile, "duet-impair"))
    .filter((p) => existsSync(p))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  if (!built.length) throw new Error("No shaper binary: run `cargo build -p duet-tests --bin duet-impair` (or set DUET_IMPAIR_BIN).");
  return built[0];
}

/**
 * Starts the seeded shaper between a page and the relay's QUIC port.
 * @param {string} upstream host:port of the relay's QUIC endpoint
 * @param {string} profile a named profile (lan, wifi, cellular, lossy, congested, handover, …)
 * @param {number} seed
 * @param {string[]} [extra] more `duet-impair` arguments (`--handover-every 4 --change ip`)
 * @returns {Promise<{port: number, log: () => string, stats: () => any, close: () => void}>}
 *   `stats()` is the newest `stats` line's figures (null before the first; pass
 *   `--stats-every` for them)
 */
export async function startImpair(upstream, profile, seed, extra = []) {
  const proc = spawn(impairBinary(), ["--listen", "127.0.0.1:0", "--upstream", upstream, "--profile", profile, "--seed", String(seed), ...extra], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  /** @type {any} */
  let latest = null;
  let pending = "";
  proc.stdout.on("data", (/** @type {Buffer} */ d) => {
    pending += d.toString();
    const lines = pending.split("\n");
    pending = lines.pop() ?? "";
    if (pending.length > 100_000) pending = "";
    for (const line of lines) if (line.startsWith("stats ")) latest = JSON.parse(line.slice("stats ".length));
  });
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`duet-impair printed no listening line:\n${out}`)), patient(10_000));
    const onData = (/** @type {Buffer} */ d) => {
      out += d.toString();
      if (out.length > 100_000) out = out.slice(-50_000);
      const m = /listening \S+:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    proc.stdout.on("data", onData);
    proc.stderr.on("data", onData);
    proc.once("exit", (code) => reject(new Error(`duet-impair exited (${code}):\n${out}`)));
  });
  return { port: /** @type {number} */ (port), log: () => out, stats: () => latest, close: () => proc.kill("SIGTERM") };
}
