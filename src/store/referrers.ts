// What stores share about referrers (OCI 1.1: manifests whose `subject` names another
// manifest) and digest tags (`ALG-HEX`, `ALG-HEX.SUFFIX`): the optional Store capabilities
// `umoci copy --referrers/--digest-tags` looks for at run time, the descriptor a referrer
// is listed with, and the name of the referrers fallback tag.
import { parseDigest } from "../digest.ts";
import { type Descriptor, OCI_INDEX, OCI_MANIFEST } from "../media.ts";
import type { Store } from "./store.ts";

/** A store that can list the referrers of a manifest (a registry, a layout). */
export interface ReferrersSource extends Store {
  /**
   * The referrers of `subject` held by this store: descriptors of manifests whose `subject`
   * is `subject.digest`, each with `artifactType` (the manifest's own, or its config's media
   * type) and the manifest's `annotations`, as the distribution-spec referrers API lists
   * them. With `artifactTypes` (non-empty) only referrers of those types. Not recursive.
   */
  referrers(subject: Descriptor, artifactTypes?: readonly string[]): Promise<Descriptor[]>;
}

/** A store whose tags can be listed (registry `tags/list`, a layout's `ref.name`s). */
export interface TagListingStore extends Store {
  /** Every tag of the repository or layout, in no particular order. */
  listTags(): Promise<string[]>;
}

/** A store that keeps a list of referrers which a copy must extend (index.json, fallback tag). */
export interface ReferrersTarget extends Store {
  /**
   * Make `referrers` (manifests already stored here, with subject `subject`) discoverable:
   * a layout lists them in index.json without a `ref.name`; a registry without the
   * referrers API adds them to the fallback tag of `subject`. Idempotent: nothing listed
   * twice, nothing rewritten when all are listed.
   */
  recordReferrers(subject: Descriptor, referrers: Descriptor[]): Promise<void>;
}

/** Whether `s` can list referrers (see ReferrersSource); detected at run time, like canMount. */
export function canListReferrers(s: Store): s is ReferrersSource {
  return typeof (s as Partial<ReferrersSource>).referrers === "function";
}

/** Whether `s` can list its tags (see TagListingStore). */
export function canListTags(s: Store): s is TagListingStore {
  return typeof (s as Partial<TagListingStore>).listTags === "function";
}

/** Whether `s` keeps a list of referrers that copies must extend (see ReferrersTarget). */
export function canRecordReferrers(s: Store): s is ReferrersTarget {
  return typeof (s as Partial<ReferrersTarget>).recordReferrers === "function";
}

/** Only OCI manifests and indexes can carry a `subject` (image-spec manifest.md, image-index.md). */
export function canBeReferrer(mediaType: string): boolean {
  return mediaType === OCI_MANIFEST || mediaType === OCI_INDEX;
}

/**
 * The tag of the referrers tag schema (distribution-spec "Referrers Tag Schema"): the
 * subject's digest as `ALG-HEX`, the algorithm cut to 32 and the hex to 64 characters.
 * Throws UserError for an invalid digest.
 */
export function referrersTagName(digest: string): string {
  const { algorithm, encoded } = parseDigest(digest);
  return `${algorithm.slice(0, 32)}-${encoded.slice(0, 64)}`;
}

/**
 * The descriptor a referrer is listed with in a referrers index (distribution-spec
 * "Listing Referrers"): mediaType, digest and size of the manifest, its `artifactType`
 * (or, without one, its config's mediaType) and its `annotations`. `doc` is the parsed
 * manifest. Never throws.
 */
export function referrerDescriptor(desc: Descriptor, doc: Record<string, unknown>): Descriptor {
  const entry: Descriptor = { mediaType: desc.mediaType, digest: desc.digest, size: desc.size };
  const config = doc.config as { mediaType?: unknown } | undefined;
  const artifactType = typeof doc.artifactType === "string"
    ? doc.artifactType
    : typeof config?.mediaType === "string"
    ? config.mediaType
    : undefined;
  if (artifactType) entry.artifactType = artifactType;
  const annotations = doc.annotations;
  if (typeof annotations === "object" && annotations !== null && !Array.isArray(annotations)) {
    entry.annotations = annotations as Record<string, string>;
  }
  return entry;
}

/** The `subject` digest a manifest document names, or undefined. Never throws. */
export function subjectDigest(doc: Record<string, unknown>): string | undefined {
  const subject = doc.subject as { digest?: unknown } | undefined;
  return typeof subject?.digest === "string" ? subject.digest : undefined;
}

/**
 * Whether `tag` is a digest tag of `digest`: `ALG-HEX` exactly (the referrers fallback tag)
 * or `ALG-HEX.SUFFIX` (cosign's `.sig`, `.att`, `.sbom`, any suffix of tag characters).
 * Returns "plain", "suffixed" or undefined.
 */
export function digestTagKind(tag: string, digest: string): "plain" | "suffixed" | undefined {
  let base: string;
  try {
    base = referrersTagName(digest);
  } catch {
    return undefined;
  }
  if (tag === base) return "plain";
  if (tag.startsWith(base + ".") && /^[A-Za-z0-9_.-]+$/.test(tag.slice(base.length + 1))) {
    return "suffixed";
  }
  return undefined;
}
