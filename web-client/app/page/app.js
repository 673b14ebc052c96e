// @ts-check
/**
 * @file The Duet page: what a person sees and does, as one state machine, and the wiring
 * of its parts: the media (camera, microphone, the worker), the session and its resume,
 * the buttons, and the test hooks. What is shown lives in view.js and chat.js, the shared
 * state in state.js, and the relay's messages that move the pairing in pairing.js.
 *
 * Phases: `start` (name, interests, Start) → `connecting` → `waiting` ("Looking for
 * someone…") → `paired` (partner video, chat, Next / Stop / Report) → back to `waiting` on
 * Next or when the partner leaves, or to `start` on Stop. `error` is the "can't reach the
 * relay" screen with Retry; a session lost in the middle of a call is resumed with its
 * token first, so a short network blip keeps the same partner.
 *
 * The relay's control messages drive the phases; the page never guesses a pairing. The
 * media, and the session with the relay itself, live in a worker (engine/worker.js, reached
 * through engine.js): this thread never touches a frame, so a busy page does not stall the
 * call. The session runs over WebTransport, or over a WebSocket where that cannot connect
 * (engine/transport.js); the call screen says when it is the WebSocket.
 * `window.duet.snapshot()` (a promise) exposes counters and timings for the browser tests
 * and for anyone debugging a call.
 */

import { ERROR_CODES, MAX_INTERESTS, PROTOCOL_VERSION, REPORT_REASONS, helloProblem } from "../wire/protocol.js";
import { REPORT_INTERVAL_MS } from "../wire/quality.js";
import { mediaCaps } from "../wire/codecs.js";
import { epochMs } from "../wire/clock.js";
import { audioSource, audioTransfer, captureMedia, sendCamera } from "./capture.js";
import { encoderChoices, probeCodecs, rememberFailed } from "./codecs.js";
import { outputLevel, startPlayout } from "./audio-out.js";
import { Engine } from "./engine.js";
import { state, ui } from "./state.js";
import { elapsedText, keepFocus, mediaProblem, overlay, renderQuality, renderTransport, setPhase, setStatus, setToggle, show, showError, startNote } from "./view.js";
import { fillPickers, setCamera, setMic, wireDevices } from "./devices.js";
import { applyPartnerSound, wireControls } from "./controls.js";
import { chatLine, onChatInput, onSendChat } from "./chat.js";
import { findSomeoneNew, onKeysAgreed, onMessage, partnerStoppedTyping, stayAfterLeft, unpair } from "./pairing.js";

/** @typedef {import("../wire/protocol.js").ServerMsg} ServerMsg */

/** Resume attempts after losing the connection mid-call, the first backoff and its cap.
 * 10 attempts at 0.5, 1, 2, 4, 4, … s cover the relay's 30 s grace period. */
const MAX_RESUME_ATTEMPTS = 10;
const RESUME_BACKOFF_MS = 500;
const RESUME_BACKOFF_MAX_MS = 4000;
/** No partner frame for this long while paired: say so on the video. */
const VIDEO_STALE_MS = 3000;
/** How often the first screen asks the relay how many people are online. */
const ONLINE_EVERY_MS = 15_000;
/** Error codes after which retrying at once is pointless. */
/** @type {Set<number>} */
const NO_AUTO_RETRY = new Set([ERROR_CODES.unsupported_version, ERROR_CODES.server_full, ERROR_CODES.too_many_from_address]);

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

/** What Hello and Caps say: the probes, without the codecs that failed here; nothing at all
 * in text-only mode (so no video is chosen either way). */
function caps() {
  return state.textOnly ? mediaCaps([], []) : mediaCaps(state.probes, state.failed);
}

/**
 * Camera and microphone on, the worker encoding. Never throws: missing media means text only.
 * @returns {Promise<boolean>} false if a Stop (or a newer Start) came while the camera was asked for
 */
