/**
 * The GPU launch path without a GPU: the package runs on the fake addon of
 * bench/host-overhead (every GPU operation a no-op, launches recorded), so
 * a launch that loses an option on its way to the kernel (a mask, a mod's
 * captured tensor) fails here, not only on the GPU machine.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const root = new URL('..', import.meta.url).pathname;

describe('launch path on the fake addon', () => {
  it('hands the mask and the mods\' captured tensors to every launch', () => {
    expect(existsSync(`${root}dist/lib/index.js`), 'run npm run build:ts first').toBe(true);
    const r = spawnSync(process.execPath, ['--require', './bench/host-overhead/preload.cjs', 'test/fake-addon/launch-child.mjs'],
      { cwd: root, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const rep = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(rep.sdpaMask.launches).toBe(1);
    expect(rep.sdpaMask.kernels[0]).toMatch(/^flexattn_flex_/);
    expect(rep.sdpaMask.readsMask).toBe(true);
    expect(rep.sdpaCausal.kernels).toEqual([expect.stringMatching(/_causal$/)]);
    for (const i of [0, 1, 2]) {
      expect(rep[`flexAlibi${i}`].launches).toBe(1);
      expect(rep[`flexAlibi${i}`].readsSlopes).toBe(true);
    }
  });
});
