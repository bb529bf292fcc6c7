// The generated host side of the kernel interface (lib/cuda/generated/*):
// the packers put every value at the offset the description gives, keep the
// byte layout the kernels were built with, and refuse what does not fit.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { InternalError } from '../lib/errors.js';
import {
  FLASH_FWD_CFG_INTS, FLASH_FWD_OFFSETS, kernelConfig, packFlashParams, type FlashFwdValues, type KernelConfig,
} from '../lib/cuda/generated/flash-fwd-params.js';
import { FLEX_BLOCK_MASK_OFFSETS, packBlockMaskClassifyParams } from '../lib/cuda/generated/blockmask-classify-params.js';
import { PAGED_APPEND_OFFSETS, packPagedAppendParams } from '../lib/cuda/generated/paged-append-params.js';
import { WS_OFFSETS, packWsParams } from '../lib/cuda/generated/sm90-ws-params.js';
import { WS_BLOCK_MASK_OFFSETS } from '../lib/cuda/generated/sm90-ws-block-mask.js';
import { DECODE_CFG_INTS, DECODE_OFFSETS, decodeKernelConfig, packDecodeParams, type DecodeValues } from '../lib/cuda/generated/decode-params.js';
import { FLASH_BWD_CFG_INTS, FLASH_BWD_OFFSETS, bwdKernelConfig, packFlashBwdParams, type FlashBwdValues } from '../lib/cuda/generated/flash-bwd-params.js';
import {
  decodeKvEntry, encodeKvEntry, KV_ENTRY_SCALE, SCHEDULE_BLOCK, SEGMENT_TILE, SM80_SMALL_TILE, SM80_TILE, SM90_HEAD_DIMS, SM90_TILE,
} from '../lib/cuda/generated/tiles.js';

interface Field { name: string; type: string; count?: number }
interface Block { fields: Field[]; tail?: { name: string } }
const SIZE: Record<string, number> = { ptr: 8, u64: 8, i64: 8, i32: 4, u32: 4, f32: 4 };
const describeBlock = (file: string): Block => JSON.parse(readFileSync(`native/kernels/interface/${file}`, 'utf8')) as Block;

/** Offsets computed here from the description alone (order and sizes), independent of the generator. */
function offsetsOf(b: Block): Record<string, number> {
  const out: Record<string, number> = {};
  let off = 0;
  for (const f of b.fields) { out[f.name] = off; off += SIZE[f.type]! * (f.count ?? 1); }
  if (b.tail) out[b.tail.name] = off;
  return out;
}

let seed = 12345;
const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n; };
const ptr = (): bigint => (BigInt(rnd(2 ** 30)) << 20n) | BigInt(rnd(2 ** 20)) | 1n;

function values(mod: Uint8Array): FlashFwdValues {
  const s3 = (): [number, number, number] => [rnd(2 ** 30) * 1024 + 7, rnd(2 ** 20) + 3, rnd(4096) + 1];
  return {
    q: ptr(), k: ptr(), v: ptr(), o: ptr(), lse: ptr(), kvNumBlocks: ptr(), kvIndices: ptr(), fullKvNumBlocks: ptr(), fullKvIndices: ptr(),
    qStrides: s3(), kStrides: s3(), vStrides: s3(), oStrides: s3(),
    B: 3, Hq: 32, Hkv: 8, Sq: 1531, Skv: 77, scale: 0.0883883,
    bmQBlock: 128, bmKvBlock: 64, bmNumStrideB: rnd(10000), bmNumStrideH: rnd(10000),
    bmIdxStrideB: rnd(100000), bmIdxStrideH: rnd(100000), bmIdxStrideQb: rnd(1000),
    ctaOrder: ptr(), tileStarts: ptr(), tileStartsStrideB: rnd(500) + 1, mod,
  };
}

