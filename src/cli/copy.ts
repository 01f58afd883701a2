// `umoci copy [flags] SRC DST`
import {
  type CopyEvent,
  copyGraph,
  type CopyOptions,
  type CopyStats,
  JobLanes,
  Limiter,
  newCopyStats,
  type PlanAction,
} from "../copy.ts";
import type { Descriptor } from "../media.ts";
import { blobHashName, parseDigest } from "../digest.ts";
import { describeError, NotFoundError, UsageError, UserError } from "../errors.ts";
import { dirname } from "../path.ts";
import { isIndexType, isManifestType } from "../media.ts";
import {
  checkLayoutReference,
  formatReference,
  parseReference,
  type Reference,
  type RegistryReference,
} from "../reference.ts";
import { RegistryHosts, type RegistryOptions, RegistryStore } from "../store/registry/registry.ts";
import { checkProxyEnvironment } from "../store/registry/proxy.ts";
import { caFileProblem } from "../store/registry/tls.ts";
import {
  choosePlatformsForCli,
  copyPlanForCli,
  planForCli,
  PLATFORM_FLAGS,
  type PlatformArgs,
  platformArgs,
} from "./platform.ts";
import type { PlatformChoice } from "../platform.ts";
import { ArchiveStore } from "../store/archive.ts";
import { checkAllTagsReferences, tagsToCopy } from "./all_tags.ts";
import { digestTagPrefix, type JobImage, planImages, planTags, readImageList } from "./job.ts";
import { VERSION } from "../version.ts";
import { LayoutStore } from "../store/layout.ts";
import { openStore } from "../store/open.ts";
import type { Store } from "../store/store.ts";
import {
  aliasHelp,
  flagHelp,
  type FlagSpec,
  type FlagValues,
  parseCount,
  parseFlags,
  parseSize,
} from "./flags.ts";
import {
  checkAuthFile,
  credentialFiles,
  findCredentials,
  parseCredsFlag,
} from "../store/registry/credentials.ts";
import { escapeControl, formatBytes, type Level, Logger, printLine } from "./log.ts";
import { ATTACHED_FLAGS, attachedFromFlags, copyAttachedForCli } from "./attached.ts";
import type { AttachedItem } from "../referrers.ts";
import { checkAttachedCapabilities } from "../referrers.ts";

const NEVER_CONVERTS = "umoci copy never converts; digests are preserved";
const NO_SIGNING =
  "umoci copy does not sign; sign the digest it prints afterwards (e.g. cosign sign REPO@DIGEST)";
import {
  createProgress,
  type EventContext,
  type ImageId,
  imageNow,
  loadImageContext,
  PROGRESS_MODES,
  type ProgressDisplay,
  type ProgressMode,
  withImage,
} from "./progress.ts";

export const COPY_FLAGS: Record<string, FlagSpec> = {
  "dry-run": {
    type: "boolean",
    help: "resolve everything and print the plan (what exists, would be mounted or " +
      "transferred, with sizes); write nothing",
  },
  "plain-http": {
    type: "boolean",
    help: "talk to registries over http:// instead of https:// (no fallback)",
  },
  "tls-verify": {
    type: "boolean",
    value: "BOOL",
    help: "verify registry TLS certificates (default true; --tls-verify=false to skip)",
  },
  "src-tls-verify": { type: "boolean", help: "the same for SRC only" },
  "dest-tls-verify": { type: "boolean", help: "the same for DST only" },
  "cacert": {
    type: "string",
    multiple: true,
    value: "FILE",
    help: "trust the CA certificates in this PEM file (repeatable)",
  },
  "cert-dir": {
    type: "string",
    value: "DIR",
    help: "certificates in DIR/HOST[:PORT]/ (as /etc/docker/certs.d), or in DIR itself " +
      "(as skopeo's --src-cert-dir): *.crt, client NAME.cert + NAME.key",
  },
  "src-cert-dir": { type: "string", value: "DIR", help: "the same for SRC only" },
  "dest-cert-dir": { type: "string", value: "DIR", help: "the same for DST only" },
  "trace-requests": {
    type: "boolean",
    help: "print every HTTP request and response on stderr (secrets redacted)",
  },
  "creds": {
    type: "string",
    value: "USER[:PASS]",
    help: "registry credentials for both sides (asks for PASS on a terminal when omitted)",
  },
  "src-creds": { type: "string", value: "USER[:PASS]", help: "credentials for SRC only" },
  "dest-creds": { type: "string", value: "USER[:PASS]", help: "credentials for DST only" },
  "username": { type: "string", value: "USER", help: "user name; the password comes from stdin" },
  "password-stdin": { type: "boolean", help: "read the password for --username from stdin" },
  "authfile": {
    type: "string",
    value: "FILE",
    help: "read credentials only from this auth.json/config.json",
  },
  "src-authfile": { type: "string", value: "FILE", help: "the same for SRC only" },
  "dest-authfile": { type: "string", value: "FILE", help: "the same for DST only" },
  "no-creds": { type: "boolean", help: "access registries anonymously" },
  "retries": {
    type: "string",
    value: "N",
    help: "retry a failed request or broken transfer up to N times (default 5)",
  },
  "retry-max-wait": {
    type: "string",
    value: "SECONDS",
    help: "longest wait between retries, also caps Retry-After (default 60)",
  },
  "chunk-size": {
    type: "string",
    value: "SIZE",
    help: "upload blobs in PATCH chunks of SIZE (default: one streamed PATCH per blob)",
  },
  "timeout": {
    type: "string",
    value: "SECONDS",
    help: "idle limit of every network wait; commits get 10× (default 30)",
  },
  "jobs": {
    type: "string",
    short: "j",
    value: "N",
    help: "large-blob transfers at once (default 4); blobs under 1 MiB run 2×N beside them; " +
      "in a job, for the whole job, with N images at once",
  },
  ...PLATFORM_FLAGS,
  "allow-nondistributable-artifacts": {
    type: "boolean",
    help:
      "copy blobs of foreign layers and descriptors with urls too (default off: descriptors only)",
  },
  ...ATTACHED_FLAGS,
  "digestfile": {
    type: "string",
    value: "PATH",
    help: "also write the copied manifest digest to PATH",
  },
  "log": {
    type: "string",
    value: "LEVEL",
    help: "debug, info, warn or error (default info)",
  },
  "all-tags": {
    type: "boolean",
    help: "copy every tag of SRC (a repository, layout or archive named without a tag)",
  },
  "images": {
    type: "string",
    value: "FILE",
    help: "copy every image listed in FILE (one reference a line, # comments, - for stdin) to DST",
  },
  "keep-going": {
    type: "boolean",
    help: "in a job, report a failing image and go on with the others (exit 1 at the end)",
  },
  "tag-page-size": { type: "string", value: "N" }, // tags/list page size (tests; hidden)
  "debug": { type: "boolean", help: "the same as --log=debug" },
  "quiet": { type: "boolean", short: "q", help: "only warnings and errors (--log=warn)" },
  "progress": {
    type: "string",
    value: "MODE",
    help: "auto, bars, lines or json (default auto: bars on a terminal)",
  },
  "help": { type: "boolean", short: "h", help: "show this help" },
  // skopeo's names for the same things.
  "retry-times": { type: "string", alias: "retries" },
  "image-parallel-copies": { type: "string", alias: "jobs" },
  // Always so here; accepted for scripts written for skopeo.
  "all": {
    type: "boolean",
    help: "copy an index with all its images (always so; --all is accepted)",
  },
  "preserve-digests": {
    type: "boolean",
    help: "fail rather than change a digest (always so; accepted)",
  },
  // Other tools' flags that mean nothing here: what to use instead.
  "insecure": {
    type: "boolean",
    instead: "use --tls-verify=false (https, certificates not checked) or --plain-http (http)",
  },
  "format": { type: "string", short: "f", instead: NEVER_CONVERTS },
  "dest-compress": { type: "boolean", instead: NEVER_CONVERTS },
  "dest-compress-format": { type: "string", instead: NEVER_CONVERTS },
  "dest-compress-level": { type: "string", instead: NEVER_CONVERTS },
  "dest-decompress": { type: "boolean", instead: NEVER_CONVERTS },
  "remove-signatures": {
    type: "boolean",
    instead: "umoci copy adds and removes no signatures; manifests are copied byte for byte",
  },
  "sign-by": { type: "string", instead: NO_SIGNING },
  "sign-by-sigstore": { type: "string", instead: NO_SIGNING },
  "sign-by-sigstore-private-key": { type: "string", instead: NO_SIGNING },
  "sign-passphrase-file": { type: "string", instead: NO_SIGNING },
  "sign-identity": { type: "string", instead: NO_SIGNING },
  "encryption-key": { type: "string", instead: "umoci copy does not encrypt layers" },
  "decryption-key": { type: "string", instead: "umoci copy does not decrypt layers" },
  "additional-tag": {
    type: "string",
    instead: "copy again to the other tag: only the tag is written the second time",
  },
  "retry-delay": {
    type: "string",
    instead: "waits double from 0.2 s up to --retry-max-wait (Retry-After is honored)",
  },
  "password": {
    type: "string",
    instead: "use --password-stdin or --creds USER (asks on the terminal); a password on " +
      "the command line is visible to other users",
  },
  "src-username": { type: "string", instead: "use --src-creds USER[:PASS]" },
  "src-password": { type: "string", instead: "use --src-creds USER[:PASS]" },
  "dest-username": { type: "string", instead: "use --dest-creds USER[:PASS]" },
  "dest-password": { type: "string", instead: "use --dest-creds USER[:PASS]" },
  "verbose": {
    type: "boolean",
    short: "v",
    instead: "use --debug for more detail, --trace-requests for every HTTP request",
  },
};

