// @ts-check
/**
 * @file The WebSocket fallback session to the relay, for networks that block UDP and
 * browsers without WebTransport: the same interface as `RelaySession` (session.js), so the
 * worker does not care which one it holds, and the same messages, one binary WebSocket
 * message each (shared/src/ws.rs): a kind byte, then a media datagram, a control message
 * without its length prefix, or a chat frame. The socket goes to the page's own origin at
 * `/ws`.
 *
 * What TCP changes, and how this copes: everything on the socket is delivered in order, so
 * one lost packet holds back all that follows it (head-of-line blocking), and what the
 * page sends queues in the browser (`bufferedAmount`) when the network is slower than the
 * call. Media that would wait too long there is dropped here, at the sender, a whole frame
 * at a time; the partner sees those drops as loss in its reports, which steps our bitrate
 * down. Control messages and chat are never dropped.
 *
 * Everything the relay sends is untrusted, as in session.js: text messages, unknown kinds
 * and messages over MAX_WS_MESSAGE_BYTES end the session as `malformed`, chat lines for any
 * pairing but the current one are dropped, and nothing here throws into the page: failures
 * arrive through `onClosed` with a `reason` in words. Chat lines pass through as frames
 * (`Sealed` or `Line`); the worker opens them (engine/pairing-crypto.js).
 */

import {
  ERROR_CODES,
  MAX_FRAME_BYTES,
  MAX_MEDIA_DATAGRAM_BYTES,
  MAX_WS_MESSAGE_BYTES,
  TRACK_VIDEO,
  TRACK_VIDEO_PARITY,
  WS_CLOSE_CODE_BASE,
  WS_KIND_CHAT,
  WS_KIND_CONTROL,
  WS_KIND_MEDIA,
  WS_PATH,
  decodeChatFrame,
  decodeServerMsg,
  encodeChatFrame,
  encodeClientMsg,
  readDatagram,
} from "../wire/protocol.js";
import { utf8Length } from "../wire/postcard.js";
import { ConnectError, describe, describeErrorCode, untilMatch } from "./session.js";

/** @typedef {import("../wire/protocol.js").ClientMsg} ClientMsg */
/** @typedef {import("../wire/protocol.js").ServerMsg} ServerMsg */
/** @typedef {import("./session.js").CloseInfo} CloseInfo */
/** @typedef {import("./session.js").ChatLine} ChatLine */

/** How long the TCP (and TLS) handshake and the upgrade may take, as for WebTransport. */
const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Chat lines held meanwhile: the relay's chat rate limit allows a few lines in that time, not more. */
const MAX_HELD_CHAT_LINES = 16;
/**
 * Bytes the browser may hold unsent before a new media frame is dropped instead of queued:
 * 32 KiB is about 100 ms at the call's top rate (2.5 Mbit/s of video and the audio), and
 * about a start-rate keyframe (800 kbit/s), so a call at full rate adds at most ~100 ms of
 * queue and a backed-up socket sheds frames within a frame or two. At lower rates it is more
 * time, but the drops then show as loss in the partner's reports and the bitrate steps down
 * until the queue stays below it.
 */
const WS_MEDIA_HIGH_WATER_BYTES = 32 * 1024;
/** The normal close a client sends when it leaves on purpose (shared/src/ws.rs CLOSE_NORMAL). */
const CLOSE_NORMAL = 1000;
/** A WebSocket close reason may be at most 123 bytes of UTF-8. */
const MAX_CLOSE_REASON_BYTES = 123;

/**
 * The relay's WebSocket URL for a page at `base`: same host and port, `wss:` under `https:`.
 * @param {URL} base
 */
export function webSocketUrl(base) {
  return `${base.protocol === "https:" ? "wss:" : "ws:"}//${base.host}${WS_PATH}`;
}

/**
 * The relay error code a WebSocket close code carries (4000 + code), or null.
 * @param {number} closeCode
 */
export function errorCodeOfClose(closeCode) {
  return closeCode > WS_CLOSE_CODE_BASE && closeCode < WS_CLOSE_CODE_BASE + 1000 ? closeCode - WS_CLOSE_CODE_BASE : null;
}

/**
 * The track a datagram's drop decision follows: a parity datagram goes with its video
 * frame (same frame number), since it is useless without the frame.
 * @param {number} track
 */
function dropGroup(track) {
  return track === TRACK_VIDEO_PARITY ? TRACK_VIDEO : track;
}

