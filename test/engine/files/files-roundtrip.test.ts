import test from 'ava';
import { appendFile, chmod, lstat, mkdir, open, readFile, readdir, symlink, utimes, writeFile } from 'node:fs/promises';
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { backupFolder } from '../../../engine/backup/files-backup.js';
import { restoreFiles } from '../../../engine/restore/files-restore.js';
import { walkTree } from '../../../engine/repo/tree.js';
import { SourceError, UsageError } from '../../../engine/errors.js';
import { fixedClock, systemClock } from '../../../engine/runtime/clock.js';
import { assertSameTree, bytes, isRoot, makeTree, mkfifo, reopen, setup, snapshot } from './fixtures.js';

const execFileP = promisify(execFile);

test('a generated tree restores byte-identical, with modes, mtimes, links and hard links', async (t) => {
  const { dir, repo, src } = await setup(t);
  await makeTree(src);
  const before = await snapshot(src);
  const progress: number[] = [];
  const point = await backupFolder(repo, src, { name: 'tree', clock: fixedClock('2025-03-04T10:00:00Z'), onProgress: (p) => progress.push(p.doneBytes) });

  t.is(point.kind, 'files');
  t.is(point.time, '2025-03-04T10:00:00.000Z');
  t.like(point.source, { type: 'folder', path: src });
  t.deepEqual(point.errors, []);
  t.is(point.stats.dirs, 3);
  t.is(point.stats.files, 8); // files, hard links and symlinks
  t.is(point.stats.logicalBytes, 2.5 * 1024 * 1024 + 10 + 18 + 11);
  t.is(progress.at(-1), point.stats.logicalBytes);

  const dest = join(dir, 'out');
  const r = await restoreFiles(await reopen(repo), point, dest, {});
  t.like(r, { files: 8, dirs: 3, bytes: point.stats.logicalBytes, dest });
  assertSameTree(t, await snapshot(dest), before, [['hard1', 'hard2']]);
});

test('mtimes before 1970 and far in the future restore as they were (files small and large, folders, symlinks), within a microsecond', async (t) => {
  const { dir, repo, src } = await setup(t);
  await mkdir(join(src, 'd'));
  await writeFile(join(src, 'd', 'old'), 'small\n');
  await writeFile(join(src, 'big'), bytes(3 * 1024 * 1024, 7));
  await writeFile(join(src, 'future'), 'later\n');
  await symlink('d/old', join(src, 'ln'));
  const times: [string, string][] = [['d/old', '1960-05-05 12:00:00.123456 UTC'], ['big', '1969-12-31 23:59:59.5 UTC'], ['future', '2400-01-01 00:00:00.25 UTC'], ['ln', '1955-01-01 00:00:01 UTC'], ['d', '1950-01-01 00:00:00 UTC']];
  for (const [path, when] of times) await execFileP('touch', ['-h', '-d', when, join(src, path)]);
  const point = await backupFolder(repo, src, { name: 'old', clock: systemClock });
  const dest = join(dir, 'out');
  await restoreFiles(await reopen(repo), point, dest, {});
  for (const [path, when] of times) {
    const [a, b] = await Promise.all([lstat(join(src, path), { bigint: true }), lstat(join(dest, path), { bigint: true })]);
    const off = a.mtimeNs - b.mtimeNs;
    t.true(off >= -1000n && off <= 1000n, `${path}: ${when} (${a.mtimeNs} ns) restored as ${b.mtimeNs} ns`);
  }
});

test("the backed-up folder's own owner, mode and mtime go onto a new DEST (and with overwrite); an existing DEST keeps its own", async (t) => {
  const { dir, repo, src } = await setup(t);
  await writeFile(join(src, 'a'), 'a');
  await chmod(src, 0o710);
  await utimes(src, new Date('2005-05-05T00:00:00Z'), new Date('2005-05-05T00:00:00Z'));
  if (isRoot) execFileSync('chown', ['4242:4343', src]);
  const point = await backupFolder(repo, src, { name: 'root', clock: systemClock });
  t.like(point.source.root, { mode: 0o710, ...(isRoot ? { uid: 4242, gid: 4343 } : {}) });
  const fresh = join(dir, 'fresh');
  await restoreFiles(await reopen(repo), point, fresh, {});
  const st = await lstat(fresh);
  t.is(st.mode & 0o7777, 0o710);
  t.is(st.mtime.toISOString(), '2005-05-05T00:00:00.000Z');
  if (isRoot) t.deepEqual([st.uid, st.gid], [4242, 4343]);
  const existing = join(dir, 'existing');
  await mkdir(existing, { mode: 0o755 });
  await chmod(existing, 0o755);
  await restoreFiles(await reopen(repo), point, existing, {});
  t.is((await lstat(existing)).mode & 0o7777, 0o755, 'a folder that was there keeps its mode');
  await restoreFiles(await reopen(repo), point, existing, { overwrite: true });
  t.is((await lstat(existing)).mode & 0o7777, 0o710, 'with overwrite it is replaced too');
});

