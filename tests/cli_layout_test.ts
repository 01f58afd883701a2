// Integration tests: the CLI run as a subprocess on layouts written by umoci, skopeo and
// our own fixtures, checked with oci-image-tool, umoci and our own walkers.
import assert from "node:assert/strict";
import { join } from "node:path";
import { spawnUmoci, umoci } from "./fixtures/cli.ts";
import * as fx from "./fixtures/images.ts";

const DIGEST_LINE = /^sha256:[a-f0-9]{64}$/;

/** `umoci copy SRC DST` that must succeed; returns the digest it printed. */
async function copyOk(src: string, dst: string, extra: string[] = []): Promise<string> {
  const r = await umoci(["copy", ...extra, src, dst], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, `umoci copy ${src} ${dst} failed:\n${r.stderr}`);
  const out = r.stdout.trim();
  assert.match(out, DIGEST_LINE, `stdout is the digest alone: ${JSON.stringify(r.stdout)}`);
  return out;
}

/** A failed run: non-zero, nothing on stdout, one line on stderr, no stack frames. */
function assertOneLineError(r: fx.RunResult, what: string): void {
  assert.notEqual(r.code, 0, `${what}: should fail`);
  assert.equal(r.stdout, "", `${what}: nothing on stdout`);
  const lines = r.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `${what}: one line on stderr, got:\n${r.stderr}`);
  assert.ok(lines[0].trim().length > 0, `${what}: an error message`);
  assert.ok(!/^\s*at /m.test(r.stderr), `${what}: no stack frames:\n${r.stderr}`);
  assert.ok(!/\.ts:\d+:\d+/.test(r.stderr), `${what}: no source locations:\n${r.stderr}`);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("cli: --help, copy --help and --version exit 0", async () => {
  const help = await umoci(["--help"]);
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /copy/);
  const copyHelp = await umoci(["copy", "--help"]);
  assert.equal(copyHelp.code, 0, copyHelp.stderr);
  assert.match(copyHelp.stdout, /SRC/);
  assert.match(copyHelp.stdout, /DST/);
  const version = await umoci(["--version"]);
  assert.equal(version.code, 0, version.stderr);
  assert.match(version.stdout, /\d+\.\d+\.\d+/);
});

Deno.test("cli: copy an umoci-built image into a new layout under another tag", async () => {
  await fx.withTempDir(async (tmp) => {
    const src = join(tmp, "src");
    const dst = join(tmp, "new", "dst");
    const desc = await fx.buildUmociImage(src, "v1", { layers: 3, layerBytes: 16 * 1024 });
    const digest = await copyOk(`${src}:v1`, `${dst}:v2`);
    assert.equal(digest, desc.digest);

    assert.deepEqual(await fx.listTags(dst), ["v2"]);
    const entry = await fx.tagEntry(dst, "v2");
    assert.equal(entry.digest, desc.digest);
    assert.equal(entry.size, desc.size);
    assert.equal(entry.mediaType, desc.mediaType);
    await fx.assertSameContent(src, "v1", dst, "v2");
    await fx.assertLayoutConsistent(dst);
    // Only what the tag reaches was copied (umoci leaves older manifests and configs).
    assert.deepEqual(await fx.listBlobs(dst), [...(await fx.reachableDigests(src, "v1"))].sort());
    assert.equal(await exists(join(dst, ".umoci-copy-tmp")), false, "no temp dir left");

    await fx.assertOciImageToolValid(dst, "v2");
    await fx.assertOciImageToolValid(dst);
    assert.deepEqual(await fx.umociStat(dst, "v2"), await fx.umociStat(src, "v1"));
    await fx.umociUnpack(src, "v1", join(tmp, "bundle-src"));
    await fx.umociUnpack(dst, "v2", join(tmp, "bundle-dst"));
    const unpacked = await fx.snapshotTree(join(tmp, "bundle-dst", "rootfs"));
    assert.ok(unpacked["data/layer2/file0.bin"], "layer content unpacked");
    assert.deepEqual(unpacked, await fx.snapshotTree(join(tmp, "bundle-src", "rootfs")));

    // Again: same digest, nothing changes; a second tag shares the content.
    const blobs = await fx.listBlobs(dst);
    assert.equal(await copyOk(`${src}:v1`, `${dst}:v2`), desc.digest);
    assert.equal(await copyOk(`${src}:v1`, `${dst}:v3`), desc.digest);
    assert.deepEqual(await fx.listBlobs(dst), blobs);
    assert.deepEqual(await fx.listTags(dst), ["v2", "v3"]);
    await fx.assertOciImageToolValid(dst, "v3");
  });
});

