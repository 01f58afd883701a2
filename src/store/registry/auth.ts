// Registry authentication: WWW-Authenticate parsing, bearer tokens from the token
// server named by the challenge (anonymous, Basic credentials, or an OAuth2 refresh
// token), Basic, and a token cache.
//
// How it is used (see RegistryStore.#send): before each request the store asks
// header(scopes) for an Authorization value; nothing is sent until the registry has
// answered 401 once, because an open registry needs no token. On a 401 the store calls
// unauthorized(res, scopes, usedHeader), which learns the challenge, forgets the token that
// failed, and says whether one retry is worth it. After that, a request needing new scopes
// fetches its token up front instead of collecting another 401.
//
// Tokens are cached per (realm, service, scopes) until shortly before they expire, and
// concurrent requests needing the same scopes share one token request, so a copy asks
// the token server once per scope set, never once per blob.
//
// Wrong credentials are reported as exactly `authentication failed for HOST`: when the
// token server refuses them, or, for a Basic registry, when one GET /v2/ with them is
// answered 401 (checked once, the first time the registry asks for Basic).
//
// Credentials come from a provider function (credentials.ts looks them up in flags,
// auth.json, docker config.json and credential helpers), called at most once, and only
// when the registry actually asks for authentication.
import { UserError } from "../../errors.ts";
import type { HttpResponse, Transport } from "./transport.ts";

/**
 * A username/password pair, or an OAuth2 refresh token ("identitytoken" in docker
 * config.json). The `kind`-tagged forms are what credentials.ts (the credential-file
 * lookup) returns; both spellings are accepted.
 */
export type Credential =
  | { username: string; password: string }
  | { identityToken: string }
  | { kind: "basic"; username: string; password: string }
  | { kind: "identityToken"; token: string; username?: string };

/**
 * Looks up the credential for a registry (as the user named it, e.g. `docker.io` or
 * `localhost:5000`) and repository; undefined means anonymous.
 */
export type CredentialProvider = (
  registry: string,
  repository: string,
) => Promise<Credential | undefined>;

/** What RegistryOptions.credentials accepts: a fixed credential or a provider. */
export type Credentials = Credential | CredentialProvider;

/** The two things a credential can be, whatever its spelling. */
type Secret = { basic: { username: string; password: string } } | { refreshToken: string };

function normalizeCredential(c: Credential | undefined): Secret | undefined {
  if (c === undefined || c === null) return undefined;
  if ("kind" in c) {
    if (c.kind === "basic") return { basic: { username: c.username, password: c.password } };
    if (c.kind === "identityToken") return { refreshToken: c.token };
    return undefined;
  }
  if ("identityToken" in c) return { refreshToken: c.identityToken };
  if ("username" in c) return { basic: { username: c.username, password: c.password ?? "" } };
  return undefined;
}

export function credentialProvider(c: Credentials | undefined): CredentialProvider {
  if (c === undefined) return () => Promise.resolve(undefined);
  if (typeof c === "function") return c;
  return () => Promise.resolve(c);
}

/** Token responses larger than this are refused (containers/image uses the same cap). */
const MAX_TOKEN_BODY = 1024 * 1024;
/** Tokens live at least this long (token spec default; some servers send less). */
const MIN_TOKEN_LIFETIME_S = 60;
/** Refresh a token this long before it expires, so a request does not race the expiry. */
const EXPIRY_MARGIN_MS = 5_000;

// ---------------------------------------------------------------------------------------
// WWW-Authenticate

export interface Challenge {
  /** Lower-case scheme: "bearer", "basic", ... */
  scheme: string;
  /** Parameters with lower-case names; quoted values unescaped. */
  params: Record<string, string>;
}

const TCHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;

/**
 * Parse a WWW-Authenticate value into its challenges (RFC 9110 §11.6.1). Handles quoted
 * values with commas and backslash escapes, and several challenges in one value — which
 * is what Headers.get() produces when a response carries several WWW-Authenticate lines
 * (joined with ", "). Unparseable tails are ignored rather than fatal.
 */
