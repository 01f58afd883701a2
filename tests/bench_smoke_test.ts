// A tiny run of the benchmark (one pair, small images), so scripts/bench.ts cannot rot: it
// must start its registries, build every image, run every operation with both tools, see
// the same digests from both and write its table.
import assert from "node:assert/strict";
import { join } from "node:path";
import { REPO_ROOT } from "./fixtures/cli.ts";

Deno.test("bench: a smoke run completes with the same digests from umoci and skopeo", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bench-smoke-" });
  try {
    const md = join(dir, "table.md");
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        join(REPO_ROOT, "scripts", "bench.ts"),
        "--smoke",
        "--markdown",
        md,
      ],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(120_000),
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr) + stdout);
    const table = await Deno.readTextFile(md);
    for (
      const op of [
        "push",
        "pull",
        "re-pull",
        "re-push",
        "registry→registry",
        "mount (same registry)",
      ]
    ) {
      for (const image of ["4×1MiB", "10×32KiB", "3-platform index", "rootfs layer"]) {
        assert.match(
          table,
          new RegExp(`\\| ${op.replace(/[()]/g, "\\$&")} \\| ${image} \\|`),
          `${op} ${image}`,
        );
      }
    }
    assert.doesNotMatch(table, /MISSED|digests differ/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
