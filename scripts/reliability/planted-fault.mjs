// A kernel with a planted out-of-bounds write, run under compute-sanitizer memcheck by
// sanitizer.mjs: proof that the tool sees the kernels this package launches (0 errors
// from the workload means something only if this gives errors).
//   node scripts/reliability/planted-fault.mjs wild       write to address 0x10 (outside every allocation)
//   node scripts/reliability/planted-fault.mjs past-end   write one element past a 64-element f32 tensor
//                                                         (inside the caching allocator's pool: memcheck may not see it)
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const ROOT = new URL('../..', import.meta.url).pathname;
const L = await import(pathToFileURL(join(ROOT, 'dist/lib/index.js')).href);
const { native } = await import(pathToFileURL(join(ROOT, 'dist/lib/native.js')).href);
const mode = process.argv[2];
if (mode !== 'wild' && mode !== 'past-end') { console.error('planted-fault: mode wild or past-end'); process.exit(2); }

const source = `struct PlantedFaultParams { float* p; long long i; };
extern "C" __global__ void flexattn_planted_fault(PlantedFaultParams a) {
  if (threadIdx.x == 0 && blockIdx.x == 0) a.p[a.i] = 1.0f;
}
`;
const t = L.Tensor.empty([64], 'f32', { device: 'cuda:0' });
const params = new Uint8Array(16);
const dv = new DataView(params.buffer);
dv.setBigUint64(0, mode === 'wild' ? 0x10n : t.buffer().ptr, true);
dv.setBigInt64(8, mode === 'wild' ? 0n : 64n, true);
try {
  native().jitLaunch(0, source, 'flexattn_planted_fault', [1, 1, 1], [32, 1, 1], 0, params);
  await L.synchronize('cuda:0');
  console.log(`planted-fault ${mode}: launched, no CUDA error reported`);
} catch (e) {
  console.log(`planted-fault ${mode}: ${e?.code ?? ''} ${e?.message ?? e}`);
}
