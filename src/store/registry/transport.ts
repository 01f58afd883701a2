// The HTTP layer under the registry store: one connection pool per store, TLS settings,
// redirects followed by hand, and request tracing with secrets blanked out.
//
// Everything above this file (auth, uploads, the Store methods) sends requests through
// Transport.request() and gets an HttpResponse back. This file knows nothing about the
// distribution API; it only knows HTTP and the safety rules for following redirects:
//
// - fetch() runs with `redirect: "manual"`, so we see every 3xx and decide ourselves;
// - a Location is resolved against the URL that answered (it may be relative);
// - the Authorization header is dropped as soon as a hop leaves the origin (scheme, host,
//   port) and is not put back if a later hop returns, as in the WHATWG fetch rules;
// - https → http is refused, and at most MAX_REDIRECTS hops are followed;
// - every other header (Range included) is sent again on every hop.
//
// Request bodies are always Uint8Array (never a stream): Deno drops Content-Length on
// streamed request bodies and falls back to chunked transfer encoding, which some
// registries and proxies reject. Callers therefore send sized chunks.
//
// TLS: certificate verification is on by default. Extra CA roots come from `caCertFiles`
// and from `certDir/HOST[:PORT]/*.crt` (the /etc/docker/certs.d layout, where a
// `NAME.cert` + `NAME.key` pair is a client certificate). Deno.createHttpClient has no
// option to skip verification, so with `tlsVerify: false` https requests go through
// node:https with `rejectUnauthorized: false` instead of fetch (see NodeBackend below);
// plain http and verified https always use fetch.
//
// Retries (TransportOptions.retries, default 5): a request that fails at the network level
// (refused, reset, timed out; not TLS or DNS failures) or is answered 408, 429, 500, 502,
// 503 or 504 is sent again, from its first URL (a redirect target is never reused), after
// an exponential backoff with jitter (retryBaseWait · 2^n · [0.5, 1.5), at most
// retryMaxWait). A Retry-After header (delay-seconds or an HTTP-date) replaces the backoff,
// capped by retryMaxWait. Other 4xx answers (401, 403, 404, …) are returned at once. Bodies
// are Uint8Array and so always re-readable; callers that must not resend blindly (upload
// PATCH/PUT, whose effect on the session is unknown after a failure) pass `retry: false`
// and recover themselves. Every retry is reported as one line to onRetry (or the trace):
//   ! retry 2 of 5 in 0.4 s: GET http://host/v2/…: 503 Service Unavailable
//
// Trace lines (TransportOptions.trace), one per request and one per response:
//   > METHOD URL name: "value" …                  request headers we send (not User-Agent)
//   < STATUS METHOD URL 12ms name: "value" …      selected response headers, time to headers
//   < ERROR METHOD URL 3ms MESSAGE                 the request failed at the network level
// Authorization, Cookie, Set-Cookie and Proxy-Authorization values print as <redacted>
// (Authorization keeps its scheme word), as do token/access_token/password/refresh_token
// query parameters in URLs and Location values. Bodies are never printed.
import { UserError } from "../../errors.ts";
import { join } from "../../path.ts";
import { Http1Client, Http1Error } from "./http1.ts";

// node:https and friends are loaded only for --tls-verify=false: loading node: modules
// costs Deno tens of milliseconds of start-up, most of a copy that finds everything present.
type NodeModules = {
  https: typeof import("node:https");
  Buffer: typeof import("node:buffer").Buffer;
  Readable: typeof import("node:stream").Readable;
};
async function loadNodeModules(): Promise<NodeModules> {
  const [https, buffer, stream] = await Promise.all([
    import("node:https"),
    import("node:buffer"),
    import("node:stream"),
  ]);
  return { https, Buffer: buffer.Buffer, Readable: stream.Readable };
}

/** Redirect hops followed for one request before giving up. */
export const MAX_REDIRECTS = 10;

/** How much of an unwanted body we read (to keep the connection reusable) before cancelling. */
const DISCARD_LIMIT = 64 * 1024;

