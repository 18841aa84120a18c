/**
 * Safety points: `restore` onto the original VM first takes a point of the state it is about to
 * overwrite (a normal point of the VM's name, marked `safetyFor` the restored point). The
 * libvirt suite shows the restore taking one; here, with such a point written into a real
 * repository, what the on-call person and retention then do with it: `points` marks it,
 * `latest` passes over it (restoring `latest` again must not undo the restore), and retention
 * keeps it out of the generations, for 30 days.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { drctl, json } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';

interface PointJson { id: string; name: string; time: string; safetyFor?: string }

/** A backup of `src` holding `text`, under NAME. */
async function backup(repo: string, src: string, text: string): Promise<PointJson> {
  await writeFile(join(src, 'state.txt'), text);
  const r = await drctl(['backup', '--repo', repo, '--files', src, '--name', 'vm1', '--json']);
  if (r.code !== 0) throw new Error(r.stderr);
  return json<PointJson>(r);
}

/**
 * Turn point `p` into a safety point for `restoredId`, as the restore writes one (optionally
 * dated `time`). A point's id is the SHA-256 of its file, so it is written under its new id.
 */
async function makeSafetyPoint(repo: string, p: PointJson, restoredId: string, time?: string): Promise<string> {
  const file = join(repo, 'points', `${p.id}.json`);
  const manifest = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  manifest.safetyFor = restoredId;
  if (time) manifest.time = time;
  const bytes = Buffer.from(JSON.stringify(manifest));
  const id = createHash('sha256').update(bytes).digest('hex');
  await writeFile(join(repo, 'points', `${id}.json`), bytes);
  await rm(file);
  return id;
}

async function setup(t: Parameters<typeof tempDir>[0]): Promise<{ dir: string; repo: string; src: string }> {
  const dir = await tempDir(t);
  const repo = join(dir, 'repo');
  const src = join(dir, 'src');
  await mkdir(src);
  const init = await drctl(['init', '--repo', repo]);
  if (init.code !== 0) throw new Error(init.stderr);
  return { dir, repo, src };
}

test('points marks a safety point with the point whose restore took it', async (t) => {
  const { repo, src } = await setup(t);
  const good = await backup(repo, src, 'good\n');
  const replaced = await backup(repo, src, 'broken\n');
  const safetyId = await makeSafetyPoint(repo, replaced, good.id);
  const r = await drctl(['points', '--repo', repo]);
  t.is(r.code, 0, r.stderr);
  const row = r.stdout.split('\n').find((l) => l.startsWith(safetyId.slice(0, 12)));
  t.truthy(row, r.stdout);
  t.regex(row ?? '', new RegExp(`safety:${good.id.slice(0, 12)}`));
  const goodRow = r.stdout.split('\n').find((l) => l.startsWith(good.id.slice(0, 12)));
  t.notRegex(goodRow ?? '', /safety/);
  const listed = json<PointJson[]>(await drctl(['points', '--repo', repo, '--json']));
  t.is(listed.find((p) => p.id === safetyId)?.safetyFor, good.id);
});

test('latest skips a safety point: restoring latest again gives the newest backup, not the replaced state', async (t) => {
  const { dir, repo, src } = await setup(t);
  await backup(repo, src, 'old\n');
  const newest = await backup(repo, src, 'newest backup\n');
  // The restore of `newest` took a safety point of what the VM held then; it is the newest point.
  const replaced = await backup(repo, src, 'state the restore replaced\n');
  const safetyId = await makeSafetyPoint(repo, replaced, newest.id);

  const out = join(dir, 'out');
  const r = await drctl(['restore', '--repo', repo, 'latest', '--name', 'vm1', '--to', out]);
  t.is(r.code, 0, r.stderr);
  t.is(await readFile(join(out, 'state.txt'), 'utf8'), 'newest backup\n');
  // By id, the safety point restores what it holds.
  const back = join(dir, 'back');
  const s = await drctl(['restore', '--repo', repo, safetyId.slice(0, 12), '--to', back]);
  t.is(s.code, 0, s.stderr);
  t.is(await readFile(join(back, 'state.txt'), 'utf8'), 'state the restore replaced\n');
});

test('latest with only safety points left says so and names one by id (exit 2)', async (t) => {
  const { dir, repo, src } = await setup(t);
  const only = await backup(repo, src, 'x\n');
  const safetyId = await makeSafetyPoint(repo, only, 'f'.repeat(64));
  const r = await drctl(['restore', '--repo', repo, 'latest', '--name', 'vm1', '--to', join(dir, 'out')]);
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, /apart from safety points/);
  t.true(r.stderr.includes(safetyId.slice(0, 12)), r.stderr);
});

test('retention leaves a recent safety point out of the generations and keeps it; an old one goes', async (t) => {
  const { repo, src } = await setup(t);
  const old1 = await backup(repo, src, 'a\n');
  const old2 = await backup(repo, src, 'b\n');
  const recentSafety = await makeSafetyPoint(repo, await backup(repo, src, 'replaced\n'), old2.id);
  const oldSafety = await makeSafetyPoint(repo, await backup(repo, src, 'long ago\n'), old1.id, new Date(Date.now() - 40 * 86_400_000).toISOString());
  const newest = await backup(repo, src, 'c\n');

  const r = await drctl(['forget', '--repo', repo, '--name', 'vm1', '--keep-last', '2', '--json']);
  t.is(r.code, 0, r.stderr);
  const [group] = json<{ groups: { keep: { id: string; reasons: string[] }[]; remove: { id: string }[] }[] }>(r).groups;
  // keep-last 2 counts backups only: the newest and old2, not the safety point taken after old2.
  t.deepEqual(group?.keep.map((k) => k.id).sort(), [newest.id, old2.id, recentSafety].sort());
  t.deepEqual(group?.remove.map((k) => k.id).sort(), [old1.id, oldSafety].sort());
  t.regex(group?.keep.find((k) => k.id === recentSafety)?.reasons.join(' ') ?? '', /safety point .*\(kept 30 days\)/);
  const left = json<PointJson[]>(await drctl(['points', '--repo', repo, '--json'])).map((p) => p.id);
  t.deepEqual(left.sort(), [newest.id, old2.id, recentSafety].sort());
});
