/**
 * CUDA code generation for a (scoreMod?, maskMod?) pair.
 *
 * The fragment is self-contained (no #include, no toolkit headers; fast math via
 * inline PTX) and defines exactly:
 * ```
 * struct FlexModArgs { ... };   // captured tensor pointers, int64 strides/sizes, runtime params
 * __device__ __forceinline__ float flex_score_mod(float score, int b, int h, int q_idx, int kv_idx, const FlexModArgs& args);
 * __device__ __forceinline__ bool  flex_mask_mod(int b, int h, int q_idx, int kv_idx, const FlexModArgs& args);
 * #define FLEX_HAS_SCORE_MOD 0|1
 * #define FLEX_HAS_MASK_MOD 0|1
 * #define FLEX_MASK_MOD_READS_MEMORY 0|1   // the mask mod loads captured tensors
 * ```
 * With a score mod's derivative (the backward kernels, flash_bwd.cuh) also
 * ```
 * __device__ __forceinline__ float flex_score_grad(float score, int b, int h, int q_idx, int kv_idx, const FlexModArgs& args);
 * #define FLEX_HAS_SCORE_GRAD 1
 * ```
 * reading the score mod's captured tensors through the same `FlexModArgs`.
 * With captured-tensor gradients (`gradFor`, see {@link GradForCode}) also
 * ```
 * #define FLEX_GRAD_TENSORS K   // gradFor tensors
 * #define FLEX_GRAD_SITES N     // their load sites (reads) in the score mod
 * struct FlexGradBuf { float* part; const int* lo; void* out; int width; int numel; };
 * __device__ __forceinline__ FlexGradBuf flex_grad_buf(int k, const FlexModArgs& args);
 * __device__ __forceinline__ float flex_grad_site(int s, float score, int b, int h, int q_idx, int kv_idx,
 *                                                 const FlexModArgs& args, int& tensor, int& index);
 * __device__ __forceinline__ void flex_grad_store(int k, const FlexModArgs& args, int e, float v);
 * ```
 * (`flex_grad_site` returns `∂ mod / ∂ t[index]` of site s and sets which
 * gradFor tensor it reads and the clamped flat element index).
 * Slots: the score mod's captured tensors come first (slots 0..n-1), then the
 * mask mod's (n..). Params are the union by name.
 * @module
 */
import { createHash } from 'node:crypto';
import { InvalidArgumentError, ModError } from '../errors.js';
import type { CapturedTensorLike, IrNode, MaskMod, ModProgram, ParamInfo } from './ir.js';
import { Expr, ScoreMod, resolveParams } from './ir.js';

/** Where a field of `FlexModArgs` gets its value from. */
export type ArgSource =
  /** Device pointer of captured tensor `tensorSlot` (pointing at its first element, i.e. base + offset). */
  | { readonly tensorSlot: number }
  /** Element stride of dimension `stride[1]` of tensor slot `stride[0]`. */
  | { readonly stride: readonly [number, number] }
  /** Size of dimension `shape[1]` of tensor slot `shape[0]` (indices are clamped to it). */
  | { readonly shape: readonly [number, number] }
  /** Runtime param value. */
  | { readonly param: string }
  /** A field of gradFor tensor `gradBuf[0]`'s accumulation buffers (backward kernels; see {@link GradForCode}). */
  | { readonly gradBuf: readonly [number, GradBufField] };

/** The per-tensor fields of a captured-tensor gradient (flash_bwd.cuh `FlexGradBuf`). */
export type GradBufField = 'part' | 'lo' | 'out' | 'width' | 'numel';

/** One field of `FlexModArgs`. */
export interface ArgField {
  readonly name: string;
  readonly kind: 'ptr' | 'i64' | 'f32' | 'i32';
  /** Byte offset in the struct. */
  readonly offset: number;
  readonly source: ArgSource;
}

