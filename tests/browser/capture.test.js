// @ts-check
/**
 * @file Safari's page shape in headless Chromium: a page without `MediaStreamTrackProcessor`
 * and `MediaStreamTrackGenerator` (deleted from the page, as Safari has them in workers
 * only). The page waits for its media worker to say whether it has a processor; this
 * Chromium's worker has none (and Chromium refuses to transfer a camera track to a worker
 * anyway), so the camera goes the `<video>` way, the microphone through the worklet and
 * the partner's video to a canvas, and the call works both ways with a plain Chromium
 * page. Safari's own case (the worker reading a transferred clone of the track) cannot run
 * here: its choice and its worker side are unit tests (web-client/test/capture.test.js).
 */

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Person, expectMovingPicture, launchBrowser, withRelay } from "./helpers.js";

/** @type {import("playwright-core").Browser} */
let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

describe("capture paths", () => {
  test("a page without the track processor and generator (Safari's page) sends its camera through a <video>, shows its partner on a canvas, and the call works both ways", async () => {
    await withRelay(async (relay, people) => {
      const safari = await Person.open(browser, relay.url, "Sia", {
        beforeLoad: (page) =>
          page.addInitScript("delete window.MediaStreamTrackProcessor; delete window.MediaStreamTrackGenerator;"),
      });
      people.push(safari);
      const plain = await Person.open(browser, relay.url, "Cal");
      people.push(plain);
      await safari.start();
      await plain.start();
      await safari.until((s) => s.phase === "paired" && s.partnerName === "Cal", "being paired with Cal");
      await plain.until((s) => s.phase === "paired" && s.partnerName === "Sia", "being paired with Sia");
      const s0 = await safari.snapshot();
      assert.deepEqual(s0.capture, { video: "element", audio: "worklet" });
      assert.equal(s0.media.problem, null);
      assert.deepEqual((await plain.snapshot()).capture, { video: "processor", audio: "stream" });
      for (const p of [safari, plain]) {
        await p.until((s) => s.receive.video.framesPainted > 20 && s.receive.audio.framesDecoded > 50, "the partner's video and sound");
        await expectMovingPicture(p);
      }
    });
  });
});
