// Helpers shared by the examples: device choice, timing, a checksum.
import { cudaAvailable, synchronize } from 'flexattn';

/** 'cuda:0' when a GPU is usable, else 'cpu' (the reference backend). */
export const device = cudaAvailable() ? 'cuda:0' : 'cpu';
export const onGpu = device !== 'cpu';

/** Runs `fn`, waits for the device, returns [result, milliseconds]. */
export async function timed(fn) {
  const t0 = performance.now();
  const r = await fn();
  await synchronize(device);
  return [r, performance.now() - t0];
}

/** Sum and mean |x| of a tensor's elements (to compare runs at a glance). */
export async function checksum(t) {
  const x = await t.toFloat32();
  let sum = 0, abs = 0;
  for (const v of x) { sum += v; abs += Math.abs(v); }
  return `sum=${sum.toFixed(3)} mean|x|=${(abs / x.length).toFixed(5)}`;
}

/** max |a - b| over two tensors of the same shape. */
export async function maxDiff(a, b) {
  const x = await a.toFloat32(), y = await b.toFloat32();
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - y[i]));
  return m;
}

export const shape = (t) => `[${t.shape.join(', ')}]`;
