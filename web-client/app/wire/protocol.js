// @ts-check
/**
 * @file Duet's wire protocol in JavaScript: the same messages, framing, media header and
 * limits as the Rust crate `duet-proto` (shared/src), built on `postcard.js`.
 *
 * Field order is wire order and enum variant order is the variant index, exactly as in
 * `shared/src/control.rs`, `chat.rs` and `media.rs`. The unit tests decode every vector
 * that `duet-proto` generates (shared/vectors.json) and re-encode it byte for byte, and
 * check the limits below against the file, so a drift between the two sides fails a test.
 *
 * Messages are plain objects tagged by `type` (the Rust variant name). `u64` fields
 * (`match_id`, `session_id`, `capture_us`) are `BigInt`s.
 */

import { DecodeError, Reader, Writer, utf8Length } from "./postcard.js";

export { DecodeError };

/** The protocol version sent in `Hello`. */
export const PROTOCOL_VERSION = 4;
/** The WebTransport path on the relay's QUIC port. */
export const SESSION_PATH = "/chat";

// The WebSocket fallback (shared/src/ws.rs): the same messages, one binary WebSocket
// message each, a kind byte and then the body.
/** The WebSocket path on the relay's HTTP(S) port, the page's own origin. */
export const WS_PATH = "/ws";
/** Body: a media datagram exactly as WebTransport carries it. */
export const WS_KIND_MEDIA = 0;
/** Body: one postcard `ClientMsg` / `ServerMsg`, without the control stream's length prefix. */
export const WS_KIND_CONTROL = 1;
/** Body: one postcard `ChatFrame`; a `Line` belongs to the last `Open`. */
export const WS_KIND_CHAT = 2;
/** The relay closes with this plus its error code (4006: server_full). */
export const WS_CLOSE_CODE_BASE = 4000;
/** Largest WebSocket message either side accepts: a frame at MAX_FRAME_BYTES and the kind byte. */
export const MAX_WS_MESSAGE_BYTES = 4097;

// The limits of shared/src/limits.rs (the tests compare them with vectors.json).
export const MAX_FRAME_BYTES = 4096;
export const MAX_NAME_BYTES = 64;
export const MAX_INTERESTS = 8;
export const MAX_INTEREST_BYTES = 32;
export const MAX_CHAT_BYTES = 2000;
/** A sealed chat line: the longest line and its 16-byte tag. */
export const MAX_SEALED_CHAT_BYTES = 2016;
/** An X25519 public key (`KeyShare`, `PeerKey`). */
export const PUBLIC_KEY_BYTES = 32;
export const MAX_MEDIA_DATAGRAM_BYTES = 1100;
export const MAX_MEDIA_HEADER_BYTES = 43;
export const MAX_CODECS = 8;
export const MAX_NACK_FRAGMENTS = 64;
export const MAX_FRAGMENTS = 256;
/** Partial frames a receiver keeps per track (shared/src/limits.rs MAX_FRAMES_IN_REASSEMBLY). */
export const MAX_FRAMES_IN_REASSEMBLY = 4;

/** Wire numbers of `ErrorCode` (shared/src/error.rs `to_code`), also the session close codes. */
export const ERROR_CODES = Object.freeze({
  malformed: 1,
  too_large: 2,
  wrong_state: 3,
  unsupported_version: 4,
  hello_timeout: 5,
  server_full: 6,
  too_many_from_address: 7,
  rate_limited: 8,
  bad_resume_token: 9,
  idle_timeout: 10,
  shutting_down: 11,
  internal: 12,
  cooling_off: 13,
  blocked: 14,
  overloaded: 15,
});

/** @param {number} code @returns {string} the code's stable name, or "unknown" */
export function errorCodeName(code) {
  for (const [name, value] of Object.entries(ERROR_CODES)) if (value === code) return name;
  return "unknown";
}

export const REPORT_REASONS = /** @type {const} */ (["Nudity", "Harassment", "Spam", "Underage", "Other"]);
export const LEAVE_REASONS = /** @type {const} */ (["Next", "Left", "Disconnected", "Reported"]);

