// The progress display's parts without a terminal (src/cli/progress.ts, src/cli/term.ts):
// widths and cutting, the bar layout at every width, erasing after a resize, rates that
// count only new bytes of a resumed blob, the periodic lines, the JSON events and their
// throttling; and how finely an upload to the real registry reports its progress. The same
// display on a real terminal (tmux) is in progress_tmux_test.ts, the JSON stream of a real
// copy in progress_json_test.ts.
import assert from "node:assert/strict";
import type { CopyEvent } from "../src/copy.ts";
import { Logger } from "../src/cli/log.ts";
import { Bars, formatEta, JsonEvents, Lines, renderBars, Tally } from "../src/cli/progress.ts";
import { displayWidth, eraseRowsAbove, fitWidth, rowsOf } from "../src/cli/term.ts";
import { digestOf } from "../src/digest.ts";
import { parseRegistryReference } from "../src/reference.ts";
import { RegistryStore } from "../src/store/registry/registry.ts";
import { startRegistry } from "./fixtures/registry.ts";

const MiB = 1024 * 1024;

/** A clock the test moves. */
function clock() {
  let t = 1000;
  const now = () => t;
  return { now, advance: (ms: number) => (t += ms) };
}

function desc(n: number, size: number) {
  return {
    mediaType: "application/vnd.oci.image.layer.v1.tar",
    digest: `sha256:${n.toString(16).padStart(2, "0").repeat(32)}`,
    size,
  };
}

/** A logger whose lines are collected instead of written. */
function collectingLogger(): { logger: Logger; lines: [string, string][] } {
  const logger = new Logger("info");
  const lines: [string, string][] = [];
  logger.sink = (level, message) => lines.push([level, message]);
  return { logger, lines };
}

Deno.test("term: display width counts wide characters twice, controls and marks not at all", () => {
  assert.equal(displayWidth("sha256:abc"), 10);
  assert.equal(displayWidth("日本語"), 6);
  assert.equal(displayWidth("e\u0301"), 1);
  assert.equal(displayWidth("🐳x"), 3);
  assert.equal(fitWidth("abcdef", 4), "abcd");
  assert.equal(fitWidth("ab日本", 3), "ab"); // a wide character is never split
  assert.equal(fitWidth("ab日本", 4), "ab日");
  assert.equal(fitWidth("short", 80), "short");
  assert.equal(rowsOf(199, 40), 5);
  assert.equal(rowsOf(0, 40), 1);
  assert.equal(rowsOf(39, 40), 1);
});

Deno.test("progress: every bar line fits every width from 1 to 300 columns", () => {
  const c = clock();
  const tally = new Tally(c.now);
  tally.take({ type: "plan", blobs: 3, bytes: 60 * MiB + 500 });
  tally.take({ type: "blob-start", desc: desc(1, 40 * MiB), n: 1, total: 2, role: "layer" });
  tally.take({ type: "blob-start", desc: desc(2, 20 * MiB), n: 2, total: 2, role: "layer" });
  tally.take({
    type: "blob-skip",
    desc: desc(3, 500),
    n: 1,
    total: 1,
    role: "config",
    reason: "exists",
  });
  tally.take({ type: "blob-resume", desc: desc(2, 20 * MiB), offset: 12 * MiB });
  for (let i = 1; i <= 10; i++) {
    c.advance(300);
    tally.take({ type: "blob-progress", desc: desc(1, 40 * MiB), bytes: i * MiB });
    tally.take({
      type: "blob-progress",
      desc: desc(2, 20 * MiB),
      bytes: 12 * MiB + i * 256 * 1024,
    });
  }
  for (let columns = 1; columns <= 300; columns++) {
    const lines = renderBars(tally, columns);
    assert.equal(lines.length, 3, `${columns} columns: two bars and a total`);
    for (const line of lines) {
      assert.ok(
        displayWidth(line) <= Math.max(1, columns - 1),
        `${columns} columns: ${JSON.stringify(line)} is ${displayWidth(line)} wide`,
      );
    }
  }
  const wide = renderBars(tally, 200);
  assert.match(wide[0], /^layer 1\/2 sha256:010101010101 \[=+>? *\] 10\.0 MiB \/ 40\.0 MiB /);
  assert.match(wide[1], /resuming at 12\.0 MiB$/);
  assert.match(wide[2], /^total \[=+>? *\] .* \/ 60\.0 MiB 1\/3 blobs .*\/s ETA \d/);
  assert.match(renderBars(tally, 40)[2], /^total/);
});

