import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  DigestMismatchError,
  digestOf,
  loadFastHash,
  parseDigest,
  Verifier,
  verifyBytes,
} from "../src/digest.ts";
import { loadLibcryptoHash } from "../src/libcrypto.ts";
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
  await loadFastHash();
  const v = new Verifier(digest, data.length);
  v.update(data.subarray(0, 50_000));
  v.update(data.subarray(50_000));
  await v.finish();
  const short = new Verifier(digest, data.length);
  short.update(data.subarray(1));
  await assert.rejects(() => short.finish(), /99999 bytes/);
  const over = new Verifier(digest, 10);
  assert.throws(() => over.update(data.subarray(0, 11)), /larger than its descriptor size/);
  const flipped = data.slice();
  flipped[7] ^= 1;
  const bad = new Verifier(digest, data.length);
  bad.update(flipped);
  await assert.rejects(() => bad.finish(), DigestMismatchError);
  const d512 = "sha512:" + createHash("sha512").update(data).digest("hex");
  const v512 = new Verifier(d512, data.length);
  v512.update(data);
  await v512.finish();
});

Deno.test("without node:crypto: small blobs verify with WebCrypto, a large one says what is missing", async () => {
  // A fresh process: in this one another test may already have loaded node:crypto.
  const digestTs = new URL("../src/digest.ts", import.meta.url).href;
  const code = `
    const { Verifier, verifyBytes, digestOf, SMALL_HASH_LIMIT, loadFastHash } = await import(
      ${JSON.stringify(digestTs)}
    );
    const data = new Uint8Array(300_000).map((_, i) => (i * 13) & 255);
    const d = await digestOf(data);
    await verifyBytes(data, d, data.length); // WebCrypto: no loadFastHash() needed
    await loadFastHash(data.length); // below the limit: loads nothing
    // Fed in pieces from one reused buffer, as the stores do: the bytes are kept, not the views.
    const v = new Verifier(d, data.length);
    const buf = new Uint8Array(65536);
    for (let at = 0; at < data.length; at += buf.length) {
      const piece = data.subarray(at, at + buf.length);
      buf.set(piece);
      v.update(buf.subarray(0, piece.length));
      buf.fill(0);
    }
    await v.finish();
    const bad = new Verifier(d, data.length);
    const flipped = data.slice();
    flipped[299_999] ^= 1;
    bad.update(flipped);
    const badResult = await bad.finish().then(() => "accepted", (e) => e.constructor.name);
    let large;
    try { new Verifier(d, SMALL_HASH_LIMIT); large = "made"; } catch (e) { large = e.message; }
    console.log(JSON.stringify({ badResult, large }));
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-config", code],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  assert.ok(out.success);
  const r = JSON.parse(new TextDecoder().decode(out.stdout));
  assert.equal(r.badResult, "DigestMismatchError");
  assert.match(r.large, /internal error: .*loadFastHash\(\)/);
});

Deno.test("OpenSSL (libcrypto) hashes agree with node:crypto, on and off the JavaScript thread", async () => {
  const make = loadLibcryptoHash();
  // CI runs on Debian, where libssl3 is always installed: its absence would be a fault here.
  assert.ok(make, "libcrypto.so.3 could not be loaded");
  const data = new Uint8Array(3 * 1024 * 1024 + 17).map((_, i) => (i * 7919 + 3) % 253);
  for (const alg of ["sha256", "sha512"] as const) {
    const expected = createHash(alg).update(data).digest("hex");
    for (const piece of [4093, 65_537, 1024 * 1024]) {
      const h = make(alg);
      for (let at = 0, k = 0; at < data.length; at += piece, k++) {
        const view = data.subarray(at, at + piece);
        if (k % 2) h.update(view);
        else await h.updateAsync(view);
      }
      assert.equal(h.digest("hex"), expected, `${alg} in pieces of ${piece}`);
    }
    const empty = make(alg);
    await empty.updateAsync(new Uint8Array());
    assert.equal(empty.digest("hex"), createHash(alg).digest("hex"), `${alg} of nothing`);
  }
});

Deno.test("Verifier.updateAsync keeps call order, fails at once on overrun, and catches a flipped bit", async () => {
  await loadFastHash();
  const data = new Uint8Array(5 * 1024 * 1024).map((_, i) => (i * 31 + 11) & 255);
  const digest = "sha256:" + createHash("sha256").update(data).digest("hex");
  // Ten updates queued without waiting: they must be hashed in the order they were given.
  const v = new Verifier(digest, data.length);
  const piece = data.length / 10;
  const queued = [];
  for (let at = 0; at < data.length; at += piece) {
    queued.push(v.updateAsync(data.subarray(at, at + piece)));
  }
  assert.throws(() => v.update(new Uint8Array(1)), /internal error/);
  await Promise.all(queued);
  await v.finish();
  const over = new Verifier(digest, data.length - 1);
  assert.throws(() => over.updateAsync(data), /larger than its descriptor size/);
  const flipped = data.slice();
  flipped[data.length - 1] ^= 0x80;
  const bad = new Verifier(digest, data.length);
  await bad.updateAsync(flipped.subarray(0, piece));
  await bad.updateAsync(flipped.subarray(piece));
  await assert.rejects(() => bad.finish(), DigestMismatchError);
  // After finish() a verifier takes nothing more (its hash context is gone).
  assert.throws(() => v.update(new Uint8Array(1)), /after finish/);
  assert.throws(() => v.updateAsync(new Uint8Array(1)), /after finish/);
  await assert.rejects(() => v.finish(), /after finish/);
});

Deno.test("digestOf (WebCrypto) agrees with node:crypto for sha256 and sha512", async () => {
  for (const n of [0, 1, 55, 56, 63, 64, 65, 111, 112, 127, 128, 129, 1000, 100_000]) {
    const data = new Uint8Array(n).map((_, i) => (i * 31 + 7) & 255);
    for (const alg of ["sha256", "sha512"] as const) {
      const expected = `${alg}:${createHash(alg).update(data).digest("hex")}`;
      assert.equal(await digestOf(data, alg), expected, `${alg}, length ${n}`);
    }
  }
  assert.equal(
    await digestOf(new Uint8Array()),
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
  );
  // A view into a larger buffer hashes only its own bytes.
  const big = enc.encode("xxhelloxx");
  assert.equal(await digestOf(big.subarray(2, 7)), await digestOf(enc.encode("hello")));
});

Deno.test("verifyBytes accepts matching content and rejects every mismatch", async () => {
  const data = new Uint8Array(100_000).map((_, i) => (i * 7919) % 251);
  const d256 = "sha256:" + createHash("sha256").update(data).digest("hex");
  const d512 = "sha512:" + createHash("sha512").update(data).digest("hex");
  await verifyBytes(data, d256, data.length);
  await verifyBytes(data, d512, data.length);
  const flipped = data.slice();
  flipped[7] ^= 1;
  for (const d of [d256, d512]) {
    await assert.rejects(verifyBytes(flipped, d, data.length), DigestMismatchError);
    await assert.rejects(verifyBytes(flipped, d, data.length), /digest mismatch: expected sha/);
    await assert.rejects(verifyBytes(data.subarray(1), d, data.length), /99999 bytes/);
    await assert.rejects(
      verifyBytes(data, d, data.length - 1),
      /larger than its descriptor size 99999/,
    );
  }
  await assert.rejects(verifyBytes(data, "sha256:" + "A".repeat(64), data.length), /invalid/);
  await assert.rejects(verifyBytes(data, d256, -1), /invalid size -1/);
  await assert.rejects(verifyBytes(data, d256, 1.5), /invalid size/);
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