/**
 * `umoci copy --help`: built when asked for (wrapping the flag table costs start-up time
 * every copy would otherwise pay).
 */
export function copyUsage(): string {
  return `Usage: umoci copy [flags] SRC DST
       umoci copy [flags] --all-tags SRC DST
       umoci copy [flags] --images FILE DST

Copy an image, with everything it refers to, from SRC to DST. Every byte is
verified against its digest while it streams, content already at DST is not
transferred again, and manifests are copied byte for byte, so every digest is
preserved.

SRC and DST are each one of:
  DIR[:TAG]            an OCI image layout (TAG defaults to "latest")
  oci:DIR[:TAG]        the same (skopeo's spelling)
  ocidir://DIR[:TAG]   the same (regctl's); TAG follows the last ':', so DIR
                       may contain ':'
  DIR@DIGEST           a manifest or index in a layout (SRC only)
  oci-archive:PATH[:TAG]
                       a tar of an OCI image layout (skopeo, docker save)
  oci://HOST[:PORT]/REPO[:TAG|@DIGEST]
                       a repository in a registry
  docker://[HOST[:PORT]/]REPO[:TAG|@DIGEST]
                       the same with Docker's defaults (docker.io, library/
                       for one-part names)

A DST layout or archive that does not exist is created, unless its name looks
like a registry (HOST:PORT/..., localhost/..., a dotted host): write oci:// for
a registry. Registries are reached over https unless --plain-http is given.
With --all-tags, SRC and DST name no tag and every tag of SRC is copied under
its own name; with --images, every image listed goes to DST (see README).

Flags:
${flagHelp(COPY_FLAGS)}

Also accepted (skopeo's names):
${aliasHelp(COPY_FLAGS)}

Examples:
  umoci copy opensuse:42.2 backup:stable
  umoci copy --plain-http oci://localhost:8080/opensuse/amd64:42.2 opensuse:42.2
  umoci copy --plain-http opensuse:42.2 oci://localhost:8080/opensuse/amd64:42.2
  umoci copy --dry-run oci://registry.example/app:v1 oci://mirror.example/app:v1
  umoci copy --referrers --digest-tags oci://registry.example/app:v1 airgap:v1
`;
}

