// Platform selection: `--platform OS/ARCH[/VARIANT]` and `--sparse=auto|keep|rewrite`.
//
// The image-spec's platform object (image-index.md, "platform") names the `os`,
// `architecture` and optional `variant`, `os.version` and `os.features` a manifest is for.
// Given what the user asked for, this module walks every index of a graph (nested ones
// too) and decides what a copy carries:
//
// - exactly one platform manifest chosen: that manifest alone, its digest unchanged;
// - several: the source index as it is with only the chosen children's content (`keep`),
//   or new indexes listing only the chosen children (`rewrite`), or `keep` where the
//   destination takes it and `rewrite` where not (`auto`);
// - none: an error listing the platforms the index has.
//
// BuildKit's attestation manifests (platform `unknown/unknown`, annotation
// `vnd.docker.reference.digest` naming the manifest they describe) go with that manifest.
// The copy engine (src/copy.ts) takes the outcome as a Selection: which children of each
// manifest to copy, and the bytes of the indexes made here.
import { UsageError, UserError } from "./errors.ts";
import { digestOf, verifyBytes } from "./digest.ts";
import { readCapped } from "./stream.ts";
import {
  type Descriptor,
  isIndexType,
  isManifestType,
  OCI_CONFIG,
  OCI_MANIFEST,
  parseNode,
  type Platform,
} from "./media.ts";
import type { Store } from "./store/store.ts";

/** One `--platform` value: each part a name or `*` (any); a missing variant means any. */
export interface PlatformSpec {
  os: string;
  architecture: string;
  variant?: string;
  /** `OS/ARCH[/VARIANT]:OS.VERSION`: only when given is `os.version` compared. */
  osVersion?: string;
}

/** How several chosen platforms of an index are written (see README "Choosing platforms"). */
export type SparsePolicy = "auto" | "keep" | "rewrite";

/** Annotation BuildKit puts on an attestation manifest: the digest of the image it describes. */
export const ATTESTATION_DIGEST = "vnd.docker.reference.digest";
/** BuildKit's `vnd.docker.reference.type` value for attestation manifests. */
const ATTESTATION_TYPE = "attestation-manifest";

/** Docker's image config media type (same os/architecture/variant fields as OCI's). */
const DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json";

/** Largest image config read to check a single manifest's platform. */
const MAX_CONFIG_SIZE = 4 * 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Parsing and matching

/** Deno.build.arch → Go's GOARCH (the names image indexes use). */
const GO_ARCH: Record<string, string> = { x86_64: "amd64", aarch64: "arm64" };

/**
 * The running host as a platform, in Go's names (image-spec: "values listed in the Go
 * Language document for GOOS/GOARCH"): Deno.build.os as is (`linux`, `darwin`, `windows`),
 * Deno.build.arch `x86_64` → `amd64`, `aarch64` → `arm64` (variant `v8`).
 */
export function hostPlatform(
  build: { os: string; arch: string } = Deno.build,
): PlatformSpec {
  const architecture = GO_ARCH[build.arch] ?? build.arch;
  return architecture === "arm64"
    ? { os: build.os, architecture, variant: "v8" }
    : { os: build.os, architecture };
}

/**
 * Parse the values of `--platform` (repeatable, each comma-separated): `OS/ARCH`,
 * `OS/ARCH/VARIANT`, either with `:OS.VERSION`, `*` for any part, or `local` for the
 * running host (hostPlatform). Names are compared case-insensitively. Duplicates are
 * dropped. Throws UsageError (exit 2) naming the bad value.
 */
export function parsePlatforms(values: string[]): PlatformSpec[] {
  const out: PlatformSpec[] = [];
  for (const value of values) {
    for (const raw of value.split(",")) {
      const text = raw.trim();
      if (text === "") {
        throw new UsageError(`--platform ${JSON.stringify(value)}: empty platform`);
      }
      const spec = text.toLowerCase() === "local" ? hostPlatform() : parseOne(text);
      if (!out.some((s) => formatSpec(s) === formatSpec(spec))) out.push(spec);
    }
  }
  return out;
}

const PART = /^(\*|[a-z0-9][a-z0-9._-]*)$/;

