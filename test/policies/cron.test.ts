/**
 * CronSchedule against a brute-force oracle built on node-cron's own matcher and Intl:
 * whatever next()/prev() return must be a run, and no minute between the query and the answer
 * may be. A run is a minute node-cron matches, except that a schedule with a fixed minute and
 * hour keeps cron's DST rules: a skipped wall-clock time runs at the first minute after the
 * jump, a repeated one only the first time.
 */
import test from 'ava';
import { createTask, type ScheduledTask } from 'node-cron';
import { CronSchedule } from '../../policies/cron.js';

const MIN = 60_000;
const at = (iso: string): Date => new Date(iso);
const iso = (d: Date | undefined): string | undefined => d?.toISOString().replace('.000Z', 'Z');

/** node-cron's matcher, independent of the CronSchedule under test. */
function matcher(expr: string, timezone: string): ScheduledTask {
  const task = createTask(expr, () => undefined, { timezone });
  void task.destroy();
  return task;
}

/** A small deterministic PRNG (mulberry32), so failures reproduce. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Instants where a zone's UTC offset changes in 2026 (DST), found hour by hour with Intl. */
function transitions2026(timeZone: string): Date[] {
  const f = new Intl.DateTimeFormat('en-US', { timeZone, timeZoneName: 'longOffset' });
  const offset = (ms: number): string | undefined => f.formatToParts(ms).find((p) => p.type === 'timeZoneName')?.value;
  const out: Date[] = [];
  let prev = offset(Date.UTC(2026, 0, 1));
  for (let h = 1; h < 365 * 24; h++) {
    const ms = Date.UTC(2026, 0, 1) + h * 3_600_000;
    const cur = offset(ms);
    if (cur !== prev) out.push(new Date(ms));
    prev = cur;
  }
  return out;
}

/** UTC offset in minutes, cached per UTC hour when the hour's ends agree (Intl is slow). */
function offsets(timeZone: string): (ms: number) => number {
  const f = new Intl.DateTimeFormat('en-US', { timeZone, timeZoneName: 'longOffset' });
  const exact = (ms: number): number => {
    const m = /GMT(?:([+-])(\d{2}):(\d{2}))?$/.exec(f.format(ms));
    return m?.[1] ? (m[1] === '-' ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3])) : 0;
  };
  const hours = new Map<number, number | undefined>();
  return (ms) => {
    const h = Math.floor(ms / 3_600_000);
    if (!hours.has(h)) {
      const a = exact(h * 3_600_000);
      hours.set(h, a === exact((h + 1) * 3_600_000) ? a : undefined);
    }
    return hours.get(h) ?? exact(ms);
  };
}

/** Does the schedule run in minute `m`? Brute force, independent of CronSchedule. */
function oracle(expr: string, timezone: string): (m: number) => boolean {
  const task = matcher(expr, timezone);
  const wall = matcher(expr, 'UTC');
  const off = offsets(timezone);
  const [minute = '*', hour = '*'] = expr.split(' ');
  if (minute.startsWith('*') || hour.startsWith('*')) return (m) => task.match(new Date(m));
  return (m) => {
    const o = off(m);
    const before = off(m - MIN);
    // The first minute after a jump: runs when a wall-clock minute the jump skipped matches.
    for (let w = m - MIN + before * MIN + MIN; w < m + o * MIN; w += MIN) if (wall.match(new Date(w))) return true;
    if (!task.match(new Date(m))) return false;
    // A repeated wall-clock time: the same wall time k minutes earlier.
    if (off(m - 3 * 3_600_000) === o) return true;
    for (let k = 1; k <= 180; k++) if (off(m - k * MIN) === o + k) return false;
    return true;
  };
}

const EXPRESSIONS = ['0 */4 * * *', '*/20 * * * *', '30 2 * * *', '0 1 * * *', '5 1,13 * * 1-5', '45 23 * * *', '0 */3 * * 0,6'];
const ZONES = ['UTC', 'Europe/Berlin', 'America/New_York', 'Asia/Kolkata', 'Asia/Tokyo', 'Australia/Lord_Howe', 'America/St_Johns'];

