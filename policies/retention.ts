/**
 * Generational retention: which recovery points a policy keeps. Pure — no repository, no clock:
 * the caller passes `now`.
 *
 * The semantics are exactly those of `restic forget` 0.14 with all times in UTC, so operators
 * who know restic know drctl (test/policies/retention-restic.test.ts checks this against the
 * real restic):
 * - points are walked newest first; a point is kept when any rule keeps it;
 * - a count rule (generations = --keep-last, hourly, daily, weekly, monthly, yearly) keeps the
 *   newest point of each new bucket (hour, day, ISO week, month, year) until its count is used
 *   up; a rule that cannot be filled keeps what there is and nothing older;
 * - `within` keeps every point strictly newer than (reference − duration), with the calendar
 *   arithmetic of Go's time.AddDate (years, months, days, then hours). The reference is the
 *   newest point that is older than `now`: a point from the future (a skewed clock) does not
 *   move it. When every point is in the future restic measures from Go's zero time
 *   (0001-01-01), so `within` keeps them all;
 * - a `within` of zero length ("0d") is no rule, as in restic;
 * - a policy with no rule at all keeps everything.
 * restic orders points with equal times arbitrarily (snapshots are loaded concurrently); drctl
 * keeps the first of them in input order. Which of them is kept may differ, how many never does.
 */
export interface RetentionRules {
  /** Keep the newest N points (restic --keep-last). */
  generations?: number;
  hourly?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
  yearly?: number;
  /** restic --keep-within syntax: 1y2m3d4h (any subset, in any order). */
  within?: string;
}

export interface WithinDuration {
  years: number;
  months: number;
  days: number;
  hours: number;
}

export interface TimedPoint {
  id: string;
  /** ISO 8601 instant. */
  time: string;
}

export interface KeptPoint<P extends TimedPoint> {
  point: P;
  /** Why it is kept: "generation 3", "hourly 2026-03-01T04", "daily 2026-03-01", "weekly 2026-W09", "monthly 2026-03", "yearly 2026", "within 2d". */
  reasons: string[];
}

export interface RetentionResult<P extends TimedPoint> {
  /** Newest first. */
  keep: KeptPoint<P>[];
  /** Newest first. */
  remove: P[];
}

