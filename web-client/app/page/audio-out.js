// @ts-check
/**
 * @file The partner's sound: an AudioContext (made inside the Start click, as browsers
 * require) with the playout worklet (engine/audio-playout.js). The worker feeds the
 * worklet directly through a MessageChannel; this thread only sets it up and holds the
 * volume, and tells the worker how the audio clock maps to the wall clock (so it knows
 * when a sample is heard, for lip sync).
 */

/**
 * @returns {Promise<{ctx: AudioContext, port: MessagePort} | null>} null without Web Audio or worklets
 * @param {AudioContext | null} ctx
 */
export async function startPlayout(ctx) {
  if (!ctx || !ctx.audioWorklet) return null;
  try {
    await ctx.audioWorklet.addModule(new URL("../engine/audio-playout.js", import.meta.url));
    const node = new AudioWorkletNode(ctx, "duet-playout", { numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1] });
    node.connect(ctx.destination);
    const channel = new MessageChannel();
    node.port.postMessage({ type: "port", port: channel.port1 }, [channel.port1]);
    return { ctx, port: channel.port2 };
  } catch (e) {
    console.warn("duet: audio playout unavailable", e);
    return null;
  }
}

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
  const ts = typeof ctx.getOutputTimestamp === "function" ? ctx.getOutputTimestamp() : null;
  if (!ts || !ts.contextTime || !ts.performanceTime) return null;
  const deviceMs = ((ctx.baseLatency || 0) + (ctx.outputLatency || 0)) * 1000;
  return performance.timeOrigin + ts.performanceTime - ts.contextTime * 1000 - deviceMs;
}