function parseOne(text: string): PlatformSpec {
  const bad = (why: string) =>
    new UsageError(
      `--platform ${
        JSON.stringify(text)
      }: ${why} (expected OS/ARCH[/VARIANT], * for a part, or local)`,
    );
  const colon = text.indexOf(":");
  const path = colon < 0 ? text : text.slice(0, colon);
  const osVersion = colon < 0 ? undefined : text.slice(colon + 1);
  if (osVersion !== undefined && !/^[A-Za-z0-9._-]+$/.test(osVersion)) {
    throw bad("invalid os.version");
  }
  const parts = path.toLowerCase().split("/");
  if (parts.length < 2 || parts.length > 3) throw bad("not OS/ARCH");
  for (const p of parts) if (!PART.test(p)) throw bad(`invalid part ${JSON.stringify(p)}`);
  const [os, architecture, variant] = parts;
  const spec: PlatformSpec = { os, architecture };
  if (variant !== undefined) spec.variant = variant;
  if (osVersion !== undefined) spec.osVersion = osVersion;
  return spec;
}

/** `linux/arm64/v8`, `windows/amd64:10.0.17763`, `linux/*`. */
export function formatSpec(s: PlatformSpec): string {
  return `${s.os}/${s.architecture}${s.variant ? "/" + s.variant : ""}${
    s.osVersion ? ":" + s.osVersion : ""
  }`;
}

