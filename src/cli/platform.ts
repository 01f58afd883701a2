// `--platform` and `--sparse` for `umoci copy`: the flags, and the glue between the copy
// command and src/platform.ts (which decides what of an index a copy carries).
import { copyGraph, type CopyOptions, type CopyStats, newCopyStats } from "../copy.ts";
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
export function platformArgs(
  values: FlagValues,
  dst: Reference | undefined,
): PlatformArgs | undefined {
  if (values.platform === undefined) {
    if (values.sparse !== undefined) throw new UsageError("--sparse goes with --platform");
    return undefined;
  }
  const platforms = parsePlatforms(values.platform as string[]);
  const sparse = parseSparse(values.sparse as string | undefined);
  if (dst?.kind === "registry" && dst.digest) {
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
  logger: Pick<Logger, "info">,
  dryRun = false,
): Promise<PlatformPlan | undefined> {
  if (!choice || !args) return Promise.resolve(undefined);
  return planPlatformCopy(choice, args.sparse, target, (line) => logger.info(line), dryRun);
}

/**
 * Copy what `plan` says with `options` (copyGraph's, as the command would use them), the
 * `--sparse=auto` fallback included; returns the root finally copied (to tag and print) and
 * stats that sum every field over both attempts (the refused one copied, mounted or found
 * the blobs; the second writes only the rewritten indexes). The second attempt's `plan`
 * event would say its own total (no blobs) as if it were the copy's: it is passed on only
 * when it adds blobs, with the sum of both, so that bytesMoved + bytesPresent +
 * bytesResumed stays the planned bytes (docs/EVENTS.md).
 *
 * With `options.dryRun` and a fallback, the registry is not asked whether it takes the
 * sparse index (only a PUT would tell): the plan lists the sparse index as tried, then the
 * rewritten indexes as `fallback` plan-manifest events, written if the registry refuses it.
 */
export async function copyPlanForCli(
  plan: PlatformPlan,
  source: Store,
  target: Store,
  options: CopyOptions,
  logger: Logger,
): Promise<{ root: Descriptor; stats: CopyStats }> {
  const stats = newCopyStats();
  let planned: { blobs: number; bytes: number } | undefined;
  const copy = (root: Descriptor, selection: CopyOptions["selection"], fallback = false) =>
    copyGraph(source, target, root, {
      ...options,
      selection,
      stats,
      onEvent: (e) => {
        if (e.type === "plan") {
          if (planned === undefined) planned = { blobs: e.blobs, bytes: e.bytes };
          else if (e.blobs === 0) return;
          else {
            planned = { blobs: planned.blobs + e.blobs, bytes: planned.bytes + e.bytes };
            e = { type: "plan", ...planned };
          }
        }
        if (fallback && e.type === "plan-manifest") e = { ...e, fallback: true };
        options.onEvent?.(e);
      },
    });
  if (options.dryRun) {
    await copy(plan.root, plan.selection);
    if (plan.fallback) await copy(plan.fallback.root, plan.fallback.selection, true);
    return { root: plan.root, stats };
  }
  const { root } = await copyPlatformPlan(plan, copy, (line) => logger.info(line));
  return { root, stats };
}
