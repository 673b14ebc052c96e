// @ts-check
/**
 * @file The page's end of the media worker (engine/worker.js): starts it, hands it the
 * partner canvas (as an OffscreenCanvas: the worker draws, this thread never touches a
 * frame), sends commands and turns the worker's messages into callbacks. Snapshots are
 * asked for and answered by id.
 */

/** @typedef {import("../engine/messages.js").ToWorker} ToWorker */
/** @typedef {import("../engine/messages.js").FromWorker} FromWorker */

/** Snapshot requests waiting for an answer (a test polls one at a time; a few allow overlap). */
const MAX_PENDING = 32;

export class Engine {
  /**
   * @param {HTMLCanvasElement} canvas the partner canvas; its control goes to the worker
   * @param {(msg: FromWorker) => void} onMessage
   */
  constructor(canvas, onMessage) {
    this.worker = new Worker(new URL("../engine/worker.js", import.meta.url), { type: "module", name: "duet-media" });
    this.onMessage = onMessage;
    this.nextId = 1;
    /** @type {Map<number, (value: any) => void>} */
    this.pending = new Map();
    this.worker.onmessage = (/** @type {MessageEvent<FromWorker>} */ ev) => this.receive(ev.data);
    /** The worker could not load or crashed: a new Engine (and a fresh canvas) is needed. */
    this.broken = false;
    this.worker.onerror = (ev) => {
      console.warn("duet: media worker failed", ev.message);
      this.broken = true;
      // Whatever was waiting for it will not be answered: say so instead of hanging.
      for (const resolve of this.pending.values()) resolve(null);
      this.pending.clear();
      this.onMessage({ type: "connectFailed", message: "The page's media engine could not start (the relay may have gone away while the page loaded). Reload the page." });
    };
    this.canvas = canvas.transferControlToOffscreen();
    this.initialized = false;
  }

  /** @param {MessagePort | null} playout */
  init(playout) {
    if (this.initialized) return;
    this.initialized = true;
    /** @type {Transferable[]} */
    const transfer = [this.canvas];
    if (playout) transfer.push(playout);
    this.post({ type: "init", canvas: this.canvas, playout }, transfer);
  }

  /** @param {ToWorker} msg @param {Transferable[]} [transfer] */
  post(msg, transfer = []) {
    this.worker.postMessage(msg, transfer);
  }

  /** @param {FromWorker} msg */
  receive(msg) {
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
