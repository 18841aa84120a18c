/**
 * applyRetention on small hand-worked timelines with literal timestamps; every outcome here was
 * worked out by hand from restic 0.14's rules (retention-restic.test.ts checks the same rules
 * against the real restic on generated timelines).
 */
import test from 'ava';
import { applyRetention, isEmptyRetention, isoWeek, parseWithin, type RetentionRules } from '../../policies/retention.js';

/** Points named by their own time, so a test reads as a list of instants. */
function points(...times: string[]) {
  return times.map((time) => ({ id: time, time }));
}

function kept(times: string[], rules: RetentionRules, now = '2026-11-23T12:00:00Z'): Record<string, string[]> {
  const result = applyRetention(points(...times), rules, new Date(now));
  return Object.fromEntries(result.keep.map((k) => [k.point.id, k.reasons]));
}

test('daily 2 keeps the newest point of each of the two newest days', (t) => {
  t.deepEqual(kept([
    '2026-03-01T09:00:00Z', // third day: the daily count is used up
    '2026-03-02T08:00:00Z', // older than 21:00 on the same day: dropped
    '2026-03-02T21:00:00Z',
    '2026-03-03T06:00:00Z',
  ], { daily: 2 }), {
    '2026-03-03T06:00:00Z': ['daily 2026-03-03'],
    '2026-03-02T21:00:00Z': ['daily 2026-03-02'],
  });
});

test('generations keep the newest N whatever their times; reasons count from 1', (t) => {
  t.deepEqual(kept(['2026-03-01T00:00:00Z', '2026-03-01T00:00:01Z', '2026-03-01T00:00:02Z'], { generations: 2 }), {
    '2026-03-01T00:00:02Z': ['generation 1'],
    '2026-03-01T00:00:01Z': ['generation 2'],
  });
});

test('each rule names its bucket: hourly, weekly (ISO), monthly, yearly', (t) => {
  t.deepEqual(kept(['2026-03-01T04:30:00Z'], { hourly: 1, daily: 1, weekly: 1, monthly: 1, yearly: 1 }), {
    '2026-03-01T04:30:00Z': ['hourly 2026-03-01T04', 'daily 2026-03-01', 'weekly 2026-W09', 'monthly 2026-03', 'yearly 2026'],
  });
});

test('weekly buckets are ISO weeks: Monday 00:00 UTC starts a new one', (t) => {
  t.deepEqual(kept([
    '2026-02-28T12:00:00Z', // Saturday of W09, older than Sunday: dropped
    '2026-03-01T23:59:59Z', // Sunday, the newest of W09
    '2026-03-02T00:00:00Z', // Monday, W10
  ], { weekly: 2 }), {
    '2026-03-02T00:00:00Z': ['weekly 2026-W10'],
    '2026-03-01T23:59:59Z': ['weekly 2026-W09'],
  });
});

test('ISO week-numbering years: New Year can belong to week 52/53 of the year before', (t) => {
  const cases: [string, [number, number]][] = [
    ['2021-01-03T23:59:59Z', [2020, 53]], // Sunday: 2020 has 53 ISO weeks
    ['2021-01-04T00:00:00Z', [2021, 1]],
    ['2022-01-02T12:00:00Z', [2021, 52]], // Sunday Jan 2
    ['2024-12-30T00:00:00Z', [2025, 1]], // Monday Dec 30 starts 2025-W01
    ['2027-01-01T00:00:00Z', [2026, 53]], // Friday
    ['0050-01-01T00:00:00Z', [49, 52]], // Saturday, 50 AD (Date.UTC would compute 1950's weeks)
    ['0053-01-01T00:00:00Z', [53, 1]], // Wednesday
  ];
  for (const [time, week] of cases) t.deepEqual(isoWeek(new Date(time)), week, time);
});

test('within is measured back from the newest point, not from now, and is strict', (t) => {
  t.deepEqual(kept([
    '2026-03-01T00:00:00Z', // before the cutoff 2026-03-01T12:00
    '2026-03-01T12:00:00Z', // exactly 2 days before the newest: not strictly newer, dropped
    '2026-03-01T12:00:00.001Z',
    '2026-03-03T12:00:00Z',
  ], { within: '2d' }, '2026-11-23T12:00:00Z'), {
    '2026-03-03T12:00:00Z': ['within 2d'],
    '2026-03-01T12:00:00.001Z': ['within 2d'],
  });
});

test('within in months follows Go AddDate: Mar 31 minus 1m is Mar 3 (Mar 2 in a leap year)', (t) => {
  // Feb 31 does not exist: AddDate carries it into March instead of clamping to Feb 28.
  t.deepEqual(Object.keys(kept(['2026-02-28T10:00:00Z', '2026-03-03T10:00:00Z', '2026-03-03T10:00:01Z', '2026-03-31T10:00:00Z'], { within: '1m' })),
    ['2026-03-31T10:00:00Z', '2026-03-03T10:00:01Z']);
  t.deepEqual(Object.keys(kept(['2024-03-02T10:00:00Z', '2024-03-02T10:00:01Z', '2024-03-31T10:00:00Z'], { within: '1m' })),
    ['2024-03-31T10:00:00Z', '2024-03-02T10:00:01Z']);
  // Feb 29 minus 1y is Feb 29 of a common year, i.e. Mar 1.
  t.deepEqual(Object.keys(kept(['2023-03-01T00:00:00Z', '2023-03-01T00:00:01Z', '2024-02-29T00:00:00Z'], { within: '1y' })),
    ['2024-02-29T00:00:00Z', '2023-03-01T00:00:01Z']);
});

