/**
 * Cron schedules in a policy's time zone. node-cron decides what matches (`task.match`, the
 * check its own scheduler makes every second); this file only finds candidates fast.
 *
 * `match` costs ~25 µs, so next/prev never test every minute: they walk UTC hours, turn each
 * into wall-clock time with the zone's offset (cached, zone.ts), keep the minutes whose month,
 * day, hour and minute fields node-cron's `parse` allows, and confirm those with `match`.
 *
 * node-cron semantics worth knowing: day-of-month and day-of-week must BOTH match (classic cron
 * takes either). Daylight saving time is handled as cron (Vixie cron, cronie) does, which
 * node-cron's own matcher does not: a schedule with a fixed minute and hour ("30 2 * * *")
 * runs once on change days - a time in the skipped spring hour runs at the first minute after
 * the jump (03:00), a time in the repeated autumn hour only the first time. A schedule with *
 * in its minute or hour field ("0 *\/4 * * *", "*\/20 * * * *") follows the clock: a skipped
 * time does not run, a repeated one runs twice.
 */
import { createTask, parse, validateDetailed, type ParsedFields, type ScheduledTask } from 'node-cron';
import { ConfigError } from '../engine/errors.js';
import { ZoneOffsets, timeZoneProblem, type OffsetChange } from './zone.js';

const MINUTE_MS = 60_000;
const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;
/** Long enough for "0 0 29 2 *" across a skipped leap year (2096 → 2104). */
export const SEARCH_YEARS = 8;
const SEARCH_HOURS = SEARCH_YEARS * 366 * 24;

const FIELD_HELP: Record<string, { label: string; range: string }> = {
  minute: { label: 'minute', range: '0-59' },
  hour: { label: 'hour', range: '0-23' },
  dayOfMonth: { label: 'day-of-month', range: '1-31 (or L)' },
  month: { label: 'month', range: '1-12 or jan-dec' },
  dayOfWeek: { label: 'day-of-week', range: '0-7 or sun-sat (0 and 7 are Sunday)' },
};
const SYNTAX = 'a number, a list (1,15), a range (1-5), a step (*/4) or *';
const EXAMPLE = 'e.g. "0 */4 * * *" (every 4 hours on the hour) or "30 2 * * 0" (Sundays at 02:30)';

/** What is wrong with a cron expression (node-cron's validateDetailed, in operator words), or undefined. */
export function cronProblem(expr: string): { message: string; fix: string } | undefined {
  const text = expr.trim();
  if (!text) return { message: 'is empty', fix: `write five fields: minute hour day-of-month month day-of-week, ${EXAMPLE}` };
  const result = validateDetailed(text);
  if (result.valid) {
    const fields = text.startsWith('@') ? 5 : text.split(/\s+/).length;
    if (fields === 6) return { message: `"${expr}" has 6 fields; the first would be seconds, and drctl schedules by the minute`, fix: 'drop the seconds field' };
    return undefined;
  }
  const e = result.errors[0];
  if (!e || e.field === 'expression') {
    const count = /got (\d+)/.exec(e?.message ?? '')?.[1];
    if (count) return { message: `"${expr}" has ${count} field${count === '1' ? '' : 's'}; a schedule has 5: minute hour day-of-month month day-of-week`, fix: EXAMPLE };
    return { message: `"${expr}" contains characters cron does not know`, fix: `use digits, * / - , and names like mon or jan; ${EXAMPLE}` };
  }
  const help = FIELD_HELP[e.field];
  if (!help) return { message: `"${expr}": ${e.message}`, fix: EXAMPLE };
  if (/impossible day of month/.test(e.message)) {
    return { message: `"${expr}": day-of-month ${e.value ?? ''} never occurs in the months given`, fix: 'pick a day that exists in those months (or use L for the last day)' };
  }
  const more = result.errors.slice(1).map((x) => FIELD_HELP[x.field]?.label ?? x.field);
  return {
    message: `"${expr}": the ${help.label} field "${e.value ?? ''}" is invalid${more.length ? ` (and the ${more.join(', ')} field${more.length > 1 ? 's' : ''})` : ''}`,
    fix: `${help.label} takes ${help.range}: ${SYNTAX}`,
  };
}

