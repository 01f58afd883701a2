// Digests: parsing per the OCI descriptor grammar, and streaming verification.
//
// A digest string becomes a file path (blobs/ALG/HEX) and a URL path segment, so it is
// validated strictly before use: the algorithm must be one we implement, the encoded part
// must match that algorithm's exact form (lowercase hex of the right length).
import { createHash, type Hash } from "node:crypto";
import { UserError } from "./errors.ts";

/** Algorithms we can verify, with the length of their lowercase hex encoding. */
const ALGORITHMS: Record<string, number> = { sha256: 64, sha512: 128 };

/** The general descriptor grammar (image-spec descriptor.md). */
const GRAMMAR = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

export interface ParsedDigest {
  algorithm: "sha256" | "sha512";
  encoded: string;
}

/** Parse and validate a digest; throws a UserError naming the problem. */
export function parseDigest(digest: string): ParsedDigest {
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

export function hasher(algorithm: ParsedDigest["algorithm"] = "sha256"): Hash {
  return createHash(algorithm);
}

/** Digest of a whole byte array (for manifests and other small documents). */
export function digestOf(bytes: Uint8Array, algorithm: ParsedDigest["algorithm"] = "sha256") {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest("hex")}`;
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
  #hash: Hash;
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
    this.#hash = createHash(parsed.algorithm);
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
