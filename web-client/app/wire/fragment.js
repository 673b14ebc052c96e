// @ts-check
/**
 * @file Splitting encoded media frames into datagrams, and putting them back together.
 *
 * A frame bigger than one datagram is cut into `frag_count` fragments that share a frame
 * number; each datagram carries its own sequence number so the receiver can count loss.
 * The receiver's `Reassembler` mirrors `duet_proto::Reassembler` (shared/src/media.rs):
 * a video frame with a missing fragment is dropped whole (whether later frames may still be
 * decoded is reference.js's decision, from each frame's `ref_frame`). Fragments may arrive
 * reordered or duplicated; both are handled. Audio frames are one datagram each and are
 * passed on in arrival order even when reordered, as long as they are within
 * AUDIO_REORDER_FRAMES of the newest: the jitter buffer puts them back in order.
 *
 * Forward error correction: while the path loses datagrams, the sender follows a video
 * frame of two or more fragments with one parity datagram (TRACK_VIDEO_PARITY: the total
 * payload length, then the XOR of the fragments, each zero-padded to the longest), and the
 * reassembler rebuilds any one missing fragment from it at once, instead of a `Nack` round
 * trip. Its fragments then carry PARITY_PREFIX_BYTES less, so the parity datagram fits
 * the same size. Memory is
 * bounded: at most MAX_FRAMES_IN_REASSEMBLY partial frames per track, each of at most
 * MAX_FRAGMENTS parts.
 *
 * No browser API here: Node's test runner covers all of it.
 */

import {
  MAX_FRAGMENTS,
  MAX_FRAMES_IN_REASSEMBLY,
  MAX_MEDIA_DATAGRAM_BYTES,
  MAX_MEDIA_HEADER_BYTES,
  TRACK_VIDEO,
  TRACK_VIDEO_PARITY,
  encodeDatagram,
} from "./protocol.js";

/** @typedef {import("./protocol.js").MediaHeader} MediaHeader */

/** A parity datagram's payload starts with the frame's total payload length (u32, little-endian). */
export const PARITY_PREFIX_BYTES = 4;

/** An audio frame this many frames older than the newest is dropped as late (10 × 20 ms: the jitter buffer's largest target). */
export const AUDIO_REORDER_FRAMES = 10;

/**
 * Largest payload per datagram given the session's datagram size (the header is counted
 * at its widest so that every fragment fits whatever its numbers are).
 * @param {number} maxDatagram
 */
export function maxPayload(maxDatagram) {
  return Math.max(0, Math.min(maxDatagram, MAX_MEDIA_DATAGRAM_BYTES) - MAX_MEDIA_HEADER_BYTES);
}

/**
 * The `ref_frame` a frame's header carries: its own number for a keyframe, else the frame
 * `refBack` before it. Sealing binds it (wire/e2ee.js), so it is computed here only.
 * @param {number} frame @param {boolean} keyframe @param {number} refBack
 */
export function refFrameOf(frame, keyframe, refBack) {
  return keyframe ? frame : (frame - refBack) >>> 0;
}

/** Numbers one track's outgoing frames and datagrams and cuts frames into datagrams. */
export class Fragmenter {
  /** @param {number} track TRACK_AUDIO or TRACK_VIDEO */
  constructor(track) {
    this.track = track;
    this.seq = 0;
    this.frame = 0;
    /** Parity datagrams are numbered on their own, so they leave no gap in the track's numbers. */
    this.paritySeq = 0;
    /** The parity datagram of the last frame cut with `parity`, or null. @type {Uint8Array | null} */
    this.lastParity = null;
  }

  /** Starts numbering again (a new pairing: the partner's reassembler starts clean too). */
  reset() {
    this.seq = 0;
    this.frame = 0;
    this.paritySeq = 0;
    this.lastParity = null;
  }

  /**
   * Takes the next frame number for a frame that will be cut later (`fragment`'s `frame`):
   * a sealed frame is bound to its number before it is sealed, and sealing takes a while.
   * @returns {number}
   */
  reserve() {
    const frame = this.frame;
    this.frame = (this.frame + 1) >>> 0;
    return frame;
  }

