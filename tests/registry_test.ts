// The registry store (src/store/registry/) against the real registry (Debian's
// docker-registry, CNCF distribution 2.8.2), against skopeo, and against small Deno.serve
// fakes for what the real registry cannot show (bearer tokens, redirects to a second
// origin). Every test starts its own servers and stops them in `finally`; request counts
// come from the store's trace lines, wire-level header checks from the chaos proxy
// (tests/fixtures/chaos.ts) used as a recording proxy.
import assert from "node:assert/strict";
import { join } from "node:path";
import { copyGraph } from "../src/copy.ts";
import { digestOf as srcDigestOf } from "../src/digest.ts";
import { NotFoundError, UserError } from "../src/errors.ts";
import type { Descriptor } from "../src/media.ts";
import { parseRegistryReference } from "../src/reference.ts";
import { parseChallenges } from "../src/store/registry/auth.ts";
import { type RegistryOptions, RegistryStore } from "../src/store/registry/registry.ts";
import { describeNetworkError, Transport } from "../src/store/registry/transport.ts";
import { redactUrl } from "../src/store/registry/trace.ts";
import { isTransientFailure } from "../src/store/registry/retry.ts";
import { LayoutStore } from "../src/store/layout.ts";
import type { Store } from "../src/store/store.ts";
import { startChaosProxy } from "./fixtures/chaos.ts";
import { umoci } from "./fixtures/cli.ts";
import {
  assertBlobsVerify,
  assertSameContent,
  blobFile,
  buildArtifact,
  buildDockerManifestList,
  buildMultiPlatformIndex,
  buildRandomImage,
  buildUmociImage,
  digestOf,
  mustRun,
  readIndex,
  run,
  skopeoCopy,
  tagEntry,
  withTempDir,
} from "./fixtures/images.ts";
import { type RunningRegistry, startRegistry } from "./fixtures/registry.ts";

const MiB = 1024 * 1024;
const enc = new TextEncoder();
const dec = new TextDecoder();

// ---------------------------------------------------------------------------------------
// Helpers

/** Collects trace lines; `count(re)` counts the lines matching. */
function recorder() {
  const lines: string[] = [];
  return {
    lines,
    trace: (l: string) => void lines.push(l),
    count: (re: RegExp) => lines.filter((l) => re.test(l)).length,
    clear: () => void (lines.length = 0),
  };
}

async function openRegistry(
  hostAndRepo: string,
  opts: RegistryOptions = { plainHttp: true },
): Promise<RegistryStore> {
  return await RegistryStore.open(parseRegistryReference(`oci://${hostAndRepo}`), opts);
}

/** Resolve `ref` in src, copy the graph to dst, tag it there. */
async function copyImage(
  src: Store,
  dst: Store,
  ref: { tag?: string; digest?: string },
  tag?: string,
) {
  const root = await src.resolve(ref);
  const stats = await copyGraph(src, dst, root);
  if (tag !== undefined) await dst.tag(root, tag);
  return { root, stats };
}

/** Open both stores, run fn, close both whatever happens. */
async function withStores<T>(
  open: [() => Promise<Store>, () => Promise<Store>],
  fn: (a: Store, b: Store) => Promise<T>,
): Promise<T> {
  const a = await open[0]();
  let b: Store | undefined;
  try {
    b = await open[1]();
    return await fn(a, b);
  } finally {
    await b?.close();
    await a.close();
  }
}

/** Layout → registry (tagged). */
function push(dir: string, tag: string, target: string, opts?: RegistryOptions) {
  return withStores(
    [() => LayoutStore.open(dir), () => openRegistry(target, opts)],
    (src, dst) => copyImage(src, dst, { tag }, tag),
  );
}

/** Registry → layout (created, tagged). */
function pull(
  source: string,
  ref: { tag?: string; digest?: string },
  dir: string,
  tag: string,
  opts?: RegistryOptions,
) {
  return withStores(
    [() => openRegistry(source, opts), () => LayoutStore.open(dir, { create: true })],
    (src, dst) => copyImage(src, dst, ref, tag),
  );
}

async function withRegistry<T>(fn: (reg: RunningRegistry) => Promise<T>, opts = {}): Promise<T> {
  const reg = await startRegistry(opts);
  try {
    return await fn(reg);
  } finally {
    await reg.stop();
  }
}

/** `skopeo inspect --raw` of a registry image: the exact manifest bytes. */
async function skopeoRaw(image: string): Promise<Uint8Array> {
  const r = await new Deno.Command("skopeo", {
    args: ["inspect", "--raw", "--tls-verify=false", `docker://${image}`],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!r.success) throw new Error(`skopeo inspect ${image}: ${dec.decode(r.stderr)}`);
  return r.stdout;
}

/** A one-off Deno.serve on 127.0.0.1; `stop()` waits for it to finish. */
function serve(
  handler: (req: Request) => Response | Promise<Response>,
  tls?: { cert: string; key: string },
) {
  const ac = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {}, ...tls },
    handler,
  );
  const origin = `${tls ? "https" : "http"}://127.0.0.1:${server.addr.port}`;
  return {
    origin,
    host: `127.0.0.1:${server.addr.port}`,
    stop: async () => {
      ac.abort();
      await server.finished;
    },
  };
}

