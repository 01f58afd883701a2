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
// which count only bytes moved by this run (a resumed download's kept part is not). In a job
// (--images, --all-tags) the Tally covers the whole job: each image's plan adds to the total
// as it arrives, and every event names the image it belongs to (ImageId), passed along or,
// for what the job's shared connections report (retries, traces), taken from the image whose
// work is running (withImage).
import type { AsyncLocalStorage } from "node:async_hooks";
import { envVar } from "../env.ts";
import type { BlobRole, CopyEvent, CopyStats } from "../copy.ts";
import type { Descriptor } from "../media.ts";
import type { AttachedItem } from "../referrers.ts";
import {
  formatBytes,
  type Level,
  type Logger,
  type Overlay,
  shortDigest,
  writeStderr,
} from "./log.ts";
import { displayWidth, eraseRowsAbove, fitWidth, rowsOf, terminalColumns } from "./term.ts";

/** How the copy reports progress (--progress). */
export type ProgressMode = "auto" | "bars" | "lines" | "json";
export const PROGRESS_MODES: readonly ProgressMode[] = ["auto", "bars", "lines", "json"];

/** The JSON event schema's version (the `v` of every event). */
export const EVENTS_VERSION = 1;

/** An image of a job: its name (as on stdout: the images file's line, or the tag) and place. */
export interface ImageId {
  /** The reference as the images file gives it, or the tag for --all-tags. */
  name: string;
  /** Its place in the job's list, from 0. */
  index: number;
  /** How its step lines name it (`[LABEL] Copying …`), for its bars; `name` when absent. */
  label?: string;
}

/** Where an event of a copy comes from, besides the copy itself. */
export interface EventContext {
  /** The image of a job it belongs to. */
  image?: ImageId;
  /** A graph copied for --referrers or --digest-tags after the image itself. */
  attached?: boolean;
}

/** Loaded for jobs only (loadImageContext): node:async_hooks costs a single copy ~10 ms. */
let currentImage: AsyncLocalStorage<ImageId> | undefined;

/** Make withImage work (a job calls this once before its images start). */
export async function loadImageContext(): Promise<void> {
  currentImage ??= new (await import("node:async_hooks")).AsyncLocalStorage<ImageId>();
}

/**
 * Run `fn` as the work of `image`: whatever it causes to be reported without naming an image
 * (a retry of a request made for it, a trace line, a warning) is taken to be that image's.
 * Needs loadImageContext first; without it `fn` just runs.
 */
export function withImage<T>(image: ImageId, fn: () => Promise<T>): Promise<T> {
  return currentImage ? currentImage.run(image, fn) : fn();
}

/** The image whose work is running now (see withImage), if any. */
export function imageNow(): ImageId | undefined {
  return currentImage?.getStore();
}

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
  /** The image of a job it is for. */
  image?: ImageId;
  /** Where the blob has got to (offset of the next byte). */
  bytes: number;
  /** Bytes kept from an earlier run that this transfer continues from. */
  resumedAt: number;
  started: number;
  rate: Rate;
}

/**
 * Counts for the whole copy, fed with every CopyEvent: for a job, of all its images (and of
 * the graphs copied for --referrers and --digest-tags), so that the total grows with each
 * plan and what is done never exceeds it.
 */
export class Tally {
  /** Bytes of all blobs the graphs need (the sum of the plan events so far). */
  planned = 0;
  plannedBlobs = 0;
  /** Bytes of blobs found at the destination or mounted: nothing moved for them. */
  present = 0;
  /** Bytes of kept partial downloads that transfers continued from. */
  resumed = 0;
  /** Bytes of blobs finished by this run, less their resumed parts. */
  movedDone = 0;
  blobsDone = 0;
  /** Transfers under way, by image and digest (transferKey). */
  readonly active = new Map<string, Transfer>();
  /** The images of a job seen so far, by index. */
  readonly images = new Set<number>();
  readonly started: number;
  #rate = new Rate();

  constructor(readonly now: () => number = () => performance.now()) {
    this.started = now();
  }

