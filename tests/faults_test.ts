// Issue 5: retries, resumable downloads and uploads, and a fault matrix through the CLI.
//
// Two halves:
// - unit tests of the transport's retry policy and of the upload/download resumers, against
//   a small in-process fake registry (Deno.serve) that can do what the real one cannot show:
//   keep half of a PATCH, answer 416 or a wrong Content-Range, ignore Range, forget a session;
// - the fault matrix: the chaos proxy (tests/fixtures/chaos.ts) in front of the real registry
//   (Debian's docker-registry, one instance for the file, one repository per cell), every
//   fault × {pull, push, registry→registry} run through the CLI as a subprocess. Each cell
//   either completes with every digest right or fails with exactly one stderr line; the
//   destination is then checked (layout: assertLayoutConsistent + oci-image-tool; registry:
//   the tag, if any, is pulled back directly and checked). The outcome table is printed.
import assert from "node:assert/strict";
import { join } from "node:path";
import { copyGraph } from "../src/copy.ts";
import { UserError } from "../src/errors.ts";
import type { Descriptor } from "../src/media.ts";
import { parseRegistryReference } from "../src/reference.ts";
import { LayoutStore } from "../src/store/layout.ts";
import { type RegistryOptions, RegistryStore } from "../src/store/registry/registry.ts";
import { NetworkError, parseRetryAfter } from "../src/store/registry/retry.ts";
import { Transport } from "../src/store/registry/transport.ts";
import type { BlobSource } from "../src/store/store.ts";
import { type ChaosProxy, type Fault, type Rule, startChaosProxy } from "./fixtures/chaos.ts";
import { type RunResult, umoci } from "./fixtures/cli.ts";
import {
  assertLayoutConsistent,
  buildRandomImage,
  digestOf,
  ociImageToolValidate,
  readIndex,
  REF_NAME,
  withTempDir,
} from "./fixtures/images.ts";
import { startAuthRegistry } from "./fixtures/auth_registry.ts";
import { freePort, type RunningRegistry, startRegistry } from "./fixtures/registry.ts";

const MiB = 1024 * 1024;
const KiB = 1024;

// ---------------------------------------------------------------------------------------
// Helpers

function randomBytes(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

/** A blob source over bytes in memory that records the offsets it was opened at. */
function memorySource(data: Uint8Array, opened: number[] = []): BlobSource {
  return (offset) => {
    opened.push(offset);
    return Promise.resolve({ stream: ReadableStream.from([data.slice(offset)]), offset });
  };
}

function blobDesc(data: Uint8Array): Descriptor {
  return { mediaType: "application/octet-stream", digest: digestOf(data), size: data.length };
}

function serve(handler: (req: Request) => Response | Promise<Response>) {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, handler);
  const host = `127.0.0.1:${server.addr.port}`;
  return { host, origin: `http://${host}`, stop: () => server.shutdown() };
}

/** Retry lines collected from a store or transport. */
function retryLog() {
  const lines: string[] = [];
  return { lines, onRetry: (l: string) => void lines.push(l) };
}

interface FakeRequest {
  method: string;
  path: string;
  contentRange: string | null;
  range: string | null;
  bodyBytes: number;
}

/**
 * A minimal spec-following registry for one repository `r`, in memory. `hook` runs first
 * for every request and may answer it itself (or do part of the work: `store(id, bytes)`).
 */
function fakeRegistry(
  hook?: (
    req: Request,
    ctx: { url: URL; body: Uint8Array; n: Record<string, number>; fake: FakeState },
  ) => Response | undefined | Promise<Response | undefined>,
) {
  const fake: FakeState = { sessions: new Map(), blobs: new Map(), log: [], store: () => {} };
  const n: Record<string, number> = {};
  let nextId = 1;
  const server = serve(async (req) => {
    const url = new URL(req.url);
    const body = new Uint8Array(await req.arrayBuffer());
    fake.log.push({
      method: req.method,
      path: url.pathname + url.search,
      contentRange: req.headers.get("content-range"),
      range: req.headers.get("range"),
      bodyBytes: body.length,
    });
    const key = `${req.method} ${url.pathname.replace(/\/[0-9]+$/, "/ID")}`;
    n[key] = (n[key] ?? 0) + 1;
    const hooked = await hook?.(req, { url, body, n, fake });
    if (hooked) return hooked;
    const p = url.pathname;
    const err = (status: number, code: string) =>
      Response.json({ errors: [{ code, message: code.toLowerCase() }] }, { status });
    const progress = (id: string, status: number) => {
      const size = fake.sessions.get(id)!.length;
      return new Response(null, {
        status,
        headers: {
          location: `/v2/r/blobs/uploads/${id}`,
          range: `0-${Math.max(0, size - 1)}`,
        },
      });
    };
    if (req.method === "POST" && p === "/v2/r/blobs/uploads/") {
      const id = String(nextId++);
      fake.sessions.set(id, new Uint8Array(0));
      return new Response(null, {
        status: 202,
        headers: { location: `/v2/r/blobs/uploads/${id}`, range: "0-0" },
      });
    }
    let m = /^\/v2\/r\/blobs\/uploads\/(\d+)$/.exec(p);
    if (m) {
      const id = m[1];
      const have = fake.sessions.get(id);
      if (!have) return err(404, "BLOB_UPLOAD_UNKNOWN");
      if (req.method === "GET") return progress(id, 204);
      if (req.method === "DELETE") {
        fake.sessions.delete(id);
        return new Response(null, { status: 204 });
      }
      if (req.method === "PATCH" || req.method === "PUT") {
        const cr = req.headers.get("content-range");
        if (cr !== null && Number(cr.split("-")[0]) !== have.length) {
          return new Response(null, { status: 416 });
        }
        fake.store(id, body);
        if (req.method === "PATCH") return progress(id, 202);
        const all = fake.sessions.get(id)!;
        const digest = url.searchParams.get("digest");
        if (digest !== digestOf(all)) return err(400, "DIGEST_INVALID");
        fake.sessions.delete(id);
        fake.blobs.set(digest, all);
        return new Response(null, {
          status: 201,
          headers: { location: `/v2/r/blobs/${digest}`, "docker-content-digest": digest },
        });
      }
    }
    m = /^\/v2\/r\/blobs\/(sha256:[0-9a-f]{64})$/.exec(p);
    if (m) {
      const blob = fake.blobs.get(m[1]);
      if (!blob) return err(404, "BLOB_UNKNOWN");
      if (req.method === "HEAD") {
        return new Response(null, { headers: { "content-length": String(blob.length) } });
      }
      const range = /^bytes=(\d+)-$/.exec(req.headers.get("range") ?? "");
      if (range) {
        const start = Number(range[1]);
        if (start >= blob.length) {
          return new Response(null, {
            status: 416,
            headers: { "content-range": `bytes */${blob.length}` },
          });
        }
        return new Response(blob.slice(start), {
          status: 206,
          headers: { "content-range": `bytes ${start}-${blob.length - 1}/${blob.length}` },
        });
      }
      return new Response(blob.slice());
    }
    return err(404, "NAME_UNKNOWN");
  });
  fake.store = (id, bytes) => {
    const have = fake.sessions.get(id)!;
    const next = new Uint8Array(have.length + bytes.length);
    next.set(have);
    next.set(bytes, have.length);
    fake.sessions.set(id, next);
  };
  return { ...server, fake, n };
}

