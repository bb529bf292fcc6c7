// The sanitizer workload: one small call of every kernel family and variant
// (sm90 and sm80; dense, causal, block-sparse with full and partial blocks, the
// segmented grid of document masks, LSE, odd lengths 1/77/1531, GQA, cross-
// attention, bf16/f16, head dims 64/128 and sm80-only ones, the GPU block-mask
// classifier, tensor copy kernels), each checked against a reference so a run
// under compute-sanitizer also proves the results right. Sizes are small: racecheck
// and initcheck run kernels orders of magnitude slower.
//
//   node scripts/reliability/workload.mjs --out FILE [--cases REGEX] [--label NAME] [--size full|small|tiny] [--device cuda|cpu]
//
// On a GPU the reference is the CPU backend; with --device cpu (a local run) the
// CPU backend is checked against the float64 JavaScript reference instead.
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { compare, compareLse, describeError, environment, load, phaseArgs, writeJson } from './common.mjs';
import { hostFns, referenceAttention } from './reference.mjs';

/**
 * Lengths of the cases at each --size: `full` on a GPU; `small` for the slow
 * sanitizer tools (racecheck, initcheck: same kernels and code paths, several
 * blocks and ragged tails, less work); `tiny` for the float64 JS check of a local
 * CPU run. 1 and 77 stay at every size.
 */
const SIZES = {
  full: {},
  small: { 1531: 389, 1000: 263, 777: 201, 333: 131 },
  tiny: { 1531: 131, 1000: 113, 777: 97, 333: 65, 150: 50, 170: 41, 130: 37 },
};
export const SIZE_NAMES = Object.keys(SIZES);

/**
 * Every case; `families` is the list of kernel families the case runs with
 * (filtered by what the device can run).
 */