/** Host-side layout of `FlexModArgs` (x86-64 / CUDA ABI: natural alignment). */
export interface ArgsLayout {
  readonly size: number;
  readonly align: number;
  readonly fields: readonly ArgField[];
}

/** Result of {@link generateCuda}. */
export interface CudaModCode {
  /** The self-contained CUDA fragment. */
  readonly source: string;
  /** Layout of `FlexModArgs` for {@link packArgs}. */
  readonly layout: ArgsLayout;
  /** Captured tensors in slot order (score mod's, then mask mod's). */
  readonly tensors: readonly CapturedTensorLike[];
  /** Runtime params (union over both mods). */
  readonly params: readonly ParamInfo[];
  /** Hash of the generated source (use it in kernel cache keys). */
  readonly hash: string;
}

const HELPERS = String.raw`#ifndef FLEX_MOD_HELPERS_DEFINED
#define FLEX_MOD_HELPERS_DEFINED
__device__ __forceinline__ float flex_bits2f(unsigned u) { float y; asm("mov.b32 %0, %1;" : "=f"(y) : "r"(u)); return y; }
__device__ __forceinline__ float flex_ex2(float x) { float y; asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
__device__ __forceinline__ float flex_lg2(float x) { float y; asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
__device__ __forceinline__ float flex_tanh(float x) { float y; asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
__device__ __forceinline__ float flex_sqrt(float x) { float y; asm("sqrt.rn.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
__device__ __forceinline__ float flex_floor(float x) { float y; asm("cvt.rmi.f32.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
__device__ __forceinline__ float flex_fabs(float x) { float y; asm("abs.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
__device__ __forceinline__ float flex_fmin(float a, float b) { float y; asm("min.NaN.f32 %0, %1, %2;" : "=f"(y) : "f"(a), "f"(b)); return y; }
__device__ __forceinline__ float flex_fmax(float a, float b) { float y; asm("max.NaN.f32 %0, %1, %2;" : "=f"(y) : "f"(a), "f"(b)); return y; }
__device__ __forceinline__ int flex_f2i(float x) { int y; asm("cvt.rzi.s32.f32 %0, %1;" : "=r"(y) : "f"(x)); return y; }
__device__ __forceinline__ float flex_exp(float x) { return flex_ex2(x * 1.44269504088896341f); }
__device__ __forceinline__ float flex_log(float x) { return flex_lg2(x) * 0.693147180559945309f; }
__device__ __forceinline__ float flex_sigmoid(float x) { return 1.0f / (1.0f + flex_exp(-x)); }
// Division is correctly rounded (div.rn), not --use_fast_math's div.approx: the
// CPU interpreter and VM divide exactly, and an approximate quotient moves
// floor(a / b) across an integer (x % x != 0, so log(x % x) is NaN, not -inf).
__device__ __forceinline__ float flex_fdiv(float a, float b) { float y; asm("div.rn.f32 %0, %1, %2;" : "=f"(y) : "f"(a), "f"(b)); return y; }
__device__ __forceinline__ float flex_ffloordiv(float a, float b) { return flex_floor(flex_fdiv(a, b)); }
__device__ __forceinline__ float flex_fmod(float a, float b) { return a - b * flex_floor(flex_fdiv(a, b)); }
__device__ __forceinline__ float flex_bf16(unsigned short s) { return flex_bits2f(((unsigned)s) << 16); }
__device__ __forceinline__ float flex_f16(unsigned short s) { float y; asm("{ .reg .b16 t; mov.b16 t, %1; cvt.f32.f16 %0, t; }" : "=f"(y) : "h"(s)); return y; }
__device__ __forceinline__ int flex_iadd(int a, int b) { return (int)((unsigned)a + (unsigned)b); }
__device__ __forceinline__ int flex_isub(int a, int b) { return (int)((unsigned)a - (unsigned)b); }
__device__ __forceinline__ int flex_imul(int a, int b) { return (int)((unsigned)a * (unsigned)b); }
__device__ __forceinline__ int flex_ineg(int a) { return (int)(0u - (unsigned)a); }
__device__ __forceinline__ int flex_iabs(int a) { return a < 0 ? flex_ineg(a) : a; }
__device__ __forceinline__ int flex_imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int flex_imax(int a, int b) { return a > b ? a : b; }
__device__ __forceinline__ int flex_ifloordiv(int a, int b) {
  if (b == 0) return 0;
  if (b == -1) return flex_ineg(a);
  int q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}
__device__ __forceinline__ int flex_imod(int a, int b) {
  if (b == 0 || b == -1) return 0;
  int r = a % b;
  return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}
// In [0, n); 0 when n <= 0 (an empty tensor, read through flex_src's zero word).
__device__ __forceinline__ int flex_clamp(int i, int n) { return flex_imax(0, flex_imin(i, n - 1)); }
// Captured-tensor reads are unconditional loads: an empty tensor reads 0 from
// flex_zeros instead of branching around the load, so loads of one address
// (e.g. slopes[h], ids[b, kv] across rows) stay in one basic block and CSE.
__device__ const unsigned int flex_zeros[2] = {0u, 0u};
template <class T> __device__ __forceinline__ const T* flex_src(const T* p, bool ok) { return ok ? p : reinterpret_cast<const T*>(flex_zeros); }
#endif
`;

