// Unit tests of the tar code (src/store/tar.ts) against GNU tar, and of the archive store
// (src/store/archive.ts) driven directly: reading by offset, writing into reserved places,
// publishing only on commit, carrying an existing archive over.
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  BLOCK,
  encodeHeader,
  END_OF_ARCHIVE,
  headerLength,
  padded,
  TarHeaderReader,
  type TarMember,
} from "../src/store/tar.ts";
import { ArchiveStore } from "../src/store/archive.ts";
import { LayoutStore } from "../src/store/layout.ts";
import { copyGraph } from "../src/copy.ts";
import { UsageError } from "../src/errors.ts";

import { formatReference, parseReference } from "../src/reference.ts";
import { checkAllTagsReferences, isDigestTag } from "../src/cli/all_tags.ts";
import * as fx from "./fixtures/images.ts";

const enc = new TextEncoder();

/** Every member of the tar file at `path`, through our reader. */
async function members(path: string): Promise<TarMember[]> {
  const bytes = await Deno.readFile(path);
  const reader = new TarHeaderReader((o, n) => Promise.resolve(bytes.subarray(o, o + n)));
  const out: TarMember[] = [];
  for (let m = await reader.next(); m; m = await reader.next()) out.push(m);
  return out;
}

/** A tar of `files` written with our headers, as the archive writer lays it out. */
function ourTar(files: [string, Uint8Array][]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const [name, data] of files) {
    parts.push(encodeHeader(name, data.length, "file"), data);
    parts.push(new Uint8Array(padded(data.length) - data.length));
  }
  parts.push(END_OF_ARCHIVE);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

Deno.test("tar: GNU tar lists and extracts what our headers describe, long names too", async () => {
  await fx.withTempDir(async (tmp) => {
    const long = `blobs/sha512/${"ab".repeat(64)}`; // 141 bytes: ustar prefix + name
    const longer = `${"d".repeat(120)}/${"f".repeat(120)}`; // needs a pax path record
    const files: [string, Uint8Array][] = [
      ["oci-layout", enc.encode('{"imageLayoutVersion":"1.0.0"}')],
      [long, enc.encode("x".repeat(1000))],
      [longer, enc.encode("y".repeat(513))],
      ["empty", new Uint8Array(0)],
    ];
    const tarFile = join(tmp, "t.tar");
    await Deno.writeFile(tarFile, ourTar(files));
    const listing = await fx.mustRun("tar", ["-tvf", tarFile]);
    for (const [name] of files) assert.ok(listing.stdout.includes(name), `${name} listed`);
    await fx.untar(tarFile, join(tmp, "x"));
    for (const [name, data] of files) {
      assert.deepEqual(await Deno.readFile(join(tmp, "x", name)), data, `${name} extracted`);
    }
    // And our reader agrees, with every data offset right.
    const bytes = await Deno.readFile(tarFile);
    const read = await members(tarFile);
    assert.deepEqual(read.map((m) => m.name), files.map(([n]) => n));
    for (const [i, m] of read.entries()) {
      assert.equal(m.size, files[i][1].length);
      assert.deepEqual(bytes.subarray(m.dataOffset, m.dataOffset + m.size), files[i][1]);
      assert.equal(m.dataOffset - m.headerOffset, headerLength(m.name, m.size));
    }
  });
});

Deno.test("tar: sizes of 8 GiB and more get a pax size record; headerLength predicts it", async () => {
  const size = 9 * 1024 ** 3 + 7;
  const header = encodeHeader("blobs/sha256/" + "0".repeat(64), size, "file");
  assert.equal(header.length, headerLength("blobs/sha256/" + "0".repeat(64), size));
  assert.equal(header.length, 3 * BLOCK);
  assert.equal(headerLength("a", 0o77777777777), BLOCK);
  const reader = new TarHeaderReader((o, n) => Promise.resolve(header.subarray(o, o + n)));
  const m = await reader.next();
  assert.equal(m?.size, size);
  assert.equal(m?.dataOffset, 3 * BLOCK);
  assert.equal(reader.offset, 3 * BLOCK + padded(size));
});