interface Prefilter {
  minute: boolean[];
  hour: boolean[];
  month: boolean[];
  /** undefined: contains L/W tokens, any day may match. */
  dayOfMonth: boolean[] | undefined;
  /** undefined: contains # or L tokens, any weekday may match. */
  dayOfWeek: boolean[] | undefined;
}

export class CronSchedule {
  /** One-day memo for dayRuledOut: searches visit the hours of a day in a row. */
  private lastDay = NaN;
  private lastDayRuledOut = false;

  private constructor(
    readonly expression: string,
    readonly timezone: string,
    private readonly task: ScheduledTask,
    private readonly filter: Prefilter,
    private readonly offsets: ZoneOffsets,
    /** A fixed minute and hour: runs once on DST change days (see the top of this file). */
    private readonly fixedTime: boolean,
    /** The same expression in UTC: tells whether a wall-clock time (given as a UTC Date) matches, even one the zone skips. */
    private readonly wallTask: ScheduledTask,
  ) {}

  static parse(expr: string, timezone: string): CronSchedule {
    const p = cronProblem(expr);
    if (p) throw new ConfigError(`schedule ${p.message}`, [], p.fix);
    const z = timeZoneProblem(timezone);
    if (z) throw new ConfigError(z.message, [], z.fix);
    const matcher = (tz: string): ScheduledTask => {
      const task = createTask(expr, () => undefined, { timezone: tz });
      // createTask also registers the task in node-cron's process-wide list; this one never
      // runs, so take it out again. match() keeps working: it only reads the parsed pattern.
      void task.destroy();
      return task;
    };
    return new CronSchedule(expr, timezone, matcher(timezone), prefilter(parse(expr)), new ZoneOffsets(timezone), isFixedTime(expr), matcher('UTC'));
  }

  /** Does the schedule run in the minute containing `d`? */
  matches(d: Date): boolean {
    const ms = Math.floor(d.getTime() / MINUTE_MS) * MINUTE_MS;
    if (!this.fixedTime) return this.task.match(new Date(ms));
    return (this.task.match(new Date(ms)) && !this.isRepeat(ms)) || this.gapRun(ms, ms, 1) !== undefined;
  }

  /** First matching minute strictly after `after`. Throws when there is none within 8 years. */
  next(after: Date): Date {
    const found = this.nextWithin(after);
    if (found) return found;
    throw new ConfigError(
      `schedule "${this.expression}" (${this.timezone}) never fires in the ${SEARCH_YEARS} years after ${after.toISOString()}`,
      [], 'check the day-of-month and day-of-week fields: node-cron requires both to match');
  }

  /** First matching minute strictly after `after` and within SEARCH_YEARS of it, or undefined. */
  nextWithin(after: Date): Date | undefined {
    const startHour = Math.floor((Math.floor(after.getTime() / MINUTE_MS) * MINUTE_MS + MINUTE_MS) / HOUR_MS);
    return this.nextBefore(after, new Date((startHour + SEARCH_HOURS) * HOUR_MS));
  }

  /** First run strictly after `after` and strictly before `before`, or undefined. */
  nextBefore(after: Date, before: Date): Date | undefined {
    let from = after;
    for (;;) {
      const found = this.matchAfter(from, before);
      if (!this.fixedTime) return found;
      const lo = Math.floor(from.getTime() / MINUTE_MS) * MINUTE_MS + MINUTE_MS;
      const gap = this.gapRun(lo, found ? found.getTime() : before.getTime() - 1, 1);
      if (gap !== undefined) return new Date(gap);
      if (!found || !this.isRepeat(found.getTime())) return found;
      from = found;
    }
  }

