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
      if (!specs[name]) throw new UsageError(`unknown flag --${name}`);
    } else if (short) {
      name = byShort.get(short[1]);
      if (!name) throw new UsageError(`unknown flag -${short[1]}`);
      inline = short[2] === "" ? undefined : short[2].replace(/^=/, "");
    } else {
      positionals.push(arg);
      continue;
    }
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

/** Help lines for a set of flags. */
export function flagHelp(specs: Record<string, FlagSpec>): string {
  const rows: [string, string][] = [];
  for (const [name, spec] of Object.entries(specs)) {
    if (!spec.help) continue;
    let left = spec.short ? `-${spec.short}, --${name}` : `    --${name}`;
    if (spec.type === "string") left += `=${spec.value ?? "VALUE"}`;
    rows.push([left, spec.help]);
  }
  const width = Math.max(...rows.map(([l]) => l.length)) + 2;
  return rows.map(([l, r]) => `  ${l.padEnd(width)}${r}`).join("\n");
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
