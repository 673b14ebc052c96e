// @ts-check
/**
 * @file What the page shows for its state: the screen of each phase, the status line and
 * its timer, the overlay on the partner's video, the first screen's note, the error screen,
 * the connection-quality panel, media notes, the line saying the call runs over the
 * WebSocket fallback, the on/off toggles, where focus goes when the control that had it
 * goes away, and the pairing's safety code beside the partner's name.
 */

import { classifyQuality } from "../wire/quality.js";
import { codecLabel } from "../wire/codecs.js";
import { state, ui } from "./state.js";
import { spin } from "./spinner.js";

/** @typedef {import("./state.js").Phase} Phase */

/** @param {HTMLElement} el @param {boolean} show */
export function show(el, show) {
  el.hidden = !show;
}

/** @param {Phase} phase */
export function setPhase(phase) {
  state.phase = phase;
  document.body.dataset.phase = phase;
  show(ui.screenStart, phase === "start");
  show(ui.screenError, phase === "error");
  show(ui.screenCall, phase === "connecting" || phase === "waiting" || phase === "paired" || phase === "left");
  show(ui.quality, phase === "waiting" || phase === "paired" || phase === "left");
  show(ui.afterLeft, phase === "left");
  if (phase !== "paired") show(ui.typing, false);
  const inCall = phase === "paired";
  // After the partner left, Next is "find someone new" too.
  ui.next.disabled = !(inCall || phase === "left");
  ui.stop.disabled = !(phase === "connecting" || phase === "waiting" || phase === "paired" || phase === "left");
  ui.report.disabled = !inCall;
  // The message box stays usable while waiting (a "hi" can be ready for the next person,
  // and focus is not thrown out of it by Next); only sending waits for a partner.
  ui.message.disabled = !(phase === "waiting" || phase === "left" || inCall);
  ui.send.disabled = !inCall;
  ui.start.disabled = state.cannot.start;
  ui.textOnly.disabled = state.cannot.textOnly;
  show(ui.stageTools, !state.textOnly && state.playout !== null);
  renderStatus();
  keepFocus();
}

/** A touch screen: focusing a text box there opens the keyboard over the video. */
function touchFirst() {
  return typeof matchMedia === "function" && matchMedia("(pointer: coarse)").matches;
}

/** The control a keyboard user most likely wants in this phase. */
function primaryControl() {
  switch (state.phase) {
    case "start":
      return ui.start;
    case "error":
      return ui.retry;
    case "connecting":
      return ui.stop;
    case "waiting":
      return touchFirst() ? ui.stop : ui.message;
    case "paired":
      return touchFirst() ? ui.next : ui.message;
    case "left":
      return ui.findNew;
    default:
      return null;
  }
}

/** @param {Element | null} el */
function usable(el) {
  if (!el || el === document.body || el === document.documentElement) return false;
  if ("disabled" in el && el.disabled) return false;
  if (el.closest("[hidden]")) return false;
  return true;
}

/**
 * Focus never falls to the page: when the focused control was disabled or hidden (Next
 * after it is pressed, Report after its dialog), it moves to the phase's main control.
 */
export function keepFocus() {
  if (ui.reportDialog.open) return;
  if (!usable(document.activeElement)) primaryControl()?.focus();
}

/** A new partner: the message box takes focus, unless the person is busy in another control. */
export function focusForCall() {
  if (ui.reportDialog.open) return;
  const a = document.activeElement;
  if (!usable(a) || a === ui.next || a === ui.stop || a === ui.message) primaryControl()?.focus();
}

/** How many others are waiting, from the relay's last Queued (nothing when unknown or none). */
function waitingText() {
  const others = (state.waitingCount ?? 0) - 1;
  return others >= 1 ? ` ${others === 1 ? "1 other person is" : `${others} other people are`} waiting.` : "";
}

