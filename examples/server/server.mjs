// An attention-only inference server over node:http: one KvCache for every
// request, continuous batching (engine.mjs), one token id per step streamed to
// each client as server-sent events.
//
//   POST /generate  {"promptTokens": 300, "maxTokens": 64}
//        200 text/event-stream:  event: token / data: {"i":0,"token":17}  …  event: done / data: {...}
//        503 + Retry-After when the cache has no room now (a KvCacheFullError), 400 on bad input
//   GET  /stats[?reset=1]   counters, step times, event-loop delay, cache and memory (JSON)
//   GET  /healthz
//
//   node examples/server/server.mjs --device cpu --layers 2 --heads 4 --head-dim 64 --page-size 16
import { createServer } from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { KvCacheFullError, deviceInfo, memoryStats } from 'flexattn';
import { configFromArgv, makeConfig } from './config.mjs';
import { Engine, RequestError } from './engine.mjs';

const MAX_BODY = 4096;
/** Event-loop delay sampling interval (ms); the histogram's values include it, so it is subtracted. */
const LOOP_RESOLUTION_MS = 2;

function sendJson(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks = [];
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) { reject(new RequestError(`the body is over ${MAX_BODY} bytes`)); req.destroy(); return; }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** Host-side memory (CPU backend) or the caching allocator's figures (GPU). */
function memory(device) {
  const m = process.memoryUsage();
  const host = { rssBytes: m.rss, heapUsedBytes: m.heapUsed, arrayBuffersBytes: m.arrayBuffers, externalBytes: m.external };
  if (device === 'cpu') return { host };
  const g = memoryStats(device);
  return { host, gpu: { allocatedBytes: g.allocatedBytes, reservedBytes: g.reservedBytes, peakAllocatedBytes: g.peakAllocatedBytes, numCudaMallocs: g.numCudaMallocs } };
}

function cardName(device) {
  if (device === 'cpu') return 'cpu';
  const i = device === 'cuda' ? 0 : Number(device.split(':')[1] ?? 0);
  return deviceInfo().gpus[i]?.name ?? device;
}

async function generate(engine, req, res) {
  let body;
  try {
    body = JSON.parse(await readBody(req));
  } catch (e) {
    return sendJson(res, 400, { error: 'bad request', message: e instanceof RequestError ? e.message : 'the body must be JSON: {"promptTokens": n, "maxTokens": m}' });
  }
  // The client going away (before or during the stream) aborts the request;
  // the engine frees its sequences at the next step boundary.
  const ac = new AbortController();
  res.on('close', () => { if (!res.writableFinished) ac.abort(); });
  let r;
  const t0 = performance.now();
  const sink = {
    token(i, token) {
      if (res.destroyed) return true;
      return res.write(`event: token\ndata: {"i":${i},"token":${token}}\n\n`);
    },
    end(reason, error) {
      if (res.destroyed || res.writableEnded) return;
      if (reason === 'completed') {
        res.end(`event: done\ndata: ${JSON.stringify({ tokens: r.generated, promptTokens: r.promptTokens, ms: performance.now() - t0 })}\n\n`);
      } else {
        res.end(`event: error\ndata: ${JSON.stringify({ reason, message: error?.message ?? reason })}\n\n`);
      }
    },
  };
  try {
    r = engine.admit({ promptTokens: body?.promptTokens, maxTokens: body?.maxTokens, signal: ac.signal, sink });
  } catch (e) {
    if (e instanceof KvCacheFullError) {
      return sendJson(res, 503, { error: e.code, message: e.message, neededPages: e.neededPages, freePages: e.freePages }, { 'retry-after': String(e.retryAfterS ?? 1) });
    }
    if (e instanceof RequestError) return sendJson(res, 400, { error: 'bad request', message: e.message });
    throw e;
  }
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
  res.flushHeaders();
  // Back-pressure: a client that stops reading fills the socket; its request
  // sits out the steps (keeping its pages) until the socket drains.
  res.on('drain', () => engine.resume(r));
}

/**
 * Starts the server. `overrides`: config keys (config.mjs), `port: 0` for an
 * ephemeral port. Resolves to { url, engine, server, close() }.
 */
export async function startServer(overrides = {}) {
  const cfg = makeConfig(overrides);
  const engine = new Engine(cfg);
  const card = cardName(engine.cache.device);
  const loopDelay = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
  loopDelay.enable();
  const server = createServer({ noDelay: true, keepAliveTimeout: 5000 }, (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const route = `${req.method} ${url.pathname}`;
    const fail = (e) => {
      console.error(`${route}: ${e?.stack ?? e}`);
      if (!res.headersSent) sendJson(res, 500, { error: 'internal', message: String(e?.message ?? e) });
      else res.destroy();
    };
    try {
      if (route === 'POST /generate') {
        generate(engine, req, res).catch(fail);
      } else if (route === 'GET /stats') {
        const ms = (ns) => (Number.isFinite(ns) ? Math.max(0, ns / 1e6 - LOOP_RESOLUTION_MS) : 0);
        const body = {
          device: engine.cache.device, card,
          config: Object.fromEntries(['layers', 'heads', 'kvHeads', 'headDim', 'pageSize', 'numPages', 'dtype', 'maxStepTokens', 'prefillChunk', 'maxActive'].map((k) => [k, cfg[k]])),
          ...engine.stats(),
          eventLoopDelayMs: {
            p50: ms(loopDelay.percentile(50)), p99: ms(loopDelay.percentile(99)), max: ms(loopDelay.max), mean: ms(loopDelay.mean),
            samples: loopDelay.count, resolutionMs: LOOP_RESOLUTION_MS,
          },
          memory: memory(engine.cache.device),
        };
        if (url.searchParams.get('reset') === '1') {
          engine.resetStats();
          loopDelay.reset();
        }
        sendJson(res, 200, body);
      } else if (route === 'GET /healthz') {
        sendJson(res, 200, { ok: true });
      } else {
        sendJson(res, 404, { error: 'not found', message: `${route}: try POST /generate, GET /stats, GET /healthz` });
      }
    } catch (e) {
      fail(e);
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(cfg.port, cfg.host, resolve);
  });
  const { port } = server.address();
  const url = `http://${cfg.host.includes(':') ? `[${cfg.host}]` : cfg.host}:${port}`;
  return {
    url, engine, server, config: cfg,
    async close() {
      await engine.stop();
      loopDelay.disable();
      server.closeAllConnections?.();
      await new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const cfg = configFromArgv(process.argv.slice(2));
  if (cfg) {
    const s = await startServer(cfg);
    const c = s.config;
    // The load generator's --spawn waits for this line.
    console.log(`listening on ${s.url} (device ${s.engine.cache.device}, ${c.layers} layers, Hq ${c.heads}, Hkv ${c.kvHeads}, D ${c.headDim}, ` +
      `${c.dtype}, ${c.numPages} pages of ${c.pageSize})`);
    const shutdown = () => { s.close().then(() => process.exit(0)); };
    process.once('SIGINT', shutdown);
    process.once('SIGTERM', shutdown);
  }
}
