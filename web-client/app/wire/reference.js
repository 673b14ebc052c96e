// @ts-check
/**
 * @file Which received video frames may be decoded, from `MediaHeader.ref_frame`, and which
 * frame a sent frame references, from its temporal layer.
 *
 * A decoder fed a frame whose reference it never saw shows a broken picture until the
 * next keyframe. So the receiver decodes a frame only if it is a keyframe or the frame it
 * references was itself decoded since that keyframe; anything else is dropped and the
 * chain waits for recovery (a keyframe). With temporal layers (L1T2), top-layer frames
 * reference the base layer and nothing references them, so losing one breaks nothing.
 *
 * Each frame names one reference. That is enough because references form a chain: a frame
 * is only marked decoded after its own reference was, so "my reference was decoded" means
 * every frame it depends on was.
 *
 * No browser API here: Node's test runner covers it.
 */

/** Decoded frame numbers remembered: a reference further back than this is treated as missing (64 frames ≈ 2 s at 30 fps, far past any temporal pattern). */
export const MAX_REFERENCE_DISTANCE = 64;

/** The receiver's side: decode or drop, by reference. */
export class ReferenceTracker {
  constructor() {
    /** Recently decoded frame numbers, oldest first, at most MAX_REFERENCE_DISTANCE. @type {number[]} */
    this.decoded = [];
    this.haveKeyframe = false;
    this.stats = { accepted: 0, undecodable: 0 };
  }

  /** A new pairing, or the decoder lost its state: nothing may be decoded before a keyframe. */
  reset() {
    this.decoded = [];
    this.haveKeyframe = false;
  }

  /**
   * Whether a complete frame may go to the decoder; if so it is remembered as decoded.
   * @param {{frame: number, keyframe: boolean, refFrame: number}} f
   * @returns {boolean}
   */
  accept(f) {
    if (f.keyframe) {
      this.decoded = [f.frame];
      this.haveKeyframe = true;
      this.stats.accepted++;
      return true;
    }
    if (!this.haveKeyframe || f.refFrame === f.frame || !this.decoded.includes(f.refFrame)) {
      this.stats.undecodable++;
      return false;
    }
    this.decoded.push(f.frame);
    if (this.decoded.length > MAX_REFERENCE_DISTANCE) this.decoded.shift();
    this.stats.accepted++;
    return true;
  }

  /**
   * A frame that was accepted but then not decoded after all (the decoder refused it):
   * frames referencing it must not be decoded either.
   * @param {number} frame
   */
  forget(frame) {
    this.decoded = this.decoded.filter((n) => n !== frame);
  }
}

/**
 * The sender's side: how far back the frame a newly encoded frame references is, from the
 * encoder's temporal layer id (`metadata.svc.temporalLayerId`; 0 without layers).
 *
 * The patterns Chromium's encoders use for L1T2: base-layer frames (layer 0) reference the
 * previous base-layer frame; layer-1 frames reference the latest base-layer frame and are
 * referenced by nothing.
 */
export class LayerReferences {
  constructor() {
    /** Frame number of the latest base-layer frame sent, or null. @type {number | null} */
    this.lastBase = null;
  }

  reset() {
    this.lastBase = null;
  }

  /**
   * @param {number} frame the number this frame goes out with
   * @param {boolean} keyframe
   * @param {number} layer temporal layer id
   * @returns {number} the frame number it references (its own for a keyframe)
   */
  refFor(frame, keyframe, layer) {
    if (keyframe) {
      this.lastBase = frame;
      return frame;
    }
    // Without a base frame on record (should not happen after a keyframe), fall back to the previous frame.
    const ref = this.lastBase ?? (frame - 1) >>> 0;
    if (layer === 0) this.lastBase = frame;
    return ref;
  }
}
