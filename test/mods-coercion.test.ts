// JavaScript operators and control flow inside a mod are refused when the mod is
// defined (issue 17 item 1): before, each of these traced to a constant (a mask
// of `true`, a score of NaN) and attention ran with the mod silently dropped.
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, ModError } from '../lib/errors.js';
import {
  alibi, andMasks, causal, composeScoreMods, documentMask, fullMask, imageBlocks, imageBlocksFromIds, logitClip, maskMod,
  notMask, orMasks, param, prefixLM, relativeBias, scoreMod, slidingWindow, softcap, tensorAt, where, type Expr,
} from '../lib/mods/index.js';
import { findLogicalOr } from '../lib/mods/source-scan.js';
import { hostTensor } from './random-mods.js';

function modError(fn: () => unknown): ModError {
  let err: unknown;
  try { fn(); } catch (e) { err = e; }
  expect(err, 'expected a ModError').toBeInstanceOf(ModError);
  expect((err as ModError).code).toBe('ERR_FLEXATTN_MOD');
  return err as ModError;
}

/* eslint-disable @typescript-eslint/no-explicit-any */
describe('a mod that would fold an expression into a JS value is refused with a ModError naming the method', () => {
  it('ERR_FLEXATTN_MOD is the listed code', () => {
    expect(ERROR_CODES.ERR_FLEXATTN_MOD).toBe('ModError');
  });

  it('relational operators: kv <= q, q > kv', () => {
    const e = modError(() => maskMod(({ q, kv }) => (kv as any) <= (q as any)));
    expect(e.message).toMatch(/\.le\(\)/);
    expect(e.message).toMatch(/comparison operator/);
    expect(e.expression).toBe('kv');
    expect(modError(() => maskMod(({ q, kv }) => (q as any) > (kv as any))).message).toMatch(/\.gt\(\)/);
  });

  it('arithmetic operators: score * 2, score - 1, -q, Math.max(score, 0)', () => {
    const e = modError(() => scoreMod(({ score }) => (score as any) * 2));
    expect(e.message).toMatch(/\.mul\(\)/);
    expect(e.expression).toBe('score');
    expect(modError(() => scoreMod(({ score }) => (score as any) - 1)).message).toMatch(/\.sub\(\)/);
    expect(modError(() => scoreMod(({ score, q }) => score.add(-(q as any)))).message).toMatch(/\.neg\(\)/);
    expect(modError(() => scoreMod(({ score }) => Math.max(score as any, 0))).message).toMatch(/\.max\(\)/);
  });

  it('+ and == (hint default): .add() / .eq()', () => {
    const e = modError(() => scoreMod(({ score }) => (score as any) + 1));
    expect(e.message).toMatch(/\.add\(\)/);
    // eslint-disable-next-line eqeqeq
    expect(modError(() => maskMod(({ q }) => (q as any) == 3)).message).toMatch(/\.eq\(\)/);
  });

  it('template strings, String(), arr[q]: tensor.at(...)', () => {
    const e = modError(() => maskMod(({ q }) => q.lt(Number(`${q as any}`))));
    expect(e.message).toMatch(/template string/);
    expect(e.message).toMatch(/tensor\.at\(/);
    const arr = [1, 2, 3];
    const e2 = modError(() => maskMod(({ q, kv }) => kv.lt(arr[q as any] as number)));
    expect(e2.message).toMatch(/arr\[expr\]/);
    expect(e2.message).toMatch(/tensor\.at\(/);
    expect(e2.expression).toBe('q');
    expect(modError(() => maskMod(({ q }) => q.lt(String(q).length))).message).toMatch(/tensor\.at\(/);
    const table: Record<string, number> = { a: 1 };
    modError(() => maskMod(({ q }) => q.lt(table[q as any] ?? 0)));
  });

  it('valueOf() called explicitly', () => {
    modError(() => maskMod(({ q }) => q.lt((q as any).valueOf())));
  });

  it('if (q.gt(kv)): the condition never reaches the result', () => {
    const e = modError(() => maskMod(({ q, kv }) => { if (q.gt(kv)) return true; return false; }));
    expect(e.message).toMatch(/where\(cond, a, b\)/);
    expect(e.message).toMatch(/does not reach the result/);
    expect(e.expression).toBe('(q > kv)');
    const e2 = modError(() => scoreMod(({ score, q, kv }) => { if (kv.le(q)) return score; return score.mul(0.5); }));
    expect(e2.expression).toBe('(kv <= q)');
  });

  it('c ? a : b', () => {
    const e = modError(() => scoreMod(({ score, q, kv }) => (q.sub(kv).gt(8) ? score.sub(1) : score)));
    expect(e.message).toMatch(/where\(cond, a, b\)/);
    // the outermost dropped expression is named, not its pieces
    expect(e.expression).toBe('((q - kv) > 8)');
  });

  it('a && b and !a', () => {
    const e = modError(() => maskMod(({ q, kv }) => (kv.le(q) && q.sub(kv).lt(4)) as Expr));
    expect(e.message).toMatch(/\.and\(/);
    expect(e.expression).toBe('(kv <= q)');
    const e2 = modError(() => maskMod(({ q, kv }) => !kv.le(q)));
    expect(e2.message).toMatch(/\.not\(\)/);
  });

  it('a || b (the right side is never built: caught in the source)', () => {
    const e = modError(() => maskMod(({ q, kv }) => (kv.le(q) || q.sub(kv).lt(4)) as Expr));
    expect(e.message).toMatch(/a\.or\(b\)/);
    expect(e.message).toMatch(/\?\?/);
    expect(e.message).toContain('kv.le(q) || q.sub(kv).lt(4)');
    // ||= too, and || on plain values inside the mod (computed outside instead)
    const opts: { w?: number } = {};
    modError(() => maskMod(({ q, kv }) => q.sub(kv).lt(opts.w || 4)));
    // ?? is fine (an Expr is never nullish)
    expect(maskMod(({ q, kv }) => q.sub(kv).lt(opts.w ?? 4)).toJs()(0, 0, 5, 2)).toBe(true);
  });

  it('Math.random() inside a mod, and other non-determinism', () => {
    const e = modError(() => scoreMod(({ score }) => score.add(Math.random())));
    expect(e.message).toMatch(/Math\.random\(\)/);
    expect(e.message).toMatch(/param\(/);
    expect(Math.random()).toBeGreaterThanOrEqual(0); // restored after the trace
    let calls = 0;
    const e2 = modError(() => maskMod(({ q }) => q.lt(++calls)));
    expect(e2.message).toMatch(/not deterministic/);
  });

  it('reading an argument the mod does not get: ModError, not TypeError', () => {
    const e = modError(() => maskMod((({ score }: { score: Expr }) => score.gt(0)) as never));
    expect(e.message).toMatch(/no 'score' argument/);
    expect(e.message).toMatch(/scoreMod/);
    const e2 = modError(() => maskMod((a) => (a as unknown as { Q: Expr }).Q.ge(a.kv)));
    expect(e2.message).toMatch(/'Q', which does not exist/);
    expect(e2.message).toMatch(/\{ b, h, q, kv \}/);
    modError(() => scoreMod((a) => (a as unknown as { qIdx: Expr }).qIdx));
    // spreading and `in` still work
    expect(maskMod((a) => { const { ...all } = a; return 'score' in all ? false : all.kv.le(all.q); }).hash).toBe(causal().hash);
  });

  it('a mod function that throws: ModError with the original error as cause', () => {
    const boom = new RangeError('boom');
    const e = modError(() => scoreMod(() => { throw boom; }));
    expect(e.cause).toBe(boom);
    expect(e.message).toMatch(/threw while being traced: RangeError: boom/);
    // a TypeError from calling a missing method
    const e2 = modError(() => maskMod(({ q, kv }) => (q as any).lessEq(kv)));
    expect(e2.cause).toBeInstanceOf(TypeError);
    // a ModError from our own checks passes through unchanged
    let inner: unknown;
    try { maskMod(({ q }) => q.add(1).and(true)); } catch (x) { inner = x; }
    const e3 = modError(() => maskMod(({ q }) => q.add(1).and(true)));
    expect(e3.message).toBe((inner as Error).message);
    expect(e3.cause).toBeUndefined();
  });

  it('the process keeps working: tracing state is restored after every refusal', () => {
    modError(() => maskMod(({ q, kv }) => { if (q.gt(kv)) throw new Error('x'); return true; }));
    expect(causal().toJs()(0, 0, 3, 2)).toBe(true);
    expect(typeof Math.random()).toBe('number');
  });
});

describe('what stays valid', () => {
  it('constant mods on purpose', () => {
    expect(fullMask().toJs()(0, 0, 0, 5)).toBe(true);
    expect(maskMod(() => true).toJs()(0, 0, 0, 5)).toBe(true);
    expect(maskMod(({ q }) => false && q).toJs()(0, 0, 0, 0)).toBe(false);
    expect(scoreMod(({ score }) => score).toJs()(1.5, 0, 0, 0, 0)).toBe(1.5);
    expect(scoreMod(() => 2).toJs()(1.5, 0, 0, 0, 0)).toBe(2);
  });

  it('plain JS values and control flow on them, where(), explicit toString()', () => {
    const isCausal = true, w = 4;
    const m = maskMod(({ q, kv }) => {
      const near = q.sub(kv).lt(w);
      return isCausal ? near.and(kv.le(q)) : near;
    });
    expect(m.toJs()(0, 0, 5, 3)).toBe(true);
    expect(m.toJs()(0, 0, 5, 6)).toBe(false);
    const s = scoreMod(({ score, q, kv }) => where(kv.le(q), score, -Infinity));
    expect(s.toJs()(1, 0, 0, 0, 1)).toBe(-Infinity);
    expect(causal().expr.toString()).toBe('(kv <= q)');
    expect(() => `${causal().expr as unknown as string}`).toThrow(ModError);
  });

  it('every built-in traces', () => {
    const ids = hostTensor(Int32Array.from([0, 0, 1, 1]), [4], 'i32');
    const f = hostTensor(new Float32Array(4), [4], 'f32');
    const tab = hostTensor(new Float32Array(8), [2, 4], 'f32');
    const mods = [causal(), fullMask(), slidingWindow(3), slidingWindow(3, { lookahead: 1 }), prefixLM(2), documentMask(ids),
      documentMask(ids, { causal: false }), imageBlocks([{ start: 0, length: 2 }]), imageBlocks([[{ start: 0, length: 2 }], []]),
      imageBlocksFromIds(ids), alibi(f), softcap(30), softcap(param('cap')), logitClip(f), logitClip(3), relativeBias(tab),
      relativeBias(f), andMasks(causal(), documentMask(ids)), orMasks(causal(), prefixLM(1)), notMask(causal()), andMasks(),
      orMasks(), composeScoreMods(alibi(f), softcap(5))];
    expect(mods.every((m) => /^[0-9a-f]{32}$/.test(m.hash))).toBe(true);
    expect(scoreMod(({ score, h }) => score.add(tensorAt(f, [h]))).tensors).toEqual([f]);
  });

  it('a composed mod (a built-in used inside a user mod) traces', () => {
    const c = causal();
    const m = maskMod(({ q, kv }) => c.expr.and(q.sub(kv).lt(8)));
    expect(m.toJs()(0, 0, 9, 0)).toBe(false);
    expect(m.toJs()(0, 0, 7, 0)).toBe(true);
  });

  it('builtins reject a non-mod argument with a ModError even when it is an Expr', () => {
    const e = modError(() => andMasks(causal().expr as never));
    expect(e.message).toMatch(/not a MaskMod/);
  });
});

describe('the || source scan', () => {
  it('finds || in code, not in strings, comments, templates or regex literals', () => {
    expect(findLogicalOr('(a) => a || b')?.index).toBe(9);
    expect(findLogicalOr('(a) => { a ||= b; }')).not.toBeNull();
    expect(findLogicalOr('(a) => a.or(b) // a || b')).toBeNull();
    expect(findLogicalOr('(a) => /* a || b */ a')).toBeNull();
    expect(findLogicalOr('(a) => "a || b" + \'||\'')).toBeNull();
    expect(findLogicalOr('(a) => `a || ${x} || b`')).toBeNull();
    expect(findLogicalOr('(a) => `a ${x || y} b`')).not.toBeNull();
    expect(findLogicalOr('(a) => `a ${`${q}`} b` + c || d')).not.toBeNull();
    expect(findLogicalOr('(a) => /a||b/.test(s)')).toBeNull();
    expect(findLogicalOr('(a) => x / y / z | w')).toBeNull();
    expect(findLogicalOr('(a) => (x) / 2 || y')).not.toBeNull();
    expect(findLogicalOr('(a) => a | b')).toBeNull();
    expect(findLogicalOr('(a) => a ?? b')).toBeNull();
  });
});
