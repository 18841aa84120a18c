/**
 * `repair index` on a volume that changes underneath it: a pack that shrinks or goes away
 * between the listing and the read of its tail is named and left out, and every other pack is
 * indexed (before, the whole repair failed on the short read).
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { truncate, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Repository } from '../../../engine/repo/repository.js';
import { repairIndex } from '../../../engine/repo/repair.js';
import { Keys } from '../../../engine/repo/format.js';
import { systemSleepClock } from '../../../engine/runtime/clock.js';
import { shutdown } from '../../../engine/runtime/shutdown.js';
import { localTarget } from '../../../targets/local/local-target.js';
import type { TargetDriver } from '../../../targets/types.js';
import { tempDir } from '../../support/tmp.js';

const KiB = 1024;

// The codec workers' message ports would keep this test's process alive (the CLI stops them the same way).
test.after.always(() => shutdown());

test('a pack that shrinks or disappears while repair index reads it is named and left out; the other packs are indexed', async (t) => {
  const path = join(await tempDir(t), 'repo');
  const deps = { clock: systemSleepClock };
  const made = await Repository.init(await localTarget.open({ path }), deps, { packTargetBytes: 256 * KiB });
  const writer = made.newWriter();
  const hashes: string[] = [];
  for (let k = 0; k < 24; k++) hashes.push(await writer.putRaw(randomBytes(64 * KiB)));
  await writer.finish();

  const inner = await localTarget.open({ path });
  const packs = [...(await (await Repository.open(inner, deps)).packSizes()).keys()];
  t.true(packs.length >= 4, `${packs.length} packs`);
  const [shrinks, vanishes] = packs as [string, string];
  // The volume changes after the listing: the first read of each victim finds it changed.
  const changed = new Set<string>();
  const target: TargetDriver = Object.assign(Object.create(inner) as TargetDriver, {
    get: async (key: string, range?: { offset: number; length: number }) => {
      if (!changed.has(key) && (key === Keys.pack(shrinks) || key === Keys.pack(vanishes))) {
        changed.add(key);
        if (key === Keys.pack(shrinks)) await truncate(join(path, key), 100);
        else await unlink(join(path, key));
      }
      return inner.get(key, range);
    },
  });
  const report = await repairIndex(await Repository.open(target, deps));
  t.is(report.packs, packs.length);
  t.is(report.packsIndexed, packs.length - 2);
  t.deepEqual(report.unreadable.map((u) => u.pack).sort(), [shrinks, vanishes].sort());
  t.regex(report.unreadable.find((u) => u.pack === shrinks)?.why ?? '', /shrank/);
  t.regex(report.unreadable.find((u) => u.pack === vanishes)?.why ?? '', /disappeared/);

  const after = await Repository.open(inner, deps);
  const lost = hashes.filter((h) => [shrinks, vanishes].includes(after.index.packOf(h) ?? ''));
  t.deepEqual(lost, [], 'no blob is indexed in a pack left out');
  const kept = hashes.filter((h) => after.index.has(h));
  t.is(kept.length, report.blobs);
  t.is((await after.readBlob(kept[0] as string)).length, 64 * KiB, 'a blob of an indexed pack reads back');
});
