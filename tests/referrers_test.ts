// `umoci copy --referrers / --referrers-type / --digest-tags` (issue 13) through the CLI,
// against the real registry (docker-registry 2.8: no referrers API, so the referrers tag
// schema is what is exercised) and against a recording proxy in front of it that serves
// the referrers API, pages listings and honours If-Match (tests/fixtures/referrers_proxy.ts).
//
// The artifacts are built here: an image, an SPDX SBOM referring to it (artifactType
// application/spdx+json, the empty config `{}`), a signature referring to the SBOM (a
// referrer of a referrer), and a cosign-shaped signature manifest under the tag
// `sha256-HEX.sig` (cosign's tag convention, no subject).
import assert from "node:assert/strict";
import { join } from "node:path";
import { umoci } from "./fixtures/cli.ts";
import {
  appendIndexEntry,
  assertLayoutConsistent,
  assertOciImageToolValid,
  blobFile,
  buildArtifact,
  buildMultiPlatformIndex,
  buildRandomImage,
  type Descriptor,
  digestOf,
  OCI_CONFIG,
  OCI_MANIFEST,
  readIndex,
  REF_NAME,
  runRaw,
  skopeoCopy,
  tagDescriptor,
  withTempDir,
  writeBlob,
  writeJson,
} from "./fixtures/images.ts";
import { type RunningRegistry, startRegistry, withRegistryAndDir } from "./fixtures/registry.ts";
import { startReferrersProxy } from "./fixtures/referrers_proxy.ts";
import { digestTagKind, referrersTagName } from "../src/store/referrers.ts";
import { checkAttachedCapabilities, copyAttached } from "../src/referrers.ts";
import { type ImageIndex, scanReferrers } from "../src/store/index_json.ts";
import { RegistryStore } from "../src/store/registry/registry.ts";
import { parseRegistryReference } from "../src/reference.ts";
import { UserError } from "../src/errors.ts";
import { serveRecorded } from "./fixtures/mini_registry.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
const SPDX = "application/spdx+json";
const SIG_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json";
const INTOTO = "application/vnd.in-toto+json";
const SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json";

interface SupplyChain {
  src: string;
  image: Descriptor;
  sbom: Descriptor;
  /** A signature whose subject is the SBOM. */
  sbomSig: Descriptor;
  /** The cosign-shaped signature tagged sha256-HEX.sig. */
  cosign: Descriptor;
  cosignTag: string;
}

/** The image and what points at it, in a layout at DIR/src (referrers listed without names). */
async function buildSupplyChain(dir: string): Promise<SupplyChain> {
  const src = join(dir, "src");
  const image = (await buildRandomImage(src, "v1", { layerSizes: [20_000, 3_000] })).manifest;
  const spdx = enc.encode(JSON.stringify({
    spdxVersion: "SPDX-2.3",
    dataLicense: "CC0-1.0",
    SPDXID: "SPDXRef-DOCUMENT",
    name: "app",
    documentNamespace: `https://example.com/spdx/app-${crypto.randomUUID()}`,
    creationInfo: { created: "2024-01-01T00:00:00Z", creators: ["Tool: umoci-copy-tests"] },
    packages: [{ SPDXID: "SPDXRef-busybox", name: "busybox", versionInfo: "1.36.1" }],
  }));
  const sbom = (await buildArtifact(src, undefined, {
    subject: image,
    artifactType: SPDX,
    payload: spdx,
    payloadMediaType: SPDX,
  })).manifest;
  const sbomSig = (await buildArtifact(src, undefined, {
    subject: sbom,
    artifactType: SIG_TYPE,
    payload: enc.encode(JSON.stringify({ signed: sbom.digest, sig: crypto.randomUUID() })),
    payloadMediaType: SIMPLESIGNING,
  })).manifest;
  for (const d of [sbom, sbomSig]) await appendIndexEntry(src, d);
  const cosign = await cosignSignature(src, image);
  const cosignTag = `${referrersTagName(image.digest)}.sig`;
  await tagDescriptor(src, cosign, cosignTag);
  return { src, image, sbom, sbomSig, cosign, cosignTag };
}

/** A manifest shaped like cosign's `.sig` (simple signing payload, signature annotation). */
async function cosignSignature(dir: string, image: Descriptor): Promise<Descriptor> {
  const payload = enc.encode(JSON.stringify({
    critical: {
      identity: { "docker-reference": "example.com/app" },
      image: { "docker-manifest-digest": image.digest },
      type: "cosign container image signature",
    },
    optional: null,
  }));
  const layer = {
    mediaType: SIMPLESIGNING,
    digest: await writeBlob(dir, payload),
    size: payload.length,
    annotations: { "dev.cosignproject.cosign/signature": btoa(crypto.randomUUID()) },
  };
  const config = await writeJson(dir, {
    architecture: "",
    created: "0001-01-01T00:00:00Z",
    history: [{ created: "0001-01-01T00:00:00Z" }],
    os: "",
    rootfs: { type: "layers", diff_ids: [layer.digest] },
    config: {},
  }, OCI_CONFIG);
  return await writeJson(
    dir,
    { schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers: [layer] },
    OCI_MANIFEST,
  );
}

