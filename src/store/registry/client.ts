// The HTTP client under the transport: Deno's fetch (hyper + rustls; HTTP/2 where the
// registry offers it; connection pooling; CA roots, client certificates and proxies through
// Deno.createHttpClient). Framing, pooling and TLS are the platform's; nothing here parses
// HTTP.
//
// Two things fetch cannot do go through node:https (Deno's implementation), loaded only then:
// - `--tls-verify=false`: fetch has no per-client switch to skip certificate verification
//   (only the process-wide --unsafely-ignore-certificate-errors flag);
// - a pinned self-signed certificate (tls.ts): rustls refuses a CA certificate presented as
//   the server's own. The connection is made without chain verification, and before a byte
//   of the request is written the server's certificate must be exactly the pinned one.
// Requests to plain-http URLs (a redirect may lead there) always go through fetch. Proxies
// apply to the fetch path only (a registry on the node:https path with a proxy set for it is
// refused in transport.ts, never connected to around the proxy).
import type { TlsMaterial } from "./tls.ts";
import { proxyFor } from "./proxy.ts";

/** A response as the client returns it; the body is the caller's to read or cancel. */
export interface RawResponse {
  status: number;
  statusText: string;
  headers: Headers;
  body: ReadableStream<Uint8Array> | null;
}

/** A sized body (sent with Content-Length) or a stream (sent chunked). */
export type RequestBody = Uint8Array | ReadableStream<Uint8Array>;

/** One HTTP exchange at a time per call; connections are pooled by the implementation. */
export interface HttpClient {
  /**
   * Send one request, never following redirects. Rejects on network failures and when
   * `signal` aborts (with its reason, or an AbortError); the response body is then cut too.
   */
  send(
    method: string,
    url: URL,
    headers: Headers,
    body: RequestBody | undefined,
    signal: AbortSignal,
  ): Promise<RawResponse>;
  /** The proxy a request to `url` goes through, for traces; undefined when direct. */
  proxyOf(url: URL): string | undefined;
  /** Close every pooled connection. */
  close(): void;
}

/** Options of Deno.createHttpClient for a proxy URL (user info becomes basicAuth). */
function proxyOption(proxy: string): Deno.Proxy {
  const u = new URL(proxy);
  const basicAuth = u.username
    ? { username: decodeURIComponent(u.username), password: decodeURIComponent(u.password) }
    : undefined;
  u.username = "";
  u.password = "";
  return basicAuth ? { url: u.href, basicAuth } : { url: u.href };
}

/** fetch with one Deno.HttpClient per proxy choice (most runs: one, direct). */
export class FetchClient implements HttpClient {
  readonly #tls: TlsMaterial;
  readonly #clients = new Map<string, Deno.HttpClient>();

  constructor(tls: TlsMaterial) {
    this.#tls = tls;
  }

  proxyOf(url: URL): string | undefined {
    return proxyFor(url);
  }

