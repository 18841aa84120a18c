/**
 * A damaged or missing config.json: every command that opens the repository stops with exit 2,
 * naming config.json, the field and what is wrong, before anything uses the value (a chunk
 * size of 0 made a backup spin forever; encryption "aes" would have been written in the clear).
 */
import test, { type ExecutionContext } from 'ava';
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { drctl } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';

type Config = Record<string, unknown> & { compression: Record<string, unknown>; fileChunking: Record<string, unknown> };

/** A repository holding one point, and its config.json as init wrote it. */
async function repoWithPoint(t: ExecutionContext): Promise<{ dir: string; repo: string; config: Config }> {
  const dir = await tempDir(t);
  const repo = join(dir, 'repo');
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  const img = join(dir, 'one.img');
  await writeFile(img, 'x');
  const b = await drctl(['backup', '--repo', repo, '--image', img, '--name', 'one', '-q']);
  t.is(b.code, 0, b.stderr);
  return { dir, repo, config: JSON.parse(await readFile(join(repo, 'config.json'), 'utf8')) as Config };
}

const damaged: [string, (c: Config) => void, RegExp][] = [
  // Used to loop forever at 100% CPU in backup.
  ['imageChunkBytes 0', (c) => { c.imageChunkBytes = 0; }, /imageChunkBytes must be an integer from 4096 .* multiple of 4096, got 0/],
  // Used to fail as "unexpected error … (this is a bug)".
  ['imageChunkBytes -5', (c) => { c.imageChunkBytes = -5; }, /imageChunkBytes must be .*got -5/],
  ['imageChunkBytes not a multiple of 4 KiB', (c) => { c.imageChunkBytes = 5000; }, /imageChunkBytes must be .*multiple of 4096, got 5000/],
  // Was accepted, and data would have been written unencrypted.
  ['encryption aes', (c) => { c.encryption = 'aes'; }, /encryption: this drctl cannot read or write encryption "aes"/],
  ['an unknown codec', (c) => { c.compression.codec = 'lz4'; }, /compression\.codec must be zstd .*got "lz4"/],
  ['zstd level 99', (c) => { c.compression.level = 99; }, /compression\.level must be an integer from -131072 to 22, got 99/],
  ['fileChunking all zero', (c) => { c.fileChunking = { minBytes: 0, avgBytes: 0, maxBytes: 0, seed: 0 }; }, /fileChunking\.minBytes must be .*got 0/],
  ['fileChunking min above max', (c) => { c.fileChunking.minBytes = 16 * 1024 * 1024; }, /fileChunking must have minBytes <= avgBytes <= maxBytes/],
  ['packTargetBytes missing', (c) => { delete c.packTargetBytes; }, /packTargetBytes must be .*got nothing/],
  ['formatVersion a string', (c) => { c.formatVersion = '1'; }, /formatVersion must be a number .*got "1"/],
];

test('a damaged config.json field: exit 2 naming config.json, the field and what is wrong, for backup and points alike', async (t) => {
  const { dir, repo, config } = await repoWithPoint(t);
  const img = join(dir, 'one.img');
  for (const [what, damage, expected] of damaged) {
    const c = structuredClone(config);
    damage(c);
    await writeFile(join(repo, 'config.json'), JSON.stringify(c));
    for (const args of [['points', '--repo', repo], ['backup', '--repo', repo, '--image', img, '--name', 'one']]) {
      const r = await drctl(args);
      t.is(r.code, 2, `${what}, ${args[0]}: ${r.stderr}`);
      t.regex(r.stderr, /^drctl: repository .*: config\.json is invalid( -| in \d+ fields)/, what);
      t.regex(r.stderr, expected, what);
      t.regex(r.stderr, /from a copy of this repository/, what);
      t.notRegex(r.stderr, /this is a bug|drctl init --repo|use an empty folder/, what);
    }
  }
  // Several bad fields: each on a line of its own.
  const c = structuredClone(config);
  c.imageChunkBytes = 0;
  c.encryption = 'aes';
  await writeFile(join(repo, 'config.json'), JSON.stringify(c));
  const r = await drctl(['points', '--repo', repo]);
  t.is(r.code, 2);
  t.regex(r.stderr, /config\.json is invalid in 2 fields/);
  t.regex(r.stderr, /\n {2}imageChunkBytes must be .*\n {2}encryption: /);
  // Nothing was written: still the one point.
  await writeFile(join(repo, 'config.json'), JSON.stringify(config));
  t.is((await readdir(join(repo, 'points'))).length, 1);
});

test('a repository whose config.json is missing or not JSON: says it looks like a drctl repository and to restore config.json, not to run init', async (t) => {
  const { repo } = await repoWithPoint(t);
  for (const [what, damage] of [
    ['missing', () => rm(join(repo, 'config.json'))],
    ['not JSON', () => writeFile(join(repo, 'config.json'), '{"formatVersion')],
    ['without formatVersion', () => writeFile(join(repo, 'config.json'), '{}')],
  ] as const) {
    await damage();
    const r = await drctl(['restore', '--repo', repo, 'latest', '--to', join(repo, '..', 'out.img')]);
    t.is(r.code, 2, `${what}: ${r.stderr}`);
    t.regex(r.stderr, new RegExp(`^drctl: ${repo} looks like a drctl repository .*config\\.json (is missing|is not valid JSON|has no formatVersion)`), what);
    t.regex(r.stderr, /put back config\.json from a copy of this repository \(a backup of the repository folder, or the spare node's copy\)/, what);
    t.notRegex(r.stderr, /is not a drctl repository|use an empty folder/, what);
  }
});