for (const timezone of ZONES) {
  test(`next() and prev() agree with node-cron's match and cron's DST rules in ${timezone}`, (t) => {
    const rnd = random(ZONES.indexOf(timezone) + 1);
    // Random instants, plus instants just before each DST change (the hard cases).
    const starts = Array.from({ length: 4 }, () => new Date(Date.UTC(2020, 0, 1) + Math.floor(rnd() * 15 * 365 * 86_400_000 / 1000) * 1000));
    for (const change of transitions2026(timezone)) starts.push(new Date(change.getTime() - Math.floor(rnd() * 3 * 3_600_000)));
    let checked = 0;
    for (const expr of EXPRESSIONS) {
      const cron = CronSchedule.parse(expr, timezone);
      const runs = oracle(expr, timezone);
      for (const from of starts) {
        const next = cron.next(from);
        t.true(next > from && runs(next.getTime()), `${expr} ${timezone}: next(${iso(from)}) = ${iso(next)} is not a run`);
        t.true(cron.matches(next), `${expr} ${timezone}: matches(${iso(next)})`);
        for (let m = Math.floor(from.getTime() / MIN) * MIN + MIN; m < next.getTime(); m += MIN) {
          if (runs(m)) t.fail(`${expr} ${timezone}: next(${iso(from)}) = ${iso(next)} skips ${iso(new Date(m))}`);
        }
        const notBefore = new Date(from.getTime() - 86_400_000);
        const prev = cron.prev(from, notBefore);
        const end = prev ? prev.getTime() : notBefore.getTime() - MIN;
        if (prev) t.true(prev <= from && prev >= notBefore && runs(prev.getTime()), `${expr} ${timezone}: prev(${iso(from)}) = ${iso(prev)} is not a run`);
        for (let m = Math.floor(from.getTime() / MIN) * MIN; m > end; m -= MIN) {
          if (runs(m)) t.fail(`${expr} ${timezone}: prev(${iso(from)}) = ${iso(prev)} misses ${iso(new Date(m))}`);
        }
        checked++;
      }
    }
    t.true(checked >= EXPRESSIONS.length * (timezone === 'UTC' || timezone.startsWith('Asia/') ? 4 : 6), `${checked} cases`);
  });
}

test('literal cases: time zones, DST gaps and repeats, leap days', (t) => {
  const next = (expr: string, tz: string, from: string): string | undefined => iso(CronSchedule.parse(expr, tz).next(at(from)));
  // Tokyo is UTC+9: local 12:00 is 03:00Z.
  t.is(next('0 */4 * * *', 'Asia/Tokyo', '2026-03-01T00:00:00Z'), '2026-03-01T03:00:00Z');
  // Kolkata is UTC+5:30: local 08:00 is 02:30Z.
  t.is(next('0 */4 * * *', 'Asia/Kolkata', '2026-03-01T00:00:00Z'), '2026-03-01T02:30:00Z');
  // 02:30 does not exist in Berlin on 2026-03-29 (clocks jump 02:00 -> 03:00): that night's run
  // is at 03:00 CEST, as cron does it (node-cron alone would skip the day).
  t.is(next('30 2 * * *', 'Europe/Berlin', '2026-03-28T12:00:00Z'), '2026-03-29T01:00:00Z');
  t.is(next('30 2 * * *', 'Europe/Berlin', '2026-03-29T01:00:00Z'), '2026-03-30T00:30:00Z');
  const nightly = CronSchedule.parse('30 2 * * *', 'Europe/Berlin');
  t.is(iso(nightly.prev(at('2026-03-29T12:00:00Z'), at('2026-03-28T12:00:00Z'))), '2026-03-29T01:00:00Z');
  t.true(nightly.matches(at('2026-03-29T01:00:30Z')));
  // 02:30 happens twice on 2026-10-25 (03:00 CEST -> 02:00 CET): it runs the first time only.
  t.is(next('30 2 * * *', 'Europe/Berlin', '2026-10-25T00:00:00Z'), '2026-10-25T00:30:00Z');
  t.is(next('30 2 * * *', 'Europe/Berlin', '2026-10-25T00:30:00Z'), '2026-10-26T01:30:00Z');
  t.is(iso(nightly.prev(at('2026-10-25T12:00:00Z'), at('2026-10-24T12:00:00Z'))), '2026-10-25T00:30:00Z');
  t.false(nightly.matches(at('2026-10-25T01:30:00Z')));
  // A schedule with * in its minute or hour field follows the clock: the repeated 02:30 runs twice.
  t.is(next('*/30 * * * *', 'Europe/Berlin', '2026-10-25T00:30:00Z'), '2026-10-25T01:00:00Z');
  t.is(next('30 */2 * * *', 'Europe/Berlin', '2026-10-25T00:30:00Z'), '2026-10-25T01:30:00Z');
  t.is(next('30 */2 * * *', 'Europe/Berlin', '2026-03-29T00:00:00Z'), '2026-03-29T02:30:00Z', 'the skipped 02:30 does not run');
  // Santiago jumps from 00:00 to 01:00 (2026-09-06): the midnight run is at 01:00 -03:00.
  t.is(next('30 0 * * *', 'America/Santiago', '2026-09-05T12:00:00Z'), '2026-09-06T04:00:00Z');
  // Lord Howe jumps half an hour (02:00 -> 02:30, 2026-10-04): 02:15 runs at 02:30 +11:00.
  t.is(next('15 2 * * *', 'Australia/Lord_Howe', '2026-10-03T00:00:00Z'), '2026-10-03T15:30:00Z');
  // @daily is a fixed time too, @hourly follows the clock.
  t.is(next('@daily', 'America/Santiago', '2026-09-05T12:00:00Z'), '2026-09-06T04:00:00Z');
  // "Strictly after": a matching instant itself is not returned.
  t.is(next('0 */4 * * *', 'UTC', '2026-03-01T04:00:00Z'), '2026-03-01T08:00:00Z');
  t.is(next('0 */4 * * *', 'UTC', '2026-03-01T03:59:59.999Z'), '2026-03-01T04:00:00Z');
  t.is(next('0 0 29 2 *', 'UTC', '2026-03-01T00:00:00Z'), '2028-02-29T00:00:00Z');
  t.is(next('0 0 29 2 *', 'Asia/Tokyo', '2026-03-01T00:00:00Z'), '2028-02-28T15:00:00Z');
  // 2100 is not a leap year.
  t.is(next('0 0 29 2 *', 'UTC', '2096-03-01T00:00:00Z'), '2104-02-29T00:00:00Z');
  const leap = CronSchedule.parse('0 0 29 2 *', 'UTC');
  t.is(iso(leap.prev(at('2031-01-01T00:00:00Z'), at('2020-01-01T00:00:00Z'))), '2028-02-29T00:00:00Z');
  t.is(leap.prev(at('2027-01-01T00:00:00Z'), at('2024-03-01T00:00:00Z')), undefined);
  // prev includes both ends of the window.
  const four = CronSchedule.parse('0 */4 * * *', 'UTC');
  t.is(iso(four.prev(at('2026-03-01T04:00:00Z'), at('2026-03-01T04:00:00Z'))), '2026-03-01T04:00:00Z');
  t.true(four.matches(at('2026-03-01T04:00:42Z')), 'matches() looks at the minute containing the instant');
  t.false(four.matches(at('2026-03-01T04:01:00Z')));
});

