// The HTTP layer under the registry store, built like go-containerregistry's `transport`
// package: one concern per file, composed here.
//
//   client.ts    fetch (or node:https where fetch cannot), connection pools, proxies
//   tls.ts       CA roots, client certificates, pinned self-signed certificates
//   proxy.ts     which proxy a URL goes through (Go's rules; loopback never)
//   redirect.ts  following 3xx answers without leaking credentials
//   retry.ts     which failures are retried, backoff, Retry-After
//   timeouts.ts  every wait bounded (--timeout)
//   trace.ts     --trace-requests lines, and redaction of everything shown
//   response.ts  the response type handed up
//
// Everything above this file (auth, uploads, the Store methods) sends requests through
// Transport.request() and gets an HttpResponse back. Nothing here knows the distribution API.
import { proxyFor } from "./proxy.ts";
import { UserError } from "../../errors.ts";
import { FetchClient, type HttpClient, NodeClient, type RequestBody } from "./client.ts";
import { followRedirect, type Hop, isRedirect } from "./redirect.ts";
import { HttpResponse } from "./response.ts";
export { HttpResponse };
import {
  backoffDelay,
  DEFAULT_RETRIES,
  DEFAULT_RETRY_BASE_WAIT,
  DEFAULT_RETRY_MAX_WAIT,
  isTransientFailure,
  NetworkError,
  RETRYABLE_STATUSES,
  retryDelay,
  retryLine,
  type RetryPolicy,
  sleep,
} from "./retry.ts";
import {
  TimeoutError,
  type Timeouts,
  timeoutsFor,
  watchBody,
  Watchdog,
  watchUpload,
} from "./timeouts.ts";
import { loadTlsMaterial } from "./tls.ts";
import { errorTraceLine, redactUrl, requestTraceLine, responseTraceLine } from "./trace.ts";

/** Settings of one registry's transport; every field documents its default. */
export interface TransportOptions {
  /** Talk http:// instead of https:// (default false; no fallback either way). */
  plainHttp?: boolean;
  /** Verify the server certificate (default true). */
  tlsVerify?: boolean;
  /** PEM files with extra CA certificates to trust (default none). */
  caCertFiles?: string[];
  /** A directory laid out like /etc/docker/certs.d: DIR/HOST[:PORT]/{*.crt,*.cert,*.key}. */
  certDir?: string;
  /** Gets one line per request and one per response (default: no trace). */
  trace?: (line: string) => void;
  /** User-Agent header value (default "umoci-copy"). */
  userAgent?: string;
  /** Retries of a request after a transient failure (default 5; 0 turns retries off). */
  retries?: number;
  /** First backoff in ms before jitter (default 200); doubles on every retry. */
  retryBaseWait?: number;
  /** Longest wait between two attempts in ms, also the cap on Retry-After (default 60 000). */
  retryMaxWait?: number;
  /** Gets one line per retry (what failed, attempt N of M, the wait); else the trace does. */
  onRetry?: (line: string) => void;
  /** Idle limit in ms (--timeout; default 30 000); see timeouts.ts for what it bounds. */
  timeout?: number;
}

/** One request. */
export interface HttpRequest {
  method: string;
  url: URL;
  /** Header names are case-insensitive; undefined values are left out. */
  headers?: Record<string, string | undefined>;
  /**
   * A sized body (sent with Content-Length), or a stream (sent with chunked transfer coding,
   * never retried and never redirected: the caller recovers, see upload.ts).
   */
  body?: RequestBody;
  /** Follow 3xx responses (default true). With false the 3xx itself is returned. */
  followRedirects?: boolean;
  /**
   * Retry network failures and 408/429/5xx answers (default true). With false the first
   * answer (or failure) is returned, for requests whose repetition the caller manages.
   */
  retry?: boolean;
  /** The request commits content (closing PUT, manifest PUT, mount): longer answer wait. */
  commit?: boolean;
  /** A streamed body: called with each piece's size as it is handed to the network. */
  onSent?: (bytes: number) => void;
}

