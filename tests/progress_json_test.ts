// --progress=json end to end: the real CLI copies images to and from the real registry and
// every line of its stderr must be one JSON event of schema v1 (docs/EVENTS.md). The event
// sequence is checked against the image itself: every blob starts and is done, or is
// skipped; the summary's byte counts add up to the image's real size; a pull that continues
// a kept partial download says so and counts only the new bytes as moved; an error is an
// event with the exit code, and nothing else reaches stderr.
import assert from "node:assert/strict";
import { join } from "node:path";
import { startChaosProxy } from "./fixtures/chaos.ts";
import { type RunResult, umoci } from "./fixtures/cli.ts";
import {
  appendIndexEntry,
  buildArtifact,
  buildRandomImage,
  type Descriptor,
  tagDescriptor,
  tarOfFiles,
  withTempDir,
} from "./fixtures/images.ts";
import { referrersTagName } from "../src/store/referrers.ts";
import { type RunningRegistry, startRegistry } from "./fixtures/registry.ts";

const MiB = 1024 * 1024;

// deno-lint-ignore no-explicit-any
type Event = Record<string, any>;

/** Every stderr line parsed as JSON (failing on any that is not), with the common fields checked. */
function events(r: RunResult, what: string): Event[] {
  assert.ok(r.stderr.endsWith("\n"), `${what}: stderr ends with a newline`);
  let last = -Infinity;
  return r.stderr.slice(0, -1).split("\n").map((line) => {
    let e: Event;
    try {
      e = JSON.parse(line);
    } catch {
      throw new Error(`${what}: a stderr line that is not JSON: ${line}\n${r.stderr}`);
    }
    assert.equal(e.v, 1, `${what}: ${line}`);
    assert.equal(typeof e.type, "string", line);
    assert.ok(!Number.isNaN(Date.parse(e.time)), `${what}: time of ${line}`);
    assert.ok(e.elapsed >= last, `${what}: elapsed goes forward: ${line}`);
    last = e.elapsed;
    return e;
  });
}

/**
 * The event sequence of a copy that worked: start, plan, every planned blob either
 * start→(progress…)→done or skipped (or mounted), then manifests, then the summary last.
 * Returns the summary.
 */
function checkSequence(
  all: Event[],
  blobs: Descriptor[],
  what: string,
  names = { start: "start", end: "summary" },
): Event {
  const types = all.map((e) => e.type);
  assert.equal(types[0], names.start, what);
  assert.equal(types[1], "plan", what);
  assert.equal(types.at(-1), names.end, what);
  assert.equal(all[1].blobs, blobs.length, what);
  assert.equal(all[1].bytes, blobs.reduce((n, b) => n + b.size, 0), `${what}: planned bytes`);
  for (const blob of blobs) {
    const mine = all.filter((e) => e.digest === blob.digest && e.type.startsWith("blob-"));
    const kinds = mine.map((e) => e.type);
    const ends = kinds.filter((k) => k === "blob-done" || k === "blob-skip" || k === "blob-mount");
    assert.equal(ends.length, 1, `${what}: ${blob.digest} ends once: ${kinds}`);
    if (ends[0] === "blob-done") {
      assert.equal(kinds[0], "blob-start", `${what}: ${blob.digest}: ${kinds}`);
      assert.equal(kinds.at(-1), "blob-done", `${what}: ${blob.digest}: ${kinds}`);
      let bytes = 0;
      for (const p of mine.filter((e) => e.type === "blob-progress")) {
        assert.ok(p.bytes >= bytes && p.bytes <= blob.size, `${what}: progress ${p.bytes}`);
        bytes = p.bytes;
      }
    } else {
      assert.deepEqual(kinds, [ends[0]], `${what}: ${blob.digest} skipped without a start`);
    }
    for (const e of mine) assert.equal(e.size, blob.size, `${what}: size in ${JSON.stringify(e)}`);
  }
  const summary = all.at(-1)!;
  assert.equal(
    summary.bytesMoved + summary.bytesPresent + summary.bytesResumed,
    blobs.reduce((n, b) => n + b.size, 0),
    `${what}: the summary adds up to the image's size: ${JSON.stringify(summary)}`,
  );
  return summary;
}

/** The config and layers of the image `tag` in a layout, read from its manifest. */
async function blobsOf(dir: string, manifest: Descriptor): Promise<Descriptor[]> {
  const hex = manifest.digest.slice("sha256:".length);
  const doc = JSON.parse(await Deno.readTextFile(join(dir, "blobs", "sha256", hex)));
  return [doc.config, ...doc.layers];
}

