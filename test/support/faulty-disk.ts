/**
 * A disk image whose reads fail with EIO from a chosen offset on, as a dying disk's do:
 * qemu-storage-daemon opens a qcow2 copy through QEMU's blkdebug driver (which injects the
 * error into reads of that part of the file) and exports it through FUSE onto a regular file.
 * Everything before the offset reads fine, so `qemu-img` probing and the first chunks work.
 */
import type { ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { sh } from './tools.js';

/**
 * `writable`: the export takes writes too (a volume a repository lives on: locks are written);
 * reads of the failing part still fail.
 */
export async function faultyImage(t: ExecutionContext, dir: string, raw: string, failFromByte: number, opts: { writable?: boolean } = {}): Promise<string> {
  const ro = !opts.writable;
  const qcow2 = join(dir, 'faulty.qcow2');
  sh('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
  // Where the guest offset lives in the qcow2 file: blkdebug rules name host sectors.
  const map = JSON.parse(sh('qemu-img', ['map', '--output=json', qcow2])) as { start: number; length: number; offset?: number }[];
  const at = map.find((m) => m.start <= failFromByte && failFromByte < m.start + m.length && m.offset !== undefined);
  if (!at) throw new Error(`no data at byte ${failFromByte} of ${raw}`);
  const sector = Math.floor((at.offset! + failFromByte - at.start) / 512);
  const exported = join(dir, 'faulty.img');
  await writeFile(exported, '');
  const blockdev = {
    driver: 'qcow2', 'node-name': 'disk', 'read-only': ro,
    file: { driver: 'blkdebug', image: { driver: 'file', filename: qcow2, 'read-only': ro }, 'inject-error': [{ event: 'read_aio', errno: 5, sector, once: false }] },
  };
  const qsd = spawn('qemu-storage-daemon', ['--blockdev', JSON.stringify(blockdev), '--export', `type=fuse,id=e,node-name=disk,mountpoint=${exported},writable=${ro ? 'off' : 'on'}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  qsd.stderr.on('data', (b: Buffer) => (log += b.toString()));
  t.teardown(async () => {
    qsd.kill('SIGTERM'); // unmounts the export on the way out
    await new Promise((r) => (qsd.exitCode !== null ? r(undefined) : qsd.once('exit', r)));
  });
  const size = (await stat(raw)).size;
  for (let i = 0; i < 100; i++) {
    if (qsd.exitCode !== null) throw new Error(`qemu-storage-daemon exited: ${log}`);
    if ((await stat(exported)).size === size) return exported;
    await sleep(50);
  }
  throw new Error(`the FUSE export of ${qcow2} did not appear: ${log}`);
}