function cudaFloat(v: number): string {
  const f = Math.fround(v);
  if (Number.isNaN(f)) return 'flex_bits2f(0x7fffffffu)';
  if (f === Infinity) return 'flex_bits2f(0x7f800000u)';
  if (f === -Infinity) return 'flex_bits2f(0xff800000u)';
  if (Object.is(f, -0)) return '(-0.0f)';
  const s = f.toPrecision(9);
  return f < 0 ? `(${s}f)` : `${s}f`;
}

function cudaInt(v: number): string {
  if (v === -2147483648) return '(-2147483647 - 1)';
  return v < 0 ? `(${v})` : String(v);
}

const PTR_TYPE = { bf16: 'const unsigned short*', f16: 'const unsigned short*', f32: 'const float*', i32: 'const int*', bool: 'const unsigned char*' } as const;
const ARG_NAME: Record<string, string> = { score: 'score', b: 'b', h: 'h', q: 'q_idx', kv: 'kv_idx' };

/** `slotOf(i)`: the `FlexModArgs` slot of the program's tensor slot i. */
function bodyOf(p: ModProgram, slotOf: (slot: number) => number, paramField: (name: string) => string): string {
  const L: string[] = [];
  const ctype = (t: string): string => (t === 'float' ? 'float' : t === 'int' ? 'int' : 'bool');
  p.nodes.forEach((n, i) => {
    const [a, b, c] = n.args.map((x) => `v${x}`);
    const F = n.type === 'float';
    let e: string;
    switch (n.op) {
      case 'const': e = n.type === 'float' ? cudaFloat(n.value!) : n.type === 'int' ? cudaInt(n.value!) : (n.value ? 'true' : 'false'); break;
      case 'arg': e = ARG_NAME[n.name!]!; break;
      case 'param': e = `args.${paramField(n.name!)}`; break;
      case 'load': {
        const s = slotOf(n.slot!);
        const info = p.tensors[n.slot!]!;
        const idx = n.args.map((x, d) => `flex_clamp(v${x}, args.t${s}_n${d}) * args.t${s}_s${d}`);
        const off = idx.length ? idx.join(' + ') : '0';
        // An empty tensor (some size 0) reads as 0: flex_src swaps in a zero word.
        const ok = info.rank ? n.args.map((_, d) => `args.t${s}_n${d} > 0`).join(' && ') : '';
        const raw = ok ? `flex_src(args.t${s}, ${ok})[${off}]` : `args.t${s}[${off}]`;
        e = info.dtype === 'bf16' ? `flex_bf16(${raw})` : info.dtype === 'f16' ? `flex_f16(${raw})`
          : info.dtype === 'bool' ? `(${raw} != 0)` : raw;
        break;
      }
      case 'add': e = F ? `${a} + ${b}` : `flex_iadd(${a}, ${b})`; break;
      case 'sub': e = F ? `${a} - ${b}` : `flex_isub(${a}, ${b})`; break;
      case 'mul': e = F ? `${a} * ${b}` : `flex_imul(${a}, ${b})`; break;
      case 'div': e = `flex_fdiv(${a}, ${b})`; break;
      case 'floorDiv': e = F ? `flex_ffloordiv(${a}, ${b})` : `flex_ifloordiv(${a}, ${b})`; break;
      case 'mod': e = F ? `flex_fmod(${a}, ${b})` : `flex_imod(${a}, ${b})`; break;
      case 'min': e = F ? `flex_fmin(${a}, ${b})` : `flex_imin(${a}, ${b})`; break;
      case 'max': e = F ? `flex_fmax(${a}, ${b})` : `flex_imax(${a}, ${b})`; break;
      case 'neg': e = F ? `-${a}` : `flex_ineg(${a})`; break;
      case 'abs': e = F ? `flex_fabs(${a})` : `flex_iabs(${a})`; break;
      case 'exp': e = `flex_exp(${a})`; break;
      case 'exp2': e = `flex_ex2(${a})`; break;
      case 'log': e = `flex_log(${a})`; break;
      case 'tanh': e = `flex_tanh(${a})`; break;
      case 'sigmoid': e = `flex_sigmoid(${a})`; break;
      case 'sqrt': e = `flex_sqrt(${a})`; break;
      case 'lt': e = `${a} < ${b}`; break;
      case 'le': e = `${a} <= ${b}`; break;
      case 'gt': e = `${a} > ${b}`; break;
      case 'ge': e = `${a} >= ${b}`; break;
      case 'eq': e = `${a} == ${b}`; break;
      case 'ne': e = `${a} != ${b}`; break;
      // Non-short-circuit & / |: the attention kernel evaluates mods across a whole
      // tile, and branch-free logic lets loads that depend only on q or kv be
      // hoisted per row/column (captured-tensor loads are clamped, so always safe).
      case 'and': e = `(bool)(${a} & ${b})`; break;
      case 'or': e = `(bool)(${a} | ${b})`; break;
      case 'not': e = `!${a}`; break;
      case 'where': e = `${a} ? ${b} : ${c}`; break;
      case 'toFloat': e = p.nodes[n.args[0]!]!.type === 'bool' ? `(${a} ? 1.0f : 0.0f)` : `(float)${a}`; break;
      case 'toInt': e = p.nodes[n.args[0]!]!.type === 'bool' ? `(${a} ? 1 : 0)` : `flex_f2i(${a})`; break;
    }
    L.push(`  const ${ctype(n.type)} v${i} = ${e};`);
  });
  L.push(`  return v${p.root};`);
  return L.join('\n');
}