interface FakeState {
  sessions: Map<string, Uint8Array>;
  blobs: Map<string, Uint8Array>;
  log: FakeRequest[];
  store: (id: string, bytes: Uint8Array) => void;
}

async function openFake(host: string, opts: RegistryOptions = {}): Promise<RegistryStore> {
  return await RegistryStore.open(parseRegistryReference(`oci://${host}/r`), {
    plainHttp: true,
    retryBaseWait: 20,
    ...opts,
  });
}

/** A body stream that sends `data` but errors after `cut` bytes. */
function breakingStream(data: Uint8Array, cut: number): ReadableStream<Uint8Array> {
  let sent = false;
  return new ReadableStream({
    pull(c) {
      if (!sent) {
        c.enqueue(data.slice(0, cut));
        sent = true;
      } else c.error(new Error("connection reset by fake"));
    },
  });
}

// ---------------------------------------------------------------------------------------
// Unit: the retry policy of the transport

Deno.test("Retry-After: delay-seconds and HTTP-date; past dates wait 0; junk ignored", () => {
  const now = Date.parse("2026-01-01T00:00:00Z");
  assert.equal(parseRetryAfter("3", now), 3000);
  assert.equal(parseRetryAfter(" 0 ", now), 0);
  assert.equal(parseRetryAfter("Thu, 01 Jan 2026 00:00:05 GMT", now), 5000);
  assert.equal(parseRetryAfter("Wed, 31 Dec 2025 23:59:00 GMT", now), 0);
  assert.equal(parseRetryAfter(null, now), undefined);
  assert.equal(parseRetryAfter("soon", now), undefined);
  assert.equal(parseRetryAfter("-1", now), undefined);
  assert.equal(parseRetryAfter("1.5", now), undefined);
});

Deno.test("transport: 408/429/5xx retried with backoff, Retry-After honoured and capped, 4xx never", async () => {
  const answers: Record<string, (number | [number, Record<string, string>])[]> = {};
  const seen: Record<string, number> = {};
  const s = serve((req) => {
    const p = new URL(req.url).pathname;
    const i = seen[p] = (seen[p] ?? 0) + 1;
    const a = answers[p]?.[i - 1] ?? 200;
    const [status, headers] = Array.isArray(a) ? a : [a, {}];
    return new Response(status === 200 ? "ok" : `<html>${status}</html>`, {
      status,
      headers: { "content-type": "text/html", ...headers },
    });
  });
  const log = retryLog();
  const t = await Transport.create(s.host, s.host, {
    plainHttp: true,
    retryBaseWait: 20,
    onRetry: log.onRetry,
  });
  const get = async (p: string, retry?: boolean) => {
    const res = await t.request({ method: "GET", url: new URL(`${s.origin}${p}`), retry });
    await res.discard();
    return res.status;
  };
  try {
    answers["/flaky"] = [503, 502, 500, 504, 408];
    assert.equal(await get("/flaky"), 200);
    assert.equal(seen["/flaky"], 6);
    assert.equal(log.lines.length, 5);
    assert.match(log.lines[0], /^! retry 1 of 5 in \d+\.\d s: GET http:\/\/.*\/flaky: 503/);
    assert.match(log.lines[4], /^! retry 5 of 5 in /);

    // Out of retries: the last answer is returned (the caller turns it into an error).
    answers["/down"] = [503, 503, 503, 503, 503, 503, 503];
    assert.equal(await get("/down"), 503);
    assert.equal(seen["/down"], 6);

    // 4xx answers other than 408/429 are final at once.
    for (const status of [400, 401, 403, 404, 405, 416]) {
      answers[`/no${status}`] = [status];
      assert.equal(await get(`/no${status}`), status);
      assert.equal(seen[`/no${status}`], 1, `${status} not retried`);
    }
    // retry: false turns it off for one request.
    answers["/once"] = [503];
    assert.equal(await get("/once", false), 503);
    assert.equal(seen["/once"], 1);

    // Retry-After in seconds is honoured even though it is longer than the backoff.
    answers["/limited"] = [[429, { "retry-after": "1" }]];
    log.lines.length = 0;
    let t0 = performance.now();
    assert.equal(await get("/limited"), 200);
    const waited = performance.now() - t0;
    assert.ok(waited >= 950, `waited ${waited} ms for Retry-After: 1`);
    assert.match(log.lines[0], /^! retry 1 of 5 in 1\.0 s: GET .*\/limited: 429/);
    // As an HTTP-date, and capped by retryMaxWait.
    const capped = await Transport.create(s.host, s.host, {
      plainHttp: true,
      retryMaxWait: 300,
      onRetry: log.onRetry,
    });
    try {
      answers["/date"] = [[503, { "retry-after": new Date(Date.now() + 30_000).toUTCString() }]];
      t0 = performance.now();
      const res = await capped.request({ method: "GET", url: new URL(`${s.origin}/date`) });
      await res.discard();
      const w = performance.now() - t0;
      assert.equal(res.status, 200);
      assert.ok(w >= 250 && w < 5000, `HTTP-date Retry-After capped at 300 ms, waited ${w}`);
    } finally {
      capped.close();
    }

    // retries: 0 → no retry at all.
    const none = await Transport.create(s.host, s.host, { plainHttp: true, retries: 0 });
    try {
      answers["/zero"] = [503];
      const res = await none.request({ method: "GET", url: new URL(`${s.origin}/zero`) });
      await res.discard();
      assert.equal(res.status, 503);
      assert.equal(seen["/zero"], 1);
    } finally {
      none.close();
    }
  } finally {
    t.close();
    await s.stop();
  }
});

