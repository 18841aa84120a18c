/**
 * Forget: apply retention to the points of a repository. Retention is per group — one policy
 * and one protected object (point name) — and decided by a pure function from policies/
 * (passed in, so the engine does not depend on the policy module). Forgetting removes point
 * manifests only; the data goes at the next prune.
 *
 * `drctl forget` imports this file directly, not jobs/index.ts (which loads the runner): keep
 * its engine imports type-only (errors.ts aside, which the CLI loads anyway).
 */
import type { Repository } from '../repo/repository.js';
import type { Point } from '../repo/point.js';
import type { LockWait } from '../repo/locks.js';
import { PointNotFoundError, UsageError } from '../errors.js';

export interface RetentionDecision {
  keep: { point: Point; reasons: string[] }[];
  remove: Point[];
}
export type RetentionFn = (points: Point[]) => RetentionDecision;

export interface ForgetGroup {
  policy?: string;
  name: string;
  keep: { id: string; time: string; reasons: string[] }[];
  remove: { id: string; time: string }[];
}

export interface ForgetOptions {
  /** Which points retention looks at (e.g. one policy, one name). */
  filter: (p: Point) => boolean;
  retention: RetentionFn;
  dryRun?: boolean;
  lockWait?: LockWait;
  /** Now, for the age of safety points. */
  now: Date;
}

/**
 * How long a safety point (the state a VM had just before a restore overwrote it) is kept. It
 * is not one of the policy's generations: counting it would push a real backup out of
 * `--keep-last`, and retention would otherwise drop it at the first run after the restore,
 * while it is the only copy of what the restore replaced.
 */
export const SAFETY_POINT_KEEP_DAYS = 30;

export function groupOf(p: Point): string {
  return `${p.policy ?? ''}\u0000${p.name}`;
}

export async function forgetPoints(repo: Repository, opts: ForgetOptions): Promise<ForgetGroup[]> {
  const lock = await repo.lock('shared', 'drctl forget', opts.lockWait);
  try {
    const { points } = await repo.listPoints();
    const groups = new Map<string, Point[]>();
    for (const p of points.filter(opts.filter)) {
      const g = groups.get(groupOf(p));
      if (g) g.push(p);
      else groups.set(groupOf(p), [p]);
    }
    const out: ForgetGroup[] = [];
    for (const members of groups.values()) {
      const first = members[0] as Point;
      const d = decide(members, opts.retention, opts.now);
      out.push({
        ...(first.policy ? { policy: first.policy } : {}),
        name: first.name,
        keep: d.keep.map((k) => ({ id: k.point.id, time: k.point.time, reasons: k.reasons })),
        remove: d.remove.map((p) => ({ id: p.id, time: p.time })),
      });
      if (!opts.dryRun) for (const p of d.remove) await repo.removePoint(p.id);
    }
    return out;
  } finally {
    await lock.release();
  }
}

/** Retention over a group's backups; its safety points are kept for SAFETY_POINT_KEEP_DAYS, apart from the generations. */
function decide(members: Point[], retention: RetentionFn, now: Date): RetentionDecision {
  const safety = members.filter((p) => p.safetyFor);
  const d = retention(members.filter((p) => !p.safetyFor));
  const cutoff = now.getTime() - SAFETY_POINT_KEEP_DAYS * 86_400_000;
  for (const p of safety) {
    if (Date.parse(p.time) >= cutoff) d.keep.push({ point: p, reasons: [`safety point taken before a restore of ${p.safetyFor?.slice(0, 12)} (kept ${SAFETY_POINT_KEEP_DAYS} days)`] });
    else d.remove.push(p);
  }
  return d;
}

export interface ForgottenPoint {
  id: string;
  /** Absent for a damaged point file (it cannot be read). */
  name?: string;
  time?: string;
  damaged?: boolean;
}

/**
 * Remove the points given by id or unique id prefix, damaged point files included (retention
 * always keeps the newest point, so a damaged newest one could otherwise never go, and prune
 * refuses to run beside it). Every spec is resolved before anything is removed.
 */
export async function forgetById(repo: Repository, specs: string[], opts: { dryRun?: boolean; lockWait?: LockWait }): Promise<ForgottenPoint[]> {
  const lock = await repo.lock('shared', 'drctl forget', opts.lockWait);
  try {
    const { points, damaged } = await repo.listPoints();
    const all: ForgottenPoint[] = [...points.map((p) => ({ id: p.id, name: p.name, time: p.time })), ...damaged.map((id) => ({ id, damaged: true }))];
    const chosen = new Map<string, ForgottenPoint>();
    for (const spec of specs) {
      const want = spec.trim().toLowerCase();
      const matches = want === '' ? [] : all.filter((p) => p.id.startsWith(want));
      if (matches.length === 0) throw new PointNotFoundError(`no recovery point ${spec} in ${repo.location}`, 'list them with `drctl points`; nothing was removed');
      if (matches.length > 1) {
        throw new UsageError(`point id prefix ${spec} is ambiguous: ${matches.length} points match (${matches.slice(0, 5).map((m) => m.id.slice(0, 12)).join(', ')}${matches.length > 5 ? ', …' : ''})`,
          'give more characters of the id; nothing was removed');
      }
      const m = matches[0] as ForgottenPoint;
      chosen.set(m.id, m);
    }
    if (!opts.dryRun) for (const id of chosen.keys()) await repo.removePoint(id);
    return [...chosen.values()];
  } finally {
    await lock.release();
  }
}
