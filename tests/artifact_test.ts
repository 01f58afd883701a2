// The artifact users run: version information, and a copy in a container-like environment
// (empty environment: no HOME, no PATH, no TTY; a read-only working directory).
import assert from "node:assert/strict";
import { join } from "node:path";
import { spawnUmoci, umoci, umociCommand } from "./fixtures/cli.ts";
import {
  assertSameContent,
  buildRandomImage,
  verifyLayoutBlobs,
  withTempDir,
} from "./fixtures/images.ts";
import { startRegistry } from "./fixtures/registry.ts";

Deno.test("artifact: --version names the version, the git commit and the Deno version", async () => {
  for (const args of [["--version"], ["version"]]) {
    const r = await umoci(args);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout.trim(),
      /^umoci-copy version \d+\.\d+\.\d+ \(commit ([0-9a-f]{12}(-dirty)?|unknown), deno \d+\.\d+\.\d+\)$/,
    );
    assert.equal(r.stderr, "");
  }
  const r = await umoci(["--version"]);
  assert.ok(r.stdout.includes(`deno ${Deno.version.deno}`), r.stdout);
});

/** Run the CLI with `env -i`, its working directory mounted read-only (own mount namespace). */
async function runContained(cwd: string, args: string[]) {
  const [cmd, ...pre] = umociCommand();
  const quoted = [cmd, ...pre, ...args].map((a) => `'${a.replaceAll("'", `'\\''`)}'`).join(" ");
  const out = await new Deno.Command("unshare", {
    args: [
      "-m",
      "sh",
      "-c",
      `mount --bind -o ro '${cwd}' '${cwd}' && cd '${cwd}' && ! touch probe 2>/dev/null && exec env -i ${quoted}`,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

Deno.test("artifact: copies work with an empty environment, no TTY and a read-only cwd", async () => {
  await withTempDir(async (dir) => {
    const ro = join(dir, "readonly-cwd");
    await Deno.mkdir(ro);
    const src = join(dir, "src");
    const img = await buildRandomImage(src, "v1", { layerSizes: [300_000, 40_000] });
    const reg = await startRegistry();
    try {
      // layout → layout
      const a = await runContained(ro, ["copy", `${src}:v1`, `${join(dir, "a")}:copied`]);
      assert.equal(a.code, 0, a.stderr);
      assert.equal(a.stdout.trim(), img.manifest.digest);
      await assertSameContent(src, "v1", join(dir, "a"), "copied");
      // layout → registry → layout (no credential files anywhere: anonymous)
      const push = await runContained(ro, [
        "copy",
        "--plain-http",
        `${src}:v1`,
        `oci://${reg.host}/contained/app:v1`,
      ]);
      assert.equal(push.code, 0, push.stderr);
      const pull = await runContained(ro, [
        "copy",
        "--plain-http",
        `oci://${reg.host}/contained/app:v1`,
        `${join(dir, "b")}:v1`,
      ]);
      assert.equal(pull.code, 0, pull.stderr);
      assert.equal(pull.stdout.trim(), img.manifest.digest);
      await assertSameContent(src, "v1", join(dir, "b"), "v1");
      // nothing was written into the read-only working directory
      assert.deepEqual([...Deno.readDirSync(ro)], []);
    } finally {
      await reg.stop();
    }
  });
});

Deno.test("artifact: Ctrl-C (SIGINT) mid-copy exits 130 in one line, no partial blob, index.json intact", async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, "src");
    const img = await buildRandomImage(src, "v1", { layerSizes: [96 << 20, 96 << 20], raw: true });
    const dst = join(dir, "dst");
    // An existing destination with a tag that must survive the interruption.
    const first = await umoci(["copy", `${src}:v1`, `${dst}:old`]);
    assert.equal(first.code, 0, first.stderr);
    const before = await Deno.readTextFile(join(dst, "index.json"));
    const other = join(dir, "other");
    await buildRandomImage(other, "v1", { layerSizes: [128 << 20, 128 << 20], raw: true });
    const child = spawnUmoci(["copy", "--log=warn", "--jobs", "1", `${other}:v1`, `${dst}:new`]);
    // Interrupt once a blob is being written (polling its partial file), not after a guess.
    const tmp = join(dst, ".umoci-copy-tmp");
    for (let i = 0; i < 400; i++) {
      const sizes: number[] = [];
      try {
        for await (const e of Deno.readDir(tmp)) {
          if (e.name.endsWith(".partial")) sizes.push((await Deno.stat(join(tmp, e.name))).size);
        }
      } catch {
        // not created yet
      }
      if (sizes.some((n) => n > 0)) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    try {
      child.kill("SIGINT");
    } catch {
      // it already finished: checked below
    }
    const out = await child.output();
    const stderr = new TextDecoder().decode(out.stderr).trim().split("\n").filter(Boolean);
    if (out.code === 0) {
      // The machine was fast enough to finish first: then everything must be there.
      assert.match(await Deno.readTextFile(join(dst, "index.json")), /"new"/);
    } else {
      assert.equal(out.code, 130, stderr.join("\n"));
      assert.equal(stderr.length, 1, stderr.join("\n"));
      assert.match(stderr[0], /^error: interrupted by SIGINT/);
      assert.equal(await Deno.readTextFile(join(dst, "index.json")), before);
    }
    // Whatever is under blobs/ is complete and correct; the old tag still resolves.
    assert.deepEqual(await verifyLayoutBlobs(dst), []);
    const again = await umoci(["copy", `${dst}:old`, `${join(dir, "check")}:v1`]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout.trim(), img.manifest.digest);
  });
});
