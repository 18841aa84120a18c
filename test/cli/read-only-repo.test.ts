/**
 * A repository on a read-only mount (a snapshot, an offsite copy, a spare node mounting the
 * volume ro) is read without a lock: ls, points, check (with --read-data too) and restore work
 * and say so in one line on stderr; commands that write fail in one line saying why.
 */
import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { drctl, json } from '../support/cli.js';
import { sharedTempDir, tempDir } from '../support/tmp.js';

const WARNING = 'drctl: the repository is on a read-only filesystem - reading it without a lock';

let root = '';
let repo = '';
let src = '';
let pointId = '';

test.before(async () => {
  root = await sharedTempDir('drctl-ro-repo-');
  repo = join(root, 'repo');
  src = join(root, 'src');
  await mkdir(join(src, 'docs'), { recursive: true });
  await writeFile(join(src, 'docs', 'q3.txt'), 'quarter three\n');
  await writeFile(join(src, 'big.bin'), Buffer.alloc(3 << 20, 7));
  for (const args of [['init', '--repo', repo], ['backup', '--repo', repo, '--files', src, '--name', 'src']]) {
    const r = await drctl(args);
    if (r.code !== 0) throw new Error(r.stderr);
  }
  pointId = json<{ id: string }[]>(await drctl(['points', '--repo', repo, '--json']))[0]?.id ?? '';
});

test.after.always(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

/** The repository seen through a read-only bind mount, as a read-only volume shows it. */
function readOnlyView(t: ExecutionContext, dir: string): string | undefined {
  if (process.getuid?.() !== 0) {
    if (process.env.DR_REQUIRE_INTEGRATION === '1') t.fail('needs root for a read-only bind mount');
    else t.pass();
    return undefined;
  }
  const view = join(dir, 'ro');
  execFileSync('mkdir', [view]);
  execFileSync('mount', ['--bind', repo, view]);
  t.teardown(() => void execFileSync('umount', [view]));
  execFileSync('mount', ['-o', 'remount,ro,bind', view]);
  return view;
}

async function files(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true })).sort();
}

test('a read-only repository: ls, points, check and check --read-data read it without a lock, saying so in one line', async (t) => {
  const dir = await tempDir(t);
  const ro = readOnlyView(t, dir);
  if (!ro) return;
  const before = await files(repo);
  const ls = await drctl(['ls', 'latest', '--repo', ro]);
  t.is(ls.code, 0, ls.stderr);
  t.is(ls.stdout, 'big.bin\ndocs/\ndocs/q3.txt\n');
  t.is(ls.stderr, `${WARNING}\n`);

  const points = await drctl(['points', '--repo', ro, '--json']);
  t.is(points.code, 0, points.stderr);
  t.deepEqual(json<{ id: string }[]>(points).map((p) => p.id), [pointId]);

  for (const args of [['check'], ['check', '--read-data']]) {
    const r = await drctl([...args, '--repo', ro, '--json']);
    t.is(r.code, 0, r.stderr);
    t.true(json<{ ok: boolean }>(r).ok, 'stdout is the one JSON document');
    t.is(r.stderr, `${WARNING}\n`, 'the warning goes to stderr, once');
  }
  t.deepEqual(await files(repo), before, 'nothing was written');
});

test('a read-only repository restores, to a folder and to an archive', async (t) => {
  const dir = await tempDir(t);
  const ro = readOnlyView(t, dir);
  if (!ro) return;
  const out = join(dir, 'out');
  const r = await drctl(['restore', 'latest', '--repo', ro, '--to', out]);
  t.is(r.code, 0, r.stderr);
  t.is(r.stderr, `${WARNING}\n`);
  t.is(await readFile(join(out, 'docs', 'q3.txt'), 'utf8'), 'quarter three\n');
  t.true((await readFile(join(out, 'big.bin'))).equals(await readFile(join(src, 'big.bin'))));
  const tar = await drctl(['restore', 'latest', '--repo', ro, '--to', join(dir, 'src.tar'), '--json']);
  t.is(tar.code, 0, tar.stderr);
  t.is(json<{ files: number }>(tar).files, 2);
  t.is(execFileSync('tar', ['-xOf', join(dir, 'src.tar'), 'docs/q3.txt'], { encoding: 'utf8' }), 'quarter three\n');
});

test('commands that write fail on a read-only repository in one line saying so, exit 1', async (t) => {
  const dir = await tempDir(t);
  const ro = readOnlyView(t, dir);
  if (!ro) return;
  for (const args of [
    ['backup', '--files', src, '--name', 'src'],
    ['forget', '--name', 'src', '--keep-last', '1'],
    ['prune'],
    ['repair', 'index'],
  ]) {
    const r = await drctl([...args, '--repo', ro]);
    t.is(r.code, 1, `${args[0]}: ${r.stderr}`);
    const lines = r.stderr.trim().split('\n');
    t.is(lines.length, 1, r.stderr);
    t.regex(lines[0] as string, new RegExp(`^drctl: cannot lock repository ${ro} for \`drctl ${args[0]}.*\` - its filesystem is read-only \\(EROFS\\)`));
    t.regex(lines[0] as string, /mount it read-write/);
    t.notRegex(r.stderr, /reading it without a lock|bug/);
  }
});
