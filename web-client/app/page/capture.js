// @ts-check
/**
 * @file The camera and microphone, on the page: `getUserMedia`, and the streams of frames
 * and samples the media worker reads, chosen by feature detection (`videoPaths`):
 * - With `MediaStreamTrackProcessor` on the page (Chromium): the processor is made here
 *   (this Chromium cannot transfer a track to a worker) and its `readable` is transferred;
 *   frames then reach the worker without this thread.
 * - With it in the worker only (Safari): a clone of the camera track is transferred and
 *   the worker makes the processor (engine/capture-streams.js). Where the transfer is
 *   refused (`DataCloneError`), the next path is taken.
 * - Otherwise (Firefox): the camera plays in a hidden `<video>` and each new frame
 *   (`requestVideoFrameCallback`) becomes a `VideoFrame` in a stream that is transferred.
 * The microphone goes through the page's processor where there is one, else through an
 * `AudioWorklet` (engine/audio-capture.js) whose port is handed to the worker, so samples
 * never touch this thread.
 */

/**
 * @typedef {object} Capture
 * @property {MediaStream | null} stream
 * @property {MediaStreamTrack | null} video
 * @property {MediaStreamTrack | null} audio
 * @property {string | null} problem what is missing, for a person (null: both work)
 */

/** @param {unknown} e */
function errorName(e) {
  return e instanceof DOMException || e instanceof Error ? e.name : "";
}

/**
 * What to ask the camera for: VGA at up to 30 fps, from the chosen device or facing.
 * @param {{deviceId?: string, facingMode?: string}} [pick]
 * @returns {MediaTrackConstraints}
 */
export function videoConstraints(pick = {}) {
  /** @type {MediaTrackConstraints} */
  const c = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30, max: 30 } };
  if (pick.deviceId) c.deviceId = { exact: pick.deviceId };
  else if (pick.facingMode) c.facingMode = { ideal: pick.facingMode };
  return c;
}

/**
 * @param {{deviceId?: string}} [pick]
 * @returns {MediaTrackConstraints}
 */
export function audioConstraints(pick = {}) {
  /** @type {MediaTrackConstraints} */
  const c = { channelCount: { ideal: 1 }, echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  if (pick.deviceId) c.deviceId = { exact: pick.deviceId };
  return c;
}

/**
 * One track of one kind, or why not (for a person).
 * @param {"video" | "audio"} kind
 * @param {MediaTrackConstraints} constraints
 * @returns {Promise<MediaStreamTrack | string>}
 */
export async function captureTrack(kind, constraints) {
  const what = kind === "video" ? "camera" : "microphone";
  if (!navigator.mediaDevices?.getUserMedia) return `This page cannot use a ${what} here (it needs https or localhost).`;
  try {
    const s = await navigator.mediaDevices.getUserMedia({ [kind]: constraints });
    return s.getTracks()[0] ?? `No ${what} could be used.`;
  } catch (e) {
    const name = errorName(e);
    if (name === "NotAllowedError" || name === "SecurityError") return `The ${what} was refused. Allow it in the browser's site settings to use it.`;
    if (name === "NotReadableError") return `The ${what} is busy (another app may be using it).`;
    return `No ${what} could be used.`;
  }
}

/**
 * Asks for the camera and microphone. Never throws: whatever is refused or missing is
 * described in `problem`, and the call goes on with what there is (text chat at least).
 * @param {{videoDeviceId?: string, audioDeviceId?: string}} [pick]
 * @returns {Promise<Capture>}
 */
export async function captureMedia(pick = {}) {
  if (!navigator.mediaDevices?.getUserMedia) {
    return { stream: null, video: null, audio: null, problem: "This page cannot use a camera here (it needs https or localhost). You can still text chat." };
  }
  const video = videoConstraints({ deviceId: pick.videoDeviceId });
  const audio = audioConstraints({ deviceId: pick.audioDeviceId });
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video, audio });
    return { stream, video: stream.getVideoTracks()[0] ?? null, audio: stream.getAudioTracks()[0] ?? null, problem: null };
  } catch (e) {
    if (errorName(e) === "NotAllowedError" || errorName(e) === "SecurityError") {
      return { stream: null, video: null, audio: null, problem: "Camera and microphone were refused, so your partner won't see or hear you. You can still text chat." };
    }
    // One of the two may be missing or busy: try each alone.
    /** @type {MediaStreamTrack[]} */
    const tracks = [];
    for (const constraints of [{ video }, { audio }]) {
      try {
        const s = await navigator.mediaDevices.getUserMedia(constraints);
        tracks.push(...s.getTracks());
      } catch {
        // Described below by what is missing.
      }
    }
    const v = tracks.find((t) => t.kind === "video") ?? null;
    const a = tracks.find((t) => t.kind === "audio") ?? null;
    const stream = tracks.length ? new MediaStream(tracks) : null;
    const problem = !v && !a
      ? "No camera or microphone could be used. You can still text chat."
      : !v
        ? "No camera could be used, so your partner won't see you."
        : "No microphone could be used, so your partner won't hear you.";
    return { stream, video: v, audio: a, problem };
  }
}