function mergeParams(lists: readonly (readonly ParamInfo[])[]): ParamInfo[] {
  const out = new Map<string, ParamInfo>();
  for (const l of lists) for (const p of l) {
    const prev = out.get(p.name);
    if (prev && prev.type !== p.type) {
      throw new ModError(`param ${p.name} is ${prev.type} in the score mod but ${p.type} in the mask mod`, `$${p.name}`);
    }
    if (!prev) out.set(p.name, p);
  }
  return [...out.values()];
}

/** A device function of `(score, b, h, q_idx, kv_idx)` computing `node`, reading the score mod's captured tensors and params. */
function exprFunction(name: string, ret: 'float', score: ScoreMod, node: IrNode, paramField: (name: string) => string): string {
  const g = new ScoreMod('score', new Expr(node));
  const slots = g.tensors.map((t) => {
    const s = score.tensors.indexOf(t);
    if (s < 0) throw new InvalidArgumentError(name, 'an expression reading only the score mod\'s captured tensors', 'another tensor');
    return s;
  });
  return [
    `__device__ __forceinline__ ${ret} ${name}(float score, int b, int h, int q_idx, int kv_idx, const FlexModArgs& args) {`,
    '  (void)score; (void)b; (void)h; (void)q_idx; (void)kv_idx; (void)args;',
    bodyOf(g.ir, (i) => slots[i]!, paramField),
    '}',
  ].join('\n');
}

