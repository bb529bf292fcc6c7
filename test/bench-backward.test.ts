/**
 * The backward benchmark (bench/backward-cases.mjs, bench/backward.mjs,
 * bench/backward-report.mjs) and the PyTorch comparison's Node side
 * (bench/compare-backward.mjs), without a GPU: pair counts against a brute-force
 * count of each mask, one row measured on the CPU backend with a stub timer, a
 * backward that throws becoming a per-row error, the report's ratios and bars on
 * a synthetic pair of result files, and the comparison files checked by the
 * Python side with numpy where python3 has it.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { pathToFileURL } from 'node:url';
import * as L from '../lib/index.js';
import { NotImplementedError } from '../lib/errors.js';
import { packageRoot } from '../lib/native.js';

/* eslint-disable @typescript-eslint/no-explicit-any */
const mod = async (f: string): Promise<any> => import(pathToFileURL(join(packageRoot, 'bench', f)).href);
const cases = await mod('backward-cases.mjs');
const bwd = await mod('backward.mjs');
const report = await mod('backward-report.mjs');
const shared = await mod('cases.mjs');

/** Unmasked pairs of a case counted by evaluating its mask at every (b, q, kv). */
function brutePairs(c: any): number {
  const ids = c.pattern === 'doc' ? shared.docIds(c.B, c.S, c.docSeed, c.docMin, c.docSpan).ids as Int32Array : null;
  let n = 0;
  for (let b = 0; b < c.B; b++) {
    for (let q = 0; q < c.S; q++) {
      for (let kv = 0; kv < c.S; kv++) {
        let ok = kv <= q;
        if (c.pattern === 'swa') ok = ok && q - kv < c.window;
        if (c.pattern === 'prefix') ok = kv < c.prefix || kv <= q;
        if (c.pattern === 'doc') ok = ok && ids![b * c.S + q] === ids![b * c.S + kv];
        if (ok) n++;
      }
    }
  }
  return n;
}

/** A timer that runs the op twice (disposing what it returns) and reports a fixed time. */
async function stubTime(_L: unknown, _device: string, op: () => Promise<{ dispose(): void }>) {
  for (let i = 0; i < 2; i++) (await op()).dispose();
  return { ms: 2, minMs: 2, maxMs: 2, n: 2, reps: 1, firstCallMs: 2 };
}

describe('backward cases', () => {
  const full = cases.buildBackwardCases() as any[];
  const tiny = cases.buildBackwardCases({ tiny: true }) as any[];
  it('has the issue\'s rows: dense D = 128 and 64, every flex pattern, the relative-bias table with and without its gradient', () => {
    expect(full.map((c) => `${c.kind}:${c.pattern}:${c.D}`)).toEqual([
      'dense:causal:128', 'dense:causal:64', 'flex:causal:128', 'flex:swa:128', 'flex:doc:128', 'flex:prefix:128',
      'flex:softcap:128', 'flex:alibi:128', 'flex:alibi:128', 'flex:relbias:128', 'gradForBase:relbias:128']);
    for (const c of full) expect([c.B, c.Hq, c.Hkv, c.S]).toEqual([2, 16, 16, 8192]);
    const withGrad = full.filter((c) => c.gradFor === true);
    expect(withGrad.map((c) => c.pattern)).toEqual(['alibi', 'relbias']);
    for (const w of withGrad) expect(full.find((c) => c.id === w.baseId)?.gradFor, w.id).not.toBe(true);
    expect(new Set(full.map((c) => c.id)).size).toBe(full.length);
  });
  it('counts pairs exactly (against a brute-force count of each mask) and FLOPs as 4·D·H·pairs, backward 2.5x', () => {
    for (const c of tiny) {
      expect(c.pairs, c.id).toBe(brutePairs(c));
      expect(c.fwdFlops).toBe(4 * c.D * c.Hq * c.pairs);
      expect(c.bwdFlops).toBe(2.5 * c.fwdFlops);
      expect(c.fwdBwdFlops).toBe(3.5 * c.fwdFlops);
    }
    // the full-size causal count in closed form
    const causal = full[0];
    expect(causal.pairs).toBe(2 * (8192 * 8193) / 2);
  });
});

