/**
 * Time zones through Intl only (the same source node-cron reads wall-clock fields from), with
 * the UTC offset cached per UTC hour: one Intl call costs ~10 µs, a schedule search over a
 * year touches 8,760 hours.
 */
import { closest } from './suggest.js';

const MINUTE_MS = 60_000;
const HOUR_MS = 3_600_000;
const DAY_HOURS = 24;
const DAY_MS = DAY_HOURS * HOUR_MS;

/** A change of a zone's UTC offset: from `at` (a UTC instant, ms) on, `after` replaces `before` (minutes). */
export interface OffsetChange {
  at: number;
  before: number;
  after: number;
}
const formatters = new Map<string, Intl.DateTimeFormat>();

/** Formats an instant as "1/2/2026, GMT+05:30": the offset is all we read from it. */
function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone, timeZoneName: 'longOffset' });
    formatters.set(timeZone, f);
  }
  return f;
}

/** The zone this machine runs in (what a policy without `timezone` uses). */
export function machineTimeZone(): string {
  return new Intl.DateTimeFormat().resolvedOptions().timeZone;
}

/** undefined when Intl knows the zone, else what is wrong and a likely intended zone. */
export function timeZoneProblem(timeZone: string): { message: string; fix: string } | undefined {
  try {
    formatter(timeZone);
    return undefined;
  } catch {
    const known = [...Intl.supportedValuesOf('timeZone'), 'UTC'];
    const guess = closest(timeZone, known) ?? closest(timeZone.split('/').at(-1) ?? timeZone, known.map((z) => z.split('/').at(-1) ?? z));
    const full = guess && !guess.includes('/') ? known.find((z) => z.endsWith(`/${guess}`)) ?? guess : guess;
    return {
      message: `unknown time zone "${timeZone}"`,
      fix: `${full ? `did you mean ${full}? ` : ''}use an IANA zone name such as Europe/Berlin, America/New_York, Asia/Tokyo or UTC`,
    };
  }
}

/** Offset (local − UTC) in minutes at one instant, straight from Intl. */
function offsetAt(timeZone: string, ms: number): number {
  const m = /GMT(?:([+-])(\d{1,2})(?::(\d{2}))?(?::(\d{2}))?)?$/.exec(formatter(timeZone).format(ms));
  if (!m?.[1]) return 0;
  const minutes = Number(m[2]) * 60 + Number(m[3] ?? 0) + Math.round(Number(m[4] ?? 0) / 60);
  return m[1] === '-' ? -minutes : minutes;
}

/**
 * Offsets of one zone per UTC hour. Offsets are looked up at UTC day boundaries; a day whose two
 * ends agree is taken to have that offset throughout (no zone changes its offset twice within
 * 24 hours), any other day is looked up hour by hour.
 */
export class ZoneOffsets {
  private readonly byDay = new Map<number, number | number[]>();
  private readonly atMidnight = new Map<number, number>();
  private readonly changesByDay = new Map<number, OffsetChange[]>();
  constructor(readonly timeZone: string) {}

  /** The offset in minutes during UTC hour `hour` (ms / 3.6e6), or undefined when it changes within that hour. */
  hourOffset(hour: number): number | undefined {
    const day = Math.floor(hour / DAY_HOURS);
    const v = this.day(day);
    if (typeof v === 'number') return v;
    const h = hour - day * DAY_HOURS;
    const a = v[h] as number;
    return a === v[h + 1] ? a : undefined;
  }

  /** Smallest and largest offset during UTC day `day` (ms / 8.64e7); equal unless the offset changes that day. */
  dayOffsets(day: number): [min: number, max: number] {
    const v = this.day(day);
    return typeof v === 'number' ? [v, v] : [Math.min(...v), Math.max(...v)];
  }

  /**
   * The offset changes (DST) in [fromMs, toMs): `at` is the first UTC minute with the new
   * offset, `before` and `after` the offsets in minutes on either side.
   */
  changes(fromMs: number, toMs: number): OffsetChange[] {
    const out: OffsetChange[] = [];
    for (let day = Math.floor(fromMs / DAY_MS); day * DAY_MS < toMs; day++) {
      for (const c of this.changesOn(day)) if (c.at >= fromMs && c.at < toMs) out.push(c);
    }
    return out;
  }

  private changesOn(day: number): OffsetChange[] {
    const v = this.day(day);
    if (typeof v === 'number') return [];
    let found = this.changesByDay.get(day);
    if (!found) {
      found = [];
      for (let h = 0; h < DAY_HOURS; h++) {
        const before = v[h] as number;
        if (before === v[h + 1]) continue;
        // First minute k in (0, 60] of hour h with the new offset (k = 60: the next hour's start).
        const start = (day * DAY_HOURS + h) * HOUR_MS;
        let lo = 1;
        let hi = 60;
        while (lo < hi) {
          const mid = (lo + hi) >> 1;
          if (offsetAt(this.timeZone, start + mid * MINUTE_MS) !== before) hi = mid;
          else lo = mid + 1;
        }
        found.push({ at: start + lo * MINUTE_MS, before, after: v[h + 1] as number });
      }
      this.changesByDay.set(day, found);
    }
    return found;
  }

  /** The offset at one UTC minute, uncached: for the few hours in which the offset changes. */
  minuteOffset(ms: number): number {
    return offsetAt(this.timeZone, ms);
  }

  private day(day: number): number | number[] {
    let v = this.byDay.get(day);
    if (v === undefined) {
      if (this.byDay.size > 100_000) {
        this.byDay.clear();
        this.atMidnight.clear();
        this.changesByDay.clear();
      }
      const start = this.midnight(day);
      const end = this.midnight(day + 1);
      v = start === end ? start : Array.from({ length: DAY_HOURS + 1 }, (_, h) => offsetAt(this.timeZone, (day * DAY_HOURS + h) * HOUR_MS));
      this.byDay.set(day, v);
    }
    return v;
  }

  private midnight(day: number): number {
    let v = this.atMidnight.get(day);
    if (v === undefined) this.atMidnight.set(day, v = offsetAt(this.timeZone, day * DAY_HOURS * HOUR_MS));
    return v;
  }
}

/** "2026-03-01 12:00 +09:00" — an instant as wall-clock time in a zone. */
export function formatInZone(d: Date, timeZone: string): string {
  const o = offsetAt(timeZone, d.getTime());
  const local = new Date(d.getTime() + o * 60_000).toISOString();
  const sign = o < 0 ? '-' : '+';
  const abs = Math.abs(o);
  return `${local.slice(0, 10)} ${local.slice(11, 16)} ${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')}`;
}
