/**
 * How restore and ls pick a point: `latest` needs --name once points of several names exist
 * (it silently took the newest point of any name), an empty id is refused, and an ambiguous id
 * prefix lists the points it matches.
 */
import test from 'ava';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { drctl, json } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';

test('latest without --name: refused with exit 2 listing the names when there are several; works with one name', async (t) => {
  const dir = await tempDir(t);
  const repo = join(dir, 'repo');
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  const one = join(dir, 'one.img');
  const other = join(dir, 'other.img');
  await writeFile(one, 'x');
  await writeFile(other, Buffer.alloc(1024 * 1024));
  t.is((await drctl(['backup', '--repo', repo, '--image', other, '--name', 'web01', '-q'])).code, 0);
  // One name only: latest is that name's newest point.
  const solo = await drctl(['ls', '--repo', repo, 'latest']);
  t.is(solo.code, 0, solo.stderr);
  t.regex(solo.stdout, /other\.img/);
  t.is((await drctl(['backup', '--repo', repo, '--image', one, '--name', 'scratch', '-q'])).code, 0);

  const out = join(dir, 'x.raw');
  for (const args of [['restore', '--repo', repo, 'latest', '--to', out], ['ls', '--repo', repo, 'latest']]) {
    const r = await drctl(args);
    t.is(r.code, 2, r.stderr);
    t.regex(r.stderr, /^drctl: latest is ambiguous in .*: points of 2 names \(scratch, web01\) - give --name NAME/);
  }
  await t.throwsAsync(readFile(out), undefined, 'nothing restored');
  const r = await drctl(['restore', '--repo', repo, 'latest', '--name', 'web01', '--to', out]);
  t.is(r.code, 0, r.stderr);
  t.is((await readFile(out)).length, 1024 * 1024);
});

test('an empty point id is a usage error; an ambiguous prefix lists the points it matches', async (t) => {
  const dir = await tempDir(t);
  const repo = join(dir, 'repo');
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  const img = join(dir, 'one.img');
  await writeFile(img, 'x');
  const ids: string[] = [];
  // Enough points that two share a first hex digit.
  while (new Set(ids.map((i) => i[0])).size === ids.length) {
    ids.push(json<{ id: string }>(await drctl(['backup', '--repo', repo, '--image', img, '--name', 'one', '--json'])).id);
  }
  const empty = await drctl(['restore', '--repo', repo, '', '--to', join(dir, 'x.raw')]);
  t.is(empty.code, 2);
  t.regex(empty.stderr, /^drctl: no point given - the point is an empty string/);
  t.notRegex(empty.stderr, /ambiguous/);

  const prefix = ids.find((id, k) => ids.findIndex((o) => o[0] === id[0]) !== k)?.[0] as string;
  const matching = ids.filter((id) => id.startsWith(prefix));
  const r = await drctl(['restore', '--repo', repo, prefix, '--to', join(dir, 'x.raw')]);
  t.is(r.code, 2);
  t.regex(r.stderr, new RegExp(`^drctl: point id prefix ${prefix} is ambiguous: ${matching.length} points match \\(`));
  for (const id of matching) t.regex(r.stderr, new RegExp(`${id.slice(0, 12)} one \\d{4}-`));
});
