// examples/server/ on cuda:0 (bf16, GQA 32/8, D 128, pages of 16): concurrent
// streams of odd prompt lengths (1 to 1531, several prefill chunks) get every
// token in order, a hang-up frees its sequences, every page comes back, and
// no step fails. The correctness of pagedAttention itself is test/gpu/serving.test.ts's.
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeGpu } from '../gpu-gate.js';

// Plain .mjs modules without typings: imported by URL, so they are typed `any` here.
const load = (name: string) => import(pathToFileURL(join(process.cwd(), 'examples/server', name)).href);

describeGpu('examples/server on the GPU', () => {
  let srv: any;
  beforeAll(async () => {
    srv = await (await load('server.mjs')).startServer({
      device: 'cuda:0', port: 0, layers: 4, heads: 32, kvHeads: 8, headDim: 128, pageSize: 16, numPages: 16384,
      dtype: 'bf16', prefillChunk: 512, maxStepTokens: 2048,
    });
  });
  afterAll(async () => { await srv?.close(); });

  it('64 concurrent streams, 8 hanging up halfway: tokens in order, cache drained, GPU memory reported', async () => {
    const { runLoad } = await load('load.mjs');
    const r = await runLoad({ url: srv.url, streams: 64, requests: 64, prompt: [1, 1531], maxTokens: [1, 77], seed: 3, disconnectFraction: 0.125 });
    const R = r.results;
    expect(R.failed, JSON.stringify(R.errors)).toBe(0);
    expect(R.hungUp + R.completed).toBe(64);
    expect(R.inOrder).toBe(true);
    expect(R.drained).toBe(true);
    expect(R.tokensPerS).toBeGreaterThan(0);
    expect(R.memory.gpu.allocatedBytes).toBeGreaterThanOrEqual(R.cacheAfter.bytes);
    const s = await (await fetch(`${srv.url}/stats`)).json() as any;
    expect(s.stepErrors).toBe(0);
    expect(s.card).not.toBe('cpu');
  });
});
