// Unit tests of the OCI image layout store and of copyGraph between two layouts.
import assert from "node:assert/strict";
import { join } from "node:path";
import { copyGraph } from "../src/copy.ts";
import { DigestMismatchError } from "../src/digest.ts";
import { NotFoundError, UserError } from "../src/errors.ts";
import type { Descriptor } from "../src/media.ts";
import { LayoutStore } from "../src/store/layout.ts";
import type { BlobSource, Store } from "../src/store/store.ts";
import * as fx from "./fixtures/images.ts";

const enc = new TextEncoder();

/** A source that cannot seek: every call gives the whole stream from byte 0. */
function sourceOf(...chunks: Uint8Array[]): BlobSource {
  return () => Promise.resolve({ stream: ReadableStream.from(chunks), offset: 0 });
}

/** A source that serves `bytes` from any offset, recording the offsets asked for. */
function seekable(bytes: Uint8Array, offsets: number[] = []): BlobSource {
  return (offset) => {
    offsets.push(offset);
    return Promise.resolve({ stream: ReadableStream.from([bytes.slice(offset)]), offset });
  };
}

/** A stream of `bytes` in 256 KiB chunks that errors after them. */
function breakingStream(bytes: Uint8Array): ReadableStream<Uint8Array> {
  let off = 0;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (off >= bytes.length) return c.error(new Error("connection reset"));
      c.enqueue(bytes.slice(off, off + 256 * 1024));
      off += 256 * 1024;
    },
  });
}

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let off = 0; off < n; off += 65536) {
    crypto.getRandomValues(out.subarray(off, Math.min(n, off + 65536)));
  }
  return out;
}

function descOf(bytes: Uint8Array, mediaType = "application/octet-stream"): Descriptor {
  return { mediaType, digest: fx.digestOf(bytes), size: bytes.length };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Files in the store's temp dir (absent dir counts as empty). */
async function tmpFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(join(dir, ".umoci-copy-tmp"))) out.push(e.name);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out;
}

async function withStore<T>(
  dir: string,
  fn: (s: LayoutStore) => Promise<T>,
  create = true,
): Promise<T> {
  const s = await LayoutStore.open(dir, { create });
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}

// ---------------------------------------------------------------------------------------
// Opening and creating

Deno.test("layout: opens a layout written by umoci and resolves its tag", async () => {
  await fx.withTempDir(async (tmp) => {
    const dir = join(tmp, "img");
    const desc = await fx.buildUmociImage(dir, "v1", { layers: 1 });
    await withStore(dir, async (s) => {
      const got = await s.resolve({ tag: "v1" });
      assert.equal(got.digest, desc.digest);
      assert.equal(got.size, desc.size);
      assert.equal(got.mediaType, desc.mediaType);
      const bytes = await s.fetchManifest(got);
      assert.equal(fx.digestOf(bytes), desc.digest);
    }, false);
  });
});

Deno.test("layout: create makes a new layout (parents too) on the first write, reopened without create", async () => {
  await fx.withTempDir(async (tmp) => {
    const dir = join(tmp, "a", "b", "new");
    const bytes = randomBytes(100);
    await withStore(dir, async (s) => {
      assert.deepEqual((await s.readIndex()).manifests, []);
      assert.equal(await s.exists(descOf(bytes)), false);
      // Nothing is on disk until something is written: a failed copy leaves nothing.
      assert.equal(await exists(join(tmp, "a")), false);
      await s.push(descOf(bytes), sourceOf(bytes));
    });
    const layout = JSON.parse(await Deno.readTextFile(join(dir, "oci-layout")));
    assert.deepEqual(layout, { imageLayoutVersion: "1.0.0" });
    const index = await fx.readIndex(dir);
    assert.equal(index.schemaVersion, 2);
    assert.deepEqual(index.manifests, []);
    assert.ok((await Deno.lstat(join(dir, "blobs", "sha256"))).isDirectory);
    assert.deepEqual(await Deno.readFile(fx.blobFile(dir, descOf(bytes).digest)), bytes);
    // Nothing left behind beside it.
    const siblings = [...Deno.readDirSync(join(tmp, "a", "b"))].map((e) => e.name);
    assert.deepEqual(siblings, ["new"]);
    await withStore(dir, async (s) => {
      assert.deepEqual((await s.readIndex()).manifests, []);
    }, false);
  });
});

Deno.test("layout: an empty directory becomes a layout with create, is refused without", async () => {
  await fx.withTempDir(async (tmp) => {
    const dir = join(tmp, "empty");
    await Deno.mkdir(dir);
    await assert.rejects(LayoutStore.open(dir), UserError);
    assert.deepEqual([...Deno.readDirSync(dir)], []);
    await withStore(dir, async () => {});
    assert.deepEqual([...Deno.readDirSync(dir)], [], "nothing written before the first write");
    const bytes = randomBytes(10);
    await withStore(dir, (s) => s.push(descOf(bytes), sourceOf(bytes)));
    assert.ok(await exists(join(dir, "oci-layout")));
    assert.ok(await exists(join(dir, "index.json")));
  });
});

Deno.test("layout: a missing path without create is NotFound and nothing is created", async () => {
  await fx.withTempDir(async (tmp) => {
    const dir = join(tmp, "missing");
    await assert.rejects(LayoutStore.open(dir), NotFoundError);
    assert.equal(await exists(dir), false);
    assert.deepEqual([...Deno.readDirSync(tmp)], []);
  });
});

Deno.test("layout: a non-empty non-layout directory is refused even with create, untouched", async () => {
  await fx.withTempDir(async (tmp) => {
    const dir = join(tmp, "notalayout");
    await Deno.mkdir(join(dir, "sub"), { recursive: true });
    await Deno.writeTextFile(join(dir, "hello.txt"), "hello\n");
    await Deno.writeTextFile(join(dir, "index.json"), '{"manifests":[]}');
    const before = await fx.snapshotTree(dir);
    await assert.rejects(LayoutStore.open(dir, { create: true }), UserError);
    await assert.rejects(LayoutStore.open(dir), UserError);
    assert.deepEqual(await fx.snapshotTree(dir), before);
    assert.deepEqual([...Deno.readDirSync(tmp)].map((e) => e.name), ["notalayout"]);
  });
});

