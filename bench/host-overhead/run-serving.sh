#!/bin/bash
# run-serving.sh [treeDir...]: serving.mjs on each tree, interleaved, ROUNDS processes each; prints the median
# over processes of each row (each process already reports a median over its rounds). Default tree: this checkout.
cd "$(dirname "$0")"
ROUNDS=${ROUNDS:-3}; OUTF=${OUTF:-$(mktemp -t flexattn-serving.XXXXXX.jsonl)}
trees=("$@"); [ ${#trees[@]} -eq 0 ] && trees=(../..)
: > "$OUTF"
for r in $(seq $ROUNDS); do
  for t in "${trees[@]}"; do
    node --require ./preload.cjs serving.mjs $t --json $SERVING_ARGS >> "$OUTF"
  done
done
node -e '
const rows = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map((l) => JSON.parse(l));
const med = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const g = new Map();
for (const r of rows) { const k = `${r.tree.split("/").slice(-2).join("/")} ${r.op}`; if (!g.has(k)) g.set(k, []); g.get(k).push(r.us); }
for (const [k, xs] of g) console.log(`${k.padEnd(40)} median ${med(xs).toFixed(1).padStart(8)} us  min ${Math.min(...xs).toFixed(1).padStart(8)}  n=${xs.length}`);
' "$OUTF"
