// @ts-check
/**
 * @file The WebSocket fallback session (engine/ws-session.js) against a fake WebSocket:
 * what it sends (Hello first, then control, chat and media each with their kind byte),
 * media dropped at the sender when the socket backs up (a frame at a time), what it does
 * with the relay's messages (each kind to its handler, chat only for the current pairing,
 * anything malformed fatal), and how a close reads.
 */

import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import {
  ERROR_CODES,
  MAX_WS_MESSAGE_BYTES,
  TRACK_AUDIO,
  TRACK_VIDEO,
  TRACK_VIDEO_PARITY,
  WS_KIND_CHAT,
  WS_KIND_CONTROL,
  WS_KIND_MEDIA,
  decodeChatFrame,
  decodeClientMsg,
  encodeChatFrame,
  encodeClientMsg,
  encodeDatagram,
  encodeServerMsg,
  readDatagram,
} from "../app/wire/protocol.js";
import { WsSession, errorCodeOfClose, webSocketUrl } from "../app/engine/ws-session.js";
import { ConnectError, describeErrorCode } from "../app/engine/session.js";
import { FakeWebSocket, HELLO, installFakes, settle } from "./fake-transports.js";

/** @typedef {import("../app/wire/protocol.js").ServerMsg} ServerMsg */
/** @typedef {import("../app/engine/session.js").CloseInfo} CloseInfo */

const BASE = new URL("https://duet.example:8443/");

beforeEach(() => installFakes());

/** @param {string} text @returns {{type: "Line", text: string}} */
function line(text) {
  return { type: "Line", text };
}

/** A session and what reached its handlers. */
function makeSession() {
  const seen = {
    /** @type {ServerMsg[]} */
    messages: [],
    /** @type {[bigint, string][]} */
    lines: [],
    /** @type {Uint8Array[]} */
    datagrams: [],
    /** @type {CloseInfo[]} */
    closed: [],
  };
  const session = new WsSession({
    onMessage: (m) => seen.messages.push(m),
    // A sealed line is noted by its number (opening it is the worker's).
    onChatFrame: (id, frame) => seen.lines.push([id, frame.type === "Line" ? frame.text : `sealed #${frame.number}`]),
    onDatagram: (d) => seen.datagrams.push(Uint8Array.from(d)),
    onClosed: (info) => seen.closed.push(info),
  });
  return { session, seen };
}

/** A session whose socket is open and whose Hello is sent. */
async function connected() {
  const { session, seen } = makeSession();
  const done = session.connect(HELLO, BASE);
  const ws = FakeWebSocket.instances[FakeWebSocket.instances.length - 1];
  ws.accept();
  await done;
  return { session, seen, ws };
}

/** @param {number} kind @param {Uint8Array} body @returns {ArrayBuffer} */
function message(kind, body) {
  const out = new Uint8Array(1 + body.length);
  out[0] = kind;
  out.set(body, 1);
  return out.buffer;
}

/**
 * @param {number} track @param {number} frame @param {number} index @param {number} count
 * @param {number} [size] payload bytes
 */
function datagram(track, frame, index, count, size = 900) {
  return encodeDatagram(
    { match_id: 5n, track, seq: frame * 10 + index, frame, frag_index: index, frag_count: count, keyframe: false, capture_us: 1n, ref_frame: frame - 1 },
    new Uint8Array(size).fill(frame),
  );
}

/** @param {Uint8Array} sent @returns {[number, Uint8Array]} kind and body */
function split(sent) {
  return [sent[0], sent.subarray(1)];
}

test("the URL is the page's origin at /ws, wss under https; close codes carry the relay's error code", () => {
  assert.equal(webSocketUrl(new URL("https://duet.example:8443/call?x=1")), "wss://duet.example:8443/ws");
  assert.equal(webSocketUrl(new URL("http://127.0.0.1:8080/")), "ws://127.0.0.1:8080/ws");
  assert.equal(webSocketUrl(new URL("http://[::1]:8080/")), "ws://[::1]:8080/ws");
  assert.equal(errorCodeOfClose(4006), 6);
  assert.equal(errorCodeOfClose(4999), 999);
  assert.equal(errorCodeOfClose(4000), null);
  assert.equal(errorCodeOfClose(5000), null);
  assert.equal(errorCodeOfClose(1000), null);
});