export async function copyCommand(args: string[], logger: Logger): Promise<number> {
  // Asked for JSON: even a bad command line is reported as an event.
  const early = wantsJson(args) ? createProgress("json", logger) : undefined;
  let parsed: ReturnType<typeof parseFlags>;
  try {
    parsed = parseFlags(args, COPY_FLAGS);
  } catch (e) {
    // Asked for help: help it is, whatever else is on the line (as `umoci --help copy …`).
    if (!(e instanceof UsageError) || !wantsHelp(args)) throw e;
    printLine(copyUsage());
    return 0;
  }
  const { values, positionals } = parsed;
  const progressMode = (values.progress ?? "auto") as ProgressMode;
  if (!PROGRESS_MODES.includes(progressMode)) {
    throw new UsageError(
      `--progress: unknown mode ${JSON.stringify(values.progress)} (auto, bars, lines, json)`,
    );
  }
  if (progressMode !== "json") logger.sink = undefined;
  if (values.help) {
    printLine(copyUsage());
    return 0;
  }
  if (values.all === false) {
    throw new UsageError("--all=false: umoci copy always copies an index with all its images");
  }
  if (values.all === true && values.platform !== undefined) {
    throw new UsageError(
      "--all copies an index with all its images; drop it to copy only the --platform chosen",
    );
  }
  if (values["preserve-digests"] === false) {
    throw new UsageError("--preserve-digests=false: umoci copy never changes a digest");
  }
  const imagesFile = typeof values.images === "string" ? values.images : undefined;
  const allTags = values["all-tags"] === true;
  const keepGoing = values["keep-going"] === true;
  const want = imagesFile === undefined ? 2 : 1;
  if (positionals.length !== want) {
    throw new UsageError(
      imagesFile !== undefined
        ? `copy --images FILE takes DST alone, got ${positionals.length} arguments`
        : positionals.length < 2
        ? "copy needs SRC and DST (see umoci copy --help)"
        : `copy takes exactly SRC and DST, got ${positionals.length} arguments`,
    );
  }
  if (imagesFile === "-" && values["password-stdin"]) {
    throw new UsageError(
      "--images - and --password-stdin both read stdin; give the list as a file, or the " +
        "password with --creds USER (asked on the terminal)",
    );
  }
  if (imagesFile !== undefined && allTags) {
    throw new UsageError("--images and --all-tags go separately (an images file names tags)");
  }
  if (keepGoing && imagesFile === undefined && !allTags) {
    throw new UsageError("--keep-going goes with --images or --all-tags (a job of many images)");
  }
  const jobs = values.jobs === undefined ? 4 : parseCount(String(values.jobs), "jobs", 1, 64);
  const dstText = positionals[positionals.length - 1];
  const src = imagesFile === undefined ? checkReference(parseReference(positionals[0])) : undefined;
  // DST is a repository, layout or archive, or (a job) a registry prefix: parsed per image.
  const dst = imagesFile === undefined && !allTags
    ? checkReference(parseReference(dstText))
    : undefined;
  if (allTags) checkAllTagsReferences(src!, dstText);
  if (dst && (dst.kind === "layout" || dst.kind === "archive") && dst.digest) {
    throw new UsageError(
      `destination ${JSON.stringify(dst.text)}: a layout destination needs a tag, not a digest`,
    );
  }
  const platform = platformArgs(values, dst);
  if (dst?.kind === "registry" && dst.digest && dst.tag) {
    throw new UsageError(
      `destination ${JSON.stringify(dst.text)}: give a tag or a digest, not both`,
    );
  }
  // What can be checked before anything is copied is checked now.
  // A file named on the command line that cannot serve is a bad command line (exit 2).
  try {
    for (const flag of ["authfile", "src-authfile", "dest-authfile"]) {
      const file = values[flag];
      if (typeof file === "string") await checkAuthFile(file, `--${flag}`);
    }
    if (typeof values.digestfile === "string") await checkDigestFile(values.digestfile);
    for (const file of (values.cacert as string[] | undefined) ?? []) {
      const problem = await caFileProblem(file);
      if (problem) throw new UsageError(`--cacert ${file}: ${problem}`);
    }
    // A proxy variable that is no URL would otherwise surface in the first request's error,
    // password included.
    checkProxyEnvironment();
  } catch (e) {
    throw e instanceof UserError ? new UsageError(e.message) : e;
  }
  const attached = attachedFromFlags(values);
  const creds = await credentialFlags(values, logger);
  const steps = new HeldLines(logger);
  /** A flag given for one side (`--src-X`, `--dest-X`), else for both (`--X`). */
  const perSide = (side: "src" | "dest", flag: string) => values[`${side}-${flag}`] ?? values[flag];
  /** Where one side's credentials come from, and how to give others, for auth failures. */
  const credentialHint = (side: "src" | "dest"): string => {
    const flag = values[`${side}-creds`] !== undefined
      ? `--${side}-creds`
      : values.creds !== undefined
      ? "--creds"
      : values.username !== undefined
      ? "--username and --password-stdin"
      : undefined;
    if (flag !== undefined) return `the credentials came from ${flag}`;
    if (values["no-creds"]) return "--no-creds: no credentials were sent";
    const files = credentialFiles(perSide(side, "authfile") as string | undefined);
    const where = files.length > 0 ? files.join(", ") : "no file (HOME is not set)";
    return `credentials were looked up in ${where}; ` +
      "give them with --creds USER[:PASS], --authfile FILE or podman/docker login";
  };
  const registryFor = (side: "src" | "dest"): RegistryOptions => ({
    ...registry,
    credentialHint: credentialHint(side),
    tlsVerify: perSide(side, "tls-verify") !== false,
    certDir: perSide(side, "cert-dir") as string | undefined,
    credentials: (host, repository) =>
      findCredentials(host, repository, {
        creds: creds[side],
        authFile: perSide(side, "authfile") as string | undefined,
        noCreds: values["no-creds"] === true,
        debug: (m) => logger.debug(m),
      }),
  });
  /** Set for a job of several images at once: retry lines name their image. */
  let prefixRetries = false;
  const registry: RegistryOptions = {
    plainHttp: values["plain-http"] === true,
    caCertFiles: values.cacert as string[] | undefined,
    chunkSize: values["chunk-size"] === undefined
      ? undefined
      : parseSize(String(values["chunk-size"]), "chunk-size"),
    trace: values["trace-requests"] ? (line) => logger.raw(line) : undefined,
    onRetry: (line) => {
      steps.release();
      // In a job of several images at once, a retry line says whose transfer it is, as their
      // step lines do (json events name the image in a field of their own).
      const image = prefixRetries && progressMode !== "json" ? imageNow() : undefined;
      const shown = image ? `[${image.label ?? image.name}] ${line}` : line;
      if (progress) progress.retry(shown);
      else logger.info(shown);
    },
    retries: values.retries === undefined
      ? 5
      : parseCount(String(values.retries), "retries", 0, 100),
    retryMaxWait: 1000 *
      (values["retry-max-wait"] === undefined
        ? 60
        : parseCount(String(values["retry-max-wait"]), "retry-max-wait", 0, 3600)),
    timeout: 1000 *
      (values.timeout === undefined ? 30 : parseCount(String(values.timeout), "timeout", 1, 3600)),
    userAgent: `umoci-copy/${VERSION}`,
  };

  const progress: ProgressDisplay | undefined = progressMode === "json" && early
    ? early
    : createProgress(progressMode, logger);
  const stores = new StoreCache(registryFor, logger);
  const dryRun = values["dry-run"] === true;
  const started = performance.now();
  try {
    let images: JobImage[];
    if (imagesFile !== undefined) {
      images = planImages(await readImageList(imagesFile), dstText);
    } else if (allTags) {
      const tags = await tagsToCopy(await stores.source(src!, steps), {
        digestTags: values["digest-tags"] === true,
        pageSize: values["tag-page-size"] === undefined
          ? undefined
          : parseCount(String(values["tag-page-size"]), "tag-page-size", 1, 10000),
        logger,
      });
      images = planTags(src!, tags, dstText);
    } else images = [{ src: src!, dst: dst! }];
    const job = images.length > 1 || imagesFile !== undefined || allTags;
    // One job: images run side by side (`jobs` at once, started in list order), sharing one
    // set of transfer lanes, so that --jobs bounds the blob transfers of the whole job and a
    // blob several images need is fetched once. Each step line names its image.
    const lanes = new JobLanes(jobs);
    const concurrent = images.length > 1;
    prefixRetries = concurrent;
    const imageLane = new Limiter(concurrent && !dryRun ? jobs : 1);
    /** Aborted by the first failure without --keep-going: no image starts or tags after it. */
    const stop = new AbortController();
    const results: ({ digest: string } | undefined)[] = images.map(() => undefined);
    const failed: { index: number; image: JobImage; error: unknown }[] = [];
    let firstError: unknown;
    const totals = { present: 0, blobs: 0, bytes: 0 };
    const attachedDone = new Map<string, Promise<void>>();
    /** A dry run of a job: each image's plan is named, and the job ends with one total. */
    const jobPlan = dryRun && job ? new JobPlan() : undefined;
    // Events name an image as stdout does (the images file's line, or the tag), and what the
    // job's shared connections report for an image's work (retries, traces) names it too.
    const ids = images.map((image, index): ImageId | undefined =>
      job
        ? {
          name: allTags ? image.src.tag! : image.src.text,
          index,
          label: allTags ? image.src.tag! : formatReference(image.src),
        }
        : undefined
    );
    if (job) await loadImageContext();
    const runImage = (index: number, fn: () => Promise<void>) =>
      imageLane.run(() => ids[index] ? withImage(ids[index], fn) : fn());
    await Promise.all(images.map((image, index) =>
      runImage(index, async () => {
        if (stop.signal.aborted) return; // the job stopped before this image began
        // Step lines name the image as its failure line would (a tag, for --all-tags).
        const label = allTags ? image.src.tag! : formatReference(image.src);
        const id = ids[index];
        const imageLogger = job
          ? new ImageLogger(logger, concurrent ? `[${label}] ` : "", id)
          : logger;
        const imageSteps = concurrent ? new HeldLines(imageLogger) : steps;
        imageSteps.hold();
        try {
          const source = await stores.source(image.src, imageSteps);
          const resolved = await resolveSource(source, image.src);
          // With --platform, nothing is written (the target not even opened) when none matches.
          const choice = await choosePlatformsForCli(platform, source, resolved);
          const target = await stores.target(image.dst, imageSteps);
          const { root, stats } = await copyImage(source, target, image.src, image.dst, resolved, {
            platform,
            choice,
            attached,
            jobs,
            lanes: job ? lanes : undefined,
            signal: stop.signal,
            retries: registry.retries,
            allowNonDistributable: values["allow-nondistributable-artifacts"] === true,
            dryRun,
            jobPlan: jobPlan && {
              title: `${formatReference(image.src)} → ${formatReference(image.dst)}`,
              plan: jobPlan,
            },
            logger: imageLogger,
            steps: imageSteps,
            progress,
            image: id,
            stopProgress: !concurrent,
            onBlob: (digest) => stores.holds(target, digest),
            attachedDone,
          });
          if (stats.blobsCopied + stats.blobsMounted + stats.manifestsCopied === 0) {
            totals.present++;
          }
          totals.blobs += stats.blobsCopied;
          totals.bytes += stats.bytesMoved;
          results[index] = { digest: root.digest };
        } catch (e) {
          imageSteps.release(); // what was done before the failure, then its error line
          if (id) progress?.imageFailed?.(id, describeError(e), e instanceof JobStopped);
          if (e instanceof JobStopped) return; // another image failed: this one stopped short
          if (!keepGoing || e instanceof UsageError) {
            firstError ??= e;
            stop.abort(new JobStopped());
            return;
          }
          logger.warn(`! ${formatReference(image.src)} failed: ${describeError(e)}`);
          failed.push({ index, image, error: e });
        }
      })
    ));
    failed.sort((a, b) => a.index - b.index);
    const copied = images.flatMap((image, i) => {
      const r = results[i];
      return r ? [{ digest: r.digest, image }] : [];
    });
    if (firstError !== undefined && !job) throw firstError;
    /** The error that ends a job with --keep-going when images failed. */
    const failedError = () =>
      new UserError(
        `${failed.length} of ${images.length} images failed: ${
          failed.map(({ image }) => formatReference(image.src)).join(", ")
        }`,
      );
    if (dryRun) {
      if (firstError !== undefined) throw firstError;
      if (jobPlan) printLine(escapeControl(jobPlan.line()));
      if (failed.length > 0) throw failedError();
      return 0;
    }
    if (copied.length === 0 && (firstError !== undefined || failed.length > 0)) {
      // No image finished: an archive would hold only their stray blobs, and is left as it
      // was (or not made).
    } else if (firstError === undefined) await stores.commit();
    else {
      // What finished stays valid: a bundle is still written with the images that did.
      await stores.commit().catch((e) => logger.warn(`! ${describeError(e)}`));
    }
    if (job) {
      const failures = failed.length + (firstError === undefined ? 0 : 1);
      const left = images.length - copied.length - failures;
      logger.info(
        `Images: ${
          copied.length - totals.present
        } copied, ${totals.present} already present, ${failures} failed${
          left > 0 ? `, ${left} not copied (the job stopped)` : ""
        }; ${totals.blobs} blobs (${formatBytes(totals.bytes)}) moved in ${
          ((performance.now() - started) / 1000).toFixed(1)
        } s`,
      );
      progress?.jobSummary?.({
        images: images.length,
        copied: copied.length - totals.present,
        present: totals.present,
        failed: failures,
        notCopied: left,
      });
    }
    // stdout is for scripts and terminals alike: only ever digests of the strict grammar, and
    // in a job the name each was copied from (a tag, or a reference from the images file).
    const lines = copied.map(({ digest, image }) => {
      parseDigest(digest);
      if (!job) return digest;
      return `${digest} ${allTags ? image.src.tag : escapeControl(image.src.text)}`;
    });
    if (lines.length > 0) printLine(lines.join("\n"));
    if (typeof values.digestfile === "string") {
      await Deno.writeTextFile(values.digestfile, lines.map((l) => l + "\n").join(""));
    }
    if (firstError !== undefined) throw firstError;
    if (failed.length > 0) throw failedError();
    return 0;
  } finally {
    progress?.stop();
    await stores.close();
  }
}

