// Unit tables for src/platform.ts: --platform parsing, image-spec platform matching (with
// the arm64 ≡ arm64/v8 normalization), the host platform, --sparse, BuildKit attestation
// detection, index re-serialisation and the refusal a registry gives a sparse index.
import assert from "node:assert/strict";
import { UsageError, UserError } from "../src/errors.ts";
import type { Platform } from "../src/media.ts";
import {
  attestationTarget,
  formatPlatform,
  formatSpec,
  hostPlatform,
  isSparseRefusal,
  normalizeArch,
  parsePlatforms,
  parseSparse,
  platformMatches,
  reserialize,
} from "../src/platform.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

Deno.test("parsePlatforms: repeatable, comma-separated, *, local, os.version, duplicates dropped", () => {
  const host = hostPlatform();
  const table: [string[], string[]][] = [
    [["linux/amd64"], ["linux/amd64"]],
    [["linux/amd64,linux/arm64/v8"], ["linux/amd64", "linux/arm64/v8"]],
    [["linux/amd64", "linux/arm64/v8"], ["linux/amd64", "linux/arm64/v8"]],
    [["linux/amd64, linux/arm/v7 "], ["linux/amd64", "linux/arm/v7"]],
    [["linux/*"], ["linux/*"]],
    [["*/arm64"], ["*/arm64"]],
    [["Linux/AMD64"], ["linux/amd64"]],
    [["linux/amd64,linux/amd64"], ["linux/amd64"]],
    [["windows/amd64:10.0.17763.5329"], ["windows/amd64:10.0.17763.5329"]],
    [["local"], [formatSpec(host)]],
    [["LOCAL,linux/s390x"], [formatSpec(host), "linux/s390x"]],
  ];
  for (const [input, want] of table) {
    assert.deepEqual(parsePlatforms(input).map(formatSpec), want, JSON.stringify(input));
  }
});

Deno.test("parsePlatforms: malformed values are usage errors (exit 2) naming the value", () => {
  for (
    const bad of [
      "linux",
      "linux/",
      "/amd64",
      "linux/amd64/v8/x",
      "",
      "linux/amd64,",
      "li nux/amd64",
      "linux/amd64:",
      "linux/am$d64",
    ]
  ) {
    assert.throws(
      () => parsePlatforms([bad]),
      (e: unknown) => e instanceof UsageError && e.exitCode === 2 && /--platform/.test(e.message),
      JSON.stringify(bad),
    );
  }
});

Deno.test("hostPlatform: Deno.build names mapped to Go's (x86_64 → amd64, aarch64 → arm64/v8)", () => {
  assert.deepEqual(hostPlatform({ os: "linux", arch: "x86_64" }), {
    os: "linux",
    architecture: "amd64",
  });
  assert.deepEqual(hostPlatform({ os: "darwin", arch: "aarch64" }), {
    os: "darwin",
    architecture: "arm64",
    variant: "v8",
  });
  assert.deepEqual(hostPlatform({ os: "windows", arch: "x86_64" }), {
    os: "windows",
    architecture: "amd64",
  });
  const here = hostPlatform();
  assert.equal(here.os, Deno.build.os);
  assert.equal(here.architecture, { x86_64: "amd64", aarch64: "arm64" }[Deno.build.arch]);
});

Deno.test("normalizeArch: containerd's spellings", () => {
  const table: [string, string, string][] = [
    ["amd64", "", "amd64/"],
    ["x86_64", "", "amd64/"],
    ["amd64", "v1", "amd64/"],
    ["amd64", "v3", "amd64/v3"],
    ["arm64", "", "arm64/v8"],
    ["aarch64", "", "arm64/v8"],
    ["arm64", "8", "arm64/v8"],
    ["arm64", "v8", "arm64/v8"],
    ["arm64", "v9", "arm64/v9"],
    ["arm", "", "arm/v7"],
    ["arm", "6", "arm/v6"],
    ["armhf", "", "arm/v7"],
    ["armel", "", "arm/v6"],
    ["i386", "", "386/"],
    ["s390x", "", "s390x/"],
  ];
  for (const [arch, variant, want] of table) {
    assert.equal(normalizeArch(arch, variant).join("/"), want, `${arch}/${variant}`);
  }
});

