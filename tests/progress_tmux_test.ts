// The progress display on a real terminal: the CLI runs inside tmux (a private server per
// test file) at 40, 80 and 200 columns while it copies an image from the real registry,
// slowed down by the chaos proxy's trickle, into another repository of that registry (a
// push: the upload bars follow the bytes as they go out). The screen is read with
// `tmux capture-pane` while the copy runs and after it ends.
//
// What is asserted on every screen: no line of the display is wider than the terminal
// (captured with -J, so a line the terminal wrapped shows as one long line), there is at
// most one total line (a stale bar left behind by a redraw would make two), and the display
// sits below the log lines. After the copy: no bar lines at all. After Ctrl-C: the error line,
// exit 130, nothing drawn after it. After a resize: the new width is kept at once.
import assert from "node:assert/strict";
import { join } from "node:path";
import { type ChaosProxy, type Rule as ChaosRule, startChaosProxy } from "./fixtures/chaos.ts";
import { umoci, umociCommand } from "./fixtures/cli.ts";
import { buildRandomImage, withTempDir } from "./fixtures/images.ts";
import { type RunningRegistry, startRegistry } from "./fixtures/registry.ts";

const MiB = 1024 * 1024;

/** Lines the CLI logs (kept, may wrap); every other non-empty line belongs to the display. */
const LOG_LINE =
  /^(\[[^\]]*\] )?(Registry address|Checking|Copying|Skipping|Tagging|Successfully|Copied|progress:|error:|EXIT=|Images:|sha256:[0-9a-f]{64}( |$))/;
/** A line of the display: a bar, a total, or the "and N more" line. */
const DISPLAY_LINE = /(^total\b)|(\[[=> ]*\])|(\d+%)|(^\.\.\. and \d+ more)/;

const quote = (a: string) => `'${a.replaceAll("'", `'\\''`)}'`;

/** A tmux server of our own, so that tests never touch anyone else's sessions. */
class Tmux {
  readonly socket = `umoci-progress-${crypto.randomUUID().slice(0, 8)}`;

  async run(...args: string[]): Promise<string> {
    const out = await new Deno.Command("tmux", {
      args: ["-L", this.socket, "-f", "/dev/null", ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    if (!out.success) {
      throw new Error(`tmux ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
    }
    return text;
  }

  /** Start `command` in a detached session of `columns` × `rows`. */
  async start(command: string, columns: number, rows = 20, env: Record<string, string> = {}) {
    const exports = Object.entries(env).map(([k, v]) => `export ${k}=${quote(v)}; `).join("");
    // The pane stays after the command ends, so the final screen can be read.
    await this.run(
      "new-session",
      "-d",
      "-s",
      "t",
      "-x",
      String(columns),
      "-y",
      String(rows),
      `${exports}${command}; echo "EXIT=$?"; sleep 60`,
    );
  }

  /**
   * The screen and the history above it (-S -), with wrapped lines joined (-J) so that a
   * line the terminal wrapped shows as one.
   */
  async screen(): Promise<string[]> {
    const text = await this.run("capture-pane", "-p", "-J", "-S", "-", "-t", "t");
    // `^C` is the terminal's own echo of Ctrl-C, not the CLI's output.
    return text.split("\n").map((l) => l.trimEnd()).filter((l) => l !== "^C");
  }

  async kill(): Promise<void> {
    await this.run("kill-server").catch(() => {});
  }
}

interface Setup {
  reg: RunningRegistry;
  proxy: ChaosProxy;
  dir: string;
}

/**
 * A registry holding `src/app:v1` (two layers, 4 and 2 MiB, and a config), and the chaos
 * proxy in front of it slowing every blob download to a few MiB/s, so that a copy from
 * the proxy to the registry takes a few seconds. `rules` go before the trickle.
 */
async function withSetup(
  fn: (s: Setup) => Promise<void>,
  rules: ChaosRule[] = [],
): Promise<void> {
  const reg = await startRegistry();
  try {
    await withTempDir(async (dir) => {
      const src = join(dir, "src");
      await buildRandomImage(src, "v1", { layerSizes: [4 * MiB, 2 * MiB], raw: true });
      const pushed = await umoci([
        "copy",
        "--plain-http",
        `${src}:v1`,
        `oci://${reg.host}/src/app:v1`,
      ]);
      assert.equal(pushed.code, 0, pushed.stderr);
      const proxy = await startChaosProxy(reg.url, [...rules, {
        method: "GET",
        path: /\/blobs\/sha256:/,
        times: Infinity,
        fault: { kind: "trickle", bytesPerChunk: 128 * 1024, delayMs: 60 },
      }]);
      try {
        await fn({ reg, proxy, dir });
      } finally {
        await proxy.close();
      }
    });
  } finally {
    await reg.stop();
  }
}

