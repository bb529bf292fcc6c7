/**
 * The benchmark chart (bench/chart.mjs, written by bench/report.mjs beside the
 * Markdown table): well-formed SVG, exactly one bar per (case, implementation)
 * that has a number, each bar carrying that number and a length proportional to it.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync, mkdtempSync, rmSync, existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { pathToFileURL } from 'node:url';
import { packageRoot } from '../lib/native.js';

interface Row { id: string; group: string; ours: { tflops?: number }; torch: Record<string, number | undefined> }
interface Chart {
  attentionChartSvg: (rows: Row[], meta?: Record<string, unknown>) => string;
  SERIES: { key: string; label: string; get: (r: Row) => number | undefined }[];
}

const chart = (await import(pathToFileURL(join(packageRoot, 'bench', 'chart.mjs')).href)) as Chart;
const RESULTS = join(packageRoot, 'bench', 'results');

/** Tags open and close in order (the SVG is XML); returns the element names seen. */
function checkXml(svg: string): string[] {
  const stack: string[] = [];
  const names: string[] = [];
  for (const m of svg.matchAll(/<(\/?)([a-zA-Z][\w-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g)) {
    const [, close, name, , self] = m;
    if (close) {
      expect(stack.pop(), `</${name}>`).toBe(name);
    } else {
      names.push(name!);
      if (!self) stack.push(name!);
    }
  }
  expect(stack).toEqual([]);
  // nothing that looks like a tag was left unmatched by the pattern above (e.g. a stray '<' from a case name)
  const tags = svg.match(/</g)?.length ?? 0;
  const matched = [...svg.matchAll(/<\/?[a-zA-Z][\w-]*(?:\s+[\w:-]+="[^"<]*")*\s*\/?>/g)].length;
  expect(matched).toBe(tags);
  return names;
}

const attr = (el: string, name: string) => new RegExp(`${name}="([^"]*)"`).exec(el)?.[1];
const bars = (svg: string) => [...svg.matchAll(/<rect class="bar"[^>]*>/g)].map((m) => m[0]);
const unescape = (s: string) => s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&amp;/g, '&');

describe('benchmark chart (SVG)', () => {
  it('draws one bar per case and implementation with a number, carrying that number', () => {
    const rows: Row[] = [
      { id: 'dense a', group: 'dense', ours: { tflops: 301.27 }, torch: { fa2: 250.04, cudnn: 400.5, efficient: undefined, flex: 290 } },
      { id: 'flex <b> & "c"', group: 'flex', ours: { tflops: 120 }, torch: { flex: 60.26 } },
      { id: 'broken', group: 'flex', ours: {}, torch: { fa2: Number.NaN } }, // no number at all: no bars, no label
      { id: 'gqa d', group: 'gqa', ours: {}, torch: { fa2: 77 } },
    ];
    const svg = chart.attentionChartSvg(rows, { card: 'Test Card X', date: '2026-01-02T03:04:05Z' });
    const names = checkXml(svg);
    expect(names[0]).toBe('svg');
    const bs = bars(svg);
    expect(bs.map((b) => [unescape(attr(b, 'data-case')!), attr(b, 'data-series'), Number(attr(b, 'data-tflops'))])).toEqual([
      ['dense a', 'ours', 301.3], ['dense a', 'fa2', 250], ['dense a', 'cudnn', 400.5], ['dense a', 'flex', 290],
      ['flex <b> & "c"', 'ours', 120], ['flex <b> & "c"', 'flex', 60.3],
      ['gqa d', 'fa2', 77],
    ]);
    expect(svg).not.toContain('broken');
    // lengths proportional to the values: width / value is one constant
    const perUnit = bs.map((b) => Number(attr(b, 'width')) / Number(attr(b, 'data-tflops')));
    for (const k of perUnit) expect(k).toBeCloseTo(perUnit[0]!, 2);
    // the axis ends at a round number at or above the largest value: the 400.5 bar fits
    expect(Math.max(...bs.map((b) => Number(attr(b, 'x')) + Number(attr(b, 'width'))))).toBeLessThanOrEqual(Number(attr(svg, 'width')));
    expect(svg).toContain('Test Card X');
    expect(svg).toContain('run 2026-01-02');
    // a legend entry for each implementation drawn (mem-efficient has no number here)
    const legend = [...svg.matchAll(/<g class="legend" data-series="(\w+)"/g)].map((m) => m[1]);
    expect(legend).toEqual(['ours', 'fa2', 'cudnn', 'flex']);
    for (const g of ['Dense sweep (SDPA)', 'Flex patterns', 'GQA prefill']) expect(svg).toContain(g);
  });

  it('the committed H100 chart has one bar per number of the committed results', () => {
    const json = JSON.parse(readFileSync(join(RESULTS, 'attention.h100-80gb-hbm3.json'), 'utf8')) as { card: string; rows: Row[] };
    const svg = readFileSync(join(RESULTS, 'attention.h100-80gb-hbm3.svg'), 'utf8');
    checkXml(svg);
    const expected = json.rows.flatMap((r) => chart.SERIES
      .map((s) => [r.id, s.key, s.get(r)] as const)
      .filter(([, , v]) => typeof v === 'number' && Number.isFinite(v))
      .map(([id, key, v]) => [id, key, Number(v!.toFixed(1))]));
    expect(expected.length).toBeGreaterThan(100);
    expect(bars(svg).map((b) => [unescape(attr(b, 'data-case')!), attr(b, 'data-series'), Number(attr(b, 'data-tflops'))])).toEqual(expected);
    expect(svg).toContain(json.card);
    // and it is exactly what the writer makes of that file today (regenerated, not hand-edited)
    expect(svg).toBe(chart.attentionChartSvg(json.rows, {
      card: json.card, date: (json as unknown as { date: string }).date,
      torchVersion: (json as unknown as { torch: { version: string } }).torch.version, node: (json as unknown as { node: string }).node,
    }));
  });

  it('bench/report.mjs writes the SVG beside the Markdown table and links it', () => {
    const out = mkdtempSync(join(tmpdir(), 'flexattn-report-'));
    try {
      const r = spawnSync(process.execPath, [join(packageRoot, 'bench', 'report.mjs'),
        '--ours', join(RESULTS, 'attention.h100-80gb-hbm3.ours.json'),
        '--torch', join(RESULTS, 'attention.h100-80gb-hbm3.torch.json'), '--outdir', out], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(existsSync(join(out, 'attention.h100-80gb-hbm3.svg'))).toBe(true);
      expect(readFileSync(join(out, 'attention.h100-80gb-hbm3.md'), 'utf8')).toContain('](attention.h100-80gb-hbm3.svg)');
      expect(readFileSync(join(out, 'attention.h100-80gb-hbm3.svg'), 'utf8'))
        .toBe(readFileSync(join(RESULTS, 'attention.h100-80gb-hbm3.svg'), 'utf8'));
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
