/**
 * A damaged or interrupted repository: check names exactly the affected points, other points
 * keep restoring, and nothing needs manual repair.
 */
import test, { type ExecutionContext } from 'ava';
import { readdir, readFile, truncate, writeFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { drctl, json, startDrctl } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';
import { requireTools } from '../support/tools.js';
import { packFiles, useSmallPacks } from '../support/repo-files.js';
import { MiB, flipByte, makeRawImage, seededBytes, standardRegions, textBytes } from '../support/images.js';

interface Report {
  ok: boolean;
  affected: { id: string; items: string[] }[];
  problems: { kind: string; message: string }[];
  unindexedPacks: number;
}

/** Two points of different data in separate small packs; returns the packs only B uses. */
async function twoPoints(t: ExecutionContext) {
  const dir = await tempDir(t);
  const repo = join(dir, 'repo');
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  await useSmallPacks(repo, 1 * MiB);
  const imgA = join(dir, 'a.img');
  const imgB = join(dir, 'b.img');
  await makeRawImage(imgA, 64 * MiB, standardRegions('a'));
  await makeRawImage(imgB, 16 * MiB, [{ offset: 0, data: seededBytes('b', 4 * MiB) }, { offset: 8 * MiB, data: textBytes('b', 2 * MiB) }]);
  const a = json<{ id: string }>(await drctl(['backup', '--repo', repo, '--image', imgA, '--name', 'a', '--json']));
  const packsA = await packFiles(repo);
  const b = json<{ id: string }>(await drctl(['backup', '--repo', repo, '--image', imgB, '--name', 'b', '--json']));
  const onlyB = (await packFiles(repo)).filter((p) => !packsA.includes(p));
  t.true(onlyB.length >= 2, 'expected several packs for point b');
  // Largest first: a data pack, so a byte at offset 1000 lies inside a chunk, not a header.
  const sizes = new Map(await Promise.all(onlyB.map(async (p) => [p, (await stat(p)).size] as const)));
  onlyB.sort((x, y) => (sizes.get(y) ?? 0) - (sizes.get(x) ?? 0));
  return { dir, repo, imgA, imgB, a, b, onlyB };
}

async function restores(t: ExecutionContext, repo: string, id: string, out: string, want: string): Promise<void> {
  const r = await drctl(['restore', '--repo', repo, id, '--to', out]);
  t.is(r.code, 0, r.stderr);
  t.true((await readFile(out)).equals(await readFile(want)));
}

test('a truncated pack: check names exactly the affected point; the other restores', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const { dir, repo, imgA, a, b, onlyB } = await twoPoints(t);
  const victim = onlyB[0] as string;
  await truncate(victim, Math.floor((await stat(victim)).size / 2));
  const r = await drctl(['check', '--repo', repo, '--json']);
  t.is(r.code, 1);
  const report = json<Report>(r);
  t.deepEqual(report.affected.map((x) => x.id), [b.id]);
  t.true(report.problems.some((p) => p.kind === 'truncated-pack'));
  t.regex(report.affected[0]?.items[0] ?? '', /^b\.img bytes \d+-\d+$/);
  const text = await drctl(['check', '--repo', repo]);
  t.true(text.stderr.includes(b.id.slice(0, 12)), 'human output must name the affected point');
  t.false(text.stderr.includes(a.id.slice(0, 12)), 'the intact point must not be named');
  await restores(t, repo, a.id, join(dir, 'a-out.img'), imgA);
  const rb = await drctl(['restore', '--repo', repo, b.id, '--to', join(dir, 'b-out.img')]);
  t.is(rb.code, 1);
  t.regex(rb.stderr, /b\.img bytes \d+-\d+ cannot be restored/);
  await t.throwsAsync(stat(join(dir, 'b-out.img')), undefined, 'a failed image restore must not leave a file behind');
});