/** Video codec families, in `VideoCodec` variant order (shared/src/control.rs). */
export const VIDEO_CODECS = /** @type {const} */ (["Vp8", "Vp9", "Av1", "H264"]);

export const TRACK_AUDIO = 0;
export const TRACK_VIDEO = 1;
/** A video frame's parity datagram (forward error correction; see `Track::VideoParity`). */
export const TRACK_VIDEO_PARITY = 2;

/** @typedef {typeof REPORT_REASONS[number]} ReportReason */
/** @typedef {typeof LEAVE_REASONS[number]} LeaveReason */
/** @typedef {typeof VIDEO_CODECS[number]} VideoCodec */
/**
 * @typedef {{match_id: bigint, loss_permille: number, jitter_ms: number, frames_decoded: number,
 *   bitrate_kbps: number, queue_delay_ms: number}} ReceiverReport
 */
/** @typedef {{decode: VideoCodec[], encode: VideoCodec[], hardware_encode: VideoCodec[]}} MediaCaps */
/** @typedef {{match_id: bigint, frame: number, fragments: number[]}} Nack */
/**
 * @typedef {{version: number, name: string, interests: string[], resume: Uint8Array | null,
 *   visitor: Uint8Array | null, media: MediaCaps}} Hello
 */

/**
 * @typedef {({type: "Hello"} & Hello)
 *   | {type: "Next", match_id: bigint | null} | {type: "Leave"}
 *   | {type: "RequestKeyframe", match_id: bigint}
 *   | ({type: "ReceiverReport"} & ReceiverReport)
 *   | {type: "Report", match_id: bigint, reason: ReportReason}
 *   | ({type: "Caps"} & MediaCaps)
 *   | ({type: "Nack"} & Nack)
 *   | {type: "Typing", match_id: bigint}
 *   | {type: "RequeueWhenLeft", on: boolean}
 *   | {type: "KeyShare", match_id: bigint, public: Uint8Array}
 *   | {type: "NextKey", public: Uint8Array}} ClientMsg
 */

/**
 * @typedef {{type: "Welcome", session_id: bigint, resume_token: Uint8Array, resumed: boolean}
 *   | {type: "Queued", waiting: number}
 *   | {type: "Matched", match_id: bigint, partner_name: string, shared_interests: string[], send_codec: VideoCodec | null, recv_codec: VideoCodec | null, partner_key: Uint8Array | null, your_key: Uint8Array | null}
 *   | {type: "PeerLeft", reason: LeaveReason}
 *   | {type: "PeerReconnecting"} | {type: "PeerReturned"} | {type: "KeyframeRequested"}
 *   | ({type: "PeerReport"} & ReceiverReport)
 *   | {type: "Stats", rtt_us: number, lost_permille: number, send_rate_kbps: number}
 *   | {type: "Error", code: number, message: string, fatal: boolean}
 *   | ({type: "PeerNack"} & Nack)
 *   | {type: "Draining", within_ms: number}
 *   | {type: "PeerTyping"}
 *   | {type: "PeerKey", match_id: bigint, public: Uint8Array}} ServerMsg
 */

/** @typedef {{type: "Open", match_id: bigint} | {type: "Line", text: string} | {type: "Sealed", number: number, sealed: Uint8Array}} ChatFrame */

/**
 * @typedef {object} MediaHeader
 * @property {bigint} match_id
 * @property {number} track TRACK_AUDIO, TRACK_VIDEO or TRACK_VIDEO_PARITY
 * @property {number} seq per-track datagram sequence number
 * @property {number} frame per-track frame number, shared by a frame's fragments
 * @property {number} frag_index
 * @property {number} frag_count
 * @property {boolean} keyframe
 * @property {bigint} capture_us microseconds since the Unix epoch on the sender's clock
 * @property {number} ref_frame the frame this one references (its own number for a keyframe)
 */

const CLIENT_VARIANTS = ["Hello", "Next", "Leave", "RequestKeyframe", "ReceiverReport", "Report", "Caps", "Nack", "Typing", "RequeueWhenLeft", "KeyShare", "NextKey"];
const SERVER_VARIANTS = [
  "Welcome",
  "Queued",
  "Matched",
  "PeerLeft",
  "PeerReconnecting",
  "PeerReturned",
  "KeyframeRequested",
  "PeerReport",
  "Stats",
  "Error",
  "PeerNack",
  "Draining",
  "PeerTyping",
  "PeerKey",
];
const RESUME_TOKEN_BYTES = 16;
const VISITOR_ID_BYTES = 16;

