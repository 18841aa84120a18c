/**
 * Free-space guard: before a backup starts, estimate what it will add to the volume and refuse
 * when the volume cannot hold it — a clear refusal up front instead of a TargetFullError half
 * way through a long job. The runner then tries the policy's fallbackTarget, if it has one.
 *
 * The estimate is what the backup will *add*, not the size of the source: every point is a
 * synthetic full, but only new chunks are stored. A source with points is estimated from what
 * its recent backups added (the largest of its last few increments); its first backup, a full
 * one, does not count, or a source whose first backup used more than half the volume would
 * never be backed up again, even unchanged. A first backup is estimated at the source's size
 * when that is known cheaply (an image file's allocated bytes), else at the margin alone.
 */
import { DrError, ExitCode } from '../errors.js';
import { fsp } from '../runtime/fs.js';
import type { Point } from '../repo/point.js';
import type { Repository } from '../repo/repository.js';

/** Packs in flight (~16 MiB each), index and manifest, and the error of the estimate. */
export const SPACE_MARGIN_BYTES = 40 * 1024 * 1024;

/** How many of a source's newest increments the estimate looks at. */
export const RECENT_INCREMENTS = 3;

export class InsufficientSpaceError extends DrError {
  readonly code = 'TARGET_FULL';
  readonly exitCode = ExitCode.failed;
}

export interface SpaceEstimate {
  needBytes: number;
  /** What the estimate is made of, for the refusal message. */
  basis: string;
}

/**
 * What backing up a source will add to a repository. `points`: that source's points in the
 * repository, oldest first. `sourceBytes`: the source's data, when known (used for a first
 * backup only).
 */
export function estimateNeedBytes(points: readonly Point[], sourceBytes?: number): SpaceEstimate {
  const margin = `${mib(SPACE_MARGIN_BYTES)} margin`;
  if (points.length === 0) {
    return sourceBytes === undefined
      ? { needBytes: SPACE_MARGIN_BYTES, basis: `a first backup of a source whose size drctl cannot tell beforehand: the ${margin} only` }
      : { needBytes: sourceBytes + SPACE_MARGIN_BYTES, basis: `a first backup: the source holds ${mib(sourceBytes)} of data, plus ${margin}` };
  }
  // The oldest point without a parent is the source's first, full backup: it says nothing
  // about what the next backup adds. (VM points record no parent; the rule holds for them too.)
  const increments = points.filter((p, k) => k > 0 || p.parent !== undefined).slice(-RECENT_INCREMENTS);
  if (increments.length === 0) {
    return { needBytes: SPACE_MARGIN_BYTES, basis: `its only point is its first, full backup and the next one stores only what changed: the ${margin}` };
  }
  const largest = Math.max(...increments.map((p) => p.stats.storedNewBytes));
  const last = increments.length === 1 ? 'its last backup added' : `its last ${increments.length} backups added at most`;
  return { needBytes: largest + SPACE_MARGIN_BYTES, basis: `${last} ${mib(largest)}, plus ${margin}` };
}

export interface GuardedSource {
  name: string;
  policy?: string;
  /** The policy's fallbackTarget: then the refusal does not advise adding one. */
  fallbackTarget?: string;
  /** The source's data in bytes, asked for only when the source has no point yet. */
  sourceBytes?: () => Promise<number | undefined>;
}

/** Throws InsufficientSpaceError when the target says it has less free space than the estimate. */
export async function checkFreeSpace(repo: Repository, targetName: string, source: GuardedSource): Promise<void> {
  const free = await repo.target.freeBytes?.();
  if (free === undefined) return;
  const { points } = await repo.listPoints();
  const own = points.filter((p) => p.name === source.name && (!source.policy || p.policy === source.policy));
  const estimate = estimateNeedBytes(own, own.length === 0 ? await source.sourceBytes?.() : undefined);
  if (free >= estimate.needBytes) return;
  throw new InsufficientSpaceError(
    `target ${targetName} (${repo.target.location}) has ${mib(free)} free, but backing up ${source.name} needs about ${mib(estimate.needBytes)}`
    + ` (${estimate.basis}) - nothing was started`,
    spaceAdvice(source, own.length));
}

/** The allocated bytes of an image file (a sparse image's holes do not count); undefined when it cannot be read. */
export async function imageDataBytes(path: string): Promise<number | undefined> {
  const st = await fsp.stat(path).catch(() => undefined);
  return st?.isFile() ? Math.min(st.size, st.blocks * 512) : undefined;
}

/** What to do about a refusal: never forget a source's only point, never add a fallbackTarget the policy has. */
function spaceAdvice(source: GuardedSource, ownPoints: number): string {
  const ways = [
    ownPoints >= 2
      ? `forget older points of ${source.name} (\`drctl forget\`) and run \`drctl prune\``
      : `run \`drctl prune\` to delete data no point uses${ownPoints === 1 ? ` (keep ${source.name}'s only point)` : ''}`,
    'grow the volume',
  ];
  if (source.policy && !source.fallbackTarget) ways.push(`give policy ${source.policy} a fallbackTarget`);
  return `${ways.slice(0, -1).join(', ')} or ${ways.at(-1) as string}`;
}

function mib(n: number): string {
  return `${(n / 1048576).toFixed(0)} MiB`;
}
