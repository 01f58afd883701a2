// Errors the user sees as one line. Anything that is not a UserError is a bug or an
// unexpected system failure; the CLI still prints it as one line (no stack trace unless
// --log=debug).

/** The CLI's exit codes, as README.md's table lists them (tests/readme_test.ts compares). */
export const EXIT = {
  /** Copied, nothing to copy, or a dry run's plan printed; help and version. */
  ok: 0,
  /** The copy failed: one `error:` line names the cause. */
  failed: 1,
  /** Bad command line or reference. */
  usage: 2,
  /** Interrupted by SIGINT. */
  sigint: 130,
  /** Interrupted by SIGTERM. */
  sigterm: 143,
} as const;

/** An error whose message is fit to show the user as it is. */
export class UserError extends Error {
  /** Process exit code for this kind of failure. */
  exitCode: number;
  constructor(message: string, exitCode: number = EXIT.failed) {
    super(message);
    this.name = new.target.name;
    this.exitCode = exitCode;
  }
}

/** Bad command line: wrong flags or references. */
export class UsageError extends UserError {
  constructor(message: string) {
    super(message, EXIT.usage);
  }
}

/** Something named by the user does not exist (tag, blob, layout). */
export class NotFoundError extends UserError {}

/** What each Deno permission lets a program do, for messages. */
const PERMISSION_VERBS: Record<string, string> = {
  read: "read",
  write: "write to",
  net: "connect to",
  env: "read the environment variable",
  run: "run",
  sys: "ask the system for",
  ffi: "load the library",
  import: "import",
  all: "use",
};

// Deno's words when a permission was not granted (Deno.errors.NotCapable).
const NOT_CAPABLE = /Requires (\w+) access to (.+?), run again with the --allow-(\w+) flag/;

// The OS's words: "Permission denied (os error 13): mkdir '/x/y'".
const OS_ERROR = /^(.+?) \(os error (\d+)\)(?:: (\w+) '([^']*)'(?: -> '([^']*)')?)?$/;

/** The OS errors put in plain words (with the path first), and what to check for each. */
const OS_HINTS: [RegExp, string][] = [
  [
    /^(permission denied|operation not permitted)$/i,
    "check the owner and mode of it and of its directory",
  ],
  [/^read-only file system$/i, "the filesystem is mounted read-only"],
  [/^file exists$/i, "something else of that name is in the way"],
];

const OS_VERBS: Record<string, string> = {
  open: "open",
  mkdir: "create the directory",
  writefile: "write",
  readfile: "read",
  rename: "rename",
  remove: "remove",
  readdir: "list",
  stat: "look at",
  lstat: "look at",
  chmod: "change the mode of",
  symlink: "make the symlink",
  realpath: "resolve",
};

/**
 * `message` with Deno's permission wording in plain words: "Requires write access to "x",
 * run again with the --allow-write flag" becomes "umoci may not write to x: Deno runs it
 * without --allow-write (…)", and an OS "Permission denied (os error 13): mkdir '/x'"
 * becomes "cannot create the directory /x: permission denied (…)", as do a read-only
 * filesystem and a name in the way (OS_HINTS). Other text is kept.
 */
export function plainPermissionWords(message: string): string {
  const nc = NOT_CAPABLE.exec(message);
  if (nc) {
    const [, kind, what, flag] = nc;
    const target = what.replace(/^"(.*)"$/, "$1");
    const verb = PERMISSION_VERBS[kind] ?? `use (${kind})`;
    return message.replace(
      nc[0],
      `umoci may not ${verb} ${target}: Deno runs it without --allow-${flag} ` +
        `(run it with --allow-${flag}, or use the umoci binary, which has every permission it needs)`,
    );
  }
  const os = OS_ERROR.exec(message);
  const hint = os && os[3] ? OS_HINTS.find(([words]) => words.test(os[1]))?.[1] : undefined;
  if (os && hint !== undefined) {
    const [, why, code, op, path, to] = os;
    const verb = OS_VERBS[op.toLowerCase()] ?? op;
    return `cannot ${verb} ${path}${to ? ` to ${to}` : ""}: ${why.toLowerCase()} (os error ${code}${
      hint ? `; ${hint}` : ""
    })`;
  }
  return message;
}

/** One line describing any thrown value, for the CLI and logs. */
export function describeError(e: unknown): string {
  if (e instanceof Error) {
    const msg = plainPermissionWords(e.message.split("\n")[0].trim());
    if (e instanceof UserError) return msg;
    if (e instanceof Deno.errors.PermissionDenied) {
      return msg.startsWith("cannot ") ? msg : `permission denied: ${msg}`;
    }
    if (e instanceof Deno.errors.NotFound) return `not found: ${msg}`;
    if (/^no space left on device/i.test(msg)) return `n${msg.slice(1)}`; // Deno's own words
    if (e.name === "QuotaExceededError" || /No space left/i.test(msg)) {
      return `no space left on device: ${msg}`;
    }
    return msg || e.name;
  }
  return String(e);
}
