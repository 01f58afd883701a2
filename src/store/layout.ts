// An OCI image layout on disk (image-spec image-layout.md) as a Store.
//
// Safety rules kept here:
// - a digest is parsed and validated before it becomes a path; paths are built from the
//   parsed parts only;
// - blobs/ and blobs/ALG/ must be real directories, blob files regular files;
// - a blob is streamed into a temp file inside the layout, verified, fsync'd and only then
//   renamed into blobs/, so content that does not match never appears there;
// - index.json is rewritten with temp + rename under an exclusive lock (flock on the
//   oci-layout file, which nobody replaces), re-read under the lock.
import { join, resolve as resolvePath } from "../path.ts";
import { loadFastHash, parseDigest, Verifier, verifyBytes } from "../digest.ts";
import { describeError, NotFoundError, UserError } from "../errors.ts";
import {
  checkDescriptor,
  type Descriptor,
  MAX_MANIFEST_SIZE,
  OCI_INDEX,
  OCI_LAYOUT_VERSION,
  REF_NAME_ANNOTATION,
  sniffMediaType,
} from "../media.ts";
import type { BlobReader, BlobSource, PushOptions, Store } from "./store.ts";
import { tempFiles } from "../tempfiles.ts";
import {
  addReferrers,
  findTagged,
  type ImageIndex,
  indexTags,
  scanReferrers,
  setTag,
  tagEntry,
} from "./index_json.ts";
import { pump, SourceError, WRITE_BUFFER } from "./pump.ts";
import { alignedBuffer, DIRECT_ALIGN, DIRECT_MIN_SIZE, DirectFile } from "./direct.ts";

const MAX_INDEX_SIZE = 64 * 1024 * 1024;
const TMP_DIR = ".umoci-copy-tmp";

export type { ImageIndex } from "./index_json.ts";

function randomSuffix(): string {
  return crypto.getRandomValues(new Uint32Array(2)).join("-");
}

// Metadata and small files (oci-layout, index.json, manifests) are read with Deno's sync
// calls: on a local disk they take microseconds, while each async call is a round trip
// through Deno's blocking-task threads (0.1-0.5 ms), and a re-pull makes a dozen of them in a
// row before it can say "nothing to do".

function lstatOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return Promise.resolve(Deno.lstatSync(path));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return Promise.resolve(null);
    return Promise.reject(e);
  }
}

function readCapped(path: string, cap: number, what: string): Promise<Uint8Array> {
  try {
    const info = Deno.lstatSync(path);
    if (!info.isFile) throw new UserError(`${what} is not a regular file`);
    if (info.size > cap) throw new UserError(`${what} is larger than ${cap} bytes; refused`);
    return Promise.resolve(Deno.readFileSync(path));
  } catch (e) {
    return Promise.reject(e);
  }
}

async function syncDir(path: string): Promise<void> {
  const d = await Deno.open(path, { read: true });
  try {
    await d.sync();
  } finally {
    d.close();
  }
}

/** Write bytes to `path` atomically: temp file beside it, fsync, rename, fsync the dir. */
async function writeFileAtomic(dir: string, name: string, bytes: Uint8Array): Promise<void> {
  const tmp = join(dir, `.${name}.${randomSuffix()}.tmp`);
  tempFiles.add(tmp);
  try {
    const f = await Deno.open(tmp, { write: true, createNew: true, mode: 0o644 });
    try {
      let off = 0;
      while (off < bytes.length) off += await f.write(bytes.subarray(off));
      await f.sync();
    } finally {
      f.close();
    }
    await Deno.rename(tmp, join(dir, name));
    tempFiles.delete(tmp);
    await syncDir(dir);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    tempFiles.delete(tmp);
    throw e;
  }
}