/** @param {Writer} w @param {string[]} items */
function writeStrings(w, items) {
  w.u32(items.length);
  for (const s of items) w.string(s);
}

/** @param {Reader} r @returns {string[]} */
function readStrings(r) {
  const n = r.seqLen();
  /** @type {string[]} */
  const out = [];
  for (let i = 0; i < n; i++) out.push(r.string());
  return out;
}

/** @param {Writer} w @param {ReceiverReport} rep */
function writeReport(w, rep) {
  w.u64(rep.match_id);
  w.u16(rep.loss_permille);
  w.u16(rep.jitter_ms);
  w.u32(rep.frames_decoded);
  w.u32(rep.bitrate_kbps);
  w.u16(rep.queue_delay_ms);
}

/** @param {Reader} r @returns {ReceiverReport} */
function readReport(r) {
  return {
    match_id: r.u64(),
    loss_permille: r.u16(),
    jitter_ms: r.u16(),
    frames_decoded: r.u32(),
    bitrate_kbps: r.u32(),
    queue_delay_ms: r.u16(),
  };
}

/** @param {Writer} w @param {Uint8Array | null} bytes @param {number} len */
function writeOptionalArray(w, bytes, len) {
  if (!bytes) {
    w.u8(0);
    return;
  }
  if (bytes.length !== len) throw new RangeError(`expected ${len} bytes`);
  w.u8(1);
  w.raw(bytes);
}

/** @param {Reader} r @param {number} len @returns {Uint8Array | null} */
function readOptionalArray(r, len) {
  const tag = r.u8();
  if (tag > 1) throw new DecodeError(`invalid option tag ${tag}`);
  return tag === 1 ? r.raw(len).slice() : null;
}

/** @param {Writer} w @param {VideoCodec | null} codec */
function writeOptionalCodec(w, codec) {
  if (codec === null) {
    w.u8(0);
  } else {
    w.u8(1);
    w.u32(VIDEO_CODECS.indexOf(codec));
  }
}

/** @param {Reader} r @returns {VideoCodec} */
function readCodec(r) {
  const i = r.u32();
  const codec = VIDEO_CODECS[i];
  if (!codec) throw new DecodeError(`unknown video codec ${i}`);
  return codec;
}

/** @param {Reader} r @returns {VideoCodec | null} */
function readOptionalCodec(r) {
  const tag = r.u8();
  if (tag > 1) throw new DecodeError(`invalid option tag ${tag}`);
  return tag === 1 ? readCodec(r) : null;
}

/** @param {Writer} w @param {VideoCodec[]} list */
function writeCodecs(w, list) {
  w.u32(list.length);
  for (const c of list) w.u32(VIDEO_CODECS.indexOf(c));
}

/** @param {Reader} r @returns {VideoCodec[]} */
function readCodecs(r) {
  const n = r.seqLen();
  if (n > MAX_CODECS) throw new DecodeError("too many codecs");
  /** @type {VideoCodec[]} */
  const out = [];
  for (let i = 0; i < n; i++) out.push(readCodec(r));
  return out;
}

/** @param {Writer} w @param {MediaCaps} caps */
function writeCaps(w, caps) {
  writeCodecs(w, caps.decode);
  writeCodecs(w, caps.encode);
  writeCodecs(w, caps.hardware_encode);
}

/** @param {Reader} r @returns {MediaCaps} */
function readCaps(r) {
  return { decode: readCodecs(r), encode: readCodecs(r), hardware_encode: readCodecs(r) };
}

/** @param {Writer} w @param {Nack} nack */
function writeNack(w, nack) {
  if (nack.fragments.length > MAX_NACK_FRAGMENTS) throw new RangeError("too many fragments in a Nack");
  w.u64(nack.match_id);
  w.u32(nack.frame);
  w.u32(nack.fragments.length);
  for (const f of nack.fragments) w.u16(f);
}

