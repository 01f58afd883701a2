// Proxies: which registries HTTP_PROXY/HTTPS_PROXY/ALL_PROXY apply to (Go's rules: NO_PROXY
// with names, ports, CIDR ranges and `*`; never loopback), and a push and pull through a real
// forward proxy (a small one written here on Deno.serve that forwards absolute-form requests
// and counts them). The registry is named by a host name that only the proxy can resolve, so
// the copy succeeds only if every request really goes through the proxy.
import assert from "node:assert/strict";
import { join } from "node:path";
import { umoci } from "./fixtures/cli.ts";
import { assertSameContent, buildRandomImage, withTempDir } from "./fixtures/images.ts";
import { startRegistry } from "./fixtures/registry.ts";
import { proxyFor } from "../src/store/registry/proxy.ts";

Deno.test("proxyFor: scheme-specific and ALL_PROXY, NO_PROXY by name, suffix, port, *", () => {
  const env = (vars: Record<string, string>) => (name: string) => vars[name];
  const http = new URL("http://registry.example.com:5000");
  const https = new URL("https://registry.example.com");
  assert.equal(proxyFor(http, env({})), undefined);
  assert.equal(proxyFor(http, env({ http_proxy: "http://p:3128" })), "http://p:3128");
  assert.equal(proxyFor(http, env({ HTTP_PROXY: "http://P:3128" })), "http://P:3128");
  assert.equal(proxyFor(https, env({ http_proxy: "http://p:3128" })), undefined);
  assert.equal(proxyFor(https, env({ HTTPS_PROXY: "http://s:3128" })), "http://s:3128");
  assert.equal(proxyFor(https, env({ ALL_PROXY: "http://a:1" })), "http://a:1");
  const p = { http_proxy: "http://p:3128" };
  for (const no of ["registry.example.com", "example.com", ".example.com", "*.example.com", "*"]) {
    assert.equal(proxyFor(http, env({ ...p, no_proxy: no })), undefined, no);
  }
  for (const no of ["other.com", "ample.com", "registry.example.com:6000", "example.org"]) {
    assert.equal(proxyFor(http, env({ ...p, NO_PROXY: no })), "http://p:3128", no);
  }
  assert.equal(
    proxyFor(http, env({ ...p, no_proxy: "x.org, registry.example.com:5000" })),
    undefined,
  );
  // Loopback and localhost are never proxied, whatever NO_PROXY says.
  for (
    const local of [
      "http://127.0.0.1:5000",
      "http://127.9.9.9",
      "http://[::1]:5000",
      "http://localhost:5000",
      "http://a.localhost",
    ]
  ) {
    assert.equal(proxyFor(new URL(local), env(p)), undefined, local);
  }
  // CIDR ranges and IP addresses, with and without a port.
  const ip = new URL("http://10.1.2.3:5000");
  assert.equal(proxyFor(ip, env({ ...p, NO_PROXY: "10.0.0.0/8" })), undefined);
  assert.equal(proxyFor(ip, env({ ...p, NO_PROXY: "10.1.2.3:5000" })), undefined);
  assert.equal(proxyFor(ip, env({ ...p, NO_PROXY: "10.1.2.3:6000" })), "http://p:3128");
  assert.equal(proxyFor(ip, env({ ...p, NO_PROXY: "192.168.0.0/16,11.0.0.0/8" })), "http://p:3128");
  const v6 = new URL("http://[fd00::5]:5000");
  assert.equal(proxyFor(v6, env({ ...p, no_proxy: "fd00::/8" })), undefined);
  assert.equal(proxyFor(v6, env({ ...p, no_proxy: "[fd00::5]:5000" })), undefined);
  assert.equal(proxyFor(v6, env({ ...p, no_proxy: "fd00::6" })), "http://p:3128");
  // Upper case wins over lower case, as in Go; a proxy without a scheme is http://.
  assert.equal(
    proxyFor(http, env({ HTTP_PROXY: "http://U:1", http_proxy: "http://l:1" })),
    "http://U:1",
  );
  assert.equal(proxyFor(http, env({ HTTP_PROXY: "p.example:3128" })), "http://p.example:3128");
});

/**
 * A forward HTTP proxy: absolute-form requests are sent on to their target and logged; the
 * host name `registry.proxy.test` (which nothing else resolves) means 127.0.0.1.
 */
function startForwardProxy() {
  const seen: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const target = new URL(req.url);
    if (target.hostname === "registry.proxy.test") target.hostname = "127.0.0.1";
    seen.push(`${req.method} ${target.pathname}`);
    const headers = new Headers(req.headers);
    headers.delete("proxy-connection");
    const res = await fetch(target, {
      method: req.method,
      headers,
      body: req.body,
      redirect: "manual",
    });
    // The registry names itself by the address the proxy used: give back the proxy-only name.
    const back = new Headers(res.headers);
    const location = back.get("location");
    if (location) back.set("location", location.replace("//127.0.0.1:", "//registry.proxy.test:"));
    return new Response(req.method === "HEAD" ? null : res.body, {
      status: res.status,
      headers: back,
    });
  });
  return { url: `http://127.0.0.1:${server.addr.port}`, seen, close: () => server.shutdown() };
}

