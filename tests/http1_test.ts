// The HTTP/1.1 client (src/store/registry/http1.ts) against loopback servers that read raw
// request bytes and write hand-crafted responses, so that framing is exact: Content-Length,
// chunked (extensions, trailers), close-delimited and bodiless responses, 1xx interim
// answers, keep-alive reuse and stale pooled connections, cut-off and malformed responses,
// streamed uploads with an exact Content-Length (short, long and failing sources, an early
// 413), BYOB reads, abort signals, request headers, and interop with Deno.serve.
import assert from "node:assert/strict";
import { Http1Client, Http1Error, type Http1Response } from "../src/store/registry/http1.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function concat(parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) out.set(p, off), off += p.length;
  return out;
}

function pattern(n: number, seed = 7): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed + (i >> 12)) & 0xff;
  return out;
}

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Req {
  method: string;
  target: string;
  headers: Map<string, string>;
  body: Uint8Array;
}

/** The server side of one accepted connection. */
class Peer {
  #buf: Uint8Array<ArrayBuffer> = new Uint8Array(0);
  constructor(readonly conn: Deno.Conn) {}

  async #more(): Promise<boolean> {
    const chunk = new Uint8Array(64 * 1024);
    const n = await this.conn.read(chunk).catch(() => null);
    if (n === null) return false;
    this.#buf = concat([this.#buf, chunk.subarray(0, n)]);
    return true;
  }

  /** The next request (its body too unless `readBody` is false); null at end of connection. */
  async request(readBody = true): Promise<Req | null> {
    let end: number;
    while ((end = dec.decode(this.#buf.subarray(0, 65536)).indexOf("\r\n\r\n")) < 0) {
      if (!(await this.#more())) return null;
    }
    const [line, ...lines] = dec.decode(this.#buf.subarray(0, end)).split("\r\n");
    this.#buf = this.#buf.slice(end + 4);
    const [method, target] = line.split(" ");
    const headers = new Map<string, string>();
    for (const l of lines) {
      const i = l.indexOf(":");
      headers.set(l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim());
    }
    const want = readBody ? Number(headers.get("content-length") ?? 0) : 0;
    while (this.#buf.length < want && await this.#more());
    const body = this.#buf.slice(0, want);
    this.#buf = this.#buf.slice(body.length);
    return { method, target, headers, body };
  }

  async send(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? enc.encode(data) : data;
    for (let off = 0; off < bytes.length;) off += await this.conn.write(bytes.subarray(off));
  }

  /** Wait until the client closes the connection. */
  async waitClosed(): Promise<void> {
    while (await this.#more()) this.#buf = new Uint8Array(0);
  }
}

/** `accepted` and `closed` count connections; `requests` is filled in by the handlers. */
interface Server {
  url: URL;
  port: number;
  accepted: number;
  closed: number;
  requests: Req[];
  close(): Promise<void>;
}

type Handler = (peer: Peer, index: number, server: Server) => Promise<void>;

function listen(handler: Handler): Server {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  const conns = new Set<Deno.Conn>();
  const tasks: Promise<void>[] = [];
  const server: Server = {
    url: new URL(`http://127.0.0.1:${port}/`),
    port,
    accepted: 0,
    closed: 0,
    requests: [],
    close: async () => {
      listener.close();
      for (const c of conns) c.close();
      conns.clear();
      await loop;
      await Promise.all(tasks);
    },
  };
  const loop = (async () => {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch {
        return; // the listener was closed
      }
      conns.add(conn);
      tasks.push((async () => {
        try {
          await handler(new Peer(conn), server.accepted++, server);
        } catch {
          // the connection went away under the handler (the test closes everything)
        } finally {
          if (conns.delete(conn)) conn.close();
          server.closed++;
        }
      })());
    }
  })();
  return server;
}

/** A keep-alive server: one `respond` answer per request, until the client closes. */
function keepAlive(respond: (req: Req, peer: Peer) => string | Uint8Array): Handler {
  return async (peer, _i, server) => {
    for (let req; (req = await peer.request()) !== null;) {
      server.requests.push(req);
      await peer.send(respond(req, peer));
    }
  };
}

const ok = (body: string, extra = "") =>
  `HTTP/1.1 200 OK\r\ncontent-length: ${enc.encode(body).length}\r\n${extra}\r\n${body}`;

async function readAll(body: ReadableStream<Uint8Array> | null): Promise<Uint8Array> {
  assert.ok(body, "the response has a body");
  const parts: Uint8Array[] = [];
  for await (const chunk of body) parts.push(chunk);
  return concat(parts);
}

const text = async (res: Http1Response) => dec.decode(await readAll(res.body));

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; !cond(); i++) {
    if (i > 200) throw new Error(`timed out waiting for ${what}`);
    await delay(5);
  }
}

/**
 * A test with a fresh client and the servers it starts, all closed at the end, bounded by
 * `ms` so that a hang fails the test instead of the run.
 */
function test(
  name: string,
  fn: (client: Http1Client, serve: (h: Handler) => Server) => Promise<void>,
  ms = 5000,
) {
  Deno.test(`http1: ${name}`, async () => {
    const client = new Http1Client();
    const servers: Server[] = [];
    const serve = (h: Handler) => servers[servers.push(listen(h)) - 1];
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        fn(client, serve),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`test timed out after ${ms} ms`)), ms);
        }),
      ]);
    } finally {
      clearTimeout(timer);
      client.close();
      for (const s of servers) await s.close();
    }
  });
}

