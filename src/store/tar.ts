// The tar format, as far as an OCI archive needs it (POSIX.1-2001 pax / ustar, with the GNU
// extensions real archives use when reading).
//
// Why our own code and not an npm tar package: the archive store reads blobs by offset, in
// parallel, out of the archive file, and writes blobs into regions of the new archive whose
// offsets it computes from descriptor sizes before a byte arrives. tar-stream, tar and the
// like parse and write tar as one sequential stream; none gives member offsets or writes a
// member at a given position. What is left is encoding and decoding 512-byte headers.
//
// Writing: one 512-byte ustar header per member; a member of 8 GiB or more (the ustar size
// field holds 11 octal digits) is preceded by a pax extended header carrying `size`, and a
// name longer than ustar's name/prefix fields by one carrying `path` (OCI blob paths always
// fit ustar). Data is padded to 512 bytes; the archive ends with two zero blocks.
//
// Reading: ustar, GNU (`ustar  \0`) and v7 headers; checksums verified (unsigned, and signed
// as old tars computed them); sizes in octal or GNU base-256; pax `x` headers (`path`,
// `size`, `linkpath`), pax `g` global headers (ignored), GNU `L`/`K` long names.

export const BLOCK = 512;

/** ustar's size field: 11 octal digits. */
const USTAR_MAX_SIZE = 0o77777777777;

/** Member types we distinguish (typeflag). */
export type MemberType = "file" | "dir" | "hardlink" | "symlink" | "other";

/** One member as read from an archive: where its data lies and what it is. */
export interface TarMember {
  /** The path, without a leading `./` or `/`. */
  name: string;
  type: MemberType;
  /** Byte offset of the member's header (the first extension header, if any). */
  headerOffset: number;
  /** Byte offset of the member's data in the archive (uncompressed stream). */
  dataOffset: number;
  /** Data size in bytes. */
  size: number;
  /** The link target of a hard or symbolic link. */
  linkName?: string;
}

/** Bytes of `size` rounded up to whole 512-byte blocks. */
export function padded(size: number): number {
  return Math.ceil(size / BLOCK) * BLOCK;
}

const encoder = new TextEncoder();

/** The pax record `LEN key=value\n`, whose LEN counts the whole record. */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const bodyLen = encoder.encode(body).length;
  let len = bodyLen + 1;
  while (String(len).length + bodyLen !== len) len = String(len).length + bodyLen;
  return `${len}${body}`;
}

/** Split a path into ustar's prefix (≤ 155 bytes) and name (≤ 100 bytes), if it fits. */
function splitUstarName(path: string): { prefix: string; name: string } | undefined {
  const bytes = encoder.encode(path);
  if (bytes.length <= 100) return { prefix: "", name: path };
  for (let i = path.lastIndexOf("/"); i > 0; i = path.lastIndexOf("/", i - 1)) {
    const prefix = path.slice(0, i);
    const name = path.slice(i + 1);
    if (encoder.encode(prefix).length <= 155 && encoder.encode(name).length <= 100 && name) {
      return { prefix, name };
    }
  }
  return undefined;
}

/**
 * Bytes of headers that precede a member's data: 512 for plain ustar, plus one pax header
 * and its padded records when the size or the name does not fit ustar. The archive writer
 * uses this to place members before their data exists.
 */
export function headerLength(name: string, size: number): number {
  const pax = paxRecords(name, size);
  return pax === "" ? BLOCK : BLOCK + padded(encoder.encode(pax).length) + BLOCK;
}

function paxRecords(name: string, size: number): string {
  let pax = "";
  if (!splitUstarName(name)) pax += paxRecord("path", name);
  if (size > USTAR_MAX_SIZE) pax += paxRecord("size", String(size));
  return pax;
}

function putString(block: Uint8Array, offset: number, length: number, value: string): void {
  const bytes = encoder.encode(value);
  block.set(bytes.subarray(0, length), offset);
}

/** An octal field of `length` bytes: digits, then NUL. */
function putOctal(block: Uint8Array, offset: number, length: number, value: number): void {
  putString(block, offset, length, value.toString(8).padStart(length - 1, "0"));
}