/** A CA and a leaf certificate for 127.0.0.1/localhost signed by it (EC P-256). */
async function makeCertificates(dir: string) {
  const p = (n: string) => join(dir, n);
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  await mustRun("openssl", [
    "req",
    "-x509",
    ...ec,
    "-keyout",
    p("ca.key"),
    "-out",
    p("ca.crt"),
    "-days",
    "2",
    "-subj",
    "/CN=umoci-copy test CA",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  await mustRun("openssl", [
    "req",
    "-new",
    ...ec,
    "-keyout",
    p("leaf.key"),
    "-out",
    p("leaf.csr"),
    "-subj",
    "/CN=127.0.0.1",
  ]);
  await Deno.writeTextFile(
    p("leaf.ext"),
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n" +
      "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
  );
  await mustRun("openssl", [
    "x509",
    "-req",
    "-in",
    p("leaf.csr"),
    "-CA",
    p("ca.crt"),
    "-CAkey",
    p("ca.key"),
    "-CAcreateserial",
    "-out",
    p("leaf.crt"),
    "-days",
    "2",
    "-extfile",
    p("leaf.ext"),
  ]);
  return { ca: p("ca.crt"), cert: p("leaf.crt"), key: p("leaf.key") };
}

// ---------------------------------------------------------------------------------------
// Pure functions

Deno.test("WWW-Authenticate: quoted commas, escapes, several challenges in one value", () => {
  const [bearer] = parseChallenges(
    'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",' +
      'scope="repository:samalba/my-app:pull,push"',
  );
  assert.equal(bearer.scheme, "bearer");
  assert.deepEqual(bearer.params, {
    realm: "https://auth.docker.io/token",
    service: "registry.docker.io",
    scope: "repository:samalba/my-app:pull,push",
  });

  // Two header lines as Headers.get() joins them, an escaped quote, a token value.
  const h = new Headers();
  h.append(
    "WWW-Authenticate",
    'Bearer realm="https://a/t?x=1" ,  Service=reg, error="say \\"hi\\""',
  );
  h.append("www-authenticate", 'Basic realm="host:5000, inc"');
  const list = parseChallenges(h.get("www-authenticate")!);
  assert.equal(list.length, 2);
  assert.deepEqual(list[0], {
    scheme: "bearer",
    params: { realm: "https://a/t?x=1", service: "reg", error: 'say "hi"' },
  });
  assert.deepEqual(list[1], { scheme: "basic", params: { realm: "host:5000, inc" } });

  // Scope with a host:port resource name; token68 after a scheme; empty input.
  const [c] = parseChallenges('bearer scope="repository:host:5000/ns/repo:pull"');
  assert.equal(c.params.scope, "repository:host:5000/ns/repo:pull");
  assert.deepEqual(parseChallenges("Negotiate abc==, Basic realm=x").map((c) => c.scheme), [
    "negotiate",
    "basic",
  ]);
  assert.deepEqual(parseChallenges(""), []);
});

Deno.test("redactUrl shows only the distribution API's own query values, and no password", () => {
  assert.equal(
    redactUrl("https://h/token?service=s&access_token=abc&scope=a%3Ab&Token=x&refresh_token=r"),
    "https://h/token?service=s&access_token=<redacted>&scope=a%3Ab&Token=<redacted>" +
      "&refresh_token=<redacted>",
  );
  assert.equal(
    redactUrl("https://u:secret@h/p?password=p"),
    "https://u:redacted@h/p?password=<redacted>",
  );
  assert.equal(
    redactUrl("http://h/v2/x/blobs/uploads/1?_state=abc"),
    "http://h/v2/x/blobs/uploads/1?_state=<redacted>",
  );
  // `;` separates parameters for some servers: a secret after an allowed one is still hidden.
  assert.equal(
    redactUrl("http://h/b?digest=ok;sig=SEMISECRET&n=1"),
    "http://h/b?digest=ok;sig=<redacted>&n=1",
  );
  // A pre-signed storage URL: every signature and credential is blanked, digest stays.
  assert.equal(
    redactUrl(
      "https://s3.example/b/k?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=f00d&digest=sha256%3Aab&n=5&last=x&mount=m&from=f",
    ),
    "https://s3.example/b/k?X-Amz-Credential=<redacted>&X-Amz-Signature=<redacted>" +
      "&digest=sha256%3Aab&n=5&last=x&mount=m&from=f",
  );
  assert.equal(redactUrl("https://h/p?s3cr3t&n"), "https://h/p?<redacted>&n");
});

// ---------------------------------------------------------------------------------------
// Transport rules, against Deno.serve fakes

Deno.test("transport: redirects drop Authorization across origins, keep Range, cap hops", async () => {
  const seenB: Headers[] = [];
  const b = serve((req) => {
    seenB.push(req.headers);
    return new Response("from B");
  });
  const a = serve((req) => {
    const url = new URL(req.url);
    if (url.pathname === "/cross") return Response.redirect(`${b.origin}/blob?sig=1`, 307);
    if (url.pathname === "/same") {
      return new Response(null, { status: 307, headers: { location: "/final" } });
    }
    if (url.pathname === "/final") {
      return new Response(
        `auth=${req.headers.get("authorization")} range=${req.headers.get("range")}`,
      );
    }
    if (url.pathname === "/loop") {
      return new Response(null, { status: 302, headers: { location: "/loop" } });
    }
    return new Response("?", { status: 404 });
  });
  const rec = recorder();
  const t = await Transport.create(a.host, a.host, { plainHttp: true, trace: rec.trace });
  try {
    const headers = { authorization: "Bearer SECRET-TOKEN", range: "bytes=5-9" };
    let res = await t.request({ method: "GET", url: new URL(`${a.origin}/cross`), headers });
    assert.equal(await res.text(1000), "from B");
    assert.equal(seenB.length, 1);
    assert.equal(seenB[0].get("authorization"), null, "no Authorization at the other origin");
    assert.equal(seenB[0].get("range"), "bytes=5-9", "Range kept across the redirect");
    assert.equal(res.url.origin, b.origin);

    res = await t.request({ method: "GET", url: new URL(`${a.origin}/same`), headers });
    assert.equal(await res.text(1000), "auth=Bearer SECRET-TOKEN range=bytes=5-9");

    await assert.rejects(
      t.request({ method: "GET", url: new URL(`${a.origin}/loop`) }),
      (e) => e instanceof UserError && /more than 10 redirects/.test(e.message),
    );
    assert.equal(rec.count(/^> GET .*\/loop/), 11, "the first request and 10 hops");
    assert.ok(!rec.lines.some((l) => l.includes("SECRET-TOKEN")), "the token never traced");
    assert.ok(rec.lines.some((l) => l.includes('authorization: "Bearer <redacted>"')));
  } finally {
    t.close();
    await a.stop();
    await b.stop();
  }
});

Deno.test("transport: https → http redirect refused; CA files and certs.d directories; tlsVerify=false", async () => {
  await withTempDir(async (dir) => {
    const certs = await makeCertificates(dir);
    const plain = serve(() => new Response("plain"));
    const tls = serve(
      (req) =>
        new URL(req.url).pathname === "/down"
          ? Response.redirect(`${plain.origin}/x`, 302)
          : new Response("secure"),
      { cert: await Deno.readTextFile(certs.cert), key: await Deno.readTextFile(certs.key) },
    );
    const transports: Transport[] = [];
    const make = async (opts: Parameters<typeof Transport.create>[2]) => {
      const t = await Transport.create(tls.host, tls.host, opts);
      transports.push(t);
      return t;
    };
    try {
      const url = new URL(`${tls.origin}/ok`);
      // Default: the test CA is unknown.
      const strict = await make({});
      await assert.rejects(
        strict.request({ method: "GET", url }),
        (e) => e instanceof UserError && /TLS verification failed|certificate/i.test(e.message),
      );
      // --cacert
      const withCa = await make({ caCertFiles: [certs.ca] });
      assert.equal(await (await withCa.request({ method: "GET", url })).text(100), "secure");
      await assert.rejects(
        withCa.request({ method: "GET", url: new URL(`${tls.origin}/down`) }),
        (e) => e instanceof UserError && /refusing redirect from https to http/.test(e.message),
      );
      // certs.d/HOST:PORT/ca.crt
      const certDir = join(dir, "certs.d");
      await Deno.mkdir(join(certDir, tls.host), { recursive: true });
      await Deno.copyFile(certs.ca, join(certDir, tls.host, "ca.crt"));
      const withDir = await make({ certDir });
      assert.equal(await (await withDir.request({ method: "GET", url })).text(100), "secure");
      // No verification (node:https backend).
      const insecure = await make({ tlsVerify: false });
      const res = await insecure.request({ method: "PUT", url, body: enc.encode("abc") });
      assert.equal(res.status, 200);
      assert.equal(await res.text(100), "secure");
      await assert.rejects(
        insecure.request({ method: "GET", url: new URL(`${tls.origin}/down`) }),
        /refusing redirect from https to http/,
      );
    } finally {
      for (const t of transports) t.close();
      await tls.stop();
      await plain.stop();
    }
  });
});

/**
 * A fake registry with bearer auth: /token hands out tokens (anonymous or with Basic
 * credentials u:p), /v2/r/manifests/t needs one, /v2/r/blobs/… redirects to a second
 * origin that records what it got.
 */
function fakeBearerRegistry() {
  const tokenRequests: URL[] = [];
  const tokenAuth: (string | null)[] = [];
  const storage: Headers[] = [];
  let issued = 0;
  let unauthorized = 0;
  const manifest = enc.encode(JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {
      mediaType: "application/vnd.oci.empty.v1+json",
      digest: digestOf(enc.encode("{}")),
      size: 2,
    },
    layers: [],
  }));
  const blob = enc.encode("0123456789");
  const second = serve((req) => {
    storage.push(req.headers);
    return new Response(blob);
  });
  const valid = new Set<string>();
  const reg = serve((req) => {
    const url = new URL(req.url);
    if (url.pathname === "/token") {
      tokenRequests.push(url);
      tokenAuth.push(req.headers.get("authorization"));
      const token = `tok-${++issued}`;
      valid.add(token);
      return Response.json({ token, expires_in: 10 });
    }
    const auth = req.headers.get("authorization");
    if (!auth || !valid.has(auth.replace(/^Bearer /, ""))) {
      unauthorized++;
      const h = new Headers();
      h.append(
        "www-authenticate",
        `Bearer realm="${reg.origin}/token",service="fake registry",scope="repository:r:pull"`,
      );
      h.append("www-authenticate", 'Basic realm="fake"');
      return Response.json({ errors: [{ code: "UNAUTHORIZED", message: "no" }] }, {
        status: 401,
        headers: h,
      });
    }
    if (
      url.pathname === "/v2/r/manifests/t" ||
      url.pathname === `/v2/r/manifests/${digestOf(manifest)}`
    ) {
      return new Response(req.method === "HEAD" ? null : manifest, {
        headers: {
          "content-type": "application/vnd.oci.image.manifest.v1+json",
          "docker-content-digest": digestOf(manifest),
          "content-length": String(manifest.length),
        },
      });
    }
    if (url.pathname.startsWith("/v2/r/blobs/")) {
      return new Response(null, {
        status: 307,
        headers: { location: `${second.origin}/data?X-Sig=abc` },
      });
    }
    return new Response(null, { status: 404 });
  });
  return {
    reg,
    manifest,
    blob,
    tokenRequests,
    tokenAuth,
    storage,
    get unauthorized() {
      return unauthorized;
    },
    stop: async () => {
      await reg.stop();
      await second.stop();
    },
  };
}

