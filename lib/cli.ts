#!/usr/bin/env node
/**
 * `flexattn` command line: `info`, `demo`, `bench`, `help`.
 *
 * Arguments are parsed with `node:util`'s `parseArgs` in strict mode: an
 * unknown command, an unknown option or a stray argument is a usage error
 * (exit code 2, a one-line message and the usage on stderr), so a typo never
 * runs something else. Every command answers `--help` without doing its work.
 * @module
 */
import { performance } from 'node:perf_hooks';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { deviceInfo, cudaAvailable, type DeviceInfo } from './device.js';
import { native, packageRoot } from './native.js';
import { ncclInfo } from './parallel/nccl.js';
import { Tensor, manualSeed } from './tensor.js';
import { scaledDotProductAttention } from './sdpa.js';

/** Exit code of a usage error (unknown command or option), as most Unix tools use. */
const EXIT_USAGE = 2;

const USAGE = `usage: flexattn <command> [options]
       flexattn --version | --help

commands:
  info    what this host offers: Node, addon, CUDA driver, GPUs, NVRTC, kernel cache
  demo    run causal attention on a built-in example (GPU if present, else CPU)
  bench   time the attention kernels on benchmark cases (source checkout only)
  help    show this text, or a command's (flexattn help <command>)

Run \`flexattn <command> --help\` for a command's options.`;

const INFO_USAGE = `usage: flexattn info [--json]

Reports the Node version, the native addon (and which kernels it carries
precompiled), the CUDA driver, every GPU with its compute capability and memory,
the NVRTC library in use, and the kernel cache directory. On a host without a
usable GPU it says what is missing and how to add it.

options:
  --json      print one JSON object instead (versions, deviceInfo(), cache directory)
  -h, --help  show this text

exit code: 0, or 1 when the native addon does not load.`;

const DEMO_USAGE = `usage: flexattn demo

Runs causal scaled dot-product attention on random bf16 inputs
(B=2, H=8, S=512, D=64), on cuda:0 when a GPU is usable and on the CPU
reference backend otherwise, and prints the backend, a checksum and the time.

options:
  -h, --help  show this text`;

/** Shown for `flexattn bench --help` when the suite itself (bench/, not in the npm package) is absent. */
const BENCH_MISSING = `usage: flexattn bench [options]

Times scaledDotProductAttention and flexAttention on the benchmark cases of
bench/cases.mjs. The suite ships with the source repository, not the npm
package: run it from a checkout (npm ci && npx flexattn bench --help).`;

interface CommandSpec {
  usage: string;
  options: NonNullable<Parameters<typeof parseArgs>[0]>['options'];
  run: (values: Record<string, unknown>) => number | Promise<number>;
}

const COMMANDS: Record<string, CommandSpec> = {
  info: { usage: INFO_USAGE, options: { json: { type: 'boolean' } }, run: (v) => (v.json ? infoJson() : info()) },
  demo: { usage: DEMO_USAGE, options: {}, run: () => demo() },
};

/** A usage error: reported as one line plus the relevant usage text, exit code 2. */
class UsageError extends Error {}

function version(): string {
  try {
    return (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/** parseArgs' messages are several sentences; a usage error wants one line naming the culprit. */
function usageMessage(e: unknown): string {
  const err = e as { code?: string; message?: string };
  const name = /'([^']*)'/.exec(err.message ?? '')?.[1];
  switch (err.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION': return `unknown option '${name}'`;
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL': return `unexpected argument '${name}'`;
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE': {
      const m = (err.message ?? '').split('. ')[0]!;
      return m.charAt(0).toLowerCase() + m.slice(1);
    }
    default: return err.message ?? String(e);
  }
}

