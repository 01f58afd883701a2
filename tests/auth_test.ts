// Registry authentication, end to end.
//
// 1. Realm safety (checkRealm), as a table.
// 2. The token protocol against small fake servers, for what the real registry cannot be
//    made to do: concurrent callers sharing one token request, odd token responses
//    (access_token only, expires_in below 60 s, issued_at, no token, unusable token),
//    401 invalid_token and insufficient_scope, the OAuth2 POST and its GET fallback,
//    foreign realms and redirects, Basic with a wrong password.
// 3. The CLI (tests/fixtures/cli.ts: main.ts, or the bundle under `deno task test`)
//    against the real docker-registry with htpasswd and with token auth over TLS
//    (tests/fixtures/auth_registry.ts): pull and push with every credential source, the
//    failures, registry→registry with per-side credentials, cross-repository mounts, and
//    token requests counted at the token server.
//
// Every CLI run gets a clean environment (clearEnv) with its own empty HOME, so the
// machine's credential files, XDG_RUNTIME_DIR, DOCKER_CONFIG or REGISTRY_AUTH_FILE never
// interfere; every run has --trace-requests --log=debug (except where a run checks that the
// error is the only line) and its whole output is searched for secrets: passwords,
// identity tokens, Basic values, and JWTs (the token server's bearer tokens).
import assert from "node:assert/strict";
import { join } from "node:path";
import { UserError } from "../src/errors.ts";
import { parseRegistryReference } from "../src/reference.ts";
import { Authenticator, checkRealm, type Credentials } from "../src/store/registry/auth.ts";
import { RegistryStore } from "../src/store/registry/registry.ts";
import { Transport } from "../src/store/registry/transport.ts";
import { type AuthRegistry, startAuthRegistry } from "./fixtures/auth_registry.ts";
import { type RunResult, umoci } from "./fixtures/cli.ts";
import { type InstalledHelpers, installHelpers } from "./fixtures/cred_helpers/install.ts";
import type { TokenRequest } from "./fixtures/token_server.ts";
import {
  assertSameContent,
  buildRandomImage,
  listBlobs,
  skopeoCopy,
  snapshotTree,
} from "./fixtures/images.ts";

const enc = new TextEncoder();
const b64 = (s: string) => btoa(String.fromCharCode(...enc.encode(s)));
const basic = (u: string, p: string) => `Basic ${b64(`${u}:${p}`)}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------
// 1. Realm safety

/** How the CLI's authentication failures say to give credentials. */
const GIVE = "give them with --creds USER[:PASS], --authfile FILE or podman/docker login";

Deno.test("realm: any host gets credentials over https (or the registry's own http); no domain rule", () => {
  const decide = (realm: string, registry: string) =>
    checkRealm(realm, new URL(registry), "reg").refuseCredentials;
  const allowed: [string, string][] = [
    ["https://auth.docker.io/token", "https://registry-1.docker.io"],
    ["https://registry.example/token?x=1", "https://registry.example"],
    ["https://auth.example.com/t", "https://registry.example.com:5000"],
    ["https://127.0.0.1:9999/token", "https://127.0.0.1:5000"],
    // The registry's own challenge is trusted on any host (as docker, skopeo, crane do):
    // nvcr.io's realm is on authn.nvidia.com, which no domain rule would accept.
    ["https://authn.nvidia.com/token", "https://nvcr.io"],
    ["https://evil.example/token", "https://registry.example"],
    ["https://127.0.0.2/token", "https://127.0.0.1:5000"],
    ["https://localhost/token", "https://127.0.0.1:5000"],
    ["https://[::2]/token", "https://[::1]:5000"],
    // Private addresses are fine: air-gapped registries and their token servers live there.
    ["https://10.0.0.1/token", "https://registry.example"],
    ["https://192.168.1.5:8443/token", "https://172.16.0.3:5000"],
    // http only when the user chose a plain-http registry.
    ["http://127.0.0.1:9999/token", "http://127.0.0.1:5000"],
    ["http://auth.example.com/token", "http://registry.example.com"],
    ["http://localhost:9/token", "http://127.0.0.1:5000"],
    ["https://[::1]:9/token", "https://[::1]:5000"],
    // A link-local registry may have its realm on itself.
    ["https://169.254.10.10:8/t", "https://169.254.10.10:5000"],
  ];
  for (const [realm, registry] of allowed) {
    assert.equal(decide(realm, registry), undefined, `${realm} for ${registry}`);
  }
  // The old "same last two DNS labels" rule decided nothing: attacker.co.uk and
  // registry.example.co.uk share "co.uk". Whatever the host, only the scheme matters now.
  assert.equal(decide("https://attacker.co.uk/t", "https://registry.example.co.uk"), undefined);
  assert.match(
    decide("http://attacker.co.uk/t", "https://registry.example.co.uk") ?? "(allowed)",
    /plain http/,
  );
  const refused: [string, string, RegExp][] = [
    ["http://auth.docker.io/token", "https://registry-1.docker.io", /plain http/],
    ["http://127.0.0.1:9/token", "https://127.0.0.1:5000", /plain http/],
    ["http://authn.nvidia.com/token", "https://nvcr.io", /plain http/],
  ];
  for (const [realm, registry, why] of refused) {
    assert.match(decide(realm, registry) ?? "(allowed)", why, `${realm} for ${registry}`);
  }
  const fatal: [string, RegExp][] = [
    ["https://user:SECRETPW@auth.example/token", /auth\.example\/token carries user info/],
    ["ftp://auth.example/token", /unsupported scheme ftp:/],
    ["not a url", /is not a URL/],
    ["http://169.254.169.254/latest/meta-data/", /link-local/],
    ["https://169.254.169.254/token", /link-local/],
    // Other spellings of the metadata address, as the URL parser normalises them.
    ["http://2852039166/token", /link-local/],
    ["http://[::ffff:169.254.169.254]/token", /link-local/],
    ["http://[fe80::1]/token", /link-local/],
    ["https://[febf::1]:8443/token", /link-local/],
  ];
  for (const [realm, why] of fatal) {
    assert.throws(() => checkRealm(realm, new URL("https://registry.example"), "reg"), (e) => {
      assert.ok(e instanceof UserError, String(e));
      assert.match(e.message, why);
      assert.ok(!e.message.includes("SECRETPW"), e.message);
      return true;
    });
  }
  // Not link-local: fec0::/10 and 169.255.x.x.
  for (const realm of ["https://[fec0::1]/t", "https://169.255.0.1/t"]) {
    assert.equal(decide(realm, "https://registry.example"), undefined, realm);
  }
});

// ---------------------------------------------------------------------------------------
// 2. The token protocol against fake servers

function serve(handler: (req: Request) => Response | Promise<Response>, hostname = "127.0.0.1") {
  const ac = new AbortController();
  const server = Deno.serve({ hostname, port: 0, signal: ac.signal, onListen() {} }, handler);
  return {
    origin: `http://${hostname}:${server.addr.port}`,
    host: `${hostname}:${server.addr.port}`,
    stop: async () => {
      ac.abort();
      await server.finished;
    },
  };
}

