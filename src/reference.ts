// Parsing of every kind of image reference the CLI accepts, in one place.
//
//   DIR[:TAG]  DIR@DIGEST                          an OCI image layout (umoci's syntax)
//   oci:DIR[:TAG]                                  the same in skopeo's spelling
//   ocidir://DIR[:TAG]                             a layout in regctl's spelling (tag after
//                                                  the last ':', so DIR may contain ':')
//   oci://HOST[:PORT]/REPO[:TAG][@DIGEST]          a registry, host named explicitly
//   docker://[HOST[:PORT]/]REPO[:TAG][@DIGEST]     a registry with Docker's defaults
//   oci-archive:PATH[:TAG]  oci-archive:PATH@DIGEST   a tar of an OCI image layout
import { parseDigest } from "./digest.ts";
import { UsageError } from "./errors.ts";

export interface LayoutReference {
  kind: "layout";
  /** Path of the layout directory as given. */
  path: string;
  /** A tag (ref.name), when the reference names one. */
  tag?: string;
  /** A digest, when the reference names one. */
  digest?: string;
  /** The original text. */
  text: string;
  /**
   * Written with a layout scheme (`oci:`, `ocidir://`): the user said "layout", so the
   * guesses of checkLayoutReference (a registry written without `oci://`) do not apply.
   */
  explicit?: boolean;
}

export interface RegistryReference {
  kind: "registry";
  /** Registry as the user named it, e.g. `localhost:5000` or `docker.io`. */
  registry: string;
  /** Host[:port] to connect to (`registry-1.docker.io` for docker.io). */
  host: string;
  repository: string;
  tag?: string;
  digest?: string;
  text: string;
}

/** `oci-archive:PATH[:TAG]`: a tar of an OCI image layout; PATH and TAG as for a layout. */
export interface ArchiveReference extends Omit<LayoutReference, "kind"> {
  kind: "archive";
}

export type Reference = LayoutReference | RegistryReference | ArchiveReference;

const ARCHIVE_PREFIX = "oci-archive:";

export const DEFAULT_TAG = "latest";
const DOCKER_HUB = "docker.io";
const DOCKER_HUB_HOST = "registry-1.docker.io";

// org.opencontainers.image.ref.name grammar (image-spec annotations.md), as umoci checks it.
const REF_NAME_COMPONENT = "[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*";
const REF_NAME = new RegExp(`^${REF_NAME_COMPONENT}(?:/${REF_NAME_COMPONENT})*$`);

// Distribution spec grammar for repository names and tags.
const REPO_COMPONENT = "[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*";
const REPOSITORY = new RegExp(`^${REPO_COMPONENT}(?:/${REPO_COMPONENT})*$`);
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const DOMAIN_COMPONENT = "(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])";
const HOST = new RegExp(
  `^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[0-9A-Fa-f:.]+\\])(?::[0-9]{1,5})?$`,
);

export function isValidRefName(name: string): boolean {
  return REF_NAME.test(name);
}

export function isValidTag(tag: string): boolean {
  return TAG.test(tag);
}

function checkDigest(digest: string, text: string): string {
  try {
    parseDigest(digest);
  } catch (e) {
    throw new UsageError(`invalid reference ${JSON.stringify(text)}: ${(e as Error).message}`);
  }
  return digest;
}

/** Parse any reference; `oci://` and `docker://` select a registry, anything else a layout. */
export function parseReference(text: string): Reference {
  if (text.startsWith(ARCHIVE_PREFIX)) return parseArchiveReference(text);
  if (text.startsWith("ocidir://")) return parseOciDirReference(text);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) return parseRegistryReference(text);
  if (text.startsWith("oci:")) {
    // skopeo's oci:DIR[:TAG] (containers/image splits it at the first ':' too).
    return { ...parseLayoutReference(text.slice(4), text), explicit: true };
  }
  try {
    return parseLayoutReference(text);
  } catch (e) {
    // `docker-archive:/tmp/x.tar` is no DIR:TAG at all (its "tag" is a path): say why.
    throw otherTransportError(text, true) ?? e;
  }
}

/** `docker.io` for Docker Hub's other names (`index.docker.io`, `registry-1.docker.io`). */
export function dockerHubName(registry: string): string {
  return registry === "index.docker.io" || registry === DOCKER_HUB_HOST ? DOCKER_HUB : registry;
}

