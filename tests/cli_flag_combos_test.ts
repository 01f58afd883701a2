// Flags that contradict or need each other: `--help` wins over anything else on the line,
// `--keep-going` needs a job (`--images`, `--all-tags`), `--all` (an index whole) and
// `--platform` (part of it) are refused together. Each is exit 2 with one `error:` line
// and nothing written, or (help) the help on stdout and nothing on stderr.
import assert from "node:assert/strict";
import { join } from "node:path";
import { umoci } from "./fixtures/cli.ts";
import * as fx from "./fixtures/images.ts";

/** A usage error: exit 2, nothing on stdout, one line on stderr; returns its message. */
function usageError(r: fx.RunResult, what: string): string {
  assert.equal(r.code, 2, `${what}: ${r.stderr}`);
  assert.equal(r.stdout, "", what);
  const lines = r.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `${what}: one line:\n${r.stderr}`);
  assert.ok(lines[0].startsWith("error: "), r.stderr);
  return lines[0].slice("error: ".length);
}

Deno.test("cli flags: --help wins over an unknown or misplaced flag (help only, exit 0)", async () => {
  const help = await umoci(["copy", "--help"]);
  assert.equal(help.code, 0);
  for (
    const args of [
      ["copy", "--help", "--bogus"],
      ["copy", "--bogus", "--help"],
      ["copy", "-h", "--insecure"],
      ["cp", "--help", "--jobs"],
      ["copy", "--progress=json", "--help", "--bogus"],
    ]
  ) {
    const r = await umoci(args);
    assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
    assert.equal(r.stderr, "", args.join(" "));
    assert.equal(r.stdout, help.stdout, args.join(" "));
  }
  // After `--`, `--help` is an argument like any other: the unknown flag before it counts.
  const r = await umoci(["copy", "--bogus", "--", "--help", "x"]);
  assert.match(usageError(r, "--bogus -- --help"), /^unknown flag --bogus/);
});

Deno.test("cli flags: --keep-going without a job, --all with --platform, --images - with --password-stdin: exit 2, nothing written", async () => {
  await fx.withTempDir(async (tmp) => {
    const src = join(tmp, "src");
    await fx.buildMultiPlatformIndex(src, "v1", ["linux/amd64", "linux/arm64"]);
    const dst = join(tmp, "dst");
    assert.equal(
      usageError(await umoci(["copy", "--keep-going", `${src}:v1`, `${dst}:v1`]), "keep-going"),
      "--keep-going goes with --images or --all-tags (a job of many images)",
    );
    assert.equal(
      usageError(
        await umoci(["copy", "--all", "--platform", "linux/amd64", `${src}:v1`, `${dst}:v1`]),
        "--all --platform",
      ),
      "--all copies an index with all its images; drop it to copy only the --platform chosen",
    );
    assert.equal(
      usageError(
        await umoci(
          ["copy", "--username", "u", "--password-stdin", "--images", "-", `oci://${"h:1"}/p`],
          { stdin: "pw\n" },
        ),
        "two readers of stdin",
      ),
      "--images - and --password-stdin both read stdin; give the list as a file, or the " +
        "password with --creds USER (asked on the terminal)",
    );
    // Files and values given on the command line that cannot serve: a bad command line.
    const notPem = join(tmp, "not.pem");
    await Deno.writeTextFile(notPem, "hello\n");
    const bad: [string[], string][] = [
      [["--cacert", join(tmp, "none.crt")], `--cacert ${join(tmp, "none.crt")}: no such file`],
      [["--cacert", notPem], `--cacert ${notPem}: holds no PEM certificate`],
      [["--creds", ":pw"], "--creds: empty user name"],
    ];
    for (const [args, message] of bad) {
      assert.equal(
        usageError(
          await umoci(["copy", ...args, `${src}:v1`, "oci://h.example:1/a/b:v1"]),
          message,
        ),
        message,
      );
    }
    assert.equal(await Deno.lstat(dst).then(() => true, () => false), false, "nothing created");
    // Each on its own is fine.
    const all = await umoci(["copy", "-q", "--all", `${src}:v1`, `${dst}:v1`]);
    assert.equal(all.code, 0, all.stderr);
    const one = await umoci(["copy", "-q", "--platform", "linux/amd64", `${src}:v1`, `${dst}:a`]);
    assert.equal(one.code, 0, one.stderr);
  });
});
