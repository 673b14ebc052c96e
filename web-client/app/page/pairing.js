// @ts-check
/**
 * @file The relay's control messages and the pairing they drive: Welcome (a resume kept or
 * lost the partner), Queued, Matched, the partner leaving, reconnecting or coming back,
 * typing, the relay draining, and errors shown where the person will see them. The page
 * never guesses a pairing: these messages are the only thing that changes it.
 *
 * When the partner leaves, the relay does not re-queue this page (it asked, with
 * `RequeueWhenLeft(false)`): the last chat stays on screen, and the page finds someone new
 * after `AUTO_FIND_MS`, or at once on "Find someone new" (or Next, or Esc), or never if the
 * person chose "Stay here".
 */

import { ERROR_CODES } from "../wire/protocol.js";
import { describeErrorCode } from "../engine/session.js";
import { state, ui } from "./state.js";
import { focusForCall, overlay, renderQuality, renderStatus, setPhase, setStatus, show, showSafetyCode } from "./view.js";
import { chatError, chatLine } from "./chat.js";

/** @typedef {import("../wire/protocol.js").ServerMsg} ServerMsg */

/** After the partner left: this long to read the last lines before someone new is found. */
export const AUTO_FIND_MS = 5000;
/** "… is typing" goes away this long after the partner's last sign of typing. */
const TYPING_SHOWN_MS = 5000;
/** The timer of the countdown after the partner left. @type {ReturnType<typeof setInterval> | null} */
let countdown = null;

/** @param {Extract<ServerMsg, {type: "Matched"}>} msg */
export function onMatched(msg) {
  const same = state.phase === "paired" && state.matchId === msg.match_id;
  state.matchId = msg.match_id;
  state.partnerName = msg.partner_name.trim() || "Someone";
  if (same) return; // repeated after a resume: nothing changes
  state.lastPartnerFrameAt = performance.now();
  state.partnerReconnecting = false;
  setPhase("paired");
  ui.partnerName.textContent = state.partnerName;
  show(ui.partnerName, true);
  // The new pairing's code comes with its keys (onKeysAgreed).
  showSafetyCode(null);
  ui.partnerVideo.setAttribute("aria-label", "Partner video");
  // No codec from them: text only, camera-less, or nothing this browser decodes. Say so now
  // rather than after the stale-video wait.
  if (state.textOnly) overlay(`Text only — say hi to ${state.partnerName} in the chat`);
  else if (msg.recv_codec === null) overlay(`No video from ${state.partnerName} — say hi in the chat`);
  else overlay(`Connecting to ${state.partnerName}…`);
  const shared = msg.shared_interests.slice(0, 8);
  setStatus(`Connected to ${state.partnerName}${shared.length ? ` — you both like ${shared.join(", ")}` : ""}`);
  ui.chatLog.replaceChildren();
  chatError("");
  chatLine("system", `You're talking to ${state.partnerName}.${shared.length ? ` You both like ${shared.join(", ")}.` : ""} Say hi!`);
  renderQuality();
  focusForCall();
}

/**
 * The pairing's keys are agreed (the worker says so): its safety code goes beside the
 * partner's name, its explanation one tap away (the chat stays for what people say).
 * @param {bigint} matchId
 * @param {{emoji: string, words: string} | null} code
 */
export function onKeysAgreed(matchId, code) {
  if (matchId !== state.matchId || state.phase !== "paired" || !code) return;
  showSafetyCode(code);
}

/**
 * Leaves the current pairing on this side (the worker has already stopped its media when
 * it carried the message that ended it).
 * @param {string} note the waiting line
 */
export function unpair(note) {
  // The worker leaves the same pairing, and only that one: by the time it reads this it
  // may already be in the next (a Matched that overtook this message), which must stay.
  const leaving = state.matchId;
  state.matchId = null;
  if (leaving !== null) state.engine?.post({ type: "unpair", matchId: leaving });
  show(ui.partnerName, false);
  showSafetyCode(null);
  state.partnerReconnecting = false;
  state.waitingNote = note;
  state.waitingSince = performance.now();
  hideTyping();
}

function hideTyping() {
  if (state.typingTimer) clearTimeout(state.typingTimer);
  state.typingTimer = null;
  show(ui.typing, false);
}

/** The partner's line arrived, or they stopped typing: the indicator goes. */
export function partnerStoppedTyping() {
  hideTyping();
}

function renderAfterLeft() {
  if (state.phase !== "left") {
    if (countdown) clearInterval(countdown);
    countdown = null;
    return;
  }
  const name = state.partnerName || "Your partner";
  if (state.autoFindAt === null) {
    ui.afterLeftText.textContent = `${name} left. Press Find someone new when you're ready.`;
    show(ui.stay, false);
    return;
  }
  const s = Math.max(0, Math.ceil((state.autoFindAt - performance.now()) / 1000));
  ui.afterLeftText.textContent = `${name} left. Finding someone new in ${s} s…`;
  show(ui.stay, true);
  if (s === 0) findSomeoneNew();
}

/** Back in the queue after the partner left (the countdown, a button, Next or Esc). */
export function findSomeoneNew() {
  if (state.phase !== "left") return;
  state.autoFindAt = null;
  state.engine?.post({ type: "send", msg: { type: "Next", match_id: null } });
  state.waitingSince = performance.now();
  setPhase("waiting");
  renderAfterLeft();
}

/** "Stay here": no countdown; the last chat stays until the person moves on. */
export function stayAfterLeft() {
  if (state.phase !== "left") return;
  state.autoFindAt = null;
  setStatus(`${state.partnerName || "Your partner"} left.`);
  renderAfterLeft();
  ui.findNew.focus();
}

/** @param {import("../wire/protocol.js").LeaveReason} reason */
export function onPeerLeft(reason) {
  const name = state.partnerName || "Your partner";
  let line;
  if (reason === "Reported") {
    line = state.reportedMatch === state.matchId ? "Report sent — finding someone new…" : "The chat was ended — finding someone new…";
  } else if (reason === "Disconnected") {
    line = `${name} left (connection lost) — finding someone new…`;
  } else {
    line = `${name} left — finding someone new…`;
  }
  const wasPaired = state.phase === "paired";
  // The chat says what happened; what comes next is the bar's to say (the person may stay).
  if (wasPaired) chatLine("system", line.replace(/ — finding someone new…$/, "."));
  unpair(line);
  // Not in the call on this page (its own Next, Stop or Report crossed this): the relay
  // has already done what that asked.
  if (!wasPaired) return;
  state.autoFindAt = performance.now() + AUTO_FIND_MS;
  setPhase("left");
  setStatus(line);
  overlay(`${name} left`);
  renderAfterLeft();
  if (countdown) clearInterval(countdown);
  countdown = setInterval(renderAfterLeft, 250);
  ui.findNew.focus();
}

/** @param {ServerMsg} msg */
export function onMessage(msg) {
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
      state.waitingCount = msg.waiting;
      if (state.phase === "waiting") renderStatus();
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
    case "PeerTyping":
      if (state.phase === "paired") {
        ui.typing.textContent = `${state.partnerName} is typing…`;
        show(ui.typing, true);
        if (state.typingTimer) clearTimeout(state.typingTimer);
        state.typingTimer = setTimeout(hideTyping, TYPING_SHOWN_MS);
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
