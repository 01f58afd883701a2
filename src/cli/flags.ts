// Flag parsing with the conventions users of umoci and skopeo expect: `--flag=VALUE` or
// `--flag VALUE`, `--flag=false` for booleans, short flags, `--`, one-line errors for
// anything unknown. (node:util parseArgs would do most of it, but loading node: modules
// costs Deno ≈ 10 ms of start-up per module family; this is the whole CLI's hot start.)
import { UsageError } from "../errors.ts";

export interface FlagSpec {
  type: "boolean" | "string";
  short?: string;
  multiple?: boolean;
  /** Shown in help; flags without it are hidden. */
  help?: string;
  /** Placeholder for the value in help, e.g. FILE. */
  value?: string;
  /**
   * Another name for that flag (skopeo's `--retry-times` for `--retries`): the value is
   * stored under the name given here. Aliases are listed in help apart from the flags.
   */
  alias?: string;
  /**
   * A flag other tools have that means nothing here: using it is a usage error that says
   * this (what to do instead). Never shown in help.
   */
  instead?: string;
}

export type FlagValues = Record<string, string | boolean | string[] | undefined>;

/**
 * Parse `args` against `specs`. Booleans also accept `--name=true|false`. Returns the flag
 * values and the positional arguments; throws UsageError on anything unknown or malformed.
 */
export function parseFlags(
  args: string[],
  specs: Record<string, FlagSpec>,
): { values: FlagValues; positionals: string[] } {
  const values: FlagValues = {};
  const positionals: string[] = [];
  const byShort = new Map<string, string>();
  for (const [name, spec] of Object.entries(specs)) if (spec.short) byShort.set(spec.short, name);
  const set = (name: string, value: string | boolean) => {
    const spec = specs[name];
    if (spec.multiple) {
      const list = (values[name] as string[] | undefined) ?? [];
      list.push(String(value));
      values[name] = list;
    } else values[name] = value;
  };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    let name: string | undefined;
    let inline: string | undefined;
    const long = /^--([^=]+)(?:=(.*))?$/s.exec(arg);
    const short = /^-([A-Za-z])(.*)$/s.exec(arg);
    if (long) {
      name = long[1];
      inline = long[2];
      if (!specs[name]) throw unknownFlag(`--${name}`, name, specs);
    } else if (short) {
      name = byShort.get(short[1]);
      if (!name) throw unknownFlag(`-${short[1]}`, short[1], specs);
      const rest = short[2];
      const isBooleanShort = (c: string) => specs[byShort.get(c) ?? ""]?.type === "boolean";
      if (rest !== "" && isBooleanShort(short[1]) && [...rest].every(isBooleanShort)) {
        // Grouped boolean short flags, as getopt has them: -rq is -r -q.
        for (const c of short[1] + rest) {
          let grouped = byShort.get(c)!;
          if (specs[grouped].instead !== undefined) {
            throw new UsageError(`-${c}: ${specs[grouped].instead}`);
          }
          if (specs[grouped].alias !== undefined) grouped = specs[grouped].alias!;
          set(grouped, true);
        }
        continue;
      }
      inline = rest === "" ? undefined : rest.replace(/^=/, "");
    } else {
      positionals.push(arg);
      continue;
    }
    if (specs[name].instead !== undefined) {
      throw new UsageError(`${long ? `--${name}` : `-${short![1]}`}: ${specs[name].instead}`);
    }
    if (specs[name].alias !== undefined) name = specs[name].alias!;
    const spec = specs[name];
    if (spec.type === "boolean") {
      if (inline === undefined) set(name, true);
      else if (/^(true|1)$/i.test(inline)) set(name, true);
      else if (/^(false|0)$/i.test(inline)) set(name, false);
      else {throw new UsageError(
          `flag --${name} takes true or false, not ${JSON.stringify(inline)}`,
        );}
      continue;
    }
    if (inline === undefined) {
      if (i + 1 >= args.length) throw new UsageError(`flag --${name} needs a value`);
      inline = args[++i];
    }
    set(name, inline);
  }
  return { values, positionals };
}

