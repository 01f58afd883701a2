// Many images in one job: `--images FILE` (one reference a line) and the restore of a bundle
// (`--all-tags` from a layout or archive whose ref.names are full references) into
// `oci://HOST[/PREFIX]`, each image into its own repository.
//
// Naming, as skopeo's `oci:` does it: an image from a registry is stored in a layout or
// archive under its full reference as `org.opencontainers.image.ref.name`
// (`docker.io/library/alpine:3.20`); into a registry prefix it goes to
// `PREFIX/REPOSITORY-PATH:TAG` (`mirror.example/base/library/alpine:3.20`), the source's host
// dropped. A bundle restored with --all-tags maps each full-reference ref.name the same way.
import { resolve } from "../path.ts";
import { describeError, UsageError, UserError } from "../errors.ts";
import {
  dockerHubName,
  formatReference,
  isValidRefName,
  isValidTag,
  parseReference,
  parseRegistryReference,
  type Reference,
} from "../reference.ts";

/** A registry destination that images are put under: `oci://HOST[/PREFIX]`. */
export interface RegistryPrefix {
  scheme: "oci" | "docker";
  /** The registry as named (`HOST[:PORT]`). */
  registry: string;
  /** Repository path prefix without slashes at either end; "" for none. */
  prefix: string;
}

/** One copy of a job: from `src` to `dst` (which names the tag to write). */
export interface JobImage {
  src: Reference;
  dst: Reference;
}

/**
 * Read an images file: one reference a line, `#` starting a comment (whole line or after
 * whitespace), blank lines ignored. `-` reads stdin. A line without a scheme is a Docker
 * reference (`alpine:3.20` is `docker://alpine:3.20`, i.e. docker.io/library/alpine:3.20);
 * `oci://…`, `docker://…`, `ocidir://…`, `oci:DIR…` and `oci-archive:…` are parsed as on the
 * command line. A bad line is
 * a UsageError naming it. Throws UsageError for an empty
 * list and UsageError (exit 2) when the file cannot be read.
 */
