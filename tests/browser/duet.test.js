// @ts-check
/**
 * @file Duet in real browsers: headless Chromium (Debian's package) with a fake camera
 * and microphone, driven by playwright-core, against the real relay binary on ephemeral
 * ports. Each test starts its own relay so no stranger from another test is in the queue.
 *
 * What it shows, as a person would see it: two pages are paired and see and hear each
 * other (canvas pixels change; decoded video and audio frame counts rise); chat both ways
 * with non-ASCII text and a message at the size limit, and a refusal over it; a third
 * page and Next; Stop and closing a tab; a page without camera permission still chats; an
 * unreachable relay gives a message and a Retry; screenshots at desktop and phone sizes.
 *
 * Figures (printed as `FIGURES {...}` lines and kept in test-output/browser-figures.json):
 * Start → first decoded partner frame, Next → new partner's first frame, and
 * capture-to-render video latency between two pages (same machine clock), with the codec.
 */

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { DESKTOP, PHONE, Person, expectMovingPicture, launchBrowser, launchCpuLimitedBrowser, patient, recordFigure, screenshot, startImpair, startRelay, startUdpProxy, withRelay as sharedWithRelay } from "./helpers.js";

/** @type {import("playwright-core").Browser} */
let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

/**
 * Runs `body` with a fresh relay (helpers.js `withRelay`) and keeps any panic in its log for the test at the end.
 * @param {(relay: import("./helpers.js").Relay, people: Person[]) => Promise<void>} body
 * @param {string[]} [relayArgs] extra relay flags
 */
function withRelay(body, relayArgs = []) {
  return sharedWithRelay(body, relayArgs, (relay) => {
    const panic = /thread '.*' .*panicked at .*\n.*/.exec(relay.log());
    if (panic) relayPanics.push(panic[0]);
  });
}

/**
 * Panics seen in any test's relay, shutdown included. They fail one test of their own at
 * the end, so a relay bug shows as itself and not as a browser test gone red at random.
 * @type {string[]}
 */
const relayPanics = [];

/**
 * @param {Person[]} people
 * @param {string} url
 * @param {string} name
 * @param {{viewport?: {width: number, height: number}, isMobile?: boolean, in?: import("playwright-core").Browser, beforeLoad?: (page: import("playwright-core").Page) => Promise<unknown>}} [options]
 */
function join(people, url, name, options = {}) {
  return Person.join(options.in ?? browser, people, url, name, options);
}

/**
 * Waits until `a` and `b` are paired with each other and both are decoding the other's video.
 * @param {Person} a
 * @param {Person} b
 */
async function expectPaired(a, b) {
  for (const [me, them] of [
    [a, b],
    [b, a],
  ]) {
    await me.until((s) => s.phase === "paired" && s.partnerName === them.name, `being paired with ${them.name}`);
    await me.page.getByText(them.name, { exact: true }).first().waitFor({ state: "visible" });
  }
  const [sa, sb] = [await a.snapshot(), await b.snapshot()];
  assert.equal(sa.matchId, sb.matchId, "both pages are in the same pairing");
}

