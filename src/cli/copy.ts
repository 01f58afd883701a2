// `umoci copy [flags] SRC DST`
import { type CopyEvent, copyGraph, type CopyOptions, type CopyStats } from "../copy.ts";
import { parseDigest } from "../digest.ts";
import { describeError, UsageError, UserError } from "../errors.ts";
import { isIndexType, isManifestType } from "../media.ts";
import {
  formatReference,
  parseReference,
  type Reference,
  type RegistryReference,
} from "../reference.ts";
import { type RegistryOptions, RegistryStore } from "../store/registry/registry.ts";
import {
  choosePlatformsForCli,
  copyPlanForCli,
  planForCli,
  PLATFORM_FLAGS,
  type PlatformArgs,
  platformArgs,
} from "./platform.ts";
import type { PlatformChoice } from "../platform.ts";
import { VERSION } from "../version.ts";
import { LayoutStore } from "../store/layout.ts";
import { ArchiveStore } from "../store/archive.ts";
import type { Descriptor } from "../media.ts";
import { checkAllTagsReferences, tagsToCopy } from "./all_tags.ts";
import { type JobImage, planImages, planTags, readImageList } from "./job.ts";
import { openStore } from "../store/open.ts";
import type { Store } from "../store/store.ts";
import {
  flagHelp,
  type FlagSpec,
  type FlagValues,
  parseCount,
  parseFlags,
  parseSize,
} from "./flags.ts";
import { findCredentials, parseCredsFlag } from "../store/registry/credentials.ts";
import { escapeControl, formatBytes, type Logger } from "./log.ts";
import { Progress } from "./progress.ts";

export const COPY_FLAGS: Record<string, FlagSpec> = {
  "plain-http": {
    type: "boolean",
    help: "talk to registries over http:// instead of https:// (no fallback)",
  },
  "tls-verify": {
    type: "boolean",
    value: "BOOL",
    help: "verify registry TLS certificates (default true; --tls-verify=false to skip)",
  },
  "cacert": {
    type: "string",
    multiple: true,
    value: "FILE",
    help: "trust the CA certificates in this PEM file (repeatable)",
  },
  "cert-dir": {
    type: "string",
    value: "DIR",
    help: "certificates in the layout of /etc/docker/certs.d: DIR/HOST[:PORT]/*.crt",
  },
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
    help: "large-blob transfers at once (default 4); blobs under 1 MiB run 2×N beside them",
  },
  ...PLATFORM_FLAGS,
  "allow-nondistributable-artifacts": {
    type: "boolean",
    help:
      "copy blobs of foreign layers and descriptors with urls too (default off: descriptors only)",
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
  "help": { type: "boolean", short: "h", help: "show this help" },
};

export const COPY_USAGE = `Usage: umoci copy [flags] SRC DST
       umoci copy [flags] --images FILE DST

Copy an image, with everything it refers to, from SRC to DST. Every byte is verified
against its digest while it streams, content already at DST is not transferred again,
and manifests are copied byte for byte, so every digest is preserved.

SRC and DST are each one of:
  DIR[:TAG]                               an OCI image layout (TAG defaults to "latest")
  DIR@DIGEST                              a manifest or index in a layout (SRC only)
  oci-archive:PATH[:TAG]                  a tar of an OCI image layout (skopeo, docker save)
  oci://HOST[:PORT]/REPO[:TAG|@DIGEST]    a repository in a registry
  docker://[HOST[:PORT]/]REPO[:TAG|@DIGEST]
                                          the same with Docker's defaults (docker.io,
                                          library/ for one-part names)

A DST layout or archive that does not exist is created. With --all-tags, SRC and DST
name no tag and every tag of SRC is copied under its own name. Registries are reached over https unless
--plain-http is given.

Flags:
${flagHelp(COPY_FLAGS)}

Examples:
  umoci copy opensuse:42.2 backup:stable
  umoci copy --plain-http oci://localhost:8080/opensuse/amd64:42.2 opensuse:42.2
  umoci copy --plain-http opensuse:42.2 oci://localhost:8080/opensuse/amd64:42.2
  umoci copy oci://registry.example/app:v1 oci://mirror.example/app:v1
`;

