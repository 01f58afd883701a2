// Integration tests of `oci-archive:PATH[:TAG]` and `--all-tags` through the CLI, against
// the real peers: skopeo reads our archives and we read skopeo's; Debian's docker-registry
// for registry → archive → registry and tag-list pagination; the chaos proxy to slow a
// source down so that a write can be killed half-way.
import assert from "node:assert/strict";
import { join } from "node:path";
import { spawnUmoci, umoci, umociCommand } from "./fixtures/cli.ts";
import { startChaosProxy } from "./fixtures/chaos.ts";
import * as fx from "./fixtures/images.ts";
import { startRegistry } from "./fixtures/registry.ts";

const DIGEST_LINE = /^sha256:[a-f0-9]{64}$/;

async function copyOk(args: string[]): Promise<string> {
  const r = await umoci(["copy", ...args], { timeoutMs: 90_000 });
  assert.equal(r.code, 0, `umoci copy ${args.join(" ")} failed:\n${r.stderr}`);
  assert.match(r.stdout.trim(), DIGEST_LINE, `stdout is the digest alone: ${r.stdout}`);
  return r.stdout.trim();
}

/**
 * A failed run: exit `code` (1: the copy failed; 2: the command line), nothing on stdout, one
 * `error:` line on stderr, no stack frames.
 */
function assertOneLineError(r: fx.RunResult, pattern: RegExp, code = 1): void {
  assert.equal(r.code, code, `should fail with exit ${code}:\n${r.stderr}`);
  assert.equal(r.stdout, "");
  const lines = r.stderr.trimEnd().split("\n").filter((l) => l.startsWith("error:"));
  assert.equal(lines.length, 1, `one error line:\n${r.stderr}`);
  assert.match(lines[0], pattern);
  assert.ok(!/^\s*at /m.test(r.stderr) && !/\.ts:\d+:\d+/.test(r.stderr), r.stderr);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** `skopeo inspect --raw` of an image: the manifest bytes as skopeo reads them. */
async function skopeoRaw(ref: string): Promise<Uint8Array> {
  const r = await fx.runRaw("skopeo", ["--insecure-policy", "inspect", "--raw", ref]);
  assert.equal(r.code, 0, `skopeo inspect ${ref}: ${r.stderr}`);
  return r.stdout;
}

/** Tags of a repository, straight from the registry. */
async function registryTags(url: string, repo: string): Promise<string[]> {
  const res = await fetch(`${url}/v2/${repo}/tags/list`);
  return ((await res.json()).tags ?? []).sort();
}

/** The digest a registry holds under a tag. */
async function registryDigest(url: string, repo: string, tag: string): Promise<string> {
  const res = await fetch(`${url}/v2/${repo}/manifests/${tag}`, {
    method: "HEAD",
    headers: {
      accept: [fx.OCI_MANIFEST, fx.OCI_INDEX, fx.DOCKER_MANIFEST, fx.DOCKER_LIST].join(", "),
    },
  });
  await res.body?.cancel();
  assert.equal(res.status, 200, `${repo}:${tag} in the registry`);
  return res.headers.get("docker-content-digest")!;
}

/**
 * A front for `upstream` that pages `tags/list` as distribution-spec "Listing Tags" says
 * (`n`, `last`, `Link: <…>; rel="next"`), which Debian's docker-registry 2.8 does not do (it
 * ignores `n`); every other request is forwarded as it is. Records the tags/list targets.
 */
function paginatingFront(
  upstream: string,
): { host: string; pages: string[]; close(): Promise<void> } {
  const pages: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const url = new URL(req.url);
    const target = new URL(url.pathname + url.search, upstream);
    const m = /^\/v2\/(.+)\/tags\/list$/.exec(url.pathname);
    if (m && req.method === "GET") {
      pages.push(url.pathname + url.search);
      const all: string[] =
        ((await (await fetch(new URL(url.pathname, upstream))).json()).tags ?? [])
          .sort();
      const n = Number(url.searchParams.get("n") ?? all.length);
      const last = url.searchParams.get("last");
      const rest = last === null ? all : all.filter((t) => t > last);
      const page = rest.slice(0, n);
      const headers = new Headers({ "content-type": "application/json" });
      if (rest.length > n) {
        headers.set(
          "link",
          `</v2/${m[1]}/tags/list?n=${n}&last=${page[page.length - 1]}>; rel="next"`,
        );
      }
      return new Response(JSON.stringify({ name: m[1], tags: page }), { headers });
    }
    const res = await fetch(target, {
      method: req.method,
      headers: req.headers,
      body: req.body,
      redirect: "manual",
    });
    return new Response(req.method === "HEAD" ? null : res.body, {
      status: res.status,
      headers: res.headers,
    });
  });
  return {
    host: `127.0.0.1:${server.addr.port}`,
    pages,
    close: () => server.shutdown(),
  };
}

/** Entries of `dir` (for "nothing left behind" checks). */
function entries(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}

