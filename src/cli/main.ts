// The command dispatcher: global flags, subcommands, error reporting and signals.
import { describeError, EXIT, UsageError, UserError } from "../errors.ts";
import { removeTempFilesSync } from "../tempfiles.ts";
import { versionString } from "../version.ts";
import { copyCommand, copyUsage } from "./copy.ts";
import { type Level, LEVELS, Logger, printLine, writeStderr } from "./log.ts";

const USAGE = `Usage: umoci [--log=LEVEL] COMMAND [flags] ARGS

Commands:
  copy, cp    copy an image between OCI image layouts and registries

Global flags:
  --log=LEVEL   debug, info, warn or error (default info)
  --debug       the same as --log=debug
  -q, --quiet   the same as --log=warn
  --version     print the version and exit
  -h, --help    show this help

Run 'umoci copy --help' for the copy command's flags and reference syntax.
`;

/**
 * Pull `--log=LEVEL` / `--log LEVEL` and its shorthands `--debug` (debug) and `-q`/`--quiet`
 * (warn) out of args wherever they stand before `--`; the last one wins.
 */
function extractLogLevel(args: string[]): { level: Level; rest: string[] } {
  let level: string = "info";
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--") {
      rest.push(...args.slice(i));
      break;
    }
    const shorthand = /^(?:--(debug|quiet)|-(q))(?:=(true|false))?$/i.exec(a);
    if (shorthand) {
      if (shorthand[4]?.toLowerCase() !== "false") {
        level = shorthand[1] === "debug" ? "debug" : "warn";
      }
    } else if (a.startsWith("--log=")) level = a.slice(6);
    else if (a === "--log") {
      if (i + 1 >= args.length) throw new UsageError("flag --log needs a level");
      level = args[++i];
    } else rest.push(a);
  }
  if (!(LEVELS as readonly string[]).includes(level)) {
    throw new UsageError(
      `--log: unknown level ${JSON.stringify(level)} (debug, info, warn, error)`,
    );
  }
  return { level: level as Level, rest };
}

/** An error the system reported (a full disk, a refused permission): not a bug of ours. */
function isOsError(e: Error): boolean {
  // Errors Deno has no class for (ENOSPC among them) are plain Errors ending in the errno.
  return Object.values(Deno.errors).some((kind) => e instanceof kind) ||
    e.name === "QuotaExceededError" || /\(os error \d+\)$/.test(e.message);
}

/** Run the CLI; returns the exit code. Never throws. */
export async function run(args: string[]): Promise<number> {
  let logger = new Logger("info");
  const onSignal = (signal: Deno.Signal) => () => {
    const code = signal === "SIGINT" ? EXIT.sigint : EXIT.sigterm;
    // The progress bars go for good before the last line, and are not drawn under it.
    logger.detach();
    removeTempFilesSync();
    logger.error(
      `interrupted by ${signal}; nothing partial was published (a rerun skips what is ` +
        "complete and resumes downloads into a layout)",
      code,
    );
    Deno.exit(code);
  };
  const handlers: [Deno.Signal, () => void][] = [];
  if (Deno.build.os !== "windows") {
    for (const s of ["SIGINT", "SIGTERM"] as Deno.Signal[]) {
      const h = onSignal(s);
      Deno.addSignalListener(s, h);
      handlers.push([s, h]);
    }
  }
  try {
    const { level, rest } = extractLogLevel(args);
    logger = new Logger(level);
    const [command, ...commandArgs] = rest;
    if (command === undefined) {
      writeStderr(USAGE + "\n");
      return EXIT.usage;
    }
    if (command === "--help" || command === "-h" || command === "help") {
      if (commandArgs[0] === "copy" || commandArgs[0] === "cp") printLine(copyUsage());
      else printLine(USAGE);
      return 0;
    }
    if (command === "--version" || command === "-v" || command === "version") {
      printLine(versionString());
      return 0;
    }
    switch (command) {
      case "copy":
      case "cp":
        return await copyCommand(commandArgs, logger);
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)} (see umoci --help)`);
    }
  } catch (e) {
    if (
      logger.enabled("debug") && e instanceof Error && !(e instanceof UserError) && !isOsError(e)
    ) {
      // One debug line per stack line: the logger escapes newlines inside a message.
      for (const line of (e.stack ?? String(e)).split("\n")) logger.debug(line);
    }
    const code = e instanceof UserError ? e.exitCode : EXIT.failed;
    logger.detach();
    logger.error(describeError(e), code);
    return code;
  } finally {
    for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
  }
}
