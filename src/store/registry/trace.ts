// Request tracing (--trace-requests) and the redaction of everything secret in what we show:
// trace lines, error lines and retry lines all go through redactUrl().
//
// Trace lines, one per request and one per response:
//   > METHOD URL [via PROXY] name: "value" …       request headers we send (not User-Agent)
//   < STATUS METHOD URL 12ms name: "value" …        selected response headers, time to headers
//   < ERROR METHOD URL 3ms MESSAGE                   the request failed at the network level
//
// Redaction:
// - Authorization, Proxy-Authorization, Cookie and Set-Cookie values print as <redacted>
//   (the scheme word Bearer/Basic is kept);
// - in URLs (request URLs, Location values) a password is blanked, and the value of every
//   query parameter is blanked unless its name is on a short allowlist of parameters the
//   distribution API defines (digest, mount, from, n, last, scope, service). Pre-signed
//   storage URLs (S3, GCS, Azure) carry their signatures and credentials in the query, under
//   names no list could keep up with, so the rule is "shown only when known to be harmless".
// Bodies are never printed.

const SECRET_HEADERS = new Set(["authorization", "cookie", "set-cookie", "proxy-authorization"]);
/** Query parameters whose values are shown; every other value is redacted. */
const SHOWN_PARAMS = new Set(["digest", "mount", "from", "n", "last", "scope", "service"]);
const REDACTED = "<redacted>";

/**
 * A URL as text that is safe to show: password and query values outside the allowlist
 * replaced by `<redacted>`, fragment dropped. Text that is not a URL is returned unchanged.
 */
export function redactUrl(url: URL | string): string {
  let u: URL;
  try {
    u = new URL(String(url));
  } catch {
    return String(url);
  }
  const password = u.password !== "";
  const search = u.search;
  u.search = "";
  u.hash = "";
  if (password) u.password = "redacted";
  let text = u.toString();
  if (search.length > 1) {
    // `;` separates parameters too for some servers: `digest=ok;sig=SECRET` is two.
    const parts = search.slice(1).split(/([&;])/).map((kv, i) => {
      if (i % 2 === 1) return kv; // a separator
      const eq = kv.indexOf("=");
      const rawName = eq === -1 ? kv : kv.slice(0, eq);
      let name = rawName;
      try {
        name = decodeURIComponent(rawName.replaceAll("+", " "));
      } catch { /* keep raw */ }
      if (SHOWN_PARAMS.has(name.toLowerCase())) return kv;
      return eq === -1 ? REDACTED : `${rawName}=${REDACTED}`;
    });
    text += "?" + parts.join("");
  }
  return text;
}

/** One header value as it may be shown: secrets replaced, URLs redacted. */
export function showHeader(name: string, value: string): string {
  const lower = name.toLowerCase();
  if (SECRET_HEADERS.has(lower)) {
    // Keep the scheme word (Bearer/Basic): useful when debugging, not a secret.
    const scheme = lower === "authorization" || lower === "proxy-authorization"
      ? /^\s*([A-Za-z][A-Za-z0-9-]*)\s/.exec(value)?.[1]
      : undefined;
    return scheme ? `${scheme} ${REDACTED}` : REDACTED;
  }
  if (lower === "location" || lower === "content-location") return redactUrl(value);
  return value;
}

/** Response headers worth a trace line. */
const TRACED_RESPONSE_HEADERS = [
  "content-type",
  "content-length",
  "content-range",
  "docker-content-digest",
  "location",
  "range",
  "www-authenticate",
  "oci-subject",
  "oci-chunk-min-length",
  "docker-upload-uuid",
  "retry-after",
  "warning",
  "set-cookie",
];

/** Headers as `name: "value"` pairs joined by spaces, values shown through showHeader(). */
export function formatHeaders(entries: [string, string][]): string {
  return entries.map(([k, v]) => `${k}: ${JSON.stringify(showHeader(k, v))}`).join(" ");
}

/**
 * The `>` line of a request. `bodyLength` is the Content-Length sent (undefined: no body;
 * "chunked" for a streamed body); `proxy` the proxy URL it goes through, if any.
 */
export function requestTraceLine(
  method: string,
  url: URL,
  headers: Headers,
  bodyLength: number | "chunked" | undefined,
  proxy?: string,
): string {
  const shown: [string, string][] = [];
  headers.forEach((v, k) => {
    if (k !== "user-agent" && k !== "accept-encoding") shown.push([k, v]);
  });
  if (bodyLength === "chunked") shown.push(["transfer-encoding", "chunked"]);
  else if (bodyLength !== undefined) shown.push(["content-length", String(bodyLength)]);
  const via = proxy ? ` via proxy ${redactUrl(proxy)}` : "";
  return `> ${method} ${redactUrl(url)}${via}${shown.length ? " " + formatHeaders(shown) : ""}`;
}

/** The `<` line of a response: status, method, URL, ms to headers, the headers worth seeing. */
export function responseTraceLine(
  status: number,
  method: string,
  url: URL,
  headers: Headers,
  started: number,
): string {
  const shown: [string, string][] = [];
  for (const k of TRACED_RESPONSE_HEADERS) {
    const v = headers.get(k);
    if (v !== null) shown.push([k, v]);
  }
  const ms = Math.round(performance.now() - started);
  return `< ${status} ${method} ${redactUrl(url)} ${ms}ms${
    shown.length ? " " + formatHeaders(shown) : ""
  }`;
}

/** The `<` line of a request that failed below HTTP. */
export function errorTraceLine(method: string, url: URL, started: number, message: string) {
  return `< ERROR ${method} ${redactUrl(url)} ${
    Math.round(performance.now() - started)
  }ms ${message}`;
}
