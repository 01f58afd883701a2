// An HTTP/1.1 client on Deno.connect / Deno.connectTls, with a keep-alive pool.
//
// The registry transport sends every request through this client (unless a proxy is
// configured or TLS verification is off; see transport.ts). Measured against fetch on
// this machine:
//
// - the first fetch() of a process costs 7–11 ms (fetch's own start-up), the first request
//   here 2–4 ms: a copy that finds everything present is mostly start-up;
// - fetch hands out every body chunk as a new buffer; here response bodies are byte
//   streams whose BYOB reads go straight from the socket into the caller's buffer, so a
//   128 MiB download costs 60–70 ms of CPU instead of 90–115 ms and makes no garbage;
// - fetch sends a streamed request body chunked, without Content-Length; here a body can be
//   written by a callback with an exact Content-Length (blob uploads).
//
// What it does:
// - one pool of idle connections per origin; a connection goes back to the pool once its
//   response body has been read to the end and neither side asked to close it;
// - request bodies: none, a Uint8Array, or a writer callback with an exact length;
// - response bodies framed by Content-Length, chunked transfer coding, or the end of the
//   connection; none for HEAD, 1xx, 204 and 304 (1xx answers before the real one are
//   skipped);
// - a reused connection that fails before the first byte of a response (the server closed
//   it while it sat idle) is replaced by a new one and the request sent again, once;
//   never for a streamed body, whose bytes cannot be produced twice;
// - when a streamed upload breaks because the server answered early (401, 413…) and
//   closed, that answer is returned rather than the write error.
// What it does not: proxies, HTTP/2, content codings (we send `accept-encoding: identity`).

export interface Http1TlsOptions {
  caCerts?: string[];
  cert?: string;
  key?: string;
}

/** A request body written as it is produced: exactly `length` bytes through `write`. */
export interface StreamedBody {
  length: number;
  write: (write: (chunk: Uint8Array) => Promise<void>) => Promise<void>;
}

export interface Http1Response {
  status: number;
  statusText: string;
  headers: Headers;
  /** null when the response has no body (HEAD, 204, 304). */
  body: ReadableStream<Uint8Array> | null;
}

/** The request failed below HTTP: connect, TLS, reset, a malformed or cut-off response. */
export class Http1Error extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "Http1Error";
  }
}

/** The streamed body's own callback failed (the source or a verifier): not the network. */
export class BodyCallbackError extends Error {
  constructor(readonly original: unknown) {
    super(String((original as Error)?.message ?? original));
  }
}

const CRLF = "\r\n";
const encoder = new TextEncoder();
const HEAD_BUFFER = 16 * 1024;
const MAX_HEAD = 64 * 1024;
/** Bodies up to this size go out in the same write as the request head. */
const COALESCE_BODY = 64 * 1024;
const MAX_IDLE_PER_ORIGIN = 32;

/** Bytes as a string of code points 0–255 (HTTP heads are not UTF-8). */
function latin1(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    s += String.fromCharCode(...bytes.subarray(i, i + 8192));
  }
  return s;
}

function errorText(e: unknown): string {
  return String((e as Error)?.message ?? e);
}

class Connection {
  readonly origin: string;
  readonly #conn: Deno.Conn;
  #buf = new Uint8Array(HEAD_BUFFER);
  #start = 0;
  #end = 0;
  closed = false;
  /** It served a request before this one. */
  reused = false;
  /** Bytes of the current response seen (decides whether a failure may be retried). */
  received = 0;

  constructor(origin: string, conn: Deno.Conn) {
    this.origin = origin;
    this.#conn = conn;
  }

  async write(data: Uint8Array): Promise<void> {
    let off = 0;
    while (off < data.length) off += await this.#conn.write(data.subarray(off));
  }

