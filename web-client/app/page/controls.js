// @ts-check
/**
 * @file The call's keyboard and the partner's sound and picture: Esc for Next (as on
 * Omegle), Ctrl+E and Ctrl+D (⌘ on a Mac) for camera and microphone (as in Meet), the
 * partner's volume and mute (remembered across visits), and fullscreen for the partner's
 * video.
 */

import { setPartnerVolume } from "./audio-out.js";
import { state, ui } from "./state.js";
import { setToggle } from "./view.js";

/** @param {string} key @param {string} value */
function remember(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    // Private mode: not remembered.
  }
}

/** Applies the person's volume and mute to the playout and to the controls. */
export function applyPartnerSound() {
  const pct = Math.round(state.partnerVolume * 100);
  ui.partnerVolume.value = String(pct);
  ui.partnerVolume.setAttribute("aria-valuetext", state.partnerMuted ? `${pct}%, muted` : `${pct}%`);
  ui.partnerMute.setAttribute("aria-pressed", String(state.partnerMuted));
  if (state.playout) setPartnerVolume(state.playout, state.partnerVolume, state.partnerMuted);
}

function toggleFullscreen() {
  if (document.fullscreenElement) {
    void document.exitFullscreen().catch(() => {});
  } else if (typeof ui.stage.requestFullscreen === "function") {
    void ui.stage.requestFullscreen().catch(() => {});
  }
}

/**
 * @param {{onNext(): void, toggleCamera(): void, toggleMic(): void}} actions
 */
export function wireControls(actions) {
  try {
    const v = Number(localStorage.getItem("duet.partnerVolume"));
    if (localStorage.getItem("duet.partnerVolume") !== null && v >= 0 && v <= 1) state.partnerVolume = v;
    state.partnerMuted = localStorage.getItem("duet.partnerMuted") === "1";
  } catch {
    // No storage: full volume.
  }
  applyPartnerSound();
  ui.partnerVolume.addEventListener("input", () => {
    state.partnerVolume = Number(ui.partnerVolume.value) / 100;
    // Turning the volume up is wanting to hear them.
    if (state.partnerVolume > 0) state.partnerMuted = false;
    remember("duet.partnerVolume", String(state.partnerVolume));
    remember("duet.partnerMuted", state.partnerMuted ? "1" : "0");
    applyPartnerSound();
  });
  ui.partnerMute.addEventListener("click", () => {
    state.partnerMuted = !state.partnerMuted;
    remember("duet.partnerMuted", state.partnerMuted ? "1" : "0");
    applyPartnerSound();
  });
  ui.fullscreen.hidden = typeof ui.stage.requestFullscreen !== "function";
  ui.fullscreen.addEventListener("click", toggleFullscreen);
  document.addEventListener("fullscreenchange", () => setToggle(ui.fullscreen, document.fullscreenElement === ui.stage));
  ui.partnerVideo.addEventListener("dblclick", toggleFullscreen);

  const mac = /Mac|iPhone|iPad/.test(navigator.platform || navigator.userAgent);
  if (mac) ui.shortcuts.innerHTML = "Keys: <kbd>Esc</kbd> Next · <kbd>⌘</kbd>+<kbd>E</kbd> camera · <kbd>⌘</kbd>+<kbd>D</kbd> microphone";
  const mod = mac ? "Meta" : "Control";
  ui.next.setAttribute("aria-keyshortcuts", "Escape");
  ui.camera.setAttribute("aria-keyshortcuts", `${mod}+E`);
  ui.mic.setAttribute("aria-keyshortcuts", `${mod}+D`);
  ui.next.title = "Next (Esc)";
  ui.camera.title = `Camera (${mac ? "⌘" : "Ctrl"}+E)`;
  ui.mic.title = `Microphone (${mac ? "⌘" : "Ctrl"}+D)`;

  document.addEventListener("keydown", (ev) => {
    if (ev.defaultPrevented || ev.isComposing || ui.reportDialog.open) return;
    const inCall = state.phase === "paired" || state.phase === "waiting";
    if (ev.key === "Escape" && !ev.ctrlKey && !ev.metaKey && !ev.altKey && !ev.shiftKey) {
      // Esc leaves fullscreen first (the browser does that itself), and a picker first.
      if (document.fullscreenElement || (ev.target instanceof HTMLSelectElement)) return;
      if (state.phase === "paired" || state.phase === "left") {
        ev.preventDefault();
        actions.onNext();
      }
      return;
    }
    const modOn = mac ? ev.metaKey && !ev.ctrlKey : ev.ctrlKey && !ev.metaKey;
    if (!modOn || ev.altKey || ev.shiftKey || !inCall) return;
    const key = ev.key.toLowerCase();
    if (key === "e" && !ui.camera.disabled) {
      ev.preventDefault();
      actions.toggleCamera();
    } else if (key === "d" && !ui.mic.disabled) {
      ev.preventDefault();
      actions.toggleMic();
    }
  });
}