test('a flipped byte: check --read-data names exactly the affected point and disk range', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const { dir, repo, imgA, a, b, onlyB } = await twoPoints(t);
  const victim = onlyB[0] as string;
  await flipByte(victim, 1000, 0x40);
  const structural = await drctl(['check', '--repo', repo]);
  t.is(structural.code, 0, 'a flipped byte is only visible when data is read');
  const r = await drctl(['check', '--repo', repo, '--read-data', '--json']);
  t.is(r.code, 1);
  const report = json<Report>(r);
  t.deepEqual(report.affected.map((x) => x.id), [b.id]);
  t.true(report.problems.some((p) => p.kind === 'damaged-pack'));
  const items = report.affected[0]?.items ?? [];
  t.is(items.length, 1, `one damaged chunk expected, got ${items.join('; ')}`);
  const m = /^b\.img bytes (\d+)-(\d+)$/.exec(items[0] as string);
  t.truthy(m, items[0]);
  const [s, e] = [Number(m?.[1]), Number(m?.[2])];
  t.is(e - s, 256 * 1024, 'exactly one chunk');
  t.true(s < 4 * MiB || (s >= 8 * MiB && e <= 10 * MiB), 'the damaged chunk must hold data of b.img');
  // The restore path finds the same chunk on its own.
  const rb = await drctl(['restore', '--repo', repo, b.id, '--to', join(dir, 'b-out.img')]);
  t.is(rb.code, 1);
  t.true(rb.stderr.includes(`b.img bytes ${s}-${e}`), rb.stderr);
  await restores(t, repo, a.id, join(dir, 'a-out.img'), imgA);
});

test('a flipped byte in a pack header: check --read-data names the pack, and every point still restores', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const { dir, repo, imgA, imgB, a, b, onlyB } = await twoPoints(t);
  const victim = onlyB[0] as string;
  await flipByte(victim, (await stat(victim)).size - 12 - 3); // in the zstd header, just before the 12-byte trailer
  t.is((await drctl(['check', '--repo', repo])).code, 0, 'the header is only read with --read-data');
  const r = await drctl(['check', '--repo', repo, '--read-data', '--json']);
  t.is(r.code, 1, r.stdout);
  const report = json<Report>(r);
  const pack = victim.split('/').at(-1) as string;
  const problem = report.problems.find((p) => p.kind === 'damaged-pack');
  t.truthy(problem, JSON.stringify(report.problems));
  t.true(problem?.message.includes(pack.slice(0, 12)), problem?.message);
  t.deepEqual(report.affected, [], 'the blobs are intact: no point loses data');
  await restores(t, repo, b.id, join(dir, 'b-out.img'), imgB);
  await restores(t, repo, a.id, join(dir, 'a-out.img'), imgA);
});

test('a damaged point file: points lists the others with a warning naming it (exit 3), check names it, the other point restores', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const { dir, repo, imgA, a, b } = await twoPoints(t);
  await flipByte(join(repo, 'points', `${b.id}.json`), 20);
  const r = await drctl(['points', '--repo', repo, '--json']);
  t.is(r.code, 3, r.stderr);
  t.deepEqual(json<{ id: string }[]>(r).map((p) => p.id), [a.id]);
  t.true(r.stderr.includes(`point file ${b.id.slice(0, 12)} is damaged`), r.stderr);
  const text = await drctl(['points', '--repo', repo]);
  t.is(text.code, 3);
  t.true(text.stdout.includes(a.id.slice(0, 12)), text.stdout);
  const c = await drctl(['check', '--repo', repo, '--json']);
  t.is(c.code, 1);
  t.true(json<Report>(c).problems.some((p) => p.kind === 'damaged-point' && p.message.includes(b.id.slice(0, 12))));
  await restores(t, repo, a.id, join(dir, 'a-out.img'), imgA);
});

