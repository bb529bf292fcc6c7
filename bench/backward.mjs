// Our side of the backward rows (bench/backward-cases.mjs), timed by
// bench/run.mjs's timeOp (n back-to-back awaited calls + one synchronize):
//   bwd     backward only: the forward's out and LSE are computed once, then
//           flexAttentionBackward / scaledDotProductAttentionBackward is timed;
//   fwdBwd  forward with returnLse + backward, as a training step calls them;
//   attentionFwdBwd  (rows with attentionImpl) the same through attention(...,
//           { requiresGrad: true }) and its backward(dOut): the model-facing switch.
// After timing, the backward runs twice more and the bits of dq, dk, dv and
// dCaptured are compared (the issue's determinism requirement).
// Each measurement that fails (e.g. a NotImplementedError while there is no
// CUDA backward) is recorded in the row as { error }, never thrown.
import { docIds, alibiSlopesF64 } from './cases.mjs';
import { relBiasShape } from './backward-cases.mjs';

/** Gradients as one disposable result (timeOp disposes what the op returns). */
function disposable(g) {
  return { dispose() { g.dq?.dispose(); g.dk?.dispose(); g.dv?.dispose(); for (const t of g.dCaptured ?? []) t.dispose(); } };
}

const firstLine = (e) => `${e?.name ?? 'Error'}${e?.code ? ` [${e.code}]` : ''}: ${String(e?.message ?? e).split('\n')[0]}`;

/** The mask, score mod and gradFor tensors of a flex case (tensors it creates are pushed on `own`). */
export function flexSetup(L, c, device, own) {
  let mask, scoreMod, gradFor = [];
  switch (c.pattern) {
    case 'causal': mask = L.causal(); break;
    case 'swa': mask = L.slidingWindow(c.window); break;
    case 'prefix': mask = L.prefixLM(c.prefix); break;
    case 'doc': {
      const ids = L.Tensor.fromHost(docIds(c.B, c.S, c.docSeed, c.docMin, c.docSpan).ids, [c.B, c.S], 'i32', { device });
      own.push(ids);
      mask = L.documentMask(ids);
      break;
    }
    case 'softcap': mask = L.causal(); scoreMod = L.softcap(c.softcap); break;
    case 'alibi': {
      const slopes = L.Tensor.fromHost(Float32Array.from(alibiSlopesF64(c.Hq)), [c.Hq], 'f32', { device });
      own.push(slopes);
      mask = L.causal(); scoreMod = L.alibi(slopes);
      if (c.gradFor) gradFor = [slopes];
      break;
    }
    case 'relbias': {
      const { shape, offset } = relBiasShape(c);
      const table = L.Tensor.randn(shape, 'f32', { device, seed: 21 });
      own.push(table);
      mask = L.causal(); scoreMod = L.relativeBias(table, { offset });
      if (c.gradFor) gradFor = [table];
      break;
    }
    default: throw new Error(`unknown backward pattern ${c.pattern}`);
  }
  return { mask, scoreMod, gradFor };
}

/** Byte-identical host copies (dq, dk, dv, dCaptured) of two backward results. */
async function sameBits(a, b) {
  const eq = async (x, y) => {
    const [hx, hy] = await Promise.all([x.toHost(), y.toHost()]);
    return Buffer.compare(Buffer.from(hx.buffer, hx.byteOffset, hx.byteLength), Buffer.from(hy.buffer, hy.byteOffset, hy.byteLength)) === 0;
  };
  return {
    dq: await eq(a.dq, b.dq), dk: await eq(a.dk, b.dk), dv: await eq(a.dv, b.dv),
    dCaptured: await Promise.all((a.dCaptured ?? []).map((t, i) => eq(t, b.dCaptured[i]))),
  };
}