const COUNT_RULES = ['generations', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'] as const;

/** Go's time.Duration holds at most 2562047 hours; beyond it restic's cutoff overflows. */
const MAX_WITHIN_HOURS = 2_562_047;
/** Go's zero time, 0001-01-01T00:00:00Z: restic's reference when every point is in the future. */
const GO_ZERO_TIME_MS = -62_135_596_800_000;

/** Parse restic's duration syntax ("2d", "1y6m", "36h"). Throws with a readable message. */
export function parseWithin(text: string): WithinDuration {
  if (!/^(\d+[ymdh])+$/.test(text)) {
    throw new Error(`"${text}" is not a duration - write it like 2d, 36h or 1y2m3d4h (y years, m months, d days, h hours)`);
  }
  const d: WithinDuration = { years: 0, months: 0, days: 0, hours: 0 };
  // As in restic, a unit given twice takes the last value.
  for (const m of text.matchAll(/(\d+)([ymdh])/g)) {
    const n = Number(m[1]);
    if (m[2] === 'y') d.years = n;
    else if (m[2] === 'm') d.months = n;
    else if (m[2] === 'd') d.days = n;
    else d.hours = n;
  }
  // restic 0.14 would silently keep nothing for more hours (int64 overflow) and panics on
  // numbers past int64; refuse both rather than copy that.
  if (d.hours > MAX_WITHIN_HOURS) {
    throw new Error(`"${text}": at most ${MAX_WITHIN_HOURS} hours - write longer durations in days, months or years`);
  }
  if (Object.values(d).some((n) => !Number.isSafeInteger(n))) throw new Error(`"${text}": a number in it is too large`);
  return d;
}

/** True when no rule keeps anything by itself; applyRetention then keeps every point. */
export function isEmptyRetention(rules: RetentionRules): boolean {
  return COUNT_RULES.every((k) => !rules[k]) && !hasWithin(rules);
}

/** Apply retention to one group of points (one policy and source). Input order is irrelevant. */
export function applyRetention<P extends TimedPoint>(points: readonly P[], rules: RetentionRules, now: Date): RetentionResult<P> {
  const timed = points.map((point) => ({ point, t: new Date(point.time) }));
  for (const { point, t } of timed) {
    if (Number.isNaN(t.getTime())) throw new Error(`point ${point.id}: time "${point.time}" is not an ISO 8601 instant`);
  }
  // Newest first; equal times keep their input order (Array.prototype.sort is stable).
  timed.sort((a, b) => b.t.getTime() - a.t.getTime());
  if (isEmptyRetention(rules)) {
    return { keep: timed.map(({ point }) => ({ point, reasons: ['no retention rule: everything is kept'] })), remove: [] };
  }
  const buckets = COUNT_RULES.map((rule) => ({ rule, left: rules[rule] ?? 0, last: undefined as string | undefined }));
  const cutoff = rules.within && hasWithin(rules) ? withinCutoff(withinReference(timed, now), parseWithin(rules.within)) : undefined;

  const keep: KeptPoint<P>[] = [];
  const remove: P[] = [];
  timed.forEach(({ point, t }, nr) => {
    const reasons: string[] = [];
    if (cutoff !== undefined && t.getTime() > cutoff) reasons.push(`within ${rules.within}`);
    for (const b of buckets) {
      if (b.left <= 0) continue;
      const key = bucketKey(b.rule, t, nr);
      if (key !== b.last) {
        b.last = key;
        b.left--;
        reasons.push(`${b.rule === 'generations' ? 'generation' : b.rule} ${key}`);
      }
    }
    if (reasons.length) keep.push({ point, reasons });
    else remove.push(point);
  });
  return { keep, remove };
}

/** restic ignores a `within` whose every part is zero ("0d", "0y0h"). */
function hasWithin(rules: RetentionRules): boolean {
  if (!rules.within) return false;
  const d = parseWithin(rules.within);
  return d.years + d.months + d.days + d.hours > 0;
}

/** The newest point strictly older than `now`, or Go's zero time when there is none (restic). */
function withinReference(newestFirst: readonly { t: Date }[], now: Date): number {
  return newestFirst.find(({ t }) => t.getTime() < now.getTime())?.t.getTime() ?? GO_ZERO_TIME_MS;
}

/** reference − duration, with Go's AddDate normalisation (Mar 31 − 1 month = Mar 3) then − hours. */
function withinCutoff(referenceMs: number, d: WithinDuration): number {
  const r = new Date(referenceMs);
  const shifted = utcMs(
    r.getUTCFullYear() - d.years, r.getUTCMonth() - d.months, r.getUTCDate() - d.days,
    r.getUTCHours(), r.getUTCMinutes(), r.getUTCSeconds(), r.getUTCMilliseconds(),
  ) - d.hours * 3_600_000;
  // Beyond JavaScript's date range (~271,000 years back) Go still computes a date before any
  // point, so everything is newer.
  return Number.isNaN(shifted) ? -Infinity : shifted;
}

/** Date.UTC without its quirk of reading years 0-99 as 1900-1999; fields overflow like AddDate. */
function utcMs(year: number, month: number, day: number, h = 0, min = 0, s = 0, ms = 0): number {
  const d = new Date(0);
  d.setUTCFullYear(year, month, day);
  d.setUTCHours(h, min, s, ms);
  return d.getTime();
}

function bucketKey(rule: (typeof COUNT_RULES)[number], t: Date, nr: number): string {
  const y = String(t.getUTCFullYear()).padStart(4, '0');
  const mo = String(t.getUTCMonth() + 1).padStart(2, '0');
  const d = String(t.getUTCDate()).padStart(2, '0');
  switch (rule) {
    case 'generations': return String(nr + 1);
    case 'hourly': return `${y}-${mo}-${d}T${String(t.getUTCHours()).padStart(2, '0')}`;
    case 'daily': return `${y}-${mo}-${d}`;
    case 'weekly': {
      const [wy, w] = isoWeek(t);
      return `${String(wy).padStart(4, '0')}-W${String(w).padStart(2, '0')}`;
    }
    case 'monthly': return `${y}-${mo}`;
    case 'yearly': return y;
  }
}

/** ISO 8601 week-numbering year and week of a UTC instant (as Go's time.ISOWeek). */
export function isoWeek(t: Date): [number, number] {
  const day = utcMs(t.getUTCFullYear(), t.getUTCMonth(), t.getUTCDate());
  const weekday = (new Date(day).getUTCDay() + 6) % 7; // Monday = 0
  const thursday = new Date(day + (3 - weekday) * 86_400_000); // the week's Thursday decides its year
  const year = thursday.getUTCFullYear();
  const week = Math.floor((thursday.getTime() - utcMs(year, 0, 1)) / (7 * 86_400_000)) + 1;
  return [year, week];
}