export function caseList(fa, { hopper, size = 'full' }) {
  const L = (n) => SIZES[size][n] ?? n;
  const S1531 = L(1531), S777 = L(777);
  // Windows, prefixes and document offsets shrink with the lengths.
  const sc = (n) => Math.max(1, Math.round((n * S1531) / 1531));
  const both = hopper ? ['sm90', 'sm80'] : ['sm80'];
  const sm80 = ['sm80'];
  const docIds = (ctx, B, S, offsets) => {
    const ids = new Int32Array(B * S);
    for (let b = 0; b < B; b++) ids.set(fa.docIdsFromOffsets(offsets(b).filter((o) => o < S), S), b * S);
    return ctx.hold(fa.Tensor.fromHost(ids, B === 1 ? [S] : [B, S], 'i32', { device: ctx.device }));
  };
  // Documents of 1, 63, 64 and 65 tokens and ragged ones: tiles that restart at every start.
  const docOffsets = (b) => (b === 0 ? [0, 1, 64, 128, 193, 250, 517, 600, 1000, 1300] : [0, 333, 334, 400, 1100]).map((o) => Math.floor((o * S1531) / 1531));
  const slopes = (ctx, H) => ctx.hold(fa.Tensor.fromHost(fa.alibiSlopes(H), [H], 'f32', { device: ctx.device }));
  return [
    // ---- dense (scaledDotProductAttention: precompiled / dense kernels)
    { name: 'sdpa dense S=77 D=64 bf16', families: both, op: 'sdpa', B: 1, Hq: 2, Hkv: 2, Sq: 77, Skv: 77, D: 64, dtype: 'bf16' },
    { name: `sdpa causal S=${S1531} D=128 f16 [B,S,H,D] strides`, families: both, op: 'sdpa', B: 1, Hq: 2, Hkv: 2, Sq: S1531, Skv: S1531, D: 128, dtype: 'f16', isCausal: true, layout: 'bshd' },
    { name: `sdpa decode Sq=1 Skv=${S1531} GQA 8/2 D=128 bf16`, families: both, op: 'sdpa', B: 2, Hq: 8, Hkv: 2, Sq: 1, Skv: S1531, D: 128, dtype: 'bf16' },
    { name: `sdpa cross causal Sq=${S1531} Skv=77 GQA 4/1 D=64 bf16`, families: both, op: 'sdpa', B: 1, Hq: 4, Hkv: 1, Sq: S1531, Skv: 77, D: 64, dtype: 'bf16', isCausal: true },
    {
      name: `sdpa dense bool mask (broadcast [B,1,1,Skv]) Sq=${L(150)} Skv=${L(170)}`, families: both, op: 'sdpa', B: 2, Hq: 4, Hkv: 2, Sq: L(150), Skv: L(170), D: 64, dtype: 'bf16',
      attnMask: (ctx, c) => {
        const bits = Uint8Array.from({ length: c.B * c.Skv }, (_, i) => ((i * 7919) % 5 === 0 ? 0 : 1));
        return { tensor: ctx.hold(fa.Tensor.fromHost(bits, [c.B, 1, 1, c.Skv], 'bool', { device: ctx.device })), keep: (b, h, q, kv) => bits[b * c.Skv + kv] === 1 };
      },
    },
    { name: `sdpa causal D=96 f16 S=${S777}`, families: sm80, op: 'sdpa', B: 1, Hq: 2, Hkv: 1, Sq: S777, Skv: S777, D: 96, dtype: 'f16', isCausal: true },
    { name: 'sdpa dense D=32 bf16 S=77', families: sm80, op: 'sdpa', B: 1, Hq: 2, Hkv: 2, Sq: 77, Skv: 77, D: 32, dtype: 'bf16' },
    // ---- flex, no mask (dense flex path) and score mods
    { name: `flex no mask S=${S1531} D=128 bf16`, families: both, op: 'flex', B: 1, Hq: 2, Hkv: 2, Sq: S1531, Skv: S1531, D: 128, dtype: 'bf16' },
    { name: `flex softcap(30), no mask, cross Sq=77 Skv=${S1531} GQA 4/2 D=128`, families: both, op: 'flex', B: 1, Hq: 4, Hkv: 2, Sq: 77, Skv: S1531, D: 128, dtype: 'bf16', score: () => fa.softcap(30) },
    { name: `flex ALiBi Sq=1 Skv=${S1531} GQA 8/1 D=64 f16`, families: both, op: 'flex', B: 1, Hq: 8, Hkv: 1, Sq: 1, Skv: S1531, D: 64, dtype: 'f16', score: (ctx) => fa.alibi(slopes(ctx, 8)) },
    // ---- flex, block-sparse (full and partial blocks)
    { name: `flex causal (analytic) S=${S1531} GQA 4/2 D=128 bf16`, families: both, op: 'flex', B: 2, Hq: 4, Hkv: 2, Sq: S1531, Skv: S1531, D: 128, dtype: 'bf16', mask: () => fa.causal() },
    { name: `flex causal+sliding(${sc(300)}) S=${S1531} D=64 f16`, families: both, op: 'flex', B: 1, Hq: 2, Hkv: 1, Sq: S1531, Skv: S1531, D: 64, dtype: 'f16', mask: () => fa.andMasks(fa.causal(), fa.slidingWindow(sc(300))) },
    { name: `flex causal+softcap(30) S=${S1531} D=128 bf16`, families: both, op: 'flex', B: 1, Hq: 2, Hkv: 2, Sq: S1531, Skv: S1531, D: 128, dtype: 'bf16', mask: () => fa.causal(), score: () => fa.softcap(30) },
    { name: 'flex prefixLM(30)+ALiBi S=77 D=64 f16', families: both, op: 'flex', B: 1, Hq: 4, Hkv: 4, Sq: 77, Skv: 77, D: 64, dtype: 'f16', mask: () => fa.prefixLM(30), score: (ctx) => fa.alibi(slopes(ctx, 4)) },
    {
      name: `flex sliding(${sc(200)})+relativeBias (captured bf16 table) S=${S777} D=128`, families: both, op: 'flex', B: 1, Hq: 2, Hkv: 2, Sq: S777, Skv: S777, D: 128, dtype: 'bf16',
      mask: () => fa.slidingWindow(sc(200)), score: (ctx) => fa.relativeBias(ctx.hold(fa.Tensor.randn([2, 401], 'bf16', { device: ctx.device, seed: 99 }))),
    },
    { name: `flex prefixLM(100) cross Sq=77 Skv=${S1531} D=64 bf16`, families: both, op: 'flex', B: 1, Hq: 2, Hkv: 2, Sq: 77, Skv: S1531, D: 64, dtype: 'bf16', mask: () => fa.prefixLM(100) },
    {
      name: `flex fully masked rows (q >= ${Math.floor(S777 * 0.64)}) LSE -inf S=${S777} D=64`, families: both, op: 'flex', B: 1, Hq: 2, Hkv: 2, Sq: S777, Skv: S777, D: 64, dtype: 'bf16',
      mask: () => fa.maskMod(({ q, kv }) => q.lt(Math.floor(S777 * 0.64)).and(kv.le(q))),
    },
    // ---- document masks: GPU-classified; on Hopper at D=128 the segmented grid
    {
      name: `flex document (segmented grid on sm90 d128) B=2 S=${S1531} GQA 4/2 D=128 bf16`, families: both, op: 'flex', B: 2, Hq: 4, Hkv: 2, Sq: S1531, Skv: S1531, D: 128, dtype: 'bf16',
      mask: (ctx, c) => fa.documentMask(docIds(ctx, c.B, c.Sq, docOffsets)),
    },
    {
      name: `flex document non-causal, shared ids, block 64, S=${S777} D=128 f16`, families: both, op: 'flex', B: 1, Hq: 2, Hkv: 2, Sq: S777, Skv: S777, D: 128, dtype: 'f16', blockSize: 64,
      mask: (ctx, c) => fa.documentMask(docIds(ctx, 1, c.Sq, () => docOffsets(1)), { causal: false }),
    },
    {
      name: `flex document+softcap D=64 S=${S777} (uniform grid)`, families: both, op: 'flex', B: 2, Hq: 2, Hkv: 1, Sq: S777, Skv: S777, D: 64, dtype: 'bf16',
      mask: (ctx, c) => fa.documentMask(docIds(ctx, c.B, c.Sq, docOffsets)), score: () => fa.softcap(20),
    },
    {
      name: `flex custom mask |q-kv| <= param w (GPU classifier, every tile) block 64 S=${S1531} D=128`, families: both, op: 'flex', B: 1, Hq: 2, Hkv: 2, Sq: S1531, Skv: S1531, D: 128, dtype: 'bf16',
      blockSize: 64, params: { w: sc(200) }, prefilter: false,
      mask: () => fa.maskMod(({ q, kv }) => q.sub(kv).abs().le(fa.param('w', 'int'))),
    },
    // ---- sm80-only head dims and tile shapes
    { name: `flex document D=96 bf16 S=${S777}`, families: sm80, op: 'flex', B: 2, Hq: 2, Hkv: 2, Sq: S777, Skv: S777, D: 96, dtype: 'bf16', mask: (ctx, c) => fa.documentMask(docIds(ctx, c.B, c.Sq, docOffsets)) },
    { name: `flex prefixLM(${sc(64)}) D=256 f16 Sq=${L(130)} Skv=${L(1000)}`, families: sm80, op: 'flex', B: 1, Hq: 2, Hkv: 2, Sq: L(130), Skv: L(1000), D: 256, dtype: 'f16', mask: () => fa.prefixLM(sc(64)) },
    { name: `flex causal+softcap D=32 bf16 S=${L(333)}`, families: sm80, op: 'flex', B: 1, Hq: 2, Hkv: 1, Sq: L(333), Skv: L(333), D: 32, dtype: 'bf16', mask: () => fa.causal(), score: () => fa.softcap(20) },
    { name: `flex causal+softcap tile BLOCK_M=64 BLOCK_N=64 D=64 S=${L(333)}`, families: sm80, op: 'flex', B: 1, Hq: 2, Hkv: 2, Sq: L(333), Skv: L(333), D: 64, dtype: 'bf16', mask: () => fa.causal(), score: () => fa.softcap(10), kernelOptions: { BLOCK_M: 64, BLOCK_N: 64 } },
    { name: `flex causal tile BLOCK_M=128 BLOCK_N=32 numStages=3 D=128 S=${L(333)}`, families: sm80, op: 'flex', B: 1, Hq: 2, Hkv: 2, Sq: L(333), Skv: L(333), D: 128, dtype: 'f16', mask: () => fa.causal(), kernelOptions: { BLOCK_M: 128, BLOCK_N: 32, numStages: 3 } },
  ];
}

