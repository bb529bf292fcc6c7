// A Gemma-2-style attention layer: grouped-query attention, head dim 256,
// scale query_pre_attn_scalar^-0.5, attention logits soft-capped at 50, and
// alternating global (causal) / local (sliding window) layers. Soft-capping is
// a score mod: only flex can apply it, so impl 'sdpa' refuses the spec.
// Run: node examples/gemma2-softcap.mjs
import { Tensor, attention, explainAttention } from 'flexattn';
import { device, onGpu, timed, checksum, shape } from './_common.mjs';

const [B, Hq, Hkv, D] = [1, 8, 4, 256];
const S = onGpu ? 8192 : 512;
const window = onGpu ? 4096 : 128;
const scale = 256 ** -0.5; // query_pre_attn_scalar = 256 (Gemma 2 9B)
const q = Tensor.randn([B, Hq, S, D], 'bf16', { device, seed: 1 });
const k = Tensor.randn([B, Hkv, S, D], 'bf16', { device, seed: 2 });
const v = Tensor.randn([B, Hkv, S, D], 'bf16', { device, seed: 3 });
console.log(`gemma-2 style layer: q ${shape(q)}, k/v ${shape(k)} bf16 on ${device}, softcap 50, scale ${scale}`);

const layers = [
  { name: 'global', spec: { isCausal: true } },
  { name: 'local', spec: { isCausal: true, slidingWindow: window } },
];
for (const { name, spec } of layers) {
  const full = { ...spec, impl: 'auto', softcap: 50, scale, enableGQA: true };
  console.log(`  ${name}: ${explainAttention(full).reason}`);
  const [out, ms] = await timed(() => attention(q, k, v, full));
  const [, again] = await timed(() => attention(q, k, v, full));
  console.log(`  ${name}: ${ms.toFixed(1)} ms (first, compiles/builds), ${again.toFixed(1)} ms (again); ${await checksum(out)}`);
}

try {
  await attention(q, k, v, { impl: 'sdpa', isCausal: true, softcap: 50, enableGQA: true });
} catch (e) {
  console.log(`  impl 'sdpa' refuses it: ${e.name}: ${e.message}`);
}
