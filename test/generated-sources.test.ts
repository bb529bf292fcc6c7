// Generated sources must be what their generator writes: a hand edit (or a
// generator / description change without regenerating) must not slip through.
//   - native/kernels/wgmma_ops.cuh from scripts/gen-wgmma.py
//   - the kernel interface (native/kernels/generated, lib/cuda/generated,
//     bench/kernel-harness/flash_params.py) from native/kernels/interface/*.json
//     by scripts/gen-kernel-interface.mjs
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

function python(): string | null {
  for (const p of ['python3', 'python']) {
    try { execFileSync(p, ['--version'], { stdio: 'ignore' }); return p; } catch { /* next */ }
  }
  return null;
}

const py = python();
describe('generated kernel sources', () => {
  it.skipIf(!py)('wgmma_ops.cuh matches scripts/gen-wgmma.py', () => {
    const fresh = execFileSync(py!, ['scripts/gen-wgmma.py'], { encoding: 'utf8' });
    expect(readFileSync('native/kernels/wgmma_ops.cuh', 'utf8')).toBe(fresh);
  });
  if (!py) console.log('skipped: no python3 to run scripts/gen-wgmma.py');

  it('every kernel-interface file matches scripts/gen-kernel-interface.mjs', () => {
    const fresh = JSON.parse(execFileSync(process.execPath, ['scripts/gen-kernel-interface.mjs', '--json'], { encoding: 'utf8' })) as
      Record<string, string>;
    const paths = Object.keys(fresh).sort();
    // Each block yields a C++ header and (unless the host side is C++) a TypeScript packer; the forward block also
    // its config header and the harness packing.
    expect(paths).toEqual([
      'bench/kernel-harness/flash_params.py',
      'lib/cuda/generated/blockmask-classify-params.ts',
      'lib/cuda/generated/decode-params.ts',
      'lib/cuda/generated/flash-bwd-params.ts',
      'lib/cuda/generated/flash-fwd-params.ts',
      'lib/cuda/generated/paged-append-params.ts',
      'lib/cuda/generated/sm90-ws-block-mask.ts',
      'lib/cuda/generated/sm90-ws-params.ts',
      'lib/cuda/generated/tiles.ts',
      'native/kernels/generated/blockmask_classify_params.cuh',
      'native/kernels/generated/cast_params.cuh',
      'native/kernels/generated/decode_config.cuh',
      'native/kernels/generated/decode_params.cuh',
      'native/kernels/generated/flash_bwd_config.cuh',
      'native/kernels/generated/flash_bwd_params.cuh',
      'native/kernels/generated/flash_fwd_config.cuh',
      'native/kernels/generated/flash_fwd_params.cuh',
      'native/kernels/generated/paged_append_params.cuh',
      'native/kernels/generated/sm90_ws_block_mask.cuh',
      'native/kernels/generated/sm90_ws_params.cuh',
      'native/kernels/generated/tile_config.cuh',
    ]);
    for (const p of paths) expect(readFileSync(p, 'utf8'), `${p} is stale: run node scripts/gen-kernel-interface.mjs`).toBe(fresh[p]);
  });

  it('--check names the files a changed description makes stale', () => {
    const dir = copyInterface();
    const file = join(dir, 'flash_fwd_params.json');
    const d = JSON.parse(readFileSync(file, 'utf8')) as { fields: { name: string; doc?: string }[] };
    d.fields[0]!.doc = 'changed';
    writeFileSync(file, JSON.stringify(d));
    const r = spawnSync(process.execPath, ['scripts/gen-kernel-interface.mjs', '--check', '--interface', dir], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('native/kernels/generated/flash_fwd_params.cuh');
    expect(r.stderr).not.toContain('tile_config.cuh');
    const ok = spawnSync(process.execPath, ['scripts/gen-kernel-interface.mjs', '--check'], { encoding: 'utf8' });
    expect(ok.status, ok.stderr).toBe(0);
  });

  it('rejects a field that would need implicit padding', async () => {
    const dir = copyInterface();
    const file = join(dir, 'flash_fwd_params.json');
    const d = JSON.parse(readFileSync(file, 'utf8')) as { fields: Record<string, unknown>[] };
    d.fields.splice(1, 0, { name: 'extra', type: 'i32', ts: '0' }); // puts the pointer k at offset 12
    writeFileSync(file, JSON.stringify(d));
    const gen = (await import(pathToFileURL(join(process.cwd(), 'scripts/gen-kernel-interface.mjs')).href)) as
      { generate(dir: string): Map<string, string> };
    expect(() => gen.generate(dir)).toThrow(/field k \(ptr\) at offset 12 needs padding/);
  });
});

const scratch: string[] = [];
afterAll(() => { for (const d of scratch) rmSync(d, { recursive: true, force: true }); });

/** A scratch copy of native/kernels/interface. */
function copyInterface(): string {
  const dir = mkdtempSync(join(tmpdir(), 'flexattn-iface-'));
  scratch.push(dir);
  cpSync('native/kernels/interface', dir, { recursive: true });
  return dir;
}