const get = (client: Http1Client, url: URL, path = "/") =>
  client.request("GET", new URL(path, url), []);

test("Content-Length bodies; sequential requests reuse one connection", async (client, serve) => {
  const big = pattern(200_000);
  const srv = serve(
    keepAlive((req) =>
      req.target === "/big"
        ? concat([enc.encode(`HTTP/1.1 200 OK\r\ncontent-length: ${big.length}\r\n\r\n`), big])
        : ok(`hello ${req.target}`, "x-answer: 42\r\n")
    ),
  );
  const r1 = await get(client, srv.url, "/one");
  assert.deepEqual([r1.status, r1.statusText, r1.headers.get("x-answer")], [200, "OK", "42"]);
  assert.equal(await text(r1), "hello /one");
  const r2 = await get(client, srv.url, "/big?x=1");
  assert.equal(await text(r2), "hello /big?x=1");
  const r3 = await get(client, srv.url, "/big");
  assert.deepEqual(await readAll(r3.body), big);
  assert.equal(srv.accepted, 1, "one TCP connection for all three requests");
  assert.deepEqual(srv.requests.map((r) => r.target), ["/one", "/big?x=1", "/big"]);

  // A body not yet read to the end keeps its connection: the next request opens another.
  const r4 = await get(client, srv.url, "/four");
  const r5 = await get(client, srv.url, "/five");
  assert.equal(srv.accepted, 2);
  assert.equal(await text(r5), "hello /five");
  assert.equal(await text(r4), "hello /four");
  // A cancelled body's connection is closed, not pooled.
  const r6 = await get(client, srv.url, "/six");
  await r6.body!.cancel();
  assert.equal(await text(await get(client, srv.url, "/seven")), "hello /seven");
  assert.equal(srv.accepted, 2);
  await until(() => srv.closed === 1, "the cancelled connection to close");
});

const CHUNKED = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
  "5;ext=1\r\nhello\r\n" + '7 ; name="quoted"\r\n, world\r\n' + "1a\r\n" +
  "abcdefghijklmnopqrstuvwxyz\r\n" + "0\r\nX-Sum: 1234\r\nX-Other: y\r\n\r\n";
const CHUNKED_BODY = "hello, worldabcdefghijklmnopqrstuvwxyz";

