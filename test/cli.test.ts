/**
 * The `flexattn` command line (lib/cli.ts, built to dist/lib/cli.js) and the
 * benchmark front end it hands `bench` to (bench/run.mjs), spawned as a user
 * runs them: exit codes, what goes to stdout and stderr, and that `--help`
 * never runs the command.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { nativeAvailable, packageRoot } from '../lib/native.js';

const CLI = join(packageRoot, 'dist', 'lib', 'cli.js');
const VERSION = (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;

function flexattn(...args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    cwd: packageRoot, encoding: 'utf8', timeout: 60_000, env: { ...process.env, NODE_DEBUG: '' },
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('flexattn CLI', () => {
  it('--version prints the package version and nothing else', () => {
    for (const flag of ['--version', '-v']) {
      const r = flexattn(flag);
      expect(r.code).toBe(0);
      expect(r.out.trim()).toBe(VERSION);
      expect(r.err).toBe('');
    }
  });

  it('--help lists every command; no command is a usage error', () => {
    const r = flexattn('--help');
    expect(r.code).toBe(0);
    for (const c of ['info', 'demo', 'bench', 'help']) expect(r.out).toMatch(new RegExp(`^  ${c} `, 'm'));
    const none = flexattn();
    expect(none.code).toBe(2);
    expect(none.err.split('\n')[0]).toBe('flexattn: missing command');
    expect(none.err).toContain('usage: flexattn <command>');
  });

  it('<command> --help prints that command\'s usage and does not run it', () => {
    const demo = flexattn('demo', '--help');
    expect(demo.code).toBe(0);
    expect(demo.out).toMatch(/^usage: flexattn demo/);
    expect(demo.out).not.toContain('checksum  sum='); // the demo's own output
    expect(demo.out).not.toContain('flexattn demo: causal');
    const info = flexattn('info', '-h');
    expect(info.code).toBe(0);
    expect(info.out).toMatch(/^usage: flexattn info \[--json\]/);
    expect(info.out).not.toMatch(/^node {8}/m); // the report's first line
    const bench = flexattn('bench', '--help');
    expect(bench.code).toBe(0);
    expect(bench.out).toMatch(/^usage: flexattn bench/);
    expect(bench.out).not.toContain('flexattn bench on'); // the suite's header line
    expect(flexattn('help', 'demo').out).toBe(demo.out);
    expect(flexattn('help', 'bench').out).toBe(bench.out);
  });

  it('bench --help describes the case groups, the filters and where results go, not issue numbers', () => {
    const { out } = flexattn('bench', '--help');
    for (const group of ['dense', 'flex', 'gqa', 'jit', 'overhead']) expect(out).toMatch(new RegExp(`^  ${group} `, 'm'));
    for (const flag of ['--only', '--case', '--quick', '--budget', '--out', '--dry-run', '--smoke-cpu']) expect(out).toContain(flag);
    expect(out).toContain('bench/results/attention.<card>');
    expect(out).toMatch(/stderr/);
    expect(out).not.toMatch(/issue/i);
  });

  it('an unknown command, option or argument exits 2 with a one-line message and the usage', () => {
    const cases: [string[], string, string][] = [
      [['bogus'], "flexattn: unknown command 'bogus'", 'usage: flexattn <command>'],
      [['--bogus'], "flexattn: unknown option '--bogus'", 'usage: flexattn <command>'],
      [['info', '--bogus'], "flexattn info: unknown option '--bogus'", 'usage: flexattn info'],
      [['demo', '--bogus'], "flexattn demo: unknown option '--bogus'", 'usage: flexattn demo'],
      [['demo', 'now'], "flexattn demo: unexpected argument 'now'", 'usage: flexattn demo'],
      [['help', 'nope'], "flexattn help: unknown command 'nope'", 'usage: flexattn <command>'],
      [['help', '--nope'], "flexattn help: unknown option '--nope'", 'usage: flexattn <command>'],
      [['bench', '--bogus'], "flexattn bench: unknown option '--bogus'", 'usage: flexattn bench'],
      [['bench', '--only', 'dense,nope'], 'flexattn bench: --only takes groups from dense,flex,gqa,decode,jit,overhead', 'usage: flexattn bench'],
      [['bench', '--reps', '0'], "flexattn bench: --reps needs a positive integer, got '0'", 'usage: flexattn bench'],
      [['bench', '--case'], "flexattn bench: option '--case <value>' argument missing", 'usage: flexattn bench'],
    ];
    for (const [args, first, usage] of cases) {
      const r = flexattn(...args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.err.split('\n')[0], args.join(' ')).toContain(first);
      expect(r.err.split('\n')[1], args.join(' ')).toBe(''); // one line, then the usage
      expect(r.err, args.join(' ')).toContain(usage);
      expect(r.out, args.join(' ')).toBe('');
    }
  });

  it.skipIf(!nativeAvailable())('info --json is one JSON object with the versions and deviceInfo()', () => {
    const r = flexattn('info', '--json');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out) as Record<string, unknown> & { deviceInfo: Record<string, unknown> };
    expect(j.flexattn).toBe(VERSION);
    expect(j.node).toBe(process.version);
    expect(j.napi).toBe(process.versions.napi);
    expect(typeof j.cudaAvailable).toBe('boolean');
    expect(typeof j.cacheDir).toBe('string');
    for (const k of ['addonLoaded', 'driverLoaded', 'driverVersion', 'gpus', 'nvrtcLoaded', 'nvrtcVersion', 'fatbinBytes', 'fatbinArchs']) {
      expect(j.deviceInfo, k).toHaveProperty(k);
    }
    expect(j.deviceInfo.addonLoaded).toBe(true);
    expect(Array.isArray(j.deviceInfo.gpus)).toBe(true);
    expect((j.deviceInfo.gpus as unknown[]).length > 0).toBe(j.cudaAvailable);
  });

  it.skipIf(!nativeAvailable())('info (text) names the version, the addon and the cache', () => {
    const r = flexattn('info');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(new RegExp(`^flexattn {4}${VERSION.replace(/\./g, '\\.')}$`, 'm'));
    expect(r.out).toMatch(/^addon {7}loaded from /m);
    expect(r.out).toMatch(/^cache {7}\//m);
  });

  it('bench --dry-run --case lists only the matching cases', () => {
    const r = flexattn('bench', '--dry-run', '--case', 'SLIDING window');
    expect(r.code).toBe(0);
    const listed = r.out.split('\n').filter((l) => l.startsWith('flex') || l.startsWith('dense') || l.startsWith('gqa'));
    expect(listed.map((l) => l.split(/\s{2,}/)[0])).toEqual(['flex sliding window 1024', 'flex sliding window 1024, 64x64 blocks']);
    expect(r.out).toContain('dry run: 2 cases built');
    const none = flexattn('bench', '--dry-run', '--case', 'no such case');
    expect(none.code).toBe(2);
    expect(none.err).toContain("no case name contains 'no such case'");
  });

  it.skipIf(!nativeAvailable())('bench reports "case i of N" with the time left on stderr; stdout keeps the table', () => {
    const r = flexattn('bench', '--smoke-cpu', '--only', 'dense', '--case', 'S64', '--reps', '2', '--n', '2');
    expect(r.code).toBe(0);
    const progress = r.err.split('\n').filter((l) => l.startsWith('[case'));
    expect(progress.map((l) => /^\[case (\d+) of (\d+)\] (.*) \(/.exec(l)!.slice(1, 4))).toEqual([
      ['1', '4', 'dense d64 S64 non-causal'], ['2', '4', 'dense d64 S64 causal'],
      ['3', '4', 'dense d128 S64 non-causal'], ['4', '4', 'dense d128 S64 causal'],
    ]);
    expect(progress[0]).not.toContain('left'); // nothing measured yet
    for (const l of progress.slice(1)) expect(l).toMatch(/elapsed, ~\d+s left\)$/);
    expect(r.out).not.toContain('[case');
    expect(r.out.split('\n').filter((l) => / ms +[\d.]+ TFLOPs/.test(l))).toHaveLength(4);
  });

  it('the time-left estimate is the mean step time times the steps left, capped by the budget', async () => {
    const run = (await import(pathToFileURL(join(packageRoot, 'bench', 'run.mjs')).href)) as {
      progressLine: (i: number, n: number, name: string, elapsedS: number, budgetLeftS: number) => string;
      formatDuration: (s: number) => string;
    };
    expect(run.progressLine(1, 5, 'a', 0, 100)).toBe('[case 1 of 5] a (0s elapsed)');
    // 2 steps took 10 s: steps 3, 4 and 5 are left, about 15 s
    expect(run.progressLine(3, 5, 'b', 10, 100)).toBe('[case 3 of 5] b (10s elapsed, ~15s left)');
    expect(run.progressLine(3, 5, 'b', 10, 4)).toBe('[case 3 of 5] b (10s elapsed, ~4s left)');
    expect(run.progressLine(2, 40, 'c', 7, 1000)).toBe('[case 2 of 40] c (7s elapsed, ~4m33s left)');
    expect(run.formatDuration(3600)).toBe('60m00s');
  });
});
