// The sm90ws family's flex path without a GPU: the planner's choice (opt-in,
// and the cases that keep the sm90 kernel, with their reasons), the
// WsBlockMask packer, the kernel source, and the tile walk the kernel does
// over a BlockMask's own lists (sm90_ws_flex.cuh WsFlexTiles = flash_fwd.cuh
// KvSchedule<kBlockSparse> with 128x128 tiles), mirrored here: every kept
// (q, kv) pair lies in exactly one visited tile, and every tile the kernel
// treats as full (no mask_mod) keeps every in-bounds element.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createBlockMask, causal, slidingWindow, documentMask, andMasks, notMask, softcap, alibi, Tensor, type MaskMod } from '../lib/index.js';
import { bindHost } from '../lib/mods/interpret.js';
import { DEFAULT_SWITCHES, planFlex, sm90wsFlexRefusal, SM90WS_TILE, type MaskFacts, type PlanSwitches } from '../lib/cuda/plan.js';
import { blockMaskValues, WS_MASK_BYTES, WS_MASK_OFFSET } from '../lib/cuda/launch-sm90ws.js';
import { packWsBlockMask } from '../lib/cuda/generated/sm90-ws-block-mask.js';
import { sm90wsFlexKernel } from '../lib/cuda/kernel-source.js';
import { modCode } from '../lib/cuda/mod-code.js';
import type { QkvDims } from '../lib/validate.js';

const H100 = { name: 'NVIDIA H100 80GB HBM3', major: 9, minor: 0 };
const A100 = { name: 'NVIDIA A100-SXM4-80GB', major: 8, minor: 0 };
const on: PlanSwitches = { ...DEFAULT_SWITCHES, sm90ws: true };
const dims = (D: number, Sq = 4096, Skv = Sq): QkvDims => ({ B: 2, Hq: 8, Hkv: 2, Sq, Skv, D, Dv: D });
const mask = (over: Partial<MaskFacts> = {}): MaskFacts => ({
  B: 2, H: 1, qLen: 4096, kvLen: 4096, blockSize: [128, 128], readsData: false, modParams: 0, classesExact: true, ...over,
});
const ws = { family: 'sm90ws', fineSchedule: false, ctaOrder: false };