async function skopeoRaw(image: string): Promise<Uint8Array> {
  const r = await runRaw("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${image}`]);
  if (r.code !== 0) throw new Error(`skopeo inspect --raw ${image}: ${r.stderr}`);
  return r.stdout;
}

/** GET a manifest straight from the registry (no umoci code involved). */
async function registryManifest(base: string, repo: string, ref: string) {
  const res = await fetch(`${base}/v2/${repo}/manifests/${ref}`, {
    headers: { accept: `${OCI_INDEX}, ${OCI_MANIFEST}` },
  });
  const bytes = new Uint8Array(await res.arrayBuffer());
  return {
    status: res.status,
    bytes,
    json: res.status === 200 ? JSON.parse(dec.decode(bytes)) : undefined,
  };
}

async function registryTags(base: string, repo: string): Promise<string[]> {
  const res = await fetch(`${base}/v2/${repo}/tags/list`);
  return ((await res.json()).tags ?? []).sort();
}

/** Run the CLI; it must succeed and print `digest`. Returns stderr. */
async function copyOk(args: string[], digest: string): Promise<string> {
  const r = await umoci(["copy", ...args]);
  assert.equal(r.code, 0, `umoci copy ${args.join(" ")}:\n${r.stderr}`);
  assert.equal(r.stdout.trim(), digest);
  return r.stderr;
}

let sentinel = 0;
/**
 * Access-log lines of the registry since `from`, once every earlier request has been logged
 * (a sentinel request, logged after all of them, has arrived).
 */
async function requestsSince(reg: RunningRegistry, from: number): Promise<string[]> {
  const mark = `/v2/sentinel${++sentinel}/tags/list`;
  await (await fetch(reg.url + mark)).body?.cancel();
  const deadline = Date.now() + 5000;
  for (;;) {
    const lines = reg.requests().slice(from);
    const i = lines.findIndex((l) => l.includes(mark));
    if (i >= 0) return lines.slice(0, i);
    if (Date.now() > deadline) throw new Error(`sentinel not logged:\n${lines.join("\n")}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** index.json entries without a ref.name. */
async function unnamed(dir: string): Promise<string[]> {
  return (await readIndex(dir)).manifests.filter((m) => !m.annotations?.[REF_NAME])
    .map((m) => m.digest).sort();
}

Deno.test("scanReferrers: a listed manifest that cannot be read is an error, not a non-referrer", async () => {
  const subject = `sha256:${"ab".repeat(32)}`;
  const sig = new TextEncoder().encode(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    artifactType: "application/vnd.example.sig",
    config: { mediaType: "application/vnd.oci.empty.v1+json", digest: subject, size: 2 },
    layers: [],
    subject: { mediaType: OCI_MANIFEST, digest: subject, size: 100 },
  }));
  const desc = { mediaType: OCI_MANIFEST, digest: digestOf(sig), size: sig.length };
  const index = { schemaVersion: 2, manifests: [desc] } as ImageIndex;
  const found = await scanReferrers(
    index,
    "test",
    () => Promise.resolve(true),
    () => Promise.resolve(sig),
  );
  assert.deepEqual(found.get(subject)?.map((d) => d.digest), [desc.digest]);
  // A read that fails (EACCES, EIO) used to be taken for "not JSON": the signature was left
  // out of a --referrers copy without a word.
  await assert.rejects(
    scanReferrers(
      index,
      "test",
      () => Promise.resolve(true),
      () => Promise.reject(new Deno.errors.PermissionDenied("Permission denied (os error 13)")),
    ),
    Deno.errors.PermissionDenied,
  );
  // Content that is not JSON is still just not a referrer.
  const junk = await scanReferrers(
    index,
    "test",
    () => Promise.resolve(true),
    () => Promise.resolve(new TextEncoder().encode("not json")),
  );
  assert.equal(junk.size, 0);
});

Deno.test("digest tags: ALG-HEX is the fallback tag, ALG-HEX.SUFFIX a cosign tag, nothing else", () => {
  const d = `sha256:${"ab".repeat(32)}`;
  assert.equal(digestTagKind(`sha256-${"ab".repeat(32)}`, d), "plain");
  assert.equal(digestTagKind(`sha256-${"ab".repeat(32)}.sig`, d), "suffixed");
  assert.equal(digestTagKind(`sha256-${"ab".repeat(32)}.att`, d), "suffixed");
  assert.equal(digestTagKind(`sha256-${"ab".repeat(32)}.`, d), undefined);
  assert.equal(digestTagKind(`sha256-${"ab".repeat(31)}`, d), undefined);
  assert.equal(digestTagKind(`sha256-${"ab".repeat(32)}x`, d), undefined);
  assert.equal(digestTagKind("latest", d), undefined);
});

Deno.test("CLI --referrers: SBOM and signature-on-SBOM go registry → layout → registry, every digest kept, fallback tags list each once after two runs", async () => {
  const reg = await startRegistry({ accessLog: true });
  try {
    await withTempDir(async (dir) => {
      const sc = await buildSupplyChain(dir);
      const imageTag = referrersTagName(sc.image.digest);
      const sbomTag = referrersTagName(sc.sbom.digest);
      // layout → registry: the referrers arrive after their subjects, in the fallback tags.
      await copyOk(
        ["--plain-http", "-r", `${sc.src}:v1`, `oci://${reg.host}/sc/a:v1`],
        sc.image.digest,
      );
      // registry → layout
      const back = join(dir, "back");
      const pull = await copyOk(
        ["--plain-http", "--referrers", `oci://${reg.host}/sc/a:v1`, `${back}:v1`],
        sc.image.digest,
      );
      assert.match(pull, /2 referrers copied, 0 already present/);
      assert.deepEqual(await unnamed(back), [sc.sbom.digest, sc.sbomSig.digest].sort());
      for (const d of [sc.image, sc.sbom, sc.sbomSig]) {
        assert.deepEqual(
          await Deno.readFile(blobFile(back, d.digest)),
          await Deno.readFile(blobFile(sc.src, d.digest)),
        );
      }
      await assertLayoutConsistent(back);
      await assertOciImageToolValid(back, "v1");
      // A rerun into the layout changes nothing.
      const before = await Deno.readTextFile(join(back, "index.json"));
      const again = await copyOk(
        ["--plain-http", "-r", `oci://${reg.host}/sc/a:v1`, `${back}:v1`],
        sc.image.digest,
      );
      assert.match(again, /^2 referrers already present: nothing to copy$/m);
      assert.equal(await Deno.readTextFile(join(back, "index.json")), before);

      // layout → registry, twice.
      for (let run = 0; run < 2; run++) {
        const mark = reg.requests().length;
        const err = await copyOk(
          ["--plain-http", "-r", `${back}:v1`, `oci://${reg.host}/sc/b:v1`],
          sc.image.digest,
        );
        const lines = await requestsSince(reg, mark);
        if (run === 1) {
          assert.match(err, /^2 referrers already present: nothing to copy$/m);
          assert.deepEqual(
            lines.filter((l) => /^(PUT|POST|PATCH) /.test(l)),
            [],
            "nothing written",
          );
        }
        const top = await registryManifest(reg.url, "sc/b", imageTag);
        assert.equal(top.status, 200);
        assert.deepEqual(top.json.manifests.map((m: Descriptor) => [m.digest, m.artifactType]), [
          [sc.sbom.digest, SPDX],
        ]);
        const nested = await registryManifest(reg.url, "sc/b", sbomTag);
        assert.deepEqual(nested.json.manifests.map((m: Descriptor) => [m.digest, m.artifactType]), [
          [sc.sbomSig.digest, SIG_TYPE],
        ]);
      }
      // registry → registry (blobs mounted across repositories), twice.
      for (let run = 0; run < 2; run++) {
        const err = await copyOk(
          ["--plain-http", "-r", `oci://${reg.host}/sc/b:v1`, `oci://${reg.host}/sc/c:v1`],
          sc.image.digest,
        );
        assert.match(
          err,
          run === 0
            ? /2 referrers copied, 0 already/
            : /^2 referrers already present: nothing to copy$/m,
        );
        const top = await registryManifest(reg.url, "sc/c", imageTag);
        assert.deepEqual(top.json.manifests.map((m: Descriptor) => m.digest), [sc.sbom.digest]);
        const nested = await registryManifest(reg.url, "sc/c", sbomTag);
        assert.deepEqual(nested.json.manifests.map((m: Descriptor) => m.digest), [
          sc.sbomSig.digest,
        ]);
      }
      // skopeo reads back the same bytes, by tag and by digest.
      assert.deepEqual(
        await skopeoRaw(`${reg.host}/sc/b:v1`),
        await Deno.readFile(blobFile(sc.src, sc.image.digest)),
      );
      for (const d of [sc.sbom, sc.sbomSig]) {
        assert.deepEqual(
          await skopeoRaw(`${reg.host}/sc/b@${d.digest}`),
          await Deno.readFile(blobFile(sc.src, d.digest)),
        );
      }
      const listed = JSON.parse(dec.decode(await skopeoRaw(`${reg.host}/sc/b:${imageTag}`)));
      assert.deepEqual(listed.manifests.map((m: Descriptor) => m.digest), [sc.sbom.digest]);
      // … and skopeo copies the SBOM and its signature into a fresh layout, same bytes.
      const fresh = join(dir, "skopeo");
      for (const [d, tag] of [[sc.sbom, "sbom"], [sc.sbomSig, "sig"]] as const) {
        const r = await skopeoCopy([
          "copy",
          "--preserve-digests",
          "--src-tls-verify=false",
          `docker://${reg.host}/sc/b@${d.digest}`,
          `oci:${fresh}:${tag}`,
        ]);
        assert.equal(r.code, 0, r.stderr);
        const entry = (await readIndex(fresh)).manifests.find((m) =>
          m.annotations?.[REF_NAME] === tag
        );
        assert.equal(entry?.digest, d.digest);
        const doc = JSON.parse(await Deno.readTextFile(blobFile(sc.src, d.digest)));
        for (const b of [doc.config, ...doc.layers]) {
          assert.deepEqual(
            await Deno.readFile(blobFile(fresh, b.digest)),
            await Deno.readFile(blobFile(sc.src, b.digest)),
          );
        }
      }
    });
  } finally {
    await reg.stop();
  }
});

Deno.test("CLI --digest-tags: a cosign .sig tag goes registry → registry with its digest; --referrers --digest-tags carries both conventions", async () => {
  const reg = await startRegistry();
  try {
    await withTempDir(async (dir) => {
      const sc = await buildSupplyChain(dir);
      await copyOk(
        ["--plain-http", "-r", "--digest-tags", `${sc.src}:v1`, `oci://${reg.host}/dt/src:v1`],
        sc.image.digest,
      );
      // --digest-tags alone: the .sig tag, not the OCI 1.1 referrers (apart from the
      // fallback tag, whose entries are merged as referrers).
      const err = await copyOk(
        [
          "--plain-http",
          "--digest-tags",
          `oci://${reg.host}/dt/src:v1`,
          `oci://${reg.host}/dt/only:v1`,
        ],
        sc.image.digest,
      );
      assert.match(err, /1 digest tag copied/);
      const sig = await registryManifest(reg.url, "dt/only", sc.cosignTag);
      assert.equal(sig.status, 200);
      assert.equal(digestOf(sig.bytes), sc.cosign.digest);
      assert.deepEqual(
        await skopeoRaw(`${reg.host}/dt/only:${sc.cosignTag}`),
        await Deno.readFile(blobFile(sc.src, sc.cosign.digest)),
      );
      // The fallback tags are digest tags too: their entries came along as referrers (merged
      // into the destination's tags, not overwriting them), the SBOM's as well.
      for (const d of [sc.sbom, sc.sbomSig]) {
        assert.equal((await registryManifest(reg.url, "dt/only", d.digest)).status, 200);
      }
      const top = await registryManifest(reg.url, "dt/only", referrersTagName(sc.image.digest));
      assert.deepEqual(top.json.manifests.map((m: Descriptor) => m.digest), [sc.sbom.digest]);

      // Both conventions into a layout: the .sig tag by name, the referrers unnamed.
      const both = join(dir, "both");
      await copyOk(
        ["--plain-http", "-r", "--digest-tags", `oci://${reg.host}/dt/src:v1`, `${both}:v1`],
        sc.image.digest,
      );
      const index = await readIndex(both);
      const named = Object.fromEntries(
        index.manifests.filter((m) => m.annotations?.[REF_NAME]).map((
          m,
        ) => [m.annotations![REF_NAME], m.digest]),
      );
      assert.equal(named[sc.cosignTag], sc.cosign.digest);
      assert.equal(named.v1, sc.image.digest);
      assert.deepEqual(await unnamed(both), [sc.sbom.digest, sc.sbomSig.digest].sort());
      await assertLayoutConsistent(both);
    });
  } finally {
    await reg.stop();
  }
});

