/**
 * Image restores onto what is not a regular file: a block device (an LV, a loop or iSCSI disk)
 * is written in place and ends up byte-identical to the disk, old data in its holes included;
 * character devices, FIFOs and sockets are refused and left alone.
 */
import test, { type ExecutionContext } from 'ava';
import { lstat, mkdir, open, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { constants, type Stats } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { drctl, json, oneLine } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';
import { requireRoot, requireTools } from '../support/tools.js';
import { MiB, makeRawImage, seededBytes, standardRegions } from '../support/images.js';

/**
 * A 64 MiB disk with holes, zero chunks and a chunk whose first 4 KiB block is zero (the
 * unaligned region of standardRegions, and one more): a file restore leaves those as holes.
 */
async function setup(t: ExecutionContext) {
  const dir = await tempDir(t);
  const repo = join(dir, 'repo');
  const img = join(dir, 'disk.img');
  await makeRawImage(img, 64 * MiB, [
    ...standardRegions(),
    { offset: 20 * MiB, data: Buffer.concat([seededBytes('a', 64 * 1024), Buffer.alloc(4096), seededBytes('b', 64 * 1024)]) },
  ]);
  t.is((await drctl(['init', '--repo', repo])).code, 0);
  const b = await drctl(['backup', '--repo', repo, '--image', img, '--name', 'web01', '--json']);
  t.is(b.code, 0, b.stderr);
  return { dir, repo, img, point: json<{ id: string }>(b).id };
}

/**
 * A loop device over `file`, detached when the test ends. A restore that unlinks the device
 * node (the bug this file guards against) leaves nothing to detach: the node is put back first.
 */
async function loopDevice(t: ExecutionContext, file: string): Promise<string> {
  const dev = execFileSync('losetup', ['--find', '--show', file]).toString().trim();
  const { rdev } = await stat(dev);
  t.teardown(async () => {
    if (!(await stat(dev).then(() => true, () => false))) {
      execFileSync('mknod', ['-m', '600', dev, 'b', String((rdev >> 8) & 0xfff), String((rdev & 0xff) | ((rdev >> 12) & 0xfff00))]);
    }
    execFileSync('losetup', ['-d', dev]);
  });
  return dev;
}

test('a block device, named through a symlink as /dev/VG/LV is: written in place, byte-identical to the disk over its size (old data in holes zeroed, with or without blkdiscard), the rest and the node untouched', async (t) => {
  if (!requireTools(t, 'losetup') || !requireRoot(t, 'attach a loop device')) return;
  const { dir, repo, img, point } = await setup(t);
  const old = seededBytes('old data', 80 * MiB);
  const backing = join(dir, 'lv.img');
  await writeFile(backing, old);
  const dev = await loopDevice(t, backing);
  await mkdir(join(dir, 'vg'));
  const lv = join(dir, 'vg', 'lv');
  await symlink(dev, lv);

  const r = await drctl(['restore', '--repo', repo, point, '--to', lv, '--overwrite', '--json']);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(json<{ files: string[] }>(r).files, [lv]);
  t.true((await lstat(lv)).isSymbolicLink(), 'the symlink is still a symlink');
  t.true((await stat(dev)).isBlockDevice(), `${dev} is still a block device`);
  const onDevice = await readFile(dev);
  t.is(onDevice.length, 80 * MiB);
  t.true(onDevice.subarray(0, 64 * MiB).equals(await readFile(img)), 'the first 64 MiB of the device differ from the disk');
  t.true(onDevice.subarray(64 * MiB).equals(old.subarray(64 * MiB)), 'the device past the disk was changed');

  // The device path itself, once more over fresh old data and without blkdiscard on PATH (the
  // zeros are written then): same result, and the summary says what was done.
  await writeFile(dev, old);
  const again = await drctl(['restore', '--repo', repo, point, '--to', dev, '--overwrite'], { env: { PATH: await tempDir(t) } });
  t.is(again.code, 0, again.stderr);
  t.regex(again.stdout, new RegExp(`to ${dev}\\n.*written, the rest of the disk zeroed on ${dev}`));
  t.true((await readFile(dev)).subarray(0, 64 * MiB).equals(await readFile(img)), 'second restore differs');
});

test('a block device without --overwrite, or smaller than the disk: exit 2 in one line naming it (and both sizes); nothing on it changes', async (t) => {
  if (!requireTools(t, 'losetup') || !requireRoot(t, 'attach a loop device')) return;
  const { dir, repo, point } = await setup(t);
  const old = seededBytes('old data', 80 * MiB);
  const big = join(dir, 'big.img');
  await writeFile(big, old);
  const dev = await loopDevice(t, big);
  const r = await drctl(['restore', '--repo', repo, point, '--to', dev]);
  t.is(r.code, 2, r.stderr);
  const line = oneLine(r.stderr);
  t.true(line.includes(dev), line);
  t.regex(line, /--overwrite/);
  t.true((await readFile(dev)).equals(old), 'the device was written without --overwrite');

  const small = join(dir, 'small.img');
  await writeFile(small, old.subarray(0, 32 * MiB));
  const smallDev = await loopDevice(t, small);
  const s = await drctl(['restore', '--repo', repo, point, '--to', smallDev, '--overwrite']);
  t.is(s.code, 2, s.stderr);
  const sline = oneLine(s.stderr);
  t.true(sline.includes(`block device ${smallDev} holds ${32 * MiB} bytes, less than the ${64 * MiB} bytes of disk disk.img`), sline);
  t.true((await stat(smallDev)).isBlockDevice(), `${smallDev} is still a block device`);
  t.true((await readFile(smallDev)).equals(old.subarray(0, 32 * MiB)), 'the small device was written');
});

test('a character device, a FIFO or a socket as --to: exit 2 in one line naming it, even with --overwrite; it is left as it was', async (t) => {
  if (!requireRoot(t, 'create a character device node')) return;
  const { dir, repo, point } = await setup(t);
  const chr = join(dir, 'null');
  execFileSync('mknod', ['-m', '666', chr, 'c', '1', '3']); // a private /dev/null
  const fifo = join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  // A reader, so that a restore that opens the FIFO does not hang the test but fails it.
  const reader = await open(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  t.teardown(() => reader.close());
  const sock = join(dir, 'sock');
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(sock, resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  for (const [path, kind, isKind] of [
    [chr, 'a character device', (s: Stats) => s.isCharacterDevice()],
    [fifo, 'a FIFO', (s: Stats) => s.isFIFO()],
    [sock, 'a socket', (s: Stats) => s.isSocket()],
  ] as const) {
    const r = await drctl(['restore', '--repo', repo, point, '--to', path, '--overwrite']);
    t.is(r.code, 2, `${path}: ${r.stderr}`);
    const line = oneLine(r.stderr);
    t.true(line.includes(`restore destination ${path} is ${kind}, not an image file or a block device - nothing was written`), line);
    t.true(isKind(await lstat(path)), `${path} is still ${kind}`);
  }
});

test('a mounted block device: exit 2 in one line saying it is in use; the filesystem on it is left as it was', async (t) => {
  if (!requireTools(t, 'losetup', 'mkfs.ext4') || !requireRoot(t, 'attach and mount a loop device')) return;
  const { dir, repo, point } = await setup(t);
  const backing = join(dir, 'fs.img');
  await writeFile(backing, Buffer.alloc(0));
  execFileSync('truncate', ['-s', `${80 * MiB}`, backing]);
  execFileSync('mkfs.ext4', ['-q', backing]);
  const dev = await loopDevice(t, backing);
  const mnt = join(dir, 'mnt');
  await mkdir(mnt);
  execFileSync('mount', [dev, mnt]);
  t.teardown(() => void execFileSync('umount', [mnt])); // runs before the loop device is detached
  await writeFile(join(mnt, 'keep.txt'), 'still here');
  const r = await drctl(['restore', '--repo', repo, point, '--to', dev, '--overwrite']);
  t.is(r.code, 2, r.stderr);
  const line = oneLine(r.stderr);
  t.true(line.includes(`block device ${dev} is in use (mounted, or held by LVM, md or another program) - nothing was written`), line);
  t.is(await readFile(join(mnt, 'keep.txt'), 'utf8'), 'still here');
});
