// examples/server/ on the CPU backend at tiny sizes: concurrent SSE streams
// get their tokens in order, the cache's pages come back when streams end or
// hang up, a full cache answers 503 + Retry-After, bad requests 400, the load
// generator's report is sane, and a client that stops reading pauses its
// request (back-pressure) without holding up the others.
// The examples import 'flexattn' (dist/), so `npm run build:ts` comes first (npm test does it).
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// Plain .mjs modules without typings: imported by URL, so they are typed `any` here.
const load = (name: string) => import(pathToFileURL(join(process.cwd(), 'examples/server', name)).href);

const LAYERS = 2, NUM_PAGES = 1024, PAGE = 16;
const TINY = {
  device: 'cpu', port: 0, layers: LAYERS, heads: 4, kvHeads: 2, headDim: 16, pageSize: PAGE, numPages: NUM_PAGES,
  dtype: 'f32', prefillChunk: 32, maxStepTokens: 128, maxNewTokens: 8000,
};

interface Tok { i: number; token: number; t: number }
interface Stream { status: number; tokens: Tok[]; done?: { tokens: number }; error?: string; aborted: boolean; retryAfterS: number }

async function stats(url: string): Promise<any> {
  const res = await fetch(`${url}/stats`);
  expect(res.status).toBe(200);
  return res.json();
}

