/**
 * Bad input an operator can meet: each gives one clear line naming the path and what to do,
 * the documented exit code, and leaves the repository consistent.
 */
import test from 'ava';
import { mkdir, readFile, readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { drctl, json, oneLine } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';
import { requireTools } from '../support/tools.js';
import { MiB, makeRawImage, standardRegions } from '../support/images.js';
import { faultyImage } from '../support/faulty-disk.js';
import { randomBytes } from 'node:crypto';

test('a missing repository: exit 2, names the path and `drctl init`', async (t) => {
  const dir = await tempDir(t);
  const repo = join(dir, 'nope');
  const r = await drctl(['points', '--repo', repo]);
  t.is(r.code, 2);
  const line = oneLine(r.stderr);
  t.true(line.includes(repo));
  t.regex(line, /drctl init/);
});

test('--version prints the version of package.json and exits 0; an unknown option exits 2', async (t) => {
  const pkg = JSON.parse(await readFile(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  for (const flag of ['--version', '-V']) {
    const r = await drctl([flag]);
    t.is(r.code, 0, r.stderr);
    t.is(r.stdout.trim(), `drctl ${pkg.version}`);
  }
  const bad = await drctl(['--verison']);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /unknown option '--verison'/);
});

test('no --repo and no DRCTL_REPO: exit 2 saying how to give one', async (t) => {
  const r = await drctl(['points']);
  t.is(r.code, 2);
  t.regex(oneLine(r.stderr), /--repo.*DRCTL_REPO/);
});

test('a folder that is not a repository: exit 2, names it, nothing written there', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'notes.txt'), 'hello');
  const r = await drctl(['backup', '--repo', dir, '--files', dir, '--name', 'x']);
  t.is(r.code, 2);
  const line = oneLine(r.stderr);
  t.true(line.includes(dir));
  t.regex(line, /not a drctl repository/);
  const { readdir } = await import('node:fs/promises');
  t.deepEqual(await readdir(dir), ['notes.txt']);
  const again = await drctl(['init', '--repo', dir]);
  t.is(again.code, 2, 'init over a non-empty folder must refuse');
  t.regex(oneLine(again.stderr), /not empty/);
  // A file given as the repository: the same, not an I/O error of the volume.
  const file = join(dir, 'notes.txt');
  const onFile = await drctl(['points', '--repo', file]);
  t.is(onFile.code, 2, onFile.stderr);
  t.true(oneLine(onFile.stderr).includes(file));
  t.regex(oneLine(onFile.stderr), /not a drctl repository/);
});

test('a repository of a newer format version: exit 2, says to upgrade, changes nothing', async (t) => {
  const dir = await tempDir(t);
  const repo = join(dir, 'repo');
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  const cfgPath = join(repo, 'config.json');
  const cfg = JSON.parse(await readFile(cfgPath, 'utf8')) as { formatVersion: number };
  cfg.formatVersion = 99;
  await writeFile(cfgPath, JSON.stringify(cfg));
  const before = await readFile(cfgPath);
  const r = await drctl(['check', '--repo', repo]);
  t.is(r.code, 2);
  const line = oneLine(r.stderr);
  t.true(line.includes(repo));
  t.regex(line, /format version 99.*upgrade drctl/);
  t.true((await readFile(cfgPath)).equals(before));
});

test('an unreadable source: exit 2 naming the source; the repository stays clean', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const dir = await tempDir(t);
  const repo = join(dir, 'repo');
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  const missing = join(dir, 'missing.img');
  const r1 = await drctl(['backup', '--repo', repo, '--image', missing, '--name', 'x']);
  t.is(r1.code, 2);
  t.true(oneLine(r1.stderr).includes(missing));
  const folderAsImage = await drctl(['backup', '--repo', repo, '--image', dir, '--name', 'x']);
  t.is(folderAsImage.code, 2);
  t.regex(oneLine(folderAsImage.stderr), /not a regular file/);
  // A qcow2 whose L1 table offset points far past the end: qemu-img cannot open it.
  const garbage = join(dir, 'damaged.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', garbage, '16M']);
  const bytes = await readFile(garbage);
  bytes.writeBigUInt64BE(0x7fff_ffff_fff0_0000n, 40);
  await writeFile(garbage, bytes);
  const r2 = await drctl(['backup', '--repo', repo, '--image', garbage, '--name', 'x']);
  t.is(r2.code, 2);
  t.true(oneLine(r2.stderr).includes(garbage));
  const missingDir = join(dir, 'no-such-folder');
  const r3 = await drctl(['backup', '--repo', repo, '--files', missingDir, '--name', 'x']);
  t.is(r3.code, 2);
  t.true(oneLine(r3.stderr).includes(missingDir));
  const check = await drctl(['check', '--repo', repo, '--json']);
  t.is(check.code, 0, check.stderr);
  t.is(json<{ points: number }>(check).points, 0);
});

