// @ts-check
/**
 * @file The WebTransport session to the relay: finding it (`/config.json`, and the
 * development certificate's fingerprint from `/certificate.sha256`), the control stream
 * (`ClientMsg` up, `ServerMsg` down, 2-byte length-prefixed postcard frames), the chat
 * streams (one unidirectional stream per pairing and direction, opened by
 * `ChatFrame::Open`), and media datagrams. Chat lines pass through as frames (`Sealed`, end
 * to end encrypted, or `Line`): opening them, and refusing lines in clear, is the
 * worker's (engine/pairing-crypto.js), which holds the pairing's keys.
 *
 * Everything the relay sends is treated as untrusted: frames are size-checked before they
 * are buffered, decode failures end the session with a message a person can read, the
 * number of chat streams read at once is capped, and a chat stream for any pairing but the
 * current one is cancelled. Nothing here throws into the page: failures arrive through
 * `onClosed` with a `reason` in words.
 */

import {
  ERROR_CODES,
  FrameReader,
  MAX_MEDIA_DATAGRAM_BYTES,
  PROTOCOL_VERSION,
  SESSION_PATH,
  decodeChatFrame,
  decodeServerMsg,
  encodeChatFrame,
  encodeClientMsg,
  encodeFrame,
  errorCodeName,
} from "../wire/protocol.js";
import { fromHex } from "../wire/postcard.js";

/** @typedef {import("../wire/protocol.js").ClientMsg} ClientMsg */
/** @typedef {import("../wire/protocol.js").ServerMsg} ServerMsg */
/** A chat frame that carries a line. @typedef {Exclude<import("../wire/protocol.js").ChatFrame, {type: "Open"}>} ChatLine */

/** How long to wait for the relay's web server and for the QUIC handshake. */
const FETCH_TIMEOUT_MS = 5000;
const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Chat streams read at once: one per pairing is normal, a few allow for a quick Next. */
const MAX_CHAT_STREAMS = 4;
/** How long a chat stream for a pairing we have not heard of yet may wait for its `Matched` (the streams race). */
const CHAT_OPEN_WAIT_MS = 3000;
/** Datagrams handed to the browser and not yet taken by it, before we drop instead of adding delay (a big keyframe is ~40). */
const DATAGRAM_HIGH_WATER = 128;

/**
 * @typedef {object} RelayConfig what `/config.json` says
 * @property {number} quic_port
 * @property {string} path
 * @property {string | null} certificate_sha256
 * @property {number} protocol_version
 */

/**
 * @typedef {object} CloseInfo
 * @property {string} reason what happened, for a person
 * @property {number | null} code the relay's error code (close code or fatal `Error`), if any
 * @property {boolean} byUs the page closed the session itself
 */

/** A failure to connect, with a message for a person. */
export class ConnectError extends Error {
  /**
   * @param {string} message
   * @param {"http" | "handshake" | "version"} stage
   * @param {string} [detail] the short why ("timed out"), for a message that names two attempts
   */
  constructor(message, stage, detail) {
    super(message);
    this.name = "ConnectError";
    this.stage = stage;
    this.detail = detail ?? message;
  }
}

