#!/usr/bin/env python3
"""Warp-specialised Hopper forward (sm90_ws.cu, issue 20) on the GPU machine: correctness against fp32
references, then dense timings next to our current sm90 kernel, PyTorch SDPA cuDNN and flash, in one process.

usage (after ./build.sh sm90_ws.cu and SUFFIX=_dbg NVFLAGS=-DWS_DEBUG_TIMEOUT ./build.sh sm90_ws.cu):
  python3 run_sm90_ws.py [--budget 280] [--phases sass,smoke,correct,time] [--reps 3]
Every case group runs in its own subprocess with a timeout, so a hung or faulting kernel is reported
(HANG / CRASH lines) and the run goes on. The smoke group uses the debug build (bounded mbarrier waits: a
deadlock ends the kernel within seconds and prints "DEADLOCK (debug build): ... barrier ..."); if it fails,
the release build is not launched.
Prints PASS/FAIL per case, `correct: N/M passed`, then a TFLOPs table (ratios ws/cudnn, ws/flash, ws/old).
Writes $OUT/ws_log.txt and $OUT/ws_results.json."""
import argparse, ctypes, json, math, os, struct, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.join(HERE, "build")
OUT = os.environ.get("OUT", "/tmp/out")
os.makedirs(OUT, exist_ok=True)

# WsParams (native/kernels/interface/sm90_ws_params.json): o, lse, B, Hq, Hkv, Sq, Skv, gqa_group, scale_log2, num_m_blocks, group_heads, pad
WS_PARAMS = "<QQiiiiiifiii"
assert struct.calcsize(WS_PARAMS) == 56
BLOCK_M = 128
LOG2E = 1.4426950408889634


# ----------------------------------------------------------------------------
# child side: CUDA driver through ctypes (run.py's loader), tensor maps, launches
def child_setup():
    global torch, F, R, cu
    import torch as _t
    import torch.nn.functional as _f
    torch, F = _t, _f
    torch.zeros(1, device="cuda")           # primary context current before any driver call
    os.environ["OUT"] = os.path.join(OUT, "child")   # run.py opens $OUT/log.txt: keep it out of ours
    os.makedirs(os.environ["OUT"], exist_ok=True)
    sys.path.insert(0, HERE)
    import run as _r
    R = _r
    cu = R.cu
    cu.cuMemcpyHtoD_v2.argtypes = [ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t]
    cu.cuTensorMapEncodeTiled.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p,
                                          ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                          ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]


