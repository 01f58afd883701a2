// One graph copy between any two stores.
//
// Starting from a root descriptor it walks manifests and indexes (nested too), transfers
// every child before its parent, skips what the destination already has without reading
// a byte of it from the source, mounts instead of copying where the destination can, and
// runs at most `jobs` transfers of large blobs at once, largest first, with small blobs
// (under 1 MiB) in a lane of their own beside them. Non-distributable blobs (foreign
// layers) are left out unless asked for, and a graph deeper than MAX_NESTING is refused.
import { DigestMismatchError, loadFastHash } from "./digest.ts";
import { UserError } from "./errors.ts";
import {
  type Descriptor,
  isManifestType,
  isNonDistributable,
  isSchema1,
  parseNode,
} from "./media.ts";
import type { Selection } from "./platform.ts";
import { canMount, type Store } from "./store/store.ts";

/** Blobs smaller than this are transferred in a lane of their own (see copyGraph). */
const SMALL_BLOB = 1024 * 1024;

/**
 * How many manifests deep a graph may go, the root counting as level 1: an index may list
 * indexes that list indexes… down to level 16, and whatever sits at level 17 is refused
 * before it is read. Real images use 1 to 3 levels; without a limit a hostile source can
 * nest thousands of indexes (10,000 levels took 1.4 GiB before any check fired).
 */
export const MAX_NESTING = 16;

export type CopyEvent =
  /** Once, after planning: the blobs the graph needs and their sizes in all. */
  | { type: "plan"; blobs: number; bytes: number }
  | { type: "blob-start"; desc: Descriptor; n: number; total: number; role: BlobRole }
  /** The transfer continues a partial download kept from an earlier run at `offset`. */
  | { type: "blob-resume"; desc: Descriptor; offset: number }
  /** `bytes`: how far the blob has got (offset of the next byte, a resumed part included). */
  | { type: "blob-progress"; desc: Descriptor; bytes: number }
  /** `moved`: the bytes this run transferred (the blob's size less a resumed part). */
  | { type: "blob-done"; desc: Descriptor; n: number; total: number; moved: number }
  | {
    type: "blob-skip";
    desc: Descriptor;
    n: number;
    total: number;
    role: BlobRole;
    reason: "exists" | "mounted";
  }
  /** Once, after planning: the non-distributable blobs whose bytes are not transferred. */
  | { type: "nondistributable-skip"; descs: Descriptor[] }
  | { type: "manifest-done"; desc: Descriptor }
  | { type: "manifest-skip"; desc: Descriptor }
  /** A dry run's plan for one blob the destination lacks or has (see opts.dryRun). */
  | {
    type: "plan-blob";
    desc: Descriptor;
    n: number;
    total: number;
    role: BlobRole;
    action: PlanAction;
  }
  /**
   * A dry run's plan for one manifest or index (`tag`: the root, tagged as it is pushed;
   * `fallback`: written only if the registry refuses the sparse index, `--sparse=auto`).
   */
  | {
    type: "plan-manifest";
    desc: Descriptor;
    action: "exists" | "write";
    tag?: string;
    fallback?: boolean;
  };

/**
 * What a copy would do with a blob: nothing (the destination has it), try to mount it (a
 * registry may refuse, and the blob is then transferred), or transfer it.
 */
export type PlanAction = "exists" | "mount" | "transfer";

/** What a blob is to the manifest that lists it, for messages ("Copying layer 2/5"). */
export type BlobRole = "config" | "layer" | "blob";

