/**
 * A folder restore that cannot finish: out of space, or killed. What it leaves under the
 * files' own names must be complete (content and mode), what it did not restore is counted
 * and named, an existing file it was replacing stays as it was, and the same restore with
 * --overwrite finishes the job.
 */
import test, { type ExecutionContext } from 'ava';
import { chmod, lstat, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { drctl, json, oneLine, startDrctl } from '../support/cli.js';
import { mountSmallVolume } from '../support/small-volume.js';
import { tempDir } from '../support/tmp.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Every regular file under `root`, by path relative to it. */
async function filesUnder(root: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(root, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await filesUnder(root, r)));
    else if (e.isFile()) out.push(r);
  }
  return out.sort();
}

/** Files left under their own names are complete: same bytes and mode as the source. */
async function assertComplete(t: ExecutionContext, dest: string, src: string, names: string[]): Promise<void> {
  for (const rel of names) {
    const [a, b] = await Promise.all([readFile(join(dest, rel)), readFile(join(src, rel))]);
    t.true(a.equals(b), `${rel} is left with ${a.length} bytes that are not its content (${b.length} bytes)`);
    t.is((await lstat(join(dest, rel))).mode & 0o7777, (await lstat(join(src, rel))).mode & 0o7777, `${rel}: mode`);
  }
}

async function backedUp(dir: string, src: string): Promise<string> {
  const repo = join(dir, 'repo');
  const init = await drctl(['init', '--repo', repo]);
  if (init.code !== 0) throw new Error(init.stderr);
  const r = await drctl(['backup', '--repo', repo, '--files', src, '--name', 'tree', '--json']);
  if (r.code !== 0) throw new Error(r.stderr);
  json(r);
  return repo;
}

test('a folder restore that runs out of space leaves only complete files, names those it did not restore, and --overwrite finishes it', async (t) => {
  const dir = await tempDir(t);
  const mnt = join(dir, 'small');
  if (!(await mountSmallVolume(t, mnt, 16))) return;
  const src = join(dir, 'src');
  for (let d = 0; d < 12; d++) {
    const sub = join(src, `d${d}`);
    await mkdir(sub, { recursive: true });
    // Small files (made whole at once), single-chunk ones of 150 KiB, and a 3 MiB one of several chunks.
    for (let i = 0; i < 5; i++) await writeFile(join(sub, `s${i}`), randomBytes(2 * KiB));
    for (let i = 0; i < 2; i++) await writeFile(join(sub, `m${i}`), randomBytes(150 * KiB));
    await writeFile(join(sub, 'big'), randomBytes(3 * MiB));
    for (const f of ['s0', 'm0', 'big']) await chmod(join(sub, f), 0o640);
  }
  const all = await filesUnder(src);
  const repo = await backedUp(dir, src);
  const dest = join(mnt, 'out');

  const r = await drctl(['restore', '--repo', repo, 'latest', '--to', dest]);
  t.is(r.code, 1, r.stderr);
  const line = oneLine(r.stderr);
  const m = /cannot write restore destination (\S+) - its volume is out of space \(ENOSPC\); (\d+) files were not restored \(([^)]*)\); the files restored so far are left there, complete \((\d+) of (\d+)\)/.exec(line);
  if (!m) return t.fail(line);
  t.is(m[1], dest);
  t.regex(line, /run the same restore again with --overwrite/);
  const left = await filesUnder(dest);
  t.is(Number(m[5]), all.length);
  t.is(Number(m[4]), left.length, 'the count of complete files is what is there');
  t.is(Number(m[2]), all.length - left.length);
  t.true(left.length > 0 && left.length < all.length, `${left.length} of ${all.length} restored`);
  await assertComplete(t, dest, src, left);
  const named = (m[3] as string).split(', ').filter((n) => n !== '…');
  t.is(named.length, 3);
  for (const n of named) t.false(left.includes(n), `${n} is named as not restored`);

  execFileSync('mount', ['-o', 'remount,size=64m', mnt]);
  const again = await drctl(['restore', '--repo', repo, 'latest', '--to', dest, '--overwrite']);
  t.is(again.code, 0, again.stderr);
  t.deepEqual(await filesUnder(dest), all);
  await assertComplete(t, dest, src, all);
});

test('--overwrite on an almost full volume keeps the file it would replace, content and mode, when the new one does not fit', async (t) => {
  const dir = await tempDir(t);
  const mnt = join(dir, 'small');
  if (!(await mountSmallVolume(t, mnt, 20))) return;
  const src = join(dir, 'src');
  await mkdir(src);
  await writeFile(join(src, 'huge.bin'), randomBytes(12 * MiB));
  const repo = await backedUp(dir, src);
  const live = join(mnt, 'live');
  await mkdir(live);
  const current = randomBytes(4 * MiB);
  await writeFile(join(live, 'huge.bin'), current);
  await chmod(join(live, 'huge.bin'), 0o640);
  await writeFile(join(mnt, 'filler'), Buffer.alloc(10 * MiB, 1)); // 6 MiB free: the new file fits only in place of the old one

  const r = await drctl(['restore', '--repo', repo, 'latest', '--include', 'huge.bin', '--to', live, '--overwrite']);
  t.is(r.code, 1, r.stderr);
  const line = oneLine(r.stderr);
  t.regex(line, /out of space \(ENOSPC\); 1 file was not restored \(huge\.bin\)/);
  t.deepEqual(await readdir(live), ['huge.bin'], 'nothing but the live file is left');
  t.true((await readFile(join(live, 'huge.bin'))).equals(current), 'the live file keeps its content');
  t.is((await lstat(join(live, 'huge.bin'))).mode & 0o7777, 0o640);

  await rm(join(mnt, 'filler'));
  const again = await drctl(['restore', '--repo', repo, 'latest', '--include', 'huge.bin', '--to', live, '--overwrite']);
  t.is(again.code, 0, again.stderr);
  t.true((await readFile(join(live, 'huge.bin'))).equals(await readFile(join(src, 'huge.bin'))));
});

test('kill -9 during a folder restore: every file under its own name is complete, unfinished ones carry a .drctl-partial- name', async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  await mkdir(src);
  for (let i = 0; i < 40; i++) await writeFile(join(src, `f${String(i).padStart(2, '0')}`), randomBytes(3 * MiB));
  const repo = await backedUp(dir, src);
  const dest = join(dir, 'out');

  const child = startDrctl(['restore', '--repo', repo, 'latest', '--to', dest]);
  const exited = new Promise((r) => child.once('exit', r));
  const named = async () => (await filesUnder(dest).catch(() => [])).filter((n) => !n.includes('.drctl-partial-'));
  // Killed once some files exist (if it finished first, the checks below hold all the same).
  while (child.exitCode === null && (await named()).length < 3) await sleep(5);
  child.kill('SIGKILL');
  await exited;

  const left = await named();
  t.true(left.length >= 3);
  await assertComplete(t, dest, src, left);
  for (const p of await filesUnder(dest)) {
    if (!left.includes(p)) t.regex(p, /^\.f\d\d\.drctl-partial-[0-9a-f]{6}$/);
  }
  const again = await drctl(['restore', '--repo', repo, 'latest', '--to', dest, '--overwrite']);
  t.is(again.code, 0, again.stderr);
  await assertComplete(t, dest, src, await filesUnder(src));
});
