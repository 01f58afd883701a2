// The artifact users run: version information, and a copy in a container-like environment
// (empty environment: no HOME, no PATH, no TTY; a read-only working directory).
import assert from "node:assert/strict";
import { join } from "node:path";
import { umoci, umociCommand } from "./fixtures/cli.ts";
import { assertSameContent, buildRandomImage, withTempDir } from "./fixtures/images.ts";
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
