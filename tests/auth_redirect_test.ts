// Whose challenges the user's credentials answer, through the CLI (tests/fixtures/cli.ts)
// against the mini registry (tests/fixtures/mini_registry.ts) and small Deno.serve hosts:
//
// - a blob GET redirected to a storage host that answers 401 with its own Bearer realm is an
//   error naming that host; the storage host gets no Authorization, its token endpoint no
//   request, and the registry never a token minted there (CVE-2020-15157 is this kind);
// - a storage host that serves the blob gets it done, without any Authorization;
// - a token realm the registry itself names on another host (nvcr.io → authn.nvidia.com)
//   gets the credentials, and works;
// - anonymous, a 401 reads "not found, or access denied without credentials";
// - a manifest PUT answered 202 (Quay) is a success.
//
// Every run has --trace-requests --log=debug, and its whole output is searched for the
// password and its Basic form; failures are run again with --log=error to see one line.
import assert from "node:assert/strict";
import { join } from "node:path";
import { type RunResult, umoci } from "./fixtures/cli.ts";
import { assertSameContent, buildRandomImage, listTags, withTempDir } from "./fixtures/images.ts";
import {
  type MiniRegistry,
  type Served,
  serveRecorded,
  startMiniRegistry,
} from "./fixtures/mini_registry.ts";

const USER = "alice";
const PASSWORD = "S3cr3t-pa55-redirect-7c1";
const BASIC = `Basic ${btoa(`${USER}:${PASSWORD}`)}`;
const CREDS = `${USER}:${PASSWORD}`;

function assertNoSecrets(r: RunResult, what: string): void {
  const all = r.stdout + r.stderr;
  for (const s of [PASSWORD, btoa(`${USER}:${PASSWORD}`), encodeURIComponent(PASSWORD)]) {
    assert.ok(!all.includes(s), `${what}: the output contains a secret`);
  }
}

