// @ts-check
/**
 * @file Duet between Firefox and Chromium: Debian's Firefox ESR driven by puppeteer-core
 * over WebDriver BiDi, a Chromium page driven by playwright-core, the real relay between.
 * Firefox has WebTransport and WebCodecs but no `MediaStreamTrackProcessor` and no track
 * generator, so this covers the other capture path (a `<video>` with
 * `requestVideoFrameCallback` for the camera, an `AudioWorklet` for the microphone) and
 * the canvas display. Firefox is launched by helpers.js `launchFirefox` (with a sound server, which its
 * `AudioContext` needs).
 */

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { Person, SCREENSHOT_DIR, expectMovingPicture, launchBrowser, launchFirefox, patient, startRelay } from "./helpers.js";

/** @type {import("playwright-core").Browser} */
let chromium;
/** @type {import("puppeteer-core").Browser} */
let firefox;

before(async () => {
  chromium = await launchBrowser();
  firefox = await launchFirefox();
});

after(async () => {
  await firefox?.close();
  await chromium?.close();
});

/** How long a Firefox page may take to answer one evaluate (a snapshot takes milliseconds). */
const ANSWER_MS = 15_000;

/**
 * Runs one step of the call; its failure names the step, so a failed run says where it
 * stopped rather than only which puppeteer call gave up.
 * @template T
 * @param {string} name
 * @param {() => Promise<T>} fn
 * @returns {Promise<T>}
 */
async function step(name, fn) {
  try {
    return await fn();
  } catch (e) {
    throw new Error(`step "${name}": ${e instanceof Error ? e.stack ?? e.message : e}`);
  }
}

/** A Firefox page of the app, driven through puppeteer (what `Person` does for Chromium). */
class FirefoxPerson {
  /** @param {import("puppeteer-core").Page} page @param {string} name */
  constructor(page, name) {
    this.page = page;
    this.name = name;
    /** @type {string[]} */
    this.problems = [];
    page.on("pageerror", (/** @type {unknown} */ e) => this.problems.push(`pageerror: ${e instanceof Error ? e.message : e}`));
  }

  /** @param {string} url @param {string} name */
  static async open(url, name) {
    const context = await firefox.createBrowserContext();
    const page = await context.newPage();
    page.setDefaultTimeout(patient(15_000));
    await page.goto(url);
    return new FirefoxPerson(page, name);
  }

  async start() {
    await this.page.locator("#name").fill(this.name);
    await this.page.locator("#adult").click();
    await this.page.locator("#start").click();
  }

