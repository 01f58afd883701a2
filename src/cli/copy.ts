// `umoci copy [flags] SRC DST`
import { type CopyEvent, copyGraph, type CopyStats } from "../copy.ts";
import { parseDigest } from "../digest.ts";
import { UsageError } from "../errors.ts";
import { isIndexType, isManifestType } from "../media.ts";
import {
  formatReference,
  parseReference,
  type Reference,
  type RegistryReference,
} from "../reference.ts";
import { type RegistryOptions, RegistryStore } from "../store/registry/registry.ts";
import { VERSION } from "../version.ts";
import { LayoutStore } from "../store/layout.ts";
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
import {
  createProgress,
  PROGRESS_MODES,
  type ProgressDisplay,
  type ProgressMode,
} from "./progress.ts";

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
  "allow-nondistributable-artifacts": {
    type: "boolean",
    help:
      "copy blobs of foreign layers and descriptors with urls too (default off: descriptors only)",
  },
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
  "progress": {
    type: "string",
    value: "MODE",
    help: "auto, bars, lines or json (default auto: bars on a terminal)",
  },
  "help": { type: "boolean", short: "h", help: "show this help" },
};

export const COPY_USAGE = `Usage: umoci copy [flags] SRC DST

Copy an image, with everything it refers to, from SRC to DST. Every byte is verified
against its digest while it streams, content already at DST is not transferred again,
and manifests are copied byte for byte, so every digest is preserved.

SRC and DST are each one of:
  DIR[:TAG]                               an OCI image layout (TAG defaults to "latest")
  DIR@DIGEST                              a manifest or index in a layout (SRC only)
  oci://HOST[:PORT]/REPO[:TAG|@DIGEST]    a repository in a registry
  docker://[HOST[:PORT]/]REPO[:TAG|@DIGEST]
                                          the same with Docker's defaults (docker.io,
                                          library/ for one-part names)

A DST layout that does not exist is created. Registries are reached over https unless
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
  // Asked for JSON: even a bad command line is reported as an event.
  const early = wantsJson(args) ? createProgress("json", logger) : undefined;
  const { values, positionals } = parseFlags(args, COPY_FLAGS);
  const progressMode = (values.progress ?? "auto") as ProgressMode;
  if (!PROGRESS_MODES.includes(progressMode)) {
    throw new UsageError(
      `--progress: unknown mode ${JSON.stringify(values.progress)} (auto, bars, lines, json)`,
    );
  }
  if (progressMode !== "json") logger.sink = undefined;
  if (values.help) {
    console.log(COPY_USAGE);
    return 0;
  }
  if (positionals.length !== 2) {
    throw new UsageError(
      positionals.length < 2
        ? "copy needs SRC and DST (see umoci copy --help)"
        : `copy takes exactly SRC and DST, got ${positionals.length} arguments`,
    );
  }
  const jobs = values.jobs === undefined ? 4 : parseCount(String(values.jobs), "jobs", 1, 64);
  const src = parseReference(positionals[0]);
  const dst = parseReference(positionals[1]);
  if (dst.kind === "layout" && dst.digest) {
    throw new UsageError(
      `destination ${JSON.stringify(dst.text)}: a layout destination needs a tag, not a digest`,
    );
  }
  if (dst.kind === "registry" && dst.digest && dst.tag) {
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
    onRetry: (line) => progress ? progress.retry(line) : logger.info(line),
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
  let source: Store | undefined;
  let target: Store | undefined;
  try {
    source = await openStore(src, { registry: registryFor("src") });
    if (source instanceof RegistryStore && src.kind === "registry") {
      logger.info(registryLine(source, src));
      logger.info("Checking if manifest available in registry");
    }
    const root = await source.resolve({ tag: src.tag, digest: src.digest });
    if (dst.kind === "registry" && dst.digest && dst.digest !== root.digest) {
      throw new UsageError(
        `destination digest ${dst.digest} does not match the source's ${root.digest}`,
      );
    }
    logger.debug(
      `${describe(src)} resolved to ${root.mediaType} ${root.digest} (${root.size} bytes)`,
    );
    target = await openStore(dst, { create: true, registry: registryFor("dest") });
    if (target instanceof RegistryStore && dst.kind === "registry") {
      logger.info(registryLine(target, dst));
    }
    logger.info(`Copying ${formatReference(src)} to ${formatReference(dst)}`);
    progress?.begin(formatReference(src), formatReference(dst), root);
    const tag = dst.tag;
    // The tag already names this very manifest: the registry has all of it; one HEAD.
    const done = tag !== undefined && target instanceof RegistryStore &&
      isManifestType(root.mediaType) && (await target.tagDigest(tag)) === root.digest;
    const stats = done ? emptyStats() : await copyGraph(source, target, root, {
      jobs,
      retries: registry.retries,
      rootTag: tag,
      allowNonDistributable: values["allow-nondistributable-artifacts"] === true,
      onEvent: (e) => report(e, logger, progress, target!),
    });
    progress?.stop();
    if (done) {
      logger.info(`${formatReference(dst)} is already ${root.digest}: nothing to copy`);
    } else if (tag) {
      if (target instanceof LayoutStore) {
        logger.info(`Saving reference '${tag}' to index in ${target.path}`);
      } else logger.info(`Tagging ${root.digest} as '${tag}'`);
      // Usually done already: the root was pushed with its tag.
      if (!stats.rootTagged) await target.tag(root, tag, stats.rootBytes);
    }
    if (target instanceof RegistryStore) {
      logger.info(`Successfully copied to remote ${target.registry}`);
    }
    logger.info(summaryLine(stats, isIndexType(root.mediaType)));
    progress?.summary(stats, root, tag);
    // stdout is for scripts and terminals alike: only ever a digest of the strict grammar.
    parseDigest(root.digest);
    console.log(root.digest);
    if (typeof values.digestfile === "string") {
      await Deno.writeTextFile(values.digestfile, root.digest + "\n");
    }
    return 0;
  } finally {
    progress?.stop();
    await source?.close().catch(() => {});
    await target?.close().catch(() => {});
  }
}

