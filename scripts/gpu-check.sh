#!/usr/bin/env bash
# One call on the GPU machine (see ../shared/device/README.md): the whole test
# suite with FLEXATTN_REQUIRE_GPU=1, the NVRTC-only path, the CLI, and the
# block-mask comparison/benchmark against PyTorch. Logs go to $OUT.
#   carry: [".device", "build/Release/flexattn.node", "dist"]
#   command: bash scripts/gpu-check.sh [quick|suite|subsets]
# quick = everything but the block-mask comparison. The suite and the subsets (NVRTC-only,
# sm80, CLI) together can come close to the 600 s limit of one device call (timings:
# bench/results/kernel-notes.md, "Figures moved out of code comments"): run `suite` and
# `subsets` as two calls when in doubt.
set -uo pipefail
source .device/boot.sh
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export FLEXATTN_REQUIRE_GPU=1 FLEXATTN_CACHE_DIR=/tmp/flexattn-cache
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/card.txt"
status=0
MODE=${1:-full}
if [ "$MODE" != subsets ]; then
  node_modules/.bin/vitest run 2>&1 | tee "$OUT/vitest.log" | tail -25 || status=1
fi
[ "$MODE" = suite ] && exit $status
echo "== NVRTC path (fatbin disabled)"
FLEXATTN_DISABLE_FATBIN=1 node_modules/.bin/vitest run test/gpu/tensor.test.ts test/gpu/runtime-native.test.ts test/gpu/attention.test.ts -t "Tensor|native|odd lengths" 2>&1 | tee "$OUT/vitest-nvrtc.log" | tail -4 || status=1
echo "== mma.sync family everywhere (FLEXATTN_KERNEL_FAMILY=sm80)"
FLEXATTN_KERNEL_FAMILY=sm80 node_modules/.bin/vitest run test/gpu/attention.test.ts \
  -t "every head dim|odd lengths|GQA and cross|dense bool|score mods with captured|fully masked|families" 2>&1 | tee "$OUT/vitest-sm80.log" | tail -4 || status=1
node dist/lib/cli.js info 2>&1 | tee "$OUT/info.txt"
node dist/lib/cli.js demo 2>&1 | tee "$OUT/demo.txt"
if [ "$MODE" = quick ] || [ "$MODE" = subsets ]; then exit $status; fi
echo "== block masks vs PyTorch"
PYTHONUNBUFFERED=1 python3 bench/torch_blockmask.py /tmp/torch_bm 2>&1 | tail -20
node bench/compare-blockmask-torch.mjs /tmp/torch_bm "$OUT/blockmask-vs-torch.json" 2>&1 | tee "$OUT/blockmask-vs-torch.md" || status=1
node bench/blockmask.mjs "$OUT/blockmask.json" 2>&1 | tee "$OUT/blockmask-bench.md" | tail -30
exit $status
