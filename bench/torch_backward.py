#!/usr/bin/env python3
"""PyTorch side of the backward benchmark (issue 21, "Bars").

Times the cases of bench/backward-cases.mjs (emitted with `node bench/run.mjs
--emit-cases DIR` as DIR/backward-cases.json) with PyTorch on the same card:
SDPA with the FLASH_ATTENTION (FA2), CUDNN_ATTENTION and EFFICIENT_ATTENTION
backends on the causal rows (dense D = 128 / 64 and flex causal), and
torch.compile(flex_attention) with create_block_mask on every row, including the
learnable relative-bias table (score + table[h, q - kv + S - 1], the table with
requires_grad, so its gradient is computed; the "no gradFor" row without).

Each implementation is timed twice:
  bwd     backward only: torch.autograd.grad(out, inputs, dOut, retain_graph=True)
          on one forward's graph (no accumulation into .grad);
  fwdBwd  forward + torch.autograd.grad(out, inputs, dOut).
Timing and helpers come from bench/torch_attention.py (CUDA events around n
back-to-back calls, n raised until a sample lasts >= 10 ms, median of 20 after
warm-up); TFLOPs are computed by bench/backward-report.mjs from the shared pair counts.

usage: python3 bench/torch_backward.py --cases DIR --out torch-backward.json [--budget S] [--quick] [--only TEXT]
       python3 bench/torch_backward.py --cases DIR --out x.json --device cpu --quick   (smoke test, tiny cases)
"""
import argparse, json, os, sys, time, traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torch_attention as ta  # noqa: E402  (bench(), mask_fns(), compiled_flex(), the CPU switch)

T0 = time.time()


def log(*a):
    print(*a, flush=True)


def short(e):
    return "".join(traceback.format_exception_only(type(e), e)).strip().split("\n")[0][:400]


def same_bits(a, b):
    return bool(torch.equal(a.view(torch.int16) if a.dtype in (torch.bfloat16, torch.float16) else a.view(torch.int32),
                            b.view(torch.int16) if b.dtype in (torch.bfloat16, torch.float16) else b.view(torch.int32)))