test("chunked body with extensions and trailers; connection reused", async (client, serve) => {
  const srv = serve(async (peer, _i, server) => {
    for (let n = 0, req; (req = await peer.request()) !== null; n++) {
      server.requests.push(req);
      if (n === 0) await peer.send(CHUNKED);
      else if (n === 1) {
        // The same response in 3-byte writes, so that every line is split across reads.
        const bytes = enc.encode(CHUNKED);
        for (let i = 0; i < bytes.length; i += 3) {
          await peer.send(bytes.subarray(i, i + 3));
          if (i % 30 === 0) await delay(1);
        }
      } else await peer.send(ok("after"));
    }
  });
  for (let i = 0; i < 2; i++) {
    const res = await get(client, srv.url);
    assert.equal(res.status, 200);
    assert.equal(await text(res), CHUNKED_BODY);
  }
  assert.equal(await text(await get(client, srv.url)), "after");
  assert.equal(srv.accepted, 1);
});

test("body delimited by the end of the connection; not reused", async (client, serve) => {
  const payload = pattern(100_000, 3);
  const srv = serve(async (peer, i, server) => {
    for (let req; (req = await peer.request()) !== null;) {
      server.requests.push(req);
      if (i > 0) await peer.send(ok("second"));
      else {
        await peer.send(concat([enc.encode("HTTP/1.1 200 OK\r\nx-kind: eof\r\n\r\n"), payload]));
        return; // closing the connection ends the body
      }
    }
  });
  const r1 = await get(client, srv.url);
  assert.equal(r1.headers.get("x-kind"), "eof");
  assert.deepEqual(await readAll(r1.body), payload);
  assert.equal(await text(await get(client, srv.url)), "second");
  assert.equal(srv.accepted, 2, "the close-delimited connection is not pooled");
});

test("HEAD with Content-Length and 204/304 have no body; connection reused", async (c, serve) => {
  const srv = serve(keepAlive((req) => {
    if (req.method === "HEAD") return "HTTP/1.1 200 OK\r\ncontent-length: 12345\r\n\r\n";
    if (req.target === "/204") return "HTTP/1.1 204 No Content\r\n\r\n";
    if (req.target === "/304") return "HTTP/1.1 304 Not Modified\r\ncontent-length: 99\r\n\r\n";
    if (req.target === "/empty") return "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
    return ok("body");
  }));
  const head = await c.request("HEAD", srv.url, []);
  assert.deepEqual([head.status, head.headers.get("content-length"), head.body], [
    200,
    "12345",
    null,
  ]);
  const r204 = await c.request("DELETE", new URL("/204", srv.url), []);
  assert.deepEqual([r204.status, r204.statusText, r204.body], [204, "No Content", null]);
  const r304 = await get(c, srv.url, "/304");
  assert.deepEqual([r304.status, r304.body], [304, null]);
  const empty = await get(c, srv.url, "/empty");
  assert.equal((await readAll(empty.body)).length, 0);
  assert.equal(await text(await get(c, srv.url)), "body");
  assert.equal(srv.accepted, 1);
  assert.deepEqual(srv.requests.map((r) => r.method), ["HEAD", "DELETE", "GET", "GET", "GET"]);
});

test("1xx interim responses are skipped; the final response is returned", async (c, serve) => {
  const srv = serve(keepAlive(() =>
    "HTTP/1.1 100 Continue\r\n\r\n" +
    "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n" +
    ok("final", "x-final: yes\r\n")
  ));
  const res = await c.request("PUT", srv.url, [], enc.encode("data"));
  assert.deepEqual([res.status, res.headers.get("x-final")], [200, "yes"]);
  assert.equal(res.headers.get("link"), null, "headers of interim responses are not kept");
  assert.equal(await text(res), "final");
  assert.equal(dec.decode(srv.requests[0].body), "data");
});

test("stale pooled connection closed by the server: request retried", async (c, serve) => {
  // Every connection serves one request with a keep-alive response, then the server closes it.
  const srv = serve(async (peer, i, server) => {
    const req = await peer.request();
    if (!req) return;
    server.requests.push(req);
    await peer.send(ok(`conn ${i} ${req.method} ${req.body.length}`));
  });
  assert.equal(await text(await get(c, srv.url)), "conn 0 GET 0");
  await until(() => srv.closed === 1, "the server to close the first connection");
  assert.equal(await text(await get(c, srv.url)), "conn 1 GET 0");
  await until(() => srv.closed === 2, "the server to close the second connection");
  // A Uint8Array body larger than the head write (sent separately) is retried too.
  const res = await c.request("PUT", srv.url, [], pattern(300_000));
  assert.equal(await text(res), "conn 2 PUT 300000");
  assert.equal(srv.accepted, 3);
  assert.equal(srv.requests.length, 3, "each request reached the server exactly once");
});