export async function readImageList(path: string): Promise<Reference[]> {
  let text: string;
  try {
    text = path === "-"
      ? await new Response(Deno.stdin.readable).text()
      : await Deno.readTextFile(path);
  } catch (e) {
    // A file named on the command line that cannot be read is a bad command line (exit 2).
    const why = e instanceof Deno.errors.NotFound
      ? "no such file"
      : e instanceof Deno.errors.IsADirectory
      ? "is a directory"
      : e instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : describeError(e);
    throw new UsageError(`--images ${path}: ${why}`);
  }
  const refs: Reference[] = [];
  for (const [i, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.replace(/(^|\s)#.*$/, "").trim();
    if (line === "") continue;
    // A list names registry images: a line without a scheme is a Docker reference.
    const text = /^[a-z][a-z0-9+.-]*:\/\//i.test(line) || /^(oci-archive|oci):/.test(line)
      ? line
      : `docker://${line}`;
    try {
      refs.push(parseReference(text));
    } catch (e) {
      throw new UsageError(`--images ${path}, line ${i + 1}: ${(e as Error).message}`);
    }
  }
  if (refs.length === 0) throw new UsageError(`--images ${path}: no image references`);
  return refs;
}

/**
 * `oci://HOST[/PREFIX]` or `docker://HOST[/PREFIX]` as a destination prefix, or undefined when
 * `text` is no registry reference. Throws UsageError for a tag or digest, or a prefix that is
 * not a valid repository path.
 */
export function parseRegistryPrefix(text: string): RegistryPrefix | undefined {
  const m = /^(oci|docker):\/\/([^/]+)(?:\/(.*))?$/i.exec(text);
  if (!m) return undefined;
  const prefix = (m[3] ?? "").replace(/\/+$/, "");
  if (/[:@]/.test(prefix)) {
    throw new UsageError(
      `destination ${JSON.stringify(text)}: a registry prefix names no tag or digest`,
    );
  }
  const scheme = m[1].toLowerCase() as "oci" | "docker";
  // Validate host and prefix the way a repository would be.
  parseRegistryReference(`${scheme}://${m[2]}/${prefix ? `${prefix}/` : ""}x`);
  return { scheme, registry: m[2], prefix };
}

/** The full reference an image is stored under in a layout or archive (its ref.name). */
export function fullName(src: Reference): string {
  if (src.kind !== "registry") {
    if (src.tag === undefined) {
      // Like every other fault of the list, a bad command line (exit 2).
      throw new UsageError(
        `--images: ${src.text}: an image from a layout or archive needs a tag here (its name ` +
          "in the destination)",
      );
    }
    return src.tag;
  }
  const name = `${src.registry}/${src.repository}`;
  return src.digest && !src.tag ? `${name}@${src.digest}` : `${name}:${src.tag}`;
}

/**
 * Split a full reference (`[HOST/]REPO/PATH:TAG`) into repository path and tag; undefined for
 * anything else (a plain tag, a digest reference). The first component is a host when it
 * has a `.` or `:` or is `localhost` (Docker's rule).
 */
export function splitFullName(name: string): { path: string; tag: string } | undefined {
  const slash = name.lastIndexOf("/");
  const colon = name.lastIndexOf(":");
  if (slash === -1 || colon < slash || name.includes("@")) return undefined;
  const tag = name.slice(colon + 1);
  let path = name.slice(0, colon);
  const first = path.slice(0, path.indexOf("/"));
  if (first === "localhost" || first.includes(".") || first.includes(":")) {
    path = path.slice(first.length + 1);
  }
  if (!isValidTag(tag) || path === "") return undefined;
  return { path, tag };
}

/**
 * How digest tags (`sha256-HEX.sig`…) beside the image `ref` are named: in a bundle (a
 * layout or archive whose ref.names are full references), with the full reference of the
 * image's repository, `HOST/REPO:` (so `HOST/REPO:sha256-HEX.sig`), so that the digest tags
 * of several repositories never collide and the way back puts each into its repository;
 * elsewhere bare (""). Returns that prefix.
 */
export function digestTagPrefix(ref: Reference): string {
  if (ref.kind === "registry" || ref.tag === undefined || isValidTag(ref.tag)) return "";
  if (!splitFullName(ref.tag)) return "";
  return ref.tag.slice(0, ref.tag.lastIndexOf(":") + 1);
}

/**
 * The registry reference `PREFIX/PATH:TAG` under `prefix`, or `PREFIX/PATH@DIGEST` when
 * `name` is a digest (`sha256:…`).
 */
export function underPrefix(prefix: RegistryPrefix, path: string, name: string): Reference {
  const repo = prefix.prefix ? `${prefix.prefix}/${path}` : path;
  const sep = name.includes(":") ? "@" : ":";
  return parseRegistryReference(`${prefix.scheme}://${prefix.registry}/${repo}${sep}${name}`);
}

/**
 * The images of a job, each copy once: an image listed twice (in any spelling) is copied
 * once. A job in which two different sources would be written under the same tag is
 * refused: the one copied last would silently replace the other (a destination without a
 * tag is named by the digest copied: no two contents can share it). `flag` names the job
 * in the message (`--images`, `--all-tags`). Throws UsageError naming both sources and the
 * destination.
 */
function distinctCopies(images: JobImage[], flag: string): JobImage[] {
  const seen = new Map<string, Reference>();
  const copies: JobImage[] = [];
  for (const image of images) {
    const { src, dst } = image;
    // A job has one kind of DST, so its formatted references name its places one to one.
    const key = formatReference(dst);
    const other = seen.get(key);
    if (other === undefined) {
      seen.set(key, src);
      copies.push(image);
    } else if (sourceKey(other) === sourceKey(src)) continue;
    else if (dst.tag !== undefined) {
      const where = dst.kind === "registry"
        ? `${dst.registry}/${dst.repository}:${dst.tag}`
        : `${dst.path} as ${JSON.stringify(dst.tag)}`;
      // The lines of --images as written; the sources of --all-tags share one text (the
      // layout or archive, or the repository), so those are named with their tags.
      const name = (r: Reference) => flag === "--all-tags" ? formatReference(r) : r.text;
      throw new UsageError(
        `${flag}: ${name(other)} and ${name(src)} would both be written to ${where}, the ` +
          "second replacing the first; copy one of them to another destination",
      );
    } else copies.push(image);
  }
  return copies;
}

/**
 * A source reference as one string, the same for two spellings of one image: layout and
 * archive paths made absolute, the registry's name in lower case with Docker Hub's aliases
 * as `docker.io`.
 */
function sourceKey(ref: Reference): string {
  const at = ref.digest ? `@${ref.digest}` : "";
  if (ref.kind !== "registry") return `${ref.kind} ${resolve(ref.path)}:${ref.tag ?? ""}${at}`;
  return `${dockerHubName(ref.registry.toLowerCase())}/${ref.repository}:${ref.tag ?? ""}${at}`;
}

/**
 * Where each image of an images list goes: under a registry prefix as
 * `PREFIX/REPOSITORY-PATH:TAG` (`@DIGEST`, untagged, for an image listed by digest alone),
 * into a layout or archive under its full reference. `dstText` is DST as given. Throws
 * UsageError for a DST that names a tag or digest, and for two different images that would
 * be written under the same name.
 */
export function planImages(images: Reference[], dstText: string): JobImage[] {
  const prefix = parseRegistryPrefix(dstText);
  if (prefix) {
    const planned = images.map((src) => {
      if (src.kind !== "registry") {
        throw new UsageError(
          `--images: ${src.text} is not a registry image; into a registry prefix only registry images go`,
        );
      }
      // An image named by digest alone is pushed untagged, by the digest copied (that of
      // the platform manifest when --platform picks one): `sha256-HEX` is the referrers tag
      // schema's name, and an image under it would read as its referrers list.
      if (src.tag !== undefined) return { src, dst: underPrefix(prefix, src.repository, src.tag) };
      const dst = underPrefix(prefix, src.repository, src.digest!);
      return { src, dst: { ...dst, digest: undefined, text: formatReference(dst) } };
    });
    return distinctCopies(planned, "--images");
  }
  const dst = parseReference(dstText);
  if (dst.kind === "registry") throw new Error("internal error: registry DST is a prefix");
  if (dst.digest !== undefined || dst.text.endsWith(`:${dst.tag}`)) {
    throw new UsageError(
      `--images: DST ${JSON.stringify(dstText)} must name no tag (each image keeps its own name)`,
    );
  }
  const planned = images.map((src) => {
    const name = fullName(src);
    if (!isValidRefName(name)) {
      throw new UsageError(`--images: ${JSON.stringify(name)} is not a valid ref.name`);
    }
    return { src, dst: { ...dst, tag: name, digest: undefined } };
  });
  return distinctCopies(planned, "--images");
}

/**
 * Where each tag of an --all-tags copy goes. Into a registry, a plain tag goes to the
 * repository DST names; a full reference (a bundle's ref.name) goes to
 * `PREFIX/REPOSITORY-PATH:TAG` under DST. Elsewhere every tag keeps its name. Throws
 * UserError, before anything is copied, for a tag that fits neither.
 */
export function planTags(src: Reference, tags: string[], dstText: string): JobImage[] {
  const prefix = parseRegistryPrefix(dstText);
  let repo: Reference | undefined;
  const repoRef = (): Reference => {
    if (!repo) {
      try {
        repo = parseReference(dstText);
      } catch {
        throw new UserError(
          `plain tags (${
            tags.filter(isValidTag).slice(0, 3).join(", ")
          }) need DST to name a repository: ${dstText}`,
        );
      }
    }
    return repo;
  };
  return distinctCopies(
    tags.map((tag) => {
      const from: Reference = { ...src, tag, digest: undefined };
      if (!prefix) return { src: from, dst: { ...repoRef(), tag, digest: undefined } };
      if (isValidTag(tag)) return { src: from, dst: { ...repoRef(), tag, digest: undefined } };
      const full = splitFullName(tag);
      if (!full) {
        throw new UserError(
          `${src.text}: ${
            JSON.stringify(tag)
          } is neither a registry tag nor a full image reference; nothing was copied`,
        );
      }
      return { src: from, dst: underPrefix(prefix, full.path, full.tag) };
    }),
    "--all-tags",
  );
}