/** A network-level failure as one readable line, without the URL (messages add their own). */
export function describeNetworkError(e: unknown): string {
  if (e instanceof TimeoutError) return `${e.message} (--timeout)`;
  const err = e as Error;
  let msg = String((err?.cause as Error | undefined)?.message ?? err?.message ?? e);
  // fetch says "error sending request [from ADDR] for URL (HOST): client error (KIND): CAUSE";
  // the message around it names the request already.
  if (msg.startsWith("error sending request")) {
    const at = msg.indexOf("client error (");
    msg = at >= 0 ? msg.slice(at) : msg.replace(/^error sending request.*?\): /, "");
  }
  msg = msg.replace(/^client error \(\w+\):\s*/, "");
  if (/InvalidContentType|corrupt message|wrong version number|packet length too long/i.test(msg)) {
    msg += " (the server does not speak TLS here: for a plain-http registry use --plain-http)";
  }
  if (/BadCertificate|CertificateRequired|KeyMismatch|keys may not be consistent/i.test(msg)) {
    // The server's complaint about us, not ours about it.
    msg += " (the registry refused the client certificate, or wants one: give NAME.cert " +
      "and NAME.key in a certs.d directory, --cert-dir)";
  } else if (/expired|not valid (yet|after|before)/i.test(msg)) {
    msg += " (the registry's certificate is outside its validity period: check its dates " +
      "and this machine's clock)";
  } else if (/NotValidForName|not valid for name|CaUsedAsEndEntity/i.test(msg)) {
    msg += " (the registry's certificate does not name this host, or is a CA certificate " +
      "used as its own: check the name in the reference against the certificate's names)";
  } else if (/certificate|UnknownIssuer|tls handshake/i.test(msg)) {
    msg += " (TLS verification failed: add the CA with --cacert or a certs.d directory, " +
      "or turn verification off for this registry)";
  }
  return msg.split("\n")[0];
}

/** The requests of one registry host: TLS, pools, redirects, retries, timeouts, traces. */
export class Transport {
  /** Registry as named in messages. */
  readonly name: string;
  /** `http://HOST[:PORT]` or `https://HOST[:PORT]`. */
  readonly baseUrl: URL;
  /** The retry settings, shared with the upload and download resumers above. */
  readonly retry: RetryPolicy;
  readonly #client: HttpClient;
  readonly #trace?: (line: string) => void;
  readonly #userAgent: string;
  readonly #timeouts: Timeouts;
  #closed = false;

  private constructor(name: string, baseUrl: URL, client: HttpClient, opts: TransportOptions) {
    this.name = name;
    this.baseUrl = baseUrl;
    this.#client = client;
    this.#trace = opts.trace;
    this.#userAgent = opts.userAgent ?? "umoci-copy";
    this.#timeouts = timeoutsFor(opts.timeout);
    const report = opts.onRetry ?? opts.trace ?? (() => {});
    this.retry = {
      retries: Math.max(0, Math.floor(opts.retries ?? DEFAULT_RETRIES)),
      baseWait: Math.max(0, opts.retryBaseWait ?? DEFAULT_RETRY_BASE_WAIT),
      maxWait: Math.max(0, opts.retryMaxWait ?? DEFAULT_RETRY_MAX_WAIT),
      report: (line) => report(line),
    };
  }

  /**
   * Create the transport for one registry host (`HOST[:PORT]`). Throws a UserError when the
   * TLS material cannot be read or used.
   */
  static async create(name: string, host: string, opts: TransportOptions = {}): Promise<Transport> {
    const baseUrl = new URL(`${opts.plainHttp ? "http" : "https"}://${host}`);
    const tls = opts.plainHttp ? { caCerts: [], pinned: [] } : await loadTlsMaterial(host, opts);
    // node:https where fetch cannot serve (client.ts): no verification, or a pinned certificate.
    const unverified = opts.tlsVerify === false && !opts.plainHttp;
    const pinOnly = !unverified && tls.pinned.length > 0;
    if ((unverified || pinOnly) && proxyFor(baseUrl) !== undefined) {
      // node:https here has no proxy support: connecting directly would bypass the proxy
      // the environment asks for, and fail where only the proxy gets out.
      const why = unverified
        ? "--tls-verify=false"
        : "a self-signed certificate pinned with --cacert";
      throw new UserError(
        `${name}: with ${why} the connection cannot go through the proxy that ` +
          `HTTPS_PROXY/ALL_PROXY names for it; set NO_PROXY=${baseUrl.hostname} to connect ` +
          "directly, or trust the registry's CA with --cacert to keep the proxy",
      );
    }
    let client: HttpClient;
    try {
      client = unverified || pinOnly ? await NodeClient.create(tls, pinOnly) : new FetchClient(tls);
    } catch (e) {
      throw new UserError(`cannot set up TLS for ${name}: ${(e as Error).message}`);
    }
    return new Transport(name, baseUrl, client, opts);
  }