Deno.test("transport: refused connections and header time-outs are retried; DNS and TLS failures are not", async () => {
  const log = retryLog();
  const port = freePort();
  const t = await Transport.create(`127.0.0.1:${port}`, `127.0.0.1:${port}`, {
    plainHttp: true,
    retries: 2,
    retryBaseWait: 20,
    onRetry: log.onRetry,
  });
  try {
    await assert.rejects(
      t.request({ method: "GET", url: new URL(`http://127.0.0.1:${port}/v2/`) }),
      (e) => e instanceof NetworkError && e.retryable && /refused/i.test(e.message),
    );
    assert.equal(log.lines.length, 2);
    assert.match(log.lines[1], /^! retry 2 of 2 in \d+\.\d s: 127\.0\.0\.1:\d+: GET .*refused/i);
  } finally {
    t.close();
  }

  // A server that accepts and never answers: the header time-out fires, and is retried.
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    try {
      for await (const c of silent) held.push(c);
    } catch { /* closed */ }
  })();
  const host = `127.0.0.1:${silent.addr.port}`;
  log.lines.length = 0;
  const slow = await Transport.create(host, host, {
    plainHttp: true,
    retries: 1,
    retryBaseWait: 10,
    timeout: 200,
    onRetry: log.onRetry,
  });
  try {
    const t0 = performance.now();
    await assert.rejects(
      slow.request({ method: "GET", url: new URL(`http://${host}/v2/`) }),
      (e) => e instanceof NetworkError && /no response within 0\.2 s/.test(e.message),
    );
    assert.ok(performance.now() - t0 >= 400);
    assert.equal(log.lines.length, 1);
  } finally {
    slow.close();
    silent.close();
    for (const c of held) c.close();
    await accepting;
  }

  // Not transient: a name that does not resolve, TLS spoken to a plain-http server.
  log.lines.length = 0;
  const dns = await Transport.create("no-such-host.invalid", "no-such-host.invalid", {
    plainHttp: true,
    onRetry: log.onRetry,
  });
  try {
    await assert.rejects(
      dns.request({ method: "GET", url: new URL("http://no-such-host.invalid/v2/") }),
      (e) => e instanceof NetworkError && !e.retryable,
    );
  } finally {
    dns.close();
  }
  const plain = serve(() => new Response("plain"));
  const tls = await Transport.create(plain.host, plain.host, { onRetry: log.onRetry });
  try {
    await assert.rejects(
      tls.request({ method: "GET", url: new URL(`https://${plain.host}/v2/tls/app`) }),
      (e) => e instanceof NetworkError && !e.retryable,
    );
  } finally {
    tls.close();
    await plain.stop();
  }
  assert.deepEqual(log.lines, [], "no retries for DNS or TLS failures");
});

// ---------------------------------------------------------------------------------------
// Unit: resumable uploads against the fake registry

const CHUNK = MiB;

Deno.test("upload: a PATCH answered 503 is continued from the registry's progress (GET → 204 Range)", async () => {
  const reg = fakeRegistry((req, { n }) => {
    if (req.method === "PATCH" && n["PATCH /v2/r/blobs/uploads/ID"] === 2) {
      return new Response("busy", { status: 503 }); // not stored
    }
  });
  const log = retryLog();
  const store = await openFake(reg.host, { chunkSize: CHUNK, onRetry: log.onRetry });
  try {
    const data = randomBytes(3 * MiB + 512 * KiB);
    const opened: number[] = [];
    await store.push(blobDesc(data), memorySource(data, opened));
    // Sized chunks are held in memory: the chunk goes again from memory, the source is not
    // read a second time.
    assert.deepEqual(opened, [0], "the source was read once");
    const seq = reg.fake.log.filter((r) => r.method !== "HEAD")
      .map((r) => `${r.method} ${r.contentRange ?? ""}`.trim());
    assert.deepEqual(seq, [
      "POST",
      `PATCH 0-${MiB - 1}`,
      `PATCH ${MiB}-${2 * MiB - 1}`,
      "GET",
      `PATCH ${MiB}-${2 * MiB - 1}`,
      `PATCH ${2 * MiB}-${3 * MiB - 1}`,
      `PATCH ${3 * MiB}-${data.length - 1}`,
      "PUT",
    ]);
    assert.equal(log.lines.length, 1);
    assert.match(log.lines[0], /^! retry 1 of 5 in .*PATCH .*: 503.*asking for the progress/);
    assert.deepEqual(reg.fake.blobs.get(digestOf(data)), data);
  } finally {
    await store.close();
    await reg.stop();
  }
});

Deno.test("upload: a streamed PATCH that stored half the blob resumes there from the registry's progress; 416 recovers the same way", async () => {
  const reg = fakeRegistry((req, { n, url, body, fake }) => {
    const count = n["PATCH /v2/r/blobs/uploads/ID"];
    if (req.method === "PATCH" && count === 1) {
      // Keep the first half, then fail as if the connection dropped mid-body.
      fake.store(url.pathname.split("/").pop()!, body.subarray(0, body.length / 2));
      return new Response("oops", { status: 500 });
    }
    if (req.method === "PATCH" && count === 2) return new Response(null, { status: 416 });
  });
  const log = retryLog();
  // No chunk size: the default, one streamed PATCH (chunked transfer coding) per blob.
  const store = await openFake(reg.host, { onRetry: log.onRetry });
  try {
    const data = randomBytes(6 * MiB);
    const opened: number[] = [];
    await store.push(blobDesc(data), memorySource(data, opened));
    assert.deepEqual(opened, [0, 3 * MiB, 3 * MiB], "reopened at each progress point");
    const patches = reg.fake.log.filter((r) => r.method === "PATCH")
      .map((r) => [r.contentRange, r.bodyBytes]);
    assert.deepEqual(patches, [
      [null, 6 * MiB], // the whole blob, streamed: half kept, 500
      [`${3 * MiB}-${6 * MiB - 1}`, 3 * MiB], // the rest, read again from the source: 416
      [`${3 * MiB}-${6 * MiB - 1}`, 3 * MiB],
    ]);
    assert.equal(log.lines.length, 2, log.lines.join("\n"));
    assert.deepEqual(reg.fake.blobs.get(digestOf(data)), data);
  } finally {
    await store.close();
    await reg.stop();
  }
});

