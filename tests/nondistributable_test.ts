// Non-distributable ("foreign") layers through the CLI, in all four directions, against the
// real registry (Debian's docker-registry, distribution 2.8, with `validation.manifests.urls`
// allowing http(s) URLs so that it accepts a manifest whose foreign blob it does not hold, as
// Docker Hub does for Windows base layers).
//
// Without --allow-nondistributable-artifacts the descriptor is kept (the manifest digest is
// preserved), the blob is neither transferred nor asked about (the registry's access log
// shows no request naming it), a source without the blob is fine, and one stderr line says
// what was left out. With the flag the blob is transferred like any other, and a source
// without it is an error, found before anything is written.
import assert from "node:assert/strict";
import { join } from "node:path";
import { UserError } from "../src/errors.ts";
import { checkDescriptor, isNonDistributable } from "../src/media.ts";
import { copied, type RunResult, umoci } from "./fixtures/cli.ts";
import {
  blobFile,
  digestOf,
  DOCKER_CONFIG,
  DOCKER_LAYER_GZIP,
  DOCKER_MANIFEST,
  initLayout,
  listBlobs,
  OCI_CONFIG,
  OCI_MANIFEST,
  tagDescriptor,
  tagEntry,
  withTempDir,
  writeBlob,
  writeJson,
} from "./fixtures/images.ts";
import { type RunningRegistry, startRegistry } from "./fixtures/registry.ts";

const DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
const OCI_NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
const OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip";

/** Accept URLs on layers (distribution refuses manifests with urls unless allowed). */
const URLS_ALLOWED = [
  "validation:",
  "  manifests:",
  "    urls:",
  "      allow:",
  "        - ^https?://",
].join("\n");

interface ForeignImage {
  manifest: { mediaType: string; digest: string; size: number };
  /** The foreign (non-distributable) layer, listed first, with `urls`. */
  foreign: { digest: string; size: number };
  /** The ordinary layer and the config: always transferred. */
  others: string[];
}

function random(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(b.subarray(i, i + 65536));
  return b;
}

/**
 * A Windows-like image in a layout: a foreign layer with `urls` (its blob written only with
 * `withForeignBlob`, as skopeo leaves it out) and an ordinary layer. `kind` "docker" uses
 * Docker's foreign type; "oci" the image-spec non-distributable type.
 */
async function buildForeignImage(
  dir: string,
  tag: string,
  kind: "docker" | "oci",
  withForeignBlob: boolean,
): Promise<ForeignImage> {
  await initLayout(dir);
  const foreignBytes = random(7000);
  const layerBytes = random(4000);
  const foreignDigest = digestOf(foreignBytes);
  if (withForeignBlob) await writeBlob(dir, foreignBytes);
  const layerDigest = await writeBlob(dir, layerBytes);
  const config = await writeJson(dir, {
    architecture: "amd64",
    os: "windows",
    rootfs: { type: "layers", diff_ids: [foreignDigest, layerDigest] },
  }, kind === "docker" ? DOCKER_CONFIG : OCI_CONFIG);
  const mediaType = kind === "docker" ? DOCKER_MANIFEST : OCI_MANIFEST;
  const manifest = await writeJson(dir, {
    schemaVersion: 2,
    mediaType,
    config,
    layers: [
      {
        mediaType: kind === "docker" ? DOCKER_FOREIGN : OCI_NONDISTRIBUTABLE,
        size: foreignBytes.length,
        digest: foreignDigest,
        urls: [`https://example.invalid/fwlink/${foreignDigest}`],
      },
      {
        mediaType: kind === "docker" ? DOCKER_LAYER_GZIP : OCI_LAYER_GZIP,
        size: layerBytes.length,
        digest: layerDigest,
      },
    ],
  }, mediaType);
  await tagDescriptor(dir, manifest, tag);
  return {
    manifest,
    foreign: { digest: foreignDigest, size: foreignBytes.length },
    others: [config.digest, layerDigest],
  };
}