async function startMedia() {
  const seq = state.startSeq;
  const engine = ensureEngine();
  if (!engine.initialized) {
    const out = state.textOnly ? null : await startPlayout(state.audioCtx);
    state.playout = out;
    applyPartnerSound();
    engine.init(out?.port ?? null, out?.ctx ?? null);
  }
  if (state.textOnly) {
    stopMedia();
    state.capture = { stream: null, video: null, audio: null, problem: null };
    ui.camera.disabled = true;
    ui.mic.disabled = true;
    setToggle(ui.camera, false);
    setToggle(ui.mic, false);
    show(ui.selfView, false);
    show(ui.devices, false);
    ui.mediaNote.textContent = "Text only: no camera or microphone. Your partner is told you have no video.";
    show(ui.mediaNote, true);
    return seq === state.startSeq;
  }
  show(ui.devices, true);
  if (state.capture) return seq === state.startSeq;
  const capture = await captureMedia({ videoDeviceId: state.cameraDeviceId, audioDeviceId: state.micDeviceId });
  if (seq !== state.startSeq) {
    // Stopped while the browser asked for the camera: let it go at once.
    for (const t of [capture.video, capture.audio]) t?.stop();
    return false;
  }
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
  const audio = await audioSource(capture.audio, state.audioCtx);
  const workerProcessor = await engine.workerTrackProcessor;
  const videoPath = sendCamera(capture.video, workerProcessor, (video, transfer) =>
    engine.post({ type: "capture", video, audio, encoders }, [...transfer, ...audioTransfer(audio)]),
  );
  if (capture.video && !videoPath) {
    mediaProblem("This browser cannot send your camera's video, so your partner won't see you. You can still talk and text.");
  } else if (capture.video && !encoders.length) {
    mediaProblem("This browser cannot encode video, so your partner won't see you. You can still talk and text.");
  }
  if (capture.audio && !audio) {
    // Nothing would be sent: say so, and do not show a microphone that looks on.
    mediaProblem("This browser cannot send your microphone's sound, so your partner won't hear you.");
    setToggle(ui.mic, false);
    ui.mic.disabled = true;
  }
  void fillPickers();
  return seq === state.startSeq;
}

function stopMedia() {
  state.engine?.post({ type: "stopCapture" });
  void audioSource(null, null); // lets a capture worklet go
  for (const t of state.capture?.stream?.getTracks() ?? []) t.stop();
  for (const t of [state.capture?.video, state.capture?.audio]) t?.stop();
  state.capture = null;
  ui.selfView.srcObject = null;
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
      if (msg.matchId === state.matchId && state.phase === "paired") {
        partnerStoppedTyping();
        chatLine("partner", msg.text);
      }
      break;
    case "connected":
      state.connected = true;
      state.transport = msg.transport;
      renderTransport();
      // When a partner leaves, stay with the last chat for a moment (pairing.js) instead of
      // being re-queued by the relay at once.
      send({ type: "RequeueWhenLeft", on: false });
      break;
    case "connectFailed":
      // Before any Start there is nothing to fail (a broken worker is replaced at the next Start).
      if (state.phase !== "start") onConnectFailed(msg.message);
      break;
    case "closed":
      state.connected = false;
      state.transport = null;
      renderTransport();
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
    case "e2ee":
      onKeysAgreed(msg.matchId, msg.safetyCode);
      break;
    case "e2eeProblem":
      // About this pairing only: the chat (cleared at the next partner) says it.
      if (msg.matchId === state.matchId && state.phase === "paired") chatLine("system", msg.text);
      break;
    case "problem":
      mediaProblem(msg.text);
      break;
    default:
      break;
  }
}


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
  ensureEngine().post({ type: "connect", hello, base: location.href, webTransport: webTransportWanted() });
}

/**
 * Whether the worker may try WebTransport: the page's browser has it, and the person did
 * not open the page with `?transport=websocket` (for a network where UDP works badly).
 */