  /**
   * Take one event of the copy into account (of `image`, in a job); returns the transfer it
   * concerns, if any.
   */
  take(e: CopyEvent, image?: ImageId): Transfer | undefined {
    const now = this.now();
    if (image) this.images.add(image.index);
    const key = transferKey(image, "desc" in e ? e.desc.digest : "");
    switch (e.type) {
      case "plan":
        // Each image of a job, and each graph copied for its referrers, plans its own part.
        this.planned += e.bytes;
        this.plannedBlobs += e.blobs;
        return undefined;
      case "blob-start": {
        const t: Transfer = {
          desc: e.desc,
          label: blobLabel(e),
          image,
          bytes: 0,
          resumedAt: 0,
          started: now,
          rate: new Rate(),
        };
        t.rate.add(now, 0);
        this.active.set(key, t);
        return t;
      }
      case "blob-resume": {
        const t = this.active.get(key);
        if (!t) return undefined;
        this.resumed += e.offset - t.resumedAt;
        t.resumedAt = e.offset;
        t.bytes = Math.max(t.bytes, e.offset);
        t.rate = new Rate();
        t.rate.add(now, t.bytes);
        return t;
      }
      case "blob-progress": {
        const t = this.active.get(key);
        if (!t) return undefined;
        t.bytes = e.bytes;
        t.rate.add(now, e.bytes);
        this.#rate.add(now, this.moved());
        return t;
      }
      case "blob-done": {
        const t = this.active.get(key);
        this.active.delete(key);
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

/** Transfers are told apart by image too: two images of a job may move the same blob. */
function transferKey(image: ImageId | undefined, digest: string): string {
  return image === undefined ? digest : `${image.index} ${digest}`;
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
  /** One event of the copy (of an image of a job, of a graph copied for its referrers). */
  event(e: CopyEvent, ctx?: EventContext): void;
  /** A retry line (`! retry N of M: …`). */
  retry(line: string, image?: ImageId): void;
  /** The copy (of `image`, in a job) is about to start: what is copied where. */
  begin(src: string, dst: string, root: Descriptor, image?: ImageId): void;
  /** The copy (of `image`, in a job) is done: the counts, and the tag written if any. */
  summary(stats: CopyStats, root: Descriptor, tag?: string, image?: ImageId): void;
  /**
   * What --referrers and --digest-tags copied after the image: each referrer and digest tag,
   * copied or found present.
   */
  attached?(item: AttachedItem, image?: ImageId): void;
  /** An image of a job failed (or stopped short because another did). */
  imageFailed?(image: ImageId, message: string, stopped: boolean): void;
  /** A job is done: its images' counts (after every image's summary). */
  jobSummary?(job: JobCounts): void;
  /** Stop drawing and timers (idempotent). */
  stop(): void;
}

/** How the images of a job ended. */
export interface JobCounts {
  images: number;
  copied: number;
  present: number;
  failed: number;
  /** Images that never started or stopped short because the job stopped. */
  notCopied: number;
}

/** Bars and lines log retries as they always have; json makes them events. */
abstract class HumanDisplay implements ProgressDisplay {
  readonly tally: Tally;
  constructor(protected readonly logger: Logger, now?: () => number) {
    this.tally = new Tally(now);
  }
  event(e: CopyEvent, ctx?: EventContext): void {
    this.tally.take(e, ctx?.image ?? imageNow());
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
  // Several images at once (a job): each bar names its image.
  const named = tally.images.size > 1;
  for (const [i, t] of shown.entries()) {
    if (i === room - 1 && shown.length > room) {
      lines.push(fitWidth(`... and ${shown.length - i} more transfers`, width));
      break;
    }
    const image = named ? t.image : undefined;
    lines.push(barLine(t, now, width, image && (image.label ?? image.name)));
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

/**
 * `[name]` of an image, the name cut (ending in `…`) to at most 40% of `width` (and at least
 * 8 columns), so that the bar's own parts keep most of the line.
 */
function imageTag(name: string, width: number): string {
  const room = Math.max(8, Math.floor(width * 0.4)) - 2;
  const cut = displayWidth(name) <= room ? name : fitWidth(name, Math.max(1, room - 1)) + "…";
  return `[${cut}]`;
}

function barLine(t: Transfer, now: number, width: number, image?: string): string {
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
  const hex8 = short.slice(short.indexOf(":") + 1, short.indexOf(":") + 9);
  if (image !== undefined) {
    const name = imageTag(image, width);
    return layout(width, [
      [join(name, t.label, short), join(amounts, r + eta, resume)],
      [join(name, short), join(amounts, r, resume)],
      [join(name, t.label), join(pct, r, resume ? `resumed@${formatBytes(t.resumedAt)}` : "")],
      [join(name, t.label), join(pct, r)],
      [join(name, hex8), pct],
      [name, pct],
    ], frac);
  }
  return layout(width, [
    [join(t.label, short), join(amounts, r + eta, resume)],
    [short, join(amounts, r, resume)],
    [short, join(pct, r, resume ? `resumed@${formatBytes(t.resumedAt)}` : "")],
    [t.label, join(pct, r)],
    [hex8, pct],
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
  // A job's total: every image planned so far (each adds its part as it starts).
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
  }

  override event(e: CopyEvent, ctx?: EventContext): void {
    if (this.#stopped) return;
    this.tally.take(e, ctx?.image ?? imageNow());
    // Rates and ETAs move on even when no bytes do (a stall shows as a falling rate). The
    // tick starts with the first transfer: a run that moves nothing (a re-pull) never calls
    // setInterval, whose first call costs Deno 6-10 ms (it loads its timers then).
    if (this.#tick === undefined && e.type === "blob-start") {
      const tick = setInterval(() => this.#refresh(), 1000);
      Deno.unrefTimer(tick);
      this.#tick = tick;
    }
    // The last transfer's end erases at once; everything else waits for the next frame.
    if (this.tally.active.size === 0 && e.type === "blob-done") this.#refresh();
    else this.#schedule();
  }

  #schedule(): void {
    // Nothing is drawn and nothing would be (no transfer yet): no frame to schedule.
    if (this.tally.active.size === 0 && this.#drawn.length === 0) return;
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
    return eraseRowsAbove(rows);
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

  readonly #intervalMs: number;

  constructor(logger: Logger, intervalMs = 10_000, now?: () => number) {
    super(logger, now);
    this.#intervalMs = intervalMs;
  }

  override event(e: CopyEvent, ctx?: EventContext): void {
    super.event(e, ctx);
    // Started with the first transfer: a run that moves nothing (a re-pull) never calls
    // setInterval, whose first call costs Deno 6-10 ms (it loads its timers then); a re-pull
    // took 52-53 ms instead of 45.
    if (this.#timer === undefined && !this.#stopped && e.type === "blob-start") {
      const timer = setInterval(() => {
        const line = this.line();
        if (line) this.logger.info(line);
      }, this.#intervalMs);
      Deno.unrefTimer(timer);
      this.#timer = timer;
    }
  }
  #stopped = false;

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
    this.#stopped = true;
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
  /** When each image of a job began (image-start), by index. */
  #began = new Map<number, number>();
  /** The images' summaries added up, for a job's summary. */
  #job = {
    blobsCopied: 0,
    blobsPresent: 0,
    blobsMounted: 0,
    blobsLeftOut: 0,
    bytesMoved: 0,
    bytesPresent: 0,
    bytesResumed: 0,
    manifestsWritten: 0,
    manifestsPresent: 0,
  };

  constructor(
    logger: Logger,
    private readonly write: (text: string) => void = writeStderr,
    private readonly progressMs = 500,
    now?: () => number,
  ) {
    this.tally = new Tally(now);
    logger.sink = (level, message, exitCode, ctx) => this.#log(level, message, exitCode, ctx);
  }

  /**
   * Write one event: `{"v":1,"type":…,"time":…,"elapsed":…, …fields}`; of an image of a job
   * with its `image` and `imageIndex` after the common fields.
   */
  emit(type: string, fields: Record<string, unknown> = {}, image?: ImageId): void {
    const elapsed = Math.round(this.tally.now() - this.tally.started) / 1000;
    const json = JSON.stringify({
      v: EVENTS_VERSION,
      type,
      time: new Date().toISOString(),
      elapsed,
      ...(image === undefined ? {} : { image: image.name, imageIndex: image.index }),
      ...fields,
    }).replace(JSON_RAW_CONTROL, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
    this.write(json + "\n");
  }

  #log(
    level: Level | "trace",
    message: string,
    exitCode?: number,
    ctx?: { image?: ImageId; note?: boolean },
  ): void {
    const image = ctx?.image ?? imageNow();
    if (level === "error") {
      this.emit("error", exitCode === undefined ? { message } : { message, exit: exitCode }, image);
    } else if (level !== "info" || ctx?.note) {
      // Info lines are the step lines the events replace, except notes, which explain a
      // choice (platforms, --sparse, referrers) that no event says.
      this.emit("log", { level, message }, image);
    }
  }

  event(e: CopyEvent, ctx?: EventContext): void {
    const image = ctx?.image ?? imageNow();
    const t = this.tally.take(e, image);
    const blob = (d: Descriptor) => ({ digest: d.digest, mediaType: d.mediaType, size: d.size });
    // Events of the graphs --referrers and --digest-tags copy after the image say so.
    const emit = (type: string, fields: Record<string, unknown>) =>
      this.emit(type, ctx?.attached ? { ...fields, attached: true } : fields, image);
    switch (e.type) {
      case "plan":
        // The image's plan is its one `plan`; each attached graph plans its own part.
        this.emit(
          ctx?.attached ? "attached-plan" : "plan",
          { blobs: e.blobs, bytes: e.bytes },
          image,
        );
        break;
      case "blob-start":
        emit("blob-start", { ...blob(e.desc), role: e.role, n: e.n, total: e.total });
        break;
      case "blob-resume":
        emit("blob-resume", { ...blob(e.desc), offset: e.offset });
        break;
      case "blob-progress": {
        const now = this.tally.now();
        const key = transferKey(image, e.desc.digest);
        const last = this.#lastProgress.get(key);
        if (last !== undefined && now - last < this.progressMs) break;
        if (last === undefined && t && now - t.started < this.progressMs) break;
        this.#lastProgress.set(key, now);
        const rate = t?.rate.perSecond(now);
        emit("blob-progress", {
          digest: e.desc.digest,
          size: e.desc.size,
          bytes: e.bytes,
          ...(rate === undefined ? {} : { rate: Math.round(rate) }),
        });
        break;
      }
      case "blob-done":
        this.#lastProgress.delete(transferKey(image, e.desc.digest));
        emit("blob-done", {
          ...blob(e.desc),
          moved: e.moved,
          seconds: t ? Math.round(this.tally.now() - t.started) / 1000 : 0,
        });
        break;
      case "blob-skip":
        emit(e.reason === "mounted" ? "blob-mount" : "blob-skip", {
          ...blob(e.desc),
          role: e.role,
          n: e.n,
          total: e.total,
          ...(e.reason === "mounted" ? {} : { reason: "exists" }),
        });
        break;
      case "nondistributable-skip":
        for (const d of e.descs) emit("blob-skip", { ...blob(d), reason: "nondistributable" });
        break;
      case "manifest-done":
        emit("manifest-written", blob(e.desc));
        break;
      case "manifest-skip":
        emit("manifest-skip", blob(e.desc));
        break;
    }
  }

  retry(line: string, image?: ImageId): void {
    const m = /^! retry (\d+) of (\d+)/.exec(line);
    this.emit("retry", {
      ...(m ? { attempt: Number(m[1]), of: Number(m[2]) } : {}),
      message: line.replace(/^! /, ""),
    }, image ?? imageNow());
  }

  /** `start`; for an image of a job `image-start`. */
  begin(src: string, dst: string, root: Descriptor, image?: ImageId): void {
    image ??= imageNow();
    if (image) this.#began.set(image.index, this.tally.now());
    this.emit(image ? "image-start" : "start", {
      src,
      dst,
      root: { digest: root.digest, mediaType: root.mediaType, size: root.size },
    }, image);
  }

  /** `summary`; for an image of a job `image-done`, the job's `summary` coming at its end. */
  summary(stats: CopyStats, root: Descriptor, tag?: string, image?: ImageId): void {
    image ??= imageNow();
    const counts = {
      blobsCopied: stats.blobsCopied,
      blobsPresent: stats.blobsSkipped,
      blobsMounted: stats.blobsMounted,
      blobsLeftOut: stats.nonDistributable.length,
      bytesMoved: stats.bytesMoved,
      bytesPresent: stats.bytesPresent,
      bytesResumed: stats.bytesResumed,
      manifestsWritten: stats.manifestsCopied,
      manifestsPresent: stats.manifestsSkipped,
    };
    if (image) {
      for (const [k, v] of Object.entries(counts)) this.#job[k as keyof typeof counts] += v;
    }
    // An image of a job took the time since its image-start.
    const since = (image && this.#began.get(image.index)) ?? this.tally.started;
    this.emit(image ? "image-done" : "summary", {
      digest: root.digest,
      mediaType: root.mediaType,
      ...(tag === undefined ? {} : { tag }),
      ...counts,
      seconds: Math.round(this.tally.now() - since) / 1000,
    }, image);
  }

  /** `referrer` or `digest-tag`: what --referrers and --digest-tags copied or found. */
  attached(item: AttachedItem, image?: ImageId): void {
    const d = item.desc;
    this.emit(item.kind, {
      digest: d.digest,
      mediaType: d.mediaType,
      size: d.size,
      ...(d.artifactType === undefined ? {} : { artifactType: d.artifactType }),
      ...(item.subject === undefined ? {} : { subject: item.subject }),
      ...(item.tag === undefined ? {} : { tag: item.tag }),
      status: item.copied ? "copied" : "present",
    }, image ?? imageNow());
  }

  /** `image-failed`: an image of a job failed, or stopped short because another did. */
  imageFailed(image: ImageId, message: string, stopped: boolean): void {
    this.emit("image-failed", { message, ...(stopped ? { stopped } : {}) }, image);
  }

  /** The job's `summary`: its images' counts and their summaries added up. */
  jobSummary(job: JobCounts): void {
    this.emit("summary", {
      images: job.images,
      imagesCopied: job.copied,
      imagesPresent: job.present,
      imagesFailed: job.failed,
      imagesNotCopied: job.notCopied,
      ...this.#job,
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
    mode = Deno.stderr.isTerminal() && envVar("TERM") !== "dumb" ? "bars" : "lines";
  }
  return mode === "bars" ? new Bars(logger) : new Lines(logger);
}
