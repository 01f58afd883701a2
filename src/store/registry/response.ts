// A response from the transport: status, headers, the URL that answered, and a body that
// is read once (stream(), bytes(), text()) or thrown away (discard()).
import { UserError } from "../../errors.ts";

/** How much of an unwanted body we read (to keep the connection reusable) before cancelling. */
const DISCARD_LIMIT = 64 * 1024;

/** A response whose body the caller must consume once: stream(), bytes(), text() or discard(). */
export class HttpResponse {
  readonly status: number;
  readonly statusText: string;
  readonly headers: Headers;
  /** The URL that produced this response (after any redirects): base for relative Locations. */
  readonly url: URL;
  readonly method: string;
  #body: ReadableStream<Uint8Array> | null;

  constructor(
    init: {
      status: number;
      statusText: string;
      headers: Headers;
      url: URL;
      method: string;
      body: ReadableStream<Uint8Array> | null;
    },
  ) {
    this.status = init.status;
    this.statusText = init.statusText;
    this.headers = init.headers;
    this.url = init.url;
    this.method = init.method;
    this.#body = init.body;
  }

  get ok(): boolean {
    return this.status >= 200 && this.status < 300;
  }

  /** Content-Length as a number, or undefined when absent or malformed. */
  get contentLength(): number | undefined {
    const v = this.headers.get("content-length");
    if (v === null || !/^\d+$/.test(v.trim())) return undefined;
    return Number(v.trim());
  }

  /** Take the body as a stream; the caller now owns it (read it or cancel it). */
  stream(): ReadableStream<Uint8Array> {
    const body = this.#body;
    this.#body = null;
    return body ?? new ReadableStream({ start: (c) => c.close() });
  }

  /**
   * Read the whole body, refusing more than `cap` bytes: a Content-Length above the cap
   * fails before reading, and a longer body is cut off at cap+1 bytes.
   */
  async bytes(cap: number, what = "response body"): Promise<Uint8Array> {
    const body = this.#body;
    this.#body = null;
    if (body === null) return new Uint8Array(0);
    const declared = this.contentLength;
    if (declared !== undefined && declared > cap) {
      await body.cancel().catch(() => {});
      throw new UserError(`${what} is ${declared} bytes, more than the ${cap} allowed; refused`);
    }
    const parts: Uint8Array[] = [];
    let total = 0;
    const reader = body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        total += value.byteLength;
        if (total > cap) {
          await reader.cancel().catch(() => {});
          throw new UserError(`${what} is more than the ${cap} bytes allowed; refused`);
        }
        parts.push(value);
      }
    } finally {
      reader.releaseLock();
    }
    if (parts.length === 1) return parts[0];
    const out = new Uint8Array(total);
    let off = 0;
    for (const p of parts) {
      out.set(p, off);
      off += p.byteLength;
    }
    return out;
  }

  async text(cap: number, what?: string): Promise<string> {
    return new TextDecoder().decode(await this.bytes(cap, what));
  }

  /**
   * Throw the body away. Small bodies are read to the end so the connection can be
   * reused; anything longer than DISCARD_LIMIT is cancelled. Never throws.
   */
  async discard(): Promise<void> {
    const body = this.#body;
    this.#body = null;
    if (body === null) return;
    try {
      const reader = body.getReader();
      let total = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        total += value.byteLength;
        if (total > DISCARD_LIMIT) {
          await reader.cancel();
          break;
        }
      }
      reader.releaseLock();
    } catch {
      // A broken body is as good as a discarded one.
    }
  }
}
