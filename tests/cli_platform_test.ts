// Issue 13 item 1 through the CLI: `--platform` and `--sparse` against the real registry
// (Debian's docker-registry, CNCF distribution 2.8) and layouts. A 5-platform index (with
// top-level annotations, indented JSON, BuildKit-style attestation manifests for two of
// its platforms) is built in each test; every test asserts the exit code, the digest on
// stdout, the step lines that say what happened, and what arrives: the files in a layout's
// blobs/ directory, or what the registry serves back (`skopeo inspect --raw`).
//
// What docker-registry 2.8 does with a sparse index, found by running it: a PUT of an
// index whose child manifests it lacks is answered `400 MANIFEST_BLOB_UNKNOWN`, once per
// missing child, and nothing is stored or tagged. So `--sparse=keep` to it fails with one
// line, and `--sparse=auto` falls back to the rewritten index.
import assert from "node:assert/strict";
import { join } from "node:path";
import { copied, type RunOptions, type RunResult, umoci } from "./fixtures/cli.ts";
import {
  assertOciImageToolValid,
  blobFile,
  buildArtifact,
  buildDockerManifestList,
  buildMultiPlatformIndex,
  buildRandomImage,
  type Descriptor,
  digestOf,
  DOCKER_LIST,
  DOCKER_MANIFEST,
  listBlobs,
  OCI_CONFIG,
  OCI_INDEX,
  OCI_MANIFEST,
  reachableDigests,
  readIndex,
  runRaw,
  snapshotTree,
  tagDescriptor,
  tagEntry,
  withTempDir,
  writeBlob,
  writeJson,
} from "./fixtures/images.ts";
import { formatBytes } from "../src/cli/log.ts";
import { startMiniRegistry } from "./fixtures/mini_registry.ts";
import { type RunningRegistry, startRegistry } from "./fixtures/registry.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const PLATFORMS = ["linux/amd64", "linux/arm64/v8", "linux/arm/v7", "linux/ppc64le", "linux/s390x"];

// ---------------------------------------------------------------------------------------
// Helpers

function cli(args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return umoci(args, { timeoutMs: 60_000, ...opts });
}

/** A failure: exit code, nothing on stdout, one `error:` line, last, no stack trace. */
function failed(r: RunResult, code: number, what: string): string {
  assert.equal(r.code, code, `${what}: exit code (stderr: ${r.stderr})`);
  assert.equal(r.stdout, "", `${what}: nothing on stdout`);
  const all = r.stderr.split("\n").filter((l) => l !== "");
  const errors = all.filter((l) => l.startsWith("error: "));
  assert.equal(errors.length, 1, `${what}: one error line:\n${r.stderr}`);
  assert.equal(all[all.length - 1], errors[0], `${what}: the error line is last`);
  assert.ok(!all.some((l) => /^\s+at /.test(l)), `${what}: no stack trace`);
  return errors[0].slice("error: ".length);
}

async function withRegistry<T>(fn: (reg: RunningRegistry) => Promise<T>): Promise<T> {
  const reg = await startRegistry({ accessLog: true });
  try {
    return await fn(reg);
  } finally {
    await reg.stop();
  }
}

