// @ts-nocheck
/**
 * @file The browser benchmark's page instrument, injected into every page as a Playwright
 * init script (plain script, no modules): a stamped camera and a stamp reader.
 *
 * Camera: a 640×480 canvas redrawn every 16 ms with moving shapes (so the encoder has real
 * work) and, across the top, 80 black/white 40×40 px blocks carrying a sync pattern, the
 * page's id, a frame number, the draw time and a CRC-16. `getUserMedia` is replaced so the
 * page (WebRTC or the Duet app) gets `canvas.captureStream(30)` plus an oscillator's audio.
 * Blocks that big survive VP8/VP9 at low bitrates and any downscaling the sender chooses.
 *
 * Reader: `__bench.watch(selector)` reads the rendered partner element (a `<video>`, or
 * Duet's `canvas#partner-video`) once per animation frame — `drawImage` into a 160×120
 * canvas, `getImageData`, decode — and logs each new picture with the time it was seen.
 * All pages of one browser share one clock (`performance.timeOrigin + performance.now()`),
 * so capture-to-screen delay is the read time minus the stamp's time.
 *
 * Firefox pages (`window.__benchWorkerReader`) are read in the media worker instead, at the
 * moment it paints each picture into the partner canvas (`putImageData`, the only way
 * Duet's worker paints there): Firefox snapshots a canvas a worker paints by blocking the
 * page's main thread until the worker answers, and that answer never came while a call ran
 * (the page and worker both froze for Firefox's 10 s snapshot timeout, every few seconds;
 * measured: 9–10 s stalls of A's page, and gaps of up to 10.9 s in its pictures at B, when
 * A's page read its canvas; a longest gap of 154 ms when it did not). A picture is seen there up to one display frame before it is on screen.
 *
 * The page id comes from `window.__benchId`, set by an init script added before this one.
 */