describe('FlashFwdParams packer', () => {
  const off = offsetsOf(describeBlock('flash_fwd_params.json'));
  const cfg: KernelConfig = { threads: 128, smemBytes: 65536, blockM: 64, blockN: 64, headDim: 128, stages: 2, paramBytes: 248 + 40, modOffset: 248 };

  it('keeps the byte layout the kernels were built with', () => {
    // The ABI before the interface was generated: moving one of these breaks every prebuilt kernel.
    expect([off.q, off.q_stride_b, off.B, off.scale, off.bm_q_block, off.tile_starts_stride_b, off.cta_order, off.tile_starts, off.mod])
      .toEqual([0, 72, 168, 192, 200, 228, 232, 240, 248]);
    expect(FLASH_FWD_OFFSETS).toEqual(off);
  });

  it('writes each value at its described offset and the mod bytes at cfg.modOffset', () => {
    const mod = Uint8Array.from({ length: 36 }, () => rnd(255) + 1);
    const v = values(mod);
    const bytes = packFlashParams(cfg, v);
    expect(bytes.length).toBe(cfg.paramBytes);
    const dv = new DataView(bytes.buffer);
    const u64 = (n: string): bigint => dv.getBigUint64(off[n]!, true);
    const i64 = (n: string): number => Number(dv.getBigInt64(off[n]!, true));
    const i32 = (n: string): number => dv.getInt32(off[n]!, true);
    expect([u64('q'), u64('k'), u64('v'), u64('o'), u64('lse'), u64('kv_num_blocks'), u64('kv_indices'), u64('full_kv_num_blocks'),
      u64('full_kv_indices'), u64('cta_order'), u64('tile_starts')])
      .toEqual([v.q, v.k, v.v, v.o, v.lse, v.kvNumBlocks, v.kvIndices, v.fullKvNumBlocks, v.fullKvIndices, v.ctaOrder, v.tileStarts]);
    for (const [t, s] of [['q', v.qStrides], ['k', v.kStrides], ['v', v.vStrides], ['o', v.oStrides]] as const) {
      expect([i64(`${t}_stride_b`), i64(`${t}_stride_h`), i64(`${t}_stride_s`)]).toEqual([...s]);
    }
    expect([i32('B'), i32('Hq'), i32('Hkv'), i32('Sq'), i32('Skv'), i32('gqa_group')]).toEqual([3, 32, 8, 1531, 77, 4]);
    expect(dv.getFloat32(off.scale!, true)).toBe(Math.fround(v.scale));
    expect(dv.getFloat32(off.scale_log2!, true)).toBe(Math.fround(v.scale * Math.LOG2E));
    expect([i32('bm_q_block'), i32('bm_kv_block'), i32('bm_num_stride_b'), i32('bm_num_stride_h'), i32('bm_idx_stride_b'),
      i32('bm_idx_stride_h'), i32('bm_idx_stride_qb'), i32('tile_starts_stride_b')])
      .toEqual([v.bmQBlock, v.bmKvBlock, v.bmNumStrideB, v.bmNumStrideH, v.bmIdxStrideB, v.bmIdxStrideH, v.bmIdxStrideQb, v.tileStartsStrideB]);
    expect(bytes.subarray(cfg.modOffset, cfg.modOffset + mod.length)).toEqual(mod);
    expect(bytes.subarray(cfg.modOffset + mod.length).every((b) => b === 0)).toBe(true);
  });

  it('writes i64 fields exactly across the 32-bit boundary, zero and negative values included', () => {
    const v = values(new Uint8Array(0));
    v.qStrides = [2 ** 53 - 1, 2 ** 32, 0];
    v.kStrides = [-1, -(2 ** 32) - 3, 2 ** 32 - 1];
    const dv = new DataView(packFlashParams(cfg, v).buffer);
    const i64 = (n: string): bigint => dv.getBigInt64(off[n]!, true);
    expect([i64('q_stride_b'), i64('q_stride_h'), i64('q_stride_s'), i64('k_stride_b'), i64('k_stride_h'), i64('k_stride_s')])
      .toEqual([2n ** 53n - 1n, 2n ** 32n, 0n, -1n, -(2n ** 32n) - 3n, 2n ** 32n - 1n]);
  });

  it('leaves the optional fields 0 when absent', () => {
    const v = values(new Uint8Array(0));
    delete v.ctaOrder; delete v.tileStarts; delete v.tileStartsStrideB;
    const dv = new DataView(packFlashParams(cfg, v).buffer);
    expect([dv.getBigUint64(off.cta_order!, true), dv.getBigUint64(off.tile_starts!, true), BigInt(dv.getInt32(off.tile_starts_stride_b!, true))])
      .toEqual([0n, 0n, 0n]);
  });

  it('refuses a mod longer than the kernel reserves, and a kernel whose mod offset differs', () => {
    expect(() => packFlashParams(cfg, values(new Uint8Array(41)))).toThrow(InternalError);
    expect(() => packFlashParams(cfg, values(new Uint8Array(41)))).toThrow(/FlexModArgs is 41 bytes but the kernel reserves 40/);
    expect(packFlashParams(cfg, values(new Uint8Array(40).fill(9))).at(-1)).toBe(9);
    expect(() => packFlashParams({ ...cfg, modOffset: 256 }, values(new Uint8Array(0)))).toThrow(InternalError);
  });

  it('decodes <name>_cfg in the described order', () => {
    const raw = Int32Array.from({ length: FLASH_FWD_CFG_INTS }, (_, i) => 1000 + i * 7);
    const c = kernelConfig(raw);
    expect(Object.values(c)).toEqual(Array.from(raw));
    expect(Object.keys(c)).toEqual(['threads', 'smemBytes', 'blockM', 'blockN', 'headDim', 'stages', 'paramBytes', 'modOffset']);
  });
});

