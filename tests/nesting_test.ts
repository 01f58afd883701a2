// Deep and wide manifest graphs: an index nested past the documented limit (MAX_NESTING, 16
// levels with the root as level 1) is refused in one line naming the digest and the limit,
// exit 1, before anything is written (no layout created, index.json untouched, no tag in
// a registry); a graph right at the limit copies; an index listing one child thousands of
// times reads and pushes it once; manifest reads while planning are bounded in number.
import assert from "node:assert/strict";
import { join } from "node:path";
import { copyGraph, MAX_NESTING } from "../src/copy.ts";
import { UserError } from "../src/errors.ts";
import type { Descriptor as SrcDescriptor } from "../src/media.ts";
import type { BlobReader, Store } from "../src/store/store.ts";
import { type RunResult, umoci } from "./fixtures/cli.ts";
import {
  buildRandomImage,
  type Descriptor,
  digestOf,
  initLayout,
  OCI_INDEX,
  OCI_MANIFEST,
  snapshotTree,
  tagDescriptor,
  withTempDir,
  writeEmptyConfig,
  writeJson,
} from "./fixtures/images.ts";
import { startRegistry } from "./fixtures/registry.ts";

const enc = new TextEncoder();

/**
 * `levels` indexes, each listing the next, above one image manifest, tagged `tag`; returns
 * the descriptors from the root (level 1) down.
 */
async function buildDeepIndex(dir: string, tag: string, levels: number): Promise<Descriptor[]> {
  await initLayout(dir);
  const config = await writeEmptyConfig(dir);
  let desc = await writeJson(
    dir,
    { schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers: [] },
    OCI_MANIFEST,
  );
  const chain = [desc];
  for (let i = 0; i < levels; i++) {
    desc = await writeJson(
      dir,
      { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [desc] },
      OCI_INDEX,
    );
    chain.unshift(desc);
  }
  await tagDescriptor(dir, desc, tag);
  return chain;
}

/** Exit 1, nothing on stdout, one `error:` line and it is the last; returns it. */
function oneErrorLine(r: RunResult): string {
  assert.equal(r.code, 1, `exit code:\n${r.stderr}`);
  assert.equal(r.stdout, "");
  const lines = r.stderr.trimEnd().split("\n");
  const errors = lines.filter((l) => l.startsWith("error:"));
  assert.equal(errors.length, 1, r.stderr);
  assert.equal(lines[lines.length - 1], errors[0], r.stderr);
  return errors[0];
}

Deno.test("nesting: 40 levels of indexes are refused in one line naming the digest and the limit; nothing written", async () => {
  await withTempDir(async (tmp) => {
    const src = join(tmp, "src");
    const chain = await buildDeepIndex(src, "deep", 40);
    const tooDeep = chain[MAX_NESTING]; // level 17
    const want = new RegExp(
      `^error: manifest ${tooDeep.digest} is nested more than ${MAX_NESTING} levels deep`,
    );

    // A new destination layout is not created.
    const fresh = join(tmp, "fresh");
    assert.match(oneErrorLine(await umoci(["copy", `${src}:deep`, `${fresh}:deep`])), want);
    assert.equal(await Deno.lstat(fresh).catch(() => null), null, "no layout created");

    // An existing one is byte for byte unchanged (index.json, blobs).
    const existing = join(tmp, "existing");
    await buildRandomImage(existing, "keep", { layerSizes: [100] });
    const before = await snapshotTree(existing);
    assert.match(oneErrorLine(await umoci(["copy", `${src}:deep`, `${existing}:deep`])), want);
    assert.deepEqual(await snapshotTree(existing), before);

    // A registry gets no upload and no tag.
    const reg = await startRegistry({ accessLog: true });
    try {
      const r = await umoci(["copy", "--plain-http", `${src}:deep`, `oci://${reg.host}/deep:v1`]);
      assert.match(oneErrorLine(r), want);
      const res = await fetch(`${reg.url}/v2/deep/manifests/v1`, {
        method: "HEAD",
        headers: { Accept: OCI_INDEX },
      });
      await res.body?.cancel();
      assert.equal(res.status, 404, "no tag");
      assert.deepEqual(reg.requests().filter((l) => /^(POST|PATCH|PUT) /.test(l)), []);
    } finally {
      await reg.stop();
    }
  });
});

Deno.test("nesting: a graph exactly MAX_NESTING levels deep copies (15 indexes above a manifest)", async () => {
  await withTempDir(async (tmp) => {
    const src = join(tmp, "src");
    const chain = await buildDeepIndex(src, "deep", MAX_NESTING - 1);
    assert.equal(chain.length, MAX_NESTING);
    const dst = join(tmp, "dst");
    const r = await umoci(["copy", `${src}:deep`, `${dst}:deep`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), chain[0].digest);
    // One more level is refused.
    const deeper = join(tmp, "deeper");
    const chain2 = await buildDeepIndex(deeper, "deep", MAX_NESTING);
    const e = oneErrorLine(await umoci(["copy", `${deeper}:deep`, `${join(tmp, "d2")}:deep`]));
    assert.ok(e.includes(chain2[MAX_NESTING].digest), e);
  });
});

