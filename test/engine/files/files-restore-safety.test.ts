import test from 'ava';
import { lstat, mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { backupFolder } from '../../../engine/backup/files-backup.js';
import { restoreFiles } from '../../../engine/restore/files-restore.js';
import type { Repository, Point } from '../../../engine/repo/index.js';
import type { TreeEntry } from '../../../engine/repo/tree.js';
import { DestinationExistsError, UnsafePathError } from '../../../engine/errors.js';
import { systemClock } from '../../../engine/runtime/clock.js';
import { makeTree, setup, snapshot, assertSameTree } from './fixtures.js';

const meta = { mode: 0o644, uid: 0, gid: 0, mtimeNs: '1700000000000000000', size: 0, ino: '1', ctimeNs: '1700000000000000000' };

/** Commit a point whose trees are written by hand, as a damaged or malicious repository could hold them. */
async function craftedPoint(repo: Repository, build: (put: (entries: Partial<TreeEntry>[]) => Promise<string>) => Promise<string>): Promise<Point> {
  const writer = repo.newWriter();
  const put = (entries: Partial<TreeEntry>[]) => writer.putRaw(Buffer.from(JSON.stringify({ v: 1, entries: entries.map((e) => ({ ...meta, ...e })) })));
  const tree = await build(put);
  await writer.finish();
  return repo.commitPoint({
    formatVersion: 1, name: 'crafted', kind: 'files', time: '2025-01-01T00:00:00.000Z', hostname: 'test',
    source: { type: 'folder', path: '/crafted' }, tree, errors: [],
    stats: { logicalBytes: 0, readBytes: 0, newBytes: 0, storedNewBytes: 0, durationMs: 0 },
  });
}

test('existing files are never overwritten without overwrite: refused before anything is written', async (t) => {
  const { dir, repo, src } = await setup(t);
  await makeTree(src);
  const point = await backupFolder(repo, src, { name: 'tree', clock: systemClock });
  const dest = join(dir, 'out');
  await restoreFiles(repo, point, dest, {});
  await writeFile(join(dest, 'a', 'b', 'deep.txt'), 'edited');
  await rm(join(dest, 'zero.txt'));
  await rm(join(dest, 'empty'), { recursive: true });

  const e = await t.throwsAsync(restoreFiles(repo, point, dest, {}), { instanceOf: DestinationExistsError });
  t.regex(e!.message, /out\/a\/b\/deep\.txt .*and 6 more/); // the first existing path, then a count
  t.is(e!.exitCode, 2);
  t.is(await readFile(join(dest, 'a', 'b', 'deep.txt'), 'utf8'), 'edited');
  await t.throwsAsync(lstat(join(dest, 'zero.txt')), { code: 'ENOENT' }); // nothing was written
  await t.throwsAsync(lstat(join(dest, 'empty')), { code: 'ENOENT' });

  await restoreFiles(repo, point, dest, { overwrite: true });
  assertSameTree(t, await snapshot(dest), await snapshot(src), [['hard1', 'hard2']]);
});

test('overwrite replaces a file by a new one: an outside file hard-linked into dest is untouched', async (t) => {
  const { dir, repo, src } = await setup(t);
  await writeFile(join(src, 'f'), 'from backup');
  const point = await backupFolder(repo, src, { name: 'x', clock: systemClock });
  const dest = join(dir, 'out');
  await mkdir(dest);
  const outside = join(dir, 'outside');
  await writeFile(outside, 'outside content');
  const { link } = await import('node:fs/promises');
  await link(outside, join(dest, 'f'));
  await restoreFiles(repo, point, dest, { overwrite: true });
  t.is(await readFile(join(dest, 'f'), 'utf8'), 'from backup');
  t.is(await readFile(outside, 'utf8'), 'outside content');
});

test("a tree holding '..' or a name with '/' is refused with UnsafePathError; nothing is written", async (t) => {
  const { dir, repo } = await setup(t);
  for (const name of ['..', 'a/../../x', '.', '']) {
    const point = await craftedPoint(repo, (put) => put([{ name, type: 'file', content: [] }]));
    const dest = join(dir, `out-${name.length}`);
    await t.throwsAsync(restoreFiles(repo, point, dest, {}), { instanceOf: UnsafePathError }, JSON.stringify(name));
    await t.throwsAsync(restoreFiles(repo, point, `${dest}.tar`, {}), { instanceOf: UnsafePathError });
    await t.throwsAsync(lstat(dest), { code: 'ENOENT' });
  }
  const dup = await craftedPoint(repo, (put) => put([{ name: 'x', type: 'file', content: [] }, { name: 'x', type: 'file', content: [] }]));
  await t.throwsAsync(restoreFiles(repo, dup, join(dir, 'dup'), {}), { instanceOf: UnsafePathError, message: /twice/ });
  const hard = await craftedPoint(repo, (put) => put([{ name: 'h', type: 'hardlink', content: [], linkTo: '../../etc/passwd' }]));
  await t.throwsAsync(restoreFiles(repo, hard, join(dir, 'hard'), {}), { instanceOf: UnsafePathError });
});

test('a crafted symlink is created last and never written through', async (t) => {
  const { dir, repo } = await setup(t);
  const outside = join(dir, 'outside');
  await mkdir(outside);
  // 'sub' is a symlink to the outside folder; a hard link names a path through it.
  const point = await craftedPoint(repo, async (put) => put([
    { name: 'h', type: 'hardlink', content: [], linkTo: 'sub/passwd' },
    { name: 'sub', type: 'symlink', target: outside, mode: 0o777 },
  ]));
  const dest = join(dir, 'out');
  await restoreFiles(repo, point, dest, {});
  t.is((await lstat(join(dest, 'sub'))).isSymbolicLink(), true);
  t.true((await lstat(join(dest, 'h'))).isFile()); // written as its own (empty) file
  t.deepEqual(await readdir(outside), []);
});

test('a symlink in the destination where a folder goes is refused, even with overwrite', async (t) => {
  const { dir, repo, src } = await setup(t);
  await mkdir(join(src, 'sub'));
  await writeFile(join(src, 'sub', 'x'), 'x');
  const point = await backupFolder(repo, src, { name: 'x', clock: systemClock });
  const dest = join(dir, 'out');
  const outside = join(dir, 'outside');
  await mkdir(dest);
  await mkdir(outside);
  await symlink(outside, join(dest, 'sub'));
  for (const overwrite of [false, true]) {
    const e = await t.throwsAsync(restoreFiles(repo, point, dest, { overwrite }), { instanceOf: UnsafePathError, message: /symbolic link/ });
    t.regex((e as UnsafePathError).hint ?? '', /in the destination, not in the point/); // the point is fine: say where to look
  }
  t.deepEqual(await readdir(outside), []);
});
