// @ts-check
/**
 * @file The app as a person uses it, in headless Chromium against the real relay: Stop
 * while connecting sticks (the relay's `/status` agrees), the waiting spinner (turned in
 * steps, still with reduced motion), the whole flow by keyboard alone
 * with focus always on a visible control, the partner's volume and mute (the level heard,
 * measured in the page), Text only, the camera's light going out when it is turned off,
 * and every screen (desktop and phone, light and dark) checked by axe-core and saved as a
 * screenshot.
 */

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { DESKTOP, PHONE, Person, launchBrowser, patient, screenshot, startRelay, withRelay } from "./helpers.js";

const require = createRequire(new URL("../../web-client/package.json", import.meta.url));
const AXE_PATH = require.resolve("axe-core/axe.min.js");

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

/** @param {Person} a @param {Person} b */
async function expectPaired(a, b) {
  await a.until((s) => s.phase === "paired" && s.partnerName === b.name, `being paired with ${b.name}`);
  await b.until((s) => s.phase === "paired" && s.partnerName === a.name, `being paired with ${a.name}`);
}

/**
 * What has focus, as a person would see it: its accessible name (or text), and whether it
 * is a visible, enabled control (not the page itself).
 * @param {import("playwright-core").Page} page
 */
function focused(page) {
  return page.evaluate(() => {
    const el = /** @type {HTMLElement | null} */ (document.activeElement);
    if (!el || el === document.body) return { name: "(page)", ok: false };
    const labels = /** @type {any} */ (el).labels;
    const labelled = labels?.length ? labels[0].textContent : null;
    const name = (el.getAttribute("aria-label") ?? labelled ?? el.textContent ?? "").trim().replace(/\s+/g, " ");
    const disabled = "disabled" in el && /** @type {any} */ (el).disabled;
    return { name, ok: el.checkVisibility() && !disabled };
  });
}

/** @param {import("playwright-core").Page} page @param {string} where */
async function expectFocusVisible(page, where) {
  const f = await focused(page);
  assert.ok(f.ok, `${where}: focus is on ${f.name}, which is not a visible, enabled control`);
  return f.name;
}

/**
 * Presses Tab until the control named `name` has focus (at most 40 presses).
 * @param {import("playwright-core").Page} page @param {string | RegExp} name
 */
async function tabTo(page, name) {
  for (let i = 0; i < 40; i++) {
    const f = await focused(page);
    if (typeof name === "string" ? f.name === name : name.test(f.name)) return;
    await page.keyboard.press("Tab");
  }
  throw new Error(`Tab never reached ${name}`);
}

/**
 * Saves a screenshot of the page as it is, then runs axe-core over it.
 * @param {import("playwright-core").Page} page @param {string} name
 * @returns {Promise<string[]>} the serious and critical violations, one line each
 */
