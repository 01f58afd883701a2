// The authentication fixtures (tests/fixtures/{pki,token_server,auth_registry}.ts) against
// the real docker-registry 2.8, checked with skopeo and plain fetch only — none of the
// product's code — so the later auth tests of the product stand on proven ground.
//
// Each test starts its own registry (and token server) and stops it; every subprocess and
// fetch is bounded in time, and every HTTP client is closed.
import assert from "node:assert/strict";
import { join } from "node:path";
import { type AuthRegistry, startAuthRegistry } from "./fixtures/auth_registry.ts";
import { buildRandomImage, skopeoCopy } from "./fixtures/images.ts";
import { makePki } from "./fixtures/pki.ts";
import { decodeJwt, libtrustKeyId } from "./fixtures/token_server.ts";
import { createPublicKey, X509Certificate } from "node:crypto";

const USERS = { alice: "s3cret-Pässword", bob: "hunter2" };
const FETCH_TIMEOUT_MS = 10_000;
const MANIFEST_ACCEPT =
  "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/**
 * A temp dir holding a tiny OCI layout (one random 1 KiB uncompressed tar layer) tagged v1,
 * and the path for skopeo's --digestfile: skopeo gzips uncompressed layers when it pushes to
 * a registry, so the pushed manifest's digest is not the layout's.
 */
async function tinyLayout(): Promise<{ dir: string; layout: string; digestFile: string }> {
  const dir = await Deno.makeTempDir({ prefix: "umoci-copy-authfx-" });
  const layout = join(dir, "layout");
  await buildRandomImage(layout, "v1", { layerSizes: [1024] });
  return { dir, layout, digestFile: join(dir, "pushed-digest") };
}

/** `key="value"` pairs of a WWW-Authenticate challenge, with its scheme. */
function parseChallenge(h: string | null): { scheme: string; params: Record<string, string> } {
  assert.ok(h, "no WWW-Authenticate header");
  const m = /^(\S+)\s+(.*)$/.exec(h);
  assert.ok(m, `odd challenge ${h}`);
  const params: Record<string, string> = {};
  for (const p of m[2].matchAll(/(\w+)="([^"]*)"/g)) params[p[1]] = p[2];
  return { scheme: m[1], params };
}

const basic = (user: string, password: string) =>
  "Basic " + btoa(String.fromCharCode(...new TextEncoder().encode(`${user}:${password}`)));

/** fetch through a client that trusts the registry's CA; the body is read (or cancelled). */
async function get(
  client: Deno.HttpClient,
  url: string,
  init: RequestInit = {},
): Promise<{ status: number; headers: Headers; text: string }> {
  const res = await fetch(url, {
    ...init,
    client,
    signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
  } as RequestInit);
  return { status: res.status, headers: res.headers, text: await res.text() };
}

async function withRegistry(
  opts: Parameters<typeof startAuthRegistry>[0],
  fn: (reg: AuthRegistry, client: Deno.HttpClient) => Promise<void>,
): Promise<void> {
  const reg = await startAuthRegistry(opts);
  const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(reg.caCert)] });
  try {
    await fn(reg, client);
  } catch (e) {
    throw new Error(`${e instanceof Error ? e.stack : e}\n--- registry log ---\n${reg.log()}`);
  } finally {
    client.close();
    await reg.stop();
  }
}

