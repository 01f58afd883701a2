// Registry authentication: WWW-Authenticate parsing, bearer tokens from the token
// server named by the challenge (anonymous or with credentials), Basic, and a token cache.
//
// How it is used (see RegistryStore.#send): before each request the store asks
// header(scopes) for an Authorization value; nothing is sent until the registry has
// answered 401 once, because an open registry needs no token. On a 401 the store calls
// unauthorized(res, scopes, usedHeader), which learns the challenge, forgets the token that
// failed, and says whether one retry is worth it. After that, a request needing new scopes
// fetches its token up front instead of collecting another 401.
//
// Credentials come from a provider function so a later credential-file implementation
// (docker config.json, containers auth.json, helpers) can be plugged in without touching
// this file's callers.
import { UserError } from "../../errors.ts";
import { type HttpResponse, redactUrl, type Transport } from "./transport.ts";

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
    // A token68 value right after the scheme (`Negotiate abc==`) is not a parameter: skip it.
    const t68 = /^[A-Za-z0-9\-._~+/]+=+/.exec(header.slice(i));
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
// The authenticator

interface CachedToken {
  realm: string;
  service: string;
  atoms: Set<string>;
  header: string;
  expiresAt: number;
}

/** Last two DNS labels: `registry-1.docker.io` and `auth.docker.io` share `docker.io`. */
function effectiveDomain(hostname: string): string {
  if (/^[\d.]+$/.test(hostname) || hostname.startsWith("[")) return hostname;
  return hostname.split(".").slice(-2).join(".");
}

function basicHeader(username: string, password: string): string {
  const bytes = new TextEncoder().encode(`${username}:${password}`);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return `Basic ${btoa(bin)}`;
}

export class Authenticator {
  readonly #transport: Transport;
  /** Registry as named in messages. */
  readonly #name: string;
  /** Repository, for credential lookup (credential files may be keyed by namespace). */
  readonly #repository: string;
  readonly #provider: CredentialProvider;
  #credential?: Promise<Secret | undefined>;
  /** The challenge the registry last sent; undefined until the first 401. */
  #challenge?: Challenge;
  #tokens: CachedToken[] = [];
  /** Token requests in flight, so concurrent requests share one token GET. */
  #pending = new Map<string, Promise<CachedToken>>();