/**
 * The UsageError for `text` written with one of skopeo's transports this tool does not do
 * (OTHER_TRANSPORTS), or undefined for any other text (and, with `pathsOnly`, for a text
 * whose rest is no path).
 */
function otherTransportError(text: string, pathsOnly = false): UsageError | undefined {
  const transport = /^([a-z-]+):/.exec(text)?.[1];
  if (transport === undefined || !OTHER_TRANSPORTS.includes(transport)) return undefined;
  const rest = text.slice(transport.length + 1);
  if (pathsOnly && !rest.includes("/")) return undefined;
  // `oci:TEXT` names a layout directory of that name, but only when the rest is a tag.
  const layout = rest.includes("/")
    ? ""
    : `; for a new layout directory named ${JSON.stringify(transport)} write oci:${text}`;
  return new UsageError(
    `invalid image reference ${JSON.stringify(text)}: ${transport}: is a skopeo transport ` +
      "umoci copy does not read or write (it copies OCI layouts, oci-archive: and " +
      `registries)${layout}`,
  );
}

/**
 * regctl's `ocidir://DIR[:TAG|@DIGEST]`. The tag is what follows the last `:` after the last
 * `/` (a plain tag, as regctl has it), so this spelling can name a directory with `:` in
 * its name, which `DIR:TAG` cannot.
 */
function parseOciDirReference(text: string): LayoutReference {
  const rest = text.slice("ocidir://".length);
  const at = rest.indexOf("@");
  if (at !== -1) return { ...parseLayoutReference(rest, text), explicit: true };
  const colon = rest.lastIndexOf(":");
  if (colon === -1 || colon < rest.lastIndexOf("/")) {
    return { ...parseLayoutReference(rest, text, rest.length), explicit: true };
  }
  return { ...parseLayoutReference(rest, text, colon), explicit: true };
}

/**
 * `DIR[:TAG]` (split at the first `:`, TAG defaults to `latest`) or `DIR@DIGEST`. `original`
 * is the reference as the user wrote it (with a scheme), for messages; `splitAt` splits at
 * that index instead of the first `:` (ocidir://).
 */
export function parseLayoutReference(
  text: string,
  original = text,
  splitAt?: number,
): LayoutReference {
  const bad = (why: string) =>
    new UsageError(`invalid image reference ${JSON.stringify(original)}: ${why}`);
  if (text === "") throw bad("empty");
  if (splitAt === undefined && /^\[[0-9A-Fa-f:.]+\](?::[0-9]+)?\//.test(text)) {
    // `[::1]:5000/x` cannot be a DIR:TAG split at its first ':' (that tag would be invalid).
    throw bad(`${text.slice(0, text.indexOf("/"))} is a registry address; write oci://${text}`);
  }
  const first = text.indexOf(":");
  const colon = splitAt === undefined ? first : splitAt === text.length ? -1 : splitAt;
  const beforeColon = colon === -1 ? text : text.slice(0, colon);
  const at = (first === -1 ? text : text.slice(0, first)).lastIndexOf("@");
  if (at !== -1 && first !== -1) {
    const path = text.slice(0, at);
    if (path === "") throw bad("empty layout path");
    return {
      kind: "layout",
      path,
      digest: checkDigest(text.slice(at + 1), original),
      text: original,
    };
  }
  const path = beforeColon;
  if (path === "") throw bad("empty layout path");
  if (colon === -1) return { kind: "layout", path, tag: DEFAULT_TAG, text: original };
  const tag = text.slice(colon + 1);
  if (tag === "") throw bad("empty tag after ':'");
  if (!isValidRefName(tag)) {
    throw bad(`tag ${JSON.stringify(tag)} is not a valid org.opencontainers.image.ref.name`);
  }
  return { kind: "layout", path, tag, text: original };
}

/** What is at a path on disk, as far as checkLayoutReference needs to know. */
export type PathProbe = (path: string) => "directory" | "other" | "missing";

/** A PathProbe on the real file system; anything that cannot be looked at counts as there. */
export function diskProbe(path: string): "directory" | "other" | "missing" {
  try {
    return Deno.statSync(path).isDirectory ? "directory" : "other";
  } catch (e) {
    return e instanceof Deno.errors.NotFound ? "missing" : "other";
  }
}

