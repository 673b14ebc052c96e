// @ts-check
/**
 * @file The page's end of the media worker (engine/worker.js): starts it, hands it where
 * the partner's video is shown, sends commands and turns the worker's messages into
 * callbacks. Snapshots are asked for and answered by id.
 *
 * Where the browser has `MediaStreamTrackGenerator` (Chromium), the partner element is a
 * `<video>` showing a generated track whose writable end goes to the worker: decoded
 * frames reach the compositor as WebRTC's do, without this thread. Elsewhere the element
 * is swapped for a canvas whose control goes to the worker. Either way this thread never
 * touches a frame.
 */

/** @typedef {import("../engine/messages.js").ToWorker} ToWorker */
/** @typedef {import("../engine/messages.js").FromWorker} FromWorker */

import { audioClockOffsetMs } from "./audio-out.js";

/** How often the worker is told how the audio clock maps to the wall clock. */
const AUDIO_CLOCK_EVERY_MS = 2000;

/** Snapshot requests waiting for an answer (a test polls one at a time; a few allow overlap). */
const MAX_PENDING = 32;

export class Engine {
  /**
   * @param {HTMLVideoElement | HTMLCanvasElement} element the partner element in the page
   * @param {(msg: FromWorker) => void} onMessage
   */
  constructor(element, onMessage) {
    this.worker = new Worker(new URL("../engine/worker.js", import.meta.url), { type: "module", name: "duet-media" });
    this.onMessage = onMessage;
    this.nextId = 1;
    /** @type {Map<number, (value: any) => void>} */
    this.pending = new Map();
    /** @type {(trackProcessor: boolean) => void} */
    let told = () => {};
    /** Whether the worker can read a transferred camera track itself (Safari), once it has said. @type {Promise<boolean>} */
    this.workerTrackProcessor = new Promise((resolve) => (told = resolve));
    this.told = told;
    this.worker.onmessage = (/** @type {MessageEvent<FromWorker>} */ ev) => this.receive(ev.data);
    /** The worker could not load or crashed: a new Engine (and a fresh partner element) is needed. */
    this.broken = false;
    this.worker.onerror = (ev) => {
      console.warn("duet: media worker failed", ev.message);
      this.broken = true;
      clearInterval(this.clockTimer);
      // Whatever was waiting for it will not be answered: say so instead of hanging.
      for (const resolve of this.pending.values()) resolve(null);
      this.told(false);
      this.pending.clear();
      this.onMessage({ type: "connectFailed", message: "The page's media engine could not start (the relay may have gone away while the page loaded). Reload the page." });
    };
    const { element: shown, target, transfer } = displayFor(element);
    /** The partner element now in the page (a fresh one where the old could not be reused). */
    this.element = shown;
    /** @type {import("../engine/messages.js").DisplayTarget} */
    this.display = target;
    /** @type {Transferable[]} */
    this.displayTransfer = transfer;
    this.initialized = false;
    /** Tells the worker the audio clock's mapping, from `init` until the worker breaks. @type {ReturnType<typeof setInterval> | undefined} */
    this.clockTimer = undefined;
  }

  /**
   * @param {MessagePort | null} playout the audio worklet's port for the worker
   * @param {AudioContext | null} [audio] its context, whose clock the worker is told about
   */
  init(playout, audio = null) {
    if (this.initialized) return;
    this.initialized = true;
    /** @type {Transferable[]} */
    const transfer = [...this.displayTransfer];
    if (playout) transfer.push(playout);
    this.post({ type: "init", display: this.display, playout }, transfer);
    if (audio) {
      // The mapping drifts only with the two clocks' rates: a few times a minute is plenty.
      const tell = () => {
        const offsetMs = audioClockOffsetMs(audio);
        if (offsetMs !== null) this.post({ type: "audioClock", offsetMs });
      };
      tell();
      this.clockTimer = setInterval(tell, AUDIO_CLOCK_EVERY_MS);
    }
  }

  /** @param {ToWorker} msg @param {Transferable[]} [transfer] */
  post(msg, transfer = []) {
    this.worker.postMessage(msg, transfer);
  }

  /** @param {FromWorker} msg */
  receive(msg) {
    if (msg.type === "caps") {
      this.told(msg.trackProcessor);
      return;
    }
    if (msg.type === "snapshot" || msg.type === "chatResult") {
      const resolve = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      resolve?.(msg.type === "snapshot" ? msg.data : msg.error);
      return;
    }
    this.onMessage(msg);
  }

  /** @returns {Promise<any>} the worker's counters and timings */
  snapshot() {
    return this.request((id) => ({ type: "snapshot", id }));
  }

  /** @param {string} text @returns {Promise<string | null>} null when sent, else why not */
  chat(text) {
    return this.request((id) => ({ type: "chat", id, text }));
  }

  /** @param {(id: number) => ToWorker} make */
  request(make) {
    const id = this.nextId++;
    if (this.pending.size >= MAX_PENDING) {
      const oldest = this.pending.keys().next().value;
      if (oldest !== undefined) {
        this.pending.get(oldest)?.(null);
        this.pending.delete(oldest);
      }
    }
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.post(make(id));
    });
  }
}

/**
 * A fresh partner element, and what the worker draws into: a generated track shown by a
 * `<video>`, or a canvas's control. A canvas hands its control over only once and a track
 * ends with its worker, so each engine gets a new element in place of the old one.
 * @param {HTMLVideoElement | HTMLCanvasElement} old
 * @returns {{element: HTMLVideoElement | HTMLCanvasElement, target: import("../engine/messages.js").DisplayTarget, transfer: Transferable[]}}
 */
function displayFor(old) {
  const Generator = /** @type {any} */ (globalThis).MediaStreamTrackGenerator;
  /** @type {HTMLVideoElement | HTMLCanvasElement} */
  let element;
  if (typeof Generator === "function") {
    const video = document.createElement("video");
    video.autoplay = true;
    video.muted = true; // the partner's sound plays through the audio worklet
    video.playsInline = true;
    element = video;
  } else {
    const canvas = document.createElement("canvas");
    canvas.width = 640;
    canvas.height = 480;
    canvas.setAttribute("role", "img");
    element = canvas;
  }
  for (const name of ["id", "class", "aria-label"]) {
    const value = old.getAttribute(name);
    if (value !== null) element.setAttribute(name, value);
  }
  old.replaceWith(element);
  if (element instanceof HTMLVideoElement) {
    const track = new Generator({ kind: "video" });
    const attach = () => {
      element.srcObject = new MediaStream([track]);
      element.play().catch(() => {}); // muted: allowed; a refusal leaves autoplay to try
    };
    // A media element waiting for its first frame delays the page's load event, and this
    // track has none until a partner: attach it once the page has loaded.
    if (document.readyState === "complete") attach();
    else window.addEventListener("load", attach, { once: true });
    return { element, target: { kind: "track", writable: track.writable }, transfer: [track.writable] };
  }
  const canvas = element.transferControlToOffscreen();
  return { element, target: { kind: "canvas", canvas }, transfer: [canvas] };
}
