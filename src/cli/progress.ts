// Progress bars for blob transfers, drawn on stderr only when it is a terminal. One line per
// active transfer, redrawn at most ten times a second.
import { formatBytes, type Logger, type Overlay, shortDigest } from "./log.ts";

/** Blobs smaller than this finish too quickly to be worth a bar. */
const MIN_BAR_SIZE = 1024 * 1024;
const WIDTH = 30;
const encoder = new TextEncoder();

interface Bar {
  digest: string;
  size: number;
  done: number;
  started: number;
}

export class Progress implements Overlay {
  #bars = new Map<string, Bar>();
  #drawn = 0;
  #last = 0;
  #timer?: ReturnType<typeof setTimeout>;

  constructor(private readonly logger: Logger) {}

  /** A Progress when stderr is a terminal and the user did not silence output, else undefined. */
  static forTerminal(logger: Logger): Progress | undefined {
    if (!Deno.stderr.isTerminal() || !logger.enabled("info")) return undefined;
    const p = new Progress(logger);
    logger.overlay = p;
    return p;
  }

  start(digest: string, size: number): void {
    if (size < MIN_BAR_SIZE) return;
    this.#bars.set(digest, { digest, size, done: 0, started: performance.now() });
    this.#schedule();
  }

  update(digest: string, bytes: number): void {
    const bar = this.#bars.get(digest);
    if (!bar) return;
    bar.done = bytes;
    this.#schedule();
  }

  finish(digest: string): void {
    if (this.#bars.delete(digest)) {
      this.clear();
      this.redraw();
    }
  }

  #schedule(): void {
    const now = performance.now();
    if (now - this.#last >= 100) {
      this.#last = now;
      this.clear();
      this.redraw();
    } else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#last = performance.now();
        this.clear();
        this.redraw();
      }, 100);
    }
  }

  clear(): void {
    if (this.#drawn === 0) return;
    // Move up over the lines we drew and erase to the end of the screen.
    Deno.stderr.writeSync(encoder.encode(`\x1b[${this.#drawn}A\r\x1b[J`));
    this.#drawn = 0;
  }

  redraw(): void {
    if (this.#bars.size === 0) return;
    const lines: string[] = [];
    for (const bar of this.#bars.values()) {
      const frac = bar.size === 0 ? 1 : Math.min(1, bar.done / bar.size);
      const filled = Math.round(frac * WIDTH);
      const secs = (performance.now() - bar.started) / 1000;
      const rate = secs > 0 ? formatBytes(bar.done / secs) + "/s" : "";
      lines.push(
        `${shortDigest(bar.digest)} [${"=".repeat(filled)}${" ".repeat(WIDTH - filled)}] ${
          formatBytes(bar.done)
        } / ${formatBytes(bar.size)} ${rate}`,
      );
    }
    Deno.stderr.writeSync(encoder.encode(lines.join("\n") + "\n"));
    this.#drawn = lines.length;
  }

  stop(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#bars.clear();
    this.clear();
    if (this.logger.overlay === this) this.logger.overlay = undefined;
  }
}
