// `deno task demo` (or `./dev demo`): the main job on a real registry. Builds a small sample
// image, starts Debian's `docker-registry` on a free loopback port, pushes the image with the
// real CLI, pulls it back, pulls again with --trace-requests (one request, nothing moved), and
// checks every digest. The sample, the registry's config and storage, and the commands to try
// next stay in ./umoci-demo (in the directory the task was started from), which it names.
import { createHash } from "node:crypto";
import { fileURLToPath } from "node:url";
import { join, relative } from "node:path";
import { writeSampleImage } from "./sample.ts";

const root = fileURLToPath(new URL("../", import.meta.url));
const here = Deno.env.get("INIT_CWD") ?? Deno.cwd();
const work = join(here, "umoci-demo");
const show = (p: string) => relative(here, p) || ".";

/** Fails with one line (no stack trace) and the exit code 1. */
function fail(message: string): never {
  console.error(`error: ${message}`);
  Deno.exit(1);
}

async function which(cmd: string): Promise<boolean> {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir && await Deno.stat(join(dir, cmd)).then((s) => s.isFile, () => false)) return true;
  }
  return false;
}

async function umoci(args: string[], note = ""): Promise<string> {
  console.log(`\n$ umoci ${args.join(" ")}${note ? `   # ${note}` : ""}`);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", join(root, "main.ts"), ...args],
    cwd: work,
    stdout: "piped",
    stderr: "inherit",
  }).output();
  Deno.stdout.writeSync(out.stdout);
  if (!out.success) fail(`umoci ${args.join(" ")} exited with ${out.code}`);
  return new TextDecoder().decode(out.stdout).trim();
}

/** A port that was free a moment ago. */
function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Start docker-registry with its config and storage in the demo directory. */
async function startRegistry(): Promise<{ host: string; config: string; stop(): Promise<void> }> {
  const port = freePort();
  const host = `127.0.0.1:${port}`;
  const config = join(work, "registry.yml");
  await Deno.writeTextFile(
    config,
    [
      "version: 0.1",
      "log:",
      "  level: warn",
      "  accesslog:",
      "    disabled: true",
      "storage:",
      "  filesystem:",
      `    rootdirectory: ${join(work, "registry-data")}`,
      "  delete:",
      "    enabled: true",
      "http:",
      `  addr: ${host}`,
      `  secret: ${crypto.randomUUID()}`,
      "",
    ].join("\n"),
  );
  const child = new Deno.Command("docker-registry", {
    args: ["serve", config],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    await child.status;
  };
  const deadline = Date.now() + 15_000;
  for (;;) {
    const ok = await fetch(`http://${host}/v2/`, { signal: AbortSignal.timeout(1000) })
      .then(async (r) => (await r.body?.cancel(), r.ok), () => false);
    if (ok) break;
    const exited = await Promise.race([child.status, new Promise((r) => setTimeout(r, 100))]);
    if (exited || Date.now() > deadline) {
      await stop();
      fail(`docker-registry did not start on ${host}: ${(await stderr).trim().split("\n").pop()}`);
    }
  }
  return { host, config, stop };
}

if (!await which("docker-registry")) {
  fail(
    "the demo needs the registry from Debian's docker-registry package: " +
      "apt-get install -y docker-registry (or run ./dev demo as root, which installs it)",
  );
}
await Deno.remove(work, { recursive: true }).catch(() => {});
await Deno.mkdir(work, { recursive: true });
console.log(`umoci-copy demo; everything it makes stays in ${work}`);

const digest = await writeSampleImage(join(work, "sample"), "1.0");
console.log(`\nBuilt a sample image: ${show(join(work, "sample"))}, tag 1.0, manifest ${digest}`);
const registry = await startRegistry();
console.log(`Started docker-registry on ${registry.host} (config ${show(registry.config)})`);

try {
  const ref = `oci://${registry.host}/demo/sample:1.0`;
  const pushed = await umoci(["copy", "--plain-http", "sample:1.0", ref], "push");
  const pulled = await umoci(["copy", "--plain-http", ref, "pulled:1.0"], "pull");
  await umoci(
    ["copy", "--plain-http", "--trace-requests", ref, "pulled:1.0"],
    "again, traced: the one request it needs, nothing transferred",
  );

  let blobs = 0;
  const dir = join(work, "pulled", "blobs", "sha256");
  for await (const entry of Deno.readDir(dir)) {
    const actual = createHash("sha256").update(await Deno.readFile(join(dir, entry.name)))
      .digest("hex");
    if (actual !== entry.name) fail(`blob ${entry.name} in pulled/ does not match its digest`);
    blobs++;
  }
  const preserved = pushed === digest && pulled === digest;
  console.log(`\nResult: the manifest digest was preserved both ways: ${preserved ? "yes" : "NO"}`);
  console.log(`        ${blobs} blobs in ${show(join(work, "pulled"))}, each matching its digest`);
  if (!preserved) Deno.exit(1);

  const next = [
    "# Commands to try next (from the directory the demo ran in).",
    "# Start the demo registry again (its storage still holds demo/sample:1.0):",
    `docker-registry serve ${registry.config} &`,
    "# Copy from it, to it, between layouts:",
    `deno task umoci copy --plain-http ${ref} umoci-demo/again:1.0`,
    `deno task umoci copy --plain-http umoci-demo/sample:1.0 oci://${registry.host}/demo/copy:2.0`,
    `deno task umoci copy umoci-demo/sample:1.0 umoci-demo/backup:stable`,
    "# Every request on stderr, secrets redacted:",
    `deno task umoci copy --plain-http --trace-requests ${ref} umoci-demo/traced:1.0`,
    "deno task umoci copy --help",
    "",
  ].join("\n");
  await Deno.writeTextFile(join(work, "try-next.sh"), next);
  console.log(`\nThe sample, the registry's storage and ${show(join(work, "try-next.sh"))} stay:`);
  console.log(
    next.split("\n").filter((l) => l && !l.startsWith("#")).map((l) => `  ${l}`).join("\n"),
  );
} finally {
  await registry.stop();
}
