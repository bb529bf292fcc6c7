/**
 * Typed errors. Every error names the argument (or resource) at fault and,
 * where there is one, what to do about it.
 * @module
 */

/** Base class of every error thrown by flexattn. */
export class FlexAttnError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
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

/** A tensor was used after `dispose()`. */
export class DisposedError extends FlexAttnError {
  readonly argument: string;
  constructor(argument: string) {
    super(`${argument}: tensor was used after dispose()`);
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

/** A CUDA driver call failed. `code` is the CUDA error name, e.g. `CUDA_ERROR_ILLEGAL_ADDRESS`. */
export class CudaError extends FlexAttnError {
  readonly code: string;
  readonly call: string;
  readonly remedy: string;
  constructor(message: string, code: string, call: string, remedy: string) {
    super(message);
    this.code = code;
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

/** A mod (scoreMod/maskMod) expression is malformed: wrong types, rank, unknown param. */
export class ModError extends FlexAttnError {
  /** Printed form of the offending expression. */
  readonly expression: string;
  constructor(message: string, expression = '') {
    super(expression ? `${message} (in ${expression})` : message);
    this.expression = expression;
  }
}