function atomsOf(scopes: string[]): string[] {
  return scopes.flatMap((s) => {
    const i = s.lastIndexOf(":");
    return s.slice(i + 1).split(",").map((a) => `${s.slice(0, i)}:${a}`);
  });
}

interface TokenCall {
  method: string;
  url: URL;
  authorization: string | null;
  form?: URLSearchParams;
  /** Scopes as sent (GET: every scope parameter; POST: the one field split on spaces). */
  scopes: string[];
}

/**
 * A fake bearer registry on plain http. Requests under /v2/REPO/ need a token granting
 * pull (GET/HEAD) or pull,push (others) on REPO, plus `extraScope` when set; /token* is
 * its token server (or `realm` names another). `respond` decides each token answer.
 */
function fakeBearer() {
  const calls: TokenCall[] = [];
  const grants = new Map<string, Set<string>>();
  let issued = 0;
  const fake = {
    calls,
    realm: "",
    extraScope: undefined as string | undefined,
    delayMs: 0,
    /** Default answer: a fresh token granting what was asked. */
    issue(scopes: string[], extra: Record<string, unknown> = {}): Response {
      const token = `tok${++issued}.${crypto.randomUUID()}`;
      grants.set(token, new Set(atomsOf(scopes)));
      return Response.json({ token, expires_in: 300, ...extra });
    },
    respond: (_call: TokenCall): Response | Promise<Response> => new Response(null),
    revokeAll: () => grants.clear(),
    tokenHandler: async (req: Request): Promise<Response> => {
      const url = new URL(req.url);
      const form = req.method === "POST" ? new URLSearchParams(await req.text()) : undefined;
      const scopes = form
        ? (form.get("scope") ?? "").split(" ").filter(Boolean)
        : url.searchParams.getAll("scope");
      const call = {
        method: req.method,
        url,
        authorization: req.headers.get("authorization"),
        form,
        scopes,
      };
      calls.push(call);
      if (fake.delayMs) await sleep(fake.delayMs);
      return await fake.respond(call);
    },
    server: undefined as unknown as ReturnType<typeof serve>,
  };
  fake.respond = (call) => fake.issue(call.scopes);
  fake.server = serve(async (req) => {
    const url = new URL(req.url);
    if (url.pathname.startsWith("/token")) return await fake.tokenHandler(req);
    const repo = /^\/v2\/(.+?)\/(blobs|manifests)\//.exec(url.pathname)?.[1];
    const pull = req.method === "GET" || req.method === "HEAD";
    const needed = repo ? [`repository:${repo}:${pull ? "pull" : "pull,push"}`] : [];
    if (repo && fake.extraScope) needed.push(fake.extraScope);
    const challenge = (error?: string) => {
      let h = `Bearer realm="${fake.realm || `${fake.server.origin}/token`}",service="fake"`;
      if (needed.length) h += `,scope="${needed.join(" ")}"`;
      if (error) h += `,error="${error}"`;
      return new Response(req.method === "HEAD" ? null : '{"errors":[]}', {
        status: 401,
        headers: { "www-authenticate": h },
      });
    };
    const auth = req.headers.get("authorization");
    if (!auth?.startsWith("Bearer ")) return challenge();
    const granted = grants.get(auth.slice("Bearer ".length));
    if (!granted) return challenge("invalid_token");
    if (!atomsOf(needed).every((a) => granted.has(a))) return challenge("insufficient_scope");
    return new Response(null, { status: url.pathname === "/v2/" ? 200 : 404 });
  });
  return fake;
}

type Fake = ReturnType<typeof fakeBearer>;

/** An Authenticator for the fake (plain http), which has learnt the challenge from /v2/. */
async function authenticatorFor(
  fake: Fake,
  credentials?: Credentials,
  trace?: (l: string) => void,
): Promise<{ auth: Authenticator; close: () => void }> {
  const host = fake.server.host;
  const t = await Transport.create(host, host, { plainHttp: true, trace });
  const auth = new Authenticator(t, host, "r", credentials);
  const res = await t.request({ method: "GET", url: new URL("/v2/", t.baseUrl) });
  assert.equal(res.status, 401);
  assert.equal(await auth.unauthorized(res, []), true);
  await res.discard();
  return { auth, close: () => t.close() };
}

async function withFake(fn: (fake: Fake) => Promise<void>): Promise<void> {
  const fake = fakeBearer();
  try {
    await fn(fake);
  } finally {
    await fake.server.stop();
  }
}

const blob = (i: number) => ({
  mediaType: "application/octet-stream",
  digest: `sha256:${i.toString(16).padStart(64, "0")}`,
  size: 10,
});

Deno.test("token: concurrent requests share one token request per scope set; cached after", async () => {
  await withFake(async (fake) => {
    fake.delayMs = 50;
    // The store's way: 16 blob HEADs at once all collect a 401, then share one token.
    const store = await RegistryStore.open(parseRegistryReference(`oci://${fake.server.host}/r`), {
      plainHttp: true,
      credentials: { username: "u", password: "p" },
    });
    try {
      const found = await Promise.all([...Array(16).keys()].map((i) => store.exists(blob(i))));
      assert.deepEqual(found, Array(16).fill(false));
      assert.equal(fake.calls.length, 1);
      assert.deepEqual(fake.calls[0].scopes, ["repository:r:pull"]);
      assert.equal(fake.calls[0].authorization, basic("u", "p"));
      assert.equal(fake.calls[0].url.searchParams.get("account"), "u");
      await Promise.all([...Array(8).keys()].map((i) => store.exists(blob(100 + i))));
      assert.equal(fake.calls.length, 1);
    } finally {
      await store.close();
    }

    // Directly: pull and push wanted at once → one request each; a subset is a cache hit.
    fake.calls.length = 0;
    const { auth, close } = await authenticatorFor(fake, { username: "u", password: "p" });
    try {
      const pull = ["repository:r:pull"];
      const push = ["repository:r:pull,push"];
      const headers = await Promise.all([
        ...Array.from({ length: 10 }, () => auth.header(pull)),
        ...Array.from({ length: 10 }, () => auth.header(push)),
      ]);
      assert.equal(fake.calls.length, 2);
      assert.equal(new Set(headers.slice(0, 10)).size, 1);
      assert.equal(new Set(headers.slice(10)).size, 1);
      assert.notEqual(headers[0], headers[10]);
      assert.equal(await auth.header(["repository:r:push"]), headers[10]);
      assert.equal(fake.calls.length, 2);
      // Scopes on two repositories (a mount): one request, one scope parameter each.
      await auth.header(["repository:r:pull,push", "repository:src:pull"]);
      assert.equal(fake.calls.length, 3);
      assert.deepEqual(fake.calls[2].scopes, ["repository:r:pull,push", "repository:src:pull"]);
    } finally {
      close();
    }
  });
});

