#!/usr/bin/env node
// Merges our backward rows (bench/run.mjs --out: `backward`) and PyTorch's
// (bench/torch_backward.py --out) into backward.<card-slug>.{json,md}: ms and
// TFLOP/s (unmasked pairs; backward = 2.5x the forward's FLOPs) of the backward
// alone and of forward + backward, for ours, SDPA flash / cuDNN / efficient and
// compiled flex_attention, the ratios the issue's bars name, and the bars:
//   dense rows      forward + backward >= 1.0x cuDNN and >= 1.25x compiled flex
//   flex patterns   backward >= 1.3x compiled flex (relative bias: with its gradient on both sides)
//   gradFor         the relative-bias backward with gradFor costs <= 15% over the same backward without
//   deterministic   two runs of our backward give bit-identical dq and dCaptured (the issue's requirement)
// A ratio is speed over speed: PyTorch's time / ours (> 1: we are faster).
//
//   node bench/backward-report.mjs --ours ours.json --torch torch-backward.json [--outdir bench/results]
import { readFileSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cardSlug } from './report.mjs';

/** The issue's bars (issue 21, "Bars"). */
export const BARS = { denseVsCudnn: 1.0, denseVsFlex: 1.25, flexBwdVsFlex: 1.3, gradForOverhead: 0.15 };

const IMPLS = ['fa2', 'cudnn', 'efficient', 'flex'];
const MODES = ['bwd', 'fwdBwd'];
const ms = (x) => (x && typeof x.ms === 'number' && x.ms > 0 ? x.ms : undefined);
const ratio = (torchMs, oursMs) => (torchMs !== undefined && oursMs !== undefined ? torchMs / oursMs : undefined);
const atLeast = (x, bar) => (x === undefined ? undefined : x >= bar);

/** One merged row per case of ours (PyTorch rows matched by id). */
export function mergeBackward(ours, torch) {
  const tById = new Map((torch?.cases ?? []).map((r) => [r.id, r]));
  const rows = (ours.backward ?? []).map((o) => {
    const t = tById.get(o.id) ?? {};
    const flops = { bwd: o.bwdFlops ?? t.bwdFlops, fwdBwd: o.fwdBwdFlops ?? t.fwdBwdFlops };
    const tf = (m, f) => (m !== undefined && f ? f / (m * 1e-3) / 1e12 : undefined);
    const torchRows = {};
    const notes = [];
    for (const impl of IMPLS) {
      const x = t[impl];
      if (!x) continue;
      if (x.error) notes.push(`torch ${impl}: ${x.error}`);
      torchRows[impl] = {};
      for (const mode of MODES) {
        const m = ms(x[mode]);
        torchRows[impl][mode] = { ms: m, tflops: tf(m, flops[mode]) };
        if (x[mode]?.error) notes.push(`torch ${impl} ${mode}: ${x[mode].error}`);
      }
    }
    for (const [k, v] of Object.entries(t)) if (/error|skipped/.test(k)) notes.push(`torch ${k}: ${v}`);
    const oursRows = {};
    for (const mode of [...MODES, 'attentionFwdBwd']) {
      const x = o[mode];
      if (!x) continue;
      const m = ms(x);
      oursRows[mode] = { ms: m, tflops: tf(m, flops[mode === 'attentionFwdBwd' ? 'fwdBwd' : mode]), ...(x.error ? { error: x.error } : {}) };
      if (x.error) notes.push(`ours ${mode}: ${x.error}`);
    }
    if (o.error && !Object.values(oursRows).some((r) => r.error)) notes.push(`ours: ${o.error}`);
    if (o.skipped) notes.push(`ours skipped: ${o.skipped}`);
    const tm = (impl, mode) => torchRows[impl]?.[mode]?.ms;
    const om = (mode) => oursRows[mode]?.ms;
    const ratios = {
      bwdVsFlex: ratio(tm('flex', 'bwd'), om('bwd')),
      fwdBwdVsFlex: ratio(tm('flex', 'fwdBwd'), om('fwdBwd')),
      bwdVsCudnn: ratio(tm('cudnn', 'bwd'), om('bwd')),
      fwdBwdVsCudnn: ratio(tm('cudnn', 'fwdBwd'), om('fwdBwd')),
      fwdBwdVsFa2: ratio(tm('fa2', 'fwdBwd'), om('fwdBwd')),
    };
    return {
      id: o.id, kind: o.kind, pattern: o.pattern, B: o.B, Hq: o.Hq, Hkv: o.Hkv, S: o.S, D: o.D, pairs: o.pairs, flops,
      gradFor: o.gradFor, baseId: o.baseId,
      ours: { ...oursRows, deterministic: o.deterministic },
      torch: { ...torchRows, flexDeterministic: t.flex_deterministic, flexFirstCallS: t.flex_first_call_s },
      ratios, notes,
    };
  });
  const byId = new Map(rows.map((r) => [r.id, r]));
  for (const r of rows) {
    const base = r.baseId ? byId.get(r.baseId) : undefined;
    const a = r.ours.bwd?.ms, b = base?.ours.bwd?.ms;
    if (base) r.ratios.gradForOverhead = a !== undefined && b !== undefined ? a / b - 1 : undefined;
    const bars = {};
    if (r.kind === 'dense') {
      bars.denseVsCudnn = atLeast(r.ratios.fwdBwdVsCudnn, BARS.denseVsCudnn);
      bars.denseVsFlex = atLeast(r.ratios.fwdBwdVsFlex, BARS.denseVsFlex);
    }
    if (r.kind === 'flex') bars.flexBwdVsFlex = atLeast(r.ratios.bwdVsFlex, BARS.flexBwdVsFlex);
    if (base) bars.gradForOverhead = r.ratios.gradForOverhead === undefined ? undefined : r.ratios.gradForOverhead <= BARS.gradForOverhead;
    const det = r.ours.deterministic;
    // A check that could not run (an error) is not measured, not a failure; the error is in the notes.
    if (det) bars.deterministic = det.error ? undefined : det.dq === true && (det.dCaptured ?? []).every((x) => x === true);
    if (det?.error) r.notes.push(`ours determinism check: ${det.error}`);
    r.bars = bars;
  }
  const summary = [];
  const label = {
    denseVsCudnn: `fwd+bwd ≥ ${BARS.denseVsCudnn}× cuDNN`, denseVsFlex: `fwd+bwd ≥ ${BARS.denseVsFlex}× compiled flex`,
    flexBwdVsFlex: `bwd ≥ ${BARS.flexBwdVsFlex}× compiled flex`, gradForOverhead: `gradFor overhead ≤ ${BARS.gradForOverhead * 100}%`,
    deterministic: 'dq and dCaptured bit-identical over two runs',
  };
  const value = { denseVsCudnn: 'fwdBwdVsCudnn', denseVsFlex: 'fwdBwdVsFlex', flexBwdVsFlex: 'bwdVsFlex', gradForOverhead: 'gradForOverhead' };
  for (const r of rows) {
    for (const [bar, ok] of Object.entries(r.bars)) {
      summary.push({ id: r.id, bar, what: label[bar], value: value[bar] ? r.ratios[value[bar]] : undefined,
        result: ok === undefined ? 'missing' : ok ? 'pass' : 'fail' });
    }
  }
  const count = (s) => summary.filter((x) => x.result === s).length;
  return { rows, summary, totals: { pass: count('pass'), fail: count('fail'), missing: count('missing') } };
}