describe('DecodeParams packer', () => {
  const off = offsetsOf(describeBlock('decode_params.json'));
  const cfg: KernelConfig = { threads: 128, smemBytes: 102400, blockM: 16, blockN: 64, headDim: 128, stages: 3, paramBytes: 656 + 24, modOffset: 656 };
  const s3 = (): [number, number, number] => [rnd(2 ** 30) * 1024 + 8, rnd(2 ** 20) + 3, rnd(4096) + 1];
  const vals = (mod: Uint8Array): DecodeValues => ({
    q: ptr(), k: ptr(), v: ptr(), o: ptr(), lse: ptr(), wsO: ptr(), wsLse: ptr(), pageTable: ptr(), seqLens: ptr(), queryStart: ptr(),
    qStrides: s3(), oStrides: s3(), lseStrides: s3(), kStrides: s3(), vStrides: s3(),
    numSeqs: 77, Hq: 32, Hkv: 8, uniformKvLen: 1531, uniformQLen: 5, pageTableStride: 513, log2PageSize: 4,
    rowTiles: 3, numSplits: 17, causal: true, endAligned: false, scale: 0.0883883, mod,
    kvNumBlocks: ptr(), kvIndices: ptr(), fullKvNumBlocks: ptr(), fullKvIndices: ptr(),
    packHeads: 4, segTokens: 8, qSegments: 2, segTiles: 5, bmKvBlock: 128, bmNumStrides: [rnd(1000), rnd(1000)],
    bmIdxStrides: [rnd(100000), rnd(100000), rnd(100)], kvRange: Int32Array.from({ length: 35 }, () => rnd(2 ** 31) - 2 ** 30),
  });

  it('puts every value at its described offset, the mod at cfg.modOffset, and the flags as 0/1', () => {
    expect(DECODE_OFFSETS).toEqual(off);
    expect(off.mod).toBe(656);
    const mod = Uint8Array.from({ length: 24 }, () => rnd(255) + 1);
    const v = vals(mod);
    const bytes = packDecodeParams(cfg, v);
    expect(bytes.length).toBe(cfg.paramBytes);
    const dv = new DataView(bytes.buffer);
    const u64 = (n: string): bigint => dv.getBigUint64(off[n]!, true);
    const i64 = (n: string): number => Number(dv.getBigInt64(off[n]!, true));
    const i32 = (n: string): number => dv.getInt32(off[n]!, true);
    expect(['q', 'k', 'v', 'o', 'lse', 'ws_o', 'ws_lse', 'page_table', 'seq_lens', 'query_start',
      'kv_num_blocks', 'kv_indices', 'full_kv_num_blocks', 'full_kv_indices'].map(u64))
      .toEqual([v.q, v.k, v.v, v.o, v.lse, v.wsO, v.wsLse, v.pageTable, v.seqLens, v.queryStart,
        v.kvNumBlocks, v.kvIndices, v.fullKvNumBlocks, v.fullKvIndices]);
    const rowNames = (t: string): string[] => [`${t}_stride_seq`, `${t}_stride_tok`, `${t}_stride_h`];
    const kvNames = (t: string): string[] => [`${t}_page_stride`, `${t}_token_stride`, `${t}_head_stride`];
    for (const [names, st] of [[rowNames('q'), v.qStrides], [rowNames('o'), v.oStrides], [rowNames('lse'), v.lseStrides],
      [kvNames('k'), v.kStrides], [kvNames('v'), v.vStrides]] as const) {
      expect(names.map(i64)).toEqual([...st]);
    }
    expect(['num_seqs', 'Hq', 'Hkv', 'gqa_group', 'uniform_kv_len', 'uniform_q_len', 'page_table_stride', 'log2_page_size',
      'row_tiles', 'num_splits', 'causal', 'end_aligned'].map(i32)).toEqual([77, 32, 8, 4, 1531, 5, 513, 4, 3, 17, 1, 0]);
    expect(dv.getFloat32(off.scale!, true)).toBe(Math.fround(v.scale));
    expect(dv.getFloat32(off.scale_log2!, true)).toBe(Math.fround(v.scale * Math.LOG2E));
    expect(['pack_heads', 'seg_tokens', 'q_segments', 'seg_tiles', 'bm_kv_block', 'bm_num_stride_b', 'bm_num_stride_h',
      'bm_idx_stride_b', 'bm_idx_stride_h', 'bm_idx_stride_qb', 'kv_range_ops', 'pad'].map(i32))
      .toEqual([4, 8, 2, 5, 128, ...v.bmNumStrides, ...v.bmIdxStrides, 7, 0]);
    // the program's ints, then zeros up to the 80 reserved
    const prog = Array.from({ length: 80 }, (_, i) => dv.getInt32(off.kv_range! + 4 * i, true));
    expect(prog).toEqual([...v.kvRange, ...Array(80 - 35).fill(0)]);
    expect(bytes.subarray(cfg.modOffset)).toEqual(mod);
    expect(() => packDecodeParams(cfg, vals(new Uint8Array(25)))).toThrow(InternalError);
    expect(() => packDecodeParams(cfg, { ...v, kvRange: new Int32Array(85) })).toThrow(/kv_range has 85 entries but DecodeParams reserves 80/);
  });

  it('packs into a reused buffer exactly as into a fresh one (an earlier, longer program and mod leave nothing behind)', () => {
    const out = new Uint8Array(cfg.paramBytes).fill(0xa5);
    const first = vals(Uint8Array.from({ length: 24 }, () => rnd(255) + 1));
    expect(packDecodeParams(cfg, first, out)).toBe(out);
    expect(out).toEqual(packDecodeParams(cfg, first));
    const second = { ...vals(Uint8Array.from({ length: 8 }, () => rnd(255) + 1)), kvRange: new Int32Array(5).fill(3) };
    packDecodeParams(cfg, second, out);
    expect(out).toEqual(packDecodeParams(cfg, second));
    expect(() => packDecodeParams(cfg, second, new Uint8Array(cfg.paramBytes + 8))).toThrow(InternalError);
  });

  it('has the forward kernels\' <name>_cfg fields (the loader reads both alike)', () => {
    expect(DECODE_CFG_INTS).toBe(FLASH_FWD_CFG_INTS);
    const raw = Int32Array.from({ length: DECODE_CFG_INTS }, (_, i) => 50 + i);
    expect(decodeKernelConfig(raw)).toEqual(kernelConfig(raw));
  });
});