function inputs(fa, c, device, seed) {
  const mk = (H, S, s) => (c.layout === 'bshd'
    ? fa.Tensor.randn([c.B, S, H, c.D], c.dtype, { device, seed: s }).transpose(1, 2)
    : fa.Tensor.randn([c.B, H, S, c.D], c.dtype, { device, seed: s }));
  return { q: mk(c.Hq, c.Sq, seed), k: mk(c.Hkv, c.Skv, seed + 1), v: mk(c.Hkv, c.Skv, seed + 2) };
}

/** Calls the op with the family forced: kernelOptions for flex, the process-wide switch for sdpa (read when the call starts). */
function callOp(fa, c, family, q, k, v, o) {
  if (c.op === 'sdpa') {
    const prev = process.env.FLEXATTN_KERNEL_FAMILY;
    if (family === 'sm80') process.env.FLEXATTN_KERNEL_FAMILY = 'sm80';
    try {
      return fa.scaledDotProductAttention(q, k, v, { isCausal: !!c.isCausal, enableGQA: true, returnLse: true, ...(o.attnMask ? { attnMask: o.attnMask } : {}), ...(o.backend ? { backend: o.backend } : {}) });
    } finally {
      if (prev === undefined) delete process.env.FLEXATTN_KERNEL_FAMILY; else process.env.FLEXATTN_KERNEL_FAMILY = prev;
    }
  }
  const kernelOptions = o.backend ? undefined : { ...(family ? { family } : {}), ...c.kernelOptions };
  return fa.flexAttention(q, k, v, {
    enableGQA: true, returnLse: true, ...(o.blockMask ? { blockMask: o.blockMask } : {}), ...(o.scoreMod ? { scoreMod: o.scoreMod } : {}),
    ...(c.params ? { params: c.params } : {}), ...(kernelOptions ? { kernelOptions } : {}), ...(o.backend ? { backend: o.backend } : {}),
  });
}

