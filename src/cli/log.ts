// Leveled logging to stderr, coordinated with the progress display so that log lines and
// progress bars never overwrite each other.

export const LEVELS = ["debug", "info", "warn", "error"] as const;
export type Level = typeof LEVELS[number];

const encoder = new TextEncoder();

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
    Deno.stderr.writeSync(encoder.encode(`${prefix}${message}\n`));
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

  /** Write a line regardless of level (request traces, which the user asked for explicitly). */
  raw(line: string): void {
    this.overlay?.clear();
    Deno.stderr.writeSync(encoder.encode(line + "\n"));
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
