/**
 * What a policy means in practice: when it runs next, and which recovery points are left after
 * a stretch of successful runs once retention has done its work. Pure: `from` is passed in.
 */
import { CronSchedule, SEARCH_YEARS } from './cron.js';
import { applyRetention } from './retention.js';
import type { Policy } from './types.js';

const DAY_MS = 86_400_000;

export interface PolicyPlan {
  /** The runs asked for, or fewer when the schedule stops firing (see `nextRunsNote`); never empty. */
  nextRuns: Date[];
  /** Set when fewer runs than asked for were found: why. */
  nextRunsNote?: string;
  /** Runs in (from, from + days). */
  simulatedRuns: number;
  /** Points left at the end, newest first, with why each is kept. */
  kept: { time: string; reasons: string[] }[];
}

export function planPolicy(policy: Pick<Policy, 'schedule' | 'timezone' | 'retention'>, from: Date, opts: { nextRuns?: number; days?: number } = {}): PolicyPlan {
  const cron = CronSchedule.parse(policy.schedule, policy.timezone);
  const wanted = opts.nextRuns ?? 10;
  // The first run must exist (next() throws "never fires"); a rare schedule ("0 0 1 1 1": New
  // Year on a Monday) may have no further run within the search window, so list what there is.
  const nextRuns: Date[] = [cron.next(from)];
  let nextRunsNote: string | undefined;
  while (nextRuns.length < wanted) {
    const last = nextRuns[nextRuns.length - 1] as Date;
    const t = cron.nextWithin(last);
    if (!t) {
      nextRunsNote = `only ${nextRuns.length} of the ${wanted} runs asked for: the schedule does not fire in the ${SEARCH_YEARS} years after ${last.toISOString().replace('.000Z', 'Z')}`;
      break;
    }
    nextRuns.push(t);
  }
  const end = new Date(from.getTime() + (opts.days ?? 365) * DAY_MS);
  const points: { id: string; time: string }[] = [];
  for (let t = cron.nextBefore(from, end); t; t = cron.nextBefore(t, end)) {
    const time = t.toISOString();
    points.push({ id: time, time });
  }
  const { keep } = applyRetention(points, policy.retention, end);
  return { nextRuns, ...(nextRunsNote ? { nextRunsNote } : {}), simulatedRuns: points.length, kept: keep.map((k) => ({ time: k.point.time, reasons: k.reasons })) };
}
