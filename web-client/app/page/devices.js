// @ts-check
/**
 * @file The person's camera and microphone during a call: the Camera and Microphone
 * toggles, the device pickers, "Switch camera" (front and back on a phone) and
 * "Use microphone only" for someone who refused the camera. Turning the camera off stops
 * its track, so the camera's light goes out; turning it on asks for it again. Each new
 * track goes to the media worker as a fresh stream, and the worker swaps only that sender.
 */

import { audioConstraints, audioSource, audioTransfer, captureTrack, listDevices, sendCamera, videoConstraints } from "./capture.js";
import { encoderChoices } from "./codecs.js";
import { state, ui } from "./state.js";
import { mediaProblem, setToggle, show } from "./view.js";

/** @param {MediaStreamTrack | null} video shows the preview of this camera, or hides it */
function preview(video) {
  ui.selfView.srcObject = video ? new MediaStream([video]) : null;
  show(ui.selfView, !!video);
}

/** @param {MediaStreamTrack | null} video a new camera track (or none) for the worker */
async function sendVideo(video) {
  const engine = state.engine;
  if (!engine) return;
  const workerProcessor = await engine.workerTrackProcessor;
  sendCamera(video, workerProcessor, (source, transfer) => engine.post({ type: "video", video: source, encoders: encoderChoices(state.probes, state.failed) }, transfer));
}

/** @param {MediaStreamTrack | null} audio a new microphone track (or none) for the worker */
async function sendAudio(audio) {
  const source = await audioSource(audio, state.audioCtx);
  state.engine?.post({ type: "audio", audio: source }, audioTransfer(source));
}

/**
 * Camera on or off. Off stops the track; on asks for the chosen camera again, and says
 * why if it cannot be had (the toggle then stays off).
 * @param {boolean} on
 */
export async function setCamera(on) {
  const capture = state.capture;
  if (!capture || state.textOnly) return;
  if (!on) {
    capture.video?.stop();
    capture.video = null;
    void sendVideo(null);
    preview(null);
    setToggle(ui.camera, false);
    return;
  }
  if (capture.video) return;
  setToggle(ui.camera, true);
  const track = await captureTrack("video", videoConstraints({ deviceId: state.cameraDeviceId }));
  if (typeof track === "string") {
    setToggle(ui.camera, false);
    mediaProblem(track);
    return;
  }
  // Turned off again, or the call ended, while the camera was being asked for.
  if (state.capture !== capture || ui.camera.getAttribute("aria-pressed") !== "true") {
    track.stop();
    return;
  }
  capture.video = track;
  void sendVideo(track);
  preview(track);
  void fillPickers();
}

/** Microphone on or off: the track stays (no new prompt), and the worker stops sending. @param {boolean} on */
export function setMic(on) {
  if (!state.capture?.audio) return;
  state.capture.audio.enabled = on;
  state.engine?.post({ type: "mic", on });
  setToggle(ui.mic, on);
}

/**
 * Another camera (from the picker or "Switch camera"): the old track stops once the new
 * one is live, so the partner sees no gap longer than the new camera's start.
 * @param {{deviceId?: string, facingMode?: string}} pick
 */
async function useCamera(pick) {
  const capture = state.capture;
  if (!capture) return;
  if (pick.deviceId !== undefined) state.cameraDeviceId = pick.deviceId;
  if (!capture.video) return; // camera off: the choice applies when it is turned on
  const track = await captureTrack("video", videoConstraints(pick));
  if (typeof track === "string") {
    mediaProblem(track);
    return;
  }
  if (state.capture !== capture || !capture.video) {
    track.stop();
    return;
  }
  const old = capture.video;
  capture.video = track;
  void sendVideo(track);
  preview(track);
  old.stop();
  state.cameraDeviceId = track.getSettings().deviceId ?? state.cameraDeviceId;
  void fillPickers();
}

/** @param {string} deviceId another microphone; the mute state carries over */
async function useMic(deviceId) {
  const capture = state.capture;
  state.micDeviceId = deviceId;
  if (!capture?.audio) return;
  const track = await captureTrack("audio", audioConstraints({ deviceId }));
  if (typeof track === "string") {
    mediaProblem(track);
    return;
  }
  if (state.capture !== capture || !capture.audio) {
    track.stop();
    return;
  }
  const old = capture.audio;
  track.enabled = old.enabled;
  capture.audio = track;
  await sendAudio(track);
  old.stop();
  if (!track.enabled) state.engine?.post({ type: "mic", on: false });
  void fillPickers();
}

/** For someone with no camera (refused or missing) and no microphone yet: ask for the microphone alone. */
async function microphoneOnly() {
  const capture = state.capture;
  if (!capture || capture.audio) return;
  const track = await captureTrack("audio", audioConstraints({ deviceId: state.micDeviceId }));
  if (typeof track === "string") {
    mediaProblem(track);
    return;
  }
  if (state.capture !== capture) {
    track.stop();
    return;
  }
  capture.audio = track;
  await sendAudio(track);
  ui.mic.disabled = false;
  setToggle(ui.mic, true);
  show(ui.micOnly, false);
  mediaProblem("Microphone only: your partner hears you but doesn't see you.");
  void fillPickers();
}

/** @param {HTMLSelectElement} select @param {MediaDeviceInfo[]} devices @param {string} current @param {string} noun */
function fill(select, devices, current, noun) {
  select.replaceChildren(
    ...devices.map((d, i) => {
      const o = document.createElement("option");
      o.value = d.deviceId;
      o.textContent = d.label || `${noun} ${i + 1}`;
      o.selected = d.deviceId === current;
      return o;
    }),
  );
  select.disabled = devices.length < 2;
}

/** The pickers list what there is now, with the devices in use selected. */
export async function fillPickers() {
  const { cameras, mics } = await listDevices();
  const capture = state.capture;
  const camNow = capture?.video?.getSettings().deviceId ?? state.cameraDeviceId;
  const micNow = capture?.audio?.getSettings().deviceId ?? state.micDeviceId;
  fill(ui.cameraDevice, cameras, camNow, "Camera");
  fill(ui.micDevice, mics, micNow, "Microphone");
  show(ui.switchCamera, cameras.length > 1 && !!capture?.video);
  show(ui.micOnly, !!capture && !capture.audio && !capture.video && !state.textOnly);
}

/** The controls' wiring, once. */
export function wireDevices() {
  ui.camera.addEventListener("click", () => void setCamera(ui.camera.getAttribute("aria-pressed") !== "true"));
  ui.mic.addEventListener("click", () => setMic(ui.mic.getAttribute("aria-pressed") !== "true"));
  ui.cameraDevice.addEventListener("change", () => void useCamera({ deviceId: ui.cameraDevice.value }));
  ui.micDevice.addEventListener("change", () => void useMic(ui.micDevice.value));
  ui.switchCamera.addEventListener("click", () => {
    // A phone's front and back: the other facing; elsewhere, the next camera in the list.
    const facing = state.capture?.video?.getSettings().facingMode;
    if (facing === "user" || facing === "environment") {
      void useCamera({ facingMode: facing === "user" ? "environment" : "user" });
      return;
    }
    const options = [...ui.cameraDevice.options];
    const i = options.findIndex((o) => o.selected);
    const next = options[(i + 1) % options.length];
    if (next) void useCamera({ deviceId: next.value });
  });
  ui.micOnly.addEventListener("click", () => void microphoneOnly());
  navigator.mediaDevices?.addEventListener?.("devicechange", () => void fillPickers());
}
