// The few terminal facts the progress display needs, in plain ANSI: how wide the terminal
// is, how many columns a string takes, cutting a line to fit, and the two escape sequences
// that move up and erase. (npm's string-width / log-update would do the same with a
// dependency tree the single-file bundle would carry; the bars are text this program
// composes itself, so a small table of wide characters is enough.)

/**
 * Erase the `rows` rows above the cursor and everything below them, leaving the cursor at
 * column 1 of the first erased row ("" for 0 rows). `rows` counts from the row the cursor is
 * on (a display that ends with a newline has its first line `rows` rows up).
 *
 * The first row is cleared on its own (EL 2) and the rest from the row below it (ED 0): an
 * "erase below" asked for at the top-left corner of the screen is taken by tmux as clearing
 * the screen, and its `scroll-on-clear` (on by default) then moves the whole screen, display
 * included, into the pane's history, where a stale bar would stay in the scrollback.
 */
export function eraseRowsAbove(rows: number): string {
  if (rows <= 0) return "";
  return `\x1b[${rows}A\r\x1b[2K\x1b[1B\x1b[J\x1b[1A`;
}

/**
 * Columns of the terminal on stderr, re-read on every call so that a resize is seen at the
 * next redraw; 80 when stderr is not a terminal or reports no size (a pty of 0×0).
 */
export function terminalColumns(): number {
  try {
    const { columns } = Deno.consoleSize();
    return columns > 0 ? columns : 80;
  } catch {
    return 80;
  }
}

/**
 * True for code points a terminal shows two columns wide: East Asian Wide and Fullwidth
 * (CJK, Hangul, fullwidth forms) and the emoji blocks.
 */
function isWide(cp: number): boolean {
  return (cp >= 0x1100 && cp <= 0x115f) || (cp >= 0x2e80 && cp <= 0x303e) ||
    (cp >= 0x3041 && cp <= 0x33ff) || (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0xa000 && cp <= 0xa4cf) ||
    (cp >= 0xac00 && cp <= 0xd7a3) || (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0xfe30 && cp <= 0xfe4f) || (cp >= 0xff00 && cp <= 0xff60) ||
    (cp >= 0xffe0 && cp <= 0xffe6) || (cp >= 0x1f300 && cp <= 0x1f64f) ||
    (cp >= 0x1f900 && cp <= 0x1f9ff) || (cp >= 0x20000 && cp <= 0x3fffd);
}

/** Columns one code point takes: 0 for combining marks and controls, 2 for wide ones. */
function columnsOf(cp: number): number {
  if (cp < 0x20 || (cp >= 0x7f && cp < 0xa0)) return 0;
  if ((cp >= 0x300 && cp <= 0x36f) || cp === 0x200d || (cp >= 0xfe00 && cp <= 0xfe0f)) return 0;
  return isWide(cp) ? 2 : 1;
}

/** Columns `text` takes on a terminal (text without escape sequences). */
export function displayWidth(text: string): number {
  let w = 0;
  for (const ch of text) w += columnsOf(ch.codePointAt(0)!);
  return w;
}

/**
 * `text` cut to at most `columns` columns (never splitting a wide character), so that a
 * terminal never wraps it.
 */
export function fitWidth(text: string, columns: number): string {
  if (text.length <= columns && !/[^\x20-\x7e]/.test(text)) return text;
  let w = 0;
  let out = "";
  for (const ch of text) {
    const c = columnsOf(ch.codePointAt(0)!);
    if (w + c > columns) break;
    w += c;
    out += ch;
  }
  return out;
}

/**
 * Rows a line of `width` columns takes on a terminal `columns` wide: more than one when the
 * terminal was made narrower after it was drawn and re-flows it (tmux, VTE, kitty, iTerm2,
 * Windows Terminal all do).
 */
export function rowsOf(width: number, columns: number): number {
  return Math.max(1, Math.ceil(width / Math.max(1, columns)));
}