describe('FlashBwdParams packer', () => {
  const off = offsetsOf(describeBlock('flash_bwd_params.json'));
  const cfg: KernelConfig = { threads: 128, smemBytes: 98304, blockM: 64, blockN: 64, headDim: 128, stages: 2, paramBytes: 448 + 16, modOffset: 448 };
  const s3 = (): [number, number, number] => [rnd(2 ** 30) * 1024 + 8, rnd(2 ** 20) + 3, rnd(4096) + 1];
  const PTRS = ['q', 'k', 'v', 'o', 'dO', 'lse', 'delta', 'lse2', 'dq', 'dk', 'dv', 'kvNumBlocks', 'kvIndices', 'fullKvNumBlocks',
    'fullKvIndices', 'qNumBlocks', 'qIndices', 'fullQNumBlocks', 'fullQIndices'] as const;
  const vals = (mod: Uint8Array): FlashBwdValues => ({
    ...Object.fromEntries(PTRS.map((n) => [n, ptr()])) as Record<(typeof PTRS)[number], bigint>,
    qStrides: s3(), kStrides: s3(), vStrides: s3(), oStrides: s3(), dOStrides: s3(), dqStrides: s3(), dkStrides: s3(), dvStrides: s3(),
    lseStrides: s3(), B: 3, Hq: 32, Hkv: 8, Sq: 1531, Skv: 77, scale: 0.0883883, bmQBlock: 128, bmKvBlock: 256,
    bmNumStrides: [rnd(1000), rnd(1000)], bmIdxStrides: [rnd(100000), rnd(100000), rnd(100)],
    bmQNumStrides: [rnd(1000), rnd(1000)], bmQIdxStrides: [rnd(100000), rnd(100000), rnd(100)], mod,
  });

  it('puts every value at its described offset and the mod at cfg.modOffset', () => {
    expect(FLASH_BWD_OFFSETS).toEqual(off);
    expect(off.mod).toBe(448);
    const mod = Uint8Array.from({ length: 16 }, () => rnd(255) + 1);
    const v = vals(mod);
    const bytes = packFlashBwdParams(cfg, v);
    expect(bytes.length).toBe(cfg.paramBytes);
    const dv = new DataView(bytes.buffer);
    const u64 = (n: string): bigint => dv.getBigUint64(off[n]!, true);
    const i64 = (n: string): number => Number(dv.getBigInt64(off[n]!, true));
    const i32 = (n: string): number => dv.getInt32(off[n]!, true);
    expect(['q', 'k', 'v', 'o', 'dout', 'lse', 'delta', 'lse2', 'dq', 'dk', 'dv', 'kv_num_blocks', 'kv_indices', 'full_kv_num_blocks',
      'full_kv_indices', 'q_num_blocks', 'q_indices', 'full_q_num_blocks', 'full_q_indices'].map(u64)).toEqual(PTRS.map((n) => v[n]));
    for (const [t, st] of [['q', v.qStrides], ['k', v.kStrides], ['v', v.vStrides], ['o', v.oStrides], ['do', v.dOStrides],
      ['dq', v.dqStrides], ['dk', v.dkStrides], ['dv', v.dvStrides], ['lse', v.lseStrides]] as const) {
      expect([`${t}_stride_b`, `${t}_stride_h`, `${t}_stride_s`].map(i64)).toEqual([...st]);
    }
    expect(['B', 'Hq', 'Hkv', 'Sq', 'Skv', 'gqa_group', 'bm_q_block', 'bm_kv_block'].map(i32)).toEqual([3, 32, 8, 1531, 77, 4, 128, 256]);
    expect(dv.getFloat32(off.scale!, true)).toBe(Math.fround(v.scale));
    expect(dv.getFloat32(off.scale_log2!, true)).toBe(Math.fround(v.scale * Math.LOG2E));
    expect(['bm_num_stride_b', 'bm_num_stride_h', 'bm_idx_stride_b', 'bm_idx_stride_h', 'bm_idx_stride_qb', 'bm_qnum_stride_b',
      'bm_qnum_stride_h', 'bm_qidx_stride_b', 'bm_qidx_stride_h', 'bm_qidx_stride_kvb'].map(i32))
      .toEqual([...v.bmNumStrides, ...v.bmIdxStrides, ...v.bmQNumStrides, ...v.bmQIdxStrides]);
    expect(bytes.subarray(cfg.modOffset)).toEqual(mod);
    expect(() => packFlashBwdParams(cfg, vals(new Uint8Array(17)))).toThrow(InternalError);
  });

  it('has the forward kernels\' <name>_cfg fields (the loader reads both alike)', () => {
    expect(FLASH_BWD_CFG_INTS).toBe(FLASH_FWD_CFG_INTS);
    const raw = Int32Array.from({ length: FLASH_BWD_CFG_INTS }, (_, i) => 70 + i);
    expect(bwdKernelConfig(raw)).toEqual(kernelConfig(raw));
  });
});