Deno.test("layout: a regular file is refused even with create, untouched", async () => {
  await fx.withTempDir(async (tmp) => {
    const file = join(tmp, "file");
    await Deno.writeTextFile(file, "not a directory");
    await assert.rejects(LayoutStore.open(file, { create: true }), /not a directory/);
    assert.equal(await Deno.readTextFile(file), "not a directory");
  });
});

Deno.test("layout: imageLayoutVersion other than 1.0.0 is refused", async (t) => {
  for (
    const content of [
      '{"imageLayoutVersion":"1.1.0"}',
      '{"imageLayoutVersion":"2.0.0"}',
      '{"imageLayoutVersion":1}',
      "{}",
      "not json",
    ]
  ) {
    await t.step(content, async () => {
      await fx.withTempDir(async (tmp) => {
        const dir = join(tmp, "l");
        await fx.initLayout(dir);
        await Deno.writeTextFile(join(dir, "oci-layout"), content);
        await assert.rejects(LayoutStore.open(dir), UserError);
        await assert.rejects(LayoutStore.open(dir, { create: true }), UserError);
        assert.equal(await Deno.readTextFile(join(dir, "oci-layout")), content);
      });
    });
  }
});

Deno.test("layout: missing or malformed index.json is refused", async (t) => {
  for (const content of [null, "[", '{"schemaVersion":2}', '{"manifests":{}}', "null"]) {
    await t.step(String(content), async () => {
      await fx.withTempDir(async (tmp) => {
        const dir = join(tmp, "l");
        await fx.initLayout(dir);
        if (content === null) await Deno.remove(join(dir, "index.json"));
        else await Deno.writeTextFile(join(dir, "index.json"), content);
        await assert.rejects(LayoutStore.open(dir), UserError);
      });
    });
  }
});

Deno.test("layout: blobs/ as a symlink is refused", async () => {
  await fx.withTempDir(async (tmp) => {
    const dir = join(tmp, "l");
    const elsewhere = join(tmp, "elsewhere");
    await fx.initLayout(dir);
    await Deno.remove(join(dir, "blobs"), { recursive: true });
    await Deno.mkdir(join(elsewhere, "sha256"), { recursive: true });
    await Deno.symlink(elsewhere, join(dir, "blobs"));
    await assert.rejects(LayoutStore.open(dir), /symlink/);
    await assert.rejects(LayoutStore.open(dir, { create: true }), /symlink/);
    assert.deepEqual([...Deno.readDirSync(join(elsewhere, "sha256"))], []);
  });
});

Deno.test("layout: blobs/sha256 as a symlink is refused for every blob operation", async () => {
  await fx.withTempDir(async (tmp) => {
    const dir = join(tmp, "l");
    const elsewhere = join(tmp, "elsewhere");
    await fx.initLayout(dir);
    const bytes = enc.encode("some blob");
    const desc = descOf(bytes);
    // The target holds a valid blob, to show it is not served through the symlink either.
    await Deno.mkdir(elsewhere);
    await Deno.writeFile(join(elsewhere, desc.digest.slice(7)), bytes);
    await Deno.remove(join(dir, "blobs", "sha256"));
    await Deno.symlink(elsewhere, join(dir, "blobs", "sha256"));
    let store: LayoutStore | undefined;
    try {
      store = await LayoutStore.open(dir);
    } catch (e) {
      // Refusing at open is fine too.
      assert.match(String(e), /symlink/);
      return;
    }
    try {
      await assert.rejects(store.exists(desc), /symlink/);
      await assert.rejects(store.fetch(desc), /symlink/);
      await assert.rejects(store.fetchManifest(desc), /symlink/);
      await assert.rejects(
        store.push(descOf(enc.encode("x")), sourceOf(enc.encode("x"))),
        /symlink/,
      );
      await assert.rejects(store.resolve({ digest: desc.digest }), /symlink/);
      assert.deepEqual(
        [...Deno.readDirSync(elsewhere)].map((e) => e.name),
        [desc.digest.slice(7)],
      );
    } finally {
      await store.close();
    }
  });
});

// ---------------------------------------------------------------------------------------
// Blobs

Deno.test("layout: a pushed blob is verified and only appears under blobs/ once complete", async () => {
  await fx.withTempDir(async (tmp) => {
    const dir = join(tmp, "l");
    await withStore(dir, async (s) => {
      const part1 = randomBytes(1024 * 1024);
      const part2 = randomBytes(512 * 1024 + 7);
      const all = new Uint8Array(part1.length + part2.length);
      all.set(part1);
      all.set(part2, part1.length);
      const desc = descOf(all, "application/vnd.oci.image.layer.v1.tar");

      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      let halfWritten!: () => void;
      const half = new Promise<void>((r) => (halfWritten = r));
      let step = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(c) {
          if (step === 0) c.enqueue(part1);
          else if (step === 1) {
            await gate;
            c.enqueue(part2);
          } else c.close();
          step++;
        },
      });
      const pushing = s.push(desc, () => Promise.resolve({ stream: body, offset: 0 }), (n) => {
        if (n >= part1.length) halfWritten();
      });
      await half;
      // Mid-stream: half the bytes are on disk, but not under blobs/.
      assert.ok(!(await fx.listBlobs(dir)).includes(desc.digest));
      assert.equal(await s.exists(desc), false);
      assert.equal((await tmpFiles(dir)).length, 1);
      release();
      await pushing;
      assert.ok((await fx.listBlobs(dir)).includes(desc.digest));
      assert.equal(await s.exists(desc), true);
      assert.deepEqual(await Deno.readFile(fx.blobFile(dir, desc.digest)), all);
      assert.deepEqual(await tmpFiles(dir), []);
      // Pushing the same blob again is harmless.
      await s.push(desc, sourceOf(all));
      assert.deepEqual(await fx.verifyLayoutBlobs(dir), []);
    });
    assert.equal(await exists(join(dir, ".umoci-copy-tmp")), false, "temp dir removed on close");
  });
});

