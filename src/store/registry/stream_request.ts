// One HTTP/1.1 request whose body is streamed with an exact Content-Length.
//
// Deno's fetch either takes a sized body (a Uint8Array it copies: 16 MiB chunks cost 16 MiB
// of external memory each until the garbage collector runs, which measured 130–500 MiB of
// RSS for a 512 MiB push) or a stream (which it sends chunked, without Content-Length, which
// the distribution spec and many registries and proxies want). Uploads therefore write the
// request themselves on a TCP (or TLS) connection: headers, then the body straight from the
// caller's reusable buffers. Memory stays at a few MiB whatever the blob size, and a whole
// blob can go up in one request, as fast as curl.
//
// Scope: requests without redirects (upload PATCH/PUT; the registry's Location is already
// resolved), `Connection: close` (one connection per request; uploads are few and large),
// responses read whole up to a cap. Everything else goes through fetch.

export interface StreamRequestOptions {
  method: string;
  url: URL;
  /** Header names in any case; Host, Content-Length and Connection are set here. */
  headers: Record<string, string>;
  contentLength: number;
  /** Writes exactly `contentLength` bytes through `write`. */
  body: (write: (chunk: Uint8Array) => Promise<void>) => Promise<void>;
  /** TLS settings for https URLs. */
  tls?: { caCerts?: string[]; cert?: string; key?: string };
  /** Response bodies larger than this are cut (error bodies are small). */
  maxResponseBody?: number;
  signal?: AbortSignal;
}

export interface StreamResponse {
  status: number;
  statusText: string;
  headers: Headers;
  body: Uint8Array;
}

const CRLF = "\r\n";
const encoder = new TextEncoder();

/** Raised when the connection failed before a response could be read. */
export class StreamRequestError extends Error {}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

export async function streamRequest(opts: StreamRequestOptions): Promise<StreamResponse> {
  const { url } = opts;
  const https = url.protocol === "https:";
  const port = Number(url.port || (https ? 443 : 80));
  const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
  let conn: Deno.Conn;
  try {
    conn = https
      ? await Deno.connectTls({
        hostname,
        port,
        caCerts: opts.tls?.caCerts,
        ...(opts.tls?.cert && opts.tls?.key ? { cert: opts.tls.cert, key: opts.tls.key } : {}),
      })
      : await Deno.connect({ hostname, port });
  } catch (e) {
    throw new StreamRequestError((e as Error).message);
  }
  const abort = () => {
    try {
      conn.close();
    } catch { /* closed */ }
  };
  opts.signal?.addEventListener("abort", abort, { once: true });
  try {
    const lines = [`${opts.method} ${url.pathname}${url.search} HTTP/1.1`, `Host: ${url.host}`];
    for (const [k, v] of Object.entries(opts.headers)) {
      const lower = k.toLowerCase();
      if (lower === "host" || lower === "content-length" || lower === "connection") continue;
      if (/[\r\n]/.test(k) || /[\r\n]/.test(v)) throw new StreamRequestError("invalid header");
      lines.push(`${k}: ${v}`);
    }
    lines.push(`Content-Length: ${opts.contentLength}`, "Connection: close", "", "");
    let sent = 0;
    let writeError: unknown;
    const write = async (data: Uint8Array) => {
      try {
        await writeAll(conn, data);
      } catch (e) {
        writeError = e;
        throw e;
      }
    };
    try {
      await write(encoder.encode(lines.join(CRLF)));
      await opts.body(async (chunk) => {
        if (sent + chunk.length > opts.contentLength) {
          throw new StreamRequestError("body longer than its Content-Length");
        }
        await write(chunk);
        sent += chunk.length;
      });
      if (sent !== opts.contentLength) {
        throw new StreamRequestError(`body ended at ${sent} of ${opts.contentLength} bytes`);
      }
    } catch (e) {
      // The body itself failed (the source broke, the verifier refused): the server is still
      // waiting for bytes and will never answer; give up on this connection at once.
      if (writeError === undefined) throw e;
      // The socket failed: the server may have answered early (401, 413…) and closed.
      writeError = e;
    }
    let response: StreamResponse | undefined;
    try {
      response = await readResponse(conn, opts.maxResponseBody ?? 1024 * 1024);
    } catch (e) {
      if (writeError) throw writeError;
      throw e;
    }
    if (writeError && !(response.status >= 400)) throw writeError;
    return response;
  } finally {
    opts.signal?.removeEventListener("abort", abort);
    abort();
  }
}

/** Read a status line, headers and a body (Content-Length, chunked, or until close). */
async function readResponse(conn: Deno.Conn, maxBody: number): Promise<StreamResponse> {
  const buf = new Uint8Array(64 * 1024);
  let data = new Uint8Array(0);
  const more = async (): Promise<boolean> => {
    const n = await conn.read(buf);
    if (n === null) return false;
    const next = new Uint8Array(data.length + n);
    next.set(data);
    next.set(buf.subarray(0, n), data.length);
    data = next;
    return true;
  };
  let headEnd = -1;
  while ((headEnd = indexOfCrlfCrlf(data)) === -1) {
    if (data.length > 64 * 1024) throw new StreamRequestError("response headers too large");
    if (!(await more())) throw new StreamRequestError("connection closed before a response");
  }
  const head = new TextDecoder().decode(data.subarray(0, headEnd)).split(CRLF);
  const status = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(head[0]);
  if (!status) throw new StreamRequestError("malformed response status line");
  const headers = new Headers();
  for (const line of head.slice(1)) {
    const i = line.indexOf(":");
    if (i > 0) headers.append(line.slice(0, i).trim(), line.slice(i + 1).trim());
  }
  const start = headEnd + 4;
  const code = Number(status[1]);
  let body: Uint8Array;
  const length = headers.get("content-length");
  if (code === 204 || code === 304 || (code >= 100 && code < 200)) {
    body = new Uint8Array(0);
  } else if (length !== null && /^\d+$/.test(length)) {
    const want = Math.min(Number(length), maxBody);
    while (data.length - start < want && (await more()));
    body = data.slice(start, start + want);
  } else {
    // Chunked or until close: small error bodies only; read to the end or the cap.
    while (data.length - start < maxBody && (await more()));
    const raw = data.subarray(start, start + maxBody);
    body = /chunked/i.test(headers.get("transfer-encoding") ?? "")
      ? dechunk(raw, maxBody)
      : raw.slice();
  }
  return { status: code, statusText: status[2] ?? "", headers, body };
}

function indexOfCrlfCrlf(d: Uint8Array): number {
  for (let i = 0; i + 3 < d.length; i++) {
    if (d[i] === 13 && d[i + 1] === 10 && d[i + 2] === 13 && d[i + 3] === 10) return i;
  }
  return -1;
}

function dechunk(d: Uint8Array, max: number): Uint8Array {
  const out: number[] = [];
  let i = 0;
  while (i < d.length && out.length < max) {
    let j = i;
    while (j + 1 < d.length && !(d[j] === 13 && d[j + 1] === 10)) j++;
    const size = parseInt(new TextDecoder().decode(d.subarray(i, j)).split(";")[0], 16);
    if (!Number.isFinite(size) || size === 0) break;
    const start = j + 2;
    for (let k = start; k < start + size && k < d.length; k++) out.push(d[k]);
    i = start + size + 2;
  }
  return Uint8Array.from(out.slice(0, max));
}
