// @ts-check
/**
 * @file The JavaScript codec against duet-proto's test vectors (shared/vectors.json):
 * every vector decodes to its stated value and encodes back byte for byte, the limits and
 * error codes match, and no input of any shape makes a decoder throw anything but
 * DecodeError.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import * as proto from "../app/wire/protocol.js";
import { DecodeError, Reader, Writer, fromHex, toHex } from "../app/wire/postcard.js";
import { fromSerde, loadVectors, toSerde } from "./serde.js";

const doc = loadVectors();

/** @type {Record<string, {decode: (b: Uint8Array) => any, encode: (m: any) => Uint8Array}>} */
const CODECS = {
  ClientMsg: { decode: proto.decodeClientMsg, encode: proto.encodeClientMsg },
  ServerMsg: { decode: proto.decodeServerMsg, encode: proto.encodeServerMsg },
  ChatFrame: { decode: proto.decodeChatFrame, encode: proto.encodeChatFrame },
  MediaHeader: {
    decode: (b) => {
      const { header, offset } = proto.readDatagram(b);
      assert.equal(offset, b.length, "a header-only vector has no payload");
      return header;
    },
    encode: proto.encodeMediaHeader,
  },
};

test("vectors.json covers every kind and every message variant", () => {
  const kinds = new Set(doc.vectors.map((/** @type {any} */ v) => v.kind));
  assert.deepEqual([...kinds].sort(), ["ChatFrame", "ClientMsg", "MediaHeader", "ServerMsg"]);
  const seen = new Set();
  for (const v of doc.vectors) {
    if (v.kind === "MediaHeader") continue;
    seen.add(`${v.kind}:${typeof v.value === "string" ? v.value : Object.keys(v.value)[0]}`);
  }
  for (const t of ["Hello", "Next", "Leave", "RequestKeyframe", "ReceiverReport", "Report", "Caps", "Nack"]) assert.ok(seen.has(`ClientMsg:${t}`), t);
  for (const t of ["Welcome", "Queued", "Matched", "PeerLeft", "PeerReconnecting", "PeerReturned", "KeyframeRequested", "PeerReport", "Stats", "Error", "PeerNack", "Draining"]) {
    assert.ok(seen.has(`ServerMsg:${t}`), t);
  }
  for (const t of ["KeyShare"]) assert.ok(seen.has(`ClientMsg:${t}`), t);
  for (const t of ["PeerTyping", "PeerKey"]) assert.ok(seen.has(`ServerMsg:${t}`), t);
  assert.ok(seen.has("ChatFrame:Open") && seen.has("ChatFrame:Line") && seen.has("ChatFrame:Sealed"));
  assert.ok(doc.vectors.length >= 40);
});

for (const v of doc.vectors) {
  test(`vector ${v.name} (${v.kind}) decodes to its value and re-encodes byte for byte`, () => {
    const codec = CODECS[v.kind];
    assert.ok(codec, `unknown kind ${v.kind}`);
    const bytes = fromHex(v.hex);
    const decoded = codec.decode(bytes);
    assert.deepStrictEqual(toSerde(v.kind, decoded), v.value);
    assert.equal(toHex(codec.encode(decoded)), v.hex, "re-encoding the decoded value");
    // Encoding from the stated value checks the encoder on its own, not just a round trip.
    assert.equal(toHex(codec.encode(fromSerde(v.kind, v.value))), v.hex, "encoding the stated value");
    if (v.kind !== "MediaHeader") {
      assert.equal(toHex(proto.encodeFrame(bytes)), v.frame_hex);
      const reader = new proto.FrameReader();
      reader.push(fromHex(v.frame_hex));
      const body = reader.next();
      assert.ok(body);
      assert.equal(toHex(body), v.hex);
      assert.equal(reader.next(), null);
      assert.equal(reader.pending, 0);
    } else {
      assert.equal(v.frame_hex, null);
      // A payload after the header is left alone.
      const withPayload = proto.encodeDatagram(fromSerde(v.kind, v.value), Uint8Array.of(9, 8, 7));
      const { offset } = proto.readDatagram(withPayload);
      assert.deepEqual(Array.from(withPayload.subarray(offset)), [9, 8, 7]);
    }
  });

  test(`vector ${v.name}: every truncation and a trailing byte are refused with DecodeError`, () => {
    const codec = CODECS[v.kind];
    const bytes = fromHex(v.hex);
    for (let len = 0; len < bytes.length; len++) {
      assert.throws(() => codec.decode(bytes.subarray(0, len)), DecodeError, `truncated to ${len}`);
    }
    if (v.kind !== "MediaHeader") {
      assert.throws(() => codec.decode(Uint8Array.from([...bytes, 0])), DecodeError);
    }
  });
}

