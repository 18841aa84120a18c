/**
 * Seeded timelines of recovery points for retention tests: the schedules drctl runs (hourly,
 * every four hours, daily) and the instants where bucket arithmetic goes wrong (midnight,
 * New Year, ISO weeks 52/53, Sunday/Monday, month ends, `within` landing exactly on a point).
 * Same seed, same timeline and rules, so a failure reproduces from the seed it prints.
 */
import type { RetentionRules, TimedPoint } from '../../policies/retention.js';

export type Rng = () => number;

/** mulberry32: a tiny, well-mixed 32-bit PRNG; uniform in [0, 1). */
export function mulberry32(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

export interface Timeline {
  points: TimedPoint[];
  /** Rule sets to check against this timeline. */
  rules: RetentionRules[];
}

/** Makes a timeline; `nowMs` is the wall clock, which restic's `within` depends on. */
export type TimelineKind = (rng: Rng, nowMs: number) => Timeline;

const SECOND = 1000;
const HOUR = 3_600_000;
const DAY = 86_400_000;

const int = (rng: Rng, lo: number, hi: number): number => lo + Math.floor(rng() * (hi - lo + 1));
const pick = <T>(rng: Rng, items: readonly T[]): T => items[Math.floor(rng() * items.length)] as T;
const chance = (rng: Rng, p: number): boolean => rng() < p;

/** Points named p000, p001, … in the order given (ids say nothing about time order). */
function toPoints(instantsMs: readonly number[]): TimedPoint[] {
  const width = String(instantsMs.length).length;
  return instantsMs.map((ms, i) => ({ id: `p${String(i).padStart(width, '0')}`, time: new Date(ms).toISOString() }));
}

/** The same items in a seeded random order. */
export function shuffle<T>(rng: Rng, items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

/** A random instant in [from, to) years, on a whole second. */
function instantIn(rng: Rng, fromYear: number, toYear: number): number {
  const a = Date.UTC(fromYear, 0, 1);
  return a + Math.floor(rng() * (Date.UTC(toYear, 0, 1) - a) / SECOND) * SECOND;
}

/** Most timelines lie in the past; the edge cases below also reach into the future. */
const PAST = 2026;

/** restic duration syntax with 1..3 parts from `units`, sometimes repeating a unit or zero. */
function randomWithin(rng: Rng, units = 'ymdh'): string {
  const max: Record<string, number> = { y: 3, m: 15, d: 45, h: 120 };
  let text = '';
  for (let i = int(rng, 1, 3); i > 0; i--) {
    const u = pick(rng, [...units]);
    text += `${int(rng, 0, max[u] ?? 10)}${u}`;
  }
  return text;
}

const COUNTS = ['generations', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'] as const;

/** Each count rule with probability `p`, counts 1..maxCount; `within` with probability `pWithin`. */
function randomRules(rng: Rng, opts: { maxCount: number; p?: number; pWithin?: number; units?: string }): RetentionRules {
  const rules: RetentionRules = {};
  for (const r of COUNTS) if (chance(rng, opts.p ?? 0.4)) rules[r] = int(rng, 1, opts.maxCount);
  if (chance(rng, opts.pWithin ?? 0.3)) rules.within = randomWithin(rng, opts.units);
  if (Object.keys(rules).length === 0) rules[pick(rng, COUNTS)] = int(rng, 1, opts.maxCount);
  return rules;
}

const hourly: TimelineKind = (rng) => {
  const start = Math.floor(instantIn(rng, 2015, PAST) / HOUR) * HOUR + int(rng, 0, 59) * 60 * SECOND;
  const ms = Array.from({ length: int(rng, 2, 12) * 24 }, (_, i) => start + i * HOUR + int(rng, 0, 59) * SECOND);
  return { points: toPoints(ms), rules: [
    { hourly: int(rng, 1, 60) },
    randomRules(rng, { maxCount: 30, units: 'dh' }),
    randomRules(rng, { maxCount: 10, pWithin: 0.6, units: 'dh' }),
  ] };
};

const every4hMissed: TimelineKind = (rng) => {
  const start = Math.floor(instantIn(rng, 2015, PAST) / DAY) * DAY;
  const missed = 0.1 + rng() * 0.4;
  const ms: number[] = [];
  for (let i = 0; i < int(rng, 10, 50) * 6; i++) {
    if (!chance(rng, missed)) ms.push(start + i * 4 * HOUR + int(rng, 0, 20 * 60) * SECOND);
  }
  return { points: toPoints(ms), rules: [
    { hourly: int(rng, 1, 48), daily: int(rng, 1, 20), weekly: int(rng, 1, 6) },
    randomRules(rng, { maxCount: 20 }),
    randomRules(rng, { maxCount: 8, pWithin: 0.7, units: 'dh' }),
  ] };
};

/** A daily schedule over 2-5 years; older days thinned out so it stays under ~300 points. */
const dailyMultiYear: TimelineKind = (rng) => {
  const days = int(rng, 2, 5) * 365;
  const end = Math.floor(instantIn(rng, 2019, PAST) / DAY) * DAY + int(rng, 0, 23) * HOUR + int(rng, 0, 59) * 60 * SECOND;
  const keepOld = 260 / days;
  const ms: number[] = [];
  for (let d = days; d >= 0; d--) if (d < 30 || chance(rng, keepOld)) ms.push(end - d * DAY + int(rng, 0, 300) * SECOND);
  return { points: toPoints(ms), rules: [
    { daily: 7, weekly: 4, monthly: 12, yearly: int(rng, 1, 5) },
    randomRules(rng, { maxCount: 40, p: 0.5 }),
    randomRules(rng, { maxCount: 15, pWithin: 0.8, units: 'ymd' }),
  ] };
};

const sparseMultiYear: TimelineKind = (rng) => {
  const from = int(rng, 2000, PAST - 10);
  const ms = Array.from({ length: int(rng, 1, 80) }, () => instantIn(rng, from, from + int(rng, 1, 10)) + int(rng, 0, 999));
  return { points: toPoints(ms), rules: [
    randomRules(rng, { maxCount: 10, p: 0.5 }),
    randomRules(rng, { maxCount: 4, pWithin: 0.6, units: 'ym' }),
    randomRules(rng, { maxCount: 30 }),
  ] };
};

/** Around midnight: 23:59:59, 23:59:59.999, 00:00:00, 00:00:00.001 and noon on random days. */
const dayEdges: TimelineKind = (rng) => {
  let day = Math.floor(instantIn(rng, 2010, PAST) / DAY) * DAY;
  const ms: number[] = [];
  for (let i = int(rng, 3, 40); i > 0; i--) {
    for (const offset of [-SECOND, -1, 0, 1, 12 * HOUR, HOUR - 1, HOUR]) if (chance(rng, 0.6)) ms.push(day + offset);
    day += int(rng, 1, 3) * DAY;
  }
  return { points: toPoints(ms), rules: [
    { daily: int(rng, 1, 30) },
    { hourly: int(rng, 1, 40), within: `${int(rng, 1, 5)}d` },
    randomRules(rng, { maxCount: 20 }),
  ] };
};

/** New Year: Dec 28 - Jan 4 of consecutive years, including 2015/2020/2026 (53 ISO weeks). */
const newYear: TimelineKind = (rng) => {
  const first = pick(rng, [2014, 2019, 2020, 2025, 2026, 2031]);
  const ms: number[] = [];
  for (let y = first; y < first + int(rng, 1, 4); y++) {
    const ny = Date.UTC(y + 1, 0, 1);
    for (const offset of [-1, 0, 1, -SECOND, -DAY, DAY]) if (chance(rng, 0.7)) ms.push(ny + offset);
    for (let i = int(rng, 0, 8); i > 0; i--) ms.push(ny - 4 * DAY + int(rng, 0, 8 * 24 * 3600) * SECOND);
  }
  return { points: toPoints(ms), rules: [
    { yearly: int(rng, 1, 5) },
    { weekly: int(rng, 1, 8), daily: int(rng, 0, 3) || undefined },
    randomRules(rng, { maxCount: 10, p: 0.5 }),
  ] };
};

/** Sunday 23:59:59.999 and Monday 00:00:00 across year ends, where ISO weeks 52/53/1 meet. */
const isoWeekEdges: TimelineKind = (rng) => {
  const year = pick(rng, [2015, 2016, 2020, 2021, 2022, 2024, 2025, 2026, 2027, 2032]);
  const dec = Date.UTC(year, 11, 1);
  const firstMonday = dec + ((8 - new Date(dec).getUTCDay()) % 7) * DAY;
  const ms: number[] = [];
  for (let w = 0; w < int(rng, 6, 12); w++) {
    const monday = firstMonday + w * 7 * DAY;
    for (const offset of [-1, 0, -DAY, 3 * DAY]) if (chance(rng, 0.7)) ms.push(monday + offset);
  }
  return { points: toPoints(ms), rules: [
    { weekly: int(rng, 1, 12) },
    { weekly: int(rng, 1, 4), yearly: int(rng, 1, 3), monthly: int(rng, 1, 3) },
    randomRules(rng, { maxCount: 8 }),
  ] };
};

/**
 * Month ends with `within` in months and years: Go's AddDate normalises Mar 31 − 1 month
 * (Feb 31) to Mar 3 (Mar 2 in a leap year). Points sit on each day around the nominal and the
 * normalised date, at the newest point's time of day and a millisecond either side.
 */
const monthEnds: TimelineKind = (rng) => {
  const year = int(rng, 1996, PAST - 1);
  // The last day of a month: the 31st, the 30th, Feb 28 or Feb 29.
  const newest = Date.UTC(year, int(rng, 1, 12), 0) + int(rng, 0, 86_399) * SECOND;
  const within = pick(rng, ['1m', '1m', '3m', '1m1d', '12m', '13m', '1y', '1y1m', '2m', '1m2h', '4y']);
  const m = /(?:(\d+)y)?(?:(\d+)m)?/.exec(within);
  const back = Number(m?.[1] ?? 0) * 12 + Number(m?.[2] ?? 0);
  const nominal = new Date(newest);
  nominal.setUTCDate(1);
  nominal.setUTCMonth(nominal.getUTCMonth() - back);
  const ms = [newest];
  for (let d = -3; d <= 5; d++) for (const off of [-1, 0, 1]) if (chance(rng, 0.8)) ms.push(nominal.getTime() + (27 + d) * DAY + off);
  for (const end of [Date.UTC(year, 1, 28), Date.UTC(year, 1, 29), Date.UTC(year, 0, 31), Date.UTC(year, 2, 1)]) {
    if (end < newest && chance(rng, 0.5)) ms.push(end + (newest % DAY), end - 1, end);
  }
  return { points: toPoints(ms), rules: [
    { within },
    { within, monthly: int(rng, 1, 3) },
    { within: pick(rng, ['1m', '2m', '1m1d', '1y']), daily: int(rng, 1, 4) },
  ] };
};

/** Whole hours back from the newest point: `within` lands exactly on points (strictly newer wins). */
const withinExact: TimelineKind = (rng) => {
  const newest = Math.floor(instantIn(rng, 2015, PAST) / HOUR) * HOUR;
  const ms = Array.from({ length: int(rng, 10, 120) }, (_, i) => newest - i * HOUR * pick(rng, [1, 1, 2, 3]));
  return { points: toPoints(ms), rules: [
    { within: `${int(rng, 1, 30)}h` },
    { within: `${int(rng, 1, 3)}d`, hourly: int(rng, 1, 5) },
    { within: `${int(rng, 1, 2)}d${int(rng, 1, 12)}h`, generations: int(rng, 1, 10) },
  ] };
};

/** Counts well beyond the number of points: keep what there is. */
const countsExceed: TimelineKind = (rng) => {
  const start = instantIn(rng, 2000, PAST - 3);
  const ms = Array.from({ length: int(rng, 1, 15) }, () => start + int(rng, 0, 3 * 365 * 24) * HOUR);
  return { points: toPoints(ms), rules: [
    { generations: 100 },
    { hourly: 50, daily: 50, weekly: 50, monthly: 50, yearly: 50 },
    { daily: 30, within: '1y' },
  ] };
};

/** Each rule alone, one per rule, over an irregular timeline. */
const singleRule: TimelineKind = (rng) => {
  let t = instantIn(rng, 1990, 1998);
  const ms: number[] = [];
  for (let i = int(rng, 20, 300); i > 0; i--) ms.push(t += pick(rng, [HOUR, 4 * HOUR, DAY, 7 * DAY, 35 * DAY]) + int(rng, -600, 600) * SECOND);
  return { points: toPoints(ms), rules: [
    ...COUNTS.map((r): RetentionRules => ({ [r]: int(rng, 1, 25) })),
    { within: randomWithin(rng) },
  ] };
};

/** No rule, or only zero ones: restic keeps everything. */
const emptyRules: TimelineKind = (rng) => {
  const start = instantIn(rng, 2010, PAST - 2);
  const ms = Array.from({ length: int(rng, 1, 40) }, () => start + int(rng, 0, 400 * 24) * HOUR);
  return { points: toPoints(ms), rules: [{}, { daily: 0 }, { within: '0d' }, { generations: 0, within: '0y0h' }] };
};

/** Several points at the same instant (restic orders equal times arbitrarily). */
const equalTimes: TimelineKind = (rng) => {
  const start = Math.floor(instantIn(rng, 2010, PAST - 2) / HOUR) * HOUR;
  const distinct = Array.from({ length: int(rng, 3, 30) }, () => start + int(rng, 0, 60 * 24) * HOUR);
  const ms = distinct.flatMap((t) => Array.from({ length: int(rng, 1, 4) }, () => t));
  return { points: toPoints(ms), rules: [
    { generations: int(rng, 1, 10) },
    { hourly: int(rng, 1, 10), daily: int(rng, 1, 5) },
    randomRules(rng, { maxCount: 10, pWithin: 0.5, units: 'dh' }),
  ] };
};

/**
 * Around the wall clock: a skewed clock left points in the future. restic measures `within`
 * from the newest point older than now (from year 1 when there is none). No point is closer
 * than ten minutes to now, so the moment restic reads its clock does not matter.
 */
const clockSkew: TimelineKind = (rng, nowMs) => {
  const minute = 60 * SECOND;
  const base = Math.floor(nowMs / minute) * minute;
  const mode = pick(rng, ['mixed', 'all in the future', 'one in the future']);
  const offsets = Array.from({ length: int(rng, 3, 100) }, () => {
    if (mode === 'all in the future') return int(rng, 10, 3 * 24 * 60);
    if (mode === 'one in the future') return -int(rng, 10, 10 * 24 * 60);
    const m = int(rng, -10 * 24 * 60, 3 * 24 * 60);
    return Math.abs(m) < 10 ? -10 : m;
  });
  if (mode === 'one in the future') offsets.push(int(rng, 10, 400 * 24 * 60));
  return { points: toPoints(offsets.map((m) => base + m * minute)), rules: [
    { within: `${int(rng, 1, 4)}d` },
    { within: `${int(rng, 1, 48)}h`, daily: int(rng, 1, 3) },
    randomRules(rng, { maxCount: 6, pWithin: 0.8, units: 'dh' }),
  ] };
};

/** Years 1-160, where Date.UTC would read years 0-99 as 1900-1999. */
const firstCenturies: TimelineKind = (rng) => {
  const yearStart = (y: number) => new Date(0).setUTCFullYear(y, 0, 1);
  const ms = Array.from({ length: int(rng, 10, 100) }, () => yearStart(int(rng, 1, 160)) + int(rng, 0, 365 * 24 * 3600) * SECOND);
  for (let y = int(rng, 2, 95); y < 100 && chance(rng, 0.8); y += int(rng, 1, 5)) ms.push(yearStart(y) - 1, yearStart(y) + int(rng, 0, 7) * DAY);
  // Three weeks of daily points: ISO weeks of a year before 100 must be its own, not 19xx's.
  const run = yearStart(int(rng, 1, 99)) + int(rng, 0, 340) * DAY + int(rng, 0, 23) * HOUR;
  for (let d = 0; d < 21; d++) ms.push(run + d * DAY);
  // A cutoff between years 10 and 95, where Date.UTC would put it in the 1900s.
  const newestYear = new Date(Math.max(...ms)).getUTCFullYear();
  return { points: toPoints(ms), rules: [
    { within: `${Math.max(1, newestYear - int(rng, 10, 95))}y${int(rng, 0, 11)}m` },
    { weekly: int(rng, 4, 20), yearly: int(rng, 1, 10) },
    randomRules(rng, { maxCount: 10, pWithin: 0.5, units: 'ym' }),
  ] };
};

const tiny: TimelineKind = (rng) => {
  const start = instantIn(rng, 2000, PAST - 3);
  const ms = Array.from({ length: int(rng, 1, 3) }, () => start + int(rng, 0, 100 * 24) * HOUR);
  return { points: toPoints(ms), rules: [randomRules(rng, { maxCount: 2 }), { within: '1h' }, { generations: 1 }] };
};

/** Timeline kinds and how many seeded timelines of each the oracle test runs. */
export const TIMELINE_KINDS: readonly { name: string; make: TimelineKind; count: number }[] = [
  { name: 'hourly over days', make: hourly, count: 4 },
  { name: 'every 4 hours, missed runs', make: every4hMissed, count: 4 },
  { name: 'daily over years', make: dailyMultiYear, count: 4 },
  { name: 'sparse over years', make: sparseMultiYear, count: 5 },
  { name: 'midnight edges', make: dayEdges, count: 4 },
  { name: 'new year edges', make: newYear, count: 4 },
  { name: 'ISO week edges', make: isoWeekEdges, count: 4 },
  { name: 'month ends with within in months', make: monthEnds, count: 6 },
  { name: 'within lands on a point', make: withinExact, count: 3 },
  { name: 'counts beyond the points', make: countsExceed, count: 2 },
  { name: 'one rule alone', make: singleRule, count: 3 },
  { name: 'empty rules', make: emptyRules, count: 1 },
  { name: 'equal times', make: equalTimes, count: 2 },
  { name: 'one to three points', make: tiny, count: 2 },
  { name: 'points from the future', make: clockSkew, count: 4 },
  { name: 'years 1-160', make: firstCenturies, count: 2 },
];
