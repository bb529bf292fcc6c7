#!/usr/bin/env node
// Merges our timings (bench/run.mjs --out) and PyTorch's (bench/torch_attention.py --out)
// into bench/results/attention.<card-slug>.json, a Markdown table attention.<card-slug>.md and
// a chart attention.<card-slug>.svg (TFLOP/s per case, ours beside each PyTorch backend; bench/chart.mjs).
//
//   node bench/report.mjs --ours ours.json --torch torch.json [--cases DIR] [--notes NOTES.md] [--outdir bench/results]
import { readFileSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { attentionChartSvg } from './chart.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export function cardSlug(name) {
  return String(name).toLowerCase().replace(/^nvidia\s+/, '').replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '') || 'unknown';
}

const f1 = (x) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(1) : '–');
const f2 = (x) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(2) : '–');
const f3 = (x) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(3) : '–');
const ratio = (a, b) => (typeof a === 'number' && typeof b === 'number' && b > 0 ? a / b : undefined);
const mark = (ok) => (ok === undefined ? '' : ok ? ' ✓' : ' ✗');

export function merge(ours, torch, cases) {
  const tById = new Map((torch?.cases ?? []).map((r) => [r.id, r]));
  const rows = [];
  for (const o of ours.cases) {
    const t = tById.get(o.id) ?? {};
    const flops = o.flops ?? t.flops;
    const tf = (x) => (x && typeof x.ms === 'number' ? flops / (x.ms * 1e-3) / 1e12 : undefined);
    const row = {
      id: o.id, group: o.group, op: o.op, B: o.B, Hq: o.Hq, Hkv: o.Hkv, S: o.S, D: o.D, pattern: o.pattern,
      pairs: o.pairs, density: o.density, flops, blockDensity: o.blockDensity, ...(o.blockSize ? { blockSize: o.blockSize } : {}),
      ours: { ms: o.ms, tflops: o.tflops, n: o.n, reps: o.reps, minMs: o.minMs, maxMs: o.maxMs },
      ...(o.error ? { oursError: o.error } : {}), ...(o.skipped ? { oursSkipped: o.skipped } : {}),
      torch: {
        fa2: tf(t.fa2), cudnn: tf(t.cudnn), efficient: tf(t.efficient), flex: tf(t.flex),
        flexBlockDensity: t.flex_block_density, flexFirstCallS: t.flex_first_call_s,
        ms: { fa2: t.fa2?.ms, cudnn: t.cudnn?.ms, efficient: t.efficient?.ms, flex: t.flex?.ms },
        notes: Object.fromEntries(Object.entries(t).filter(([k]) => /_(error|note|error2)$/.test(k) || k === 'error' || k === 'skipped')),
      },
      pairsAgree: t.pairs === undefined ? undefined : t.pairs === o.pairs,
    };
    row.ratios = {
      fa2: ratio(o.tflops, row.torch.fa2), cudnn: ratio(o.tflops, row.torch.cudnn), flex: ratio(o.tflops, row.torch.flex),
    };
    rows.push(row);
  }
  const denseCausal = rows.find((r) => r.id === 'flex-shape dense causal (sdpa)')?.ours.tflops;
  for (const r of rows) if (r.group === 'flex' && r.op === 'flex') r.ratios.ourDenseCausal = ratio(r.ours.tflops, denseCausal);
  // Rows with their own block size are informational (the bar is for the default 128x128 BlockMask).
  for (const r of rows) if (r.blockSize !== undefined) r.informational = true;
  // the doc ids must be the same on both sides
  let docCheck;
  if (cases?.docLengths && torch?.doc_lengths) {
    docCheck = Object.entries(cases.docLengths).every(([id, l]) => JSON.stringify(torch.doc_lengths[id]) === JSON.stringify(l));
  }
  return { rows, denseCausal, docCheck };
}

function table(head, lines) {
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...lines.map((l) => `| ${l.join(' | ')} |`)].join('\n');
}