function ustarBlock(
  name: string,
  size: number,
  type: "0" | "5" | "x",
  mode: number,
): Uint8Array {
  const block = new Uint8Array(BLOCK);
  const split = splitUstarName(name) ?? { prefix: "", name: name.slice(0, 100) };
  putString(block, 0, 100, split.name);
  putOctal(block, 100, 8, mode);
  putOctal(block, 108, 8, 0); // uid
  putOctal(block, 116, 8, 0); // gid
  putOctal(block, 124, 12, Math.min(size, USTAR_MAX_SIZE));
  putOctal(block, 136, 12, 0); // mtime: the epoch, so equal content makes equal archives
  block[156] = type.charCodeAt(0);
  putString(block, 257, 6, "ustar"); // magic "ustar\0"
  putString(block, 263, 2, "00");
  putString(block, 345, 155, split.prefix);
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of block) sum += b;
  putString(block, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  return block;
}

/**
 * The header bytes of one member: a pax `x` header when needed (see headerLength), then the
 * ustar header. `size` is the data size in bytes (0 for a directory). The result is exactly
 * headerLength(name, size) bytes long.
 */
export function encodeHeader(name: string, size: number, type: "file" | "dir"): Uint8Array {
  const ustar = ustarBlock(
    name,
    type === "dir" ? 0 : size,
    type === "dir" ? "5" : "0",
    type === "dir" ? 0o755 : 0o644,
  );
  const pax = paxRecords(name, size);
  if (pax === "") return ustar;
  const records = encoder.encode(pax);
  const out = new Uint8Array(BLOCK + padded(records.length) + BLOCK);
  out.set(
    ustarBlock(`PaxHeaders/${name.split("/").pop()}`.slice(0, 100), records.length, "x", 0o644),
  );
  out.set(records, BLOCK);
  out.set(ustar, BLOCK + padded(records.length));
  return out;
}

/** The end-of-archive marker: two zero blocks. */
export const END_OF_ARCHIVE = new Uint8Array(2 * BLOCK);

/** A tar header that cannot be read; `offset` is where it starts. */
export class TarFormatError extends Error {
  constructor(message: string, readonly offset: number) {
    super(message);
  }
}

const latin1 = new TextDecoder("latin1");
const utf8 = new TextDecoder("utf-8");

function field(block: Uint8Array, offset: number, length: number): Uint8Array {
  const raw = block.subarray(offset, offset + length);
  const nul = raw.indexOf(0);
  return nul === -1 ? raw : raw.subarray(0, nul);
}

function stringField(block: Uint8Array, offset: number, length: number): string {
  return utf8.decode(field(block, offset, length));
}

/** A numeric field: octal (space/NUL padded) or GNU base-256 (high bit of the first byte). */
function numberField(block: Uint8Array, offset: number, length: number, at: number): number {
  const raw = block.subarray(offset, offset + length);
  if (raw[0] & 0x80) {
    if (raw[0] !== 0x80) throw new TarFormatError("negative or oversized base-256 number", at);
    let value = 0;
    for (const b of raw.subarray(1)) value = value * 256 + b;
    if (!Number.isSafeInteger(value)) throw new TarFormatError("number too large", at);
    return value;
  }
  const text = latin1.decode(raw).replace(/\0.*$/s, "").trim();
  if (text === "") return 0;
  if (!/^[0-7]+$/.test(text)) {
    throw new TarFormatError(`bad octal number ${JSON.stringify(text)}`, at);
  }
  return parseInt(text, 8);
}

function isZeroBlock(block: Uint8Array): boolean {
  for (const b of block) if (b !== 0) return false;
  return true;
}

function checkChecksum(block: Uint8Array, at: number): void {
  const stored = numberField(block, 148, 8, at);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : block[i];
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  if (stored !== unsigned && stored !== signed) {
    throw new TarFormatError("header checksum mismatch", at);
  }
}

/** Parse pax records (`LEN key=value\n`…) into a map; bad records throw. */
function parsePax(bytes: Uint8Array, at: number): Map<string, string> {
  const out = new Map<string, string>();
  let i = 0;
  while (i < bytes.length) {
    if (bytes[i] === 0) break;
    const space = bytes.indexOf(0x20, i);
    const len = space === -1 ? NaN : Number(latin1.decode(bytes.subarray(i, space)));
    if (!Number.isSafeInteger(len) || len <= 0 || i + len > bytes.length) {
      throw new TarFormatError("malformed pax header", at);
    }
    const record = utf8.decode(bytes.subarray(space + 1, i + len - 1));
    const eq = record.indexOf("=");
    if (eq === -1) throw new TarFormatError("malformed pax record", at);
    out.set(record.slice(0, eq), record.slice(eq + 1));
    i += len;
  }
  return out;
}