async function withRegistry(fn: (reg: RunningRegistry) => Promise<void>): Promise<void> {
  const reg = await startRegistry();
  try {
    await fn(reg);
  } finally {
    await reg.stop();
  }
}

Deno.test("json: a push is a sequence of events whose summary adds up to the image", async () => {
  await withRegistry(async (reg) => {
    await withTempDir(async (dir) => {
      const src = join(dir, "src");
      const shared = tarOfFiles({ "shared.bin": crypto.getRandomValues(new Uint8Array(65536)) });
      const a = await buildRandomImage(src, "v1", { layerSizes: [2 * MiB], sharedLayer: shared });
      const b = await buildRandomImage(src, "v2", { layerSizes: [300_000], sharedLayer: shared });
      const blobsA = await blobsOf(src, a.manifest);
      const blobsB = await blobsOf(src, b.manifest);

      const first = await umoci(
        ["copy", "--progress=json", "--plain-http", `${src}:v1`, `oci://${reg.host}/j/app:v1`],
        { timeoutMs: 60_000 },
      );
      assert.equal(first.code, 0, first.stderr);
      assert.equal(first.stdout, `${a.manifest.digest}\n`);
      const one = events(first, "first push");
      const s1 = checkSequence(one, blobsA, "first push");
      assert.equal(s1.bytesMoved, blobsA.reduce((n, d) => n + d.size, 0));
      assert.equal(s1.bytesPresent, 0);
      assert.equal(s1.blobsCopied, blobsA.length);
      assert.equal(s1.digest, a.manifest.digest);
      assert.equal(s1.tag, "v1");
      assert.equal(s1.manifestsWritten, 1);
      const written = one.filter((e) => e.type === "manifest-written");
      assert.deepEqual(written.map((e) => [e.digest, e.size]), [[
        a.manifest.digest,
        a.manifest.size,
      ]]);
      assert.equal(one[0].root.digest, a.manifest.digest);

      // The second image shares a layer with the first: skipped as present, not moved.
      const second = await umoci(
        ["copy", "--progress", "json", "--plain-http", `${src}:v2`, `oci://${reg.host}/j/app:v2`],
        { timeoutMs: 60_000 },
      );
      assert.equal(second.code, 0, second.stderr);
      const two = events(second, "second push");
      const s2 = checkSequence(two, blobsB, "second push");
      const sharedDigest = blobsB[1].digest;
      assert.equal(blobsA[1].digest, sharedDigest, "the shared layer is layer 1 of both");
      const skip = two.find((e) => e.type === "blob-skip");
      assert.equal(skip?.digest, sharedDigest);
      assert.equal(skip?.reason, "exists");
      assert.equal(s2.bytesPresent, blobsB[1].size);
      assert.equal(s2.bytesMoved, blobsB[0].size + blobsB[2].size);
      assert.equal(s2.blobsPresent, 1);

      // A failure is one error event with the exit code, and nothing else on stderr.
      const failed = await umoci(
        ["copy", "--progress=json", "--plain-http", `${src}:v9`, `oci://${reg.host}/j/app:v9`],
        { timeoutMs: 60_000 },
      );
      assert.equal(failed.code, 1);
      assert.equal(failed.stdout, "");
      const errors = events(failed, "missing tag");
      assert.equal(errors.length, 1, failed.stderr);
      assert.equal(errors[0].type, "error");
      assert.equal(errors[0].exit, 1);
      assert.match(errors[0].message, /v9/);
      // A bad command line too (exit 2), even before the flags are understood.
      const usage = await umoci(["copy", "--progress=json", "--no-such-flag", "a", "b"]);
      assert.equal(usage.code, 2);
      const u = events(usage, "unknown flag");
      assert.deepEqual(u.map((e) => [e.type, e.exit]), [["error", 2]]);
      // An unknown mode is refused in words (no JSON was asked for).
      const mode = await umoci(["copy", "--progress=fancy", `${src}:v1`, join(dir, "x")]);
      assert.equal(mode.code, 2);
      assert.match(
        mode.stderr,
        /^error: --progress: unknown mode "fancy" \(auto, bars, lines, json\)\n$/,
      );

      // jq reads the stream as it is (the CI use): the summary's bytes, one per line.
      const jq = new Deno.Command("jq", {
        args: ["-r", 'select(.type == "summary") | "\\(.bytesMoved) \\(.bytesPresent)"'],
        stdin: "piped",
        stdout: "piped",
      }).spawn();
      const w = jq.stdin.getWriter();
      await w.write(new TextEncoder().encode(second.stderr));
      await w.close();
      const out = await jq.output();
      assert.equal(new TextDecoder().decode(out.stdout), `${s2.bytesMoved} ${s2.bytesPresent}\n`);
    });
  });
});

