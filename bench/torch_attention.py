#!/usr/bin/env python3
"""PyTorch side of the attention benchmark (issue 4, item 5).

Times the cases of bench/cases.mjs (emitted with `node bench/run.mjs --emit-cases DIR`)
with PyTorch on the same card: SDPA with the FLASH_ATTENTION (FA2), CUDNN_ATTENTION
and EFFICIENT_ATTENTION backends, and torch.compile(flex_attention) with
create_block_mask for the same masks / score mods.

usage: python3 bench/torch_attention.py --cases DIR --out torch.json [--budget SECONDS] [--quick]

Timing: torch.cuda events around n back-to-back calls (n >= 20, raised until a
sample lasts >= 10 ms), per-call time = elapsed / n, median of reps >= 20
samples after warm-up; the same amortisation as bench/run.mjs. TFLOPs are
computed by bench/report.mjs from the shared exact pair counts.
"""
import argparse, json, math, os, sys, time, traceback

import torch
import torch.nn.functional as F

T0 = time.time()


def log(*a):
    print(*a, flush=True)


CPU = False  # --device cpu: smoke test of this script without a GPU (wall clock instead of events)


def sync():
    if not CPU:
        torch.cuda.synchronize()


def bench(fn, reps, min_n, target_ms):
    fn()  # first call: compile / autotune / handle creation
    sync()

    def sample(n):
        if CPU:
            t = time.perf_counter()
            for _ in range(n):
                fn()
            return (time.perf_counter() - t) * 1e3 / n
        e0 = torch.cuda.Event(enable_timing=True)
        e1 = torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(n):
            fn()
        e1.record()
        e1.synchronize()
        return e0.elapsed_time(e1) / n

    est = sample(3)
    n = max(min_n, min(400, math.ceil(target_ms / max(est, 1e-3))))
    sample(n)
    ts = sorted(sample(n) for _ in range(reps))
    m = len(ts) // 2
    med = ts[m] if len(ts) % 2 else 0.5 * (ts[m - 1] + ts[m])
    return dict(ms=med, min_ms=ts[0], max_ms=ts[-1], n=n, reps=reps)


def alibi_slopes(H):
    return [2 ** (-8 * (i + 1) / H) for i in range(H)]


def compiled_flex():
    """torch.compile(flex_attention) with Dynamo's recompile limits raised (one compile per case)."""
    from torch.nn.attention.flex_attention import flex_attention
    for k, v in (("cache_size_limit", 512), ("recompile_limit", 512),
                 ("accumulated_cache_size_limit", 4096), ("accumulated_recompile_limit", 4096)):
        if hasattr(torch._dynamo.config, k):
            setattr(torch._dynamo.config, k, v)
    return torch.compile(flex_attention, dynamic=False)


