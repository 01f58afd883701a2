import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { digestOf, loadFastHash, parseDigest, Verifier, verifyBytes } from "../src/digest.ts";
import { Sha256 } from "../src/sha256.ts";
import { parseNode } from "../src/media.ts";

const enc = new TextEncoder();

Deno.test("parseDigest accepts sha256 and sha512 in their exact form only", () => {
  assert.deepEqual(parseDigest("sha256:" + "0".repeat(64)), {
    algorithm: "sha256",
    encoded: "0".repeat(64),
  });
  assert.equal(parseDigest("sha512:" + "f".repeat(128)).algorithm, "sha512");
  for (
    const bad of [
      "",
      "sha256:../../etc/passwd",
      "sha256:" + "A".repeat(64),
      "sha256:" + "a".repeat(63),
      "sha256:" + "a".repeat(65),
      "sha512:" + "a".repeat(64),
      "md5:d41d8cd98f00b204e9800998ecf8427e",
      "sha256+b64u:abc",
      "SHA256:" + "a".repeat(64),
      "sha256:abc/../x",
      "sha256",
    ]
  ) {
    assert.throws(() => parseDigest(bad), Error, bad);
  }
  assert.throws(() => parseDigest("md5:d41d8cd98f00b204e9800998ecf8427e"), /unsupported/);
});

Deno.test("Verifier checks size and digest, and fails at once on overrun", async () => {
  const data = new Uint8Array(100_000).map((_, i) => (i * 7919) % 251);
  const digest = "sha256:" + createHash("sha256").update(data).digest("hex");
  assert.equal(digestOf(data), digest);
  const v = new Verifier(digest, data.length);
  v.update(data.subarray(0, 50_000));
  v.update(data.subarray(50_000));
  v.finish();
  assert.throws(() => verifyBytes(data.subarray(1), digest, data.length), /99999 bytes/);
  const over = new Verifier(digest, 10);
  assert.throws(() => over.update(data.subarray(0, 11)), /larger than its descriptor size/);
  const flipped = data.slice();
  flipped[7] ^= 1;
  assert.throws(() => verifyBytes(flipped, digest, data.length), /digest mismatch/);
  await loadFastHash(); // sha512 has no JS fallback
  const d512 = "sha512:" + createHash("sha512").update(data).digest("hex");
  verifyBytes(data, d512, data.length);
});

const H = "sha256:" + "b".repeat(64);
const desc = (mediaType: string, size = 1) => ({ mediaType, digest: H, size });

Deno.test("parseNode lists children of manifests and indexes", () => {
  const m = enc.encode(JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    artifactType: "application/example",
    config: desc("application/vnd.oci.empty.v1+json", 2),
    layers: [desc("application/octet-stream", 5)],
    subject: desc("application/vnd.oci.image.manifest.v1+json", 9),
  }));
  const node = parseNode(m, "application/vnd.oci.image.manifest.v1+json", H);
  assert.equal(node.children.length, 2);
  assert.equal(node.config?.size, 2);
  assert.equal(node.layers.length, 1);
  assert.equal(node.subject?.size, 9);
  const idx = enc.encode(JSON.stringify({
    schemaVersion: 2,
    manifests: [desc("application/vnd.docker.distribution.manifest.v2+json")],
  }));
  const list = parseNode(idx, "application/vnd.docker.distribution.manifest.list.v2+json", H);
  assert.equal(list.children.length, 1);
});

Deno.test("parseNode refuses contradictions, ambiguity, schema1 and bad descriptors", () => {
  const index = "application/vnd.oci.image.index.v1+json";
  const manifest = "application/vnd.oci.image.manifest.v1+json";
  const j = (o: unknown) => enc.encode(JSON.stringify(o));
  assert.throws(
    () => parseNode(j({ schemaVersion: 2, mediaType: index, manifests: [] }), manifest, H),
    /contradicts/,
  );
  assert.throws(
    () =>
      parseNode(
        j({ schemaVersion: 2, manifests: [], config: desc(manifest), layers: [] }),
        index,
        H,
      ),
    /both a manifest and an index/,
  );
  assert.throws(
    () => parseNode(j({ schemaVersion: 1, fsLayers: [] }), "", H),
    /schema1 manifests are not supported/,
  );
  assert.throws(
    () => parseNode(j({}), "application/vnd.docker.distribution.manifest.v1+prettyjws", H),
    /schema1/,
  );
  assert.throws(
    () =>
      parseNode(
        j({
          schemaVersion: 2,
          mediaType: manifest,
          config: { ...desc("x"), digest: "sha256:../../etc/passwd" },
          layers: [],
        }),
        manifest,
        H,
      ),
    /invalid digest/,
  );
  assert.throws(() => parseNode(enc.encode("{not json"), manifest, H), /not valid JSON/);
  assert.throws(
    () =>
      parseNode(
        j({ schemaVersion: 2, mediaType: manifest, config: desc("x", -1), layers: [] }),
        manifest,
        H,
      ),
    /invalid size/,
  );
});

Deno.test("the JS SHA-256 used before node:crypto loads agrees with node:crypto", () => {
  for (const n of [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 100_000]) {
    const data = new Uint8Array(n).map((_, i) => (i * 31 + 7) & 255);
    const js = new Sha256().update(data.subarray(0, n >> 1)).update(data.subarray(n >> 1)).hex();
    assert.equal(js, createHash("sha256").update(data).digest("hex"), `length ${n}`);
  }
});

Deno.test("path helpers behave like node:path for the paths the tool builds", async () => {
  const { join, resolve } = await import("../src/path.ts");
  const nodePath = await import("node:path");
  const cases = [
    ["a", "b"],
    ["/a/", "b"],
    ["a", "../b"],
    ["./x", "blobs", "sha256", "abc"],
    ["/", ".."],
    ["..", "..", "a"],
    ["a/b", "../../.."],
    [""],
  ];
  for (const c of cases) {
    assert.equal(join(...c), nodePath.join(...c), JSON.stringify(c));
    assert.equal(resolve(...c), nodePath.resolve(...c), JSON.stringify(c));
  }
});