Deno.test("upload: a token that runs out during a streamed PATCH is renewed and the upload continues", async () => {
  let issued = 0;
  let expired = "";
  const reg = fakeRegistry((req, { n, url }) => {
    if (url.pathname === "/token") return Response.json({ token: `t${++issued}` });
    const auth = req.headers.get("authorization") ?? "";
    const challenge = () =>
      new Response(null, {
        status: 401,
        headers: { "www-authenticate": `Bearer realm="${url.origin}/token",service="fake"` },
      });
    if (!auth.startsWith("Bearer ") || auth === `Bearer ${expired}`) return challenge();
    if (req.method === "PATCH" && n["PATCH /v2/r/blobs/uploads/ID"] === 1) {
      expired = auth.slice("Bearer ".length); // the token expires under the first PATCH
      return challenge();
    }
  });
  const store = await openFake(reg.host, { onRetry: () => {} });
  try {
    const data = randomBytes(5 * MiB);
    const opened: number[] = [];
    await store.push(blobDesc(data), memorySource(data, opened));
    assert.deepEqual(reg.fake.blobs.get(digestOf(data)), data);
    assert.equal(issued, 2, "one new token, asked for once");
    const patches = reg.fake.log.filter((r) => r.method === "PATCH").length;
    assert.equal(patches, 2, "the PATCH was sent again once, with the new token");
    assert.deepEqual(opened, [0, 0], "the source was read again from the registry's progress");
  } finally {
    await store.close();
    await reg.stop();
  }
});

Deno.test("upload: an expired session (404 BLOB_UPLOAD_UNKNOWN) starts the blob over with a new POST", async () => {
  const reg = fakeRegistry((req, { n, url, fake }) => {
    if (req.method === "PATCH" && n["PATCH /v2/r/blobs/uploads/ID"] === 2) {
      fake.sessions.delete(url.pathname.split("/").pop()!);
    }
  });
  const log = retryLog();
  const store = await openFake(reg.host, { chunkSize: CHUNK, onRetry: log.onRetry });
  try {
    const data = randomBytes(2 * MiB + 5);
    const opened: number[] = [];
    await store.push(blobDesc(data), memorySource(data, opened));
    assert.deepEqual(opened, [0, 0], "the source was opened again from byte 0");
    assert.equal(reg.fake.log.filter((r) => r.method === "POST").length, 2);
    assert.match(
      log.lines.join("\n"),
      /upload session is gone .*BLOB_UPLOAD_UNKNOWN.*starting the blob over/,
    );
    assert.deepEqual(reg.fake.blobs.get(digestOf(data)), data);
  } finally {
    await store.close();
    await reg.stop();
  }
});

Deno.test("upload: a lost answer to the closing PUT is settled with HEAD; a failed monolithic PUT retries in a new session without re-reading", async () => {
  let commitThenFail = true;
  const reg = fakeRegistry((req, { url, fake, body }) => {
    if (req.method === "PUT" && commitThenFail && url.pathname.includes("/uploads/")) {
      commitThenFail = false;
      const id = url.pathname.split("/").pop()!;
      fake.store(id, body);
      const all = fake.sessions.get(id)!;
      fake.sessions.delete(id);
      fake.blobs.set(digestOf(all), all);
      return new Response("gateway timeout", { status: 504 });
    }
  });
  const store = await openFake(reg.host, { chunkSize: CHUNK });
  try {
    const data = randomBytes(MiB + 7);
    await store.push(blobDesc(data), memorySource(data));
    const puts = reg.fake.log.filter((r) => r.method === "PUT").length;
    assert.equal(puts, 1, "no second PUT: HEAD found the blob committed");
    assert.ok(reg.fake.log.some((r) => r.method === "HEAD"));
  } finally {
    await store.close();
    await reg.stop();
  }

  let failPut = 1;
  const reg2 = fakeRegistry((req, { url }) => {
    if (req.method === "PUT" && url.pathname.includes("/uploads/") && failPut-- > 0) {
      return new Response("busy", { status: 503 });
    }
  });
  const store2 = await openFake(reg2.host, { chunkSize: CHUNK });
  try {
    const data = randomBytes(100 * KiB);
    const opened: number[] = [];
    await store2.push(blobDesc(data), memorySource(data, opened));
    assert.deepEqual(opened, [0], "the blob stayed in memory for the second session");
    assert.equal(reg2.fake.log.filter((r) => r.method === "POST").length, 2);
    assert.deepEqual(reg2.fake.blobs.get(digestOf(data)), data);
  } finally {
    await store2.close();
    await reg2.stop();
  }
});

Deno.test("upload: retries run out → one-line error, session DELETEd, nothing committed", async () => {
  const reg = fakeRegistry((req) => {
    if (req.method === "PATCH") return new Response("<html>down</html>", { status: 502 });
  });
  const store = await openFake(reg.host, { chunkSize: CHUNK, retries: 2 });
  try {
    const data = randomBytes(2 * MiB);
    await assert.rejects(store.push(blobDesc(data), memorySource(data)), (e) => {
      assert.ok(e instanceof UserError);
      assert.match(e.message, /PATCH .*: 502 Bad Gateway \(no retries left: 2\)$/);
      assert.ok(!e.message.includes("\n") && !e.message.includes("<html>"));
      return true;
    });
    assert.equal(reg.fake.log.filter((r) => r.method === "PATCH").length, 3);
    assert.equal(reg.fake.log.filter((r) => r.method === "DELETE").length, 1);
    assert.equal(reg.fake.blobs.size, 0);
  } finally {
    await store.close();
    await reg.stop();
  }
});

// ---------------------------------------------------------------------------------------
// Unit: resumable downloads into a layout

