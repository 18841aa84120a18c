/**
 * `drctl forget ID…`: the way out when the newest point's file is damaged. Retention always
 * keeps the newest point and prune refuses to run beside a damaged point file, so without it
 * only a hand-deleted file under points/ would do.
 */
import test from 'ava';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { drctl, json } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';
import { flipByte } from '../support/images.js';

test('forget ID removes a damaged newest point file, after which points exits 0 and prune runs; the older point restores', async (t) => {
  const dir = await tempDir(t);
  const repo = join(dir, 'repo');
  const src = join(dir, 'src');
  await mkdir(src);
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  await writeFile(join(src, 'a.txt'), 'first\n');
  const older = json<{ id: string }>(await drctl(['backup', '--repo', repo, '--files', src, '--name', 'docs', '--json']));
  await writeFile(join(src, 'a.txt'), 'second\n');
  const newest = json<{ id: string }>(await drctl(['backup', '--repo', repo, '--files', src, '--name', 'docs', '--json']));
  await flipByte(join(repo, 'points', `${newest.id}.json`), 10);

  t.not((await drctl(['prune', '--repo', repo])).code, 0, 'prune refuses beside a damaged point file');
  const bad = [
    await drctl(['forget', '--repo', repo, 'ffffffffffff']),
    await drctl(['forget', '--repo', repo, newest.id.slice(0, 12), '--keep-last', '1']),
  ];
  t.deepEqual(bad.map((r) => r.code), [2, 2], bad.map((r) => r.stderr).join('\n'));
  t.regex(bad[0]?.stderr ?? '', /no recovery point ffffffffffff/);

  const dry = await drctl(['forget', '--repo', repo, newest.id.slice(0, 12), '--dry-run', '--json']);
  t.is(dry.code, 0, dry.stderr);
  t.deepEqual(json<{ removed: { id: string; damaged?: boolean }[] }>(dry).removed, [{ id: newest.id, damaged: true }]);
  t.is((await drctl(['points', '--repo', repo])).code, 3, 'a dry run removes nothing');

  const r = await drctl(['forget', '--repo', repo, newest.id.slice(0, 12)]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, new RegExp(`removed ${newest.id.slice(0, 12)}  \\(damaged point file\\)`));
  const listed = await drctl(['points', '--repo', repo, '--json']);
  t.is(listed.code, 0, listed.stderr);
  t.deepEqual(json<{ id: string }[]>(listed).map((p) => p.id), [older.id]);
  t.is((await drctl(['prune', '--repo', repo])).code, 0);
  const out = join(dir, 'out');
  t.is((await drctl(['restore', '--repo', repo, older.id, '--to', out])).code, 0);
  t.is(await readFile(join(out, 'a.txt'), 'utf8'), 'first\n');
});
