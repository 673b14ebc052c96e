// @ts-check
/**
 * @file The browser benchmark's arithmetic, with no browser in it: one direction's figures
 * from what the receiving page logged and what the sending page drew, and the table that
 * puts WebRTC and Duet side by side with their ratio.
 */

/** No new picture for longer than this is a freeze. */
export const FREEZE_MS = 200;

/** @param {number[]} xs sorted ascending @param {number} q */
function quantileSorted(xs, q) {
  return xs.length ? xs[Math.min(xs.length - 1, Math.floor(q * xs.length))] : null;
}

/**
 * @typedef {object} Direction
 * @property {number} frames pictures shown (new readable stamps from the sender)
 * @property {number} fps frames / window seconds
 * @property {number | null} p50 capture-to-screen delay, ms
 * @property {number | null} p95
 * @property {number | null} max
 * @property {number} neverDrawn pictures shown that the sender never drew (unreadable, or a stamp it never drew)
 * @property {number} outOfOrder pictures older than one shown before them
 * @property {number} freezes gaps with no new picture for more than FREEZE_MS
 * @property {number} frozenMs total length of those gaps
 * @property {any[]} unreadableExamples the block luminances of the first few unreadable pictures (to tell corruption from a reader fault)
 */

/**
 * @param {{shown: number[][], broken: number[][]}} received the receiver's `take()` (entries
 *   [at, sender, seq, t, delay] and [at])
 * @param {number[][]} drawn the sender's draw log ([seq, t])
 * @param {number} sender the sender's page id
 * @param {number} from window start (ms, shared page clock) @param {number} to window end
 * @returns {Direction}
 */
export function direction(received, drawn, sender, from, to) {
  const drew = new Set(drawn.map(([seq, t]) => `${seq}:${t}`));
  const mine = received.shown.filter((e) => e[1] === sender && e[0] >= from && e[0] <= to);
  const unreadable = received.broken.filter((e) => e[0] >= from && e[0] <= to);
  const neverDrawn = mine.filter((e) => !drew.has(`${e[2]}:${e[3]}`)).length + unreadable.length;
  const delays = mine.map((e) => e[4]).sort((a, b) => a - b);
  let outOfOrder = 0;
  let newest = -Infinity;
  let freezes = 0;
  let frozenMs = 0;
  let lastAt = from;
  for (const [at, , , t] of mine) {
    // Stamp times are 0.1 ms units modulo 2^32; within one window they do not wrap in practice.
    if (t < newest) outOfOrder += 1;
    newest = Math.max(newest, t);
    if (at - lastAt > FREEZE_MS) {
      freezes += 1;
      frozenMs += at - lastAt;
    }
    lastAt = at;
  }
  if (to - lastAt > FREEZE_MS) {
    freezes += 1;
    frozenMs += to - lastAt;
  }
  const seconds = (to - from) / 1000;
  const round = (/** @type {number | null} */ x) => (x === null ? null : Math.round(x * 10) / 10);
  return {
    frames: mine.length,
    fps: round(mine.length / seconds) ?? 0,
    p50: round(quantileSorted(delays, 0.5)),
    p95: round(quantileSorted(delays, 0.95)),
    max: round(delays.length ? delays[delays.length - 1] : null),
    neverDrawn,
    outOfOrder,
    freezes,
    frozenMs: Math.round(frozenMs),
    unreadableExamples: unreadable.slice(0, 3).map((e) => e[1]),
  };
}

/** @param {number | null | undefined} x @param {number} [digits] */
function fmt(x, digits = 1) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  return x.toFixed(digits);
}

/** @param {number | null | undefined} duet @param {number | null | undefined} webrtc */
export function ratio(duet, webrtc) {
  if (duet === null || duet === undefined || webrtc === null || webrtc === undefined) return null;
  if (webrtc === 0) return duet === 0 ? 1 : null;
  return Math.round((duet / webrtc) * 100) / 100;
}

/**
 * One table: rows are figures, columns WebRTC, Duet and Duet ÷ WebRTC.
 * @param {string} title
 * @param {{label: string, webrtc?: number | null, duet?: number | null, digits?: number}[]} rows a row with neither value is a heading
 */
export function table(title, rows) {
  const w0 = Math.max(44, ...rows.map((r) => r.label.length + 2));
  const col = (/** @type {string} */ s, n = 10) => s.padStart(n);
  const lines = [title, `${"".padEnd(w0)}${col("WebRTC")}${col("Duet")}${col("Duet÷WebRTC", 13)}`];
  for (const r of rows) {
    if (r.webrtc === undefined && r.duet === undefined) {
      lines.push(r.label);
      continue;
    }
    const q = ratio(r.duet, r.webrtc);
    lines.push(`${r.label.padEnd(w0)}${col(fmt(r.webrtc, r.digits))}${col(fmt(r.duet, r.digits))}${col(q === null ? "–" : q.toFixed(2), 13)}`);
  }
  return lines.join("\n");
}
