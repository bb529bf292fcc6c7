/**
 * Typed errors. Every error names the argument (or resource) at fault and,
 * where there is one, what to do about it.
 * @module
 */

/**
 * Base class of every error thrown or rejected by flexattn. `code` is a stable
 * string (like Node's `ERR_*` codes) that programs can branch on; the message
 * is for people and may change. The codes are listed in the README.
 */
export class FlexAttnError extends Error {
  /** Stable error code, e.g. `'ERR_FLEXATTN_SHAPE'`; see {@link ERROR_CODES}. */
  readonly code: string;
  constructor(message: string, options?: { cause?: unknown; code?: string }) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = new.target.name;
    this.code = options?.code ?? codeOf(new.target);
  }
}

/** An argument had the wrong type, shape, dtype, device, stride or value. */
export class InvalidArgumentError extends FlexAttnError {
  /** Name of the offending argument, e.g. `"q"` or `"options.scale"`. */
  readonly argument: string;
  /** What was expected, in words. */
  readonly expected: string;
  /** What was received, in words (may be empty). */
  readonly received: string;
  constructor(argument: string, expected: string, received = '') {
    super(`${argument}: expected ${expected}${received ? `, got ${received}` : ''}`);
    this.argument = argument;
    this.expected = expected;
    this.received = received;
  }
}

/** Shapes of two or more arguments do not fit together. */
export class ShapeError extends InvalidArgumentError {}

/** A dtype is not supported for this argument. */
export class DTypeError extends InvalidArgumentError {}

/** Tensors are on different devices, or on a device that does not exist. */
export class DeviceError extends InvalidArgumentError {}

/** A tensor (or another disposable object, named by `what`) was used after `dispose()`. */
export class DisposedError extends FlexAttnError {
  readonly argument: string;
  constructor(argument: string, what = 'tensor') {
    super(`${argument}: ${what} was used after dispose()`);
    this.argument = argument;
  }
}

/** The CUDA driver (libcuda.so.1) or a GPU is not available. */
export class CudaUnavailableError extends FlexAttnError {
  /** What was looked for and why it failed. */
  readonly details: string;
  constructor(message: string, details = '') {
    super(message);
    this.details = details;
  }
}

/** NVRTC (libnvrtc) could not be found or loaded. */
export class NvrtcUnavailableError extends FlexAttnError {}

/**
 * A CUDA driver call failed. `cudaError` is the CUDA error name, e.g.
 * `CUDA_ERROR_ILLEGAL_ADDRESS`; `code` is `'ERR_FLEXATTN_CUDA'`.
 */
export class CudaError extends FlexAttnError {
  /** The CUDA driver's error name, e.g. `CUDA_ERROR_ILLEGAL_ADDRESS`. */
  readonly cudaError: string;
  readonly call: string;
  readonly remedy: string;
  constructor(message: string, cudaError: string, call: string, remedy: string) {
    super(message);
    this.cudaError = cudaError;
    this.call = call;
    this.remedy = remedy;
  }
}

/** Device memory ran out even after the allocator freed its cache and retried. */
export class OutOfMemoryError extends CudaError {}

/** Generated kernel source failed to compile. Carries the source and compiler log. */
export class CompileError extends FlexAttnError {
  readonly source: string;
  readonly log: string;
  constructor(message: string, source: string, log: string) {
    super(message);
    this.source = source;
    this.log = log;
  }
}

/**
 * A mod (scoreMod/maskMod) is malformed: wrong types, rank, unknown param, a
 * JavaScript operator or control flow on an expression, or the user's function
 * threw while being traced (then `cause` is what it threw).
 */
export class ModError extends FlexAttnError {
  /** Printed form of the offending expression. */
  readonly expression: string;
  constructor(message: string, expression = '', options?: { cause?: unknown }) {
    super(expression ? `${message} (in ${expression})` : message, options);
    this.expression = expression;
  }
}

/**
 * A gradient was asked for that the mod does not have: `score`, or a tensor
 * named in `gradFor`, reaches the mod's result only through a comparison, an
 * index, `floorDiv` or `toInt` (piecewise constant, so there is no derivative
 * to give). Thrown by the backward ops at the call, before any work.
 */
export class NoGradientError extends ModError {}

/**
 * What was asked for exists in the API but not (yet) on this backend, e.g. the
 * backward pass on CUDA tensors. Nothing ran; the message says what does work.
 */
export class NotImplementedError extends FlexAttnError {}

/**
 * The operation was cancelled through its `signal` (an `AbortSignal`, e.g.
 * `AbortSignal.timeout(ms)`). `name` is `'AbortError'` and `code` is
 * `'ABORT_ERR'`, as for Node's own aborted operations; `cause` is the
 * signal's `reason`.
 */
