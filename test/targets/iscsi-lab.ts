/**
 * A throw-away iSCSI lab for one test: tgtd on 127.0.0.1 (test/support/tgtd.ts), a config folder
 * with the iSCSI target san1 (and a local target), a state folder, and drctl bound to both.
 * Teardown force-detaches san1, stops tgtd and checks that nothing stays mounted.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { drctl, startDrctl, type CliResult } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';
import { Tgtd } from '../support/tgtd.js';

export const ISCSI_TOOLS = ['tgtd', 'tgtadm', 'qemu-storage-daemon', 'fusermount3', 'losetup', 'mkfs.ext4', 'blkid'];

export interface Lab {
  dir: string;
  tgtd: Tgtd;
  config: string;
  state: string;
  mountpoint: string;
  run(args: string[]): Promise<CliResult>;
  start(args: string[]): ReturnType<typeof startDrctl>;
  writePolicy(name: string, body: string): Promise<void>;
  writeTarget(name: string, body: string): Promise<void>;
}

export async function iscsiLab(t: ExecutionContext, opts: { ioTimeoutSeconds?: number; secret?: string; lunBytes?: number } = {}): Promise<Lab> {
  const dir = await tempDir(t, 'drctl-iscsi-');
  const tgtd = await Tgtd.start({ dir, ...(opts.lunBytes ? { lunBytes: opts.lunBytes } : {}) });
  const config = join(dir, 'config');
  const state = join(dir, 'state');
  const mountpoint = join(dir, 'mnt', 'san1');
  await mkdir(join(config, 'targets'), { recursive: true });
  await mkdir(join(config, 'policies'), { recursive: true });
  const secretFile = join(dir, 'san1.secret');
  // The trailing newline (echo secret > file) must not become part of the secret.
  await writeFile(secretFile, `${opts.secret ?? tgtd.chapSecret}\n`, { mode: 0o600 });
  const lab: Lab = {
    dir, tgtd, config, state, mountpoint,
    run: (args) => drctl([...args, '--config', config, '--state', state]),
    start: (args) => startDrctl([...args, '--config', config, '--state', state]),
    writePolicy: (name, body) => writeFile(join(config, 'policies', `${name}.yaml`), body),
    writeTarget: (name, body) => writeFile(join(config, 'targets', `${name}.yaml`), body),
  };
  await lab.writeTarget('san1', [
    'type: iscsi', `portal: ${tgtd.portal}`, `iqn: ${tgtd.iqn}`, 'lun: 1',
    `chap: { user: ${tgtd.chapUser}, secretFile: ${secretFile} }`,
    'filesystem: ext4', `mountpoint: ${mountpoint}`, 'attach: userspace', `ioTimeoutSeconds: ${opts.ioTimeoutSeconds ?? 30}`, '',
  ].join('\n'));
  t.teardown(async () => {
    await lab.run(['target', 'detach', 'san1', '--force']);
    await tgtd.stop();
  });
  return lab;
}

/** Mounts, loop devices and qemu-storage-daemons that belong to this lab (none after a clean detach). */
export async function leftovers(lab: Lab): Promise<string[]> {
  const mounts = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').filter((l) => l.includes(lab.dir));
  const { execFile } = await import('../../engine/runtime/exec.js');
  const loops = (await execFile('losetup', ['--list', '--noheadings', '--output', 'NAME,BACK-FILE'])).stdout.split('\n').filter((l) => l.includes(lab.dir));
  const procs = (await execFile('ps', ['-eo', 'pid,args'])).stdout.split('\n').filter((l) => l.includes('qemu-storage-daemon') && l.includes(lab.dir));
  return [...mounts, ...loops, ...procs];
}