Deno.test("layout: content that does not match its descriptor never appears under blobs/", async (t) => {
  await fx.withTempDir(async (tmp) => {
    const dir = join(tmp, "l");
    await withStore(dir, async (s) => {
      const good = randomBytes(100_000);
      const other = randomBytes(100_000);
      const cases: [string, Descriptor, BlobSource][] = [
        ["wrong bytes, same size", descOf(good), sourceOf(other)],
        ["too long", descOf(good), sourceOf(good, enc.encode("x"))],
        ["too short", descOf(good), sourceOf(good.subarray(0, 99_999))],
        ["size lies", { ...descOf(good), size: 99_999 }, sourceOf(good)],
        ["empty", descOf(good), sourceOf()],
      ];
      for (const [name, desc, source] of cases) {
        await t.step(name, async () => {
          await assert.rejects(s.push(desc, source), DigestMismatchError);
          assert.deepEqual(await fx.listBlobs(dir), []);
          assert.equal(await s.exists(descOf(good)), false);
          // No unverified bytes are kept for a later resume either.
          for (const f of await tmpFiles(dir)) {
            assert.equal((await Deno.stat(join(dir, ".umoci-copy-tmp", f))).size, 0, f);
          }
        });
      }
      await t.step("a manifest pushed with wrong bytes", async () => {
        const m = enc.encode('{"schemaVersion":2}');
        await assert.rejects(
          s.pushManifest(descOf(m), enc.encode('{"schemaVersion":3}')),
          UserError,
        );
        assert.deepEqual(await fx.listBlobs(dir), []);
      });
      // The good content still goes in after all that.
      await s.push(descOf(good), sourceOf(good));
      assert.deepEqual(await fx.listBlobs(dir), [descOf(good).digest]);
      assert.deepEqual(await fx.verifyLayoutBlobs(dir), []);
    });
  });
});

Deno.test("layout: a source that breaks off is resumed from the last verified byte", async () => {
  await fx.withTempDir(async (tmp) => {
    const dir = join(tmp, "l");
    await withStore(dir, async (s) => {
      const bytes = randomBytes(3 * 1024 * 1024);
      const desc = descOf(bytes);
      const offsets: number[] = [];
      let calls = 0;
      const source: BlobSource = (offset) => {
        offsets.push(offset);
        if (calls++ === 0) {
          // 1.5 MiB, then the connection drops.
          return Promise.resolve({ stream: breakingStream(bytes.slice(0, 1536 * 1024)), offset });
        }
        return Promise.resolve({ stream: ReadableStream.from([bytes.slice(offset)]), offset });
      };
      await s.push(desc, source);
      assert.equal(offsets.length, 2);
      assert.equal(offsets[0], 0);
      assert.ok(offsets[1] > 0 && offsets[1] <= 1536 * 1024, `resumed at ${offsets[1]}`);
      assert.deepEqual(await Deno.readFile(fx.blobFile(dir, desc.digest)), bytes);
      assert.deepEqual(await tmpFiles(dir), []);
    });
  });
});

Deno.test("layout: a push that gives up keeps its partial outside blobs/; the next one resumes", async () => {
  await fx.withTempDir(async (tmp) => {
    const dir = join(tmp, "l");
    const bytes = randomBytes(3 * 1024 * 1024);
    const desc = descOf(bytes);
    await withStore(dir, async (s) => {
      const failing: BlobSource = (offset) =>
        Promise.resolve({
          stream: breakingStream(
            bytes.slice(offset, Math.min(bytes.length - 1, offset + 1536 * 1024)),
          ),
          offset,
        });
      await assert.rejects(s.push(desc, failing, undefined, { retries: 1 }), /broke off/);
      assert.deepEqual(await fx.listBlobs(dir), []);
      assert.equal(await s.exists(desc), false);
      const partials = await tmpFiles(dir);
      assert.equal(partials.length, 1);
      assert.ok((await Deno.stat(join(dir, ".umoci-copy-tmp", partials[0]))).size > 0);
    });
    // A new store (a new run) continues from the partial file.
    await withStore(dir, async (s) => {
      const offsets: number[] = [];
      await s.push(desc, seekable(bytes, offsets));
      assert.equal(offsets.length, 1);
      assert.ok(offsets[0] > 0, `resumed at ${offsets[0]}`);
      assert.deepEqual(await Deno.readFile(fx.blobFile(dir, desc.digest)), bytes);
      assert.deepEqual(await tmpFiles(dir), []);
    });
  });
});

Deno.test("layout: a corrupted partial file is not trusted: the push starts over", async () => {
  await fx.withTempDir(async (tmp) => {
    const dir = join(tmp, "l");
    const bytes = randomBytes(3 * 1024 * 1024);
    const desc = descOf(bytes);
    await withStore(dir, async (s) => {
      const failing: BlobSource = (offset) =>
        Promise.resolve({ stream: breakingStream(bytes.slice(offset, 2 * 1024 * 1024)), offset });
      await assert.rejects(s.push(desc, failing, undefined, { retries: 0 }), /broke off/);
    });
    const [partial] = await tmpFiles(dir);
    const path = join(dir, ".umoci-copy-tmp", partial);
    const kept = await Deno.readFile(path);
    assert.ok(kept.length > 0);
    kept[10] ^= 0xff;
    await Deno.writeFile(path, kept);
    await withStore(dir, async (s) => {
      const offsets: number[] = [];
      await s.push(desc, seekable(bytes, offsets));
      assert.equal(offsets.at(-1), 0, `started over: ${offsets}`);
      assert.deepEqual(await Deno.readFile(fx.blobFile(dir, desc.digest)), bytes);
      assert.deepEqual(await fx.verifyLayoutBlobs(dir), []);
    });
  });
});