Deno.test("auth: anonymous bearer token fetched once, cached, and never sent to a redirect target", async () => {
  const fake = fakeBearerRegistry();
  const rec = recorder();
  const store = await openRegistry(`${fake.reg.host}/r:t`, { plainHttp: true, trace: rec.trace });
  try {
    const desc = await store.resolve({ tag: "t" });
    assert.equal(desc.digest, digestOf(fake.manifest));
    assert.equal(fake.tokenRequests.length, 1);
    const q = fake.tokenRequests[0].searchParams;
    assert.equal(q.get("service"), "fake registry");
    assert.deepEqual(q.getAll("scope"), ["repository:r:pull"]);
    assert.equal(fake.tokenAuth[0], null, "anonymous: no Authorization to the token server");

    // Cached: more requests, no new token, no new 401.
    const before = fake.unauthorized;
    assert.deepEqual(await store.fetchManifest(desc), fake.manifest);
    assert.equal(await store.resolve({ digest: desc.digest }).then((d) => d.size), desc.size);
    assert.equal(fake.tokenRequests.length, 1);
    assert.equal(fake.unauthorized, before);

    // Blob GET: 307 to another origin, which must not see the token.
    const blobDesc = {
      mediaType: "application/octet-stream",
      digest: digestOf(fake.blob),
      size: fake.blob.length,
    };
    const { stream, offset } = await store.fetch(blobDesc, 0);
    assert.equal(offset, 0);
    assert.deepEqual(new Uint8Array(await new Response(stream).arrayBuffer()), fake.blob);
    assert.equal(fake.storage.length, 1);
    assert.equal(fake.storage[0].get("authorization"), null);

    assert.ok(!rec.lines.some((l) => /tok-\d/.test(l)), "tokens never appear in traces");
  } finally {
    await store.close();
    await fake.stop();
  }
});

Deno.test("auth: credentials go to the token server as Basic, with account=", async () => {
  const fake = fakeBearerRegistry();
  const store = await openRegistry(`${fake.reg.host}/r:t`, {
    plainHttp: true,
    credentials: { username: "u", password: "p" },
  });
  try {
    await store.resolve({ tag: "t" });
    assert.equal(fake.tokenAuth[0], `Basic ${btoa("u:p")}`);
    assert.equal(fake.tokenRequests[0].searchParams.get("account"), "u");
  } finally {
    await store.close();
    await fake.stop();
  }
});

