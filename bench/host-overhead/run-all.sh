#!/bin/bash
# run-all.sh [treeDir...]: interleaves the trees, ROUNDS processes each, REPS hostOverhead runs per process
# (rep 0 = warm-up, dropped), then prints medians. Default trees: the three built ones.
cd "$(dirname "$0")"
ROUNDS=${ROUNDS:-5}; REPS=${REPS:-4}; OUTF=${OUTF:-$(mktemp -t flexattn-overhead.XXXXXX.jsonl)}
trees=("$@"); [ ${#trees[@]} -eq 0 ] && trees=(../..)
: > "$OUTF"
for r in $(seq $ROUNDS); do
  for t in "${trees[@]}"; do
    node --require ./preload.cjs overhead.mjs $t --calls 2000 --reps $REPS --json >> "$OUTF"
  done
done
node summarize.mjs "$OUTF"
