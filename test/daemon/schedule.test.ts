/**
 * The daemon on a simulated clock: a month of a 4-hour policy in seconds, with real backups
 * into a real repository, retention after every run, catch-up after an outage, concurrency
 * limits, and no double start of a policy whose run is still going.
 */
import test from 'ava';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir } from '../support/tmp.js';
import { requireTools } from '../support/tools.js';
import { createResticOracle } from '../support/restic-oracle.js';
import { buildRuntime } from '../../cli/wiring.js';
import { SimulatedClock, type SleepClock } from '../../engine/runtime/clock.js';
import { Repository, shutdownCodecPool } from '../../engine/repo/index.js';
import { openLocalTarget } from '../../targets/index.js';
import { applyRetention } from '../../policies/retention.js';
import type { JobRecord } from '../../engine/catalog/catalog.js';

test.after.always(() => shutdownCodecPool());

interface Setup {
  config: string;
  state: string;
  repos: Record<string, string>;
}

async function setup(dir: string, targets: string[], policies: Record<string, unknown>[]): Promise<Setup> {
  const config = join(dir, 'config');
  await mkdir(join(config, 'targets'), { recursive: true });
  await mkdir(join(config, 'policies'), { recursive: true });
  const repos: Record<string, string> = {};
  for (const t of targets) {
    repos[t] = join(dir, `repo-${t}`);
    await mkdir(repos[t] as string); // empty: the first job creates the repository in it
    await writeFile(join(config, 'targets', `${t}.yaml`), `type: local\npath: ${repos[t]}\n`);
  }
  for (const p of policies) await writeFile(join(config, 'policies', `${p.name as string}.json`), JSON.stringify(p, null, 2));
  return { config, state: join(dir, 'state'), repos };
}

async function folder(dir: string, name: string, files: number, bytesEach: number): Promise<string> {
  const src = join(dir, name);
  await mkdir(src, { recursive: true });
  for (let i = 0; i < files; i++) await writeFile(join(src, `f${i}.bin`), Buffer.alloc(bytesEach, `${name}-${i}-`));
  return src;
}

async function repoPoints(path: string) {
  const repo = await Repository.open(await openLocalTarget(path), { clock: { now: () => new Date() } });
  return (await repo.listPoints()).points;
}

function runtime(s: Setup, clock: SleepClock, log: string[] = [], limits?: { perTarget: number; perHost: number }) {
  return buildRuntime({ configDir: s.config, stateDir: s.state, clock, hostname: 'test-node', log: (l) => log.push(l), limits });
}

test('30 simulated days of a 4-hour policy: 180 runs, the repository keeps what the retention rules keep; a 9-hour outage gives one catch-up run', async (t) => {
  const dir = await tempDir(t);
  const src = await folder(dir, 'data', 3, 4096);
  const retention = { generations: 42, daily: 14 };
  const s = await setup(dir, ['vol1'], [{ name: 'web', schedule: '0 */4 * * *', timezone: 'UTC', target: 'vol1', sources: [{ path: src }], retention }]);
  const clock = new SimulatedClock('2026-03-01T00:00:00Z');
  const log: string[] = [];
  const rt = await runtime(s, clock, log);
  await rt.daemon.start();
  await rt.daemon.run(new Date('2026-03-31T00:00:30Z'));
  await rt.daemon.idle();

  const data = await rt.catalog.read();
  const backups = data.jobs.filter((j) => j.kind === 'backup');
  t.is(backups.length, 180, log.slice(-5).join('\n'));
  t.true(backups.every((j) => j.state === 'ok'), JSON.stringify(backups.find((j) => j.state !== 'ok')));
  // Every scheduled slot ran exactly once.
  const slots = new Set(backups.map((j) => j.scheduledAt));
  t.is(slots.size, 180);
  t.is(backups[0]?.scheduledAt, '2026-03-01T04:00:00.000Z');
  t.is(backups.at(-1)?.scheduledAt, '2026-03-31T00:00:00.000Z');

  // What is left is exactly what restic's own `forget` keeps of all 180 runs.
  const all = backups.map((j) => ({ id: j.pointId as string, time: j.startedAt as string }));
  const expected = applyRetention(all, retention, clock.now()).keep.map((k) => k.point.id).sort();
  const left = await repoPoints(s.repos.vol1 as string);
  t.deepEqual(left.map((p) => p.id).sort(), expected);
  if (requireTools(t, 'restic')) {
    const oracle = await createResticOracle(await tempDir(t, 'drctl-restic-'));
    t.deepEqual((await oracle.resticKeeps(all, retention)).keep.sort(), expected);
  }
  t.is(left.length, 48); // the newest 42 cover Mar 24 04:00 – Mar 31 00:00; daily:14 adds the last run of Mar 18–23
  t.deepEqual(data.points.map((p) => p.id).sort(), expected, 'the catalog lists the same points');
  t.true(left.every((p) => p.policy === 'web'));

  // Restart after a 9-hour outage: the 04:00 and 08:00 slots were missed → one run at start.
  clock.advance(9 * 3_600_000);
  const rt2 = await runtime(s, clock, log);
  await rt2.daemon.start();
  await rt2.daemon.run(new Date('2026-03-31T11:59:00Z'));
  await rt2.daemon.idle();
  const after = (await rt2.catalog.read()).jobs.filter((j) => j.kind === 'backup');
  t.is(after.length, 181);
  t.is(after.at(-1)?.trigger, 'catch-up');
  t.is(after.at(-1)?.scheduledAt, '2026-03-31T08:00:00.000Z');
  t.true(log.some((l) => /missed its run at 2026-03-31T08:00:00.000Z/.test(l)));
});