function cleanName(name: string): string {
  let n = name;
  while (n.startsWith("./")) n = n.slice(2);
  while (n.startsWith("/")) n = n.slice(1);
  return n.replace(/\/+$/, "");
}

/** Biggest extension-header body (pax, GNU long name) we read; real ones are tiny. */
const MAX_EXTENSION = 1024 * 1024;

/**
 * Reads member headers one after another. `read(offset, length)` returns the archive's
 * bytes at `offset` (fewer at its end); `skip` is how the caller moves past data it does not
 * read (a seek for a file; for a stream, reading and dropping). Calls next() until it
 * returns null (end-of-archive marker, or end of input right at a header boundary). Throws
 * TarFormatError for a bad header and for input ending inside a header or an extension.
 */
export class TarHeaderReader {
  #offset = 0;
  #paxGlobal = new Map<string, string>();

  constructor(private read: (offset: number, length: number) => Promise<Uint8Array>) {}

  /** Where the next header would start (after the last member's padded data). */
  get offset(): number {
    return this.#offset;
  }

  async #block(at: number, what: string): Promise<Uint8Array | null> {
    const block = await this.read(at, BLOCK);
    if (block.length === 0) return null;
    if (block.length < BLOCK) throw new TarFormatError(`input ends inside ${what}`, at);
    return block;
  }

  async next(): Promise<TarMember | null> {
    let pax = new Map<string, string>();
    let longName: string | undefined;
    let longLink: string | undefined;
    const start = this.#offset;
    for (;;) {
      const at = this.#offset;
      const block = await this.#block(at, "a header");
      if (block === null) return null;
      if (isZeroBlock(block)) return null;
      checkChecksum(block, at);
      const typeflag = String.fromCharCode(block[156] || 0x30);
      const size = numberField(block, 124, 12, at);
      const dataOffset = at + BLOCK;
      if ("xgLK".includes(typeflag)) {
        if (size > MAX_EXTENSION) throw new TarFormatError("extension header too large", at);
        const body = await this.read(dataOffset, size);
        if (body.length < size) {
          throw new TarFormatError("input ends inside an extension header", at);
        }
        if (typeflag === "x") pax = new Map([...pax, ...parsePax(body, at)]);
        else if (typeflag === "g") {
          this.#paxGlobal = new Map([...this.#paxGlobal, ...parsePax(body, at)]);
        } else if (typeflag === "L") longName = utf8.decode(field(body, 0, body.length));
        else longLink = utf8.decode(field(body, 0, body.length));
        this.#offset = dataOffset + padded(size);
        continue;
      }
      const all = new Map([...this.#paxGlobal, ...pax]);
      const magic = latin1.decode(block.subarray(257, 263));
      let name = stringField(block, 0, 100);
      if (magic === "ustar\0") {
        const prefix = stringField(block, 345, 155);
        if (prefix) name = `${prefix}/${name}`;
      }
      name = all.get("path") ?? longName ?? name;
      let realSize = size;
      const paxSize = all.get("size");
      if (paxSize !== undefined) {
        if (!/^\d+$/.test(paxSize) || !Number.isSafeInteger(Number(paxSize))) {
          throw new TarFormatError(`bad pax size ${JSON.stringify(paxSize)}`, at);
        }
        realSize = Number(paxSize);
      }
      const type: MemberType = typeflag === "0" || typeflag === "7"
        ? "file"
        : typeflag === "5"
        ? "dir"
        : typeflag === "1"
        ? "hardlink"
        : typeflag === "2"
        ? "symlink"
        : "other";
      // Links, directories, devices and FIFOs have no data in the archive, whatever the
      // size field says (except "other" kinds we do not know, which we skip by size).
      const dataSize = type === "hardlink" || type === "symlink" || type === "dir" ? 0 : realSize;
      this.#offset = dataOffset + padded(dataSize);
      const linkName = all.get("linkpath") ?? longLink ?? stringField(block, 157, 100);
      return {
        name: cleanName(name),
        type,
        headerOffset: start,
        dataOffset,
        size: dataSize,
        linkName: type === "hardlink" || type === "symlink" ? cleanName(linkName) : undefined,
      };
    }
  }
}
