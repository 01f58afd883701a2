// Messages that tell the truth: a rerun with nothing to do is one line, files named on the
// command line are checked before anything is copied, a missing tag lists the tags there
// are, an authentication failure says where credentials were looked up, and Deno's
// permission errors are put in plain words.
import assert from "node:assert/strict";
import { join } from "node:path";
import { REPO_ROOT, umoci } from "./fixtures/cli.ts";
import * as fx from "./fixtures/images.ts";
import { startAuthRegistry } from "./fixtures/auth_registry.ts";
import { startRegistry } from "./fixtures/registry.ts";
import { plainPermissionWords } from "../src/errors.ts";

async function exists(path: string): Promise<boolean> {
  return await Deno.lstat(path).then(() => true, () => false);
}

/** The lines of stderr. */
function lines(text: string): string[] {
  return text.trimEnd().split("\n").filter((l) => l !== "");
}

Deno.test("messages: a rerun with nothing to do says so in one line", async () => {
  await fx.withTempDir(async (tmp) => {
    const built = await fx.buildRandomImage(join(tmp, "img"), "v1", { layerSizes: [5000, 60] });
    const d = built.manifest.digest;
    const copy = (dst: string) => umoci(["copy", `${tmp}/img:v1`, `${tmp}/${dst}`]);
    const first = await copy("out:v1");
    assert.equal(first.code, 0, first.stderr);
    assert.match(
      lines(first.stderr).at(-1)!,
      /^Copied 3 blobs \([0-9.]+ KiB\); 1 manifest written$/,
    );
    const again = await copy("out:v1");
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout, d + "\n");
    assert.deepEqual(lines(again.stderr), [`${tmp}/out:v1 is already ${d}: nothing to copy`]);
    const retag = await copy("out:v2");
    assert.deepEqual(lines(retag.stderr), [
      `Nothing to copy: layout ${tmp}/out had all of ${d}; only the tag 'v2' was written`,
    ]);
    assert.deepEqual(await fx.listTags(join(tmp, "out")), ["v1", "v2"]);

    const reg = await startRegistry();
    try {
      const push = () =>
        umoci(["copy", "--plain-http", `${tmp}/img:v1`, `oci://${reg.host}/re/run:v1`]);
      assert.equal((await push()).code, 0);
      const rerun = await push();
      assert.equal(rerun.code, 0, rerun.stderr);
      assert.deepEqual(lines(rerun.stderr), [
        `${reg.host}/re/run:v1 is already ${d}: nothing to copy`,
      ]);
    } finally {
      await reg.stop();
    }
  });
});

Deno.test("messages: --digestfile and --authfile are checked before anything is copied", async () => {
  await fx.withTempDir(async (tmp) => {
    await fx.buildRandomImage(join(tmp, "img"), "v1", { layerSizes: [100] });
    await Deno.writeTextFile(join(tmp, "notjson.json"), "{auths:");
    await Deno.writeTextFile(join(tmp, "badauth.json"), '{"auths":{"h":{"auth":"%%"}}}');
    const reg = await startRegistry({ accessLog: true });
    try {
      const cases: [string[], string][] = [
        [
          ["--digestfile", `${tmp}/no/such/dir/digest`],
          `--digestfile ${tmp}/no/such/dir/digest: directory ${tmp}/no/such/dir does not exist`,
        ],
        [["--digestfile", tmp], `--digestfile ${tmp}: is a directory`],
        [["--authfile", `${tmp}/missing.json`], `--authfile ${tmp}/missing.json: no such file`],
        [
          ["--src-authfile", `${tmp}/notjson.json`],
          `--src-authfile ${tmp}/notjson.json: not valid JSON`,
        ],
        [
          ["--dest-authfile", `${tmp}/badauth.json`],
          `--dest-authfile ${tmp}/badauth.json: auths["h"]: "auth" is not valid base64`,
        ],
      ];
      for (const [flags, message] of cases) {
        for (const dst of [`${tmp}/out:v1`, `oci://${reg.host}/pre/check:v1`]) {
          const r = await umoci(["copy", "--plain-http", ...flags, `${tmp}/img:v1`, dst]);
          assert.equal(r.code, 2, `${flags.join(" ")}: ${r.stderr}`);
          assert.equal(r.stderr, `error: ${message}\n`);
        }
      }
      assert.equal(await exists(`${tmp}/out`), false, "no layout created");
      assert.deepEqual(reg.requests().filter((l) => l.includes("umoci")), [], "no request made");
    } finally {
      await reg.stop();
    }
  });
});

Deno.test("messages: a missing tag lists the tags there are (layout and registry)", async () => {
  await fx.withTempDir(async (tmp) => {
    const built = await fx.buildRandomImage(join(tmp, "img"), "v1", { layerSizes: [100] });
    for (let i = 2; i <= 12; i++) await fx.tagDescriptor(join(tmp, "img"), built.manifest, `v${i}`);
    const r = await umoci(["copy", `${tmp}/img:v13`, `${tmp}/out:v1`]);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(
      r.stderr,
      `error: tag "v13" not found in ${tmp}/img; the layout has tags "v1", "v2", "v3", "v4", ` +
        `"v5", "v6", "v7", "v8", "v9", "v10" and more\n`,
    );
    const reg = await startRegistry();
    try {
      for (const tag of ["b", "a"]) {
        const push = await umoci([
          "copy",
          "--plain-http",
          `${tmp}/img:v1`,
          `oci://${reg.host}/list/me:${tag}`,
        ]);
        assert.equal(push.code, 0, push.stderr);
      }
      const pull = (ref: string) =>
        umoci(["copy", "-q", "--plain-http", `oci://${reg.host}/${ref}`, `${tmp}/out:v1`]);
      const missing = await pull("list/me:c");
      assert.equal(missing.code, 1);
      // In the registry's order (distribution 2.8 does not sort them).
      assert.match(
        missing.stderr,
        new RegExp(
          `^error: manifest c not found in ${reg.host}/list/me; the repository has tags ` +
            `("a", "b"|"b", "a")\n$`,
        ),
      );
      // No repository, no list: the first error stands.
      const none = await pull("no/repo:v1");
      assert.equal(none.stderr, `error: manifest v1 not found in ${reg.host}/no/repo\n`);
      assert.equal(await exists(`${tmp}/out`), false);
    } finally {
      await reg.stop();
    }
  });
});