Deno.test("CLI --referrers costs requests only when asked: counts against the registry's access log", async () => {
  const reg = await startRegistry({ accessLog: true });
  try {
    await withTempDir(async (dir) => {
      const sc = await buildSupplyChain(dir);
      await copyOk(
        ["--plain-http", "-r", `${sc.src}:v1`, `oci://${reg.host}/rc/app:v1`],
        sc.image.digest,
      );
      const count = async (flags: string[], out: string) => {
        const mark = reg.requests().length;
        await copyOk(
          ["--plain-http", ...flags, `oci://${reg.host}/rc/app:v1`, `${join(dir, out)}:v1`],
          sc.image.digest,
        );
        return await requestsSince(reg, mark);
      };
      const plain = await count([], "plain");
      const withRefs = await count(["--referrers"], "refs");
      console.log(`requests without --referrers: ${plain.length}\n  ${plain.join("\n  ")}`);
      console.log(`requests with --referrers: ${withRefs.length}\n  ${withRefs.join("\n  ")}`);
      // Without the flag: nothing about referrers or tags is asked.
      assert.deepEqual(
        plain.filter((l) => /referrers|tags\/list|manifests\/sha256-/.test(l)),
        [],
      );
      assert.deepEqual(await unnamed(join(dir, "plain")), []);
      // With it: the image's requests, plus one 404 of the referrers API for the whole run,
      // one GET of each subject's fallback tag (image, SBOM, signature: 2 found, 1 absent),
      // and the referrers' manifests and blobs.
      const path = (l: string) => l.split(" ").slice(0, 3).join(" ");
      const extra = withRefs.map(path);
      for (const l of plain.map(path)) {
        assert.ok(extra.includes(l), `${l} is asked with --referrers too`);
        extra.splice(extra.indexOf(l), 1);
      }
      const api = extra.filter((l) => l.includes("/referrers/"));
      assert.deepEqual(api, [`GET /v2/rc/app/referrers/${sc.image.digest} 404`]);
      const tags = extra.filter((l) => l.includes("/manifests/sha256-"));
      assert.deepEqual(
        tags.sort(),
        [
          `GET /v2/rc/app/manifests/${referrersTagName(sc.image.digest)} 200`,
          `GET /v2/rc/app/manifests/${referrersTagName(sc.sbom.digest)} 200`,
          `GET /v2/rc/app/manifests/${referrersTagName(sc.sbomSig.digest)} 404`,
        ].sort(),
      );
      // Each referrer manifest is fetched once, each of their blobs once (the `{}` config
      // is shared by both).
      const manifests = extra.filter((l) => /\/manifests\/sha256:/.test(l));
      assert.deepEqual(
        manifests.sort(),
        [
          `GET /v2/rc/app/manifests/${sc.sbom.digest} 200`,
          `GET /v2/rc/app/manifests/${sc.sbomSig.digest} 200`,
        ].sort(),
      );
      assert.equal(extra.filter((l) => l.includes("/blobs/")).length, 3, extra.join("\n"));
      assert.equal(extra.length, 9, extra.join("\n"));
    });
  } finally {
    await reg.stop();
  }
});

Deno.test("CLI --referrers-type: only referrers of the given artifactType, recursively", async () => {
  const reg = await startRegistry();
  try {
    await withTempDir(async (dir) => {
      const sc = await buildSupplyChain(dir);
      await copyOk(
        ["--plain-http", "-r", `${sc.src}:v1`, `oci://${reg.host}/ft/app:v1`],
        sc.image.digest,
      );
      const spdxOnly = join(dir, "spdx");
      await copyOk(
        [
          "--plain-http",
          "-r",
          "--referrers-type",
          SPDX,
          `oci://${reg.host}/ft/app:v1`,
          `${spdxOnly}:v1`,
        ],
        sc.image.digest,
      );
      assert.deepEqual(await unnamed(spdxOnly), [sc.sbom.digest]);
      // Both types (repeated, and comma-separated) bring both.
      for (
        const flags of [["--referrers-type", SPDX, "--referrers-type", SIG_TYPE], [
          `--referrers-type=${SPDX},${SIG_TYPE}`,
        ]]
      ) {
        const out = join(dir, `both-${flags.length}`);
        await copyOk(
          ["--plain-http", "-r", ...flags, `${sc.src}:v1`, `${out}:v1`],
          sc.image.digest,
        );
        assert.deepEqual(await unnamed(out), [sc.sbom.digest, sc.sbomSig.digest].sort());
      }
      // A type no referrer has: the image alone.
      const none = join(dir, "none");
      await copyOk(
        ["-r", "--referrers-type", INTOTO, `${sc.src}:v1`, `${none}:v1`],
        sc.image.digest,
      );
      assert.deepEqual(await unnamed(none), []);
    });
  } finally {
    await reg.stop();
  }
});

Deno.test("CLI: flag mistakes are one usage line, exit 2, nothing written", async () => {
  await withTempDir(async (dir) => {
    const sc = await buildSupplyChain(dir);
    const cases: [string[], RegExp][] = [
      [["--referrers-type", SPDX], /^error: --referrers-type needs --referrers$/],
      [["-r", "--referrers-type", "spdx"], /^error: --referrers-type: "spdx" is not a media type/],
    ];
    for (const [flags, message] of cases) {
      const r = await umoci(["copy", ...flags, `${sc.src}:v1`, `${join(dir, "out")}:v1`]);
      assert.equal(r.code, 2, r.stderr);
      const lines = r.stderr.trim().split("\n");
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0], message);
      await assert.rejects(Deno.lstat(join(dir, "out")));
    }
  });
});

Deno.test("CLI --referrers layout → layout: referrers of an index's platform manifests too; a rerun leaves index.json alone", async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, "src");
    const multi = await buildMultiPlatformIndex(src, "multi", ["linux/amd64", "linux/arm64"]);
    const arm = multi.manifests[1];
    const onIndex =
      (await buildArtifact(src, undefined, { subject: multi.index, artifactType: SIG_TYPE }))
        .manifest;
    const onArm =
      (await buildArtifact(src, undefined, { subject: arm, artifactType: SPDX })).manifest;
    // A referrer the layout holds but lists under a name: found all the same.
    await tagDescriptor(src, onArm, "arm-sbom");
    await appendIndexEntry(src, onIndex);
    const dst = join(dir, "dst");
    const err = await copyOk(["-r", `${src}:multi`, `${dst}:multi`], multi.index.digest);
    assert.match(err, /2 referrers copied/);
    assert.deepEqual(await unnamed(dst), [onIndex.digest, onArm.digest].sort());
    await assertLayoutConsistent(dst);
    const before = await Deno.readTextFile(join(dst, "index.json"));
    const again = await copyOk(["-r", `${src}:multi`, `${dst}:multi`], multi.index.digest);
    assert.match(again, /^2 referrers already present: nothing to copy$/m);
    assert.equal(await Deno.readTextFile(join(dst, "index.json")), before);
  });
});

