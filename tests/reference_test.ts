import assert from "node:assert/strict";
import {
  checkLayoutReference,
  type LayoutReference,
  parseReference,
  type PathProbe,
} from "../src/reference.ts";
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
    ["out:a//b", /not a valid/], // ("dir:a//b" names skopeo's dir: transport)
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

Deno.test("layout schemes: skopeo's oci:DIR[:TAG] and regctl's ocidir://DIR[:TAG] are layouts", () => {
  const cases: [string, string, string | undefined, string | undefined][] = [
    // text, path, tag, digest
    ["oci:img", "img", "latest", undefined],
    ["oci:img:v1", "img", "v1", undefined],
    ["oci:/abs/img:v1", "/abs/img", "v1", undefined],
    ["oci:img:example.com/repo:v1", "img", "example.com/repo:v1", undefined],
    [`oci:img@sha256:${H}`, "img", undefined, `sha256:${H}`],
    ["ocidir://img", "img", "latest", undefined],
    ["ocidir://img:v1", "img", "v1", undefined],
    ["ocidir://./a/b:v1", "./a/b", "v1", undefined],
    // The tag follows the last ':' after the last '/': DIR may contain ':'.
    ["ocidir://build:1/layout:v1", "build:1/layout", "v1", undefined],
    ["ocidir://build:1/layout", "build:1/layout", "latest", undefined],
    ["ocidir://127.0.0.1:5000/demo/x:v1", "127.0.0.1:5000/demo/x", "v1", undefined],
    [`ocidir://img@sha256:${H}`, "img", undefined, `sha256:${H}`],
  ];
  for (const [text, path, tag, digest] of cases) {
    const r = parseReference(text);
    assert.equal(r.kind, "layout", text);
    if (r.kind !== "layout") continue;
    assert.deepEqual([r.path, r.tag, r.digest, r.explicit, r.text], [
      path,
      tag,
      digest,
      true,
      text,
    ]);
  }
  for (
    const [text, why] of [["oci:", /empty/], ["ocidir://", /empty/], [
      "oci::v1",
      /empty layout path/,
    ]]
  ) {
    assert.throws(() => parseReference(text as string), why as RegExp, text as string);
  }
});

/** A PathProbe over a made-up file system: these directories exist, nothing else. */
function fakeDisk(...dirs: string[]): PathProbe {
  return (path) => dirs.includes(path) ? "directory" : "missing";
}

function checked(text: string, ...dirs: string[]) {
  const r = parseReference(text);
  assert.equal(r.kind, "layout", text);
  return checkLayoutReference(r as LayoutReference, fakeDisk(...dirs));
}

Deno.test("layout check: registry references written without oci:// are refused with the rewrite", () => {
  const cases: [string, string][] = [
    // text, the host named
    ["127.0.0.1:5000/demo/x:v1", "127.0.0.1:5000"],
    ["localhost:5000/x:v1", "localhost:5000"],
    ["localhost:5000/x", "localhost:5000"],
    ["localhost/x:v1", "localhost"],
    ["registry.example.com/x:v1", "registry.example.com"],
    ["quay.io/org/app", "quay.io"],
    [`localhost:5000/x@sha256:${H}`, "localhost:5000"],
  ];
  for (const [text, host] of cases) {
    assert.throws(() => checked(text), (e: Error) => {
      assert.ok(e instanceof UsageError, `${text}: ${e}`);
      assert.equal(
        e.message,
        `invalid image reference ${JSON.stringify(text)}: ${host} looks like a registry and ` +
          `is no directory here; for the registry write oci://${text} ` +
          `(for a new layout directory, ocidir://${text})`,
      );
      return true;
    });
    // The rewrite it suggests is a registry reference that parses.
    if (!text.includes("@")) assert.equal(parseReference(`oci://${text}`).kind, "registry");
  }
  // An IPv6 address cannot even be split as DIR:TAG: refused as it is parsed, with the rewrite.
  for (const text of ["[::1]:5000/x:v1", "[fd00::5]/app"]) {
    assert.throws(
      () => parseReference(text),
      (e: Error) =>
        e instanceof UsageError &&
        e.message.endsWith(`is a registry address; write oci://${text}`),
    );
    assert.equal(parseReference(`oci://${text}`).kind, "registry");
  }
});