/** One session with the relay over a WebSocket. Create, `connect()` (or `open()` then `start()`), and use until `onClosed` fires. */
export class WsSession {
  /**
   * @param {object} handlers
   * @param {(msg: ServerMsg) => void} handlers.onMessage a control message from the relay
   * @param {(matchId: bigint, frame: ChatLine) => void} handlers.onChatFrame a chat line (sealed or not) from the current partner
   * @param {(datagram: Uint8Array) => void} handlers.onDatagram a media datagram
   * @param {(info: CloseInfo) => void} handlers.onClosed the session ended (once)
   */
  constructor(handlers) {
    this.handlers = handlers;
    /** @type {WebSocket | null} */
    this.ws = null;
    /** Which transport this is (the page tells the person). @type {"websocket"} */
    this.transport = "websocket";
    this.maxDatagramSize = MAX_MEDIA_DATAGRAM_BYTES;
    this.closed = false;
    /** `Hello` is sent: other messages may follow. */
    this.started = false;
    /** The fatal error the relay announced before closing, if any. @type {{code: number, message: string} | null} */
    this.fatal = null;
    /** The pairing chat belongs to now. @type {bigint | null} */
    this.matchId = null;
    /** The pairing our last chat `Open` named (null: none sent since the pairing changed). @type {bigint | null} */
    this.chatOutMatch = null;
    /**
     * The pairing the relay's last chat `Open` named; `held` keeps its lines while we wait
     * for its `Matched`, `dead` drops them after that wait failed.
     * @type {{matchId: bigint, held: ChatLine[] | null, dead: boolean} | null}
     */
    this.chatIn = null;
    /** @type {Set<() => void>} */
    this.matchWaiters = new Set();
    /**
     * Per drop group (audio, video): the frame whose datagrams are being sent or dropped, so
     * a frame is sent or dropped whole. @type {Map<number, {matchId: bigint, frame: number, send: boolean}>}
     */
    this.frameDecision = new Map();
    this.datagramsDropped = 0;
    this.datagramsSent = 0;
    this.url = "";
    /** Fails a connection attempt in progress (`close()` during `open()`). @type {((e: Error) => void) | null} */
    this.abortOpen = null;
  }

  /**
   * Opens the WebSocket to the relay, sending nothing: the transport race (transport.js)
   * `start`s only the winner. Resolves once the socket is open.
   * @param {URL} base the page's URL
   * @throws {ConnectError}
   */
  async open(base) {
    if (this.closed) throw new ConnectError("The connection was cancelled.", "handshake");
    if (typeof WebSocket !== "function") throw new ConnectError("This browser has no WebSocket.", "handshake");
    this.url = webSocketUrl(base);
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      throw new ConnectError(`Could not open a WebSocket to the relay (${describe(e)}).`, "handshake");
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let timer;
    try {
      await new Promise((resolve, reject) => {
        this.abortOpen = reject;
        timer = setTimeout(() => reject(new Error("timed out")), HANDSHAKE_TIMEOUT_MS);
        ws.onopen = () => resolve(undefined);
        // A failed handshake fires `error` (which says nothing, by design) and then `close`.
        ws.onerror = () => {};
        ws.onclose = (ev) => {
          const code = errorCodeOfClose(ev.code);
          reject(new Error(code !== null ? describeErrorCode(code) : ev.reason || "the connection failed"));
        };
      });
    } catch (e) {
      // `close()` during the handshake already closed the socket; say no Hello.
      if (this.closed) throw new ConnectError("The connection was cancelled.", "handshake");
      try {
        ws.close();
      } catch {
        // Already closed.
      }
      this.ws = null;
      throw new ConnectError(
        `Could not reach the relay at ${this.url} (${describe(e)}). The relay may be down, or a proxy on this network may block WebSockets.`,
        "handshake",
        describe(e),
      );
    } finally {
      clearTimeout(timer);
      this.abortOpen = null;
    }
    if (this.closed) throw new ConnectError("The connection was cancelled.", "handshake");
    ws.onmessage = (ev) => this.receive(ev.data);
    ws.onclose = (ev) => this.onSocketClosed(ev.code, ev.reason);
  }

  /**
   * Sends `Hello` (the first message the relay must see) on the socket `open` opened; the
   * relay's answers arrive through `onMessage`.
   * @param {import("../wire/protocol.js").Hello} hello
   * @throws {ConnectError} when the session was closed (or never opened)
   */
  start(hello) {
    if (this.closed || !this.ws) throw new ConnectError("The connection was cancelled.", "handshake");
    this.started = true;
    if (!this.send({ type: "Hello", ...hello })) {
      this.started = false;
      throw new ConnectError("Could not send Hello to the relay.", "handshake");
    }
  }

  /**
   * `open` and `start` in one. Resolves once `Hello` is sent.
   * @param {import("../wire/protocol.js").Hello} hello
   * @param {URL} base the page's URL
   * @throws {ConnectError}
   */
  async connect(hello, base) {
    await this.open(base);
    this.start(hello);
  }

