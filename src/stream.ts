// Reading streams in large pieces with as little garbage as possible.
//
// Deno's file and fetch body streams are byte streams, so a BYOB reader can fill buffers we
// own instead of allocating a new chunk per read. Blob transfers read through ChunkReader into
// a few reusable multi-MiB buffers; memory stays flat whatever the blob size, and the hot path
// has one await per buffer rather than one per 64 KiB chunk.

/** Fills caller-owned buffers from a stream; works with byte streams (BYOB) and plain ones. */
export class ChunkReader {
  #byob?: ReadableStreamBYOBReader;
  #plain?: ReadableStreamDefaultReader<Uint8Array>;
  #leftover?: Uint8Array;
  #done = false;
  /** A plain stream failed after some bytes of a readFull: thrown by the next call. */
  #failure?: { error: unknown };

  constructor(stream: ReadableStream<Uint8Array>) {
    try {
      this.#byob = stream.getReader({ mode: "byob" });
    } catch {
      this.#plain = stream.getReader();
    }
  }

  /**
   * Read until `buf` is full (or holds at least `min` bytes, when given) or the stream ends.
   * Returns the filled part. With a BYOB reader
   * the buffer's memory is transferred, so `buf` must not be used afterwards: the returned
   * view (and `new Uint8Array(view.buffer, view.byteOffset, buf.length)`) is the buffer now.
   * A result shorter than `buf` (and than `min`) means the stream has ended, or (a plain
   * stream) failed after those bytes: then the next call throws. A byte stream's failure loses the bytes of the
   * unfinished call (the failed read keeps the memory).
   */
  async readFull(
    buf: Uint8Array<ArrayBuffer>,
    min = buf.byteLength,
  ): Promise<Uint8Array<ArrayBuffer>> {
    if (this.#failure) throw this.#failure.error;
    const cap = buf.byteLength;
    const enough = Math.min(cap, Math.max(1, min));
    let fill = 0;
    if (this.#byob) {
      let memory = buf.buffer as ArrayBuffer;
      const base = buf.byteOffset;
      const total = memory.byteLength; // a caller may reclaim more than this call fills
      while (fill < enough && !this.#done) {
        const { done, value } = await this.#byob.read(
          new Uint8Array(memory, base + fill, cap - fill),
        );
        if (value) memory = value.buffer as ArrayBuffer;
        else memory = new ArrayBuffer(total); // cancelled: the old memory is gone
        if (done) {
          this.#done = true;
          break;
        }
        fill += value!.byteLength;
      }
      return new Uint8Array(memory, base, fill);
    }
    while (fill < enough) {
      let chunk = this.#leftover;
      this.#leftover = undefined;
      if (!chunk) {
        if (this.#done) break;
        let result: ReadableStreamReadResult<Uint8Array>;
        try {
          result = await this.#plain!.read();
        } catch (e) {
          if (fill === 0) throw e;
          // Keep what arrived before the failure (a resume starts after it); report the
          // failure on the next call.
          this.#failure = { error: e };
          break;
        }
        const { done, value } = result;
        if (done) {
          this.#done = true;
          break;
        }
        chunk = value;
      }
      const n = Math.min(chunk.byteLength, cap - fill);
      buf.set(chunk.subarray(0, n), fill);
      fill += n;
      if (n < chunk.byteLength) this.#leftover = chunk.subarray(n);
    }
    return buf.subarray(0, fill);
  }

  /** True once the stream has reported its end. */
  get done(): boolean {
    return this.#done && !this.#leftover;
  }

  async cancel(reason?: unknown): Promise<void> {
    await (this.#byob ?? this.#plain)!.cancel(reason).catch(() => {});
  }

  release(): void {
    try {
      (this.#byob ?? this.#plain)!.releaseLock();
    } catch {
      // a pending read keeps the lock; the stream is cancelled anyway
    }
  }
}

/**
 * The size of the buffer to stream `remaining` bytes through: `max`, or less for a small
 * blob (a copy of many small blobs then allocates little). One more than `remaining`, so
 * that a full buffer at the end means the source is longer than it should be.
 */
export function bufferSizeFor(remaining: number, max: number): number {
  return Math.max(4096, Math.min(max, remaining + 1));
}

/** The full-capacity buffer behind a view returned by readFull. */
export function reclaim(view: Uint8Array, capacity: number): Uint8Array<ArrayBuffer> {
  return new Uint8Array(view.buffer as ArrayBuffer, view.byteOffset, capacity);
}

/**
 * At most `size` + 1 bytes of `stream`, read to its end or until there are more than
 * `size` (the caller tells too much by the length); the stream is cancelled after.
 */
export async function readCapped(
  stream: ReadableStream<Uint8Array>,
  size: number,
): Promise<Uint8Array> {
  const out = new Uint8Array(size + 1);
  let n = 0;
  const reader = stream.getReader();
  try {
    while (n <= size) {
      const { done, value } = await reader.read();
      if (done) break;
      const take = Math.min(value.length, out.length - n);
      out.set(value.subarray(0, take), n);
      n += take;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  return out.subarray(0, n);
}
