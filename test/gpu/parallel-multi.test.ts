/**
 * The NCCL communicator across every GPU of the host (2 or more): one process
 * driving them all (ncclCommInitAll), and one worker thread per GPU joined by
 * a unique id (ncclCommInitRank). Random data, poisoned outputs, bit-exact
 * checks of the ring step (rank r gets rank r-1's data) and the all-gather.
 * Gate: test/nccl-gate.ts (FLEXATTN_REQUIRE_MULTI_GPU=1 makes a skip a failure).
 */
import { expect, it } from 'vitest';
import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createCommunicator, deviceCount, ncclUniqueId } from '../../lib/index.js';
import { Tensor } from '../../lib/tensor.js';
import { packageRoot } from '../../lib/native.js';
import { describeNccl } from '../nccl-gate.js';

// NCCL communication is off by default until a GPU run has verified it (lib/cuda/switches.ts,
// requireVerifiedGpuPath); this suite is that verification, so it turns the path on for itself.
process.env.FLEXATTN_UNVERIFIED_GPU_PATHS ??= '1';

const bytesOf = async (t: Tensor) => new Uint8Array((await t.toHost()).slice().buffer);
const concat = (parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
};

describeNccl('NCCL communicator (several GPUs)', 2, 'FLEXATTN_REQUIRE_MULTI_GPU', () => {
  it('one process, every GPU: ring step and all-gather', async () => {
    const g = deviceCount();
    const devices = Array.from({ length: g }, (_, i) => `cuda:${i}` as const);
    const comm = await createCommunicator({ devices });
    expect(comm.size).toBe(g);
    expect(comm.localRanks).toEqual(devices.map((_, i) => i));
    const shape = [77, 3, 33];
    const send = devices.map((d, i) => Tensor.randn(shape, 'bf16', { device: d, seed: 100 + i }));
    // Two hops around the ring: the second sends what the first received.
    let from = send;
    for (let step = 0; step < 2; step++) {
      const expected = await Promise.all(from.map(bytesOf));
      const into = devices.map((d) => Tensor.fromHost(new Uint8Array(77 * 99 * 2).fill(0xa5), shape, 'bf16', { device: d }));
      await comm.ringShift(from, into);
      for (let r = 0; r < g; r++) expect(await bytesOf(into[r]!)).toEqual(expected[(r - 1 + g) % g]);
      from = into;
    }
    const recv = from;
    const input = devices.map((d, i) => Tensor.randn([5, 7], 'f32', { device: d, seed: 7 + i }));
    const output = devices.map((d) => Tensor.fromHost(new Uint8Array(g * 35 * 4).fill(0xa5), [g * 5, 7], 'f32', { device: d }));
    await comm.allGather(input, output);
    const want = concat(await Promise.all(input.map(bytesOf)));
    for (let r = 0; r < g; r++) expect(await bytesOf(output[r]!)).toEqual(want);
    // A tensor on another rank's device is refused before anything is queued.
    await expect(comm.ringShift([...send].reverse(), recv)).rejects.toThrow(/send\[0\]: expected a tensor on cuda:0/);
    comm.dispose();
  });

  it('one worker thread per GPU, joined by a unique id', async () => {
    const g = deviceCount();
    const id = ncclUniqueId();
    const index = pathToFileURL(join(packageRoot, 'dist', 'lib', 'index.js')).href;
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      import(${JSON.stringify(index)}).then(async (m) => {
        const { rank, size, id } = workerData;
        const device = 'cuda:' + rank;
        const comm = await m.createCommunicator({ uniqueId: new Uint8Array(id), rank, size, device });
        const send = m.Tensor.randn([1531], 'f32', { device, seed: 1000 + rank });
        const recv = m.Tensor.fromHost(new Uint8Array(1531 * 4).fill(0xa5), [1531], 'f32', { device });
        await comm.ringShift([send], [recv]);
        const gathered = m.Tensor.fromHost(new Uint8Array(size * 1531 * 4).fill(0xa5), [size * 1531], 'f32', { device });
        await comm.allGather([send], [gathered]);
        const b = async (t) => Array.from(new Uint8Array((await t.toHost()).slice().buffer));
        parentPort.postMessage({ rank, local: comm.localRanks, send: await b(send), recv: await b(recv), gathered: await b(gathered) });
        comm.dispose();
      }).catch((e) => parentPort.postMessage({ error: e.name + ': ' + e.message }));`;
    const results = await Promise.all(Array.from({ length: g }, (_, rank) => new Promise<any>((resolve, reject) => {
      const w = new Worker(code, { eval: true, workerData: { rank, size: g, id } });
      w.once('message', (m) => { void w.terminate(); resolve(m); });
      w.once('error', reject);
    })));
    for (const r of results) expect(r.error).toBeUndefined();
    results.sort((a, b) => a.rank - b.rank);
    const all = concat(results.map((r) => Uint8Array.from(r.send)));
    for (let r = 0; r < g; r++) {
      expect(results[r].local).toEqual([r]);
      expect(results[r].recv).toEqual(results[(r - 1 + g) % g].send);
      expect(Uint8Array.from(results[r].gathered)).toEqual(all);
    }
  }, 120_000);
});
