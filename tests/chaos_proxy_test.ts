// Tests of the fault-injecting proxy (tests/fixtures/chaos.ts) against a small Deno.serve
// upstream. Each test starts its own upstream and proxy and closes both, and every wait is
// bounded by a watchdog that aborts fetches and closes raw sockets.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { type ChaosProxy, type Rule, startChaosProxy } from "./fixtures/chaos.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const MiB = 1024 * 1024;

/** 1 MiB of deterministic, non-repeating-looking bytes (xorshift32). */
const BLOB = (() => {
  const out = new Uint8Array(MiB);
  let x = 0x12345678;
  for (let i = 0; i < out.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
})();

const sha256 = (b: Uint8Array) => "sha256:" + createHash("sha256").update(b).digest("hex");

const MANIFEST = JSON.stringify({ schemaVersion: 2, mediaType: "application/json", layers: [] });

// ---------------------------------------------------------------------------------------------
// The upstream

interface Upstream {
  url: string;
  /** Every request the upstream received. */
  hits: { method: string; path: string }[];
  close(): Promise<void>;
}

function startUpstream(): Upstream {
  const hits: Upstream["hits"] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const url = new URL(req.url);
    hits.push({ method: req.method, path: url.pathname + url.search });
    switch (url.pathname) {
      case "/blob": {
        // ?bytes=N serves the first N bytes.
        const n = Number(url.searchParams.get("bytes") ?? BLOB.length);
        const body = BLOB.subarray(0, n);
        return new Response(body, {
          headers: {
            "content-type": "application/octet-stream",
            "docker-content-digest": sha256(body),
          },
        });
      }
      case "/manifest":
        return new Response(MANIFEST, {
          headers: {
            "content-type": "application/vnd.oci.image.manifest.v1+json",
            "docker-content-digest": sha256(enc.encode(MANIFEST)),
          },
        });
      case "/echo": {
        // The request body back, with what the upstream saw of its framing.
        const body = new Uint8Array(await req.arrayBuffer());
        return new Response(body, {
          headers: {
            "x-seen-method": req.method,
            "x-seen-content-length": req.headers.get("content-length") ?? "none",
            "x-seen-transfer-encoding": req.headers.get("transfer-encoding") ?? "none",
            "x-seen-digest": sha256(body),
          },
        });
      }
      case "/upload":
        // Distribution answers upload requests with absolute Locations on its own origin.
        return new Response(null, {
          status: 202,
          headers: {
            location: url.searchParams.has("relative")
              ? "/v2/relative/location"
              : `${url.origin}/upload/abc?_state=xyz`,
            "docker-upload-uuid": "abc",
          },
        });
      case "/stream": {
        // A body without Content-Length (sent chunked by Deno.serve).
        let left = 10;
        return new Response(
          new ReadableStream({
            pull(c) {
              if (left-- > 0) c.enqueue(BLOB.slice(0, 10240));
              else c.close();
            },
          }),
        );
      }
      default:
        return new Response("not found\n", { status: 404 });
    }
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    hits,
    close: () => server.shutdown(),
  };
}

// ---------------------------------------------------------------------------------------------
// Harness

interface Scene {
  up: Upstream;
  proxy: ChaosProxy;
  /** Aborted when the test runs too long. */
  signal: AbortSignal;
  /** fetch with a client private to this test, bounded by the watchdog. */
  fetch(url: string, init?: RequestInit): Promise<Response>;
  /** fetch through the proxy, PATH relative to it. */
  get(path: string, init?: RequestInit): Promise<Response>;
  /** A raw connection to the proxy, closed with the scene. */
  raw(): Promise<RawClient>;
}

/** Run `fn` against a fresh upstream and proxy; everything is closed afterwards. */
async function scene(rules: Rule[], fn: (s: Scene) => Promise<void>, limitMs = 5000) {
  const up = startUpstream();
  const proxy = await startChaosProxy(up.url, rules);
  const client = Deno.createHttpClient({});
  const watchdog = new AbortController();
  const raws: RawClient[] = [];
  const timer = setTimeout(() => {
    watchdog.abort(new Error(`test ran longer than ${limitMs} ms`));
    for (const r of raws) r.close();
  }, limitMs);
  const bounded = (url: string, init: RequestInit = {}) =>
    fetch(url, { ...init, client, signal: init.signal ?? watchdog.signal });
  try {
    await fn({
      up,
      proxy,
      signal: watchdog.signal,
      fetch: bounded,
      get: (path, init) => bounded(proxy.url + path, init),
      raw: async () => {
        const r = new RawClient(await Deno.connect({ hostname: "127.0.0.1", port: portOf(proxy) }));
        raws.push(r);
        return r;
      },
    });
  } finally {
    clearTimeout(timer);
    for (const r of raws) r.close();
    client.close();
    await proxy.close();
    await up.close();
  }
}

