/**
 * What pagedAttention and varlenAttention share once their arguments are
 * checked: the call's claims (q, the KV tensors, the mods' captured tensors),
 * the RaggedKv built on the KV's device, and the choice between the CPU
 * reference and the GPU launcher. Outputs are packed like q: `[T, Hq, D]`,
 * LSE `[T, Hq]`.
 * Internal: not exported from the package.
 * @module
 */
import { InvalidArgumentError } from '../errors.js';
import { MaskMod, ScoreMod, encodeProgram } from '../mods/index.js';
import { runOp } from '../ownership.js';
import type { Tensor } from '../tensor.js';
import type { AttentionWithLse } from '../sdpa.js';
import type { Backend } from '../validate.js';
import { runRaggedAttentionCuda } from '../cuda/run-ragged.js';
import { buildRaggedKv, disposeRaggedTables, type KvLayout, type RaggedKv, type RaggedTables } from './paged-kv.js';
import { runRaggedAttentionCpu } from './ragged-cpu.js';

/** A checked ragged call. */
export interface RaggedCall {
  what: string;
  q: Tensor; k: Tensor; v: Tensor;
  layout: KvLayout;
  tables: RaggedTables;
  numKvHeads: number;
  scale: number;
  causal: boolean;
  returnLse: boolean;
  scoreMod: ScoreMod | undefined;
  maskMod: MaskMod | undefined;
  params: Record<string, number>;
  backend: Backend;
  signal: AbortSignal | undefined;
  /** Called when the call starts reading k and v (CPU), returns its end (e.g. KvCache.beginRead). */
  beginRead?: () => () => void;
  /**
   * Builds the RaggedKv from the held k and v instead of uploading `tables`
   * (a call recorded in a CUDA graph capture reads tables the graph owns:
   * they are not freed after the call).
   */
  kv?: (k: Tensor, v: Tensor) => RaggedKv;
  /** With `kv`: called once the GPU kernel reading it is enqueued, or the call failed (its tables may change from then on). */
  enqueued?: () => void;
}

/** `options.scoreMod` / `options.maskMod` / `options.params`, checked. */
export function checkMods(options: { scoreMod?: unknown; maskMod?: unknown; params?: unknown }): {
  scoreMod: ScoreMod | undefined; maskMod: MaskMod | undefined; params: Record<string, number>;
} {
  const { scoreMod, maskMod } = options;
  if (scoreMod !== undefined && !(scoreMod instanceof ScoreMod)) {
    throw new InvalidArgumentError('options.scoreMod', 'a ScoreMod (from scoreMod(...) or a built-in such as softcap(30))',
      scoreMod instanceof MaskMod ? 'a MaskMod (pass it as options.maskMod)' : typeof scoreMod);
  }
  if (maskMod !== undefined && !(maskMod instanceof MaskMod)) {
    throw new InvalidArgumentError('options.maskMod', 'a MaskMod (from maskMod(...) or a built-in such as slidingWindow(256))',
      maskMod instanceof ScoreMod ? 'a ScoreMod (pass it as options.scoreMod)' : typeof maskMod);
  }
  const params = options.params ?? {};
  if (typeof params !== 'object' || params === null) throw new InvalidArgumentError('options.params', 'an object of numbers', typeof params);
  return { scoreMod, maskMod, params: params as Record<string, number> };
}

/** Runs a checked call; resolves to the output (or `{ out, lse }` with returnLse). */
export function runRagged(c: RaggedCall): Promise<Tensor | AttentionWithLse> {
  let q!: Tensor, k!: Tensor, v!: Tensor;
  return runOp(c.what, c.signal, undefined, (hold) => {
    q = hold.tensor(c.q, 'q');
    k = hold.tensor(c.k, 'k');
    v = c.v === c.k ? k : hold.tensor(c.v, 'v');
    hold.captured(c.scoreMod, 'options.scoreMod');
    hold.captured(c.maskMod, 'options.maskMod');
  }, async (hold) => {
    const kv = c.kv ? c.kv(k, v) : buildRaggedKv(k, v, c.layout, c.tables);
    const endRead = c.backend === 'cpu' ? c.beginRead?.() : undefined;
    try {
      let r: { out: Tensor; lse?: Tensor };
      if (c.backend === 'cpu') {
        const [scoreHost, maskHost] = await Promise.all([
          c.scoreMod ? hold.hostTensors(c.scoreMod) : undefined,
          c.maskMod ? hold.hostTensors(c.maskMod) : undefined,
        ]);
        r = await runRaggedAttentionCpu(q, kv, {
          scale: c.scale, causal: c.causal, returnLse: c.returnLse, numKvHeads: c.numKvHeads,
          ...(c.scoreMod ? { scoreMod: encodeProgram(c.scoreMod, scoreHost!, c.params) } : {}),
          ...(c.maskMod ? { maskMod: encodeProgram(c.maskMod, maskHost!, c.params) } : {}),
          ...(c.signal ? { signal: c.signal } : {}),
        });
      } else {
        r = await runRaggedAttentionCuda(q, kv, {
          scale: c.scale, causal: c.causal, returnLse: c.returnLse, params: c.params, hold,
          enqueued: c.enqueued, scoreMod: c.scoreMod, maskMod: c.maskMod, signal: c.signal,
        });
      }
      return c.returnLse ? { out: r.out, lse: r.lse! } : r.out;
    } finally {
      endRead?.();
      c.enqueued?.();
      if (!c.kv) disposeRaggedTables(kv);
    }
  });
}