export interface CopyOptions {
  /** Transfers of blobs of 1 MiB and more at once (default 4); smaller ones run 2×jobs. */
  jobs?: number;
  /** How often a broken transfer may be resumed (passed to the destination's push). */
  retries?: number;
  /** Tag the root manifest as it is pushed (see stats.rootTagged). */
  rootTag?: string;
  /**
   * Transfer non-distributable blobs (see isNonDistributable) like any other (crane's
   * --allow-nondistributable-artifacts). Default false: their descriptors are copied with
   * the manifests, their bytes are neither read, nor looked for, nor written.
   */
  allowNonDistributable?: boolean;
  /**
   * Plan only: read and check every manifest and ask the destination what it has, as a copy
   * would, then emit one plan-blob event per blob and one plan-manifest event per manifest
   * instead of transferring, mounting or writing anything.
   */
  dryRun?: boolean;
  /**
   * Manifests the destination already holds with everything below them (copied earlier in
   * this run, e.g. the image whose referrers are being copied): a `subject` among them is
   * neither read nor pushed again.
   */
  present?: ReadonlySet<string>;
  onEvent?: (event: CopyEvent) => void;
  /** --platform (src/platform.ts): which child manifests to copy, indexes made for it. */
  selection?: Selection;
  /**
   * Count into this object (see newCopyStats) instead of a new one: the counts add to what
   * it holds, so that several attempts of one copy (the `--sparse=auto` fallback) sum up,
   * and what an attempt that failed had done is still counted.
   */
  stats?: CopyStats;
  /**
   * The lanes of a whole job, shared by all its copies (see JobLanes): `jobs` then bounds
   * the job, not each copy, and a blob that several copies store in one place is
   * transferred once. Default: lanes of this copy's own, sized by `jobs`.
   */
  lanes?: JobLanes;
  /**
   * A job stopped (a failure elsewhere): checked before each blob and manifest, so that
   * the copy ends with its reason before writing more, and before its tag.
   */
  signal?: AbortSignal;
}

export interface CopyStats {
  blobsCopied: number;
  blobsSkipped: number;
  blobsMounted: number;
  /** Sizes of the blobs copied. */
  bytesCopied: number;
  /** Bytes this run transferred: bytesCopied less the parts of kept partial downloads. */
  bytesMoved: number;
  /** Sizes of the blobs the destination already had, or mounted from another repository. */
  bytesPresent: number;
  /** Bytes of partial downloads kept from an earlier run that transfers continued from. */
  bytesResumed: number;
  manifestsCopied: number;
  manifestsSkipped: number;
  /** Non-distributable blobs left out (their descriptors were copied, their bytes not). */
  nonDistributable: Descriptor[];
  /** The root manifest's bytes, when the root is a manifest (for tagging). */
  rootBytes?: Uint8Array;
  /** The root was pushed with opts.rootTag (otherwise the caller tags it, if it wants). */
  rootTagged?: boolean;
}

/** Counts of a copy that has done nothing yet. */
export function newCopyStats(): CopyStats {
  return {
    blobsCopied: 0,
    blobsSkipped: 0,
    blobsMounted: 0,
    bytesCopied: 0,
    bytesMoved: 0,
    bytesPresent: 0,
    bytesResumed: 0,
    manifestsCopied: 0,
    manifestsSkipped: 0,
    nonDistributable: [],
  };
}

/** A counting semaphore: at most `limit` functions run at once. */
export class Limiter {
  #active = 0;
  #waiting: (() => void)[] = [];
  constructor(readonly limit: number) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#active >= this.limit) {
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    } else {
      this.#active++;
    }
    try {
      return await fn();
    } finally {
      const next = this.#waiting.shift();
      if (next) next();
      else this.#active--;
    }
  }
}

/**
 * The transfer lanes of a job of many copies, shared by all of them (copyGraph's
 * opts.lanes): large blobs `jobs` at once across the whole job, small ones 2×jobs beside
 * them, manifest reads 2×jobs. And the blobs in flight: a copy about to store a blob that
 * another copy of the job is storing in the same place (the same layout or archive, or any
 * repository of the same registry, see Store.blobScope) waits for that transfer first, and
 * then finds the blob present, or mounts it, instead of fetching it from its source again.
 */
export class JobLanes {
  readonly large: Limiter;
  readonly small: Limiter;
  readonly manifests: Limiter;
  readonly #inFlight = new Map<string, Promise<void>>();

  constructor(readonly jobs: number) {
    this.large = new Limiter(jobs);
    this.small = new Limiter(2 * jobs);
    this.manifests = new Limiter(2 * jobs);
  }

  /**
   * Wait until no other copy is storing blob `digest` in `scope`, then hold it until the
   * returned release function is called (whether the transfer worked or not: a waiter then
   * checks for itself). Waiting happens outside the lanes, so it holds no slot.
   */
  async claim(scope: string, digest: string): Promise<() => void> {
    const key = `${scope}\0${digest}`;
    for (;;) {
      const busy = this.#inFlight.get(key);
      if (busy === undefined) break;
      await busy;
    }
    let release!: () => void;
    this.#inFlight.set(key, new Promise<void>((r) => release = r));
    return () => {
      this.#inFlight.delete(key);
      release();
    };
  }
}

