/**
 * Every `FLEXATTN_*` environment switch the package, its build, tests and
 * benchmarks read, in one list (name, scope, reader, meaning, default).
 * TypeScript in lib/ and test/ reads a switch only through {@link envSwitch},
 * so an unlisted name throws; the native addon (`getenv`) and the .mjs/.sh
 * tooling (several run before dist/ exists) read the environment directly.
 * test/env-switches.test.ts scans the tree so that every read names a listed
 * switch and every listed switch is read somewhere, and checks that the
 * tables in README.md and CONTRIBUTING.md are the ones
 * scripts/gen-env-table.mjs renders from this list.
 *
 * Not environment switches, so not listed: compile-time macros of the kernels
 * and the build (`FLEXATTN_WAVE_CTAS_PER_SM`, `FLEXATTN_L2_BUDGET_MB`,
 * `FLEXATTN_PRECOMPILED`, `FLEXATTN_JIT`, ...), fixed when a kernel is
 * compiled and changed only by editing the source or the compile options;
 * CMake cache variables (`-DFLEXATTN_ARCHS=...`, set by scripts/build-native.mjs
 * from the switch of the same name); error codes (`ERR_FLEXATTN_*`, see
 * lib/errors.ts); and warning codes of `process.emitWarning`
 * (`FLEXATTN_CACHE`, `FLEXATTN_JIT_UPGRADE`).
 *
 * Empty means unset for every switch: an empty value gives the default.
 * Internal: not exported from the package.
 * @module
 */
import { InternalError } from './errors.js';

/**
 * Who a switch is for: the library at run time (JS or the addon), a source
 * build of the addon (`npm install` without a prebuild, `npm run build:native`),
 * or the project's own test, benchmark and packaging tooling.
 */
export type SwitchScope = 'runtime' | 'build' | 'tooling';

export interface EnvSwitch {
  readonly name: string;
  readonly scope: SwitchScope;
  /** Read by the TypeScript layer, by the native addon (C++ `getenv`), or by scripts/bench/test tooling. */
  readonly readBy: 'js' | 'native' | 'script';
  /** What it does, one sentence a user can act on (Markdown: it is rendered into the README). */
  readonly meaning: string;
  /** The value in effect when unset, as text (Markdown). */
  readonly default: string;
}

