// @ts-check
/**
 * @file The transport race (engine/transport.js) with fake WebTransport and WebSocket
 * classes: WebTransport wins when it comes up in time and no WebSocket is opened; a
 * WebTransport that never comes up loses to the WebSocket after its head start and is
 * closed having sent nothing; a browser without WebTransport uses the WebSocket at once;
 * only the winner sends Hello; and a failure names both attempts.
 */

import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { FrameReader, WS_KIND_CONTROL, decodeClientMsg } from "../app/wire/protocol.js";
import { connectRelay } from "../app/engine/transport.js";
import { ConnectError, RelaySession } from "../app/engine/session.js";
import { WsSession } from "../app/engine/ws-session.js";
import { FakeWebSocket, FakeWebTransport, HELLO, fetched, installFakes, nextWebSocket, settle } from "./fake-transports.js";

/** @typedef {import("../app/engine/session.js").CloseInfo} CloseInfo */

const BASE = new URL("https://duet.example:8443/");
/** A short head start keeps the tests quick; the race does not depend on its size. */
const HEAD_START_MS = 40;

beforeEach(() => installFakes());

function handlers() {
  const seen = {
    /** @type {CloseInfo[]} */
    closed: [],
    messages: 0,
  };
  return {
    seen,
    handlers: {
      onMessage: () => seen.messages++,
      onChatFrame: () => {},
      onDatagram: () => {},
      onClosed: (/** @type {CloseInfo} */ info) => seen.closed.push(info),
    },
  };
}

/** @param {Uint8Array[]} chunks the control stream's bytes @returns {string[]} the message types in them */
function controlTypes(chunks) {
  const reader = new FrameReader();
  for (const c of chunks) reader.push(c);
  /** @type {string[]} */
  const out = [];
  for (let body = reader.next(); body; body = reader.next()) out.push(decodeClientMsg(body).type);
  return out;
}

test("WebTransport up at once: it wins, sends Hello, and no WebSocket is ever opened", async () => {
  FakeWebTransport.mode = "ready";
  const { handlers: h } = handlers();
  const session = await connectRelay(h, HELLO, BASE, { headStartMs: HEAD_START_MS });
  assert.ok(session instanceof RelaySession);
  assert.equal(session.transport, "webtransport");
  assert.equal(FakeWebTransport.instances.length, 1);
  assert.equal(FakeWebTransport.instances[0].url, "https://duet.example:4433/chat");
  assert.deepEqual(controlTypes(FakeWebTransport.instances[0].controlWritten), ["Hello"]);
  assert.deepEqual(fetched, ["/config.json", "/certificate.sha256"], "the configuration is fetched once");
  // Past the head start, still no WebSocket: the timer was cancelled.
  await new Promise((resolve) => setTimeout(resolve, HEAD_START_MS * 2));
  assert.equal(FakeWebSocket.instances.length, 0);
  session.close("done");
});

test("WebTransport never up: the WebSocket starts after the head start, wins, and the WebTransport is closed having sent nothing", async () => {
  FakeWebTransport.mode = "never";
  FakeWebSocket.mode = "open";
  const { handlers: h, seen } = handlers();
  const startedAt = performance.now();
  const socketOpened = nextWebSocket();
  const connecting = connectRelay(h, HELLO, BASE, { headStartMs: HEAD_START_MS });
  const ws = await socketOpened;
  assert.ok(ws.createdAt - startedAt >= HEAD_START_MS - 1, `the WebSocket started after ${ws.createdAt - startedAt} ms`);
  const session = await connecting;
  assert.ok(session instanceof WsSession);
  assert.equal(session.transport, "websocket");
  const wt = FakeWebTransport.instances[0];
  assert.ok(wt, "WebTransport was tried first");
  assert.ok(wt.closeCalls.length >= 1, "the losing WebTransport is closed");
  assert.equal(wt.bidiStreams, 0);
  assert.deepEqual(wt.controlWritten, []);
  // Only the winner sent anything, and that is Hello.
  assert.equal(ws.sent.length, 1);
  assert.equal(ws.sent[0][0], WS_KIND_CONTROL);
  assert.equal(decodeClientMsg(ws.sent[0].subarray(1)).type, "Hello");
  // The loser's close is not the page's business.
  await settle();
  assert.deepEqual(seen.closed, []);
  session.close("done");
  assert.equal(seen.closed.length, 1);
});