  /** Latest run in [notBefore, atOrBefore], or undefined. */
  prev(atOrBefore: Date, notBefore: Date): Date | undefined {
    let upTo = atOrBefore;
    for (;;) {
      const found = this.matchBefore(upTo, notBefore);
      if (!this.fixedTime) return found;
      const lo = found ? found.getTime() : Math.ceil(notBefore.getTime() / MINUTE_MS) * MINUTE_MS;
      const gap = this.gapRun(lo, upTo.getTime(), -1);
      if (gap !== undefined) return new Date(gap);
      if (!found || !this.isRepeat(found.getTime())) return found;
      upTo = new Date(found.getTime() - MINUTE_MS);
    }
  }

  /**
   * The first (dir 1) or last (dir -1) run in [lo, hi] that a spring-forward jump gives a
   * fixed-time schedule: the first minute after the jump, when a skipped wall-clock minute matches.
   */
  private gapRun(lo: number, hi: number, dir: 1 | -1): number | undefined {
    const jumps = this.offsets.changes(lo, hi + 1).filter((c) => c.after > c.before && this.skipsMatch(c));
    return (dir === 1 ? jumps[0] : jumps.at(-1))?.at;
  }

  /** Does a wall-clock minute the change skips match? */
  private skipsMatch(c: OffsetChange): boolean {
    for (let wall = c.at + c.before * MINUTE_MS; wall < c.at + c.after * MINUTE_MS; wall += MINUTE_MS) {
      if (this.wallTask.match(new Date(wall))) return true;
    }
    return false;
  }

  /** Is `ms` in the repeated hour after a fall-back change, when its wall-clock time has happened once already? */
  private isRepeat(ms: number): boolean {
    return this.offsets.changes(ms - DAY_MS, ms + 1).some((c) => c.after < c.before && ms < c.at + (c.before - c.after) * MINUTE_MS);
  }

  /** First matching minute (node-cron's match) strictly after `after` and strictly before `before`, or undefined. */
  private matchAfter(after: Date, before: Date): Date | undefined {
    const first = Math.floor(after.getTime() / MINUTE_MS) * MINUTE_MS + MINUTE_MS;
    const hi = before.getTime() - 1;
    const startHour = Math.floor(first / HOUR_MS);
    const endHour = Math.floor(hi / HOUR_MS);
    for (let h = startHour; h <= endHour;) {
      if (this.dayRuledOut(Math.floor(h / 24))) {
        h = (Math.floor(h / 24) + 1) * 24;
        continue;
      }
      const found = this.searchHour(h, first, hi, 1);
      if (found !== undefined) return new Date(found);
      h++;
    }
    return undefined;
  }

  /** Latest matching minute (node-cron's match) in [notBefore, atOrBefore], or undefined. */
  private matchBefore(atOrBefore: Date, notBefore: Date): Date | undefined {
    const last = Math.floor(atOrBefore.getTime() / MINUTE_MS) * MINUTE_MS;
    const lo = Math.ceil(notBefore.getTime() / MINUTE_MS) * MINUTE_MS;
    const loHour = Math.floor(lo / HOUR_MS);
    for (let h = Math.floor(last / HOUR_MS); h >= loHour;) {
      if (this.dayRuledOut(Math.floor(h / 24))) {
        h = Math.floor(h / 24) * 24 - 1;
        continue;
      }
      const found = this.searchHour(h, lo, last, -1);
      if (found !== undefined) return new Date(found);
      h--;
    }
    return undefined;
  }

  /**
   * True when no minute of UTC day `day` can match: no wall-clock date the day spans passes the
   * month and day fields. Lets a search cross a year in 365 steps.
   */
  private dayRuledOut(day: number): boolean {
    if (day === this.lastDay) return this.lastDayRuledOut;
    const [min, max] = this.offsets.dayOffsets(day);
    const first = Math.floor((day * DAY_MS + min * MINUTE_MS) / DAY_MS);
    const last = Math.floor((day * DAY_MS + DAY_MS - MINUTE_MS + max * MINUTE_MS) / DAY_MS);
    let ruledOut = true;
    for (let d = first; d <= last && ruledOut; d++) ruledOut = !this.dateAllowed(new Date(d * DAY_MS));
    this.lastDay = day;
    this.lastDayRuledOut = ruledOut;
    return ruledOut;
  }