export interface TransportOptions {
  /** Talk http:// instead of https:// (no fallback either way). */
  plainHttp?: boolean;
  /** Verify the server certificate (default true). */
  tlsVerify?: boolean;
  /** PEM files with extra CA certificates to trust. */
  caCertFiles?: string[];
  /** A directory laid out like /etc/docker/certs.d: DIR/HOST[:PORT]/{*.crt,*.cert,*.key}. */
  certDir?: string;
  /** Gets one line per request and one per response. */
  trace?: (line: string) => void;
  /** User-Agent header value. */
  userAgent?: string;
  /** Retries of a request after a transient failure (default 5; 0 turns retries off). */
  retries?: number;
  /** First backoff in ms before jitter (default 200); doubles on every retry. */
  retryBaseWait?: number;
  /** Longest wait between two attempts in ms, also the cap on Retry-After (default 60 000). */
  retryMaxWait?: number;
  /** Gets one line per retry (what failed, attempt N of M, the wait); else the trace does. */
  onRetry?: (line: string) => void;
  /** Longest wait for a response's status line and headers in ms (default 300 000). */
  headersTimeout?: number;
}

export const DEFAULT_RETRIES = 5;
export const DEFAULT_RETRY_BASE_WAIT = 200;
export const DEFAULT_RETRY_MAX_WAIT = 60_000;
const DEFAULT_HEADERS_TIMEOUT = 300_000;

/** Statuses that say "try again later" rather than "no". */
export const RETRYABLE_STATUSES: ReadonlySet<number> = new Set([408, 429, 500, 502, 503, 504]);

/** The retry policy shared by the transport and the upload and download resumers. */
export interface RetryPolicy {
  retries: number;
  baseWait: number;
  maxWait: number;
  /** Report one retry (already formatted). */
  report(line: string): void;
}

/** Backoff before retry number `n` (1-based): base · 2^(n-1) · jitter, capped. */
export function backoffDelay(policy: RetryPolicy, n: number): number {
  const exp = policy.baseWait * 2 ** Math.min(30, Math.max(0, n - 1));
  return Math.round(Math.min(policy.maxWait, exp * (0.5 + Math.random())));
}

/**
 * The wait a Retry-After header asks for, in ms: delay-seconds or an HTTP-date (a past
 * date means 0). Undefined when absent or unparsable. Not capped here.
 */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (value === null) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  if (!/[a-z]/i.test(v)) return undefined;
  const when = Date.parse(v);
  if (Number.isNaN(when)) return undefined;
  return Math.max(0, when - now);
}

/** Wait before retry `n`: Retry-After when the response has one (capped), else backoff. */
export function retryDelay(policy: RetryPolicy, n: number, res?: HttpResponse): number {
  const asked = res ? parseRetryAfter(res.headers.get("retry-after")) : undefined;
  if (asked !== undefined) return Math.min(asked, policy.maxWait);
  return backoffDelay(policy, n);
}

