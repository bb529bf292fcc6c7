// The continuous-batching engine of the example server: one KvCache shared by
// every request, and a step loop. Each step gathers the runnable requests
// (one decode token each, then chunks of waiting prompts up to a token budget),
// runs L layers of `cache.append` + `pagedAttention` over the whole ragged
// batch, and hands one token id to each request whose step produced one.
// Requests join and leave only between steps, so no call in flight ever sees a
// sequence being freed under it.
//
// There are no model weights: layer 0's input is a window of a random slab
// made once (a stand-in for the token embeddings; drawing fresh normals on the
// CPU each step would block the event loop for milliseconds), each layer's q
// is the previous layer's output and its k/v are two head slices of it, so
// every layer depends on the one before, as in a model. The "sampled" token is the argmax over the first head of the last
// layer's output row: an id in [0, headDim).
import { createHistogram } from 'node:perf_hooks';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { KvCache, KvCacheFullError, Tensor, pagedAttention } from 'flexattn';

/** A request cannot be admitted: too large for this cache or bad numbers (the HTTP layer answers 400). */
export class RequestError extends Error {}

let nextRequestId = 1;

export class Engine {
  /**
   * @param {object} cfg  see config.mjs: device, dtype, layers, heads, kvHeads,
   *   headDim, pageSize, numPages, maxStepTokens, prefillChunk, maxActive,
   *   maxPromptTokens, maxNewTokens, stallTimeoutMs
   */
  constructor(cfg) {
    if (cfg.heads % cfg.kvHeads !== 0) throw new RequestError(`heads (${cfg.heads}) must be a multiple of kvHeads (${cfg.kvHeads})`);
    this.cfg = cfg;
    this.cache = new KvCache({
      pageSize: cfg.pageSize, numPages: cfg.numPages, numKvHeads: cfg.kvHeads, headDim: cfg.headDim,
      dtype: cfg.dtype, device: cfg.device,
    });
    /** Admitted, joining the batch at the next step boundary. */
    this.joining = [];
    /** In the batch (prefilling or decoding). */
    this.active = [];
    /**
     * Pages promised to admitted requests (their whole prompt and output on
     * every layer): admission keeps this within the pool, so no append of a
     * step can run out of pages halfway through its layers.
     */
    this.reservedPages = 0;
    this.counters = this.#zeroCounters();
    this.stepNs = createHistogram();
    this.stepTokens = createHistogram();
    this.meanStepMs = 0;
    this.embeddings = Tensor.randn([2 * cfg.maxStepTokens, cfg.heads, cfg.headDim], cfg.dtype, { device: this.cache.device, seed: 19 });
    this.looping = false;
    this.running = undefined;
    this.stopped = false;
    this.wakeUp = undefined;
  }

