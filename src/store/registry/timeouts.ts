// Every wait on the network is bounded. One Watchdog per request aborts the request's
// AbortSignal (which fetch honours while connecting, during TLS, while sending the body and
// while the response body is read) when the phase it is in runs out of time:
//
// - waiting for the response: connect, TLS, sending a sized body, then the status line and
//   headers (interim 1xx answers do not count as an answer) must complete within `idle`
//   (--timeout, default 30 s), plus 1 s per MiB of a sized request body; requests that commit
//   content (the closing PUT of an upload, manifest PUTs, mounts) get `commit` (default 10 ×
//   idle) instead, since a registry may move a multi-GiB blob before answering;
// - sending a streamed request body: the network must take more bytes within `idle` of the
//   last bytes it took (time spent waiting for our own source does not count);
// - reading the response body: a read must bring data within `idle`, and a body that brings
//   less than MIN_RATE_BYTES within any `idle` window while being read is cut off (a trickle).
//   Time the consumer spends elsewhere (writing to disk, waiting for its own upload) does not
//   count.
//
// Expiry aborts the request with a TimeoutError naming what was awaited; the transport turns
// it into a retryable NetworkError, so the retry policy applies.
//
// Timers are AbortSignal.timeout(): they keep no process alive, and a deadline moved later
// (every byte moves it) costs no new timer until the old one fires.

/** Time limits of one transport, in ms. */
export interface Timeouts {
  /** Idle limit: connect + headers, and any gap in a body, in either direction. */
  idle: number;
  /** Wait for the answer to a request that commits content. */
  commit: number;
}

export const DEFAULT_TIMEOUT = 30_000;
/** A body that brings fewer bytes than this within one idle window is too slow. */
export const MIN_RATE_BYTES = 1024;
/** Extra time allowed for sending a sized body, per byte (1 s per MiB). */
const SEND_MS_PER_BYTE = 1000 / (1024 * 1024);

/** The limits for an idle timeout of `idle` ms (commit waits are 10 × idle). */
export function timeoutsFor(idle = DEFAULT_TIMEOUT): Timeouts {
  return { idle, commit: idle * 10 };
}

/** Thrown into a request when one of its waits ran out of time. */
export class TimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TimeoutError";
  }
}

function seconds(ms: number): string {
  return `${Math.round(ms / 100) / 10} s`;
}

/** The per-request timer: one AbortController, one deadline at a time. */
export class Watchdog {
  readonly #controller = new AbortController();
  readonly #limits: Timeouts;
  #deadline = Infinity;
  #what = "";
  /** When the outstanding timer fires (Infinity: none). */
  #fireAt = Infinity;
  /** Stream-phase accounting (see watchBody / watchUpload). */
  #windowStart = 0;
  #windowBytes = 0;
  #rate = false;
  /** The response has arrived: later upload-side calls no longer apply. */
  #responded = false;

  constructor(limits: Timeouts) {
    this.#limits = limits;
  }

  /** The signal to give fetch. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** The TimeoutError when this watchdog fired, else undefined. */
  get fired(): TimeoutError | undefined {
    const r = this.#controller.signal.reason;
    return r instanceof TimeoutError ? r : undefined;
  }

  /** Abort now with `reason` (say, the caller gave up). */
  abort(reason: unknown): void {
    this.#controller.abort(reason);
  }