test('a point from the future does not move within; with only future points within keeps all', (t) => {
  const now = '2026-03-10T00:00:00Z';
  t.deepEqual(Object.keys(kept([
    '2026-03-01T00:00:00Z', // before 2026-03-07 (2 days before the newest past point): dropped
    '2026-03-08T00:00:00Z',
    '2026-03-09T00:00:00Z', // the reference: newest point older than now
    '2026-04-01T00:00:00Z', // in the future (a skewed clock): kept, but not the reference
  ], { within: '2d' }, now)), ['2026-04-01T00:00:00Z', '2026-03-09T00:00:00Z', '2026-03-08T00:00:00Z']);
  // restic then measures from year 1, so everything is "within".
  t.is(applyRetention(points('2026-04-01T00:00:00Z', '2026-05-01T00:00:00Z'), { within: '1d' }, new Date(now)).remove.length, 0);
});

test('within in years stays in the right century before year 100', (t) => {
  // 0150 - 100y = 0050, not 1950 as Date.UTC would make it.
  t.deepEqual(Object.keys(kept(['0049-06-01T00:00:00Z', '0051-06-01T00:00:00Z', '0150-06-01T00:00:00Z'], { within: '100y' })),
    ['0150-06-01T00:00:00Z', '0051-06-01T00:00:00Z']);
});

test('rules combine: a point is kept when any rule keeps it, with every reason', (t) => {
  t.deepEqual(kept(['2026-02-20T00:00:00Z', '2026-02-27T00:00:00Z', '2026-03-01T00:00:00Z', '2026-03-01T06:00:00Z'],
    { generations: 1, within: '1d', monthly: 2 }), {
    '2026-03-01T06:00:00Z': ['within 1d', 'generation 1', 'monthly 2026-03'],
    '2026-03-01T00:00:00Z': ['within 1d'],
    '2026-02-27T00:00:00Z': ['monthly 2026-02'],
  });
});

test('counts beyond the number of points keep every point once', (t) => {
  t.is(Object.keys(kept(['2026-03-01T00:00:00Z', '2026-03-01T01:00:00Z', '2026-03-05T00:00:00Z'], { generations: 10, yearly: 5 })).length, 3);
  // Two points in the same day: daily 10 still keeps only the newest of that day (restic 0.14
  // does not keep "the oldest" to fill unused counts, as restic 0.17 does).
  t.deepEqual(Object.keys(kept(['2026-03-01T00:00:00Z', '2026-03-01T01:00:00Z'], { daily: 10 })), ['2026-03-01T01:00:00Z']);
});

test('no rule, or only zero ones, keeps everything', (t) => {
  const times = ['2026-03-01T00:00:00Z', '2026-03-02T00:00:00Z'];
  for (const rules of [{}, { daily: 0 }, { within: '0d' }, { generations: 0, within: '0y0h' }] as RetentionRules[]) {
    t.true(isEmptyRetention(rules), JSON.stringify(rules));
    t.is(Object.keys(kept(times, rules)).length, 2, JSON.stringify(rules));
  }
  t.false(isEmptyRetention({ within: '0d1h' }));
});

test('equal times: the first in input order takes the bucket; input order is otherwise irrelevant', (t) => {
  const same = [{ id: 'a', time: '2026-03-01T00:00:00Z' }, { id: 'b', time: '2026-03-01T00:00:00.000Z' }];
  const now = new Date('2026-11-23T00:00:00Z');
  t.deepEqual(applyRetention(same, { generations: 1 }, now).keep.map((k) => k.point.id), ['a']);
  t.deepEqual(applyRetention([...same].reverse(), { generations: 1 }, now).keep.map((k) => k.point.id), ['b']);
  const ps = points('2026-03-01T00:00:00Z', '2026-03-03T00:00:00Z', '2026-03-02T00:00:00Z');
  const ids = (r: ReturnType<typeof applyRetention>) => r.keep.map((k) => k.point.id);
  t.deepEqual(ids(applyRetention(ps, { daily: 2 }, now)), ids(applyRetention([...ps].reverse(), { daily: 2 }, now)));
});

test('parseWithin reads restic durations; the last value of a unit wins', (t) => {
  t.deepEqual(parseWithin('1y2m3d4h'), { years: 1, months: 2, days: 3, hours: 4 });
  t.deepEqual(parseWithin('4h1y'), { years: 1, months: 0, days: 0, hours: 4 });
  t.deepEqual(parseWithin('2d1d'), { years: 0, months: 0, days: 1, hours: 0 });
});

test('parseWithin refuses what restic would misread: weeks, signs, spaces, overflowing hours', (t) => {
  for (const bad of ['', '2w', '-1d', '1d-1h', '1 d', 'd', '1d2', '3000000h', '99999999999999999999d']) {
    t.throws(() => parseWithin(bad), undefined, bad);
  }
  t.notThrows(() => parseWithin('2562047h'));
});

test('a time that is not an instant is refused with the point id', (t) => {
  t.throws(() => applyRetention([{ id: 'x1', time: 'yesterday' }], { daily: 1 }, new Date()), { message: /x1.*yesterday/ });
});