describe('FlexBlockMaskParams packer', () => {
  const off = offsetsOf(describeBlock('blockmask_classify_params.json'));
  it('matches the classification kernel\'s 72-byte header and puts the mod words after it', () => {
    expect(FLEX_BLOCK_MASK_OFFSETS).toEqual(off);
    expect([off.starts, off.b0, off.mod]).toEqual([56, 64, 72]);
    const mod = Uint8Array.from({ length: 20 }, () => rnd(255) + 1);
    const v = { out: ptr(), tiles: ptr(), Bn: 2, Hn: 5, QB: 13, KVB: 11, qLen: 1531, kvLen: 1400, bq: 128, bkv: 128,
      numTiles: 2 * 5 * 13 * 11, L: 143, starts: ptr(), b0: 1, mod, modWords: 3 };
    const bytes = packBlockMaskClassifyParams(v);
    expect(bytes.length).toBe(72 + 24);
    const dv = new DataView(bytes.buffer);
    expect([dv.getBigUint64(off.out!, true), dv.getBigUint64(off.tiles!, true), dv.getBigUint64(off.starts!, true)]).toEqual([v.out, v.tiles, v.starts]);
    const ints = ['Bn', 'Hn', 'QB', 'KVB', 'qLen', 'kvLen', 'bq', 'bkv', 'numTiles', 'L', 'b0'] as const;
    expect(ints.map((n) => dv.getInt32(off[n]!, true))).toEqual(ints.map((n) => v[n]));
    expect(dv.getInt32(off.pad!, true)).toBe(0);
    expect(bytes.subarray(72, 92)).toEqual(mod);
    expect(() => packBlockMaskClassifyParams({ ...v, modWords: 2 })).toThrow(InternalError);
  });
});