test("the JavaScript limits, error codes and version match duet-proto's", () => {
  const mine = {
    MAX_FRAME_BYTES: proto.MAX_FRAME_BYTES,
    MAX_NAME_BYTES: proto.MAX_NAME_BYTES,
    MAX_INTERESTS: proto.MAX_INTERESTS,
    MAX_INTEREST_BYTES: proto.MAX_INTEREST_BYTES,
    MAX_CHAT_BYTES: proto.MAX_CHAT_BYTES,
    MAX_SEALED_CHAT_BYTES: proto.MAX_SEALED_CHAT_BYTES,
    MAX_MEDIA_DATAGRAM_BYTES: proto.MAX_MEDIA_DATAGRAM_BYTES,
    MAX_MEDIA_HEADER_BYTES: proto.MAX_MEDIA_HEADER_BYTES,
    MAX_FRAGMENTS: proto.MAX_FRAGMENTS,
    MAX_CODECS: proto.MAX_CODECS,
    MAX_NACK_FRAGMENTS: proto.MAX_NACK_FRAGMENTS,
  };
  // Every limit the file states must be mirrored here (a new one fails this test).
  for (const key of Object.keys(doc.limits)) assert.ok(key in mine, `limit ${key} is not mirrored in protocol.js`);
  assert.deepStrictEqual(mine, doc.limits);
  assert.deepStrictEqual({ ...proto.ERROR_CODES }, doc.error_codes);
  assert.equal(proto.PROTOCOL_VERSION, doc.protocol_version);
  assert.equal(proto.errorCodeName(9), "bad_resume_token");
  assert.equal(proto.errorCodeName(999), "unknown");
});

test("the WebSocket fallback's path, kinds, close-code base and message cap match duet-proto's", () => {
  const mine = {
    WS_PATH: proto.WS_PATH,
    KIND_MEDIA: proto.WS_KIND_MEDIA,
    KIND_CONTROL: proto.WS_KIND_CONTROL,
    KIND_CHAT: proto.WS_KIND_CHAT,
    CLOSE_CODE_BASE: proto.WS_CLOSE_CODE_BASE,
    MAX_WS_MESSAGE_BYTES: proto.MAX_WS_MESSAGE_BYTES,
  };
  assert.ok(doc.websocket, "vectors.json has no websocket object");
  // Every constant the file states must be mirrored here (a new one fails this test).
  for (const key of Object.keys(doc.websocket)) assert.ok(key in mine, `websocket constant ${key} is not mirrored in protocol.js`);
  assert.deepStrictEqual(mine, doc.websocket);
  assert.equal(proto.MAX_WS_MESSAGE_BYTES, proto.MAX_FRAME_BYTES + 1);
  assert.ok(proto.MAX_MEDIA_DATAGRAM_BYTES + 1 <= proto.MAX_WS_MESSAGE_BYTES);
});

test("the widest valid media header fits MAX_MEDIA_HEADER_BYTES", () => {
  const v = doc.vectors.find((/** @type {any} */ x) => x.name === "media_max");
  // Every u64/u32 at its widest; the u16 fragment fields stop at 256 (2 bytes of the 3 allowed).
  assert.equal(fromHex(v.hex).length, proto.MAX_MEDIA_HEADER_BYTES - 2);
});

