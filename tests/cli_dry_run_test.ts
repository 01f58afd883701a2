// `umoci copy --dry-run`: the plan of a partly present image, printed without writing a
// byte to the destination, against the real registry and a layout.
import assert from "node:assert/strict";
import { join } from "node:path";
import { umoci } from "./fixtures/cli.ts";
import { formatBytes } from "../src/cli/log.ts";
import * as fx from "./fixtures/images.ts";
import { startRegistry } from "./fixtures/registry.ts";

const SHARED = fx.tarOfFiles({ "shared.bin": crypto.getRandomValues(new Uint8Array(40_000)) });

async function exists(path: string): Promise<boolean> {
  return await Deno.lstat(path).then(() => true, () => false);
}

/** Image A (shared layer + 2 of its own) and image B (shared layer + 1 of its own). */
async function twoImages(tmp: string) {
  const a = await fx.buildRandomImage(join(tmp, "a"), "v1", {
    layerSizes: [300_000, 2_000],
    sharedLayer: SHARED,
  });
  const b = await fx.buildRandomImage(join(tmp, "b"), "old", {
    layerSizes: [5_000],
    sharedLayer: SHARED,
  });
  assert.equal(a.layers[0].digest, b.layers[0].digest, "the first layer is shared");
  return { a, b };
}

/** The plan lines on stdout of a dry run, which must exit 0 with the plan only there. */
async function dryRun(args: string[]): Promise<string[]> {
  const r = await umoci(["copy", "--dry-run", ...args]);
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /^(Copying|Saving|Tagging|Successfully)/m, r.stderr);
  const lines = r.stdout.trimEnd().split("\n");
  assert.equal(lines[0], "Dry run: nothing is written. Plan:");
  return lines;
}

/** The plan line for a digest: action, what, size as printed. */
function planOf(lines: string[], digest: string): string {
  const found = lines.filter((l) => l.includes(digest));
  assert.equal(found.length, 1, `one line for ${digest}:\n${lines.join("\n")}`);
  return found[0].replace(digest, "D").replace(/\s+/g, " ").trim();
}

Deno.test("--dry-run: a partly present image, to a registry and from one, nothing written", async () => {
  await fx.withTempDir(async (tmp) => {
    const { a, b } = await twoImages(tmp);
    const reg = await startRegistry({ accessLog: true });
    try {
      const push = async (src: string, dst: string) => {
        const r = await umoci(["copy", "--plain-http", src, dst]);
        assert.equal(r.code, 0, r.stderr);
      };
      await push(`${tmp}/b:old`, `oci://${reg.host}/dry/app:old`);
      await push(`${tmp}/a:v1`, `oci://${reg.host}/other/app:v1`);
      const tags = async (repo: string) =>
        (await (await fetch(`${reg.url}/v2/${repo}/tags/list`)).json()).tags;
      const catalog = async () => await (await fetch(`${reg.url}/v2/_catalog`)).json();
      const catalogBefore = await catalog();
      const logged = reg.requests().length;

      // Layout → registry: the shared layer is there, the rest would be transferred.
      const up = await dryRun(["--plain-http", `${tmp}/a:v1`, `oci://${reg.host}/dry/app:v1`]);
      assert.equal(
        planOf(up, a.layers[0].digest),
        `exists layer 1/3 D ${formatBytes(a.layers[0].size)}`,
      );
      assert.equal(
        planOf(up, a.layers[1].digest),
        `would transfer layer 2/3 D ${formatBytes(a.layers[1].size)}`,
      );
      assert.equal(
        planOf(up, a.layers[2].digest),
        `would transfer layer 3/3 D ${formatBytes(a.layers[2].size)}`,
      );
      assert.match(planOf(up, a.config.digest), /^would transfer config D \d+ B$/);
      assert.match(planOf(up, a.manifest.digest), /^would write manifest D \d+ B \(tag 'v1'\)$/);
      const moved = a.layers[1].size + a.layers[2].size + a.config.size + a.manifest.size;
      assert.equal(
        up.at(-1),
        `Total to move: ${moved} bytes (${formatBytes(moved)}): 3 blobs to transfer, ` +
          `1 manifest to write; 1 blob (${a.layers[0].size} bytes) already there`,
      );
      assert.equal(up.length, 1 + 5 + 1);

      // Registry → registry, another repository of the same registry: mounts are tried.
      const across = await dryRun([
        "--plain-http",
        `oci://${reg.host}/other/app:v1`,
        `oci://${reg.host}/dry/app:v1`,
      ]);
      assert.equal(
        planOf(across, a.layers[0].digest),
        `exists layer 1/3 D ${formatBytes(a.layers[0].size)}`,
      );
      assert.equal(
        planOf(across, a.layers[1].digest),
        `would try to mount layer 2/3 D ${formatBytes(a.layers[1].size)}`,
      );
      assert.match(planOf(across, a.config.digest), /^would try to mount config D \d+ B$/);
      const mountable = a.layers[1].size + a.layers[2].size + a.config.size;
      assert.equal(
        across.at(-1),
        `Total to move: ${a.manifest.size} bytes (${
          formatBytes(a.manifest.size)
        }): 0 blobs to transfer, ` +
          `1 manifest to write; 3 blobs (${mountable} bytes) to try to mount, ` +
          `${a.manifest.size + mountable} bytes if the registry refuses; ` +
          `1 blob (${a.layers[0].size} bytes) already there`,
      );

      // Registry → a new layout: everything would be transferred, no directory made.
      const down = await dryRun(["--plain-http", `oci://${reg.host}/dry/app:old`, `${tmp}/new:x`]);
      assert.equal(
        planOf(down, b.layers[0].digest),
        `would transfer layer 1/2 D ${formatBytes(b.layers[0].size)}`,
      );
      assert.match(down.at(-1)!, /: 3 blobs to transfer, 1 manifest to write; 0 blobs \(0 bytes\)/);
      assert.equal(await exists(`${tmp}/new`), false, "no layout created");

      // The registry saw reads only, and holds what it held.
      const requests = reg.requests().slice(logged);
      assert.ok(requests.length > 0);
      assert.deepEqual(
        requests.filter((l) => !/^(GET|HEAD) /.test(l)),
        [],
        `only reads:\n${requests.join("\n")}`,
      );
      assert.deepEqual(await tags("dry/app"), ["old"]);
      assert.deepEqual(await catalog(), catalogBefore);
    } finally {
      await reg.stop();
    }
  });
});