const f1 = (x) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(1) : '–');
const f2 = (x) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(2) : '–');
const f3 = (x) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(3) : '–');
const mark = (ok) => (ok === undefined ? '' : ok ? ' ✓' : ' ✗');
const msTf = (x) => (x?.ms === undefined ? (x?.error ? 'error' : '–') : `${f3(x.ms)} (${f1(x.tflops)})`);

/** "B = 2, H = 16, S = 8192" when every row has that shape (D is per row). */
function shapeLine(rows) {
  const s = new Set(rows.map((r) => `B = ${r.B}, H = ${r.Hq}${r.Hkv !== r.Hq ? ` (KV ${r.Hkv})` : ''}, S = ${r.S}`));
  return s.size === 1 ? [...s][0] : 'shapes per row in the JSON';
}

export function backwardMarkdown(ours, torch, m) {
  const out = [`# Attention backward benchmark — ${ours.gpu}`, '',
    `- Card: **${ours.gpu}**${torch && torch.gpu !== ours.gpu ? ` (PyTorch side reports ${torch?.gpu}!)` : ''}; date ${ours.date}; `
      + `PyTorch ${torch?.torch ?? '(no PyTorch results)'}; bf16, ${shapeLine(m.rows)}, scale 1/√D, standard-normal inputs.`,
    '- Each cell: ms per call (TFLOP/s). FLOPs on the unmasked (q, kv) pairs: forward 4·D·H·pairs, backward 2.5× that, '
      + 'forward + backward 3.5×. bwd = backward only (the forward\'s out and LSE prepared once); fwd+bwd = forward with the LSE + backward.',
    '- Ratios are PyTorch\'s time / ours (> 1: ours faster). gradFor overhead = our backward with the table\'s gradient / without − 1.',
    `- Bars (issue 21): dense fwd+bwd ≥ ${BARS.denseVsCudnn}× cuDNN and ≥ ${BARS.denseVsFlex}× compiled flex_attention; every flex `
      + `pattern's backward ≥ ${BARS.flexBwdVsFlex}× compiled flex_attention's; deterministic captured-tensor gradients cost ≤ `
      + `${BARS.gradForOverhead * 100}% over the same backward without them.`, '',
    '| case | ours bwd | ours fwd+bwd | FA2 bwd | FA2 fwd+bwd | cuDNN bwd | cuDNN fwd+bwd | efficient bwd | efficient fwd+bwd | flex bwd | flex fwd+bwd | fwd+bwd / cuDNN | fwd+bwd / flex | bwd / flex | gradFor overhead |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|'];
  for (const r of m.rows) {
    const b = r.bars;
    const t = (impl, mode) => msTf(r.torch[impl]?.[mode]);
    out.push(`| ${r.id} | ${msTf(r.ours.bwd)} | ${msTf(r.ours.fwdBwd)} | ${t('fa2', 'bwd')} | ${t('fa2', 'fwdBwd')} | ${t('cudnn', 'bwd')} | `
      + `${t('cudnn', 'fwdBwd')} | ${t('efficient', 'bwd')} | ${t('efficient', 'fwdBwd')} | ${t('flex', 'bwd')} | ${t('flex', 'fwdBwd')} | `
      + `${f2(r.ratios.fwdBwdVsCudnn)}${mark(b.denseVsCudnn)} | ${f2(r.ratios.fwdBwdVsFlex)}${mark(b.denseVsFlex)} | `
      + `${f2(r.ratios.bwdVsFlex)}${mark(b.flexBwdVsFlex)} | `
      + `${r.ratios.gradForOverhead === undefined ? '–' : `${(r.ratios.gradForOverhead * 100).toFixed(1)}%`}${mark(b.gradForOverhead)} |`);
  }
  const extra = m.rows.filter((r) => r.ours.attentionFwdBwd);
  if (extra.length) {
    out.push('', '`attention(..., { requiresGrad: true })` + `backward(dOut)` (the model-facing switch) against the direct calls:', '',
      '| case | attention() fwd+bwd | direct fwd+bwd |', '|---|---|---|');
    for (const r of extra) out.push(`| ${r.id} | ${msTf(r.ours.attentionFwdBwd)} | ${msTf(r.ours.fwdBwd)} |`);
  }
  out.push('', '## Bars', '', `${m.totals.pass} pass, ${m.totals.fail} fail, ${m.totals.missing} not measured.`, '',
    '| case | bar | value | result |', '|---|---|---|---|');
  for (const s of m.summary) {
    const v = s.bar === 'gradForOverhead' ? (s.value === undefined ? '–' : `${(s.value * 100).toFixed(1)}%`) : f2(s.value);
    out.push(`| ${s.id} | ${s.what} | ${s.bar === 'deterministic' ? '' : v} | ${s.result === 'pass' ? 'PASS' : s.result === 'fail' ? 'FAIL' : 'not measured'} |`);
  }
  const det = m.rows.filter((r) => r.torch.flexDeterministic?.dCaptured?.length);
  if (det.length) {
    out.push('', 'PyTorch\'s compiled flex, two runs of the same backward: '
      + det.map((r) => `${r.id}: dq ${r.torch.flexDeterministic.dq ? 'identical' : 'differs'}, captured gradient `
        + `${r.torch.flexDeterministic.dCaptured.every(Boolean) ? 'identical' : 'differs'}`).join('; ') + '.');
  }
  const notes = m.rows.flatMap((r) => r.notes.map((n) => `${r.id}: ${n}`));
  if (notes.length) out.push('', '## Notes', '', ...notes.map((n) => `- ${n}`));
  return `${out.join('\n')}\n`;
}

