// What travels with an image: its referrers (OCI 1.1 manifests whose `subject` is one of
// the image's manifests: signatures, SBOMs, attestations, and their own referrers, such as
// a signature on an SBOM) and its digest tags (`sha256-HEX`, cosign's `sha256-HEX.sig`,
// `.att`, `.sbom`).
//
// After the image itself has been copied, copyAttached walks its manifests (the root and,
// for an index, every manifest below it) and, for each, asks the source for referrers
// and/or digest tags through the optional Store capabilities of store/referrers.ts. Each
// one found is copied with copyGraph as a graph of its own (its subject marked present, so
// the image is not planned again), then walked the same way, so referrers of referrers
// come along. The destination then records them: a layout lists them in index.json without
// a name, a registry without the referrers API in the subject's fallback tag.
import { copyGraph, type CopyOptions, type CopyStats, MAX_NESTING } from "./copy.ts";
import { NotFoundError, UserError } from "./errors.ts";
import { type Descriptor, isIndexType, isManifestType, parseNode } from "./media.ts";
import {
  canListReferrers,
  canListTags,
  canRecordReferrers,
  digestTagKind,
  referrerDescriptor,
  subjectDigest,
} from "./store/referrers.ts";
import type { Store } from "./store/store.ts";

export interface AttachedOptions {
  /** Copy referrers, recursively (`--referrers`). */
  referrers: boolean;
  /** Only referrers of these artifact types (`--referrers-type`); all when empty. */
  artifactTypes?: readonly string[];
  /** Copy the digest tags `ALG-HEX` and `ALG-HEX.SUFFIX` (`--digest-tags`). */
  digestTags: boolean;
  /** Passed to every copyGraph (jobs, retries, events…); rootTag and present are set here. */
  copy?: CopyOptions;
  /** Gets one line per referrer or tag copied (or, in a dry run, that would be). */
  log?: (line: string) => void;
  /**
   * Gets one line per referrer or tag found already at the destination, and other lines
   * that report no change (default: `log`); a rerun's caller may hold them back.
   */
  note?: (line: string) => void;
  /**
   * Digest tags in the source are named `srcTagPrefix` + `ALG-HEX[.SUFFIX]` (default ""): a
   * bundle (a layout or archive of a job) names them with the full reference of their
   * repository, `HOST/REPO:sha256-HEX.sig`, so those of several repositories never collide.
   */
  srcTagPrefix?: string;
  /** The same for the tags written at the destination (default ""). */
  dstTagPrefix?: string;
  /**
   * A dry run (copy.dryRun): manifests and blobs the plan of the image would write (not at
   * the destination yet); referrers and digest tags of those manifests are planned too,
   * and none of them is listed in the plan again.
   */
  planned?: ReadonlySet<string>;
  /** Each referrer or digest tag as `log` and `note` tell it, for machines (--progress=json). */
  onItem?: (item: AttachedItem) => void;
}

/** A referrer or digest tag copied (or, in a dry run, that would be) or found present. */
export interface AttachedItem {
  kind: "referrer" | "digest-tag";
  desc: Descriptor;
  /** A referrer's subject (the manifest it refers to). */
  subject?: string;
  /** A digest tag's name. */
  tag?: string;
  copied: boolean;
}

/** Whether `store` can give what `opts` asks for on its side; throws UserError otherwise. */
export function checkAttachedCapabilities(
  src: Store,
  dst: Store,
  opts: Pick<AttachedOptions, "referrers" | "digestTags">,
): void {
  if (opts.referrers && !canListReferrers(src)) {
    throw new UserError(`${src.name} cannot list referrers (--referrers)`);
  }
  if (opts.digestTags && !canListTags(src)) {
    throw new UserError(`${src.name} cannot list tags (--digest-tags)`);
  }
  if (opts.referrers && !canRecordReferrers(dst)) {
    throw new UserError(`${dst.name} cannot record referrers (--referrers)`);
  }
}

export interface AttachedStats {
  /** Referrers copied, and found already at the destination. */
  referrersCopied: number;
  referrersPresent: number;
  /** Digest tags written, and found already pointing at the same digest. */
  tagsCopied: number;
  tagsPresent: number;
  /** Referrers or digest tags skipped because they were not what they claimed to be. */
  skipped: number;
  /** Totals of the copyGraph runs (blobs and manifests). */
  blobsCopied: number;
  bytesCopied: number;
  manifestsCopied: number;
}

/** A manifest of the copy, with how deep it sits (root = 1, a referrer one deeper than its subject). */
interface Item {
  desc: Descriptor;
  depth: number;
}

/** Optional: a store that can say which digest a tag points at (a registry, with one HEAD). */
interface TagDigestStore extends Store {
  tagDigest(tag: string): Promise<string | undefined>;
}

function canTagDigest(s: Store): s is TagDigestStore {
  return typeof (s as Partial<TagDigestStore>).tagDigest === "function";
}

