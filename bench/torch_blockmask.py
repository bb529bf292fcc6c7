#!/usr/bin/env python3
"""PyTorch side of the block-mask comparison (see bench/compare-blockmask-torch.mjs).

Usage: python3 bench/torch_blockmask.py OUT_DIR [--compile] [--reps N]

For every case writes OUT_DIR/<case>.<array>.bin (raw little-endian int32,
C order) for kv_num_blocks, kv_indices, full_kv_num_blocks, full_kv_indices,
plus the document ids used (docids_<S>_b<B>.bin, int32 [B, S]) and
OUT_DIR/manifest.json describing cases, shapes and timings. Timings: eager
`create_block_mask(..., device='cuda')`, 3 warm-up calls, median of N (default
20) with torch.cuda.synchronize() around each call. `--compile` also times
`torch.compile(create_block_mask)` (compile time reported separately, excluded
from the median; adds about a minute).
"""
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
from torch.nn.attention.flex_attention import create_block_mask

ARRAYS = ["kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"]


def causal_mod():
    def causal(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx
    return causal


def sliding_mod(w):
    # flexattn: slidingWindow(w) = q - kv < w && kv - q <= 0
    def sliding(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx < w)
    return sliding


def prefix_mod(n):
    # flexattn: prefixLM(n) = kv < n || kv <= q
    def prefix(b, h, q_idx, kv_idx):
        return (kv_idx < n) | (kv_idx <= q_idx)
    return prefix


def doc_mod(doc_ids):
    # flexattn: documentMask(docIds) (causal) = docIds[b,q] == docIds[b,kv] && kv <= q
    def doc(b, h, q_idx, kv_idx):
        return (doc_ids[b, q_idx] == doc_ids[b, kv_idx]) & (kv_idx <= q_idx)
    return doc


def make_doc_ids(B, S, seed, mean_len):
    rng = np.random.default_rng(seed)
    ids = np.zeros((B, S), dtype=np.int32)
    for b in range(B):
        d, i = 0, 0
        while i < S:
            n = int(rng.integers(max(1, mean_len // 4), mean_len * 2))
            ids[b, i:i + n] = d
            d += 1
            i += n
    return ids


def timed(fn, reps):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    if time.perf_counter() - t0 > 1.0:  # very slow case: keep the whole run short
        reps = min(reps, 3)
    else:
        for _ in range(2):
            fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts), min(ts)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out = args[0] if args else "bench/results/torch_blockmask"
    do_compile = "--compile" in sys.argv
    reps = 20
    if "--reps" in sys.argv:
        reps = int(sys.argv[sys.argv.index("--reps") + 1])
    os.makedirs(out, exist_ok=True)
    dev = "cuda"
    t_start = time.perf_counter()

    cases = []

    def add(name, kind, B, H, S, mod_fn, timing, doc_file=None, extra=None):
        cases.append(dict(name=name, kind=kind, B=B, H=H, S=S, mod=mod_fn, timing=timing, doc_file=doc_file, extra=extra or {}))

    for S, timing in [(2500, False), (8192, True)]:
        add(f"causal_{S}", "causal", 1, 1, S, causal_mod(), timing)
        add(f"sliding1024_{S}", "sliding", 1, 1, S, sliding_mod(1024), timing, extra={"window": 1024})
        add(f"prefix2048_{S}", "prefix", 1, 1, S, prefix_mod(2048), timing, extra={"n": 2048})
        B = 2
        ids = make_doc_ids(B, S, seed=S, mean_len=700)
        doc_file = f"docids_{S}_b{B}.bin"
        ids.tofile(os.path.join(out, doc_file))
        ids_t = torch.from_numpy(ids).to(dev)
        add(f"doc_causal_{S}", "document", B, 1, S, doc_mod(ids_t), timing, doc_file=doc_file)
    add("sliding1024_131072", "sliding", 1, 1, 131072, sliding_mod(1024), True, extra={"window": 1024, "dump": False})

    manifest = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "block": 128, "reps": reps, "cases": []}
    for c in cases:
        entry = {k: c[k] for k in ("name", "kind", "B", "H", "S", "doc_file")}
        entry.update(c["extra"])
        dump = c["extra"].get("dump", True)
        fn = lambda: create_block_mask(c["mod"], c["B"], c["H"], c["S"], c["S"], device=dev)
        try:
            if dump:
                bm = fn()
                entry["arrays"] = {}
                for a in ARRAYS:
                    t = getattr(bm, a)
                    arr = t.to(torch.int32).contiguous().cpu().numpy()
                    arr.tofile(os.path.join(out, f"{c['name']}.{a}.bin"))
                    entry["arrays"][a] = list(arr.shape)
                entry["sparsity"] = bm.sparsity()
            if c["timing"]:
                med, mn = timed(fn, reps)
                entry["eager_ms"] = med
                entry["eager_min_ms"] = mn
        except torch.OutOfMemoryError as e:  # e.g. eager at S=131072 materialises S*S
            entry["eager_error"] = f"OOM: {str(e).splitlines()[0]}"
            torch.cuda.empty_cache()
        except Exception as e:  # keep going: one failure must not lose the rest
            entry["eager_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            torch.cuda.empty_cache()
        if do_compile and c["timing"]:
            try:
                compiled = torch.compile(create_block_mask)  # what PyTorch recommends over _compile=True
                cfn = lambda: compiled(c["mod"], c["B"], c["H"], c["S"], c["S"], device=dev)
                t0 = time.perf_counter()
                cfn()
                torch.cuda.synchronize()
                entry["compile_first_call_s"] = time.perf_counter() - t0
                med, mn = timed(cfn, reps)
                entry["compiled_ms"] = med
                entry["compiled_min_ms"] = mn
            except Exception as e:
                entry["compiled_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                torch.cuda.empty_cache()
        manifest["cases"].append(entry)
        print(f"{c['name']:>22}  eager {entry.get('eager_ms', float('nan')):9.3f} ms"
              + (f"  compiled {entry.get('compiled_ms', float('nan')):9.3f} ms" if do_compile and c["timing"] else "")
              + (f"  ({entry.get('eager_error')})" if "eager_error" in entry else ""), flush=True)

    manifest["wall_s"] = time.perf_counter() - t_start
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"wrote {out}/manifest.json ({manifest['wall_s']:.1f} s, {manifest['device']}, torch {manifest['torch']})")


if __name__ == "__main__":
    main()