describe('backward rows (CPU backend, stub timer)', () => {
  const small = (pattern: string, extra: Record<string, unknown> = {}) =>
    cases.withCounts({ id: `t ${pattern}`, group: 'backward', kind: 'flex', op: 'flex', B: 1, Hq: 2, S: 48, D: 64, pattern, ...extra });
  it('measures bwd and fwd+bwd and checks that two runs give the same bits (dq and the table gradient)', async () => {
    const row = await bwd.runBackwardCase(L, small('relbias', { gradFor: true }), 'cpu', {}, stubTime);
    expect(row.error).toBeUndefined();
    expect(row.bwd.ms).toBe(2);
    expect(row.bwd.tflops).toBeCloseTo(row.bwdFlops / 2e-3 / 1e12, 12);
    expect(row.fwdBwd.tflops).toBeCloseTo(row.fwdBwdFlops / 2e-3 / 1e12, 12);
    expect(row.deterministic).toEqual({ dq: true, dk: true, dv: true, dCaptured: [true] });
    const dense = await bwd.runBackwardCase(L, cases.withCounts({ id: 't dense', group: 'backward', kind: 'dense', op: 'sdpa', B: 1, Hq: 2,
      S: 40, D: 64, pattern: 'causal', causal: true, attentionImpl: 'sdpa' }), 'cpu', {}, stubTime);
    expect(dense.error).toBeUndefined();
    expect(dense.attentionFwdBwd.ms).toBe(2);
    expect(dense.deterministic.dCaptured).toEqual([]);
  });
  it('a backward that throws becomes a per-row error naming it, and the call does not throw', async () => {
    const failing = new Proxy(L, {
      get: (t, p) => (p === 'flexAttentionBackward'
        ? () => Promise.reject(new NotImplementedError('flexAttentionBackward: there is no CUDA backward yet'))
        : (t as any)[p]),
    });
    const row = await bwd.runBackwardCase(failing, small('softcap', { softcap: 30 }), 'cpu', {}, stubTime);
    expect(row.bwd.error).toMatch(/^NotImplementedError.*no CUDA backward yet/);
    expect(row.fwdBwd.error).toMatch(/NotImplementedError/);
    expect(row.error).toBe(row.bwd.error);
    expect(row.deterministic).toBeUndefined();
    expect(bwd.formatBackwardRow(row)).toContain('ERROR');
  });
});

