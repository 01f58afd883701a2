// Bad input, table-driven through the CLI: every row must exit non-zero with exactly one
// `error:` line on stderr (the last line, no stack frames) and write nothing: the
// destination is absent before and after, or byte-identical (snapshotTree). Rows cover
// malformed references, bad digests in index.json and in a manifest, size mismatches,
// broken layouts, destinations that are files, non-layouts, read-only (a read-only bind
// mount in a private mount namespace: root ignores permission bits) or full (an 8 MiB
// tmpfs), blobs/ as a symlink, and a manifest that lists itself.
//
// A manifest that truly lists itself cannot exist: its digest would have to be part of the
// bytes it hashes. The row below stores an index that lists its own (claimed) digest and
// checks that the CLI refuses it in one line (as a digest mismatch); cycle detection itself
// is tested through copyGraph with a fake store that skips verification.
import assert from "node:assert/strict";
import { join } from "node:path";
import { copyGraph } from "../src/copy.ts";
import { UserError } from "../src/errors.ts";
import type { Descriptor as SrcDescriptor } from "../src/media.ts";
import type { Store } from "../src/store/store.ts";
import { type RunResult, umoci, umociCommand } from "./fixtures/cli.ts";
import {
  blobFile,
  buildRandomImage,
  type Descriptor,
  digestOf,
  initLayout,
  OCI_INDEX,
  OCI_MANIFEST,
  readIndex,
  REF_NAME,
  run,
  snapshotTree,
  withTempDir,
  writeBlob,
} from "./fixtures/images.ts";

const MiB = 1024 * 1024;
const enc = new TextEncoder();

/** What a path looks like: absent, a file's bytes, or a directory tree. */
async function state(path: string): Promise<string> {
  const info = await Deno.lstat(path).catch(() => null);
  if (info === null) return "absent";
  if (info.isSymlink) return `symlink -> ${await Deno.readLink(path)}`;
  if (info.isFile) return `file ${digestOf(await Deno.readFile(path))}`;
  return JSON.stringify(await snapshotTree(path));
}

function stderrLines(text: string): string[] {
  return text.split("\n").filter((l, i, all) => l !== "" || i < all.length - 1);
}

/** Exit ≠ 0, exactly one `error:` line and it is the last, no stack frames; the message. */
function oneErrorLine(r: RunResult): string {
  assert.notEqual(r.code, 0, `exit code (stdout ${r.stdout})`);
  const lines = stderrLines(r.stderr);
  const errors = lines.filter((l) => l.startsWith("error:"));
  assert.equal(errors.length, 1, `one error line:\n${r.stderr}`);
  assert.equal(lines[lines.length - 1], errors[0], `the error line is the last:\n${r.stderr}`);
  assert.ok(!lines.some((l) => /^\s+at\s/.test(l)), `no stack frames:\n${r.stderr}`);
  assert.equal(r.stdout, "", "nothing on stdout");
  return errors[0].slice("error:".length).trim();
}

/** The CLI inside a private mount namespace, after `setup` (a shell snippet) has run. */
function umociInNamespace(setup: string, args: string[], after = ""): Promise<RunResult> {
  const script = `${setup} || exit 125\n"$@"\nrc=$?\n${after}\nexit $rc`;
  return run("unshare", ["-m", "sh", "-c", script, "sh", ...umociCommand(), ...args], {
    timeoutMs: 60_000,
  });
}

const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

/** A copy of `from` (a layout) at `to` whose index.json entry for v1 is replaced. */
async function withIndexEntry(from: string, to: string, entry: Record<string, unknown>) {
  await Deno.mkdir(to, { recursive: true });
  await run("cp", ["-a", `${from}/.`, to]);
  const index = await readIndex(to);
  index.manifests = [{ ...entry, annotations: { [REF_NAME]: "v1" } } as unknown as Descriptor];
  await Deno.writeTextFile(join(to, "index.json"), JSON.stringify(index));
}

/** A copy of `from` whose v1 manifest has its first layer descriptor changed. */
async function withLayerChanged(
  from: string,
  to: string,
  change: (layer: Record<string, unknown>) => void,
) {
  await Deno.mkdir(to, { recursive: true });
  await run("cp", ["-a", `${from}/.`, to]);
  const entry = (await readIndex(to)).manifests[0];
  const doc = JSON.parse(await Deno.readTextFile(blobFile(to, entry.digest)));
  change(doc.layers[0]);
  const bytes = enc.encode(JSON.stringify(doc));
  const manifest = {
    mediaType: OCI_MANIFEST,
    digest: await writeBlob(to, bytes),
    size: bytes.length,
  };
  await withIndexEntry(to, to, manifest);
}

