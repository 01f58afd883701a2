// Leveled logging to stderr, coordinated with the progress display so that log lines and
// progress bars never overwrite each other.
//
// Everything the CLI says on stderr passes through Logger, and much of it quotes text from
// registries (error bodies, headers, URLs) or from files (tags in index.json): so Logger is
// where control characters are made visible (escapeControl), and no line it writes can move
// the cursor, clear the screen, set the terminal title or pose as a line of its own.

export const LEVELS = ["debug", "info", "warn", "error"] as const;
export type Level = typeof LEVELS[number];

const encoder = new TextEncoder();

// deno-lint-ignore no-control-regex
const CONTROL = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f]/;
const CONTROLS = new RegExp(CONTROL.source, "g");

/**
 * `text` made safe to show on a terminal: every character a terminal acts on is written out
 * as visible text instead. C0 controls except tab (ESC, BEL, NUL, …), DEL and the C1
 * controls U+0080–U+009F (which some terminals take as ESC sequences, e.g. U+009B as CSI)
 * become `\xNN` (ESC is `\x1b`); CR and LF become `\r` and `\n`, so the text stays on one
 * line. Tabs, printable Unicode and backslashes are kept as they are. Never throws.
 */
export function escapeControl(text: string): string {
  if (!CONTROL.test(text)) return text;
  return text.replace(CONTROLS, (c) => {
    if (c === "\n") return "\\n";
    if (c === "\r") return "\\r";
    return "\\x" + c.charCodeAt(0).toString(16).padStart(2, "0");
  });
}

/**
 * Something drawn on the terminal below the log lines (the progress bars): a log line is
 * written as erase() + line + draw(), in one write, so the two never overwrite each other.
 */
export interface Overlay {
  /** The escape sequences that erase what is drawn (and forget it): "" when nothing is. */
  erase(): string;
  /** The text that draws it again below the cursor: "" when there is nothing to draw. */
  draw(): string;
  /** Erase what is drawn now, in its own write. */
  clear(): void;
  /** Erase for good and stop drawing (exit, interrupt, error). */
  stop(): void;
}

/** Write all of `text` to stderr, synchronously (a terminal may take it in pieces). */
export function writeStderr(text: string): void {
  writeAllSync(Deno.stderr, text);
}

/**
 * Write `text` and a newline to stdout, synchronously: what console.log does for a string,
 * without loading console's formatting machinery (~1.5 ms of a 50 ms re-pull).
 */
export function printLine(text: string): void {
  writeAllSync(Deno.stdout, text + "\n");
}

function writeAllSync(out: { writeSync(p: Uint8Array): number }, text: string): void {
  const bytes = encoder.encode(text);
  let off = 0;
  while (off < bytes.length) off += out.writeSync(bytes.subarray(off));
}

/**
 * Where log lines go instead of stderr (--progress=json): `level` is the line's level, or
 * "trace" for --trace-requests lines; `exitCode` comes with the final error line; `ctx`
 * names the image of a job the line is about, and marks notes (Logger.note).
 */
export type LogSink = (
  level: Level | "trace",
  message: string,
  exitCode?: number,
  ctx?: LineContext,
) => void;

/** What a line is about, for a LogSink. */
export interface LineContext {
  /** The image of a job (see ImageId in progress.ts). */
  image?: { name: string; index: number };
  /** An info line that explains a choice (Logger.note). */
  note?: boolean;
}

/** Leveled lines on stderr, control characters escaped, drawn around an Overlay. */
export class Logger {
  #min: number;
  overlay?: Overlay;
  /** Set by --progress=json: every line goes here, nothing to stderr directly. */
  sink?: LogSink;

  /** Lines below `level` are dropped. */
  constructor(level: Level = "info") {
    this.#min = LEVELS.indexOf(level);
  }

  /** True when lines of `level` are written. */
  enabled(level: Level): boolean {
    return LEVELS.indexOf(level) >= this.#min;
  }

  #line(text: string): void {
    const o = this.overlay;
    writeStderr(o ? o.erase() + text + "\n" + o.draw() : text + "\n");
  }

  #write(level: Level, message: string, exitCode?: number): void {
    if (!this.enabled(level)) return;
    if (this.sink) return this.sink(level, message, exitCode);
    const prefix = level === "info" ? "" : `${level}: `;
    this.#line(prefix + escapeControl(message));
  }

  debug(message: string): void {
    this.#write("debug", message);
  }
  info(message: string): void {
    this.#write("info", message);
  }
  /**
   * An info line that explains a choice no event of --progress=json says (the platforms
   * chosen, --sparse=auto's fallback, a referrer skipped): a sink gets it marked as a note.
   */
  note(message: string): void {
    if (!this.enabled("info")) return;
    if (this.sink) return this.sink("info", message, undefined, { note: true });
    this.info(message);
  }
  warn(message: string): void {
    this.#write("warn", message);
  }
  /** An error line; `exitCode`, when known, goes along to a sink (the JSON error event). */
  error(message: string, exitCode?: number): void {
    this.#write("error", message, exitCode);
  }

  /** Erase the overlay for good and stop drawing it (before the last line on exit). */
  detach(): void {
    const o = this.overlay;
    this.overlay = undefined;
    o?.stop();
  }

  /**
   * Write a line regardless of level (request traces, which the user asked for explicitly),
   * control characters escaped like every other line.
   */
  raw(line: string): void {
    if (this.sink) return this.sink("trace", line);
    this.#line(escapeControl(line));
  }
}

/** `n` bytes for people: `512 B`, `1.5 KiB`, `12.0 MiB`, `3.2 GiB`. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** `sha256:0123456789ab`: the algorithm and the first 12 hex digits. */
export function shortDigest(digest: string): string {
  const i = digest.indexOf(":");
  return digest.slice(0, i + 1 + 12);
}