interface PlannedManifest {
  desc: Descriptor;
  bytes: Uint8Array;
  /** Child manifests (and a subject the source has), pushed before this one. */
  manifests: Descriptor[];
  /** Its blobs (config, layers, other blob children) that are copied. */
  blobs: Descriptor[];
}

interface PlannedBlob {
  desc: Descriptor;
  n: number;
  total: number;
  role: BlobRole;
}

/**
 * Copy the graph under `root` from `src` to `dst`, in three steps:
 *
 * 1. plan: read every manifest and index (from the destination when it already has them and
 *    reading there is cheaper), verify and parse them, and collect the blobs; a local source
 *    is also checked to hold every blob with the right size. Nothing is written yet, so bad
 *    input found here leaves the destination untouched. Each manifest is read once however
 *    often it is listed, and none deeper than MAX_NESTING. Non-distributable blobs
 *    (image-spec descriptor.md "urls", layer.md non-distributable layers, Docker foreign
 *    layers) are set aside here, before anything is transferred, unless
 *    opts.allowNonDistributable: see stats.nonDistributable.
 * 2. blobs: what the destination lacks is mounted or transferred, `jobs` at a time, the
 *    largest first across the whole graph.
 * 3. manifests: pushed children before parents, each after everything it refers to.
 *
 * With opts.dryRun, steps 2 and 3 ask the destination what it has and emit plan events
 * instead of writing: the same walk, the same checks, nothing stored.
 *
 * Throws UserError for bad input found while planning: a manifest nested deeper than
 * MAX_NESTING levels, a cycle, Docker schema1, a malformed manifest, a blob a local source
 * lacks; otherwise whatever the stores throw.
 */