let repoCount = 0;

/** The shell command that copies the slowed source into a new repository. */
function copyCommand(s: Setup, extra: string[] = []): string {
  const dst = `oci://${s.reg.host}/dst/n${++repoCount}-${crypto.randomUUID().slice(0, 6)}:v1`;
  return [
    ...umociCommand(),
    "copy",
    ...extra,
    "--plain-http",
    `oci://${s.proxy.host}/src/app:v1`,
    dst,
  ]
    .map(quote).join(" ");
}

/** Assert what must hold on every screen; returns the display's lines. */
function checkScreen(screen: string[], columns: number, when: string): string[] {
  const text = screen.join("\n");
  const display = screen.filter((l) => l !== "" && !LOG_LINE.test(l));
  for (const line of display) {
    assert.ok(
      line.length <= columns - 1,
      `${when}: a display line of ${line.length} columns at ${columns}: ${line}\n${text}`,
    );
    assert.match(line, DISPLAY_LINE, `${when}: an unexpected line:\n${text}`);
  }
  assert.ok(
    display.filter((l) => /^total\b/.test(l)).length <= 1,
    `${when}: stale total lines:\n${text}`,
  );
  // The display is below every log line (a stale bar between log lines would show here).
  const lastLog = screen.findLastIndex((l) => LOG_LINE.test(l));
  const firstDisplay = screen.findIndex((l) => l !== "" && !LOG_LINE.test(l));
  if (firstDisplay >= 0) {
    assert.ok(firstDisplay > lastLog, `${when}: a display line above a log line:\n${text}`);
  }
  return display;
}