Deno.test("download: a broken body resumes with Range: bytes=N-; 200 restarts from 0; a wrong Content-Range is refused; 416 at the end is complete", async () => {
  const data = randomBytes(3 * MiB);
  const digest = digestOf(data);
  let mode: "break-then-range" | "ignore-range" | "bad-range" = "break-then-range";
  let gets = 0;
  const ranges: (string | null)[] = [];
  const s = serve((req) => {
    const p = new URL(req.url).pathname;
    if (p !== `/v2/r/blobs/${digest}`) return new Response(null, { status: 404 });
    gets++;
    const range = req.headers.get("range");
    ranges.push(range);
    const start = Number(/^bytes=(\d+)-$/.exec(range ?? "")?.[1] ?? 0);
    if (gets === 1) {
      return new Response(breakingStream(data, 1200 * KiB), {
        headers: { "content-length": String(data.length) },
      });
    }
    if (start >= data.length) {
      return new Response(null, {
        status: 416,
        headers: { "content-range": `bytes */${data.length}` },
      });
    }
    if (mode === "ignore-range" || start === 0) return new Response(data.slice());
    if (mode === "bad-range") {
      return new Response(data.slice(start - 10), {
        status: 206,
        headers: { "content-range": `bytes ${start - 10}-${data.length - 1}/${data.length}` },
      });
    }
    return new Response(data.slice(start), {
      status: 206,
      headers: { "content-range": `bytes ${start}-${data.length - 1}/${data.length}` },
    });
  });
  const desc = blobDesc(data);
  try {
    await withTempDir(async (dir) => {
      const pull = async () => {
        const src = await openFake(s.host);
        const dst = await LayoutStore.open(join(dir, `l-${mode}`), { create: true });
        try {
          await dst.push(desc, (offset) => src.fetch(desc, offset));
          return await Deno.readFile(await dst.blobPath(digest));
        } finally {
          await src.close();
          await dst.close();
        }
      };
      // The layout sink resumes from its last verified byte: here the last whole 1 MiB
      // buffer it wrote before the break at 1200 KiB.
      assert.deepEqual(await pull(), data);
      assert.deepEqual(ranges, [null, `bytes=${MiB}-`]);

      mode = "ignore-range";
      gets = 0;
      ranges.length = 0;
      assert.deepEqual(await pull(), data, "a 200 to a Range request restarts from byte 0");
      assert.deepEqual(ranges, [null, `bytes=${MiB}-`]);

      mode = "bad-range";
      gets = 0;
      await assert.rejects(pull(), /invalid partial response for bytes 1048576-/);

      // 416 at offset == size: nothing left to read, the consumer verifies what it has.
      const src = await openFake(s.host);
      try {
        const end = await src.fetch(desc, desc.size);
        assert.equal(end.offset, desc.size);
        assert.equal((await new Response(end.stream).arrayBuffer()).byteLength, 0);
        await assert.rejects(src.fetch(desc, desc.size + 1), /cannot read from byte/);
      } finally {
        await src.close();
      }
    });
  } finally {
    await s.stop();
  }
});

// ---------------------------------------------------------------------------------------
// The fault matrix, end to end through the CLI

type Direction = "pull" | "push" | "r2r";
type Expect = "completed" | "failed";

interface Cell {
  fault: string;
  direction: Direction;
  /** Where the chaos proxy sits. */
  side: "source" | "destination";
  rules: Rule[];
  expect: Expect;
  /** Shortest run time the fault must cause (e.g. Retry-After), ms. */
  minMs?: number;
  /** Check the proxy's second origin saw blob GETs and no Authorization. */
  redirect?: boolean;
}

interface Outcome {
  cell: Cell;
  result: "completed" | "failed";
  message: string;
  fired: number;
  ms: number;
}

const LARGE = 2 * MiB;

/** Every fault, per direction: the request it targets and what must come of it. */
function matrixCells(layers: Descriptor[]): Cell[] {
  const large = layers.find((l) => l.size === LARGE)!;
  const largeGet = new RegExp(`/blobs/${large.digest}$`);
  const blobGet = /\/blobs\/sha256:[0-9a-f]{64}$/;
  const manifests = /\/manifests\//;
  const uploads = /\/blobs\/uploads\//;
  const bigManifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    annotations: { pad: "x".repeat(5 * MiB) },
  });
  const html = "<html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>\n".repeat(20);
  const htmlFault: Fault = {
    kind: "status",
    status: 502,
    headers: { "Content-Type": "text/html" },
    body: html,
  };
  const wrongDigest = `sha256:${"0".repeat(64)}`;
  const cells: Cell[] = [];
  // Pull and registry→registry: the proxy in front of the source registry.
  for (const direction of ["pull", "r2r"] as const) {
    const side = "source" as const;
    const add = (fault: string, rules: Rule[], expect: Expect, extra: Partial<Cell> = {}) =>
      cells.push({ fault, direction, side, rules, expect, ...extra });
    add("reset mid-body", [{
      method: "GET",
      path: largeGet,
      fault: { kind: "reset", afterBytes: 700 * KiB },
    }], "completed");
    add("truncate (Content-Length kept)", [{
      method: "GET",
      path: largeGet,
      fault: { kind: "truncate", afterBytes: 700 * KiB },
    }], "completed");
    for (const status of [500, 502, 503]) {
      add(`${status}`, [{
        method: "GET",
        path: blobGet,
        times: 2,
        fault: { kind: "status", status },
      }], "completed");
    }
    add(
      "429 + Retry-After: 1",
      [{
        method: "GET",
        path: largeGet,
        fault: { kind: "status", status: 429, headers: { "Retry-After": "1" } },
      }],
      "completed",
      { minMs: 1000 },
    );
    add(
      "slow trickle",
      [{
        method: "GET",
        path: largeGet,
        fault: { kind: "trickle", bytesPerChunk: 64 * KiB, delayMs: 15 },
      }],
      "completed",
      { minMs: 400 },
    );
    add("flipped byte", [{
      method: "GET",
      path: largeGet,
      fault: { kind: "flip", offset: 1234 },
    }], "failed");
    add(
      "307 to second origin",
      [{
        method: "GET",
        path: blobGet,
        times: Infinity,
        fault: { kind: "redirect" },
      }],
      "completed",
      { redirect: true },
    );
    add("huge manifest (5 MiB)", [{
      method: "GET",
      path: manifests,
      times: Infinity,
      fault: { kind: "body", body: bigManifest },
    }], "failed");
    add("invalid JSON manifest", [{
      method: "GET",
      path: manifests,
      times: Infinity,
      fault: { kind: "body", body: '{"schemaVersion": 2, "layers": [' },
    }], "failed");
    add("HTML 502 page (persistent)", [{
      method: "GET",
      path: blobGet,
      times: Infinity,
      fault: htmlFault,
    }], "failed");
    add("wrong Docker-Content-Digest", [{
      path: manifests,
      times: Infinity,
      fault: { kind: "headers", set: { "Docker-Content-Digest": wrongDigest } },
    }], "failed");
    add("wrong Content-Type", [{
      path: manifests,
      times: Infinity,
      fault: {
        kind: "headers",
        set: { "Content-Type": "application/vnd.docker.distribution.manifest.v2+json" },
      },
    }], "failed");
  }
  // Push: the proxy in front of the destination registry. Responses to uploads have no
  // body, so the body faults (truncate, trickle, flip) and the manifest-GET faults have
  // nothing to act on there; they run anyway and must not hurt.
  const side = "destination" as const;
  const add = (fault: string, rules: Rule[], expect: Expect, extra: Partial<Cell> = {}) =>
    cells.push({ fault, direction: "push", side, rules, expect, ...extra });
  add("reset mid-body", [{
    method: "PATCH",
    path: uploads,
    fault: { kind: "reset", afterBytes: -1 },
  }], "completed");
  add("truncate (Content-Length kept)", [{
    method: "PATCH",
    path: uploads,
    fault: { kind: "truncate", afterBytes: 0 },
  }], "completed");
  for (const status of [500, 502, 503]) {
    add(`${status}`, [{
      method: "PATCH",
      path: uploads,
      times: 2,
      fault: { kind: "status", status },
    }], "completed");
  }
  add(
    "429 + Retry-After: 1",
    [{
      method: "POST",
      path: uploads,
      fault: { kind: "status", status: 429, headers: { "Retry-After": "1" } },
    }],
    "completed",
    { minMs: 1000 },
  );
  add("slow trickle", [{
    path: uploads,
    times: Infinity,
    fault: { kind: "trickle", bytesPerChunk: 16, delayMs: 5 },
  }], "completed");
  add(
    "flipped byte",
    [{ path: uploads, times: Infinity, fault: { kind: "flip", offset: 0 } }],
    "completed",
  );
  add(
    "307 to second origin",
    [{
      path: /\/blobs\/uploads\/./,
      times: Infinity,
      fault: { kind: "redirect" },
    }],
    "completed",
    { redirect: true },
  );
  add("huge manifest (5 MiB)", [{
    method: "GET",
    path: manifests,
    times: Infinity,
    fault: { kind: "body", body: bigManifest },
  }], "completed");
  add("invalid JSON manifest", [{
    method: "GET",
    path: manifests,
    times: Infinity,
    fault: { kind: "body", body: "{" },
  }], "completed");
  add("HTML 502 page (persistent)", [{
    method: "PATCH",
    path: uploads,
    times: Infinity,
    fault: htmlFault,
  }], "failed");
  add("wrong Docker-Content-Digest", [{
    method: "PUT",
    path: uploads,
    times: Infinity,
    fault: { kind: "headers", set: { "Docker-Content-Digest": wrongDigest } },
  }], "failed");
  add("wrong Content-Type", [{
    method: "PUT",
    path: manifests,
    times: Infinity,
    fault: { kind: "headers", set: { "Content-Type": "text/html" } },
  }], "completed");
  return cells;
}

