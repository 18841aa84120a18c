/**
 * Files of many chunks spread over many packs: their chunks are written at their offsets by
 * the writer threads into descriptors the restore keeps open (closing idle ones above a
 * limit and reopening them), and each file gets its metadata after its last chunk.
 */
import test from 'ava';
import { readFile, writeFile, utimes, chmod, chown, lstat, mkdir, rm, truncate, open as openFile } from 'node:fs/promises';
import { join } from 'node:path';
import { backupFolder } from '../../../engine/backup/files-backup.js';
import { restoreFiles } from '../../../engine/restore/files-restore.js';
import { backupImage } from '../../../engine/backup/image-backup.js';
import { restoreImage } from '../../../engine/restore/image-restore.js';
import { IntegrityError } from '../../../engine/errors.js';
import { readTree } from '../../../engine/repo/tree.js';
import { systemClock } from '../../../engine/runtime/clock.js';
import { assertSameTree, bytes, isRoot, reopen, setup, snapshot } from './fixtures.js';

const KiB = 1024;
/** Small chunks and packs, so 40 KiB files have several chunks and one backup many packs. */
const config = { fileChunking: { minBytes: 4 * KiB, avgBytes: 8 * KiB, maxBytes: 32 * KiB, seed: 7 }, packTargetBytes: 64 * KiB };
const FILES = 40;

/** Pseudo-random content with an all-zero stretch in the middle (written as holes). */
function content(i: number, gen: number): Buffer {
  const b = Buffer.concat([bytes(16 * KiB, i), Buffer.alloc(12 * KiB), bytes(12 * KiB, 1000 + i)]);
  if (gen === 2) return Buffer.concat([bytes(3 * KiB, 5000 + i), b.subarray(3 * KiB), bytes(9 * KiB, 9000 + i)]);
  return b;
}

async function writeGen(src: string, gen: number): Promise<void> {
  for (let i = 0; i < FILES; i++) {
    const p = join(src, `f${String(i).padStart(3, '0')}.bin`);
    await writeFile(p, content(i, gen));
    await chmod(p, 0o640 + (i % 2) * 0o004);
    await utimes(p, 1_700_000_000 + i + gen * 100, 1_700_000_000 + i + gen * 100);
  }
}

test('multi-chunk files over many packs restore byte-identical with their metadata, with at most one descriptor kept open', async (t) => {
  const { dir, repo, src } = await setup(t, config);
  await writeGen(src, 1);
  const gen1 = await snapshot(src);
  const p1 = await backupFolder(repo, src, { name: 'm', clock: systemClock });
  await writeGen(src, 2); // new first and last chunks: every file now has chunks in packs of both backups
  const gen2 = await snapshot(src);
  const p2 = await backupFolder(await reopen(repo), src, { name: 'm', clock: systemClock });
  t.true(p2.stats.newBytes < 0.7 * p2.stats.logicalBytes, 'the second backup reuses the middle chunks');

  for (const maxOpenFiles of [1, undefined]) {
    const dest = join(dir, `out-${maxOpenFiles ?? 'default'}`);
    const r = await restoreFiles(await reopen(repo), p2, dest, { maxOpenFiles });
    t.is(r.bytes, p2.stats.logicalBytes);
    assertSameTree(t, await snapshot(dest), gen2);
    for (let i = 0; i < FILES; i += 7) {
      const name = `f${String(i).padStart(3, '0')}.bin`;
      t.true((await readFile(join(dest, name))).equals(content(i, 2)), name);
    }
  }

  // The older generation over it with --overwrite: every file replaced, not written through.
  const dest = join(dir, 'out-1');
  const keep = await openFile(join(dest, 'f000.bin'));
  await restoreFiles(await reopen(repo), p1, dest, { overwrite: true, maxOpenFiles: 2 });
  assertSameTree(t, await snapshot(dest), gen1);
  t.true((await keep.readFile()).equals(content(0, 2)), 'the replaced file (still open here) kept its old bytes');
  await keep.close();
});

