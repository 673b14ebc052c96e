// @ts-check
/**
 * @file Lip sync on the receiving side: how long to hold a decoded video frame so the
 * partner's picture does not run ahead of their voice.
 *
 * The sound's capture-to-playout delay (its jitter buffer, mostly) is usually longer than
 * the picture's capture-to-screen delay on a clean path. A picture shown more than
 * `LEAD_MS` before the sound it belongs to looks dubbed, so a frame is held until its
 * delay is the sound's minus `LEAD_MS`. The hold is capped at `MAX_HOLD_MS`: when the sound
 * is that far behind (a jitter buffer grown after a bad stretch), a prompt picture is worth
 * more than a synchronised late one, and the audio buffer shrinks back on its own. A
 * picture later than the sound is never made later still, and the sound is not held back
 * for it either: on a healthy path video is the faster of the two.
 *
 * No browser API here: Node's test runner covers it. Times are milliseconds.
 */

/**
 * The picture may lead the sound by this much without a hold: just inside the 45 ms the
 * issue asks for (a sound late by up to 125 ms goes unnoticed, ITU-R BT.1359), so the
 * picture is held as little as sync allows.
 */
export const LEAD_MS = 40;
/**
 * The most a frame is held for sync: the picture's promptness is the product's promise, so
 * a sound further behind than this is brought back by its own buffer shrinking, not by
 * making everyone's picture late.
 */
export const MAX_HOLD_MS = 50;

/**
 * @param {number | null} audioDelayMs the sound's capture-to-playout delay now, or null (no sound playing)
 * @param {number} videoTransitMs this frame's capture-to-now delay
 * @returns {number} how much longer to hold the frame, ms (0: show it now)
 */
export function syncHoldMs(audioDelayMs, videoTransitMs) {
  if (audioDelayMs === null || !Number.isFinite(audioDelayMs)) return 0;
  return Math.min(MAX_HOLD_MS, Math.max(0, audioDelayMs - LEAD_MS - videoTransitMs));
}