Deno.test("--dry-run: into a layout that has part of the image, the layout unchanged", async () => {
  await fx.withTempDir(async (tmp) => {
    const { a } = await twoImages(tmp);
    const dst = join(tmp, "dst");
    const r = await umoci(["copy", `${tmp}/b:old`, `${dst}:old`]);
    assert.equal(r.code, 0, r.stderr);
    const before = await fx.snapshotTree(dst);
    const plan = await dryRun([`${tmp}/a:v1`, `${dst}:v1`]);
    assert.equal(
      planOf(plan, a.layers[0].digest),
      `exists layer 1/3 D ${formatBytes(a.layers[0].size)}`,
    );
    assert.equal(
      planOf(plan, a.layers[1].digest),
      `would transfer layer 2/3 D ${formatBytes(a.layers[1].size)}`,
    );
    const moved = a.layers[1].size + a.layers[2].size + a.config.size + a.manifest.size;
    assert.match(plan.at(-1)!, new RegExp(`^Total to move: ${moved} bytes `));
    assert.deepEqual(await fx.snapshotTree(dst), before, "nothing written");
    // With -q the plan is all there is; a copy of what is all there plans nothing.
    const same = await umoci(["copy", "-q", "--dry-run", `${tmp}/b:old`, `${dst}:old`]);
    assert.equal(same.code, 0, same.stderr);
    assert.equal(same.stderr, "");
    assert.match(same.stdout, /\nNothing to copy\.\n$/);
    const retag = await dryRun([`${tmp}/b:old`, `${dst}:other`]);
    assert.equal(retag.at(-1), "Only the tag 'other' would be written.");
    assert.deepEqual(await fx.snapshotTree(dst), before, "nothing written");
  });
});

Deno.test("--dry-run of a job: each plan names its image, one total for the job, nothing written", async () => {
  await fx.withTempDir(async (tmp) => {
    const { a, b } = await twoImages(tmp);
    const reg = await startRegistry();
    try {
      for (const [src, dst] of [[`${tmp}/a:v1`, "dry/a:v1"], [`${tmp}/b:old`, "dry/b:old"]]) {
        const r = await umoci(["copy", "-q", "--plain-http", src, `oci://${reg.host}/${dst}`]);
        assert.equal(r.code, 0, r.stderr);
      }
      const list = join(tmp, "imgs.txt");
      await Deno.writeTextFile(list, `oci://${reg.host}/dry/a:v1\noci://${reg.host}/dry/b:old\n`);
      const archive = join(tmp, "dimg.tar");
      const r = await umoci([
        "copy",
        "--dry-run",
        "--plain-http",
        "--images",
        list,
        `oci-archive:${archive}`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stdout.trimEnd().split("\n");
      const headers = lines.filter((l) => l.startsWith("Dry run: "));
      assert.deepEqual(headers, [
        `Dry run: nothing is written. Plan for ${reg.host}/dry/a:v1 → ` +
        `oci-archive:${archive}:${reg.host}/dry/a:v1:`,
        `Dry run: nothing is written. Plan for ${reg.host}/dry/b:old → ` +
        `oci-archive:${archive}:${reg.host}/dry/b:old:`,
      ]);
      assert.equal(lines.filter((l) => l.startsWith("Total to move: ")).length, 2, r.stdout);
      // The shared layer is planned by both images and counted once in the job's total.
      assert.equal(lines.filter((l) => l.includes(a.layers[0].digest)).length, 2);
      const blobs = [...a.layers, a.config, ...b.layers.slice(1), b.config];
      const bytes = blobs.reduce((n, d) => n + d.size, 0) + a.manifest.size + b.manifest.size;
      assert.equal(
        lines.at(-1),
        `Total to move for the job (2 images): ${bytes} bytes (${formatBytes(bytes)}): ` +
          `6 blobs to transfer, 2 manifests to write; 0 blobs (0 bytes) already there; ` +
          "a blob several images need counted once",
      );
      assert.equal(await exists(archive), false, "no archive written");

      // --keep-going: a missing image fails, the others are planned, exit 1 names it.
      await Deno.writeTextFile(
        list,
        `oci://${reg.host}/dry/gone:v1\noci://${reg.host}/dry/b:old\n`,
      );
      const kept = await umoci([
        "copy",
        "--dry-run",
        "--plain-http",
        "--keep-going",
        "--images",
        list,
        `oci-archive:${archive}`,
      ]);
      assert.equal(kept.code, 1, kept.stderr);
      assert.match(kept.stdout, /^Total to move for the job \(1 image\): /m);
      assert.match(kept.stderr, /error: 1 of 2 images failed: \S+\/dry\/gone:v1\n$/);
      assert.equal(await exists(archive), false, "no archive written");
    } finally {
      await reg.stop();
    }
  });
});
