// README.md's flag and exit-code tables against the code: every flag the table names exists
// and is shown by --help (or is an alias), every flag --help shows is in the table, and the
// exit codes are the ones the CLI uses.
import assert from "node:assert/strict";
import { join } from "node:path";
import { REPO_ROOT, umoci } from "./fixtures/cli.ts";
import { COPY_FLAGS } from "../src/cli/copy.ts";
import { EXIT } from "../src/errors.ts";
import * as fx from "./fixtures/images.ts";

const README = await Deno.readTextFile(join(REPO_ROOT, "README.md"));

/** The rows of the first table after `heading` (a line of the README), as cells. */
function table(heading: string): string[][] {
  const lines = README.split("\n");
  let i = lines.findIndex((l) => l.trim() === heading);
  assert.ok(i >= 0, `README has ${JSON.stringify(heading)}`);
  while (!lines[i].startsWith("|")) i++;
  const rows: string[][] = [];
  for (i += 2; i < lines.length && lines[i].startsWith("|"); i++) {
    // Split at unescaped '|' (the table escapes those inside code as '\|').
    rows.push(lines[i].split(/(?<!\\)\|/).slice(1, -1).map((c) => c.trim()));
  }
  return rows;
}

/** Long flags (`--name`) and short ones (`-x`) named in text, without values. */
function flagsIn(text: string): Set<string> {
  const out = new Set<string>();
  for (const m of text.matchAll(/(?<![\w-])(--[a-z][a-z0-9-]*|-[a-zA-Z])(?![\w-])/g)) out.add(m[1]);
  return out;
}

Deno.test("README: the flags table names exactly the flags umoci copy has", async () => {
  const documented = new Set<string>();
  for (const [flag] of table("Flags of `umoci copy`:")) {
    for (const f of flagsIn(flag)) documented.add(f);
  }
  const expected = new Set<string>(["--version"]); // umoci's own, not copy's
  for (const [name, spec] of Object.entries(COPY_FLAGS)) {
    if (spec.instead !== undefined) continue; // not flags here: they say what to use
    if (spec.help === undefined && spec.alias === undefined) continue;
    expected.add(`--${name}`);
    if (spec.short) expected.add(`-${spec.short}`);
  }
  assert.deepEqual([...documented].sort(), [...expected].sort());

  // And what --help shows is in the table.
  const help = await umoci(["copy", "--help"]);
  assert.equal(help.code, 0);
  const shown = flagsIn(help.stdout.slice(help.stdout.indexOf("\nFlags:")));
  for (const f of shown) assert.ok(documented.has(f), `${f} of --help is in README's table`);
  for (const [name, spec] of Object.entries(COPY_FLAGS)) {
    if (spec.help !== undefined && spec.instead === undefined) {
      assert.ok(shown.has(`--${name}`), `--${name} is in --help`);
    }
  }
});

Deno.test("README: the flags that say what to use instead are named in README", () => {
  const section = README.slice(README.indexOf("### Habits of other tools"));
  const named = flagsIn(section.slice(0, section.indexOf("\n### ", 5)));
  for (const [name, spec] of Object.entries(COPY_FLAGS)) {
    if (spec.instead === undefined) continue;
    // `--sign-by*` in the text names --sign-by-sigstore and the rest.
    const found = [...named].some((f) =>
      f === `--${name}` || (f.startsWith("--") && name.startsWith(f.slice(2)))
    );
    const short = spec.short !== undefined && named.has(`-${spec.short}`);
    assert.ok(found || short, `--${name} is in "Habits of other tools"`);
  }
});

Deno.test("README: the exit-code table is the codes the CLI uses, and they are what it does", async () => {
  const codes = table("### Exit codes").flatMap(([code]) => code.split("/").map((c) => Number(c)));
  assert.deepEqual(codes.sort((a, b) => a - b), Object.values(EXIT).sort((a, b) => a - b));
  await fx.withTempDir(async (tmp) => {
    await fx.buildRandomImage(join(tmp, "img"), "v1", { layerSizes: [10] });
    const run = (...args: string[]) => umoci(["copy", ...args]);
    assert.equal((await run(`${tmp}/img:v1`, `${tmp}/o:v1`)).code, EXIT.ok);
    assert.equal((await run(`${tmp}/img:v1`, `${tmp}/o:v1`)).code, EXIT.ok, "nothing to copy");
    assert.equal((await run("--dry-run", `${tmp}/img:v1`, `${tmp}/p:v1`)).code, EXIT.ok);
    assert.equal((await run(`${tmp}/img:v9`, `${tmp}/o:v1`)).code, EXIT.failed);
    assert.equal((await run("--bogus", `${tmp}/img:v1`, `${tmp}/o:v1`)).code, EXIT.usage);
    assert.equal((await run(`${tmp}/img:v1`, "localhost:5000/x:v1")).code, EXIT.usage);
    assert.equal((await run("--digestfile", "/no/dir/f", `${tmp}/img:v1`, `${tmp}/o:v1`)).code, 2);
  });
});
