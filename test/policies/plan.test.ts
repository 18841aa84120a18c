/** `drctl policy plan` and planPolicy: next runs in the policy's zone, and what a year of runs leaves. */
import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { planPolicy } from '../../policies/plan.js';
import { drctl, json } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';

interface PlanJson {
  policy: string;
  timezone: string;
  nextRuns: { utc: string; local: string }[];
  simulated: { runs: number; kept: number; removed: number; byRule: Record<string, number> };
  kept: { time: string; local: string; reasons: string[] }[];
}

const POLICY = 'name: web-tier\ntimezone: Asia/Tokyo\ntarget: vol1\nsources:\n  - path: /srv/shared\nretention:\n  generations: 6\n  daily: 7\n';

test('4-hour policy in Asia/Tokyo: next runs at the right UTC instants', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'web-tier.yaml'), POLICY);
  const r = await drctl(['policy', 'plan', join(dir, 'web-tier.yaml'), '--from', '2026-03-01T00:00:00Z', '--runs', '7', '--json']);
  t.is(r.code, 0, r.stderr);
  const plan = json<PlanJson>(r);
  t.is(plan.timezone, 'Asia/Tokyo');
  // Every 4 hours on the hour in Tokyo (UTC+9): 00, 04, ... local is 15, 19, 23, 03, 07, 11 UTC.
  t.deepEqual(plan.nextRuns, [
    { utc: '2026-03-01T03:00:00Z', local: '2026-03-01 12:00 +09:00' },
    { utc: '2026-03-01T07:00:00Z', local: '2026-03-01 16:00 +09:00' },
    { utc: '2026-03-01T11:00:00Z', local: '2026-03-01 20:00 +09:00' },
    { utc: '2026-03-01T15:00:00Z', local: '2026-03-02 00:00 +09:00' },
    { utc: '2026-03-01T19:00:00Z', local: '2026-03-02 04:00 +09:00' },
    { utc: '2026-03-01T23:00:00Z', local: '2026-03-02 08:00 +09:00' },
    { utc: '2026-03-02T03:00:00Z', local: '2026-03-02 12:00 +09:00' },
  ]);
});

test('daily: 7 leaves exactly 7 daily points after a year, besides what generations keeps', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'web-tier.yaml'), POLICY);
  const r = await drctl(['policy', 'plan', join(dir, 'web-tier.yaml'), '--from', '2026-03-01T00:00:00Z', '--json']);
  t.is(r.code, 0, r.stderr);
  const plan = json<PlanJson>(r);
  t.is(plan.simulated.runs, 365 * 6);
  t.deepEqual(plan.simulated.byRule, { generation: 6, daily: 7 });
  const daily = plan.kept.filter((k) => k.reasons.some((x) => x.startsWith('daily ')));
  t.is(daily.length, 7);
  // The newest run of each of the last 7 UTC days (23:00Z = 08:00 the next morning in Tokyo).
  t.deepEqual(daily.map((k) => k.time), [
    '2027-02-28T23:00:00.000Z', '2027-02-27T23:00:00.000Z', '2027-02-26T23:00:00.000Z', '2027-02-25T23:00:00.000Z',
    '2027-02-24T23:00:00.000Z', '2027-02-23T23:00:00.000Z', '2027-02-22T23:00:00.000Z',
  ]);
  // Generations 1-6 are the last 6 runs; the newest is also the newest daily point.
  t.is(plan.kept.length, 6 + 7 - 1);
  t.is(plan.simulated.removed, 365 * 6 - 12);

  const text = await drctl(['policy', 'plan', join(dir, 'web-tier.yaml'), '--from', '2026-03-01T00:00:00Z', '--runs', '2']);
  t.is(text.code, 0, text.stderr);
  t.regex(text.stdout, /^policy web-tier: schedule "0 \*\/4 \* \* \*" in Asia\/Tokyo, retention generations 6, daily 7$/m);
  t.regex(text.stdout, /^ {2}2026-03-01 12:00 \+09:00 {3}2026-03-01T03:00:00Z$/m);
  t.regex(text.stdout, /after 365 days of successful runs from 2026-03-01T00:00:00Z: 2190 points made, 12 kept, 2178 removed/);
  t.regex(text.stdout, /^ {2}daily {7}7$/m);
});