describe('backward report (synthetic results)', () => {
  const t = (ms: number) => ({ ms, minMs: ms, maxMs: ms, n: 20, reps: 20 });
  const base = { B: 2, Hq: 16, Hkv: 16, S: 8192, pairs: 1000, bwdFlops: 2.5e12, fwdBwdFlops: 3.5e12 };
  const det = { dq: true, dk: true, dv: true, dCaptured: [] };
  const ours = {
    gpu: 'NVIDIA Test Card', date: '2026-01-01T00:00:00Z',
    backward: [
      { id: 'dense a', kind: 'dense', pattern: 'causal', D: 128, ...base, bwd: t(4), fwdBwd: t(5), deterministic: det },
      { id: 'dense b', kind: 'dense', pattern: 'causal', D: 64, ...base, bwd: t(2), fwdBwd: t(3), deterministic: det },
      { id: 'flex swa', kind: 'flex', pattern: 'swa', D: 128, ...base, bwd: t(1), fwdBwd: t(1.5), deterministic: det },
      { id: 'flex doc', kind: 'flex', pattern: 'doc', D: 128, ...base, bwd: { error: 'NotImplementedError: no CUDA backward yet' },
        fwdBwd: { error: 'NotImplementedError: no CUDA backward yet' }, error: 'NotImplementedError: no CUDA backward yet' },
      { id: 'rb grad', kind: 'flex', pattern: 'relbias', D: 128, ...base, gradFor: true, baseId: 'rb base', bwd: t(2.2), fwdBwd: t(3),
        deterministic: { ...det, dCaptured: [true] } },
      { id: 'rb base', kind: 'gradForBase', pattern: 'relbias', D: 128, ...base, gradFor: false, bwd: t(2), fwdBwd: t(2.8),
        deterministic: { ...det, dq: false } },
    ],
  };
  const torch = {
    gpu: 'NVIDIA Test Card', torch: '2.11.0',
    cases: [
      { id: 'dense a', fa2: { bwd: t(4.4), fwdBwd: t(5.5) }, cudnn: { bwd: t(4.8), fwdBwd: t(6) }, flex: { bwd: t(6), fwdBwd: t(7) } },
      // cuDNN slower than ours but compiled flex only 1.2x slower: one bar passes, one fails
      { id: 'dense b', cudnn: { bwd: t(1.5), fwdBwd: t(2.7) }, flex: { bwd: t(3), fwdBwd: t(3.6) } },
      { id: 'flex swa', flex: { bwd: t(1.25), fwdBwd: t(2) } },
      { id: 'flex doc', flex: { bwd: t(2), fwdBwd: t(3) } },
      { id: 'rb grad', flex: { bwd: t(3), fwdBwd: t(4) }, flex_deterministic: { dq: true, dCaptured: [false] } },
      { id: 'rb base', flex: { error: 'RuntimeError: compile failed' } },
    ],
  };

  it('computes speed ratios (PyTorch time / ours), TFLOP/s, the gradFor overhead and the bars', () => {
    const dir = mkdtempSync(join(tmpdir(), 'bench-backward-'));
    try {
      writeFileSync(join(dir, 'ours.json'), JSON.stringify(ours));
      writeFileSync(join(dir, 'torch.json'), JSON.stringify(torch));
      const r = spawnSync(process.execPath, [join(packageRoot, 'bench', 'backward-report.mjs'), '--ours', join(dir, 'ours.json'),
        '--torch', join(dir, 'torch.json'), '--outdir', dir], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(readdirSync(dir).sort()).toEqual(['backward.test-card.json', 'backward.test-card.md', 'ours.json', 'torch.json']);
      const m = JSON.parse(readFileSync(join(dir, 'backward.test-card.json'), 'utf8'));
      const row = (id: string) => m.rows.find((x: any) => x.id === id);
      const a = row('dense a');
      expect(a.ratios.fwdBwdVsCudnn).toBeCloseTo(6 / 5, 12);
      expect(a.ratios.fwdBwdVsFlex).toBeCloseTo(7 / 5, 12);
      expect(a.ratios.bwdVsCudnn).toBeCloseTo(4.8 / 4, 12);
      expect(a.ratios.fwdBwdVsFa2).toBeCloseTo(5.5 / 5, 12);
      expect(a.ours.bwd.tflops).toBeCloseTo(2.5e12 / 4e-3 / 1e12, 9);
      expect(a.torch.cudnn.fwdBwd.tflops).toBeCloseTo(3.5e12 / 6e-3 / 1e12, 9);
      expect(a.bars).toEqual({ denseVsCudnn: true, denseVsFlex: true, deterministic: true });
      const b = row('dense b');
      expect(b.ratios.fwdBwdVsCudnn).toBeCloseTo(0.9, 12);
      expect(b.ratios.fwdBwdVsFlex).toBeCloseTo(1.2, 12);
      expect(b.bars).toEqual({ denseVsCudnn: false, denseVsFlex: false, deterministic: true });
      expect(row('flex swa').ratios.bwdVsFlex).toBeCloseTo(1.25, 12);
      expect(row('flex swa').bars.flexBwdVsFlex).toBe(false); // 1.25 < 1.3
      expect(row('rb grad').ratios.bwdVsFlex).toBeCloseTo(3 / 2.2, 12);
      expect(row('rb grad').bars.flexBwdVsFlex).toBe(true);
      expect(row('rb grad').ratios.gradForOverhead).toBeCloseTo(0.1, 12);
      expect(row('rb grad').bars.gradForOverhead).toBe(true);
      expect(row('rb base').bars.deterministic).toBe(false);
      const doc = row('flex doc');
      expect(doc.ratios.bwdVsFlex).toBeUndefined();
      expect(doc.bars.flexBwdVsFlex).toBeUndefined();
      expect(doc.notes.join(' ')).toContain('NotImplementedError');
      expect(row('rb base').notes.join(' ')).toContain('compile failed');
      expect(m.totals).toEqual({ pass: 8, fail: 4, missing: 1 });
      const md = readFileSync(join(dir, 'backward.test-card.md'), 'utf8');
      expect(md).toContain('8 pass, 4 fail, 1 not measured');
      expect(md).toMatch(/\| dense b \| fwd\+bwd ≥ 1× cuDNN \| 0\.90 \| FAIL \|/);
      expect(md).toMatch(/\| rb grad \| gradFor overhead ≤ 15% \| 10\.0% \| PASS \|/);
      expect(md).toContain('captured gradient differs');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a gradFor backward 20% slower than without fails the 15% bar', () => {
    const slower = { ...ours, backward: ours.backward.map((r) => (r.id === 'rb grad' ? { ...r, bwd: t(2.4) } : r)) };
    const m = report.mergeBackward(slower, torch);
    const r = m.rows.find((x: any) => x.id === 'rb grad');
    expect(r.ratios.gradForOverhead).toBeCloseTo(0.2, 12);
    expect(r.bars.gradForOverhead).toBe(false);
  });
});

function pythonWithNumpy(): string | null {
  for (const p of ['python3', 'python']) {
    const r = spawnSync(p, ['-c', 'import numpy'], { encoding: 'utf8' });
    if (r.status === 0) return p;
  }
  return null;
}

describe('comparison files (compare-backward.mjs on the CPU backend)', () => {
  const py = pythonWithNumpy();
  it('writes every case with inputs, our gradients and bit-identical reruns; the checker passes them and fails a corrupted one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'compare-backward-'));
    try {
      const cmp = await mod('compare-backward.mjs');
      const log = console.log;
      console.log = () => {};
      let code: number;
      try { code = await cmp.main(['--device', 'cpu', '--out', dir, '--lengths', '37']); } finally { console.log = log; }
      expect(code).toBe(0);
      const man = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
      expect(man.cases.length).toBe(9);
      for (const c of man.cases) {
        expect(c.error, c.id).toBeUndefined();
        expect(c.deterministic.dq && c.deterministic.dk && c.deterministic.dv && c.deterministic.dCaptured.every(Boolean)).toBe(true);
        const q = readFileSync(join(dir, c.files.q.file));
        expect(q.length).toBe(2 * c.B * c.Hq * c.Sq * c.D);
      }
      expect(man.cases.filter((c: any) => c.ours.dCaptured.length === 1).map((c: any) => c.pattern)).toEqual(['alibi', 'relbias']);
      if (!py) { console.log('skipped the Python half: no python3 with numpy'); return; }
      const run = () => spawnSync(py, [join(packageRoot, 'bench', 'compare-backward-torch.py'), '--dir', dir, '--no-torch'], { encoding: 'utf8' });
      const ok = run();
      expect(ok.status, ok.stdout + ok.stderr).toBe(0);
      expect(ok.stdout).toContain('9 of 9 cases pass');
      // one bf16 element of one dk off by a large step: that case fails, the exit status says so
      const c = man.cases.find((x: any) => x.pattern === 'swa');
      const f = join(dir, c.ours.dk.file);
      const bits = new Uint16Array(readFileSync(f).buffer.slice(0));
      bits[3] = bits[3]! ^ 0x4000;
      writeFileSync(f, Buffer.from(bits.buffer));
      const bad = run();
      expect(bad.status).toBe(1);
      expect(bad.stdout).toContain('8 of 9 cases pass');
      expect(bad.stdout).toMatch(/sliding window \d+\s+dk .*FAIL/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
