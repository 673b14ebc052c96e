// @ts-check
/**
 * @file The partner's sound: an AudioContext (made inside the Start click, as browsers
 * require) with the playout worklet (engine/audio-playout.js). The worker feeds the
 * worklet directly through a MessageChannel; this thread only sets it up, holds the
 * person's volume and mute for their partner, measures the level heard, and tells the worker how the audio clock maps to the wall clock (so it knows
 * when a sample is heard, for lip sync).
 */

/**
 * The partner's sound on its way out: the worklet, then the person's volume (`gain`),
 * then a meter (`analyser`) that hears what the person hears. `settledAt`: the context
 * time from which the meter's window holds only sound after the last volume change.
 * @typedef {{ctx: AudioContext, port: MessagePort, gain: GainNode, analyser: AnalyserNode, settledAt: number}} Playout
 */

/** The volume ramp's time constant, seconds: short enough to feel instant, long enough not to click. */
const RAMP_S = 0.015;

/**
 * @returns {Promise<Playout | null>} null without Web Audio or worklets
 * @param {AudioContext | null} ctx
 */
export async function startPlayout(ctx) {
  if (!ctx || !ctx.audioWorklet) return null;
  try {
    await ctx.audioWorklet.addModule(new URL("../engine/audio-playout.js", import.meta.url));
    const node = new AudioWorkletNode(ctx, "duet-playout", { numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1] });
    const gain = new GainNode(ctx, { gain: 1 });
    const analyser = new AnalyserNode(ctx, { fftSize: 2048 });
    node.connect(gain).connect(analyser).connect(ctx.destination);
    const channel = new MessageChannel();
    node.port.postMessage({ type: "port", port: channel.port1 }, [channel.port1]);
    return { ctx, port: channel.port2, gain, analyser, settledAt: 0 };
  } catch (e) {
    console.warn("duet: audio playout unavailable", e);
    return null;
  }
}

/**
 * The partner's volume as the person set it: 0–1, or silence while muted. A short ramp,
 * so a change does not click.
 * @param {Playout} out @param {number} volume @param {boolean} muted
 */
export function setPartnerVolume(out, volume, muted) {
  const target = muted ? 0 : Math.min(1, Math.max(0, volume));
  out.gain.gain.setTargetAtTime(target, out.ctx.currentTime, RAMP_S);
  // Seven time constants (within 0.1 % of the target), then one analyser window.
  out.settledAt = out.ctx.currentTime + 7 * RAMP_S + out.analyser.fftSize / out.ctx.sampleRate;
}

/**
 * The loudest the partner's sound was, as heard (after the volume), over `ms`: the
 * highest RMS of the analyser's window, sampled every 20 ms, from the moment the last
 * volume change has taken effect (its ramp done and the window past it). For tests and a
 * level meter.
 * @param {Playout} out @param {number} ms
 * @returns {Promise<number>}
 */
export async function outputLevel(out, ms) {
  const buf = new Float32Array(out.analyser.fftSize);
  let peak = 0;
  // The audio clock, not a guess: a busy page may see it later than planned, never earlier.
  const settleBy = performance.now() + 2000;
  while (out.ctx.currentTime < out.settledAt && performance.now() < settleBy) await new Promise((resolve) => setTimeout(resolve, 20));
  const end = performance.now() + ms;
  while (performance.now() < end) {
    out.analyser.getFloatTimeDomainData(buf);
    let sum = 0;
    for (const x of buf) sum += x * x;
    peak = Math.max(peak, Math.sqrt(sum / buf.length));
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return peak;
}

/**
 * Firefox answers `outputLatency` and `getOutputTimestamp()` by asking the sound server
 * while its audio graph's lock is held, until it gets a non-zero answer. On PulseAudio that
 * can deadlock the page for good (the sound server's thread holds its own lock while it
 * waits for the graph to render): seen under CPU load with Firefox ESR as a page that never
 * answers again. There, neither is called. No feature test can tell, so the engine's name.
 */
const GECKO = typeof navigator !== "undefined" && /\bFirefox\//.test(navigator.userAgent);

/**
 * Wall-clock ms (since the epoch) at which context time 0 is handed to the audio device:
 * a sample the worklet renders at context time t leaves the page at t × 1000 + this. From
 * `getOutputTimestamp()` (when a context time is heard) less the device's own latency
 * (`baseLatency` + `outputLatency`), so the figure compares with the picture's "handed to
 * the screen", which leaves out the display's latency too. Null while the context has not
 * started playing.
 * @param {AudioContext} ctx
 * @returns {number | null}
 */
export function audioClockOffsetMs(ctx) {
  if (GECKO) {
    // Rendered rather than heard: the device's latency is not known here (see GECKO).
    if (!ctx.currentTime) return null;
    return performance.timeOrigin + performance.now() - ctx.currentTime * 1000 - (ctx.baseLatency || 0) * 1000;
  }
  const ts = typeof ctx.getOutputTimestamp === "function" ? ctx.getOutputTimestamp() : null;
  if (!ts || !ts.contextTime || !ts.performanceTime) return null;
  const deviceMs = ((ctx.baseLatency || 0) + (ctx.outputLatency || 0)) * 1000;
  return performance.timeOrigin + ts.performanceTime - ts.contextTime * 1000 - deviceMs;
}
