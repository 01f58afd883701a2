// IP addresses and host names as the transport's rules see them: loopback (never proxied),
// link-local (never a redirect or token-realm target: 169.254.169.254 is where cloud
// machines keep their credentials), and CIDR ranges (NO_PROXY).

/** Parse an IPv4 or IPv6 address into bytes; undefined when `text` is not one. */
export function ipBytes(text: string): number[] | undefined {
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (v4) {
    const b = v4.slice(1).map(Number);
    return b.every((x) => x <= 255) ? b : undefined;
  }
  if (!text.includes(":")) return undefined;
  try {
    // URL parsing normalizes an IPv6 address to its compressed form.
    const norm = new URL(`http://[${text}]/`).hostname.slice(1, -1);
    const [head, tail] = norm.includes("::") ? norm.split("::") : [norm, undefined];
    const parse = (s: string) => (s ? s.split(":") : []).map((g) => parseInt(g, 16));
    const h = parse(head);
    const t = tail === undefined ? [] : parse(tail);
    const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill(0), ...t];
    if (groups.length !== 8) return undefined;
    return groups.flatMap((g) => [g >> 8, g & 0xff]);
  } catch {
    return undefined;
  }
}

/** True when `addr` lies in `net`/`bits` (both as from ipBytes, of the same family). */
export function inRange(addr: number[], net: number[], bits: number): boolean {
  if (addr.length !== net.length || bits < 0 || bits > addr.length * 8) return false;
  for (let i = 0; i < addr.length; i++) {
    const take = Math.max(0, Math.min(8, bits - i * 8));
    const mask = take === 0 ? 0 : (0xff << (8 - take)) & 0xff;
    if ((addr[i] & mask) !== (net[i] & mask)) return false;
  }
  return true;
}

/** True for localhost names and loopback addresses (127.0.0.0/8, ::1, ::ffff:127.x.x.x). */
export function isLoopback(hostname: string): boolean {
  const host = hostname.replace(/^\[(.*)\]$/, "$1").toLowerCase().replace(/\.$/, "");
  if (host === "localhost" || host.endsWith(".localhost")) return true;
  const ip = ipBytes(host);
  if (!ip) return false;
  if (ip.length === 4) return ip[0] === 127;
  if (ip.slice(0, 15).every((b) => b === 0) && ip[15] === 1) return true;
  const mapped = ip.slice(0, 10).every((b) => b === 0) && ip[10] === 0xff && ip[11] === 0xff;
  return mapped && ip[12] === 127;
}

/** True for link-local addresses: 169.254.0.0/16 and fe80::/10 (and IPv4-mapped forms). */
export function isLinkLocal(hostname: string): boolean {
  const ip = ipBytes(hostname.replace(/^\[(.*)\]$/, "$1"));
  if (!ip) return false;
  if (ip.length === 4) return ip[0] === 169 && ip[1] === 254;
  if (ip[0] === 0xfe && (ip[1] & 0xc0) === 0x80) return true;
  const mapped = ip.slice(0, 10).every((b) => b === 0) && ip[10] === 0xff && ip[11] === 0xff;
  return mapped && ip[12] === 169 && ip[13] === 254;
}
