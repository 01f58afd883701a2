// The README's first run: `./dev demo` (the main job against a real registry), `./dev test`,
// and `deno task umoci` taking relative paths from the directory the user is in.
import assert from "node:assert/strict";
import { join } from "node:path";
import { REPO_ROOT } from "./fixtures/cli.ts";
import * as fx from "./fixtures/images.ts";

const DENO_JSON = join(REPO_ROOT, "deno.json");

Deno.test("first run: the README's quick start is exactly ./dev demo and ./dev test", async () => {
  const readme = await Deno.readTextFile(join(REPO_ROOT, "README.md"));
  const start = readme.indexOf("## Quick start");
  const quick = readme.slice(start, readme.indexOf("\n## ", start + 1));
  const block = /```sh\n([\s\S]*?)```/.exec(quick)?.[1] ?? "";
  const commands = block.split("\n").map((l) => l.replace(/#.*/, "").trim()).filter(Boolean);
  assert.deepEqual(commands, ["./dev demo", "./dev test"]);
  // .ci/run runs the suite through the same command.
  const ci = await Deno.readTextFile(join(REPO_ROOT, ".ci", "run"));
  assert.match(ci, /^run_suite \.\/dev test$/m);
});

Deno.test("first run: ./dev names its commands and refuses an unknown one with exit 2", async () => {
  const help = await fx.run(join(REPO_ROOT, "dev"), ["help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout + help.stderr, /\.\/dev demo/);
  assert.match(help.stdout + help.stderr, /\.\/dev test/);
  const bad = await fx.run(join(REPO_ROOT, "dev"), ["tset"]);
  assert.equal(bad.code, 2);
  assert.equal(bad.stderr.trim().split("\n").length, 1);
  assert.match(bad.stderr, /^error: unknown command 'tset'/);
});

Deno.test("first run: deno task umoci resolves relative paths against the user's directory", async () => {
  const here = await Deno.makeTempDir({ prefix: "umoci-task-cwd-" });
  try {
    const built = await fx.buildRandomImage(join(here, "src"), "v1", { layerSizes: [4096] });
    // As typed in a shell: no INIT_CWD yet (the suite itself may run under deno task).
    const env = Deno.env.toObject();
    delete env.INIT_CWD;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["task", "-q", "--config", DENO_JSON, "umoci", "copy", "src:v1", "dst:v1"],
      cwd: here,
      clearEnv: true,
      env: { ...env, NO_COLOR: "1" },
      stdin: "null",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    assert.equal(new TextDecoder().decode(out.stdout).trim(), built.manifest.digest);
    const index = JSON.parse(await Deno.readTextFile(join(here, "dst", "index.json")));
    assert.equal(index.manifests[0].digest, built.manifest.digest);
    // Nothing was written next to deno.json instead.
    assert.equal(await Deno.lstat(join(REPO_ROOT, "dst")).then(() => true, () => false), false);
  } finally {
    await Deno.remove(here, { recursive: true });
  }
});

Deno.test("first run: the demo pushes to a real registry, pulls back, traces one request", async () => {
  const here = await Deno.makeTempDir({ prefix: "umoci-demo-test-" });
  try {
    const r = await fx.run(join(REPO_ROOT, "dev"), ["demo"], {
      cwd: here,
      timeoutMs: 120_000,
      env: { NO_COLOR: "1" },
    });
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /digest was preserved both ways: yes/);
    assert.match(r.stdout, /3 blobs in umoci-demo\/pulled, each matching its digest/);
    // The traced rerun needed exactly one request and transferred nothing.
    const traced = r.stderr.split("\n").filter((l) => /^> [A-Z]+ http/.test(l));
    assert.equal(traced.length, 1, r.stderr);
    assert.match(traced[0], /^> HEAD http:\/\/127\.0\.0\.1:\d+\/v2\/demo\/sample\/manifests\/1\.0/);
    // What it leaves, in the directory it names.
    const work = join(here, "umoci-demo");
    assert.match(r.stdout, new RegExp(`everything it makes stays in ${work}`));
    for (const name of ["sample", "pulled", "registry.yml", "registry-data", "try-next.sh"]) {
      assert.ok(await Deno.lstat(join(work, name)).then(() => true, () => false), name);
    }
    const next = await Deno.readTextFile(join(work, "try-next.sh"));
    assert.match(next, /^docker-registry serve .*registry\.yml &$/m);
    assert.match(next, /^deno task umoci copy /m);
    // The registry it started is gone again.
    const port = /127\.0\.0\.1:(\d+)/.exec(traced[0])![1];
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(port) }).then(
      (c) => (c.close(), true),
      () => false,
    );
    assert.equal(conn, false, "the demo registry was stopped");
  } finally {
    await Deno.remove(here, { recursive: true });
  }
});
