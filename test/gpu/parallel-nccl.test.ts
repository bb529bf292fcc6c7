/**
 * The NCCL communicator on one GPU (a 1-rank job: the ring step sends to
 * itself, the all-gather gathers one part), through the real libnccl. Random
 * data into poisoned outputs, compared bit for bit. Needs a GPU and libnccl
 * (test/nccl-gate.ts; FLEXATTN_REQUIRE_NCCL=1 makes a skip a failure).
 */
import { expect, it } from 'vitest';
import { createCommunicator, ncclInfo, ncclUniqueId } from '../../lib/index.js';
import { Tensor } from '../../lib/tensor.js';
import { DisposedError } from '../../lib/errors.js';
import { describeNccl } from '../nccl-gate.js';

// NCCL communication is off by default until a GPU run has verified it (lib/cuda/switches.ts,
// requireVerifiedGpuPath); this suite is that verification, so it turns the path on for itself.
process.env.FLEXATTN_UNVERIFIED_GPU_PATHS ??= '1';

const bits = async (t: Tensor) => new Uint8Array((await t.toHost()).slice().buffer);
/** A tensor of `shape` whose every byte is 0xA5 (never what the transfers write). */
function poisoned(shape: number[], dtype: 'f32' | 'bf16' | 'i32' = 'f32'): Tensor {
  const n = shape.reduce((a, b) => a * b, 1) * (dtype === 'bf16' ? 2 : 4);
  return Tensor.fromHost(new Uint8Array(n).fill(0xa5), shape, dtype, { device: 'cuda:0' });
}

describeNccl('NCCL communicator (one GPU)', 1, 'FLEXATTN_REQUIRE_NCCL', () => {
  it('reports the library it loaded', () => {
    const n = ncclInfo();
    expect(n.loaded).toBe(true);
    expect(n.version).toMatch(/^2\.(1[89]|[2-9]\d)\.\d+$/);
    console.log(`[nccl] ${n.path} ${n.version}`);
  });

  it('one process, one device: ringShift and allGather copy the bits; NCCL_NVLS_ENABLE is 0', async () => {
    const userNvls = process.env.NCCL_NVLS_ENABLE;
    const comm = await createCommunicator({ devices: ['cuda:0'] });
    expect(process.env.NCCL_NVLS_ENABLE).toBe(userNvls ?? '0');
    expect(comm.kind).toBe('nccl');
    expect(comm.size).toBe(1);
    expect(comm.localRanks).toEqual([0]);
    expect(comm.devices).toEqual(['cuda:0']);
    for (const [shape, dtype] of [[[77, 33], 'f32'], [[1], 'bf16'], [[1531, 3], 'bf16']] as const) {
      const send = Tensor.randn([...shape], dtype, { device: 'cuda:0' });
      const recv = poisoned([...shape], dtype);
      await comm.ringShift([send], [recv]);
      expect(await bits(recv)).toEqual(await bits(send));
    }
    // A view at an offset into a larger buffer, received into another view: offsets are honoured.
    const big = Tensor.randn([3, 77, 5], 'f32', { device: 'cuda:0' });
    const out = poisoned([3, 77, 5]);
    await comm.ringShift([big.select(0, 2)], [out.select(0, 1)]);
    const b = await big.toHost() as Float32Array, o = await out.toHost() as Float32Array;
    const part = 77 * 5;
    expect(Array.from(o.subarray(part, 2 * part))).toEqual(Array.from(b.subarray(2 * part, 3 * part)));
    expect(new Uint8Array(o.buffer.slice(0, part * 4)).every((x) => x === 0xa5)).toBe(true);
    expect(new Uint8Array(o.buffer.slice(2 * part * 4)).every((x) => x === 0xa5)).toBe(true);
    // All-gather of i32 (1 rank: output = input), 5 x 7.
    const input = Tensor.fromHost(Int32Array.from({ length: 35 }, (_, i) => (i * 2654435761) | 0), [5, 7], 'i32', { device: 'cuda:0' });
    const gathered = poisoned([5, 7], 'i32');
    await comm.allGather([input], [gathered]);
    expect(await bits(gathered)).toEqual(await bits(input));
    comm.dispose();
    comm.dispose();
    await expect(comm.ringShift([input], [gathered])).rejects.toBeInstanceOf(DisposedError);
  });

  it('transfers queued back to back stay in order, and a send tensor disposed before the await still arrives', async () => {
    const comm = await createCommunicator({ devices: ['cuda:0'] });
    const a = Tensor.randn([1024, 64], 'f32', { device: 'cuda:0' });
    const aBits = await bits(a);
    const mid = poisoned([1024, 64]);
    const end = poisoned([1024, 64]);
    const p1 = comm.ringShift([a], [mid]);
    const p2 = comm.ringShift([mid], [end]);  // reads what p1 wrote: the ops must run in order
    a.dispose();
    // Reuse the freed block at once: must not change what p1 sends.
    const filler = Tensor.zeros([1024, 64], 'f32', { device: 'cuda:0' });
    await Promise.all([p1, p2]);
    expect(await bits(mid)).toEqual(aBits);
    expect(await bits(end)).toEqual(aBits);
    filler.dispose();
    comm.dispose();
  });

  it('one rank per process (unique id, size 1) works the same', async () => {
    const id = ncclUniqueId();
    expect(id).toBeInstanceOf(Uint8Array);
    expect(id.length).toBe(128);
    expect(id.some((x) => x !== 0)).toBe(true);
    const comm = await createCommunicator({ uniqueId: id, rank: 0, size: 1, device: 'cuda:0' });
    expect(comm.localRanks).toEqual([0]);
    const send = Tensor.randn([333], 'f32', { device: 'cuda:0' });
    const recv = poisoned([333]);
    await comm.ringShift([send], [recv]);
    expect(await bits(recv)).toEqual(await bits(send));
    comm.dispose();
  });
});