Deno.test("manifests: HEAD without digest falls back to one GET; schema1, oversize and type confusion refused", async () => {
  const OCI = "application/vnd.oci.image.manifest.v1+json";
  const good = enc.encode(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI,
    config: {
      mediaType: "application/vnd.oci.empty.v1+json",
      digest: digestOf(enc.encode("{}")),
      size: 2,
    },
    layers: [],
  }));
  const lying = enc.encode(JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [],
  }));
  const gets: string[] = [];
  const fake = serve((req) => {
    const tag = new URL(req.url).pathname.split("/").pop()!;
    if (req.method === "GET") gets.push(tag);
    const body = (b: Uint8Array, type: string, extra: Record<string, string> = {}) =>
      new Response(req.method === "HEAD" ? null : b as Uint8Array<ArrayBuffer>, {
        headers: { "content-type": type, "content-length": String(b.length), ...extra },
      });
    switch (tag) {
      case "nodigest": // no Docker-Content-Digest; Content-Type with a parameter
        return body(good, `${OCI}; charset=utf-8`);
      case "schema1":
        return body(
          enc.encode('{"schemaVersion":1}'),
          "application/vnd.docker.distribution.manifest.v1+prettyjws",
        );
      case "lying": // the body says index, Content-Type says manifest
        return body(lying, OCI);
      case "huge": // chunked, no Content-Length
        if (req.method === "HEAD") return body(good, OCI);
        return new Response(ReadableStream.from([1, 2, 3, 4, 5].map(() => new Uint8Array(MiB))), {
          headers: { "content-type": OCI },
        });
      case "huge2": // announced by Content-Length
        return body(new Uint8Array(5 * MiB), OCI);
      case "nohead":
        if (req.method === "HEAD") return new Response(null, { status: 405 });
        return body(good, OCI, { "docker-content-digest": digestOf(good) });
    }
    return new Response(null, { status: 404 });
  });
  const store = await openRegistry(`${fake.host}/m/x`);
  try {
    const desc = await store.resolve({ tag: "nodigest" });
    assert.deepEqual(desc, { mediaType: OCI, digest: digestOf(good), size: good.length });
    assert.deepEqual(await store.fetchManifest(desc), good);
    assert.deepEqual(gets, ["nodigest"], "the GET done by resolve is not repeated");

    await assert.rejects(
      store.resolve({ tag: "schema1" }),
      /Docker schema1 manifests are not supported/,
    );
    await assert.rejects(store.resolve({ tag: "lying" }), /contradicts Content-Type/);
    // HEAD says a small manifest, GET streams 5 MiB without Content-Length: cut off.
    const huge = await store.resolve({ tag: "huge" }).catch((e) => e);
    assert.ok(
      huge instanceof UserError && /more than the 4194304 bytes allowed/.test(huge.message),
      String(huge),
    );
    // Content-Length over the limit: refused before reading.
    const huge2 = await store.resolve({ tag: "huge2" }).catch((e) => e);
    assert.ok(
      huge2 instanceof UserError && /is 5242880 bytes, more than the 4194304/.test(huge2.message),
      String(huge2),
    );
    assert.equal((await store.resolve({ tag: "nohead" })).digest, digestOf(good));
  } finally {
    await store.close();
    await fake.stop();
  }
});

// ---------------------------------------------------------------------------------------
// The real registry

Deno.test("registry: push a umoci-built image, pull it back, every blob byte-identical", async () => {
  await withRegistry(async (reg) => {
    await withTempDir(async (dir) => {
      const src = join(dir, "src");
      const root = await buildUmociImage(src, "v1", { layers: 3, layerBytes: 200_000 });
      await buildRandomImage(src, "big", { layerSizes: [3 * MiB, 1000], raw: true });
      const rec = recorder();
      const opts = { plainHttp: true, trace: rec.trace };
      const pushed = await push(src, "v1", `${reg.host}/umoci/app`, opts);
      assert.equal(pushed.root.digest, root.digest);
      await push(src, "big", `${reg.host}/umoci/app`, opts);

      const back = join(dir, "back");
      const pulled = await pull(`${reg.host}/umoci/app`, { tag: "v1" }, back, "v1", opts);
      assert.equal(pulled.root.digest, root.digest);
      assert.equal(pulled.root.mediaType, root.mediaType);
      await pull(`${reg.host}/umoci/app`, { tag: "big" }, back, "big", opts);
      await assertSameContent(src, "v1", back, "v1");
      await assertSameContent(src, "big", back, "big");
      await assertBlobsVerify(back);
      // umoci itself can read what came back.
      await mustRun("umoci", ["stat", "--image", `${back}:v1`]);

      // By digest too.
      const byDigest = await pull(
        `${reg.host}/umoci/app`,
        { digest: root.digest },
        join(dir, "d"),
        "x",
        opts,
      );
      assert.equal(byDigest.root.digest, root.digest);
    });
  });
});