test("Hello is the first message, of the control kind, exactly the postcard ClientMsg without a length prefix", async () => {
  const { session, ws } = await connected();
  assert.equal(ws.url, "wss://duet.example:8443/ws");
  assert.equal(ws.binaryType, "arraybuffer");
  assert.equal(session.transport, "websocket");
  assert.equal(ws.sent.length, 1);
  const [kind, body] = split(ws.sent[0]);
  assert.equal(kind, WS_KIND_CONTROL);
  assert.deepEqual(body, encodeClientMsg({ type: "Hello", ...HELLO }));
  assert.deepEqual(decodeClientMsg(body), { type: "Hello", ...HELLO });
  assert.equal(session.send({ type: "Next", match_id: null }), true);
  const [kind2, body2] = split(ws.sent[1]);
  assert.equal(kind2, WS_KIND_CONTROL);
  assert.deepEqual(decodeClientMsg(body2), { type: "Next", match_id: null });
});

test("nothing is sent before the socket opens, and a close() while connecting sends no Hello", async () => {
  const { session, seen } = makeSession();
  const done = session.connect(HELLO, BASE);
  const ws = FakeWebSocket.instances[0];
  assert.equal(session.send({ type: "Leave" }), false);
  session.close("stopped");
  await assert.rejects(done, (e) => e instanceof ConnectError && /cancelled/.test(e.message));
  ws.accept(); // a late open changes nothing
  await settle();
  assert.equal(ws.sent.length, 0);
  assert.deepEqual(ws.closedWith, { code: 1000, reason: "stopped" });
  assert.equal(seen.closed.length, 1);
  assert.equal(seen.closed[0].byUs, true);
});

test("a failed handshake rejects with a ConnectError that names the WebSocket URL", async () => {
  const { session } = makeSession();
  const done = session.connect(HELLO, BASE);
  FakeWebSocket.instances[0].fail();
  await assert.rejects(done, (e) => e instanceof ConnectError && e.message.includes("wss://duet.example:8443/ws") && e.stage === "handshake");
});

test("media datagrams go out with kind 0 and the same bytes", async () => {
  const { session, ws } = await connected();
  const d = datagram(TRACK_VIDEO, 1, 0, 1);
  assert.equal(session.sendDatagram(d), true);
  const [kind, body] = split(ws.sent[1]);
  assert.equal(kind, WS_KIND_MEDIA);
  assert.deepEqual(body, d);
  assert.equal(session.datagramsSent, 1);
  assert.equal(session.datagramsDropped, 0);
  // Over the media limit: dropped, never sent.
  assert.equal(session.sendDatagram(new Uint8Array(1101)), false);
  assert.equal(session.datagramsDropped, 1);
  assert.equal(ws.sent.length, 2);
});

test("a frame that starts while the socket holds too much is dropped whole, parity included; other tracks and the next frame go on", async () => {
  const { session, ws } = await connected();
  ws.bufferedAmount = 40_000; // above the high-water mark
  assert.equal(session.sendDatagram(datagram(TRACK_VIDEO, 7, 0, 3)), false);
  assert.equal(session.datagramsDropped, 1);
  ws.bufferedAmount = 0; // the socket drained, but the frame is already broken
  assert.equal(session.sendDatagram(datagram(TRACK_VIDEO, 7, 1, 3)), false);
  // Audio is judged on its own.
  assert.equal(session.sendDatagram(datagram(TRACK_AUDIO, 3, 0, 1, 100)), true);
  assert.equal(session.sendDatagram(datagram(TRACK_VIDEO, 7, 2, 3)), false);
  assert.equal(session.sendDatagram(datagram(TRACK_VIDEO_PARITY, 7, 0, 1)), false);
  assert.equal(session.datagramsDropped, 4);
  assert.equal(session.sendDatagram(datagram(TRACK_VIDEO, 8, 0, 2)), true);
  // A frame that started is sent whole, even as its own fragments fill the socket.
  ws.bufferedAmount = 40_000;
  assert.equal(session.sendDatagram(datagram(TRACK_VIDEO, 8, 1, 2)), true);
  assert.equal(session.sendDatagram(datagram(TRACK_VIDEO, 9, 0, 1)), false);
  assert.equal(session.sendDatagram(datagram(TRACK_AUDIO, 4, 0, 1, 100)), false);
  assert.equal(session.datagramsDropped, 6);
  assert.equal(session.datagramsSent, 3);
  const sent = ws.sent.slice(1).map((m) => {
    const [kind, body] = split(m);
    const { header } = readDatagram(body);
    return [kind, header.track, header.frame, header.frag_index];
  });
  assert.deepEqual(sent, [
    [WS_KIND_MEDIA, TRACK_AUDIO, 3, 0],
    [WS_KIND_MEDIA, TRACK_VIDEO, 8, 0],
    [WS_KIND_MEDIA, TRACK_VIDEO, 8, 1],
  ]);
});