/** Polls /stats until `ok(stats)` (the server frees a hung-up request at its next step boundary). */
async function waitFor(url: string, ok: (s: any) => boolean, what: string): Promise<any> {
  let s: any;
  for (let k = 0; k < 250; k++) {
    s = await stats(url);
    if (ok(s)) return s;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}: ${JSON.stringify(s)}`);
}

function expectInOrder(tokens: Tok[], n: number, headDim: number): void {
  expect(tokens.map((t) => t.i)).toEqual(Array.from({ length: n }, (_, j) => j));
  for (const t of tokens) {
    expect(Number.isInteger(t.token)).toBe(true);
    expect(t.token).toBeGreaterThanOrEqual(0);
    expect(t.token).toBeLessThan(headDim);
  }
}

describe('examples/server over HTTP (CPU backend)', () => {
  let srv: any, streamOnce: any, SseParser: any;
  beforeAll(async () => {
    ({ streamOnce, SseParser } = await load('sse-client.mjs'));
    srv = await (await load('server.mjs')).startServer(TINY);
  });
  afterAll(async () => { await srv?.close(); });

  it('8 concurrent streams of different prompt lengths each get their tokens in order; every page comes back', async () => {
    const start = await stats(srv.url);
    expect(start.cache.freePages).toBe(NUM_PAGES);
    // 5 to 77 prompt tokens: one to three prefill chunks of 32, several pages.
    const prompts = [5, 77, 16, 33, 64, 1, 50, 31];
    const results: Stream[] = await Promise.all(prompts.map((promptTokens) => streamOnce(srv.url, { promptTokens, maxTokens: 20 })));
    results.forEach((r, j) => {
      expect(r.status, `stream ${j}: ${r.error}`).toBe(200);
      expect(r.error).toBeUndefined();
      expect(r.done?.tokens).toBe(20);
      expectInOrder(r.tokens, 20, TINY.headDim);
    });
    const s = await stats(srv.url);
    expect(s.cache).toMatchObject({ freePages: NUM_PAGES, usedPages: 0, sequences: 0, tokens: 0 });
    expect(s).toMatchObject({ active: 0, joining: 0, reservedPages: 0, stepErrors: 0, failed: 0 });
    expect(s.completed - start.completed).toBe(8);
    expect(s.tokensOut - start.tokensOut).toBe(160);
    expect(s.prefillTokens - start.prefillTokens).toBe(prompts.reduce((a, b) => a + b, 0));
    // 19 decode tokens each (the last token is sent, never appended).
    expect(s.decodeTokens - start.decodeTokens).toBe(8 * 19);
    // Continuous batching: far fewer steps than the streams' steps one after another.
    const steps = s.steps - start.steps;
    expect(steps).toBeGreaterThanOrEqual(20 + 2);
    expect(steps).toBeLessThan(8 * 20);
    expect(s.stepMs.p50).toBeGreaterThan(0);
    expect(s.stepMs.p99).toBeGreaterThanOrEqual(s.stepMs.p50);
    expect(Number.isFinite(s.eventLoopDelayMs.p99)).toBe(true);
    expect(s.memory.host.rssBytes).toBeGreaterThan(0);
  });

  it('a client hanging up mid-stream frees its sequences; a full cache answers 503 + Retry-After; the server carries on', async () => {
    // One long stream: 10 + 1000 tokens reserve LAYERS * ceil(1009 / 16) = 128 pages.
    const ac = new AbortController();
    const res = await fetch(`${srv.url}/generate`, { method: 'POST', body: JSON.stringify({ promptTokens: 10, maxTokens: 1000 }), signal: ac.signal });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/event-stream');
    const reader = res.body!.getReader();
    const parser = new SseParser(), decoder = new TextDecoder();
    const got: { i: number; token: number }[] = [];
    while (got.length < 3) {
      const { value, done } = await reader.read();
      expect(done).toBe(false);
      for (const ev of parser.push(decoder.decode(value, { stream: true }))) if (ev.event === 'token') got.push(JSON.parse(ev.data));
    }
    expect(got.slice(0, 3).map((t) => t.i)).toEqual([0, 1, 2]);
    const live = await stats(srv.url);
    expect(live.cache.sequences).toBe(LAYERS);
    expect(live.reservedPages).toBe(128);
    expect(live.cache.freePages).toBeLessThan(NUM_PAGES);

    // 16 + 7800 tokens need 2 * ceil(7815 / 16) = 978 pages: they fit the cache but not beside the long stream.
    const full = await fetch(`${srv.url}/generate`, { method: 'POST', body: JSON.stringify({ promptTokens: 16, maxTokens: 7800 }) });
    expect(full.status).toBe(503);
    const retry = Number(full.headers.get('retry-after'));
    expect(Number.isInteger(retry) && retry >= 1 && retry <= 60).toBe(true);
    expect(await full.json()).toMatchObject({ error: 'ERR_FLEXATTN_KV_CACHE_FULL', neededPages: 978, freePages: NUM_PAGES - 128 });

    // Bad requests: 400, nothing admitted.
    for (const body of ['{nope', JSON.stringify({ promptTokens: 0, maxTokens: 4 }), JSON.stringify({ promptTokens: 5, maxTokens: 2.5 }),
      JSON.stringify({ promptTokens: 8000, maxTokens: 8000 })]) {
      const r = await fetch(`${srv.url}/generate`, { method: 'POST', body });
      expect(r.status, body).toBe(400);
      expect(((await r.json()) as { message?: string }).message).toBeTruthy();
    }

    ac.abort();
    await reader.cancel().catch(() => {});
    const after = await waitFor(srv.url, (s) => s.cache.sequences === 0, 'the hung-up stream to be freed');
    expect(after.cache).toMatchObject({ freePages: NUM_PAGES, usedPages: 0 });
    expect(after).toMatchObject({ active: 0, reservedPages: 0, disconnected: live.disconnected + 1, stepErrors: 0 });
    expect(after.tokensOut).toBeLessThan(live.tokensOut + 1000);

    const next: Stream = await streamOnce(srv.url, { promptTokens: 33, maxTokens: 5 });
    expect(next.status).toBe(200);
    expectInOrder(next.tokens, 5, TINY.headDim);
    const health = await fetch(`${srv.url}/healthz`);
    expect(health.status).toBe(200);
    expect((await fetch(`${srv.url}/nope`)).status).toBe(404);
  });

  it('the load generator reports sane figures and writes JSON + Markdown', async () => {
    const { runLoad } = await load('load.mjs');
    const { writeResults } = await load('load-report.mjs');
    const r = await runLoad({ url: srv.url, streams: 8, requests: 12, prompt: [4, 70], maxTokens: [6, 12], seed: 7, disconnectFraction: 0.25 });
    const R = r.results;
    expect(r.load.hangUps).toBe(3);
    expect(R.hungUp).toBe(3);
    expect(R.completed).toBe(9);
    expect(R.failed).toBe(0);
    expect(R.inOrder).toBe(true);
    expect(R.drained).toBe(true);
    expect(R.rejected503).toBe(0);
    expect(R.tokensPerS).toBeGreaterThan(0);
    expect(R.stepsPerS).toBeGreaterThan(0);
    expect(R.ttftMs.n).toBe(12);
    expect(R.ttftMs.p99).toBeGreaterThanOrEqual(R.ttftMs.p50);
    expect(R.timePerTokenMs.p50).toBeGreaterThan(0);
    expect(R.timePerTokenMs.p99).toBeGreaterThanOrEqual(R.timePerTokenMs.p50);
    expect(R.serverEventLoopDelayMs.samples).toBeGreaterThan(0);
    expect(R.cacheAfter.freePages).toBe(NUM_PAGES);
    expect(r.server.card).toBe('cpu');
    const dir = mkdtempSync(join(tmpdir(), 'server-load-'));
    writeResults(r, join(dir, 'server.cpu'));
    expect(JSON.parse(readFileSync(join(dir, 'server.cpu.json'), 'utf8')).results.tokens).toBe(R.tokens);
    expect(readFileSync(join(dir, 'server.cpu.md'), 'utf8')).toContain('| tokens/s |');
  });
});

describe('examples/server engine: back-pressure', () => {
  it('a client that stops reading sits out the steps until it drains, without holding up the others; one that never drains is dropped and freed', async () => {
    const { Engine } = await load('engine.mjs');
    const { makeConfig } = await load('config.mjs');
    const engine = new Engine(makeConfig({ ...TINY, stallTimeoutMs: 300 }));
    try {
      const sink = (full: (i: number) => boolean) => {
        const s = { tokens: [] as number[], reason: '', ended: undefined as unknown as Promise<string>, end: (_r: string) => {} };
        s.ended = new Promise((resolve) => { s.end = (reason: string) => { s.reason = reason; resolve(reason); }; });
        return { s, sink: { token: (i: number) => { s.tokens.push(i); return !full(i); }, end: (reason: string) => s.end(reason) } };
      };
      const slow = sink((i) => i === 2);             // the socket is full after token 2
      const fast = sink(() => false);
      const a = engine.admit({ promptTokens: 20, maxTokens: 8, sink: slow.sink });
      engine.admit({ promptTokens: 20, maxTokens: 12, sink: fast.sink });
      expect(await fast.s.ended).toBe('completed');
      expect(fast.s.tokens).toEqual(Array.from({ length: 12 }, (_, j) => j));
      expect(slow.s.tokens).toEqual([0, 1, 2]);      // paused while the other ran on
      expect(engine.stats()).toMatchObject({ active: 1, blocked: 1 });
      engine.resume(a);                              // 'drain'
      expect(await slow.s.ended).toBe('completed');
      expect(slow.s.tokens).toEqual(Array.from({ length: 8 }, (_, j) => j));

      const stuck = sink((i) => i === 0);
      engine.admit({ promptTokens: 40, maxTokens: 50, sink: stuck.sink });
      expect(await stuck.s.ended).toBe('stalled');
      expect(stuck.s.tokens).toEqual([0]);
      expect(engine.stats()).toMatchObject({ active: 0, reservedPages: 0, stalled: 1 });
      expect(engine.cache.stats()).toMatchObject({ freePages: NUM_PAGES, sequences: 0 });
    } finally {
      await engine.stop();
    }
  });
});