class WsKernel:
    """A kernel of build/<cubin>.cubin with its <name>_cfg = {threads, smem, BM, BN, D, stages}."""
    _mods = {}

    def __init__(self, cubin, name):
        if cubin not in WsKernel._mods:
            m = ctypes.c_void_p()
            R.ck(cu.cuModuleLoadData(ctypes.byref(m), open(os.path.join(BUILD, cubin + ".cubin"), "rb").read()), "load " + cubin)
            WsKernel._mods[cubin] = m
        mod = WsKernel._mods[cubin]
        self.name = name
        # debug build (-DWS_DEBUG_TIMEOUT): int ws_debug_timeout[4] = {count, block, thread, tag * 2 + parity}
        dbg, dsz = ctypes.c_uint64(), ctypes.c_size_t()
        self.dbg = dbg.value if cu.cuModuleGetGlobal_v2(ctypes.byref(dbg), ctypes.byref(dsz), mod, b"ws_debug_timeout") == 0 else None
        f = ctypes.c_void_p()
        R.ck(cu.cuModuleGetFunction(ctypes.byref(f), mod, name.encode()), "get " + name)
        self.f = f
        dptr, sz = ctypes.c_uint64(), ctypes.c_size_t()
        R.ck(cu.cuModuleGetGlobal_v2(ctypes.byref(dptr), ctypes.byref(sz), mod, (name + "_cfg").encode()), "cfg")
        buf = (ctypes.c_int * 6)()
        R.ck(cu.cuMemcpyDtoH_v2(ctypes.cast(buf, ctypes.c_void_p), dptr.value, 24), "cfg copy")
        self.threads, self.smem, self.bm, self.bn, self.d, self.stages = list(buf)
        R.ck(cu.cuFuncSetAttribute(f, 8, self.smem), "smem attr")   # MAX_DYNAMIC_SHARED_SIZE_BYTES
        v = ctypes.c_int()
        R.ck(cu.cuFuncGetAttribute(ctypes.byref(v), 4, f), "regs")
        self.regs = v.value
        R.ck(cu.cuFuncGetAttribute(ctypes.byref(v), 3, f), "local")
        self.local = v.value

    def debug_reset(self):
        if self.dbg is not None:
            z = (ctypes.c_int * 4)()
            R.ck(cu.cuMemcpyHtoD_v2(self.dbg, ctypes.cast(z, ctypes.c_void_p), 16), "debug reset")

    def debug_record(self):
        """None, or a description of the first mbarrier wait that gave up (debug build only)."""
        if self.dbg is None:
            return None
        r = (ctypes.c_int * 4)()
        R.ck(cu.cuMemcpyDtoH_v2(ctypes.cast(r, ctypes.c_void_p), self.dbg, 16), "debug read")
        if r[0] == 0:
            return None
        tag, par = divmod(r[3], 2)
        what = {1: "q_full"}.get(tag) or ["k_empty", "v_empty", "k_full", "v_full"][tag // 10 - 1] + f"[{tag % 10}]"
        return f"{r[0]} waits timed out; first: block {r[1]} thread {r[2]} barrier {what} parity {par}"

    def desc(self):
        return f"{self.name}: threads={self.threads} smem={self.smem} BM={self.bm} BN={self.bn} D={self.d} " \
               f"stages={self.stages} regs(entry)={self.regs} local={self.local}"


def tensor_map(t, box_rows):
    """CUtensorMap (128 bytes) of a contiguous [B, H, S, D] 16-bit tensor as 3-D {D, S, B*H}, box {64, rows, 1},
    128-byte swizzle (the Sw128Tile panel layout), zero fill out of bounds."""
    assert t.is_contiguous() and t.element_size() == 2
    B, H, S, D = t.shape
    dtype = 9 if t.dtype == torch.bfloat16 else 6            # CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 / FLOAT16
    raw = ctypes.create_string_buffer(128 + 64)
    addr = (ctypes.addressof(raw) + 63) & ~63                 # CUtensorMap is 64-byte aligned
    dims = (ctypes.c_uint64 * 3)(D, S, B * H)
    strides = (ctypes.c_uint64 * 2)(D * 2, S * D * 2)         # bytes, dims 1..2
    box = (ctypes.c_uint32 * 3)(64, box_rows, 1)
    estr = (ctypes.c_uint32 * 3)(1, 1, 1)
    R.ck(cu.cuTensorMapEncodeTiled(addr, dtype, 3, ctypes.c_void_p(t.data_ptr()), dims, strides, box, estr,
                                   0, 3, 2, 0), "cuTensorMapEncodeTiled")   # no interleave, SWIZZLE_128B, L2 128B, zero fill
    return ctypes.string_at(addr, 128)


def group_heads(causal, nM, BH):
    """Tile scheduler groups (native/kernels/sm90_ws_scheduler.cuh tile_scheduler): causal, as many (b, h) as one wave of one CTA per SM
    covers whole (K/V of G heads in L2, longest blocks first); non-causal one head at a time."""
    if not causal:
        return 1
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    return max(1, min(BH, (sms + nM - 1) // nM))


def pad_rows(t, rows):
    """t [B, H, S, D] with S < rows: a zero-padded copy with `rows` rows. Some sources say a tensor map's box may not
    exceed the tensor's extent in any dimension (others rely on it); the kernel masks kv >= Skv and skips q >= Sq,
    so the padded rows change nothing. The `boxprobe` group tests the unpadded form."""
    if t.shape[2] >= rows:
        return t
    p = torch.zeros(t.shape[0], t.shape[1], rows, t.shape[3], device=t.device, dtype=t.dtype)
    p[:, :, :t.shape[2]] = t
    return p


class Launch:
    """Prepared launch of a ws kernel on fixed tensors (tensor maps encoded once; reused for timing)."""

    def __init__(self, k, q, kk, v, o, lse, causal, scale=None, pad_small=True):
        B, Hq, Sq, D = q.shape
        Hkv, Skv = kk.shape[1], kk.shape[2]
        assert D == k.d and Hq % Hkv == 0
        scale = scale if scale is not None else 1.0 / math.sqrt(D)
        nM = (Sq + BLOCK_M - 1) // BLOCK_M
        if pad_small:
            q, kk, v = pad_rows(q, BLOCK_M), pad_rows(kk, k.bn), pad_rows(v, k.bn)
        pb = struct.pack(WS_PARAMS, o.data_ptr(), lse.data_ptr() if lse is not None else 0, B, Hq, Hkv, Sq, Skv,
                         Hq // Hkv, scale * LOG2E, nM, group_heads(causal, nM, B * Hq), 0)
        self.bufs = [ctypes.create_string_buffer(b, len(b)) for b in
                     (tensor_map(q, BLOCK_M), tensor_map(kk, k.bn), tensor_map(v, k.bn), pb)]
        self.args = (ctypes.c_void_p * 4)(*[ctypes.cast(b, ctypes.c_void_p) for b in self.bufs])
        self.k, self.grid = k, nM * Hq * B
        self.keep = (q, kk, v, o, lse)

    def __call__(self):
        stream = torch.cuda.current_stream().cuda_stream
        R.ck(cu.cuLaunchKernel(self.k.f, self.grid, 1, 1, self.k.threads, 1, 1, self.k.smem, stream, self.args, None),
             "launch " + self.k.name)


CUBIN = "sm90_ws"   # correctness groups' cubin (--cubin sm90_ws_dbg: the bounded-wait debug build)


def emit(rec):
    print("RESULT " + json.dumps(rec), flush=True)


def check(tag, cubin, name, B, Hq, Hkv, Sq, Skv, D, dt, causal, scale=None, seed=0, pad_small=True, probe=False):
    dtype = torch.bfloat16 if dt == "bf16" else torch.float16
    q, kk, v = R.make_qkv(B, Hq, Hkv, Sq, Skv, D, dtype, seed=seed)
    sc = scale if scale is not None else 1.0 / math.sqrt(D)
    ro, rl = R.ref_attention(q, kk, v, sc, causal=causal)
    o, lse = R.poisoned(q)                                   # NaN before the launch: unwritten outputs fail
    k = WsKernel(cubin, name)
    k.debug_reset()
    Launch(k, q, kk, v, o, lse, causal, scale, pad_small)()
    err = cu.cuCtxSynchronize()
    if err != 0:
        R.ck(err, "sync after " + name)
    timeout = k.debug_record()
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    nan_o, nan_l = torch.isnan(o).sum().item(), torch.isnan(lse).sum().item()
    e = R.rel_err(o, ro)
    fin = torch.isfinite(rl)
    inf_ok = bool(torch.equal(torch.isneginf(lse), torch.isneginf(rl)))
    le = (lse[fin] - rl[fin]).abs().max().item() if fin.any() else 0.0
    ok = nan_o == 0 and nan_l == 0 and e <= tol and le < 1e-2 and inf_ok and timeout is None
    line = f"{'PASS' if ok else 'FAIL'} {tag:58s} {name:26s} rel={e:.2e} lse={le:.1e} nan={nan_o}/{nan_l} inf_ok={inf_ok}"
    if timeout:
        line += f"\n    DEADLOCK (debug build): {timeout}"
    if not ok:
        re_ = ((o.float() - ro.float()).norm(dim=-1) / ro.float().norm(dim=-1).clamp_min(1e-6)).nan_to_num(1e9)
        bad = torch.nonzero((re_ > 0.05).any(dim=0).any(dim=0)).flatten().tolist()
        line += f"\n    bad rows: {len(bad)} of {Sq}: {bad[:12]} .. {bad[-6:]}"
    print(line, flush=True)
    emit(dict(kind="probe" if probe else "correct", tag=tag, kernel=name, rel_err=e, lse_err=le, nan_o=nan_o,
              nan_lse=nan_l, ok=ok))
    return ok


# (B, Hq, Hkv, Sq, Skv)
CASES = [(1, 2, 2, 1, 1), (1, 2, 2, 77, 77), (2, 3, 3, 1531, 1531), (1, 2, 2, 4096, 4096), (2, 2, 2, 77, 1000),
         (2, 2, 2, 1000, 77), (2, 8, 2, 513, 700), (1, 8, 2, 1531, 1531), (1, 2, 2, 1, 333), (2, 4, 1, 300, 129)]


def group_smoke():
    ok = True
    for causal in (False, True):
        for (B, Hq, Hkv, Sq, Skv) in ((1, 2, 2, 77, 77), (1, 2, 1, 300, 300), (1, 1, 1, 1, 1)):
            nm = "ws_d128_bf16" + ("_causal" if causal else "")
            ok &= check(f"smoke(dbg) B{B} Hq{Hq} Hkv{Hkv} Sq{Sq} Skv{Skv} c={int(causal)}", "sm90_ws_dbg", nm,
                        B, Hq, Hkv, Sq, Skv, 128, "bf16", causal, seed=Sq)


def group_cases(D, dts):
    for dt in dts:
        for causal in (False, True):
            nm = f"ws_d{D}_{dt}" + ("_causal" if causal else "")
            for (B, Hq, Hkv, Sq, Skv) in CASES:
                check(f"B{B} Hq{Hq} Hkv{Hkv} Sq{Sq} Skv{Skv} d{D} {dt} c={int(causal)}", CUBIN, nm,
                      B, Hq, Hkv, Sq, Skv, D, dt, causal, seed=Sq + 3 * Skv + D)


def group_extra():
    for sc in (0.3, -0.05):
        for causal in (False, True):
            check(f"scale={sc} gqa2 Sq600 Skv900 d128 c={int(causal)}", CUBIN,
                  "ws_d128_bf16" + ("_causal" if causal else ""), 2, 4, 2, 600, 900, 128, "bf16", causal, scale=sc, seed=11)
    for tag in ("s3", "n176"):
        for causal in (False, True):
            for (B, Hq, Hkv, Sq, Skv) in ((2, 2, 2, 999, 999), (1, 8, 2, 1531, 2000), (1, 2, 2, 77, 77), (1, 2, 2, 300, 177)):
                check(f"{tag} B{B} Hq{Hq} Hkv{Hkv} Sq{Sq} Skv{Skv} d128 c={int(causal)}", CUBIN,
                      "ws_d128_bf16" + ("_causal" if causal else "") + "_" + tag, B, Hq, Hkv, Sq, Skv, 128, "bf16", causal,
                      seed=Sq)


def group_boxprobe():
    """Sequences shorter than the TMA box (128 rows) without host padding: tells whether a box may exceed the
    tensor's extent (the library would otherwise pad or shrink the box). Reported apart from the main count."""
    for (Sq, Skv) in ((1, 1), (77, 77), (77, 1000), (1000, 77)):
        check(f"boxprobe unpadded Sq{Sq} Skv{Skv} d128 c=1", CUBIN, "ws_d128_bf16_causal", 1, 2, 2, Sq, Skv, 128,
              "bf16", True, seed=Sq, pad_small=False, probe=True)


def rotate(xs, k):
    k %= len(xs)
    return xs[k:] + xs[:k]


WS_VARIANTS = {"ws": "", "ws_s3": "_s3", "ws_n176": "_n176"}   # timed ws kernels: key -> name suffix


def group_time(reps, budget):
    from torch.nn.attention import sdpa_kernel, SDPBackend
    end = time.time() + budget
    B, H, D = 4, 16, 128
    have_old = os.path.exists(os.path.join(BUILD, "sm90.cubin"))
    for S in (1024, 4096, 8192):
        for causal in (False, True):
            if time.time() > end:
                print(f"!! time budget: skipping S={S} causal={causal}", flush=True)
                continue
            c = "_causal" if causal else ""
            q, kk, v = R.make_qkv(B, H, H, S, S, D, torch.bfloat16, seed=S)
            o, lse = R.poisoned(q)
            pairs = S * (S + 1) // 2 if causal else S * S
            fns = {key: Launch(WsKernel("sm90_ws", "ws_d128_bf16" + c + suf), q, kk, v, o, lse, causal)
                   for key, suf in WS_VARIANTS.items()}
            if have_old:
                ko = R.kernel("sm90", "sm90_d128_bf16" + c)
                fns["old"] = lambda ko=ko: R.launch(ko, q, kk, v, o, lse)

            def sdpa(bk):
                def f():
                    with sdpa_kernel(bk):
                        return F.scaled_dot_product_attention(q, kk, v, is_causal=causal)
                return f
            for key, bk in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
                try:
                    sdpa(bk)()
                    fns[key] = sdpa(bk)
                except Exception as e:   # noqa: BLE001  (a backend that refuses the shape is left out)
                    print(f"!! SDPA {key} unavailable at S={S}: {e}", flush=True)
            # sanity on the timed shape: ws (both ring depths) against the flash backend's output
            ref = (fns.get("flash") or fns.get("cudnn"))().float()
            for key in WS_VARIANTS:
                o.fill_(float("nan"))
                fns[key]()
                torch.cuda.synchronize()
                e = R.rel_err(o, ref)
                ok = e < 1e-2 and not torch.isnan(o).any().item()
                print(f"{'PASS' if ok else 'FAIL'} timed shape S={S} c={int(causal)} {key} vs flash rel={e:.2e}", flush=True)
                emit(dict(kind="correct", tag=f"timed S{S} c={int(causal)} {key} vs flash", kernel=key, rel_err=e, ok=ok))
            row = dict(kind="time", S=S, causal=causal)
            for rep in range(reps):
                for key in rotate(list(fns), rep):
                    ms = R.bench(fns[key], iters=20, warmup=3)
                    row.setdefault(key, []).append(round(R.tflops(B, H, D, pairs, ms), 1))
            print("   " + json.dumps(row), flush=True)
            emit(row)


def group_sass():
    """SASS instruction counts per kernel (cuobjdump is on the GPU machine, not the dev machine)."""
    import re
    os.environ["PATH"] = "/usr/local/cuda/bin:" + os.environ.get("PATH", "")
    for cub in ("sm90_ws", "sm90_ws_dbg"):
        p = os.path.join(BUILD, cub + ".cubin")
        try:
            s = subprocess.run(["cuobjdump", "-sass", p], capture_output=True, text=True, timeout=60).stdout
        except Exception as e:   # noqa: BLE001
            print("   cuobjdump failed:", e, flush=True)
            return
        for part in s.split("Function : ")[1:]:
            name = part.split("\n", 1)[0].strip()
            cnt = {k: len(re.findall(k, part)) for k in ("UTMALDG", "HGMMA", "SYNCS", "USETMAXREG", r"BAR\.SYNC",
                                                          r"BAR\.ARV", "LDL", "STL")}
            print(f"   sass {cub}:{name:28s} " + " ".join(f"{k.replace(chr(92), '')}={v}" for k, v in cnt.items()), flush=True)
            emit(dict(kind="sass", cubin=cub, kernel=name, **cnt))


def child_main(group, reps, budget, cubin):
    global CUBIN
    CUBIN = cubin
    if group == "sass":   # no torch, no GPU
        group_sass()
        return
    child_setup()
    print(f"== group {group} on {torch.cuda.get_device_name(0)}", flush=True)
    if group in ("smoke", "correct_d128"):
        for nm in ("ws_d128_bf16", "ws_d128_bf16_causal_s3"):
            print("   " + WsKernel("sm90_ws_dbg" if group == "smoke" else CUBIN, nm).desc(), flush=True)
    if group == "smoke":
        group_smoke()
    elif group == "correct_d128":
        group_cases(128, ("bf16", "f16"))
    elif group == "correct_d64":
        group_cases(64, ("bf16", "f16"))
    elif group == "correct_extra":
        group_extra()
    elif group == "time":
        group_time(reps, budget)
    elif group == "boxprobe":
        group_boxprobe()


# ----------------------------------------------------------------------------
# parent side: one subprocess per group, with a timeout
def run_group(group, timeout, reps, log, cubin):
    t0 = time.time()
    cmd = [sys.executable, os.path.abspath(__file__), "--child", group, "--reps", str(reps), "--cubin", cubin,
           "--budget", str(max(10, timeout - 25))]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        out, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        out += f"\nHANG group {group}: no exit after {timeout:.0f} s (killed)\n"
        rc = "timeout"
    recs = []
    for line in out.splitlines():
        if line.startswith("RESULT "):
            recs.append(json.loads(line[7:]))
        else:
            log(line)
    if rc not in (0,):
        log(f"CRASH group {group}: rc={rc}" if rc != "timeout" else f"HANG group {group}")
    log(f"-- group {group}: {time.time() - t0:.1f} s, rc={rc}")
    return rc, recs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=280)
    ap.add_argument("--phases", default="sass,smoke,correct,time,boxprobe")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--child")
    ap.add_argument("--cubin", default="sm90_ws", help="cubin of the correctness groups (sm90_ws_dbg: debug build)")
    a = ap.parse_args()
    if a.child:
        child_main(a.child, a.reps, a.budget, a.cubin)
        return
    T0 = time.time()
    end = T0 + a.budget
    lf = open(os.path.join(OUT, "ws_log.txt"), "w")

    def log(s):
        print(s, flush=True)
        lf.write(s + "\n")
        lf.flush()

    phases = a.phases.split(",")
    groups = []
    if "sass" in phases:
        groups.append(("sass", 60))
    if "smoke" in phases:
        groups.append(("smoke", 45))
    if "correct" in phases:
        groups += [("correct_d128", 75), ("correct_d64", 50), ("correct_extra", 50)]
    if "time" in phases:
        groups.append(("time", 150))
    if "boxprobe" in phases:
        groups.append(("boxprobe", 40))
    allrec, status = [], {}
    for g, lim in groups:
        left = end - time.time()
        if left < 20:
            log(f"!! budget: skipping group {g}")
            status[g] = "skipped"
            continue
        if g != "smoke" and g != "sass" and status.get("smoke") not in (None, 0):
            log(f"!! smoke group failed ({status['smoke']}): release build not launched")
            status[g] = "skipped"
            continue
        reserve = 40 if g == "time" and "boxprobe" in phases else 0   # keep time for the group after it
        rc, recs = run_group(g, min(lim, left - 5) if g != "time" else left - 5 - reserve, a.reps, log, a.cubin)
        if g == "smoke" and rc == 0 and not all(r["ok"] for r in recs if r["kind"] == "correct"):
            rc = "fail"
        status[g] = rc
        allrec += recs
    corr = [r for r in allrec if r["kind"] == "correct"]
    npass = sum(r["ok"] for r in corr)
    log(f"correct: {npass}/{len(corr)} passed" + ("" if npass == len(corr) and corr else "  <-- FAILURES / NOT RUN"))
    probes = [r for r in allrec if r["kind"] == "probe"]
    if probes:
        log(f"boxprobe (box > tensor extent, unpadded; not in the count above): {sum(r['ok'] for r in probes)}/{len(probes)} passed")
    log("groups: " + " ".join(f"{g}={s}" for g, s in status.items()))
    rows = [r for r in allrec if r["kind"] == "time"]
    if rows:
        med = lambda xs: sorted(xs)[len(xs) // 2] if xs else float("nan")
        log("TFLOPs (median of reps), B4 H16 D128 bf16. ws = 128x128 2-stage, ws_s3 = 3-stage, ws_n176 = 128x176;")
        log("old = our current sm90 kernel (build/sm90.cubin); best = the best ws variant")
        keys = ("ws", "ws_s3", "ws_n176", "old", "cudnn", "flash")
        log(f"{'S':>6} {'causal':>6} " + " ".join(f"{k:>8}" for k in keys) +
            f" {'ws/cudnn':>9} {'best/cudnn':>10} {'ws/flash':>9} {'ws/old':>7} {'best/old':>8}")
        for r in rows:
            m = {k: med(r.get(k, [])) for k in keys}
            best = max((m[k] for k in WS_VARIANTS if m[k] == m[k]), default=float("nan"))
            log(f"{r['S']:>6} {int(r['causal']):>6} " + " ".join(f"{m[k]:>8.1f}" for k in keys) +
                f" {m['ws'] / m['cudnn']:>9.2f} {best / m['cudnn']:>10.2f} {m['ws'] / m['flash']:>9.2f}"
                f" {m['ws'] / m['old']:>7.2f} {best / m['old']:>8.2f}")
    with open(os.path.join(OUT, "ws_results.json"), "w") as f:
        json.dump(dict(status={k: str(v) for k, v in status.items()}, records=allrec), f, indent=1)
    log(f"total {time.time() - T0:.0f} s")


if __name__ == "__main__":
    main()
