// @ts-check
/**
 * @file How the camera reaches the media worker: the path chosen for what the browser has
 * (page/capture.js `videoPaths`, `sendCamera`), and the worker reading a transferred track
 * with its own processor (engine/capture-streams.js `videoStream`), as Safari does. Node
 * has neither tracks nor processors, so small fakes stand in for them.
 */

import assert from "node:assert/strict";
import test from "node:test";
import { sendCamera, videoPaths } from "../app/page/capture.js";
import { videoStream } from "../app/engine/capture-streams.js";

/** A camera track: counts clones and stops. */
class FakeTrack {
  constructor() {
    this.stopped = false;
    /** @type {FakeTrack[]} */
    this.clones = [];
  }
  clone() {
    const c = new FakeTrack();
    this.clones.push(c);
    return c;
  }
  stop() {
    this.stopped = true;
  }
}

const asTrack = (/** @type {FakeTrack} */ t) => /** @type {MediaStreamTrack} */ (/** @type {unknown} */ (t));

test("each browser's way to the worker, best first", () => {
  const chromium = { pageProcessor: true, workerProcessor: true, videoElementFrames: true };
  const safari = { pageProcessor: false, workerProcessor: true, videoElementFrames: true };
  const firefox = { pageProcessor: false, workerProcessor: false, videoElementFrames: true };
  assert.deepEqual(videoPaths(chromium), ["processor", "element"]);
  assert.deepEqual(videoPaths(safari), ["track", "element"]);
  assert.deepEqual(videoPaths(firefox), ["element"]);
  assert.deepEqual(videoPaths({ pageProcessor: false, workerProcessor: false, videoElementFrames: false }), []);
});

test("where the worker has a processor, a clone of the camera track is transferred and the page keeps its own", () => {
  const camera = new FakeTrack();
  /** @type {{video: any, transfer: Transferable[]}[]} */
  const posted = [];
  const path = sendCamera(asTrack(camera), true, (video, transfer) => posted.push({ video, transfer }));
  assert.equal(path, "track");
  assert.equal(posted.length, 1);
  assert.equal(posted[0].video.kind, "track");
  assert.equal(posted[0].video.track, camera.clones[0]);
  assert.deepEqual(posted[0].transfer, [camera.clones[0]]);
  assert.equal(camera.stopped, false, "the preview's track stays live");
});

test("a refused transfer stops the clone and goes on to the next path (here none: nothing is sent, and the page is told)", () => {
  const camera = new FakeTrack();
  /** @type {any[]} */
  const posted = [];
  const path = sendCamera(asTrack(camera), true, (video) => {
    if (video?.kind === "track") throw new DOMException("MediaStreamTrack could not be serialized.", "DataCloneError");
    posted.push(video);
  });
  assert.equal(path, null);
  assert.deepEqual(posted, [null]);
  assert.equal(camera.clones[0].stopped, true);
  assert.equal(camera.stopped, false);
});

test("another failure while posting is not mistaken for a refused transfer", () => {
  const camera = new FakeTrack();
  assert.throws(
    () =>
      sendCamera(asTrack(camera), true, () => {
        throw new TypeError("worker gone");
      }),
    TypeError,
  );
  assert.equal(camera.clones[0].stopped, true);
});

test("no camera: the worker is told there is none", () => {
  /** @type {any[]} */
  const posted = [];
  assert.equal(
    sendCamera(null, true, (video, transfer) => posted.push([video, transfer])),
    null,
  );
  assert.deepEqual(posted, [[null, []]]);
});

/** A worker-side processor over a list of frames. */
function installProcessor(/** @type {{closed: boolean}[]} */ frames) {
  /** @type {any} */ (globalThis).MediaStreamTrackProcessor = class {
    /** @param {{track: unknown, maxBufferSize?: number}} init */
    constructor(init) {
      this.init = init;
      let i = 0;
      this.readable = new ReadableStream({
        pull(controller) {
          if (i < frames.length) controller.enqueue(frames[i++]);
          else controller.close();
        },
      });
    }
  };
  return () => delete (/** @type {any} */ (globalThis).MediaStreamTrackProcessor);
}

test("the worker reads a transferred track with its own processor and stops the track at the camera's end", async () => {
  const frames = [{ closed: false }, { closed: false }];
  const uninstall = installProcessor(frames);
  try {
    const track = new FakeTrack();
    const reader = videoStream({ kind: "track", track: asTrack(track) }).getReader();
    assert.equal((await reader.read()).value, frames[0]);
    assert.equal((await reader.read()).value, frames[1]);
    assert.equal(track.stopped, false);
    assert.equal((await reader.read()).done, true);
    assert.equal(track.stopped, true);
  } finally {
    uninstall();
  }
});

test("a sender that stops reading stops the worker's track (the camera light goes out once the page stops its own)", async () => {
  const uninstall = installProcessor([{ closed: false }, { closed: false }, { closed: false }]);
  try {
    const track = new FakeTrack();
    const reader = videoStream({ kind: "track", track: asTrack(track) }).getReader();
    await reader.read();
    await reader.cancel();
    assert.equal(track.stopped, true);
  } finally {
    uninstall();
  }
});

test("a worker without a processor stops the track it was sent and says why", () => {
  const track = new FakeTrack();
  assert.throws(() => videoStream({ kind: "track", track: asTrack(track) }), ReferenceError);
  assert.equal(track.stopped, true);
});

test("a stream the page made is read as it is", () => {
  for (const kind of /** @type {const} */ (["processor", "element"])) {
    const readable = new ReadableStream();
    assert.equal(videoStream({ kind, readable }), readable);
  }
});
