// @ts-check
/**
 * @file The Duet page: what a person sees and does, as one state machine.
 *
 * Phases: `start` (name, interests, Start) → `connecting` → `waiting` ("Looking for
 * someone…") → `paired` (partner video, chat, Next / Stop / Report) → back to `waiting` on
 * Next or when the partner leaves, or to `start` on Stop. `error` is the "can't reach the
 * relay" screen with Retry; a session lost in the middle of a call is resumed with its
 * token first, so a short network blip keeps the same partner.
 *
 * The relay's control messages drive the phases; the page never guesses a pairing. Media
 * runs only while paired, and every datagram is stamped with (and filtered by) the current
 * match id. `window.duet.snapshot()` exposes counters and timings for the browser tests
 * and for anyone debugging a call.
 */

import { Reassembler } from "./fragment.js";
import {
  ERROR_CODES,
  MAX_CHAT_BYTES,
  MAX_INTERESTS,
  PROTOCOL_VERSION,
  REPORT_REASONS,
  TRACK_VIDEO,
  helloProblem,
  readDatagram,
} from "./protocol.js";
import { utf8Length } from "./postcard.js";
import {
  AudioReceiver,
  AudioSender,
  VideoReceiver,
  VideoSender,
  captureMedia,
  chooseVideoCodec,
  codecLabel,
  mediaCaps,
  probeVideoCodecs,
  probeVideoDecoders,
} from "./media.js";
import { BitrateController, ReceiveMeter, classifyQuality, REPORT_INTERVAL_MS } from "./quality.js";
import { RelaySession, describe, describeErrorCode } from "./transport.js";

/** @typedef {import("./protocol.js").ServerMsg} ServerMsg */
/** @typedef {"start" | "connecting" | "waiting" | "paired" | "error"} Phase */

/** Minimum time between our keyframe requests to the partner (each one costs them a big frame). */
const KEYFRAME_REQUEST_INTERVAL_MS = 500;
/** Minimum time between keyframes we make because the partner asked. */
const KEYFRAME_ANSWER_INTERVAL_MS = 250;
/** Chat lines kept on screen (older ones scroll away for good). */
const MAX_CHAT_LINES = 200;
/** Resume attempts after losing the connection mid-call, the first backoff and its cap.
 * 10 attempts at 0.5, 1, 2, 4, 4, … s cover the relay's 30 s grace period. */
const MAX_RESUME_ATTEMPTS = 10;
const RESUME_BACKOFF_MS = 500;
const RESUME_BACKOFF_MAX_MS = 4000;
/** No partner frame for this long while paired: say so on the video. */
const VIDEO_STALE_MS = 3000;
/** Error codes after which retrying at once is pointless. */
/** @type {Set<number>} */
const NO_AUTO_RETRY = new Set([ERROR_CODES.unsupported_version, ERROR_CODES.server_full, ERROR_CODES.too_many_from_address]);

/** Milliseconds since the Unix epoch: comparable between pages on one machine (the tests' figures). */
function epochMs() {
  return performance.timeOrigin + performance.now();
}

/** @param {string} id @returns {any} */
function $(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing #${id}`);
  return el;
}

const ui = {
  screenStart: /** @type {HTMLElement} */ ($("screen-start")),
  screenCall: /** @type {HTMLElement} */ ($("screen-call")),
  screenError: /** @type {HTMLElement} */ ($("screen-error")),
  startForm: /** @type {HTMLFormElement} */ ($("start-form")),
  name: /** @type {HTMLInputElement} */ ($("name")),
  interests: /** @type {HTMLInputElement} */ ($("interests")),
  startNote: /** @type {HTMLElement} */ ($("start-note")),
  start: /** @type {HTMLButtonElement} */ ($("start")),
  errorTitle: /** @type {HTMLElement} */ ($("error-title")),
  errorMessage: /** @type {HTMLElement} */ ($("error-message")),
  retry: /** @type {HTMLButtonElement} */ ($("retry")),
  back: /** @type {HTMLButtonElement} */ ($("back")),
  canvas: /** @type {HTMLCanvasElement} */ ($("partner-video")),
  partnerName: /** @type {HTMLElement} */ ($("partner-name")),
  overlay: /** @type {HTMLElement} */ ($("stage-overlay")),
  overlayText: /** @type {HTMLElement} */ ($("stage-overlay-text")),
  selfView: /** @type {HTMLVideoElement} */ ($("self-view")),
  status: /** @type {HTMLElement} */ ($("status")),
  statusTimer: /** @type {HTMLElement} */ ($("status-timer")),
  mediaNote: /** @type {HTMLElement} */ ($("media-note")),
  next: /** @type {HTMLButtonElement} */ ($("next")),
  stop: /** @type {HTMLButtonElement} */ ($("stop")),
  camera: /** @type {HTMLButtonElement} */ ($("camera")),
  mic: /** @type {HTMLButtonElement} */ ($("mic")),
  report: /** @type {HTMLButtonElement} */ ($("report")),
  chatLog: /** @type {HTMLOListElement} */ ($("chat-log")),
  chatForm: /** @type {HTMLFormElement} */ ($("chat-form")),
  message: /** @type {HTMLInputElement} */ ($("message")),
  send: /** @type {HTMLButtonElement} */ ($("send")),
  chatError: /** @type {HTMLElement} */ ($("chat-error")),
  chatCount: /** @type {HTMLElement} */ ($("chat-count")),
  quality: /** @type {HTMLElement} */ ($("quality")),
  qualityButton: /** @type {HTMLButtonElement} */ ($("quality-button")),
  qualityLabel: /** @type {HTMLElement} */ ($("quality-label")),
  qualityDetails: /** @type {HTMLElement} */ ($("quality-details")),
  reportDialog: /** @type {HTMLDialogElement} */ ($("report-dialog")),
  reportForm: /** @type {HTMLFormElement} */ ($("report-form")),
  reportWho: /** @type {HTMLElement} */ ($("report-who")),
};

