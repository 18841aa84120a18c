import test from 'ava';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Repository } from '../../../engine/repo/repository.js';
import { fixedClock } from '../../../engine/runtime/clock.js';
import { checkFreeSpace, estimateNeedBytes, SPACE_MARGIN_BYTES } from '../../../engine/jobs/space-guard.js';
import { LocalTarget } from '../../../targets/local/local-target.js';
import type { Point, PointManifest } from '../../../engine/repo/point.js';
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

function manifest(name: string, storedNewBytes: number, opts: { time?: string; parent?: string; policy?: string } = {}): PointManifest {
  return {
    formatVersion: 1, name, kind: 'vm', time: opts.time ?? '2026-03-01T00:00:00Z', hostname: 'h', source: { type: 'image', path: '/x' },
    ...(opts.parent ? { parent: opts.parent } : {}), ...(opts.policy ? { policy: opts.policy } : {}),
    stats: { logicalBytes: storedNewBytes, readBytes: storedNewBytes, newBytes: storedNewBytes, storedNewBytes, durationMs: 1 }, errors: [],
  };
}

/** Points of one source, oldest first, from what each stored new; the first has no parent (a first, full backup). */
function series(...storedMiB: number[]): Point[] {
  return storedMiB.map((n, k) => ({
    id: `p${k}`, ...manifest('db', n * MiB, { time: `2026-03-0${k + 1}T00:00:00Z`, ...(k > 0 ? { parent: `p${k - 1}` } : {}) }),
  }));
}

test('the estimate is what recent backups added, not the first full one; a first backup is estimated at the source size', (t) => {
  const cases: [string, Point[], number | undefined, number][] = [
    ['a first backup of a source of unknown size: the margin only', [], undefined, 0],
    ['a first backup of a 100 MiB image: all of it', [], 100 * MiB, 100 * MiB],
    ['only the first, full point (100 MiB): the next backup adds changes only', series(100), undefined, 0],
    ['the full point does not count; the increments do (largest of them)', series(100, 2, 5), undefined, 5 * MiB],
    ['only the last 3 increments count', series(100, 30, 1, 2, 3), undefined, 3 * MiB],
    // Retention removed the first full point: the oldest left has a parent, so it is an increment.
    ['an oldest point with a parent is an increment', series(100, 7, 1).slice(1), undefined, 7 * MiB],
    // VM points record no parent: all but the oldest count.
    ['points without parents: all but the oldest', series(100, 4, 1).map(({ parent: _, ...p }) => p), undefined, 4 * MiB],
  ];
  for (const [why, points, sourceBytes, added] of cases) {
    t.is(estimateNeedBytes(points, sourceBytes).needBytes, added + SPACE_MARGIN_BYTES, why);
  }
});

test('a source whose first backup used most of the volume is backed up again: an unchanged source adds little', async (t) => {
  const dir = await tempDir(t);
  const repo = await Repository.init(new LocalTarget(dir), { clock });
  await repo.commitPoint(manifest('h100', 100 * MiB, { policy: 'p5' }));
  // 182 MiB volume, 100 MiB used: the old guard wanted 140 MiB for every later run.
  const small = await Repository.open(new SizedTarget(dir, 64 * MiB), { clock });
  await t.notThrowsAsync(checkFreeSpace(small, 'vol3', { name: 'h100', policy: 'p5', fallbackTarget: 'vol4' }));
});

test('a volume that cannot hold the estimate refuses the job up front, naming target, source and sizes', async (t) => {
  const dir = await tempDir(t);
  const repo = await Repository.init(new LocalTarget(dir), { clock });
  await repo.commitPoint(manifest('db', 200 * MiB, { time: '2026-03-01T00:00:00Z' }));
  await repo.commitPoint(manifest('db', 120 * MiB, { time: '2026-03-02T00:00:00Z' }));
  await repo.commitPoint(manifest('web', 1 * MiB));
  const small = await Repository.open(new SizedTarget(dir, 100 * MiB), { clock });
  const e = await t.throwsAsync(checkFreeSpace(small, 'san1', { name: 'db' }));
  t.is((e as { code?: string }).code, 'TARGET_FULL');
  t.regex(e?.message ?? '', /^target san1 \(.*\) has 100 MiB free, but backing up db needs about 160 MiB \(its last backup added 120 MiB, plus 40 MiB margin\) - nothing was started$/);
  await t.notThrowsAsync(checkFreeSpace(small, 'san1', { name: 'web' }), 'another source with small changes still fits');
  await t.notThrowsAsync(checkFreeSpace(small, 'san1', { name: 'new-source' }));
  const first = await t.throwsAsync(checkFreeSpace(small, 'san1', { name: 'new-image', sourceBytes: async () => 80 * MiB }));
  t.regex(first?.message ?? '', /needs about 120 MiB \(a first backup: the source holds 80 MiB of data, plus 40 MiB margin\)/);
});

test('the advice never says to forget the only point of a source, nor to add a fallbackTarget the policy has', async (t) => {
  const dir = await tempDir(t);
  const repo = await Repository.init(new LocalTarget(dir), { clock });
  await repo.commitPoint(manifest('one', 10 * MiB, { policy: 'p' }));
  for (const [k, n] of [50, 60].entries()) await repo.commitPoint(manifest('many', n * MiB, { policy: 'p', time: `2026-03-0${k + 1}T00:00:00Z` }));
  const full = await Repository.open(new SizedTarget(dir, 20 * MiB), { clock });
  const hint = async (source: Parameters<typeof checkFreeSpace>[2]): Promise<string> => {
    const e = await t.throwsAsync(checkFreeSpace(full, 'vol1', source));
    return (e as { hint?: string }).hint ?? '';
  };

  const only = await hint({ name: 'one', policy: 'p' });
  t.notRegex(only, /forget/, 'one has a single point: forgetting it would leave the source with none');
  t.regex(only, /drctl prune.*keep one's only point/);
  t.regex(only, /give policy p a fallbackTarget/, 'the policy has none');

  const many = await hint({ name: 'many', policy: 'p', fallbackTarget: 'vol2' });
  t.regex(many, /^forget older points of many \(`drctl forget`\) and run `drctl prune` or grow the volume$/);
  t.notRegex(many, /fallbackTarget/, 'the policy has one already (and the runner used it)');
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
