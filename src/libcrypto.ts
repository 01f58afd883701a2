// Streaming SHA-256/SHA-512 from the system's OpenSSL (libcrypto), through Deno's FFI.
//
// Why not only node:crypto: its createHash() runs every update on the JavaScript thread,
// the thread that also polls the sockets, so a pull of 512 MiB spends 0.35-0.4 s of that one
// thread hashing, and importing node:crypto costs ~23 ms of start-up. OpenSSL's EVP digest
// API hashes just as fast (SHA-NI where the CPU has it), and EVP_DigestUpdate declared
// `nonblocking` runs on Deno's blocking-task threads and returns a promise, so the next
// buffer is read while this one is hashed. dlopen takes ~2 ms. WebCrypto, the design card's
// choice, cannot hash a stream at all (one-shot digest only).
//
// Used where it can be: Linux with --allow-ffi and a libcrypto.so.3 (or .so.1.1) on the
// library path. Anywhere else (macOS, whose libcrypto.dylib aborts the process when
// dlopen'ed, Windows, musl systems without OpenSSL, no FFI permission, UMOCI_LIBCRYPTO=0)
// loadLibcryptoHash() returns undefined and digest.ts uses node:crypto.

import { envVar } from "./env.ts";

/** A streaming hash whose updates may run off the JavaScript thread. */
export interface OffThreadHash {
  /**
   * Hash `data` on a blocking-task thread. `data` must not be modified, and no other
   * update may start, until the promise resolves. Rejects if OpenSSL reports a failure.
   */
  updateAsync(data: Uint8Array): Promise<void>;
  /** Hash `data` on this thread (small or scattered input). */
  update(data: Uint8Array): void;
  /** The lowercase hex digest; the hash cannot be used afterwards. */
  digest(encoding: "hex"): string;
}

const SYMBOLS = {
  EVP_MD_CTX_new: { parameters: [], result: "pointer" },
  EVP_MD_CTX_free: { parameters: ["pointer"], result: "void" },
  EVP_sha256: { parameters: [], result: "pointer" },
  EVP_sha512: { parameters: [], result: "pointer" },
  EVP_DigestInit_ex: { parameters: ["pointer", "pointer", "pointer"], result: "i32" },
  EVP_DigestUpdate: { parameters: ["pointer", "buffer", "usize"], result: "i32" },
  DigestUpdateAsync: {
    name: "EVP_DigestUpdate",
    parameters: ["pointer", "buffer", "usize"],
    result: "i32",
    nonblocking: true,
  },
  EVP_DigestFinal_ex: { parameters: ["pointer", "buffer", "pointer"], result: "i32" },
} as const;

type Libcrypto = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

const NAMES = ["libcrypto.so.3", "libcrypto.so.1.1"];
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

let lib: Libcrypto | null | undefined;

/** Contexts of hashes dropped before digest() (a failed transfer) are freed by the GC. */
const contexts = new FinalizationRegistry<Deno.PointerValue>((ctx) => lib?.EVP_MD_CTX_free(ctx));

function load(): Libcrypto | null {
  if (lib !== undefined) return lib;
  lib = null;
  if (Deno.build.os !== "linux" || envVar("UMOCI_LIBCRYPTO") === "0") return null;
  try {
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return null;
    for (const name of NAMES) {
      try {
        lib = Deno.dlopen(name, SYMBOLS).symbols;
        break;
      } catch {
        // not installed under this name: try the next
      }
    }
  } catch {
    lib = null; // no FFI: node:crypto it is
  }
  return lib;
}

class EvpHash implements OffThreadHash {
  readonly #lib: Libcrypto;
  #ctx: Deno.PointerObject | null;

  constructor(libcrypto: Libcrypto, ctx: Deno.PointerObject) {
    this.#lib = libcrypto;
    this.#ctx = ctx;
    contexts.register(this, ctx, this);
  }

  /** The context, unless digest() has freed it (then using the hash is a bug). */
  #live(): Deno.PointerObject {
    if (this.#ctx === null) throw new Error("internal error: hash used after digest()");
    return this.#ctx;
  }

  async updateAsync(data: Uint8Array): Promise<void> {
    const ctx = this.#live();
    if (data.length === 0) return;
    if (await this.#lib.DigestUpdateAsync(ctx, data, BigInt(data.length)) !== 1) {
      throw new Error("OpenSSL EVP_DigestUpdate failed");
    }
  }

  update(data: Uint8Array): void {
    const ctx = this.#live();
    if (data.length === 0) return;
    if (this.#lib.EVP_DigestUpdate(ctx, data, BigInt(data.length)) !== 1) {
      throw new Error("OpenSSL EVP_DigestUpdate failed");
    }
  }

  digest(): string {
    const ctx = this.#live();
    const out = new Uint8Array(64);
    const length = new Uint32Array(1);
    const ok = this.#lib.EVP_DigestFinal_ex(ctx, out, Deno.UnsafePointer.of(length));
    contexts.unregister(this);
    this.#lib.EVP_MD_CTX_free(ctx);
    this.#ctx = null;
    if (ok !== 1) throw new Error("OpenSSL EVP_DigestFinal_ex failed");
    let hex = "";
    for (const b of out.subarray(0, length[0])) hex += HEX[b];
    return hex;
  }
}

/**
 * A factory of OpenSSL hashes for "sha256" or "sha512", or undefined where libcrypto cannot
 * be used (see the top of this file). Loads the library on the first call (~2 ms).
 */
export function loadLibcryptoHash():
  | ((algorithm: "sha256" | "sha512") => OffThreadHash)
  | undefined {
  const libcrypto = load();
  if (!libcrypto) return undefined;
  return (algorithm) => {
    const ctx = libcrypto.EVP_MD_CTX_new();
    if (ctx === null) throw new Error("OpenSSL EVP_MD_CTX_new failed");
    const md = algorithm === "sha256" ? libcrypto.EVP_sha256() : libcrypto.EVP_sha512();
    if (libcrypto.EVP_DigestInit_ex(ctx, md, null) !== 1) {
      libcrypto.EVP_MD_CTX_free(ctx);
      throw new Error(`OpenSSL EVP_DigestInit_ex(${algorithm}) failed`);
    }
    return new EvpHash(libcrypto, ctx);
  };
}