/** `skopeo inspect --raw`: the exact bytes the registry serves, or null when it has none. */
async function served(image: string): Promise<Uint8Array | null> {
  const r = await runRaw("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${image}`]);
  if (r.code !== 0) {
    if (/manifest unknown|not found/i.test(r.stderr)) return null;
    throw new Error(`skopeo inspect --raw ${image}: ${r.stderr}`);
  }
  return r.stdout;
}

interface FivePlatforms {
  dir: string;
  index: Descriptor;
  /** The index as written (indented JSON, annotations). */
  doc: { manifests: Descriptor[]; annotations: Record<string, string> };
  /** Platform manifests by platform string. */
  byPlatform: Map<string, Descriptor>;
  /** Attestation manifests by the platform they describe (amd64 and arm64 only). */
  attestations: Map<string, Descriptor>;
  /** Every digest reachable from one platform manifest (or attestation). */
  contentOf(d: Descriptor): Promise<Set<string>>;
}

/**
 * A 5-platform OCI index in a layout, tagged `tag`: the fixture builder's manifests (a
 * shared base layer and one of their own each), re-listed in an index with top-level
 * annotations and 2-space indentation, plus BuildKit attestation manifests (platform
 * unknown/unknown, vnd.docker.reference.digest) for linux/amd64 and linux/arm64/v8.
 */
async function fivePlatforms(dir: string, tag = "v1"): Promise<FivePlatforms> {
  const built = await buildMultiPlatformIndex(dir, undefined, PLATFORMS);
  const byPlatform = new Map<string, Descriptor>();
  PLATFORMS.forEach((p, i) => byPlatform.set(p, built.manifests[i]));
  const attestations = new Map<string, Descriptor>();
  const entries: Descriptor[] = [];
  for (const p of PLATFORMS) {
    const m = byPlatform.get(p)!;
    entries.push(m);
    if (p !== "linux/amd64" && p !== "linux/arm64/v8") continue;
    const statement = enc.encode(
      JSON.stringify({
        _type: "https://in-toto.io/Statement/v0.1",
        subject: [{ digest: m.digest }],
        n: crypto.randomUUID(),
      }),
    );
    const layer = {
      mediaType: "application/vnd.in-toto+json",
      digest: await writeBlob(dir, statement),
      size: statement.length,
      annotations: { "in-toto.io/predicate-type": "https://spdx.dev/Document" },
    };
    const config = await writeJson(
      dir,
      {
        architecture: "unknown",
        os: "unknown",
        config: {},
        rootfs: { type: "layers", diff_ids: [layer.digest] },
      },
      OCI_CONFIG,
    );
    const att = await writeJson(
      dir,
      { schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers: [layer] },
      OCI_MANIFEST,
    );
    const entry = {
      ...att,
      annotations: {
        "vnd.docker.reference.digest": m.digest,
        "vnd.docker.reference.type": "attestation-manifest",
      },
      platform: { architecture: "unknown", os: "unknown" },
    };
    attestations.set(p, entry);
  }
  entries.push(...attestations.values());
  const doc = {
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: entries,
    annotations: {
      "org.opencontainers.image.created": "2026-11-30T00:00:00Z",
      "com.example.team": "platform",
    },
  };
  const bytes = enc.encode(JSON.stringify(doc, null, 2) + "\n");
  const index = { mediaType: OCI_INDEX, digest: await writeBlob(dir, bytes), size: bytes.length };
  await tagDescriptor(dir, index, tag);
  return {
    dir,
    index,
    doc,
    byPlatform,
    attestations,
    contentOf: (d) => reachableDigests(dir, d),
  };
}

/** The union of the digests reachable from `descs` in the source layout. */
async function contentOfAll(src: FivePlatforms, descs: Descriptor[]): Promise<string[]> {
  const all = new Set<string>();
  for (const d of descs) for (const x of await src.contentOf(d)) all.add(x);
  return [...all].sort();
}

// ---------------------------------------------------------------------------------------
// Tests

Deno.test("CLI --platform: one platform pulled from the registry is that manifest alone, no other platform's blob", async () => {
  await withTempDir(async (tmp) => {
    await withRegistry(async (reg) => {
      const src = await fivePlatforms(join(tmp, "src"));
      const image = `${reg.host}/multi/app:v1`;
      // The whole index goes up first (no --platform: every platform, as before).
      assert.equal(
        copied(await cli(["copy", "--plain-http", `${src.dir}:v1`, `oci://${image}`]), "push"),
        src.index.digest,
      );

      const arm = src.byPlatform.get("linux/arm64/v8")!;
      const dst = join(tmp, "arm");
      const r = await cli([
        "copy",
        "--plain-http",
        "--platform",
        "linux/arm64",
        `oci://${image}`,
        `${dst}:arm`,
      ]);
      assert.equal(copied(r, "one-platform pull"), arm.digest, "stdout is the child's digest");
      assert.match(
        r.stderr,
        new RegExp(
          `^Selected platform linux/arm64/v8 \\(${arm.digest}\\) from index ${src.index.digest} \\(1 of 5 platforms\\)$`,
          "m",
        ),
      );
      assert.match(
        r.stderr,
        /Leaving out its attestation manifest sha256:[0-9a-f]{12}: without an index nothing would list it/,
      );
      // Exactly the arm64 manifest, its config and its two layers: no other platform's blob.
      assert.deepEqual(await listBlobs(dst), await contentOfAll(src, [arm]));
      const entry = await tagEntry(dst, "arm");
      assert.equal(entry.digest, arm.digest);
      assert.equal(entry.mediaType, OCI_MANIFEST);
      assert.deepEqual(entry.platform, { os: "linux", architecture: "arm64", variant: "v8" });
      assert.equal((await readIndex(dst)).manifests.length, 1);
      await assertOciImageToolValid(dst, "arm");

      // Registry → registry by tag: the manifest alone under the new tag, bytes unchanged.
      const r2 = await cli([
        "copy",
        "--plain-http",
        "--platform",
        "linux/s390x",
        `oci://${image}`,
        `oci://${reg.host}/single/app:s390x`,
      ]);
      const s390x = src.byPlatform.get("linux/s390x")!;
      assert.equal(copied(r2, "registry → registry"), s390x.digest);
      const got = await served(`${reg.host}/single/app:s390x`);
      assert.equal(digestOf(got!), s390x.digest);
      assert.deepEqual(got, await Deno.readFile(blobFile(src.dir, s390x.digest)));
    });
  });
});

Deno.test("CLI --platform: two platforms to the registry under --sparse keep, rewrite and auto", async () => {
  await withTempDir(async (tmp) => {
    await withRegistry(async (reg) => {
      const src = await fivePlatforms(join(tmp, "src"));
      const chosen = ["linux/amd64", "linux/arm64/v8"].map((p) => src.byPlatform.get(p)!);
      const flags = ["--plain-http", "--platform", "linux/amd64,linux/arm64/v8"];
      // The rewritten index: the source's JSON with the manifests list narrowed, nothing else.
      const wantEntries = src.doc.manifests.filter((m) =>
        chosen.some((c) => c.digest === m.digest) ||
        chosen.some((c) => c.digest === m.annotations?.["vnd.docker.reference.digest"])
      );
      assert.equal(wantEntries.length, 4, "two platforms, two attestations");
      const wantBytes = enc.encode(
        JSON.stringify({ ...src.doc, manifests: wantEntries }, null, 2) + "\n",
      );
      const rewritten = digestOf(wantBytes);

      // keep: docker-registry 2.8 refuses the index whose other children it lacks.
      const keep = await cli([
        "copy",
        ...flags,
        "--sparse=keep",
        `${src.dir}:v1`,
        `oci://${reg.host}/keep/app:v1`,
      ]);
      const msg = failed(keep, 1, "--sparse=keep to docker-registry");
      assert.match(
        msg,
        /^the registry refuses an index whose other platforms it lacks \(.*PUT \/v2\/keep\/app\/manifests\/v1: 400 MANIFEST_BLOB_UNKNOWN.*\); use --sparse=rewrite or auto$/,
      );
      assert.match(
        keep.stderr,
        new RegExp(
          `^index ${src.index.digest} kept as is, 2 of 5 platforms \\(linux/amd64, linux/arm64/v8\\); the others' manifests are not copied \\(--sparse=keep\\)$`,
          "m",
        ),
      );
      assert.equal(await served(`${reg.host}/keep/app:v1`), null, "no tag written");

      // rewrite: a new index with the two platforms and their attestations.
      const rw = await cli([
        "copy",
        ...flags,
        "--sparse=rewrite",
        `${src.dir}:v1`,
        `oci://${reg.host}/rewrite/app:v1`,
      ]);
      assert.equal(copied(rw, "--sparse=rewrite"), rewritten, "stdout is the new index's digest");
      assert.match(
        rw.stderr,
        new RegExp(
          `^index ${src.index.digest} → ${rewritten}, 2 of 5 platforms \\(linux/amd64, linux/arm64/v8\\) \\(--sparse=rewrite\\)$`,
          "m",
        ),
      );
      assert.deepEqual(
        await served(`${reg.host}/rewrite/app:v1`),
        wantBytes,
        "the registry serves exactly the rewritten bytes",
      );
      for (const e of wantEntries) {
        const child = await served(`${reg.host}/rewrite/app@${e.digest}`);
        assert.deepEqual(
          child,
          await Deno.readFile(blobFile(src.dir, e.digest)),
          `child ${e.digest}`,
        );
      }
      for (const p of ["linux/arm/v7", "linux/ppc64le", "linux/s390x"]) {
        assert.equal(
          await served(`${reg.host}/rewrite/app@${src.byPlatform.get(p)!.digest}`),
          null,
          `${p} not pushed`,
        );
      }

      // auto: keep is tried, refused, and the rewritten index written instead; said so.
      const mark = reg.requests().length;
      const auto = await cli(["copy", ...flags, `${src.dir}:v1`, `oci://${reg.host}/auto/app:v1`]);
      assert.equal(copied(auto, "--sparse=auto"), rewritten);
      assert.match(auto.stderr, /\(--sparse=auto: trying whether \S+ takes a sparse index\)$/m);
      assert.match(
        auto.stderr,
        new RegExp(
          `^The registry refused the sparse index \\(.*400 MANIFEST_BLOB_UNKNOWN.*\\); the chosen platforms are in place, writing a rewritten index ${rewritten} instead \\(--sparse=auto\\)$`,
          "m",
        ),
      );
      assert.deepEqual(await served(`${reg.host}/auto/app:v1`), wantBytes);
      const autoRequests = reg.requests().slice(mark).filter((l) => l.includes("umoci-copy/"));
      const puts = autoRequests.filter((l) => /^PUT \/v2\/auto\/app\/manifests\//.test(l))
        .map((l) => l.split(" ").slice(0, 3).join(" "));
      // The four children by digest, the sparse index refused, the rewritten one taken.
      assert.equal(puts.length, 6, autoRequests.join("\n"));
      assert.ok(
        puts.slice(0, 4).every((l) => /manifests\/sha256:[0-9a-f]{64} 201$/.test(l)),
        puts.join("\n"),
      );
      assert.deepEqual(puts.slice(4), [
        "PUT /v2/auto/app/manifests/v1 400",
        "PUT /v2/auto/app/manifests/v1 201",
      ]);
      // After the refusal only the rewritten index is asked about and written: no blob is
      // asked about again.
      const refused = autoRequests.findIndex((l) =>
        l.startsWith("PUT /v2/auto/app/manifests/v1 400")
      );
      assert.deepEqual(
        autoRequests.slice(refused + 1).map((l) => l.split(" ").slice(0, 3).join(" ")),
        [
          `HEAD /v2/auto/app/manifests/${rewritten} 404`,
          "PUT /v2/auto/app/manifests/v1 201",
        ],
      );
      // The summary counts what both attempts wrote: 4 child manifests, the rewritten index.
      const blobCount = (await contentOfAll(src, wantEntries)).length - wantEntries.length;
      assert.match(
        auto.stderr,
        new RegExp(
          `^Copied ${blobCount} blobs \\(.*\\); 5 manifests written \\(index\\)$`,
          "m",
        ),
      );
      // With --progress=json the explanations are `log` events of level info.
      const json = await cli([
        "copy",
        ...flags,
        "--progress=json",
        `${src.dir}:v1`,
        `oci://${reg.host}/auto-json/app:v1`,
      ]);
      assert.equal(copied(json, "--sparse=auto, json"), rewritten);
      const notes = json.stderr.trim().split("\n").map((l) => JSON.parse(l))
        .filter((e) => e.type === "log" && e.level === "info").map((e) => e.message);
      assert.ok(
        notes.some((m) => /^The registry refused the sparse index \(/.test(m)),
        json.stderr,
      );
      assert.ok(notes.some((m) => /--sparse=auto: trying whether/.test(m)), json.stderr);
      // A rerun: the registry holds the rewritten index, so auto takes it at once (2 HEADs).
      const mark2 = reg.requests().length;
      const again = await cli(["copy", ...flags, `${src.dir}:v1`, `oci://${reg.host}/auto/app:v1`]);
      assert.equal(copied(again, "auto rerun"), rewritten);
      // Nothing to do: one line (the platform notes go with the step lines, left out).
      assert.equal(
        again.stderr,
        `${reg.host}/auto/app:v1 is already ${rewritten}: nothing to copy\n`,
      );
      const rerunRequests = reg.requests().slice(mark2).filter((l) => !/^GET \/v2\/ /.test(l));
      assert.ok(rerunRequests.every((l) => l.startsWith("HEAD ")), rerunRequests.join("\n"));
      assert.equal(rerunRequests.length, 2, rerunRequests.join("\n"));

      // A pull of the rewritten index into a layout is complete: oci-image-tool accepts it.
      const pulled = join(tmp, "pulled");
      assert.equal(
        copied(
          await cli(["copy", "--plain-http", `oci://${reg.host}/rewrite/app:v1`, `${pulled}:v1`]),
          "pull",
        ),
        rewritten,
      );
      assert.deepEqual(
        await listBlobs(pulled),
        [...new Set([rewritten, ...(await contentOfAll(src, wantEntries))])].sort(),
      );
      // (oci-image-tool is not asked: it refuses the attestations' in-toto layer media type.)
    });
  });
});

Deno.test("CLI --platform: --sparse keep into a layout, and what a later copy from it says", async () => {
  await withTempDir(async (tmp) => {
    const src = await fivePlatforms(join(tmp, "src"));
    const dst = join(tmp, "keep");
    const r = await cli([
      "copy",
      "--platform",
      "linux/amd64",
      "--platform",
      "linux/s390x",
      `${src.dir}:v1`,
      `${dst}:v1`,
    ]);
    assert.equal(
      copied(r, "keep into a layout"),
      src.index.digest,
      "the index's digest is preserved",
    );
    assert.match(
      r.stderr,
      /kept as is, 2 of 5 platforms \(linux\/amd64, linux\/s390x\); the others' manifests are not copied \(--sparse=auto: a layout takes a sparse index\)$/m,
    );
    const amd = src.byPlatform.get("linux/amd64")!;
    const s390x = src.byPlatform.get("linux/s390x")!;
    const attAmd = src.attestations.get("linux/amd64")!;
    // The index byte for byte, the two platforms with the amd64 attestation; nothing else.
    assert.deepEqual(
      await listBlobs(dst),
      [...new Set([src.index.digest, ...(await contentOfAll(src, [amd, s390x, attAmd]))])].sort(),
    );
    assert.deepEqual(
      await Deno.readFile(blobFile(dst, src.index.digest)),
      await Deno.readFile(blobFile(src.dir, src.index.digest)),
    );

    // Without --platform: one line naming the three missing platform manifests (and the
    // arm64 attestation), nothing written.
    const before = await snapshotTree(tmp);
    const again = await cli(["copy", `${dst}:v1`, `${join(tmp, "full")}:v1`]);
    const msg = failed(again, 1, "copy of a sparse layout without --platform");
    for (const p of ["linux/arm64/v8", "linux/arm/v7", "linux/ppc64le"]) {
      assert.ok(msg.includes(`${p} ${src.byPlatform.get(p)!.digest}`), `${p} named: ${msg}`);
    }
    assert.ok(!msg.includes(amd.digest) && !msg.includes(s390x.digest), msg);
    assert.match(
      msg,
      /is sparse: 4 manifests it lists are not in the layout .*; copy what is there with --platform linux\/amd64,linux\/s390x$/,
    );
    assert.deepEqual(await snapshotTree(tmp), before, "nothing written");

    // With the platforms that are there it copies; asking for one that is not is one line.
    // oci-image-tool walks every entry of the index: the keep layout fails it, as documented.
    const validate = await runRaw("oci-image-tool", ["validate", "--type", "image", dst]);
    assert.notEqual(validate.code, 0);
    assert.match(
      validate.stderr,
      new RegExp(
        `blobs/sha256/${src.byPlatform.get("linux/arm64/v8")!.digest.slice(7)}: no such file`,
      ),
    );
    // --sparse=rewrite into a layout: a complete layout that oci-image-tool accepts (two
    // platforms without attestations: it refuses the in-toto layer media type).
    const rw = join(tmp, "rw");
    const r2 = await cli([
      "copy",
      "--platform",
      "linux/ppc64le,linux/s390x",
      "--sparse=rewrite",
      `${src.dir}:v1`,
      `${rw}:v1`,
    ]);
    const rwDigest = copied(r2, "rewrite into a layout");
    assert.notEqual(rwDigest, src.index.digest);
    const ppc = src.byPlatform.get("linux/ppc64le")!;
    assert.deepEqual(
      await listBlobs(rw),
      [...new Set([rwDigest, ...(await contentOfAll(src, [ppc, s390x]))])].sort(),
    );
    await assertOciImageToolValid(rw, "v1");

    const sub = join(tmp, "sub");
    assert.equal(
      copied(
        await cli(["copy", "--platform", "linux/amd64,linux/s390x", `${dst}:v1`, `${sub}:v1`]),
        "re-copy",
      ),
      src.index.digest,
    );
    const missing = failed(
      await cli(["copy", "--platform", "linux/ppc64le", `${dst}:v1`, `${join(tmp, "p")}:v1`]),
      1,
      "missing platform",
    );
    assert.match(
      missing,
      new RegExp(
        `lists linux/ppc64le ${
          src.byPlatform.get("linux/ppc64le")!.digest
        }, but the layout does not hold it \\(a sparse copy\\)$`,
      ),
    );
  });
});

Deno.test("CLI --platform: nothing matches → one line listing the platforms, exit 1, nothing written", async () => {
  await withTempDir(async (tmp) => {
    await withRegistry(async (reg) => {
      const src = await fivePlatforms(join(tmp, "src"));
      const dst = join(tmp, "dst");
      const r = await cli([
        "copy",
        "--platform",
        "windows/amd64,linux/riscv64",
        `${src.dir}:v1`,
        `${dst}:v1`,
      ]);
      const msg = failed(r, 1, "no match");
      assert.equal(
        msg,
        `no platform of index ${src.index.digest} matches --platform windows/amd64, linux/riscv64; it has linux/amd64, linux/arm64/v8, linux/arm/v7, linux/ppc64le, linux/s390x`,
      );
      await assert.rejects(Deno.lstat(dst), Deno.errors.NotFound, "no layout created");
      const before = reg.requests().length;
      const r2 = await cli([
        "copy",
        "--plain-http",
        "--platform",
        "linux/mips64le",
        `${src.dir}:v1`,
        `oci://${reg.host}/none/app:v1`,
      ]);
      failed(r2, 1, "no match to a registry");
      assert.deepEqual(
        reg.requests().slice(before).filter((l) => !/^GET \/v2\/ /.test(l)),
        [],
        "no request to the registry",
      );
    });
  });
});

Deno.test("CLI --platform in a job: an index listed by digest gives its platform's manifest, pushed by that digest", async () => {
  await withTempDir(async (tmp) => {
    await withRegistry(async (reg) => {
      const src = await fivePlatforms(join(tmp, "src"));
      const amd = src.byPlatform.get("linux/amd64")!;
      const pushed = await cli([
        "copy",
        "--plain-http",
        `${src.dir}:v1`,
        `oci://${reg.host}/multi/app:v1`,
      ]);
      assert.equal(pushed.code, 0, pushed.stderr);
      const list = join(tmp, "images.txt");
      const line = `oci://${reg.host}/multi/app@${src.index.digest}`;
      await Deno.writeTextFile(list, line + "\n");
      const args = [
        "copy",
        "--plain-http",
        "--platform",
        "linux/amd64",
        "--images",
        list,
        `oci://${reg.host}/mirror`,
      ];
      const r = await cli(args);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), `${amd.digest} ${line}`);
      // The destination names no digest of its own: what it says it wrote, it holds.
      assert.ok(!r.stderr.includes(`mirror/multi/app@${src.index.digest}`), r.stderr);
      for (const [digest, status] of [[amd.digest, 200], [src.index.digest, 404]] as const) {
        const res = await fetch(`${reg.url}/v2/mirror/multi/app/manifests/${digest}`, {
          method: "HEAD",
          headers: { accept: `${OCI_MANIFEST}, ${OCI_INDEX}` },
        });
        assert.equal(res.status, status, digest);
      }
      const again = await cli(args);
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stderr, /Images: 0 copied, 1 already present, 0 failed/);
    });
  });
});

