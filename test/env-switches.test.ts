// The registry of FLEXATTN_* environment switches (lib/env.ts) against the
// tree and the docs: every read in the sources names a listed switch, every
// listed switch is read where its `readBy` says, TypeScript in lib/ reads only
// through envSwitch(), and the README/CONTRIBUTING tables are the rendered registry.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ENV_SWITCHES, envSwitch } from '../lib/env.js';
import { InternalError } from '../lib/errors.js';

const root = process.cwd();
// Plain .mjs module without typings: imported by URL, so it is typed `any` here.
const gen = await import(pathToFileURL(join(root, 'scripts/gen-env-table.mjs')).href);

/** Where switches can be read: sources, build files, tooling. Results, logs and generated output are not scanned. */
const ROOTS = ['lib', 'native', 'scripts', 'bench', 'test', 'examples', '.ci', 'CMakeLists.txt', 'package.json'];
const SKIP_DIRS = new Set(['node_modules', 'build', 'dist', 'results', '.git']);
const SOURCE_EXT = new Set(['.ts', '.mjs', '.js', '.cjs', '.cc', '.cpp', '.h', '.hpp', '.cu', '.cuh', '.sh', '.py', '.cmake', '.json', '']);
/** This file spells the read patterns out in its fixtures. */
const SELF = 'test/env-switches.test.ts';

function walk(path: string, out: string[]): void {
  const st = statSync(join(root, path), { throwIfNoEntry: false });
  if (!st) return;
  if (st.isDirectory()) {
    for (const name of readdirSync(join(root, path))) if (!SKIP_DIRS.has(name)) walk(join(path, name), out);
  } else if (SOURCE_EXT.has(extname(path)) || path === 'CMakeLists.txt') {
    out.push(path);
  }
}

const NAME = '(FLEXATTN_[A-Z0-9_]+)';
/** A switch name not glued to a longer identifier (ERR_FLEXATTN_* error codes are not switches). */
const free = (re: string) => new RegExp(`(?<![A-Za-z0-9_])${re}`, 'g');

/** One use of an environment variable in a file: a read, or a value set for this or a child process. */
interface Use { file: string; name: string; kind: 'read' | 'set'; via: string }

const isShell = (file: string) => file.endsWith('.sh') || file === '.ci/run' || file === 'package.json';

/** The environment reads and writes of FLEXATTN_* names in one file's text. */
function envUses(file: string, text: string): Use[] {
  const uses: Use[] = [];
  const add = (re: RegExp, kind: Use['kind'] | ((m: RegExpExecArray) => Use['kind']), via: string) => {
    for (const m of text.matchAll(re)) {
      const name = m.slice(1).find((g) => g?.startsWith('FLEXATTN_'))!;
      uses.push({ file, name, kind: typeof kind === 'function' ? kind(m) : kind, via });
    }
  };
  const ext = extname(file);
  if (['.ts', '.mjs', '.js', '.cjs'].includes(ext)) {
    add(new RegExp(`envSwitch\\(\\s*['"]${NAME}['"]`, 'g'), 'read', 'envSwitch');
    // process.env.X / process.env['X'] (and a child's env object: env.X); `= value` after it or `delete` before it is a write.
    add(new RegExp(`(delete\\s+(?:process\\.)?)?\\benv(?:\\.${NAME}|\\[\\s*['"]${NAME}['"]\\s*\\])(\\s*=(?!=))?`, 'g'),
      (m) => (m[1] || m[4] ? 'set' : 'read'), 'process.env');
    // Keys of an env object handed to a child process: { FLEXATTN_X: '1' }.
    add(free(`${NAME}\\s*:(?!:)`), 'set', 'env object');
  }
  if (['.cc', '.cpp', '.h', '.hpp', '.cu', '.cuh'].includes(ext)) add(new RegExp(`getenv\\(\\s*"${NAME}"`, 'g'), 'read', 'getenv');
  if (ext === '.py') add(new RegExp(`(?:environ(?:\\.get\\(|\\[)|getenv\\()\\s*['"]${NAME}['"]`, 'g'), 'read', 'os.environ');
  if (ext === '.cmake' || file.endsWith('CMakeLists.txt')) add(new RegExp(`\\$ENV\\{${NAME}\\}`, 'g'), 'read', '$ENV');
  if (isShell(file)) {
    add(new RegExp(`\\$\\{?${NAME}`, 'g'), 'read', '$VAR');
    add(free(`${NAME}=`), 'set', 'VAR=');
    add(new RegExp(`\\benv\\s+-u\\s+${NAME}`, 'g'), 'set', 'env -u');
  }
  return uses;
}