Deno.test("json: a pull that continues a kept partial download says so and moves only the rest", async () => {
  await withRegistry(async (reg) => {
    await withTempDir(async (dir) => {
      const src = join(dir, "src");
      const built = await buildRandomImage(src, "v1", { layerSizes: [4 * MiB], raw: true });
      const blobs = await blobsOf(src, built.manifest);
      const layer = built.layers[0];
      const pushed = await umoci([
        "copy",
        "--plain-http",
        `${src}:v1`,
        `oci://${reg.host}/r/app:v1`,
      ]);
      assert.equal(pushed.code, 0, pushed.stderr);
      const layerPath = new RegExp(`/blobs/${layer.digest}$`);
      // First pull: the layer's connection drops after 1.5 MiB and no retry is allowed.
      const proxy = await startChaosProxy(reg.url, [
        { method: "GET", path: layerPath, fault: { kind: "reset", afterBytes: 1.5 * MiB } },
      ]);
      try {
        const dst = join(dir, "dst");
        const source = `oci://${proxy.host}/r/app:v1`;
        const broken = await umoci(
          ["copy", "--progress=json", "--retries=0", "--plain-http", source, `${dst}:v1`],
          { timeoutMs: 60_000 },
        );
        assert.equal(broken.code, 1, broken.stderr);
        const b = events(broken, "broken pull");
        assert.equal(b.at(-1)!.type, "error");
        assert.equal(b.at(-1)!.exit, 1);
        assert.match(b.at(-1)!.message, /broke off at byte \d+ .*partial download is kept/);
        assert.ok(!b.some((e) => e.type === "summary"));

        // Second pull, slowed down so that progress events are due: it resumes.
        proxy.rules.push({
          method: "GET",
          path: layerPath,
          fault: { kind: "trickle", bytesPerChunk: 256 * 1024, delayMs: 20 },
        });
        const resumed = await umoci(
          ["copy", "--progress=json", "--plain-http", source, `${dst}:v1`],
          { timeoutMs: 60_000 },
        );
        assert.equal(resumed.code, 0, resumed.stderr);
        const r = events(resumed, "resumed pull");
        const summary = checkSequence(r, blobs, "resumed pull");
        const resume = r.find((e) => e.type === "blob-resume");
        assert.ok(resume, `a blob-resume event:\n${resumed.stderr}`);
        assert.equal(resume.digest, layer.digest);
        assert.ok(resume.offset > 0 && resume.offset <= 1.5 * MiB, `offset ${resume.offset}`);
        assert.equal(summary.bytesResumed, resume.offset);
        const done = r.find((e) => e.type === "blob-done" && e.digest === layer.digest);
        assert.equal(done?.moved, layer.size - resume.offset);
        const progress = r.filter((e) => e.type === "blob-progress" && e.digest === layer.digest);
        assert.ok(progress.length >= 1, `progress events:\n${resumed.stderr}`);
        assert.ok(progress[0].bytes >= resume.offset, "progress goes on from the kept part");
        for (let i = 1; i < progress.length; i++) {
          assert.ok(progress[i].elapsed - progress[i - 1].elapsed >= 0.5, "at most every 500 ms");
        }
        // The rate counts only new bytes: below what counting the kept part would give.
        for (const p of progress.filter((e) => e.rate !== undefined)) {
          const since = p.elapsed - r.find((e) => e.type === "blob-start")!.elapsed;
          assert.ok(p.rate < p.bytes / since, `rate ${p.rate} counts the kept part`);
        }

        // The same in words, without JSON: the resume is named, the summary separates (the
        // config came in whole before the layer broke off).
        const dst2 = join(dir, "dst2");
        proxy.rules.push({
          method: "GET",
          path: layerPath,
          fault: { kind: "reset", afterBytes: 1.5 * MiB },
        });
        const broken2 = await umoci(["copy", "--retries=0", "--plain-http", source, `${dst2}:v1`]);
        assert.equal(broken2.code, 1, broken2.stderr);
        const human = await umoci(["copy", "--plain-http", source, `${dst2}:v1`]);
        assert.equal(human.code, 0, human.stderr);
        const m =
          /^sha256:[0-9a-f]{12}: resuming at ([\d.]+) (KiB|MiB) \(kept from an earlier run\)$/m
            .exec(human.stderr);
        assert.ok(m, human.stderr);
        assert.match(
          human.stderr,
          new RegExp(
            `^Copied 1 blob \\([\\d.]+ (KiB|MiB) moved, ${m[1]} ${m[2]} resumed from an ` +
              `earlier run\\), 1 already present \\(${blobs[0].size} B\\); ` +
              `1 manifest written$`,
            "m",
          ),
        );
      } finally {
        await proxy.close();
      }
    });
  });
});