/**
 * The stores of a job, each opened once: sources by repository or path, destinations
 * likewise (created where missing). Says the registry line of each registry opened.
 */
class StoreCache {
  #open = new Map<string, Promise<Store>>();
  /** One pool of connections per registry host and side, shared by its repositories. */
  #hosts = { src: new RegistryHosts(), dest: new RegistryHosts() };
  constructor(
    private registryFor: (side: "src" | "dest") => RegistryOptions,
    private logger: Logger,
  ) {}

  #get(ref: Reference, side: "src" | "dest", steps: HeldLines): Promise<Store> {
    const key = `${side} ${
      ref.kind === "registry" ? `${ref.registry}/${ref.repository}` : `${ref.kind} ${ref.path}`
    }`;
    let p = this.#open.get(key);
    if (!p) {
      const registry = { ...this.registryFor(side), hosts: this.#hosts[side] };
      p = openStore(ref, { create: side === "dest", registry }).then(
        (store) => {
          if (store instanceof RegistryStore && side === "dest") {
            store.mountHint = (digest) => this.holder(digest);
          }
          if (store instanceof RegistryStore && ref.kind === "registry") {
            steps.info(registryLine(store, ref));
            if (side === "src") steps.info("Checking if manifest available in registry");
          }
          return store;
        },
      );
      this.#open.set(key, p);
    }
    return p;
  }

  /** The source store of `ref`, opened on first use (its registry line goes to `steps`). */
  source(ref: Reference, steps: HeldLines): Promise<Store> {
    return this.#get(ref, "src", steps);
  }

  /** The destination store of `ref`, opened (or created) on first use. */
  target(ref: Reference, steps: HeldLines): Promise<Store> {
    return this.#get(ref, "dest", steps);
  }

  /** Publish what destinations that publish at the end (archives) hold. */
  async commit(): Promise<void> {
    for (const [key, p] of this.#open) {
      // A store that could not be opened holds nothing to publish; its error was the
      // failure of the images that used it, and is not said again.
      const store = await p.catch(() => undefined);
      if (!store || !key.startsWith("dest ") || !store.commit) continue;
      if (store instanceof ArchiveStore && store.changed) {
        this.logger.info(`Writing ${store.path}`);
      }
      await store.commit();
    }
  }

  /** Blobs already in a destination repository of this job, by digest (for mounts). */
  #holders = new Map<string, Store>();

  /** Note that `target` holds the blob; later images' registry destinations mount from it. */
  holds(target: Store, digest: string): void {
    if (target instanceof RegistryStore && !this.#holders.has(digest)) {
      this.#holders.set(digest, target);
    }
  }

  /** Where a registry destination can mount a blob from, besides the copy's source. */
  holder(digest: string): Store | undefined {
    return this.#holders.get(digest);
  }

  async close(): Promise<void> {
    for (const p of this.#open.values()) {
      await p.then((s) => s.close()).catch(() => {});
    }
    await this.#hosts.src.close();
    await this.#hosts.dest.close();
  }
}

/**
 * Copy one image (the graph under `root`, or what --platform chose of it) from `source` to
 * `target` and tag it as `dst.tag`, with the step lines on stderr (held back, and dropped
 * when nothing needed doing). With `dryRun`, print the plan on stdout instead. Returns the
 * root copied (a platform's manifest, a rewritten index) and the counts. Throws what
 * copyGraph and the stores throw, and UsageError for a destination digest that differs.
 */