export function markdown(ours, torch, m) {
  const out = [];
  const card = ours.gpu;
  out.push(`# Attention forward benchmark — ${card}`);
  out.push('');
  out.push(`- Card: **${card}**${torch && torch.gpu !== card ? ` (PyTorch side reports ${torch.gpu}!)` : ''}${torch?.sms ? `, ${torch.sms} SMs` : ''}; ` +
    `flexattn timed from Node ${ours.node} (addon NVRTC ${ours.addon?.nvrtc || '?'}, precompiled dense kernels for ${(ours.addon?.fatbinArchs ?? []).join('/') || 'none'}); ` +
    (torch ? `PyTorch ${torch.torch} (CUDA ${torch.cuda}, cuDNN ${torch.cudnn}) on the same card in the same machine session.` : 'no PyTorch numbers in this run.'));
  out.push(`- Date: ${ours.date}. bf16, cuda:0, default scale 1/√D. Inputs: standard normal.`);
  out.push(`- Timing (both sides): per-call time = time of n back-to-back calls / n (n ≥ ${ours.timing?.minN}, raised until a sample lasts ≥ ${ours.timing?.targetSampleMs} ms), ` +
    `median of ${ours.timing?.reps} samples after warm-up. Ours: host wall clock around n \`await op()\` (each output disposed at once) + \`await synchronize()\`, so host overhead is included when it exceeds the kernel time. ` +
    'PyTorch: CUDA events around the n calls.');
  out.push('- TFLOPs = 4·D·Hq·(unmasked (q, kv) pairs, summed over the batch) / time; pairs counted exactly from each mask definition (closed form per query row), the same count for every column, ' +
    'so ratios do not depend on it. (PyTorch\'s flex benchmarks instead count with the BlockMask\'s density; the "block density" column gives that fraction for our 128×128 BlockMask.)');
  if (m.docCheck !== undefined) out.push(`- Document ids identical on both sides: ${m.docCheck ? 'yes' : 'NO'} (deterministic LCG lengths 200–2999, written as int32 for PyTorch).`);
  out.push('');
  out.push(`![TFLOP/s per case, flexattn and each PyTorch backend](attention.${cardSlug(card)}.svg)`);
  out.push('');

  const dense = m.rows.filter((r) => r.group === 'dense');
  if (dense.length) {
    out.push(`## Dense sweep (SDPA; ${dense[0].B * dense[0].S} tokens: B = ${dense[0].B * dense[0].S} / S, H = ${dense[0].Hq})`);
    out.push('');
    out.push('Issue bar: ours > SDPA flash (FA2) on every case.');
    out.push('');
    out.push(table(['case', 'ours ms', 'ours TFLOPs', 'FA2', 'cuDNN', 'mem-efficient', 'compiled flex', 'ours/FA2', 'ours/cuDNN', 'ours/flex'],
      dense.map((r) => [r.id, f3(r.ours.ms), f1(r.ours.tflops), f1(r.torch.fa2), f1(r.torch.cudnn), f1(r.torch.efficient), f1(r.torch.flex),
        f2(r.ratios.fa2) + mark(r.ratios.fa2 === undefined ? undefined : r.ratios.fa2 > 1), f2(r.ratios.cudnn), f2(r.ratios.flex)])));
    const judged = dense.filter((r) => r.ratios.fa2 !== undefined);
    const wins = judged.filter((r) => r.ratios.fa2 > 1).length;
    out.push('');
    out.push(`Ours beats FA2 on ${wins} of ${judged.length} dense cases.`);
    out.push('');
  }
  const flex = m.rows.filter((r) => r.group === 'flex');
  if (flex.length) {
    const f = flex[0];
    out.push(`## Flex patterns (B = ${f.B}, H = ${f.Hq}, S = ${f.S}, D = ${f.D})`);
    out.push('');
    out.push(`Issue bar: every pattern keeps ≥ 80 % of our dense causal TFLOPs on this shape (${f1(m.denseCausal)} TFLOPs, first row).` +
      (flex.some((r) => r.informational) ? ' Rows named "64x64 blocks" use a BlockMask of that block size (PyTorch too) and are ' +
        'outside the bar: they show what the 128x128 granularity costs a pattern (on Hopper our kernels walk a 128x128 ' +
        'mask built by createBlockMask at 64x64 anyway; PyTorch runs these rows with BLOCK_M = BLOCK_N = 64).' : ''));
    out.push('');
    out.push(table(['case', 'density', 'block density', 'ours ms', 'ours TFLOPs', 'compiled flex', 'FA2', 'cuDNN', 'ours/flex', 'ours/cuDNN', 'ours / our dense causal'],
      flex.map((r) => [r.id, f3(r.density), f3(r.blockDensity), f3(r.ours.ms), f1(r.ours.tflops), f1(r.torch.flex), f1(r.torch.fa2), f1(r.torch.cudnn),
        f2(r.ratios.flex), f2(r.ratios.cudnn),
        r.ratios.ourDenseCausal === undefined ? '–'
          : f3(r.ratios.ourDenseCausal) + (r.informational ? '' : mark(r.ratios.ourDenseCausal >= 0.8))])));
    out.push('');
  }
  const gqa = m.rows.filter((r) => r.group === 'gqa');
  if (gqa.length) {
    const g = gqa[0];
    out.push(`## GQA prefill (B = ${g.B}, Hq = ${g.Hq}, Hkv = ${g.Hkv}, S = ${g.S}, D = ${g.D}, causal)`);
    out.push('');
    out.push(table(['case', 'ours ms', 'ours TFLOPs', 'FA2', 'cuDNN', 'mem-efficient', 'compiled flex', 'ours/FA2', 'ours/cuDNN', 'ours/flex'],
      gqa.map((r) => [r.id, f3(r.ours.ms), f1(r.ours.tflops), f1(r.torch.fa2), f1(r.torch.cudnn), f1(r.torch.efficient), f1(r.torch.flex),
        f2(r.ratios.fa2), f2(r.ratios.cudnn), f2(r.ratios.flex)])));
    const notes = gqa.flatMap((r) => Object.entries(r.torch.notes).map(([k, v]) => `${r.id} ${k}: ${v}`));
    if (notes.length) { out.push(''); for (const n of notes) out.push(`- ${n}`); }
    out.push('');
  }
  const fc = ours.firstCall;
  if (fc) {
    out.push('## First call of a new flex kernel (NVRTC JIT)');
    out.push('');
    out.push(`${fc.shape}; ${fc.what}. Cold: fresh process, empty FLEXATTN_CACHE_DIR and CUDA_CACHE_DISABLE=1 (NVRTC output is otherwise also cached in ~/.nv/ComputeCache); ` +
      `warm disk: a second fresh process on the same directory. ` +
      'The CUDA context and a precompiled dense kernel are set up before the timed call. Issue bar: cold < 1 s, warm disk < 20 ms.');
    out.push('');
    const lines = [];
    for (const [label, r, bar] of [['cold (NVRTC compile)', fc.cold, 1000], ['warm disk cache', fc.warmDisk, 20]]) {
      for (const k of r.kernels) {
        lines.push([label, k.kernel, f1(k.firstMs) + mark(k.firstMs < bar), `${k.firstTier ?? '?'} (${k.firstOrigin ?? '?'})`,
          k.quickCompileMs == null ? '–' : f1(k.quickCompileMs), f1(k.optimizedReadyMs), `${k.finalTier ?? '?'} (${k.finalOrigin ?? '?'})`,
          f2(k.secondMs), f1(r.importMs), f1(r.contextMs)]);
      }
    }
    out.push(table(['cache', 'kernel', 'first call ms', 'first call ran', 'quick compile ms', 'optimized ready after ms', 'then runs',
      'call after that ms', 'import ms', 'context + first dense call ms'], lines));
    out.push('');
    out.push('Tiered JIT (lib/jit.ts): a kernel missing from the caches is compiled twice at once, a quick build ' +
      '(`--Ofast-compile=min`) that the first call runs and the optimized build that replaces it when ready and is the one ' +
      'written to the disk cache. "optimized ready after" counts from the start of the first call.');
    const tf = m.rows.filter((r) => r.torch.flexFirstCallS !== undefined);
    if (tf.length) {
      out.push('');
      out.push(`For comparison, PyTorch's first call of torch.compile(flex_attention) per case (Dynamo + Inductor + Triton compile, fresh machine): ` +
        tf.filter((r) => r.group !== 'dense').map((r) => `${r.id.replace(/^flex /, '')} ${f1(r.torch.flexFirstCallS)} s`).join(', ') + '.');
    }
    out.push('');
  }
  const ho = ours.hostOverhead;
  if (ho) {
    out.push(`## Host overhead per call (${ho.shape}, ${ho.rows[0]?.calls} calls per round, medians of ${ho.rows[0]?.rounds ?? 1} rounds after a warm-up)`);
    out.push('');
    const lines = ho.rows.map((r) => [`flexattn ${r.op}`, f1(r.returnUs), f1(r.awaitedUs), r.pipelinedUs === undefined ? '' : f1(r.pipelinedUs), f1(r.withSyncUs)]);
    for (const r of torch?.host_overhead ?? []) lines.push([`PyTorch ${r.op}`, f1(r.return_us), '(synchronous)', '', f1(r.with_sync_us)]);
    out.push(table(['op', 'returns (µs)', 'awaited (µs)', 'pipelined, 8 in flight (µs)', 'incl. final sync (µs)'], lines));
    out.push('');
    out.push('"returns": the synchronous part of the call (our ops are async functions: the launch itself happens in later microtasks); ' +
      '"awaited": `await op()` + dispose, i.e. the full host cost of one enqueue; "pipelined": 8 calls in flight, the oldest awaited and disposed before the next is issued.');
    out.push('');
  }
  const errs = [...(ours.errors ?? []), ...(torch?.errors ?? []).map((e) => `torch: ${e}`)];
  const notes = m.rows.filter((r) => r.group !== 'gqa').flatMap((r) => Object.entries(r.torch.notes).map(([k, v]) => `${r.id} ${k}: ${v}`));
  if (errs.length || notes.length) {
    out.push('## Errors and notes');
    out.push('');
    for (const e of [...errs, ...notes]) out.push(`- ${String(e).slice(0, 300)}`);
    out.push('');
  }
  return out.join('\n');
}

