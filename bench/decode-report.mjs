#!/usr/bin/env node
// Merges our decode rows (bench/run.mjs --out: `decode`) and PyTorch's
// (bench/torch_decode.py --out) into decode.<card-slug>.{json,md}: GB/s of K and
// V read, ours.copyFraction (over the device-to-device copy bandwidth PyTorch
// measured in the same run, read + write), ratios.bestTorch (our throughput over
// the best of SDPA flash / cuDNN / efficient and compiled flex_attention), paged
// rows against their contiguous row, and what the mods cost. Bars of issue 19 §5.
//
//   node bench/decode-report.mjs --ours ours.json --torch torch-decode.json [--outdir bench/results]
import { readFileSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { cardSlug } from './report.mjs';

const f2 = (x) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(2) : '–');
const f0 = (x) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(0) : '–');
const mark = (ok) => (ok === undefined ? '' : ok ? ' ✓' : ' ✗');

export function mergeDecode(ours, torch) {
  const copyGBs = torch?.copy?.gbs;
  const tById = new Map((torch?.cases ?? []).map((r) => [r.id, r]));
  const rows = (ours.decode ?? []).map((o) => {
    const t = tById.get(o.id) ?? {};
    const gbs = (x) => (x && typeof x.ms === 'number' ? o.kvBytes / (x.ms * 1e-3) / 1e9 : undefined);
    const torchGbs = { fa2: gbs(t.fa2), cudnn: gbs(t.cudnn), efficient: gbs(t.efficient), flex: gbs(t.flex) };
    const best = Math.max(...Object.values(torchGbs).filter((x) => x !== undefined), -Infinity);
    return {
      id: o.id, layout: o.layout, pageSize: o.pageSize, mod: o.mod, B: o.B, Hq: o.Hq, Hkv: o.Hkv, Skv: o.Skv, D: o.D, kvBytes: o.kvBytes,
      contiguousId: o.contiguousId, modBaseId: o.modBaseId, baseline: o.baseline === true,
      ours: { ms: o.ms, gbs: o.gbs, copyFraction: copyGBs && o.gbs ? o.gbs / copyGBs : undefined, error: o.error, skipped: o.skipped },
      torch: { gbs: torchGbs, notes: Object.fromEntries(Object.entries(t).filter(([k]) => /error|skipped/.test(k))) },
      ratios: { bestTorch: Number.isFinite(best) && o.gbs ? o.gbs / best : undefined },
    };
  });
  const byId = new Map(rows.map((r) => [r.id, r]));
  for (const r of rows) {
    const base = r.contiguousId ? byId.get(r.contiguousId) : undefined;
    if (!base?.ours.ms || !r.ours.ms) continue;
    if (r.layout === 'paged') r.ratios.pagedVsContiguous = r.ours.gbs / base.ours.gbs;
    // Per byte a kernel must read (a window row counts fewer bytes than its contiguous base): the mod's cost,
    // not the skipped keys' gain; against the row of the same bytes without the mod when the case names one.
    const modBase = r.modBaseId ? byId.get(r.modBaseId) : base;
    if (r.mod && modBase?.ours.ms) r.ratios.modCost = modBase.ours.gbs / r.ours.gbs - 1;
    if (r.mod && r.modBaseId) r.ratios.modCostVsContiguous = base.ours.gbs / r.ours.gbs - 1;
  }
  for (const r of rows) {
    const bars = {};
    if (r.layout === 'contiguous' && !r.mod && !r.baseline) bars.copyFraction = r.ours.copyFraction === undefined ? undefined
      : r.ours.copyFraction >= (r.id === 'decode B8 Hq32 Hkv8 Skv32k' ? 0.92 : 0.85);
    if (r.ratios.pagedVsContiguous !== undefined) bars.paged = r.ratios.pagedVsContiguous >= 0.95;
    if (r.ratios.modCost !== undefined) bars.mod = r.ratios.modCost <= 0.05;
    if (r.ratios.bestTorch !== undefined) bars.bestTorch = r.ratios.bestTorch >= 1;
    r.bars = bars;
  }
  return { copyGBs, rows };
}