/** Runs one case with one family; returns a JSON-able record (never throws). */
export async function runCase(fa, device, c, family, seed) {
  const t0 = performance.now();
  const held = [];
  const ctx = { device, hold: (t) => { held.push(t); return t; } };
  const rec = { name: c.name, family: family ?? 'auto', dtype: c.dtype, dims: [c.B, c.Hq, c.Hkv, c.Sq, c.Skv, c.D] };
  try {
    const { q, k, v } = inputs(fa, c, device, seed);
    held.push(q, k, v);
    const mask = c.mask?.(ctx, c);
    const scoreMod = c.score?.(ctx, c);
    const am = c.attnMask?.(ctx, c);
    const blockMask = mask
      ? await fa.createBlockMask(mask, c.B, 1, c.Sq, c.Skv, { device, ...(c.params ? { params: c.params } : {}), ...(c.blockSize ? { blockSize: c.blockSize } : {}), ...(c.prefilter === false ? { prefilter: false } : {}) })
      : undefined;
    if (blockMask) { held.push(blockMask); rec.blockMask = blockMask.method ?? ''; }
    const o = { blockMask, scoreMod, attnMask: am?.tensor };
    const got = await callOp(fa, c, device === 'cpu' ? undefined : family, q, k, v, o);
    held.push(got.out, got.lse);
    let want;
    if (device !== 'cpu') {
      const r = await callOp(fa, c, family, q, k, v, { ...o, backend: 'cpu' });
      held.push(r.out, r.lse);
      want = { out: await r.out.toFloat32(), lse: await r.lse.toFloat32() };
    } else {
      const fns = c.op === 'sdpa'
        ? { keep: am ? am.keep : c.isCausal ? (b, h, qi, kv) => kv <= qi : undefined }
        : await hostFns(mask, scoreMod, c.params);
      want = referenceAttention({
        q: await q.toFloat32(), k: await k.toFloat32(), v: await v.toFloat32(),
        B: c.B, Hq: c.Hq, Hkv: c.Hkv, Sq: c.Sq, Skv: c.Skv, D: c.D, scale: 1 / Math.sqrt(c.D), keep: fns.keep, score: fns.score,
      });
    }
    const out = compare(await got.out.toFloat32(), want.out, c.tol ?? 1e-2);
    const lse = compareLse(await got.lse.toFloat32(), want.lse);
    Object.assign(rec, { ok: out.ok && lse.ok, relErr: out.relErr, ...(out.ok ? {} : { reason: out.reason }), ...(lse.ok ? {} : { lseReason: lse.reason }) });
  } catch (e) {
    Object.assign(rec, { ok: false, error: describeError(e) });
  } finally {
    for (const t of held) { try { t?.dispose(); } catch { /* already gone */ } }
  }
  rec.ms = Math.round(performance.now() - t0);
  return rec;
}

