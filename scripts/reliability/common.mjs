// Shared pieces of the reliability phases (scripts/gpu-reliability.sh): argument
// parsing, the results directory, atomic JSON writes, the environment record that
// goes with every figure, and result comparison. Each phase is its own process so
// one that crashes (or is killed by a device-call time limit) leaves the others'
// results intact.
import { mkdirSync, readFileSync, renameSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** Options every phase accepts. */
const COMMON = {
  results: { type: 'string' },
  device: { type: 'string' },
  'dry-run': { type: 'boolean', default: false },
  seed: { type: 'string' },
  help: { type: 'boolean', short: 'h', default: false },
};

/**
 * Parses argv for a phase: `spec` adds its own options (node:util parseArgs
 * format). Unknown flags are an error, so a typo cannot silently run defaults.
 */
export function phaseArgs(phase, spec, help, argv = process.argv.slice(2)) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: { ...COMMON, ...spec }, allowPositionals: false, strict: true });
  } catch (e) {
    process.stderr.write(`${phase}: ${e.message}\n${usage(phase, spec, help)}`);
    process.exit(2);
  }
  const v = parsed.values;
  if (v.help) {
    process.stdout.write(usage(phase, spec, help));
    process.exit(0);
  }
  const device = v.device ?? 'auto';
  if (!['auto', 'cuda', 'cpu'].includes(device)) {
    process.stderr.write(`${phase}: --device must be auto, cuda or cpu, got ${device}\n`);
    process.exit(2);
  }
  return { ...v, device, results: resultsDir(v.results), seed: v.seed === undefined ? 1 : Number(v.seed) };
}

function usage(phase, spec, help) {
  const opts = Object.entries({ ...COMMON, ...spec })
    .map(([k, o]) => `  --${k}${o.type === 'string' ? ' VALUE' : ''}${o.default !== undefined && o.type === 'string' ? ` (default ${o.default})` : ''}`);
  return `usage: node scripts/reliability/${phase}.mjs [options]\n${help}\n${opts.join('\n')}\n` +
    '  --results: where partial results go (default $FLEXATTN_RELIABILITY_DIR or /tmp/flexattn-reliability)\n' +
    '  --device: cuda (fail without a GPU), cpu (degraded local run), auto (default: cuda when usable)\n';
}

/**
 * The persistent results directory. Not $OUT: a device call's $OUT starts empty
 * and the soak runs across two calls, so phases write here and the shell script
 * mirrors this directory into $OUT after every phase.
 */
export function resultsDir(arg) {
  const dir = arg ?? process.env.FLEXATTN_RELIABILITY_DIR ?? '/tmp/flexattn-reliability';
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Writes JSON atomically (temp file + rename): a reader never sees half a file. */
export function writeJson(path, obj) {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, `${JSON.stringify(obj, null, 1)}\n`);
  renameSync(tmp, path);
}

export function readJson(path) {
  return existsSync(path) ? JSON.parse(readFileSync(path, 'utf8')) : undefined;
}

/** Loads the package (built dist/) and resolves the device the phase runs on. */
export async function load(deviceArg) {
  const fa = await import(join(ROOT, 'dist/lib/index.js'));
  const gpuOk = fa.cudaAvailable();
  if (deviceArg === 'cuda' && !gpuOk) {
    const info = fa.deviceInfo();
    throw new Error(`--device cuda but no GPU is usable: ${info.addonError || info.driverError || 'no device'}`);
  }
  const device = deviceArg === 'cpu' || !gpuOk ? 'cpu' : 'cuda:0';
  return { fa, device, gpu: device !== 'cpu' };
}

/** Internal modules the phases also use (the tests' random mod generator, built to dist/test/; the host mod evaluator). */
export async function loadInternals() {
  const random = await import(join(ROOT, 'dist/test/random-mods.js'));
  const mods = await import(join(ROOT, 'dist/lib/mods/index.js'));
  return { random, mods };
}

