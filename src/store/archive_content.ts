// Reading member data out of an archive file: by offset from a plain tar, and in sequential
// passes from a gzip-compressed one (which cannot seek).
import { describeError, UserError } from "../errors.ts";
import { TarFormatError, TarHeaderReader, type TarMember } from "./tar.ts";

/** Where a member's bytes come from. */
export interface ArchiveContent {
  /** `size` bytes of data from uncompressed offset `offset` on, as a stream. */
  stream(offset: number, size: number): ReadableStream<Uint8Array>;
  /** The same, read whole into memory (small members: manifests, index.json). */
  bytes(offset: number, size: number): Promise<Uint8Array>;
}

/** Read exactly `length` bytes at `offset` (fewer only at the end of the file). */
export async function readAt(
  file: Deno.FsFile,
  offset: number,
  length: number,
): Promise<Uint8Array> {
  await file.seek(offset, Deno.SeekMode.Start);
  const buf = new Uint8Array(length);
  let fill = 0;
  while (fill < length) {
    const n = await file.read(buf.subarray(fill));
    if (n === null) break;
    fill += n;
  }
  return buf.subarray(0, fill);
}

/**
 * A byte stream (BYOB-capable, so ChunkReader fills its own buffers) of `size` bytes of
 * `path` from `offset` on, through a file handle of its own: parallel streams do not share a
 * file position. A file that ends early makes the stream fail naming `what`.
 */
export function fileRange(
  path: string,
  offset: number,
  size: number,
  what: string,
): ReadableStream<Uint8Array> {
  let file: Deno.FsFile | undefined;
  let left = size;
  const close = () => {
    try {
      file?.close();
    } catch { /* closed */ }
    file = undefined;
  };
  return new ReadableStream({
    type: "bytes",
    autoAllocateChunkSize: 64 * 1024,
    async start() {
      file = await Deno.open(path, { read: true });
      await file.seek(offset, Deno.SeekMode.Start);
    },
    async pull(controller) {
      const request = controller.byobRequest!;
      if (left === 0) {
        close();
        controller.close();
        request.respond(0);
        return;
      }
      const view = request.view as Uint8Array;
      const want = Math.min(left, view.byteLength);
      const n = await file!.read(new Uint8Array(view.buffer, view.byteOffset, want));
      if (n === null || n === 0) {
        close();
        controller.error(new UserError(`${what}: the archive ends ${left} bytes early`));
        return;
      }
      left -= n;
      request.respond(n);
    },
    cancel() {
      close();
    },
  });
}

/** The plain tar file: members read by offset, in parallel. */
export class PlainContent implements ArchiveContent {
  constructor(private path: string, private what: string) {}

  stream(offset: number, size: number): ReadableStream<Uint8Array> {
    return fileRange(this.path, offset, size, this.what);
  }

  async bytes(offset: number, size: number): Promise<Uint8Array> {
    const file = await Deno.open(this.path, { read: true });
    try {
      const bytes = await readAt(file, offset, size);
      if (bytes.length < size) throw new UserError(`${this.what}: the archive ends early`);
      return bytes;
    } finally {
      file.close();
    }
  }
}

/**
 * Forward-only reading of a stream by absolute offset: read(offset, n) skips (reading and
 * dropping) to `offset` and returns up to n bytes. Offsets must not go backwards.
 */
