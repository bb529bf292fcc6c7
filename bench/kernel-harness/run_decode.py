#!/usr/bin/env python3
"""Decode kernel (decode.cu, native/kernels/decode.cuh) tuning sweep on one card: correctness of every
variant against an fp32 reference, then GB/s of K+V read for the issue-19 decode shapes over tile
alternatives, load-hint builds (_pf256, _ef twins) and split counts, with PyTorch SDPA (cuDNN, flash)
timed in the same process.  usage: python3 run_decode.py [--budget S]   (after ./build.sh decode.cu ...)
DEC_DEBUG=1: only the correctness launches, each logged (run under compute-sanitizer to name a failing variant).
Hopper bulk-copy variants (decode_bulk.cuh, dec_d128_bulk_*): first checked in a subprocess with a timeout
(`--bulk-smoke`: the debug build decode_tmo.cubin when present — SUFFIX=_tmo NVFLAGS=-DDEC_DEBUG_TIMEOUT
./build.sh decode.cu, bounded mbarrier waits — then the release build); a hang, crash, timeout record or
wrong answer there drops them from the run ("BULK DROPPED"), so the rest of the sweep still runs. They are
then checked and timed like every other variant (always run, as the fused ones; DEC_ALTS does not filter them).
Every variant is also checked on a paged pool (page 16, shuffled page table, odd length)."""
import argparse, ctypes, json, math, os, re, struct, subprocess, sys, time
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
        # debug build (-DDEC_DEBUG_TIMEOUT): int ws_debug_timeout[4] (sm90_ws_pipeline.cuh) = {count, block, thread, tag * 2 + parity}
        dbg, dsz = ctypes.c_uint64(), ctypes.c_size_t()
        self.dbg = dbg.value if cu.cuModuleGetGlobal_v2(ctypes.byref(dbg), ctypes.byref(dsz), mod, b"ws_debug_timeout") == 0 else None

    def timeout_record(self, clear=False):
        """The debug build's record (None for a release build); clear=True zeroes it."""
        if self.dbg is None:
            return None
        buf = (ctypes.c_int * 4)()
        if clear:
            ck(cu.cuMemcpyHtoD_v2(ctypes.c_uint64(self.dbg), ctypes.cast(buf, ctypes.c_void_p), ctypes.c_size_t(16)), "dbg clear")
            return None
        ck(cu.cuMemcpyDtoH_v2(ctypes.cast(buf, ctypes.c_void_p), self.dbg, 16), "dbg read")
        return list(buf) if buf[0] else None

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


def make_runner(k, comb, q, kk, v, o, splits, paged=None):
    """q [B,Hq,1,D], k/v [B,Hkv,S,D] (contiguous rows as flexAttention passes them: page = seq).
    paged: (pool_k, pool_v, table, page) from make_pool; kk/v then only give the shape."""
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
    if paged is not None:
        pk, pv, table, page = paged
        f.update(k=pk.data_ptr(), v=pv.data_ptr(), page_table=table.data_ptr(), page_table_stride=table.stride(0),
                 log2_page_size=int(math.log2(page)), k_page_stride=pk.stride(0), k_token_stride=pk.stride(1),
                 k_head_stride=pk.stride(2), v_page_stride=pv.stride(0), v_token_stride=pv.stride(1), v_head_stride=pv.stride(2))
    pb = pack(k.c["paramBytes"], **f)
    pc = pack(comb.c["paramBytes"], **f) if comb is not None else None

    def run():
        k(ctas * splits, pb)
        if splits > 1 and comb is not None:
            comb(ctas, pc)
    run.keep = (ws_o, ws_l, paged)
    return run