/** @param {Reader} r @returns {Nack} */
function readNack(r) {
  const match_id = r.u64();
  const frame = r.u32();
  const n = r.seqLen();
  if (n > MAX_NACK_FRAGMENTS) throw new DecodeError("too many fragments in a Nack");
  /** @type {number[]} */
  const fragments = [];
  for (let i = 0; i < n; i++) fragments.push(r.u16());
  return { match_id, frame, fragments };
}

/**
 * The choice `MediaCaps::choose` makes on the relay (shared/src/control.rs): the codec
 * `sender` encodes for `receiver`, a hardware encoder first, then in the sender's order.
 * @param {MediaCaps} sender
 * @param {MediaCaps} receiver
 * @returns {VideoCodec | null}
 */
export function chooseCodec(sender, receiver) {
  const usable = sender.encode.filter((c) => receiver.decode.includes(c));
  return usable.find((c) => sender.hardware_encode.includes(c)) ?? usable[0] ?? null;
}

/**
 * Checks what the relay would refuse in a `Hello` (shared/src/control.rs `Hello::validate`).
 * @param {Hello} hello
 * @returns {string | null} what is wrong, in words for a person, or null
 */
export function helloProblem(hello) {
  if (utf8Length(hello.name) > MAX_NAME_BYTES) return `The name is too long (at most ${MAX_NAME_BYTES} bytes).`;
  if (hello.interests.length > MAX_INTERESTS) return `At most ${MAX_INTERESTS} interests, please.`;
  for (const i of hello.interests) {
    if (utf8Length(i) > MAX_INTEREST_BYTES) return `The interest “${i}” is too long (at most ${MAX_INTEREST_BYTES} bytes).`;
  }
  if (hello.resume && hello.resume.length !== RESUME_TOKEN_BYTES) return "A resume token is 16 bytes.";
  if (hello.visitor && hello.visitor.length !== VISITOR_ID_BYTES) return "A visitor id is 16 bytes.";
  const m = hello.media;
  if (m.decode.length > MAX_CODECS || m.encode.length > MAX_CODECS || m.hardware_encode.length > MAX_CODECS) {
    return `At most ${MAX_CODECS} codecs in each list.`;
  }
  return null;
}

/** @param {ClientMsg} msg @returns {Uint8Array} the postcard body */
export function encodeClientMsg(msg) {
  const w = new Writer();
  w.u32(CLIENT_VARIANTS.indexOf(msg.type));
  switch (msg.type) {
    case "Hello":
      w.u16(msg.version);
      w.string(msg.name);
      writeStrings(w, msg.interests);
      writeOptionalArray(w, msg.resume, RESUME_TOKEN_BYTES);
      writeOptionalArray(w, msg.visitor, VISITOR_ID_BYTES);
      writeCaps(w, msg.media);
      break;
    case "Next":
      if (msg.match_id === null) {
        w.u8(0);
      } else {
        w.u8(1);
        w.u64(msg.match_id);
      }
      break;
    case "RequestKeyframe":
      w.u64(msg.match_id);
      break;
    case "ReceiverReport":
      writeReport(w, msg);
      break;
    case "Report":
      w.u64(msg.match_id);
      w.u32(REPORT_REASONS.indexOf(msg.reason));
      break;
    case "Caps":
      writeCaps(w, msg);
      break;
    case "Nack":
      writeNack(w, msg);
      break;
    case "Typing":
      w.u64(msg.match_id);
      break;
    case "RequeueWhenLeft":
      w.bool(msg.on);
      break;
    case "KeyShare":
      w.u64(msg.match_id);
      writePublicKey(w, msg.public);
      break;
    case "NextKey":
      writePublicKey(w, msg.public);
      break;
    case "Leave":
      break;
  }
  return w.finish();
}