def time_impl(fwd, inputs, dout, reps, min_n, target):
    """{bwd, fwdBwd}: each a timing dict from ta.bench or {error}."""
    r = {}
    try:
        out = fwd()
        r["bwd"] = ta.bench(lambda: torch.autograd.grad(out, inputs, dout, retain_graph=True), reps, min_n, target)
        del out
    except Exception as e:
        r["bwd"] = dict(error=short(e))
    try:
        r["fwdBwd"] = ta.bench(lambda: torch.autograd.grad(fwd(), inputs, dout), reps, min_n, target)
    except Exception as e:
        r["fwdBwd"] = dict(error=short(e))
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", required=True, help="directory written by `node bench/run.mjs --emit-cases`")
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget", type=float, default=400.0, help="seconds; cases past it are recorded as skipped")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", action="append", default=[], help="only cases whose id contains TEXT (repeatable)")
    ap.add_argument("--device", default="cuda:0", help="cpu: smoke test (tiny cases, eager flex), no timing value")
    args = ap.parse_args()
    deadline = T0 + args.budget
    ta.CPU = args.device == "cpu"
    reps, min_n, target = (5, 5, 2.0) if args.quick else (20, 20, 10.0)

    from torch.nn.attention import sdpa_kernel, SDPBackend
    from torch.nn.attention.flex_attention import flex_attention, create_block_mask

    # On the CPU (smoke test) flex_attention runs eagerly: compiling it there takes minutes and times nothing useful.
    cflex = flex_attention if ta.CPU else ta.compiled_flex()
    spec = json.load(open(os.path.join(args.cases, "backward-cases.json")))
    dev = torch.device(args.device)
    res = dict(side="torch", version=spec["version"], torch=torch.__version__,
               gpu="cpu (smoke test)" if ta.CPU else torch.cuda.get_device_name(dev),
               cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
               date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               timing=dict(reps=reps, min_n=min_n, target_sample_ms=target,
                           method="cuda events around n back-to-back calls, /n, median over reps; "
                                  "bwd = autograd.grad(out, inputs, dOut, retain_graph=True) on one forward's graph"),
               flex="eager flex_attention (cpu smoke test)" if ta.CPU else "torch.compile(flex_attention, dynamic=False)",
               cases=[], errors=[], doc_lengths={})
    log(f"torch {torch.__version__} cuda {torch.version.cuda} cudnn {res['cudnn']} on {res['gpu']}")

    def save():
        res["total_seconds"] = time.time() - T0
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)

    cases = [c for c in spec["cases"] if not args.only or any(t.lower() in c["id"].lower() for t in args.only)]
    for c in cases:
        if time.time() > deadline:
            res["cases"].append(dict(id=c["id"], skipped="time budget"))
            continue
        row = dict(id=c["id"], kind=c["kind"], pattern=c["pattern"], pairs=c["pairs"], bwdFlops=c["bwdFlops"],
                   fwdBwdFlops=c["fwdBwdFlops"])
        try:
            B, Hq, Hkv, S, D = c["B"], c["Hq"], c["Hkv"], c["S"], c["D"]
            g = torch.Generator(device=dev).manual_seed(1)
            rnd = lambda H: torch.randn(B, H, S, D, device=dev, dtype=torch.bfloat16, generator=g)
            q, k, v = (rnd(h).requires_grad_(True) for h in (Hq, Hkv, Hkv))
            dout = rnd(Hq)
            gqa = Hq != Hkv
            inputs = [q, k, v]
            if c["pattern"] == "relbias":
                table = torch.randn(Hq, 2 * S - 1, device=dev, dtype=torch.float32, generator=g)
                if c.get("gradFor"):
                    table.requires_grad_(True)
                    inputs.append(table)
                off = S - 1
                mm, sm, bdim = (lambda b, h, qi, kv: kv <= qi), (lambda s, b, h, qi, kv: s + table[h, qi - kv + off]), None
            elif c["pattern"] == "alibi" and c.get("gradFor"):
                # Learnable slopes: their gradient is computed (the "gradFor slopes" row).
                slopes = torch.tensor(ta.alibi_slopes(Hq), device=dev, dtype=torch.float32).requires_grad_(True)
                inputs.append(slopes)
                mm, sm, bdim = (lambda b, h, qi, kv: kv <= qi), (lambda s, b, h, qi, kv: s + slopes[h] * (kv - qi)), None
            else:
                mm, sm, bdim = ta.mask_fns(c, args.cases, dev, res["doc_lengths"])
            if c["pattern"] == "causal":
                for name, be in (("fa2", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                                 ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
                    def fwd(be=be):
                        with sdpa_kernel(be):
                            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
                    row[name] = time_impl(fwd, inputs, dout, reps, min_n, target)
            try:
                bm = create_block_mask(mm, bdim, None, S, S, device=dev) if mm is not None else None
                fwd = lambda: cflex(q, k, v, score_mod=sm, block_mask=bm, enable_gqa=gqa)
                t = time.time()
                torch.autograd.grad(fwd(), inputs, dout)  # compiles the forward and the backward
                ta.sync()
                row["flex_first_call_s"] = time.time() - t
                row["flex"] = time_impl(fwd, inputs, dout, reps, min_n, target)
                if bm is not None:
                    row["flex_block_density"] = 1.0 - bm.sparsity() / 100.0
                # PyTorch accumulates captured-tensor gradients with atomics: are two runs bit-identical?
                a, b = torch.autograd.grad(fwd(), inputs, dout), torch.autograd.grad(fwd(), inputs, dout)
                row["flex_deterministic"] = dict(dq=same_bits(a[0], b[0]),
                                                 dCaptured=[same_bits(x, y) for x, y in zip(a[3:], b[3:])])
                del a, b
            except Exception as e:
                row["flex"] = dict(error=short(e))
                res["errors"].append(f"{c['id']} flex: {row['flex']['error']}")
            del q, k, v, dout, inputs
        except Exception as e:
            row["error"] = short(e)
            res["errors"].append(f"{c['id']}: {row['error']}")
        res["cases"].append(row)
        parts = []
        for kk in ("fa2", "cudnn", "efficient", "flex"):
            x = row.get(kk)
            if isinstance(x, dict):
                fmt = lambda m: f"{m['ms']:.4f}" if "ms" in m else "ERR"
                parts.append(f"{kk}=" + (f"bwd {fmt(x['bwd'])} fwd+bwd {fmt(x['fwdBwd'])} ms" if "bwd" in x else "ERR"))
        log(f"{c['id']:<50} {'  '.join(parts)} {row.get('error', '')}  [{time.time() - T0:.0f}s]")
        save()
    log(f"total {time.time() - T0:.1f}s")
    save()


if __name__ == "__main__":
    main()