Deno.test("CLI --referrers: a fallback tag holding something other than an index means no referrers", async () => {
  const reg = await startRegistry();
  try {
    await withTempDir(async (dir) => {
      const src = join(dir, "src");
      const image = (await buildRandomImage(src, "v1", { layerSizes: [100] })).manifest;
      const other = (await buildRandomImage(src, "other", { layerSizes: [100] })).manifest;
      await copyOk(["--plain-http", `${src}:v1`, `oci://${reg.host}/nx/app:v1`], image.digest);
      await copyOk(
        [
          "--plain-http",
          `${src}:other`,
          `oci://${reg.host}/nx/app:${referrersTagName(image.digest)}`,
        ],
        other.digest,
      );
      const out = join(dir, "out");
      const err = await copyOk(
        ["--plain-http", "-r", `oci://${reg.host}/nx/app:v1`, `${out}:v1`],
        image.digest,
      );
      assert.match(err, /0 referrers copied, 0 already present/);
      assert.deepEqual(await unnamed(out), []);
    });
  } finally {
    await reg.stop();
  }
});

/** An SPDX SBOM of `subject`, listed (without a name) in the layout `src`. */
async function addSbom(src: string, subject: Descriptor): Promise<Descriptor> {
  const sbom = (await buildArtifact(src, undefined, {
    subject,
    artifactType: SPDX,
    payload: enc.encode('{"spdxVersion":"SPDX-2.3"}'),
    payloadMediaType: SPDX,
  })).manifest;
  await appendIndexEntry(src, sbom);
  return sbom;
}

/**
 * `copy -r SRC:v1 oci://REG/REPO:v1` must stop with one error line naming the referrers tag
 * of `subject` and `sbom`, exit 1, and leave that tag's manifest byte for byte as it was.
 */
async function refusesToOverwrite(
  reg: RunningRegistry,
  src: string,
  repo: string,
  subject: Descriptor,
  sbom: Descriptor,
): Promise<void> {
  const tag = referrersTagName(subject.digest);
  const before = await registryManifest(reg.url, repo, tag);
  assert.equal(before.status, 200);
  const r = await umoci([
    "copy",
    "--plain-http",
    "-r",
    `${src}:v1`,
    `oci://${reg.host}/${repo}:v1`,
  ]);
  assert.equal(r.code, 1, r.stderr);
  const errors = r.stderr.split("\n").filter((l) => l.startsWith("error:"));
  assert.equal(errors.length, 1, r.stderr);
  assert.match(errors[0], new RegExp(`referrers tag ${tag} .* not overwritten`));
  assert.ok(errors[0].includes(sbom.digest), errors[0]);
  const after = await registryManifest(reg.url, repo, tag);
  assert.deepEqual(after.bytes, before.bytes, "the tag still names what it named");
}

Deno.test("CLI --referrers: a fallback tag naming an image is never overwritten: one error line, exit 1", async () => {
  // distribution answers a GET of an image manifest asked for as an index alone with 404,
  // and ignores If-None-Match: read that way, the user's image under `sha256-HEX` was lost.
  await withRegistryAndDir(async (reg, dir) => {
    const src = join(dir, "src");
    const image = (await buildRandomImage(src, "v1", { layerSizes: [100] })).manifest;
    const other = (await buildRandomImage(src, "other", { layerSizes: [100] })).manifest;
    const sbom = await addSbom(src, image);
    const tag = referrersTagName(image.digest);
    await copyOk(
      ["--plain-http", `${src}:other`, `oci://${reg.host}/keep/app:${tag}`],
      other.digest,
    );
    await refusesToOverwrite(reg, src, "keep/app", image, sbom);
  });
});

Deno.test("CLI --referrers: a multi-platform index tagged sha256-HEX of its own digest is no referrers list", async () => {
  // How an image listed by digest in --images was pushed before: the subject under its own
  // referrers tag. Merged into as a list, the index lost its meaning and the tag its image.
  await withRegistryAndDir(async (reg, dir) => {
    const src = join(dir, "src");
    const multi = await buildMultiPlatformIndex(src, "v1", ["linux/amd64", "linux/arm64"]);
    const sbom = await addSbom(src, multi.index);
    const tag = referrersTagName(multi.index.digest);
    await copyOk(
      ["--plain-http", `${src}:v1`, `oci://${reg.host}/self/app:${tag}`],
      multi.index.digest,
    );
    // Read as a source: no referrers (its platform manifests are none).
    const out = join(dir, "out");
    const err = await copyOk(
      ["--plain-http", "-r", `oci://${reg.host}/self/app:${tag}`, `${out}:v1`],
      multi.index.digest,
    );
    assert.match(err, /0 referrers copied, 0 already present/);
    assert.ok(!/! skipping/.test(err), err);
    // Written to as a destination: refused, and the tag left as it was.
    await refusesToOverwrite(reg, src, "self/app", multi.index, sbom);
  });
});

Deno.test("CLI --referrers through the referrers API (proxy fixture): OCI-Subject means no fallback tag; filter and Link pages followed", async () => {
  const reg = await startRegistry();
  const proxy = startReferrersProxy({ backend: reg.url, api: true, pageSize: 1 });
  try {
    await withTempDir(async (dir) => {
      const sc = await buildSupplyChain(dir);
      const att =
        (await buildArtifact(sc.src, undefined, { subject: sc.image, artifactType: INTOTO }))
          .manifest;
      await appendIndexEntry(sc.src, att);
      await copyOk(
        ["--plain-http", "-r", `${sc.src}:v1`, `oci://${proxy.host}/api/app:v1`],
        sc.image.digest,
      );
      // The registry answered OCI-Subject: no fallback tag was written.
      assert.deepEqual(await registryTags(reg.url, "api/app"), ["v1"]);
      assert.deepEqual(proxy.requests.filter((r) => r.target.includes("/manifests/sha256-")), []);
      // Nor was the referrers list checked: OCI-Subject said the registry keeps it.
      assert.deepEqual(proxy.requests.filter((r) => r.target.includes("/referrers/")), []);

      const mark = proxy.requests.length;
      const out = join(dir, "out");
      await copyOk(
        ["--plain-http", "-r", `oci://${proxy.host}/api/app:v1`, `${out}:v1`],
        sc.image.digest,
      );
      assert.deepEqual(await unnamed(out), [sc.sbom.digest, sc.sbomSig.digest, att.digest].sort());
      const asked = proxy.requests.slice(mark).filter((r) => r.target.includes("/referrers/"));
      // The image has two referrers, one per page: two pages; the SBOM one; the rest none.
      const image = asked.filter((r) => r.target.includes(sc.image.digest));
      assert.deepEqual(image.map((r) => [r.target.includes("_page=1"), r.status]), [[false, 200], [
        true,
        200,
      ]]);
      assert.ok(asked.every((r) => r.status === 200));
      assert.deepEqual(
        proxy.requests.slice(mark).filter((r) => r.target.includes("/manifests/sha256-")),
        [],
      );

      // One type: sent as the artifactType filter.
      const mark2 = proxy.requests.length;
      const filtered = join(dir, "filtered");
      await copyOk(
        [
          "--plain-http",
          "-r",
          "--referrers-type",
          INTOTO,
          `oci://${proxy.host}/api/app:v1`,
          `${filtered}:v1`,
        ],
        sc.image.digest,
      );
      assert.deepEqual(await unnamed(filtered), [att.digest]);
      const q = proxy.requests.slice(mark2).find((r) => r.target.includes("/referrers/"));
      assert.equal(new URL(q!.target, "http://x").searchParams.get("artifactType"), INTOTO);
    });
  } finally {
    await proxy.stop();
    await reg.stop();
  }
});