export class AbortError extends FlexAttnError {
  constructor(message = 'The operation was aborted', options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The on-disk kernel cache could not be read or written (permissions, full disk). */
export class CacheError extends FlexAttnError {}

/**
 * A sequence handle that the `KvCache` does not hold: never made by
 * it, or already freed. `argument` names where it was passed.
 */
export class UnknownSequenceError extends InvalidArgumentError {}

/**
 * A `KvCache` has too few free pages for an append (or fork's first
 * write). Nothing was written; `neededPages` and `freePages` say by how much.
 */
export class KvCacheFullError extends FlexAttnError {
  readonly neededPages: number;
  readonly freePages: number;
  constructor(message: string, neededPages = 0, freePages = 0) {
    super(message);
    this.neededPages = neededPages;
    this.freePages = freePages;
  }
}

/**
 * Something that cannot happen while a CUDA graph is being captured
 * (`captureGraph`): a host copy or a wait for the GPU, a capture inside
 * another, a change to the sequences of a KvCache the capture uses, or a
 * capture that the driver could not record. The message says what to do
 * instead; a failed capture leaves the device and every cache as before.
 */
export class GraphCaptureError extends FlexAttnError {}

/**
 * A captured graph cannot replay as it was captured: one of its sequences
 * would outgrow the pages per sequence the capture reserved (`maxSeqLen`),
 * or the graph is replayed while a capture is in progress. Nothing was
 * enqueued and no cache changed. (A freed sequence gives an
 * UnknownSequenceError, a full cache a KvCacheFullError, as for `append`.)
 */
export class GraphReplayError extends FlexAttnError {}

/**
 * NCCL (libnccl.so.2) was not found where flexattn looks for it, or
 * `FLEXATTN_NCCL` names a file that does not load or is not NCCL. The message
 * lists every place searched and how to install it
 * (`pip install nvidia-nccl-cu13`, or set `FLEXATTN_NCCL`).
 */
export class NcclUnavailableError extends FlexAttnError {}

/** The NCCL found is older than the 2.18 flexattn needs; `version` is what it reported. */
export class NcclVersionError extends NcclUnavailableError {
  /** The version the library reported, e.g. `"2.17.1"`. */
  readonly version: string;
  /** The library's path. */
  readonly path: string;
  constructor(message: string, version = '', path = '') {
    super(message);
    this.version = version;
    this.path = path;
  }
}

/** The NCCL found lacks a function flexattn calls (a damaged or partial library). */
export class NcclSymbolError extends NcclUnavailableError {
  /** The missing symbols, comma-separated. */
  readonly symbols: string;
  readonly path: string;
  constructor(message: string, symbols = '', path = '') {
    super(message);
    this.symbols = symbols;
    this.path = path;
  }
}

/**
 * An NCCL call failed. `call` names it (e.g. `'ncclCommInitRank'`),
 * `ncclResult` is the result code's name (e.g. `'ncclInvalidUsage'`) and
 * `detail` NCCL's own text (ncclGetErrorString and ncclGetLastError).
 */
export class NcclError extends FlexAttnError {
  readonly call: string;
  readonly ncclResult: string;
  readonly detail: string;
  constructor(message: string, call = '', ncclResult = '', detail = '') {
    super(message);
    this.call = call;
    this.ncclResult = ncclResult;
    this.detail = detail;
  }
}

/** Something inside flexattn failed that should not have: a bug; please report it. */
export class InternalError extends FlexAttnError {}

/**
 * Every `code` a flexattn error can carry, with the class that carries it.
 * Stable across releases: new codes may be added, none is renamed.
 */
export const ERROR_CODES = {
  ERR_FLEXATTN: 'FlexAttnError',
  ERR_FLEXATTN_INVALID_ARGUMENT: 'InvalidArgumentError',
  ERR_FLEXATTN_SHAPE: 'ShapeError',
  ERR_FLEXATTN_DTYPE: 'DTypeError',
  ERR_FLEXATTN_DEVICE: 'DeviceError',
  ERR_FLEXATTN_DISPOSED: 'DisposedError',
  ERR_FLEXATTN_CUDA_UNAVAILABLE: 'CudaUnavailableError',
  ERR_FLEXATTN_NVRTC_UNAVAILABLE: 'NvrtcUnavailableError',
  ERR_FLEXATTN_CUDA: 'CudaError',
  ERR_FLEXATTN_OUT_OF_MEMORY: 'OutOfMemoryError',
  ERR_FLEXATTN_COMPILE: 'CompileError',
  ERR_FLEXATTN_MOD: 'ModError',
  ERR_FLEXATTN_NO_GRADIENT: 'NoGradientError',
  ERR_FLEXATTN_NOT_IMPLEMENTED: 'NotImplementedError',
  ABORT_ERR: 'AbortError',
  ERR_FLEXATTN_CACHE: 'CacheError',
  ERR_FLEXATTN_INTERNAL: 'InternalError',
  ERR_FLEXATTN_UNKNOWN_SEQUENCE: 'UnknownSequenceError',
  ERR_FLEXATTN_KV_CACHE_FULL: 'KvCacheFullError',
  ERR_FLEXATTN_GRAPH_CAPTURE: 'GraphCaptureError',
  ERR_FLEXATTN_GRAPH_REPLAY: 'GraphReplayError',
  ERR_FLEXATTN_NCCL_UNAVAILABLE: 'NcclUnavailableError',
  ERR_FLEXATTN_NCCL_VERSION: 'NcclVersionError',
  ERR_FLEXATTN_NCCL_SYMBOL: 'NcclSymbolError',
  ERR_FLEXATTN_NCCL: 'NcclError',
} as const;

/** A stable error code (a key of {@link ERROR_CODES}). */
export type ErrorCode = keyof typeof ERROR_CODES;

function codeOf(cls: Function): string {
  for (let c: Function | null = cls; c && c !== Error; c = Object.getPrototypeOf(c) as Function | null) {
    for (const [code, name] of Object.entries(ERROR_CODES)) if (name === c.name) return code;
  }
  return 'ERR_FLEXATTN';
}
