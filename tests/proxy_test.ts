// Proxies: which registries HTTP_PROXY/HTTPS_PROXY/ALL_PROXY apply to (NO_PROXY), and a
// push and pull through a real forward proxy (a small one written here on Deno.serve that
// forwards absolute-form requests to the real registry and counts them). Registries
// without a proxy are spoken to by umoci-copy's own HTTP/1.1 client; through a proxy the
// requests must still arrive, and the copy must still be byte for byte.
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
  const v6 = new URL("http://[::1]:5000");
  assert.equal(proxyFor(v6, env({ ...p, no_proxy: "[::1]:5000" })), undefined);
  assert.equal(proxyFor(v6, env({ ...p, no_proxy: "::2" })), "http://p:3128");
});

/** A forward HTTP proxy: absolute-form requests are sent on to their target and logged. */
function startForwardProxy() {
  const seen: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const target = new URL(req.url);
    seen.push(`${req.method} ${target.pathname}`);
    const headers = new Headers(req.headers);
    headers.delete("proxy-connection");
    const res = await fetch(target, {
      method: req.method,
      headers,
      body: req.body,
      redirect: "manual",
    });
    return new Response(req.method === "HEAD" ? null : res.body, {
      status: res.status,
      headers: res.headers,
    });
  });
  return { url: `http://127.0.0.1:${server.addr.port}`, seen, close: () => server.shutdown() };
}

Deno.test("CLI through HTTP_PROXY: push and pull arrive via the proxy, byte for byte", async () => {
  const reg = await startRegistry();
  const proxy = startForwardProxy();
  try {
    await withTempDir(async (dir) => {
      const src = join(dir, "src");
      const built = await buildRandomImage(src, "v1", {
        layerSizes: [3 * 1024 * 1024, 70 * 1024],
        raw: true,
      });
      const env = { HTTP_PROXY: proxy.url, NO_PROXY: "" };
      const target = `oci://${reg.host}/proxied/img:v1`;
      const push = await umoci(
        ["copy", "--plain-http", "--chunk-size", "1MiB", `${src}:v1`, target],
        { env, timeoutMs: 60_000 },
      );
      assert.equal(push.code, 0, push.stderr);
      assert.equal(push.stdout.trim(), built.manifest.digest);
      // Every blob went up through the proxy (chunked from memory: several PATCHes).
      assert.ok(proxy.seen.some((l) => l.startsWith("PATCH /v2/proxied/img/blobs/uploads/")));
      assert.ok(proxy.seen.includes(`PUT /v2/proxied/img/manifests/v1`), proxy.seen.join("\n"));
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

      // NO_PROXY naming the registry: nothing goes through the proxy.
      const before = proxy.seen.length;
      const direct = await umoci(["copy", "--plain-http", target, `${join(dir, "direct")}:v1`], {
        env: { HTTP_PROXY: proxy.url, NO_PROXY: "127.0.0.1" },
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