Deno.test("registry: re-pull makes no blob GET, re-push no blob upload", async () => {
  await withRegistry(async (reg) => {
    await withTempDir(async (dir) => {
      const src = join(dir, "src");
      await buildMultiPlatformIndex(src, "multi", ["linux/amd64", "linux/arm64", "linux/s390x"]);
      const rec = recorder();
      const opts = { plainHttp: true, trace: rec.trace };
      const target = `${reg.host}/counts/app`;

      await push(src, "multi", target, opts);
      const firstUploads = rec.count(/^> POST \S+\/blobs\/uploads\/ /);
      assert.ok(firstUploads >= 5, `first push uploads blobs (${firstUploads})`);
      rec.clear();
      await push(src, "multi", target, opts);
      assert.equal(rec.count(/^> (POST|PATCH|PUT) .*\/blobs\/uploads\//), 0, rec.lines.join("\n"));
      assert.equal(rec.count(/^> PUT .*\/manifests\/sha256:/), 0, "no manifest re-sent by digest");

      const back = join(dir, "back");
      await pull(target, { tag: "multi" }, back, "multi", opts);
      rec.clear();
      await pull(target, { tag: "multi" }, back, "multi", opts);
      assert.equal(rec.count(/^> GET .*\/blobs\//), 0, rec.lines.join("\n"));
      assert.equal(rec.count(/^> GET .*\/manifests\//), 0, "manifests read from the layout");
      assert.equal(rec.count(/^> /), 1, "one HEAD to resolve the tag");
      await assertSameContent(src, "multi", back, "multi");
    });
  });
});

Deno.test("registry: cross-repository mount transfers no blob bytes", async () => {
  await withRegistry(async (reg) => {
    await withTempDir(async (dir) => {
      const src = join(dir, "src");
      const built = await buildRandomImage(src, "v1", { layerSizes: [2 * MiB, 4000] });
      await push(src, "v1", `${reg.host}/team/one`, { plainHttp: true });

      const rec = recorder();
      const opts = { plainHttp: true, trace: rec.trace };
      const result = await withStores(
        [
          () => openRegistry(`${reg.host}/team/one`, opts),
          () => openRegistry(`${reg.host}/team/two`, opts),
        ],
        (a, b) => copyImage(a, b, { tag: "v1" }, "v1"),
      );
      const blobs = 1 + built.layers.length;
      assert.equal(result.stats.blobsMounted, blobs);
      assert.equal(
        rec.count(
          /^> POST .*\/team\/two\/blobs\/uploads\/\?mount=sha256%3A[0-9a-f]{64}&from=team%2Fone/,
        ),
        blobs,
      );
      assert.equal(rec.count(/^< 201 POST .*mount=/), blobs);
      assert.equal(rec.count(/^> GET .*\/blobs\//), 0);
      assert.equal(rec.count(/^> (PATCH|PUT) .*\/blobs\/uploads\//), 0);

      await pull(`${reg.host}/team/two`, { tag: "v1" }, join(dir, "back"), "v1");
      await assertSameContent(src, "v1", join(dir, "back"), "v1");

      // A blob the source repository does not have: 202, session cancelled, false.
      const missing = enc.encode("not anywhere");
      const store = await openRegistry(`${reg.host}/team/three`, {
        plainHttp: true,
        trace: rec.trace,
      });
      const other = await openRegistry(`${reg.host}/team/one`, { plainHttp: true });
      try {
        rec.clear();
        const desc = {
          mediaType: "application/octet-stream",
          digest: digestOf(missing),
          size: missing.length,
        };
        assert.equal(await store.mount(desc, other), false);
        assert.equal(rec.count(/^< 202 POST .*mount=/), 1);
        assert.equal(rec.count(/^> DELETE .*\/blobs\/uploads\//), 1);
        // Same repository, or not a registry: no request at all.
        rec.clear();
        assert.equal(await store.mount(desc, store), false);
        assert.equal(rec.lines.length, 0);
      } finally {
        await other.close();
        await store.close();
      }
    });
  });
});

Deno.test("registry: a 64 MiB blob goes up in PATCH chunks, each with a correct Content-Length", async () => {
  await withRegistry(async (reg) => {
    await withTempDir(async (dir) => {
      const src = join(dir, "src");
      const built = await buildRandomImage(src, "big", { layerSizes: [64 * MiB], raw: true });
      const layer = built.layers[0];
      const proxy = await startChaosProxy(reg.url);
      try {
        const rec = recorder();
        let peak = 0;
        const base = Deno.memoryUsage().rss;
        const sampler = setInterval(() => peak = Math.max(peak, Deno.memoryUsage().rss - base), 10);
        let t0 = performance.now();
        try {
          await push(src, "big", `${proxy.host}/big/blob`, {
            plainHttp: true,
            trace: rec.trace,
            chunkSize: 16 * MiB,
          });
        } finally {
          clearInterval(sampler);
        }
        const pushMs = performance.now() - t0;

        const uploads = proxy.log.filter((e) => /\/blobs\/uploads\//.test(e.path));
        const patches = uploads.filter((e) => e.method === "PATCH");
        assert.equal(patches.length, 4, "64 MiB in 16 MiB chunks");
        let expectStart = 0;
        for (const p of patches) {
          const lengths = p.rawHeaders.filter(([k]) => k.toLowerCase() === "content-length");
          assert.equal(lengths.length, 1, "exactly one Content-Length");
          assert.equal(
            Number(lengths[0][1]),
            p.requestBodyBytes,
            "Content-Length matches the body",
          );
          assert.equal(p.requestHeaders.get("transfer-encoding"), null, "not chunked");
          assert.equal(p.requestHeaders.get("content-type"), "application/octet-stream");
          assert.equal(
            p.requestHeaders.get("content-range"),
            `${expectStart}-${expectStart + p.requestBodyBytes - 1}`,
          );
          expectStart += p.requestBodyBytes;
          assert.equal(p.status, 202);
        }
        assert.equal(expectStart, layer.size);
        const close = uploads.filter((e) =>
          e.method === "PUT" && e.path.includes(`digest=${encodeURIComponent(layer.digest)}`)
        );
        assert.equal(close.length, 1);
        assert.equal(close[0].requestHeaders.get("content-length"), "0");
        // Every upload request carried a Content-Length, none was chunked.
        for (const e of uploads) {
          assert.ok(
            e.requestHeaders.has("content-length") || e.method === "DELETE",
            `${e.method} ${e.path}`,
          );
          assert.equal(e.requestHeaders.get("transfer-encoding"), null);
        }

        t0 = performance.now();
        const back = join(dir, "back");
        await pull(`${reg.host}/big/blob`, { tag: "big" }, back, "big");
        const pullMs = performance.now() - t0;
        await assertSameContent(src, "big", back, "big");
        console.log(
          `64 MiB blob: push ${Math.round(pushMs)} ms via recording proxy ` +
            `(${patches.length} PATCH + 1 PUT, peak RSS growth ${Math.round(peak / MiB)} MiB), ` +
            `pull ${Math.round(pullMs)} ms direct`,
        );
      } finally {
        await proxy.close();
      }
    });
  });
});

Deno.test("registry: content that does not match its digest is never committed", async () => {
  await withRegistry(async (reg) => {
    const rec = recorder();
    for (const chunkSize of [16 * MiB, 1 * MiB]) {
      const store = await openRegistry(`${reg.host}/bad/blob`, {
        plainHttp: true,
        trace: rec.trace,
        chunkSize,
      });
      try {
        rec.clear();
        const real = new Uint8Array(3 * MiB).fill(7);
        const claimed = {
          mediaType: "application/octet-stream",
          digest: digestOf(enc.encode("other")),
          size: real.length,
        };
        await assert.rejects(
          store.push(
            claimed,
            (offset) =>
              Promise.resolve({ stream: ReadableStream.from([real.subarray(offset)]), offset }),
          ),
          (e) => e instanceof UserError && /digest mismatch/.test(e.message),
        );
        assert.equal(rec.count(/^> PUT .*digest=/), 0, "no closing PUT");
        assert.equal(rec.count(/^> DELETE .*\/blobs\/uploads\//), 1, "session cancelled");
        assert.equal(await store.exists(claimed), false);
        // Too long for its descriptor: refused as soon as it overruns.
        rec.clear();
        const short = { ...claimed, digest: digestOf(real.subarray(0, 1000)), size: 1000 };
        await assert.rejects(
          store.push(
            short,
            (offset) =>
              Promise.resolve({ stream: ReadableStream.from([real.subarray(offset)]), offset }),
          ),
          /larger than its descriptor size/,
        );
        assert.equal(rec.count(/^> PUT .*digest=/), 0);
      } finally {
        await store.close();
      }
    }
  });
});

Deno.test("registry: a source that breaks off mid-blob is resumed at the right offset", async () => {
  await withRegistry(async (reg) => {
    const store = await openRegistry(`${reg.host}/resume/blob`, {
      plainHttp: true,
      chunkSize: MiB,
    });
    try {
      const data = new Uint8Array(3 * MiB + 123);
      crypto.getRandomValues(data.subarray(0, 65536));
      for (let i = 65536; i < data.length; i += 65536) {
        data.copyWithin(i, 0, Math.min(65536, data.length - i));
      }
      data[data.length - 1] = 9;
      const desc = {
        mediaType: "application/octet-stream",
        digest: digestOf(data),
        size: data.length,
      };
      const opened: number[] = [];
      await store.push(desc, (offset) => {
        opened.push(offset);
        // First stream dies after 1.5 MiB; the second one restarts at 0 (no seeking).
        if (opened.length === 1) {
          let sent = false;
          return Promise.resolve({
            stream: new ReadableStream({
              pull(c) {
                if (!sent) {
                  c.enqueue(data.slice(0, 1.5 * MiB));
                  sent = true;
                } else c.error(new Error("connection reset"));
              },
            }),
            offset: 0,
          });
        }
        return Promise.resolve({ stream: ReadableStream.from([data.slice()]), offset: 0 });
      });
      assert.deepEqual(opened, [0, 1.5 * MiB]);
      assert.equal(await store.exists(desc), true);
      const { stream } = await store.fetch(desc);
      assert.equal(
        await srcDigestOf(new Uint8Array(await new Response(stream).arrayBuffer())),
        desc.digest,
      );
      // Range reads.
      const part = await store.fetch(desc, 2 * MiB);
      assert.equal(part.offset, 2 * MiB);
      assert.deepEqual(
        new Uint8Array(await new Response(part.stream).arrayBuffer()),
        data.subarray(2 * MiB),
      );
      const end = await store.fetch(desc, desc.size);
      assert.equal((await new Response(end.stream).arrayBuffer()).byteLength, 0);
    } finally {
      await store.close();
    }
  });
});

Deno.test("registry: errors are one line with the registry's code; missing things are NotFoundError", async () => {
  await withRegistry(async (reg) => {
    await withTempDir(async (dir) => {
      const store = await openRegistry(`${reg.host}/errs/app`);
      try {
        await assert.rejects(
          store.resolve({ tag: "nope" }),
          (e) =>
            e instanceof NotFoundError &&
            e.message === `manifest nope not found in ${reg.host}/errs/app`,
        );
        const blob = {
          mediaType: "application/octet-stream",
          digest: digestOf(enc.encode("x")),
          size: 1,
        };
        await assert.rejects(store.fetch(blob), NotFoundError);
        assert.equal(await store.exists(blob), false);

        // A manifest whose blobs are missing.
        const built = await buildRandomImage(join(dir, "l"), "v1", { layerSizes: [10] });
        const bytes = await Deno.readFile(blobFile(join(dir, "l"), built.manifest.digest));
        await assert.rejects(store.pushManifest(built.manifest, bytes), (e) => {
          assert.ok(e instanceof UserError);
          assert.match(
            e.message,
            new RegExp(
              `^${
                reg.host.replaceAll(".", "\\.")
              }: PUT /v2/errs/app/manifests/sha256:[0-9a-f]{64}: ` +
                `400 MANIFEST_BLOB_UNKNOWN: blob unknown to registry`,
            ),
          );
          assert.ok(!e.message.includes("\n"));
          return true;
        });
      } finally {
        await store.close();
      }
      // Nothing listens: a one-line connection error naming the registry.
      const port = (() => {
        const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
        const p = (l.addr as Deno.NetAddr).port;
        l.close();
        return p;
      })();
      const dead = await openRegistry(`127.0.0.1:${port}/x/y`);
      try {
        await assert.rejects(
          dead.resolve({ tag: "t" }),
          (e) =>
            e instanceof UserError && e.message.startsWith(`127.0.0.1:${port}: HEAD`) &&
            /refused/i.test(e.message),
        );
      } finally {
        await dead.close();
      }
    });
  });
});

Deno.test("registry: a referrer without OCI-Subject support updates the sha256-<hex> fallback tag", async () => {
  await withRegistry(async (reg) => {
    await withTempDir(async (dir) => {
      const src = join(dir, "src");
      const image = await buildRandomImage(src, "v1", { layerSizes: [100] });
      const sbom = await buildArtifact(src, "sbom", { subject: image.manifest });
      const sig = await buildArtifact(src, "sig", {
        subject: image.manifest,
        artifactType: "application/vnd.example.signature.v1",
      });
      const target = `${reg.host}/refs/app`;
      await push(src, "v1", target);
      await push(src, "sbom", target);
      await push(src, "sig", target);

      const fallback = `sha256-${image.manifest.digest.slice("sha256:".length)}`;
      const store = await openRegistry(target);
      try {
        const desc = await store.resolve({ tag: fallback });
        assert.equal(desc.mediaType, "application/vnd.oci.image.index.v1+json");
        const index = JSON.parse(dec.decode(await store.fetchManifest(desc)));
        assert.deepEqual(index.manifests.map((m: Descriptor) => [m.digest, m.artifactType]), [
          [sbom.manifest.digest, "application/vnd.example.sbom.v1+json"],
          [sig.manifest.digest, "application/vnd.example.signature.v1"],
        ]);
        assert.deepEqual(index.manifests[0].annotations, {
          "org.opencontainers.image.created": "2024-01-01T00:00:00Z",
        });
        // Pushing the same referrer again (a new session) adds no duplicate.
        const bytes = await Deno.readFile(blobFile(src, sbom.manifest.digest));
        await store.pushManifest(sbom.manifest, bytes);
        const again = await store.resolve({ tag: fallback });
        const index2 = JSON.parse(dec.decode(await store.fetchManifest(again)));
        assert.equal(index2.manifests.length, 2);
      } finally {
        await store.close();
      }
    });
  });
});

Deno.test("skopeo → registry → store: OCI, Docker v2s2, OCI index and Docker list pulled identically", async () => {
  await withRegistry(async (reg) => {
    await withTempDir(async (dir) => {
      const src = join(dir, "src");
      await buildUmociImage(src, "oci", { layers: 2 });
      await buildMultiPlatformIndex(src, "multi", ["linux/amd64", "linux/arm64", "linux/arm/v7"]);
      await buildDockerManifestList(src, "dlist", ["linux/amd64", "linux/ppc64le"]);
      // skopeo 1.9 cannot read a Docker manifest list from an OCI layout, so that one goes
      // in through our store and skopeo copies it registry → registry.
      await push(src, "dlist", `${reg.host}/staging/dlist`);
      const cases: [string, string, string[]][] = [
        [`oci:${src}:oci`, "sk/oci:v1", []],
        [`oci:${src}:oci`, "sk/v2s2:v1", ["--format", "v2s2"]],
        [`oci:${src}:multi`, "sk/multi:v1", ["--all"]],
        [`docker://${reg.host}/staging/dlist:dlist`, "sk/dlist:v1", [
          "--all",
          "--src-tls-verify=false",
        ]],
      ];
      for (const [from, image, flags] of cases) {
        const r = await skopeoCopy([
          "copy",
          ...flags,
          "--dest-tls-verify=false",
          from,
          `docker://${reg.host}/${image}`,
        ]);
        assert.equal(r.code, 0, r.stderr);
        const raw = await skopeoRaw(`${reg.host}/${image}`);
        const [repo, itag] = image.split(":");
        const back = join(dir, repo.replace("/", "-"));
        const { root, stats } = await pull(`${reg.host}/${repo}`, { tag: itag }, back, itag);
        assert.equal(root.digest, digestOf(raw), `${image}: same manifest digest as skopeo sees`);
        assert.deepEqual(
          await Deno.readFile(blobFile(back, root.digest)),
          raw,
          `${image}: same bytes`,
        );
        if (flags.includes("--format")) {
          assert.equal(root.mediaType, "application/vnd.docker.distribution.manifest.v2+json");
        }
        if (flags.includes("--all")) {
          const doc = JSON.parse(dec.decode(raw));
          for (const m of doc.manifests) {
            const child = await skopeoRaw(`${reg.host}/${repo}@${m.digest}`);
            assert.deepEqual(await Deno.readFile(blobFile(back, m.digest)), child);
          }
          assert.ok(stats.manifestsCopied === doc.manifests.length + 1);
        }
        await assertBlobsVerify(back);
        assert.equal((await tagEntry(back, itag)).digest, root.digest);
      }
    });
  });
});

Deno.test("store → registry → skopeo: skopeo reads back identical bytes", async () => {
  await withRegistry(async (reg) => {
    await withTempDir(async (dir) => {
      const src = join(dir, "src");
      const built = await buildMultiPlatformIndex(src, "multi", ["linux/amd64", "linux/riscv64"]);
      await buildDockerManifestList(src, "dlist", ["linux/amd64"]);
      await push(src, "multi", `${reg.host}/ours/multi`);
      await push(src, "dlist", `${reg.host}/ours/dlist`);

      assert.deepEqual(
        await skopeoRaw(`${reg.host}/ours/multi:multi`),
        await Deno.readFile(blobFile(src, built.index.digest)),
      );
      for (const m of built.manifests) {
        assert.deepEqual(
          await skopeoRaw(`${reg.host}/ours/multi@${m.digest}`),
          await Deno.readFile(blobFile(src, m.digest)),
        );
      }
      const dl = (await tagEntry(src, "dlist")).digest;
      assert.deepEqual(
        await skopeoRaw(`${reg.host}/ours/dlist:dlist`),
        await Deno.readFile(blobFile(src, dl)),
      );

      // skopeo copies everything back into a layout, digests preserved.
      const out = join(dir, "skopeo-out");
      const r = await skopeoCopy([
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        `docker://${reg.host}/ours/multi:multi`,
        `oci:${out}:multi`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      await assertSameContent(src, "multi", out, "multi");
    });
  });
});

Deno.test("registry: Basic auth (htpasswd) with credentials; a clear error without", async () => {
  await withTempDir(async (dir) => {
    const htpasswd = join(dir, "htpasswd");
    const r = await run("htpasswd", ["-Bbn", "alice", "s3cret"]);
    assert.equal(r.code, 0, r.stderr);
    await Deno.writeTextFile(htpasswd, r.stdout);
    await withRegistry(async (reg) => {
      const src = join(dir, "src");
      await buildRandomImage(src, "v1", { layerSizes: [1000] });
      const rec = recorder();
      await assert.rejects(
        push(src, "v1", `${reg.host}/auth/app`, { plainHttp: true }),
        // No credentials: the 401 is "not found, or access denied", not a failed login.
        (e) =>
          e instanceof UserError &&
          e.message.startsWith(
            `${reg.host}/auth/app: not found, or access denied without credentials (`,
          ),
      );
      const creds = {
        plainHttp: true,
        trace: rec.trace,
        credentials: { username: "alice", password: "s3cret" },
      };
      await push(src, "v1", `${reg.host}/auth/app`, creds);
      await pull(`${reg.host}/auth/app`, { tag: "v1" }, join(dir, "back"), "v1", creds);
      await assertSameContent(src, "v1", join(dir, "back"), "v1");
      assert.ok(
        !rec.lines.some((l) => l.includes(btoa("alice:s3cret"))),
        "no credentials in traces",
      );
      assert.ok(rec.count(/^> .*authorization: "Basic <redacted>"/) > 0);
      // Wrong password: one retry at most, then the error.
      const bad = { plainHttp: true, credentials: { username: "alice", password: "nope" } };
      await assert.rejects(
        pull(`${reg.host}/auth/app`, { tag: "v1" }, join(dir, "back2"), "v1", bad),
        /authentication failed/,
      );
    }, { auth: { htpasswd: { realm: "test-realm", path: htpasswd } } });
  });
});

Deno.test("registry over TLS: CA file, certs.d, or no verification; push and pull", async () => {
  await withTempDir(async (dir) => {
    const certs = await makeCertificates(dir);
    await withRegistry(async (reg) => {
      assert.ok(reg.url.startsWith("https://"));
      const src = join(dir, "src");
      await buildRandomImage(src, "v1", { layerSizes: [3 * MiB + 5, 10], raw: true });
      const target = `${reg.host}/tls/app`;
      await assert.rejects(push(src, "v1", target, {}), /TLS verification failed|certificate/i);

      await push(src, "v1", target, { caCertFiles: [certs.ca], chunkSize: MiB });
      await pull(target, { tag: "v1" }, join(dir, "a"), "v1", { caCertFiles: [certs.ca] });
      await assertSameContent(src, "v1", join(dir, "a"), "v1");

      const certDir = join(dir, "certs.d");
      await Deno.mkdir(join(certDir, reg.host), { recursive: true });
      await Deno.copyFile(certs.ca, join(certDir, reg.host, "ca.crt"));
      await pull(target, { tag: "v1" }, join(dir, "b"), "v1", { certDir });
      await assertSameContent(src, "v1", join(dir, "b"), "v1");

      // No verification: chunked push into a new repository and a pull, over node:https.
      const rec = recorder();
      const insecure = { tlsVerify: false, chunkSize: MiB, trace: rec.trace };
      await push(src, "v1", `${reg.host}/tls/other`, insecure);
      assert.equal(rec.count(/^> PATCH /), 4);
      await pull(`${reg.host}/tls/other`, { tag: "v1" }, join(dir, "c"), "v1", insecure);
      await assertSameContent(src, "v1", join(dir, "c"), "v1");
    }, { tls: { certificate: certs.cert, key: certs.key } });
  });
});

// ---------------------------------------------------------------------------------------
// Through the CLI.

Deno.test({
  name: "CLI: umoci copy layout → oci:// → layout with --plain-http and --trace-requests",
  fn: async () => {
    await withRegistry(async (reg) => {
      await withTempDir(async (dir) => {
        const src = join(dir, "src");
        const root = await buildUmociImage(src, "v1", { layers: 2 });
        const up = await umoci([
          "copy",
          "--plain-http",
          `${src}:v1`,
          `oci://${reg.host}/cli/app:v1`,
        ]);
        assert.equal(up.code, 0, up.stderr);
        const raw = await skopeoRaw(`${reg.host}/cli/app:v1`);
        assert.equal(digestOf(raw), root.digest);

        const back = join(dir, "back");
        const down = await umoci([
          "copy",
          "--plain-http",
          "--trace-requests",
          `oci://${reg.host}/cli/app:v1`,
          `${back}:v1`,
        ]);
        assert.equal(down.code, 0, down.stderr);
        await assertSameContent(src, "v1", back, "v1");
        const traced = down.stdout + down.stderr;
        assert.match(traced, /GET http:\/\/127\.0\.0\.1:\d+\/v2\/cli\/app\/blobs\/sha256:/);

        // Again: nothing to transfer.
        const again = await umoci([
          "copy",
          "--plain-http",
          "--trace-requests",
          `oci://${reg.host}/cli/app:v1`,
          `${back}:v1`,
        ]);
        assert.equal(again.code, 0, again.stderr);
        assert.doesNotMatch(again.stdout + again.stderr, /GET \S+\/blobs\/sha256:/);

        // By digest, and a missing tag.
        const byDigest = await umoci([
          "copy",
          "--plain-http",
          `oci://${reg.host}/cli/app@${root.digest}`,
          `${join(dir, "d")}:x`,
        ]);
        assert.equal(byDigest.code, 0, byDigest.stderr);
        assert.equal((await readIndex(join(dir, "d"))).manifests[0].digest, root.digest);
        const missing = await umoci([
          "copy",
          "--plain-http",
          `oci://${reg.host}/cli/app:nope`,
          `${join(dir, "e")}:x`,
        ]);
        assert.notEqual(missing.code, 0);
        assert.match(missing.stderr, /nope/);
      });
    });
  },
});

Deno.test("registry: a source opened early that breaks once costs one retry, not two", async () => {
  // Found in review: after the early open, a reopen waited on the first (settled) open and
  // read from no reader, so one break used two retries and `--retries 1` failed.
  await withRegistry(async (reg) => {
    const store = await openRegistry(`${reg.host}/early/break`, { plainHttp: true, retries: 1 });
    try {
      const data = new Uint8Array(5 * MiB + 3);
      crypto.getRandomValues(data.subarray(0, 65536));
      const desc = {
        mediaType: "application/octet-stream",
        digest: digestOf(data),
        size: data.length,
      };
      const opened: number[] = [];
      await store.push(
        desc,
        (offset) => {
          opened.push(offset);
          let sent = offset;
          const first = opened.length === 1;
          const stream = new ReadableStream<Uint8Array>({
            pull(c) {
              if (first && sent >= 2 * MiB) return c.error(new Error("connection reset"));
              if (sent >= data.length) return c.close();
              const n = Math.min(256 * 1024, data.length - sent);
              c.enqueue(data.slice(sent, sent + n));
              sent += n;
            },
          });
          return Promise.resolve({ stream, offset });
        },
      );
      assert.equal(opened.length, 2, `opened at ${opened}`);
      assert.equal(await store.exists(desc), true);
      const { stream } = await store.fetch(desc);
      assert.equal(
        await srcDigestOf(new Uint8Array(await new Response(stream).arrayBuffer())),
        desc.digest,
      );
    } finally {
      await store.close();
    }
  });
});

Deno.test("registry: the source starts opening while the upload session is being opened", async () => {
  await withRegistry(async (reg) => {
    // Every POST answer comes 400 ms late: the source should be asked for long before.
    const proxy = await startChaosProxy(reg.url, [
      {
        method: "POST",
        path: /\/blobs\/uploads\/$/,
        times: Infinity,
        fault: { kind: "delay", ms: 400 },
      },
    ]);
    try {
      const store = await openRegistry(`${proxy.host}/prefetch/blob`);
      for (const size of [5 * MiB + 17, 3000]) { // streamed PATCH, then a monolithic PUT
        const data = new Uint8Array(size);
        crypto.getRandomValues(data.subarray(0, Math.min(size, 65536)));
        const desc = { mediaType: "application/octet-stream", digest: digestOf(data), size };
        const t0 = performance.now();
        let openedAt = -1;
        await store.push(desc, (offset) => {
          if (openedAt < 0) openedAt = performance.now() - t0;
          return Promise.resolve({ stream: ReadableStream.from([data.slice(offset)]), offset });
        });
        const took = performance.now() - t0;
        assert.ok(took >= 400, `the POST was delayed (${took} ms)`);
        assert.ok(openedAt >= 0 && openedAt < 200, `${size}: source opened at ${openedAt} ms`);
        assert.equal(await store.exists(desc), true);
        const { stream } = await store.fetch(desc);
        assert.equal(
          await srcDigestOf(new Uint8Array(await new Response(stream).arrayBuffer())),
          desc.digest,
        );
      }
      await store.close();
    } finally {
      await proxy.close();
    }
  });
});

Deno.test("describeNetworkError: fetch's wrapping is dropped, the cause kept, hints added", () => {
  assert.equal(
    describeNetworkError(
      new TypeError(
        "error sending request from 127.0.0.1:38768 for http://127.0.0.1:1/v2/r (127.0.0.1:1): " +
          "client error (SendRequest): connection closed before message completed",
      ),
    ),
    "connection closed before message completed",
  );
  assert.equal(
    describeNetworkError(
      new TypeError(
        "error sending request for url (https://h/v2/): client error (Connect): invalid peer " +
          "certificate: UnknownIssuer",
      ),
    ),
    "invalid peer certificate: UnknownIssuer (TLS verification failed: add the CA with " +
      "--cacert or a certs.d directory, or turn verification off for this registry)",
  );
  // Each TLS failure gets the hint that fits it.
  const hint = (cause: string) =>
    describeNetworkError(
      new TypeError(
        `error sending request for url (https://h/v2/): client error (Connect): ${cause}`,
      ),
    );
  assert.match(hint("received fatal alert: BadCertificate"), /refused the client certificate/);
  assert.match(hint("keys may not be consistent: KeyMismatch"), /refused the client certificate/);
  assert.match(
    hint(
      "invalid peer certificate: certificate expired: verification time 1, but certificate is not valid after 0",
    ),
    /outside its validity period/,
  );
  assert.match(
    hint("invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))"),
    /does not name this host/,
  );
  assert.match(hint("invalid peer certificate: NotValidForName"), /does not name this host/);
});

Deno.test("isTransientFailure: a client certificate refused or not matching its key is no passing fault", () => {
  for (
    const msg of [
      "client error (Connect): keys may not be consistent: KeyMismatch",
      "client error (Connect): received fatal alert: BadCertificate",
      "client error (Connect): received fatal alert: CertificateRequired",
    ]
  ) assert.equal(isTransientFailure(msg), false, msg);
  for (const msg of ["tcp connect error: Connection refused (os error 111)", "connection closed"]) {
    assert.equal(isTransientFailure(msg), true, msg);
  }
});
