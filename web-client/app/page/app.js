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
 * The relay's control messages drive the phases; the page never guesses a pairing. The
 * media, and the WebTransport session itself, live in a worker (engine/worker.js, reached
 * through engine.js): this thread never touches a frame, so a busy page does not stall the
 * call. `window.duet.snapshot()` (a promise) exposes counters and timings for the browser
 * tests and for anyone debugging a call.
 */

import { ERROR_CODES, MAX_CHAT_BYTES, MAX_INTERESTS, PROTOCOL_VERSION, REPORT_REASONS, helloProblem } from "../wire/protocol.js";
import { utf8Length } from "../wire/postcard.js";
import { classifyQuality, REPORT_INTERVAL_MS } from "../wire/quality.js";
import { codecLabel, mediaCaps } from "../wire/codecs.js";
import { epochMs } from "../wire/clock.js";
import { describeErrorCode } from "../engine/session.js";
import { captureMedia, transferStreams } from "./capture.js";
import { encoderChoices, failedCodecs, probeCodecs, rememberFailed } from "./codecs.js";
import { startPlayout } from "./audio-out.js";
import { Engine } from "./engine.js";

/** @typedef {import("../wire/protocol.js").ServerMsg} ServerMsg */
/** @typedef {"start" | "connecting" | "waiting" | "paired" | "error"} Phase */

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
  /** The partner's video: a `<video>` or a canvas, replaced by each new engine (page/engine.js). */
  partnerVideo: /** @type {HTMLVideoElement | HTMLCanvasElement} */ ($("partner-video")),
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
  /** @type {import("./capture.js").Capture | null} */
  capture: null,
  /** @type {import("../wire/codecs.js").CodecProbe[]} what WebCodecs said it handles here */
  probes: [],
  /** @type {import("../wire/protocol.js").VideoCodec[]} codecs that failed on this machine (never offered again) */
  failed: failedCodecs(),
  /** @type {AudioContext | null} */
  audioCtx: null,
  /** @type {Engine | null} the media worker (made at the first Start) */
  engine: null,
  /** The worker's session is open. */
  connected: false,
  lastPartnerFrameAt: 0,
  partnerReconnecting: false,
  /** @type {any} the worker's last snapshot, for the quality panel */
  media: null,
  /** The relay said it is restarting: reconnect with the resume token when it is back. */
  draining: false,
  /** Timings for the figures, in epoch milliseconds (see epochMs). */
  timeline: {
    /** @type {number | null} */
    startClickAt: null,
    /** @type {number | null} */
    nextClickAt: null,
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
  const m = state.media;
  const relay = m?.relayStats ?? null;
  const rttMs = relay ? relay.rtt_us / 1000 : (m?.transportRttMs ?? null);
  const losses = [relay?.lost_permille, m?.peerReport?.loss_permille, m?.ownReport?.loss_permille].filter((x) => typeof x === "number");
  const loss = losses.length ? Math.max(.../** @type {number[]} */ (losses)) : null;
  const level = classifyQuality({ rttMs: rttMs ?? null, lossPermille: loss });
  const words = { good: "good", fair: "fair", poor: "poor", unknown: "measuring…" }[level];
  ui.qualityButton.dataset.level = level;
  ui.qualityLabel.textContent = `Connection: ${words}`;
  const fmtLoss = (/** @type {number | undefined} */ p) => (typeof p === "number" ? `${(p / 10).toFixed(1)}%` : "—");
  const video = m?.send?.video;
  const sending = video && state.phase === "paired" && ui.camera.getAttribute("aria-pressed") === "true";
  const limits = { none: "", cpu: " (limited by CPU)", bandwidth: " (limited by the network)" };
  const rows = [
    ["Round trip", rttMs !== null ? `${Math.round(rttMs)} ms` : "—"],
    ["Loss to you", fmtLoss(m?.ownReport?.loss_permille)],
    ["Loss to partner", fmtLoss(m?.peerReport?.loss_permille)],
    ["Relay-measured loss", fmtLoss(relay?.lost_permille)],
    ["Receiving", m?.ownReport ? `${m.ownReport.bitrate_kbps} kbit/s` : "—"],
    ["Sending video", sending ? `${m.send.bitrateKbps} kbit/s target, ${video.width}×${video.height}${limits[/** @type {"none"} */ (video.limitation)] ?? ""}` : "—"],
    ["Send estimate", m?.sendEstimateKbps ? `${Math.round(m.sendEstimateKbps)} kbit/s` : "—"],
    ["Relay → you", relay ? `${relay.send_rate_kbps} kbit/s` : "—"],
    ["Jitter", m?.ownReport ? `${m.ownReport.jitter_ms} ms` : "—"],
    ["Video codec", [m?.send?.codec ? `out ${codecLabel(m.send.codec)}` : "", m?.receive?.codec ? `in ${codecLabel(m.receive.codec)}` : ""].filter(Boolean).join(", ") || "—"],
    ["Frames decoded", String(m?.receive?.video?.framesDecoded ?? 0)],
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

/** @param {string} text */
function mediaProblem(text) {
  ui.mediaNote.textContent = text;
  show(ui.mediaNote, true);
}

/** The media worker, made once, and again only if it broke (with a fresh partner element). */
function ensureEngine() {
  if (state.engine?.broken) {
    state.engine.worker.terminate();
    state.engine = null;
  }
  if (!state.engine) {
    state.engine = new Engine(ui.partnerVideo, onEngineMessage);
    ui.partnerVideo = state.engine.element;
  }
  return state.engine;
}

/** What Hello and Caps say: the probes, without the codecs that failed here. */
function caps() {
  return mediaCaps(state.probes, state.failed);
}

/** Camera and microphone on, the worker encoding. Never throws: missing media means text only. */
async function startMedia() {
  const engine = ensureEngine();
  if (!engine.initialized) engine.init((await startPlayout(state.audioCtx))?.port ?? null);
  if (state.capture) return;
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
  const settings = capture.video?.getSettings();
  if (!state.probes.length) state.probes = await probeCodecs(settings?.width ?? 640, settings?.height ?? 480);
  const encoders = encoderChoices(state.probes, state.failed);
  const streams = transferStreams(capture);
  if (capture.video && !streams.video) {
    mediaProblem("This browser cannot send video (no WebCodecs), so your partner won't see you. You can still text chat.");
  } else if (capture.video && !encoders.length) {
    mediaProblem("This browser cannot encode video, so your partner won't see you. You can still talk and text.");
  }
  /** @type {Transferable[]} */
  const transfer = [];
  if (streams.video) transfer.push(streams.video);
  if (streams.audio) transfer.push(streams.audio);
  engine.post({ type: "capture", video: streams.video, audio: streams.audio, encoders }, transfer);
}

function stopMedia() {
  state.engine?.post({ type: "stopCapture" });
  for (const t of state.capture?.stream?.getTracks() ?? []) t.stop();
  state.capture = null;
  ui.selfView.srcObject = null;
}

/** @param {HTMLButtonElement} button @param {boolean} on */
function setToggle(button, on) {
  button.setAttribute("aria-pressed", String(on));
  const label = button.querySelector(".state");
  if (label) label.textContent = on ? "on" : "off";
}

/**
 * A codec failed to encode or decode here: remember it, tell the relay (it takes effect
 * at the next pairing), and never offer it again.
 * @param {import("../wire/protocol.js").VideoCodec} family
 */
function onCodecFailed(family) {
  if (state.failed.includes(family)) return;
  state.failed.push(family);
  rememberFailed(family);
  state.engine?.post({ type: "send", msg: { type: "Caps", ...caps() } });
}

/** @param {import("../engine/messages.js").FromWorker} msg */
function onEngineMessage(msg) {
  switch (msg.type) {
    case "server":
      onMessage(msg.msg);
      break;
    case "chatLine":
      if (msg.matchId === state.matchId && state.phase === "paired") chatLine("partner", msg.text);
      break;
    case "connected":
      state.connected = true;
      break;
    case "connectFailed":
      // Before any Start there is nothing to fail (a broken worker is replaced at the next Start).
      if (state.phase !== "start") onConnectFailed(msg.message);
      break;
    case "closed":
      state.connected = false;
      onClosed(msg.info);
      break;
    case "partnerVideo":
      if (msg.matchId === state.matchId) {
        state.lastPartnerFrameAt = performance.now();
        if (!ui.overlay.hidden && !state.partnerReconnecting) overlay(null);
      }
      break;
    case "codecFailed":
      onCodecFailed(msg.family);
      break;
    case "problem":
      mediaProblem(msg.text);
      break;
    default:
      break;
  }
}

// ---------------------------------------------------------------- pairing

/** @param {Extract<ServerMsg, {type: "Matched"}>} msg */
function onMatched(msg) {
  const same = state.phase === "paired" && state.matchId === msg.match_id;
  state.matchId = msg.match_id;
  state.partnerName = msg.partner_name.trim() || "Someone";
  if (same) return; // repeated after a resume: nothing changes
  state.lastPartnerFrameAt = performance.now();
  state.partnerReconnecting = false;
  setPhase("paired");
  ui.partnerName.textContent = state.partnerName;
  show(ui.partnerName, true);
  ui.partnerVideo.setAttribute("aria-label", "Partner video");
  overlay(`Connecting to ${state.partnerName}…`);
  const shared = msg.shared_interests.slice(0, 8);
  setStatus(`Connected to ${state.partnerName}${shared.length ? ` — you both like ${shared.join(", ")}` : ""}`);
  ui.chatLog.replaceChildren();
  chatError("");
  chatLine("system", `You're talking to ${state.partnerName}.${shared.length ? ` You both like ${shared.join(", ")}.` : ""} Say hi!`);
  renderQuality();
}

/**
 * Leaves the current pairing on this side (the worker has already stopped its media when
 * it carried the message that ended it).
 * @param {string} note the waiting line
 */
function unpair(note) {
  state.matchId = null;
  state.engine?.post({ type: "unpair" });
  show(ui.partnerName, false);
  state.partnerReconnecting = false;
  state.waitingNote = note;
  state.waitingSince = performance.now();
}

/** @param {import("../wire/protocol.js").LeaveReason} reason */
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
      state.draining = false;
      if (state.resumeAttempts > 0) {
        state.resumeAttempts = 0;
        if (msg.resumed && state.matchId !== null) {
          setPhase("paired");
          setStatus(`Connected to ${state.partnerName}`);
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
      }
      break;
    case "Draining":
      // The relay is about to restart: say so; the close that follows is resumed with our token.
      state.draining = true;
      setStatus(`Duet is restarting — you'll be reconnected in a moment${state.phase === "paired" ? ` to ${state.partnerName}` : ""}…`);
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
    default:
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
 * Opens a session (or resumes one) with the current name and interests; the worker owns it.
 * @param {boolean} resume
 */
function connect(resume) {
  ensureEngine();
  if (state.engine?.broken) {
    onConnectFailed("The page's media engine could not start. Reload the page.");
    return;
  }
  const hello = {
    version: PROTOCOL_VERSION,
    name: state.hello.name,
    interests: state.hello.interests,
    resume: resume ? state.resumeToken : null,
    visitor: visitorId(),
    media: caps(),
  };
  state.connected = false;
  if (!resume) setPhase("connecting");
  ensureEngine().post({ type: "connect", hello, base: location.href });
}

/** @param {string} message why the session could not be opened */
function onConnectFailed(message) {
  if (state.resumeAttempts > 0 && state.resumeAttempts < MAX_RESUME_ATTEMPTS) {
    scheduleResume();
    return;
  }
  state.resumeAttempts = 0;
  if (state.matchId !== null) unpair("");
  showError("Can't reach Duet", message);
}

function scheduleResume() {
  state.resumeAttempts++;
  setPhase("connecting");
  if (state.draining) setStatus("Duet is restarting — reconnecting…");
  // ±20% jitter, so everyone who lost the same network does not retry in step.
  const base = Math.min(RESUME_BACKOFF_MS * 2 ** (state.resumeAttempts - 1), RESUME_BACKOFF_MAX_MS);
  const delay = base * (0.8 + 0.4 * Math.random());
  state.resumeTimer = setTimeout(() => {
    state.resumeTimer = null;
    if (state.phase === "connecting") connect(state.resumeToken !== null);
  }, delay);
}

/** @param {import("../engine/session.js").CloseInfo} info */
function onClosed(info) {
  if (info.byUs) return;
  const wasActive = state.phase === "waiting" || state.phase === "paired" || (state.phase === "connecting" && state.resumeAttempts > 0);
  if (info.code === ERROR_CODES.bad_resume_token) {
    // The relay forgot us: start a fresh session straight away.
    state.resumeToken = null;
  }
  if (info.code === ERROR_CODES.shutting_down) state.draining = true;
  if (state.phase === "start") {
    // Idle after Stop: the next Start opens a new session.
    return;
  }
  if (wasActive && (info.code === null || !NO_AUTO_RETRY.has(info.code)) && info.code !== ERROR_CODES.idle_timeout && state.resumeAttempts < MAX_RESUME_ATTEMPTS) {
    if (state.phase === "paired") {
      setStatus(state.draining ? "Duet is restarting — reconnecting…" : "Connection lost — reconnecting…");
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
  state.waitingNote = "";
  state.waitingSince = performance.now();
  const same = form.name === state.hello.name && form.interests.join("\n") === state.hello.interests.join("\n");
  if (state.connected && same) {
    // The session stayed open after Stop: Next puts us back in the queue.
    state.engine?.post({ type: "send", msg: { type: "Next", match_id: null } });
    setPhase("waiting");
    return;
  }
  if (state.connected) {
    state.engine?.post({ type: "close", reason: "new name" });
    state.connected = false;
  }
  state.hello = form;
  state.resumeAttempts = 0;
  connect(false);
}

/** @param {import("../wire/protocol.js").ClientMsg} msg */
function send(msg) {
  state.engine?.post({ type: "send", msg });
}

function onNext() {
  if (state.phase !== "paired" || !state.connected) return;
  state.timeline.nextClickAt = epochMs();
  send({ type: "Next", match_id: state.matchId });
  unpair("Finding someone new…");
  setPhase("waiting");
}

function onStop() {
  if (state.resumeTimer) clearTimeout(state.resumeTimer);
  state.resumeTimer = null;
  state.resumeAttempts = 0;
  if (state.connected) send({ type: "Leave" });
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
  const engine = state.engine;
  if (!engine || state.phase !== "paired") return;
  chatError("");
  ui.message.value = "";
  renderChatCount();
  chatLine("me", text);
  void engine.chat(text).then((error) => {
    if (error) chatError(`Message not sent: ${error}`);
  });
}

function onReportSubmit() {
  const reason = /** @type {HTMLInputElement | null} */ (ui.reportForm.querySelector("input[name=reason]:checked"))?.value;
  if (ui.reportDialog.returnValue !== "send" || !reason || state.phase !== "paired" || !state.connected) return;
  const r = REPORT_REASONS.find((x) => x === reason);
  if (!r) return;
  if (state.matchId === null) return;
  state.reportedMatch = state.matchId;
  send({ type: "Report", match_id: state.matchId, reason: r });
  // Like Next: the relay ends the pairing and re-queues us; we stop showing them at once.
  const line = `Thanks — ${state.partnerName} was reported and won't be matched with you again. Finding someone new…`;
  chatLine("system", line);
  unpair(line);
  setPhase("waiting");
}

/** Once a second: status timer, quality, stale video. (Receiver reports and bitrate are the worker's.) */
async function everySecond() {
  if (state.phase === "waiting") ui.statusTimer.textContent = elapsedText();
  if (!state.engine || (state.phase !== "paired" && state.phase !== "waiting")) return;
  state.media = await state.engine.snapshot();
  if (state.phase === "paired" && performance.now() - state.lastPartnerFrameAt > VIDEO_STALE_MS && !state.partnerReconnecting) {
    // Camera off, no camera, or video this browser cannot decode: say so instead of a frozen or empty picture.
    const text = `No video from ${state.partnerName}`;
    if (ui.overlay.hidden || ui.overlayText.textContent !== text) overlay(text);
  }
  renderQuality();
}

// ---------------------------------------------------------------- test hooks

/** Counters and timings, as plain JSON (for the browser tests, the benchmark and debugging). */
async function snapshot() {
  const m = state.engine ? await state.engine.snapshot() : null;
  return {
    phase: state.phase,
    status: ui.status.textContent,
    partnerName: state.phase === "paired" ? state.partnerName : null,
    matchId: state.matchId?.toString() ?? null,
    engineMatchId: m?.matchId ?? null,
    media: { video: !!state.capture?.video, audio: !!state.capture?.audio, problem: state.capture?.problem ?? null },
    caps: caps(),
    failedCodecs: [...state.failed],
    send: m?.send ?? { codec: null, video: null, audio: null },
    receive: m?.receive ?? { codec: null, video: null, audio: null, latencyMs: { count: 0 } },
    quality: ui.qualityButton.dataset.level ?? "unknown",
    relayStats: m?.relayStats ?? null,
    peerReport: m?.peerReport ?? null,
    timeline: { ...state.timeline, matches: m?.matches ?? [] },
  };
}

/** Resets the latency samples, so a test can measure one stretch of a call. */
function clearLatencies() {
  state.engine?.post({ type: "clearLatencies" });
}

/** Turns on the worker's check of every painted frame against the stamped test camera (wire/stamp.js). @param {boolean} on */
function inspectFrames(on) {
  state.engine?.post({ type: "inspect", on });
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
      connect(false);
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
    if (state.capture?.video) state.capture.video.enabled = on;
    state.engine?.post({ type: "camera", on });
    setToggle(ui.camera, on);
  });
  ui.mic.addEventListener("click", () => {
    const on = ui.mic.getAttribute("aria-pressed") !== "true";
    if (state.capture?.audio) state.capture.audio.enabled = on;
    state.engine?.post({ type: "mic", on });
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
    if (!state.connected) return;
    send({ type: "Leave" });
    state.engine?.post({ type: "close", reason: "page closed" });
  });
  // The worker's modules load now, while the relay that serves them is surely reachable.
  ensureEngine();
  setInterval(() => void everySecond(), REPORT_INTERVAL_MS);
  window.duet = { snapshot, clearLatencies, inspectFrames };
  setPhase("start");
  renderQuality();
}

init();
