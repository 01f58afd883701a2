// The flags `--referrers` (`-r`), `--referrers-type` and `--digest-tags` of `umoci copy`,
// and the glue that runs copyAttached (../referrers.ts) after the image itself is copied.
import { UsageError } from "../errors.ts";
import type { Descriptor } from "../media.ts";
import { type AttachedOptions, copyAttached } from "../referrers.ts";
import type { Store } from "../store/store.ts";
import type { CopyOptions } from "../copy.ts";
import type { FlagSpec, FlagValues } from "./flags.ts";
import { formatBytes, type Logger } from "./log.ts";

/** The flags of `umoci copy` this file adds (spread into COPY_FLAGS). */
export const ATTACHED_FLAGS: Record<string, FlagSpec> = {
  "referrers": {
    type: "boolean",
    short: "r",
    help: "also copy referrers (signatures, SBOMs, attestations), and theirs, recursively",
  },
  "referrers-type": {
    type: "string",
    multiple: true,
    value: "ARTIFACTTYPE",
    help: "with --referrers, only referrers of this artifactType (repeatable)",
  },
  "digest-tags": {
    type: "boolean",
    help: "also copy the tags sha256-HEX and sha256-HEX.SUFFIX (cosign .sig/.att/.sbom)",
  },
};

/** RFC 6838 `type/subtype` (with +suffix and parameters-free), as artifactType values are. */
const MEDIA_TYPE =
  /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/;

/**
 * What the flags ask for, or undefined when none of them is given (then nothing of this
 * costs a request). Throws UsageError for `--referrers-type` without `--referrers` or a
 * value that is not a media type. Values may also be comma-separated.
 */
export function attachedFromFlags(
  values: FlagValues,
): Pick<AttachedOptions, "referrers" | "artifactTypes" | "digestTags"> | undefined {
  const referrers = values.referrers === true;
  const digestTags = values["digest-tags"] === true;
  const types = ((values["referrers-type"] as string[] | undefined) ?? [])
    .flatMap((v) => v.split(","))
    .map((v) => v.trim());
  for (const t of types) {
    if (!MEDIA_TYPE.test(t)) {
      throw new UsageError(
        `--referrers-type: ${JSON.stringify(t)} is not a media type (TYPE/SUBTYPE)`,
      );
    }
  }
  if (types.length > 0 && !referrers) throw new UsageError("--referrers-type needs --referrers");
  if (!referrers && !digestTags) return undefined;
  return { referrers, artifactTypes: types, digestTags };
}

/** Step lines held back until something is done (the CLI's HeldLines). */
export interface HeldSteps {
  info(line: string): void;
  release(): void;
  drop(): void;
  hold(): void;
}

/**
 * Run copyAttached with the CLI's logging: a line per referrer or digest tag copied, and a
 * summary line. What was found already there is held back (`steps`): when nothing needed
 * copying, the run says so in one line instead (none when nothing was found at all), and
 * counts them as present. In a dry run the lines say what would be copied, and the plan
 * events go through `copy.onEvent` to the plan like the image's own.
 */
export async function copyAttachedForCli(
  src: Store,
  dst: Store,
  root: Descriptor,
  wanted: Pick<AttachedOptions, "referrers" | "artifactTypes" | "digestTags">,
  copy: CopyOptions,
  logger: Logger,
  steps: HeldSteps,
  naming: Pick<AttachedOptions, "srcTagPrefix" | "dstTagPrefix" | "planned" | "onItem"> = {},
): Promise<void> {
  steps.hold();
  const s = await copyAttached(src, dst, root, {
    ...wanted,
    ...naming,
    copy,
    log: (l) => {
      steps.release();
      logger.info(l);
    },
    note: (l) => l.startsWith("!") ? logger.info(l) : steps.info(l),
  });
  const dry = copy.dryRun === true;
  const parts: string[] = [];
  const done = dry ? "would be copied" : "copied";
  const plural = (n: number, one: string) => `${n} ${one}${n === 1 ? "" : "s"}`;
  if (wanted.referrers) {
    parts.push(
      `${plural(s.referrersCopied, "referrer")} ${done}, ${s.referrersPresent} already present`,
    );
  }
  if (wanted.digestTags) {
    parts.push(`${plural(s.tagsCopied, "digest tag")} ${done}, ${s.tagsPresent} already present`);
  }
  if (s.skipped > 0) parts.push(`${s.skipped} skipped`);
  if (s.referrersCopied + s.tagsCopied + s.manifestsCopied + s.blobsCopied === 0) {
    // Nothing to do: the lines of what was found present would only repeat one line.
    steps.drop();
    const found: string[] = [];
    if (s.referrersPresent > 0) found.push(plural(s.referrersPresent, "referrer"));
    if (s.tagsPresent > 0) found.push(plural(s.tagsPresent, "digest tag"));
    if (found.length > 0) {
      logger.info(
        `${found.join(" and ")} already present: nothing to copy${
          s.skipped > 0 ? ` (${s.skipped} skipped)` : ""
        }`,
      );
    } else logger.info(parts.join("; ")); // none found: say so
    return;
  }
  steps.release();
  logger.info(
    dry
      ? parts.join("; ")
      : `${parts.join("; ")} (${s.blobsCopied} blobs, ${
        formatBytes(s.bytesCopied)
      }, ${s.manifestsCopied} manifests)`,
  );
}
