// The reliability suite's host-side logic (scripts/reliability/): the
// compute-sanitizer log parser, the report's verdicts on partial results, and
// the workload and report scripts end to end on the CPU. The GPU phases
// themselves run on the GPU machine (scripts/gpu-reliability.sh).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { nativeAvailable } from '../lib/native.js';

const script = (name: string) => join(process.cwd(), 'scripts/reliability', name);
// Plain .mjs modules without typings: imported by URL, so they are typed `any` here.
const load = (name: string) => import(pathToFileURL(script(name)).href);

const MEMCHECK_CLEAN = `========= COMPUTE-SANITIZER
workload native: 40 passed, 0 failed
========= ERROR SUMMARY: 0 errors
`;
const MEMCHECK_ERRORS = `========= COMPUTE-SANITIZER
========= Invalid __global__ read of size 16 bytes
=========     at flexattn_flex_sm90_abc_d128_bf16_blocksparse+0x1a30
=========     by thread (12,0,0) in block (3,1,0)
=========     Address 0x7f00001000 is out of bounds
=========     Saved host backtrace up to driver entry point at kernel launch time
=========         Host Frame: [0x2c4ea5] in libcuda.so.1
=========
========= Invalid __global__ read of size 16 bytes
=========     at 0x1a40 in flash_fwd.cuh:210:flexattn_fwd_d64_bf16
=========     by thread (13,0,0) in block (3,1,0)
=========
========= Program hit CUDA_ERROR_ILLEGAL_ADDRESS (error 700) due to "an illegal memory access was encountered" on CUDA API call to cuStreamSynchronize.
=========     Saved host backtrace up to driver entry point at error
=========
========= Warning: Device-side backtrace is not available
========= ERROR SUMMARY: 3 errors
`;
const RACECHECK = `========= COMPUTE-SANITIZER
========= Error: Race reported between Write access at flexattn_fwd_sm90_d128_bf16+0x900 in flash_fwd_sm90.cuh:120 and Read access at flexattn_fwd_sm90_d128_bf16+0x980 in flash_fwd_sm90.cuh:130 [64 hazards]
=========
========= Warning: Race reported between Read access at 0x10 in f.cuh:9:flexattn_fwd_d64_f16 and Write access at 0x20 in f.cuh:9:flexattn_fwd_d64_f16 [2 hazards]
=========
========= RACECHECK SUMMARY: 2 hazards displayed (1 error, 1 warning)
`;

describe('compute-sanitizer log parser', () => {
  it('reads the error summary, the kinds of finding and the kernels they name', async () => {
    const { parseSanitizerLog } = await load('sanitizer.mjs');
    expect(parseSanitizerLog(MEMCHECK_CLEAN)).toMatchObject({ complete: true, errors: 0, kinds: {}, kernels: {} });
    const e = parseSanitizerLog(MEMCHECK_ERRORS);
    expect(e.complete).toBe(true);
    expect(e.errors).toBe(3);
    expect(e.kinds).toEqual({
      'Invalid __global__ read of size N bytes': 2,
      'API CUDA_ERROR_ILLEGAL_ADDRESS in cuStreamSynchronize': 1,
    });
    expect(e.kernels).toEqual({ flexattn_flex_sm90_abc_d128_bf16_blocksparse: 1, flexattn_fwd_d64_bf16: 1 });
    expect(e.notes).toEqual(['Warning: Device-side backtrace is not available']);
  });
  it('reads racecheck hazards (errors and warnings) and names both formats of kernel location', async () => {
    const { parseSanitizerLog } = await load('sanitizer.mjs');
    const r = parseSanitizerLog(RACECHECK);
    expect(r.racecheck).toEqual({ hazards: 2, errors: 1, warnings: 1 });
    expect(r.errors).toBe(1);
    expect(r.kinds).toEqual({ 'race error: Write / Read': 1, 'race warning: Read / Write': 1 });
    expect(r.kernels).toEqual({ flexattn_fwd_sm90_d128_bf16: 1, flexattn_fwd_d64_f16: 1 });
  });
  it('a log cut off before its summary (timeout, crash) is incomplete, not clean', async () => {
    const { parseSanitizerLog } = await load('sanitizer.mjs');
    const cut = MEMCHECK_ERRORS.split('\n').slice(0, 5).join('\n');
    expect(parseSanitizerLog(cut)).toMatchObject({ complete: false, errors: null });
    expect(parseSanitizerLog('')).toMatchObject({ complete: false, errors: null });
  });
});