Deno.test("tar: GNU, pax, ustar and v7 archives by GNU tar are read; ./ dropped, hard links", async () => {
  await fx.withTempDir(async (tmp) => {
    const dir = join(tmp, "d");
    const longDir = join(tmp, "long");
    await Deno.mkdir(join(dir, "blobs", "sha256"), { recursive: true });
    await Deno.mkdir(longDir);
    const long = "n".repeat(150);
    await Deno.writeTextFile(join(dir, "index.json"), "{}");
    await Deno.writeTextFile(join(longDir, long), "long name");
    await Deno.writeFile(join(dir, "blobs", "sha256", "big"), new Uint8Array(70_000).fill(7));
    // A second name of the same file: tar stores it as a hard link to the first.
    await Deno.link(join(dir, "blobs", "sha256", "big"), join(dir, "blobs", "sha256", "same"));
    for (const format of ["gnu", "pax", "ustar", "v7"]) {
      const t = join(tmp, `${format}.tar`);
      const withLong = format === "gnu" || format === "pax";
      await fx.mustRun("tar", [
        `--format=${format}`,
        "-cf",
        t,
        "-C",
        dir,
        ".",
        ...(withLong ? ["-C", longDir, long] : []),
      ]);
      const bytes = await Deno.readFile(t);
      const got = new Map((await members(t)).map((m) => [m.name, m]));
      // Whichever name tar met first holds the data; the other is a link to it.
      const [big, link] = ["big", "same"].map((n) => got.get(`blobs/sha256/${n}`)!)
        .sort((a) => a.type === "file" ? -1 : 1);
      assert.ok(big, `${format}: blob found among ${[...got.keys()]}`);
      assert.equal(big.type, "file");
      assert.equal(link.type, "hardlink");
      assert.equal(link.linkName, big.name);
      assert.equal(big.size, 70_000);
      assert.ok(bytes.subarray(big.dataOffset, big.dataOffset + big.size).every((b) => b === 7));
      assert.equal(got.get("blobs")?.type, "dir");
      if (withLong) assert.equal(got.get(long)?.size, 9, `${format}: long name`);
    }
  });
});

Deno.test("tar: a header with a wrong checksum is refused", async () => {
  const tar = ourTar([["index.json", enc.encode("{}")]]);
  tar[10] ^= 0xff;
  const reader = new TarHeaderReader((o, n) => Promise.resolve(tar.subarray(o, o + n)));
  await assert.rejects(() => reader.next(), /checksum/);
});

/** A layout with two tagged images, and the same as an archive written by our store. */
async function archiveOf(tmp: string): Promise<{ layout: string; archive: string }> {
  const layout = join(tmp, "layout");
  await fx.buildRandomImage(layout, "v1", { layerSizes: [200_000, 3_000] });
  await fx.buildMultiPlatformIndex(layout, "multi", ["linux/amd64", "linux/arm64"]);
  const archive = join(tmp, "a.tar");
  const src = await LayoutStore.open(layout);
  const dst = await ArchiveStore.open(archive, { create: true });
  try {
    for (const tag of ["v1", "multi"]) {
      const root = await src.resolve({ tag });
      await copyGraph(src, dst, root, { rootTag: tag });
    }
    await dst.commit();
  } finally {
    await dst.close();
    await src.close();
  }
  return { layout, archive };
}