test('kill -9 mid-backup: check passes, older points restore, the next backup needs no unlock', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const dir = await tempDir(t);
  const repo = join(dir, 'repo');
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  const small = join(dir, 'small.img');
  await makeRawImage(small, 16 * MiB, standardRegions('s').filter((r) => r.offset < 16 * MiB));
  const first = json<{ id: string }>(await drctl(['backup', '--repo', repo, '--image', small, '--name', 's', '--json']));
  const big = join(dir, 'big.img');
  await makeRawImage(big, 384 * MiB, Array.from({ length: 12 }, (_, i) => ({ offset: i * 32 * MiB, data: seededBytes(`big${i}`, 24 * MiB) })));
  const before = (await packFiles(repo)).length;
  const child = startDrctl(['backup', '--repo', repo, '--image', big, '--name', 'big']);
  // Kill once the backup is writing packs (it has made progress but cannot have committed).
  for (let i = 0; i < 400 && (await packFiles(repo)).length <= before + 1; i++) await new Promise((r) => setTimeout(r, 25));
  child.kill('SIGKILL');
  await new Promise((r) => child.on('close', r));
  const points = json<{ id: string }[]>(await drctl(['points', '--repo', repo, '--json']));
  t.deepEqual(points.map((p) => p.id), [first.id], 'the killed backup must not have committed a point');
  const check = await drctl(['check', '--repo', repo, '--read-data', '--json']);
  t.is(check.code, 0, check.stdout);
  t.true(json<Report>(check).unindexedPacks >= 1, 'packs of the killed run are left for prune');
  await restores(t, repo, first.id, join(dir, 'small-out.img'), small);
  const next = await drctl(['backup', '--repo', repo, '--image', small, '--name', 's']);
  t.is(next.code, 0, next.stderr);
});

test('a target that runs out of space: exit 1 naming it, nothing committed, older points restore', async (t) => {
  if (!requireTools(t, 'qemu-img', 'mkfs.ext4', 'mount', 'umount')) return;
  if (process.getuid?.() !== 0) {
    if (process.env.DR_REQUIRE_INTEGRATION === '1') t.fail('needs root to loop-mount a small filesystem');
    else t.pass();
    return;
  }
  const dir = await tempDir(t);
  const vol = join(dir, 'vol.img');
  const mnt = join(dir, 'mnt');
  const { execFileSync } = await import('node:child_process');
  const { mkdir } = await import('node:fs/promises');
  execFileSync('truncate', ['-s', '40M', vol]);
  execFileSync('mkfs.ext4', ['-q', '-F', vol]);
  await mkdir(mnt);
  execFileSync('mount', ['-o', 'loop', vol, mnt]);
  t.teardown(() => { execFileSync('umount', [mnt]); });
  const repo = join(mnt, 'repo');
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  const small = join(dir, 'small.img');
  await makeRawImage(small, 8 * MiB, [{ offset: 0, data: seededBytes('small', 4 * MiB) }]);
  const first = json<{ id: string }>(await drctl(['backup', '--repo', repo, '--image', small, '--name', 'small', '--json']));
  const big = join(dir, 'big.img');
  await makeRawImage(big, 64 * MiB, [{ offset: 0, data: seededBytes('big', 60 * MiB) }]);
  const r = await drctl(['backup', '--repo', repo, '--image', big, '--name', 'big']);
  t.is(r.code, 1);
  const line = r.stderr.trim().split('\n').at(-1) ?? '';
  t.true(line.includes(repo), line);
  t.regex(line, /out of space.*nothing was committed/);
  const points = json<{ id: string }[]>(await drctl(['points', '--repo', repo, '--json']));
  t.deepEqual(points.map((p) => p.id), [first.id]);
  const check = await drctl(['check', '--repo', repo, '--read-data']);
  t.is(check.code, 0, check.stderr);
  await restores(t, repo, first.id, join(dir, 'small-out.img'), small);
  t.deepEqual(await readdir(join(repo, 'tmp')), [], 'no temp files left behind');
});