const encoder = new TextEncoder();

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Feed the first `length` bytes of `file` to the verifier (resuming a partial download). */
async function rehash(file: Deno.FsFile, length: number, verifier: Verifier): Promise<void> {
  await file.seek(0, Deno.SeekMode.Start);
  const buf = new Uint8Array(WRITE_BUFFER);
  let left = length;
  while (left > 0) {
    const n = await file.read(buf.subarray(0, Math.min(left, buf.length)));
    if (n === null) throw new UserError("partial download shrank while reading it");
    verifier.update(buf.subarray(0, n));
    left -= n;
  }
}

/** Unlink `path` if it is still the file we hold open (not a newer writer's). */
async function removeIfSameFile(path: string, file: Deno.FsFile): Promise<void> {
  const [held, named] = await Promise.all([file.stat(), Deno.lstat(path).catch(() => null)]);
  if (named && sameFile(held, named)) await Deno.remove(path).catch(() => {});
}

/** Whether two stats are of one file (where the platform gives inode numbers). */
function sameFile(a: Deno.FileInfo, b: Deno.FileInfo): boolean {
  return a.ino !== null && a.ino === b.ino && a.dev === b.dev;
}

async function writeAll(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await file.write(data.subarray(off));
}

/**
 * A direct-I/O descriptor for the partial file `file` holds (locked), or undefined. It is
 * opened by path, so it is checked to be the same file (another process could have replaced
 * the name since); where that cannot be checked, the page cache it is.
 */
async function openDirect(path: string, file: Deno.FsFile): Promise<DirectFile | undefined> {
  const direct = DirectFile.open(path);
  if (!direct) return undefined;
  const [held, opened] = [await file.stat(), direct.identity()];
  if (opened && held.ino !== null && held.ino === opened.ino && held.dev === opened.dev) {
    return direct;
  }
  direct.close();
  return undefined;
}

/** Write `data` at `position`: directly where it can, through `file` for the rest. */
async function writeAt(
  file: Deno.FsFile,
  direct: DirectFile,
  data: Uint8Array,
  position: number,
): Promise<void> {
  const done = direct.accepts(data, position) ? await direct.write(data, position) : 0;
  if (done === data.length) return;
  await file.seek(position + done, Deno.SeekMode.Start);
  await writeAll(file, data.subarray(done));
}

export class LayoutStore implements Store {
  readonly name: string;
  readonly local = true;
  readonly path: string;
  #checkedAlgDirs = new Set<string>();
  /** Blobs were renamed into blobs/ since the last directory fsync. */
  #renamed = false;
  /** Blobs this store wrote (some of) with direct I/O, by digest. */
  #direct = new Set<string>();
  /** The temp directory was made by this store (another's close() may remove it: retried). */
  #tmpReady = false;
  /** The layout does not exist yet; it is created by the first write. */
  #pending = false;

