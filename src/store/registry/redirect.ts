// Following redirects safely (RFC 9110 §15.4, and the WHATWG fetch rules for credentials).
// fetch runs with `redirect: "manual"`, so every 3xx comes back here and is decided on:
//
// - a Location is resolved against the URL that answered (it may be relative);
// - only http: and https: targets, never from https to http, never to a link-local address;
// - Authorization and Cookie are dropped as soon as a hop leaves the origin (scheme, host,
//   port) and are not put back if a later hop returns;
// - 303 (and 301/302 after a POST) turns the request into a bodiless GET;
// - at most MAX_REDIRECTS hops; every other header (Range included) goes along on every hop.
import { UserError } from "../../errors.ts";
import { isLinkLocal } from "./address.ts";
import { redactUrl } from "./trace.ts";

/** Redirect hops followed for one request before giving up. */
export const MAX_REDIRECTS = 10;

/** True for the statuses that carry a Location to follow. */
export function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
}

/** The next hop of a redirected request (mutated in place by followRedirect). */
export interface Hop {
  method: string;
  url: URL;
  headers: Headers;
  /** True when the request still carries its body. */
  hasBody: boolean;
}

/**
 * Apply one redirect answer (`status` with `location`) to `hop`, the request that got it.
 * `where` names the original request in messages; `count` is this hop's number (1-based).
 * Throws a UserError for a missing or unusable Location, a downgrade to http, a link-local
 * target, or too many hops.
 */
export function followRedirect(
  hop: Hop,
  status: number,
  location: string | null,
  where: string,
  count: number,
): void {
  if (!location) throw new UserError(`${where}: ${status} redirect without a Location`);
  if (count > MAX_REDIRECTS) {
    throw new UserError(`${where}: more than ${MAX_REDIRECTS} redirects; giving up`);
  }
  let next: URL;
  try {
    next = new URL(location, hop.url);
  } catch {
    throw new UserError(`${where}: redirect to an invalid URL`);
  }
  if (next.protocol !== "http:" && next.protocol !== "https:") {
    throw new UserError(`${where}: redirect to unsupported scheme ${next.protocol}`);
  }
  if (hop.url.protocol === "https:" && next.protocol === "http:") {
    throw new UserError(`${where}: refusing redirect from https to http (${redactUrl(next)})`);
  }
  if (isLinkLocal(next.hostname)) {
    throw new UserError(`${where}: refusing redirect to link-local address ${next.host}`);
  }
  // Credentials never cross an origin boundary, and stay dropped afterwards.
  if (next.origin !== hop.url.origin) {
    hop.headers.delete("authorization");
    hop.headers.delete("cookie");
  }
  if (
    (status === 303 && hop.method !== "HEAD") ||
    ((status === 301 || status === 302) && hop.method === "POST")
  ) {
    hop.method = "GET";
    hop.hasBody = false;
    for (const h of ["content-type", "content-range", "content-length"]) hop.headers.delete(h);
  }
  hop.url = next;
}
