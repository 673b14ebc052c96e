// @ts-check
/**
 * @file The processes and sockets the browser benchmark starts around the browser: coturn,
 * the project's shaper (duet-impair), a static file server for the WebRTC pages, the
 * Chromium launch (with Playwright's `--disable-features` merged, see below), and CPU
 * readings from /proc. Every start has a timeout, and every process is registered with
 * `Children` so the benchmark can kill all of them on any exit path.
 */

import { spawn } from "node:child_process";
import dgram from "node:dgram";
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync, chmodSync, rmSync, statSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { CHROMIUM_ARGS, REPO } from "../helpers.js";

const require = createRequire(path.join(REPO, "web-client", "package.json"));
/** @type {typeof import("playwright-core")} */
const playwright = require("playwright-core");

/** How much of a child's output is kept for error messages. */
const MAX_LOG_CHARS = 100_000;

/** Every process the benchmark started, so one call kills them all (also on failure). */
export class Children {
  constructor() {
    /** @type {Set<import("node:child_process").ChildProcess>} */
    this.procs = new Set();
  }

  /**
   * Spawns a process and keeps its recent output.
   * @param {string} bin @param {string[]} args @param {object} [env]
   */
  spawn(bin, args, env = {}) {
    const proc = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
    let out = "";
    const keep = (/** @type {Buffer} */ d) => {
      out += d.toString();
      if (out.length > MAX_LOG_CHARS) out = out.slice(-MAX_LOG_CHARS / 2);
    };
    proc.stdout?.on("data", keep);
    proc.stderr?.on("data", keep);
    proc.on("error", (e) => keep(Buffer.from(`spawn error: ${e.message}\n`)));
    this.procs.add(proc);
    proc.once("exit", () => this.procs.delete(proc));
    return { proc, log: () => out };
  }

  /** Kills every process still running: SIGTERM, then SIGKILL after a grace period. */
  async killAll(graceMs = 3000) {
    const alive = [...this.procs].filter((p) => p.exitCode === null && p.signalCode === null);
    await Promise.all(
      alive.map(
        (p) =>
          new Promise((resolve) => {
            const timer = setTimeout(() => {
              p.kill("SIGKILL");
              resolve(undefined);
            }, graceMs);
            p.once("exit", () => {
              clearTimeout(timer);
              resolve(undefined);
            });
            p.kill("SIGTERM");
          }),
      ),
    );
  }
}

/**
 * Resolves when `re` matches the process output, rejects on exit or timeout.
 * @param {{proc: import("node:child_process").ChildProcess, log: () => string}} child
 * @param {RegExp} re @param {number} timeoutMs @param {string} what
 * @returns {Promise<RegExpExecArray>}
 */
export function waitForOutput(child, re, timeoutMs, what) {
  return new Promise((resolve, reject) => {
    const check = () => {
      const m = re.exec(child.log());
      if (m) {
        done();
        resolve(m);
      }
    };
    const onExit = (/** @type {any} */ code) => {
      done();
      reject(new Error(`${what} exited (${code}) before it was ready:\n${child.log().slice(-3000)}`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`${what} was not ready within ${timeoutMs} ms:\n${child.log().slice(-3000)}`));
    }, timeoutMs);
    const done = () => {
      clearTimeout(timer);
      child.proc.stdout?.off("data", check);
      child.proc.stderr?.off("data", check);
      child.proc.off("exit", onExit);
    };
    child.proc.stdout?.on("data", check);
    child.proc.stderr?.on("data", check);
    child.proc.once("exit", onExit);
    check();
  });
}

export const TURN_USER = "bench";
export const TURN_PASSWORD = "bench";

/**
 * Debian's coturn on 127.0.0.1, relaying on 127.0.0.1 only, with one static user.
 * Ready when it answers a STUN Binding request.
 * @param {Children} children @param {number} timeoutMs
 */
export async function startCoturn(children, timeoutMs) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "duet-bench-turn-"));
  const port = 3478;
  const child = children.spawn(process.env.DUET_TURNSERVER ?? "turnserver", [
    "-n",
    "--listening-ip", "127.0.0.1",
    "--relay-ip", "127.0.0.1",
    "--listening-port", String(port),
    "--min-port", "40000",
    "--max-port", "40999",
    "--allow-loopback-peers",
    "--no-cli",
    "--no-tls",
    "--no-dtls",
    "--lt-cred-mech",
    "--user", `${TURN_USER}:${TURN_PASSWORD}`,
    "--realm", "duet.bench",
    "--fingerprint",
    "--log-file", "stdout",
    "--pidfile", path.join(dir, "turnserver.pid"),
    "--userdb", path.join(dir, "turndb"),
  ]);
  child.proc.once("exit", () => rmSync(dir, { recursive: true, force: true }));
  await stunReady("127.0.0.1", port, timeoutMs, child);
  return { port, ...child };
}