  /** Read more bytes into the head buffer; false at the end of the connection. */
  async #fill(): Promise<boolean> {
    if (this.#start > 0 && this.#start === this.#end) this.#start = this.#end = 0;
    if (this.#end === this.#buf.length) {
      if (this.#start > 0) {
        this.#buf.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      } else {
        if (this.#buf.length >= MAX_HEAD) throw new Http1Error("response head too large");
        const bigger = new Uint8Array(this.#buf.length * 2);
        bigger.set(this.#buf.subarray(0, this.#end));
        this.#buf = bigger;
      }
    }
    const n = await this.#conn.read(this.#buf.subarray(this.#end));
    if (n === null) return false;
    this.#end += n;
    this.received += n;
    return true;
  }

  /** One line without its CRLF (a bare LF is accepted too). */
  async readLine(): Promise<string> {
    for (let scanned = this.#start;;) {
      const i = this.#buf.subarray(scanned, this.#end).indexOf(10);
      if (i !== -1) {
        const lf = scanned + i;
        const line = this.#buf.subarray(
          this.#start,
          lf > this.#start && this.#buf[lf - 1] === 13 ? lf - 1 : lf,
        );
        this.#start = lf + 1;
        return latin1(line);
      }
      scanned = this.#end;
      const before = this.#start;
      if (!(await this.#fill())) {
        throw new Http1Error("connection closed in the middle of a response");
      }
      scanned -= before - this.#start; // the buffer may have been compacted
    }
  }

  /** Status line and headers of the next final (non-1xx) response. */
  async readHead(): Promise<
    { status: number; statusText: string; headers: Headers; close: boolean }
  > {
    for (;;) {
      let size = 0;
      const statusLine = await this.readLine();
      const m = /^HTTP\/1\.([01]) (\d{3})(?: (.*))?$/.exec(statusLine);
      if (!m) {
        throw new Http1Error(
          `malformed response status line: ${JSON.stringify(statusLine.slice(0, 80))}`,
        );
      }
      const headers = new Headers();
      for (;;) {
        const line = await this.readLine();
        if (line === "") break;
        size += line.length;
        if (size > MAX_HEAD) throw new Http1Error("response head too large");
        const colon = line.indexOf(":");
        if (colon <= 0) continue; // not a header line: ignored, as lenient clients do
        try {
          headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
        } catch {
          // a header name or value Headers refuses: left out
        }
      }
      const status = Number(m[2]);
      if (status >= 100 && status < 200 && status !== 101) continue;
      const connection = (headers.get("connection") ?? "").toLowerCase();
      const close = m[1] === "0"
        ? !/\bkeep-alive\b/.test(connection)
        : /\bclose\b/.test(connection);
      return { status, statusText: m[3] ?? "", headers, close };
    }
  }

  /**
   * Up to `view.length` body bytes into `view`: what is buffered first, else straight from
   * the socket. 0 only at the end of the connection.
   */
  async readInto(view: Uint8Array): Promise<number> {
    const buffered = this.#end - this.#start;
    if (buffered > 0) {
      const n = Math.min(buffered, view.length);
      view.set(this.#buf.subarray(this.#start, this.#start + n));
      this.#start += n;
      return n;
    }
    const n = await this.#conn.read(view);
    if (n === null) return 0;
    this.received += n;
    return n;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }
}

type Framing =
  | { kind: "none" }
  | { kind: "length"; left: number }
  | { kind: "chunked"; left: number; started: boolean; ended: boolean }
  | { kind: "close" };

export class Http1Client {
  readonly #tls?: Http1TlsOptions;
  readonly #idle = new Map<string, Connection[]>();
  readonly #live = new Set<Connection>();
  #closed = false;

  constructor(opts: { tls?: Http1TlsOptions } = {}) {
    this.#tls = opts.tls;
  }

  async #connect(url: URL, origin: string): Promise<Connection> {
    const https = url.protocol === "https:";
    const port = Number(url.port || (https ? 443 : 80));
    const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
    let conn: Deno.Conn;
    try {
      if (https) {
        const tls = this.#tls ?? {};
        const tlsConn = await Deno.connectTls({
          hostname,
          port,
          caCerts: tls.caCerts?.length ? tls.caCerts : undefined,
          alpnProtocols: ["http/1.1"],
          ...(tls.cert && tls.key ? { cert: tls.cert, key: tls.key } : {}),
        });
        // Handshake now, so certificate problems surface as connect errors.
        await tlsConn.handshake();
        conn = tlsConn;
      } else {
        conn = await Deno.connect({ hostname, port });
      }
    } catch (e) {
      throw new Http1Error(errorText(e), { cause: e });
    }
    if (!https) {
      try {
        (conn as Deno.TcpConn).setNoDelay(true);
      } catch { /* not a TCP socket */ }
    }
    const c = new Connection(origin, conn);
    this.#live.add(c);
    return c;
  }

  /** Connect, but give up at once (closing the late connection) when `signal` aborts. */
  #connectUnlessAborted(url: URL, origin: string, signal?: AbortSignal): Promise<Connection> {
    const connecting = this.#connect(url, origin);
    if (!signal) return connecting;
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        reject(signal.reason);
        connecting.then((c) => this.#discard(c), () => {});
      };
      signal.addEventListener("abort", onAbort, { once: true });
      connecting.then(
        (c) => {
          signal.removeEventListener("abort", onAbort);
          if (signal.aborted) this.#discard(c);
          else resolve(c);
        },
        (e) => {
          signal.removeEventListener("abort", onAbort);
          reject(e);
        },
      );
    });
  }