Deno.test("CLI: a proxy variable that is no URL is a usage error naming it, its password redacted", async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, "src");
    await buildRandomImage(src, "v1", { layerSizes: [100] });
    for (
      const [name, value, shown] of [
        [
          "HTTPS_PROXY",
          "http://puser:SECRETPW@127.0.0.1:notaport",
          "http://puser:redacted@127.0.0.1:notaport",
        ],
        ["HTTP_PROXY", "http://puser:SECRETPW@[::1", "http://puser:redacted@[::1"],
        ["ALL_PROXY", "ftp://proxy.example:21", "ftp://proxy.example:21"],
      ]
    ) {
      const r = await umoci(
        ["copy", "--trace-requests", `${src}:v1`, "oci://registry.example:5000/a/b:v1"],
        { env: { [name]: value }, timeoutMs: 30_000 },
      );
      assert.equal(r.code, 2, r.stderr);
      assert.equal(
        r.stderr.trim(),
        `error: ${name}=${shown}: not a proxy URL (http://[USER:PASSWORD@]HOST:PORT)`,
      );
      assert.ok(!r.stderr.includes("SECRETPW"));
    }
  });
});

Deno.test("CLI: --tls-verify=false with a proxy set for the registry is refused, not sent around the proxy", async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, "src");
    await buildRandomImage(src, "v1", { layerSizes: [100] });
    const dst = "oci://registry.example:5000/a/b:v1";
    const env = { HTTPS_PROXY: "http://127.0.0.1:9" };
    const r = await umoci(["copy", "--tls-verify=false", `${src}:v1`, dst], {
      env,
      timeoutMs: 30_000,
    });
    assert.equal(r.code, 1, r.stderr);
    assert.equal(
      r.stderr.trim().split("\n").at(-1),
      "error: registry.example:5000: with --tls-verify=false the connection cannot go through " +
        "the proxy that HTTPS_PROXY/ALL_PROXY names for it; set NO_PROXY=registry.example to " +
        "connect directly, or trust the registry's CA with --cacert to keep the proxy",
    );
    // Exempted, it connects directly (and here finds no such host).
    const direct = await umoci(["copy", "--retries", "0", "--tls-verify=false", `${src}:v1`, dst], {
      env: { ...env, NO_PROXY: "registry.example" },
      timeoutMs: 30_000,
    });
    assert.equal(direct.code, 1, direct.stderr);
    assert.doesNotMatch(direct.stderr, /cannot go through the proxy/);
  });
});

Deno.test("CLI: a request that fails through a proxy names the proxy, its password redacted", async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, "src");
    await buildRandomImage(src, "v1", { layerSizes: [100] });
    const r = await umoci(
      ["copy", "--plain-http", "--retries", "0", `${src}:v1`, "oci://registry.example:5000/a:v1"],
      { env: { HTTP_PROXY: "http://puser:SECRETPW@127.0.0.1:9" }, timeoutMs: 30_000 },
    );
    assert.equal(r.code, 1, r.stderr);
    const last = r.stderr.trim().split("\n").at(-1)!;
    assert.match(last, /^error: registry\.example:5000: HEAD http:\/\/registry\.example:5000\//);
    assert.ok(last.endsWith(" (through the proxy http://puser:redacted@127.0.0.1:9/)"), last);
    assert.ok(!r.stderr.includes("SECRETPW"));
  });
});

Deno.test("CLI through HTTP_PROXY: push and pull arrive via the proxy, byte for byte; loopback direct", async () => {
  const reg = await startRegistry();
  const proxy = startForwardProxy();
  try {
    await withTempDir(async (dir) => {
      const src = join(dir, "src");
      const built = await buildRandomImage(src, "v1", {
        layerSizes: [5 * 1024 * 1024, 70 * 1024],
        raw: true,
      });
      const env = { HTTP_PROXY: proxy.url, NO_PROXY: "" };
      const target = `oci://registry.proxy.test:${reg.host.split(":")[1]}/proxied/img:v1`;
      const push = await umoci(
        ["copy", "--plain-http", "--trace-requests", `${src}:v1`, target],
        { env, timeoutMs: 60_000 },
      );
      assert.equal(push.code, 0, push.stderr);
      assert.equal(push.stdout.trim(), built.manifest.digest);
      // Every blob went up through the proxy (the large one as a streamed PATCH).
      assert.ok(
        proxy.seen.some((l) => l.startsWith("PATCH /v2/proxied/img/blobs/uploads/")),
        proxy.seen.join("\n"),
      );
      assert.ok(proxy.seen.includes(`PUT /v2/proxied/img/manifests/v1`), proxy.seen.join("\n"));
      // The trace says so, without the proxy's password.
      assert.match(
        push.stderr,
        /^> PUT http:\/\/registry\.proxy\.test:\d+\/v2\/proxied\/img\/manifests\/v1 via proxy http:\/\/127\.0\.0\.1:\d+\//m,
      );
      const pushed = proxy.seen.length;

      const back = join(dir, "back");
      const pull = await umoci(["copy", "--plain-http", target, `${back}:v1`], {
        env,
        timeoutMs: 60_000,
      });
      assert.equal(pull.code, 0, pull.stderr);
      assert.ok(
        proxy.seen.slice(pushed).filter((l) => /^GET \/v2\/proxied\/img\/blobs\//.test(l))
          .length >= 3,
        proxy.seen.slice(pushed).join("\n"),
      );
      await assertSameContent(src, "v1", back, "v1");

      // A loopback registry never goes through the proxy, even with NO_PROXY empty.
      const before = proxy.seen.length;
      const loopback = `oci://${reg.host}/proxied/img:v1`;
      const direct = await umoci(["copy", "--plain-http", loopback, `${join(dir, "direct")}:v1`], {
        env,
        timeoutMs: 60_000,
      });
      assert.equal(direct.code, 0, direct.stderr);
      assert.equal(proxy.seen.length, before);
    });
  } finally {
    await proxy.close();
    await reg.stop();
  }
});