def make_pool(kk, v, page, g):
    """A paged pool [pages, page, Hkv, D] holding kk/v [B,Hkv,S,D] in shuffled pages (NaN in the unused
    tail of each sequence's last page and in one spare page), and the int32 page table [B, ceil(S/page)]."""
    B, Hkv, S, D = kk.shape
    npg = -(-S // page)
    perm = torch.randperm(B * npg + 1, device="cuda", generator=g)[:B * npg].to(torch.int32)
    table = perm.view(B, npg).contiguous()
    pools = []
    for x in (kk, v):
        pool = torch.full((B * npg + 1, page, Hkv, D), float("nan"), device="cuda", dtype=x.dtype)
        pad = torch.full((B, Hkv, npg * page, D), float("nan"), device="cuda", dtype=x.dtype)
        pad[:, :, :S] = x
        pool[table.view(-1).long()] = pad.view(B, Hkv, npg, page, D).permute(0, 2, 3, 1, 4).reshape(B * npg, page, Hkv, D)
        pools.append(pool)
    return pools[0], pools[1], table, page


SHAPES = [("B8 Hq32 Hkv8 Skv32k", 8, 32, 8, 32768), ("B1 Hq32 Hkv8 Skv128k", 1, 32, 8, 131072),
          ("B64 Hq32 Hkv8 Skv4k", 64, 32, 8, 4096), ("B8 Hq32 Hkv32 Skv8k", 8, 32, 32, 8192)]
ALTS = ["m16n64w4s4", "m16n64w4s2", "m16n128w4s2", "m16n128w8s2", "m16n128w8s3", "m16n64w2s3", "m16n32w2s4", "m16n32w2s6",
        "m16n64w4s5", "m16n64w4s6"]
FUSED = ["default_fc", "m16n64w4s6_fc", "m16n64w4s4_fc"]  # the last split CTA merges (no combine launch)
BULK = ["bulk_s3", "bulk_s4", "bulk_s6", "bulk_n32s8"]  # sm_90a bulk-copy K/V ring (decode_bulk.cuh), the usual combine
if os.environ.get("DEC_ALTS"):  # a subset, e.g. DEC_ALTS=m16n64w4s6 (the default and the fused variants always run)
    ALTS = [a for a in ALTS if a in os.environ["DEC_ALTS"].split(",")]


def bulk_variants(cub):
    """The bulk-copy kernels of one cubin that has them ([] for an older build)."""
    if not os.path.exists(os.path.join(R.BUILD, cub + ".cubin")):
        return []
    comb = K(cub, "flexattn_decode_combine_d128_bf16")
    out = []
    for a in BULK:
        try:
            out.append((a, K(cub, "dec_d128_" + a), comb))
        except Exception as e:  # not in this build
            log(f"{a}: not in {cub}.cubin ({str(e)[:60]})")
    return out


# correctness cases: GQA, odd lengths, splits 1 and 5, against fp32; the last one through a paged pool
CASES = ((2, 8, 2, 1, None), (2, 8, 2, 77, None), (3, 32, 8, 1531, None), (1, 4, 4, 5000, None), (3, 32, 8, 1531, 16))


def check(vs, res, tag=""):
    """Every variant of vs on CASES (outputs poisoned with NaN); appends to res['correct']; False on any failure."""
    all_ok = True
    for (B, Hq, Hkv, S, page) in CASES:
        g = torch.Generator(device="cuda").manual_seed(S)
        q = torch.randn(B, Hq, 1, 128, device="cuda", dtype=torch.bfloat16, generator=g)
        kk = torch.randn(B, Hkv, S, 128, device="cuda", dtype=torch.bfloat16, generator=g)
        v = torch.randn(B, Hkv, S, 128, device="cuda", dtype=torch.bfloat16, generator=g)
        paged = make_pool(kk, v, page, g) if page else None
        ref = F.scaled_dot_product_attention(q.float(), kk.float().repeat_interleave(Hq // Hkv, 1),
                                             v.float().repeat_interleave(Hq // Hkv, 1))
        for name, k, comb in vs:
            for sp in (1, 5):
                if os.environ.get("DEC_DEBUG"):
                    log(f"debug {tag}{name} B{B} S{S} page {page} splits {sp}")
                o = torch.full_like(q, float("nan"))
                k.timeout_record(clear=True)
                make_runner(k, comb, q, kk, v, o, sp, paged)()
                torch.cuda.synchronize()
                rec = k.timeout_record()
                err = ((o.float() - ref).abs().max() / ref.abs().max()).item()
                ok = err < 2e-2 and rec is None
                res["correct"].append(dict(v=tag + name, B=B, Hq=Hq, Hkv=Hkv, S=S, page=page, splits=sp, err=err, ok=ok))
                if rec is not None:
                    log(f"DEADLOCK (debug build) {tag}{name} B{B} S{S} page {page} splits {sp}: {rec[0]} waits gave up, "
                        f"first block {rec[1]} thread {rec[2]} on the {('full', 'empty')[rec[3] // 2]} barrier, parity {rec[3] % 2}")
                if not ok:
                    all_ok = False
                    log(f"FAIL {tag}{name} B{B} Hq{Hq} Hkv{Hkv} S{S} page {page} splits {sp}: rel err {err:.3g}")
    return all_ok


def bulk_smoke():
    """Subprocess body (--bulk-smoke): the bulk variants of the debug build, then of the release build, on
    CASES. Exit 0 only when every check passed and no wait timed out."""
    res = {"correct": []}
    ok = True
    for cub, tag in (("decode_tmo", "tmo:"), ("decode", "")):
        vs = bulk_variants(cub)
        if not vs:
            log(f"bulk smoke: no bulk kernels in {cub}.cubin" + (" (no hang guard but this subprocess's timeout)" if tag else ""))
            ok = ok and bool(tag)
            continue
        ok = check(vs, res, tag) and ok
        log(f"bulk smoke {cub}: {sum(c['ok'] for c in res['correct'] if c['v'].startswith(tag))}/"
            f"{sum(c['v'].startswith(tag) for c in res['correct'])} ok")
        if not ok:
            break  # a failing debug build: the release build is not launched
    sys.exit(0 if ok else 3)


def bulk_guard(timeout=240):
    """Run bulk_smoke in a subprocess; True when the bulk variants may run in this process."""
    env = dict(os.environ, OUT=os.path.join("/tmp", "dec-bulk-smoke"))
    try:
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--bulk-smoke"], env=env, timeout=timeout,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in r.stdout.splitlines()[-40:]:
            log("  | " + line)
        if r.returncode != 0:
            log(f"BULK DROPPED: smoke subprocess exit {r.returncode}")
            return False
        return True
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        for line in out.splitlines()[-20:]:
            log("  | " + line)
        log(f"BULK DROPPED: HANG (smoke subprocess past {timeout} s)")
        return False


def variants(bulk=True):
    out = []
    if bulk:
        out += bulk_variants("decode")
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
    ap.add_argument("--bulk-smoke", action="store_true", help="(subprocess) check the bulk variants only")
    a = ap.parse_args()
    if a.bulk_smoke:
        return bulk_smoke()
    res = {"card": torch.cuda.get_device_name(0), "sm": SM, "correct": [], "rows": []}
    bulk = bool(bulk_variants("decode")) and bulk_guard(float(os.environ.get("DEC_BULK_TIMEOUT_S", "240")))
    t_end = time.time() + a.budget  # the timing budget starts after the bulk smoke subprocess
    res["bulk"] = bulk
    vs = variants(bulk)
    log(f"{res['card']}: {len(vs)} variants" + ("" if bulk else " (no bulk variants)"))
    check(vs, res)
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
        bulk_best = max(((g, v, s) for (v, s), g in best.items() if v.startswith("bulk")), default=None)
        log(f"{sname}: cudnn {row['torch'].get('cudnn', 0):.0f} flash {row['torch'].get('flash', 0):.0f} GB/s; "
            f"ours default(planned) {dflt:.0f}; top: " + ", ".join(f"{v}/s{s} {g:.0f}" for (v, s), g in top))
        if bulk_best:
            tb = max([g for k_, g in row["torch"].items() if not k_.endswith("_error")] or [0])
            log(f"{sname}: best bulk {bulk_best[1]}/s{bulk_best[2]} {bulk_best[0]:.0f} GB/s = "
                f"{bulk_best[0] / max(dflt, 1e-9):.3f}x default, {bulk_best[0] / max(tb, 1e-9):.3f}x best torch")
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
