// Habits of skopeo and crane users: their flags that mean the same work as aliases or per
// side, the others say what to use instead, an unknown flag names the nearest one, and help
// fits 80 columns.
import assert from "node:assert/strict";
import { join } from "node:path";
import { umoci } from "./fixtures/cli.ts";
import * as fx from "./fixtures/images.ts";
import { startAuthRegistry } from "./fixtures/auth_registry.ts";
import { freePort, startRegistry } from "./fixtures/registry.ts";
import { selfSignedCertificate } from "./fixtures/pki.ts";

/**
 * The one error line of a run that must fail with `code`, without its `error: `: the last
 * line of stderr, and the only one unless `steps` (step lines before it are allowed).
 */
function errorLine(r: fx.RunResult, code: number, what: string, steps = false): string {
  assert.equal(r.code, code, `${what}: ${r.stderr}`);
  assert.equal(r.stdout, "", what);
  const lines = r.stderr.trimEnd().split("\n");
  if (!steps) assert.equal(lines.length, 1, `${what}: one line:\n${r.stderr}`);
  assert.equal(lines.filter((l) => l.startsWith("error: ")).length, 1, r.stderr);
  assert.ok(lines.at(-1)!.startsWith("error: "), r.stderr);
  return lines.at(-1)!.slice("error: ".length);
}

Deno.test("cli habits: help of umoci and umoci copy fits 80 columns", async () => {
  for (const args of [["--help"], ["copy", "--help"], ["help", "copy"]]) {
    const r = await umoci(args);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.split("\n");
    assert.ok(lines.length > 10, args.join(" "));
    for (const line of lines) {
      assert.ok([...line].length <= 80, `${args.join(" ")}: ${line.length}: ${line}`);
    }
  }
});

Deno.test("cli habits: other tools' flags say what to use instead (exit 2, one line)", async () => {
  const cases: [string[], string][] = [
    [
      ["--insecure"],
      "--insecure: use --tls-verify=false (https, certificates not checked) or " +
      "--plain-http (http)",
    ],
    [["--format", "oci"], "--format: umoci copy never converts; digests are preserved"],
    [["-f", "v2s2"], "-f: umoci copy never converts; digests are preserved"],
    [
      ["--dest-compress-format=zstd"],
      "--dest-compress-format: umoci copy never converts; " +
      "digests are preserved",
    ],
    [
      ["--remove-signatures"],
      "--remove-signatures: umoci copy adds and removes no " +
      "signatures; manifests are copied byte for byte",
    ],
    [
      ["--sign-by", "key"],
      "--sign-by: umoci copy does not sign; sign the digest it prints " +
      "afterwards (e.g. cosign sign REPO@DIGEST)",
    ],
    [["-v"], "-v: use --debug for more detail, --trace-requests for every HTTP request"],
    [["--src-username=u"], "--src-username: use --src-creds USER[:PASS]"],
    [["--all=false"], "--all=false: umoci copy always copies an index with all its images"],
  ];
  for (const [flags, message] of cases) {
    const r = await umoci(["copy", ...flags, "a:v1", "b:v1"]);
    assert.equal(errorLine(r, 2, flags.join(" ")), message);
  }
});

Deno.test("cli habits: an unknown flag names the nearest one and --help", async () => {
  const cases: [string, string][] = [
    ["--tls-verfy=false", "unknown flag --tls-verfy (did you mean --tls-verify? See --help)"],
    ["--retry-time=3", "unknown flag --retry-time (did you mean --retry-times? See --help)"],
    ["--digest-file=x", "unknown flag --digest-file (did you mean --digestfile? See --help)"],
    ["--dest-tls", "unknown flag --dest-tls (did you mean --dest-tls-verify? See --help)"],

    ["--frobnicate", "unknown flag --frobnicate (see --help)"],
    ["-x", "unknown flag -x (see --help)"],
  ];
  for (const [flag, message] of cases) {
    assert.equal(errorLine(await umoci(["copy", flag, "a:v1", "b:v1"]), 2, flag), message);
  }
});

