import test from 'ava';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Repository } from '../../../engine/repo/repository.js';
import { fixedClock } from '../../../engine/runtime/clock.js';
import { checkFreeSpace, estimateNeedBytes, SPACE_MARGIN_BYTES } from '../../../engine/jobs/space-guard.js';
import { LocalTarget } from '../../../targets/local/local-target.js';
import type { PointManifest } from '../../../engine/repo/point.js';
import { tempDir } from '../../support/tmp.js';

const MiB = 1024 * 1024;
const clock = fixedClock('2026-03-01T00:00:00Z');

/** A local target that reports a chosen amount of free space (a volume of that size). */
class SizedTarget extends LocalTarget {
  constructor(path: string, private readonly free: number) {
    super(path);
  }
  override async freeBytes(): Promise<number> {
    return this.free;
  }
}

function manifest(name: string, storedNewBytes: number): PointManifest {
  return {
    formatVersion: 1, name, kind: 'vm', time: '2026-03-01T00:00:00Z', hostname: 'h', source: { type: 'image', path: '/x' },
    stats: { logicalBytes: storedNewBytes, readBytes: storedNewBytes, newBytes: storedNewBytes, storedNewBytes, durationMs: 1 }, errors: [],
  };
}

test('the estimate is what the previous point stored new, plus a margin', (t) => {
  t.is(estimateNeedBytes(undefined), SPACE_MARGIN_BYTES);
  t.is(estimateNeedBytes({ id: 'x', ...manifest('a', 100 * MiB) }), 100 * MiB + SPACE_MARGIN_BYTES);
});

test('a volume that cannot hold the estimate refuses the job up front, naming target, source and sizes', async (t) => {
  const dir = await tempDir(t);
  const repo = await Repository.init(new LocalTarget(dir), { clock });
  await repo.commitPoint(manifest('db', 200 * MiB));
  await repo.commitPoint(manifest('web', 1 * MiB));
  const small = await Repository.open(new SizedTarget(dir, 100 * MiB), { clock });
  const e = await t.throwsAsync(checkFreeSpace(small, 'san1', { name: 'db' }));
  t.is((e as { code?: string }).code, 'TARGET_FULL');
  t.regex(e?.message ?? '', /^target san1 \(.*\) has 100 MiB free, but backing up db needs about 240 MiB \(its last point stored 200 MiB new, plus 40 MiB margin\) - nothing was started$/);
  await t.notThrowsAsync(checkFreeSpace(small, 'san1', { name: 'web' }), 'another source with small changes still fits');
  await t.notThrowsAsync(checkFreeSpace(small, 'san1', { name: 'new-source' }));
});

test('the local target does not list lost+found at the root of a mounted volume', async (t) => {
  const dir = await tempDir(t);
  await mkdir(join(dir, 'lost+found'));
  await writeFile(join(dir, 'lost+found', '#12'), 'orphan');
  const target = new LocalTarget(dir);
  const keys: string[] = [];
  for await (const b of target.list('')) keys.push(b.key);
  t.deepEqual(keys, []);
  await t.notThrowsAsync(Repository.init(target, { clock }), 'a freshly formatted volume counts as empty');
});