  #zeroCounters() {
    return {
      steps: 0, tokensOut: 0, prefillTokens: 0, decodeTokens: 0, admitted: 0, completed: 0, disconnected: 0,
      stalled: 0, failed: 0, rejectedFull: 0, stepErrors: 0, since: performance.now(),
    };
  }

  /** Clears counters and histograms (a load run's measurement window starts). */
  resetStats() {
    this.counters = this.#zeroCounters();
    this.stepNs.reset();
    this.stepTokens.reset();
  }

  /** Pages a request of `promptTokens` + `maxTokens` takes at most: all its appended tokens on every layer. */
  pagesFor(promptTokens, maxTokens) {
    // The last output token is only sent, never appended.
    return this.cfg.layers * Math.ceil((promptTokens + maxTokens - 1) / this.cfg.pageSize);
  }

  /**
   * Admits a request or throws: RequestError (bad or oversized numbers) or
   * KvCacheFullError (not enough unreserved pages now; `neededPages`,
   * `freePages`, and `retryAfterS`: a guess at when enough will be back).
   *
   * `sink.token(i, id)` returns false when the client is not keeping up: the
   * request then sits out the steps until `engine.resume(req)`.
   * `sink.end(reason, error?)` is called once, when it leaves the batch.
   */
  admit({ promptTokens, maxTokens, signal, sink }) {
    const { cfg } = this;
    if (this.stopped) throw new RequestError('the server is shutting down');
    if (!Number.isInteger(promptTokens) || promptTokens < 1 || promptTokens > cfg.maxPromptTokens) {
      throw new RequestError(`promptTokens must be an integer in [1, ${cfg.maxPromptTokens}], got ${JSON.stringify(promptTokens)}`);
    }
    if (!Number.isInteger(maxTokens) || maxTokens < 1 || maxTokens > cfg.maxNewTokens) {
      throw new RequestError(`maxTokens must be an integer in [1, ${cfg.maxNewTokens}], got ${JSON.stringify(maxTokens)}`);
    }
    const need = this.pagesFor(promptTokens, maxTokens);
    if (need > cfg.numPages) {
      throw new RequestError(`a request of ${promptTokens} + ${maxTokens} tokens needs ${need} pages over ${cfg.layers} layers; the cache has ${cfg.numPages}`);
    }
    const free = cfg.numPages - this.reservedPages;
    const busy = this.active.length + this.joining.length >= cfg.maxActive;
    if (need > free || busy) {
      this.counters.rejectedFull++;
      const why = busy ? `${cfg.maxActive} requests are running (the limit)` : `${free} of ${cfg.numPages} pages are unreserved`;
      const err = new KvCacheFullError(`the KV cache is full: this request needs ${need} pages, ${why}`, need, busy ? 0 : free);
      err.retryAfterS = this.#retryAfterS();
      throw err;
    }
    this.reservedPages += need;
    const req = {
      id: nextRequestId++, promptTokens, maxTokens, reserved: need, seqs: undefined, prefilled: 0, generated: 0,
      blockedSince: 0, done: undefined, error: undefined, signal, sink,
    };
    this.joining.push(req);
    this.counters.admitted++;
    signal?.addEventListener('abort', () => this.#wake(), { once: true });
    this.#wake();
    return req;
  }

  /** The client of `req` can take more (its socket drained). */
  resume(req) {
    if (req.blockedSince) {
      req.blockedSince = 0;
      this.#wake();
    }
  }

  /** Ends every request and frees the cache; resolves when the step loop has stopped. */
  async stop() {
    this.stopped = true;
    this.#wake();
    await this.running;
    for (const req of [...this.active, ...this.joining]) this.#leave(req, 'shutdown');
    this.active = [];
    this.joining = [];
    this.cache.dispose();
    this.embeddings.dispose();
  }

  /** Seconds until enough pages may be back: the steps the nearest finisher still needs. */
  #retryAfterS() {
    let steps = Infinity;
    for (const r of this.active) steps = Math.min(steps, r.maxTokens - r.generated + Math.ceil((r.promptTokens - r.prefilled) / this.cfg.prefillChunk));
    if (!Number.isFinite(steps)) return 1;
    return Math.min(60, Math.max(1, Math.ceil((steps * this.meanStepMs) / 1000)));
  }

  #wake() {
    if (this.looping) {
      this.wakeUp?.();
      return;
    }
    // `looping` is cleared in the same turn as the loop's last boundary, so a
    // request admitted after it starts a new loop rather than waiting forever.
    this.looping = true;
    this.running = this.#loop().catch((e) => {
      // Last resort (a bug): log it, end every request, and leave the server up.
      console.error(`step loop failed: ${e?.stack ?? e}`);
      for (const req of [...this.active, ...this.joining]) { req.error = e; this.#leave(req, 'failed'); }
      this.active = [];
      this.joining = [];
    });
  }

  /** Waits for a join, a resume, an abort, or `ms` (to check stalled clients). */
  #sleep(ms) {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.wakeUp = () => { clearTimeout(t); resolve(); };
    }).finally(() => { this.wakeUp = undefined; });
  }

  async #loop() {
    try {
      while (!this.stopped) {
        this.#boundary();
        if (this.active.length === 0) return;
        const batch = this.#schedule();
        if (batch.length === 0) {
          // Every active client is back-pressured: wait for one to drain.
          await this.#sleep(Math.max(10, this.cfg.stallTimeoutMs / 4));
          continue;
        }
        await this.#step(batch);
        // Let the sockets flush and new requests arrive between steps.
        await nextTurn();
      }
    } finally {
      this.looping = false;
    }
  }

  /** Between steps: finished, disconnected, stalled and failed requests leave; admitted ones join. */
  #boundary() {
    const now = performance.now();
    const stay = [];
    for (const req of this.active) {
      if (req.done) this.#leave(req, req.done);
      else if (req.signal?.aborted) this.#leave(req, 'disconnected');
      else if (req.blockedSince && now - req.blockedSince > this.cfg.stallTimeoutMs) this.#leave(req, 'stalled');
      else stay.push(req);
    }
    for (const req of this.joining) {
      if (req.signal?.aborted) { this.#leave(req, 'disconnected'); continue; }
      req.seqs = Array.from({ length: this.cfg.layers }, () => this.cache.newSequence());
      stay.push(req);
    }
    this.joining = [];
    this.active = stay;
  }

  #leave(req, reason) {
    if (req.seqs) for (const s of req.seqs) if (this.cache.has(s)) this.cache.free(s);
    req.seqs = undefined;
    this.reservedPages -= req.reserved;
    req.reserved = 0;
    const counter = { completed: 'completed', disconnected: 'disconnected', stalled: 'stalled', failed: 'failed' }[reason];
    if (counter) this.counters[counter]++;
    try {
      req.sink.end(reason, req.error);
    } catch (e) {
      console.error(`request ${req.id}: ending its stream failed: ${e?.message ?? e}`);
    }
  }

  /** Decode tokens first (one per request), then prompt chunks while the step's token budget lasts. */
  #schedule() {
    const { maxStepTokens, prefillChunk } = this.cfg;
    let budget = maxStepTokens;
    const batch = [];
    for (const req of this.active) {
      if (budget === 0) break;
      if (req.blockedSince || req.prefilled < req.promptTokens) continue;
      batch.push({ req, tokens: 1, emits: true });
      budget--;
    }
    for (const req of this.active) {
      if (budget === 0) break;
      const left = req.promptTokens - req.prefilled;
      if (left === 0) continue;
      const tokens = Math.min(left, prefillChunk, budget);
      batch.push({ req, tokens, emits: tokens === left });
      budget -= tokens;
    }
    return batch;
  }

  async #step(batch) {
    const { cfg, cache } = this;
    const t0 = process.hrtime.bigint();
    const tokens = batch.map((e) => e.tokens);
    const T = tokens.reduce((a, b) => a + b, 0);
    // Views (narrow) share their tensor's lease: only the layer outputs are disposed.
    const rows = this.embeddings.shape[0];
    let x = this.embeddings.narrow(0, (this.counters.steps * 7919) % (rows - T + 1), T);
    let owned = false;
    try {
      for (let l = 0; l < cfg.layers; l++) {
        const seqs = batch.map((e) => e.req.seqs[l]);
        const k = x.narrow(1, 0, cfg.kvHeads), v = x.narrow(1, cfg.heads - cfg.kvHeads, cfg.kvHeads);
        await cache.append(seqs, k, v, { tokens });
        const out = await pagedAttention(x, cache, { seqs, queryTokens: tokens });
        if (owned) x.dispose();
        x = out;
        owned = true;
      }
      const head0 = await x.narrow(1, 0, 1).toFloat32();
      this.#emit(batch, head0);
    } catch (e) {
      // Never take the server down: the requests of this step end with an
      // error event and leave at the boundary; the others carry on.
      this.counters.stepErrors++;
      if (this.counters.stepErrors <= 3) console.error(`step failed (${batch.length} requests end): ${e?.stack ?? e}`);
      for (const { req } of batch) { req.error = e; req.done = 'failed'; }
    } finally {
      if (owned) x.dispose();
    }
    const ns = Number(process.hrtime.bigint() - t0);
    this.stepNs.record(Math.max(1, ns));
    this.stepTokens.record(Math.max(1, T));
    this.meanStepMs = this.meanStepMs === 0 ? ns / 1e6 : 0.9 * this.meanStepMs + 0.1 * (ns / 1e6);
    this.counters.steps++;
  }

  /** Updates each request of a finished step and sends the tokens it produced. */
  #emit(batch, head0) {
    const D = this.cfg.headDim;
    const now = performance.now();
    let row = 0;
    for (const { req, tokens, emits } of batch) {
      row += tokens;
      if (req.prefilled < req.promptTokens) {
        req.prefilled += tokens;
        this.counters.prefillTokens += tokens;
      } else {
        this.counters.decodeTokens += tokens;
      }
      if (!emits || req.signal?.aborted) continue;
      let best = 0;
      const base = (row - 1) * D;
      for (let j = 1; j < D; j++) if (head0[base + j] > head0[base + best]) best = j;
      const i = req.generated++;
      this.counters.tokensOut++;
      if (req.generated === req.maxTokens) req.done = 'completed';
      let more = true;
      try {
        more = req.sink.token(i, best);
      } catch (e) {
        req.error = e;
        req.done = 'failed';
      }
      if (more === false && !req.done) req.blockedSince = now;
    }
  }

  /** What /stats reports (see server.mjs). */
  stats() {
    const ms = (h, q) => (h.count ? h.percentile(q) / 1e6 : 0);
    const wallS = (performance.now() - this.counters.since) / 1000;
    return {
      ...this.counters, since: undefined, windowS: wallS,
      stepsPerS: wallS > 0 ? this.counters.steps / wallS : 0,
      active: this.active.length, joining: this.joining.length,
      blocked: this.active.filter((r) => r.blockedSince).length,
      reservedPages: this.reservedPages,
      stepMs: { p50: ms(this.stepNs, 50), p99: ms(this.stepNs, 99), max: this.stepNs.count ? this.stepNs.max / 1e6 : 0, mean: this.stepNs.count ? this.stepNs.mean / 1e6 : 0 },
      stepTokens: { mean: this.stepTokens.count ? this.stepTokens.mean : 0, max: this.stepTokens.count ? this.stepTokens.max : 0 },
      cache: this.cache.stats(),
    };
  }
}
