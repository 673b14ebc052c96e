// @ts-check
/**
 * @file The messages between the page and its media worker: few, small, and never
 * pixels or samples. The page sends commands; the worker sends what the relay said
 * (control messages, chat lines, the session closing), media events the interface shows
 * (first partner frame, a codec that failed, a problem to tell the person, the pairing's
 * keys agreed with the safety code to show beside the partner's name, or why they could
 * not be) and, on request, a snapshot of its counters.
 *
 * The worker owns the whole session with the relay (control, chat and media, over
 * WebTransport or the WebSocket fallback; `connected` says which), so media keeps flowing
 * while the page's main thread is busy.
 */

/** @typedef {import("../wire/protocol.js").ClientMsg} ClientMsg */
/** @typedef {import("../wire/protocol.js").ServerMsg} ServerMsg */
/** @typedef {import("../wire/protocol.js").Hello} Hello */
/** @typedef {import("../wire/protocol.js").VideoCodec} VideoCodec */

/**
 * Where the worker shows the partner's video: the writable end of a video track the page
 * shows in its `<video>`, or (no track generator in this browser) a canvas.
 * @typedef {{kind: "track", writable: WritableStream<VideoFrame>} | {kind: "canvas", canvas: OffscreenCanvas}} DisplayTarget
 */

/**
 * Where the worker reads the microphone: a `MediaStreamTrackProcessor`'s stream (Chromium),
 * or the port of the page's capture worklet (engine/audio-capture.js), which posts 20 ms
 * blocks of samples at `sampleRate` (Firefox).
 * @typedef {{kind: "stream", readable: ReadableStream<AudioData>} | {kind: "worklet", port: MessagePort, sampleRate: number}} AudioSource
 */

/**
 * Where the worker reads the camera: a stream of frames the page made (with the page's
 * `MediaStreamTrackProcessor` in Chromium, `processor`; from a hidden `<video>` in Firefox,
 * `element`), or the camera track itself, transferred, for the worker's own processor
 * (Safari, which has `MediaStreamTrackProcessor` in workers only). The worker stops a
 * transferred track when it is done with it.
 * @typedef {{kind: "processor" | "element", readable: ReadableStream<VideoFrame>} | {kind: "track", track: MediaStreamTrack}} VideoSource
 */

/**
 * Page → worker.
 * @typedef {{type: "init", display: DisplayTarget, playout: MessagePort | null}
 *   | {type: "capture", video: VideoSource | null, audio: AudioSource | null, encoders: import("./video-send.js").EncoderChoice[]}
 *   | {type: "video", video: VideoSource | null, encoders: import("./video-send.js").EncoderChoice[]}
 *   | {type: "audio", audio: AudioSource | null}
 *   | {type: "stopCapture"}
 *   | {type: "connect", hello: Hello, base: string, webTransport: boolean}
 *   | {type: "send", msg: ClientMsg}
 *   | {type: "chat", id: number, text: string}
 *   | {type: "close", reason: string}
 *   | {type: "unpair", matchId: bigint}
 *   | {type: "camera", on: boolean}
 *   | {type: "mic", on: boolean}
 *   | {type: "audioClock", offsetMs: number}
 *   | {type: "snapshot", id: number}
 *   | {type: "clearLatencies"}
 *   | {type: "inspect", on: boolean}} ToWorker
 */

/**
 * Worker → page. `caps` comes first, once: what the worker can do that the page cannot see.
 * @typedef {{type: "caps", trackProcessor: boolean}
 *   | {type: "server", msg: ServerMsg}
 *   | {type: "chatLine", matchId: bigint, text: string}
 *   | {type: "connected", maxDatagramSize: number, transport: import("./transport.js").TransportName}
 *   | {type: "connectFailed", message: string}
 *   | {type: "closed", info: import("./session.js").CloseInfo}
 *   | {type: "chatResult", id: number, error: string | null}
 *   | {type: "partnerVideo", matchId: bigint}
 *   | {type: "e2ee", matchId: bigint, safetyCode: import("../wire/e2ee.js").SafetyCode | null}
 *   | {type: "e2eeProblem", matchId: bigint, text: string}
 *   | {type: "codecFailed", family: VideoCodec}
 *   | {type: "problem", text: string}
 *   | {type: "snapshot", id: number, data: any}} FromWorker
 */

export {};