function emptyStats(): CopyStats {
  return {
    blobsCopied: 0,
    blobsSkipped: 0,
    blobsMounted: 0,
    bytesCopied: 0,
    bytesMoved: 0,
    bytesPresent: 0,
    bytesResumed: 0,
    manifestsCopied: 0,
    manifestsSkipped: 1,
    nonDistributable: [],
  };
}

/** True when args ask for `--progress=json` (looked for before the flags are parsed). */
function wantsJson(args: string[]): boolean {
  for (let i = 0; i < args.length && args[i] !== "--"; i++) {
    if (args[i] === "--progress=json") return true;
    if (args[i] === "--progress" && args[i + 1] === "json") return true;
  }
  return false;
}

/**
 * The closing line: blobs copied with the bytes this run moved, blobs already present with
 * theirs, and the kept part of resumed downloads, which was there before too.
 */
export function summaryLine(stats: CopyStats, index: boolean): string {
  const resumed = stats.bytesResumed > 0
    ? ` moved, ${formatBytes(stats.bytesResumed)} resumed from an earlier run`
    : "";
  return `Copied ${stats.blobsCopied} blobs (${formatBytes(stats.bytesMoved)}${resumed}), skipped ${
    stats.blobsSkipped + stats.blobsMounted
  } already present (${
    formatBytes(stats.bytesPresent)
  }); ${stats.manifestsCopied} manifests written${index ? " (index)" : ""}`;
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
  return ref.kind === "layout" ? `layout ${ref.path}` : `${ref.registry}/${ref.repository}`;
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

function report(
  e: CopyEvent,
  logger: Logger,
  progress: ProgressDisplay | undefined,
  target: Store,
) {
  progress?.event(e);
  switch (e.type) {
    case "blob-start":
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
