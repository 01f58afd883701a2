// `deno task bench`: umoci copy side by side with skopeo, in one run, on this machine.
//
// Starts two real registries (docker-registry) on loopback, builds the test images, then
// times umoci and skopeo alternately (A B A B …, `--pairs` pairs, medians) for push, pull,
// re-pull into a layout that has everything, re-push to a registry that has everything,
// registry→registry between two registries, and a copy across repositories of one registry
// (mount). Wall time and peak RSS come from /usr/bin/time; request counts from the
// registries' access logs. skopeo runs with --all --preserve-digests and a private,
// empty blob-info cache (unshare + tmpfs), so both tools copy the same content cold; the
// bench checks that both produce the same manifest digests. The rows that take tens of
// milliseconds (re-pull, re-push) are sampled SHORT_REPEATS times per tool in each pair:
// their run-to-run spread on a small VM (±15 ms) is as large as the difference measured,
// and three samples made their median a coin toss.
//
//   deno task bench                  full run (≈ 5 min): 512 MiB image, 100 small layers, …
//   deno task bench --pairs 5        more pairs
//   deno task bench --huge           also a 1 GiB single-layer image (memory row)
//   deno task bench --smoke          tiny images, one pair: checks the script works
//   deno task bench --markdown FILE  also write the table as Markdown
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { type RunningRegistry, startRegistry } from "../tests/fixtures/registry.ts";
import {
  buildMultiPlatformIndex,
  buildRandomImage,
  initLayout,
  tagDescriptor,
  writeImageManifest,
  writeTarLayer,
} from "../tests/fixtures/images.ts";
import { RUN_FLAGS } from "./build.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    pairs: { type: "string", default: "3" },
    smoke: { type: "boolean", default: false },
    huge: { type: "boolean", default: false },
    markdown: { type: "string" },
    keep: { type: "boolean", default: false },
    verbose: { type: "boolean", default: false },
    only: { type: "string" },
  },
});
const SMOKE = flags.smoke;
const PAIRS = SMOKE ? 1 : Math.max(1, Number(flags.pairs));
/** Samples per tool and pair of the rows that take tens of milliseconds (re-pull, re-push). */
const SHORT_REPEATS = SMOKE ? 1 : 3;
const MiB = 1024 * 1024;
const root = fileURLToPath(new URL("../", import.meta.url));
const SKOPEO_CACHE = "/var/lib/containers/cache";
/** Drop the page cache before every timed run (needs root; turned off on the first refusal). */
let dropCaches = true;

interface Sample {
  seconds: number;
  rssKiB: number;
  requests: string[];
  digest?: string;
}