/**
 * The derivative `scoreGrad` (an IR expression of `(score, b, h, q, kv)` from
 * lib/mods/grad.ts) as `flex_score_grad`, its captured tensors read through
 * the score mod's slots (it reads a subset of them) and its params by name.
 */
function scoreGradSource(score: ScoreMod, scoreGrad: IrNode, paramField: (name: string) => string): string {
  return ['#define FLEX_HAS_SCORE_GRAD 1', exprFunction('flex_score_grad', 'float', score, scoreGrad, paramField)].join('\n');
}

/**
 * Captured-tensor gradients for the backward kernels (`gradFor`): per tensor
 * its dtype and its load sites, each the flat contiguous element index it reads
 * (a Float expression, each dim clamped, exact below 2^24) and the derivative
 * of the mod there (lib/backward/mod-programs.ts `gradForSites`).
 */
export interface GradForCode {
  readonly tensors: ReadonlyArray<{
    readonly dtype: 'f32' | 'bf16' | 'f16';
    readonly sites: ReadonlyArray<{ readonly index: IrNode; readonly weight: IrNode; readonly accumulate?: GradSiteClass }>;
  }>;
}

/**
 * How the dK/dV pass accumulates one site (lib/cuda/gradfor-plan.ts proves
 * the class; absent: general): `uniform` (index of b, h only), `diagonal`
 * (index base(b, h) + sign · (kv − q), no clamp binding), `general`.
 */
export type GradSiteClass =
  | { readonly kind: 'uniform' }
  | { readonly kind: 'diagonal'; readonly sign: 1 | -1 }
  | { readonly kind: 'general' };

const GRAD_HELPERS = String.raw`struct FlexGradBuf { float* part; const int* lo; void* out; int width; int numel; };
__device__ __forceinline__ unsigned short flex_f2bf16(float x) { unsigned short y; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(y) : "f"(x)); return y; }
__device__ __forceinline__ unsigned short flex_f2f16(float x) { unsigned short y; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(y) : "f"(x)); return y; }`;

