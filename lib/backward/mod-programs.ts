/**
 * The native mod-VM programs a backward call needs: the score mod itself, its
 * derivative with respect to `score`, and for every read of a `gradFor`
 * tensor the clamped flat element index it reads and the derivative at that
 * read (from lib/mods/grad.ts). Internal.
 * @module
 */
import { Expr, ScoreMod, encodeProgram } from '../mods/index.js';
import type { CapturedTensorLike, GradForCode, HostTensor, IrNode } from '../mods/index.js';
import { differentiateScoreMod, type LoadSite, type ScoreModGradient } from '../mods/grad.js';
import { DTYPE_CODE, type NativeCpuBackwardArgs, type NativeModProgram } from '../native.js';
import { contiguousStrides } from '../tensor.js';

/** The programs of {@link NativeCpuBackwardArgs} that come from the score mod. */
export interface BackwardPrograms {
  scoreMod?: NativeModProgram;
  scoreGrad?: NativeModProgram;
  captured: NonNullable<NativeCpuBackwardArgs['captured']>;
}

/** A score program whose result is `node` (any IR expression of `(score, b, h, q, kv)`). */
function programMod(node: IrNode): ScoreMod {
  return new ScoreMod('score', new Expr(node));
}

const int = (v: number): IrNode => ({ op: 'const', type: 'int', args: [], value: v });
const ibin = (op: 'add' | 'mul' | 'min' | 'max', a: IrNode, b: IrNode): IrNode => ({ op, type: 'int', args: [a, b] });

/**
 * The flat contiguous element index a site reads, each index clamped to
 * `[0, size-1]` as every read is, as a Float (exact: at most 2^24 elements).
 */
function flatIndex(site: LoadSite): IrNode {
  const shape = site.tensor.shape, strides = contiguousStrides(shape);
  let acc: IrNode | undefined;
  site.indices.forEach((ix, d) => {
    const clamped = ibin('max', ibin('min', ix, int(shape[d]! - 1)), int(0));
    const term = strides[d] === 1 ? clamped : ibin('mul', clamped, int(strides[d]!));
    acc = acc ? ibin('add', acc, term) : term;
  });
  return { op: 'toFloat', type: 'float', args: [acc ?? int(0)] };
}

/**
 * The gradient expressions of `scoreMod` (checked at the call: a
 * {@link NoGradientError} when one does not exist). `argNames` name the
 * `gradFor` entries in errors.
 */
export function scoreModGradient(scoreMod: ScoreMod, gradFor: readonly CapturedTensorLike[], argNames: readonly string[]): ScoreModGradient {
  return differentiateScoreMod(scoreMod.expr.node, true, gradFor, argNames);
}

/**
 * Encodes the programs for the native backward. `host`: the score mod's
 * captured tensors' host data in its slot order; `gradFor`: tensors whose
 * gradients are wanted (all read by the mod, as `grad` says).
 */
export function backwardPrograms(scoreMod: ScoreMod | undefined, grad: ScoreModGradient | undefined, host: readonly HostTensor[],
  gradFor: readonly CapturedTensorLike[], params: Readonly<Record<string, number>>): BackwardPrograms {
  if (!scoreMod || !grad) return { captured: [] };
  const hostOf = new Map(scoreMod.tensors.map((t, i) => [t, host[i]!]));
  const encode = (node: IrNode): NativeModProgram => {
    const m = programMod(node);
    return encodeProgram(m, m.tensors.map((t) => hostOf.get(t)!), params);
  };
  return {
    scoreMod: encodeProgram(scoreMod, host, params),
    scoreGrad: encode(grad.dScore),
    captured: gradFor.map((t) => ({
      numel: t.shape.reduce((a, b) => a * b, 1),
      dtype: DTYPE_CODE[t.dtype],
      sites: grad.sites.get(t)!.map((s) => ({ index: encode(flatIndex(s)), weight: encode(s.weight) })),
    })),
  };
}

/**
 * The `gradFor` part of the CUDA backward's generated code (lib/mods/
 * codegen-cuda.ts {@link GradForCode}): for each tensor, in `gradFor` order,
 * its dtype and its load sites as (clamped flat index, derivative) pairs, the
 * same expressions the CPU reference runs.
 */
export function gradForSites(grad: ScoreModGradient, gradFor: readonly CapturedTensorLike[]): GradForCode {
  return {
    tensors: gradFor.map((t) => ({
      dtype: t.dtype as 'f32' | 'bf16' | 'f16',
      sites: grad.sites.get(t)!.map((s) => ({ index: flatIndex(s), weight: s.weight })),
    })),
  };
}