Deno.test("CLI --referrers: the fallback tag is written with If-Match; a 412 after a concurrent write is re-read and merged, no entry lost", async () => {
  const reg = await startRegistry();
  let raced = false;
  let intruder: Descriptor | undefined;
  let srcDir = "";
  const proxy = startReferrersProxy({
    backend: reg.url,
    conditional: true,
    // The first time our copy writes the image's fallback tag, another writer's referrer
    // lands there first (written straight to the registry).
    beforeTagPut: async (repo, tag) => {
      if (raced || !intruder || !tag.startsWith("sha256-")) return;
      raced = true;
      const put = (ref: string, body: Uint8Array<ArrayBuffer>, type: string) =>
        fetch(`${reg.url}/v2/${repo}/manifests/${ref}`, {
          method: "PUT",
          headers: { "content-type": type },
          body,
        }).then((r) => r.body?.cancel());
      await put(
        intruder.digest,
        await Deno.readFile(blobFile(srcDir, intruder.digest)),
        OCI_MANIFEST,
      );
      const current = await registryManifest(reg.url, repo, tag);
      const index = current.json ?? { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] };
      index.manifests.push({
        mediaType: OCI_MANIFEST,
        digest: intruder.digest,
        size: intruder.size,
        artifactType: INTOTO,
      });
      await put(tag, enc.encode(JSON.stringify(index)), OCI_INDEX);
    },
  });
  try {
    await withTempDir(async (dir) => {
      const sc = await buildSupplyChain(dir);
      srcDir = sc.src;
      // The intruder shares its blobs with the SBOM (pushed before the tag is written), so
      // only its manifest needs putting.
      const sbomDoc = JSON.parse(await Deno.readTextFile(blobFile(sc.src, sc.sbom.digest)));
      const payload = await Deno.readFile(blobFile(sc.src, sbomDoc.layers[0].digest));
      const other = (await buildArtifact(sc.src, undefined, {
        subject: sc.image,
        artifactType: INTOTO,
        payload,
        payloadMediaType: SPDX,
      })).manifest;
      await copyOk(
        ["--plain-http", `${sc.src}:v1`, `oci://${reg.host}/race/app:v1`],
        sc.image.digest,
      );
      intruder = other;

      await copyOk(
        ["--plain-http", "-r", `${sc.src}:v1`, `oci://${proxy.host}/race/app:v1`],
        sc.image.digest,
      );
      assert.ok(raced, "the race was staged");
      const puts = proxy.requests.filter((r) =>
        r.method === "PUT" && r.target.endsWith(`/manifests/${referrersTagName(sc.image.digest)}`)
      );
      assert.deepEqual(puts.map((r) => r.status), [412, 201]);
      const top = await registryManifest(reg.url, "race/app", referrersTagName(sc.image.digest));
      assert.deepEqual(
        top.json.manifests.map((m: Descriptor) => m.digest).sort(),
        [other.digest, sc.sbom.digest].sort(),
      );
    });
  } finally {
    await proxy.stop();
    await reg.stop();
  }
});

Deno.test("CLI --referrers: two copies at once, each with its own referrer of one subject, both listed (registry honouring If-Match)", async () => {
  const reg = await startRegistry();
  const proxy = startReferrersProxy({ backend: reg.url, conditional: true });
  try {
    await withTempDir(async (dir) => {
      const base = join(dir, "base");
      const image = (await buildRandomImage(base, "v1", { layerSizes: [1000] })).manifest;
      await copyOk(["--plain-http", `${base}:v1`, `oci://${reg.host}/conc/app:v1`], image.digest);
      const layouts: { dir: string; ref: Descriptor }[] = [];
      for (let i = 0; i < 4; i++) {
        const d = join(dir, `l${i}`);
        await copyOk([`${base}:v1`, `${d}:v1`], image.digest);
        const ref = (await buildArtifact(d, undefined, {
          subject: image,
          artifactType: `application/vnd.example.t${i}+json`,
        })).manifest;
        await appendIndexEntry(d, ref);
        layouts.push({ dir: d, ref });
      }
      const runs = await Promise.all(
        layouts.map((l) =>
          umoci(["copy", "--plain-http", "-r", `${l.dir}:v1`, `oci://${proxy.host}/conc/app:v1`])
        ),
      );
      // On failure, say what the registry was asked and refused.
      const seen = () =>
        proxy.requests.filter((r) => r.method !== "GET" || r.status >= 400)
          .map((r) => `${r.method} ${r.target} ${r.status}`).join("\n");
      for (const r of runs) assert.equal(r.code, 0, `${r.stderr}\n${seen()}`);
      const top = await registryManifest(reg.url, "conc/app", referrersTagName(image.digest));
      assert.deepEqual(
        top.json.manifests.map((m: Descriptor) => m.digest).sort(),
        layouts.map((l) => l.ref.digest).sort(),
        seen(),
      );
    });
  } finally {
    await proxy.stop();
    await reg.stop();
  }
});

Deno.test("CLI --digest-tags follows tags/list pages (proxy fixture pages by 2)", async () => {
  const reg = await startRegistry();
  const proxy = startReferrersProxy({ backend: reg.url, pageSize: 2 });
  try {
    await withTempDir(async (dir) => {
      const sc = await buildSupplyChain(dir);
      await copyOk(
        ["--plain-http", "--digest-tags", `${sc.src}:v1`, `oci://${reg.host}/pg/app:v1`],
        sc.image.digest,
      );
      for (const t of ["a", "b", "c", "d", "e"]) {
        await copyOk(
          ["--plain-http", `${sc.src}:v1`, `oci://${reg.host}/pg/app:${t}`],
          sc.image.digest,
        );
      }
      const out = join(dir, "out");
      await copyOk(
        ["--plain-http", "--digest-tags", `oci://${proxy.host}/pg/app:v1`, `${out}:v1`],
        sc.image.digest,
      );
      const pages = proxy.requests.filter((r) => r.target.includes("/tags/list"));
      assert.ok(pages.length >= 4, JSON.stringify(pages));
      const entry = (await readIndex(out)).manifests.find((m) =>
        m.annotations?.[REF_NAME] === sc.cosignTag
      );
      assert.equal(entry?.digest, sc.cosign.digest);
    });
  } finally {
    await proxy.stop();
    await reg.stop();
  }
});

Deno.test("CLI --referrers: a referrer already in the registry but missing from its fallback tag (a run cut short) is listed by the next run", async () => {
  const reg = await startRegistry();
  try {
    await withTempDir(async (dir) => {
      const sc = await buildSupplyChain(dir);
      await copyOk(
        ["--plain-http", `${sc.src}:v1`, `oci://${reg.host}/cut/app:v1`],
        sc.image.digest,
      );
      // The SBOM's blobs and manifest reach the registry, the fallback tag never does (as if
      // the earlier copy had been killed between the two PUTs).
      const sbomDoc = JSON.parse(await Deno.readTextFile(blobFile(sc.src, sc.sbom.digest)));
      for (const d of [sbomDoc.config, ...sbomDoc.layers]) {
        const post = await fetch(`${reg.url}/v2/cut/app/blobs/uploads/`, { method: "POST" });
        await post.body?.cancel();
        const loc = new URL(post.headers.get("location")!, reg.url);
        loc.searchParams.set("digest", d.digest);
        const put = await fetch(loc, {
          method: "PUT",
          body: await Deno.readFile(blobFile(sc.src, d.digest)),
        });
        await put.body?.cancel();
        assert.equal(put.status, 201);
      }
      const put = await fetch(`${reg.url}/v2/cut/app/manifests/${sc.sbom.digest}`, {
        method: "PUT",
        headers: { "content-type": OCI_MANIFEST },
        body: await Deno.readFile(blobFile(sc.src, sc.sbom.digest)),
      });
      await put.body?.cancel();
      assert.equal(put.status, 201);
      const tag = referrersTagName(sc.image.digest);
      assert.equal((await registryManifest(reg.url, "cut/app", tag)).status, 404);

      const err = await copyOk([
        "--plain-http",
        "-r",
        `${sc.src}:v1`,
        `oci://${reg.host}/cut/app:v1`,
      ], sc.image.digest);
      assert.match(err, /1 referrer copied, 1 already present/);
      const top = await registryManifest(reg.url, "cut/app", tag);
      assert.deepEqual(top.json.manifests.map((m: Descriptor) => [m.digest, m.artifactType]), [[
        sc.sbom.digest,
        SPDX,
      ]]);
    });
  } finally {
    await reg.stop();
  }
});

/** A registry that answers the referrers API (and nothing else) with `answer`. */
function fakeReferrersApi(answer: (url: URL) => Response) {
  return serveRecorded((_req, url) => {
    if (url.pathname === "/v2/" || url.pathname === "/v2") return new Response("{}");
    if (url.pathname.includes("/referrers/")) return answer(url);
    return new Response(JSON.stringify({ errors: [{ code: "NAME_UNKNOWN" }] }), { status: 404 });
  });
}