/** `NVIDIA H100 80GB HBM3` -> `h100-80gb-hbm3`, the card part of bench/results file names. */
export function cardSlug(name) {
  const s = String(name || 'cpu').toLowerCase().replace(/^nvidia\s+/, '').replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '');
  return s || 'unknown';
}

/** The environment every result file carries, so the report can be made anywhere. */
export function environment(fa, device) {
  const info = fa.deviceInfo();
  const gpu = info.gpus[0];
  const dv = info.driverVersion;
  return {
    date: new Date().toISOString(),
    device,
    card: device === 'cpu' ? 'cpu' : gpu?.name ?? 'unknown',
    cardSlug: device === 'cpu' ? 'cpu' : cardSlug(gpu?.name),
    computeCapability: gpu?.computeCapability ?? '',
    totalMemoryBytes: gpu?.totalMemoryBytes ?? 0,
    driverVersion: dv ? `${Math.floor(dv / 1000)}.${Math.floor((dv % 1000) / 10)}` : '',
    nvrtcVersion: info.nvrtcVersion,
    fatbinArchs: info.fatbinArchs,
    node: process.version,
    hostname: process.env.HOSTNAME ?? '',
  };
}

/**
 * Compares a result with its reference: NaN positions must agree, and the
 * relative L2 error of the finite entries must be below `tol`.
 */
export function compare(got, want, tol) {
  if (got.length !== want.length) return { ok: false, relErr: NaN, reason: `length ${got.length} vs ${want.length}` };
  let num = 0, den = 0, nanMismatch = -1, maxAbs = 0;
  for (let i = 0; i < want.length; i++) {
    const g = got[i], w = want[i];
    if (Number.isNaN(g) !== Number.isNaN(w)) { if (nanMismatch < 0) nanMismatch = i; continue; }
    if (Number.isNaN(w)) continue;
    if (!Number.isFinite(g) || !Number.isFinite(w)) {
      if (g !== w && nanMismatch < 0) nanMismatch = i;
      continue;
    }
    const d = g - w;
    num += d * d;
    den += w * w;
    maxAbs = Math.max(maxAbs, Math.abs(d));
  }
  const relErr = Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30);
  if (nanMismatch >= 0) return { ok: false, relErr, maxAbs, reason: `NaN/Inf mismatch at ${nanMismatch}: got ${got[nanMismatch]}, want ${want[nanMismatch]}` };
  return { ok: relErr < tol, relErr, maxAbs, ...(relErr < tol ? {} : { reason: `relative error ${relErr.toExponential(3)} >= ${tol}` }) };
}

/** LSE check as in the GPU tests: -inf where the reference is -inf, else within 2e-2 relative. */
export function compareLse(got, want) {
  for (let i = 0; i < want.length; i++) {
    const w = want[i], g = got[i];
    // A score mod that yields NaN makes the CPU row's LSE NaN; the kernel's max
    // ignores NaN scores and reports -inf (the output row is NaN on both sides).
    const ok = Number.isNaN(w) ? !Number.isFinite(g)
      : !Number.isFinite(w) ? g === w
        : Math.abs(g - w) < 2e-2 * Math.max(1, Math.abs(w));
    if (!ok) return { ok: false, reason: `LSE at ${i}: got ${g}, want ${w}` };
  }
  return { ok: true };
}

/** Event-loop delay histogram summary in milliseconds. */
export function delaySummary(h) {
  const ms = (ns) => Math.round(ns / 1e4) / 100;
  return { meanMs: ms(h.mean), p50Ms: ms(h.percentile(50)), p99Ms: ms(h.percentile(99)), maxMs: ms(h.max), samples: h.count };
}

/** Short description of an error for result files. */
export function describeError(e) {
  return {
    name: e?.name ?? typeof e, code: e?.code ?? null, typed: !!e && typeof e.code === 'string' && e.code.startsWith('ERR_FLEXATTN') || e?.code === 'ABORT_ERR',
    message: String(e?.message ?? e).slice(0, 400),
  };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