Deno.test("archive store: written, read back by offset, content identical to the layout", async () => {
  await fx.withTempDir(async (tmp) => {
    const { layout, archive } = await archiveOf(tmp);
    const names = (await members(archive)).map((m) => m.name);
    assert.deepEqual(names.slice(-2), ["index.json", "oci-layout"]);
    for (const digest of await fx.listBlobs(layout)) {
      assert.ok(names.includes(`blobs/${digest.replace(":", "/")}`), `${digest} in the archive`);
    }
    const store = await ArchiveStore.open(archive);
    try {
      assert.deepEqual(await store.listTags(), ["multi", "v1"]);
      for (const tag of ["v1", "multi"]) {
        assert.equal(
          (await store.resolve({ tag })).digest,
          (await fx.tagEntry(layout, tag)).digest,
        );
      }
      for (const digest of await fx.listBlobs(layout)) {
        const want = await Deno.readFile(fx.blobFile(layout, digest));
        const desc = { mediaType: "x", digest, size: want.length };
        assert.ok(await store.exists(desc));
        const { stream } = await store.fetch(desc);
        assert.deepEqual(new Uint8Array(await new Response(stream).arrayBuffer()), want);
        const tail = await store.fetch(desc, 100);
        assert.equal(tail.offset, 100);
        assert.deepEqual(
          new Uint8Array(await new Response(tail.stream).arrayBuffer()),
          want.subarray(100),
        );
      }
    } finally {
      await store.close();
    }
  });
});

Deno.test("archive store: nothing at PATH until commit; close without commit leaves nothing", async () => {
  await fx.withTempDir(async (tmp) => {
    const layout = join(tmp, "layout");
    await fx.buildRandomImage(layout, "v1", { layerSizes: [5_000] });
    const archive = join(tmp, "a.tar");
    const src = await LayoutStore.open(layout);
    const dst = await ArchiveStore.open(archive, { create: true });
    const root = await src.resolve({ tag: "v1" });
    await copyGraph(src, dst, root, { rootTag: "v1" });
    assert.equal(await exists(archive), false, "not visible before commit");
    await dst.close();
    await src.close();
    assert.deepEqual([...Deno.readDirSync(tmp)].map((e) => e.name), ["layout"]);
  });
});

Deno.test("archive store: a new tag keeps the old content; an unchanged rerun writes nothing", async () => {
  await fx.withTempDir(async (tmp) => {
    const { layout, archive } = await archiveOf(tmp);
    const before = await Deno.stat(archive);
    // The same tags again: nothing to do, the file is not even replaced.
    const again = await ArchiveStore.open(archive, { create: true });
    const src = await LayoutStore.open(layout);
    try {
      await copyGraph(src, again, await src.resolve({ tag: "v1" }), { rootTag: "v1" });
      await again.commit();
    } finally {
      await again.close();
    }
    const after = await Deno.stat(archive);
    assert.equal(after.ino, before.ino, "not rewritten");
    // A third image under a new tag: old tags and blobs stay.
    await fx.buildRandomImage(layout, "v2", { layerSizes: [7_000] });
    const dst = await ArchiveStore.open(archive, { create: true });
    try {
      await copyGraph(src, dst, await src.resolve({ tag: "v2" }), { rootTag: "v2" });
      await dst.commit();
    } finally {
      await dst.close();
      await src.close();
    }
    const store = await ArchiveStore.open(archive);
    try {
      assert.deepEqual(await store.listTags(), ["multi", "v1", "v2"]);
      for (const digest of await fx.listBlobs(layout)) {
        const size = (await Deno.stat(fx.blobFile(layout, digest))).size;
        assert.ok(await store.exists({ mediaType: "x", digest, size }), `${digest} kept`);
      }
    } finally {
      await store.close();
    }
    // GNU tar agrees: one index.json, the new one.
    const listing = (await fx.mustRun("tar", ["-tf", archive])).stdout.split("\n");
    assert.equal(listing.filter((l) => l === "index.json").length, 1);
  });
});

Deno.test("archive store: bad content is never published; with nothing added, nothing is written", async () => {
  await fx.withTempDir(async (tmp) => {
    const archive = join(tmp, "a.tar");
    const dst = await ArchiveStore.open(archive, { create: true });
    try {
      const bytes = enc.encode("hello");
      const desc = { mediaType: "x", digest: digestOfText("hellO"), size: 5 };
      await assert.rejects(
        () =>
          dst.push(
            desc,
            () => Promise.resolve({ stream: ReadableStream.from([bytes]), offset: 0 }),
          ),
        /digest mismatch/,
      );
      assert.equal(await dst.exists(desc), false);
      await dst.commit(); // nothing was added: nothing is written
    } finally {
      await dst.close();
    }
    assert.equal(await exists(archive), false);
    assert.deepEqual([...Deno.readDirSync(tmp)], [], "no temp file left");
  });
});