export async function copyCommand(args: string[], logger: Logger): Promise<number> {
  const { values, positionals } = parseFlags(args, COPY_FLAGS);
  if (values.help) {
    console.log(COPY_USAGE);
    return 0;
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
  if (imagesFile !== undefined && allTags) {
    throw new UsageError("--images and --all-tags go separately (an images file names tags)");
  }
  const jobs = values.jobs === undefined ? 4 : parseCount(String(values.jobs), "jobs", 1, 64);
  const dstText = positionals[positionals.length - 1];
  const src = imagesFile === undefined ? parseReference(positionals[0]) : undefined;
  // DST is a repository, layout or archive, or (a job) a registry prefix: parsed per image.
  const dst = imagesFile === undefined && !allTags ? parseReference(dstText) : undefined;
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
  const creds = await credentialFlags(values, logger);
  const registryFor = (side: "src" | "dest"): RegistryOptions => ({
    ...registry,
    credentials: (host, repository) =>
      findCredentials(host, repository, {
        creds: creds[side],
        authFile: values.authfile as string | undefined,
        noCreds: values["no-creds"] === true,
        debug: (m) => logger.debug(m),
      }),
  });
  const registry: RegistryOptions = {
    plainHttp: values["plain-http"] === true,
    tlsVerify: values["tls-verify"] !== false,
    caCertFiles: values.cacert as string[] | undefined,
    certDir: values["cert-dir"] as string | undefined,
    chunkSize: values["chunk-size"] === undefined
      ? undefined
      : parseSize(String(values["chunk-size"]), "chunk-size"),
    trace: values["trace-requests"] ? (line) => logger.raw(line) : undefined,
    onRetry: (line) => logger.info(line),
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

  const progress = Progress.forTerminal(logger);
  const stores = new StoreCache(registryFor, logger);
  const started = performance.now();
  try {
    let images: JobImage[];
    if (imagesFile !== undefined) {
      images = planImages(await readImageList(imagesFile), dstText);
    } else if (allTags) {
      const tags = await tagsToCopy(await stores.source(src!), {
        digestTags: values["digest-tags"] === true,
        pageSize: values["tag-page-size"] === undefined
          ? undefined
          : parseCount(String(values["tag-page-size"]), "tag-page-size", 1, 10000),
        logger,
      });
      images = planTags(src!, tags, dstText);
    } else images = [{ src: src!, dst: dst! }];
    const job = images.length > 1 || imagesFile !== undefined || allTags;
    const copied: { digest: string; image: JobImage }[] = [];
    const failed: { image: JobImage; error: unknown }[] = [];
    const totals = { present: 0, blobs: 0, bytes: 0 };
    for (const image of images) {
      try {
        const source = await stores.source(image.src);
        const resolved = await source.resolve({ tag: image.src.tag, digest: image.src.digest });
        // With --platform, nothing is written (the target not even opened) when none matches.
        const choice = await choosePlatformsForCli(platform, source, resolved);
        const target = await stores.target(image.dst);
        const { root, stats } = await copyImage(source, target, image.src, image.dst, resolved, {
          platform,
          choice,
          jobs,
          retries: registry.retries,
          allowNonDistributable: values["allow-nondistributable-artifacts"] === true,
          logger,
          progress,
          onBlob: (digest) => stores.holds(target, digest),
        });
        if (stats.blobsCopied === 0 && stats.manifestsCopied === 0) totals.present++;
        totals.blobs += stats.blobsCopied;
        totals.bytes += stats.bytesCopied;
        copied.push({ digest: root.digest, image });
      } catch (e) {
        if (!keepGoing || e instanceof UsageError) throw e;
        logger.warn(`! ${formatReference(image.src)} failed: ${describeError(e)}`);
        failed.push({ image, error: e });
      }
    }
    await stores.commit();
    if (job) {
      logger.info(
        `Images: ${
          copied.length - totals.present
        } copied, ${totals.present} already present, ${failed.length} failed; ${totals.blobs} blobs (${
          formatBytes(totals.bytes)
        }) moved in ${((performance.now() - started) / 1000).toFixed(1)} s`,
      );
    }
    // stdout is for scripts and terminals alike: only ever digests of the strict grammar, and
    // in a job the name each was copied from (a tag, or a reference from the images file).
    const lines = copied.map(({ digest, image }) => {
      parseDigest(digest);
      if (!job) return digest;
      return `${digest} ${allTags ? image.src.tag : escapeControl(image.src.text)}`;
    });
    if (lines.length > 0) console.log(lines.join("\n"));
    if (typeof values.digestfile === "string") {
      await Deno.writeTextFile(values.digestfile, lines.map((l) => l + "\n").join(""));
    }
    if (failed.length > 0) {
      throw new UserError(
        `${failed.length} of ${images.length} images failed: ${
          failed.map(({ image }) => formatReference(image.src)).join(", ")
        }`,
      );
    }
    return 0;
  } finally {
    progress?.stop();
    await stores.close();
  }
}

/**
 * The stores of a job, each opened once: sources by repository or path, destinations
 * likewise (created where missing). Prints the registry line of each registry opened.
 */
class StoreCache {
  #open = new Map<string, Promise<Store>>();
  constructor(
    private registryFor: (side: "src" | "dest") => RegistryOptions,
    private logger: Logger,
  ) {}

  #get(ref: Reference, side: "src" | "dest"): Promise<Store> {
    const key = `${side} ${
      ref.kind === "registry" ? `${ref.registry}/${ref.repository}` : `${ref.kind} ${ref.path}`
    }`;
    let p = this.#open.get(key);
    if (!p) {
      p = openStore(ref, { create: side === "dest", registry: this.registryFor(side) }).then(
        (store) => {
          if (store instanceof RegistryStore && side === "dest") {
            store.mountHint = (digest) => this.holder(digest);
          }
          if (store instanceof RegistryStore && ref.kind === "registry") {
            this.logger.info(registryLine(store, ref));
            if (side === "src") this.logger.info("Checking if manifest available in registry");
          }
          return store;
        },
      );
      this.#open.set(key, p);
    }
    return p;
  }

  source(ref: Reference): Promise<Store> {
    return this.#get(ref, "src");
  }

  target(ref: Reference): Promise<Store> {
    return this.#get(ref, "dest");
  }

  /** Publish what destinations that publish at the end (archives) hold. */
  async commit(): Promise<void> {
    for (const [key, p] of this.#open) {
      const store = await p;
      if (!key.startsWith("dest ") || !store.commit) continue;
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
  }
}

/**
 * Copy one image (the graph under `root`) from `source` to `target` and tag it as
 * `dstRef.tag`, with the step lines on stderr. Throws what copyGraph and the stores throw.
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
    jobs: number;
    retries?: number;
    allowNonDistributable: boolean;
    logger: Logger;
    progress?: Progress;
    /** A blob is now in `target` (copied, mounted or found there). */
    onBlob?: (digest: string) => void;
  },
): Promise<{ root: Descriptor; stats: CopyStats }> {
  const { logger, progress } = opts;
  if (dst.kind === "registry" && dst.digest && dst.digest !== root.digest) {
    throw new UsageError(
      `destination digest ${dst.digest} does not match the source's ${root.digest}`,
    );
  }
  logger.debug(
    `${describe(src)} resolved to ${root.mediaType} ${root.digest} (${root.size} bytes)`,
  );
  const platformPlan = await planForCli(opts.choice, opts.platform, target, logger);
  if (platformPlan) root = platformPlan.root;
  logger.info(`Copying ${formatReference(src)} to ${formatReference(dst)}`);
  const tag = dst.tag;
  // The tag already names this very manifest: the registry has all of it; one HEAD.
  const done = tag !== undefined && target instanceof RegistryStore &&
    isManifestType(root.mediaType) && (await target.tagDigest(tag)) === root.digest;
  const copyOptions: CopyOptions = {
    jobs: opts.jobs,
    retries: opts.retries,
    rootTag: tag,
    allowNonDistributable: opts.allowNonDistributable,
    onEvent: (e) => {
      if (e.type === "blob-done" || e.type === "blob-skip") opts.onBlob?.(e.desc.digest);
      report(e, logger, progress, target);
    },
  };
  let stats: CopyStats;
  if (done) stats = emptyStats();
  else if (platformPlan) {
    ({ root, stats } = await copyPlanForCli(platformPlan, source, target, copyOptions, logger));
  } else stats = await copyGraph(source, target, root, copyOptions);
  progress?.stop();
  if (done) {
    logger.info(`${formatReference(dst)} is already ${root.digest}: nothing to copy`);
  } else if (tag) {
    if (target instanceof LayoutStore || target instanceof ArchiveStore) {
      logger.info(`Saving reference '${tag}' to index in ${target.path}`);
    } else logger.info(`Tagging ${root.digest} as '${tag}'`);
    // Usually done already: the root was pushed with its tag.
    if (!stats.rootTagged) await target.tag(root, tag, stats.rootBytes);
  }
  if (target instanceof RegistryStore) {
    logger.info(`Successfully copied to remote ${target.registry}`);
  }
  logger.info(
    `Copied ${stats.blobsCopied} blobs (${formatBytes(stats.bytesCopied)}), skipped ${
      stats.blobsSkipped + stats.blobsMounted
    } already present; ${stats.manifestsCopied} manifests written${
      isIndexType(root.mediaType) ? " (index)" : ""
    }`,
  );
  return { root, stats };
}