/** `linux/arm/v7` for a descriptor's platform (os.version appended after `:`). */
export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? "/" + p.variant : ""}${
    p["os.version"] ? ":" + p["os.version"] : ""
  }`;
}

/**
 * Architecture and variant in their usual spelling, as containerd's platforms package
 * normalizes them: `x86_64`/`x86-64` → `amd64` (variant `v1` is plain amd64), `aarch64` →
 * `arm64` (variant `8`, `v8` and none are the same: ARMv8), `i386`/`i686` → `386`,
 * `armhf` → `arm/v7`, `armel` → `arm/v6`, `arm` without a variant → `arm/v7`, digits alone
 * get a `v`.
 */
export function normalizeArch(architecture: string, variant = ""): [string, string] {
  let arch = architecture.toLowerCase();
  let v = variant.toLowerCase();
  if (/^\d/.test(v)) v = "v" + v;
  switch (arch) {
    case "x86_64":
    case "x86-64":
      arch = "amd64";
      break;
    case "aarch64":
      arch = "arm64";
      break;
    case "i386":
    case "i686":
      arch = "386";
      break;
    case "armhf":
      arch = "arm";
      v ||= "v7";
      break;
    case "armel":
      arch = "arm";
      v ||= "v6";
      break;
  }
  if (arch === "amd64" && v === "v1") v = "";
  if (arch === "arm64" && (v === "" || v === "v8.0")) v = "v8";
  if (arch === "arm" && v === "") v = "v7";
  return [arch, v];
}

/**
 * True when `platform` (an index entry's, or an image config's) is one `spec` asks for
 * (image-spec image-index.md "platform"): `os` equal, `architecture` and `variant` equal
 * after normalizeArch (so `arm64` without a variant matches `arm64/v8`); a `*` part
 * matches anything, a spec without a variant matches every variant, and `os.version` is
 * compared only when the spec gives one. `os.features` and `features` are not compared.
 */
export function platformMatches(spec: PlatformSpec, platform: Platform): boolean {
  if (typeof platform?.os !== "string" || typeof platform?.architecture !== "string") {
    return false;
  }
  if (spec.os !== "*" && spec.os !== platform.os.toLowerCase()) return false;
  const [arch, variant] = normalizeArch(platform.architecture, platform.variant ?? "");
  if (spec.architecture !== "*") {
    const [wantArch, wantVariant] = normalizeArch(spec.architecture, spec.variant ?? "");
    if (wantArch !== arch) return false;
    if (spec.variant !== undefined && spec.variant !== "*" && wantVariant !== variant) {
      return false;
    }
  } else if (spec.variant !== undefined && spec.variant !== "*") {
    if (normalizeArch(arch, spec.variant)[1] !== variant) return false;
  }
  if (spec.osVersion !== undefined && spec.osVersion !== platform["os.version"]) return false;
  return true;
}

/** True when any of `specs` matches `platform`. */
export function anyMatches(specs: PlatformSpec[], platform: Platform): boolean {
  return specs.some((s) => platformMatches(s, platform));
}

/** A BuildKit attestation manifest: platform unknown/unknown and the digest it describes. */
export function attestationTarget(desc: Descriptor): string | undefined {
  const target = desc.annotations?.[ATTESTATION_DIGEST];
  if (typeof target !== "string") return undefined;
  const p = desc.platform;
  const unknown = p?.os === "unknown" && p?.architecture === "unknown";
  if (!unknown && desc.annotations?.["vnd.docker.reference.type"] !== ATTESTATION_TYPE) {
    return undefined;
  }
  return target;
}

/** Parse `--sparse`. Throws UsageError for anything but auto, keep, rewrite. */
export function parseSparse(value: string | undefined): SparsePolicy {
  if (value === undefined) return "auto";
  if (value === "auto" || value === "keep" || value === "rewrite") return value;
  throw new UsageError(`--sparse ${JSON.stringify(value)}: expected auto, keep or rewrite`);
}

// ---------------------------------------------------------------------------------------
// Selection handed to the copy engine

/**
 * What src/copy.ts copies of a graph: `children` filters the child manifests of a manifest
 * (an index's entries that were not chosen are left out), and `manifests` holds the bytes
 * of indexes made by `rewrite`, read instead of the source.
 */
export interface Selection {
  manifests: Map<string, Uint8Array>;
  children(parent: Descriptor, listed: Descriptor[]): Descriptor[];
}

/** A Selection that copies every child and holds no made manifests. */
function everything(): Selection {
  return { manifests: new Map(), children: (_parent, listed) => listed };
}

/** One index of the graph as selected. */
interface IndexChoice {
  desc: Descriptor;
  bytes: Uint8Array;
  /** Entries chosen (their descriptors as listed in the source index). */
  chosen: Descriptor[];
  /** Every entry, for counting and messages. */
  entries: Descriptor[];
  /** Chosen entries that are indexes themselves, by digest. */
  nested: Map<string, IndexChoice>;
}

/** What choosePlatforms decided. */
export interface PlatformChoice {
  /** The root index (or manifest) as resolved. */
  source: Descriptor;
  /** Exactly one platform manifest chosen: it, with its platform; otherwise undefined. */
  single?: Descriptor;
  /** The index that lists `single`, when that is a nested index rather than the root. */
  singleParent?: string;
  /** The attestation manifests a single pick leaves behind (an index could list them). */
  droppedAttestations: Descriptor[];
  /** Chosen platform manifests (attestations not counted), in index order. */
  leaves: Descriptor[];
  /** Platform manifests the indexes list, attestations not counted. */
  platformCount: number;
  /** `keep`: the source index byte for byte, its unchosen children left out. */
  keep: { root: Descriptor; selection: Selection };
  /** `rewrite`: new indexes listing the chosen children only (the root's digest changes). */
  rewrite: { root: Descriptor; selection: Selection };
}

/** Short `sha256:0123456789ab` for messages. */
function short(digest: string): string {
  return digest.slice(0, digest.indexOf(":") + 13);
}

/**
 * Decide what a copy of `root` carries for `specs`, reading the indexes of the graph from
 * `src` (each once; a registry store keeps them for the copy that follows). For a single
 * image manifest, its config's os/architecture/variant must match (image-spec config.md).
 * For a layout source, chosen manifests are checked to be present (a layout written by
 * `--sparse=keep` lacks the others).
 *
 * Throws UserError (exit 1): no platform matches (the message lists those the index has),
 * a single manifest of another platform, or of none (an artifact), a chosen manifest a
 * layout lacks; and whatever the store throws.
 */
export async function choosePlatforms(
  src: Store,
  root: Descriptor,
  specs: PlatformSpec[],
): Promise<PlatformChoice> {
  const asked = specs.map(formatSpec).join(", ");
  if (!isManifestType(root.mediaType)) {
    throw new UserError(`--platform ${asked}: ${root.digest} is not a manifest or an index`);
  }
  if (!isIndexType(root.mediaType)) {
    await checkManifestPlatform(src, root, specs, asked);
    const whole = { root, selection: everything() };
    return {
      source: root,
      single: undefined,
      droppedAttestations: [],
      leaves: [root],
      platformCount: 1,
      keep: whole,
      rewrite: whole,
    };
  }

  const leaves = new Map<string, Descriptor>();
  /** The index that lists each chosen leaf (for "from index … in index …"). */
  const parentOf = new Map<string, string>();
  const attestations = new Map<string, Descriptor>();
  const seenPlatforms: string[] = [];
  let platformCount = 0;
  const missing: string[] = [];
  const visited = new Map<string, Promise<IndexChoice>>();

  const walk = (desc: Descriptor, depth: number): Promise<IndexChoice> => {
    let p = visited.get(desc.digest);
    if (!p) {
      p = (async () => {
        if (depth > 16) {
          throw new UserError(`manifest ${desc.digest} is nested more than 16 levels deep`);
        }
        const bytes = await src.fetchManifest(desc);
        const node = parseNode(bytes, desc.mediaType, desc.digest);
        const entries = node.children;
        const chosen: Descriptor[] = [];
        const nested = new Map<string, IndexChoice>();
        const pending: Descriptor[] = [];
        for (const e of entries) {
          const target = attestationTarget(e);
          if (target !== undefined) {
            pending.push(e);
            continue;
          }
          if (isIndexType(e.mediaType)) {
            // An index in an index: descend unless its own platform rules it out.
            if (e.platform && !anyMatches(specs, e.platform)) continue;
            const inner = await walk(e, depth + 1);
            if (inner.chosen.length > 0) {
              chosen.push(e);
              nested.set(e.digest, inner);
            }
            continue;
          }
          if (!isManifestType(e.mediaType)) continue;
          platformCount++;
          const name = e.platform ? formatPlatform(e.platform) : "(no platform)";
          if (!seenPlatforms.includes(name)) seenPlatforms.push(name);
          if (e.platform && anyMatches(specs, e.platform)) {
            chosen.push(e);
            leaves.set(e.digest, { ...e });
            if (!parentOf.has(e.digest)) parentOf.set(e.digest, desc.digest);
          }
        }
        for (const a of pending) {
          if (chosen.some((c) => c.digest === attestationTarget(a))) {
            chosen.push(a);
            attestations.set(a.digest, a);
          }
        }
        // Keep the index's own order of entries.
        chosen.sort((a, b) => entries.indexOf(a) - entries.indexOf(b));
        return { desc, bytes, chosen, entries, nested };
      })();
      visited.set(desc.digest, p);
    }
    return p;
  };
  const top = await walk(root, 1);

  if (leaves.size === 0) {
    throw new UserError(
      `no platform of index ${root.digest} matches --platform ${asked}; it has ${
        seenPlatforms.length > 0 ? seenPlatforms.join(", ") : "no platform manifests"
      }`,
    );
  }
  if (src.local) {
    // A layout written by --sparse=keep lacks the platforms that were not chosen then.
    for (const d of [...leaves.values(), ...attestations.values()]) {
      if (!(await src.exists(d))) {
        missing.push(`${d.platform ? formatPlatform(d.platform) : "attestation"} ${d.digest}`);
      }
    }
    if (missing.length > 0) {
      throw new UserError(
        `${src.name}: index ${root.digest} lists ${missing.join(", ")}, but the layout does not ` +
          `hold ${missing.length === 1 ? "it" : "them"} (a sparse copy)`,
      );
    }
  }

  const chosenOf = new Map<string, Set<string>>();
  for (const c of visited.values()) {
    const ic = await c;
    chosenOf.set(ic.desc.digest, new Set(ic.chosen.map((d) => d.digest)));
  }
  const keepSelection: Selection = {
    manifests: new Map(),
    children: (parent, listed) => {
      const allowed = chosenOf.get(parent.digest);
      return allowed ? listed.filter((d) => allowed.has(d.digest)) : listed;
    },
  };

  // rewrite: bottom-up, every index listing only its chosen entries (nested ones rewritten
  // first, so the parent lists their new digests). An index whose entries were all chosen
  // keeps its bytes and digest.
  const made = new Map<string, Uint8Array>();
  const rewritten = new Map<string, Descriptor>();
  const rewriteIndex = async (ic: IndexChoice): Promise<Descriptor> => {
    const done = rewritten.get(ic.desc.digest);
    if (done) return done;
    const entries: Descriptor[] = [];
    let changed = ic.chosen.length !== ic.entries.length;
    for (const e of ic.chosen) {
      const inner = ic.nested.get(e.digest);
      if (inner) {
        const now = await rewriteIndex(inner);
        if (now.digest !== e.digest) changed = true;
        entries.push({ ...e, digest: now.digest, size: now.size });
      } else entries.push(e);
    }
    let result = ic.desc;
    if (changed) {
      const bytes = reserialize(ic.bytes, entries);
      result = { ...ic.desc, digest: await digestOf(bytes), size: bytes.length };
      made.set(result.digest, bytes);
    }
    rewritten.set(ic.desc.digest, result);
    return result;
  };
  const newRoot = await rewriteIndex(top);
  const rewriteSelection: Selection = { ...everything(), manifests: made };

  const leafList = [...leaves.values()];
  const dropped = [...attestations.values()];
  return {
    source: root,
    single: leafList.length === 1 ? leafList[0] : undefined,
    singleParent: leafList.length === 1 && parentOf.get(leafList[0].digest) !== root.digest
      ? parentOf.get(leafList[0].digest)
      : undefined,
    droppedAttestations: leafList.length === 1 ? dropped : [],
    leaves: leafList,
    platformCount,
    keep: { root, selection: keepSelection },
    rewrite: { root: newRoot, selection: rewriteSelection },
  };
}

/**
 * `original` (an index's JSON) with its `manifests` replaced by `entries`, every other
 * field and annotation kept in its order. The source's formatting is kept when it is one
 * JSON.stringify writes (compact, or indented by 2, 3 or 4 spaces or a tab, with or without
 * a final newline); otherwise the result is compact.
 */
export function reserialize(original: Uint8Array, entries: Descriptor[]): Uint8Array {
  const text = new TextDecoder().decode(original);
  const doc = JSON.parse(text);
  let indent: string | number = 0;
  let newline = "";
  for (const candidate of [0, 2, 3, 4, "\t"]) {
    const again = JSON.stringify(doc, null, candidate);
    if (again === text || again + "\n" === text) {
      indent = candidate;
      newline = again === text ? "" : "\n";
      break;
    }
  }
  doc.manifests = entries;
  return new TextEncoder().encode(JSON.stringify(doc, null, indent) + newline);
}

/**
 * A single image manifest asked for with --platform: its config's os/architecture/variant
 * (image-spec config.md, Docker's image config alike) must match one of `specs`. Throws
 * UserError naming the platform it is, or saying it has none (an artifact).
 */
async function checkManifestPlatform(
  src: Store,
  root: Descriptor,
  specs: PlatformSpec[],
  asked: string,
): Promise<void> {
  const node = parseNode(await src.fetchManifest(root), root.mediaType, root.digest);
  const cfg = node.config;
  let platform: Platform | undefined;
  if (
    cfg && cfg.size <= MAX_CONFIG_SIZE &&
    (cfg.mediaType === OCI_CONFIG || cfg.mediaType === DOCKER_CONFIG)
  ) {
    const bytes = await readCapped((await src.fetch(cfg)).stream, cfg.size);
    await verifyBytes(bytes, cfg.digest, cfg.size);
    try {
      const doc = JSON.parse(new TextDecoder().decode(bytes));
      if (typeof doc?.os === "string" && typeof doc?.architecture === "string") {
        platform = { os: doc.os, architecture: doc.architecture };
        if (typeof doc.variant === "string" && doc.variant !== "") {
          platform.variant = doc.variant;
        }
        if (typeof doc["os.version"] === "string") platform["os.version"] = doc["os.version"];
      }
    } catch {
      throw new UserError(`config ${cfg.digest} of ${root.digest} is not valid JSON`);
    }
  }
  if (!platform) {
    throw new UserError(
      `--platform ${asked}: ${root.digest} is a single manifest without a platform (config ${
        cfg?.mediaType ?? "none"
      })`,
    );
  }
  if (!anyMatches(specs, platform)) {
    throw new UserError(
      `${root.digest} is a single ${formatPlatform(platform)} image, not --platform ${asked}`,
    );
  }
}

// ---------------------------------------------------------------------------------------
// Sparse layouts read without --platform

/**
 * Refuse, before anything is written, to copy an index from a layout that lacks some of
 * the manifests it lists (a layout written with --sparse=keep): one UserError naming the
 * missing manifests with their platforms and the --platform that copies what is there.
 * Only for local stores (a stat per listed manifest); registries check this themselves when
 * they accept an index. Nested indexes are followed when present.
 */
export async function checkComplete(src: Store, root: Descriptor): Promise<void> {
  if (!src.local || !isIndexType(root.mediaType)) return;
  const missing: string[] = [];
  const present: string[] = [];
  const seen = new Set<string>();
  const walk = async (desc: Descriptor, depth: number): Promise<void> => {
    if (seen.has(desc.digest) || depth > 16) return;
    seen.add(desc.digest);
    if (!(await src.exists(desc))) return; // copyGraph reports the root itself
    const node = parseNode(await src.fetchManifest(desc), desc.mediaType, desc.digest);
    for (const e of node.children) {
      if (!isManifestType(e.mediaType)) continue;
      const name = e.platform
        ? formatPlatform(e.platform)
        : attestationTarget(e)
        ? "attestation"
        : e.mediaType === OCI_MANIFEST
        ? "manifest"
        : "index";
      if (!(await src.exists(e))) missing.push(`${name} ${e.digest}`);
      else {
        if (e.platform && attestationTarget(e) === undefined) {
          present.push(formatPlatform(e.platform));
        }
        if (isIndexType(e.mediaType)) await walk(e, depth + 1);
      }
    }
  };
  await walk(root, 1);
  if (missing.length === 0) return;
  throw new UserError(
    `${src.name}: index ${root.digest} is sparse: ${missing.length} manifest${
      missing.length === 1 ? " it lists is" : "s it lists are"
    } not in the layout (${missing.join(", ")}); ${
      present.length > 0
        ? `copy what is there with --platform ${[...new Set(present)].join(",")}`
        : "nothing of it can be copied"
    }`,
  );
}

// ---------------------------------------------------------------------------------------
// Copying a choice with a sparse policy

/** A copy of `root` with `selection` (src/copy.ts copyGraph, bound to its stores). */
export type CopyFn<S> = (root: Descriptor, selection: Selection) => Promise<S>;

/** What the CLI needs to know about the copy it is about to make. */
export interface PlatformPlan {
  /** The root to copy (and tag, and print). */
  root: Descriptor;
  selection: Selection;
  /** The policy that applies now (`auto` becomes keep or rewrite). */
  mode: "single" | "whole" | "keep" | "rewrite";
  /**
   * With `auto` to a registry: keep is tried, and on refusal the rewritten indexes are
   * written (only they: what they list is in place by then).
   */
  fallback?: { root: Descriptor; selection: Selection };
}

/**
 * Decide, for `choice` and `policy`, what copy to make to `dst`, and say so through `log`:
 * one platform → that manifest; several → the source index (`keep`), a rewritten index
 * (`rewrite`) or `auto`: keep to a layout; to a registry keep with a fallback to rewrite,
 * unless the registry already holds the rewritten index (an earlier auto copy fell back:
 * the registry refuses sparse indexes), which is then taken at once. With `dryRun` the
 * line for that last case says what would be tried and what written if it is refused (a
 * registry's answer is only known from the PUT, which a dry run does not make).
 */
export async function planPlatformCopy(
  choice: PlatformChoice,
  policy: SparsePolicy,
  dst: Store,
  log: (line: string) => void,
  dryRun = false,
): Promise<PlatformPlan> {
  const src = choice.source;
  if (!isIndexType(src.mediaType)) {
    log(`${src.digest} is a single manifest of the platform asked for`);
    return { root: src, selection: choice.keep.selection, mode: "whole" };
  }
  if (choice.single) {
    const leaf = choice.single;
    log(
      `Selected platform ${formatPlatform(leaf.platform!)} (${leaf.digest}) from index ${
        choice.singleParent ? `${choice.singleParent} in index ${src.digest}` : src.digest
      } (1 of ${choice.platformCount} platforms)`,
    );
    if (choice.droppedAttestations.length > 0) {
      log(
        `Leaving out its attestation manifest${
          choice.droppedAttestations.length === 1 ? "" : "s"
        } ${
          choice.droppedAttestations.map((d) => short(d.digest)).join(", ")
        }: without an index nothing would list ${
          choice.droppedAttestations.length === 1 ? "it" : "them"
        }`,
      );
    }
    // The single manifest is what it is; the descriptor keeps its platform (index.json).
    const root: Descriptor = {
      mediaType: leaf.mediaType,
      digest: leaf.digest,
      size: leaf.size,
    };
    if (leaf.platform) root.platform = leaf.platform;
    return { root, selection: choice.keep.selection, mode: "single" };
  }
  const names = choice.leaves.map((d) => formatPlatform(d.platform!)).join(", ");
  const count = `${choice.leaves.length} of ${choice.platformCount} platforms`;
  if (choice.rewrite.root.digest === src.digest) {
    log(`Every platform of index ${src.digest} matches (${names}): copying it whole`);
    return { root: src, selection: choice.keep.selection, mode: "whole" };
  }
  const keepLine =
    `index ${src.digest} kept as is, ${count} (${names}); the others' manifests are not copied`;
  const rewriteLine = `index ${src.digest} → ${choice.rewrite.root.digest}, ${count} (${names})`;
  if (policy === "keep") {
    log(`${keepLine} (--sparse=keep)`);
    return { ...choice.keep, mode: "keep" };
  }
  if (policy === "rewrite") {
    log(`${rewriteLine} (--sparse=rewrite)`);
    return { ...choice.rewrite, mode: "rewrite" };
  }
  if (dst.local) {
    log(`${keepLine} (--sparse=auto: a layout takes a sparse index)`);
    return { ...choice.keep, mode: "keep" };
  }
  if (await dst.exists(choice.rewrite.root)) {
    log(
      `${rewriteLine} (--sparse=auto: ${dst.name} already holds this rewritten index from an earlier copy)`,
    );
    return { ...choice.rewrite, mode: "rewrite" };
  }
  if (dryRun) {
    log(
      `index ${src.digest}, ${count} (${names}): --sparse=auto would try it as is (a sparse ` +
        `index) at ${dst.name} and, if the registry refuses it, write the rewritten index ` +
        `${choice.rewrite.root.digest} instead`,
    );
  } else log(`${keepLine} (--sparse=auto: trying whether ${dst.name} takes a sparse index)`);
  // When the registry refuses the sparse index, everything it lists was written before the
  // refused PUT (children before parents), so the fallback writes only the indexes made by
  // rewrite: one HEAD and one PUT each, instead of asking about every blob again.
  const made = choice.rewrite.selection.manifests;
  const fallback: Selection = {
    manifests: made,
    children: (_parent, listed) => listed.filter((d) => made.has(d.digest)),
  };
  return {
    ...choice.keep,
    mode: "keep",
    fallback: { root: choice.rewrite.root, selection: fallback },
  };
}

