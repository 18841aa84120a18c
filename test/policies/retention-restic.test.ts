/**
 * policies/retention.ts against the real `restic forget` 0.14: seeded timelines of every shape
 * retention meets, each checked with several rule sets; drctl must keep and remove exactly
 * what restic does. A failure prints the seed, the rules and the first point they disagree on;
 * DR_RETENTION_SEED=<n> replays a run (or explores new timelines).
 */
import test from 'ava';
import { rm } from 'node:fs/promises';
import { applyRetention, type RetentionResult, type RetentionRules, type TimedPoint } from '../../policies/retention.js';
import { createResticOracle, type ResticOracle, type ResticVerdict } from '../support/restic-oracle.js';
import { sharedTempDir } from '../support/tmp.js';
import { hasTool, requireTools } from '../support/tools.js';
import { TIMELINE_KINDS, mulberry32, shuffle } from '../support/timelines.js';

const BASE_SEED = Number(process.env.DR_RETENTION_SEED ?? 20_260_301);

let dir: string | undefined;
let oracle: ResticOracle | undefined;

test.before(async () => {
  if (!hasTool('restic')) return;
  dir = await sharedTempDir('drctl-restic-oracle-');
  oracle = await createResticOracle(dir);
});

test.after.always(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

TIMELINE_KINDS.forEach(({ name, make, count }, kindNr) => {
  for (let i = 0; i < count; i++) {
    const seed = (BASE_SEED + kindNr * 1000 + i) >>> 0;
    test(`${name} #${i + 1} (seed ${seed}) keeps what restic keeps`, async (t) => {
      if (!requireTools(t, 'restic') || !oracle) return;
      const rng = mulberry32(seed);
      const { points, rules: ruleSets } = make(rng, Date.now());
      for (const rules of ruleSets) {
        // restic reads the wall clock (for `within`) somewhere in [before, after].
        const before = new Date();
        const theirs = await oracle.resticKeeps(points, rules);
        const after = new Date();
        if (points.some((p) => Date.parse(p.time) >= before.getTime() && Date.parse(p.time) <= after.getTime())) {
          t.fail('a point lies in the moment restic ran: the timeline cannot be compared');
        }
        const ours = applyRetention(shuffle(rng, points), rules, before);
        const context = `seed ${seed}, now ${before.toISOString()}, ${points.length} points, rules ${JSON.stringify(rules)}`;
        const difference = firstDifference(points, ours, theirs);
        if (difference) t.log(`${context}\nfirst difference (newest first): ${difference}`);
        t.deepEqual(labels(points, ours.keep.map((k) => k.point.id)), labels(points, theirs.keep), `keep sets differ: ${context}`);
        t.deepEqual(labels(points, ours.remove.map((p) => p.id)), labels(points, theirs.remove), `remove sets differ: ${context}`);
      }
    });
  }
});

test('the oracle reports restic errors with its stderr', async (t) => {
  if (!requireTools(t, 'restic') || !oracle) return;
  const points = [{ id: 'a', time: '2026-03-01T00:00:00Z' }];
  await t.throwsAsync(oracle.resticKeeps(points, { within: '2w' } as RetentionRules), { message: /invalid unit 'w'/ });
});

/**
 * Labels to compare results by. restic sorts with Go's (unstable) sort.Sort over snapshots
 * loaded concurrently, so among points with the same time it keeps an arbitrary one; only
 * how many of them it keeps is defined. A unique time is labelled by its point id, a shared
 * time by the time alone (one label per point at that time).
 */
function labels(points: readonly TimedPoint[], ids: readonly string[]): string[] {
  const byId = new Map(points.map((p) => [p.id, p]));
  const perTime = countBy(points.map((p) => Date.parse(p.time)));
  return ids.map((id) => {
    const p = byId.get(id);
    if (!p) return `unknown point ${id}`;
    const iso = new Date(p.time).toISOString();
    return (perTime.get(Date.parse(p.time)) ?? 0) > 1 ? `${iso} (shared)` : `${id} ${iso}`;
  }).sort();
}

/** The newest instant where drctl and restic keep a different number of points, explained. */
function firstDifference(points: readonly TimedPoint[], ours: RetentionResult<TimedPoint>, theirs: ResticVerdict): string | undefined {
  const time = new Map(points.map((p) => [p.id, Date.parse(p.time)]));
  const ourReasons = new Map(ours.keep.map((k) => [k.point.id, k.reasons]));
  const oursAt = countBy(ours.keep.map((k) => time.get(k.point.id) ?? NaN));
  const theirsAt = countBy(theirs.keep.map((id) => time.get(id) ?? NaN));
  const instants = [...new Set(time.values())].sort((a, b) => b - a);
  for (const at of instants) {
    const a = oursAt.get(at) ?? 0;
    const b = theirsAt.get(at) ?? 0;
    if (a === b) continue;
    const here = points.filter((p) => Date.parse(p.time) === at);
    const why = here.map((p) => `${p.id}: ${ourReasons.get(p.id)?.join(', ') ?? 'removed'}`).join('; ');
    return `${new Date(at).toISOString()} (${here.map((p) => p.id).join(', ')}): drctl keeps ${a} [${why}], restic keeps ${b}`;
  }
  return undefined;
}

function countBy<K>(keys: readonly K[]): Map<K, number> {
  const m = new Map<K, number>();
  for (const k of keys) m.set(k, (m.get(k) ?? 0) + 1);
  return m;
}
