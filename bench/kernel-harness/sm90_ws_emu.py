#!/usr/bin/env python3
"""Dev-machine check (numpy, no GPU) of the warp-specialised kernel's algorithm as written (native/kernels/sm90_ws_*.cuh): the tile scheduler is a bijection,
kv tile counts, the masks (tails, causal, per-warpgroup need_mask) and the consumer's order of operations
(S_n issued, O rescaled by alpha_{n-1}, P_{n-1}V_{n-1}, softmax of S_n; tail P·V; LSE) match exact attention.
Mirror of the kernel: keep in step with native/kernels/sm90_ws_*.cuh.  usage: python3 sm90_ws_emu.py"""
import numpy as np, math
BM = 128
def sched(linear, nM, BH, G, causal):
    g0 = (linear // (G * nM)) * G; Gg = min(G, BH - g0); r = linear - g0 * nM
    mi = r // Gg; bh = g0 + (r - mi * Gg)
    return (nM - 1 - mi if causal else mi), bh
for nM in (1, 3, 8, 64):
    for BH in (1, 5, 64):
        for G in (1, 2, 3, 16, 64):
            for c in (False, True):
                seen = {sched(l, nM, BH, G, c) for l in range(nM * BH)}
                assert seen == {(m, bh) for m in range(nM) for bh in range(BH)}, (nM, BH, G)
def attn(q, k, v, scale, causal):
    Sq, Skv = q.shape[0], k.shape[0]
    s = q @ k.T * scale
    if causal: s = np.where(np.arange(Skv)[None] <= np.arange(Sq)[:, None], s, -np.inf)
    m = s.max(1, keepdims=True); p = np.exp(s - m); l = p.sum(1, keepdims=True)
    return p @ v / l, (m + np.log(l))[:, 0]
def emu(q, k, v, scale, causal):
    Sq, D = q.shape; Skv = k.shape[0]
    nM = (Sq + BM - 1) // BM
    O = np.full((Sq, D), np.nan); L = np.full(Sq, np.nan)
    l2e = 1.4426950408889634; sl2 = scale * l2e
    premul = not (sl2 > 0); dom = 1.0 if premul else sl2
    for mb in range(nM):
        kv_end = min(Skv, (mb + 1) * BM) if causal else Skv
        n_tiles = (kv_end + BN - 1) // BN
        for cw in range(2):
            r0 = mb * BM + cw * 64
            rows = np.arange(r0, r0 + 64)
            Q = np.zeros((64, D)); ok = rows < Sq; Q[ok] = q[rows[ok]]
            def tile(n):
                K = np.zeros((BN, D)); V = np.zeros((BN, D)); kv = np.arange(n * BN, n * BN + BN); okk = kv < Skv
                K[okk] = k[kv[okk]]; V[okk] = v[kv[okk]]
                return K, V, kv
            def S_masked(n):
                K, V, kv = tile(n); s = Q @ K.T
                if premul: s = s * sl2
                need = n * BN + BN > Skv or (causal and n * BN + BN - 1 > r0)
                if need:
                    keep = kv[None] < Skv
                    if causal: keep = keep & (kv[None] <= rows[:, None])
                    s = np.where(keep, s, -np.inf)
                return s
            o = np.zeros((64, D)); mx = np.full(64, -np.inf); sm = np.zeros(64)
            def softmax(s):
                nonlocal mx, sm
                m2 = np.maximum(mx, s.max(1)); mu = np.where(m2 == -np.inf, 0, m2)
                alpha = np.exp2((mx - mu) * dom); mx = m2
                p = np.exp2(s * dom - (mu * dom)[:, None]); sm = sm * alpha + p.sum(1)
                return p, alpha
            p, alpha = softmax(S_masked(0))
            for n in range(1, n_tiles):
                s = S_masked(n)
                o *= alpha[:, None]
                o += p @ tile(n - 1)[1]
                p, alpha = softmax(s)
            o *= alpha[:, None]; o += p @ tile(n_tiles - 1)[1]
            for i, r in enumerate(rows):
                if r < Sq:
                    O[r] = o[i] / sm[i]; L[r] = (mx[i] * dom + np.log2(sm[i])) * math.log(2)
    return O, L
rng = np.random.default_rng(0)
for BN in (128, 176):
  for (Sq, Skv) in ((1, 1), (77, 77), (1531, 1531), (300, 129), (77, 1000), (1000, 77), (1, 333), (513, 700)):
    for causal in (False, True):
        for scale in (1 / math.sqrt(64), 0.3, -0.05):
            q, k, v = (rng.standard_normal((S, 64)) for S in (Sq, Skv, Skv))
            O, L = emu(q, k, v, scale, causal); Ro, Rl = attn(q, k, v, scale, causal)
            e = np.linalg.norm(O - Ro) / np.linalg.norm(Ro); le = np.abs(L - Rl).max()
            assert e < 1e-9 and le < 1e-9 and not np.isnan(O).any(), (BN, Sq, Skv, causal, scale, e, le)
print("emulation OK")