/**
 * True for the error a registry gives when it refuses an index whose children it lacks:
 * distribution answers a manifest PUT with 400 MANIFEST_BLOB_UNKNOWN (others
 * MANIFEST_UNKNOWN, MANIFEST_INVALID or BLOB_UNKNOWN).
 */
export function isSparseRefusal(e: unknown): boolean {
  if (!(e instanceof UserError)) return false;
  return /PUT \S*\/manifests\/\S*: 4\d\d\b/.test(e.message) &&
    /MANIFEST_BLOB_UNKNOWN|MANIFEST_UNKNOWN|MANIFEST_INVALID|BLOB_UNKNOWN/i.test(e.message);
}

/**
 * Make the copy `plan` describes with `copy`. With a fallback (auto to a registry): when
 * the registry refuses the sparse index, say why and copy the rewritten index instead
 * (everything below it is there by then; only the new index is written). Under
 * `--sparse=keep` such a refusal is one UserError pointing at --sparse=rewrite. Returns the
 * root finally copied and what `copy` returned.
 */
export async function copyPlatformPlan<S>(
  plan: PlatformPlan,
  copy: CopyFn<S>,
  log: (line: string) => void,
): Promise<{ root: Descriptor; stats: S }> {
  try {
    const stats = await copy(plan.root, plan.selection);
    if (plan.fallback) {
      log(`The registry took the sparse index ${plan.root.digest} (--sparse=auto)`);
    }
    return { root: plan.root, stats };
  } catch (e) {
    if (plan.mode !== "keep" || !isSparseRefusal(e)) throw e;
    const why = (e as Error).message;
    if (!plan.fallback) {
      throw new UserError(
        `the registry refuses an index whose other platforms it lacks (${why}); use --sparse=rewrite or auto`,
      );
    }
    log(
      `The registry refused the sparse index (${why}); the chosen platforms are in place, ` +
        `writing a rewritten index ${plan.fallback.root.digest} instead (--sparse=auto)`,
    );
    return {
      root: plan.fallback.root,
      stats: await copy(plan.fallback.root, plan.fallback.selection),
    };
  }
}
