/**
 * An image restore never leaves DEST looking whole when it is not, and never loses the image it
 * replaces: it writes beside DEST and renames only a whole, verified image over it. Also: a
 * name that asks for qcow2 gets qcow2, names of other formats are refused, missing folders
 * are created, and --to inside the repository or an empty --include are refused.
 *
 * To catch a restore in the middle, every pack of the repository is made a FIFO: the restore
 * blocks at its first read of the repository, after it has started its destination.
 */
import test, { type ExecutionContext } from 'ava';
import { chmod, chown, lstat, mkdir, open, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { constants } from 'node:fs';
import { join } from 'node:path';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { drctl, json, oneLine, startDrctl } from '../support/cli.js';
import { mountSmallVolume } from '../support/small-volume.js';
import { tempDir } from '../support/tmp.js';
import { requireTools } from '../support/tools.js';
import { MiB, makeRawImage, seededBytes, standardRegions } from '../support/images.js';

async function setup(t: ExecutionContext, sizeBytes = 64 * MiB) {
  const dir = await tempDir(t);
  const repo = join(dir, 'repo');
  const img = join(dir, 'disk.img');
  await makeRawImage(img, sizeBytes, standardRegions().filter((r) => r.offset + r.data.length <= sizeBytes));
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  const b = await drctl(['backup', '--repo', repo, '--image', img, '--name', 'web01', '--json']);
  t.is(b.code, 0, b.stderr);
  return { dir, repo, img, point: json<{ id: string }>(b).id };
}

/** Replace every pack of `repo` by a FIFO: a read of it blocks until a writer opens it. */
async function stallPacks(repo: string): Promise<string[]> {
  const fifos: string[] = [];
  for (const sub of await readdir(join(repo, 'data'))) {
    for (const name of await readdir(join(repo, 'data', sub))) {
      const pack = join(repo, 'data', sub, name);
      await rm(pack);
      execFileSync('mkfifo', [pack]);
      fifos.push(pack);
    }
  }
  return fifos;
}

/** Open and close each FIFO for writing where a reader waits: the reader's read then fails. */
async function releaseReaders(fifos: string[]): Promise<void> {
  for (const f of fifos) {
    const h = await open(f, constants.O_WRONLY | constants.O_NONBLOCK).catch(() => undefined); // ENXIO: no reader
    await h?.close();
  }
}

function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  let stderr = '';
  child.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
  return new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stderr })));
}

/** Poll until the restore has started writing `dest`: a temporary file beside it, or DEST itself changed. */
async function destinationStarted(child: ChildProcess, dest: string, before: string | undefined): Promise<void> {
  const folder = join(dest, '..');
  for (let i = 0; i < 3000; i++) {
    const names = await readdir(folder);
    if (names.some((n) => n.includes('.partial-'))) return;
    const now = await readFile(dest, 'latin1').catch(() => undefined);
    if (now !== before) return;
    if (child.exitCode !== null) throw new Error(`drctl exited (${child.exitCode}) before it started ${dest}`);
    await sleep(20);
  }
  throw new Error(`drctl did not start ${dest}`);
}

test('kill -9 mid-restore: an existing DEST keeps its bytes, a new DEST is not created', async (t) => {
  if (!requireTools(t, 'mkfifo')) return;
  const { dir, repo, point } = await setup(t);
  await stallPacks(repo);
  const existing = join(dir, 'existing.img');
  await writeFile(existing, 'precious');
  const fresh = join(dir, 'out', 'fresh.img');
  await mkdir(join(dir, 'out'));
  for (const [dest, extra, before] of [[existing, ['--overwrite'], 'precious'], [fresh, [], undefined]] as const) {
    const child = startDrctl(['restore', '--repo', repo, point, '--to', dest, ...extra]);
    const done = exited(child);
    await destinationStarted(child, dest, before);
    child.kill('SIGKILL');
    t.is((await done).signal, 'SIGKILL');
    if (before === undefined) t.false(await stat(dest).then(() => true, () => false), `${dest} exists after kill -9 although it was never whole`);
    else t.is(await readFile(dest, 'utf8'), before, `${dest} was changed by a restore killed before it was whole`);
  }
});