  /** True when `url` has the same scheme, host and port as the registry. */
  isRegistryOrigin(url: URL): boolean {
    return url.origin === this.baseUrl.origin;
  }

  /**
   * Send one request, following redirects and retrying transient failures (retry.ts) unless
   * told not to. The returned response's body must be consumed by the caller. Network
   * failures and timeouts become NetworkErrors (UserErrors); a body that fails later fails
   * its reads with a NetworkError too.
   */
  async request(req: HttpRequest): Promise<HttpResponse> {
    const streamed = req.body instanceof ReadableStream;
    const policy = this.retry;
    const max = req.retry === false || streamed ? 0 : policy.retries;
    const what = `${req.method.toUpperCase()} ${redactUrl(req.url)}`;
    for (let attempt = 0;; attempt++) {
      let res: HttpResponse;
      try {
        res = await this.#requestOnce(req, streamed);
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
  async #requestOnce(req: HttpRequest, streamed: boolean): Promise<HttpResponse> {
    if (this.#closed) throw new Error(`transport for ${this.name} is closed`);
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers ?? {})) if (v !== undefined) headers.set(k, v);
    if (!headers.has("user-agent")) headers.set("user-agent", this.#userAgent);
    // Blobs are already compressed, and byte ranges only make sense on the raw bytes.
    if (!headers.has("accept-encoding")) headers.set("accept-encoding", "identity");
    const method = req.method.toUpperCase();
    const hop: Hop = {
      method,
      url: new URL(req.url),
      headers,
      hasBody: req.body !== undefined && method !== "GET" && method !== "HEAD",
    };
    const where = `${this.name}: ${method} ${req.url.pathname}`;
    for (let count = 1;; count++) {
      const res = await this.#send(hop, hop.hasBody ? req.body : undefined, req);
      if (!isRedirect(res.status) || req.followRedirects === false || streamed) return res;
      const location = res.headers.get("location");
      await res.discard();
      followRedirect(hop, res.status, location, where, count);
    }
  }

  /** One HTTP exchange, watched by its own Watchdog, traced. */
  async #send(hop: Hop, body: RequestBody | undefined, req: HttpRequest): Promise<HttpResponse> {
    const { method, url, headers } = hop;
    const trace = this.#trace;
    const started = performance.now();
    const dog = new Watchdog(this.#timeouts);
    const commit = req.commit === true;
    let sent: RequestBody | undefined = body;
    if (body instanceof ReadableStream) {
      sent = watchUpload(body, dog, commit, req.onSent);
      dog.awaitUpload();
    } else {
      dog.awaitResponse(commit, body?.byteLength ?? 0);
    }
    if (trace) {
      const length = body instanceof ReadableStream ? "chunked" : body?.byteLength;
      trace(requestTraceLine(method, url, headers, length, this.#client.proxyOf(url)));
    }
    const fail = (e: unknown): NetworkError => {
      if (e instanceof NetworkError) return e;
      const cause = dog.fired ?? e;
      const msg = describeNetworkError(cause);
      trace?.(errorTraceLine(method, url, started, msg));
      // Through a proxy, the failure may be the proxy's: say which one.
      const proxy = this.#client.proxyOf(url);
      const via = proxy === undefined ? "" : ` (through the proxy ${redactUrl(proxy)})`;
      return new NetworkError(
        `${this.name}: ${method} ${redactUrl(url)}: ${msg}${via}`,
        // A permission Deno was not given stays missing: no retry.
        cause instanceof TimeoutError ||
          (!(cause instanceof Deno.errors.NotCapable) && isTransientFailure(msg)),
      );
    };
    let raw;
    try {
      raw = await this.#client.send(method, url, headers, sent, dog.signal);
    } catch (e) {
      dog.pause();
      // A streamed body's own failure (source, verifier) also lands here: upload.ts keeps
      // its own record of that and reports it instead.
      throw fail(e);
    }
    dog.responded();
    if (trace) trace(responseTraceLine(raw.status, method, url, raw.headers, started));
    const watched = raw.body ? watchBody(raw.body, dog, fail) : null;
    return new HttpResponse({ ...raw, body: watched, url, method });
  }

  /** Close the connection pools. Responses not yet consumed must be discarded first. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#client.close();
  }
}
