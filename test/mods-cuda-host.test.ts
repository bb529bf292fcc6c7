/**
 * Semantics of the generated CUDA fragment, checked on the CPU: the fragment is
 * compiled as host C++ (with `__device__` defined away and host versions of the
 * PTX helpers, exact instead of approximate), `FlexModArgs` is filled from the
 * bytes `packArgs` produces (plus host pointers), and results are compared with
 * the JS interpreter. Also static_asserts the layout offsets against the real
 * struct. Skips without a C++ compiler.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  alibi, andMasks, causal, composeScoreMods, documentMask, generateCuda, imageBlocks, logitClip, packArgs, param, prefixLM,
  relativeBias, scoreMod, slidingWindow, softcap, tensorAt, type MaskMod, type ModBase, type ScoreMod,
} from '../lib/mods/index.js';
import { Expr, ScoreMod as ScoreModClass } from '../lib/mods/ir.js';
import { differentiateScoreMod } from '../lib/mods/grad.js';
import { NoGradientError } from '../lib/errors.js';
import { fakeEnv, hostTensor, mulberry32, randomMod, randomTensor, type FakeTensor } from './random-mods.js';

const cxx = process.env.CXX ?? 'g++';
const haveCxx = spawnSync(cxx, ['--version']).status === 0;

const SHIMS = String.raw`
#include <cmath>
#include <cstdio>
#include <cstring>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <algorithm>
#define __device__
#define __forceinline__ inline
#define FLEX_MOD_HELPERS_DEFINED
inline float flex_bits2f(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float flex_ex2(float x) { return (float)std::exp2((double)x); }
inline float flex_lg2(float x) { return (float)std::log2((double)x); }
inline float flex_tanh(float x) { return (float)std::tanh((double)x); }
inline float flex_sqrt(float x) { return (float)std::sqrt((double)x); }
inline float flex_floor(float x) { return std::floor(x); }
inline float flex_fabs(float x) { return std::fabs(x); }
inline float flex_fmin(float a, float b) { if (std::isnan(a) || std::isnan(b)) return NAN; if (a == b) return std::signbit(a) ? a : b; return a < b ? a : b; }
inline float flex_fmax(float a, float b) { if (std::isnan(a) || std::isnan(b)) return NAN; if (a == b) return std::signbit(a) ? b : a; return a > b ? a : b; }
inline int flex_f2i(float x) { if (std::isnan(x)) return 0; if (x >= 2147483647.0f) return 2147483647; if (x <= -2147483648.0f) return (-2147483647 - 1); return (int)std::trunc(x); }
inline float flex_exp(float x) { return (float)std::exp((double)x); }
inline float flex_log(float x) { return (float)std::log((double)x); }
inline float flex_sigmoid(float x) { return (float)(1.0 / (1.0 + std::exp(-(double)x))); }
inline float flex_fdiv(float a, float b) { return a / b; }
inline float flex_ffloordiv(float a, float b) { return flex_floor(a / b); }
inline float flex_fmod(float a, float b) { volatile float p = b * flex_floor(a / b); return a - p; }
inline float flex_bf16(unsigned short s) { return flex_bits2f(((unsigned)s) << 16); }
inline float flex_f16(unsigned short bits) {
  int s = (bits & 0x8000) ? -1 : 1, e = (bits >> 10) & 0x1f, m = bits & 0x3ff;
  if (e == 0) return (float)(s * std::ldexp((double)m, -24));
  if (e == 31) return m ? NAN : s * INFINITY;
  return (float)(s * std::ldexp(1.0 + m / 1024.0, e - 15));
}
inline int flex_iadd(int a, int b) { return (int)((unsigned)a + (unsigned)b); }
inline int flex_isub(int a, int b) { return (int)((unsigned)a - (unsigned)b); }
inline int flex_imul(int a, int b) { return (int)((unsigned)a * (unsigned)b); }
inline int flex_ineg(int a) { return (int)(0u - (unsigned)a); }
inline int flex_iabs(int a) { return a < 0 ? flex_ineg(a) : a; }
inline int flex_imin(int a, int b) { return a < b ? a : b; }
inline int flex_imax(int a, int b) { return a > b ? a : b; }
inline int flex_ifloordiv(int a, int b) { if (b == 0) return 0; if (b == -1) return flex_ineg(a); int q = a / b; return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q; }
inline int flex_imod(int a, int b) { if (b == 0 || b == -1) return 0; int r = a % b; return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r; }
inline int flex_clamp(int i, int n) { return std::max(0, std::min(i, n - 1)); }
static const unsigned int flex_zeros[2] = {0u, 0u};
template <class T> inline const T* flex_src(const T* p, bool ok) { return ok ? p : reinterpret_cast<const T*>(flex_zeros); }
`;

interface Case { score?: ScoreMod; mask?: MaskMod; params?: Record<string, number> }

function cArray(t: FakeTensor): { type: string; body: string } {
  const type = t.dtype === 'f32' ? 'float' : t.dtype === 'i32' ? 'int' : t.dtype === 'bool' ? 'unsigned char' : 'unsigned short';
  const vals = Array.from(t.data as ArrayLike<number>, (v) => (t.dtype === 'f32' ? (Number.isFinite(v) ? `${v.toPrecision(9)}f` : 'NAN') : String(v)));
  return { type, body: vals.join(', ') };
}

const suite = haveCxx ? describe : describe.skip;
if (!haveCxx) console.log(`[mods-cuda-host] skipped: no C++ compiler (${cxx})`);

suite('generated CUDA fragment semantics (compiled as host C++)', () => {
  it('built-ins and 60 random pairs match the JS interpreter; layout offsets match the struct', () => {
    const rng = mulberry32(99);
    const S = 64;
    const ids = hostTensor(Int32Array.from({ length: 2 * S }, (_, i) => Math.floor((i % S) / 9) + (i >= S ? 1 : 0)), [2, S], 'i32');
    const slopes = randomTensor(rng, 'bf16', [4]);
    const tab = randomTensor(rng, 'f16', [4, 15]);
    const cases: Case[] = [
      { mask: causal() }, { mask: slidingWindow(5, { lookahead: 1 }) }, { mask: prefixLM(6) }, { mask: documentMask(ids) },
      { mask: imageBlocks([{ start: 4, length: 10 }]) }, { score: alibi(slopes), mask: andMasks(causal(), documentMask(ids)) },
      { score: softcap(7) }, { score: logitClip(randomTensor(rng, 'f32', [4])) }, { score: relativeBias(tab) },
      { score: composeScoreMods(alibi(slopes), softcap(param('cap'))), params: { cap: 9 } },
      { score: scoreMod(({ score, h }) => score.mul(param('k', 'int')).add(tensorAt(slopes, [h.sub(100)]))), params: { k: -3 } },
      // Empty captured tensors read as 0 (the generated code swaps in a zero word, no branch).
      { score: scoreMod(({ score, h }) => score.add(tensorAt(hostTensor(new Float32Array(0), [0], 'f32'), [h]))) },
      { mask: documentMask(hostTensor(new Int32Array(0), [2, 0], 'i32')) },
    ];
    for (let i = 0; i < 60; i++) {
      const s = randomMod(rng, { kind: 'score', depth: 1 + (i % 6) });
      const m = randomMod(rng, { kind: 'mask', depth: 1 + (i % 6) });
      // param names may clash in type between the two random mods: rename by keeping them separate cases then.
      const clash = s.mod.params.some((p) => m.mod.params.some((x) => x.name === p.name && x.type !== p.type));
      if (clash) { cases.push({ score: s.mod as ScoreMod, params: s.params }, { mask: m.mod as MaskMod, params: m.params }); continue; }
      cases.push({ score: s.mod as ScoreMod, mask: m.mod as MaskMod, params: { ...m.params, ...s.params } });
    }
    const P = 40;
    const pts: number[] = [];
    for (let i = 0; i < P; i++) {
      pts.push(Math.fround((rng() - 0.5) * 40), Math.floor(rng() * 2), Math.floor(rng() * 4), Math.floor((rng() - 0.1) * S), Math.floor((rng() - 0.1) * S));
    }
    const src: string[] = [SHIMS, `static const double PTS[] = {${pts.join(', ')}};`];
    const mains: string[] = [];
    cases.forEach((c, ci) => {
      const code = generateCuda(c.score, c.mask);
      const bytes = packArgs(code.layout, {
        tensorPtrs: code.tensors.map(() => 0n), tensorStrides: code.tensors.map((t) => [...t.strides]),
        tensorShapes: code.tensors.map((t) => [...t.shape]), params: c.params ?? {},
      });
      src.push('#undef FLEX_HAS_SCORE_MOD', '#undef FLEX_HAS_MASK_MOD', '#undef FLEX_MASK_MOD_READS_MEMORY', `namespace m${ci} {`, code.source);
      code.tensors.forEach((t, s) => { const a = cArray(t as FakeTensor); src.push(`static const ${a.type} D${s}[] = {${a.body}};`); });
      for (const f of code.layout.fields) src.push(`static_assert(offsetof(FlexModArgs, ${f.name}) == ${f.offset}, "offset of ${f.name}");`);
      src.push(`static_assert(sizeof(FlexModArgs) == ${code.layout.size}, "size");`);
      src.push('void run() {', `  static const unsigned char B[] = {${Array.from(bytes).join(', ')}};`,
        '  FlexModArgs a; std::memcpy(&a, B, sizeof a);',
        ...code.tensors.map((_, s) => `  a.t${s} = D${s};`),
        `  for (int i = 0; i < ${P}; i++) {`,
        '    const double* p = PTS + 5 * i;',
        '    float s = flex_score_mod((float)p[0], (int)p[1], (int)p[2], (int)p[3], (int)p[4], a);',
        '    bool m = flex_mask_mod((int)p[1], (int)p[2], (int)p[3], (int)p[4], a);',
        '    std::printf("%.17g %d\\n", (double)s, m ? 1 : 0);',
        '  }', '}', `}  // namespace m${ci}`);
      mains.push(`  m${ci}::run();`);
    });
    src.push('int main() {', ...mains, '  return 0;', '}');
    const dir = mkdtempSync(join(tmpdir(), 'flexattn-modhost-'));
    let out: string;
    try {
      writeFileSync(join(dir, 'h.cc'), src.join('\n'));
      try {
        execFileSync(cxx, ['-std=c++17', '-O1', '-w', join(dir, 'h.cc'), '-o', join(dir, 'h')], { stdio: 'pipe' });
      } catch (e) {
        throw new Error(`host compile failed:\n${String((e as { stderr?: Buffer }).stderr ?? e)}`);
      }
      out = execFileSync(join(dir, 'h'), { encoding: 'utf8', maxBuffer: 64 << 20 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const lines = out.trim().split('\n');
    expect(lines.length).toBe(cases.length * P);
    const parse = (x: string): number => (/nan/i.test(x) ? NaN : /inf/i.test(x) ? (x.startsWith('-') ? -Infinity : Infinity) : Number(x));
    let mism = 0;
    cases.forEach((c, ci) => {
      const fs = c.score ? c.score.toJs(fakeEnv(c.score.tensors, c.params)) : (s: number) => Math.fround(s);
      const fm = c.mask ? c.mask.toJs(fakeEnv(c.mask.tensors, c.params)) : () => true;
      for (let i = 0; i < P; i++) {
        const [sv, b, h, q, kv] = pts.slice(5 * i, 5 * i + 5) as [number, number, number, number, number];
        const [gs, gm] = lines[ci * P + i]!.split(' ');
        const wantS = fs(sv, b, h, q, kv);
        const wantM = fm(b, h, q, kv) ? '1' : '0';
        const got = parse(gs!);
        const ok = Object.is(got, wantS) || (Number.isNaN(got) && Number.isNaN(wantS)) || (got === 0 && wantS === 0);
        const describe = (m?: ModBase): string => (m ? m.toString() : '-');
        if (gm !== wantM) throw new Error(`mask mismatch case ${ci} ${describe(c.mask)} at ${[b, h, q, kv]}: c++ ${gm} js ${wantM}`);
        if (!ok) {
          mism++;
          if (!(Math.abs(got - wantS) <= 1e-6 * Math.abs(wantS))) {
            throw new Error(`score mismatch case ${ci} ${describe(c.score)} at ${[sv, b, h, q, kv]}: c++ ${got} js ${wantS}`);
          }
        }
      }
    });
    expect(mism).toBeLessThan(20);
  });
  it('flex_score_grad (the backward kernels\' score-mod derivative) matches the JS interpreter of the dScore IR', () => {
    const rng = mulberry32(7);
    const slopes = randomTensor(rng, 'bf16', [4]);
    const tab = randomTensor(rng, 'f16', [4, 15]);
    const cases: Case[] = [
      { score: softcap(7) }, { score: alibi(slopes) }, { score: logitClip(randomTensor(rng, 'f32', [4])) }, { score: relativeBias(tab) },
      { score: composeScoreMods(alibi(slopes), softcap(param('cap'))), params: { cap: 9 } },
    ];
    for (let i = 0; cases.length < 40 && i < 400; i++) {
      const s = randomMod(rng, { kind: 'score', depth: 1 + (i % 5) });
      try { differentiateScoreMod((s.mod as ScoreMod).expr.node, true, []); } catch (e) { if (e instanceof NoGradientError) continue; throw e; }
      cases.push({ score: s.mod as ScoreMod, params: s.params });
    }
    const P = 40;
    const pts: number[] = [];
    for (let i = 0; i < P; i++) pts.push(Math.fround((rng() - 0.5) * 20), 0, Math.floor(rng() * 4), Math.floor(rng() * 60), Math.floor(rng() * 60));
    const src: string[] = [SHIMS, `static const double PTS[] = {${pts.join(', ')}};`];
    const mains: string[] = [];
    const grads = cases.map((c) => differentiateScoreMod(c.score!.expr.node, true, []).dScore);
    cases.forEach((c, ci) => {
      const code = generateCuda(c.score, undefined, grads[ci]);
      expect(code.source).toContain('flex_score_grad');
      const bytes = packArgs(code.layout, {
        tensorPtrs: code.tensors.map(() => 0n), tensorStrides: code.tensors.map((t) => [...t.strides]),
        tensorShapes: code.tensors.map((t) => [...t.shape]), params: c.params ?? {},
      });
      src.push('#undef FLEX_HAS_SCORE_MOD', '#undef FLEX_HAS_MASK_MOD', '#undef FLEX_MASK_MOD_READS_MEMORY', '#undef FLEX_HAS_SCORE_GRAD',
        `namespace g${ci} {`, code.source);
      code.tensors.forEach((t, s) => { const a = cArray(t as FakeTensor); src.push(`static const ${a.type} D${s}[] = {${a.body}};`); });
      src.push('void run() {', `  static const unsigned char B[] = {${Array.from(bytes).join(', ')}};`,
        '  FlexModArgs a; std::memcpy(&a, B, sizeof a);', ...code.tensors.map((_, s) => `  a.t${s} = D${s};`),
        `  for (int i = 0; i < ${P}; i++) {`, '    const double* p = PTS + 5 * i;',
        '    std::printf("%.17g\\n", (double)flex_score_grad((float)p[0], (int)p[1], (int)p[2], (int)p[3], (int)p[4], a));',
        '  }', '}', `}  // namespace g${ci}`);
      mains.push(`  g${ci}::run();`);
    });
    src.push('int main() {', ...mains, '  return 0;', '}');
    const dir = mkdtempSync(join(tmpdir(), 'flexattn-gradhost-'));
    let out: string;
    try {
      writeFileSync(join(dir, 'h.cc'), src.join('\n'));
      try {
        execFileSync(cxx, ['-std=c++17', '-O1', '-w', join(dir, 'h.cc'), '-o', join(dir, 'h')], { stdio: 'pipe' });
      } catch (e) {
        throw new Error(`host compile failed:\n${String((e as { stderr?: Buffer }).stderr ?? e)}`);
      }
      out = execFileSync(join(dir, 'h'), { encoding: 'utf8', maxBuffer: 64 << 20 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const lines = out.trim().split('\n');
    expect(lines.length).toBe(cases.length * P);
    const parse = (x: string): number => (/nan/i.test(x) ? NaN : /inf/i.test(x) ? (x.startsWith('-') ? -Infinity : Infinity) : Number(x));
    cases.forEach((c, ci) => {
      const gm = new ScoreModClass('score', new Expr(grads[ci]!));
      const fg = gm.toJs(fakeEnv(gm.tensors, c.params));
      for (let i = 0; i < P; i++) {
        const [sv, b, h, q, kv] = pts.slice(5 * i, 5 * i + 5) as [number, number, number, number, number];
        const got = parse(lines[ci * P + i]!), want = fg(sv, b, h, q, kv);
        const ok = Object.is(got, want) || (Number.isNaN(got) && Number.isNaN(want)) || Math.abs(got - want) <= 1e-5 * Math.max(1, Math.abs(want));
        if (!ok) throw new Error(`gradient mismatch case ${ci} ${c.score!.toString()} at ${[sv, b, h, q, kv]}: c++ ${got} js ${want}`);
      }
    });
  });
});
