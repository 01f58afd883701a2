// Blob uploads (distribution-spec "Pushing blobs") and cross-repository mounts.
//
// How a blob goes up:
// - up to MONOLITHIC_MAX (4 MiB): POST opens a session, one PUT ?digest= carries the whole
//   blob (read and verified in memory first), with Content-Length;
// - larger, by default: one PATCH streams the whole blob (chunked transfer coding, as skopeo
//   and crane send it), then an empty PUT ?digest= closes the session;
// - larger, with --chunk-size or when the registry asks for OCI-Chunk-Min-Length: PATCH after
//   PATCH of fixed-size chunks with Content-Length and `Content-Range: START-END` (each to the
//   newest Location), read into two buffers of that size (the next chunk is read and hashed
//   while one is sent), then the empty PUT.
// Any 2xx with a usable Location answers POST and PATCH (distribution answers 202; Amazon ECR
// answers PATCH with 201, Pulp with 204); any 2xx answers the closing PUT.
//
// The bytes are hashed as they are read. The closing PUT is only sent once the digest and
// size match the descriptor; otherwise the session is DELETEd and nothing becomes visible.
//
// Failures (distribution-spec "Resuming" / "Upload Progress", checklist §2.6, §3):
// - POST and HEAD are retried by the transport. PATCH and PUT are not resent blindly
//   (`retry: false`): after a network failure, 408/429/5xx or 416 the registry is asked where
//   the session stands (GET Location → 204 + `Range: 0-END`) and the upload continues from
//   END+1 out of the chunk still held in memory;
// - a session the registry no longer knows (404, BLOB_UPLOAD_UNKNOWN/INVALID), progress
//   outside the chunk in hand, or an unanswerable progress query start the blob over with a
//   new POST (the source is opened again from byte 0; a monolithic blob is kept in memory);
// - a closing PUT whose answer was lost is checked with HEAD on the blob first: the blob may
//   already be committed;
// - the source stream breaking off (a pulled blob whose connection dropped) is reopened at
//   the first byte not yet read;
// - whenever an upload is given up, its session is cancelled with DELETE.
// Each of these spends one retry of the store's budget (RegistryOptions.retries), reported
// as one `! retry N of M …` line; a chunk or a source read that makes real progress again
// earns fresh retries.
//
// Upload Locations are opaque: resolved against the URL of the response that carried them
// (they may be relative), query kept, `digest` added with URLSearchParams. Whether the
// Authorization header goes along is decided per request by the caller (UploadApi.send),
// which only adds it for the registry's own origin.
import { DigestMismatchError, Verifier } from "../../digest.ts";
import { describeError, UserError } from "../../errors.ts";
import type { Descriptor } from "../../media.ts";
import type { BlobReader, BlobSource } from "../store.ts";
import { bufferSizeFor, ChunkReader, reclaim } from "../../stream.ts";
import type { HttpResponse } from "./response.ts";
import {
  backoffDelay,
  DEFAULT_RETRIES,
  DEFAULT_RETRY_BASE_WAIT,
  DEFAULT_RETRY_MAX_WAIT,
  NetworkError,
  RETRYABLE_STATUSES,
  retryDelay,
  retryLine,
  type RetryPolicy,
  sleep,
} from "./retry.ts";
import { redactUrl } from "./trace.ts";

/** Blobs up to this size go up in one PUT, held in memory (configs, small layers). */
const MONOLITHIC_MAX = 4 * 1024 * 1024;
/** What the source is read into at a time. */
const READ_BUFFER = 1024 * 1024;
/** A source read returns once it has this much (or the end), without waiting for more. */
const READ_AT_LEAST = 64 * 1024;
/** A registry asking for chunks larger than this (OCI-Chunk-Min-Length) is refused. */
const MAX_CHUNK_SIZE = 256 * 1024 * 1024;
const EMPTY = new Uint8Array(0);
/** Progress that earns a fresh set of retries. */
const PROGRESS_RESETS_RETRIES = 1024 * 1024;

