/**
 * `drctl policy validate` on malformed policy files, through the real CLI: every problem is one
 * line on stderr naming file:line:column and the field, and the exit code is 2.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { drctl, json } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';

/** A config folder with one target (vol1) and one host (hv1). */
async function configFolder(t: ExecutionContext): Promise<string> {
  const dir = await tempDir(t);
  for (const sub of ['policies', 'targets', 'hosts']) await mkdir(join(dir, sub));
  await writeFile(join(dir, 'targets', 'vol1.yaml'), 'type: local\npath: /srv/drctl\n');
  await writeFile(join(dir, 'hosts', 'hv1.yaml'),
    'driver: libvirt\nssh:\n  host: 10.0.0.5\n  user: root\n  keyFile: /etc/drctl/keys/id_ed25519\n  knownHosts: /etc/drctl/known_hosts\n');
  return dir;
}

/** A valid policy; cases replace one line. Line numbers matter: the tests assert them. */
function policy(name: string, edit: (lines: string[]) => string[] = (l) => l): string {
  return edit([
    `name: ${name}`, //               1
    'schedule: "0 */4 * * *"', //     2
    'timezone: Asia/Tokyo', //        3
    'target: vol1', //                4
    'sources:', //                    5
    '  - vm: web01', //               6
    '    host: hv1', //               7
    '  - path: /srv/shared', //       8
    'retention:', //                  9
    '  generations: 42', //           10
    '  daily: 14', //                 11
  ]).join('\n') + '\n';
}

const replace = (line: number, text: string) => (l: string[]): string[] => l.map((x, i) => (i === line - 1 ? text : x));
const drop = (line: number) => (l: string[]): string[] => l.filter((_, i) => i !== line - 1);
const append = (...more: string[]) => (l: string[]): string[] => [...l, ...more];

interface Case {
  title: string;
  text: (name: string) => string;
  ext?: string;
  path: string;
  line: number;
  column?: number;
  says: RegExp;
}

