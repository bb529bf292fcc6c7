/**
 * createCommunicator's and the Communicator's argument checks, which run
 * before NCCL or a GPU is touched (lib/parallel/communicator.ts): each bad
 * call rejects with a typed error naming the argument and what to pass.
 */
import { describe, expect, it } from 'vitest';
import { createCommunicator, Communicator } from '../lib/parallel/communicator.js';
import { Tensor } from '../lib/tensor.js';
import { DeviceError, DisposedError, DTypeError, InvalidArgumentError, NotImplementedError, ShapeError } from '../lib/errors.js';
import type { NativeNcclComm } from '../lib/native.js';

async function rejection(p: Promise<unknown>): Promise<Error & { argument?: string }> {
  try { await p; } catch (e) { return e as Error; }
  throw new Error('expected a rejection');
}

describe('createCommunicator arguments', () => {
  it('rejects a missing or non-object options', async () => {
    expect(await rejection(createCommunicator(undefined as never))).toBeInstanceOf(InvalidArgumentError);
    expect(await rejection(createCommunicator({} as never))).toMatchObject({ argument: 'options.devices' });
  });

  it('devices: non-empty, CUDA only, each GPU once', async () => {
    expect(await rejection(createCommunicator({ devices: [] }))).toMatchObject({ argument: 'options.devices' });
    const cpu = await rejection(createCommunicator({ devices: ['cpu'] }));
    expect(cpu).toBeInstanceOf(DeviceError);
    expect(cpu.message).toMatch(/options\.devices\[0\]: expected 'cuda' or 'cuda:N'.*got 'cpu'/);
    expect(await rejection(createCommunicator({ devices: ['cuda:0', 'gpu1' as never] })))
      .toMatchObject({ argument: 'options.devices[1]' });
    const dup = await rejection(createCommunicator({ devices: ['cuda:1', 'cuda:0', 'cuda:1'] }));
    expect(dup).toBeInstanceOf(DeviceError);
    expect(dup.message).toContain('cuda:1 is already options.devices[0]');
    // 'cuda' is cuda:0
    expect((await rejection(createCommunicator({ devices: ['cuda', 'cuda:0'] }))).message).toContain('cuda:0 is already');
  });

  it('uniqueId: 128 bytes, with an integer size and a rank in range, not with devices', async () => {
    const id = new Uint8Array(128);
    const short = await rejection(createCommunicator({ uniqueId: new Uint8Array(127), rank: 0, size: 2 }));
    expect(short).toMatchObject({ argument: 'options.uniqueId' });
    expect(short.message).toContain('127 bytes');
    expect(await rejection(createCommunicator({ uniqueId: [1, 2] as never, rank: 0, size: 2 })))
      .toMatchObject({ argument: 'options.uniqueId' });
    expect(await rejection(createCommunicator({ uniqueId: id, rank: 0, size: 0 }))).toMatchObject({ argument: 'options.size' });
    expect(await rejection(createCommunicator({ uniqueId: id, rank: 0, size: 1.5 }))).toMatchObject({ argument: 'options.size' });
    const rank = await rejection(createCommunicator({ uniqueId: id, rank: 2, size: 2 }));
    expect(rank).toMatchObject({ argument: 'options.rank' });
    expect(rank.message).toContain('a rank in [0, 2)');
    expect(await rejection(createCommunicator({ uniqueId: id, rank: -1, size: 2 }))).toMatchObject({ argument: 'options.rank' });
    expect(await rejection(createCommunicator({ uniqueId: id, rank: 0, size: 2, device: 'cpu' as never })))
      .toMatchObject({ argument: 'options.device' });
    expect(await rejection(createCommunicator({ uniqueId: id, rank: 0, size: 2, devices: ['cuda:0'] })))
      .toMatchObject({ argument: 'options.devices' });
    expect(await rejection(createCommunicator({ devices: ['cuda:0'], rank: 0 }))).toMatchObject({ argument: 'options.uniqueId' });
  });

  it('two or more ranks are off until they have run on GPUs; one rank is not guarded', async () => {
    const saved = process.env.FLEXATTN_UNVERIFIED_GPU_PATHS;
    delete process.env.FLEXATTN_UNVERIFIED_GPU_PATHS;
    try {
      for (const opts of [{ devices: ['cuda:0', 'cuda:1'] }, { uniqueId: new Uint8Array(128), rank: 0, size: 2 }] as const) {
        const e = await rejection(createCommunicator(opts as never));
        expect(e).toBeInstanceOf(NotImplementedError);
        expect(e.message).toMatch(/more than one rank.*FLEXATTN_UNVERIFIED_GPU_PATHS=1/s);
      }
      // Size 1 passes the guard: what stops it here is the NCCL library (none on CI) or the device, never the guard.
      const one = await rejection(createCommunicator({ devices: ['cuda:0'] }));
      expect(one.message).not.toMatch(/FLEXATTN_UNVERIFIED_GPU_PATHS/);
    } finally {
      if (saved === undefined) delete process.env.FLEXATTN_UNVERIFIED_GPU_PATHS; else process.env.FLEXATTN_UNVERIFIED_GPU_PATHS = saved;
    }
  });

  it('signal: an AbortSignal', async () => {
    expect(await rejection(createCommunicator({ devices: ['cuda:0'], signal: 'x' as never })))
      .toMatchObject({ argument: 'options.signal' });
  });
});