Deno.test("cli: copy one tag out of a layout holding several images", async () => {
  await fx.withTempDir(async (tmp) => {
    const src = join(tmp, "src");
    const dst = join(tmp, "dst");
    const a = await fx.buildUmociImage(src, "a", { layers: 1 });
    const b = await fx.buildUmociImage(src, "b", { layers: 2 });
    const c = await fx.buildUmociImage(src, "c", { layers: 1 });
    assert.equal(new Set([a.digest, b.digest, c.digest]).size, 3);
    assert.equal(await copyOk(`${src}:b`, `${dst}:b`), b.digest);
    assert.deepEqual(await fx.listTags(dst), ["b"]);
    assert.deepEqual(await fx.listBlobs(dst), [...(await fx.reachableDigests(src, "b"))].sort());
    await fx.assertSameContent(src, "b", dst, "b");
    await fx.assertOciImageToolValid(dst, "b");
    // Add another one next to it; the first stays.
    assert.equal(await copyOk(`${src}:c`, `${dst}:c`), c.digest);
    assert.deepEqual(await fx.listTags(dst), ["b", "c"]);
    await fx.assertOciImageToolValid(dst, "b");
    await fx.assertOciImageToolValid(dst, "c");
    await fx.assertLayoutConsistent(dst);
  });
});

Deno.test("cli: copy a multi-platform index", async () => {
  await fx.withTempDir(async (tmp) => {
    const src = join(tmp, "src");
    const dst = join(tmp, "dst");
    const built = await fx.buildMultiPlatformIndex(src, "multi", [
      "linux/amd64",
      "linux/arm64/v8",
      "linux/s390x",
    ]);
    assert.equal(await copyOk(`${src}:multi`, `${dst}:multi`), built.index.digest);
    const entry = await fx.tagEntry(dst, "multi");
    assert.equal(entry.mediaType, fx.OCI_INDEX);
    await fx.assertSameContent(src, "multi", dst, "multi");
    await fx.assertLayoutConsistent(dst);
    await fx.assertOciImageToolValid(dst, "multi");
  });
});

Deno.test("cli: copy a nested index (index → index → manifests)", async () => {
  await fx.withTempDir(async (tmp) => {
    const src = join(tmp, "src");
    const dst = join(tmp, "dst");
    const built = await fx.buildNestedIndex(src, "nested");
    assert.equal(await copyOk(`${src}:nested`, `${dst}:n`), built.root.digest);
    await fx.assertSameContent(src, "nested", dst, "n");
    assert.deepEqual(await fx.assertLayoutConsistent(dst), ["n"]);
    // (oci-image-tool 1.0.0-rc1 cannot validate nested indexes; see fixtures/images.ts.)
    const reached = await fx.reachableDigests(dst, "n");
    for (const m of [built.inner.index, ...built.inner.manifests, built.direct]) {
      assert.ok(reached.has(m.digest), `${m.digest} reached`);
    }
  });
});

