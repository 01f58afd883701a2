// A repository in an OCI distribution registry as a Store.
//
// Layers of this store, bottom up:
//   transport.ts  HTTP: connection pool, TLS, redirects, tracing;
//   auth.ts       WWW-Authenticate, bearer tokens, Basic;
//   upload.ts     the blob upload protocol and cross-repository mounts;
//   this file     the Store methods in terms of distribution-spec endpoints, plus the
//                 authenticated request helper and the decoding of registry errors.
//
// Manifests are handled as exact bytes: what is read is verified against its digest and
// handed on unchanged, what is pushed is sent byte for byte. Manifest bytes seen in this
// session (fetched or pushed) are kept by digest, so tag() and repeated reads cost no GET.
import { digestOf, isValidDigest, loadFastHash, parseDigest, verifyBytes } from "../../digest.ts";
import { NotFoundError, UserError } from "../../errors.ts";
import {
  baseMediaType,
  checkDescriptor,
  type Descriptor,
  isManifestType,
  isSchema1,
  MANIFEST_TYPES,
  MAX_MANIFEST_SIZE,
  sniffMediaType,
} from "../../media.ts";
import type { RegistryReference } from "../../reference.ts";
import { VERSION } from "../../version.ts";
import type { BlobReader, BlobSource, MountingStore, Store } from "../store.ts";
import { AuthCache, Authenticator, type Credentials, deniedWithoutCredentials } from "./auth.ts";
import type { HttpResponse } from "./response.ts";
import type { RetryPolicy } from "./retry.ts";
import { Transport } from "./transport.ts";
import { type ApiRequest, mountBlob, type UploadApi, uploadBlob } from "./upload.ts";
import { referrerDescriptor } from "../referrers.ts";
import { listReferrers, listTags, mergeReferrersTag, type ReferrersState } from "./referrers.ts";

export type { Credential, CredentialProvider, Credentials } from "./auth.ts";

export interface RegistryOptions {
  /** Use http:// instead of https:// (no fallback in either direction). */
  plainHttp?: boolean;
  /** Verify TLS certificates (default true). */
  tlsVerify?: boolean;
  /** PEM files with extra CA certificates (--cacert). */
  caCertFiles?: string[];
  /** A certs.d-style directory: CERTDIR/HOST[:PORT]/*.crt, client NAME.cert + NAME.key. */
  certDir?: string;
  /** Receives one line per HTTP request and one per response, secrets redacted. */
  trace?: (line: string) => void;
  /**
   * Upload blobs in PATCH chunks of this many bytes, with Content-Length (default undefined:
   * one streamed PATCH per blob; blobs up to 4 MiB go in one PUT either way).
   */
  chunkSize?: number;
  /** Idle limit in ms for every network wait (default 30 000; see timeouts.ts). */
  timeout?: number;
  /** Retries of a failed request or broken transfer (default 5). */
  retries?: number;
  /** Longest wait between retries in ms, also the cap on Retry-After (default 60 000). */
  retryMaxWait?: number;
  /** First retry wait in ms before jitter, doubling per retry (default 200). */
  retryBaseWait?: number;
  /**
   * Gets one line per retry: a request sent again, a download resumed, an upload continued
   * or started over (what failed, attempt N of M, the wait). Without it retries go to
   * `trace`, when set.
   */
  onRetry?: (line: string) => void;
  /** Username/password, identity token, or a provider looking them up per host. */
  credentials?: Credentials;
  /**
   * Said after an authentication failure: where credentials came from or were looked for,
   * and how to give them (default: "give credentials with --creds or --authfile" when none
   * were sent).
   */
  credentialHint?: string;
  userAgent?: string;
  /**
   * The connections of a job (see RegistryHosts): every repository of one registry host
   * opened with the same RegistryHosts shares its transport (one connection pool) and its
   * authentication cache. Default: the store has a transport of its own.
   */
  hosts?: RegistryHosts;
}

/**
 * One transport (HTTP client, connection pool) and one authentication cache per registry
 * host, for the many repositories of a job: a 10-image job to one registry opens the
 * connections of one pool, learns the registry's challenge once, and checks Basic
 * credentials once, instead of once per repository. Tokens stay per repository scope (see
 * AuthCache). The transport settings are those of the first store opened for a host, so
 * one RegistryHosts serves stores opened with the same options (one side of a copy).
 * close() closes every transport; the stores' own close() leaves shared ones open.
 */
