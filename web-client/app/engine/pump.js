// @ts-check
/**
 * @file Reads a capture stream (the page's `MediaStreamTrackProcessor.readable`,
 * transferred to the worker) item by item, always closing each item after handling it: an
 * unclosed VideoFrame or AudioData stalls the camera or microphone.
 */

/**
 * @template {{ close(): void }} T
 * @param {ReadableStream<T>} readable
 * @param {{ stopped: boolean, reader?: ReadableStreamDefaultReader<T>, fail(e: unknown): void }} owner
 * @param {(item: T) => void} handle
 */
export async function pump(readable, owner, handle) {
  const reader = readable.getReader();
  owner.reader = reader;
  while (!owner.stopped) {
    let result;
    try {
      result = await reader.read();
    } catch {
      return;
    }
    if (result.done) return;
    const item = result.value;
    try {
      handle(item);
    } catch (e) {
      owner.fail(e);
    } finally {
      item.close();
    }
  }
}