describe("duet in the browser", () => {
  test("two people are paired, see each other's names and live video, and hear audio", async () => {
    await withRelay(async (relay, people) => {
      const ana = await join(people, relay.url, "Ana");
      const sam = await join(people, relay.url, "Sam");
      await ana.start("chess, music");
      await ana.waitStatus(/Looking for someone…/);
      await sam.start("chess");
      await expectPaired(ana, sam);
      await ana.waitStatus(/Connected to Sam — you both like chess/);
      await sam.waitStatus(/Connected to Ana/);

      // Pixels from the other page's fake camera, changing over time.
      for (const p of [ana, sam]) {
        await p.until((s) => s.receive.video.framesDecoded > 5, "decoded partner video");
        const moving = await expectMovingPicture(p);
        assert.ok(moving.width >= 160 && moving.height >= 120, `partner video is ${moving.width}x${moving.height}`);
        // Same fake camera on both pages: the partner's picture is as bright as one's own.
        const own = await p.previewMedianLuma();
        const theirs = (await p.canvasSignature()).grid.sort((x, y) => x - y)[96];
        assert.ok(Math.abs(own - theirs) < 20, `partner picture luma ${theirs} vs own camera ${own.toFixed(0)}`);
      }
      // Counters of decoded video and audio frames go up.
      for (const p of [ana, sam]) {
        const s0 = await p.snapshot();
        await p.until(
          (s) => s.receive.video.framesDecoded >= s0.receive.video.framesDecoded + 10 && s.receive.audio.framesDecoded >= s0.receive.audio.framesDecoded + 25,
          "video and audio frame counts rising",
        );
        const s = await p.snapshot();
        assert.ok(s.receive.audio.framesPlayed > 0, "decoded audio is played through Web Audio");
        assert.equal(s.receive.datagramsRejected, 0, "no malformed datagram arrived");
      }

      // Start → first decoded partner frame. Sam pressed Start second, so his figure is
      // connect + pairing + first frame, with nobody to wait for.
      const [sa, ss] = [await ana.snapshot(), await sam.snapshot()];
      const firstFrame = (/** @type {any} */ s) => s.timeline.matches[0].firstFrameAt - s.timeline.startClickAt;
      // Capture-to-render latency over a fresh stretch of the call.
      await ana.page.evaluate(() => /** @type {any} */ (window).duet.clearLatencies());
      await sam.page.evaluate(() => /** @type {any} */ (window).duet.clearLatencies());
      await ana.until((s) => s.receive.latencyMs.count >= 60, "60 latency samples", 30_000);
      await sam.until((s) => s.receive.latencyMs.count >= 60, "60 latency samples", 30_000);
      const [la, ls] = [await ana.snapshot(), await sam.snapshot()];
      recordFigure("start_to_first_partner_frame_ms", {
        second_to_start: Math.round(firstFrame(ss)),
        first_to_start_including_wait: Math.round(firstFrame(sa)),
        matched_to_first_frame: Math.round(ss.timeline.matches[0].firstFrameAt - ss.timeline.matches[0].matchedAt),
        matched_to_first_keyframe_received: Math.round(ss.timeline.matches[0].firstKeyframeAt - ss.timeline.matches[0].matchedAt),
      });
      recordFigure("capture_to_render_latency_ms", {
        codec: la.receive.codec,
        sam_to_ana: { median: round1(la.receive.latencyMs.median), p95: round1(la.receive.latencyMs.p95), samples: la.receive.latencyMs.count },
        ana_to_sam: { median: round1(ls.receive.latencyMs.median), p95: round1(ls.receive.latencyMs.p95), samples: ls.receive.latencyMs.count },
        send_bitrate_kbps: la.send.bitrateKbps,
        video: `${la.send.video.width}x${la.send.video.height}`,
        av_sync: { sam_to_ana: la.receive.avSync, ana_to_sam: ls.receive.avSync },
      });
      assert.ok(la.receive.latencyMs.median < 500, `capture-to-render median ${la.receive.latencyMs.median} ms`);
      // On a machine of four cores or fewer the encoder stays under 640×480 pixels, where
      // Chromium's libvpx runs one thread (web-client/app/wire/encode-size.js).
      if ((await ana.page.evaluate(() => navigator.hardwareConcurrency)) <= 4) {
        for (const v of [la.send.video, ls.send.video]) {
          assert.ok(v.width * v.height < 640 * 480, `encoding ${v.width}x${v.height} from a ${v.captureWidth}x${v.captureHeight} camera`);
          if (v.cpuStep === 0 && v.captureWidth === 640 && v.captureHeight === 480) assert.deepEqual([v.width, v.height], [640, 478], "a 640x480 camera at full quality loses two rows");
        }
      }
      const status = await relay.status();
      assert.equal(status.pairs, 1);
      assert.ok(status.datagrams_forwarded > 100, "media went through the relay");
    });
  });

  test("chat works both ways with non-ASCII text and a message at the size limit; one over it is refused visibly", async () => {
    await withRelay(async (relay, people) => {
      const ana = await join(people, relay.url, "Ana");
      const zoe = await join(people, relay.url, "Zoë 🎸");
      await ana.start();
      await zoe.start();
      await expectPaired(ana, zoe);

      /** @param {Person} from @param {Person} to @param {string} text */
      const say = async (from, to, text) => {
        await from.page.getByLabel("Message", { exact: true }).fill(text);
        await from.button("Send").click();
        await to.page.getByRole("log").getByText(text, { exact: true }).waitFor({ state: "visible" });
      };
      await say(ana, zoe, "hi 👋 — ça va? Łukasz says żółw");
      await say(zoe, ana, "こんにちは！ Très bien, merci 🎸");
      const atLimit = "é".repeat(1000); // 2000 bytes of UTF-8: exactly the limit
      await say(ana, zoe, atLimit);
      await say(zoe, ana, "ab".repeat(999)); // 1998 bytes

      // Over the limit: refused on the page with a visible message, never sent.
      const over = `${"é".repeat(1000)}x`;
      await ana.page.getByLabel("Message", { exact: true }).fill(over);
      await ana.button("Send").click();
      const alert = ana.page.getByRole("alert").filter({ hasText: /limit/ });
      await alert.waitFor({ state: "visible" });
      assert.match((await alert.textContent()) ?? "", /2,001 bytes.*2,000/);
      assert.equal(await ana.page.getByLabel("Message", { exact: true }).inputValue(), over, "the text stays for editing");
      // A later message arrives and the refused one never did.
      await ana.page.getByLabel("Message", { exact: true }).fill("shorter now");
      await ana.button("Send").click();
      await zoe.page.getByRole("log").getByText("shorter now", { exact: true }).waitFor({ state: "visible" });
      assert.equal(await zoe.page.getByRole("log").getByText(over, { exact: true }).count(), 0);
      const status = await relay.status();
      assert.equal(status.chat_lines_forwarded, 5);
    });
  });

  test("a third person and Next: the pages re-pair and the new partner's video appears", async () => {
    await withRelay(async (relay, people) => {
      const ana = await join(people, relay.url, "Ana");
      const ben = await join(people, relay.url, "Ben");
      const cho = await join(people, relay.url, "Cho");
      await ana.start();
      await ben.start();
      await expectPaired(ana, ben);
      await ana.until((s) => s.receive.video.framesDecoded > 5, "Ben's video");
      await cho.start();
      await cho.waitStatus(/Looking for someone…/);

      await ana.button("Next").click();
      // The one who pressed Next gets the first pick: Ana meets Cho; Ben is told and waits.
      await expectPaired(ana, cho);
      await ben.waitStatus(/Ana left — finding someone new…/);
      await ben.until((s) => s.phase === "waiting", "Ben back in the queue");
      const s = await ana.until((x) => x.timeline.matches.length === 2 && x.timeline.matches[1].firstFrameAt !== null, "Cho's first frame on Ana's page");
      await cho.until((x) => x.receive.video.framesDecoded > 5, "Ana's video on Cho's page");
      await expectMovingPicture(ana);
      const m = s.timeline.matches[1];
      assert.equal(m.partner, "Cho");
      recordFigure("next_to_new_partner_first_frame_ms", {
        next_to_first_frame: Math.round(m.firstFrameAt - s.timeline.nextClickAt),
        next_to_matched: Math.round(m.matchedAt - s.timeline.nextClickAt),
        next_to_first_keyframe_received: Math.round(m.firstKeyframeAt - s.timeline.nextClickAt),
        codec: m.codec,
      });
      // Nothing of Ben's reached Ana after the switch: her reassembler and decoder run on Cho's pairing only.
      assert.equal(s.matchId, m.matchId);
    });
  });

  test("Stop and closing a tab: the partner sees that they left and is re-queued", async () => {
    await withRelay(async (relay, people) => {
      const ana = await join(people, relay.url, "Ana");
      const ben = await join(people, relay.url, "Ben");
      await ana.start();
      await ben.start();
      await expectPaired(ana, ben);

      await ana.button("Stop").click();
      await ana.button("Start").waitFor({ state: "visible" });
      await ben.waitStatus(/Ana left — finding someone new…/);
      await ben.until((s) => s.phase === "waiting", "Ben waiting again");
      await ben.page.getByRole("log").getByText(/Ana left/).waitFor({ state: "visible" });

      // Ben really is back in the queue: the next person to come is paired with him.
      const cho = await join(people, relay.url, "Cho");
      await cho.start();
      await expectPaired(ben, cho);

      // Cho closes the tab.
      const closing = people.indexOf(cho);
      await cho.page.close();
      people.splice(closing, 1);
      await ben.waitStatus(/Cho left.* — finding someone new…/, 30_000);
      await ben.until((s) => s.phase === "waiting", "Ben waiting after Cho closed the tab");
      const dan = await join(people, relay.url, "Dan");
      await dan.start();
      await expectPaired(ben, dan);
      await ben.until((s) => s.receive.video.framesDecoded > 0 && s.timeline.matches.at(-1).firstFrameAt !== null, "Dan's video");
      // Ana, stopped, is idle: not in the queue, not paired.
      const status = await relay.status();
      assert.equal(status.pairs, 1);
      assert.equal(status.waiting, 0);
      // Start again on the same session (it stayed open): back in the queue.
      await ana.button("Start").click();
      await ana.waitStatus(/Looking for someone…/);
      await ana.until((s) => s.phase === "waiting" && s.media.video, "Ana waiting, camera on again");
      const later = await relay.status();
      assert.equal(later.waiting, 1);
      assert.equal(later.sessions, 3, "no second session for Ana");
    });
  });

  test("camera and microphone toggles, and Report: the chat ends for both and both are re-queued", async () => {
    await withRelay(async (relay, people) => {
      const ana = await join(people, relay.url, "Ana");
      const ben = await join(people, relay.url, "Ben");
      await ana.start();
      await ben.start();
      await expectPaired(ana, ben);
      await ben.until((s) => s.receive.video.framesDecoded > 5, "Ana's video");

      // Camera off: Ana sends no video and Ben is told; on again: the picture comes back.
      const camera = ana.page.getByRole("button", { name: "Camera", exact: true });
      await camera.click();
      assert.equal(await camera.getAttribute("aria-pressed"), "false");
      await ben.page.getByText("No video from Ana").waitFor({ state: "visible" });
      await camera.click();
      const before = (await ben.snapshot()).receive.video.framesDecoded;
      await ben.until((s) => s.receive.video.framesDecoded > before + 5, "Ana's video again");
      await ben.page.getByText("No video from Ana").waitFor({ state: "hidden" });

      // Microphone off: no more audio frames leave Ana's page.
      const mic = ana.page.getByRole("button", { name: "Microphone", exact: true });
      await mic.click();
      assert.equal(await mic.getAttribute("aria-pressed"), "false");
      const sent = (await ana.snapshot()).send.audio.framesEncoded;
      // Everything already inside the encoder may still come out (a frame or two); after that, nothing.
      const heard = (await ben.snapshot()).receive.audio.framesDecoded;
      await ben.until((s) => s.receive.video.framesDecoded > before + 30, "a second more of video");
      assert.ok((await ana.snapshot()).send.audio.framesEncoded <= sent + 3, "audio stopped at the sender");
      assert.ok((await ben.snapshot()).receive.audio.framesDecoded <= heard + 3, "no audio reached Ben");
      await mic.click();
      await ben.until((s) => s.receive.audio.framesDecoded > heard + 25, "Ana's audio again");

      // Report: a dialog with a reason; the chat ends on both sides.
      await ben.button("Report").click();
      const dialog = ben.page.getByRole("dialog", { name: /Report Ana/ });
      await dialog.getByLabel("Spam or advertising").check();
      await dialog.getByRole("button", { name: "Send report" }).click();
      await ben.waitStatus(/Ana was reported .* Finding someone new…/);
      await ana.waitStatus(/The chat was ended — finding someone new…/);
      await ana.until((s) => s.phase === "waiting", "Ana back in the queue");
      await ben.until((s) => s.phase === "waiting", "Ben back in the queue");
      // Ana's page found someone new by itself after its moment to read (a Next the relay
      // takes a moment to hear): wait for the relay to have both in its queue.
      let status = await relay.status();
      for (const deadline = Date.now() + patient(5000); status.waiting < 2 && Date.now() < deadline; ) {
        await ana.page.waitForTimeout(50); // a poll interval
        status = await relay.status();
      }
      assert.equal(status.reports, 1);
      assert.equal(status.pairs, 0, "a reported pair is not paired again");
      assert.equal(status.waiting, 2);
    });
  });

  test("a person whose camera and microphone are refused can still chat, and is told so", async () => {
    const denying = await launchBrowser({ fakeUi: false });
    try {
      await withRelay(async (relay, people) => {
        const ana = await join(people, relay.url, "Ana");
        const noCam = await join(people, relay.url, "Nocam", { in: denying });
        await noCam.start();
        await noCam.page.getByText(/Camera and microphone were refused.*still text chat/).waitFor({ state: "visible" });
        await ana.start();
        await expectPaired(ana, noCam);
        const s = await noCam.snapshot();
        assert.equal(s.media.video, false);
        assert.equal(s.media.audio, false);
        await noCam.page.getByLabel("Message", { exact: true }).fill("no camera here, but hello!");
        await noCam.button("Send").click();
        await ana.page.getByRole("log").getByText("no camera here, but hello!").waitFor({ state: "visible" });
        await ana.page.getByLabel("Message", { exact: true }).fill("hello back");
        await ana.button("Send").click();
        await noCam.page.getByRole("log").getByText("hello back").waitFor({ state: "visible" });
        // They still see Ana (receiving needs no camera), and Ana is told there is no video.
        await noCam.until((x) => x.receive.video.framesDecoded > 5, "Ana's video on the camera-less page");
        await ana.page.getByText("No video from Nocam").waitFor({ state: "visible", timeout: patient(15_000) });
      });
    } finally {
      await denying.close();
    }
  });

  test("an unreachable relay gives a clear message and a Retry, never a blank page", async () => {
    const relay = await startRelay();
    const p = await Person.open(browser, relay.url, "Ana");
    try {
      await relay.stop("SIGKILL");
      await p.start();
      await p.page.getByRole("heading", { name: "Can't reach Duet" }).waitFor({ state: "visible" });
      const message = (await p.page.locator("#error-message").textContent()) ?? "";
      assert.match(message, /relay/i);
      await p.button("Retry").click();
      await p.page.getByRole("heading", { name: "Can't reach Duet" }).waitFor({ state: "visible" });
      await p.button("Back").click();
      await p.button("Start").waitFor({ state: "visible" });
    } finally {
      await p.close();
    }
  });

  /**
   * Ana (behind `proxy`: her page is told the proxy's port) and Sam (direct) in a call,
   * with Ana's video reaching Sam.
   * @param {any} people @param {any} relay @param {{port: number}} proxy
   */
  async function callThroughProxy(people, relay, proxy) {
    const ana = await join(people, relay.url, "Ana");
    await ana.quicVia(proxy.port);
    const sam = await join(people, relay.url, "Sam");
    await ana.start();
    await sam.start();
    await expectPaired(ana, sam);
    const matchId = (await ana.snapshot()).matchId;
    await sam.until((s) => s.receive.video.framesDecoded > 5, "Ana's video");
    return { ana, sam, matchId };
  }

  test("a lost connection is resumed with its token: the same partner comes back", async () => {
    // A short QUIC idle timeout, so a blackout of a few seconds really kills the connection.
    await withRelay(async (relay, people) => {
      const proxy = await startUdpProxy(relay.quic);
      try {
        const { ana, sam, matchId } = await callThroughProxy(people, relay, proxy);

        proxy.blackout(true);
        await sam.waitStatus(/Ana is reconnecting…/, 15_000);
        await ana.waitStatus(/Connection lost — reconnecting…/, 15_000);
        proxy.blackout(false);
        await ana.until((s) => s.phase === "paired" && s.matchId === matchId, "Ana back with the same pairing", 30_000);
        await sam.waitStatus(/Connected to Ana/, 15_000);
        const before = (await sam.snapshot()).receive.video.framesDecoded;
        await sam.until((s) => s.receive.video.framesDecoded > before + 10, "Ana's video after the resume");
        const a0 = (await ana.snapshot()).receive.video.framesDecoded;
        await ana.until((s) => s.receive.video.framesDecoded > a0 + 10, "Sam's video after the resume");
        assert.equal((await sam.snapshot()).matchId, matchId, "Sam kept the same pairing");
      } finally {
        proxy.close();
      }
    }, ["--idle-timeout-ms", "2000"]);
  });

  test("a NAT rebinding mid-call: Chromium's connection follows, no reconnect, same pairing", async () => {
    await withRelay(async (relay, people) => {
      const proxy = await startUdpProxy(relay.quic);
      try {
        const { ana, sam, matchId } = await callThroughProxy(people, relay, proxy);
        for (let round = 0; round < 3; round++) {
          proxy.rebind();
          const s0 = (await sam.snapshot()).receive.video.framesDecoded;
          const a0 = (await ana.snapshot()).receive.video.framesDecoded;
          await sam.until((s) => s.receive.video.framesDecoded > s0 + 15, "Ana's video after the rebinding");
          await ana.until((s) => s.receive.video.framesDecoded > a0 + 15, "Sam's video after the rebinding");
        }
        for (const p of [ana, sam]) {
          const s = await p.snapshot();
          assert.equal(s.phase, "paired");
          assert.equal(s.matchId, matchId, "the same pairing throughout");
        }
        const status = await (await fetch(`${relay.url}status`)).json();
        assert.equal(status.matches_made, 1, "nobody was re-matched");
        assert.equal(status.sessions_opened, 2, "no reconnect: still the first two sessions");
      } finally {
        proxy.close();
      }
    });
  });

  // A phone that moves from Wi-Fi to cellular gets a new IP address, not only a new port:
  // the shaper moves Ana's flow to 127.0.0.2, then .3, … every few seconds (with a short
  // blackout and the other network's delay and loss). Chromium's connection does not know;
  // the relay sees a new path, which quinn validates before following it. The call must go
  // on with the same pairing and no new session, and each side's picture must keep coming.
  test("a new IP address mid-call (another network): the relay follows Chromium's connection, no reconnect, same pairing", async () => {
    await withRelay(async (relay, people) => {
      const shaper = await startImpair(relay.quic, "lan", 11, ["--handover-every", "4", "--change", "ip", "--stats-every", "0.25"]);
      try {
        const { ana, sam, matchId } = await callThroughProxy(people, relay, shaper);
        /** @type {Set<string>} */
        const seen = new Set();
        for (let round = 0; round < 3; round++) {
          const from = shaper.stats()?.address_changes ?? 0;
          const deadline = Date.now() + patient(20_000);
          while ((shaper.stats()?.address_changes ?? 0) <= from) {
            assert.ok(Date.now() < deadline, `the shaper made no address change within 20 s:\n${shaper.log().slice(-2000)}`);
            await new Promise((resolve) => setTimeout(resolve, 50)); // a poll interval
          }
          seen.add(shaper.stats().source_ip);
          const s0 = (await sam.snapshot()).receive.video.framesDecoded;
          const a0 = (await ana.snapshot()).receive.video.framesDecoded;
          await sam.until((s) => s.receive.video.framesDecoded > s0 + 15, `Ana's video after address change ${round + 1}`);
          await ana.until((s) => s.receive.video.framesDecoded > a0 + 15, `Sam's video after address change ${round + 1}`);
        }
        assert.ok(seen.size >= 2 && [...seen].every((ip) => ip !== "127.0.0.1"), `the relay saw Ana from new addresses: ${[...seen].join(", ")}`);
        for (const p of [ana, sam]) {
          const s = await p.snapshot();
          assert.equal(s.phase, "paired");
          assert.equal(s.matchId, matchId, "the same pairing throughout");
        }
        const status = await (await fetch(`${relay.url}status`)).json();
        recordFigure("ip_change_mid_call", { address_changes: shaper.stats().address_changes, addresses: [...seen], sessions_opened: status.sessions_opened, resumes: status.resumes ?? null });
        assert.equal(status.matches_made, 1, "nobody was re-matched");
        assert.equal(status.sessions_opened, 2, "no reconnect: still the first two sessions");
      } finally {
        shaper.close();
      }
    });
  });

  // A lift, a tunnel: the shaper's `fade` profile carries 4 Mbit/s for 10 s, then 80 kbit/s
  // for 5 s, over and over (both ways). No video fits in 80 kbit/s. Ana's own RTT shows the
  // queue within a few hundred ms and her video pauses (wire/quality.js) while her voice
  // goes on; her page says so; her picture comes back after the fade, in the same pairing.
  test("a fade below any video's floor: the sender's video pauses and says so, its voice goes on, and the picture comes back", async () => {
    await withRelay(async (relay, people) => {
      const shaper = await startImpair(relay.quic, "fade", 5);
      try {
        const { ana, sam, matchId } = await callThroughProxy(people, relay, shaper);
        await ana.until((s) => s.send.videoPaused === true, "Ana's video paused in a fade", 40_000);
        const pausedFrom = await sam.snapshot();
        // While she is paused, count what reaches Sam: her voice, and no new picture.
        let last = pausedFrom;
        let polls = 0;
        let labelled = false;
        for (;;) {
          const a = await ana.snapshot();
          if (!a.send.videoPaused) break;
          last = await sam.snapshot();
          labelled ||= /your video paused/.test((await ana.page.textContent("#quality-label")) ?? "");
          polls++;
          assert.ok(polls < 200, "Ana's video stayed paused for over 40 s");
          await new Promise((resolve) => setTimeout(resolve, 200)); // a poll interval
        }
        const voice = last.receive.audio.framesDecoded - pausedFrom.receive.audio.framesDecoded;
        const pictures = last.receive.video.framesDecoded - pausedFrom.receive.video.framesDecoded;
        const a = await ana.snapshot();
        recordFigure("fade_video_pause", { polls_while_paused: polls, voice_frames_during_pause: voice, pictures_during_pause: pictures, frames_paused: a.send.video.framesPaused });
        assert.ok(polls >= 2, "the pause lasted a while (a second at least)");
        assert.ok(voice >= 10, `Ana's voice went on while her video paused: ${voice} audio frames reached Sam`);
        assert.ok(pictures <= 5, `no new picture while paused (at most the few in flight): ${pictures}`);
        assert.ok(a.send.video.framesPaused > 0, "the camera's frames were not encoded while paused");
        assert.ok(labelled, "Ana's page said her video was paused");
        const v0 = (await sam.snapshot()).receive.video.framesDecoded;
        await sam.until((s) => s.receive.video.framesDecoded > v0 + 15, "Ana's picture after the pause", 40_000);
        for (const p of [ana, sam]) assert.equal((await p.snapshot()).matchId, matchId, "the same pairing throughout");
        const status = await (await fetch(`${relay.url}status`)).json();
        assert.equal(status.matches_made, 1, "nobody was re-matched");
      } finally {
        shaper.close();
      }
    });
  });

  // Hand the page a fingerprint that is not the relay's, as a stale or tampered one would be.
  const WRONG_FINGERPRINT = "00".repeat(32);
  /** @param {import("playwright-core").Page} page */
  const refuseCertificate = async (page) => {
    await page.route("**/config.json", async (route) => {
      const res = await route.fetch();
      const config = await res.json();
      await route.fulfill({ response: res, json: { ...config, certificate_sha256: WRONG_FINGERPRINT } });
    });
    await page.route("**/certificate.sha256", (route) => route.fulfill({ status: 200, body: WRONG_FINGERPRINT }));
  };

  test("a certificate the browser refuses: the page falls back to the WebSocket and says the call may lag", async () => {
    await withRelay(async (relay, people) => {
      const ana = await join(people, relay.url, "Ana", { beforeLoad: refuseCertificate });
      await ana.start();
      await ana.waitStatus(/Looking for someone…/);
      assert.equal((await ana.snapshot()).transport, "websocket");
      await ana.page.getByText(/Connected over WebSocket \(TCP\)/).waitFor({ state: "visible" });
    });
  });

  test("a certificate the browser refuses, with no WebSocket fallback on the relay: a clear message naming both, and a Retry", async () => {
    await withRelay(
      async (relay, people) => {
        const p = await join(people, relay.url, "Ana", { beforeLoad: refuseCertificate });
        await p.start();
        await p.page.getByRole("heading", { name: "Can't reach Duet" }).waitFor({ state: "visible" });
        const message = (await p.page.locator("#error-message").textContent()) ?? "";
        assert.match(message, /certificate/);
        assert.match(message, /WebSocket/);
        // With the real fingerprint, Retry connects (over WebTransport: there is nothing else).
        await p.page.unrouteAll();
        await p.button("Retry").click();
        await p.waitStatus(/Looking for someone…/);
        assert.equal((await p.snapshot()).transport, "webtransport");
      },
      ["--no-websocket"],
    );
  });

  test("screenshots: waiting and live call, desktop and phone", async () => {
    await withRelay(async (relay, people) => {
      for (const [label, viewport, isMobile] of /** @type {const} */ ([
        ["desktop", DESKTOP, false],
        ["phone", PHONE, true],
      ])) {
        const a = await join(people, relay.url, `Ana-${label}`, { viewport, isMobile });
        await screenshot(a.page, `start-${label}`);
        await a.start("photography");
        await a.waitStatus(/Looking for someone…/);
        // Let the timer tick once so the screenshot shows how long.
        await a.page.waitForFunction(() => /0:0[1-9]/.test(document.getElementById("status-timer")?.textContent ?? ""), null, { timeout: patient(5000) });
        await screenshot(a.page, `waiting-${label}`);
        const b = await join(people, relay.url, `Sam-${label}`, { viewport, isMobile });
        await b.start("photography");
        await expectPaired(a, b);
        await a.page.getByLabel("Message", { exact: true }).fill("Hi Sam! 👋");
        await a.button("Send").click();
        await b.page.getByRole("log").getByText("Hi Sam! 👋").waitFor();
        await b.page.getByLabel("Message", { exact: true }).fill("Hey! Nice photo wall behind you.");
        await b.button("Send").click();
        await a.page.getByRole("log").getByText("Hey! Nice photo wall behind you.").waitFor();
        await a.until((s) => s.receive.video.framesDecoded > 20 && s.quality !== "unknown", "a settled call");
        await screenshot(a.page, `call-${label}`);
        // Phone: everything reachable by scrolling, nothing wider than the screen.
        const overflow = await a.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
        assert.ok(overflow <= 0, `${label} page is ${overflow}px wider than the viewport`);
        await a.button("Stop").click();
        await b.button("Stop").click();
      }
    });
  });
});

