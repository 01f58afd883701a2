// Release builds.
//
//   deno task bundle            dist/umoci.js: one file, run with `deno run` (works offline)
//   deno task compile           dist/umoci for this host (needs the denort base binary)
//   deno task compile --release dist/umoci-<os>-<arch> for four targets, plus SHA256SUMS
//
// `deno compile` downloads its base binary (denort) unless DENORT_BIN names one; on
// air-gapped build hosts set DENORT_BIN=/path/to/denort (host target only).
import { createHash } from "node:crypto";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../", import.meta.url));
const dist = join(root, "dist");

/**
 * What the tool uses each permission for: network, files, env (credential files), run
 * (credential helpers), sys, which node:https asks for ("ca") when --tls-verify=false routes
 * a registry's requests through it (Deno has no narrower sys descriptor for that), and ffi,
 * for libc's open/pwrite/statx with O_DIRECT when large blobs are written
 * (src/store/direct.ts) and OpenSSL's digests. The release runs with --allow-all instead
 * (RUN_FLAGS); tests run the bundle with narrower sets taken from this list to check that
 * each feature falls back as documented.
 */
export const PERMISSIONS = [
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-run",
  "--allow-sys",
  "--allow-ffi",
];

/**
 * V8 settings the release runs with (baked into `deno compile` binaries; pass them to
 * `deno run` for the bundle). Setting them at run time (node:v8 setFlagsFromString) is too
 * late: the heap is sized and the code compiled.
 * - `--max-semi-space-size=1`: a 1 MiB young generation is collected more often, so the
 *   short-lived buffers a transfer hands to fetch go back to malloc sooner: a 512 MiB
 *   registry→registry copy peaked at 79 MiB RSS with it and 102–105 MiB without (push 75
 *   against 81, pull 71 against 75), at the same CPU time.
 * - `--no-lazy`: every function is compiled when the script is, so Deno's code cache holds
 *   all of them and a run compiles nothing: a re-pull (one HEAD) ran 143 M instructions
 *   with lazy compilation and 123 M without (callgrind), ~5 ms of a 50 ms run; the first run
 *   without a code cache (a fresh container) compiles everything: 167 ms instead of 136 ms.
 * (`--single-threaded` saved 2 ms more of a re-pull but let a 512 MiB push peak at 109 MiB:
 *   without V8's parallel scavenges the buffers handed to fetch are freed later.)
 */
export const V8_FLAGS = ["--v8-flags=--max-semi-space-size=1,--no-lazy"];

/**
 * Everything `deno run` needs before the script name to run the bundle as released.
 * `--allow-all` rather than PERMISSIONS: Deno opens /dev, /proc and /sys paths only with
 * --allow-all, whatever --allow-read/--allow-write say, so with the list a user's
 * `--digestfile /dev/stdout` or `--images <(…)` failed, and a feature that looked at
 * /proc/self turned itself off in release (direct I/O did, for three days). The list grants
 * --allow-run and --allow-ffi without limits, which is all of a process's power anyway.
 */
export const RUN_FLAGS = ["--allow-all", ...V8_FLAGS];

const TARGETS: Record<string, string> = {
  "linux-x86_64": "x86_64-unknown-linux-gnu",
  "linux-aarch64": "aarch64-unknown-linux-gnu",
  "darwin-x86_64": "x86_64-apple-darwin",
  "darwin-aarch64": "aarch64-apple-darwin",
};

