// Issue 12 point 10: the real CLI against hostile registries (tests/fixtures/hostile.ts), a
// raw-socket server whose answers are scripted byte for byte. Every test runs `umoci copy`
// as a subprocess and asserts real outcomes: the exit code, stdout, the stderr lines, and
// what the servers received. Stalls and timeouts are in tests/stalls_test.ts.
//
// (a) framing and connection reuse: surplus bytes after an answer must never be read as the
//     answer to the next request (RFC 9112 6.3); invalid framing is an error, not a guess.
// (c) a redirect target that challenges (401 with its own Bearer realm) never gets the
//     user's credentials, nor does its token server.
// (d) registries that answer uploads and manifest PUTs with other 2xx statuses (ECR: PATCH
//     201; Pulp: PATCH 204; POST 201; Quay: manifest PUT 202) are pushed to.
// (e) control characters in a registry's words never reach the terminal raw.
// (f) the query values of pre-signed storage URLs never appear on stderr, traced or not.
//
// Run: UMOCI_BIN=main.ts deno test -A tests/hostile_test.ts
import assert from "node:assert/strict";
import { join } from "node:path";
import { listTags, withTempDir } from "./fixtures/images.ts";
import {
  errorResponse,
  fitHead,
  type HostileRequest,
  latin1Bytes,
  response,
  splitResponse,
  startHostile,
  tinyImage,
  withHostile,
} from "./fixtures/hostile.ts";
import {
  assertPulled,
  assertPushed,
  copy,
  failedOnce,
  isBlob,
  isManifest,
  MiB,
  noRetries,
  pull,
  push,
  randomBytes,
  show,
  succeeded,
  T,
} from "./fixtures/hostile_cli.ts";

// ---------------------------------------------------------------------------------------
// The fixture itself

Deno.test({
  ...T,
  name: "hostile fixture: the normal answers serve a pull and a push",
  fn: () =>
    withTempDir((dir) =>
      withHostile({ lifeMs: 60_000 }, async (srv) => {
        const p = await pull(srv, dir, ["--retries=0"]);
        succeeded(p, srv.image.manifestDigest, "pull");
        await assertPulled(dir, srv.image);
        const image = tinyImage(randomBytes(5 * MiB));
        const u = await push(srv, dir, image, ["--retries=0"]);
        succeeded(u, image.manifestDigest, "push");
        assertPushed(srv, image);
        assert.ok(srv.log.some((e) => e.method === "PATCH"), "a >4 MiB layer goes up by PATCH");
        assert.ok(srv.log.every((e) => e.conn >= 1 && e.seq >= 1 && e.method && e.target));
      })
    ),
});

// ---------------------------------------------------------------------------------------
// (a) framing and connection reuse

/** A 404 that says it is surplus: taken as the next request's answer, it fails the copy. */
const FAKE_404 = response(404, "Not Found", [
  ["Content-Type", "application/json"],
  ["Warning", '199 - "I am surplus bytes of an earlier response"'],
], '{"errors":[{"code":"MANIFEST_UNKNOWN","message":"surplus answer"}]}');

Deno.test({
  ...T,
  name: "desync: a body on HEAD answers is not the next request's answer",
  fn: () =>
    withTempDir((dir) =>
      withHostile({
        handler: async (req, c, srv) => {
          if (req.method !== "HEAD") return undefined;
          // The whole GET answer, body included, in the same segment.
          const asGet = srv.normal({ ...req, method: "GET" });
          return await c.send(asGet);
        },
      }, async (srv) => {
        const r = await pull(srv, dir, ["--retries=2"]);
        assert.ok(srv.log.some((e) => e.method === "HEAD"), "the CLI sent a HEAD");
        succeeded(r, srv.image.manifestDigest, "pull");
        noRetries(r, "pull");
        await assertPulled(dir, srv.image);
      })
    ),
});