Deno.test("json: a 3-image job names the image in every event and ends with the job's summary", async () => {
  await withRegistry(async (reg) => {
    await withTempDir(async (dir) => {
      const src = join(dir, "src");
      // Three images sharing one layer: one image moves it, the others find it present.
      const shared = tarOfFiles({ "shared.bin": crypto.getRandomValues(new Uint8Array(65536)) });
      const sizes = [3 * MiB, 1 * MiB + 7, 200_000];
      const names: string[] = [];
      const blobs: Descriptor[][] = [];
      for (const [i, size] of sizes.entries()) {
        const built = await buildRandomImage(src, `v${i}`, {
          layerSizes: [size],
          sharedLayer: shared,
        });
        blobs.push(await blobsOf(src, built.manifest));
        const name = `oci://${reg.host}/job/r${i}:v1`;
        const pushed = await umoci(["copy", "--plain-http", `${src}:v${i}`, name]);
        assert.equal(pushed.code, 0, pushed.stderr);
        names.push(name);
      }
      const list = join(dir, "images.txt");
      await Deno.writeTextFile(list, names.map((n) => n + "\n").join(""));
      const r = await umoci(
        ["copy", "--progress=json", "--plain-http", "--images", list, join(dir, "bundle")],
        { timeoutMs: 90_000 },
      );
      assert.equal(r.code, 0, r.stderr);
      const all = events(r, "job");
      // The job's summary is the last event, and the only one that names no image.
      const last = all.at(-1)!;
      assert.equal(last.type, "summary", r.stderr);
      assert.equal(last.image, undefined);
      assert.equal(all.filter((e) => e.type === "summary").length, 1, r.stderr);
      const size = (list: Descriptor[]) => list.reduce((n, b) => n + b.size, 0);
      for (const e of all.slice(0, -1)) {
        assert.ok(
          typeof e.imageIndex === "number" && e.image === names[e.imageIndex],
          `an event without its image: ${JSON.stringify(e)}`,
        );
        assert.ok(!["start", "summary"].includes(e.type), JSON.stringify(e));
      }
      let sum = 0;
      for (const [i, name] of names.entries()) {
        const mine = all.filter((e) => e.imageIndex === i);
        const done = checkSequence(mine, blobs[i], name, {
          start: "image-start",
          end: "image-done",
        });
        assert.equal(`oci://${mine[0].src}`, name);
        assert.equal(mine.filter((e) => e.type === "plan").length, 1, name);
        sum += done.bytesMoved + done.bytesPresent + done.bytesResumed;
      }
      const real = blobs.reduce((n, list) => n + size(list), 0);
      assert.equal(sum, real, "the images' summaries add up to their sizes");
      assert.equal(
        last.bytesMoved + last.bytesPresent + last.bytesResumed,
        real,
        JSON.stringify(last),
      );
      // The shared layer crossed once: moved bytes are those of the distinct blobs.
      const distinct = new Map(blobs.flat().map((b) => [b.digest, b.size]));
      assert.equal(last.bytesMoved, [...distinct.values()].reduce((n, s) => n + s, 0));
      assert.equal(last.blobsCopied, distinct.size);
      assert.equal(last.blobsPresent, 2);
      assert.deepEqual(
        [
          last.images,
          last.imagesCopied,
          last.imagesPresent,
          last.imagesFailed,
          last.imagesNotCopied,
        ],
        [3, 3, 0, 0, 0],
      );
      assert.equal(last.manifestsWritten, 3);
      // jq reads it: the job's totals, and each image's bytes.
      const jq = new Deno.Command("jq", {
        args: [
          "-r",
          'select(.type == "image-done") | "\\(.imageIndex) \\(.bytesMoved + .bytesPresent)"',
        ],
        stdin: "piped",
        stdout: "piped",
      }).spawn();
      const w = jq.stdin.getWriter();
      await w.write(new TextEncoder().encode(r.stderr));
      await w.close();
      const lines = new TextDecoder().decode((await jq.output()).stdout).trim().split("\n").sort();
      assert.deepEqual(lines, blobs.map((b, i) => `${i} ${size(b)}`));

      // With --keep-going a missing image is image-failed; the job's summary, then the error.
      const missing = `oci://${reg.host}/job/none:v1`;
      await Deno.writeTextFile(list, [...names, missing].map((n) => n + "\n").join(""));
      const k = await umoci(
        [
          "copy",
          "--progress=json",
          "--plain-http",
          "--keep-going",
          "--images",
          list,
          join(dir, "b2"),
        ],
        { timeoutMs: 90_000 },
      );
      assert.equal(k.code, 1, k.stderr);
      const ke = events(k, "keep-going job");
      assert.deepEqual(ke.slice(-2).map((e) => e.type), ["summary", "error"], k.stderr);
      assert.equal(ke.at(-1)!.image, undefined);
      assert.deepEqual([ke.at(-2)!.imagesCopied, ke.at(-2)!.imagesFailed], [3, 1]);
      const failed = ke.filter((e) => e.type === "image-failed");
      assert.deepEqual(failed.map((e) => [e.image, e.imageIndex]), [[missing, 3]]);
      for (const e of ke.slice(0, -2)) {
        assert.equal(typeof e.imageIndex, "number", JSON.stringify(e));
      }

      // A retry of a request made for one image (the job's connections are shared) names it.
      const proxy = await startChaosProxy(reg.url, [
        {
          method: "GET",
          path: /\/job\/r1\/blobs\/sha256:/,
          fault: { kind: "status", status: 503 },
        },
      ]);
      try {
        const via = names.map((n) => n.replace(reg.host, proxy.host));
        await Deno.writeTextFile(list, via.map((n) => n + "\n").join(""));
        const p = await umoci(
          ["copy", "--progress=json", "--plain-http", "--images", list, join(dir, "b3")],
          { timeoutMs: 90_000 },
        );
        assert.equal(p.code, 0, p.stderr);
        const pe = events(p, "job with a retry");
        const retries = pe.filter((e) => e.type === "retry");
        assert.equal(retries.length, 1, p.stderr);
        assert.deepEqual([retries[0].image, retries[0].imageIndex], [via[1], 1]);
      } finally {
        await proxy.close();
      }
    });
  });
});

