/**
 * The blob writer keeps memory bounded when the target is slower than hashing and compression
 * (an iSCSI LUN, a busy NAS): blobs wait for room instead of each sealing a pack of its own.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Repository } from '../../../engine/repo/repository.js';
import { systemSleepClock } from '../../../engine/runtime/clock.js';
import { runBounded } from '../../../engine/runtime/concurrency.js';
import { localTarget } from '../../../targets/local/local-target.js';
import type { ObjectUpload, TargetDriver } from '../../../targets/types.js';
import { tempDir } from '../../support/tmp.js';

const KiB = 1024;
const PACK = 512 * KiB;
const BLOB = 64 * KiB;

test('with a stalled target, the writer accepts at most a few packs of blobs, then all of them land once it drains', async (t) => {
  const inner = await localTarget.open({ path: join(await tempDir(t), 'repo') });
  let release!: () => void;
  const stalled = new Promise<void>((r) => (release = r));
  let packCommits = 0;
  const target: TargetDriver = Object.assign(Object.create(inner) as TargetDriver, {
    create: (what?: string): ObjectUpload => {
      const upload = inner.create(what);
      return {
        write: (parts) => upload.write(parts),
        commit: async (key, opts) => {
          if (key.startsWith('data/')) {
            packCommits++;
            await stalled;
          }
          return upload.commit(key, opts);
        },
        abort: () => upload.abort(),
      };
    },
  });
  const repo = await Repository.init(target, { clock: systemSleepClock }, { packTargetBytes: PACK });
  const writer = repo.newWriter();
  const total = 64; // 64 blobs of 64 KiB = 8 packs
  let accepted = 0;
  const jobs = function* () {
    for (let k = 0; k < total; k++) {
      yield async () => {
        await writer.putRaw(randomBytes(BLOB));
        accepted++;
      };
    }
  };
  const run = runBounded(jobs(), 16);
  await new Promise((r) => setTimeout(r, 1000));
  // Two packs uploading, one sealed and waiting, one filling: the rest waits for room.
  t.true(accepted * BLOB <= 4 * PACK, `${accepted} blobs (${(accepted * BLOB) / KiB} KiB) accepted while the target was stalled`);
  t.is(packCommits, 2, 'two pack uploads in flight');
  release();
  await run;
  t.truthy(await writer.finish());
  t.is(accepted, total);
  t.is(writer.stats.blobsNew, total);
  const reopened = await Repository.open(inner, { clock: systemSleepClock });
  t.is(reopened.index.size, total, 'every blob is in the index after the stall');
});

test('putEncoded stores content once when it arrives twice while the first copy is in flight, and not at all when indexed', async (t) => {
  const target = await localTarget.open({ path: join(await tempDir(t), 'repo') });
  const repo = await Repository.init(target, { clock: systemSleepClock }, { packTargetBytes: PACK });
  const writer = repo.newWriter();
  const stored = Buffer.from('stored bytes, as a worker compressed them');
  const hash = 'ab'.repeat(32);
  await Promise.all([writer.putEncoded(hash, 100, stored, 1), writer.putEncoded(hash, 100, stored, 1)]);
  t.like(writer.stats, { blobsNew: 1, blobsReused: 1, rawBytesNew: 100, storedBytesNew: stored.length });
  await writer.finish();
  const again = (await Repository.open(target, { clock: systemSleepClock })).newWriter();
  await again.putEncoded(hash, 100, stored, 1);
  t.like(again.stats, { blobsNew: 0, blobsReused: 1 });
});
