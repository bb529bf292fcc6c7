/**
 * Which forward kernel a launch loads: its name (the JIT cache key's readable
 * part) and the source that instantiates it from the kernel templates, with
 * the mods' generated CUDA in front for flex variants.
 * Internal: not exported from the package.
 * @module
 */
import type { KernelSpec } from '../jit.js';
import type { CudaModCode } from '../mods/index.js';
import type { Family, Mode } from './plan.js';
import type { Shape } from './tiles.js';

function instantiate(name: string, D: number, dtype: string, mode: Mode, family: Family, shape?: Shape): string {
  if (family === 'sm90') return `#include "flash_fwd_sm90.cuh"\nFLEXATTN_FWD_SM90_KERNEL(${name}, ${D}, ${dtype}, ${mode})\n`;
  if (!shape) return `#include "flash_fwd.cuh"\nFLEXATTN_FWD_KERNEL(${name}, ${D}, ${dtype}, ${mode})\n`;
  const mt = shape.BM / (16 * shape.warps);
  const qInRegs = mt === 1 || D <= 32;
  return `#include "flash_fwd.cuh"\nFLEXATTN_FWD_KERNEL_SHAPE(${name}, ${D}, ${dtype}, ${mode}, ${shape.BM}, ${shape.BN}, ${shape.warps}, ${shape.stages}, ${qInRegs})\n`;
}

/** @internal A precompiled dense or causal kernel (no mods, default tile): also in the addon's fatbin. */
export function denseKernel(D: number, dtype: string, mode: Mode, family: Family): KernelSpec {
  const fam = family === 'sm90' ? 'sm90_' : '';
  const name = `flexattn_fwd_${fam}d${D}_${dtype}${mode === 'kCausal' ? '_causal' : ''}`;
  return { kernel: name, module: name, source: instantiate(name, D, dtype, mode, family) };
}

/**
 * @internal A JIT-compiled variant with the mods' code. A segmented launch compiles its
 * own variant: the kernel reads p.tile_starts, and its mask (the segmented
 * schedule's maskMod) is only exact on that grid.
 */
export function flexKernel(code: CudaModCode, D: number, dtype: string, mode: Mode, family: Family,
  shape: Shape | undefined, segmented: boolean): KernelSpec {
  const fam = family === 'sm90' ? 'sm90_' : '';
  const shapeTag = shape ? `_${shape.BM}x${shape.BN}w${shape.warps}s${shape.stages}` : '';
  const segTag = segmented ? '_seg' : '';
  const name = `flexattn_flex_${fam}${code.hash.slice(0, 16)}_d${D}_${dtype}_${mode.slice(1).toLowerCase()}${segTag}${shapeTag}`;
  return {
    kernel: name,
    source: `${code.source}\n${segmented ? '#define FLEX_SEGMENTED_GRID 1\n' : ''}${instantiate(name, D, dtype, mode, family, shape)}`,
  };
}

/**
 * @internal The warp-specialised Hopper forward (family sm90ws, sm90_ws_entry.cuh): dense or causal, no mods.
 * Not in the fatbin (it is opt-in and not yet run on a GPU): NVRTC builds it from its two-line source. It is
 * named as a module so that it loads like the precompiled kernels, one optimized build and no quick tier (a
 * --Ofast-compile build of a warp-specialised kernel would be the one the first calls, and a quick test, see).
 */
export function sm90wsKernel(D: number, dtype: string, mode: Mode): KernelSpec {
  const causal = mode === 'kCausal';
  const name = `flexattn_fwd_sm90ws_d${D}_${dtype}${causal ? '_causal' : ''}`;
  return { kernel: name, module: name, source: `#include "sm90_ws_entry.cuh"\nFLEXATTN_FWD_SM90WS_KERNEL(${name}, ${D}, ${dtype}, ${causal})\n` };
}

/**
 * @internal FlexAttention on the warp-specialised Hopper forward (family sm90ws, sm90_ws_flex.cuh): the
 * block mask's own lists (block sizes multiples of 128) or, without a mask, every kv tile; the mods' code in
 * front. NVRTC-built per mod pair like the other flex variants, but named as a module as sm90wsKernel is:
 * one optimized build, no --Ofast-compile quick tier for a warp-specialised kernel. Not yet run on a GPU.
 */
export function sm90wsFlexKernel(code: CudaModCode, D: number, dtype: string): KernelSpec {
  const name = `flexattn_flex_sm90ws_${code.hash.slice(0, 16)}_d${D}_${dtype}`;
  return { kernel: name, module: name, source: `${code.source}\n#include "sm90_ws_entry.cuh"\nFLEXATTN_FWD_SM90WS_FLEX_KERNEL(${name}, ${D}, ${dtype})\n` };
}

/**
 * @internal The decode / ragged attention kernel (decode.cuh): precompiled without mods
 * (dense and causal are runtime flags), JIT-compiled with the mods' code in front.
 */
export function decodeKernel(D: number, dtype: string, code?: CudaModCode): KernelSpec {
  if (!code) {
    const name = `flexattn_decode_d${D}_${dtype}`;
    return { kernel: name, module: name, source: `#include "decode.cuh"\nFLEXATTN_DECODE_KERNEL(${name}, ${D}, ${dtype})\n` };
  }
  const name = `flexattn_decode_flex_${code.hash.slice(0, 16)}_d${D}_${dtype}`;
  return { kernel: name, source: `${code.source}\n#include "decode.cuh"\nFLEXATTN_DECODE_KERNEL(${name}, ${D}, ${dtype})\n` };
}

/** @internal The split-KV combine of the decode kernel (reads no mods: always precompiled). */
export function decodeCombineKernel(D: number, dtype: string): KernelSpec {
  const name = `flexattn_decode_combine_d${D}_${dtype}`;
  return { kernel: name, module: name, source: `#include "decode.cuh"\nFLEXATTN_DECODE_COMBINE_KERNEL(${name}, ${D}, ${dtype})\n` };
}