test("body cut short or malformed: the read rejects with Http1Error", async (c, serve) => {
  const cases = [
    ["content-length: 1000\r\n\r\n0123456789", "0123456789", /closed before the end/],
    ["transfer-encoding: chunked\r\n\r\n10\r\n01234", "01234", /closed before the end/],
    ["transfer-encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\nhello\r\n", "abc", /chunk size/],
  ] as const;
  const srv = serve(async (peer, i) => {
    await peer.request();
    await peer.send(`HTTP/1.1 200 OK\r\n${cases[i][0]}`);
    // the handler returns: the server closes the connection
  });
  for (const [, first, error] of cases) {
    const res = await get(c, srv.url);
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    assert.equal(dec.decode((await reader.read()).value), first);
    const rest = async () => {
      while (!(await reader.read()).done);
    };
    await assert.rejects(rest(), (e) => e instanceof Http1Error && error.test(e.message));
  }
  assert.equal(srv.accepted, cases.length);
});

test("malformed or non-HTTP responses reject with Http1Error", async (c, serve) => {
  const answers = [
    "HTTP/1.1 abc\r\n\r\n",
    "SSH-2.0-OpenSSH_9.6\r\n",
    "HTTP/2 200\r\n\r\n",
    "\x16\x03\x01\x00\x05hello\n", // a TLS record
    "HTTP/1.1 200 OK\r\ncontent-le", // cut off in the head
    "",
  ];
  const srv = serve(async (peer, i) => {
    await peer.request();
    if (answers[i]) await peer.send(answers[i]);
  });
  for (const answer of answers) {
    await assert.rejects(get(c, srv.url), (e) => {
      assert.ok(e instanceof Http1Error, `${JSON.stringify(answer)}: ${e}`);
      assert.match(e.message, /malformed response status line|connection closed/);
      return true;
    });
  }
  assert.equal(srv.accepted, answers.length);
});

test("streamed request body: exact bytes, Content-Length, no chunking", async (c, serve) => {
  const srv = serve(keepAlive(() => "HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n"));
  const data = pattern(1_000_003);
  const res = await c.request("PUT", new URL("/upload?digest=x", srv.url), [["x-a", "1"]], {
    length: data.length,
    write: async (write) => {
      // uneven chunk sizes, including an empty one
      const sizes = [1, 0, 7, 1000, 65_536, 70_001, 12_345];
      for (let off = 0, i = 0; off < data.length; i++) {
        const end = Math.min(data.length, off + sizes[i % sizes.length]);
        await write(data.subarray(off, end));
        off = end;
      }
    },
  });
  assert.equal(res.status, 201);
  assert.equal((await readAll(res.body)).length, 0);
  const req = srv.requests[0];
  assert.equal(req.target, "/upload?digest=x");
  const host = `127.0.0.1:${srv.port}`;
  assert.deepEqual(Object.fromEntries(req.headers), {
    host,
    "x-a": "1",
    "content-length": String(data.length), // and no transfer-encoding
  });
  assert.deepEqual(req.body, data);
});

test("streamed body callback failures: short, long, throwing", async (c, serve) => {
  const srv = serve(async (peer) => {
    await peer.request(false);
    await peer.waitClosed(); // never answers: the client gives up on its own
  });
  // Fewer bytes than `length`: the caller's mistake, not a (retryable) network Http1Error.
  await assert.rejects(
    c.request("PUT", srv.url, [], { length: 10, write: (w) => w(enc.encode("abc")) }),
    (e) =>
      e instanceof Error && !(e instanceof Http1Error) &&
      e.message === "request body ended at 3 of 10 bytes",
  );
  // More bytes than `length`: refused before they are sent, also not an Http1Error.
  await assert.rejects(
    c.request("PUT", srv.url, [], { length: 2, write: (w) => w(enc.encode("abc")) }),
    (e) =>
      e instanceof Error && !(e instanceof Http1Error) &&
      /longer than its Content-Length/.test(e.message),
  );
  // The callback's own error comes back as the very same object.
  const mine = new RangeError("the source failed");
  await assert.rejects(
    c.request("PUT", srv.url, [], {
      length: 10,
      write: async (w) => {
        await w(enc.encode("12345"));
        throw mine;
      },
    }),
    (e) => e === mine,
  );
  // Each failed upload's connection was closed.
  await until(() => srv.closed === 3, "the server to see three closed connections");
});