Deno.test("progress: in a job each bar names its image, cut to fit, and the total covers every image", () => {
  const c = clock();
  const tally = new Tally(c.now);
  const a = { name: "docker.io/library/alpine:3.20", index: 0 };
  const b = { name: "quay.io/some-organisation/a-rather-long-repository-name:v1.2.3", index: 1 };
  tally.take({ type: "plan", blobs: 2, bytes: 40 * MiB + 500 }, a);
  tally.take({ type: "blob-start", desc: desc(1, 40 * MiB), n: 1, total: 1, role: "layer" }, a);
  tally.take({ type: "plan", blobs: 2, bytes: 20 * MiB + 500 }, b);
  // The same blob in both images: two transfers, one per image.
  tally.take({ type: "blob-start", desc: desc(1, 40 * MiB), n: 1, total: 1, role: "layer" }, b);
  tally.take({ type: "blob-start", desc: desc(2, 20 * MiB), n: 1, total: 1, role: "layer" }, b);
  for (let i = 1; i <= 5; i++) {
    c.advance(300);
    tally.take({ type: "blob-progress", desc: desc(1, 40 * MiB), bytes: i * MiB }, a);
    tally.take({ type: "blob-progress", desc: desc(2, 20 * MiB), bytes: i * MiB }, b);
  }
  assert.equal(tally.active.size, 3);
  for (let columns = 1; columns <= 300; columns++) {
    const lines = renderBars(tally, columns);
    assert.equal(lines.length, 4, `${columns} columns: three bars and a total`);
    for (const line of lines) {
      assert.ok(displayWidth(line) <= Math.max(1, columns - 1), `${columns}: ${line}`);
    }
    if (columns >= 20) {
      assert.match(lines[0], /^\[dock/, `${columns} columns: ${lines[0]}`);
      assert.match(lines[2], /^\[quay/, `${columns} columns: ${lines[2]}`);
    }
  }
  const wide = renderBars(tally, 200);
  assert.match(wide[0], /^\[docker\.io\/library\/alpine:3\.20\] layer 1\/1 sha256:0101/);
  assert.match(
    wide[2],
    /^\[quay\.io\/some-organisation\/a-rather-long-repository-name:v1\.2\.3\] /,
  );
  // The total: both images' plans (60 MiB, 4 blobs), not the last one's.
  assert.match(wide[3], /^total \[=* *\] 10\.0 MiB \/ 60\.0 MiB 0\/4 blobs/);
  const narrow = renderBars(tally, 60);
  assert.match(narrow[2], /^\[quay\.io\/some-organis…\] layer 1\/1 \[=* *\] 25%/, narrow[2]);
  // One image alone (a single copy, or a job's only image): no names.
  const single = new Tally(c.now);
  single.take({ type: "plan", blobs: 1, bytes: 40 * MiB }, a);
  single.take({ type: "blob-start", desc: desc(1, 40 * MiB), n: 1, total: 1, role: "layer" }, a);
  assert.match(renderBars(single, 200)[0], /^layer 1\/1 /);
});

Deno.test("progress: a resumed blob's rate counts only the bytes moved since it resumed", () => {
  const c = clock();
  const tally = new Tally(c.now);
  const d = desc(1, 100 * MiB);
  tally.take({ type: "plan", blobs: 1, bytes: d.size });
  tally.take({ type: "blob-start", desc: d, n: 1, total: 1, role: "layer" });
  tally.take({ type: "blob-resume", desc: d, offset: 60 * MiB });
  for (let s = 1; s <= 4; s++) {
    c.advance(1000);
    tally.take({ type: "blob-progress", desc: d, bytes: 60 * MiB + s * MiB });
  }
  // 4 MiB in 4 s: 1 MiB/s, not (64 MiB)/4 s.
  const rate = tally.rate()!;
  assert.ok(Math.abs(rate - MiB) < 1024, `rate ${rate}`);
  assert.equal(tally.moved(), 4 * MiB);
  assert.equal(tally.done(), 64 * MiB);
  assert.ok(Math.abs(tally.eta()! - 36) < 0.1, `eta ${tally.eta()}`);
  const [bar] = renderBars(tally, 120);
  assert.match(bar, /64\.0 MiB \/ 100\.0 MiB 1\.0 MiB\/s ETA 36s resuming at 60\.0 MiB/);
  tally.take({ type: "blob-done", desc: d, n: 1, total: 1, moved: 40 * MiB });
  assert.equal(tally.moved(), 40 * MiB);
  assert.equal(tally.done(), 100 * MiB);
});

Deno.test("term: erasing N rows: up N, clear that row alone, clear below from the next row, back up", () => {
  // "Erase below" is never sent from the first erased row: on a pane's top-left corner tmux
  // takes it as clearing the screen and keeps the screen in its history (scroll-on-clear).
  assert.equal(eraseRowsAbove(0), "");
  assert.equal(eraseRowsAbove(1), "\x1b[1A\r\x1b[2K\x1b[1B\x1b[J\x1b[1A");
  assert.equal(eraseRowsAbove(3), "\x1b[3A\r\x1b[2K\x1b[1B\x1b[J\x1b[1A");
});

Deno.test("progress: Bars erases exactly the rows it drew, re-flowed after a narrowing resize", () => {
  const c = clock();
  let size = { columns: 200, rows: 40 };
  const writes: string[] = [];
  const { logger } = collectingLogger();
  logger.sink = undefined;
  const bars = new Bars(logger, () => size, (t) => writes.push(t), c.now);
  try {
    bars.event({ type: "plan", blobs: 2, bytes: 30 * MiB });
    bars.event({ type: "blob-start", desc: desc(1, 20 * MiB), n: 1, total: 2, role: "layer" });
    bars.event({ type: "blob-start", desc: desc(2, 10 * MiB), n: 2, total: 2, role: "layer" });
    // Frames come at most ten a second (a timer); take this one now.
    const drawn = bars.erase() + bars.draw();
    assert.equal(drawn.split("\n").length - 1, 3, "two bars and a total, one write");
    const widths = drawn.split("\n").slice(0, 3).map(displayWidth);
    assert.ok(widths.every((w) => w <= 199 && w > 60), `${widths}`);
    // Narrowed to 40 columns: a terminal that re-flows shows each line on ceil(w/40) rows.
    size = { columns: 40, rows: 40 };
    const rows = widths.reduce((n, w) => n + Math.ceil(w / 40), 0);
    assert.equal(bars.erase(), eraseRowsAbove(rows));
    const again = bars.draw();
    assert.ok(again.split("\n").slice(0, -1).every((l) => displayWidth(l) <= 39), again);
    // Widened: nothing re-flows, one row per line.
    size = { columns: 120, rows: 40 };
    assert.equal(bars.erase(), eraseRowsAbove(3));
    assert.equal(bars.erase(), "", "nothing drawn, nothing to erase");
    bars.draw();
    bars.event({ type: "blob-done", desc: desc(1, 20 * MiB), n: 1, total: 2, moved: 20 * MiB });
    bars.event({ type: "blob-done", desc: desc(2, 10 * MiB), n: 2, total: 2, moved: 10 * MiB });
    assert.equal(writes.at(-1), eraseRowsAbove(3), "the last transfer's end erases everything");
  } finally {
    bars.stop();
  }
  const n = writes.length;
  bars.event({ type: "blob-start", desc: desc(3, 20 * MiB), n: 1, total: 1, role: "layer" });
  assert.equal(writes.length, n, "nothing is drawn after stop()");
  assert.equal(logger.overlay, undefined);
});

Deno.test("progress: Bars keeps to the terminal's height", () => {
  const writes: string[] = [];
  const logger = new Logger("info");
  const bars = new Bars(logger, () => ({ columns: 80, rows: 6 }), (t) => writes.push(t));
  try {
    for (let i = 1; i <= 8; i++) {
      bars.event({ type: "blob-start", desc: desc(i, 2 * MiB), n: i, total: 8, role: "layer" });
    }
    const lines = bars.draw().split("\n").slice(0, -1);
    assert.equal(lines.length, 4, lines.join("\n"));
    assert.match(lines[2], /^\.\.\. and 6 more transfers$/);
    assert.match(lines[3], /^total/);
  } finally {
    bars.stop();
  }
});

Deno.test("progress: without a terminal, one plain line per interval while blobs move", async () => {
  const { logger, lines } = collectingLogger();
  const display = new Lines(logger, 40);
  try {
    display.event({ type: "plan", blobs: 2, bytes: 10 * MiB });
    display.event({ type: "blob-start", desc: desc(1, 8 * MiB), n: 1, total: 2, role: "layer" });
    display.event({ type: "blob-progress", desc: desc(1, 8 * MiB), bytes: 2 * MiB });
    await new Promise((r) => setTimeout(r, 130));
  } finally {
    display.stop();
  }
  const count = lines.length;
  assert.ok(count >= 2, `${count} lines`);
  for (const [level, line] of lines) {
    assert.equal(level, "info");
    assert.match(line, /^progress: 2\.0 MiB of 10\.0 MiB \(20%\), 0\/2 blobs/);
    assert.ok(!line.includes("\x1b") && !line.includes("\r"));
  }
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(lines.length, count, "nothing after stop()");
  assert.equal(formatEta(7.2), "8s");
  assert.equal(formatEta(65), "1m05s");
  assert.equal(formatEta(7320), "2h02m");
});

Deno.test("progress: without a terminal, no line and no timer until a transfer starts", async () => {
  // A rerun that finds every blob present moves nothing: it prints no progress line, and
  // its display never starts the interval (Deno's first setInterval costs it 6-10 ms).
  const { logger, lines } = collectingLogger();
  const display = new Lines(logger, 20);
  const started: unknown[] = [];
  const real = globalThis.setInterval;
  globalThis.setInterval = ((...args: Parameters<typeof setInterval>) => {
    started.push(args[1]);
    return real(...args);
  }) as typeof setInterval;
  try {
    display.event({ type: "plan", blobs: 2, bytes: 10 * MiB });
    display.event({
      type: "blob-skip",
      desc: desc(1, 8 * MiB),
      n: 1,
      total: 2,
      role: "layer",
      reason: "exists",
    });
    await new Promise((r) => setTimeout(r, 70));
    assert.deepEqual(lines, []);
    assert.deepEqual(started, []);
    display.event({ type: "blob-start", desc: desc(2, 2 * MiB), n: 2, total: 2, role: "layer" });
    assert.deepEqual(started, [20]);
  } finally {
    globalThis.setInterval = real;
    display.stop();
  }
});

Deno.test("progress: in a job the periodic line covers every image and never shows done above total", async () => {
  const { logger, lines } = collectingLogger();
  const display = new Lines(logger, 20);
  const a = { name: "big:v1", index: 0 };
  const b = { name: "small:v1", index: 1 };
  const big = [desc(1, 140 * MiB), desc(2, MiB)];
  const small = [desc(3, 512 * 1024), desc(4, 512 * 1024), desc(5, 1000)];
  const seen: string[] = [];
  const tick = async () => {
    const line = display.line();
    if (line) seen.push(line);
    await new Promise((r) => setTimeout(r, 25)); // the interval's lines too
  };
  try {
    // The big image plans first and is under way when the small one plans, moves all its
    // blobs and finishes (the same blob digest in both would be two transfers too).
    display.event({ type: "plan", blobs: 2, bytes: 141 * MiB }, { image: a });
    display.event({ type: "blob-start", desc: big[0], n: 2, total: 2, role: "layer" }, {
      image: a,
    });
    display.event({ type: "blob-progress", desc: big[0], bytes: 100 * MiB }, { image: a });
    display.event({ type: "blob-start", desc: big[1], n: 1, total: 2, role: "layer" }, {
      image: a,
    });
    display.event({ type: "blob-done", desc: big[1], n: 1, total: 2, moved: MiB }, { image: a });
    await tick();
    display.event({ type: "plan", blobs: 3, bytes: MiB + 1000 }, { image: b });
    await tick();
    for (const [i, d] of small.entries()) {
      display.event({ type: "blob-start", desc: d, n: i + 1, total: 3, role: "layer" }, {
        image: b,
      });
      display.event({ type: "blob-done", desc: d, n: i + 1, total: 3, moved: d.size }, {
        image: b,
      });
      await tick();
    }
    display.event({ type: "blob-progress", desc: big[0], bytes: 126 * MiB }, { image: a });
    await tick();
  } finally {
    display.stop();
  }
  const all = [...seen, ...lines.map(([, l]) => l)];
  assert.ok(lines.length >= 2, `${lines.length} interval lines`);
  for (const line of all) {
    const m = /^progress: ([\d.]+) (\w+) of ([\d.]+) (\w+) \((\d+)%\), (\d+)\/(\d+) blobs/.exec(
      line,
    );
    assert.ok(m, line);
    const bytes = (n: string, u: string) => Number(n) * { B: 1, KiB: 1024, MiB: MiB }[u]!;
    assert.ok(bytes(m[1], m[2]) <= bytes(m[3], m[4]), `done above total: ${line}`);
    assert.ok(Number(m[5]) <= 100, line);
    assert.ok(Number(m[6]) <= Number(m[7]), `blobs done above total: ${line}`);
  }
  // Once both plans are in, the total is the job's: 142 MiB in 5 blobs.
  assert.match(seen.at(-1)!, /^progress: 128\.0 MiB of 142\.0 MiB \(90%\), 4\/5 blobs/);
});

Deno.test("progress: JSON events carry v:1, one object a line, progress at most every 500 ms", () => {
  const c = clock();
  const out: string[] = [];
  const { logger } = collectingLogger();
  const json = new JsonEvents(logger, (t) => out.push(t), 500, c.now);
  const d = desc(1, 10 * MiB);
  const events: CopyEvent[] = [
    { type: "plan", blobs: 1, bytes: d.size },
    { type: "blob-start", desc: d, n: 1, total: 1, role: "layer" },
  ];
  for (const e of events) json.event(e);
  for (let i = 1; i <= 40; i++) {
    c.advance(50); // 2 s in all: at most 4 progress events
    json.event({ type: "blob-progress", desc: d, bytes: i * 256 * 1024 });
  }
  json.event({ type: "blob-done", desc: d, n: 1, total: 1, moved: d.size });
  json.retry("! retry 2 of 5 in 0.4 s: 127.0.0.1:1: PATCH /v2/x: 502 Bad Gateway");
  logger.warn("careful \u009b31m");
  logger.info("a step line the events replace");
  logger.error("it broke", 1);
  const parsed = out.map((line) => {
    assert.ok(line.endsWith("\n") && line.indexOf("\n") === line.length - 1, line);
    assert.ok(!/[\u007f-\u009f]/.test(line), `raw C1 control in ${line}`);
    return JSON.parse(line);
  });
  for (const e of parsed) assert.equal(e.v, 1);
  const types = parsed.map((e) => e.type);
  const progress = parsed.filter((e) => e.type === "blob-progress");
  assert.ok(progress.length >= 3 && progress.length <= 4, `${progress.length} progress events`);
  for (let i = 1; i < progress.length; i++) {
    assert.ok(progress[i].elapsed - progress[i - 1].elapsed >= 0.5);
  }
  assert.deepEqual(types.filter((t) => t !== "blob-progress"), [
    "plan",
    "blob-start",
    "blob-done",
    "retry",
    "log",
    "error",
  ]);
  const retry = parsed.find((e) => e.type === "retry");
  assert.equal(retry.attempt, 2);
  assert.equal(retry.of, 5);
  const log = parsed.find((e) => e.type === "log");
  assert.equal(log.level, "warn");
  assert.equal(log.message, "careful \u009b31m", "the text is kept, only its encoding escapes it");
  assert.deepEqual(
    { ...parsed.at(-1), time: undefined, elapsed: undefined },
    { v: 1, type: "error", message: "it broke", exit: 1, time: undefined, elapsed: undefined },
  );
  const done = parsed.find((e) => e.type === "blob-done");
  assert.equal(done.moved, d.size);
  assert.equal(done.digest, d.digest);
});

Deno.test("upload progress: a streamed PATCH counts bytes as they go out, sized chunks per chunk", async () => {
  const reg = await startRegistry();
  try {
    const data = crypto.getRandomValues(new Uint8Array(65536));
    const blob = new Uint8Array(12 * MiB + 5);
    for (let off = 0; off < blob.length; off += data.length) {
      blob.set(data.subarray(0, blob.length - off), off);
    }
    blob[0] ^= 1;
    const desc = {
      mediaType: "application/octet-stream",
      digest: await digestOf(blob),
      size: blob.length,
    };
    const source = (offset: number) =>
      Promise.resolve({ stream: new Blob([blob.subarray(offset)]).stream(), offset });
    for (const chunkSize of [undefined, 4 * MiB]) {
      const store = await RegistryStore.open(
        parseRegistryReference(`oci://${reg.host}/progress/c${chunkSize ?? 0}`),
        { plainHttp: true, chunkSize },
      );
      try {
        const seen: number[] = [];
        await store.push(desc, source, (n) => seen.push(n));
        assert.equal(seen.at(-1), blob.length);
        const steps = seen.map((n, i) => n - (seen[i - 1] ?? 0));
        assert.ok(steps.every((s) => s > 0), "never backwards");
        if (chunkSize === undefined) {
          // 32 KiB pieces, each counted as the network takes it.
          assert.ok(Math.max(...steps) <= 32 * 1024, `largest step ${Math.max(...steps)}`);
          assert.ok(seen.length >= 384, `${seen.length} reports`);
        } else {
          // fetch sends a body with Content-Length whole and says nothing until the registry
          // answers: one report per chunk (see README, "--chunk-size").
          assert.deepEqual(seen, [4 * MiB, 8 * MiB, 12 * MiB, 12 * MiB + 5]);
        }
      } finally {
        await store.close();
      }
    }

    // A slow source: its first 96 KiB must show as progress before it sends any more (with
    // 1 MiB source reads the upload waited for a whole MiB first, and this stalled).
    const store = await RegistryStore.open(
      parseRegistryReference(`oci://${reg.host}/progress/slow`),
      { plainHttp: true },
    );
    try {
      let seenEarly!: () => void;
      let stalled = false;
      const early = new Promise<void>((r) => seenEarly = r);
      const slow = () => {
        let sent = 0;
        const stream = new ReadableStream<Uint8Array>({
          async pull(c) {
            if (sent === 96 * 1024) {
              const timeout = new Promise<void>((r) =>
                setTimeout(() => {
                  stalled = true;
                  r();
                }, 3000)
              );
              await Promise.race([early, timeout]);
            }
            if (sent >= blob.length) return c.close();
            const n = Math.min(16 * 1024, blob.length - sent);
            c.enqueue(blob.slice(sent, sent + n));
            sent += n;
          },
        });
        return Promise.resolve({ stream, offset: 0 });
      };
      const seen: number[] = [];
      await store.push(desc, slow, (n) => {
        seen.push(n);
        if (n >= 64 * 1024) seenEarly();
      });
      assert.ok(!stalled, "no progress was reported before the source sent more than 96 KiB");
      assert.ok(seen[0] <= 96 * 1024, `first report at ${seen[0]}`);
      assert.equal(seen.at(-1), blob.length);
    } finally {
      await store.close();
    }
  } finally {
    await reg.stop();
  }
});

Deno.test("progress: a flood of 32 KiB reports keeps few samples and the right rate", () => {
  const c = clock();
  const tally = new Tally(c.now);
  const d = desc(1, 8 * 1024 * MiB);
  tally.take({ type: "blob-start", desc: d, n: 1, total: 1, role: "layer" });
  const started = performance.now();
  // 6 GiB at 1 GiB/s in 32 KiB reports: 196,608 of them, 0.03 ms apart.
  for (let i = 1; i <= 196_608; i++) {
    c.advance(6000 / 196_608);
    tally.take({ type: "blob-progress", desc: d, bytes: i * 32 * 1024 });
  }
  const ms = performance.now() - started;
  assert.ok(ms < 2000, `${ms} ms for the reports`);
  const rate = tally.rate()!;
  assert.ok(Math.abs(rate - 1024 * MiB) / (1024 * MiB) < 0.01, `rate ${rate}`);
  const t = tally.active.get(d.digest)!;
  assert.ok(Math.abs(t.rate.perSecond(c.now())! - 1024 * MiB) / (1024 * MiB) < 0.01);
});