Deno.test("registry referrers: a next page on another host, a page loop, a malformed index: one-line errors", async () => {
  const subject = { mediaType: OCI_MANIFEST, digest: `sha256:${"1".repeat(64)}`, size: 10 };
  const index = (link?: string) =>
    new Response(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] }), {
      headers: { "content-type": OCI_INDEX, ...(link ? { link } : {}) },
    });
  const cases: [(url: URL) => Response, RegExp][] = [
    [
      () => index(`<http://198.51.100.7/v2/a/b/referrers/x?p=2>; rel="next"`),
      /next page is on another host \(198\.51\.100\.7\); refused/,
    ],
    [(url) => index(`<${url.pathname}>; rel="next"`), /pages in a loop; refused/],
    [
      () => new Response(`{"manifests": "no"}`, { headers: { "content-type": OCI_INDEX } }),
      /referrers of sha256:1+: not an image index/,
    ],
    [() => new Response("nope", { status: 500 }), /GET \/v2\/a\/b\/referrers\/sha256:1+: 500/],
  ];
  for (const [answer, message] of cases) {
    const fake = fakeReferrersApi(answer);
    const store = await RegistryStore.open(parseRegistryReference(`oci://${fake.host}/a/b`), {
      plainHttp: true,
      retries: 0,
    });
    try {
      await assert.rejects(store.referrers(subject), (e) => {
        assert.ok(e instanceof UserError, String(e));
        assert.match(e.message, message);
        assert.ok(!e.message.includes("\n"));
        return true;
      });
    } finally {
      await store.close();
      await fake.stop();
    }
  }
});

Deno.test("registry referrers: the API's filter is applied here too, and entries that are not manifests are left out", async () => {
  const subject = { mediaType: OCI_MANIFEST, digest: `sha256:${"2".repeat(64)}`, size: 10 };
  const d = (n: string, artifactType: string, mediaType = OCI_MANIFEST) => ({
    mediaType,
    digest: `sha256:${n.repeat(64)}`,
    size: 5,
    artifactType,
  });
  const fake = fakeReferrersApi(() =>
    new Response(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_INDEX,
        manifests: [d("a", SPDX), d("b", INTOTO), d("c", SPDX, "application/octet-stream")],
      }),
      { headers: { "content-type": OCI_INDEX } }, // no OCI-Filters-Applied: it ignored it
    )
  );
  const store = await RegistryStore.open(parseRegistryReference(`oci://${fake.host}/a/b`), {
    plainHttp: true,
  });
  try {
    const all = await store.referrers(subject);
    assert.deepEqual(all.map((r) => r.digest), [d("a", "").digest, d("b", "").digest]);
    const spdx = await store.referrers(subject, [SPDX]);
    assert.deepEqual(spdx.map((r) => r.digest), [d("a", "").digest]);
    assert.equal(
      fake.requests.at(-1)?.target,
      `/v2/a/b/referrers/${subject.digest}?artifactType=application%2Fspdx%2Bjson`,
    );
  } finally {
    await store.close();
    await fake.stop();
  }
});

Deno.test("CLI --referrers: a manifest listed as a referrer that does not name the subject is skipped and said so", async () => {
  const reg = await startRegistry();
  try {
    await withTempDir(async (dir) => {
      const sc = await buildSupplyChain(dir);
      await copyOk([
        "--plain-http",
        "--digest-tags",
        `${sc.src}:v1`,
        `oci://${reg.host}/lie/app:v1`,
      ], sc.image.digest);
      // A fallback tag that lists the cosign signature (no subject) as a referrer.
      const index = {
        schemaVersion: 2,
        mediaType: OCI_INDEX,
        manifests: [{ mediaType: OCI_MANIFEST, digest: sc.cosign.digest, size: sc.cosign.size }],
      };
      const put = await fetch(
        `${reg.url}/v2/lie/app/manifests/${referrersTagName(sc.image.digest)}`,
        {
          method: "PUT",
          headers: { "content-type": OCI_INDEX },
          body: JSON.stringify(index),
        },
      );
      await put.body?.cancel();
      assert.equal(put.status, 201);
      const out = join(dir, "out");
      const err = await copyOk(
        ["--plain-http", "-r", `oci://${reg.host}/lie/app:v1`, `${out}:v1`],
        sc.image.digest,
      );
      assert.match(
        err,
        new RegExp(
          `! skipping ${sc.cosign.digest}: listed as a referrer of ${sc.image.digest}, but its subject is absent`,
        ),
      );
      assert.match(err, /0 referrers copied, 0 already present; 1 skipped/);
      assert.deepEqual(await unnamed(out), []);
    });
  } finally {
    await reg.stop();
  }
});

Deno.test("CLI --referrers: a referrer listed but deleted from the source is skipped and said so; the rest is copied", async () => {
  await withRegistryAndDir(async (reg, dir) => {
    const sc = await buildSupplyChain(dir);
    await copyOk(
      ["--plain-http", "-r", `${sc.src}:v1`, `oci://${reg.host}/gone/app:v1`],
      sc.image.digest,
    );
    // The SBOM's signature is deleted; the SBOM's fallback tag still lists it.
    const del = await fetch(`${reg.url}/v2/gone/app/manifests/${sc.sbomSig.digest}`, {
      method: "DELETE",
    });
    await del.body?.cancel();
    assert.equal(del.status, 202);
    for (const dst of ["layout", "registry"]) {
      const target = dst === "layout" ? join(dir, "out") : `oci://${reg.host}/copy/app`;
      const err = await copyOk(
        ["--plain-http", "-r", `oci://${reg.host}/gone/app:v1`, `${target}:v1`],
        sc.image.digest,
      );
      assert.ok(!/^error:/m.test(err), err);
      assert.match(
        err,
        new RegExp(
          `! skipping ${sc.sbomSig.digest}: listed as a referrer of ${sc.sbom.digest} in the source, but no such manifest is there`,
        ),
      );
      assert.match(err, /1 referrer copied, 0 already present; 1 skipped/);
    }
    assert.deepEqual(await unnamed(join(dir, "out")), [sc.sbom.digest]);
  });
});

Deno.test("CLI --referrers: referrers of referrers nest at most 16 levels; the 17th is refused before it is copied", async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, "src");
    const image = (await buildRandomImage(src, "v1", { layerSizes: [100] })).manifest;
    const chain: Descriptor[] = [];
    let subject = image;
    for (let i = 0; i < 16; i++) {
      subject = (await buildArtifact(src, undefined, { subject, artifactType: SIG_TYPE })).manifest;
      await appendIndexEntry(src, subject);
      chain.push(subject);
    }
    const dst = join(dir, "dst");
    const r = await umoci(["copy", "-r", `${src}:v1`, `${dst}:v1`]);
    assert.equal(r.code, 1, r.stderr);
    const last = r.stderr.trim().split("\n").at(-1)!;
    assert.equal(
      last,
      `error: manifest ${
        chain[15].digest
      } is nested more than 16 levels deep (referrers of referrers); refused`,
    );
    // Levels 2…16 arrived; the 17th was not written, nor listed.
    await assert.rejects(Deno.lstat(blobFile(dst, chain[15].digest)));
    await Deno.lstat(blobFile(dst, chain[14].digest));
    await assertLayoutConsistent(dst);
  });
});