const env = (device = 'cuda:0') => ({
  date: '2026-12-01T10:00:00.000Z', device, card: device === 'cpu' ? 'cpu' : 'NVIDIA H100 80GB HBM3', cardSlug: device === 'cpu' ? 'cpu' : 'h100-80gb-hbm3',
  computeCapability: '9.0', totalMemoryBytes: 85e9, driverVersion: '13.0', nvrtcVersion: '13.0', fatbinArchs: ['sm_90a'], node: 'v20.20.2',
});
const tool = (name: string, over: object = {}) => ({
  tool: name, pass: true, complete: true, errors: 0, seconds: 42, exitCode: 0, kinds: {}, kernels: {}, notes: [],
  workload: { passed: 40, failed: 0 }, command: `compute-sanitizer --tool ${name} node workload.mjs`, ...over,
});
const stats = (allocatedBytes: number) => ({ allocatedBytes, reservedBytes: 0, peakAllocatedBytes: 5e9, numAllocs: 1, numFrees: 1, numCudaMallocs: 1, numCacheHits: 0, numOomRetries: 0 });

function passingParts() {
  return {
    sanitizer: {
      env: env(), sanitizerVersion: 'Version 2025.3.1', native: { seconds: 30, workload: { passed: 40, failed: 0, kernels: 50, sm90Seen: true, segmentedGridSeen: true, failures: [] } },
      tools: { memcheck: tool('memcheck'), racecheck: tool('racecheck', { racecheck: { hazards: 0, errors: 0, warnings: 0 } }), synccheck: tool('synccheck'), initcheck: tool('initcheck') },
    },
    oom: {
      env: env(), pass: true, statsStart: stats(0), statsEnd: stats(0), oomRetries: 5,
      fill: { bytesFilled: 80e9, fractionOfCard: 0.94, ms: 900, rows: [{ chunkBytes: 1 << 30, count: 74, stoppedBy: { name: 'OutOfMemoryError', code: 'ERR_FLEXATTN_OUT_OF_MEMORY' } }] },
      warm: { outcome: 'completed', correct: true, relErr: 2e-3 },
      whileFull: [{ label: 'flexAttention, kernel already loaded', outcome: 'OutOfMemoryError', error: { name: 'OutOfMemoryError', code: 'ERR_FLEXATTN_OUT_OF_MEMORY', message: 'flexattn: CUDA out of memory' } }],
      recovery: [{ label: 'after free', outcome: 'completed', correct: true, relErr: 2e-3 }],
    },
    dispose: {
      env: env(), pass: true, calls: 192, rounds: 24, concurrency: 8, churnTensors: 1000, seconds: 20, wrong: [],
      byVariant: { control: { correct: 40, typed: {}, wrong: 0, untyped: 0 }, inputs: { correct: 0, typed: { ERR_FLEXATTN_DISPOSED: 152 }, wrong: 0, untyped: 0 } },
      statsStart: stats(0), statsEnd: stats(0),
    },
    index: {
      env: env(), pass: true, exceeds2pow31: true, elementsPerTensor: 2684354560, rowsChecked: 60, largestElementIndexChecked: 2684354559, boundaryElement: 2 ** 31,
      dims: { B: 5, H: 32, S: 131072, D: 128, window: 256, dtype: 'bf16' }, blockMask: { ms: 15, method: 'analytic' },
      families: [{ family: 'sm90', pass: true, rows: 60, maxRelErr: 3e-3, maxLseErr: 1e-4, callSeconds: 0.5, failures: [] }],
    },
    soak: {
      env: env(), status: 'done', durationMinutes: 10.5, completed: 50000, checked: 16000, finiteChecked: 30000, failures: 0, errors: 0, checksPass: true,
      concurrency: 8, checkEvery: 3, maxSeq: 2048, statsStart: stats(0), statsEnd: stats(0), eventLoopDelay: { meanMs: 1.1, p50Ms: 1.05, p99Ms: 3.2, maxMs: 12 },
      byOp: {}, byMask: {}, byScore: {}, byDtype: {}, byFamily: {}, errorCodes: {}, failureSamples: [],
    },
  };
}