function digestOfText(text: string): string {
  return fx.digestOf(enc.encode(text));
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("oci-archive: references: PATH[:TAG] and PATH@DIGEST as a layout's, text kept", () => {
  const H = "b".repeat(64);
  assert.deepEqual(parseReference("oci-archive:/tmp/a.tar"), {
    kind: "archive",
    path: "/tmp/a.tar",
    tag: "latest",
    text: "oci-archive:/tmp/a.tar",
  });
  const tagged = parseReference("oci-archive:a.tar:docker.io/library/alpine:3.20");
  assert.equal(tagged.kind, "archive");
  assert.equal(tagged.kind === "archive" && tagged.path, "a.tar");
  assert.equal(tagged.kind === "archive" && tagged.tag, "docker.io/library/alpine:3.20");
  const byDigest = parseReference(`oci-archive:a.tar@sha256:${H}`);
  assert.equal(byDigest.kind === "archive" && byDigest.digest, `sha256:${H}`);
  assert.equal(formatReference(tagged), "oci-archive:a.tar:docker.io/library/alpine:3.20");
  assert.equal(formatReference(byDigest), `oci-archive:a.tar@sha256:${H}`);
  for (
    const [text, why] of [
      ["oci-archive:", /empty archive path/],
      ["oci-archive::v1", /empty layout path/],
      ["oci-archive:a.tar:", /empty tag/],
      ["oci-archive:a.tar:bad tag", /not a valid/],
    ] as const
  ) {
    assert.throws(
      () => parseReference(text),
      (e) => e instanceof UsageError && why.test(e.message),
    );
  }
});

Deno.test("--all-tags: digest tags are recognized; SRC and DST must name no tag", () => {
  assert.ok(isDigestTag(`sha256-${"c".repeat(64)}`));
  assert.ok(isDigestTag(`sha256-${"c".repeat(64)}.sig`));
  assert.ok(!isDigestTag("sha256-short.sig"));
  assert.ok(!isDigestTag("v1"));
  // In a bundle, under the full reference of their repository.
  assert.ok(isDigestTag(`127.0.0.1:5000/org/app:sha256-${"c".repeat(64)}.sig`));
  assert.ok(!isDigestTag("127.0.0.1:5000/org/app:v1"));
  checkAllTagsReferences(parseReference("dir"), "oci://h:5000/r");
  checkAllTagsReferences(parseReference("dir"), "oci://h:5000");
  checkAllTagsReferences(parseReference("oci://h:5000/r"), "oci-archive:x.tar");
  for (
    const [src, dst] of [["dir:latest", "out"], ["dir", "oci://h/r:v1"], ["oci://h/r:v1", "x"]]
  ) {
    assert.throws(
      () => checkAllTagsReferences(parseReference(src), dst),
      (e) => e instanceof UsageError && /must name no tag or digest/.test(e.message),
    );
  }
});

Deno.test("archive store: blob members that are symbolic or hard links are read through", async () => {
  await fx.withTempDir(async (tmp) => {
    const layout = join(tmp, "layout");
    const image = await fx.buildRandomImage(layout, "v1", { layerSizes: [10_000, 20_000] });
    const [sym, hard] = image.layers.map((l) => l.digest);
    // One layer lives elsewhere, linked with a relative symlink (as `docker save` links
    // layer.tar files); the other under a second name, a hard link in the tar.
    await Deno.mkdir(join(tmp, "layout", "payload"));
    await Deno.rename(fx.blobFile(layout, sym), join(layout, "payload", "layer.tar"));
    await Deno.symlink("../../payload/layer.tar", fx.blobFile(layout, sym));
    await Deno.link(fx.blobFile(layout, hard), join(layout, "payload", "again"));
    const archive = join(tmp, "linked.tar");
    await fx.mustRun("tar", [
      "-cf",
      archive,
      "-C",
      layout,
      "payload",
      "index.json",
      "oci-layout",
      "blobs",
    ]);
    const store = await ArchiveStore.open(archive);
    try {
      for (const d of image.layers) {
        assert.ok(await store.exists(d), `${d.digest} found`);
        const got = new Uint8Array(await new Response((await store.fetch(d)).stream).arrayBuffer());
        assert.equal(fx.digestOf(got), d.digest);
      }
    } finally {
      await store.close();
    }
    const out = join(tmp, "out");
    const src = await ArchiveStore.open(archive);
    const dst = await LayoutStore.open(out, { create: true });
    try {
      await copyGraph(src, dst, await src.resolve({ tag: "v1" }), { rootTag: "v1" });
    } finally {
      await src.close();
      await dst.close();
    }
    await fx.assertLayoutConsistent(out);
  });
});

Deno.test("archive store: a failed blob is cut out, last or between others; the rest is published", async () => {
  await fx.withTempDir(async (tmp) => {
    const blob = (text: string) => {
      const bytes = enc.encode(text);
      return { bytes, desc: { mediaType: "x", digest: fx.digestOf(bytes), size: bytes.length } };
    };
    const from = (bytes: Uint8Array, delay = 0) => () =>
      new Promise<{ stream: ReadableStream<Uint8Array>; offset: number }>((resolve) =>
        setTimeout(() => resolve({ stream: ReadableStream.from([bytes]), offset: 0 }), delay)
      );
    const [a, b, c] = [blob("a".repeat(700)), blob("b".repeat(900)), blob("c".repeat(1100))];
    const wrong = enc.encode("B".repeat(900));

    const first = join(tmp, "first.tar");
    const dst = await ArchiveStore.open(first, { create: true });
    try {
      await dst.push(a.desc, from(a.bytes));
      await assert.rejects(() => dst.push(b.desc, from(wrong)), /digest mismatch/);
      await dst.push(c.desc, from(c.bytes));
      await dst.tag(a.desc, "a");
      await dst.tag(c.desc, "c");
      await dst.commit();
    } finally {
      await dst.close();
    }
    const listing = (await fx.mustRun("tar", ["-tf", first])).stdout;
    assert.ok(listing.includes(a.desc.digest.slice(7)) && listing.includes(c.desc.digest.slice(7)));
    assert.ok(!listing.includes(b.desc.digest.slice(7)), "the failed blob is not in the archive");
    const back = await ArchiveStore.open(first);
    assert.deepEqual(await back.listTags(), ["a", "c"]);
    await back.close();

    // b fails after c has taken the place behind it: c is moved down over b's region, and
    // the archive has no gap (GNU tar and a reopened store read it through).
    const second = join(tmp, "second.tar");
    const dst2 = await ArchiveStore.open(second, { create: true });
    try {
      await dst2.push(a.desc, from(a.bytes));
      const failing = dst2.push(b.desc, from(wrong, 100));
      await new Promise((r) => setTimeout(r, 20));
      await dst2.push(c.desc, from(c.bytes));
      await assert.rejects(() => failing, /digest mismatch/);
      await dst2.tag(c.desc, "c");
      await dst2.commit();
    } finally {
      await dst2.close();
    }
    const names = (await fx.mustRun("tar", ["-tf", second])).stdout.trim().split("\n");
    assert.deepEqual(names, [
      "blobs/",
      "blobs/sha256/",
      `blobs/sha256/${a.desc.digest.slice(7)}`,
      `blobs/sha256/${c.desc.digest.slice(7)}`,
      "index.json",
      "oci-layout",
    ]);
    const x = await fx.untar(second, join(tmp, "x"));
    assert.deepEqual(await Deno.readFile(join(x, "blobs/sha256", c.desc.digest.slice(7))), c.bytes);
    const back2 = await ArchiveStore.open(second);
    assert.deepEqual(await back2.listTags(), ["c"]);
    assert.equal(await back2.exists(b.desc), false);
    await back2.close();
    assert.deepEqual(entries(tmp), ["first.tar", "second.tar", "x"]);
  });
});

function entries(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}
