/** `drctl retention simulate`: a policy's retention applied to a list of points, no repository. */
import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { drctl, json } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';

const POINTS = [
  { id: 'a', time: '2026-03-01T04:00:00Z' }, // older point of 03-01: removed
  { id: 'b', time: '2026-03-01T10:00:00Z' }, // newest of 03-01: daily
  { id: 'c', time: '2026-03-02T04:00:00Z' }, // older point of 03-02: removed
  { id: 'd', time: '2026-03-02T22:00:00Z' }, // newest of 03-02: daily
  { id: 'e', time: '2026-03-03T09:00:00+09:00' }, // = 03-03T00:00Z, same UTC day as f: only generation 2
  { id: 'f', time: '2026-03-03T12:00:00Z' }, // newest: generation 1 and daily
];
const EXPECTED = {
  keep: [
    { id: 'f', time: '2026-03-03T12:00:00Z', reasons: ['generation 1', 'daily 2026-03-03'] },
    { id: 'e', time: '2026-03-03T09:00:00+09:00', reasons: ['generation 2'] },
    { id: 'd', time: '2026-03-02T22:00:00Z', reasons: ['daily 2026-03-02'] },
    { id: 'b', time: '2026-03-01T10:00:00Z', reasons: ['daily 2026-03-01'] },
  ],
  remove: [
    { id: 'c', time: '2026-03-02T04:00:00Z' },
    { id: 'a', time: '2026-03-01T04:00:00Z' },
  ],
};

test('a YAML file with only name and retention: exact JSON output, newest first, times as given', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'p.yaml'), 'name: web-tier\nretention:\n  generations: 2\n  daily: 3\n');
  await writeFile(join(dir, 'points.json'), JSON.stringify(POINTS));
  const r = await drctl(['retention', 'simulate', '--policy', join(dir, 'p.yaml'), '--points', join(dir, 'points.json'), '--json']);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(json(r), EXPECTED);
  t.is(r.stdout, JSON.stringify(EXPECTED, null, 2) + '\n');
});

test('a JSON policy file, and a full policy file (other keys are allowed)', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'p.json'), JSON.stringify({ retention: { generations: 2, daily: 3 } }));
  await writeFile(join(dir, 'full.yaml'),
    'name: web\nschedule: "0 */4 * * *"\ntarget: anything\nsources: [{ path: /srv }]\nretention:\n  generations: 2\n  daily: 3\n');
  await writeFile(join(dir, 'points.json'), JSON.stringify(POINTS.map((p) => ({ ...p, name: 'web01', kind: 'vm' }))));
  for (const policy of ['p.json', 'full.yaml']) {
    const r = await drctl(['retention', 'simulate', '--policy', join(dir, policy), '--points', join(dir, 'points.json'), '--json']);
    t.is(r.code, 0, r.stderr);
    t.deepEqual(json(r), EXPECTED);
  }
});

test('without --json: a table and a summary line', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'p.yaml'), 'name: web-tier\nretention: { generations: 2, daily: 3 }\n');
  await writeFile(join(dir, 'points.json'), JSON.stringify(POINTS));
  const r = await drctl(['retention', 'simulate', '--policy', join(dir, 'p.yaml'), '--points', join(dir, 'points.json')]);
  t.is(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  t.regex(lines[0] ?? '', /^ID\s+TIME\s+ACTION\s+REASONS$/);
  t.regex(lines[1] ?? '', /^f\s+2026-03-03T12:00:00Z\s+KEEP\s+generation 1, daily 2026-03-03$/);
  t.regex(lines[3] ?? '', /^d\s+2026-03-02T22:00:00Z\s+KEEP/);
  t.regex(lines[4] ?? '', /^c\s+2026-03-02T04:00:00Z\s+REMOVE$/);
  t.is(lines.at(-1), 'keep 4, remove 2 of 6 points (policy web-tier: generations 2, daily 3)');
});

test('a bad points file: exit 2 naming the file and each bad entry', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'p.yaml'), 'retention: { daily: 3 }\n');
  const points = join(dir, 'points.json');
  await writeFile(points, '[\n  {"id": "a", "time": "2026-03-01T04:00:00Z"},\n  {"id": "b", "time": "yesterday"},\n  {"time": "2026-03-01T05:00:00Z"},\n  {"id": "a", "time": "2026-03-01T06:00:00"}\n]\n');
  const r = await drctl(['retention', 'simulate', '--policy', join(dir, 'p.yaml'), '--points', points]);
  t.is(r.code, 2);
  t.regex(r.stderr, new RegExp(`^drctl: ${points} is not a valid points file - 4 problems`));
  t.regex(r.stderr, /points\.json:3:23: \[1\]\.time: entry 1: time "yesterday" is not an ISO 8601 instant/);
  t.regex(r.stderr, /points\.json:4:3: \[2\]\.id: entry 2 has no id/);
  t.regex(r.stderr, /points\.json:5:10: \[3\]\.id: entry 3 repeats id "a" of entry 0/);
  t.regex(r.stderr, /points\.json:5:23: \[3\]\.time: entry 3: time "2026-03-01T06:00:00" is not an ISO 8601 instant with a zone/);

  await writeFile(points, '{"id": "a"}');
  const notList = await drctl(['retention', 'simulate', '--policy', join(dir, 'p.yaml'), '--points', points, '--json']);
  t.is(notList.code, 2);
  t.is(json<{ error: { code: string } }>(notList).error.code, 'CONFIG_INVALID');
  t.regex(notList.stderr, /points\.json:1:1: expected a list of points/);

  await writeFile(points, '[{"id": "a", "time": "2026-03-01T04:00:00Z"');
  const syntax = await drctl(['retention', 'simulate', '--policy', join(dir, 'p.yaml'), '--points', points]);
  t.is(syntax.code, 2);
  t.regex(syntax.stderr, /points\.json:1:\d+: JSON syntax error: a list \[ is not closed with \]/);
  t.notRegex(syntax.stderr, /YAML/);
});