Deno.test("cli archive: skopeo reads our archive (inspect, copy) with every digest as ours", async () => {
  await fx.withTempDir(async (tmp) => {
    const src = join(tmp, "src");
    const image = await fx.buildRandomImage(src, "v1", { layerSizes: [300_000, 20_000] });
    const multi = await fx.buildMultiPlatformIndex(src, "multi", ["linux/amd64", "linux/arm64"]);
    const archive = join(tmp, "out.tar");
    const first = await umoci(["copy", `${src}:v1`, `oci-archive:${archive}:v1`]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stdout.trim(), image.manifest.digest);
    // The tag is said to be added, and the archive written at the end (not before).
    const said = first.stderr.split("\n");
    const adding = said.indexOf(`Adding reference 'v1' to ${archive} (written when the copy ends)`);
    assert.ok(adding >= 0, first.stderr);
    assert.ok(said.indexOf(`Writing ${archive}`) > adding, first.stderr);
    assert.equal(
      await copyOk([`${src}:multi`, `oci-archive:${archive}:multi`]),
      multi.index.digest,
    );
    assert.deepEqual(entries(tmp), ["out.tar", "src"], "no temp file left");

    assert.deepEqual(
      await skopeoRaw(`oci-archive:${archive}:v1`),
      await Deno.readFile(fx.blobFile(src, image.manifest.digest)),
    );
    const inspect = await fx.run("skopeo", ["inspect", `oci-archive:${archive}:v1`]);
    assert.equal(inspect.code, 0, inspect.stderr);
    assert.equal(JSON.parse(inspect.stdout).Digest, image.manifest.digest);

    const sk = join(tmp, "sk");
    await fx.mustSkopeoCopy([
      "copy",
      "-q",
      "--preserve-digests",
      `oci-archive:${archive}:v1`,
      `oci:${sk}:v1`,
    ]);
    await fx.mustSkopeoCopy([
      "copy",
      "-q",
      "--all",
      "--preserve-digests",
      `oci-archive:${archive}:multi`,
      `oci:${sk}:multi`,
    ]);
    assert.equal((await fx.tagEntry(sk, "v1")).digest, image.manifest.digest);
    assert.equal((await fx.tagEntry(sk, "multi")).digest, multi.index.digest);
    await fx.assertSameContent(src, "v1", sk, "v1");
    await fx.assertSameContent(src, "multi", sk, "multi");
    await fx.assertOciImageToolValid(sk, "v1");
  });
});

Deno.test("cli archive: we read skopeo's archive, and a GNU tar of a layout (./ names)", async () => {
  await fx.withTempDir(async (tmp) => {
    const orig = join(tmp, "orig");
    await fx.buildUmociImage(orig, "t", { layers: 2 });
    const skArchive = join(tmp, "sk.tar");
    await fx.mustSkopeoCopy(["copy", "-q", `oci:${orig}:t`, `oci-archive:${skArchive}:t`]);
    // What skopeo wrote, unpacked by GNU tar, is the reference.
    const unpacked = await fx.untar(skArchive, join(tmp, "unpacked"));
    const want = await fx.tagEntry(unpacked, "t");

    const dst = join(tmp, "dst");
    assert.equal(await copyOk([`oci-archive:${skArchive}:t`, `${dst}:t`]), want.digest);
    await fx.assertSameContent(unpacked, "t", dst, "t");
    await fx.assertOciImageToolValid(dst, "t");
    await fx.umociUnpack(dst, "t", join(tmp, "bundle"));

    // `tar -C layout -cf x.tar .` names members ./blobs/…, ./index.json.
    const gnu = join(tmp, "gnu.tar");
    await fx.mustRun("tar", ["--format=gnu", "-cf", gnu, "-C", unpacked, "."]);
    assert.equal(await copyOk([`oci-archive:${gnu}:t`, `${join(tmp, "dst2")}:t`]), want.digest);
    // And gzip-compressed (read in sequential passes).
    await fx.mustRun("gzip", ["-k", gnu]);
    assert.equal(
      await copyOk([`oci-archive:${gnu}.gz:t`, `${join(tmp, "dst3")}:t`]),
      want.digest,
    );
    await fx.assertSameContent(unpacked, "t", join(tmp, "dst3"), "t");
  });
});

