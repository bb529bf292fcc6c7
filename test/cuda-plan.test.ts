// The launch planner (lib/cuda/plan.ts) is pure: device capabilities and
// switches come in as arguments, so family, tile, variant and schedule choices
// and the kernelOptions errors are checked here without a GPU.
import { afterEach, describe, expect, it } from 'vitest';
import { InvalidArgumentError, ShapeError } from '../lib/errors.js';
import {
  DEFAULT_SWITCHES, MAX_SCHEDULE_ENTRIES, planFlex, planSdpa, SM90WS_MIN_ROWS, type MaskFacts, type PlanSwitches,
} from '../lib/cuda/plan.js';
import { groupHeads, tmaView } from '../lib/cuda/launch-sm90ws.js';
import { planSwitches } from '../lib/cuda/switches.js';
import { SM80_SMALL_TILE } from '../lib/cuda/tiles.js';
import type { QkvDims } from '../lib/validate.js';

const H100 = { name: 'NVIDIA H100 80GB HBM3', major: 9, minor: 0 };
const A100 = { name: 'NVIDIA A100-SXM4-80GB', major: 8, minor: 0 };
const L40 = { name: 'NVIDIA L40S', major: 8, minor: 9 };

const dims = (D: number, S = 1000): QkvDims => ({ B: 2, Hq: 8, Hkv: 2, Sq: S, Skv: S, D, Dv: D });
const mask = (over: Partial<MaskFacts> = {}): MaskFacts => ({
  B: 2, H: 1, qLen: 1000, kvLen: 1000, blockSize: [128, 128], readsData: false, modParams: 0, classesExact: true, ...over,
});
const sw = (over: Partial<PlanSwitches>): PlanSwitches => ({ ...DEFAULT_SWITCHES, ...over });

describe('planSdpa', () => {
  it('Hopper family on compute capability 9.0 for head dims 64 and 128, mma.sync elsewhere', () => {
    for (const D of [32, 64, 96, 128, 256]) {
      expect(planSdpa(dims(D), false, H100).family).toBe(D === 64 || D === 128 ? 'sm90' : 'sm80');
      expect(planSdpa(dims(D), true, A100)).toEqual({ family: 'sm80', mode: 'kCausal' });
      expect(planSdpa(dims(D), false, L40).family).toBe('sm80');
    }
    expect(planSdpa(dims(128), true, H100)).toEqual({ family: 'sm90', mode: 'kCausal' });
    expect(planSdpa(dims(128), false, H100, sw({ sm80Only: true }))).toEqual({ family: 'sm80', mode: 'kDense' });
  });
});

describe('planSdpa: the sm90ws family (FLEXATTN_KERNEL_FAMILY=sm90ws, opt-in)', () => {
  const on = sw({ sm90ws: true });
  const d = (D: number, Sq: number, Skv: number): QkvDims => ({ B: 2, Hq: 8, Hkv: 2, Sq, Skv, D, Dv: D });
  it('takes dense and causal SDPA on Hopper for head dims 64 and 128 when Sq and Skv are at least 128', () => {
    expect(planSdpa(d(128, 4096, 4096), true, H100, on)).toEqual({ family: 'sm90ws', mode: 'kCausal' });
    expect(planSdpa(d(64, 128, 1531), false, H100, on)).toEqual({ family: 'sm90ws', mode: 'kDense' });
    expect(SM90WS_MIN_ROWS).toBe(128);
  });
  it('keeps the sm90 kernel below 128 rows (TMA boxes of 128), the usual kernels elsewhere', () => {
    expect(planSdpa(d(128, 77, 4096), false, H100, on).family).toBe('sm90');
    expect(planSdpa(d(128, 4096, 1), true, H100, on).family).toBe('sm90');
    expect(planSdpa(d(96, 4096, 4096), false, H100, on).family).toBe('sm80');
    expect(planSdpa(d(128, 4096, 4096), false, A100, on).family).toBe('sm80');
  });
  it('never without the switch, nor with a dense mask (a score mod the kernel does not apply)', () => {
    expect(planSdpa(d(128, 4096, 4096), false, H100).family).toBe('sm90');
    expect(planSdpa(d(128, 4096, 4096), false, H100, on, true).family).toBe('sm90');
  });
  it('is read from FLEXATTN_KERNEL_FAMILY', () => {
    const before = process.env.FLEXATTN_KERNEL_FAMILY;
    try {
      process.env.FLEXATTN_KERNEL_FAMILY = 'sm90ws';
      expect(planSwitches()).toEqual({ ...DEFAULT_SWITCHES, sm90ws: true });
    } finally {
      if (before === undefined) delete process.env.FLEXATTN_KERNEL_FAMILY;
      else process.env.FLEXATTN_KERNEL_FAMILY = before;
    }
  });
});