export const ENV_SWITCHES: readonly EnvSwitch[] = Object.freeze([
  { name: 'FLEXATTN_NVRTC', scope: 'runtime', readBy: 'native', default: 'the search in "Supported NVRTC versions"',
    meaning: 'Full path of the `libnvrtc.so*` to load; tried before the search.' },
  { name: 'FLEXATTN_LIBCUDA', scope: 'runtime', readBy: 'native', default: '`libcuda.so.1`, then `libcuda.so`',
    meaning: 'Path of the CUDA driver library; tried before the default names.' },
  { name: 'FLEXATTN_NCCL', scope: 'runtime', readBy: 'native',
    default: '`libnccl.so.2` on the loader path, then Python\'s `nvidia/nccl/lib` and `torch/lib`',
    meaning: 'Path of the `libnccl.so.2` to load for `createCommunicator`; when set, the only one tried.' },
  { name: 'FLEXATTN_CACHE_DIR', scope: 'runtime', readBy: 'native',
    default: '`~/.cache/flexattn` (`/tmp/flexattn-cache-<uid>` without `$HOME`)',
    meaning: 'Directory of the on-disk kernel cache.' },
  { name: 'FLEXATTN_CACHE_MAX_MB', scope: 'runtime', readBy: 'native', default: '`1024`',
    meaning: 'Size cap of the on-disk kernel cache in MiB (fractions allowed); least recently used entries are evicted ' +
      'first; `0` turns the disk cache off; a value that is not a non-negative number is an `InvalidArgumentError` at the first kernel load.' },
  { name: 'FLEXATTN_JIT_TIERED', scope: 'runtime', readBy: 'js', default: '`1` (tiered)',
    meaning: 'Any value but `1`/`true` (e.g. `0`): a new flex kernel is compiled once, optimized, and its first call waits ' +
      'for that build instead of running a quick build first.' },
  { name: 'FLEXATTN_JIT_PTX', scope: 'runtime', readBy: 'native', default: 'cubin (PTX only when NVRTC is older than the GPU)',
    meaning: 'Any value but `0`: NVRTC emits PTX that the driver compiles, instead of a cubin.' },
  { name: 'FLEXATTN_DISABLE_FATBIN', scope: 'runtime', readBy: 'native', default: 'precompiled kernels used',
    meaning: 'Any value but `0`: ignore the precompiled dense kernels and compile every kernel with NVRTC.' },
  { name: 'FLEXATTN_KERNEL_FAMILY', scope: 'runtime', readBy: 'js', default: 'Hopper kernels where they fit',
    meaning: '`sm80`: run the mma.sync kernels on every GPU, Hopper too (see "Kernels"); an explicit ' +
      '`kernelOptions.family` still wins; `auto` is the default. `sm90ws`: `scaledDotProductAttention` without `attnMask` ' +
      '(dense or causal, head dim 64/128, Sq and Skv ≥ 128) and `flexAttention` (mods, block masks with block sizes that ' +
      'are multiples of 128; no kernelOptions family or tile) on H100/H200 take the warp-specialised Hopper kernel, ' +
      'not yet verified on a GPU (it also needs `FLEXATTN_UNVERIFIED_GPU_PATHS=1`). Any other value is an `InvalidArgumentError` at the next GPU call.' },
  { name: 'FLEXATTN_FINE_SCHEDULE', scope: 'runtime', readBy: 'js', default: '`1`',
    meaning: "`0`: Hopper launches walk a block mask's own lists, not the 64×64 schedule derived from it (`0`/`1`; any other value is an `InvalidArgumentError`)." },
  { name: 'FLEXATTN_CTA_ORDER', scope: 'runtime', readBy: 'js', default: '`1` (longest first)',
    meaning: '`0`: block-sparse Hopper launches keep the kernel\'s built-in block order (`0`/`1`; any other value is an `InvalidArgumentError`).' },
  { name: 'FLEXATTN_SEGMENTS', scope: 'runtime', readBy: 'js', default: '`1`',
    meaning: '`0`: document masks keep the uniform query-tile grid, no segmented grid (`0`/`1`; any other value is an `InvalidArgumentError`).' },
  { name: 'FLEXATTN_DECODE', scope: 'runtime', readBy: 'js', default: '`1`',
    meaning: '`0`: `flexAttention` and `scaledDotProductAttention` with at most 16 query tokens keep the forward kernels instead of the decode kernel (`0`/`1`; any other value is an `InvalidArgumentError`).' },
  { name: 'FLEXATTN_GRADFOR_FAST', scope: 'runtime', readBy: 'js', default: '`1`',
    meaning: '`0`: captured-tensor gradients (`gradFor`) on CUDA take the general per-element accumulation for every index, ' +
      'not the faster one for indices of `b`, `h` only or along `kv − q` (both deterministic; `0`/`1`; any other value is an `InvalidArgumentError`). ' +
      'The faster one needs `FLEXATTN_UNVERIFIED_GPU_PATHS=1` until its GPU run.' },
  { name: 'FLEXATTN_UNVERIFIED_GPU_PATHS', scope: 'runtime', readBy: 'js', default: '`0`',
    meaning: '`1`: enable the CUDA code paths that have been written and tested on the CPU side but not yet run on a GPU ' +
      '(listed in the README\'s "Not yet verified on a GPU"); without it they raise a `NotImplementedError` that names this switch ' +
      '(`0`/`1`; any other value is an `InvalidArgumentError`). For the project\'s own verification runs.' },
  { name: 'FLEXATTN_ARCHS', scope: 'build', readBy: 'script', default: '`80;86;89;90a`',
    meaning: 'GPU architectures whose dense kernels the source build precompiles with nvcc (a CMake list).' },
  { name: 'FLEXATTN_NVCC', scope: 'build', readBy: 'script', default: '`nvcc` on `PATH`, then `/usr/local/cuda/bin/nvcc`',
    meaning: 'The nvcc that precompiles the dense kernels; with none found the addon is built without them (all kernels JIT-compiled).' },
  { name: 'FLEXATTN_REQUIRE_GPU', scope: 'tooling', readBy: 'script', default: '`0`',
    meaning: '`1`: a missing GPU fails the GPU test suites (test/gpu-gate.ts) instead of skipping them.' },
  { name: 'FLEXATTN_REQUIRE_NCCL', scope: 'tooling', readBy: 'script', default: '`0`',
    meaning: '`1`: a missing or unusable libnccl fails the NCCL GPU suites (test/gpu/parallel-*.test.ts) instead of skipping them.' },
  { name: 'FLEXATTN_REQUIRE_MULTI_GPU', scope: 'tooling', readBy: 'script', default: '`0`',
    meaning: '`1`: fewer than 2 GPUs (or no libnccl) fails test/gpu/parallel-multi.test.ts instead of skipping it.' },
  { name: 'FLEXATTN_REQUIRE_FATBIN', scope: 'tooling', readBy: 'script', default: '`0`',
    meaning: '`1`: `npm run prebuild` fails when the prebuilt binary has no precompiled kernels.' },
  { name: 'FLEXATTN_BM_DEVICE', scope: 'tooling', readBy: 'script',
    default: '`cuda:0` (bench/blockmask.mjs: `cpu` without a GPU)',
    meaning: 'Device the block-mask benchmarks (bench/blockmask.mjs, bench/compare-blockmask-torch.mjs) build masks on; `cpu` runs them without a GPU.' },
  { name: 'FLEXATTN_RELIABILITY_DIR', scope: 'tooling', readBy: 'script', default: '`/tmp/flexattn-reliability`',
    meaning: 'Results directory of the reliability suite (scripts/gpu-reliability.sh, scripts/reliability/); `--results` overrides it.' },
] satisfies EnvSwitch[]);

const byName = new Map(ENV_SWITCHES.map((s) => [s.name, s]));

/**
 * The raw value of a listed switch (`undefined` when unset); each reader
 * applies the switch's own parsing. Throws InternalError for an unlisted name,
 * so a new switch cannot be read before it is documented.
 */
export function envSwitch(name: string): string | undefined {
  if (!byName.has(name)) throw new InternalError(`environment switch ${name} is not listed in lib/env.ts`);
  return process.env[name];
}