Deno.test("layout: a full-size partial of wrong bytes (zero-filled after a crash) is written over, never published", async () => {
  // Found in review: after re-hashing a full-size partial that turned out wrong, the file
  // was truncated but its position stayed at the end, so the new bytes landed after a hole
  // and a file twice the size went under blobs/. Small (page cache) and large (direct I/O).
  for (const size of [100_000, 16 * 1024 * 1024 + 5]) {
    await fx.withTempDir(async (tmp) => {
      const dir = join(tmp, "l");
      const bytes = randomBytes(size);
      const desc = descOf(bytes);
      await withStore(dir, async (s) => {
        const small = enc.encode("x");
        await s.push(descOf(small), sourceOf(small)); // creates the layout
        await Deno.mkdir(join(dir, ".umoci-copy-tmp"), { recursive: true });
        const [, hex] = desc.digest.split(":");
        await Deno.writeFile(
          join(dir, ".umoci-copy-tmp", `sha256-${hex}.partial`),
          new Uint8Array(size),
        );
        await s.push(desc, seekable(bytes));
      });
      // Sizes and digests, not a byte diff (a diff of two large arrays exhausts memory).
      const stored = await Deno.readFile(fx.blobFile(dir, desc.digest));
      assert.equal(stored.length, size);
      assert.equal(fx.digestOf(stored), desc.digest);
      assert.deepEqual(await fx.verifyLayoutBlobs(dir), []);
      assert.deepEqual(await tmpFiles(dir), []);
    });
  }
});

Deno.test("layout: a push survives another writer's close() removing the empty temp dir", async () => {
  // Several processes write into one layout; each one's close() removes the shared temp
  // directory when it is empty. That can happen between another writer creating the
  // directory and opening its partial file in it: simulated here deterministically by
  // running a second store's close() right after the temp directory is created.
  await fx.withTempDir(async (tmp) => {
    const dir = join(tmp, "l");
    await fx.initLayout(dir);
    await withStore(dir, async (s) => {
      const other = await LayoutStore.open(dir);
      const deno = Deno as { mkdir: typeof Deno.mkdir };
      const realMkdir = deno.mkdir;
      let raced = 0;
      deno.mkdir = async (path, opts) => {
        await realMkdir(path, opts);
        if (String(path).endsWith(".umoci-copy-tmp") && raced++ === 0) await other.close();
      };
      try {
        const bytes = randomBytes(1000);
        await s.push(descOf(bytes), sourceOf(bytes));
        assert.equal(await s.exists(descOf(bytes)), true);
      } finally {
        deno.mkdir = realMkdir;
      }
      assert.ok(raced > 0, "the store made its temp dir with Deno.mkdir (test premise)");
    });
  });
});

const BAD_DIGESTS = [
  "sha256:../../etc/passwd",
  "sha256:../../../../../../tmp/x",
  "sha256/../../etc/passwd",
  `sha256:${"A".repeat(64)}`,
  `sha256:${"a".repeat(63)}F`,
  "sha256:abc",
  `sha256:${"a".repeat(63)}`,
  `sha256:${"a".repeat(65)}`,
  `md5:${"a".repeat(32)}`,
  `sha1:${"a".repeat(40)}`,
  `SHA256:${"a".repeat(64)}`,
  `sha256:${"a".repeat(62)}/a`,
  `sha256:${"a".repeat(64)}\n`,
  `:${"a".repeat(64)}`,
  "",
];

Deno.test("layout: malformed, uppercase, short and unknown-algorithm digests are refused", async (t) => {
  await fx.withTempDir(async (tmp) => {
    const dir = join(tmp, "l");
    await fx.buildRandomImage(dir, "ok", { layerSizes: [100] });
    const indexBefore = await Deno.readTextFile(join(dir, "index.json"));
    const treeBefore = await fx.snapshotTree(tmp);
    await withStore(dir, async (s) => {
      for (const digest of BAD_DIGESTS) {
        await t.step(JSON.stringify(digest), async () => {
          const desc: Descriptor = { mediaType: fx.OCI_MANIFEST, digest, size: 1 };
          await assert.rejects(s.blobPath(digest), UserError);
          await assert.rejects(s.blobPath(digest, true), UserError);
          await assert.rejects(s.exists(desc), UserError);
          await assert.rejects(s.fetch(desc), UserError);
          await assert.rejects(s.fetchManifest(desc), UserError);
          await assert.rejects(s.push(desc, sourceOf(enc.encode("x"))), UserError);
          await assert.rejects(s.pushManifest(desc, enc.encode("x")), UserError);
          await assert.rejects(s.resolve({ digest }), UserError);
          await assert.rejects(s.tag(desc, "bad"), UserError);
        });
      }
    });
    assert.equal(await Deno.readTextFile(join(dir, "index.json")), indexBefore);
    assert.deepEqual(await fx.snapshotTree(tmp), treeBefore);
  });
});

Deno.test("layout: an index.json entry with a bad digest is refused when resolved", async () => {
  await fx.withTempDir(async (tmp) => {
    const dir = join(tmp, "l");
    await fx.initLayout(dir);
    await fx.appendIndexEntry(dir, {
      mediaType: fx.OCI_MANIFEST,
      digest: "sha256:../../../etc/passwd",
      size: 10,
      annotations: { [fx.REF_NAME]: "evil" },
    });
    await withStore(dir, async (s) => {
      await assert.rejects(s.resolve({ tag: "evil" }), UserError);
    }, false);
  });
});

// ---------------------------------------------------------------------------------------
// Resolving and tagging

