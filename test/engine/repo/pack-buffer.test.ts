/**
 * Packs are filled by copying blobs into reused 1 MiB segments, and the codec workers reply in
 * buffers the main thread hands back once it has copied them. Reuse must never let a later
 * write reach bytes that are still to be written or hashed: backups of many packs, full and
 * hash-first, must pass check --read-data and restore byte-identical.
 */
import test from 'ava';
import { readFile, writeFile, open as openFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PackBuffer, SEGMENT_BYTES, SegmentPool } from '../../../engine/repo/pack-buffer.js';
import { backupImage } from '../../../engine/backup/image-backup.js';
import { restoreImage } from '../../../engine/restore/image-restore.js';
import { checkRepository } from '../../../engine/repo/check.js';
import { walkFilesForCheck } from '../../../engine/restore/files-check.js';
import { systemClock } from '../../../engine/runtime/clock.js';
import { bytes, reopen, setup } from '../files/fixtures.js';

const MiB = 1024 * 1024;

test('a pack buffer gives back exactly the bytes appended, across segment boundaries, and reused segments hold the next pack', (t) => {
  const pool = new SegmentPool();
  const pack = new PackBuffer(pool);
  const pieces = [bytes(10, 1), bytes(SEGMENT_BYTES - 5, 2), bytes(20, 3), bytes(3 * SEGMENT_BYTES + 7, 4), Buffer.alloc(0)];
  for (const p of pieces) pack.append(p);
  const total = pieces.reduce((a, p) => a + p.length, 0);
  t.is(pack.bytes, total);
  const first = pack.take();
  t.true(Buffer.concat(first.parts).equals(Buffer.concat(pieces)));
  t.is(first.segments.length, Math.ceil(total / SEGMENT_BYTES));
  t.is(pack.bytes, 0);

  pool.give(first.segments);
  const next = [bytes(2 * SEGMENT_BYTES + 1, 5)];
  pack.append(next[0] as Buffer);
  t.true(Buffer.concat(pack.take().parts).equals(next[0] as Buffer));
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