describe('planFlex with FLEXATTN_KERNEL_FAMILY=sm90ws', () => {
  it('takes flex on Hopper (D 64 / 128, Sq and Skv >= 128): no mask, and masks with block sizes multiples of 128', () => {
    expect(planFlex({ dims: dims(128), caps: H100, switches: on })).toEqual({ ...ws, mode: 'kDense' });
    expect(planFlex({ dims: dims(64), mask: mask(), caps: H100, switches: on })).toEqual({ ...ws, mode: 'kBlockSparse' });
    expect(planFlex({ dims: dims(128), mask: mask({ blockSize: [256, 128] }), caps: H100, switches: on })).toEqual({ ...ws, mode: 'kBlockSparse' });
    expect(planFlex({ dims: dims(128, 1531, 4096), mask: mask({ blockSize: [128, 256] }), caps: H100, switches: on }).family).toBe('sm90ws');
    // a document-like mask (captured data) too: the lists, no segmented grid
    expect(planFlex({ dims: dims(128), mask: mask({ readsData: true }), caps: H100, switches: on })).toEqual({ ...ws, mode: 'kBlockSparse' });
  });
  it('keeps the usual kernels otherwise, and says why', () => {
    const d = dims(128);
    // without the switch: the sm90 kernel with its 64x64 schedule, segments and CTA order
    expect(planFlex({ dims: d, mask: mask(), caps: H100 })).toMatchObject({ family: 'sm90', fineSchedule: true, ctaOrder: true });
    // 64-row blocks: the sm90 kernel (its 64x64 tile), as without the switch
    const m64 = mask({ blockSize: [64, 64] });
    expect(planFlex({ dims: d, mask: m64, caps: H100, switches: on })).toEqual(planFlex({ dims: d, mask: m64, caps: H100 }));
    expect(sm90wsFlexRefusal(H100, d, m64)).toMatch(/block size 64×64.*multiples of 128/);
    expect(planFlex({ dims: d, mask: mask({ blockSize: [128, 64] }), caps: H100, switches: on }).family).toBe('sm90');
    // short sequences, other head dims, other devices
    expect(planFlex({ dims: dims(128, 77, 4096), caps: H100, switches: on }).family).toBe('sm90');
    expect(sm90wsFlexRefusal(H100, dims(128, 77, 4096), undefined)).toMatch(/Sq=77, Skv=4096/);
    expect(planFlex({ dims: dims(96), caps: H100, switches: on }).family).toBe('sm80');
    expect(sm90wsFlexRefusal(H100, dims(96), undefined)).toMatch(/head dim 96/);
    expect(planFlex({ dims: d, mask: mask(), caps: A100, switches: on }).family).toBe('sm80');
    expect(sm90wsFlexRefusal(A100, d, mask())).toMatch(/not a compute capability 9.0 GPU/);
    // kernelOptions naming a family or a tile keep that family
    expect(planFlex({ dims: d, mask: mask(), caps: H100, switches: on, kernelOptions: { family: 'sm90' } }).family).toBe('sm90');
    expect(planFlex({ dims: d, mask: mask(), caps: H100, switches: on, kernelOptions: { BLOCK_M: 64 } }).family).toBe('sm80');
    expect(planFlex({ dims: d, mask: mask(), caps: H100, switches: on, kernelOptions: { family: 'auto' } }).family).toBe('sm90ws');
    expect(sm90wsFlexRefusal(H100, d, mask(), { family: 'sm80' })).toMatch(/kernelOptions/);
    expect(sm90wsFlexRefusal(H100, d, mask())).toBeNull();
    // a kv block whose last 128 columns lie wholly past Skv (a TMA box outside the tensor): the sm90 kernel
    expect(sm90wsFlexRefusal(H100, dims(128, 1300), mask({ blockSize: [128, 256] }))).toMatch(/kv block size 256 with Skv=1300/);
    expect(planFlex({ dims: dims(128, 1300), mask: mask({ blockSize: [128, 256] }), caps: H100, switches: on }).family).toBe('sm90');
    expect(sm90wsFlexRefusal(H100, dims(128, 1531), mask({ blockSize: [128, 256] }))).toBeNull();
    expect(SM90WS_TILE).toEqual({ BM: 128, BN: 128 });
  });
});