test('Ctrl-C mid-restore with --overwrite: exit 1 saying DEST was not changed and the partial image was removed; DEST keeps its bytes', async (t) => {
  if (!requireTools(t, 'mkfifo')) return;
  const { dir, repo, point } = await setup(t);
  const fifos = await stallPacks(repo);
  const dest = join(dir, 'web01.img');
  await writeFile(dest, 'precious');
  const child = startDrctl(['restore', '--repo', repo, point, '--to', dest, '--overwrite']);
  const done = exited(child);
  await destinationStarted(child, dest, 'precious');
  child.kill('SIGINT');
  while (child.exitCode === null && child.signalCode === null) {
    await releaseReaders(fifos);
    await sleep(20);
  }
  const r = await done;
  t.is(r.code, 1, r.stderr);
  const last = r.stderr.trim().split('\n').at(-1) ?? '';
  t.is(last, `drctl: interrupted - ${dest} was not changed (the partial image was removed) (run the restore again)`);
  t.is(await readFile(dest, 'utf8'), 'precious');
  t.deepEqual((await readdir(dir)).filter((n) => n.startsWith('web01')), ['web01.img'], 'a partial image was left');
});

test('a volume that fills up while an existing image is replaced: exit 1 naming DEST, out of space, DEST unchanged; no partial image left', async (t) => {
  const { dir, repo } = await setup(t);
  const img = join(dir, 'big.img');
  await makeRawImage(img, 16 * MiB, [{ offset: 0, data: seededBytes('big', 12 * MiB) }]);
  const b = await drctl(['backup', '--repo', repo, '--image', img, '--name', 'big', '--json']);
  t.is(b.code, 0, b.stderr);
  const mnt = join(dir, 'small');
  if (!(await mountSmallVolume(t, mnt, 8))) return;
  const dest = join(mnt, 'disk.img');
  const old = seededBytes('old image', 4 * MiB);
  await writeFile(dest, old);
  const r = await drctl(['restore', '--repo', repo, json<{ id: string }>(b).id, '--to', dest, '--overwrite']);
  t.is(r.code, 1, r.stderr);
  const line = oneLine(r.stderr);
  t.true(line.startsWith(`drctl: cannot write restore destination ${dest} - its volume is out of space (ENOSPC); ${dest} was not changed (the partial image was removed)`), line);
  t.true((await readFile(dest)).equals(old), 'the image being replaced was lost');
  t.deepEqual(await readdir(mnt), ['disk.img']);
});

test('replacing an image keeps its mode and owner, and through a symlink replaces the file it points to; no partial image is left', async (t) => {
  const { dir, repo, img, point } = await setup(t, 16 * MiB);
  const dest = join(dir, 'vm.img');
  await writeFile(dest, 'old');
  await chmod(dest, 0o640);
  if (process.getuid?.() === 0) await chown(dest, 1234, 2345);
  const r = await drctl(['restore', '--repo', repo, point, '--to', dest, '--overwrite']);
  t.is(r.code, 0, r.stderr);
  t.true((await readFile(dest)).equals(await readFile(img)));
  const st = await stat(dest);
  t.is(st.mode & 0o7777, 0o640);
  if (process.getuid?.() === 0) t.deepEqual([st.uid, st.gid], [1234, 2345]);

  const link = join(dir, 'link.img');
  await symlink(dest, link);
  await writeFile(dest, 'old again');
  const viaLink = await drctl(['restore', '--repo', repo, point, '--to', link, '--overwrite']);
  t.is(viaLink.code, 0, viaLink.stderr);
  t.true((await lstat(link)).isSymbolicLink(), 'the symlink was replaced by a file');
  t.true((await readFile(dest)).equals(await readFile(img)));
  t.deepEqual((await readdir(dir)).filter((n) => n.includes('.partial-')), []);
});

