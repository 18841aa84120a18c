/**
 * "No filesystem signature" is not "empty": a repository whose primary ext4 superblock was
 * damaged has no signature blkid recognises, but every byte of it is still there and
 * `e2fsck -b BACKUP` brings it back. Before drctl calls a LUN empty (and lets `target format`
 * write to it without --force) it reads a few places where any used LUN has data:
 *
 * - the first and the last MiB: partition tables (MBR, GPT and its backup), LVM/RAID/ZFS
 *   labels, the primary superblocks of every common filesystem, ext4's group descriptors and
 *   bitmaps, xfs's first allocation group headers;
 * - the ext4 backup superblocks of groups 1, 3, 5, 7 and 9 for 1, 2 and 4 KiB blocks;
 * - 32 KiB at each 32nd of the LUN: xfs allocation group headers (4 AGs by default), ext4's
 *   inode tables and journal, and file data.
 *
 * About 3 MiB in all, whatever the LUN's size. A new LUN reads as zeros (thin provisioning
 * or a fresh file); one that was ever used fails this almost surely. A LUN with old unrelated
 * data is reported as "holds data" and needs --force: the safe side to err on.
 */
import { open } from 'node:fs/promises';

const MiB = 1024 * 1024;
const EXT4_MAGIC_OFFSET = 0x38;

export interface Probe {
  offset: number;
  length: number;
  /** For an ext4 backup superblock: where e2fsck -b finds it. */
  ext4Backup?: { block: number; blockSize: number };
}

export interface LunContent {
  /** Every byte read was zero. */
  empty: boolean;
  bytesRead: number;
  /** The first place data was found (for the message). */
  dataAt?: number;
  /** An intact ext4 backup superblock (the first one found). */
  ext4Backup?: { block: number; blockSize: number };
  /** An xfs superblock ("XFSB") at a sampled offset: a secondary one of a damaged xfs. */
  xfsSuperblockAt?: number;
}

/** Where to read on a LUN of sizeBytes (offsets within it, ascending, overlaps allowed). */
export function probePlan(sizeBytes: number): Probe[] {
  const out: Probe[] = [];
  const add = (p: Probe): void => {
    if (p.offset >= 0 && p.offset < sizeBytes) out.push({ ...p, length: Math.min(p.length, sizeBytes - p.offset) });
  };
  add({ offset: 0, length: MiB });
  for (const blockSize of [1024, 2048, 4096]) {
    const perGroup = 8 * blockSize;
    // With 1 KiB blocks the filesystem starts at block 1 (block 0 is the boot block).
    const first = blockSize === 1024 ? 1 : 0;
    for (const group of [1, 3, 5, 7, 9]) {
      const block = group * perGroup + first;
      add({ offset: block * blockSize, length: 1024, ext4Backup: { block, blockSize } });
    }
  }
  for (let k = 1; k < 32; k++) add({ offset: Math.floor((sizeBytes * k) / 32 / 4096) * 4096, length: 32 * 1024 });
  add({ offset: Math.max(0, sizeBytes - MiB), length: MiB });
  return out.sort((a, b) => a.offset - b.offset);
}

/** Read the probe plan on a device (or image file) of sizeBytes. */
export async function inspectLun(device: string, sizeBytes: number): Promise<LunContent> {
  const fh = await open(device, 'r');
  const out: LunContent = { empty: true, bytesRead: 0 };
  try {
    for (const p of probePlan(sizeBytes)) {
      const buf = Buffer.alloc(p.length);
      const { bytesRead } = await fh.read(buf, 0, p.length, p.offset);
      out.bytesRead += bytesRead;
      const data = buf.subarray(0, bytesRead);
      const nonZero = data.findIndex((b) => b !== 0);
      if (nonZero < 0) continue;
      if (out.empty) {
        out.empty = false;
        out.dataAt = p.offset + nonZero;
      }
      if (p.ext4Backup && !out.ext4Backup && data.readUInt16LE(EXT4_MAGIC_OFFSET) === 0xef53) out.ext4Backup = p.ext4Backup;
      if (!p.ext4Backup && out.xfsSuperblockAt === undefined && p.offset > 0 && data.subarray(0, 4).toString('latin1') === 'XFSB') out.xfsSuperblockAt = p.offset;
    }
  } finally {
    await fh.close();
  }
  return out;
}

/** The repair command for what was found, with DEVICE where the device goes. */
export function repairCommand(filesystem: 'ext4' | 'xfs', c: LunContent): string {
  if (c.ext4Backup) return `e2fsck -fy -b ${c.ext4Backup.block} -B ${c.ext4Backup.blockSize} DEVICE`;
  if (c.xfsSuperblockAt !== undefined || filesystem === 'xfs') return 'xfs_repair DEVICE';
  return 'e2fsck -fy -b 32768 -B 4096 DEVICE';
}

/** "where the backup superblock is", for the message ('' when none was found). */
export function foundNote(c: LunContent): string {
  if (c.ext4Backup) return ` (an intact ext4 backup superblock is at block ${c.ext4Backup.block}, block size ${c.ext4Backup.blockSize})`;
  if (c.xfsSuperblockAt !== undefined) return ` (an xfs secondary superblock is at byte ${c.xfsSuperblockAt})`;
  return '';
}
