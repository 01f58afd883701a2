// An OCI archive (`oci-archive:PATH`): a tar of an OCI image layout (image-spec
// image-layout.md), as skopeo's `oci-archive:` and Docker 25+'s `docker save` write it.
//
// Reading: the member headers are read once into an index (a seek past each member's data,
// nothing unpacked); blobs are read by offset with a file handle each, in parallel, and
// verified by whoever consumes them. A gzip-compressed archive (recognized by its magic
// bytes, whatever its name) is scanned once at open and read in sequential passes (see
// GzipContent). A member that ends past the end of the file, or a bad header, is an error
// naming the member at open, before anything is copied.
//
// Writing: a new archive is built in a temp file beside PATH. Each blob's place follows from
// its descriptor size (header, data padded to 512 bytes), so a region is reserved when the
// blob's transfer starts and the bytes are written straight into it, several blobs at once;
// the member header is written once the data is verified. The region of a blob that fails
// is cut out at commit(), the members after it moved down: a tar has no way to skip a gap,
// and its readers take zeros for the end. commit() appends index.json,
// oci-layout and the end-of-archive blocks, fsyncs, and renames the temp file over PATH:
// PATH holds the old archive or the complete new one, never anything in between. An existing
// archive is carried over first (copied by the kernel, copy_file_range/reflink where the
// filesystem has it, and cut before its old index.json), so the new archive holds the old
// content plus the new tags. Writers of archives in one directory are serialized by an
// exclusive lock (flock) on the directory, held from open to close.
import { join, resolve as resolvePath } from "../path.ts";
import { loadFastHash, parseDigest, Verifier, verifyBytes } from "../digest.ts";
import { describeError, NotFoundError, UsageError, UserError } from "../errors.ts";
import {
  checkDescriptor,
  type Descriptor,
  MAX_MANIFEST_SIZE,
  OCI_INDEX,
  OCI_LAYOUT_VERSION,
  sniffMediaType,
} from "../media.ts";
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
import { pump, SourceError } from "./pump.ts";
import type { BlobReader, BlobSource, PushOptions, Store } from "./store.ts";
import {
  type ArchiveContent,
  gunzip,
  GzipContent,
  PlainContent,
  readAt,
  scanMembers,
  StreamCursor,
} from "./archive_content.ts";
import { encodeHeader, END_OF_ARCHIVE, headerLength, padded, type TarMember } from "./tar.ts";

const MAX_INDEX_SIZE = 64 * 1024 * 1024;
/** Members of a gzip archive this small are kept in memory by the scan (manifests, configs). */
const GZIP_CACHE_MEMBER = 256 * 1024;
/** …up to this much in all. */
const GZIP_CACHE_TOTAL = 16 * 1024 * 1024;
const encoder = new TextEncoder();

/** The tar path of a blob: `blobs/ALG/HEX` (the digest is validated first). */
export function blobMemberName(digest: string): string {
  const { algorithm, encoded } = parseDigest(digest);
  return `blobs/${algorithm}/${encoded}`;
}

function isGzip(head: Uint8Array): boolean {
  return head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b;
}

/** The directory part of an absolute, normalized path. */
function dirname(abs: string): string {
  return abs.slice(0, Math.max(1, abs.lastIndexOf("/")));
}

function randomSuffix(): string {
  return crypto.getRandomValues(new Uint32Array(2)).join("-");
}

async function syncDir(path: string): Promise<void> {
  const d = await Deno.open(path, { read: true });
  try {
    await d.sync();
  } finally {
    d.close();
  }
}

async function writeAllAt(file: Deno.FsFile, data: Uint8Array, position: number): Promise<void> {
  await file.seek(position, Deno.SeekMode.Start);
  let off = 0;
  while (off < data.length) off += await file.write(data.subarray(off));
}

/** Fill `buf` from `position` of `file`; throws when the file ends first. */
async function readAllAt(file: Deno.FsFile, buf: Uint8Array, position: number): Promise<void> {
  await file.seek(position, Deno.SeekMode.Start);
  let off = 0;
  while (off < buf.length) {
    const n = await file.read(buf.subarray(off));
    if (n === null) throw new Error(`internal error: archive temp file ends at ${position + off}`);
    off += n;
  }
}