test('usage errors exit 2: no source, both sources, unknown flag, bad extent list', async (t) => {
  const dir = await tempDir(t);
  const repo = join(dir, 'repo');
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  t.is((await drctl(['backup', '--repo', repo])).code, 2);
  t.is((await drctl(['backup', '--repo', repo, '--image', 'a', '--files', 'b'])).code, 2);
  t.is((await drctl(['points', '--repo', repo, '--bogus'])).code, 2);
  await writeFile(join(dir, 'ext.json'), '{"offset": 1}');
  await mkdir(join(dir, 'src'));
  const r = await drctl(['backup', '--repo', repo, '--image', join(dir, 'x.img'), '--changed-extents', join(dir, 'ext.json')]);
  t.is(r.code, 2);
  t.regex(oneLine(r.stderr), /ext\.json/);
  const unknownPoint = await drctl(['restore', '--repo', repo, 'deadbeef', '--to', join(dir, 'out')]);
  t.is(unknownPoint.code, 2);
  t.regex(oneLine(unknownPoint.stderr), /no recovery point deadbeef/);
});

test('--json errors are one JSON document on stdout too, also for an unknown option', async (t) => {
  const dir = await tempDir(t);
  const r = await drctl(['points', '--repo', join(dir, 'missing'), '--json']);
  t.is(r.code, 2);
  const doc = json<{ error: { code: string; message: string } }>(r);
  t.is(doc.error.code, 'REPO_NOT_FOUND');
  // A mistake commander finds before the command runs: still one document, naming the option.
  for (const cmd of [['backup', '--repo', dir, '--files', dir], ['status'], ['check', '--repo', dir]]) {
    const u = await drctl([...cmd, '--json', '--bogus']);
    t.is(u.code, 2, cmd[0]);
    t.deepEqual(json<{ error: { code: string; message: string } }>(u).error.code, 'USAGE');
    t.regex(u.stdout, /unknown option '--bogus'/);
  }
});

test('restore never overwrites an existing file without --overwrite', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const dir = await tempDir(t);
  const repo = join(dir, 'repo');
  const img = join(dir, 'disk.img');
  await makeRawImage(img, 16 * MiB, standardRegions().filter((r) => r.offset < 16 * MiB));
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  t.is((await drctl(['backup', '--repo', repo, '--image', img, '--name', 'd'])).code, 0);
  const dest = join(dir, 'existing.img');
  await writeFile(dest, 'precious');
  const r = await drctl(['restore', '--repo', repo, 'latest', '--to', dest]);
  t.is(r.code, 2);
  t.regex(oneLine(r.stderr), /already exists.*--overwrite/);
  t.is(await readFile(dest, 'utf8'), 'precious');
  const r2 = await drctl(['restore', '--repo', repo, 'latest', '--to', dest, '--overwrite']);
  t.is(r2.code, 0, r2.stderr);
  t.true((await readFile(dest)).equals(await readFile(img)));
});

test('a source disk that fails with I/O errors mid-backup: exit 2 naming it and the I/O error; older points stay restorable', async (t) => {
  if (!requireTools(t, 'qemu-img', 'qemu-storage-daemon')) return;
  const dir = await tempDir(t);
  const repo = join(dir, 'repo');
  const raw = join(dir, 'disk.img');
  await writeFile(raw, randomBytes(24 * MiB));
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  const first = await drctl(['backup', '--repo', repo, '--image', raw, '--name', 'disk', '--json']);
  t.is(first.code, 0, first.stderr);

  const faulty = await faultyImage(t, dir, raw, 16 * MiB); // the first 16 MiB read fine
  const r = await drctl(['backup', '--repo', repo, '--image', faulty, '--name', 'disk']);
  t.is(r.code, 2);
  const line = oneLine(r.stderr);
  t.true(line.includes(`cannot read source ${faulty}`), line);
  t.regex(line, /EIO/);
  t.regex(line, /I\/O error: check that disk or volume/);
  t.notRegex(line, /bug/);

  const check = await drctl(['check', '--repo', repo, '--read-data']);
  t.is(check.code, 0, check.stdout + check.stderr);
  const points = json<{ id: string }[]>(await drctl(['points', '--repo', repo, '--json']));
  t.is(points.length, 1, 'nothing was committed');
  const out = join(dir, 'out.img');
  t.is((await drctl(['restore', '--repo', repo, json<{ id: string }>(first).id, '--to', out])).code, 0);
  t.true((await readFile(out)).equals(await readFile(raw)), 'the older point restores byte-identical');
});