Deno.test("cli archive: registry → archive → registry keeps every digest; rerun moves nothing", async () => {
  const reg = await startRegistry();
  try {
    await fx.withTempDir(async (tmp) => {
      const src = join(tmp, "src");
      const image = await fx.buildRandomImage(src, "v1", { layerSizes: [1_500_000, 4_000] });
      const multi = await fx.buildMultiPlatformIndex(src, "multi", ["linux/amd64", "linux/arm64"]);
      for (const tag of ["v1", "multi"]) {
        await copyOk(["--plain-http", `${src}:${tag}`, `oci://${reg.host}/app:${tag}`]);
      }
      const archive = join(tmp, "bundle.tar");
      for (const tag of ["v1", "multi"]) {
        await copyOk([
          "--plain-http",
          `oci://${reg.host}/app:${tag}`,
          `oci-archive:${archive}:${tag}`,
        ]);
      }
      // Again: everything is there, the archive is not even rewritten.
      const before = await Deno.stat(archive);
      const again = await umoci([
        "copy",
        "--plain-http",
        `oci://${reg.host}/app:v1`,
        `oci-archive:${archive}:v1`,
      ]);
      assert.equal(again.code, 0, again.stderr);
      assert.equal(
        again.stderr,
        `oci-archive:${archive}:v1 is already ${image.manifest.digest}: nothing to copy\n`,
      );
      assert.equal((await Deno.stat(archive)).ino, before.ino);

      for (const tag of ["v1", "multi"]) {
        const digest = await copyOk([
          "--plain-http",
          `oci-archive:${archive}:${tag}`,
          `oci://${reg.host}/restored:${tag}`,
        ]);
        assert.equal(digest, tag === "v1" ? image.manifest.digest : multi.index.digest);
        assert.equal(await registryDigest(reg.url, "restored", tag), digest);
      }
      // Pulled back into a layout: byte for byte what we started with.
      const back = join(tmp, "back");
      for (const tag of ["v1", "multi"]) {
        await copyOk(["--plain-http", `oci://${reg.host}/restored:${tag}`, `${back}:${tag}`]);
        await fx.assertSameContent(src, tag, back, tag);
      }
    });
  } finally {
    await reg.stop();
  }
});

Deno.test("cli archive: --all-tags from a registry, page by page, digest tags left out", async () => {
  const reg = await startRegistry();
  const front = paginatingFront(reg.url);
  try {
    await fx.withTempDir(async (tmp) => {
      const src = join(tmp, "src");
      const tags = ["a1", "b2", "c3", "d4", "e5"];
      const digests = new Map<string, string>();
      for (const [i, tag] of tags.entries()) {
        const built = await fx.buildRandomImage(src, tag, { layerSizes: [1000 + i] });
        digests.set(tag, built.manifest.digest);
        await copyOk(["--plain-http", `${src}:${tag}`, `oci://${reg.host}/many:${tag}`]);
      }
      // A cosign-style signature tag (sha256-HEX.sig): left out by default.
      const sigTag = `${digests.get("a1")!.replace(":", "-")}.sig`;
      await copyOk(["--plain-http", `${src}:a1`, `oci://${reg.host}/many:${sigTag}`]);
      assert.equal((await registryTags(reg.url, "many")).length, 6);

      const archive = join(tmp, "all.tar");
      const r = await umoci([
        "copy",
        "--plain-http",
        "--all-tags",
        "--tag-page-size=2",
        `oci://${front.host}/many`,
        `oci-archive:${archive}`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(
        r.stdout.trim().split("\n"),
        tags.map((t) => `${digests.get(t)} ${t}`),
        "one DIGEST TAG line per tag",
      );
      assert.match(r.stderr, /Leaving out 1 digest tag/);
      assert.deepEqual(front.pages, [
        "/v2/many/tags/list?n=2",
        "/v2/many/tags/list?n=2&last=b2",
        `/v2/many/tags/list?n=2&last=d4`,
      ], "3 pages of 2 of the 6 tags, following Link");

      // The archive holds exactly those tags; skopeo reads each.
      const listing = (await fx.mustRun("tar", ["-xOf", archive, "index.json"])).stdout;
      const names = JSON.parse(listing).manifests.map((m: fx.Descriptor) =>
        m.annotations?.[fx.REF_NAME]
      );
      assert.deepEqual(names.sort(), tags);
      for (const tag of tags) {
        const raw = await skopeoRaw(`oci-archive:${archive}:${tag}`);
        assert.equal(fx.digestOf(raw), digests.get(tag));
      }

      // …and back into another repository, every tag under its name.
      const back = await umoci([
        "copy",
        "--plain-http",
        "--all-tags",
        `oci-archive:${archive}`,
        `oci://${reg.host}/mirror`,
      ]);
      assert.equal(back.code, 0, back.stderr);
      assert.deepEqual(await registryTags(reg.url, "mirror"), tags);
      for (const tag of tags) {
        assert.equal(await registryDigest(reg.url, "mirror", tag), digests.get(tag));
      }
    });
  } finally {
    await front.close();
    await reg.stop();
  }
});

Deno.test("cli archive: --all-tags from a layout; a tag on SRC or DST is refused", async () => {
  await fx.withTempDir(async (tmp) => {
    const src = join(tmp, "src");
    const a = await fx.buildRandomImage(src, "a", { layerSizes: [100] });
    const b = await fx.buildMultiPlatformIndex(src, "b", ["linux/amd64", "linux/arm64"]);
    await fx.buildRandomImage(src, `${a.manifest.digest.replace(":", "-")}.att`, {
      layerSizes: [50],
    });
    const dst = join(tmp, "dst");
    const r = await umoci(["copy", "--all-tags", src, dst]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${a.manifest.digest} a\n${b.index.digest} b\n`);
    assert.deepEqual(await fx.listTags(dst), ["a", "b"]);
    await fx.assertSameContent(src, "a", dst, "a");
    await fx.assertSameContent(src, "b", dst, "b");

    for (
      const args of [[`${src}:a`, dst], [src, `${dst}:x`], [src, `oci-archive:${tmp}/x.tar:x`]]
    ) {
      const bad = await umoci(["copy", "--all-tags", ...args]);
      assert.equal(bad.code, 2, bad.stderr);
      assert.match(
        bad.stderr,
        /^error: --all-tags copies every tag: (SRC|DST) .* must name no tag/,
      );
    }
  });
});

Deno.test("cli archive: a truncated or corrupt archive is one error naming the member; nothing copied", async () => {
  const reg = await startRegistry();
  try {
    await fx.withTempDir(async (tmp) => {
      const src = join(tmp, "src");
      const image = await fx.buildRandomImage(src, "v1", { layerSizes: [200_000] });
      const good = join(tmp, "good.tar");
      await copyOk([`${src}:v1`, `oci-archive:${good}:v1`]);
      const bytes = await Deno.readFile(good);
      const layer = image.layers[0].digest.slice("sha256:".length);
      const tarList = (await fx.mustRun("tar", ["-tvf", good])).stdout;
      assert.ok(tarList.includes(layer));
      // Where the layer's data starts: find its header by name.
      const nameAt = indexOf(bytes, new TextEncoder().encode(`blobs/sha256/${layer}`));
      const dataAt = nameAt + 512;

      const cases: [string, Uint8Array, RegExp][] = [
        [
          "truncated.tar",
          bytes.subarray(0, dataAt + 1000),
          new RegExp(`member blobs/sha256/${layer} is truncated`),
        ],
        [
          "header.tar",
          flip(bytes, nameAt + 130),
          /corrupt tar header at byte \d+ \(after member .*\): header checksum mismatch/,
        ],
        [
          "data.tar",
          flip(bytes, dataAt + 5000),
          new RegExp(
            `archive .*data\\.tar: member blobs/sha256/${layer}: .*digest mismatch: expected sha256:${layer}`,
          ),
        ],
      ];
      for (const [name, content, pattern] of cases) {
        const path = join(tmp, name);
        await Deno.writeFile(path, content);
        const toLayout = join(tmp, `layout-${name}`);
        assertOneLineError(
          await umoci(["copy", `oci-archive:${path}:v1`, `${toLayout}:v1`]),
          pattern,
        );
        assert.equal(await exists(toLayout) && (await fx.listTags(toLayout)).length > 0, false);
        const toReg = await umoci([
          "copy",
          "--plain-http",
          `oci-archive:${path}:v1`,
          `oci://${reg.host}/bad:v1`,
        ]);
        assertOneLineError(toReg, pattern);
        assert.deepEqual(await registryTags(reg.url, "bad").catch(() => []), [], "nothing tagged");
      }
      // A truncated gzip stream too.
      await fx.mustRun("gzip", ["-k", good]);
      const gz = await Deno.readFile(`${good}.gz`);
      await Deno.writeFile(join(tmp, "cut.tar.gz"), gz.subarray(0, gz.length - 100));
      assertOneLineError(
        await umoci(["copy", `oci-archive:${tmp}/cut.tar.gz:v1`, `${tmp}/gzout:v1`]),
        /cut\.tar\.gz: (gzip data is corrupt or truncated|member .* is truncated)/,
      );
      assert.equal(await exists(join(tmp, "gzout")), false);
    });
  } finally {
    await reg.stop();
  }
});