/**
 * Sends STUN Binding requests until one is answered.
 * @param {string} host @param {number} port @param {number} timeoutMs
 * @param {{log: () => string}} child
 */
function stunReady(host, port, timeoutMs, child) {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket("udp4");
    const request = Buffer.alloc(20);
    request.writeUInt16BE(0x0001, 0);
    request.writeUInt32BE(0x2112a442, 4);
    for (let i = 8; i < 20; i++) request[i] = (Math.random() * 256) | 0;
    const deadline = setTimeout(() => {
      finish();
      reject(new Error(`coturn did not answer STUN on ${host}:${port} within ${timeoutMs} ms:\n${child.log().slice(-3000)}`));
    }, timeoutMs);
    // A resend interval while coturn starts up, not a wait for readiness.
    const resend = setInterval(() => sock.send(request, port, host), 100);
    const finish = () => {
      clearTimeout(deadline);
      clearInterval(resend);
      sock.close();
    };
    sock.on("message", (msg) => {
      if (msg.length >= 20 && msg.readUInt16BE(0) === 0x0101) {
        finish();
        resolve(undefined);
      }
    });
    sock.on("error", () => {});
    sock.send(request, port, host);
  });
}

/** The shaper binary: DUET_IMPAIR_BIN, else the newer of target/{release,debug}/duet-impair. */
export function impairBinary() {
  if (process.env.DUET_IMPAIR_BIN) return process.env.DUET_IMPAIR_BIN;
  const built = ["release", "debug"]
    .map((p) => path.join(REPO, "target", p, "duet-impair"))
    .filter((p) => existsSync(p))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  if (!built.length) throw new Error("No duet-impair binary: run `cargo build --release -p duet-tests --bin duet-impair` (or set DUET_IMPAIR_BIN).");
  return built[0];
}

/**
 * duet-impair between clients and `upstream`, on both directions the named profile.
 * @param {Children} children @param {string} upstream host:port @param {string} profile
 * @param {number} timeoutMs
 */
export async function startShaper(children, upstream, profile, timeoutMs) {
  const child = children.spawn(impairBinary(), ["--listen", "127.0.0.1:0", "--upstream", upstream, "--profile", profile, "--seed", "1", "--stats-every", "5"]);
  const m = await waitForOutput(child, /listening (\S+):(\d+) /, timeoutMs, "duet-impair");
  return { port: Number(m[2]), ...child };
}

/**
 * Serves the benchmark's own pages (this folder) on 127.0.0.1.
 * @returns {Promise<{url: string, close: () => void}>}
 */
export async function startPageServer() {
  const dir = path.dirname(new URL(import.meta.url).pathname);
  const types = { ".html": "text/html", ".js": "text/javascript" };
  const server = http.createServer((req, res) => {
    const name = path.basename(new URL(req.url ?? "/", "http://x").pathname);
    const file = path.join(dir, name);
    if (name === "favicon.ico") {
      res.writeHead(204).end();
      return;
    }
    const type = /** @type {Record<string, string>} */ (types)[path.extname(name)];
    if (!type || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": type, "cache-control": "no-store" }).end(readFileSync(file));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(undefined)));
  const addr = /** @type {import("node:net").AddressInfo} */ (server.address());
  return { url: `http://127.0.0.1:${addr.port}/`, close: () => server.close() };
}

/**
 * Launches headless Chromium. Playwright passes its own `--disable-features=…` and Chromium
 * keeps only the last such flag, so a small wrapper merges every `--disable-features`
 * list into one (adding `WebRtcHideLocalIpsWithMdns`: host candidates without mDNS).
 * @param {number} timeoutMs
 */
export async function launchChromium(timeoutMs) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "duet-bench-chromium-"));
  const wrapper = path.join(dir, "chromium");
  const real = process.env.DUET_CHROMIUM ?? "/usr/bin/chromium";
  writeFileSync(
    wrapper,
    `#!/usr/bin/env bash
# Merges every --disable-features list into one flag, then runs Chromium.
features=WebRtcHideLocalIpsWithMdns
args=()
for a in "$@"; do
  case "$a" in
    --disable-features=*) features="$features,\${a#--disable-features=}" ;;
    *) args+=("$a") ;;
  esac
done
exec ${JSON.stringify(real)} "\${args[@]}" "--disable-features=$features"
`,
  );
  chmodSync(wrapper, 0o755);
  const browser = await playwright.chromium.launch({
    executablePath: wrapper,
    args: [...CHROMIUM_ARGS, "--use-fake-ui-for-media-stream"],
    timeout: timeoutMs,
  });
  return { browser, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

const CLOCK_TICKS_PER_S = 100;

/** @returns {Map<number, {ppid: number, ticks: number, comm: string}>} every process's CPU so far */
function processTable() {
  const table = new Map();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const close = stat.lastIndexOf(")");
      const comm = stat.slice(stat.indexOf("(") + 1, close);
      const f = stat.slice(close + 2).split(" ");
      // Fields after the comm: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
      // Children's time moves into cutime/cstime when they are reaped, so the sum over a
      // tree does not drop when a renderer exits.
      const ticks = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
      table.set(Number(name), { ppid: Number(f[1]), ticks, comm });
    } catch {
      // The process exited while we read.
    }
  }
  return table;
}