async function screenAndAxe(page, name) {
  await screenshot(page, name);
  await page.addScriptTag({ path: AXE_PATH });
  const result = await page.evaluate(async () => {
    const r = await /** @type {any} */ (window).axe.run(document, { resultTypes: ["violations"] });
    return r.violations
      .filter((/** @type {any} */ v) => v.impact === "serious" || v.impact === "critical")
      .map((/** @type {any} */ v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((/** @type {any} */ n) => n.target.join(" ")).slice(0, 3).join("; ")}`);
  });
  return result.map((/** @type {string} */ line) => `${name}: ${line}`);
}

describe("the app, as a person uses it", () => {
  test("Stop while connecting sticks: the person is not queued, and the relay's /status agrees", async () => {
    await withRelay(async (relay, people) => {
      // 1. Stop while the browser is still asking for the camera.
      const ana = await join(people, relay.url, "Ana", {
        beforeLoad: (page) =>
          page.addInitScript(() => {
            const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
            /** @type {any} */ (window).__cameraAsked = 0;
            navigator.mediaDevices.getUserMedia = async (c) => {
              /** @type {any} */ (window).__cameraAsked++;
              await new Promise((resolve) => {
                /** @type {any} */ (window).__releaseCamera = resolve;
              });
              return original(c);
            };
          }),
      });
      await ana.start();
      await ana.page.waitForFunction(() => /** @type {any} */ (window).__cameraAsked === 1);
      assert.equal((await ana.snapshot()).phase, "connecting");
      await ana.button("Stop").click();
      await ana.page.evaluate(() => /** @type {any} */ (window).__releaseCamera());
      // The camera that arrives after Stop is let go at once.
      await ana.until((s) => s.phase === "start" && !s.media.cameraLive, "Ana back on the first screen with no camera");

      // 2. Stop while the session is being set up (the relay's configuration held back).
      /** @type {(v?: unknown) => void} */
      let releaseConfig = () => {};
      const held = new Promise((resolve) => (releaseConfig = resolve));
      let configAsked = 0;
      const ben = await join(people, relay.url, "Ben", {
        beforeLoad: (page) =>
          page.context().route("**/config.json", async (route) => {
            configAsked++;
            await held;
            await route.continue();
          }),
      });
      await ben.start();
      await ben.page.waitForFunction(() => document.body.dataset.phase === "connecting");
      const deadline = Date.now() + patient(10_000);
      while (configAsked === 0 && Date.now() < deadline) await ben.page.waitForTimeout(20);
      assert.ok(configAsked > 0, "Ben's page asked for the relay's configuration");
      await ben.button("Stop").click();
      releaseConfig();
      await ben.until((s) => s.phase === "start", "Ben back on the first screen");

      // A third person is queued alone: nobody from the Stops reached the relay.
      const cy = await join(people, relay.url, "Cy");
      await cy.start();
      await cy.until((s) => s.phase === "waiting", "Cy in the queue");
      const status = await relay.status();
      assert.equal(status.sessions_opened, 1, `only Cy opened a session: ${JSON.stringify(status)}`);
      assert.equal(status.waiting, 1);
      assert.equal(status.pairs, 0);
      assert.equal((await ana.snapshot()).phase, "start");
      assert.equal((await ben.snapshot()).phase, "start");
    });
  });

  test("while someone waits, the spinner turns in steps with no CSS animation (the compositor is not kept drawing), and stands still with reduced motion", async () => {
    await withRelay(async (relay, people) => {
      const spinner = (/** @type {Person} */ p) =>
        p.page.evaluate(() => {
          const el = /** @type {HTMLElement} */ (document.getElementById("stage-spinner"));
          return { transform: getComputedStyle(el).transform, animations: el.getAnimations().length, visible: el.checkVisibility() };
        });
      const ana = await join(people, relay.url, "Ana");
      await ana.start();
      await ana.waitStatus(/Looking for someone…/);
      const first = await spinner(ana);
      assert.ok(first.visible, "the spinner shows while Ana waits");
      assert.equal(first.animations, 0, "no CSS animation runs on the spinner");
      // It turns: its transform changes, and changes again.
      for (let turns = 0, last = first.transform; turns < 2; turns++) {
        await ana.page.waitForFunction((was) => getComputedStyle(/** @type {HTMLElement} */ (document.getElementById("stage-spinner"))).transform !== was, last, { timeout: patient(5000) });
        last = (await spinner(ana)).transform;
      }

      // Ana stops, so Ben waits alone rather than meeting her.
      await ana.button("Stop").click();
      await ana.until((s) => s.phase === "start", "Ana back on the first screen");
      const ben = await join(people, relay.url, "Ben", { beforeLoad: (page) => page.emulateMedia({ reducedMotion: "reduce" }) });
      await ben.start();
      await ben.waitStatus(/Looking for someone…/);
      const still = await spinner(ben);
      // The status timer's next second: eight steps' worth of time has passed.
      const shown = await ben.page.evaluate(() => /** @type {HTMLElement} */ (document.getElementById("status-timer")).textContent);
      await ben.page.waitForFunction((was) => /** @type {HTMLElement} */ (document.getElementById("status-timer")).textContent !== was, shown, { timeout: patient(5000) });
      const later = await spinner(ben);
      assert.ok(later.visible, "the spinner shows while Ben waits");
      assert.equal(later.transform, still.transform, "with reduced motion the spinner stands still");
      assert.equal(later.transform, "none");
    });
  });

  test("keyboard only: Start, chat, Esc for Next, Report and its dialog, Stop; focus always on a visible control", async () => {
    await withRelay(async (relay, people) => {
      const ana = await join(people, relay.url, "Ana");
      const ben = await join(people, relay.url, "Ben");
      await ben.start();
      await ben.until((s) => s.phase === "waiting", "Ben in the queue");
      const k = ana.page.keyboard;

      // Start: name, the age box, Enter, by keyboard alone.
      await tabTo(ana.page, "Display name");
      await k.type("Ana");
      await tabTo(ana.page, "I am 18 or older and agree to the rules");
      await k.press("Space");
      await tabTo(ana.page, "Start");
      await k.press("Enter");
      await expectPaired(ana, ben);
      // A new partner: the message box has focus.
      assert.equal(await expectFocusVisible(ana.page, "after Matched"), "Message");

      // Chat: type and Enter.
      await k.type("hello from the keyboard");
      await k.press("Enter");
      await ben.page.getByRole("log").getByText("hello from the keyboard").waitFor();
      await expectFocusVisible(ana.page, "after sending");

      // Esc is Next: Ben is left, Ana waits with focus still on a control, then meets Cy.
      const cy = await join(people, relay.url, "Cy");
      await cy.start();
      await cy.until((s) => s.phase === "waiting", "Cy in the queue");
      await k.press("Escape");
      await ben.until((s) => s.phase !== "paired" || s.partnerName !== "Ana", "Ben told that Ana left");
      await expectFocusVisible(ana.page, "after Esc");
      await ana.until((s) => s.phase === "paired" && (s.partnerName === "Cy" || s.partnerName === "Ben"), "Ana paired again");
      await expectFocusVisible(ana.page, "after the next Matched");
      const partner = (await ana.snapshot()).partnerName;

      // Report by keyboard: the dialog opens, a reason by arrows, Send report by Enter.
      await tabTo(ana.page, "Report");
      await k.press("Enter");
      const dialog = ana.page.getByRole("dialog", { name: new RegExp(`Report ${partner}`) });
      await dialog.waitFor({ state: "visible" });
      await tabTo(ana.page, "Something else");
      await k.press("ArrowUp"); // "Looks under age"
      await tabTo(ana.page, "Send report");
      await k.press("Enter");
      await dialog.waitFor({ state: "hidden" });
      await ana.waitStatus(/was reported/);
      await expectFocusVisible(ana.page, "after the Report dialog");

      // Stop by keyboard: back to the first screen, focus on Start.
      await tabTo(ana.page, "Stop");
      await k.press("Enter");
      await ana.until((s) => s.phase === "start", "Ana on the first screen");
      assert.equal(await expectFocusVisible(ana.page, "after Stop"), "Start");
      const status = await relay.status();
      assert.equal(status.reports, 1, "the report reached the relay");
    });
  });

  test("the partner's volume and mute change what is heard (the level measured in the page)", async () => {
    await withRelay(async (relay, people) => {
      const ana = await join(people, relay.url, "Ana");
      const ben = await join(people, relay.url, "Ben");
      await ana.start();
      await ben.start();
      await expectPaired(ana, ben);
      await ana.until((s) => s.receive.audio.framesDecoded > 100, "Ben's sound playing");
      /** @returns {Promise<number>} */
      const level = () => ana.page.evaluate(() => /** @type {any} */ (window).duet.audioLevel(2500));
      const full = await level();
      assert.ok(full > 0.01, `Ben's sound is heard at full volume (level ${full})`);

      await ana.page.getByLabel("Partner volume").fill("20");
      const low = await level();
      assert.ok(low < full * 0.5, `volume 20%: level ${low} against ${full} at 100%`);
      assert.ok(low > 0, "still heard at 20%");

      await ana.button("Mute partner").click();
      assert.equal(await ana.button("Mute partner").getAttribute("aria-pressed"), "true");
      const muted = await level();
      assert.ok(muted < full * 0.02, `muted: level ${muted} against ${full}`);

      await ana.button("Mute partner").click();
      const back = await level();
      assert.ok(back > muted && back > full * 0.05, `unmuted at 20%: level ${back}`);
      // The person's choice is kept for the next visit.
      assert.deepEqual((await ana.snapshot()).partnerSound, { volume: 0.2, muted: false });
    });
  });

  test("Text only: two people pair and chat, no camera or microphone is asked for, no video either way", async () => {
    await withRelay(async (relay, people) => {
      const countAsks = (/** @type {import("playwright-core").Page} */ page) =>
        page.addInitScript(() => {
          const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
          /** @type {any} */ (window).__mediaAsked = 0;
          navigator.mediaDevices.getUserMedia = (c) => {
            /** @type {any} */ (window).__mediaAsked++;
            return original(c);
          };
        });
      const ana = await join(people, relay.url, "Ana", { beforeLoad: countAsks });
      const ben = await join(people, relay.url, "Ben", { beforeLoad: countAsks });
      await ana.start("", "Text only");
      await ben.start("", "Text only");
      await expectPaired(ana, ben);
      await ana.page.getByText("Text only — say hi to Ben in the chat").waitFor({ state: "visible" });
      await ana.page.getByLabel("Message", { exact: true }).fill("typing only 🙂");
      await ana.button("Send").click();
      await ben.page.getByRole("log").getByText("typing only 🙂").waitFor();
      await ben.page.getByLabel("Message", { exact: true }).fill("same here");
      await ben.button("Send").click();
      await ana.page.getByRole("log").getByText("same here").waitFor();
      for (const p of [ana, ben]) {
        assert.equal(await p.page.evaluate(() => /** @type {any} */ (window).__mediaAsked), 0, `${p.name}: no camera or microphone asked for`);
        const s = await p.snapshot();
        assert.equal(s.media.textOnly, true);
        assert.deepEqual(s.caps.encode, []);
        assert.equal(s.send.codec, null, `${p.name} sends no video`);
        assert.equal(s.receive.video?.framesDecoded ?? 0, 0, `${p.name} receives no video`);
      }

      // A video person meets a text-only one: they are told there is no video, and send none.
      await ben.button("Stop").click();
      const cy = await join(people, relay.url, "Cy");
      await cy.start();
      await expectPaired(ana, cy);
      await cy.page.getByText("No video from Ana — say hi in the chat").waitFor({ state: "visible" });
      assert.equal((await cy.snapshot()).send.codec, null, "no video is sent to a text-only person");
    });
  });

  test("when the partner leaves, the last chat stays to read: Stay here keeps it, Find someone new re-queues; typing is shown", async () => {
    await withRelay(async (relay, people) => {
      const ana = await join(people, relay.url, "Ana");
      const ben = await join(people, relay.url, "Ben");
      await ana.start();
      await ben.start();
      await expectPaired(ana, ben);

      // Typing: Ben sees it while Ana types, and it goes with her line.
      await ana.page.getByLabel("Message", { exact: true }).pressSequentially("see you", { delay: 20 });
      await ben.page.getByText("Ana is typing…").waitFor({ state: "visible" });
      await screenshot(ben.page, "ui-typing-desktop-light");
      await ana.page.keyboard.press("Enter");
      await ben.page.getByRole("log").getByText("see you").waitFor();
      await ben.page.getByText("Ana is typing…").waitFor({ state: "hidden" });

      // Ana presses Next. Ben keeps the chat, and is not in the queue.
      await ana.button("Next").click();
      await ben.page.getByText(/Ana left\. Finding someone new in \d s…/).waitFor({ state: "visible" });
      await ben.button("Stay here").click();
      await ben.page.getByText("Ana left. Press Find someone new when you're ready.").waitFor({ state: "visible" });
      assert.equal((await ben.snapshot()).phase, "left");
      // "Ana left" is a statement, not a wait: no spinner beside it.
      await ben.page.locator("#stage-overlay-text").getByText("Ana left").waitFor({ state: "visible" });
      assert.equal(await ben.page.locator("#stage-spinner").isVisible(), false, "no spinner beside 'Ana left'");
      await ben.page.getByRole("log").getByText("see you").waitFor({ state: "visible" });
      // Ana is queued alone: the relay left Ben idle.
      await ana.until((s) => s.phase === "waiting", "Ana in the queue");
      const status = await relay.status();
      assert.equal(status.waiting, 1, `only Ana waits: ${JSON.stringify({ waiting: status.waiting, pairs: status.pairs })}`);
      assert.equal(status.pairs, 0);
      assert.equal(await expectFocusVisible(ben.page, "after Stay here"), "Find someone new");
      assert.deepEqual(await screenAndAxe(ben.page, "ui-partner-left-desktop-light"), [], "accessibility problems");

      // A newcomer does not get Ben while he stays; Find someone new puts him back.
      const cy = await join(people, relay.url, "Cy");
      await cy.start();
      await expectPaired(ana, cy);
      await ben.button("Find someone new").click();
      await ben.until((s) => s.phase === "waiting", "Ben in the queue");
      const dan = await join(people, relay.url, "Dan");
      await dan.start();
      await expectPaired(ben, dan);

      // Without a choice, the page moves on by itself after its moment.
      await dan.button("Next").click();
      await ben.page.getByText(/Dan left\. Finding someone new in \d s…/).waitFor({ state: "visible" });
      await ben.until((s) => s.phase === "waiting", "Ben back in the queue by himself", 15_000);
    });
  });

  test("someone who refused the camera is offered the microphone alone, and their partner hears them", async () => {
    // No auto-accept: the camera is refused as a person's "Block" would; the microphone is allowed.
    const asking = await launchBrowser({ fakeUi: false });
    try {
      await withRelay(async (relay, people) => {
        const ana = await join(people, relay.url, "Ana");
        const voice = await Person.open(asking, relay.url, "Voice", {
          beforeLoad: (page) => page.context().grantPermissions(["microphone"], { origin: new URL(relay.url).origin }),
        });
        people.push(voice);
        const page = voice.page;
        await voice.start();
        await page.getByText(/refused/).waitFor({ state: "visible" });
        await voice.button("Use microphone only").click();
        await page.getByText("Microphone only: your partner hears you but doesn't see you.").waitFor({ state: "visible" });
        await voice.until((s) => s.media.audio && !s.media.video, "the microphone alone");
        await ana.start();
        await expectPaired(ana, voice);
        await ana.until((s) => s.receive.audio.framesDecoded > 50, "Voice's sound on Ana's page");
        assert.equal(await voice.button("Microphone").getAttribute("aria-pressed"), "true");
      });
    } finally {
      await asking.close();
    }
  });

  test("turning the camera off stops it (its light goes out) and the partner is told; on again, the picture returns", async () => {
    await withRelay(async (relay, people) => {
      const ana = await join(people, relay.url, "Ana");
      const ben = await join(people, relay.url, "Ben");
      await ana.start();
      await ben.start();
      await expectPaired(ana, ben);
      await ben.until((s) => s.receive.video.framesDecoded > 5, "Ana's video");
      assert.equal((await ana.snapshot()).media.cameraLive, true);
      await ana.page.keyboard.press("Control+E");
      await ana.until((s) => !s.media.cameraLive, "Ana's camera track stopped");
      assert.equal(await ana.button("Camera").getAttribute("aria-pressed"), "false");
      await ben.page.getByText("No video from Ana").waitFor({ state: "visible" });
      await ana.page.keyboard.press("Control+E");
      await ana.until((s) => s.media.cameraLive, "Ana's camera live again");
      const before = (await ben.snapshot()).receive.video.framesDecoded;
      await ben.until((s) => s.receive.video.framesDecoded > before + 10, "Ana's video again");
      await ben.page.getByText("No video from Ana").waitFor({ state: "hidden" });
      // The device picker lists the camera in use.
      await ana.page.getByText("Camera and microphone", { exact: true }).click();
      assert.ok((await ana.page.getByLabel("Camera device").locator("option").count()) >= 1);
    });
  });

  test("a browser without WebCodecs is told it can only chat by text and which browsers run Duet; Start is off, Text only works", async () => {
    await withRelay(async (relay, people) => {
      const old = await join(people, relay.url, "Old", {
        beforeLoad: (page) =>
          page.addInitScript(() => {
            // @ts-ignore: a browser without WebCodecs' video encoder
            delete window.VideoEncoder;
          }),
      });
      await old.page.getByText(/no WebCodecs, so you can only chat by text here.*recent Chrome, Edge and Firefox/).waitFor({ state: "visible" });
      assert.equal(await old.button("Start").isDisabled(), true);
      assert.equal(await old.button("Text only").isDisabled(), false);
      await old.start("", "Text only");
      await old.until((s) => s.phase === "waiting", "Old waiting, by text");
      assert.equal((await relay.status()).sessions, 1);
    });
  });

  test("every screen, desktop and phone, light and dark: no serious or critical accessibility problems (axe-core), and a screenshot of each", async () => {
    await withRelay(async (relay, people) => {
      /** A relay without the WebSocket fallback, for the error screen. */
      const bare = await startRelay(["--no-websocket"]);
      try {
        /** @type {string[]} */
        const problems = [];
        /** @param {Person} p @param {string} name */
        const check = async (p, name) => {
          problems.push(...(await screenAndAxe(p.page, name)));
        };
        for (const [label, viewport, isMobile] of /** @type {const} */ ([
          ["desktop", DESKTOP, false],
          ["phone", PHONE, true],
        ])) {
          for (const scheme of /** @type {const} */ (["dark", "light"])) {
            const tag = `${label}-${scheme}`;
            const emulate = (/** @type {import("playwright-core").Page} */ page) => page.emulateMedia({ colorScheme: scheme });
            const a = await join(people, relay.url, `Ana-${tag}`, { viewport, isMobile, beforeLoad: emulate });
            await a.page.getByText(/online now|Nobody is online/).waitFor();
            await check(a, `ui-start-${tag}`);
            await a.start("photography");
            await a.until((s) => s.phase === "waiting", "waiting");
            await check(a, `ui-waiting-${tag}`);
            const b = await join(people, relay.url, `Sam-${tag}`, { viewport, isMobile, beforeLoad: emulate });
            await b.start("photography");
            await expectPaired(a, b);
            await a.page.getByLabel("Message", { exact: true }).fill("Hi Sam!");
            await a.button("Send").click();
            await b.page.getByRole("log").getByText("Hi Sam!").waitFor();
            await a.until((s) => s.receive.video.framesDecoded > 10, "a live call");
            await check(a, `ui-call-${tag}`);
            await a.button("Report").click();
            await a.page.getByRole("dialog").waitFor({ state: "visible" });
            await check(a, `ui-report-${tag}`);
            await a.page.keyboard.press("Escape");
            await a.page.getByRole("dialog").waitFor({ state: "hidden" });
            await a.button("Stop").click();
            await b.button("Stop").click();
            // The error screen: a relay whose configuration cannot be had, and that serves no
            // WebSocket fallback (which would otherwise carry the call).
            const c = await join(people, bare.url, `Cy-${tag}`, {
              viewport,
              isMobile,
              beforeLoad: async (page) => {
                await emulate(page);
                await page.context().route("**/config.json", (route) => route.fulfill({ status: 503, body: "down" }));
              },
            });
            await c.start();
            await c.page.getByRole("button", { name: "Retry" }).waitFor({ state: "visible" });
            await check(c, `ui-error-${tag}`);
            for (const p of [a, b, c]) await p.close();
          }
        }
        assert.deepEqual(problems, [], "accessibility problems");
      } finally {
        await bare.stop();
      }
    });
  });
});
