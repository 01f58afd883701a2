// Digests: parsing per the OCI descriptor grammar, and verification.
//
// A digest string becomes a file path (blobs/ALG/HEX) and a URL path segment, so it is
// validated strictly before use: the algorithm must be one we implement, the encoded part
// must match that algorithm's exact form (lowercase hex of the right length).
//
// Three hash implementations, each where it fits:
// - Whole documents (manifests, indexes, checked in memory) go through WebCrypto's
//   crypto.subtle.digest: built into Deno, nothing to load, so a copy that only verifies a
//   manifest or two starts as fast as it can. It is async and one-shot.
// - Blobs are hashed as they stream (Verifier), which WebCrypto cannot do: it has no
//   incremental update/final API, only a digest of one complete buffer. Streams of large
//   blobs use OpenSSL's EVP digests through FFI where the system has libcrypto
//   (libcrypto.ts: ~2 ms to load, and Verifier.updateAsync hashes on Deno's blocking-task
//   threads, off the thread that reads the sockets), else node:crypto's createHash
//   (~23 ms to import, hashes on the JavaScript thread). Either is loaded lazily by
//   loadFastHash(). Blobs under SMALL_HASH_LIMIT (configs, small layers) are gathered in
//   memory and hashed with WebCrypto once complete: a copy of small images loads neither.
import { UserError } from "./errors.ts";
import { loadLibcryptoHash } from "./libcrypto.ts";

/** What Verifier needs of a streaming hash: node:crypto's Hash, or OpenSSL's (libcrypto.ts). */
interface Hasher {
  update(data: Uint8Array): unknown;
  /** Hash off the JavaScript thread; `data` stays untouched until this resolves. */
  updateAsync?(data: Uint8Array): Promise<void>;
  digest(encoding: "hex"): string;
}

/** Makes streaming hashers, once loadFastHash() has chosen an implementation. */
let streaming: ((algorithm: ParsedDigest["algorithm"]) => Hasher) | undefined;
/** Which one it chose, for debug lines. */
let streamingName: "OpenSSL" | "node:crypto" | undefined;

/**
 * Blobs smaller than this many bytes are verified with WebCrypto, from memory (a Verifier
 * gathers their bytes); larger ones stream through OpenSSL or node:crypto.
 */
export const SMALL_HASH_LIMIT = 1024 * 1024;

/**
 * Load a streaming hash for blobs of `size` bytes and more (Verifier): OpenSSL's libcrypto
 * through FFI where it can be used (~2 ms), else node:crypto (~23 ms of start-up). Neither
 * is loaded for blobs under SMALL_HASH_LIMIT, which use WebCrypto. Idempotent and cheap
 * after the first call. Must have resolved before `new Verifier()` of a large blob.
 * UMOCI_LIBCRYPTO=0 in the environment chooses node:crypto.
 */
export async function loadFastHash(size = Infinity): Promise<void> {
  if (size < SMALL_HASH_LIMIT || streaming) return;
  const evp = loadLibcryptoHash();
  if (evp) {
    streaming = evp;
    streamingName = "OpenSSL";
  } else {
    const nodeCrypto = await import("node:crypto");
    streaming = (algorithm) => nodeCrypto.createHash(algorithm);
    streamingName = "node:crypto";
  }
}

/**
 * What a Verifier of a blob of `size` bytes hashes with: "WebCrypto" under SMALL_HASH_LIMIT,
 * else the streaming hash loadFastHash() loaded ("OpenSSL" or "node:crypto").
 */
export function blobHashName(size: number): string {
  return size < SMALL_HASH_LIMIT ? "WebCrypto" : streamingName ?? "none loaded";
}

/** A new streaming hasher; throws an internal Error if loadFastHash() has not run. */
function hasher(algorithm: ParsedDigest["algorithm"]): Hasher {
  if (!streaming) {
    throw new Error(
      `internal error: a streaming ${algorithm} hash needs "await loadFastHash()" first`,
    );
  }
  return streaming(algorithm);
}

/** Algorithms we can verify, with the length of their lowercase hex encoding. */
const ALGORITHMS: Record<string, number> = { sha256: 64, sha512: 128 };

