// Run by test/launch-path.test.ts as `node --require bench/host-overhead/preload.cjs test/fake-addon/launch-child.mjs`:
// the GPU launch path on the fake addon (no GPU), printing what reached the kernel launches as JSON.
import * as L from '../../dist/lib/index.js';

const fake = globalThis.__fakeAddon;
const dev = 'cuda:0';
const mk = (s) => L.Tensor.randn([1, 2, s, 64], 'bf16', { device: dev });
const q = mk(77), k = mk(77), v = mk(77);
const report = {};
const ptrOf = (t) => t.buffer().ptr;
const has = (bytes, p) => {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let o = 0; o + 8 <= bytes.length; o += 8) if (dv.getBigUint64(o, true) === p) return true;
  return false;
};

async function step(name, run, check) {
  const before = fake.__launchLog().length;
  const r = await run();
  const launched = fake.__launchLog().slice(before);
  report[name] = { launches: launched.length, kernels: launched.map((l) => l.kernel), ...check(launched) };
  for (const t of [r.out ?? r, r.lse].filter(Boolean)) t.dispose();
}

// SDPA with a dense mask: the launch must read the mask (a flex kernel whose mod args hold its address).
const mask = L.Tensor.fromHost(new Uint8Array(77 * 77).fill(1), [77, 77], 'bool', { device: dev });
await step('sdpaMask', () => L.scaledDotProductAttention(q, k, v, { attnMask: mask }),
  (ls) => ({ readsMask: ls.length === 1 && has(ls[0].params, ptrOf(mask)) }));
await step('sdpaCausal', () => L.scaledDotProductAttention(q, k, v, { isCausal: true }), () => ({}));
const slopes = L.Tensor.fromHost(new Float32Array([0.5, 0.25]), [2], 'f32', { device: dev });
const bias = L.alibi(slopes);
const bm = await L.createBlockMask(L.causal(), 1, 1, 77, 77, { device: dev });
for (let i = 0; i < 3; i++) {
  // The first call builds the kernel and schedules; later ones take the synchronous path: both must carry the mod's tensor.
  await step(`flexAlibi${i}`, () => L.flexAttention(q, k, v, { scoreMod: bias, blockMask: bm, returnLse: true }),
    (ls) => ({ readsSlopes: ls.length === 1 && has(ls[0].params, ptrOf(slopes)) }));
}
console.log(JSON.stringify(report));
