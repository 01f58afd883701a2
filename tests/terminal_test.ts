// Output a terminal can trust: control characters from registries and files are escaped
// before they reach stderr (src/cli/log.ts escapeControl), unit by unit and end to end
// against a hostile registry.
import assert from "node:assert/strict";
import { join } from "node:path";
import { escapeControl } from "../src/cli/log.ts";
import { umoci } from "./fixtures/cli.ts";

/** Characters a terminal acts on, as escapeControl defines them (tab and LF excluded here). */
// deno-lint-ignore no-control-regex
const RAW_CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;

const HOSTILE = "\u001b]0;pwned\u0007\u001b[2J\r\nerror: fake \u009b31mred";

Deno.test("escapeControl writes C0, DEL and C1 controls out as visible text", () => {
  assert.equal(escapeControl("\u001b[2J"), "\\x1b[2J");
  assert.equal(escapeControl("a\u0007b"), "a\\x07b");
  assert.equal(escapeControl("\u0000"), "\\x00");
  assert.equal(escapeControl("one\r\ntwo\nthree"), "one\\r\\ntwo\\nthree");
  assert.equal(escapeControl("\u007f"), "\\x7f");
  assert.equal(escapeControl("\u0080 \u009b \u009f"), "\\x80 \\x9b \\x9f");
  assert.equal(
    escapeControl(HOSTILE),
    "\\x1b]0;pwned\\x07\\x1b[2J\\r\\nerror: fake \\x9b31mred",
  );
});

Deno.test("escapeControl keeps tabs, printable Unicode and backslashes as they are", () => {
  for (
    const s of [
      "",
      "plain ASCII: sha256:abc, 'v1' (48.3 KiB)",
      "tab\there",
      "non-breaking\u00a0space, é, ü, 日本語, emoji 🐳",
      "C:\\path\\x1b is text already",
      "\u2028\u2029 (separators are not terminal controls)",
    ]
  ) {
    assert.equal(escapeControl(s), s);
  }
});

Deno.test("escapeControl leaves no control character in any of U+0000..U+00FF", () => {
  for (let c = 0; c <= 0xff; c++) {
    const ch = String.fromCharCode(c);
    const out = escapeControl(`<${ch}>`);
    assert.ok(!RAW_CONTROL.test(out) && !out.includes("\n"), `U+${c.toString(16)}: ${out}`);
    const control = c < 0x20 && c !== 9 || c >= 0x7f && c <= 0x9f;
    if (!control) assert.equal(out, `<${ch}>`, `U+${c.toString(16)} kept`);
  }
});

/** A registry that has nothing and says so with a hostile error message. */
function hostileRegistry(status: number) {
  const ac = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    (req) => {
      const path = new URL(req.url).pathname;
      if (path === "/v2/" || path === "/v2") return Response.json({});
      // No HEAD: the client must GET the manifest and meet the body.
      if (req.method === "HEAD") return new Response(null, { status: 405 });
      return Response.json(
        { errors: [{ code: status === 404 ? "MANIFEST_UNKNOWN" : "DENIED", message: HOSTILE }] },
        { status },
      );
    },
  );
  return {
    host: `127.0.0.1:${server.addr.port}`,
    async stop() {
      ac.abort();
      await server.finished;
    },
  };
}

for (const status of [404, 403]) {
  Deno.test(`cli: a hostile registry's error (${status}) reaches stderr escaped, in one line`, async () => {
    const reg = hostileRegistry(status);
    const dir = await Deno.makeTempDir({ prefix: "umoci-copy-terminal-" });
    try {
      for (const extra of [[], ["--log=error"], ["--log=debug", "--trace-requests"]]) {
        const r = await umoci(
          ["copy", ...extra, "--plain-http", `oci://${reg.host}/r:v1`, `${join(dir, "out")}:v1`],
          { timeoutMs: 60_000 },
        );
        const what = `${status} ${extra.join(" ")}: ${JSON.stringify(r.stderr)}`;
        assert.equal(r.code, 1, what);
        assert.equal(r.stdout, "", what);
        assert.ok(!RAW_CONTROL.test(r.stderr), `raw control character in stderr: ${what}`);
        const lines = r.stderr.split("\n");
        assert.equal(lines.pop(), "", what);
        assert.equal(lines.filter((l) => l.startsWith("error:")).length, 1, what);
        assert.equal(lines.filter((l) => l.includes("fake")).length, status === 404 ? 0 : 1, what);
        if (extra[0] === "--log=error") assert.equal(lines.length, 1, what);
        if (status === 403) {
          // The message is shown, its controls made visible (C0 already as spaces by the
          // registry client's own flattening; C1 by the logger).
          assert.match(
            lines.at(-1)!,
            /^error: access denied to .*DENIED: .*fake \\x9b31mred/,
            what,
          );
        } else {
          assert.match(lines.at(-1)!, /^error: manifest v1 not found in /, what);
        }
      }
    } finally {
      await reg.stop();
      await Deno.remove(dir, { recursive: true });
    }
  });
}
