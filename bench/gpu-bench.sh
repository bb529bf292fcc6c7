#!/usr/bin/env bash
# Attention benchmark on the GPU machine, ours and PyTorch on the same card in one call
# (see ../shared/device/README.md and bench/README.md). Everything lands in $OUT:
#   card.txt, cases/ (case list + doc ids), ours.json/.log, torch.json/.log, torch-decode.json/.log,
#   decode.<card-slug>.json/.md (the decode rows: GB/s, of copy bandwidth, ours / best PyTorch),
#   attention.<card-slug>.json/.md (merged; copy these to bench/results/).
#   carry:   [".device", "build/Release/flexattn.node", "dist"]
#   command: bash bench/gpu-bench.sh [quick]
# Total wall time is kept under ~235 s: our suite gets 100 s at most, PyTorch the rest
# (its optional compiled-flex columns for the dense sweep stop at the budget).
set -uo pipefail
T0=$(date +%s)
LIMIT=${BENCH_LIMIT_S:-235}
source .device/boot.sh
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export FLEXATTN_CACHE_DIR=/tmp/flexattn-bench-cache
QUICK=(); [ "${1:-}" = quick ] && QUICK=(--quick)
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,power.limit \
  --format=csv 2>&1 | tee "$OUT/card.txt"
status=0
node bench/run.mjs --emit-cases "$OUT/cases" || status=1

echo "== flexattn (node bench/run.mjs)"
timeout 100 node bench/run.mjs --out "$OUT/ours.json" --budget 80 "${QUICK[@]}" 2>&1 | tee "$OUT/ours.log" || status=1

left=$(( LIMIT - ($(date +%s) - T0) - 8 ))
echo "== PyTorch (bench/torch_attention.py), ${left}s left"
if [ "$left" -gt 30 ]; then
  PYTHONUNBUFFERED=1 timeout "$left" python3 bench/torch_attention.py --cases "$OUT/cases" --out "$OUT/torch.json" \
    --budget $(( left - 25 )) "${QUICK[@]}" 2>&1 | grep -v "^W[0-9]\{4\} " | tee "$OUT/torch.log" || status=1
fi

left=$(( LIMIT - ($(date +%s) - T0) - 8 ))
echo "== PyTorch decode rows (bench/torch_decode.py), ${left}s left"
if [ "$left" -gt 20 ]; then
  PYTHONUNBUFFERED=1 timeout "$left" python3 bench/torch_decode.py --cases "$OUT/cases" --out "$OUT/torch-decode.json" \
    --budget $(( left - 10 )) "${QUICK[@]}" 2>&1 | grep -v "^W[0-9]\{4\} " | tee "$OUT/torch-decode.log" || status=1
fi

echo "== report"
node bench/decode-report.mjs --ours "$OUT/ours.json" --torch "$OUT/torch-decode.json" --outdir "$OUT" > "$OUT/decode-report.log" 2>&1 || status=1
tail -n 30 "$OUT/decode-report.log"
node bench/report.mjs --ours "$OUT/ours.json" --torch "$OUT/torch.json" --cases "$OUT/cases" --outdir "$OUT" > "$OUT/report.log" 2>&1 || status=1
tail -n 60 "$OUT/report.log"
echo "total $(( $(date +%s) - T0 ))s, status $status"
exit $status