const BAD_DIGESTS: [string, string][] = [
  ["path traversal sha256:../../x", "sha256:../../x"],
  ["uppercase hex", `sha256:${"AB".repeat(32)}`],
  ["short hex", "sha256:abc123"],
  ["unknown algorithm", `md5:${"0".repeat(32)}`],
];

interface Row {
  name: string;
  /** Builds what the row needs; returns the CLI arguments after `copy`. */
  args: (ctx: { dir: string; good: string; dst: string }) => Promise<string[]> | string[];
  /** Paths that must be unchanged (default: the destination). */
  watch?: (ctx: { dir: string; good: string; dst: string }) => string[];
  /** Runs the CLI itself (namespaced rows); returns the result. */
  exec?: (ctx: { dir: string; good: string; dst: string }) => Promise<RunResult>;
  /** The message must match. */
  message: RegExp;
}

const ROWS: Row[] = [
  // Malformed references.
  { name: "empty SRC", args: ({ dst }) => ["", `${dst}:v1`], message: /empty/ },
  { name: "oci:// with nothing", args: ({ dst }) => ["oci://", `${dst}:v1`], message: /oci:\/\// },
  {
    name: "oci://HOST without repository",
    args: ({ dst }) => ["oci://127.0.0.1:5000", `${dst}:v1`],
    message: /HOST\[:PORT\]\/REPOSITORY|repository/,
  },
  {
    name: "uppercase repository",
    args: ({ dst }) => ["oci://127.0.0.1:5000/Library/App:v1", `${dst}:v1`],
    message: /lowercase/,
  },
  {
    name: "invalid registry tag",
    args: ({ dst }) => ["oci://127.0.0.1:5000/app:bad tag!", `${dst}:v1`],
    message: /tag/,
  },
  {
    name: "port out of range",
    args: ({ dst }) => ["oci://127.0.0.1:99999/app:v1", `${dst}:v1`],
    message: /port 99999/,
  },
  {
    name: "short registry digest",
    args: ({ dst }) => ["oci://127.0.0.1:5000/app@sha256:abc", `${dst}:v1`],
    message: /digest/,
  },
  {
    name: "unknown scheme",
    args: ({ dst }) => ["http://127.0.0.1:5000/app:v1", `${dst}:v1`],
    message: /scheme/,
  },
  {
    name: "empty layout tag",
    args: ({ good, dst }) => [`${good}:`, `${dst}:v1`],
    message: /empty tag/,
  },
  {
    name: "invalid layout tag",
    args: ({ good, dst }) => [`${good}:a b`, `${dst}:v1`],
    message: /not a valid/,
  },
  ...BAD_DIGESTS.map(([what, digest]): Row => ({
    name: `layout reference @${what}`,
    args: ({ good, dst }) => [`${good}@${digest}`, `${dst}:v1`],
    message: /digest|algorithm/,
  })),
  {
    name: "layout destination with a digest",
    args: ({ good, dst }) => [`${good}:v1`, `${dst}@sha256:${"a".repeat(64)}`],
    message: /needs a tag, not a digest/,
  },
  {
    name: "registry destination with tag and digest",
    args: ({ good }) => [`${good}:v1`, `oci://127.0.0.1:5000/app:v1@sha256:${"a".repeat(64)}`],
    message: /tag or a digest|digest/,
  },
  // Bad digests in index.json and in a manifest.
  ...BAD_DIGESTS.map(([what, digest]): Row => ({
    name: `index.json entry: ${what}`,
    args: async ({ dir, good, dst }) => {
      const src = join(dir, "src");
      await withIndexEntry(good, src, { mediaType: OCI_MANIFEST, digest, size: 100 });
      return [`${src}:v1`, `${dst}:v1`];
    },
    watch: ({ dir, dst }) => [dst, join(dir, "src")],
    message: /digest|algorithm/,
  })),
  ...BAD_DIGESTS.map(([what, digest]): Row => ({
    name: `manifest layer: ${what}`,
    args: async ({ dir, good, dst }) => {
      const src = join(dir, "src");
      await withLayerChanged(good, src, (l) => l.digest = digest);
      return [`${src}:v1`, `${dst}:v1`];
    },
    watch: ({ dir, dst }) => [dst, join(dir, "src")],
    message: /digest|algorithm/,
  })),
  {
    name: "descriptor size mismatch (layer)",
    args: async ({ dir, good, dst }) => {
      const src = join(dir, "src");
      await withLayerChanged(good, src, (l) => l.size = (l.size as number) + 1);
      return [`${src}:v1`, `${dst}:v1`];
    },
    message: /bytes|size/,
  },
  {
    name: "descriptor size mismatch (index.json entry)",
    args: async ({ dir, good, dst }) => {
      const src = join(dir, "src");
      const entry = (await readIndex(good)).manifests[0];
      await withIndexEntry(good, src, { ...entry, size: entry.size - 1, annotations: undefined });
      return [`${src}:v1`, `${dst}:v1`];
    },
    message: /bytes|size/,
  },
  // Broken layouts.
  {
    name: "corrupted index.json",
    args: async ({ dir, good, dst }) => {
      const src = join(dir, "src");
      await run("cp", ["-a", good, src]);
      const text = await Deno.readTextFile(join(src, "index.json"));
      await Deno.writeTextFile(join(src, "index.json"), text.slice(0, text.length / 2));
      return [`${src}:v1`, `${dst}:v1`];
    },
    message: /index\.json is not valid JSON/,
  },
  {
    name: "missing oci-layout",
    args: async ({ dir, good, dst }) => {
      const src = join(dir, "src");
      await run("cp", ["-a", good, src]);
      await Deno.remove(join(src, "oci-layout"));
      return [`${src}:v1`, `${dst}:v1`];
    },
    message: /not an OCI image layout/,
  },
  {
    name: "imageLayoutVersion 2.0.0",
    args: async ({ dir, good, dst }) => {
      const src = join(dir, "src");
      await run("cp", ["-a", good, src]);
      await Deno.writeTextFile(join(src, "oci-layout"), '{"imageLayoutVersion":"2.0.0"}');
      return [`${src}:v1`, `${dst}:v1`];
    },
    message: /imageLayoutVersion "2\.0\.0"/,
  },
  {
    name: "source blobs/ is a symlink out of the layout",
    args: async ({ dir, good, dst }) => {
      const src = join(dir, "src");
      await Deno.mkdir(src);
      for (const f of ["oci-layout", "index.json"]) {
        await Deno.copyFile(join(good, f), join(src, f));
      }
      await Deno.symlink(join(good, "blobs"), join(src, "blobs"));
      return [`${src}:v1`, `${dst}:v1`];
    },
    message: /symlink/,
  },
  {
    name: "a manifest that lists itself",
    args: async ({ dir, dst }) => {
      const src = join(dir, "src");
      await initLayout(src);
      // The digest it claims, and the index naming that digest; the bytes cannot hash to it.
      const claimed = `sha256:${"c".repeat(64)}`;
      const self = (size: number) =>
        enc.encode(JSON.stringify({
          schemaVersion: 2,
          mediaType: OCI_INDEX,
          manifests: [{ mediaType: OCI_INDEX, digest: claimed, size }],
        }));
      const size = self(0).length + 2; // two more digits once the size is written in
      const bytes = self(size);
      assert.equal(bytes.length, size);
      await Deno.writeFile(blobFile(src, claimed), bytes);
      await withIndexEntry(src, src, { mediaType: OCI_INDEX, digest: claimed, size });
      return [`${src}:v1`, `${dst}:v1`];
    },
    message: /digest mismatch/,
  },
  // Destinations that cannot be written.
  {
    name: "destination is a file",
    args: async ({ good, dst }) => {
      await Deno.writeTextFile(dst, "not a layout\n");
      return [`${good}:v1`, `${dst}:v1`];
    },
    message: /not a directory/,
  },
  {
    name: "destination is a non-layout directory",
    args: async ({ good, dst }) => {
      await Deno.mkdir(dst);
      await Deno.writeTextFile(join(dst, "notes.txt"), "mine\n");
      return [`${good}:v1`, `${dst}:v1`];
    },
    message: /not an OCI image layout/,
  },
  {
    name: "destination blobs/ is a symlink out of the layout",
    args: async ({ dir, good, dst }) => {
      const elsewhere = join(dir, "elsewhere");
      await Deno.mkdir(join(elsewhere, "sha256"), { recursive: true });
      await Deno.mkdir(dst);
      for (const f of ["oci-layout", "index.json"]) {
        await Deno.writeTextFile(
          join(dst, f),
          f === "oci-layout"
            ? '{"imageLayoutVersion":"1.0.0"}'
            : JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] }),
        );
      }
      await Deno.symlink(elsewhere, join(dst, "blobs"));
      return [`${good}:v1`, `${dst}:v1`];
    },
    watch: ({ dir, dst }) => [dst, join(dir, "elsewhere")],
    message: /symlink/,
  },
  {
    name: "read-only destination layout (ro bind mount)",
    args: async ({ good, dst }) => {
      await initLayout(dst);
      return [`${good}:v1`, `${dst}:v1`];
    },
    exec: async ({ good, dst }) => {
      return await umociInNamespace(
        `mount --bind -o ro ${quote(dst)} ${quote(dst)}`,
        ["copy", `${good}:v1`, `${dst}:v1`],
      );
    },
    message: /read-only|Read-only|permission/i,
  },
  {
    name: "new destination under a read-only directory",
    args: async ({ dir }) => {
      await Deno.mkdir(join(dir, "ro-parent"));
      return [];
    },
    exec: async ({ dir, good }) => {
      const parent = join(dir, "ro-parent");
      return await umociInNamespace(
        `mount --bind -o ro ${quote(parent)} ${quote(parent)}`,
        ["copy", `${good}:v1`, `${join(parent, "new")}:v1`],
      );
    },
    watch: ({ dir }) => [join(dir, "ro-parent")],
    message: /read-only|Read-only|permission/i,
  },
];