/** One request to the registry's API, as the store sends it (auth added on the way). */
export interface ApiRequest {
  method: string;
  url: URL;
  headers?: Record<string, string>;
  /** A sized body, or a stream (sent chunked; never retried or redirected by the transport). */
  body?: Uint8Array | ReadableStream<Uint8Array>;
  /** Let the transport retry transient failures (default true). */
  retry?: boolean;
  /** The request commits content: the registry may take longer to answer (timeouts.ts). */
  commit?: boolean;
  /** A streamed body: called with each piece's size as it goes to the network. */
  onSent?: (bytes: number) => void;
}

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
   * Transient failures are retried by the transport unless `retry` is false.
   */
  send(req: ApiRequest, scopes?: string[]): Promise<HttpResponse>;
  /** Turn an unexpected response into a one-line UserError (consumes the body). */
  fail(res: HttpResponse, method: string, url: URL): Promise<UserError>;
}

export interface UploadOptions {
  /**
   * Send blobs above MONOLITHIC_MAX in PATCH chunks of this many bytes, with Content-Length
   * (default undefined: one streamed PATCH of the whole blob).
   */
  chunkSize?: number;
  onProgress?: (bytes: number) => void;
  /** Retry budget and waits (default: 5 retries, 200 ms doubling, at most 60 s). */
  retry?: RetryPolicy;
}

const DEFAULT_POLICY: RetryPolicy = {
  retries: DEFAULT_RETRIES,
  baseWait: DEFAULT_RETRY_BASE_WAIT,
  maxWait: DEFAULT_RETRY_MAX_WAIT,
  report: () => {},
};

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
    super(describeError(cause));
  }
}

/** This upload session cannot go on; the blob starts over in a new one. */
class RestartUpload extends Error {}

/**
 * Thrown into a read that was still running when the reader was rewound or closed (the
 * body of a PATCH that was dropped): it must not touch the reader's state any more.
 */
class StaleRead extends Error {
  constructor() {
    super("internal: a read outlived its rewind");
  }
}

/**
 * Reads a blob source into caller-provided buffers, feeding every byte to the verifier as
 * it is read (the verifier throws as soon as more bytes arrive than the descriptor's size).
 *
 * When the source stream breaks off (a pulled blob whose connection dropped), the source
 * is reopened at the first byte not yet read, as often as the retry policy allows. A source
 * that can only start over from byte 0 is read past what we already have; the digest stays
 * that of the bytes actually uploaded, because only first-time bytes reach the verifier.
 * Opening the source failing is final (the source's own transport has retried already).
 */
class SourceReader {
  readonly #source: BlobSource;
  readonly #verifier: Verifier;
  readonly #policy: RetryPolicy;
  #reader?: ChunkReader;
  /** Reused for every read: byte streams fill it in place (no garbage per chunk). */
  #buffer: Uint8Array<ArrayBuffer>;
  /** Its size (see bufferSizeFor). */
  readonly #bufferSize: number;
  #leftover: Uint8Array = EMPTY;
  #done = false;
  /** Bytes still to drop from the current stream (it restarted before our position). */
  #skip = 0;
  /** Offset in the blob of the next byte the stream will give. */
  #position = 0;
  #failures = 0;
  #mark = 0;
  /**
   * Counts rewinds and closes: a read started before one (its PATCH was dropped while fetch
   * still pulled its body) finds it changed after each await and leaves everything alone.
   */
  #generation = 0;

  constructor(source: BlobSource, verifier: Verifier, policy: RetryPolicy) {
    this.#source = source;
    this.#verifier = verifier;
    this.#policy = policy;
    this.#bufferSize = bufferSizeFor(verifier.size, READ_BUFFER);
    this.#buffer = new Uint8Array(this.#bufferSize);
  }