/** stderr as lines, without a trailing empty one. */
function stderrLines(text: string): string[] {
  return text.split("\n").filter((l, i, all) => l !== "" || i < all.length - 1);
}

/** The CLI's verdict: completed with the digest, or failed with exactly one error line. */
function judge(r: RunResult, expectedDigest: string, what: string): Outcome["result"] {
  const lines = stderrLines(r.stderr);
  assert.ok(!lines.some((l) => /^\s+at /.test(l)), `${what}: no stack trace:\n${r.stderr}`);
  if (r.code === 0) {
    assert.equal(r.stdout, `${expectedDigest}\n`, `${what}: stdout is the digest`);
    assert.deepEqual(lines, [], `${what}: nothing on stderr at --log=warn`);
    return "completed";
  }
  assert.equal(r.code, 1, `${what}: exit code 1 (stderr: ${r.stderr})`);
  assert.equal(r.stdout, "", `${what}: nothing on stdout`);
  assert.equal(lines.length, 1, `${what}: exactly one stderr line:\n${r.stderr}`);
  assert.match(lines[0], /^error: \S/, `${what}: the line is the error`);
  return "failed";
}

/** Pull `oci://host/repo:tag` straight from the registry (no proxy) into a new layout. */
async function pullDirect(host: string, repo: string, tag: string, dir: string) {
  const src = await RegistryStore.open(parseRegistryReference(`oci://${host}/${repo}:${tag}`), {
    plainHttp: true,
  });
  const dst = await LayoutStore.open(dir, { create: true });
  try {
    const root = await src.resolve({ tag });
    await copyGraph(src, dst, root);
    await dst.tag(root, tag);
    return root;
  } finally {
    await src.close();
    await dst.close();
  }
}

/** A registry destination after a cell: the tag is absent, or the whole image pulls back. */
async function checkRegistryDestination(
  host: string,
  repo: string,
  expected: string,
  dir: string,
  result: Outcome["result"],
) {
  let root: Descriptor;
  try {
    root = await pullDirect(host, repo, "v1", dir);
  } catch (e) {
    assert.equal(result, "failed", `${repo}: a completed copy must be pullable: ${e}`);
    assert.match(String(e), /not found/, `${repo}: the tag is absent, not broken: ${e}`);
    return;
  }
  assert.equal(root.digest, expected, `${repo}: the tag names the right manifest`);
  await assertLayoutConsistent(dir);
}

/** A layout destination after a cell: consistent, and tagged right when completed. */
async function checkLayoutDestination(dir: string, expected: string, result: Outcome["result"]) {
  const present = await Deno.stat(join(dir, "index.json")).then(() => true, () => false);
  if (!present) {
    assert.equal(result, "failed", "a completed pull wrote a layout");
    return;
  }
  const tags = await assertLayoutConsistent(dir);
  const entries = (await readIndex(dir)).manifests.filter((m) => m.annotations?.[REF_NAME]);
  for (const e of entries) assert.equal(e.digest, expected, "no tag names anything else");
  if (result === "completed") {
    assert.deepEqual(tags, ["v1"]);
    const v = await ociImageToolValidate(dir, "v1");
    assert.equal(v.code, 0, `oci-image-tool validate ${dir}:\n${v.stdout}\n${v.stderr}`);
  } else {
    assert.deepEqual(tags, [], "a failed pull tags nothing");
  }
}

