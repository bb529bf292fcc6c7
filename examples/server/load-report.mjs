// Writes a load run's result (load.mjs) as <out>.json and a Markdown summary <out>.md.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

/** 'NVIDIA H100 80GB HBM3' -> 'h100-80gb-hbm3', as the other files under bench/results are named. */
export function cardSlug(name) {
  return String(name || 'cpu').toLowerCase().replace(/^nvidia\s+/, '').replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '') || 'unknown';
}

const f = (x, d = 1) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : '–');
const mib = (b) => (typeof b === 'number' ? `${(b / 2 ** 20).toFixed(1)} MiB` : '–');

/** The Markdown summary of a result. */
export function renderMarkdown(r) {
  const c = r.server.config, R = r.results, L = r.load;
  const mem = R.memory.gpu
    ? `GPU allocated ${mib(R.memory.gpu.allocatedBytes)}, peak ${mib(R.memory.gpu.peakAllocatedBytes)}, reserved ${mib(R.memory.gpu.reservedBytes)}; host RSS ${mib(R.memory.host.rssBytes)}`
    : `host RSS ${mib(R.memory.host.rssBytes)}, array buffers ${mib(R.memory.host.arrayBuffersBytes)} (KV pools ${mib(R.cacheAfter.bytes)})`;
  return `# Example server under load: ${r.server.card} (${r.server.device})

${r.note ? `${r.note}\n\n` : ''}${r.when}. \`examples/server/\`: one KvCache, continuous batching, ${c.layers} layers of append + pagedAttention per step
(attention only, random projections), Hq ${c.heads}, Hkv ${c.kvHeads}, D ${c.headDim}, ${c.dtype}, ${c.numPages} pages of ${c.pageSize},
step budget ${c.maxStepTokens} tokens, prefill chunk ${c.prefillChunk}.
Load (\`examples/server/load.mjs\`, Node fetch over loopback): ${L.requests} requests on ${L.streams} concurrent streams,
prompt ${L.prompt.join('–')} tokens, ${L.maxTokens.join('–')} new tokens each, seed ${L.seed}, ${L.hangUps} hang up halfway.

| figure | value |
|---|---|
| wall time | ${f(R.wallS, 2)} s |
| streams completed / hung up / failed | ${R.completed} / ${R.hungUp} / ${R.failed} |
| 503 answers (retried after Retry-After) | ${R.rejected503} |
| tokens streamed | ${R.tokens} (in order: ${R.inOrder ? 'yes' : '**no**'}) |
| tokens/s | ${f(R.tokensPerS)} |
| steps/s | ${f(R.stepsPerS)} (${R.steps} steps, ${f(R.meanStepTokens)} tokens per step on average) |
| step time p50 / p99 / max | ${f(R.stepMs.p50, 2)} / ${f(R.stepMs.p99, 2)} / ${f(R.stepMs.max, 2)} ms |
| time to first token p50 / p99 | ${f(R.ttftMs.p50)} / ${f(R.ttftMs.p99)} ms |
| time per token p50 / p99 | ${f(R.timePerTokenMs.p50, 2)} / ${f(R.timePerTokenMs.p99, 2)} ms |
| server event-loop delay p50 / p99 / max | ${f(R.serverEventLoopDelayMs.p50, 2)} / ${f(R.serverEventLoopDelayMs.p99, 2)} / ${f(R.serverEventLoopDelayMs.max, 2)} ms |
| client event-loop delay p99 | ${f(R.clientEventLoopDelayMs.p99, 2)} ms |
| memory | ${mem} |
| cache drained after the run | ${R.drained ? 'yes' : '**no**'} (free pages ${R.cacheAfter.freePages} of ${R.cacheAfter.numPages}) |
${R.errors.length ? `\nFirst errors: \`${JSON.stringify(R.errors)}\`\n` : ''}
Time per token is the gap between consecutive tokens of a stream as the client sees them; time to first
token runs from the request to its first token (queueing, 503 retries and chunked prefill included).
Event-loop delay: \`perf_hooks.monitorEventLoopDelay\` in the server, sampling interval subtracted.
`;
}

/** Writes `<out>.json` and `<out>.md` when `out` is given (an extension .json/.md is dropped); returns the Markdown. */
export function writeResults(r, out) {
  const md = renderMarkdown(r);
  if (out) {
    const base = out.replace(/\.(json|md)$/, '');
    mkdirSync(dirname(base), { recursive: true });
    writeFileSync(`${base}.json`, `${JSON.stringify(r, null, 2)}\n`);
    writeFileSync(`${base}.md`, md);
  }
  return md;
}