/** @typedef {import("../engine/messages.js").VideoSource} VideoSource */

/**
 * The ways this browser can hand the camera to the worker, best first.
 * @param {{pageProcessor: boolean, workerProcessor: boolean, videoElementFrames: boolean}} can
 * @returns {VideoSource["kind"][]}
 */
export function videoPaths(can) {
  /** @type {VideoSource["kind"][]} */
  const paths = [];
  if (can.pageProcessor) paths.push("processor");
  else if (can.workerProcessor) paths.push("track");
  if (can.videoElementFrames) paths.push("element");
  return paths;
}

/** What this page can do itself (the worker's processor is reported by the worker). */
function pageCan() {
  return {
    pageProcessor: typeof MediaStreamTrackProcessor === "function",
    videoElementFrames: typeof VideoFrame === "function" && typeof HTMLVideoElement.prototype.requestVideoFrameCallback === "function",
  };
}

/**
 * Hands the camera to the worker by the best path that works: `post` sends it (with what
 * to transfer) and throws a `DataCloneError` where a transfer is refused, in which case
 * the next path is tried. With no track, or no path, `post(null, [])`.
 * @param {MediaStreamTrack | null} track
 * @param {boolean} workerProcessor the worker has `MediaStreamTrackProcessor`
 * @param {(video: VideoSource | null, transfer: Transferable[]) => void} post
 * @returns {VideoSource["kind"] | null} the path taken
 */
export function sendCamera(track, workerProcessor, post) {
  if (track) {
    for (const path of videoPaths({ ...pageCan(), workerProcessor })) {
      if (path === "processor") {
        const readable = /** @type {ReadableStream<VideoFrame>} */ (new MediaStreamTrackProcessor({ track, maxBufferSize: 1 }).readable);
        post({ kind: "processor", readable }, [readable]);
        return path;
      }
      if (path === "track") {
        // A clone: the page keeps its own for the preview and to stop the camera.
        const clone = track.clone();
        try {
          post({ kind: "track", track: clone }, [clone]);
          return path;
        } catch (e) {
          clone.stop();
          if (!(e instanceof DOMException && e.name === "DataCloneError")) throw e;
          console.info(`duet: the camera track could not go to the media worker (transfer refused: ${e.message}); reading it on the page instead`);
          continue;
        }
      }
      const readable = videoElementFrames(track);
      post({ kind: "element", readable }, [readable]);
      return path;
    }
  }
  post(null, []);
  return null;
}

/**
 * Frames from a hidden `<video>` playing the camera: one `VideoFrame` per new camera frame,
 * at most one waiting (a newer frame replaces it, as the processor's `maxBufferSize: 1`
 * does). Ends when the track ends or the worker cancels. (In Chromium, whose page always
 * has the processor, this path would starve the camera: a transferred stream clones each
 * frame, and the originals hold camera buffers until collected. Frames posted one by one
 * over a port avoid that, but made Firefox's page hang for a minute in 3 of 9 test runs.)
 * @param {MediaStreamTrack} track
 * @returns {ReadableStream<VideoFrame>}
 */