Deno.test("CLI --platform: a single-manifest source must be of the platform asked for", async () => {
  await withTempDir(async (tmp) => {
    const dir = join(tmp, "src");
    const img = await buildRandomImage(dir, "arm", {
      layerSizes: [1024],
      platform: { os: "linux", architecture: "arm64", variant: "v8" },
    });
    const dst = join(tmp, "dst");
    const bad = await cli(["copy", "--platform", "linux/amd64", `${dir}:arm`, `${dst}:x`]);
    assert.equal(
      failed(bad, 1, "mismatch"),
      `${img.manifest.digest} is a single linux/arm64/v8 image, not --platform linux/amd64`,
    );
    await assert.rejects(Deno.lstat(dst), Deno.errors.NotFound);
    // arm64 without a variant matches the config's v8; the digest is the manifest's own.
    const ok = await cli(["copy", "--platform", "linux/arm64", `${dir}:arm`, `${dst}:x`]);
    assert.equal(copied(ok, "match"), img.manifest.digest);
    assert.match(ok.stderr, /is a single manifest of the platform asked for/);
    await assertOciImageToolValid(dst, "x");
    // An artifact (empty config) has no platform: asked for one, it is an error.
    const art = await buildArtifact(dir, "sbom");
    const artMsg = failed(
      await cli(["copy", "--platform", "linux/arm64", `${dir}:sbom`, `${dst}:y`]),
      1,
      "artifact",
    );
    assert.equal(
      artMsg,
      `--platform linux/arm64: ${art.manifest.digest} is a single manifest without a platform (config application/vnd.oci.empty.v1+json)`,
    );
    // --sparse without --platform, a bad --platform or --sparse: usage errors, exit 2.
    failed(await cli(["copy", "--sparse=keep", `${dir}:arm`, `${dst}:y`]), 2, "--sparse alone");
    failed(
      await cli(["copy", "--platform", "linux", `${dir}:arm`, `${dst}:y`]),
      2,
      "bad --platform",
    );
    failed(
      await cli(["copy", "--platform", "linux/arm64", "--sparse=maybe", `${dir}:arm`, `${dst}:y`]),
      2,
      "bad --sparse",
    );
  });
});