test("control and chat are sent however much the socket holds", async () => {
  const { session, ws } = await connected();
  ws.bufferedAmount = 10_000_000;
  session.setMatch(5n);
  assert.equal(session.send({ type: "RequestKeyframe", match_id: 5n }), true);
  await session.sendChat(5n, line("still here"));
  assert.deepEqual(
    ws.sent.slice(1).map((m) => m[0]),
    [WS_KIND_CONTROL, WS_KIND_CHAT, WS_KIND_CHAT],
  );
});

test("chat: Open precedes the first line of a pairing, once, and again for the next pairing", async () => {
  const { session, ws } = await connected();
  await assert.rejects(session.sendChat(5n, line("nobody")), /not connected to anyone/);
  session.setMatch(5n);
  await session.sendChat(5n, line("hi"));
  await session.sendChat(5n, { type: "Sealed", number: 0, sealed: new Uint8Array(20).fill(7) });
  session.setMatch(6n);
  // Sealed for the partner who has gone: refused, nothing sent.
  await assert.rejects(session.sendChat(5n, line("for the last one")), /partner changed/);
  await session.sendChat(6n, line("hello again"));
  // Between pairings and back (a resume): the pairing's chat is opened again.
  session.setMatch(null);
  session.setMatch(6n);
  await session.sendChat(6n, line("back"));
  const chat = ws.sent.slice(1).map((m) => {
    const [kind, body] = split(m);
    assert.equal(kind, WS_KIND_CHAT);
    return decodeChatFrame(body);
  });
  assert.deepEqual(chat, [
    { type: "Open", match_id: 5n },
    { type: "Line", text: "hi" },
    { type: "Sealed", number: 0, sealed: new Uint8Array(20).fill(7) },
    { type: "Open", match_id: 6n },
    { type: "Line", text: "hello again" },
    { type: "Open", match_id: 6n },
    { type: "Line", text: "back" },
  ]);
});

test("incoming control, chat and media reach their handlers", async () => {
  const { session, seen, ws } = await connected();
  /** @type {ServerMsg} */
  const welcome = { type: "Welcome", session_id: 9n, resume_token: new Uint8Array(16).fill(3), resumed: false };
  ws.deliver(message(WS_KIND_CONTROL, encodeServerMsg(welcome)));
  assert.deepEqual(seen.messages, [welcome]);
  session.setMatch(5n);
  ws.deliver(message(WS_KIND_CHAT, encodeChatFrame({ type: "Open", match_id: 5n })));
  ws.deliver(message(WS_KIND_CHAT, encodeChatFrame({ type: "Line", text: "hello" })));
  ws.deliver(message(WS_KIND_CHAT, encodeChatFrame({ type: "Sealed", number: 3, sealed: new Uint8Array(17) })));
  assert.deepEqual(seen.lines, [
    [5n, "hello"],
    [5n, "sealed #3"],
  ]);
  const d = datagram(TRACK_VIDEO, 2, 0, 1);
  ws.deliver(message(WS_KIND_MEDIA, d));
  assert.deepEqual(seen.datagrams, [d]);
  assert.equal(seen.closed.length, 0);
});

test("chat lines for a pairing that is not the current one are dropped", async () => {
  const { session, seen, ws } = await connected();
  session.setMatch(5n);
  // A line with no Open before it belongs to nobody.
  ws.deliver(message(WS_KIND_CHAT, encodeChatFrame({ type: "Line", text: "orphan" })));
  ws.deliver(message(WS_KIND_CHAT, encodeChatFrame({ type: "Open", match_id: 5n })));
  ws.deliver(message(WS_KIND_CHAT, encodeChatFrame({ type: "Line", text: "first" })));
  // The pairing ended (Next): its late lines are not shown.
  session.setMatch(6n);
  ws.deliver(message(WS_KIND_CHAT, encodeChatFrame({ type: "Line", text: "late" })));
  assert.deepEqual(seen.lines, [[5n, "first"]]);
  assert.equal(seen.closed.length, 0);
});

test("chat for a pairing not heard of yet waits for its Matched, then arrives in order", async () => {
  const { session, seen, ws } = await connected();
  ws.deliver(message(WS_KIND_CHAT, encodeChatFrame({ type: "Open", match_id: 8n })));
  ws.deliver(message(WS_KIND_CHAT, encodeChatFrame({ type: "Line", text: "one" })));
  ws.deliver(message(WS_KIND_CHAT, encodeChatFrame({ type: "Line", text: "two" })));
  assert.deepEqual(seen.lines, []);
  session.setMatch(8n);
  await settle();
  ws.deliver(message(WS_KIND_CHAT, encodeChatFrame({ type: "Line", text: "three" })));
  assert.deepEqual(seen.lines, [
    [8n, "one"],
    [8n, "two"],
    [8n, "three"],
  ]);
});