Deno.test("layout: tag replaces entries with that tag and keeps all others", async () => {
  await fx.withTempDir(async (tmp) => {
    const dir = join(tmp, "l");
    const m1 = (await fx.buildRandomImage(dir, undefined, { layerSizes: [10] })).manifest;
    const m2 = (await fx.buildRandomImage(dir, undefined, { layerSizes: [10] })).manifest;
    const m3 = (await fx.buildRandomImage(dir, undefined, { layerSizes: [10] })).manifest;
    // An untagged entry and one with another annotation must survive.
    await fx.appendIndexEntry(dir, { ...m1, annotations: { "com.example.note": "untagged" } });
    await withStore(dir, async (s) => {
      await s.tag(m1, "a");
      await s.tag(m2, "b");
      await s.tag({ ...m3, platform: { os: "linux", architecture: "arm64" } }, "a");
      assert.equal((await s.resolve({ tag: "a" })).digest, m3.digest);
      assert.equal((await s.resolve({ tag: "b" })).digest, m2.digest);
      await s.tag(m2, "b"); // same again: still one entry
    }, false);
    const index = await fx.readIndex(dir);
    assert.equal(index.manifests.length, 3);
    const a = index.manifests.filter((m) => m.annotations?.[fx.REF_NAME] === "a");
    assert.equal(a.length, 1);
    assert.equal(a[0].digest, m3.digest);
    assert.deepEqual(a[0].platform, { os: "linux", architecture: "arm64" });
    assert.equal(a[0].size, m3.size);
    assert.equal(a[0].mediaType, fx.OCI_MANIFEST);
    assert.ok(index.manifests.some((m) => m.annotations?.["com.example.note"] === "untagged"));
    assert.equal(
      index.manifests.filter((m) => m.annotations?.[fx.REF_NAME] === "b").length,
      1,
    );
  });
});

Deno.test("layout: tagging content that is not present is refused, index.json unchanged", async () => {
  await fx.withTempDir(async (tmp) => {
    const dir = join(tmp, "l");
    await fx.buildRandomImage(dir, "keep", { layerSizes: [10] });
    const before = await Deno.readTextFile(join(dir, "index.json"));
    await withStore(dir, async (s) => {
      await assert.rejects(s.tag(descOf(enc.encode("absent"), fx.OCI_MANIFEST), "x"), UserError);
    }, false);
    assert.equal(await Deno.readTextFile(join(dir, "index.json")), before);
  });
});

Deno.test("layout: concurrent tag updates from several store instances keep every tag", async () => {
  await fx.withTempDir(async (tmp) => {
    const dir = join(tmp, "l");
    const images: Descriptor[] = [];
    for (let i = 0; i < 8; i++) {
      images.push((await fx.buildRandomImage(dir, undefined, { layerSizes: [10] })).manifest);
    }
    const stores = await Promise.all(images.map(() => LayoutStore.open(dir)));
    try {
      await Promise.all(stores.map((s, i) => s.tag(images[i], `t${i}`)));
    } finally {
      for (const s of stores) await s.close();
    }
    assert.deepEqual(await fx.listTags(dir), images.map((_, i) => `t${i}`));
  });
});

Deno.test("layout: an ambiguous tag is an error naming the candidates", async () => {
  await fx.withTempDir(async (tmp) => {
    const dir = join(tmp, "l");
    const m1 = (await fx.buildRandomImage(dir, undefined, { layerSizes: [10] })).manifest;
    const m2 = (await fx.buildRandomImage(dir, undefined, { layerSizes: [10] })).manifest;
    await fx.appendIndexEntry(dir, { ...m1, annotations: { [fx.REF_NAME]: "dup" } });
    await fx.appendIndexEntry(dir, { ...m2, annotations: { [fx.REF_NAME]: "dup" } });
    // The same digest twice under one tag is not ambiguous.
    await fx.appendIndexEntry(dir, { ...m1, annotations: { [fx.REF_NAME]: "twice" } });
    await fx.appendIndexEntry(dir, { ...m1, annotations: { [fx.REF_NAME]: "twice" } });
    await withStore(dir, async (s) => {
      const err = await s.resolve({ tag: "dup" }).then(() => null, (e) => e);
      assert.ok(err instanceof UserError, String(err));
      assert.ok(!(err instanceof NotFoundError));
      assert.match(err.message, /ambiguous/);
      assert.ok(err.message.includes(m1.digest) && err.message.includes(m2.digest));
      assert.equal((await s.resolve({ tag: "twice" })).digest, m1.digest);
    }, false);
  });
});

Deno.test("layout: resolve by tag, default tag, and by digest", async () => {
  await fx.withTempDir(async (tmp) => {
    const dir = join(tmp, "l");
    const latest = (await fx.buildRandomImage(dir, "latest", { layerSizes: [10] })).manifest;
    const untagged = await fx.buildMultiPlatformIndex(dir, undefined, ["linux/amd64"]);
    const layer = (await fx.buildRandomImage(dir, undefined, { layerSizes: [10] })).layers[0];
    await withStore(dir, async (s) => {
      assert.equal((await s.resolve({})).digest, latest.digest);
      await assert.rejects(s.resolve({ tag: "nope" }), NotFoundError);
      // By digest: in index.json, or only a blob (media type read from the document).
      assert.equal((await s.resolve({ digest: latest.digest })).digest, latest.digest);
      const idx = await s.resolve({ digest: untagged.index.digest });
      assert.equal(idx.mediaType, fx.OCI_INDEX);
      assert.equal(idx.size, untagged.index.size);
      await assert.rejects(
        s.resolve({ digest: fx.digestOf(enc.encode("nothing")) }),
        NotFoundError,
      );
      // A layer is not a manifest.
      await assert.rejects(s.resolve({ digest: layer.digest }), UserError);
    }, false);
  });
});

Deno.test("layout: fetchManifest verifies the bytes it returns", async () => {
  await fx.withTempDir(async (tmp) => {
    const dir = join(tmp, "l");
    const m = (await fx.buildRandomImage(dir, "t", { layerSizes: [10] })).manifest;
    const path = fx.blobFile(dir, m.digest);
    const bytes = await Deno.readFile(path);
    bytes[bytes.length - 2] ^= 1;
    await Deno.writeFile(path, bytes);
    await withStore(dir, async (s) => {
      await assert.rejects(s.fetchManifest(m), DigestMismatchError);
    }, false);
  });
});

// ---------------------------------------------------------------------------------------
// copyGraph between two layouts

/** Children a manifest or index needs before it may be written. */
function childrenOf(bytes: Uint8Array): string[] {
  const doc = JSON.parse(new TextDecoder().decode(bytes));
  if (Array.isArray(doc.manifests)) return doc.manifests.map((m: Descriptor) => m.digest);
  return [doc.config?.digest, ...(doc.layers ?? []).map((l: Descriptor) => l.digest)].filter(
    Boolean,
  );
}