  /**
   * Runs `fn` in the page. A page whose main thread stops answering would otherwise surface
   * only as puppeteer's bare "script.callFunction timed out" a minute later; this fails
   * sooner and names what the test was waiting for.
   * @template T
   * @param {() => T} fn
   * @param {string} what
   * @returns {Promise<Awaited<T>>}
   */
  async answer(fn, what) {
    const ms = patient(ANSWER_MS);
    /** @type {NodeJS.Timeout | undefined} */
    let timer;
    const late = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.name} (Firefox): the page did not answer within ${ms} ms while the test waited for ${what}; its main thread is blocked`)), ms);
    });
    try {
      return /** @type {Awaited<T>} */ (await Promise.race([this.page.evaluate(fn), late]));
    } finally {
      clearTimeout(timer);
    }
  }

  /** @param {string} [what] what the snapshot is for, named if the page does not answer @returns {Promise<any>} */
  snapshot(what = "a snapshot") {
    return this.answer(() => /** @type {any} */ (window).duet.snapshot(), what);
  }

  /** @param {(s: any) => boolean} predicate @param {string} what @param {number} [timeoutMs] */
  async until(predicate, what, timeoutMs = 20_000) {
    const deadline = Date.now() + patient(timeoutMs);
    let last;
    while (Date.now() < deadline) {
      last = await this.snapshot(what);
      if (predicate(last)) return last;
      await new Promise((resolve) => setTimeout(resolve, 50)); // a poll interval
    }
    throw new Error(`${this.name} (Firefox): timed out waiting for ${what}. Last snapshot: ${JSON.stringify(last)?.slice(0, 3000)}\n${this.problems.join("\n")}`);
  }

  /** @param {string} text waits until the chat log shows it */
  async seesChat(text) {
    await this.page.waitForFunction((/** @type {string} */ t) => document.getElementById("chat-log")?.textContent?.includes(t), { timeout: patient(15_000) }, text);
  }

  /** @param {string} text */
  async say(text) {
    await this.page.locator("#message").fill(text);
    await this.page.locator("#send").click();
  }

  async close() {
    await this.page.browserContext().close();
  }
}

/** The partner's picture on the Firefox page, as PNG bytes (its canvas is drawn by the worker). @param {FirefoxPerson} p */
async function partnerPicture(p) {
  const el = await p.page.$("#partner-video");
  assert.ok(el, "the partner element");
  return Buffer.from(await el.screenshot());
}

describe("Firefox and Chromium", () => {
  test("a Firefox page and a Chromium page pair, see each other's names and live video, hear each other, chat, and Next re-pairs", async () => {
    const relay = await startRelay();
    /** @type {(Person | FirefoxPerson)[]} */
    const people = [];
    try {
      const fox = await step("open the Firefox page", () => FirefoxPerson.open(relay.url, "Fox"));
      people.push(fox);
      const crow = await step("open the Chromium page", () => Person.open(chromium, relay.url, "Crow"));
      people.push(crow);
      await step("pair Fox and Crow", async () => {
        await fox.start();
        await crow.start();
        await fox.until((s) => s.phase === "paired" && s.partnerName === "Crow", "being paired with Crow");
        await crow.until((s) => s.phase === "paired" && s.partnerName === "Fox", "being paired with Fox");
        await fox.page.waitForFunction(() => document.getElementById("partner-name")?.textContent === "Crow");
        await crow.page.getByText("Fox", { exact: true }).first().waitFor({ state: "visible" });
        const f0 = await fox.snapshot("Firefox's media and capture paths");
        assert.equal(f0.media.video, true, "Firefox's camera");
        assert.equal(f0.media.audio, true, "Firefox's microphone");
        assert.equal(f0.media.problem, null);
        assert.deepEqual(f0.capture, { video: "element", audio: "worklet" }, "Firefox's capture paths: the <video> element and the worklet");
        assert.deepEqual((await crow.snapshot()).capture, { video: "processor", audio: "stream" }, "Chromium's: the page's MediaStreamTrackProcessor");
      });

      await step("video both ways", async () => {
        // Decoded and shown, and the picture moves.
        await crow.until((s) => s.receive.video.framesDecoded > 30, "Firefox's video on the Chromium page");
        await expectMovingPicture(crow);
        await fox.until((s) => s.receive.video.framesPainted > 30, "Chromium's video painted on the Firefox page");
        const a = await partnerPicture(fox);
        const before = (await fox.snapshot("the Firefox page's painted frames")).receive.video.framesPainted;
        await fox.until((s) => s.receive.video.framesPainted > before + 10, "more frames on the Firefox page");
        const b = await partnerPicture(fox);
        assert.ok(!a.equals(b), "the picture on the Firefox page changes");
        mkdirSync(SCREENSHOT_DIR, { recursive: true });
        await fox.page.screenshot({ path: path.join(SCREENSHOT_DIR, "firefox-call.png") });
        console.log(`SCREENSHOT ${path.join(SCREENSHOT_DIR, "firefox-call.png")}`);
      });

      await step("sound both ways", async () => {
        // As heard (after the volume), measured in each page.
        /** @returns {number} the loudest RMS over 2.5 s of the partner's sound in this page */
        const level = () => /** @type {any} */ (window).duet.audioLevel(2500);
        await crow.until((s) => s.receive.audio.framesDecoded > 100, "Firefox's sound decoded on the Chromium page");
        await fox.until((s) => s.receive.audio.framesDecoded > 100, "Chromium's sound decoded on the Firefox page");
        const onCrow = /** @type {number} */ (await crow.page.evaluate(level));
        const onFox = /** @type {number} */ (await fox.answer(level, "the level of Chromium's sound on the Firefox page"));
        assert.ok(onCrow > 0.005, `Firefox's microphone heard on the Chromium page (level ${onCrow})`);
        assert.ok(onFox > 0.005, `Chromium's microphone heard on the Firefox page (level ${onFox})`);
      });

      await step("chat both ways", async () => {
        await fox.say("hello from Firefox 🦊");
        await crow.page.getByRole("log").getByText("hello from Firefox 🦊").waitFor();
        await crow.page.getByLabel("Message", { exact: true }).fill("hello from Chromium");
        await crow.button("Send").click();
        await fox.seesChat("hello from Chromium");
      });

      await step("Next: Firefox meets the one waiting, and sees their video", async () => {
        const dove = await Person.open(chromium, relay.url, "Dove");
        people.push(dove);
        await dove.start();
        await dove.until((s) => s.phase === "waiting", "Dove in the queue");
        await fox.page.locator("#next").click();
        await fox.until((s) => s.phase === "paired" && s.partnerName === "Dove", "Firefox paired with Dove");
        await dove.until((s) => s.phase === "paired" && s.partnerName === "Fox", "Dove paired with Fox");
        const painted = (await fox.snapshot("the Firefox page's painted frames")).receive.video.framesPainted;
        await fox.until((s) => s.receive.video.framesPainted > painted + 10, "Dove's video on the Firefox page");
        await dove.until((s) => s.receive.video.framesDecoded > 10, "Firefox's video on Dove's page");
      });
      for (const p of people) assert.deepEqual(p.problems.filter((x) => x.startsWith("pageerror")), [], `${p.name} had page errors`);
    } catch (e) {
      const tail = relay.log().split("\n").slice(-30).join("\n");
      throw new Error(`${e instanceof Error ? e.stack : e}\n--- relay log (tail) ---\n${tail}`);
    } finally {
      for (const p of people) await p.close().catch(() => {});
      await relay.stop();
    }
  });
});
