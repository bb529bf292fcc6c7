// The library's modules form layers (ops → lib/cuda → jit/native; mods and
// blockmask are values below both): an import cycle, or a lower layer reaching
// up, would tie them back together. Every import form counts, `import type` and
// re-exports included, since each one makes a reader visit the other file.
import { readFileSync, readdirSync } from 'node:fs';
import { join, posix } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = 'lib';

function listTs(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return listTs(p);
    return e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

/** Relative specifiers of `import ... from`, `export ... from`, `import '...'` and `import('...')` in `src`. */
export function importSpecifiers(src: string): string[] {
  // Comments may mention imports; strip them (string contents are kept: specifiers live there).
  const code = src.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
  const out: string[] = [];
  const forms = [
    /\b(?:import|export)\s+(?:type\s+)?[^'"`;]*?\sfrom\s*['"]([^'"]+)['"]/g,
    /\bimport\s*['"]([^'"]+)['"]/g,
    /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
  ];
  for (const re of forms) for (const m of code.matchAll(re)) out.push(m[1]!);
  return out.filter((s) => s.startsWith('.'));
}

/** The import graph of lib/: file → files it imports (paths relative to the repo, posix). */
function importGraph(): Map<string, string[]> {
  const files = listTs(ROOT).map((f) => f.split('\\').join('/'));
  const known = new Set(files);
  const graph = new Map<string, string[]>();
  for (const f of files) {
    const deps = importSpecifiers(readFileSync(f, 'utf8')).map((s) => {
      const target = posix.normalize(posix.join(posix.dirname(f), s)).replace(/\.js$/, '.ts');
      if (!known.has(target)) throw new Error(`${f} imports ${s}, which is not a file of lib/ (${target})`);
      return target;
    });
    graph.set(f, [...new Set(deps)]);
  }
  return graph;
}

/** Every elementary cycle found by a depth-first search (one per back edge), as `a → b → … → a`. */
function findCycles(graph: Map<string, string[]>): string[] {
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const cycles: string[] = [];
  const visit = (n: string): void => {
    state.set(n, 'open');
    stack.push(n);
    for (const d of graph.get(n) ?? []) {
      const s = state.get(d);
      if (s === 'open') cycles.push([...stack.slice(stack.indexOf(d)), d].join(' → '));
      else if (s === undefined) visit(d);
    }
    stack.pop();
    state.set(n, 'done');
  };
  for (const n of [...graph.keys()].sort()) if (!state.has(n)) visit(n);
  return cycles;
}

/** Which folders may not import which: lower layers never reach up. */
const FORBIDDEN: readonly { from: RegExp; to: RegExp; why: string }[] = [
  { from: /^lib\/cuda\//, to: /^lib\/(sdpa|flex|attention)[^/]*(\.ts|\/)/, why: 'the launch layer is below the ops' },
  { from: /^lib\/blockmask\//, to: /^lib\/cuda\/(?!generated\/)/, why: 'block masks are plain data, below the launch layer' },
  { from: /^lib\/mods\//, to: /^lib\/cuda\/(?!generated\/)/, why: 'mods are values, below the launch layer' },
];

describe('lib/ imports', () => {
  const graph = importGraph();

  it('parses every import form', () => {
    const src = [
      "import { a } from './a.js';", "import type { B } from '../b.js';", "export { c } from './c/index.js';",
      "export * from './d.js';", "import './e.js';", "const f = await import('./f.js');",
      "import {\n  g,\n  type H,\n} from './g.js';", "// import { x } from './not-me.js';", "import fs from 'node:fs';",
    ].join('\n');
    expect(importSpecifiers(src)).toEqual(['./a.js', '../b.js', './c/index.js', './d.js', './g.js', './e.js', './f.js']);
  });

  it('sees the whole library', () => {
    // A graph missing the entry point or the ops would make the checks below vacuous.
    for (const f of ['lib/index.ts', 'lib/flex.ts', 'lib/sdpa.ts', 'lib/cuda/plan.ts']) expect(graph.has(f), f).toBe(true);
    expect(graph.get('lib/index.ts')!.length).toBeGreaterThan(5);
  });

  it('has no import cycle', () => {
    const cycles = findCycles(graph);
    if (cycles.length) console.log(`import cycles in lib/:\n  ${cycles.join('\n  ')}`);
    expect(cycles).toEqual([]);
  });

  it('finds a cycle when there is one', () => {
    const g = new Map([['a', ['b']], ['b', ['c']], ['c', ['a']], ['d', ['a']]]);
    expect(findCycles(g)).toEqual(['a → b → c → a']);
  });

  it('keeps the layers: nothing below the ops imports upward', () => {
    const bad: string[] = [];
    for (const [f, deps] of graph) {
      for (const d of deps) {
        for (const r of FORBIDDEN) if (r.from.test(f) && r.to.test(d)) bad.push(`${f} → ${d} (${r.why})`);
      }
    }
    if (bad.length) console.log(`layering violations:\n  ${bad.join('\n  ')}`);
    expect(bad).toEqual([]);
  });
});

// The native side keeps the same direction: the CUDA loaders (native/cuda) and the
// runtime (native/runtime) sit below the JIT (native/jit); the addon layer
// (native/addon: registration, the JS-facing error/argument layer) may include all.
const NATIVE_FORBIDDEN: readonly { from: string; to: readonly string[] }[] = [
  { from: 'cuda', to: ['runtime', 'jit', 'cpu'] },
  { from: 'runtime', to: ['jit', 'cpu'] },
  { from: 'jit', to: ['cpu'] },
  { from: 'cpu', to: ['cuda', 'runtime', 'jit'] },
];

describe('native include layers', () => {
  const includes = (dir: string): { file: string; target: string }[] => {
    const out: { file: string; target: string }[] = [];
    for (const f of readdirSync(join('native', dir))) {
      if (!/\.(cc|h)$/.test(f)) continue;
      for (const m of readFileSync(join('native', dir, f), 'utf8').matchAll(/^\s*#\s*include\s+"([a-z_]+)\//gm)) {
        out.push({ file: `native/${dir}/${f}`, target: m[1]! });
      }
    }
    return out;
  };
  it('sees the includes (the scan is not blind)', () => {
    expect(includes('jit').some((i) => i.target === 'runtime')).toBe(true);
  });
  it('no lower native layer includes a higher one', () => {
    const bad = NATIVE_FORBIDDEN.flatMap((r) => includes(r.from).filter((i) => r.to.includes(i.target)).map((i) => `${i.file} → ${i.target}/`));
    expect(bad).toEqual([]);
  });
});