function videoElementFrames(track) {
  const video = document.createElement("video");
  video.muted = true;
  video.playsInline = true;
  video.srcObject = new MediaStream([track]);
  let done = false;
  /** @type {VideoFrame | null} */
  let waiting = null;
  /** @type {((frame: VideoFrame | null) => void) | null} */
  let wanted = null;
  const stop = () => {
    done = true;
    waiting?.close();
    waiting = null;
    video.srcObject = null;
    wanted?.(null);
  };
  track.addEventListener("ended", stop);
  const onFrame = () => {
    if (done) return;
    if (track.readyState === "ended") {
      stop();
      return;
    }
    let frame = null;
    try {
      frame = new VideoFrame(video, { timestamp: Math.round(performance.now() * 1000) });
    } catch {
      // No picture yet (the element is still starting): wait for the next one.
    }
    if (frame) {
      if (wanted) {
        wanted(frame);
        wanted = null;
      } else {
        waiting?.close();
        waiting = frame;
      }
    }
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  void video.play().catch(() => {});
  return new ReadableStream(
    {
      pull(controller) {
        if (done) {
          controller.close();
          return;
        }
        if (waiting) {
          controller.enqueue(waiting);
          waiting = null;
          return;
        }
        return new Promise((resolve) => {
          wanted = (frame) => {
            if (frame) controller.enqueue(frame);
            else controller.close();
            resolve(undefined);
          };
        });
      },
      cancel: stop,
    },
    { highWaterMark: 0 },
  );
}

/** The capture worklet in use (one microphone at a time), to disconnect when replaced. @type {{source: MediaStreamAudioSourceNode, node: AudioWorkletNode} | null} */
let worklet = null;

/**
 * The microphone's samples for the worker, or null where neither path exists.
 * @param {MediaStreamTrack | null} track
 * @param {AudioContext | null} ctx the page's context (made in the Start click)
 * @returns {Promise<import("../engine/messages.js").AudioSource | null>}
 */
export async function audioSource(track, ctx) {
  if (worklet) {
    worklet.source.disconnect();
    worklet.node.disconnect();
    worklet.node.port.postMessage({ type: "stop" });
    worklet = null;
  }
  if (!track) return null;
  if (typeof MediaStreamTrackProcessor === "function") {
    return { kind: "stream", readable: /** @type {ReadableStream<AudioData>} */ (new MediaStreamTrackProcessor({ track, maxBufferSize: 10 }).readable) };
  }
  if (!ctx?.audioWorklet || typeof AudioData !== "function") return null;
  try {
    await ctx.audioWorklet.addModule(new URL("../engine/audio-capture.js", import.meta.url));
    const source = new MediaStreamAudioSourceNode(ctx, { mediaStream: new MediaStream([track]) });
    const node = new AudioWorkletNode(ctx, "duet-capture", { numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1] });
    // Silent, but connected: a node reaching the destination is sure to be processed.
    source.connect(node).connect(new GainNode(ctx, { gain: 0 })).connect(ctx.destination);
    const channel = new MessageChannel();
    node.port.postMessage({ type: "port", port: channel.port1 }, [channel.port1]);
    worklet = { source, node };
    return { kind: "worklet", port: channel.port2, sampleRate: ctx.sampleRate };
  } catch (e) {
    console.warn("duet: microphone capture unavailable", e);
    return null;
  }
}

/** @param {import("../engine/messages.js").AudioSource | null} source @returns {Transferable[]} what to transfer with it */
export function audioTransfer(source) {
  if (!source) return [];
  return [source.kind === "stream" ? source.readable : source.port];
}

/**
 * The cameras and microphones this browser lists (labels appear once one was allowed).
 * @returns {Promise<{cameras: MediaDeviceInfo[], mics: MediaDeviceInfo[]}>}
 */
export async function listDevices() {
  try {
    const all = (await navigator.mediaDevices?.enumerateDevices?.()) ?? [];
    return { cameras: all.filter((d) => d.kind === "videoinput"), mics: all.filter((d) => d.kind === "audioinput") };
  } catch {
    return { cameras: [], mics: [] };
  }
}
