// @ts-check
/**
 * @file Which transport a session with the relay uses: WebTransport (session.js) when it
 * comes up, else the WebSocket fallback (ws-session.js), raced the way "happy eyeballs"
 * races IPv6 against IPv4. WebTransport starts first; if it is not up within
 * WEBTRANSPORT_HEAD_START_MS, or fails, the WebSocket starts too, and the first to open
 * wins. Only the winner sends `Hello`, so the relay never holds a second session for the
 * page: the loser is closed before it sent anything. A browser without WebTransport goes
 * straight to the WebSocket.
 *
 * Every connection the worker makes goes through `connectRelay`, the resume after a lost
 * connection too, so a resume may land on either transport (the relay's resume token does
 * not care which).
 */

import { ConnectError, RelaySession } from "./session.js";
import { WsSession } from "./ws-session.js";

/** @typedef {RelaySession | WsSession} Session */
/** @typedef {Session["transport"]} TransportName "webtransport" or "websocket" */
/** @typedef {ConstructorParameters<typeof RelaySession>[0]} SessionHandlers */
/**
 * What the transport says of itself; null where the browser (or the WebSocket) has no figure.
 * @typedef {{rttMs: number | null, sendRateKbps: number | null, bytesSent: number | null}} TransportStats
 */

/**
 * How long WebTransport has alone before the WebSocket starts too. WebTransport to a
 * reachable relay is up a round trip or two after /config.json; a network that drops UDP
 * never answers, and its 10 s handshake timeout is too long to stare at "Connecting…".
 * A second rather than the 250–300 ms browsers give IPv6: a QUIC handshake that loses a
 * packet waits out a probe timeout (hundreds of milliseconds on a slow phone or a busy
 * machine), and a call that falls back to TCP needlessly is worse for its whole length
 * than one that starts a little later. A network that blocks UDP pays it once per connect.
 */
export const WEBTRANSPORT_HEAD_START_MS = 1000;

/**
 * Handlers that reach the worker only from the session chosen: the loser's close (and
 * anything it might receive first) is nobody's business.
 * @param {SessionHandlers} handlers
 * @param {() => boolean} chosen
 * @returns {SessionHandlers}
 */
function gated(handlers, chosen) {
  return {
    onMessage: (msg) => {
      if (chosen()) handlers.onMessage(msg);
    },
    onChatFrame: (matchId, frame) => {
      if (chosen()) handlers.onChatFrame(matchId, frame);
    },
    onDatagram: (datagram) => {
      if (chosen()) handlers.onDatagram(datagram);
    },
    onClosed: (info) => {
      if (chosen()) handlers.onClosed(info);
    },
  };
}

/** @param {unknown} e */
function detailOf(e) {
  return e instanceof ConnectError ? e.detail : e instanceof Error ? e.message : String(e);
}

/**
 * Opens a session with the relay over whichever transport comes up first and sends `Hello`
 * on it. Resolves with the session once `Hello` is sent; the relay's answers arrive through
 * `handlers`.
 * @param {SessionHandlers} handlers
 * @param {import("../wire/protocol.js").Hello} hello
 * @param {URL} base the page's URL
 * @param {{signal?: AbortSignal, headStartMs?: number, webTransport?: boolean}} [options]
 *   `signal` cancels the attempt (nothing is sent); `headStartMs` is WebTransport's head
 *   start; `webTransport` false: the WebSocket alone (the page has no WebTransport, or the
 *   person asked for `?transport=websocket`)
 * @returns {Promise<Session>}
 * @throws {ConnectError}
 */
export function connectRelay(handlers, hello, base, options = {}) {
  const { signal, headStartMs = WEBTRANSPORT_HEAD_START_MS, webTransport = true } = options;
  const cancelled = () => new ConnectError("The connection was cancelled.", "handshake");
  if (signal?.aborted) return Promise.reject(cancelled());
  return new Promise((resolve, reject) => {
    /** @type {Session | null} */
    let chosen = null;
    let settled = false;
    /** @type {RelaySession | null} */
    let wt = null;
    /** @type {WsSession | null} */
    let ws = null;
    /** @type {unknown} */
    let wtError = null;
    /** @type {unknown} */
    let wsError = null;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let timer;

    const end = () => {
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    /** @param {unknown} e */
    const fail = (e) => {
      end();
      wt?.close("not connected");
      ws?.close("not connected");
      reject(e);
    };
    /** @param {Session} session */
    const win = (session) => {
      if (settled) {
        session.close("another transport was chosen");
        return;
      }
      end();
      for (const other of [wt, ws]) if (other && other !== session) other.close("another transport was chosen");
      chosen = session;
      try {
        session.start(hello);
      } catch (e) {
        chosen = null;
        reject(e);
        return;
      }
      resolve(session);
    };
    const bothFailed = () => {
      fail(
        new ConnectError(
          `Could not reach the relay over WebTransport (${detailOf(wtError)}) or WebSocket (${detailOf(wsError)}). ` +
            `The relay may be down, this network may block it, or the browser refused the relay's certificate.`,
          "handshake",
        ),
      );
    };
    const startWebSocket = () => {
      clearTimeout(timer);
      if (ws || settled) return;
      /** @type {WsSession} */
      const socket = new WsSession(gated(handlers, () => chosen === socket));
      ws = socket;
      socket.open(base).then(
        () => win(socket),
        (/** @type {unknown} */ e) => {
          if (settled) return;
          wsError = e;
          if (!wt) fail(e); // the only way there was
          else if (wtError) bothFailed();
        },
      );
    };
    function onAbort() {
      if (!settled) fail(cancelled());
    }
    signal?.addEventListener("abort", onAbort, { once: true });

    if (typeof WebTransport !== "function" || !webTransport) {
      startWebSocket();
      return;
    }
    /** @type {RelaySession} */
    const relay = new RelaySession(gated(handlers, () => chosen === relay));
    wt = relay;
    relay.open(base).then(
      () => win(relay),
      (/** @type {unknown} */ e) => {
        if (settled) return;
        wtError = e;
        // A relay that speaks another protocol version refuses a WebSocket's Hello too.
        if (e instanceof ConnectError && e.stage === "version") fail(e);
        else if (!ws) startWebSocket();
        else if (wsError) bothFailed();
      },
    );
    timer = setTimeout(startWebSocket, headStartMs);
  });
}
