#!/usr/bin/env python3
"""Hopper wgmma kernel (flash_fwd_sm90.cuh) vs the mma.sync kernel and PyTorch:
correctness against fp32 references, then dense and flex timings on one card.
usage: python3 run_sm90.py [--phases correct,dense,flex]   (after ./build.sh)"""
import argparse, json, math, os, struct, sys, time
from types import SimpleNamespace
import torch
import torch.nn.functional as F
import run as R
from run import kernel, make_qkv, ref_attention, check, launch, bench, tflops, poisoned, log, pack_mod, DT

RES = R.RESULTS
ALTS = True
ONLY_ALTS = None   # --alts a,b: time only these alternative shapes
CS = ""   # cubin suffix for the correctness phase (--correct-suffix _new checks an A/B twin)


def rotate(xs, k):
    """xs rotated by k: each rep times the A/B variants in a different order (the first one after a
    switch reads high, kernel-notes.md run 8)."""
    k %= len(xs)
    return xs[k:] + xs[:k]


def with_old(key, cub):
    """[(key, cubin)] plus A/B twins build/<cub>{_old,_new}.cubin when built (SUFFIX=... ./build.sh)."""
    out = [(key, cub)]
    for suf in ("_old", "_new"):
        if os.path.exists(os.path.join(R.BUILD, cub + suf + ".cubin")):
            out.append((key + suf, cub + suf))
    return out


def phase_correct():
    log("== sm90 correctness")
    for d in (64, 128):
        for dt in ("bf16", "f16"):
            for causal in (False, True):
                name = f"sm90_d{d}_{dt}" + ("_causal" if causal else "")
                q, kk, v = make_qkv(2, 3, 3, 1000, 1000, d, DT[dt], seed=d + 1)
                ro, rl = ref_attention(q, kk, v, 1 / math.sqrt(d), causal=causal)
                check(f"B2 H3 S1000 d{d} {dt} c={int(causal)}", kernel("sm90" + CS, name), q, kk, v, ro, rl)
    cases = [dict(B=1, Hq=2, Hkv=2, Sq=1, Skv=1), dict(B=1, Hq=2, Hkv=2, Sq=77, Skv=77),
             dict(B=1, Hq=2, Hkv=2, Sq=4097, Skv=4097), dict(B=2, Hq=2, Hkv=2, Sq=77, Skv=1000),
             dict(B=2, Hq=2, Hkv=2, Sq=1000, Skv=77), dict(B=2, Hq=8, Hkv=2, Sq=513, Skv=700),
             dict(B=2, Hq=4, Hkv=2, Sq=1000, Skv=1000, bshd=True), dict(B=1, Hq=2, Hkv=2, Sq=1, Skv=333)]
    for c in cases:
        for causal in (False, True):
            for d in (64, 128):
                bshd = c.get("bshd", False)
                q, kk, v = make_qkv(c["B"], c["Hq"], c["Hkv"], c["Sq"], c["Skv"], d, torch.bfloat16, bshd=bshd, seed=c["Sq"] + 7)
                ro, rl = ref_attention(q, kk, v, 1 / math.sqrt(d), causal=causal)
                name = f"sm90_d{d}_bf16" + ("_causal" if causal else "")
                check(f"B{c['B']} Hq{c['Hq']} Hkv{c['Hkv']} Sq{c['Sq']} Skv{c['Skv']}{' bshd' if bshd else ''} d{d} c={int(causal)}",
                      kernel("sm90" + CS, name), q, kk, v, ro, rl)
    for sc in (0.3, -0.05):
        for causal in (False, True):
            q, kk, v = make_qkv(2, 4, 2, 600, 900, 128, torch.bfloat16, seed=11)
            ro, rl = ref_attention(q, kk, v, sc, causal=causal)
            check(f"scale={sc} gqa2 Sq600 Skv900 d128 c={int(causal)}",
                  kernel("sm90" + CS, "sm90_d128_bf16" + ("_causal" if causal else "")), q, kk, v, ro, rl, scale=sc)
    for d, tags in ((128, ("w1n64s3", "w2n64s2", "w2n128s2", "w1n64s2")), (64, ("w2n128s2", "w2n64s3"))):
        for tag in tags:
            for causal in (False, True):
                q, kk, v = make_qkv(2, 2, 2, 999, 999, d, torch.bfloat16, seed=3)
                ro, rl = ref_attention(q, kk, v, 1 / math.sqrt(d), causal=causal)
                nm = f"sm90_d{d}_bf16" + ("_causal" if causal else "") + "_" + tag
                check(f"{tag} S999 d{d} c={int(causal)}", kernel("sm90" + CS, nm), q, kk, v, ro, rl)
    # flex patterns through the wgmma kernel
    from torch.nn.attention.flex_attention import create_block_mask
    B, S = 2, 2000
    pats, doc, slopes = R.flex_patterns(S, B, doc_seed=1)
    mod = pack_mod(doc=doc, slopes=slopes, softcap=30.0, window=1024)
    for pname, (cub, mm, rmask, sfn, rsfn, bdep) in pats.items():
        bm = create_block_mask(mm, B if bdep else None, None, S, S, device="cuda")
        for suf, d, dt, hq, hkv in (("d128_bf16_sm90", 128, torch.bfloat16, 4, 4), ("d128_bf16_sm90", 128, torch.bfloat16, 8, 2),
                                    ("d64_bf16_sm90", 64, torch.bfloat16, 4, 4), ("d128_f16_sm90", 128, torch.float16, 4, 4))[:1 if pname == "holes" else 4]:
            q, kk, v = make_qkv(B, hq, hkv, S, S, d, dt, seed=d + hq)
            tol = 1e-2 if dt == torch.bfloat16 else 2e-3
            if pname == "softcap":
                tol = 1.5e-2 if dt == torch.bfloat16 else 5e-3
            ro, rl = ref_attention(q, kk, v, 1 / math.sqrt(d), mask=rmask, score_fn=rsfn)
            check(f"flex {pname} S{S} Hq{hq} Hkv{hkv} {suf}", kernel(cub + CS, f"flexattn_{cub}_{suf}"), q, kk, v, ro, rl,
                  bm=bm, mod=mod, tol=tol)
    for pname, sq, skv in (("doc", 700, 1500), ("swa1024", 1500, 700), ("alibi", 333, 1999)):
        cub, mm, rmask, sfn, rsfn, bdep = pats[pname]
        bm = create_block_mask(mm, B if bdep else None, None, sq, skv, device="cuda")
        q, kk, v = make_qkv(B, 8, 2, sq, skv, 128, torch.bfloat16, seed=sq)
        ro, rl = ref_attention(q, kk, v, 0.07, mask=rmask, score_fn=rsfn)
        check(f"flex {pname} Sq{sq} Skv{skv} scale0.07 gqa4 sm90", kernel(cub + CS, f"flexattn_{cub}_d128_bf16_sm90"),
              q, kk, v, ro, rl, bm=bm, mod=mod, scale=0.07)


