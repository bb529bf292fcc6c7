// node analyze.mjs prof.cpuprofile [top] [--filter substr] : self and total ms by function (file:line), and self by file.
import { readFileSync } from 'node:fs';
const [file, topS = '40'] = process.argv.slice(2);
const fi = process.argv.indexOf('--filter'); const filt = fi > 0 ? process.argv[fi + 1] : null;
const p = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const short = (u) => u.replace(/^file:\/\/.*?\/(?=(dist|lib|bench|test)\/)/, '').replace(/^node:/, 'node:');
const key = (n) => { const f = n.callFrame; return `${f.functionName || '(anon)'} ${short(f.url)}:${f.lineNumber + 1}`; };
const self = new Map(), total = new Map(), fileSelf = new Map();
let sum = 0;
for (let i = 0; i < p.samples.length; i++) {
  const dt = (p.timeDeltas[i + 1] ?? 0) / 1000; // ms attributed to sample i
  sum += dt;
  let n = byId.get(p.samples[i]);
  const k0 = key(n);
  self.set(k0, (self.get(k0) ?? 0) + dt);
  const fk = short(n.callFrame.url) || n.callFrame.functionName;
  fileSelf.set(fk, (fileSelf.get(fk) ?? 0) + dt);
  const seen = new Set();
  for (let id = p.samples[i]; id !== undefined; id = parent.get(id)) {
    const k = key(byId.get(id));
    if (!seen.has(k)) { seen.add(k); total.set(k, (total.get(k) ?? 0) + dt); }
  }
}
const top = Number(topS);
const show = (m, title) => {
  console.log(`\n== ${title} (of ${sum.toFixed(0)} ms)`);
  [...m].filter(([k]) => !filt || k.includes(filt)).sort((a, b) => b[1] - a[1]).slice(0, top)
    .forEach(([k, v]) => console.log(`${v.toFixed(1).padStart(8)} ms ${(100 * v / sum).toFixed(1).padStart(5)}%  ${k}`));
};
show(self, 'self by function');
show(total, 'total by function');
show(fileSelf, 'self by file');
