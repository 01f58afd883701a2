// Digests: parsing per the OCI descriptor grammar, and streaming verification.
//
// A digest string becomes a file path (blobs/ALG/HEX) and a URL path segment, so it is
// validated strictly before use: the algorithm must be one we implement, the encoded part
// must match that algorithm's exact form (lowercase hex of the right length).
import { UserError } from "./errors.ts";
import { Sha256 } from "./sha256.ts";

/** What we need of a hash: node:crypto's Hash, or the small JS SHA-256. */
interface Hasher {
  update(data: Uint8Array): unknown;
  digest(encoding: "hex"): string;
}

type NodeCrypto = typeof import("node:crypto");
let nodeCrypto: NodeCrypto | undefined;

/**
 * Load node:crypto for fast streaming hashes. It costs ≈ 20 ms of start-up, so it is loaded
 * only when blobs are about to be hashed (or a sha512 digest turns up); until then SHA-256
 * of small documents uses the JS implementation.
 */
export async function loadFastHash(): Promise<void> {
  nodeCrypto ??= await import("node:crypto");
}

/** A new hasher for `algorithm`; fast (node:crypto) once loadFastHash() has run. */
export function hasher(algorithm: ParsedDigest["algorithm"] = "sha256"): Hasher {
  if (nodeCrypto) return nodeCrypto.createHash(algorithm);
  if (algorithm === "sha256") {
    const h = new Sha256();
    return { update: (d: Uint8Array) => h.update(d), digest: () => h.hex() };
  }
  throw new Error(`internal error: ${algorithm} needs loadFastHash() first`);
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

/** Digest of a whole byte array (for manifests and other small documents). */
export function digestOf(bytes: Uint8Array, algorithm: ParsedDigest["algorithm"] = "sha256") {
  const h = hasher(algorithm);
  h.update(bytes);
  return `${algorithm}:${h.digest("hex")}`;
}

/** Thrown when content does not match its descriptor. */
export class DigestMismatchError extends UserError {}

/**
 * Incremental verification of one blob against its descriptor: feed every chunk to
 * update(), then call finish(). Overrunning the declared size fails at once, so a
 * hostile source cannot make us write more than the descriptor promised.
 */
export class Verifier {
  readonly expected: string;
  readonly size: number;
  #hash: Hasher;
  #algorithm: ParsedDigest["algorithm"];
  #seen = 0;

  constructor(digest: string, size: number) {
    const parsed = parseDigest(digest);
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new UserError(`invalid size ${size} for ${digest}`);
    }
    this.expected = digest;
    this.size = size;
    this.#algorithm = parsed.algorithm;
    this.#hash = hasher(parsed.algorithm);
  }

  get seen(): number {
    return this.#seen;
  }

  update(chunk: Uint8Array): void {
    this.#seen += chunk.byteLength;
    if (this.#seen > this.size) {
      throw new DigestMismatchError(
        `content of ${this.expected} is larger than its descriptor size ${this.size}`,
      );
    }
    this.#hash.update(chunk);
  }

  /** Throws unless exactly `size` bytes with the right digest were seen. */
  finish(): void {
    if (this.#seen !== this.size) {
      throw new DigestMismatchError(
        `content of ${this.expected} is ${this.#seen} bytes, descriptor says ${this.size}`,
      );
    }
    const actual = `${this.#algorithm}:${this.#hash.digest("hex")}`;
    if (actual !== this.expected) {
      throw new DigestMismatchError(`digest mismatch: expected ${this.expected}, got ${actual}`);
    }
  }
}

/** Verify a complete byte array against a digest and size. */
export function verifyBytes(bytes: Uint8Array, digest: string, size: number): void {
  const v = new Verifier(digest, size);
  v.update(bytes);
  v.finish();
}