/** One retry as a log line. */
export function retryLine(n: number, max: number, waitMs: number, what: string): string {
  return `! retry ${n} of ${max} in ${(waitMs / 1000).toFixed(1)} s: ${what}`;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A request that failed below HTTP (no response); `retryable` for transient causes. */
export class NetworkError extends UserError {
  constructor(message: string, readonly retryable: boolean) {
    super(message);
  }
}

export interface HttpRequest {
  method: string;
  url: URL;
  /** Header names are case-insensitive; undefined values are left out. */
  headers?: Record<string, string | undefined>;
  /** A sized body; never a stream (see the file comment). */
  body?: Uint8Array;
  /** Follow 3xx responses (default true). With false the 3xx itself is returned. */
  followRedirects?: boolean;
  /**
   * Retry network failures and 408/429/5xx answers (default true). With false the first
   * answer (or failure) is returned, for requests whose repetition the caller manages.
   */
  retry?: boolean;
}

/** A response whose body the caller must consume once: stream(), bytes(), text() or discard(). */
export class HttpResponse {
  readonly status: number;
  readonly statusText: string;
  readonly headers: Headers;
  /** The URL that produced this response (after any redirects): base for relative Locations. */
  readonly url: URL;
  readonly method: string;
  #body: ReadableStream<Uint8Array> | null;

  constructor(
    init: {
      status: number;
      statusText: string;
      headers: Headers;
      url: URL;
      method: string;
      body: ReadableStream<Uint8Array> | null;
    },
  ) {
    this.status = init.status;
    this.statusText = init.statusText;
    this.headers = init.headers;
    this.url = init.url;
    this.method = init.method;
    this.#body = init.body;
  }

  get ok(): boolean {
    return this.status >= 200 && this.status < 300;
  }

  /** Content-Length as a number, or undefined when absent or malformed. */
  get contentLength(): number | undefined {
    const v = this.headers.get("content-length");
    if (v === null || !/^\d+$/.test(v.trim())) return undefined;
    return Number(v.trim());
  }

  /** Take the body as a stream; the caller now owns it (read it or cancel it). */
  stream(): ReadableStream<Uint8Array> {
    const body = this.#body;
    this.#body = null;
    return body ?? new ReadableStream({ start: (c) => c.close() });
  }

  /**
   * Read the whole body, refusing more than `cap` bytes: a Content-Length above the cap
   * fails before reading, and a longer body is cut off at cap+1 bytes.
   */
  async bytes(cap: number, what = "response body"): Promise<Uint8Array> {
    const body = this.#body;
    this.#body = null;
    if (body === null) return new Uint8Array(0);
    const declared = this.contentLength;
    if (declared !== undefined && declared > cap) {
      await body.cancel().catch(() => {});
      throw new UserError(`${what} is ${declared} bytes, more than the ${cap} allowed; refused`);
    }
    const parts: Uint8Array[] = [];
    let total = 0;
    const reader = body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        total += value.byteLength;
        if (total > cap) {
          await reader.cancel().catch(() => {});
          throw new UserError(`${what} is more than the ${cap} bytes allowed; refused`);
        }
        parts.push(value);
      }
    } finally {
      reader.releaseLock();
    }
    if (parts.length === 1) return parts[0];
    const out = new Uint8Array(total);
    let off = 0;
    for (const p of parts) {
      out.set(p, off);
      off += p.byteLength;
    }
    return out;
  }

  async text(cap: number, what?: string): Promise<string> {
    return new TextDecoder().decode(await this.bytes(cap, what));
  }

  /**
   * Throw the body away. Small bodies are read to the end so the connection can be
   * reused; anything longer than DISCARD_LIMIT is cancelled. Never throws.
   */
  async discard(): Promise<void> {
    const body = this.#body;
    this.#body = null;
    if (body === null) return;
    try {
      const reader = body.getReader();
      let total = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        total += value.byteLength;
        if (total > DISCARD_LIMIT) {
          await reader.cancel();
          break;
        }
      }
      reader.releaseLock();
    } catch {
      // A broken body is as good as a discarded one.
    }
  }
}

// ---------------------------------------------------------------------------------------
// Redaction for traces and messages.

const SECRET_HEADERS = new Set(["authorization", "cookie", "set-cookie", "proxy-authorization"]);
const SECRET_PARAMS = new Set(["token", "access_token", "password", "refresh_token"]);
const REDACTED = "<redacted>";

/** A URL as text with secret query parameters and any password blanked out. */
export function redactUrl(url: URL | string): string {
  let u: URL;
  try {
    u = new URL(String(url));
  } catch {
    return String(url);
  }
  const password = u.password !== "";
  const search = u.search;
  u.search = "";
  u.hash = "";
  if (password) u.password = "redacted";
  let text = u.toString();
  if (search.length > 1) {
    const parts = search.slice(1).split("&").map((kv) => {
      const eq = kv.indexOf("=");
      const rawName = eq === -1 ? kv : kv.slice(0, eq);
      let name = rawName;
      try {
        name = decodeURIComponent(rawName.replaceAll("+", " "));
      } catch { /* keep raw */ }
      return SECRET_PARAMS.has(name.toLowerCase()) ? `${rawName}=${REDACTED}` : kv;
    });
    text += "?" + parts.join("&");
  }
  return text;
}