/** A blob written into the new archive in this session. */
interface Written {
  /** Where its member header starts, and its data. */
  headerOffset: number;
  dataOffset: number;
  size: number;
}

/** The temp file a new archive is built in. */
interface Writer {
  tmp: string;
  /** For headers and the closing members; blob data goes through handles of their own. */
  file: Deno.FsFile;
  /** Where the next member starts. */
  end: number;
  /** Directory members present (`blobs`, `blobs/sha256`). */
  dirs: Set<string>;
  /**
   * Regions reserved for blobs whose transfer failed, as [start, end) byte offsets: commit()
   * cuts them out, so a job that goes on past a failed image still publishes the others.
   */
  holes: [number, number][];
}

export class ArchiveStore implements Store {
  readonly name: string;
  readonly local = true;
  readonly path: string;

  /** The tar member holding the blob (see Store.describeBlob). */
  describeBlob(desc: Descriptor): string {
    return `member ${blobMemberName(desc.digest)}`;
  }
  /** Members of the archive at PATH when it was opened (empty for a new archive). */
  #members = new Map<string, TarMember>();
  #content?: ArchiveContent;
  #gzip = false;
  #index: ImageIndex = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] };
  /** PATH existed when opened (then it is carried over into a rewrite). */
  #exists = false;
  #stat?: Deno.FileInfo;
  /** Opened as a destination: may be written. */
  #writable: boolean;
  #lock?: Deno.FsFile;
  #writer?: Writer;
  #starting?: Promise<Writer>;
  #written = new Map<string, Written>();
  #inflight = new Map<string, Promise<void>>();
  /** index.json was changed (a tag), so commit() must write a new archive. */
  #indexChanged = false;
  #committed = false;

  private constructor(path: string, writable: boolean) {
    this.path = path;
    this.name = `archive ${path}`;
    this.#writable = writable;
  }

  /**
   * Open the archive at `path`. With `create` (a destination) a path that does not exist is
   * fine: the archive is written by commit(); the directory holding it is locked (flock)
   * until close(). Throws NotFoundError for a missing source, UserError for a path that is
   * not an OCI archive (a directory, not a tar, no oci-layout or index.json, a member that
   * ends past the end of the file, a bad header; each message names the member), and for an
   * existing gzip-compressed destination; UsageError for a destination named .tar.gz/.tgz
   * (writing compressed archives is not supported).
   */
  static async open(path: string, opts: { create?: boolean } = {}): Promise<ArchiveStore> {
    const store = new ArchiveStore(path, opts.create === true);
    try {
      if (opts.create) {
        if (/\.(t?gz|gzip)$/i.test(path)) {
          // Known from the command line alone: a usage error (exit 2).
          throw new UsageError(
            `${path}: writing gzip-compressed archives is not supported (name it .tar)`,
          );
        }
        await store.#lockDirectory(false);
      }
      await store.#load();
    } catch (e) {
      await store.close();
      throw e;
    }
    return store;
  }

  /** Lock the directory PATH lives in; with `create`, make it first. */
  async #lockDirectory(create: boolean): Promise<void> {
    if (this.#lock) return;
    const dir = dirname(resolvePath(this.path));
    if (create) await Deno.mkdir(dir, { recursive: true });
    let handle: Deno.FsFile;
    try {
      handle = await Deno.open(dir, { read: true });
    } catch (e) {
      if (!create && e instanceof Deno.errors.NotFound) return; // made at the first write
      throw e;
    }
    try {
      await handle.lock(true);
    } catch (e) {
      handle.close();
      throw e;
    }
    this.#lock = handle;
  }