test('a damaged chunk of a multi-chunk file fails the restore naming the blob and its pack', async (t) => {
  const { dir, repo, src } = await setup(t, config);
  await writeFile(join(src, 'big.bin'), Buffer.concat([bytes(200 * KiB, 3), Buffer.alloc(40 * KiB), bytes(60 * KiB, 4)]));
  const p = await backupFolder(repo, src, { name: 'd', clock: systemClock });
  const r2 = await reopen(repo);
  const chunks = (await readTree(r2, p.tree!)).entries[0]!.content!;
  t.true(chunks.length >= 4, `${chunks.length} chunks`);
  const loc = r2.index.get(chunks[2]!)!;
  const packPath = join(repo.location, 'data', loc.pack.slice(0, 2), loc.pack);
  const bytesOnDisk = await readFile(packPath);
  const at = loc.offset + (loc.length >> 1);
  bytesOnDisk.writeUInt8(bytesOnDisk.readUInt8(at) ^ 0x40, at);
  await writeFile(packPath, bytesOnDisk);
  const e = await t.throwsAsync(restoreFiles(await reopen(repo), p, join(dir, 'out'), {}), { instanceOf: IntegrityError });
  t.regex(e!.message, new RegExp(`blob ${'[0-9a-f]{12}'} in pack ${loc.pack.slice(0, 12)} .*damaged pack`));
});

test('a missing or truncated pack fails a file restore and an image restore naming the pack', async (t) => {
  const { dir, repo, src } = await setup(t, config);
  await writeFile(join(src, 'big.bin'), bytes(300 * KiB, 9));
  const p = await backupFolder(repo, src, { name: 'd', clock: systemClock });
  const img = join(dir, 'disk.img');
  await writeFile(img, bytes(2 * 1024 * KiB, 11));
  const ip = await backupImage(repo, img, { name: 'img', clock: systemClock, hostname: 'h' });
  const r2 = await reopen(repo);
  const fileLoc = r2.index.get((await readTree(r2, p.tree!)).entries[0]!.content![1]!)!;
  const packPath = (pack: string) => join(repo.location, 'data', pack.slice(0, 2), pack);

  await truncate(packPath(fileLoc.pack), fileLoc.offset + 10);
  await t.throwsAsync(restoreFiles(await reopen(repo), p, join(dir, 'out1'), {}), { instanceOf: IntegrityError, message: new RegExp(`pack ${fileLoc.pack.slice(0, 12)} is shorter than its index says`) });
  await rm(packPath(fileLoc.pack));
  await t.throwsAsync(restoreFiles(await reopen(repo), p, join(dir, 'out2'), {}), { instanceOf: IntegrityError, message: new RegExp(`pack ${fileLoc.pack.slice(0, 12)} is missing`) });

  const disk = ip.disks![0]!;
  const listPack = r2.index.get(disk.lists[0]!)!.pack;
  const list = await r2.readBlob(disk.lists[0]!);
  // A data chunk in another pack than the chunk list itself.
  const k = [...Array(list.length / 32).keys()].find((i) => r2.index.get(list.subarray(i * 32, i * 32 + 32).toString('hex'))!.pack !== listPack)!;
  const imgLoc = r2.index.get(list.subarray(k * 32, k * 32 + 32).toString('hex'))!;
  await rm(packPath(imgLoc.pack), { force: true });
  await t.throwsAsync(restoreImage(await reopen(repo), ip, join(dir, 'out.img'), {}), { instanceOf: IntegrityError, message: new RegExp(`pack ${imgLoc.pack.slice(0, 12)} is missing: disk disk.img bytes \\d+-\\d+ cannot be restored`) });
});

test('files restored under a setgid folder keep their recorded group, not the inherited one', async (t) => {
  if (!isRoot) {
    t.log('needs root (to give the folder another group)');
    t.pass();
    return;
  }
  const { dir, repo, src } = await setup(t, config);
  await writeFile(join(src, 'small.txt'), 'one chunk');
  await writeFile(join(src, 'big.bin'), bytes(120 * KiB, 4));
  const p = await backupFolder(repo, src, { name: 'g', clock: systemClock });
  const parent = join(dir, 'shared');
  await mkdir(parent);
  await chown(parent, 0, 4242);
  await chmod(parent, 0o2775); // new folders and files below take group 4242
  const dest = join(parent, 'out');
  await restoreFiles(await reopen(repo), p, dest, {});
  for (const f of ['small.txt', 'big.bin']) {
    const st = await lstat(join(dest, f));
    t.is(st.gid, process.getegid!(), `${f} keeps the group it was backed up with`);
  }
  await mkdir(join(parent, 'probe'));
  t.is((await lstat(join(parent, 'probe'))).gid, 4242, 'a new folder there inherits the group (so the check is real)');
  t.is((await lstat(dest)).gid, (await lstat(src)).gid, 'DEST itself gets the group of the folder that was backed up');
});
