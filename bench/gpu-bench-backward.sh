#!/usr/bin/env bash
# Backward benchmark and correctness comparison on the GPU machine (issue 21), ours and PyTorch on the same
# card in one device call (see CONTRIBUTING.md, "The GPU machine"). Everything lands in $OUT:
#   card.txt, cases/ (backward-cases.json + doc ids), ours-backward.json/.log, torch-backward.json/.log,
#   backward.<card-slug>.json/.md (merged, with the bars; copy these to bench/results/),
#   compare-node.log, compare.log, compare-result.json (the raw inputs and gradients, ~300 MB, stay in
#   /tmp/bwd-compare on the machine: too big to bring back).
#   carry:   [".device", "build/Release/flexattn.node", "dist"]
#   command: bash bench/gpu-bench-backward.sh [quick] [bench|compare]
# Wall time is kept under ~560 s (the 600 s limit of one call): the comparison first (small, ~1-2 min with
# its compiles), ours next (<= 120 s), PyTorch with what is left (compiled flex backward is compiled once per row).
set -uo pipefail
T0=$(date +%s)
LIMIT=${BENCH_LIMIT_S:-560}
source .device/boot.sh
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export FLEXATTN_CACHE_DIR=/tmp/flexattn-bench-cache
QUICK=(); [ "${1:-}" = quick ] && { QUICK=(--quick); shift; }
WHAT=${1:-all}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,power.limit \
  --format=csv 2>&1 | tee "$OUT/card.txt"
status=0

if [ "$WHAT" = all ] || [ "$WHAT" = compare ]; then
  echo "== correctness against PyTorch's flex_attention backward (lengths 77 and 1531, GQA 8/2)"
  CMP=/tmp/bwd-compare; rm -rf "$CMP"
  node bench/compare-backward.mjs --device cuda:0 --out "$CMP" 2>&1 | tee "$OUT/compare-node.log" || status=1
  PYTHONUNBUFFERED=1 timeout 240 python3 bench/compare-backward-torch.py --dir "$CMP" --device cuda:0 --json "$OUT/compare-result.json" 2>&1 \
    | grep -v "^W[0-9]\{4\} " | tee "$OUT/compare.log" || status=1
  cp "$CMP/manifest.json" "$OUT/compare-manifest.json" 2>/dev/null
fi

if [ "$WHAT" = all ] || [ "$WHAT" = bench ]; then
  node bench/run.mjs --only backward --emit-cases "$OUT/cases" || status=1
  echo "== flexattn backward rows (node bench/run.mjs --only backward)"
  timeout 150 node bench/run.mjs --only backward --out "$OUT/ours-backward.json" --budget 120 "${QUICK[@]}" 2>&1 \
    | tee "$OUT/ours-backward.log" || status=1
  left=$(( LIMIT - ($(date +%s) - T0) - 10 ))
  echo "== PyTorch backward rows (bench/torch_backward.py), ${left}s left"
  if [ "$left" -gt 40 ]; then
    PYTHONUNBUFFERED=1 timeout "$left" python3 bench/torch_backward.py --cases "$OUT/cases" --out "$OUT/torch-backward.json" \
      --budget $(( left - 30 )) "${QUICK[@]}" 2>&1 | grep -v "^W[0-9]\{4\} " | tee "$OUT/torch-backward.log" || status=1
  fi
  echo "== report"
  node bench/backward-report.mjs --ours "$OUT/ours-backward.json" --torch "$OUT/torch-backward.json" --outdir "$OUT" \
    > "$OUT/backward-report.log" 2>&1 || status=1
  tail -n 45 "$OUT/backward-report.log"
fi
echo "total $(( $(date +%s) - T0 ))s, status $status"
exit $status