/** @param {Uint8Array} body @returns {ClientMsg} @throws {DecodeError} */
export function decodeClientMsg(body) {
  const r = new Reader(body);
  const variant = r.u32();
  /** @type {ClientMsg} */
  let msg;
  switch (CLIENT_VARIANTS[variant]) {
    case "Hello": {
      const version = r.u16();
      const name = r.string();
      const interests = readStrings(r);
      const resume = readOptionalArray(r, RESUME_TOKEN_BYTES);
      const visitor = readOptionalArray(r, VISITOR_ID_BYTES);
      const media = readCaps(r);
      msg = { type: "Hello", version, name, interests, resume, visitor, media };
      const problem = helloProblem(msg);
      if (problem) throw new DecodeError(problem);
      break;
    }
    case "Next": {
      const tag = r.u8();
      if (tag > 1) throw new DecodeError(`invalid option tag ${tag}`);
      msg = { type: "Next", match_id: tag === 1 ? r.u64() : null };
      break;
    }
    case "Leave":
      msg = { type: "Leave" };
      break;
    case "RequestKeyframe":
      msg = { type: "RequestKeyframe", match_id: r.u64() };
      break;
    case "ReceiverReport":
      msg = { type: "ReceiverReport", ...readReport(r) };
      break;
    case "Report": {
      const match_id = r.u64();
      const reason = REPORT_REASONS[r.u32()];
      if (!reason) throw new DecodeError("unknown report reason");
      msg = { type: "Report", match_id, reason };
      break;
    }
    case "Caps":
      msg = { type: "Caps", ...readCaps(r) };
      break;
    case "Nack":
      msg = { type: "Nack", ...readNack(r) };
      break;
    case "Typing":
      msg = { type: "Typing", match_id: r.u64() };
      break;
    case "RequeueWhenLeft":
      msg = { type: "RequeueWhenLeft", on: r.bool() };
      break;
    case "KeyShare":
      msg = { type: "KeyShare", match_id: r.u64(), public: r.raw(PUBLIC_KEY_BYTES).slice() };
      break;
    case "NextKey":
      msg = { type: "NextKey", public: r.raw(PUBLIC_KEY_BYTES).slice() };
      break;
    default:
      throw new DecodeError(`unknown ClientMsg variant ${variant}`);
  }
  r.end();
  return msg;
}

/** @param {ServerMsg} msg @returns {Uint8Array} the postcard body */
export function encodeServerMsg(msg) {
  const w = new Writer();
  w.u32(SERVER_VARIANTS.indexOf(msg.type));
  switch (msg.type) {
    case "Welcome":
      w.u64(msg.session_id);
      if (msg.resume_token.length !== RESUME_TOKEN_BYTES) throw new RangeError("resume token must be 16 bytes");
      w.raw(msg.resume_token);
      w.bool(msg.resumed);
      break;
    case "Queued":
      w.u32(msg.waiting);
      break;
    case "Matched":
      w.u64(msg.match_id);
      w.string(msg.partner_name);
      writeStrings(w, msg.shared_interests);
      writeOptionalCodec(w, msg.send_codec);
      writeOptionalCodec(w, msg.recv_codec);
      writeOptionalArray(w, msg.partner_key, PUBLIC_KEY_BYTES);
      writeOptionalArray(w, msg.your_key, PUBLIC_KEY_BYTES);
      break;
    case "PeerLeft":
      w.u32(LEAVE_REASONS.indexOf(msg.reason));
      break;
    case "PeerReport":
      writeReport(w, msg);
      break;
    case "Stats":
      w.u32(msg.rtt_us);
      w.u16(msg.lost_permille);
      w.u32(msg.send_rate_kbps);
      break;
    case "Error":
      w.u32(msg.code);
      w.string(msg.message);
      w.bool(msg.fatal);
      break;
    case "PeerNack":
      writeNack(w, msg);
      break;
    case "Draining":
      w.u32(msg.within_ms);
      break;
    case "PeerKey":
      w.u64(msg.match_id);
      writePublicKey(w, msg.public);
      break;
    case "PeerReconnecting":
    case "PeerReturned":
    case "KeyframeRequested":
    case "PeerTyping":
      break;
  }
  return w.finish();
}

/** @param {Writer} w @param {Uint8Array} key */
function writePublicKey(w, key) {
  if (key.length !== PUBLIC_KEY_BYTES) throw new RangeError(`a public key must be ${PUBLIC_KEY_BYTES} bytes`);
  w.raw(key);
}