Deno.test("cli archive: a destination that is not an archive, or a .tar.gz, is refused untouched", async () => {
  await fx.withTempDir(async (tmp) => {
    const src = join(tmp, "src");
    await fx.buildRandomImage(src, "v1", { layerSizes: [100] });
    const text = join(tmp, "notes.txt");
    await Deno.writeTextFile(text, "not a tar, and long enough to hold a header?".repeat(20));
    const before = await Deno.readFile(text);
    assertOneLineError(
      await umoci(["copy", `${src}:v1`, `oci-archive:${text}:v1`]),
      /notes\.txt exists and is not an OCI archive \(.*\); refused/,
    );
    assert.deepEqual(await Deno.readFile(text), before);
    assertOneLineError(
      await umoci(["copy", `${src}:v1`, `oci-archive:${tmp}/x.tar.gz:v1`]),
      /writing gzip-compressed archives is not supported/,
      2, // known from the command line alone
    );
    assertOneLineError(
      await umoci(["copy", `${src}:v1`, `oci-archive:${src}:v1`]),
      /is a directory; an OCI archive is a tar file/,
    );
    assert.deepEqual(entries(tmp), ["notes.txt", "src"]);
  });
});

Deno.test("cli archive: a write killed half-way leaves no file at PATH (or the old one); a rerun completes", async () => {
  const reg = await startRegistry();
  const proxy = await startChaosProxy(reg.url);
  try {
    await fx.withTempDir(async (tmp) => {
      const src = join(tmp, "src");
      const image = await fx.buildRandomImage(src, "v1", {
        layerSizes: [3 * 1024 * 1024, 20_000],
        raw: true,
      });
      await copyOk(["--plain-http", `${src}:v1`, `oci://${reg.host}/slow:v1`]);
      const out = join(tmp, "out");
      await Deno.mkdir(out);
      const archive = join(out, "slow.tar");
      // The big layer comes in 64 KiB pieces 50 ms apart (≈ 2.4 s): time to kill the copy.
      proxy.rules.push({
        method: "GET",
        path: /\/blobs\/sha256:/,
        times: Infinity,
        fault: { kind: "trickle", bytesPerChunk: 64 * 1024, delayMs: 50 },
      });
      for (const signal of ["SIGKILL", "SIGTERM"] as const) {
        const child = spawnUmoci([
          "copy",
          "--plain-http",
          `oci://${proxy.host}/slow:v1`,
          `oci-archive:${archive}:v1`,
        ]);
        // Wait until its temp archive exists and has taken some bytes (the SIGKILL run left
        // one behind: that is not this run's).
        const stale = entries(out);
        const deadline = Date.now() + 20_000;
        for (;;) {
          const temps = entries(out).filter((n) => n.endsWith(".tmp") && !stale.includes(n));
          if (temps.length > 0 && (await Deno.stat(join(out, temps[0]))).size > 512 * 1024) break;
          assert.ok(Date.now() < deadline, "the copy started writing");
          await new Promise((r) => setTimeout(r, 20));
        }
        child.kill(signal);
        const status = await child.status;
        await child.stdout.cancel();
        await child.stderr.cancel();
        assert.equal(status.success, false);
        assert.equal(await exists(archive), false, `${signal}: nothing at PATH`);
        if (signal === "SIGTERM") {
          assert.deepEqual(entries(out), [], "SIGTERM: temp removed (the stale one too)");
        }
      }
      proxy.rules.length = 0;
      // The rerun completes (and clears the temp file the SIGKILL left).
      assert.equal(
        await copyOk(["--plain-http", `oci://${proxy.host}/slow:v1`, `oci-archive:${archive}:v1`]),
        image.manifest.digest,
      );
      assert.deepEqual(entries(out), ["slow.tar"]);
      assert.equal(
        fx.digestOf(await skopeoRaw(`oci-archive:${archive}:v1`)),
        image.manifest.digest,
      );

      // Killed while adding a tag to an existing archive: the old archive stays as it was.
      const old = await Deno.readFile(archive);
      const built = await fx.buildRandomImage(src, "v2", {
        layerSizes: [3 * 1024 * 1024],
        raw: true,
      });
      await copyOk(["--plain-http", `${src}:v2`, `oci://${reg.host}/slow:v2`]);
      proxy.rules.push({
        method: "GET",
        path: /\/blobs\/sha256:/,
        times: Infinity,
        fault: { kind: "trickle", bytesPerChunk: 64 * 1024, delayMs: 50 },
      });
      const child = spawnUmoci([
        "copy",
        "--plain-http",
        `oci://${proxy.host}/slow:v2`,
        `oci-archive:${archive}:v2`,
      ]);
      const deadline = Date.now() + 20_000;
      while (!entries(out).some((n) => n.endsWith(".tmp"))) {
        assert.ok(Date.now() < deadline, "the copy started writing");
        await new Promise((r) => setTimeout(r, 20));
      }
      await new Promise((r) => setTimeout(r, 300));
      child.kill("SIGKILL");
      await child.status;
      await child.stdout.cancel();
      await child.stderr.cancel();
      assert.deepEqual(await Deno.readFile(archive), old, "the old archive is untouched");
      proxy.rules.length = 0;
      assert.equal(
        await copyOk(["--plain-http", `oci://${proxy.host}/slow:v2`, `oci-archive:${archive}:v2`]),
        built.manifest.digest,
      );
      assert.deepEqual(entries(out), ["slow.tar"]);
      for (const [tag, digest] of [["v1", image.manifest.digest], ["v2", built.manifest.digest]]) {
        assert.equal(fx.digestOf(await skopeoRaw(`oci-archive:${archive}:${tag}`)), digest);
      }
    });
  } finally {
    await proxy.close();
    await reg.stop();
  }
});

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  throw new Error("not found");
}