/** Times one backward case; returns its result row (errors inside it, per measurement). */
export async function runBackwardCase(L, c, device, opts, timeOp) {
  const row = {
    id: c.id, group: c.group, kind: c.kind, op: c.op, pattern: c.pattern, B: c.B, Hq: c.Hq, Hkv: c.Hkv, S: c.S, D: c.D,
    pairs: c.pairs, fwdFlops: c.fwdFlops, bwdFlops: c.bwdFlops, fwdBwdFlops: c.fwdBwdFlops,
    ...(c.gradFor !== undefined ? { gradFor: c.gradFor } : {}), ...(c.baseId ? { baseId: c.baseId } : {}),
  };
  const own = [];
  let bm;
  try {
    const mk = (H) => L.Tensor.randn([c.B, H, c.S, c.D], 'bf16', { device });
    const q = mk(c.Hq), k = mk(c.Hkv), v = mk(c.Hkv), dOut = mk(c.Hq);
    own.push(q, k, v, dOut);
    const enableGQA = c.Hq !== c.Hkv;
    let forward, backward, attentionSpec;
    if (c.op === 'sdpa') {
      const o = { isCausal: !!c.causal, ...(enableGQA ? { enableGQA } : {}) };
      forward = () => L.scaledDotProductAttention(q, k, v, { ...o, returnLse: true });
      backward = (out, lse) => L.scaledDotProductAttentionBackward(q, k, v, out, lse, dOut, o);
      attentionSpec = { impl: 'sdpa', isCausal: !!c.causal };
    } else {
      const s = flexSetup(L, c, device, own);
      bm = await L.createBlockMask(s.mask, c.pattern === 'doc' ? c.B : 1, 1, c.S, c.S, { device });
      const o = { blockMask: bm, ...(s.scoreMod ? { scoreMod: s.scoreMod } : {}), ...(enableGQA ? { enableGQA } : {}) };
      forward = () => L.flexAttention(q, k, v, { ...o, returnLse: true });
      backward = (out, lse) => L.flexAttentionBackward(q, k, v, out, lse, dOut, { ...o, ...(s.gradFor.length ? { gradFor: s.gradFor } : {}) });
      if (c.pattern === 'causal') attentionSpec = { impl: 'flex', isCausal: true };
    }
    const measure = async (name, op, flops) => {
      try {
        const t = await timeOp(L, device, op, opts);
        row[name] = { ...t, tflops: flops / (t.ms * 1e-3) / 1e12 };
      } catch (e) {
        row[name] = { error: firstLine(e) };
      }
    };
    let saved;
    try {
      saved = await forward();
      own.push(saved.out, saved.lse);
    } catch (e) {
      row.error = `forward: ${firstLine(e)}`;
      return row;
    }
    await measure('bwd', async () => disposable(await backward(saved.out, saved.lse)), c.bwdFlops);
    await measure('fwdBwd', async () => {
      const f = await forward();
      const p = backward(f.out, f.lse);
      f.out.dispose(); f.lse.dispose(); // the backward call holds them from the moment it is made
      return disposable(await p);
    }, c.fwdBwdFlops);
    if (c.attentionImpl && attentionSpec) {
      await measure('attentionFwdBwd', async () => {
        const r = await L.attention(q, k, v, { ...attentionSpec, requiresGrad: true });
        const p = r.backward(dOut);
        r.out.dispose();
        try { return disposable(await p); } catch (e) { r.release(); throw e; } // a failed backward keeps the saved tensors
      }, c.fwdBwdFlops);
    }
    if (!row.bwd.error) {
      try {
        const a = await backward(saved.out, saved.lse), b = await backward(saved.out, saved.lse);
        try { row.deterministic = await sameBits(a, b); } finally { disposable(a).dispose(); disposable(b).dispose(); }
      } catch (e) {
        row.deterministic = { error: firstLine(e) };
      }
    }
    row.error = row.bwd.error ?? row.fwdBwd.error;
    if (!row.error) delete row.error;
  } finally {
    bm?.dispose();
    for (const t of own) t.dispose();
  }
  return row;
}

/** One printed line per backward row. */
export function formatBackwardRow(r) {
  const m = (x) => (!x ? '' : x.error ? 'ERROR' : `${x.ms.toFixed(4)} ms ${x.tflops.toFixed(1).padStart(6)} TFLOPs`);
  const det = r.deterministic && !r.deterministic.error
    ? ` det dq=${r.deterministic.dq}${r.deterministic.dCaptured?.length ? ` dCaptured=${r.deterministic.dCaptured.join(',')}` : ''}` : '';
  const err = r.error ? `  ${r.error}` : '';
  return `${r.id.padEnd(50)} bwd ${m(r.bwd).padStart(26)}  fwd+bwd ${m(r.fwdBwd).padStart(26)}${det}${err}`;
}
