// @ts-check
/**
 * @file Video codecs as the protocol names them (`VideoCodec` families) and as WebCodecs
 * names them (codec strings), and what `Hello.media` says from probe results.
 *
 * Probing itself (`isConfigSupported`) is page/codecs.js; this file only turns its answers
 * into `MediaCaps`, and leaves out the codecs that failed on this machine before, so the
 * relay never chooses them again. No browser API here: Node's test runner covers it.
 */

/** @typedef {import("./protocol.js").VideoCodec} VideoCodec */
/** @typedef {import("./protocol.js").MediaCaps} MediaCaps */

/**
 * One codec string per family, in the order this client prefers to send (better
 * compression first; H.264 Constrained Baseline 3.1 is what phones encode in hardware;
 * VP8 is the floor every browser decodes).
 * @type {readonly {family: VideoCodec, codec: string, label: string}[]}
 */
export const VIDEO_CODECS = Object.freeze([
  { family: "Vp9", codec: "vp09.00.10.08", label: "VP9" },
  { family: "Av1", codec: "av01.0.04M.08", label: "AV1" },
  { family: "H264", codec: "avc1.42E01F", label: "H.264" },
  { family: "Vp8", codec: "vp8", label: "VP8" },
]);

/**
 * What the probes found for one codec.
 * @typedef {object} CodecProbe
 * @property {VideoCodec} family
 * @property {string} codec the WebCodecs codec string
 * @property {boolean} decode
 * @property {boolean} encode
 * @property {boolean} hardwareEncode an encoder with `hardwareAcceleration: "prefer-hardware"` is supported
 * @property {string | null} scalabilityMode the temporal-layer mode the encoder takes ("L1T2"), or null
 */

/** @param {string} codec a WebCodecs codec string @returns {VideoCodec | null} */
export function codecFamily(codec) {
  const prefix = codec.split(".")[0].toLowerCase();
  const family = { vp8: "Vp8", vp09: "Vp9", av01: "Av1", avc1: "H264" }[prefix];
  return /** @type {VideoCodec | undefined} */ (family) ?? null;
}

/** @param {VideoCodec | string} familyOrCodec @returns {string} e.g. "VP9" */
export function codecLabel(familyOrCodec) {
  const family = VIDEO_CODECS.some((c) => c.family === familyOrCodec) ? familyOrCodec : codecFamily(familyOrCodec);
  return VIDEO_CODECS.find((c) => c.family === family)?.label ?? familyOrCodec;
}

/** @param {VideoCodec} family @returns {string} the codec string this client uses for it */
export function codecString(family) {
  return VIDEO_CODECS.find((c) => c.family === family)?.codec ?? "vp8";
}

/** Relative CPU cost of encoding one frame in software (libvpx, OpenH264, libaom in realtime mode). */
const SOFTWARE_ENCODE_COST = Object.freeze({ Vp8: 1, H264: 1.2, Vp9: 2, Av1: 4 });

/** Logical cores at or below which a machine counts as weak: its software encoder is chosen for cost, not compression. */
export const WEAK_CPU_CORES = 4;

/**
 * The probes in preference order. On a weak machine (two or four cores, like the phones and
 * cheap laptops that are most of a random chat's users) the cheapest software encoder comes
 * first: VP9 spends about twice VP8's CPU per frame, and a busy CPU costs far more delay
 * than VP9's better compression saves. Elsewhere the better compression comes first.
 * Hardware encoders are preferred by the relay's choice either way.
 * @param {CodecProbe[]} probes
 * @param {number} cores `navigator.hardwareConcurrency`
 * @returns {CodecProbe[]}
 */
export function preferenceOrder(probes, cores) {
  if (cores > WEAK_CPU_CORES) return [...probes];
  return [...probes].sort((a, b) => SOFTWARE_ENCODE_COST[a.family] - SOFTWARE_ENCODE_COST[b.family]);
}

/**
 * `Hello.media` (and `Caps`): decode and encode lists from the probes, in preference
 * order, without the codecs that failed here.
 * @param {CodecProbe[]} probes
 * @param {Iterable<VideoCodec>} failed families that failed to encode or decode on this machine
 * @returns {MediaCaps}
 */
export function mediaCaps(probes, failed) {
  const bad = new Set(failed);
  const ok = probes.filter((p) => !bad.has(p.family));
  return {
    decode: ok.filter((p) => p.decode).map((p) => p.family),
    encode: ok.filter((p) => p.encode).map((p) => p.family),
    hardware_encode: ok.filter((p) => p.encode && p.hardwareEncode).map((p) => p.family),
  };
}

/**
 * Parses the remembered list of failed codecs (localStorage), ignoring anything unknown.
 * @param {string | null} text
 * @returns {VideoCodec[]}
 */
export function parseFailed(text) {
  if (!text) return [];
  /** @type {VideoCodec[]} */
  const out = [];
  for (const word of text.split(",")) {
    const c = VIDEO_CODECS.find((x) => x.family === word.trim());
    if (c && !out.includes(c.family)) out.push(c.family);
  }
  return out;
}