export async function main(argv = process.argv.slice(2)) {
  const a = { ours: null, torch: null, cases: null, notes: null, outdir: join(ROOT, 'bench', 'results') };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i].replace(/^--/, '');
    if (!(k in a)) { console.error(`unknown argument ${argv[i]}`); return 2; }
    a[k] = argv[++i];
  }
  if (!a.ours) { console.error('usage: node bench/report.mjs --ours ours.json [--torch torch.json] [--cases DIR] [--notes notes.md] [--outdir DIR]'); return 2; }
  const ours = JSON.parse(readFileSync(a.ours, 'utf8'));
  const torch = a.torch && existsSync(a.torch) ? JSON.parse(readFileSync(a.torch, 'utf8')) : null;
  const cases = a.cases && existsSync(join(a.cases, 'cases.json')) ? JSON.parse(readFileSync(join(a.cases, 'cases.json'), 'utf8')) : null;
  const m = merge(ours, torch, cases);
  const slug = cardSlug(ours.gpu);
  mkdirSync(a.outdir, { recursive: true });
  const json = {
    card: ours.gpu, torchCard: torch?.gpu, torch: torch ? { version: torch.torch, cuda: torch.cuda, cudnn: torch.cudnn, timing: torch.timing } : null,
    node: ours.node, date: ours.date, timing: ours.timing, counting: ours.counting, docIdsIdentical: m.docCheck,
    ourDenseCausalOnFlexShape: m.denseCausal, rows: m.rows, firstCall: ours.firstCall, hostOverhead: ours.hostOverhead,
    torchHostOverhead: torch?.host_overhead ?? null, errors: [...(ours.errors ?? []), ...(torch?.errors ?? [])],
  };
  const jp = join(a.outdir, `attention.${slug}.json`), mp = join(a.outdir, `attention.${slug}.md`);
  writeFileSync(jp, JSON.stringify(json, null, 1));
  let md = markdown(ours, torch, m);
  // hand-written reading of the numbers (kept in a separate file so the table can be regenerated)
  if (a.notes && existsSync(a.notes)) md += `\n${readFileSync(a.notes, 'utf8').trim()}\n`;
  writeFileSync(mp, md + '\n');
  const sp = join(a.outdir, `attention.${slug}.svg`);
  writeFileSync(sp, attentionChartSvg(m.rows, { card: ours.gpu, date: ours.date, torchVersion: torch?.torch, node: ours.node }));
  console.log(md);
  console.log(`\nwrote ${jp}, ${mp} and ${sp}`);
  return 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then((c) => { process.exitCode = c; }, (e) => { console.error(e?.stack ?? e); process.exitCode = 1; });
}
