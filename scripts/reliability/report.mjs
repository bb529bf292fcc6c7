// Report phase: merges the partial results (sanitizer.json, oom.json, dispose.json,
// index.json, soak.json) into bench/results/reliability.<card>.md (and a merged
// .json beside it) with PASS/FAIL per phase. Needs no GPU: every partial file
// carries the environment it ran in, so the report can be made on any machine
// from the files a device call sent back (--from DIR, repeatable).
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { ROOT, readJson, resultsDir, writeJson } from './common.mjs';

export const PHASES = ['sanitizer', 'oom', 'dispose', 'index', 'soak'];
const TOOLS = ['memcheck', 'racecheck', 'synccheck', 'initcheck'];
const MIN_SOAK_MINUTES = 10;

const int = (n) => (typeof n === 'number' && Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '—');
const gib = (b) => (typeof b === 'number' ? `${(b / 2 ** 30).toFixed(2)} GiB` : '—');
const sec = (s) => (typeof s === 'number' ? `${s.toFixed(1)} s` : '—');
const exp = (x) => (typeof x === 'number' && Number.isFinite(x) ? x.toExponential(2) : '—');
const cell = (s) => String(s ?? '').replace(/\|/g, '\\|').replace(/\n/g, ' ');

/** PASS / FAIL / INCOMPLETE / NOT RUN / SKIPPED and one line of figures for each phase. */
export function verdicts(p) {
  const v = {};
  const s = p.sanitizer;
  if (!s) v.sanitizer = { status: 'NOT RUN', figures: '' };
  else if (s.dryRun) v.sanitizer = { status: 'NOT RUN', figures: `dry run (${s.env?.device}): native workload ${s.native?.workload?.passed ?? '?'} passed, ${s.native?.workload?.failed ?? '?'} failed` };
  else {
    const ran = TOOLS.filter((t) => s.tools?.[t]);
    const missing = TOOLS.filter((t) => !s.tools?.[t]);
    const allPass = ran.every((t) => s.tools[t].pass) && s.native?.workload?.failed === 0;
    const figures = ran.map((t) => `${t} ${s.tools[t].timedOut ? 'timed out' : s.tools[t].errors ?? '?'}${s.tools[t].racecheck ? ` (${s.tools[t].racecheck.hazards} hazards)` : ''}`).join(', ') +
      (ran.length ? ' errors' : '') + `; workload ${s.native?.workload?.passed ?? '?'} cases correct natively` + (missing.length ? `; not run: ${missing.join(', ')}` : '');
    const pf = s.plantedFault;
    const control = pf ? `; planted faults under memcheck: write to 0x10 ${pf.wild?.detected ? 'detected' : 'NOT detected'}, ` +
      `one element past a tensor ${pf['past-end']?.detected ? 'detected' : 'not detected (inside the caching allocator\'s pool)'}` : '; no planted-fault control run';
    const blind = pf && pf.wild?.detected !== true;
    v.sanitizer = { status: !allPass || blind ? 'FAIL' : missing.length ? 'INCOMPLETE' : 'PASS', figures: figures + control };
  }
  const o = p.oom;
  if (!o) v.oom = { status: 'NOT RUN', figures: '' };
  else if (o.skipped) v.oom = { status: 'SKIPPED', figures: o.skipped };
  else {
    v.oom = {
      status: o.pass ? 'PASS' : 'FAIL',
      figures: `filled ${gib(o.fill?.bytesFilled)} (${((o.fill?.fractionOfCard ?? 0) * 100).toFixed(1)} % of the card); call with the card full: ${o.whileFull?.[0]?.outcome ?? '?'}` +
        `; after free + emptyCache: ${o.recovery?.every((r) => r.outcome === 'completed' && r.correct) ? 'calls correct' : 'NOT recovered'}; allocated ${int(o.statsStart?.allocatedBytes)} → ${int(o.statsEnd?.allocatedBytes)} B`,
    };
  }
  const d = p.dispose;
  if (!d) v.dispose = { status: 'NOT RUN', figures: '' };
  else {
    const tot = { correct: 0, typed: 0, wrong: 0, untyped: 0 };
    const codes = {};
    for (const x of Object.values(d.byVariant ?? {})) {
      tot.correct += x.correct; tot.wrong += x.wrong; tot.untyped += x.untyped;
      for (const [c, n] of Object.entries(x.typed)) { tot.typed += n; codes[c] = (codes[c] ?? 0) + n; }
    }
    v.dispose = {
      status: d.pass ? 'PASS' : 'FAIL',
      figures: `${int(d.calls)} calls (${d.concurrency} in flight, ${int(d.churnTensors)} churn tensors): ${tot.correct} correct, ${tot.typed} typed errors` +
        `${Object.keys(codes).length ? ` (${Object.entries(codes).map(([c, n]) => `${n} ${c}`).join(', ')})` : ''}, ${tot.wrong} wrong, ${tot.untyped} untyped`,
    };
  }
  const x = p.index;
  if (!x) v.index = { status: 'NOT RUN', figures: '' };
  else {
    const fam = (x.families ?? []).map((f) => `${f.family} ${f.pass ? 'ok' : 'FAILED'}`).join(', ');
    v.index = {
      status: x.pass && x.exceeds2pow31 ? 'PASS' : x.pass ? 'FAIL' : 'FAIL',
      figures: `${int(x.elementsPerTensor)} elements per tensor (${x.exceeds2pow31 ? '> 2^31' : 'below 2^31: not the real check'}), ${int(x.rowsChecked)} rows per family (${fam}), largest element index checked ${int(x.largestElementIndexChecked)}`,
    };
  }
  const k = p.soak;
  if (!k) v.soak = { status: 'NOT RUN', figures: '' };
  else {
    const mins = k.durationMinutes ?? k.elapsedMinutes ?? 0;
    const figures = `${mins.toFixed(1)} min, ${int(k.completed)} calls (${int(k.checked)} against the reference, ${int(k.finiteChecked)} finite-checked, ${int(k.notCompared ?? 0)} ill-conditioned random mods run but not compared), ` +
      `${k.failures} failures, ${k.errors} errors; allocated ${int(k.statsStart?.allocatedBytes)} → ${int((k.statsEnd ?? k.statsNow)?.allocatedBytes)} B; event-loop delay p99 ${k.eventLoopDelay?.p99Ms ?? '—'} ms, max ${k.eventLoopDelay?.maxMs ?? '—'} ms`;
    const status = k.status !== 'done' ? (k.failures || k.errors ? 'FAIL' : 'INCOMPLETE')
      : !k.checksPass ? 'FAIL' : mins < MIN_SOAK_MINUTES ? 'FAIL' : 'PASS';
    v.soak = { status, figures: status === 'FAIL' && k.checksPass && mins < MIN_SOAK_MINUTES ? `${figures} (shorter than ${MIN_SOAK_MINUTES} min)` : figures };
  }
  return v;
}