test("varints refuse overflow and overlong encodings as postcard does", () => {
  // u16: at most 3 bytes, and the third carries at most 2 bits.
  assert.equal(new Reader(Uint8Array.of(0xff, 0xff, 0x03)).u16(), 0xffff);
  assert.throws(() => new Reader(Uint8Array.of(0xff, 0xff, 0x04)).u16(), DecodeError);
  assert.throws(() => new Reader(Uint8Array.of(0x80, 0x80, 0x80, 0x01)).u16(), DecodeError);
  // u32 max and one past it.
  assert.equal(new Reader(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0x0f)).u32(), 0xffffffff);
  assert.throws(() => new Reader(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0x10)).u32(), DecodeError);
  // u64 max and one past it.
  const max = Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01);
  assert.equal(new Reader(max).u64(), (1n << 64n) - 1n);
  const over = max.slice();
  over[9] = 0x02;
  assert.throws(() => new Reader(over).u64(), DecodeError);
  // The writer refuses values its type cannot hold.
  assert.throws(() => new Writer().u16(65536), RangeError);
  assert.throws(() => new Writer().u64(1n << 64n), RangeError);
  assert.throws(() => new Writer().u32(-1), RangeError);
});

test("strings must be valid UTF-8 and lengths must fit the input", () => {
  // ChatFrame::Line with an invalid UTF-8 byte.
  assert.throws(() => proto.decodeChatFrame(Uint8Array.of(1, 1, 0xff)), DecodeError);
  // A sequence that claims four billion items in a few bytes: refused before allocating.
  assert.throws(() => proto.decodeServerMsg(Uint8Array.of(2, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f)), DecodeError);
  // Unknown variants.
  assert.throws(() => proto.decodeClientMsg(Uint8Array.of(6)), DecodeError);
  assert.throws(() => proto.decodeServerMsg(Uint8Array.of(10)), DecodeError);
  assert.throws(() => proto.decodeClientMsg(Uint8Array.of(5, 5)), DecodeError);
  assert.throws(() => proto.decodeServerMsg(Uint8Array.of(3, 4)), DecodeError);
  // Invalid bool and option tags.
  assert.throws(() => proto.decodeServerMsg(Uint8Array.of(9, 1, 0, 2)), DecodeError);
});

test("a chat line over MAX_CHAT_BYTES is refused; one at the limit is not", () => {
  const atLimit = proto.encodeChatFrame({ type: "Line", text: "é".repeat(proto.MAX_CHAT_BYTES / 2) });
  assert.equal(proto.decodeChatFrame(atLimit).type, "Line");
  const over = proto.encodeChatFrame({ type: "Line", text: "a".repeat(proto.MAX_CHAT_BYTES + 1) });
  assert.throws(() => proto.decodeChatFrame(over), DecodeError);
});

test("Hello over its field limits is refused by decode and reported by helloProblem", () => {
  /** @type {import("../app/wire/protocol.js").MediaCaps} */
  const media = { decode: ["Vp8", "Vp9"], encode: ["Vp8"], hardware_encode: [] };
  const ok = { version: 1, name: "n".repeat(64), interests: Array(8).fill("i".repeat(32)), resume: null, visitor: null, media };
  assert.equal(proto.helloProblem(ok), null);
  assert.equal(proto.decodeClientMsg(proto.encodeClientMsg({ type: "Hello", ...ok })).type, "Hello");
  for (const bad of [
    { ...ok, name: "é".repeat(33) },
    { ...ok, interests: Array(9).fill("x") },
    { ...ok, interests: ["x".repeat(33)] },
    { ...ok, media: { ...media, decode: Array(9).fill("Vp8") } },
  ]) {
    assert.ok(proto.helloProblem(bad));
    assert.throws(() => proto.decodeClientMsg(proto.encodeClientMsg({ type: "Hello", ...bad })), DecodeError);
  }
});