test('planPolicy follows a DST zone: Berlin runs stay on local hours across the change', (t) => {
  const plan = planPolicy({ schedule: '0 */4 * * *', timezone: 'Europe/Berlin', retention: { generations: 3, weekly: 2 } },
    new Date('2026-03-28T20:00:00Z'), { nextRuns: 6, days: 14 });
  // 2026-03-29 02:00 CET -> 03:00 CEST: local 00:00 is 23:00Z before, 22:00Z after.
  t.deepEqual(plan.nextRuns.map((d) => d.toISOString()), [
    '2026-03-28T23:00:00.000Z', '2026-03-29T02:00:00.000Z', '2026-03-29T06:00:00.000Z',
    '2026-03-29T10:00:00.000Z', '2026-03-29T14:00:00.000Z', '2026-03-29T18:00:00.000Z',
  ]);
  t.is(plan.simulatedRuns, 14 * 6);
  t.deepEqual(plan.kept.map((k) => k.reasons.join(',')), ['generation 1,weekly 2026-W15', 'generation 2', 'generation 3', 'weekly 2026-W14']);
});

test('an invalid policy or flag: exit 2', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'p.yaml'), POLICY.replace('timezone: Asia/Tokyo', 'timezone: Asia/Tokio').replace('daily: 7', 'daily: seven'));
  const r = await drctl(['policy', 'plan', join(dir, 'p.yaml')]);
  t.is(r.code, 2);
  t.regex(r.stderr, /^drctl: .*p\.yaml is not a valid policy - 2 problems/);
  t.regex(r.stderr, /p\.yaml:2:11: timezone: unknown time zone "Asia\/Tokio" - did you mean Asia\/Tokyo\?/);
  t.regex(r.stderr, /p\.yaml:8:10: retention\.daily: expected a whole number/);
  await writeFile(join(dir, 'ok.yaml'), POLICY);
  t.is((await drctl(['policy', 'plan', join(dir, 'ok.yaml'), '--from', 'tomorrow'])).code, 2);
  t.is((await drctl(['policy', 'plan', join(dir, 'ok.yaml'), '--runs', '0'])).code, 2);
});

// "0 0 1 1 1": midnight on New Year's Day when it is a Monday (node-cron wants both fields):
// 2029, 2035, then 2046 - more than the 8 years the search looks ahead.
const RARE = 'name: rare\nschedule: "0 0 1 1 1"\ntimezone: UTC\ntarget: vol1\nsources:\n  - path: /srv/shared\nretention:\n  daily: 7\n';

test('a schedule that fires rarely: the runs found are listed, with how many were asked for (exit 0)', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'rare.yaml'), RARE);
  const r = await drctl(['policy', 'plan', join(dir, 'rare.yaml'), '--from', '2026-01-01T00:00:00Z', '--runs', '3']);
  t.is(r.code, 0, r.stderr);
  const lines = r.stdout.split('\n');
  t.is(lines[1], 'next 2 runs (UTC):');
  t.deepEqual(lines.slice(2, 5), [
    '  2029-01-01T00:00:00Z',
    '  2035-01-01T00:00:00Z',
    '  (only 2 of the 3 runs asked for: the schedule does not fire in the 8 years after 2035-01-01T00:00:00Z)',
  ]);
  const j = await drctl(['policy', 'plan', join(dir, 'rare.yaml'), '--from', '2026-01-01T00:00:00Z', '--runs', '3', '--days', '3660', '--json']);
  t.is(j.code, 0, j.stderr);
  const plan = json<PlanJson & { nextRunsNote?: string }>(j);
  t.deepEqual(plan.nextRuns.map((x) => x.utc), ['2029-01-01T00:00:00Z', '2035-01-01T00:00:00Z']);
  t.regex(plan.nextRunsNote ?? '', /^only 2 of the 3 runs asked for/);
  t.is(plan.simulated.runs, 2, 'ten years from 2026 hold two runs');
  // No run at all is still an error.
  const none = await drctl(['policy', 'plan', join(dir, 'rare.yaml'), '--from', '2036-01-01T00:00:00Z']);
  t.is(none.code, 2);
  t.regex(none.stderr, /never fires in the 8 years after 2036-01-01/);
});

test('plan text: a UTC policy shows each run once, and counts of one are singular', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'utc.yaml'), POLICY.replace('Asia/Tokyo', 'UTC'));
  const r = await drctl(['policy', 'plan', join(dir, 'utc.yaml'), '--from', '2026-03-01T00:00:00Z', '--runs', '1', '--days', '1']);
  t.is(r.code, 0, r.stderr);
  const lines = r.stdout.split('\n');
  t.is(lines[1], 'next run (UTC):');
  t.is(lines[2], '  2026-03-01T04:00:00Z');
  t.regex(r.stdout, /^after 1 day of successful runs from 2026-03-01T00:00:00Z: 5 points made/m);
  t.notRegex(r.stdout, /UTC \/ UTC|1 runs|1 days/);
});