test('sparse files restore sparse: zero blocks are not written, whether the file is one blob or many', async (t) => {
  const { dir, repo, src } = await setup(t);
  for (const [name, size] of [['one-blob', 5 * 1024 * 1024], ['chunked', 40 * 1024 * 1024]] as const) {
    const fh = await open(join(src, name), 'w');
    await fh.truncate(size);
    await fh.write(Buffer.from('data'), 0, 4, 3_000_000);
    await fh.close();
  }
  const point = await backupFolder(repo, src, { name: 'sparse', clock: systemClock });
  const dest = join(dir, 'out');
  await restoreFiles(await reopen(repo), point, dest, {});
  for (const name of ['one-blob', 'chunked']) {
    const [a, b] = [await readFile(join(src, name)), await readFile(join(dest, name))];
    t.true(a.equals(b), name);
    const st = await lstat(join(dest, name));
    t.true(st.blocks * 512 <= 64 * 1024, `${name}: ${st.blocks * 512} bytes allocated for ${st.size}`);
  }
});

test('walkTree visits every tree blob and entry with its path', async (t) => {
  const { repo, src } = await setup(t);
  await makeTree(src);
  const point = await backupFolder(repo, src, { name: 'tree', clock: systemClock });
  const trees: string[] = [];
  const entries = new Map<string, string>();
  for await (const item of walkTree(repo, point.tree!)) {
    if (item.treeHash) trees.push(item.path);
    if (item.entry) entries.set(item.path, item.entry.type);
  }
  t.deepEqual(trees, ['', 'a', 'a/b', 'empty']);
  t.is(entries.get('a/b/deep.txt'), 'file');
  t.is(entries.get('hard2'), 'hardlink');
  t.is(entries.get('abs-link'), 'symlink');
  t.is(entries.size, 11);
});

test('a second backup reads only the changed file and restores its new content', async (t) => {
  const { dir, repo, src } = await setup(t);
  for (let i = 0; i < 20; i++) await writeFile(join(src, `f${i}.txt`), bytes(1000 + i, i));
  await mkdir(join(src, 'sub'));
  await writeFile(join(src, 'sub', 'big.bin'), bytes(1_500_000, 99));
  const p1 = await backupFolder(repo, src, { name: 'docs', clock: systemClock });
  t.is(p1.stats.unchangedFiles, 0);

  await appendFile(join(src, 'f7.txt'), 'changed\n');
  const p2 = await backupFolder(repo, src, { name: 'docs', clock: systemClock });
  t.is(p2.parent, p1.id); // found by name and folder
  t.is(p2.stats.unchangedFiles, 20);
  t.is(p2.stats.readBytes, 1007 + 8);
  t.is(p2.stats.logicalBytes, p1.stats.logicalBytes + 8);
  t.true(p2.stats.newBytes < 1015 + 10_000, `new bytes ${p2.stats.newBytes} (one file + trees)`);

  const dest = join(dir, 'out');
  await restoreFiles(repo, p2, dest, {});
  t.is(await readFile(join(dest, 'f7.txt'), 'utf8'), bytes(1007, 7).toString('utf8') + 'changed\n');
  t.true((await readFile(join(dest, 'sub', 'big.bin'))).equals(bytes(1_500_000, 99)));

  // An explicit parent works the same; a touched mtime alone makes a file count as changed.
  await utimes(join(src, 'f3.txt'), new Date(1e12), new Date(1e12));
  const p3 = await backupFolder(repo, src, { name: 'docs', clock: systemClock, parent: p2 });
  t.is(p3.stats.unchangedFiles, 20);
  t.is(p3.stats.readBytes, 1003);
  t.is(p3.stats.newBytes > 0, true); // only the tree blob changes: same content, new mtime
});

