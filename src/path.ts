// POSIX path helpers (the targets are Linux and macOS). node:path would do, but loading it
// costs start-up time on Deno's hot path; these are all the tool needs.

/** Join path parts with "/" and normalize "." and ".." segments (like path.join). */
export function join(...parts: string[]): string {
  const joined = parts.filter((p) => p !== "").join("/");
  return normalize(joined === "" ? "." : joined);
}

/** An absolute, normalized path (like path.resolve). */
export function resolve(...parts: string[]): string {
  let path = "";
  for (let i = parts.length - 1; i >= 0 && !path.startsWith("/"); i--) {
    if (parts[i] !== "") path = path === "" ? parts[i] : `${parts[i]}/${path}`;
  }
  if (!path.startsWith("/")) path = `${Deno.cwd()}/${path}`;
  return normalize(path);
}

function normalize(path: string): string {
  const absolute = path.startsWith("/");
  const out: string[] = [];
  for (const seg of path.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") {
      if (out.length > 0 && out[out.length - 1] !== "..") out.pop();
      else if (!absolute) out.push("..");
    } else out.push(seg);
  }
  const body = out.join("/");
  if (absolute) return `/${body}`;
  return body === "" ? "." : body;
}

/** The directory part of a path (like path.dirname): "." for a bare name, "/" at the root. */
export function dirname(path: string): string {
  const trimmed = path.length > 1 ? path.replace(/\/+$/, "") : path;
  const i = trimmed.lastIndexOf("/");
  if (i === -1) return ".";
  return i === 0 ? "/" : trimmed.slice(0, i);
}