/**
 * CPU seconds used so far by each process tree rooted at one of `roots` (the pids).
 * @param {Record<string, number[]>} roots name → root pids
 * @returns {Record<string, number>}
 */
export function cpuSeconds(roots) {
  const table = processTable();
  /** @type {Map<number, number[]>} */
  const kids = new Map();
  for (const [pid, p] of table) {
    if (!kids.has(p.ppid)) kids.set(p.ppid, []);
    kids.get(p.ppid)?.push(pid);
  }
  /** @type {Record<string, number>} */
  const out = {};
  for (const [name, pids] of Object.entries(roots)) {
    let ticks = 0;
    const stack = [...pids];
    const seen = new Set();
    while (stack.length) {
      const pid = /** @type {number} */ (stack.pop());
      if (seen.has(pid)) continue;
      seen.add(pid);
      ticks += table.get(pid)?.ticks ?? 0;
      stack.push(...(kids.get(pid) ?? []));
    }
    out[name] = ticks / CLOCK_TICKS_PER_S;
  }
  return out;
}

/**
 * Where a process tree stands, for a failure message when a browser stops answering: per
 * process its name, its main thread's state and kernel wait channel, its CPU so far, and
 * how many of its threads are running (R) or in an uninterruptible wait (D).
 * @param {number} root
 * @returns {string[]}
 */
export function processStates(root) {
  const table = processTable();
  const out = [];
  const stack = [root];
  const seen = new Set();
  while (stack.length && out.length < 30) {
    const pid = /** @type {number} */ (stack.pop());
    if (seen.has(pid) || !table.has(pid)) continue;
    seen.add(pid);
    const p = /** @type {{ppid: number, ticks: number, comm: string}} */ (table.get(pid));
    const read = (/** @type {string} */ f) => {
      try {
        return readFileSync(f, "utf8").trim();
      } catch {
        return "?";
      }
    };
    const state = (/** @type {string} */ stat) => stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
    let running = 0;
    let blocked = 0;
    let threads = 0;
    try {
      for (const tid of readdirSync(`/proc/${pid}/task`)) {
        threads++;
        const st = state(read(`/proc/${pid}/task/${tid}/stat`));
        running += Number(st === "R");
        blocked += Number(st === "D");
      }
    } catch {
      // It exited.
    }
    out.push(`${pid} ${p.comm}: main ${state(read(`/proc/${pid}/stat`))} in ${read(`/proc/${pid}/wchan`) || "-"}, ${(p.ticks / CLOCK_TICKS_PER_S).toFixed(1)} s CPU, ${threads} threads (${running} R, ${blocked} D)`);
    for (const [kid, k] of table) if (k.ppid === pid) stack.push(kid);
  }
  return out;
}

/** The browser's root pid: our child process running Chromium. */
export function browserPid() {
  for (const [pid, p] of processTable()) {
    if (p.ppid === process.pid && /chrom/i.test(p.comm)) return pid;
  }
  throw new Error("cannot find the Chromium process among this process's children");
}

/**
 * The pid of this process's child running `bin` (by its argv[0]), or 0.
 * @param {string} bin
 */
export function childPid(bin) {
  for (const [pid, p] of processTable()) {
    if (p.ppid !== process.pid) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0] === bin) return pid;
    } catch {
      // It exited.
    }
  }
  return 0;
}

/** Whole-machine busy and total jiffies from /proc/stat (not namespaced: the real machine). */
export function machineTicks() {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0];
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = v[3] + (v[4] ?? 0);
  const total = v.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}
