// Flag parsing on top of node:util parseArgs, with the conventions users of umoci and
// skopeo expect: `--flag=false` for booleans, one-line errors for unknown flags.
import { parseArgs } from "node:util";
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
  const negated = new Set<string>();
  const rewritten: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      rewritten.push(...args.slice(i));
      break;
    }
    const m = /^--([a-z0-9-]+)=(.*)$/.exec(arg);
    if (m && specs[m[1]]?.type === "boolean") {
      const v = m[2].toLowerCase();
      if (v === "true" || v === "1") rewritten.push(`--${m[1]}`);
      else if (v === "false" || v === "0") negated.add(m[1]);
      else throw new UsageError(`flag --${m[1]} takes true or false, not ${JSON.stringify(m[2])}`);
      continue;
    }
    rewritten.push(arg);
  }
  const options: Record<
    string,
    { type: "boolean" | "string"; short?: string; multiple?: boolean }
  > = {};
  for (const [name, spec] of Object.entries(specs)) {
    options[name] = { type: spec.type };
    if (spec.short) options[name].short = spec.short;
    if (spec.multiple) options[name].multiple = true;
  }
  let parsed;
  try {
    parsed = parseArgs({ args: rewritten, options, allowPositionals: true, strict: true });
  } catch (e) {
    const msg = (e as Error).message.split("\n")[0]
      .replace(/^Unknown option '(.*?)'.*$/, "unknown flag $1")
      .replace(/To specify a positional argument.*$/, "")
      .replace(/\.$/, "");
    throw new UsageError(msg);
  }
  const values = parsed.values as FlagValues;
  for (const name of negated) values[name] = false;
  return { values, positionals: parsed.positionals };
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