async function copyImage(
  source: Store,
  target: Store,
  src: Reference,
  dst: Reference,
  root: Descriptor,
  opts: {
    /** --platform and --sparse, and what they chose of `root` (choosePlatformsForCli). */
    platform?: PlatformArgs;
    choice?: PlatformChoice;
    /** --referrers, --referrers-type, --digest-tags (attachedFromFlags). */
    attached?: ReturnType<typeof attachedFromFlags>;
    jobs: number;
    /** The job's shared lanes (copyGraph's opts.lanes), for an image of a job. */
    lanes?: JobLanes;
    /** The job stopped (copyGraph's opts.signal). */
    signal?: AbortSignal;
    retries?: number;
    allowNonDistributable: boolean;
    dryRun: boolean;
    /** A dry run of a job: the plan's title (`SRC → DST`), and where its totals go. */
    jobPlan?: { title: string; plan: JobPlan };
    logger: Logger;
    steps: HeldLines;
    progress?: ProgressDisplay;
    /** The image of a job this is (its events name it). */
    image?: ImageId;
    /** Stop the progress display when done (not while other images of a job still run). */
    stopProgress: boolean;
    /** A blob is now in `target` (copied, mounted or found there). */
    onBlob?: (digest: string) => void;
    /** The job's attached copies by destination and root, each run once (see attachedOnce). */
    attachedDone?: Map<string, Promise<void>>;
  },
): Promise<{ root: Descriptor; stats: CopyStats }> {
  const { logger, steps, progress, dryRun } = opts;
  /** A destination named by digest must be given exactly what is copied. */
  const checkDestinationDigest = () => {
    if (dst.kind === "registry" && dst.digest && dst.digest !== root.digest) {
      throw new UsageError(
        `destination digest ${dst.digest} does not match the source's ${root.digest}`,
      );
    }
  };
  checkDestinationDigest();
  logger.debug(
    `${describe(src)} resolved to ${root.mediaType} ${root.digest} (${root.size} bytes)`,
  );
  // Lines explaining the platforms chosen, --sparse and referrers are events too (`log`).
  const notes = logger instanceof ImageLogger
    ? logger.notes()
    : new ImageLogger(logger, "", undefined, true);
  // A side that cannot give what --referrers/--digest-tags ask fails before anything is written.
  if (opts.attached) checkAttachedCapabilities(source, target, opts.attached);
  /** Digest tags are named in a bundle with their repository's full reference (job.ts). */
  const naming = { srcTagPrefix: digestTagPrefix(src), dstTagPrefix: digestTagPrefix(dst) };
  /**
   * Run the copy of referrers and digest tags unless another image of the job (another tag
   * of the same manifest) runs or ran it for the same destination: each is copied once.
   */
  const attachedOnce = async (run: () => Promise<void>): Promise<void> => {
    const key = `${target.name}\0${naming.dstTagPrefix}\0${root.digest}`;
    const earlier = opts.attachedDone?.get(key);
    if (earlier) return await earlier;
    const p = run();
    opts.attachedDone?.set(key, p.catch(() => {})); // the first image reports its failure
    await p;
  };
  // On stderr the platform chosen goes with the step lines, after the registry's, and like
  // them is left out of a rerun that has nothing to do; as JSON it is a `log` event.
  const json = (logger instanceof ImageLogger ? logger.base : logger).sink !== undefined;
  const platformNotes = { info: (line: string) => json ? notes.info(line) : steps.info(line) };
  const platformPlan = await planForCli(
    opts.choice,
    opts.platform,
    target,
    platformNotes,
    dryRun,
  );
  if (platformPlan) {
    root = platformPlan.root;
    // --platform picked a manifest out of the index: that is what the digest must name.
    checkDestinationDigest();
  }
  if (!dryRun) {
    steps.info(`Copying ${formatReference(src)} to ${formatReference(dst)}`);
    progress?.begin(formatReference(src), formatReference(dst), root, opts.image);
  }
  const tag = dst.tag;
  // What the tag names now: when that is the source's root, a rerun has nothing to do.
  const before = tag === undefined ? undefined : await tagTarget(target, tag);
  // A registry whose tag names this very manifest has all of it: one HEAD is the copy.
  const done = before === root.digest && target instanceof RegistryStore &&
    isManifestType(root.mediaType);
  const plan = new Plan();
  /** What a dry run would write (its referrers and digest tags are planned too, once). */
  const planned = new Set<string>();
  const copyOptions: CopyOptions = {
    jobs: opts.jobs,
    lanes: opts.lanes,
    signal: opts.signal,
    retries: opts.retries,
    rootTag: tag,
    allowNonDistributable: opts.allowNonDistributable,
    dryRun,
    onEvent: (e: CopyEvent) => {
      if (dryRun) {
        if ((e.type === "plan-manifest" || e.type === "plan-blob") && e.action !== "exists") {
          planned.add(e.desc.digest);
        }
        return plan.add(e);
      }
      if (e.type === "blob-done" || e.type === "blob-skip") opts.onBlob?.(e.desc.digest);
      report(e, steps, progress, target, { image: opts.image });
    },
  };
  // The graphs --referrers and --digest-tags copy after the image: their events say so.
  const onItem = (item: AttachedItem) => progress?.attached?.(item, opts.image);
  const attachedOptions: CopyOptions = {
    ...copyOptions,
    onEvent: (e: CopyEvent) => {
      if (dryRun) return copyOptions.onEvent!(e);
      if (e.type === "blob-done" || e.type === "blob-skip") opts.onBlob?.(e.desc.digest);
      report(e, steps, progress, target, { image: opts.image, attached: true });
    },
  };
  let stats: CopyStats;
  if (done) stats = emptyStats();
  else if (platformPlan) {
    ({ root, stats } = await copyPlanForCli(platformPlan, source, target, copyOptions, notes));
  } else stats = await copyGraph(source, target, root, copyOptions);
  // The bars go before the closing lines; a job keeps them until its last image is done.
  if (opts.stopProgress) progress?.stop();
  if (dryRun) {
    steps.release();
    /** Blobs to move and manifests to write in the plan. */
    const writes = () =>
      plan.blobs.filter((b) => b.action !== "exists").length +
      plan.manifests.filter((m) => m.action === "write").length;
    const planOnly = writes();
    if (opts.attached) {
      await copyAttachedForCli(source, target, root, opts.attached, copyOptions, logger, steps, {
        ...naming,
        planned,
      });
    }
    // Referrers or digest tags to copy: the plan lists them, even when the image is there.
    const attachedWrites = writes() > planOnly;
    const job = opts.jobPlan;
    const lines = plan.lines(
      root,
      before === root.digest ? undefined : tag,
      done && !attachedWrites,
      job?.title,
    );
    for (const line of lines) printLine(escapeControl(line));
    job?.plan.add(plan, done, dst);
    return { root, stats };
  }
  const nothingCopied = stats.blobsCopied + stats.blobsMounted + stats.manifestsCopied === 0;
  const written = tag !== undefined && before !== root.digest;
  if (nothingCopied) {
    // A rerun: its "already present" lines would only repeat what one line says.
    steps.drop();
    if (written) {
      if (opts.signal?.aborted) throw opts.signal.reason;
      if (!stats.rootTagged) await target.tag(root, tag, stats.rootBytes);
      logger.info(
        `Nothing to copy: ${describe(dst)} had all of ${root.digest}; ` +
          `only the tag '${tag}' was written`,
      );
    } else logger.info(`${formatReference(dst)} is already ${root.digest}: nothing to copy`);
    if (opts.attached) {
      await attachedOnce(() =>
        copyAttachedForCli(source, target, root, opts.attached!, attachedOptions, notes, steps, {
          ...naming,
          onItem,
        })
      );
    }
  } else {
    steps.release();
    if (written) {
      if (target instanceof LayoutStore) {
        logger.info(`Saving reference '${tag}' to index in ${target.path}`);
      } else if (target instanceof ArchiveStore) {
        // An archive is written once, when the copy (or the whole job) ends: not yet.
        logger.info(`Adding reference '${tag}' to ${target.path} (written when the copy ends)`);
      } else logger.info(`Tagging ${root.digest} as '${tag}'`);
      // Usually done already: the root was pushed with its tag.
      if (!stats.rootTagged) {
        if (opts.signal?.aborted) throw opts.signal.reason;
        await target.tag(root, tag, stats.rootBytes);
      }
    }
    if (opts.attached) {
      await attachedOnce(() =>
        copyAttachedForCli(source, target, root, opts.attached!, attachedOptions, notes, steps, {
          ...naming,
          onItem,
        })
      );
    }
    if (target instanceof RegistryStore) {
      logger.info(`Successfully copied to remote ${target.registry}`);
    }
    logger.info(summaryLine(stats, isIndexType(root.mediaType)));
  }
  progress?.summary(stats, root, tag, opts.image);
  return { root, stats };
}

