// Errors the user sees as one line. Anything that is not a UserError is a bug or an
// unexpected system failure; the CLI still prints it as one line (no stack trace unless
// --log=debug).

/** An error whose message is fit to show the user as it is. */
export class UserError extends Error {
  /** Process exit code for this kind of failure. */
  exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = new.target.name;
    this.exitCode = exitCode;
  }
}

/** Bad command line: wrong flags or references. */
export class UsageError extends UserError {
  constructor(message: string) {
    super(message, 2);
  }
}

/** Something named by the user does not exist (tag, blob, layout). */
export class NotFoundError extends UserError {}

/** One line describing any thrown value, for the CLI and logs. */
export function describeError(e: unknown): string {
  if (e instanceof Error) {
    const msg = e.message.split("\n")[0].trim();
    if (e instanceof UserError) return msg;
    if (e instanceof Deno.errors.PermissionDenied) return `permission denied: ${msg}`;
    if (e instanceof Deno.errors.NotFound) return `not found: ${msg}`;
    if (/^no space left on device/i.test(msg)) return `n${msg.slice(1)}`; // Deno's own words
    if (e.name === "QuotaExceededError" || /No space left/i.test(msg)) {
      return `no space left on device: ${msg}`;
    }
    return msg || e.name;
  }
  return String(e);
}
