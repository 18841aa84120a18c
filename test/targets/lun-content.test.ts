/**
 * What drctl reads to tell an empty LUN from one that holds data without a filesystem
 * signature (targets/iscsi/lun-content.ts), on image files: no iSCSI needed.
 */
import test from 'ava';
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execFile } from '../../engine/runtime/exec.js';
import { inspectLun, probePlan, repairCommand } from '../../targets/iscsi/lun-content.js';
import { toolReason } from '../../targets/iscsi/format.js';
import { requireTools } from '../support/tools.js';
import { tempDir } from '../support/tmp.js';

const MiB = 1024 * 1024;

async function sparseFile(path: string, sizeBytes: number): Promise<void> {
  await writeFile(path, '');
  await execFile('truncate', ['-s', String(sizeBytes), path]);
}

async function zeroAt(path: string, offset: number, length: number): Promise<void> {
  const fh = await open(path, 'r+');
  await fh.write(Buffer.alloc(length), 0, length, offset);
  await fh.close();
}

test('the probe plan reads a few MiB whatever the size, covering both ends and the ext4 backup superblocks', (t) => {
  for (const size of [64 * MiB, 256 * MiB, 2 * 1024 * MiB, 16 * 1024 * 1024 * MiB]) {
    const plan = probePlan(size);
    const total = plan.reduce((n, p) => n + p.length, 0);
    t.true(total <= 4 * MiB, `${size}: reads ${total}`);
    t.true(plan.some((p) => p.offset === 0 && p.length === MiB));
    t.true(plan.some((p) => p.offset === size - MiB && p.length === MiB));
    t.true(plan.every((p) => p.offset + p.length <= size));
  }
  const big = probePlan(1024 * MiB);
  // 4 KiB blocks: group 1 starts at block 32768 (128 MiB); 1 KiB blocks: block 8193.
  t.true(big.some((p) => p.ext4Backup?.block === 32768 && p.ext4Backup.blockSize === 4096 && p.offset === 128 * MiB));
  t.true(big.some((p) => p.ext4Backup?.block === 8193 && p.ext4Backup.blockSize === 1024 && p.offset === 8193 * 1024));
});

test('a LUN of zeros is empty; random data far from the start is data', async (t) => {
  const dir = await tempDir(t);
  const lun = join(dir, 'lun.img');
  await sparseFile(lun, 512 * MiB);
  t.like(await inspectLun(lun, 512 * MiB), { empty: true });
  const fh = await open(lun, 'r+');
  await fh.write(Buffer.alloc(100, 7), 0, 100, 192 * MiB + 12);
  await fh.close();
  const c = await inspectLun(lun, 512 * MiB);
  t.false(c.empty);
  t.is(c.dataAt, 192 * MiB + 12);
});

test('an ext4 whose primary superblock is zeroed holds data, and its backup superblock is found for e2fsck -b', async (t) => {
  if (!requireTools(t, 'mkfs.ext4', 'blkid')) return;
  const dir = await tempDir(t);
  for (const [size, block, blockSize] of [[256 * MiB, 8193, 1024], [1024 * MiB, 32768, 4096]] as const) {
    const lun = join(dir, `ext4-${size}.img`);
    await sparseFile(lun, size);
    t.is((await execFile('mkfs.ext4', ['-q', '-F', '-E', 'nodiscard', lun])).code, 0);
    await zeroAt(lun, 1024, 1024);
    t.is((await execFile('blkid', ['-p', lun])).code, 2, 'no signature left for blkid');
    const c = await inspectLun(lun, size);
    t.false(c.empty);
    t.deepEqual(c.ext4Backup, { block, blockSize });
    t.is(repairCommand('ext4', c), `e2fsck -fy -b ${block} -B ${blockSize} DEVICE`);
    // The advice works.
    const fsck = await execFile('e2fsck', ['-fy', '-b', String(block), '-B', String(blockSize), lun]);
    t.true(fsck.code <= 1, fsck.stdout + fsck.stderr);
    t.is((await execFile('blkid', ['-p', '-s', 'TYPE', '-o', 'value', lun])).stdout.trim(), 'ext4');
  }
});

test('an xfs whose first superblock is zeroed holds data; its secondary superblocks point to xfs_repair', async (t) => {
  if (!requireTools(t, 'mkfs.xfs')) return;
  const dir = await tempDir(t);
  const lun = join(dir, 'xfs.img');
  await sparseFile(lun, 512 * MiB);
  t.is((await execFile('mkfs.xfs', ['-q', '-f', '-K', lun])).code, 0);
  await zeroAt(lun, 0, 512);
  const c = await inspectLun(lun, 512 * MiB);
  t.false(c.empty);
  t.is(c.xfsSuperblockAt, 128 * MiB);
  t.is(repairCommand('xfs', c), 'xfs_repair DEVICE');
});

test('a tool\'s failure reason is the line before its usage text', (t) => {
  const mkfsXfs = 'Filesystem must be larger than 300MB.\nUsage: mkfs.xfs\n/* blocksize */\t\t[-b size=num]\n<value> is xxx (512 byte blocks).\n';
  t.is(toolReason(mkfsXfs), 'Filesystem must be larger than 300MB.');
  t.is(toolReason('mke2fs: Device size reported to be zero.\n'), 'mke2fs: Device size reported to be zero.');
  t.is(toolReason(''), 'no output');
});