/** One header value as it may be shown: secrets replaced, URLs redacted. */
function showHeader(name: string, value: string): string {
  const lower = name.toLowerCase();
  if (SECRET_HEADERS.has(lower)) {
    // Keep the scheme word (Bearer/Basic) — useful when debugging, not a secret.
    const scheme = lower === "authorization" || lower === "proxy-authorization"
      ? /^\s*([A-Za-z][A-Za-z0-9-]*)\s/.exec(value)?.[1]
      : undefined;
    return scheme ? `${scheme} ${REDACTED}` : REDACTED;
  }
  if (lower === "location" || lower === "content-location") return redactUrl(value);
  return value;
}

/** Response headers worth a trace line. */
const TRACED_RESPONSE_HEADERS = [
  "content-type",
  "content-length",
  "content-range",
  "docker-content-digest",
  "location",
  "range",
  "www-authenticate",
  "oci-subject",
  "oci-chunk-min-length",
  "docker-upload-uuid",
  "retry-after",
  "warning",
  "set-cookie",
];

function formatHeaders(entries: [string, string][]): string {
  return entries.map(([k, v]) => `${k}: ${JSON.stringify(showHeader(k, v))}`).join(" ");
}

// ---------------------------------------------------------------------------------------
// TLS material.

interface TlsMaterial {
  caCerts: string[];
  cert?: string;
  key?: string;
}

function looksLikePem(text: string): boolean {
  return /-----BEGIN CERTIFICATE-----/.test(text);
}

async function readPem(path: string, what: string): Promise<string> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new UserError(`cannot read ${what} ${path}: ${(e as Error).message}`);
  }
  return text;
}

/**
 * Collect CA roots and a client certificate for `host` (HOST or HOST:PORT as written in
 * the reference): every --cacert file, then certDir/HOST/*.crt, and the first
 * certDir/HOST/NAME.cert with a matching NAME.key.
 */
