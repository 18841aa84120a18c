/**
 * A throw-away iSCSI lab for one test: tgtd on 127.0.0.1 (test/support/tgtd.ts), a config folder
 * with the iSCSI target san1 (and a local target), a state folder, and drctl bound to both.
 * Teardown force-detaches san1, stops tgtd and checks that nothing stays mounted.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { drctl, startDrctl, type CliResult } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';
import { Tgtd } from '../support/tgtd.js';

export const ISCSI_TOOLS = ['tgtd', 'tgtadm', 'qemu-storage-daemon', 'fusermount3', 'losetup', 'mkfs.ext4', 'blkid'];

export interface Lab {
  dir: string;
  secretFile: string;
  tgtd: Tgtd;
  config: string;
  state: string;
  mountpoint: string;
  run(args: string[]): Promise<CliResult>;
  start(args: string[]): ReturnType<typeof startDrctl>;
  writePolicy(name: string, body: string): Promise<void>;
  writeTarget(name: string, body: string): Promise<void>;
}

export async function iscsiLab(t: ExecutionContext, opts: { ioTimeoutSeconds?: number; secret?: string; lunBytes?: number; filesystem?: 'ext4' | 'xfs' } = {}): Promise<Lab> {
  const dir = await tempDir(t, 'drctl-iscsi-');
  const tgtd = await Tgtd.start({ dir, ...(opts.lunBytes ? { lunBytes: opts.lunBytes } : {}) });
  const config = join(dir, 'config');
  const state = join(dir, 'state');
  const mountpoint = join(dir, 'mnt', 'san1');
  await mkdir(join(config, 'targets'), { recursive: true });
  await mkdir(join(config, 'policies'), { recursive: true });
  await shareMounts(t, join(dir, 'mnt'));
  const secretFile = join(dir, 'san1.secret');
  // The trailing newline (echo secret > file) must not become part of the secret.
  await writeFile(secretFile, `${opts.secret ?? tgtd.chapSecret}\n`, { mode: 0o600 });
  const lab: Lab = {
    dir, secretFile, tgtd, config, state, mountpoint,
    run: (args) => drctl([...args, '--config', config, '--state', state]),
    start: (args) => startDrctl([...args, '--config', config, '--state', state]),
    writePolicy: (name, body) => writeFile(join(config, 'policies', `${name}.yaml`), body),
    writeTarget: (name, body) => writeFile(join(config, 'targets', `${name}.yaml`), body),
  };
  await lab.writeTarget('san1', [
    'type: iscsi', `portal: ${tgtd.portal}`, `iqn: ${tgtd.iqn}`, 'lun: 1',
    `chap: { user: ${tgtd.chapUser}, secretFile: ${secretFile} }`,
    `filesystem: ${opts.filesystem ?? 'ext4'}`, `mountpoint: ${mountpoint}`, 'attach: userspace', `ioTimeoutSeconds: ${opts.ioTimeoutSeconds ?? 30}`, '',
  ].join('\n'));
  t.teardown(async () => {
    await lab.run(['target', 'detach', 'san1', '--force']);
    await tgtd.stop();
  });
  return lab;
}

/**
 * The lab's mountpoints live under a shared bind mount, as on a systemd machine: a namespace
 * that copies them as a propagation slave (libvirt's QEMU, which other tests start at any
 * time) loses its copy when drctl unmounts, and drctl's detach is not refused because of it.
 */
async function shareMounts(t: ExecutionContext, mnt: string): Promise<void> {
  const { execFile } = await import('../../engine/runtime/exec.js');
  await mkdir(mnt, { recursive: true });
  if ((await execFile('mount', ['--bind', mnt, mnt])).code !== 0) return;
  t.teardown(async () => { await execFile('umount', ['-l', mnt]); });
  await execFile('mount', ['--make-shared', mnt]);
}

/** Mounts, loop devices and qemu-storage-daemons that belong to this lab (none after a clean detach). */
export async function leftovers(lab: Lab): Promise<string[]> {
  const mounts = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n')
    .filter((l) => l.includes(lab.dir) && l.split(' ')[4] !== join(lab.dir, 'mnt'));
  const { execFile } = await import('../../engine/runtime/exec.js');
  // A loop device on the LUN's own backing file is not drctl's: it is mountOnOtherMachine's.
  const loops = (await execFile('losetup', ['--list', '--noheadings', '--output', 'NAME,BACK-FILE'])).stdout.split('\n')
    .filter((l) => l.includes(lab.dir) && !l.trim().endsWith(` ${lab.tgtd.lunFile}`));
  const procs = (await execFile('ps', ['-eo', 'pid,args'])).stdout.split('\n').filter((l) => l.includes('qemu-storage-daemon') && l.includes(lab.dir));
  return [...mounts, ...loops, ...procs];
}

/**
 * A second machine that has the LUN's filesystem mounted: a loop device on the LUN's backing
 * file, mounted in a mount namespace of its own — this machine's mount table does not show it,
 * as it would not show another host's. stop() unmounts it (the namespace ends) and frees the loop device.
 */
export async function mountOnOtherMachine(t: ExecutionContext, lab: Lab): Promise<{ stop(): Promise<void> }> {
  const where = join(lab.dir, 'other-machine');
  const loopFile = join(lab.dir, 'other-machine.loop');
  await mkdir(where, { recursive: true });
  const script = `${dropCopies('')}; L=$(losetup -f --show "$0") && echo "$L" > "$1" && mount -t ext4 "$L" "$2" && echo mounted && exec sleep 3600`;
  const child = spawn('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, lab.tgtd.lunFile, loopFile, where], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise<void>((res) => child.once('exit', () => res()));
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    child.kill('SIGTERM');
    await exited;
    const loop = (await readFile(loopFile, 'utf8').catch(() => '')).trim();
    const { execFile } = await import('../../engine/runtime/exec.js');
    if (loop) await execFile('losetup', ['--detach', loop]);
  };
  t.teardown(stop);
  try {
    await new Promise<void>((res, rej) => {
      child.stdout.on('data', (b: Buffer) => { if (b.toString().includes('mounted')) res(); });
      void exited.then(() => rej(new Error(`the other machine could not mount the LUN: ${err.trim()}`)));
    });
  } catch (e) {
    await stop();
    throw e;
  }
  return { stop };
}

/**
 * sh code for a fresh mount namespace: it starts with a copy of every mount, other tests'
 * volumes included, which would keep those filesystems alive after their detach (drctl would
 * refuse it). Lazily unmount the copies of loop and FUSE mounts there, except `keep`.
 */
export function dropCopies(keep: string): string {
  const list = 'awk \'{ split($0, a, " - "); split(a[2], b, " "); if (b[2] ~ /^\\/dev\\/(loop|nbd)/ || b[1] ~ /^fuse/) print $5 }\' /proc/self/mountinfo | sort -r';
  return `for m in $(${list}); do [ "$m" = '${keep}' ] || umount -l "$m"; done`;
}