/** The general descriptor grammar (image-spec descriptor.md). */
const GRAMMAR = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

export interface ParsedDigest {
  algorithm: "sha256" | "sha512";
  encoded: string;
}

const parsed = new Map<string, ParsedDigest>();

/** Parse and validate a digest; throws a UserError naming the problem. */
export function parseDigest(digest: string): ParsedDigest {
  // A copy parses the same few hundred digests many times over: remember the good ones.
  const known = parsed.get(digest);
  if (known) return known;
  const result = parseDigestUncached(digest);
  if (parsed.size < 100_000) parsed.set(digest, result);
  return result;
}

function parseDigestUncached(digest: string): ParsedDigest {
  if (typeof digest !== "string" || digest.length === 0) {
    throw new UserError("invalid digest: empty");
  }
  const shown = JSON.stringify(digest.length > 80 ? digest.slice(0, 80) + "…" : digest);
  if (!GRAMMAR.test(digest)) {
    throw new UserError(`invalid digest ${shown}: does not match ALGORITHM:ENCODED`);
  }
  const i = digest.indexOf(":");
  const algorithm = digest.slice(0, i);
  const encoded = digest.slice(i + 1);
  const length = ALGORITHMS[algorithm];
  if (length === undefined) {
    throw new UserError(`unsupported digest algorithm ${JSON.stringify(algorithm)} in ${shown}`);
  }
  if (encoded.length !== length || !/^[a-f0-9]+$/.test(encoded)) {
    throw new UserError(
      `invalid digest ${shown}: ${algorithm} needs ${length} lowercase hex characters`,
    );
  }
  return { algorithm: algorithm as ParsedDigest["algorithm"], encoded };
}

export function isValidDigest(digest: string): boolean {
  try {
    parseDigest(digest);
    return true;
  } catch {
    return false;
  }
}

/** WebCrypto's names of the algorithms we verify. */
const WEBCRYPTO: Record<ParsedDigest["algorithm"], string> = {
  sha256: "SHA-256",
  sha512: "SHA-512",
};

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/**
 * Digest of a whole byte array (manifests and other documents held in memory), as
 * `ALG:lowercase-hex`, computed with WebCrypto (crypto.subtle.digest). Resolves to e.g.
 * `sha256:e3b0…` for an empty array. Rejects only if WebCrypto does (it does not for the
 * two supported algorithms).
 */
export async function digestOf(
  bytes: Uint8Array,
  algorithm: ParsedDigest["algorithm"] = "sha256",
): Promise<string> {
  // Our buffers are never shared memory; WebCrypto's BufferSource type insists on it.
  const hash = new Uint8Array(
    await crypto.subtle.digest(WEBCRYPTO[algorithm], bytes as Uint8Array<ArrayBuffer>),
  );
  let hex = "";
  for (const b of hash) hex += HEX[b];
  return `${algorithm}:${hex}`;
}

/** Thrown when content does not match its descriptor. */
export class DigestMismatchError extends UserError {}

/**
 * Incremental verification of one blob against its descriptor: feed every chunk to
 * update() (or updateAsync()), then await finish(). Overrunning the declared size fails at
 * once, so a hostile source cannot make us write more than the descriptor promised. A blob
 * of SMALL_HASH_LIMIT bytes and more is hashed as it streams, with the hash loadFastHash()
 * chose: the constructor throws an internal Error unless it has resolved (every path that
 * streams a large blob awaits it first). A smaller one is copied into memory (at most
 * SMALL_HASH_LIMIT bytes) and hashed with WebCrypto by finish(). Throws a UserError for a
 * bad digest or size.
 */
export class Verifier {
  readonly expected: string;
  readonly size: number;
  #hash?: Hasher;
  /** A small blob's bytes so far (no streaming hasher). */
  #gathered?: Uint8Array<ArrayBuffer>;
  #algorithm: ParsedDigest["algorithm"];
  #seen = 0;
  /** The last off-thread update (updates run one after another, in call order). */
  #pending: Promise<void> = Promise.resolve();
  /** Off-thread updates not finished yet. */
  #inflight = 0;
  /** finish() was called: no more updates. */
  #finished = false;