Deno.test("bad input: one error line, exit ≠ 0, nothing written", async (t) => {
  await withTempDir(async (base) => {
    const good = join(base, "good");
    await buildRandomImage(good, "v1", { layerSizes: [4096, 2048] });
    const results: string[] = [];
    const failures: string[] = [];
    for (const [i, row] of ROWS.entries()) {
      const dir = join(base, `row-${i}`);
      await Deno.mkdir(dir);
      const ctx = { dir, good, dst: join(dir, "dst") };
      const ok = await t.step(row.name, async () => {
        const watch = () => row.watch?.(ctx) ?? [ctx.dst];
        const args = await row.args(ctx);
        const before = await Promise.all(watch().map(state));
        const r = row.exec
          ? await row.exec(ctx)
          : await umoci(["copy", ...args], { timeoutMs: 60_000 });
        const message = oneErrorLine(r);
        results.push(`| ${row.name} | ${r.code} | ${message.replaceAll(base, "…")} |`);
        assert.match(message, row.message);
        const after = await Promise.all(watch().map(state));
        assert.deepEqual(after, before, `nothing written to ${watch().join(", ")}`);
      });
      if (!ok) failures.push(row.name);
    }
    console.log(
      `\nBad input table:\n| input | exit | error line |\n| --- | --- | --- |\n${
        results.join("\n")
      }\n${failures.length ? `failed rows: ${failures.join("; ")}\n` : ""}`,
    );
  });
});

