// Child process of test/gpu/jit-tiers.test.ts (disk cache across processes):
// one flex call on the GPU with a score mod of constant argv[2].unique, checked
// against the CPU backend, then what the JIT used for it. Runs the compiled
// package (dist/lib: `npm run build:ts`), with the environment it was given
// (FLEXATTN_CACHE_DIR, FLEXATTN_CACHE_MAX_MB).
import { Tensor, causal, createBlockMask, flexAttention, jitIdle, jitStatus, scoreMod } from '../../dist/lib/index.js';

const { unique } = JSON.parse(process.argv[2]);
const warnings = [];
process.on('warning', (w) => warnings.push(w.code ?? w.name));

const S = 333, D = 64, gpu = { device: 'cuda:0' };
const out = (r) => (r instanceof Tensor ? r : r.out);
const q = Tensor.randn([1, 2, S, D], 'bf16', gpu), k = Tensor.randn([1, 2, S, D], 'bf16', gpu), v = Tensor.randn([1, 2, S, D], 'bf16', gpu);
const sm = scoreMod(({ score }) => score.mul(unique).tanh().mul(20));
const got = out(await flexAttention(q, k, v, { blockMask: await createBlockMask(causal(), 1, 1, S, S, gpu), scoreMod: sm }));
const [qc, kc, vc] = await Promise.all([q.toDevice('cpu'), k.toDevice('cpu'), v.toDevice('cpu')]);
const want = out(await flexAttention(qc, kc, vc, { blockMask: await createBlockMask(causal(), 1, 1, S, S, { device: 'cpu' }), scoreMod: sm }));
const a = await got.toFloat32(), b = await want.toFloat32();
let num = 0, den = 0;
for (let i = 0; i < b.length; i++) { num += (a[i] - b[i]) ** 2; den += b[i] ** 2; }
const status = (await jitStatus()).filter((s) => s.kernel.startsWith('flexattn_flex_')).at(-1);
await jitIdle();
await new Promise((r) => setImmediate(r)); // warnings are emitted on a later tick
process.stdout.write(JSON.stringify({ relError: Math.sqrt(num) / Math.sqrt(den), status, warnings }));
