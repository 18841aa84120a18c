/**
 * libvirt + QEMU (TCG) for integration tests: starts libvirtd/virtlogd when none answers
 * (no systemd here), builds the tiny guest once (scripts/lab-guest.sh, cached), and boots
 * guests from it. Commands run inside a guest through the guest agent (guest-exec).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmod, copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';

export const URI = 'qemu:///system';
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export function virsh(...args: string[]): string {
  return execFileSync('virsh', ['-q', '-c', URI, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000, maxBuffer: 256 * 1024 * 1024 });
}

function virshOk(...args: string[]): boolean {
  return spawnSync('virsh', ['-q', '-c', URI, ...args], { stdio: 'ignore', timeout: 30_000 }).status === 0;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** libvirtd answering on qemu:///system; started by hand when it does not. */
export async function ensureLibvirtd(): Promise<void> {
  if (virshOk('version')) return;
  // /dev/kvm root-only makes libvirtd re-probe QEMU on every define (SANDBOX.md).
  spawnSync('sh', ['-c', '[ -e /dev/kvm ] && chgrp kvm /dev/kvm && chmod 660 /dev/kvm; true']);
  spawnSync('virtlogd', ['-d']);
  spawnSync('libvirtd', ['-d']);
  for (let i = 0; i < 120; i++) {
    if (virshOk('version')) return;
    await sleep(500);
  }
  throw new Error('libvirtd did not answer within 60 s');
}

/** The cached guest build (kernel, initramfs with qemu-ga, data disk template). */
export function labCache(): string {
  return execFileSync('bash', [join(ROOT, 'scripts/lab-guest.sh')], { encoding: 'utf8', timeout: 600_000 }).trim().split('\n').at(-1) as string;
}

export interface Guest {
  name: string;
  dir: string;
  disk: string;
  bootMs: number;
  /** Run a shell command in the guest; stdout as a Buffer. Throws on non-zero exit. */
  exec(cmd: string, timeoutMs?: number): Promise<Buffer>;
  agent(command: object): unknown;
  destroy(): Promise<void>;
}

export function domainXml(name: string, dir: string, disk: string): string {
  return `<domain type='qemu'>
  <name>${name}</name>
  <memory unit='MiB'>192</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>${dir}/vmlinuz</kernel><initrd>${dir}/initrd.gz</initrd><cmdline>console=ttyS0 quiet</cmdline></os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${disk}'/><target dev='vda' bus='virtio'/></disk>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <serial type='file'><source path='${dir}/console.log' append='on'/><target port='0'/></serial>
    <interface type='user'><mac address='52:54:00:${randomBytes(3).toString('hex').match(/../g)?.join(':')}'/><model type='virtio'/></interface>
  </devices>
</domain>`;
}

/** Define and boot a fresh guest; resolves when its agent answers. */
export async function bootGuest(prefix = 'drctl-t'): Promise<Guest> {
  await ensureLibvirtd();
  const cache = labCache();
  const dir = await mkdtemp(join(tmpdir(), `${prefix}-`));
  await chmod(dir, 0o755); // QEMU runs as libvirt-qemu
  for (const f of ['vmlinuz', 'initrd.gz', 'data.qcow2']) {
    await copyFile(join(cache, f), join(dir, f));
    await chmod(join(dir, f), 0o644);
  }
  const name = `${prefix}-${randomBytes(3).toString('hex')}`;
  const disk = join(dir, 'data.qcow2');
  await writeFile(join(dir, 'domain.xml'), domainXml(name, dir, disk));
  virsh('define', join(dir, 'domain.xml'));
  const t0 = Date.now();
  virsh('start', name);
  const g = guestHandle(name, dir, disk, 0);
  await waitForAgent(name);
  g.bootMs = Date.now() - t0;
  return g;
}

export async function waitForAgent(name: string, ms = 90_000): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (virshOk('qemu-agent-command', name, '{"execute":"guest-ping"}', '--timeout', '2')) {
      // /data is mounted before qemu-ga starts (init order), so the guest is ready.
      return;
    }
    await sleep(500);
  }
  throw new Error(`guest ${name}: agent did not answer within ${ms / 1000} s`);
}

export function guestHandle(name: string, dir: string, disk: string, bootMs: number): Guest {
  const agent = (command: object): unknown =>
    (JSON.parse(virsh('qemu-agent-command', name, JSON.stringify(command), '--timeout', '30')) as { return: unknown }).return;
  return {
    name, dir, disk, bootMs, agent,
    async exec(cmd, timeoutMs = 60_000) {
      const { pid } = agent({ execute: 'guest-exec', arguments: { path: '/bin/sh', arg: ['-c', cmd], 'capture-output': true } }) as { pid: number };
      const until = Date.now() + timeoutMs;
      for (;;) {
        const st = agent({ execute: 'guest-exec-status', arguments: { pid } }) as { exited: boolean; exitcode?: number; 'out-data'?: string; 'err-data'?: string };
        if (st.exited) {
          const out = Buffer.from(st['out-data'] ?? '', 'base64');
          if (st['out-truncated' as 'out-data']) throw new Error(`guest ${name}: output of \`${cmd}\` was truncated by the agent`);
          if (st.exitcode !== 0) throw new Error(`guest ${name}: \`${cmd}\` exited ${st.exitcode}: ${Buffer.from(st['err-data'] ?? '', 'base64').toString()}`);
          return out;
        }
        if (Date.now() > until) throw new Error(`guest ${name}: \`${cmd}\` did not finish`);
        await sleep(200);
      }
    },
    async destroy() {
      removeVm(name);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Stop and undefine a VM (and its checkpoint metadata); no error when it is gone. */
export function removeVm(name: string): void {
  spawnSync('virsh', ['-q', '-c', URI, 'destroy', name], { stdio: 'ignore' });
  spawnSync('virsh', ['-q', '-c', URI, 'undefine', name, '--checkpoints-metadata', '--nvram'], { stdio: 'ignore' });
  spawnSync('virsh', ['-q', '-c', URI, 'undefine', name], { stdio: 'ignore' });
}