test('a points file with dates that do not exist: exit 2 naming each, never rolled over into the next month', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'p.yaml'), 'retention: { daily: 3 }\n');
  const points = join(dir, 'points.json');
  await writeFile(points, [
    '[',
    '  {"id": "a", "time": "2026-02-30T12:00:00Z"},', // 2
    '  {"id": "b", "time": "2026-02-29T12:00:00Z"},', // 3: 2026 is not a leap year
    '  {"id": "c", "time": "2026-04-31T12:00:00+02:00"},', // 4
    '  {"id": "d", "time": "2028-02-29T12:00:00Z"},', // 5: fine, 2028 is
    '  {"id": "e", "time": "2026-03-01T12:00:00Z"}', // 6: fine
    ']',
  ].join('\n'));
  const r = await drctl(['retention', 'simulate', '--policy', join(dir, 'p.yaml'), '--points', points]);
  t.is(r.code, 2, r.stdout);
  t.regex(r.stderr, new RegExp(`^drctl: ${points} is not a valid points file - 3 problems`));
  t.true(r.stderr.includes(`${points}:2:23: [0].time: "2026-02-30T12:00:00Z" is not a valid date (February 2026 has 28 days) - give a day that exists, e.g. "2026-02-28T12:00:00Z"`), r.stderr);
  t.true(r.stderr.includes(`${points}:3:23: [1].time: "2026-02-29T12:00:00Z" is not a valid date (February 2026 has 28 days)`), r.stderr);
  t.true(r.stderr.includes(`${points}:4:23: [2].time: "2026-04-31T12:00:00+02:00" is not a valid date (April 2026 has 30 days)`), r.stderr);
  t.notRegex(r.stderr, /\[3\]|\[4\]/);
});

test('a points file that is JSON by its content (not its name): a syntax error says JSON and points at the opening quote', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'p.yaml'), 'retention: { daily: 3 }\n');
  const points = join(dir, 'points.txt');
  await writeFile(points, '[{"id": "a", "time": "2026-03-01T04:00:00Z}]\n');
  const r = await drctl(['retention', 'simulate', '--policy', join(dir, 'p.yaml'), '--points', points]);
  t.is(r.code, 2);
  t.true(r.stderr.includes(`${points}:1:22: JSON syntax error: Missing closing "quote - close the quote that opens here`), r.stderr);
  t.notRegex(r.stderr, /YAML/);
});

test('a bad policy file or missing flags: exit 2 with the problem', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'points.json'), JSON.stringify(POINTS));
  await writeFile(join(dir, 'p.yaml'), 'name: x\nretention:\n  dayly: 3\n  weekly: -1\n');
  const r = await drctl(['retention', 'simulate', '--policy', join(dir, 'p.yaml'), '--points', join(dir, 'points.json')]);
  t.is(r.code, 2);
  t.regex(r.stderr, /p\.yaml:3:3: retention\.dayly: unknown field - did you mean daily\?/);
  t.regex(r.stderr, /p\.yaml:4:11: retention\.weekly: must be ≥ 0/);
  await writeFile(join(dir, 'q.yaml'), 'retenton:\n  daily: 3\n');
  const typo = await drctl(['retention', 'simulate', '--policy', join(dir, 'q.yaml'), '--points', join(dir, 'points.json')]);
  t.is(typo.code, 2);
  t.regex(typo.stderr, /q\.yaml:1:1: retention: missing - rename retenton to retention/);
  const noPoints = await drctl(['retention', 'simulate', '--policy', join(dir, 'p.yaml')]);
  t.is(noPoints.code, 2);
  t.regex(noPoints.stderr, /needs --policy FILE and --points FILE/);
  const missing = await drctl(['retention', 'simulate', '--policy', join(dir, 'nope.yaml'), '--points', join(dir, 'points.json')]);
  t.is(missing.code, 2);
  t.regex(missing.stderr, /cannot read policy file .*nope\.yaml - ENOENT/);
});