Deno.test("pki: CA, server certificate for the hosts, token key pair", async () => {
  const dir = await Deno.makeTempDir({ prefix: "umoci-copy-pki-" });
  try {
    const t0 = performance.now();
    const pki = await makePki(dir, { hosts: ["127.0.0.1", "localhost"] });
    const ms = performance.now() - t0;
    assert.ok(ms < 2000, `makePki took ${ms} ms`);
    const ca = new X509Certificate(await Deno.readTextFile(pki.caCert));
    const server = new X509Certificate(await Deno.readTextFile(pki.serverCert));
    const token = new X509Certificate(await Deno.readTextFile(pki.tokenCert));
    assert.ok(ca.ca);
    assert.ok(ca.checkIssued(ca));
    assert.ok(!server.ca);
    assert.ok(server.checkIssued(ca) && server.verify(ca.publicKey), "server cert not from CA");
    assert.ok(server.checkIP("127.0.0.1"));
    assert.ok(server.checkHost("localhost"));
    assert.equal(server.checkHost("example.com"), undefined);
    // Deno's X509Certificate.keyUsage lists key usages, not Node's EKU OIDs: ask openssl.
    const ext = await new Deno.Command("openssl", {
      args: ["x509", "-noout", "-ext", "extendedKeyUsage,subjectAltName", "-in", pki.serverCert],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const extText = new TextDecoder().decode(ext.stdout);
    assert.match(extText, /TLS Web Server Authentication/);
    assert.match(extText, /IP Address:127\.0\.0\.1, DNS:localhost/);
    assert.ok(token.verify(token.publicKey), "token cert not self-signed");
    assert.equal(createPublicKey(await Deno.readTextFile(pki.tokenKey)).asymmetricKeyType, "ec");
    // libtrust's key-ID format: 12 groups of 4 base32 characters.
    assert.match(
      libtrustKeyId(new Uint8Array(token.publicKey.export({ type: "spki", format: "der" }))),
      /^([A-Z2-7]{4}:){11}[A-Z2-7]{4}$/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("htpasswd + TLS registry: skopeo pushes with the right password only", async () => {
  const { dir, layout, digestFile } = await tinyLayout();
  try {
    await withRegistry(
      { mode: "htpasswd", tls: true, users: USERS },
      async (reg, client) => {
        assert.match(reg.url, /^https:\/\/127\.0\.0\.1:\d+$/);
        // /v2/ without credentials: the Basic challenge.
        const anon = await get(client, `${reg.url}/v2/`);
        assert.equal(anon.status, 401);
        const ch = parseChallenge(anon.headers.get("www-authenticate"));
        assert.equal(ch.scheme, "Basic");
        assert.equal(ch.params.realm, reg.realm);
        assert.equal(
          (await get(client, `${reg.url}/v2/`, {
            headers: { authorization: basic("alice", USERS.alice) },
          })).status,
          200,
        );
        assert.equal(
          (await get(client, `${reg.url}/v2/`, {
            headers: { authorization: basic("alice", "wrong") },
          })).status,
          401,
        );

        const dest = `docker://${reg.host}/fixtures/tiny:v1`;
        const wrong = await skopeoCopy([
          "copy",
          "--dest-cert-dir",
          reg.certDir,
          "--dest-creds",
          "alice:wrong",
          `oci:${layout}:v1`,
          dest,
        ]);
        assert.notEqual(wrong.code, 0, "push with a wrong password succeeded");
        assert.match(wrong.stderr, /unauthorized|authentication required/i);

        const noCreds = await skopeoCopy([
          "copy",
          "--dest-no-creds",
          "--dest-cert-dir",
          reg.certDir,
          `oci:${layout}:v1`,
          dest,
        ]);
        assert.notEqual(noCreds.code, 0, "anonymous push succeeded");

        const ok = await skopeoCopy([
          "copy",
          "--digestfile",
          digestFile,
          "--dest-cert-dir",
          reg.certDir,
          "--dest-creds",
          `alice:${USERS.alice}`,
          `oci:${layout}:v1`,
          dest,
        ]);
        assert.equal(ok.code, 0, ok.stderr);

        // The manifest is there, byte for byte (checked with plain fetch).
        const m = await get(client, `${reg.url}/v2/fixtures/tiny/manifests/v1`, {
          headers: { authorization: basic("bob", USERS.bob), accept: MANIFEST_ACCEPT },
        });
        assert.equal(m.status, 200, m.text);
        assert.equal(
          m.headers.get("docker-content-digest"),
          (await Deno.readTextFile(digestFile)).trim(),
        );
      },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("htpasswd over plain http: distribution 2.8 serves Basic auth without TLS", async () => {
  await withRegistry({ mode: "htpasswd", tls: false, users: USERS }, async (reg, client) => {
    assert.match(reg.url, /^http:\/\//);
    const anon = await get(client, `${reg.url}/v2/`);
    assert.equal(anon.status, 401);
    assert.equal(parseChallenge(anon.headers.get("www-authenticate")).scheme, "Basic");
    const ok = await get(client, `${reg.url}/v2/`, {
      headers: { authorization: basic("bob", USERS.bob) },
    });
    assert.equal(ok.status, 200);
  });
});

Deno.test("token + TLS registry: skopeo push and inspect through the token server", async () => {
  const { dir, layout, digestFile } = await tinyLayout();
  try {
    await withRegistry({ mode: "token", tls: true, users: USERS }, async (reg) => {
      const ts = reg.tokenServer!;
      assert.match(ts.url, /^https:\/\/127\.0\.0\.1:\d+\/token$/);
      const dest = `docker://${reg.host}/fixtures/tiny:v1`;

      const wrong = await skopeoCopy([
        "copy",
        "--dest-cert-dir",
        reg.certDir,
        "--dest-creds",
        "alice:wrong",
        `oci:${layout}:v1`,
        dest,
      ]);
      assert.notEqual(wrong.code, 0, "push with a wrong password succeeded");
      assert.ok(
        ts.requests.some((r) => r.hasBasicAuth && r.status === 401),
        `no rejected token request: ${JSON.stringify(ts.requests)}`,
      );
      ts.requests.length = 0;

      // Anonymous: the token server answers, with a token that grants nothing.
      const anon = await skopeoCopy([
        "copy",
        "--dest-no-creds",
        "--dest-cert-dir",
        reg.certDir,
        `oci:${layout}:v1`,
        dest,
      ]);
      assert.notEqual(anon.code, 0, "anonymous push succeeded");
      assert.ok(
        ts.requests.some((r) => !r.hasBasicAuth && r.status === 200 && r.granted.length === 0),
        `no anonymous token request: ${JSON.stringify(ts.requests)}`,
      );
      ts.requests.length = 0;

      const ok = await skopeoCopy([
        "copy",
        "--digestfile",
        digestFile,
        "--dest-cert-dir",
        reg.certDir,
        "--dest-creds",
        `alice:${USERS.alice}`,
        `oci:${layout}:v1`,
        dest,
      ]);
      assert.equal(ok.code, 0, ok.stderr);
      const pushes = ts.requests.filter((r) =>
        r.scopes.includes("repository:fixtures/tiny:pull,push")
      );
      assert.ok(pushes.length >= 1, `no push-scope token request: ${JSON.stringify(ts.requests)}`);
      for (const r of pushes) {
        assert.equal(r.method, "GET");
        assert.ok(r.hasBasicAuth);
        assert.equal(r.user, "alice");
        assert.equal(r.service, reg.service);
        assert.equal(r.status, 200);
        assert.deepEqual(r.granted, [
          { type: "repository", name: "fixtures/tiny", actions: ["pull", "push"] },
        ]);
      }
      ts.requests.length = 0;

      const inspect = await skopeoCopy([
        "inspect",
        "--cert-dir",
        reg.certDir,
        "--creds",
        `bob:${USERS.bob}`,
        dest,
      ]);
      assert.equal(inspect.code, 0, inspect.stderr);
      assert.equal(JSON.parse(inspect.stdout).Digest, (await Deno.readTextFile(digestFile)).trim());
      assert.ok(
        ts.requests.some((r) =>
          r.user === "bob" && r.scopes.includes("repository:fixtures/tiny:pull")
        ),
        `no pull-scope token request: ${JSON.stringify(ts.requests)}`,
      );
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("token + TLS registry: the manual token flows with fetch", async () => {
  const { dir, layout } = await tinyLayout();
  try {
    await withRegistry({
      mode: "token",
      tls: true,
      users: USERS,
      identityTokens: { "configured-identity-token": "bob" },
    }, async (reg, client) => {
      const ts = reg.tokenServer!;
      const push = await skopeoCopy([
        "copy",
        "--dest-cert-dir",
        reg.certDir,
        "--dest-creds",
        `alice:${USERS.alice}`,
        `oci:${layout}:v1`,
        `docker://${reg.host}/fixtures/tiny:v1`,
      ]);
      assert.equal(push.code, 0, push.stderr);
      ts.requests.length = 0;

      // 1. /v2/ → Bearer challenge naming the realm and service.
      const base = await get(client, `${reg.url}/v2/`);
      assert.equal(base.status, 401);
      const ch = parseChallenge(base.headers.get("www-authenticate"));
      assert.equal(ch.scheme, "Bearer");
      assert.equal(ch.params.realm, ts.url);
      assert.equal(ch.params.service, reg.service);

      // A repository URL's challenge also names the scope it needs.
      const tagsUrl = `${reg.url}/v2/fixtures/tiny/tags/list`;
      const tagsAnon = await get(client, tagsUrl);
      assert.equal(tagsAnon.status, 401);
      const scope = parseChallenge(tagsAnon.headers.get("www-authenticate")).params.scope;
      assert.equal(scope, "repository:fixtures/tiny:pull");

      // 2. GET realm with Basic → token → tags/list with Bearer.
      const realm = new URL(ch.params.realm);
      realm.searchParams.set("service", ch.params.service);
      realm.searchParams.append("scope", scope);
      const tok = await get(client, realm.href, {
        headers: { authorization: basic("alice", USERS.alice) },
      });
      assert.equal(tok.status, 200, tok.text);
      const body = JSON.parse(tok.text);
      assert.equal(body.token, body.access_token);
      assert.equal(body.expires_in, 300);
      assert.ok(!Number.isNaN(Date.parse(body.issued_at)));
      const jwt = decodeJwt(body.token);
      assert.equal(jwt.header.alg, "ES256");
      assert.equal(jwt.header.typ, "JWT");
      assert.equal((jwt.header.x5c as string[]).length, 1);
      assert.equal(jwt.claims.iss, reg.issuer);
      assert.equal(jwt.claims.aud, reg.service);
      assert.equal(jwt.claims.sub, "alice");
      assert.deepEqual(jwt.claims.access, [
        { type: "repository", name: "fixtures/tiny", actions: ["pull"] },
      ]);
      const tags = await get(client, tagsUrl, {
        headers: { authorization: `Bearer ${body.token}` },
      });
      assert.equal(tags.status, 200, tags.text);
      assert.deepEqual(JSON.parse(tags.text), { name: "fixtures/tiny", tags: ["v1"] });

      // The pull token is not a push token.
      const upload = await get(client, `${reg.url}/v2/fixtures/tiny/blobs/uploads/`, {
        method: "POST",
        headers: { authorization: `Bearer ${body.token}` },
      });
      assert.equal(upload.status, 401);
      assert.match(upload.headers.get("www-authenticate") ?? "", /error="insufficient_scope"/);

      // Anonymous: a token, but one granting nothing (default policy).
      const anonTok = await get(client, realm.href);
      assert.equal(anonTok.status, 200);
      assert.deepEqual(decodeJwt(JSON.parse(anonTok.text).token).claims.access, []);
      const denied = await get(client, tagsUrl, {
        headers: { authorization: `Bearer ${JSON.parse(anonTok.text).token}` },
      });
      assert.equal(denied.status, 401);
      assert.match(denied.headers.get("www-authenticate") ?? "", /error="insufficient_scope"/);

      // Wrong password on the realm → 401.
      const bad = await get(client, realm.href, {
        headers: { authorization: basic("alice", "nope") },
      });
      assert.equal(bad.status, 401);

      // 3. OAuth2 POST, grant_type=password with access_type=offline → refresh token too.
      const post = (fields: Record<string, string>) =>
        get(client, ts.url, {
          method: "POST",
          headers: { "content-type": "application/x-www-form-urlencoded" },
          body: new URLSearchParams(fields).toString(),
        });
      const pw = await post({
        grant_type: "password",
        username: "alice",
        password: USERS.alice,
        client_id: "umoci-copy-fixture-test",
        service: reg.service!,
        scope: `${scope} repository:other/repo:pull`,
        access_type: "offline",
      });
      assert.equal(pw.status, 200, pw.text);
      const pwBody = JSON.parse(pw.text);
      assert.equal(typeof pwBody.refresh_token, "string");
      assert.equal(
        (await get(client, tagsUrl, {
          headers: { authorization: `Bearer ${pwBody.access_token}` },
        })).status,
        200,
      );

      // grant_type=refresh_token with the identity token just issued, and a configured one.
      for (
        const [refresh, who] of [[pwBody.refresh_token, "alice"], [
          "configured-identity-token",
          "bob",
        ]]
      ) {
        const rt = await post({
          grant_type: "refresh_token",
          refresh_token: refresh,
          client_id: "umoci-copy-fixture-test",
          service: reg.service!,
          scope,
        });
        assert.equal(rt.status, 200, rt.text);
        const rtBody = JSON.parse(rt.text);
        assert.equal(rtBody.refresh_token, undefined); // no access_type=offline
        assert.equal(decodeJwt(rtBody.access_token).claims.sub, who);
        assert.equal(
          (await get(client, tagsUrl, {
            headers: { authorization: `Bearer ${rtBody.access_token}` },
          })).status,
          200,
        );
      }

      // The POST failures.
      const common = { client_id: "x", service: reg.service!, scope };
      assert.equal(
        (await post({ ...common, grant_type: "password", username: "alice", password: "no" }))
          .status,
        401,
      );
      assert.equal(
        (await post({ ...common, grant_type: "refresh_token", refresh_token: "unknown" })).status,
        401,
      );
      assert.equal(
        (await post({ grant_type: "password", username: "bob", password: USERS.bob })).status,
        400, // client_id is required
      );

      // Everything was recorded: count token requests per scope.
      const perScope = (s: string) => ts.requests.filter((r) => r.scopes.includes(s)).length;
      assert.equal(perScope(scope), 8);
      assert.equal(perScope("repository:other/repo:pull"), 1);
      assert.equal(ts.requests.filter((r) => r.grantType === "refresh_token").length, 3);
      assert.deepEqual(ts.requests.map((r) => r.status), [
        200,
        200,
        401,
        200,
        200,
        200,
        401,
        401,
        400,
      ]);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("token registry variants: RS256 with a libtrust kid, http token server, custom policy", async () => {
  await withRegistry({
    mode: "token",
    tls: true,
    tokenTls: false,
    users: USERS,
    tokenKeyType: "rsa",
    keyHeader: "kid",
    // Anonymous may pull public/*; bob may only pull.
    allow: (user, s) =>
      user === null
        ? (s.name.startsWith("public/") ? ["pull"] : [])
        : user === "bob"
        ? ["pull"]
        : ["*"],
  }, async (reg, client) => {
    const ts = reg.tokenServer!;
    assert.match(ts.url, /^http:\/\//);
    const token = async (scope: string, auth?: string) => {
      const u = new URL(ts.url);
      u.searchParams.set("service", reg.service!);
      u.searchParams.set("scope", scope);
      const r = await get(client, u.href, auth ? { headers: { authorization: auth } } : {});
      assert.equal(r.status, 200, r.text);
      return JSON.parse(r.text).token as string;
    };
    const t1 = await token("repository:public/x:pull,push");
    const jwt = decodeJwt(t1);
    assert.equal(jwt.header.alg, "RS256");
    assert.equal(jwt.header.x5c, undefined);
    assert.match(jwt.header.kid as string, /^([A-Z2-7]{4}:){11}[A-Z2-7]{4}$/);
    assert.deepEqual(jwt.claims.access, [{
      type: "repository",
      name: "public/x",
      actions: ["pull"],
    }]);
    // Accepted by the registry: a 404 for the unknown repository, not a 401.
    const r1 = await get(client, `${reg.url}/v2/public/x/tags/list`, {
      headers: { authorization: `Bearer ${t1}` },
    });
    assert.equal(r1.status, 404, r1.text);

    const t2 = await token("repository:private/y:pull,push", basic("bob", USERS.bob));
    assert.deepEqual(decodeJwt(t2).claims.access, [
      { type: "repository", name: "private/y", actions: ["pull"] },
    ]);
    const up = await get(client, `${reg.url}/v2/private/y/blobs/uploads/`, {
      method: "POST",
      headers: { authorization: `Bearer ${t2}` },
    });
    assert.equal(up.status, 401);
    const t3 = await token("repository:private/y:pull,push", basic("alice", USERS.alice));
    const up3 = await get(client, `${reg.url}/v2/private/y/blobs/uploads/`, {
      method: "POST",
      headers: { authorization: `Bearer ${t3}` },
    });
    assert.equal(up3.status, 202, up3.text);
  });
});