  /** Create the layout if this store was opened for a path that does not exist yet. */
  #ensure(): Promise<void> {
    if (!this.#pending) return Promise.resolve();
    // Concurrent first writes (one per blob job) share one creation.
    this.#creating ??= (async () => {
      await this.#initialize();
      await this.#validate();
      this.#pending = false;
    })().finally(() => this.#creating = undefined);
    return this.#creating;
  }
  #creating?: Promise<void>;

  private constructor(path: string) {
    this.path = path;
    this.name = `layout ${path}`;
  }

  /**
   * Open an existing layout. With `create`, a path that does not exist (or is an empty
   * directory) becomes a new layout; anything else that is not a layout is refused
   * without writing anything.
   */
  static async open(path: string, opts: { create?: boolean } = {}): Promise<LayoutStore> {
    const store = new LayoutStore(path);
    const info = await lstatOrNull(path).catch((e) => {
      throw new UserError(`cannot access ${path}: ${(e as Error).message}`);
    });
    if (info === null) {
      if (!opts.create) throw new NotFoundError(`${path}: no such OCI image layout`);
      // Created on the first write, so a copy that fails before writing leaves nothing.
      store.#pending = true;
      return store;
    } else if (!info.isDirectory) {
      throw new UserError(`${path} exists and is not a directory (not an OCI image layout)`);
    } else if ((await lstatOrNull(join(path, "oci-layout"))) === null) {
      let empty = true;
      for await (const _ of Deno.readDir(path)) {
        empty = false;
        break;
      }
      if (!empty || !opts.create) {
        throw new UserError(`${path} exists and is not an OCI image layout (no oci-layout file)`);
      }
      store.#pending = true;
      return store;
    }
    await store.#validate();
    return store;
  }

  /** Build a layout in a temp directory beside `path`, then rename it into place. */
  async #initialize(): Promise<void> {
    try {
      await this.#create();
    } catch (e) {
      // A missing Deno permission is explained as it is everywhere else (errors.ts).
      if (e instanceof UserError || e instanceof Deno.errors.NotCapable) throw e;
      // The layout is built in a temporary directory beside it: an error naming that
      // directory would name a path the user never gave.
      const parent = resolvePath(resolvePath(this.path), "..");
      const why = e instanceof Deno.errors.PermissionDenied
        ? `permission denied writing in ${parent}`
        : describeError(e).replaceAll(/\S*\.umoci-copy-init-[0-9-]+\S*/g, parent);
      throw new UserError(`cannot create the layout ${this.path}: ${why}`);
    }
  }

  /** Build an empty layout beside `path` and rename it into place (see #initialize). */
  async #create(): Promise<void> {
    const abs = resolvePath(this.path);
    const parent = resolvePath(abs, "..");
    await Deno.mkdir(parent, { recursive: true });
    const tmp = join(parent, `.umoci-copy-init-${randomSuffix()}`);
    tempFiles.add(tmp);
    try {
      await Deno.mkdir(join(tmp, "blobs", "sha256"), { recursive: true });
      await writeFileAtomic(
        tmp,
        "oci-layout",
        encoder.encode(JSON.stringify({ imageLayoutVersion: OCI_LAYOUT_VERSION })),
      );
      await writeFileAtomic(
        tmp,
        "index.json",
        encoder.encode(
          JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] }),
        ),
      );
      try {
        // rename(2) replaces an empty directory and fails on a non-empty one: whoever
        // wins a race to create the layout, everyone then opens the same valid layout.
        await Deno.rename(tmp, abs);
        await syncDir(parent);
      } catch (e) {
        const existing = await lstatOrNull(join(abs, "oci-layout"));
        if (existing === null) throw e;
      }
    } finally {
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
      tempFiles.delete(tmp);
    }
  }

  async #validate(): Promise<void> {
    const layoutFile = join(this.path, "oci-layout");
    let version: unknown;
    try {
      version = JSON.parse(
        new TextDecoder().decode(await readCapped(layoutFile, 64 * 1024, `${layoutFile}`)),
      )?.imageLayoutVersion;
    } catch (e) {
      if (e instanceof UserError) throw e;
      throw new UserError(`${layoutFile} is not valid JSON`);
    }
    if (version !== OCI_LAYOUT_VERSION) {
      throw new UserError(
        `${this.path}: unsupported imageLayoutVersion ${JSON.stringify(version)} (need "1.0.0")`,
      );
    }
    const blobs = await lstatOrNull(join(this.path, "blobs"));
    if (blobs === null) throw new UserError(`${this.path} is not an OCI image layout: no blobs/`);
    if (blobs.isSymlink) throw new UserError(`${this.path}/blobs is a symlink; refused`);
    if (!blobs.isDirectory) throw new UserError(`${this.path}/blobs is not a directory`);
    await this.readIndex();
  }

  /** Read and check index.json. */
  async readIndex(): Promise<ImageIndex> {
    if (this.#pending) return { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] };
    const file = join(this.path, "index.json");
    const info = await lstatOrNull(file);
    if (info === null) {
      throw new UserError(`${this.path} is not an OCI image layout: no index.json`);
    }
    // A failed read (too many open files, EIO) is its own error, not "not valid JSON".
    const bytes = await readCapped(file, MAX_INDEX_SIZE, file);
    let doc: unknown;
    try {
      doc = JSON.parse(new TextDecoder().decode(bytes));
    } catch {
      throw new UserError(`${file} is not valid JSON`);
    }
    if (
      typeof doc !== "object" || doc === null || !Array.isArray((doc as ImageIndex).manifests)
    ) {
      throw new UserError(`${file} is not an image index (no manifests list)`);
    }
    return doc as ImageIndex;
  }

  /** Every tag (`org.opencontainers.image.ref.name`) in index.json, sorted, each once. */
  async listTags(): Promise<string[]> {
    return indexTags(await this.readIndex());
  }

  /** The directory holding blobs of one algorithm, checked to be a real directory. */
  async #algDir(algorithm: string, create: boolean): Promise<string> {
    const dir = join(this.path, "blobs", algorithm);
    if (this.#checkedAlgDirs.has(dir)) return dir;
    const blobs = await lstatOrNull(join(this.path, "blobs"));
    if (blobs?.isSymlink || (blobs && !blobs.isDirectory)) {
      throw new UserError(`${this.path}/blobs is not a plain directory; refused`);
    }
    let info = await lstatOrNull(dir);
    if (info === null && create) {
      await Deno.mkdir(dir, { recursive: true });
      info = await Deno.lstat(dir);
    }
    if (info === null) return dir;
    if (info.isSymlink) throw new UserError(`${dir} is a symlink; refused`);
    if (!info.isDirectory) throw new UserError(`${dir} is not a directory`);
    this.#checkedAlgDirs.add(dir);
    return dir;
  }

  /** Path of a blob, built from the validated parts of its digest. */
  async blobPath(digest: string, create = false): Promise<string> {
    const { algorithm, encoded } = parseDigest(digest);
    return join(await this.#algDir(algorithm, create), encoded);
  }

  async #blobInfo(digest: string): Promise<Deno.FileInfo | null> {
    if (this.#pending) {
      parseDigest(digest);
      return null;
    }
    const path = await this.blobPath(digest);
    const info = await lstatOrNull(path);
    if (info === null) return null;
    if (!info.isFile) throw new UserError(`${path} is not a regular file; refused`);
    return info;
  }

  async resolve(ref: { tag?: string; digest?: string }): Promise<Descriptor> {
    const index = await this.readIndex();
    if (ref.digest !== undefined) {
      const reference = ref.digest;
      parseDigest(reference);
      const entry = index.manifests.find((m) => m?.digest === reference);
      if (entry) return checkDescriptor(entry, `${this.path}/index.json`);
      const info = await this.#blobInfo(reference);
      if (info === null) throw new NotFoundError(`${reference} not found in ${this.path}`);
      if (info.size > MAX_MANIFEST_SIZE) {
        throw new UserError(`${reference} in ${this.path} is too large to be a manifest`);
      }
      const bytes = await Deno.readFile(await this.blobPath(reference));
      const mediaType = sniffMediaType(bytes);
      if (!mediaType) throw new UserError(`${reference} in ${this.path} is not a manifest`);
      return { mediaType, digest: reference, size: info.size };
    }
    return findTagged(index, ref.tag ?? "latest", `${this.path}/index.json`, this.path);
  }

  /** The distinct ref.names in index.json, in their order there. */
  async sampleTags(max: number): Promise<{ tags: string[]; more: boolean }> {
    const names = new Set<string>();
    for (const m of (await this.readIndex()).manifests) {
      const name = m?.annotations?.[REF_NAME_ANNOTATION];
      if (typeof name === "string") names.add(name);
    }
    const tags = [...names];
    return { tags: tags.slice(0, max), more: tags.length > max };
  }

  async exists(desc: Descriptor): Promise<boolean> {
    const info = await this.#blobInfo(desc.digest);
    return info !== null && info.size === desc.size;
  }

  async fetch(desc: Descriptor, offset = 0): Promise<BlobReader> {
    const path = await this.blobPath(desc.digest);
    const info = await this.#blobInfo(desc.digest);
    if (info === null) throw new NotFoundError(`blob ${desc.digest} not found in ${this.path}`);
    const file = await Deno.open(path, { read: true });
    if (offset > 0) await file.seek(offset, Deno.SeekMode.Start);
    return { stream: file.readable, offset };
  }

  async fetchManifest(desc: Descriptor): Promise<Uint8Array> {
    if (desc.size > MAX_MANIFEST_SIZE) {
      throw new UserError(`manifest ${desc.digest} is larger than ${MAX_MANIFEST_SIZE} bytes`);
    }
    const info = await this.#blobInfo(desc.digest);
    if (info === null) throw new NotFoundError(`manifest ${desc.digest} not found in ${this.path}`);
    const bytes = await readCapped(
      await this.blobPath(desc.digest),
      MAX_MANIFEST_SIZE,
      desc.digest,
    );
    await verifyBytes(bytes, desc.digest, desc.size);
    return bytes;
  }

  async #tmpDir(fresh = false): Promise<string> {
    const dir = join(this.path, TMP_DIR);
    if (fresh || !this.#tmpReady) await Deno.mkdir(dir, { recursive: true });
    this.#tmpReady = true;
    return dir;
  }

  /**
   * Open (creating) a partial file in the temp directory. Another process's close() may
   * remove the temp directory when it looks empty, between our mkdir and open: try again.
   */
  async #openPartial(name: string): Promise<{ path: string; file: Deno.FsFile }> {
    for (let attempt = 0;; attempt++) {
      const path = join(await this.#tmpDir(attempt > 0), name);
      try {
        const file = await Deno.open(path, { read: true, write: true, create: true, mode: 0o644 });
        return { path, file };
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound) || attempt >= 20) throw e;
      }
    }
  }

  /**
   * Whether this store wrote the blob `digest` (some or all of it) with direct I/O
   * (direct.ts), for the debug log and its tests.
   */
  wroteDirectly(digest: string): boolean {
    return this.#direct.has(digest);
  }

  /**
   * Store a blob read from `source`, resumably. Bytes go to a partial file named after the
   * digest in the layout's temp directory, held under an exclusive lock (a concurrent copy
   * of the same blob waits, then finds it done). A partial file left by an interrupted run
   * is re-hashed and continued from where it ended; when the source breaks mid-body the
   * transfer continues from the last verified byte. Only a complete, verified, fsync'd file
   * is renamed into blobs/.
   */
  async push(
    desc: Descriptor,
    source: BlobSource,
    onProgress?: (bytes: number) => void,
    opts: PushOptions = {},
  ): Promise<void> {
    const retries = opts.retries ?? 5;
    await this.#ensure();
    const final = await this.blobPath(desc.digest, true);
    await loadFastHash(desc.size);
    const { algorithm, encoded } = parseDigest(desc.digest);
    const { path: partial, file } = await this.#openPartial(`${algorithm}-${encoded}.partial`);
    let direct: DirectFile | undefined;
    try {
      await file.lock(true);
      if (await this.exists(desc)) {
        // Another writer finished this blob while we waited for the lock.
        await removeIfSameFile(partial, file);
        return;
      }
      let verifier = new Verifier(desc.digest, desc.size);
      let offset = (await file.stat()).size;
      if (offset > desc.size) {
        await file.truncate(0);
        offset = 0;
      }
      // The file position is 0 right after opening; anything that read or wrote it moved it
      // (rehash reads to the end, also when what it read turns out wrong and is truncated).
      let moved = offset > 0;
      if (offset > 0) await rehash(file, offset, verifier);
      if (offset === desc.size) {
        // A complete download that was interrupted before its rename: just verify it.
        try {
          await verifier.finish();
          offset = -1;
        } catch {
          await file.truncate(0);
          verifier = new Verifier(desc.digest, desc.size);
          offset = 0;
        }
      }
      let resumedPartial = offset > 0;
      let announced = false;
      let failures = 0;
      let progressMark = offset;
      while (offset >= 0) {
        const reader = await source(offset);
        if (reader.offset !== offset) {
          if (reader.offset !== 0) {
            await reader.stream.cancel().catch(() => {});
            throw new UserError(`${desc.digest}: source resumed at an unexpected offset`);
          }
          // The source could not start where we are: start over from byte 0.
          await file.truncate(0);
          verifier = new Verifier(desc.digest, desc.size);
          offset = 0;
          resumedPartial = false;
        }
        if (resumedPartial && !announced) {
          announced = true;
          opts.onResume?.(offset);
        }
        if (offset > 0 || moved) await file.seek(offset, Deno.SeekMode.Start);
        moved = true;
        direct ??= desc.size >= DIRECT_MIN_SIZE ? await openDirect(partial, file) : undefined;
        try {
          await pump(reader.stream, verifier, {
            into: `layout ${this.path}`,
            write: (view, position) =>
              direct ? writeAt(file, direct, view, position) : writeAll(file, view),
            allocate: direct ? alignedBuffer : undefined,
            // A resumed download starts with a short read that brings direct writes into
            // alignment.
            firstRead: direct
              ? (position, size) => (DIRECT_ALIGN - position % DIRECT_ALIGN) % DIRECT_ALIGN || size
              : undefined,
            onProgress,
          });
        } catch (e) {
          if (!(e instanceof SourceError)) {
            // Wrong bytes, or the disk failed (full, read-only): the partial file is no use
            // to a rerun and would keep the disk full. Only a broken source keeps it.
            await removeIfSameFile(partial, file);
            throw e;
          }
          offset = verifier.seen;
          // Count failures in a row without real progress; real progress earns new tries.
          if (offset - progressMark >= 1024 * 1024) failures = 0;
          progressMark = offset;
          if (++failures > retries) {
            throw new UserError(
              `${desc.digest}: download broke off at byte ${offset} of ${desc.size}: ${
                describeError(e.cause)
              } (the partial download is kept; run the copy again to resume)`,
            );
          }
          await sleep(Math.min(5000, 100 * 2 ** failures) * (0.5 + Math.random()));
          continue;
        }
        try {
          await verifier.finish();
        } catch (e) {
          if (resumedPartial) {
            // The kept partial file may have been the bad part: one more try from zero.
            await file.truncate(0);
            verifier = new Verifier(desc.digest, desc.size);
            offset = 0;
            resumedPartial = false;
            opts.onResume?.(0);
            continue;
          }
          await removeIfSameFile(partial, file);
          throw e;
        }
        break;
      }
      await file.syncData(); // the data must be on disk before the rename publishes it
      // Whatever went wrong above, a file of another size is never published.
      const written = (await file.stat()).size;
      if (written !== desc.size) {
        await removeIfSameFile(partial, file);
        throw new UserError(`${desc.digest}: wrote ${written} bytes, expected ${desc.size}`);
      }
      await Deno.rename(partial, final);
      this.#renamed = true;
      if (direct && direct.written > 0) this.#direct.add(desc.digest);
    } finally {
      direct?.close();
      file.close();
    }
  }

  async pushManifest(desc: Descriptor, bytes: Uint8Array, tag?: string): Promise<void> {
    await verifyBytes(bytes, desc.digest, desc.size);
    if (!(await this.exists(desc))) {
      await this.push(
        desc,
        (offset) =>
          Promise.resolve({ stream: ReadableStream.from([bytes.subarray(offset)]), offset }),
      );
    }
    if (tag !== undefined) await this.tag(desc, tag);
  }

  /** Make every blob rename durable (one directory fsync per algorithm). */
  async sync(): Promise<void> {
    if (!this.#renamed) return;
    for (const dir of this.#checkedAlgDirs) await syncDir(dir);
    this.#renamed = false;
  }

  /**
   * Point `tag` at desc in index.json: every entry with that ref.name is replaced, all
   * others are kept. Runs under an exclusive lock and re-reads index.json under it.
   */
  async tag(desc: Descriptor, tag: string): Promise<void> {
    if (!(await this.exists(desc))) {
      throw new UserError(`cannot tag ${desc.digest}: not present in ${this.path}`);
    }
    await this.sync();
    const entry = tagEntry(desc, tag);
    // Already so (a re-pull): leave index.json alone, no lock, no write, no fsync.
    if (!setTag(await this.readIndex(), entry)) return;
    await this.updateIndex((index) => setTag(index, entry));
  }

  /** Read-modify-write index.json under the layout lock; `change` returns false for no-op. */
  async updateIndex(change: (index: ImageIndex) => boolean | void): Promise<void> {
    await this.#ensure();
    const lock = await Deno.open(join(this.path, "oci-layout"), { read: true });
    try {
      await lock.lock(true);
      const index = await this.readIndex();
      if (change(index) === false) return;
      try {
        await writeFileAtomic(this.path, "index.json", encoder.encode(JSON.stringify(index)));
      } catch (e) {
        // A full disk's error names no file: say which layout's index.json it was.
        const why = describeError(e);
        if (e instanceof UserError || why.includes(this.path)) throw e;
        throw new UserError(`layout ${this.path}: writing index.json: ${why}`);
      }
    } finally {
      lock.close();
    }
  }

  // -------------------------------------------------------------------------------------
  // Referrers and tags (optional capabilities, see ./referrers.ts)

  /** Subject digest → its referrers among index.json's entries, read once per store. */
  #referrerMap?: Promise<Map<string, Descriptor[]>>;

  /**
   * The referrers of `subject` in this layout: the OCI manifests and indexes listed in
   * index.json (tagged or not) whose `subject` is `subject.digest`, with `artifactType` and
   * `annotations` as the referrers API gives them; filtered to `artifactTypes` when given.
   * The first call reads every such manifest once (each verified against its digest); a
   * listed manifest whose blob is absent is skipped. Throws UserError for a manifest that
   * does not match its digest or an unreadable index.json.
   */
  async referrers(subject: Descriptor, artifactTypes?: readonly string[]): Promise<Descriptor[]> {
    this.#referrerMap ??= this.#scanReferrers();
    const all = (await this.#referrerMap).get(subject.digest) ?? [];
    if (!artifactTypes?.length) return all;
    return all.filter((d) => artifactTypes.includes(d.artifactType ?? ""));
  }

  async #scanReferrers(): Promise<Map<string, Descriptor[]>> {
    return await scanReferrers(
      await this.readIndex(),
      `${this.path}/index.json`,
      (d) => this.exists(d),
      (d) => this.fetchManifest(d),
    );
  }

  /**
   * List `referrers` (manifests already in blobs/) in index.json without a `ref.name`, as
   * an image layout keeps untagged manifests, so that `umoci gc` and other tools keep them
   * and a later copy finds them. A digest already listed without a name is not listed again;
   * index.json is not rewritten when nothing is missing. Throws UserError when a referrer's
   * blob is absent (no entry ever points at missing content).
   */
  async recordReferrers(_subject: Descriptor, referrers: Descriptor[]): Promise<void> {
    for (const r of referrers) {
      if (!(await this.exists(r))) {
        throw new UserError(`cannot list referrer ${r.digest}: not present in ${this.path}`);
      }
    }
    // Checked first without the lock: a rerun leaves index.json alone.
    if (!addReferrers(await this.readIndex(), referrers)) return;
    await this.sync();
    await this.updateIndex((index) => addReferrers(index, referrers));
  }

  close(): Promise<void> {
    // Remove our temp directory if nothing else is in it (another writer may be using it).
    // Synchronously: rmdir(2) of an empty or absent directory is quick, and the first async
    // file operation of a run that wrote nothing (a re-pull) waited 0.5-4 ms for a thread.
    try {
      Deno.removeSync(join(this.path, TMP_DIR));
    } catch {
      // not empty (another writer's partial files), or not there
    }
    return Promise.resolve();
  }
}