Deno.test("token: access_token, expires_in clamped to 60 s, issued_at, unusable answers", async () => {
  await withFake(async (fake) => {
    const host = fake.server.host;
    const run = async (
      respond: (call: TokenCall) => Response,
      fn: (auth: Authenticator) => Promise<void>,
    ) => {
      fake.calls.length = 0;
      fake.respond = respond;
      const { auth, close } = await authenticatorFor(fake);
      try {
        await fn(auth);
      } finally {
        close();
      }
    };
    const scopes = ["repository:r:pull"];
    await run(() => Response.json({ access_token: "AT-only" }), async (a) => {
      assert.equal(await a.header(scopes), "Bearer AT-only");
    });
    await run(() => Response.json({ token: "T", access_token: "A" }), async (a) => {
      assert.equal(await a.header(scopes), "Bearer T");
    });
    const ago = (s: number) => new Date(Date.now() - s * 1000).toISOString();
    // expires_in 10 is taken as 60: issued 30 s ago, it still has 30 s to live.
    await run(
      () => Response.json({ token: "T", expires_in: 10, issued_at: ago(30) }),
      async (a) => {
        await a.header(scopes);
        await a.header(scopes);
        assert.equal(fake.calls.length, 1);
      },
    );
    // issued_at makes a token older: issued 58 s ago with 60 s to live, it is used up.
    await run(
      () => Response.json({ token: "T", expires_in: 60, issued_at: ago(58) }),
      async (a) => {
        await a.header(scopes);
        await a.header(scopes);
        assert.equal(fake.calls.length, 2);
      },
    );
    // An issued_at in our future (skewed clocks) is ignored.
    await run(
      () => Response.json({ token: "T", expires_in: 300, issued_at: ago(-3600) }),
      async (a) => {
        await a.header(scopes);
        await a.header(scopes);
        assert.equal(fake.calls.length, 1);
      },
    );
    const fails: [Response, RegExp][] = [
      [Response.json({ expires_in: 300 }), /sent no token/],
      [Response.json({ token: "" }), /sent no token/],
      [Response.json({ token: "SECRET TOKEN\r\nx: y" }), /sent a malformed token/],
      [new Response("SECRET not json"), /sent invalid JSON/],
      [new Response("SECRET oops", { status: 500 }), /answered 500/],
      [new Response("x".repeat(1024 * 1024 + 10)), /more than the 1048576/],
    ];
    for (const [response, why] of fails) {
      await run(() => response, async (a) => {
        await assert.rejects(a.header(scopes), (e) => {
          assert.ok(e instanceof UserError, String(e));
          assert.match(e.message, why);
          assert.ok(!e.message.includes("SECRET"), e.message);
          assert.ok(e.message.startsWith(host) || e.message.startsWith("token response"));
          return true;
        });
      });
    }
  });
});

Deno.test("token: 401 invalid_token → one new token and a retry; insufficient_scope adds the scope", async () => {
  await withFake(async (fake) => {
    const store = await RegistryStore.open(parseRegistryReference(`oci://${fake.server.host}/r`), {
      plainHttp: true,
      credentials: { username: "u", password: "p" },
    });
    try {
      assert.equal(await store.exists(blob(1)), false);
      assert.equal(fake.calls.length, 1);
      fake.revokeAll(); // the token "expired" on the registry's side
      assert.equal(await store.exists(blob(2)), false);
      assert.equal(fake.calls.length, 2);
      assert.deepEqual(fake.calls[1].scopes, ["repository:r:pull"]);
      fake.extraScope = "repository:extra:pull";
      assert.equal(await store.exists(blob(3)), false);
      assert.equal(fake.calls.length, 3);
      assert.deepEqual(fake.calls[2].scopes, ["repository:extra:pull", "repository:r:pull"]);
      // The wider token now serves the plain pull requests too.
      assert.equal(await store.exists(blob(4)), false);
      assert.equal(fake.calls.length, 3);
    } finally {
      await store.close();
    }
  });
});

Deno.test("token: identity token → OAuth2 POST with one scope field; 404/405 → GET; invalid_grant", async () => {
  await withFake(async (fake) => {
    const host = fake.server.host;
    const secret = "IDTOKEN-SECRET-e5d1";
    const traced: string[] = [];
    const scopes = ["repository:r:pull,push", "repository:src:pull"];
    {
      const { auth, close } = await authenticatorFor(
        fake,
        { identityToken: secret },
        (l) => traced.push(l),
      );
      try {
        await auth.header(scopes);
      } finally {
        close();
      }
      assert.equal(fake.calls.length, 1);
      const [c] = fake.calls;
      assert.equal(c.method, "POST");
      assert.equal(c.authorization, null);
      assert.equal(c.url.search, "");
      assert.equal(c.form!.get("grant_type"), "refresh_token");
      assert.equal(c.form!.get("refresh_token"), secret);
      assert.ok(c.form!.get("client_id"));
      assert.equal(c.form!.get("service"), "fake");
      assert.deepEqual(c.form!.getAll("scope"), ["repository:r:pull,push repository:src:pull"]);
    }
    for (const status of [404, 405]) {
      fake.calls.length = 0;
      fake.respond = (call) =>
        call.method === "POST" ? new Response("no", { status }) : fake.issue(call.scopes);
      const { auth, close } = await authenticatorFor(
        fake,
        { kind: "identityToken", token: secret, username: "u" },
        (l) => traced.push(l),
      );
      try {
        assert.match((await auth.header(scopes))!, /^Bearer tok/);
      } finally {
        close();
      }
      assert.deepEqual(fake.calls.map((c) => c.method), ["POST", "GET"]);
      const get = fake.calls[1];
      assert.equal(get.authorization, null, "a refresh token never becomes Basic");
      assert.ok(!get.url.href.includes(secret));
      assert.deepEqual(get.url.searchParams.getAll("scope"), scopes);
    }
    fake.respond = () => Response.json({ error: "invalid_grant" }, { status: 400 });
    const { auth, close } = await authenticatorFor(fake, { identityToken: secret });
    try {
      await assert.rejects(auth.header(scopes), (e) => {
        assert.ok(e instanceof UserError);
        assert.equal(e.message, `authentication failed for ${host}`);
        return true;
      });
    } finally {
      close();
    }
    assert.ok(traced.length > 0);
    assert.ok(!traced.some((l) => l.includes(secret)), traced.join("\n"));
  });
});