interface Row {
  op: string;
  image: string;
  umoci: Sample[];
  skopeo: Sample[];
  /** umoci/skopeo ratio target for the median wall time, if any. */
  target?: number;
  /** What else must hold (e.g. no blob transferred), checked against umoci's requests. */
  check?: (s: Sample) => string | undefined;
  notes: string[];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Before every timed run (and before its request count starts): the same state for both
 * tools: dirty pages written back (`sync`) and, where allowed (root), the page
 * cache dropped. Without that, runs late in the sequence were up to 2× slower for both tools
 * (system time in the kernel's page-cache copy grew with the cache), so which tool happened
 * to run when decided the ratio.
 */
async function prepare(): Promise<void> {
  await new Deno.Command("sync").output();
  if (dropCaches) {
    await Deno.writeTextFile("/proc/sys/vm/drop_caches", "3\n").catch(() => dropCaches = false);
    // The data is cold for both tools; their own executables should not be (deno's binary
    // is ~95 MB, skopeo's ~30 MB, and users run them warm). `--version` pages in only the
    // start-up code, so each tool copies a tiny image from the registry once, untimed: the
    // code paths of a copy (network, files, hashing) are then warm for both alike.
    if (dropCaches) await warmUp?.();
  }
}

/** Run argv under bash's time and /usr/bin/time; returns wall seconds, peak RSS, output. */
async function timed(
  argv: string[],
  opts: { isolateSkopeo?: boolean } = {},
): Promise<{ seconds: number; rssKiB: number; stdout: string; stderr: string; code: number }> {
  // Wall time from bash's `time` in ms (GNU time's %e has only 10 ms steps, as long as a
  // whole re-pull); peak RSS from GNU time. Both tools are measured the same way, inside
  // skopeo's private mount namespace for skopeo.
  const script = `TIMEFORMAT='@@WALL %3R'; time /usr/bin/time -f '@@RSS %M' "$@"`;
  let cmd: string;
  let args: string[];
  if (opts.isolateSkopeo) {
    await Deno.mkdir(SKOPEO_CACHE, { recursive: true });
    cmd = "unshare";
    args = [
      "-m",
      "bash",
      "-c",
      `mount -t tmpfs tmpfs ${SKOPEO_CACHE} && { ${script}; }`,
      "bash",
      ...argv,
    ];
  } else {
    cmd = "bash";
    args = ["-c", script, "bash", ...argv];
  }
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  const wall = /@@WALL ([\d.]+)/.exec(stderr);
  const rss = /@@RSS (\d+)/.exec(stderr);
  if (!wall || !rss) throw new Error(`no timing from ${argv.join(" ")}:\n${stderr}`);
  return {
    seconds: Number(wall[1]),
    rssKiB: Number(rss[1]),
    stdout: new TextDecoder().decode(out.stdout),
    stderr: stderr.replace(/@@(WALL|RSS).*\n?/g, ""),
    code: out.code,
  };
}

const UMOCI = [Deno.execPath(), "run", ...RUN_FLAGS, join(root, "dist", "umoci.js")];

/** Set once the registry holds the warm-up image: one untimed tiny copy per tool. */
let warmUp: (() => Promise<void>) | undefined;

async function setUpWarmUp(reg: RunningRegistry, work: string): Promise<void> {
  const dir = join(work, "warm-src");
  await buildRandomImage(dir, "v1", { layerSizes: [64 * 1024], raw: true });
  const ref = `${reg.host}/warm/tiny:v1`;
  await quiet([...UMOCI, "copy", "--plain-http", `${dir}:v1`, `oci://${ref}`]);
  warmUp = async () => {
    const out = join(work, "warm-out");
    await quiet([...UMOCI, "copy", "--plain-http", `oci://${ref}`, `${out}-u:v1`]);
    await quiet([
      "skopeo",
      "--insecure-policy",
      "copy",
      "--src-tls-verify=false",
      "-q",
      `docker://${ref}`,
      `oci:${out}-s:v1`,
    ]);
    for (const d of [`${out}-u`, `${out}-s`]) await Deno.remove(d, { recursive: true });
  };
}

async function quiet(argv: string[]): Promise<void> {
  const r = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdout: "null",
    stderr: "piped",
  })
    .output();
  if (!r.success) {
    throw new Error(`${argv.join(" ")} failed:\n${new TextDecoder().decode(r.stderr)}`);
  }
}

async function runUmoci(args: string[], regs: RunningRegistry[]): Promise<Sample> {
  await prepare();
  await settle(); // the warm-up's access-log lines are not this run's
  const before = regs.map((r) => r.requests().length);
  const r = await timed([...UMOCI, "copy", "--plain-http", "--log=warn", ...args]);
  if (r.code !== 0) throw new Error(`umoci copy ${args.join(" ")} failed:\n${r.stderr}`);
  if (flags.verbose) console.error(`  umoci  ${r.seconds.toFixed(3)} s ${args.join(" ")}`);
  await settle();
  const requests = regs.flatMap((reg, i) => reg.requests().slice(before[i]));
  return { seconds: r.seconds, rssKiB: r.rssKiB, requests, digest: r.stdout.trim() };
}

async function runSkopeo(args: string[], regs: RunningRegistry[], dir: string): Promise<Sample> {
  await prepare();
  await settle();
  const before = regs.map((r) => r.requests().length);
  const digestFile = join(dir, `skopeo-digest-${crypto.randomUUID()}`);
  const r = await timed([
    "skopeo",
    "--insecure-policy",
    "copy",
    "--all",
    "--preserve-digests",
    "--src-tls-verify=false",
    "--dest-tls-verify=false",
    "--dest-oci-accept-uncompressed-layers",
    "--digestfile",
    digestFile,
    "-q",
    ...args,
  ], { isolateSkopeo: true });
  if (r.code !== 0) throw new Error(`skopeo copy ${args.join(" ")} failed:\n${r.stderr}`);
  if (flags.verbose) console.error(`  skopeo ${r.seconds.toFixed(3)} s ${args.join(" ")}`);
  await settle();
  const requests = regs.flatMap((reg, i) => reg.requests().slice(before[i]));
  const digest = (await Deno.readTextFile(digestFile).catch(() => "")).trim();
  await Deno.remove(digestFile).catch(() => {});
  return { seconds: r.seconds, rssKiB: r.rssKiB, requests, digest };
}

