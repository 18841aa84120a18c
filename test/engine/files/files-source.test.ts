/**
 * The worker side of file-level backup seen through files-source: chunk boundaries of a large
 * file read window by window are those of one pass of the chunker over the whole file (so old
 * and new backups dedup), and a file that changes between lstat and the worker's read is
 * handled as it was when the main thread read it.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { writeFile, truncate, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { findCut, type CdcParams } from '../../../engine/repo/chunker-cdc.js';
import { backupFolder } from '../../../engine/backup/files-backup.js';
import { ItemSkipped, SmallFileEncoder, describeFsError, storeChunkedFile } from '../../../engine/backup/files-source.js';
import { Slots } from '../../../engine/runtime/concurrency.js';
import { systemClock } from '../../../engine/runtime/clock.js';
import { readTree } from '../../../engine/repo/tree.js';
import { bytes, setup } from './fixtures.js';

const CDC: CdcParams = { minBytes: 2048, avgBytes: 8192, maxBytes: 32768, seed: 7 };

function expectedHashes(data: Buffer): string[] {
  const out: string[] = [];
  for (let off = 0; off < data.length;) {
    const n = findCut(data.subarray(off), CDC);
    out.push(createHash('sha256').update(data.subarray(off, off + n)).digest('hex'));
    off += n;
  }
  return out;
}

test('a large file read in windows of maxBytes gets the chunks of one pass of the chunker', async (t) => {
  const { repo, src } = await setup(t, { fileChunking: CDC });
  const data = Buffer.concat([bytes(600_000, 1), Buffer.alloc(100_000), bytes(300_001, 2)]);
  await writeFile(join(src, 'big.bin'), data);
  const writer = repo.newWriter();
  for (const window of [CDC.maxBytes, 3 * CDC.maxBytes + 5]) {
    const stored = await storeChunkedFile(writer, join(src, 'big.bin'), CDC, 1, window);
    t.is(stored.bytes, data.length);
    t.deepEqual(stored.hashes, expectedHashes(data), `windows of ${window}`);
  }
  await writer.finish();
  t.true(repo.index.has(expectedHashes(data)[0]!));
});

test('backupFolder records a large file as the list of chunks one pass of the chunker gives', async (t) => {
  const { repo, src } = await setup(t, { fileChunking: CDC });
  const data = bytes(400_000, 3);
  await writeFile(join(src, 'big.bin'), data);
  const point = await backupFolder(repo, src, { name: 'x', clock: systemClock });
  const tree = await readTree(repo, point.tree!, '');
  t.deepEqual(tree.entries.find((e) => e.name === 'big.bin')?.content, expectedHashes(data));
});

test('a small file that vanished or shrank after lstat: skipped as vanished, or read to its new end', async (t) => {
  const { repo, src } = await setup(t);
  const writer = repo.newWriter();
  const encoder = new SmallFileEncoder(1);
  await writeFile(join(src, 'gone'), 'x'.repeat(100));
  await unlink(join(src, 'gone'));
  await writeFile(join(src, 'shrunk'), bytes(5000, 4));
  await truncate(join(src, 'shrunk'), 3000);
  await writeFile(join(src, 'emptied'), 'abc');
  await truncate(join(src, 'emptied'), 0);
  const [gone, shrunk, emptied] = await Promise.allSettled([
    encoder.store(writer, join(src, 'gone'), 100),
    encoder.store(writer, join(src, 'shrunk'), 5000),
    encoder.store(writer, join(src, 'emptied'), 3),
  ]);
  t.like(gone, { status: 'rejected', reason: { message: 'vanished during the backup' } });
  t.true(gone.status === 'rejected' && gone.reason instanceof ItemSkipped);
  t.deepEqual(shrunk, { status: 'fulfilled', value: { hashes: [createHash('sha256').update(bytes(5000, 4).subarray(0, 3000)).digest('hex')], bytes: 3000 } });
  t.deepEqual(emptied, { status: 'fulfilled', value: { hashes: [], bytes: 0 } });
  await writer.finish();
});

test('a large file that vanished before it was opened is listed in errors; the rest is stored', async (t) => {
  const { repo, src } = await setup(t, { fileChunking: CDC });
  const writer = repo.newWriter();
  await t.throwsAsync(storeChunkedFile(writer, join(src, 'nope.bin'), CDC, 1, CDC.maxBytes), { instanceOf: ItemSkipped, message: 'vanished during the backup' });
});

test('identical small files in one batch are stored once', async (t) => {
  const { repo, src } = await setup(t);
  const same = bytes(3000, 5);
  for (let i = 0; i < 40; i++) await writeFile(join(src, `copy${i}`), same);
  const point = await backupFolder(repo, src, { name: 'dups', clock: systemClock });
  t.deepEqual(point.errors, []);
  t.is(point.stats.files, 40);
  t.is(point.stats.logicalBytes, 40 * 3000);
  t.true(point.stats.newBytes < 3000 + 20_000, `new bytes ${point.stats.newBytes}: one copy plus the tree`);
});

test('Slots by weight: waiters are served in order, and one larger than the capacity still gets through alone', async (t) => {
  const slots = new Slots(8);
  const order: string[] = [];
  t.is(await slots.acquire(5), 5);
  const b = slots.acquire(5).then((n) => order.push(`b${n}`));
  const c = slots.acquire(1).then((n) => order.push(`c${n}`)); // fits, but waits behind b
  const d = slots.acquire(100).then((n) => order.push(`d${n}`));
  await Promise.resolve();
  t.deepEqual(order, []);
  slots.release(5);
  await Promise.all([b, c]);
  t.deepEqual(order, ['b5', 'c1']);
  slots.release(5);
  slots.release(1);
  await d;
  t.deepEqual(order, ['b5', 'c1', 'd8']);
});

test('describeFsError: what a skipped item says, also for the plain { code, message } errors the codec workers send', (t) => {
  t.is(describeFsError({ code: 'EISDIR', message: 'EISDIR: illegal operation on a directory, read' }), 'replaced by a folder during the backup');
  t.is(describeFsError({ code: 'ENOTDIR', message: 'x' }), 'it or a folder above it was replaced by a file during the backup');
  t.is(describeFsError({ code: 'EIO', message: 'EIO: i/o error, read' }), 'EIO: i/o error, read');
  t.is(describeFsError(Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' })), 'permission denied');
});