/** The copy a cell runs, the proxy in front of the side it names. */
async function runCell(
  cell: Cell,
  i: number,
  ctx: { reg: RunningRegistry; dir: string; srcLayout: string; expected: string },
): Promise<Outcome> {
  const proxy: ChaosProxy = await startChaosProxy(ctx.reg.url, cell.rules);
  const what = `${cell.fault} × ${cell.direction}`;
  const repo = `${cell.direction}-${i}/app`;
  const out = join(ctx.dir, `cell-${i}`);
  const common = ["copy", "--log=warn", "--plain-http", "--retries", "3", "--chunk-size", "512KiB"];
  let args: string[];
  if (cell.direction === "pull") {
    args = [...common, `oci://${proxy.host}/src/app:v1`, `${out}:v1`];
  } else if (cell.direction === "push") {
    args = [...common, `${ctx.srcLayout}:v1`, `oci://${proxy.host}/${repo}:v1`];
  } else {
    args = [...common, `oci://${proxy.host}/src/app:v1`, `oci://${ctx.reg.host}/${repo}:v1`];
  }
  const t0 = performance.now();
  let r: RunResult;
  try {
    r = await umoci(args, { timeoutMs: 60_000 });
  } finally {
    await proxy.close();
  }
  const ms = Math.round(performance.now() - t0);
  const result = judge(r, ctx.expected, what);
  const message = result === "failed" ? stderrLines(r.stderr)[0].slice("error: ".length) : "";
  if (cell.direction === "pull") await checkLayoutDestination(out, ctx.expected, result);
  else await checkRegistryDestination(ctx.reg.host, repo, ctx.expected, `${out}-check`, result);
  const fired = proxy.log.filter((e) => e.fault !== undefined).length;
  if (cell.redirect) {
    const moved = proxy.secondOrigin.requests;
    assert.ok(moved.length > 0, `${what}: requests reached the second origin`);
    for (const m of moved) {
      assert.equal(m.headers.get("authorization"), null, `${what}: no Authorization moved`);
    }
  }
  if (cell.minMs !== undefined && result === "completed") {
    assert.ok(ms >= cell.minMs, `${what}: took ${ms} ms, the fault asks for ≥ ${cell.minMs}`);
  }
  return { cell, result, message, fired, ms };
}

/** Host:port and digests shortened, for a table that can be pasted. */
function shorten(message: string): string {
  return message
    .replace(/127\.0\.0\.1:\d+/g, "HOST")
    .replace(/sha256:([0-9a-f]{8})[0-9a-f]{56}/g, "sha256:$1…")
    .slice(0, 150);
}

function printMatrix(outcomes: Outcome[]) {
  const rows = [
    "| fault | direction (proxy side) | outcome | fired | time |",
    "| --- | --- | --- | --- | --- |",
  ];
  for (const o of outcomes) {
    const outcome = o.result === "completed" ? "completed" : `failed: ${shorten(o.message)}`;
    rows.push(
      `| ${o.cell.fault} | ${o.cell.direction} (${o.cell.side}) | ${outcome} | ${o.fired} | ${
        (o.ms / 1000).toFixed(1)
      } s |`,
    );
  }
  console.log(`\nFault matrix (--retries 3, --chunk-size 512KiB):\n${rows.join("\n")}\n`);
}

Deno.test("fault matrix: every fault × pull, push, registry→registry completes right or fails in one line", async () => {
  const reg = await startRegistry();
  try {
    await withTempDir(async (dir) => {
      const srcLayout = join(dir, "src");
      const built = await buildRandomImage(srcLayout, "v1", {
        layerSizes: [LARGE, MiB, 256 * KiB],
        raw: true,
      });
      const expected = built.manifest.digest;
      const seed = await umoci(
        ["copy", "--plain-http", `${srcLayout}:v1`, `oci://${reg.host}/src/app:v1`],
      );
      assert.equal(seed.code, 0, seed.stderr);

      // 416 from the real registry at offset == size reads as "nothing left".
      const store = await RegistryStore.open(
        parseRegistryReference(`oci://${reg.host}/src/app`),
        { plainHttp: true },
      );
      try {
        const large = built.layers.find((l) => l.size === LARGE)!;
        const end = await store.fetch(large, large.size);
        assert.equal(end.offset, large.size);
        assert.equal((await new Response(end.stream).arrayBuffer()).byteLength, 0);
      } finally {
        await store.close();
      }

      const cells = matrixCells(built.layers);
      const outcomes: Outcome[] = new Array(cells.length);
      const failures: string[] = [];
      // Three cells at a time: each has its own proxy and repository.
      let next = 0;
      const worker = async () => {
        for (let i = next++; i < cells.length; i = next++) {
          try {
            outcomes[i] = await runCell(cells[i], i, { reg, dir, srcLayout, expected });
          } catch (e) {
            failures.push(`${cells[i].fault} × ${cells[i].direction}: ${e}`);
            outcomes[i] = {
              cell: cells[i],
              result: "failed",
              message: `TEST FAILED: ${e}`,
              fired: 0,
              ms: 0,
            };
          }
        }
      };
      await Promise.all([worker(), worker(), worker()]);
      printMatrix(outcomes);
      assert.deepEqual(failures, [], "every cell holds its properties");
      for (const o of outcomes) {
        assert.ok(
          o.fired > 0 || o.cell.direction === "push",
          `${o.cell.fault} × ${o.cell.direction}: the fault fired`,
        );
        assert.equal(
          o.result,
          o.cell.expect,
          `${o.cell.fault} × ${o.cell.direction}: expected ${o.cell.expect}, got ${o.result} ${o.message}`,
        );
      }
    });
  } finally {
    await reg.stop();
  }
});