/** `umoci copy ARGS` in a clean environment with an empty HOME (no credential files). */
async function copy(home: string, args: string[]): Promise<RunResult> {
  return await umoci(["copy", "--plain-http", "--retries", "0", ...args], {
    clearEnv: true,
    env: { HOME: home, PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
    timeoutMs: 60_000,
  });
}

/** A failing copy: traced (no secrets), then with --log=error; returns the one error line. */
async function fails(home: string, args: string[]): Promise<string> {
  const traced = await copy(home, ["--trace-requests", "--log=debug", ...args]);
  assert.equal(traced.code, 1, `succeeded?\n${traced.stderr}`);
  assertNoSecrets(traced, "traced run");
  const quiet = await copy(home, ["--log=error", ...args]);
  assert.equal(quiet.code, 1, quiet.stderr);
  assert.equal(quiet.stdout, "");
  assert.match(quiet.stderr, /^error: [^\n]+\n$/, `not one line:\n${quiet.stderr}`);
  assertNoSecrets(quiet, "quiet run");
  assert.ok(traced.stderr.endsWith(quiet.stderr), "the traced run ended otherwise");
  return quiet.stderr.slice("error: ".length, -1);
}

/** A successful copy, traced, with no secret in its output. */
async function ok(home: string, args: string[]): Promise<RunResult> {
  const r = await copy(home, ["--trace-requests", "--log=debug", ...args]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^sha256:[0-9a-f]{64}\n$/);
  assertNoSecrets(r, "successful run");
  return r;
}

/** Serve on 127.0.0.2 (another host than the registry's 127.0.0.1), else on 127.0.0.1. */
function serveElsewhere(handler: (req: Request, url: URL) => Response): Served {
  try {
    return serveRecorded(handler, "127.0.0.2");
  } catch {
    return serveRecorded(handler, "127.0.0.1"); // another origin still: another port
  }
}

async function withServers(
  fn: (dir: string, stack: { add<T extends { stop(): Promise<void> }>(s: T): T }) => Promise<void>,
): Promise<void> {
  await withTempDir(async (dir) => {
    const started: { stop(): Promise<void> }[] = [];
    try {
      await fn(dir, {
        add: (s) => {
          started.push(s);
          return s;
        },
      });
    } finally {
      for (const s of started.reverse()) await s.stop();
    }
  });
}

/** A token server granting tokens for `user:password` (or anonymous ones, granting nothing). */
function tokenServer(issued: Set<string>): Served {
  return serveElsewhere((req, url) => {
    if (url.pathname !== "/token") return new Response(null, { status: 404 });
    const auth = req.headers.get("authorization");
    if (auth !== null && auth !== BASIC) return new Response(null, { status: 401 });
    const token = `${auth ? "user" : "anon"}-${crypto.randomUUID()}`;
    if (auth) issued.add(token);
    return Response.json({ token, expires_in: 300 });
  });
}

for (const kind of ["basic", "bearer"] as const) {
  Deno.test(`redirect: a storage host's 401 is an error naming it; no credentials reach it (${kind} registry)`, async () => {
    await withServers(async (dir, stack) => {
      await buildRandomImage(join(dir, "src"), "v1", { layerSizes: [1500] });
      const issued = new Set<string>();
      const tokens = kind === "bearer" ? stack.add(tokenServer(issued)) : undefined;
      // The storage host: every request gets 401 naming its own token endpoint, which would
      // mint a token for whatever Basic credentials it is sent.
      const storage: Served = stack.add(serveElsewhere((_req, url) => {
        if (url.pathname === "/token") return Response.json({ token: "minted-by-storage" });
        return new Response("{}", {
          status: 401,
          headers: {
            "www-authenticate": `Bearer realm="${storage.origin}/token",service="storage"`,
          },
        });
      }));
      const reg: MiniRegistry = stack.add(startMiniRegistry({
        auth: kind === "basic" ? { kind: "basic", user: USER, password: PASSWORD } : {
          kind: "bearer",
          realm: `${tokens!.origin}/token`,
          service: "mini",
          valid: (t) => issued.has(t),
        },
        blobRedirect: storage.origin,
      }));
      await reg.seed(join(dir, "src"), "v1", "r");
      const home = join(dir, "home");
      await Deno.mkdir(home);

      const why = await fails(home, [
        "--jobs",
        "1",
        "--creds",
        CREDS,
        `oci://${reg.host}/r:v1`,
        `${join(dir, "out")}:v1`,
      ]);
      assert.match(
        why,
        new RegExp(
          `^${reg.host}: GET /v2/r/blobs/sha256:[0-9a-f]{64}: redirected to ${storage.host}, ` +
            `which answered 401 Unauthorized; credentials for ${reg.host} are not sent to ` +
            `${storage.host}$`,
        ),
      );
      // The storage host saw blob GETs only: no Authorization, no token request.
      assert.ok(storage.requests.length > 0);
      for (const r of storage.requests) {
        assert.match(r.target, /^\/v2\/r\/blobs\/sha256:/, JSON.stringify(r));
        assert.equal(r.authorization, null, JSON.stringify(r));
      }
      // The registry got only its own credentials: Basic, or tokens of its own realm.
      for (const r of reg.requests) {
        const a = r.authorization;
        if (kind === "basic") assert.ok(a === null || a === BASIC, JSON.stringify(r));
        else assert.ok(a === null || issued.has(a.slice("Bearer ".length)), JSON.stringify(r));
      }
      if (tokens) {
        // Each run asked the registry's token server once, with the credentials, for r.
        assert.equal(tokens.requests.length, 2);
        for (const r of tokens.requests) {
          assert.equal(r.authorization, BASIC);
          assert.match(r.target, /[?&]service=mini(&|$)/);
          assert.match(r.target, /[?&]scope=repository%3Ar%3Apull(&|$)/);
        }
      }
      // Nothing was tagged.
      assert.deepEqual(await listTags(join(dir, "out")).catch(() => []), []);
    });
  });
}

Deno.test("redirect: a storage host that serves the blob gets no Authorization", async () => {
  await withServers(async (dir, stack) => {
    const src = join(dir, "src");
    await buildRandomImage(src, "v1", { layerSizes: [1500, 2500] });
    // The storage host serves blobs from the source layout.
    const storage = stack.add(serveRecorded(async (_req, url) => {
      const hex = /\/blobs\/sha256:([0-9a-f]{64})$/.exec(url.pathname)?.[1];
      const bytes = hex ? await Deno.readFile(join(src, "blobs", "sha256", hex)) : undefined;
      return bytes ? new Response(bytes) : new Response(null, { status: 404 });
    }, "127.0.0.1"));
    const reg = stack.add(startMiniRegistry({
      auth: { kind: "basic", user: USER, password: PASSWORD },
      blobRedirect: storage.origin,
    }));
    await reg.seed(src, "v1", "r");
    const home = join(dir, "home");
    await Deno.mkdir(home);
    const out = join(dir, "out");
    await ok(home, ["--creds", CREDS, `oci://${reg.host}/r:v1`, `${out}:v1`]);
    await assertSameContent(src, "v1", out, "v1");
    // Config and two layers, each fetched once from storage, none with credentials.
    assert.equal(storage.requests.length, 3);
    assert.deepEqual(storage.requests.map((r) => r.authorization), [null, null, null]);
  });
});

Deno.test("realm: a registry's token realm on another host gets the credentials and works", async () => {
  await withServers(async (dir, stack) => {
    const src = join(dir, "src");
    await buildRandomImage(src, "v1", { layerSizes: [1500] });
    const issued = new Set<string>();
    const tokens = stack.add(tokenServer(issued));
    const reg = stack.add(startMiniRegistry({
      auth: {
        kind: "bearer",
        realm: `${tokens.origin}/token`,
        service: "mini",
        valid: (t) => issued.has(t),
      },
    }));
    await reg.seed(src, "v1", "nvidia/cuda");
    const home = join(dir, "home");
    await Deno.mkdir(home);
    const out = join(dir, "out");
    await ok(home, ["--creds", CREDS, `oci://${reg.host}/nvidia/cuda:v1`, `${out}:v1`]);
    await assertSameContent(src, "v1", out, "v1");
    // One token request, with the credentials and the account, for the repository.
    assert.equal(tokens.requests.length, 1, JSON.stringify(tokens.requests));
    const [t] = tokens.requests;
    assert.equal(t.authorization, BASIC);
    const q = new URL(t.target, tokens.origin).searchParams;
    assert.equal(q.get("account"), USER);
    assert.equal(q.get("service"), "mini");
    assert.deepEqual(q.getAll("scope"), ["repository:nvidia/cuda:pull"]);
    // The registry itself never saw the password.
    assert.ok(reg.requests.every((r) => r.authorization !== BASIC));

    // Anonymous: an anonymous token, then 401 insufficient_scope: the line says the
    // repository may be missing or need credentials, and how to give them.
    tokens.requests.length = 0;
    const why = await fails(home, [`oci://${reg.host}/nvidia/cuda:v1`, `${join(dir, "o2")}:v1`]);
    assert.equal(
      why,
      `${reg.host}/nvidia/cuda: not found, or access denied without credentials ` +
        `(HEAD /v2/nvidia/cuda/manifests/v1: 401 Unauthorized); credentials were looked up in ` +
        `${home}/.config/containers/auth.json, ${home}/.docker/config.json; ` +
        "give them with --creds USER[:PASS], --authfile FILE or podman/docker login",
    );
    assert.ok(tokens.requests.every((r) => r.authorization === null));
    // With a wrong password it stays what it is.
    assert.equal(
      await fails(home, [
        "--creds",
        `${USER}:wrong`,
        `oci://${reg.host}/nvidia/cuda:v1`,
        `${join(dir, "o3")}:v1`,
      ]),
      `authentication failed for ${reg.host}; the credentials came from --creds`,
    );
  });
});

Deno.test("manifest PUT: any 2xx is success (Quay answers 202)", async () => {
  await withServers(async (dir, stack) => {
    const src = join(dir, "src");
    const built = await buildRandomImage(src, "v1", { layerSizes: [1500] });
    const reg = stack.add(startMiniRegistry({ auth: { kind: "none" }, manifestPutStatus: 202 }));
    const home = join(dir, "home");
    await Deno.mkdir(home);
    const r = await ok(home, [`${src}:v1`, `oci://${reg.host}/quay/img:v1`]);
    assert.equal(r.stdout.trim(), built.manifest.digest);
    assert.equal(reg.tags.get("quay/img:v1"), built.manifest.digest);
    const puts = reg.requests.filter((q) => q.method === "PUT" && q.target.includes("/manifests/"));
    assert.equal(puts.length, 1);
  });
});