function webTransportWanted() {
  return typeof WebTransport === "function" && new URL(location.href).searchParams.get("transport") !== "websocket";
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

/** @param {boolean} textOnly the "Text only" button: no camera or microphone, no video either way */
async function onStart(textOnly) {
  const form = readForm();
  if (typeof form === "string") {
    startNote(form);
    return;
  }
  if (!ui.adult.checked) {
    startNote("Please confirm that you are 18 or older and agree to the rules.");
    ui.adult.focus();
    return;
  }
  startNote("");
  const seq = ++state.startSeq;
  // Switching between video and text only needs a new session (the relay pairs by what Hello said).
  const modeChanged = textOnly !== state.textOnly;
  if (modeChanged) stopMedia();
  state.textOnly = textOnly;
  try {
    localStorage.setItem("duet.name", form.name);
    localStorage.setItem("duet.interests", form.interests.join(", "));
    localStorage.setItem("duet.adult", "1");
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
  if (!(await startMedia()) || seq !== state.startSeq) return;
  state.waitingNote = "";
  state.waitingSince = performance.now();
  const same = !modeChanged && form.name === state.hello.name && form.interests.join("\n") === state.hello.interests.join("\n");
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
  if (state.phase === "left") {
    findSomeoneNew();
    return;
  }
  if (state.phase !== "paired" || !state.connected) return;
  state.timeline.nextClickAt = epochMs();
  send({ type: "Next", match_id: state.matchId });
  unpair("Finding someone new…");
  setPhase("waiting");
}

function onStop() {
  state.startSeq++; // a Start still waiting for the camera gives up
  if (state.resumeTimer) clearTimeout(state.resumeTimer);
  state.resumeTimer = null;
  state.resumeAttempts = 0;
  if (state.connected) {
    send({ type: "Leave" });
  } else if (state.phase === "connecting") {
    // Not up yet: cancel the connection, so the relay never queues us.
    state.engine?.post({ type: "close", reason: "stopped" });
    state.hello = { name: "", interests: [] };
  }
  if (state.matchId !== null) unpair("");
  state.autoFindAt = null;
  stopMedia();
  setPhase("start");
  startNote("You left the chat. Press Start to meet someone new.");
  ui.start.focus();
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
  if (state.phase === "paired" && !state.textOnly && performance.now() - state.lastPartnerFrameAt > VIDEO_STALE_MS && !state.partnerReconnecting) {
    // Camera off, no camera, or video this browser cannot decode: say so instead of a frozen or empty picture.
    const text = `No video from ${state.partnerName}`;
    if (ui.overlay.hidden || !ui.overlayText.textContent?.startsWith(text)) overlay(text);
  }
  renderQuality();
}

/** The first screen says how many people are on Duet now (the relay's `/status`), so a
 * newcomer sees it is alive. Says nothing if the relay does not answer. */
async function showOnline() {
  if (state.phase !== "start") return;
  try {
    const r = await fetch(new URL("status", location.href), { cache: "no-store", signal: AbortSignal.timeout(3000) });
    const n = Number((await r.json()).sessions);
    if (!Number.isFinite(n)) throw new Error("no count");
    ui.online.textContent = n === 0 ? "Nobody is online right now: press Start and wait a moment." : n === 1 ? "1 person is online now." : `${n.toLocaleString("en")} people are online now.`;
    show(ui.online, true);
  } catch {
    show(ui.online, false);
  }
}

// ---------------------------------------------------------------- test hooks

/** Counters and timings, as plain JSON (for the browser tests, the benchmark and debugging). */
async function snapshot() {
  const m = state.engine ? await state.engine.snapshot() : null;
  return {
    phase: state.phase,
    status: ui.status.textContent,
    /** "webtransport", "websocket", or null while no session is open. */
    transport: state.transport,
    partnerName: state.phase === "paired" ? state.partnerName : null,
    matchId: state.matchId?.toString() ?? null,
    engineMatchId: m?.matchId ?? null,
    media: {
      video: !!state.capture?.video,
      audio: !!state.capture?.audio,
      problem: state.capture?.problem ?? null,
      textOnly: state.textOnly,
      cameraLive: state.capture?.video?.readyState === "live",
    },
    partnerSound: { volume: state.partnerVolume, muted: state.partnerMuted },
    caps: caps(),
    /** How the worker reads the camera and microphone (engine/messages.js VideoSource, AudioSource kinds). */
    capture: m?.capture ?? { video: null, audio: null },
    failedCodecs: [...state.failed],
    send: m?.send ?? { codec: null, video: null, audio: null },
    receive: m?.receive ?? { codec: null, video: null, audio: null, latencyMs: { count: 0 } },
    quality: ui.qualityButton.dataset.level ?? "unknown",
    relayStats: m?.relayStats ?? null,
    peerReport: m?.peerReport ?? null,
    timeline: { ...state.timeline, matches: m?.matches ?? [] },
    /** End-to-end encryption: the worker's state and counters, and the code this page shows. */
    e2ee: {
      ...(m?.e2ee ?? { state: "off", safetyCode: null, unopened: { audio: 0, video: 0, chat: 0 }, plainLinesDropped: 0, changedKeys: 0, dropped: 0, sealed: 0, opened: 0, sealUs: null, openUs: null }),
      shown: ui.safety.hidden ? null : ui.safetyLabel.textContent,
    },
  };
}

/**
 * The loudest the partner's sound was over `ms`, as the person hears it (after their
 * volume and mute): an RMS level, 0 for silence. Null without audio playout.
 * @param {number} ms
 */
async function audioLevel(ms) {
  return state.playout ? outputLevel(state.playout, ms) : null;
}

/** Resets the latency samples, so a test can measure one stretch of a call. */
function clearLatencies() {
  state.engine?.post({ type: "clearLatencies" });
}

/** Turns on the worker's check of every painted frame against the stamped test camera (wire/stamp.js). @param {boolean} on */
function inspectFrames(on) {
  state.engine?.post({ type: "inspect", on });
}

/**
 * What this browser lacks for Duet, for a person (null: it has everything), and what it
 * therefore cannot start. Without WebTransport the session runs over the WebSocket
 * fallback (slower to recover from loss, but it works); without WebCodecs there is no video
 * or sound, so only Text only; without WebSocket (no browser that runs this page) nothing.
 * @returns {{cannot: {start: boolean, textOnly: boolean}, text: string} | null}
 */
function browserProblem() {
  const browsers = "Duet works best in recent Chrome, Edge and Firefox, and in Safari 26.4 or later.";
  if (typeof WebTransport !== "function" && typeof WebSocket !== "function") {
    return { cannot: { start: true, textOnly: true }, text: `This browser cannot connect to Duet (it has neither WebTransport nor WebSocket). ${browsers}` };
  }
  const noCodecs = typeof VideoEncoder !== "function" || typeof AudioDecoder !== "function";
  const overWebSocket = !webTransportWanted();
  const fallback = "Duet will connect over WebSocket (TCP), so calls may lag more than usual";
  if (noCodecs && overWebSocket) {
    return {
      cannot: { start: true, textOnly: false },
      text: `This browser has no WebCodecs, so you can only chat by text here, and no WebTransport: ${fallback}. ${browsers}`,
    };
  }
  if (noCodecs) return { cannot: { start: true, textOnly: false }, text: `This browser has no WebCodecs, so you can only chat by text here. ${browsers}` };
  if (overWebSocket && typeof WebTransport === "function") {
    return { cannot: { start: false, textOnly: false }, text: `This page was opened with ?transport=websocket: ${fallback}.` };
  }
  if (overWebSocket) return { cannot: { start: false, textOnly: false }, text: `This browser has no WebTransport: ${fallback}. ${browsers}` };
  return null;
}

// ---------------------------------------------------------------- wiring

function init() {
  try {
    ui.name.value = localStorage.getItem("duet.name") ?? "";
    ui.interests.value = localStorage.getItem("duet.interests") ?? "";
    ui.adult.checked = localStorage.getItem("duet.adult") === "1";
  } catch {
    // No storage: empty form.
  }
  ui.startForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    void onStart(false);
  });
  ui.textOnly.addEventListener("click", () => void onStart(true));
  ui.retry.addEventListener("click", () => {
    state.resumeAttempts = 0;
    state.waitingNote = "";
    state.waitingSince = performance.now();
    const seq = ++state.startSeq;
    void (async () => {
      if ((await startMedia()) && seq === state.startSeq) connect(false);
    })();
  });
  ui.back.addEventListener("click", () => {
    stopMedia();
    setPhase("start");
  });
  ui.next.addEventListener("click", onNext);
  ui.findNew.addEventListener("click", findSomeoneNew);
  ui.stay.addEventListener("click", stayAfterLeft);
  ui.stop.addEventListener("click", onStop);
  wireDevices();
  wireControls({
    onNext,
    toggleCamera: () => void setCamera(ui.camera.getAttribute("aria-pressed") !== "true"),
    toggleMic: () => setMic(ui.mic.getAttribute("aria-pressed") !== "true"),
  });
  ui.report.addEventListener("click", () => {
    if (state.phase !== "paired") return;
    ui.reportWho.textContent = state.partnerName;
    ui.reportForm.reset();
    ui.reportDialog.returnValue = "";
    ui.reportDialog.showModal();
  });
  ui.reportDialog.addEventListener("close", () => {
    onReportSubmit();
    keepFocus();
  });
  ui.chatForm.addEventListener("submit", onSendChat);
  ui.message.addEventListener("input", onChatInput);
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
  window.duet = { snapshot, clearLatencies, inspectFrames, audioLevel };
  const problem = browserProblem();
  if (problem) state.cannot = problem.cannot;
  setPhase("start");
  if (problem) startNote(problem.text);
  renderQuality();
  void showOnline();
  setInterval(() => void showOnline(), ONLINE_EVERY_MS);
}

init();
