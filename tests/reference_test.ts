import assert from "node:assert/strict";
import { parseReference } from "../src/reference.ts";
import { UsageError } from "../src/errors.ts";

const H = "a".repeat(64);

Deno.test("layout references: DIR[:TAG] splits at the first colon, tag defaults to latest", () => {
  assert.deepEqual(parseReference("opensuse"), {
    kind: "layout",
    path: "opensuse",
    tag: "latest",
    text: "opensuse",
  });
  const r = parseReference("backup:stable");
  assert.equal(r.kind, "layout");
  assert.equal(r.kind === "layout" && r.path, "backup");
  assert.equal(r.kind === "layout" && r.tag, "stable");
  // ref.name allows ':' '@' '/' after the first colon.
  const full = parseReference("dir:example.com:5000/repo:v1");
  assert.equal(full.kind === "layout" && full.path, "dir");
  assert.equal(full.kind === "layout" && full.tag, "example.com:5000/repo:v1");
  const rel = parseReference("./a/b:1.0");
  assert.equal(rel.kind === "layout" && rel.path, "./a/b");
});

Deno.test("layout references: DIR@DIGEST", () => {
  const r = parseReference(`img@sha256:${H}`);
  assert.equal(r.kind, "layout");
  assert.equal(r.kind === "layout" && r.path, "img");
  assert.equal(r.kind === "layout" && r.digest, `sha256:${H}`);
  assert.equal(r.kind === "layout" && r.tag, undefined);
});

Deno.test("layout references: bad input is a one-line UsageError naming the problem", () => {
  const cases: [string, RegExp][] = [
    ["", /empty/],
    [":tag", /empty layout path/],
    ["dir:", /empty tag/],
    ["dir:bad tag", /not a valid org.opencontainers.image.ref.name/],
    ["dir:-x", /not a valid/],
    ["dir:a//b", /not a valid/],
    [`dir@sha256:${H.slice(1)}`, /64 lowercase hex/],
    [`dir@sha256:${H.toUpperCase()}`, /does not match|lowercase hex/],
    ["dir@sha256:../../etc/passwd", /does not match/],
    [`dir@md5:${H}`, /unsupported digest algorithm/],
    [`@sha256:${H}`, /empty layout path/],
  ];
  for (const [text, why] of cases) {
    assert.throws(() => parseReference(text), (e: Error) => {
      assert.ok(e instanceof UsageError, `${text}: ${e}`);
      assert.match(e.message, why, text);
      assert.ok(!e.message.includes("\n"));
      return true;
    });
  }
});

Deno.test("registry references: oci:// names the host explicitly", () => {
  const r = parseReference("oci://localhost:8080/opensuse/amd64:42.2");
  assert.equal(r.kind, "registry");
  if (r.kind !== "registry") return;
  assert.equal(r.registry, "localhost:8080");
  assert.equal(r.host, "localhost:8080");
  assert.equal(r.repository, "opensuse/amd64");
  assert.equal(r.tag, "42.2");
  const d = parseReference(`oci://127.0.0.1:5000/app@sha256:${H}`);
  assert.equal(d.kind === "registry" && d.digest, `sha256:${H}`);
  assert.equal(d.kind === "registry" && d.tag, undefined);
  const both = parseReference(`oci://r.example/app:v1@sha256:${H}`);
  assert.equal(both.kind === "registry" && both.tag, "v1");
  assert.equal(both.kind === "registry" && both.digest, `sha256:${H}`);
  const dflt = parseReference("oci://r.example/app");
  assert.equal(dflt.kind === "registry" && dflt.tag, "latest");
  const single = parseReference("oci://myhost/app:1");
  assert.equal(single.kind === "registry" && single.registry, "myhost");
});

Deno.test("registry references: docker:// follows Docker's normalization", () => {
  const r = parseReference("docker://ubuntu");
  assert.ok(r.kind === "registry");
  assert.equal(r.registry, "docker.io");
  assert.equal(r.host, "registry-1.docker.io");
  assert.equal(r.repository, "library/ubuntu");
  assert.equal(r.tag, "latest");
  const t = parseReference("docker://ubuntu:22.04");
  assert.ok(t.kind === "registry");
  assert.equal(t.repository, "library/ubuntu");
  assert.equal(t.tag, "22.04");
  const ns = parseReference("docker://foo/bar:1");
  assert.ok(ns.kind === "registry");
  assert.equal(ns.registry, "docker.io");
  assert.equal(ns.repository, "foo/bar");
  const local = parseReference("docker://localhost:5000/x");
  assert.ok(local.kind === "registry");
  assert.equal(local.registry, "localhost:5000");
  assert.equal(local.repository, "x");
  const dotted = parseReference("docker://quay.io/a/b");
  assert.ok(dotted.kind === "registry" && dotted.registry === "quay.io");
  const idx = parseReference("docker://index.docker.io/library/alpine");
  assert.ok(idx.kind === "registry" && idx.registry === "docker.io");
});

Deno.test("registry references: bad input names the wrong part", () => {
  const cases: [string, RegExp][] = [
    ["oci://", /empty/],
    ["oci://host", /HOST\[:PORT\]\/REPOSITORY/],
    ["oci://host/", /empty repository/],
    ["oci://host/Upper", /lowercase/],
    ["oci://host/a//b", /repository .* is invalid/],
    ["oci://ho_st/a", /registry host/],
    ["oci://host:99999/a", /port 99999/],
    ["oci://host/a:" + "t".repeat(129), /tag .* is invalid/],
    ["oci://host/a:bad!tag", /tag .* is invalid/],
    ["oci://host/a@sha256:123", /64 lowercase hex/],
    ["http://host/a", /unknown scheme/],
    [`oci://host/${"a".repeat(260)}`, /255/],
    [`docker://${H}`, /looks like a digest|invalid/],
  ];
  for (const [text, why] of cases) {
    assert.throws(() => parseReference(text), (e: Error) => {
      assert.ok(e instanceof UsageError, `${text}: ${e}`);
      assert.match(e.message, why, text);
      return true;
    });
  }
});