/**
 * `HOST[:PORT]` that only a registry would be: `localhost`, a dotted name or address, or
 * `[IPv6]`, with or without a port. A single label with a port (`build:1`) could as well
 * be a directory with `:` in its name (see checkLayoutReference).
 */
function looksLikeRegistryHost(first: string): boolean {
  if (!HOST.test(first)) return false;
  const name = first.replace(/:[0-9]+$/, "");
  return name === "localhost" || name.includes(".") || name.startsWith("[");
}

/**
 * skopeo's transports other than `oci:`, `oci-archive:` and `docker://`. Written as SRC or
 * DST, `docker-archive:x.tar` would otherwise be read as the layout `docker-archive` with
 * tag `x.tar`, and a copy "succeed" into a new directory of that name.
 */
const OTHER_TRANSPORTS = [
  "docker-archive",
  "docker-daemon",
  "containers-storage",
  "dir",
  "sif",
  "tarball",
  "ostree",
];

/**
 * Check a layout reference against what is on disk, so that a reference meant for a registry
 * or a path with `:` in it is not misread as `DIR:TAG` (umoci's split at the first `:`).
 * Returns the reference to use: as given, or, when DIR does not exist but the text names an
 * existing directory read another way (split at the last `:` after the last `/`, or the
 * whole text), that directory. Throws a UsageError, naming the reason and what to write
 * instead, when the layout does not exist and
 *
 * - the text starts with a registry host and a `/` (`localhost/x`, `HOST:PORT/x`,
 *   `registry.example.com/x`, `127.0.0.1:5000/x`) that is not a directory here: that is a
 *   registry reference without `oci://`;
 * - the tag contains `/`: it is the rest of a directory path with a `:` in it (`build:1/x:v1`
 *   is layout `build`, tag `1/x:v1`);
 * - it starts with a skopeo transport this tool does not do (`docker-archive:`, `dir:`, …).
 *
 * References written with a layout scheme (`oci:`, `ocidir://`) are taken as they are.
 */
export function checkLayoutReference(
  ref: LayoutReference,
  probe: PathProbe = diskProbe,
): LayoutReference {
  if (ref.explicit || probe(ref.path) !== "missing") return ref;
  const text = ref.text;
  // A directory that exists when the text is read another way is what the user means.
  const slash = text.lastIndexOf("/");
  const last = text.lastIndexOf(":");
  if (last > slash && last > ref.path.length && !ref.digest) {
    const path = text.slice(0, last);
    const tag = text.slice(last + 1);
    if (probe(path) === "directory" && isValidRefName(tag)) return { ...ref, path, tag };
  }
  if (text.includes(":") && !ref.digest && probe(text) === "directory") {
    return { ...ref, path: text, tag: DEFAULT_TAG };
  }
  const bad = (why: string) =>
    new UsageError(`invalid image reference ${JSON.stringify(text)}: ${why}`);
  const other = otherTransportError(text);
  if (other) throw other;
  const firstSlash = text.indexOf("/");
  const first = firstSlash === -1 ? "" : text.slice(0, firstSlash);
  if (looksLikeRegistryHost(first) && probe(first) === "missing") {
    throw bad(
      `${first} looks like a registry and is no directory here; for the registry write ` +
        `oci://${text} (for a new layout directory, ocidir://${text})`,
    );
  }
  if (ref.tag?.includes("/")) {
    // `name:PORT/…` may be either; say both.
    const registry = HOST.test(first) && /:[0-9]+$/.test(first)
      ? `, or oci://${text} for a registry`
      : "";
    throw bad(
      `DIR:TAG splits at the first ':', which makes this layout ${JSON.stringify(ref.path)} ` +
        `(not there) with tag ${JSON.stringify(ref.tag)}; a '/' in the tag means a directory ` +
        `path with ':' in it: write ocidir://${text}${registry}`,
    );
  }
  return ref;
}

/** `oci-archive:PATH[:TAG]` or `oci-archive:PATH@DIGEST` (skopeo's syntax; TAG defaults to latest). */
export function parseArchiveReference(text: string): ArchiveReference {
  const rest = text.slice(ARCHIVE_PREFIX.length);
  if (rest === "") {
    throw new UsageError(`invalid image reference ${JSON.stringify(text)}: empty archive path`);
  }
  const { kind: _, ...parts } = parseLayoutReference(rest);
  return { ...parts, kind: "archive", text };
}

