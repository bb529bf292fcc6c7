// SVG chart of a merged benchmark (bench/report.mjs): for every case, one
// horizontal bar per implementation that has a number (flexattn and each
// PyTorch backend), in TFLOP/s, grouped by case group. Plain SVG, no script
// and no external fonts, so it renders the same on GitHub and in any viewer.

/** Implementations in the order their bars are drawn; `get` reads one merged row (bench/report.mjs merge()). */
export const SERIES = [
  { key: 'ours', label: 'flexattn', color: '#1f4e9a', get: (r) => r.ours?.tflops },
  { key: 'fa2', label: 'PyTorch SDPA flash (FA2)', color: '#f28e2b', get: (r) => r.torch?.fa2 },
  { key: 'cudnn', label: 'PyTorch SDPA cuDNN', color: '#59a14f', get: (r) => r.torch?.cudnn },
  { key: 'efficient', label: 'PyTorch SDPA mem-efficient', color: '#b07aa1', get: (r) => r.torch?.efficient },
  { key: 'flex', label: 'PyTorch compiled flex_attention', color: '#9c755f', get: (r) => r.torch?.flex },
];

const GROUP_TITLES = { dense: 'Dense sweep (SDPA)', flex: 'Flex patterns', gqa: 'GQA prefill' };

const W = 1000;
const LABEL_W = 270; // case names, right-aligned against the plot
const PLOT_X = LABEL_W + 10;
const PLOT_W = 620;
const BAR_H = 9;
const BAR_STEP = 11;
const CASE_GAP = 9;
const SECTION_HEAD = 26;

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const num = (x) => Number(x.toFixed(1));
const finite = (x) => typeof x === 'number' && Number.isFinite(x) && x >= 0;

/** The axis end and tick step: a round number at or above the largest value. */
function axis(max) {
  const step = max > 400 ? 100 : max > 100 ? 50 : max > 20 ? 10 : max > 5 ? 1 : max > 0.5 ? 0.1 : 0.01;
  return { step, end: Math.max(step, Math.ceil(max / step) * step) };
}

/**
 * SVG text of the chart. `rows` are merge()'s rows; `meta` = { card, date, torchVersion, node }.
 * Bars carry data-case / data-series / data-tflops so a reader (or a test) can recover every number.
 */
export function attentionChartSvg(rows, meta = {}) {
  const groups = [];
  for (const r of rows) {
    const bars = SERIES.filter((s) => finite(s.get(r))).map((s) => ({ s, v: s.get(r) }));
    if (!bars.length) continue;
    let g = groups.find((x) => x.name === r.group);
    if (!g) groups.push((g = { name: r.group, cases: [] }));
    g.cases.push({ id: r.id, bars });
  }
  const used = SERIES.filter((s) => groups.some((g) => g.cases.some((c) => c.bars.some((b) => b.s === s))));
  const max = Math.max(0, ...groups.flatMap((g) => g.cases.flatMap((c) => c.bars.map((b) => b.v))));
  const { step, end } = axis(max);
  const xOf = (v) => PLOT_X + (v / end) * PLOT_W;

  const out = [];
  const title = `Attention forward, bf16 — ${meta.card ?? 'unknown card'}`;
  const sub = ['TFLOP/s per case (higher is better), counted on the unmasked (q, kv) pairs',
    meta.date ? `run ${String(meta.date).slice(0, 10)}` : '', meta.torchVersion ? `PyTorch ${meta.torchVersion}` : '',
    meta.node ? `Node ${meta.node}` : ''].filter(Boolean).join(' · ');
  let y = 28;
  out.push(`<text x="20" y="${y}" class="title">${esc(title)}</text>`);
  y += 18;
  out.push(`<text x="20" y="${y}" class="sub">${esc(sub)}</text>`);
  // legend, wrapped over as many lines as it needs
  y += 22;
  let lx = 20;
  for (const s of used) {
    const w = 18 + s.label.length * 6.4 + 18;
    if (lx + w > W - 20) { lx = 20; y += 18; }
    out.push(`<g class="legend" data-series="${s.key}"><rect x="${lx}" y="${y - 9}" width="12" height="12" fill="${s.color}"/>` +
      `<text x="${lx + 17}" y="${y + 1}" class="label">${esc(s.label)}</text></g>`);
    lx += w;
  }
  y += 26;
  const plotTop = y;
  const body = [];
  for (const g of groups) {
    body.push(`<text x="20" y="${y + 14}" class="section">${esc(GROUP_TITLES[g.name] ?? g.name)}</text>`);
    y += SECTION_HEAD;
    for (const c of g.cases) {
      const h = c.bars.length * BAR_STEP;
      body.push(`<text x="${LABEL_W}" y="${y + h / 2 + 4}" class="label" text-anchor="end">${esc(c.id)}</text>`);
      for (const [i, { s, v }] of c.bars.entries()) {
        const by = y + i * BAR_STEP;
        const w = Math.max(0.5, xOf(v) - PLOT_X);
        body.push(`<rect class="bar" data-case="${esc(c.id)}" data-series="${s.key}" data-tflops="${num(v)}" ` +
          `x="${PLOT_X}" y="${by}" width="${w.toFixed(1)}" height="${BAR_H}" fill="${s.color}">` +
          `<title>${esc(`${c.id} — ${s.label}: ${num(v)} TFLOP/s`)}</title></rect>`);
        body.push(`<text x="${(PLOT_X + w + 4).toFixed(1)}" y="${by + BAR_H - 1}" class="value">${num(v)}</text>`);
      }
      y += h + CASE_GAP;
    }
  }
  const plotBottom = y;
  // grid and axis labels (drawn first, so bars sit on top)
  const grid = [];
  for (let t = 0; t <= end + step / 2; t += step) {
    const x = xOf(t).toFixed(1);
    const label = Number(t.toFixed(2));
    grid.push(`<line x1="${x}" y1="${plotTop - 4}" x2="${x}" y2="${plotBottom}" class="${t === 0 ? 'axis' : 'grid'}"/>`);
    grid.push(`<text x="${x}" y="${plotTop - 8}" class="tick" text-anchor="middle">${label}</text>`);
    grid.push(`<text x="${x}" y="${plotBottom + 14}" class="tick" text-anchor="middle">${label}</text>`);
  }
  const H = Math.ceil(plotBottom + 36);
  grid.push(`<text x="${PLOT_X + PLOT_W / 2}" y="${plotBottom + 30}" class="tick" text-anchor="middle">TFLOP/s</text>`);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif">`,
    '<style>.title{font-size:16px;font-weight:bold}.sub{font-size:11px;fill:#444}.section{font-size:13px;font-weight:bold}' +
      '.label{font-size:11px}.value{font-size:8.5px;fill:#333}.tick{font-size:10px;fill:#555}' +
      '.grid{stroke:#ddd;stroke-width:1}.axis{stroke:#888;stroke-width:1}</style>',
    `<rect x="0" y="0" width="${W}" height="${H}" fill="#fff"/>`,
    ...out, ...grid, ...body,
    '</svg>',
    '',
  ].join('\n');
}
