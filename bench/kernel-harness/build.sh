#!/bin/bash
# Build the harness cubins (run on the dev machine; carry build/ to the GPU).
# usage: ./build.sh [name...]   (default: all *.cu here)
#   NVFLAGS="-D..." SUFFIX=_old ./build.sh ...   extra nvcc flags; build/<name><SUFFIX>.cubin (A/B variants)
set -e
cd "$(dirname "$0")"
mkdir -p build
ARCH=${ARCH:-"-gencode=arch=compute_90a,code=sm_90a"}
srcs=("$@"); [ ${#srcs[@]} -eq 0 ] && srcs=(*.cu)
# flex_docgen.cu includes the code generator's output (needs the built dist/; skipped without it).
if node gen_doc_mod.mjs > build/gen_doc_mod.cuh.tmp 2> /dev/null; then
  mv build/gen_doc_mod.cuh.tmp build/gen_doc_mod.cuh
else
  rm -f build/gen_doc_mod.cuh.tmp
  [ -f build/gen_doc_mod.cuh ] || { echo "skipping flex_docgen.cu: run npm run build:ts first"; srcs=("${srcs[@]/flex_docgen.cu}"); }
fi
for f in "${srcs[@]}"; do
  [ -n "$f" ] || continue
  n=$(basename "$f" .cu)
  nvcc -cubin $ARCH -O3 --use_fast_math -std=c++17 $NVFLAGS -Xptxas -v -o build/$n$SUFFIX.cubin "$n.cu" 2> build/$n$SUFFIX.ptxas.log &
done
wait
for f in "${srcs[@]}"; do
  [ -n "$f" ] || continue
  n=$(basename "$f" .cu)
  python3 - "$n$SUFFIX" <<'PY'
import re,sys
n=sys.argv[1]
txt=open(f"build/{n}.ptxas.log").read()
if "error" in txt: print(txt); sys.exit(1)
cur=None
for line in txt.splitlines():
    m=re.search(r"Compiling entry function '(\w+)'",line)
    if m: cur=m.group(1); continue
    m=re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores",line)
    if m: st=(m.group(1),m.group(2))
    m=re.search(r"Used (\d+) registers",line)
    if m and cur: print(f"  {cur:48s} regs={m.group(1):>3} stack={st[0]:>4} spill_st={st[1]:>4}")
PY
done