/** @param {Uint8Array} body @returns {ServerMsg} @throws {DecodeError} */
export function decodeServerMsg(body) {
  const r = new Reader(body);
  const variant = r.u32();
  /** @type {ServerMsg} */
  let msg;
  switch (SERVER_VARIANTS[variant]) {
    case "Welcome":
      msg = { type: "Welcome", session_id: r.u64(), resume_token: r.raw(RESUME_TOKEN_BYTES).slice(), resumed: r.bool() };
      break;
    case "Queued":
      msg = { type: "Queued", waiting: r.u32() };
      break;
    case "Matched":
      msg = {
        type: "Matched",
        match_id: r.u64(),
        partner_name: r.string(),
        shared_interests: readStrings(r),
        send_codec: readOptionalCodec(r),
        recv_codec: readOptionalCodec(r),
        partner_key: readOptionalArray(r, PUBLIC_KEY_BYTES),
        your_key: readOptionalArray(r, PUBLIC_KEY_BYTES),
      };
      break;
    case "PeerLeft": {
      const reason = LEAVE_REASONS[r.u32()];
      if (!reason) throw new DecodeError("unknown leave reason");
      msg = { type: "PeerLeft", reason };
      break;
    }
    case "PeerReconnecting":
      msg = { type: "PeerReconnecting" };
      break;
    case "PeerReturned":
      msg = { type: "PeerReturned" };
      break;
    case "KeyframeRequested":
      msg = { type: "KeyframeRequested" };
      break;
    case "PeerReport":
      msg = { type: "PeerReport", ...readReport(r) };
      break;
    case "Stats":
      msg = { type: "Stats", rtt_us: r.u32(), lost_permille: r.u16(), send_rate_kbps: r.u32() };
      break;
    case "Error":
      // An error code this client does not know is still shown (errorCodeName says
      // "unknown"): a newer relay's refusal must not turn into a decode failure.
      msg = { type: "Error", code: r.u32(), message: r.string(), fatal: r.bool() };
      break;
    case "PeerNack":
      msg = { type: "PeerNack", ...readNack(r) };
      break;
    case "Draining":
      msg = { type: "Draining", within_ms: r.u32() };
      break;
    case "PeerTyping":
      msg = { type: "PeerTyping" };
      break;
    case "PeerKey":
      msg = { type: "PeerKey", match_id: r.u64(), public: r.raw(PUBLIC_KEY_BYTES).slice() };
      break;
    default:
      throw new DecodeError(`unknown ServerMsg variant ${variant}`);
  }
  r.end();
  return msg;
}

/** @param {ChatFrame} frame @returns {Uint8Array} the postcard body */
export function encodeChatFrame(frame) {
  const w = new Writer();
  if (frame.type === "Open") {
    w.u32(0);
    w.u64(frame.match_id);
  } else if (frame.type === "Line") {
    w.u32(1);
    w.string(frame.text);
  } else {
    if (frame.sealed.length > MAX_SEALED_CHAT_BYTES) throw new RangeError("sealed chat line is over its limit");
    w.u32(2);
    w.u32(frame.number);
    w.bytes(frame.sealed);
  }
  return w.finish();
}

/** @param {Uint8Array} body @returns {ChatFrame} @throws {DecodeError} */
export function decodeChatFrame(body) {
  const r = new Reader(body);
  const variant = r.u32();
  /** @type {ChatFrame} */
  let frame;
  if (variant === 0) {
    frame = { type: "Open", match_id: r.u64() };
  } else if (variant === 1) {
    const text = r.string();
    if (utf8Length(text) > MAX_CHAT_BYTES) throw new DecodeError("chat line is over its limit");
    frame = { type: "Line", text };
  } else if (variant === 2) {
    const number = r.u32();
    const sealed = r.bytesPrefixed();
    if (sealed.length > MAX_SEALED_CHAT_BYTES) throw new DecodeError("sealed chat line is over its limit");
    frame = { type: "Sealed", number, sealed: sealed.slice() };
  } else {
    throw new DecodeError(`unknown ChatFrame variant ${variant}`);
  }
  r.end();
  return frame;
}

