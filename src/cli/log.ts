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

/** Something that draws on the terminal and must be cleared before a log line is written. */
export interface Overlay {
  clear(): void;
  redraw(): void;
}

export class Logger {
  #min: number;
  overlay?: Overlay;

  constructor(level: Level = "info") {
    this.#min = LEVELS.indexOf(level);
  }

  enabled(level: Level): boolean {
    return LEVELS.indexOf(level) >= this.#min;
  }

  #write(level: Level, message: string): void {
    if (!this.enabled(level)) return;
    const prefix = level === "info" ? "" : `${level}: `;
    this.overlay?.clear();
    Deno.stderr.writeSync(encoder.encode(`${prefix}${escapeControl(message)}\n`));
    this.overlay?.redraw();
  }

  debug(message: string): void {
    this.#write("debug", message);
  }
  info(message: string): void {
    this.#write("info", message);
  }
  warn(message: string): void {
    this.#write("warn", message);
  }
  error(message: string): void {
    this.#write("error", message);
  }

  /**
   * Write a line regardless of level (request traces, which the user asked for explicitly),
   * control characters escaped like every other line.
   */
  raw(line: string): void {
    this.overlay?.clear();
    Deno.stderr.writeSync(encoder.encode(escapeControl(line) + "\n"));
    this.overlay?.redraw();
  }
}

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

export function shortDigest(digest: string): string {
  const i = digest.indexOf(":");
  return digest.slice(0, i + 1 + 12);
}
