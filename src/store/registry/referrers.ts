// Referrers and tags of a registry repository, in terms of distribution-spec endpoints:
//
// - listing referrers: `GET /v2/NAME/referrers/DIGEST[?artifactType=…]` ("Listing
//   Referrers"), `Link: <…>; rel="next"` pagination; a 404 means the registry has no
//   referrers API, and the referrers tag schema is read instead: the tag `ALG-HEX` of the
//   subject holding an OCI index of its referrers ("Referrers Tag Schema"); a tag that holds
//   anything else counts as no referrers;
// - maintaining that fallback tag when pushing a referrer to a registry that did not answer
//   with `OCI-Subject` ("Pushing Manifests with Subject"): read, merge (existing entries
//   kept, none twice), PUT with `If-Match: ETAG` (or `If-None-Match: *` when creating), and
//   on `412 Precondition Failed` read and merge again, so concurrent writers lose no entry
//   on registries that honour conditional requests;
// - listing tags: `GET /v2/NAME/tags/list?n=…` with `Link` pagination ("Listing Tags").
import { digestOf } from "../../digest.ts";
import { NotFoundError, UserError } from "../../errors.ts";
import {
  checkDescriptor,
  type Descriptor,
  MANIFEST_TYPES,
  MAX_MANIFEST_SIZE,
  OCI_INDEX,
} from "../../media.ts";
import { canBeReferrer, referrersTagName } from "../referrers.ts";
import type { HttpResponse } from "./response.ts";
import type { UploadApi } from "./upload.ts";

/** Pages of a paginated listing followed at most (referrers, tags). */
const MAX_PAGES = 1000;
/** A tags/list page larger than this is refused. */
const MAX_TAGS_PAGE = 16 * 1024 * 1024;
/** Conflicting updates of a fallback tag (412) tolerated before giving up. */
const MAX_TAG_CONFLICTS = 10;
/** Tags asked for per tags/list page. */
const TAGS_PAGE_SIZE = 1000;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** What a registry store remembers about the referrers API between calls. */
export interface ReferrersState {
  /** The registry answered 404 to the referrers API: use the tag schema from now on. */
  noApi?: boolean;
}

/** An OCI image index as read from a registry, with the ETag it came with. */
interface TaggedIndex {
  index: { manifests: Descriptor[]; [key: string]: unknown };
  etag?: string;
}

function parseJson(bytes: Uint8Array): unknown {
  try {
    return JSON.parse(decoder.decode(bytes));
  } catch {
    return undefined;
  }
}

/**
 * The `rel="next"` target of a Link header (RFC 8288), resolved against the response URL;
 * undefined when there is none. A next page on another origin than the registry is refused
 * (its answer would be read with the registry's credentials in mind).
 */
export function nextLink(res: HttpResponse, registryOrigin: string, what: string): URL | undefined {
  const header = res.headers.get("link");
  if (!header) return undefined;
  for (const m of header.matchAll(/<([^>]*)>([^,]*)/g)) {
    if (!/;\s*rel\s*=\s*"?next"?/i.test(m[2])) continue;
    let url: URL;
    try {
      url = new URL(m[1], res.url);
    } catch {
      throw new UserError(`${what}: invalid Link header`);
    }
    if (url.origin !== registryOrigin) {
      throw new UserError(`${what}: the next page is on another host (${url.host}); refused`);
    }
    return url;
  }
  return undefined;
}

/** Descriptors of referrers from an index document; entries that are not manifests are left out. */
function referrerEntries(doc: unknown, where: string): Descriptor[] {
  const manifests = (doc as { manifests?: unknown })?.manifests;
  if (!Array.isArray(manifests)) throw new UserError(`${where}: not an image index`);
  return manifests.map((m) => checkDescriptor(m, where)).filter((d) => canBeReferrer(d.mediaType));
}

/**
 * GET the referrers fallback tag of `subject` as an OCI index with its ETag: "absent" on
 * 404, "not-index" when it holds anything but a referrers list: no JSON, not an OCI index,
 * or the subject itself (an image index tagged `sha256-HEX` of its own digest, as
 * `--images` once pushed images listed by digest). Throws UserError on any other status or
 * a body over MAX_MANIFEST_SIZE.
 */