describe('reliability report', () => {
  it('passes only when every phase passed, and names the card and every figure', async () => {
    const { renderReport } = await load('report.mjs');
    const r = renderReport(passingParts(), { date: '2026-12-02' });
    expect(r.overall).toBe('PASS');
    expect(r.env.cardSlug).toBe('h100-80gb-hbm3');
    for (const s of ['# Reliability suite: NVIDIA H100 80GB HBM3', 'Summary: PASS', 'memcheck 0, racecheck 0 (0 hazards), synccheck 0, initcheck 0 errors',
      '2,684,354,559', '10.5 min, 50,000 calls', '152 ERR_FLEXATTN_DISPOSED', 'call with the card full: OutOfMemoryError', 'Version 2025.3.1']) {
      expect(r.markdown).toContain(s);
    }
  });
  it('fails or marks incomplete what did not meet its bar', async () => {
    const { verdicts } = await load('report.mjs');
    const p = passingParts();
    p.soak.durationMinutes = 9.9;
    p.index.exceeds2pow31 = false;
    p.sanitizer.tools.racecheck = tool('racecheck', { pass: false, errors: 0, racecheck: { hazards: 1, errors: 0, warnings: 1 } });
    (p.dispose.byVariant.inputs as { wrong: number }).wrong = 1;
    p.dispose.pass = false;
    p.oom.whileFull[0]!.outcome = 'completed';
    p.oom.pass = false;
    const v = verdicts(p);
    expect(v.soak.status).toBe('FAIL');
    expect(v.soak.figures).toContain('shorter than 10 min');
    expect(v.index.status).toBe('FAIL');
    expect(v.sanitizer.status).toBe('FAIL');
    expect(v.dispose.status).toBe('FAIL');
    expect(v.oom.status).toBe('FAIL');
    const q = passingParts();
    delete (q.sanitizer.tools as Record<string, unknown>).initcheck;
    Object.assign(q.soak, { status: 'running', durationMinutes: undefined, elapsedMinutes: 4 });
    const w = verdicts(q);
    expect(w.sanitizer).toMatchObject({ status: 'INCOMPLETE' });
    expect(w.sanitizer.figures).toContain('not run: initcheck');
    expect(w.soak.status).toBe('INCOMPLETE');
    expect(verdicts({}).oom.status).toBe('NOT RUN');
  });
  it('card slugs match the bench/results file names', async () => {
    const { cardSlug } = await load('common.mjs');
    expect(cardSlug('NVIDIA H100 80GB HBM3')).toBe('h100-80gb-hbm3');
    expect(cardSlug('NVIDIA H200')).toBe('h200');
    expect(cardSlug('')).toBe('cpu');
  });
  it('the report script merges the newest partial files of several dirs into Markdown and JSON', () => {
    const a = mkdtempSync(join(tmpdir(), 'rel-a-')), b = mkdtempSync(join(tmpdir(), 'rel-b-'));
    const parts = passingParts();
    for (const [name, part] of Object.entries(parts)) writeFileSync(join(a, `${name}.json`), JSON.stringify(part));
    // an older soak in b is ignored; a newer failing dispose in b wins
    writeFileSync(join(b, 'soak.json'), JSON.stringify({ ...parts.soak, env: { ...env(), date: '2020-01-01T00:00:00.000Z' }, failures: 3, checksPass: false }));
    writeFileSync(join(b, 'dispose.json'), JSON.stringify({ ...parts.dispose, env: { ...env(), date: '2027-01-01T00:00:00.000Z' }, pass: false }));
    const out = join(a, 'reliability.test.md');
    execFileSync(process.execPath, [script('report.mjs'), '--results', a, '--from', b, '--out', out], { stdio: 'pipe', env: { ...process.env, OUT: '' } });
    const md = readFileSync(out, 'utf8');
    expect(md).toContain('| Soak | **PASS** |');
    expect(md).toContain('| Dispose while in flight | **FAIL** |');
    expect(JSON.parse(readFileSync(join(a, 'reliability.test.json'), 'utf8')).overall).toBe('FAIL');
  });
});