  /**
   * Cuts one encoded frame into datagrams, each at most `maxDatagram` bytes.
   * @param {bigint} matchId the current pairing (the relay drops any other)
   * @param {Uint8Array} payload
   * @param {boolean} keyframe
   * @param {bigint} captureUs
   * @param {number} maxDatagram the session's datagram size limit
   * @param {number} [refBack] how many frames back the frame this one references is (1, the
   *   previous frame, unless temporal layers say otherwise); a keyframe references itself
   * @param {boolean} [parity] also make the frame's parity datagram (`lastParity`) when it
   *   has two fragments or more
   * @param {number} [reserved] the frame's number, taken earlier with `reserve()`; by
   *   default the next one (taken only if the frame fits)
   * @returns {Uint8Array[] | null} null when the frame needs more than MAX_FRAGMENTS datagrams
   */
  fragment(matchId, payload, keyframe, captureUs, maxDatagram, refBack = 1, parity = false, reserved = undefined) {
    this.lastParity = null;
    const full = maxPayload(maxDatagram);
    // With parity, fragments leave room for its length prefix (one fragment: no parity).
    const room = parity && payload.length > full ? full - PARITY_PREFIX_BYTES : full;
    if (room <= 0) return null;
    const count = Math.max(1, Math.ceil(payload.length / room));
    if (count > MAX_FRAGMENTS) return null;
    const frame = reserved ?? this.reserve();
    // What every datagram of this frame says, its parity's included.
    const shared = { match_id: matchId, frame, frag_count: count, keyframe, capture_us: captureUs, ref_frame: refFrameOf(frame, keyframe, refBack) };
    const body = parity && count >= 2 ? new Uint8Array(PARITY_PREFIX_BYTES + room) : null;
    /** @type {Uint8Array[]} */
    const out = [];
    for (let i = 0; i < count; i++) {
      /** @type {MediaHeader} */
      const header = { ...shared, track: this.track, seq: this.seq, frag_index: i };
      this.seq = (this.seq + 1) >>> 0;
      const part = payload.subarray(i * room, Math.min(payload.length, (i + 1) * room));
      if (body) for (let j = 0; j < part.length; j++) body[PARITY_PREFIX_BYTES + j] ^= part[j];
      out.push(encodeDatagram(header, part));
    }
    if (body) {
      new DataView(body.buffer).setUint32(0, payload.length, true);
      /** @type {MediaHeader} */
      const header = { ...shared, track: TRACK_VIDEO_PARITY, seq: this.paritySeq, frag_index: 0 };
      this.paritySeq = (this.paritySeq + 1) >>> 0;
      this.lastParity = encodeDatagram(header, body);
    }
    return out;
  }
}

/**
 * @typedef {object} Frame a whole frame out of the reassembler
 * @property {number} track
 * @property {number} frame
 * @property {boolean} keyframe
 * @property {bigint} captureUs
 * @property {number} refFrame the frame this one references (its own number for a keyframe)
 * @property {Uint8Array} data
 */

/**
 * @typedef {object} Partial
 * @property {number} frame
 * @property {boolean} keyframe
 * @property {bigint} captureUs
 * @property {number} refFrame
 * @property {(Uint8Array | null)[]} parts
 * @property {number} received
 * @property {Uint8Array | null} parity the frame's parity payload, once it came
 */

class TrackState {
  constructor() {
    /** Highest frame number delivered or given up on; older fragments are late. @type {number | null} */
    this.lastDone = null;
    /** Audio: the newest frame number passed on. @type {number | null} */
    this.newest = null;
    /** Partial frames, oldest first. @type {Partial[]} */
    this.partial = [];
    /** Recovering video: frames below this are given up; fragments for them are late. */
    this.floor = 0;
    /** Recovering video: recently completed frame numbers. @type {Set<number>} */
    this.completed = new Set();
  }
}

/** Frame numbers of completed video frames remembered, so a resent duplicate is not taken for a new frame. */
const MAX_COMPLETED = 128;

/** Per-pairing reassembly of fragmented frames, for both tracks. */
export class Reassembler {
  /**
   * @param {{recoverVideo?: boolean}} [options] recoverVideo: video frames come out as they
   *   complete, in any order, and an older incomplete frame is kept (its missing fragments
   *   may be resent) until `abandonBefore` passes it; video-order.js restores the order
   */
  constructor(options = {}) {
    this.recoverVideo = options.recoverVideo ?? false;
    /** @type {bigint | null} */
    this.matchId = null;
    this.audio = new TrackState();
    this.video = new TrackState();
    this.stats = { framesCompleted: 0, framesLost: 0, fragmentsLate: 0, fragmentsDuplicate: 0, audioReordered: 0, framesRepaired: 0 };
  }

