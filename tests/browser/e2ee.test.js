// @ts-check
/**
 * @file End-to-end encryption in real browsers (issue 13): headless Chromium pages with
 * fake cameras and microphones against the real relay binary, as duet.test.js runs them.
 *
 * What it shows: two pages paired agree keys and show the same safety code beside the
 * partner's name (emoji, with the words for a screen reader and, one tap away, the words
 * and the explanation); video and audio are decoded both ways and chat goes both ways, every
 * frame and line sealed and opened with none failing to open and no line in clear; after
 * Next with a third page the new partners agree new keys and both show a new, equal code.
 * A connection lost and resumed with its token keeps the pairing's keys: the same code,
 * and frames and lines still open. A key swapped in transit for an unusable one (here the
 * other page's own module is changed to send the zero point) is refused: the person is
 * told, nothing is shown, and what arrives sealed under keys they never agreed is dropped
 * and counted.
 *
 * Figures (`FIGURES {...}` lines, test-output/browser-figures.json): the mean cost of
 * sealing and opening a frame in the browser (µs, WebCrypto AES-256-GCM, at the call's
 * bitrate with Opus audio), and how long after `Matched` the keys were agreed.
 */

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Person, launchBrowser, recordFigure, screenshot, startUdpProxy, withRelay } from "./helpers.js";

/** @type {import("playwright-core").Browser} */
let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

/** @param {Person[]} people @param {string} url @param {string} name @param {Parameters<typeof Person.open>[3]} [options] */
const join = (people, url, name, options) => Person.join(browser, people, url, name, options);

/**
 * Waits until `a` and `b` are paired with each other with their keys agreed, checks both
 * show the same safety code beside the partner's name, and returns it.
 * @param {Person} a
 * @param {Person} b
 * @returns {Promise<{emoji: string, words: string}>}
 */
async function expectSecured(a, b) {
  for (const [me, them] of [
    [a, b],
    [b, a],
  ]) {
    await me.until((s) => s.phase === "paired" && s.partnerName === them.name && s.e2ee.state === "ready" && s.e2ee.shown !== null, `keys agreed with ${them.name}`);
  }
  const [sa, sb] = [await a.snapshot(), await b.snapshot()];
  assert.equal(sa.matchId, sb.matchId, "both pages are in the same pairing");
  const code = sa.e2ee.safetyCode;
  assert.ok(code, `${a.name} has a safety code`);
  assert.deepEqual(sb.e2ee.safetyCode, code, "the same safety code on both screens");
  assert.equal(code.words.split(" ").length, 4, `four words: ${code.words}`);
  assert.equal([...code.emoji].length, 4, `four emoji: ${code.emoji}`);
  for (const p of [a, b]) {
    const s = p === a ? sa : sb;
    assert.equal(s.e2ee.shown, `Safety code: ${code.words}`, `${p.name}'s page names the code in words`);
    // Beside the partner's name, visible, and read out as words (the emoji are hidden from screen readers).
    const summary = p.page.locator("#safety summary");
    await summary.waitFor({ state: "visible" });
    assert.equal(await p.page.locator("#safety-emoji").textContent(), code.emoji);
    assert.equal(await p.page.locator("#safety-emoji").getAttribute("aria-hidden"), "true");
    await p.page.locator("#partner-name", { hasText: p === a ? b.name : a.name }).waitFor({ state: "visible" });
  }
  return code;
}

/**
 * Sends a line from one page and waits for it on the other.
 * @param {Person} from @param {Person} to @param {string} text
 */
async function say(from, to, text) {
  await from.page.getByLabel("Message", { exact: true }).fill(text);
  await from.button("Send").click();
  await to.page.getByRole("log").getByText(text, { exact: true }).waitFor({ state: "visible" });
}

/** @param {any} s a snapshot @param {string} who */
function expectNothingUnopened(s, who) {
  assert.deepEqual(s.e2ee.unopened, { audio: 0, video: 0, chat: 0 }, `${who}: every frame and line opened`);
  assert.equal(s.e2ee.plainLinesDropped, 0, `${who}: no chat line came in clear`);
  assert.equal(s.e2ee.changedKeys, 0, `${who}: nobody tried to change the agreed key`);
}