/** The `FLEX_GRAD_*` part of the fragment (see the module doc); `gf(k, field)`: the FlexModArgs field name. */
function gradForSource(score: ScoreMod, gf: GradForCode, paramField: (name: string) => string): string {
  const L: string[] = [
    `#define FLEX_GRAD_TENSORS ${gf.tensors.length}`,
    `#define FLEX_GRAD_SITES ${gf.tensors.reduce((n, t) => n + t.sites.length, 0)}`,
    GRAD_HELPERS,
  ];
  const cases: string[] = [];
  // Per site: its accumulation kind (0 general, 1 uniform, 2 diagonal), its slot among the sites of that kind, its sign.
  const kinds: number[] = [], slots: number[] = [], signs: number[] = [], owners: number[] = [];
  const count = [0, 0, 0];
  let s = 0;
  gf.tensors.forEach((t, k) => t.sites.forEach((site) => {
    const acc = site.accumulate ?? { kind: 'general' };
    const kind = acc.kind === 'uniform' ? 1 : acc.kind === 'diagonal' ? 2 : 0;
    kinds.push(kind); slots.push(count[kind]!++); signs.push(acc.kind === 'diagonal' ? acc.sign : 1); owners.push(k);
    L.push(exprFunction(`flex_gs${s}_index`, 'float', score, site.index, paramField));
    L.push(exprFunction(`flex_gs${s}_weight`, 'float', score, site.weight, paramField));
    cases.push(`    case ${s}: tensor = ${k}; index = (int)flex_gs${s}_index(score, b, h, q_idx, kv_idx, args); `
      + `return flex_gs${s}_weight(score, b, h, q_idx, kv_idx, args);`);
    s++;
  }));
  const table = (name: string, v: number[]): string =>
    `__device__ __forceinline__ constexpr int ${name}(int s) { return ${v.map((x, i) => `s == ${i} ? ${x} : `).join('')}0; }`;
  L.push(
    `#define FLEX_GRAD_UNIFORM ${count[1]}`, `#define FLEX_GRAD_DIAGONAL ${count[2]}`,
    table('flex_grad_site_kind', kinds), table('flex_grad_site_slot', slots), table('flex_grad_site_sign', signs),
    table('flex_grad_site_tensor', owners),
    '__device__ __forceinline__ float flex_grad_site(int s, float score, int b, int h, int q_idx, int kv_idx, const FlexModArgs& args, int& tensor, int& index) {',
    '  switch (s) {', ...cases, '    default: tensor = 0; index = 0; return 0.f;', '  }', '}',
    '__device__ __forceinline__ FlexGradBuf flex_grad_buf(int k, const FlexModArgs& args) {',
    '  FlexGradBuf g;',
    '  switch (k) {',
    ...gf.tensors.map((_, k) => `    case ${k}: g.part = args.g${k}_part; g.lo = args.g${k}_lo; g.out = args.g${k}_out; g.width = args.g${k}_width; g.numel = args.g${k}_numel; break;`),
    '    default: g.part = 0; g.lo = 0; g.out = 0; g.width = 0; g.numel = 0; break;',
    '  }',
    '  return g;',
    '}',
    '__device__ __forceinline__ void flex_grad_store(int k, const FlexModArgs& args, int e, float v) {',
    '  switch (k) {',
    ...gf.tensors.map((t, k) => `    case ${k}: ${t.dtype === 'f32' ? `((float*)args.g${k}_out)[e] = v;`
      : `((unsigned short*)args.g${k}_out)[e] = ${t.dtype === 'bf16' ? 'flex_f2bf16' : 'flex_f2f16'}(v);`} break;`),
    '    default: break;',
    '  }',
    '}',
  );
  return L.join('\n');
}

/**
 * Generates the CUDA fragment for a (scoreMod?, maskMod?) pair (see the module
 * doc for the contract) and the host layout of `FlexModArgs`. `scoreGrad`: the
 * score mod's derivative with respect to `score` (backward kernels), emitted
 * as `flex_score_grad`; the layout is the same with or without it.
 */