/** Access-log lines arrive asynchronously: give the last ones a moment. */
function settle(): Promise<void> {
  return new Promise((r) => setTimeout(r, 150));
}

const isBlobGet = (l: string) => /^GET \/v2\/.+\/blobs\/sha256:/.test(l);
const isUpload = (l: string) => /^(POST|PATCH|PUT) \/v2\/.+\/blobs\/uploads\//.test(l);
const isMount = (l: string) => /^POST \/v2\/.+\/blobs\/uploads\/\?.*mount=/.test(l);

function noBlobTransfer(s: Sample): string | undefined {
  const gets = s.requests.filter(isBlobGet).length;
  const ups = s.requests.filter((l) => isUpload(l) && !isMount(l)).length;
  return gets || ups ? `${gets} blob GETs, ${ups} upload requests` : undefined;
}

// ---------------------------------------------------------------------------------------
// Images

interface BenchImage {
  name: string;
  dir: string;
  tag: string;
  /** ratio targets per operation (umoci/skopeo) */
  targets: Partial<Record<string, number>>;
}

async function makeRootfsLayer(dir: string, files: number): Promise<void> {
  // One realistic rootfs layer: many small files of mixed sizes in one tar.
  const tree = await Deno.makeTempDir({ prefix: "bench-rootfs-" });
  try {
    for (let i = 0; i < files; i++) {
      const sub = join(tree, `usr/lib/pkg${i % 50}`);
      await Deno.mkdir(sub, { recursive: true });
      const size = 512 + ((i * 7919) % (16 * 1024));
      const bytes = new Uint8Array(size);
      crypto.getRandomValues(bytes.subarray(0, Math.min(size, 65536)));
      await Deno.writeFile(join(sub, `file${i}.so`), bytes);
    }
    const tar = join(tree, "..", `${crypto.randomUUID()}.tar`);
    const t = await new Deno.Command("tar", { args: ["-C", tree, "-cf", tar, "."] }).output();
    if (!t.success) throw new Error("tar failed");
    await initLayout(dir);
    const layer = await writeTarLayer(dir, await Deno.readFile(tar), "oci");
    await Deno.remove(tar);
    const manifest = await writeImageManifest(dir, [layer], { kind: "oci" });
    await tagDescriptor(dir, manifest, "v1");
  } finally {
    await Deno.remove(tree, { recursive: true });
  }
}

async function buildImages(work: string): Promise<BenchImage[]> {
  const images: BenchImage[] = [];
  const big = join(work, "img-big");
  await buildRandomImage(big, "v1", {
    layerSizes: SMOKE ? [MiB, MiB, MiB, MiB] : [128 * MiB, 128 * MiB, 128 * MiB, 128 * MiB],
    raw: true,
  });
  images.push({
    name: SMOKE ? "4×1MiB" : "512MiB (4×128MiB)",
    dir: big,
    tag: "v1",
    targets: { push: 0.8, pull: 0.7, "re-pull": 1.5, "re-push": 1.5, "registry→registry": 0.7 },
  });
  const small = join(work, "img-small");
  await buildRandomImage(small, "v1", {
    layerSizes: Array.from({ length: SMOKE ? 10 : 100 }, () => 32 * 1024),
    raw: true,
  });
  images.push({
    name: `${SMOKE ? 10 : 100}×32KiB`,
    dir: small,
    tag: "v1",
    targets: { push: 0.5, pull: 0.7, "re-pull": 1.5, "re-push": 1.5 },
  });
  const multi = join(work, "img-multi");
  await buildMultiPlatformIndex(multi, "v1", ["linux/amd64", "linux/arm64", "linux/arm/v7"]);
  images.push({ name: "3-platform index", dir: multi, tag: "v1", targets: {} });
  const rootfs = join(work, "img-rootfs");
  await makeRootfsLayer(rootfs, SMOKE ? 50 : 3000);
  images.push({ name: "rootfs layer", dir: rootfs, tag: "v1", targets: {} });
  if (flags.huge) {
    const huge = join(work, "img-huge");
    await buildRandomImage(huge, "v1", { layerSizes: [1024 * MiB], raw: true });
    images.push({ name: "1GiB layer", dir: huge, tag: "v1", targets: {} });
  }
  return images;
}

// ---------------------------------------------------------------------------------------