def mask_fns(c, cases_dir, dev, doc_lengths=None):
    """(mask_mod or None, score_mod or None, block-mask batch dim) for a case of bench/cases.mjs.

    Document ids are read from the file the Node side wrote (cases_dir/docIdsFile); their
    lengths go to doc_lengths[c["id"]] so the report can check both sides used the same documents.
    """
    pat = c.get("pattern")
    causal = lambda b, h, q, kv: kv <= q
    if pat in (None, "full"):
        return None, None, None
    if pat == "causal":
        return causal, None, None
    if pat == "swa":
        w = c["window"]
        return (lambda b, h, q, kv: (kv <= q) & (q - kv < w)), None, None
    if pat == "prefix":
        n = c["prefix"]
        return (lambda b, h, q, kv: (kv < n) | (kv <= q)), None, None
    if pat == "doc":
        ids = torch.frombuffer(bytearray(open(os.path.join(cases_dir, c["docIdsFile"]), "rb").read()),
                               dtype=torch.int32).view(c["B"], c["S"]).to(dev)
        if doc_lengths is not None:
            lens = []
            for b in range(c["B"]):
                _, counts = torch.unique_consecutive(ids[b], return_counts=True)
                lens.append(counts.tolist())
            doc_lengths[c["id"]] = lens
        return (lambda b, h, q, kv: (kv <= q) & (ids[b, q] == ids[b, kv])), None, c["B"]
    if pat == "softcap":
        cap = float(c["softcap"])
        return causal, (lambda s, b, h, q, kv: cap * torch.tanh(s / cap)), None
    if pat == "alibi":
        slopes = torch.tensor(alibi_slopes(c["Hq"]), device=dev, dtype=torch.float32)
        return causal, (lambda s, b, h, q, kv: s + slopes[h] * (kv - q)), None
    raise ValueError(pat)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", required=True, help="directory written by `node bench/run.mjs --emit-cases`")
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget", type=float, default=150.0, help="seconds; later optional work is skipped")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda:0", help="cpu: smoke test (tiny cases), no timing value")
    ap.add_argument("--no-flex-sweep", action="store_true", help="compiled flex only at S=4096 in the dense sweep")
    args = ap.parse_args()
    deadline = T0 + args.budget
    global CPU
    CPU = args.device == "cpu"
    reps, min_n, target = (5, 5, 2.0) if args.quick else (20, 20, 10.0)

    from torch.nn.attention import sdpa_kernel, SDPBackend
    from torch.nn.attention.flex_attention import create_block_mask

    cflex = compiled_flex()

    spec = json.load(open(os.path.join(args.cases, "cases.json")))
    dev = torch.device(args.device)
    res = dict(side="torch", version=spec["version"], torch=torch.__version__,
               gpu="cpu (smoke test)" if CPU else torch.cuda.get_device_name(dev),
               cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
               sms=None if CPU else torch.cuda.get_device_properties(dev).multi_processor_count,
               date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               timing=dict(reps=reps, min_n=min_n, target_sample_ms=target,
                           method="cuda events around n back-to-back calls, /n, median over reps"),
               cases=[], host_overhead=[], errors=[], doc_lengths={})
    log(f"torch {torch.__version__} cuda {torch.version.cuda} cudnn {res['cudnn']} on {res['gpu']}")

    def save():
        res["total_seconds"] = time.time() - T0
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)

    def run_flex(c, row, q, k, v):
        mm, sm, bdim = mask_fns(c, args.cases, dev, res["doc_lengths"])
        bm = (create_block_mask(mm, bdim, None, c["S"], c["S"], device=dev, BLOCK_SIZE=c.get("blockSize", 128))
              if mm is not None else None)
        gqa = c["Hq"] != c["Hkv"]
        # A BlockMask finer than the kernel's default tile needs a tile that divides it
        # (Inductor: "Q and KV block size must be divisible by BLOCK_M and BLOCK_N").
        bs = c.get("blockSize", 128)
        ko = {"BLOCK_M": bs, "BLOCK_N": bs} if bs < 128 else None
        fn = lambda: cflex(q, k, v, score_mod=sm, block_mask=bm, enable_gqa=gqa, kernel_options=ko)
        t = time.time()
        fn()
        sync()
        row["flex_first_call_s"] = time.time() - t
        r = bench(fn, reps, min_n, target)
        row["flex"] = r
        if bm is not None:
            row["flex_block_density"] = 1.0 - bm.sparsity() / 100.0

    cases = spec["cases"]
    # the dense sweep's compiled-flex columns other than S=4096 are optional (one compile each): do them last
    later = []
    for c in cases:
        if time.time() > deadline:
            res["cases"].append(dict(id=c["id"], skipped="time budget"))
            continue
        row = dict(id=c["id"], group=c["group"], op=c["op"], pairs=c["pairs"], flops=c["flops"])
        try:
            g = torch.Generator(device=dev).manual_seed(1)
            q = torch.randn(c["B"], c["Hq"], c["S"], c["D"], device=dev, dtype=torch.bfloat16, generator=g)
            k = torch.randn(c["B"], c["Hkv"], c["S"], c["D"], device=dev, dtype=torch.bfloat16, generator=g)
            v = torch.randn(c["B"], c["Hkv"], c["S"], c["D"], device=dev, dtype=torch.bfloat16, generator=g)
            gqa = c["Hq"] != c["Hkv"]
            if c["op"] == "sdpa":
                causal = bool(c.get("causal"))
                backends = [("fa2", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)]
                if c["S"] == 4096 or c["group"] != "dense":
                    backends.append(("efficient", SDPBackend.EFFICIENT_ATTENTION))
                for name, be in backends:
                    try:
                        with sdpa_kernel(be):
                            row[name] = bench(lambda: F.scaled_dot_product_attention(
                                q, k, v, is_causal=causal, enable_gqa=gqa), reps, min_n, target)
                    except Exception as e:  # e.g. a backend that does not take GQA: time it on expanded k/v
                        row[name + "_error"] = str(e).split("\n")[0][:300]
                        if gqa:
                            try:
                                g_ = c["Hq"] // c["Hkv"]
                                ke, ve = k.repeat_interleave(g_, dim=1), v.repeat_interleave(g_, dim=1)
                                with sdpa_kernel(be):
                                    row[name] = bench(lambda: F.scaled_dot_product_attention(
                                        q, ke, ve, is_causal=causal), reps, min_n, target)
                                row[name + "_note"] = "k/v expanded to Hq heads (backend has no enable_gqa)"
                                del ke, ve
                            except Exception as e2:
                                row[name + "_error2"] = str(e2).split("\n")[0][:300]
                # compiled flex on the dense sweep: S=4096 now, the rest at the end if time allows
                if c["group"] == "dense":
                    if c["S"] == 4096:
                        run_flex(c, row, q, k, v)
                    elif not args.no_flex_sweep:
                        later.append(c)
            else:
                run_flex(c, row, q, k, v)
            del q, k, v
        except Exception as e:
            row["error"] = "".join(traceback.format_exception_only(type(e), e)).strip()[:500]
            res["errors"].append(f"{c['id']}: {row['error']}")
        res["cases"].append(row)
        parts = [f"{kk}={row[kk]['ms']:.4f}ms" for kk in ("fa2", "cudnn", "efficient", "flex") if isinstance(row.get(kk), dict)]
        log(f"{c['id']:<44} {' '.join(parts)} {row.get('error', '')}  [{time.time() - T0:.0f}s]")
        save()

    # tiny problem: host-side cost of one call (1000 calls, one synchronize at the end)
    try:
        q = torch.randn(1, 1, 128, 64, device=dev, dtype=torch.bfloat16)
        calls = 200 if args.quick else 1000
        items = [("F.scaled_dot_product_attention (causal, default backend)",
                  lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True))]
        if time.time() < deadline - 20:
            bm = create_block_mask(lambda b, h, qi, kv: kv <= qi, None, None, 128, 128, device=dev)
            items.append(("compiled flex_attention (causal BlockMask + softcap)",
                          lambda: cflex(q, q, q, score_mod=lambda s, b, h, qi, kv: 30.0 * torch.tanh(s / 30.0), block_mask=bm)))
        for name, fn in items:
            for _ in range(100):
                fn()
            sync()
            t = time.perf_counter()
            for _ in range(calls):
                fn()
            ret = (time.perf_counter() - t) / calls * 1e6
            sync()
            res["host_overhead"].append(dict(op=name, calls=calls, return_us=ret,
                                             with_sync_us=(time.perf_counter() - t) / calls * 1e6))
            log(f"host overhead {name}: {ret:.1f} us/call")
    except Exception as e:
        res["errors"].append(f"host overhead: {e}")
    save()

    for c in later:
        if time.time() > deadline:
            break
        row = next(r for r in res["cases"] if r["id"] == c["id"])
        try:
            g = torch.Generator(device=dev).manual_seed(1)
            q, k, v = (torch.randn(c["B"], c["Hq"], c["S"], c["D"], device=dev, dtype=torch.bfloat16, generator=g)
                       for _ in range(3))
            run_flex(c, row, q, k, v)
            log(f"{c['id']:<44} flex={row['flex']['ms']:.4f}ms  [{time.time() - T0:.0f}s]")
        except Exception as e:
            row["flex_error"] = str(e).split("\n")[0][:300]
        save()
    log(f"total {time.time() - T0:.1f}s")
    save()


if __name__ == "__main__":
    main()
