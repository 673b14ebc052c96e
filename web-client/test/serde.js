// @ts-check
/**
 * @file Test helper: converts between the web client's message objects and the JSON that
 * serde writes for the same Rust values (externally tagged enums, unit variants as
 * strings, byte arrays as number arrays), which is how shared/vectors.json states each
 * vector's value. Also reads vectors.json without losing u64 precision.
 */

import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { REPORT_REASONS, LEAVE_REASONS, TRACK_AUDIO, TRACK_VIDEO } from "../app/protocol.js";

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

const UNIT = new Set(["Next", "Leave", "RequestKeyframe", "PeerReconnecting", "PeerReturned", "KeyframeRequested"]);

/**
 * @param {string} kind ClientMsg | ServerMsg | ChatFrame | MediaHeader
 * @param {any} msg a decoded message object
 * @returns {any} serde's JSON for it
 */
export function toSerde(kind, msg) {
  if (kind === "MediaHeader") {
    return {
      match_id: u64ToJson(msg.match_id),
      track: msg.track === TRACK_AUDIO ? "Audio" : "Video",
      seq: msg.seq,
      frame: msg.frame,
      frag_index: msg.frag_index,
      frag_count: msg.frag_count,
      keyframe: msg.keyframe,
      capture_us: u64ToJson(msg.capture_us),
    };
  }
  const { type, ...fields } = msg;
  if (UNIT.has(type)) return type;
  /** @type {any} */
  let body;
  switch (type) {
    case "Hello":
      body = { ...fields, resume: fields.resume ? Array.from(fields.resume) : null };
      break;
    case "Welcome":
      body = { session_id: u64ToJson(fields.session_id), resume_token: Array.from(fields.resume_token), resumed: fields.resumed };
      break;
    case "Matched":
    case "Open":
      body = { ...fields, match_id: u64ToJson(fields.match_id) };
      break;
    default:
      body = fields;
  }
  return { [type]: body };
}

/**
 * @param {string} kind
 * @param {any} value serde's JSON
 * @returns {any} the web client's message object
 */
export function fromSerde(kind, value) {
  if (kind === "MediaHeader") {
    return {
      ...value,
      match_id: u64FromJson(value.match_id),
      capture_us: u64FromJson(value.capture_us),
      track: value.track === "Audio" ? TRACK_AUDIO : TRACK_VIDEO,
    };
  }
  if (typeof value === "string") return { type: value };
  const [[type, body]] = Object.entries(value);
  switch (type) {
    case "Hello":
      return { type, ...body, resume: body.resume ? Uint8Array.from(body.resume) : null };
    case "Welcome":
      return { type, ...body, session_id: u64FromJson(body.session_id), resume_token: Uint8Array.from(body.resume_token) };
    case "Matched":
    case "Open":
      return { type, ...body, match_id: u64FromJson(body.match_id) };
    case "Report":
      if (!REPORT_REASONS.includes(body.reason)) throw new Error(`reason ${body.reason}`);
      return { type, ...body };
    case "PeerLeft":
      if (!LEAVE_REASONS.includes(body.reason)) throw new Error(`reason ${body.reason}`);
      return { type, ...body };
    default:
      return { type, ...body };
  }
}