export function parseChallenges(header: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const n = header.length;
  const skipSpace = () => {
    while (i < n && (header[i] === " " || header[i] === "\t")) i++;
  };
  const skipSeparators = () => {
    while (i < n && (header[i] === " " || header[i] === "\t" || header[i] === ",")) i++;
  };
  const readToken = (): string => {
    const start = i;
    while (i < n && TCHAR.test(header[i])) i++;
    return header.slice(start, i);
  };
  const readQuoted = (): string => {
    // header[i] is the opening quote.
    i++;
    let value = "";
    while (i < n && header[i] !== '"') {
      if (header[i] === "\\" && i + 1 < n) i++;
      value += header[i++];
    }
    i++; // closing quote (or end of input)
    return value;
  };

  let current: Challenge | undefined;
  while (i < n) {
    skipSeparators();
    if (i >= n) break;
    const word = readToken();
    if (word === "") {
      i++; // a stray character: skip it
      continue;
    }
    skipSpace();
    if (current && header[i] === "=") {
      // name=value belongs to the current challenge.
      i++;
      skipSpace();
      const value = header[i] === '"' ? readQuoted() : readToken();
      current.params[word.toLowerCase()] = value;
      continue;
    }
    // Otherwise the word is the scheme of a new challenge.
    current = { scheme: word.toLowerCase(), params: {} };
    out.push(current);
    // A token68 value right after the scheme (`Negotiate abc==`, `Foo abc`) is not a
    // parameter: skip it (a parameter is `name=value`, so something follows its `=`).
    const t68 = /^[A-Za-z0-9\-._~+/]+=*/.exec(header.slice(i));
    if (t68) {
      const after = header.slice(i + t68[0].length).trimStart();
      if (after === "" || after.startsWith(",")) i += t68[0].length;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Scopes

/** `repository:NAME:ACTIONS` for a repository and a list of actions. */
export function repositoryScope(repository: string, actions: string[]): string {
  return `repository:${repository}:${actions.join(",")}`;
}

/**
 * Split scopes into atoms `TYPE:NAME:ACTION`. A resource name may itself contain a
 * colon (host:port), so the type ends at the first colon and the actions start after
 * the last one.
 */
function scopeAtoms(scopes: Iterable<string>): Set<string> {
  const atoms = new Set<string>();
  for (const scope of scopes) {
    for (const s of scope.split(" ")) {
      if (s === "") continue;
      const last = s.lastIndexOf(":");
      const first = s.indexOf(":");
      if (first === -1 || last === first) {
        atoms.add(s);
        continue;
      }
      const resource = s.slice(0, last);
      for (const action of s.slice(last + 1).split(",")) {
        if (action !== "") atoms.add(`${resource}:${action}`);
      }
    }
  }
  return atoms;
}

/** Merge scopes into canonical `TYPE:NAME:a,b` strings (one per resource, sorted). */
function mergeScopes(scopes: Iterable<string>): string[] {
  const byResource = new Map<string, Set<string>>();
  for (const atom of scopeAtoms(scopes)) {
    const last = atom.lastIndexOf(":");
    const resource = last > atom.indexOf(":") ? atom.slice(0, last) : atom;
    const action = last > atom.indexOf(":") ? atom.slice(last + 1) : "";
    if (!byResource.has(resource)) byResource.set(resource, new Set());
    if (action) byResource.get(resource)!.add(action);
  }
  return [...byResource.entries()].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0).map((
    [resource, actions],
  ) => actions.size ? `${resource}:${[...actions].sort().join(",")}` : resource);
}

// ---------------------------------------------------------------------------------------
// Realm safety
//
// Credentials answer only the registry's own challenges: those of the origin the user
// named, never those of a host a request was redirected to (RegistryStore.#send checks
// that the 401 came from the registry's origin). The realm such a challenge names is
// trusted on any host, as docker, skopeo and crane trust it (nvcr.io's realm is on
// authn.nvidia.com, registry-1.docker.io's on auth.docker.io): the user already trusts the
// registry with the credentials, so the registry may say where they go. Secrets (Basic
// credentials, refresh tokens) go to the realm only over https, or over http when the
// registry itself is plain http (the user chose --plain-http). There is no domain
// heuristic: a rule like "the same last two DNS labels" lets registry.example.co.uk hand
// credentials to attacker.co.uk and refuses real registries.
//
// No realm is used at all (not even anonymously) when it carries user info, has a scheme
// other than http(s), or is a link-local address (169.254.0.0/16, fe80::/10: cloud metadata
// endpoints) other than the registry's own host; private addresses are fine (air-gapped
// registries live there). A token request carrying secrets never follows a redirect to
// another origin; an anonymous one may, to an address that would be a usable realm. A
// realm refused for credentials is an error, never a silent anonymous fallback: the user
// asked for authenticated access.

/** 169.254.0.0/16 and fe80::/10 (also IPv4-mapped): where cloud metadata services live. */
export function isLinkLocal(hostname: string): boolean {
  const h = hostname.toLowerCase();
  if (/^169\.254\.\d{1,3}\.\d{1,3}$/.test(h)) return true;
  if (/^\[fe[89ab][0-9a-f]:/.test(h)) return true;
  // ::ffff:169.254.x.y, as the URL parser writes it: [::ffff:a9fe:XXXX].
  return /^\[::ffff:a9fe:[0-9a-f]{1,4}\]$/.test(h);
}

/** A realm as shown in messages: scheme, host, port and path, nothing else. */
function showRealm(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`;
}

/** What checkRealm() decided about a token realm. */
export interface RealmCheck {
  /** The realm as a URL, fragment removed. */
  url: URL;
  /** Why credentials must not be sent to this realm; undefined when they may. */
  refuseCredentials?: string;
}

/**
 * Vet a token realm (the `realm` parameter of a Bearer challenge, distribution token spec
 * "Requesting a Token") that the registry at base URL `registry` announced in its own 401,
 * or a URL a token request was redirected to. Any host may be a realm; credentials may go
 * to it over https, or over http when `registry` is http too.
 *
 * @param realm the realm as the registry wrote it.
 * @param registry the registry's base URL (scheme, host, port).
 * @param name the registry as named in messages.
 * @returns the realm URL, and `refuseCredentials` (why no secret may go there) when it is
 *   http for an https registry.
 * @throws UserError when the realm may not be used at all: not a URL, a scheme other than
 *   http(s), user info in it, or a link-local host that is not the registry's own.
 */
export function checkRealm(realm: string, registry: URL, name: string): RealmCheck {
  let url: URL;
  try {
    url = new URL(realm);
  } catch {
    throw new UserError(`${name}: token realm ${JSON.stringify(realm)} is not a URL`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new UserError(`${name}: token realm uses unsupported scheme ${url.protocol}; refused`);
  }
  if (url.username || url.password) {
    throw new UserError(`${name}: token realm ${showRealm(url)} carries user info; refused`);
  }
  if (isLinkLocal(url.hostname) && url.hostname !== registry.hostname) {
    throw new UserError(
      `${name}: token realm ${showRealm(url)} is a link-local address; refused`,
    );
  }
  url.hash = "";
  const refuseCredentials = url.protocol === "http:" && registry.protocol === "https:"
    ? "it is plain http while the registry is https"
    : undefined;
  return { url, refuseCredentials };
}

/**
 * The error for a 401 to a request made without credentials: the registry cannot tell us
 * whether the repository is missing or private (Docker Hub, GHCR and the distribution
 * registry answer both alike: 401 `insufficient_scope`, UNAUTHORIZED or DENIED), so the
 * line says both, and how to give credentials. `name` is `REGISTRY/REPOSITORY`; `detail`
 * is what was asked and answered (with the registry's own error code and message).
 */
export function deniedWithoutCredentials(name: string, detail: string, hint?: string): UserError {
  return new UserError(
    `${name}: not found, or access denied without credentials (${detail}); ` +
      (hint ?? "give credentials with --creds or --authfile"),
  );
}

// ---------------------------------------------------------------------------------------
// The authenticator

interface CachedToken {
  realm: string;
  service: string;
  /** Whose token it is: the credential it was fetched with (see credentialKey). */
  who: string;
  atoms: Set<string>;
  header: string;
  expiresAt: number;
}

/**
 * What the authenticators of one registry host share (RegistryHosts gives the repositories
 * of a job one each per host and side): the challenge learnt from the first 401, so that a
 * repository opened later asks for its token up front instead of collecting a 401 of its
 * own; the token cache and the token requests in flight, each token keyed by the
 * credential it was fetched with and used only for the scopes it was issued for (a token
 * for one repository never serves another); and the Basic credential checks (one
 * `GET /v2/` per registry and credential, not per repository).
 */
export class AuthCache {
  /** The challenge the registry last sent; undefined until the first 401. */
  challenge?: Challenge;
  tokens: CachedToken[] = [];
  /** Token requests in flight, so concurrent requests share one token request. */
  readonly pending = new Map<string, Promise<CachedToken>>();
  /** Basic credentials checked against /v2/ (by header value): accepted or not. */
  readonly basicChecks = new Map<string, Promise<boolean>>();
  /** The registry's first answer, while it is awaited (see Authenticator.firstContact). */
  contact?: Promise<void>;
  /** The registry's first answer has been handled: no request waits any more. */
  contacted = false;
}

/**
 * A key telling credentials apart in the shared token cache, never shown anywhere: tokens
 * fetched with one credential are not handed to a repository whose lookup found another.
 */
function credentialKey(secret: Secret | undefined): string {
  if (secret === undefined) return "anonymous";
  return "basic" in secret
    ? JSON.stringify(["basic", secret.basic.username, secret.basic.password])
    : JSON.stringify(["refresh", secret.refreshToken]);
}

/** Sent as client_id in OAuth2 token requests. */
const CLIENT_ID = "umoci-copy";
/** Redirects followed by a token GET (see #tokenRequest for which). */
const MAX_TOKEN_REDIRECTS = 3;
/** Characters a bearer token may have to be usable in a header (no spaces, no controls). */
const TOKEN_CHARS = /^[\x21-\x7e]+$/;
/** OAuth2 error codes (RFC 6749 §5.2) that mean the credential itself was refused. */
const OAUTH_REFUSED = new Set(["invalid_grant", "invalid_client", "unauthorized_client"]);

function basicHeader(username: string, password: string): string {
  const bytes = new TextEncoder().encode(`${username}:${password}`);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return `Basic ${btoa(bin)}`;
}

function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 ||
    status === 308;
}

export class Authenticator {
  readonly #transport: Transport;
  /** Registry as named in messages. */
  readonly #name: string;
  /** Repository, for credential lookup (credential files may be keyed by namespace). */
  readonly #repository: string;
  readonly #provider: CredentialProvider;
  #credential?: Promise<Secret | undefined>;
  /** Challenge, tokens and checks: this repository's own, or shared by its registry host. */
  readonly #cache: AuthCache;
  /** Set once the token server refused our credentials: every later request fails alike. */
  #refused?: UserError;
  /** Where credentials come from and how to give them, for failure messages. */
  readonly hint?: string;

  constructor(
    transport: Transport,
    name: string,
    repository: string,
    credentials?: Credentials,
    hint?: string,
    cache: AuthCache = new AuthCache(),
  ) {
    this.#cache = cache;
    this.#transport = transport;
    this.#name = name;
    this.#repository = repository;
    this.#provider = credentialProvider(credentials);
    this.hint = hint;
  }

  #getCredential(): Promise<Secret | undefined> {
    this.#credential ??= this.#provider(this.#name, this.#repository).then(
      normalizeCredential,
      (e) => {
        if (e instanceof UserError) throw e;
        throw new UserError(`cannot get credentials for ${this.#name}: ${(e as Error).message}`);
      },
    );
    return this.#credential;
  }

  /** The one error for credentials the registry or its token server refused. */
  #authFailed(): UserError {
    return new UserError(
      `authentication failed for ${this.#name}${this.hint ? `; ${this.hint}` : ""}`,
    );
  }

  /**
   * True when the request was (or will be) anonymous: the credential lookup found nothing
   * for this registry and repository (or there is none to make, as with --no-creds). A 401
   * then means "not found, or access denied without credentials", not that credentials
   * were wrong. Looks credentials up if nothing has asked yet; false when that lookup fails
   * (its error is reported where it happened).
   */
  async isAnonymous(): Promise<boolean> {
    try {
      return (await this.#getCredential()) === undefined;
    } catch {
      return false;
    }
  }

  /**
   * Call before a request to the registry. The first request goes out at once; others made
   * while its answer is awaited wait for it, so that they go with the challenge it taught
   * (a job of many repositories is challenged once, not once per repository). Returns, for
   * the first request only, the function to call once its answer has been handled (after
   * unauthorized(), or on failure); undefined for the others.
   */
  async firstContact(): Promise<(() => void) | undefined> {
    const c = this.#cache;
    while (!c.contacted && c.contact !== undefined) await c.contact;
    if (c.contacted || c.challenge !== undefined) return undefined;
    let done!: () => void;
    c.contact = new Promise<void>((resolve) => done = resolve);
    return () => {
      c.contacted = true;
      c.contact = undefined;
      done();
    };
  }

  /** Authorization value for a registry request needing `scopes`, if auth is known to be needed. */
  async header(scopes: string[]): Promise<string | undefined> {
    const ch = this.#cache.challenge;
    if (!ch) return undefined;
    if (ch.scheme === "basic") {
      const cred = await this.#getCredential();
      return cred && "basic" in cred
        ? basicHeader(cred.basic.username, cred.basic.password)
        : undefined;
    }
    if (ch.scheme === "bearer") return (await this.#token(ch, scopes)).header;
    return undefined;
  }

  /**
   * The registry answered 401. Learn its challenge and forget the Authorization value
   * that was refused. Returns true when a retry can succeed (a new token or credentials
   * to try); the caller retries once at most. Throws `authentication failed for HOST`
   * (after discarding `res`) when the credentials themselves are wrong.
   */
  async unauthorized(res: HttpResponse, scopes: string[], used?: string): Promise<boolean> {
    const challenges = parseChallenges(res.headers.get("www-authenticate") ?? "");
    const chosen = challenges.find((c) => c.scheme === "bearer" && c.params.realm) ??
      challenges.find((c) => c.scheme === "basic");
    if (!chosen) return false;
    if (used) this.#cache.tokens = this.#cache.tokens.filter((t) => t.header !== used);
    if (chosen.scheme === "basic") {
      let cred: Secret | undefined;
      let accepted = true;
      try {
        cred = await this.#getCredential();
        if (cred && "basic" in cred) {
          const header = basicHeader(cred.basic.username, cred.basic.password);
          // Retrying with the same credentials that were just refused would not help.
          if (used === header) return false;
          accepted = await this.#basicAccepted(header);
        }
      } catch (e) {
        await res.discard();
        throw e;
      }
      if (!accepted) {
        await res.discard();
        throw this.#authFailed();
      }
      this.#cache.challenge = chosen;
      return cred !== undefined && "basic" in cred;
    }
    this.#cache.challenge = chosen;
    // insufficient_scope names the scope it wanted; ask for it too.
    if (chosen.params.scope) scopes.push(...chosen.params.scope.split(" ").filter(Boolean));
    return true;
  }

  /**
   * Whether the registry accepts these Basic credentials: one GET /v2/ with them, shared by
   * every concurrent caller. A 401 there means the user name or password is wrong, which
   * is reported as such instead of as a failure of whatever request came first.
   */
  #basicAccepted(header: string): Promise<boolean> {
    let p = this.#cache.basicChecks.get(header);
    if (!p) {
      p = (async () => {
        const res = await this.#transport.request({
          method: "GET",
          url: new URL("/v2/", this.#transport.baseUrl),
          headers: { authorization: header },
        });
        await res.discard();
        return res.status !== 401;
      })();
      this.#cache.basicChecks.set(header, p);
    }
    return p;
  }

  async #token(ch: Challenge, scopes: string[]): Promise<CachedToken> {
    const realm = ch.params.realm ?? "";
    const service = ch.params.service ?? "";
    const wanted = scopeAtoms(scopes);
    const who = credentialKey(await this.#getCredential());
    const cache = this.#cache;
    const now = Date.now();
    cache.tokens = cache.tokens.filter((t) => t.expiresAt > now);
    const hit = cache.tokens.find((t) =>
      t.realm === realm && t.service === service && t.who === who &&
      [...wanted].every((a) => t.atoms.has(a))
    );
    if (hit) return hit;
    const merged = mergeScopes(scopes);
    const key = JSON.stringify([realm, service, who, merged]);
    let p = cache.pending.get(key);
    if (!p) {
      p = this.#fetchToken(realm, service, merged, who).finally(() => cache.pending.delete(key));
      cache.pending.set(key, p);
    }
    return await p;
  }

  async #fetchToken(
    realm: string,
    service: string,
    scopes: string[],
    who: string,
  ): Promise<CachedToken> {
    if (this.#refused) throw this.#refused;
    const { url, refuseCredentials } = checkRealm(realm, this.#transport.baseUrl, this.#name);
    const cred = await this.#getCredential();
    if (cred && refuseCredentials) {
      throw new UserError(
        `${this.#name}: refusing to send credentials to token realm ${
          showRealm(url)
        }: ${refuseCredentials}`,
      );
    }
    const started = Date.now();
    let res: HttpResponse;
    if (cred && "refreshToken" in cred) {
      // OAuth2 refresh-token grant: POST a form, scopes in one space-separated value.
      const form = new URLSearchParams({
        grant_type: "refresh_token",
        refresh_token: cred.refreshToken,
        client_id: CLIENT_ID,
      });
      if (service) form.set("service", service);
      if (scopes.length) form.set("scope", scopes.join(" "));
      res = await this.#tokenRequest({
        method: "POST",
        url,
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new TextEncoder().encode(form.toString()),
      }, true);
      if (res.status === 404 || res.status === 405) {
        // No OAuth2 endpoint: the plain token GET. A refresh token is never sent there, so
        // this one is anonymous (as Docker does for an identity token without a password).
        await res.discard();
        res = await this.#tokenGet(url, service, scopes);
      }
    } else {
      res = await this.#tokenGet(url, service, scopes, cred?.basic);
    }
    return await this.#readToken(res, realm, service, who, scopes, started, cred === undefined);
  }

  /** Token GET: keep any query the realm already has, one scope parameter per scope. */
  #tokenGet(
    realm: URL,
    service: string,
    scopes: string[],
    basic?: { username: string; password: string },
  ): Promise<HttpResponse> {
    const url = new URL(realm);
    if (service) url.searchParams.set("service", service);
    for (const s of scopes) url.searchParams.append("scope", s);
    const headers: Record<string, string> = {};
    if (basic) {
      headers.authorization = basicHeader(basic.username, basic.password);
      url.searchParams.set("account", basic.username);
    }
    return this.#tokenRequest({ method: "GET", url, headers }, basic !== undefined);
  }

  /**
   * One token request. Redirects are followed by hand, GET only: within the realm's origin
   * always; to another origin only when the request carries no secret (no Authorization,
   * no refresh token), and only to a URL that checkRealm() would accept, never from https to
   * http. So credentials only ever reach the realm the registry named, and no request at
   * all reaches a link-local address through a redirect.
   */
  async #tokenRequest(
    req: { method: string; url: URL; headers: Record<string, string>; body?: Uint8Array },
    secret: boolean,
  ): Promise<HttpResponse> {
    let url = req.url;
    for (let hop = 0;; hop++) {
      const res = await this.#transport.request({ ...req, url, followRedirects: false });
      if (!isRedirect(res.status)) return res;
      const location = res.headers.get("location");
      await res.discard();
      let next: URL | undefined;
      try {
        next = location ? new URL(location, url) : undefined;
      } catch {
        next = undefined;
      }
      const crossOrigin = next !== undefined && next.origin !== url.origin;
      if (
        next === undefined || req.method !== "GET" || hop >= MAX_TOKEN_REDIRECTS ||
        (crossOrigin && (secret || (url.protocol === "https:" && next.protocol === "http:")))
      ) {
        throw new UserError(
          `${this.#name}: token server ${url.origin} answered ${res.status}${
            crossOrigin ? ` (to ${next!.origin})` : ""
          }; token requests ${
            crossOrigin && secret ? "with credentials " : ""
          }do not follow that redirect`,
        );
      }
      if (crossOrigin) next = checkRealm(next.href, this.#transport.baseUrl, this.#name).url;
      url = next;
    }
  }

  async #readToken(
    res: HttpResponse,
    realm: string,
    service: string,
    who: string,
    scopes: string[],
    started: number,
    anonymous: boolean,
  ): Promise<CachedToken> {
    const origin = res.url.origin;
    if (res.status === 401 || res.status === 403) {
      await res.discard();
      throw this.#refused = anonymous
        ? deniedWithoutCredentials(
          `${this.#name}/${this.#repository}`,
          `token server ${origin} answered ${res.status} to an anonymous token request`,
          this.hint,
        )
        : this.#authFailed();
    }
    if (res.status === 400 && res.method === "POST") {
      // OAuth2 reports a bad refresh token as 400 invalid_grant (RFC 6749 §5.2).
      let error: unknown;
      try {
        error = JSON.parse(await res.text(64 * 1024, "token error"))?.error;
      } catch {
        error = undefined;
      }
      if (typeof error === "string" && OAUTH_REFUSED.has(error)) {
        throw this.#refused = this.#authFailed();
      }
      throw new UserError(`${this.#name}: token server ${origin} answered 400`);
    }
    if (res.status !== 200) {
      await res.discard();
      throw new UserError(
        `${this.#name}: token server ${origin} answered ${res.status} ${res.statusText}`.trim(),
      );
    }
    let doc: Record<string, unknown>;
    try {
      doc = JSON.parse(await res.text(MAX_TOKEN_BODY, "token response"));
    } catch (e) {
      if (e instanceof UserError) throw e;
      throw new UserError(`${this.#name}: token server ${origin} sent invalid JSON`);
    }
    if (typeof doc !== "object" || doc === null) {
      throw new UserError(`${this.#name}: token server ${origin} sent no token`);
    }
    // `token` and `access_token` should be the same; containers/image prefers `token`.
    const token = typeof doc.token === "string" && doc.token
      ? doc.token
      : typeof doc.access_token === "string" && doc.access_token
      ? doc.access_token
      : undefined;
    if (!token) throw new UserError(`${this.#name}: token server ${origin} sent no token`);
    // Never echo it: an unusable token is still a secret.
    if (!TOKEN_CHARS.test(token)) {
      throw new UserError(`${this.#name}: token server ${origin} sent a malformed token`);
    }
    const expiresIn = typeof doc.expires_in === "number"
      ? doc.expires_in
      : typeof doc.expires_in === "string" && /^\d+$/.test(doc.expires_in)
      ? Number(doc.expires_in)
      : 0;
    const lifetime = Math.max(MIN_TOKEN_LIFETIME_S, Number.isFinite(expiresIn) ? expiresIn : 0);
    // The lifetime counts from when we asked (conservative); issued_at (the server's clock)
    // only ever makes it shorter, and is ignored when it is implausible (in our future, or
    // older than the whole lifetime: the clocks disagree).
    let base = started;
    const issued = typeof doc.issued_at === "string" ? Date.parse(doc.issued_at) : NaN;
    if (Number.isFinite(issued) && issued < started && started - issued < lifetime * 1000) {
      base = issued;
    }
    const entry: CachedToken = {
      realm,
      service,
      who,
      atoms: scopeAtoms(scopes),
      header: `Bearer ${token}`,
      expiresAt: base + lifetime * 1000 - EXPIRY_MARGIN_MS,
    };
    this.#cache.tokens.push(entry);
    return entry;
  }
}
