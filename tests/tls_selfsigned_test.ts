// A registry whose certificate is self-signed with the usual recipe (`openssl req -x509`,
// which makes the certificate its own CA): trusted with --cacert as curl and skopeo do, by
// pinning exactly that certificate; refused without it; and a different self-signed
// certificate under the same name is refused before a byte of a request is sent.
import assert from "node:assert/strict";
import { join } from "node:path";
import { umoci } from "./fixtures/cli.ts";
import { assertSameContent, buildRandomImage, withTempDir } from "./fixtures/images.ts";
import { startRegistry } from "./fixtures/registry.ts";
import { expiredSelfSignedCertificate, selfSignedCertificate } from "./fixtures/pki.ts";

Deno.test("self-signed registry certificate (openssl req -x509): --cacert pins it; others refused", async () => {
  await withTempDir(async (dir) => {
    const real = await selfSignedCertificate(dir, "real");
    const other = await selfSignedCertificate(dir, "other");
    const reg = await startRegistry({
      tls: real,
      accessLog: true,
    });
    try {
      const src = join(dir, "src");
      const built = await buildRandomImage(src, "v1", {
        layerSizes: [5 * 1024 * 1024, 1000],
        raw: true,
      });
      const target = `oci://${reg.host}/pinned/img:v1`;
      const push = await umoci(["copy", "--cacert", real.certificate, `${src}:v1`, target]);
      assert.equal(push.code, 0, push.stderr);
      assert.equal(push.stdout.trim(), built.manifest.digest);
      const back = join(dir, "back");
      const pull = await umoci(["copy", "--cacert", real.certificate, target, `${back}:v1`]);
      assert.equal(pull.code, 0, pull.stderr);
      await assertSameContent(src, "v1", back, "v1");

      // Without --cacert: refused, one line, saying it is a certificate problem.
      const plain = await umoci(["copy", "--retries=0", target, `${join(dir, "x")}:v1`]);
      assert.equal(plain.code, 1);
      assert.match(plain.stderr, /^error: .*certificate/m);

      // Another self-signed certificate for the same names: the pin does not match.
      const before = reg.requests().length;
      const wrong = await umoci([
        "copy",
        "--retries=0",
        "--cacert",
        other.certificate,
        target,
        `${join(dir, "y")}:v1`,
      ]);
      assert.equal(wrong.code, 1);
      assert.match(wrong.stderr, /^error: .*not the pinned self-signed certificate/m);
      assert.equal(wrong.stderr.trim().split("\n").filter((l) => l.startsWith("error:")).length, 1);
      assert.equal(reg.requests().length, before, "no request reached the registry");
    } finally {
      await reg.stop();
    }
  });
});

Deno.test("self-signed certificate given with --cacert that has expired: refused before any request", async () => {
  await withTempDir(async (dir) => {
    const expired = await expiredSelfSignedCertificate(dir);
    const src = join(dir, "src");
    await buildRandomImage(src, "v1", { layerSizes: [100] });
    // Nothing listens there: the certificate is judged before a connection is tried.
    const r = await umoci(["copy", "--cacert", expired, `${src}:v1`, "oci://127.0.0.1:9/a/b:v1"]);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(
      r.stderr.trim().split("\n").at(-1),
      "error: the self-signed certificate given for 127.0.0.1 (CN=localhost) is valid from " +
        "2020-01-01T00:00:00.000Z to 2020-02-01T00:00:00.000Z, not now",
    );
  });
});

Deno.test("--cert-dir: the files in DIR itself (skopeo's layout) or in DIR/HOST:PORT; a missing DIR is named", async () => {
  await withTempDir(async (dir) => {
    const cert = await selfSignedCertificate(dir, "reg");
    const reg = await startRegistry({ tls: cert });
    try {
      const src = join(dir, "src");
      const built = await buildRandomImage(src, "v1", { layerSizes: [1000] });
      const flat = join(dir, "flat");
      const tree = join(dir, "tree");
      await Deno.mkdir(flat);
      await Deno.mkdir(join(tree, reg.host), { recursive: true });
      await Deno.copyFile(cert.certificate, join(flat, "ca.crt"));
      await Deno.copyFile(cert.certificate, join(tree, reg.host, "ca.crt"));
      for (const [certDir, tag] of [[flat, "flat"], [tree, "tree"]]) {
        const r = await umoci([
          "copy",
          "--dest-cert-dir",
          certDir,
          `${src}:v1`,
          `oci://${reg.host}/cd/img:${tag}`,
        ]);
        assert.equal(r.code, 0, `${certDir}: ${r.stderr}`);
        assert.equal(r.stdout.trim(), built.manifest.digest);
      }
      const missing = join(dir, "nonexistent");
      const r = await umoci([
        "copy",
        "--dest-cert-dir",
        missing,
        `${src}:v1`,
        `oci://${reg.host}/cd/img:x`,
      ]);
      assert.equal(r.code, 1, r.stderr);
      assert.equal(
        r.stderr.trim().split("\n").at(-1),
        `error: certificate directory ${missing}: no such directory`,
      );
    } finally {
      await reg.stop();
    }
  });
});