function flip(bytes: Uint8Array, at: number): Uint8Array {
  const copy = bytes.slice();
  copy[at] ^= 0xff;
  return copy;
}

Deno.test("cli job: 3 repositories, 5 tags: registry A → --images → archive → --all-tags → registry B", async () => {
  const [a, b] = [
    await startRegistry({ accessLog: true }),
    await startRegistry({ accessLog: true }),
  ];
  /** Access-log lines from index `from` on, as "METHOD PATH STATUS". */
  const since = (log: string[], from: number) =>
    log.slice(from).map((l) => l.split(" ").slice(0, 3).join(" "));
  try {
    await fx.withTempDir(async (tmp) => {
      const src = join(tmp, "src");
      const shared = fx.tarOfFiles({ "base.txt": new TextEncoder().encode("shared base\n") });
      const images: [string, string][] = [
        ["library/alpine", "3.19"],
        ["library/alpine", "3.20"],
        ["org/app", "v1"],
        ["org/app", "v2"],
        ["tools/x", "1.0"],
      ];
      const digests = new Map<string, string>();
      for (const [i, [repo, tag]] of images.entries()) {
        const built = await fx.buildRandomImage(src, `${i}`, {
          layerSizes: [20_000 + i],
          sharedLayer: shared,
        });
        digests.set(`${repo}:${tag}`, built.manifest.digest);
        await copyOk(["--plain-http", `${src}:${i}`, `oci://${a.host}/${repo}:${tag}`]);
      }
      // Every config and layer, each once (the shared layer is in all five images).
      const blobs = (await fx.listBlobs(src)).length - images.length;
      const list = join(tmp, "images.txt");
      await Deno.writeTextFile(
        list,
        "# the bundle\n" +
          images.map(([repo, tag]) => `oci://${a.host}/${repo}:${tag}  # ${repo}\n`).join("\n"),
      );
      const bundle = join(tmp, "bundle.tar");
      const sharedDigest = fx.digestOf(shared);
      let mark = a.requests().length;
      const pack = await umoci(["copy", "--plain-http", "--images", list, `oci-archive:${bundle}`]);
      assert.equal(pack.code, 0, pack.stderr);
      // The five images ran side by side; the layer they share was read from A once, and
      // every other blob once too (each a GET answered 200).
      const packed = since(a.requests(), mark);
      const gets = packed.filter((l) => /^GET \S+\/blobs\/sha256:\S+ 200$/.test(l));
      assert.equal(gets.filter((l) => l.includes(sharedDigest)).length, 1, gets.join("\n"));
      assert.equal(gets.length, blobs, gets.join("\n"));
      assert.equal(new Set(gets.map((l) => l.split("/blobs/")[1])).size, blobs);
      assert.deepEqual(
        pack.stdout.trim().split("\n"),
        images.map(([r, t]) => `${digests.get(`${r}:${t}`)} oci://${a.host}/${r}:${t}`),
      );
      assert.match(
        pack.stderr,
        new RegExp(`Images: 5 copied, 0 already present, 0 failed; ${blobs} blobs`),
      );
      // Each image under its full reference, as skopeo's oci: names them; skopeo reads them.
      for (const [repo, tag] of images) {
        const raw = await skopeoRaw(`oci-archive:${bundle}:${a.host}/${repo}:${tag}`);
        assert.equal(fx.digestOf(raw), digests.get(`${repo}:${tag}`));
      }
      // A rerun: every image at one request, zero bytes moved, the archive not rewritten.
      const ino = (await Deno.stat(bundle)).ino;
      mark = a.requests().length;
      const again = await umoci([
        "copy",
        "--plain-http",
        "--images",
        list,
        `oci-archive:${bundle}`,
      ]);
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stderr, /Images: 0 copied, 5 already present, 0 failed; 0 blobs \(0 B\)/);
      assert.equal((await Deno.stat(bundle)).ino, ino);
      assert.deepEqual(
        since(a.requests(), mark).sort(),
        images.map(([repo, tag]) => `HEAD /v2/${repo}/manifests/${tag} 200`).sort(),
      );

      // The way back: each full-reference name into its own repository under the prefix.
      const restore = [
        "copy",
        "--plain-http",
        "--all-tags",
        `oci-archive:${bundle}`,
        `oci://${b.host}/mirror`,
      ];
      mark = b.requests().length;
      const back = await umoci(restore);
      assert.equal(back.code, 0, back.stderr);
      // Into B the shared layer is uploaded once (one closing PUT with its digest) and
      // mounted into the two other repositories; alpine's second tag finds it present.
      const restored = since(b.requests(), mark);
      const uploads = restored.filter((l) =>
        l.startsWith("PUT ") && l.includes(`digest=${encodeURIComponent(sharedDigest)}`)
      );
      assert.equal(uploads.length, 1, restored.join("\n"));
      const mounts = restored.filter((l) =>
        l.startsWith("POST ") && l.includes(`mount=${encodeURIComponent(sharedDigest)}`) &&
        l.endsWith(" 201")
      );
      assert.equal(mounts.length, 2, restored.join("\n"));
      assert.match(
        back.stderr,
        new RegExp(`Images: 5 copied, 0 already present, 0 failed; ${blobs} blobs`),
      );
      for (const [repo, tag] of images) {
        assert.equal(
          await registryDigest(b.url, `mirror/${repo}`, tag),
          digests.get(`${repo}:${tag}`),
        );
      }
      assert.deepEqual(await registryTags(b.url, "mirror/library/alpine"), ["3.19", "3.20"]);
      assert.deepEqual(await registryTags(b.url, "mirror/org/app"), ["v1", "v2"]);
      mark = b.requests().length;
      const rerun = await umoci(restore);
      assert.equal(rerun.code, 0, rerun.stderr);
      assert.match(rerun.stderr, /Images: 0 copied, 5 already present, 0 failed; 0 blobs \(0 B\)/);
      // One request an image: the HEAD of its tag.
      assert.deepEqual(
        since(b.requests(), mark).sort(),
        images.map(([repo, tag]) => `HEAD /v2/mirror/${repo}/manifests/${tag} 200`).sort(),
      );
    });
  } finally {
    await a.stop();
    await b.stop();
  }
});