describe('PagedAppendParams packer', () => {
  const off = offsetsOf(describeBlock('paged_append_params.json'));
  it('writes each value at its described offset in a 128-byte block', () => {
    expect(PAGED_APPEND_OFFSETS).toEqual(off);
    const ptrs = ['kSrc', 'vSrc', 'kPool', 'vPool', 'cuTokens', 'startLens', 'pageTable'] as const;
    const longs = ['pageStride', 'tokenStride', 'headStride', 'srcTokenStride', 'srcHeadStride'] as const;
    const ints = ['numSeqs', 'maxPagesPerSeq', 'pageSize', 'numTokens', 'numKvHeads', 'headDim', 'elemBytes'] as const;
    const v = {
      ...Object.fromEntries(ptrs.map((n) => [n, ptr()])), ...Object.fromEntries(longs.map((n) => [n, rnd(2 ** 30) * 4096 + 3])),
      ...Object.fromEntries(ints.map((n) => [n, rnd(100000) + 1])),
    } as unknown as Parameters<typeof packPagedAppendParams>[0];
    const bytes = packPagedAppendParams(v);
    expect(bytes.length).toBe(128);
    const dv = new DataView(bytes.buffer);
    expect(ptrs.map((n) => dv.getBigUint64(off[n]!, true))).toEqual(ptrs.map((n) => v[n]));
    expect(longs.map((n) => Number(dv.getBigInt64(off[n]!, true)))).toEqual(longs.map((n) => v[n]));
    expect(ints.map((n) => dv.getInt32(off[n]!, true))).toEqual(ints.map((n) => v[n]));
    expect(dv.getInt32(off.pad!, true)).toBe(0);
    const out = new Uint8Array(128).fill(0xff);
    expect(packPagedAppendParams(v, out)).toEqual(bytes);
  });
});

describe('WsParams packer (sm90ws family)', () => {
  const off = offsetsOf(describeBlock('sm90_ws_params.json'));
  it('writes each value at its described offset in a 56-byte block', () => {
    expect(WS_OFFSETS).toEqual(off);
    const v = { o: ptr(), lse: ptr(), B: 3, Hq: 8, Hkv: 2, Sq: 1531, Skv: 77, scaleLog2: 0.125 * Math.LOG2E, numMBlocks: 12, groupHeads: 5 };
    const bytes = packWsParams(v);
    expect(bytes.length).toBe(56);
    const dv = new DataView(bytes.buffer);
    expect([dv.getBigUint64(off.o!, true), dv.getBigUint64(off.lse!, true)]).toEqual([v.o, v.lse]);
    expect(['B', 'Hq', 'Hkv', 'Sq', 'Skv'].map((n) => dv.getInt32(off[n]!, true))).toEqual([3, 8, 2, 1531, 77]);
    expect(dv.getInt32(off.gqa_group!, true)).toBe(4);
    expect(dv.getFloat32(off.scale_log2!, true)).toBeCloseTo(v.scaleLog2, 6);
    expect([dv.getInt32(off.num_m_blocks!, true), dv.getInt32(off.group_heads!, true), dv.getInt32(off.pad_!, true)]).toEqual([12, 5, 0]);
  });
});