export async function loadTlsMaterial(host: string, opts: TransportOptions): Promise<TlsMaterial> {
  const out: TlsMaterial = { caCerts: [] };
  for (const file of opts.caCertFiles ?? []) {
    const pem = await readPem(file, "CA certificate");
    if (!looksLikePem(pem)) throw new UserError(`${file} holds no PEM certificate`);
    out.caCerts.push(pem);
  }
  if (opts.certDir) {
    const dir = join(opts.certDir, host);
    const names: string[] = [];
    try {
      for await (const e of Deno.readDir(dir)) {
        if (e.isFile || e.isSymlink) names.push(e.name);
      }
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) {
        throw new UserError(`cannot read certificate directory ${dir}: ${(e as Error).message}`);
      }
    }
    names.sort();
    for (const name of names) {
      if (!name.endsWith(".crt")) continue;
      const pem = await readPem(join(dir, name), "CA certificate");
      if (!looksLikePem(pem)) throw new UserError(`${join(dir, name)} holds no PEM certificate`);
      out.caCerts.push(pem);
    }
    for (const name of names) {
      if (!name.endsWith(".cert")) continue;
      const keyName = name.slice(0, -".cert".length) + ".key";
      if (!names.includes(keyName)) {
        throw new UserError(`client certificate ${join(dir, name)} has no matching ${keyName}`);
      }
      out.cert = await readPem(join(dir, name), "client certificate");
      out.key = await readPem(join(dir, keyName), "client key");
      break;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Backends: fetch (the normal case) and node:https (TLS without verification).

interface RawResponse {
  status: number;
  statusText: string;
  headers: Headers;
  body: ReadableStream<Uint8Array> | null;
}

interface Backend {
  send(
    method: string,
    url: URL,
    headers: Headers,
    body: Uint8Array | undefined,
    signal: AbortSignal,
  ): Promise<RawResponse>;
  close(): void;
}

class FetchBackend implements Backend {
  #client: Deno.HttpClient;
  constructor(tls: TlsMaterial) {
    this.#client = tls.cert && tls.key
      ? Deno.createHttpClient({ caCerts: tls.caCerts, cert: tls.cert, key: tls.key })
      : Deno.createHttpClient({ caCerts: tls.caCerts });
  }
  send: Backend["send"] = async (method, url, headers, body, signal) => {
    const res = await fetch(url, {
      method,
      headers,
      body: body as BodyInit | undefined,
      redirect: "manual",
      client: this.#client,
      signal,
    });
    return { status: res.status, statusText: res.statusText, headers: res.headers, body: res.body };
  };
  close() {
    this.#client.close();
  }
}

/**
 * Plain http and verified https without a proxy: our own HTTP/1.1 client (http1.ts), which
 * starts faster than fetch, reads bodies straight into the caller's buffers and can stream
 * a request body with an exact Content-Length.
 */
class Http1Backend implements Backend {
  readonly client: Http1Client;
  constructor(tls: TlsMaterial) {
    this.client = new Http1Client({ tls });
  }
  send: Backend["send"] = (method, url, headers, body, signal) =>
    this.client.request(method, url, headers, body, signal);
  close() {
    this.client.close();
  }
}

/**
 * The proxy fetch would use for `url` (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY, in
 * either case), or undefined. Requests through a proxy go through fetch, which speaks to
 * proxies; our HTTP/1.1 client does not.
 */
export function proxyFor(url: URL, env: (name: string) => string | undefined): string | undefined {
  const get = (name: string) => env(name) ?? env(name.toUpperCase());
  const proxy = (url.protocol === "https:" ? get("https_proxy") : get("http_proxy")) ??
    get("all_proxy");
  if (!proxy) return undefined;
  const noProxy = get("no_proxy") ?? "";
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  for (const raw of noProxy.split(/[\s,]+/)) {
    const entry = raw.trim().toLowerCase();
    if (!entry) continue;
    if (entry === "*") return undefined;
    const [name, port] = entry.startsWith("[")
      ? [entry.slice(1, entry.indexOf("]")), entry.slice(entry.indexOf("]") + 2)]
      : entry.split(":");
    if (port && port !== (url.port || (url.protocol === "https:" ? "443" : "80"))) continue;
    const bare = name.replace(/^\*?\./, "");
    if (host === bare || host.endsWith(`.${bare}`)) return undefined;
  }
  return proxy;
}

/**
 * https without certificate verification. Deno's fetch cannot do this in-process (the
 * only switch is the process-wide --unsafely-ignore-certificate-errors flag), while its
 * node:https/node:tls compatibility layer honours `rejectUnauthorized: false`. One
 * keep-alive Agent gives connection reuse like the fetch client does. Plain-http URLs
 * reached by redirects still go through fetch.
 */
class NodeBackend implements Backend {
  #agent: import("node:https").Agent;
  #fallback: FetchBackend;
  #node: NodeModules;
  static async create(tls: TlsMaterial): Promise<NodeBackend> {
    return new NodeBackend(tls, await loadNodeModules());
  }
  private constructor(tls: TlsMaterial, node: NodeModules) {
    this.#node = node;
    const { https } = node;
    this.#agent = new https.Agent({
      keepAlive: true,
      rejectUnauthorized: false,
      cert: tls.cert,
      key: tls.key,
    });
    this.#fallback = new FetchBackend(tls);
  }
  send: Backend["send"] = (method, url, headers, body, signal) => {
    if (url.protocol !== "https:") return this.#fallback.send(method, url, headers, body, signal);
    const { https, Buffer, Readable } = this.#node;
    return new Promise<RawResponse>((resolve, reject) => {
      const outgoing: Record<string, string> = {};
      headers.forEach((v, k) => outgoing[k] = v);
      if (body !== undefined) outgoing["content-length"] = String(body.byteLength);
      const options = { method, headers: outgoing, agent: this.#agent, signal };
      const req = https.request(url, options, (res) => {
        const h = new Headers();
        const raw = res.rawHeaders;
        for (let i = 0; i + 1 < raw.length; i += 2) h.append(raw[i], raw[i + 1]);
        const status = res.statusCode ?? 0;
        let stream: ReadableStream<Uint8Array> | null = null;
        if (method === "HEAD" || status === 204 || status === 304) {
          res.resume();
        } else {
          stream = Readable.toWeb(res) as unknown as ReadableStream<Uint8Array>;
        }
        resolve({ status, statusText: res.statusMessage ?? "", headers: h, body: stream });
      });
      req.on("error", reject);
      req.end(
        body === undefined ? undefined : Buffer.from(body.buffer, body.byteOffset, body.byteLength),
      );
    });
  };
  close() {
    this.#agent.destroy();
    this.#fallback.close();
  }
}

// ---------------------------------------------------------------------------------------

/** The `<` trace line of a response: status, method, URL, time, the headers worth seeing. */
function responseTraceLine(
  status: number,
  method: string,
  url: URL,
  headers: Headers,
  started: number,
): string {
  const shown: [string, string][] = [];
  for (const k of TRACED_RESPONSE_HEADERS) {
    const v = headers.get(k);
    if (v !== null) shown.push([k, v]);
  }
  const ms = Math.round(performance.now() - started);
  return `< ${status} ${method} ${redactUrl(url)} ${ms}ms${
    shown.length ? " " + formatHeaders(shown) : ""
  }`;
}

function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
}

