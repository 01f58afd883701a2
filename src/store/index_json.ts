// index.json of an OCI image layout (image-spec image-layout.md, image-index.md): how tags,
// the `org.opencontainers.image.ref.name` annotations of its entries, are found and set.
// Shared by the layout and the archive store, which keep index.json in different places.
import { NotFoundError, UserError } from "../errors.ts";
import {
  checkDescriptor,
  type Descriptor,
  MAX_MANIFEST_SIZE,
  REF_NAME_ANNOTATION,
} from "../media.ts";
import { canBeReferrer, referrerDescriptor, subjectDigest } from "./referrers.ts";

export interface ImageIndex {
  schemaVersion: number;
  mediaType?: string;
  manifests: Descriptor[];
  [key: string]: unknown;
}

/** Every tag (ref.name) of the index, sorted, each once. */
export function indexTags(index: ImageIndex): string[] {
  const names = new Set<string>();
  for (const m of index.manifests) {
    const name = m?.annotations?.[REF_NAME_ANNOTATION];
    if (typeof name === "string") names.add(name);
  }
  return [...names].sort();
}

/**
 * The one descriptor `tag` names in the index (entries of one digest count once). Throws
 * NotFoundError when none does, UserError naming the digests when several do, and UserError
 * for a malformed entry (`where` names index.json in messages, `what` the layout or archive).
 */
export function findTagged(
  index: ImageIndex,
  tag: string,
  where: string,
  what: string,
): Descriptor {
  const matches: Descriptor[] = [];
  for (const m of index.manifests) {
    if (m?.annotations?.[REF_NAME_ANNOTATION] !== tag) continue;
    const d = checkDescriptor(m, where);
    if (!matches.some((x) => x.digest === d.digest)) matches.push(d);
  }
  if (matches.length === 0) {
    throw new NotFoundError(`tag ${JSON.stringify(tag)} not found in ${what}`);
  }
  if (matches.length > 1) {
    throw new UserError(
      `tag ${JSON.stringify(tag)} is ambiguous in ${what}: ${
        matches.map((m) => m.digest).join(", ")
      }`,
    );
  }
  return matches[0];
}

/** The index.json entry that tags `desc` as `tag` (its own annotations kept). */
export function tagEntry(desc: Descriptor, tag: string): Descriptor {
  const entry: Descriptor = { mediaType: desc.mediaType, digest: desc.digest, size: desc.size };
  if (desc.artifactType) entry.artifactType = desc.artifactType;
  if (desc.platform) entry.platform = desc.platform;
  entry.annotations = { ...desc.annotations, [REF_NAME_ANNOTATION]: tag };
  return entry;
}

/**
 * Point `entry`'s tag at it in `index`: every entry with that ref.name is replaced, all others
 * kept. Returns false (and changes nothing) when the index already says exactly that.
 */
export function setTag(index: ImageIndex, entry: Descriptor): boolean {
  const tag = entry.annotations?.[REF_NAME_ANNOTATION];
  const named = index.manifests.filter((m) => m?.annotations?.[REF_NAME_ANNOTATION] === tag);
  if (named.length === 1 && JSON.stringify(named[0]) === JSON.stringify(entry)) return false;
  index.manifests = [
    ...index.manifests.filter((m) => m?.annotations?.[REF_NAME_ANNOTATION] !== tag),
    entry,
  ];
  return true;
}

/**
 * The referrers among an index's entries (named or not), by subject digest: every OCI
 * manifest or index listed whose `subject` names another manifest, with `artifactType` and
 * `annotations` as the referrers API lists them. `has` says whether the store holds a
 * listed manifest (absent ones are skipped), `read` reads one (verified against its
 * digest). Each digest is read once; content that is not JSON is not a referrer. Throws
 * UserError for a malformed entry, and whatever `read` throws (a manifest that cannot be
 * read is an error, not a manifest that refers to nothing).
 */
export async function scanReferrers(
  index: ImageIndex,
  where: string,
  has: (desc: Descriptor) => Promise<boolean>,
  read: (desc: Descriptor) => Promise<Uint8Array>,
): Promise<Map<string, Descriptor[]>> {
  const map = new Map<string, Descriptor[]>();
  const seen = new Set<string>();
  for (const entry of index.manifests) {
    if (!canBeReferrer(String(entry?.mediaType)) || seen.has(String(entry?.digest))) continue;
    const desc = checkDescriptor(entry, where);
    seen.add(desc.digest);
    if (desc.size > MAX_MANIFEST_SIZE || !(await has(desc))) continue;
    // A failed read (the file's mode, a disk error) is thrown: skipping the manifest would
    // leave a signature or SBOM out of a --referrers copy without a word.
    const bytes = await read(desc);
    let doc: Record<string, unknown>;
    try {
      doc = JSON.parse(new TextDecoder().decode(bytes));
    } catch {
      continue; // not JSON: not a referrer (copying it would report the error)
    }
    const subject = typeof doc === "object" && doc !== null ? subjectDigest(doc) : undefined;
    if (subject === undefined) continue;
    const list = map.get(subject) ?? [];
    list.push(referrerDescriptor(desc, doc));
    map.set(subject, list);
  }
  return map;
}

/**
 * List `referrers` in the index without a `ref.name` (as an image layout keeps untagged
 * manifests, so that `umoci gc` and other tools keep them and a later copy finds them),
 * each with its `artifactType`. A digest already listed without a name is not listed
 * again. Returns false (and changes nothing) when none is missing.
 */
export function addReferrers(index: ImageIndex, referrers: Descriptor[]): boolean {
  const listed = new Set(
    index.manifests.filter((m) => m?.annotations?.[REF_NAME_ANNOTATION] === undefined)
      .map((m) => m?.digest),
  );
  const missing = [...new Map(referrers.map((r) => [r.digest, r])).values()]
    .filter((r) => !listed.has(r.digest));
  if (missing.length === 0) return false;
  index.manifests.push(...missing.map((r) => {
    const e: Descriptor = { mediaType: r.mediaType, digest: r.digest, size: r.size };
    if (r.artifactType) e.artifactType = r.artifactType;
    return e;
  }));
  return true;
}
