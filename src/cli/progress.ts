// What a copy shows while it runs (--progress=auto|bars|lines|json):
//
// - bars: on a terminal, one line per active transfer and a total line (bytes, rate, ETA),
//   each cut to the terminal's width (re-read at every redraw, and at once on SIGWINCH),
//   redrawn in one write at most ten times a second, erased before every log line and for
//   good on exit, interrupt or error;
// - lines: without a terminal, one plain line every 10 s while blobs are moving;
// - json: one JSON object per line on stderr for every event (docs/EVENTS.md), and no other
//   text there.
//
// All three share a Tally: what was planned, what was present, what moved, and the rates,
// which count only bytes moved by this run (a resumed download's kept part is not).
import type { BlobRole, CopyEvent, CopyStats } from "../copy.ts";
import type { Descriptor } from "../media.ts";
import {
  formatBytes,
  type Level,
  type Logger,
  type Overlay,
  shortDigest,
  writeStderr,
} from "./log.ts";
import { cursorUp, displayWidth, ERASE_DOWN, fitWidth, rowsOf, terminalColumns } from "./term.ts";

/** How the copy reports progress (--progress). */
export type ProgressMode = "auto" | "bars" | "lines" | "json";
export const PROGRESS_MODES: readonly ProgressMode[] = ["auto", "bars", "lines", "json"];

/** The JSON event schema's version (the `v` of every event). */
export const EVENTS_VERSION = 1;

/** Blobs smaller than this finish too quickly to be worth a bar (they count in the total). */
const MIN_BAR_SIZE = 1024 * 1024;
/** Rates are measured over this much recent time. */
const RATE_WINDOW_MS = 5000;

/**
 * A rate over a sliding window of (time, bytes) samples, one kept per 100 ms at most (a fast
 * copy reports every 32 KiB: tens of thousands of times a second).
 */
class Rate {
  #samples: [number, number][] = [];
  #latest?: [number, number];