async function benchImage(
  img: BenchImage,
  a: RunningRegistry,
  b: RunningRegistry,
  work: string,
  rows: Row[],
): Promise<void> {
  const id = img.dir.split("-").pop()!;
  const seed = `${a.host}/seed/${id}:v1`;
  // Seed the source repository once (not timed).
  await runUmoci([`${img.dir}:${img.tag}`, `oci://${seed}`], [a]);
  const row = (op: string, check?: Row["check"]): Row => {
    const r: Row = {
      op,
      image: img.name,
      umoci: [],
      skopeo: [],
      target: img.targets[op],
      check,
      notes: [],
    };
    rows.push(r);
    return r;
  };
  const push = row("push");
  const pull = row("pull");
  const repull = row("re-pull", noBlobTransfer);
  const repush = row("re-push", noBlobTransfer);
  const r2r = row("registry→registry");
  const mount = row("mount (same registry)", noBlobTransfer);
  const toArchive = row("layout → oci-archive");
  const fromArchive = row("oci-archive → layout");
  const only = img.name === "1GiB layer";
  for (let i = 0; i < PAIRS; i++) {
    for (const tool of ["umoci", "skopeo"] as const) {
      const run = (args: string[], regs: RunningRegistry[], dockerArgs: string[]) =>
        tool === "umoci" ? runUmoci(args, regs) : runSkopeo(dockerArgs, regs, work);
      const n = `${tool}-${i}`;
      // push: layout → new repository
      push[tool].push(
        await run([`${img.dir}:${img.tag}`, `oci://${a.host}/push/${id}-${n}:v1`], [a], [
          `oci:${img.dir}:${img.tag}`,
          `docker://${a.host}/push/${id}-${n}:v1`,
        ]),
      );
      // pull: registry → new layout, then again into the same layout
      const out = join(work, `out-${id}-${n}`);
      pull[tool].push(
        await run([`oci://${seed}`, `${out}:v1`], [a], [`docker://${seed}`, `oci:${out}:v1`]),
      );
      for (let k = 0; !only && k < SHORT_REPEATS; k++) {
        repull[tool].push(
          await run([`oci://${seed}`, `${out}:v1`], [a], [`docker://${seed}`, `oci:${out}:v1`]),
        );
      }
      await Deno.remove(out, { recursive: true });
      // an oci-archive written from the layout, then read back into a new layout
      const tar = join(work, `archive-${id}-${n}.tar`);
      toArchive[tool].push(
        await run([`${img.dir}:${img.tag}`, `oci-archive:${tar}:v1`], [], [
          `oci:${img.dir}:${img.tag}`,
          `oci-archive:${tar}:v1`,
        ]),
      );
      const unpacked = join(work, `unpacked-${id}-${n}`);
      fromArchive[tool].push(
        await run([`oci-archive:${tar}:v1`, `${unpacked}:v1`], [], [
          `oci-archive:${tar}:v1`,
          `oci:${unpacked}:v1`,
        ]),
      );
      await Deno.remove(tar);
      await Deno.remove(unpacked, { recursive: true });
      if (only) continue;
      // re-push: layout → the repository that has everything
      for (let k = 0; k < SHORT_REPEATS; k++) {
        repush[tool].push(
          await run([`${img.dir}:${img.tag}`, `oci://${seed}`], [a], [
            `oci:${img.dir}:${img.tag}`,
            `docker://${seed}`,
          ]),
        );
      }
      // registry → registry
      r2r[tool].push(
        await run([`oci://${seed}`, `oci://${b.host}/r2r/${id}-${n}:v1`], [a, b], [
          `docker://${seed}`,
          `docker://${b.host}/r2r/${id}-${n}:v1`,
        ]),
      );
      // across repositories of one registry
      mount[tool].push(
        await run([`oci://${seed}`, `oci://${a.host}/mount/${id}-${n}:v1`], [a], [
          `docker://${seed}`,
          `docker://${a.host}/mount/${id}-${n}:v1`,
        ]),
      );
    }
  }
}

