// @ts-check
/**
 * @file The media engine: a dedicated worker that owns the session with the relay (control,
 * chat and datagrams, over WebTransport or its WebSocket fallback: transport.js), the
 * encoders, decoders, reassembly and the partner's canvas. The page keeps the interface;
 * the two talk through the small messages of messages.js.
 *
 * The worker follows pairings from the control messages it carries itself, so a new
 * partner's media starts without a round trip through the page: on `Matched` it numbers
 * frames from zero, points the decoder at `recv_codec`, encodes the held camera frame as
 * a keyframe, and only then tells the page. Sending `Next`, `Leave` or `Report` ends the
 * pairing's media at once; so do `PeerLeft`, `Queued` and a `Welcome` that did not resume.
 * Every datagram is filtered by the current match id, so nothing of a previous partner is
 * shown. Each step after Next is timed in epoch milliseconds (the `timeline`).
 *
 * Media and chat are end-to-end encrypted (engine/pairing-crypto.js over wire/e2ee.js): a
 * key pair is made ahead of each pairing and its public half registered with the relay
 * (`NextKey`), which puts it in the partner's `Matched` (`partner_key`) and tells us it did
 * (`your_key`), so both sides agree the keys the moment they are paired. A pairing made
 * before the relay had our key uses a fresh key pair sent in a `KeyShare` (and the
 * partner's comes as `PeerKey`); a resumed `Matched` sends it again and keeps the keys.
 * Only once the keys are agreed does media go, starting with a keyframe. Frames are sealed before
 * they are cut into datagrams and opened after they are put back together, in order; a
 * frame or chat line that does not open, and a chat line in clear, is counted and dropped.
 */

import { describe } from "./session.js";
import { connectRelay } from "./transport.js";
import { VideoSender } from "./video-send.js";
import { VideoReceiver } from "./video-receive.js";
import { AudioSender } from "./audio-send.js";
import { AudioReceiver } from "./audio-receive.js";
import { Fragmenter, Reassembler } from "../wire/fragment.js";
import { VideoOrder } from "../wire/video-order.js";
import { MAX_NACK_FRAGMENTS, TRACK_AUDIO, TRACK_VIDEO, readDatagram } from "../wire/protocol.js";
import { BitrateController, ReceiveMeter, REPORT_INTERVAL_MS, RTT_SAMPLE_MS } from "../wire/quality.js";
import { codecFamily } from "../wire/codecs.js";
import { epochMs } from "../wire/clock.js";
import { checkStamp } from "./stamp-check.js";
import { audioStream, hasTrackProcessor, videoStream } from "./capture-streams.js";
import { CanvasDisplay, TrackDisplay } from "./video-display.js";
import { InOrder, KEY_WAIT_MS, MAX_LINES_IN_ORDER, PairingCrypto, newE2eeStats } from "./pairing-crypto.js";
import { compareBytes, generateKeyPair } from "../wire/e2ee.js";

/** @typedef {import("./messages.js").ToWorker} ToWorker */
/** @typedef {import("./messages.js").FromWorker} FromWorker */
/** @typedef {import("../wire/protocol.js").ServerMsg} ServerMsg */

/** How often frames held behind a gap are looked at again when no datagram arrives. */
const ORDER_TICK_MS = 20;
/** Minimum time between our keyframe requests to the partner (each one costs them a big frame). */
const KEYFRAME_REQUEST_INTERVAL_MS = 300;
/** Minimum time between keyframes we make because the partner asked. */
const KEYFRAME_ANSWER_INTERVAL_MS = 250;
/** Pairings whose timings are kept for the snapshot. */
const MAX_TIMELINE_MATCHES = 50;
/** The page hears "partner video is flowing" at most this often (it hides the "No video" overlay). */
const PARTNER_VIDEO_NOTICE_MS = 500;

/** @type {any} */
const scope = globalThis;

/**
 * @typedef {object} MatchTimes epoch ms of each step of one pairing (null: not yet)
 * @property {string} matchId
 * @property {string} partner
 * @property {number} matchedAt
 * @property {number | null} keysAgreedAt the partner's key came and both directions' keys are derived
 * @property {{partner: boolean, ours: boolean}} keysInMatched whether `Matched` brought the partner's key,
 *   and gave them ours (both: the keys were agreed without a message crossing the relay)
 * @property {number | null} firstKeyframeSentAt
 * @property {number | null} firstKeyframeAt first keyframe received whole
 * @property {number | null} firstDecodedAt
 * @property {number | null} firstFrameAt first partner frame painted
 * @property {number | null} firstAudioAt
 * @property {string | null} codec
 */

