// Where credentials for a registry come from, in the order Docker, Podman and skopeo users
// expect:
//
//   1. explicit flags (--creds, --username + --password-stdin, --src-creds/--dest-creds)
//   2. --authfile FILE (then only that file), else $REGISTRY_AUTH_FILE, else
//      $XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json,
//      $DOCKER_CONFIG/config.json or ~/.docker/config.json (first file with an answer wins)
//
// Within one file: credHelpers[registry], then credsStore, then `auths` with the most
// specific key first (host/ns/repo, host/ns, host). Docker Hub is stored under
// `https://index.docker.io/v1/` by Docker and under `docker.io` by Podman; both match.
//
// Helpers are `docker-credential-NAME get` on PATH: the server on stdin, JSON
// {ServerURL, Username, Secret} on stdout; Username "<token>" makes Secret an identity
// (OAuth2 refresh) token. A helper gets HELPER_TIMEOUT_MS to answer. A credsStore helper
// that is not installed is skipped (a config.json copied from another machine must not
// break every registry); a credHelpers entry naming this registry is the user's explicit
// choice, so its helper missing is an error.
//
// No secret is ever put in a message: errors name the file, key or helper, never the
// value, and a helper's output is never echoed.
import { envVar } from "../../env.ts";
import { readCapped } from "../../stream.ts";
import { join } from "../../path.ts";
import { describeError, UsageError, UserError } from "../../errors.ts";
import { proxyEnvironment } from "./proxy.ts";

export type Credential =
  | { kind: "basic"; username: string; password: string }
  | { kind: "identityToken"; token: string; username?: string };

export interface CredentialOptions {
  /** USER[:PASS] from the command line; PASS may also come from `password`. */
  creds?: { username: string; password: string };
  /** Only this file (--authfile). */
  authFile?: string;
  /** Never look anything up (--no-creds). */
  noCreds?: boolean;
  /** Where to report what was used (never the secret). */
  debug?: (message: string) => void;
  /**
   * The environment to read (HOME, XDG_RUNTIME_DIR, XDG_CONFIG_HOME, DOCKER_CONFIG,
   * REGISTRY_AUTH_FILE) instead of the process's; helpers also run with it laid over the
   * process environment (PATH included). For tests.
   */
  env?: Record<string, string | undefined>;
}

/** How long a credential helper may take. */
export const HELPER_TIMEOUT_MS = 30_000;

const DOCKER_HUB_KEYS = ["docker.io", "index.docker.io", "registry-1.docker.io"];
const MAX_CONFIG_SIZE = 1024 * 1024;

type Env = (name: string) => string | undefined;

function envReader(vars?: Record<string, string | undefined>): Env {
  return (name) => {
    const v = vars ? vars[name] : envVar(name);
    return v === "" ? undefined : v;
  };
}

/** The credential files to consult, most important first. */
export function credentialFiles(
  authFile?: string,
  vars?: Record<string, string | undefined>,
): string[] {
  if (authFile) return [authFile];
  const env = envReader(vars);
  const files: string[] = [];
  const registryAuthFile = env("REGISTRY_AUTH_FILE");
  if (registryAuthFile) return [registryAuthFile];
  const home = env("HOME");
  const runtime = env("XDG_RUNTIME_DIR");
  if (runtime) files.push(join(runtime, "containers", "auth.json"));
  const configHome = env("XDG_CONFIG_HOME") ?? (home ? join(home, ".config") : undefined);
  if (configHome) files.push(join(configHome, "containers", "auth.json"));
  const dockerConfig = env("DOCKER_CONFIG");
  if (dockerConfig) files.push(join(dockerConfig, "config.json"));
  else if (home) files.push(join(home, ".docker", "config.json"));
  return files;
}