Deno.test("CLI: a pull that broke off with --retries 0 fails in one line; the rerun resumes with Range: bytes=N-", async () => {
  const reg = await startRegistry();
  try {
    await withTempDir(async (dir) => {
      const src = join(dir, "src");
      const built = await buildRandomImage(src, "v1", {
        layerSizes: [6 * MiB, 300 * KiB],
        raw: true,
      });
      const big = built.layers.find((l) => l.size === 6 * MiB)!;
      const seed = await umoci([
        "copy",
        "--plain-http",
        `${src}:v1`,
        `oci://${reg.host}/resume/app:v1`,
      ]);
      assert.equal(seed.code, 0, seed.stderr);
      const proxy = await startChaosProxy(reg.url, [{
        method: "GET",
        path: new RegExp(`/blobs/${big.digest}$`),
        fault: { kind: "reset", afterBytes: 3 * MiB + 100 * KiB },
      }]);
      try {
        const out = join(dir, "out");
        const args = ["copy", "--plain-http", `oci://${proxy.host}/resume/app:v1`, `${out}:v1`];
        const first = await umoci([
          "--log=warn",
          ...args.slice(0, 2),
          "--retries",
          "0",
          ...args.slice(2),
        ]);
        assert.equal(first.code, 1, first.stderr);
        const lines = stderrLines(first.stderr);
        assert.equal(lines.length, 1, first.stderr);
        assert.match(
          lines[0],
          /^error: sha256:[0-9a-f]{64}: download broke off at byte \d+ of 6291456: .*\(the partial download is kept; run the copy again to resume\)$/,
        );
        await assertLayoutConsistent(out);
        assert.deepEqual((await readIndex(out)).manifests, [], "nothing tagged");
        const partials = [];
        for await (const e of Deno.readDir(join(out, ".umoci-copy-tmp"))) partials.push(e.name);
        assert.deepEqual(partials, [`sha256-${big.digest.slice(7)}.partial`]);
        const kept = (await Deno.stat(join(out, ".umoci-copy-tmp", partials[0]))).size;
        assert.ok(kept > 0 && kept <= 3 * MiB + 100 * KiB, `kept ${kept} bytes`);

        const before = proxy.log.length;
        const second = await umoci(args);
        assert.equal(second.code, 0, second.stderr);
        assert.equal(second.stdout, `${built.manifest.digest}\n`);
        const gets = proxy.log.slice(before).filter((e) => e.path.endsWith(`/blobs/${big.digest}`));
        assert.equal(gets.length, 1, "one GET of the big blob in the rerun");
        const range = gets[0].requestHeaders.get("range");
        const n = Number(/^bytes=(\d+)-$/.exec(range ?? "")?.[1]);
        assert.ok(n > 0 && n === kept, `the rerun asked for bytes=${kept}-, sent ${range}`);
        assert.equal(gets[0].status, 206);
        await assertLayoutConsistent(out);
        const v = await ociImageToolValidate(out, "v1");
        assert.equal(v.code, 0, v.stdout + v.stderr);
        await assert.rejects(Deno.stat(join(out, ".umoci-copy-tmp")), "the temp area is gone");
      } finally {
        await proxy.close();
      }
    });
  } finally {
    await reg.stop();
  }
});

Deno.test("redirect of blob GETs from an htpasswd registry: the credentials stay home", async () => {
  const reg = await startAuthRegistry({ mode: "htpasswd", tls: false, users: { alice: "s3cret" } });
  try {
    await withTempDir(async (dir) => {
      const src = join(dir, "src");
      const built = await buildRandomImage(src, "v1", { layerSizes: [300 * KiB], raw: true });
      const seed = await umoci([
        "copy",
        "--plain-http",
        "--creds",
        "alice:s3cret",
        `${src}:v1`,
        `oci://${reg.host}/auth/app:v1`,
      ]);
      assert.equal(seed.code, 0, seed.stderr);
      const proxy = await startChaosProxy(reg.url, [{
        method: "GET",
        path: /\/blobs\/sha256:/,
        times: Infinity,
        fault: { kind: "redirect" },
      }]);
      try {
        const out = join(dir, "out");
        const r = await umoci([
          "--log=warn",
          "copy",
          "--plain-http",
          "--retries",
          "1",
          "--creds",
          "alice:s3cret",
          `oci://${proxy.host}/auth/app:v1`,
          `${out}:v1`,
        ]);
        // The registry itself got the credentials…
        const authorized = proxy.log.filter((e) => e.requestHeaders.get("authorization"));
        assert.ok(authorized.length > 0, "Basic credentials were sent to the registry");
        // …the storage origin never did, so it (a plain pass-through here) answers 401.
        const moved = proxy.secondOrigin.requests;
        assert.ok(moved.length > 0, "blob GETs were redirected");
        for (const m of moved) assert.equal(m.headers.get("authorization"), null);
        const verdict = judge(r, built.manifest.digest, "htpasswd + redirect");
        assert.equal(verdict, "failed");
        assert.match(stderrLines(r.stderr)[0], /^error: .*401/);
        await checkLayoutDestination(out, built.manifest.digest, verdict);
      } finally {
        await proxy.close();
      }
    });
  } finally {
    await reg.stop();
  }
});

Deno.test("faults: a manifest refused as MANIFEST_BLOB_UNKNOWN has its blobs checked and is put again", async () => {
  // A registry can lose a race it runs itself (two copies committing one config at once) and
  // refuse the manifest that needs the blob; the copy checks the blobs and tries once more.
  const reg = await startRegistry();
  const dir = await Deno.makeTempDir({ prefix: "umoci-blob-unknown-" });
  const proxy = await startChaosProxy(reg.url, [{
    method: "PUT",
    path: /\/manifests\/v1$/,
    fault: {
      kind: "status",
      status: 400,
      headers: { "content-type": "application/json" },
      body: '{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry"}]}',
    },
  }]);
  try {
    const image = await buildRandomImage(join(dir, "img"), "v1", { layerSizes: [40_000] });
    const r = await umoci([
      "copy",
      "--plain-http",
      `${dir}/img:v1`,
      `oci://${proxy.host}/app:v1`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), image.manifest.digest);
    const puts = proxy.log.filter((e) => e.method === "PUT" && /\/manifests\/v1$/.test(e.path));
    assert.deepEqual(puts.map((e) => e.status), [400, 201]);
    // Before the second PUT, the blobs were asked for again (HEAD), not sent twice.
    const heads = proxy.log.filter((e) => e.method === "HEAD" && /\/blobs\//.test(e.path));
    assert.equal(heads.length, 4, heads.map((e) => `${e.method} ${e.path}`).join("\n"));
    // A refusal for another reason is final: one PUT, exit 1.
    const refused = await startChaosProxy(reg.url, [{
      method: "PUT",
      path: /\/manifests\/v2$/,
      fault: {
        kind: "status",
        status: 400,
        headers: { "content-type": "application/json" },
        body: '{"errors":[{"code":"MANIFEST_INVALID","message":"refused"}]}',
      },
    }]);
    try {
      const bad = await umoci([
        "copy",
        "--plain-http",
        `${dir}/img:v1`,
        `oci://${refused.host}/app:v2`,
      ]);
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /400 MANIFEST_INVALID/);
      assert.equal(
        refused.log.filter((e) => e.method === "PUT" && /\/manifests\//.test(e.path)).length,
        1,
      );
    } finally {
      await refused.close();
    }
  } finally {
    await proxy.close();
    await reg.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