describe('sm90ws launch helpers', () => {
  const t = (shape: number[], strides: number[], offset = 0) => ({ shape, strides, offset });
  it('tmaView: a 3-D {D, S, B·H} map of contiguous and head-strided layouts', () => {
    expect(tmaView(t([2, 8, 77, 128], [8 * 77 * 128, 77 * 128, 128, 1]), 0n))
      .toEqual({ rows: 77, planes: 16, rowStride: 256, planeStride: 77 * 256 });
    // [B, S, H, D] storage: heads closer than rows (and, B > 1, no single plane axis): a copy
    expect(tmaView(t([2, 8, 77, 64], [77 * 8 * 64, 64, 8 * 64, 1]), 0n)).toBeUndefined();
    expect(tmaView(t([1, 8, 77, 64], [77 * 8 * 64, 64, 8 * 64, 1]), 0n)).toBeUndefined();
    // a head slice of a larger tensor (rows further apart than D, heads far apart) is addressed in place
    expect(tmaView(t([2, 4, 77, 64], [4 * 80 * 128, 80 * 128, 128, 1]), 0n)).toEqual({ rows: 77, planes: 8, rowStride: 256, planeStride: 80 * 256 });
    // one head and one batch: any row stride that is a multiple of 16 bytes
    expect(tmaView(t([1, 1, 5, 64], [320, 320, 64, 1]), 0n)).toEqual({ rows: 5, planes: 1, rowStride: 128, planeStride: 640 });
  });
  it('tmaView: base or strides not multiples of 16 bytes need a copy', () => {
    expect(tmaView(t([1, 2, 16, 64], [2 * 16 * 64, 16 * 64, 64, 1], 4), 0n)).toBeUndefined();
    expect(tmaView(t([1, 2, 16, 64], [2 * 16 * 68, 16 * 68, 68, 1]), 0n)).toBeUndefined();
    expect(tmaView(t([1, 2, 16, 64], [2 * 16 * 64, 16 * 64, 64, 1]), 8n)).toBeUndefined();
  });
  it('groupHeads: one wave of heads for causal, one head for dense', () => {
    expect(groupHeads(false, 32, 64, 132)).toBe(1);
    expect(groupHeads(true, 32, 64, 132)).toBe(5);
    expect(groupHeads(true, 1, 3, 132)).toBe(3);
    expect(groupHeads(true, 200, 64, 132)).toBe(1);
  });
});