test("chat for a pairing whose Matched never comes is dropped after the wait", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { session, seen } = makeSession();
  // Connect with the mocked clock: the socket opens by hand, so no timer is needed.
  const done = session.connect(HELLO, BASE);
  FakeWebSocket.instances[0].accept();
  await done;
  const sock = FakeWebSocket.instances[0];
  session.setMatch(5n);
  sock.deliver(message(WS_KIND_CHAT, encodeChatFrame({ type: "Open", match_id: 9n })));
  sock.deliver(message(WS_KIND_CHAT, encodeChatFrame({ type: "Line", text: "for someone else" })));
  t.mock.timers.tick(3000);
  for (let i = 0; i < 5; i++) await Promise.resolve();
  session.setMatch(9n); // too late: those lines are gone
  sock.deliver(message(WS_KIND_CHAT, encodeChatFrame({ type: "Line", text: "still not" })));
  for (let i = 0; i < 5; i++) await Promise.resolve();
  assert.deepEqual(seen.lines, []);
  assert.equal(seen.closed.length, 0);
});

for (const [name, data] of /** @type {[string, () => ArrayBuffer | string][]} */ ([
  ["a text message", () => "hello"],
  ["an unknown kind", () => message(7, new Uint8Array(4))],
  ["an oversized message", () => message(WS_KIND_CHAT, new Uint8Array(MAX_WS_MESSAGE_BYTES))],
  ["an empty message", () => new ArrayBuffer(0)],
  ["a control message that does not decode", () => message(WS_KIND_CONTROL, Uint8Array.of(200))],
  ["a media datagram over its limit", () => message(WS_KIND_MEDIA, new Uint8Array(1101))],
])) {
  test(`${name} from the relay ends the session as malformed`, async () => {
    const { session, seen, ws } = await connected();
    ws.deliver(data());
    assert.equal(seen.closed.length, 1);
    assert.equal(seen.closed[0].code, ERROR_CODES.malformed);
    assert.equal(seen.closed[0].byUs, false);
    assert.match(seen.closed[0].reason, /^The relay sent something this page does not understand/);
    assert.equal(ws.closedWith?.code, 4000 + ERROR_CODES.malformed);
    assert.equal(session.closed, true);
    assert.equal(session.send({ type: "Leave" }), false);
    // Nothing more is passed on.
    ws.deliver(message(WS_KIND_CONTROL, encodeServerMsg({ type: "PeerTyping" })));
    assert.deepEqual(seen.messages, []);
  });
}

test("a close with 4006 is server_full in words; a fatal Error before a close wins; other ends are a lost connection", async () => {
  {
    const { seen, ws } = await connected();
    ws.remoteClose(4006, "");
    assert.deepEqual(seen.closed, [{ reason: describeErrorCode(ERROR_CODES.server_full), code: 6, byUs: false }]);
    assert.match(seen.closed[0].reason, /full/);
  }
  {
    const { seen, ws } = await connected();
    ws.deliver(message(WS_KIND_CONTROL, encodeServerMsg({ type: "Error", code: 7, message: "Too many from you.", fatal: true })));
    ws.remoteClose(4007, "Too many from you.");
    assert.deepEqual(seen.closed, [{ reason: "Too many from you.", code: 7, byUs: false }]);
  }
  {
    const { seen, ws } = await connected();
    ws.remoteClose(1006, "");
    assert.deepEqual(seen.closed, [{ reason: "The connection to the relay was lost.", code: null, byUs: false }]);
  }
});

test("close() ends the session with the normal close code 1000, once", async () => {
  const { session, seen, ws } = await connected();
  session.close("page closed");
  assert.deepEqual(ws.closedWith, { code: 1000, reason: "page closed" });
  assert.deepEqual(seen.closed, [{ reason: "page closed", code: null, byUs: true }]);
  session.close("again");
  await settle(); // the socket's own close event changes nothing
  assert.equal(seen.closed.length, 1);
  assert.equal(session.sendDatagram(datagram(TRACK_AUDIO, 1, 0, 1, 10)), false);
  assert.deepEqual(await session.stats(), { rttMs: null, sendRateKbps: null, bytesSent: null });
});