function emptyStats(): CopyStats {
  return {
    blobsCopied: 0,
    blobsSkipped: 0,
    blobsMounted: 0,
    bytesCopied: 0,
    manifestsCopied: 0,
    manifestsSkipped: 1,
    nonDistributable: [],
  };
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
  const what = ref.digest ? `digest: ${ref.digest}` : `tag: ${ref.tag}`;
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

function report(e: CopyEvent, logger: Logger, progress: Progress | undefined, target: Store) {
  switch (e.type) {
    case "blob-start":
      logger.info(
        `Copying ${blobLabel(e)} with digest ${e.desc.digest} (${formatBytes(e.desc.size)})`,
      );
      progress?.start(e.desc.digest, e.desc.size);
      break;
    case "blob-progress":
      progress?.update(e.desc.digest, e.bytes);
      break;
    case "blob-done":
      progress?.finish(e.desc.digest);
      logger.debug(
        target instanceof LayoutStore
          ? `blob saved to local store ${e.desc.digest}`
          : `blob uploaded ${e.desc.digest}`,
      );
      break;
    case "blob-skip":
      logger.info(
        `Skipping ${blobLabel(e)} ${e.desc.digest}: ${
          e.reason === "exists" ? "already present" : "mounted from the source repository"
        }`,
      );
      break;
    case "nondistributable-skip":
      logger.info(nonDistributableLine(e.descs));
      break;
    case "manifest-done":
      logger.debug(`manifest ${e.desc.mediaType} ${e.desc.digest} written`);
      break;
    case "manifest-skip":
      logger.debug(`manifest ${e.desc.digest} already present`);
      break;
  }
}