Deno.test("CLI --platform local and linux/*: the host's platform; a wildcard choosing all copies the index whole", async () => {
  await withTempDir(async (tmp) => {
    const src = await fivePlatforms(join(tmp, "src"));
    const host = { x86_64: "linux/amd64", aarch64: "linux/arm64/v8" }[Deno.build.arch as string];
    if (Deno.build.os === "linux" && host) {
      const dst = join(tmp, "local");
      const r = await cli(["copy", "--platform", "local", `${src.dir}:v1`, `${dst}:v1`]);
      assert.equal(copied(r, "local"), src.byPlatform.get(host)!.digest);
      await assertOciImageToolValid(dst, "v1");
    }
    const all = join(tmp, "all");
    const r = await cli(["copy", "--platform", "linux/*", `${src.dir}:v1`, `${all}:v1`]);
    assert.equal(copied(r, "linux/*"), src.index.digest);
    assert.match(
      r.stderr,
      /Every platform of index sha256:[0-9a-f]{64} matches .*: copying it whole/,
    );
    assert.deepEqual(await listBlobs(all), [...(await src.contentOf(src.index))].sort());
  });
});

Deno.test("CLI --platform: nested indexes are filtered too; rewrite rewrites every level", async () => {
  await withTempDir(async (tmp) => {
    await withRegistry(async (reg) => {
      const dir = join(tmp, "src");
      const inner = await buildMultiPlatformIndex(dir, undefined, [
        "linux/amd64",
        "linux/arm64",
        "linux/riscv64",
      ]);
      const direct = await buildRandomImage(dir, undefined, {
        layerSizes: [512],
        platform: { os: "linux", architecture: "s390x" },
      });
      const outer = await writeJson(dir, {
        schemaVersion: 2,
        mediaType: OCI_INDEX,
        manifests: [
          { ...inner.index, annotations: { "com.example.kind": "inner" } },
          { ...direct.manifest, platform: { os: "linux", architecture: "s390x" } },
        ],
      }, OCI_INDEX);
      await tagDescriptor(dir, outer, "n");
      // One platform deep inside: that manifest alone.
      const one = await cli([
        "copy",
        "--platform",
        "linux/riscv64",
        `${dir}:n`,
        `${join(tmp, "one")}:n`,
      ]);
      assert.equal(copied(one, "nested single"), inner.manifests[2].digest);
      assert.ok(
        one.stderr.includes(
          `Selected platform linux/riscv64 (${inner.manifests[2].digest}) from index ` +
            `${inner.index.digest} in index ${outer.digest} (1 of 4 platforms)\n`,
        ),
        one.stderr,
      );
      // Two platforms at two levels, rewritten: the inner index loses riscv64 and arm64, the
      // outer lists the new inner digest (its annotation kept).
      const r = await cli([
        "copy",
        "--plain-http",
        "--platform",
        "linux/amd64,linux/s390x",
        "--sparse=rewrite",
        `${dir}:n`,
        `oci://${reg.host}/nested/app:n`,
      ]);
      const root = copied(r, "nested rewrite");
      const outerDoc = JSON.parse(dec.decode((await served(`${reg.host}/nested/app:n`))!));
      assert.equal(digestOf((await served(`${reg.host}/nested/app:n`))!), root);
      // auto: docker-registry refuses the sparse inner index; the two rewritten indexes
      // are written instead, the same digests as --sparse=rewrite.
      const auto = await cli([
        "copy",
        "--plain-http",
        "--platform",
        "linux/amd64,linux/s390x",
        `${dir}:n`,
        `oci://${reg.host}/nested-auto/app:n`,
      ]);
      assert.equal(copied(auto, "nested auto"), root);
      // Both attempts counted: the blobs the refused one moved, with their bytes.
      assert.match(auto.stderr, /^Copied \d+ blobs \((\d+\.\d )?[KM]?i?B\)/m);
      assert.doesNotMatch(auto.stderr, /\(0 B\)/, auto.stderr);
      assert.match(
        auto.stderr,
        /^The registry refused the sparse index .*400 MANIFEST_BLOB_UNKNOWN/m,
      );
      assert.equal(digestOf((await served(`${reg.host}/nested-auto/app:n`))!), root);
      assert.equal(outerDoc.manifests.length, 2);
      assert.equal(outerDoc.manifests[0].annotations["com.example.kind"], "inner");
      assert.equal(outerDoc.manifests[1].digest, direct.manifest.digest);
      const innerBytes = (await served(`${reg.host}/nested/app@${outerDoc.manifests[0].digest}`))!;
      assert.equal(digestOf(innerBytes), outerDoc.manifests[0].digest);
      assert.equal(innerBytes.length, outerDoc.manifests[0].size);
      assert.deepEqual(
        JSON.parse(dec.decode(innerBytes)).manifests.map((m: Descriptor) => m.digest),
        [inner.manifests[0].digest],
      );
    });
  });
});

