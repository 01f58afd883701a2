// Blob uploads (distribution-spec "Pushing blobs") and cross-repository mounts.
//
// Every request body here is a Uint8Array of known length, never a stream, so every
// request carries a correct Content-Length (Deno sends streamed bodies chunked, without
// one). The source stream is read into a fixed buffer of `chunkSize` bytes at a time, so
// memory stays flat whatever the blob size:
//
// - size ≤ chunk size: POST opens a session, one PUT ?digest= carries the whole blob;
// - larger: POST, then PATCH after PATCH with `Content-Range: START-END` (each to the
//   newest Location), then an empty PUT ?digest= closes the session. While one PATCH is in
//   flight the next chunk is read and hashed into a second buffer.
//
// The bytes are hashed as they are read. The closing PUT is only sent once the digest and
// size match the descriptor; otherwise the session is DELETEd and nothing becomes visible.
//
// Upload Locations are opaque: resolved against the URL of the response that carried them
// (they may be relative), query kept, `digest` added with URLSearchParams. Whether the
// Authorization header goes along is decided per request by the caller (UploadApi.send),
// which only adds it for the registry's own origin.
import { DigestMismatchError, Verifier } from "../../digest.ts";
import { UserError } from "../../errors.ts";
import type { Descriptor } from "../../media.ts";
import type { BlobReader, BlobSource } from "../store.ts";
import { type HttpResponse, redactUrl } from "./transport.ts";

export const DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024;
/** A registry asking for chunks larger than this (OCI-Chunk-Min-Length) is refused. */
const MAX_CHUNK_SIZE = 256 * 1024 * 1024;
const EMPTY = new Uint8Array(0);

/** What uploads need from the registry store: authenticated requests and error decoding. */
export interface UploadApi {
  /** Registry as named in messages. */
  readonly name: string;
  /** The repository uploads go to. */
  readonly repository: string;
  /** URL of `/v2/<repository>/<path>`. */
  url(path: string): URL;
  /**
   * Send one request with the registry's auth (added only when `url` is the registry's
   * origin), retrying once after a 401. `scopes` defaults to pull+push on the repository.
   */
  send(
    req: { method: string; url: URL; headers?: Record<string, string>; body?: Uint8Array },
    scopes?: string[],
  ): Promise<HttpResponse>;
  /** Turn an unexpected response into a one-line UserError (consumes the body). */
  fail(res: HttpResponse, method: string, url: URL): Promise<UserError>;
}

export interface UploadOptions {
  chunkSize?: number;
  onProgress?: (bytes: number) => void;
}