const state = {
  /** @type {Phase} */
  phase: "start",
  /** @type {RelaySession | null} */
  session: null,
  /** What the open session's Hello said (a different name needs a new session). */
  hello: { name: "", interests: /** @type {string[]} */ ([]) },
  /** @type {Uint8Array | null} */
  resumeToken: null,
  resumeAttempts: 0,
  /** @type {ReturnType<typeof setTimeout> | null} */
  resumeTimer: null,
  /** @type {bigint | null} */
  matchId: null,
  partnerName: "",
  /** A line about the last partner, shown while waiting ("Sam left — finding someone new…"). */
  waitingNote: "",
  waitingSince: 0,
  /** @type {bigint | null} the match we reported, so its PeerLeft reads right */
  reportedMatch: null,
  /** @type {import("./media.js").Capture | null} */
  capture: null,
  /** @type {string[]} codec strings this browser encodes and decodes, best first */
  codecs: [],
  /** @type {string[]} codec strings this browser decodes */
  decoders: [],
  /** @type {AudioContext | null} */
  audioCtx: null,
  /** @type {VideoSender | null} */
  videoSender: null,
  /** @type {AudioSender | null} */
  audioSender: null,
  /** @type {VideoReceiver | null} */
  videoReceiver: null,
  /** @type {AudioReceiver | null} */
  audioReceiver: null,
  reassembler: new Reassembler(),
  meter: new ReceiveMeter(),
  bitrate: new BitrateController(),
  lastKeyframeRequestAt: -Infinity,
  lastKeyframeAnswerAt: -Infinity,
  lastPartnerFrameAt: 0,
  partnerReconnecting: false,
  /** @type {{rtt_us: number, lost_permille: number, send_rate_kbps: number} | null} */
  relayStats: null,
  /** @type {import("./protocol.js").ReceiverReport | null} the partner's last report about our media */
  peerReport: null,
  /** @type {Omit<import("./protocol.js").ReceiverReport, "match_id"> | null} our last report about theirs */
  ownReport: null,
  /** @type {number | null} */
  transportRttMs: null,
  /** @type {number | null} */
  sendEstimateKbps: null,
  datagramsRejected: 0,
  datagramsOtherMatch: 0,
  /** Timings for the figures, in epoch milliseconds (see epochMs). */
  timeline: {
    /** @type {number | null} */
    startClickAt: null,
    /** @type {number | null} */
    nextClickAt: null,
    /** @type {{matchId: string, partner: string, matchedAt: number, firstKeyframeAt: number | null, firstFrameAt: number | null, firstAudioAt: number | null, codec: string | null}[]} */
    matches: [],
  },
};

// ---------------------------------------------------------------- rendering

/** @param {HTMLElement} el @param {boolean} show */
function show(el, show) {
  el.hidden = !show;
}

/** @param {Phase} phase */
function setPhase(phase) {
  state.phase = phase;
  document.body.dataset.phase = phase;
  show(ui.screenStart, phase === "start");
  show(ui.screenError, phase === "error");
  show(ui.screenCall, phase === "connecting" || phase === "waiting" || phase === "paired");
  show(ui.quality, phase === "waiting" || phase === "paired");
  const inCall = phase === "paired";
  ui.next.disabled = !inCall;
  ui.stop.disabled = !(phase === "connecting" || phase === "waiting" || phase === "paired");
  ui.report.disabled = !inCall;
  ui.message.disabled = !inCall;
  ui.send.disabled = !inCall;
  ui.start.disabled = false;
  renderStatus();
}