export class RegistryHosts {
  readonly #hosts = new Map<string, Promise<{ transport: Transport; auth: AuthCache }>>();

  /** The transport and authentication cache of `ref`'s registry host, made on first use. */
  get(
    ref: RegistryReference,
    opts: RegistryOptions,
  ): Promise<{ transport: Transport; auth: AuthCache }> {
    const key = `${ref.registry} ${ref.host}`;
    let p = this.#hosts.get(key);
    if (!p) {
      p = createTransport(ref, opts).then((transport) => ({ transport, auth: new AuthCache() }));
      this.#hosts.set(key, p);
      p.catch(() => this.#hosts.delete(key)); // a failure is reported to each who asks
    }
    return p;
  }

  /** Close every transport made here. */
  async close(): Promise<void> {
    for (const p of this.#hosts.values()) {
      await p.then(({ transport }) => transport.close(), () => {});
    }
    this.#hosts.clear();
  }
}

/** The transport for `ref`'s registry host with the settings of `opts`. */
function createTransport(ref: RegistryReference, opts: RegistryOptions): Promise<Transport> {
  return Transport.create(ref.registry, ref.host, {
    plainHttp: opts.plainHttp,
    tlsVerify: opts.tlsVerify,
    caCertFiles: opts.caCertFiles,
    certDir: opts.certDir,
    trace: opts.trace,
    userAgent: opts.userAgent ?? `umoci-copy/${VERSION}`,
    retries: opts.retries,
    retryMaxWait: opts.retryMaxWait,
    retryBaseWait: opts.retryBaseWait,
    onRetry: opts.onRetry,
    timeout: opts.timeout,
  });
}

/** Error bodies larger than this are not read (containers/image uses the same cap). */
const MAX_ERROR_BODY = 1024 * 1024;
const ACCEPT_MANIFESTS = MANIFEST_TYPES.join(", ");
/** A resumed download that got this much further than the last one earns fresh retries. */
const PROGRESS_RESETS_RETRIES = 1024 * 1024;

/** A string from a registry, made safe for a one-line message. */
function oneLine(s: string, max = 300): string {
  // deno-lint-ignore no-control-regex
  const flat = s.replace(/[\u0000-\u001f\u007f]+/g, " ").trim();
  return flat.length > max ? flat.slice(0, max) + "…" : flat;
}

/** The distribution-spec error codes and messages in a JSON error body, as one string. */
function decodeErrorBody(bytes: Uint8Array): string | undefined {
  try {
    const doc = JSON.parse(new TextDecoder().decode(bytes));
    const errors = Array.isArray(doc?.errors) ? doc.errors : [];
    const parts = errors
      .filter((e: unknown) => typeof e === "object" && e !== null)
      .slice(0, 3)
      .map((e: { code?: unknown; message?: unknown }) => {
        const code = typeof e.code === "string" ? e.code : "";
        const message = typeof e.message === "string" ? e.message : "";
        return [code, message].filter(Boolean).join(": ");
      })
      .filter(Boolean);
    return parts.length ? oneLine(parts.join("; ")) : undefined;
  } catch {
    return undefined;
  }
}

export class RegistryStore implements MountingStore {
  /** `REGISTRY/REPOSITORY`, e.g. `localhost:5000/library/app`. */
  readonly name: string;
  readonly local = false;
  /** Registry as the user named it (`docker.io`, `localhost:5000`). */
  readonly registry: string;
  /** Host[:port] connected to. */
  readonly host: string;
  readonly repository: string;
  /** Scheme, host and port, e.g. `http://localhost:5000`. */
  readonly baseUrl: string;

