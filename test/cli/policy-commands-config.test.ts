/**
 * Commands that run on the config folder, when it or the repository is not as expected:
 * `catalog rebuild` over a damaged point file, `forget --policy` with two files claiming the
 * policy's name or with --keep-* rules. Small file-level backups only, no VMs.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { drctl, json } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';

async function configFolder(t: ExecutionContext): Promise<{ root: string; dir: string; repo: string; args: string[] }> {
  const root = await tempDir(t);
  const dir = join(root, 'config');
  const repo = join(root, 'repo');
  await mkdir(join(dir, 'targets'), { recursive: true });
  await mkdir(join(dir, 'policies'));
  await writeFile(join(dir, 'targets', 'local.yaml'), `type: local\npath: ${repo}\n`);
  await writeFile(join(dir, 'policies', 'good.yaml'),
    `name: good\nschedule: "* * * * *"\ntimezone: UTC\ntarget: local\nsources:\n  - path: ${root}\n    name: files\nretention:\n  generations: 3\n`);
  return { root, dir, repo, args: ['--config', dir, '--state', join(root, 'state')] };
}

test('catalog rebuild that skips a damaged point file: exit 3, the file named, the other points in the catalog', async (t) => {
  const { root, repo, args } = await configFolder(t);
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  const src = join(root, 'src');
  await mkdir(src);
  await writeFile(join(src, 'a.txt'), 'alpha\n');
  const a = json<{ id: string }>(await drctl(['backup', '--repo', repo, '--files', src, '--name', 'a', '--json']));
  const b = json<{ id: string }>(await drctl(['backup', '--repo', repo, '--files', src, '--name', 'b', '--json']));
  await writeFile(join(repo, 'points', `${b.id}.json`), '{"damaged');
  const r = await drctl(['catalog', 'rebuild', ...args]);
  t.is(r.code, 3, r.stderr);
  t.true(r.stderr.includes(`point file ${b.id.slice(0, 12)} in ${repo} is damaged and was skipped`), r.stderr);
  t.regex(r.stdout, /^local: 1 point from .*, 1 damaged point file skipped$/m);
  t.regex(r.stdout, /: 1 recovery point$/m);
  const j = await drctl(['catalog', 'rebuild', '--json', ...args]);
  t.is(j.code, 3);
  const doc = json<{ points: number; targets: { target: string; damaged?: string[] }[] }>(j);
  t.is(doc.points, 1);
  t.deepEqual(doc.targets.find((x) => x.target === 'local')?.damaged, [b.id]);
  t.not(a.id, b.id);
  const help = await drctl(['catalog', 'rebuild', '--help']);
  t.regex(help.stdout, /Exit codes: .*3 rebuilt, but a damaged point file was skipped/);
});

test('forget --policy with two files defining that policy: names both files and what to do (exit 2)', async (t) => {
  const { dir, args } = await configFolder(t);
  const twin = join(dir, 'policies', 'good.json');
  await writeFile(twin, JSON.stringify({ name: 'good', target: 'local', sources: [{ path: '/srv' }], retention: { daily: 1 } }));
  const r = await drctl(['forget', '--policy', 'good', '--dry-run', ...args]);
  t.is(r.code, 2, r.stderr);
  const yaml = join(dir, 'policies', 'good.yaml');
  t.true(r.stderr.includes(`drctl: policy good is defined by 2 files, ${twin} and ${yaml}, so neither is used - nothing was done (keep one of them: delete the other, or give it a name of its own`), r.stderr);
  t.true(r.stderr.includes(`${yaml}:1:7: name: policy name "good" is also used by ${twin}`), r.stderr);
});

test('forget --policy with --keep-*: a usage error saying they cannot be combined (exit 2), nothing opened', async (t) => {
  const { args } = await configFolder(t);
  const r = await drctl(['forget', '--policy', 'good', '--keep-last', '1', '--dry-run', ...args]);
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, /^drctl: --policy and --keep-\* cannot be combined/);
  t.notRegex(r.stderr, /no repository/);
});

test('forget --policy whose file has problems: the problems are listed (exit 2)', async (t) => {
  const { dir, args } = await configFolder(t);
  const file = join(dir, 'policies', 'good.yaml');
  await writeFile(file, 'name: good\ntarget: local\nsources: [{ path: /srv }]\nretention:\n  within: 2x\n');
  const r = await drctl(['forget', '--policy', 'good', '--dry-run', ...args]);
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, /^drctl: policy good \(.*good\.yaml\) has problems, so it is not used - nothing was done/);
  t.true(r.stderr.includes(`${file}:5:11: retention.within: "2x" is not a duration`), r.stderr);
});

test('backup --policy with two files defining that policy: names both files', async (t) => {
  const { dir, args } = await configFolder(t);
  const twin = join(dir, 'policies', 'good.json');
  await writeFile(twin, JSON.stringify({ name: 'good', target: 'local', sources: [{ path: '/srv' }], retention: { daily: 1 } }));
  const r = await drctl(['backup', '--policy', 'good', ...args]);
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, /^drctl: policy good is defined by 2 files, .*good\.json and .*good\.yaml/);
});