Deno.test("CLI --platform: a Docker manifest list is chosen from like an OCI index", async () => {
  await withTempDir(async (tmp) => {
    const dir = join(tmp, "src");
    const list = await buildDockerManifestList(dir, "d", [
      "linux/amd64",
      "linux/arm64",
      "linux/386",
    ]);
    const one = await cli(["copy", "--platform", "linux/386", `${dir}:d`, `${join(tmp, "one")}:d`]);
    assert.equal(copied(one, "one of a Docker list"), list.manifests[2].digest);
    assert.equal((await tagEntry(join(tmp, "one"), "d")).mediaType, DOCKER_MANIFEST);
    const two = join(tmp, "two");
    const r = await cli([
      "copy",
      "--platform",
      "linux/amd64,linux/arm64/v8",
      "--sparse=rewrite",
      `${dir}:d`,
      `${two}:d`,
    ]);
    const digest = copied(r, "two of a Docker list");
    const entry = await tagEntry(two, "d");
    assert.equal(entry.digest, digest);
    assert.equal(entry.mediaType, DOCKER_LIST);
    const doc = JSON.parse(await Deno.readTextFile(blobFile(two, digest)));
    assert.equal(doc.mediaType, DOCKER_LIST);
    assert.deepEqual(doc.manifests, list.manifests.slice(0, 2));
  });
});