// A full disk is met in the middle of a copy, so complete, verified blobs may stay (they are
// what a rerun needs most); what must not stay is a partial download filling the disk, nor
// any change to index.json or oci-layout.
async function fullDisk(layerSizes: number[], tmpfsSize: string): Promise<void> {
  await withTempDir(async (dir) => {
    const src = join(dir, "src");
    await buildRandomImage(src, "v1", { layerSizes, raw: true });
    const mnt = join(dir, "mnt");
    const empty = join(dir, "empty");
    await Deno.mkdir(mnt);
    await initLayout(empty);
    const dst = join(mnt, "dst");
    // Everything but blobs/ (hashes and names), then every blob as "NAME HASH".
    const snap = (file: string) =>
      `(cd ${quote(dst)} && find . -path ./blobs -prune -o -type f -exec sha256sum {} + | sort;` +
      ` find . -path ./blobs -prune -o -print | sort;` +
      ` for f in blobs/sha256/*; do [ -f "$f" ] && echo "$f $(sha256sum < "$f")"; done; true) > ${
        quote(join(dir, file))
      }`;
    const setup = `mount -t tmpfs -o size=${tmpfsSize} tmpfs ${quote(mnt)} && cp -a ${
      quote(empty)
    } ${quote(dst)} && ${snap("before.txt")}`;
    const r = await umociInNamespace(setup, ["copy", `${src}:v1`, `${dst}:v1`], snap("after.txt"));
    assert.notEqual(r.code, 125, `the namespace could be set up: ${r.stderr}`);
    const message = oneErrorLine(r);
    // The disk's own error names no file: the line says which layout and blob.
    assert.match(
      message,
      new RegExp(
        `^layout ${dst.replaceAll(".", "\\.")}: writing sha256:[0-9a-f]{64}: ` +
          "no space left on device \\(os error 28\\)",
      ),
    );
    assert.doesNotMatch(message, /device.*device/i, "said once");
    // A full disk is not a bug of ours: --debug shows no stack trace for it.
    const debug = await umociInNamespace(setup, ["copy", "--debug", `${src}:v1`, `${dst}:v1`]);
    assert.notEqual(debug.code, 0);
    assert.doesNotMatch(debug.stderr, /^debug:\s+at /m, debug.stderr);
    assert.doesNotMatch(debug.stderr, /\.ts:\d+:\d+/, debug.stderr);
    const [before, after] = await Promise.all(
      ["before.txt", "after.txt"].map((f) => Deno.readTextFile(join(dir, f))),
    );
    const rest = (text: string) => text.split("\n").filter((l) => !l.startsWith("blobs/"));
    assert.deepEqual(
      rest(after),
      rest(before),
      "index.json and oci-layout unchanged, no partial download left in the temp area",
    );
    for (const line of after.split("\n").filter((l) => l.startsWith("blobs/"))) {
      const [path, hash] = line.split(/\s+/);
      assert.equal(`blobs/sha256/${hash}`, path, `a blob left behind verifies: ${line}`);
    }
  });
}