function fmtRow(r: Row): { cells: string[]; ok: boolean } {
  const u = median(r.umoci.map((s) => s.seconds));
  const s = median(r.skopeo.map((x) => x.seconds));
  const ratio = s > 0 ? u / s : u > 0 ? Infinity : 1;
  const uRss = Math.max(...r.umoci.map((x) => x.rssKiB)) / 1024;
  const sRss = Math.max(...r.skopeo.map((x) => x.rssKiB)) / 1024;
  const uReq = median(r.umoci.map((x) => x.requests.length));
  const sReq = median(r.skopeo.map((x) => x.requests.length));
  const notes = [...r.notes];
  let ok = true;
  if (r.target !== undefined && !SMOKE && ratio > r.target) {
    ok = false;
    notes.push(`ratio above ${r.target}`);
  }
  if (!SMOKE && uRss > 80) {
    ok = false;
    notes.push("RSS above 80 MiB");
  }
  for (const x of r.umoci) {
    const problem = r.check?.(x);
    if (problem) {
      ok = false;
      notes.push(problem);
      break;
    }
  }
  const digestsU = new Set(r.umoci.map((x) => x.digest).filter(Boolean));
  const digestsS = new Set(r.skopeo.map((x) => x.digest).filter(Boolean));
  if (digestsU.size && digestsS.size) {
    const same = digestsU.size === 1 && digestsS.size === 1 &&
      [...digestsU][0] === [...digestsS][0];
    if (!same) {
      ok = false;
      notes.push(
        `digests differ: umoci ${[...digestsU].join(",")} skopeo ${[...digestsS].join(",")}`,
      );
    }
  }
  return {
    cells: [
      r.op,
      r.image,
      u.toFixed(3),
      s.toFixed(3),
      Number.isFinite(ratio) ? ratio.toFixed(2) : "∞",
      r.target === undefined ? "" : `≤ ${r.target}`,
      uRss.toFixed(0),
      sRss.toFixed(0),
      String(uReq),
      String(sReq),
      ok ? (notes.length ? notes.join("; ") : "ok") : `MISSED: ${notes.join("; ")}`,
    ],
    ok,
  };
}

function table(rows: Row[]): { text: string; missed: number } {
  const head = [
    "operation",
    "image",
    "umoci s",
    "skopeo s",
    "ratio",
    "target",
    "umoci MiB",
    "skopeo MiB",
    "umoci req",
    "skopeo req",
    "result",
  ];
  const body = rows.filter((r) => r.umoci.length && r.skopeo.length).map(fmtRow);
  const lines = [
    `| ${head.join(" | ")} |`,
    `| ${head.map(() => "---").join(" | ")} |`,
    ...body.map((b) => `| ${b.cells.join(" | ")} |`),
  ];
  return { text: lines.join("\n"), missed: body.filter((b) => !b.ok).length };
}

// ---------------------------------------------------------------------------------------

const work = await Deno.makeTempDir({ prefix: "umoci-copy-bench-" });
const regs: RunningRegistry[] = [];
try {
  console.error("building dist/umoci.js …");
  const built = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", join(root, "scripts", "build.ts"), "bundle"],
    stdout: "null",
  }).output();
  if (!built.success) throw new Error("bundle failed");
  const a = await startRegistry({ accessLog: true, logLevel: "error" });
  regs.push(a);
  const b = await startRegistry({ accessLog: true, logLevel: "error" });
  regs.push(b);
  console.error("building images …");
  await setUpWarmUp(a, work);
  const images = await buildImages(work);
  const rows: Row[] = [];
  for (const img of images.filter((i) => !flags.only || i.name.includes(flags.only))) {
    console.error(`benchmarking ${img.name} (${PAIRS} pairs) …`);
    await benchImage(img, a, b, work, rows);
  }
  const cpu = (await Deno.readTextFile("/proc/cpuinfo")).match(/model name\s*:\s*(.*)/)?.[1];
  const { text, missed } = table(rows);
  const header = [
    `umoci-copy vs skopeo ${
      (await new Deno.Command("skopeo", { args: ["--version"] }).output()).stdout.length
        ? new TextDecoder().decode(
          (await new Deno.Command("skopeo", { args: ["--version"] }).output()).stdout,
        ).trim()
        : ""
    }, ${PAIRS} pairs (${SHORT_REPEATS} samples per tool and pair for re-pull and re-push), medians; ${Deno.version.deno} deno; ${navigator.hardwareConcurrency} cores; ${
      cpu ?? "unknown CPU"
    }`,
    "ratio = umoci / skopeo wall time (lower is better); MiB = peak RSS; req = HTTP requests",
    dropCaches
      ? "every run starts after sync and a dropped page cache, then one untimed tiny copy per tool (warm executables, cold data)"
      : "every run starts after sync (the page cache could not be dropped: not root)",
  ].join("\n");
  console.log(`${header}\n\n${text}\n`);
  console.log(missed ? `${missed} rows missed their target` : "every target met");
  if (flags.markdown) await Deno.writeTextFile(flags.markdown, `${header}\n\n${text}\n`);
} finally {
  for (const r of regs) await r.stop();
  if (!flags.keep) await Deno.remove(work, { recursive: true }).catch(() => {});
}