/** A layout reference checked against the disk (see checkLayoutReference); others as they are. */
function checkReference(ref: Reference): Reference {
  return ref.kind === "layout" ? checkLayoutReference(ref) : ref;
}

/**
 * Check, before anything is copied, that --digestfile PATH can be written: its directory
 * exists and takes a new file, and PATH is not a directory. A probe file is made in the
 * directory and removed again.
 */
async function checkDigestFile(path: string): Promise<void> {
  const dir = dirname(path);
  const bad = (why: string) => new UserError(`--digestfile ${path}: ${why}`);
  const info = await Deno.stat(dir).catch((e) => e as Error);
  if (info instanceof Deno.errors.NotFound) throw bad(`directory ${dir} does not exist`);
  if (info instanceof Error) throw bad(`${dir}: ${describeError(info)}`);
  if (!info.isDirectory) throw bad(`${dir} is not a directory`);
  const target = await Deno.stat(path).catch(() => undefined);
  if (target?.isDirectory) throw bad("is a directory");
  try {
    const probe = await Deno.makeTempFile({ dir, prefix: ".umoci-copy-probe-" });
    await Deno.remove(probe);
  } catch (e) {
    throw bad(`cannot write in ${dir} (${describeError(e)})`);
  }
}

/** How many tags a "not found" message lists at most. */
const TAGS_SHOWN = 10;

/**
 * Resolve the source reference; a tag that is not there is reported with the tags that are
 * (up to TAGS_SHOWN), when the store can list them.
 */
async function resolveSource(store: Store, ref: Reference): Promise<Descriptor> {
  try {
    return await store.resolve({ tag: ref.tag, digest: ref.digest });
  } catch (e) {
    if (!(e instanceof NotFoundError) || ref.digest !== undefined) throw e;
    if (!store.sampleTags && !store.listTags) throw e;
    let listed: { tags: string[]; more: boolean };
    try {
      if (store.sampleTags) listed = await store.sampleTags(TAGS_SHOWN);
      else {
        const all = await store.listTags!();
        listed = { tags: all.slice(0, TAGS_SHOWN), more: all.length > TAGS_SHOWN };
      }
    } catch {
      throw e; // no list (a missing repository, no permission): the first error says it
    }
    const where = store instanceof LayoutStore
      ? "the layout"
      : store instanceof ArchiveStore
      ? "the archive"
      : "the repository";
    const tags = listed.tags.map((t) => JSON.stringify(t)).join(", ");
    throw new NotFoundError(
      listed.tags.length === 0
        ? `${e.message}; ${where} has no tags`
        : `${e.message}; ${where} has tags ${tags}${listed.more ? " and more" : ""}`,
    );
  }
}

/** The digest `tag` names in `store` now; undefined when it names nothing (or several). */
async function tagTarget(store: Store, tag: string): Promise<string | undefined> {
  if (store instanceof RegistryStore) return await store.tagDigest(tag);
  try {
    return (await store.resolve({ tag })).digest;
  } catch (e) {
    if (e instanceof UserError) return undefined; // not there, or ambiguous: written anew
    throw e;
  }
}

/**
 * The closing line of a copy: the blobs copied with the bytes this run moved (and the kept
 * part of resumed downloads, which was there before), the blobs mounted and found present
 * with their bytes, and how many manifests were written; parts that are zero are left out.
 */
export function summaryLine(stats: CopyStats, index: boolean): string {
  const plural = (n: number, one: string) => `${n} ${one}${n === 1 ? "" : "s"}`;
  const moved = stats.bytesResumed > 0
    ? `${formatBytes(stats.bytesMoved)} moved, ${
      formatBytes(stats.bytesResumed)
    } resumed from an earlier run`
    : formatBytes(stats.bytesMoved);
  const parts = [`Copied ${plural(stats.blobsCopied, "blob")} (${moved})`];
  if (stats.blobsMounted > 0) parts.push(`mounted ${stats.blobsMounted}`);
  if (stats.blobsSkipped > 0) parts.push(`${stats.blobsSkipped} already present`);
  if (stats.blobsMounted + stats.blobsSkipped > 0) {
    parts[parts.length - 1] += ` (${formatBytes(stats.bytesPresent)})`;
  }
  const manifests = `${plural(stats.manifestsCopied, "manifest")} written${
    index ? " (index)" : ""
  }`;
  return `${parts.join(", ")}; ${manifests}`;
}

/** The counts of a dry run's total line: blobs by what would be done, manifests written. */
interface PlanTotals {
  transfer: Amount;
  mount: Amount;
  present: Amount;
  /** Manifests to write (those of a `--sparse=auto` fallback apart). */
  write: Amount;
  /** Rewritten indexes written only if the registry refuses the sparse index. */
  fallback: Amount;
}

/** How many, and their sizes in all. */
interface Amount {
  n: number;
  bytes: number;
}

function amount(list: { desc: Descriptor }[]): Amount {
  return { n: list.length, bytes: list.reduce((n, e) => n + e.desc.size, 0) };
}

/**
 * A total line (`Total to move: …`, after `prefix`): bytes to move (blobs to transfer and
 * manifests to write), what registries are asked to mount and what it comes to if they
 * refuse, what a `--sparse=auto` fallback would write, what is already there.
 */
function totalLine(prefix: string, t: PlanTotals): string {
  const count = (n: number, one: string) => `${n} ${one}${n === 1 ? "" : "s"}`;
  const bytes = t.transfer.bytes + t.write.bytes;
  let total = `${prefix}: ${bytes} bytes (${formatBytes(bytes)}): ${
    count(t.transfer.n, "blob")
  } to transfer, ${count(t.write.n, "manifest")} to write`;
  if (t.mount.n > 0) {
    total += `; ${count(t.mount.n, "blob")} (${t.mount.bytes} bytes) to try to mount, ` +
      `${bytes + t.mount.bytes} bytes if the registry refuses`;
  }
  if (t.fallback.n > 0) {
    total += `; ${count(t.fallback.n, "rewritten index")} (${t.fallback.bytes} bytes) more ` +
      "to write if the registry refuses the sparse index";
  }
  return total + `; ${count(t.present.n, "blob")} (${t.present.bytes} bytes) already there`;
}