describe('WsBlockMask packer (sm90ws flex kernel)', () => {
  it('has FlashFwdParams\'s block-mask field names at its described offsets, 80 bytes', () => {
    const off = offsetsOf(describeBlock('sm90_ws_block_mask.json'));
    expect(WS_BLOCK_MASK_OFFSETS).toEqual(off);
    expect(off.pad_! + 4).toBe(80);
    const fwd = offsetsOf(describeBlock('flash_fwd_params.json'));
    for (const n of ['kv_num_blocks', 'kv_indices', 'full_kv_num_blocks', 'full_kv_indices', 'Sq', 'Skv', 'scale', 'scale_log2',
      'bm_q_block', 'bm_kv_block', 'bm_num_stride_b', 'bm_num_stride_h', 'bm_idx_stride_b', 'bm_idx_stride_h', 'bm_idx_stride_qb']) {
      expect(fwd[n], n).toBeTypeOf('number');
      expect(off[n], n).toBeTypeOf('number');
    }
  });
});

describe('tile constants and the kv entry', () => {
  const t = JSON.parse(readFileSync('native/kernels/interface/tiles.json', 'utf8')) as {
    sm80Tile: { byHeadDim: Record<string, { blockM: number; blockN: number; warps: number; stages: number; qInRegs: boolean }> };
    sm90Tile: { byHeadDim: Record<string, { blockM: number; blockN: number }> };
    kvEntry: { lengthBits: number };
  };
  it('come from tiles.json', () => {
    for (const [d, s] of Object.entries(t.sm80Tile.byHeadDim)) {
      expect(SM80_TILE[+d]).toEqual({ BM: s.blockM, BN: s.blockN, warps: s.warps, stages: s.stages, qInRegs: s.qInRegs });
    }
    for (const [d, s] of Object.entries(t.sm90Tile.byHeadDim)) expect([SM90_TILE[+d]!.BM, SM90_TILE[+d]!.BN]).toEqual([s.blockM, s.blockN]);
    expect(SM90_HEAD_DIMS).toEqual(Object.keys(t.sm90Tile.byHeadDim).map(Number));
    expect(KV_ENTRY_SCALE).toBe(2 ** t.kvEntry.lengthBits);
    // The Hopper d128 tile is the segmented grid's and the schedule's block (the host relies on it).
    expect([SM90_TILE[128]!.BM, SM90_TILE[128]!.BN]).toEqual([SEGMENT_TILE, SEGMENT_TILE]);
    expect(SCHEDULE_BLOCK).toBe(SEGMENT_TILE);
    expect(SM80_SMALL_TILE.BM / (16 * SM80_SMALL_TILE.warps)).toBe(1);
    expect(Object.isFrozen(SM90_TILE[64])).toBe(true);
  });

  it('encodes kv_start and length as the kernel decodes them (>> bits, & mask)', () => {
    for (let i = 0; i < 200; i++) {
      const start = rnd(2 ** 24 - 1), len = rnd(SEGMENT_TILE + 1);
      const e = encodeKvEntry(start, len);
      expect(e).toBe(start * KV_ENTRY_SCALE + len);
      expect(decodeKvEntry(e)).toEqual({ kvStart: start, length: len });
      expect((e >> 7) === start && (e & 127) === len).toBe(true); // flash_fwd.cuh's decode before it was generated
    }
    expect(() => encodeKvEntry(5, KV_ENTRY_SCALE)).toThrow(InternalError);
    expect(() => encodeKvEntry(2 ** 24, 0)).toThrow(InternalError);
    expect(() => encodeKvEntry(-1, 3)).toThrow(InternalError);
    expect(() => encodeKvEntry(1.5, 3)).toThrow(InternalError);
  });
});