test('a .qcow2 DEST becomes a real qcow2 image of the disk, in folders that did not exist; a raw name in a new folder too', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const { dir, repo, img, point } = await setup(t);
  const q = join(dir, 'new', 'vm', 'restored.qcow2');
  const r = await drctl(['restore', '--repo', repo, point, '--to', q]);
  t.is(r.code, 0, r.stderr);
  const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', q]).toString()) as { format: string; 'virtual-size': number; 'actual-size': number };
  t.is(info.format, 'qcow2');
  t.is(info['virtual-size'], 64 * MiB);
  t.true(info['actual-size'] < 24 * MiB, `the qcow2 is not sparse: ${info['actual-size']} bytes`);
  const back = join(dir, 'back.raw');
  execFileSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', q, back]);
  t.true((await readFile(back)).equals(await readFile(img)), 'the qcow2 holds other bytes than the disk');
  t.deepEqual(await readdir(join(dir, 'new', 'vm')), ['restored.qcow2'], 'a temporary file was left');

  const raw = join(dir, 'other', 'deeper', 'disk.raw');
  const r2 = await drctl(['restore', '--repo', repo, point, '--to', raw]);
  t.is(r2.code, 0, r2.stderr);
  t.true((await readFile(raw)).equals(await readFile(img)));
});

test('a DEST named for a format drctl does not write (.vmdk, .vhdx, .vdi, .zip, .tar, .tar.gz), or .qcow2 without qemu-img: exit 2 naming it, nothing written', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const { dir, repo, point } = await setup(t, 16 * MiB);
  for (const ext of ['vmdk', 'vhdx', 'vdi']) {
    const dest = join(dir, `vm.${ext}`);
    const r = await drctl(['restore', '--repo', repo, point, '--to', dest]);
    t.is(r.code, 2, `${dest}: ${r.stderr}`);
    const line = oneLine(r.stderr);
    t.true(line.includes(`to ${dest} - drctl writes raw images (and qcow2), not ${ext}; nothing was written`), line);
    t.true(line.includes(`restore to ${join(dir, 'vm.raw')}, then \`qemu-img convert -f raw -O ${ext} `), line);
  }
  for (const ext of ['zip', 'tar', 'tar.gz']) {
    const dest = join(dir, `vm.${ext}`);
    const r = await drctl(['restore', '--repo', repo, point, '--to', dest]);
    t.is(r.code, 2, `${dest}: ${r.stderr}`);
    const line = oneLine(r.stderr);
    t.true(line.includes(`to ${dest} - drctl writes a disk as a raw image, not a ${ext} archive`), line);
  }
  const q = join(dir, 'vm.qcow2');
  const noQemuImg = await drctl(['restore', '--repo', repo, point, '--to', q], { env: { PATH: await tempDir(t) } });
  t.is(noQemuImg.code, 2, noQemuImg.stderr);
  t.regex(oneLine(noQemuImg.stderr), new RegExp(`cannot write ${q.replace(/[.]/g, '\\.')} as a qcow2 image - qemu-img is not installed`));
  t.deepEqual((await readdir(dir)).filter((n) => n.startsWith('vm')), [], 'something was written');
});

test('--to inside the repository (directly or through a symlink) is refused for image and file points, naming both; an empty --include is refused', async (t) => {
  const { dir, repo, point } = await setup(t, 16 * MiB);
  const folder = join(dir, 'folder');
  await mkdir(folder);
  await writeFile(join(folder, 'a.txt'), 'a');
  const files = await drctl(['backup', '--repo', repo, '--files', folder, '--name', 'folder', '--json']);
  t.is(files.code, 0, files.stderr);
  const filesPoint = json<{ id: string }>(files).id;
  const alias = join(dir, 'alias');
  await symlink(repo, alias);
  const before = (await readdir(repo)).sort();
  for (const [p, to] of [[point, join(repo, 'disk.raw')], [point, join(alias, 'data', 'disk.raw')], [filesPoint, join(repo, 'restored')], [filesPoint, repo]] as const) {
    const r = await drctl(['restore', '--repo', repo, p, '--to', to]);
    t.is(r.code, 2, `${to}: ${r.stderr}`);
    t.true(oneLine(r.stderr).includes(`restore destination ${to} is inside the repository ${repo} - nothing was written`), r.stderr);
  }
  t.deepEqual((await readdir(repo)).sort(), before);

  const out = join(dir, 'out');
  const empty = await drctl(['restore', '--repo', repo, filesPoint, '--include', '', '--to', out]);
  t.is(empty.code, 2, empty.stderr);
  t.regex(oneLine(empty.stderr), /--include was given an empty path/);
  t.false(await stat(out).then(() => true, () => false), `${out} was created`);
});