Deno.test({
  ...T,
  name: "desync: bytes past Content-Length (a whole response) are not the next answer",
  fn: () =>
    withTempDir((dir) =>
      withHostile({
        handler: async (req, c, srv) => {
          if (req.method !== "GET" && req.method !== "HEAD") return undefined;
          return await c.send(new Uint8Array([...srv.normal(req), ...FAKE_404]));
        },
      }, async (srv) => {
        const r = await pull(srv, dir, ["--retries=2"]);
        succeeded(r, srv.image.manifestDigest, "pull");
        noRetries(r, "pull");
        await assertPulled(dir, srv.image);
      })
    ),
});

Deno.test({
  ...T,
  name: "desync: a stray CRLF after each response (a later segment) is harmless",
  fn: () =>
    withTempDir((dir) =>
      withHostile({
        handler: async (req, c, srv) => {
          if (!(await c.write(srv.normal(req)))) return "close";
          await c.sleep(30);
          return await c.send("\r\n");
        },
      }, async (srv) => {
        const r = await pull(srv, dir, ["--retries=2"]);
        succeeded(r, srv.image.manifestDigest, "pull");
        noRetries(r, "pull");
        await assertPulled(dir, srv.image);
      })
    ),
});

/** Insert raw header lines right after the status line of an answer. */
function withHeaderLines(bytes: Uint8Array, extra: string): Uint8Array {
  const text = new TextDecoder("latin1").decode(bytes);
  const i = text.indexOf("\r\n") + 2;
  const head = splitResponse(bytes).head.length;
  return new Uint8Array([
    ...latin1Bytes(text.slice(0, i) + extra),
    ...bytes.subarray(i, head),
    ...bytes.subarray(head),
  ]);
}

Deno.test({
  ...T,
  name: "framing: conflicting Content-Length on a manifest is an error, not a guess",
  fn: () =>
    withTempDir((dir) =>
      withHostile({
        handler: async (req, c, srv) => {
          if (req.method !== "GET" || !isManifest(req)) return undefined;
          const ok = srv.normal(req);
          const n = splitResponse(ok).body.length;
          await c.write(withHeaderLines(ok, `Content-Length: ${n + 10}\r\n`));
          return "close"; // a client that believed n+10 sees the end, not a hang
        },
      }, async (srv) => {
        const r = await pull(srv, dir, ["--retries=0"]);
        assert.ok(srv.log.some((e) => e.method === "GET" && /manifests/.test(e.target)));
        failedOnce(r, "conflicting Content-Length");
        assert.deepEqual(await listTags(join(dir, "out")).catch(() => []), [], "nothing tagged");
      })
    ),
});

Deno.test({
  ...T,
  name: "framing: duplicate equal Content-Length: the right image or one clean error",
  fn: () =>
    withTempDir((dir) =>
      withHostile({
        handler: async (req, c, srv) => {
          if (req.method !== "GET") return undefined;
          const ok = srv.normal(req);
          const n = splitResponse(ok).body.length;
          return await c.send(withHeaderLines(ok, `Content-Length: ${n}\r\n`));
        },
      }, async (srv) => {
        const r = await pull(srv, dir, ["--retries=0"]);
        if (r.code === 0) {
          succeeded(r, srv.image.manifestDigest, "duplicate Content-Length");
          await assertPulled(dir, srv.image);
        } else {
          assert.match(failedOnce(r, "duplicate Content-Length"), new RegExp(srv.host));
        }
      })
    ),
});

Deno.test({
  ...T,
  name: "framing: a folded header line is unfolded or refused, never a header of its own",
  fn: () =>
    withTempDir((dir) =>
      withHostile({
        handler: async (req, c, srv) => {
          if (req.method !== "GET" || !isManifest(req)) return undefined;
          // Read as a line of its own, the continuation would be a second, lying length.
          const bad = withHeaderLines(srv.normal(req), "X-Note: first\r\n Content-Length: 1\r\n");
          return await c.send(bad);
        },
      }, async (srv) => {
        const r = await pull(srv, dir, ["--retries=0"]);
        if (r.code === 0) {
          succeeded(r, srv.image.manifestDigest, "folded header");
          await assertPulled(dir, srv.image);
        } else {
          assert.match(failedOnce(r, "folded header"), new RegExp(srv.host));
        }
      })
    ),
});