  /**
   * One WebSocket message: the kind byte and the body.
   * @param {number} kind @param {Uint8Array} body
   * @returns {boolean} false if the socket refused it
   */
  sendMessage(kind, body) {
    const ws = this.ws;
    if (!ws) return false;
    const out = new Uint8Array(1 + body.length);
    out[0] = kind;
    out.set(body, 1);
    try {
      ws.send(out);
      return true;
    } catch {
      // Closing: `onclose` reports why.
      return false;
    }
  }

  /**
   * Sends a control message. Returns false if the session is gone.
   * @param {ClientMsg} msg
   */
  send(msg) {
    if (this.closed || !this.started) return false;
    let body;
    try {
      body = encodeClientMsg(msg);
    } catch (e) {
      console.warn("duet: cannot encode", msg.type, e);
      return false;
    }
    if (body.length > MAX_FRAME_BYTES) {
      console.warn("duet: control message over the frame limit", msg.type);
      return false;
    }
    return this.sendMessage(WS_KIND_CONTROL, body);
  }

  /**
   * Sends a media datagram, or drops it (and counts it) when it would wait too long behind
   * what the socket already holds: late media is worse than missing media. The decision is
   * made at a frame's first datagram and kept for the rest of it: a frame's own fragments
   * are written in one go (and `bufferedAmount` only falls between tasks), and a partial
   * frame is useless to the partner.
   * @param {Uint8Array} datagram
   */
  sendDatagram(datagram) {
    const ws = this.ws;
    if (this.closed || !this.started || !ws) return false;
    if (datagram.length > this.maxDatagramSize) {
      this.datagramsDropped++;
      return false;
    }
    let header = null;
    try {
      header = readDatagram(datagram).header;
    } catch {
      // Not ours to judge: the relay checks it (the fragmenter never makes one).
    }
    let send = ws.bufferedAmount <= WS_MEDIA_HIGH_WATER_BYTES;
    if (header) {
      const group = dropGroup(header.track);
      const current = this.frameDecision.get(group);
      if (current && current.frame === header.frame && current.matchId === header.match_id) send = current.send;
      else this.frameDecision.set(group, { matchId: header.match_id, frame: header.frame, send });
    }
    if (!send || !this.sendMessage(WS_KIND_MEDIA, datagram)) {
      this.datagramsDropped++;
      return false;
    }
    this.datagramsSent++;
    return true;
  }

  /**
   * The pairing chat belongs to from now on (null: none). The next line sent opens the new
   * pairing's chat with `Open`.
   * @param {bigint | null} matchId
   */
  setMatch(matchId) {
    if (this.matchId === matchId) return;
    this.matchId = matchId;
    this.chatOutMatch = null;
    for (const wake of this.matchWaiters) wake();
  }

  /**
   * Sends one chat line (sealed for pairing `matchId`) to the current partner, after this
   * pairing's `Open` the first time. The caller checks the size limit first, to tell the
   * person.
   * @param {bigint} matchId the pairing the line was sealed for
   * @param {ChatLine} frame
   * @returns {Promise<void>}
   */
  async sendChat(matchId, frame) {
    if (this.closed || !this.started || this.matchId === null) throw new Error("not connected to anyone");
    // Sealed for a partner who has gone: the next one could not open it anyway.
    if (this.matchId !== matchId) throw new Error("your partner changed before the line was sent");
    const line = encodeChatFrame(frame);
    if (line.length > MAX_FRAME_BYTES) throw new Error("the line is too long");
    if (this.chatOutMatch !== matchId) {
      if (!this.sendMessage(WS_KIND_CHAT, encodeChatFrame({ type: "Open", match_id: matchId }))) throw new Error("the connection is closing");
      this.chatOutMatch = matchId;
    }
    if (!this.sendMessage(WS_KIND_CHAT, line)) throw new Error("the connection is closing");
  }

  /**
   * A WebSocket has no round-trip or send-rate figures; the relay's `Stats` message carries
   * its measure of the round trip.
   * @returns {Promise<import("./transport.js").TransportStats>}
   */
  async stats() {
    return { rttMs: null, sendRateKbps: null, bytesSent: null };
  }