async function run(cmd: string, args: string[], quiet = false): Promise<boolean> {
  const out = await new Deno.Command(cmd, {
    args,
    cwd: root,
    stdout: quiet ? "null" : "inherit",
    stderr: quiet ? "piped" : "inherit",
  }).output();
  if (!out.success && quiet) {
    // deno-lint-ignore no-control-regex
    const ansi = /\x1b\[[0-9;]*m/g;
    const lines = new TextDecoder().decode(out.stderr).replace(ansi, "").split("\n");
    const cause = lines.find((l) => /^\s*1: /.test(l))?.replace(/^\s*1: /, "") ?? "";
    const text = lines.find((l) => /error/i.test(l))?.trim() ?? lines[0] ?? "";
    if (cause) console.error(`  ${cause.trim()}`);
    console.error(`  ${text}`);
  }
  return out.success;
}

async function gitCommit(): Promise<string> {
  try {
    const out = await new Deno.Command("git", {
      args: ["rev-parse", "--short=12", "HEAD"],
      cwd: root,
      stdout: "piped",
      stderr: "null",
    }).output();
    if (!out.success) return "unknown";
    const commit = new TextDecoder().decode(out.stdout).trim();
    const dirty = await new Deno.Command("git", {
      args: ["status", "--porcelain", "--untracked-files=no"],
      cwd: root,
      stdout: "piped",
    }).output();
    return new TextDecoder().decode(dirty.stdout).trim() ? `${commit}-dirty` : commit;
  } catch {
    return "unknown";
  }
}

/** An entry module that records the build's commit before main.ts runs. */
async function writeEntry(): Promise<string> {
  const dir = join(dist, ".build");
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(
    join(dir, "build_env.ts"),
    `(globalThis as Record<string, unknown>).UMOCI_BUILD_COMMIT = ${
      JSON.stringify(await gitCommit())
    };\n`,
  );
  const entry = join(dir, "entry.ts");
  await Deno.writeTextFile(entry, `import "./build_env.ts";\nimport "../../main.ts";\n`);
  return entry;
}

async function bundle(): Promise<void> {
  const entry = await writeEntry();
  const out = join(dist, "umoci.js");
  // Minified: a run reads, hashes and deserializes less (a re-pull: ~5 M fewer instructions,
  // 1-3 ms); the linked source map (dist/umoci.js.map) maps --debug stack traces to src/.
  const args = ["bundle", "--platform", "deno", "--minify", "--sourcemap=linked", "-o", out];
  if (!await run(Deno.execPath(), [...args, entry])) {
    throw new Error("deno bundle failed");
  }
  const size = (await Deno.stat(out)).size;
  console.log(`dist/umoci.js: ${(size / 1024).toFixed(0)} KiB`);
  console.log(`run it with: deno run ${RUN_FLAGS.join(" ")} dist/umoci.js copy SRC DST`);
}

async function compile(output: string, target?: string): Promise<boolean> {
  const entry = await writeEntry();
  const args = ["compile", ...RUN_FLAGS, "--no-check", "--output", output];
  if (target) args.push("--target", target);
  args.push(entry);
  return await run(Deno.execPath(), args, true);
}

async function sha256File(path: string): Promise<string> {
  return createHash("sha256").update(await Deno.readFile(path)).digest("hex");
}

if (import.meta.main) await main();

async function main(): Promise<void> {
  const [command, ...flags] = Deno.args;
  await Deno.mkdir(dist, { recursive: true });
  if (command === "bundle") {
    await bundle();
  } else if (command === "compile") {
    const denort = Deno.env.get("DENORT_BIN");
    if (denort) console.log(`using the denort base binary from DENORT_BIN=${denort}`);
    if (flags.includes("--release")) {
      const sums: string[] = [];
      for (const [name, target] of Object.entries(TARGETS)) {
        const out = join(dist, `umoci-${name}`);
        console.log(`building dist/umoci-${name} (${target})`);
        if (await compile(out, target)) sums.push(`${await sha256File(out)}  umoci-${name}`);
        else console.error(`  skipped umoci-${name}: its denort base binary could not be obtained`);
      }
      await Deno.writeTextFile(
        join(dist, "SHA256SUMS"),
        sums.join("\n") + (sums.length ? "\n" : ""),
      );
      console.log(`dist/SHA256SUMS: ${sums.length} of ${Object.keys(TARGETS).length} targets`);
      if (sums.length === 0) Deno.exit(1);
    } else {
      const out = join(dist, "umoci");
      if (!await compile(out)) {
        console.error(
          "deno compile could not obtain its denort base binary; on an offline build host set " +
            "DENORT_BIN=/path/to/denort (or use `deno task bundle` for dist/umoci.js)",
        );
        Deno.exit(1);
      }
      console.log(`dist/umoci: ${((await Deno.stat(out)).size / 1048576).toFixed(1)} MiB`);
    }
  } else {
    console.error("usage: deno run -A scripts/build.ts bundle|compile [--release]");
    Deno.exit(2);
  }
}
