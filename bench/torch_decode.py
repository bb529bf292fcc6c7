#!/usr/bin/env python3
"""PyTorch side of the decode rows (issue 19 §5; cases from bench/decode-cases.mjs,
emitted by `node bench/run.mjs --emit-cases DIR` as DIR/decode-cases.json).

Times, on the same card: the device-to-device copy bandwidth (copy_ of 1 GiB,
read + write counted); SDPA with the FLASH_ATTENTION, CUDNN_ATTENTION and
EFFICIENT_ATTENTION backends; torch.compile(flex_attention). Paged rows are
timed on their dense equivalent (the same sequences as contiguous [B, H, S, D]
KV); the ragged batch on KV padded to its longest sequence with a length mask
(flex block mask; SDPA bool mask). Timing as bench/torch_attention.py.

usage: python3 bench/torch_decode.py --cases DIR --out torch-decode.json [--budget SECONDS] [--quick]
"""
import argparse, json, math, os, time

import torch
import torch.nn.functional as F

T0 = time.time()


def bench(fn, reps, min_n, target_ms):
    fn()
    torch.cuda.synchronize()

    def sample(n):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
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
    return dict(ms=ts[m] if len(ts) % 2 else 0.5 * (ts[m - 1] + ts[m]), min_ms=ts[0], max_ms=ts[-1], n=n, reps=reps)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget", type=float, default=120.0)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    reps, min_n, target = (5, 5, 2.0) if args.quick else (20, 20, 10.0)
    from torch.nn.attention import sdpa_kernel, SDPBackend
    from torch.nn.attention.flex_attention import flex_attention, create_block_mask
    cflex = torch.compile(flex_attention, dynamic=False)
    dev = torch.device("cuda:0")
    spec = json.load(open(os.path.join(args.cases, "decode-cases.json")))
    res = dict(side="torch", torch=torch.__version__, cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(dev),
               sms=torch.cuda.get_device_properties(dev).multi_processor_count,
               date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), cases=[], errors=[])

    def save():
        res["total_seconds"] = time.time() - T0
        json.dump(res, open(args.out, "w"), indent=1)

    src = torch.empty(1 << 30, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    cp = bench(lambda: dst.copy_(src), reps, min_n, target)
    res["copy"] = dict(cp, bytes=2 * src.numel(), gbs=2 * src.numel() / (cp["ms"] * 1e-3) / 1e9)
    print(f"device-to-device copy: {res['copy']['gbs']:.0f} GB/s (read + write)", flush=True)
    del src, dst
    save()

    for c in spec["cases"]:
        if time.time() > T0 + args.budget:
            res["cases"].append(dict(id=c["id"], skipped="time budget"))
            continue
        row = dict(id=c["id"])
        try:
            B, Hq, Hkv, S, D = c["B"], c["Hq"], c["Hkv"], c["Skv"], c["D"]
            g = torch.Generator(device=dev).manual_seed(1)
            q = torch.randn(B, Hq, 1, D, device=dev, dtype=torch.bfloat16, generator=g)
            k = torch.randn(B, Hkv, S, D, device=dev, dtype=torch.bfloat16, generator=g)
            v = torch.randn(B, Hkv, S, D, device=dev, dtype=torch.bfloat16, generator=g)
            gqa = Hq != Hkv
            ragged = len(set(c["lengths"])) > 1
            lens = torch.tensor(c["lengths"], device=dev, dtype=torch.int32)
            mm, sm, am = None, None, None
            if ragged:
                mm = lambda b, h, qi, kv: kv < lens[b]
                am = (torch.arange(S, device=dev)[None, :] < lens[:, None]).view(B, 1, 1, S)
            if c.get("mod") == "softcap":
                cap = float(c["softcap"])
                sm = lambda s, b, h, qi, kv: cap * torch.tanh(s / cap)
            if c.get("mod") == "swa":
                w = c["window"]
                mm = lambda b, h, qi, kv: (S - 1 + qi - kv) < w  # the query is the last position, S - 1
                am = (torch.arange(S, device=dev) > S - 1 - w).view(1, 1, 1, S)
            if sm is None:
                for name, be in (("fa2", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                                 ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
                    try:
                        with sdpa_kernel(be):
                            row[name] = bench(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=am, enable_gqa=gqa),
                                              reps, min_n, target)
                    except Exception as e:
                        row[name + "_error"] = str(e).split("\n")[0][:300]
            try:
                bm = create_block_mask(mm, B if ragged else None, None, 1, S, device=dev) if mm is not None else None
                fn = lambda: cflex(q, k, v, score_mod=sm, block_mask=bm, enable_gqa=gqa)
                t = time.time()
                fn()
                torch.cuda.synchronize()
                row["flex_first_call_s"] = time.time() - t
                row["flex"] = bench(fn, reps, min_n, target)
            except Exception as e:
                row["flex_error"] = str(e).split("\n")[0][:300]
            del q, k, v
        except Exception as e:
            row["error"] = str(e).split("\n")[0][:500]
            res["errors"].append(f"{c['id']}: {row['error']}")
        res["cases"].append(row)
        parts = [f"{kk}={row[kk]['ms']:.4f}ms" for kk in ("fa2", "cudnn", "efficient", "flex") if isinstance(row.get(kk), dict)]
        print(f"{c['id']:<48} {' '.join(parts)} {row.get('error', '')}  [{time.time() - T0:.0f}s]", flush=True)
        save()
    save()


if __name__ == "__main__":
    main()
