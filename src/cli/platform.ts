// `--platform` and `--sparse` for `umoci copy`: the flags, and the glue between the copy
// command and src/platform.ts (which decides what of an index a copy carries).
import { copyGraph, type CopyOptions, type CopyStats } from "../copy.ts";
import { UsageError } from "../errors.ts";
import type { Descriptor } from "../media.ts";
import {
  checkComplete,
  choosePlatforms,
  copyPlatformPlan,
  parsePlatforms,
  parseSparse,
  planPlatformCopy,
  type PlatformChoice,
  type PlatformPlan,
  type PlatformSpec,
  type SparsePolicy,
} from "../platform.ts";
import type { Reference } from "../reference.ts";
import type { Store } from "../store/store.ts";
import type { FlagSpec, FlagValues } from "./flags.ts";
import type { Logger } from "./log.ts";

export const PLATFORM_FLAGS: Record<string, FlagSpec> = {
  "platform": {
    type: "string",
    multiple: true,
    value: "OS/ARCH[/VARIANT]",
    help:
      "copy only these platforms of an index (repeatable, comma-separated, * for a part, local)",
  },
  "sparse": {
    type: "string",
    value: "POLICY",
    help: "several platforms chosen: auto (default), keep (index as is) or rewrite (new index)",
  },
};

/** What `--platform` and `--sparse` asked for. */
export interface PlatformArgs {
  platforms: PlatformSpec[];
  sparse: SparsePolicy;
}

/**
 * Read `--platform` and `--sparse` (undefined when --platform is not given). Throws
 * UsageError (exit 2, before any request): a malformed platform or policy, `--sparse`
 * without `--platform`, or a destination digest (what is copied, and so its digest, is
 * known only once SRC is read).
 */
export function platformArgs(values: FlagValues, dst: Reference): PlatformArgs | undefined {
  if (values.platform === undefined) {
    if (values.sparse !== undefined) throw new UsageError("--sparse goes with --platform");
    return undefined;
  }
  const platforms = parsePlatforms(values.platform as string[]);
  const sparse = parseSparse(values.sparse as string | undefined);
  if (dst.kind === "registry" && dst.digest) {
    throw new UsageError("--platform: give the destination a tag, not a digest");
  }
  return { platforms, sparse };
}

/**
 * Right after SRC is resolved: with --platform, what of `root` to copy (choosePlatforms:
 * an error, with nothing written, when nothing matches); without it, a layout's index must
 * hold everything it lists (checkComplete: a layout written by --sparse=keep does not).
 */
export async function choosePlatformsForCli(
  args: PlatformArgs | undefined,
  source: Store,
  root: Descriptor,
): Promise<PlatformChoice | undefined> {
  if (args) return await choosePlatforms(source, root, args.platforms);
  await checkComplete(source, root);
  return undefined;
}

/** Once DST is open: the copy to make (planPlatformCopy), said on stderr. */
export function planForCli(
  choice: PlatformChoice | undefined,
  args: PlatformArgs | undefined,
  target: Store,
  logger: Logger,
): Promise<PlatformPlan | undefined> {
  if (!choice || !args) return Promise.resolve(undefined);
  return planPlatformCopy(choice, args.sparse, target, (line) => logger.info(line));
}

/**
 * Copy what `plan` says with `options` (copyGraph's, as the command would use them), the
 * `--sparse=auto` fallback included; returns the root finally copied (to tag and print) and
 * stats that count every attempt (the refused one copied the blobs).
 */
export async function copyPlanForCli(
  plan: PlatformPlan,
  source: Store,
  target: Store,
  options: CopyOptions,
  logger: Logger,
): Promise<{ root: Descriptor; stats: CopyStats }> {
  const tally = {
    blobsCopied: 0,
    bytesCopied: 0,
    blobsSkipped: 0,
    blobsMounted: 0,
    manifestsCopied: 0,
  };
  const copy = (root: Descriptor, selection: CopyOptions["selection"]) =>
    copyGraph(source, target, root, {
      ...options,
      selection,
      onEvent: (e) => {
        if (e.type === "blob-done") {
          tally.blobsCopied++;
          tally.bytesCopied += e.desc.size;
        } else if (e.type === "blob-skip") {
          if (e.reason === "mounted") tally.blobsMounted++;
          else tally.blobsSkipped++;
        } else if (e.type === "manifest-done") tally.manifestsCopied++;
        options.onEvent?.(e);
      },
    });
  const { root, stats } = await copyPlatformPlan(plan, copy, (line) => logger.info(line));
  return { root, stats: { ...stats, ...tally } };
}
