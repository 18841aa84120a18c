/**
 * Packs are filled by copying blobs into 1 MiB segments that are written as they fill and
 * reused once written, and the codec workers reply in buffers the main thread hands back once
 * it has copied them. Reuse must never let a later write reach bytes that are still to be
 * written or hashed: backups of many packs, full and hash-first, must pass check --read-data
 * and restore byte-identical.
 */
import test from 'ava';
import { readFile, readdir, writeFile, open as openFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { PackStream, SEGMENT_BYTES, SegmentPool } from '../../../engine/repo/pack-buffer.js';
import { localTarget } from '../../../targets/local/local-target.js';
import type { ObjectUpload } from '../../../targets/types.js';
import { tempDir } from '../../support/tmp.js';
import { backupImage } from '../../../engine/backup/image-backup.js';
import { restoreImage } from '../../../engine/restore/image-restore.js';
import { checkRepository } from '../../../engine/repo/check.js';
import { walkFilesForCheck } from '../../../engine/restore/files-check.js';
import { systemClock } from '../../../engine/runtime/clock.js';
import { bytes, reopen, setup } from '../files/fixtures.js';

const MiB = 1024 * 1024;

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test('a pack stream writes exactly the bytes appended, across segment boundaries, under the hash of its tail', async (t) => {
  const target = await localTarget.open({ path: join(await tempDir(t), 'repo') });
  const pool = new SegmentPool();
  const failures: unknown[] = [];
  const pieces = [bytes(10, 1), bytes(SEGMENT_BYTES - 5, 2), bytes(20, 3), bytes(3 * SEGMENT_BYTES + 7, 4), Buffer.alloc(0)];
  const pack = new PackStream(target.create('a new pack'), pool, (e) => failures.push(e));
  for (const p of pieces) pack.append(p);
  t.is(pack.bytes, pieces.reduce((a, p) => a + p.length, 0));
  const tail = Buffer.from('tail');
  const id = await pack.finish(tail, (h) => `data/${h}`);
  const stored = await target.get(`data/${id}`);
  t.true(stored.equals(Buffer.concat([...pieces, tail])));
  t.is(id, sha256(tail), 'named by its header and trailer (FORMAT.md, Packs)');
  t.deepEqual(failures, []);
  t.deepEqual(await readdir(join(target.location, 'tmp')), [], 'no temp file left');
});

test('a segment is reused only once its write is done, and at most maxBusy segments wait for a slow target', async (t) => {
  const target = await localTarget.open({ path: join(await tempDir(t), 'repo') });
  const pool = new SegmentPool(3);
  let writing = 0;
  let most = 0;
  const inner = target.create();
  // The target reads the bytes only after a delay: a segment reused too early would be written with the next bytes.
  const slow: ObjectUpload = {
    write: async (parts) => {
      most = Math.max(most, ++writing);
      await new Promise((r) => setTimeout(r, 20));
      await inner.write(parts);
      writing--;
    },
    commit: (key, opts) => inner.commit(key, opts),
    abort: () => inner.abort(),
  };
  const pack = new PackStream(slow, pool, (e) => t.fail(String(e)));
  const pieces: Buffer[] = [];
  for (let k = 0; k < 12; k++) {
    await pool.room(); // what the blob writer does before each append
    const p = bytes(SEGMENT_BYTES / 2 + 4096 * k, 100 + k);
    pieces.push(p);
    pack.append(p);
  }
  const id = await pack.finish(Buffer.alloc(0), (h) => `data/${h}`);
  t.true((await target.get(`data/${id}`)).equals(Buffer.concat(pieces)));
  t.true(most <= 3 + 1, `${most} writes at once (at most 3 segments and the tail)`);
});

test('a failed write is reported at once, the pack is not committed and its temp file is removed', async (t) => {
  const target = await localTarget.open({ path: join(await tempDir(t), 'repo') });
  const inner = target.create();
  const failing: ObjectUpload = {
    write: () => Promise.reject(new Error('EIO on the volume')),
    commit: (key, opts) => inner.commit(key, opts),
    abort: () => inner.abort(),
  };
  const failures: unknown[] = [];
  const pack = new PackStream(failing, new SegmentPool(), (e) => failures.push(e));
  pack.append(bytes(2 * SEGMENT_BYTES, 7));
  await new Promise((r) => setTimeout(r, 10));
  t.is(failures.length, 1, 'the writer hears of the failure before the pack is sealed');
  await t.throwsAsync(pack.finish(Buffer.alloc(0), (h) => `data/${h}`), { message: /EIO on the volume/ });
  await pack.abort();
  t.deepEqual(await readdir(join(target.location, 'tmp')), []);
  t.deepEqual(await readdir(target.location).then((n) => n.filter((x) => x !== 'tmp')), [], 'nothing committed');
});

test('image backups of many packs, full and hash-first, pass check --read-data and restore byte-identical', async (t) => {
  const { dir, repo } = await setup(t, { packTargetBytes: MiB / 2 }); // ~20 packs for the first backup
  const img = join(dir, 'disk.img');
  // Half incompressible, half compressible, and an all-zero stretch.
  const text = Buffer.from('drctl restores what was backed up, byte for byte. '.repeat(1 << 15));
  const gen1 = Buffer.concat([bytes(10 * MiB, 1), text.subarray(0, 10 * MiB), Buffer.alloc(4 * MiB)]);
  await writeFile(img, gen1);
  const p1 = await backupImage(repo, img, { name: 'disk', clock: systemClock, hostname: 'h' });

  // Scattered changes: the second backup hashes first and stores only the new chunks.
  const gen2 = Buffer.from(gen1);
  for (let off = 512 * 1024; off < gen2.length; off += 3 * MiB + 4096) bytes(64 * 1024, off).copy(gen2, off);
  const h = await openFile(img, 'r+');
  await h.write(gen2, 0, gen2.length, 0);
  await h.close();
  const p2 = await backupImage(await reopen(repo), img, { name: 'disk', clock: systemClock, hostname: 'h' });
  t.true(p2.stats.newBytes < 0.3 * p2.stats.logicalBytes, 'the second backup stores only what changed');

  const report = await checkRepository(await reopen(repo), { readData: true, walkFiles: walkFilesForCheck });
  t.true(report.ok, JSON.stringify(report.problems));
  t.true(report.packs >= 8, `${report.packs} packs: enough that segments and reply buffers are reused`);
  for (const [point, want] of [[p1, gen1], [p2, gen2]] as const) {
    const out = join(dir, `out-${point.id.slice(0, 8)}.img`);
    await restoreImage(await reopen(repo), point, out);
    t.true((await readFile(out)).equals(want), `point ${point.id.slice(0, 12)} restores byte-identical`);
  }
});
