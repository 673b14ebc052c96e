// @ts-check
/**
 * @file A browser and the native client in one call, both ends encrypted: the Chromium
 * page (WebCrypto) and `duet-client call` (duet-proto's Rust) agree keys through the real
 * relay, show the same safety code, and open each other's sealed chat lines; the native
 * client opens every media frame the page sealed. The native client sends no media
 * (`--no-media`): its frames are synthetic bytes, which a browser's decoder cannot show.
 */

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { Person, builtBinary, launchBrowser, patient, screenshot, withRelay } from "./helpers.js";

/** @type {import("playwright-core").Browser} */
let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

/**
 * Runs `duet-client call` to its end and returns its JSON report.
 * @param {import("./helpers.js").Relay} relay
 * @param {string[]} args
 * @returns {{report: Promise<any>, kill: () => void}}
 */
function nativeCall(relay, args) {
  const proc = spawn(builtBinary("duet-client", "DUET_CLIENT_BIN"), ["call", "--relay", `https://${relay.quic}`, "--cert-hash", relay.certSha256, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  proc.stdout.on("data", (/** @type {Buffer} */ d) => (out += d.toString()));
  proc.stderr.on("data", (/** @type {Buffer} */ d) => (err = (err + d.toString()).slice(-20_000)));
  const report = new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`duet-client did not finish within ${patient(60_000)} ms:\n${err}`));
    }, patient(60_000));
    proc.once("exit", (code) => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(out));
      } catch {
        reject(new Error(`duet-client exited (${code}) without a report:\n${out}\n${err}`));
      }
    });
  });
  return { report, kill: () => proc.kill("SIGKILL") };
}

describe("Browser and native client", () => {
  test("a Chromium page and duet-client agree keys through the relay, show one safety code and open each other's sealed chat and media", async () => {
    await withRelay(async (relay, people) => {
      const web = await Person.open(browser, relay.url, "Web");
      people.push(web);
      await web.start();
      await web.until((s) => s.phase === "waiting", "the page in the queue");
      const native = nativeCall(relay, ["--name", "Native", "--seconds", "6", "--chat-every", "0.5", "--no-media", "--match-timeout", "30"]);
      try {
        const s = await web.until((x) => x.phase === "paired" && x.partnerName === "Native" && x.e2ee?.state === "ready", "the page paired with Native, keys agreed");
        const code = s.e2ee.safetyCode;
        assert.ok(code?.words && code?.emoji, `the page has a safety code: ${JSON.stringify(s.e2ee)}`);
        await web.page.getByRole("log").getByText(/line \d+ from Native ✓/).first().waitFor({ timeout: patient(15_000) });
        await web.page.getByLabel("Message", { exact: true }).fill("hello from the browser");
        await web.button("Send").click();
        await web.until((x) => x.send.video?.framesEncoded > 30 && x.send.audio?.framesEncoded > 30, "the page's video and sound sent to Native");
        await screenshot(web.page, "native-partner");
        const report = await native.report;
        assert.equal(report.partner, "Web", JSON.stringify(report));
        assert.equal(report.e2ee, true, "the native client agreed keys");
        assert.equal(report.safety_code, code.words, "one safety code on both ends");
        assert.equal(report.frames_unopened, 0, `every frame the page sealed opened in Rust: ${JSON.stringify(report)}`);
        assert.ok(report.video_frames_received > 10 && report.audio_frames_received > 10, `the page's media reached the native client: ${JSON.stringify(report)}`);
        assert.equal(report.chat_unopened, 0, "every line the page sealed opened in Rust");
        assert.ok(report.chat_received >= 1, `the page's line reached the native client: ${JSON.stringify(report)}`);
        assert.deepEqual(report.errors, []);
        const end = await web.snapshot();
        assert.deepEqual(end.e2ee.unopened, { audio: 0, video: 0, chat: 0 }, "every line the native client sealed opened in the page");
        assert.equal(end.e2ee.plainLinesDropped, 0);
      } finally {
        native.kill();
      }
    });
  });
});