/** Tensor copy/fill kernels (randn, zeros, strided cast, dtype conversion) checked on the host. */
async function tensorOps(fa, device) {
  const t0 = performance.now();
  const rec = { name: 'tensor kernels: randn, zeros, strided contiguous(), to(f32)', family: 'n/a' };
  const held = [];
  try {
    const x = fa.Tensor.randn([2, 3, 77, 64], 'bf16', { device, seed: 7 }); held.push(x);
    const hx = await x.toFloat32();
    let mean = 0, sq = 0;
    for (const a of hx) { mean += a; sq += a * a; }
    mean /= hx.length; const std = Math.sqrt(sq / hx.length - mean * mean);
    const y = x.transpose(1, 2).contiguous(); held.push(y);
    const hy = await y.toFloat32();
    let bad = -1;
    for (let b = 0; b < 2 && bad < 0; b++) for (let h = 0; h < 3; h++) for (let s = 0; s < 77; s++) for (let d = 0; d < 64; d++) {
      if (hy[((b * 77 + s) * 3 + h) * 64 + d] !== hx[((b * 3 + h) * 77 + s) * 64 + d]) bad = 1;
    }
    const z = fa.Tensor.zeros([1531], 'f16', { device }); held.push(z);
    const hz = await z.toFloat32();
    const f = x.to('f32'); held.push(f);
    const hf = await f.toFloat32();
    const castOk = hf.every((a, i) => a === hx[i]);
    const ok = Math.abs(mean) < 0.05 && Math.abs(std - 1) < 0.05 && bad < 0 && hz.every((a) => a === 0) && castOk;
    Object.assign(rec, { ok, detail: { mean, std, transposeOk: bad < 0, zerosOk: hz.every((a) => a === 0), castOk } });
  } catch (e) {
    Object.assign(rec, { ok: false, error: describeError(e) });
  } finally {
    for (const t of held) t.dispose();
  }
  rec.ms = Math.round(performance.now() - t0);
  return rec;
}

/** The GPU classifier against the host classifier on masks without an analytic form. */
async function classifierCheck(fa, device) {
  const t0 = performance.now();
  const rec = { name: 'createBlockMask: GPU classification kernel vs host classifier (document, custom)', family: 'n/a' };
  const held = [];
  try {
    const S = 1531;
    const ids = fa.Tensor.fromHost(fa.docIdsFromOffsets([0, 1, 64, 200, 777, 1200], S), [S], 'i32', { device }); held.push(ids);
    const masks = [fa.documentMask(ids), fa.maskMod(({ q, kv }) => q.sub(kv).mod(97).lt(40).and(kv.le(q)))];
    const diffs = [];
    for (const m of masks) for (const blockSize of [64, 128]) for (const prefilter of [true, false]) {
      const g = await fa.createBlockMask(m, 1, 1, S, S, { device, path: 'gpu', blockSize, prefilter });
      const c = await fa.createBlockMask(m, 1, 1, S, S, { device, path: 'cpu', blockSize, prefilter });
      held.push(g, c);
      const a = g.classes(), b = c.classes();
      diffs.push(a.length === b.length ? a.reduce((n, x, i) => n + (x !== b[i] ? 1 : 0), 0) : -1);
    }
    Object.assign(rec, { ok: diffs.every((d) => d === 0), detail: { differingBlocks: diffs } });
  } catch (e) {
    Object.assign(rec, { ok: false, error: describeError(e) });
  } finally {
    for (const t of held) t.dispose();
  }
  rec.ms = Math.round(performance.now() - t0);
  return rec;
}

