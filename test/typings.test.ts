// The emitted typings as a user's project sees them: the declarations are
// built into a scratch package, and small consumer projects compile against
// it with tsc (`skipLibCheck: false`, `"lib": ["ES2022"]`, node16 and bundler
// resolution, with and without @types/node). Internal members must not be
// visible, and `Symbol.dispose` / `Symbol.asyncDispose` must type-check
// without esnext.disposable.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const repo = join(import.meta.dirname, '..');
const tsc = join(repo, 'node_modules', 'typescript', 'bin', 'tsc');
let work = '';

function run(args: string[], cwd: string): { ok: boolean; output: string } {
  try {
    const out = execFileSync(process.execPath, [tsc, ...args], { cwd, encoding: 'utf8', timeout: 120_000, stdio: 'pipe' });
    return { ok: true, output: out };
  } catch (e) {
    const x = e as { stdout?: string; stderr?: string; message: string };
    return { ok: false, output: `${x.stdout ?? ''}${x.stderr ?? ''}` || x.message };
  }
}

function dtsFiles(dir: string): string[] {
  const out: string[] = [];
  for (const ent of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, ent.name);
    if (ent.isDirectory()) out.push(...dtsFiles(p));
    else if (p.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

const CONSUMER = `
import {
  Tensor, FlexAttnError, ERROR_CODES, type ErrorCode, ShapeError, memoryStats, synchronize,
  scaledDotProductAttention, flexAttention, causal, createBlockMask,
} from 'flexattn';

export async function main(): Promise<string> {
  const q = Tensor.randn([1, 2, 16, 8], 'f32', { device: 'cpu' });
  const out = await scaledDotProductAttention(q, q, q, { isCausal: true });
  const bm = await createBlockMask(causal(), 1, 1, 16, 16);
  const { out: o2 } = await flexAttention(q, q, q, { blockMask: bm });
  out[Symbol.dispose]();
  await o2[Symbol.asyncDispose]();
  bm[Symbol.dispose]();
  const stats = memoryStats();
  await synchronize();
  try {
    Tensor.empty([1e12]);
  } catch (e) {
    if (e instanceof FlexAttnError && e.code === 'ERR_FLEXATTN_SHAPE') return ERROR_CODES[e.code as ErrorCode];
    if (e instanceof ShapeError) return e.argument;
  }
  return stats.device;
}
`;

// Each line names an @internal member; if one became visible, the
// expect-error directive above it would be unused, which tsc reports.
const INTERNALS = `
import { Tensor, BlockMask } from 'flexattn';
declare const t: Tensor;
declare const m: BlockMask;
// @ts-expect-error internal
t.buffer();
// @ts-expect-error internal
t.hostStorage();
// @ts-expect-error internal
t.assertAlive();
// @ts-expect-error internal
m.classes;
`;

const PKG = {
  name: 'flexattn', type: 'module', types: './dist/lib/index.d.ts',
  exports: { '.': { types: './dist/lib/index.d.ts', default: './dist/lib/index.js' } },
};

function consumer(name: string, options: Record<string, unknown>, allDts: boolean): { ok: boolean; output: string } {
  const dir = join(work, name);
  mkdirSync(join(dir, 'node_modules', '@types'), { recursive: true });
  symlinkSync(join(work, 'pkg'), join(dir, 'node_modules', 'flexattn'), 'dir');
  symlinkSync(join(repo, 'node_modules', '@types', 'node'), join(dir, 'node_modules', '@types', 'node'), 'dir');
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name, type: 'module', private: true }));
  writeFileSync(join(dir, 'main.ts'), CONSUMER);
  writeFileSync(join(dir, 'internals.ts'), INTERNALS);
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { target: 'ES2022', lib: ['ES2022'], strict: true, noEmit: true, skipLibCheck: false, ...options },
    // Optionally every emitted .d.ts, reachable from index or not, so a broken one cannot hide.
    files: ['main.ts', 'internals.ts', ...(allDts ? dtsFiles(join(work, 'pkg', 'dist')) : [])],
  }));
  return run(['-p', dir], dir);
}

describe('emitted typings', () => {
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'flexattn-typings-'));
    const r = run(['-p', join(repo, 'tsconfig.json'), '--emitDeclarationOnly', '--sourceMap', 'false',
      '--outDir', join(work, 'pkg', 'dist')], repo);
    if (!r.ok) throw new Error(`building the declarations failed:\n${r.output}`);
    writeFileSync(join(work, 'pkg', 'package.json'), JSON.stringify(PKG));
  }, 180_000);
  afterAll(() => { if (work) rmSync(work, { recursive: true, force: true }); });

  it('no @internal declaration is emitted, and no module header carries @internal', () => {
    for (const f of dtsFiles(join(work, 'pkg', 'dist'))) expect(readFileSync(f, 'utf8'), f).not.toMatch(/@internal/);
    // On a module's header comment @internal would strip the file's first
    // statement from its .d.ts (TypeScript attaches the header to it).
    const headers: string[] = [];
    const walk = (dir: string): void => {
      for (const ent of readdirSync(dir, { withFileTypes: true })) {
        const p = join(dir, ent.name);
        if (ent.isDirectory()) walk(p);
        else if (p.endsWith('.ts')) {
          const head = /^\/\*\*[\s\S]*?\*\//.exec(readFileSync(p, 'utf8'))?.[0] ?? '';
          if (/@module/.test(head) && /@internal/.test(head)) headers.push(p);
        }
      }
    };
    walk(join(repo, 'lib'));
    expect(headers).toEqual([]);
  });

  it.each([
    ['node16-no-node-types', { module: 'Node16', moduleResolution: 'Node16', types: [] }, false],
    ['bundler-node-types-every-dts', { module: 'ESNext', moduleResolution: 'Bundler', types: ['node'] }, true],
    ['node16-disposable-lib', { module: 'Node16', moduleResolution: 'Node16', types: ['node'], lib: ['ES2022', 'ESNext.Disposable'] }, false],
  ] as const)('a consumer project compiles (%s)', (name, options, allDts) => {
    const r = consumer(name, options, allDts);
    expect(r.output).toBe('');
    expect(r.ok).toBe(true);
  }, 120_000);
});