  #client(url: URL): Deno.HttpClient {
    const proxy = proxyFor(url) ?? "";
    let client = this.#clients.get(proxy);
    if (!client) {
      const opts: Deno.CreateHttpClientOptions = { caCerts: this.#tls.caCerts };
      if (this.#tls.cert && this.#tls.key) {
        Object.assign(opts, { cert: this.#tls.cert, key: this.#tls.key });
      }
      if (proxy) opts.proxy = proxyOption(proxy);
      client = Deno.createHttpClient(opts);
      this.#clients.set(proxy, client);
    }
    return client;
  }

  send: HttpClient["send"] = async (method, url, headers, body, signal) => {
    const res = await fetch(url, {
      method,
      headers,
      body: body as BodyInit | undefined,
      redirect: "manual",
      client: this.#client(url),
      signal,
    });
    return { status: res.status, statusText: res.statusText, headers: res.headers, body: res.body };
  };

  close(): void {
    for (const c of this.#clients.values()) c.close();
    this.#clients.clear();
  }
}

type NodeModules = {
  https: typeof import("node:https");
  Buffer: typeof import("node:buffer").Buffer;
  Readable: typeof import("node:stream").Readable;
};

/**
 * node:https for TLS without chain verification: everything (`tls.pinned` empty, i.e.
 * --tls-verify=false) or exactly the pinned certificates. Plain-http URLs go to fetch.
 */
export class NodeClient implements HttpClient {
  readonly #agent: import("node:https").Agent;
  readonly #fallback: FetchClient;
  readonly #node: NodeModules;

  /** Load node:https (tens of ms of start-up, so only when needed) and make the client. */
  static async create(tls: TlsMaterial, pinOnly: boolean): Promise<NodeClient> {
    const [https, buffer, stream] = await Promise.all([
      import("node:https"),
      import("node:buffer"),
      import("node:stream"),
    ]);
    return new NodeClient(tls, pinOnly, {
      https,
      Buffer: buffer.Buffer,
      Readable: stream.Readable,
    });
  }

  private constructor(tls: TlsMaterial, pinOnly: boolean, node: NodeModules) {
    this.#node = node;
    this.#fallback = new FetchClient(tls);
    const agent = new node.https.Agent({
      keepAlive: true,
      rejectUnauthorized: false,
      cert: tls.cert,
      key: tls.key,
    });
    if (pinOnly) {
      // Hold every write until the server's certificate is known to be the pinned one.
      const pinned = new Set(tls.pinned);
      const create = agent.createConnection.bind(agent);
      // deno-lint-ignore no-explicit-any
      (agent as any).createConnection = (options: unknown, cb: unknown) => {
        // deno-lint-ignore no-explicit-any
        const socket = (create as any)(options, cb) as import("node:tls").TLSSocket;
        socket.cork();
        socket.once("secureConnect", () => {
          const fingerprint = socket.getPeerCertificate()?.fingerprint256;
          if (fingerprint && pinned.has(fingerprint)) {
            socket.uncork();
          } else {
            socket.destroy(
              new Error(
                `certificate verify failed: the server's certificate is not the pinned ` +
                  `self-signed certificate given with --cacert`,
              ),
            );
          }
        });
        return socket;
      };
    }
    this.#agent = agent;
  }

  proxyOf(url: URL): string | undefined {
    return url.protocol === "https:" ? undefined : this.#fallback.proxyOf(url);
  }

  send: HttpClient["send"] = (method, url, headers, body, signal) => {
    if (url.protocol !== "https:") return this.#fallback.send(method, url, headers, body, signal);
    const { https, Buffer, Readable } = this.#node;
    return new Promise<RawResponse>((resolve, reject) => {
      const outgoing: Record<string, string> = {};
      headers.forEach((v, k) => outgoing[k] = v);
      if (body instanceof Uint8Array) outgoing["content-length"] = String(body.byteLength);
      else if (body) outgoing["transfer-encoding"] = "chunked";
      const req = https.request(
        url,
        { method, headers: outgoing, agent: this.#agent, signal },
        (res) => {
          const h = new Headers();
          const raw = res.rawHeaders;
          for (let i = 0; i + 1 < raw.length; i += 2) h.append(raw[i], raw[i + 1]);
          const status = res.statusCode ?? 0;
          let stream: ReadableStream<Uint8Array> | null = null;
          if (method === "HEAD" || status === 204 || status === 304) res.resume();
          else stream = Readable.toWeb(res) as unknown as ReadableStream<Uint8Array>;
          resolve({ status, statusText: res.statusMessage ?? "", headers: h, body: stream });
        },
      );
      req.on("error", (e) => reject(signal.aborted ? signal.reason : e));
      if (body === undefined) {
        req.end();
      } else if (body instanceof Uint8Array) {
        req.end(Buffer.from(body.buffer, body.byteOffset, body.byteLength));
      } else {
        (async () => {
          const reader = body.getReader();
          try {
            for (;;) {
              const { done, value } = await reader.read();
              if (done) break;
              const buf = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
              if (req.destroyed) break;
              if (!req.write(buf)) {
                await new Promise((r) => {
                  req.once("drain", r);
                  req.once("close", r);
                });
              }
            }
            req.end();
          } catch (e) {
            req.destroy(e as Error);
          }
        })();
      }
    });
  };

  close(): void {
    this.#agent.destroy();
    this.#fallback.close();
  }
}