/** `oci://HOST[:PORT]/REPO[:TAG][@DIGEST]` or `docker://[HOST/]REPO[:TAG][@DIGEST]`. */
export function parseRegistryReference(text: string): RegistryReference {
  const bad = (why: string) =>
    new UsageError(`invalid registry reference ${JSON.stringify(text)}: ${why}`);
  const m = /^([a-z][a-z0-9+.-]*):\/\/(.*)$/i.exec(text);
  if (!m) throw bad("expected oci://HOST/REPO[:TAG]");
  const scheme = m[1].toLowerCase();
  if (scheme !== "oci" && scheme !== "docker") {
    throw bad(`unknown scheme ${JSON.stringify(m[1] + "://")} (use oci:// or docker://)`);
  }
  let rest = m[2];
  if (rest === "") throw bad("empty");

  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at !== -1) {
    digest = checkDigest(rest.slice(at + 1), text);
    rest = rest.slice(0, at);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf("/");
  const tagColon = rest.indexOf(":", lastSlash + 1);
  if (tagColon !== -1 && lastSlash !== -1) {
    tag = rest.slice(tagColon + 1);
    rest = rest.slice(0, tagColon);
    if (!isValidTag(tag)) {
      throw bad(`tag ${JSON.stringify(tag)} is invalid (letters, digits, _ . -, at most 128)`);
    }
  }

  let registry: string;
  let repository: string;
  const slash = rest.indexOf("/");
  if (scheme === "oci") {
    if (slash === -1) throw bad("expected HOST[:PORT]/REPOSITORY");
    registry = rest.slice(0, slash);
    repository = rest.slice(slash + 1);
  } else {
    const first = slash === -1 ? "" : rest.slice(0, slash);
    if (
      slash !== -1 &&
      (first === "localhost" || first.includes(".") || first.includes(":") ||
        first !== first.toLowerCase())
    ) {
      registry = first;
      repository = rest.slice(slash + 1);
    } else {
      registry = DOCKER_HUB;
      repository = rest;
      if (tagColon !== -1 && lastSlash === -1) {
        // `docker://name:tag` with a one-component name.
        tag = rest.slice(tagColon + 1);
        repository = rest.slice(0, tagColon);
        if (!isValidTag(tag)) throw bad(`tag ${JSON.stringify(tag)} is invalid`);
      }
    }
    if (/^[a-f0-9]{64}$/.test(repository)) throw bad("repository looks like a digest");
    registry = dockerHubName(registry);
    if (registry === DOCKER_HUB && !repository.includes("/")) repository = `library/${repository}`;
  }
  if (registry === "" || !HOST.test(registry)) {
    throw bad(`registry host ${JSON.stringify(registry)} is invalid`);
  }
  const port = /:(\d+)$/.exec(registry);
  if (port && (Number(port[1]) < 1 || Number(port[1]) > 65535)) {
    throw bad(`port ${port[1]} is out of range`);
  }
  if (repository === "") throw bad("empty repository");
  if (repository !== repository.toLowerCase()) throw bad("repository must be lowercase");
  if (!REPOSITORY.test(repository)) {
    throw bad(`repository ${JSON.stringify(repository)} is invalid`);
  }
  if (/^[a-f0-9]{64}$/.test(repository)) throw bad("repository looks like a digest");
  if (registry.length + 1 + repository.length > 255) throw bad("name longer than 255 characters");
  if (!tag && !digest) tag = DEFAULT_TAG;
  const host = registry === DOCKER_HUB ? DOCKER_HUB_HOST : registry;
  return { kind: "registry", registry, host, repository, tag, digest, text };
}

/** How a reference reads in messages. */
export function formatReference(ref: Reference): string {
  if (ref.kind === "layout" || ref.kind === "archive") {
    const path = ref.kind === "archive" ? `${ARCHIVE_PREFIX}${ref.path}` : ref.path;
    return ref.digest ? `${path}@${ref.digest}` : `${path}:${ref.tag}`;
  }
  let s = `${ref.registry}/${ref.repository}`;
  if (ref.tag) s += `:${ref.tag}`;
  if (ref.digest) s += `@${ref.digest}`;
  return s;
}