Deno.test("cli job: --keep-going copies the others and exits 1 naming the missing image", async () => {
  const reg = await startRegistry();
  try {
    await fx.withTempDir(async (tmp) => {
      const src = join(tmp, "src");
      const one = await fx.buildRandomImage(src, "one", { layerSizes: [1000] });
      const two = await fx.buildRandomImage(src, "two", { layerSizes: [2000] });
      await copyOk(["--plain-http", `${src}:one`, `oci://${reg.host}/one:v1`]);
      await copyOk(["--plain-http", `${src}:two`, `oci://${reg.host}/two:v1`]);
      const list = join(tmp, "list");
      await Deno.writeTextFile(
        list,
        [`oci://${reg.host}/one:v1`, `oci://${reg.host}/gone:v9`, `oci://${reg.host}/two:v1`].join(
          "\n",
        ),
      );
      const out = join(tmp, "out.tar");
      const r = await umoci([
        "copy",
        "--plain-http",
        "--keep-going",
        "--images",
        list,
        `oci-archive:${out}`,
      ]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /Images: 2 copied, 0 already present, 1 failed/);
      const errors = r.stderr.split("\n").filter((l) => l.startsWith("error:"));
      assert.deepEqual(errors, [`error: 1 of 3 images failed: ${reg.host}/gone:v9`]);
      const back = await archiveTags(out);
      assert.deepEqual(back, [`${reg.host}/one:v1`, `${reg.host}/two:v1`]);
      assert.equal(
        fx.digestOf(await skopeoRaw(`oci-archive:${out}:${reg.host}/two:v1`)),
        two.manifest.digest,
      );
      // Without --keep-going the first failure stops the job; what was finished stays. One
      // image at a time (-j 1): the image before the failure is there, the one after is not.
      const stop = await umoci([
        "copy",
        "--plain-http",
        "-j",
        "1",
        "--images",
        list,
        `oci://${reg.host}/copy`,
      ]);
      assert.equal(stop.code, 1);
      assert.match(stop.stderr, /error: manifest v9 not found in .*\/gone/);
      // The summary counts all three; stdout names the image that was copied.
      assert.match(
        stop.stderr,
        /Images: 1 copied, 0 already present, 1 failed, 1 not copied \(the job stopped\)/,
      );
      assert.equal(stop.stdout, `${one.manifest.digest} oci://${reg.host}/one:v1\n`);
      assert.equal(await registryDigest(reg.url, "copy/one", "v1"), one.manifest.digest);
      assert.deepEqual(await registryTags(reg.url, "copy/two").catch(() => []), []);
      // Into an archive: it is still written, with the image that finished.
      const partial = join(tmp, "partial.tar");
      const stopped = await umoci([
        "copy",
        "--plain-http",
        "-j",
        "1",
        "--images",
        list,
        `oci-archive:${partial}`,
      ]);
      assert.equal(stopped.code, 1, stopped.stderr);
      assert.deepEqual(await archiveTags(partial), [`${reg.host}/one:v1`]);
      assert.equal(
        fx.digestOf(await skopeoRaw(`oci-archive:${partial}:${reg.host}/one:v1`)),
        one.manifest.digest,
      );
      // Side by side (the default): the images running when one fails stop before their
      // tags; whatever tag exists names a complete image.
      const side = await umoci([
        "copy",
        "--plain-http",
        "--images",
        list,
        `oci://${reg.host}/side`,
      ]);
      assert.equal(side.code, 1);
      const errors2 = side.stderr.split("\n").filter((l) => l.startsWith("error:"));
      assert.equal(errors2.length, 1, side.stderr);
      assert.match(errors2[0], /error: manifest v9 not found in .*\/gone/);
      for (const [repo, built] of [["side/one", one], ["side/two", two]] as const) {
        const tags = await registryTags(reg.url, repo).catch(() => []);
        if (tags.length === 0) continue;
        assert.equal(await registryDigest(reg.url, repo, "v1"), built.manifest.digest);
        const check = await umoci([
          "copy",
          "--plain-http",
          `oci://${reg.host}/${repo}:v1`,
          join(tmp, "check:v1"),
        ]);
        assert.equal(check.code, 0, check.stderr);
      }
    });
  } finally {
    await reg.stop();
  }
});

