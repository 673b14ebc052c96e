// @ts-check
/**
 * @file The partner's sound: an AudioContext (made inside the Start click, as browsers
 * require) with the playout worklet (engine/audio-playout.js). The worker feeds the
 * worklet directly through a MessageChannel; this thread only sets it up and holds the
 * volume.
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
