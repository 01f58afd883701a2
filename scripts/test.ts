// `deno task test`: builds the single-file bundle (dist/umoci.js) and runs the whole suite,
// with every integration test driving that artifact, the way users run the tool. Set
// UMOCI_BIN to test something else: `UMOCI_BIN=main.ts` (source) or `UMOCI_BIN=dist/umoci`
// (a compiled binary). Extra arguments go to `deno test` (e.g. a file or --filter).
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../", import.meta.url));
const env: Record<string, string> = {};
if (!Deno.env.get("UMOCI_BIN")) {
  const built = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "scripts/build.ts", "bundle"],
    cwd: root,
    stdout: "null",
    stderr: "inherit",
  }).output();
  if (!built.success) {
    console.error("building dist/umoci.js failed");
    Deno.exit(1);
  }
  env.UMOCI_BIN = `${root}dist/umoci.js`;
}
console.log(`testing the CLI through ${env.UMOCI_BIN ?? Deno.env.get("UMOCI_BIN")}`);
const args = Deno.args.length > 0 ? Deno.args : ["tests/"];
const status = await new Deno.Command(Deno.execPath(), {
  args: ["test", "--allow-all", "--parallel", ...args],
  cwd: root,
  env,
  stdin: "null",
}).spawn().status;
Deno.exit(status.code);
