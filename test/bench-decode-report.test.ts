/**
 * The decode benchmark's report (bench/decode-report.mjs) on synthetic result
 * files, without a GPU: copy fraction and its bars, paged against contiguous,
 * the mod cost (the window row against the baseline row of the same bytes,
 * which sits outside the copy bar), ours over the best PyTorch kernel.
 */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { packageRoot } from '../lib/native.js';

/* eslint-disable @typescript-eslint/no-explicit-any */
const mod = async (f: string): Promise<any> => import(pathToFileURL(join(packageRoot, 'bench', f)).href);
const report = await mod('decode-report.mjs');
const decodeCases = await mod('decode-cases.mjs');

/** Our rows from the real case list, each timed so that it runs at `gbs(id)` GB/s. */
function ours(gbs: (id: string) => number): any {
  const rows = decodeCases.buildDecodeCases().map((c: any) => {
    const g = gbs(c.id);
    return { ...c, ms: c.kvBytes / (g * 1e9) * 1e3, gbs: g };
  });
  return { gpu: 'Test GPU', date: 'now', decode: rows };
}

describe('decode report', () => {
  const speeds: Record<string, number> = {
    'decode B8 Hq32 Hkv8 Skv32k': 2900,
    'decode B8 Hq32 Hkv8 Skv32k paged 16': 2800,
    'decode B8 Hq32 Hkv8 Skv4k (window baseline)': 1800,
    'decode B8 Hq32 Hkv8 Skv32k swa 4096': 1750,
    'decode B8 Hq32 Hkv8 Skv32k softcap 30': 2755,
  };
  const o = ours((id) => speeds[id] ?? 2500);
  const torch = { gpu: 'Test GPU', copy: { gbs: 3000 }, cases: [
    { id: 'decode B8 Hq32 Hkv8 Skv32k', cudnn: { ms: 1073741824 / 3100e9 * 1e3 }, fa2: { ms: 1073741824 / 3000e9 * 1e3 } },
  ] };
  const m = report.mergeDecode(o, torch);
  const row = (id: string): any => m.rows.find((r: any) => r.id === id);

  it('copy fraction, its bars, and the best PyTorch kernel', () => {
    const r = row('decode B8 Hq32 Hkv8 Skv32k');
    expect(r.ours.copyFraction).toBeCloseTo(2900 / 3000, 6);
    expect(r.bars.copyFraction).toBe(true);           // >= 0.92 on this row
    expect(r.ratios.bestTorch).toBeCloseTo(2900 / 3100, 6);
    expect(r.bars.bestTorch).toBe(false);
    expect(row('decode B1 Hq32 Hkv8 Skv128k').bars.copyFraction).toBe(false); // 2500 / 3000 < 0.85
  });

  it('paged rows against their contiguous row', () => {
    expect(row('decode B8 Hq32 Hkv8 Skv32k paged 16').ratios.pagedVsContiguous).toBeCloseTo(2800 / 2900, 6);
  });

  it('the window row costs against its same-bytes baseline; the baseline has no copy bar', () => {
    const w = row('decode B8 Hq32 Hkv8 Skv32k swa 4096');
    expect(w.ratios.modCost).toBeCloseTo(1800 / 1750 - 1, 6);
    expect(w.bars.mod).toBe(true);
    expect(w.ratios.modCostVsContiguous).toBeCloseTo(2900 / 1750 - 1, 6);
    const b = row('decode B8 Hq32 Hkv8 Skv4k (window baseline)');
    expect(b.baseline).toBe(true);
    expect(b.bars.copyFraction).toBeUndefined();
    const s = row('decode B8 Hq32 Hkv8 Skv32k softcap 30');
    expect(s.ratios.modCost).toBeCloseTo(2900 / 2755 - 1, 6);
    expect(s.bars.mod).toBe(false);                    // 5.3 % > 5 %
  });

  it('the markdown names the card and lists every row', () => {
    const md = report.decodeMarkdown(o, torch, m);
    expect(md).toContain('Test GPU');
    for (const r of m.rows) expect(md).toContain(`| ${r.id} |`);
  });
});
