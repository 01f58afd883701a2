// Version information. BUILD_COMMIT is filled in by scripts/build.ts for release artifacts;
// when running from a source checkout it is looked up with git at run time.
import { BUILD_COMMIT } from "./build_info.ts";

export const VERSION = "0.1.0";

function sourceCommit(): string {
  try {
    const dir = new URL("..", import.meta.url);
    if (dir.protocol !== "file:") return "unknown";
    const out = new Deno.Command("git", {
      args: ["rev-parse", "--short=12", "HEAD"],
      cwd: dir,
      stdout: "piped",
      stderr: "null",
    }).outputSync();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : "unknown";
  } catch {
    return "unknown";
  }
}

export function versionString(): string {
  const commit = BUILD_COMMIT || sourceCommit();
  return `umoci-copy version ${VERSION} (commit ${commit}, deno ${Deno.version.deno})`;
}
