// index.json of an OCI image layout (image-spec image-layout.md, image-index.md): how tags,
// the `org.opencontainers.image.ref.name` annotations of its entries, are found and set.
// Shared by the layout and the archive store, which keep index.json in different places.
import { NotFoundError, UserError } from "../errors.ts";
import { checkDescriptor, type Descriptor, REF_NAME_ANNOTATION } from "../media.ts";

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
