// Unit tests for WWW-Authenticate parsing (src/store/registry/auth.ts) and the credential
// lookup (src/store/registry/credentials.ts): key normalization, which files are read in
// which order, and which source wins within a file.
//
// The lookup never reads this process's environment here: every call gets an `env` with a
// temp HOME (and PATH with the fake helpers of tests/fixtures/cred_helpers), so neither the
// machine's own credential files nor other test files running in parallel interfere.
import assert from "node:assert/strict";
import { join } from "node:path";
import { parseChallenges } from "../src/store/registry/auth.ts";
import {
  credentialFiles,
  type CredentialOptions,
  findCredentials,
  normalizeKey,
  parseCredsFlag,
} from "../src/store/registry/credentials.ts";
import { UserError } from "../src/errors.ts";
import { type InstalledHelpers, installHelpers } from "./fixtures/cred_helpers/install.ts";

const b64 = (s: string) => btoa(String.fromCharCode(...new TextEncoder().encode(s)));
const auth = (user: string, password: string) => ({ auth: b64(`${user}:${password}`) });

// ---------------------------------------------------------------------------------------
// WWW-Authenticate

Deno.test("challenges: Bearer with a comma inside the quoted scope", () => {
  const list = parseChallenges(
    'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",' +
      'scope="repository:samalba/my-app:pull,push"',
  );
  assert.deepEqual(list, [{
    scheme: "bearer",
    params: {
      realm: "https://auth.docker.io/token",
      service: "registry.docker.io",
      scope: "repository:samalba/my-app:pull,push",
    },
  }]);
});

Deno.test("challenges: escaped quotes, case-insensitive names, token values, spaces", () => {
  const [c] = parseChallenges(
    'BEARER Realm = "https://a.example/t?x=1&y=2" , SERVICE=reg.example,' +
      'error="invalid_token",error_description="say \\"hi\\", then \\\\ go"',
  );
  assert.equal(c.scheme, "bearer");
  assert.deepEqual(c.params, {
    realm: "https://a.example/t?x=1&y=2",
    service: "reg.example",
    error: "invalid_token",
    error_description: 'say "hi", then \\ go',
  });
});

Deno.test("challenges: several in one value, as Headers.get() joins several lines", () => {
  const h = new Headers();
  h.append("WWW-Authenticate", 'Bearer realm="https://r.example/token",service="s, t"');
  h.append("WWW-Authenticate", 'Basic realm="Registry Realm, with a comma"');
  h.append("WWW-Authenticate", "Negotiate");
  const list = parseChallenges(h.get("www-authenticate")!);
  assert.deepEqual(list, [
    { scheme: "bearer", params: { realm: "https://r.example/token", service: "s, t" } },
    { scheme: "basic", params: { realm: "Registry Realm, with a comma" } },
    { scheme: "negotiate", params: {} },
  ]);
  // Basic first, Bearer after: both found, in order.
  assert.deepEqual(
    parseChallenges('Basic realm="x", Bearer realm="https://y/t",scope="repository:a:pull"')
      .map((c) => [c.scheme, c.params.realm]),
    [["basic", "x"], ["bearer", "https://y/t"]],
  );
});

Deno.test("challenges: scopes with a port in the repository name, several scopes", () => {
  const [c] = parseChallenges(
    'Bearer realm="https://h:5000/token",service="h:5000",' +
      'scope="repository:h:5000/ns/repo:pull,push repository:h:5000/other:pull",' +
      'error="insufficient_scope"',
  );
  assert.equal(c.params.service, "h:5000");
  assert.equal(
    c.params.scope,
    "repository:h:5000/ns/repo:pull,push repository:h:5000/other:pull",
  );
  assert.equal(c.params.error, "insufficient_scope");
});

Deno.test("challenges: token68 after a scheme, empty and malformed input", () => {
  assert.deepEqual(
    parseChallenges("Negotiate abc==, Basic realm=x").map((c) => c.scheme),
    ["negotiate", "basic"],
  );
  // token68 without padding is not a new challenge either.
  assert.deepEqual(
    parseChallenges('Foo YWJjZA, Bearer realm="https://t/"').map((c) => [c.scheme, c.params]),
    [["foo", {}], ["bearer", { realm: "https://t/" }]],
  );
  assert.deepEqual(parseChallenges(""), []);
  assert.deepEqual(parseChallenges(" , ,"), []);
  // An unterminated quoted value ends at the end of the input.
  assert.deepEqual(parseChallenges('Bearer realm="https://t/x'), [
    { scheme: "bearer", params: { realm: "https://t/x" } },
  ]);
  // An empty quoted value.
  assert.deepEqual(parseChallenges('Basic realm=""'), [{ scheme: "basic", params: { realm: "" } }]);
});

