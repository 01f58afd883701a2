// Proxy choice, with the habits of Go programs (skopeo, crane: net/http's
// ProxyFromEnvironment, golang.org/x/net/http/httpproxy):
//
// - HTTPS_PROXY for https:// URLs, HTTP_PROXY for http:// ones (upper case first, then lower
//   case); ALL_PROXY (curl's) when neither applies; a proxy without a scheme is http://;
// - NO_PROXY: comma- or space-separated; `*` turns proxies off; an entry is a host name (it
//   matches the name and every subdomain; a leading `.` or `*.` is allowed), an IP address, or
//   a CIDR range, each optionally with `:PORT`, which must then match too;
// - requests to `localhost` (and *.localhost) and to loopback addresses never use a proxy.
//
// Deno's fetch would otherwise read the same variables itself with other rules (it proxies
// loopback traffic), so the first call to proxyEnvironment() takes them out of this process's
// environment; every proxy is then chosen here and given to fetch explicitly (client.ts).
// Credential helpers still get the variables (credentials.ts passes proxyEnvironment()).
import { envVar } from "../../env.ts";
import { UsageError } from "../../errors.ts";
import { inRange, ipBytes, isLoopback } from "./address.ts";

const PROXY_VARIABLES = [
  "HTTPS_PROXY",
  "https_proxy",
  "HTTP_PROXY",
  "http_proxy",
  "ALL_PROXY",
  "all_proxy",
  "NO_PROXY",
  "no_proxy",
];

let snapshot: Record<string, string> | undefined;

/**
 * The proxy variables this process was started with (names as spelled in the environment).
 * The first call removes them from Deno.env, so that only the choices made here apply.
 */
export function proxyEnvironment(): Record<string, string> {
  if (snapshot) return snapshot;
  const taken: Record<string, string> = {};
  for (const name of PROXY_VARIABLES) {
    // One the permissions hide is one fetch cannot read either.
    const value = envVar(name);
    if (value === undefined) continue;
    taken[name] = value;
    Deno.env.delete(name); // the permission to read a variable is the permission to delete it
  }
  snapshot = taken;
  return taken;
}

/** A proxy as written in a variable, with `http://` when it names no scheme (as Go does). */
function withScheme(value: string): string {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `http://${value}`;
}

/** The proxy variables that name a proxy (NO_PROXY names none). */
const PROXY_URL_VARIABLES = PROXY_VARIABLES.filter((n) => !/no_proxy/i.test(n));

/** `text` with the password of a `scheme://user:password@` prefix replaced by "redacted". */
function redactProxyText(text: string): string {
  return text.replace(/^([^/]*\/\/[^:@/]*:)[^@]*@/, "$1redacted@");
}

/**
 * Check the proxy variables before anything is sent: each must be a URL (`http://` is
 * assumed when there is no scheme) with scheme http, https, socks5 or socks5h, as Deno's
 * HTTP client takes them. Throws UsageError naming the variable, its value shown with any
 * password redacted.
 */
export function checkProxyEnvironment(): void {
  const env = proxyEnvironment();
  for (const name of PROXY_URL_VARIABLES) {
    const value = env[name];
    if (!value) continue;
    let url: URL | undefined;
    try {
      url = new URL(withScheme(value));
    } catch { /* reported below */ }
    if (!url || !["http:", "https:", "socks5:", "socks5h:"].includes(url.protocol)) {
      throw new UsageError(
        `${name}=${redactProxyText(value)}: not a proxy URL (http://[USER:PASSWORD@]HOST:PORT)`,
      );
    }
  }
}

/** Whether one NO_PROXY entry exempts `host` (lower case, no brackets) on `port`. */
function exempts(entry: string, host: string, port: string): boolean {
  let name = entry;
  let entryPort: string | undefined;
  if (name.startsWith("[")) {
    const end = name.indexOf("]");
    if (end === -1) return false;
    entryPort = name.slice(end + 1).replace(/^:/, "") || undefined;
    name = name.slice(1, end);
  } else if ((name.match(/:/g) ?? []).length === 1) {
    [name, entryPort] = name.split(":");
  }
  if (entryPort !== undefined && entryPort !== port) return false;
  const slash = name.indexOf("/");
  if (slash !== -1) {
    const net = ipBytes(name.slice(0, slash));
    const addr = ipBytes(host);
    const bits = Number(name.slice(slash + 1));
    return net !== undefined && addr !== undefined && Number.isInteger(bits) &&
      inRange(addr, net, bits);
  }
  const addr = ipBytes(host);
  if (addr) {
    const other = ipBytes(name);
    return other !== undefined && other.join() === addr.join();
  }
  const bare = name.replace(/^\*?\./, "");
  return bare !== "" && (host === bare || host.endsWith(`.${bare}`));
}

/**
 * The proxy URL to use for `url`, or undefined to connect directly (see the file comment for
 * the rules). `env` looks a variable up (default: the snapshot of proxyEnvironment()).
 */
export function proxyFor(
  url: URL,
  env: (name: string) => string | undefined = (n) => proxyEnvironment()[n],
): string | undefined {
  const get = (name: string) => env(name.toUpperCase()) || env(name) || undefined;
  const chosen = (url.protocol === "https:" ? get("https_proxy") : get("http_proxy")) ??
    get("all_proxy");
  if (!chosen) return undefined;
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  if (isLoopback(host)) return undefined;
  const port = url.port || (url.protocol === "https:" ? "443" : "80");
  for (const raw of (get("no_proxy") ?? "").split(/[\s,]+/)) {
    const entry = raw.trim().toLowerCase();
    if (!entry) continue;
    if (entry === "*") return undefined;
    if (exempts(entry, host, port)) return undefined;
  }
  return withScheme(chosen);
}