async function readReferrersTag(
  api: UploadApi,
  scopes: string[],
  subject: Descriptor,
): Promise<TaggedIndex | "absent" | "not-index"> {
  const tag = referrersTagName(subject.digest);
  const url = api.url(`manifests/${tag}`);
  // Every manifest type is accepted, so that whatever the tag holds is seen: asked for an
  // index alone, distribution answers 404 for a tagged image manifest, which would read as
  // "absent" and have the tag overwritten (its If-None-Match is ignored there).
  const res = await api.send(
    { method: "GET", url, headers: { accept: MANIFEST_TYPES.join(", ") } },
    scopes,
  );
  if (res.status === 404) {
    await res.discard();
    return "absent";
  }
  if (res.status !== 200) throw await api.fail(res, "GET", url);
  const etag = res.headers.get("etag")?.trim() || undefined;
  const bytes = await res.bytes(MAX_MANIFEST_SIZE, `referrers tag ${tag} in ${api.name}`);
  const doc = parseJson(bytes) as { mediaType?: unknown; manifests?: unknown } | undefined;
  if (
    typeof doc !== "object" || doc === null || doc.mediaType !== OCI_INDEX ||
    !Array.isArray(doc.manifests) || (await digestOf(bytes)) === subject.digest
  ) {
    return "not-index";
  }
  return { index: doc as TaggedIndex["index"], etag };
}

/**
 * The referrers of `subject` in the repository behind `api`, filtered to `artifactTypes`
 * when given: the referrers API, or on its 404 the fallback tag (then `state.noApi` is set
 * and later calls go to the tag directly). A filter is sent as `artifactType` when there is
 * exactly one type, and always applied here as well (registries MAY ignore it). Throws
 * UserError on an answer that is neither 200 nor 404, a malformed index, more than
 * MAX_PAGES pages, or a next page on another origin.
 */
export async function listReferrers(
  api: UploadApi,
  scopes: string[],
  subject: Descriptor,
  artifactTypes: readonly string[] | undefined,
  state: ReferrersState,
): Promise<{ referrers: Descriptor[]; via: "api" | "tag" }> {
  const types = artifactTypes?.length ? new Set(artifactTypes) : undefined;
  const wanted = (d: Descriptor) => !types || types.has(d.artifactType ?? "");
  const where = `${api.name}/${api.repository}: referrers of ${subject.digest}`;
  if (!state.noApi) {
    let url: URL | undefined = api.url(`referrers/${subject.digest}`);
    if (types?.size === 1) url.searchParams.set("artifactType", [...types][0]);
    const origin = url.origin;
    const found = new Map<string, Descriptor>();
    const seen = new Set<string>();
    for (let page = 0; url; page++) {
      if (page >= MAX_PAGES || seen.has(url.href)) {
        throw new UserError(`${where}: more than ${MAX_PAGES} pages, or pages in a loop; refused`);
      }
      seen.add(url.href);
      const res = await api.send({ method: "GET", url, headers: { accept: OCI_INDEX } }, scopes);
      if (res.status === 404 && page === 0) {
        await res.discard();
        state.noApi = true;
        break;
      }
      if (res.status !== 200) throw await api.fail(res, "GET", url);
      const next = nextLink(res, origin, where);
      const doc = parseJson(await res.bytes(MAX_MANIFEST_SIZE, where));
      for (const d of referrerEntries(doc, where)) if (!found.has(d.digest)) found.set(d.digest, d);
      url = next;
    }
    if (!state.noApi) return { referrers: [...found.values()].filter(wanted), via: "api" };
  }
  const tag = referrersTagName(subject.digest);
  const read = await readReferrersTag(api, scopes, subject);
  if (read === "absent" || read === "not-index") return { referrers: [], via: "tag" };
  const unique = new Map<string, Descriptor>();
  for (const d of referrerEntries(read.index, `${where} (tag ${tag})`)) {
    if (!unique.has(d.digest)) unique.set(d.digest, d);
  }
  return { referrers: [...unique.values()].filter(wanted), via: "tag" };
}

/**
 * Add `entries` (referrers of `subject`, already stored) to the fallback tag of `subject`,
 * keeping every entry it has and adding none twice; nothing is written when all are listed.
 * The PUT carries `If-Match` with the ETag of what was read (`If-None-Match: *` when the tag
 * did not exist); a 412 means another writer got there first: read, merge, try again, at
 * most MAX_TAG_CONFLICTS times. Throws UserError when the tag holds something other than an
 * OCI index (it is not overwritten), or on any other failed request.
 */
