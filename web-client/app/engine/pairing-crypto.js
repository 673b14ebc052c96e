// @ts-check
/**
 * @file One pairing's end-to-end encryption, as the media worker runs it: its own key pair,
 * the keys agreed with the partner, the chat line counter, the queues that keep frames and
 * lines in order while WebCrypto works (it is asynchronous), and what failed to open. The
 * same rules as the native client (client/src/e2ee.rs), over wire/e2ee.js:
 *
 * - a new pairing, a new key pair (made ahead of `Matched`, so pairing does not wait for
 *   it: the worker registers it with the relay, which gives it to the partner in `Matched`);
 *   when the partner did not get it that way, its `keyShare` goes to the relay at
 *   `Matched`, and again after a resumed `Matched` (the same match id keeps this object,
 *   so the keys too);
 * - the partner's first key stands: the same key again changes nothing, a different one is
 *   refused and counted (an honest partner never changes keys mid-call, a relay swapping
 *   keys would);
 * - nothing is sealed before the keys are agreed; what arrives before that (the partner's
 *   key and their first frames race each other) waits for the keys, at most KEY_WAIT_MS;
 * - a frame or line that does not open is dropped and counted, never used; a chat line in
 *   clear is never shown (a relay could write one itself).
 *
 * No DOM and no sockets: the worker brings the messages and sends what this returns.
 */

import { E2eeError, KIND_AUDIO, KIND_CHAT, KIND_VIDEO, PairKeys, chatAad, compareBytes } from "../wire/e2ee.js";
import { TRACK_AUDIO, TRACK_VIDEO } from "../wire/protocol.js";

/** @typedef {import("../wire/e2ee.js").KeyPair} KeyPair */
/** @typedef {import("../wire/e2ee.js").SafetyCode} SafetyCode */
/** @typedef {import("../wire/fragment.js").Frame} Frame */
/** @typedef {import("../wire/protocol.js").ChatFrame} ChatFrame */

/**
 * How long a frame or line from the partner waits for their key. The key travels on the
 * reliable control stream and the partner seals nothing before it has ours, so it is at
 * most a round trip or two behind their first frame; past this the key is not coming.
 */
export const KEY_WAIT_MS = 5000;
/**
 * Frames per track waiting to be opened (or, in a sender, sealed) and handed on in order:
 * about a second of video at 30 fps or 0.6 s of audio. WebCrypto takes well under a
 * millisecond a frame, so this fills only while the partner's key is late; past it, a
 * frame is dropped (`dropped`), never queued behind what is already too late to play.
 */
export const MAX_IN_ORDER = 32;
/** Chat lines waiting to be opened or sealed: a few seconds of the relay's chat rate limit. */
export const MAX_LINES_IN_ORDER = 16;

/**
 * Counters for the snapshot, shared by every pairing of a session (the worker keeps one).
 * `sealUsTotal` / `openUsTotal` over `sealed` / `opened` give the mean cost per frame.
 * @typedef {object} E2eeStats
 * @property {{audio: number, video: number, chat: number}} unopened frames and lines that did not open (dropped)
 * @property {number} plainLinesDropped chat lines that came in clear (never shown)
 * @property {number} changedKeys `PeerKey`s that tried to change a pairing's agreed key
 * @property {number} dropped frames and lines dropped because their in-order queue was full
 * @property {number} sealed
 * @property {number} sealUsTotal
 * @property {number} opened
 * @property {number} openUsTotal
 */

/** @returns {E2eeStats} */
export function newE2eeStats() {
  return { unopened: { audio: 0, video: 0, chat: 0 }, plainLinesDropped: 0, changedKeys: 0, dropped: 0, sealed: 0, sealUsTotal: 0, opened: 0, openUsTotal: 0 };
}

/**
 * Hands results on in the order their work was pushed, whatever order the work finishes
 * in (WebCrypto promises may resolve out of order), while the work itself runs at once.
 * Bounded: `push` refuses past `max` waiting.
 */
export class InOrder {
  /** @param {number} max */
  constructor(max) {
    this.max = max;
    this.waiting = 0;
    /** @type {Promise<void>} */
    this.tail = Promise.resolve();
  }

  get full() {
    return this.waiting >= this.max;
  }

  /**
   * `then` runs on `work`'s result once everything pushed before has had its turn.
   * @template T, R
   * @param {Promise<T>} work already running
   * @param {(value: T) => R} then
   * @returns {Promise<Awaited<R>> | null} the turn (rejects if `work` or `then` failed; the
   *   queue goes on either way), or null when full (the work's result is ignored)
   */
  push(work, then) {
    if (this.full) {
      work.catch(() => {});
      return null;
    }
    this.waiting++;
    const turn = /** @type {Promise<Awaited<R>>} */ (this.tail.then(() => work).then(then));
    const done = () => {
      this.waiting--;
    };
    this.tail = turn.then(done, done);
    return turn;
  }
}

