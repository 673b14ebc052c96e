// @ts-check
/**
 * @file Test helper: stand-ins for the browser's `WebSocket`, `WebTransport` and `fetch`
 * (for the relay's /config.json), installed on `globalThis` so the engine's sessions
 * (engine/ws-session.js, engine/session.js) and the transport race (engine/transport.js)
 * run under Node. Each fake records what the page sent and lets a test decide when the
 * network answers.
 */

import { PROTOCOL_VERSION } from "../app/wire/protocol.js";

/** @type {any} */
const g = globalThis;

/** A Hello as the page sends it. @type {import("../app/wire/protocol.js").Hello} */
export const HELLO = {
  version: PROTOCOL_VERSION,
  name: "Ana",
  interests: ["chess"],
  resume: null,
  visitor: null,
  media: { decode: ["Vp8"], encode: ["Vp8"], hardware_encode: [] },
};

/**
 * A WebSocket whose handshake and messages the test drives. `mode` says what a new one
 * does by itself: "open" opens on the next turn of the event loop, "fail" fails its
 * handshake then, "manual" waits for `accept()` or `fail()`.
 */
export class FakeWebSocket {
  /** @type {FakeWebSocket[]} */
  static instances = [];
  /** @type {"open" | "fail" | "manual"} */
  static mode = "manual";
  /** Called with each new socket (a test waits on it). @type {((ws: FakeWebSocket) => void) | null} */
  static onCreated = null;

  /** @param {string} url */
  constructor(url) {
    this.url = url;
    this.binaryType = "blob";
    this.bufferedAmount = 0;
    this.readyState = 0;
    /** Every message sent, copied. @type {Uint8Array[]} */
    this.sent = [];
    /** @type {{code: number | undefined, reason: string | undefined} | null} */
    this.closedWith = null;
    /** @type {((ev: any) => void) | null} */
    this.onopen = null;
    /** @type {((ev: any) => void) | null} */
    this.onmessage = null;
    /** @type {((ev: any) => void) | null} */
    this.onerror = null;
    /** @type {((ev: any) => void) | null} */
    this.onclose = null;
    this.createdAt = performance.now();
    FakeWebSocket.instances.push(this);
    const mode = FakeWebSocket.mode;
    if (mode === "open") setTimeout(() => this.accept(), 0);
    if (mode === "fail") setTimeout(() => this.fail(), 0);
    FakeWebSocket.onCreated?.(this);
  }

  /** @param {Uint8Array} data */
  send(data) {
    if (this.readyState !== 1) throw new Error("InvalidStateError: not open");
    this.sent.push(Uint8Array.from(data));
  }

  /** @param {number} [code] @param {string} [reason] */
  close(code, reason) {
    if (this.closedWith) return;
    this.closedWith = { code, reason };
    const was = this.readyState;
    this.readyState = 3;
    // As in a browser, the close event comes later, with the code this side sent.
    if (was <= 1) setTimeout(() => this.onclose?.({ code: code ?? 1005, reason: reason ?? "" }), 0);
  }

  /** The handshake succeeds. */
  accept() {
    if (this.readyState !== 0) return;
    this.readyState = 1;
    this.onopen?.({});
  }

  /** The handshake fails (a browser says nothing more than this). */
  fail() {
    if (this.readyState !== 0) return;
    this.readyState = 3;
    this.onerror?.({});
    this.onclose?.({ code: 1006, reason: "" });
  }

  /** A message from the relay. @param {ArrayBuffer | string} data */
  deliver(data) {
    this.onmessage?.({ data });
  }

  /** The relay closes the socket (or the connection dies). @param {number} code @param {string} [reason] */
  remoteClose(code, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
}

/**
 * A WebTransport whose handshake the test drives: `mode` "ready" is up at once, "fail"
 * fails at once, "never" (or "manual") waits for `becomeReady()` or `fail()`.
 */
export class FakeWebTransport {
  /** @type {FakeWebTransport[]} */
  static instances = [];
  /** @type {"ready" | "fail" | "never"} */
  static mode = "ready";

  /** @param {string} url @param {any} options */
  constructor(url, options) {
    this.url = url;
    this.options = options;
    /** @type {any[]} */
    this.closeCalls = [];
    /** Bytes written on the control stream. @type {Uint8Array[]} */
    this.controlWritten = [];
    this.bidiStreams = 0;
    /** @type {(v?: any) => void} */
    let resolveReady = () => {};
    /** @type {(e: Error) => void} */
    let rejectReady = () => {};
    this.ready = new Promise((resolve, reject) => {
      resolveReady = resolve;
      rejectReady = reject;
    });
    this.ready.catch(() => {});
    this.becomeReady = resolveReady;
    /** @param {Error} e */
    this.fail = (e) => rejectReady(e);
    /** @type {(info: any) => void} */
    let resolveClosed = () => {};
    this.closed = new Promise((resolve) => {
      resolveClosed = resolve;
    });
    this.resolveClosed = resolveClosed;
    this.datagrams = {
      maxDatagramSize: 1200,
      incomingHighWaterMark: 0,
      readable: new ReadableStream(),
      writable: new WritableStream(),
    };
    this.incomingUnidirectionalStreams = new ReadableStream();
    FakeWebTransport.instances.push(this);
    if (FakeWebTransport.mode === "ready") this.becomeReady();
    if (FakeWebTransport.mode === "fail") this.fail(new Error("connection refused"));
  }

  async createBidirectionalStream() {
    this.bidiStreams++;
    const written = this.controlWritten;
    return {
      readable: new ReadableStream(),
      writable: new WritableStream({
        write(/** @type {Uint8Array} */ chunk) {
          written.push(Uint8Array.from(chunk));
        },
      }),
    };
  }

  /** @param {any} [info] */
  close(info) {
    this.closeCalls.push(info);
    this.fail(new Error("closed"));
    this.resolveClosed({ closeCode: info?.closeCode ?? 0, reason: info?.reason ?? "" });
  }
}

/** The paths the fake fetch was asked for since `installFakes`. @type {string[]} */
export const fetched = [];

/**
 * Installs the fakes (and a fetch that serves /config.json), resetting their records.
 * @param {{webTransport?: boolean}} [options] webTransport: false leaves this "browser" without it
 */
export function installFakes({ webTransport = true } = {}) {
  FakeWebSocket.instances = [];
  FakeWebSocket.mode = "manual";
  FakeWebSocket.onCreated = null;
  FakeWebTransport.instances = [];
  FakeWebTransport.mode = "ready";
  g.WebSocket = FakeWebSocket;
  if (webTransport) g.WebTransport = FakeWebTransport;
  else delete g.WebTransport;
  fetched.length = 0;
  g.fetch = async (/** @type {string | URL} */ url) => {
    const path = new URL(url).pathname;
    fetched.push(path);
    if (path === "/config.json") {
      return new Response(JSON.stringify({ quic_port: 4433, path: "/chat", certificate_sha256: null, protocol_version: PROTOCOL_VERSION }), { status: 200 });
    }
    return new Response("not found", { status: 404 });
  };
}

/** Lets pending promise callbacks and zero-delay timers run. */
export function settle() {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/**
 * The next WebSocket the code under test creates.
 * @param {number} [timeoutMs]
 * @returns {Promise<FakeWebSocket>}
 */
export function nextWebSocket(timeoutMs = 2000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no WebSocket was opened")), timeoutMs);
    FakeWebSocket.onCreated = (ws) => {
      clearTimeout(timer);
      FakeWebSocket.onCreated = null;
      resolve(ws);
    };
  });
}