def phase_dense(reps):
    from torch.nn.attention import sdpa_kernel, SDPBackend
    for S, B, causals in ((4096, 4, (False, True)), (512, 32, (False, True)), (1024, 16, (True,)), (16384, 1, (False, True))):
        phase_dense_shape(reps, S, B, causals)


def phase_dense_shape(reps, S, B, causals):
    from torch.nn.attention import sdpa_kernel, SDPBackend
    log(f"== dense timing S={S} B={B} H=16")
    H = 16
    for d in (64, 128):
        q, kk, v = make_qkv(B, H, H, S, S, d, torch.bfloat16, seed=3)
        o, _ = poisoned(q)
        alts = (("w1n64s3", "w2n64s2", "w2n128s2", "w1n64s2") if d == 128 else ("w2n128s2", "w2n64s3", "w1n128s2v3")) if ALTS else ()
        alts = tuple(a for a in alts if ONLY_ALTS is None or a in ONLY_ALTS)
        for causal in causals:
            pairs = S * (S + 1) // 2 if causal else S * S
            c = "_causal" if causal else ""
            row = dict(d=d, S=S, causal=causal)
            names = {"mma": ("dense", f"flexattn_fwd_d{d}_bf16{c}")}
            for key, cub in with_old("sm90", "sm90"):
                names[key] = (cub, f"sm90_d{d}_bf16{c}")
            for a in alts:
                names["sm90_" + a] = ("sm90", f"sm90_d{d}_bf16{c}_{a}")
            for rep in range(reps):
                for key, (cub, nm) in rotate(list(names.items()), rep):
                    kn = kernel(cub, nm)
                    ms = bench(lambda: launch(kn, q, kk, v, o, None))
                    row.setdefault(key, []).append(round(tflops(B, H, d, pairs, ms), 1))
                for bk, bn in ((SDPBackend.FLASH_ATTENTION, "fa2"), (SDPBackend.CUDNN_ATTENTION, "cudnn")):
                    with sdpa_kernel(bk):
                        ms = bench(lambda: F.scaled_dot_product_attention(q, kk, v, is_causal=causal))
                    row.setdefault(bn, []).append(round(tflops(B, H, d, pairs, ms), 1))
            RES["dense"].append(row)
            log("  ", json.dumps(row))
            R.save()