function elapsedText() {
  const s = Math.max(0, Math.floor((performance.now() - state.waitingSince) / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

/** @param {string} text */
function setStatus(text) {
  if (ui.status.textContent !== text) ui.status.textContent = text;
}

function renderStatus() {
  ui.statusTimer.textContent = "";
  switch (state.phase) {
    case "connecting":
      setStatus(state.resumeAttempts > 0 ? "Connection lost — reconnecting…" : "Connecting to Duet…");
      overlay(state.resumeAttempts > 0 ? "Reconnecting…" : "Connecting…");
      break;
    case "waiting":
      setStatus(state.waitingNote || "Looking for someone…");
      ui.statusTimer.textContent = elapsedText();
      overlay("Looking for someone…");
      break;
    case "paired":
      // Set by the message handlers (Connected to …, … is reconnecting…).
      break;
    default:
      setStatus("");
  }
}

/** @param {string | null} text shown over the partner video; null hides the overlay */
function overlay(text) {
  show(ui.overlay, text !== null);
  if (text !== null) ui.overlayText.textContent = text;
}

/**
 * @param {"partner" | "me" | "system"} who
 * @param {string} text
 */
function chatLine(who, text) {
  const li = document.createElement("li");
  li.className = `line ${who}`;
  if (who !== "system") {
    const name = document.createElement("span");
    name.className = "who";
    name.textContent = who === "me" ? "You" : state.partnerName;
    li.append(name, document.createTextNode(" "));
  }
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  li.append(body);
  ui.chatLog.append(li);
  while (ui.chatLog.childElementCount > MAX_CHAT_LINES) ui.chatLog.firstElementChild?.remove();
  ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
}

/** @param {string} text */
function chatError(text) {
  ui.chatError.textContent = text;
}

function renderChatCount() {
  const n = utf8Length(ui.message.value);
  ui.chatCount.textContent = n > MAX_CHAT_BYTES * 0.8 ? `${n.toLocaleString("en")} / ${MAX_CHAT_BYTES.toLocaleString("en")} bytes` : "";
  const over = n > MAX_CHAT_BYTES;
  ui.message.setAttribute("aria-invalid", String(over));
  ui.chatCount.classList.toggle("over", over);
}

/** @param {string} text shown on the first screen */
function startNote(text) {
  ui.startNote.textContent = text;
}

/** @param {string} title @param {string} message */
function showError(title, message) {
  ui.errorTitle.textContent = title;
  ui.errorMessage.textContent = message;
  setPhase("error");
  ui.retry.focus();
}

function renderQuality() {
  const rttMs = state.relayStats ? state.relayStats.rtt_us / 1000 : state.transportRttMs;
  const losses = [state.relayStats?.lost_permille, state.peerReport?.loss_permille, state.ownReport?.loss_permille].filter(
    (x) => typeof x === "number",
  );
  const loss = losses.length ? Math.max(.../** @type {number[]} */ (losses)) : null;
  const level = classifyQuality({ rttMs: rttMs ?? null, lossPermille: loss });
  const words = { good: "good", fair: "fair", poor: "poor", unknown: "measuring…" }[level];
  ui.qualityButton.dataset.level = level;
  ui.qualityLabel.textContent = `Connection: ${words}`;
  const fmtLoss = (/** @type {number | undefined} */ p) => (typeof p === "number" ? `${(p / 10).toFixed(1)}%` : "—");
  const send = state.videoSender;
  const rows = [
    ["Round trip", rttMs !== null && rttMs !== undefined ? `${Math.round(rttMs)} ms` : "—"],
    ["Loss to you", fmtLoss(state.ownReport?.loss_permille)],
    ["Loss to partner", fmtLoss(state.peerReport?.loss_permille)],
    ["Relay-measured loss", fmtLoss(state.relayStats?.lost_permille)],
    ["Receiving", state.ownReport ? `${state.ownReport.bitrate_kbps} kbit/s` : "—"],
    ["Sending video", send && state.phase === "paired" && send.enabled ? `${state.bitrate.target} kbit/s target` : "—"],
    ["Send estimate", state.sendEstimateKbps ? `${Math.round(state.sendEstimateKbps)} kbit/s` : "—"],
    ["Relay → you", state.relayStats ? `${state.relayStats.send_rate_kbps} kbit/s` : "—"],
    ["Jitter", state.ownReport ? `${state.ownReport.jitter_ms} ms` : "—"],
    ["Video codec", [send?.codec ? `out ${codecLabel(send.codec)}` : "", state.videoReceiver?.codec ? `in ${codecLabel(state.videoReceiver.codec)}` : ""].filter(Boolean).join(", ") || "—"],
    ["Frames decoded", String(state.videoReceiver?.stats.framesDecoded ?? 0)],
  ];
  ui.qualityDetails.replaceChildren(
    ...rows.flatMap(([k, v]) => {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v;
      return [dt, dd];
    }),
  );
  ui.qualityButton.title = rows.slice(0, 5).map(([k, v]) => `${k}: ${v}`).join("\n");
}

// ---------------------------------------------------------------- media

const sink = {
  matchId: () => (state.phase === "paired" ? state.matchId : null),
  maxDatagramSize: () => state.session?.maxDatagramSize ?? 1100,
  /** @param {Uint8Array} d */
  send: (d) => state.session?.sendDatagram(d) ?? false,
};

/** @param {string} text */
function mediaProblem(text) {
  ui.mediaNote.textContent = text;
  show(ui.mediaNote, true);
}

/** Camera and microphone on, encoders ready. Never throws: missing media means text only. */
async function startMedia() {
  if (state.capture) return;
  state.decoders = await probeVideoDecoders();
  const capture = await captureMedia();
  state.capture = capture;
  ui.selfView.srcObject = capture.video ? new MediaStream([capture.video]) : null;
  show(ui.selfView, !!capture.video);
  ui.camera.disabled = !capture.video;
  ui.mic.disabled = !capture.audio;
  setToggle(ui.camera, !!capture.video);
  setToggle(ui.mic, !!capture.audio);
  ui.mediaNote.textContent = capture.problem ?? "";
  show(ui.mediaNote, !!capture.problem);
  if (capture.video && typeof MediaStreamTrackProcessor === "function" && typeof VideoEncoder === "function") {
    const settings = capture.video.getSettings();
    state.codecs = await probeVideoCodecs(settings.width ?? 640, settings.height ?? 480);
    if (state.codecs.length) {
      state.videoSender = new VideoSender(capture.video, sink, state.codecs, mediaProblem);
      state.videoSender.setBitrate(state.bitrate.target);
      void state.videoSender.run();
    } else {
      mediaProblem("This browser cannot encode video, so your partner won't see you. You can still talk and text.");
    }
  } else if (capture.video) {
    mediaProblem("This browser cannot send video (no WebCodecs), so your partner won't see you. You can still text chat.");
  }
  if (capture.audio && typeof MediaStreamTrackProcessor === "function" && typeof AudioEncoder === "function") {
    state.audioSender = new AudioSender(capture.audio, sink, mediaProblem);
    void state.audioSender.run();
  }
}

function stopMedia() {
  state.videoSender?.stop();
  state.audioSender?.stop();
  state.videoSender = null;
  state.audioSender = null;
  for (const t of state.capture?.stream?.getTracks() ?? []) t.stop();
  state.capture = null;
  ui.selfView.srcObject = null;
}

/** @param {HTMLButtonElement} button @param {boolean} on */
function setToggle(button, on) {
  button.setAttribute("aria-pressed", String(on));
  const state = button.querySelector(".state");
  if (state) state.textContent = on ? "on" : "off";
}

function ensureReceivers() {
  if (!state.videoReceiver && typeof VideoDecoder === "function") {
    state.videoReceiver = new VideoReceiver(ui.canvas, {
      requestKeyframe: requestKeyframe,
      onFrame: onPartnerFrame,
      onProblem: mediaProblem,
    });
  }
  if (!state.audioReceiver) state.audioReceiver = new AudioReceiver(state.audioCtx);
}

function requestKeyframe() {
  const now = performance.now();
  if (state.phase !== "paired" || now - state.lastKeyframeRequestAt < KEYFRAME_REQUEST_INTERVAL_MS) return;
  state.lastKeyframeRequestAt = now;
  if (state.matchId !== null) state.session?.send({ type: "RequestKeyframe", match_id: state.matchId });
}

function currentMatchRecord() {
  const m = state.timeline.matches[state.timeline.matches.length - 1];
  return m && state.matchId !== null && m.matchId === state.matchId.toString() ? m : null;
}

function onPartnerFrame() {
  state.lastPartnerFrameAt = performance.now();
  const m = currentMatchRecord();
  if (m && m.firstFrameAt === null) {
    m.firstFrameAt = epochMs();
    m.codec = state.videoReceiver?.codec ?? null;
  }
  if (!ui.overlay.hidden) overlay(null);
}

/** @param {Uint8Array} datagram */
function onDatagram(datagram) {
  let parsed;
  try {
    parsed = readDatagram(datagram);
  } catch {
    state.datagramsRejected++;
    return;
  }
  const { header, offset } = parsed;
  if (state.phase !== "paired" || header.match_id !== state.matchId) {
    // A late datagram from a previous partner (or a stray one): never shown.
    state.datagramsOtherMatch++;
    return;
  }
  state.meter.onDatagram(header, datagram.length, performance.timeOrigin + performance.now());
  const frame = state.reassembler.push(header, datagram.subarray(offset));
  if (state.reassembler.takeKeyframeRequest()) requestKeyframe();
  if (!frame) return;
  if (header.track === TRACK_VIDEO) {
    const m = frame.keyframe ? currentMatchRecord() : null;
    if (m && m.firstKeyframeAt === null) m.firstKeyframeAt = epochMs();
    state.videoReceiver?.push(frame);
  } else {
    state.audioReceiver?.push(frame);
    const m = currentMatchRecord();
    if (m && m.firstAudioAt === null) m.firstAudioAt = epochMs();
  }
}

// ---------------------------------------------------------------- pairing

/** @param {Extract<ServerMsg, {type: "Matched"}>} msg */
function onMatched(msg) {
  const same = state.phase === "paired" && state.matchId === msg.match_id;
  state.matchId = msg.match_id;
  state.partnerName = msg.partner_name.trim() || "Someone";
  state.session?.setMatch(msg.match_id);
  if (same) return; // repeated after a resume: nothing changes
  state.peerReport = null;
  state.ownReport = null;
  state.meter.reset();
  state.bitrate.reset();
  state.reassembler = new Reassembler();
  ensureReceivers();
  state.videoReceiver?.reset();
  state.audioReceiver?.reset();
  const codec = chooseVideoCodec(state.codecs, msg.send_codec);
  state.videoSender?.setCodec(codec);
  state.videoSender?.setBitrate(state.bitrate.target);
  state.videoSender?.newPairing();
  state.audioSender?.newPairing();
  state.lastPartnerFrameAt = performance.now();
  state.partnerReconnecting = false;
  state.timeline.matches.push({
    matchId: msg.match_id.toString(),
    partner: state.partnerName,
    matchedAt: epochMs(),
    firstKeyframeAt: null,
    firstFrameAt: null,
    firstAudioAt: null,
    codec: null,
  });
  if (state.timeline.matches.length > 50) state.timeline.matches.shift();
  setPhase("paired");
  state.videoSender?.sendHeldFrame();
  ui.partnerName.textContent = state.partnerName;
  show(ui.partnerName, true);
  ui.canvas.setAttribute("aria-label", "Partner video");
  overlay(`Connecting to ${state.partnerName}…`);
  const shared = msg.shared_interests.slice(0, 8);
  setStatus(`Connected to ${state.partnerName}${shared.length ? ` — you both like ${shared.join(", ")}` : ""}`);
  ui.chatLog.replaceChildren();
  chatError("");
  chatLine("system", `You're talking to ${state.partnerName}.${shared.length ? ` You both like ${shared.join(", ")}.` : ""} Say hi!`);
  renderQuality();
}

/**
 * Leaves the current pairing on this side: media stops at once, nothing more from this
 * partner is shown.
 * @param {string} note the waiting line
 */
function unpair(note) {
  state.matchId = null;
  state.session?.setMatch(null);
  state.videoReceiver?.reset();
  state.audioReceiver?.reset();
  state.videoSender?.newPairing();
  state.audioSender?.newPairing();
  show(ui.partnerName, false);
  state.partnerReconnecting = false;
  state.waitingNote = note;
  state.waitingSince = performance.now();
}

/** @param {import("./protocol.js").LeaveReason} reason */
function onPeerLeft(reason) {
  const name = state.partnerName || "Your partner";
  let line;
  if (reason === "Reported") {
    line = state.reportedMatch === state.matchId ? "Report sent — finding someone new…" : "The chat was ended — finding someone new…";
  } else if (reason === "Disconnected") {
    line = `${name} left (connection lost) — finding someone new…`;
  } else {
    line = `${name} left — finding someone new…`;
  }
  if (state.phase === "paired") chatLine("system", line);
  unpair(line);
  // The relay puts us back in the queue by itself.
  setPhase("waiting");
}

/** @param {ServerMsg} msg */
function onMessage(msg) {
  switch (msg.type) {
    case "Welcome":
      state.resumeToken = msg.resume_token;
      if (state.resumeAttempts > 0) {
        state.resumeAttempts = 0;
        if (msg.resumed && state.matchId !== null) {
          // Same partner, same pairing: carry on, starting with a keyframe each way.
          state.session?.setMatch(state.matchId);
          state.videoSender?.requestKeyframe();
          setPhase("paired");
          setStatus(`Connected to ${state.partnerName}`);
          requestKeyframe();
        } else if (!msg.resumed && state.matchId !== null) {
          unpair(`Reconnected — ${state.partnerName} is gone, finding someone new…`);
          setPhase("waiting");
        } else {
          setPhase("waiting");
        }
      }
      break;
    case "Queued":
      if (state.phase !== "waiting") {
        if (state.phase !== "paired") state.waitingSince = performance.now();
        // A Queued while paired means the relay ended the pairing without a PeerLeft.
        if (state.phase === "paired") unpair("");
        setPhase("waiting");
      }
      break;
    case "Matched":
      onMatched(msg);
      break;
    case "PeerLeft":
      onPeerLeft(msg.reason);
      break;
    case "PeerReconnecting":
      if (state.phase === "paired") {
        state.partnerReconnecting = true;
        setStatus(`${state.partnerName} is reconnecting…`);
        overlay(`${state.partnerName} is reconnecting…`);
      }
      break;
    case "PeerReturned":
      if (state.phase === "paired") {
        state.partnerReconnecting = false;
        overlay(null);
        setStatus(`Connected to ${state.partnerName}`);
        state.videoSender?.requestKeyframe();
        requestKeyframe();
      }
      break;
    case "KeyframeRequested": {
      const now = performance.now();
      if (now - state.lastKeyframeAnswerAt >= KEYFRAME_ANSWER_INTERVAL_MS) {
        state.lastKeyframeAnswerAt = now;
        state.videoSender?.requestKeyframe();
      }
      break;
    }
    case "PeerReport":
      if (msg.match_id !== state.matchId) break; // about a pairing that has ended
      state.peerReport = {
        match_id: msg.match_id,
        loss_permille: msg.loss_permille,
        jitter_ms: msg.jitter_ms,
        frames_decoded: msg.frames_decoded,
        bitrate_kbps: msg.bitrate_kbps,
        queue_delay_ms: msg.queue_delay_ms,
      };
      state.videoSender?.setBitrate(state.bitrate.onPeerReport(msg, performance.now()));
      break;
    case "Stats":
      state.relayStats = { rtt_us: msg.rtt_us, lost_permille: msg.lost_permille, send_rate_kbps: msg.send_rate_kbps };
      break;
    case "Error":
      if (msg.fatal) return; // the close that follows carries it to onClosed
      if (msg.code === ERROR_CODES.rate_limited || msg.code === ERROR_CODES.too_large) {
        chatError(msg.message || describeErrorCode(msg.code));
      } else if (state.phase === "paired") {
        chatLine("system", msg.message || describeErrorCode(msg.code));
      } else {
        state.waitingNote = msg.message || describeErrorCode(msg.code);
        renderStatus();
      }
      break;
  }
}

// ---------------------------------------------------------------- session

/**
 * A random id kept across visits in localStorage, so that "never pair these two again"
 * survives a reconnect. Not a credential; null where storage is unavailable.
 * @returns {Uint8Array | null}
 */
function visitorId() {
  try {
    const stored = localStorage.getItem("duet.visitor");
    if (stored && /^[0-9a-f]{32}$/.test(stored)) {
      return Uint8Array.from(stored.match(/../g) ?? [], (h) => parseInt(h, 16));
    }
    const id = crypto.getRandomValues(new Uint8Array(16));
    localStorage.setItem("duet.visitor", Array.from(id, (b) => b.toString(16).padStart(2, "0")).join(""));
    return id;
  } catch {
    return null;
  }
}

/**
 * Opens a session (or resumes one) with the current name and interests.
 * @param {boolean} resume
 */
async function connect(resume) {
  const hello = {
    version: PROTOCOL_VERSION,
    name: state.hello.name,
    interests: state.hello.interests,
    resume: resume ? state.resumeToken : null,
    visitor: visitorId(),
    media: mediaCaps(state.codecs, state.decoders),
  };
  const session = new RelaySession({
    onMessage: (m) => {
      if (state.session === session) onMessage(m);
    },
    onChatLine: (matchId, text) => {
      if (state.session === session && matchId === state.matchId && state.phase === "paired") chatLine("partner", text);
    },
    onDatagram: (d) => {
      if (state.session === session) onDatagram(d);
    },
    onClosed: (info) => {
      if (state.session === session) onClosed(info);
    },
  });
  state.session = session;
  if (!resume) setPhase("connecting");
  try {
    await session.connect(hello, new URL(location.href));
  } catch (e) {
    if (state.session !== session) return;
    state.session = null;
    if (resume && state.resumeAttempts < MAX_RESUME_ATTEMPTS) {
      scheduleResume();
      return;
    }
    state.resumeAttempts = 0;
    if (state.matchId !== null) unpair("");
    showError("Can't reach Duet", describe(e));
  }
}

function scheduleResume() {
  state.resumeAttempts++;
  setPhase("connecting");
  // ±20% jitter, so everyone who lost the same network does not retry in step.
  const base = Math.min(RESUME_BACKOFF_MS * 2 ** (state.resumeAttempts - 1), RESUME_BACKOFF_MAX_MS);
  const delay = base * (0.8 + 0.4 * Math.random());
  state.resumeTimer = setTimeout(() => {
    state.resumeTimer = null;
    if (state.phase === "connecting") void connect(state.resumeToken !== null);
  }, delay);
}

/** @param {import("./transport.js").CloseInfo} info */
function onClosed(info) {
  state.session = null;
  if (info.byUs) return;
  const wasActive = state.phase === "waiting" || state.phase === "paired" || (state.phase === "connecting" && state.resumeAttempts > 0);
  if (info.code === ERROR_CODES.bad_resume_token) {
    // The relay forgot us: start a fresh session straight away.
    state.resumeToken = null;
  }
  if (state.phase === "start") {
    // Idle after Stop: the next Start opens a new session.
    return;
  }
  if (wasActive && (info.code === null || !NO_AUTO_RETRY.has(info.code)) && info.code !== ERROR_CODES.idle_timeout && state.resumeAttempts < MAX_RESUME_ATTEMPTS) {
    if (state.phase === "paired") {
      setStatus("Connection lost — reconnecting…");
      overlay("Reconnecting…");
    }
    scheduleResume();
    return;
  }
  state.resumeAttempts = 0;
  if (state.matchId !== null) unpair("");
  if (info.code === ERROR_CODES.idle_timeout) {
    stopMedia();
    setPhase("start");
    startNote(info.reason);
    return;
  }
  showError("Disconnected from Duet", info.reason);
}

/** @returns {{name: string, interests: string[]} | string} the form's values, or what is wrong */
function readForm() {
  const name = ui.name.value.trim().replace(/\s+/g, " ") || "Guest";
  const interests = [
    ...new Set(
      ui.interests.value
        .split(/[,;\n]/)
        .map((s) => s.trim().toLowerCase())
        .filter(Boolean),
    ),
  ];
  if (interests.length > MAX_INTERESTS) return `At most ${MAX_INTERESTS} interests, please.`;
  const problem = helloProblem({ version: PROTOCOL_VERSION, name, interests, resume: null, visitor: null, media: mediaCaps([], []) });
  return problem ?? { name, interests };
}

async function onStart() {
  const form = readForm();
  if (typeof form === "string") {
    startNote(form);
    return;
  }
  startNote("");
  try {
    localStorage.setItem("duet.name", form.name);
    localStorage.setItem("duet.interests", form.interests.join(", "));
  } catch {
    // Private mode: nothing remembered, nothing lost.
  }
  state.timeline.startClickAt = epochMs();
  ui.start.disabled = true;
  // Audio may only start from a click: create the context now, inside the gesture.
  if (!state.audioCtx && typeof AudioContext === "function") {
    try {
      state.audioCtx = new AudioContext({ sampleRate: 48_000, latencyHint: "interactive" });
    } catch {
      state.audioCtx = null;
    }
  }
  void state.audioCtx?.resume().catch(() => {});
  setPhase("connecting");
  await startMedia();
  ensureReceivers();
  state.waitingNote = "";
  state.waitingSince = performance.now();
  const same = form.name === state.hello.name && form.interests.join("\n") === state.hello.interests.join("\n");
  if (state.session && !state.session.closed && same) {
    // The session stayed open after Stop: Next puts us back in the queue.
    state.session.send({ type: "Next", match_id: null });
    setPhase("waiting");
    return;
  }
  if (state.session) {
    state.session.close("new name");
    state.session = null;
  }
  state.hello = form;
  state.resumeAttempts = 0;
  await connect(false);
}

function onNext() {
  if (state.phase !== "paired" || !state.session) return;
  state.timeline.nextClickAt = epochMs();
  state.session.send({ type: "Next", match_id: state.matchId });
  unpair("Finding someone new…");
  setPhase("waiting");
}

function onStop() {
  if (state.resumeTimer) clearTimeout(state.resumeTimer);
  state.resumeTimer = null;
  state.resumeAttempts = 0;
  if (state.session && !state.session.closed) state.session.send({ type: "Leave" });
  if (state.matchId !== null) unpair("");
  stopMedia();
  setPhase("start");
  startNote("You left the chat. Press Start to meet someone new.");
  ui.start.focus();
}

/** @param {SubmitEvent} ev */
function onSendChat(ev) {
  ev.preventDefault();
  const text = ui.message.value;
  if (!text.trim()) return;
  const bytes = utf8Length(text);
  if (bytes > MAX_CHAT_BYTES) {
    chatError(`Message not sent: it is ${bytes.toLocaleString("en")} bytes, and the limit is ${MAX_CHAT_BYTES.toLocaleString("en")}. Shorten it a little.`);
    ui.message.focus();
    return;
  }
  const session = state.session;
  if (!session || state.phase !== "paired") return;
  chatError("");
  ui.message.value = "";
  renderChatCount();
  chatLine("me", text);
  session.sendChat(text).catch((e) => chatError(`Message not sent: ${describe(e)}`));
}

function onReportSubmit() {
  const reason = /** @type {HTMLInputElement | null} */ (ui.reportForm.querySelector("input[name=reason]:checked"))?.value;
  if (ui.reportDialog.returnValue !== "send" || !reason || state.phase !== "paired" || !state.session) return;
  const r = REPORT_REASONS.find((x) => x === reason);
  if (!r) return;
  if (state.matchId === null) return;
  state.reportedMatch = state.matchId;
  state.session.send({ type: "Report", match_id: state.matchId, reason: r });
  // Like Next: the relay ends the pairing and re-queues us; we stop showing them at once.
  const line = `Thanks — ${state.partnerName} was reported and won't be matched with you again. Finding someone new…`;
  chatLine("system", line);
  unpair(line);
  setPhase("waiting");
}

/** Once a second: status timer, receiver report, quality, bitrate, stale video. */
async function everySecond() {
  if (state.phase === "waiting") ui.statusTimer.textContent = elapsedText();
  const session = state.session;
  if (!session || (state.phase !== "paired" && state.phase !== "waiting")) return;
  const t = await session.stats();
  state.transportRttMs = t.rttMs;
  state.sendEstimateKbps = t.sendRateKbps;
  if (t.sendRateKbps !== null) state.videoSender?.setBitrate(state.bitrate.onSendEstimate(t.sendRateKbps, performance.now()));
  if (state.phase === "paired") {
    const report = state.meter.report(performance.timeOrigin + performance.now(), state.videoReceiver?.stats.framesDecoded ?? 0);
    state.ownReport = report;
    if (state.matchId !== null) session.send({ type: "ReceiverReport", match_id: state.matchId, ...report });
    if (performance.now() - state.lastPartnerFrameAt > VIDEO_STALE_MS && !state.partnerReconnecting) {
      // Camera off, no camera, or video this browser cannot decode: say so instead of a frozen or empty picture.
      const text = `No video from ${state.partnerName}`;
      if (ui.overlay.hidden || ui.overlayText.textContent !== text) overlay(text);
    }
  }
  renderQuality();
}

// ---------------------------------------------------------------- test hooks

/** @param {number[]} xs @param {number} q */
function quantile(xs, q) {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

/** Counters and timings, as plain JSON (for the browser tests and for debugging). */
function snapshot() {
  const lat = state.videoReceiver?.latencies ?? [];
  return {
    phase: state.phase,
    status: ui.status.textContent,
    partnerName: state.phase === "paired" ? state.partnerName : null,
    matchId: state.matchId?.toString() ?? null,
    media: { video: !!state.capture?.video, audio: !!state.capture?.audio, problem: state.capture?.problem ?? null },
    send: {
      codec: state.videoSender?.codec ?? null,
      bitrateKbps: state.bitrate.target,
      video: state.videoSender ? { ...state.videoSender.stats } : null,
      audio: state.audioSender ? { ...state.audioSender.stats } : null,
      datagramsDropped: state.session?.datagramsDropped ?? 0,
      maxDatagramSize: state.session?.maxDatagramSize ?? null,
    },
    receive: {
      codec: state.videoReceiver?.codec ?? null,
      video: state.videoReceiver ? { ...state.videoReceiver.stats } : null,
      audio: state.audioReceiver ? { ...state.audioReceiver.stats, jitter: { ...state.audioReceiver.jitter.stats } } : null,
      reassembly: { ...state.reassembler.stats },
      datagramsRejected: state.datagramsRejected,
      datagramsOtherMatch: state.datagramsOtherMatch,
      latencyMs: { count: lat.length, median: quantile(lat, 0.5), p95: quantile(lat, 0.95) },
    },
    quality: ui.qualityButton.dataset.level ?? "unknown",
    relayStats: state.relayStats,
    peerReport: state.peerReport,
    timeline: { ...state.timeline, matches: state.timeline.matches.map((m) => ({ ...m })) },
  };
}

/** Resets the latency samples, so a test can measure one stretch of a call. */
function clearLatencies() {
  if (state.videoReceiver) state.videoReceiver.latencies = [];
}

// ---------------------------------------------------------------- wiring

function init() {
  try {
    ui.name.value = localStorage.getItem("duet.name") ?? "";
    ui.interests.value = localStorage.getItem("duet.interests") ?? "";
  } catch {
    // No storage: empty form.
  }
  ui.startForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    void onStart();
  });
  ui.retry.addEventListener("click", () => {
    state.resumeAttempts = 0;
    state.waitingNote = "";
    state.waitingSince = performance.now();
    void (async () => {
      await startMedia();
      ensureReceivers();
      await connect(false);
    })();
  });
  ui.back.addEventListener("click", () => {
    stopMedia();
    setPhase("start");
  });
  ui.next.addEventListener("click", onNext);
  ui.stop.addEventListener("click", onStop);
  ui.camera.addEventListener("click", () => {
    const on = ui.camera.getAttribute("aria-pressed") !== "true";
    state.videoSender?.setEnabled(on);
    if (!state.videoSender && state.capture?.video) state.capture.video.enabled = on;
    setToggle(ui.camera, on);
  });
  ui.mic.addEventListener("click", () => {
    const on = ui.mic.getAttribute("aria-pressed") !== "true";
    state.audioSender?.setEnabled(on);
    if (!state.audioSender && state.capture?.audio) state.capture.audio.enabled = on;
    setToggle(ui.mic, on);
  });
  ui.report.addEventListener("click", () => {
    if (state.phase !== "paired") return;
    ui.reportWho.textContent = state.partnerName;
    ui.reportForm.reset();
    ui.reportDialog.returnValue = "";
    ui.reportDialog.showModal();
  });
  ui.reportDialog.addEventListener("close", onReportSubmit);
  ui.chatForm.addEventListener("submit", onSendChat);
  ui.message.addEventListener("input", () => {
    renderChatCount();
    if (utf8Length(ui.message.value) <= MAX_CHAT_BYTES) chatError("");
  });
  ui.qualityButton.addEventListener("click", () => {
    const open = ui.qualityButton.getAttribute("aria-expanded") !== "true";
    ui.qualityButton.setAttribute("aria-expanded", String(open));
    show(ui.qualityDetails, open);
  });
  // Closing the tab is leaving: tell the relay now rather than let it wait for a timeout.
  window.addEventListener("pagehide", () => {
    const s = state.session;
    if (!s) return;
    s.send({ type: "Leave" });
    s.close("page closed");
  });
  setInterval(() => void everySecond(), REPORT_INTERVAL_MS);
  window.duet = { snapshot, clearLatencies };
  setPhase("start");
  renderQuality();
}

init();
