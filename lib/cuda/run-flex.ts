/**
 * GPU flex attention: the block mask on the launch device, the schedules the
 * plan asks for (64×64 lists, segmented grid), then the launch.
 * Internal: not exported from the package.
 * @module
 */
import type { BlockMask } from '../blockmask/mask.js';
import { throwIfAborted } from '../abort.js';
import type { ScoreMod } from '../mods/index.js';
import type { Hold } from '../ownership.js';
import type { Tensor } from '../tensor.js';
import type { QkvDims } from '../validate.js';
import { launch } from './launch.js';
import type { FlexPlan } from './plan.js';
import { builtFineSchedule, fineSchedule } from './schedules/fine.js';
import { segmentedSchedule, type SegmentedSchedule } from './schedules/segments.js';
import { refuseUnverifiedSm90ws } from './switches.js';

/** Arguments of one GPU flex-attention launch. */
export interface CudaFlexArgs {
  q: Tensor; k: Tensor; v: Tensor;
  dims: QkvDims;
  scale: number;
  returnLse: boolean;
  params: Record<string, number>;
  scoreMod?: ScoreMod;
  blockMask?: BlockMask;
  /** The call's claims: captured tensors and block-mask tensors are read through it. */
  hold: Hold;
  signal?: AbortSignal;
}

const blockMaskCopies = new WeakMap<BlockMask, Map<string, BlockMask>>();

/** `bm` with its arrays on `device` (copied once per mask and device; the decode path uses it too). */
export function onDevice(bm: BlockMask, device: string): BlockMask {
  if (bm.device === device) return bm;
  let m = blockMaskCopies.get(bm);
  if (!m) blockMaskCopies.set(bm, (m = new Map()));
  let c = m.get(device);
  if (!c) m.set(device, (c = bm.to(device as `cuda:${number}`)));
  return c;
}

/**
 * Runs flex attention on the GPU as `plan` (from planFlex) says. Call it
 * before the op's first await: its synchronous part claims the block mask's
 * device arrays (and those of its 64×64 schedule, once built) in `args.hold`,
 * so a mask disposed right after the call still has them at launch. Once the
 * schedules a launch walks are built (every call after the first for a mask)
 * it launches without an await.
 */
export function runFlex(plan: FlexPlan, args: CudaFlexArgs): Promise<{ out: Tensor; lse?: Tensor }> {
  const { q, hold, params } = args;
  // opt-in (FLEXATTN_KERNEL_FAMILY=sm90ws) and not yet run on a GPU: refused before anything is claimed or built
  const refused = plan.family === 'sm90ws' ? refuseUnverifiedSm90ws('flex attention on ') : undefined;
  if (refused) return refused;
  const bm = args.blockMask ? onDevice(args.blockMask, q.device) : undefined;
  const claimed = new Map<BlockMask, Tensor[]>();
  const claim = (m: BlockMask): Tensor[] => {
    let held = claimed.get(m);
    if (!held) {
      held = [m.kvNumBlocks, m.kvIndices, m.fullKvNumBlocks, m.fullKvIndices].map((t) => hold.tensor(t, 'options.blockMask'));
      claimed.set(m, held);
    }
    return held;
  };
  if (bm) claim(bm);
  const built = bm && plan.fineSchedule ? builtFineSchedule(bm, params) : undefined;
  if (built) claim(built);
  const needsFine = !!bm && plan.fineSchedule && !built;
  const launched = needsFine || (bm && plan.segmentsFrom)
    ? withSchedules(plan, args, bm!, built, claim)
    : launchOn(plan, args, built ?? bm, undefined, claim);
  if (bm) {
    // A mask disposed while the call ran had to re-create the tensors the launch
    // derives from it (schedules, CTA order): dispose it again, so they go
    // too once the launch is enqueued (stream-ordered, like any dispose).
    const probe = bm.kvNumBlocks;
    const after = (): void => { if (probe.disposed) bm.dispose(); };
    launched.then(after, after);
  }
  return launched;
}

/** The launch after building what it walks: the 64×64 schedule and/or the segmented grid. */
async function withSchedules(plan: FlexPlan, args: CudaFlexArgs, bm: BlockMask, built: BlockMask | undefined,
  claim: (m: BlockMask) => Tensor[]): Promise<{ out: Tensor; lse?: Tensor }> {
  const { q, hold, params } = args;
  const readMod = () => hold.maskMod(bm.maskMod!);
  const fine = built ?? (plan.fineSchedule ? await fineSchedule(bm, params, q.deviceIndex, readMod) : undefined);
  if (fine) claim(fine);
  let segments: SegmentedSchedule | undefined;
  const uniform64 = plan.segmentsFrom === 'fine' ? fine : plan.segmentsFrom === 'mask' ? bm : undefined;
  if (uniform64) segments = (await segmentedSchedule(bm, uniform64, params, q.deviceIndex, readMod)) ?? undefined;
  return launchOn(plan, args, segments?.mask ?? fine ?? bm, segments, claim);
}

function launchOn(plan: FlexPlan, args: CudaFlexArgs, walk: BlockMask | undefined, segments: SegmentedSchedule | undefined,
  claim: (m: BlockMask) => Tensor[]): Promise<{ out: Tensor; lse?: Tensor }> {
  throwIfAborted(args.signal, 'flexAttention');
  return launch({
    q: args.q, k: args.k, v: args.v, d: args.dims, scale: args.scale, returnLse: args.returnLse, params: args.params, plan,
    hold: args.hold,
    ...(args.scoreMod ? { scoreMod: args.scoreMod } : {}),
    ...(walk ? { blockMask: walk, maskMod: segments ? segments.maskMod : walk.maskMod, blockArrays: claim(walk) } : {}),
    ...(segments ? { segments } : {}),
    ...(plan.ctaOrder ? { ctaOrder: true } : {}),
    ...(args.signal ? { signal: args.signal } : {}),
  });
}