const engine = {
  /** Where the camera and microphone are read (snapshot().capture, for tests and support). */
  capture: { video: /** @type {import("./messages.js").VideoSource["kind"] | null} */ (null), audio: /** @type {import("./messages.js").AudioSource["kind"] | null} */ (null) },
  /** @type {import("./transport.js").Session | null} */
  session: null,
  /** The connection being made (Stop cancels it), or the one open; its handlers alone reach the engine. @type {AbortController | null} */
  attempt: null,
  /** @type {bigint | null} the pairing media belongs to */
  matchId: null,
  /** @type {VideoSender | null} */
  videoSender: null,
  /** The codec the current pairing's Matched said to send (a camera started mid-call needs it). @type {import("../wire/protocol.js").VideoCodec | null} */
  sendCodec: null,
  /** The numbering of what we send, per track and pairing. It outlives a sender, so a camera
   * or microphone changed mid-call carries on where the last one stopped. */
  videoFragmenter: new Fragmenter(TRACK_VIDEO),
  audioFragmenter: new Fragmenter(TRACK_AUDIO),
  /** @type {AudioSender | null} */
  audioSender: null,
  /** @type {VideoReceiver | null} */
  videoReceiver: null,
  /** @type {AudioReceiver} */
  audioReceiver: new AudioReceiver(null),
  reassembler: new Reassembler({ recoverVideo: true }),
  /** Whole video frames back in order for the decoder; gaps are asked for again. @type {VideoOrder<import("../wire/fragment.js").Frame>} */
  order: new VideoOrder(),
  /** Highest video datagram sequence number of this pairing, or null. @type {number | null} */
  lastVideoSeq: null,
  /** Gaps already asked for ("frame:fragments"), bounded. @type {Set<string>} */
  nackedGaps: new Set(),
  meter: new ReceiveMeter(),
  bitrate: new BitrateController(),
  lastKeyframeRequestAt: -Infinity,
  lastKeyframeAnswerAt: -Infinity,
  lastPartnerNoticeAt: -Infinity,
  datagramsRejected: 0,
  datagramsOtherMatch: 0,
  /** @type {{rtt_us: number, lost_permille: number, send_rate_kbps: number} | null} */
  relayStats: null,
  /** @type {import("../wire/protocol.js").ReceiverReport | null} */
  peerReport: null,
  /** @type {Omit<import("../wire/protocol.js").ReceiverReport, "match_id"> | null} */
  ownReport: null,
  /** @type {number | null} */
  transportRttMs: null,
  /** @type {number | null} */
  sendEstimateKbps: null,
  /** The bytes the transport had sent at the last RTT sample, and when (for the send rate between samples). @type {{atMs: number, bytes: number} | null} */
  lastSent: null,
  /** An RTT sample's `getStats` is still unanswered. */
  rttSamplePending: false,
  /** @type {MatchTimes[]} */
  matches: [],
  inspect: false,
  /** The current pairing's end-to-end encryption (null while unpaired). @type {PairingCrypto | null} */
  crypto: null,
  /** The key pair the next pairing will use, made ahead so `Matched` does not wait for it. @type {Promise<import("../wire/e2ee.js").KeyPair> | null} */
  nextKeyPair: null,
  /**
   * The key pair registered with the relay for the next pairing (`NextKey`; `public` null
   * until it is made and sent), until a `Matched` names it as `your_key`. At most one.
   * @type {{pair: Promise<import("../wire/e2ee.js").KeyPair>, public: Uint8Array | null} | null}
   */
  registered: null,
  /** What sealing and opening counted, over the whole session. */
  e2eeStats: newE2eeStats(),
  /** This browser cannot make the keys: said once. */
  e2eeProblemShown: false,
  /** Chat lines being sealed and sent, in the order typed. */
  chatOut: new InOrder(MAX_LINES_IN_ORDER),
};

/** @param {FromWorker} msg @param {Transferable[]} [transfer] */
function post(msg, transfer = []) {
  scope.postMessage(msg, transfer);
}

/** Where senders put their frames. Until the pairing's keys are agreed it says no pairing, so nothing is sent in clear. @type {import("./video-send.js").MediaSink} */
const sink = {
  matchId: () => {
    const c = engine.crypto;
    return c !== null && c.ready && c.matchId === engine.matchId ? engine.matchId : null;
  },
  maxDatagramSize: () => engine.session?.maxDatagramSize ?? 1100,
  send: (d) => engine.session?.sendDatagram(d) ?? false,
  seal: (matchId, track, header, payload) => {
    const c = engine.crypto;
    if (!c || c.matchId !== matchId || engine.matchId !== matchId) return Promise.reject(new Error("the pairing ended"));
    return c.sealFrame(track, header, payload);
  },
};

/** A key pair being made; a failure is reported when a pairing uses it (shareKey). */
function freshKeyPair() {
  const pair = generateKeyPair();
  pair.catch(() => {});
  return pair;
}

/** The key pair for a new pairing (made earlier), and the next one started now. */
function takeKeyPair() {
  const pair = engine.nextKeyPair ?? freshKeyPair();
  engine.nextKeyPair = freshKeyPair();
  return pair;
}

