// Issue 12 point 10, stalls: the real CLI against registries that stall in either direction
// (tests/fixtures/hostile.ts). With `--timeout=2 --retries=0` every stall must end within a
// bound as one `error:` line naming 127.0.0.1:PORT and saying what timed out; with a retry
// left, a timeout is retried and the copy succeeds.
//
// HOSTILE_TIMEOUT_ARGS (default "--timeout=2") holds the timeout flag these tests pass; set
// it to "" to watch what a build without timeouts does (each stall then runs into the
// test's own kill limit, 30 s).
//
// Run: UMOCI_BIN=main.ts deno test -A tests/stalls_test.ts
import assert from "node:assert/strict";
import { withTempDir } from "./fixtures/images.ts";
import { type HostileServer, splitResponse, tinyImage, withHostile } from "./fixtures/hostile.ts";
import {
  assertPulled,
  failedOnce,
  isManifest,
  MiB,
  pull,
  push,
  randomBytes,
  show,
  succeeded,
  T,
  type Timed,
} from "./fixtures/hostile_cli.ts";

const TIMEOUT_ARGS = (Deno.env.get("HOSTILE_TIMEOUT_ARGS") ?? "--timeout=2").split(" ")
  .filter(Boolean);

// ---------------------------------------------------------------------------------------
// (b) stalls, both directions

const STALL_KILL_MS = 30_000;

/**
 * A stall that was cut short: within `boundMs`, nonzero exit, one `error:` line naming the
 * host and saying it timed out (or was too slow).
 */
function timedOut(r: Timed, srv: HostileServer, boundMs: number, what: string): string {
  assert.ok(r.ms < boundMs, `${what}: ended within ${boundMs} ms\n${show(r)}`);
  const msg = failedOnce(r, what);
  assert.ok(msg.includes(srv.host), `${what}: the error names ${srv.host}: ${msg}`);
  assert.match(msg, /tim(e|ed)[ -]?out|too slow/i, `${what}: says what happened`);
  return msg;
}

const stallFlags = () => [...TIMEOUT_ARGS, "--retries=0"];

Deno.test({
  ...T,
  name: "stall: accept, read the request, never answer",
  fn: () =>
    withTempDir((dir) =>
      withHostile({ handler: (_req, c) => c.hold() }, async (srv) => {
        const r = await pull(srv, dir, stallFlags(), STALL_KILL_MS);
        timedOut(r, srv, 20_000, "no answer");
        assert.ok(srv.log.length >= 1, "the request arrived");
      })
    ),
});

Deno.test({
  ...T,
  name: "stall: headers sent, then the blob body stops",
  fn: () =>
    withTempDir((dir) =>
      withHostile({
        handler: async (req, c, srv) => {
          if (req.method !== "GET" || !req.path.endsWith(srv.image.layerDigest)) return undefined;
          const ok = srv.normal(req);
          const { head } = splitResponse(ok);
          await c.write(ok.subarray(0, head.length + 100));
          return await c.hold();
        },
      }, async (srv) => {
        const r = await pull(srv, dir, stallFlags(), STALL_KILL_MS);
        timedOut(r, srv, 20_000, "body stall");
        assert.ok(srv.log.some((e) => e.target.endsWith(srv.image.layerDigest)));
      })
    ),
});

Deno.test({
  ...T,
  name: "stall: a blob trickling one byte a second ends within a bound",
  fn: () =>
    withTempDir((dir) =>
      withHostile({
        handler: async (req, c, srv) => {
          if (req.method !== "GET" || !req.path.endsWith(srv.image.layerDigest)) return undefined;
          const ok = srv.normal(req);
          const { head, body } = splitResponse(ok);
          await c.write(head);
          return (await c.trickle(body, 1000)) ? "keep" : "close";
        },
      }, async (srv) => {
        const r = await pull(srv, dir, stallFlags(), STALL_KILL_MS);
        timedOut(r, srv, 15_000, "trickle");
      })
    ),
});

Deno.test({
  ...T,
  name: "stall: a slowloris status line and header that never ends",
  fn: () =>
    withTempDir((dir) =>
      withHostile({
        handler: async (_req, c) => {
          await c.trickle("HTTP/1.1 200 OK\r\nX-Slow: " + "a".repeat(10_000), 1000);
          return "close" as const;
        },
      }, async (srv) => {
        const r = await pull(srv, dir, stallFlags(), STALL_KILL_MS);
        timedOut(r, srv, 15_000, "slowloris head");
      })
    ),
});

Deno.test({
  ...T,
  name: "stall: endless 102 Processing answers",
  fn: () =>
    withTempDir((dir) =>
      withHostile({
        handler: async (_req, c) => {
          const burst = "HTTP/1.1 102 Processing\r\n\r\n".repeat(50);
          while (await c.write(burst)) if (!(await c.sleep(20))) break;
          return "close" as const;
        },
      }, async (srv) => {
        const r = await pull(srv, dir, stallFlags(), STALL_KILL_MS);
        timedOut(r, srv, 15_000, "1xx flood");
      })
    ),
});

Deno.test({
  ...T,
  name: "stall: a PATCH body read to the end, never answered",
  fn: () =>
    withTempDir(async (dir) => {
      const image = tinyImage(randomBytes(5 * MiB));
      await withHostile({
        handler: (req, c) => req.method === "PATCH" ? c.hold() : undefined,
      }, async (srv) => {
        const r = await push(srv, dir, image, stallFlags(), STALL_KILL_MS);
        timedOut(r, srv, 20_000, "unanswered PATCH");
        const patch = srv.log.find((e) => e.method === "PATCH");
        assert.ok(patch, "the layer went up by PATCH");
        assert.equal(patch.bodyBytes, image.layer.length, "the whole layer arrived");
      });
    }),
});

Deno.test({
  ...T,
  name: "stall: a server that stops reading an upload half way (the client's writes back up)",
  fn: () =>
    withTempDir(async (dir) => {
      const image = tinyImage(randomBytes(16 * MiB)); // well past the socket buffers
      await withHostile({
        onHead: (req, c) =>
          req.method === "PATCH" || (req.method === "PUT" && !isManifest(req) &&
              Number(req.headers["content-length"] ?? 0) > MiB) ||
            req.chunked
            ? c.freeze()
            : undefined,
      }, async (srv) => {
        const r = await push(srv, dir, image, stallFlags(), STALL_KILL_MS);
        timedOut(r, srv, 20_000, "upload not read");
        assert.ok(srv.log.some((e) => e.method === "PATCH" || e.method === "PUT"));
      });
    }),
});

Deno.test({
  ...T,
  name: "stall: a timeout is retried (--retries=1) and the copy succeeds",
  fn: () =>
    withTempDir((dir) => {
      let layerGets = 0;
      return withHostile({
        handler: (req, c, srv) => {
          if (req.method !== "GET" || !req.path.endsWith(srv.image.layerDigest)) return undefined;
          return ++layerGets === 1 ? c.hold() : undefined;
        },
      }, async (srv) => {
        const r = await pull(srv, dir, [...TIMEOUT_ARGS, "--retries=1"], STALL_KILL_MS);
        assert.ok(r.ms < 20_000, `within 20 s\n${show(r)}`);
        succeeded(r, srv.image.manifestDigest, "retried after a timeout");
        await assertPulled(dir, srv.image);
        assert.equal(layerGets, 2, "the layer was asked for twice");
      });
    }),
});
