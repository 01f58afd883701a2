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
import { startRegistry } from "./fixtures/registry.ts";
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

/** Access-log lines after the first `from`, without the fixture's own readiness GETs. */
function since(all: string[], from: number): string[] {
  return all.slice(from);
}

/** How many access-log lines are GETs of the blob `digest` (any repository) answered 200. */
function blobGets(log: string[], digest: string): number {
  return log.filter((l) => l.startsWith("GET ") && l.includes(`/blobs/${digest} 200`)).length;
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
  const shared = fx.tarOfFiles({ "base.bin": crypto.getRandomValues(new Uint8Array(0)) });
  const big = new Uint8Array(sharedSize);
  for (let i = 0; i < sharedSize; i += 65536) {
    crypto.getRandomValues(big.subarray(i, Math.min(sharedSize, i + 65536)));
  }
  const layer = sharedSize > 0 ? fx.tarOfFiles({ "base.bin": big }) : shared;
  const digests: string[] = [];
  let sharedDigest = "";
  for (let i = 0; i < count; i++) {
    const built = await fx.buildRandomImage(src, `${i}`, {
      layerSizes: [1000 + i],
      sharedLayer: layer,
    });
    sharedDigest = built.layers[0].digest;
    digests.push(built.manifest.digest);
  }
  // One job pushes them all (into r0…r9 under the registry's root).
  const list = join(tmp, "push.txt");
  await Deno.writeTextFile(list, digests.map((_, i) => `oci://x/r${i}:v1`).join("\n"));
  for (let i = 0; i < count; i++) {
    await copyOk(["--plain-http", `${src}:${i}`, `oci://${host}/r${i}:v1`]);
  }
  return { digests, shared: sharedDigest };
}

Deno.test("cli job: 10 images of one registry share one connection pool; the shared blob is fetched once", async () => {
  const [a, b] = [await startRegistry({ accessLog: true }), await startRegistry({ accessLog: true })];
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
        assert.match(l, /^\[oci:\/\/127\.0\.0\.1:\d+\/r\d:v1\] /);
      }
      assert.match(pack.stderr, /Images: 10 copied, 0 already present, 0 failed; 21 blobs/);
      assert.equal(blobGets(since(a.requests(), mark), shared), 1, "the shared layer: one GET");
      // The connections of one pool (at most the requests in flight at once), not ten or more.
      const pooled = proxy.connections();
      assert.ok(pooled <= 12, `${pooled} connections for 10 repositories`);
      const index = await archiveIndex(bundle);
      for (const [i, d] of digests.entries()) {
        assert.equal(index.get(`${proxy.host}/r${i}:v1`), d);
      }

      // -j 1: one image and one transfer at a time: one connection for the whole job.
      const before = proxy.connections();
      await jobOk(["--plain-http", "-j", "1", "--images", list, join(tmp, "layout")]);
      const serial = proxy.connections() - before;
      assert.ok(serial <= 2, `${serial} connections for 10 repositories with -j 1`);

      // Into registry B under a prefix: the shared layer crosses once and is mounted into the
      // other nine repositories.
      mark = a.requests().length;
      const pushed = await jobOk(["--plain-http", "--images", list, `oci://${b.host}/mirror`]);
      assert.deepEqual(pushed.lines, digests.map((d, i) => `${d} ${names[i]}`));
      assert.equal(blobGets(since(a.requests(), mark), shared), 1, "the shared layer: one GET");
      const mounts = b.requests().filter((l) =>
        l.startsWith("POST ") && l.includes(`mount=${shared}`) && / 201 /.test(l)
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
      const atB = since(b.requests(), markB).map((l) => l.split(" ").slice(0, 3).join(" "));
      assert.deepEqual(
        atB.sort(),
        digests.map((_, i) => `HEAD /v2/mirror/r${i}/manifests/v1 200`).sort(),
      );
      const atA = since(a.requests(), markA).map((l) => l.split(" ").slice(0, 3).join(" "));
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