/**
 * A camera that draws wire/stamp.js pictures (frame number, checksum, and tiles that follow
 * from the number) 30 times a second, in place of the fake device's video; the microphone
 * stays the fake device's.
 * @param {import("playwright-core").Page} page
 */
async function useStampedCamera(page) {
  await page.addInitScript(() => {
    const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
    navigator.mediaDevices.getUserMedia = async (constraints) => {
      const stampModule = "/wire/stamp.js"; // served by the relay, next to the page
      /** @type {typeof import("../../web-client/app/wire/stamp.js")} */
      const { drawStamp } = await import(stampModule);
      const audio = constraints?.audio ? (await original({ audio: constraints.audio })).getAudioTracks() : [];
      if (!constraints?.video) return new MediaStream(audio);
      const canvas = document.createElement("canvas");
      canvas.width = 640;
      canvas.height = 480;
      const ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d"));
      let n = 0;
      drawStamp(ctx, 640, 480, n);
      setInterval(() => drawStamp(ctx, 640, 480, ++n), 33);
      return new MediaStream([...canvas.captureStream(30).getVideoTracks(), ...audio]);
    };
  });
}

/** @param {Person} p a page's media worker, once it has started */
async function mediaWorker(p) {
  const deadline = Date.now() + patient(10_000);
  for (;;) {
    const w = p.page.workers().find((x) => x.url().endsWith("/engine/worker.js"));
    if (w) return w;
    if (Date.now() > deadline) throw new Error(`${p.name}: no media worker`);
    await p.page.waitForTimeout(50);
  }
}

