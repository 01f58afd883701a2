import assert from "node:assert/strict";
import { parseCount, parseFlags, parseSize } from "../src/cli/flags.ts";
import { UsageError } from "../src/errors.ts";

const SPECS = {
  "plain-http": { type: "boolean" as const },
  "tls-verify": { type: "boolean" as const },
  "jobs": { type: "string" as const, short: "j" },
  "cacert": { type: "string" as const, multiple: true },
  "help": { type: "boolean" as const, short: "h" },
};

Deno.test("flags: long, short, =value, separate value, repeated, booleans with =false, --", () => {
  const { values, positionals } = parseFlags([
    "--plain-http",
    "--tls-verify=false",
    "-j",
    "8",
    "--cacert=a.pem",
    "--cacert",
    "b.pem",
    "src:tag",
    "--",
    "--not-a-flag",
  ], SPECS);
  assert.equal(values["plain-http"], true);
  assert.equal(values["tls-verify"], false);
  assert.equal(values.jobs, "8");
  assert.deepEqual(values.cacert, ["a.pem", "b.pem"]);
  assert.deepEqual(positionals, ["src:tag", "--not-a-flag"]);
  assert.equal(parseFlags(["-j4"], SPECS).values.jobs, "4");
  assert.equal(parseFlags(["--tls-verify=true"], SPECS).values["tls-verify"], true);
  assert.equal(parseFlags(["-h"], SPECS).values.help, true);
});

Deno.test("flags: unknown flags, missing values and bad booleans are one-line usage errors", () => {
  for (
    const [args, why] of [
      [["--nope"], /unknown flag --nope/],
      [["-x"], /unknown flag -x/],
      [["--jobs"], /needs a value/],
      [["--tls-verify=maybe"], /takes true or false/],
    ] as [string[], RegExp][]
  ) {
    assert.throws(() => parseFlags(args, SPECS), (e: Error) => {
      assert.ok(e instanceof UsageError);
      assert.match(e.message, why);
      return true;
    });
  }
});

Deno.test("flags: sizes and counts", () => {
  assert.equal(parseSize("16MiB", "chunk-size"), 16 * 1024 * 1024);
  assert.equal(parseSize("512k", "chunk-size"), 512 * 1024);
  assert.equal(parseSize("1g", "chunk-size"), 1024 ** 3);
  assert.equal(parseSize("100", "chunk-size"), 100);
  assert.throws(() => parseSize("lots", "chunk-size"), /invalid size/);
  assert.equal(parseCount("4", "jobs"), 4);
  assert.throws(() => parseCount("0", "jobs"), /whole number from 1/);
  assert.throws(() => parseCount("-1", "jobs"), UsageError);
  assert.throws(() => parseCount("2.5", "jobs"), UsageError);
});