/**
 * Copy the referrers and/or digest tags of every manifest of the image under `root`
 * (already copied to `dst`) from `src` to `dst`, recursively, each byte for byte (every
 * digest preserved; the image itself is not touched). Referrers are written after their
 * subject; at a layout they are listed in index.json without `ref.name`, at a registry
 * without the referrers API merged into the subject's fallback tag. Reruns copy nothing
 * twice. A referrer whose manifest does not name the subject it was listed for is skipped
 * with a log line.
 *
 * Throws UserError when a store cannot list referrers or tags, when referrers nest deeper
 * than MAX_NESTING, and whatever copyGraph and the stores throw.
 */
export async function copyAttached(
  src: Store,
  dst: Store,
  root: Descriptor,
  opts: AttachedOptions,
): Promise<AttachedStats> {
  const log = opts.log ?? (() => {});
  const stats: AttachedStats = {
    referrersCopied: 0,
    referrersPresent: 0,
    tagsCopied: 0,
    tagsPresent: 0,
    skipped: 0,
    blobsCopied: 0,
    bytesCopied: 0,
    manifestsCopied: 0,
  };
  if (!isManifestType(root.mediaType)) return stats;
  checkAttachedCapabilities(src, dst, opts);
  const note = opts.note ?? log;
  const dryRun = opts.copy?.dryRun === true;
  const srcPrefix = opts.srcTagPrefix ?? "";
  const dstPrefix = opts.dstTagPrefix ?? "";
  /** Manifests and blobs a dry run would write (not at the destination yet). */
  const planned = new Set(opts.planned ?? []);
  /** …and those it found there, each listed in the plan once. */
  const planSeen = new Set<string>();
  /** Whether the destination holds `desc` (or, in a dry run, would). */
  const dstHas = async (desc: Descriptor) => planned.has(desc.digest) || await dst.exists(desc);
  /** Run copyGraph; in a dry run its plan events also mark what would be written. */
  const copy = (desc: Descriptor, rootTag: string | undefined) =>
    copyGraph(src, dst, desc, {
      ...opts.copy,
      rootTag,
      present,
      onEvent: (e) => {
        if (e.type === "plan-blob" || e.type === "plan-manifest") {
          // A real copy finds what an earlier graph of this run stored; a plan must not list
          // it twice (the empty config `{}` of every artifact, a referrer also listed in a
          // fallback tag).
          if (planned.has(e.desc.digest) || planSeen.has(e.desc.digest)) return;
          if (e.action === "exists") planSeen.add(e.desc.digest);
          else planned.add(e.desc.digest);
        }
        opts.copy?.onEvent?.(e);
      },
    });

  /** Manifests at the destination with everything below them. */
  const present = new Set<string>();
  const queue: Item[] = [];

  /**
   * Read a manifest where it is cheapest: a local destination that has it, else the source,
   * else the destination (an index made for this copy, such as one `--sparse=rewrite` wrote).
   */
  const read = async (desc: Descriptor): Promise<Uint8Array> => {
    if (dst.local && !planned.has(desc.digest) && (await dst.exists(desc))) {
      return await dst.fetchManifest(desc);
    }
    try {
      return await src.fetchManifest(desc);
    } catch (e) {
      if (e instanceof NotFoundError) return await dst.fetchManifest(desc);
      throw e;
    }
  };

  /** Refuse `desc` at `depth` (before anything of it is copied) when that is too deep. */
  const checkDepth = (desc: Descriptor, depth: number): void => {
    if (depth > MAX_NESTING) {
      throw new UserError(
        `manifest ${desc.digest} is nested more than ${MAX_NESTING} levels deep (referrers of referrers); refused`,
      );
    }
  };

  /**
   * Mark `desc` and the manifests below it that the destination holds present, and queue
   * them for discovery. Children the destination lacks were not copied (`--platform` left
   * them out): their referrers are not wanted, and copying one would bring its subject.
   */
  const walk = async (desc: Descriptor, depth: number, bytes?: Uint8Array): Promise<void> => {
    if (present.has(desc.digest)) return;
    checkDepth(desc, depth);
    present.add(desc.digest);
    queue.push({ desc, depth });
    if (!isIndexType(desc.mediaType)) return;
    const node = parseNode(bytes ?? await read(desc), desc.mediaType, desc.digest);
    for (const child of node.children) {
      if (isManifestType(child.mediaType) && (await dstHas(child))) {
        await walk(child, depth + 1);
      }
    }
  };

  const add = (s: CopyStats) => {
    stats.blobsCopied += s.blobsCopied;
    stats.bytesCopied += s.bytesCopied;
    stats.manifestsCopied += s.manifestsCopied;
  };

  /**
   * Copy the referrers `found` of `subject` (when not copied already) and record them at
   * the destination. Each must name `subject` in its own `subject` field.
   */
  const copyReferrers = async (subject: Item, found: Descriptor[]): Promise<void> => {
    const record: Descriptor[] = [];
    for (const listed of found) {
      if (!isManifestType(listed.mediaType)) continue;
      let bytes: Uint8Array;
      try {
        bytes = await read(listed);
      } catch (e) {
        if (!(e instanceof NotFoundError)) throw e;
        // A referrers list outliving a deleted signature is common: the image and its
        // other referrers are still copied.
        note(
          `! skipping ${listed.digest}: listed as a referrer of ${subject.desc.digest} in the ` +
            "source, but no such manifest is there",
        );
        stats.skipped++;
        continue;
      }
      const doc = parseNode(bytes, listed.mediaType, listed.digest).json;
      if (subjectDigest(doc) !== subject.desc.digest) {
        note(
          `! skipping ${listed.digest}: listed as a referrer of ${subject.desc.digest}, but its subject is ${
            subjectDigest(doc) ?? "absent"
          }`,
        );
        stats.skipped++;
        continue;
      }
      const desc = referrerDescriptor(listed, doc);
      record.push(desc);
      if (present.has(desc.digest)) continue;
      checkDepth(desc, subject.depth + 1);
      const what = `referrer ${desc.digest}${
        desc.artifactType ? ` (${desc.artifactType})` : ""
      } of ${subject.desc.digest}`;
      const s = await copy(desc, undefined);
      add(s);
      if (s.manifestsCopied > 0 || planned.has(desc.digest)) {
        stats.referrersCopied++;
        log(`${dryRun ? "Would copy" : "Copied"} ${what}`);
        opts.onItem?.({ kind: "referrer", desc, subject: subject.desc.digest, copied: true });
      } else {
        stats.referrersPresent++;
        note(`Skipping ${what}: already present`);
        opts.onItem?.({ kind: "referrer", desc, subject: subject.desc.digest, copied: false });
      }
      await walk(desc, subject.depth + 1, bytes);
    }
    if (record.length > 0 && canRecordReferrers(dst) && !dryRun) {
      await dst.recordReferrers(subject.desc, record);
    }
  };

  /** The digest the destination's tag `tag` names now; undefined when none (or unknown). */
  const dstTagTarget = async (tag: string): Promise<string | undefined> => {
    if (canTagDigest(dst)) return await dst.tagDigest(tag);
    try {
      return (await dst.resolve({ tag })).digest;
    } catch (e) {
      if (e instanceof UserError) return undefined; // absent (NotFoundError) or ambiguous
      throw e;
    }
  };

  /** The source's digest tags (named without srcPrefix), listed once. */
  let tags: string[] | undefined;
  /** Copy the digest tags of `item`: ALG-HEX.SUFFIX as tags; ALG-HEX also as referrers. */
  const copyDigestTags = async (item: Item): Promise<void> => {
    tags ??= canListTags(src)
      ? (await src.listTags().catch((e): string[] => {
        if (e instanceof NotFoundError) return [];
        throw e;
      })).filter((t) => t.startsWith(srcPrefix)).map((t) => t.slice(srcPrefix.length))
      : [];
    for (
      const base of tags.filter((t) => digestTagKind(t, item.desc.digest) !== undefined).sort()
    ) {
      const desc = await src.resolve({ tag: srcPrefix + base });
      const tag = dstPrefix + base;
      if (
        digestTagKind(base, item.desc.digest) === "plain" && !dst.local &&
        isIndexType(desc.mediaType)
      ) {
        // The referrers tag schema: overwriting the destination's tag would drop entries it
        // has; its referrers are copied and merged into it instead.
        const node = parseNode(await read(desc), desc.mediaType, desc.digest);
        note(
          `Digest tag '${base}' (${desc.digest}) lists referrers: they go into ` +
            `the destination's own '${tag}' as referrers, not written over it`,
        );
        await copyReferrers(item, node.children);
        continue;
      }
      if ((await dstTagTarget(tag)) === desc.digest) {
        stats.tagsPresent++;
        note(`Skipping digest tag '${tag}': already ${desc.digest}`);
        opts.onItem?.({ kind: "digest-tag", desc, tag, copied: false });
        await walk(desc, item.depth + 1);
        continue;
      }
      checkDepth(desc, item.depth + 1);
      const s = await copy(desc, tag);
      add(s);
      if (!dryRun && !s.rootTagged) await dst.tag(desc, tag, s.rootBytes);
      stats.tagsCopied++;
      log(`${dryRun ? "Would copy" : "Copied"} digest tag '${tag}' (${desc.digest})`);
      opts.onItem?.({ kind: "digest-tag", desc, tag, copied: true });
      await walk(desc, item.depth + 1);
    }
  };

  await walk(root, 1);
  // Discovery follows the queue, which grows as referrers and tagged manifests are copied.
  for (let i = 0; i < queue.length; i++) {
    const item = queue[i];
    if (opts.referrers && canListReferrers(src)) {
      await copyReferrers(item, await src.referrers(item.desc, opts.artifactTypes));
    }
    if (opts.digestTags) await copyDigestTags(item);
  }
  return stats;
}
