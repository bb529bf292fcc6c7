#!/usr/bin/env python3
"""Decode kernel (decode.cu, native/kernels/decode.cuh) tuning sweep on one card: correctness of every
variant against an fp32 reference, then GB/s of K+V read for the issue-19 decode shapes over tile
alternatives, load-hint builds (_pf256, _ef twins) and split counts, with PyTorch SDPA (cuDNN, flash)
timed in the same process.  usage: python3 run_decode.py [--budget S]   (after ./build.sh decode.cu ...)
DEC_DEBUG=1: only the correctness launches, each logged (run under compute-sanitizer to name a failing variant)."""
import argparse, ctypes, json, math, os, re, struct, time
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
import run as R
from run import cu, ck, log

HDR = os.path.join(R.HERE, "../../native/kernels/generated/decode_params.cuh")
CFG = ("threads", "smemBytes", "blockM", "blockN", "headDim", "stages", "paramBytes", "modOffset")
SIZES = {"long long": "q", "int": "i", "float": "f"}


def layout():
    """[(offset, field, struct code, count)] from the generated header's byte-layout comment."""
    out = []
    for line in open(HDR):
        m = re.match(r"//\s+(\d+)\s+(\d+)\s+(\w+)\s+(const void\*|void\*|float\*|const int\*|long long|int|float)(?=\s|$)", line)
        if m:
            off, size, name, ty = int(m[1]), int(m[2]), m[3], m[4]
            code = "Q" if ty.endswith("*") else SIZES[ty]
            out.append((off, name, code, size // struct.calcsize(code)))
    return out


LAYOUT = layout()


def pack(size, **f):
    b = bytearray(size)
    for off, name, code, n in LAYOUT:
        v = f.get(name, 0)
        if n == 1:
            struct.pack_into("<" + code, b, off, v)
        else:
            vals = list(v) if v else []
            struct.pack_into("<%d%s" % (n, code), b, off, *(vals + [0] * (n - len(vals))))
    return bytes(b)


class K:
    def __init__(self, cubin, name):
        m = R._mods.get(cubin)
        if m is None:
            mm = ctypes.c_void_p()
            ck(cu.cuModuleLoadData(ctypes.byref(mm), open(os.path.join(R.BUILD, cubin + ".cubin"), "rb").read()), cubin)
            R._mods[cubin] = (mm, {})
        mod = R._mods[cubin][0]
        self.f = ctypes.c_void_p()
        ck(cu.cuModuleGetFunction(ctypes.byref(self.f), mod, name.encode()), name)
        dptr, sz = ctypes.c_uint64(), ctypes.c_size_t()
        ck(cu.cuModuleGetGlobal_v2(ctypes.byref(dptr), ctypes.byref(sz), mod, (name + "_cfg").encode()), "cfg")
        buf = (ctypes.c_int * 8)()
        ck(cu.cuMemcpyDtoH_v2(ctypes.cast(buf, ctypes.c_void_p), dptr.value, 32), "cfg")
        self.c = dict(zip(CFG, list(buf)))
        if self.c["smemBytes"] > 0:
            ck(cu.cuFuncSetAttribute(self.f, 8, self.c["smemBytes"]), "smem")
        self.name = name

    def __call__(self, grid, pb):
        buf = ctypes.create_string_buffer(pb, len(pb))
        args = (ctypes.c_void_p * 1)(ctypes.cast(buf, ctypes.c_void_p))
        ck(cu.cuLaunchKernel(self.f, grid, 1, 1, self.c["threads"], 1, 1, max(0, self.c["smemBytes"]),
                             torch.cuda.current_stream().cuda_stream, args, None), "launch " + self.name)


torch.zeros(1, device="cuda")  # the primary context the driver calls below use
SM = torch.cuda.get_device_properties(0).multi_processor_count
SMEM_SM = 228 * 1024


def planner_splits(ctas, skv, bn, smem):
    per = max(1, min(2, (SMEM_SM + 1024) // (smem + 1024)))
    tiles = math.ceil(skv / bn)
    if tiles <= 1:
        return 1
    best, bc = 1, 1e30
    for s in range(1, min(64, tiles) + 1):
        c = math.ceil(ctas * s / (SM * per)) * (math.ceil(tiles / s) + 2) + (2 if s > 1 else 0)
        if c < bc:
            best, bc = s, c
    return best


def make_runner(k, comb, q, kk, v, o, splits):
    """q [B,Hq,1,D], k/v [B,Hkv,S,D] (contiguous rows as flexAttention passes them: page = seq)."""
    B, Hq, _, D = q.shape
    Hkv, S = kk.shape[1], kk.shape[2]
    G = Hq // Hkv
    bm = k.c["blockM"]
    row_tiles = math.ceil(G / bm)
    ctas = B * Hkv * row_tiles
    ws_o = torch.empty(ctas * splits * bm * D, device="cuda", dtype=torch.float32) if splits > 1 else None
    # a fused variant keeps one arrival counter per row tile after the LSE partials (zero to start)
    ws_l = torch.zeros(ctas * splits * bm + ctas, device="cuda", dtype=torch.float32) if splits > 1 else None
    sc = 1 / math.sqrt(D)
    f = dict(q=q.data_ptr(), k=kk.data_ptr(), v=v.data_ptr(), o=o.data_ptr(),
             ws_o=ws_o.data_ptr() if ws_o is not None else 0, ws_lse=ws_l.data_ptr() if ws_l is not None else 0,
             q_stride_seq=q.stride(0), q_stride_tok=q.stride(2), q_stride_h=q.stride(1),
             o_stride_seq=o.stride(0), o_stride_tok=o.stride(2), o_stride_h=o.stride(1),
             k_page_stride=kk.stride(0), k_token_stride=kk.stride(2), k_head_stride=kk.stride(1),
             v_page_stride=v.stride(0), v_token_stride=v.stride(2), v_head_stride=v.stride(1),
             num_seqs=B, Hq=Hq, Hkv=Hkv, gqa_group=G, uniform_kv_len=S, uniform_q_len=1, log2_page_size=30,
             row_tiles=row_tiles, num_splits=splits, causal=0, end_aligned=1, scale=sc, scale_log2=sc * 1.4426950408889634,
             pack_heads=G, seg_tokens=1 << 30, q_segments=1, seg_tiles=row_tiles)
    pb = pack(k.c["paramBytes"], **f)
    pc = pack(comb.c["paramBytes"], **f) if comb is not None else None

    def run():
        k(ctas * splits, pb)
        if splits > 1 and comb is not None:
            comb(ctas, pc)
    run.keep = (ws_o, ws_l)
    return run


SHAPES = [("B8 Hq32 Hkv8 Skv32k", 8, 32, 8, 32768), ("B1 Hq32 Hkv8 Skv128k", 1, 32, 8, 131072),
          ("B64 Hq32 Hkv8 Skv4k", 64, 32, 8, 4096), ("B8 Hq32 Hkv32 Skv8k", 8, 32, 32, 8192)]
ALTS = ["m16n64w4s4", "m16n64w4s2", "m16n128w4s2", "m16n128w8s2", "m16n128w8s3", "m16n64w2s3", "m16n32w2s4", "m16n32w2s6",
        "m16n64w4s5", "m16n64w4s6"]
FUSED = ["default_fc", "m16n64w4s6_fc", "m16n64w4s4_fc"]  # the last split CTA merges (no combine launch)
if os.environ.get("DEC_ALTS"):  # a subset, e.g. DEC_ALTS=m16n64w4s6 (the default and the fused variants always run)
    ALTS = [a for a in ALTS if a in os.environ["DEC_ALTS"].split(",")]


def variants():
    out = []
    for suf in ("", "_pf256", "_ef"):
        cub = "decode" + suf
        if not os.path.exists(os.path.join(R.BUILD, cub + ".cubin")):
            continue
        comb = K(cub, "flexattn_decode_combine_d128_bf16")
        out.append(("default" + suf, K(cub, "flexattn_decode_d128_bf16"), comb))
        for a in ALTS:
            out.append((a + suf, K(cub, "dec_d128_" + a), comb))
        for a in FUSED:
            out.append((a + suf, K(cub, "dec_d128_" + a), None))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=200)
    a = ap.parse_args()
    t_end = time.time() + a.budget
    res = {"card": torch.cuda.get_device_name(0), "sm": SM, "correct": [], "rows": []}
    vs = variants()
    log(f"{res['card']}: {len(vs)} variants")
    # correctness: GQA, odd lengths, splits 1 and 5, against fp32
    for (B, Hq, Hkv, S) in ((2, 8, 2, 1), (2, 8, 2, 77), (3, 32, 8, 1531), (1, 4, 4, 5000)):
        g = torch.Generator(device="cuda").manual_seed(S)
        q = torch.randn(B, Hq, 1, 128, device="cuda", dtype=torch.bfloat16, generator=g)
        kk = torch.randn(B, Hkv, S, 128, device="cuda", dtype=torch.bfloat16, generator=g)
        v = torch.randn(B, Hkv, S, 128, device="cuda", dtype=torch.bfloat16, generator=g)
        ref = F.scaled_dot_product_attention(q.float(), kk.float().repeat_interleave(Hq // Hkv, 1),
                                             v.float().repeat_interleave(Hq // Hkv, 1))
        for name, k, comb in vs:
            for sp in (1, 5):
                if os.environ.get("DEC_DEBUG"):
                    log(f"debug {name} B{B} S{S} splits {sp}")
                o = torch.full_like(q, float("nan"))
                make_runner(k, comb, q, kk, v, o, sp)()
                torch.cuda.synchronize()
                err = ((o.float() - ref).abs().max() / ref.abs().max()).item()
                ok = err < 2e-2
                res["correct"].append(dict(v=name, B=B, Hq=Hq, Hkv=Hkv, S=S, splits=sp, err=err, ok=ok))
                if not ok:
                    log(f"FAIL {name} B{B} Hq{Hq} Hkv{Hkv} S{S} splits {sp}: rel err {err:.3g}")
    if os.environ.get("DEC_DEBUG"):
        return
    log(f"correctness: {sum(c['ok'] for c in res['correct'])}/{len(res['correct'])} ok")
    x = torch.empty(1 << 28, device="cuda", dtype=torch.float32); y = torch.empty_like(x)
    ms = R.bench(lambda: y.copy_(x), iters=20)
    res["copyGBs"] = 2 * x.numel() * 4 / (ms * 1e-3) / 1e9
    log(f"copy {res['copyGBs']:.0f} GB/s"); del x, y
    for sname, B, Hq, Hkv, S in SHAPES:
        g = torch.Generator(device="cuda").manual_seed(1)
        q = torch.randn(B, Hq, 1, 128, device="cuda", dtype=torch.bfloat16, generator=g)
        kk = torch.randn(B, Hkv, S, 128, device="cuda", dtype=torch.bfloat16, generator=g)
        v = torch.randn(B, Hkv, S, 128, device="cuda", dtype=torch.bfloat16, generator=g)
        o = torch.empty_like(q)
        byt = 2 * B * Hkv * S * 128 * 2
        row = {"shape": sname, "bytes": byt, "torch": {}, "ours": []}
        for be, nm in ((SDPBackend.CUDNN_ATTENTION, "cudnn"), (SDPBackend.FLASH_ATTENTION, "flash")):
            try:
                with sdpa_kernel(be):
                    t = R.bench(lambda: F.scaled_dot_product_attention(q, kk, v, enable_gqa=Hq != Hkv), iters=30)
                row["torch"][nm] = byt / (t * 1e-3) / 1e9
            except Exception as e:
                row["torch"][nm + "_error"] = str(e)[:80]
        jobs = []
        for name, k, comb in vs:
            ctas = B * Hkv * math.ceil((Hq // Hkv) / k.c["blockM"])
            ps = planner_splits(ctas, S, k.c["blockN"], k.c["smemBytes"])
            for sp in sorted({ps, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 33, 48, 64}):
                if sp > S // k.c["blockN"] or (ctas * sp > 8 * SM * 4):
                    continue
                jobs.append((name, sp, sp == ps, make_runner(k, comb, q, kk, v, o, sp)))
        for rep in range(2):
            for i, (name, sp, planned, fn) in enumerate(R_rot(jobs, rep)):
                if time.time() > t_end:
                    break
                t = R.bench(fn, iters=20, warmup=3)
                row["ours"].append(dict(v=name, splits=sp, planned=planned, rep=rep, gbs=byt / (t * 1e-3) / 1e9))
        best = {}
        for r in row["ours"]:
            key = (r["v"], r["splits"])
            best[key] = max(best.get(key, 0), r["gbs"])
        top = sorted(best.items(), key=lambda kv: -kv[1])[:8]
        dflt = max([r["gbs"] for r in row["ours"] if r["v"] == "default" and r["planned"]] or [0])
        log(f"{sname}: cudnn {row['torch'].get('cudnn', 0):.0f} flash {row['torch'].get('flash', 0):.0f} GB/s; "
            f"ours default(planned) {dflt:.0f}; top: " + ", ".join(f"{v}/s{s} {g:.0f}" for (v, s), g in top))
        res["rows"].append(row)
        json.dump(res, open(os.path.join(R.OUT, "decode-sweep.json"), "w"), indent=1)
        del q, kk, v, o
        torch.cuda.empty_cache()
    log(f"done in {time.time() - (t_end - a.budget):.0f} s")


def R_rot(xs, k):
    k = (k * 7) % max(1, len(xs))
    return xs[k:] + xs[:k]


if __name__ == "__main__":
    main()
