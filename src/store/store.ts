// The one interface every place an image can live implements: an OCI image layout on
// disk or a repository in a registry. The copy engine only speaks this interface.
import type { Descriptor } from "../media.ts";

/** A blob's bytes from some offset on; `offset` is where the stream really starts. */
export interface BlobReader {
  stream: ReadableStream<Uint8Array>;
  offset: number;
}

/**
 * Opens a blob for reading from `offset`. A source that cannot seek returns offset 0 and
 * the whole blob; the consumer then starts over.
 */
export type BlobSource = (offset: number) => Promise<BlobReader>;

export interface PushOptions {
  /** How often a transfer whose source broke off may be resumed (default 5). */
  retries?: number;
  /**
   * Called before the first byte when the transfer continues from `offset` (a partial
   * download kept from an earlier run), instead of from byte 0.
   */
  onResume?: (offset: number) => void;
}

export interface Store {
  /** Short human description, e.g. `layout ./opensuse` or `localhost:5000/library/app`. */
  readonly name: string;
  /** True when reads are local and cheap (a layout); used to pick where to read manifests. */
  readonly local: boolean;

  /**
   * Resolve a tag or a digest to the root descriptor. A tag that does not exist throws a
   * NotFoundError; an ambiguous tag throws a UserError naming the candidates. With both,
   * the digest wins (the tag only names the image).
   */
  resolve(ref: { tag?: string; digest?: string }): Promise<Descriptor>;

  /** True when the store holds the content described, with the right size. */
  exists(desc: Descriptor): Promise<boolean>;

  /**
   * Open a blob for reading from `offset` (default 0). The bytes are NOT verified here;
   * whoever consumes them verifies against the descriptor (one hash pass per transfer).
   */
  fetch(desc: Descriptor, offset?: number): Promise<BlobReader>;

  /** Read a manifest or index whole, verified against digest and size. */
  fetchManifest(desc: Descriptor): Promise<Uint8Array>;

  /**
   * Store a blob read from `source`, verifying digest and size while it streams; content
   * that does not match is never made visible. A store may call `source` again with a
   * later offset to resume after the source broke off. `onProgress` gets the byte count.
   */
  push(
    desc: Descriptor,
    source: BlobSource,
    onProgress?: (bytes: number) => void,
    opts?: PushOptions,
  ): Promise<void>;

  /**
   * Store a manifest or index (bytes exactly as given, verified against desc). With `tag`,
   * it is tagged too: a registry then takes it in one PUT by tag instead of two.
   */
  pushManifest(desc: Descriptor, bytes: Uint8Array, tag?: string): Promise<void>;

  /**
   * Point `tag` at desc (which must already be stored). `bytes`, when the caller has them,
   * are the manifest's bytes (a registry needs them to tag; it need not fetch them again).
   */
  tag(desc: Descriptor, tag: string, bytes?: Uint8Array): Promise<void>;

  /**
   * Every tag the store holds (a layout's or archive's ref.names; a registry's tag list),
   * sorted, each once. Throws as the store's other reads do.
   */
  listTags?(): Promise<string[]>;

  /**
   * Make everything pushed and tagged so far visible, for a store that publishes all at once
   * (an archive is renamed into place here). Stores that write as they go leave it out.
   * Called once after the last tag; close() without it discards what was not published.
   */
  commit?(): Promise<void>;

  /**
   * Up to `max` tags the store has, for messages (a tag that is not there lists these);
   * `more` when it has others besides. Optional: a store without it lists nothing.
   */
  sampleTags?(max: number): Promise<{ tags: string[]; more: boolean }>;

  /**
   * Where a blob lives in this store, for messages about its content (an archive names its
   * member, `member blobs/sha256/HEX`). Optional: without it a message says `blob DIGEST`.
   */
  describeBlob?(desc: Descriptor): string;

  /** Release resources (locks, connections). */
  close(): Promise<void>;

  /**
   * Stores with the same blobScope make a blob one of them holds available to the others
   * without its bytes crossing again (a registry's repositories, by mounting); a store
   * without one is a scope of its own, by its name. A job uses it to transfer a blob that
   * several of its images need once (see JobLanes in ../copy.ts).
   */
  readonly blobScope?: string;
}

/** Optional capability: a store that can obtain a blob from another store without bytes crossing. */
export interface MountingStore extends Store {
  /** Try to make `desc` present by mounting it from `from`; true when it worked. */
  mount(desc: Descriptor, from: Store): Promise<boolean>;
  /**
   * True when mount() would ask to mount blobs from `from` (no request is made); whether a
   * mount works is known only when it is tried.
   */
  mountsFrom(from: Store): boolean;
}

export function canMount(s: Store): s is MountingStore {
  return typeof (s as Partial<MountingStore>).mount === "function";
}