describe("end-to-end encryption in the browser", () => {
  test("paired pages show the same safety code, see, hear and chat through sealed frames; Next brings new keys and a new code", async () => {
    await withRelay(async (relay, people) => {
      const ana = await join(people, relay.url, "Ana");
      const ben = await join(people, relay.url, "Ben");
      await ana.start();
      await ana.waitStatus(/Looking for someone…/);
      const waiting = await ana.snapshot();
      assert.equal(waiting.e2ee.state, "off", "no pairing, no keys");
      assert.equal(waiting.e2ee.shown, null, "no code shown while waiting");
      await ben.start();
      const first = await expectSecured(ana, ben);

      // Media both ways, every frame sealed by the sender and opened by the receiver.
      for (const p of [ana, ben]) {
        await p.until((s) => s.receive.video.framesDecoded >= 15 && s.receive.audio.framesDecoded >= 25, "partner video and audio decoded", 30_000);
      }
      await say(ana, ben, "hi Ben, is this private? 🔒");
      await say(ben, ana, "only if our codes match — ça va");
      const [sa, sb] = [await ana.snapshot(), await ben.snapshot()];
      for (const [s, who] of /** @type {[any, string][]} */ ([
        [sa, "Ana"],
        [sb, "Ben"],
      ])) {
        expectNothingUnopened(s, who);
        assert.ok(s.e2ee.sealed > 40 && s.e2ee.opened > 40, `${who} sealed ${s.e2ee.sealed} and opened ${s.e2ee.opened} frames`);
        assert.ok(s.e2ee.sealUs > 0 && s.e2ee.openUs > 0, `${who}: sealing and opening are timed`);
        assert.equal(s.receive.datagramsRejected, 0, `${who}: no malformed datagram`);
      }
      const status = await relay.status();
      assert.equal(status.chat_lines_forwarded, 2, "both lines went through the relay (sealed)");
      const m = sa.timeline.matches[0];
      recordFigure("e2ee_cost_per_frame_us", {
        note: "mean µs per frame, WebCrypto AES-256-GCM in the media worker (video and Opus audio together)",
        video: `${sa.send.video?.width}x${sa.send.video?.height} ${sa.send.codec}`,
        send_bitrate_kbps: sa.send.bitrateKbps,
        ana: { seal: sa.e2ee.sealUs, open: sa.e2ee.openUs, sealed: sa.e2ee.sealed, opened: sa.e2ee.opened },
        ben: { seal: sb.e2ee.sealUs, open: sb.e2ee.openUs, sealed: sb.e2ee.sealed, opened: sb.e2ee.opened },
        matched_to_keys_agreed_ms: Math.round(m.keysAgreedAt - m.matchedAt),
        matched_to_first_frame_ms: Math.round(m.firstFrameAt - m.matchedAt),
      });

      // The explanation is one click away, beside the code.
      await ana.page.locator("#safety summary").click();
      await ana.page.getByText("Compare this code with your partner: if it matches, nobody else can see or hear your call.").waitFor({ state: "visible" });
      await ana.page.getByText(`Safety code: ${first.words}`, { exact: true }).last().waitFor({ state: "visible" });
      await screenshot(ana.page, "e2ee-safety-code");

      // Next, with a third person waiting: new pairing, new keys, a new code on both new partners' screens.
      const cho = await join(people, relay.url, "Cho");
      await cho.start();
      await cho.waitStatus(/Looking for someone…/);
      await ana.button("Next").click();
      const second = await expectSecured(ana, cho);
      assert.notDeepEqual(second, first, "Next brings a new safety code");
      // Both had registered their next key with the relay while they waited or talked: each
      // got the other's in Matched, so no key had to cross the relay after the pairing.
      for (const p of [ana, cho]) {
        const t = (await p.snapshot()).timeline.matches.at(-1);
        assert.deepEqual(t.keysInMatched, { partner: true, ours: true }, `${p.name}: the keys came with Matched`);
      }
      await ben.until((s) => s.phase === "waiting" && s.e2ee.state === "off" && s.e2ee.shown === null, "Ben waiting, his code gone");
      for (const p of [ana, cho]) {
        await p.until((s) => s.receive.video.framesDecoded >= 10, "the new partner's video decoded", 30_000);
      }
      await say(cho, ana, "new keys, new code");
      await say(ana, cho, "same code here");
      for (const p of [ana, ben, cho]) expectNothingUnopened(await p.snapshot(), p.name);
      const sc = await cho.snapshot();
      assert.ok(sc.e2ee.opened > 10, `Cho opened ${sc.e2ee.opened} of Ana's frames`);
      await screenshot(cho.page, "e2ee-after-next");
    });
  });

  test("a lost connection resumed with its token keeps the pairing's keys: the same code, and everything still opens", async () => {
    await withRelay(
      async (relay, people) => {
        const proxy = await startUdpProxy(relay.quic);
        try {
          // Ana reaches the relay's QUIC port through the proxy, which can black out.
          const ana = await join(people, relay.url, "Ana");
          await ana.quicVia(proxy.port);
          const sam = await join(people, relay.url, "Sam");
          await ana.start();
          await sam.start();
          const code = await expectSecured(ana, sam);
          const matchId = (await ana.snapshot()).matchId;
          await sam.until((s) => s.receive.video.framesDecoded > 5, "Ana's video");

          proxy.blackout(true);
          await ana.waitStatus(/Connection lost — reconnecting…/, 15_000);
          proxy.blackout(false);
          await ana.until((s) => s.phase === "paired" && s.matchId === matchId, "Ana back with the same pairing", 30_000);
          assert.ok((await relay.status()).resumes >= 1, "the session was resumed, not opened anew");
          const [s0, a0] = [await sam.snapshot(), await ana.snapshot()];
          await sam.until((s) => s.receive.video.framesDecoded > s0.receive.video.framesDecoded + 10, "Ana's video after the resume");
          await ana.until((s) => s.receive.video.framesDecoded > a0.receive.video.framesDecoded + 10, "Sam's video after the resume");
          assert.deepEqual(await expectSecured(ana, sam), code, "the same keys, so the same code, after the resume");
          await say(ana, sam, "still just us?");
          await say(sam, ana, "same code, so yes");
          for (const p of [ana, sam]) expectNothingUnopened(await p.snapshot(), p.name);
        } finally {
          proxy.close();
        }
      },
      // A short QUIC idle timeout, so a blackout of a few seconds really kills the connection.
      ["--idle-timeout-ms", "2000"],
    );
  });

  test("a key swapped for an unusable one is refused: the person is told, and nothing sealed under other keys is shown", async () => {
    await withRelay(async (relay, people) => {
      // Mallory's page sends the zero point as its public key (what a relay swapping keys
      // badly would deliver); its own worker loads this changed module.
      const mallory = await join(people, relay.url, "Mallory", {
        beforeLoad: (page) =>
          page.context().route("**/wire/e2ee.js", async (route) => {
            const res = await route.fetch();
            const body = await res.text();
            const honest = 'const pub = new Uint8Array(await s.exportKey("raw", pair.publicKey));';
            assert.ok(body.includes(honest), "the module still makes its public key the way this test changes");
            await route.fulfill({ response: res, body: body.replace(honest, "const pub = new Uint8Array(32);") });
          }),
      });
      const ana = await join(people, relay.url, "Ana");
      await mallory.start();
      await mallory.waitStatus(/Looking for someone…/);
      await ana.start();
      await ana.until((s) => s.phase === "paired" && s.partnerName === "Mallory", "Ana paired with Mallory");
      await ana.page.getByRole("log").getByText(/Your partner's encryption key was refused/).waitFor({ state: "visible" });
      // Mallory's own side took Ana's honest key and seals its frames: they reach Ana, who
      // has no keys for this pairing, and are dropped and counted, never decoded.
      const s = await ana.until((x) => x.e2ee.dropped + x.e2ee.unopened.video + x.e2ee.unopened.audio > 0, "Mallory's frames dropped unopened", 20_000);
      assert.equal(s.e2ee.state, "waiting", "no keys agreed with a refused key");
      assert.equal(s.e2ee.safetyCode, null, "no safety code");
      assert.equal(s.e2ee.shown, null, "no safety code shown");
      assert.equal(s.receive.video?.framesDecoded ?? 0, 0, "nothing of Mallory's video decoded");
      assert.equal(s.receive.audio?.framesDecoded ?? 0, 0, "nothing of Mallory's sound decoded");
      assert.equal(s.e2ee.sealed, 0, "Ana sealed nothing for a partner whose key was refused");
      const m = await mallory.snapshot();
      assert.equal(m.receive.video?.framesDecoded ?? 0, 0, "Ana sent Mallory nothing to decode");
      // Chat to Mallory is refused on Ana's page, with a reason.
      await ana.page.getByLabel("Message", { exact: true }).fill("anyone there?");
      await ana.button("Send").click();
      await ana.page.getByRole("alert").filter({ hasText: /Message not sent: your partner's encryption key was refused/ }).waitFor({ state: "visible" });
      // Next leaves it behind: a new pairing starts clean.
      const cho = await join(people, relay.url, "Cho");
      await cho.start();
      await cho.waitStatus(/Looking for someone…/);
      await ana.button("Next").click();
      await expectSecured(ana, cho);
      await cho.until((x) => x.receive.video.framesDecoded >= 10, "Ana's video on Cho's page", 30_000);
      await screenshot(ana.page, "e2ee-after-refused-key");
    });
  });
});