/**
 * Sends this side's key for the pairing `crypto` belongs to (again, after a resume).
 * @param {PairingCrypto} crypto
 */
async function shareKey(crypto) {
  let msg;
  try {
    msg = await crypto.keyShare();
  } catch (e) {
    if (!engine.e2eeProblemShown) {
      engine.e2eeProblemShown = true;
      onProblem(describe(e));
    }
    return;
  }
  if (engine.crypto === crypto) engine.session?.send(msg);
}

/**
 * Registers a key pair with the relay for the next pairing, unless one is registered
 * already (the relay uses each for one pairing and says so in `Matched`).
 */
async function registerNextKey() {
  if (engine.registered) return;
  const pair = takeKeyPair();
  const reg = { pair, public: /** @type {Uint8Array | null} */ (null) };
  engine.registered = reg;
  let made;
  try {
    made = await pair;
  } catch {
    if (engine.registered === reg) engine.registered = null; // reported when a pairing needs a key (shareKey)
    return;
  }
  if (engine.registered !== reg) return;
  reg.public = made.public;
  engine.session?.send({ type: "NextKey", public: made.public });
}

/**
 * The key pair for a new pairing: the registered one if the relay gave it to the partner
 * (`your_key`), else one made ahead that the partner has not seen.
 * @param {Uint8Array | null} yourKey
 * @returns {{pair: Promise<import("../wire/e2ee.js").KeyPair>, partnerHasIt: boolean}}
 */
function keyPairFor(yourKey) {
  const reg = engine.registered;
  if (yourKey && reg?.public && compareBytes(yourKey, reg.public) === 0) {
    engine.registered = null;
    return { pair: reg.pair, partnerHasIt: true };
  }
  return { pair: takeKeyPair(), partnerHasIt: false };
}

/** @param {Extract<ServerMsg, {type: "PeerKey"}>} msg */
async function onPeerKey(msg) {
  const crypto = engine.crypto;
  if (!crypto || crypto.matchId !== msg.match_id) return; // about a pairing that has ended
  let result;
  try {
    result = await crypto.onPeerKey(msg.match_id, msg.public);
  } catch (e) {
    if (engine.crypto === crypto) {
      post({ type: "e2eeProblem", matchId: crypto.matchId, text: `Your partner's encryption key was refused (${describe(e)}), so nothing can be exchanged with them safely. Press Next to meet someone else.` });
    }
    return;
  }
  if (result !== "agreed" || engine.crypto !== crypto) return;
  const m = currentTimes();
  if (m && m.keysAgreedAt === null) m.keysAgreedAt = epochMs();
  post({ type: "e2ee", matchId: crypto.matchId, safetyCode: crypto.safetyCode });
  // Media may go now (numbered from zero: nothing was numbered since Matched), the face
  // first: the frame the camera already gave us, as a keyframe.
  const sender = engine.videoSender;
  if (sender) {
    sender.requestKeyframe();
    sender.sendHeldFrame();
  }
}

function currentTimes() {
  const m = engine.matches[engine.matches.length - 1];
  return m && engine.matchId !== null && m.matchId === engine.matchId.toString() ? m : null;
}

function requestKeyframe() {
  const now = performance.now();
  if (engine.matchId === null || now - engine.lastKeyframeRequestAt < KEYFRAME_REQUEST_INTERVAL_MS) return;
  engine.lastKeyframeRequestAt = now;
  engine.session?.send({ type: "RequestKeyframe", match_id: engine.matchId });
}

/** @param {"Vp8" | "Vp9" | "Av1" | "H264" | null} family */
function reportCodecFailed(family) {
  if (family) post({ type: "codecFailed", family });
}

/** @param {import("./messages.js").DisplayTarget} target */
function makeVideoReceiver(target) {
  const display = target.kind === "track" ? new TrackDisplay(target.writable) : new CanvasDisplay(target.canvas);
  return new VideoReceiver(display, {
    requestKeyframe,
    onDecoded: () => {
      const m = currentTimes();
      if (m && m.firstDecodedAt === null) m.firstDecodedAt = epochMs();
    },
    onPainted: () => {
      const m = currentTimes();
      const now = performance.now();
      if (m && m.firstFrameAt === null) {
        m.firstFrameAt = epochMs();
        m.codec = engine.videoReceiver?.codec ?? null;
      }
      if (engine.matchId !== null && now - engine.lastPartnerNoticeAt >= PARTNER_VIDEO_NOTICE_MS) {
        engine.lastPartnerNoticeAt = now;
        post({ type: "partnerVideo", matchId: engine.matchId });
      }
    },
    onCodecFailed: (codec) => reportCodecFailed(codecFamily(codec)),
    audioDelayMs: () => engine.audioReceiver.delayMs,
    inspecting: () => engine.inspect,
    inspect: checkStamp,
  });
}

