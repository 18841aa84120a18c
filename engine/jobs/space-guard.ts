/**
 * Free-space guard: before a backup starts, estimate what it will store from the previous point
 * of the same source and refuse when the volume cannot hold it — a clear refusal up front
 * instead of a TargetFullError half way through a long job.
 *
 * The estimate is deliberately simple and errs on the safe side: what the newest point of the
 * source stored new (for a second run after a first full one, that is the full size), plus a
 * margin for the pack being written, the index and the manifest. A source without points is
 * not estimated (only the margin is required).
 */
import { DrError, ExitCode } from '../errors.js';
import type { Point } from '../repo/point.js';
import type { Repository } from '../repo/repository.js';

/** Two packs in flight (~16 MiB each), index and manifest. */
export const SPACE_MARGIN_BYTES = 40 * 1024 * 1024;

export class InsufficientSpaceError extends DrError {
  readonly code = 'TARGET_FULL';
  readonly exitCode = ExitCode.failed;
}

export function estimateNeedBytes(previous: Point | undefined): number {
  return (previous?.stats.storedNewBytes ?? 0) + SPACE_MARGIN_BYTES;
}

/** Throws InsufficientSpaceError when the target says it has less free space than the estimate. */
export async function checkFreeSpace(repo: Repository, targetName: string, source: { name: string; policy?: string }): Promise<void> {
  const free = await repo.target.freeBytes?.();
  if (free === undefined) return;
  const { points } = await repo.listPoints();
  const previous = points.filter((p) => p.name === source.name && (!source.policy || p.policy === source.policy)).at(-1);
  const need = estimateNeedBytes(previous);
  if (free >= need) return;
  const mib = (n: number): string => `${(n / 1048576).toFixed(0)} MiB`;
  throw new InsufficientSpaceError(
    `target ${targetName} (${repo.target.location}) has ${mib(free)} free, but backing up ${source.name} needs about ${mib(need)}`
    + `${previous ? ` (its last point stored ${mib(previous.stats.storedNewBytes)} new, plus ${mib(SPACE_MARGIN_BYTES)} margin)` : ''} - nothing was started`,
    'free space (drctl forget, then drctl prune), grow the volume, or give the policy a fallbackTarget');
}