Deno.test({
  ...T,
  name: "reuse: an unsolicited 408 on an idle connection costs a reconnect, not the copy",
  fn: () =>
    withTempDir((dir) => {
      let sent408 = 0;
      return withHostile({
        handler: async (req, c, srv) => {
          if (!(await c.write(srv.normal(req)))) return "close";
          if (req.seq !== 1 || sent408 >= 4) return "keep";
          // The server times the idle connection out and says so (RFC 9110 15.5.9).
          await c.sleep(150);
          sent408++;
          await c.write(
            "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
          );
          return "close";
        },
      }, async (srv) => {
        const r = await pull(srv, dir, ["--retries=3"]);
        assert.ok(sent408 >= 1, "a 408 was sent");
        succeeded(r, srv.image.manifestDigest, "pull past 408s");
        await assertPulled(dir, srv.image);
      });
    }),
});

Deno.test({
  ...T,
  name: "desync (case h): a refused manifest PUT after surplus 201s fails the push, exit 1",
  fn: () =>
    withTempDir((dir) =>
      withHostile({
        handler: async (req, c, srv) => {
          if (req.method === "PUT" && /\/blobs\/uploads\//.test(req.path)) {
            // The honest answer without Docker-Content-Digest, then a duplicate 201.
            const ok = new TextDecoder("latin1").decode(srv.normal(req))
              .replace(/Docker-Content-Digest: [^\r]*\r\n/, "");
            const dup = "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
            return await c.send(ok + dup);
          }
          if (req.method === "PUT" && isManifest(req)) {
            await c.sleep(100);
            const no = errorResponse(400, "Bad Request", "MANIFEST_INVALID", "refused");
            return await c.send(no);
          }
          return undefined;
        },
      }, async (srv) => {
        const r = await push(srv, dir, srv.image, ["--retries=0"]);
        assert.equal(r.code, 1, `the refusal is reported: ${show(r)}`);
        assert.doesNotMatch(r.stdout, /sha256:/, "no digest on stdout");
        assert.match(failedOnce(r, "refused manifest"), /MANIFEST_INVALID|refused/);
        assert.doesNotMatch(r.stderr, /Successfully/);
        assert.equal(srv.state.repos.get("q")?.tags.size ?? 0, 0, "the registry has no tag");
        assert.ok(srv.log.some((e) => e.method === "PUT" && /manifests/.test(e.target)));
      })
    ),
});

// ---------------------------------------------------------------------------------------
// (c) a redirect target that challenges