/** A dry run's plan, collected from copyGraph's plan events and printed as lines. */
export class Plan {
  readonly blobs: Extract<CopyEvent, { type: "plan-blob" }>[] = [];
  readonly manifests: Extract<CopyEvent, { type: "plan-manifest" }>[] = [];

  /** Take one event; all but plan events are ignored. */
  add(e: CopyEvent): void {
    if (e.type === "plan-blob") this.blobs.push(e);
    else if (e.type === "plan-manifest") this.manifests.push(e);
  }

  /** The counts of the total line. */
  totals(): PlanTotals {
    const of = (action: PlanAction) => amount(this.blobs.filter((b) => b.action === action));
    const written = this.manifests.filter((m) => m.action === "write");
    return {
      transfer: of("transfer"),
      mount: of("mount"),
      present: of("exists"),
      write: amount(written.filter((m) => !m.fallback)),
      fallback: amount(written.filter((m) => m.fallback)),
    };
  }

  /**
   * The plan as lines: a header (`title`: what is copied where, in a job), one line per
   * blob (largest first, the order transfers start in) and per manifest (children before
   * parents; a `--sparse=auto` fallback's rewritten indexes after the sparse index they
   * replace if the registry refuses it), then the totals. `tag` is the tag that would be
   * written, `done` that the destination's tag already names it all.
   */
  lines(root: Descriptor, tag: string | undefined, done: boolean, title?: string): string[] {
    const out = [`Dry run: nothing is written. Plan${title === undefined ? "" : ` for ${title}`}:`];
    if (done) {
      out.push(`  exists              root ${root.digest} (${formatBytes(root.size)}), tagged`);
      out.push("Nothing to copy: the destination's tag already names it.");
      return out;
    }
    const words: Record<PlanAction | "write", string> = {
      exists: "exists",
      mount: "would try to mount",
      transfer: "would transfer",
      write: "would write",
    };
    const row = (action: string, what: string, digest: string, size: number) =>
      `  ${action.padEnd(19)} ${what.padEnd(11)} ${digest} ${formatBytes(size)}`;
    const blobs = [...this.blobs].sort((a, b) => b.desc.size - a.desc.size);
    for (const b of blobs) out.push(row(words[b.action], blobLabel(b), b.desc.digest, b.desc.size));
    const sparse = this.manifests.some((m) => m.fallback);
    for (const m of this.manifests) {
      const isRoot = m.desc.digest === root.digest;
      const what = isRoot || m.fallback
        ? (isIndexType(m.desc.mediaType) ? "index" : "manifest")
        : "manifest";
      const tagged = m.tag !== undefined ? ` (tag '${m.tag}')` : "";
      let action = words[m.action];
      let note = "";
      if (m.fallback) {
        action = "if refused, write";
        note = ": rewritten, only the chosen platforms";
      } else if (sparse && isRoot && m.action === "write") {
        action = "would try to write";
        note = ": sparse, the registry may refuse it";
      }
      out.push(row(action, what, m.desc.digest, m.desc.size) + tagged + note);
    }
    const totals = this.totals();
    out.push(
      totalLine("Total to move", totals) +
        (tag !== undefined && !this.manifests.some((m) => m.action === "write" && m.tag)
          ? `; tag '${tag}' would be set`
          : ""),
    );
    if (totals.transfer.bytes + totals.write.bytes === 0 && totals.mount.n === 0) {
      out.push(tag === undefined ? "Nothing to copy." : `Only the tag '${tag}' would be written.`);
    }
    return out;
  }
}

/**
 * Step lines held back until the copy does something (transfers, mounts, writes, retries),
 * so that a rerun with nothing to do says so in one line instead of a line per blob it
 * found present. Released in order as soon as there is something to tell, and before an
 * error line; with --log=debug nothing is held.
 */
class HeldLines {
  #held: string[] | undefined;
  constructor(readonly logger: Logger) {
    this.#held = logger.enabled("debug") ? undefined : [];
  }

  /** An info line: now, or when released. */
  info(line: string): void {
    if (this.#held) this.#held.push(line);
    else this.logger.info(line);
  }

  /** Write what is held; from now on lines go out at once. */
  release(): void {
    const held = this.#held;
    this.#held = undefined;
    for (const line of held ?? []) this.logger.info(line);
  }

  /** Forget what is held (nothing was done); from now on lines go out at once. */
  drop(): void {
    this.#held = undefined;
  }

  /** Hold lines again (the next image of a job). */
  hold(): void {
    this.release();
    this.#held = this.logger.enabled("debug") ? undefined : [];
  }
}

/**
 * The dry run of a job: the plans of its images summed up in one total line. A blob that
 * several images need is counted once, as the first of them (in list order) plans it: the
 * job fetches it once and the others find it, or mount it, where it went. A manifest is
 * counted once per repository, layout or archive it goes to.
 */
export class JobPlan {
  images = 0;
  /** Images whose destination tag already names what would be copied. */
  done = 0;
  readonly #blobs = new Map<string, Extract<CopyEvent, { type: "plan-blob" }>>();
  readonly #manifests = new Map<string, Extract<CopyEvent, { type: "plan-manifest" }>>();