/** Runs the whole workload (or the cases matching `filter`). */
export async function runWorkload(fa, device, { filter, seed = 1, size = device === 'cpu' ? 'tiny' : 'full', log = () => {} } = {}) {
  const hopper = device !== 'cpu' && fa.deviceInfo().gpus[0]?.computeCapability === '9.0';
  const re = filter ? new RegExp(filter) : null;
  const results = [];
  let s = seed * 1000;
  for (const c of caseList(fa, { hopper, size })) {
    if (re && !re.test(c.name)) continue;
    for (const family of device === 'cpu' ? [undefined] : c.families) {
      const r = await runCase(fa, device, c, family, (s += 3));
      log(`${r.ok ? 'ok  ' : 'FAIL'} ${r.family.padEnd(4)} ${r.name} (${r.ms} ms${r.relErr !== undefined ? `, rel err ${r.relErr.toExponential(2)}` : ''})${r.ok ? '' : ` ${r.reason ?? r.lseReason ?? r.error?.message}`}`);
      results.push(r);
    }
  }
  if (device !== 'cpu') {
    for (const extra of [tensorOps, classifierCheck]) {
      if (re && !re.test(extra.name)) continue;
      const r = await extra(fa, device);
      log(`${r.ok ? 'ok  ' : 'FAIL'} ${r.name} (${r.ms} ms)`);
      results.push(r);
    }
  }
  const kernels = device === 'cpu' ? [] : (await fa.jitStatus()).map((k) => k.kernel).sort();
  if (device !== 'cpu' && !re) {
    // The families must really have run: the sdpa cases pick sm80 through a process-wide
    // switch read when the call starts, and a silent change there would halve the coverage.
    const has = (r) => kernels.some((k) => r.test(k));
    const coverage = {
      sm80Dense: has(/^flexattn_fwd_d\d+_/), sm80Flex: has(/^flexattn_flex_(?!sm90)/),
      ...(hopper ? { sm90Dense: has(/^flexattn_fwd_sm90_/), sm90Flex: has(/^flexattn_flex_sm90_/), segmentedGrid: has(/_seg(_|$)/) } : {}),
    };
    results.push({ name: 'coverage: every family and the segmented grid loaded a kernel', family: 'n/a', ok: Object.values(coverage).every(Boolean), detail: coverage, ms: 0 });
    log(`${results.at(-1).ok ? 'ok  ' : 'FAIL'} coverage ${JSON.stringify(coverage)}`);
  }
  return { cases: results, kernels, hopper };
}

async function main() {
  const a = phaseArgs('workload', { out: { type: 'string' }, cases: { type: 'string' }, label: { type: 'string', default: 'native' }, size: { type: 'string' } },
    'Runs the sanitizer workload once and writes per-case results to --out (JSON).');
  const { fa, device } = await load(a.device);
  const size = a.size ?? (device === 'cpu' ? 'tiny' : 'full');
  if (!SIZE_NAMES.includes(size)) { console.error(`workload: --size must be one of ${SIZE_NAMES.join(', ')}`); process.exit(2); }
  const t0 = performance.now();
  const w = await runWorkload(fa, device, { filter: a.cases, seed: a.seed, size, log: (l) => console.log(l) });
  const failed = w.cases.filter((c) => !c.ok).length;
  const res = {
    label: a.label, size, env: environment(fa, device), seconds: (performance.now() - t0) / 1000,
    passed: w.cases.length - failed, failed, kernels: w.kernels,
    segmentedGridSeen: w.kernels.some((k) => k.includes('_seg')), sm90Seen: w.kernels.some((k) => k.includes('sm90')),
    cases: w.cases,
  };
  if (a.out) writeJson(a.out, res);
  console.log(`workload ${a.label}: ${res.passed} passed, ${failed} failed, ${w.kernels.length} kernels, ${res.seconds.toFixed(1)} s`);
  if (device !== 'cpu') fa.emptyCache();
  process.exitCode = failed === 0 ? 0 : 1;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
