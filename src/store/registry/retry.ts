// Retry policy of the registry transport: which failures are worth another try, how long to
// wait before it, and how a retry is reported.
//
// A request that fails at the network level (refused, reset, timed out; not TLS or DNS
// failures) or is answered 408, 429, 500, 502, 503 or 504 is sent again after an exponential
// backoff with jitter (baseWait · 2^(n-1) · [0.5, 1.5), at most maxWait). A Retry-After header
// (delay-seconds or an HTTP-date, RFC 9110 §10.2.3) replaces the backoff, capped by maxWait.
// Every retry is reported as one line:
//   ! retry 2 of 5 in 0.4 s: GET http://host/v2/…: 503 Service Unavailable
import { UserError } from "../../errors.ts";

export const DEFAULT_RETRIES = 5;
/** First backoff in ms, before jitter. */
export const DEFAULT_RETRY_BASE_WAIT = 200;
/** Longest wait between two attempts in ms, also the cap on Retry-After. */
export const DEFAULT_RETRY_MAX_WAIT = 60_000;

/** Statuses that say "try again later" rather than "no". */
export const RETRYABLE_STATUSES: ReadonlySet<number> = new Set([408, 429, 500, 502, 503, 504]);

/** The retry policy shared by the transport and the upload and download resumers. */
export interface RetryPolicy {
  /** Retries after the first attempt (0 turns retries off). */
  retries: number;
  /** First backoff in ms before jitter; doubles on every retry. */
  baseWait: number;
  /** Longest wait in ms, also the cap on Retry-After. */
  maxWait: number;
  /** Report one retry (already formatted by retryLine). */
  report(line: string): void;
}

/** A request that failed below HTTP (no response); `retryable` for transient causes. */
export class NetworkError extends UserError {
  constructor(message: string, readonly retryable: boolean) {
    super(message);
  }
}

/** Backoff in ms before retry number `n` (1-based): base · 2^(n-1) · jitter, capped. */
export function backoffDelay(policy: RetryPolicy, n: number): number {
  const exp = policy.baseWait * 2 ** Math.min(30, Math.max(0, n - 1));
  return Math.round(Math.min(policy.maxWait, exp * (0.5 + Math.random())));
}

/**
 * The wait a Retry-After header asks for, in ms: delay-seconds or an HTTP-date (a past date
 * means 0). Undefined when absent or unparsable. Not capped here.
 */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (value === null) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  if (!/[a-z]/i.test(v)) return undefined;
  const when = Date.parse(v);
  if (Number.isNaN(when)) return undefined;
  return Math.max(0, when - now);
}

/** Wait in ms before retry `n`: Retry-After of `res` when it has one (capped), else backoff. */
export function retryDelay(
  policy: RetryPolicy,
  n: number,
  res?: { headers: Headers },
): number {
  const asked = res ? parseRetryAfter(res.headers.get("retry-after")) : undefined;
  if (asked !== undefined) return Math.min(asked, policy.maxWait);
  return backoffDelay(policy, n);
}

/** One retry as a log line: `! retry N of MAX in S s: WHAT`. */
export function retryLine(n: number, max: number, waitMs: number, what: string): string {
  return `! retry ${n} of ${max} in ${(waitMs / 1000).toFixed(1)} s: ${what}`;
}

/** Resolve after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Whether a network-level failure (its one-line description, URL taken out) may go away by
 * itself: refused, reset and timed-out connections do; certificate problems, a TLS handshake
 * with a plain-http server and names that do not resolve do not.
 */
export function isTransientFailure(message: string): boolean {
  return !/certificate|UnknownIssuer|CaUsedAsEndEntity|NotValidForName|\btls\b|\bssl\b|corrupt message|InvalidContentType|dns error|lookup address|ENOTFOUND|EAI_AGAIN|invalid url|unsupported|pinned|KeyMismatch|keys may not be consistent|BadCertificate|CertificateRequired/i
    .test(message);
}