/** Poll the screen until `done` says so (or `ms` pass), checking every screen on the way. */
async function watch(
  tmux: Tmux,
  columns: () => number,
  done: (screen: string[], display: string[]) => boolean,
  ms: number,
  when: string,
): Promise<{ screen: string[]; sawDisplay: boolean }> {
  const until = Date.now() + ms;
  let sawDisplay = false;
  for (;;) {
    const screen = await tmux.screen();
    const display = checkScreen(screen, columns(), when);
    if (display.some((l) => /^total\b/.test(l))) sawDisplay = true;
    if (done(screen, display)) return { screen, sawDisplay };
    if (Date.now() > until) {
      throw new Error(`${when}: not reached in ${ms} ms; screen:\n${screen.join("\n")}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

const exited = (screen: string[]) => screen.some((l) => /^EXIT=\d+$/.test(l));

/**
 * Poll until a screen passes checkScreen at `columns` with a total line drawn (or the copy
 * has ended), within `ms`; returns that screen.
 */
async function settle(tmux: Tmux, columns: number, ms: number, when: string): Promise<string[]> {
  const until = Date.now() + ms;
  for (;;) {
    const screen = await tmux.screen();
    try {
      const display = checkScreen(screen, columns, when);
      if (exited(screen) || display.some((l) => /^total\b/.test(l))) return screen;
      if (Date.now() > until) throw new Error(`${when}: no display:\n${screen.join("\n")}`);
    } catch (e) {
      if (Date.now() > until) throw e;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** After the copy: exit 0, the digest, the summary, and not a single display line. */
function checkFinished(screen: string[], columns: number) {
  const text = screen.join("\n");
  assert.ok(screen.includes("EXIT=0"), text);
  assert.ok(screen.some((l) => /^sha256:[0-9a-f]{64}$/.test(l)), text);
  assert.ok(screen.some((l) => /^Copied 3 blobs \(6\.0 MiB\)/.test(l)), text);
  const display = checkScreen(screen, columns, "after the copy");
  assert.deepEqual(display, [], `stale display lines after the copy:\n${text}`);
}

for (const columns of [40, 80, 200]) {
  Deno.test(`tmux: a push at ${columns} columns draws lines that fit and leaves none behind`, async () => {
    await withSetup(async (s) => {
      const tmux = new Tmux();
      try {
        await tmux.start(copyCommand(s), columns);
        const { screen, sawDisplay } = await watch(
          tmux,
          () => columns,
          exited,
          30_000,
          `${columns} columns`,
        );
        assert.ok(sawDisplay, "the total line was drawn while the copy ran");
        checkFinished(screen, columns);
      } finally {
        await tmux.kill();
      }
    });
  });
}

Deno.test("tmux: bars drawn at the top of a fresh pane before any line leave nothing in the scrollback", async () => {
  // The copy is slowed where the display would otherwise come late: the source manifest (so
  // the first blob starts well after the process did) and, through a second proxy in front
  // of the destination, its blob checks (so the planned total is drawn, from a timer, before
  // any line is let out). The pane is fresh, so that display sits on its top row, where
  // erasing it must not push it into tmux's history (scroll-on-clear).
  await withSetup(async (s) => {
    const slowChecks = await startChaosProxy(s.reg.url, [
      { method: "HEAD", path: /\/blobs\//, times: 3, fault: { kind: "delay", ms: 500 } },
    ]);
    const tmux = new Tmux();
    try {
      const command = [
        ...umociCommand(),
        "copy",
        "--plain-http",
        `oci://${s.proxy.host}/src/app:v1`,
        `oci://${slowChecks.host}/dst/top${++repoCount}:v1`,
      ].map(quote).join(" ");
      await tmux.start(command, 40);
      const { screen, sawDisplay } = await watch(tmux, () => 40, exited, 30_000, "at the top");
      assert.ok(sawDisplay, `the total line was drawn while the copy ran:\n${screen.join("\n")}`);
      checkFinished(screen, 40);
      assert.match(
        screen.find((l) => l !== "") ?? "",
        /^Registry address:/,
        `the first line on the pane and in its history is a log line:\n${screen.join("\n")}`,
      );
    } finally {
      await tmux.kill();
      await slowChecks.close();
    }
  }, [{ method: "GET", path: /\/manifests\//, times: 1, fault: { kind: "delay", ms: 400 } }]);
});

Deno.test("tmux: a job's bars name their images and its total covers the whole job", async () => {
  await withSetup(async (s) => {
    // A second image (3 MiB) beside src/app:v1 (6 MiB), both read through the slow proxy.
    const other = join(s.dir, "other");
    await buildRandomImage(other, "v1", { layerSizes: [3 * MiB], raw: true });
    const pushed = await umoci([
      "copy",
      "--plain-http",
      `${other}:v1`,
      `oci://${s.reg.host}/src/other:v1`,
    ]);
    assert.equal(pushed.code, 0, pushed.stderr);
    const list = join(s.dir, "images.txt");
    const names = ["app", "other"].map((r) => `oci://${s.proxy.host}/src/${r}:v1`);
    await Deno.writeTextFile(list, names.join("\n") + "\n");
    const command = [
      ...umociCommand(),
      "copy",
      "--plain-http",
      "--images",
      list,
      `oci://${s.reg.host}/job${++repoCount}`,
    ].map(quote).join(" ");
    const tmux = new Tmux();
    const totals: string[] = [];
    const named = new Set<string>();
    try {
      await tmux.start(command, 200);
      const { screen } = await watch(
        tmux,
        () => 200,
        (screen, display) => {
          for (const l of display) {
            if (/^total\b/.test(l)) totals.push(l);
            const m = /^\[127\.0\.0\.1:\d+\/src\/(app|other):v1\] (layer|config)/.exec(l);
            if (m) named.add(m[1]);
          }
          return exited(screen);
        },
        30_000,
        "job",
      );
      const text = screen.join("\n");
      assert.ok(screen.includes("EXIT=0"), text);
      assert.match(text, /Images: 2 copied, 0 already present, 0 failed; 5 blobs/);
      assert.deepEqual(checkScreen(screen, 200, "after the job"), [], text);
    } finally {
      await tmux.kill();
    }
    assert.deepEqual([...named].sort(), ["app", "other"], "bars of both images, named");
    const unit = { B: 1, KiB: 1024, MiB: MiB } as Record<string, number>;
    let most = 0;
    for (const t of totals) {
      const m = /([\d.]+) (B|KiB|MiB) \/ ([\d.]+) (B|KiB|MiB) (\d+)\/(\d+) blobs/.exec(t);
      assert.ok(m, t);
      assert.ok(Number(m[1]) * unit[m[2]] <= Number(m[3]) * unit[m[4]], `done above total: ${t}`);
      assert.ok(Number(m[5]) <= Number(m[6]), `blobs done above total: ${t}`);
      most = Math.max(most, Number(m[3]) * unit[m[4]]);
    }
    // Once both images planned, the total is the job's: 9 MiB and their configs.
    assert.ok(most >= 9 * MiB, `the largest total seen: ${most}\n${totals.join("\n")}`);
  });
});

Deno.test("tmux: a resize is honoured at the next redraw, and no stale rows are left", async () => {
  await withSetup(async (s) => {
    const tmux = new Tmux();
    let columns = 200;
    try {
      await tmux.start(copyCommand(s), columns);
      // At 200 columns the bars carry the blob label and the short digest.
      await watch(
        tmux,
        () => columns,
        (_, display) => display.some((l) => /^layer \d\/2 sha256:[0-9a-f]{12} \[/.test(l)),
        20_000,
        "at 200 columns",
      );
      // The old lines stay on the screen (re-flowed by tmux) until the CLI has seen SIGWINCH
      // and redrawn: within 1.5 s every line must fit, and from then on every screen.
      columns = 40;
      await tmux.run("resize-window", "-t", "t", "-x", "40", "-y", "20");
      const narrow = await settle(tmux, columns, 1500, "after narrowing to 40");
      assert.ok(!exited(narrow), "the copy was still running after the resize");
      const after = Date.now() + 600;
      await watch(
        tmux,
        () => columns,
        (screen) => exited(screen) || Date.now() > after,
        5_000,
        "at 40",
      );
      columns = 120;
      await tmux.run("resize-window", "-t", "t", "-x", "120", "-y", "20");
      // Only a total line laid out for the wide terminal names the blob count.
      const wide = await watch(
        tmux,
        () => columns,
        (screen, display) =>
          exited(screen) || display.some((l) => /^total \[=* *\] .* blobs/.test(l)),
        10_000,
        "after widening to 120",
      );
      const end = exited(wide.screen)
        ? wide
        : await watch(tmux, () => columns, exited, 30_000, "until the end");
      checkFinished(end.screen, columns);
    } finally {
      await tmux.kill();
    }
  });
});

Deno.test("tmux: Ctrl-C erases the bars, prints one error line and exits 130", async () => {
  await withSetup(async (s) => {
    const tmux = new Tmux();
    try {
      await tmux.start(copyCommand(s), 80);
      await watch(
        tmux,
        () => 80,
        (_, display) => display.some((l) => /^total\b/.test(l)),
        20_000,
        "before Ctrl-C",
      );
      await tmux.run("send-keys", "-t", "t", "C-c");
      const { screen } = await watch(tmux, () => 80, exited, 10_000, "after Ctrl-C");
      const text = screen.join("\n");
      const lines = screen.filter((l) => l !== "");
      assert.equal(lines.at(-1), "EXIT=130", text);
      assert.match(
        lines.at(-2)!,
        /^error: interrupted by SIGINT; nothing partial was published/,
        text,
      );
      assert.deepEqual(checkScreen(screen, 80, "after Ctrl-C"), [], `display lines left:\n${text}`);
      // Nothing is drawn later either (no timer survives the exit).
      await new Promise((r) => setTimeout(r, 1200));
      assert.deepEqual(await tmux.screen(), screen);
    } finally {
      await tmux.kill();
    }
  });
});

Deno.test("tmux: TERM=dumb and --progress=lines draw no bars on a terminal", async () => {
  await withSetup(async (s) => {
    for (const [env, extra] of [[{ TERM: "dumb" }, []], [{}, ["--progress=lines"]]] as const) {
      const tmux = new Tmux();
      try {
        await tmux.start(copyCommand(s, [...extra]), 80, 20, env);
        const { screen, sawDisplay } = await watch(
          tmux,
          () => 80,
          exited,
          30_000,
          `${JSON.stringify(env)} ${extra}`,
        );
        assert.ok(!sawDisplay, screen.join("\n"));
        checkFinished(screen, 80);
      } finally {
        await tmux.kill();
      }
    }
  });
});