function parse(args: string[], options: CommandSpec['options']): Record<string, unknown> {
  try {
    return parseArgs({ args, options: { ...options, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false }).values;
  } catch (e) {
    throw new UsageError(usageMessage(e));
  }
}

function cacheDir(): string {
  try { return native().jitCacheDir(); } catch (e) { return `unavailable (${(e as Error).message})`; }
}

function info(): number {
  const d = deviceInfo();
  const lines: string[] = [];
  lines.push(`flexattn    ${version()}`);
  lines.push(`node        ${process.version} (${process.platform}-${process.arch})`);
  if (!d.addonLoaded) {
    lines.push(`addon       NOT LOADED: ${d.addonError}`);
    console.log(lines.join('\n'));
    return 1;
  }
  const kernels = d.fatbinBytes > 0
    ? `precompiled kernels for ${d.fatbinArchs.join(', ') || 'unknown archs'} (${(d.fatbinBytes / 1024).toFixed(0)} KiB)`
    : 'no precompiled kernels (built without nvcc): all kernels JIT-compiled with NVRTC';
  lines.push(`addon       loaded from ${packageRoot}; ${kernels}`);
  if (d.driverLoaded) {
    lines.push(`driver      ${d.driverPath} (CUDA ${driverCudaVersion(d)})`);
  } else {
    lines.push(`driver      MISSING: ${d.driverError}`);
  }
  if (d.gpus.length) {
    for (const g of d.gpus) {
      lines.push(`gpu ${g.index}       ${g.name}, compute capability ${g.computeCapability}, ` +
        `${(g.totalMemoryBytes / 2 ** 30).toFixed(1)} GiB, ${g.multiprocessors} SMs`);
    }
  } else {
    lines.push(`gpu         none${d.driverLoaded ? ' (driver loaded but no device visible; check CUDA_VISIBLE_DEVICES)' : ''}`);
  }
  lines.push(d.nvrtcLoaded ? `nvrtc       ${d.nvrtcPath} (version ${d.nvrtcVersion})` : `nvrtc       MISSING: ${d.nvrtcError}`);
  const n = ncclInfo();
  lines.push(n.loaded ? `nccl        ${n.path} (version ${n.version})`
    : `nccl        not loaded (needed only for several GPUs): ${n.error.split('\n')[0]!.replace(/^flexattn: /, '')}` +
      (/could not be loaded/.test(n.error) ? ' (`pip install nvidia-nccl-cu13` or set FLEXATTN_NCCL)' : ''));
  lines.push(`cache       ${cacheDir()}`);
  if (!cudaAvailable()) {
    lines.push('');
    lines.push('GPU backend unavailable on this host; the CPU reference backend is used instead.');
    lines.push('To use a GPU: install the NVIDIA driver (libcuda.so.1, check `nvidia-smi`) and NVRTC');
    lines.push('(CUDA toolkit, or `pip install nvidia-cuda-nvrtc`, or set FLEXATTN_NVRTC=/path/to/libnvrtc.so).');
  } else if (!d.nvrtcLoaded) {
    lines.push('');
    lines.push('NVRTC is missing: precompiled dense kernels run, but flex kernels cannot be generated.');
  }
  console.log(lines.join('\n'));
  return 0;
}

/** "13.0" from the driver API's 13000; '' when unknown. */
function driverCudaVersion(d: DeviceInfo): string {
  const v = d.driverVersion;
  return v > 0 ? `${Math.floor(v / 1000)}.${(v % 1000) / 10}` : '';
}

/** `info --json`: the versions and the unchanged {@link deviceInfo} object, for scripts and bug reports. */
function infoJson(): number {
  const d = deviceInfo();
  const out = {
    flexattn: version(),
    node: process.version,
    napi: process.versions.napi ?? null,
    platform: process.platform,
    arch: process.arch,
    packageRoot,
    cudaAvailable: cudaAvailable(),
    driverCudaVersion: driverCudaVersion(d) || null,
    cacheDir: d.addonLoaded ? cacheDir() : null,
    deviceInfo: d,
    nccl: ncclInfo(),
  };
  console.log(JSON.stringify(out, null, 2));
  return d.addonLoaded ? 0 : 1;
}

async function demo(): Promise<number> {
  const [B, H, S, D] = [2, 8, 512, 64];
  manualSeed(42);
  const device = cudaAvailable() ? 'cuda:0' : 'cpu';
  const note = device === 'cpu' ? ' (no GPU found: CPU reference backend; `flexattn info` says why)' : '';
  const [q, k, v] = ['q', 'k', 'v'].map(() => Tensor.randn([B, H, S, D], 'bf16', { device })) as [Tensor, Tensor, Tensor];
  const t0 = performance.now();
  const out = await scaledDotProductAttention(q, k, v, { isCausal: true });
  const values = await out.toFloat32();
  const ms = performance.now() - t0;
  let sum = 0, sumAbs = 0;
  for (const x of values) { sum += x; sumAbs += Math.abs(x); }
  console.log('flexattn demo: causal scaled dot-product attention');
  console.log(`  q, k, v   [${q.shape.join(', ')}] ${q.dtype}`);
  console.log(`  out       [${out.shape.join(', ')}] ${out.dtype}`);
  console.log(`  backend   ${device === 'cpu' ? 'cpu' : 'cuda'} on ${device}${note}`);
  console.log(`  checksum  sum=${sum.toFixed(4)} sum|x|=${sumAbs.toFixed(4)}`);
  console.log(`  time      ${ms.toFixed(1)} ms (first call, includes setup)`);
  for (const t of [q, k, v, out]) t.dispose();
  return 0;
}

/**
 * `bench` hands its arguments to the suite's own strict parser (bench/run.mjs),
 * which owns the case list and so its help text.
 */
async function bench(args: string[]): Promise<number> {
  const suite = join(packageRoot, 'bench', 'run.mjs');
  if (!existsSync(suite)) {
    if (args.includes('--help') || args.includes('-h')) { console.log(BENCH_MISSING); return 0; }
    console.error('flexattn bench: the benchmark suite (bench/) ships with the source repository, not the npm package.\n' +
      'Run it from a checkout: npm ci && npx flexattn bench  (or node bench/run.mjs --help)');
    return EXIT_USAGE;
  }
  const { main } = (await import(suite)) as { main: (argv: string[]) => Promise<number> };
  return main(args);
}

function usageOf(cmd: string): string {
  return COMMANDS[cmd]?.usage ?? (cmd === 'bench' ? 'run `flexattn bench --help`' : USAGE);
}

async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  let cmd: string | undefined;
  try {
    if (first === undefined || first.startsWith('-')) {
      const v = parse(argv, { version: { type: 'boolean', short: 'v' } });
      if (v.version) { console.log(version()); return 0; }
      if (v.help) { console.log(USAGE); return 0; }
      throw new UsageError('missing command');
    }
    cmd = first;
    if (cmd === 'bench') return await bench(rest);
    if (cmd === 'help') {
      if (rest.length > 1) throw new UsageError(`unexpected argument '${rest[1]}'`);
      const topic = rest[0];
      if (topic === '--help' || topic === '-h') { console.log(USAGE); return 0; }
      if (topic?.startsWith('-')) throw new UsageError(`unknown option '${topic}'`);
      if (topic === 'bench') return await bench(['--help']);
      if (topic !== undefined && !COMMANDS[topic]) throw new UsageError(`unknown command '${topic}'`);
      console.log(topic ? COMMANDS[topic]!.usage : USAGE);
      return 0;
    }
    const spec = COMMANDS[cmd];
    if (!spec) { const bad = cmd; cmd = undefined; throw new UsageError(`unknown command '${bad}'`); }
    const values = parse(rest, spec.options);
    if (values.help) { console.log(spec.usage); return 0; }
    return await spec.run(values);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`flexattn${cmd ? ` ${cmd}` : ''}: ${e.message}\n\n${cmd ? usageOf(cmd) : USAGE}`);
    return EXIT_USAGE;
  }
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (e: unknown) => {
  console.error(`flexattn: ${(e as Error).stack ?? String(e)}`);
  process.exitCode = 1;
});