Deno.test("CLI --platform: --sparse=auto keeps the index where a registry takes it (a registry that does not check children)", async () => {
  await withTempDir(async (tmp) => {
    // The mini registry stores any manifest without looking at what it lists, as registries
    // configured to accept sparse indexes do.
    const mini = startMiniRegistry({ auth: { kind: "none" } });
    try {
      const src = await fivePlatforms(join(tmp, "src"));
      const r = await cli([
        "copy",
        "--plain-http",
        "--platform",
        "linux/arm/v7,linux/ppc64le",
        `${src.dir}:v1`,
        `oci://${mini.host}/sparse/app:v1`,
      ]);
      assert.equal(copied(r, "auto to a registry that takes it"), src.index.digest);
      assert.match(r.stderr, /\(--sparse=auto: trying whether \S+ takes a sparse index\)$/m);
      assert.doesNotMatch(r.stderr, /refused/);
      assert.ok(
        r.stderr.includes(
          `The registry took the sparse index ${src.index.digest} (--sparse=auto)\n`,
        ),
        r.stderr,
      );
      assert.equal(mini.tags.get("sparse/app:v1"), src.index.digest);
      const want = await contentOfAll(
        src,
        ["linux/arm/v7", "linux/ppc64le"].map((p) => src.byPlatform.get(p)!),
      );
      assert.deepEqual(
        [...mini.blobs.keys()].sort(),
        [...new Set([src.index.digest, ...want])].sort(),
      );
    } finally {
      await mini.stop();
    }
  });
});

