/**
 * The set-up the libvirt integration tests share: a temporary folder QEMU may read, a real sshd
 * on 127.0.0.1, a config folder whose hosts/hv1.yaml reaches it with its host key pinned, an
 * initialised repository and, when asked, a booted lab guest. A step that fails undoes the ones
 * before it, so a test file's after.always only ever cleans up a whole lab.
 */
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sharedTempDir } from './tmp.js';
import { DRCTL } from './cli.js';
import { startSshd, type Sshd } from './sshd.js';
import { bootGuest, ensureLibvirtd, type Guest } from './libvirt-lab.js';

export interface VmLab {
  dir: string;
  sshd: Sshd;
  /** The config folder: hosts/hv1.yaml. */
  config: string;
  repo: string;
}

/** The `ssh:` block of a host file for `sshd`, and the line that pins it (default: its host key). */
export function hostYaml(sshd: Sshd, pin = `hostKey: "${sshd.hostKey}"`): string {
  return `driver: libvirt\nssh:\n  host: 127.0.0.1\n  port: ${sshd.port}\n  user: ${sshd.user}\n  keyFile: ${sshd.keyFile}\n  ${pin}\nuri: qemu:///system\n`;
}

/** hv1 as the engine takes it (openHostTransport), for tests that call the engine directly. */
export function hostConfig(sshd: Sshd): { name: string; driver: 'libvirt'; ssh: { host: string; port: number; user: string; keyFile: string; hostKey: string } } {
  return { name: 'hv1', driver: 'libvirt', ssh: { host: '127.0.0.1', port: sshd.port, user: sshd.user, keyFile: sshd.keyFile, hostKey: sshd.hostKey } };
}

export async function startVmLab(prefix: string): Promise<VmLab>;
export async function startVmLab(prefix: string, guestPrefix: string): Promise<VmLab & { guest: Guest }>;
export async function startVmLab(prefix: string, guestPrefix?: string): Promise<VmLab & { guest?: Guest }> {
  let dir: string | undefined;
  let sshd: Sshd | undefined;
  let guest: Guest | undefined;
  try {
    await ensureLibvirtd();
    dir = await sharedTempDir(prefix);
    await chmod(dir, 0o755);
    sshd = await startSshd();
    if (guestPrefix) guest = await bootGuest(guestPrefix);
    const config = join(dir, 'config');
    await mkdir(join(config, 'hosts'), { recursive: true });
    await writeFile(join(config, 'hosts', 'hv1.yaml'), hostYaml(sshd));
    const repo = join(dir, 'repo');
    execFileSync(process.execPath, [DRCTL, 'init', '--repo', repo, '-q']);
    return { dir, sshd, config, repo, ...(guest ? { guest } : {}) };
  } catch (e) {
    await guest?.destroy();
    await sshd?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
    throw e;
  }
}

export async function stopVmLab(lab: VmLab & { guest?: Guest }): Promise<void> {
  await lab.guest?.destroy();
  await lab.sshd.stop();
  await rm(lab.dir, { recursive: true, force: true });
}