/** A store that records what is asked of it, delegating to a layout. */
class Recording implements Store {
  readonly local = true;
  fetches: string[] = [];
  manifestFetches: string[] = [];
  pushes: string[] = [];
  /** Problems seen: a manifest pushed while one of its children was not stored yet. */
  violations: string[] = [];
  constructor(readonly inner: LayoutStore) {}
  get name() {
    return `recording ${this.inner.name}`;
  }
  resolve(ref: { tag?: string; digest?: string }) {
    return this.inner.resolve(ref);
  }
  exists(desc: Descriptor) {
    return this.inner.exists(desc);
  }
  fetch(desc: Descriptor, offset?: number) {
    this.fetches.push(desc.digest);
    return this.inner.fetch(desc, offset);
  }
  fetchManifest(desc: Descriptor) {
    this.manifestFetches.push(desc.digest);
    return this.inner.fetchManifest(desc);
  }
  async push(desc: Descriptor, source: BlobSource, p?: (n: number) => void) {
    await this.inner.push(desc, source, p);
    this.pushes.push(desc.digest);
  }
  async pushManifest(desc: Descriptor, bytes: Uint8Array, tag?: string) {
    for (const child of childrenOf(bytes)) {
      const there = await Deno.lstat(fx.blobFile(this.inner.path, child)).then(
        () => true,
        () => false,
      );
      if (!there) this.violations.push(`${desc.digest} pushed before its child ${child}`);
    }
    await this.inner.pushManifest(desc, bytes, tag);
    this.pushes.push(desc.digest);
  }
  tag(desc: Descriptor, tag: string) {
    return this.inner.tag(desc, tag);
  }
  close() {
    return this.inner.close();
  }
}

async function withTwoStores<T>(
  fn: (src: LayoutStore, dst: LayoutStore, srcDir: string, dstDir: string) => Promise<T>,
  build: (srcDir: string) => Promise<unknown>,
): Promise<T> {
  return await fx.withTempDir(async (tmp) => {
    const srcDir = join(tmp, "src");
    const dstDir = join(tmp, "dst");
    await build(srcDir);
    const src = await LayoutStore.open(srcDir);
    try {
      const dst = await LayoutStore.open(dstDir, { create: true });
      try {
        return await fn(src, dst, srcDir, dstDir);
      } finally {
        await dst.close();
      }
    } finally {
      await src.close();
    }
  });
}

async function assertCopied(srcDir: string, dstDir: string, root: Descriptor): Promise<void> {
  const want = await fx.reachableDigests(srcDir, root);
  const got = await fx.reachableDigests(dstDir, root);
  assert.deepEqual([...got].sort(), [...want].sort());
  for (const d of want) {
    assert.deepEqual(
      await Deno.readFile(fx.blobFile(dstDir, d)),
      await Deno.readFile(fx.blobFile(srcDir, d)),
      `${d} byte-identical`,
    );
  }
  assert.deepEqual(await fx.verifyLayoutBlobs(dstDir), []);
}

Deno.test("copyGraph: multi-platform index, every child stored before its parent", async () => {
  let built!: fx.BuiltIndex;
  await withTwoStores(async (src, dst, srcDir, dstDir) => {
    const rec = new Recording(dst);
    const stats = await copyGraph(src, rec, built.index, { jobs: 3 });
    assert.deepEqual(rec.violations, []);
    // The index last, each manifest after its config and layers.
    assert.equal(rec.pushes.at(-1), built.index.digest);
    for (const m of built.manifests) {
      const bytes = await Deno.readFile(fx.blobFile(srcDir, m.digest));
      const at = rec.pushes.indexOf(m.digest);
      assert.ok(at >= 0);
      for (const c of childrenOf(bytes)) {
        assert.ok(rec.pushes.indexOf(c) < at, `${c} before ${m.digest}`);
      }
    }
    // The shared base layer is transferred once.
    assert.equal(rec.pushes.filter((d) => d === built.baseLayer.digest).length, 1);
    assert.equal(new Set(rec.pushes).size, rec.pushes.length, "nothing pushed twice");
    assert.equal(stats.blobsCopied, 7); // base + 3 own layers + 3 configs
    assert.equal(stats.manifestsCopied, 4);
    await assertCopied(srcDir, dstDir, built.index);
  }, async (dir) => {
    built = await fx.buildMultiPlatformIndex(dir, "mp", [
      "linux/amd64",
      "linux/arm64/v8",
      "linux/ppc64le",
    ]);
  });
});

Deno.test("copyGraph: what the destination has is skipped without reading the source", async () => {
  let built!: fx.BuiltIndex;
  await withTwoStores(async (src, dst, srcDir, dstDir) => {
    await copyGraph(src, dst, built.index);
    const rec = new Recording(src);
    const stats = await copyGraph(rec, dst, built.index);
    assert.deepEqual(rec.fetches, [], "no blob read from the source");
    assert.equal(stats.blobsCopied, 0);
    assert.equal(stats.bytesCopied, 0);
    assert.equal(stats.blobsSkipped, 5); // base + 2 own layers + 2 configs
    assert.equal(stats.manifestsCopied, 0);

    // Remove one layer from the destination: only that one is read again.
    const own = JSON.parse(await Deno.readTextFile(fx.blobFile(srcDir, built.manifests[1].digest)))
      .layers[1] as Descriptor;
    await Deno.remove(fx.blobFile(dstDir, own.digest));
    const rec2 = new Recording(src);
    const stats2 = await copyGraph(rec2, dst, built.index);
    assert.deepEqual(rec2.fetches, [own.digest]);
    assert.equal(stats2.blobsCopied, 1);
    assert.equal(stats2.bytesCopied, own.size);
    await assertCopied(srcDir, dstDir, built.index);
  }, async (dir) => {
    built = await fx.buildMultiPlatformIndex(dir, "mp", ["linux/amd64", "linux/arm64"]);
  });
});