/** @param {string | URL} url @returns {Promise<Response>} */
async function fetchWithTimeout(url) {
  return fetch(url, { cache: "no-store", signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
}

/**
 * Reads and checks `/config.json` (untrusted like everything else).
 * @param {URL} base the page's own URL
 * @returns {Promise<RelayConfig>}
 */
export async function fetchConfig(base) {
  let res;
  try {
    res = await fetchWithTimeout(new URL("/config.json", base));
  } catch (e) {
    throw new ConnectError(`The relay's web server did not answer (${describe(e)}).`, "http");
  }
  if (!res.ok) throw new ConnectError(`The relay's web server answered ${res.status} for /config.json.`, "http");
  /** @type {any} */
  let raw;
  try {
    raw = await res.json();
  } catch {
    throw new ConnectError("The relay's /config.json is not valid JSON.", "http");
  }
  const port = raw?.quic_port;
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new ConnectError("The relay's /config.json has no valid quic_port.", "http");
  const path = typeof raw.path === "string" && raw.path.startsWith("/") && raw.path.length < 256 ? raw.path : SESSION_PATH;
  const hash = typeof raw.certificate_sha256 === "string" && /^[0-9a-fA-F]{64}$/.test(raw.certificate_sha256) ? raw.certificate_sha256 : null;
  const version = Number.isInteger(raw.protocol_version) ? raw.protocol_version : PROTOCOL_VERSION;
  if (version !== PROTOCOL_VERSION) {
    throw new ConnectError(`The relay speaks protocol version ${version}; this page speaks ${PROTOCOL_VERSION}. Reload the page.`, "version");
  }
  return { quic_port: port, path, certificate_sha256: hash, protocol_version: version };
}

/**
 * The development certificate's SHA-256, if the relay uses one: `/certificate.sha256`
 * holds it as hex. A relay with a real certificate has none (404), and none is needed.
 * @param {URL} base
 * @param {RelayConfig} config
 * @returns {Promise<Uint8Array<ArrayBuffer> | null>}
 */
export async function fetchCertificateHash(base, config) {
  if (config.certificate_sha256) return fromHex(config.certificate_sha256);
  try {
    const res = await fetchWithTimeout(new URL("/certificate.sha256", base));
    if (!res.ok) return null;
    const text = (await res.text()).trim();
    return /^[0-9a-fA-F]{64}$/.test(text) ? fromHex(text) : null;
  } catch {
    return null;
  }
}

/** @param {unknown} e @returns {string} */
export function describe(e) {
  if (e instanceof Error) return e.message || e.name;
  return String(e);
}

/** Words for a relay error code, used when only a close code arrives. @param {number} code */
export function describeErrorCode(code) {
  switch (code) {
    case ERROR_CODES.server_full:
      return "The relay is full right now. Try again in a minute.";
    case ERROR_CODES.too_many_from_address:
      return "Too many sessions from your network. Close another Duet tab and try again.";
    case ERROR_CODES.unsupported_version:
      return "This page is older than the relay. Reload the page.";
    case ERROR_CODES.idle_timeout:
      return "You were idle for a while, so the relay closed the session.";
    case ERROR_CODES.shutting_down:
      return "The relay is restarting.";
    case ERROR_CODES.hello_timeout:
      return "The relay did not hear from this page in time.";
    case ERROR_CODES.bad_resume_token:
      return "The previous session could not be resumed.";
    default:
      return `The relay ended the session (${errorCodeName(code)}).`;
  }
}

/**
 * Waits (at most CHAT_OPEN_WAIT_MS) until `matchId` is `session`'s current pairing; false
 * if it never became so or the session closed. Both transports' sessions use it: chat for a
 * new partner can arrive before the `Matched` that announces them. The session calls every
 * function in `matchWaiters` when its pairing changes or it closes.
 * @param {{matchId: bigint | null, closed: boolean, matchWaiters: Set<() => void>}} session
 * @param {bigint} matchId
 * @returns {Promise<boolean>}
 */
export function untilMatch(session, matchId) {
  if (session.matchId === matchId) return Promise.resolve(true);
  return new Promise((resolve) => {
    const wake = () => {
      if (session.matchId === matchId || session.closed) finish();
    };
    const finish = () => {
      clearTimeout(timer);
      session.matchWaiters.delete(wake);
      resolve(session.matchId === matchId && !session.closed);
    };
    const timer = setTimeout(finish, CHAT_OPEN_WAIT_MS);
    session.matchWaiters.add(wake);
  });
}

/**
 * One WebTransport session with the relay. Create, `connect()` (or `open()` then
 * `start()`), and use until `onClosed` fires. engine/ws-session.js is the same interface
 * over a WebSocket.
 */
export class RelaySession {
  /**
   * @param {object} handlers
   * @param {(msg: ServerMsg) => void} handlers.onMessage a control message from the relay
   * @param {(matchId: bigint, frame: ChatLine) => void} handlers.onChatFrame a chat line (sealed or not) from the current partner
   * @param {(datagram: Uint8Array) => void} handlers.onDatagram a media datagram
   * @param {(info: CloseInfo) => void} handlers.onClosed the session ended (once)
   */
  constructor(handlers) {
    this.handlers = handlers;
    /** @type {WebTransport | null} */
    this.wt = null;
    /** @type {WritableStreamDefaultWriter<Uint8Array> | null} */
    this.control = null;
    /** @type {WritableStreamDefaultWriter<Uint8Array> | null} */
    this.datagramWriter = null;
    this.maxDatagramSize = MAX_MEDIA_DATAGRAM_BYTES;
    this.closed = false;
    /** The fatal error the relay announced before closing, if any. @type {{code: number, message: string} | null} */
    this.fatal = null;
    /** The pairing chat belongs to now. @type {bigint | null} */
    this.matchId = null;
    /** @type {{matchId: bigint, writer: Promise<WritableStreamDefaultWriter<Uint8Array>>} | null} */
    this.chatOut = null;
    this.chatStreamsOpen = 0;
    /** @type {Set<() => void>} */
    this.matchWaiters = new Set();
    this.datagramsDropped = 0;
    this.datagramsInFlight = 0;
    this.datagramsSent = 0;
    this.url = "";
    /** Which transport this is (the page says when it is not this one). @type {"webtransport"} */
    this.transport = "webtransport";
    /** The control stream `open` opened, until `start` writes `Hello` on it. @type {WebTransportBidirectionalStream | null} */
    this.controlStream = null;
  }

  /**
   * Finds the relay from the page's own origin and opens the session and the control
   * stream, without sending anything on it: the transport race (transport.js) opens this
   * and a WebSocket at once, and only the winner is `start`ed. Resolves once the control
   * stream is open.
   * @param {URL} base the page's URL
   * @throws {ConnectError}
   */
  async open(base) {
    const config = await fetchConfig(base);
    const hash = await fetchCertificateHash(base, config);
    // Closed while the configuration was fetched (the person pressed Stop): open nothing.
    if (this.closed) throw new ConnectError("The connection was cancelled.", "handshake");
    const host = base.hostname.includes(":") && !base.hostname.startsWith("[") ? `[${base.hostname}]` : base.hostname;
    this.url = `https://${host}:${config.quic_port}${config.path}`;
    /** @type {WebTransportOptions} */
    const options = { requireUnreliable: true };
    if (hash) options.serverCertificateHashes = [{ algorithm: "sha-256", value: hash }];
    if (typeof WebTransport !== "function") {
      throw new ConnectError("This browser has no WebTransport. Use a recent Chrome, Edge or Firefox.", "handshake");
    }
    let wt;
    try {
      wt = new WebTransport(this.url, options);
    } catch (e) {
      throw new ConnectError(`Could not open a connection to the relay (${describe(e)}).`, "handshake");
    }
    this.wt = wt;
    // A rejection of `closed` before `ready` would otherwise be unhandled.
    wt.closed.catch(() => {});
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let timer;
    try {
      await Promise.race([
        wt.ready,
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error("timed out")), HANDSHAKE_TIMEOUT_MS);
        }),
      ]);
    } catch (e) {
      try {
        wt.close();
      } catch {
        // Already failed: nothing to close.
      }
      this.wt = null;
      throw new ConnectError(
        `Could not reach the relay at ${this.url} (${describe(e)}). The relay may be down, the network may block UDP, ` +
          `or the browser refused the relay's certificate.`,
        "handshake",
        describe(e),
      );
    } finally {
      clearTimeout(timer);
    }
    // `close()` during the handshake already closed `wt`; say no Hello.
    if (this.closed) throw new ConnectError("The connection was cancelled.", "handshake");

    const maxDg = wt.datagrams.maxDatagramSize;
    if (Number.isFinite(maxDg) && maxDg > 0) this.maxDatagramSize = Math.min(maxDg, MAX_MEDIA_DATAGRAM_BYTES);
    try {
      wt.datagrams.incomingHighWaterMark = DATAGRAM_HIGH_WATER;
    } catch {
      // Older browsers lack this knob; their default works.
    }
    const dgs = /** @type {any} */ (wt.datagrams);
    /** @type {WritableStream<Uint8Array>} */
    const dgWritable = typeof dgs.createWritable === "function" ? dgs.createWritable() : wt.datagrams.writable;
    this.datagramWriter = dgWritable.getWriter();

    let stream;
    try {
      stream = await wt.createBidirectionalStream();
    } catch (e) {
      this.shutdown({ reason: `The relay accepted the connection but not the control stream (${describe(e)}).`, code: null, byUs: false });
      throw new ConnectError(`Could not open the control stream (${describe(e)}).`, "handshake");
    }
    if (this.closed) throw new ConnectError("The connection was cancelled.", "handshake");
    this.controlStream = stream;
  }

  /**
   * Sends `Hello` on the control stream `open` opened and starts reading the relay's
   * control messages, chat streams and datagrams; the answers arrive through `onMessage`.
   * @param {import("../wire/protocol.js").Hello} hello
   * @throws {ConnectError} when the session was closed (or never opened)
   */
  start(hello) {
    const wt = this.wt;
    const stream = this.controlStream;
    if (this.closed || !wt || !stream) throw new ConnectError("The connection was cancelled.", "handshake");
    this.controlStream = null;
    this.control = stream.writable.getWriter();
    this.send({ type: "Hello", ...hello });

    void this.readControl(stream.readable);
    void this.readDatagrams(wt.datagrams.readable);
    void this.acceptChatStreams(wt.incomingUnidirectionalStreams);
    wt.closed.then(
      (info) => {
        const code = info?.closeCode ?? 0;
        if (this.fatal) this.shutdown({ reason: this.fatal.message, code: this.fatal.code, byUs: false });
        else if (code) this.shutdown({ reason: describeErrorCode(code), code, byUs: false });
        else this.shutdown({ reason: info?.reason ? `The relay closed the session: ${info.reason}` : "The relay closed the session.", code: null, byUs: false });
      },
      (e) => this.shutdown({ reason: `The connection to the relay was lost (${describe(e)}).`, code: this.fatal?.code ?? null, byUs: false }),
    );
  }

  /**
   * `open` and `start` in one: finds the relay, opens the session and sends `Hello`.
   * Resolves once `Hello` is written.
   * @param {import("../wire/protocol.js").Hello} hello
   * @param {URL} base the page's URL
   * @throws {ConnectError}
   */
  async connect(hello, base) {
    await this.open(base);
    this.start(hello);
  }

  /**
   * Sends a control message. Returns false if the session is gone.
   * @param {ClientMsg} msg
   */
  send(msg) {
    if (this.closed || !this.control) return false;
    let frame;
    try {
      frame = encodeFrame(encodeClientMsg(msg));
    } catch (e) {
      console.warn("duet: cannot encode", msg.type, e);
      return false;
    }
    this.control.write(frame).catch(() => {
      // The session is ending; `closed` reports why.
    });
    return true;
  }

  /**
   * Queues a media datagram. Drops it (and counts it) when the browser's queue is full:
   * late media is worse than missing media.
   * @param {Uint8Array} datagram
   */
  sendDatagram(datagram) {
    const w = this.datagramWriter;
    if (this.closed || !w) return false;
    // Chromium's datagram writable has a high-water mark of one datagram whatever
    // `outgoingHighWaterMark` says, so `desiredSize` would refuse the second fragment of
    // every frame. Count the writes the browser has not taken yet instead.
    if (datagram.length > this.maxDatagramSize || this.datagramsInFlight >= DATAGRAM_HIGH_WATER) {
      this.datagramsDropped++;
      return false;
    }
    this.datagramsSent++;
    this.datagramsInFlight++;
    const done = () => {
      this.datagramsInFlight--;
    };
    w.write(datagram).then(done, done);
    return true;
  }

  /**
   * The pairing chat belongs to from now on (null: none). Closes the previous pairing's
   * outgoing chat stream.
   * @param {bigint | null} matchId
   */
  setMatch(matchId) {
    if (this.matchId === matchId) return;
    this.matchId = matchId;
    const old = this.chatOut;
    this.chatOut = null;
    if (old) old.writer.then((w) => w.close()).catch(() => {});
    for (const wake of this.matchWaiters) wake();
  }

  /**
   * Sends one chat line (sealed for pairing `matchId`) to the current partner on this
   * pairing's chat stream (opened on first use). The caller checks the size limit first, to
   * tell the person.
   * @param {bigint} matchId the pairing the line was sealed for
   * @param {ChatLine} line
   * @returns {Promise<void>}
   */
  async sendChat(matchId, line) {
    const wt = this.wt;
    if (!wt || this.closed || this.matchId === null) throw new Error("not connected to anyone");
    // Sealed for a partner who has gone: the next one could not open it anyway.
    if (this.matchId !== matchId) throw new Error("your partner changed before the line was sent");
    if (!this.chatOut || this.chatOut.matchId !== matchId) {
      const writer = wt.createUnidirectionalStream().then((s) => {
        const w = s.getWriter();
        w.write(encodeFrame(encodeChatFrame({ type: "Open", match_id: matchId }))).catch(() => {});
        return w;
      });
      this.chatOut = { matchId, writer };
    }
    const out = this.chatOut;
    const w = await out.writer;
    await w.write(encodeFrame(encodeChatFrame(line)));
  }

  /**
   * Transport statistics, where the browser has them (`getStats` is newer than WebTransport,
   * and not every browser fills every field).
   * @returns {Promise<import("./transport.js").TransportStats>}
   */
  async stats() {
    const none = { rttMs: null, sendRateKbps: null, bytesSent: null };
    const wt = /** @type {any} */ (this.wt);
    if (!wt || this.closed || typeof wt.getStats !== "function") return none;
    try {
      const s = await wt.getStats();
      /** @param {unknown} v */
      const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
      const rate = num(s.estimatedSendRate);
      return {
        rttMs: num(s.smoothedRtt),
        sendRateKbps: rate !== null && rate > 0 ? rate / 1000 : null,
        bytesSent: num(s.bytesSent),
      };
    } catch {
      return none;
    }
  }

  /**
   * Ends the session from this side (Stop is `Leave`, not this; this is for leaving the page).
   * @param {string} reason
   */
  close(reason) {
    if (this.closed) return;
    const wt = this.wt;
    this.shutdown({ reason, code: null, byUs: true });
    try {
      wt?.close({ closeCode: 0, reason });
    } catch {
      // Already closed.
    }
  }

  /** @param {CloseInfo} info */
  shutdown(info) {
    if (this.closed) return;
    this.closed = true;
    this.setMatch(null);
    this.handlers.onClosed(info);
  }

  /** @param {ReadableStream<Uint8Array>} readable */
  async readControl(readable) {
    const reader = readable.getReader();
    const frames = new FrameReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        frames.push(value);
        for (let body = frames.next(); body; body = frames.next()) {
          const msg = decodeServerMsg(body);
          if (msg.type === "Error" && msg.fatal) this.fatal = { code: msg.code, message: msg.message };
          this.handlers.onMessage(msg);
        }
      }
      // The relay finished the control stream: the session is over (closed says why).
    } catch (e) {
      if (this.closed) return;
      const wt = this.wt;
      const why = `The relay sent something this page does not understand (${describe(e)}).`;
      this.shutdown({ reason: why, code: ERROR_CODES.malformed, byUs: false });
      try {
        wt?.close({ closeCode: ERROR_CODES.malformed, reason: "malformed server message" });
      } catch {
        // Already closed.
      }
    }
  }

  /** @param {ReadableStream<Uint8Array>} readable */
  async readDatagrams(readable) {
    const reader = readable.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        try {
          this.handlers.onDatagram(value);
        } catch (e) {
          // A bad datagram must never stop the loop.
          console.warn("duet: datagram handler failed", e);
        }
      }
    } catch {
      // The session ended; `closed` reports why.
    }
  }

  /** @param {ReadableStream<ReadableStream<Uint8Array>>} incoming */
  async acceptChatStreams(incoming) {
    const reader = incoming.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        if (this.chatStreamsOpen >= MAX_CHAT_STREAMS) {
          value.cancel().catch(() => {});
          continue;
        }
        this.chatStreamsOpen++;
        void this.readChatStream(value).finally(() => this.chatStreamsOpen--);
      }
    } catch {
      // The session ended.
    }
  }

  /**
   * Waits (briefly) until `matchId` is the current pairing: the relay's chat stream for a
   * new partner can overtake the `Matched` message that announces them.
   * @param {bigint} matchId
   * @returns {Promise<boolean>}
   */
  waitForMatch(matchId) {
    return untilMatch(this, matchId);
  }

  /** @param {ReadableStream<Uint8Array>} stream */
  async readChatStream(stream) {
    const reader = stream.getReader();
    const frames = new FrameReader();
    /** @type {bigint | null} */
    let matchId = null;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        frames.push(value);
        for (let body = frames.next(); body; body = frames.next()) {
          const frame = decodeChatFrame(body);
          if (matchId === null) {
            if (frame.type !== "Open") throw new Error("chat stream does not start with Open");
            matchId = frame.match_id;
            if (!(await this.waitForMatch(matchId))) throw new Error("chat stream for another pairing");
          } else if (frame.type === "Line" || frame.type === "Sealed") {
            // A pairing that ended since: the rest of this stream is for nobody.
            if (this.matchId !== matchId) throw new Error("chat stream for a past pairing");
            this.handlers.onChatFrame(matchId, frame);
          } else {
            throw new Error("a second Open on a chat stream");
          }
        }
      }
    } catch (e) {
      reader.cancel(describe(e)).catch(() => {});
    }
  }
}
