// @ts-check
/**
 * @file Test helper: converts between the web client's message objects and the JSON that
 * serde writes for the same Rust values (externally tagged enums, unit variants as
 * strings, byte arrays as number arrays), which is how shared/vectors.json states each
 * vector's value. Also reads vectors.json without losing u64 precision.
 */

import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { REPORT_REASONS, LEAVE_REASONS, TRACK_AUDIO, TRACK_VIDEO, TRACK_VIDEO_PARITY } from "../app/wire/protocol.js";

const TRACKS = /** @type {const} */ (["Audio", "Video", "VideoParity"]);

export const VECTORS_PATH = fileURLToPath(new URL("../../shared/vectors.json", import.meta.url));

/**
 * Parses vectors.json, keeping integers above 2^53 exact: they become decimal strings,
 * and `toSerde` writes big u64 values the same way.
 * @returns {any}
 */
export function loadVectors() {
  const text = readFileSync(VECTORS_PATH, "utf8");
  const safe = text.replace(/(?<=[:\[,]\s*)(\d{16,})(?=\s*[,\]}])/g, (d) =>
    BigInt(d) > BigInt(Number.MAX_SAFE_INTEGER) ? `"${d}"` : d,
  );
  return JSON.parse(safe);
}

/** @param {bigint} v */
function u64ToJson(v) {
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? v.toString() : Number(v);
}

/** @param {number | string} v */
function u64FromJson(v) {
  return BigInt(v);
}

const UNIT = new Set(["Leave", "PeerReconnecting", "PeerReturned", "KeyframeRequested", "PeerTyping"]);
/** Newtype variants around one plain value (serde: {"Variant": value}); the web client names it `on`. */
const NEWTYPE_VALUE = new Set(["RequeueWhenLeft"]);
/** Fields that are `u64` in Rust (BigInt here, numbers or decimal strings in serde's JSON). */
const U64_FIELDS = new Set(["match_id", "session_id", "capture_us"]);
/** Fields that are fixed byte arrays in Rust (Uint8Array here, number arrays in JSON). */
const BYTE_FIELDS = new Set(["resume", "resume_token", "visitor", "public", "sealed", "partner_key", "your_key"]);

/** @param {Record<string, any>} fields @returns {Record<string, any>} */
function fieldsToSerde(fields) {
  /** @type {Record<string, any>} */
  const out = {};
  for (const [k, v] of Object.entries(fields)) {
    if (v === null) out[k] = null;
    else if (U64_FIELDS.has(k)) out[k] = u64ToJson(v);
    else if (BYTE_FIELDS.has(k)) out[k] = Array.from(v);
    else out[k] = v;
  }
  return out;
}

/** @param {Record<string, any>} fields @returns {Record<string, any>} */
function fieldsFromSerde(fields) {
  /** @type {Record<string, any>} */
  const out = {};
  for (const [k, v] of Object.entries(fields)) {
    if (v === null) out[k] = null;
    else if (U64_FIELDS.has(k)) out[k] = u64FromJson(v);
    else if (BYTE_FIELDS.has(k)) out[k] = Uint8Array.from(v);
    else out[k] = v;
  }
  return out;
}

/**
 * @param {string} kind ClientMsg | ServerMsg | ChatFrame | MediaHeader
 * @param {any} msg a decoded message object
 * @returns {any} serde's JSON for it
 */
export function toSerde(kind, msg) {
  if (kind === "MediaHeader") {
    return { ...fieldsToSerde(msg), track: TRACKS[msg.track] };
  }
  const { type, ...fields } = msg;
  if (UNIT.has(type)) return type;
  if (NEWTYPE_VALUE.has(type)) return { [type]: fields.on };
  // Newtype variants around a struct (Hello, ReceiverReport, Caps, …) and struct variants
  // look the same in serde's JSON: {"Variant": {fields}}.
  return { [type]: fieldsToSerde(fields) };
}

/**
 * @param {string} kind
 * @param {any} value serde's JSON
 * @returns {any} the web client's message object
 */
export function fromSerde(kind, value) {
  if (kind === "MediaHeader") {
    return { ...fieldsFromSerde(value), track: [TRACK_AUDIO, TRACK_VIDEO, TRACK_VIDEO_PARITY][TRACKS.indexOf(value.track)] };
  }
  if (typeof value === "string") return { type: value };
  const [[type, body]] = Object.entries(value);
  if (NEWTYPE_VALUE.has(type)) return { type, on: body };
  if ((type === "Report") && !REPORT_REASONS.includes(body.reason)) throw new Error(`reason ${body.reason}`);
  if ((type === "PeerLeft") && !LEAVE_REASONS.includes(body.reason)) throw new Error(`reason ${body.reason}`);
  return { type, ...fieldsFromSerde(body) };
}