  /** Note that `bytes` (a running count) were reached at `now`. */
  add(now: number, bytes: number): void {
    const s = this.#samples;
    const last = s[s.length - 1];
    if (last && bytes < (this.#latest?.[1] ?? last[1])) s.length = 0; // went back: start over
    this.#latest = [now, bytes];
    if (s.length > 0 && now - s[s.length - 1][0] < 100) return;
    s.push([now, bytes]);
    while (s.length > 2 && now - s[1][0] >= RATE_WINDOW_MS) s.shift();
  }

  /** Bytes per second over the window; undefined before there is half a second of it. */
  perSecond(now: number): number | undefined {
    const s = this.#samples;
    if (s.length === 0 || !this.#latest) return undefined;
    const [t0, b0] = s[0];
    const ms = now - t0;
    return ms >= 500 ? ((this.#latest[1] - b0) * 1000) / ms : undefined;
  }
}

/** One blob being transferred. */
export interface Transfer {
  desc: Descriptor;
  label: string;
  /** Where the blob has got to (offset of the next byte). */
  bytes: number;
  /** Bytes kept from an earlier run that this transfer continues from. */
  resumedAt: number;
  started: number;
  rate: Rate;
}

/** Counts for the whole copy, fed with every CopyEvent. */
export class Tally {
  /** Bytes of all blobs the graph needs (from the plan event). */
  planned = 0;
  plannedBlobs = 0;
  /** Bytes of blobs found at the destination or mounted: nothing moved for them. */
  present = 0;
  /** Bytes of kept partial downloads that transfers continued from. */
  resumed = 0;
  /** Bytes of blobs finished by this run, less their resumed parts. */
  movedDone = 0;
  blobsDone = 0;
  readonly active = new Map<string, Transfer>();
  readonly started: number;
  #rate = new Rate();

  constructor(readonly now: () => number = () => performance.now()) {
    this.started = now();
  }

  /** Take one event of the copy into account; returns the transfer it concerns, if any. */
  take(e: CopyEvent): Transfer | undefined {
    const now = this.now();
    switch (e.type) {
      case "plan":
        this.planned = e.bytes;
        this.plannedBlobs = e.blobs;
        return undefined;
      case "blob-start": {
        const t: Transfer = {
          desc: e.desc,
          label: blobLabel(e),
          bytes: 0,
          resumedAt: 0,
          started: now,
          rate: new Rate(),
        };
        t.rate.add(now, 0);
        this.active.set(e.desc.digest, t);
        return t;
      }
      case "blob-resume": {
        const t = this.active.get(e.desc.digest);
        if (!t) return undefined;
        this.resumed += e.offset - t.resumedAt;
        t.resumedAt = e.offset;
        t.bytes = Math.max(t.bytes, e.offset);
        t.rate = new Rate();
        t.rate.add(now, t.bytes);
        return t;
      }
      case "blob-progress": {
        const t = this.active.get(e.desc.digest);
        if (!t) return undefined;
        t.bytes = e.bytes;
        t.rate.add(now, e.bytes);
        this.#rate.add(now, this.moved());
        return t;
      }
      case "blob-done": {
        const t = this.active.get(e.desc.digest);
        this.active.delete(e.desc.digest);
        this.movedDone += e.moved;
        this.blobsDone++;
        this.#rate.add(now, this.moved());
        return t;
      }
      case "blob-skip":
        this.present += e.desc.size;
        this.blobsDone++;
        return undefined;
      default:
        return undefined;
    }
  }

  /** Bytes moved by this run so far, finished blobs and transfers under way. */
  moved(): number {
    let n = this.movedDone;
    for (const t of this.active.values()) n += Math.max(0, t.bytes - t.resumedAt);
    return n;
  }

  /** Bytes of the planned total that are at the destination or on their way. */
  done(): number {
    // Kept parts of resumed downloads are in `resumed`, finished or not.
    return this.present + this.resumed + this.moved();
  }

  /** Bytes per second moved by the whole copy, over the last few seconds. */
  rate(): number | undefined {
    return this.#rate.perSecond(this.now());
  }

  /** Seconds until the planned bytes are all there at the current rate. */
  eta(): number | undefined {
    const rate = this.rate();
    if (!rate || rate <= 0 || this.planned === 0) return undefined;
    return Math.max(0, this.planned - this.done()) / rate;
  }
}

/** `layer 2/5`, `config`, `blob 1/1`. */
function blobLabel(e: { role: BlobRole; n: number; total: number }): string {
  return e.role === "config" ? "config" : `${e.role} ${e.n}/${e.total}`;
}

/** Seconds as `7s`, `1m05s`, `2h03m`. */
export function formatEta(seconds: number): string {
  const s = Math.ceil(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

function formatRate(rate: number | undefined): string {
  return rate === undefined ? "" : `${formatBytes(Math.round(rate))}/s`;
}

/** What the copy command tells whichever display was chosen. */
export interface ProgressDisplay {
  /** One event of the copy. */
  event(e: CopyEvent): void;
  /** A retry line (`! retry N of M: …`). */
  retry(line: string): void;
  /** The copy is about to start: what is copied where. */
  begin(src: string, dst: string, root: Descriptor): void;
  /** The copy is done: the counts, and the tag written if any. */
  summary(stats: CopyStats, root: Descriptor, tag?: string): void;
  /** Stop drawing and timers (idempotent). */
  stop(): void;
}

/** Bars and lines log retries as they always have; json makes them events. */
abstract class HumanDisplay implements ProgressDisplay {
  readonly tally: Tally;
  constructor(protected readonly logger: Logger, now?: () => number) {
    this.tally = new Tally(now);
  }
  event(e: CopyEvent): void {
    this.tally.take(e);
  }
  retry(line: string): void {
    this.logger.info(line);
  }
  begin(): void {}
  summary(): void {}
  abstract stop(): void;
}

/**
 * Lines that make up the bars display at `columns` wide, each at most `columns - 1` wide (the
 * last column is left free so that no terminal wraps), at most `maxLines` of them.
 */
export function renderBars(tally: Tally, columns: number, maxLines = 20): string[] {
  const width = Math.max(1, columns - 1);
  const now = tally.now();
  const lines: string[] = [];
  const shown = [...tally.active.values()].filter((t) => t.desc.size >= MIN_BAR_SIZE);
  const room = Math.max(1, maxLines - 1);
  for (const [i, t] of shown.entries()) {
    if (i === room - 1 && shown.length > room) {
      lines.push(fitWidth(`... and ${shown.length - i} more transfers`, width));
      break;
    }
    lines.push(barLine(t, now, width));
  }
  if (tally.active.size > 0 || lines.length > 0) lines.push(totalLine(tally, width));
  return lines;
}

/** A bar `[=====     ]` of `cells` cells inside the brackets. */
function bar(frac: number, cells: number): string {
  const filled = Math.min(cells, Math.floor(frac * cells));
  return `[${"=".repeat(filled)}${" ".repeat(cells - filled)}]`;
}

/** The first candidate layout that fits `width`, with a bar of at least 8 cells if it has one. */
function layout(width: number, candidates: [string, string][], frac: number): string {
  for (const [left, right] of candidates) {
    const fixed = displayWidth(left) + displayWidth(right) + (left ? 1 : 0) + (right ? 1 : 0);
    const cells = Math.min(40, width - fixed - 2);
    if (cells >= 8) return [left, bar(frac, cells), right].filter((s) => s).join(" ");
  }
  for (const [left, right] of candidates) {
    const text = [left, right].filter((s) => s).join(" ");
    if (displayWidth(text) <= width) return text;
  }
  const [left, right] = candidates[candidates.length - 1];
  return fitWidth([left, right].filter((s) => s).join(" "), width);
}

function barLine(t: Transfer, now: number, width: number): string {
  const size = t.desc.size;
  const frac = size === 0 ? 1 : Math.min(1, t.bytes / size);
  const rate = t.rate.perSecond(now);
  const eta = rate && rate > 0 ? ` ETA ${formatEta((size - t.bytes) / rate)}` : "";
  const pct = `${Math.floor(frac * 100)}%`;
  const resume = t.resumedAt > 0 ? `resuming at ${formatBytes(t.resumedAt)}` : "";
  const r = formatRate(rate);
  const amounts = `${formatBytes(t.bytes)} / ${formatBytes(size)}`;
  const short = shortDigest(t.desc.digest);
  const join = (...parts: string[]) => parts.filter((s) => s).join(" ");
  return layout(width, [
    [join(t.label, short), join(amounts, r + eta, resume)],
    [short, join(amounts, r, resume)],
    [short, join(pct, r, resume ? `resumed@${formatBytes(t.resumedAt)}` : "")],
    [t.label, join(pct, r)],
    [short.slice(short.indexOf(":") + 1, short.indexOf(":") + 9), pct],
  ], frac);
}

function totalLine(tally: Tally, width: number): string {
  const done = tally.done();
  const planned = Math.max(tally.planned, done);
  const frac = planned === 0 ? 0 : done / planned;
  const rate = formatRate(tally.rate());
  const eta = tally.eta();
  const etaText = eta === undefined ? "" : `ETA ${formatEta(eta)}`;
  const blobs = `${tally.blobsDone}/${tally.plannedBlobs} blobs`;
  const amounts = `${formatBytes(done)} / ${formatBytes(planned)}`;
  const pct = `${Math.floor(frac * 100)}%`;
  const join = (...parts: string[]) => parts.filter((s) => s).join(" ");
  return layout(width, [
    ["total", join(amounts, blobs, rate, etaText)],
    ["total", join(amounts, rate, etaText)],
    ["total", join(pct, rate, etaText)],
    ["total", join(pct, etaText)],
    ["", pct],
  ], frac);
}

/**
 * The bars display on a terminal. It is the logger's Overlay: log lines are written above
 * it, erase + line + redraw in one write.
 */
export class Bars extends HumanDisplay implements Overlay {
  /** Display width of each line drawn now, and the columns when they were drawn. */
  #drawn: number[] = [];
  #drawnColumns = 0;
  #last = 0;
  #timer?: ReturnType<typeof setTimeout>;
  #tick?: ReturnType<typeof setInterval>;
  #stopped = false;
  #onResize = () => this.#refresh();

  constructor(
    logger: Logger,
    private readonly size: () => { columns: number; rows: number } = consoleSize,
    private readonly write: (text: string) => void = writeStderr,
    now?: () => number,
  ) {
    super(logger, now);
    logger.overlay = this;
    if (Deno.build.os !== "windows") {
      try {
        Deno.addSignalListener("SIGWINCH", this.#onResize);
      } catch { /* no such signal here: the size is re-read at every redraw anyway */ }
    }
    // Rates and ETAs move on even when no bytes do (a stall shows as a falling rate).
    const tick = setInterval(() => this.#refresh(), 1000);
    Deno.unrefTimer(tick);
    this.#tick = tick;
  }

  override event(e: CopyEvent): void {
    if (this.#stopped) return;
    this.tally.take(e);
    // The last transfer's end erases at once; everything else waits for the next frame.
    if (this.tally.active.size === 0 && e.type === "blob-done") this.#refresh();
    else this.#schedule();
  }

  #schedule(): void {
    const now = performance.now();
    if (now - this.#last >= 100) this.#refresh();
    else if (this.#timer === undefined) {
      const timer = setTimeout(() => {
        this.#timer = undefined;
        this.#refresh();
      }, 100);
      Deno.unrefTimer(timer);
      this.#timer = timer;
    }
  }

  /** Erase and draw again, in one write. */
  #refresh(): void {
    if (this.#stopped) return;
    this.#last = performance.now();
    const text = this.erase() + this.draw();
    if (text) this.write(text);
  }

  erase(): string {
    if (this.#drawn.length === 0) return "";
    const columns = this.size().columns;
    // Lines drawn at a larger width may now be re-flowed over several rows each.
    const rows = columns < this.#drawnColumns
      ? this.#drawn.reduce((n, w) => n + rowsOf(w, columns), 0)
      : this.#drawn.length;
    this.#drawn = [];
    return cursorUp(rows) + ERASE_DOWN;
  }

  draw(): string {
    if (this.#stopped) return "";
    const { columns, rows } = this.size();
    const lines = renderBars(this.tally, columns, Math.max(2, rows - 2));
    this.#drawn = lines.map(displayWidth);
    this.#drawnColumns = columns;
    return lines.length === 0 ? "" : lines.join("\n") + "\n";
  }

  clear(): void {
    const text = this.erase();
    if (text) this.write(text);
  }

  stop(): void {
    if (this.#stopped) return;
    this.clear();
    this.#stopped = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    if (this.#tick !== undefined) clearInterval(this.#tick);
    this.#timer = this.#tick = undefined;
    if (Deno.build.os !== "windows") {
      try {
        Deno.removeSignalListener("SIGWINCH", this.#onResize);
      } catch { /* never added */ }
    }
    if (this.logger.overlay === this) this.logger.overlay = undefined;
  }
}

function consoleSize(): { columns: number; rows: number } {
  try {
    const { columns, rows } = Deno.consoleSize();
    if (columns > 0 && rows > 0) return { columns, rows };
  } catch { /* not a terminal */ }
  return { columns: terminalColumns(), rows: 24 };
}

/**
 * Without a terminal: one plain line every `intervalMs` (10 s) while the copy runs, so a
 * long copy is never silent; nothing for copies that finish sooner.
 */
export class Lines extends HumanDisplay {
  #timer?: ReturnType<typeof setTimeout>;

  constructor(logger: Logger, intervalMs = 10_000, now?: () => number) {
    super(logger, now);
    const timer = setInterval(() => {
      const line = this.line();
      if (line) logger.info(line);
    }, intervalMs);
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  /** The periodic line: `progress: 34.0 MiB of 120.0 MiB (28%), 2/7 blobs, 12.1 MiB/s, ETA 7s`. */
  line(): string | undefined {
    const t = this.tally;
    if (t.planned === 0 && t.active.size === 0) return undefined;
    const done = t.done();
    const planned = Math.max(t.planned, done);
    const pct = planned === 0 ? 100 : Math.floor((done / planned) * 100);
    const parts = [
      `progress: ${formatBytes(done)} of ${formatBytes(planned)} (${pct}%)`,
      `${t.blobsDone}/${t.plannedBlobs} blobs`,
    ];
    const rate = t.rate();
    if (rate !== undefined) parts.push(formatRate(rate));
    const eta = t.eta();
    if (eta !== undefined) parts.push(`ETA ${formatEta(eta)}`);
    return parts.join(", ");
  }

  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

/** Non-ASCII controls JSON.stringify leaves raw (DEL, C1): written as \u escapes too. */
const JSON_RAW_CONTROL = /[\u007f-\u009f\u2028\u2029]/g;

/**
 * --progress=json: one JSON object per line on stderr for every event (docs/EVENTS.md),
 * `blob-progress` at most every `progressMs` (500 ms) per blob. It is the logger's sink
 * too: warnings, debug and trace lines become `log` events, the final error an `error`
 * event, and the human step lines (which the events replace) are dropped.
 */
export class JsonEvents implements ProgressDisplay {
  readonly tally: Tally;
  #lastProgress = new Map<string, number>();

  constructor(
    logger: Logger,
    private readonly write: (text: string) => void = writeStderr,
    private readonly progressMs = 500,
    now?: () => number,
  ) {
    this.tally = new Tally(now);
    logger.sink = (level, message, exitCode) => this.#log(level, message, exitCode);
  }

  /** Write one event: `{"v":1,"type":…,"time":…,"elapsed":…, …fields}`. */
  emit(type: string, fields: Record<string, unknown> = {}): void {
    const elapsed = Math.round(this.tally.now() - this.tally.started) / 1000;
    const json = JSON.stringify({
      v: EVENTS_VERSION,
      type,
      time: new Date().toISOString(),
      elapsed,
      ...fields,
    }).replace(JSON_RAW_CONTROL, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
    this.write(json + "\n");
  }

  #log(level: Level | "trace", message: string, exitCode?: number): void {
    if (level === "error") {
      this.emit("error", exitCode === undefined ? { message } : { message, exit: exitCode });
    } else if (level !== "info") {
      this.emit("log", { level, message });
    }
  }

  event(e: CopyEvent): void {
    const t = this.tally.take(e);
    const blob = (d: Descriptor) => ({ digest: d.digest, mediaType: d.mediaType, size: d.size });
    switch (e.type) {
      case "plan":
        this.emit("plan", { blobs: e.blobs, bytes: e.bytes });
        break;
      case "blob-start":
        this.emit("blob-start", { ...blob(e.desc), role: e.role, n: e.n, total: e.total });
        break;
      case "blob-resume":
        this.emit("blob-resume", { ...blob(e.desc), offset: e.offset });
        break;
      case "blob-progress": {
        const now = this.tally.now();
        const last = this.#lastProgress.get(e.desc.digest);
        if (last !== undefined && now - last < this.progressMs) break;
        if (last === undefined && t && now - t.started < this.progressMs) break;
        this.#lastProgress.set(e.desc.digest, now);
        const rate = t?.rate.perSecond(now);
        this.emit("blob-progress", {
          digest: e.desc.digest,
          size: e.desc.size,
          bytes: e.bytes,
          ...(rate === undefined ? {} : { rate: Math.round(rate) }),
        });
        break;
      }
      case "blob-done":
        this.#lastProgress.delete(e.desc.digest);
        this.emit("blob-done", {
          ...blob(e.desc),
          moved: e.moved,
          seconds: t ? Math.round(this.tally.now() - t.started) / 1000 : 0,
        });
        break;
      case "blob-skip":
        this.emit(e.reason === "mounted" ? "blob-mount" : "blob-skip", {
          ...blob(e.desc),
          role: e.role,
          n: e.n,
          total: e.total,
          ...(e.reason === "mounted" ? {} : { reason: "exists" }),
        });
        break;
      case "nondistributable-skip":
        for (const d of e.descs) this.emit("blob-skip", { ...blob(d), reason: "nondistributable" });
        break;
      case "manifest-done":
        this.emit("manifest-written", blob(e.desc));
        break;
      case "manifest-skip":
        this.emit("manifest-skip", blob(e.desc));
        break;
    }
  }

  retry(line: string): void {
    const m = /^! retry (\d+) of (\d+)/.exec(line);
    this.emit("retry", {
      ...(m ? { attempt: Number(m[1]), of: Number(m[2]) } : {}),
      message: line.replace(/^! /, ""),
    });
  }

  begin(src: string, dst: string, root: Descriptor): void {
    this.emit("start", {
      src,
      dst,
      root: { digest: root.digest, mediaType: root.mediaType, size: root.size },
    });
  }

  summary(stats: CopyStats, root: Descriptor, tag?: string): void {
    this.emit("summary", {
      digest: root.digest,
      mediaType: root.mediaType,
      ...(tag === undefined ? {} : { tag }),
      blobsCopied: stats.blobsCopied,
      blobsPresent: stats.blobsSkipped,
      blobsMounted: stats.blobsMounted,
      blobsLeftOut: stats.nonDistributable.length,
      bytesMoved: stats.bytesMoved,
      bytesPresent: stats.bytesPresent,
      bytesResumed: stats.bytesResumed,
      manifestsWritten: stats.manifestsCopied,
      manifestsPresent: stats.manifestsSkipped,
      seconds: Math.round(this.tally.now() - this.tally.started) / 1000,
    });
  }

  stop(): void {}
}

/**
 * The display for `mode`: auto is bars when stderr is a terminal and TERM is not `dumb`,
 * lines otherwise. Nothing (undefined) for bars and lines when the log level hides info
 * lines; json always.
 */
export function createProgress(mode: ProgressMode, logger: Logger): ProgressDisplay | undefined {
  if (mode === "json") return new JsonEvents(logger);
  if (!logger.enabled("info")) return undefined;
  if (mode === "auto") {
    mode = Deno.stderr.isTerminal() && Deno.env.get("TERM") !== "dumb" ? "bars" : "lines";
  }
  return mode === "bars" ? new Bars(logger) : new Lines(logger);
}
