// Media types, descriptors, and the parsing of manifests and indexes into the list of
// children that a graph copy has to transfer first.
import { parseDigest } from "./digest.ts";
import { UserError } from "./errors.ts";

export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
export const OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
export const OCI_LAYOUT_VERSION = "1.0.0";
export const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
export const DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
export const DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json";
export const DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws";
export const REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name";
/** Docker's foreign layer (Windows base layers), fetched from its `urls`, not the registry. */
export const DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/** Every Docker foreign layer type (containerd also knows an uncompressed `.tar`). */
const DOCKER_FOREIGN_PREFIX = "application/vnd.docker.image.rootfs.foreign.";
/** image-spec layer.md: `…nondistributable.v1.tar`, `+gzip`, `+zstd` (deprecated in 1.1). */
const OCI_NONDISTRIBUTABLE_PREFIX = "application/vnd.oci.image.layer.nondistributable.";

/** Every manifest type we copy, in the order sent as Accept. */
export const MANIFEST_TYPES = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/** Manifests and indexes larger than this are refused (as distribution and containers/image do). */
export const MAX_MANIFEST_SIZE = 4 * 1024 * 1024;

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
  "os.version"?: string;
  "os.features"?: string[];
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: Platform;
  artifactType?: string;
  urls?: string[];
  data?: string;
}

export function isIndexType(mediaType: string): boolean {
  return mediaType === OCI_INDEX || mediaType === DOCKER_LIST;
}

export function isManifestType(mediaType: string): boolean {
  return MANIFEST_TYPES.includes(mediaType);
}

export function isSchema1(mediaType: string): boolean {
  return mediaType === DOCKER_SCHEMA1 || mediaType === DOCKER_SCHEMA1_SIGNED;
}

/** Strip parameters (`; charset=utf-8`) and case from a Content-Type. */
export function baseMediaType(contentType: string | null | undefined): string {
  return (contentType ?? "").split(";")[0].trim().toLowerCase();
}

/** Validate a descriptor taken from untrusted JSON; returns it typed. */
export function checkDescriptor(value: unknown, where: string): Descriptor {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new UserError(`${where}: descriptor is not an object`);
  }
  const d = value as Record<string, unknown>;
  if (typeof d.mediaType !== "string" || d.mediaType === "") {
    throw new UserError(`${where}: descriptor has no mediaType`);
  }
  if (typeof d.digest !== "string") {
    throw new UserError(`${where}: descriptor has no digest`);
  }
  try {
    parseDigest(d.digest);
  } catch (e) {
    throw new UserError(`${where}: ${(e as Error).message}`);
  }
  if (typeof d.size !== "number" || !Number.isSafeInteger(d.size) || d.size < 0) {
    throw new UserError(`${where}: descriptor ${d.digest} has an invalid size`);
  }
  if (d.annotations !== undefined) {
    if (typeof d.annotations !== "object" || d.annotations === null) {
      throw new UserError(`${where}: descriptor ${d.digest} has invalid annotations`);
    }
  }
  if (d.urls !== undefined) {
    // descriptor.md: "urls … array of strings"; what it holds decides whether the blob moves.
    if (!Array.isArray(d.urls) || !d.urls.every((u) => typeof u === "string")) {
      throw new UserError(`${where}: descriptor ${d.digest} has invalid urls (not strings)`);
    }
  }
  return d as unknown as Descriptor;
}

/**
 * True for a non-distributable blob: one whose descriptor says it is fetched from elsewhere
 * and that registries and layouts need not hold (Windows base layers, licensed content).
 * That is, a descriptor with a non-empty `urls` list (image-spec descriptor.md, "urls": the
 * blob MAY be downloaded from those URLs), or an image-spec non-distributable layer type
 * (layer.md, `application/vnd.oci.image.layer.nondistributable.*`), or Docker's foreign
 * layer type (`application/vnd.docker.image.rootfs.foreign.diff.tar.gzip`). skopeo and crane
 * leave these blobs out of a copy and keep their descriptors; so does copyGraph, unless told
 * otherwise. Never throws (the descriptor has passed checkDescriptor).
 */
export function isNonDistributable(desc: Descriptor): boolean {
  return (Array.isArray(desc.urls) && desc.urls.length > 0) ||
    desc.mediaType.startsWith(OCI_NONDISTRIBUTABLE_PREFIX) ||
    desc.mediaType.startsWith(DOCKER_FOREIGN_PREFIX);
}