  #takeIdle(origin: string): Connection | undefined {
    const list = this.#idle.get(origin);
    while (list?.length) {
      const c = list.pop()!;
      if (!c.closed) return c;
    }
    return undefined;
  }

  #release(c: Connection, reusable: boolean): void {
    if (!reusable || this.#closed || c.closed) {
      c.close();
      this.#live.delete(c);
      return;
    }
    c.reused = true;
    let list = this.#idle.get(c.origin);
    if (!list) this.#idle.set(c.origin, list = []);
    if (list.length >= MAX_IDLE_PER_ORIGIN) {
      c.close();
      this.#live.delete(c);
      return;
    }
    list.push(c);
  }

  #discard(c: Connection): void {
    c.close();
    this.#live.delete(c);
  }

  /**
   * Send one request and return once the response head is in; the body (if any) is a byte
   * stream that must be read to the end or cancelled. `signal` aborts the wait for the head.
   */
  async request(
    method: string,
    url: URL,
    headers: Iterable<[string, string]>,
    body?: Uint8Array | StreamedBody,
    signal?: AbortSignal,
  ): Promise<Http1Response> {
    if (this.#closed) throw new Http1Error("client is closed");
    const origin = url.origin;
    const streamed = body !== undefined && !(body instanceof Uint8Array);
    const lines = [`${method} ${url.pathname}${url.search} HTTP/1.1`, `host: ${url.host}`];
    for (const [k, v] of headers) {
      const lower = k.toLowerCase();
      if (lower === "host" || lower === "content-length" || lower === "connection") continue;
      if (lower === "transfer-encoding") continue;
      if (/[\r\n]/.test(k) || /[\r\n]/.test(v)) throw new Http1Error(`invalid header ${k}`);
      lines.push(`${k}: ${v}`);
    }
    const length = body === undefined ? undefined : body.length;
    if (length !== undefined || (method !== "GET" && method !== "HEAD")) {
      lines.push(`content-length: ${length ?? 0}`);
    }
    lines.push("", "");
    let head = encoder.encode(lines.join(CRLF));
    if (body instanceof Uint8Array && body.length > 0 && body.length <= COALESCE_BODY) {
      const both = new Uint8Array(head.length + body.length);
      both.set(head);
      both.set(body, head.length);
      head = both;
    }

    for (let attempt = 0;; attempt++) {
      if (signal?.aborted) throw signal.reason;
      const idle = streamed || attempt > 0 ? undefined : this.#takeIdle(origin);
      const conn = idle ?? (await this.#connectUnlessAborted(url, origin, signal));
      conn.received = 0;
      const abort = () => this.#discard(conn);
      signal?.addEventListener("abort", abort, { once: true });
      let writeError: unknown;
      try {
        try {
          await conn.write(head);
          if (body instanceof Uint8Array && body.length > COALESCE_BODY) await conn.write(body);
          if (streamed) await this.#writeStreamed(conn, body as StreamedBody);
        } catch (e) {
          if (e instanceof BodyCallbackError) throw e;
          // The server may have answered early (401, 413…) and closed: try to read it.
          writeError = e;
        }
        let res;
        try {
          res = await conn.readHead();
        } catch (e) {
          throw writeError ?? e;
        }
        if (writeError !== undefined && res.status < 400) throw writeError;
        signal?.removeEventListener("abort", abort);
        return this.#response(conn, method, res, writeError !== undefined);
      } catch (e) {
        signal?.removeEventListener("abort", abort);
        this.#discard(conn);
        if (signal?.aborted) throw signal.reason;
        if (e instanceof BodyCallbackError) throw e.original;
        if (idle && conn.received === 0 && !streamed) continue; // stale keep-alive connection
        if (e instanceof Http1Error) throw e;
        throw new Http1Error(errorText(e), { cause: e });
      }
    }
  }

  async #writeStreamed(conn: Connection, body: StreamedBody): Promise<void> {
    let sent = 0;
    try {
      await body.write(async (chunk) => {
        if (sent + chunk.length > body.length) {
          throw new Error("request body longer than its Content-Length");
        }
        try {
          await conn.write(chunk);
        } catch (e) {
          throw new NetworkWriteError(e);
        }
        sent += chunk.length;
      });
    } catch (e) {
      if (e instanceof NetworkWriteError) throw e.cause;
      throw new BodyCallbackError(e);
    }
    if (sent !== body.length) {
      // The caller's own mistake, not the network's: not an Http1Error (never retried).
      throw new BodyCallbackError(
        new Error(`request body ended at ${sent} of ${body.length} bytes`),
      );
    }
  }

  #response(
    conn: Connection,
    method: string,
    head: { status: number; statusText: string; headers: Headers; close: boolean },
    mustClose: boolean,
  ): Http1Response {
    const { status, headers } = head;
    let framing: Framing;
    const te = headers.get("transfer-encoding");
    const cl = headers.get("content-length");
    if (method === "HEAD" || status === 204 || status === 304) {
      framing = { kind: "none" };
    } else if (te !== null && /(^|,)\s*chunked\s*$/i.test(te)) {
      framing = { kind: "chunked", left: 0, started: false, ended: false };
    } else if (te === null && cl !== null && /^\d+$/.test(cl.trim())) {
      framing = { kind: "length", left: Number(cl.trim()) };
    } else {
      framing = { kind: "close" };
    }
    const reusable = !head.close && !mustClose && framing.kind !== "close";
    const base = { status, statusText: head.statusText, headers };
    if (framing.kind === "none" || (framing.kind === "length" && framing.left === 0)) {
      this.#release(conn, reusable);
      return { ...base, body: framing.kind === "none" ? null : emptyStream() };
    }
    let finished = false;
    const finish = (ok: boolean) => {
      if (finished) return;
      finished = true;
      if (ok) this.#release(conn, reusable);
      else this.#discard(conn);
    };
    const f = framing;
    const next = async (view: Uint8Array): Promise<number> => {
      if (f.kind === "length") {
        const n = await conn.readInto(view.subarray(0, Math.min(view.length, f.left)));
        if (n === 0) throw new Http1Error("connection closed before the end of the body");
        f.left -= n;
        if (f.left === 0) finish(true);
        return n;
      }
      if (f.kind === "chunked") {
        while (f.left === 0) {
          if (f.ended) return 0;
          if (f.started) {
            if ((await conn.readLine()) !== "") throw new Http1Error("malformed chunked body");
          }
          f.started = true;
          const sizeLine = (await conn.readLine()).split(";")[0].trim();
          if (!/^[0-9a-fA-F]{1,15}$/.test(sizeLine)) {
            throw new Http1Error("malformed chunk size in chunked body");
          }
          const size = parseInt(sizeLine, 16);
          if (size === 0) {
            while ((await conn.readLine()) !== ""); // trailers: ignored
            f.ended = true;
            finish(true);
            return 0;
          }
          f.left = size;
        }
        const n = await conn.readInto(view.subarray(0, Math.min(view.length, f.left)));
        if (n === 0) throw new Http1Error("connection closed before the end of the body");
        f.left -= n;
        return n;
      }
      // Until the connection ends.
      const n = await conn.readInto(view);
      if (n === 0) finish(false);
      return n;
    };
    const stream: ReadableStream<Uint8Array> = new ReadableStream({
      type: "bytes",
      autoAllocateChunkSize: 64 * 1024,
      async pull(controller: ReadableByteStreamController) {
        const req = controller.byobRequest!;
        const view = req.view as Uint8Array;
        let n: number;
        try {
          n = finished && f.kind !== "close" ? 0 : await next(view);
        } catch (e) {
          finish(false);
          controller.error(
            e instanceof Http1Error ? e : new Http1Error(errorText(e), { cause: e }),
          );
          return;
        }
        if (n === 0) {
          controller.close();
          req.respond(0);
        } else {
          req.respond(n);
        }
      },
      cancel() {
        finish(false);
      },
    });
    return { ...base, body: stream };
  }

  /** Close every connection, idle or in use. */
  close(): void {
    this.#closed = true;
    for (const c of this.#live) c.close();
    this.#live.clear();
    this.#idle.clear();
  }
}

/** A write to the socket failed inside the body callback (the network, not the source). */
class NetworkWriteError extends Error {
  constructor(override readonly cause: unknown) {
    super(errorText(cause));
  }
}

function emptyStream(): ReadableStream<Uint8Array> {
  return new ReadableStream({ type: "bytes", start: (c) => c.close() });
}