/** The environment of the report: the first GPU one among the parts, else any. */
export function reportEnv(p) {
  const envs = PHASES.map((ph) => p[ph]?.env).filter(Boolean);
  return envs.find((e) => e.device !== 'cpu') ?? envs[0] ?? { card: 'unknown', cardSlug: 'unknown' };
}

/** Renders the Markdown report from the parsed partial files. */
export function renderReport(p, { date = new Date().toISOString() } = {}) {
  const env = reportEnv(p);
  const v = verdicts(p);
  const dates = PHASES.map((ph) => p[ph]?.env?.date).filter(Boolean).sort();
  const L = [];
  L.push(`# Reliability suite: ${env.card}`, '');
  L.push(`Made by \`scripts/gpu-reliability.sh\` (issue 17, item 10). Report written ${date}; phases ran ${dates[0] ?? '—'} to ${dates[dates.length - 1] ?? '—'}.`, '');
  L.push('| | |', '|---|---|');
  L.push(`| Card | ${cell(env.card)}${env.computeCapability ? ` (compute capability ${env.computeCapability}, ${gib(env.totalMemoryBytes)})` : ''} |`);
  L.push(`| CUDA driver API | ${env.driverVersion || '—'} |`, `| NVRTC | ${env.nvrtcVersion || '—'} |`, `| Node.js | ${env.node ?? '—'} |`);
  L.push(`| Precompiled kernels in the addon | ${(env.fatbinArchs ?? []).join(', ') || 'none (all JIT)'} |`);
  if (p.sanitizer?.sanitizerVersion) L.push(`| compute-sanitizer | ${cell(p.sanitizer.sanitizerVersion)} |`);
  L.push('');
  const overall = PHASES.every((ph) => v[ph].status === 'PASS') ? 'PASS' : PHASES.some((ph) => v[ph].status === 'FAIL') ? 'FAIL' : 'INCOMPLETE';
  L.push(`## Summary: ${overall}`, '', '| Phase | Result | Figures |', '|---|---|---|');
  const title = { sanitizer: 'compute-sanitizer (memcheck, racecheck, synccheck, initcheck)', oom: 'Out of memory', dispose: 'Dispose while in flight', index: 'Index arithmetic past 2^31', soak: 'Soak' };
  for (const ph of PHASES) L.push(`| ${title[ph]} | **${v[ph].status}** | ${cell(v[ph].figures)} |`);
  L.push('');

  const s = p.sanitizer;
  if (s) {
    L.push('## compute-sanitizer', '');
    L.push('One process per tool runs `scripts/reliability/workload.mjs`: every kernel family and variant on small random inputs, each result checked against the CPU reference. Kernels were compiled by the native run first and loaded from the disk cache under the tools. Lengths: `full` = 1, 77, 130-1531; `small` (racecheck, initcheck: they slow kernels the most) = the same cases with 1531, 1000, 777, 333 cut to 389, 263, 201, 131.', '');
    if (s.native) {
      const w = s.native.workload;
      L.push(`Native run: ${w?.passed ?? '?'} cases correct, ${w?.failed ?? '?'} failed, ${sec(s.native.seconds)}; ${w?.kernels ?? '?'} kernels loaded` +
        `${w ? ` (sm90 family: ${w.sm90Seen ? 'yes' : 'no'}, segmented grid: ${w.segmentedGridSeen ? 'yes' : 'no'})` : ''}.`, '');
      for (const f of w?.failures ?? []) L.push(`- FAILED natively: ${cell(f.name)} [${f.family}]: ${cell(f.why)}`);
      if (w?.failures?.length) L.push('');
    }
    L.push('| Tool | Errors | Result | Time | Exit | Workload correct (lengths) | Findings | Kernels named |', '|---|---|---|---|---|---|---|---|');
    for (const t of TOOLS) {
      const e = s.tools?.[t];
      if (!e) { L.push(`| ${t} | — | not run | | | | | |`); continue; }
      const kinds = Object.entries(e.kinds ?? {}).map(([k, n]) => `${n}× ${k}`).join('; ');
      const kernels = Object.entries(e.kernels ?? {}).map(([k, n]) => `${k} (${n})`).join(', ');
      const errors = e.timedOut ? `timed out after ${e.timeoutS} s` : `${e.errors ?? 'no summary'}${e.racecheck ? ` (${e.racecheck.hazards} hazards: ${e.racecheck.errors} errors, ${e.racecheck.warnings} warnings)` : ''}`;
      L.push(`| ${t} | ${errors} | **${e.pass ? 'PASS' : 'FAIL'}** | ${sec(e.seconds)} | ${e.exitCode ?? e.signal ?? '—'} | ${e.workload ? `${e.workload.passed}/${e.workload.passed + e.workload.failed}` : '—'}${e.size ? ` (${e.size})` : ''} | ${cell(kinds) || 'none'} | ${cell(kernels) || '—'} |`);
    }
    L.push('');
    if (s.plantedFault) {
      L.push('Control (`scripts/reliability/planted-fault.mjs` under memcheck, a kernel launched like the package\'s own):', '');
      for (const [mode, what] of [['wild', 'a write to address 0x10, outside every allocation'], ['past-end', 'a write one element past a 64-element f32 tensor']]) {
        const f = s.plantedFault[mode];
        L.push(`- ${what}: ${f ? `${f.errors ?? 'no summary'} errors (${f.detected ? 'detected' : 'NOT detected'})` : 'not run'}`);
      }
      L.push('');
      if (s.plantedFault['past-end'] && !s.plantedFault['past-end'].detected) {
        L.push('A write that stays inside a block the caching allocator holds is invisible to memcheck (it knows only the driver\'s allocations); the workload\'s own bounds are checked by the comparison with the CPU reference on poisoned outputs.', '');
      }
    }
    const notes = TOOLS.flatMap((t) => (s.tools?.[t]?.notes ?? []).map((n) => `- ${t}: ${cell(n)}`));
    if (notes.length) L.push('Messages of the tools themselves:', '', ...notes, '');
    const cmd = TOOLS.map((t) => s.tools?.[t]?.command).find(Boolean);
    if (cmd) L.push(`Command (per tool): \`${cmd}\``, '');
  }

  const o = p.oom;
  if (o && !o.skipped) {
    L.push('## Out of memory', '');
    L.push('| Chunk | Allocated | Stopped by |', '|---|---|---|');
    for (const r of o.fill?.rows ?? []) L.push(`| ${int(r.chunkBytes / 1024)} KiB | ${int(r.count)} | ${r.stoppedBy ? `${r.stoppedBy.name} (${r.stoppedBy.code})` : '—'} |`);
    L.push('', `Filled ${gib(o.fill?.bytesFilled)} of ${gib(o.env?.totalMemoryBytes)} in ${sec((o.fill?.ms ?? 0) / 1000)}; the allocator freed its cache and retried ${int(o.oomRetries)} times.`, '');
    L.push('| Call | Outcome | Detail |', '|---|---|---|');
    L.push(`| before filling | ${o.warm?.outcome} | ${o.warm?.correct ? `correct (rel err ${exp(o.warm.relErr)})` : cell(o.warm?.reason ?? o.warm?.error?.message)} |`);
    for (const r of o.whileFull ?? []) L.push(`| card full: ${cell(r.label)} | ${r.outcome} | ${r.error ? `${r.error.name}, code ${r.error.code}` : r.correct === false ? 'WRONG RESULT' : r.correct ? 'correct' : ''} |`);
    for (const r of o.recovery ?? []) L.push(`| ${cell(r.label)} | ${r.outcome} | ${r.correct ? `correct (rel err ${exp(r.relErr)})` : cell(r.reason ?? r.error?.message ?? 'wrong')} |`);
    L.push('', `Allocated bytes: ${int(o.statsStart?.allocatedBytes)} at the start, ${int(o.statsEnd?.allocatedBytes)} at the end (reserved ${int(o.statsEnd?.reservedBytes)})` +
      `${o.allocatedAfterGc !== undefined ? `; ${int(o.allocatedAfterGc)} after a forced GC (blocks only the FinalizationRegistry backstop returned)` : ''}.`, '');
    const msg = o.whileFull?.find((r) => r.error)?.error?.message;
    if (msg) L.push('The error the first call got:', '', '```', msg, '```', '');
  }

  const d = p.dispose;
  if (d) {
    L.push('## Dispose while in flight', '');
    L.push(`${int(d.calls)} calls in ${d.rounds} rounds of ${d.concurrency} in flight, ${int(d.churnTensors)} tensors allocated, filled and freed between launches, ${sec(d.seconds)}. A typed error is accepted; a wrong result or an untyped error fails.`, '');
    L.push('| Variant | Correct | Typed error | Wrong | Untyped error |', '|---|---|---|---|---|');
    for (const [name, x] of Object.entries(d.byVariant ?? {})) {
      L.push(`| ${cell(name)} | ${x.correct} | ${Object.entries(x.typed).map(([c, n]) => `${n} ${c}`).join(', ') || '0'} | ${x.wrong} | ${x.untyped} |`);
    }
    L.push('');
    if (d.statsEnd) {
      L.push(`Allocated bytes: ${int(d.statsStart?.allocatedBytes)} before, ${int(d.statsEnd.allocatedBytes)} after disposing everything and emptyCache()` +
        `${d.allocatedAfterGc !== undefined ? `, ${int(d.allocatedAfterGc)} after a forced GC (a rejected call left blocks that only the FinalizationRegistry backstop returned)` : ''}.`, '');
    }
    for (const w of (d.wrong ?? []).slice(0, 5)) L.push(`- ${cell(JSON.stringify(w.case))}: ${cell(w.reason ?? w.error?.message)}`);
    if (d.wrong?.length) L.push('');
  }

  const x = p.index;
  if (x) {
    L.push('## Index arithmetic past 2^31 elements', '');
    const dm = x.dims ?? {};
    L.push(`q, k, v: [${dm.B}, ${dm.H}, ${dm.S}, ${dm.D}] ${dm.dtype}, ${int(x.elementsPerTensor)} elements each (2^31 = 2,147,483,648), mask \`andMasks(slidingWindow(${dm.window}), causal())\`` +
      ` (${x.blockMask?.method}, built in ${(x.blockMask?.ms ?? 0).toFixed(1)} ms). Rows checked against a float64 reference from host copies of the rows each reads: the last batch and head, both sides of element ${int(x.boundaryElement)}, random rows of those planes; the two planes scanned for NaN/Inf.`, '');
    L.push('| Family | Rows | Max rel err | Max LSE err | Call | Input anomalies (0, non-finite or > 12 in the rows read) | Failures |', '|---|---|---|---|---|---|---|');
    for (const f of x.families ?? []) L.push(`| ${f.family} | ${f.rows} | ${exp(f.maxRelErr)} | ${exp(f.maxLseErr)} | ${sec(f.callSeconds)} | ${f.inputAnomalies ?? '—'} | ${f.error ? cell(`${f.error.name}: ${f.error.message}`) : f.failures.length ? cell(f.failures.slice(0, 3).map((y) => `(${y.b},${y.h},${y.i}) ${y.reason}`).join('; ')) : '0'} |`);
    L.push('', `Largest element index checked: ${int(x.largestElementIndexChecked)}.${x.error ? ` Error: ${cell(x.error.message)}` : ''}`, '');
  }

  const k = p.soak;
  if (k) {
    L.push('## Soak', '');
    L.push(`Status ${k.status}${k.status !== 'done' ? ` (last progress ${k.updatedAt})` : ''}; ${(k.durationMinutes ?? k.elapsedMinutes ?? 0).toFixed(2)} min, ${k.concurrency} calls in flight, one result in ${k.checkEvery} against the ${k.env?.device === 'cpu' ? 'float64 JS' : 'CPU'} reference (bf16/f16 tolerance 1e-2, 3e-2 with a random mod), the others checked finite where the mods cannot make NaN; lengths up to ${k.maxSeq}.`, '');
    L.push('| | |', '|---|---|');
    L.push(`| Calls completed | ${int(k.completed)} (${(k.callsPerSecond ?? 0).toFixed(1)}/s) |`, `| Checked against the reference | ${int(k.checked)} |`, `| Checked finite | ${int(k.finiteChecked)} |`,
      `| Ill-conditioned random mods, run but not compared (float mod/floorDiv/comparison: a last-bit score difference crosses a step) | ${int(k.notCompared ?? 0)} |`);
    L.push(`| Failures / errors | ${k.failures} / ${k.errors}${Object.keys(k.errorCodes ?? {}).length ? ` (${cell(JSON.stringify(k.errorCodes))})` : ''} |`);
    L.push(`| Allocated at start / end | ${int(k.statsStart?.allocatedBytes)} / ${int((k.statsEnd ?? k.statsNow)?.allocatedBytes)} B${k.statsEnd ? ` (after dispose + emptyCache; reserved ${int(k.statsEnd.reservedBytes)} B, peak ${gib(k.statsEnd.peakAllocatedBytes)})` : k.env?.device === 'cpu' ? ' (no device allocator on the CPU)' : ' (still running)'} |`);
    const e = k.eventLoopDelay ?? {};
    L.push(`| Event-loop delay (1 ms sampling) | mean ${e.meanMs} ms, p50 ${e.p50Ms} ms, p99 ${e.p99Ms} ms, max ${e.maxMs} ms (includes this script's own host-side checks) |`);
    L.push(`| Calls by op / dtype / family | ${cell(JSON.stringify(k.byOp))} ${cell(JSON.stringify(k.byDtype))} ${cell(JSON.stringify(k.byFamily))} |`);
    L.push(`| Calls by mask | ${cell(JSON.stringify(k.byMask))} |`, `| Calls by score mod | ${cell(JSON.stringify(k.byScore))} |`);
    if (k.kernelsLoaded) L.push(`| Kernels loaded at the end | ${k.kernelsLoaded} |`);
    L.push('');
    for (const f of (k.failureSamples ?? []).slice(0, 8)) L.push(`- ${cell(JSON.stringify(f.case))}: ${cell(f.reason ?? `${f.error?.name} ${f.error?.code}: ${f.error?.message}`)}${f.mask ? ` mask ${cell(f.mask)}` : ''}${f.score ? ` score ${cell(f.score)}` : ''}`);
    if (k.failureSamples?.length) L.push('');
  }
  return { markdown: `${L.join('\n')}\n`, overall, verdicts: v, env };
}