/** @param {number} track @returns {number} */
function kindOf(track) {
  if (track === TRACK_AUDIO) return KIND_AUDIO;
  if (track === TRACK_VIDEO) return KIND_VIDEO;
  throw new E2eeError("unopened", `track ${track} is not sealed`);
}

/** The part of a media header a sealed frame is bound to. @typedef {{frame: number, keyframe: boolean, captureUs: bigint, refFrame: number}} FrameHeader */

export class PairingCrypto {
  /**
   * @param {bigint} matchId
   * @param {Promise<KeyPair>} keyPair this side's key pair for the pairing (made ahead)
   * @param {E2eeStats} stats where counts go
   */
  constructor(matchId, keyPair, stats) {
    this.matchId = matchId;
    this.keyPair = keyPair;
    // A key pair that could not be made is reported by keyShare(); nobody else awaits it unhandled.
    keyPair.catch(() => {});
    this.stats = stats;
    /** @type {PairKeys | null} */
    this.keys = null;
    /** The derivation under way, if any. @type {Promise<PairKeys> | null} */
    this.deriving = null;
    /** The next chat line's number (our direction). */
    this.nextLine = 0;
    this.closed = false;
    /** The partner's key was refused (why), and no usable one has come since. @type {string | null} */
    this.refused = null;
    /** @type {() => void} */
    let wake = () => {};
    /** Settles when the keys are agreed, a key is refused, or the pairing ends. @type {Promise<void>} */
    this.settled = new Promise((resolve) => (wake = resolve));
    this.wake = wake;
    this.opening = { audio: new InOrder(MAX_IN_ORDER), video: new InOrder(MAX_IN_ORDER), chat: new InOrder(MAX_LINES_IN_ORDER) };
  }

  /** The keys are agreed: media and chat can go. */
  get ready() {
    return this.keys !== null;
  }

  /** The safety code, once agreed. @returns {SafetyCode | null} */
  get safetyCode() {
    return this.keys?.safetyCode ?? null;
  }

  /** The pairing ended: whatever waits for its keys gives up at once. */
  close() {
    this.closed = true;
    this.wake();
  }

  /**
   * The message that gives the partner this side's public key.
   * @returns {Promise<{type: "KeyShare", match_id: bigint, public: Uint8Array}>}
   * @throws {E2eeError} "unavailable" when this browser could not make the key pair
   */
  async keyShare() {
    const mine = await this.keyPair;
    return { type: "KeyShare", match_id: this.matchId, public: mine.public };
  }

  /**
   * The partner's key arrived (`PeerKey`).
   * @param {bigint} matchId @param {Uint8Array} peerPublic
   * @returns {Promise<"agreed" | "same" | "other pairing">} "agreed": the keys are agreed
   *   now; "same": the key we have (after a resume), nothing changes
   * @throws {E2eeError} "bad_peer_key": unusable, or not the key already agreed
   */
  async onPeerKey(matchId, peerPublic) {
    if (matchId !== this.matchId) return "other pairing";
    if (this.deriving) {
      // A second PeerKey while the first is being worked on: judge it against the outcome.
      await this.deriving.catch(() => {});
    }
    if (this.keys) {
      if (compareBytes(this.keys.peerPublic, peerPublic) === 0) return "same";
      this.stats.changedKeys++;
      throw new E2eeError("bad_peer_key", "the partner's key changed in the middle of the call");
    }
    const deriving = this.keyPair.then((mine) => PairKeys.derive(mine, peerPublic, this.matchId));
    this.deriving = deriving;
    try {
      this.keys = await deriving;
      this.refused = null;
    } catch (e) {
      // What waits for the keys need not wait longer: none are coming from this key.
      this.refused = e instanceof Error ? e.message : String(e);
      throw e;
    } finally {
      this.deriving = null;
      this.wake();
    }
    return "agreed";
  }

  /**
   * The keys once agreed, waiting at most KEY_WAIT_MS; null if the pairing ended, the
   * partner's key was refused, or it did not come.
   * @returns {Promise<PairKeys | null>}
   */
  async untilKeys() {
    if (this.keys || this.closed || this.refused !== null) return this.keys;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let timer;
    await Promise.race([this.settled, new Promise((resolve) => (timer = setTimeout(resolve, KEY_WAIT_MS)))]);
    clearTimeout(timer);
    return this.closed ? null : this.keys;
  }