/** Writes backward.<card>.{json,md} into outdir; returns the merged report and the file base path. */
export function writeBackwardReport(ours, torch, outdir) {
  const m = mergeBackward(ours, torch);
  mkdirSync(outdir, { recursive: true });
  const base = join(outdir, `backward.${cardSlug(ours.gpu)}`);
  writeFileSync(`${base}.json`, JSON.stringify({ gpu: ours.gpu, torchGpu: torch?.gpu, torch: torch?.torch, date: ours.date, bars: BARS, ...m }, null, 1));
  const md = backwardMarkdown(ours, torch, m);
  writeFileSync(`${base}.md`, md);
  return { m, md, base };
}

function main() {
  const { values: v } = parseArgs({ options: { ours: { type: 'string' }, torch: { type: 'string' }, outdir: { type: 'string' } } });
  if (!v.ours) { console.error('usage: node bench/backward-report.mjs --ours ours.json --torch torch-backward.json [--outdir DIR]'); process.exit(2); }
  const ours = JSON.parse(readFileSync(v.ours, 'utf8'));
  const torch = v.torch && existsSync(v.torch) ? JSON.parse(readFileSync(v.torch, 'utf8')) : null;
  const { md } = writeBackwardReport(ours, torch, v.outdir ?? 'bench/results');
  process.stdout.write(md);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