/** The one stderr line naming what was left out (count, short digest, size). */
function assertLeftOutLine(r: RunResult, foreign: { digest: string }, what: string): void {
  const short = foreign.digest.slice(0, "sha256:".length + 12);
  const found = r.stderr.split("\n").filter((l) => /non-distributable/.test(l));
  assert.equal(found.length, 1, `${what}: one line about non-distributable blobs:\n${r.stderr}`);
  assert.match(found[0], /^Leaving out 1 non-distributable blob \(/, what);
  assert.ok(found[0].includes(`${short} (6.8 KiB)`), `${what}: names ${short}:\n${found[0]}`);
  assert.ok(found[0].includes("--allow-nondistributable-artifacts"), what);
}

/** No line of the stderr says "non-distributable" (nothing was left out). */
function assertNoLeftOutLine(r: RunResult, what: string): void {
  assert.ok(!/non-distributable/.test(r.stderr), `${what}: nothing left out:\n${r.stderr}`);
}

/** HTTP status of a blob HEAD at the registry. */
async function blobStatus(reg: RunningRegistry, repo: string, digest: string): Promise<number> {
  const res = await fetch(`${reg.url}/v2/${repo}/blobs/${digest}`, { method: "HEAD" });
  await res.body?.cancel();
  return res.status;
}

/** The digest the registry serves for repo:ref. */
async function manifestDigest(reg: RunningRegistry, repo: string, ref: string): Promise<string> {
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${ref}`, {
    method: "HEAD",
    headers: { Accept: [OCI_MANIFEST, DOCKER_MANIFEST].join(", ") },
  });
  await res.body?.cancel();
  assert.equal(res.status, 200, `${repo}:${ref} in ${reg.host}`);
  return res.headers.get("docker-content-digest") ?? "";
}

/**
 * Access-log lines since `from` once the registry has logged `expect` (the log arrives a
 * moment after the response); fails after 5 s.
 */
async function requestsSince(
  reg: RunningRegistry,
  from: number,
  expect: RegExp,
): Promise<string[]> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const lines = reg.requests().slice(from);
    if (lines.some((l) => expect.test(l))) return lines;
    if (Date.now() > deadline) {
      throw new Error(`no access-log line matching ${expect}:\n${lines.join("\n")}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** No request (HEAD, GET, POST, PUT, mount) named the blob. */
function assertNotAsked(lines: string[], digest: string, what: string): void {
  const hex = digest.slice("sha256:".length);
  const asked = lines.filter((l) => l.includes(hex));
  assert.deepEqual(asked, [], `${what}: requests naming the foreign blob`);
}

for (const kind of ["docker", "oci"] as const) {
  Deno.test(`non-distributable (${kind}): left out in all four directions, one line each, no request for it`, async () => {
    await withTempDir(async (tmp) => {
      const regA = await startRegistry({ accessLog: true, extraConfig: URLS_ALLOWED });
      const regB = await startRegistry({ accessLog: true, extraConfig: URLS_ALLOWED });
      try {
        const src = join(tmp, "src");
        const img = await buildForeignImage(src, "ltsc", kind, false);
        const want = img.manifest.digest;

        // layout → layout: the source lacks the foreign blob; fine.
        const l2l = await umoci(["copy", `${src}:ltsc`, `${join(tmp, "l2l")}:ltsc`]);
        assert.equal(copied(l2l, "layout→layout"), want);
        assertLeftOutLine(l2l, img.foreign, "layout→layout");
        assert.equal((await tagEntry(join(tmp, "l2l"), "ltsc")).digest, want);
        assert.deepEqual(
          await listBlobs(join(tmp, "l2l")),
          [want, ...img.others].sort(),
          "layout→layout: everything but the foreign blob",
        );

        // layout → registry
        let mark = regA.requests().length;
        const l2r = await umoci([
          "copy",
          "--plain-http",
          `${src}:ltsc`,
          `oci://${regA.host}/win/app:ltsc`,
        ]);
        assert.equal(copied(l2r, "layout→registry"), want);
        assertLeftOutLine(l2r, img.foreign, "layout→registry");
        assert.equal(await manifestDigest(regA, "win/app", "ltsc"), want);
        let log = await requestsSince(regA, mark, /^PUT \/v2\/win\/app\/manifests\/ltsc 201/);
        assertNotAsked(log, img.foreign.digest, "layout→registry");
        for (const d of img.others) assert.equal(await blobStatus(regA, "win/app", d), 200);
        assert.equal(await blobStatus(regA, "win/app", img.foreign.digest), 404);

        // registry → layout: the registry lacks the foreign blob; fine.
        mark = regA.requests().length;
        const pulled = join(tmp, "pulled");
        const r2l = await umoci([
          "copy",
          "--plain-http",
          `oci://${regA.host}/win/app:ltsc`,
          `${pulled}:ltsc`,
        ]);
        assert.equal(copied(r2l, "registry→layout"), want);
        assertLeftOutLine(r2l, img.foreign, "registry→layout");
        assert.equal((await tagEntry(pulled, "ltsc")).digest, want);
        assert.deepEqual(await listBlobs(pulled), [want, ...img.others].sort());
        log = await requestsSince(
          regA,
          mark,
          new RegExp(`^GET /v2/win/app/blobs/${img.others[1]} 200`),
        );
        assertNotAsked(log, img.foreign.digest, "registry→layout");

        // registry → registry
        const markA = regA.requests().length;
        const markB = regB.requests().length;
        const r2r = await umoci([
          "copy",
          "--plain-http",
          `oci://${regA.host}/win/app:ltsc`,
          `oci://${regB.host}/win/copy:ltsc`,
        ]);
        assert.equal(copied(r2r, "registry→registry"), want);
        assertLeftOutLine(r2r, img.foreign, "registry→registry");
        assert.equal(await manifestDigest(regB, "win/copy", "ltsc"), want);
        assertNotAsked(
          await requestsSince(
            regA,
            markA,
            new RegExp(`^GET /v2/win/app/blobs/${img.others[1]} 200`),
          ),
          img.foreign.digest,
          "registry→registry (source)",
        );
        assertNotAsked(
          await requestsSince(regB, markB, /^PUT \/v2\/win\/copy\/manifests\/ltsc 201/),
          img.foreign.digest,
          "registry→registry (destination)",
        );
        assert.equal(await blobStatus(regB, "win/copy", img.foreign.digest), 404);
        for (const d of img.others) assert.equal(await blobStatus(regB, "win/copy", d), 200);
      } finally {
        await regA.stop();
        await regB.stop();
      }
    });
  });
}

Deno.test("non-distributable: --allow-nondistributable-artifacts transfers the blob in every direction", async () => {
  await withTempDir(async (tmp) => {
    const regA = await startRegistry({ accessLog: true, extraConfig: URLS_ALLOWED });
    const regB = await startRegistry({ extraConfig: URLS_ALLOWED });
    try {
      const src = join(tmp, "src");
      const img = await buildForeignImage(src, "ltsc", "docker", true);
      const want = img.manifest.digest;
      const all = [want, img.foreign.digest, ...img.others].sort();
      const allow = "--allow-nondistributable-artifacts";

      const l2l = await umoci(["copy", allow, `${src}:ltsc`, `${join(tmp, "l2l")}:ltsc`]);
      assert.equal(copied(l2l, "layout→layout"), want);
      assertNoLeftOutLine(l2l, "layout→layout");
      assert.deepEqual(await listBlobs(join(tmp, "l2l")), all);

      const l2r = await umoci([
        "copy",
        allow,
        "--plain-http",
        `${src}:ltsc`,
        `oci://${regA.host}/win/app:ltsc`,
      ]);
      assert.equal(copied(l2r, "layout→registry"), want);
      assertNoLeftOutLine(l2r, "layout→registry");
      assert.equal(await blobStatus(regA, "win/app", img.foreign.digest), 200);
      const log = await requestsSince(regA, 0, /^PUT \/v2\/win\/app\/manifests\/ltsc 201/);
      const hex = img.foreign.digest.slice("sha256:".length);
      assert.ok(
        log.some((l) => l.startsWith("PUT /v2/win/app/blobs/uploads/") && l.includes(hex)),
        `the foreign blob was uploaded:\n${log.join("\n")}`,
      );

      const pulled = join(tmp, "pulled");
      const r2l = await umoci([
        "copy",
        allow,
        "--plain-http",
        `oci://${regA.host}/win/app:ltsc`,
        `${pulled}:ltsc`,
      ]);
      assert.equal(copied(r2l, "registry→layout"), want);
      assert.deepEqual(await listBlobs(pulled), all);
      assert.deepEqual(
        await Deno.readFile(blobFile(pulled, img.foreign.digest)),
        await Deno.readFile(blobFile(src, img.foreign.digest)),
      );

      const r2r = await umoci([
        "copy",
        allow,
        "--plain-http",
        `oci://${regA.host}/win/app:ltsc`,
        `oci://${regB.host}/win/copy:ltsc`,
      ]);
      assert.equal(copied(r2r, "registry→registry"), want);
      assert.equal(await blobStatus(regB, "win/copy", img.foreign.digest), 200);
      assert.equal(await manifestDigest(regB, "win/copy", "ltsc"), want);
    } finally {
      await regA.stop();
      await regB.stop();
    }
  });
});

Deno.test("non-distributable: with --allow-nondistributable-artifacts a layout without the blob fails in one line before writing", async () => {
  await withTempDir(async (tmp) => {
    const reg = await startRegistry({ accessLog: true, extraConfig: URLS_ALLOWED });
    try {
      const src = join(tmp, "src");
      const img = await buildForeignImage(src, "ltsc", "oci", false);
      const dst = join(tmp, "dst");
      for (
        const target of [`${dst}:ltsc`, `oci://${reg.host}/win/app:ltsc`]
      ) {
        const r = await umoci([
          "copy",
          "--allow-nondistributable-artifacts",
          "--plain-http",
          `${src}:ltsc`,
          target,
        ]);
        assert.equal(r.code, 1, `${target}: exit\n${r.stderr}`);
        assert.equal(r.stdout, "");
        const lines = r.stderr.trimEnd().split("\n");
        const errors = lines.filter((l) => l.startsWith("error:"));
        assert.equal(errors.length, 1, r.stderr);
        assert.equal(lines[lines.length - 1], errors[0]);
        assert.ok(errors[0].includes(img.foreign.digest), errors[0]);
      }
      assert.equal(await Deno.lstat(dst).catch(() => null), null, "no destination layout");
      // Nothing was uploaded: not the config, not the other layer, not the manifest.
      const uploads = reg.requests().filter((l) => /^(POST|PATCH|PUT) /.test(l));
      assert.deepEqual(uploads, []);
    } finally {
      await reg.stop();
    }
  });
});

Deno.test("isNonDistributable: urls, OCI non-distributable types, Docker foreign types", () => {
  const d = (mediaType: string, urls?: string[]) => ({
    mediaType,
    digest: `sha256:${"a".repeat(64)}`,
    size: 1,
    ...(urls ? { urls } : {}),
  });
  assert.equal(isNonDistributable(d(DOCKER_FOREIGN)), true);
  assert.equal(isNonDistributable(d("application/vnd.docker.image.rootfs.foreign.diff.tar")), true);
  for (const suffix of ["v1.tar", "v1.tar+gzip", "v1.tar+zstd"]) {
    assert.equal(
      isNonDistributable(d(`application/vnd.oci.image.layer.nondistributable.${suffix}`)),
      true,
    );
  }
  assert.equal(isNonDistributable(d(OCI_LAYER_GZIP, ["https://example.invalid/x"])), true);
  assert.equal(isNonDistributable(d(OCI_CONFIG, ["https://example.invalid/x"])), true);
  assert.equal(isNonDistributable(d(OCI_LAYER_GZIP)), false);
  assert.equal(isNonDistributable(d(OCI_LAYER_GZIP, [])), false);
  assert.equal(isNonDistributable(d(DOCKER_LAYER_GZIP)), false);
  // urls must be an array of strings (descriptor.md).
  for (const urls of ["https://example.invalid/x", [1], null]) {
    assert.throws(
      () => checkDescriptor({ ...d(DOCKER_FOREIGN), urls }, "manifest m"),
      (e) => e instanceof UserError && /invalid urls/.test(e.message),
    );
  }
});
