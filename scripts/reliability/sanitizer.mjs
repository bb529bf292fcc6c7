// Sanitizer phase: the workload (workload.mjs) once natively (correctness, fills the
// kernel disk cache so the sanitized runs load cubins instead of compiling), then
// once under each compute-sanitizer tool. Each tool's log is parsed for its summary
// ("ERROR SUMMARY: N errors", racecheck's hazard summary), what kinds of report it
// holds and in which kernels. Results merge into sanitizer.json, so tools can be
// spread over several device calls (`--tools memcheck,synccheck` then
// `--tools racecheck,initcheck`).
import { spawn, spawnSync } from 'node:child_process';
import { createWriteStream, existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { ROOT, environment, load, phaseArgs, readJson, writeJson } from './common.mjs';

export const TOOLS = ['memcheck', 'racecheck', 'synccheck', 'initcheck'];

/** Record headers that are not findings. */
const NOT_FINDINGS = /^(COMPUTE-SANITIZER|ERROR SUMMARY|RACECHECK SUMMARY|LEAK SUMMARY|Saved host backtrace|Host Frame|Target application returned|Process did not terminate|Device Frame|Note:|Internal Sanitizer Info)/;

/**
 * Parses a compute-sanitizer log: the error count from its summary (null when
 * the run ended before printing one), each finding's kind (numbers and
 * addresses folded) and the kernel it names, and the tool's own warnings.
 */
export function parseSanitizerLog(text) {
  const lines = text.split('\n');
  let errors = null, hazards = null, raceErrors = null, raceWarnings = null;
  const kinds = {}, kernels = {}, notes = [];
  let pendingKind = null;
  for (const raw of lines) {
    const m = /^=+ ?(.*)$/.exec(raw);
    if (!m) continue;
    const body = m[1];
    const sum = /ERROR SUMMARY: (\d+) errors?/.exec(body);
    if (sum) { errors = Number(sum[1]); continue; }
    const rsum = /RACECHECK SUMMARY: (\d+) hazards? displayed \((\d+) errors?, (\d+) warnings?\)/.exec(body);
    if (rsum) { hazards = Number(rsum[1]); raceErrors = Number(rsum[2]); raceWarnings = Number(rsum[3]); continue; }
    if (!body.trim()) { pendingKind = null; continue; }
    const indented = /^\s/.test(body);
    if (!indented) {
      if (NOT_FINDINGS.test(body)) continue;
      // The tool's own messages ("Warning: ... not supported", "Error: Target application
      // terminated ...") are notes; racecheck's "Error/Warning: Race reported" are findings.
      if (/^(Warning|Error): /.test(body) && !/Race reported/.test(body)) {
        if (notes.length < 20) notes.push(body.slice(0, 300));
        continue;
      }
      const api = /Program hit (\w+).*? on CUDA API call to (\w+)/.exec(body);
      const race = /^(Error|Warning): Race reported between (\w+) access .* and (\w+) access/.exec(body);
      const kind = api ? `API ${api[1]} in ${api[2]}` : race ? `race ${race[1].toLowerCase()}: ${race[2]} / ${race[3]}` : fold(body.replace(/ at \S+/g, ' at K'));
      kinds[kind] = (kinds[kind] ?? 0) + 1;
      const inline = /Race reported between \w+ access at (?:0x[0-9a-f]+ in )?(?:[^\s:]+:\d+:)?([A-Za-z_]\w*)/.exec(body);
      if (inline) kernels[inline[1]] = (kernels[inline[1]] ?? 0) + 1;
      pendingKind = inline || api ? null : kind;
      continue;
    }
    if (pendingKind) {
      const at = /^\s+at (?:0x[0-9a-f]+ in )?(?:[^\s:]+:\d+:)?([A-Za-z_][\w]*)/.exec(body);
      if (at) { kernels[at[1]] = (kernels[at[1]] ?? 0) + 1; pendingKind = null; }
    }
  }
  const complete = errors !== null || hazards !== null;
  return {
    complete,
    errors: errors ?? raceErrors,
    ...(hazards !== null ? { racecheck: { hazards, errors: raceErrors, warnings: raceWarnings } } : {}),
    kinds, kernels, notes,
  };
}

function fold(s) {
  return s.replace(/0x[0-9a-f]+/gi, 'X').replace(/\b\d+\b/g, 'N').slice(0, 200);
}

/** Runs `cmd args` in its own process group; kills the group after `timeoutS`. */
function runLimited(cmd, args, { env, timeoutS, stdoutPath }) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const out = createWriteStream(stdoutPath);
    const child = spawn(cmd, args, { env, cwd: ROOT, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.pipe(out, { end: false });
    child.stderr.pipe(out, { end: false });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try { process.kill(-child.pid, 'SIGTERM'); } catch { /* gone */ }
      setTimeout(() => { try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ } }, 5000).unref();
    }, timeoutS * 1000);
    child.on('error', (e) => { clearTimeout(timer); out.end(); resolve({ exitCode: null, signal: null, timedOut, seconds: 0, spawnError: e.message }); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      out.end();
      resolve({ exitCode: code, signal, timedOut, seconds: (performance.now() - t0) / 1000 });
    });
  });
}