Deno.test("bad input: a layout that cannot be created is named in the error, not its temporary directory", async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, "src");
    await buildRandomImage(src, "v1", { layerSizes: [1000], raw: true });
    const mnt = join(dir, "mnt");
    await Deno.mkdir(mnt);
    const dst = join(mnt, "new");
    const r = await umociInNamespace(
      `mount -t tmpfs -o size=1m,ro tmpfs ${quote(mnt)}`,
      ["copy", `${src}:v1`, `${dst}:v1`],
    );
    assert.notEqual(r.code, 125, `the namespace could be set up: ${r.stderr}`);
    const message = oneErrorLine(r);
    assert.match(message, new RegExp(`^cannot create the layout ${dst.replaceAll(".", "\\.")}: `));
    assert.match(message, /read-only file system/i);
    assert.doesNotMatch(message, /umoci-copy-init/);
  });
});

Deno.test("bad input: an archive written onto a full disk fails in one line naming it; --debug shows no stack", async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, "src");
    await buildRandomImage(src, "v1", { layerSizes: [12 * MiB], raw: true });
    const mnt = join(dir, "mnt");
    await Deno.mkdir(mnt);
    const tar = join(mnt, "bundle.tar");
    const setup = `mount -t tmpfs -o size=8m tmpfs ${quote(mnt)}`;
    for (const extra of [[], ["--debug"]]) {
      const r = await umociInNamespace(
        setup,
        ["copy", ...extra, `${src}:v1`, `oci-archive:${tar}:v1`],
        `test ! -e ${quote(tar)} && echo no-archive-left`,
      );
      assert.notEqual(r.code, 125, `the namespace could be set up: ${r.stderr}`);
      assert.notEqual(r.code, 0, r.stderr);
      const last = stderrLines(r.stderr).at(-1) ?? "";
      assert.match(
        last,
        new RegExp(
          `^error: ${tar.replaceAll(".", "\\.")}: writing sha256:[0-9a-f]{64}: no space left`,
        ),
      );
      assert.doesNotMatch(r.stderr, /^debug:\s+at /m, r.stderr);
      assert.doesNotMatch(r.stderr, /\.ts:\d+:\d+/, r.stderr);
      assert.match(r.stdout, /no-archive-left/, "no half-written archive at PATH");
    }
  });
});

Deno.test("bad input: a tag written into a layout on a full disk names the layout; index.json stays", async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, "src");
    await buildRandomImage(src, "v1", { layerSizes: [1000], raw: true });
    const mnt = join(dir, "mnt");
    await Deno.mkdir(mnt);
    const dst = join(mnt, "dst");
    const saved = join(dir, "index.saved");
    // Everything is there but the tag v2, and not one free block is left for index.json.
    const r = await umociInNamespace(
      `mount -t tmpfs -o size=1m tmpfs ${quote(mnt)} && cp -a ${quote(src)} ${quote(dst)} && ` +
        `cp ${quote(join(dst, "index.json"))} ${quote(saved)} && ` +
        `{ dd if=/dev/zero of=${quote(join(mnt, "fill"))} bs=4k 2>/dev/null; true; }`,
      ["copy", `${src}:v1`, `${dst}:v2`],
      `cmp ${quote(saved)} ${quote(join(dst, "index.json"))} >&2 && ls -A ${quote(dst)} >&2`,
    );
    assert.notEqual(r.code, 125, `the namespace could be set up: ${r.stderr}`);
    assert.equal(r.code, 1, r.stderr);
    const lines = stderrLines(r.stderr);
    assert.deepEqual(lines.slice(-4), [
      `error: layout ${dst}: writing index.json: no space left on device (os error 28)`,
      "blobs",
      "index.json",
      "oci-layout",
    ]);
  });
});