describe('planFlex', () => {
  it('no mask: a dense launch, no schedules', () => {
    expect(planFlex({ dims: dims(128), caps: H100 })).toEqual({ family: 'sm90', mode: 'kDense', fineSchedule: false, ctaOrder: false });
    expect(planFlex({ dims: dims(96), caps: H100 })).toEqual({ family: 'sm80', mode: 'kDense', fineSchedule: false, ctaOrder: false });
    expect(planFlex({ dims: dims(128), caps: A100 }).family).toBe('sm80');
  });

  it('Hopper d128 with a createBlockMask mask: 64x64 schedule, segmented grid from it, CTA order', () => {
    const p = planFlex({ dims: dims(128), mask: mask(), caps: H100 });
    expect(p).toEqual({ family: 'sm90', mode: 'kBlockSparse', fineSchedule: true, segmentsFrom: 'fine', ctaOrder: true });
    // each switch turns its part off
    expect(planFlex({ dims: dims(128), mask: mask(), caps: H100, switches: sw({ fineSchedule: false }) }))
      .toEqual({ family: 'sm90', mode: 'kBlockSparse', fineSchedule: false, ctaOrder: true });
    expect(planFlex({ dims: dims(128), mask: mask(), caps: H100, switches: sw({ segments: false }) }).segmentsFrom).toBeUndefined();
    expect(planFlex({ dims: dims(128), mask: mask(), caps: H100, switches: sw({ ctaOrder: false }) }).ctaOrder).toBe(false);
    // rectangular blocks that are multiples of 64
    expect(planFlex({ dims: dims(128), mask: mask({ blockSize: [256, 64] }), caps: H100 }).fineSchedule).toBe(true);
  });

  it('no 64x64 schedule where it would not list the mask\'s positions or does not apply', () => {
    const fine = (m: MaskFacts, D = 128) => planFlex({ dims: dims(D), mask: m, caps: H100 }).fineSchedule;
    expect(fine(mask({ classesExact: false }))).toBe(false);   // other params than at creation, or lists from elsewhere
    expect(fine(mask(), 64)).toBe(false);                      // d64 tile is 64x128
    expect(fine(mask({ blockSize: [64, 64] }))).toBe(false);   // already the tile
    expect(fine(mask({ blockSize: [128, 128], B: 64, H: 64, qLen: 16384, kvLen: 16384 }))).toBe(false);
    expect(64 * 64 * 256 * 256).toBeGreaterThan(MAX_SCHEDULE_ENTRIES);
    expect(planFlex({ dims: dims(128), mask: mask(), caps: A100 }).fineSchedule).toBe(false);
  });

  it('segmented grid from a 64x64 mask itself only when its mod has no params', () => {
    expect(planFlex({ dims: dims(128), mask: mask({ blockSize: [64, 64] }), caps: H100 }).segmentsFrom).toBe('mask');
    expect(planFlex({ dims: dims(128), mask: mask({ blockSize: [64, 64], modParams: 1 }), caps: H100 }).segmentsFrom).toBeUndefined();
    expect(planFlex({ dims: dims(128), mask: mask({ classesExact: false }), caps: H100 }).segmentsFrom).toBeUndefined();
    expect(planFlex({ dims: dims(64), mask: mask(), caps: H100 }).segmentsFrom).toBeUndefined();
  });

  it('block sizes pick the family and the sm80 shape', () => {
    // d64 Hopper tile 64x128: 64x64 blocks do not fit it, the mma.sync kernels take them with the small shape
    expect(planFlex({ dims: dims(64), mask: mask({ blockSize: [64, 64] }), caps: H100 }))
      .toMatchObject({ family: 'sm80', shape: SM80_SMALL_TILE });
    // a mask reading data per element at d128 on sm80: the small shape (no spills)
    expect(planFlex({ dims: dims(128), mask: mask({ readsData: true }), caps: A100 }).shape).toEqual(SM80_SMALL_TILE);
    expect(planFlex({ dims: dims(128), mask: mask(), caps: A100 }).shape).toBeUndefined();
    // blocks below every tile
    expect(() => planFlex({ dims: dims(64), mask: mask({ blockSize: [32, 32] }), caps: H100 })).toThrow(ShapeError);
    expect(() => planFlex({ dims: dims(64), mask: mask({ blockSize: [32, 32] }), caps: A100 }))
      .toThrow(/options.blockMask: expected block sizes that are multiples of the GPU tile 128×128 .*got 32×32/);
  });

  it('kernelOptions: tile fields select sm80 with that shape; bad values are typed errors naming the field', () => {
    expect(planFlex({ dims: dims(128), caps: H100, kernelOptions: { BLOCK_M: 64, BLOCK_N: 64 } }))
      .toMatchObject({ family: 'sm80', shape: { BM: 64, BN: 64, warps: 4, stages: 2 } });
    expect(planFlex({ dims: dims(128), caps: H100, kernelOptions: { family: 'sm80' } })).toMatchObject({ family: 'sm80' });
    expect(planFlex({ dims: dims(128), caps: H100, kernelOptions: { family: 'sm90' }, switches: sw({ sm80Only: true }) }).family).toBe('sm90');
    const err = (ko: object, caps = H100, D = 128, m?: MaskFacts): unknown => {
      try { planFlex({ dims: dims(D), caps, kernelOptions: ko, mask: m }); } catch (e) { return e; }
      return undefined;
    };
    const e1 = err({ family: 'sm70' });
    expect(e1).toBeInstanceOf(InvalidArgumentError);
    expect((e1 as InvalidArgumentError).argument).toBe('options.kernelOptions.family');
    expect(String(err({ family: 'sm90', BLOCK_M: 64 }))).toMatch(/no tile fields.*BLOCK_M/);
    expect(String(err({ family: 'sm90' }, A100))).toMatch(/compute capability 9.0.*A100-SXM4-80GB \(8\.0\)/);
    expect(err({ family: 'sm90' }, H100, 96)).toBeInstanceOf(ShapeError);
    expect(String(err({ family: 'sm90' }, H100, 96))).toMatch(/q: expected a head dimension of 64 or 128/);
    expect(String(err({ family: 'sm90' }, H100, 64, mask({ blockSize: [64, 64] })))).toMatch(/options.blockMask.*64×128 at head dim 64/);
    expect((err({ BLOCK_M: 96 }) as InvalidArgumentError).argument).toBe('options.kernelOptions.BLOCK_M');
    expect((err({ BLOCK_N: 256 }) as InvalidArgumentError).argument).toBe('options.kernelOptions.BLOCK_N');
    expect((err({ numWarps: 2 }) as InvalidArgumentError).argument).toBe('options.kernelOptions.numWarps');
    expect((err({ numStages: 4 }) as InvalidArgumentError).argument).toBe('options.kernelOptions.numStages');
    expect(String(err({ BLOCK_M: 64, numWarps: 8 }))).toMatch(/BLOCK_M \/ \(16 · numWarps\) of 1 or 2/);
    expect(err({ BLOCK_M: 128, numWarps: 4 })).toBeUndefined();
  });
});