export function elapsedText() {
  const s = Math.max(0, Math.floor((performance.now() - state.waitingSince) / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

/** @param {string} text */
export function setStatus(text) {
  if (ui.status.textContent !== text) ui.status.textContent = text;
}

export function renderStatus() {
  ui.statusTimer.textContent = "";
  switch (state.phase) {
    case "connecting":
      setStatus(state.resumeAttempts > 0 ? "Connection lost — reconnecting…" : "Connecting to Duet…");
      overlay(state.resumeAttempts > 0 ? "Reconnecting…" : "Connecting…");
      break;
    case "waiting":
      setStatus(`${state.waitingNote || "Looking for someone…"}${waitingText()}`);
      ui.statusTimer.textContent = elapsedText();
      overlay("Looking for someone…");
      break;
    case "paired":
    case "left":
      // Set by the message handlers (Connected to …, … is reconnecting…, … left).
      break;
    default:
      setStatus("");
  }
}

/**
 * @param {string | null} text shown over the partner video; null hides the overlay. A text
 *   ending in "…" is something under way (connecting, looking, reconnecting) and shows the
 *   turning spinner; a statement ("Ana left", "No video from Ana", "Text only — …") shows
 *   without it, as nothing is being waited for.
 */
export function overlay(text) {
  const busy = text !== null && text.endsWith("…");
  show(ui.overlay, text !== null);
  show(ui.spinner, busy);
  spin(ui.spinner, busy);
  if (text !== null) ui.overlayText.textContent = text;
}

/** What the call screen says while the session runs over the WebSocket fallback. */
export const WEBSOCKET_NOTE =
  "Connected over WebSocket (TCP): this network blocks UDP or this browser has no WebTransport, so the call may lag more than usual.";

/** The transport line: shown while the session runs over the WebSocket, hidden otherwise. */
export function renderTransport() {
  const on = state.transport === "websocket";
  ui.transportNote.textContent = on ? WEBSOCKET_NOTE : "";
  show(ui.transportNote, on);
}

/** @param {string} text shown on the first screen */
export function startNote(text) {
  ui.startNote.textContent = text;
}

/** @param {string} title @param {string} message */
export function showError(title, message) {
  ui.errorTitle.textContent = title;
  ui.errorMessage.textContent = message;
  setPhase("error");
  ui.retry.focus();
}

export function renderQuality() {
  const m = state.media;
  const relay = m?.relayStats ?? null;
  const rttMs = relay ? relay.rtt_us / 1000 : (m?.transportRttMs ?? null);
  const losses = [relay?.lost_permille, m?.peerReport?.loss_permille, m?.ownReport?.loss_permille].filter((x) => typeof x === "number");
  const loss = losses.length ? Math.max(.../** @type {number[]} */ (losses)) : null;
  const level = classifyQuality({ rttMs: rttMs ?? null, lossPermille: loss });
  const words = { good: "good", fair: "fair", poor: "poor", unknown: "measuring…" }[level];
  ui.qualityButton.dataset.level = level;
  // Video paused for the network (wire/quality.js): say so where the person looks for why.
  const paused = state.phase === "paired" && m?.send?.videoPaused === true;
  ui.qualityLabel.textContent = paused ? `Connection: ${words}, your video paused` : `Connection: ${words}`;
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
    ["Sending video", paused ? "paused: the network carries too little for video; your voice goes on" : sending ? `${m.send.bitrateKbps} kbit/s target, ${video.width}×${video.height}${limits[/** @type {"none"} */ (video.limitation)] ?? ""}` : "—"],
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

/** @param {string} text */
export function mediaProblem(text) {
  ui.mediaNote.textContent = text;
  show(ui.mediaNote, true);
}

/** @param {HTMLButtonElement} button @param {boolean} on */
export function setToggle(button, on) {
  button.setAttribute("aria-pressed", String(on));
}

/**
 * Shows the pairing's safety code beside the partner's name: the emoji to see, and for a
 * screen reader (and in the expanded details) the words to read aloud. Null hides it.
 * @param {{emoji: string, words: string} | null} code
 */
export function showSafetyCode(code) {
  ui.safety.open = false;
  ui.safetyEmoji.textContent = code?.emoji ?? "";
  ui.safetyLabel.textContent = code ? `Safety code: ${code.words}` : "";
  ui.safetyWords.textContent = code ? `Safety code: ${code.words}` : "";
  show(ui.safety, code !== null);
}