Deno.test("cli: a layout written by skopeo as the source, and skopeo reads our output", async () => {
  await fx.withTempDir(async (tmp) => {
    const orig = join(tmp, "orig");
    const sk = join(tmp, "skopeo");
    const dst = join(tmp, "dst");
    await fx.buildUmociImage(orig, "t", { layers: 2 });
    await fx.mustSkopeoCopy(["copy", "-q", `oci:${orig}:t`, `oci:${sk}:t`]);
    await fx.buildMultiPlatformIndex(orig, "multi", ["linux/amd64", "linux/arm64"]);
    await fx.mustSkopeoCopy(["copy", "-q", "--all", `oci:${orig}:multi`, `oci:${sk}:multi`]);
    const skEntry = await fx.tagEntry(sk, "t");
    const skMulti = await fx.tagEntry(sk, "multi");

    assert.equal(await copyOk(`${sk}:t`, `${dst}:t`), skEntry.digest);
    assert.equal(await copyOk(`${sk}:multi`, `${dst}:multi`), skMulti.digest);
    await fx.assertSameContent(sk, "t", dst, "t");
    await fx.assertSameContent(sk, "multi", dst, "multi");
    await fx.assertLayoutConsistent(dst);
    await fx.assertOciImageToolValid(dst, "t");
    await fx.assertOciImageToolValid(dst, "multi");
    await fx.umociUnpack(dst, "t", join(tmp, "bundle"));

    // skopeo reads what we wrote, and writes it out with the same digest.
    await fx.mustSkopeoCopy([
      "copy",
      "-q",
      "--preserve-digests",
      `oci:${dst}:t`,
      `oci:${tmp}/back:t`,
    ]);
    assert.equal((await fx.tagEntry(join(tmp, "back"), "t")).digest, skEntry.digest);
  });
});

Deno.test("cli: DIR@DIGEST as the source", async () => {
  await fx.withTempDir(async (tmp) => {
    const src = join(tmp, "src");
    const dst = join(tmp, "dst");
    const img = await fx.buildUmociImage(src, "t", { layers: 1 });
    const multi = await fx.buildMultiPlatformIndex(src, "multi", ["linux/amd64", "linux/arm64"]);
    // A manifest named in index.json…
    assert.equal(await copyOk(`${src}@${img.digest}`, `${dst}:pinned`), img.digest);
    await fx.assertSameContent(src, img, dst, "pinned");
    await fx.assertOciImageToolValid(dst, "pinned");
    // …and one only reachable through an index (not in index.json).
    const arm = multi.manifests[1];
    assert.equal(await copyOk(`${src}@${arm.digest}`, `${dst}:arm`), arm.digest);
    const entry = await fx.tagEntry(dst, "arm");
    assert.equal(entry.mediaType, fx.OCI_MANIFEST);
    assert.equal(entry.size, arm.size);
    await fx.assertSameContent(src, arm, dst, "arm");
    assert.deepEqual(await fx.assertLayoutConsistent(dst), ["arm", "pinned"]);
    await fx.assertOciImageToolValid(dst, "arm");
  });
});

Deno.test("cli: an existing directory that is not a layout is refused, nothing written", async () => {
  await fx.withTempDir(async (tmp) => {
    const src = join(tmp, "src");
    const dst = join(tmp, "notalayout");
    await fx.buildRandomImage(src, "t", { layerSizes: [1000] });
    await Deno.mkdir(join(dst, "blobs", "sha256"), { recursive: true });
    await Deno.writeTextFile(join(dst, "README"), "my files\n");
    await Deno.writeTextFile(join(dst, "index.json"), '{"manifests":[]}');
    const before = await fx.snapshotTree(dst);
    const srcBefore = await fx.snapshotTree(src);
    const r = await umoci(["copy", `${src}:t`, `${dst}:t`]);
    assert.notEqual(r.code, 0);
    assert.equal(r.stdout, "");
    assert.ok(!/^\s*at /m.test(r.stderr), r.stderr);
    assert.match(r.stderr, /layout/);
    assert.deepEqual(await fx.snapshotTree(dst), before);
    assert.deepEqual(await fx.snapshotTree(src), srcBefore);
    assert.deepEqual([...Deno.readDirSync(tmp)].map((e) => e.name).sort(), ["notalayout", "src"]);
  });
});