test("a browser without WebTransport uses the WebSocket at once", async () => {
  installFakes({ webTransport: false });
  FakeWebSocket.mode = "open";
  const { handlers: h } = handlers();
  // A head start far longer than the test's patience: waiting for it would time out.
  const session = await connectRelay(h, HELLO, BASE, { headStartMs: 60_000 });
  assert.equal(session.transport, "websocket");
  assert.equal(FakeWebTransport.instances.length, 0);
  assert.equal(FakeWebSocket.instances.length, 1);
  assert.deepEqual(fetched, [], "nothing to ask /config.json for: the WebSocket is at the page's origin");
  session.close("done");
});

test("WebTransport failing early starts the WebSocket without waiting out the head start", async () => {
  FakeWebTransport.mode = "fail";
  FakeWebSocket.mode = "open";
  const { handlers: h } = handlers();
  const session = await connectRelay(h, HELLO, BASE, { headStartMs: 60_000 });
  assert.equal(session.transport, "websocket");
  session.close("done");
});

test("WebTransport coming up after the WebSocket won is closed and sends nothing", async () => {
  FakeWebTransport.mode = "never";
  FakeWebSocket.mode = "manual";
  const { handlers: h } = handlers();
  const socketOpened = nextWebSocket();
  const connecting = connectRelay(h, HELLO, BASE, { headStartMs: HEAD_START_MS });
  const ws = await socketOpened;
  ws.accept();
  const session = await connecting;
  const wt = FakeWebTransport.instances[0];
  wt.becomeReady();
  await settle();
  assert.equal(session.transport, "websocket");
  assert.equal(wt.bidiStreams, 0);
  assert.deepEqual(wt.controlWritten, []);
  session.close("done");
});

test("the WebSocket opening while WebTransport is still trying wins; when both fail, the error names both", async () => {
  FakeWebTransport.mode = "never";
  FakeWebSocket.mode = "manual";
  const { handlers: h, seen } = handlers();
  const socketOpened = nextWebSocket();
  const connecting = connectRelay(h, HELLO, BASE, { headStartMs: HEAD_START_MS });
  const ws = await socketOpened;
  ws.fail();
  await settle();
  FakeWebTransport.instances[0].fail(new Error("timed out"));
  await assert.rejects(connecting, (e) => {
    assert.ok(e instanceof ConnectError);
    assert.match(e.message, /^Could not reach the relay over WebTransport \(timed out\) or WebSocket \(the connection failed\)/);
    return true;
  });
  assert.deepEqual(seen.closed, []);
});

test("cancelling the attempt closes both sides and sends no Hello anywhere", async () => {
  FakeWebTransport.mode = "never";
  FakeWebSocket.mode = "manual";
  const { handlers: h, seen } = handlers();
  const attempt = new AbortController();
  const socketOpened = nextWebSocket();
  const connecting = connectRelay(h, HELLO, BASE, { headStartMs: HEAD_START_MS, signal: attempt.signal });
  const ws = await socketOpened;
  attempt.abort();
  await assert.rejects(connecting, (e) => e instanceof ConnectError && /cancelled/.test(e.message));
  ws.accept(); // too late
  await settle();
  assert.deepEqual(ws.sent, []);
  assert.equal(ws.closedWith?.code, 1000);
  assert.ok(FakeWebTransport.instances[0].closeCalls.length >= 1);
  assert.deepEqual(FakeWebTransport.instances[0].controlWritten, []);
  assert.deepEqual(seen.closed, []);
});

test("a relay that speaks another protocol version is not retried over the WebSocket", async () => {
  const g = /** @type {any} */ (globalThis);
  g.fetch = async () => new Response(JSON.stringify({ quic_port: 4433, path: "/chat", protocol_version: 999 }), { status: 200 });
  FakeWebSocket.mode = "open";
  const { handlers: h } = handlers();
  await assert.rejects(connectRelay(h, HELLO, BASE, { headStartMs: 60_000 }), (e) => e instanceof ConnectError && e.stage === "version");
  assert.equal(FakeWebSocket.instances.length, 0);
});