/** A network-level failure as one readable line, without the URL (messages add their own). */
function describeNetworkError(e: unknown): string {
  const err = e as Error;
  let msg = String((err?.cause as Error | undefined)?.message ?? err?.message ?? e);
  msg = msg.replace(/^error sending request for url \([^)]*\):\s*/, "");
  if (/InvalidContentType|corrupt message|wrong version number|packet length too long/i.test(msg)) {
    msg += " (the server does not speak TLS here: for a plain-http registry use --plain-http)";
  }
  msg = msg.replace(/^client error \(Connect\):\s*/, "");
  if (/certificate|UnknownIssuer|CaUsedAsEndEntity|NotValidForName|tls handshake/i.test(msg)) {
    msg += " (TLS verification failed: add the CA with --cacert or a certs.d directory, " +
      "or turn verification off for this registry)";
  }
  return msg;
}

/**
 * Whether a network-level failure may go away by itself: refused, reset and timed-out
 * connections do; certificate problems, a TLS handshake with a plain-http server and names
 * that do not resolve do not.
 */
function isTransientNetworkError(e: unknown, message: string): boolean {
  if (e instanceof DOMException && e.name === "TimeoutError") return true;
  // `message` has the URL taken out (describeNetworkError), so a path cannot match here.
  return !/certificate|UnknownIssuer|CaUsedAsEndEntity|NotValidForName|\btls\b|\bssl\b|corrupt message|InvalidContentType|dns error|lookup address|ENOTFOUND|EAI_AGAIN|invalid url|unsupported/i
    .test(message);
}

export class Transport {
  /** Registry as named in messages. */
  readonly name: string;
  /** `http://HOST[:PORT]` or `https://HOST[:PORT]`. */
  readonly baseUrl: URL;
  readonly #backend: Backend;
  readonly #trace?: (line: string) => void;
  readonly #userAgent: string;
  readonly #headersTimeout: number;
  /** The retry settings, shared with the upload and download resumers above. */
  readonly retry: RetryPolicy;
  #closed = false;

  private constructor(
    name: string,
    baseUrl: URL,
    backend: Backend,
    opts: TransportOptions,
  ) {
    this.name = name;
    this.baseUrl = baseUrl;
    this.#backend = backend;
    this.#trace = opts.trace;
    this.#userAgent = opts.userAgent ?? "umoci-copy";
    this.#headersTimeout = opts.headersTimeout ?? DEFAULT_HEADERS_TIMEOUT;
    const report = opts.onRetry ?? opts.trace ?? (() => {});
    this.retry = {
      retries: Math.max(0, Math.floor(opts.retries ?? DEFAULT_RETRIES)),
      baseWait: Math.max(0, opts.retryBaseWait ?? DEFAULT_RETRY_BASE_WAIT),
      maxWait: Math.max(0, opts.retryMaxWait ?? DEFAULT_RETRY_MAX_WAIT),
      report: (line) => report(line),
    };
  }

  /** Create the transport for one registry host (`HOST[:PORT]`). */
  static async create(name: string, host: string, opts: TransportOptions = {}): Promise<Transport> {
    const baseUrl = new URL(`${opts.plainHttp ? "http" : "https"}://${host}`);
    const tls = opts.plainHttp ? { caCerts: [] } : await loadTlsMaterial(host, opts);
    let backend: Backend;
    try {
      if (opts.tlsVerify === false && !opts.plainHttp) backend = await NodeBackend.create(tls);
      else if (proxyFor(baseUrl, (n) => Deno.env.get(n))) backend = new FetchBackend(tls);
      else backend = new Http1Backend(tls);
    } catch (e) {
      throw new UserError(`cannot set up TLS for ${name}: ${(e as Error).message}`);
    }
    return new Transport(name, baseUrl, backend, opts);
  }