test("media datagrams: size, track and fragment fields are checked", () => {
  const h = { match_id: 7n, track: proto.TRACK_VIDEO, seq: 1, frame: 1, frag_index: 0, frag_count: 1, keyframe: false, capture_us: 5n, ref_frame: 0 };
  assert.throws(() => proto.readDatagram(proto.encodeDatagram({ ...h, frag_index: 3, frag_count: 3 }, new Uint8Array(0))), DecodeError);
  assert.throws(() => proto.readDatagram(proto.encodeDatagram({ ...h, frag_count: 0 }, new Uint8Array(0))), DecodeError);
  assert.throws(() => proto.readDatagram(proto.encodeDatagram({ ...h, frag_index: 0, frag_count: 257 }, new Uint8Array(0))), DecodeError);
  assert.throws(() => proto.readDatagram(proto.encodeDatagram({ ...h, track: 3 }, new Uint8Array(0))), DecodeError);
  assert.throws(() => proto.readDatagram(proto.encodeDatagram(h, new Uint8Array(proto.MAX_MEDIA_DATAGRAM_BYTES))), DecodeError);
  const dg = proto.encodeDatagram(h, new Uint8Array(proto.MAX_MEDIA_DATAGRAM_BYTES - 20));
  assert.equal(proto.readDatagram(dg).header.match_id, 7n);
});

test("FrameReader cuts frames out of arbitrary chunks and refuses an oversized prefix at once", () => {
  const a = proto.encodeFrame(proto.encodeClientMsg({ type: "Leave" }));
  const b = proto.encodeFrame(new Uint8Array(300).fill(7));
  const all = Uint8Array.from([...a, ...b]);
  for (const step of [1, 2, 3, 7, all.length]) {
    const r = new proto.FrameReader();
    const out = [];
    for (let i = 0; i < all.length; i += step) {
      r.push(all.subarray(i, i + step));
      for (let f = r.next(); f; f = r.next()) out.push(Array.from(f));
    }
    assert.deepEqual(out, [[2], Array(300).fill(7)]);
    assert.equal(r.pending, 0);
  }
  const r = new proto.FrameReader();
  r.push(Uint8Array.of(0xff, 0xff));
  assert.throws(() => r.next(), DecodeError);
  assert.throws(() => proto.encodeFrame(new Uint8Array(proto.MAX_FRAME_BYTES + 1)), RangeError);
  assert.equal(proto.encodeFrame(new Uint8Array(proto.MAX_FRAME_BYTES)).length, proto.MAX_FRAME_BYTES + 2);
});

test("random and mutated input never makes a decoder throw anything but DecodeError", () => {
  // A fixed-seed generator: same bytes every run.
  let seed = 0x2545f491;
  const rand = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 0x100000000;
  };
  const bodies = doc.vectors.map((/** @type {any} */ v) => fromHex(v.hex));
  const decoders = [proto.decodeClientMsg, proto.decodeServerMsg, proto.decodeChatFrame, proto.readDatagram];
  let decoded = 0;
  for (let i = 0; i < 20000; i++) {
    let input;
    if (i % 2 === 0) {
      input = new Uint8Array(Math.floor(rand() * 48));
      for (let j = 0; j < input.length; j++) input[j] = Math.floor(rand() * 256);
    } else {
      input = bodies[Math.floor(rand() * bodies.length)].slice();
      const flips = 1 + Math.floor(rand() * 3);
      for (let k = 0; k < flips && input.length > 0; k++) input[Math.floor(rand() * input.length)] = Math.floor(rand() * 256);
    }
    for (const decode of decoders) {
      try {
        decode(input);
        decoded++;
      } catch (e) {
        if (!(e instanceof DecodeError)) throw new Error(`${decode.name} threw ${e} on ${toHex(input)}`);
      }
    }
  }
  assert.ok(decoded > 0, "some mutated inputs should still decode");
});

test("chooseCodec makes the relay's choice: hardware first, then the sender's order", () => {
  /** @type {import("../app/wire/protocol.js").MediaCaps} */
  const phone = { decode: ["Vp8", "H264"], encode: ["Vp9", "Vp8", "H264"], hardware_encode: ["H264"] };
  /** @type {import("../app/wire/protocol.js").MediaCaps} */
  const desktop = { decode: ["Vp8", "Vp9", "Av1", "H264"], encode: ["Vp9", "Vp8"], hardware_encode: [] };
  assert.equal(proto.chooseCodec(phone, desktop), "H264");
  assert.equal(proto.chooseCodec(desktop, phone), "Vp8");
  assert.equal(proto.chooseCodec(desktop, { decode: [], encode: [], hardware_encode: [] }), null);
});