def phase_flex(reps):
    from torch.nn.attention.flex_attention import create_block_mask
    log("== flex timing B=2 H=16 S=8192 D=128")
    B, H, S, D = 2, 16, 8192, 128
    pats, doc, slopes = R.flex_patterns(S, B, doc_seed=2)
    mod = pack_mod(doc=doc, slopes=slopes, softcap=30.0, window=1024)
    q, kk, v = make_qkv(B, H, H, S, S, D, torch.bfloat16, seed=5)
    o, _ = poisoned(q)
    row = dict(pattern="dense-causal")
    for rep in range(reps):
        prod = [("prod", ("prod", "flexattn_fwd_sm90_d128_bf16_causal"))] if os.path.exists(os.path.join(R.BUILD, "prod.cubin")) else []
        alts = [("sm90_" + a, ("sm90", "sm90_d128_bf16_causal_" + a)) for a in ("w1n64s2",) if ALTS and (ONLY_ALTS is None or a in ONLY_ALTS)]
        for key, (cub, nm) in rotate([("mma", ("dense", "flexattn_fwd_d128_bf16_causal"))] + [(k2, (c2, "sm90_d128_bf16_causal")) for k2, c2 in with_old("sm90", "sm90")] + prod + alts, rep):
            kn = kernel(cub, nm)
            ms = bench(lambda: launch(kn, q, kk, v, o, None))
            row.setdefault(key, []).append(round(tflops(B, H, D, S * (S + 1) // 2, ms), 1))
    RES["flex"].append(row)
    log("  ", json.dumps(row))
    for pname, (cub, mm, rmask, sfn, rsfn, bdep) in pats.items():
        if pname == "holes":
            continue
        bm = create_block_mask(mm, B if bdep else None, None, S, S, device="cuda")
        pairs = R.unmasked_pairs(rmask, B, S)
        row = dict(pattern=pname, density=round(pairs / S / S, 4))
        for rep in range(reps):
            for key, c2, suf in rotate([("mma", cub, "d128_bf16")] + [(k2, c2, "d128_bf16_sm90") for k2, c2 in with_old("sm90", cub)], rep):
                kn = kernel(c2, f"flexattn_{cub}_{suf}")
                ms = bench(lambda: launch(kn, q, kk, v, o, None, bm=bm, mod=mod))
                row.setdefault(key, []).append(round(tflops(B, H, D, pairs, ms), 1))
        RES["flex"].append(row)
        log("  ", json.dumps(row))
        R.save()


D_ROW_BYTES = 256   # D=128 bf16


def cta_orders(bm, B, H, S, BM, BN):
    """CTA orders for the 'order' phase as work indices m + nM * (b*H + h) (FlashFwdParams.cta_order).
    Cost of a CTA (model of cta_order_sim.mjs): 1.5 + full tiles + 1.6 x partial tiles of its row.
    'plain' = work_tile's order with G heads per group; 'lpt' = longest first within each group."""
    nM = (S + BM - 1) // BM
    qblk, kvblk = bm.BLOCK_SIZE
    num = bm.kv_num_blocks.cpu().long()
    fnum = bm.full_kv_num_blocks.cpu().long() if bm.full_kv_num_blocks is not None else torch.zeros_like(num)
    sub = kvblk // BN
    BH = B * H
    wave = 3 * 132 // nM                      # d128 sm90: 3 CTAs/SM on 132 SMs
    kv_head = 2.0 * S * D_ROW_BYTES

    def by_budget(mb):
        return max(1, min(wave, BH, int(mb * 1048576 / kv_head)))

    def cost(bh, m):
        b, h = divmod(bh, H)
        bb, hh, r = min(b, num.shape[0] - 1), min(h, num.shape[1] - 1), m * BM // qblk
        return 1.5 + sub * (fnum[bb, hh, r].item() + 1.6 * num[bb, hh, r].item())

    costs, out = {}, {}
    Gs = {"g2": 2, "g8": 8, "g32": 32} if S == 8192 else {"b8": by_budget(8), "b32": by_budget(32), "c32": 32}
    for gname, G in Gs.items():
        for lpt in (False, True):
            order = []
            for g0 in range(0, BH, G):
                ent = [(m, bh) for m in range(nM - 1, -1, -1) for bh in range(g0, min(g0 + G, BH))]
                if lpt:
                    for e in ent:
                        if e not in costs:
                            costs[e] = cost(e[1], e[0])
                    ent.sort(key=lambda e: -costs[e])  # stable: ties keep m desc, heads inner
                order += [m + nM * bh for m, bh in ent]
            out[f"{'lpt' if lpt else 'plain'}_{gname}"] = torch.tensor(order, dtype=torch.int32, device="cuda")
    return out


def phase_order(reps):
    """A/B of CTA orders (FlashFwdParams.cta_order) on three block-sparse shapes, sm90 d128."""
    for B, S in ((2, 8192), (32, 512), (8, 2048)):
        order_shape(reps, B, 16, S, 128)


def order_shape(reps, B, H, S, D):
    from torch.nn.attention.flex_attention import create_block_mask
    log(f"== CTA order B={B} H={H} S={S} D={D}")
    pats, doc, slopes = R.flex_patterns(S, B, doc_seed=2)
    mod = pack_mod(doc=doc, slopes=slopes, softcap=30.0, window=1024)
    q, kk, v = make_qkv(B, H, H, S, S, D, torch.bfloat16, seed=5)
    o, _ = poisoned(q)
    for pname in ("doc", "swa1024", "causal"):
        cub, mm, rmask, sfn, rsfn, bdep = pats[pname]
        kn = kernel(cub, f"flexattn_{cub}_d128_bf16_sm90")
        pairs = R.unmasked_pairs(rmask, B, S)
        for blk in (128, 64):
            bm = create_block_mask(mm, B if bdep else None, None, S, S, device="cuda", BLOCK_SIZE=blk)
            orders = {"default": None, **cta_orders(bm, B, H, S, 64, 64)}
            row = dict(pattern=pname, block=blk, S=S, B=B)
            launch(kn, q, kk, v, o, None, bm=bm, mod=mod)
            ref = o.clone()
            for k2, od in orders.items():   # every order gives the default's output, bit for bit
                if od is None:
                    continue
                o.fill_(float("nan"))
                launch(kn, q, kk, v, o, None, bm=bm, mod=mod, order=od)
                torch.cuda.synchronize()
                if not torch.equal(o, ref):
                    log("   !! order", k2, "changes the output")
            for rep in range(reps):
                for k2 in rotate(list(orders), rep):
                    ms = bench(lambda: launch(kn, q, kk, v, o, None, bm=bm, mod=mod, order=orders[k2]), iters=40)
                    row.setdefault(k2, []).append(round(tflops(B, H, D, pairs, ms), 1))
            RES["flex"].append(row)
            log("  ", json.dumps(row))
            R.save()


BENCH_DOC_LENGTHS = [[257, 246, 1720, 1977, 2748, 514, 730], [1735, 1869, 2393, 311, 1884]]  # bench/cases.mjs, S=8192


def dense_causal_row(q, kk, v, o, reps):
    """The sm90 dense causal kernel on q/k/v [B, H, S, D] (the reference the flex rows are divided by), logged."""
    B, H, S, D = q.shape
    kd = kernel("sm90", "sm90_d128_bf16_causal")
    row = dict(pattern="dense-causal (sm90)")
    for rep in range(reps):
        ms = bench(lambda: launch(kd, q, kk, v, o, None), iters=40)
        row.setdefault("sm90", []).append(round(tflops(B, H, D, S * (S + 1) // 2, ms), 1))
    log("  ", json.dumps(row))
    return row


def phase_docgen(reps):
    """Document mask: hand-written (flex_doc.cu) vs generated (flex_docgen.cu) mask code, on the harness's
    and on the library benchmark's document lengths; 64x64 BlockMask, built-in and LPT (G=8) orders."""
    from torch.nn.attention.flex_attention import create_block_mask
    B, H, S, D = 2, 16, 8192, 128
    pats, hdoc, slopes = R.flex_patterns(S, B, doc_seed=2)
    bdoc = torch.stack([torch.repeat_interleave(torch.arange(len(l), device="cuda"), torch.tensor(l, device="cuda"))
                        for l in BENCH_DOC_LENGTHS]).to(torch.int32).contiguous()
    q, kk, v = make_qkv(B, H, H, S, S, D, torch.bfloat16, seed=5)
    o, _ = poisoned(q)
    row = dense_causal_row(q, kk, v, o, reps)
    for dname, doc in (("harness docs", hdoc), ("bench docs", bdoc)):
        log(f"== docgen {dname}: lengths {[torch.unique_consecutive(doc[b], return_counts=True)[1].tolist() for b in range(B)]}")
        mm = lambda b, h, qi, kv: (kv <= qi) & (doc[b, qi] == doc[b, kv])
        bm = create_block_mask(mm, B, None, S, S, device="cuda", BLOCK_SIZE=64)
        bi = torch.arange(S, device="cuda")
        pairs = sum(int(((bi[None, :] <= bi[:, None]) & (doc[b][:, None] == doc[b][None, :])).sum()) for b in range(B))
        lpt = cta_orders(bm, B, H, S, 64, 64)["lpt_g8"]
        mods = {"hand": ("flex_doc", "flexattn_flex_doc_d128_bf16_sm90", pack_mod(doc=doc, slopes=slopes)),
                "gen": ("flex_docgen", "flexattn_flex_docgen_d128_bf16_sm90",
                        struct.pack("<Qiiii", doc.data_ptr(), doc.stride(0), doc.shape[0], doc.stride(1), doc.shape[1])),
                "free": ("flex_docfree", "flexattn_flex_docfree_d128_bf16_sm90", pack_mod(doc=doc, slopes=slopes))}
        outs = {}
        for k2, (cub, nm, mod) in mods.items():
            o.fill_(float("nan"))
            launch(kernel(cub, nm), q, kk, v, o, None, bm=bm, mod=mod)
            torch.cuda.synchronize()
            outs[k2] = o.clone()
        log("   hand == gen:", torch.equal(outs["hand"], outs["gen"]), " nan:", bool(outs["gen"].isnan().any()),
            " (free: timing bound, keeps every position of a partial tile)")
        pairs = pairs // B  # summed over the batch; tflops() multiplies by B
        row = dict(pattern="doc " + dname, density=round(pairs / S / S, 4))
        keys = [(k2, od) for k2 in mods for od in ("default", "lpt_g8")]
        for rep in range(reps):
            for k2, od in rotate(keys, rep):
                cub, nm, mod = mods[k2]
                kn = kernel(cub, nm)
                ms = bench(lambda: launch(kn, q, kk, v, o, None, bm=bm, mod=mod, order=None if od == "default" else lpt), iters=40)
                row.setdefault(f"{k2}_{od}", []).append(round(tflops(B, H, D, pairs, ms), 1))
        RES["flex"].append(row)
        log("  ", json.dumps(row))
        R.save()


def phase_aligned(reps):
    """Document mask on the benchmark's documents vs the same documents with every boundary moved to a
    multiple of 64 (lengths rounded, sum kept): the aligned draw has the tile structure a doc-aligned
    (varlen-like) schedule would give the unaligned one, so its TFLOPs bound that schedule's gain."""
    from torch.nn.attention.flex_attention import create_block_mask
    B, H, S, D = 2, 16, 8192, 128
    pats, hdoc, slopes = R.flex_patterns(S, B, doc_seed=2)
    aligned = []
    for l in BENCH_DOC_LENGTHS:
        r = [max(64, (x + 32) // 64 * 64) for x in l[:-1]]
        aligned.append(r + [S - sum(r)])
    q, kk, v = make_qkv(B, H, H, S, S, D, torch.bfloat16, seed=5)
    o, _ = poisoned(q)
    row = dense_causal_row(q, kk, v, o, reps)
    RES["flex"].append(row)
    for dname, lens in (("bench docs", BENCH_DOC_LENGTHS), ("bench docs aligned to 64", aligned)):
        doc = torch.stack([torch.repeat_interleave(torch.arange(len(l), device="cuda"), torch.tensor(l, device="cuda"))
                           for l in lens]).to(torch.int32).contiguous()
        log(f"== aligned {dname}: lengths {lens}")
        mm = lambda b, h, qi, kv: (kv <= qi) & (doc[b, qi] == doc[b, kv])
        bm = create_block_mask(mm, B, None, S, S, device="cuda", BLOCK_SIZE=64)
        pairs = sum(l * (l + 1) // 2 for ls in lens for l in ls) // B
        lpt = cta_orders(bm, B, H, S, 64, 64)["lpt_g8"]
        mods = {"hand": ("flex_doc", "flexattn_flex_doc_d128_bf16_sm90"), "free": ("flex_docfree", "flexattn_flex_docfree_d128_bf16_sm90")}
        mod = pack_mod(doc=doc, slopes=slopes)
        row = dict(pattern="doc " + dname, density=round(pairs / S / S, 4))
        for rep in range(reps):
            for k2 in rotate(list(mods), rep):
                kn = kernel(*mods[k2])
                ms = bench(lambda: launch(kn, q, kk, v, o, None, bm=bm, mod=mod, order=lpt), iters=40)
                row.setdefault(k2, []).append(round(tflops(B, H, D, pairs, ms), 1))
        RES["flex"].append(row)
        log("  ", json.dumps(row))
        R.save()


def segmented_schedule(doc, maskfn, tile=64):
    """A segmented grid (FlashFwdParams.tile_starts) for document ids doc [B, S]: tiles of <= `tile` rows that
    restart at every change of id, and the BlockMask lists of that grid, classified exactly from the dense mask,
    with each kv entry encoded as kv_start * KV_ENTRY_SCALE + length (the kernel's format for segmented grids).
    Returns (bm-like object, starts int32 [B, nM + 1], nM)."""
    B, S = doc.shape
    rows = []
    for b in range(B):
        d = doc[b].cpu()
        cut = [0] + (torch.nonzero(d[1:] != d[:-1]).flatten() + 1).tolist() + [S]
        st = []
        for a, e in zip(cut[:-1], cut[1:]):
            st += list(range(a, e, tile))
        rows.append(st)
    nM = max(len(r) for r in rows)
    starts = torch.full((B, nM + 1), S, dtype=torch.int32)
    for b, r in enumerate(rows):
        starts[b, :len(r)] = torch.tensor(r, dtype=torch.int32)
    starts = starts.cuda()
    num = torch.zeros(B, 1, nM, dtype=torch.int32, device="cuda")
    fnum = torch.zeros_like(num)
    idx = torch.zeros(B, 1, nM, nM, dtype=torch.int32, device="cuda")
    fidx = torch.zeros_like(idx)
    ar = torch.arange(S, device="cuda")
    for b in range(B):
        m = maskfn(b, 0, ar[:, None], ar[None, :]).to(torch.int32)
        P = torch.zeros(S + 1, S + 1, dtype=torch.int64, device="cuda")
        P[1:, 1:] = m.cumsum(0).cumsum(1)
        del m
        st = starts[b].long()
        a, e = st[:-1], st[1:]
        cnt = P[e][:, e] - P[a][:, e] - P[e][:, a] + P[a][:, a]
        area = (e - a)[:, None] * (e - a)[None, :]
        cls = torch.where(cnt == 0, 0, torch.where(cnt == area, 2, 1))
        cls[area == 0] = 0
        for c, n_, i_ in ((1, num, idx), (2, fnum, fidx)):
            sel = (cls == c)
            n_[b, 0] = sel.sum(1).to(torch.int32)
            j = torch.argsort((~sel).to(torch.int8), dim=1, stable=True)
            i_[b, 0] = (st[j] * R.FP.KV_ENTRY_SCALE + (st[j + 1] - st[j])).to(torch.int32)   # the kv entry (tiles.json)
        del P
    bm = SimpleNamespace(kv_num_blocks=num, kv_indices=idx, full_kv_num_blocks=fnum, full_kv_indices=fidx, BLOCK_SIZE=(64, 64))
    return bm, starts.contiguous(), nM


def lpt_order(bm, B, H, nM, G=8, w=(1.5, 1.0, 1.6)):
    """Longest-first CTA order within groups of G heads (cost 1.5 + full + 1.6 partial tiles), work index
    m + nM * (b*H + h), as lib/cuda/schedules/cta-order.ts."""
    num = bm.kv_num_blocks.cpu().long()
    fnum = bm.full_kv_num_blocks.cpu().long()
    order = []
    for g0 in range(0, B * H, G):
        ent = [(m, bh) for m in range(nM - 1, -1, -1) for bh in range(g0, min(g0 + G, B * H))]
        cost = lambda e: w[0] + w[1] * fnum[min(e[1] // H, num.shape[0] - 1), 0, e[0]].item() + w[2] * num[min(e[1] // H, num.shape[0] - 1), 0, e[0]].item()
        ent.sort(key=lambda e: -cost(e))
        order += [m + nM * bh for m, bh in ent]
    return torch.tensor(order, dtype=torch.int32, device="cuda")


PAIRS = {}


def phase_segments(reps):
    """Document masks on a segmented grid (tiles restart at every document start; FlashFwdParams.tile_starts)
    vs the uniform 64x64 grid: correctness against the fp32 reference (odd documents, ids that repeat
    non-contiguously, documents shorter than a tile, GQA-free B=2), then timing on the benchmark documents."""
    from torch.nn.attention.flex_attention import create_block_mask
    # --- correctness
    B, H, S, D = 2, 2, 3001, 128
    lens = [[1, 63, 64, 65, 700, 17, 1100, 991], [3001]]
    doc = torch.stack([torch.repeat_interleave(torch.arange(len(l), device="cuda"), torch.tensor(l, device="cuda"))
                       for l in lens]).to(torch.int32)
    doc[0, 2000:2100] = 1       # id 1 again, far from its first run: pairs across segments are kept
    doc = doc.contiguous()
    q, kk, v = make_qkv(B, H, H, S, S, D, torch.bfloat16, seed=11)
    mm = lambda b, h, qi, kv: (kv <= qi) & (doc[b, qi] == doc[b, kv])
    ro, rl = ref_attention(q, kk, v, 1 / math.sqrt(D), mask=lambda b, qi, ki: mm(b, 0, qi, ki))
    bm, starts, nM = segmented_schedule(doc, mm)
    ok = True
    # segmented kernels: flex_docseg (the mask left once the ids conjunct is dropped, as the library
    # generates it) and, when built, flex_docgen_seg (the full generated mask on the grid:
    # NVFLAGS=-DFLEX_SEGMENTED_GRID=1 SUFFIX=_seg ./build.sh flex_docgen.cu)
    gen_args = struct.pack("<Qiiii", doc.data_ptr(), doc.stride(0), doc.shape[0], doc.stride(1), doc.shape[1])
    cases = [("flex_docseg", "flexattn_flex_docseg_d128_bf16_sm90", pack_mod(doc=doc))]
    if os.path.exists(os.path.join(R.BUILD, "flex_docgen_seg.cubin")):
        cases.append(("flex_docgen_seg", "flexattn_flex_docgen_d128_bf16_sm90", gen_args))
    for cub, nm, mod in cases:
        for order in (None, lpt_order(bm, B, H, nM)):
            o, lse = poisoned(q)
            launch(kernel(cub, nm), q, kk, v, o, lse, bm=bm, mod=mod, order=order, starts=starts, grid_m=nM)
            torch.cuda.synchronize()
            e, le = R.rel_err(o, ro), (lse - rl).abs().max().item()
            good = e < 1e-2 and le < 1e-2 and not o.isnan().any().item()
            ok &= good
            RES["correct"].append(dict(tag="segments order=" + ("lpt" if order is not None else "built-in"), kernel=cub, ok=bool(good),
                                       rel_err=e, lse_max_abs=le, nan_o=int(o.isnan().sum()), nan_lse=int(lse.isnan().sum())))
            log(f"   segments {cub} order={'lpt' if order is not None else 'built-in'}: rel err {e:.2e}, lse max err {le:.2e}, nM={nM} {'ok' if good else 'FAIL'}")
    # --- timing, benchmark documents
    B, H, S = 2, 16, 8192
    q, kk, v = make_qkv(B, H, H, S, S, D, torch.bfloat16, seed=5)
    o, _ = poisoned(q)

    def doc_case(lens):
        """Ids, unmasked pairs, uniform 64x64 BlockMask + LPT order, segmented schedule + LPT order,
        and the generated mask's args for documents of lengths `lens` (one list per batch row)."""
        d = torch.stack([torch.repeat_interleave(torch.arange(len(l), device="cuda"), torch.tensor(l, device="cuda"))
                         for l in lens]).to(torch.int32).contiguous()
        m = lambda b, h, qi, kv: (kv <= qi) & (d[b, qi] == d[b, kv])
        ubm_ = create_block_mask(m, B, None, S, S, device="cuda", BLOCK_SIZE=64)
        sbm_, st_, nM_ = segmented_schedule(d, m)
        return SimpleNamespace(
            doc=d, pairs=sum(l * (l + 1) // 2 for ls in lens for l in ls) // B,
            ubm=ubm_, ulpt=cta_orders(ubm_, B, H, S, 64, 64)["lpt_g8"],
            sbm=sbm_, starts=st_, nM=nM_, slpt=lpt_order(sbm_, B, H, nM_),
            gen=struct.pack("<Qiiii", d.data_ptr(), d.stride(0), d.shape[0], d.stride(1), d.shape[1]))

    bc = doc_case(BENCH_DOC_LENGTHS)
    doc, pairs, ubm, ulpt, sbm, starts, nM, slpt, gen = (bc.doc, bc.pairs, bc.ubm, bc.ulpt, bc.sbm, bc.starts, bc.nM,
                                                         bc.slpt, bc.gen)
    kd = kernel("sm90", "sm90_d128_bf16_causal")
    outs = {}
    has_gseg = os.path.exists(os.path.join(R.BUILD, "flex_docgen_seg.cubin"))
    variants = [("uniform", ("flex_docgen", "flexattn_flex_docgen_d128_bf16_sm90", gen)),
                ("segmented", ("flex_docseg", "flexattn_flex_docseg_d128_bf16_sm90", pack_mod(doc=doc)))]
    if has_gseg:
        variants.append(("segmented_fullmask", ("flex_docgen_seg", "flexattn_flex_docgen_d128_bf16_sm90", gen)))
    for key, (cub, nm, mod) in variants:
        o.fill_(float("nan"))
        if key == "uniform":
            launch(kernel(cub, nm), q, kk, v, o, None, bm=ubm, mod=mod, order=ulpt)
        else:
            launch(kernel(cub, nm), q, kk, v, o, None, bm=sbm, mod=mod, order=slpt, starts=starts, grid_m=nM)
        torch.cuda.synchronize()
        outs[key] = o.clone()
    if has_gseg:
        log(f"   bench docs: causal-only mask on the segmented grid == full generated doc mask there: "
            f"{bool(torch.equal(outs['segmented_fullmask'], outs['segmented']))}")
    log(f"   bench docs: nM {nM} (uniform {S // 64}); segmented vs uniform rel err {R.rel_err(outs['segmented'], outs['uniform']):.2e}, nan {bool(outs['segmented'].isnan().any())}")
    kseg = kernel("flex_docseg", "flexattn_flex_docseg_d128_bf16_sm90")
    runs = {
        "dense_causal": lambda: launch(kd, q, kk, v, o, None),
        "gen_uniform": lambda: launch(kernel("flex_docgen", "flexattn_flex_docgen_d128_bf16_sm90"), q, kk, v, o, None, bm=ubm, mod=gen, order=ulpt),
        "segmented": lambda: launch(kseg, q, kk, v, o, None, bm=sbm, mod=pack_mod(doc=doc), order=slpt, starts=starts, grid_m=nM),
        "segmented_builtin_order": lambda: launch(kseg, q, kk, v, o, None, bm=sbm, mod=pack_mod(doc=doc), starts=starts, grid_m=nM),
    }
    if has_gseg:
        kgs = kernel("flex_docgen_seg", "flexattn_flex_docgen_d128_bf16_sm90")
        runs["segmented_fullmask"] = lambda: launch(kgs, q, kk, v, o, None, bm=sbm, mod=gen, order=slpt, starts=starts, grid_m=nM)
    # the same on documents aligned to 64 (phase_aligned's): segmented == uniform grid there, so any gap is the
    # cost of the tile_starts path itself
    alens = []
    for l in BENCH_DOC_LENGTHS:
        r_ = [max(64, (x + 32) // 64 * 64) for x in l[:-1]]
        alens.append(r_ + [S - sum(r_)])
    al = doc_case(alens)
    apairs, anM = al.pairs, al.nM
    kg = kernel("flex_docgen", "flexattn_flex_docgen_d128_bf16_sm90")
    runs["aligned_uniform"] = lambda: launch(kg, q, kk, v, o, None, bm=al.ubm, mod=al.gen, order=al.ulpt)
    runs["aligned_segmented"] = lambda: launch(kseg, q, kk, v, o, None, bm=al.sbm, mod=pack_mod(doc=al.doc), order=al.slpt,
                                               starts=al.starts, grid_m=anM)
    log(f"   aligned docs: nM {anM}")
    row = dict(pattern="doc bench docs: uniform 64x64 vs segmented", density=round(pairs / S / S, 4))
    for rep in range(reps):
        for key in rotate(list(runs), rep):
            ms = bench(runs[key], iters=40)
            n = S * (S + 1) // 2 if key == "dense_causal" else apairs if key.startswith("aligned") else PAIRS.get(key, pairs)
            row.setdefault(key, []).append(round(tflops(B, H, D, n, ms), 1))
    RES["flex"].append(row)
    log("  ", json.dumps(row))
    R.save()


def phase_probe():
    """One launch of each sm90 kernel on the flex shape (run under ncu -k regex:sm90)."""
    from torch.nn.attention.flex_attention import create_block_mask
    B, H, S, D = 2, 16, 8192, 128
    pats, doc, slopes = R.flex_patterns(S, B, doc_seed=2)
    mod = pack_mod(doc=doc, slopes=slopes, softcap=30.0, window=1024)
    q, kk, v = make_qkv(B, H, H, S, S, D, torch.bfloat16, seed=5)
    o, _ = poisoned(q)
    launch(kernel("sm90", "sm90_d128_bf16_causal"), q, kk, v, o, None)
    for pname in ("causal", "swa1024", "doc", "alibi"):
        cub, mm, rmask, sfn, rsfn, bdep = pats[pname]
        bm = create_block_mask(mm, B if bdep else None, None, S, S, device="cuda")
        launch(kernel(cub, f"flexattn_{cub}_d128_bf16_sm90"), q, kk, v, o, None, bm=bm, mod=mod)
    torch.cuda.synchronize()
    log("probe done")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--phases", default="correct,dense,flex")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--no-alts", action="store_true", help="skip the alternative sm90 tile shapes")
    ap.add_argument("--alts", default=None, help="comma list: time only these alternative shapes")
    ap.add_argument("--correct-suffix", default="", help="check build/<cubin><suffix>.cubin in the correctness phase")
    a = ap.parse_args()
    global ALTS, CS, ONLY_ALTS
    ALTS = not a.no_alts
    ONLY_ALTS = a.alts.split(",") if a.alts else None
    CS = a.correct_suffix
    torch.zeros(1, device="cuda")
    RES["info"]["device"] = torch.cuda.get_device_name()
    log("device:", torch.cuda.get_device_name(), "torch", torch.__version__)
    for nm in ("sm90_d128_bf16", "sm90_d64_bf16", "sm90_d128_bf16_w2n128s2"):
        log("  ", kernel("sm90", nm).desc())
    for ph, fn in (("correct", phase_correct), ("dense", lambda: phase_dense(a.reps)), ("flex", lambda: phase_flex(a.reps)), ("probe", phase_probe), ("order", lambda: phase_order(a.reps)), ("docgen", lambda: phase_docgen(a.reps)), ("aligned", lambda: phase_aligned(a.reps)), ("segments", lambda: phase_segments(a.reps))):
        if ph in a.phases.split(","):
            t = time.time()
            try:
                fn()
            except Exception:
                import traceback
                log(f"!! {ph} crashed\n" + traceback.format_exc())
            log(f"   [{ph} {time.time() - t:.1f}s]")
            R.save()
    c = RES["correct"]
    log(f"\n==== {RES['info']['device']} | correctness {sum(r['ok'] for r in c)}/{len(c)} pass")
    for r in c:
        if not r["ok"]:
            log(f"  FAIL {r['tag']} {r['kernel']} rel={r['rel_err']:.2e} lse={r['lse_max_abs']:.1e} nan={r['nan_o']}/{r['nan_lse']}")
    for r in RES["dense"] + RES["flex"]:
        log("  " + json.dumps(r))
    R.save()


if __name__ == "__main__":
    main()