/** Normalize a key of `auths` to host[/path] (no scheme, no Docker Hub /v1/ suffix). */
export function normalizeKey(key: string): string {
  let k = key.trim();
  const hadScheme = /^[a-z]+:\/\//i.test(k);
  k = k.replace(/^[a-z]+:\/\//i, "");
  if (hadScheme) k = k.split("/")[0]; // a URL key names a registry, not a repository
  k = k.replace(/\/+$/, "");
  const [host, ...rest] = k.split("/");
  const h = DOCKER_HUB_KEYS.includes(host.toLowerCase()) ? "docker.io" : host.toLowerCase();
  return [h, ...rest].join("/");
}

/** Keys to try for a repository, most specific first: host/a/b/c, host/a/b, host/a, host. */
function lookupKeys(registry: string, repository: string): string[] {
  const host = normalizeKey(registry);
  const parts = repository.split("/");
  const keys: string[] = [];
  for (let i = parts.length; i > 0; i--) keys.push(`${host}/${parts.slice(0, i).join("/")}`);
  keys.push(host);
  return keys;
}

interface ConfigFile {
  auths?: Record<
    string,
    { auth?: string; identitytoken?: string; username?: string; password?: string }
  >;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

/**
 * Read one credential file. Undefined when it does not exist; a file that exists but cannot
 * be read (its mode, Deno's permissions, not a regular file, too large) is a UserError, as
 * in skopeo: skipping it would send the requests anonymously and blame the registry.
 */
async function readConfig(path: string): Promise<ConfigFile | undefined> {
  let text: string;
  try {
    text = await readCredentialText(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) {
      return undefined;
    }
    throw new UserError(
      `cannot read the credential file ${path}: ${describeError(e)} (fix it, or name ` +
        "another with --authfile, or send no credentials with --no-creds)",
    );
  }
  try {
    const doc = JSON.parse(text);
    return typeof doc === "object" && doc !== null ? doc as ConfigFile : undefined;
  } catch {
    throw new UserError(`credential file ${path} is not valid JSON`);
  }
}

/**
 * Credential files that are pipes or character devices (`--authfile <(…)`,
 * `REGISTRY_AUTH_FILE=/dev/stdin`), by path: read once, as a second read would find them
 * empty. Regular files are read at each lookup.
 */
const streamedTexts = new Map<string, Promise<string>>();

/**
 * The text of the credential file at `path`: a regular file of at most MAX_CONFIG_SIZE
 * bytes, or a pipe or character device read to its end (once per process; at most as many
 * bytes). Throws Deno's error when it cannot be reached (NotFound when it does not exist)
 * and a UserError naming what it is otherwise (a directory, too large).
 */
async function readCredentialText(path: string): Promise<string> {
  const info = await Deno.stat(path);
  const tooLarge = () => new UserError(`larger than ${MAX_CONFIG_SIZE} bytes`);
  if (info.isFile) {
    if (info.size > MAX_CONFIG_SIZE) throw tooLarge();
    return await Deno.readTextFile(path);
  }
  if (!info.isFifo && !info.isCharDevice) throw new UserError("not a regular file or a pipe");
  let text = streamedTexts.get(path);
  if (!text) {
    text = (async () => {
      const file = await Deno.open(path, { read: true });
      const bytes = await readCapped(file.readable, MAX_CONFIG_SIZE); // closes the file
      if (bytes.length > MAX_CONFIG_SIZE) throw tooLarge();
      return new TextDecoder().decode(bytes);
    })();
    streamedTexts.set(path, text);
  }
  return await text;
}

/**
 * Check a credential file named on the command line (`flag`, e.g. `--authfile`) before
 * anything is copied: it must be a readable regular file or pipe of at most 1 MiB holding a JSON
 * object, and every `auths` entry's `auth` must decode. Throws a one-line UserError
 * saying which of these it is not.
 */
export async function checkAuthFile(path: string, flag: string): Promise<void> {
  let text: string;
  try {
    text = await readCredentialText(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new UserError(`${flag} ${path}: no such file`);
    throw new UserError(`${flag} ${path}: ${describeError(e)}`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new UserError(`${flag} ${path}: not valid JSON`);
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) {
    throw new UserError(`${flag} ${path}: not a JSON object (expected {"auths": {...}})`);
  }
  const auths = (doc as ConfigFile).auths;
  if (auths !== undefined && (typeof auths !== "object" || auths === null)) {
    throw new UserError(`${flag} ${path}: "auths" is not an object`);
  }
  for (const [key, entry] of Object.entries(auths ?? {})) {
    if (entry && typeof entry === "object" && typeof entry.auth === "string" && entry.auth) {
      decodeAuth(entry.auth, `${flag} ${path}: auths["${key}"]`);
    }
  }
}

function decodeAuth(value: string, where: string): { username: string; password: string } {
  let text: string;
  try {
    text = new TextDecoder().decode(Uint8Array.from(atob(value.trim()), (c) => c.charCodeAt(0)));
  } catch {
    throw new UserError(`${where}: "auth" is not valid base64`);
  }
  const i = text.indexOf(":");
  if (i <= 0) throw new UserError(`${where}: "auth" does not hold USER:PASSWORD`);
  return { username: text.slice(0, i), password: text.slice(i + 1).replace(/\0+$/, "") };
}

/** A credential helper that is not installed (NotFound from spawning it). */
export class HelperNotFoundError extends UserError {}

/**
 * Ask `docker-credential-NAME get` for the credentials of `server`; undefined when it has
 * none. `env` is laid over the process environment for the helper (and for finding it).
 */
export async function runCredentialHelper(
  name: string,
  server: string,
  env?: Record<string, string | undefined>,
): Promise<Credential | undefined> {
  if (!/^[A-Za-z0-9._-]+$/.test(name)) {
    throw new UserError(`invalid credential helper name ${JSON.stringify(name)}`);
  }
  const program = `docker-credential-${name}`;
  // The proxy variables were taken out of this process's environment (proxy.ts): give them
  // back to the helper, which may need them to reach its own service.
  const childEnv: Record<string, string> = { ...proxyEnvironment() };
  for (const [k, v] of Object.entries(env ?? {})) if (v !== undefined) childEnv[k] = v;
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(program, {
      args: ["get"],
      env: childEnv,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new HelperNotFoundError(`credential helper ${program} not found on PATH`);
    }
    throw new UserError(`credential helper ${program} failed to start: ${(e as Error).message}`);
  }
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, HELPER_TIMEOUT_MS);
  let out: Deno.CommandOutput;
  try {
    const w = child.stdin.getWriter();
    // A helper that exits without reading stdin makes this write fail: that is fine.
    await w.write(new TextEncoder().encode(server)).catch(() => {});
    await w.close().catch(() => {});
    out = await child.output();
  } finally {
    clearTimeout(timer);
  }
  if (timedOut) {
    throw new UserError(
      `credential helper ${program} did not answer within ${HELPER_TIMEOUT_MS / 1000} s`,
    );
  }
  const stdout = new TextDecoder().decode(out.stdout).trim();
  if (!out.success) {
    const said = `${stdout} ${new TextDecoder().decode(out.stderr)}`;
    if (/credentials not found/i.test(said)) return undefined;
    // Never echo its output: it may contain a secret.
    throw new UserError(`credential helper ${program} failed (exit code ${out.code})`);
  }
  let doc: { Username?: unknown; Secret?: unknown };
  try {
    doc = JSON.parse(stdout);
  } catch {
    throw new UserError(`credential helper ${program} printed something that is not JSON`);
  }
  if (typeof doc !== "object" || doc === null || typeof doc.Secret !== "string" || !doc.Secret) {
    return undefined;
  }
  const username = typeof doc.Username === "string" ? doc.Username : "";
  if (username === "<token>") return { kind: "identityToken", token: doc.Secret };
  return { kind: "basic", username, password: doc.Secret };
}

/** The server name a credential helper is asked about. */
function helperServer(registry: string): string {
  return normalizeKey(registry) === "docker.io" ? "https://index.docker.io/v1/" : registry;
}

async function fromFile(
  path: string,
  registry: string,
  repository: string,
  debug: (m: string) => void,
  env?: Record<string, string | undefined>,
): Promise<Credential | undefined> {
  const cfg = await readConfig(path);
  if (!cfg) return undefined;
  const host = normalizeKey(registry);
  if (cfg.credHelpers && typeof cfg.credHelpers === "object") {
    for (const [key, helper] of Object.entries(cfg.credHelpers)) {
      if (normalizeKey(key) === host && typeof helper === "string") {
        debug(`credentials for ${registry}: credHelpers in ${path} (docker-credential-${helper})`);
        const c = await runCredentialHelper(helper, helperServer(registry), env);
        if (c) return c;
      }
    }
  }
  if (typeof cfg.credsStore === "string" && cfg.credsStore !== "") {
    let c: Credential | undefined;
    try {
      c = await runCredentialHelper(cfg.credsStore, helperServer(registry), env);
    } catch (e) {
      if (!(e instanceof HelperNotFoundError)) throw e;
      debug(`credsStore in ${path}: ${e.message}; skipped`);
    }
    if (c) {
      debug(
        `credentials for ${registry}: credsStore in ${path} (docker-credential-${cfg.credsStore})`,
      );
      return c;
    }
  }
  if (cfg.auths && typeof cfg.auths === "object") {
    const entries = new Map<string, NonNullable<ConfigFile["auths"]>[string]>();
    for (const [key, value] of Object.entries(cfg.auths)) {
      if (value && typeof value === "object") entries.set(normalizeKey(key), value);
    }
    for (const key of lookupKeys(registry, repository)) {
      const entry = entries.get(key);
      if (!entry) continue;
      const where = `${path}: auths["${key}"]`;
      if (typeof entry.identitytoken === "string" && entry.identitytoken) {
        debug(`credentials for ${registry}: identity token from ${where}`);
        let user: string | undefined;
        try {
          user = entry.auth ? decodeAuth(entry.auth, where).username : undefined;
        } catch {
          user = undefined; // the user name is only informative next to an identity token
        }
        return { kind: "identityToken", token: entry.identitytoken, username: user };
      }
      if (typeof entry.auth === "string" && entry.auth) {
        debug(`credentials for ${registry}: ${where}`);
        return { kind: "basic", ...decodeAuth(entry.auth, where) };
      }
      if (typeof entry.username === "string" && typeof entry.password === "string") {
        if (entry.username && entry.password) {
          debug(`credentials for ${registry}: ${where} (username/password fields)`);
          return { kind: "basic", username: entry.username, password: entry.password };
        }
      }
      // An empty entry only marks that a helper holds the secret: keep looking.
    }
  }
  return undefined;
}

/**
 * Find the credentials for `registry`/`repository`, or undefined for anonymous access.
 * The result is cached by the caller per registry.
 */
export async function findCredentials(
  registry: string,
  repository: string,
  opts: CredentialOptions = {},
): Promise<Credential | undefined> {
  const debug = opts.debug ?? (() => {});
  if (opts.noCreds) return undefined;
  if (opts.creds) {
    debug(`credentials for ${registry}: from the command line`);
    return { kind: "basic", ...opts.creds };
  }
  for (const file of credentialFiles(opts.authFile, opts.env)) {
    const c = await fromFile(file, registry, repository, debug, opts.env);
    if (c) return c;
  }
  if (opts.authFile) {
    try {
      await Deno.stat(opts.authFile);
    } catch {
      throw new UserError(`--authfile ${opts.authFile}: no such file`);
    }
  }
  debug(`credentials for ${registry}: none found; anonymous`);
  return undefined;
}

/** Parse `USER[:PASS]` as given to --creds; an empty user name is a UsageError (exit 2). */
export function parseCredsFlag(
  text: string,
  flag: string,
): { username: string; password?: string } {
  const i = text.indexOf(":");
  const username = i === -1 ? text : text.slice(0, i);
  if (username === "") throw new UsageError(`--${flag}: empty user name`);
  return { username, password: i === -1 ? undefined : text.slice(i + 1) };
}