Deno.test("CLI --platform: --sparse=auto's dry run promises no answer, and its fallback counts both attempts (registry → registry)", async () => {
  await withTempDir(async (tmp) => {
    await withRegistry(async (from) => {
      await withRegistry(async (to) => {
        const src = await fivePlatforms(join(tmp, "src"));
        const source = `oci://${from.host}/big:v1`;
        assert.equal(
          copied(await cli(["copy", "--plain-http", `${src.dir}:v1`, source]), "push"),
          src.index.digest,
        );
        const flags = ["--plain-http", "--platform", "linux/amd64,linux/arm64/v8"];
        const chosen = ["linux/amd64", "linux/arm64/v8"].map((p) => src.byPlatform.get(p)!);
        const entries = src.doc.manifests.filter((m) =>
          chosen.some((c) =>
            c.digest === m.digest || c.digest === m.annotations?.["vnd.docker.reference.digest"]
          )
        );
        const rewritten = digestOf(
          enc.encode(JSON.stringify({ ...src.doc, manifests: entries }, null, 2) + "\n"),
        );
        const manifestDigests = new Set(entries.map((e) => e.digest));
        const blobs = (await contentOfAll(src, entries)).filter((d) => !manifestDigests.has(d));
        let blobBytes = 0;
        for (const d of blobs) blobBytes += (await Deno.stat(blobFile(src.dir, d))).size;

        // The dry run: no claim of what the registry would answer; both indexes named.
        const mark = to.requests().length;
        const dry = await cli([
          "copy",
          "--dry-run",
          ...flags,
          source,
          `oci://${to.host}/v/auto:v1`,
        ]);
        assert.equal(dry.code, 0, dry.stderr);
        assert.doesNotMatch(dry.stderr, /took|refused the sparse/, dry.stderr);
        assert.ok(
          dry.stderr.includes(
            `index ${src.index.digest}, 2 of 5 platforms (linux/amd64, linux/arm64/v8): ` +
              `--sparse=auto would try it as is (a sparse index) at ${to.host}/v/auto and, if ` +
              `the registry refuses it, write the rewritten index ${rewritten} instead\n`,
          ),
          dry.stderr,
        );
        const plan = dry.stdout.trimEnd().split("\n").map((l) => l.replace(/\s+/g, " ").trim());
        assert.ok(
          plan.some((l) =>
            l.startsWith(`would try to write index ${src.index.digest} `) &&
            l.endsWith("(tag 'v1'): sparse, the registry may refuse it")
          ),
          dry.stdout,
        );
        assert.ok(
          plan.some((l) =>
            l.startsWith(`if refused, write index ${rewritten} `) &&
            l.endsWith("(tag 'v1'): rewritten, only the chosen platforms")
          ),
          dry.stdout,
        );
        assert.match(
          plan.at(-1)!,
          new RegExp(
            `^Total to move: \\d+ bytes \\(.*\\): ${blobs.length} blobs to transfer, 5 manifests ` +
              "to write; 1 rewritten index \\(\\d+ bytes\\) more to write if the registry " +
              "refuses the sparse index; 0 blobs \\(0 bytes\\) already there$",
          ),
        );
        const dryRequests = to.requests().slice(mark);
        assert.deepEqual(dryRequests.filter((l) => !/^(GET|HEAD) /.test(l)), [], "reads only");

        // The copy: refused, rewritten, the index the plan named; what moved is counted.
        const json = await cli([
          "copy",
          "--progress=json",
          ...flags,
          source,
          `oci://${to.host}/big/auto:v1`,
        ]);
        assert.equal(copied(json, "auto, json"), rewritten);
        const events = json.stderr.trimEnd().split("\n").map((l) => JSON.parse(l));
        const plans = events.filter((e) => e.type === "plan");
        assert.deepEqual(
          plans.map((e) => [e.blobs, e.bytes]),
          [[blobs.length, blobBytes]],
          "one plan event, the first attempt's",
        );
        const summary = events.find((e) => e.type === "summary");
        assert.equal(summary.blobsCopied, blobs.length);
        assert.equal(summary.bytesMoved, blobBytes);
        assert.equal(summary.bytesMoved + summary.bytesPresent + summary.bytesResumed, blobBytes);
        assert.equal(summary.manifestsWritten, 5);

        // Into a layout, auto keeps the index (a layout takes it): known before, said so.
        const toLayout = await cli(["copy", "--dry-run", ...flags, source, `${tmp}/lay:v1`]);
        assert.equal(toLayout.code, 0, toLayout.stderr);
        assert.match(toLayout.stderr, /\(--sparse=auto: a layout takes a sparse index\)$/m);
        assert.match(
          toLayout.stdout,
          new RegExp(`^  would write +index +${src.index.digest} `, "m"),
        );
        assert.doesNotMatch(toLayout.stdout, /refuse/);

        const text = await cli(["copy", ...flags, source, `oci://${to.host}/big/auto2:v1`]);
        assert.equal(copied(text, "auto, text"), rewritten);
        assert.match(text.stderr, /^The registry refused the sparse index/m);
        assert.ok(
          text.stderr.endsWith(
            `Copied ${blobs.length} blobs (${
              formatBytes(blobBytes)
            }); 5 manifests written (index)\n`,
          ),
          text.stderr,
        );
      });
    });
  });
});
