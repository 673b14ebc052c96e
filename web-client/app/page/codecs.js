// @ts-check
/**
 * @file What this browser can decode and encode, asked of WebCodecs on the page
 * (`isConfigSupported`: decoders separately from encoders, a `prefer-hardware` probe for
 * hardware encoders, and which temporal-layer mode each encoder takes), and the codecs
 * that failed on this machine, remembered in localStorage so they are never offered again.
 */

import { VIDEO_CODECS, codecFamily, parseFailed, preferenceOrder } from "../wire/codecs.js";
import { START_VIDEO_KBPS } from "../wire/quality.js";

/** @typedef {import("../wire/codecs.js").CodecProbe} CodecProbe */
/** @typedef {import("../wire/protocol.js").VideoCodec} VideoCodec */

const FAILED_KEY = "duet.failedCodecs";

/** @param {() => Promise<{supported?: boolean}>} probe */
async function supported(probe) {
  try {
    return (await probe()).supported === true;
  } catch {
    // An invalid or unknown codec string: not supported.
    return false;
  }
}

/**
 * @param {number} width
 * @param {number} height
 * @returns {Promise<CodecProbe[]>} in preference order for this machine (wire/codecs.js)
 */
export async function probeCodecs(width = 640, height = 480) {
  const hasDecoder = typeof VideoDecoder !== "undefined";
  const hasEncoder = typeof VideoEncoder !== "undefined";
  const probes = await Promise.all(
    VIDEO_CODECS.map(async ({ family, codec }) => {
      const base = { codec, width, height, bitrate: START_VIDEO_KBPS * 1000, framerate: 30, latencyMode: /** @type {const} */ ("realtime") };
      const decode = hasDecoder && (await supported(() => VideoDecoder.isConfigSupported({ codec })));
      const encode = hasEncoder && (await supported(() => VideoEncoder.isConfigSupported(base)));
      const hardwareEncode = encode && (await supported(() => VideoEncoder.isConfigSupported({ ...base, hardwareAcceleration: "prefer-hardware" })));
      const layered = encode && (await supported(() => VideoEncoder.isConfigSupported({ ...base, scalabilityMode: "L1T2" })));
      return { family, codec, decode, encode, hardwareEncode, scalabilityMode: layered ? "L1T2" : null };
    }),
  );
  return preferenceOrder(probes, navigator.hardwareConcurrency ?? 2);
}

/** @returns {VideoCodec[]} */
export function failedCodecs() {
  try {
    return parseFailed(localStorage.getItem(FAILED_KEY));
  } catch {
    return [];
  }
}

/** @param {VideoCodec} family */
export function rememberFailed(family) {
  const list = failedCodecs();
  if (list.includes(family)) return;
  list.push(family);
  try {
    localStorage.setItem(FAILED_KEY, list.join(","));
  } catch {
    // No storage: remembered for this page only (the caller keeps its own list).
  }
}

/**
 * The encoders the worker may use, best first, without failed ones.
 * @param {CodecProbe[]} probes
 * @param {Iterable<VideoCodec>} failed
 * @returns {import("../engine/video-send.js").EncoderChoice[]}
 */
export function encoderChoices(probes, failed) {
  const bad = new Set(failed);
  return probes
    .filter((p) => p.encode && !bad.has(p.family) && codecFamily(p.codec) === p.family)
    .map((p) => ({ codec: p.codec, scalabilityMode: p.scalabilityMode, hardware: p.hardwareEncode }));
}
