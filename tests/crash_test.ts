// Crash safety of a pull: SIGKILL at ten points of a long pull (a 3 × 48 MiB image from the
// real registry, slowed down by the chaos proxy's trickle), the layout checked after every
// kill, then a last run that must finish with the right digest and fetch only what the
// killed runs had not kept (partial downloads in the layout's temp area are resumed with
// `Range: bytes=N-`). The figures are printed.
import assert from "node:assert/strict";
import { join } from "node:path";
import { startChaosProxy } from "./fixtures/chaos.ts";
import { spawnUmoci, umoci } from "./fixtures/cli.ts";
import {
  assertLayoutConsistent,
  buildRandomImage,
  ociImageToolValidate,
  readIndex,
  REF_NAME,
  withTempDir,
} from "./fixtures/images.ts";
import { startRegistry } from "./fixtures/registry.ts";

const MiB = 1024 * 1024;
const LAYER = 48 * MiB;

/** Bytes of each blob kept in DIR: complete (under blobs/) or partial (in the temp area). */
async function kept(dir: string, digests: string[]): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const d of digests) {
    const hex = d.slice("sha256:".length);
    const full = await Deno.stat(join(dir, "blobs", "sha256", hex)).catch(() => null);
    const partial = await Deno.stat(join(dir, ".umoci-copy-tmp", `sha256-${hex}.partial`))
      .catch(() => null);
    out.set(d, full ? Infinity : partial?.size ?? 0);
  }
  return out;
}

Deno.test("crash safety: SIGKILL at 10 points of a 144 MiB pull, the layout always valid, the rerun fetches only what is missing", async () => {
  const reg = await startRegistry();
  try {
    await withTempDir(async (dir) => {
      const src = join(dir, "src");
      const built = await buildRandomImage(src, "v1", {
        layerSizes: [LAYER, LAYER, LAYER],
        raw: true,
      });
      const seed = await umoci([
        "copy",
        "--plain-http",
        `${src}:v1`,
        `oci://${reg.host}/big/app:v1`,
      ]);
      assert.equal(seed.code, 0, seed.stderr);
      // Every blob of the image (config and layers) and its size.
      const sizes = new Map([built.config, ...built.layers].map((b) => [b.digest, b.size]));
      const layers = [...sizes.keys()];

      // ≈ 12–25 MiB/s per blob stream, and one blob at a time in the killed runs (--jobs 1):
      // the kills fall before the layout exists, inside a layer, around a layer's rename
      // into blobs/ and between layers.
      const proxy = await startChaosProxy(reg.url, [{
        method: "GET",
        path: /\/blobs\/sha256:/,
        times: Infinity,
        fault: { kind: "trickle", bytesPerChunk: 256 * 1024, delayMs: 4 },
      }]);
      const out = join(dir, "out");
      const args = ["copy", "--plain-http", `oci://${proxy.host}/big/app:v1`, `${out}:v1`];
      const figures: string[] = [];
      const delays = [150, 350, 500, 700, 900, 1100, 1300, 1500, 1700, 1900];
      try {
        for (const [i, delay] of delays.entries()) {
          const child = spawnUmoci(["copy", "--jobs", "1", ...args.slice(1)]);
          const output = child.output();
          await new Promise((r) => setTimeout(r, delay));
          try {
            child.kill("SIGKILL");
          } catch { /* it ended by itself */ }
          const status = await output;
          const exists = await Deno.stat(join(out, "index.json")).then(() => true, () => false);
          let note = "no layout yet";
          if (exists) {
            // index.json and oci-layout parse, every blob matches its digest, every tag
            // reaches only content that is present.
            const tags = await assertLayoutConsistent(out);
            const entries = (await readIndex(out)).manifests;
            for (const e of entries) {
              if (e.annotations?.[REF_NAME]) assert.equal(e.digest, built.manifest.digest);
            }
            const k = await kept(out, layers);
            const complete = [...k.values()].filter((v) => v === Infinity).length;
            const partial = [...k.values()].filter((v) => v !== Infinity).reduce(
              (a, b) => a + b,
              0,
            );
            note =
              `${complete} of 4 blobs complete, ${(partial / MiB).toFixed(1)} MiB in partials, ` +
              `tags [${tags.join(",")}]`;
          }
          figures.push(`kill ${i + 1} after ${delay} ms (exit ${status.code}): ${note}`);
        }

        // What the last run must fetch: every layer not complete, from where its partial ends.
        const before = await kept(out, layers);
        const missing = [...before.entries()]
          .filter(([, v]) => v !== Infinity)
          .reduce((sum, [d, v]) => sum + (sizes.get(d)! - v), 0);
        assert.ok(missing > 0, "the killed runs left something to do");
        const mark = proxy.log.length;
        const t0 = performance.now();
        const last = await umoci(args, { timeoutMs: 60_000 });
        const ms = Math.round(performance.now() - t0);
        assert.equal(last.code, 0, last.stderr);
        assert.equal(last.stdout, `${built.manifest.digest}\n`);

        const gets = proxy.log.slice(mark).filter((e) =>
          e.method === "GET" && /\/blobs\/sha256:/.test(e.path)
        );
        let fetched = 0;
        for (const g of gets) {
          const digest = g.path.slice(g.path.lastIndexOf("/") + 1);
          const had = before.get(digest);
          assert.ok(had !== undefined, `only the image's blobs were fetched, not ${digest}`);
          assert.notEqual(had, Infinity, `${digest} was complete and fetched again`);
          const range = g.requestHeaders.get("range");
          const start = range === null ? 0 : Number(/^bytes=(\d+)-$/.exec(range)?.[1]);
          assert.equal(start, had, `${digest} resumed where its partial ended (${range})`);
          if (start > 0) assert.equal(g.status, 206);
          fetched += sizes.get(digest)! - start;
        }
        const incomplete = [...before.values()].filter((v) => v !== Infinity).length;
        assert.equal(gets.length, incomplete, "one GET per incomplete blob");
        assert.equal(fetched, missing, "the last run fetched exactly what was missing");

        await assertLayoutConsistent(out);
        const v = await ociImageToolValidate(out, "v1");
        assert.equal(v.code, 0, v.stdout + v.stderr);
        figures.push(
          `last run: ${ms} ms, ${gets.length} blob GETs (${
            gets.filter((g) => g.requestHeaders.get("range")).length
          } with Range), ${(fetched / MiB).toFixed(1)} MiB fetched = ${
            (missing / MiB).toFixed(1)
          } MiB missing of ${(3 * LAYER / MiB).toFixed(1)} MiB`,
        );
        console.log(`\nCrash test figures:\n${figures.map((f) => `  ${f}`).join("\n")}\n`);
      } finally {
        await proxy.close();
      }
    });
  } finally {
    await reg.stop();
  }
});