Deno.test("token: the registry's realm on another host gets the credentials; its redirects do not", async () => {
  await withFake(async (fake) => {
    /** The Authorization header of each request the other host got. */
    const otherCalls: (string | null)[] = [];
    let other: ReturnType<typeof serve>;
    try {
      other = serve((req) => {
        otherCalls.push(req.headers.get("authorization"));
        return fake.issue(new URL(req.url).searchParams.getAll("scope"));
      }, "127.0.0.2");
    } catch {
      // 127.0.0.2 is loopback on Linux; elsewhere it may not bind.
      console.warn("127.0.0.2 not available; foreign-realm part skipped");
      return;
    }
    try {
      const scopes = ["repository:r:pull"];
      const creds = { username: "u", password: "PASSWORD-9f1" };
      // The registry names a realm on another host (nvcr.io → authn.nvidia.com): it is the
      // registry's own challenge, so the credentials go there (plain http: so is the registry).
      fake.realm = `${other.origin}/token`;
      let a = await authenticatorFor(fake, creds);
      try {
        assert.match((await a.auth.header(scopes))!, /^Bearer tok/);
      } finally {
        a.close();
      }
      assert.deepEqual(otherCalls, [basic("u", "PASSWORD-9f1")]);
      // Anonymous: the same realm, no Authorization.
      otherCalls.length = 0;
      a = await authenticatorFor(fake);
      try {
        assert.match((await a.auth.header(scopes))!, /^Bearer tok/);
      } finally {
        a.close();
      }
      assert.deepEqual(otherCalls, [null]);

      // The registry's own token server redirects elsewhere: a token request carrying
      // credentials does not follow, and nothing is sent there.
      fake.realm = "";
      otherCalls.length = 0;
      fake.respond = (call) => Response.redirect(`${other.origin}/token${call.url.search}`, 307);
      a = await authenticatorFor(fake, creds);
      try {
        await assert.rejects(
          a.auth.header(scopes),
          new RegExp(
            `^UserError: ${fake.server.host}: token server ${fake.server.origin} answered 307 ` +
              `\\(to ${other.origin}\\); token requests with credentials do not follow that redirect$`,
          ),
        );
      } finally {
        a.close();
      }
      assert.equal(otherCalls.length, 0);
      // An anonymous token request carries nothing secret: it follows.
      a = await authenticatorFor(fake);
      try {
        assert.match((await a.auth.header(scopes))!, /^Bearer tok/);
      } finally {
        a.close();
      }
      assert.deepEqual(otherCalls, [null]);
      // ...but never to a link-local address (a cloud metadata endpoint).
      fake.calls.length = 0;
      fake.respond = () => Response.redirect("http://169.254.169.254/latest/meta-data/", 302);
      a = await authenticatorFor(fake);
      try {
        await assert.rejects(
          a.auth.header(scopes),
          /token realm http:\/\/169\.254\.169\.254\/latest\/meta-data\/ is a link-local address; refused/,
        );
      } finally {
        a.close();
      }
      assert.equal(fake.calls.length, 1);

      // A redirect within the realm's origin is followed, credentials and all.
      fake.calls.length = 0;
      fake.respond = (call) =>
        call.url.pathname === "/token"
          ? new Response(null, {
            status: 302,
            headers: { location: `/token/v2${call.url.search}` },
          })
          : fake.issue(call.scopes);
      a = await authenticatorFor(fake, creds);
      try {
        assert.match((await a.auth.header(scopes))!, /^Bearer tok/);
      } finally {
        a.close();
      }
      assert.deepEqual(fake.calls.map((c) => c.url.pathname), ["/token", "/token/v2"]);
      assert.equal(fake.calls[1].authorization, basic("u", "PASSWORD-9f1"));
      assert.deepEqual(fake.calls[1].scopes, scopes);
    } finally {
      await other.stop();
    }
  });
});

Deno.test("basic: a wrong password is 'authentication failed for HOST', checked once for all", async () => {
  let probes = 0;
  const server = serve((req) => {
    const url = new URL(req.url);
    const ok = req.headers.get("authorization") === basic("u", "right");
    if (url.pathname === "/v2/" && req.headers.has("authorization")) probes++;
    if (!ok) {
      return new Response(null, {
        status: 401,
        headers: { "www-authenticate": 'Basic realm="fake"' },
      });
    }
    return new Response(null, { status: url.pathname === "/v2/" ? 200 : 404 });
  });
  const open = (credentials?: Credentials) =>
    RegistryStore.open(parseRegistryReference(`oci://${server.host}/r`), {
      plainHttp: true,
      credentials,
    });
  try {
    let store = await open({ username: "u", password: "wrong" });
    try {
      const results = await Promise.allSettled(
        [...Array(8).keys()].map((i) => store.exists(blob(i))),
      );
      for (const r of results) {
        assert.equal(r.status, "rejected");
        const e = (r as PromiseRejectedResult).reason;
        assert.ok(e instanceof UserError);
        assert.equal(e.message, `authentication failed for ${server.host}`);
      }
      assert.equal(probes, 1);
    } finally {
      await store.close();
    }
    store = await open({ username: "u", password: "right" });
    try {
      assert.equal(await store.exists(blob(1)), false);
      assert.equal(await store.exists(blob(2)), false);
      assert.equal(probes, 2);
    } finally {
      await store.close();
    }
    // Without credentials the 401 is no failed authentication: the repository may be
    // missing or private, and the line says so and how to give credentials.
    store = await open();
    try {
      await assert.rejects(store.exists(blob(1)), (e) => {
        assert.ok(e instanceof UserError);
        assert.equal(
          e.message,
          `${server.host}/r: not found, or access denied without credentials ` +
            `(HEAD /v2/r/blobs/${blob(1).digest}: 401 Unauthorized); ` +
            "give credentials with --creds or --authfile",
        );
        return true;
      });
    } finally {
      await store.close();
    }
  } finally {
    await server.stop();
  }
});

Deno.test("token: a refused anonymous token request is 'access denied without credentials'", async () => {
  await withFake(async (fake) => {
    fake.respond = () => new Response('{"details":"SECRET-ish"}', { status: 401 });
    const { auth, close } = await authenticatorFor(fake);
    try {
      await assert.rejects(auth.header(["repository:r:pull"]), (e) => {
        assert.ok(e instanceof UserError);
        assert.equal(
          e.message,
          `${fake.server.host}/r: not found, or access denied without credentials ` +
            `(token server ${fake.server.origin} answered 401 to an anonymous token request); ` +
            "give credentials with --creds or --authfile",
        );
        return true;
      });
    } finally {
      close();
    }
    // With credentials, the same answer is a failed authentication.
    const a = await authenticatorFor(fake, { username: "u", password: "p" });
    try {
      await assert.rejects(
        a.auth.header(["repository:r:pull"]),
        new RegExp(`^UserError: authentication failed for ${fake.server.host}$`),
      );
    } finally {
      a.close();
    }
  });
});

// ---------------------------------------------------------------------------------------
// 3. The CLI against the real registry