export function generateCuda(score?: ScoreMod, mask?: MaskMod, scoreGrad?: IrNode, gradFor?: GradForCode): CudaModCode {
  if (gradFor && gradFor.tensors.length > 0 && !(score && scoreGrad)) {
    throw new InvalidArgumentError('gradFor', 'a score mod and its derivative with captured-tensor gradients', 'none');
  }
  const gf = gradFor && gradFor.tensors.length > 0 ? gradFor : undefined;
  const params = mergeParams([score?.params ?? [], mask?.params ?? []]);
  const paramIndex = new Map(params.map((p, i) => [p.name, i]));
  const paramField = (name: string): string => `p${paramIndex.get(name)}`;
  const tensors: CapturedTensorLike[] = [...(score?.tensors ?? []), ...(mask?.tensors ?? [])];
  const infos = [...(score?.ir.tensors ?? []), ...(mask?.ir.tensors ?? [])];

  // Layout: pointers, then 4-byte strides/sizes and params. Captured tensors are
  // indexed with 32-bit arithmetic (packArgs checks that they fit): the kernel
  // evaluates mods per element, and 64-bit index math there costs throughput.
  const fields: ArgField[] = [];
  const decl: string[] = [];
  let off = 0;
  const add = (name: string, kind: ArgField['kind'], ctype: string, source: ArgSource, comment = ''): void => {
    const sz = kind === 'ptr' || kind === 'i64' ? 8 : 4;
    off = Math.ceil(off / sz) * sz;
    fields.push({ name, kind, offset: off, source });
    decl.push(`  ${ctype} ${name};${comment}`);
    off += sz;
  };
  infos.forEach((t, s) => add(`t${s}`, 'ptr', PTR_TYPE[t.dtype], { tensorSlot: s }, ` // ${t.dtype}, rank ${t.rank}`));
  gf?.tensors.forEach((t, k) => {
    add(`g${k}_part`, 'ptr', 'float*', { gradBuf: [k, 'part'] }, ' // [CTAs, warps, width] f32 partial sums');
    add(`g${k}_lo`, 'ptr', 'const int*', { gradBuf: [k, 'lo'] }, ' // [CTAs] first element of each CTA\'s window');
    add(`g${k}_out`, 'ptr', 'void*', { gradBuf: [k, 'out'] }, ` // the gradient, ${t.dtype}, contiguous`);
  });
  infos.forEach((t, s) => {
    for (let d = 0; d < t.rank; d++) {
      add(`t${s}_s${d}`, 'i32', 'int', { stride: [s, d] });
      add(`t${s}_n${d}`, 'i32', 'int', { shape: [s, d] });
    }
  });
  params.forEach((p, i) => add(`p${i}`, p.type === 'float' ? 'f32' : 'i32', p.type === 'float' ? 'float' : 'int', { param: p.name }, ` // ${p.name}`));
  gf?.tensors.forEach((_, k) => {
    add(`g${k}_width`, 'i32', 'int', { gradBuf: [k, 'width'] });
    add(`g${k}_numel`, 'i32', 'int', { gradBuf: [k, 'numel'] });
  });
  const align = fields.some((f) => f.kind === 'ptr' || f.kind === 'i64') ? 8 : 4;
  const size = fields.length ? Math.ceil(off / align) * align : 4;
  if (!fields.length) decl.push('  int _unused;');

  const src: string[] = [
    '// flexattn generated mods',
    ...(score ? [`// score: ${score.exprString(600).replace(/\n/g, ' ')}`] : []),
    ...(mask ? [`// mask: ${mask.exprString(600).replace(/\n/g, ' ')}`] : []),
    HELPERS,
    `#define FLEX_HAS_SCORE_MOD ${score ? 1 : 0}`,
    `#define FLEX_HAS_MASK_MOD ${mask ? 1 : 0}`,
    `#define FLEX_MASK_MOD_READS_MEMORY ${mask?.ir.nodes.some((n) => n.op === 'load') ? 1 : 0}`,
    'struct FlexModArgs {', ...decl, '};',
    '__device__ __forceinline__ float flex_score_mod(float score, int b, int h, int q_idx, int kv_idx, const FlexModArgs& args) {',
    '  (void)b; (void)h; (void)q_idx; (void)kv_idx; (void)args;',
    score ? bodyOf(score.ir, (i) => i, paramField) : '  return score;',
    '}',
    '__device__ __forceinline__ bool flex_mask_mod(int b, int h, int q_idx, int kv_idx, const FlexModArgs& args) {',
    '  (void)b; (void)h; (void)q_idx; (void)kv_idx; (void)args;',
    mask ? bodyOf(mask.ir, (i) => (score?.tensors.length ?? 0) + i, paramField) : '  return true;',
    '}',
    ...(score && scoreGrad ? [scoreGradSource(score, scoreGrad, paramField)] : []),
    ...(score && gf ? [gradForSource(score, gf, paramField)] : []),
    '',
  ];
  const source = src.join('\n');
  return {
    source, layout: { size, align, fields }, tensors, params,
    hash: createHash('sha256').update(source).digest('hex').slice(0, 32),
  };
}