describe('Communicator transfer arguments', () => {
  // A communicator over a handle that records calls: the checks run before the handle is used.
  function fake(devices: string[]): { comm: Communicator; calls: string[] } {
    const calls: string[] = [];
    const handle: NativeNcclComm = {
      ringShift: async () => { calls.push('ringShift'); },
      allGather: async () => { calls.push('allGather'); },
      destroy: async () => { calls.push('destroy'); },
    };
    return { comm: new Communicator(handle, devices.length, devices.map((_, i) => i), devices as never), calls };
  }

  it('one tensor per local rank, on that rank\'s device', async () => {
    const { comm, calls } = fake(['cuda:0', 'cuda:1']);
    const a = Tensor.zeros([4]);
    const one = await rejection(comm.ringShift([a], [a]));
    expect(one).toMatchObject({ argument: 'send' });
    expect(one.message).toContain('an array of 2 tensors');
    const dev = await rejection(comm.ringShift([a, a], [a, a]));
    expect(dev).toBeInstanceOf(DeviceError);
    expect(dev.message).toMatch(/send\[0\]: expected a tensor on cuda:0 \(the device of local rank 0\), got cpu/);
    expect(calls).toEqual([]);
  });

  it('send and recv: same dtype and shape; all-gather output [size * n, ...]', async () => {
    // Devices 'cpu' let CPU tensors through the device check, to reach the shape and dtype checks.
    const { comm, calls } = fake(['cpu', 'cpu']);
    const x = Tensor.zeros([3, 2]);
    expect(await rejection(comm.ringShift([x, x], [x, Tensor.zeros([3, 2], 'bf16')]))).toBeInstanceOf(DTypeError);
    const shape = await rejection(comm.ringShift([x, x], [x, Tensor.zeros([2, 3])]));
    expect(shape).toBeInstanceOf(ShapeError);
    expect(shape.message).toContain('recv[1]: expected shape [3, 2] (that of send[1])');
    const ranks = await rejection(comm.ringShift([x, Tensor.zeros([4, 2])], [x, Tensor.zeros([4, 2])]));
    expect(ranks).toMatchObject({ argument: 'send[1]' });
    const gather = await rejection(comm.allGather([x, x], [Tensor.zeros([6, 2]), Tensor.zeros([3, 2])]));
    expect(gather).toBeInstanceOf(ShapeError);
    expect(gather.message).toContain('output[1]: expected shape [6, 2] (size 2 × input[1] along dim 0)');
    expect(await rejection(comm.allGather([x, x], [Tensor.zeros([2, 6]).transpose(0, 1), Tensor.zeros([6, 2])]))).toBeInstanceOf(InvalidArgumentError);
    const disposed = Tensor.zeros([3, 2]);
    disposed.dispose();
    expect(await rejection(comm.ringShift([x, disposed], [x, x]))).toBeInstanceOf(DisposedError);
    expect(calls).toEqual([]);
  });

  it('dispose is idempotent; later use is a DisposedError', async () => {
    const { comm, calls } = fake(['cuda:0']);
    comm.dispose();
    comm.dispose();
    expect(comm.disposed).toBe(true);
    expect(calls).toEqual(['destroy']);
    const e = await rejection(comm.allGather([], []));
    expect(e).toBeInstanceOf(DisposedError);
    expect(e.message).toBe('communicator: communicator was used after dispose()');
  });

  it('an aborted signal rejects before anything is queued', async () => {
    const { comm, calls } = fake(['cpu']);
    const x = Tensor.zeros([2]);
    const e = await rejection(comm.ringShift([x], [x], { signal: AbortSignal.abort() }));
    expect(e.name).toBe('AbortError');
    expect(calls).toEqual([]);
  });
});