/** The one-line error for a flag that is not in `specs`, naming the nearest one if any. */
function unknownFlag(shown: string, name: string, specs: Record<string, FlagSpec>): UsageError {
  const near = nearestFlag(name, specs);
  const hint = near === undefined ? "see --help" : `did you mean ${near}? See --help`;
  return new UsageError(`unknown flag ${shown} (${hint})`);
}

/**
 * The flag spelled most like `name` (`--name`, or `-x` for a one-letter name): the one it
 * is a prefix of when that is only one, else the nearest by edit distance when that is at
 * most a third of the name's length (at least 1); undefined when none is that near.
 */
export function nearestFlag(name: string, specs: Record<string, FlagSpec>): string | undefined {
  if (name.length === 1) return undefined; // a short flag: too little to go on
  const names = Object.keys(specs).filter((n) => specs[n].instead === undefined);
  const prefixed = names.filter((n) => n.startsWith(name));
  if (prefixed.length === 1) return `--${prefixed[0]}`;
  let best: string | undefined;
  let bestDistance = Math.max(1, Math.floor(name.length / 3)) + 1;
  for (const n of names) {
    const d = editDistance(name, n);
    if (d < bestDistance) [best, bestDistance] = [n, d];
  }
  return best === undefined ? undefined : `--${best}`;
}

/** Levenshtein distance: insertions, deletions and substitutions, each costing 1. */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length];
}

/** Where flag descriptions start in help; longer flag columns put theirs on the next line. */
const HELP_COLUMN = 28;

/**
 * Help lines for a set of flags, none wider than `width` columns: the flag, then its
 * description wrapped at word boundaries in a column of its own. Flags without help (aliases,
 * `instead` flags) are left out.
 */
export function flagHelp(specs: Record<string, FlagSpec>, width = 80): string {
  const lines: string[] = [];
  for (const [name, spec] of Object.entries(specs)) {
    if (!spec.help || spec.alias !== undefined || spec.instead !== undefined) continue;
    let left = spec.short ? `  -${spec.short}, --${name}` : `      --${name}`;
    if (spec.type === "string") left += `=${spec.value ?? "VALUE"}`;
    const words = wrap(spec.help, width - HELP_COLUMN);
    if (left.length + 2 > HELP_COLUMN) lines.push(left);
    else lines.push(left.padEnd(HELP_COLUMN) + words.shift());
    for (const w of words) lines.push(" ".repeat(HELP_COLUMN) + w);
  }
  return lines.join("\n");
}

/** `text` broken into lines of at most `width` characters at spaces (longer words alone). */
export function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line === "") line = word;
    else if (line.length + 1 + word.length <= width) line += " " + word;
    else {
      lines.push(line);
      line = word;
    }
  }
  if (line !== "") lines.push(line);
  return lines;
}

/** The aliases in `specs`, as help text: `--retry-times (--retries), …`, wrapped. */
export function aliasHelp(specs: Record<string, FlagSpec>, width = 80): string {
  const pairs = Object.entries(specs)
    .filter(([, spec]) => spec.alias !== undefined)
    .map(([name, spec]) => `--${name} (= --${spec.alias})`);
  return wrap(pairs.join(", "), width - 2).map((l) => "  " + l).join("\n");
}

/** Parse a size such as `16MiB`, `512k`, `1048576`. */
export function parseSize(text: string, flag: string): number {
  const m = /^(\d+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?$/i.exec(text.trim());
  if (!m) throw new UsageError(`--${flag}: invalid size ${JSON.stringify(text)}`);
  const unit = (m[2] ?? "b").toLowerCase()[0];
  const mult = unit === "k" ? 1024 : unit === "m" ? 1024 ** 2 : unit === "g" ? 1024 ** 3 : 1;
  return Number(m[1]) * mult;
}

/** Parse a positive integer flag. */
export function parseCount(text: string, flag: string, min = 1, max = 1024): number {
  if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) {
    throw new UsageError(`--${flag}: expected a whole number from ${min} to ${max}`);
  }
  return Number(text);
}