Deno.test("cli: a destination that is a file is refused, the file untouched", async () => {
  await fx.withTempDir(async (tmp) => {
    const src = join(tmp, "src");
    const file = join(tmp, "file");
    await fx.buildRandomImage(src, "t", { layerSizes: [1000] });
    await Deno.writeTextFile(file, "precious\n");
    const r = await umoci(["copy", `${src}:t`, `${file}:t`]);
    assert.notEqual(r.code, 0);
    assert.equal(r.stdout, "");
    assert.ok(!/^\s*at /m.test(r.stderr), r.stderr);
    assert.equal(await Deno.readTextFile(file), "precious\n");
    assert.deepEqual([...Deno.readDirSync(tmp)].map((e) => e.name).sort(), ["file", "src"]);
  });
});

Deno.test("cli: 8 concurrent copies into one new destination, 8 tags", async () => {
  await fx.withTempDir(async (tmp) => {
    const src = join(tmp, "src");
    const dst = join(tmp, "dst");
    // A 4 MiB layer shared by all eight, so the writers race on the same blob too.
    const shared = fx.tarOfFiles({ "shared.bin": crypto.getRandomValues(new Uint8Array(65536)) });
    const big = new Uint8Array(4 * 1024 * 1024);
    for (const [i, c] of [...fx.randomChunks(big.length)].entries()) big.set(c, i * 1024 * 1024);
    const sharedLayer = fx.tarOfFiles({ "a.bin": shared, "b.bin": big });
    const images: fx.BuiltImage[] = [];
    for (let i = 0; i < 8; i++) {
      images.push(
        await fx.buildRandomImage(src, `t${i}`, {
          layerSizes: [64 * 1024 + i, 1000 + i, 2000 + i, 3000 + i],
          sharedLayer,
        }),
      );
    }
    const runs = await Promise.all(
      images.map((_, i) => umoci(["copy", `${src}:t${i}`, `${dst}:t${i}`], { timeoutMs: 60_000 })),
    );
    for (const [i, r] of runs.entries()) {
      assert.equal(r.code, 0, `writer ${i}: ${r.stderr}`);
      assert.equal(r.stdout.trim(), images[i].manifest.digest);
    }
    const tags = images.map((_, i) => `t${i}`);
    assert.deepEqual(await fx.assertLayoutConsistent(dst), tags);
    for (const [i, tag] of tags.entries()) {
      assert.equal((await fx.tagEntry(dst, tag)).digest, images[i].manifest.digest);
      await fx.assertSameContent(src, tag, dst, tag);
    }
    const checks = await Promise.all(tags.map((t) => fx.ociImageToolValidate(dst, t)));
    for (const [i, r] of checks.entries()) {
      assert.equal(r.code, 0, `oci-image-tool on t${i}:\n${r.stdout}${r.stderr}`);
    }
    // Nothing left over: 1 shared layer + 8 × (4 layers, config, manifest).
    assert.equal((await fx.listBlobs(dst)).length, 1 + 8 * 6);
    const leftovers = [...Deno.readDirSync(dst)].map((e) => e.name).sort();
    assert.deepEqual(leftovers, ["blobs", "index.json", "oci-layout"]);
    assert.deepEqual([...Deno.readDirSync(tmp)].map((e) => e.name).sort(), ["dst", "src"]);
  });
});

/** Size of a file under `dir` named after `hex` holding between 0 and `size` bytes (0 if none). */
async function partialSize(dir: string, hex: string, size: number): Promise<number> {
  const walk = async (d: string): Promise<number> => {
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(d));
    } catch {
      return 0; // vanished while we looked
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory) {
        const n = await walk(p);
        if (n > 0) return n;
      } else if (e.isFile && e.name.includes(hex)) {
        const n = (await Deno.stat(p).catch(() => ({ size: 0 }))).size;
        if (n > 0 && n < size) return n;
      }
    }
    return 0;
  };
  return await walk(dir);
}

