// Temp files and directories currently being written. When the process is interrupted
// (Ctrl-C, SIGTERM) the CLI removes them before exiting, so an interrupted copy leaves no
// partial file behind; what is under blobs/ and index.json is only ever renamed into place.

export const tempFiles = new Set<string>();

/** Remove every registered temp path; safe to call from a signal handler. */
export function removeTempFilesSync(): void {
  for (const path of tempFiles) {
    try {
      Deno.removeSync(path, { recursive: true });
    } catch {
      // already gone
    }
  }
  tempFiles.clear();
}
