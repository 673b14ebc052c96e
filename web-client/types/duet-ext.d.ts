/**
 * Browser APIs Duet uses that TypeScript's DOM library does not describe yet (they ship in
 * Chromium but not yet in two engines): MediaStreamTrackProcessor (mediacapture-transform)
 * and WebTransport.getStats().
 */

interface MediaStreamTrackProcessorInit {
  track: MediaStreamTrack;
  maxBufferSize?: number;
}

declare class MediaStreamTrackProcessor<T = VideoFrame | AudioData> {
  constructor(init: MediaStreamTrackProcessorInit);
  readonly readable: ReadableStream<T>;
}

interface WebTransportStats {
  smoothedRtt?: number;
  minRtt?: number;
  estimatedSendRate?: number | null;
}

interface WebTransport {
  getStats?(): Promise<WebTransportStats>;
}

interface Window {
  duet?: unknown;
}