Deno.test("cli: a copy killed mid-blob leaves a valid layout; a rerun completes", async () => {
  await fx.withTempDir(async (tmp) => {
    const src = join(tmp, "src");
    const dst = join(tmp, "dst");
    const size = 256 * 1024 * 1024;
    const img = await fx.buildRandomImage(src, "big", { layerSizes: [size], raw: true });
    const layer = img.layers[0];
    assert.equal(layer.size, size);
    // The destination already holds another image, which must survive the crash.
    const other = await fx.buildRandomImage(dst, "other", { layerSizes: [1000] });

    const child = spawnUmoci(["copy", `${src}:big`, `${dst}:big`]);
    const hex = layer.digest.slice("sha256:".length);
    let partial = 0;
    const deadline = Date.now() + 30_000;
    try {
      // Wait until some file named after the layer (wherever the CLI keeps its partial
      // download) holds part of it, then kill the process without warning.
      while (Date.now() < deadline && partial === 0) {
        const n = await partialSize(dst, hex, size);
        if (n > 0) partial = n;
        else await new Promise((r) => setTimeout(r, 2));
      }
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* already exited */ }
    }
    const killed = await child.output();
    assert.ok(partial > 0, "saw the layer partly written before the kill");
    assert.equal(killed.signal, "SIGKILL", `killed mid-copy (exit ${killed.code})`);

    // After the crash: valid, the old tag intact, the new tag absent, no partial blob.
    assert.deepEqual(await fx.assertLayoutConsistent(dst), ["other"]);
    assert.equal((await fx.tagEntry(dst, "other")).digest, other.manifest.digest);
    assert.ok(!(await fx.listBlobs(dst)).includes(layer.digest), "partial layer not in blobs/");
    await fx.assertOciImageToolValid(dst, "other");

    // The rerun completes with the right digest.
    assert.equal(await copyOk(`${src}:big`, `${dst}:big`), img.manifest.digest);
    assert.deepEqual(await fx.assertLayoutConsistent(dst), ["big", "other"]);
    await fx.assertSameContent(src, "big", dst, "big");
    // The partial download was used up, not left behind.
    assert.equal(await partialSize(dst, hex, size), 0);
    const names = [...Deno.readDirSync(dst)].map((e) => e.name).sort();
    assert.deepEqual(names, ["blobs", "index.json", "oci-layout"], "no temp files left");
  });
});

Deno.test("cli: bad input gives a one-line error, non-zero exit, nothing created", async (t) => {
  await fx.withTempDir(async (tmp) => {
    const src = join(tmp, "src");
    await fx.buildRandomImage(src, "t", { layerSizes: [100] });
    const plain = join(tmp, "plain");
    await Deno.mkdir(plain);
    await Deno.writeTextFile(join(plain, "x"), "x");
    const dst = join(tmp, "dst");
    const a64 = "a".repeat(64);
    const rows: [string, string[]][] = [
      ["empty source", ["copy", "", `${dst}:t`]],
      ["empty destination", ["copy", `${src}:t`, ""]],
      ["empty source path", ["copy", ":t", `${dst}:t`]],
      ["empty destination path", ["copy", `${src}:t`, ":t"]],
      ["empty tag", ["copy", `${src}:`, `${dst}:t`]],
      ["bad tag (space, !)", ["copy", `${src}:bad tag!`, `${dst}:t`]],
      ["bad tag (leading -)", ["copy", `${src}:-x`, `${dst}:t`]],
      ["bad destination tag", ["copy", `${src}:t`, `${dst}:a..b`]],
      ["short digest", ["copy", `${src}@sha256:abc`, `${dst}:t`]],
      ["uppercase digest", ["copy", `${src}@sha256:${"A".repeat(64)}`, `${dst}:t`]],
      ["unknown algorithm", ["copy", `${src}@md5:${"a".repeat(32)}`, `${dst}:t`]],
      ["path traversal digest", ["copy", `${src}@sha256:../../etc/passwd`, `${dst}:t`]],
      ["digest not in the layout", ["copy", `${src}@sha256:${a64}`, `${dst}:t`]],
      ["missing tag", ["copy", `${src}:nope`, `${dst}:t`]],
      ["missing source", ["copy", `${join(tmp, "missing")}:t`, `${dst}:t`]],
      ["source not a layout", ["copy", `${plain}:t`, `${dst}:t`]],
      ["destination by digest", ["copy", `${src}:t`, `${dst}@sha256:${a64}`]],
      ["one argument", ["copy", `${src}:t`]],
      ["three arguments", ["copy", `${src}:t`, `${dst}:t`, `${dst}:u`]],
      ["unknown flag", ["copy", "--bogus", `${src}:t`, `${dst}:t`]],
      ["unknown command", ["frobnicate", `${src}:t`, `${dst}:t`]],
      ["bad log level", ["--log=verbose", "copy", `${src}:t`, `${dst}:t`]],
    ];
    const srcBefore = await fx.snapshotTree(src);
    for (const [name, args] of rows) {
      await t.step(name, async () => {
        const r = await umoci(args, { cwd: tmp, timeoutMs: 30_000 });
        assert.notEqual(r.code, 0, `${name}: should fail`);
        assert.equal(await exists(dst), false, `${name}: no destination created`);
        assert.deepEqual(
          [...Deno.readDirSync(tmp)].map((e) => e.name).sort(),
          ["plain", "src"],
          `${name}: nothing created`,
        );
        assertOneLineError(r, name);
      });
    }
    assert.deepEqual(await fx.snapshotTree(src), srcBefore, "source untouched");
  });
});