export class StreamCursor {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #chunk: Uint8Array = new Uint8Array(0);
  /** Offset of #chunk[0] in the stream. */
  #pos = 0;
  #done = false;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
  }

  /** Offset of the next unread byte. */
  get position(): number {
    return this.#pos;
  }

  async #fill(): Promise<boolean> {
    while (this.#chunk.length === 0) {
      if (this.#done) return false;
      const { done, value } = await this.#reader.read();
      if (done) {
        this.#done = true;
        return false;
      }
      this.#chunk = value;
    }
    return true;
  }

  /** Skip to `offset` (≥ position); false when the stream ends before it. */
  async skipTo(offset: number): Promise<boolean> {
    if (offset < this.#pos) throw new Error("internal error: StreamCursor cannot go back");
    while (this.#pos < offset) {
      if (!(await this.#fill())) return false;
      const n = Math.min(this.#chunk.length, offset - this.#pos);
      this.#chunk = this.#chunk.subarray(n);
      this.#pos += n;
    }
    return true;
  }

  /** The next piece of at most `max` bytes, or null at the end of the stream. */
  async nextPiece(max: number): Promise<Uint8Array | null> {
    if (!(await this.#fill())) return null;
    const piece = this.#chunk.subarray(0, Math.min(max, this.#chunk.length));
    this.#chunk = this.#chunk.subarray(piece.length);
    this.#pos += piece.length;
    return piece;
  }

  /** Up to `length` bytes at `offset` (fewer at the end of the stream). */
  async read(offset: number, length: number): Promise<Uint8Array> {
    if (!(await this.skipTo(offset))) return new Uint8Array(0);
    const out = new Uint8Array(length);
    let fill = 0;
    while (fill < length) {
      const piece = await this.nextPiece(length - fill);
      if (!piece) break;
      out.set(piece, fill);
      fill += piece.length;
    }
    return out.subarray(0, fill);
  }

  async cancel(): Promise<void> {
    await this.#reader.cancel().catch(() => {});
  }
}

/** The decompressed bytes of a gzip file, as a stream. */
export async function gunzip(path: string): Promise<ReadableStream<Uint8Array>> {
  const file = await Deno.open(path, { read: true });
  return file.readable.pipeThrough(new DecompressionStream("gzip"));
}

/** One reader waiting in a pass for the range [start, end). */
interface Waiter {
  start: number;
  end: number;
  controller: ReadableStreamDefaultController<Uint8Array>;
  /** Wakes the pass when the reader wants more or cancelled. */
  wake?: () => void;
  cancelled: boolean;
}

/**
 * A gzip-compressed tar (`.tar.gz`). gzip cannot seek, so data is read in passes: one pass
 * decompresses the archive from the start and hands each waiting reader its range as the
 * pass reaches it (readers wait their turn; a slow reader holds the pass back, so memory
 * stays flat). A reader asking for a range at or after the point a running pass has
 * committed to joins that pass; one asking for a range the pass is already past starts a
 * new pass. Members small enough were kept in memory by the scan (see GzipContent.scan).
 */
export class GzipContent implements ArchiveContent {
  #passes: { committed: number; waiters: Waiter[] }[] = [];
  #cache = new Map<number, Uint8Array>();

  constructor(private path: string, private what: string) {}

  /** Keep the data of the member at `offset` (from the scan) in memory. */
  remember(offset: number, bytes: Uint8Array): void {
    this.#cache.set(offset, bytes);
  }

  stream(offset: number, size: number): ReadableStream<Uint8Array> {
    for (const [start, bytes] of this.#cache) {
      if (offset >= start && offset + size <= start + bytes.length) {
        return ReadableStream.from([bytes.subarray(offset - start, offset - start + size)]);
      }
    }
    const waiter: Waiter = {
      start: offset,
      end: offset + size,
      cancelled: false,
      controller: undefined as unknown as ReadableStreamDefaultController<Uint8Array>,
    };
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        waiter.controller = c;
      },
      pull() {
        waiter.wake?.();
      },
      cancel() {
        waiter.cancelled = true;
        waiter.wake?.();
      },
    }, { highWaterMark: 4 });
    if (size === 0) {
      waiter.controller.close();
      return stream;
    }
    const pass = this.#passes.find((p) => p.committed <= offset);
    if (pass) {
      pass.waiters.push(waiter);
      pass.waiters.sort((a, b) => a.start - b.start);
    } else {
      this.#run(waiter);
    }
    return stream;
  }

  async bytes(offset: number, size: number): Promise<Uint8Array> {
    return new Uint8Array(await new Response(this.stream(offset, size)).arrayBuffer());
  }

  #run(first: Waiter): void {
    const pass = { committed: 0, waiters: [first] };
    this.#passes.push(pass);
    (async () => {
      const cursor = new StreamCursor(await gunzip(this.path));
      try {
        while (pass.waiters.length > 0) {
          const w = pass.waiters.shift()!;
          pass.committed = w.end;
          if (w.cancelled) continue;
          if (!(await cursor.skipTo(w.start))) {
            throw new UserError(`${this.what}: the archive ends early`);
          }
          while (cursor.position < w.end) {
            const piece = await cursor.nextPiece(w.end - cursor.position);
            if (!piece) throw new UserError(`${this.what}: the archive ends early`);
            if (w.cancelled) continue;
            w.controller.enqueue(piece);
            while ((w.controller.desiredSize ?? 1) <= 0 && !w.cancelled) {
              await new Promise<void>((resolve) => w.wake = resolve);
              w.wake = undefined;
            }
          }
          if (!w.cancelled) w.controller.close();
        }
      } catch (e) {
        // DecompressionStream fails with a TypeError; anything else is the file's reading.
        const error = e instanceof UserError
          ? e
          : e instanceof TypeError
          ? new UserError(`${this.what}: gzip data is corrupt: ${e.message}`)
          : new UserError(`${this.what}: ${describeError(e)}`);
        for (const w of pass.waiters) if (!w.cancelled) w.controller.error(error);
        pass.waiters = [];
      } finally {
        this.#passes.splice(this.#passes.indexOf(pass), 1);
        await cursor.cancel();
      }
    })();
  }
}

/**
 * Read every member header of a tar stream or file. `read` gives the archive's bytes at an
 * offset (forward only for a stream); `onMember` sees each member right after its header,
 * while its data can still be read. TarFormatError (a bad header, input ending inside one)
 * is turned into a one-line UserError naming `what`, the offset and the member before.
 */
export async function scanMembers(
  what: string,
  read: (offset: number, length: number) => Promise<Uint8Array>,
  onMember: (member: TarMember) => Promise<void> | void,
): Promise<number> {
  const headers = new TarHeaderReader(read);
  let last: TarMember | undefined;
  try {
    for (;;) {
      const member = await headers.next();
      if (member === null) return headers.offset;
      await onMember(member);
      last = member;
    }
  } catch (e) {
    if (!(e instanceof TarFormatError)) throw e;
    const after = last ? ` (after member ${last.name})` : " (the first member)";
    throw new UserError(`${what}: corrupt tar header at byte ${e.offset}${after}: ${e.message}`);
  }
}