test('a restore destination that runs out of space: exit 1, one line naming it and the lack of space, no partial image or archive left', async (t) => {
  if (process.getuid?.() !== 0) {
    if (process.env.DR_REQUIRE_INTEGRATION === '1') t.fail('needs root to mount a small tmpfs');
    else t.pass();
    return;
  }
  const dir = await tempDir(t);
  const repo = join(dir, 'repo');
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  const img = join(dir, 'disk.img');
  await makeRawImage(img, 16 * MiB, [{ offset: 0, data: randomBytes(8 * MiB) }]);
  const folder = join(dir, 'folder');
  await mkdir(folder);
  for (const n of ['a', 'b', 'c']) await writeFile(join(folder, n), randomBytes(3 * MiB));
  const vmPoint = json<{ id: string }>(await drctl(['backup', '--repo', repo, '--image', img, '--name', 'disk', '--json']));
  const filesPoint = json<{ id: string }>(await drctl(['backup', '--repo', repo, '--files', folder, '--name', 'folder', '--json']));

  const mnt = join(dir, 'small');
  await mkdir(mnt);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mnt]);
  t.teardown(() => void execFileSync('umount', [mnt]));
  for (const [point, to, left] of [
    [vmPoint.id, join(mnt, 'disk.img'), /the partial image was removed/],
    [filesPoint.id, join(mnt, 'folder'), /the files restored so far are left there/],
    [filesPoint.id, join(mnt, 'folder.tar'), /the partial archive was removed/],
    [filesPoint.id, join(mnt, 'folder.zip'), /the partial archive was removed/],
  ] as const) {
    const r = await drctl(['restore', '--repo', repo, point, '--to', to]);
    t.is(r.code, 1, `${to}: ${r.stderr}`);
    const line = oneLine(r.stderr);
    t.true(line.includes(`cannot write restore destination ${to}`), line);
    t.regex(line, /out of space \(ENOSPC\)/);
    t.regex(line, left);
    t.regex(line, /give --to a place with room; the repository is unchanged/);
    t.notRegex(line, /bug/);
  }
  const leftOver = (await readdir(mnt)).sort();
  t.deepEqual(leftOver, ['folder'], 'only the folder restore leaves what it wrote');
  t.is((await drctl(['check', '--repo', repo, '--read-data'])).code, 0);
});

test('a restore destination or repository that cannot be created (in /proc, behind a dangling symlink, under a file, an archive type drctl does not write) fails in one line instead of hanging', async (t) => {
  const dir = await tempDir(t);
  const repo = join(dir, 'repo');
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  const folder = join(dir, 'folder');
  await mkdir(folder);
  await writeFile(join(folder, 'a'), 'some bytes');
  const img = join(dir, 'disk.img');
  await makeRawImage(img, 4 * MiB, [{ offset: 0, data: randomBytes(MiB) }]);
  const files = json<{ id: string }>(await drctl(['backup', '--repo', repo, '--files', folder, '--name', 'f', '--json']));
  const disk = json<{ id: string }>(await drctl(['backup', '--repo', repo, '--image', img, '--name', 'd', '--json']));
  const dangling = join(dir, 'gone');
  await symlink(join(dir, 'no-such-folder'), dangling);
  // Node's recursive mkdir never returned for these (the parent exists, creating the child fails with ENOENT).
  for (const [point, to] of [
    [files.id, '/proc/drctl-restore'], [files.id, join(dangling, 'out')], [files.id, join(dangling, 'out.tar')], [disk.id, join(dangling, 'out.img')],
    [files.id, join(folder, 'a', 'sub')], [files.id, join(folder, 'a', 'x.zip')], [disk.id, join(folder, 'a', 'x.img')],
  ] as const) {
    const r = await drctl(['restore', '--repo', repo, point, '--to', to]);
    t.is(r.code, 2, `${to}: ${r.stderr}`);
    const line = oneLine(r.stderr);
    t.true(line.startsWith(`drctl: cannot create restore destination ${to} - `), line);
    t.regex(line, /ENOENT|EACCES|ENOTDIR/);
    t.notRegex(line, /bug/);
  }
  // A destination that opens but takes no writes (a /proc file): one line, exit 1, not "a bug".
  const proc = await drctl(['restore', '--repo', repo, disk.id, '--to', '/proc/version', '--overwrite']);
  t.is(proc.code, 1, proc.stderr);
  t.regex(oneLine(proc.stderr), /^drctl: cannot write restore destination \/proc\/version - /);
  t.notRegex(proc.stderr, /bug/);
  const bz2 = await drctl(['restore', '--repo', repo, files.id, '--to', join(dir, 'out.tar.bz2')]);
  t.is(bz2.code, 2, bz2.stderr);
  t.regex(oneLine(bz2.stderr), /out\.tar\.bz2 names a \.tar\.bz2 archive, which drctl does not write/);
  for (const repo of ['/proc/drctl-repo', join(dangling, 'repo'), join(folder, 'a')]) {
    const init = await drctl(['init', '--repo', repo]);
    t.is(init.code, 2, init.stderr);
    t.true(oneLine(init.stderr).startsWith(`drctl: cannot create repository folder ${repo} - `), init.stderr);
  }
});

test('a --name that is empty, holds a newline or looks like an option is refused (exit 2) before anything is written', async (t) => {
  const dir = await tempDir(t);
  const repo = join(dir, 'repo');
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  const folder = join(dir, 'folder');
  await mkdir(folder);
  for (const name of ['', ' ', 'a\nb', '--json']) {
    const r = await drctl(['backup', '--repo', repo, '--files', folder, '--name', name]);
    t.is(r.code, 2, JSON.stringify(name));
    t.true(oneLine(r.stderr).startsWith(`drctl: --name ${JSON.stringify(name)} `), r.stderr);
  }
  t.deepEqual(json<unknown[]>(await drctl(['points', '--repo', repo, '--json'])), []);
});