describe("the media engine", () => {
  // Only the receiving page is blocked: the sender's capture lives on its own page, which
  // keeps running. What counts is what reached the screen: the compositor's count of
  // presented frames (`requestVideoFrameCallback`'s `presentedFrames`), read just before
  // the block and at the first presentation after it, which the page's own thread cannot
  // fake while it spins. The worker's hand-overs during the block are printed beside it.
  test("a page whose main thread is blocked for 500 ms keeps showing the partner's video (the worker and the compositor do it)", async () => {
    await withRelay(async (relay, people) => {
      const ana = await join(people, relay.url, "Ana");
      const sam = await join(people, relay.url, "Sam");
      await ana.start();
      await sam.start();
      await expectPaired(ana, sam);
      await ana.until((s) => s.receive.video.framesPainted > 10, "Sam's video painted");
      const block = await ana.page.evaluate(async () => {
        const video = /** @type {HTMLVideoElement} */ (document.getElementById("partner-video"));
        /** @returns {Promise<number>} */
        const presented = () => new Promise((resolve) => video.requestVideoFrameCallback((_, m) => resolve(m.presentedFrames)));
        // First the same 500 ms with the thread free: how many frames this machine presents
        // right now (the sender may have stepped its frame rate down on a busy machine).
        const free = await presented();
        await new Promise((resolve) => setTimeout(resolve, 500));
        const freeCount = (await presented()) - free;
        const before = await presented();
        const from = performance.timeOrigin + performance.now();
        while (performance.timeOrigin + performance.now() - from < 500) {
          // A busy loop: nothing else runs on this thread meanwhile.
        }
        const to = performance.timeOrigin + performance.now();
        const after = await presented();
        return { from, to, presented: after - before, free: freeCount };
      });
      const s = await ana.snapshot();
      const handed = s.receive.paintTimes.filter((/** @type {number} */ t) => t > block.from && t < block.to).length;
      recordFigure("main_thread_blocked_500ms", { frames_presented_free_500ms: block.free, frames_presented_across_block: block.presented, frames_handed_over_during_block: handed });
      // A frozen picture presents one frame at most across the block (the one after it). A
      // picture that kept moving presents about what the same 500 ms presents with the thread
      // free; on a shared 2-core machine that rate varies (the sender steps its frame rate
      // down when busy), so the block is compared with the free window just before it, and
      // a third of it (at least two) is a picture that kept moving.
      const needed = Math.max(2, Math.floor(block.free / 3));
      assert.ok(block.free >= 2, `only ${block.free} partner frames reached the screen in 500 ms before the block`);
      assert.ok(block.presented >= needed, `only ${block.presented} partner frames reached the screen across the 500 ms block (${block.free} in the free 500 ms before it)`);
      assert.ok(handed >= 2, `the worker handed over ${handed} frames while the main thread was blocked`);
      // The snapshot comes from the worker: it also kept receiving and decoding.
      const after = s.receive.video.framesDecoded;
      await ana.until((x) => x.receive.video.framesDecoded > after + 5, "video still flowing after the block");
    });
  });

  // A sender on a CPU that cannot keep up: Ana's browser runs in a cgroup of its own and,
  // once the call is live, gets a fifth of a core. (DevTools' Emulation.setCPUThrottlingRate
  // slows only a page's main thread and refuses workers, and the media engine is in the
  // worker, so it cannot starve the sender; the cgroup slows every thread of the browser,
  // the encoder's included, as a weak machine does.) The sender must notice (its
  // encode-to-output time is the adaptation's signal), step down to a smaller picture or
  // fewer frames, say why ("cpu"), and Sam must keep getting pictures whose delay settles
  // instead of climbing.
  test("a sender whose CPU is throttled lowers resolution or frame rate, says cpu, and the partner's delay does not keep growing", async (t) => {
    const weak = await launchCpuLimitedBrowser();
    if ("unavailable" in weak) {
      t.skip(weak.unavailable);
      return;
    }
    try {
      await withRelay(async (relay, people) => {
        const ana = await join(people, relay.url, "Ana", { in: weak.browser });
        const sam = await join(people, relay.url, "Sam");
        await ana.start();
        await sam.start();
        await expectPaired(ana, sam);
        await sam.until((s) => s.receive.video?.framesPainted > 30, "Ana's video painted");
        // A busy machine may already have stepped down once while starting; the limit must
        // take it further.
        const calm = (await ana.snapshot()).send.video;
        weak.limit(0.2);
        // Stepped down means a smaller picture (the encoder is reconfigured at the next
        // camera frame) or, past the ladder's third step, fewer frames.
        const limited = await ana.until(
          (s) => s.send.video?.limitation === "cpu" && s.send.video.cpuStep > calm.cpuStep && (s.send.video.width < calm.width || s.send.video.cpuStep >= 3),
          `the sender to step down from step ${calm.cpuStep} (${calm.width}x${calm.height}) to a smaller picture or fewer frames, and report cpu`,
          40_000,
        );
        const step = limited.send.video;
        // Delay under the limit: the median of Sam's newest frames, then again after ten
        // more of Ana's frames were shown. Bounded growth, not a speed goal: a pipeline that
        // queues instead of dropping grows by the shortfall every second, without end.
        const first = await sam.until((s) => s.receive.latencyMs.recent !== null, "latency samples");
        const paintedAt = first.receive.video.framesPainted;
        const second = await sam.until((s) => s.receive.video.framesPainted > paintedAt + 10, "ten more of Ana's frames shown under the limit", 30_000);
        const [before, now] = [first.receive.latencyMs.recent, second.receive.latencyMs.recent];
        recordFigure("cpu_limited_sender", { cores: 0.2, from: `${calm.width}x${calm.height} step ${calm.cpuStep}`, to: `${step.width}x${step.height} step ${step.cpuStep}`, fps: step.fps, encode_ms: step.encodeMs, partner_latency_ms: [before, now] });
        assert.ok(now < Math.max(1000, before * 2), `Sam's delay grew from ${before} to ${now} ms under the limit`);
        weak.limit(null);
      });
    } finally {
      await weak.close();
    }
  });

  // The pages negotiate what this machine's pages use (on two or four cores, VP8). With
  // VP9 the check still fails on part of the frames even without loss (see issue 8's notes):
  // whether that is the checker or VP9's pictures is open.
  test("through the shaper with 5% loss, every frame shown is one the sender drew", async () => {
    await withRelay(async (relay, people) => {
      const shaper = await startImpair(relay.quic, process.env.DUET_LOSS_PROFILE ?? "lossy", 7);
      try {
        const ana = await join(people, relay.url, "Ana");
        await useStampedCamera(ana.page);
        await ana.page.reload();
        await ana.quicVia(shaper.port);
        const sam = await join(people, relay.url, "Sam");
        await ana.start();
        await sam.start();
        await expectPaired(ana, sam);
        await sam.page.evaluate(() => /** @type {any} */ (window).duet.inspectFrames(true));
        // Loss shows as frames asked for again (Nack) or given up; either way the picture stays
        // whole. Wait for the outcome of a loss (a resend arrives a round trip after its Nack).
        const handled = (/** @type {any} */ s) => s.receive.video.undecodable + s.receive.order.gapsRecovered + s.receive.reassembly.framesRepaired;
        await sam.until((s) => s.receive.video.inspected >= 150 && s.receive.order.nacks + s.receive.reassembly.framesLost > 0 && handled(s) > 0, "150 frames checked, with loss on the way repaired, resent or dropped", 60_000);
        const s = await sam.snapshot();
        const a = await ana.snapshot();
        recordFigure("lossy_stamped_frames", {
          checked: s.receive.video.inspected,
          not_the_senders: s.receive.video.inspectFailed,
          frames_lost: s.receive.reassembly.framesLost,
          undecodable_dropped: s.receive.video.undecodable,
          gaps_asked_again: s.receive.order.nacks,
          gaps_recovered: s.receive.order.gapsRecovered,
          datagrams_resent_by_ana: a.send.video.datagramsResent,
          parity_datagrams_sent_by_ana: a.send.video.parityDatagrams,
          frames_repaired_by_parity: s.receive.reassembly.framesRepaired,
          codec: s.receive.codec,
        });
        assert.equal(s.receive.video.inspectFailed, 0, `${s.receive.video.inspectFailed} of ${s.receive.video.inspected} frames shown were not a picture Ana drew`);
        assert.ok(handled(s) > 0, "lost frames were repaired, resent and decoded in order, or dropped with what depends on them");
      } finally {
        shaper.close();
      }
    });
  });

  test("a page that cannot decode VP9 is sent VP8; a codec that fails to decode is not chosen again for the next partner", async () => {
    await withRelay(async (relay, people) => {
      // Desktops with eight cores, which prefer VP9's compression (a weak machine would
      // choose VP8 first and never try VP9).
      const eightCores = () => Object.defineProperty(Navigator.prototype, "hardwareConcurrency", { get: () => 8 });
      const noVp9 = await join(people, relay.url, "Novp9");
      await noVp9.page.addInitScript(eightCores);
      await noVp9.page.addInitScript(() => {
        const probe = VideoDecoder.isConfigSupported.bind(VideoDecoder);
        // No VP9 (nor AV1 or H.264): VP8, the floor, is all this page decodes.
        VideoDecoder.isConfigSupported = async (config) => (/^(vp09|av01|avc1)/.test(config.codec) ? { supported: false, config } : probe(config));
      });
      await noVp9.page.reload();
      const ana = await join(people, relay.url, "Ana");
      await ana.page.addInitScript(eightCores);
      await ana.page.reload();
      await ana.start();
      await ana.waitStatus(/Looking for someone…/);
      // Ana's decoder fails on VP9 (as a broken hardware decoder would): patched in her worker.
      const worker = await mediaWorker(ana);
      await worker.evaluate(() => {
        const configure = VideoDecoder.prototype.configure;
        VideoDecoder.prototype.configure = function (/** @type {VideoDecoderConfig} */ config) {
          if (config.codec.startsWith("vp09")) throw new DOMException("VP9 decoding broke", "NotSupportedError");
          return configure.call(this, config);
        };
      });
      await noVp9.start();
      await expectPaired(ana, noVp9);
      const n = await noVp9.until((s) => s.receive.video.framesDecoded > 5, "Ana's video on the VP9-less page");
      assert.equal(n.caps.decode.includes("Vp9"), false);
      assert.equal(n.receive.codec, "vp8", "negotiation gave the VP9-less page VP8");
      assert.equal((await ana.snapshot()).send.codec, "vp8");
      // The other way Novp9 sends VP9 (Ana said she decodes it); Ana's decoder fails, she withdraws it.
      const a = await ana.until((s) => s.failedCodecs.includes("Vp9"), "VP9 marked failed on Ana's page");
      assert.equal(a.caps.decode.includes("Vp9"), false, "Caps no longer offers VP9");
      assert.equal(await ana.page.evaluate(() => localStorage.getItem("duet.failedCodecs")), "Vp9", "remembered for the next visit");
      const cho = await join(people, relay.url, "Cho");
      await cho.page.addInitScript(eightCores);
      await cho.page.reload();
      await cho.start();
      await cho.waitStatus(/Looking for someone…/);
      await ana.button("Next").click();
      await expectPaired(ana, cho);
      const c = await cho.until((s) => s.send.video?.framesEncoded > 5 && s.send.codec !== null, "Cho sending to Ana");
      assert.ok(!c.send.codec.startsWith("vp09"), `the failed codec is not chosen again (Cho sends ${c.send.codec})`);
      await ana.until((s) => s.receive.codec === c.send.codec && s.receive.video.framesPainted > 5, "Cho's video on Ana's page");
    });
  });

  test("audio frames reordered on the way are played in order", async () => {
    await withRelay(async (relay, people) => {
      const proxy = await startUdpProxy(relay.quic, { reorder: { every: 9, holdMs: 25 } });
      try {
        const ana = await join(people, relay.url, "Ana");
        await ana.quicVia(proxy.port);
        const sam = await join(people, relay.url, "Sam");
        await ana.start();
        await sam.start();
        await expectPaired(ana, sam);
        const s = await ana.until((x) => x.receive.reassembly.audioReordered >= 10 && x.receive.audio.framesPlayed >= 150, "reordered audio frames, and three seconds played", 30_000);
        recordFigure("audio_reordered", {
          reordered_on_arrival: s.receive.reassembly.audioReordered,
          played: s.receive.audio.framesPlayed,
          played_out_of_order: s.receive.audio.outOfOrder,
          late_for_playout: s.receive.audio.late,
          concealed: s.receive.audio.concealed,
          packets_held_back: proxy.reordered(),
        });
        assert.equal(s.receive.audio.outOfOrder, 0, "every frame played after the one before it");
        assert.ok(s.receive.audio.late < s.receive.reassembly.audioReordered, "reordered frames were played, not thrown away as late");
      } finally {
        proxy.close();
      }
    });
  });
});

test("the relay did not panic during any browser test (SIGTERM shutdown included)", () => {
  assert.deepEqual(relayPanics, []);
});

/** @param {number | null} x */
function round1(x) {
  return x === null ? null : Math.round(x * 10) / 10;
}