Deno.test({
  ...T,
  name: "redirect: a storage host answering 401 with its own realm never gets the credentials",
  fn: () =>
    withTempDir(async (dir) => {
      const USER = "alice", PASS = "S3cr3t-pa55-XYZZY";
      const B64 = btoa(`${USER}:${PASS}`);
      const token = startHostile({
        handler: async (_req, c) =>
          await c.send(
            response(
              200,
              "OK",
              [["Content-Type", "application/json"]],
              '{"token":"minted-by-storage-realm"}',
            ),
          ),
      });
      const storage = startHostile({
        handler: async (req, c) =>
          await c.send(fitHead(
            req,
            response(401, "Unauthorized", [[
              "WWW-Authenticate",
              `Bearer realm="${token.origin}/token",service="storage",scope="blob:read"`,
            ]], "{}"),
          )),
      });
      const reg = startHostile({
        handler: async (req, c) => {
          if (req.headers["authorization"] !== `Basic ${B64}`) {
            return await c.send(fitHead(
              req,
              response(
                401,
                "Unauthorized",
                [["WWW-Authenticate", 'Basic realm="registry"']],
                "{}",
              ),
            ));
          }
          if (req.method === "GET" && isBlob(req)) {
            const to = `${storage.origin}${req.path}`;
            return await c.send(response(307, "Temporary Redirect", [["Location", to]]));
          }
          return undefined;
        },
      });
      try {
        const r = await copy([
          "--plain-http",
          "--retries=0",
          "--creds",
          `${USER}:${PASS}`,
          `oci://${reg.host}/r:latest`,
          `${dir}/out:latest`,
        ]);
        assert.ok(
          reg.log.some((e) => e.headers["authorization"] === `Basic ${B64}`),
          "the registry got the credentials",
        );
        assert.ok(storage.log.length >= 1, "the redirect was followed");
        // Every finding is collected, so one run shows all that went wrong.
        const problems: string[] = [];
        for (const [name, srv] of [["storage", storage], ["token server", token]] as const) {
          for (const e of srv.log) {
            const auth = e.headers["authorization"];
            if (auth === undefined) continue;
            // A Bearer token the token server minted anonymously is no one's secret; Basic
            // (or anything carrying the user's password) is, and the token server was named
            // by the storage host, not by the user.
            if (auth.includes(B64) || /^basic/i.test(auth) || name === "token server") {
              problems.push(`${name} got Authorization: ${auth} on ${e.method} ${e.target}`);
            }
          }
        }
        if (r.stderr.includes(PASS) || r.stderr.includes(B64)) problems.push("a secret on stderr");
        const msg = failedOnce(r, "challenging redirect target");
        if (!msg.includes(storage.host)) {
          problems.push(`the error does not name the storage host ${storage.host}: ${msg}`);
        }
        assert.deepEqual(problems, [], `what the redirect target and its realm saw`);
      } finally {
        await Promise.all([reg.stop(), storage.stop(), token.stop()]);
      }
    }),
});

// ---------------------------------------------------------------------------------------
// (d) other success statuses

/** The normal answer with its status line replaced. */
function restatus(b: Uint8Array, status: string): Uint8Array {
  const text = new TextDecoder("latin1").decode(b);
  return latin1Bytes(text.replace(/^HTTP\/1\.1 [^\r]*/, `HTTP/1.1 ${status}`));
}

for (
  const [name, pick, status] of [
    ["PATCH answered 201 Created (Amazon ECR)", (r: HostileRequest) => r.method === "PATCH", "201"],
    ["PATCH answered 204 No Content (Pulp)", (r: HostileRequest) => r.method === "PATCH", "204"],
    [
      "POST answered 201 Created with a Location",
      (r: HostileRequest) => r.method === "POST",
      "201",
    ],
    [
      "manifest PUT answered 202 Accepted (Quay)",
      (r: HostileRequest) => r.method === "PUT" && isManifest(r),
      "202",
    ],
  ] as const
) {
  Deno.test({
    ...T,
    name: `success status: ${name}`,
    fn: () =>
      withTempDir(async (dir) => {
        const image = tinyImage(randomBytes(5 * MiB));
        let hit = 0;
        await withHostile({
          image,
          handler: async (req, c, srv) => {
            if (!pick(req)) return undefined;
            hit++;
            let b = srv.normal(req);
            if (status === "204") {
              // No body and no Content-Length on a 204 (RFC 9110 8.6).
              const loc = /\r\nLocation: ([^\r]*)/.exec(new TextDecoder().decode(b))![1];
              const range = /\r\nRange: ([^\r]*)/.exec(new TextDecoder().decode(b))![1];
              b = response(204, "No Content", [["Location", loc], ["Range", range]], "", {
                contentLength: false,
              });
            } else {
              b = restatus(b, status === "201" ? "201 Created" : "202 Accepted");
            }
            return await c.send(b);
          },
        }, async (srv) => {
          const r = await push(srv, dir, image, ["--retries=0"]);
          assert.ok(hit >= 1, `the ${name.split(" ")[0]} was sent`);
          succeeded(r, image.manifestDigest, name);
          assertPushed(srv, image);
        });
      }),
  });
}

// ---------------------------------------------------------------------------------------
// (e) control characters

// deno-lint-ignore no-control-regex
const CONTROLS = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/;
const NASTY = "\u001b]0;pwned\u0007\u001b[2J\u001b[31mRED\u001b[0m\rOVERWRITE\u009b31mC1\u0085NEL";