  /**
   * Wait for the response: within the idle limit (or the commit limit when `commit`), plus
   * time to send `bodyBytes` of a sized body.
   */
  awaitResponse(commit: boolean, bodyBytes = 0): void {
    if (this.#responded) return;
    const ms = (commit ? this.#limits.commit : this.#limits.idle) + bodyBytes * SEND_MS_PER_BYTE;
    this.#rate = false;
    this.#arm(ms, `no response within ${seconds(ms)}`);
  }

  /** The response's status and headers arrived: the wait for them is over. */
  responded(): void {
    this.#responded = true;
    this.#deadline = Infinity;
  }

  /** Stop watching (the request is complete, or waits on something that is not the network). */
  pause(): void {
    this.#deadline = Infinity;
  }

  /** A streamed request body: the network must take more within the idle limit. */
  awaitUpload(): void {
    if (this.#responded) return;
    this.#rate = false;
    this.#arm(
      this.#limits.idle,
      `the registry took no request body for ${seconds(this.#limits.idle)}`,
    );
  }

  /** A response body read is pending: data must come within the idle limit. */
  awaitBody(): void {
    if (!this.#rate) {
      this.#rate = true;
      this.#windowStart = performance.now();
      this.#windowBytes = 0;
    }
    this.#arm(
      this.#limits.idle,
      `the response body stalled: no data for ${seconds(this.#limits.idle)}`,
    );
  }

  /** `n` bytes of the response body arrived: checks the rate over the current window. */
  bodyData(n: number): void {
    this.#windowBytes += n;
    const now = performance.now();
    if (now - this.#windowStart < this.#limits.idle) return;
    if (this.#windowBytes < MIN_RATE_BYTES) {
      this.#controller.abort(
        new TimeoutError(
          `the response body is too slow: ${this.#windowBytes} bytes in ${
            seconds(now - this.#windowStart)
          }`,
        ),
      );
      return;
    }
    this.#windowStart = now;
    this.#windowBytes = 0;
  }

  #arm(ms: number, what: string): void {
    this.#what = what;
    this.#deadline = performance.now() + ms;
    if (this.#deadline < this.#fireAt) this.#schedule(ms);
  }

  #schedule(ms: number): void {
    const fireAt = performance.now() + ms;
    this.#fireAt = fireAt;
    const timer = AbortSignal.timeout(Math.max(1, Math.ceil(ms)));
    timer.addEventListener("abort", () => {
      if (this.#fireAt !== fireAt) return; // replaced by an earlier timer
      this.#fireAt = Infinity;
      if (this.#deadline === Infinity || this.#controller.signal.aborted) return;
      const left = this.#deadline - performance.now();
      if (left > 0) this.#schedule(left);
      else this.#controller.abort(new TimeoutError(this.#what));
    }, { once: true });
  }
}

/**
 * Wrap a response body so that every pending read is watched (see the file comment) and a
 * failure caused by the watchdog surfaces as `toError(timeout)`. Reads stay zero-copy for
 * BYOB readers: the caller's buffer is handed down to the inner stream.
 */
export function watchBody(
  body: ReadableStream<Uint8Array>,
  dog: Watchdog,
  toError: (e: unknown) => unknown,
): ReadableStream<Uint8Array> {
  let byob: ReadableStreamBYOBReader | undefined;
  let plain: ReadableStreamDefaultReader<Uint8Array> | undefined;
  try {
    byob = body.getReader({ mode: "byob" });
  } catch {
    plain = body.getReader();
  }
  const finish = () => dog.pause();
  // A client whose body does not end when the request is aborted (node:https streams) must
  // not leave a read hanging: every read also ends when the watchdog fires.
  const aborted = new Promise<never>((_, reject) => {
    const fire = () => reject(dog.signal.reason);
    if (dog.signal.aborted) fire();
    else dog.signal.addEventListener("abort", fire, { once: true });
  });
  aborted.catch(() => {});
  const bounded = <T>(read: Promise<T>): Promise<T> => Promise.race([read, aborted]);
  return new ReadableStream({
    type: "bytes",
    async pull(controller) {
      dog.awaitBody();
      try {
        const request = controller.byobRequest;
        if (byob && request?.view) {
          const view = request.view as Uint8Array<ArrayBuffer>;
          const { done, value } = await bounded(
            byob.read(new Uint8Array(view.buffer, view.byteOffset, view.byteLength)),
          );
          dog.pause();
          if (done) {
            finish();
            controller.close();
            // A closed stream with a pending BYOB request must still be answered.
            if (value) request.respondWithNewView(value.subarray(0, 0));
            return;
          }
          dog.bodyData(value.byteLength);
          request.respondWithNewView(value);
          return;
        }
        const reader = byob ?? plain!;
        const { done, value } = await bounded(
          byob ? byob.read(new Uint8Array(64 * 1024)) : plain!.read(),
        );
        dog.pause();
        if (done) {
          finish();
          controller.close();
          // A pending BYOB read of this byte stream is only answered by respond(0).
          controller.byobRequest?.respond(0);
          reader.releaseLock();
          return;
        }
        dog.bodyData(value.byteLength);
        controller.enqueue(value);
      } catch (e) {
        dog.pause();
        if (dog.fired) (byob ?? plain!).cancel(dog.fired).catch(() => {});
        throw toError(dog.fired ?? e);
      }
    },
    cancel(reason) {
      dog.pause();
      return (byob ?? plain!).cancel(reason);
    },
  });
}

/**
 * Wrap a streamed request body: while bytes wait for the network to take them, the watchdog
 * runs (awaitUpload); while the source is read, it does not; at the end of the body the wait
 * for the response starts (awaitResponse with `commit`). `onSent` counts bytes handed on.
 */
export function watchUpload(
  body: ReadableStream<Uint8Array>,
  dog: Watchdog,
  commit: boolean,
  onSent?: (n: number) => void,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      dog.pause();
      const { done, value } = await reader.read();
      if (done) {
        dog.awaitResponse(commit);
        controller.close();
        return;
      }
      controller.enqueue(value);
      onSent?.(value.byteLength);
      dog.awaitUpload();
    },
    cancel(reason) {
      dog.pause();
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}