// ---------------------------------------------------------------- pairings

/** @param {Extract<ServerMsg, {type: "Matched"}>} msg */
function onMatched(msg) {
  if (engine.matchId === msg.match_id) {
    // Repeated after a resume: the same pairing and keys; our key again, in case it was
    // lost with the old connection (the relay sends the partner's again too).
    if (engine.crypto) void shareKey(engine.crypto);
    if (msg.partner_key) void onPeerKey({ type: "PeerKey", match_id: msg.match_id, public: msg.partner_key });
    return;
  }
  engine.crypto?.close();
  const { pair, partnerHasIt } = keyPairFor(msg.your_key);
  const crypto = new PairingCrypto(msg.match_id, pair, engine.e2eeStats);
  engine.crypto = crypto;
  engine.matchId = msg.match_id;
  engine.sendCodec = msg.send_codec;
  engine.videoFragmenter.reset();
  engine.audioFragmenter.reset();
  engine.session?.setMatch(msg.match_id);
  engine.peerReport = null;
  engine.ownReport = null;
  engine.meter.reset();
  engine.bitrate.reset();
  engine.reassembler = new Reassembler({ recoverVideo: true });
  engine.order.reset();
  engine.lastVideoSeq = null;
  engine.nackedGaps.clear();
  engine.lastPartnerNoticeAt = -Infinity;
  engine.matches.push({
    matchId: msg.match_id.toString(),
    partner: msg.partner_name.trim() || "Someone",
    matchedAt: epochMs(),
    keysAgreedAt: null,
    keysInMatched: { partner: msg.partner_key !== null, ours: partnerHasIt },
    firstKeyframeSentAt: null,
    firstKeyframeAt: null,
    firstDecodedAt: null,
    firstFrameAt: null,
    firstAudioAt: null,
    codec: null,
  });
  if (engine.matches.length > MAX_TIMELINE_MATCHES) engine.matches.shift();
  const sender = engine.videoSender;
  if (sender) {
    sender.setFamily(msg.send_codec);
    followBitrate(sender);
    // Nothing goes until the keys are agreed (onPeerKey sends the first keyframe).
    sender.newPairing();
  }
  engine.audioSender?.newPairing();
  engine.videoReceiver?.newPairing(msg.recv_codec);
  engine.audioReceiver.reset();
  // The partner has our key already when the relay gave them the registered one.
  if (!partnerHasIt) void shareKey(crypto);
  if (msg.partner_key) void onPeerKey({ type: "PeerKey", match_id: msg.match_id, public: msg.partner_key });
  void registerNextKey();
  // A partner whose key never comes can be neither seen nor heard: say so rather than wait silently.
  setTimeout(() => {
    if (engine.crypto === crypto && !crypto.ready && engine.session) {
      post({ type: "e2eeProblem", matchId: crypto.matchId, text: "Your partner's encryption key did not arrive, so you can neither see, hear nor chat with them. Press Next to meet someone else." });
    }
  }, KEY_WAIT_MS);
}

/** Media of the current pairing stops at once; nothing more from this partner is shown. */
function unpair() {
  engine.matchId = null;
  // Its keys go with it: what is still being opened or sealed for it is dropped.
  engine.crypto?.close();
  engine.crypto = null;
  engine.session?.setMatch(null);
  engine.videoReceiver?.unpair();
  engine.order.reset();
  engine.lastVideoSeq = null;
  engine.nackedGaps.clear();
  engine.audioReceiver.reset();
  engine.videoFragmenter.reset();
  engine.audioFragmenter.reset();
  engine.videoSender?.newPairing();
  engine.audioSender?.newPairing();
}

/** @param {ServerMsg} msg */
function onServerMsg(msg) {
  switch (msg.type) {
    case "Welcome":
      if (msg.resumed && engine.matchId !== null) {
        // Same partner, same pairing: carry on, starting with a keyframe each way.
        engine.session?.setMatch(engine.matchId);
        engine.videoSender?.requestKeyframe();
        engine.lastKeyframeRequestAt = -Infinity;
        requestKeyframe();
      } else if (!msg.resumed && engine.matchId !== null) {
        unpair();
      }
      // A new session on the relay knows no key of ours: register one for its first pairing.
      if (!msg.resumed) engine.registered = null;
      void registerNextKey();
      break;
    case "Matched":
      onMatched(msg);
      break;
    case "PeerKey":
      void onPeerKey(msg);
      break;
    case "Queued":
    case "PeerLeft":
      if (engine.matchId !== null) unpair();
      break;
    case "PeerReturned":
      engine.videoSender?.requestKeyframe();
      engine.lastKeyframeRequestAt = -Infinity;
      requestKeyframe();
      break;
    case "KeyframeRequested": {
      const now = performance.now();
      if (now - engine.lastKeyframeAnswerAt >= KEYFRAME_ANSWER_INTERVAL_MS) {
        engine.lastKeyframeAnswerAt = now;
        engine.videoSender?.requestKeyframe();
      }
      break;
    }
    case "PeerNack":
      if (msg.match_id === engine.matchId) engine.videoSender?.resend(msg.frame, msg.fragments);
      break;
    case "PeerReport":
      if (msg.match_id !== engine.matchId) break; // about a pairing that has ended
      engine.peerReport = { ...msg };
      engine.bitrate.onPeerReport(msg, performance.now());
      followBitrate(engine.videoSender);
      engine.videoSender?.onPeerLoss(msg.loss_permille, performance.now());
      break;
    case "Stats":
      engine.relayStats = { rtt_us: msg.rtt_us, lost_permille: msg.lost_permille, send_rate_kbps: msg.send_rate_kbps };
      break;
    default:
      break;
  }
  post({ type: "server", msg });
}

