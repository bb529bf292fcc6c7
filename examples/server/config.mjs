// The server's options: command-line flags (node:util parseArgs) with
// defaults that depend on the device: a Llama-3-8B-like attention stack on the
// GPU, small sizes on the CPU reference backend.
import { parseArgs } from 'node:util';
import { cudaAvailable } from 'flexattn';

const FLAGS = {
  device: { type: 'string' },
  host: { type: 'string', default: '127.0.0.1' },
  port: { type: 'string', default: '8080' },
  layers: { type: 'string' },
  heads: { type: 'string' },
  'kv-heads': { type: 'string' },
  'head-dim': { type: 'string' },
  'page-size': { type: 'string' },
  'num-pages': { type: 'string' },
  dtype: { type: 'string' },
  'max-step-tokens': { type: 'string' },
  'prefill-chunk': { type: 'string' },
  'max-active': { type: 'string' },
  'max-prompt-tokens': { type: 'string' },
  'max-new-tokens': { type: 'string' },
  'stall-timeout-ms': { type: 'string' },
  help: { type: 'boolean', default: false },
};

const GPU_DEFAULTS = {
  layers: 32, heads: 32, kvHeads: 8, headDim: 128, pageSize: 16, numPages: 524288, dtype: 'bf16',
  maxStepTokens: 4096, prefillChunk: 512, maxActive: 1024,
};
const CPU_DEFAULTS = {
  layers: 2, heads: 4, kvHeads: 2, headDim: 64, pageSize: 16, numPages: 8192, dtype: 'f32',
  maxStepTokens: 512, prefillChunk: 128, maxActive: 256,
};

export const USAGE = `usage: node examples/server/server.mjs [--device cuda:0|cpu] [--port 8080] [--host 127.0.0.1]
  [--layers L] [--heads Hq] [--kv-heads Hkv] [--head-dim D] [--page-size P] [--num-pages N] [--dtype bf16|f16|f32]
  [--max-step-tokens N] [--prefill-chunk N] [--max-active N] [--max-prompt-tokens N] [--max-new-tokens N]
  [--stall-timeout-ms MS]
GPU defaults: ${JSON.stringify(GPU_DEFAULTS)}
CPU defaults: ${JSON.stringify(CPU_DEFAULTS)}`;

function int(name, value, min) {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got ${JSON.stringify(value)}`);
  return n;
}

/**
 * The engine + listener configuration from `overrides` (camelCase keys, as a
 * test passes them) on top of the device's defaults.
 */
export function makeConfig(overrides = {}) {
  const device = overrides.device ?? (cudaAvailable() ? 'cuda:0' : 'cpu');
  const base = device === 'cpu' ? CPU_DEFAULTS : GPU_DEFAULTS;
  const cfg = {
    host: '127.0.0.1', port: 8080, maxPromptTokens: 8192, maxNewTokens: 4096, stallTimeoutMs: 30_000,
    ...base, ...overrides, device,
  };
  for (const [k, min] of Object.entries({
    port: 0, layers: 1, heads: 1, kvHeads: 1, headDim: 1, pageSize: 1, numPages: 1, maxStepTokens: 1, prefillChunk: 1,
    maxActive: 1, maxPromptTokens: 1, maxNewTokens: 1, stallTimeoutMs: 1,
  })) cfg[k] = int(k, cfg[k], min);
  if (cfg.heads % cfg.kvHeads !== 0) throw new Error(`--heads (${cfg.heads}) must be a multiple of --kv-heads (${cfg.kvHeads})`);
  return cfg;
}

/** Parses `argv` (without node and the script); returns the config, or undefined after printing help. */
export function configFromArgv(argv) {
  const { values } = parseArgs({ args: argv, options: FLAGS, strict: true });
  if (values.help) {
    console.log(USAGE);
    return undefined;
  }
  const o = {};
  for (const [flag, value] of Object.entries(values)) {
    if (flag === 'help' || value === undefined) continue;
    o[flag.replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = value;
  }
  return makeConfig(o);
}
