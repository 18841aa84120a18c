/**
 * `check --read-data` over several packs: the bytes it reports read are every pack's bytes, and
 * its progress reaches the total (packs are read three at a time; a shared counter updated as
 * `total += await read()` kept only one job's share).
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Repository } from '../../../engine/repo/repository.js';
import { checkRepository } from '../../../engine/repo/check.js';
import { systemSleepClock } from '../../../engine/runtime/clock.js';
import { localTarget } from '../../../targets/local/local-target.js';
import type { Progress } from '../../../engine/progress.js';
import { tempDir } from '../../support/tmp.js';

const KiB = 1024;

test('check --read-data reports the bytes of every pack read, and its progress reaches 100%', async (t) => {
  const path = join(await tempDir(t), 'repo');
  const deps = { clock: systemSleepClock };
  const made = await Repository.init(await localTarget.open({ path }), deps, { packTargetBytes: 256 * KiB });
  const writer = made.newWriter();
  for (let k = 0; k < 24; k++) await writer.putRaw(randomBytes(64 * KiB));
  await writer.finish();

  const repo = await Repository.open(await localTarget.open({ path }), deps);
  const sizes = [...(await repo.packSizes()).values()];
  t.true(sizes.length >= 4, `${sizes.length} packs`);
  const total = sizes.reduce((a, b) => a + b, 0);
  const seen: Progress[] = [];
  const report = await checkRepository(repo, { readData: true, walkFiles: async () => [], onProgress: (p) => seen.push(p) });
  t.true(report.ok, JSON.stringify(report.problems));
  t.is(report.bytesRead, total);
  t.is(seen.at(-1)?.doneBytes, total);
  t.is(seen.at(-1)?.totalBytes, total);
});