/** Intervals [start, end] of the backup jobs, by policy. */
function spans(jobs: JobRecord[]) {
  return jobs.filter((j) => j.kind === 'backup').map((j) => ({ policy: j.policy as string, target: j.target, s: Date.parse(j.startedAt as string), e: Date.parse(j.endedAt as string) }));
}

test('two policies on one target never run at once; with 2 jobs per host a third job waits', async (t) => {
  const dir = await tempDir(t);
  const srcs = await Promise.all(['a', 'b', 'c', 'd'].map((n) => folder(dir, n, 24, 2 * 1024 * 1024)));
  const policy = (name: string, target: string, src: string) => ({ name, schedule: '0 */4 * * *', timezone: 'UTC', target, sources: [{ path: src }], retention: { generations: 5 } });
  const s = await setup(dir, ['vol1', 'vol2', 'vol3'], [
    policy('a', 'vol1', srcs[0] as string), policy('b', 'vol1', srcs[1] as string),
    policy('c', 'vol2', srcs[2] as string), policy('d', 'vol3', srcs[3] as string),
  ]);
  const clock = new SimulatedClock('2026-03-01T03:59:00Z');
  const rt = await runtime(s, clock);
  await rt.daemon.start();
  await rt.daemon.run(new Date('2026-03-01T04:01:00Z'));
  await rt.daemon.idle();
  const jobs = (await rt.catalog.read()).jobs;
  t.true(jobs.filter((j) => j.kind === 'backup').every((j) => j.state === 'ok'));
  const sp = spans(jobs);
  t.is(sp.length, 4);
  const a = sp.find((x) => x.policy === 'a');
  const b = sp.find((x) => x.policy === 'b');
  t.truthy(a && b);
  t.true((a as { e: number }).e <= (b as { s: number }).s || (b as { e: number }).e <= (a as { s: number }).s, `a and b overlap on vol1: ${JSON.stringify(sp)}`);
  // At no instant more than two jobs on host "local"; and some job started only after another ended.
  for (const x of sp) {
    const concurrent = sp.filter((y) => y.s <= x.s && x.s < y.e).length;
    t.true(concurrent <= 2, `${concurrent} jobs running at ${x.s}: ${JSON.stringify(sp)}`);
  }
  const waited = sp.filter((x) => sp.some((y) => y !== x && y.e <= x.s));
  t.true(waited.length >= 1);
});

test('a policy whose previous run is still going is not started twice (logged and recorded as skipped)', async (t) => {
  const dir = await tempDir(t);
  // Big enough that one backup spans several simulated minutes on a clock that jumps while jobs run.
  const src = await folder(dir, 'big', 48, 4 * 1024 * 1024);
  const s = await setup(dir, ['vol1'], [{ name: 'busy', schedule: '* * * * *', timezone: 'UTC', target: 'vol1', sources: [{ path: src }], retention: { generations: 10 } }]);
  const sim = new SimulatedClock('2026-03-01T00:00:00Z');
  // Same clock, but not marked simulated: the daemon does not wait for jobs before sleeping,
  // exactly as with the real clock, while time still jumps from minute to minute.
  const jumping: SleepClock = {
    simulated: false,
    now: () => sim.now(),
    sleepUntil: async (d, signal) => {
      await new Promise((r) => setTimeout(r, 20));
      await sim.sleepUntil(d, signal);
    },
  };
  const log: string[] = [];
  const rt = await runtime(s, jumping, log);
  await rt.daemon.start();
  await rt.daemon.run(new Date('2026-03-01T00:05:30Z'));
  await rt.daemon.idle();
  const jobs = (await rt.catalog.read()).jobs;
  const skipped = jobs.filter((j) => j.state === 'skipped');
  const ran = jobs.filter((j) => j.kind === 'backup' && j.state === 'ok');
  t.true(skipped.length >= 1, JSON.stringify(jobs.map((j) => [j.state, j.scheduledAt])));
  t.is(ran.length + skipped.length, 5);
  t.true(log.some((l) => /previous run is still going/.test(l)));
  // Never two runs of the policy at once.
  const sp = spans(jobs.filter((j) => j.state === 'ok'));
  for (const x of sp) t.is(sp.filter((y) => y.s < x.e && x.s < y.e).length, 1);
});