  /** Month, day-of-month and day-of-week of a wall-clock time (given as a UTC Date) pass the prefilter. */
  private dateAllowed(wall: Date): boolean {
    const f = this.filter;
    return !!f.month[wall.getUTCMonth() + 1] && (!f.dayOfMonth || !!f.dayOfMonth[wall.getUTCDate()]) && (!f.dayOfWeek || !!f.dayOfWeek[wall.getUTCDay()]);
  }

  /** The first (dir 1) or last (dir -1) confirmed match within UTC hour `h` and [lo, hi]. */
  private searchHour(h: number, lo: number, hi: number, dir: 1 | -1): number | undefined {
    const start = h * HOUR_MS;
    const offset = this.offsets.hourOffset(h);
    const minutes = offset === undefined ? this.irregularCandidates(start) : this.candidates(start, offset);
    for (let i = dir === 1 ? 0 : minutes.length - 1; i >= 0 && i < minutes.length; i += dir) {
      const ms = start + (minutes[i] as number) * MINUTE_MS;
      if (ms < lo || ms > hi) continue;
      if (this.task.match(new Date(ms))) return ms;
    }
    return undefined;
  }

  /** UTC minutes (0-59) of the hour starting at `start` whose wall-clock fields pass the prefilter. */
  private candidates(start: number, offset: number): number[] {
    const f = this.filter;
    const out: number[] = [];
    const shift = ((offset % 60) + 60) % 60; // wall-clock minute at the start of this UTC hour
    // Two wall-clock hours overlap this UTC hour when the offset is not whole hours (+05:30):
    // UTC minutes [from, to] show wall-clock minutes starting at `wallMinute`.
    const segments: [from: number, to: number, wallMinute: number][] = shift === 0 ? [[0, 59, 0]] : [[0, 59 - shift, shift], [60 - shift, 59, 0]];
    for (const [from, to, wallMinute] of segments) {
      const wall = new Date(start + (from + offset) * MINUTE_MS);
      if (!f.hour[wall.getUTCHours()] || !this.dateAllowed(wall)) continue;
      for (let u = from; u <= to; u++) {
        if (f.minute[wallMinute + u - from]) out.push(u);
      }
    }
    return out;
  }

  /** candidates() for an hour in which the offset changes: each minute with its own offset. */
  private irregularCandidates(start: number): number[] {
    const out: number[] = [];
    for (let u = 0; u < 60; u++) {
      const ms = start + u * MINUTE_MS;
      const wall = new Date(ms + this.offsets.minuteOffset(ms) * MINUTE_MS);
      if (this.filter.minute[wall.getUTCMinutes()] && this.filter.hour[wall.getUTCHours()] && this.dateAllowed(wall)) out.push(u);
    }
    return out;
  }
}

/**
 * A fixed minute and hour, as cron decides it: neither field starts with * ("30 2 * * *",
 * "0 1,13 * * *", @daily), as opposed to "0 *\/4 * * *" or @hourly.
 */
function isFixedTime(expr: string): boolean {
  const text = expr.trim();
  if (text.startsWith('@')) return text.toLowerCase() !== '@hourly';
  const [minute = '*', hour = '*'] = text.split(/\s+/);
  return !minute.startsWith('*') && !hour.startsWith('*');
}

function prefilter(fields: ParsedFields): Prefilter {
  const set = (values: readonly (number | string)[], size: number): boolean[] | undefined => {
    if (values.some((v) => typeof v !== 'number')) return undefined;
    const s = new Array<boolean>(size).fill(false);
    for (const v of values) s[v as number] = true;
    return s;
  };
  const all = (size: number): boolean[] => new Array<boolean>(size).fill(true);
  return {
    minute: set(fields.minute, 60) ?? all(60),
    hour: set(fields.hour, 24) ?? all(24),
    month: set(fields.month, 13) ?? all(13),
    dayOfMonth: set(fields.dayOfMonth, 32),
    dayOfWeek: set(fields.dayOfWeek, 7),
  };
}