test('special and unreadable files are listed in errors; the rest is backed up and restores', async (t) => {
  const { dir, repo, src } = await setup(t);
  await writeFile(join(src, 'ok.txt'), 'fine\n');
  await mkdir(join(src, 'keep'));
  await writeFile(join(src, 'keep', 'inner.txt'), 'inner\n');
  mkfifo(join(src, 'pipe'));
  if (!isRoot) {
    // As root EACCES never happens; a private folder is only a test for other users.
    await mkdir(join(src, 'private'));
    await writeFile(join(src, 'private', 'secret'), 'x');
    await chmod(join(src, 'private'), 0o000);
    t.teardown(() => chmod(join(src, 'private'), 0o700));
  }
  const point = await backupFolder(repo, src, { name: 'mixed', clock: systemClock });
  const expected = [{ path: 'pipe', message: 'special file (fifo), not backed up' }];
  if (!isRoot) expected.push({ path: 'private', message: 'permission denied' });
  t.deepEqual(point.errors, expected.sort((a, b) => a.path.localeCompare(b.path)));

  const dest = join(dir, 'out');
  await restoreFiles(repo, point, dest, {});
  t.deepEqual((await readdir(dest)).sort(), ['keep', 'ok.txt']);
  t.is(await readFile(join(dest, 'keep', 'inner.txt'), 'utf8'), 'inner\n');
});

test('a missing or non-folder source is a SourceError and writes nothing', async (t) => {
  const { dir, repo } = await setup(t);
  await t.throwsAsync(backupFolder(repo, join(dir, 'nope'), { name: 'x', clock: systemClock }), { instanceOf: SourceError, message: /nope/ });
  await writeFile(join(dir, 'file'), 'x');
  await t.throwsAsync(backupFolder(repo, join(dir, 'file'), { name: 'x', clock: systemClock }), { instanceOf: SourceError, message: /not a directory/ });
  t.deepEqual((await repo.listPoints()).points, []);
  t.is(repo.index.size, 0);
});

test('an aborted backup throws InterruptedError and commits nothing', async (t) => {
  const { repo, src } = await setup(t);
  for (let i = 0; i < 200; i++) await writeFile(join(src, `f${i}`), bytes(5000, i));
  const ac = new AbortController();
  ac.abort();
  await t.throwsAsync(backupFolder(repo, src, { name: 'x', clock: systemClock, signal: ac.signal }), { code: 'INTERRUPTED' });
  t.deepEqual((await repo.listPoints()).points, []);
});

test('--include restores only the chosen paths (and the folders leading to them)', async (t) => {
  const { dir, repo, src } = await setup(t);
  await makeTree(src);
  const point = await backupFolder(repo, src, { name: 'tree', clock: systemClock });
  const dest = join(dir, 'out');
  const r = await restoreFiles(repo, point, dest, { include: ['a/b', '/zero.txt', 'hard2'] });
  const snap = await snapshot(dest);
  t.deepEqual([...snap.keys()], ['a', 'a/b', 'a/b/deep.txt', 'hard2', 'zero.txt']);
  t.is(snap.get('a')?.mode, 0o750); // the leading folder keeps its metadata
  t.is(await readFile(join(dest, 'hard2'), 'utf8'), 'same inode\n'); // its twin was not restored: a copy
  t.like(r, { files: 3, dirs: 2 });
});

test('an unknown --include path is a usage error naming it; nothing is written', async (t) => {
  const { dir, repo, src } = await setup(t);
  await makeTree(src);
  const point = await backupFolder(repo, src, { name: 'tree', clock: systemClock });
  const dest = join(dir, 'out');
  const e = await t.throwsAsync(restoreFiles(repo, point, dest, { include: ['a', 'no/such'] }), { instanceOf: UsageError });
  t.regex(e!.message, /no\/such/);
  t.is(e!.exitCode, 2);
  await t.throwsAsync(lstat(dest), { code: 'ENOENT' });
  await t.throwsAsync(restoreFiles(repo, point, dest, { include: ['zero.txt/x'] }), { instanceOf: UsageError });
  await t.throwsAsync(restoreFiles(repo, point, dest, { include: ['../etc'] }), { instanceOf: UsageError });
});
