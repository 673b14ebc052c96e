// @ts-check
/**
 * @file The chat panel: lines from the partner, from the person and from Duet itself
 * (bounded), the byte counter against the protocol's limit, and sending a line through
 * the media worker (which owns the session) with a clear message when it is refused.
 */

import { MAX_CHAT_BYTES } from "../wire/protocol.js";
import { utf8Length } from "../wire/postcard.js";
import { state, ui } from "./state.js";

/** Chat lines kept on screen (older ones scroll away for good). */
const MAX_CHAT_LINES = 200;

/**
 * @param {"partner" | "me" | "system"} who
 * @param {string} text
 */
export function chatLine(who, text) {
  const li = document.createElement("p");
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
export function chatError(text) {
  ui.chatError.textContent = text;
}

export function renderChatCount() {
  const n = utf8Length(ui.message.value);
  ui.chatCount.textContent = n > MAX_CHAT_BYTES * 0.8 ? `${n.toLocaleString("en")} / ${MAX_CHAT_BYTES.toLocaleString("en")} bytes` : "";
  const over = n > MAX_CHAT_BYTES;
  ui.message.setAttribute("aria-invalid", String(over));
  ui.chatCount.classList.toggle("over", over);
}

/** @param {SubmitEvent} ev */
export function onSendChat(ev) {
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
  state.typingSentAt = -Infinity; // the next line's typing is news again
  void engine.chat(text).then((error) => {
    if (error) chatError(`Message not sent: ${error}`);
  });
}

/** Typing is told to the partner at most this often (the relay relays it as PeerTyping). */
const TYPING_EVERY_MS = 3000;

/**
 * The person is typing: the counter follows, a "too long" message goes once it fits, and
 * the partner is told (at most every few seconds).
 */
export function onChatInput() {
  renderChatCount();
  if (utf8Length(ui.message.value) <= MAX_CHAT_BYTES) chatError("");
  const now = performance.now();
  if (state.phase === "paired" && state.matchId !== null && ui.message.value.trim() && now - state.typingSentAt > TYPING_EVERY_MS) {
    state.typingSentAt = now;
    state.engine?.post({ type: "send", msg: { type: "Typing", match_id: state.matchId } });
  }
}