/** Resolve the Location of an upload response and check it is safe to send to. */
function uploadLocation(api: UploadApi, res: HttpResponse): URL {
  const loc = res.headers.get("location");
  const where = `${api.name}: ${res.method} ${res.url.pathname}`;
  if (!loc) throw new UserError(`${where}: ${res.status} without a Location header`);
  let url: URL;
  try {
    url = new URL(loc, res.url);
  } catch {
    throw new UserError(`${where}: invalid upload Location`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UserError(`${where}: upload Location has unsupported scheme ${url.protocol}`);
  }
  if (res.url.protocol === "https:" && url.protocol === "http:") {
    throw new UserError(
      `${where}: refusing upload Location downgrading to http (${redactUrl(url)})`,
    );
  }
  return url;
}

/** A failure while reading the source (as opposed to the registry or the verifier). */
class SourceError extends Error {
  constructor(override readonly cause: unknown) {
    super(cause instanceof Error ? cause.message : String(cause));
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Reads a blob source into caller-provided buffers, feeding every byte to the verifier as
 * it is read (the verifier throws as soon as more bytes arrive than the descriptor's size).
 *
 * When the source stream breaks off (a pulled blob whose connection dropped), the source
 * is reopened at the first byte not yet read, a few times with backoff. A source that can
 * only start over from byte 0 is read past what we already have; the digest stays that of
 * the bytes actually uploaded, because only first-time bytes reach the verifier.
 */
class SourceReader {
  readonly #source: BlobSource;
  readonly #verifier: Verifier;
  readonly #retries: number;
  #reader?: ReadableStreamDefaultReader<Uint8Array>;
  #leftover: Uint8Array = EMPTY;
  #done = false;
  /** Bytes still to drop from the current stream (it restarted before our position). */
  #skip = 0;

  constructor(source: BlobSource, verifier: Verifier, retries = 5) {
    this.#source = source;
    this.#verifier = verifier;
    this.#retries = retries;
  }

  async #open(offset: number): Promise<void> {
    let opened: BlobReader;
    try {
      opened = await this.#source(offset);
    } catch (e) {
      throw new SourceError(e);
    }
    if (opened.offset !== offset && opened.offset !== 0) {
      await opened.stream.cancel().catch(() => {});
      throw new UserError(
        `${this.#verifier.expected}: source resumed at byte ${opened.offset}, not ${offset}`,
      );
    }
    this.#skip = offset - opened.offset;
    this.#reader = opened.stream.getReader();
  }

  /** The next piece of new bytes from the source, or undefined at the end. */
  async #next(): Promise<Uint8Array | undefined> {
    let failures = 0;
    let mark = this.#verifier.seen;
    for (;;) {
      try {
        if (!this.#reader) await this.#open(this.#verifier.seen);
        let result: ReadableStreamReadResult<Uint8Array>;
        try {
          result = await this.#reader!.read();
        } catch (e) {
          throw new SourceError(e);
        }
        if (result.done) return undefined;
        let value = result.value;
        if (this.#skip > 0) {
          const drop = Math.min(this.#skip, value.length);
          this.#skip -= drop;
          value = value.subarray(drop);
          if (value.length === 0) continue;
        }
        this.#verifier.update(value);
        return value;
      } catch (e) {
        if (!(e instanceof SourceError)) throw e;
        const reader = this.#reader;
        this.#reader = undefined;
        if (reader) {
          await reader.cancel().catch(() => {});
          reader.releaseLock();
        }
        // Real progress since the last failure earns a fresh set of retries.
        if (this.#verifier.seen - mark >= 1024 * 1024) failures = 0;
        mark = this.#verifier.seen;
        if (++failures > this.#retries) {
          throw new UserError(
            `${this.#verifier.expected}: reading the source broke off at byte ` +
              `${this.#verifier.seen} of ${this.#verifier.size}: ${e.message}`,
          );
        }
        await sleep(Math.min(5000, 100 * 2 ** failures) * (0.5 + Math.random()));
      }
    }
  }

  /** Fill `buf` as far as the source allows; returns the byte count (< length only at the end). */
  async fill(buf: Uint8Array): Promise<number> {
    let n = 0;
    while (n < buf.length) {
      if (this.#leftover.length === 0) {
        if (this.#done) break;
        const value = await this.#next();
        if (value === undefined) {
          this.#done = true;
          break;
        }
        this.#leftover = value;
      }
      const take = Math.min(buf.length - n, this.#leftover.length);
      buf.set(this.#leftover.subarray(0, take), n);
      this.#leftover = this.#leftover.subarray(take);
      n += take;
    }
    return n;
  }

  /** Read to the end (there should be nothing left); an overrun makes the verifier throw. */
  async drain(): Promise<void> {
    while (!this.#done) {
      if ((await this.#next()) === undefined) this.#done = true;
    }
  }

  /** Stop reading (cancels the source stream). */
  async close(): Promise<void> {
    const reader = this.#reader;
    this.#reader = undefined;
    if (!reader) return;
    if (!this.#done) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}

/** Parse a `Range: 0-END` (or legacy `bytes=0-END`) upload progress header. */
export function parseUploadRange(value: string | null): number | undefined {
  if (value === null) return undefined;
  const m = /^\s*(?:bytes=)?(\d+)-(\d+)\s*$/.exec(value);
  if (!m || m[1] !== "0") return undefined;
  return Number(m[2]);
}

/** Check the 201 that completes an upload or mount. */
async function expectCreated(
  api: UploadApi,
  res: HttpResponse,
  url: URL,
  desc: Descriptor,
): Promise<void> {
  if (res.status !== 201) throw await api.fail(res, res.method, url);
  const got = res.headers.get("docker-content-digest");
  await res.discard();
  if (got !== null && got.trim() !== desc.digest) {
    throw new UserError(
      `${api.name}: registry stored ${desc.digest} as ${got.trim()}; digest mismatch`,
    );
  }
}

/** Best-effort DELETE of an upload session ("clients SHOULD ignore any failures"). */
async function cancelSession(api: UploadApi, session: URL): Promise<void> {
  try {
    const res = await api.send({ method: "DELETE", url: session });
    await res.discard();
  } catch {
    // ignored
  }
}

/**
 * Upload one blob from a stream, verifying it against `desc` on the way. Nothing is
 * committed unless the digest and size match.
 */
export async function uploadBlob(
  api: UploadApi,
  desc: Descriptor,
  blobSource: BlobSource,
  opts: UploadOptions = {},
): Promise<void> {
  const verifier = new Verifier(desc.digest, desc.size);
  const source = new SourceReader(blobSource, verifier);
  let session: URL | undefined;
  let committed = false;
  try {
    // Open a session. An empty Uint8Array makes fetch send `Content-Length: 0` itself.
    const start = api.url("blobs/uploads/");
    const opened = await api.send({ method: "POST", url: start, body: EMPTY });
    if (opened.status !== 202) throw await api.fail(opened, "POST", start);
    session = uploadLocation(api, opened);
    const minChunk = Number(opened.headers.get("oci-chunk-min-length") ?? "0");
    await opened.discard();

    let chunkSize = Math.max(1, opts.chunkSize ?? DEFAULT_CHUNK_SIZE);
    if (Number.isSafeInteger(minChunk) && minChunk > chunkSize) {
      if (minChunk > MAX_CHUNK_SIZE && desc.size > MAX_CHUNK_SIZE) {
        throw new UserError(
          `${api.name}: registry asks for upload chunks of at least ${minChunk} bytes; refused`,
        );
      }
      chunkSize = minChunk;
    }

    if (desc.size <= chunkSize) {
      // Monolithic: the whole blob in one PUT.
      const buf = new Uint8Array(desc.size);
      const n = await source.fill(buf);
      await source.drain();
      verifier.finish(); // throws on short content or a digest mismatch
      const put = new URL(session);
      put.searchParams.set("digest", desc.digest);
      const res = await api.send({
        method: "PUT",
        url: put,
        headers: { "content-type": "application/octet-stream" },
        body: buf.subarray(0, n),
      });
      await expectCreated(api, res, put, desc);
      committed = true;
      opts.onProgress?.(desc.size);
      return;
    }

    // Chunked: PATCH fixed-size chunks, reading the next one while the current is sent.
    const buffers = [new Uint8Array(chunkSize), new Uint8Array(chunkSize)];
    let which = 0;
    let offset = 0;
    let n = await source.fill(buffers[which]);
    while (n > 0) {
      const chunk = buffers[which].subarray(0, n);
      const patch = sendChunk(api, session, chunk, offset);
      // Read ahead into the other buffer; whatever happens, wait for the PATCH to settle.
      const [sent, next] = await Promise.allSettled([patch, source.fill(buffers[1 - which])]);
      if (sent.status === "rejected") throw sent.reason;
      session = sent.value;
      if (next.status === "rejected") throw next.reason;
      offset += n;
      opts.onProgress?.(offset);
      which = 1 - which;
      n = next.value;
    }
    verifier.finish();
    const put = new URL(session);
    put.searchParams.set("digest", desc.digest);
    const res = await api.send({ method: "PUT", url: put, body: EMPTY });
    await expectCreated(api, res, put, desc);
    committed = true;
  } catch (e) {
    await source.close();
    if (session && !committed) await cancelSession(api, session);
    if (e instanceof DigestMismatchError) {
      throw new DigestMismatchError(`not pushed to ${api.name}: ${e.message}`);
    }
    throw e;
  } finally {
    await source.close();
  }
}

/** PATCH one chunk; returns the session URL to use next. */
async function sendChunk(
  api: UploadApi,
  session: URL,
  chunk: Uint8Array,
  offset: number,
): Promise<URL> {
  const end = offset + chunk.length - 1;
  const res = await api.send({
    method: "PATCH",
    url: session,
    headers: {
      "content-type": "application/octet-stream",
      "content-range": `${offset}-${end}`,
    },
    body: chunk,
  });
  if (res.status !== 202) throw await api.fail(res, "PATCH", session);
  const next = uploadLocation(api, res);
  const acknowledged = parseUploadRange(res.headers.get("range"));
  await res.discard();
  if (acknowledged !== undefined && acknowledged !== end) {
    throw new UserError(
      `${api.name}: upload out of step: sent bytes up to ${end}, registry has up to ${acknowledged}`,
    );
  }
  return next;
}

/**
 * Cross-repository mount: ask the registry to link `desc` from repository `from`.
 * 201 → mounted. 202 → the registry started an ordinary upload session instead (mount
 * unsupported, or the blob is not readable in `from`); we DELETE that session and return
 * false, and the caller copies the bytes through a fresh upload. Keeping the session would
 * save one request, but this interface has no body to send into it.
 */
export async function mountBlob(api: UploadApi, desc: Descriptor, from: string): Promise<boolean> {
  const url = api.url("blobs/uploads/");
  url.searchParams.set("mount", desc.digest);
  url.searchParams.set("from", from);
  const scopes = [
    `repository:${api.repository}:pull,push`,
    `repository:${from}:pull`,
  ];
  const res = await api.send({ method: "POST", url, body: EMPTY }, scopes);
  if (res.status === 201) {
    await expectCreated(api, res, url, desc);
    return true;
  }
  if (res.status === 202) {
    const session = uploadLocation(api, res);
    await res.discard();
    await cancelSession(api, session);
    return false;
  }
  throw await api.fail(res, "POST", url);
}
