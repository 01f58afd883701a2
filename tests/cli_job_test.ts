// Integration tests of many images in one job (`--images`, `--all-tags`) through the CLI,
// against the real docker-registry (Debian's distribution 2.8) and its access log: one
// connection pool per registry (TCP connections counted by the chaos proxy), one credential
// check per registry (--trace-requests), --jobs bounding the whole job, a blob shared by
// several images fetched from the source once, reruns at one request an image, and a bundle
// write killed half-way.
import assert from "node:assert/strict";
import { join } from "node:path";
import { spawnUmoci, umoci } from "./fixtures/cli.ts";
import { startChaosProxy } from "./fixtures/chaos.ts";
import * as fx from "./fixtures/images.ts";
import { startRegistry, withRegistryAndDir } from "./fixtures/registry.ts";
import { startAuthRegistry } from "./fixtures/auth_registry.ts";

const DIGEST_LINE = /^sha256:[a-f0-9]{64}$/;

/** A one-image copy that must work; returns the digest line. */
async function copyOk(args: string[]): Promise<string> {
  const r = await umoci(["copy", ...args], { timeoutMs: 90_000 });
  assert.equal(r.code, 0, `umoci copy ${args.join(" ")} failed:\n${r.stderr}`);
  assert.match(r.stdout.trim(), DIGEST_LINE, `stdout is the digest alone: ${r.stdout}`);
  return r.stdout.trim();
}

/** A job that must work; returns its stdout lines and stderr. */
async function jobOk(args: string[]): Promise<{ lines: string[]; stderr: string }> {
  const r = await umoci(["copy", ...args], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, `umoci copy ${args.join(" ")} failed:\n${r.stderr}`);
  assert.ok(!/^\s*at /m.test(r.stderr), r.stderr);
  return { lines: r.stdout.trim().split("\n"), stderr: r.stderr };
}

/**
 * Access-log lines from index `from` on, as "METHOD PATH STATUS" (a request the chaos proxy
 * forwarded names its target as an absolute URL: the origin is cut off).
 */
function since(all: string[], from: number): string[] {
  return all.slice(from).map((l) =>
    l.replace(/^(\S+) https?:\/\/[^/\s]+/, "$1 ").split(" ").slice(0, 3).join(" ")
  );
}

