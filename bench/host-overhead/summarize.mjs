import { readFileSync } from 'node:fs';
const rows = readFileSync(process.argv[2], 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.rep > 0);
const med = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const g = {};
for (const r of rows) for (const k of ['returnUs', 'awaitedUs', 'pipelinedUs']) (g[`${r.tree.split('/').pop()} ${r.op} ${k}`] ??= []).push(r[k]);
for (const [k, xs] of Object.entries(g)) console.log(`${k.padEnd(32)} median ${med(xs).toFixed(2).padStart(7)}  min ${Math.min(...xs).toFixed(2).padStart(7)}  n=${xs.length}`);