test("early 413 during a 64 MiB streamed upload is returned", async (c, serve) => {
  const srv = serve(async (peer, _i, server) => {
    server.requests.push((await peer.request(false))!);
    await peer.send(
      "HTTP/1.1 413 Payload Too Large\r\nconnection: close\r\ncontent-length: 9\r\n\r\ntoo large",
    );
    // the handler returns: closed with the upload unread
  });
  const length = 64 * 1024 * 1024;
  const chunk = pattern(1024 * 1024);
  let written = 0;
  const res = await c.request("PUT", srv.url, [], {
    length,
    write: async (write) => {
      for (let off = 0; off < length; off += chunk.length) {
        await write(chunk);
        written += chunk.length;
      }
    },
  });
  assert.deepEqual([res.status, res.statusText], [413, "Payload Too Large"]);
  assert.equal(await text(res), "too large");
  assert.ok(written < length, `the upload stopped early (${written} bytes written)`);
  assert.equal(srv.requests[0].headers.get("content-length"), String(length));
  // The connection is not pooled: the next request opens a new one.
  const again = await get(c, srv.url);
  assert.equal(again.status, 413);
  assert.equal(await text(again), "too large");
  assert.equal(srv.accepted, 2);
}, 15_000);

test("BYOB reads into a 1 MiB buffer over a 5 MiB body", async (c, serve) => {
  const data = pattern(5 * 1024 * 1024, 11);
  const srv = serve(
    keepAlive(() =>
      concat([enc.encode(`HTTP/1.1 200 OK\r\ncontent-length: ${data.length}\r\n\r\n`), data])
    ),
  );
  for (let round = 0; round < 2; round++) {
    const res = await get(c, srv.url);
    const reader = res.body!.getReader({ mode: "byob" });
    const got = new Uint8Array(data.length);
    let off = 0;
    let buf = new Uint8Array(1024 * 1024);
    let reads = 0;
    for (;;) {
      const { value, done } = await reader.read(buf);
      if (done) break;
      assert.ok(value.length > 0 && value.length <= 1024 * 1024);
      got.set(value, off);
      off += value.length;
      reads++;
      buf = new Uint8Array(value.buffer); // the buffer comes back transferred
    }
    reader.releaseLock();
    assert.equal(off, data.length);
    assert.ok(reads >= 5, `${reads} reads`);
    assert.deepEqual(got, data);
  }
  assert.equal(srv.accepted, 1, "reused after a BYOB read to the end");
}, 15_000);

test("signal aborts the wait for the head promptly with its reason", async (c, serve) => {
  const srv = serve(async (peer) => {
    await peer.request();
    await peer.waitClosed(); // never answers
  });
  const ac = new AbortController();
  const reason = new Error("gave up");
  const timer = setTimeout(() => ac.abort(reason), 50);
  const started = performance.now();
  try {
    await assert.rejects(c.request("GET", srv.url, [], undefined, ac.signal), (e) => e === reason);
  } finally {
    clearTimeout(timer);
  }
  assert.ok(performance.now() - started < 1000, "rejected promptly");
  await until(() => srv.closed === 1, "the aborted connection to close");
  // An already aborted signal rejects before anything is sent.
  await assert.rejects(
    c.request("GET", srv.url, [], undefined, AbortSignal.abort(reason)),
    (e) => e === reason,
  );
  assert.equal(srv.accepted, 1);
});