/** @param {Writer} w @param {MediaHeader} h */
function writeMediaHeader(w, h) {
  w.u64(h.match_id);
  w.u32(h.track);
  w.u32(h.seq);
  w.u32(h.frame);
  w.u16(h.frag_index);
  w.u16(h.frag_count);
  w.bool(h.keyframe);
  w.u64(h.capture_us);
  w.u32(h.ref_frame);
}

/**
 * The header alone, as `MediaHeader::write_datagram` writes it before the payload.
 * @param {MediaHeader} h
 * @returns {Uint8Array}
 */
export function encodeMediaHeader(h) {
  const w = new Writer();
  writeMediaHeader(w, h);
  return w.finish();
}

/**
 * A whole datagram: header then payload.
 * @param {MediaHeader} h
 * @param {Uint8Array} payload
 * @returns {Uint8Array}
 */
export function encodeDatagram(h, payload) {
  const w = new Writer();
  writeMediaHeader(w, h);
  w.raw(payload);
  return w.finish();
}

/**
 * Reads a datagram's header, checking what a receiver relies on (as `MediaHeader::read`).
 * @param {Uint8Array} datagram
 * @returns {{header: MediaHeader, offset: number}} offset is where the payload starts
 * @throws {DecodeError}
 */
export function readDatagram(datagram) {
  if (datagram.length > MAX_MEDIA_DATAGRAM_BYTES) {
    throw new DecodeError(`datagram of ${datagram.length} bytes is over the ${MAX_MEDIA_DATAGRAM_BYTES}-byte limit`);
  }
  const r = new Reader(datagram);
  const match_id = r.u64();
  const track = r.u32();
  if (track !== TRACK_AUDIO && track !== TRACK_VIDEO && track !== TRACK_VIDEO_PARITY) throw new DecodeError(`unknown track ${track}`);
  /** @type {MediaHeader} */
  const header = {
    match_id,
    track,
    seq: r.u32(),
    frame: r.u32(),
    frag_index: r.u16(),
    frag_count: r.u16(),
    keyframe: r.bool(),
    capture_us: r.u64(),
    ref_frame: r.u32(),
  };
  if (header.frag_count === 0 || header.frag_count > MAX_FRAGMENTS || header.frag_index >= header.frag_count) {
    throw new DecodeError(`fragment ${header.frag_index} of ${header.frag_count}`);
  }
  return { header, offset: r.pos };
}

/**
 * Prefixes a body with its 2-byte big-endian length.
 * @param {Uint8Array} body
 * @returns {Uint8Array}
 */
export function encodeFrame(body) {
  if (body.length > MAX_FRAME_BYTES) throw new RangeError(`frame of ${body.length} bytes is over the ${MAX_FRAME_BYTES}-byte limit`);
  const out = new Uint8Array(2 + body.length);
  out[0] = body.length >> 8;
  out[1] = body.length & 0xff;
  out.set(body, 2);
  return out;
}

/**
 * Cuts length-prefixed frames out of whatever chunks a stream delivers. It refuses an
 * oversized frame as soon as its prefix is read, so it never holds more than one frame
 * plus the last chunk pushed.
 */
export class FrameReader {
  constructor() {
    /** @type {Uint8Array} */
    this.buf = new Uint8Array(0);
  }

  /** @param {Uint8Array} chunk */
  push(chunk) {
    if (this.buf.length === 0) {
      this.buf = chunk.slice();
      return;
    }
    const joined = new Uint8Array(this.buf.length + chunk.length);
    joined.set(this.buf);
    joined.set(chunk, this.buf.length);
    this.buf = joined;
  }

  /**
   * The next complete frame body, or null if more bytes are needed.
   * @returns {Uint8Array | null}
   * @throws {DecodeError} when the announced length is over the limit (the stream is then unusable)
   */
  next() {
    if (this.buf.length < 2) return null;
    const len = (this.buf[0] << 8) | this.buf[1];
    if (len > MAX_FRAME_BYTES) throw new DecodeError(`frame of ${len} bytes is over the ${MAX_FRAME_BYTES}-byte limit`);
    if (this.buf.length < 2 + len) return null;
    const body = this.buf.slice(2, 2 + len);
    this.buf = this.buf.subarray(2 + len);
    return body;
  }

  /** Bytes held that do not yet form a frame. */
  get pending() {
    return this.buf.length;
  }
}