  /**
   * Ends the session from this side with the normal close (Stop is `Leave`, not this; this
   * is for leaving the page, or cancelling a connection not yet open).
   * @param {string} reason
   */
  close(reason) {
    if (this.closed) return;
    const ws = this.ws;
    this.shutdown({ reason, code: null, byUs: true });
    this.abortOpen?.(new Error("cancelled"));
    try {
      ws?.close(CLOSE_NORMAL, utf8Length(reason) <= MAX_CLOSE_REASON_BYTES ? reason : "");
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

  /**
   * The relay closed the socket (or the connection died).
   * @param {number} closeCode @param {string} reason
   */
  onSocketClosed(closeCode, reason) {
    if (this.closed) return;
    const code = errorCodeOfClose(closeCode);
    if (this.fatal) this.shutdown({ reason: this.fatal.message, code: this.fatal.code, byUs: false });
    else if (code !== null) this.shutdown({ reason: describeErrorCode(code), code, byUs: false });
    else this.shutdown({ reason: `The connection to the relay was lost${reason ? ` (${reason})` : ""}.`, code: null, byUs: false });
  }

  /**
   * The relay broke the protocol: end the session and say so.
   * @param {string} what
   */
  malformed(what) {
    if (this.closed) return;
    const ws = this.ws;
    this.shutdown({ reason: `The relay sent something this page does not understand (${what}).`, code: ERROR_CODES.malformed, byUs: false });
    try {
      ws?.close(WS_CLOSE_CODE_BASE + ERROR_CODES.malformed, "malformed server message");
    } catch {
      // Already closed.
    }
  }

  /** @param {unknown} data one WebSocket message from the relay */
  receive(data) {
    if (this.closed) return;
    if (!(data instanceof ArrayBuffer)) {
      this.malformed(typeof data === "string" ? "a text message" : "a message that is not binary");
      return;
    }
    if (data.byteLength > MAX_WS_MESSAGE_BYTES) {
      this.malformed(`a message of ${data.byteLength} bytes, over the ${MAX_WS_MESSAGE_BYTES}-byte limit`);
      return;
    }
    if (data.byteLength === 0) {
      this.malformed("an empty message");
      return;
    }
    const bytes = new Uint8Array(data);
    const kind = bytes[0];
    const body = bytes.subarray(1);
    switch (kind) {
      case WS_KIND_MEDIA:
        if (body.length > MAX_MEDIA_DATAGRAM_BYTES) {
          this.malformed(`a media datagram of ${body.length} bytes`);
          return;
        }
        try {
          this.handlers.onDatagram(body);
        } catch (e) {
          // A bad datagram must never stop the session.
          console.warn("duet: datagram handler failed", e);
        }
        return;
      case WS_KIND_CONTROL: {
        let msg;
        try {
          msg = decodeServerMsg(body);
        } catch (e) {
          this.malformed(describe(e));
          return;
        }
        if (msg.type === "Error" && msg.fatal) this.fatal = { code: msg.code, message: msg.message };
        try {
          this.handlers.onMessage(msg);
        } catch (e) {
          console.warn("duet: control handler failed", msg.type, e);
        }
        return;
      }
      case WS_KIND_CHAT:
        this.receiveChat(body);
        return;
      default:
        this.malformed(`a message of unknown kind ${kind}`);
    }
  }

  /** @param {Uint8Array} body one chat frame */
  receiveChat(body) {
    let frame;
    try {
      frame = decodeChatFrame(body);
    } catch (e) {
      this.malformed(describe(e));
      return;
    }
    if (frame.type === "Open") {
      const matchId = frame.match_id;
      if (matchId === this.matchId) {
        this.chatIn = { matchId, held: null, dead: false };
        return;
      }
      // The `Open` of a partner whose `Matched` has not been handled yet: hold the lines.
      const chat = { matchId, held: /** @type {ChatLine[] | null} */ ([]), dead: false };
      this.chatIn = chat;
      void this.waitForMatch(matchId).then((current) => {
        const held = chat.held ?? [];
        chat.held = null;
        chat.dead = !current;
        if (!current || this.closed) return;
        for (const line of held) this.deliverChat(chat, line);
      });
      return;
    }
    const chat = this.chatIn;
    // No Open yet, a pairing that could not be waited for, or one that ended: for nobody.
    if (!chat || chat.dead) return;
    if (chat.held) {
      if (chat.held.length < MAX_HELD_CHAT_LINES) chat.held.push(frame);
      return;
    }
    this.deliverChat(chat, frame);
  }

  /**
   * @param {{matchId: bigint}} chat the `Open` the line came after
   * @param {ChatLine} line
   */
  deliverChat(chat, line) {
    // A pairing that ended since: the line is for nobody.
    if (this.matchId !== chat.matchId) return;
    try {
      this.handlers.onChatFrame(chat.matchId, line);
    } catch (e) {
      console.warn("duet: chat handler failed", e);
    }
  }

  /**
   * Waits (briefly) until `matchId` is the current pairing: the relay's chat `Open` for a
   * new partner can come before the page has handled the `Matched` that announces them.
   * @param {bigint} matchId
   * @returns {Promise<boolean>}
   */
  waitForMatch(matchId) {
    return untilMatch(this, matchId);
  }
}