// An already aborted signal must not take an idle connection out of the pool.
test("an already aborted signal leaves the pooled connection in the pool", async (c, serve) => {
  const srv = serve(keepAlive(() => ok("x")));
  assert.equal(await text(await get(c, srv.url)), "x");
  await assert.rejects(c.request("GET", srv.url, [], undefined, AbortSignal.abort()));
  assert.equal(await text(await get(c, srv.url)), "x");
  assert.equal(srv.accepted, 1, "the pooled connection served the next request");
});

// An abort while the connection is being opened (TCP connect, TLS handshake) rejects at
// once; the late connection is closed and nothing is sent on it.
test("an abort while connecting rejects promptly and sends nothing", async (c, serve) => {
  const srv = serve(async (peer, _i, server) => {
    const req = await peer.request();
    if (req) server.requests.push(req);
    await peer.waitClosed();
  });
  const ac = new AbortController();
  const reason = new Error("gave up while connecting");
  const p = c.request("GET", srv.url, [], undefined, ac.signal);
  ac.abort(reason); // request() is awaiting the connect now
  const settled = p.then(() => "resolved", (e) => e === reason ? "rejected" : `rejected: ${e}`);
  assert.equal(await Promise.race([settled, delay(300).then(() => "pending")]), "rejected");
  await delay(50);
  assert.equal(srv.requests.length, 0, "nothing was sent after the abort");
});

test("request headers: host, given headers, content-length", async (c, serve) => {
  const srv = serve(keepAlive(() => ok("")));
  const url = new URL("/v2/x/manifests/latest?n=1", srv.url);
  await c.request("GET", url, [["Accept", "application/json"], ["X-Custom", "v a l"]]);
  await c.request("PUT", url, [["content-type", "application/octet-stream"]], enc.encode("hi!"));
  await c.request("PUT", url, []); // no body at all
  await c.request("POST", url, [], new Uint8Array(0));
  // Host, Content-Length, Connection and Transfer-Encoding are the client's own.
  await c.request("PUT", url, [
    ["Host", "evil.example"],
    ["Content-Length", "999"],
    ["Connection", "close"],
    ["Transfer-Encoding", "chunked"],
  ], enc.encode("12345"));
  await assert.rejects(c.request("GET", url, [["x-bad", "a\r\nx-injected: 1"]]), Http1Error);
  const host = `127.0.0.1:${srv.port}`;
  const seen = srv.requests.map((r) => [r.method, r.target, Object.fromEntries(r.headers)]);
  const url0 = "/v2/x/manifests/latest?n=1";
  assert.deepEqual(seen, [
    ["GET", url0, { host, accept: "application/json", "x-custom": "v a l" }],
    ["PUT", url0, { host, "content-type": "application/octet-stream", "content-length": "3" }],
    ["PUT", url0, { host, "content-length": "0" }],
    ["POST", url0, { host, "content-length": "0" }],
    ["PUT", url0, { host, "content-length": "5" }],
  ]);
  assert.deepEqual(srv.requests.map((r) => dec.decode(r.body)), ["", "hi!", "", "", "12345"]);
  assert.equal(srv.accepted, 1);
});

test("interop with Deno.serve: keep-alive GETs and a streamed PUT", async (client) => {
  const ports: number[] = [];
  const ac = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen: () => {} },
    async (req, info) => {
      ports.push(info.remoteAddr.port);
      const body = new Uint8Array(await req.arrayBuffer());
      return new Response(`${req.method} ${body.length} ${req.headers.get("content-length")}`);
    },
  );
  try {
    const url = new URL(`http://127.0.0.1:${server.addr.port}/`);
    assert.equal(await text(await get(client, url)), "GET 0 null");
    assert.equal(await text(await get(client, url)), "GET 0 null");
    const write = async (w: (c: Uint8Array) => Promise<void>) => {
      for (const n of [30_000, 40_000]) await w(pattern(n));
    };
    const res = await client.request("PUT", url, [], { length: 70_000, write });
    assert.equal(await text(res), "PUT 70000 70000");
    assert.equal(ports[0], ports[1], "the two GETs shared a connection");
  } finally {
    client.close();
    ac.abort();
    await server.finished;
  }
});