  async #open(offset: number, generation: number): Promise<void> {
    const opened: BlobReader = await this.#source(offset);
    if (generation !== this.#generation) {
      await opened.stream.cancel().catch(() => {});
      throw new StaleRead();
    }
    if (opened.offset !== offset && opened.offset !== 0) {
      await opened.stream.cancel().catch(() => {});
      throw new UserError(
        `${this.#verifier.expected}: source resumed at byte ${opened.offset}, not ${offset}`,
      );
    }
    this.#skip = offset - opened.offset;
    this.#reader = new ChunkReader(opened.stream);
  }

  /**
   * Start opening the source now (say, while the upload session is being opened), so its
   * first bytes are on their way when the body is written. A failure surfaces on first read.
   */
  prefetch(): void {
    if (this.#reader || this.#opening) return;
    const opening = this.#open(this.#position, this.#generation);
    this.#opening = opening;
    // Once open, it is the reader that counts (a later reopen must not wait on this again);
    // a failure stays for #next or close() to report.
    opening.then(() => {
      if (this.#opening === opening) this.#opening = undefined;
    }, () => {});
  }
  #opening?: Promise<void>;

  /** The next piece of new bytes from the source, or undefined at the end. */
  async #next(): Promise<Uint8Array | undefined> {
    const generation = this.#generation;
    const checkCurrent = () => {
      if (generation !== this.#generation) throw new StaleRead();
    };
    for (;;) {
      try {
        if (!this.#reader) {
          const opening = this.#opening;
          this.#opening = undefined;
          await (opening ?? this.#open(this.#position, generation));
          checkCurrent();
        }
        let value: Uint8Array;
        try {
          // Whatever has arrived once it is a few pieces' worth: a slow source's bytes go
          // out (and show as progress) as they come, not a READ_BUFFER at a time.
          value = await this.#reader!.readFull(this.#buffer, READ_AT_LEAST);
          checkCurrent();
        } catch (e) {
          if (e instanceof StaleRead) throw e;
          checkCurrent(); // a read failing because its reader was closed: nothing to retry
          // A failed BYOB read keeps the buffer it was given: start with a fresh one.
          this.#buffer = new Uint8Array(this.#bufferSize);
          throw new SourceError(e);
        }
        this.#buffer = reclaim(value, this.#bufferSize);
        if (value.length === 0) return undefined;
        if (this.#skip > 0) {
          const drop = Math.min(this.#skip, value.length);
          this.#skip -= drop;
          value = value.subarray(drop);
          if (value.length === 0) continue;
        }
        // After a rewind, bytes before `seen` were verified the first time they were read.
        const known = this.#verifier.seen - this.#position;
        // Hashed off the JavaScript thread where OpenSSL is loaded: other blobs' sockets are
        // served meanwhile.
        if (known < value.length) {
          await this.#verifier.updateAsync(known > 0 ? value.subarray(known) : value);
          checkCurrent();
        }
        this.#position += value.length;
        return value;
      } catch (e) {
        if (!(e instanceof SourceError)) throw e;
        const reader = this.#reader;
        this.#reader = undefined;
        if (reader) {
          await reader.cancel();
          reader.release();
        }
        // Real progress since the last failure earns a fresh set of retries.
        const seen = this.#position;
        if (seen - this.#mark >= PROGRESS_RESETS_RETRIES) this.#failures = 0;
        this.#mark = seen;
        const max = this.#policy.retries;
        const what = `reading the source of ${this.#verifier.expected} broke off at byte ` +
          `${seen} of ${this.#verifier.size}: ${e.message}`;
        if (++this.#failures > max) throw new UserError(what);
        const wait = backoffDelay(this.#policy, this.#failures);
        this.#policy.report(retryLine(this.#failures, max, wait, what));
        await sleep(wait);
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

  /** The digest being read (for messages). */
  get expected(): string {
    return this.#verifier.expected;
  }

  /**
   * Read from `offset` again (an upload must resend bytes the registry did not get). The
   * source is reopened there; bytes before what was already verified are not hashed twice.
   */
  async rewind(offset: number): Promise<void> {
    await this.close();
    // A read of the dropped PATCH may still be hashing bytes in the old buffer's memory.
    this.#buffer = new Uint8Array(this.#bufferSize);
    this.#leftover = EMPTY;
    this.#done = false;
    this.#skip = 0;
    this.#position = offset;
  }

  /** Stop reading (cancels the source stream). */
  async close(): Promise<void> {
    this.#generation++;
    const opening = this.#opening;
    this.#opening = undefined;
    if (opening) await opening.catch(() => {});
    const reader = this.#reader;
    this.#reader = undefined;
    if (!reader) return;
    if (!this.#done) await reader.cancel();
    reader.release();
  }
}

/** Parse a `Range: 0-END` (or legacy `bytes=0-END`) upload progress header. */
export function parseUploadRange(value: string | null): number | undefined {
  if (value === null) return undefined;
  const m = /^\s*(?:bytes=)?(\d+)-(\d+)\s*$/.exec(value);
  if (!m || m[1] !== "0") return undefined;
  return Number(m[2]);
}

/** Check the answer that completes an upload (any 2xx) or a mount (201). */
async function expectCreated(
  api: UploadApi,
  res: HttpResponse,
  url: URL,
  desc: Descriptor,
): Promise<void> {
  if (!res.ok) throw await api.fail(res, res.method, url);
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
    const res = await api.send({ method: "DELETE", url: session, retry: false });
    await res.discard();
  } catch {
    // ignored
  }
}

/** HEAD the blob: true when the registry has it with the right size. */
async function blobExists(api: UploadApi, desc: Descriptor): Promise<boolean> {
  const url = api.url(`blobs/${desc.digest}`);
  const res = await api.send({ method: "HEAD", url });
  const length = res.contentLength;
  await res.discard();
  return res.status === 200 && (length === undefined || length === desc.size);
}

/** What one attempt of a PATCH or PUT came back with: an answer, or a network failure. */
type Outcome = { res: HttpResponse; error?: undefined } | { res?: undefined; error: NetworkError };

/** Send without transport retries; a transient network failure is returned, not thrown. */
async function attempt(
  api: UploadApi,
  req: Omit<ApiRequest, "retry">,
): Promise<Outcome> {
  try {
    return { res: await api.send({ ...req, retry: false }) };
  } catch (e) {
    if (e instanceof NetworkError && e.retryable) return { error: e };
    throw e;
  }
}

/** A failed attempt that is worth another try (anything else is answered by the caller). */
function transient(o: Outcome): boolean {
  return o.error !== undefined || RETRYABLE_STATUSES.has(o.res.status) || o.res.status === 416;
}

/**
 * One line for a failed attempt, consuming the response: the registry's own error when it
 * sent one (through api.fail), the network failure otherwise.
 */
async function describeOutcome(
  api: UploadApi,
  o: Outcome,
  method: string,
  url: URL,
): Promise<string> {
  if (o.error) return o.error.message;
  return (await api.fail(o.res, method, url)).message;
}

/**
 * Ask where an upload session stands (GET Location → 204 + Range). Returns the number of
 * bytes the registry holds and the Location to continue with; a session it no longer
 * knows, or an answer without a usable Range, means starting over.
 */
async function uploadProgress(
  api: UploadApi,
  session: URL,
  expectedAtLeast: number,
): Promise<{ have: number; session: URL }> {
  const res = await api.send({ method: "GET", url: session });
  if (res.status === 404) {
    const error = await api.fail(res, "GET", session);
    throw new RestartUpload(`upload session is gone (${error.message})`);
  }
  if (res.status !== 204 && res.status !== 200) {
    const error = await api.fail(res, "GET", session);
    throw new RestartUpload(`upload progress unknown (${error.message})`);
  }
  const end = parseUploadRange(res.headers.get("range"));
  let next = session;
  if (res.headers.get("location")) next = uploadLocation(api, res);
  await res.discard();
  if (end === undefined) {
    // No Range: nothing received yet (a fresh session has none), or a registry that
    // does not say. Only the former can be continued.
    if (expectedAtLeast === 0) return { have: 0, session: next };
    throw new RestartUpload("the registry did not report the upload's progress");
  }
  // distribution reports `0-0` for 0 bytes and for 1 byte; we send whole chunks, so 0-0
  // where a chunk starts at 0 means nothing arrived.
  const have = end === 0 && expectedAtLeast === 0 ? 0 : end + 1;
  return { have, session: next };
}

/**
 * Upload one blob from a stream, verifying it against `desc` on the way. Nothing is
 * committed unless the digest and size match. A session that breaks down is continued or
 * started over (see the file comment) within the retry budget.
 */
export async function uploadBlob(
  api: UploadApi,
  desc: Descriptor,
  blobSource: BlobSource,
  opts: UploadOptions = {},
): Promise<void> {
  const policy = opts.retry ?? DEFAULT_POLICY;
  const state: UploadState = { restarts: 0 };
  for (;;) {
    try {
      await uploadOnce(api, desc, blobSource, opts, policy, state);
      return;
    } catch (e) {
      if (!(e instanceof RestartUpload)) throw e;
      const what = `upload of ${desc.digest} to ${api.name}: ${e.message}`;
      if (++state.restarts > policy.retries) {
        throw new UserError(`${what}; no retries left (${policy.retries})`);
      }
      const wait = backoffDelay(policy, state.restarts);
      policy.report(
        retryLine(state.restarts, policy.retries, wait, `${what}; starting the blob over`),
      );
      await sleep(wait);
    }
  }
}

interface UploadState {
  restarts: number;
  /** A blob small enough for one PUT, read and verified once and kept across restarts. */
  whole?: Uint8Array;
}

/** One upload session, from POST to the closing PUT. Throws RestartUpload to start over. */
async function uploadOnce(
  api: UploadApi,
  desc: Descriptor,
  blobSource: BlobSource,
  opts: UploadOptions,
  policy: RetryPolicy,
  state: UploadState,
): Promise<void> {
  let verifier: Verifier | undefined;
  let source: SourceReader | undefined;
  let session: URL | undefined;
  let committed = false;
  try {
    if (state.whole === undefined) {
      // The source starts opening (a registry source: its GET) while the session opens.
      verifier = new Verifier(desc.digest, desc.size);
      source = new SourceReader(blobSource, verifier, policy);
      source.prefetch();
    }
    // Open a session. An empty Uint8Array makes fetch send `Content-Length: 0` itself.
    const start = api.url("blobs/uploads/");
    const opened = await api.send({ method: "POST", url: start, body: EMPTY });
    if (!opened.ok) throw await api.fail(opened, "POST", start);
    session = uploadLocation(api, opened);
    const minChunk = Number(opened.headers.get("oci-chunk-min-length") ?? "0");
    await opened.discard();

    // Chunks with Content-Length when asked for (--chunk-size) or required by the registry.
    let chunkSize = opts.chunkSize !== undefined ? Math.max(1, opts.chunkSize) : undefined;
    if (Number.isSafeInteger(minChunk) && minChunk > 0 && minChunk > (chunkSize ?? 0)) {
      if (minChunk > MAX_CHUNK_SIZE && desc.size > MAX_CHUNK_SIZE) {
        throw new UserError(
          `${api.name}: registry asks for upload chunks of at least ${minChunk} bytes; refused`,
        );
      }
      chunkSize = minChunk;
    }

    if (desc.size <= (chunkSize ?? MONOLITHIC_MAX)) {
      // Monolithic: the whole (small) blob in one PUT.
      if (state.whole === undefined) {
        const buf = new Uint8Array(desc.size);
        const n = await source!.fill(buf);
        await source!.drain();
        await verifier!.finish(); // throws on short content or a digest mismatch
        state.whole = buf.subarray(0, n);
      }
      await closeUpload(api, desc, session, state.whole, policy);
      committed = true;
      opts.onProgress?.(desc.size);
      return;
    }

    if (!verifier || !source) {
      verifier = new Verifier(desc.digest, desc.size);
      source = new SourceReader(blobSource, verifier, policy);
    }
    if (chunkSize === undefined) {
      // Streamed: one PATCH carries the whole blob straight from the source.
      session = await sendStreamed(api, session, source, desc.size, policy, opts.onProgress);
      await source.drain(); // an overrun makes the verifier throw
      await verifier.finish();
      await closeUpload(api, desc, session, EMPTY, policy);
      committed = true;
      return;
    }

    // Chunked in memory: PATCH fixed-size chunks, reading the next while one is sent.
    const buffers = [new Uint8Array(chunkSize), new Uint8Array(chunkSize)];
    let which = 0;
    let offset = 0;
    let n = await source.fill(buffers[which]);
    while (n > 0) {
      const chunk = buffers[which].subarray(0, n);
      const patch = sendChunkFromMemory(api, session, chunk, offset, policy);
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
    await verifier.finish();
    await closeUpload(api, desc, session, EMPTY, policy);
    committed = true;
  } catch (e) {
    await source?.close();
    if (session && !committed) await cancelSession(api, session);
    if (e instanceof DigestMismatchError) {
      throw new DigestMismatchError(`not pushed to ${api.name}: ${e.message}`);
    }
    throw e;
  } finally {
    await source?.close();
  }
}

/**
 * The closing PUT ?digest= (with the whole blob, or empty after PATCHes). When its answer
 * is lost or transient, the blob may be committed already (HEAD says so), the session may
 * still be complete and waiting (PUT again), or it is gone (start over).
 */
async function closeUpload(
  api: UploadApi,
  desc: Descriptor,
  session: URL,
  body: Uint8Array,
  policy: RetryPolicy,
): Promise<void> {
  const put = new URL(session);
  put.searchParams.set("digest", desc.digest);
  const headers: Record<string, string> = body.length > 0
    ? { "content-type": "application/octet-stream" }
    : {};
  for (let failures = 0;;) {
    const outcome = await attempt(api, { method: "PUT", url: put, headers, body, commit: true });
    if (outcome.res?.ok || (outcome.res && !transient(outcome))) {
      if (outcome.res.status === 404) {
        // The session is gone: maybe because this very PUT committed it before.
        const error = await api.fail(outcome.res, "PUT", put);
        if (await blobExists(api, desc)) return;
        throw new RestartUpload(`upload session is gone (${error.message})`);
      }
      await expectCreated(api, outcome.res, put, desc);
      return;
    }
    const wait = retryDelay(policy, failures + 1, outcome.res);
    const what = await describeOutcome(api, outcome, "PUT", put);
    if (++failures > policy.retries) {
      throw new UserError(`${what} (no retries left: ${policy.retries})`);
    }
    policy.report(retryLine(failures, policy.retries, wait, what));
    await sleep(wait);
    if (await blobExists(api, desc)) return;
    if (body.length > 0) {
      // A PUT that carried data may have left part of it in the session: use a new one.
      throw new RestartUpload(`closing PUT failed (${what})`);
    }
    const progress = await uploadProgress(api, session, desc.size);
    if (progress.have !== desc.size) {
      throw new RestartUpload(
        `closing PUT failed and the registry holds ${progress.have} of ${desc.size} bytes`,
      );
    }
  }
}

/**
 * PATCH one chunk [offset, offset+length); returns the session URL to use next. `send`
 * makes one attempt that carries bytes `from`…end. After a lost or transient answer the
 * registry is asked how far it got, and the rest of the chunk is sent from there (`rewind`
 * tells a streaming source to read from that byte again); progress outside this chunk, or a
 * session the registry no longer knows, throws RestartUpload. A 307/308 sends the same
 * bytes to the new Location (a streamed request does not follow redirects by itself).
 */
async function sendChunk(
  api: UploadApi,
  session: URL,
  offset: number,
  length: number,
  policy: RetryPolicy,
  send: (url: URL, from: number, end: number) => Promise<Outcome>,
  rewind: (from: number) => Promise<void> = () => Promise.resolve(),
): Promise<URL> {
  const end = offset + length - 1;
  let sent = 0;
  let failures = 0;
  let hops = 0;
  let url = session;
  for (;;) {
    const from = offset + sent;
    const outcome = await send(url, from, end);
    if (outcome.res?.ok) {
      const res = outcome.res;
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
    if (outcome.res?.status === 307 || outcome.res?.status === 308) {
      // Authorization only goes along to the registry's own origin (api.send).
      const next = uploadLocation(api, outcome.res);
      await outcome.res.discard();
      if (++hops > 10) throw new UserError(`${api.name}: PATCH: too many redirects`);
      url = next;
      await rewind(from);
      continue;
    }
    if (outcome.res?.status === 404) {
      const error = await api.fail(outcome.res, "PATCH", url);
      throw new RestartUpload(`upload session is gone (${error.message})`);
    }
    if (outcome.res && !transient(outcome)) throw await api.fail(outcome.res, "PATCH", url);
    const wait = retryDelay(policy, failures + 1, outcome.res);
    const what = await describeOutcome(api, outcome, "PATCH", url);
    if (++failures > policy.retries) {
      throw new UserError(`${what} (no retries left: ${policy.retries})`);
    }
    policy.report(
      retryLine(
        failures,
        policy.retries,
        wait,
        `${what} (bytes ${from}-${end}); asking for the progress`,
      ),
    );
    await sleep(wait);
    const progress = await uploadProgress(api, url, offset);
    if (progress.have < offset || progress.have > end + 1) {
      throw new RestartUpload(
        `the registry holds ${progress.have} bytes, outside the chunk ${offset}-${end} in hand`,
      );
    }
    if (progress.have - from >= PROGRESS_RESETS_RETRIES) failures = 0;
    sent = progress.have - offset;
    url = progress.session;
    if (sent === length) return url;
    await rewind(progress.have);
  }
}

const PATCH_HEADERS = (from: number, end: number) => ({
  "content-type": "application/octet-stream",
  "content-range": `${from}-${end}`,
});

/** PATCH a chunk held in memory (the path through fetch/node:https). */
function sendChunkFromMemory(
  api: UploadApi,
  session: URL,
  chunk: Uint8Array,
  offset: number,
  policy: RetryPolicy,
): Promise<URL> {
  return sendChunk(api, session, offset, chunk.length, policy, (url, from, end) =>
    attempt(api, {
      method: "PATCH",
      url,
      headers: PATCH_HEADERS(from, end),
      body: chunk.subarray(from - offset),
    }));
}

/**
 * Bytes handed to the network per piece of a streamed PATCH. Small on purpose: fetch copies
 * each piece into native memory, and pieces above glibc's mmap threshold (128 KiB) raise it
 * and are then kept by malloc's arenas: 1 MiB pieces took a 512 MiB push to 125 MiB peak RSS,
 * 32 KiB pieces to 80-84 MiB at the same speed.
 */
const STREAM_PIECE = 32 * 1024;

/**
 * PATCH the whole blob as one stream from the source (chunked transfer coding). A PATCH
 * that breaks off is continued from where the registry says it got to, with a Content-Range
 * (sendChunk); the first carries none, as skopeo and crane send it. `onProgress` gets the
 * blob offset of the bytes handed to the network.
 */
function sendStreamed(
  api: UploadApi,
  session: URL,
  source: SourceReader,
  size: number,
  policy: RetryPolicy,
  onProgress?: (bytes: number) => void,
): Promise<URL> {
  const send = async (url: URL, from: number, end: number): Promise<Outcome> => {
    let bodyError: unknown;
    let left = end - from + 1;
    let position = from;
    // Fresh memory per piece: fetch may still hold a piece after asking for the next one.
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          const piece = new Uint8Array(Math.min(STREAM_PIECE, left));
          const n = await source.fill(piece);
          if (n === 0) {
            throw new DigestMismatchError(
              `content of ${source.expected} ended before its descriptor size`,
            );
          }
          left -= n;
          controller.enqueue(n === piece.length ? piece : piece.subarray(0, n));
          if (left === 0) controller.close();
        } catch (e) {
          bodyError = e; // the source or the verifier: final
          controller.error(e);
        }
      },
    }, { highWaterMark: 0 });
    const headers: Record<string, string> = from === 0
      ? { "content-type": "application/octet-stream" }
      : PATCH_HEADERS(from, end);
    try {
      const res = await api.send({
        method: "PATCH",
        url,
        headers,
        body,
        retry: false,
        onSent: (n) => {
          position += n;
          onProgress?.(position);
        },
      });
      if (bodyError !== undefined) {
        await res.discard();
        throw bodyError;
      }
      if (res.status === 401) {
        // The token ran out during a long upload: the store has learned the challenge (and
        // renewed the token); continue from the registry's progress with the new one.
        await res.discard();
        return {
          error: new NetworkError(
            `${api.name}: PATCH ${url.pathname}: 401; renewing the token`,
            true,
          ),
        };
      }
      return { res };
    } catch (e) {
      if (bodyError !== undefined) throw bodyError;
      if (!(e instanceof NetworkError && e.retryable)) throw e;
      return { error: e };
    } finally {
      if (left > 0) await body.cancel().catch(() => {});
    }
  };
  return sendChunk(api, session, 0, size, policy, send, (from) => source.rewind(from));
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
  const res = await api.send({ method: "POST", url, body: EMPTY, commit: true }, scopes);
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
  if (res.status === 401 || res.status === 403) {
    // Not allowed to read the source repository: copy the bytes instead.
    await res.discard();
    return false;
  }
  throw await api.fail(res, "POST", url);
}