// ---------------------------------------------------------------------------------------
// Keys and files

Deno.test("normalizeKey: schemes, paths, Docker Hub spellings, case", () => {
  const cases: [string, string][] = [
    ["https://index.docker.io/v1/", "docker.io"],
    ["http://index.docker.io/v1/", "docker.io"],
    ["index.docker.io", "docker.io"],
    ["registry-1.docker.io", "docker.io"],
    ["docker.io", "docker.io"],
    ["docker.io/library/alpine", "docker.io/library/alpine"],
    ["https://registry.example:5000/v2/", "registry.example:5000"],
    ["Registry.Example:5000", "registry.example:5000"],
    ["registry.example/ns/repo", "registry.example/ns/repo"],
    ["registry.example/ns/", "registry.example/ns"],
    ["  localhost:5000  ", "localhost:5000"],
    ["127.0.0.1:5000", "127.0.0.1:5000"],
  ];
  for (const [key, want] of cases) assert.equal(normalizeKey(key), want, key);
});

Deno.test("credentialFiles: --authfile only, REGISTRY_AUTH_FILE only, else the standard order", () => {
  const env = {
    HOME: "/home/u",
    XDG_RUNTIME_DIR: "/run/user/1",
    XDG_CONFIG_HOME: "/cfg",
    DOCKER_CONFIG: "/dcfg",
  };
  assert.deepEqual(credentialFiles(undefined, env), [
    "/run/user/1/containers/auth.json",
    "/cfg/containers/auth.json",
    "/dcfg/config.json",
  ]);
  assert.deepEqual(credentialFiles(undefined, { HOME: "/home/u" }), [
    "/home/u/.config/containers/auth.json",
    "/home/u/.docker/config.json",
  ]);
  // Empty variables count as unset.
  assert.deepEqual(credentialFiles(undefined, { HOME: "/h", XDG_RUNTIME_DIR: "" }), [
    "/h/.config/containers/auth.json",
    "/h/.docker/config.json",
  ]);
  assert.deepEqual(credentialFiles(undefined, { ...env, REGISTRY_AUTH_FILE: "/x/auth.json" }), [
    "/x/auth.json",
  ]);
  assert.deepEqual(
    credentialFiles("/only.json", { ...env, REGISTRY_AUTH_FILE: "/x/auth.json" }),
    ["/only.json"],
  );
  assert.deepEqual(credentialFiles(undefined, {}), []);
});

Deno.test("parseCredsFlag: USER[:PASS], a colon in the password, empty user refused", () => {
  assert.deepEqual(parseCredsFlag("alice:pa:ss", "creds"), {
    username: "alice",
    password: "pa:ss",
  });
  assert.deepEqual(parseCredsFlag("alice", "creds"), { username: "alice", password: undefined });
  assert.deepEqual(parseCredsFlag("alice:", "creds"), { username: "alice", password: "" });
  assert.throws(() => parseCredsFlag(":pw", "src-creds"), /--src-creds: empty user name/);
});

// ---------------------------------------------------------------------------------------
// findCredentials

interface Home {
  root: string;
  env: Record<string, string>;
  helpers: InstalledHelpers;
  /** Write JSON to a path relative to the temp root (parents created). */
  write(rel: string, doc: unknown): Promise<string>;
  find(
    registry: string,
    repository: string,
    opts?: CredentialOptions,
  ): ReturnType<typeof findCredentials>;
  debug: string[];
}