function findSanitizer(arg) {
  const candidates = [arg, process.env.CUDA_HOME && join(process.env.CUDA_HOME, 'bin/compute-sanitizer'), '/usr/local/cuda/bin/compute-sanitizer'].filter(Boolean);
  for (const c of candidates) if (existsSync(c)) return c;
  const w = spawnSync('sh', ['-c', 'command -v compute-sanitizer'], { encoding: 'utf8' });
  return w.status === 0 ? w.stdout.trim() : null;
}

function workloadSummary(path) {
  const w = readJson(path);
  if (!w) return null;
  return {
    passed: w.passed, failed: w.failed, seconds: w.seconds, kernels: w.kernels.length,
    segmentedGridSeen: w.segmentedGridSeen, sm90Seen: w.sm90Seen,
    failures: w.cases.filter((c) => !c.ok).slice(0, 10).map((c) => ({ name: c.name, family: c.family, why: c.reason ?? c.lseReason ?? c.error?.message })),
  };
}

async function main() {
  const a = phaseArgs('sanitizer', {
    tools: { type: 'string', default: TOOLS.join(',') },
    'tool-timeout': { type: 'string', default: '240' },
    'native-timeout': { type: 'string', default: '300' },
    // racecheck and initcheck slow kernels down the most: they run the same cases at smaller lengths.
    'slow-size': { type: 'string', default: 'small' },
    sanitizer: { type: 'string' },
    cases: { type: 'string' },
    'reuse-native': { type: 'boolean', default: false },
    parse: { type: 'string' },
    // Seconds this phase may take in all (a device call's limit): tools get what is left.
    deadline: { type: 'string' },
    // Skip tools that already have a complete result (a later call finishing the set).
    'only-missing': { type: 'boolean', default: false },
  }, 'Runs the workload natively, then under each compute-sanitizer tool (--tools), and writes sanitizer.json.\n' +
     '--parse LOG prints the parse of a sanitizer log and exits; --dry-run runs only the native workload.');
  if (a.parse) {
    console.log(JSON.stringify(parseSanitizerLog(readFileSync(a.parse, 'utf8')), null, 1));
    return;
  }
  const tools = a.tools.split(',').map((t) => t.trim()).filter(Boolean);
  for (const t of tools) if (!TOOLS.includes(t)) { console.error(`sanitizer: unknown tool ${t} (expected ${TOOLS.join(', ')})`); process.exit(2); }
  const { fa, device } = await load(a.device);
  const file = join(a.results, 'sanitizer.json');
  const res = readJson(file) ?? { phase: 'sanitizer', tools: {} };
  res.env = environment(fa, device);
  const sanitizer = findSanitizer(a.sanitizer);
  if (sanitizer) res.sanitizerVersion = (spawnSync(sanitizer, ['--version'], { encoding: 'utf8', timeout: 30000 }).stdout ?? '').trim().split('\n').filter(Boolean).pop();
  const env = {
    ...process.env,
    FLEXATTN_CACHE_DIR: process.env.FLEXATTN_CACHE_DIR ?? join(a.results, 'kernel-cache'),
    // Only the optimized build: the sanitized runs then load from the disk cache what the native run compiled.
    FLEXATTN_JIT_TIERED: '0',
  };
  const wl = join(ROOT, 'scripts/reliability/workload.mjs');
  const sizeOf = (label) => (label === 'racecheck' || label === 'initcheck' ? a['slow-size'] : 'full');
  const wlArgs = (label) => { rmSync(join(a.results, `workload-${label}.json`), { force: true }); return [wl, '--out', join(a.results, `workload-${label}.json`), '--label', label, '--device', device === 'cpu' ? 'cpu' : 'cuda',
    ...(device === 'cpu' ? [] : ['--size', sizeOf(label)]), ...(a.cases ? ['--cases', a.cases] : [])]; };
  const timeoutS = Number(a['tool-timeout']);
  const phaseStart = performance.now();
  const left = () => (a.deadline === undefined ? Infinity : Number(a.deadline) - (performance.now() - phaseStart) / 1000);

  // --reuse-native: a later device call on the same (still warm) machine skips the native
  // run when one passed and the kernel cache it filled is still there.
  const cacheWarm = existsSync(env.FLEXATTN_CACHE_DIR) && readdirSync(env.FLEXATTN_CACHE_DIR).length > 0;
  if (!(a['reuse-native'] && res.native?.workload?.failed === 0 && cacheWarm)) {
    console.log('== workload, native (no sanitizer)');
    const r = await runLimited(process.execPath, wlArgs('native'), { env, timeoutS: Math.min(Number(a['native-timeout']), Math.max(1, left() - 5)), stdoutPath: join(a.results, 'sanitizer-native.out') });
    res.native = { ...r, workload: workloadSummary(join(a.results, 'workload-native.json')) };
    writeJson(file, res);
    console.log(`   ${r.seconds.toFixed(1)} s, exit ${r.exitCode}${r.timedOut ? ' (timed out)' : ''}: ${res.native.workload?.passed ?? '?'} passed, ${res.native.workload?.failed ?? '?'} failed`);
  }
  // Without a GPU the tools have nothing to check, unless --sanitizer names a stand-in (to test this script).
  if (a['dry-run'] || (device === 'cpu' && !a.sanitizer)) {
    res.dryRun = true;
    writeJson(file, res);
    console.log(`sanitizer: ${a['dry-run'] ? 'dry run' : 'no GPU'}: tools not run (${sanitizer ? `found ${sanitizer}` : 'compute-sanitizer not found'})`);
    return;
  }
  if (!sanitizer) throw new Error('compute-sanitizer not found (tried --sanitizer, $CUDA_HOME/bin, /usr/local/cuda/bin, PATH)');
  for (const tool of tools) {
    const prev = res.tools[tool];
    if (a['only-missing'] && prev?.complete && !prev.timedOut) { console.log(`== ${tool}: already done (${prev.date})`); continue; }
    // A tool cut short by the deadline says nothing: start it only with a useful share of time left.
    const budget = Math.min(timeoutS, left() - 5);
    if (left() - 5 < Math.min(timeoutS, 30)) { console.log(`== ${tool}: not started, ${Math.round(left())} s left of --deadline`); continue; }
    const log = join(a.results, `sanitizer-${tool}.log`);
    rmSync(log, { force: true });
    const args = ['--tool', tool, '--log-file', log, '--print-limit', '200', process.execPath, ...wlArgs(tool)];
    console.log(`== ${tool}: ${[sanitizer, ...args].join(' ')}`);
    const r = await runLimited(sanitizer, args, { env, timeoutS: budget, stdoutPath: join(a.results, `sanitizer-${tool}.out`) });
    const parsed = existsSync(log) ? parseSanitizerLog(readFileSync(log, 'utf8')) : { complete: false, errors: null, kinds: {}, kernels: {}, notes: ['no log written'] };
    const workload = workloadSummary(join(a.results, `workload-${tool}.json`));
    const entry = {
      tool, command: ['compute-sanitizer', ...args.map((x) => x.replace(ROOT, '').replace(process.execPath, 'node'))].join(' '),
      date: new Date().toISOString(), size: device === 'cpu' ? 'tiny' : sizeOf(tool), ...r, ...parsed, workload, timeoutS: budget,
    };
    // Strict: racecheck warnings are hazards too, so they fail the tool like errors.
    entry.pass = entry.complete && entry.errors === 0 && (parsed.racecheck?.hazards ?? 0) === 0 && !r.timedOut && r.exitCode === 0 && workload?.failed === 0;
    res.tools[tool] = entry;
    writeJson(file, res);
    console.log(`   ${r.seconds.toFixed(1)} s, exit ${r.exitCode}${r.timedOut ? ' (TIMED OUT)' : ''}, errors ${entry.errors ?? 'unknown'}, ` +
      `workload ${workload?.passed ?? '?'}/${(workload?.passed ?? 0) + (workload?.failed ?? 0)}${Object.keys(parsed.kinds).length ? `, kinds: ${JSON.stringify(parsed.kinds)}` : ''}`);
  }
  // Control: memcheck must report a planted out-of-bounds write in a kernel launched the way
  // the package launches its own (NVRTC + cuLaunchKernel), else its 0 errors above prove nothing.
  if (tools.includes('memcheck') && device !== 'cpu' && left() > 40) {
    res.plantedFault = {};
    for (const mode of ['wild', 'past-end']) {
      const log = join(a.results, `sanitizer-planted-${mode}.log`);
      rmSync(log, { force: true });
      const r = await runLimited(sanitizer, ['--tool', 'memcheck', '--log-file', log, process.execPath,
        join(ROOT, 'scripts/reliability/planted-fault.mjs'), mode], { env, timeoutS: 60, stdoutPath: join(a.results, `sanitizer-planted-${mode}.out`) });
      const parsed = existsSync(log) ? parseSanitizerLog(readFileSync(log, 'utf8')) : { errors: null, kinds: {} };
      res.plantedFault[mode] = { errors: parsed.errors, kinds: parsed.kinds, exitCode: r.exitCode, seconds: r.seconds, detected: (parsed.errors ?? 0) > 0 };
      console.log(`== planted fault (${mode}) under memcheck: errors ${parsed.errors ?? 'unknown'}${(parsed.errors ?? 0) > 0 ? ' (detected)' : ' (NOT detected)'}`);
    }
  }
  writeJson(file, res);
  const controlOk = !res.plantedFault || res.plantedFault.wild?.detected === true;
  process.exitCode = res.native?.workload?.failed === 0 && tools.every((t) => res.tools[t]?.pass) && controlOk ? 0 : 1;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