/** @param {Uint8Array} datagram */
function onDatagram(datagram) {
  let parsed;
  try {
    parsed = readDatagram(datagram);
  } catch {
    engine.datagramsRejected++;
    return;
  }
  const { header, offset } = parsed;
  if (engine.matchId === null || header.match_id !== engine.matchId) {
    // A late datagram from a previous partner (or a stray one): never shown.
    engine.datagramsOtherMatch++;
    return;
  }
  engine.meter.onDatagram(header, datagram.length, epochMs());
  const frame = engine.reassembler.push(header, datagram.subarray(offset));
  if (header.track === TRACK_VIDEO) {
    // A skipped sequence number shows loss at once: ask again now, not when a later frame completes.
    if (engine.lastVideoSeq !== null && header.seq > engine.lastVideoSeq + 1) nackGaps();
    if (engine.lastVideoSeq === null || header.seq > engine.lastVideoSeq) engine.lastVideoSeq = header.seq;
  }
  if (!frame) return;
  const m = currentTimes();
  if (m && frame.track === TRACK_VIDEO && frame.keyframe && m.firstKeyframeAt === null) m.firstKeyframeAt = epochMs();
  // Opened in order per track (the crypto's queues); one that does not open is counted there and dropped.
  const crypto = engine.crypto;
  if (!crypto) return;
  crypto.receiveFrame(frame, (opened) => {
    if (engine.crypto !== crypto) return; // the pairing ended while it was opened
    if (opened.track === TRACK_VIDEO) {
      if (engine.order.push(opened)) drainVideo();
    } else {
      const t = currentTimes();
      if (t && t.firstAudioAt === null) t.firstAudioAt = epochMs();
      engine.audioReceiver.push(opened);
    }
  });
}

/**
 * How long frames behind a missing one wait for its resend: a `Nack` and its answer cross
 * our leg to the relay and the partner's, twice each, so two of our round trips (the
 * partner's leg taken as equal to ours) and a margin for the gap's detection, within
 * bounds. The round trip is the relay's measure of ours (`Stats`), else the browser's.
 */
function gapWaitMs() {
  const relay = engine.relayStats?.rtt_us;
  const rtt = typeof relay === "number" && relay > 0 ? relay / 1000 : (engine.transportRttMs ?? 50);
  return Math.round(Math.min(400, Math.max(100, 2 * rtt + 60)));
}

/** The reassembler's gaps, each fragment asked for once. */
function nackGaps() {
  if (engine.matchId === null) return;
  for (const gap of engine.reassembler.gaps(MAX_NACK_FRAGMENTS)) {
    const key = `${gap.frame}:${gap.fragments.join(",")}`;
    if (engine.nackedGaps.has(key)) continue;
    engine.nackedGaps.add(key);
    if (engine.nackedGaps.size > 256) engine.nackedGaps.delete(/** @type {string} */ (engine.nackedGaps.values().next().value));
    engine.order.markNacked(gap.frame);
    engine.session?.send({ type: "Nack", match_id: engine.matchId, frame: gap.frame, fragments: gap.fragments });
  }
}

/** Frames the order stage lets through go to the decoder; its gaps become `Nack`s. */
function drainVideo() {
  const receiver = engine.videoReceiver;
  if (!receiver || engine.matchId === null) return;
  const refs = receiver.refs;
  const out = engine.order.poll(performance.now(), gapWaitMs(), (f) => refs.haveKeyframe && refs.decoded.includes(f.refFrame));
  for (const f of out.release) receiver.push(f, out.release.length);
  for (const frame of out.nack) {
    engine.session?.send({ type: "Nack", match_id: engine.matchId, frame, fragments: engine.reassembler.missing(frame, MAX_NACK_FRAGMENTS) });
  }
  if (engine.order.next !== null) engine.reassembler.abandonBefore(engine.order.next);
}

// ---------------------------------------------------------------- session