async function withHome(fn: (h: Home) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "umoci-copy-creds-" });
  try {
    const helpers = await installHelpers(root, ["umoci-a", "umoci-b", "umoci-store"]);
    const env = {
      HOME: join(root, "home"),
      PATH: `${helpers.dir}:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`,
      ...helpers.env,
    };
    const debug: string[] = [];
    await fn({
      root,
      env,
      helpers,
      debug,
      async write(rel, doc) {
        const path = join(root, rel);
        await Deno.mkdir(join(path, ".."), { recursive: true });
        await Deno.writeTextFile(path, typeof doc === "string" ? doc : JSON.stringify(doc));
        return path;
      },
      find: (registry, repository, opts = {}) =>
        findCredentials(registry, repository, {
          env,
          debug: (m) => debug.push(m),
          ...opts,
        }),
    });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test("findCredentials: flags first, --no-creds none, nothing configured → anonymous", async () => {
  await withHome(async (h) => {
    await h.write("home/.docker/config.json", { auths: { "reg.example": auth("file", "f") } });
    assert.deepEqual(
      await h.find("reg.example", "a/b", { creds: { username: "flag", password: "p" } }),
      { kind: "basic", username: "flag", password: "p" },
    );
    assert.equal(
      await h.find("reg.example", "a/b", {
        noCreds: true,
        creds: { username: "flag", password: "p" },
      }),
      undefined,
    );
    assert.deepEqual(await h.find("reg.example", "a/b"), {
      kind: "basic",
      username: "file",
      password: "f",
    });
    assert.equal(await h.find("other.example", "a/b"), undefined);
    assert.ok(h.debug.some((m) => /other\.example: none found/.test(m)), h.debug.join("\n"));
  });
});

Deno.test("findCredentials: XDG_RUNTIME_DIR, then ~/.config, then DOCKER_CONFIG; first answer wins", async () => {
  await withHome(async (h) => {
    const env = {
      ...h.env,
      XDG_RUNTIME_DIR: join(h.root, "run"),
      DOCKER_CONFIG: join(h.root, "d"),
    };
    await h.write("run/containers/auth.json", { auths: { "one.example": auth("run", "1") } });
    await h.write("home/.config/containers/auth.json", {
      auths: { "one.example": auth("config", "2"), "two.example": auth("config", "2") },
    });
    await h.write("d/config.json", {
      auths: {
        "one.example": auth("docker", "3"),
        "two.example": auth("docker", "3"),
        "three.example": auth("docker", "3"),
      },
    });
    // ~/.docker/config.json is not read when DOCKER_CONFIG is set.
    await h.write("home/.docker/config.json", { auths: { "four.example": auth("home", "4") } });
    const user = async (reg: string) =>
      ((await h.find(reg, "x", { env })) as { username?: string } | undefined)?.username;
    assert.equal(await user("one.example"), "run");
    assert.equal(await user("two.example"), "config");
    assert.equal(await user("three.example"), "docker");
    assert.equal(await user("four.example"), undefined);
    // Without DOCKER_CONFIG, ~/.docker/config.json it is.
    assert.equal(
      ((await h.find("four.example", "x")) as { username?: string } | undefined)?.username,
      "home",
    );
  });
});

Deno.test("findCredentials: REGISTRY_AUTH_FILE and --authfile replace every other file", async () => {
  await withHome(async (h) => {
    await h.write("home/.docker/config.json", { auths: { "reg.example": auth("docker", "d") } });
    const envFile = await h.write("env-auth.json", { auths: { "reg.example": auth("env", "e") } });
    const flagFile = await h.write("flag-auth.json", {
      auths: { "reg.example": auth("flag", "f") },
    });
    const empty = await h.write("empty.json", { auths: {} });
    const env = { ...h.env, REGISTRY_AUTH_FILE: envFile };
    const user = async (opts: CredentialOptions) =>
      ((await h.find("reg.example", "x", opts)) as { username?: string } | undefined)?.username;
    assert.equal(await user({ env }), "env");
    assert.equal(await user({ env, authFile: flagFile }), "flag");
    // Only that file: no fallback to config.json when it has nothing.
    assert.equal(await user({ authFile: empty }), undefined);
    assert.equal(await user({ env: { ...h.env, REGISTRY_AUTH_FILE: empty } }), undefined);
    // A missing --authfile is an error; a missing REGISTRY_AUTH_FILE is just no file.
    await assert.rejects(
      h.find("reg.example", "x", { authFile: join(h.root, "nope.json") }),
      (e) => e instanceof UserError && /--authfile .*nope\.json: no such file/.test(e.message),
    );
    assert.equal(
      await user({ env: { ...h.env, REGISTRY_AUTH_FILE: join(h.root, "nope.json") } }),
      undefined,
    );
  });
});

Deno.test("findCredentials: a credential file that exists but cannot be read is an error, not anonymous", async () => {
  await withHome(async (h) => {
    // A directory where ~/.docker/config.json should be, and an oversized REGISTRY_AUTH_FILE:
    // skipping either would send the requests without the user's credentials.
    await Deno.mkdir(join(h.root, "home/.docker/config.json"), { recursive: true });
    await assert.rejects(
      h.find("reg.example", "x"),
      (e) =>
        e instanceof UserError &&
        /^cannot read the credential file .*\.docker\/config\.json: not a regular file or a pipe \(.*--authfile.*--no-creds\)$/
          .test(e.message),
    );
    const big = join(h.root, "big.json");
    await Deno.writeTextFile(big, `{"auths":{},"pad":"${"x".repeat(1024 * 1024)}"}`);
    await assert.rejects(
      h.find("reg.example", "x", { env: { ...h.env, REGISTRY_AUTH_FILE: big } }),
      (e) => e instanceof UserError && /big\.json: larger than 1048576 bytes/.test(e.message),
    );
    // --no-creds reads no file at all; a file that is not there is simply no source.
    assert.equal(await h.find("reg.example", "x", { noCreds: true }), undefined);
    await Deno.remove(join(h.root, "home/.docker"), { recursive: true });
    assert.equal(await h.find("reg.example", "x"), undefined);
  });
});

Deno.test("findCredentials: the most specific auths key wins; Docker Hub spellings", async () => {
  await withHome(async (h) => {
    await h.write("home/.config/containers/auth.json", {
      auths: {
        "reg.example": auth("host", "1"),
        "reg.example/team": auth("team", "2"),
        "reg.example/team/app": auth("app", "3"),
        // An empty entry only says a helper holds the secret: skipped.
        "reg.example/team/empty": {},
        "https://index.docker.io/v1/": auth("hub", "4"),
        "http://reg.example:5000/v2/": auth("port", "5"),
      },
    });
    const user = async (reg: string, repo: string) =>
      ((await h.find(reg, repo)) as { username?: string } | undefined)?.username;
    assert.equal(await user("reg.example", "team/app"), "app");
    assert.equal(await user("reg.example", "team/app/sub"), "app");
    assert.equal(await user("reg.example", "team/other"), "team");
    assert.equal(await user("reg.example", "team/empty"), "team");
    assert.equal(await user("reg.example", "teams/app"), "host");
    assert.equal(await user("docker.io", "library/alpine"), "hub");
    assert.equal(await user("registry-1.docker.io", "library/alpine"), "hub");
    assert.equal(await user("reg.example:5000", "x"), "port");
    assert.equal(await user("REG.example", "x"), "host");
  });
});

Deno.test("findCredentials: auth decoding, identitytoken, and errors that name no secret", async () => {
  await withHome(async (h) => {
    const file = await h.write("home/.docker/config.json", {
      auths: {
        "colon.example": { auth: b64("user:pa:ss\0\0") },
        "token.example": { auth: b64("tokuser:"), identitytoken: "IDTOKEN-SECRET-1" },
        "bad.example": { auth: "!!!not base64 SECRETISH!!!" },
        "nocolon.example": { auth: b64("no-colon-SECRET") },
        "fields.example": { username: "fu", password: "fp" },
      },
    });
    assert.deepEqual(await h.find("colon.example", "x"), {
      kind: "basic",
      username: "user",
      password: "pa:ss",
    });
    assert.deepEqual(await h.find("token.example", "x"), {
      kind: "identityToken",
      token: "IDTOKEN-SECRET-1",
      username: "tokuser",
    });
    assert.deepEqual(await h.find("fields.example", "x"), {
      kind: "basic",
      username: "fu",
      password: "fp",
    });
    for (const reg of ["bad.example", "nocolon.example"]) {
      await assert.rejects(h.find(reg, "x"), (e) => {
        assert.ok(e instanceof UserError);
        assert.ok(e.message.includes(file), e.message);
        assert.ok(e.message.includes(reg), e.message);
        assert.ok(!/SECRET/.test(e.message), e.message);
        return true;
      });
    }
    await h.write("home/.docker/config.json", '{"auths": {"x": {"auth": "SECRET-IN-BROKEN-JSON"');
    await assert.rejects(h.find("x", "y"), (e) => {
      assert.ok(e instanceof UserError && e.message.includes("is not valid JSON"), String(e));
      assert.ok(!/SECRET/.test(e.message));
      return true;
    });
    assert.ok(!h.debug.some((m) => /SECRET|pa:ss|fp/.test(m)), h.debug.join("\n"));
  });
});

Deno.test("findCredentials: credHelpers, then credsStore, then auths", async () => {
  await withHome(async (h) => {
    await h.write("home/.docker/config.json", {
      credHelpers: { "helped.example": "umoci-a", "https://index.docker.io/v1/": "umoci-b" },
      credsStore: "umoci-store",
      auths: {
        "helped.example": auth("from-auths", "x"),
        "stored.example": {},
        "plain.example": auth("from-auths", "y"),
      },
    });
    await h.helpers.add("umoci-a", "helped.example", "from-helper", "HELPERSECRET1");
    await h.helpers.add("umoci-store", "helped.example", "from-store", "STORESECRET0");
    await h.helpers.add("umoci-store", "stored.example", "from-store", "STORESECRET2");
    await h.helpers.add("umoci-b", "https://index.docker.io/v1/", "<token>", "HUBIDTOKEN3");
    assert.deepEqual(await h.find("helped.example", "r"), {
      kind: "basic",
      username: "from-helper",
      password: "HELPERSECRET1",
    });
    assert.deepEqual(await h.find("stored.example", "r"), {
      kind: "basic",
      username: "from-store",
      password: "STORESECRET2",
    });
    // Docker Hub: the helper is asked about https://index.docker.io/v1/; "<token>" means
    // an identity token.
    assert.deepEqual(await h.find("docker.io", "library/alpine"), {
      kind: "identityToken",
      token: "HUBIDTOKEN3",
    });
    // Neither helper knows plain.example: on to auths.
    assert.deepEqual(await h.find("plain.example", "r"), {
      kind: "basic",
      username: "from-auths",
      password: "y",
    });
    assert.deepEqual(await h.helpers.calls(), [
      ["umoci-a", "helped.example"],
      ["umoci-store", "stored.example"],
      ["umoci-b", "https://index.docker.io/v1/"],
      ["umoci-store", "plain.example"],
    ]);
    assert.ok(!h.debug.some((m) => /SECRET|IDTOKEN/.test(m)), h.debug.join("\n"));
  });
});

Deno.test("findCredentials: helpers that are missing or broken", async () => {
  await withHome(async (h) => {
    // A credsStore that is not installed is skipped; auths still answer.
    await h.write("home/.docker/config.json", {
      credsStore: "not-installed",
      auths: { "reg.example": auth("from-auths", "a") },
    });
    assert.deepEqual(await h.find("reg.example", "r"), {
      kind: "basic",
      username: "from-auths",
      password: "a",
    });
    assert.ok(h.debug.some((m) => /docker-credential-not-installed not found/.test(m)));
    // A credHelpers entry for the registry is explicit: its helper missing is an error.
    await h.write("home/.docker/config.json", {
      credHelpers: { "reg.example": "not-installed" },
      auths: { "reg.example": auth("from-auths", "a") },
    });
    await assert.rejects(
      h.find("reg.example", "r"),
      (e) =>
        e instanceof UserError && /docker-credential-not-installed not found on PATH/.test(
          e.message,
        ),
    );
    // A failing helper: reported with its exit code, none of its output.
    await h.write("home/.docker/config.json", { credHelpers: { "reg.example": "umoci-broken" } });
    await assert.rejects(h.find("reg.example", "r"), (e) => {
      assert.ok(e instanceof UserError);
      assert.equal(
        e.message,
        "credential helper docker-credential-umoci-broken failed (exit code 3)",
      );
      return true;
    });
    // A helper name that could be a path is refused before anything runs.
    await h.write("home/.docker/config.json", { credHelpers: { "reg.example": "../../bin/sh" } });
    await assert.rejects(h.find("reg.example", "r"), /invalid credential helper name/);
  });
});