const USERS = { alice: "alice-Pässw0rd-7f3c", bob: "bob-s3cret-19ad" };
/** bob's identity (refresh) token at the token server. */
const IDTOKEN = "idtok-c0ffee-b0b-5ecret";
const SECRETS = [
  ...Object.values(USERS),
  IDTOKEN,
  ...Object.entries(USERS).map(([u, p]) => b64(`${u}:${p}`)),
  "SECRET-FROM-BROKEN-HELPER",
].flatMap((s) => [s, encodeURIComponent(s), new URLSearchParams({ s }).toString().slice(2)]);
/** A JWT: base64url JSON header, dot, base64url JSON claims. */
const JWT = /eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}/;
const DENO_DIR = (() => {
  const fromEnv = Deno.env.get("DENO_DIR");
  if (fromEnv) return fromEnv;
  const out = new Deno.Command(Deno.execPath(), { args: ["info", "--json"], stdout: "piped" })
    .outputSync();
  return JSON.parse(new TextDecoder().decode(out.stdout)).denoDir as string;
})();

function assertNoSecrets(r: RunResult, what: string): void {
  const all = r.stdout + r.stderr;
  for (const s of SECRETS) assert.ok(!all.includes(s), `${what}: output contains a secret`);
  assert.ok(!JWT.test(all), `${what}: output contains a JWT`);
}