Deno.test("copyGraph: large blobs run --jobs at a time, largest first; small ones 2×jobs beside them", async () => {
  let built!: fx.BuiltImage;
  await withTwoStores(async (src, dst, srcDir, dstDir) => {
    const rec = new Recording(dst);
    const active = { large: 0, small: 0 };
    const most = { large: 0, small: 0 };
    const started: number[] = [];
    let smallDoneBeforeLarge = false;
    rec.push = async (desc, source, p) => {
      const lane = desc.size >= 1024 * 1024 ? "large" : "small";
      started.push(desc.size);
      active[lane]++;
      most[lane] = Math.max(most[lane], active[lane]);
      try {
        // Slow enough that lanes overlap if they can.
        await new Promise((r) => setTimeout(r, lane === "large" ? 60 : 10));
        await dst.push(desc, source, p);
      } finally {
        active[lane]--;
      }
      if (lane === "small" && active.large > 0) smallDoneBeforeLarge = true;
    };
    await copyGraph(src, rec, built.manifest, { jobs: 1 });
    assert.equal(most.large, 1, "one large blob at a time with jobs 1");
    assert.equal(most.small, 2, "two small blobs at a time with jobs 1");
    assert.ok(smallDoneBeforeLarge, "small blobs (the config) do not wait for the large ones");
    const large = started.filter((n) => n >= 1024 * 1024);
    assert.deepEqual(large, [...large].sort((a, b) => b - a), "largest first");
    await assertCopied(srcDir, dstDir, built.manifest);
  }, async (dir) => {
    built = await fx.buildRandomImage(dir, "v1", {
      layerSizes: [2 * 1024 * 1024, 3 * 1024 * 1024, 1024 * 1024 + 1, 1000, 2000, 3000],
      raw: true,
    });
  });
});

Deno.test("copyGraph: nested index (index → index → manifests)", async () => {
  let built!: fx.BuiltNestedIndex;
  await withTwoStores(async (src, dst, srcDir, dstDir) => {
    const rec = new Recording(dst);
    const stats = await copyGraph(src, rec, built.root);
    assert.deepEqual(rec.violations, []);
    assert.equal(rec.pushes.at(-1), built.root.digest);
    assert.ok(rec.pushes.indexOf(built.inner.index.digest) < rec.pushes.indexOf(built.root.digest));
    assert.equal(stats.manifestsCopied, 5); // 2 indexes, 2 platform manifests, 1 direct
    await assertCopied(srcDir, dstDir, built.root);
  }, async (dir) => {
    built = await fx.buildNestedIndex(dir, "nested", ["linux/amd64", "linux/arm64"]);
  });
});

Deno.test("copyGraph: OCI 1.1 artifact with a subject brings the subject along", async () => {
  let subject!: Descriptor;
  let art!: Awaited<ReturnType<typeof fx.buildArtifact>>;
  await withTwoStores(async (src, dst, srcDir, dstDir) => {
    const rec = new Recording(dst);
    await copyGraph(src, rec, art.manifest);
    assert.deepEqual(rec.violations, []);
    for (const d of [art.manifest, art.payload, art.config, subject]) {
      assert.equal(await dst.exists(d), true, `${d.mediaType} ${d.digest} copied`);
    }
    assert.deepEqual(
      await Deno.readFile(fx.blobFile(dstDir, art.config.digest)),
      enc.encode("{}"),
    );
    await assertCopied(srcDir, dstDir, art.manifest);
    const doc = JSON.parse(await Deno.readTextFile(fx.blobFile(dstDir, art.manifest.digest)));
    assert.equal(doc.artifactType, "application/vnd.example.sbom.v1+json");
    assert.equal(doc.subject.digest, subject.digest);
  }, async (dir) => {
    subject = (await fx.buildRandomImage(dir, "app", { layerSizes: [100] })).manifest;
    art = await fx.buildArtifact(dir, "sbom", { subject });
  });
});