Deno.test("cli job into an archive: a blob that fails between others is cut out; the images that finished are published", async () => {
  const reg = await startRegistry();
  // The middle image's layer arrives with a flipped byte, every time: its region in the
  // archive, between the first image's blobs and the third's, must not become a gap.
  const proxy = await startChaosProxy(reg.url);
  try {
    await fx.withTempDir(async (tmp) => {
      const src = join(tmp, "src");
      const built = [];
      for (const [name, size] of [["one", 3000], ["two", 5000], ["three", 4000]] as const) {
        built.push(await fx.buildRandomImage(src, name, { layerSizes: [size] }));
        await copyOk(["--plain-http", `${src}:${name}`, `oci://${reg.host}/${name}:v1`]);
      }
      const [one, two, three] = built;
      proxy.rules.push({
        method: "GET",
        path: new RegExp(`/blobs/${two.layers[0].digest}`),
        times: Infinity,
        fault: { kind: "flip", offset: 100 },
      });
      const list = join(tmp, "list");
      await Deno.writeTextFile(
        list,
        ["one", "two", "three"].map((n) => `oci://${proxy.host}/${n}:v1`).join("\n"),
      );
      const out = join(tmp, "out.tar");
      const run = (extra: string[], target: string) =>
        umoci([
          "copy",
          "--plain-http",
          "-j",
          "1",
          "--retries",
          "0",
          ...extra,
          "--images",
          list,
          `oci-archive:${target}`,
        ]);
      const r = await run(["--keep-going"], out);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /Images: 2 copied, 0 already present, 1 failed/);
      assert.match(r.stderr, /digest mismatch/);
      assert.doesNotMatch(r.stderr, /not written/);
      assert.deepEqual(await archiveTags(out), [`${proxy.host}/one:v1`, `${proxy.host}/three:v1`]);
      // A tar that GNU tar and skopeo read through, every blob as its digest says, and no
      // member of the failed layer.
      const x = await fx.untar(out, join(tmp, "x"));
      await fx.assertBlobsVerify(x);
      assert.equal(await exists(fx.blobFile(x, two.layers[0].digest)), false);
      for (const [name, img] of [["one", one], ["three", three]] as const) {
        assert.equal(
          fx.digestOf(await skopeoRaw(`oci-archive:${out}:${proxy.host}/${name}:v1`)),
          img.manifest.digest,
        );
      }
      // Without --keep-going the job stops at the failure; the image before it is published.
      const stopped = join(tmp, "stopped.tar");
      const s = await run([], stopped);
      assert.equal(s.code, 1, s.stderr);
      assert.deepEqual(await archiveTags(stopped), [`${proxy.host}/one:v1`]);
      // No temp file is left beside either archive.
      assert.deepEqual(
        [...Deno.readDirSync(tmp)].map((e) => e.name).filter((n) => n.endsWith(".tmp")),
        [],
      );
    });
  } finally {
    await proxy.close();
    await reg.stop();
  }
});