  constructor(
    transport: Transport,
    name: string,
    repository: string,
    credentials?: Credentials,
  ) {
    this.#transport = transport;
    this.#name = name;
    this.#repository = repository;
    this.#provider = credentialProvider(credentials);
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

  /** Authorization value for a registry request needing `scopes`, if auth is known to be needed. */
  async header(scopes: string[]): Promise<string | undefined> {
    const ch = this.#challenge;
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
   * to try); the caller retries once at most.
   */
  async unauthorized(res: HttpResponse, scopes: string[], used?: string): Promise<boolean> {
    const challenges = parseChallenges(res.headers.get("www-authenticate") ?? "");
    const chosen = challenges.find((c) => c.scheme === "bearer" && c.params.realm) ??
      challenges.find((c) => c.scheme === "basic");
    if (!chosen) return false;
    if (used) this.#tokens = this.#tokens.filter((t) => t.header !== used);
    this.#challenge = chosen;
    if (chosen.scheme === "basic") {
      const cred = await this.#getCredential();
      if (!cred || !("basic" in cred)) return false;
      // Retrying with the same credentials that were just refused would not help.
      return used !== basicHeader(cred.basic.username, cred.basic.password);
    }
    // insufficient_scope names the scope it wanted; ask for it too.
    if (chosen.params.scope) scopes.push(...chosen.params.scope.split(" ").filter(Boolean));
    return true;
  }

  async #token(ch: Challenge, scopes: string[]): Promise<CachedToken> {
    const realm = ch.params.realm ?? "";
    const service = ch.params.service ?? "";
    const wanted = scopeAtoms(scopes);
    const now = Date.now();
    this.#tokens = this.#tokens.filter((t) => t.expiresAt > now);
    const hit = this.#tokens.find((t) =>
      t.realm === realm && t.service === service && [...wanted].every((a) => t.atoms.has(a))
    );
    if (hit) return hit;
    const merged = mergeScopes(scopes);
    const key = JSON.stringify([realm, service, merged]);
    let p = this.#pending.get(key);
    if (!p) {
      p = this.#fetchToken(realm, service, merged).finally(() => this.#pending.delete(key));
      this.#pending.set(key, p);
    }
    return await p;
  }

  /** Check the realm URL and decide whether credentials may be sent to it. */
  #checkRealm(realm: string): { url: URL; mayCarryCredentials: boolean } {
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new UserError(`${this.#name}: token realm ${JSON.stringify(realm)} is not a URL`);
    }
    const registry = this.#transport.baseUrl;
    if (url.protocol !== "https:" && url.protocol !== "http:") {
      throw new UserError(`${this.#name}: token realm uses unsupported scheme ${url.protocol}`);
    }
    if (url.username || url.password) {
      throw new UserError(`${this.#name}: token realm carries user info; refused`);
    }
    if (url.protocol === "http:" && registry.protocol === "https:") {
      throw new UserError(`${this.#name}: token realm ${redactUrl(url)} is plain http; refused`);
    }
    // Credentials only go to the registry itself or a host of the same domain
    // (registry-1.docker.io → auth.docker.io), never to an arbitrary realm.
    const mayCarryCredentials = url.host === registry.host ||
      effectiveDomain(url.hostname) === effectiveDomain(registry.hostname);
    return { url, mayCarryCredentials };
  }

  async #fetchToken(realm: string, service: string, scopes: string[]): Promise<CachedToken> {
    const { url, mayCarryCredentials } = this.#checkRealm(realm);
    const cred = mayCarryCredentials ? await this.#getCredential() : undefined;
    let res: HttpResponse;
    if (cred && "refreshToken" in cred) {
      // OAuth2 refresh-token grant: POST a form, scopes in one space-separated value.
      const form = new URLSearchParams({
        grant_type: "refresh_token",
        refresh_token: cred.refreshToken,
        client_id: "umoci-copy",
      });
      if (service) form.set("service", service);
      if (scopes.length) form.set("scope", scopes.join(" "));
      res = await this.#transport.request({
        method: "POST",
        url,
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new TextEncoder().encode(form.toString()),
        followRedirects: false,
      });
    } else {
      // Token GET: keep any query the realm already has, one scope parameter per scope.
      if (service) url.searchParams.set("service", service);
      for (const s of scopes) url.searchParams.append("scope", s);
      const headers: Record<string, string> = {};
      if (cred) {
        headers.authorization = basicHeader(cred.basic.username, cred.basic.password);
        url.searchParams.set("account", cred.basic.username);
      }
      res = await this.#transport.request({ method: "GET", url, headers, followRedirects: false });
    }
    const started = Date.now();
    if (res.status === 401 || res.status === 403) {
      await res.discard();
      throw new UserError(
        `authentication failed for ${this.#name}: token server ${url.origin} answered ${res.status}`,
      );
    }
    if (res.status !== 200) {
      await res.discard();
      throw new UserError(
        `${this.#name}: token server ${url.origin} answered ${res.status} ${res.statusText}`.trim(),
      );
    }
    let doc: Record<string, unknown>;
    try {
      doc = JSON.parse(await res.text(MAX_TOKEN_BODY, "token response"));
    } catch (e) {
      if (e instanceof UserError) throw e;
      throw new UserError(`${this.#name}: token server ${url.origin} sent invalid JSON`);
    }
    const token = typeof doc?.token === "string" && doc.token
      ? doc.token
      : typeof doc?.access_token === "string" && doc.access_token
      ? doc.access_token
      : undefined;
    if (!token) throw new UserError(`${this.#name}: token server ${url.origin} sent no token`);
    const lifetime = Math.max(
      MIN_TOKEN_LIFETIME_S,
      typeof doc.expires_in === "number" && Number.isFinite(doc.expires_in) ? doc.expires_in : 0,
    );
    const entry: CachedToken = {
      realm,
      service,
      atoms: scopeAtoms(scopes),
      header: `Bearer ${token}`,
      // Counted from our clock (issued_at from the server's clock would add skew).
      expiresAt: started + lifetime * 1000 - EXPIRY_MARGIN_MS,
    };
    this.#tokens.push(entry);
    return entry;
  }
}