/** Values to pack into `FlexModArgs`. */
export interface PackValues {
  /** Device address of each captured tensor's first element (buffer base + offset × element size), slot order. */
  readonly tensorPtrs: readonly bigint[];
  /** Element strides of each captured tensor, slot order. */
  readonly tensorStrides: readonly (readonly number[])[];
  /** Shapes of each captured tensor, slot order (used to clamp indices). */
  readonly tensorShapes: readonly (readonly number[])[];
  /** Runtime param values by name. */
  readonly params?: Readonly<Record<string, number>>;
  /** The gradFor tensors' buffers (code made with {@link GradForCode}), in gradFor order. */
  readonly gradBufs?: ReadonlyArray<GradBufValues>;
}

/** Device buffers and window of one gradFor tensor (see run-backward.ts). */
export interface GradBufValues {
  readonly part: bigint;
  readonly lo: bigint;
  readonly out: bigint;
  readonly width: number;
  readonly numel: number;
}

/**
 * Packs `FlexModArgs` bytes (little-endian) for a kernel launch. Throws
 * InvalidArgumentError for a missing param or tensor slot.
 */
export function packArgs(layout: ArgsLayout, v: PackValues): Uint8Array {
  const buf = new Uint8Array(layout.size);
  const dv = new DataView(buf.buffer);
  const paramInfos: ParamInfo[] = [];
  for (const f of layout.fields) {
    if ('param' in f.source) paramInfos.push({ name: f.source.param, type: f.kind === 'f32' ? 'float' : 'int' });
  }
  const pv = resolveParams(paramInfos, v.params);
  let pi = 0;
  for (const f of layout.fields) {
    const s = f.source;
    if ('tensorSlot' in s) {
      const p = v.tensorPtrs[s.tensorSlot];
      if (typeof p !== 'bigint') throw new InvalidArgumentError(`tensorPtrs[${s.tensorSlot}]`, 'a bigint device address', String(p));
      dv.setBigUint64(f.offset, BigInt.asUintN(64, p), true);
    } else if ('stride' in s || 'shape' in s) {
      const [slot, d] = 'stride' in s ? s.stride : s.shape;
      const arr = 'stride' in s ? v.tensorStrides : v.tensorShapes;
      const x = arr[slot]?.[d];
      if (typeof x !== 'number' || !Number.isInteger(x)) {
        throw new InvalidArgumentError(`${'stride' in s ? 'tensorStrides' : 'tensorShapes'}[${slot}][${d}]`, 'an integer', String(x));
      }
      if (Math.abs(x) > 2147483647) {
        throw new InvalidArgumentError(`captured tensor #${slot}`, 'strides and sizes below 2^31 (captured tensors are indexed with 32-bit arithmetic)', String(x));
      }
      dv.setInt32(f.offset, x, true);
    } else if ('gradBuf' in s) {
      const [k, field] = s.gradBuf;
      const g = v.gradBufs?.[k];
      if (!g) throw new InvalidArgumentError(`gradBufs[${k}]`, 'the buffers of gradFor tensor ' + k, 'none');
      const x = g[field];
      if (f.kind === 'ptr') dv.setBigUint64(f.offset, BigInt.asUintN(64, x as bigint), true);
      else dv.setInt32(f.offset, x as number, true);
    } else {
      const x = pv[pi++]!;
      if (f.kind === 'f32') dv.setFloat32(f.offset, x, true); else dv.setInt32(f.offset, x, true);
    }
  }
  return buf;
}

/**
 * Convenience over {@link packArgs}: packs `FlexModArgs` for `code` from the
 * device addresses of its captured tensors (slot order, each pointing at the
 * tensor's first element, i.e. base + offset × element size); strides and sizes
 * are taken from `code.tensors`.
 */
export function packArgsForTensors(code: CudaModCode, devicePtrs: readonly bigint[], params?: Readonly<Record<string, number>>): Uint8Array {
  return packArgs(code.layout, {
    tensorPtrs: devicePtrs,
    tensorStrides: code.tensors.map((t) => [...t.strides]),
    tensorShapes: code.tensors.map((t) => [...t.shape]),
    ...(params ? { params } : {}),
  });
}
