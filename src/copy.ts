// One graph copy between any two stores.
//
// Starting from a root descriptor it walks manifests and indexes (nested too), transfers
// every child before its parent, skips what the destination already has without reading
// a byte of it from the source, mounts instead of copying where the destination can, and
// runs at most `jobs` blob transfers at once, largest blobs first.
import { loadFastHash } from "./digest.ts";
import { UserError } from "./errors.ts";
import { type Descriptor, isManifestType, isSchema1, parseNode } from "./media.ts";
import { canMount, type Store } from "./store/store.ts";

export type CopyEvent =
  | { type: "blob-start"; desc: Descriptor; n: number; total: number; role: BlobRole }
  | { type: "blob-progress"; desc: Descriptor; bytes: number }
  | { type: "blob-done"; desc: Descriptor; n: number; total: number }
  | {
    type: "blob-skip";
    desc: Descriptor;
    n: number;
    total: number;
    role: BlobRole;
    reason: "exists" | "mounted";
  }
  | { type: "manifest-done"; desc: Descriptor }
  | { type: "manifest-skip"; desc: Descriptor };

/** What a blob is to the manifest that lists it, for messages ("Copying layer 2/5"). */
export type BlobRole = "config" | "layer" | "blob";

export interface CopyOptions {
  /** Blob transfers at once (default 4). */
  jobs?: number;
  onEvent?: (event: CopyEvent) => void;
}

export interface CopyStats {
  blobsCopied: number;
  blobsSkipped: number;
  blobsMounted: number;
  bytesCopied: number;
  manifestsCopied: number;
  manifestsSkipped: number;
  /** The root manifest's bytes, when the root is a manifest (for tagging). */
  rootBytes?: Uint8Array;
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

export async function copyGraph(
  src: Store,
  dst: Store,
  root: Descriptor,
  opts: CopyOptions = {},
): Promise<CopyStats> {
  const stats: CopyStats = {
    blobsCopied: 0,
    blobsSkipped: 0,
    blobsMounted: 0,
    bytesCopied: 0,
    manifestsCopied: 0,
    manifestsSkipped: 0,
  };
  const emit = opts.onEvent ?? (() => {});
  const limiter = new Limiter(Math.max(1, opts.jobs ?? 4));
  const visited = new Map<string, Promise<void>>();
  // Once one transfer fails, the others stop starting new work.
  let failed: unknown = undefined;

  async function readManifest(desc: Descriptor): Promise<Uint8Array> {
    if (!src.local && dst.local && (await dst.exists(desc))) {
      // Re-pull of something we already have: read it locally (verified), no request.
      return await dst.fetchManifest(desc);
    }
    return await src.fetchManifest(desc);
  }

  async function copyBlob(
    desc: Descriptor,
    n: number,
    total: number,
    role: BlobRole,
  ): Promise<void> {
    await limiter.run(async () => {
      if (failed !== undefined) throw failed;
      if (await dst.exists(desc)) {
        stats.blobsSkipped++;
        emit({ type: "blob-skip", desc, n, total, role, reason: "exists" });
        return;
      }
      if (canMount(dst) && (await dst.mount(desc, src))) {
        stats.blobsMounted++;
        emit({ type: "blob-skip", desc, n, total, role, reason: "mounted" });
        return;
      }
      emit({ type: "blob-start", desc, n, total, role });
      await loadFastHash();
      await dst.push(
        desc,
        (offset) => src.fetch(desc, offset),
        (bytes) => emit({ type: "blob-progress", desc, bytes }),
      );
      stats.blobsCopied++;
      stats.bytesCopied += desc.size;
      emit({ type: "blob-done", desc, n, total });
    });
  }

  async function copyManifest(desc: Descriptor, ancestors: string[]): Promise<void> {
    if (!desc.digest.startsWith("sha256:")) await loadFastHash();
    const bytes = await readManifest(desc);
    if (ancestors.length === 0) stats.rootBytes = bytes;
    const node = parseNode(bytes, desc.mediaType, desc.digest);
    const path = [...ancestors, desc.digest];
    const manifests = node.children.filter((c) => isManifestType(c.mediaType));
    const blobs: { d: Descriptor; n: number; total: number; role: BlobRole }[] = [];
    if (node.config) blobs.push({ d: node.config, n: 1, total: 1, role: "config" });
    node.layers.forEach((d, i) =>
      blobs.push({ d, n: i + 1, total: node.layers.length, role: "layer" })
    );
    const other = node.children.filter((c) =>
      !isManifestType(c.mediaType) && c !== node.config && !node.layers.includes(c)
    );
    other.forEach((d, i) => blobs.push({ d, n: i + 1, total: other.length, role: "blob" }));
    // Largest first: the long transfers start early and the small ones fill the gaps.
    blobs.sort((a, b) => b.d.size - a.d.size);
    const work: Promise<void>[] = [
      ...blobs.map((b) => visit(b.d, path, () => copyBlob(b.d, b.n, b.total, b.role))),
      ...manifests.map((m) => visit(m, path, () => copyManifest(m, path))),
    ];
    if (node.subject && isManifestType(node.subject.mediaType)) {
      // A referrer's subject is a weak reference: copy it along when the source has it.
      const subject = node.subject;
      if (await src.exists(subject).catch(() => false)) {
        work.push(visit(subject, path, () => copyManifest(subject, path)));
      }
    }
    await settleAll(work);
    if (await dst.exists(desc)) {
      stats.manifestsSkipped++;
      emit({ type: "manifest-skip", desc });
      return;
    }
    await dst.pushManifest(desc, bytes);
    stats.manifestsCopied++;
    emit({ type: "manifest-done", desc });
  }

  function visit(
    desc: Descriptor,
    ancestors: string[],
    run: () => Promise<void>,
  ): Promise<void> {
    if (ancestors.includes(desc.digest)) {
      return Promise.reject(new UserError(`manifest ${desc.digest} refers to itself (cycle)`));
    }
    if (isSchema1(desc.mediaType)) {
      return Promise.reject(
        new UserError(`${desc.digest}: Docker schema1 manifests are not supported`),
      );
    }
    let p = visited.get(desc.digest);
    if (!p) {
      p = run().catch((e) => {
        failed ??= e;
        throw e;
      });
      visited.set(desc.digest, p);
    }
    return p;
  }

  if (isManifestType(root.mediaType) || isSchema1(root.mediaType)) {
    await visit(root, [], () => copyManifest(root, []));
  } else {
    // A bare blob as the root (e.g. DIR@DIGEST of a layer): copy it as is.
    await visit(root, [], () => copyBlob(root, 1, 1, "blob"));
  }
  return stats;
}

/** Wait for all promises; reject with the first failure only after all have settled. */
async function settleAll(work: Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(work);
  const failure = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failure) throw failure.reason;
}