/** No file under dir contains a secret. */
async function assertNoSecretsInFiles(dir: string): Promise<void> {
  for await (const e of Deno.readDir(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory) await assertNoSecretsInFiles(p);
    else if (e.isFile) {
      const text = new TextDecoder("latin1").decode(await Deno.readFile(p));
      for (const s of SECRETS) assert.ok(!text.includes(s), `${p} contains a secret`);
    }
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

interface Setup {
  root: string;
  /** A 6-layer image, tag v1. */
  src: string;
  helpers: InstalledHelpers;
  /** A fresh empty HOME and the environment around it. */
  home(): Promise<{ dir: string; env: Record<string, string> }>;
  /** `umoci copy ARGS` with env (clean, plus PATH with the fake helpers). */
  copy(args: string[], env: Record<string, string>, stdin?: string): Promise<RunResult>;
  /** Same, expecting success, with --trace-requests --log=debug and the secret check. */
  ok(what: string, args: string[], env: Record<string, string>, stdin?: string): Promise<RunResult>;
  /** Expect failure: once traced (secret check), once with --log=error (exactly one line). */
  fails(what: string, args: string[], env: Record<string, string>): Promise<string>;
  /** A fresh destination layout path. */
  out(): string;
  write(path: string, doc: unknown): Promise<string>;
}

async function withSetup(fn: (s: Setup) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "umoci-copy-authcli-" });
  try {
    const src = join(root, "src");
    await buildRandomImage(src, "v1", { layerSizes: [700, 800, 900, 1000, 1100, 1200] });
    const helpers = await installHelpers(root, ["umoci-test", "umoci-store", "umoci-token"]);
    let n = 0;
    const basePath = `${helpers.dir}:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`;
    const copy = (args: string[], env: Record<string, string>, stdin?: string) =>
      umoci(["copy", ...args], {
        clearEnv: true,
        env: { PATH: basePath, DENO_DIR, ...helpers.env, ...env },
        stdin,
        timeoutMs: 60_000,
      });
    const s: Setup = {
      root,
      src,
      helpers,
      async home() {
        const dir = join(root, `home-${++n}`);
        await Deno.mkdir(dir);
        return { dir, env: { HOME: dir } };
      },
      copy,
      async ok(what, args, env, stdin) {
        const r = await copy(["--trace-requests", "--log=debug", ...args], env, stdin);
        assert.equal(r.code, 0, `${what}: exit ${r.code}\n${r.stderr}`);
        assert.match(r.stdout, /^sha256:[0-9a-f]{64}\n$/, what);
        assert.match(r.stderr, /authorization: "(Basic|Bearer) <redacted>"/, `${what}: no auth?`);
        assertNoSecrets(r, what);
        return r;
      },
      async fails(what, args, env) {
        const traced = await copy(["--trace-requests", "--log=debug", ...args], env);
        assert.notEqual(traced.code, 0, `${what}: succeeded\n${traced.stderr}`);
        assertNoSecrets(traced, what);
        const quiet = await copy(["--log=error", ...args], env);
        assert.notEqual(quiet.code, 0, `${what}: succeeded the second time`);
        assert.equal(quiet.stdout, "", what);
        assert.match(quiet.stderr, /^error: [^\n]+\n$/, `${what}: not one line:\n${quiet.stderr}`);
        assertNoSecrets(quiet, what);
        assert.ok(traced.stderr.endsWith(quiet.stderr), `${what}: traced run ended otherwise`);
        return quiet.stderr.slice("error: ".length, -1);
      },
      out: () => join(root, `out-${++n}`),
      async write(path, doc) {
        await Deno.mkdir(join(path, ".."), { recursive: true });
        await Deno.writeTextFile(path, JSON.stringify(doc));
        return path;
      },
    };
    await fn(s);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

async function withRegistry(
  opts: Parameters<typeof startAuthRegistry>[0],
  fn: (reg: AuthRegistry) => Promise<void>,
): Promise<void> {
  const reg = await startAuthRegistry(opts);
  try {
    await fn(reg);
  } catch (e) {
    throw new Error(`${e instanceof Error ? e.stack : e}\n--- registry log ---\n${reg.log()}`);
  } finally {
    await reg.stop();
  }
}

/** Token requests, as "METHOD user scopes…" lines, for messages. */
function showRequests(reqs: TokenRequest[]): string {
  return reqs.map((r) => `${r.method} ${r.user} ${r.status} ${r.scopes.join(" ")}`).join("\n");
}

/** Each scope set was asked for once; returns the number of token requests. */
function assertOncePerScopeSet(reqs: TokenRequest[]): number {
  const sets = reqs.map((r) => [...r.scopes].sort().join(" "));
  assert.equal(new Set(sets).size, sets.length, `repeated token requests:\n${showRequests(reqs)}`);
  return reqs.length;
}

/** Token requests measured in the CLI tests, reported at the end of the file's run. */
const measured: string[] = [];

for (const mode of ["htpasswd", "token"] as const) {
  Deno.test(`CLI + ${mode} registry over TLS: every credential source; clean failures`, async (t) => {
    await withSetup(async (s) => {
      await withRegistry({
        mode,
        tls: true,
        users: USERS,
        identityTokens: { [IDTOKEN]: "bob" },
      }, async (reg) => {
        const H = reg.host;
        const ts = reg.tokenServer;
        const tls = ["--cacert", reg.caCert];
        const img = `oci://${H}/auth/img:v1`;
        const tokens = () => {
          const r = ts ? [...ts.requests] : [];
          if (ts) ts.requests.length = 0;
          return r;
        };
        const pull = async (
          what: string,
          args: string[],
          env: Record<string, string>,
          stdin?: string,
        ) => {
          const out = s.out();
          await s.ok(what, [...tls, ...args, img, `${out}:v1`], env, stdin);
          await assertSameContent(s.src, "v1", out, "v1");
          await assertNoSecretsInFiles(out);
          return out;
        };
        const push = async (
          what: string,
          repo: string,
          args: string[],
          env: Record<string, string>,
          stdin?: string,
        ) => {
          await s.ok(what, [...tls, ...args, `${s.src}:v1`, `oci://${H}/${repo}:v1`], env, stdin);
          // Read back with other credentials: it is really there.
          const out = s.out();
          await s.ok(`${what} (read back)`, [
            ...tls,
            "--creds",
            `bob:${USERS.bob}`,
            `oci://${H}/${repo}:v1`,
            `${out}:v1`,
          ], (await s.home()).env);
          await assertSameContent(s.src, "v1", out, "v1");
        };

        let pulled = "";
        await t.step("push 6 layers with --creds and --jobs 4; pull them back", async () => {
          const home = await s.home();
          tokens();
          await s.ok("push --creds", [
            ...tls,
            "--jobs",
            "4",
            "--creds",
            `alice:${USERS.alice}`,
            `${s.src}:v1`,
            img,
          ], home.env);
          if (ts) {
            const reqs = tokens();
            const n = assertOncePerScopeSet(reqs);
            // The first request (HEAD of the destination tag) already asks for pull,push;
            // that token serves the pull-scoped HEADs too.
            assert.equal(n, 1, showRequests(reqs));
            assert.deepEqual(reqs.map((r) => r.scopes), [["repository:auth/img:pull,push"]]);
            for (const r of reqs) {
              assert.equal(r.method, "GET");
              assert.equal(r.user, "alice");
              assert.equal(r.status, 200);
              assert.deepEqual(r.query.account, ["alice"]);
            }
            measured.push(`push of 8 blobs (6 layers), --jobs 4: ${n} token requests`);
          }
          pulled = await pull(
            "pull --creds",
            ["--jobs", "4", "--creds", `alice:${USERS.alice}`],
            home.env,
          );
          if (ts) {
            const reqs = tokens();
            assert.equal(assertOncePerScopeSet(reqs), 1, showRequests(reqs));
            measured.push(`pull of 8 blobs, --jobs 4: ${reqs.length} token request`);
          }
        });

        await t.step("--username with --password-stdin", async () => {
          const home = await s.home();
          const args = ["--username", "alice", "--password-stdin"];
          await pull("pull --password-stdin", args, home.env, `${USERS.alice}\n`);
          await push("push --password-stdin", "auth/stdin", args, home.env, `${USERS.alice}\n`);
        });

        await t.step("auth.json via $REGISTRY_AUTH_FILE, and --authfile over it", async () => {
          const home = await s.home();
          const file = await s.write(join(home.dir, "auth.json"), {
            auths: { [H]: { auth: b64(`alice:${USERS.alice}`) } },
          });
          const env = { ...home.env, REGISTRY_AUTH_FILE: file };
          await pull("pull REGISTRY_AUTH_FILE", [], env);
          await push("push REGISTRY_AUTH_FILE", "auth/envfile", [], env);
          // --authfile wins over a REGISTRY_AUTH_FILE holding a wrong password.
          const decoy = await s.write(join(home.dir, "decoy.json"), {
            auths: { [H]: { auth: b64("alice:wrong-password") } },
          });
          await pull("pull --authfile", ["--authfile", file], {
            ...home.env,
            REGISTRY_AUTH_FILE: decoy,
          });
          assert.equal(
            await s.fails("REGISTRY_AUTH_FILE wrong", [...tls, img, `${s.out()}:v1`], {
              ...home.env,
              REGISTRY_AUTH_FILE: decoy,
            }),
            `authentication failed for ${H}; credentials were looked up in ${decoy}; ${GIVE}`,
          );
          // --authfile from a pipe (`--authfile <(vault …)`): read once, it serves the
          // check before the copy and every challenge after it.
          const fifo = join(home.dir, "auth.fifo");
          await new Deno.Command("mkfifo", { args: [fifo] }).output();
          const writing = Deno.readTextFile(file).then((text) => Deno.writeTextFile(fifo, text));
          await pull("pull --authfile FIFO", ["--authfile", fifo], home.env);
          await writing;
          // A REGISTRY_AUTH_FILE that cannot be read (here a directory) stops the copy at the
          // registry's challenge; it is not skipped in favour of an anonymous request.
          const dir = join(home.dir, "auth-dir.json");
          await Deno.mkdir(dir);
          assert.equal(
            await s.fails("REGISTRY_AUTH_FILE a directory", [...tls, img, `${s.out()}:v1`], {
              ...home.env,
              REGISTRY_AUTH_FILE: dir,
            }),
            `cannot read the credential file ${dir}: not a regular file or a pipe (fix it, or name ` +
              "another with --authfile, or send no credentials with --no-creds)",
          );
          await push("push --authfile", "auth/authfile", ["--authfile", file], home.env);
        });

        await t.step(
          "$DOCKER_CONFIG/config.json auths (URL key); ~/.config auth.json (namespaced key)",
          async () => {
            const home = await s.home();
            const dockerConfig = join(home.dir, "dockercfg");
            await s.write(join(dockerConfig, "config.json"), {
              auths: { [`https://${H}`]: { auth: b64(`alice:${USERS.alice}`) } },
            });
            const env = { ...home.env, DOCKER_CONFIG: dockerConfig };
            await pull("pull DOCKER_CONFIG", [], env);
            await push("push DOCKER_CONFIG", "auth/dockercfg", [], env);
            const home2 = await s.home();
            await s.write(join(home2.dir, ".config", "containers", "auth.json"), {
              auths: {
                [H]: { auth: b64("alice:wrong-password") },
                [`${H}/auth`]: { auth: b64(`alice:${USERS.alice}`) },
              },
            });
            await pull("pull namespaced key", [], home2.env);
          },
        );

        await t.step(
          "credHelpers and credsStore with a fake docker-credential helper",
          async () => {
            await s.helpers.add("umoci-test", H, "alice", USERS.alice);
            await s.helpers.add("umoci-store", H, "alice", USERS.alice);
            const home = await s.home();
            await s.write(join(home.dir, ".docker", "config.json"), {
              credHelpers: { [H]: "umoci-test" },
              credsStore: "umoci-store",
            });
            await Deno.writeTextFile(s.helpers.log, "");
            await pull("pull credHelpers", [], home.env);
            await push("push credHelpers", "auth/helper", [], home.env);
            // Asked once per store (source, destination), never per request.
            assert.deepEqual(await s.helpers.calls(), [["umoci-test", H], ["umoci-test", H]]);
            const home2 = await s.home();
            await s.write(join(home2.dir, ".docker", "config.json"), {
              credsStore: "umoci-store",
              auths: { [H]: {} },
            });
            await Deno.writeTextFile(s.helpers.log, "");
            await pull("pull credsStore", [], home2.env);
            await push("push credsStore", "auth/store", [], home2.env);
            assert.deepEqual((await s.helpers.calls()).map((c) => c[0]), [
              "umoci-store",
              "umoci-store",
            ]);
            // --no-creds: nothing is looked up, and the registry refuses an anonymous pull.
            await Deno.writeTextFile(s.helpers.log, "");
            const why = await s.fails(
              "--no-creds",
              [...tls, "--no-creds", img, `${s.out()}:v1`],
              home.env,
            );
            assert.match(why, /^\S+: not found, or access denied without credentials \(/, why);
            assert.deepEqual(await s.helpers.calls(), []);
            // A helper that fails says nothing of what it printed.
            const home3 = await s.home();
            await s.write(join(home3.dir, ".docker", "config.json"), {
              credHelpers: { [H]: "umoci-broken" },
            });
            assert.equal(
              await s.fails("broken helper", [...tls, img, `${s.out()}:v1`], home3.env),
              "credential helper docker-credential-umoci-broken failed (exit code 3)",
            );
          },
        );

        if (mode === "token") {
          await t.step(
            "identity token: config.json identitytoken, helper <token> → OAuth2 POST",
            async () => {
              const home = await s.home();
              await s.write(join(home.dir, ".docker", "config.json"), {
                auths: { [H]: { identitytoken: IDTOKEN } },
              });
              tokens();
              await pull("pull identitytoken", [], home.env);
              await push("push identitytoken", "auth/idtoken", [], home.env);
              const reqs = tokens();
              const posts = reqs.filter((r) => r.method === "POST");
              // pull: 1; push: pull,push; the read-back uses bob's password (GET).
              assert.equal(posts.length, 2, showRequests(reqs));
              for (const r of posts) {
                assert.equal(r.grantType, "refresh_token");
                assert.equal(r.user, "bob");
                assert.equal(r.status, 200);
                assert.equal(r.hasBasicAuth, false);
                assert.ok(r.form!.client_id?.[0]);
                assert.equal(r.form!.scope.length, 1);
                assert.deepEqual(r.query, {});
              }
              await s.helpers.add("umoci-token", H, "<token>", IDTOKEN);
              const home2 = await s.home();
              await s.write(join(home2.dir, ".docker", "config.json"), {
                credHelpers: { [H]: "umoci-token" },
              });
              tokens();
              await pull("pull helper <token>", [], home2.env);
              const reqs2 = tokens();
              assert.deepEqual(reqs2.map((r) => [r.method, r.grantType, r.user]), [[
                "POST",
                "refresh_token",
                "bob",
              ]]);
            },
          );

          await t.step("cross-repository mount: the token names the source with pull", async () => {
            const home = await s.home();
            tokens();
            const r = await s.ok("mount", [
              ...tls,
              "--creds",
              `alice:${USERS.alice}`,
              img,
              `oci://${H}/auth/mounted:v1`,
            ], home.env);
            assert.equal((r.stderr.match(/mounted from the source repository/g) ?? []).length, 7);
            const reqs = tokens();
            const n = assertOncePerScopeSet(reqs);
            const mount = reqs.filter((q) =>
              q.scopes.includes("repository:auth/img:pull") &&
              q.scopes.includes("repository:auth/mounted:pull,push")
            );
            assert.equal(mount.length, 1, showRequests(reqs));
            assert.deepEqual(mount[0].granted, [
              { type: "repository", name: "auth/img", actions: ["pull"] },
              { type: "repository", name: "auth/mounted", actions: ["pull", "push"] },
            ]);
            measured.push(`registry→registry with mounts (7 blobs): ${n} token requests`);
          });
        }

        await t.step("wrong password: one line, nothing written", async () => {
          const home = await s.home();
          const out = s.out();
          tokens();
          assert.equal(
            await s.fails("wrong password pull", [
              ...tls,
              "--creds",
              "alice:wrong-password",
              img,
              `${out}:v1`,
            ], home.env),
            `authentication failed for ${H}; the credentials came from --creds`,
          );
          assert.equal(await exists(out), false, "a destination layout was created");
          if (ts) {
            const reqs = tokens();
            // One refused token request per run (the two runs of fails()).
            assert.deepEqual(reqs.map((r) => [r.status, r.hasBasicAuth]), [[401, true], [
              401,
              true,
            ]]);
          }
          // An existing layout stays as it was, byte for byte.
          const before = await snapshotTree(pulled);
          const blobs = await listBlobs(pulled);
          assert.equal(
            await s.fails("wrong password into a layout", [
              ...tls,
              "--creds",
              `alice:${USERS.bob}`,
              img,
              `${pulled}:v2`,
            ], home.env),
            `authentication failed for ${H}; the credentials came from --creds`,
          );
          assert.deepEqual(await snapshotTree(pulled), before);
          assert.deepEqual(await listBlobs(pulled), blobs);
          // Push with a wrong password: refused, nothing tagged.
          assert.equal(
            await s.fails("wrong password push", [
              ...tls,
              "--jobs",
              "4",
              "--creds",
              "alice:wrong-password",
              `${s.src}:v1`,
              `oci://${H}/auth/wrongpush:v1`,
            ], home.env),
            `authentication failed for ${H}; the credentials came from --creds`,
          );
          const check = await s.copy([
            ...tls,
            "--creds",
            `alice:${USERS.alice}`,
            `oci://${H}/auth/wrongpush:v1`,
            `${s.out()}:v1`,
          ], home.env);
          assert.notEqual(check.code, 0);
          assert.match(check.stderr, /not found/);
        });

        await t.step("missing credentials: 'not found, or access denied', one line", async () => {
          // Anonymous, the registry answers 401 for an existing private repository and for
          // a missing one alike; the line says both, and how to give credentials.
          const home = await s.home();
          // The line names the files it looked in and how to give credentials.
          const denied = (repo: string, method: string, path: string) =>
            `${H}/${repo}: not found, or access denied without credentials ` +
            `(${method} /v2/${repo}/${path}: 401 Unauthorized); credentials were looked up in ` +
            `${home.dir}/.config/containers/auth.json, ${home.dir}/.docker/config.json; ${GIVE}`;
          assert.equal(
            await s.fails("no credentials", [...tls, img, `${s.out()}:v1`], home.env),
            denied("auth/img", "HEAD", "manifests/v1"),
          );
          assert.equal(
            await s.fails("no credentials, missing repository", [
              ...tls,
              `oci://${H}/auth/no-such-repo:v1`,
              `${s.out()}:v1`,
            ], home.env),
            denied("auth/no-such-repo", "HEAD", "manifests/v1"),
          );
          assert.equal(
            await s.fails("no credentials, push", [
              ...tls,
              `${s.src}:v1`,
              `oci://${H}/auth/anon:v1`,
            ], home.env),
            denied("auth/anon", "HEAD", "manifests/v1"),
          );
          // With credentials, a missing repository is just that.
          const r = await s.copy([
            ...tls,
            "--creds",
            `alice:${USERS.alice}`,
            `oci://${H}/auth/no-such-repo:v1`,
            `${s.out()}:v1`,
          ], home.env);
          assert.equal(r.code, 1, r.stderr);
          assert.match(r.stderr, /manifest v1 not found in [^\n]*auth\/no-such-repo\n$/);
        });

        await t.step("--cert-dir in the certs.d layout", async () => {
          const certs = join(s.root, `certs-${mode}`);
          await Deno.mkdir(join(certs, H), { recursive: true });
          await Deno.copyFile(reg.caCert, join(certs, H, "ca.crt"));
          const home = await s.home();
          const out = s.out();
          await s.ok("pull --cert-dir", [
            "--cert-dir",
            certs,
            "--creds",
            `bob:${USERS.bob}`,
            img,
            `${out}:v1`,
          ], home.env);
          await assertSameContent(s.src, "v1", out, "v1");
        });
      });
    });
  });
}

Deno.test("CLI: --src-creds and --dest-creds between an htpasswd and a token registry", async () => {
  await withSetup(async (s) => {
    // alice exists only at the htpasswd registry, bob only at the token registry: each side
    // must get its own credentials.
    await withRegistry(
      { mode: "htpasswd", tls: true, users: { alice: USERS.alice } },
      async (h) => {
        await withRegistry({ mode: "token", tls: true, users: { bob: USERS.bob } }, async (t) => {
          const ts = t.tokenServer!;
          const tls = ["--cacert", h.caCert, "--cacert", t.caCert];
          const home = await s.home();
          await s.ok("seed", [
            ...tls,
            "--creds",
            `alice:${USERS.alice}`,
            `${s.src}:v1`,
            `oci://${h.host}/x/img:v1`,
          ], home.env);
          ts.requests.length = 0;
          await s.ok("htpasswd → token", [
            ...tls,
            "--src-creds",
            `alice:${USERS.alice}`,
            "--dest-creds",
            `bob:${USERS.bob}`,
            `oci://${h.host}/x/img:v1`,
            `oci://${t.host}/y/img:v1`,
          ], home.env);
          assert.ok(ts.requests.length > 0);
          assert.ok(
            ts.requests.every((r) => r.user === "bob" && r.status === 200),
            showRequests(ts.requests),
          );
          assertOncePerScopeSet(ts.requests);
          await s.ok("token → htpasswd", [
            ...tls,
            "--src-creds",
            `bob:${USERS.bob}`,
            "--dest-creds",
            `alice:${USERS.alice}`,
            `oci://${t.host}/y/img:v1`,
            `oci://${h.host}/x/back:v1`,
          ], home.env);
          const out = s.out();
          await s.ok("read back", [
            ...tls,
            "--creds",
            `alice:${USERS.alice}`,
            `oci://${h.host}/x/back:v1`,
            `${out}:v1`,
          ], home.env);
          await assertSameContent(s.src, "v1", out, "v1");
          // The sides swapped: the token server refuses alice.
          assert.equal(
            await s.fails("swapped", [
              ...tls,
              "--src-creds",
              `bob:${USERS.bob}`,
              "--dest-creds",
              `alice:${USERS.alice}`,
              `oci://${h.host}/x/img:v1`,
              `oci://${t.host}/y/other:v1`,
            ], home.env),
            `authentication failed for ${h.host}; the credentials came from --src-creds`,
          );
          assert.equal(
            await s.fails("wrong dest", [
              ...tls,
              "--src-creds",
              `alice:${USERS.alice}`,
              "--dest-creds",
              `bob:wrong-password`,
              `oci://${h.host}/x/img:v1`,
              `oci://${t.host}/y/other:v1`,
            ], home.env),
            `authentication failed for ${t.host}; the credentials came from --dest-creds`,
          );
        });
      },
    );
  });
});

Deno.test("CLI: an http token realm for an https registry gets no credentials", async () => {
  await withSetup(async (s) => {
    await withRegistry({
      mode: "token",
      tls: true,
      tokenTls: false,
      users: { alice: USERS.alice },
      allow: (user, scope) =>
        user !== null ? ["*"] : scope.name.startsWith("public/") ? ["pull"] : [],
    }, async (reg) => {
      const ts = reg.tokenServer!;
      assert.match(ts.url, /^http:/);
      const seeded = await skopeoCopy([
        "copy",
        "--dest-cert-dir",
        reg.certDir,
        "--dest-creds",
        `alice:${USERS.alice}`,
        `oci:${s.src}:v1`,
        `docker://${reg.host}/public/img:v1`,
      ]);
      assert.equal(seeded.code, 0, seeded.stderr);
      ts.requests.length = 0;
      const tls = ["--cacert", reg.caCert];
      const img = `oci://${reg.host}/public/img:v1`;
      const home = await s.home();
      const refusal = `${reg.host}: refusing to send credentials to token realm ${ts.url}: ` +
        "it is plain http while the registry is https";
      assert.equal(
        await s.fails("creds to an http realm", [
          ...tls,
          "--creds",
          `alice:${USERS.alice}`,
          img,
          `${s.out()}:v1`,
        ], home.env),
        refusal,
      );
      // Credentials from a helper are refused alike.
      await s.helpers.add("umoci-test", reg.host, "alice", USERS.alice);
      const home2 = await s.home();
      await s.write(join(home2.dir, ".docker", "config.json"), {
        credHelpers: { [reg.host]: "umoci-test" },
      });
      assert.equal(
        await s.fails("helper creds to an http realm", [...tls, img, `${s.out()}:v1`], home2.env),
        refusal,
      );
      assert.equal(ts.requests.length, 0, showRequests(ts.requests));
      // Anonymous is fine: nothing secret goes there.
      const r = await s.copy(
        ["--trace-requests", ...tls, "--no-creds", img, `${s.out()}:v1`],
        home2.env,
      );
      assert.equal(r.code, 0, r.stderr);
      assertNoSecrets(r, "anonymous over an http realm");
      assert.deepEqual(ts.requests.map((q) => [q.method, q.hasBasicAuth, q.status]), [[
        "GET",
        false,
        200,
      ]]);
    });
  });
});

Deno.test({
  name: "CLI: token requests measured",
  fn() {
    if (measured.length) console.log(measured.map((m) => `  ${m}`).join("\n"));
  },
});