  /** Take the plan of one image going to `dst` (`done`: its destination had it all). */
  add(plan: Plan, done: boolean, dst: Reference): void {
    this.images++;
    if (done) this.done++;
    for (const b of plan.blobs) {
      if (!this.#blobs.has(b.desc.digest)) this.#blobs.set(b.desc.digest, b);
    }
    const where = describe(dst);
    for (const m of plan.manifests) {
      const key = `${where}\0${m.desc.digest}\0${m.fallback === true}`;
      if (!this.#manifests.has(key)) this.#manifests.set(key, m);
    }
  }

  /** The job's total line. */
  line(): string {
    const plan = new Plan();
    for (const e of [...this.#blobs.values(), ...this.#manifests.values()]) plan.add(e);
    const images = `${this.images} image${this.images === 1 ? "" : "s"}`;
    let line = totalLine(`Total to move for the job (${images})`, plan.totals());
    if (this.done > 0) line += `; ${this.done} already at the destination as tagged`;
    return line + "; a blob several images need counted once";
  }
}

/**
 * The lines of one image of a job, each starting with the image's name (`[NAME] `), so that
 * the step lines of images copied side by side can be told apart. Writes through `base`;
 * with --progress=json the lines go to its sink naming the image instead. `asNotes`: info
 * lines are notes (Logger.note), for the lines that explain a choice.
 */
class ImageLogger extends Logger {
  constructor(
    readonly base: Logger,
    readonly prefix: string,
    readonly image?: ImageId,
    readonly asNotes = false,
  ) {
    super();
  }
  /** The same lines, info lines as notes. */
  notes(): ImageLogger {
    return new ImageLogger(this.base, this.prefix, this.image, true);
  }
  override enabled(level: Level): boolean {
    return this.base.enabled(level);
  }
  #sink(level: Level, message: string, exitCode?: number, note?: boolean): boolean {
    const sink = this.base.sink;
    if (!sink) return false;
    if (this.base.enabled(level)) sink(level, message, exitCode, { image: this.image, note });
    return true;
  }
  override debug(message: string): void {
    if (!this.#sink("debug", message)) this.base.debug(this.prefix + message);
  }
  override info(message: string): void {
    if (this.asNotes) return this.note(message);
    if (!this.#sink("info", message)) this.base.info(this.prefix + message);
  }
  override note(message: string): void {
    if (!this.#sink("info", message, undefined, true)) this.base.note(this.prefix + message);
  }
  override warn(message: string): void {
    if (!this.#sink("warn", message)) this.base.warn(this.prefix + message);
  }
  override error(message: string, exitCode?: number): void {
    if (!this.#sink("error", message, exitCode)) this.base.error(this.prefix + message, exitCode);
  }
  override raw(line: string): void {
    const sink = this.base.sink;
    if (sink) sink("trace", line, undefined, { image: this.image });
    else this.base.raw(line);
  }
}

/** Why an image of a job stopped short: another image failed (without --keep-going). */
class JobStopped extends Error {
  constructor() {
    super("the job stopped after another image failed");
  }
}

function emptyStats(): CopyStats {
  // The root manifest is there already: nothing else was looked at.
  return { ...newCopyStats(), manifestsSkipped: 1 };
}

/** True when args ask for help (`--help`, `-h`, `--help=true`) before `--`. */
function wantsHelp(args: string[]): boolean {
  for (let i = 0; i < args.length && args[i] !== "--"; i++) {
    if (/^(-h|--help(=(true|1))?)$/.test(args[i])) return true;
  }
  return false;
}

/** True when args ask for `--progress=json` (looked for before the flags are parsed). */
function wantsJson(args: string[]): boolean {
  for (let i = 0; i < args.length && args[i] !== "--"; i++) {
    if (args[i] === "--progress=json") return true;
    if (args[i] === "--progress" && args[i + 1] === "json") return true;
  }
  return false;
}

type Creds = { username: string; password: string };

/** Credentials given on the command line, per side. */
async function credentialFlags(
  values: FlagValues,
  logger: Logger,
): Promise<{ src?: Creds; dest?: Creds }> {
  const one = async (flag: string): Promise<Creds | undefined> => {
    const text = values[flag];
    if (typeof text !== "string") return undefined;
    const { username, password } = parseCredsFlag(text, flag);
    return { username, password: password ?? await askPassword(username, logger) };
  };
  if (values["no-creds"] && (values.creds || values["src-creds"] || values["dest-creds"])) {
    throw new UsageError("--no-creds cannot be combined with --creds");
  }
  if (values.username !== undefined || values["password-stdin"]) {
    if (typeof values.username !== "string" || !values["password-stdin"]) {
      throw new UsageError("--username and --password-stdin go together");
    }
    if (values.creds) throw new UsageError("--username cannot be combined with --creds");
    const text = await new Response(Deno.stdin.readable).text();
    const password = text.replace(/\r?\n$/, "");
    if (password === "") throw new UsageError("--password-stdin: no password on stdin");
    const both = { username: values.username, password };
    return { src: both, dest: both };
  }
  const both = await one("creds");
  return { src: (await one("src-creds")) ?? both, dest: (await one("dest-creds")) ?? both };
}

/** Ask for a password on the terminal without echoing it. */
async function askPassword(username: string, logger: Logger): Promise<string> {
  if (!Deno.stdin.isTerminal()) {
    throw new UsageError(`no password given for ${username} (use USER:PASS or --password-stdin)`);
  }
  logger.overlay?.clear();
  await Deno.stderr.write(new TextEncoder().encode(`Password for ${escapeControl(username)}: `));
  Deno.stdin.setRaw(true);
  const chars: number[] = [];
  try {
    const buf = new Uint8Array(1);
    for (;;) {
      const n = await Deno.stdin.read(buf);
      if (n === null || buf[0] === 13 || buf[0] === 10) break;
      if (buf[0] === 3) throw new UsageError("interrupted");
      if (buf[0] === 127 || buf[0] === 8) chars.pop();
      else chars.push(buf[0]);
    }
  } finally {
    Deno.stdin.setRaw(false);
    await Deno.stderr.write(new TextEncoder().encode("\n"));
  }
  return new TextDecoder().decode(new Uint8Array(chars));
}

function registryLine(store: RegistryStore, ref: RegistryReference): string {
  // A job's image listed by digest goes untagged, under the digest it is given.
  const what = ref.digest
    ? `digest: ${ref.digest}`
    : ref.tag !== undefined
    ? `tag: ${ref.tag}`
    : "untagged";
  return `Registry address: ${store.baseUrl}, namespace: ${store.repository}, ${what}`;
}

function describe(ref: Reference): string {
  if (ref.kind === "registry") return `${ref.registry}/${ref.repository}`;
  return `${ref.kind} ${ref.path}`;
}

function blobLabel(e: { role: string; n: number; total: number }): string {
  return e.role === "config" ? "config" : `${e.role} ${e.n}/${e.total}`;
}

/**
 * The one line saying which non-distributable blobs a copy leaves out: count, then each
 * short digest with its size (the first 8; the rest counted).
 */
export function nonDistributableLine(descs: { digest: string; size: number }[]): string {
  const shown = 8;
  const list = descs.slice(0, shown).map((d) =>
    `${shortDigest(d.digest)} (${formatBytes(d.size)})`
  );
  if (descs.length > shown) list.push(`and ${descs.length - shown} more`);
  const one = descs.length === 1;
  return `Leaving out ${descs.length} non-distributable blob${one ? "" : "s"} (${
    one ? "its descriptor is" : "descriptors are"
  } kept; --allow-nondistributable-artifacts copies ${one ? "it" : "them"}): ${list.join(", ")}`;
}

/** `sha256:0123456789ab` (algorithm and 12 hex digits) for messages. */
function shortDigest(digest: string): string {
  const i = digest.indexOf(":");
  return digest.slice(0, i + 1 + 12);
}

/**
 * Say what an event of the copy means on the log (held step lines are let out when the first
 * transfer starts), then hand it to the progress display, so that a bar is drawn only below
 * the lines that led to it.
 */
function report(
  e: CopyEvent,
  steps: HeldLines,
  progress: ProgressDisplay | undefined,
  target: Store,
  ctx?: EventContext,
) {
  const logger = steps.logger;
  switch (e.type) {
    case "blob-start":
      steps.release();
      logger.info(
        `Copying ${blobLabel(e)} with digest ${e.desc.digest} (${formatBytes(e.desc.size)})`,
      );
      break;
    case "blob-resume":
      logger.info(
        e.offset > 0
          ? `${shortDigest(e.desc.digest)}: resuming at ${
            formatBytes(e.offset)
          } (kept from an earlier run)`
          : `${shortDigest(e.desc.digest)}: the kept part did not verify; starting over`,
      );
      break;
    case "blob-done":
      logger.debug(
        (target instanceof LayoutStore
          ? `blob saved to local store ${e.desc.digest}`
          : target instanceof ArchiveStore
          ? `blob written to archive ${e.desc.digest}`
          : `blob uploaded ${e.desc.digest}`) +
          ` (verified with ${blobHashName(e.desc.size)}${
            target instanceof LayoutStore && target.wroteDirectly(e.desc.digest)
              ? ", written with direct I/O"
              : ""
          })`,
      );
      break;
    case "blob-skip":
      if (e.reason === "mounted") steps.release();
      steps.info(
        `Skipping ${blobLabel(e)} ${e.desc.digest}: ${
          e.reason === "exists" ? "already present" : "mounted from the source repository"
        }`,
      );
      break;
    case "nondistributable-skip":
      steps.info(nonDistributableLine(e.descs));
      break;
    case "manifest-done":
      steps.release();
      logger.debug(`manifest ${e.desc.mediaType} ${e.desc.digest} written`);
      break;
    case "manifest-skip":
      logger.debug(`manifest ${e.desc.digest} already present`);
      break;
  }
  // The lines first, then the display: a bar never shows above the lines that led to it.
  progress?.event(e, ctx);
}