Deno.test("CLI --platform with --referrers: the referrers of the chosen platforms' manifests (and of a kept index), no other platform's", async () => {
  const reg = await startRegistry();
  try {
    await withTempDir(async (dir) => {
      const src = join(dir, "src");
      const multi = await buildMultiPlatformIndex(src, "multi", [
        "linux/amd64",
        "linux/arm64",
        "linux/ppc64le",
      ]);
      const [amd, arm, ppc] = multi.manifests;
      const onIndex =
        (await buildArtifact(src, undefined, { subject: multi.index, artifactType: SIG_TYPE }))
          .manifest;
      const sbomOf = new Map<string, Descriptor>();
      for (const m of [amd, arm, ppc]) {
        const sbom = (await buildArtifact(src, undefined, { subject: m, artifactType: SPDX }))
          .manifest;
        sbomOf.set(m.digest, sbom);
        await appendIndexEntry(src, sbom);
      }
      await appendIndexEntry(src, onIndex);
      await copyOk(
        ["--plain-http", "-r", `${src}:multi`, `oci://${reg.host}/pf/app:v1`],
        multi.index.digest,
      );

      // One platform: that manifest and its SBOM; not the index's signature, nothing of arm64.
      const one = join(dir, "one");
      await copyOk(
        [
          "--plain-http",
          "-r",
          "--platform",
          "linux/arm64",
          `oci://${reg.host}/pf/app:v1`,
          `${one}:v1`,
        ],
        arm.digest,
      );
      assert.deepEqual(await unnamed(one), [sbomOf.get(arm.digest)!.digest]);
      await assert.rejects(Deno.lstat(blobFile(one, amd.digest)));
      await assertLayoutConsistent(one);

      // Two platforms, index kept: its signature too, not ppc64le's SBOM (nor its subject).
      const keep = join(dir, "keep");
      await copyOk(
        [
          "--plain-http",
          "-r",
          "--platform",
          "linux/amd64,linux/arm64",
          "--sparse",
          "keep",
          `oci://${reg.host}/pf/app:v1`,
          `${keep}:v1`,
        ],
        multi.index.digest,
      );
      assert.deepEqual(
        await unnamed(keep),
        [onIndex.digest, sbomOf.get(amd.digest)!.digest, sbomOf.get(arm.digest)!.digest].sort(),
      );
      await assert.rejects(Deno.lstat(blobFile(keep, ppc.digest)));
      await assert.rejects(Deno.lstat(blobFile(keep, sbomOf.get(ppc.digest)!.digest)));

      // Rewritten index: a new digest nobody refers to; the chosen platforms' SBOMs come along.
      const rewrite = join(dir, "rewrite");
      const r = await umoci([
        "copy",
        "--plain-http",
        "-r",
        "--platform",
        "linux/amd64,linux/arm64",
        "--sparse",
        "rewrite",
        `${src}:multi`,
        `${rewrite}:v1`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.notEqual(r.stdout.trim(), multi.index.digest);
      assert.deepEqual(
        await unnamed(rewrite),
        [sbomOf.get(amd.digest)!.digest, sbomOf.get(arm.digest)!.digest].sort(),
      );
      await assert.rejects(Deno.lstat(blobFile(rewrite, ppc.digest)));
    });
  } finally {
    await reg.stop();
  }
});

Deno.test("CLI --all-tags --digest-tags into a registry: digest tags are no images; the destination's fallback tag is merged, --platform applies to images only", async () => {
  const reg = await startRegistry();
  try {
    await withTempDir(async (dir) => {
      const sc = await buildSupplyChain(dir);
      await copyOk(
        ["--plain-http", "-r", "--digest-tags", `${sc.src}:v1`, `oci://${reg.host}/at/app:single`],
        sc.image.digest,
      );
      // The destination already lists a referrer of the image in its fallback tag.
      const extraDir = join(dir, "extra");
      const extra = (await buildArtifact(extraDir, "extra", { subject: sc.image })).manifest;
      await copyOk(
        ["--plain-http", `${sc.src}:v1`, `oci://${reg.host}/at/merge:single`],
        sc.image.digest,
      );
      await copyOk(
        ["--plain-http", `${extraDir}:extra`, `oci://${reg.host}/at/merge:extra`],
        extra.digest,
      );
      const fallback = referrersTagName(sc.image.digest);
      const listed = async (repo: string) =>
        (await registryManifest(reg.url, repo, fallback)).json.manifests.map((m: Descriptor) =>
          m.digest
        ).sort();
      assert.deepEqual(await listed("at/merge"), [extra.digest]);

      const r = await umoci([
        "copy",
        "--plain-http",
        "--all-tags",
        "--digest-tags",
        `oci://${reg.host}/at/app`,
        `oci://${reg.host}/at/merge`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      // One image (the tag `single`); the digest tags went with it, not as images.
      assert.deepEqual(r.stdout.trim().split("\n"), [`${sc.image.digest} single`]);
      assert.match(r.stderr, /3 digest tags \(sha256-…\) go with the images they name/);
      assert.match(r.stderr, /Images: 0 copied, 1 already present, 0 failed/);
      assert.deepEqual(await listed("at/merge"), [extra.digest, sc.sbom.digest].sort());
      const sig = await registryManifest(reg.url, "at/merge", sc.cosignTag);
      assert.equal(digestOf(sig.bytes), sc.cosign.digest);
      const nested = await registryManifest(reg.url, "at/merge", referrersTagName(sc.sbom.digest));
      assert.deepEqual(nested.json.manifests.map((m: Descriptor) => m.digest), [sc.sbomSig.digest]);

      // --platform applies to the images; the digest tags follow the chosen manifest, once
      // however many tags name it (two images side by side here).
      await copyOk(
        ["--plain-http", `${sc.src}:v1`, `oci://${reg.host}/at/app:latest`],
        sc.image.digest,
      );
      const p = await umoci([
        "copy",
        "--plain-http",
        "--all-tags",
        "--digest-tags",
        "--platform",
        "linux/amd64",
        `oci://${reg.host}/at/app`,
        `oci://${reg.host}/at/plat`,
      ]);
      assert.equal(p.code, 0, p.stderr);
      assert.deepEqual(p.stdout.trim().split("\n"), [
        `${sc.image.digest} latest`,
        `${sc.image.digest} single`,
      ]);
      assert.equal(p.stderr.match(/Copied digest tag/g)?.length, 1, p.stderr);
      assert.equal(p.stderr.match(/Copied referrer/g)?.length, 2, p.stderr);
      assert.deepEqual(
        await registryTags(reg.url, "at/plat"),
        [
          fallback,
          sc.cosignTag,
          referrersTagName(sc.sbom.digest),
          "latest",
          "single",
        ].sort(),
      );
      assert.deepEqual(await listed("at/plat"), [sc.sbom.digest]);
    });
  } finally {
    await reg.stop();
  }
});

/** index.json of an archive, read with GNU tar. */
async function archiveIndexJson(path: string): Promise<{ manifests: Descriptor[] }> {
  const r = await runRaw("tar", ["-xOf", path, "index.json"]);
  assert.equal(r.code, 0, String(r.stderr));
  return JSON.parse(dec.decode(r.stdout));
}

Deno.test("CLI --referrers with oci-archive: on both sides: referrers listed without ref.name, once; found again by subject on the way back", async () => {
  const reg = await startRegistry();
  try {
    await withTempDir(async (dir) => {
      const sc = await buildSupplyChain(dir);
      await copyOk(
        ["--plain-http", "-r", `${sc.src}:v1`, `oci://${reg.host}/ar/app:single`],
        sc.image.digest,
      );
      const tar = join(dir, "v3.tar");
      const err = await copyOk(
        ["--plain-http", "-r", `oci://${reg.host}/ar/app:single`, `oci-archive:${tar}:v1`],
        sc.image.digest,
      );
      assert.match(err, /2 referrers copied, 0 already present/);
      const index = await archiveIndexJson(tar);
      assert.deepEqual(
        index.manifests.filter((m) => !m.annotations?.[REF_NAME]).map((m) => m.digest).sort(),
        [sc.sbom.digest, sc.sbomSig.digest].sort(),
      );
      assert.deepEqual(
        index.manifests.filter((m) => m.annotations?.[REF_NAME]).map((m) => m.digest),
        [sc.image.digest],
      );
      // A rerun lists nothing twice and does not rewrite the archive.
      const before = await Deno.stat(tar);
      const again = await copyOk(
        ["--plain-http", "-r", `oci://${reg.host}/ar/app:single`, `oci-archive:${tar}:v1`],
        sc.image.digest,
      );
      assert.match(again, /^2 referrers already present: nothing to copy$/m);
      assert.equal((await Deno.stat(tar)).mtime?.getTime(), before.mtime?.getTime());
      // The archive as SRC: its referrers are found by subject and pushed after the image.
      const back = await copyOk(
        ["--plain-http", "-r", `oci-archive:${tar}:v1`, `oci://${reg.host}/ar/back:v1`],
        sc.image.digest,
      );
      assert.match(back, /2 referrers copied, 0 already present/);
      const top = await registryManifest(reg.url, "ar/back", referrersTagName(sc.image.digest));
      assert.deepEqual(top.json.manifests.map((m: Descriptor) => m.digest), [sc.sbom.digest]);
      const nested = await registryManifest(reg.url, "ar/back", referrersTagName(sc.sbom.digest));
      assert.deepEqual(nested.json.manifests.map((m: Descriptor) => m.digest), [sc.sbomSig.digest]);
    });
  } finally {
    await reg.stop();
  }
});

Deno.test("CLI --images bundle with -r --digest-tags: digest tags stored under their repository's full reference; --all-tags restores each into its repository", async () => {
  const reg = await startRegistry();
  try {
    await withTempDir(async (dir) => {
      const a = await buildSupplyChain(join(dir, "a"));
      const b = await buildSupplyChain(join(dir, "b"));
      await copyOk(
        ["--plain-http", "-r", "--digest-tags", `${a.src}:v1`, `oci://${reg.host}/app:single`],
        a.image.digest,
      );
      await copyOk(
        ["--plain-http", "-r", "--digest-tags", `${b.src}:v1`, `oci://${reg.host}/two/app:v2`],
        b.image.digest,
      );
      const list = join(dir, "imgs.txt");
      await Deno.writeTextFile(
        list,
        `oci://${reg.host}/app:single\noci://${reg.host}/two/app:v2\n`,
      );
      const tar = join(dir, "ag.tar");
      const job = await umoci([
        "copy",
        "--plain-http",
        "-r",
        "--digest-tags",
        "--images",
        list,
        `oci-archive:${tar}`,
      ]);
      assert.equal(job.code, 0, job.stderr);
      const index = await archiveIndexJson(tar);
      const names = index.manifests.map((m) => m.annotations?.[REF_NAME]).filter((n) => n)
        .sort();
      const full = (repo: string, sc: SupplyChain) => [
        `${reg.host}/${repo}:${referrersTagName(sc.image.digest)}`,
        `${reg.host}/${repo}:${referrersTagName(sc.sbom.digest)}`,
        `${reg.host}/${repo}:${sc.cosignTag}`,
      ];
      assert.deepEqual(
        names,
        [
          `${reg.host}/app:single`,
          `${reg.host}/two/app:v2`,
          ...full("app", a),
          ...full("two/app", b),
        ].sort(),
      );

      // The way back: each image, with its digest tags and referrers, into its repository.
      const back = await umoci([
        "copy",
        "--plain-http",
        "-r",
        "--all-tags",
        "--digest-tags",
        `oci-archive:${tar}`,
        `oci://${reg.host}/agd`,
      ]);
      assert.equal(back.code, 0, back.stderr);
      assert.equal(back.stdout.trim().split("\n").length, 2, back.stdout);
      for (const [repo, sc, tag] of [["agd/app", a, "single"], ["agd/two/app", b, "v2"]] as const) {
        assert.deepEqual(
          await registryTags(reg.url, repo),
          [
            tag,
            referrersTagName(sc.image.digest),
            referrersTagName(sc.sbom.digest),
            sc.cosignTag,
          ].sort(),
          repo,
        );
        const sig = await registryManifest(reg.url, repo, sc.cosignTag);
        assert.equal(digestOf(sig.bytes), sc.cosign.digest);
        const top = await registryManifest(reg.url, repo, referrersTagName(sc.image.digest));
        assert.deepEqual(top.json.manifests.map((m: Descriptor) => m.digest), [sc.sbom.digest]);
      }
      assert.deepEqual(await registryTags(reg.url, "agd"), []);
    });
  } finally {
    await reg.stop();
  }
});

Deno.test("CLI -r --digest-tags rerun: one line says the referrers and digest tags are there; nothing claimed, nothing written", async () => {
  const reg = await startRegistry({ accessLog: true });
  try {
    await withTempDir(async (dir) => {
      const sc = await buildSupplyChain(dir);
      const flags = ["--plain-http", "-r", "--digest-tags"];
      await copyOk([...flags, `${sc.src}:v1`, `oci://${reg.host}/rr/app:single`], sc.image.digest);
      const rl = join(dir, "rl");
      const first = await copyOk(
        [...flags, `oci://${reg.host}/rr/app:single`, `${rl}:v1`],
        sc.image.digest,
      );
      assert.match(first, /2 referrers copied, 0 already present; 3 digest tags copied/);
      const before = await Deno.readTextFile(join(rl, "index.json"));
      // Into the layout again: two lines, the image's and the attached ones'.
      const again = await copyOk(
        [...flags, `oci://${reg.host}/rr/app:single`, `${rl}:v1`],
        sc.image.digest,
      );
      assert.equal(await Deno.readTextFile(join(rl, "index.json")), before);
      const lines = again.trim().split("\n").filter((l) => !l.startsWith("Registry address"));
      assert.deepEqual(lines.slice(-2), [
        `${rl}:v1 is already ${sc.image.digest}: nothing to copy`,
        "2 referrers and 3 digest tags already present: nothing to copy",
      ]);
      assert.doesNotMatch(again, /Copied|Skipping/);
      // Into the registry again: the same, and no write request.
      const mark = reg.requests().length;
      const reg2 = await copyOk(
        [...flags, `${sc.src}:v1`, `oci://${reg.host}/rr/app:single`],
        sc.image.digest,
      );
      assert.deepEqual(reg2.trim().split("\n"), [
        `${reg.host}/rr/app:single is already ${sc.image.digest}: nothing to copy`,
        "2 referrers and 1 digest tag already present: nothing to copy",
      ]);
      const writes = (await requestsSince(reg, mark)).filter((l) => /^(PUT|POST|PATCH) /.test(l));
      assert.deepEqual(writes, []);
    });
  } finally {
    await reg.stop();
  }
});

Deno.test("CLI --dry-run -r --digest-tags: the plan lists the referrers and digest tags, each blob and manifest once, and writes nothing", async () => {
  const reg = await startRegistry({ accessLog: true });
  try {
    await withTempDir(async (dir) => {
      const sc = await buildSupplyChain(dir);
      const flags = ["--plain-http", "-r", "--digest-tags"];
      await copyOk([...flags, `${sc.src}:v1`, `oci://${reg.host}/dr/app:single`], sc.image.digest);
      const mark = reg.requests().length;
      const r = await umoci([
        "copy",
        "--dry-run",
        ...flags,
        `oci://${reg.host}/dr/app:single`,
        `oci://${reg.host}/dr2:v1`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      const writes = (await requestsSince(reg, mark)).filter((l) => /^(PUT|POST|PATCH) /.test(l));
      assert.deepEqual(writes, [], "a dry run writes nothing");
      const rows = r.stdout.split("\n").filter((l) => /^ {2}\S/.test(l));
      const written = rows.filter((l) => l.includes("would write")).map((l) => l.split(/\s+/)[4]);
      assert.deepEqual(
        written.sort(),
        [sc.image.digest, sc.sbom.digest, sc.sbomSig.digest, sc.cosign.digest].sort(),
      );
      assert.match(r.stdout, new RegExp(`${sc.cosign.digest} .*\\(tag '${sc.cosignTag}'\\)`));
      // Every blob once (the empty config `{}` of both artifacts too).
      const blobs = rows.filter((l) => !l.includes("manifest")).map((l) => l.split(/\s+/).at(-3));
      assert.equal(new Set(blobs).size, blobs.length, r.stdout);
      assert.match(r.stdout, /4 manifests to write; 8 blobs \(\d+ bytes\) to try to mount/);
      assert.match(r.stderr, /2 referrers would be copied, 0 already present; 1 digest tag would/);
      // … and the copy itself moves what the plan said.
      const real = await copyOk(
        [...flags, `oci://${reg.host}/dr/app:single`, `oci://${reg.host}/dr2:v1`],
        sc.image.digest,
      );
      assert.match(real, /2 referrers copied, 0 already present; 1 digest tag copied/);
      assert.match(real, /, 3 manifests\)/);
    });
  } finally {
    await reg.stop();
  }
});

Deno.test("copyAttached: a side without the capability -r or --digest-tags needs is refused before anything is read or written", async () => {
  const calls: string[] = [];
  const bare = (name: string) =>
    new Proxy({ name, local: true } as Record<string, unknown>, {
      get(target, prop) {
        if (prop in target) return target[prop as string];
        if (["referrers", "listTags", "recordReferrers", "then"].includes(String(prop))) {
          return undefined;
        }
        return () => {
          calls.push(`${name}.${String(prop)}`);
          return Promise.resolve(false);
        };
      },
    }) as unknown as import("../src/store/store.ts").Store;
  const root = { mediaType: OCI_MANIFEST, digest: `sha256:${"3".repeat(64)}`, size: 3 };
  const cases: [{ referrers: boolean; digestTags: boolean }, RegExp][] = [
    [{ referrers: true, digestTags: false }, /^src cannot list referrers \(--referrers\)$/],
    [{ referrers: false, digestTags: true }, /^src cannot list tags \(--digest-tags\)$/],
  ];
  for (const [wanted, message] of cases) {
    await assert.rejects(copyAttached(bare("src"), bare("dst"), root, wanted), (e) => {
      assert.ok(e instanceof UserError);
      assert.match(e.message, message);
      return true;
    });
    assert.throws(
      () => checkAttachedCapabilities(bare("src"), bare("dst"), wanted),
      (e: Error) => e instanceof UserError && message.test(e.message),
    );
  }
  assert.deepEqual(calls, []);
});