Deno.test("cli: a large layer is verified by OpenSSL or by node:crypto (UMOCI_LIBCRYPTO=0) alike", async () => {
  const dir = await Deno.makeTempDir({ prefix: "umoci-hash-" });
  try {
    const src = join(dir, "src");
    const img = await fx.buildRandomImage(src, "v1", {
      layerSizes: [3 * 1024 * 1024 + 5],
      raw: true,
    });
    const layer = img.layers[0];
    for (const [libcrypto, hash] of [["1", "OpenSSL"], ["0", "node:crypto"]]) {
      const env = { UMOCI_LIBCRYPTO: libcrypto };
      const dst = join(dir, `good-${libcrypto}`);
      const r = await umoci(["copy", "--debug", `${src}:v1`, `${dst}:v1`], { env });
      assert.equal(r.code, 0, r.stderr);
      assert.match(
        r.stderr,
        new RegExp(`saved to local store ${layer.digest} \\(verified with ${hash}\\)`),
      );
      // A config (under 1 MiB) is gathered and verified with WebCrypto whatever else is loaded.
      assert.match(
        r.stderr,
        new RegExp(`saved to local store ${img.config.digest} \\(verified with WebCrypto\\)`),
      );
      assert.equal(r.stdout.trim(), img.manifest.digest);
      const copiedLayer = await Deno.readFile(fx.blobFile(dst, layer.digest));
      assert.equal(fx.digestOf(copiedLayer), layer.digest);
    }
    // One bit flipped in the middle of the source's layer: both hashes refuse it, and
    // neither the blob nor the tag reaches the destination.
    const path = fx.blobFile(src, layer.digest);
    const bytes = await Deno.readFile(path);
    bytes[1_500_000] ^= 0x10;
    await Deno.writeFile(path, bytes);
    for (const libcrypto of ["1", "0"]) {
      const dst = join(dir, `bad-${libcrypto}`);
      const r = await umoci(["copy", "-q", `${src}:v1`, `${dst}:v1`], {
        env: { UMOCI_LIBCRYPTO: libcrypto },
      });
      assertOneLineError(r, `corrupt layer, UMOCI_LIBCRYPTO=${libcrypto}`);
      assert.match(r.stderr, new RegExp(`digest mismatch: expected ${layer.digest}`));
      assert.equal(await exists(fx.blobFile(dst, layer.digest)), false);
      assert.equal(await exists(fx.blobFile(dst, img.manifest.digest)), false);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
