import assert from "node:assert/strict";
import {
  editDistance,
  flagHelp,
  nearestFlag,
  parseCount,
  parseFlags,
  parseSize,
  wrap,
} from "../src/cli/flags.ts";
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

Deno.test("flags: aliases store under their flag; 'instead' flags say what to use", () => {
  const specs = {
    "retries": { type: "string" as const },
    "retry-times": { type: "string" as const, alias: "retries" },
    "insecure": { type: "boolean" as const, instead: "use --tls-verify=false" },
    "format": { type: "string" as const, short: "f", instead: "never converts" },
  };
  assert.deepEqual(parseFlags(["--retry-times=3"], specs).values, { retries: "3" });
  assert.throws(() => parseFlags(["--insecure"], specs), /^UsageError: --insecure: use --tls/);
  assert.throws(() => parseFlags(["-f", "oci"], specs), /^UsageError: -f: never converts$/);
});

Deno.test("flags: the nearest flag by prefix or edit distance", () => {
  assert.equal(editDistance("tls-verfy", "tls-verify"), 1);
  assert.equal(editDistance("", "abc"), 3);
  assert.equal(editDistance("kitten", "sitting"), 3);
  const specs = {
    "tls-verify": { type: "boolean" as const },
    "dest-tls-verify": { type: "boolean" as const },
    "digestfile": { type: "string" as const },
    "insecure": { type: "boolean" as const, instead: "x" },
  };
  assert.equal(nearestFlag("tls-verfy", specs), "--tls-verify");
  assert.equal(nearestFlag("dest-tls", specs), "--dest-tls-verify");
  assert.equal(nearestFlag("digest-file", specs), "--digestfile");
  assert.equal(nearestFlag("insecur", specs), undefined, "'instead' flags are not suggested");
  assert.equal(nearestFlag("quux", specs), undefined);
  assert.throws(
    () => parseFlags(["--tls-verfy"], specs),
    /^UsageError: unknown flag --tls-verfy \(did you mean --tls-verify\? See --help\)$/,
  );
});

Deno.test("flags: help is wrapped to the width, long flag names on a line of their own", () => {
  const help = flagHelp({
    "a-very-long-flag-name-indeed": { type: "string", value: "VALUE", help: "short" },
    "x": { type: "boolean", short: "x", help: "word ".repeat(40).trim() },
    "hidden": { type: "boolean" },
    "alias": { type: "boolean", alias: "x", help: "not shown" },
  }, 60);
  const lines = help.split("\n");
  assert.equal(lines[0], "      --a-very-long-flag-name-indeed=VALUE");
  assert.equal(lines[1].trim(), "short");
  assert.ok(lines[2].startsWith("  -x, --x "));
  assert.ok(lines.every((l) => l.length <= 60), help);
  assert.ok(!help.includes("hidden") && !help.includes("not shown"));
  assert.deepEqual(wrap("aa bb cc", 5), ["aa bb", "cc"]);
});

Deno.test("flags: grouped boolean short flags (-rq) are each set; a value flag is not grouped", () => {
  const specs = {
    "referrers": { type: "boolean" as const, short: "r" },
    "quiet": { type: "boolean" as const, short: "q" },
    "jobs": { type: "string" as const, short: "j" },
    "verbose": { type: "boolean" as const, short: "v", instead: "use --debug" },
  };
  const { values } = parseFlags(["-rq", "x"], specs);
  assert.equal(values.referrers, true);
  assert.equal(values.quiet, true);
  // A value flag takes the rest as its value, as before.
  assert.equal(parseFlags(["-j4"], specs).values.jobs, "4");
  // A boolean followed by a letter that is no boolean flag stays an error naming the value.
  assert.throws(() => parseFlags(["-rx"], specs), /takes true or false, not "x"/);
  assert.throws(() => parseFlags(["-rj"], specs), /takes true or false, not "j"/);
  // A flag that means nothing here says so inside a group too.
  assert.throws(() => parseFlags(["-rv"], specs), /-v: use --debug/);
});