describe.skipIf(!nativeAvailable())('reliability workload on the CPU backend', () => {
  it('the sanitizer phase runs each tool on the workload, parses its log, and fails a tool that reports errors or runs out of time', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rel-s-'));
    // A stand-in for compute-sanitizer: runs the command, then writes the summary named by FAKE_ERRORS.
    const fake = join(dir, 'fake-sanitizer.sh');
    writeFileSync(fake, [
      '#!/bin/bash', '[ "$1" = --version ] && { echo "Version fake"; exit 0; }', 'log=""',
      'while [[ "$1" == --* ]]; do [ "$1" = --log-file ] && log=$2; shift 2; done',
      '"$@"; rc=$?', '[ -n "$FAKE_SLEEP" ] && sleep "$FAKE_SLEEP"',
      'printf "========= Invalid __global__ read of size 4 bytes\\n=========     at flexattn_x+0x10\\n=========\\n" | head -c $(( ${FAKE_ERRORS:-0} > 0 ? 999 : 0 )) > "$log"',
      'echo "========= ERROR SUMMARY: ${FAKE_ERRORS:-0} errors" >> "$log"', 'exit $rc', '',
    ].join('\n'), { mode: 0o755 });
    const run = (tools: string, extra: Record<string, string> = {}, args: string[] = []) => execFileSync(process.execPath,
      [script('sanitizer.mjs'), '--device', 'cpu', '--results', dir, '--sanitizer', fake, '--tools', tools, '--cases', 'sliding', ...args],
      { stdio: 'pipe', env: { ...process.env, ...extra } });
    run('memcheck');
    expect(() => run('initcheck', { FAKE_ERRORS: '1' })).toThrow(); // exit status 1: a tool failed
    expect(() => run('synccheck', { FAKE_SLEEP: '5' }, ['--tool-timeout', '2'])).toThrow();
    const res = JSON.parse(readFileSync(join(dir, 'sanitizer.json'), 'utf8'));
    expect(res.native.workload).toMatchObject({ passed: 2, failed: 0 });
    expect(res.tools.memcheck).toMatchObject({ pass: true, errors: 0, complete: true, workload: { passed: 2, failed: 0 } });
    expect(res.tools.initcheck).toMatchObject({ pass: false, errors: 1, kernels: { flexattn_x: 1 } });
    expect(res.tools.synccheck).toMatchObject({ pass: false, timedOut: true, complete: false });
  });

  it('document and sliding-window cases agree with the float64 reference', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rel-w-'));
    execFileSync(process.execPath, [script('workload.mjs'), '--device', 'cpu', '--cases', 'document|sliding', '--out', join(dir, 'w.json')], { stdio: 'pipe' });
    const w = JSON.parse(readFileSync(join(dir, 'w.json'), 'utf8'));
    expect(w.cases.length).toBeGreaterThanOrEqual(5);
    expect(w.failed).toBe(0);
    for (const c of w.cases) expect(c.relErr).toBeLessThan(1e-2);
  });
});