Deno.test("bad input: an archive extended on a full disk stays as it was, and no temp file is left", async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, "src");
    await buildRandomImage(src, "v1", { layerSizes: [5 * MiB], raw: true });
    await buildRandomImage(src, "v2", { layerSizes: [1000], raw: true });
    const pre = join(dir, "pre.tar");
    const made = await umoci(["copy", `${src}:v1`, `oci-archive:${pre}:v1`]);
    assert.equal(made.code, 0, made.stderr);
    const mnt = join(dir, "mnt");
    await Deno.mkdir(mnt);
    const tar = join(mnt, "bundle.tar");
    // Adding v2 first carries the 5 MiB archive over into a temp file: 8 MiB do not hold both.
    const r = await umociInNamespace(
      `mount -t tmpfs -o size=8m tmpfs ${quote(mnt)} && cp ${quote(pre)} ${quote(tar)}`,
      ["copy", `${src}:v2`, `oci-archive:${tar}:v2`],
      `ls -A ${quote(mnt)}; cmp ${quote(pre)} ${quote(tar)} && echo unchanged`,
    );
    assert.notEqual(r.code, 125, `the namespace could be set up: ${r.stderr}`);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stdout, "bundle.tar\nunchanged\n", "the archive alone, as it was");
    assert.match(oneErrorLine({ ...r, stdout: "" }), /no space left on device/);
  });
});

Deno.test("bad input: a full disk (8 MiB tmpfs, 16 MiB image) fails in one line; no partial left filling it, index.json untouched", async () => {
  await fullDisk([8 * MiB, 8 * MiB], "8m");
});

Deno.test("bad input: a full disk met by direct I/O (24 MiB layer, 16 MiB tmpfs) fails the same way", async () => {
  // Blobs of 16 MiB and more are written with O_DIRECT (which tmpfs takes on current
  // kernels): the failed direct write falls back to an ordinary one, whose error is reported.
  await fullDisk([24 * MiB], "16m");
});

Deno.test("cycle: a manifest graph that refers back to itself is refused by copyGraph (fake store without verification)", async () => {
  const a = `sha256:${"a".repeat(64)}`;
  const b = `sha256:${"b".repeat(64)}`;
  const docs: Record<string, Uint8Array> = {
    [a]: enc.encode(JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [{ mediaType: OCI_INDEX, digest: b, size: 1 }],
    })),
    [b]: enc.encode(JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [{ mediaType: OCI_INDEX, digest: a, size: 1 }],
    })),
  };
  const written: string[] = [];
  const fake = (name: string, local: boolean): Store => ({
    name,
    local,
    resolve: () => Promise.reject(new Error("unused")),
    exists: () => Promise.resolve(false),
    fetch: () => Promise.reject(new Error("no blobs here")),
    fetchManifest: (d: SrcDescriptor) => Promise.resolve(docs[d.digest]),
    push: (d: SrcDescriptor) => {
      written.push(d.digest);
      return Promise.resolve();
    },
    pushManifest: (d: SrcDescriptor) => {
      written.push(d.digest);
      return Promise.resolve();
    },
    tag: () => Promise.resolve(),
    close: () => Promise.resolve(),
  });
  for (const root of [a, b]) {
    await assert.rejects(
      copyGraph(fake("src", false), fake("dst", true), {
        mediaType: OCI_INDEX,
        digest: root,
        size: 1,
      }),
      (e) => e instanceof UserError && /refers to itself \(cycle\)/.test(e.message),
    );
  }
  // And a direct self-reference.
  docs[a] = enc.encode(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: [{ mediaType: OCI_INDEX, digest: a, size: 1 }],
  }));
  await assert.rejects(
    copyGraph(fake("src", false), fake("dst", true), { mediaType: OCI_INDEX, digest: a, size: 1 }),
    /cycle/,
  );
  assert.deepEqual(written, [], "nothing pushed");
});