(() => {
  if (window.top !== window) return;
  const ID = Number(window.__benchId ?? 0) & 0xf;
  const W = 640;
  const H = 480;
  const COLS = 16;
  const ROWS = 5;
  const BLOCK = 40;
  const SYNC = 0xb2; // 8 bits
  const TAIL = 0x5; // 4 bits: the grid has 80 blocks, the stamp needs 76
  /** Most entries in each log: a run of several minutes at 62.5 draws/s fits, memory stays bounded. */
  const MAX_LOG = 100_000;
  /** Time units in the stamp: 0.1 ms, modulo 2^32 (wraps every 5 days). */
  const UNITS_PER_MS = 10;
  const WRAP = 4294967296;

  const now = () => performance.timeOrigin + performance.now();

  function crc16(bytes) {
    // CRC-16/CCITT-FALSE.
    let crc = 0xffff;
    for (const b of bytes) {
      crc ^= b << 8;
      for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
    return crc;
  }

  function payloadBytes(id, seq, t) {
    return [id, (seq >>> 8) & 0xff, seq & 0xff, Math.floor(t / 16777216) & 0xff, (t >>> 16) & 0xff, (t >>> 8) & 0xff, t & 0xff];
  }

  /** @returns {number[]} 80 bits */
  function encode(id, seq, t) {
    const bits = [];
    const put = (value, n) => {
      for (let i = n - 1; i >= 0; i--) bits.push(Math.floor(value / 2 ** i) % 2);
    };
    put(SYNC, 8);
    put(id, 4);
    put(seq, 16);
    put(t, 32);
    put(crc16(payloadBytes(id, seq, t)), 16);
    put(TAIL, 4);
    return bits;
  }

  /** @param {number[]} bits @returns {{id: number, seq: number, t: number} | null} */
  function decode(bits) {
    let pos = 0;
    const take = (n) => {
      let v = 0;
      for (let i = 0; i < n; i++) v = v * 2 + bits[pos++];
      return v;
    };
    const sync = take(8);
    const id = take(4);
    const seq = take(16);
    const t = take(32);
    const crc = take(16);
    const tail = take(4);
    if (sync !== SYNC || tail !== TAIL || crc !== crc16(payloadBytes(id, seq, t))) return null;
    return { id, seq, t };
  }

  // ------------------------------------------------------------------ camera

  const camera = document.createElement("canvas");
  camera.width = W;
  camera.height = H;
  const cam = camera.getContext("2d");
  let seq = 0;
  /** [seq, stamp time units] of every picture drawn */
  const drawn = [];

  function draw() {
    const t = Math.round(now() * UNITS_PER_MS) % WRAP;
    seq = (seq + 1) & 0xffff;
    const phase = performance.now() / 1000;
    cam.fillStyle = "#306";
    cam.fillRect(0, ROWS * BLOCK, W, H - ROWS * BLOCK);
    for (let i = 0; i < 6; i++) {
      const x = (W / 2) * (1 + Math.sin(phase * (0.7 + i * 0.3) + i));
      const y = ROWS * BLOCK + 20 + ((H - ROWS * BLOCK - 80) / 2) * (1 + Math.cos(phase * (0.5 + i * 0.2) + i * 2));
      cam.fillStyle = `hsl(${(i * 60 + phase * 40) % 360} 80% 55%)`;
      cam.fillRect(x - 40, y, 80, 60);
    }
    cam.fillStyle = "#fff";
    cam.font = "28px sans-serif";
    cam.fillText(`page ${ID} frame ${seq}`, 20, H - 20);
    const bits = encode(ID, seq, t);
    for (let i = 0; i < bits.length; i++) {
      cam.fillStyle = bits[i] ? "#fff" : "#000";
      cam.fillRect((i % COLS) * BLOCK, Math.floor(i / COLS) * BLOCK, BLOCK, BLOCK);
    }
    if (drawn.length < MAX_LOG) drawn.push([seq, t]);
  }
  draw();
  setInterval(draw, 16);

  let audioTrack = null;
  function microphone() {
    if (!audioTrack) {
      const ctx = new AudioContext();
      const osc = new OscillatorNode(ctx, { frequency: 440 + ID * 110 });
      const gain = new GainNode(ctx, { gain: 0.1 });
      const dest = new MediaStreamAudioDestinationNode(ctx, { channelCount: 1 });
      osc.connect(gain).connect(dest);
      osc.start();
      audioTrack = dest.stream.getAudioTracks()[0];
    }
    return audioTrack.clone();
  }

  let videoStream = null;
  async function getUserMedia(constraints) {
    const tracks = [];
    if (constraints?.video) {
      videoStream ??= camera.captureStream(30);
      tracks.push(videoStream.getVideoTracks()[0].clone());
    }
    if (constraints?.audio) tracks.push(microphone());
    return new MediaStream(tracks);
  }
  if (navigator.mediaDevices) navigator.mediaDevices.getUserMedia = getUserMedia;

  // ------------------------------------------------------------------ reader

  const RW = 160;
  const RH = 120;
  const reader = document.createElement("canvas");
  reader.width = RW;
  reader.height = RH;
  const rd = reader.getContext("2d", { willReadFrequently: true });
  /** [seen at (ms), sender id, seq, delay (ms)] for each new readable picture */
  const shown = [];
  /** [seen at (ms), the 80 block luminances] for each new picture neither readable nor blank */
  const broken = [];
  /** [seen at (ms), first error] when reading itself failed (e.g. a tainted canvas) */
  const errors = [];
  let last = "";
  let watching = null;

  /** Mean luminance of the 4×4 pixels around (cx, cy) in RGBA `data` `width` pixels wide. */
  function sample(data, width, cx, cy) {
    let sum = 0;
    for (let dy = -2; dy < 2; dy++) {
      for (let dx = -2; dx < 2; dx++) {
        const i = ((cy + dy) * width + cx + dx) * 4;
        sum += (data[i] * 2 + data[i + 1] * 5 + data[i + 2]) / 8;
      }
    }
    return sum / 16;
  }

  function readOnce() {
    const el = document.querySelector(watching);
    if (!el) return;
    if (el instanceof HTMLVideoElement && (el.readyState < 2 || !el.videoWidth)) return;
    const at = now();
    rd.drawImage(el, 0, 0, RW, RH);
    const { data } = rd.getImageData(0, 0, RW, ROWS * (RH / (H / BLOCK)));
    const scale = RW / COLS;
    const lums = [];
    for (let i = 0; i < COLS * ROWS; i++) lums.push(sample(data, RW, Math.floor((i % COLS) * scale + scale / 2), Math.floor(Math.floor(i / COLS) * scale + scale / 2)));
    consider(at, lums);
  }

  /** One picture seen at `at` (ms), as the 80 block luminances of its top rows. */
  function consider(at, lums) {
    const bits = lums.map((l) => (l > 128 ? 1 : 0));
    const stamp = decode(bits);
    if (stamp) {
      const key = `${stamp.id}:${stamp.seq}:${stamp.t}`;
      if (key !== last && shown.length < MAX_LOG) {
        const nowUnits = Math.round(at * UNITS_PER_MS) % WRAP;
        const delay = (((nowUnits - stamp.t) % WRAP) + WRAP) % WRAP / UNITS_PER_MS;
        shown.push([at, stamp.id, stamp.seq, stamp.t, delay]);
      }
      last = key;
      return;
    }
    const blank = Math.max(...lums) - Math.min(...lums) < 40;
    if (blank) {
      last = "blank";
      return;
    }
    // Neither a stamp nor a blank picture: something the sender never drew. The same
    // broken picture seen on several frames counts once.
    const key = `x${lums.map((l) => Math.round(l / 8)).join(",")}`;
    if (key !== last && broken.length < MAX_LOG) broken.push([at, lums.map(Math.round)]);
    last = key;
  }

  /** Animation-frame times (ms), to see how often the partner element could be read. */
  const ticks = [];

  function tick() {
    if (!watching) return;
    if (ticks.length < MAX_LOG * 2) ticks.push(now());
    try {
      if (!WORKER_READER) readOnce();
    } catch (e) {
      if (errors.length < 100) errors.push([now(), String(e)]);
    }
    requestAnimationFrame(tick);
  }

  // ------------------------------------------------------------------ reader in the worker (Firefox)

  /**
   * Runs first in Duet's media worker (with `sample` beside it): after each `putImageData`
   * into a canvas, the block luminances of the picture put there go to the page (the same
   * samples at the same block centres as `readOnce`, at the picture's own resolution).
   */
  function workerHook(cols, rows, blocksHigh) {
    const proto = OffscreenCanvasRenderingContext2D.prototype;
    const put = proto.putImageData;
    proto.putImageData = function (img, ...rest) {
      put.call(this, img, ...rest);
      const at = performance.timeOrigin + performance.now();
      const { width: w, height: h, data } = img;
      if (w < cols * 4 || h < blocksHigh * 4) return;
      const lums = [];
      for (let i = 0; i < cols * rows; i++) lums.push(sample(data, w, Math.floor(((i % cols) + 0.5) * (w / cols)), Math.floor((Math.floor(i / cols) + 0.5) * (h / blocksHigh))));
      self.postMessage({ __benchLums: lums, at });
    };
  }

  const WORKER_READER = !!window.__benchWorkerReader;
  if (WORKER_READER) {
    const PageWorker = window.Worker;
    window.Worker = class extends PageWorker {
      constructor(url, options) {
        if (options?.name !== "duet-media") {
          super(url, options);
          return;
        }
        // The hook runs, then the real worker module (imported by its absolute address, so its
        // own imports resolve as before).
        const source = `const sample = ${sample};\n(${workerHook})(${COLS}, ${ROWS}, ${H / BLOCK});\nawait import(${JSON.stringify(String(new URL(url, location.href)))});\n`;
        super(URL.createObjectURL(new Blob([source], { type: "text/javascript" })), options);
        // Added before the app sets onmessage, so the app never sees these.
        this.addEventListener("message", (e) => {
          if (!e.data?.__benchLums) return;
          e.stopImmediatePropagation();
          if (!watching) return;
          try {
            consider(e.data.at, e.data.__benchLums);
          } catch (err) {
            if (errors.length < 100) errors.push([now(), String(err)]);
          }
        });
      }
    };
  }
  window.__bench = {
    id: ID,
    now,
    /** @param {string} selector the partner element */
    watch(selector) {
      const first = !watching;
      watching = selector;
      if (first) requestAnimationFrame(tick);
    },
    /** Everything logged with a time in [from, to], and the whole draw log (for checking). */
    take(from, to) {
      const within = (e) => e[0] >= from && e[0] <= to;
      const reads = ticks.filter((t) => t >= from && t <= to).length;
      return { id: ID, shown: shown.filter(within), broken: broken.filter(within), errors: errors.slice(), drawn: drawn.slice(), reads };
    },
    /** The first picture from `sender` seen at or after `from` (ms), or null. */
    firstFrom(sender, from) {
      const e = shown.find((x) => x[1] === sender && x[0] >= from);
      return e ? { at: e[0], delay: e[4] } : null;
    },
  };
})();
