#!/usr/bin/env bash
# Everything the GPU calls of scripts/gpu-verify-pending.sh carry, built on the development machine
# (a fresh checkout has none of it): node_modules, the addon for sm_90a (the GPU machine has an H100 or
# H200), dist/, the kernel-harness cubins (release and the bounded-wait debug builds) and the device kit.
#   usage: bash scripts/gpu-verify-build.sh        (~5 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules ] || npm ci --ignore-scripts
FLEXATTN_ARCHS=90a npm run build
(cd bench/kernel-harness
  ./build.sh decode.cu sm90.cu sm90_ws.cu
  SUFFIX=_tmo NVFLAGS=-DDEC_DEBUG_TIMEOUT ./build.sh decode.cu
  SUFFIX=_dbg NVFLAGS=-DWS_DEBUG_TIMEOUT ./build.sh sm90_ws.cu)
bash ../shared/device/pack.sh
du -sh .device build/Release/flexattn.node dist bench/kernel-harness/build
