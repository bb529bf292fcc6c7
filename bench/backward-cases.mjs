// The backward rows of the attention benchmark (issue 21, "Bars"), shared by
// bench/backward.mjs (ours) and, through `node bench/run.mjs --emit-cases DIR`
// (DIR/backward-cases.json), by bench/torch_backward.py, so both sides time the
// same problems. bf16, B = 2, H = 16, S = 8192, scale 1/√D, standard-normal inputs.
//
// Rows: dense causal SDPA at D = 128 and D = 64; every flex pattern of the
// forward benchmark (bench/cases.mjs: causal, sliding window 1024, document-
// causal, prefix-LM 2048, softcap 30 + causal, ALiBi + causal) at D = 128; and a
// learnable relative-bias table (causal, score + table[h, q - kv + S - 1], a
// [H, 2S - 1] f32 table) timed twice: with its gradient (gradFor / requires_grad)
// and without, the pair whose ratio is the captured-gradient overhead; likewise
// learnable ALiBi slopes (gradFor slopes, against the ALiBi row). The two index
// shapes of the fast gradFor paths (lib/cuda/gradfor-plan.ts): diagonal and
// uniform; FLEXATTN_GRADFOR_FAST=0 times the general path instead.
//
// Each row is timed backward-only (the forward's out and LSE prepared once) and
// forward + backward. FLOPs are counted on the unmasked (q, kv) pairs (exact,
// from bench/cases.mjs's closed forms): forward 4·D·Hq·pairs, backward 2.5×
// that (five matmuls to the forward's two), forward + backward 3.5×.
import { docIds, rowPairs } from './cases.mjs';

export const BACKWARD_CASES_VERSION = 2;

/** FLOPs of the backward, as a multiple of the forward's (FlashAttention's count: 5 matmuls vs 2). */
export const BWD_FLOP_FACTOR = 2.5;

/** The mask a pattern's pairs are counted with (score-mod patterns are causal). */
const MASK_PATTERN = { causal: 'causal', softcap: 'causal', alibi: 'causal', relbias: 'causal', swa: 'swa', prefix: 'prefix', doc: 'doc' };

/** Adds the pair and FLOP counts to a case. */
export function withCounts(c) {
  const Hkv = c.Hkv ?? c.Hq;
  const mp = MASK_PATTERN[c.pattern];
  if (!mp) throw new Error(`unknown backward pattern ${c.pattern}`);
  let pairs;
  if (mp === 'doc') {
    const { lengths } = docIds(c.B, c.S, c.docSeed, c.docMin, c.docSpan);
    pairs = lengths.reduce((acc, l) => acc + rowPairs('doc', c.S, c, l), 0);
  } else {
    pairs = c.B * rowPairs(mp, c.S, c);
  }
  const fwdFlops = 4 * c.D * c.Hq * pairs;
  return {
    ...c, Hkv, pairs, density: pairs / (c.B * c.S * c.S),
    fwdFlops, bwdFlops: BWD_FLOP_FACTOR * fwdFlops, fwdBwdFlops: (1 + BWD_FLOP_FACTOR) * fwdFlops,
  };
}

/**
 * The backward cases; `tiny` keeps the structure at CPU-friendly sizes (dry runs, --smoke-cpu).
 * `kind`: 'dense' (SDPA, the dense bars), 'flex' (a flex pattern, the 1.3x bar),
 * 'gradForBase' (the relative-bias row without its gradient: the overhead bar's denominator).
 */
export function buildBackwardCases({ tiny = false } = {}) {
  const F = tiny ? { B: 2, Hq: 2, S: 256 } : { B: 2, Hq: 16, S: 8192 };
  const win = tiny ? 64 : 1024, prefix = tiny ? 64 : 2048;
  const docs = { docSeed: 12345, ...(tiny ? { docMin: 20, docSpan: 80 } : {}) };
  const g = 'backward';
  const cases = [
    { id: 'bwd dense d128 causal (sdpa)', kind: 'dense', op: 'sdpa', ...F, D: 128, pattern: 'causal', causal: true, attentionImpl: 'sdpa' },
    { id: 'bwd dense d64 causal (sdpa)', kind: 'dense', op: 'sdpa', ...F, D: 64, pattern: 'causal', causal: true },
    { id: 'bwd flex causal', kind: 'flex', op: 'flex', ...F, D: 128, pattern: 'causal', attentionImpl: 'flex' },
    { id: `bwd flex sliding window ${win}`, kind: 'flex', op: 'flex', ...F, D: 128, pattern: 'swa', window: win },
    { id: 'bwd flex document-causal', kind: 'flex', op: 'flex', ...F, D: 128, pattern: 'doc', ...docs },
    { id: `bwd flex prefix-LM ${prefix}`, kind: 'flex', op: 'flex', ...F, D: 128, pattern: 'prefix', prefix },
    { id: 'bwd flex softcap 30 + causal', kind: 'flex', op: 'flex', ...F, D: 128, pattern: 'softcap', softcap: 30 },
    { id: 'bwd flex ALiBi + causal', kind: 'flex', op: 'flex', ...F, D: 128, pattern: 'alibi' },
    { id: 'bwd flex ALiBi + causal (gradFor slopes)', kind: 'flex', op: 'flex', ...F, D: 128, pattern: 'alibi', gradFor: true,
      baseId: 'bwd flex ALiBi + causal' },
    { id: 'bwd flex relative bias + causal (gradFor table)', kind: 'flex', op: 'flex', ...F, D: 128, pattern: 'relbias', gradFor: true,
      baseId: 'bwd flex relative bias + causal (no gradFor)' },
    { id: 'bwd flex relative bias + causal (no gradFor)', kind: 'gradForBase', op: 'flex', ...F, D: 128, pattern: 'relbias', gradFor: false },
  ];
  return cases.map((c) => withCounts({ group: g, ...c }));
}

/** The relative-bias table's shape and offset for self-attention of length S: index q - kv + S - 1 in [0, 2S - 2]. */
export function relBiasShape(c) {
  return { shape: [c.Hq, 2 * c.S - 1], offset: c.S - 1 };
}