/** A manifest or index parsed far enough to copy it. */
export interface ParsedNode {
  /** The media type (from the document, or from the descriptor where the document has none). */
  mediaType: string;
  /** Content that must exist before this node: config and layers, or child manifests. */
  children: Descriptor[];
  /** An image manifest's config (also in children). */
  config?: Descriptor;
  /** An image manifest's layers (also in children). */
  layers: Descriptor[];
  /** The `subject` of an OCI 1.1 referrer, a weak reference that is not required to exist. */
  subject?: Descriptor;
  /** The raw parsed JSON, for callers that need other fields. */
  json: Record<string, unknown>;
}

function guessMediaType(json: Record<string, unknown>): string | undefined {
  if (json.schemaVersion === 1) return DOCKER_SCHEMA1;
  if (Array.isArray(json.manifests)) return OCI_INDEX;
  if (typeof json.config === "object" && json.config !== null) {
    const cfg = json.config as Record<string, unknown>;
    if (cfg.mediaType === "application/vnd.docker.container.image.v1+json") return DOCKER_MANIFEST;
    return OCI_MANIFEST;
  }
  return undefined;
}

/**
 * Parse manifest or index bytes. `declared` is the media type the descriptor (or the
 * registry's Content-Type) claims; a document whose own `mediaType` contradicts it, or
 * that is both a manifest and an index, is refused (CVE-2021-41190).
 */
export function parseNode(bytes: Uint8Array, declared: string, digest: string): ParsedNode {
  if (isSchema1(declared)) {
    throw new UserError(`${digest}: Docker schema1 manifests are not supported`);
  }
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw new UserError(`${digest}: manifest is not valid JSON`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new UserError(`${digest}: manifest is not a JSON object`);
  }
  const doc = json as Record<string, unknown>;
  if (doc.schemaVersion === 1 || isSchema1(String(doc.mediaType ?? ""))) {
    throw new UserError(`${digest}: Docker schema1 manifests are not supported`);
  }
  const own = typeof doc.mediaType === "string" ? doc.mediaType : undefined;
  if (own !== undefined && declared !== "" && own !== declared) {
    throw new UserError(
      `${digest}: manifest mediaType ${JSON.stringify(own)} contradicts its descriptor ${
        JSON.stringify(declared)
      }`,
    );
  }
  const hasManifests = doc.manifests !== undefined;
  const hasLayers = doc.layers !== undefined || doc.config !== undefined;
  if (hasManifests && hasLayers) {
    throw new UserError(`${digest}: document is both a manifest and an index; refused`);
  }
  const mediaType = own ?? (declared || guessMediaType(doc) || "");
  const where = `manifest ${digest}`;
  const children: Descriptor[] = [];
  let config: Descriptor | undefined;
  const layers: Descriptor[] = [];
  if (isIndexType(mediaType)) {
    if (hasLayers) throw new UserError(`${where}: index has config or layers`);
    if (!Array.isArray(doc.manifests)) throw new UserError(`${where}: index has no manifests list`);
    for (const m of doc.manifests) children.push(checkDescriptor(m, where));
  } else if (mediaType === OCI_MANIFEST || mediaType === DOCKER_MANIFEST) {
    if (hasManifests) throw new UserError(`${where}: manifest has a manifests list`);
    config = checkDescriptor(doc.config, where);
    children.push(config);
    if (!Array.isArray(doc.layers)) throw new UserError(`${where}: manifest has no layers list`);
    for (const l of doc.layers) layers.push(checkDescriptor(l, where));
    children.push(...layers);
  } else {
    throw new UserError(`${where}: unsupported manifest media type ${JSON.stringify(mediaType)}`);
  }
  const subject = doc.subject === undefined ? undefined : checkDescriptor(doc.subject, where);
  return { mediaType, children, config, layers, subject, json: doc };
}

/** The media type a manifest document declares for itself, without other checks. */
export function sniffMediaType(bytes: Uint8Array): string | undefined {
  try {
    const doc = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof doc !== "object" || doc === null) return undefined;
    if (typeof doc.mediaType === "string") return doc.mediaType;
    return guessMediaType(doc);
  } catch {
    return undefined;
  }
}