export async function mergeReferrersTag(
  api: UploadApi,
  subject: Descriptor,
  entries: Descriptor[],
): Promise<void> {
  const tag = referrersTagName(subject.digest);
  for (let attempt = 0; attempt <= MAX_TAG_CONFLICTS; attempt++) {
    const read = await readReferrersTag(api, [`repository:${api.repository}:pull,push`], subject);
    if (read === "not-index") {
      throw new UserError(
        `referrers tag ${tag} in ${api.name}/${api.repository} names something other than an ` +
          `OCI image index; it was not overwritten, so the referrers copied (${
            entries.map((e) => e.digest).join(", ")
          }) are stored but not listed for ${subject.digest}`,
      );
    }
    const current: TaggedIndex = read === "absent"
      ? { index: { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] } }
      : read;
    const listed = new Set(current.index.manifests.map((m) => m?.digest));
    const missing = entries.filter((e) => !listed.has(e.digest));
    if (missing.length === 0) return;
    current.index.manifests.push(...missing);
    const bytes = encoder.encode(JSON.stringify(current.index));
    const digest = await digestOf(bytes);
    const url = api.url(`manifests/${tag}`);
    const headers: Record<string, string> = { "content-type": OCI_INDEX };
    if (current.etag) headers["if-match"] = current.etag;
    else if (read === "absent") headers["if-none-match"] = "*";
    const res = await api.send({ method: "PUT", url, headers, body: bytes, commit: true });
    if (res.status === 412) {
      await res.discard();
      // Someone else changed the tag between our read and our write: wait a little
      // (jittered, so two writers do not collide again in step) and merge again.
      await new Promise((r) => setTimeout(r, (20 + Math.random() * 80) * (attempt + 1)));
      continue;
    }
    if (res.status < 200 || res.status > 299) throw await api.fail(res, "PUT", url);
    const got = res.headers.get("docker-content-digest")?.trim();
    await res.discard();
    if (got && got !== digest && got.split(":")[0] === digest.split(":")[0]) {
      throw new UserError(
        `${api.name}: PUT ${url.pathname}: registry reports digest ${got}, expected ${digest}`,
      );
    }
    return;
  }
  throw new UserError(
    `${api.name}/${api.repository}: referrers tag ${tag} kept changing under ${MAX_TAG_CONFLICTS} ` +
      `conflicting updates; run the copy again`,
  );
}

/**
 * Every tag of the repository (distribution-spec "Listing Tags"): `GET tags/list?n=…`
 * (`pageSize`, default 1000), following `Link` pages (at most MAX_PAGES, on the registry's
 * origin only). Throws NotFoundError for a repository the registry does not know (404),
 * UserError on a malformed answer or any other failure.
 */
export async function listTags(
  api: UploadApi,
  scopes: string[],
  pageSize = TAGS_PAGE_SIZE,
): Promise<string[]> {
  let url: URL | undefined = api.url("tags/list");
  url.searchParams.set("n", String(pageSize));
  const origin = url.origin;
  const where = `${api.name}/${api.repository}: tags/list`;
  const tags = new Set<string>();
  const seen = new Set<string>();
  for (let page = 0; url; page++) {
    if (page >= MAX_PAGES || seen.has(url.href)) {
      throw new UserError(`${where}: more than ${MAX_PAGES} pages, or pages in a loop; refused`);
    }
    seen.add(url.href);
    const res = await api.send(
      { method: "GET", url, headers: { accept: "application/json" } },
      scopes,
    );
    if (res.status === 404 && page === 0) {
      await res.discard();
      throw new NotFoundError(`repository ${api.name}/${api.repository} not found`);
    }
    if (res.status !== 200) throw await api.fail(res, "GET", url);
    const next = nextLink(res, origin, where);
    const doc = parseJson(await res.bytes(MAX_TAGS_PAGE, where)) as { tags?: unknown } | undefined;
    const list = doc?.tags ?? [];
    if (!Array.isArray(list) || !list.every((t) => typeof t === "string")) {
      throw new UserError(`${where}: the answer has no list of tags`);
    }
    for (const t of list) tags.add(t);
    url = next;
  }
  return [...tags];
}