/**
 * Opens a session (a resume too) over whichever transport comes up (transport.js).
 * @param {import("../wire/protocol.js").Hello} hello @param {string} base
 * @param {boolean} webTransport false: the page says WebSocket only
 */
async function connect(hello, base, webTransport) {
  disconnect("reconnecting");
  const attempt = new AbortController();
  engine.attempt = attempt;
  const ours = () => engine.attempt === attempt;
  try {
    const session = await connectRelay(
      {
        onMessage: (m) => {
          if (ours()) onServerMsg(m);
        },
        onChatFrame: (matchId, frame) => {
          const crypto = engine.crypto;
          if (!ours() || matchId !== engine.matchId || !crypto || crypto.matchId !== matchId) return;
          // Shown only if it opens; a line in clear is counted and never shown.
          crypto.receiveLine(frame, (text) => {
            if (engine.crypto === crypto) post({ type: "chatLine", matchId, text });
          });
        },
        onDatagram: (d) => {
          if (ours()) onDatagram(d);
        },
        onClosed: (info) => {
          if (!ours()) return;
          engine.attempt = null;
          engine.session = null;
          post({ type: "closed", info });
        },
      },
      hello,
      new URL(base),
      { signal: attempt.signal, webTransport },
    );
    if (!ours()) {
      session.close("cancelled");
      return;
    }
    engine.session = session;
    // A resume keeps the pairing: chat for it is accepted again at once.
    if (engine.matchId !== null) session.setMatch(engine.matchId);
    post({ type: "connected", maxDatagramSize: session.maxDatagramSize, transport: session.transport });
  } catch (e) {
    // A connection cancelled by Stop or by a newer one is nobody's failure.
    if (!ours()) return;
    engine.attempt = null;
    post({ type: "connectFailed", message: describe(e) });
  }
}

/**
 * Ends the session, or cancels the connection being made (nothing is sent then).
 * @param {string} reason
 */
function disconnect(reason) {
  const session = engine.session;
  engine.attempt?.abort(reason);
  // The session's `onClosed` still reaches the page (it says `byUs`), as it always has.
  session?.close(reason);
  engine.attempt = null;
  engine.session = null;
}

/** @param {import("../wire/protocol.js").ClientMsg} msg */
function sendControl(msg) {
  engine.session?.send(msg);
  // Leaving a pairing ends its media here at once, before the relay answers.
  if ((msg.type === "Next" && msg.match_id !== null) || msg.type === "Leave" || msg.type === "Report") unpair();
}

/**
 * Seals a line for the current partner and sends it; lines go in the order typed (they
 * are numbered in that order, and each waits for the one before).
 * @param {number} id @param {string} text
 */
function sendChat(id, text) {
  const session = engine.session;
  const crypto = engine.crypto;
  if (!session) {
    post({ type: "chatResult", id, error: "not connected" });
    return;
  }
  if (!crypto || crypto.matchId !== engine.matchId) {
    post({ type: "chatResult", id, error: "not connected to anyone" });
    return;
  }
  const turn = engine.chatOut.push(crypto.sealLine(text), (line) => {
    // The session of the moment: a resume while the line was sealed brings a new one.
    const now = engine.session;
    if (!now) throw new Error("not connected");
    return now.sendChat(crypto.matchId, line);
  });
  if (!turn) {
    post({ type: "chatResult", id, error: "too many lines waiting to be sent; wait a moment" });
    return;
  }
  turn.then(
    () => post({ type: "chatResult", id, error: null }),
    (e) => post({ type: "chatResult", id, error: describe(e) }),
  );
}

/**
 * The bitrate controller's decision (its target, and whether video is paused), to the video sender.
 * @param {VideoSender | null | undefined} sender
 */
function followBitrate(sender) {
  sender?.setBitrate(engine.bitrate.target, engine.bitrate.videoPaused);
}

/** About every RTT_SAMPLE_MS while sending video: the RTT and send rate for the bitrate controller's own queue signal. */
async function rttSample() {
  const session = engine.session;
  if (!session || !engine.videoSender || engine.matchId === null) {
    engine.lastSent = null;
    return;
  }
  // One request at a time: a browser slow to answer must not collect a queue of them.
  if (engine.rttSamplePending) return;
  engine.rttSamplePending = true;
  const t = await session.stats().finally(() => {
    engine.rttSamplePending = false;
  });
  const now = performance.now();
  const last = engine.lastSent;
  const sentKbps = t.bytesSent !== null && last !== null && now > last.atMs ? ((t.bytesSent - last.bytes) * 8) / (now - last.atMs) : null;
  engine.lastSent = t.bytesSent === null ? null : { atMs: now, bytes: t.bytesSent };
  const sender = engine.videoSender;
  if (sender && engine.matchId !== null) {
    engine.bitrate.onRtt(t.rttMs, sentKbps, now);
    followBitrate(sender);
  }
}

