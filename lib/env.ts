/**
 * Every `FLEXATTN_*` environment switch the package, its build, tests and
 * benchmarks read, in one list (name, meaning, default). Code reads a switch
 * only through {@link envSwitch}, so a switch that is not listed here cannot
 * be read; the README's table of switches is checked against this list.
 * Internal: not exported from the package.
 * @module
 */
import { InternalError } from './errors.js';

/** Who reads a switch: the library at run time (JS or the addon), the source build, or the test/bench tooling. */
export type SwitchScope = 'runtime' | 'build' | 'tooling';

export interface EnvSwitch {
  readonly name: string;
  readonly scope: SwitchScope;
  /** Read by the TypeScript layer or by the native addon (C++ `getenv`). */
  readonly readBy: 'js' | 'native' | 'script';
  /** What it does, one sentence a user can act on. */
  readonly meaning: string;
  /** The value in effect when unset, as text. */
  readonly default: string;
}

export const ENV_SWITCHES: readonly EnvSwitch[] = Object.freeze([
  { name: 'FLEXATTN_CACHE_DIR', scope: 'runtime', readBy: 'native', default: '~/.cache/flexattn',
    meaning: 'Directory of the on-disk kernel cache; an empty value turns the disk cache off.' },
  { name: 'FLEXATTN_CACHE_MAX_MB', scope: 'runtime', readBy: 'native', default: '1024',
    meaning: 'Size cap of the on-disk kernel cache in MiB; least recently used entries are evicted.' },
  { name: 'FLEXATTN_JIT_TIERED', scope: 'runtime', readBy: 'js', default: '1',
    meaning: '0 compiles each kernel once at full optimisation instead of a fast first build upgraded in the background.' },
  { name: 'FLEXATTN_KERNEL_FAMILY', scope: 'runtime', readBy: 'js', default: 'auto',
    meaning: "sm80 runs the mma.sync kernels on every GPU (a workaround or a comparison); an explicit kernelOptions.family still wins." },
  { name: 'FLEXATTN_NVRTC', scope: 'runtime', readBy: 'native', default: '(search path)',
    meaning: 'Path of libnvrtc to load before the default search.' },
  { name: 'FLEXATTN_LIBCUDA', scope: 'runtime', readBy: 'native', default: 'libcuda.so.1',
    meaning: 'Path of the CUDA driver library to load.' },
  { name: 'FLEXATTN_DISABLE_FATBIN', scope: 'runtime', readBy: 'native', default: '0',
    meaning: '1 ignores the precompiled kernels and JIT-compiles every kernel (tests of the JIT path).' },
  { name: 'FLEXATTN_JIT_PTX', scope: 'runtime', readBy: 'native', default: '0',
    meaning: '1 has NVRTC emit PTX that the driver compiles, instead of a cubin (driver/NVRTC version mismatches).' },
  { name: 'FLEXATTN_CTA_ORDER', scope: 'runtime', readBy: 'js', default: '1',
    meaning: '0 launches block-sparse Hopper kernels in the built-in CTA order instead of longest-first.' },
  { name: 'FLEXATTN_SEGMENTS', scope: 'runtime', readBy: 'js', default: '1',
    meaning: '0 keeps the uniform query-tile grid for document masks instead of the segmented grid.' },
  { name: 'FLEXATTN_FINE_SCHEDULE', scope: 'runtime', readBy: 'js', default: '1',
    meaning: "0 makes Hopper launches walk a block mask's own lists, not the 64x64 schedule derived from it." },
  { name: 'FLEXATTN_ARCHS', scope: 'build', readBy: 'script', default: '80;86;89;90a',
    meaning: 'GPU architectures the source build precompiles dense kernels for.' },
  { name: 'FLEXATTN_NVCC', scope: 'build', readBy: 'script', default: '(nvcc on PATH)',
    meaning: 'nvcc to use for the precompiled kernels; an empty value builds without them (JIT only).' },
  { name: 'FLEXATTN_REQUIRE_FATBIN', scope: 'build', readBy: 'script', default: '0',
    meaning: '1 makes the prebuild fail when the precompiled kernels could not be built.' },
  { name: 'FLEXATTN_REQUIRE_GPU', scope: 'tooling', readBy: 'script', default: '0',
    meaning: '1 makes the GPU test suites fail instead of skipping when no GPU is found.' },
  { name: 'FLEXATTN_BM_DEVICE', scope: 'tooling', readBy: 'script', default: 'cuda',
    meaning: 'Device of the block-mask benchmark.' },
] satisfies EnvSwitch[]);

const byName = new Map(ENV_SWITCHES.map((s) => [s.name, s]));

/** The value of a listed switch, or its default's absence as `undefined`. */
export function envSwitch(name: string): string | undefined {
  if (!byName.has(name)) throw new InternalError(`environment switch ${name} is not listed in lib/env.ts`);
  return process.env[name];
}
