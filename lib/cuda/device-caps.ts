/**
 * What the launch planner needs to know about a GPU, read from the driver once
 * per device: its name and compute capability.
 * Internal: not exported from the package.
 * @module
 */
import { native } from '../native.js';

/** A device's capabilities as the planner sees them. */
export interface DeviceCaps {
  readonly name: string;
  readonly major: number;
  readonly minor: number;
  /** Streaming multiprocessors (the decode planner sizes split-KV grids with it). */
  readonly smCount?: number;
  /** Shared memory one CTA may opt in to, bytes (about what one SM holds). */
  readonly smemPerBlockOptin?: number;
}

const known = new Map<number, DeviceCaps>();

/** The capabilities of CUDA device `device` (queried on first use, then cached). */
export function deviceCaps(device: number): DeviceCaps {
  let c = known.get(device);
  if (!c) {
    const p = native().deviceProps(device);
    known.set(device, (c = Object.freeze({
      name: p.name, major: p.major, minor: p.minor, smCount: p.multiprocessors, smemPerBlockOptin: p.sharedMemoryPerBlockOptin,
    })));
  }
  return c;
}