Deno.test("platformMatches: image-spec fields, * parts, variant only when asked, os.version only when given", () => {
  const p = (s: string, extra: Partial<Platform> = {}): Platform => {
    const [os, architecture, variant] = s.split("/");
    return { os, architecture, ...(variant ? { variant } : {}), ...extra };
  };
  const win = p("windows/amd64", { "os.version": "10.0.17763.5329", "os.features": ["win32k"] });
  const table: [string, Platform, boolean][] = [
    ["linux/amd64", p("linux/amd64"), true],
    ["linux/amd64", p("linux/arm64"), false],
    ["linux/amd64", p("windows/amd64"), false],
    ["linux/arm64", p("linux/arm64/v8"), true],
    ["linux/arm64/v8", p("linux/arm64"), true], // arm64 without a variant is v8
    ["linux/arm64/v8", p("linux/arm64/v8"), true],
    ["linux/arm64/v8", p("linux/arm64/v9"), false],
    ["linux/aarch64", p("linux/arm64/v8"), true],
    ["linux/arm", p("linux/arm/v6"), true], // no variant asked: any
    ["linux/arm", p("linux/arm/v7"), true],
    ["linux/arm/v7", p("linux/arm/v6"), false],
    ["linux/arm/v7", p("linux/arm"), true],
    ["linux/amd64/v3", p("linux/amd64"), false],
    ["linux/amd64", p("linux/amd64/v3"), true],
    ["linux/*", p("linux/s390x"), true],
    ["linux/*", p("windows/amd64"), false],
    ["*/arm64", p("darwin/arm64"), true],
    ["*/*", p("unknown/unknown"), true],
    ["linux/*/v7", p("linux/arm/v7"), true],
    ["linux/*/v7", p("linux/arm/v6"), false],
    ["windows/amd64", win, true], // os.version and os.features ignored unless given
    ["windows/amd64:10.0.17763.5329", win, true],
    ["windows/amd64:10.0.20348.1", win, false],
    ["LINUX/AMD64", p("linux/amd64"), true],
    ["linux/amd64", p("Linux/AMD64"), true],
  ];
  for (const [spec, platform, want] of table) {
    const [s] = parsePlatforms([spec]);
    assert.equal(platformMatches(s, platform), want, `${spec} vs ${JSON.stringify(platform)}`);
  }
  // A platform object without os or architecture (malformed) matches nothing.
  const [any] = parsePlatforms(["*/*"]);
  assert.equal(platformMatches(any, { os: "linux" } as Platform), false);
});

Deno.test("formatPlatform", () => {
  assert.equal(formatPlatform({ os: "linux", architecture: "arm", variant: "v7" }), "linux/arm/v7");
  assert.equal(
    formatPlatform({ os: "windows", architecture: "amd64", "os.version": "10.0.1" }),
    "windows/amd64:10.0.1",
  );
});

Deno.test("parseSparse: auto by default; keep, rewrite; anything else exit 2", () => {
  assert.equal(parseSparse(undefined), "auto");
  for (const v of ["auto", "keep", "rewrite"]) assert.equal(parseSparse(v), v);
  for (const v of ["", "Keep", "yes", "sparse"]) {
    assert.throws(() => parseSparse(v), (e: unknown) => e instanceof UsageError);
  }
});

Deno.test("attestationTarget: BuildKit's unknown/unknown manifests with vnd.docker.reference.digest", () => {
  const d = "sha256:" + "a".repeat(64);
  const base = { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: d, size: 1 };
  assert.equal(
    attestationTarget({
      ...base,
      platform: { os: "unknown", architecture: "unknown" },
      annotations: {
        "vnd.docker.reference.digest": d,
        "vnd.docker.reference.type": "attestation-manifest",
      },
    }),
    d,
  );
  assert.equal(
    attestationTarget({
      ...base,
      platform: { os: "unknown", architecture: "unknown" },
      annotations: { "vnd.docker.reference.digest": d },
    }),
    d,
  );
  // A real platform with the annotation but not the attestation type: a platform manifest.
  assert.equal(
    attestationTarget({
      ...base,
      platform: { os: "linux", architecture: "amd64" },
      annotations: { "vnd.docker.reference.digest": d },
    }),
    undefined,
  );
  assert.equal(
    attestationTarget({ ...base, platform: { os: "unknown", architecture: "unknown" } }),
    undefined,
  );
});

Deno.test("reserialize: only manifests changes; field order, annotations and the source's indentation kept", () => {
  const entries = [
    {
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      digest: "sha256:" + "1".repeat(64),
      size: 10,
      platform: { architecture: "amd64", os: "linux" },
    },
    {
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      digest: "sha256:" + "2".repeat(64),
      size: 20,
      platform: { architecture: "arm64", os: "linux" },
    },
  ];
  const doc = {
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: entries,
    annotations: { "org.opencontainers.image.created": "2024-01-01T00:00:00Z" },
    artifactType: "application/vnd.example",
  };
  for (const [indent, newline] of [[0, ""], [2, "\n"], [3, ""], ["\t", "\n"]] as const) {
    const original = enc.encode(JSON.stringify(doc, null, indent) + newline);
    const out = dec.decode(reserialize(original, [entries[1]]));
    assert.equal(out, JSON.stringify({ ...doc, manifests: [entries[1]] }, null, indent) + newline);
    assert.deepEqual(Object.keys(JSON.parse(out)), Object.keys(doc), "field order");
  }
  // Formatting JSON.stringify cannot reproduce: compact.
  const odd = enc.encode(`{ "schemaVersion" : 2, "manifests": [${JSON.stringify(entries[0])}] }`);
  assert.equal(dec.decode(reserialize(odd, [])), `{"schemaVersion":2,"manifests":[]}`);
});

Deno.test("isSparseRefusal: distribution's 400 MANIFEST_BLOB_UNKNOWN to a manifest PUT, nothing else", () => {
  const refusal = new UserError(
    "127.0.0.1:5000: PUT /v2/a/manifests/v1: 400 MANIFEST_BLOB_UNKNOWN: blob unknown to registry",
  );
  assert.equal(isSparseRefusal(refusal), true);
  assert.equal(
    isSparseRefusal(new UserError("127.0.0.1:5000: PUT /v2/a/blobs/uploads/x: 400 BLOB_UNKNOWN")),
    false,
  );
  assert.equal(
    isSparseRefusal(new UserError("127.0.0.1:5000: PUT /v2/a/manifests/v1: 502 Bad Gateway")),
    false,
  );
  assert.equal(
    isSparseRefusal(new Error("PUT /v2/a/manifests/v1: 400 MANIFEST_BLOB_UNKNOWN")),
    false,
  );
});