/** Files in lib/ allowed to read process.env directly (none: every read goes through envSwitch). */
const PENDING_ENVSWITCH: string[] = [];

const files: string[] = [];
for (const r of ROOTS) walk(r, files);
const uses = files.filter((f) => f !== SELF).flatMap((f) => envUses(f, readFileSync(join(root, f), 'utf8')));
const listed = new Map(ENV_SWITCHES.map((s) => [s.name, s]));
const where = (u: Use) => `${u.file} (${u.via})`;

describe('environment switch registry (lib/env.ts)', () => {
  it('finds the reads it must (the scan is not blind)', () => {
    expect(files).toContain('lib/jit.ts');
    const found = (file: string, name: string, via: string) =>
      uses.some((u) => u.file === file && u.name === name && u.kind === 'read' && u.via === via);
    expect(found('lib/jit.ts', 'FLEXATTN_JIT_TIERED', 'envSwitch')).toBe(true);
    expect(found('native/jit/disk_cache.cc', 'FLEXATTN_CACHE_MAX_MB', 'getenv')).toBe(true);
    expect(found('scripts/build-native.mjs', 'FLEXATTN_ARCHS', 'process.env')).toBe(true);
    expect(found('scripts/gpu-reliability.sh', 'FLEXATTN_RELIABILITY_DIR', '$VAR')).toBe(true);
  });

  it('tells reads from writes and error codes from switches', () => {
    const kinds = (file: string, text: string) => envUses(file, text).map((u) => `${u.kind} ${u.name}`);
    expect(kinds('a.ts', "const v = process.env.FLEXATTN_A; process.env.FLEXATTN_B = '1'; delete process.env['FLEXATTN_C'];"))
      .toEqual(['read FLEXATTN_A', 'set FLEXATTN_B', 'set FLEXATTN_C']);
    expect(kinds('a.ts', "if (process.env.FLEXATTN_A === '0') f({ FLEXATTN_B: '1' }); envSwitch('FLEXATTN_C');"))
      .toEqual(['read FLEXATTN_C', 'read FLEXATTN_A', 'set FLEXATTN_B']);
    expect(kinds('a.ts', "const code = 'ERR_FLEXATTN_SHAPE'; x = { ERR_FLEXATTN_MOD: 1 }; emitWarning(m, { code: 'FLEXATTN_CACHE' });")).toEqual([]);
    expect(kinds('x.cc', 'const char* e = std::getenv("FLEXATTN_A"); // $FLEXATTN_B')).toEqual(['read FLEXATTN_A']);
    expect(kinds('x.cuh', '#ifndef FLEXATTN_WAVE_CTAS_PER_SM\n#define FLEXATTN_WAVE_CTAS_PER_SM 2\n#endif')).toEqual([]);
    expect(kinds('CMakeLists.txt', 'foreach(arch ${FLEXATTN_ARCHS})\nset(x $ENV{FLEXATTN_A})')).toEqual(['read FLEXATTN_A']);
    expect(kinds('s.sh', 'export FLEXATTN_A=1\nR=${FLEXATTN_B:-/tmp}\nFLEXATTN_C=1 node x.mjs $FLEXATTN_D'))
      .toEqual(['read FLEXATTN_B', 'read FLEXATTN_D', 'set FLEXATTN_A', 'set FLEXATTN_C']);
    expect(kinds('r.py', "os.environ.get('FLEXATTN_A'); os.getenv(\"FLEXATTN_B\")")).toEqual(['read FLEXATTN_A', 'read FLEXATTN_B']);
  });

  it('every switch the tree reads or sets is listed', () => {
    const unlisted = uses.filter((u) => !listed.has(u.name)).map((u) => `${u.name} in ${where(u)}`);
    expect(unlisted, 'add these to ENV_SWITCHES in lib/env.ts (or stop reading them)').toEqual([]);
  });

  it('every listed switch is read, by the reader its readBy names', () => {
    const problems: string[] = [];
    for (const s of ENV_SWITCHES) {
      const reads = uses.filter((u) => u.name === s.name && u.kind === 'read');
      const ok = reads.some((u) =>
        s.readBy === 'native' ? u.file.startsWith('native/') && u.via === 'getenv'
          : s.readBy === 'js' ? u.file.startsWith('lib/')
            : !u.file.startsWith('lib/') && !u.file.startsWith('native/'));
      if (!ok) problems.push(`${s.name} (readBy ${s.readBy}): read ${reads.length ? `only in ${reads.map(where).join(', ')}` : 'nowhere'}`);
    }
    expect(problems, 'remove switches nothing reads, or fix readBy').toEqual([]);
  });

  it('lib/ reads switches only through envSwitch()', () => {
    const direct = uses.filter((u) => u.file.startsWith('lib/') && u.via === 'process.env');
    const stray = direct.filter((u) => !PENDING_ENVSWITCH.includes(u.file)).map(where);
    expect(stray, 'read these through envSwitch() from lib/env.ts').toEqual([]);
    // The exemption goes once those files read through envSwitch (or move): it must not outlive them.
    const stale = PENDING_ENVSWITCH.filter((f) => !direct.some((u) => u.file === f));
    expect(stale, 'no longer read process.env directly: drop them from PENDING_ENVSWITCH').toEqual([]);
  });

  it('envSwitch refuses a name that is not listed, and reads a listed one', () => {
    expect(() => envSwitch('FLEXATTN_NOT_A_SWITCH')).toThrow(InternalError);
    const saved = process.env.FLEXATTN_JIT_TIERED;
    try {
      process.env.FLEXATTN_JIT_TIERED = 'probe-value';
      expect(envSwitch('FLEXATTN_JIT_TIERED')).toBe('probe-value');
    } finally {
      if (saved === undefined) delete process.env.FLEXATTN_JIT_TIERED; else process.env.FLEXATTN_JIT_TIERED = saved;
    }
  });

  it('entries are unique and complete', () => {
    expect(listed.size).toBe(ENV_SWITCHES.length);
    for (const s of ENV_SWITCHES) {
      expect(s.name).toMatch(/^FLEXATTN_[A-Z0-9_]+$/);
      expect(s.meaning.length, s.name).toBeGreaterThan(10);
      expect(s.default.length, s.name).toBeGreaterThan(0);
    }
  });

  it('README.md and CONTRIBUTING.md hold the tables rendered from the registry', () => {
    const covered: string[] = [];
    for (const doc of gen.ENV_DOCS as { file: string; scopes: string[] }[]) {
      const text = readFileSync(join(root, doc.file), 'utf8');
      const { text: rendered, scopes } = gen.renderDoc(text, ENV_SWITCHES);
      expect(scopes, `${doc.file}: marked tables`).toEqual(doc.scopes);
      expect(text === rendered, `${doc.file}: stale table (npm run build:ts && node scripts/gen-env-table.mjs)`).toBe(true);
      covered.push(...scopes);
    }
    // Every switch lands in exactly one table.
    expect(new Set(ENV_SWITCHES.map((s) => s.scope)).size).toBeLessThanOrEqual(covered.length);
    for (const s of ENV_SWITCHES) expect(covered.filter((c) => c === s.scope), s.name).toHaveLength(1);
    // The rendering itself: one row per switch of the scope, the name in code.
    const table: string = gen.renderTable(ENV_SWITCHES, ['tooling']);
    const rows = table.split('\n').slice(2);
    expect(rows).toHaveLength(ENV_SWITCHES.filter((s) => s.scope === 'tooling').length);
    expect(rows[0]).toMatch(/^\| `FLEXATTN_[A-Z_]+` \| tooling \|/);
  });
});