test('a bad sector under a pack: restore of its point fails in one line naming the pack and EIO; check --read-data names that point and checks the rest', async (t) => {
  if (!requireTools(t, 'qemu-img', 'qemu-storage-daemon', 'mkfs.ext4', 'debugfs', 'mount', 'umount')) return;
  if (process.getuid?.() !== 0) {
    if (process.env.DR_REQUIRE_INTEGRATION === '1') t.fail('needs root to loop-mount a filesystem');
    else t.pass();
    return;
  }
  const { execFileSync } = await import('node:child_process');
  const { mkdir } = await import('node:fs/promises');
  const { faultyImage } = await import('../support/faulty-disk.js');
  const dir = await tempDir(t);
  const vol = join(dir, 'vol.img');
  const mnt = join(dir, 'mnt');
  execFileSync('truncate', ['-s', '64M', vol]);
  execFileSync('mkfs.ext4', ['-q', '-F', '-b', '4096', vol]);
  await mkdir(mnt);
  execFileSync('mount', ['-o', 'loop', vol, mnt]);
  const repo = join(mnt, 'repo');
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  const a = join(dir, 'a.img');
  const b = join(dir, 'b.img');
  await makeRawImage(a, 4 * MiB, [{ offset: 0, data: seededBytes('a', 4 * MiB) }]);
  await makeRawImage(b, 4 * MiB, [{ offset: 0, data: seededBytes('b', 4 * MiB) }]);
  const pa = json<{ id: string }>(await drctl(['backup', '--repo', repo, '--image', a, '--name', 'a', '--json']));
  const before = await packFiles(repo);
  const pb = json<{ id: string }>(await drctl(['backup', '--repo', repo, '--image', b, '--name', 'b', '--json']));
  const bPack = (await packFiles(repo)).filter((p) => !before.includes(p))[0] as string;
  const key = bPack.slice(repo.length + 1);
  execFileSync('umount', [mnt]);
  // Where b's pack sits on the volume: a read error from its second block on.
  const block = Number(execFileSync('debugfs', ['-R', `bmap /repo/${key} 1`, vol], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
  t.true(block > 0, `block of ${key}: ${block}`);
  const faulty = await faultyImage(t, dir, vol, block * 4096, { writable: true });
  execFileSync('mount', ['-o', 'loop', faulty, mnt]);
  t.teardown(() => { execFileSync('umount', [mnt]); }); // before the export goes (teardowns run last first)

  const r = await drctl(['restore', '--repo', repo, pb.id, '--to', join(dir, 'b-out.img')]);
  t.is(r.code, 1);
  const line = r.stderr.trim();
  t.false(line.includes('\n'), line);
  t.true(line.includes(key), line);
  t.regex(line, /EIO/);
  t.regex(line, /I\/O error: check the disk/);
  t.notRegex(line, /bug/);

  const ok = await drctl(['restore', '--repo', repo, pa.id, '--to', join(dir, 'a-out.img')]);
  t.is(ok.code, 0, ok.stderr);
  t.true((await readFile(join(dir, 'a-out.img'))).equals(await readFile(a)), 'the other point restores byte-identical');

  const c = await drctl(['check', '--repo', repo, '--read-data', '--json']);
  t.is(c.code, 1, c.stderr);
  const report = json<Report>(c);
  t.deepEqual(report.affected.map((x) => x.id), [pb.id], 'exactly the point whose pack cannot be read');
  t.true(report.problems.some((p) => p.kind === 'unreadable-pack' && p.message.includes(key.slice(-64, -52))), JSON.stringify(report.problems));
});


/** A VM point and a file point, each in its own index file; small, one pack each. */
async function vmAndFilePoints(t: ExecutionContext) {
  const dir = await tempDir(t);
  const repo = join(dir, 'repo');
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  const img = join(dir, 'vm.img');
  await makeRawImage(img, 4 * MiB, [{ offset: 0, data: seededBytes('vm', 3 * MiB) }]);
  const folder = join(dir, 'files');
  const { mkdir } = await import('node:fs/promises');
  await mkdir(folder);
  await writeFile(join(folder, 'f.bin'), seededBytes('f', 100_000));
  const vm = json<{ id: string }>(await drctl(['backup', '--repo', repo, '--image', img, '--name', 'vm', '--json']));
  const files = json<{ id: string }>(await drctl(['backup', '--repo', repo, '--files', folder, '--name', 'files', '--json']));
  return { dir, repo, img, vm, files };
}

test('index files lost: restore and prune say that `drctl repair index` rebuilds the index, not only to restore another point', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const { dir, repo, vm, files } = await vmAndFilePoints(t);
  const { rm } = await import('node:fs/promises');
  for (const f of await readdir(join(repo, 'index'))) await rm(join(repo, 'index', f));
  const packsBefore = await packFiles(repo);
  for (const [id, to] of [[vm.id, join(dir, 'vm-out.img')], [files.id, join(dir, 'files-out')]] as const) {
    const r = await drctl(['restore', '--repo', repo, id, '--to', to]);
    t.is(r.code, 1, r.stderr);
    t.regex(r.stderr, /is not in the index of .*\(if index files were lost or damaged, `drctl repair index` rebuilds the index from the packs' own headers; then `drctl check` says what is still missing\)/, r.stderr);
    t.notRegex(r.stderr, /restore from another point/);
  }
  const prune = await drctl(['prune', '--repo', repo]);
  t.is(prune.code, 1);
  t.regex(prune.stderr, /prune stopped before deleting anything: 2 pack\(s\) are in no index, so index files were lost or damaged \(`drctl repair index` rebuilds the index/);
  t.deepEqual(await packFiles(repo), packsBefore, 'prune deleted nothing');
});

test('a truncated pack: restore says it is truncated; after repair index left it out, check says it is damaged instead of sending back to repair', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const { dir, repo, vm } = await vmAndFilePoints(t);
  const points = json<{ id: string; disks?: unknown[] }[]>(await drctl(['points', '--repo', repo, '--json']));
  t.is(points.length, 2);
  // The VM point's pack: the larger one.
  const packs = await packFiles(repo);
  const sizes = await Promise.all(packs.map(async (p) => (await stat(p)).size));
  const victim = packs[sizes.indexOf(Math.max(...sizes))] as string;
  const name = victim.split('/').at(-1) as string;
  await truncate(victim, 1_000_000);
  const r = await drctl(['restore', '--repo', repo, vm.id, '--to', join(dir, 'out.img')]);
  t.is(r.code, 1);
  t.regex(r.stderr, new RegExp(`pack ${name.slice(0, 12)} is truncated`));
  t.notRegex(r.stderr, /cannot be decompressed/);

  t.is((await drctl(['repair', 'index', '--repo', repo])).code, 3);
  const check = await drctl(['check', '--repo', repo]);
  t.is(check.code, 1);
  t.regex(check.stderr, new RegExp(`pack ${name.slice(0, 12)} is in no index because it is damaged: it has no pack trailer \\(truncated or overwritten\\)`));
  t.regex(check.stderr, /`drctl repair index` leaves them out too/);
  t.notRegex(check.stderr, /pack\(s\) are in no index: if index files were lost/, 'no pack left that repair could index');
  t.is(json<{ unindexedDamaged: { pack: string }[] }>(await drctl(['check', '--repo', repo, '--json'])).unindexedDamaged[0]?.pack, name);
});

test('prune with a damaged point file: names the file\'s path and says to move it out of points/ after check confirms', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const { repo, files } = await vmAndFilePoints(t);
  const file = join(repo, 'points', `${files.id}.json`);
  await flipByte(file, 20);
  const r = await drctl(['prune', '--repo', repo]);
  t.is(r.code, 1);
  t.true(r.stderr.includes(`point file(s) ${file} are damaged`), r.stderr);
  t.regex(r.stderr, /prune stopped before deleting anything/);
  t.regex(r.stderr, /run `drctl check` to confirm, then move that file out of points\/ \(this drops that point\) and run prune again/);
  // Doing what it says lets prune run.
  const { rename } = await import('node:fs/promises');
  await rename(file, join(repo, '..', 'damaged-point.json'));
  const again = await drctl(['prune', '--repo', repo]);
  t.is(again.code, 0, again.stderr);
});
