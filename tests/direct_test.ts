// Direct I/O (O_DIRECT through libc) for large blobs written into a layout.
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  alignedBuffer,
  DIRECT_ALIGN,
  DIRECT_MIN_SIZE,
  directBytesWritten,
  DirectFile,
} from "../src/store/direct.ts";
import { LayoutStore } from "../src/store/layout.ts";
import { PERMISSIONS } from "../scripts/build.ts";
import { umoci, umociCommand } from "./fixtures/cli.ts";
import type { BlobSource } from "../src/store/store.ts";
import * as fx from "./fixtures/images.ts";

const O_DIRECT = Deno.build.arch === "aarch64" ? 0o200000 : 0o40000;

function randomBytes(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  for (let off = 0; off < n; off += 65536) {
    crypto.getRandomValues(out.subarray(off, Math.min(n, off + 65536)));
  }
  return out;
}

/** The open flags of one of this process's descriptors, from /proc. */
async function openFlags(fd: number): Promise<number> {
  const info = await Deno.readTextFile(`/proc/self/fdinfo/${fd}`);
  return parseInt(/^flags:\s*(\d+)/m.exec(info)![1], 8);
}

Deno.test("direct: a descriptor opened with O_DIRECT writes aligned buffers at aligned offsets", async () => {
  await fx.withTempDir(async (tmp) => {
    const path = join(tmp, "f");
    await Deno.writeFile(path, new Uint8Array(0));
    const file = DirectFile.open(path);
    assert.ok(file, "direct I/O is available here (Linux, libc, --allow-ffi)");
    try {
      assert.ok((await openFlags(file.fd)) & O_DIRECT, "the descriptor has O_DIRECT");
      // statx on the descriptor names the file Deno sees, and not another one.
      const info = await Deno.stat(path);
      assert.deepEqual(file.identity(), { dev: info.dev, ino: info.ino });
      await Deno.writeFile(join(tmp, "g"), new Uint8Array(0));
      assert.notEqual(file.identity()?.ino, (await Deno.stat(join(tmp, "g"))).ino);
      const a = alignedBuffer(1024 * 1024);
      a.set(randomBytes(a.length));
      const b = alignedBuffer(DIRECT_ALIGN);
      b.set(randomBytes(b.length));
      assert.ok(file.accepts(a, 0));
      assert.ok(!file.accepts(a.subarray(1), 0), "a misaligned address is not accepted");
      assert.ok(!file.accepts(a.subarray(0, 1000), 0), "a partial block is not accepted");
      assert.ok(!file.accepts(a, 512), "a misaligned offset is not accepted");
      const before = directBytesWritten();
      assert.equal(await file.write(a, 0), a.length);
      assert.equal(await file.write(b, a.length + DIRECT_ALIGN), b.length);
      assert.equal(directBytesWritten() - before, a.length + b.length);
      const got = await Deno.readFile(path);
      assert.equal(got.length, a.length + 2 * DIRECT_ALIGN);
      assert.deepEqual(got.subarray(0, a.length), a);
      assert.deepEqual(
        got.subarray(a.length, a.length + DIRECT_ALIGN),
        new Uint8Array(DIRECT_ALIGN),
      );
      assert.deepEqual(got.subarray(a.length + DIRECT_ALIGN), b);
    } finally {
      file.close();
    }
    assert.equal(file.fd, -1);
  });
});

Deno.test("direct: a large blob broken off mid-way goes to disk directly except its unaligned tail", async () => {
  await fx.withTempDir(async (tmp) => {
    const dir = join(tmp, "l");
    // Not a multiple of the block size, and broken off at an unaligned byte.
    const bytes = randomBytes(DIRECT_MIN_SIZE + 3 * 1024 * 1024 + 12345);
    const desc = {
      mediaType: "application/octet-stream",
      digest: fx.digestOf(bytes),
      size: bytes.length,
    };
    const breakAt = 5 * 1024 * 1024 + 777;
    const offsets: number[] = [];
    const source: BlobSource = (offset) => {
      offsets.push(offset);
      const end = offsets.length === 1 ? breakAt : bytes.length;
      let sent = offset;
      const stream = new ReadableStream<Uint8Array>({
        pull(c) {
          if (sent >= end) {
            return end < bytes.length ? c.error(new Error("connection reset")) : c.close();
          }
          // Odd chunk sizes, as a socket gives them.
          const n = Math.min(end - sent, 300_001);
          c.enqueue(bytes.slice(sent, sent + n));
          sent += n;
        },
      });
      return Promise.resolve({ stream, offset });
    };
    const before = directBytesWritten();
    const store = await LayoutStore.open(dir, { create: true });
    try {
      await store.push(desc, source);
    } finally {
      await store.close();
    }
    assert.equal(offsets.length, 2);
    assert.ok(offsets[1] > 0 && offsets[1] <= breakAt, `resumed at ${offsets[1]}`);
    const direct = directBytesWritten() - before;
    // All but the unaligned start of the resumed part and the blob's tail went directly.
    assert.ok(direct >= bytes.length - 2 * 1024 * 1024, `only ${direct} bytes written directly`);
    assert.ok(direct % DIRECT_ALIGN === 0 && direct < bytes.length);
    const stored = await Deno.readFile(fx.blobFile(dir, desc.digest));
    assert.equal(fx.digestOf(stored), desc.digest);
  });
});