Deno.test("copyGraph: a failure to check an artifact's subject fails the copy; it is not taken for absent", async () => {
  let subject!: Descriptor;
  let art!: Awaited<ReturnType<typeof fx.buildArtifact>>;
  await withTwoStores(async (src, dst) => {
    // The source answers everything but the check of the subject (a registry's 500, a
    // timeout): the copy used to go on without the subject, exit 0.
    const flaky = new Proxy(src, {
      get(target, prop) {
        if (prop === "exists") {
          return (d: Descriptor) =>
            d.digest === subject.digest
              ? Promise.reject(new UserError("HEAD of the subject: 500 Internal Server Error"))
              : target.exists(d);
        }
        const v = Reflect.get(target, prop);
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
    await assert.rejects(copyGraph(flaky, dst, art.manifest), /HEAD of the subject: 500/);
    assert.equal(await dst.exists(art.manifest), false, "the artifact is not published");
  }, async (dir) => {
    subject = (await fx.buildRandomImage(dir, "app", { layerSizes: [100] })).manifest;
    art = await fx.buildArtifact(dir, "sbom", { subject });
  });
});

Deno.test("copyGraph: an artifact whose subject the source lacks still copies", async () => {
  let art!: Awaited<ReturnType<typeof fx.buildArtifact>>;
  const absent = descOf(enc.encode('{"not":"here"}'), fx.OCI_MANIFEST);
  await withTwoStores(async (src, dst, srcDir, dstDir) => {
    await copyGraph(src, dst, art.manifest);
    assert.equal(await dst.exists(art.manifest), true);
    assert.equal(await dst.exists(absent), false);
    await assertCopied(srcDir, dstDir, art.manifest);
  }, async (dir) => {
    art = await fx.buildArtifact(dir, "sig", {
      subject: absent,
      artifactType: "application/vnd.example.signature",
    });
  });
});

Deno.test("copyGraph: Docker schema2 manifest list and manifest", async () => {
  let list!: fx.BuiltIndex;
  let single!: fx.BuiltImage;
  await withTwoStores(async (src, dst, srcDir, dstDir) => {
    const rec = new Recording(dst);
    await copyGraph(src, rec, list.index);
    await copyGraph(src, rec, single.manifest);
    assert.deepEqual(rec.violations, []);
    await assertCopied(srcDir, dstDir, list.index);
    await assertCopied(srcDir, dstDir, single.manifest);
  }, async (dir) => {
    list = await fx.buildDockerManifestList(dir, "list", ["linux/amd64", "linux/arm/v7"]);
    single = await fx.buildRandomImage(dir, "single", { layerSizes: [3000], mediaType: "docker" });
  });
});

Deno.test("copyGraph: blobs of unknown media types are copied as opaque bytes", async () => {
  let root!: Descriptor;
  await withTwoStores(async (src, dst, srcDir, dstDir) => {
    const stats = await copyGraph(src, dst, root);
    assert.equal(stats.blobsCopied, 3);
    await assertCopied(srcDir, dstDir, root);
  }, async (dir) => {
    await fx.initLayout(dir);
    const cfg = enc.encode('{"whatever": true}');
    const a = randomBytes(5000);
    const b = randomBytes(10);
    root = await fx.writeManifest(dir, {
      schemaVersion: 2,
      mediaType: fx.OCI_MANIFEST,
      config: {
        mediaType: "application/vnd.example.config.v1+json",
        digest: await fx.writeBlob(dir, cfg),
        size: cfg.length,
      },
      layers: [
        {
          mediaType: "application/vnd.example.unknown+octet",
          digest: await fx.writeBlob(dir, a),
          size: a.length,
        },
        { mediaType: "text/plain", digest: await fx.writeBlob(dir, b), size: b.length },
      ],
    });
  });
});

Deno.test("copyGraph: a document with both layers and manifests is refused", async (t) => {
  for (const mediaType of [fx.OCI_MANIFEST, fx.OCI_INDEX]) {
    await t.step(mediaType, async () => {
      let root!: Descriptor;
      let img!: fx.BuiltImage;
      await withTwoStores(async (src, dst, _srcDir, dstDir) => {
        await assert.rejects(copyGraph(src, dst, root), /both a manifest and an index/);
        assert.equal(await dst.exists(root), false);
        assert.ok(!(await fx.listBlobs(dstDir)).includes(root.digest));
      }, async (dir) => {
        img = await fx.buildRandomImage(dir, undefined, { layerSizes: [10] });
        root = await fx.writeManifest(dir, {
          schemaVersion: 2,
          mediaType,
          config: img.config,
          layers: img.layers,
          manifests: [img.manifest],
        });
      });
    });
  }
});

Deno.test("copyGraph: Docker schema1 is refused", async (t) => {
  const schema1 = {
    schemaVersion: 1,
    name: "library/x",
    tag: "latest",
    architecture: "amd64",
    fsLayers: [{ blobSum: `sha256:${"a".repeat(64)}` }],
    history: [{ v1Compatibility: "{}" }],
  };
  await t.step("schema1 media type", async () => {
    let root!: Descriptor;
    await withTwoStores(async (src, dst, _s, dstDir) => {
      await assert.rejects(copyGraph(src, dst, root), /schema1/);
      assert.deepEqual(await fx.listBlobs(dstDir), []);
    }, async (dir) => {
      await fx.initLayout(dir);
      root = await fx.writeManifest(dir, schema1, fx.DOCKER_SCHEMA1_SIGNED);
    });
  });
  await t.step("schema1 content behind a schema2 media type", async () => {
    let root!: Descriptor;
    await withTwoStores(async (src, dst, _s, dstDir) => {
      await assert.rejects(copyGraph(src, dst, root), /schema1/);
      assert.deepEqual(await fx.listBlobs(dstDir), []);
    }, async (dir) => {
      await fx.initLayout(dir);
      root = await fx.writeManifest(dir, schema1, fx.DOCKER_MANIFEST);
    });
  });
  await t.step("schema1 child of a manifest list", async () => {
    let root!: Descriptor;
    await withTwoStores(async (src, dst, _s, dstDir) => {
      await assert.rejects(copyGraph(src, dst, root), /schema1/);
      assert.ok(!(await fx.listBlobs(dstDir)).includes(root.digest));
    }, async (dir) => {
      await fx.initLayout(dir);
      const child = await fx.writeManifest(dir, schema1, fx.DOCKER_SCHEMA1_SIGNED);
      root = await fx.writeManifest(dir, {
        schemaVersion: 2,
        mediaType: fx.DOCKER_LIST,
        manifests: [{ ...child, platform: { os: "linux", architecture: "amd64" } }],
      });
    });
  });
});

Deno.test("copyGraph: a corrupt source layer is refused and its manifest not written", async () => {
  let img!: fx.BuiltImage;
  await withTwoStores(async (src, dst, _srcDir, dstDir) => {
    await assert.rejects(copyGraph(src, dst, img.manifest), DigestMismatchError);
    const blobs = await fx.listBlobs(dstDir);
    assert.ok(!blobs.includes(img.layers[0].digest));
    assert.ok(!blobs.includes(img.manifest.digest));
    assert.deepEqual(await fx.verifyLayoutBlobs(dstDir), []);
  }, async (dir) => {
    img = await fx.buildRandomImage(dir, "t", { layerSizes: [20_000] });
    const path = fx.blobFile(dir, img.layers[0].digest);
    const bytes = await Deno.readFile(path);
    bytes[1000] ^= 0xff; // inside the random payload, same size
    await Deno.writeFile(path, bytes);
  });
});

Deno.test("copyGraph: a manifest whose mediaType contradicts its descriptor is refused", async () => {
  let root!: Descriptor;
  await withTwoStores(async (src, dst) => {
    await assert.rejects(copyGraph(src, dst, root), /contradicts/);
    assert.equal(await dst.exists(root), false);
  }, async (dir) => {
    const img = await fx.buildRandomImage(dir, undefined, { layerSizes: [10] });
    // An image manifest, announced as an index.
    root = { ...img.manifest, mediaType: fx.OCI_INDEX };
  });
});
