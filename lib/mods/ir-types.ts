/**
 * The mod IR's data types: the tree built while tracing ({@link IrNode}), its
 * linear form ({@link ModProgram}) and what a program says about its captured
 * tensors and runtime params. Types only, so every consumer of the IR (tracer,
 * interpreter, code generators) can name them without importing the tracer.
 * @module
 */

/** Value type of an expression. */
export type ValueType = 'float' | 'int' | 'bool';

/** dtype of a captured tensor (same names as flexattn's Tensor). */
export type CapturedDType = 'bf16' | 'f16' | 'f32' | 'i32' | 'bool';

/**
 * What a mod needs of a captured tensor (structurally satisfied by flexattn's
 * `Tensor`). Only dtype and rank enter the generated code; data, strides and
 * device pointer are bound at call time.
 */
export interface CapturedTensorLike {
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  readonly offset: number;
  readonly dtype: CapturedDType;
  readonly device: string;
  /** Contiguous host copy; bf16/f16 as raw bits in a Uint16Array. */
  toHost(): Promise<Uint16Array | Float32Array | Int32Array | Uint8Array>;
}

/** Positional arguments of a mod: `score` (score mods only), `b`, `h`, `q`, `kv`. */
export type ArgName = 'score' | 'b' | 'h' | 'q' | 'kv';

/** IR operations. */
export type Op =
  | 'const' | 'arg' | 'param' | 'load'
  | 'add' | 'sub' | 'mul' | 'div' | 'floorDiv' | 'mod' | 'min' | 'max'
  | 'neg' | 'abs' | 'exp' | 'exp2' | 'log' | 'tanh' | 'sigmoid' | 'sqrt'
  | 'lt' | 'le' | 'gt' | 'ge' | 'eq' | 'ne'
  | 'and' | 'or' | 'not' | 'where' | 'toFloat' | 'toInt';

/** Tree node built while tracing (immutable, shared freely). */
export interface IrNode {
  readonly op: Op;
  readonly type: ValueType;
  readonly args: readonly IrNode[];
  /** `const`: the value (f32-rounded for float, int32 for int, 0/1 for bool). */
  readonly value?: number;
  /** `arg`: the argument name; `param`: the param name. */
  readonly name?: string;
  /** `load`: the captured tensor. */
  readonly tensor?: CapturedTensorLike;
}

/** One node of a linearised program; `args` index earlier nodes. */
export interface LinearNode {
  readonly op: Op;
  readonly type: ValueType;
  readonly args: readonly number[];
  readonly value?: number;
  readonly name?: string;
  /** `load`: captured tensor slot (index into {@link ModProgram.tensors}). */
  readonly slot?: number;
}

/** Static description of a captured tensor slot. */
export interface TensorSlotInfo {
  readonly dtype: CapturedDType;
  readonly rank: number;
}

/** A runtime scalar parameter (a kernel argument; value supplied at call time). */
export interface ParamInfo {
  readonly name: string;
  readonly type: 'float' | 'int';
}

/** Linear SSA form of a mod: nodes in topological order, `root` is the result. */
export interface ModProgram {
  readonly kind: 'score' | 'mask';
  readonly nodes: readonly LinearNode[];
  readonly root: number;
  readonly tensors: readonly TensorSlotInfo[];
  readonly params: readonly ParamInfo[];
}