/** Reads the partial files: for each phase the newest among `dirs`. */
export function readParts(dirs) {
  const p = {};
  for (const ph of PHASES) {
    for (const d of dirs) {
      const j = readJson(join(d, `${ph}.json`));
      if (j && (!p[ph] || (j.env?.date ?? '') > (p[ph].env?.date ?? ''))) p[ph] = j;
    }
  }
  return p;
}

function main() {
  const { values: a } = parseArgs({
    options: { results: { type: 'string' }, from: { type: 'string', multiple: true }, out: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
  });
  if (a.help) {
    console.log('usage: node scripts/reliability/report.mjs [--results DIR] [--from DIR]... [--out FILE.md]\n' +
      'Merges the phase results into bench/results/reliability.<card>.md (+ .json), also copied to $OUT when set.');
    return;
  }
  const dirs = [resultsDir(a.results), ...(a.from ?? []).map((d) => resolve(d))];
  const parts = readParts(dirs);
  if (!PHASES.some((ph) => parts[ph])) {
    console.error(`report: no phase results in ${dirs.join(', ')}`);
    process.exit(1);
  }
  const r = renderReport(parts);
    // A local (CPU) run is not a result to commit: its report stays beside its partial files.
  const out = a.out ? resolve(a.out) : r.env.device === 'cpu' ? join(dirs[0], 'reliability.cpu.md') : join(ROOT, 'bench/results', `reliability.${r.env.cardSlug}.md`);
  mkdirSync(join(out, '..'), { recursive: true });
  writeFileSync(out, r.markdown);
  const jsonOut = out.endsWith('.md') ? out.replace(/\.md$/, '.json') : `${out}.json`;
  writeJson(jsonOut, { overall: r.overall, verdicts: r.verdicts, parts });
  if (process.env.OUT && existsSync(process.env.OUT)) {
    for (const f of [out, jsonOut]) copyFileSync(f, join(process.env.OUT, f.split('/').pop()));
  }
  process.stdout.write(r.markdown);
  console.error(`report: ${r.overall}; wrote ${out} and ${jsonOut}`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) main();