  /**
   * True when streamBody() can be used: requests go through our HTTP/1.1 client (not with
   * --tls-verify=false, which needs node:https, nor through a proxy, which needs fetch).
   */
  get canStream(): boolean {
    return this.#backend instanceof Http1Backend;
  }

  /**
   * Send one request whose body is written by `body` as it is produced, with an exact
   * Content-Length (see http1.ts). No redirects, no retries: the caller (uploads) recovers
   * by asking the registry for its progress. An error thrown by the body callback itself
   * (source or verifier) is thrown as is; network failures become NetworkErrors.
   */
  async streamBody(req: {
    method: string;
    url: URL;
    headers: Record<string, string | undefined>;
    contentLength: number;
    body: (write: (chunk: Uint8Array) => Promise<void>) => Promise<void>;
  }): Promise<HttpResponse> {
    const backend = this.#backend;
    if (!(backend instanceof Http1Backend)) {
      throw new Error("internal error: streaming is not available");
    }
    const headers: [string, string][] = [["user-agent", this.#userAgent]];
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers.push([k, v]);
    const trace = this.#trace;
    const started = performance.now();
    if (trace) {
      const shown = headers.filter(([k]) => k !== "user-agent");
      shown.push(["content-length", String(req.contentLength)]);
      trace(`> ${req.method} ${redactUrl(req.url)} ${formatHeaders(shown)}`);
    }
    let raw: RawResponse;
    try {
      raw = await backend.client.request(req.method, req.url, headers, {
        length: req.contentLength,
        write: req.body,
      });
    } catch (e) {
      if (!(e instanceof Http1Error)) throw e; // the body callback's own error
      const msg = describeNetworkError(e);
      trace?.(
        `< ERROR ${req.method} ${redactUrl(req.url)} ${
          Math.round(performance.now() - started)
        }ms ${msg}`,
      );
      throw new NetworkError(
        `${this.name}: ${req.method} ${redactUrl(req.url)}: ${msg}`,
        isTransientNetworkError(e.cause ?? e, msg),
      );
    }
    if (trace) trace(responseTraceLine(raw.status, req.method, req.url, raw.headers, started));
    return new HttpResponse({ ...raw, url: req.url, method: req.method });
  }

  /** True when `url` has the same scheme, host and port as the registry. */
  isRegistryOrigin(url: URL): boolean {
    return url.origin === this.baseUrl.origin;
  }

  /**
   * Send one request, following redirects unless told not to, and retrying transient
   * failures (see the file comment) unless `req.retry` is false. The returned response's
   * body must be consumed by the caller. Network failures become UserErrors (NetworkError).
   */
  async request(req: HttpRequest): Promise<HttpResponse> {
    const policy = this.retry;
    const max = req.retry === false ? 0 : policy.retries;
    const what = `${req.method.toUpperCase()} ${redactUrl(req.url)}`;
    for (let attempt = 0;; attempt++) {
      let res: HttpResponse;
      try {
        res = await this.#requestOnce(req);
      } catch (e) {
        if (attempt >= max || !(e instanceof NetworkError) || !e.retryable) throw e;
        const wait = backoffDelay(policy, attempt + 1);
        policy.report(retryLine(attempt + 1, max, wait, e.message));
        await sleep(wait);
        continue;
      }
      if (attempt >= max || !RETRYABLE_STATUSES.has(res.status)) return res;
      const wait = retryDelay(policy, attempt + 1, res);
      const status = `${res.status}${res.statusText ? " " + res.statusText : ""}`;
      await res.discard();
      policy.report(retryLine(attempt + 1, max, wait, `${what}: ${status}`));
      await sleep(wait);
    }
  }

  /** One attempt of request(): the request and its redirect hops. */
  async #requestOnce(req: HttpRequest): Promise<HttpResponse> {
    if (this.#closed) throw new Error(`transport for ${this.name} is closed`);
    let url = new URL(req.url);
    let method = req.method.toUpperCase();
    let body = req.body;
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers ?? {})) {
      if (v !== undefined) headers.set(k, v);
    }
    if (!headers.has("user-agent")) headers.set("user-agent", this.#userAgent);
    // Blobs are already compressed, and byte ranges only make sense on the raw bytes.
    if (!headers.has("accept-encoding")) headers.set("accept-encoding", "identity");
    if (method === "GET" || method === "HEAD") body = undefined;
    const firstUrl = url;

    for (let hop = 0;; hop++) {
      const res = await this.#send(method, url, headers, body);
      if (!isRedirect(res.status) || req.followRedirects === false) return res;

      const location = res.headers.get("location");
      await res.discard();
      const where = `${this.name}: ${req.method} ${firstUrl.pathname}`;
      if (!location) throw new UserError(`${where}: ${res.status} redirect without a Location`);
      if (hop + 1 > MAX_REDIRECTS) {
        throw new UserError(`${where}: more than ${MAX_REDIRECTS} redirects; giving up`);
      }
      let next: URL;
      try {
        next = new URL(location, url);
      } catch {
        throw new UserError(`${where}: redirect to an invalid URL`);
      }
      if (next.protocol !== "http:" && next.protocol !== "https:") {
        throw new UserError(`${where}: redirect to unsupported scheme ${next.protocol}`);
      }
      if (url.protocol === "https:" && next.protocol === "http:") {
        throw new UserError(`${where}: refusing redirect from https to http (${redactUrl(next)})`);
      }
      // Credentials never cross an origin boundary, and stay dropped afterwards.
      if (next.origin !== url.origin) {
        headers.delete("authorization");
        headers.delete("cookie");
      }
      // 303 (and 301/302 after a POST, as browsers do) turns the request into a GET.
      if (
        (res.status === 303 && method !== "HEAD") ||
        ((res.status === 301 || res.status === 302) && method === "POST")
      ) {
        method = "GET";
        body = undefined;
        for (const h of ["content-type", "content-range", "content-length"]) headers.delete(h);
      }
      url = next;
    }
  }

  async #send(
    method: string,
    url: URL,
    headers: Headers,
    body: Uint8Array | undefined,
  ): Promise<HttpResponse> {
    const trace = this.#trace;
    const started = performance.now();
    if (trace) {
      const shown: [string, string][] = [];
      headers.forEach((v, k) => {
        if (k !== "user-agent" && k !== "accept-encoding") shown.push([k, v]);
      });
      if (body !== undefined) shown.push(["content-length", String(body.byteLength)]);
      trace(`> ${method} ${redactUrl(url)}${shown.length ? " " + formatHeaders(shown) : ""}`);
    }
    let raw: RawResponse;
    // The timer covers the wait for the status line and headers only; it is let go before
    // the body is read, so a slow but moving body is never cut by it. (AbortSignal.timeout
    // rather than setTimeout: Deno's first setTimeout costs 4-7 ms of start-up, and the
    // timeout signal does not keep the process alive.)
    const aborter = new AbortController();
    const timeout = AbortSignal.timeout(this.#headersTimeout);
    const onTimeout = () =>
      aborter.abort(
        new DOMException(`no response within ${this.#headersTimeout / 1000} s`, "TimeoutError"),
      );
    timeout.addEventListener("abort", onTimeout, { once: true });
    try {
      raw = await this.#backend.send(method, url, headers, body, aborter.signal);
    } catch (e) {
      const cause = aborter.signal.aborted ? aborter.signal.reason : e;
      const msg = cause instanceof DOMException ? cause.message : describeNetworkError(cause);
      trace?.(
        `< ERROR ${method} ${redactUrl(url)} ${Math.round(performance.now() - started)}ms ${msg}`,
      );
      throw new NetworkError(
        `${this.name}: ${method} ${redactUrl(url)}: ${msg}`,
        isTransientNetworkError(cause, msg),
      );
    } finally {
      timeout.removeEventListener("abort", onTimeout);
    }
    if (trace) trace(responseTraceLine(raw.status, method, url, raw.headers, started));
    return new HttpResponse({ ...raw, url, method });
  }

  /** Close the connection pool. Responses not yet consumed must be discarded first. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#backend.close();
  }
}