Deno.test("direct: a partial file of unaligned length left by an earlier run is continued", async () => {
  await fx.withTempDir(async (tmp) => {
    const dir = join(tmp, "l");
    const bytes = randomBytes(DIRECT_MIN_SIZE + 4097);
    const desc = {
      mediaType: "application/octet-stream",
      digest: fx.digestOf(bytes),
      size: bytes.length,
    };
    const [, hex] = desc.digest.split(":");
    const store = await LayoutStore.open(dir, { create: true });
    try {
      // Any write creates the layout; then an earlier run's partial file appears.
      const small = new TextEncoder().encode("x");
      await store.push(
        { mediaType: "application/octet-stream", digest: fx.digestOf(small), size: 1 },
        () => Promise.resolve({ stream: ReadableStream.from([small]), offset: 0 }),
      );
      await Deno.mkdir(join(dir, ".umoci-copy-tmp"), { recursive: true });
      await Deno.writeFile(
        join(dir, ".umoci-copy-tmp", `sha256-${hex}.partial`),
        bytes.subarray(0, 999_999),
      );
      const offsets: number[] = [];
      const before = directBytesWritten();
      await store.push(desc, (offset) => {
        offsets.push(offset);
        return Promise.resolve({ stream: ReadableStream.from([bytes.slice(offset)]), offset });
      });
      assert.deepEqual(offsets, [999_999]);
      // A short first write realigns; then all but the tail goes directly.
      const direct = directBytesWritten() - before;
      assert.ok(direct >= bytes.length - 999_999 - 1024 * 1024 - 4096, `only ${direct} direct`);
    } finally {
      await store.close();
    }
    assert.deepEqual(await Deno.readFile(fx.blobFile(dir, desc.digest)), bytes);
  });
});

Deno.test("direct: the CLI copies a large layer the same with direct I/O, without it, and without --allow-ffi", async () => {
  await fx.withTempDir(async (tmp) => {
    const src = join(tmp, "src");
    const img = await fx.buildRandomImage(src, "v1", {
      layerSizes: [DIRECT_MIN_SIZE + 12345, 3 * 1024 * 1024],
      raw: true,
    });
    const runs: [string, () => Promise<fx.RunResult>][] = [
      ["default", () => umoci(["copy", "--log=debug", `${src}:v1`, `${join(tmp, "default")}:v1`])],
      [
        "UMOCI_DIRECT_IO=0",
        () =>
          umoci(["copy", "--log=debug", `${src}:v1`, `${join(tmp, "off")}:v1`], {
            env: { UMOCI_DIRECT_IO: "0" },
          }),
      ],
    ];
    const [cmd, ...pre] = umociCommand();
    /** The bundle run with `permissions` instead of the release's. */
    const withPermissions = (permissions: string[], out: string) => async () => {
      const args = [
        "run",
        ...permissions,
        pre[pre.length - 1],
        "copy",
        "--log=debug",
        `${src}:v1`,
        `${join(tmp, out)}:v1`,
      ];
      const r = await new Deno.Command(cmd, { args, stdin: "null" }).output();
      const dec = new TextDecoder();
      return { code: r.code, stdout: dec.decode(r.stdout), stderr: dec.decode(r.stderr) };
    };
    if (pre[0] === "run") {
      // The same program without the FFI permission falls back to the page cache.
      runs.push([
        "no --allow-ffi",
        withPermissions(PERMISSIONS.filter((p) => p !== "--allow-ffi"), "noffi"),
      ]);
      // A narrowed --allow-env hides UMOCI_DIRECT_IO and UMOCI_LIBCRYPTO: that means they
      // are not set, not that direct I/O and OpenSSL are off.
      runs.push([
        "narrowed --allow-env",
        withPermissions(
          PERMISSIONS.map((p) => p === "--allow-env" ? "--allow-env=HOME" : p),
          "narrowenv",
        ),
      ]);
    }
    const [large, small] = img.layers;
    for (const [name, run] of runs) {
      const r = await run();
      assert.equal(r.code, 0, `${name}: ${r.stderr}`);
      assert.equal(r.stdout.trim(), img.manifest.digest, name);
      // With the permissions the release runs with (not --allow-all), the large layer really
      // goes to disk directly by default: a check that fails quietly would leave it to the
      // page cache and only the benchmark would notice.
      const savedLine = (digest: string) =>
        r.stderr.split("\n").find((l) => l.includes(`blob saved to local store ${digest}`));
      const direct = name === "default" || name === "narrowed --allow-env";
      assert.equal(
        savedLine(large.digest)?.includes("written with direct I/O"),
        direct,
        `${name}: ${savedLine(large.digest)}`,
      );
      if (direct) assert.match(savedLine(large.digest)!, /verified with OpenSSL/, name);
      assert.ok(!savedLine(small.digest)?.includes("direct I/O"), `${name}: small layer`);
    }
    for (const dir of ["default", "off", ...(runs.length > 2 ? ["noffi", "narrowenv"] : [])]) {
      const out = join(tmp, dir);
      await fx.assertBlobsVerify(out);
      for (const layer of img.layers) {
        assert.deepEqual(
          await Deno.readFile(fx.blobFile(out, layer.digest)),
          await Deno.readFile(fx.blobFile(src, layer.digest)),
          `${dir}: ${layer.digest}`,
        );
      }
      assert.deepEqual(await fx.listTags(out), ["v1"]);
    }
  });
});
