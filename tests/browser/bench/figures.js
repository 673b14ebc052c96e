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
 * @param {{shown: number[][], broken: [number, ...unknown[]][]}} received the receiver's `take()` (entries
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
 * One table: rows are figures, columns WebRTC, Duet and Duet ÷ WebRTC (or other names for
 * the two systems compared: `webrtc` is the first column, `duet` the second).
 * @param {string} title
 * @param {{label: string, webrtc?: number | null, duet?: number | null, digits?: number}[]} rows a row with neither value is a heading
 * @param {[string, string]} [names] the two columns' headings
 */
export function table(title, rows, names = ["WebRTC", "Duet"]) {
  const w0 = Math.max(44, ...rows.map((r) => r.label.length + 2));
  const col = (/** @type {string} */ s, n = 10) => s.padStart(n);
  const [first, second] = names;
  const width = Math.max(10, first.length + 2, second.length + 2);
  const lines = [title, `${"".padEnd(w0)}${col(first, width)}${col(second, width)}${col(`${second}÷${first}`, Math.max(13, first.length + second.length + 3))}`];
  for (const r of rows) {
    if (r.webrtc === undefined && r.duet === undefined) {
      lines.push(r.label);
      continue;
    }
    const q = ratio(r.duet, r.webrtc);
    lines.push(`${r.label.padEnd(w0)}${col(fmt(r.webrtc, r.digits), width)}${col(fmt(r.duet, r.digits), width)}${col(q === null ? "–" : q.toFixed(2), Math.max(13, first.length + second.length + 3))}`);
  }
  return lines.join("\n");
}

/**
 * Issue 8's targets, each judged on the worst direction of both calls (a benchmark prints
 * whether they are met; nothing fails on it).
 * @param {any} clean `{webrtc, duet}` of the run without shaper
 * @param {any} [impaired] the same through the shaper
 * @returns {{target: string, webrtc: string, duet: string, met: boolean}[]}
 */
export function targets(clean, impaired) {
  const dirs = (/** @type {any} */ system) =>
    ["first", "next"].flatMap((k) => Object.entries(system[k]).filter(([name]) => name.includes("→") && name !== "firstFrameMs").map(([, v]) => /** @type {Direction} */ (v)));
  const worst = (/** @type {any} */ system, /** @type {(d: Direction) => number | null} */ f, /** @type {"max" | "min"} */ how) => {
    const xs = dirs(system).map(f).filter((x) => x !== null);
    return xs.length ? (how === "max" ? Math.max(...xs) : Math.min(...xs)) : null;
  };
  const sum = (/** @type {any} */ system, /** @type {(d: Direction) => number} */ f) => dirs(system).reduce((a, d) => a + f(d), 0);
  const nextFirst = (/** @type {any} */ system) => Math.max(...Object.values(/** @type {Record<string, number>} */ (system.next.firstFrameMs)));
  const cpu = (/** @type {any} */ system) => Math.max(system.first.cpuPercentOfOneCore.browser, system.next.cpuPercentOfOneCore.browser);
  const f1 = (/** @type {number | null} */ x) => (x === null ? "–" : x.toFixed(1));
  const rows = [];
  const { webrtc: w, duet: d } = clean;
  for (const [label, q] of /** @type {const} */ ([["p50", "p50"], ["p95", "p95"]])) {
    const a = worst(w, (x) => x[q], "max");
    const b = worst(d, (x) => x[q], "max");
    rows.push({ target: `capture→screen ${label} (worst direction) ≤ WebRTC's`, webrtc: `${f1(a)} ms`, duet: `${f1(b)} ms`, met: a !== null && b !== null && b <= a });
  }
  const fa = worst(w, (x) => x.fps, "min");
  const fb = worst(d, (x) => x.fps, "min");
  rows.push({ target: "frame rate (worst direction) within 1 fps of WebRTC's", webrtc: `${f1(fa)} fps`, duet: `${f1(fb)} fps`, met: fa !== null && fb !== null && fb >= fa - 1 });
  rows.push({ target: "browser CPU (busier call) ≤ WebRTC's", webrtc: `${f1(cpu(w))} %`, duet: `${f1(cpu(d))} %`, met: cpu(d) <= cpu(w) });
  const nw = nextFirst(w);
  const nd = nextFirst(d);
  rows.push({ target: "Next → first frame ≤ ¼ of WebRTC's and < 100 ms", webrtc: `${f1(nw)} ms`, duet: `${f1(nd)} ms`, met: nd <= nw / 4 && nd < 100 });
  // Lip sync, Duet's own figure (the sound's capture→playout minus the picture's
  // capture→screen, both as the receiving engine measures them at the end of the run).
  const offsets = [d.snapshotA, d.snapshotC].map((s) => s?.receive?.avSync?.offsetMs).filter((x) => typeof x === "number");
  const offset = offsets.length ? offsets.reduce((a, x) => (Math.abs(x) > Math.abs(a) ? x : a)) : null;
  rows.push({ target: "sound vs picture (Duet, worst direction) within 45 ms", webrtc: "–", duet: offset === null ? "–" : `${offset > 0 ? "+" : ""}${f1(offset)} ms`, met: offset !== null && offsets.length === 2 && Math.abs(offset) <= 45 });
  const systems = impaired ? [["", clean], [" (shaped)", impaired]] : [["", clean]];
  for (const [suffix, run] of /** @type {[string, any][]} */ (systems)) {
    const a = sum(run.webrtc, (x) => x.neverDrawn);
    const b = sum(run.duet, (x) => x.neverDrawn);
    rows.push({ target: `pictures shown that the sender never drew = 0${suffix}`, webrtc: String(a), duet: String(b), met: b === 0 });
  }
  if (impaired) {
    const a = sum(impaired.webrtc, (x) => x.freezes);
    const b = sum(impaired.duet, (x) => x.freezes);
    rows.push({ target: "freezes > 200 ms (shaped, all directions) ≤ WebRTC's", webrtc: String(a), duet: String(b), met: b <= a });
  }
  return rows;
}

/** @param {{target: string, webrtc: string, duet: string, met: boolean}[]} rows */
export function targetTable(rows) {
  const w0 = Math.max(...rows.map((r) => r.target.length)) + 2;
  const lines = [`Issue 8's targets${"".padEnd(w0 - 17)}${"WebRTC".padStart(12)}${"Duet".padStart(12)}   met`];
  for (const r of rows) lines.push(`${r.target.padEnd(w0)}${r.webrtc.padStart(12)}${r.duet.padStart(12)}   ${r.met ? "yes" : "no"}`);
  return lines.join("\n");
}