Deno.test("cli habits: --all, --preserve-digests, -q, --quiet, --debug, --retry-times", async () => {
  await fx.withTempDir(async (tmp) => {
    const built = await fx.buildRandomImage(join(tmp, "img"), "v1", { layerSizes: [1000] });
    const ok = async (flags: string[], dst: string) => {
      const r = await umoci(["copy", ...flags, `${tmp}/img:v1`, `${tmp}/${dst}`]);
      assert.equal(r.code, 0, `${flags.join(" ")}: ${r.stderr}`);
      assert.equal(r.stdout, built.manifest.digest + "\n");
      return r.stderr;
    };
    assert.match(await ok(["--all", "--preserve-digests"], "a:v1"), /^Copying /m);
    assert.equal(await ok(["-q"], "b:v1"), "");
    assert.equal(await ok(["--quiet"], "c:v1"), "");
    const debug = await ok(["--debug"], "d:v1");
    assert.match(debug, /^debug: /m);
    // --debug in front of the command, as skopeo's global --debug.
    const r = await umoci(["--debug", "copy", `${tmp}/img:v1`, `${tmp}/e:v1`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^debug: /m);
  });
  // --retry-times is --retries: retries of a refused connection, counted.
  const dead = `oci://127.0.0.1:${freePort()}/x/y:v1`;
  const none = await umoci(["copy", "--plain-http", "--retry-times=0", dead, "/nonexistent/o:v1"]);
  assert.equal(none.code, 1);
  assert.doesNotMatch(none.stderr, /! retry/);
  const two = await umoci([
    "copy",
    "--plain-http",
    "--retry-times",
    "2",
    dead,
    "/nonexistent/o:v1",
  ]);
  assert.equal(two.code, 1);
  assert.equal(two.stderr.split("\n").filter((l) => l.startsWith("! retry")).length, 2, two.stderr);
});

Deno.test("cli habits: paths under /dev work as anywhere else (--digestfile /dev/stderr, --images /dev/stdin)", async () => {
  // Deno opens /dev paths only with --allow-all: the release has it, as a native tool would.
  await fx.withTempDir(async (tmp) => {
    const built = await fx.buildRandomImage(join(tmp, "img"), "v1", { layerSizes: [1000] });
    const r = await umoci([
      "copy",
      "-q",
      "--digestfile",
      "/dev/stderr",
      `${tmp}/img:v1`,
      `${tmp}/a:v1`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, built.manifest.digest + "\n");
    assert.equal(r.stderr, built.manifest.digest + "\n");
    const job = await umoci(["copy", "-q", "--images", "/dev/stdin", `${tmp}/b`], {
      stdin: `oci:${tmp}/img:v1\n`,
    });
    assert.equal(job.code, 0, job.stderr);
    assert.deepEqual(await fx.listTags(join(tmp, "b")), ["v1"]);
  });
});

Deno.test("cli habits: --src-tls-verify and --dest-tls-verify switch verification per side", async () => {
  await fx.withTempDir(async (tmp) => {
    const reg = await startRegistry({ tls: await selfSignedCertificate(tmp), accessLog: true });
    try {
      const built = await fx.buildRandomImage(join(tmp, "img"), "v1", { layerSizes: [2000] });
      const remote = `oci://${reg.host}/side/img:v1`;
      const copy = (...args: string[]) => umoci(["copy", "--retries=0", ...args]);
      // Push: the registry is DST; switching off SRC's verification does not help.
      const srcOff = await copy("--src-tls-verify=false", `${tmp}/img:v1`, remote);
      assert.match(errorLine(srcOff, 1, "push, src off", true), /certificate/);
      assert.equal(reg.requests().length, 0, "no request got through");
      const push = await copy("--dest-tls-verify=false", `${tmp}/img:v1`, remote);
      assert.equal(push.code, 0, push.stderr);
      assert.equal(push.stdout.trim(), built.manifest.digest);
      // Pull: the registry is SRC.
      const destOff = await copy("--dest-tls-verify=false", remote, `${tmp}/back:v1`);
      assert.match(errorLine(destOff, 1, "pull, dest off", true), /certificate/);
      // The side's own flag wins over --tls-verify.
      const overridden = await copy(
        "--tls-verify=false",
        "--src-tls-verify=true",
        remote,
        `${tmp}/back:v1`,
      );
      assert.match(errorLine(overridden, 1, "pull, src on", true), /certificate/);
      const pull = await copy("--src-tls-verify=false", remote, `${tmp}/back:v1`);
      assert.equal(pull.code, 0, pull.stderr);
      await fx.assertSameContent(`${tmp}/img`, "v1", `${tmp}/back`, "v1");
    } finally {
      await reg.stop();
    }
  });
});

Deno.test("cli habits: --src-authfile and --dest-authfile, one file per side", async () => {
  const a = await startAuthRegistry({ mode: "htpasswd", tls: false, users: { alice: "pw-a" } });
  const b = await startAuthRegistry({ mode: "htpasswd", tls: false, users: { bob: "pw-b" } });
  try {
    await fx.withTempDir(async (tmp) => {
      const auth = (user: string, pw: string) => ({ auth: btoa(`${user}:${pw}`) });
      // Each file is right for its own side only.
      const srcFile = join(tmp, "src.json");
      const destFile = join(tmp, "dest.json");
      await Deno.writeTextFile(
        srcFile,
        JSON.stringify({
          auths: { [a.host]: auth("alice", "pw-a"), [b.host]: auth("bob", "wrong") },
        }),
      );
      await Deno.writeTextFile(
        destFile,
        JSON.stringify({
          auths: { [a.host]: auth("alice", "wrong"), [b.host]: auth("bob", "pw-b") },
        }),
      );
      const built = await fx.buildRandomImage(join(tmp, "img"), "v1", { layerSizes: [3000] });
      const env = { HOME: tmp, PATH: Deno.env.get("PATH") ?? "" };
      const push = await umoci(
        ["copy", "--plain-http", "--authfile", srcFile, `${tmp}/img:v1`, `oci://${a.host}/x/i:v1`],
        { env, clearEnv: true },
      );
      assert.equal(push.code, 0, push.stderr);
      const args = ["--plain-http", `oci://${a.host}/x/i:v1`, `oci://${b.host}/y/i:v1`];
      const both = await umoci(["copy", "--authfile", srcFile, ...args], { env, clearEnv: true });
      assert.match(
        errorLine(both, 1, "one file", true),
        new RegExp(`^authentication failed for ${b.host}`),
      );
      const sides = await umoci(
        ["copy", "--src-authfile", srcFile, "--dest-authfile", destFile, ...args],
        { env, clearEnv: true },
      );
      assert.equal(sides.code, 0, sides.stderr);
      assert.equal(sides.stdout.trim(), built.manifest.digest);
    });
  } finally {
    await a.stop();
    await b.stop();
  }
});
