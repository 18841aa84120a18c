/**
 * A folder restore stopped part way (interrupted, or a file made by someone else in its way)
 * and --overwrite replacing each kind of entry: only complete files are left under their own
 * names, the error says what is missing and how to finish, and no temporary name stays behind.
 */
import test from 'ava';
import { link, mkdir, readFile, readdir, symlink, writeFile } from 'node:fs/promises';
import { writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { backupFolder } from '../../../engine/backup/files-backup.js';
import { restoreFiles } from '../../../engine/restore/files-restore.js';
import { DestinationWriteError, InterruptedError } from '../../../engine/errors.js';
import { systemClock } from '../../../engine/runtime/clock.js';
import { assertSameTree, reopen, setup, snapshot, type Snap } from './fixtures.js';

const KiB = 1024;
/** Small chunks and packs: 400 KiB files have several chunks, and the tree spans many packs and progress reports. */
const config = { fileChunking: { minBytes: 16 * KiB, avgBytes: 32 * KiB, maxBytes: 128 * KiB, seed: 7 }, packTargetBytes: 256 * KiB };

/** 10 folders of 20 small files, 3 of 100 KiB and one of 1.5 MiB: 240 files, ~18 MiB. */
async function makeBigTree(src: string): Promise<void> {
  for (let d = 0; d < 10; d++) {
    const sub = join(src, `d${d}`);
    await mkdir(sub);
    for (let i = 0; i < 20; i++) await writeFile(join(sub, `s${i}`), randomBytes(3 * KiB), { mode: 0o640 });
    for (let i = 0; i < 3; i++) await writeFile(join(sub, `m${i}`), randomBytes(100 * KiB));
    await writeFile(join(sub, 'big'), randomBytes(1536 * KiB), { mode: 0o600 });
  }
}

/** The files of `dest` (a snapshot), each as in the source; and whether a temporary name is left. */
function assertFilesComplete(t: import('ava').ExecutionContext, dest: Map<string, Snap>, src: Map<string, Snap>): string[] {
  const files = [...dest].filter(([, s]) => s.type === 'file').map(([p]) => p);
  for (const p of files) {
    t.false(p.includes('.drctl-partial-'), `${p}: a temporary name is left`);
    const { ino: _a, mtimeMs: _b, ...want } = src.get(p) ?? ({} as Snap);
    const { ino: _c, mtimeMs: _d, ...got } = dest.get(p) as Snap;
    t.deepEqual(got, want, `${p} is complete`);
  }
  return files;
}

test('an interrupted folder restore leaves only complete files, says how many are missing and that --overwrite finishes it', async (t) => {
  const { dir, repo, src } = await setup(t, config);
  await makeBigTree(src);
  const point = await backupFolder(repo, src, { name: 'tree', clock: systemClock });
  const dest = join(dir, 'out');
  const ac = new AbortController();

  const e = await t.throwsAsync(restoreFiles(await reopen(repo), point, dest, { signal: ac.signal, onProgress: () => ac.abort() }), { instanceOf: InterruptedError });
  const m = /^interrupted - the restore to (\S+) is incomplete: (\d+) of 240 files restored, (\d+) files were not restored \(([^)]*), …\)$/.exec(e!.message);
  if (!m) return t.fail(e!.message);
  t.is(m[1], dest);
  t.regex(e!.hint ?? '', /run the same restore again with --overwrite to finish it/);
  const srcSnap = await snapshot(src);
  const left = assertFilesComplete(t, await snapshot(dest), srcSnap);
  t.is(left.length, Number(m[2]));
  t.is(Number(m[3]), 240 - left.length);
  t.true(left.length < 240, 'stopped before the end');
  for (const n of (m[4] as string).split(', ')) t.false(left.includes(n), `${n} is named as not restored`);

  await restoreFiles(await reopen(repo), point, dest, { overwrite: true });
  assertSameTree(t, await snapshot(dest), srcSnap);
});

test('a file made in the destination meanwhile by another process stops the restore, which says so and leaves that file alone', async (t) => {
  const { dir, repo, src } = await setup(t, config);
  await makeBigTree(src);
  const point = await backupFolder(repo, src, { name: 'tree', clock: systemClock });
  const srcSnap = await snapshot(src);
  const dest = join(dir, 'out');
  const theirs: string[] = [];
  // Another restore, as it were: at the first progress report it creates every file not there yet.
  const intrude = () => {
    if (theirs.length > 0) return;
    for (const [p, s] of srcSnap) {
      if (s.type !== 'file') continue;
      try {
        writeFileSync(join(dest, p), 'theirs', { flag: 'wx' });
        theirs.push(p);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
    }
  };

  const e = await t.throwsAsync(restoreFiles(await reopen(repo), point, dest, { onProgress: intrude }), { instanceOf: DestinationWriteError });
  t.regex(e!.message, new RegExp(`^cannot write restore destination ${dest} - ${dest}/\\S+ was created meanwhile by another process \\(is another restore writing to ${dest}\\?\\); \\d+ files were not restored`));
  t.regex(e!.hint ?? '', /wait for the other restore to end, then run this one again with --overwrite/);
  t.true(theirs.length > 0);
  for (const p of theirs) t.is(await readFile(join(dest, p), 'utf8'), 'theirs', `${p} is left as the other process wrote it`);
  const ours = (await snapshot(dest));
  for (const p of theirs) ours.delete(p);
  assertFilesComplete(t, ours, srcSnap);
});

test('--overwrite replaces files small, large and empty, a symlink, a hard link, and a file where a folder goes; no temporary name is left', async (t) => {
  const { dir, repo, src } = await setup(t, config);
  await writeFile(join(src, 'small'), 'new small');
  await writeFile(join(src, 'large'), randomBytes(400 * KiB));
  await writeFile(join(src, 'empty'), '');
  await symlink('small', join(src, 'sl'));
  await writeFile(join(src, 'h1'), 'linked');
  await link(join(src, 'h1'), join(src, 'h2'));
  await mkdir(join(src, 'd'));
  await writeFile(join(src, 'd', 'x'), 'in a folder');
  const point = await backupFolder(repo, src, { name: 'kinds', clock: systemClock });

  const dest = join(dir, 'out');
  await mkdir(dest);
  for (const f of ['small', 'large', 'empty', 'h1', 'd']) await writeFile(join(dest, f), 'old');
  await writeFile(join(dest, 'sl'), 'a file where a symlink goes');
  await symlink('/nonexistent', join(dest, 'h2'));
  await restoreFiles(await reopen(repo), point, dest, { overwrite: true });
  assertSameTree(t, await snapshot(dest), await snapshot(src), [['h1', 'h2']]);
  t.deepEqual((await readdir(dest)).filter((n) => n.includes('.drctl-partial-')), []);
});
