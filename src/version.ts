// Version information. Release artifacts built by scripts/build.ts carry their git commit in
// globalThis.UMOCI_BUILD_COMMIT; from a source checkout it is looked up with git at run time.

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
  const built = (globalThis as Record<string, unknown>).UMOCI_BUILD_COMMIT;
  const commit = typeof built === "string" ? built : sourceCommit();
  return `umoci-copy version ${VERSION} (commit ${commit}, deno ${Deno.version.deno})`;
}
