/**
 * Cancellation through an `AbortSignal`, shared by every async op and the
 * tensor methods that wait: checking the option, the error an abort gives,
 * and a promise that settles early when the signal fires.
 * Internal: not exported from the package.
 * @module
 */
import { AbortError, InvalidArgumentError } from './errors.js';

/** `signal` as given in an options object: undefined or an AbortSignal (else InvalidArgumentError naming `argument`). */
export function checkSignal(signal: unknown, argument = 'options.signal'): AbortSignal | undefined {
  if (signal === undefined) return undefined;
  if (!(signal instanceof AbortSignal)) {
    const got = signal === null ? 'null' : typeof signal === 'object' ? `an object (${signal.constructor?.name ?? 'Object'})` : typeof signal;
    throw new InvalidArgumentError(argument, 'an AbortSignal (e.g. AbortSignal.timeout(ms) or an AbortController\'s signal)', got);
  }
  return signal;
}

/** The error an aborted `what` rejects with; `cause` is the signal's reason (e.g. a TimeoutError). */
export function abortError(what: string, signal: AbortSignal): AbortError {
  return new AbortError(`${what} was aborted`, { cause: signal.reason });
}

/** Throws the AbortError of `what` when `signal` has fired (a checkpoint between steps of an op). */
export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw abortError(what, signal);
}

/**
 * `work`, rejecting with an AbortError as soon as `signal` fires instead of
 * when `work` settles. Work that completes after the abort is never handed
 * out: its value goes to `discard` (e.g. to free the tensors it made). The
 * abort listener is removed when the returned promise settles.
 */
export function abortable<T>(work: Promise<T>, signal: AbortSignal | undefined, what: string,
  discard: (value: T) => void = () => {}): Promise<T> {
  if (!signal) return work;
  if (signal.aborted) {
    work.then(discard, () => {});
    return Promise.reject(abortError(what, signal));
  }
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const onAbort = (): void => {
      if (settled) return;
      settled = true;
      reject(abortError(what, signal));
      work.then(discard, () => {});
    };
    signal.addEventListener('abort', onAbort, { once: true });
    work.then((value) => {
      signal.removeEventListener('abort', onAbort);
      if (settled) return;
      settled = true;
      resolve(value);
    }, (err: unknown) => {
      signal.removeEventListener('abort', onAbort);
      if (settled) return;
      settled = true;
      reject(err);
    });
  });
}
