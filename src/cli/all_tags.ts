// `--all-tags`: which tags of a source repository, layout or archive a copy takes.
import { UsageError, UserError } from "../errors.ts";
import { parseReference, type Reference } from "../reference.ts";
import { RegistryStore } from "../store/registry/registry.ts";
import type { Store } from "../store/store.ts";
import { parseRegistryPrefix, splitFullName } from "./job.ts";
import type { Logger } from "./log.ts";

/**
 * Tags that name another manifest's digest (`sha256-HEX…`: cosign's `.sig`/`.att`/`.sbom`,
 * the OCI 1.1 referrers tag schema of distribution-spec "Referrers Tag Schema").
 */
const DIGEST_TAG = /^sha(256|512)-[0-9a-f]{64}/;

/**
 * Whether `tag` is a digest tag (see DIGEST_TAG), bare or, in a bundle, under the full
 * reference of its repository (`HOST/REPO:sha256-HEX.sig`).
 */
export function isDigestTag(tag: string): boolean {
  return DIGEST_TAG.test(tag) || DIGEST_TAG.test(splitFullName(tag)?.tag ?? "");
}

/** Whether the reference's text names a tag (the parsers fill in `latest` when it does not). */
function namesTag(ref: Reference): boolean {
  return ref.tag !== undefined && ref.text.endsWith(`:${ref.tag}`);
}

/**
 * With --all-tags SRC names a repository, layout or archive without a tag or digest, and so
 * does DST (`dstText`; a registry DST may also be a prefix `oci://HOST[/PREFIX]`, for a
 * bundle's full-reference names): every tag is copied under its own name. Throws UsageError
 * (exit 2) otherwise.
 */
export function checkAllTagsReferences(src: Reference, dstText: string): void {
  const refuse = (side: string, text: string) =>
    new UsageError(
      `--all-tags copies every tag: ${side} ${JSON.stringify(text)} must name no tag or digest`,
    );
  if (src.digest !== undefined || namesTag(src)) throw refuse("SRC", src.text);
  let prefix: unknown;
  try {
    prefix = parseRegistryPrefix(dstText);
  } catch {
    throw refuse("DST", dstText);
  }
  if (prefix) return;
  const dst = parseReference(dstText);
  if (dst.digest !== undefined || namesTag(dst)) throw refuse("DST", dstText);
}

/**
 * The tags of `source` to copy as images, sorted: every tag but the digest tags. Digest
 * tags are never images of the job: with `digestTags` they travel with the image they name
 * (as --digest-tags copies them, so that a destination's referrers tag is merged, not
 * overwritten, and each is copied once), without it they are left out. A registry's tag
 * list is read page by page (distribution-spec "Listing Tags", `n` and the `Link`
 * header). Throws UserError when there is nothing to copy.
 */
export async function tagsToCopy(
  source: Store,
  opts: { digestTags: boolean; pageSize?: number; logger: Logger },
): Promise<string[]> {
  let tags: string[];
  if (source instanceof RegistryStore) tags = await source.listTags(opts.pageSize);
  else if (source.listTags) tags = await source.listTags();
  else throw new UserError(`${source.name}: cannot list tags`);
  const digestTags = tags.filter(isDigestTag);
  const wanted = tags.filter((t) => !isDigestTag(t));
  if (digestTags.length > 0) {
    const n = `${digestTags.length} digest tag${digestTags.length === 1 ? "" : "s"} (sha256-…)`;
    opts.logger.info(
      opts.digestTags ? `${n} go with the images they name` : `Leaving out ${n}`,
    );
  }
  if (wanted.length === 0) throw new UserError(`${source.name}: no tags to copy`);
  opts.logger.info(
    `Copying ${wanted.length} tag${wanted.length === 1 ? "" : "s"}: ${wanted.join(", ")}`,
  );
  return wanted;
}