Deno.test("json: with --referrers and --digest-tags the image has one plan, and each referrer and digest tag is an event", async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, "src");
    const image = (await buildRandomImage(src, "v1", { layerSizes: [20_000] })).manifest;
    const blobs = await blobsOf(src, image);
    const sbom = (await buildArtifact(src, undefined, { subject: image })).manifest;
    await appendIndexEntry(src, sbom);
    const tagged = (await buildArtifact(src, undefined, {
      artifactType: "application/vnd.example.sig.v1+json",
    })).manifest;
    const tag = `${referrersTagName(image.digest)}.sig`;
    await tagDescriptor(src, tagged, tag);
    const r = await umoci([
      "copy",
      "--progress=json",
      "-r",
      "--digest-tags",
      `${src}:v1`,
      `${join(dir, "dst")}:v1`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const all = events(r, "referrers");
    assert.equal(all.filter((e) => e.type === "plan").length, 1, r.stderr);
    assert.equal(all.filter((e) => e.type === "attached-plan").length, 2, r.stderr);
    // The image's own events, as for any copy; the attached graphs' events say so.
    const own = all.filter((e) =>
      !e.attached && !["attached-plan", "referrer", "digest-tag"].includes(e.type)
    );
    const summary = checkSequence(own, blobs, "image");
    assert.equal(summary.digest, image.digest);
    const attached = all.filter((e) => e.attached);
    assert.ok(attached.some((e) => e.type === "manifest-written" && e.digest === sbom.digest));
    assert.ok(attached.every((e) => e.digest !== image.digest), r.stderr);
    const referrer = all.find((e) => e.type === "referrer");
    assert.deepEqual(
      [referrer?.digest, referrer?.subject, referrer?.status, referrer?.artifactType],
      [sbom.digest, image.digest, "copied", sbom.artifactType],
    );
    const digestTag = all.find((e) => e.type === "digest-tag");
    assert.deepEqual([digestTag?.tag, digestTag?.digest, digestTag?.status], [
      tag,
      tagged.digest,
      "copied",
    ]);
    assert.equal(all.at(-1)!.type, "summary");
  });
});
