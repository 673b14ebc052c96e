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
 * Asks for the camera and microphone. Never throws: whatever is refused or missing is
 * described in `problem`, and the call goes on with what there is (text chat at least).
 * @returns {Promise<Capture>}
 */
export async function captureMedia() {
  if (!navigator.mediaDevices?.getUserMedia) {
    return { stream: null, video: null, audio: null, problem: "This page cannot use a camera here (it needs https or localhost). You can still text chat." };
  }
  const video = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30, max: 30 } };
  const audio = { channelCount: { ideal: 1 }, echoCancellation: true, noiseSuppression: true, autoGainControl: true };
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
  if (typeof MediaStreamTrackProcessor !== "function") return { video: null, audio: null };
  const video = capture.video ? /** @type {ReadableStream<VideoFrame>} */ (new MediaStreamTrackProcessor({ track: capture.video, maxBufferSize: 1 }).readable) : null;
  const audio = capture.audio ? /** @type {ReadableStream<AudioData>} */ (new MediaStreamTrackProcessor({ track: capture.audio, maxBufferSize: 10 }).readable) : null;
  return { video, audio };
}