  async #load(): Promise<void> {
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(this.path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        if (this.#writable) return;
        throw new NotFoundError(`${this.path}: no such OCI archive`);
      }
      throw new UserError(`cannot access ${this.path}: ${describeError(e)}`);
    }
    const refuse = (why: string) =>
      new UserError(
        this.#writable
          ? `${this.path} exists and is not an OCI archive (${why}); refused`
          : `${this.path} is not an OCI archive: ${why}`,
      );
    if (info.isDirectory) {
      throw new UserError(
        `${this.path} is a directory; an OCI archive is a tar file (for a layout, drop "oci-archive:")`,
      );
    }
    if (!info.isFile) throw refuse("not a regular file");
    this.#exists = true;
    this.#stat = info;
    const file = await Deno.open(this.path, { read: true });
    let end: number;
    try {
      const head = await readAt(file, 0, 2);
      this.#gzip = isGzip(head);
      if (this.#gzip && this.#writable) {
        throw new UserError(
          `${this.path} is gzip-compressed; writing into compressed archives is not supported`,
        );
      }
      if (this.#gzip) {
        end = await this.#scanGzip();
      } else {
        end = await scanMembers(this.path, (o, n) => readAt(file, o, n), (m) => this.#add(m))
          .catch((e) => {
            if (!this.#writable || !(e instanceof UserError)) throw e;
            throw refuse(e.message.slice(this.path.length + 2));
          });
        this.#content = new PlainContent(this.path, this.path);
      }
    } finally {
      file.close();
    }
    if (!this.#gzip) {
      for (const m of this.#members.values()) {
        if (m.dataOffset + m.size > info.size) {
          throw new UserError(
            `${this.path}: member ${m.name} is truncated: its ${m.size} bytes end at byte ${
              m.dataOffset + m.size
            }, the file has ${info.size}`,
          );
        }
      }
      if (end > info.size && this.#members.size > 0) {
        // Padding of the last member missing: harmless, but say it is not a complete tar.
        const last = [...this.#members.values()].sort((a, b) => b.dataOffset - a.dataOffset)[0];
        throw new UserError(`${this.path}: member ${last.name} is truncated (padding missing)`);
      }
    }
    if (this.#members.size === 0) throw refuse("no tar members");
    this.#resolveLinks();
    const layout = this.#members.get("oci-layout");
    if (!layout || layout.type !== "file") throw refuse("no oci-layout member");
    let version: unknown;
    try {
      version = JSON.parse(new TextDecoder().decode(await this.#memberBytes(layout, 64 * 1024)))
        ?.imageLayoutVersion;
    } catch (e) {
      if (e instanceof UserError) throw e;
      throw refuse("its oci-layout is not valid JSON");
    }
    if (version !== OCI_LAYOUT_VERSION) {
      throw new UserError(
        `${this.path}: unsupported imageLayoutVersion ${JSON.stringify(version)} (need "1.0.0")`,
      );
    }
    const indexMember = this.#members.get("index.json");
    if (!indexMember || indexMember.type !== "file") throw refuse("no index.json member");
    let doc: unknown;
    try {
      doc = JSON.parse(
        new TextDecoder().decode(await this.#memberBytes(indexMember, MAX_INDEX_SIZE)),
      );
    } catch (e) {
      if (e instanceof UserError) throw e;
      throw new UserError(`${this.path}: member index.json is not valid JSON`);
    }
    if (
      typeof doc !== "object" || doc === null || !Array.isArray((doc as ImageIndex).manifests)
    ) {
      throw new UserError(`${this.path}: member index.json is not an image index`);
    }
    this.#index = doc as ImageIndex;
  }

  /** Record a member; later members of one name replace earlier ones (tar semantics). */
  #add(m: TarMember): void {
    this.#members.set(m.name, m);
  }

  /**
   * Let hard links and symbolic links to regular members stand for them (a link may come
   * before its target, so this runs after the scan). A hard link names its target from the
   * archive's root, a symbolic link from its own directory; at most 8 links are followed, and
   * links that lead elsewhere are left as they are (and never read).
   */
  #resolveLinks(): void {
    for (const [name, m] of this.#members) {
      let target: TarMember | undefined = m;
      for (let hops = 0; target && target.type !== "file" && hops < 8; hops++) {
        if (target.linkName === undefined) break;
        const next: string = target.type === "hardlink"
          ? target.linkName
          : join(target.name.slice(0, target.name.lastIndexOf("/") + 1) || ".", target.linkName);
        target = this.#members.get(next);
      }
      if (target?.type === "file" && target !== m) {
        this.#members.set(name, { ...target, name, headerOffset: m.headerOffset });
      }
    }
  }

  /** Scan a gzip archive once: every header, and small members kept in memory. */
  async #scanGzip(): Promise<number> {
    const content = new GzipContent(this.path, this.path);
    this.#content = content;
    const cursor = new StreamCursor(await gunzip(this.path));
    let cached = 0;
    try {
      return await scanMembers(this.path, (o, n) => cursor.read(o, n), async (m) => {
        this.#add(m);
        const wanted = m.type === "file" &&
          (m.name === "index.json" || m.name === "oci-layout" ||
            (m.name.startsWith("blobs/") && m.size <= GZIP_CACHE_MEMBER &&
              cached + m.size <= GZIP_CACHE_TOTAL));
        if (!wanted) return;
        if (m.size > MAX_INDEX_SIZE) return;
        const bytes = await cursor.read(m.dataOffset, m.size);
        if (bytes.length < m.size) {
          throw new UserError(`${this.path}: member ${m.name} is truncated`);
        }
        content.remember(m.dataOffset, bytes);
        cached += m.size;
      }).then(async (end) => {
        // Read to the end: a truncated or corrupt gzip stream fails here (its CRC and length
        // are checked at the end), naming the last member.
        const last = [...this.#members.values()].sort((a, b) => b.dataOffset - a.dataOffset)[0];
        await cursor.skipTo(Number.MAX_SAFE_INTEGER).catch((e) => {
          throw new UserError(
            `${this.path}: gzip data is corrupt or truncated${
              last ? ` (in or after member ${last.name})` : ""
            }: ${describeError(e)}`,
          );
        });
        if (last && last.dataOffset + last.size > cursor.position) {
          throw new UserError(`${this.path}: member ${last.name} is truncated`);
        }
        return end;
      });
    } catch (e) {
      if (e instanceof UserError) throw e;
      throw new UserError(`${this.path}: gzip data is corrupt or truncated: ${describeError(e)}`);
    } finally {
      await cursor.cancel();
    }
  }

  async #memberBytes(m: TarMember, cap: number): Promise<Uint8Array> {
    if (m.size > cap) {
      throw new UserError(`${this.path}: member ${m.name} is larger than ${cap} bytes`);
    }
    return await this.#content!.bytes(m.dataOffset, m.size);
  }

  /** Read index.json as it stands (with this session's tags). */
  readIndex(): ImageIndex {
    return this.#index;
  }

  /** Every tag (`org.opencontainers.image.ref.name`) in index.json, sorted, each once. */
  listTags(): Promise<string[]> {
    return Promise.resolve(indexTags(this.#index));
  }

  /** Where a blob's data is: in the old archive, or written into the new one. */
  #locate(digest: string): { source: "old" | "new"; offset: number; size: number } | undefined {
    const written = this.#written.get(digest);
    if (written) return { source: "new", offset: written.dataOffset, size: written.size };
    const m = this.#members.get(blobMemberName(digest));
    if (m && m.type === "file") return { source: "old", offset: m.dataOffset, size: m.size };
    return undefined;
  }

  async resolve(ref: { tag?: string; digest?: string }): Promise<Descriptor> {
    const where = `${this.path}: index.json`;
    if (ref.digest !== undefined) {
      const reference = ref.digest;
      const entry = this.#index.manifests.find((m) => m?.digest === reference);
      if (entry) return checkDescriptor(entry, where);
      const at = this.#locate(reference);
      if (!at) throw new NotFoundError(`${reference} not found in ${this.path}`);
      if (at.size > MAX_MANIFEST_SIZE) {
        throw new UserError(`${reference} in ${this.path} is too large to be a manifest`);
      }
      const bytes = await this.#read(at);
      const mediaType = sniffMediaType(bytes);
      if (!mediaType) throw new UserError(`${reference} in ${this.path} is not a manifest`);
      return { mediaType, digest: reference, size: at.size };
    }
    return findTagged(this.#index, ref.tag ?? "latest", where, this.path);
  }

  exists(desc: Descriptor): Promise<boolean> {
    try {
      const at = this.#locate(desc.digest);
      return Promise.resolve(at !== undefined && at.size === desc.size);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  #read(at: { source: "old" | "new"; offset: number; size: number }): Promise<Uint8Array> {
    if (at.source === "old") return this.#content!.bytes(at.offset, at.size);
    return new Response(this.#stream(at, 0)).bytes();
  }

  #stream(
    at: { source: "old" | "new"; offset: number; size: number },
    offset: number,
    what = this.path,
  ): ReadableStream<Uint8Array> {
    if (at.source === "old") return this.#content!.stream(at.offset + offset, at.size - offset);
    // Written in this session: read back from the temp file.
    return new PlainContent(this.#writer!.tmp, what).stream(at.offset + offset, at.size - offset);
  }

  fetch(desc: Descriptor, offset = 0): Promise<BlobReader> {
    try {
      const at = this.#locate(desc.digest);
      if (!at) throw new NotFoundError(`blob ${desc.digest} not found in ${this.path}`);
      if (offset > at.size) throw new UserError(`${desc.digest}: offset ${offset} past its end`);
      const member = blobMemberName(desc.digest);
      return Promise.resolve({
        stream: this.#stream(at, offset, `${this.path}: member ${member}`),
        offset,
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  async fetchManifest(desc: Descriptor): Promise<Uint8Array> {
    if (desc.size > MAX_MANIFEST_SIZE) {
      throw new UserError(`manifest ${desc.digest} is larger than ${MAX_MANIFEST_SIZE} bytes`);
    }
    const at = this.#locate(desc.digest);
    if (!at) throw new NotFoundError(`manifest ${desc.digest} not found in ${this.path}`);
    if (at.size !== desc.size) {
      throw new UserError(
        `${this.path}: member ${
          blobMemberName(desc.digest)
        } is ${at.size} bytes, descriptor says ${desc.size}`,
      );
    }
    const bytes = await this.#read(at);
    try {
      await verifyBytes(bytes, desc.digest, desc.size);
    } catch (e) {
      throw new UserError(
        `${this.path}: member ${blobMemberName(desc.digest)}: ${describeError(e)}`,
      );
    }
    return bytes;
  }

  // -------------------------------------------------------------------------------------
  // Writing

  /** The temp file of the new archive, made (and the old archive carried over) once. */
  #begin(): Promise<Writer> {
    if (this.#writer) return Promise.resolve(this.#writer);
    if (!this.#writable) {
      return Promise.reject(new Error(`internal error: ${this.path} is read-only`));
    }
    this.#starting ??= this.#startWriter().then((w) => this.#writer = w);
    return this.#starting;
  }

  async #startWriter(): Promise<Writer> {
    const abs = resolvePath(this.path);
    const dir = dirname(abs);
    const base = abs.slice(dir.length + 1);
    const hadLock = this.#lock !== undefined;
    await this.#lockDirectory(true);
    // The lock was taken only now (the directory was made just now): nobody may have
    // written PATH meanwhile, or what exists() answered would be wrong.
    const now = await Deno.stat(this.path).catch(() => undefined);
    const same = (a?: Deno.FileInfo, b?: Deno.FileInfo) =>
      a === b || (a && b && a.ino === b.ino && a.size === b.size &&
        a.mtime?.getTime() === b.mtime?.getTime());
    if (!hadLock && !same(now, this.#stat)) {
      throw new UserError(
        `${this.path} was written by another process meanwhile; run the copy again`,
      );
    }
    // Temp files of runs that were killed (we hold the lock: none is being written).
    const prefix = `.${base}.umoci-copy-`;
    for await (const e of Deno.readDir(dir)) {
      if (e.name.startsWith(prefix) && e.name.endsWith(".tmp")) {
        await Deno.remove(join(dir, e.name)).catch(() => {});
      }
    }
    const tmp = join(dir, `${prefix}${randomSuffix()}.tmp`);
    tempFiles.add(tmp);
    const dirs = new Set<string>();
    let end = 0;
    let file: Deno.FsFile | undefined;
    try {
      if (this.#exists) {
        // Carry the old archive over: everything before its first index.json/oci-layout member
        // stays where it is (a kernel copy); members after that are appended again.
        await Deno.copyFile(this.path, tmp);
        file = await Deno.open(tmp, { read: true, write: true });
        const members = [...this.#members.values()].sort((a, b) => a.headerOffset - b.headerOffset);
        const cut = members.find((m) => m.name === "index.json" || m.name === "oci-layout")!;
        end = cut.headerOffset;
        await file.truncate(end);
        for (const m of members) {
          if (m.type === "dir") dirs.add(m.name);
          if (m.headerOffset < cut.headerOffset || m.type !== "file") continue;
          if (m.name === "index.json" || m.name === "oci-layout") continue;
          const header = encodeHeader(m.name, m.size, "file");
          const dataOffset = end + header.length;
          await writeAllAt(file, header, end);
          const out = await Deno.open(tmp, { write: true });
          try {
            await out.seek(dataOffset, Deno.SeekMode.Start);
            await this.#content!.stream(m.dataOffset, m.size).pipeTo(out.writable);
          } finally {
            try {
              out.close();
            } catch { /* closed by pipeTo */ }
          }
          end = dataOffset + padded(m.size);
        }
      } else {
        file = await Deno.open(tmp, { read: true, write: true, createNew: true, mode: 0o644 });
      }
      for (const d of ["blobs", "blobs/sha256"]) {
        if (dirs.has(d)) continue;
        const header = encodeHeader(`${d}/`, 0, "dir");
        await writeAllAt(file, header, end);
        end += header.length;
        dirs.add(d);
      }
    } catch (e) {
      // A full disk while carrying the old archive over: no temp file is left behind.
      try {
        file?.close();
      } catch { /* closed */ }
      await Deno.remove(tmp).catch(() => {});
      tempFiles.delete(tmp);
      throw e;
    }
    return { tmp, file, end, dirs, holes: [] };
  }

  /** Reserve the place of a member of `size` bytes at the end; returns header and data offsets. */
  #reserve(w: Writer, name: string, size: number): { header: number; data: number } {
    const header = w.end;
    const data = header + headerLength(name, size);
    w.end = data + padded(size);
    return { header, data };
  }

  /**
   * Store a blob: its region in the new archive is reserved from the descriptor's size and
   * the bytes are written into it as they stream, verified against digest and size; the
   * member header follows once they match. A source that breaks off is resumed from the last
   * verified byte (`opts.retries` times without progress). A blob that fails (bad content, a
   * source that gives up) has its region cut out by commit(): nothing unverified is ever
   * published, and the blobs of images that did finish are.
   */
  push(
    desc: Descriptor,
    source: BlobSource,
    onProgress?: (bytes: number) => void,
    opts: PushOptions = {},
  ): Promise<void> {
    let p = this.#inflight.get(desc.digest);
    if (!p) {
      p = this.#push(desc, source, onProgress, opts).finally(() =>
        this.#inflight.delete(desc.digest)
      );
      this.#inflight.set(desc.digest, p);
    }
    return p;
  }

  async #push(
    desc: Descriptor,
    source: BlobSource,
    onProgress: ((bytes: number) => void) | undefined,
    opts: PushOptions,
  ): Promise<void> {
    if (await this.exists(desc)) return;
    const name = blobMemberName(desc.digest);
    const w = await this.#begin();
    await loadFastHash(desc.size);
    // Opened before the region is reserved: a reserved region is either filled or, on any
    // failure, recorded as a hole. Never left as zeros, which tar readers take for the end.
    const out = await Deno.open(w.tmp, { write: true });
    const place = this.#reserve(w, name, desc.size);
    try {
      await this.#pumpResumable(desc, source, out, place.data, onProgress, opts.retries ?? 5);
      await writeAllAt(out, encodeHeader(name, desc.size, "file"), place.header);
    } catch (e) {
      // The region stays reserved (later blobs may be placed after it) and is cut out of
      // the archive when it is finished.
      w.holes.push([place.header, place.data + padded(desc.size)]);
      throw e;
    } finally {
      out.close();
    }
    this.#written.set(desc.digest, {
      headerOffset: place.header,
      dataOffset: place.data,
      size: desc.size,
    });
  }

  async #pumpResumable(
    desc: Descriptor,
    source: BlobSource,
    out: Deno.FsFile,
    base: number,
    onProgress: ((bytes: number) => void) | undefined,
    retries: number,
  ): Promise<void> {
    let verifier = new Verifier(desc.digest, desc.size);
    let failures = 0;
    let mark = 0;
    for (;;) {
      const offset = verifier.seen;
      const reader = await source(offset);
      if (reader.offset !== offset) {
        if (reader.offset !== 0) {
          await reader.stream.cancel().catch(() => {});
          throw new UserError(`${desc.digest}: source resumed at an unexpected offset`);
        }
        verifier = new Verifier(desc.digest, desc.size);
      }
      try {
        await pump(reader.stream, verifier, {
          into: this.path,
          write: (view, position) => writeAllAt(out, view, base + position),
          onProgress,
        });
      } catch (e) {
        if (!(e instanceof SourceError)) throw e;
        if (verifier.seen - mark >= 1024 * 1024) failures = 0;
        mark = verifier.seen;
        if (++failures > retries) {
          throw new UserError(
            `${desc.digest}: transfer broke off at byte ${verifier.seen} of ${desc.size}: ${
              describeError(e.cause)
            }`,
          );
        }
        await new Promise((r) => setTimeout(r, Math.min(5000, 100 * 2 ** failures)));
        continue;
      }
      await verifier.finish();
      return;
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

  /**
   * Point `tag` at desc in the archive's index.json (written by commit()): every entry with
   * that ref.name is replaced, all others are kept, as in a layout.
   */
  async tag(desc: Descriptor, tag: string): Promise<void> {
    if (!(await this.exists(desc))) {
      throw new UserError(`cannot tag ${desc.digest}: not present in ${this.path}`);
    }
    const index = { ...this.#index, manifests: [...this.#index.manifests] };
    if (setTag(index, tagEntry(desc, tag))) {
      this.#index = index;
      this.#indexChanged = true;
    }
  }

  // -------------------------------------------------------------------------------------
  // Referrers (optional capabilities, see ./referrers.ts), as in a layout (./index_json.ts)

  /** Subject digest → its referrers among index.json's entries, read once per store. */
  #referrerMap?: Promise<Map<string, Descriptor[]>>;

  /**
   * The referrers of `subject` in this archive: the OCI manifests and indexes its index.json
   * lists (tagged or not) whose `subject` is `subject.digest`, as in a layout; filtered to
   * `artifactTypes` when given. The first call reads each listed manifest once (verified).
   * Throws UserError for a manifest that does not match its digest.
   */
  async referrers(subject: Descriptor, artifactTypes?: readonly string[]): Promise<Descriptor[]> {
    this.#referrerMap ??= scanReferrers(
      this.#index,
      `${this.path}: index.json`,
      (d) => this.exists(d),
      (d) => this.fetchManifest(d),
    );
    const all = (await this.#referrerMap).get(subject.digest) ?? [];
    if (!artifactTypes?.length) return all;
    return all.filter((d) => artifactTypes.includes(d.artifactType ?? ""));
  }

  /**
   * List `referrers` (stored in this archive already) in its index.json without a
   * `ref.name`, as a layout does; none twice, and nothing to write (no rewrite of the
   * archive) when all are listed. Throws UserError when a referrer's blob is absent.
   */
  async recordReferrers(_subject: Descriptor, referrers: Descriptor[]): Promise<void> {
    for (const r of referrers) {
      if (!(await this.exists(r))) {
        throw new UserError(`cannot list referrer ${r.digest}: not present in ${this.path}`);
      }
    }
    const index = { ...this.#index, manifests: [...this.#index.manifests] };
    if (addReferrers(index, referrers)) {
      this.#index = index;
      this.#indexChanged = true;
    }
  }

  /** Whether commit() has anything to write (blobs or tags were added). */
  get changed(): boolean {
    return !this.#committed && (this.#indexChanged || this.#written.size > 0);
  }

  /**
   * Finish the new archive and publish it: index.json and oci-layout members and the
   * end-of-archive blocks are appended, the file is fsync'd and renamed over PATH, and the
   * directory fsync'd. Nothing is written when no blob and no tag was added (a rerun). The
   * regions of blobs that failed are cut out first. Throws when a write fails; PATH is then
   * untouched.
   */
  async commit(): Promise<void> {
    if (this.#committed) return;
    // Every transfer into the temp file has ended (each is in #written or a hole) before
    // members are moved or the file is published.
    await Promise.allSettled([...this.#inflight.values()]);
    // Nothing new (a rerun): PATH stays as it is. (A job none of whose images finished
    // does not commit at all: cli/copy.ts.)
    if (!this.#indexChanged && this.#written.size === 0) return;
    const w = await this.#begin();
    if (w.holes.length > 0) await this.#cutHoles(w);
    for (const digest of this.#written.keys()) {
      const dir = `blobs/${parseDigest(digest).algorithm}`;
      if (w.dirs.has(dir)) continue;
      const header = encodeHeader(`${dir}/`, 0, "dir");
      await writeAllAt(w.file, header, w.end);
      w.end += header.length;
      w.dirs.add(dir);
    }
    const files: [string, Uint8Array][] = [
      ["index.json", encoder.encode(JSON.stringify(this.#index))],
      ["oci-layout", encoder.encode(JSON.stringify({ imageLayoutVersion: OCI_LAYOUT_VERSION }))],
    ];
    for (const [name, bytes] of files) {
      const place = this.#reserve(w, name, bytes.length);
      await writeAllAt(w.file, encodeHeader(name, bytes.length, "file"), place.header);
      await writeAllAt(w.file, bytes, place.data);
    }
    await writeAllAt(w.file, END_OF_ARCHIVE, w.end);
    w.end += END_OF_ARCHIVE.length;
    await w.file.truncate(w.end);
    await w.file.sync();
    await Deno.rename(w.tmp, this.path);
    tempFiles.delete(w.tmp);
    this.#committed = true;
    await syncDir(dirname(resolvePath(this.path)));
  }

  /**
   * Move the members written after the regions of failed blobs down over them, so the
   * archive holds no gap (tar has no way to skip one), and set the new end. Only commit()
   * calls this, when every transfer into the archive has ended.
   */
  async #cutHoles(w: Writer): Promise<void> {
    const holes = w.holes.sort((a, b) => a[0] - b[0]);
    const members = [...this.#written.values()].sort((a, b) => a.headerOffset - b.headerOffset);
    const buf = new Uint8Array(1024 * 1024);
    let cut = 0;
    let h = 0;
    for (const m of members) {
      while (h < holes.length && holes[h][1] <= m.headerOffset) cut += holes[h][1] - holes[h++][0];
      if (cut === 0) continue;
      // Down, front to back: each piece is read before anything is written over it. The
      // padding after the data is written afresh (the file may end before it).
      const end = m.dataOffset + m.size;
      for (let at = m.headerOffset; at < end; at += buf.length) {
        const piece = buf.subarray(0, Math.min(buf.length, end - at));
        await readAllAt(w.file, piece, at);
        await writeAllAt(w.file, piece, at - cut);
      }
      await writeAllAt(w.file, new Uint8Array(padded(m.size) - m.size), end - cut);
      m.headerOffset -= cut;
      m.dataOffset -= cut;
    }
    while (h < holes.length) cut += holes[h][1] - holes[h++][0];
    w.end -= cut;
    w.holes = [];
  }

  /** Release the lock; an archive not committed is removed (its temp file). */
  async close(): Promise<void> {
    await this.#starting?.catch(() => {});
    const w = this.#writer;
    if (w) {
      try {
        w.file.close();
      } catch { /* closed */ }
      if (!this.#committed) {
        await Deno.remove(w.tmp).catch(() => {});
        tempFiles.delete(w.tmp);
      }
      this.#writer = undefined;
    }
    try {
      this.#lock?.close();
    } catch { /* closed */ }
    this.#lock = undefined;
  }
}
