/**
 * What a policy means in practice: when it runs next, and which recovery points are left after
 * a stretch of successful runs once retention has done its work. Pure: `from` is passed in.
 */
import { CronSchedule } from './cron.js';
import { applyRetention } from './retention.js';
import type { Policy } from './types.js';

const DAY_MS = 86_400_000;

export interface PolicyPlan {
  nextRuns: Date[];
  /** Runs in (from, from + days). */
  simulatedRuns: number;
  /** Points left at the end, newest first, with why each is kept. */
  kept: { time: string; reasons: string[] }[];
}

export function planPolicy(policy: Pick<Policy, 'schedule' | 'timezone' | 'retention'>, from: Date, opts: { nextRuns?: number; days?: number } = {}): PolicyPlan {
  const cron = CronSchedule.parse(policy.schedule, policy.timezone);
  const nextRuns: Date[] = [];
  for (let t = from, i = 0; i < (opts.nextRuns ?? 10); i++) nextRuns.push(t = cron.next(t));
  const end = from.getTime() + (opts.days ?? 365) * DAY_MS;
  const points: { id: string; time: string }[] = [];
  for (let t = cron.next(from); t.getTime() < end; t = cron.next(t)) {
    const time = t.toISOString();
    points.push({ id: time, time });
  }
  const { keep } = applyRetention(points, policy.retention, new Date(end));
  return { nextRuns, simulatedRuns: points.length, kept: keep.map((k) => ({ time: k.point.time, reasons: k.reasons })) };
}