describe('sm90ws flex launch pieces', () => {
  it('WsBlockMask: 80 bytes after the maps and WsParams, strides 0 for broadcast B / H', () => {
    expect(WS_MASK_OFFSET).toBe(3 * 128 + 56);
    const arr = (p: bigint) => ({ devicePtr: () => p });
    const v = blockMaskValues({ blockSize: [256, 128], B: 1, H: 4, numQBlocks: 12, numKvBlocks: 12 },
      [arr(0x1000n), arr(0x2000n), arr(0x3000n), arr(0x4000n)], { Sq: 3000, Skv: 1531 }, 0.125);
    expect(v).toMatchObject({ bmQBlock: 256, bmKvBlock: 128, bmNumStrideB: 0, bmNumStrideH: 12, bmIdxStrideB: 0,
      bmIdxStrideH: 144, bmIdxStrideQb: 12, Sq: 3000, Skv: 1531 });
    const out = new Uint8Array(WS_MASK_BYTES).fill(0xff);
    packWsBlockMask(v, out);
    const dv = new DataView(out.buffer);
    expect([0, 8, 16, 24].map((o) => dv.getBigUint64(o, true))).toEqual([0x1000n, 0x2000n, 0x3000n, 0x4000n]);
    expect([32, 36, 48, 52, 56, 60, 64, 68, 72, 76].map((o) => dv.getInt32(o, true))).toEqual([3000, 1531, 256, 128, 0, 12, 0, 144, 12, 0]);
    expect(dv.getFloat32(40, true)).toBe(0.125);
    expect(dv.getFloat32(44, true)).toBeCloseTo(0.125 * Math.LOG2E, 6);
    // no mask: null lists (the kernel then walks every kv tile, all full)
    const none = blockMaskValues(undefined, undefined, { Sq: 200, Skv: 300 }, 1);
    expect([none.kvNumBlocks, none.kvIndices, none.fullKvNumBlocks, none.fullKvIndices]).toEqual([0n, 0n, 0n, 0n]);
    expect(() => blockMaskValues({ blockSize: [64, 128], B: 1, H: 1, numQBlocks: 1, numKvBlocks: 1 }, [], { Sq: 1, Skv: 1 }, 1))
      .toThrow(/64×128/);
  });
  it('the kernel source: the mods, then the flex entry of sm90_ws_entry.cuh', () => {
    const spec = sm90wsFlexKernel(modCode(softcap(30), causal()), 128, 'bf16');
    expect(spec.kernel).toMatch(/^flexattn_flex_sm90ws_[0-9a-f]{16}_d128_bf16$/);
    expect(spec.source).toMatch(/FLEX_HAS_MASK_MOD 1[\s\S]*#include "sm90_ws_entry.cuh"\nFLEXATTN_FWD_SM90WS_FLEX_KERNEL\(flexattn_flex_sm90ws_\w+, 128, bf16\)/);
    expect(spec.module).toBe(spec.kernel);   // one optimized NVRTC build, no quick tier (as sm90wsKernel)
  });
});

/**
 * The kernel's walk (sm90_ws_flex.cuh WsFlexTiles over flash::KvSchedule<kBlockSparse, 128, 128>): for query
 * tile m of (b, h), full blocks then partial ones, each block bkv / 128 tiles; returns [kv0, partial] per tile.
 */
function kernelWalk(h: { n: Int32Array; i: Int32Array; fn: Int32Array; fi: Int32Array }, v: ReturnType<typeof blockMaskValues>,
  b: number, hh: number, m: number): [number, boolean][] {
  const q0 = m * SM90WS_TILE.BM, qb = Math.floor(q0 / v.bmQBlock);
  const nb = b * v.bmNumStrideB + hh * v.bmNumStrideH + qb;
  const ib = b * v.bmIdxStrideB + hh * v.bmIdxStrideH + qb * v.bmIdxStrideQb;
  const tpb = v.bmKvBlock / SM90WS_TILE.BN;
  const out: [number, boolean][] = [];
  for (const [num, idx, partial] of [[h.fn, h.fi, false], [h.n, h.i, true]] as const) {
    for (let j = 0; j < num[nb]! * tpb; j++) {
      const jb = Math.floor(j / tpb);
      out.push([idx[ib + jb]! * v.bmKvBlock + (j - jb * tpb) * SM90WS_TILE.BN, partial]);
    }
  }
  return out;
}

describe('sm90ws flex: the tile walk over the BlockMask lists', () => {
  const S = 700;   // ragged: 5.47 tiles of 128
  const ids = new Int32Array(2 * S);
  for (let b = 0; b < 2; b++) for (let s = 0; s < S; s++) ids[b * S + s] = Math.floor((s + 37 * b) / 230);
  const docIds = Tensor.fromHost(ids, [2, S], 'i32', { device: 'cpu' });
  const cases: [string, MaskMod][] = [
    ['causal', causal()], ['sliding 200', slidingWindow(200)], ['document (captured ids)', documentMask(docIds)],
    ['causal minus a 150 window (rows q <= 150 keep nothing)', andMasks(causal(), notMask(slidingWindow(150)))],
  ];
  for (const [name, mod] of cases) {
    for (const blockSize of [128, [256, 128], [128, 256]] as (number | [number, number])[]) {
      it(`${name}, blocks ${JSON.stringify(blockSize)}: every kept pair visited once, full tiles need no mask_mod`, async () => {
        const B = 2, H = 2;
        const bm = await createBlockMask(mod, B, H, S, S, { device: 'cpu', blockSize });
        expect(sm90wsFlexRefusal(H100, { D: 128, Sq: S, Skv: S }, bm)).toBeNull();   // the planner sends it to sm90ws
        const host = async (t: Tensor) => new Int32Array((await t.toHost()) as Int32Array);
        const h = { n: await host(bm.kvNumBlocks), i: await host(bm.kvIndices), fn: await host(bm.fullKvNumBlocks), fi: await host(bm.fullKvIndices) };
        const v = blockMaskValues(bm, [bm.kvNumBlocks, bm.kvIndices, bm.fullKvNumBlocks, bm.fullKvIndices].map(() => ({ devicePtr: () => 0n })),
          { Sq: S, Skv: S }, 1);
        const keep = mod.toJs(await bindHost(mod));
        for (let b = 0; b < B; b++) {
          for (let hh = 0; hh < H; hh++) {
            for (let m = 0; m * 128 < S; m++) {
              const tiles = kernelWalk(h, v, b, hh, m);
              const seen = new Set<number>();
              for (const [kv0, partial] of tiles) {
                expect(seen.has(kv0)).toBe(false);
                seen.add(kv0);
                expect(kv0 % 128).toBe(0);
                expect(kv0).toBeLessThan(S);
                if (!partial) {
                  for (let q = m * 128; q < Math.min(S, m * 128 + 128); q++) {
                    for (let kv = kv0; kv < Math.min(S, kv0 + 128); kv++) if (!keep(b, hh, q, kv)) expect.fail(`a full tile drops (${q}, ${kv}): mask_mod would be skipped`);
                  }
                }
              }
              for (let q = m * 128; q < Math.min(S, m * 128 + 128); q++) {
                for (let kv = 0; kv < S; kv++) if (keep(b, hh, q, kv) && !seen.has(kv - (kv % 128))) expect.fail(`kept (${q}, ${kv}) not visited`);
              }
            }
          }
        }
        bm.dispose();
      });
    }
  }
});

const nvcc = spawnSync('nvcc', ['--version']).status === 0 ? 'nvcc' : null;
(nvcc ? describe : describe.skip)('sm90ws flex kernel source compiles with nvcc (sm_90a; sm_80: the trap stub)', () => {
  it('document mask + softcap (d128 bf16), ALiBi + causal (d64 f16): no spills', () => {
    const cpu = { device: 'cpu' as const };
    const ids = Tensor.fromHost(Int32Array.from({ length: 512 }, (_, i) => i >> 6), [2, 256], 'i32', cpu);
    const slopes = Tensor.fromHost(new Float32Array([0.5, 0.25, 0.125, 0.0625]), [4], 'f32', cpu);
    const specs = [sm90wsFlexKernel(modCode(softcap(30), documentMask(ids)), 128, 'bf16'),
      sm90wsFlexKernel(modCode(alibi(slopes), causal()), 64, 'f16')];
    const dir = mkdtempSync(join(tmpdir(), 'flexattn-ws90flex-'));
    try {
      for (const [i, sp] of specs.entries()) {
        const cu = join(dir, `k${i}.cu`);
        writeFileSync(cu, sp.source);
        const r = spawnSync(nvcc!, ['-I', resolve('native/kernels'), '-fatbin', '-Xptxas', '-v', '-gencode', 'arch=compute_80,code=sm_80',
          '-gencode', 'arch=compute_90a,code=sm_90a', '-o', join(dir, `k${i}.fatbin`), cu], { encoding: 'utf8' });
        const log = `${r.stdout}${r.stderr}`;
        if (r.status !== 0) throw new Error(`nvcc failed on ${sp.kernel}:\n${log}`);
        const sm90 = log.slice(log.indexOf("for 'sm_90a'"));
        expect(sm90).toMatch(/0 bytes spill stores, 0 bytes spill loads/);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 240_000);
});