  /**
   * Seals one media frame: its header as the fragmenter will write it (frame number,
   * keyframe flag, capture time, reference). Refused before the keys are agreed, and for a
   * frame number already sealed.
   * @param {number} track TRACK_AUDIO or TRACK_VIDEO
   * @param {FrameHeader} header
   * @param {Uint8Array} payload
   * @returns {Promise<Uint8Array>}
   */
  sealFrame(track, header, payload) {
    const keys = this.keys;
    if (!keys) return Promise.reject(new E2eeError("unopened", "the keys are not agreed yet"));
    if (track !== TRACK_AUDIO && track !== TRACK_VIDEO) return Promise.reject(new E2eeError("unopened", `track ${track} is not sealed`));
    const t0 = performance.now();
    return keys.seal({ matchId: this.matchId, kind: kindOf(track), number: header.frame, keyframe: header.keyframe, captureUs: header.captureUs, refFrame: header.refFrame }, payload).then((sealed) => {
      this.stats.sealed++;
      this.stats.sealUsTotal += (performance.now() - t0) * 1000;
      return sealed;
    });
  }

  /**
   * Opens a frame reassembled from this pairing's datagrams: null (counted) when it does
   * not open. The match id bound in is this pairing's, so a frame whose header was
   * rewritten from another pairing does not open.
   * @param {Frame} frame
   * @returns {Promise<Uint8Array | null>}
   */
  async openFrame(frame) {
    const kind = frame.track === TRACK_AUDIO ? KIND_AUDIO : KIND_VIDEO;
    const keys = await this.untilKeys();
    if (this.closed) return null;
    try {
      if (!keys) throw new E2eeError("unopened", "no key from the partner");
      const t0 = performance.now();
      const data = await keys.open({ matchId: this.matchId, kind, number: frame.frame, keyframe: frame.keyframe, captureUs: frame.captureUs, refFrame: frame.refFrame }, frame.data);
      this.stats.opened++;
      this.stats.openUsTotal += (performance.now() - t0) * 1000;
      return data;
    } catch {
      if (kind === KIND_AUDIO) this.stats.unopened.audio++;
      else this.stats.unopened.video++;
      return null;
    }
  }

  /**
   * Opens `frame` and hands it, opened, to `deliver`, after every frame of its track
   * received before it. Returns the turn (it never rejects), or null when the track's queue
   * is full (the frame is dropped and counted).
   * @param {Frame} frame
   * @param {(opened: Frame) => void} deliver
   * @returns {Promise<void> | null}
   */
  receiveFrame(frame, deliver) {
    const queue = frame.track === TRACK_AUDIO ? this.opening.audio : this.opening.video;
    const turn = queue.push(this.openFrame(frame), (data) => {
      if (data && !this.closed) deliver({ ...frame, data });
    });
    if (!turn) {
      this.stats.dropped++;
      return null;
    }
    return turn.catch((e) => console.warn("duet: an opened frame could not be used", e));
  }

  /**
   * A chat line, sealed, with the next line number. Waits for the keys (at most
   * KEY_WAIT_MS): a line typed the moment the partner appeared still goes.
   * @param {string} text
   * @returns {Promise<{type: "Sealed", number: number, sealed: Uint8Array}>}
   */
  async sealLine(text) {
    const keys = await this.untilKeys();
    if (this.closed) throw new Error("the pairing ended");
    if (!keys) throw new Error(this.refused !== null ? "your partner's encryption key was refused" : "your partner's encryption key did not arrive");
    const number = this.nextLine;
    // Taken before the seal is awaited, so lines sealed together keep their order.
    this.nextLine = (number + 1) >>> 0;
    const sealed = await keys.seal(chatAad(this.matchId, number), new TextEncoder().encode(text));
    return { type: "Sealed", number, sealed };
  }

  /**
   * The text of a chat frame from the partner on this pairing's stream, if it opens.
   * @param {ChatFrame} frame
   * @returns {Promise<string | null>}
   */
  async openLine(frame) {
    if (frame.type === "Line") {
      this.stats.plainLinesDropped++;
      return null;
    }
    if (frame.type !== "Sealed") return null;
    const keys = await this.untilKeys();
    if (this.closed) return null;
    try {
      if (!keys) throw new E2eeError("unopened", "no key from the partner");
      const bytes = await keys.open(chatAad(this.matchId, frame.number), frame.sealed);
      return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch {
      this.stats.unopened.chat++;
      return null;
    }
  }

  /**
   * Opens a chat frame and hands its text to `deliver`, in the order lines came. Returns
   * the turn (it never rejects), or null when too many lines wait (dropped, counted).
   * @param {ChatFrame} frame
   * @param {(text: string) => void} deliver
   * @returns {Promise<void> | null}
   */
  receiveLine(frame, deliver) {
    const turn = this.opening.chat.push(this.openLine(frame), (text) => {
      if (text !== null && !this.closed) deliver(text);
    });
    if (!turn) {
      this.stats.dropped++;
      return null;
    }
    return turn.catch((e) => console.warn("duet: an opened chat line could not be shown", e));
  }
}