/**
 * Manifests in memory (real digests), counting reads and the most read at once (each read
 * takes a moment, so concurrent reads overlap).
 */
class MemoryStore implements Store {
  readonly docs = new Map<string, Uint8Array>();
  readonly reads = new Map<string, number>();
  readonly pushed: string[] = [];
  inFlight = 0;
  maxInFlight = 0;
  constructor(readonly name: string, readonly local: boolean) {}

  add(doc: unknown, mediaType: string): SrcDescriptor {
    const bytes = enc.encode(JSON.stringify(doc));
    const digest = digestOf(bytes);
    this.docs.set(digest, bytes);
    return { mediaType, digest, size: bytes.length };
  }
  resolve(): Promise<SrcDescriptor> {
    return Promise.reject(new Error("unused"));
  }
  exists(d: SrcDescriptor): Promise<boolean> {
    return Promise.resolve(this.docs.has(d.digest));
  }
  fetch(d: SrcDescriptor): Promise<BlobReader> {
    const bytes = this.docs.get(d.digest);
    if (!bytes) return Promise.reject(new Error(`no blob ${d.digest}`));
    return Promise.resolve({ stream: ReadableStream.from([bytes]), offset: 0 });
  }
  async fetchManifest(d: SrcDescriptor): Promise<Uint8Array> {
    this.reads.set(d.digest, (this.reads.get(d.digest) ?? 0) + 1);
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    await new Promise((r) => setTimeout(r, 1));
    this.inFlight--;
    const bytes = this.docs.get(d.digest);
    if (!bytes) throw new Error(`no manifest ${d.digest}`);
    return bytes;
  }
  async push(d: SrcDescriptor, source: (offset: number) => Promise<BlobReader>): Promise<void> {
    const bytes = new Uint8Array(await new Response((await source(0)).stream).arrayBuffer());
    this.docs.set(d.digest, bytes);
    this.pushed.push(d.digest);
  }
  pushManifest(d: SrcDescriptor, bytes: Uint8Array): Promise<void> {
    this.docs.set(d.digest, bytes);
    this.pushed.push(d.digest);
    return Promise.resolve();
  }
  tag(): Promise<void> {
    return Promise.resolve();
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** An image manifest with an empty config (stored in `store`). */
function emptyImage(store: MemoryStore, note: string): SrcDescriptor {
  const config = store.add({ note }, "application/vnd.oci.image.config.v1+json");
  return store.add({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers: [] }, OCI_MANIFEST);
}

Deno.test("nesting: 10,000 levels stop at level 17: only MAX_NESTING manifests are ever read", async () => {
  const src = new MemoryStore("src", true);
  let desc = emptyImage(src, "leaf");
  for (let i = 0; i < 10_000; i++) {
    desc = src.add({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [desc] }, OCI_INDEX);
  }
  const dst = new MemoryStore("dst", true);
  await assert.rejects(
    copyGraph(src, dst, desc),
    (e) => e instanceof UserError && /nested more than 16 levels deep/.test(e.message),
  );
  assert.equal(src.reads.size, MAX_NESTING, "manifests read");
  assert.deepEqual(dst.pushed, [], "nothing pushed");
});

Deno.test("fan-out: an index listing one manifest 20,000 times reads and pushes it once", async () => {
  const src = new MemoryStore("src", true);
  const child = emptyImage(src, "only");
  const root = src.add(
    { schemaVersion: 2, mediaType: OCI_INDEX, manifests: Array(20_000).fill(child) },
    OCI_INDEX,
  );
  const dst = new MemoryStore("dst", true);
  const stats = await copyGraph(src, dst, root);
  assert.equal(src.reads.get(child.digest), 1);
  assert.equal(stats.manifestsCopied, 2);
  assert.equal(dst.pushed.filter((d) => d === child.digest).length, 1);
});

Deno.test("fan-out: an index of 500 distinct manifests reads at most 2×jobs of them at once", async () => {
  const src = new MemoryStore("src", false);
  const children = Array.from({ length: 500 }, (_, i) => emptyImage(src, `m${i}`));
  const root = src.add({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: children }, OCI_INDEX);
  const dst = new MemoryStore("dst", false);
  const stats = await copyGraph(src, dst, root, { jobs: 3 });
  assert.equal(stats.manifestsCopied, 501);
  assert.ok(src.maxInFlight <= 6, `at most 6 reads at once, saw ${src.maxInFlight}`);
  assert.ok(src.maxInFlight >= 2, `reads still overlap, saw ${src.maxInFlight}`);
});
