#!/usr/bin/env node
// Node side of the backward correctness comparison against PyTorch (issue 21,
// "Correctness"; the check itself is bench/compare-backward-torch.py).
//
// For a few cases (odd lengths, GQA Hq 8 / Hkv 2, the flex patterns, captured
// tensors with gradFor) it writes the inputs (q, k, v, dOut in bf16; document
// ids i32; ALiBi slopes and a relative-bias table f32) and our results (out,
// lse, dq, dk, dv, dCaptured) to DIR as raw little-endian files plus
// DIR/manifest.json, which names each file with its dtype and shape. Each
// backward runs twice and the bits of both runs are compared (determinism).
// A case that fails (e.g. a NotImplementedError while there is no CUDA
// backward) is recorded in the manifest with its error; the others go on.
//
//   node bench/compare-backward.mjs --out DIR [--device cuda:0|cpu] [--lengths 77,1531] [--case TEXT]
//   python3 bench/compare-backward-torch.py --dir DIR [--device cuda:0|cpu] [--json result.json]
import { writeFileSync, mkdirSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { docIds } from './cases.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const MANIFEST_VERSION = 1;

/** The comparison cases at one length S (head dim D), B = 2, Hq = 8, Hkv = 2. */
export function compareCases(S, D) {
  const base = { B: 2, Hq: 8, Hkv: 2, Sq: S, Skv: S, D };
  const w = Math.max(8, Math.round(S / 5)), prefix = Math.max(4, Math.floor(S / 3));
  const cross = Math.round(S * 0.6) + 3;
  return [
    { id: `S${S} sdpa causal`, op: 'sdpa', pattern: 'causal', ...base },
    { id: `S${S} flex causal`, op: 'flex', pattern: 'causal', ...base },
    { id: `S${S} flex full, Skv ${cross}`, op: 'flex', pattern: 'full', ...base, Skv: cross },
    { id: `S${S} flex sliding window ${w}`, op: 'flex', pattern: 'swa', window: w, ...base },
    { id: `S${S} flex document-causal`, op: 'flex', pattern: 'doc', docSeed: 700 + S, docMin: Math.max(4, Math.floor(S / 8)),
      docSpan: Math.max(1, Math.floor(S / 3)), ...base },
    { id: `S${S} flex prefix-LM ${prefix}`, op: 'flex', pattern: 'prefix', prefix, ...base },
    { id: `S${S} flex softcap 4 + causal`, op: 'flex', pattern: 'softcap', softcap: 4, ...base },
    { id: `S${S} flex ALiBi + causal, gradFor slopes`, op: 'flex', pattern: 'alibi', gradFor: ['slopes'], ...base },
    { id: `S${S} flex relative bias + causal, gradFor table`, op: 'flex', pattern: 'relbias', gradFor: ['table'], ...base },
  ];
}

const fileName = (id, name) => `${id.replace(/[^A-Za-z0-9]+/g, '_')}.${name}.bin`;

/** Writes a host array as raw little-endian bytes; returns its manifest entry. */
function writeRaw(dir, id, name, host, dtype, shape) {
  const file = fileName(id, name);
  writeFileSync(join(dir, file), Buffer.from(host.buffer, host.byteOffset, host.byteLength));
  return { file, dtype, shape: [...shape] };
}

const bitsEqual = (a, b) => Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
const firstLine = (e) => `${e?.name ?? 'Error'}${e?.code ? ` [${e.code}]` : ''}: ${String(e?.message ?? e).split('\n')[0]}`;

/** Runs one case on `device`, writes its files into dir, returns its manifest entry. */
export async function runCompareCase(L, c, device, dir, seed) {
  const entry = { ...c, scale: 1 / Math.sqrt(c.D), files: {}, ours: {} };
  const own = [];
  let bm;
  const put = (t) => { own.push(t); return t; };
  // Inputs come from the host generator (seeded), so the files are the tensors the device saw.
  const input = async (name, shape, dtype, host) => {
    const cpu = put(host ? L.Tensor.fromHost(host, shape, dtype, { device: 'cpu' }) : L.Tensor.randn(shape, dtype, { device: 'cpu', seed: seed++ }));
    entry.files[name] = writeRaw(dir, c.id, name, await cpu.toHost(), dtype, shape);
    return device === 'cpu' ? cpu : put(L.Tensor.fromHost(await cpu.toHost(), shape, dtype, { device }));
  };
  try {
    const q = await input('q', [c.B, c.Hq, c.Sq, c.D], 'bf16');
    const k = await input('k', [c.B, c.Hkv, c.Skv, c.D], 'bf16');
    const v = await input('v', [c.B, c.Hkv, c.Skv, c.D], 'bf16');
    const dOut = await input('dOut', [c.B, c.Hq, c.Sq, c.D], 'bf16');
    let forward, backward;
    if (c.op === 'sdpa') {
      const o = { isCausal: c.pattern === 'causal', enableGQA: true };
      forward = () => L.scaledDotProductAttention(q, k, v, { ...o, returnLse: true });
      backward = (out, lse) => L.scaledDotProductAttentionBackward(q, k, v, out, lse, dOut, o);
    } else {
      let mask, scoreMod, gradFor = [];
      switch (c.pattern) {
        case 'full': break;
        case 'causal': mask = L.causal(); break;
        case 'swa': mask = L.slidingWindow(c.window); break;
        case 'prefix': mask = L.prefixLM(c.prefix); break;
        case 'doc': mask = L.documentMask(await input('docIds', [c.B, c.Sq], 'i32', docIds(c.B, c.Sq, c.docSeed, c.docMin, c.docSpan).ids)); break;
        case 'softcap': mask = L.causal(); scoreMod = L.softcap(c.softcap); break;
        case 'alibi': {
          const slopes = await input('slopes', [c.Hq], 'f32', L.alibiSlopes(c.Hq));
          mask = L.causal(); scoreMod = L.alibi(slopes); gradFor = [slopes];
          break;
        }
        case 'relbias': {
          // index q - kv + Skv - 1 covers every (q, kv) pair of [0, Sq) x [0, Skv)
          entry.relOffset = c.Skv - 1;
          const table = await input('table', [c.Hq, c.Sq + c.Skv - 1], 'f32');
          mask = L.causal(); scoreMod = L.relativeBias(table, { offset: entry.relOffset }); gradFor = [table];
          break;
        }
        default: throw new Error(`unknown pattern ${c.pattern}`);
      }
      if (mask) bm = await L.createBlockMask(mask, c.pattern === 'doc' ? c.B : 1, 1, c.Sq, c.Skv, { device });
      const o = { enableGQA: true, ...(bm ? { blockMask: bm } : {}), ...(scoreMod ? { scoreMod } : {}) };
      forward = () => L.flexAttention(q, k, v, { ...o, returnLse: true });
      backward = (out, lse) => L.flexAttentionBackward(q, k, v, out, lse, dOut, { ...o, ...(gradFor.length ? { gradFor } : {}) });
    }
    const f = await forward();
    put(f.out); put(f.lse);
    entry.ours.out = writeRaw(dir, c.id, 'out', await f.out.toHost(), 'bf16', f.out.shape);
    entry.ours.lse = writeRaw(dir, c.id, 'lse', await f.lse.toHost(), 'f32', f.lse.shape);
    const runs = [];
    for (let r = 0; r < 2; r++) {
      const g = await backward(f.out, f.lse);
      for (const t of [g.dq, g.dk, g.dv, ...(g.dCaptured ?? [])]) put(t);
      runs.push({ dq: await g.dq.toHost(), dk: await g.dk.toHost(), dv: await g.dv.toHost(),
        dCaptured: await Promise.all((g.dCaptured ?? []).map((t) => t.toHost())), shapes: { dq: g.dq.shape, dk: g.dk.shape, dv: g.dv.shape },
        capturedMeta: (g.dCaptured ?? []).map((t) => ({ shape: t.shape, dtype: t.dtype })) });
    }
    const [a, b] = runs;
    for (const n of ['dq', 'dk', 'dv']) entry.ours[n] = writeRaw(dir, c.id, n, a[n], 'bf16', a.shapes[n]);
    entry.ours.dCaptured = a.dCaptured.map((h, i) => writeRaw(dir, c.id, `dCaptured${i}`, h, a.capturedMeta[i].dtype, a.capturedMeta[i].shape));
    entry.deterministic = {
      dq: bitsEqual(a.dq, b.dq), dk: bitsEqual(a.dk, b.dk), dv: bitsEqual(a.dv, b.dv),
      dCaptured: a.dCaptured.map((h, i) => bitsEqual(h, b.dCaptured[i])),
    };
  } catch (e) {
    entry.error = firstLine(e);
  } finally {
    bm?.dispose();
    for (const t of own) t.dispose();
  }
  return entry;
}

export async function main(argv) {
  const { values: v } = parseArgs({
    args: argv, strict: true,
    options: { out: { type: 'string' }, device: { type: 'string' }, lengths: { type: 'string' }, case: { type: 'string', multiple: true } },
  });
  if (!v.out) {
    console.error('usage: node bench/compare-backward.mjs --out DIR [--device cuda:0|cpu] [--lengths 77,1531] [--case TEXT]');
    return 2;
  }
  const device = v.device ?? 'cuda:0';
  const L = await import(pathToFileURL(join(ROOT, 'dist', 'lib', 'index.js')).href);
  if (device !== 'cpu' && !L.cudaAvailable()) {
    console.error(`compare-backward: no usable CUDA device for ${device} (see \`flexattn info\`); use --device cpu`);
    return 2;
  }
  // The CPU backend is a reference, not fast: small lengths there by default.
  const lengths = (v.lengths ?? (device === 'cpu' ? '77,133' : '77,1531')).split(',').map(Number);
  if (lengths.some((s) => !(Number.isInteger(s) && s > 0))) { console.error(`--lengths needs positive integers, got '${v.lengths}'`); return 2; }
  const only = (v.case ?? []).map((t) => t.toLowerCase());
  mkdirSync(v.out, { recursive: true });
  const cases = lengths.flatMap((S) => compareCases(S, S < 512 ? 64 : 128))
    .filter((c) => !only.length || only.some((t) => c.id.toLowerCase().includes(t)));
  const manifest = {
    version: MANIFEST_VERSION, device, gpu: device === 'cpu' ? 'cpu' : L.deviceInfo().gpus[0]?.name ?? '?',
    date: new Date().toISOString(), node: process.version,
    layout: 'raw little-endian, C order; bf16 as its 16 bits, f32, i32', cases: [],
  };
  let seed = 2100;
  for (const c of cases) {
    const t0 = performance.now();
    const e = await runCompareCase(L, c, device, v.out, seed);
    seed += 16;
    manifest.cases.push(e);
    const det = e.deterministic ? ` deterministic dq=${e.deterministic.dq} dk=${e.deterministic.dk} dv=${e.deterministic.dv}`
      + `${e.deterministic.dCaptured.length ? ` dCaptured=${e.deterministic.dCaptured.join(',')}` : ''}` : '';
    console.log(`${e.id.padEnd(52)} ${e.error ? `ERROR ${e.error}` : 'written'}${det} (${((performance.now() - t0) / 1e3).toFixed(1)} s)`);
    writeFileSync(join(v.out, 'manifest.json'), JSON.stringify(manifest, null, 1));
  }
  console.log(`wrote ${manifest.cases.length} cases to ${join(v.out, 'manifest.json')}`);
  return manifest.cases.some((e) => e.error) ? 1 : 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (e) => { console.error(e?.stack ?? String(e)); process.exitCode = 1; });
}