export function decodeMarkdown(ours, torch, m) {
  const out = [`# Decode attention benchmark — ${ours.gpu}`, '',
    `- Card: **${ours.gpu}**${torch && torch.gpu !== ours.gpu ? ` (PyTorch side reports ${torch.gpu}!)` : ''}; date ${ours.date}; bf16, D = 128, one query token per sequence.`,
    `- Device-to-device copy bandwidth (PyTorch copy_ of 1 GiB, read + write): **${f0(m.copyGBs)} GB/s**.`,
    '- GB/s = K and V bytes of every cached token (read once) / time; sliding-window rows count only the tokens inside the window (the bytes a kernel must read), for every implementation alike. Paged rows: PyTorch on the dense equivalent; ragged: PyTorch on KV padded to the longest sequence with a length mask. Mod cost = contiguous GB/s / the row\'s GB/s - 1 (per byte read), against the row that reads the same bytes without the mod where one is listed (the window row: its baseline row, outside the copy bar).',
    `- Bars (issue 19 §5): B8 Skv32k ≥ 0.92 of copy, other contiguous rows ≥ 0.85, paged within 5% of contiguous, mods ≤ 5%, every row ≥ 1.0× the best PyTorch.`, '',
    '| case | ms | GB/s | of copy | paged/contig | mod cost | SDPA flash | cuDNN | efficient | flex (compiled) | ours / best torch |',
    '|---|---|---|---|---|---|---|---|---|---|---|'];
  for (const r of m.rows) {
    const b = r.bars ?? {};
    out.push(`| ${r.id} | ${r.ours.error ? 'error' : f2(r.ours.ms ? r.ours.ms : undefined)} | ${f0(r.ours.gbs)} | ${f2(r.ours.copyFraction)}${mark(b.copyFraction)} | ` +
      `${f2(r.ratios.pagedVsContiguous)}${mark(b.paged)} | ${r.ratios.modCost === undefined ? '–' : `${(r.ratios.modCost * 100).toFixed(1)}%`}${mark(b.mod)} | ` +
      `${f0(r.torch.gbs.fa2)} | ${f0(r.torch.gbs.cudnn)} | ${f0(r.torch.gbs.efficient)} | ${f0(r.torch.gbs.flex)} | ${f2(r.ratios.bestTorch)}${mark(b.bestTorch)} |`);
  }
  const notes = m.rows.flatMap((r) => [...Object.entries(r.torch.notes).map(([k, v]) => `${r.id} torch ${k}: ${v}`),
    ...(r.ours.error ? [`${r.id} ours: ${r.ours.error}`] : [])]);
  if (notes.length) out.push('', '## Notes', '', ...notes.map((n) => `- ${n}`));
  return `${out.join('\n')}\n`;
}

function main() {
  const { values: v } = parseArgs({ options: { ours: { type: 'string' }, torch: { type: 'string' }, outdir: { type: 'string' } } });
  if (!v.ours) { console.error('usage: node bench/decode-report.mjs --ours ours.json --torch torch-decode.json [--outdir DIR]'); process.exit(2); }
  const ours = JSON.parse(readFileSync(v.ours, 'utf8'));
  const torch = v.torch && existsSync(v.torch) ? JSON.parse(readFileSync(v.torch, 'utf8')) : null;
  const m = mergeDecode(ours, torch);
  const dir = v.outdir ?? 'bench/results';
  mkdirSync(dir, { recursive: true });
  const base = join(dir, `decode.${cardSlug(ours.gpu)}`);
  writeFileSync(`${base}.json`, JSON.stringify({ gpu: ours.gpu, torch: torch?.torch, date: ours.date, ...m }, null, 1));
  const md = decodeMarkdown(ours, torch, m);
  writeFileSync(`${base}.md`, md);
  process.stdout.write(md);
}

if (process.argv[1] && process.argv[1].endsWith('decode-report.mjs')) main();
