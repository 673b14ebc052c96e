// @ts-check
/**
 * @file The page's two shared objects: `ui`, the elements it works with (looked up once),
 * and `state`, what the page knows about the person's session, pairing and media. The
 * page's modules (view, chat, pairing, app) read and change these; nothing else does.
 */

import { failedCodecs } from "./codecs.js";

/** @typedef {"start" | "connecting" | "waiting" | "paired" | "left" | "error"} Phase */

/** @param {string} id @returns {any} */
function $(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing #${id}`);
  return el;
}

export const ui = {
  screenStart: /** @type {HTMLElement} */ ($("screen-start")),
  screenCall: /** @type {HTMLElement} */ ($("screen-call")),
  screenError: /** @type {HTMLElement} */ ($("screen-error")),
  startForm: /** @type {HTMLFormElement} */ ($("start-form")),
  name: /** @type {HTMLInputElement} */ ($("name")),
  interests: /** @type {HTMLInputElement} */ ($("interests")),
  startNote: /** @type {HTMLElement} */ ($("start-note")),
  start: /** @type {HTMLButtonElement} */ ($("start")),
  textOnly: /** @type {HTMLButtonElement} */ ($("text-only")),
  adult: /** @type {HTMLInputElement} */ ($("adult")),
  online: /** @type {HTMLElement} */ ($("online")),
  errorTitle: /** @type {HTMLElement} */ ($("error-title")),
  errorMessage: /** @type {HTMLElement} */ ($("error-message")),
  retry: /** @type {HTMLButtonElement} */ ($("retry")),
  back: /** @type {HTMLButtonElement} */ ($("back")),
  /** The partner's video: a `<video>` or a canvas, replaced by each new engine (page/engine.js). */
  partnerVideo: /** @type {HTMLVideoElement | HTMLCanvasElement} */ ($("partner-video")),
  partnerName: /** @type {HTMLElement} */ ($("partner-name")),
  safety: /** @type {HTMLDetailsElement} */ ($("safety")),
  safetyEmoji: /** @type {HTMLElement} */ ($("safety-emoji")),
  safetyLabel: /** @type {HTMLElement} */ ($("safety-label")),
  safetyWords: /** @type {HTMLElement} */ ($("safety-words")),
  overlay: /** @type {HTMLElement} */ ($("stage-overlay")),
  spinner: /** @type {HTMLElement} */ ($("stage-spinner")),
  overlayText: /** @type {HTMLElement} */ ($("stage-overlay-text")),
  selfView: /** @type {HTMLVideoElement} */ ($("self-view")),
  stage: /** @type {HTMLElement} */ ($("stage")),
  stageTools: /** @type {HTMLElement} */ ($("stage-tools")),
  partnerMute: /** @type {HTMLButtonElement} */ ($("partner-mute")),
  partnerVolume: /** @type {HTMLInputElement} */ ($("partner-volume")),
  fullscreen: /** @type {HTMLButtonElement} */ ($("fullscreen")),
  devices: /** @type {HTMLDetailsElement} */ ($("devices")),
  cameraDevice: /** @type {HTMLSelectElement} */ ($("camera-device")),
  micDevice: /** @type {HTMLSelectElement} */ ($("mic-device")),
  switchCamera: /** @type {HTMLButtonElement} */ ($("switch-camera")),
  micOnly: /** @type {HTMLButtonElement} */ ($("mic-only")),
  shortcuts: /** @type {HTMLElement} */ ($("shortcuts")),
  status: /** @type {HTMLElement} */ ($("status")),
  statusTimer: /** @type {HTMLElement} */ ($("status-timer")),
  mediaNote: /** @type {HTMLElement} */ ($("media-note")),
  transportNote: /** @type {HTMLElement} */ ($("transport-note")),
  next: /** @type {HTMLButtonElement} */ ($("next")),
  stop: /** @type {HTMLButtonElement} */ ($("stop")),
  camera: /** @type {HTMLButtonElement} */ ($("camera")),
  mic: /** @type {HTMLButtonElement} */ ($("mic")),
  report: /** @type {HTMLButtonElement} */ ($("report")),
  chatLog: /** @type {HTMLElement} */ ($("chat-log")),
  typing: /** @type {HTMLElement} */ ($("typing")),
  afterLeft: /** @type {HTMLElement} */ ($("after-left")),
  afterLeftText: /** @type {HTMLElement} */ ($("after-left-text")),
  findNew: /** @type {HTMLButtonElement} */ ($("find-new")),
  stay: /** @type {HTMLButtonElement} */ ($("stay")),
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

export const state = {
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
  /** What this browser cannot do at all (no WebSocket: neither; no WebCodecs: no video call). */
  cannot: { start: false, textOnly: false },
  /** Started with "Text only": no camera or microphone asked, no video either way. */
  textOnly: false,
  /** Counts Starts and Stops: a Start that is overtaken by a Stop (or a newer Start) while
   * it waits for the camera gives up instead of connecting. */
  startSeq: 0,
  /** The devices the person picked ("" = the browser's default), kept for the session. */
  cameraDeviceId: "",
  micDeviceId: "",
  /** The partner's sound as the person set it. */
  partnerVolume: 1,
  partnerMuted: false,
  /** @type {import("./audio-out.js").Playout | null} */
  playout: null,
  /** How many people the relay last said were waiting (Queued), or null. @type {number | null} */
  waitingCount: null,
  /** The partner left: the moment (performance.now()) the page finds someone new by itself,
   * or null once the person chose to stay. @type {number | null} */
  autoFindAt: null,
  /** When this page last told the partner it is typing (performance.now()). */
  typingSentAt: -Infinity,
  /** @type {ReturnType<typeof setTimeout> | null} hides "… is typing" */
  typingTimer: null,
  /** @type {import("../wire/codecs.js").CodecProbe[]} what WebCodecs said it handles here */
  probes: [],
  /** @type {import("../wire/protocol.js").VideoCodec[]} codecs that failed on this machine (never offered again) */
  failed: failedCodecs(),
  /** @type {AudioContext | null} */
  audioCtx: null,
  /** @type {import("./engine.js").Engine | null} the media worker (made at the first Start) */
  engine: null,
  /** The worker's session is open. */
  connected: false,
  /** What the open session runs over (null: none open). @type {import("../engine/transport.js").TransportName | null} */
  transport: null,
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
