// Sliding-window attention over a long context (Mistral / Gemma local layers):
// each token sees the previous `window` tokens. Flex visits only the tiles
// near the diagonal; SDPA would need a dense Sq×Skv bool mask.
// Run: node examples/sliding-window.mjs
import { Tensor, attention, createBlockMask, slidingWindow } from 'flexattn';
import { device, onGpu, timed, checksum, maxDiff, shape } from './_common.mjs';

const [B, Hq, Hkv, D] = [1, onGpu ? 32 : 4, onGpu ? 8 : 2, 128];
const S = onGpu ? 32768 : 4096;
const window = onGpu ? 4096 : 256;
const q = Tensor.randn([B, Hq, S, D], 'bf16', { device, seed: 1 });
const k = Tensor.randn([B, Hkv, S, D], 'bf16', { device, seed: 2 });
const v = Tensor.randn([B, Hkv, S, D], 'bf16', { device, seed: 3 });
console.log(`sliding window ${window}: q ${shape(q)}, k/v ${shape(k)} (GQA) bf16 on ${device}`);

const spec = { impl: 'auto', isCausal: true, slidingWindow: window, enableGQA: true };
const [out, first] = await timed(() => attention(q, k, v, { ...spec, onChoice: (c) => console.log(`  ${c.reason}`) }));
const [, again] = await timed(() => attention(q, k, v, spec));
console.log(`  flex: first call ${first.toFixed(1)} ms (builds the block mask), then ${again.toFixed(1)} ms; ${await checksum(out)}`);

const bm = await createBlockMask(slidingWindow(window), 1, 1, S, S, { device: 'cpu' });
const blockBytes = Object.values(bm.host).reduce((s, a) => s + a.byteLength, 0);
console.log(`  block mask: ${bm.numQBlocks}×${bm.numKvBlocks} tiles, sparsity ${bm.sparsity().toFixed(1)}%, ${(blockBytes / 1024).toFixed(0)} KiB of indices;` +
  ` a dense bool mask would be ${(S * S / 2 ** 20).toFixed(0)} MiB`);

// On a prefix short enough for a dense mask, sdpa and flex agree.
const n = onGpu ? 4096 : 1024;
const [qs, ks, vs] = [q, k, v].map((t) => t.narrow(2, 0, n));
const [a, ta] = await timed(() => attention(qs, ks, vs, { ...spec, impl: 'sdpa' }));
const [b, tb] = await timed(() => attention(qs, ks, vs, { ...spec, impl: 'flex' }));
console.log(`  first ${n} tokens: sdpa (dense mask) ${ta.toFixed(1)} ms, flex ${tb.toFixed(1)} ms, max |diff| ${(await maxDiff(a, b)).toExponential(2)}`);

console.log((await createBlockMask(slidingWindow(256), 1, 1, 2048, 2048, { device: 'cpu' })).toString());