  /**
   * Feeds one fragment; returns the frame it completed, if any.
   * @param {MediaHeader} header
   * @param {Uint8Array} payload
   * @returns {Frame | null}
   */
  push(header, payload) {
    if (this.matchId !== header.match_id) {
      // A new pairing starts from a clean slate; nothing carries over.
      this.matchId = header.match_id;
      this.audio = new TrackState();
      this.video = new TrackState();
    }
    const isParity = header.track === TRACK_VIDEO_PARITY;
    if (isParity && !this.recoverVideo) return null; // repairs need frames kept open
    const isVideo = header.track === TRACK_VIDEO || isParity;
    const state = isVideo ? this.video : this.audio;
    if (!isVideo && header.frag_count === 1) return this.pushAudio(state, header, payload);
    const recovering = isVideo && this.recoverVideo;
    if (recovering ? header.frame < state.floor || state.completed.has(header.frame) : state.lastDone !== null && header.frame <= state.lastDone) {
      this.stats.fragmentsLate++;
      return null;
    }
    let idx = state.partial.findIndex((p) => p.frame === header.frame);
    if (idx < 0) {
      if (state.partial.length >= MAX_FRAMES_IN_REASSEMBLY) {
        if (state.partial[0].frame > header.frame) {
          // Older than everything in flight while the buffer is full: late.
          this.stats.fragmentsLate++;
          return null;
        }
        // The oldest partial frame is too late to show: give up on it.
        const oldest = /** @type {Partial} */ (state.partial.shift());
        state.lastDone = oldest.frame;
        state.floor = Math.max(state.floor, oldest.frame + 1);
        this.stats.framesLost++;
        state.partial = state.partial.filter((p) => p.frame > oldest.frame);
      }
      state.partial.push({
        frame: header.frame,
        keyframe: header.keyframe,
        captureUs: header.capture_us,
        refFrame: header.ref_frame,
        parts: new Array(header.frag_count).fill(null),
        received: 0,
        parity: null,
      });
      state.partial.sort((a, b) => a.frame - b.frame);
      idx = state.partial.findIndex((p) => p.frame === header.frame);
    }
    const partial = state.partial[idx];
    if (isParity) {
      if (header.frag_count !== partial.parts.length || partial.parity !== null) return null; // disagrees, or a duplicate
      partial.parity = payload.slice();
    } else {
      if (header.frag_index >= partial.parts.length) return null; // disagrees with the first fragment's count
      if (partial.parts[header.frag_index] !== null) {
        this.stats.fragmentsDuplicate++;
        return null;
      }
      partial.parts[header.frag_index] = payload.slice();
      partial.received++;
    }
    if (partial.received === partial.parts.length - 1 && partial.parity !== null && repair(partial)) this.stats.framesRepaired++;
    // Complete (a parity datagram still on its way will find the frame done, and be late).
    if (partial.received < partial.parts.length) return null;

    state.partial.splice(idx, 1);
    const track = isParity ? TRACK_VIDEO : header.track;
    if (recovering) {
      // Complete, in whatever order: older partial frames may still be completed by a resend.
      state.completed.add(partial.frame);
      if (state.completed.size > MAX_COMPLETED) state.completed.delete(/** @type {number} */ (state.completed.values().next().value));
      this.stats.framesCompleted++;
      return whole(track, partial);
    }
    // Complete. Older partial frames can no longer be decoded in order: drop them.
    const skipped = state.lastDone === null ? 0 : Math.max(0, partial.frame - state.lastDone - 1);
    state.partial = state.partial.filter((p) => p.frame > partial.frame);
    state.lastDone = partial.frame;
    if (skipped > 0) this.stats.framesLost += skipped;
    this.stats.framesCompleted++;
    return whole(track, partial);
  }

  /**
   * Recovering video: the fragments of `frame` not received yet, for a `Nack` (at most
   * `max`); empty when no fragment of it arrived (the whole frame is missing).
   * @param {number} frame @param {number} max
   * @returns {number[]}
   */
  missing(frame, max) {
    const p = this.video.partial.find((x) => x.frame === frame);
    if (!p) return [];
    /** @type {number[]} */
    const out = [];
    for (let i = 0; i < p.parts.length && out.length < max; i++) if (p.parts[i] === null) out.push(i);
    return out;
  }

