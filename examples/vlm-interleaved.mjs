// Interleaved image-text sequence (VLM): text is causal, the tokens of each
// image see each other bidirectionally. Then a mixture-of-transformers style
// mask written with maskMod over captured per-token modality ids: the escape
// hatch for any per-modality rule. Both run on sdpa and flex.
// Run: node examples/vlm-interleaved.mjs
import { Tensor, attention, createBlockMask, imageBlocks, maskMod } from 'flexattn';
import { device, onGpu, timed, checksum, maxDiff, shape } from './_common.mjs';

const [B, H, D] = [1, 8, 64];
const u = onGpu ? 8 : 1; // scale the layout with the sequence length
const S = 640 * u;
const imageSpans = [{ start: 32 * u, length: 256 * u }, { start: 352 * u, length: 192 * u }];
const q = Tensor.randn([B, H, S, D], 'bf16', { device, seed: 1 });
const k = Tensor.randn([B, H, S, D], 'bf16', { device, seed: 2 });
const v = Tensor.randn([B, H, S, D], 'bf16', { device, seed: 3 });
console.log(`interleaved image/text: q ${shape(q)} bf16 on ${device}, images at ${JSON.stringify(imageSpans)}`);

const outs = {};
for (const impl of ['sdpa', 'flex']) {
  const [out, ms] = await timed(() => attention(q, k, v, { impl, imageSpans }));
  console.log(`  imageSpans, ${impl}: ${ms.toFixed(1)} ms; ${await checksum(out)}`);
  outs[impl] = out;
}
console.log(`  max |sdpa - flex| = ${(await maxDiff(outs.sdpa, outs.flex)).toExponential(2)}`);
console.log((await createBlockMask(imageBlocks([{ start: 16, length: 64 }, { start: 120, length: 40 }]), 1, 1, 256, 256,
  { blockSize: 16, device: 'cpu' })).toString());

// Mixture of transformers: 0 = text, 1 = image, 2 = speech. Text and images follow the
// VLM rule above; speech tokens attend causally to speech only; nobody else sees speech.
const modality = new Int32Array(S);
for (const s of imageSpans) modality.fill(1, s.start, s.start + s.length);
modality.fill(2, S - 64 * u, S);
const ids = Tensor.fromHost(modality, [S], 'i32', { device });
const imageId = Tensor.fromHost(Int32Array.from(modality, (m, i) => (m === 1 ? (i < imageSpans[1].start ? 0 : 1) : -1)), [S], 'i32', { device });
const mot = maskMod(({ q: i, kv: j }) => {
  const mq = ids.at(i), mk = ids.at(j);
  const sameImage = imageId.at(i).eq(imageId.at(j)).and(imageId.at(i).ge(0));
  const textOrImage = mq.ne(2).and(mk.ne(2)).and(j.le(i).or(sameImage));
  const speech = mq.eq(2).and(mk.eq(2)).and(j.le(i));
  return textOrImage.or(speech);
});
for (const impl of ['sdpa', 'flex']) {
  const [out, ms] = await timed(() => attention(q, k, v, { impl, maskMod: mot }));
  console.log(`  per-modality maskMod, ${impl}: ${ms.toFixed(1)} ms; ${await checksum(out)}`);
}