/** Once a second: our receiver report, the transport's figures for the bitrate controller. */
async function everySecond() {
  const session = engine.session;
  if (!session) return;
  const t = await session.stats();
  engine.transportRttMs = t.rttMs;
  engine.sendEstimateKbps = t.sendRateKbps;
  const sender = engine.videoSender;
  if (t.sendRateKbps !== null) {
    engine.bitrate.onSendEstimate(t.sendRateKbps, performance.now());
    followBitrate(sender);
  }
  if (sender) sender.load.bandwidthLimited = engine.bitrate.limited;
  const receiver = engine.videoReceiver;
  if (engine.matchId !== null && receiver?.stalled(performance.now())) {
    receiver.stats.stalls++;
    requestKeyframe();
  }
  if (engine.matchId !== null) {
    const report = engine.meter.report(epochMs(), engine.videoReceiver?.stats.framesDecoded ?? 0);
    engine.ownReport = report;
    session.send({ type: "ReceiverReport", match_id: engine.matchId, ...report });
  }
}

// ---------------------------------------------------------------- snapshot

/** @param {number[]} xs @param {number} q */
function quantile(xs, q) {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

/** Newest latency samples whose median the snapshot gives as `recent` (about a second of frames). */
const RECENT_LATENCIES = 30;

/**
 * Capture-to-playout delay of the partner's sound against capture-to-screen of their
 * picture (both recent medians, ms); `offsetMs` > 0: the sound comes after the picture.
 * @param {number | null} videoMs
 */
function avSync(videoMs) {
  const audioMs = engine.audioReceiver.delayMs;
  const round = (/** @type {number | null} */ x) => (x === null ? null : Math.round(x * 10) / 10);
  return { audioMs: round(audioMs), videoMs: round(videoMs), offsetMs: audioMs === null || videoMs === null ? null : round(audioMs - videoMs) };
}

function snapshot() {
  const vr = engine.videoReceiver;
  const lat = vr?.latencies ?? [];
  const recent = quantile(lat.slice(-RECENT_LATENCIES), 0.5);
  const vs = engine.videoSender;
  return {
    matchId: engine.matchId?.toString() ?? null,
    /** "webtransport", "websocket", or null when no session is open. */
    transport: engine.session?.transport ?? null,
    capture: { ...engine.capture },
    send: {
      codec: vs?.choice?.codec ?? null,
      bitrateKbps: engine.bitrate.target,
      /** Video is paused: the network carries less than its floor, audio goes on alone (wire/quality.js). */
      videoPaused: engine.bitrate.videoPaused,
      video: vs ? { ...vs.stats, cpuStep: vs.load.step, workerLagMs: Math.round(vs.load.lagMs * 10) / 10, standby: { ...vs.standby.stats } } : null,
      audio: engine.audioSender ? { ...engine.audioSender.stats } : null,
      datagramsDropped: engine.session?.datagramsDropped ?? 0,
      maxDatagramSize: engine.session?.maxDatagramSize ?? null,
    },
    receive: {
      codec: vr?.codec ?? null,
      video: vr ? { ...vr.stats, references: { ...vr.refs.stats } } : null,
      audio: { ...engine.audioReceiver.stats, ...engine.audioReceiver.playoutStats },
      reassembly: { ...engine.reassembler.stats },
      order: { ...engine.order.stats, waitMs: gapWaitMs() },
      datagramsRejected: engine.datagramsRejected,
      datagramsOtherMatch: engine.datagramsOtherMatch,
      latencyMs: { count: lat.length, median: quantile(lat, 0.5), p95: quantile(lat, 0.95), max: lat.length ? Math.max(...lat) : null, recent },
      paintTimes: vr ? [...vr.paintTimes] : [],
      avSync: avSync(recent),
    },
    relayStats: engine.relayStats,
    peerReport: engine.peerReport ? { ...engine.peerReport, match_id: engine.peerReport.match_id.toString() } : null,
    ownReport: engine.ownReport,
    transportRttMs: engine.transportRttMs,
    sendEstimateKbps: engine.sendEstimateKbps,
    matches: engine.matches.map((m) => ({ ...m })),
    e2ee: e2eeSnapshot(),
  };
}

/** The end-to-end encryption's state and counters (sealUs / openUs: mean µs per frame). */
function e2eeSnapshot() {
  const c = engine.crypto;
  const st = engine.e2eeStats;
  const code = c?.safetyCode ?? null;
  const mean = (/** @type {number} */ total, /** @type {number} */ n) => (n > 0 ? Math.round((total / n) * 10) / 10 : null);
  return {
    /** "off": no pairing; "waiting": for the partner's key; "ready": keys agreed, everything sealed. */
    state: c === null ? "off" : c.ready ? "ready" : "waiting",
    safetyCode: code ? { emoji: code.emoji, words: code.words } : null,
    unopened: { ...st.unopened },
    plainLinesDropped: st.plainLinesDropped,
    changedKeys: st.changedKeys,
    dropped: st.dropped,
    sealed: st.sealed,
    opened: st.opened,
    sealUs: mean(st.sealUsTotal, st.sealed),
    openUs: mean(st.openUsTotal, st.opened),
  };
}

// ---------------------------------------------------------------- commands

/** @param {ToWorker} msg */
function onCommand(msg) {
  switch (msg.type) {
    case "init":
      engine.videoReceiver = makeVideoReceiver(msg.display);
      engine.audioReceiver = new AudioReceiver(msg.playout);
      break;
    case "audioClock":
      engine.audioReceiver.clockOffsetMs = msg.offsetMs;
      break;
    case "capture": {
      stopCapture();
      if (msg.video) startVideo(msg.video, msg.encoders);
      if (msg.audio) startAudio(msg.audio);
      break;
    }
    case "audio":
      // Another microphone: only the audio sender changes.
      engine.audioSender?.stop();
      engine.audioSender = null;
      engine.capture.audio = null;
      if (msg.audio) {
        startAudio(msg.audio);
      }
      break;
    case "video":
      // Another camera, or the camera turned back on: only the video sender changes.
      engine.videoSender?.stop();
      engine.videoSender = null;
      engine.capture.video = null;
      if (msg.video) startVideo(msg.video, msg.encoders);
      break;
    case "stopCapture":
      stopCapture();
      break;
    case "connect":
      void connect(msg.hello, msg.base, msg.webTransport);
      break;
    case "send":
      sendControl(msg.msg);
      break;
    case "chat":
      sendChat(msg.id, msg.text);
      break;
    case "close":
      disconnect(msg.reason);
      break;
    case "unpair":
      // Stale when the worker is already in a newer pairing than the page was leaving.
      if (engine.matchId !== null && engine.matchId === msg.matchId) unpair();
      break;
    case "camera":
      engine.videoSender?.setEnabled(msg.on);
      break;
    case "mic":
      engine.audioSender?.setEnabled(msg.on);
      break;
    case "snapshot":
      post({ type: "snapshot", id: msg.id, data: snapshot() });
      break;
    case "clearLatencies":
      if (engine.videoReceiver) engine.videoReceiver.latencies = [];
      break;
    case "inspect":
      engine.inspect = msg.on;
      break;
  }
}

/** @param {string} text */
function onProblem(text) {
  post({ type: "problem", text });
}

/**
 * A video sender for this camera, ready for the pairing in progress if there is one.
 * @param {import("./messages.js").VideoSource} source
 * @param {import("./video-send.js").EncoderChoice[]} encoders
 */
function startVideo(source, encoders) {
  let frames;
  try {
    frames = videoStream(source);
  } catch (e) {
    onProblem(`This browser cannot read your camera here (${describe(e)}), so your partner won't see you.`);
    return;
  }
  engine.capture.video = source.kind;
  const sender = new VideoSender(frames, sink, encoders, {
    onProblem,
    onCodecFailed: (codec) => reportCodecFailed(codecFamily(codec)),
    onKeyframeSent: () => {
      const m = currentTimes();
      if (m && m.firstKeyframeSentAt === null) m.firstKeyframeSentAt = epochMs();
    },
  });
  sender.fragmenter = engine.videoFragmenter;
  followBitrate(sender);
  if (engine.matchId !== null) sender.setFamily(engine.sendCodec);
  engine.videoSender = sender;
  void sender.run();
}

/** @param {import("./messages.js").AudioSource} source */
function startAudio(source) {
  engine.capture.audio = source.kind;
  const sender = new AudioSender(audioStream(source), sink, onProblem);
  sender.fragmenter = engine.audioFragmenter;
  engine.audioSender = sender;
  void sender.run();
}

function stopCapture() {
  engine.videoSender?.stop();
  engine.audioSender?.stop();
  engine.videoSender = null;
  engine.audioSender = null;
  engine.capture = { video: null, audio: null };
}

scope.onmessage = (/** @type {MessageEvent<ToWorker>} */ ev) => onCommand(ev.data);
// The first pairing's key pair too is ready before its Matched.
engine.nextKeyPair = freshKeyPair();
post({ type: "caps", trackProcessor: hasTrackProcessor() });
setInterval(() => void everySecond(), REPORT_INTERVAL_MS);
setInterval(() => void rttSample(), RTT_SAMPLE_MS);
// A gap's wait ends even when nothing more arrives. The same tick tells the CPU adaptation
// how late the worker's timers run (a short CPU makes them late however quick each encode is).
let orderTickDue = performance.now() + ORDER_TICK_MS;
setInterval(() => {
  const now = performance.now();
  engine.videoSender?.load.onLag(now - orderTickDue, now);
  orderTickDue = now + ORDER_TICK_MS;
  if (engine.order.held.size > 0) drainVideo();
}, ORDER_TICK_MS);