function portOf(p: ChaosProxy): number {
  return Number(p.host.split(":")[1]);
}

async function bytesOf(res: Response): Promise<Uint8Array> {
  return new Uint8Array(await res.arrayBuffer());
}

interface RawResponse {
  status: number;
  headers: Headers;
  /** The head exactly as received, for checks on framing headers. */
  head: string;
  body: Uint8Array;
  /** The body was complete per its framing (false: the connection ended first). */
  complete: boolean;
}

/** A minimal HTTP/1.1 client on a raw socket, to see exactly what the proxy sends. */
class RawClient {
  #buf = new Uint8Array(0);
  #eof = false;
  #closed = false;
  constructor(readonly conn: Deno.TcpConn) {}

  async send(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? enc.encode(data) : data;
    for (let off = 0; off < bytes.length;) off += await this.conn.write(bytes.subarray(off));
  }

  async #fill(): Promise<boolean> {
    if (this.#eof) return false;
    const chunk = new Uint8Array(64 * 1024);
    let n: number | null;
    try {
      n = await this.conn.read(chunk);
    } catch {
      n = null; // a reset counts as the end of the stream here
    }
    if (n === null) {
      this.#eof = true;
      return false;
    }
    const merged = new Uint8Array(this.#buf.length + n);
    merged.set(this.#buf);
    merged.set(chunk.subarray(0, n), this.#buf.length);
    this.#buf = merged;
    return true;
  }

  #take(n: number): Uint8Array {
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.slice(n);
    return out;
  }

  async #line(): Promise<string | null> {
    for (;;) {
      const i = this.#buf.indexOf(0x0a);
      if (i >= 0) return dec.decode(this.#take(i + 1)).replace(/\r?\n$/, "");
      if (!(await this.#fill())) return null;
    }
  }

  /** Read up to n bytes (fewer at EOF). */
  async #bytes(n: number): Promise<Uint8Array> {
    while (this.#buf.length < n && await this.#fill());
    return this.#take(Math.min(n, this.#buf.length));
  }

  /** Read one response; `head: true` for the answer to a HEAD request; `interim: true` to
   * return a 1xx response instead of skipping it. */
  async response(opts: { head?: boolean; interim?: boolean } = {}): Promise<RawResponse> {
    let head = "";
    for (;;) {
      const line = await this.#line();
      if (line === null) throw new Error(`connection ended inside the response head: ${head}`);
      if (line === "") break;
      head += line + "\r\n";
    }
    const [statusLine, ...fields] = head.trimEnd().split("\r\n");
    const headers = new Headers();
    for (const f of fields) {
      const c = f.indexOf(":");
      headers.append(f.slice(0, c), f.slice(c + 1).trim());
    }
    const status = Number(statusLine.split(" ")[1]);
    if (status < 200 && !opts.interim) return this.response(opts);
    if (opts.head || status < 200) {
      return { status, headers, head, body: new Uint8Array(0), complete: true };
    }
    if (headers.get("transfer-encoding") === "chunked") {
      const parts: Uint8Array[] = [];
      for (;;) {
        const size = await this.#line();
        if (size === null) return { status, headers, head, body: join(parts), complete: false };
        const n = parseInt(size, 16);
        if (n === 0) {
          await this.#line(); // the empty line after the last chunk
          return { status, headers, head, body: join(parts), complete: true };
        }
        const piece = await this.#bytes(n);
        parts.push(piece);
        if (piece.length < n || (await this.#line()) === null) {
          return { status, headers, head, body: join(parts), complete: false };
        }
      }
    }
    const length = Number(headers.get("content-length") ?? NaN);
    if (Number.isFinite(length)) {
      const body = await this.#bytes(length);
      return { status, headers, head, body, complete: body.length === length };
    }
    return { status, headers, head, body: await this.rest(), complete: true };
  }

  /** Everything until the proxy closes the connection. */
  async rest(): Promise<Uint8Array> {
    while (await this.#fill());
    return this.#take(this.#buf.length);
  }

  /** True when the proxy has closed its side (reads return EOF). */
  async ended(): Promise<boolean> {
    return this.#buf.length === 0 && !(await this.#fill());
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }
}

function join(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Tests

Deno.test("chaos proxy: passes requests through unchanged and logs them", async () => {
  await scene([], async ({ proxy, get, raw }) => {
    const res = await get("/blob", { headers: { Authorization: "Bearer t0ken" } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-length"), String(MiB));
    assert.equal(res.headers.get("docker-content-digest"), sha256(BLOB));
    assert.deepEqual(await bytesOf(res), BLOB);

    // HEAD keeps the upstream's Content-Length and sends no body.
    const c = await raw();
    await c.send(`HEAD /blob HTTP/1.1\r\nHost: ${proxy.host}\r\nX-Mixed-Case: One\r\n\r\n`);
    const head = await c.response({ head: true });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("content-length"), String(MiB));

    // A body without Content-Length upstream comes back chunked and whole.
    const streamed = await get("/stream");
    assert.equal(streamed.headers.get("content-length"), null);
    assert.equal((await bytesOf(streamed)).length, 102400);

    assert.deepEqual(proxy.log.map((e) => [e.method, e.path, e.status, e.fault]), [
      ["GET", "/blob", 200, undefined],
      ["HEAD", "/blob", 200, undefined],
      ["GET", "/stream", 200, undefined],
    ]);
    assert.equal(proxy.log[0].requestHeaders.get("authorization"), "Bearer t0ken");
    assert.deepEqual(proxy.log[1].rawHeaders, [["Host", proxy.host], ["X-Mixed-Case", "One"]]);
    assert.equal(proxy.log[1].requestBodyBytes, 0);
  });
});

Deno.test("chaos proxy: keep-alive serves several requests on one connection", async () => {
  await scene([], async ({ proxy, raw }) => {
    const c = await raw();
    await c.send(`GET /manifest HTTP/1.1\r\nHost: ${proxy.host}\r\n\r\n`);
    const first = await c.response();
    assert.equal(first.status, 200);
    assert.equal(dec.decode(first.body), MANIFEST);
    assert.equal(first.headers.get("connection"), null);

    await c.send(`GET /blob?bytes=10 HTTP/1.1\r\nHost: ${proxy.host}\r\n\r\n`);
    const second = await c.response();
    assert.deepEqual(second.body, BLOB.subarray(0, 10));

    // Two pipelined requests, the second asking to close.
    await c.send(
      `GET /blob?bytes=3 HTTP/1.1\r\nHost: x\r\n\r\n` +
        `GET /manifest HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    );
    assert.deepEqual((await c.response()).body, BLOB.subarray(0, 3));
    const last = await c.response();
    assert.equal(last.headers.get("connection"), "close");
    assert.ok(await c.ended());
    assert.equal(proxy.log.length, 4);
  });
});

Deno.test("chaos proxy: reset sends the head and N bytes, then drops the connection", async () => {
  const rules: Rule[] = [{ path: /^\/blob/, times: 2, fault: { kind: "reset", afterBytes: 1000 } }];
  await scene(rules, async ({ proxy, get, raw }) => {
    const res = await get("/blob");
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-length"), String(MiB));
    await assert.rejects(res.arrayBuffer());

    const c = await raw();
    await c.send(`GET /blob HTTP/1.1\r\nHost: x\r\n\r\n`);
    const r = await c.response();
    assert.equal(r.body.length, 1000);
    assert.deepEqual(r.body, BLOB.subarray(0, 1000));
    assert.equal(r.complete, false);
    assert.ok(await c.ended());

    // A negative count drops the connection before the status line.
    proxy.rules.push({ path: /^\/manifest$/, fault: { kind: "reset", afterBytes: -1 } });
    const c2 = await raw();
    await c2.send(`GET /manifest HTTP/1.1\r\nHost: x\r\n\r\n`);
    assert.equal((await c2.rest()).length, 0);
    assert.deepEqual(proxy.log.map((e) => [e.fault, e.status]), [
      ["reset", 200],
      ["reset", 200],
      ["reset", 0],
    ]);
  });
});

Deno.test("chaos proxy: truncate keeps the full Content-Length and sends fewer bytes", async () => {
  const rules: Rule[] = [{
    path: /^\/blob$/,
    times: Infinity,
    fault: { kind: "truncate", afterBytes: 70000 },
  }];
  await scene(rules, async ({ get, raw }) => {
    const c = await raw();
    await c.send(`GET /blob HTTP/1.1\r\nHost: x\r\n\r\n`);
    const r = await c.response();
    assert.equal(r.headers.get("content-length"), String(MiB));
    assert.equal(r.body.length, 70000);
    assert.deepEqual(r.body, BLOB.subarray(0, 70000));
    assert.ok(await c.ended());

    // fetch either rejects or (it must not) hands back a short body.
    const res = await get("/blob");
    assert.equal(res.headers.get("content-length"), String(MiB));
    const got = await bytesOf(res).catch(() => null);
    assert.ok(got === null || got.length < MiB);
  });
});

Deno.test("chaos proxy: status faults answer without contacting the upstream", async () => {
  const rules: Rule[] = [
    { path: /^\/manifest$/, fault: { kind: "status", status: 503 } },
    {
      path: /^\/blob/,
      fault: {
        kind: "status",
        status: 429,
        headers: { "Retry-After": "2", "Content-Type": "text/html" },
        body: "<html><body>slow down</body></html>",
      },
    },
  ];
  await scene(rules, async ({ up, proxy, get }) => {
    const r503 = await get("/manifest");
    assert.equal(r503.status, 503);
    assert.match(await r503.text(), /503/);

    const r429 = await get("/blob");
    assert.equal(r429.status, 429);
    assert.equal(r429.headers.get("retry-after"), "2");
    assert.equal(r429.headers.get("content-type"), "text/html");
    assert.equal(await r429.text(), "<html><body>slow down</body></html>");
    assert.equal(up.hits.length, 0);

    // Spent rules let the next requests through.
    const ok = await get("/manifest");
    assert.equal(await ok.text(), MANIFEST);
    assert.equal(up.hits.length, 1);
    assert.deepEqual(proxy.log.map((e) => [e.status, e.fault]), [
      [503, "status"],
      [429, "status"],
      [200, undefined],
    ]);
  });
});

Deno.test("chaos proxy: trickle slows the body down and keeps its bytes", async () => {
  const rules: Rule[] = [{
    path: /^\/blob/,
    fault: { kind: "trickle", bytesPerChunk: 16384, delayMs: 50 },
  }];
  await scene(rules, async ({ get }) => {
    const t0 = performance.now();
    const res = await get("/blob?bytes=65536");
    const body = await bytesOf(res);
    const elapsed = performance.now() - t0;
    assert.deepEqual(body, BLOB.subarray(0, 65536));
    // Four pieces, a 50 ms pause before each but the first.
    assert.ok(elapsed >= 140, `took only ${elapsed} ms`);
    assert.ok(elapsed < 2000, `took ${elapsed} ms`);
  });
});

Deno.test("chaos proxy: flip changes exactly one body byte", async () => {
  // Offsets at the start, past the first read, and at the very end of the body.
  const offsets = [0, 65536 + 3, MiB - 1];
  const rules: Rule[] = offsets.map((offset) => ({
    path: new RegExp(`^/blob\\?o=${offset}$`),
    fault: { kind: "flip", offset },
  }));
  await scene(rules, async ({ get }) => {
    for (const offset of offsets) {
      const res = await get(`/blob?o=${offset}`);
      assert.equal(res.headers.get("docker-content-digest"), sha256(BLOB));
      const body = await bytesOf(res);
      assert.equal(body.length, MiB);
      const diffs = [];
      for (let i = 0; i < body.length; i++) if (body[i] !== BLOB[i]) diffs.push(i);
      assert.deepEqual(diffs, [offset]);
      assert.equal(body[offset], BLOB[offset] ^ 0xff);
    }
  });
});

Deno.test("chaos proxy: redirect lands on the second origin, which records headers", async () => {
  const rules: Rule[] = [
    { path: /^\/blob\?x=1$/, times: 3, fault: { kind: "redirect" } },
    { path: /^\/manifest$/, fault: { kind: "redirect", status: 302 } },
  ];
  await scene(rules, async ({ up, proxy, get, fetch }) => {
    const auth = { Authorization: "Bearer secret" };
    const res = await get("/blob?x=1", { headers: auth, redirect: "manual" });
    assert.equal(res.status, 307);
    const location = res.headers.get("location");
    assert.equal(location, proxy.secondOrigin.url + "/blob?x=1");
    await res.body?.cancel();
    assert.equal(up.hits.length, 0); // the proxy itself did not ask the upstream

    // Following it by hand without credentials: same bytes, no Authorization recorded.
    const followed = await fetch(location!);
    assert.deepEqual(await bytesOf(followed), BLOB);
    assert.equal(proxy.secondOrigin.requests[0].headers.get("authorization"), null);

    // With credentials, the recorder shows them.
    const leaky = await fetch(location!, { headers: auth });
    await leaky.body?.cancel();
    assert.equal(proxy.secondOrigin.requests[1].headers.get("authorization"), "Bearer secret");

    // fetch following on its own drops Authorization on the cross-origin hop.
    const auto = await get("/blob?x=1", { headers: auth });
    assert.deepEqual(await bytesOf(auto), BLOB);
    assert.equal(proxy.secondOrigin.requests[2].headers.get("authorization"), null);

    const r302 = await get("/manifest", { redirect: "manual" });
    assert.equal(r302.status, 302);
    assert.equal(r302.headers.get("location"), proxy.secondOrigin.url + "/manifest");
    await r302.body?.cancel();
    assert.deepEqual(proxy.secondOrigin.requests.map((r) => r.path), [
      "/blob?x=1",
      "/blob?x=1",
      "/blob?x=1",
    ]);
  });
});

Deno.test("chaos proxy: body replacement adjusts Content-Length", async () => {
  const huge = new Uint8Array(5 * MiB).fill(0x20);
  const rules: Rule[] = [
    { path: /^\/manifest$/, fault: { kind: "body", body: "{not json", contentType: "text/html" } },
    { path: /^\/manifest$/, fault: { kind: "body", body: huge } },
  ];
  await scene(rules, async ({ get }) => {
    const bad = await get("/manifest");
    assert.equal(bad.status, 200);
    assert.equal(bad.headers.get("content-length"), "9");
    assert.equal(bad.headers.get("content-type"), "text/html");
    // The upstream's digest header stays, so it no longer matches.
    assert.equal(bad.headers.get("docker-content-digest"), sha256(enc.encode(MANIFEST)));
    assert.equal(await bad.text(), "{not json");

    const big = await get("/manifest");
    assert.equal(big.headers.get("content-length"), String(5 * MiB));
    assert.equal(big.headers.get("content-type"), "application/vnd.oci.image.manifest.v1+json");
    assert.equal((await bytesOf(big)).length, 5 * MiB);
  });
});

Deno.test("chaos proxy: header faults set, remove and reframe", async () => {
  const wrong = "sha256:" + "0".repeat(64);
  const rules: Rule[] = [
    {
      path: /^\/manifest$/,
      fault: { kind: "headers", set: { "Docker-Content-Digest": wrong }, remove: ["Content-Type"] },
    },
    // Without Content-Length the proxy sends the body chunked.
    { path: /^\/blob$/, fault: { kind: "headers", set: {}, remove: ["content-length"] } },
    // A shorter Content-Length cuts the body; the connection stays usable.
    { path: /^\/blob\?bytes=100$/, fault: { kind: "headers", set: { "Content-Length": "10" } } },
  ];
  await scene(rules, async ({ get, raw }) => {
    const res = await get("/manifest");
    assert.equal(res.headers.get("docker-content-digest"), wrong);
    assert.equal(res.headers.get("content-type"), null);
    assert.equal(await res.text(), MANIFEST);

    const c = await raw();
    await c.send(`GET /blob HTTP/1.1\r\nHost: x\r\n\r\n`);
    const chunked = await c.response();
    assert.equal(chunked.headers.get("content-length"), null);
    assert.equal(chunked.headers.get("transfer-encoding"), "chunked");
    assert.ok(chunked.complete);
    assert.deepEqual(chunked.body, BLOB);

    await c.send(`GET /blob?bytes=100 HTTP/1.1\r\nHost: x\r\n\r\n`);
    const cut = await c.response();
    assert.equal(cut.headers.get("content-length"), "10");
    assert.deepEqual(cut.body, BLOB.subarray(0, 10));
    await c.send(`GET /blob?bytes=5 HTTP/1.1\r\nHost: x\r\n\r\n`);
    assert.deepEqual((await c.response()).body, BLOB.subarray(0, 5));
  });
});

Deno.test("chaos proxy: times, skip, method filters and rules pushed later", async () => {
  const rules: Rule[] = [
    {
      method: "get",
      path: /^\/manifest$/,
      skip: 1,
      times: 2,
      fault: { kind: "status", status: 500 },
    },
    // Reached by the requests the first rule skips or no longer fires for.
    { method: "GET", path: /^\/manifest$/, skip: 2, fault: { kind: "status", status: 502 } },
  ];
  await scene(rules, async ({ proxy, get }) => {
    const statuses = async (n: number, method = "GET") => {
      const out = [];
      for (let i = 0; i < n; i++) {
        const res = await get("/manifest", { method });
        await res.body?.cancel();
        out.push(res.status);
      }
      return out;
    };
    assert.deepEqual(await statuses(2, "HEAD"), [200, 200]); // method does not match
    // 1st: skipped by rule 1, skipped by rule 2 (1 of 2); 2nd, 3rd: rule 1;
    // 4th: rule 1 spent, skipped by rule 2 (2 of 2); 5th: rule 2; then nothing.
    assert.deepEqual(await statuses(6), [200, 500, 500, 200, 502, 200]);

    proxy.rules.push({
      path: /manifest/g,
      times: Infinity,
      fault: { kind: "status", status: 503 },
    });
    assert.deepEqual(await statuses(3), [503, 503, 503]);
    proxy.rules = [];
    assert.deepEqual(await statuses(1), [200]);
  });
});

Deno.test("chaos proxy: request bodies are forwarded with their framing logged", async () => {
  await scene([], async ({ proxy, get, raw }) => {
    // Content-Length bodies go upstream with the same Content-Length.
    const payload = BLOB.slice(0, 300 * 1024);
    const put = await get("/echo?put", { method: "PUT", body: payload });
    assert.equal(put.headers.get("x-seen-content-length"), String(payload.length));
    assert.equal(put.headers.get("x-seen-transfer-encoding"), "none");
    assert.deepEqual(await bytesOf(put), payload);
    const putLog = proxy.log.at(-1)!;
    assert.equal(putLog.requestHeaders.get("content-length"), String(payload.length));
    assert.equal(putLog.requestHeaders.get("transfer-encoding"), null);
    assert.equal(putLog.requestBodyBytes, payload.length);

    // A chunked PATCH (chunk extension and trailer included) is streamed upstream.
    const c = await raw();
    await c.send(
      "PATCH /echo?chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
        "5;ext=1\r\nhello\r\n1\r\n \r\n",
    );
    await c.send("5\r\nworld\r\n0\r\nX-Trailer: 1\r\n\r\n");
    const echoed = await c.response();
    assert.equal(dec.decode(echoed.body), "hello world");
    assert.equal(echoed.headers.get("x-seen-transfer-encoding"), "chunked");
    const patchLog = proxy.log.at(-1)!;
    assert.equal(patchLog.method, "PATCH");
    assert.equal(patchLog.requestHeaders.get("transfer-encoding"), "chunked");
    assert.equal(patchLog.requestHeaders.get("content-length"), null);
    assert.equal(patchLog.requestBodyBytes, 11);

    // fetch with a stream body uses chunked encoding: the log shows it.
    const streamed = await get("/echo?stream", {
      method: "PATCH",
      body: ReadableStream.from([enc.encode("ab"), enc.encode("cd")]),
    });
    assert.equal(await streamed.text(), "abcd");
    assert.equal(proxy.log.at(-1)!.requestHeaders.get("transfer-encoding"), "chunked");
    assert.equal(proxy.log.at(-1)!.requestHeaders.get("content-length"), null);

    // Expect: 100-continue is answered before the body is read.
    await c.send(
      "PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    );
    assert.equal((await c.response({ interim: true })).status, 100);
    await c.send("xyz");
    assert.equal(dec.decode((await c.response()).body), "xyz");
  });
});

Deno.test("chaos proxy: a faulted request's body is drained and the connection reused", async () => {
  const rules: Rule[] = [{
    method: "PUT",
    path: /^\/echo/,
    fault: { kind: "status", status: 500 },
  }];
  await scene(rules, async ({ up, proxy, raw }) => {
    const c = await raw();
    await c.send("PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n");
    await c.send(BLOB.subarray(0, 100000));
    assert.equal((await c.response()).status, 500);
    await c.send("PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok");
    const second = await c.response();
    assert.equal(dec.decode(second.body), "ok");
    assert.deepEqual(proxy.log.map((e) => e.requestBodyBytes), [100000, 2]);
    assert.equal(up.hits.length, 1);

    // Bad chunked framing in a forwarded body: 400, and the connection is closed.
    const c2 = await raw();
    await c2.send("PATCH /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    assert.equal((await c2.response()).status, 400);
    assert.ok(await c2.ended());
    assert.equal(proxy.log.at(-1)!.status, 400);
  });
});

Deno.test("chaos proxy: bodies over 64 MiB are streamed upstream", async () => {
  await scene([], async ({ proxy, get }) => {
    const size = 64 * MiB + 1;
    const big = new Uint8Array(size);
    big.set(BLOB, 0);
    big.set(BLOB, size - MiB);
    const res = await get("/echo", { method: "PUT", body: big });
    // The upstream got it streamed (chunked), all of it.
    assert.equal(res.headers.get("x-seen-transfer-encoding"), "chunked");
    assert.equal(res.headers.get("x-seen-digest"), sha256(big));
    await res.body?.cancel();
    assert.equal(proxy.log[0].requestHeaders.get("content-length"), String(size));
    assert.equal(proxy.log[0].requestBodyBytes, size);
  }, 10000);
});

Deno.test("chaos proxy: Location on the upstream origin is rewritten to the proxy", async () => {
  await scene([], async ({ up, proxy, get }) => {
    const res = await get("/upload", { method: "POST", redirect: "manual" });
    assert.equal(res.status, 202);
    assert.equal(res.headers.get("location"), proxy.url + "/upload/abc?_state=xyz");
    assert.ok(!res.headers.get("location")!.startsWith(up.url));
    await res.body?.cancel();
    const rel = await get("/upload?relative", { method: "POST", redirect: "manual" });
    assert.equal(rel.headers.get("location"), "/v2/relative/location");
    await rel.body?.cancel();
  });
});

Deno.test("chaos proxy: delay holds the answer back", async () => {
  const rules: Rule[] = [{ path: /^\/manifest$/, fault: { kind: "delay", ms: 200 } }];
  await scene(rules, async ({ get }) => {
    const t0 = performance.now();
    const res = await get("/manifest");
    assert.equal(await res.text(), MANIFEST);
    assert.ok(performance.now() - t0 >= 190);
  });
});

Deno.test("chaos proxy: close() ends slow responses and idle connections promptly", async () => {
  const up = startUpstream();
  const proxy = await startChaosProxy(up.url, [
    { path: /^\/blob$/, fault: { kind: "trickle", bytesPerChunk: 1024, delayMs: 50 } },
  ]);
  const client = Deno.createHttpClient({});
  const idle = new RawClient(await Deno.connect({ hostname: "127.0.0.1", port: portOf(proxy) }));
  try {
    const res = await fetch(proxy.url + "/blob", { client, signal: AbortSignal.timeout(5000) });
    assert.equal(res.status, 200);
    const reading = res.arrayBuffer();
    const t0 = performance.now();
    await proxy.close();
    assert.ok(performance.now() - t0 < 1000);
    await assert.rejects(reading);
    assert.ok(await idle.ended());
  } finally {
    idle.close();
    client.close();
    await proxy.close(); // twice is harmless
    await up.close();
  }
});

Deno.test("chaos proxy: unreachable upstream and malformed requests", async () => {
  // A port that was free a moment ago.
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  const proxy = await startChaosProxy(`http://127.0.0.1:${port}`);
  const client = Deno.createHttpClient({});
  const c = new RawClient(await Deno.connect({ hostname: "127.0.0.1", port: portOf(proxy) }));
  try {
    const res = await fetch(proxy.url + "/x", { client, signal: AbortSignal.timeout(5000) });
    assert.equal(res.status, 502);
    await res.body?.cancel();
    assert.equal(proxy.log[0].status, 502);
    assert.ok(proxy.log[0].error);

    await c.send("NOT A REQUEST\r\n\r\n");
    assert.equal((await c.response()).status, 400);
    assert.ok(await c.ended());
  } finally {
    c.close();
    client.close();
    await proxy.close();
  }
});
