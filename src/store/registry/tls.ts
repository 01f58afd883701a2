// TLS material for one registry: extra CA roots, a client certificate, and pinned
// self-signed certificates.
//
// Sources: every --cacert file, then certDir/HOST[:PORT]/*.crt (the /etc/docker/certs.d
// layout), and the first certDir/HOST[:PORT]/NAME.cert with a matching NAME.key as the
// client certificate.
//
// Self-signed server certificates: the usual recipe (`openssl req -x509 …`) makes a
// certificate that is its own CA (basicConstraints CA:TRUE). Deno's fetch (rustls) refuses a
// CA certificate presented as the server's own (CaUsedAsEndEntity) even when it is trusted,
// while curl and skopeo (OpenSSL, Go) accept it. A certificate given as a CA that is
// self-signed and names the registry's host is therefore *pinned*: the connection is accepted
// when the server presents exactly that certificate (its SHA-256 fingerprint), as curl in
// effect does, and the requests go through node:https (see client.ts). node:crypto's
// X509Certificate reads the certificates; it is loaded only when there are CA files.
import { UserError } from "../../errors.ts";
import { join } from "../../path.ts";

/** What a TLS connection to one registry host needs (all PEM text). */
export interface TlsMaterial {
  /** Extra CA roots, trusted besides the system's. */
  caCerts: string[];
  /** Client certificate and key (certs.d NAME.cert + NAME.key). */
  cert?: string;
  key?: string;
  /**
   * SHA-256 fingerprints (`AA:BB:…`, as node:crypto prints them) of self-signed certificates
   * naming the host: a server presenting one of these is trusted as it is.
   */
  pinned: string[];
}

/** Where certificates come from. */
export interface TlsSources {
  /** PEM files with extra CA certificates (--cacert). */
  caCertFiles?: string[];
  /** A directory laid out like /etc/docker/certs.d. */
  certDir?: string;
}

async function readPem(path: string, what: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    throw new UserError(`cannot read ${what} ${path}: ${(e as Error).message}`);
  }
}

/**
 * What keeps the PEM file `path` (--cacert) from serving, in a few words ("no such file",
 * "holds no PEM certificate", the system's error), or undefined when it holds a certificate.
 */
export async function caFileProblem(path: string): Promise<string | undefined> {
  try {
    if (certificateBlocks(await Deno.readTextFile(path)).length > 0) return undefined;
    return "holds no PEM certificate";
  } catch (e) {
    return e instanceof Deno.errors.NotFound ? "no such file" : (e as Error).message;
  }
}

/** The PEM CERTIFICATE blocks of a file's text. */
function certificateBlocks(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
}

/**
 * Fingerprints of the self-signed certificates among `pems` that name `hostname` (a DNS
 * name, or an IP address in any form URL.hostname gives). A pin replaces chain verification,
 * not the validity period: a self-signed certificate naming the host that has expired, or
 * is not valid yet, at `now` is a UserError (as it is for curl and skopeo).
 */
async function selfSignedFor(
  pems: string[],
  hostname: string,
  now = new Date(),
): Promise<string[]> {
  const { X509Certificate } = await import("node:crypto");
  const host = hostname.replace(/^\[(.*)\]$/, "$1");
  const ip = /^[\d.]+$/.test(host) || host.includes(":");
  const out: string[] = [];
  for (const pem of pems) {
    for (const block of certificateBlocks(pem)) {
      let cert: InstanceType<typeof X509Certificate>;
      try {
        cert = new X509Certificate(block);
      } catch {
        continue;
      }
      if (cert.issuer !== cert.subject) continue;
      const names = ip ? cert.checkIP(host) : cert.checkHost(host);
      if (names === undefined) continue;
      const [from, to] = [new Date(cert.validFrom), new Date(cert.validTo)];
      if (now < from || now > to) {
        throw new UserError(
          `the self-signed certificate given for ${hostname} (${
            cert.subject.replace(/\n/g, ", ")
          }) ` +
            `is valid from ${from.toISOString()} to ${to.toISOString()}, not now`,
        );
      }
      out.push(cert.fingerprint256);
    }
  }
  return out;
}

/**
 * The directory holding the certificates for `host` under --cert-dir `root`: `root/HOST`
 * (`/etc/docker/certs.d`'s layout) when there is one, else `root` itself (skopeo's
 * `--src-cert-dir`: the files directly in it). Throws UserError when `root` is no directory.
 */
async function certificateDirectory(root: string, host: string): Promise<string> {
  const info = await Deno.stat(root).catch((e) => e as Error);
  if (info instanceof Error || !info.isDirectory) {
    const why = info instanceof Deno.errors.NotFound
      ? "no such directory"
      : info instanceof Error
      ? info.message
      : "not a directory";
    throw new UserError(`certificate directory ${root}: ${why}`);
  }
  const perHost = join(root, host);
  const sub = await Deno.stat(perHost).catch(() => undefined);
  return sub?.isDirectory ? perHost : root;
}

/**
 * Collect the TLS material for `host` (`HOST` or `HOST:PORT` as written in the reference).
 * Throws a UserError for an unreadable file, a CA file without a PEM certificate, or a
 * client certificate without its key.
 */
export async function loadTlsMaterial(host: string, src: TlsSources): Promise<TlsMaterial> {
  const out: TlsMaterial = { caCerts: [], pinned: [] };
  const checkPem = (pem: string, file: string) => {
    if (certificateBlocks(pem).length === 0) {
      throw new UserError(`${file} holds no PEM certificate`);
    }
  };
  for (const file of src.caCertFiles ?? []) {
    const pem = await readPem(file, "CA certificate");
    checkPem(pem, file);
    out.caCerts.push(pem);
  }
  if (src.certDir) {
    const dir = await certificateDirectory(src.certDir, host);
    const names: string[] = [];
    try {
      for await (const e of Deno.readDir(dir)) {
        if (e.isFile || e.isSymlink) names.push(e.name);
      }
    } catch (e) {
      throw new UserError(`cannot read certificate directory ${dir}: ${(e as Error).message}`);
    }
    names.sort();
    for (const name of names.filter((n) => n.endsWith(".crt"))) {
      const pem = await readPem(join(dir, name), "CA certificate");
      checkPem(pem, join(dir, name));
      out.caCerts.push(pem);
    }
    const certName = names.find((n) => n.endsWith(".cert"));
    if (certName) {
      const keyName = certName.slice(0, -".cert".length) + ".key";
      if (!names.includes(keyName)) {
        throw new UserError(`client certificate ${join(dir, certName)} has no matching ${keyName}`);
      }
      out.cert = await readPem(join(dir, certName), "client certificate");
      out.key = await readPem(join(dir, keyName), "client key");
    }
  }
  if (out.caCerts.length > 0) {
    out.pinned = await selfSignedFor(out.caCerts, new URL(`https://${host}`).hostname);
  }
  return out;
}
