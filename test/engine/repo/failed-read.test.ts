/**
 * A codec worker reads, hashes and compresses several image chunks per request. When a read
 * fails half-way through a request (a disk that returns EIO), the chunks it had already
 * encoded must not lead the worker's next reply: the daemon runs several backups at once on
 * the same workers, and a reply shifted by them would store wrong bytes under other chunks'
 * hashes in a backup that succeeds.
 */
import test from 'ava';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { backupImage } from '../../../engine/backup/image-backup.js';
import { restoreImage } from '../../../engine/restore/image-restore.js';
import { checkRepository } from '../../../engine/repo/check.js';
import { walkFilesForCheck } from '../../../engine/restore/files-check.js';
import { systemClock } from '../../../engine/runtime/clock.js';
import { faultyImage } from '../../support/faulty-disk.js';
import { requireTools } from '../../support/tools.js';
import { makeRawImage } from '../../support/images.js';
import { bytes, reopen, setup } from '../files/fixtures.js';

const KiB = 1024;
const MiB = 1024 * KiB;

test('a backup whose disk fails a read half-way through a request leaves the backup running beside it intact', async (t) => {
  if (!requireTools(t, 'qemu-storage-daemon', 'qemu-img')) return;
  const { dir, repo } = await setup(t);
  // The failing disk: 2 MiB of data (8 chunks of 256 KiB) whose reads fail from the middle of
  // chunk 5: the request for chunks 4-7 encodes chunk 4, then fails, and it is the last one.
  const badRaw = join(dir, 'bad.img');
  await makeRawImage(badRaw, 2 * MiB, [{ offset: 0, data: bytes(2 * MiB, 7) }]);
  const bad = await faultyImage(t, dir, badRaw, 5 * 256 * KiB + 64 * KiB);
  // The healthy disk, backed up at the same time on the same workers: 32 MiB, many requests.
  const good = join(dir, 'good.img');
  const text = Buffer.from('every chunk keeps its own bytes. '.repeat(1 << 15));
  const data = Buffer.concat([bytes(16 * MiB, 8), text.subarray(0, 16 * MiB)]);
  await makeRawImage(good, data.length, [{ offset: 0, data }]);

  const opts = (name: string) => ({ name, clock: systemClock, hostname: 'h' });
  const [failed, ok] = await Promise.allSettled([backupImage(repo, bad, opts('bad')), backupImage(repo, good, opts('good'))]);
  t.is(failed.status, 'rejected');
  t.regex(String((failed as PromiseRejectedResult).reason), /EIO|I\/O error/);
  if (ok.status !== 'fulfilled') return t.fail(`the healthy backup failed: ${String(ok.reason)}`);

  const report = await checkRepository(await reopen(repo), { readData: true, walkFiles: walkFilesForCheck });
  t.true(report.ok, JSON.stringify(report.problems));
  const out = join(dir, 'out.img');
  await restoreImage(await reopen(repo), ok.value, out);
  t.true((await readFile(out)).equals(data), 'the healthy disk restores byte-identical');
});