Deno.test("messages: an authentication failure says where credentials were looked up", async () => {
  const reg = await startAuthRegistry({ mode: "htpasswd", tls: false, users: { alice: "pw" } });
  try {
    await fx.withTempDir(async (tmp) => {
      await fx.buildRandomImage(join(tmp, "img"), "v1", { layerSizes: [100] });
      const env = { HOME: tmp, PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" };
      const run = async (flags: string[]) => {
        const r = await umoci(
          ["copy", "-q", "--plain-http", ...flags, `${tmp}/img:v1`, `oci://${reg.host}/a/b:v1`],
          { env, clearEnv: true },
        );
        assert.equal(r.code, 1, r.stderr);
        return r.stderr;
      };
      const denied = `error: ${reg.host}/a/b: not found, or access denied without credentials ` +
        `(HEAD /v2/a/b/manifests/v1: 401 Unauthorized); `;
      const give = "give them with --creds USER[:PASS], --authfile FILE or podman/docker login";
      assert.equal(
        await run([]),
        `${denied}credentials were looked up in ${tmp}/.config/containers/auth.json, ` +
          `${tmp}/.docker/config.json; ${give}\n`,
      );
      const file = join(tmp, "auth.json");
      await Deno.writeTextFile(file, JSON.stringify({ auths: {} }));
      assert.equal(
        await run(["--dest-authfile", file]),
        `${denied}credentials were looked up in ${file}; ${give}\n`,
      );
      assert.equal(await run(["--no-creds"]), `${denied}--no-creds: no credentials were sent\n`);
      assert.equal(
        await run(["--dest-creds", "alice:wrong"]),
        `error: authentication failed for ${reg.host}; the credentials came from --dest-creds\n`,
      );
    });
  } finally {
    await reg.stop();
  }
});

Deno.test("messages: Deno's permission errors in plain words", async () => {
  assert.equal(
    plainPermissionWords('Requires write access to "/x/y", run again with the --allow-write flag'),
    "umoci may not write to /x/y: Deno runs it without --allow-write (run it with " +
      "--allow-write, or use the umoci binary, which has every permission it needs)",
  );
  assert.equal(
    plainPermissionWords(
      'h:1: GET /v2/: Requires net access to "h:1", run again with the --allow-net flag',
    ),
    "h:1: GET /v2/: umoci may not connect to h:1: Deno runs it without --allow-net (run it " +
      "with --allow-net, or use the umoci binary, which has every permission it needs)",
  );
  assert.equal(
    plainPermissionWords('Requires all access to "/dev", run again with the --allow-all flag'),
    "umoci may not use /dev: Deno runs it without --allow-all (run it with --allow-all, or " +
      "use the umoci binary, which has every permission it needs)",
  );
  assert.equal(
    plainPermissionWords("Permission denied (os error 13): mkdir '/srv/x'"),
    "cannot create the directory /srv/x: permission denied (os error 13; check the owner and " +
      "mode of it and of its directory)",
  );
  assert.equal(
    plainPermissionWords("Permission denied (os error 13): rename '/a' -> '/b'"),
    "cannot rename /a to /b: permission denied (os error 13; check the owner and mode of it " +
      "and of its directory)",
  );
  assert.equal(
    plainPermissionWords("Read-only file system (os error 30): mkdir '/ro/.umoci-copy-tmp'"),
    "cannot create the directory /ro/.umoci-copy-tmp: read-only file system (os error 30; the " +
      "filesystem is mounted read-only)",
  );
  assert.equal(
    plainPermissionWords("File exists (os error 17): mkdir '/l/.umoci-copy-tmp'"),
    "cannot create the directory /l/.umoci-copy-tmp: file exists (os error 17; something else " +
      "of that name is in the way)",
  );
  assert.equal(plainPermissionWords("something else"), "something else");

  // The CLI run by Deno without --allow-write: one plain line, exit 1, nothing written.
  await fx.withTempDir(async (tmp) => {
    await fx.buildRandomImage(join(tmp, "img"), "v1", { layerSizes: [100] });
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-prompt",
        "--allow-read",
        "--allow-env",
        `${REPO_ROOT}main.ts`,
        "copy",
        "-q",
        `${tmp}/img:v1`,
        `${tmp}/out:v1`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 1);
    assert.equal(
      new TextDecoder().decode(out.stderr),
      `error: umoci may not write to ${tmp}: Deno runs it without --allow-write (run it with ` +
        "--allow-write, or use the umoci binary, which has every permission it needs)\n",
    );
    assert.equal(await exists(`${tmp}/out`), false);
  });
});