test('a schedule that never fires within 8 years is an error, not an endless loop', (t) => {
  // Feb 29 that is also a Monday (node-cron requires both fields): 2016, then 2044.
  const cron = CronSchedule.parse('0 0 29 2 1', 'UTC');
  t.throws(() => cron.next(at('2017-01-01T00:00:00Z')), { message: /never fires in the 8 years/ });
  t.is(iso(cron.next(at('2040-01-01T00:00:00Z'))), '2044-02-29T00:00:00Z');
});

test('bad expressions and zones are rejected with the field that is wrong', (t) => {
  t.throws(() => CronSchedule.parse('0 */4 * *', 'UTC'), { message: /has 4 fields; a schedule has 5/ });
  t.throws(() => CronSchedule.parse('61 * * * *', 'UTC'), { message: /minute field "61"/ });
  t.throws(() => CronSchedule.parse('0 25 * * *', 'UTC'), { message: /hour field "25"/ });
  t.throws(() => CronSchedule.parse('0 0 * 13 *', 'UTC'), { message: /month field "13"/ });
  t.throws(() => CronSchedule.parse('0 0 31 2 *', 'UTC'), { message: /never occurs/ });
  t.throws(() => CronSchedule.parse('0 0 0 * * *', 'UTC'), { message: /6 fields/ });
  t.throws(() => CronSchedule.parse('0 */4 * * *', 'Mars/Olympus'), { message: /unknown time zone/ });
  const e = t.throws(() => CronSchedule.parse('0 */4 * * *', 'Asia/Tokio'));
  t.is((e as { code?: string }).code, 'CONFIG_INVALID');
  t.regex((e as { hint?: string }).hint ?? '', /Asia\/Tokyo/);
});

test('next() over a year stays fast (candidates are prefiltered, only they go through match)', (t) => {
  CronSchedule.parse('15 1 * * *', 'Europe/Paris').next(at('2026-01-01T00:00:00Z')); // warm up Intl and the JIT
  for (const tz of ['UTC', 'Europe/Berlin', 'Asia/Kolkata']) {
    for (const expr of ['0 */4 * * *', '0 0 29 2 *']) {
      const cron = CronSchedule.parse(expr, tz);
      const started = performance.now();
      cron.next(at('2028-03-01T00:00:00Z')); // the leap day is 4 years away
      const ms = performance.now() - started;
      t.true(ms < 50, `${expr} in ${tz}: ${ms.toFixed(1)} ms`);
    }
  }
});