/** How many access-log lines are GETs of the blob `digest` (any repository) answered 200. */
function blobGets(log: string[], digest: string): number {
  return log.filter((l) => l === `GET ${l.split(" ")[1]} 200` && l.includes(`/blobs/${digest}`))
    .length;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** The ref.names and digests of an archive's index.json, read with GNU tar. */
async function archiveIndex(path: string): Promise<Map<string, string>> {
  const index = JSON.parse((await fx.mustRun("tar", ["-xOf", path, "index.json"])).stdout);
  return new Map(
    index.manifests.map((m: fx.Descriptor) => [m.annotations?.[fx.REF_NAME], m.digest]),
  );
}

/** Entries of `dir`. */
function entries(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}

/**
 * `count` images in repositories r0…r(count-1) of `host`, tag v1, each with a unique small
 * layer and one shared layer of `sharedSize` random bytes (in a tar). Returns their digests
 * (in order) and the shared layer's digest.
 */
async function pushImages(
  tmp: string,
  host: string,
  count: number,
  sharedSize: number,
): Promise<{ digests: string[]; shared: string }> {
  const src = join(tmp, "src");
  const big = new Uint8Array(sharedSize);
  for (let i = 0; i < sharedSize; i += 65536) {
    crypto.getRandomValues(big.subarray(i, Math.min(sharedSize, i + 65536)));
  }
  const layer = fx.tarOfFiles({ "base.bin": big });
  const digests: string[] = [];
  let sharedDigest = "";
  for (let i = 0; i < count; i++) {
    const built = await fx.buildRandomImage(src, `${i}`, {
      layerSizes: [1000 + i],
      sharedLayer: layer,
    });
    sharedDigest = built.layers[0].digest;
    digests.push(built.manifest.digest);
    await copyOk(["--plain-http", `${src}:${i}`, `oci://${host}/r${i}:v1`]);
  }
  return { digests, shared: sharedDigest };
}

Deno.test("cli job: 10 images of one registry share one connection pool; the shared blob is fetched once", async () => {
  const [a, b] = [
    await startRegistry({ accessLog: true }),
    await startRegistry({ accessLog: true }),
  ];
  const proxy = await startChaosProxy(a.url);
  try {
    await fx.withTempDir(async (tmp) => {
      const { digests, shared } = await pushImages(tmp, a.host, 10, 2 * 1024 * 1024);
      const list = join(tmp, "images.txt");
      await Deno.writeTextFile(
        list,
        digests.map((_, i) => `oci://${proxy.host}/r${i}:v1\n`).join(""),
      );
      const names = digests.map((_, i) => `oci://${proxy.host}/r${i}:v1`);

      // Into an archive through the proxy: few connections, the shared layer read once.
      let mark = a.requests().length;
      const bundle = join(tmp, "bundle.tar");
      const pack = await jobOk(["--plain-http", "--images", list, `oci-archive:${bundle}`]);
      // stdout: one line per image, in the order of the list, whatever order they finished in.
      assert.deepEqual(pack.lines, digests.map((d, i) => `${d} ${names[i]}`));
      // Every step line names its image.
      const steps = pack.stderr.split("\n").filter((l) => /^\[.*\] (Copying|Skipping)/.test(l));
      assert.ok(steps.length >= 10, pack.stderr);
      for (const l of pack.stderr.split("\n").filter((l) => /Copying (config|layer)/.test(l))) {
        assert.match(l, /^\[127\.0\.0\.1:\d+\/r\d:v1\] /);
      }
      assert.match(pack.stderr, /Images: 10 copied, 0 already present, 0 failed; 21 blobs/);
      assert.equal(blobGets(since(a.requests(), mark), shared), 1, "the shared layer: one GET");
      // The connections of one pool (as many as requests were in flight at once), where a
      // pool per repository opened two or more for each of the ten (21 before).
      const pooled = proxy.connections();
      assert.ok(pooled < 20, `${pooled} connections for 10 repositories`);
      const index = await archiveIndex(bundle);
      for (const [i, d] of digests.entries()) {
        assert.equal(index.get(`${proxy.host}/r${i}:v1`), d);
      }

      // -j 1: one image at a time, one large and two small transfers at once: the job needs
      // three connections at most, where a pool per repository opened one for each.
      const before = proxy.connections();
      await jobOk(["--plain-http", "-j", "1", "--images", list, join(tmp, "layout")]);
      const serial = proxy.connections() - before;
      assert.ok(serial <= 3, `${serial} connections for 10 repositories with -j 1`);

      // Into registry B under a prefix: the shared layer crosses once and is mounted into the
      // other nine repositories.
      mark = a.requests().length;
      const pushed = await jobOk(["--plain-http", "--images", list, `oci://${b.host}/mirror`]);
      assert.deepEqual(pushed.lines, digests.map((d, i) => `${d} ${names[i]}`));
      assert.equal(blobGets(since(a.requests(), mark), shared), 1, "the shared layer: one GET");
      const mounts = b.requests().filter((l) =>
        l.startsWith("POST ") && l.includes(`mount=${encodeURIComponent(shared)}`) &&
        / 201 /.test(l)
      );
      assert.equal(mounts.length, 9, b.requests().join("\n"));
      for (const [i, d] of digests.entries()) {
        const res = await fetch(`${b.url}/v2/mirror/r${i}/manifests/v1`, {
          method: "HEAD",
          headers: { accept: fx.OCI_MANIFEST },
        });
        await res.body?.cancel();
        assert.equal(res.headers.get("docker-content-digest"), d);
      }

      // A rerun: each image at one HEAD of its tag in B (and one HEAD of the source).
      const markA = a.requests().length;
      const markB = b.requests().length;
      const again = await jobOk(["--plain-http", "--images", list, `oci://${b.host}/mirror`]);
      assert.match(again.stderr, /Images: 0 copied, 10 already present, 0 failed; 0 blobs \(0 B\)/);
      const atB = since(b.requests(), markB);
      assert.deepEqual(
        atB.sort(),
        digests.map((_, i) => `HEAD /v2/mirror/r${i}/manifests/v1 200`).sort(),
      );
      const atA = since(a.requests(), markA);
      assert.deepEqual(atA.sort(), digests.map((_, i) => `HEAD /v2/r${i}/manifests/v1 200`).sort());

      // The way back from the bundle into B again: all present, one HEAD an image, no bytes.
      const markB2 = b.requests().length;
      const restore = await jobOk([
        "--plain-http",
        "--all-tags",
        `oci-archive:${bundle}`,
        `oci://${b.host}/mirror`,
      ]);
      assert.match(restore.stderr, /Images: 0 copied, 10 already present, 0 failed; 0 blobs/);
      const restoreRequests = since(b.requests(), markB2);
      assert.equal(restoreRequests.length, 10, restoreRequests.join("\n"));
      assert.ok(restoreRequests.every((l) => l.startsWith("HEAD ")), restoreRequests.join("\n"));
    });
  } finally {
    await proxy.close();
    await a.stop();
    await b.stop();
  }
});

for (const mode of ["htpasswd", "token"] as const) {
  Deno.test(`cli job: 4 repositories behind ${mode} auth: one 401 and one credential check per registry, tokens per repository`, async () => {
    const reg = await startAuthRegistry({ mode, tls: mode === "token", users: { alice: "pw-42" } });
    try {
      await fx.withTempDir(async (tmp) => {
        const src = join(tmp, "src");
        const side = mode === "token"
          ? ["--cacert", reg.caCert, "--creds", "alice:pw-42"]
          : ["--plain-http", "--creds", "alice:pw-42"];
        const digests: string[] = [];
        for (let i = 0; i < 4; i++) {
          const built = await fx.buildRandomImage(src, `${i}`, { layerSizes: [500 + i] });
          digests.push(built.manifest.digest);
          await copyOk([...side, `${src}:${i}`, `oci://${reg.host}/team/r${i}:v1`]);
        }
        const list = join(tmp, "images.txt");
        await Deno.writeTextFile(
          list,
          digests.map((_, i) => `oci://${reg.host}/team/r${i}:v1\n`).join(""),
        );
        const tokensBefore = reg.tokenServer?.requests.length ?? 0;
        const r = await jobOk([...side, "--trace-requests", "--images", list, join(tmp, "out")]);
        assert.deepEqual(
          r.lines,
          digests.map((d, i) => `${d} oci://${reg.host}/team/r${i}:v1`),
        );
        const trace = r.stderr.split("\n");
        const pings = trace.filter((l) => new RegExp(`^> GET \\S+//${reg.host}/v2/ `).test(l));
        const challenged = trace.filter((l) => /^< 401 /.test(l));
        // The registry's challenge is learnt once for the job, not once per repository.
        assert.equal(challenged.length, 1, challenged.join("\n"));
        if (mode === "htpasswd") {
          // Basic credentials are checked with one GET /v2/ per registry.
          assert.equal(pings.length, 1, pings.join("\n"));
        } else {
          // A token is scoped to its repository: one token request per repository.
          const asked = reg.tokenServer!.requests.slice(tokensBefore);
          assert.equal(asked.length, 4, JSON.stringify(asked));
        }
      });
    } finally {
      await reg.stop();
    }
  });
}

Deno.test("cli job: a bundle write killed half-way leaves no file at PATH; a rerun completes it", async () => {
  const reg = await startRegistry();
  const proxy = await startChaosProxy(reg.url);
  try {
    await fx.withTempDir(async (tmp) => {
      const { digests } = await pushImages(tmp, reg.host, 4, 2 * 1024 * 1024);
      const list = join(tmp, "images.txt");
      await Deno.writeTextFile(
        list,
        digests.map((_, i) => `oci://${proxy.host}/r${i}:v1\n`).join(""),
      );
      const out = join(tmp, "out");
      await Deno.mkdir(out);
      const bundle = join(out, "bundle.tar");
      // Blobs come in 64 KiB pieces 50 ms apart (the shared 2 MiB layer ≈ 1.6 s).
      proxy.rules.push({
        method: "GET",
        path: /\/blobs\/sha256:/,
        times: Infinity,
        fault: { kind: "trickle", bytesPerChunk: 64 * 1024, delayMs: 50 },
      });
      const args = ["copy", "--plain-http", "--images", list, `oci-archive:${bundle}`];
      const child = spawnUmoci(args);
      const deadline = Date.now() + 30_000;
      for (;;) {
        const temps = entries(out).filter((n) => n.endsWith(".tmp"));
        if (temps.length > 0 && (await Deno.stat(join(out, temps[0]))).size > 512 * 1024) break;
        assert.ok(Date.now() < deadline, "the job started writing the bundle");
        await new Promise((r) => setTimeout(r, 20));
      }
      child.kill("SIGKILL");
      const status = await child.status;
      await child.stdout.cancel();
      await child.stderr.cancel();
      assert.equal(status.success, false);
      assert.equal(await exists(bundle), false, "nothing at PATH");
      proxy.rules.length = 0;
      // The rerun writes the whole bundle (and removes the temp file the kill left).
      const r = await jobOk(args.slice(1));
      assert.deepEqual(r.lines, digests.map((d, i) => `${d} oci://${proxy.host}/r${i}:v1`));
      assert.match(r.stderr, /Images: 4 copied, 0 already present, 0 failed; 9 blobs/);
      assert.deepEqual(entries(out), ["bundle.tar"]);
      const index = await archiveIndex(bundle);
      for (const [i, d] of digests.entries()) assert.equal(index.get(`${proxy.host}/r${i}:v1`), d);
      // skopeo reads it: every digest as the source's.
      const raw = await fx.runRaw("skopeo", [
        "--insecure-policy",
        "inspect",
        "--raw",
        `oci-archive:${bundle}:${proxy.host}/r3:v1`,
      ]);
      assert.equal(raw.code, 0, raw.stderr);
      assert.equal(fx.digestOf(raw.stdout), digests[3]);
    });
  } finally {
    await proxy.close();
    await reg.stop();
  }
});

Deno.test("cli job: repositories of one registry with credentials of their own keep their own tokens", async () => {
  const users = { alice: "alice-pw-1", bob: "bob-pw-2" };
  // alice may use team/a only, bob team/b only.
  const reg = await startAuthRegistry({
    mode: "token",
    tls: true,
    users,
    allow: (user, scope) =>
      (user === "alice" && scope.name === "team/a") || (user === "bob" && scope.name === "team/b")
        ? ["*"]
        : [],
  });
  try {
    await fx.withTempDir(async (tmp) => {
      const src = join(tmp, "src");
      const digests: string[] = [];
      for (const [i, [repo, user]] of [["team/a", "alice"], ["team/b", "bob"]].entries()) {
        const built = await fx.buildRandomImage(src, `${i}`, { layerSizes: [700 + i] });
        digests.push(built.manifest.digest);
        await copyOk([
          "--cacert",
          reg.caCert,
          "--creds",
          `${user}:${users[user as "alice" | "bob"]}`,
          `${src}:${i}`,
          `oci://${reg.host}/${repo}:v1`,
        ]);
      }
      // An auth file keyed by repository: a credential for each.
      const auth = (u: "alice" | "bob") => ({ auth: btoa(`${u}:${users[u]}`) });
      const authfile = join(tmp, "auth.json");
      await Deno.writeTextFile(
        authfile,
        JSON.stringify({
          auths: { [`${reg.host}/team/a`]: auth("alice"), [`${reg.host}/team/b`]: auth("bob") },
        }),
      );
      const list = join(tmp, "images.txt");
      await Deno.writeTextFile(list, `oci://${reg.host}/team/a:v1\noci://${reg.host}/team/b:v1\n`);
      const before = reg.tokenServer!.requests.length;
      const r = await jobOk([
        "--cacert",
        reg.caCert,
        "--authfile",
        authfile,
        "--images",
        list,
        join(tmp, "out"),
      ]);
      assert.deepEqual(r.lines, [
        `${digests[0]} oci://${reg.host}/team/a:v1`,
        `${digests[1]} oci://${reg.host}/team/b:v1`,
      ]);
      // Each repository's token was asked for with its own credential and granted.
      const asked = reg.tokenServer!.requests.slice(before).map((t) =>
        `${t.user} ${t.scopes.join(" ")} ${t.status}`
      ).sort();
      assert.deepEqual(asked, [
        "alice repository:team/a:pull 200",
        "bob repository:team/b:pull 200",
      ]);
    });
  } finally {
    await reg.stop();
  }
});

Deno.test("cli job: a retry line of an image copied beside others names that image", async () => {
  await withRegistryAndDir(async (a, tmp) => {
    const proxy = await startChaosProxy(a.url);
    try {
      const src = join(tmp, "src");
      const built = [];
      for (const i of [0, 1]) {
        built.push(await fx.buildRandomImage(src, `${i}`, { layerSizes: [3000 + i] }));
        await copyOk(["--plain-http", `${src}:${i}`, `oci://${a.host}/r${i}:v1`]);
      }
      // r1's layer answers 503 once: the retry that follows is r1's, and says so.
      proxy.rules.push({
        method: "GET",
        path: new RegExp(`^/v2/r1/blobs/${built[1].layers[0].digest}$`),
        fault: { kind: "status", status: 503 },
      });
      const list = join(tmp, "images.txt");
      await Deno.writeTextFile(list, `oci://${proxy.host}/r0:v1\noci://${proxy.host}/r1:v1\n`);
      const job = await jobOk(["--plain-http", "--images", list, join(tmp, "out")]);
      const retries = job.stderr.split("\n").filter((l) => l.includes("! retry"));
      assert.equal(retries.length, 1, job.stderr);
      assert.match(retries[0], new RegExp(`^\\[${proxy.host}/r1:v1\\] ! retry 1 of 5 `));
      assert.match(retries[0], /503/);
    } finally {
      await proxy.close();
    }
  });
});

Deno.test("cli job: an image listed by digest goes under the prefix untagged; a rerun is one line", async () => {
  await withRegistryAndDir(async (reg, dir) => {
    const src = join(dir, "src");
    await fx.buildRandomImage(src, "v1", { layerSizes: [3000] });
    const digest = await copyOk(["--plain-http", `${src}:v1`, `oci://${reg.host}/org/app:v1`]);
    const list = join(dir, "images.txt");
    await Deno.writeTextFile(list, `oci://${reg.host}/org/app@${digest}\n`);
    const args = ["--plain-http", "--images", list, `oci://${reg.host}/mirror`];
    const first = await jobOk(args);
    assert.deepEqual(first.lines, [`${digest} oci://${reg.host}/org/app@${digest}`]);
    assert.match(first.stderr, new RegExp(`namespace: mirror/org/app, untagged\n`));
    // There by digest, and under no tag: above all not `sha256-HEX`, the referrers tag
    // schema's name for the list of this image's referrers.
    const res = await fetch(`${reg.url}/v2/mirror/org/app/manifests/${digest}`, {
      method: "HEAD",
      headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
    });
    assert.equal(res.status, 200);
    const tags = await fetch(`${reg.url}/v2/mirror/org/app/tags/list`);
    assert.deepEqual((await tags.json()).tags ?? [], []);
    const again = await jobOk(args);
    assert.deepEqual(again.lines, first.lines);
    assert.match(again.stderr, /Images: 0 copied, 1 already present, 0 failed/);
  });
});

Deno.test("cli job: two images that would take one name are refused, exit 2, nothing written", async () => {
  await fx.withTempDir(async (dir) => {
    const [a, b] = [join(dir, "a"), join(dir, "b")];
    await fx.buildRandomImage(a, "amd", { layerSizes: [100] });
    await fx.buildRandomImage(b, "amd", { layerSizes: [100] });
    const list = join(dir, "images.txt");
    await Deno.writeTextFile(list, `ocidir://${a}:amd\nocidir://${b}:amd\n`);
    for (const dst of [join(dir, "bundle"), `oci-archive:${join(dir, "bundle.tar")}`]) {
      const r = await umoci(["copy", "--images", list, dst]);
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.match(r.stderr, /would both be written to .*"amd"/);
    }
    for (const left of ["bundle", "bundle.tar"]) {
      assert.equal(await Deno.stat(join(dir, left)).catch(() => undefined), undefined, left);
    }
  });
});

Deno.test("cli job: a destination that cannot be opened is said once; with --keep-going the error counts the images", async () => {
  await fx.withTempDir(async (tmp) => {
    const src = join(tmp, "src");
    await fx.buildRandomImage(src, "a", { layerSizes: [100] });
    await fx.buildRandomImage(src, "b", { layerSizes: [200] });
    const list = join(tmp, "list");
    await Deno.writeTextFile(list, `oci:${src}:a\noci:${src}:b\n`);
    const file = join(tmp, "afile");
    await Deno.writeTextFile(file, "not a layout");
    const why = `${file} exists and is not a directory (not an OCI image layout)`;
    const r = await umoci(["copy", "-q", "--images", list, file]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `error: ${why}\n`);
    const k = await umoci(["copy", "-q", "--keep-going", "--images", list, file]);
    assert.equal(k.code, 1);
    assert.equal(
      k.stderr,
      `warn: ! ${src}:a failed: ${why}\nwarn: ! ${src}:b failed: ${why}\n` +
        `error: 2 of 2 images failed: ${src}:a, ${src}:b\n`,
    );
    assert.equal(await Deno.readTextFile(file), "not a layout");
  });
});

Deno.test("cli job: the summary's bytes moved leave out what an earlier run's partial download held", async () => {
  await fx.withTempDir(async (tmp) => {
    const src = join(tmp, "src");
    const img = await fx.buildRandomImage(src, "v1", { layerSizes: [3 * 1024 * 1024], raw: true });
    const layer = img.layers[0];
    const dst = join(tmp, "dst");
    await fx.initLayout(dst);
    // An earlier run was killed after 1 MiB of the layer.
    const kept = 1024 * 1024;
    await Deno.mkdir(join(dst, ".umoci-copy-tmp"));
    await Deno.writeFile(
      join(dst, ".umoci-copy-tmp", `sha256-${layer.digest.slice(7)}.partial`),
      (await Deno.readFile(fx.blobFile(src, layer.digest))).subarray(0, kept),
    );
    const list = join(tmp, "list");
    await Deno.writeTextFile(list, `oci:${src}:v1\n`);
    const r = await umoci(["copy", "--images", list, dst]);
    assert.equal(r.code, 0, r.stderr);
    const total = layer.size + img.config.size;
    const moved = total - kept;
    const mib = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;
    assert.match(
      r.stderr,
      new RegExp(`${mib(moved)} moved, 1\\.0 MiB resumed from an earlier run`),
    );
    assert.match(
      r.stderr,
      new RegExp(`Images: 1 copied, .*; 2 blobs \\(${mib(moved)}\\) moved in`),
    );
    await fx.assertBlobsVerify(dst);
  });
});

Deno.test("cli job: when no image finishes, an archive destination is neither made nor rewritten", async () => {
  await fx.withTempDir(async (tmp) => {
    const src = join(tmp, "src");
    const img = await fx.buildRandomImage(src, "a", { layerSizes: [1000, 2000] });
    await fx.buildRandomImage(src, "b", { layerSizes: [3000] });
    // Image a's second layer is corrupt: its config and first layer verify, then it fails.
    const bad = fx.blobFile(src, img.layers[1].digest);
    const bytes = await Deno.readFile(bad);
    bytes[0] ^= 0xff;
    await Deno.writeFile(bad, bytes);
    const list = join(tmp, "list");
    await Deno.writeTextFile(list, `oci:${src}:a\n`);
    const fresh = join(tmp, "fresh.tar");
    const r = await umoci(["copy", "-q", "--keep-going", "--images", list, `oci-archive:${fresh}`]);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stdout, "");
    assert.equal(await Deno.stat(fresh).then(() => true, () => false), false, "no archive made");
    // An existing archive is left byte for byte.
    const old = join(tmp, "old.tar");
    const made = await umoci(["copy", "-q", `${src}:b`, `oci-archive:${old}:b`]);
    assert.equal(made.code, 0, made.stderr);
    const before = await Deno.readFile(old);
    const again = await umoci([
      "copy",
      "-q",
      "--keep-going",
      "--images",
      list,
      `oci-archive:${old}`,
    ]);
    assert.equal(again.code, 1, again.stderr);
    assert.deepEqual(await Deno.readFile(old), before);
  });
});
