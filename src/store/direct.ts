// Direct I/O (O_DIRECT) for writing large blobs into a layout.
//
// A pulled layer is written once and never read back by this process. Through the page cache
// each MiB first needs fresh page-cache memory and a copy into it, and the final fdatasync
// then waits for all of it to be written back. On VMs that hand freed memory back to the host
// (virtio-balloon free page reporting) that first touch dominates: on the 2-core benchmark VM
// `dd` writes 512 MiB with fdatasync in 1.9 s, 1.7 s of it kernel time, and with O_DIRECT in
// 0.33 s. With O_DIRECT the bytes go from our buffer to the device.
//
// Deno has no O_DIRECT open flag. node:fs has one, but its writes (even the callback API)
// block the main thread, and a worker thread to run them costs 25 MiB. So the file is opened
// and written through libc with Deno's FFI: `pwrite` is declared non-blocking, so it runs on
// Deno's blocking-task threads and returns a promise while the main thread keeps reading
// sockets and hashing. This needs --allow-ffi; without it, or where O_DIRECT is refused
// (tmpfs, some network and FUSE filesystems), blobs are written through the page cache.
//
// O_DIRECT wants the buffer address, the file offset and the length aligned to the logical
// block size (4 KiB covers every common device). Buffers are allocated with an aligned start;
// a chunk that is not aligned (a blob's tail, the start of a resumed download) or a direct
// write that fails goes through the ordinary file handle, whose error is the one reported.
// UMOCI_DIRECT_IO=0 turns direct I/O off.

import { envVar } from "../env.ts";

/** Blobs at least this large are written with direct I/O. */
export const DIRECT_MIN_SIZE = 16 * 1024 * 1024;
export const DIRECT_ALIGN = 4096;

const SYMBOLS = {
  open: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  pwrite: { parameters: ["i32", "pointer", "usize", "i64"], result: "isize", nonblocking: true },
  close: { parameters: ["i32"], result: "i32" },
  // statx(2), exported by glibc since 2.28 (fstat only since 2.33): without it there is no
  // way to check which file the descriptor opened, and direct I/O is not used.
  statx: { parameters: ["i32", "buffer", "i32", "u32", "buffer"], result: "i32", optional: true },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** O_DIRECT differs between architectures. */
const O_DIRECT: Record<string, number> = { x86_64: 0o40000, aarch64: 0o200000 };
const O_WRONLY = 1;
const O_CLOEXEC = 0o2000000;
const AT_EMPTY_PATH = 0x1000;
const STATX_INO = 0x100;

let libc: Libc | null | undefined;
/** Bytes written with direct I/O by this process (for tests and debugging). */
let directBytes = 0;

export function directBytesWritten(): number {
  return directBytes;
}

function loadLibc(): Libc | null {
  if (libc !== undefined) return libc;
  libc = null;
  if (Deno.build.os !== "linux" || !O_DIRECT[Deno.build.arch]) return null;
  if (envVar("UMOCI_DIRECT_IO") === "0") return null;
  try {
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return null;
    libc = Deno.dlopen("libc.so.6", SYMBOLS).symbols;
  } catch {
    libc = null; // no libc.so.6 (musl), no FFI: the page cache it is
  }
  return libc;
}

function address(view: Uint8Array): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(view)));
}

/** A buffer of `size` bytes whose start is block-aligned (direct I/O must be available). */
export function alignedBuffer(size: number): Uint8Array<ArrayBuffer> {
  const raw = new Uint8Array(size + DIRECT_ALIGN);
  const misaligned = Number(address(raw) % BigInt(DIRECT_ALIGN));
  const start = misaligned === 0 ? 0 : DIRECT_ALIGN - misaligned;
  return raw.subarray(start, start + size);
}

/** An O_DIRECT descriptor for one blob's partial file. */
export class DirectFile {
  readonly #libc: Libc;
  #fd: number;
  #refused = false;
  #written = 0;

  private constructor(lib: Libc, fd: number) {
    this.#libc = lib;
    this.#fd = fd;
  }

  /** Open `path` (which exists) for direct writes; undefined where that is off or refused. */
  static open(path: string): DirectFile | undefined {
    const lib = loadLibc();
    if (!lib) return undefined;
    const cpath = new TextEncoder().encode(path + "\0");
    const fd = lib.open(cpath, O_WRONLY | O_CLOEXEC | O_DIRECT[Deno.build.arch], 0);
    return fd >= 0 ? new DirectFile(lib, fd) : undefined;
  }

  /**
   * The device and inode numbers of the open file, as Deno.FileInfo gives them (`dev` is
   * glibc's makedev of the major and minor numbers), or undefined where libc has no `statx`
   * or it fails. From statx(2) on the descriptor (`AT_EMPTY_PATH`); `struct statx` is the
   * same on every architecture: `stx_ino` at byte 32, `stx_dev_major` and `stx_dev_minor`
   * at 136 and 140. Deno refuses to stat `/proc/self/fd/N` without --allow-all, so this is
   * how a descriptor opened by path is matched to a held file.
   */
  identity(): { dev: number; ino: number } | undefined {
    if (this.#fd < 0 || !this.#libc.statx) return undefined;
    const buf = new ArrayBuffer(256);
    const empty = new Uint8Array(1); // "" as a C string
    if (this.#libc.statx(this.#fd, empty, AT_EMPTY_PATH, STATX_INO, new Uint8Array(buf)) !== 0) {
      return undefined;
    }
    const view = new DataView(buf);
    const major = BigInt(view.getUint32(136, true));
    const minor = BigInt(view.getUint32(140, true));
    const dev = ((major & 0xfffff000n) << 32n) | ((major & 0xfffn) << 8n) |
      ((minor & 0xffffff00n) << 12n) | (minor & 0xffn);
    return { dev: Number(dev), ino: Number(view.getBigUint64(32, true)) };
  }

  /** Bytes written through this descriptor so far. */
  get written(): number {
    return this.#written;
  }

  /** The descriptor (-1 once closed). */
  get fd(): number {
    return this.#fd;
  }

  /** Whether `view` can be written directly at `position`. */
  accepts(view: Uint8Array, position: number): boolean {
    return this.#fd >= 0 && !this.#refused && position % DIRECT_ALIGN === 0 &&
      view.length % DIRECT_ALIGN === 0 &&
      address(view) % BigInt(DIRECT_ALIGN) === 0n;
  }

  /**
   * Write all of `view` at `position`. Resolves with the number of bytes written, which is
   * less than asked when a direct write failed; the caller writes the rest another way.
   * `view` must not be touched until then.
   */
  async write(view: Uint8Array, position: number): Promise<number> {
    const base = Deno.UnsafePointer.of(view);
    let done = 0;
    while (done < view.length) {
      const n = Number(
        await this.#libc.pwrite(
          this.#fd,
          Deno.UnsafePointer.offset(base!, done),
          BigInt(view.length - done),
          BigInt(position + done),
        ),
      );
      if (n <= 0) {
        // Refused (a block size above 4 KiB, a filesystem quirk) or failed: the ordinary
        // handle writes the rest of this file and reports a real error if there is one.
        this.#refused = true;
        break;
      }
      done += n;
      directBytes += n;
      this.#written += n;
      if (done % DIRECT_ALIGN !== 0) break; // the rest would be misaligned
    }
    return done;
  }

  close(): void {
    if (this.#fd < 0) return;
    this.#libc.close(this.#fd);
    this.#fd = -1;
  }
}