export async function copyGraph(
  src: Store,
  dst: Store,
  root: Descriptor,
  opts: CopyOptions = {},
): Promise<CopyStats> {
  const stats = opts.stats ?? newCopyStats();
  const emit = opts.onEvent ?? (() => {});
  // Small blobs (configs, small layers) have slots of their own, twice as many: they are
  // bound by round trips (and a layout's fsync), not bandwidth, so more of them in flight
  // hide latency, and they need not wait behind the large ones.
  const lanes = opts.lanes ?? new JobLanes(Math.max(1, opts.jobs ?? 4));
  const largeLane = lanes.large;
  const smallLane = lanes.small;
  // Manifest reads while planning: an index may list thousands of manifests, and each read
  // is a request (and a connection) of its own.
  const manifestLane = lanes.manifests;
  /** Throws the job's stop reason, once something else in the job failed. */
  const checkStopped = () => {
    if (opts.signal?.aborted) throw opts.signal.reason;
  };
  const manifests = new Map<string, Promise<PlannedManifest>>();
  const blobs = new Map<string, PlannedBlob>();
  /** Non-distributable blobs set aside while planning (by digest). */
  const setAside = new Map<string, Descriptor>();

  /** A manifest from the source, or one made for this copy (a rewritten index). */
  function srcManifest(desc: Descriptor): Promise<Uint8Array> {
    const made = opts.selection?.manifests.get(desc.digest);
    return made ? Promise.resolve(made) : src.fetchManifest(desc);
  }

  async function readManifest(desc: Descriptor): Promise<Uint8Array> {
    if (!src.local && dst.local && (await dst.exists(desc))) {
      // Re-pull of something we already have: read it locally (verified), no request.
      return await dst.fetchManifest(desc);
    }
    return await srcManifest(desc);
  }

  function checkCopyable(desc: Descriptor, ancestors: string[]): void {
    if (ancestors.includes(desc.digest)) {
      throw new UserError(`manifest ${desc.digest} refers to itself (cycle)`);
    }
    if (ancestors.length >= MAX_NESTING && isManifestType(desc.mediaType)) {
      throw new UserError(
        `manifest ${desc.digest} is nested more than ${MAX_NESTING} levels deep (indexes in indexes); refused`,
      );
    }
    if (isSchema1(desc.mediaType)) {
      throw new UserError(`${desc.digest}: Docker schema1 manifests are not supported`);
    }
  }

  // 1. plan
  function plan(desc: Descriptor, ancestors: string[]): Promise<PlannedManifest> {
    try {
      checkCopyable(desc, ancestors);
    } catch (e) {
      return Promise.reject(e);
    }
    let p = manifests.get(desc.digest);
    if (!p) {
      p = (async () => {
        const bytes = await manifestLane.run(() => readManifest(desc));
        const node = parseNode(bytes, desc.mediaType, desc.digest);
        const path = [...ancestors, desc.digest];
        const addBlob = (d: Descriptor, n: number, total: number, role: BlobRole) => {
          checkCopyable(d, path);
          if (!opts.allowNonDistributable && isNonDistributable(d)) {
            if (!setAside.has(d.digest)) setAside.set(d.digest, d);
          } else if (!blobs.has(d.digest)) blobs.set(d.digest, { desc: d, n, total, role });
        };
        if (node.config) addBlob(node.config, 1, 1, "config");
        node.layers.forEach((d, i) => addBlob(d, i + 1, node.layers.length, "layer"));
        const known = new Set<Descriptor>(node.layers);
        if (node.config) known.add(node.config);
        const other = node.children.filter((c) => !isManifestType(c.mediaType) && !known.has(c));
        other.forEach((d, i) => addBlob(d, i + 1, other.length, "blob"));
        let listed = node.children.filter((c) => isManifestType(c.mediaType));
        if (opts.selection) listed = opts.selection.children(desc, listed);
        // A referrer's subject is a weak reference: copy it along when the source has it.
        // A failure to find out (the network, the registry) fails the copy: taking it for
        // "absent" would give a different result for the same command without a word.
        if (
          node.subject && isManifestType(node.subject.mediaType) &&
          !opts.present?.has(node.subject.digest)
        ) {
          const subject = node.subject;
          if (await manifestLane.run(() => src.exists(subject))) {
            listed.push(subject);
          }
        }
        // Each child once: an index may list the same manifest thousands of times.
        const children = [...new Map(listed.map((c) => [c.digest, c])).values()];
        await settleAll(children.map((c) => plan(c, path)));
        const own = node.children.filter((c) =>
          !isManifestType(c.mediaType) && blobs.has(c.digest)
        );
        return { desc, bytes, manifests: children, blobs: own };
      })();
      manifests.set(desc.digest, p);
    }
    return p;
  }

  const rootIsManifest = isManifestType(root.mediaType) || isSchema1(root.mediaType);
  let rootAbsent = false;
  // A registry that has a manifest has everything below it: it checked that the manifest's
  // blobs and child manifests were there when it accepted it (and copies push children
  // first). So a re-push asks one HEAD instead of one per blob, as oras and crane do.
  if (isManifestType(root.mediaType) && !dst.local) {
    if (await dst.exists(root)) {
      stats.rootBytes = await srcManifest(root);
      stats.manifestsSkipped++;
      if (opts.dryRun) emit({ type: "plan-manifest", desc: root, action: "exists" });
      else emit({ type: "manifest-skip", desc: root });
      return stats;
    }
    rootAbsent = true; // no need to ask again before pushing it
  }
  if (rootIsManifest) {
    stats.rootBytes = (await plan(root, [])).bytes;
  } else {
    // A bare blob as the root (e.g. DIR@DIGEST of a layer): copy it as is.
    blobs.set(root.digest, { desc: root, n: 1, total: 1, role: "blob" });
  }
  // A blob that some other descriptor lists as distributable is needed after all.
  for (const digest of blobs.keys()) setAside.delete(digest);
  if (setAside.size > 0) {
    const descs = [...setAside.values()];
    const counted = new Set(stats.nonDistributable.map((d) => d.digest));
    stats.nonDistributable.push(...descs.filter((d) => !counted.has(d.digest)));
    emit({ type: "nondistributable-skip", descs });
  }
  let planned = 0;
  for (const { desc } of blobs.values()) planned += desc.size;
  emit({ type: "plan", blobs: blobs.size, bytes: planned });
  if (src.local) {
    // Cheap for a layout: refuse a missing or truncated blob before writing anything.
    await settleAll([...blobs.values()].map(async ({ desc }) => {
      if (!(await src.exists(desc))) {
        throw new UserError(
          `${src.name}: blob ${desc.digest} (${desc.size} bytes) is missing or has another size`,
        );
      }
    }));
  }

  // 2. blobs, largest first
  let failed: unknown = undefined;
  const scope = dst.blobScope ?? dst.name;
  async function copyBlob({ desc, n, total, role }: PlannedBlob): Promise<void> {
    const lane = desc.size < SMALL_BLOB ? smallLane : largeLane;
    // Another copy of the job storing this blob in the same place goes first (opts.lanes).
    const release = opts.lanes && !opts.dryRun
      ? await opts.lanes.claim(scope, desc.digest)
      : undefined;
    await lane.run(async () => {
      if (failed !== undefined) throw failed;
      checkStopped();
      if (await dst.exists(desc)) {
        stats.blobsSkipped++;
        stats.bytesPresent += desc.size;
        if (opts.dryRun) emit({ type: "plan-blob", desc, n, total, role, action: "exists" });
        else emit({ type: "blob-skip", desc, n, total, role, reason: "exists" });
        return;
      }
      if (opts.dryRun) {
        const action = canMount(dst) && dst.mountsFrom(src) ? "mount" : "transfer";
        emit({ type: "plan-blob", desc, n, total, role, action });
        return;
      }
      if (canMount(dst) && (await dst.mount(desc, src))) {
        stats.blobsMounted++;
        stats.bytesPresent += desc.size;
        emit({ type: "blob-skip", desc, n, total, role, reason: "mounted" });
        return;
      }
      emit({ type: "blob-start", desc, n, total, role });
      await loadFastHash(desc.size);
      let resumed = 0;
      await dst.push(
        desc,
        (offset) => src.fetch(desc, offset),
        (bytes) => emit({ type: "blob-progress", desc, bytes }),
        {
          retries: opts.retries,
          onResume: (offset) => {
            resumed = offset;
            emit({ type: "blob-resume", desc, offset });
          },
        },
      ).catch((e) => {
        // Content that does not match its descriptor came from the source: say which.
        if (!(e instanceof DigestMismatchError)) throw e;
        const where = src.describeBlob?.(desc) ?? `blob ${desc.digest}`;
        throw new DigestMismatchError(`${src.name}: ${where}: ${e.message}`);
      });
      stats.blobsCopied++;
      stats.bytesCopied += desc.size;
      stats.bytesMoved += desc.size - resumed;
      stats.bytesResumed += resumed;
      emit({ type: "blob-done", desc, n, total, moved: desc.size - resumed });
    }).catch((e) => {
      failed ??= e;
      throw e;
    }).finally(() => release?.());
  }
  const ordered = [...blobs.values()].sort((a, b) => b.desc.size - a.desc.size);
  await settleAll(ordered.map(copyBlob));

  // 3. manifests, children before parents
  const pushed = new Map<string, Promise<void>>();
  function pushManifest(digest: string): Promise<void> {
    let p = pushed.get(digest);
    if (!p) {
      p = (async () => {
        const m = await manifests.get(digest)!;
        await settleAll(m.manifests.map((c) => pushManifest(c.digest)));
        const isRoot = digest === root.digest;
        if (!(isRoot && rootAbsent) && (await dst.exists(m.desc))) {
          stats.manifestsSkipped++;
          if (opts.dryRun) emit({ type: "plan-manifest", desc: m.desc, action: "exists" });
          else emit({ type: "manifest-skip", desc: m.desc });
          return;
        }
        const tag = isRoot ? opts.rootTag : undefined;
        checkStopped();
        if (opts.dryRun) {
          emit({ type: "plan-manifest", desc: m.desc, action: "write", tag });
          return;
        }
        try {
          await dst.pushManifest(m.desc, m.bytes, tag);
        } catch (e) {
          // A registry can lose a blob to a race it runs itself (two copies committing one
          // config at once) and then refuse the manifest that needs it: check the blobs
          // once, send what it lacks, and put the manifest again.
          // (An index has no blobs of its own: its refusal is about the manifests it lists,
          // as for a sparse index, and is final here.)
          if (m.blobs.length === 0 || !/BLOB_UNKNOWN/.test(e instanceof Error ? e.message : "")) {
            throw e;
          }
          await settleAll(m.blobs.map(async (b) => {
            if (!(await dst.exists(b))) await copyBlob(blobs.get(b.digest)!);
          }));
          await dst.pushManifest(m.desc, m.bytes, tag);
        }
        if (tag !== undefined) stats.rootTagged = true;
        stats.manifestsCopied++;
        emit({ type: "manifest-done", desc: m.desc });
      })();
      pushed.set(digest, p);
    }
    return p;
  }
  if (rootIsManifest) await pushManifest(root.digest);
  return stats;
}

/** Wait for all promises; reject with the first failure only after all have settled. */
async function settleAll(work: Promise<unknown>[]): Promise<void> {
  const results = await Promise.allSettled(work);
  const failure = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failure) throw failure.reason;
}