Deno.test("layout check: a '/' in the tag of a missing layout is refused: a path with ':'", () => {
  const cases: [string, string][] = [
    // text, the end of the message
    [
      "build:1/layout:v1",
      "write ocidir://build:1/layout:v1, or oci://build:1/layout:v1 for a registry",
    ],
    ["out:a/b", "write ocidir://out:a/b"],
    ["./x:1/y", "write ocidir://./x:1/y"],
    // A one-label host with a port may be a registry or a directory: both are offered.
    [
      "myhost:5000/a/b:c",
      "write ocidir://myhost:5000/a/b:c, or oci://myhost:5000/a/b:c for a registry",
    ],
  ];
  for (const [text, end] of cases) {
    assert.throws(() => checked(text), (e: Error) => {
      assert.ok(e instanceof UsageError, `${text}: ${e}`);
      assert.match(e.message, /DIR:TAG splits at the first ':'/);
      assert.match(e.message, /a '\/' in the tag means a directory path with ':' in it/);
      assert.ok(e.message.endsWith(end), e.message);
      return true;
    });
  }
  // The directory exists with ':' in its name (its parent, for a new layout): still refused.
  assert.throws(() => checked("build:1/layout:v1", "build:1"), /ocidir:\/\/build:1\/layout:v1/);
});

Deno.test("layout check: what exists on disk is a layout, however it reads", () => {
  const cases: [string, string[], string, string][] = [
    // text, existing directories, path, tag
    // An existing directory is a layout even when its name looks like a registry host.
    ["127.0.0.1:5000/demo/x:v1", ["127.0.0.1"], "127.0.0.1", "5000/demo/x:v1"],
    ["localhost/x:v1", ["localhost/x"], "localhost/x", "v1"],
    // A directory named like HOST/… whose first part exists: a new layout in it.
    ["registry.example.com/x:v1", ["registry.example.com"], "registry.example.com/x", "v1"],
    // A directory whose name has ':' in it, read the only way that names it.
    ["127.0.0.1:5000/demo/x:v1", ["127.0.0.1:5000/demo/x"], "127.0.0.1:5000/demo/x", "v1"],
    ["build:1/layout:v1", ["build:1/layout"], "build:1/layout", "v1"],
    ["127.0.0.1:5000", ["127.0.0.1:5000"], "127.0.0.1:5000", "latest"],
    // An existing layout: a tag with '/' and ':' is a valid ref.name there.
    ["dir:example.com:5000/repo:v1", ["dir"], "dir", "example.com:5000/repo:v1"],
    // Plain new layouts are untouched.
    ["new:v1", [], "new", "v1"],
    ["./out/dir:v1", [], "./out/dir", "v1"],
    ["/abs/out:v1", [], "/abs/out", "v1"],
    // Written as a layout: taken as it is.
    ["oci:localhost:5000/x", [], "localhost", "5000/x"],
    ["ocidir://localhost:5000/x:v1", [], "localhost:5000/x", "v1"],
  ];
  for (const [text, dirs, path, tag] of cases) {
    const r = checked(text, ...dirs);
    assert.deepEqual([r.path, r.tag], [path, tag], `${text} with ${dirs.join(", ")}`);
  }
});

Deno.test("layout check: skopeo transports this tool does not do are refused, not made directories", () => {
  const refused = (text: string) => (e: Error) =>
    e instanceof UsageError &&
    e.message.startsWith(
      `invalid image reference ${JSON.stringify(text)}: ${
        text.slice(0, text.indexOf(":"))
      }: is a skopeo transport`,
    ) &&
    e.message.endsWith(`write oci:${text}`);
  for (const text of ["docker-archive:da.tar", "dir:out", "containers-storage:foo:v1"]) {
    assert.throws(() => checked(text), refused(text));
    // The rewrite it offers names the directory of that name, with the same tag.
    const rewrite = parseReference(`oci:${text}`);
    assert.equal(rewrite.kind, "layout");
    assert.equal((rewrite as LayoutReference).path, text.slice(0, text.indexOf(":")));
  }
  // With a path for a "tag", the text is no DIR:TAG at all: the transport is still named
  // (and no layout spelling offered: there is none).
  for (const text of ["dir:/abs/out", "docker-archive:/tmp/x.tar"]) {
    assert.throws(
      () => parseReference(text),
      (e: Error) =>
        e instanceof UsageError && e.message.includes(": is a skopeo transport") &&
        e.message.endsWith("registries)"),
    );
  }
  // A layout directory of that name that exists is the user's layout.
  assert.equal(checked("dir:out", "dir").path, "dir");
  assert.equal(parseReference("ocidir://dir:out").kind, "layout");
});
