/**
 * Mods: `scoreMod` / `maskMod` tracing, built-ins, and the consumers of the IR
 * (CUDA code generator, JS interpreter, native bytecode encoder).
 * @module
 */
export {
  Expr, ScoreMod, MaskMod, ModBase, scoreMod, maskMod, param, tensorAt, where, lift, f32ToInt, printNode, programText,
} from './ir.js';
/** @internal (stripped from the .d.ts, like the declarations themselves) */
export { resolveParams, applyScoreMod } from './ir.js';
export type {
  ValueType, CapturedDType, CapturedTensorLike, ArgName, Op, IrNode, LinearNode, TensorSlotInfo, ParamInfo, ModProgram,
  ExprLike, ScoreModArgs, MaskModArgs, MaskDescriptor,
} from './ir.js';
export {
  causal, fullMask, slidingWindow, prefixLM, documentMask, docIdsFromOffsets, imageBlocks, imageBlocksFromIds,
  imageIdsFromSpans, alibi, alibiSlopes, softcap, logitClip, relativeBias, andMasks, orMasks, notMask, composeScoreMods,
} from './builtins.js';
export type { ImageSpan } from './builtins.js';
export { generateCuda, packArgs, packArgsForTensors } from './codegen-cuda.js';
export type { ArgSource, ArgField, ArgsLayout, CudaModCode, PackValues, GradForCode, GradSiteClass, GradBufField, GradBufValues } from './codegen-cuda.js';
export { encodeProgram, OPCODES, BYTECODE_MAGIC } from './bytecode.js';
/** @internal */
export { runBytecode } from './bytecode.js';
export { toJs, bindHost, evaluateReference, bf16ToF32, f16ToF32 } from './interpret.js';
export type { HostTensor, HostEnv, MaskFn, ScoreFn } from './interpret.js';
