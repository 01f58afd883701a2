// `deno task demo`: builds a small sample image, copies it with the real CLI, and shows the
// result. Needs nothing but Deno.
import { createHash } from "node:crypto";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { writeSampleImage } from "./sample.ts";

const root = fileURLToPath(new URL("../", import.meta.url));
const work = await Deno.makeTempDir({ prefix: "umoci-copy-demo-" });

async function umoci(...args: string[]): Promise<string> {
  console.log(`\n$ umoci ${args.join(" ")}`);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", join(root, "main.ts"), ...args],
    cwd: work,
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  Deno.stdout.writeSync(out.stdout);
  if (!out.success) throw new Error(`umoci ${args[0]} failed with exit code ${out.code}`);
  return stdout.trim();
}

try {
  const digest = await writeSampleImage(join(work, "sample"), "1.0");
  console.log(`Built a sample image in ${work}/sample, tag 1.0, manifest ${digest}`);

  const copied = await umoci("copy", "sample:1.0", "backup:stable");
  await umoci("copy", "backup:stable", "backup:again");
  await umoci("copy", `sample@${digest}`, "pinned:by-digest");

  console.log("\nResult:");
  const index = JSON.parse(await Deno.readTextFile(join(work, "backup", "index.json")));
  for (const m of index.manifests) {
    console.log(`  backup:${m.annotations["org.opencontainers.image.ref.name"]} -> ${m.digest}`);
  }
  let ok = 0;
  for await (const entry of Deno.readDir(join(work, "backup", "blobs", "sha256"))) {
    const bytes = await Deno.readFile(join(work, "backup", "blobs", "sha256", entry.name));
    const actual = createHash("sha256").update(bytes).digest("hex");
    if (actual !== entry.name) throw new Error(`blob ${entry.name} does not match its digest`);
    ok++;
  }
  console.log(`  ${ok} blobs in backup/, every one matching its digest`);
  console.log(`  digest preserved: ${copied === digest ? "yes" : "NO"}`);
  if (copied !== digest) Deno.exit(1);
} finally {
  await Deno.remove(work, { recursive: true });
}