Deno.test({
  ...T,
  name: "control characters in a registry's error never reach stderr raw",
  fn: () =>
    withTempDir(async (dir) => {
      const variants: [string, (req: HostileRequest) => Uint8Array][] = [
        ["JSON error message", () => errorResponse(403, "Forbidden", "DENIED", NASTY)],
        [
          "text body",
          () => response(403, "Forbidden", [["Content-Type", "text/plain"]], `DENIED ${NASTY}`),
        ],
        [
          "reason phrase",
          () =>
            new Uint8Array([
              ...latin1Bytes("HTTP/1.1 403 Forbidden \x9b31m\x85 C1\r\nContent-Length: 0\r\n\r\n"),
            ]),
        ],
      ];
      // Every variant runs; the problems of all of them are reported together.
      const problems: string[] = [];
      for (const [what, answer] of variants) {
        await withHostile({
          handler: (req, c) =>
            req.method === "GET" && isManifest(req) ? c.send(answer(req)) : undefined,
        }, async (srv) => {
          const r = await pull(srv, join(dir, what.replaceAll(" ", "-")), ["--retries=0"]);
          assert.ok(srv.log.some((e) => e.method === "GET" && /manifests/.test(e.target)));
          assert.equal(r.code, 1, `${what}: exit 1\n${show(r)}`);
          failedOnce(r, what);
          const bad = new Set(
            [...r.stderr].filter((ch) => CONTROLS.test(ch)).map((ch) =>
              `U+${ch.charCodeAt(0).toString(16).padStart(4, "0")}`
            ),
          );
          if (bad.size) {
            problems.push(`${what}: raw ${[...bad].join(" ")} in ${JSON.stringify(r.stderr)}`);
          }
          if (what === "JSON error message") assert.match(r.stderr, /DENIED/);
        });
      }
      assert.deepEqual(problems, [], "no raw control characters on stderr");
    }),
});

// ---------------------------------------------------------------------------------------
// (f) pre-signed URLs

Deno.test({
  ...T,
  name: "pre-signed URL: signature query values never appear on stderr, traced or not",
  fn: () =>
    withTempDir(async (dir) => {
      const SECRET1 = "SIG1d3adb33fSECRETSIGNATURE";
      const SECRET2 = "AKIDSECRET2CRED";
      for (const [status, flags] of [[403, []], [500, ["--trace-requests"]]] as const) {
        const storage = startHostile({
          handler: async (_req, c) =>
            await c.send(response(
              status,
              status === 403 ? "Forbidden" : "Internal Server Error",
              [["Content-Type", "application/xml"]],
              "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
            )),
        });
        const reg = startHostile({
          handler: async (req, c, srv) => {
            if (req.method !== "GET" || !req.path.endsWith(srv.image.layerDigest)) return undefined;
            const to = `${storage.origin}/blob?X-Amz-Algorithm=AWS4-HMAC-SHA256` +
              `&X-Amz-Credential=${SECRET2}%2F20240101%2Fus-east-1%2Fs3%2Faws4_request` +
              `&X-Amz-Signature=${SECRET1}&digest=${srv.image.layerDigest}`;
            return await c.send(response(307, "Temporary Redirect", [["Location", to]]));
          },
        });
        try {
          const what = `storage ${status}${flags.length ? " traced" : ""}`;
          const r = await pull(reg, join(dir, String(status)), ["--retries=0", ...flags]);
          assert.ok(
            storage.log.some((e) => e.target.includes(SECRET1)),
            `${what}: the pre-signed URL was followed`,
          );
          failedOnce(r, what);
          for (const s of [SECRET1, SECRET2]) {
            assert.ok(!r.stderr.includes(s), `${what}: ${s} on stderr:\n${r.stderr}`);
          }
          if (flags.length) {
            assert.match(r.stderr, /X-Amz-Signature=<redacted>/, `${what}: shown as <redacted>`);
          }
        } finally {
          await Promise.all([reg.stop(), storage.stop()]);
        }
      }
    }),
});