  /**
   * Recovering video: what is missing so far, as soon as a later datagram shows it (its
   * sequence number skipped some): every missing fragment of an incomplete frame older than
   * the newest frame seen, the missing fragments of the newest one below its highest
   * fragment received, and frames of which nothing arrived between the given-up floor and
   * the newest (empty list: the whole frame).
   * @param {number} max fragments per frame at most
   * @returns {{frame: number, fragments: number[]}[]}
   */
  gaps(max) {
    const state = this.video;
    if (state.partial.length === 0 && state.completed.size === 0) return [];
    let newest = state.floor - 1;
    for (const p of state.partial) newest = Math.max(newest, p.frame);
    for (const n of state.completed) newest = Math.max(newest, n);
    /** @type {{frame: number, fragments: number[]}[]} */
    const out = [];
    const start = Math.max(state.floor, newest - 16);
    for (let n = start; n <= newest; n++) {
      if (state.completed.has(n)) continue;
      const p = state.partial.find((x) => x.frame === n);
      if (!p) {
        out.push({ frame: n, fragments: [] });
        continue;
      }
      let upTo = p.parts.length;
      if (n === newest) {
        upTo = 0;
        for (let i = 0; i < p.parts.length; i++) if (p.parts[i] !== null) upTo = i;
      }
      /** @type {number[]} */
      const fragments = [];
      for (let i = 0; i < upTo && fragments.length < max; i++) if (p.parts[i] === null) fragments.push(i);
      if (fragments.length) out.push({ frame: n, fragments });
    }
    return out;
  }

  /**
   * Recovering video: frames before `frame` are given up (decoded, skipped or abandoned by
   * the order stage); their partial fragments are dropped and any that come later are late.
   * @param {number} frame
   */
  abandonBefore(frame) {
    const state = this.video;
    if (frame <= state.floor) return;
    state.floor = frame;
    const before = state.partial.length;
    state.partial = state.partial.filter((p) => p.frame >= frame);
    this.stats.framesLost += before - state.partial.length;
  }

  /**
   * One whole audio frame: passed on at once, even behind a newer one (reordered), unless
   * it is more than AUDIO_REORDER_FRAMES behind the newest. Duplicates that get through
   * are the jitter buffer's to drop.
   * @param {TrackState} state
   * @param {MediaHeader} header
   * @param {Uint8Array} payload
   * @returns {Frame | null}
   */
  pushAudio(state, header, payload) {
    if (state.newest !== null && header.frame + AUDIO_REORDER_FRAMES < state.newest) {
      this.stats.fragmentsLate++;
      return null;
    }
    if (state.newest === null || header.frame > state.newest) state.newest = header.frame;
    else this.stats.audioReordered++;
    this.stats.framesCompleted++;
    return { track: header.track, frame: header.frame, keyframe: header.keyframe, captureUs: header.capture_us, refFrame: header.ref_frame, data: payload.slice() };
  }
}

/**
 * Rebuilds the one missing fragment of `partial` from its parity: the missing bytes are the
 * parity's XOR with every fragment received, and its length is what the total leaves.
 * @param {Partial} partial exactly one part missing, parity present
 * @returns {boolean} repaired (false: the parity disagrees with what arrived, and is dropped)
 */
function repair(partial) {
  const parity = /** @type {Uint8Array} */ (partial.parity);
  const missing = partial.parts.indexOf(null);
  if (missing < 0 || parity.length < PARITY_PREFIX_BYTES) return false;
  const total = new DataView(parity.buffer, parity.byteOffset, parity.byteLength).getUint32(0, true);
  let have = 0;
  for (const p of partial.parts) if (p) have += p.length;
  const length = total - have;
  const body = parity.subarray(PARITY_PREFIX_BYTES);
  if (length < 0 || length > body.length) {
    partial.parity = null;
    return false;
  }
  const out = body.slice(0, length);
  for (const p of partial.parts) {
    if (!p) continue;
    const n = Math.min(length, p.length);
    for (let j = 0; j < n; j++) out[j] ^= p[j];
  }
  partial.parts[missing] = out;
  partial.received++;
  return true;
}

/**
 * @param {number} track @param {Partial} partial every part present
 * @returns {Frame}
 */
function whole(track, partial) {
  const parts = /** @type {Uint8Array[]} */ (partial.parts);
  let size = 0;
  for (const p of parts) size += p.length;
  const data = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    data.set(p, at);
    at += p.length;
  }
  return { track, frame: partial.frame, keyframe: partial.keyframe, captureUs: partial.captureUs, refFrame: partial.refFrame, data };
}
