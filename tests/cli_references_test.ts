// The CLI on references that could be misread: registry references written without
// oci://, skopeo's oci: and regctl's ocidir:// layouts, a path with ':' split into DIR:TAG.
import assert from "node:assert/strict";
import { join } from "node:path";
import { umoci } from "./fixtures/cli.ts";
import * as fx from "./fixtures/images.ts";

/** Names in a directory, sorted. */
async function names(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

Deno.test("cli: a registry reference without oci:// is refused (exit 2), nothing created", async () => {
  await fx.withTempDir(async (tmp) => {
    await fx.buildRandomImage(join(tmp, "img"), "v1", { layerSizes: [1000] });
    const cases: [string, string][] = [
      ["127.0.0.1:5000/demo/x:v1", "127.0.0.1:5000"],
      ["localhost:5000/x:v1", "localhost:5000"],
      ["localhost/x:v1", "localhost"],
      ["registry.example.com/x:v1", "registry.example.com"],
    ];
    for (const [dst, host] of cases) {
      const r = await umoci(["copy", "img:v1", dst], { cwd: tmp });
      assert.equal(r.code, 2, `${dst}: ${r.stderr}`);
      assert.equal(r.stdout, "");
      assert.equal(
        r.stderr,
        `error: invalid image reference ${JSON.stringify(dst)}: ${host} looks like a registry ` +
          `and is no directory here; for the registry write oci://${dst} ` +
          `(for a new layout directory, ocidir://${dst})\n`,
      );
      assert.deepEqual(await names(tmp), ["img"], `${dst}: nothing created`);
    }
    // As a source too, instead of "no such OCI image layout".
    const r = await umoci(["copy", "localhost:5000/x:v1", "out:v1"], { cwd: tmp });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^error: .*for the registry write oci:\/\/localhost:5000\/x:v1 /);
    assert.deepEqual(await names(tmp), ["img"]);
  });
});

Deno.test("cli: a '/' in the tag of a new layout (a path with ':') is refused with the reason", async () => {
  await fx.withTempDir(async (tmp) => {
    await fx.buildRandomImage(join(tmp, "img"), "v1", { layerSizes: [1000] });
    const r = await umoci(["copy", "img:v1", "build:1/layout:v1"], { cwd: tmp });
    assert.equal(r.code, 2, r.stderr);
    assert.equal(
      r.stderr,
      `error: invalid image reference "build:1/layout:v1": DIR:TAG splits at the first ':', ` +
        `which makes this layout "build" (not there) with tag "1/layout:v1"; a '/' in the tag ` +
        `means a directory path with ':' in it: write ocidir://build:1/layout:v1, ` +
        `or oci://build:1/layout:v1 for a registry\n`,
    );
    assert.deepEqual(await names(tmp), ["img"]);
    // Written as suggested, the directory with ':' in its name is the layout.
    const ok = await umoci(["copy", "img:v1", "ocidir://build:1/layout:v1"], { cwd: tmp });
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(await fx.listTags(join(tmp, "build:1", "layout")), ["v1"]);
    // Now that it exists, DIR:TAG finds it too (the only reading that names something).
    const again = await umoci(["copy", "build:1/layout:v1", "back:v2"], { cwd: tmp });
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(await fx.listTags(join(tmp, "back")), ["v2"]);
    assert.deepEqual(await names(tmp), ["back", "build:1", "img"]);
  });
});

Deno.test("cli: oci:DIR:TAG and ocidir://DIR:TAG are layouts; an existing 127.0.0.1 is one", async () => {
  await fx.withTempDir(async (tmp) => {
    const built = await fx.buildRandomImage(join(tmp, "img"), "v1", { layerSizes: [1000] });
    for (
      const [src, dst, dir, tag] of [
        ["oci:img:v1", "oci:a:v2", "a", "v2"],
        ["ocidir://img:v1", "ocidir://b:v3", "b", "v3"],
        ["img:v1", "ocidir://localhost:5000/x:v1", "localhost:5000/x", "v1"],
      ]
    ) {
      const r = await umoci(["copy", src, dst], { cwd: tmp });
      assert.equal(r.code, 0, `${src} ${dst}: ${r.stderr}`);
      assert.equal(r.stdout.trim(), built.manifest.digest);
      assert.deepEqual(await fx.listTags(join(tmp, dir)), [tag], dst);
    }
    assert.deepEqual(await names(tmp), ["a", "b", "img", "localhost:5000"]);
    // A directory that exists is a layout, whatever its name looks like.
    await fx.buildRandomImage(join(tmp, "127.0.0.1"), undefined, { layerSizes: [10] });
    const r = await umoci(["copy", "img:v1", "127.0.0.1:5000/demo/x:v1"], { cwd: tmp });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await fx.listTags(join(tmp, "127.0.0.1")), ["5000/demo/x:v1"]);
  });
});
