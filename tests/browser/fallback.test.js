// @ts-check
/**
 * @file The WebSocket fallback in headless Chromium against the real relay: a page whose
 * browser has no WebTransport (deleted from the page, which then tells its media worker to
 * use the WebSocket alone; the worker's own detection is a unit test), and a page on a
 * network that drops UDP (its WebTransport handshake goes to a socket that answers
 * nothing), each reach the relay over a WebSocket, pair with a page on
 * WebTransport, see and hear each other, chat both ways, and Next re-pairs; the page says
 * why the call may be slower, and the first screen says what such a browser gets.
 */

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { Person, expectMovingPicture, launchBrowser, withRelay } from "./helpers.js";

/** @type {import("playwright-core").Browser} */
let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

/**
 * A network that drops UDP: the page is told the relay's QUIC port is one where a socket
 * reads nothing, so WebTransport's handshake packets vanish as on a network that blocks
 * UDP. (The WebSocket goes to the page's own origin, which the routed `/config.json` does
 * not change.)
 * @param {import("playwright-core").Page} page
 * @returns {Promise<() => void>} closes the silent socket
 */
async function dropUdp(page) {
  const silent = dgram.createSocket("udp4");
  await new Promise((resolve) => silent.bind(0, "127.0.0.1", () => resolve(undefined)));
  const port = silent.address().port;
  await page.route("**/config.json", async (route) => {
    const res = await route.fetch();
    const config = { ...(await res.json()), quic_port: port };
    await route.fulfill({ response: res, json: config });
  });
  return () => silent.close();
}

/** @param {Person} a @param {Person} b */
async function expectPaired(a, b) {
  await a.until((s) => s.phase === "paired" && s.partnerName === b.name, `being paired with ${b.name}`);
  await b.until((s) => s.phase === "paired" && s.partnerName === a.name, `being paired with ${a.name}`);
}

/** @param {Person} from @param {Person} to @param {string} text */
async function chat(from, to, text) {
  await from.page.getByLabel("Message", { exact: true }).fill(text);
  await from.button("Send").click();
  await to.page.getByRole("log").getByText(text).waitFor();
}

/**
 * A WebSocket page and a WebTransport page: paired, live video and sound both ways, chat
 * both ways, and the notes a person sees.
 * @param {Person} tcp @param {Person} udp
 */
async function callAcrossTransports(tcp, udp) {
  await tcp.start();
  await udp.start();
  await expectPaired(tcp, udp);
  assert.equal((await tcp.snapshot()).transport, "websocket");
  assert.equal((await udp.snapshot()).transport, "webtransport");
  await tcp.page.getByText(/Connected over WebSocket \(TCP\).*may lag/).waitFor({ state: "visible" });
  assert.equal(await udp.page.getByText(/Connected over WebSocket/).isVisible(), false, "the WebTransport page shows no fallback note");
  for (const p of [tcp, udp]) {
    await p.until((s) => s.receive.video.framesDecoded > 5 && s.receive.audio.framesDecoded > 25, "the partner's video and sound");
    const moving = await expectMovingPicture(p);
    assert.ok(moving.width >= 160, `partner video on ${p.name}'s page is ${moving.width} wide`);
  }
  await chat(tcp, udp, "hello over TCP");
  await chat(udp, tcp, "hello over UDP");
}

describe("the WebSocket fallback", () => {
  test("a browser without WebTransport is told what it gets, connects over WebSocket, and calls a WebTransport page both ways; Next re-pairs", async () => {
    await withRelay(async (relay, people) => {
      const oldPage = await Person.open(browser, relay.url, "Tess", {
        beforeLoad: (page) =>
          page.addInitScript(() => {
            // @ts-ignore: a browser without WebTransport
            delete window.WebTransport;
          }),
      });
      people.push(oldPage);
      await oldPage.page.getByText(/no WebTransport: Duet will connect over WebSocket \(TCP\)/).waitFor({ state: "visible" });
      assert.equal(await oldPage.button("Start").isDisabled(), false);
      const quic = await Person.open(browser, relay.url, "Quin");
      people.push(quic);
      await callAcrossTransports(oldPage, quic);

      // Next from the WebSocket side: it meets the one waiting and sees their video.
      const third = await Person.open(browser, relay.url, "Trey");
      people.push(third);
      await third.start();
      await third.until((s) => s.phase === "waiting", "Trey in the queue");
      await oldPage.page.locator("#next").click();
      await expectPaired(oldPage, third);
      const painted = (await oldPage.snapshot()).receive.video.framesPainted;
      await oldPage.until((s) => s.receive.video.framesPainted > painted + 10, "Trey's video on the WebSocket page");
      const theirs = (await third.snapshot()).receive.video.framesPainted;
      await third.until((s) => s.receive.video.framesPainted > theirs + 10, "the WebSocket page's video on Trey's");
      const status = await relay.status();
      assert.ok(status.datagrams_forwarded > 0, "the relay forwarded media");
    });
  });

  test("a network that drops UDP falls back to WebSocket after WebTransport's head start, and the call works both ways", async () => {
    await withRelay(async (relay, people) => {
      /** @type {() => void} */
      let unblock = () => {};
      const blocked = await Person.open(browser, relay.url, "Uma", {
        beforeLoad: async (page) => {
          unblock = await dropUdp(page);
        },
      });
      people.push(blocked);
      const open = await Person.open(browser, relay.url, "Ola");
      people.push(open);
      await callAcrossTransports(blocked, open);
      // One session each at the relay: the WebTransport attempt that never connected
      // opened none, and nothing was left behind.
      const status = await relay.status();
      assert.equal(status.sessions, 2, `sessions at the relay: ${JSON.stringify(status.sessions)}`);
      unblock();
    });
  });
});