  constructor(digest: string, size: number) {
    const parsed = parseDigest(digest);
    checkSize(digest, size);
    this.expected = digest;
    this.size = size;
    this.#algorithm = parsed.algorithm;
    if (size < SMALL_HASH_LIMIT) this.#gathered = new Uint8Array(size);
    else this.#hash = hasher(parsed.algorithm);
  }

  get seen(): number {
    return this.#seen;
  }

  /** Count and hash `chunk` on this thread; throws a DigestMismatchError past `size`. */
  update(chunk: Uint8Array): void {
    this.#checkOpen();
    if (this.#inflight > 0) {
      throw new Error("internal error: Verifier.update() while an updateAsync() is running");
    }
    const at = this.#seen;
    this.#seen += chunk.byteLength;
    if (this.#seen > this.size) {
      throw overrun(this.expected, this.size);
    }
    // The caller reuses its buffers: a small blob's bytes are copied as they come.
    if (this.#gathered) this.#gathered.set(chunk, at);
    else this.#hash!.update(chunk);
  }

  /**
   * Count `chunk` (throwing a DigestMismatchError at once past `size`) and hash it, off the
   * JavaScript thread where the hash can (OpenSSL), else here. The caller must not modify
   * `chunk` until the promise resolves; it rejects if the hash failed.
   */
  updateAsync(chunk: Uint8Array): Promise<void> {
    this.#checkOpen();
    const hash = this.#hash;
    if (!hash?.updateAsync) {
      this.update(chunk);
      return Promise.resolve();
    }
    this.#seen += chunk.byteLength;
    if (this.#seen > this.size) {
      throw overrun(this.expected, this.size);
    }
    this.#inflight++;
    this.#pending = this.#pending.then(() => hash.updateAsync!(chunk)).finally(() =>
      this.#inflight--
    );
    return this.#pending;
  }

  #checkOpen(): void {
    if (this.#finished) throw new Error("internal error: Verifier used after finish()");
  }

  /** Rejects unless exactly `size` bytes with the right digest were seen. */
  async finish(): Promise<void> {
    this.#checkOpen();
    this.#finished = true; // nothing can be queued behind the wait below
    await this.#pending;
    if (this.#seen !== this.size) {
      throw shortfall(this.expected, this.#seen, this.size);
    }
    const actual = this.#gathered
      ? await digestOf(this.#gathered, this.#algorithm)
      : `${this.#algorithm}:${this.#hash!.digest("hex")}`;
    if (actual !== this.expected) {
      throw mismatch(this.expected, actual);
    }
  }
}

/**
 * Verify a complete byte array against a descriptor's digest and size (bytes), with
 * WebCrypto. Rejects with a UserError for an invalid digest or size, and with a
 * DigestMismatchError when the length differs from `size` (checked first, without hashing)
 * or the content hashes to another digest; the messages are those of Verifier.
 */
export async function verifyBytes(bytes: Uint8Array, digest: string, size: number): Promise<void> {
  const { algorithm } = parseDigest(digest);
  checkSize(digest, size);
  if (bytes.byteLength > size) throw overrun(digest, size);
  if (bytes.byteLength < size) throw shortfall(digest, bytes.byteLength, size);
  const actual = await digestOf(bytes, algorithm);
  if (actual !== digest) throw mismatch(digest, actual);
}

function checkSize(digest: string, size: number): void {
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new UserError(`invalid size ${size} for ${digest}`);
  }
}

function overrun(digest: string, size: number): DigestMismatchError {
  return new DigestMismatchError(`content of ${digest} is larger than its descriptor size ${size}`);
}

function shortfall(digest: string, seen: number, size: number): DigestMismatchError {
  return new DigestMismatchError(`content of ${digest} is ${seen} bytes, descriptor says ${size}`);
}

function mismatch(expected: string, actual: string): DigestMismatchError {
  return new DigestMismatchError(`digest mismatch: expected ${expected}, got ${actual}`);
}
