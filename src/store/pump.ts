// One verified copy of a blob stream into a local file, shared by the layout and archive
// stores: the stream is read into one buffer while the other is hashed and written.
import { Verifier } from "../digest.ts";
import { describeError, UserError } from "../errors.ts";
import { bufferSizeFor, ChunkReader, reclaim } from "../stream.ts";

/** The largest buffer pump() reads into, in bytes (two are used). */
export const WRITE_BUFFER = 1024 * 1024;

/** Raised by pump() when reading the source failed (as opposed to writing or verifying). */
export class SourceError extends Error {
  constructor(override readonly cause: unknown) {
    super(describeError(cause));
  }
}

/** How pump() writes, and what it allocates. */
export interface PumpOptions {
  /**
   * What is being written, for the error of a failed write (the disk's own error names no
   * file): `layout DIR` or an archive's path.
   */
  into: string;
  /** Write all of `view` at byte `position` of the file; `view` is untouched until then. */
  write(view: Uint8Array<ArrayBuffer>, position: number): Promise<void>;
  /** A buffer of `size` bytes (default: a plain Uint8Array; direct I/O wants it aligned). */
  allocate?(size: number): Uint8Array<ArrayBuffer>;
  /**
   * How many bytes the first read should stop at, given the starting `position` and the
   * buffer `size` (default: `size`): direct I/O reads a short piece first to get aligned.
   */
  firstRead?(position: number, size: number): number;
  /** Called with the verifier's byte count (bytes) after each buffer. */
  onProgress?(bytes: number): void;
}

/**
 * Copy `stream` into a file from byte `verifier.seen` on, feeding every byte to `verifier`.
 * Each buffer is hashed (off the JavaScript thread where OpenSSL is loaded: digest.ts) and
 * written at the same time, while the other buffer fills from the source. When it returns
 * or throws, no write or hash is still using a buffer, and every byte counted by the
 * verifier has been written (or the write's error is what is thrown). A failure to read
 * the source is thrown as a SourceError; an overrun of the descriptor's size as the
 * verifier's DigestMismatchError, before the excess is written; a failed write (a full
 * disk) as a UserError naming `opts.into` and the blob. The caller still awaits
 * `verifier.finish()`.
 */
export async function pump(
  stream: ReadableStream<Uint8Array>,
  verifier: Verifier,
  opts: PumpOptions,
): Promise<void> {
  let position = verifier.seen;
  const reader = new ChunkReader(stream);
  let pending: Promise<void> = Promise.resolve();
  try {
    const size = bufferSizeFor(verifier.size - verifier.seen, WRITE_BUFFER);
    const allocate = opts.allocate ?? ((n: number) => new Uint8Array(n));
    const buffers = [allocate(size), allocate(size)];
    let want = opts.firstRead?.(position, size) ?? size;
    for (let i = 0; !reader.done; i ^= 1) {
      let view: Uint8Array<ArrayBuffer>;
      try {
        view = await reader.readFull(want < size ? buffers[i].subarray(0, want) : buffers[i]);
        want = size;
      } catch (e) {
        throw new SourceError(e);
      }
      buffers[i] = reclaim(view, size);
      if (view.length === 0) break;
      // Hashed (after the other buffer's hash) while the other buffer is still being
      // written; an overrun throws here, before anything of this buffer is written.
      const hashed = verifier.updateAsync(view);
      hashed.catch(() => {}); // observed below
      try {
        await pending; // the other buffer is hashed and written
      } catch (e) {
        await hashed.catch(() => {}); // nothing may still be reading a buffer
        throw e;
      }
      const at = position;
      const written = Promise.resolve().then(() => opts.write(view, at)).catch((e) => {
        throw e instanceof UserError
          ? e
          : new UserError(`${opts.into}: writing ${verifier.expected}: ${describeError(e)}`);
      });
      pending = bothDone(written, hashed);
      pending.catch(() => {}); // observed below
      position += view.length;
      opts.onProgress?.(verifier.seen);
    }
    await pending;
  } catch (e) {
    await reader.cancel();
    await pending; // a write error wins over the read error
    throw e;
  } finally {
    reader.release();
  }
}

/**
 * Resolves once both the write and the hash of one buffer have finished (neither may still
 * be using it); rejects with the write's error if it failed, else with the hash's.
 */
async function bothDone(written: Promise<void>, hashed: Promise<void>): Promise<void> {
  const [w, h] = await Promise.allSettled([written, hashed]);
  if (w.status === "rejected") throw w.reason;
  if (h.status === "rejected") throw h.reason;
}
