/**
 * What the multi-GPU algorithms (context-parallel attention, KV-sharded
 * decoding) need from communication, and nothing more. A `Communicator`
 * (lib/parallel/communicator.ts) implements it over NCCL; the virtual
 * transport below implements it in one process with copies, so the ring
 * schedule, the load-balanced split and the LSE merge are tested on the CPU
 * backend and on one GPU exactly as they run on several.
 *
 * Ranks: `size` ranks in all; this process drives `localRanks` (all of them
 * when one process drives every GPU or for virtual ranks, one of them for
 * one process per GPU). Every per-rank argument is an array indexed like
 * `localRanks`.
 */
import type { Device } from '../device.js';
import type { Tensor } from '../tensor.js';

export interface Transport {
  /** 'nccl' over libnccl, 'virtual' for G ranks simulated in one process. */
  readonly kind: 'nccl' | 'virtual';
  /** Number of ranks G. */
  readonly size: number;
  /** The ranks this process drives, ascending. */
  readonly localRanks: readonly number[];
  /** The device of each local rank (same order as `localRanks`). */
  readonly devices: readonly Device[];
  /**
   * One step of the ring: every local rank r sends `send[i]` to rank
   * (r + 1) % size and receives, into `recv[i]`, what rank (r - 1 + size) % size
   * sent. Shapes and dtypes of send and recv match on every rank. Resolves when
   * the received data is usable by later work on the rank's device (for NCCL:
   * ordered on the compute stream, not necessarily finished on the host).
   */
  ringShift(send: readonly Tensor[], recv: readonly Tensor[], options?: { signal?: AbortSignal }): Promise<void>;
  /**
   * All-gather along dimension 0: `output[i]` (shape [size * n, ...]) on every
   * local rank receives every rank's `input` (shape [n, ...]) in rank order.
   */
  allGather(input: readonly Tensor[], output: readonly Tensor[], options?: { signal?: AbortSignal }): Promise<void>;
  /** Releases the communicator's resources; later calls throw a typed error. */
  dispose(): void;
}
