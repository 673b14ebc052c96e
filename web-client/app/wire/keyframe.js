// @ts-check
/**
 * @file The decoder description every video keyframe carries in-band, so a receiver can
 * configure its `VideoDecoder` from the media alone: a new partner's video (whatever codec
 * they picked) appears without any negotiation message.
 *
 * Layout of a keyframe payload: one byte N, then N bytes of ASCII description, then the
 * codec's bitstream. Delta frames carry the bitstream alone. The description is the
 * WebCodecs codec string, optionally followed by `;primaries,transfer,matrix,fullRange`
 * (e.g. `vp09.00.10.08;smpte170m,smpte170m,smpte170m,0`). The colour space matters:
 * Chromium's VP8/VP9 decoders otherwise assume BT.709 for a camera's SMPTE 170M frames and
 * the picture comes out visibly darker. VP8, VP9 and AV1 need no other description.
 *
 * Untrusted input: the description is length-checked, restricted to a small alphabet,
 * and colour-space names outside the WebCodecs enums are dropped, so a hostile keyframe
 * cannot make `configure()` throw a TypeError. No browser API here: Node tests cover it.
 */

/** Longest description accepted (real ones are under 60 bytes). */
export const MAX_DESCRIPTION_BYTES = 100;

const PRIMARIES = new Set(["bt709", "bt470bg", "smpte170m", "bt2020", "smpte432"]);
const TRANSFERS = new Set(["bt709", "smpte170m", "iec61966-2-1", "linear", "pq", "hlg"]);
const MATRICES = new Set(["rgb", "bt709", "bt470bg", "smpte170m", "bt2020-ncl"]);

/**
 * @typedef {object} DecoderDescription
 * @property {string} codec
 * @property {{primaries?: string, transfer?: string, matrix?: string, fullRange?: boolean}} [colorSpace]
 */

/**
 * @param {string} codec
 * @param {{primaries?: string | null, transfer?: string | null, matrix?: string | null, fullRange?: boolean | null} | null | undefined} colorSpace
 * @returns {string}
 */
export function describeDecoder(codec, colorSpace) {
  if (!colorSpace || !(colorSpace.primaries || colorSpace.transfer || colorSpace.matrix)) return codec;
  const full = colorSpace.fullRange === true ? "1" : colorSpace.fullRange === false ? "0" : "";
  return `${codec};${colorSpace.primaries ?? ""},${colorSpace.transfer ?? ""},${colorSpace.matrix ?? ""},${full}`;
}

/**
 * Parses a description into what `VideoDecoder.configure` takes; null if malformed.
 * @param {string} text
 * @returns {DecoderDescription | null}
 */
export function parseDescription(text) {
  if (!/^[A-Za-z0-9.\-]+(;[a-z0-9\-]*,[a-z0-9\-]*,[a-z0-9\-]*,[01]?)?$/.test(text)) return null;
  const [codec, cs] = text.split(";");
  if (!cs) return { codec };
  const [primaries, transfer, matrix, full] = cs.split(",");
  /** @type {NonNullable<DecoderDescription["colorSpace"]>} */
  const colorSpace = {};
  if (PRIMARIES.has(primaries)) colorSpace.primaries = primaries;
  if (TRANSFERS.has(transfer)) colorSpace.transfer = transfer;
  if (MATRICES.has(matrix)) colorSpace.matrix = matrix;
  if (full) colorSpace.fullRange = full === "1";
  return Object.keys(colorSpace).length ? { codec, colorSpace } : { codec };
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Prefixes a keyframe's bitstream with its description.
 * @param {string} description from describeDecoder
 * @param {Uint8Array} data
 * @returns {Uint8Array}
 */
export function wrapKeyframe(description, data) {
  const d = encoder.encode(description);
  if (d.length === 0 || d.length > MAX_DESCRIPTION_BYTES) throw new RangeError(`description of ${d.length} bytes`);
  const out = new Uint8Array(1 + d.length + data.length);
  out[0] = d.length;
  out.set(d, 1);
  out.set(data, 1 + d.length);
  return out;
}

/**
 * Splits a keyframe payload; null if the description is missing or malformed.
 * @param {Uint8Array} payload
 * @returns {{description: string, config: DecoderDescription, data: Uint8Array} | null}
 */
export function unwrapKeyframe(payload) {
  if (payload.length < 1) return null;
  const n = payload[0];
  if (n === 0 || n > MAX_DESCRIPTION_BYTES || payload.length < 1 + n) return null;
  const description = decoder.decode(payload.subarray(1, 1 + n));
  const config = parseDescription(description);
  if (!config) return null;
  return { description, config, data: payload.subarray(1 + n) };
}