Deno.test("cli job into an archive: when files cannot be opened (ulimit -n), what is published is a whole tar", async () => {
  await fx.withTempDir(async (tmp) => {
    const src = join(tmp, "src");
    const names = Array.from({ length: 30 }, (_, i) => `i${i}`);
    for (const [i, name] of names.entries()) {
      await fx.buildRandomImage(src, name, { layerSizes: [1000 + i, 2000 + i] });
    }
    const list = join(tmp, "list");
    await Deno.writeTextFile(list, names.map((n) => `oci:${src}:${n}`).join("\n"));
    const [cmd, ...pre] = umociCommand();
    // With few descriptors, some blob transfers fail to open the archive's temp file after
    // others have taken the places behind theirs. Several limits: where the line falls
    // between all and none of the images depends on the machine.
    let partial = 0;
    for (const limit of [50, 60, 70, 80, 100]) {
      const out = join(tmp, `out-${limit}.tar`);
      const quoted = [
        ...[cmd, ...pre],
        "copy",
        "-q",
        "-j",
        "16",
        "--keep-going",
        "--images",
        list,
        `oci-archive:${out}`,
      ].map((a) => `'${a}'`).join(" ");
      const r = await new Deno.Command("sh", {
        args: ["-c", `ulimit -n ${limit} && exec ${quoted}`],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = new TextDecoder().decode(r.stderr);
      const copied = new TextDecoder().decode(r.stdout).split("\n").filter((l) => l);
      if (copied.length === 0) {
        // No image finished: no archive of stray blobs either.
        assert.equal(await exists(out), false, `${limit}: ${stderr}`);
        continue;
      }
      if (r.code !== 0) partial++;
      // GNU tar reads to the end (a gap of zeros would end it before index.json), every
      // blob verifies, and the tags are exactly the images stdout names.
      await fx.assertBlobsVerify(await fx.untar(out, join(tmp, `x-${limit}`)));
      assert.deepEqual(
        await archiveTags(out),
        copied.map((l) => l.split(" ")[1].replace(/^oci:.*:/, "")).sort(),
        `${limit}: ${stderr}`,
      );
    }
    assert.ok(partial > 0, "some limit let some images through and failed others");
  });
});

/** The ref.names of an archive, read with GNU tar. */
async function archiveTags(path: string): Promise<string[]> {
  const index = JSON.parse((await fx.mustRun("tar", ["-xOf", path, "index.json"])).stdout);
  return index.manifests.map((m: fx.Descriptor) => m.annotations?.[fx.REF_NAME]).sort();
}