const CASES: Case[] = [
  { title: 'misspelt retention key', text: (n) => policy(n, replace(11, '  dayly: 14')), path: 'retention.dayly', line: 11, column: 3, says: /unknown field - did you mean daily\?/ },
  { title: 'misspelt top-level key', text: (n) => policy(n, replace(2, 'shedule: "0 */4 * * *"')), path: 'shedule', line: 2, column: 1, says: /did you mean schedule\?/ },
  { title: 'a count given as text', text: (n) => policy(n, replace(11, '  daily: "seven"')), path: 'retention.daily', line: 11, says: /expected a whole number ≥ 0.*got the text "seven"/ },
  { title: 'sources as a mapping', text: (n) => policy(n, (l) => [...l.slice(0, 4), 'sources: {}', ...l.slice(8)]), path: 'sources', line: 5, says: /expected a list of sources.*got a mapping/ },
  { title: 'cron with 4 fields', text: (n) => policy(n, replace(2, 'schedule: "0 */4 * *"')), path: 'schedule', line: 2, column: 11, says: /has 4 fields; a schedule has 5/ },
  { title: 'cron minute out of range', text: (n) => policy(n, replace(2, 'schedule: "61 * * * *"')), path: 'schedule', line: 2, says: /minute field "61" is invalid.*0-59/ },
  { title: 'unknown target', text: (n) => policy(n, replace(4, 'target: vol9')), path: 'target', line: 4, column: 9, says: /unknown target "vol9" - targets in .*targets\/: vol1; or add .*vol9\.yaml/ },
  { title: 'unknown fallback target', text: (n) => policy(n, append('fallbackTarget: vol2')), path: 'fallbackTarget', line: 12, says: /unknown target "vol2"/ },
  { title: 'negative count', text: (n) => policy(n, replace(11, '  daily: -3')), path: 'retention.daily', line: 11, says: /must be ≥ 0, got the number -3/ },
  { title: 'non-integer count', text: (n) => policy(n, replace(10, '  generations: 4.5')), path: 'retention.generations', line: 10, says: /must be a whole number, got the number 4.5/ },
  { title: 'empty sources', text: (n) => policy(n, (l) => [...l.slice(0, 4), 'sources: []', ...l.slice(8)]), path: 'sources', line: 5, says: /is empty/ },
  { title: 'a source with both image and path', text: (n) => policy(n, replace(8, '  - image: /var/lib/images/db.qcow2\n    path: /srv/shared')), path: 'sources[1].path', line: 9, says: /exactly one of vm, image or path.*both image and path - split it/ },
  { title: 'a source with none of vm, image, path', text: (n) => policy(n, replace(8, '  - name: orphan')), path: 'sources[1]', line: 8, says: /names no source/ },
  { title: 'vm without host', text: (n) => policy(n, drop(7)), path: 'sources[0].host', line: 6, says: /missing; a vm source needs the host.*hosts in .*: hv1/ },
  { title: 'unknown host', text: (n) => policy(n, replace(7, '    host: hv7')), path: 'sources[0].host', line: 7, says: /unknown host "hv7"/ },
  { title: 'unknown time zone', text: (n) => policy(n, replace(3, 'timezone: Asia/Tokio')), path: 'timezone', line: 3, says: /unknown time zone "Asia\/Tokio" - did you mean Asia\/Tokyo\?/ },
  { title: 'bad within', text: (n) => policy(n, append('  within: 2w')), path: 'retention.within', line: 12, says: /"2w" is not a duration/ },
  { title: 'YAML syntax error', text: (n) => policy(n, replace(4, 'target: vol1: vol2')), path: '', line: 4, says: /YAML syntax error/ },
  { title: 'unquoted cron starting with *', text: (n) => policy(n, replace(2, 'schedule: */30 * * * *')), path: '', line: 2, says: /YAML syntax error.*must be quoted/ },
  {
    title: 'JSON file with a typo', ext: 'json', path: 'retention.dayly', line: 6, column: 5, says: /did you mean daily\?/,
    text: (n) => `{\n  "name": "${n}",\n  "target": "vol1",\n  "sources": [{ "path": "/srv/shared" }],\n  "retention": {\n    "dayly": 7\n  }\n}\n`,
  },
  { title: 'missing name', text: (n) => policy(n, drop(1)), path: 'name', line: 1, says: /missing - add it, e.g. name: web-tier/ },
  { title: 'missing target', text: (n) => policy(n, drop(4)), path: 'target', line: 1, says: /missing/ },
  { title: 'unknown top-level key', text: (n) => policy(n, append('colour: blue')), path: 'colour', line: 12, column: 1, says: /unknown field - allowed here: name, schedule/ },
  {
    title: 'duplicate source names', text: (n) => policy(n, replace(8, '  - path: /srv/web01')), path: 'sources[1]', line: 8,
    says: /point name "web01" is already used by sources\[0\] - give one of them its own name, e.g. name: web01-2 under sources\[1\] \(recovery points/,
  },
  // Retention with only a bad `within`: the "has no rule" check must not trip over it.
  ...['2x', '-1d', '2D', '1.5d'].map((w): Case => ({
    title: `retention with only within: ${w}`, text: (n) => policy(n, (l) => [...l.slice(0, 9), `  within: ${w}`]),
    path: 'retention.within', line: 10, column: 11, says: new RegExp(`"${w.replace('.', '\\.')}" is not a duration - ${w === '2D' ? 'did you mean 2d\\?' : 'write it like 2d'}`),
  })),
  { title: 'retention with only within: 5 (a number)', text: (n) => policy(n, (l) => [...l.slice(0, 9), '  within: 5']), path: 'retention.within', line: 10, column: 11, says: /expected a duration like 2d, got the number 5 - write it like within: 2d/ },
  { title: 'unclosed quote: points at the opening quote', text: (n) => policy(n, replace(2, 'schedule: "0 */4 * * *')), path: '', line: 2, column: 11, says: /YAML syntax error: Missing closing "quote - close the quote that opens here/ },
  { title: 'file name does not match name', text: () => policy('something-else'), path: 'name', line: 1, says: /does not match the file name/ },
];

for (const [i, c] of CASES.entries()) {
  test(`invalid policy: ${c.title}`, async (t) => {
    const dir = await configFolder(t);
    const name = `p${i}`;
    const file = join(dir, 'policies', `${name}.${c.ext ?? 'yaml'}`);
    await writeFile(file, c.text(name));
    const r = await drctl(['policy', 'validate', file]);
    t.is(r.code, 2, r.stderr);
    const lines = r.stderr.trim().split('\n');
    const where = `${file}:${c.line}:${c.column ?? ''}`;
    const hit = lines.find((l) => l.startsWith(where) && l.includes(c.path ? `: ${c.path}: ` : ': ') && c.says.test(l));
    t.truthy(hit, `expected a line starting ${where} for ${c.path || '(file)'} matching ${String(c.says)}; stderr:\n${r.stderr}`);
    t.regex(lines.at(-1) ?? '', /^drctl: \d+ problems? in 1 of 1 file$/);
  });
}

test('duplicate policy names across files: both files are reported', async (t) => {
  const dir = await configFolder(t);
  const a = join(dir, 'policies', 'dup.yaml');
  const b = join(dir, 'policies', 'dup.json');
  await writeFile(a, policy('dup'));
  await writeFile(b, JSON.stringify({ name: 'dup', target: 'vol1', sources: [{ path: '/srv' }], retention: { daily: 7 } }, null, 2));
  const r = await drctl(['policy', 'validate', a]); // dup.json is not given, but lives next to it
  t.is(r.code, 2);
  t.regex(r.stderr, new RegExp(`${a}:1:7: name: policy name "dup" is also used by .*dup\\.json`));
  const both = await drctl(['policy', 'validate', a, b]);
  t.is(both.code, 2);
  t.regex(both.stderr, /dup\.yaml:1:7: name: policy name "dup"/);
  t.regex(both.stderr, /dup\.json:2:11: name: policy name "dup"/);
});

test('a valid policy: exit 0 and one ok line', async (t) => {
  const dir = await configFolder(t);
  const file = join(dir, 'policies', 'web-tier.yaml');
  await writeFile(file, policy('web-tier'));
  const r = await drctl(['policy', 'validate', file]);
  t.is(r.code, 0, r.stderr);
  t.is(r.stderr, '');
  t.is(r.stdout.trim(), `${file}: ok (policy web-tier, 2 sources, target vol1)`);
});

test('the example policy from the issue is valid (every key, all source kinds)', async (t) => {
  const dir = await configFolder(t);
  await writeFile(join(dir, 'targets', 'vol2.yaml'), 'type: iscsi\nportal: 192.0.2.20:3260\niqn: iqn.2026-01.com.example:backup\nlun: 1\n'
    + 'chap: { user: drctl, secretFile: /etc/drctl/secrets/san1 }\nfilesystem: ext4\nmountpoint: /mnt/drctl/san1\n');
  const file = join(dir, 'policies', 'web-tier.yaml');
  await writeFile(file, `name: web-tier
schedule: "0 */4 * * *"      # cron; default every 4 hours when omitted
timezone: Asia/Tokyo         # default: the machine's zone
target: vol1                 # a target defined in the config folder
fallbackTarget: vol2         # optional
prune: "30 2 * * 0"          # cron for prune; default weekly
sources:
  - vm: web01                # VM-level backup of a VM on a host
    host: hv1
  - vm: app02                # file-level inside a guest
    host: hv1
    files: ["/srv/data", "C:/inetpub"]
  - image: /var/lib/images/db.qcow2   # local disk image
  - path: /srv/shared                 # local folder
retention:
  generations: 42
  hourly: 24
  daily: 14
  weekly: 8
  monthly: 12
  yearly: 3
  within: 2d
`);
  const r = await drctl(['policy', 'validate', file, '--json']);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(json(r), { files: [{ file, ok: true, problems: [] }] });
});

test('a file with many problems lists all of them at once, in line order', async (t) => {
  const dir = await configFolder(t);
  const file = join(dir, 'policies', 'many.yaml');
  await writeFile(file, [
    'name: many',
    'shedule: "0 */4 * *"', // 2 unknown key
    'timezone: Mars/Olympus', // 3 bad zone
    'target: nowhere', // 4 unknown target
    'prune: "0 3 * *"', // 5 bad cron
    'sources:',
    '  - vm: web01', // 7 no host
    '  - image: /a.img', // 8
    '    path: /srv', // 9 both
    'retention:',
    '  daily: -1', // 11 negative
    '  weekly: 1.5', // 12 not whole
    '  within: soon', // 13 bad duration
  ].join('\n'));
  const r = await drctl(['policy', 'validate', file, '--json']);
  t.is(r.code, 2);
  const doc = json<{ files: { file: string; ok: boolean; problems: { line: number; path: string; message: string }[] }[] }>(r);
  t.is(doc.files.length, 1);
  t.false(doc.files[0]?.ok);
  const got = (doc.files[0]?.problems ?? []).map((p) => `${p.line} ${p.path}`);
  t.deepEqual(got, ['2 shedule', '3 timezone', '4 target', '5 prune', '7 sources[0].host', '9 sources[1].path', '11 retention.daily', '12 retention.weekly', '13 retention.within']);
  // stderr has the same problems, one line each, then the summary.
  const lines = r.stderr.trim().split('\n');
  t.is(lines.length, got.length + 1);
  t.is(lines.at(-1), 'drctl: 9 problems in 1 of 1 file');
});

test('files outside a config folder resolve targets against --config; several files at once', async (t) => {
  const dir = await configFolder(t);
  const drafts = await tempDir(t);
  const good = join(drafts, 'draft.yaml');
  const bad = join(drafts, 'other.yaml');
  await writeFile(good, policy('web-tier')); // the file name need not match outside policies/
  await writeFile(bad, policy('other', replace(4, 'target: vol2')));
  const r = await drctl(['policy', 'validate', '--config', dir, good, bad]);
  t.is(r.code, 2);
  t.regex(r.stdout, /draft\.yaml: ok \(policy web-tier/);
  t.regex(r.stderr, /other\.yaml:4:9: target: unknown target "vol2"/);
  t.regex(r.stderr, /drctl: 1 problem in 1 of 2 files/);
});

test('no FILE: the whole config folder, targets and hosts included', async (t) => {
  const dir = await configFolder(t);
  await writeFile(join(dir, 'policies', 'web.yaml'), policy('web'));
  await writeFile(join(dir, 'targets', 'san1.yaml'), 'type: iscsi\nportal: 192.0.2.20\niqn: iqn.2026-01.com.example:backup\nlun: 1\nfilesystem: ext4\nmountpoint: /mnt/san1\n');
  await writeFile(join(dir, 'hosts', 'hv2.yaml'), 'driver: hyperv\n');
  const r = await drctl(['policy', 'validate', '--config', dir]);
  t.is(r.code, 2);
  t.regex(r.stdout, /policies\/web\.yaml: ok/);
  t.regex(r.stdout, /targets\/vol1\.yaml: ok \(target vol1, local \/srv\/drctl\)/);
  t.regex(r.stderr, /targets\/san1\.yaml:2:9: portal: expected host:port/);
  t.regex(r.stderr, /hosts\/hv2\.yaml:1:1: ssh: missing; a Hyper-V host is reached over SSH/);
  // A target or host file given by name is checked as one.
  const target = await drctl(['policy', 'validate', join(dir, 'targets', 'san1.yaml'), join(dir, 'targets', 'vol1.yaml')]);
  t.is(target.code, 2);
  t.regex(target.stdout, /targets\/vol1\.yaml: ok \(target vol1\)/);
  t.regex(target.stderr, /san1\.yaml:2:9: portal: expected host:port/);
  const missing = await drctl(['policy', 'validate', '--config', join(dir, 'nope')]);
  t.is(missing.code, 2);
  t.regex(missing.stderr, /config folder .*nope does not exist/);
});

test('a bad within in one policy: every policy of the folder is still checked and listed (exit 2, no unexpected error)', async (t) => {
  const dir = await configFolder(t);
  const bad = join(dir, 'policies', 'good.yaml');
  const other = join(dir, 'policies', 'other.yaml');
  await writeFile(bad, policy('good', (l) => [...l.slice(0, 9), '  within: 2x']));
  await writeFile(other, policy('other', replace(2, 'schedule: "0 */4 * *"')));
  const r = await drctl(['policy', 'validate', '--config', dir]);
  t.is(r.code, 2, r.stderr);
  t.notRegex(r.stderr, /unexpected error/);
  t.true(r.stderr.includes(`${bad}:10:11: retention.within: "2x" is not a duration - write it like 2d`), r.stderr);
  t.true(r.stderr.includes(`${other}:2:11: schedule: "0 */4 * *" has 4 fields`), r.stderr);
  t.regex(r.stderr, /drctl: 2 problems in 2 of \d+ files/);
  // The commands that read one policy file say the same, as a config error.
  for (const args of [['policy', 'plan', bad], ['retention', 'simulate', '--policy', bad, '--points', bad]]) {
    const c = await drctl(args);
    t.is(c.code, 2, `${args.join(' ')}: ${c.stderr}`);
    t.true(c.stderr.includes(`${bad}:10:11: retention.within: "2x" is not a duration`), c.stderr);
  }
});

test('a target with a filesystem drctl does not know: the problem says what to write', async (t) => {
  const dir = await configFolder(t);
  const san = join(dir, 'targets', 'san2.yaml');
  await writeFile(san, 'type: iscsi\nportal: 192.0.2.20:3260\niqn: iqn.2026-01.com.example:backup\nlun: 1\nmountpoint: /mnt/san2\nfilesystem: btrfs\n');
  const r = await drctl(['policy', 'validate', san]);
  t.is(r.code, 2, r.stderr);
  t.true(r.stderr.includes(`${san}:6:13: filesystem: must be one of ext4, xfs, got the text "btrfs" - pick one of them, e.g. filesystem: ext4`), r.stderr);
});
