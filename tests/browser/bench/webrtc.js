// @ts-nocheck
/**
 * @file One page of a WebRTC random chat, as fair as we can make it for the benchmark:
 * the page's camera (the stamped canvas from camera.js) goes out on a fresh
 * RTCPeerConnection per partner — VP8 only, at most 1 Mbit/s and 30 fps, relay-only ICE
 * through the TURN server the script names — and the partner's picture plays in
 * `video#partner`. Signalling (offer, answer, trickled candidates) goes through the
 * benchmark script: the page calls `window.benchSignal(msg)` (a Playwright binding) and the
 * script delivers the partner's messages with `rtc.onSignal(msg)`.
 */
(() => {
  const video = document.getElementById("partner");
  let pc = null;
  let callId = 0;
  let stream = null;
  /** Candidates that arrived before the remote description. Bounded by what a call gathers. */
  let pending = [];
  const MAX_PENDING = 64;

  async function camera() {
    if (!stream) {
      stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480, frameRate: 30 }, audio: true });
      const self = document.getElementById("self");
      self.srcObject = new MediaStream(stream.getVideoTracks());
    }
    return stream;
  }

  /**
   * Opens a fresh peer connection for call `id` (the media is already captured); the
   * offerer adds its tracks now, the answerer when the offer arrives.
   */
  async function open(id, turn, offerer) {
    close();
    callId = id;
    const s = await camera();
    pc = new RTCPeerConnection({
      iceServers: [{ urls: turn.urls, username: turn.username, credential: turn.credential }],
      iceTransportPolicy: "relay",
      bundlePolicy: "max-bundle",
      rtcpMuxPolicy: "require",
    });
    const mine = pc;
    pc.onicecandidate = (e) => {
      if (e.candidate && mine === pc) window.benchSignal({ call: id, candidate: e.candidate.toJSON() });
    };
    pc.ontrack = (e) => {
      if (e.track.kind === "video" && mine === pc) video.srcObject = e.streams[0] ?? new MediaStream([e.track]);
    };
    if (offerer) {
      pc.addTransceiver(s.getVideoTracks()[0], { direction: "sendrecv", streams: [s] });
      pc.addTransceiver(s.getAudioTracks()[0], { direction: "sendrecv", streams: [s] });
      await tune();
    }
  }

  /**
   * VP8 only, 1 Mbit/s and 30 fps at most on the video sender. The answerer calls it after
   * the offer, once its transceivers exist (and gives them its tracks first).
   */
  async function tune() {
    for (const t of pc.getTransceivers()) {
      const kind = t.receiver.track.kind;
      if (!t.sender.track) {
        await t.sender.replaceTrack(kind === "video" ? stream.getVideoTracks()[0] : stream.getAudioTracks()[0]);
        t.sender.setStreams(stream);
        t.direction = "sendrecv";
      }
      if (kind !== "video") continue;
      t.setCodecPreferences(RTCRtpReceiver.getCapabilities("video").codecs.filter((c) => /vp8|rtx/i.test(c.mimeType)));
      const params = t.sender.getParameters();
      params.encodings = params.encodings?.length ? params.encodings : [{}];
      params.encodings[0].maxBitrate = 1_000_000;
      params.encodings[0].maxFramerate = 30;
      await t.sender.setParameters(params);
    }
  }

  async function offer() {
    const mine = pc;
    await pc.setLocalDescription(await pc.createOffer());
    if (mine === pc) window.benchSignal({ call: callId, sdp: pc.localDescription.toJSON() });
  }

  async function onSignal(msg) {
    if (!pc || msg.call !== callId) return; // a message of an earlier call
    const mine = pc;
    if (msg.sdp) {
      await pc.setRemoteDescription(msg.sdp);
      for (const c of pending) await pc.addIceCandidate(c);
      pending = [];
      if (msg.sdp.type === "offer" && mine === pc) {
        await tune();
        await pc.setLocalDescription(await pc.createAnswer());
        window.benchSignal({ call: callId, sdp: pc.localDescription.toJSON() });
      }
    } else if (msg.candidate) {
      if (pc.remoteDescription) await pc.addIceCandidate(msg.candidate);
      else if (pending.length < MAX_PENDING) pending.push(msg.candidate);
    }
  }

  function close() {
    pc?.close();
    pc = null;
    pending = [];
    video.srcObject = null;
  }

  /** What the call is made of: the candidate pair in use and the video sender's state. */
  async function describe() {
    if (!pc) return null;
    const report = await pc.getStats();
    const byId = new Map();
    report.forEach((r) => byId.set(r.id, r));
    let pair = null;
    let out = null;
    report.forEach((r) => {
      if (r.type === "transport" && r.selectedCandidatePairId) pair = byId.get(r.selectedCandidatePairId);
      if (r.type === "outbound-rtp" && r.kind === "video") out = r;
    });
    const local = pair ? byId.get(pair.localCandidateId) : null;
    const remote = pair ? byId.get(pair.remoteCandidateId) : null;
    return {
      connectionState: pc.connectionState,
      iceGatheringState: pc.iceGatheringState,
      localCandidate: local ? `${local.candidateType} ${local.address}:${local.port}` : null,
      remoteCandidate: remote ? `${remote.candidateType} ${remote.address}:${remote.port}` : null,
      codec: out?.codecId ? byId.get(out.codecId)?.mimeType ?? null : null,
      frameWidth: out?.frameWidth ?? null,
      frameHeight: out?.frameHeight ?? null,
      framesPerSecond: out?.framesPerSecond ?? null,
      qualityLimitationReason: out?.qualityLimitationReason ?? null,
    };
  }

  window.rtc = { camera, open, offer, onSignal, close, describe };
})();
