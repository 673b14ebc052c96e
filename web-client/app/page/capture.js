// @ts-check
/**
 * @file The camera and microphone, on the page: `getUserMedia`, and the streams of frames
 * and samples the media worker reads. This Chromium cannot transfer a MediaStreamTrack to
 * a worker, and has no `MediaStreamTrackProcessor` in workers, so the processor is made
 * here and its `readable` is transferred (Chromium then delivers frames to the worker
 * directly, not through this thread). Feature-detected: where tracks do transfer, the
 * worker could take the track itself; see `transferStreams`.
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

/**
 * The streams the worker reads: one per track, from a `MediaStreamTrackProcessor` (null
 * where the browser has none: that side sends nothing). A processor holds at most one
 * frame: an older one waiting is dropped, never queued.
 * @param {Capture} capture
 * @returns {{video: ReadableStream<VideoFrame> | null, audio: ReadableStream<AudioData> | null}}
 */
export function transferStreams(capture) {
  return { video: trackReadable(capture.video), audio: trackReadable(capture.audio) };
}

/**
 * @template {MediaStreamTrack | null} T
 * @param {T} track
 * @returns {any} a ReadableStream of VideoFrame (video) or AudioData (audio), or null
 */
export function trackReadable(track) {
  if (!track || typeof MediaStreamTrackProcessor !== "function") return null;
  return new MediaStreamTrackProcessor({ track, maxBufferSize: track.kind === "video" ? 1 : 10 }).readable;
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
