// Packed-document batch: several documents of different lengths share one
// sequence; docIds keep each token inside its own document (causally).
// The same spec runs on both implementations; the result equals running every
// document on its own. Run: node examples/packed-documents.mjs
import { Tensor, attention, attentionCacheStats, createBlockMask, andMasks, causal, documentMask, docIdsFromOffsets } from 'flexattn';
import { device, onGpu, timed, checksum, maxDiff, shape } from './_common.mjs';

const [B, H, D] = [2, onGpu ? 16 : 4, 64];
const S = onGpu ? 8192 : 1024;
// document start offsets per batch element (a training data loader produces these)
const offsets = [[0, S / 4, S / 2 + 7, S - 100], [0, S / 8, S / 2]];
const ids = new Int32Array(B * S);
offsets.forEach((o, b) => ids.set(docIdsFromOffsets(o, S), b * S));
const docIds = Tensor.fromHost(ids, [B, S], 'i32', { device });

const q = Tensor.randn([B, H, S, D], 'bf16', { device, seed: 1 });
const k = Tensor.randn([B, H, S, D], 'bf16', { device, seed: 2 });
const v = Tensor.randn([B, H, S, D], 'bf16', { device, seed: 3 });
console.log(`packed documents: q ${shape(q)} bf16 on ${device}; documents at offsets ${JSON.stringify(offsets)}`);

const outs = {};
for (const impl of ['sdpa', 'flex', 'auto']) {
  const spec = { impl, isCausal: true, docIds, onChoice: (c) => console.log(`  ${impl}: runs ${c.impl} (${c.reason})`) };
  const built = attentionCacheStats().builds;
  const [out, first] = await timed(() => attention(q, k, v, spec));
  const how = attentionCacheStats().builds > built ? 'built the mask' : 'mask from the cache';
  const [, again] = await timed(() => attention(q, k, v, { ...spec, onChoice: undefined })); // mask comes from the cache
  console.log(`  ${impl}: first call ${first.toFixed(1)} ms (${how}), second ${again.toFixed(1)} ms; ${await checksum(out)}`);
  outs[impl] = out;
}
console.log(`  max |sdpa - flex| = ${(await maxDiff(outs.sdpa, outs.flex)).toExponential(2)}`);

// Document 1 of batch 0 on its own gives the same rows as the packed batch.
const [s0, s1] = [offsets[0][1], offsets[0][2]];
const alone = await attention(q.narrow(0, 0, 1).narrow(2, s0, s1 - s0), k.narrow(0, 0, 1).narrow(2, s0, s1 - s0),
  v.narrow(0, 0, 1).narrow(2, s0, s1 - s0), { isCausal: true });
console.log(`  document 1 alone vs packed: max diff ${(await maxDiff(alone, outs.flex.narrow(0, 0, 1).narrow(2, s0, s1 - s0).contiguous())).toExponential(2)}`);

// What flex skips: the block mask of a small case (█ full tile, ░ partial, blank skipped).
const small = 1024;
const smallIds = Tensor.fromHost(docIdsFromOffsets([0, 300, 700, 900], small), [small], 'i32', { device: 'cpu' });
console.log((await createBlockMask(andMasks(causal(), documentMask(smallIds)), 1, 1, small, small, { device: 'cpu' })).toString());