  readonly #transport: Transport;
  /** The transport is this store's own (closed with it), not a job's shared one. */
  readonly #ownsTransport: boolean;
  readonly #auth: Authenticator;
  readonly #chunkSize: number | undefined;
  /** Digests that a HEAD of a tag reported (Docker-Content-Digest), for clearer errors. */
  readonly #digestOfTag = new Map<string, string>();
  /** Manifest bytes fetched or pushed in this session, by digest (all verified). */
  readonly #manifests = new Map<string, Uint8Array>();
  readonly #api: UploadApi;
  /** Blobs handed out by fetch() in this session: re-opens after a break, and where. */
  readonly #opened = new Map<string, { failures: number; mark: number }>();
  /** Whether the registry has the referrers API (learnt from its first 404). */
  readonly #referrersState: ReferrersState = {};
  /** Referrers whose fallback-tag entry this session wrote (see recordReferrers). */
  readonly #recordedReferrers = new Set<string>();

  private constructor(
    ref: RegistryReference,
    transport: Transport,
    opts: RegistryOptions,
    shared?: AuthCache,
  ) {
    this.registry = ref.registry;
    this.host = ref.host;
    this.repository = ref.repository;
    this.name = `${ref.registry}/${ref.repository}`;
    this.#transport = transport;
    this.baseUrl = transport.baseUrl.origin;
    this.#auth = new Authenticator(
      transport,
      ref.registry,
      ref.repository,
      opts.credentials,
      opts.credentialHint,
      shared,
    );
    this.#ownsTransport = shared === undefined;
    this.#chunkSize = opts.chunkSize;
    this.#api = {
      name: this.registry,
      repository: this.repository,
      url: (path) => this.#url(path),
      send: (req, scopes) => this.#send(req, scopes ?? this.#pushScopes()),
      fail: (res, method, url) => this.#fail(res, method, url),
    };
  }

  /**
   * Open a repository. No request is made until the first operation. With `opts.hosts` the
   * store uses the shared transport and authentication cache of its registry host.
   */
  static async open(ref: RegistryReference, opts: RegistryOptions = {}): Promise<RegistryStore> {
    if (
      opts.chunkSize !== undefined && (!Number.isSafeInteger(opts.chunkSize) || opts.chunkSize < 1)
    ) {
      throw new UserError(`invalid upload chunk size ${opts.chunkSize}`);
    }
    if (opts.hosts) {
      const { transport, auth } = await opts.hosts.get(ref, opts);
      return new RegistryStore(ref, transport, opts, auth);
    }
    return new RegistryStore(ref, await createTransport(ref, opts), opts);
  }

  // -------------------------------------------------------------------------------------
  // Request plumbing

  /** `/v2/<repository>/<path>` on the registry. The repository name was validated by the parser. */
  #url(path: string): URL {
    return new URL(`/v2/${this.repository}/${path}`, this.#transport.baseUrl);
  }

  #pullScopes(): string[] {
    return [`repository:${this.repository}:pull`];
  }

  #pushScopes(): string[] {
    return [`repository:${this.repository}:pull,push`];
  }

  /** The retry settings of this store (from RegistryOptions). */
  get #retry(): RetryPolicy {
    return this.#transport.retry;
  }

  /**
   * One request with authentication. Authorization is attached only when the URL is the
   * registry's own origin (upload Locations may point elsewhere; a redirect to another
   * origin drops it); a 401 is answered by learning the challenge and retrying once, but
   * only a 401 from the registry's own origin: one from a host a request was redirected to
   * (a blob GET sent to storage) is returned as it is, for #fail to report, so that no
   * challenge of that host ever gets the user's credentials. Transient failures are
   * retried by the transport unless `retry` is false.
   */
  async #send(
    req: ApiRequest,
    scopes: string[],
  ): Promise<HttpResponse> {
    const ours = this.#transport.isRegistryOrigin(req.url);
    const wanted = [...scopes];
    // The registry's first request: others wait until its challenge (if any) is learnt.
    let first = ours ? await this.#auth.firstContact() : undefined;
    try {
      for (let attempt = 0;; attempt++) {
        const authorization = ours ? await this.#auth.header(wanted) : undefined;
        const res = await this.#transport.request({
          ...req,
          headers: { ...req.headers, authorization },
        });
        if (res.status !== 401 || attempt > 0 || !ours) return res;
        if (!this.#transport.isRegistryOrigin(res.url)) return res;
        const renewed = await this.#auth.unauthorized(res, wanted, authorization);
        first?.();
        first = undefined;
        // A streamed body is spent: the caller (upload.ts) sends again from the progress.
        if (!renewed || req.body instanceof ReadableStream) return res;
        await res.discard();
      }
    } finally {
      first?.();
    }
  }

  /**
   * A one-line UserError for an unexpected response to `method url`; reads (at most 1 MiB
   * of) the body for the registry's own error codes and messages (distribution-spec
   * "Error Codes"). A 401 says "authentication failed for REGISTRY" when credentials were
   * sent, and "not found, or access denied without credentials" when none were (a missing
   * and a private repository look alike then). An answer from a host the request was
   * redirected to names that host; a 401 from it is never answered with credentials.
   */
  async #fail(res: HttpResponse, method: string, url: URL): Promise<UserError> {
    let detail: string | undefined;
    if (res.method !== "HEAD") {
      try {
        detail = decodeErrorBody(await res.bytes(MAX_ERROR_BODY, "error body"));
      } catch {
        await res.discard();
      }
    } else {
      await res.discard();
    }
    const status = `${res.status}${detail ? "" : res.statusText ? " " + res.statusText : ""}`;
    const what = `${method} ${url.pathname}: ${status}${detail ? " " + detail : ""}`;
    if (!this.#transport.isRegistryOrigin(res.url) && this.#transport.isRegistryOrigin(url)) {
      // A redirect target answered: name it. Its challenges are not the registry's.
      const there = `${this.registry}: ${method} ${url.pathname}: redirected to ${res.url.host}, ` +
        `which answered ${status}${detail ? " " + detail : ""}`;
      return new UserError(
        res.status === 401
          ? `${there}; credentials for ${this.registry} are not sent to ${res.url.host}`
          : there,
      );
    }
    if (res.status === 401) {
      const hint = this.#auth.hint;
      if (await this.#auth.isAnonymous()) return deniedWithoutCredentials(this.name, what, hint);
      return new UserError(
        `authentication failed for ${this.registry}: ${what}${hint ? `; ${hint}` : ""}`,
      );
    }
    if (res.status === 403) {
      return new UserError(`access denied to ${this.name}: ${what}`);
    }
    if (res.status === 429) {
      return new UserError(`${this.registry}: ${what} (rate limited; try again later)`);
    }
    return new UserError(`${this.registry}: ${what}`);
  }

  // -------------------------------------------------------------------------------------
  // Manifests

  /**
   * GET a manifest by tag or digest: Content-Length over the limit is refused before
   * reading and the read is capped; Content-Type parameters are ignored; a document whose
   * own mediaType contradicts the Content-Type is refused; schema1 is refused.
   */
  async #getManifest(reference: string): Promise<{ bytes: Uint8Array; mediaType: string }> {
    const url = this.#url(`manifests/${reference}`);
    const res = await this.#send(
      { method: "GET", url, headers: { accept: ACCEPT_MANIFESTS } },
      this.#pullScopes(),
    );
    if (res.status === 404) {
      await res.discard();
      throw new NotFoundError(`manifest ${reference} not found in ${this.name}`);
    }
    if (res.status !== 200) throw await this.#fail(res, "GET", url);
    const contentType = baseMediaType(res.headers.get("content-type"));
    const bytes = await res.bytes(MAX_MANIFEST_SIZE, `manifest ${reference} in ${this.name}`);
    const own = sniffMediaType(bytes);
    if (isSchema1(contentType) || (own !== undefined && isSchema1(own))) {
      throw new UserError(`${this.name}@${reference}: Docker schema1 manifests are not supported`);
    }
    let declared: unknown;
    try {
      declared = JSON.parse(new TextDecoder().decode(bytes))?.mediaType;
    } catch {
      throw new UserError(`manifest ${reference} in ${this.name} is not valid JSON`);
    }
    if (
      typeof declared === "string" && isManifestType(contentType) && declared !== contentType
    ) {
      throw new UserError(
        `manifest ${reference} in ${this.name}: mediaType ${JSON.stringify(declared)} ` +
          `contradicts Content-Type ${JSON.stringify(contentType)}; refused`,
      );
    }
    const mediaType = isManifestType(contentType) ? contentType : own ?? contentType;
    return { bytes, mediaType };
  }

  async resolve(ref: { tag?: string; digest?: string }): Promise<Descriptor> {
    if (ref.digest !== undefined) parseDigest(ref.digest);
    const reference = ref.digest ?? ref.tag ?? "latest";
    const url = this.#url(`manifests/${reference}`);
    const head = await this.#send(
      { method: "HEAD", url, headers: { accept: ACCEPT_MANIFESTS } },
      this.#pullScopes(),
    );
    if (head.status === 404) {
      await head.discard();
      throw new NotFoundError(`manifest ${reference} not found in ${this.name}`);
    }
    // A server that does not do HEAD (405) is asked with GET below.
    if (head.status !== 200 && head.status !== 405) throw await this.#fail(head, "HEAD", url);
    const usable = head.status === 200;
    const contentType = baseMediaType(head.headers.get("content-type"));
    const headerDigest = usable ? head.headers.get("docker-content-digest")?.trim() : undefined;
    const size = head.contentLength;
    await head.discard();
    if (isSchema1(contentType)) {
      throw new UserError(`${this.name}:${reference}: Docker schema1 manifests are not supported`);
    }
    if (
      headerDigest && isValidDigest(headerDigest) && size !== undefined &&
      isManifestType(contentType) && (ref.digest === undefined || headerDigest === ref.digest)
    ) {
      if (ref.digest === undefined) this.#digestOfTag.set(headerDigest, reference);
      return { mediaType: contentType, digest: headerDigest, size };
    }
    // No usable Docker-Content-Digest (or a type we must see to believe): GET and hash.
    const { bytes, mediaType } = await this.#getManifest(reference);
    const digest = ref.digest ?? await digestOf(bytes);
    await verifyBytes(bytes, digest, bytes.length);
    if (!isManifestType(mediaType)) {
      throw new UserError(
        `${this.name}:${reference}: unsupported manifest media type ${JSON.stringify(mediaType)}`,
      );
    }
    this.#manifests.set(digest, bytes);
    return { mediaType, digest, size: bytes.length };
  }

  /**
   * The digest `tag` points at now, from a HEAD's Docker-Content-Digest; undefined when the
   * tag does not exist or the registry does not say (the caller then just copies and tags).
   */
  async tagDigest(tag: string): Promise<string | undefined> {
    const url = this.#url(`manifests/${encodeURIComponent(tag)}`);
    const res = await this.#send(
      { method: "HEAD", url, headers: { accept: ACCEPT_MANIFESTS } },
      this.#pushScopes(),
    );
    const digest = res.status === 200
      ? res.headers.get("docker-content-digest")?.trim()
      : undefined;
    if (res.status !== 200 && res.status !== 404 && res.status !== 405) {
      throw await this.#fail(res, "HEAD", url);
    }
    await res.discard();
    return digest && isValidDigest(digest) ? digest : undefined;
  }

  /**
   * Every tag of the repository, sorted, each once (distribution-spec "Listing Tags"):
   * `tags/list`, `pageSize` (`n`, default 1000) at a time, following `Link` pages on the
   * registry's origin (see listTags in ./referrers.ts). Throws NotFoundError for a
   * repository the registry does not know, UserError for other failures.
   */
  async listTags(pageSize?: number): Promise<string[]> {
    return (await listTags(this.#api, this.#pullScopes(), pageSize)).sort();
  }

  /**
   * The first `max` tags of `GET /v2/<name>/tags/list?n=…` (distribution-spec "Listing
   * Tags"), one request, no retries; a registry that ignores `n` is cut off at `max`.
   */
  async sampleTags(max: number): Promise<{ tags: string[]; more: boolean }> {
    const url = this.#url(`tags/list?n=${max + 1}`);
    const res = await this.#send({ method: "GET", url, retry: false }, this.#pullScopes());
    if (res.status !== 200) throw await this.#fail(res, "GET", url);
    const doc = JSON.parse(new TextDecoder().decode(await res.bytes(MAX_ERROR_BODY, "tag list")));
    const tags = Array.isArray(doc?.tags)
      ? (doc.tags as unknown[]).filter((t): t is string => typeof t === "string")
      : [];
    const link = res.headers.get("link");
    return { tags: tags.slice(0, max), more: tags.length > max || link !== null };
  }

  async fetchManifest(desc: Descriptor): Promise<Uint8Array> {
    parseDigest(desc.digest);
    if (desc.size > MAX_MANIFEST_SIZE) {
      throw new UserError(`manifest ${desc.digest} is larger than ${MAX_MANIFEST_SIZE} bytes`);
    }
    const cached = this.#manifests.get(desc.digest);
    if (cached) {
      await verifyBytes(cached, desc.digest, desc.size);
      return cached;
    }
    let bytes: Uint8Array;
    try {
      ({ bytes } = await this.#getManifest(desc.digest));
    } catch (e) {
      const tag = this.#digestOfTag.get(desc.digest);
      if (e instanceof NotFoundError && tag !== undefined) {
        // The digest came from the tag's Docker-Content-Digest: say so, not just "not found".
        throw new UserError(
          `${this.name}: the registry named ${desc.digest} as the digest of tag ${
            JSON.stringify(tag)
          } but has no manifest with that digest`,
        );
      }
      throw e;
    }
    await verifyBytes(bytes, desc.digest, desc.size);
    this.#manifests.set(desc.digest, bytes);
    return bytes;
  }

  async pushManifest(desc: Descriptor, bytes: Uint8Array, tag?: string): Promise<void> {
    await verifyBytes(bytes, desc.digest, desc.size);
    if (bytes.length > MAX_MANIFEST_SIZE) {
      throw new UserError(`manifest ${desc.digest} is larger than ${MAX_MANIFEST_SIZE} bytes`);
    }
    // By tag, the registry stores the manifest under its digest as well: one PUT for both.
    const reference = tag === undefined ? desc.digest : encodeURIComponent(tag);
    const subjectHeader = await this.#putManifest(desc, bytes, reference);
    this.#manifests.set(desc.digest, bytes);

    // A referrer (manifest with `subject`) on a registry without the referrers API (no
    // OCI-Subject in the answer): maintain the fallback tag ourselves.
    if (subjectHeader !== null) {
      this.#recordedReferrers.add(desc.digest); // the registry lists it itself
      return;
    }
    let doc: Record<string, unknown>;
    try {
      doc = JSON.parse(new TextDecoder().decode(bytes));
    } catch {
      return;
    }
    if (doc?.subject === undefined) return;
    const subject = checkDescriptor(doc.subject, `manifest ${desc.digest}`);
    await mergeReferrersTag(this.#api, subject, [referrerDescriptor(desc, doc)]);
    this.#recordedReferrers.add(desc.digest);
  }

  /** PUT manifest bytes under a digest or tag; returns the OCI-Subject header (or null). */
  async #putManifest(
    desc: Descriptor,
    bytes: Uint8Array,
    reference: string,
  ): Promise<string | null> {
    const url = this.#url(`manifests/${reference}`);
    const res = await this.#send(
      {
        method: "PUT",
        url,
        headers: { "content-type": desc.mediaType },
        body: bytes,
        commit: true,
      },
      this.#pushScopes(),
    );
    // Any 2xx is success: 201 by the spec, 200 from some, 202 from Quay.
    if (res.status < 200 || res.status > 299) throw await this.#fail(res, "PUT", url);
    const got = res.headers.get("docker-content-digest")?.trim();
    const subject = res.headers.get("oci-subject");
    await res.discard();
    if (got && got !== desc.digest && got.split(":")[0] === desc.digest.split(":")[0]) {
      throw new UserError(
        `${this.registry}: PUT ${url.pathname}: registry reports digest ${got}, expected ${desc.digest}`,
      );
    }
    return subject;
  }

  async tag(desc: Descriptor, tag: string, known?: Uint8Array): Promise<void> {
    if (!isManifestType(desc.mediaType)) {
      throw new UserError(
        `cannot tag ${desc.digest} in ${this.name}: ${desc.mediaType} is not a manifest type`,
      );
    }
    if (known) await verifyBytes(known, desc.digest, desc.size);
    const bytes = known ?? this.#manifests.get(desc.digest) ?? await this.fetchManifest(desc);
    await this.#putManifest(desc, bytes, encodeURIComponent(tag));
  }

  // -------------------------------------------------------------------------------------
  // Blobs

  async exists(desc: Descriptor): Promise<boolean> {
    parseDigest(desc.digest);
    const manifest = isManifestType(desc.mediaType) || isSchema1(desc.mediaType);
    const url = this.#url(`${manifest ? "manifests" : "blobs"}/${desc.digest}`);
    const res = await this.#send(
      { method: "HEAD", url, headers: manifest ? { accept: ACCEPT_MANIFESTS } : {} },
      this.#pullScopes(),
    );
    if (res.status === 404) {
      await res.discard();
      return false;
    }
    if (res.status !== 200) throw await this.#fail(res, "HEAD", url);
    const length = res.contentLength;
    await res.discard();
    return length === undefined || length === desc.size;
  }

  /**
   * GET a blob, following redirects (a cross-origin hop loses the Authorization header).
   * From `offset` > 0 an open range `Range: bytes=OFFSET-` is asked for: a 206 is accepted
   * only when its Content-Range starts exactly there and ends at the blob's last byte; a
   * registry that ignores Range answers 200 and the whole blob comes back with offset 0 (the
   * consumer starts over); a 416 whose Content-Range says the blob is `offset` bytes long
   * means nothing is left to read. A Content-Length that contradicts the descriptor fails
   * before reading.
   *
   * Consumers call fetch() again with a later offset after a stream broke off; those
   * re-opens spend the store's retry budget (RegistryOptions.retries), which progress of a
   * MiB or more since the previous re-open refills, as the layout and upload resumers do.
   */
  async fetch(desc: Descriptor, offset = 0): Promise<BlobReader> {
    parseDigest(desc.digest);
    this.#countReopen(desc, offset);
    if (offset > desc.size) {
      throw new UserError(`${desc.digest}: cannot read from byte ${offset} of ${desc.size}`);
    }
    const url = this.#url(`blobs/${desc.digest}`);
    const headers: Record<string, string> = {};
    if (offset > 0) headers.range = `bytes=${offset}-`;
    const res = await this.#send({ method: "GET", url, headers }, this.#pullScopes());
    if (res.status === 404) {
      await res.discard();
      throw new NotFoundError(`blob ${desc.digest} not found in ${this.name}`);
    }
    const length = res.contentLength;
    const contentRange = res.headers.get("content-range") ?? "";
    if (res.status === 206 && offset > 0) {
      const m = /^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/.exec(contentRange);
      const ok = m !== null && Number(m[1]) === offset && Number(m[2]) === desc.size - 1 &&
        (m[3] === "*" || Number(m[3]) === desc.size) &&
        (length === undefined || length === desc.size - offset);
      if (!ok) {
        await res.discard();
        throw new UserError(
          `${this.registry}: GET ${url.pathname}: invalid partial response for bytes ${offset}- ` +
            `(Content-Range ${JSON.stringify(oneLine(contentRange, 80))})`,
        );
      }
      return { stream: res.stream(), offset };
    }
    if (res.status === 416 && offset > 0) {
      await res.discard();
      const total = /^\s*bytes\s+\*\/(\d+)\s*$/.exec(contentRange)?.[1];
      if (offset === desc.size && (total === undefined || Number(total) === offset)) {
        // Nothing left to read: the consumer has every byte and verifies them.
        return { stream: new ReadableStream({ start: (c) => c.close() }), offset };
      }
      throw new UserError(
        `${this.registry}: GET ${url.pathname}: range from byte ${offset} not satisfiable ` +
          `(the registry's blob is ${
            total ?? "of unknown size"
          }, the descriptor says ${desc.size})`,
      );
    }
    if (res.status !== 200) throw await this.#fail(res, "GET", url);
    if (length !== undefined && length !== desc.size) {
      await res.discard();
      throw new UserError(
        `blob ${desc.digest} in ${this.name} is ${length} bytes, its descriptor says ${desc.size}`,
      );
    }
    return { stream: res.stream(), offset: 0 };
  }

  /**
   * Book a call of fetch(): a read from byte 0, or the first read of a blob (a kept partial
   * download), is free; a later read from further on is a re-open after a broken stream and
   * spends a retry (refilled by a MiB of progress). Throws when none is left, so that
   * `--retries` bounds the resumes of any consumer.
   */
  #countReopen(desc: Descriptor, offset: number): void {
    const seen = this.#opened.get(desc.digest);
    if (seen === undefined || offset === 0) {
      this.#opened.set(desc.digest, { failures: 0, mark: offset });
      return;
    }
    if (offset - seen.mark >= PROGRESS_RESETS_RETRIES) seen.failures = 0;
    seen.mark = offset;
    const policy = this.#retry;
    if (++seen.failures > policy.retries) {
      throw new UserError(
        `${desc.digest}: the download from ${this.name} broke off at byte ${offset} of ` +
          `${desc.size} and no retries are left (${policy.retries}); run the copy again to resume`,
      );
    }
    policy.report(
      `! retry ${seen.failures} of ${policy.retries}: download of ${desc.digest} from ` +
        `${this.name} broke off at byte ${offset} of ${desc.size}; resuming there`,
    );
  }

  async push(
    desc: Descriptor,
    source: BlobSource,
    onProgress?: (bytes: number) => void,
  ): Promise<void> {
    parseDigest(desc.digest);
    await loadFastHash(desc.size); // the upload streams a large blob through a streaming hash
    await uploadBlob(this.#api, desc, source, {
      chunkSize: this.#chunkSize,
      onProgress,
      retry: this.#retry,
    });
  }

  /** Mount from another repository of the same registry; false when not applicable or refused. */
  /**
   * Another store known to hold a blob, tried for a mount after the copy's source (a job
   * copying many images sets it to the repositories it has already filled).
   */
  mountHint?: (digest: string) => Store | undefined;

  /** The registry (scheme, host, port): its repositories mount blobs from each other. */
  get blobScope(): string {
    return this.baseUrl;
  }

  /** Blobs are mounted from another repository of the same registry only. */
  mountsFrom(from: Store): from is RegistryStore {
    return from instanceof RegistryStore && from.baseUrl === this.baseUrl &&
      from.repository !== this.repository;
  }

  async mount(desc: Descriptor, from: Store): Promise<boolean> {
    const hint = this.mountHint?.(desc.digest);
    for (const other of hint && hint !== from ? [from, hint] : [from]) {
      if (!this.mountsFrom(other)) continue;
      parseDigest(desc.digest);
      if (await mountBlob(this.#api, desc, other.repository)) return true;
    }
    return false;
  }

  // -------------------------------------------------------------------------------------
  // Referrers and tags (optional capabilities, see ../referrers.ts; the protocol is in
  // ./referrers.ts)

  /**
   * The referrers of `subject` (distribution-spec "Listing Referrers"): the referrers API,
   * or the fallback tag `ALG-HEX` when the registry answers 404 (remembered for this
   * session). Filtered to `artifactTypes` when given. Throws UserError on failure.
   */
  async referrers(subject: Descriptor, artifactTypes?: readonly string[]): Promise<Descriptor[]> {
    const found = await listReferrers(
      this.#api,
      this.#pullScopes(),
      subject,
      artifactTypes,
      this.#referrersState,
    );
    return found.referrers;
  }

  /**
   * Make `referrers` (stored here already) discoverable as referrers of `subject`: nothing
   * to do for those this session pushed (pushManifest recorded them) or when the registry
   * has the referrers API (it lists them itself); otherwise the missing ones are merged
   * into the fallback tag (see mergeReferrersTag). A rerun whose referrers were all present
   * costs one GET of the tag per subject (and one 404 of the API per session).
   */
  async recordReferrers(subject: Descriptor, referrers: Descriptor[]): Promise<void> {
    const left = referrers.filter((r) => !this.#recordedReferrers.has(r.digest));
    if (left.length === 0) return;
    const { referrers: listed, via } = await listReferrers(
      this.#api,
      this.#pushScopes(),
      subject,
      undefined,
      this.#referrersState,
    );
    if (via === "api") return;
    const have = new Set(listed.map((d) => d.digest));
    const missing = left.filter((r) => !have.has(r.digest));
    if (missing.length > 0) await mergeReferrersTag(this.#api, subject, missing);
    for (const r of left) this.#recordedReferrers.add(r.digest);
  }

  close(): Promise<void> {
    this.#manifests.clear();
    if (this.#ownsTransport) this.#transport.close();
    return Promise.resolve();
  }
}