describe('planSwitches', () => {
  const names = ['FLEXATTN_KERNEL_FAMILY', 'FLEXATTN_FINE_SCHEDULE', 'FLEXATTN_SEGMENTS', 'FLEXATTN_CTA_ORDER'] as const;
  const saved = Object.fromEntries(names.map((n) => [n, process.env[n]]));
  afterEach(() => {
    for (const n of names) { if (saved[n] === undefined) delete process.env[n]; else process.env[n] = saved[n]; }
  });

  it('reads the environment at each call', () => {
    for (const n of names) delete process.env[n];
    expect(planSwitches()).toEqual(DEFAULT_SWITCHES);
    process.env.FLEXATTN_KERNEL_FAMILY = 'sm80';
    process.env.FLEXATTN_FINE_SCHEDULE = '0';
    expect(planSwitches()).toEqual({ ...DEFAULT_SWITCHES, sm80Only: true, fineSchedule: false });
    process.env.FLEXATTN_SEGMENTS = '0';
    process.env.FLEXATTN_CTA_ORDER = '0';
    expect(planSwitches()).toEqual({ sm80Only: true, sm90ws: false, fineSchedule: false, segments: false, ctaOrder: false });
  });

  it('refuses a value a switch does not take (a typo must not run the default path)', () => {
    for (const n of names) delete process.env[n];
    process.env.FLEXATTN_KERNEL_FAMILY = 'sm8O';
    expect(() => planSwitches()).toThrow(InvalidArgumentError);
    expect(() => planSwitches()).toThrow(/FLEXATTN_KERNEL_FAMILY.*'auto', 'sm80', 'sm90ws'.*'sm8O'/s);
    process.env.FLEXATTN_KERNEL_FAMILY = 'auto';
    expect(planSwitches().sm80Only).toBe(false);
    process.env.FLEXATTN_SEGMENTS = 'off';
    expect(() => planSwitches()).toThrow(/FLEXATTN_SEGMENTS/);
    process.env.FLEXATTN_SEGMENTS = '';
    expect(planSwitches().segments).toBe(true);
  });
});
